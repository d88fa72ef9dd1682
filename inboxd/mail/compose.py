"""Outgoing messages: headers, threading headers, reply token, loop protection. Pure.

Values that come from customers (subjects, names) are collapsed to one line before they
reach a header, so CR/LF or header-looking text can never add a header of its own.
"""

from __future__ import annotations

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
