"""Raw RFC 822 bytes -> ParsedMail, a plain typed object the rest of inboxd reads.

Pure: bytes in, objects out. Anything the parser cannot make sense of raises
`UnparsableMail`; the caller stores the raw bytes and quarantines them.

The bytes are parsed once, by the stdlib feed parser (compat32), and that one
`email.message.Message` is handed to mail-parser (`MailParser(message)` is
exactly what `mailparser.parse_from_bytes` does), which supplies the defect
report. Everything mail-parser gets wrong for a ticketing system is read from
the same `Message` object, not from a second parse:

- addresses: each raw header is split into mailboxes first (quotes, comments,
  angle brackets, groups and encoded words respected) and each display name
  decoded after; decoding first (mail-parser before 4.8) turns
  ``=?utf-8?q?Support=3A_Jane?= <jane@x>`` into a group and loses the sender;
- the Date keeps the sender's own UTC offset (mail-parser converts to UTC and
  reports the offset as a float-ish string);
- header text is decoded with a tolerant RFC 2047 decoder (adjacent encoded
  words joined before decoding, superset codecs for mislabelled charsets, raw
  8-bit headers read as UTF-8, then the body's charset, then windows-1252)
  instead of dropping undecodable bytes;
- attachments: the sender's filename or "" (mail-parser invents random names and
  uses the Content-ID as a name), size and SHA-256 of the decoded bytes;
- body text: only the message's own text parts (a forwarded ``message/rfc822``
  is an attachment, not body), HTML converted by `inboxd.mail.text` when there
  is no plain text.

When mail-parser raises (4.8 does on some DSNs) the stdlib's defects are listed
instead, with the failure.
"""

from __future__ import annotations

import binascii
import codecs
import email
import email.utils
import hashlib
import quopri
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.message import Message
from typing import Any

import mailparser

from inboxd.mail import msgids
from inboxd.mail.names import safe_filename as safe_filename  # re-exported: its old home
from inboxd.mail.text import html_to_text, normalize_newlines


class UnparsableMail(Exception):
    """The bytes are not a mail inboxd can read (binary junk, Outlook .msg, parser crash)."""


@dataclass(frozen=True, slots=True)
class Address:
    """One mailbox address; `addr` is lowercased for comparison, `name` decoded."""

    addr: str
    name: str = ""

    @property
    def domain(self) -> str:
        return self.addr.rpartition("@")[2]


@dataclass(frozen=True, slots=True)
class Attachment:
    """Metadata of one attachment. `filename` is the sender's text, never a path."""

    index: int
    filename: str
    content_type: str
    size: int
    sha256: str


@dataclass(frozen=True, slots=True)
class ParsedMail:
    """Everything inboxd reads from a mail, decoded once."""

    message_id: str | None  # without angle brackets; None when missing or empty
    in_reply_to: tuple[str, ...]  # ids found in In-Reply-To, in order, without brackets
    references: tuple[str, ...]  # ids in References, first to last, garbage dropped
    from_: Address | None
    to: tuple[Address, ...]
    cc: tuple[Address, ...]
    reply_to: tuple[Address, ...]
    subject: str  # RFC 2047 decoded, whitespace collapsed to one line
    date: datetime | None  # aware, in the sender's own UTC offset
    text: str  # text body; HTML converted to text when there is no text part
    html: str | None
    attachments: tuple[Attachment, ...]
    headers: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # lowercase name
    content_type: str = "text/plain"  # top-level, lowercase, no parameters
    defects: tuple[str, ...] = ()
    size: int = 0  # raw size in bytes
    # Ids a thread builder should try, best first (see msgids.parent_candidates).
    parent_ids: tuple[str, ...] = ()

    def header(self, name: str) -> str | None:
        """First value of a header (case-insensitive), or None."""
        values = self.headers.get(name.lower())
        return values[0] if values else None

    @property
    def recipients(self) -> tuple[Address, ...]:
        return self.to + self.cc


# -- decoding helpers ------------------------------------------------------------

# WHATWG-style supersets: mail labels text with the narrow charset and sends the
# wide one (windows-1252 bytes labelled iso-8859-1, cp949 labelled euc-kr, ...).
_CHARSET_SUPERSETS = {
    "us-ascii": "cp1252",
    "ascii": "cp1252",
    "iso-8859-1": "cp1252",
    "iso8859-1": "cp1252",
    "latin1": "cp1252",
    "latin-1": "cp1252",
    "iso-8859-9": "cp1254",
    "iso-8859-11": "cp874",
    "tis-620": "cp874",
    "gb2312": "gb18030",
    "gbk": "gb18030",
    "x-gbk": "gb18030",
    "euc-cn": "gb18030",
    "cn-gb": "gb18030",
    "euc-kr": "cp949",
    "ks_c_5601-1987": "cp949",
    "ks_c_5601": "cp949",
    "ksc5601": "cp949",
    "shift_jis": "cp932",
    "shift-jis": "cp932",
    "sjis": "cp932",
    "x-sjis": "cp932",
    "windows-31j": "cp932",
    "big5": "big5hkscs",
    "x-big5": "big5hkscs",
    "iso-2022-jp": "iso2022_jp_ext",
    "iso-8859-8-i": "iso-8859-8",
    "utf8": "utf-8",
    "unicode-1-1-utf-8": "utf-8",
}
_NO_CHARSET = frozenset({"", "unknown", "unknown-8bit", "x-unknown", "default", "charset", "8bit"})
_codec_cache: dict[str, str | None] = {}

_ENCODED_WORD = re.compile(r"=\?([^?\s]+)\?([bBqQ])\?([^?]*?)\?=")
# Runs of control characters (CR, LF, TAB, ...) and Unicode line breaks, with
# the spaces around them: one space each, so header text is always one line.
_CONTROL_RUN = re.compile(r"[ ]*[\x00-\x1f\x7f\x85\u2028\u2029][\x00-\x1f\x7f\x85\u2028\u2029 ]*")
_SURROGATE = re.compile(r"[\ud800-\udfff]")
_HEADER_LINE = re.compile(rb"[!-9;-~]+[ \t]*:")
_HEADER_END = re.compile(rb"\r?\n\r?\n")
_META_CHARSET = re.compile(rb"""<meta[^>]{0,200}?charset\s*=\s*["']?([A-Za-z0-9_.:-]+)""", re.I)
_OLE2_MAGIC = b"\xd0\xcf\x11\xe0"
_FROM_HEADER = re.compile(rb"From[ \t]*:")
_OBS_COLON = re.compile(rb"(?m)^([!-9;-~]+)[ \t]+:")


def _codec(charset: str | None) -> str | None:
    """Python codec name for a MIME charset label, or None when unknown/absent."""
    if not charset:
        return None
    key = charset.strip().strip("\"'").lower()
    if key in _codec_cache:
        return _codec_cache[key]
    label = key.split("*", 1)[0]  # RFC 2231 language suffix: utf-8*en
    label = _CHARSET_SUPERSETS.get(label, label)
    name: str | None
    if label in _NO_CHARSET:
        name = None
    else:
        try:
            name = codecs.lookup(label).name
        except LookupError:
            name = None
    if len(_codec_cache) < 512:  # labels come from senders: keep the cache bounded
        _codec_cache[key] = name
    return name


def _clean(text: str) -> str:
    """Replace lone surrogates (broken codecs, undecodable bytes) so the text encodes."""
    if text.isascii():
        return text
    return _SURROGATE.sub("\ufffd", text)


def decode_bytes(data: bytes, charset: str | None, *, hint: str | None = None) -> str:
    """Text of `data` in the declared charset, falling back to UTF-8, `hint`, windows-1252.

    Never raises: the last resort replaces what cannot be decoded.
    """
    declared = _codec(charset)
    tried: list[str] = []
    for name in (declared, "utf-8", _codec(hint)):
        if name is None or name in tried:
            continue
        tried.append(name)
        try:
            return _clean(data.decode(name))
        except (UnicodeError, LookupError, ValueError):
            continue
    return _clean(data.decode(declared or "cp1252", errors="replace"))


def _unescape_8bit(value: str, hint: str | None) -> str:
    """Raw 8-bit header bytes (kept by the parser as surrogate escapes) -> text."""
    if not _SURROGATE.search(value):
        return value
    try:
        data = value.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return _SURROGATE.sub("\ufffd", value)
    return decode_bytes(data, None, hint=hint)


def _word_bytes(encoding: str, payload: str) -> bytes:
    if encoding in "qQ":
        return binascii.a2b_qp(payload.encode("utf-8", "surrogateescape"), header=True)
    data = re.sub(r"[^A-Za-z0-9+/]", "", payload.split("=", 1)[0])
    if len(data) % 4 == 1:  # a dangling sextet carries no whole byte
        data = data[:-1]
    try:
        return binascii.a2b_base64(data + "=" * (-len(data) % 4))
    except binascii.Error:
        return b""


def decode_words(value: str, *, hint: str | None = None) -> str:
    """Decode RFC 2047 encoded words anywhere in `value` (tolerantly).

    Whitespace between two adjacent encoded words is dropped (RFC 2047 6.2);
    adjacent words in one charset are joined before decoding, because real
    mailers split a multibyte character across two words.
    """
    if "=?" not in value:
        return value
    out: list[str] = []
    run: list[bytes] = []
    run_charset: str | None = None
    pos = 0

    def flush() -> None:
        nonlocal run, run_charset
        if run:
            out.append(decode_bytes(b"".join(run), run_charset, hint=hint))
        run, run_charset = [], None

    for match in _ENCODED_WORD.finditer(value):
        gap = value[pos : match.start()]
        if gap and (gap.strip() or not run):
            flush()
            out.append(gap)
        charset, encoding, payload = match.groups()
        if run and _codec(charset) != _codec(run_charset):
            flush()
        run_charset = charset
        run.append(_word_bytes(encoding, payload))
        pos = match.end()
    flush()
    out.append(value[pos:])
    return "".join(out)


def one_line(text: str) -> str:
    """Collapse CR, LF, TAB and other control runs to one space; strip the ends."""
    return _CONTROL_RUN.sub(" ", text).strip()


def header_text(value: str | None, *, hint: str | None = None) -> str:
    """A raw header value as one line of decoded text."""
    if not value:
        return ""
    text = str(value)
    if not text.isascii():
        text = _unescape_8bit(text, hint)
    return _clean(one_line(decode_words(text, hint=hint)))


# -- input checks ------------------------------------------------------------------


def _readable_bytes(raw: bytes) -> bytes:
    """Refuse input that is not an RFC 822 message at all; return the bytes to parse.

    The only repair is RFC 5322 4.5 obsolete syntax, whitespace before a header
    colon (``Subject  : hi``), which the stdlib parser would take for the body.
    """
    if not raw or raw.isspace():  # isspace() stops at the first byte of a real mail
        raise UnparsableMail("empty input")
    if raw.startswith(_OLE2_MAGIC):
        raise UnparsableMail("Outlook/OLE2 binary file (.msg), not an RFC 822 message")
    start = 0
    if raw.startswith(b"From ") and not _FROM_HEADER.match(raw):
        start = raw.find(b"\n") + 1  # mbox separator line written by a delivery agent
        if start == 0:
            raise UnparsableMail("mbox separator line without a message")
    end_match = _HEADER_END.search(raw, start)
    end = end_match.start() if end_match else len(raw)
    head = raw[start:end]
    if b"\0" in head:
        raise UnparsableMail("NUL bytes in the header section: binary data, not a mail")
    first = head.split(b"\n", 1)[0].lstrip(b" \t")
    if not _HEADER_LINE.match(first):
        raise UnparsableMail("does not start with a header line")
    if _OBS_COLON.search(head):
        return raw[:start] + _OBS_COLON.sub(rb"\1:", head) + raw[end:]
    return raw


# -- MIME structure ------------------------------------------------------------------


@dataclass(slots=True)
class _Parts:
    plain: list[Message] = field(default_factory=list)
    html: list[Message] = field(default_factory=list)
    attachments: list[Message] = field(default_factory=list)


def _disposition(part: Message) -> str:
    value = part.get("content-disposition")
    if value is None:
        return ""
    return str(value).split(";", 1)[0].strip().lower()


def _raw_filename(part: Message, hint: str | None = None) -> str | None:
    """The filename parameter (RFC 2231 joined), before RFC 2047 decoding."""
    try:
        name = part.get_filename()
        if name is not None and "\ufffd" in str(name):
            # Raw 8-bit bytes in the parameter: compat32 turned them into U+FFFD.
            # Decode the header text ourselves and read the parameter again.
            view = Message()
            for key, value in part.raw_items():
                if key.lower() in ("content-disposition", "content-type"):
                    view[key] = _unescape_8bit(str(value), hint)
            name = view.get_filename() or name
    except (LookupError, UnicodeError, ValueError, TypeError):
        return None
    return None if name is None else str(name)


def _may_have_filename(part: Message) -> bool:
    """Cheap test before get_filename(), whose parameter parsing is slow."""
    for header in ("content-disposition", "content-type"):
        value = part.get(header)
        if value is not None and "name" in str(value).lower():
            return True
    return False


def _classify_parts(message: Message) -> _Parts:
    """Split leaves into body text candidates and attachments, in document order.

    - text/plain and text/html parts without a filename and not marked
      ``attachment`` are body; every other leaf is an attachment, so nothing a
      sender sent is invisible (a nameless image or PDF included);
    - a ``message/*`` part is one attachment: the text of a forwarded or
      returned mail is not the sender's body, and its own attachments stay
      inside it;
    - the other renderings in a multipart/alternative (text/enriched, ...)
      are not attachments, except text/calendar (a meeting invitation);
    - a multipart whose boundary is missing is read as text.

    Iterative, so nesting depth costs no stack.
    """
    parts = _Parts()
    stack: list[tuple[Message, bool, bool]] = [(message, False, False)]
    while stack:
        part, attached, alternative = stack.pop()
        payload = part.get_payload()
        maintype = part.get_content_maintype()
        if maintype == "multipart":
            if isinstance(payload, list):
                inner = attached or _disposition(part) == "attachment"
                is_alt = part.get_content_subtype() == "alternative"
                stack.extend((child, inner, is_alt) for child in reversed(payload))
            elif not attached and isinstance(payload, str) and payload.strip():
                parts.plain.append(part)
            continue
        ctype = part.get_content_type()
        named = _may_have_filename(part) and bool(_raw_filename(part))
        if (
            not attached
            and ctype in ("text/plain", "text/html")
            and _disposition(part) != "attachment"
            and not named
        ):
            (parts.plain if ctype == "text/plain" else parts.html).append(part)
            continue
        if alternative and maintype == "text" and ctype != "text/calendar" and not named:
            continue
        parts.attachments.append(part)
    return parts


def _part_bytes(part: Message) -> bytes:
    """Decoded payload of a leaf; a ``message/*`` part flattens its sub-messages."""
    payload = part.get_payload()
    if isinstance(payload, list):
        data = b"".join(_flatten(sub) for sub in payload if isinstance(sub, Message))
        # RFC 2046 5.2.1 forbids encoding message/rfc822, but mailers do it: the
        # parser then sees one header-less "message" made of base64 text.
        cte = str(part.get("content-transfer-encoding", "")).strip().lower()
        if cte == "base64":
            try:
                return binascii.a2b_base64(data)
            except binascii.Error:
                return data
        if cte == "quoted-printable":
            return quopri.decodestring(data)
        return data
    decoded = part.get_payload(decode=True)
    return decoded if isinstance(decoded, bytes) else b""


def _flatten(message: Message) -> bytes:
    """Bytes of an embedded message, rebuilt from the parsed tree.

    Header lines as received (their folding kept) and bodies still transfer-
    encoded: no charset is applied and nothing re-folded, which is what made
    `email.generator` slow and fragile here. Line ends inside headers and
    between parts follow the parser, so this is the sender's message up to
    line-ending normalisation.
    """
    out: list[str] = []
    stack: list[Message | str] = [message]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            out.append(item)
            continue
        out.extend(f"{name}: {value}\n" for name, value in item.raw_items())
        out.append("\n")
        payload = item.get_payload()
        if isinstance(payload, list):
            children = [c for c in payload if isinstance(c, Message)]
            boundary = item.get_boundary() if item.is_multipart() else None
            if boundary is None:
                stack.extend(reversed(children))
                continue
            tail: list[Message | str] = []
            if item.preamble:
                tail.append(item.preamble + "\n")
            for child in children:
                tail += [f"--{boundary}\n", child, "\n"]
            tail.append(f"--{boundary}--\n")
            if item.epilogue:
                tail.append(item.epilogue)
            stack.extend(reversed(tail))
        else:
            # _payload is the undecoded body (8-bit bytes as surrogate escapes);
            # get_payload() would apply the declared charset and lose bytes.
            body = getattr(item, "_payload", None)
            out.append(body if isinstance(body, str) else "")
    return "".join(out).encode("utf-8", "surrogateescape")


def _part_text(part: Message) -> str:
    """A body part as text; an HTML part without a charset parameter may name one in <meta>."""
    data = _part_bytes(part)
    if not data:
        return ""
    charset = part.get_content_charset()
    if charset is None and part.get_content_subtype() == "html":
        meta = _META_CHARSET.search(data, 0, 4096)
        if meta:
            charset = meta.group(1).decode("ascii")
    return normalize_newlines(decode_bytes(data, charset))


def _charset_hint(message: Message, raw_headers: list[tuple[str, str]]) -> str | None:
    """The charset a sender probably used for raw 8-bit headers: the body's.

    Only looked for when a top-level header carries 8-bit bytes at all.
    """
    if all(str(value).isascii() for _name, value in raw_headers):
        return None
    for part in _iter_leaves(message):
        charset = part.get_content_charset()
        if charset and _codec(charset) not in (None, "ascii", "utf-8"):
            return charset
    return None


def _iter_leaves(message: Message) -> Iterator[Message]:
    """Leaf parts in document order, iteratively (no recursion limit on nesting)."""
    stack = [message]
    while stack:
        part = stack.pop()
        payload = part.get_payload()
        if part.get_content_maintype() == "multipart" and isinstance(payload, list):
            stack.extend(child for child in reversed(payload) if isinstance(child, Message))
        else:
            yield part


def _attachment(part: Message, index: int, hint: str | None) -> tuple[Attachment, bytes]:
    data = _part_bytes(part)
    raw_name = _raw_filename(part, hint)
    filename = header_text(raw_name, hint=hint) if raw_name else ""
    meta = Attachment(
        index=index,
        filename=filename,
        content_type=part.get_content_type(),
        size=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
    )
    return meta, data


# -- addresses and dates ----------------------------------------------------------------


# The address headers ParsedMail carries. Repeated headers are read too (imap_tools and
# mail clients merge them).
_ADDRESS_HEADERS = frozenset({"from", "to", "cc", "reply-to"})
_SIMPLE_ADDR = re.compile(r"[^\s<>()\[\]\\,;:\"@]+@[^\s<>()\[\]\\,;:\"@]+")
_QUOTED_LOCAL = re.compile(r'^"[^"\\]*"@')
_QUOTED_PAIR = re.compile(r"\\(.)")
_BAD_IN_ADDR = re.compile(r"[\s<>()\[\]\\,;:\"]")
_ADDR_SPEC = re.compile(r"[^\s<>()\[\],;:\"'@]+@[^\s<>()\[\],;:\"'@]+")


@dataclass(slots=True)
class _Item:
    """One top-level entry of an address list, still undecoded."""

    text: list[str] = field(default_factory=list)  # outside angle brackets, since the last one
    mailboxes: list[tuple[str, str]] = field(default_factory=list)  # (text before, <inside>)

    def __bool__(self) -> bool:
        return bool(self.mailboxes) or bool("".join(self.text).strip())


def _split_items(value: str) -> list[_Item]:
    """Top-level entries of a raw address header, split before anything is decoded.

    Commas and semicolons separate entries and a colon ends a group's name, but only
    outside quoted strings, comments, angle brackets and RFC 2047 encoded words: an
    encoded display name may decode to ``Support: Jane`` or ``Doe, Jane``, which must
    never split it (decoding first and splitting after is how a sender gets lost).
    """
    items: list[_Item] = []
    item = _Item()
    i, n = 0, len(value)
    while i < n:
        ch = value[i]
        if ch == "=" and value.startswith("=?", i):
            word = _ENCODED_WORD.match(value, i)
            if word is not None:
                item.text.append(word.group(0))
                i = word.end()
                continue
        if ch in '"(':
            close = _skip_quoted(value, i) if ch == '"' else _skip_comment(value, i)
            item.text.append(value[i:close])
            i = close
            continue
        if ch == "<":
            close = value.find(">", i + 1)
            close = n if close < 0 else close
            item.mailboxes.append(("".join(item.text), value[i + 1 : close]))
            item.text = []
            i = close + 1
            continue
        if ch in ",;":
            items.append(item)
            item = _Item()
        elif ch == ":" and not item.mailboxes:
            item = _Item()  # a group's display name ("Team: a@x, b@y;") is nobody's address
        else:
            item.text.append(ch)
        i += 1
    items.append(item)
    return [it for it in items if it]


def _skip_quoted(value: str, i: int) -> int:
    """Index after the quoted string starting at `i` (the end of `value` if unclosed)."""
    j = i + 1
    while j < len(value):
        if value[j] == "\\":
            j += 2
            continue
        if value[j] == '"':
            return j + 1
        j += 1
    return len(value)


def _skip_comment(value: str, i: int) -> int:
    """Index after the (possibly nested) comment starting at `i`."""
    depth, j = 0, i
    while j < len(value):
        c = value[j]
        if c == "\\":
            j += 2
            continue
        depth += (c == "(") - (c == ")")
        j += 1
        if depth == 0:
            return j
    return len(value)


def _item_pairs(item: _Item) -> list[tuple[str, str]]:
    """(raw display name, addr-spec) pairs of one entry.

    ``name <addr>``: the angle address, whatever the name looks like (an unquoted
    ``ceo@firm.example <x@y>`` is a display name, never the sender); a name after the
    brackets counts when there is none before. ``addr (name)`` and a bare ``addr``: the
    stdlib reads them. ``Big Bug bb@bug.com``: the one address-looking word, the rest
    as the name.
    """
    trailing = "".join(item.text).strip()
    if item.mailboxes:
        pairs = [(before.strip(), _addr_spec(inside)) for before, inside in item.mailboxes]
        if trailing and not pairs[-1][0]:
            pairs[-1] = (trailing, pairs[-1][1])
        return pairs
    if _SIMPLE_ADDR.fullmatch(trailing):
        return [("", trailing)]
    name, addr = email.utils.parseaddr(trailing)
    probe = _QUOTED_LOCAL.sub("x@", addr)  # "system administrator"@example.com is one
    if probe and not any(c.isspace() for c in probe) and probe.count("@") == 1:
        return [(name, addr)]
    found = _ADDR_SPEC.findall(trailing)
    if len(found) == 1:
        rest = re.sub(r"[<>\"]", " ", trailing.replace(found[0], " "))
        return [(" ".join(rest.split()).strip("'"), found[0])]
    return [("", a) for a in found]


def _addr_spec(inside: str) -> str:
    """What stands between angle brackets, without comments, folding or a source route
    (``<@relay1,@relay2:user@host>``, RFC 5322 4.4)."""
    if _SIMPLE_ADDR.fullmatch(inside):
        return inside
    out: list[str] = []
    i = 0
    while i < len(inside):
        if inside[i] == "(":
            i = _skip_comment(inside, i)
            continue
        if inside[i] == '"':  # a quoted local part keeps its spaces
            close = _skip_quoted(inside, i)
            out.append(inside[i:close])
            i = close
            continue
        if not inside[i].isspace():
            out.append(inside[i])
        i += 1
    return "".join(out).rpartition(":")[2]


def _display_name(raw: str) -> str:
    """A display name, still encoded, without quotes and quoted-pair backslashes.

    Comments stay as written, ``Jane (Acme)``, and are the name when nothing else is:
    ``(Jane) <j@x>``, ``j@x (Jane)``. Encoded words pass whole, so a quote inside one
    (``=?utf-8?q?Jane_"JJ"?=``, sloppy but common) is not taken for a quoted string.
    """
    words: list[str] = []
    comments: list[str] = []
    i = 0
    while i < len(raw):
        ch = raw[i]
        word = _ENCODED_WORD.match(raw, i) if raw.startswith("=?", i) else None
        if word is not None:
            words.append(word.group(0))
            i = word.end()
        elif ch in '"(':
            close = _skip_quoted(raw, i) if ch == '"' else _skip_comment(raw, i)
            inner = _QUOTED_PAIR.sub(r"\1", raw[i + 1 : close - 1])
            if ch == '"':
                words.append(inner)
            else:
                comments.append(inner)
                words.append(f"({inner})")
            i = close
        else:
            words.append(ch)
            i += 1
    name = "".join(words).strip()
    if name.startswith("(") and name.endswith(")") and len(comments) == 1:
        return comments[0].strip()
    return name


def _address(name: str, addr: str, hint: str | None) -> Address | None:
    addr = _clean(one_line(_unescape_8bit(str(addr), hint))).lower()
    local, _, domain = addr.rpartition("@")
    quoted = len(local) > 2 and local[0] == local[-1] == '"'  # "system administrator"@x
    if (
        not local
        or not domain
        or _BAD_IN_ADDR.search(domain)
        or (not quoted and (_BAD_IN_ADDR.search(local) or "@" in local))
    ):
        return None  # "undisclosed-recipients", "@host", "a\\@b@c": nothing to write to
    display = header_text(_display_name(name), hint=hint).strip()
    if len(display) >= 2 and display[0] == display[-1] and display[0] in "\"'":
        display = display[1:-1].strip()  # quotes inside an encoded word: '"Jane Doe"'
    return Address(addr=addr, name="" if display.lower() == addr else display)


def _address_list(values: list[str], hint: str | None) -> tuple[Address, ...]:
    """Every address of every occurrence of a header, once each, in order.

    Split on the raw value, then the display names decoded one by one (see
    `_split_items`).
    """
    result: list[Address] = []
    seen: set[str] = set()
    for value in values:
        for item in _split_items(value):
            for name, addr in _item_pairs(item):
                address = _address(name, addr, hint)
                if address is not None and address.addr not in seen:
                    seen.add(address.addr)
                    result.append(address)
    return tuple(result)


def parse_date(value: str | None) -> datetime | None:
    """A Date header as an aware datetime in the sender's offset; None for garbage.

    ``-0000`` ("offset unknown", RFC 5322 3.3) and a missing zone give UTC.
    """
    if not value:
        return None
    try:
        parsed = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed


# -- entry points ------------------------------------------------------------------------


def _message_from(raw: bytes) -> Message:
    data = _readable_bytes(raw)
    try:
        message = email.message_from_bytes(data)
    except RecursionError as exc:
        raise UnparsableMail("MIME nesting too deep to parse") from exc
    except Exception as exc:
        raise UnparsableMail(f"stdlib parser failed: {type(exc).__name__}: {exc}") from exc
    if len(message) == 0:
        raise UnparsableMail("no header fields")
    return message


class _MailParser(mailparser.MailParser):  # type: ignore[misc]  # mail-parser ships no types
    """mail-parser minus the JSON-ready `mail` dicts, which inboxd never reads.

    `parse()` builds them twice (complete and partial), decoding every header
    again each time: about a fifth of mail-parser's run time.
    """

    def _make_mail(self, complete: bool = True) -> dict[str, object]:
        return {}


def _mailparser_defects(parser: mailparser.MailParser) -> list[str]:
    out: list[str] = []
    for entry in parser.defects or ():
        if isinstance(entry, Mapping):
            for where, items in entry.items():
                out.extend(f"{where}: {item}" for item in items)
        else:
            out.append(str(entry))
    return out


def _stdlib_defects(message: Message) -> list[str]:
    out: list[str] = []
    for part in message.walk():
        out.extend(
            f"{part.get_content_type()}: {type(d).__name__}: {d.__doc__ or ''}".strip()
            for d in part.defects
        )
    return out


def parse(raw: bytes) -> ParsedMail:
    """Parse raw RFC 822 bytes once into a ParsedMail.

    Raises UnparsableMail for empty input, data that is not a mail (Outlook
    .msg, binary junk, no header lines), or a parser failure with no fallback.
    """
    message = _message_from(raw)
    try:
        return _build(raw, message)
    except UnparsableMail:
        raise
    except RecursionError as exc:
        raise UnparsableMail("MIME nesting too deep to parse") from exc
    except Exception as exc:
        raise UnparsableMail(f"cannot read mail: {type(exc).__name__}: {exc}") from exc


def _build(raw: bytes, message: Message) -> ParsedMail:
    defects: list[str] = []
    parser: mailparser.MailParser | None
    try:
        parser = _MailParser(message)
    except RecursionError:
        raise
    except Exception as exc:  # noqa: BLE001 - mail-parser bugs on real DSNs: use the stdlib
        parser = None
        defects.append(f"mail-parser failed ({type(exc).__name__}: {exc}); stdlib fallback")

    raw_headers = list(message.raw_items())
    hint = _charset_hint(message, raw_headers)
    headers: dict[str, list[str]] = {}
    raw_addresses: dict[str, list[str]] = {}
    for name, value in raw_headers:
        key = name.strip().lower()
        headers.setdefault(key, []).append(header_text(value, hint=hint))
        if key in _ADDRESS_HEADERS:
            raw_addresses.setdefault(key, []).append(str(value))

    def first(name: str) -> str | None:
        values = headers.get(name)
        return values[0] if values else None

    defects.extend(_mailparser_defects(parser) if parser else _stdlib_defects(message))

    def addresses(header: str) -> tuple[Address, ...]:
        return _address_list(raw_addresses.get(header, []), hint)

    raw_date = first("date")
    date = parse_date(raw_date)
    if raw_date and date is None:
        defects.append(f"Date header unreadable: {raw_date[:80]!r}")

    parts = _classify_parts(message)
    attachments = tuple(_attachment(part, i, hint)[0] for i, part in enumerate(parts.attachments))
    plain = "\n".join(t for t in map(_part_text, parts.plain) if t.strip())
    html = "\n".join(map(_part_text, parts.html)) if parts.html else None
    text = plain if plain.strip() or not html else html_to_text(html)

    senders = addresses("from")
    in_reply_to, references = first("in-reply-to"), first("references")
    own_ids = msgids.extract_ids(first("message-id"))
    message_id = own_ids[0] if own_ids else None
    return ParsedMail(
        message_id=message_id,
        in_reply_to=msgids.extract_ids(in_reply_to),
        references=msgids.extract_ids(references),
        from_=senders[0] if senders else None,
        to=addresses("to"),
        cc=addresses("cc"),
        reply_to=addresses("reply-to"),
        subject=first("subject") or "",
        date=date,
        text=text,
        html=html,
        attachments=attachments,
        headers={name: tuple(values) for name, values in headers.items()},
        content_type=message.get_content_type(),
        defects=tuple(dict.fromkeys(defects)),
        size=len(raw),
        parent_ids=msgids.parent_candidates(in_reply_to, references, message_id=message_id),
    )


@dataclass(frozen=True, slots=True)
class Parsed:
    """A mail's parse: the mail, or why it could not be read (the intake quarantines it).

    Read ahead in the parser process (`classify.screened`), it also carries what intake
    would otherwise work out from the bytes alone in the worker's thread: the mail's
    classification, made for `screened_as` (our addresses, the blocklist), and the
    SHA-256 of the bytes.
    """

    mail: ParsedMail | None
    problem: str | None = None
    verdict: Any = None  # a classify.Classification (mail/ does not import tickets/)
    screened_as: tuple[frozenset[str], tuple[str, ...]] | None = None
    digest: str | None = None


def parse_for_intake(data: bytes, max_bytes: int) -> Parsed:
    """What intake needs from the bytes; never raises for a bad mail (in the worker,
    or in the daemon's parser process: `parsepool`)."""
    if len(data) > max_bytes:
        return Parsed(None, f"oversize: {len(data)} bytes > limit {max_bytes}")
    try:
        return Parsed(parse(data))
    except UnparsableMail as exc:
        return Parsed(None, f"unparsable: {exc}")
    except Exception as exc:  # noqa: BLE001 - a parser bug quarantines, never stops intake
        return Parsed(None, f"parser error: {type(exc).__name__}: {exc}")


def attachment_payload(raw: bytes, index: int) -> tuple[Attachment, bytes]:
    """Metadata and decoded bytes of attachment `index` (its position in `parse(raw)`).

    Raises UnparsableMail as `parse` does, IndexError when there is no such attachment.
    """
    message = _message_from(raw)
    parts = _classify_parts(message)
    if not 0 <= index < len(parts.attachments):
        raise IndexError(f"attachment {index} does not exist (mail has {len(parts.attachments)})")
    hint = _charset_hint(message, list(message.raw_items()))
    return _attachment(parts.attachments[index], index, hint)
