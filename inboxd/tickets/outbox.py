"""The outbox, domain side: every outgoing mail is a row first, in the caller's transaction.

`enqueue` fixes the Message-ID when the row is written, so a rare resend after a crash
is recognisable downstream, and records it for threading: a reply to anything inboxd
sent lands on its ticket. Customer-facing mail (acks, replies, surveys) is also kept as
an outbound message of the ticket, so the conversation shows it. Delivery is
`inboxd.mail.smtp`'s job.
"""

from __future__ import annotations

from datetime import datetime
from email.message import EmailMessage
from email.utils import getaddresses

from sqlmodel import Session

from inboxd.mail.compose import message_id_of
from inboxd.models import Message, Outbox, RawMail, Ticket
from inboxd.tickets import threading

CUSTOMER_KINDS = frozenset({"ack", "reply", "survey"})  # part of the conversation
KINDS = CUSTOMER_KINDS | {"notify", "escalation", "alert"}


def recipients_of(msg: EmailMessage) -> list[str]:
    """Envelope recipients from To, Cc and Bcc, lowercased, in order, once each."""
    fields = [str(v) for name in ("To", "Cc", "Bcc") for v in msg.get_all(name, [])]
    return list(dict.fromkeys(addr.lower() for _, addr in getaddresses(fields) if addr))


def enqueue(
    session: Session,
    *,
    kind: str,
    message: EmailMessage,
    smtp: str,
    now: datetime,
    mailbox: str | None = None,
    ticket: Ticket | None = None,
    author: str | None = None,
    not_before: datetime | None = None,
) -> Outbox:
    """Queue `message` (which carries its Message-ID) for the SMTP endpoint `smtp`."""
    if kind not in KINDS:
        raise ValueError(f"unknown outbox kind {kind!r}")
    message_id = message_id_of(message)
    recipients = recipients_of(message)
    if not recipients:
        raise ValueError("an outgoing mail needs a recipient")
    bcc = message.get_all("Bcc")
    if bcc:
        del message["Bcc"]  # envelope only, never a header
    data = message.as_bytes()
    sender = getaddresses([str(message["From"])])[0][1]
    row = Outbox(
        message_id=message_id,
        ticket_id=ticket.id if ticket else None,
        kind=kind,
        mailbox=mailbox,
        smtp=smtp,
        mail_from=sender,
        recipients=recipients,
        rcpt_key=recipients[0],
        data=data,
        next_attempt_at=not_before or now,
        not_before=not_before,
        created_at=now,
    )
    session.add(row)
    if ticket is not None and ticket.id is not None:
        threading.remember_ids(session, ticket.id, [message_id])
        if kind in CUSTOMER_KINDS:
            _record_outbound(session, ticket, message, data, mailbox, author, now)
    session.flush()
    return row


def _record_outbound(
    session: Session,
    ticket: Ticket,
    message: EmailMessage,
    data: bytes,
    mailbox: str | None,
    author: str | None,
    now: datetime,
) -> None:
    from inboxd.tickets.intake import content_hash

    to = getaddresses([str(v) for v in message.get_all("To", [])])
    cc = getaddresses([str(v) for v in message.get_all("Cc", [])])
    body = message.get_body(preferencelist=("plain",))
    msg = Message(
        message_id=message_id_of(message),
        content_hash=content_hash(data),
        direction="out",
        ticket_id=ticket.id,
        mailbox=mailbox,
        author=author,
        from_addr=getaddresses([str(message["From"])])[0][1].lower(),
        to_addrs=[{"addr": a.lower(), "name": n} for n, a in to],
        cc_addrs=[{"addr": a.lower(), "name": n} for n, a in cc],
        subject=str(message["Subject"] or ""),
        date_at=now,
        date_offset_min=0,
        text=body.get_content() if body is not None else "",
        size=len(data),
        received_at=now,
        classification="own",
    )
    session.add(msg)
    session.flush()
    assert msg.id is not None
    session.add(RawMail(message_pk=msg.id, data=data))
    ticket.message_count += 1
    ticket.updated_at = now
