"""A customer's autoresponder against a running daemon: the acknowledgements never ping-pong.

A live answering script plays the customer's vacation responder: every mail the SMTP
relay accepts for the customer, it answers by APPENDing an auto-reply into the Dovecot
INBOX that `inboxd run` watches under IDLE. Whatever the responder writes (RFC 3834
headers or none, threading headers or none, our ticket tag or not), the exchange has to
die out by itself: the customer gets one acknowledgement per new ticket, and a responder
that opens a new ticket with each answer gets at most `[ack] rate_limit` of them.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from pathlib import Path

import pytest
from servers import Database, Dovecot, ReceivedMail, SmtpSink
from sqlmodel import Session, col, select
from support import Box, daemon, daemon_log, make_mail, wait_for, write_config

from inboxd.models import MailboxState, Message, Ticket, TicketEvent

CUSTOMER = "carla@client.example"
SLA = """
[sla.standard]
first_response = "4h"
resolution = "3d"

[sla_defaults]
default = "standard"
"""
QUIET_S = 6.0  # no mail to the customer for this long (and every answer stored): loop over


def rfc3834(ack: EmailMessage) -> EmailMessage:
    """A well-behaved responder: Auto-Submitted, threaded, to the Reply-To address."""
    reply = _answer(ack, subject=f"Auto: {ack['Subject']}", to=str(ack["Reply-To"]))
    reply["Auto-Submitted"] = "auto-replied"
    _thread(reply, ack)
    return reply


def naive_re(ack: EmailMessage) -> EmailMessage:
    """No RFC 3834 or Precedence header: only "Re:" and the threading headers."""
    reply = _answer(ack, subject=f"Re: {ack['Subject']}", to=str(ack["Reply-To"]))
    _thread(reply, ack)
    return reply


def naive_out_of_office(ack: EmailMessage) -> EmailMessage:
    """No machine header at all, not threaded: "Out of office:" before our subject."""
    return _answer(ack, subject=f"Out of office: {ack['Subject']}", to=str(ack["From"]))


def naive_unthreaded(ack: EmailMessage) -> EmailMessage:
    """The worst: a fixed human-looking subject, no tag, no header to link it to anything."""
    return _answer(ack, subject="Thank you for your email", to=str(ack["From"]))


def _answer(ack: EmailMessage, *, subject: str, to: str) -> EmailMessage:
    reply = EmailMessage()
    reply["From"] = f"Carla Customer <{CUSTOMER}>"
    reply["To"] = to
    reply["Subject"] = subject
    reply["Date"] = format_datetime(datetime.now(UTC))
    reply["Message-ID"] = make_msgid(domain="client.example")
    reply.set_content("I am out of the office until Monday and will read your mail then.\n")
    return reply


def _thread(reply: EmailMessage, ack: EmailMessage) -> None:
    reply["In-Reply-To"] = str(ack["Message-ID"])
    reply["References"] = " ".join(
        [*str(ack.get("References", "")).split(), str(ack["Message-ID"])]
    )


@dataclass
class Responder:
    """The customer's autoresponder: answers each mail the relay accepted for the customer."""

    sink: SmtpSink
    dovecot: Dovecot
    user: str
    compose: Callable[[EmailMessage], EmailMessage]
    received: list[ReceivedMail]
    answered: int = 0
    last_at: float = 0.0  # monotonic time of the last mail the customer got

    def run(self, stop: threading.Event) -> None:
        seen = 0
        while not stop.is_set():
            new = self.sink.messages[seen:]
            seen += len(new)
            for mail in new:
                if CUSTOMER not in mail.rcpt_tos:
                    continue  # agents' notifications: not the customer's mailbox
                self.received.append(mail)
                self.last_at = time.monotonic()
                reply = self.compose(mail.message)
                self.dovecot.append(self.user, "INBOX", reply.as_bytes())
                self.answered += 1
            time.sleep(0.05)


@pytest.fixture
def running(
    tmp_path: Path,
    sqlite_database: Database,
    dovecot: Dovecot,
    mailbox_user: tuple[str, str],
    smtp_sink: SmtpSink,
) -> Iterator[Callable[[Callable[[EmailMessage], EmailMessage]], Responder]]:
    """Start `inboxd run` and the responder; yields a function that starts the exchange."""
    user, password = mailbox_user
    config = write_config(
        tmp_path / "cfg",
        database=sqlite_database.url,
        boxes=[Box("support", "support@example.com", user, password)],
        imap_port=dovecot.port,
        smtp_port=smtp_sink.port,
        extra=SLA,
    )
    stop = threading.Event()
    threads: list[threading.Thread] = []

    def start(compose: Callable[[EmailMessage], EmailMessage]) -> Responder:
        responder = Responder(smtp_sink, dovecot, user, compose, [], last_at=time.monotonic())
        thread = threading.Thread(target=responder.run, args=(stop,), daemon=True)
        thread.start()
        threads.append(thread)
        dovecot.append(user, "INBOX", make_mail(sender=f"Carla Customer <{CUSTOMER}>"))
        return responder

    with daemon(config) as proc:
        wait_for(lambda: _idling(sqlite_database), what="the mailbox worker to sync")
        try:
            yield start
        finally:
            stop.set()
            for thread in threads:
                thread.join(5)
        assert proc.poll() is None, daemon_log(config)


def _idling(db: Database) -> bool:
    with Session(db.engine) as s:
        row = s.get(MailboxState, "support")
        return bool(row and row.last_sync_at is not None)


def _inbound(db: Database) -> list[Message]:
    with Session(db.engine) as s:
        return list(
            s.exec(select(Message).where(Message.direction == "in").order_by(col(Message.id)))
        )


def _settled(db: Database, responder: Responder) -> bool:
    """Every answer is stored and the customer got nothing new for QUIET_S seconds."""
    stored = len(_inbound(db)) == 1 + responder.answered
    return stored and time.monotonic() - responder.last_at > QUIET_S


def _acks(responder: Responder) -> list[EmailMessage]:
    return [m.message for m in responder.received if m.message["Auto-Submitted"] == "auto-replied"]


@pytest.mark.parametrize(
    "compose",
    [rfc3834, naive_re, naive_out_of_office],
    ids=["rfc3834", "naive-re", "naive-out-of-office"],
)
def test_autoresponder_gets_one_ack_and_its_answer_joins_the_ticket(
    running: Callable[[Callable[[EmailMessage], EmailMessage]], Responder],
    sqlite_database: Database,
    compose: Callable[[EmailMessage], EmailMessage],
) -> None:
    responder = running(compose)
    wait_for(lambda: responder.received, timeout=30, what="the acknowledgement")
    wait_for(lambda: _settled(sqlite_database, responder), timeout=60, what="the exchange to end")

    # The customer got exactly one mail, the acknowledgement, and answered it once.
    [ack] = [m.message for m in responder.received]
    assert ack["Auto-Submitted"] == "auto-replied"
    assert str(ack["Subject"]).startswith("[#1] ")
    assert responder.answered == 1
    # The answer is on the customer's ticket: no second ticket, nothing acknowledged twice.
    first, answer = _inbound(sqlite_database)
    assert first.ticket_id == answer.ticket_id == 1
    with Session(sqlite_database.engine) as s:
        assert len(s.exec(select(Ticket)).all()) == 1
        acks = s.exec(select(TicketEvent).where(TicketEvent.kind == "ack-sent")).all()
    assert len(acks) == 1
    if compose is rfc3834:
        assert answer.classification == "auto-reply"


def test_unthreaded_autoresponder_is_stopped_by_the_ack_rate_limit(
    running: Callable[[Callable[[EmailMessage], EmailMessage]], Responder],
    sqlite_database: Database,
) -> None:
    """Nothing links its answers to our mail: each is a new ticket, until the rate limit."""
    responder = running(naive_unthreaded)
    wait_for(lambda: responder.received, timeout=30, what="the first acknowledgement")
    wait_for(lambda: _settled(sqlite_database, responder), timeout=90, what="the exchange to end")

    limit = 3  # [ack] rate_limit default: 3 per sender per hour
    assert len(_acks(responder)) == limit
    assert responder.answered == limit
    with Session(sqlite_database.engine) as s:
        tickets = s.exec(select(Ticket).order_by(col(Ticket.id))).all()
        suppressed = s.exec(select(TicketEvent).where(TicketEvent.kind == "ack-suppressed")).all()
    assert len(tickets) == limit + 1  # the first mail and each answer to an ack
    [last] = suppressed
    assert last.ticket_id == tickets[-1].id
    assert last.data["reason"].startswith("rate limit: 3 acknowledgements to this sender")
