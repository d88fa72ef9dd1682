"""Message-ID, In-Reply-To and References: pull ids out of real-world header text.

Ids are returned without angle brackets and compared as exact strings (RFC 5322
3.6.4 gives them no case rules). Threading asks `parent_candidates` which ids to
try, best first; the rules follow notmuch (test/T510-thread-replies.sh):

1. A clean In-Reply-To (exactly one ``<id>``, nothing else) names the parent.
2. Otherwise the last References id does, then the earlier ones, nearest first.
3. Ids found inside a dodgy In-Reply-To (text around the id, a trailing comment,
   several ids) are tried only after References.

The message's own id and repeated ids are dropped, so a header that points at
itself cannot make a message its own parent. Loops across messages (A replies
to B, B to A) cannot be seen in one message: the thread builder must refuse to
link a message under one of its own descendants.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterable
from datetime import datetime

from inboxd import clock

# A bare id (no brackets) is accepted only when the whole value is one such token.
_BARE_ID = re.compile(r"[^\s<>()\[\]@,;:\"\\]+@[^\s<>()\[\]@,;:\"\\]+")
_WS = re.compile(r"\s+")


def normalize_id(text: str | None) -> str | None:
    """Strip whitespace and one pair of angle brackets; None when nothing is left."""
    if text is None:
        return None
    value = text.strip()
    if value.startswith("<") and value.endswith(">"):
        value = value[1:-1]
    value = _WS.sub("", value)
    return value or None


def _scan(value: str) -> tuple[list[str], str]:
    """Split a header into the ids in ``<...>`` and the text outside them.

    Comments in parentheses (RFC 5322 CFWS) are dropped, nested ones included;
    an unterminated ``<`` swallows the rest of the value, which is then garbage.
    Linear in the length of the value.
    """
    ids: list[str] = []
    outside: list[str] = []
    depth = 0
    i, n = 0, len(value)
    while i < n:
        ch = value[i]
        if depth:
            if ch == "(":
                depth += 1
            elif ch == ")":
                depth -= 1
            elif ch == "\\":
                i += 1
            i += 1
            continue
        if ch == "(":
            depth = 1
            i += 1
            continue
        if ch == "<":
            end = value.find(">", i + 1)
            if end < 0:
                outside.append(value[i:])
                break
            inner = value[i + 1 : end]
            nested = inner.rfind("<")
            if nested >= 0:  # "<<id>" or "<garbage <id>": keep the innermost
                outside.append(inner[: nested + 1])
                inner = inner[nested + 1 :]
            ident = _WS.sub("", inner)  # folding inside an id is not part of it
            if ident:
                ids.append(ident)
            i = end + 1
            continue
        outside.append(ch)
        i += 1
    return ids, "".join(outside)


def _unique(ids: Iterable[str], *, skip: str | None = None) -> tuple[str, ...]:
    seen: set[str] = set()
    out: list[str] = []
    for ident in ids:
        if ident == skip or ident in seen:
            continue
        seen.add(ident)
        out.append(ident)
    return tuple(out)


def extract_ids(header_value: str | None) -> tuple[str, ...]:
    """Every ``<id>`` in the value, in order, without brackets, each once.

    Text around the ids and ``(comments)`` are ignored. A value without any
    bracketed id yields the value itself only when it is one ``local@domain``
    token (some mailers send ``In-Reply-To: id@host``); anything else yields ().
    """
    if not header_value:
        return ()
    ids, outside = _scan(header_value)
    if ids:
        return _unique(ids)
    bare = outside.strip()
    if _BARE_ID.fullmatch(bare):
        return (bare,)
    return ()


def is_clean(header_value: str | None) -> bool:
    """True when the value is exactly one ``<id>`` with nothing but whitespace around."""
    if not header_value:
        return False
    ids, outside = _scan(header_value)
    if len(ids) != 1 or outside.strip():
        return False
    # _scan drops comments; a clean value has none.
    return "(" not in header_value


def parent_candidates(
    in_reply_to: str | None,
    references: str | None,
    *,
    message_id: str | None = None,
) -> tuple[str, ...]:
    """Ids a thread builder should look up, in order; the first one known is the parent.

    Takes the raw (decoded, unfolded) header values, because whether
    In-Reply-To is trustworthy depends on the text around its id. `message_id`
    (bare or bracketed) is the message's own id, never returned.
    """
    own = normalize_id(message_id)
    refs = extract_ids(references)
    irt = extract_ids(in_reply_to)
    ordered = [*irt, *reversed(refs)] if is_clean(in_reply_to) else [*reversed(refs), *irt]
    return _unique(ordered, skip=own)


def make_message_id(domain: str, *, now: datetime | None = None) -> str:
    """A fresh, unique Message-ID for a mail we send, without angle brackets.

    128 random bits make collisions impossible in practice; the millisecond
    timestamp only helps a human reading logs.
    """
    domain = domain.strip().strip(".").lower()
    if not domain or any(c in domain for c in "<>@ \t\r\n"):
        raise ValueError(f"not a domain for a Message-ID: {domain!r}")
    at = now if now is not None else clock.utcnow()
    return f"{secrets.token_hex(16)}.{int(at.timestamp() * 1000)}@{domain}"
