"""Outgoing messages: headers, threading headers, reply token, loop protection. Pure.

Values that come from customers (subjects, names) are collapsed to one line before they
reach a header, so CR/LF or header-looking text can never add a header of its own.
"""

from __future__ import annotations

import email.charset
import email.header
import email.utils
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime

from inboxd.mail.msgids import make_message_id

LOOP_HEADER = "X-Inboxd-Loop"
_SPACE = re.compile(r"\s+")
MAX_SUBJECT = 250


def one_line(text: str, *, limit: int = 998) -> str:
    """Collapse every run of whitespace (CR, LF, tabs included) to one space."""
    return _SPACE.sub(" ", text).strip()[:limit]


def address(addr: str, name: str | None = None) -> Address:
    """An Address object; raises ValueError for anything that is not one mailbox."""
    local, at, domain = addr.strip().rpartition("@")
    if not at or not local or not domain:
        raise ValueError(f"not an e-mail address: {addr!r}")
    return Address(display_name=one_line(name or "", limit=200), username=local, domain=domain)


@dataclass(frozen=True)
class Attachment:
    filename: str
    content_type: str
    data: bytes


@dataclass(frozen=True)
class Outgoing:
    """What to send. `loop_id` identifies this installation in the loop header."""

    sender: str
    sender_name: str | None
    to: Sequence[str]
    subject: str
    text: str
    at: datetime
    cc: Sequence[str] = ()
    reply_to: str | None = None
    in_reply_to: str | None = None  # a Message-ID without brackets
    references: Sequence[str] = ()
    auto_submitted: str | None = None  # "auto-replied" for acks, "auto-generated" for notices
    attachments: Sequence[Attachment] = ()
    loop_id: str = "inboxd"
    extra_headers: dict[str, str] = field(default_factory=dict)


def build(out: Outgoing) -> EmailMessage:
    """An RFC 5322 message with a fresh Message-ID on the sender's domain."""
    msg = EmailMessage()
    msg["From"] = address(out.sender, out.sender_name)
    msg["To"] = [address(a) for a in out.to]
    if out.cc:
        msg["Cc"] = [address(a) for a in out.cc]
    if out.reply_to:
        msg["Reply-To"] = address(out.reply_to, out.sender_name)
    msg["Subject"] = one_line(out.subject, limit=MAX_SUBJECT)
    msg["Date"] = format_datetime(out.at)
    msg["Message-ID"] = f"<{make_message_id(out.sender.rpartition('@')[2])}>"
    if out.in_reply_to:
        msg["In-Reply-To"] = f"<{out.in_reply_to}>"
    refs = [
        r
        for r in dict.fromkeys([*out.references, *([out.in_reply_to] if out.in_reply_to else [])])
        if r
    ]
    if refs:
        msg["References"] = " ".join(f"<{r}>" for r in refs[-20:])  # bounded, newest last
    if out.auto_submitted:
        msg["Auto-Submitted"] = out.auto_submitted  # RFC 3834
        msg["X-Auto-Response-Suppress"] = "All"  # Exchange: no OOF or read receipts back
        msg["Precedence"] = "auto_reply"
    msg[LOOP_HEADER] = one_line(out.loop_id, limit=100)
    for name, value in out.extra_headers.items():
        msg[name] = one_line(value)
    msg.set_content(out.text)
    for a in out.attachments:
        maintype, _, subtype = a.content_type.partition("/")
        msg.add_attachment(
            a.data,
            maintype=maintype or "application",
            subtype=subtype or "octet-stream",
            filename=one_line(a.filename, limit=200),
        )
    return msg


def message_id_of(msg: EmailMessage) -> str:
    return str(msg["Message-ID"]).strip().strip("<>")


@dataclass(frozen=True, slots=True)
class Rendered:
    """An outgoing mail as bytes, with the facts the outbox records read off `Outgoing`.

    The outbox needs the sender, recipients, subject and text as columns: taking them from
    what was composed avoids parsing back headers that were just written.
    """

    message_id: str  # without brackets
    mail_from: str
    sender_name: str
    to: tuple[str, ...]
    cc: tuple[str, ...]
    subject: str
    text: str
    data: bytes
    bcc: tuple[str, ...] = ()  # envelope only, never a header

    @property
    def recipients(self) -> list[str]:
        """Envelope recipients, lowercased, in order, once each."""
        return list(dict.fromkeys(a.lower() for a in (*self.to, *self.cc, *self.bcc)))


_QP_UTF8 = email.charset.Charset("utf-8")
_QP_UTF8.body_encoding = email.charset.QP


def render(out: Outgoing) -> Rendered:
    """`out` as RFC 5322 bytes with a fresh Message-ID: what the outbox stores and sends.

    Plain-text mail (acknowledgements, notices, most replies) is written directly: several
    times cheaper than `EmailMessage` header objects, which matters on the intake path.
    Mail with attachments goes through `build`.
    """
    message_id = make_message_id(out.sender.rpartition("@")[2])
    subject = one_line(out.subject, limit=MAX_SUBJECT)
    if out.attachments:
        msg = build(out)
        msg.replace_header("Message-ID", f"<{message_id}>")
        data = msg.as_bytes()
    else:
        data = _plain_bytes(out, subject, message_id)
    return Rendered(
        message_id=message_id,
        mail_from=_checked(out.sender),
        sender_name=one_line(out.sender_name or "", limit=200),
        to=tuple(_checked(a) for a in out.to),
        cc=tuple(_checked(a) for a in out.cc),
        subject=subject,
        text=out.text,
        data=data,
    )


def _checked(addr: str) -> str:
    """`addr` if it is one plain mailbox address; ValueError otherwise (as `address`)."""
    addr = addr.strip()
    local, at, domain = addr.rpartition("@")
    if not at or not local or not domain or _NOT_IN_ADDRESS.search(addr):
        raise ValueError(f"not an e-mail address: {addr!r}")
    return addr


_NOT_IN_ADDRESS = re.compile(r"[\s<>,;:()\[\]\\]")


def _mailbox(addr: str, name: str | None = None) -> str:
    """One address header value, its display name RFC 2047-encoded when not ASCII."""
    name = one_line(name or "", limit=200)
    if not name:  # as formataddr: the bare address, which must be ASCII
        addr = _checked(addr)
        addr.encode("ascii")
        return addr
    return email.utils.formataddr((name, _checked(addr)), "utf-8")


_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def date_header(at: datetime) -> str:
    """`at` as an RFC 5322 Date, the text `email.utils.format_datetime` writes, in a
    fraction of its time (every acknowledgement has one)."""
    offset = at.utcoffset()
    if offset is None:
        return format_datetime(at)
    minutes = int(offset.total_seconds() // 60)
    hours, mins = divmod(abs(minutes), 60)
    return (
        f"{_DAYS[at.weekday()]}, {at.day:02d} {_MONTHS[at.month - 1]} {at.year:04d} "
        f"{at.hour:02d}:{at.minute:02d}:{at.second:02d} "
        f"{'-' if minutes < 0 else '+'}{hours:02d}{mins:02d}"
    )


def _plain_bytes(out: Outgoing, subject: str, message_id: str) -> bytes:
    headers = [
        ("From", _mailbox(out.sender, out.sender_name)),
        ("To", ", ".join(_mailbox(a) for a in out.to)),
    ]
    if out.cc:
        headers.append(("Cc", ", ".join(_mailbox(a) for a in out.cc)))
    if out.reply_to:
        headers.append(("Reply-To", _mailbox(out.reply_to, out.sender_name)))
    headers += [
        ("Subject", subject),
        ("Date", date_header(out.at)),
        ("Message-ID", f"<{message_id}>"),
    ]
    if out.in_reply_to:
        headers.append(("In-Reply-To", f"<{out.in_reply_to}>"))
    refs = [
        r
        for r in dict.fromkeys([*out.references, *([out.in_reply_to] if out.in_reply_to else [])])
        if r
    ]
    if refs:
        headers.append(("References", " ".join(f"<{r}>" for r in refs[-20:])))
    if out.auto_submitted:
        headers += [
            ("Auto-Submitted", out.auto_submitted),
            ("X-Auto-Response-Suppress", "All"),
            ("Precedence", "auto_reply"),
        ]
    headers.append((LOOP_HEADER, one_line(out.loop_id, limit=100)))
    headers += [(name, one_line(value)) for name, value in out.extra_headers.items()]
    text = out.text.replace("\r\n", "\n").replace("\r", "\n")
    if not text.endswith("\n"):
        text += "\n"
    if text.isascii() and all(len(line) <= 998 for line in text.splitlines()):
        charset, encoding, body = "us-ascii", "7bit", text
    else:
        charset, encoding, body = "utf-8", "quoted-printable", _QP_UTF8.body_encode(text)
        body = body if body.endswith("\n") else body + "\n"
    headers += [
        ("MIME-Version", "1.0"),
        ("Content-Type", f'text/plain; charset="{charset}"'),
        ("Content-Transfer-Encoding", encoding),
    ]
    head = "".join(_header_line(name, value) for name, value in headers)
    return (head + "\n" + body).encode("ascii")


def _header_line(name: str, value: str) -> str:
    """One header field: as is when short ASCII, else folded and RFC 2047-encoded."""
    if value.isascii() and len(name) + len(value) < 76:
        return f"{name}: {value}\n"
    folded = email.header.Header(value, header_name=name).encode(linesep="\n", maxlinelen=78)
    return f"{name}: {folded}\n"
