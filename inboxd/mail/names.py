"""Attachment file names made safe to create on disk.

Kept apart from `inboxd.mail.parse` so that `ticket show`, which lists attachments under
the name `ticket attachment` would save them as, does not import mail-parser.
"""

from __future__ import annotations

import os
import re
import unicodedata

_SURROGATE = re.compile(r"[\ud800-\udfff]")
_UNSAFE_IN_NAME = re.compile(r'[<>:"|?*]')
_RESERVED_WINDOWS = re.compile(r"(con|prn|aux|nul|com[0-9]|lpt[0-9])(\..*)?", re.IGNORECASE)
_MAX_NAME = 120


def safe_filename(name: str, index: int) -> str:
    """A file name safe to create in a directory of our choosing.

    Basename only (no ``/`` or ``\\``), no control or format characters (a
    right-to-left override can disguise ``gpj.exe``), no leading dots, no
    ``..``, no characters Windows refuses, at most 120 characters with the
    extension kept; ``attachment-<index>`` when nothing usable is left.
    """
    fallback = f"attachment-{index}"
    text = name or ""
    if not text.isascii():  # lone surrogates (broken codecs) cannot be encoded
        text = _SURROGATE.sub("\ufffd", text)
    text = unicodedata.normalize("NFC", text)
    text = re.split(r"[\\/]", text)[-1]
    text = "".join(" " if unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp") else c for c in text)
    text = _UNSAFE_IN_NAME.sub("_", text)
    text = re.sub(r"\.{2,}", ".", re.sub(r"\s+", " ", text)).strip()
    text = text.lstrip(". ").rstrip(". ")
    if not text:
        return fallback
    if _RESERVED_WINDOWS.fullmatch(text):
        text = "_" + text
    if len(text) > _MAX_NAME:
        stem, ext = os.path.splitext(text)
        ext = ext[:16]
        text = stem[: _MAX_NAME - len(ext)].rstrip(". ") + ext
    return text or fallback
