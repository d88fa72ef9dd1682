"""Satisfaction surveys: sent once on resolve, answered by a reply that threads by token."""

from __future__ import annotations

import email
import email.policy
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path

import pytest
from sqlalchemy import Engine, func
from sqlmodel import Session, col, select
from support import Box, make_mail, write_config

from inboxd.config import Settings, load_settings
from inboxd.db import session_scope
from inboxd.mail import compose
from inboxd.mail.parse import parse
from inboxd.models import Outbox, Ticket, TicketEvent
from inboxd.tickets import intake, outbox, survey
from inboxd.tickets.survey import parse_answer
from inboxd.tickets.tokens import make_token, reply_address

SECRET = b"survey-secret"
NOW = datetime(2026, 11, 20, 15, tzinfo=UTC)
CUSTOMER = "carla@client.example"


def config(tmp_path: Path, *, enabled: bool) -> Settings:
    path = write_config(
        tmp_path / ("on" if enabled else "off"),
        database="sqlite:///unused.db",
        boxes=[Box("support", "support@example.com")],
        extra=f"[survey]\nenabled = {str(enabled).lower()}\n",
    )
    return load_settings(path)


def intake_config(settings: Settings) -> intake.IntakeConfig:
    return intake.IntakeConfig.from_settings(settings, secret=SECRET, rules=None, clock=lambda: NOW)


def open_ticket(engine: Engine, settings: Settings, *, answered: bool = True) -> int:
    """A ticket from the customer, answered by an agent (or not), then resolved."""
    data = make_mail(subject="Printer jams", sender=f"Carla <{CUSTOMER}>", body="It jams.")
    with session_scope(engine) as s:
        received = intake.receive(s, intake_config(settings), mailbox="support", data=data)
        ticket = s.get(Ticket, received.ticket_id)
        assert ticket is not None and ticket.id is not None
        if answered:
            reply = compose.build(
                compose.Outgoing(
                    sender="support@example.com",
                    sender_name="Support",
                    to=[CUSTOMER],
                    subject="Re: Printer jams",
                    text="Turn it off and on again.",
                    at=NOW,
                )
            )
            outbox.enqueue(
                s,
                kind="reply",
                message=reply,
                smtp="default",
                now=NOW,
                mailbox="support",
                ticket=ticket,
                author="ann@example.com",
            )
        ticket.status, ticket.resolved_at = "resolved", NOW
        return ticket.id


def surveys(engine: Engine, ticket_id: int) -> list[EmailMessage]:
    with Session(engine) as s:
        rows = s.exec(
            select(Outbox).where(Outbox.ticket_id == ticket_id, Outbox.kind == "survey")
        ).all()
        return [
            email.message_from_bytes(r.data, policy=email.policy.default)  # type: ignore[misc]
            for r in rows
        ]


def send(engine: Engine, settings: Settings, ticket_id: int) -> bool:
    with session_scope(engine) as s:
        ticket = s.get(Ticket, ticket_id)
        assert ticket is not None
        return survey.maybe_send(s, settings=settings, ticket=ticket, secret=SECRET, now=NOW)


def test_sent_once_on_resolve(engine: Engine, tmp_path: Path) -> None:
    settings = config(tmp_path, enabled=True)
    tid = open_ticket(engine, settings)
    assert send(engine, settings, tid) is True
    assert send(engine, settings, tid) is False  # once, however often resolve is called
    [mail] = surveys(engine, tid)
    assert mail["To"] == CUSTOMER
    assert mail["From"] == "Support <support@example.com>"
    token = make_token(SECRET, tid)
    assert mail["Reply-To"] == f"Support <{reply_address('support@example.com', token)}>"
    assert mail["Auto-Submitted"] == "auto-generated"
    assert mail["Subject"] == f"[#{tid}] How did we do? Printer jams"
    assert mail["In-Reply-To"]  # threads under the conversation
    body = mail.get_content()
    assert "Hello Carla," in body and f"[#{tid}]" in body
    assert "good    if we helped you" in body and "bad     if we did not" in body
    with Session(engine) as s:
        kinds = s.exec(
            select(TicketEvent.kind).where(TicketEvent.ticket_id == tid).order_by(TicketEvent.id)
        ).all()
    assert kinds.count("survey-sent") == 1


def test_not_sent_when_disabled_unanswered_or_open(engine: Engine, tmp_path: Path) -> None:
    off = config(tmp_path, enabled=False)
    on = config(tmp_path, enabled=True)
    tid = open_ticket(engine, off)
    assert send(engine, off, tid) is False
    assert surveys(engine, tid) == []

    silent = open_ticket(engine, on, answered=False)  # closed without a word to the customer
    assert send(engine, on, silent) is False

    reopened = open_ticket(engine, on)
    with session_scope(engine) as s:
        ticket = s.get(Ticket, reopened)
        assert ticket is not None
        ticket.status = "open"
    assert send(engine, on, reopened) is False
    assert surveys(engine, silent) == [] and surveys(engine, reopened) == []


def answer_mail(tid: int, body: str, *, sender: str = CUSTOMER) -> bytes:
    to = reply_address("support@example.com", make_token(SECRET, tid))
    return make_mail(subject=f"Re: [#{tid}] How did we do?", sender=sender, to=to, body=body)


def tickets_count(engine: Engine) -> int:
    with Session(engine) as s:
        return s.exec(select(func.count(col(Ticket.id)))).one()


def test_good_answer_threads_by_token_and_sets_csat(engine: Engine, tmp_path: Path) -> None:
    settings = config(tmp_path, enabled=True)
    tid = open_ticket(engine, settings)
    assert send(engine, settings, tid)
    before = tickets_count(engine)
    data = answer_mail(tid, "Good, thanks!\n\nOn Friday Support wrote:\n> How did we do?\n")
    with session_scope(engine) as s:
        received = intake.receive(s, intake_config(settings), mailbox="support", data=data)
    assert (received.outcome, received.ticket_id) == ("joined", tid)  # by the reply token
    assert tickets_count(engine) == before  # no new ticket
    with Session(engine) as s:
        ticket = s.get(Ticket, tid)
        assert ticket is not None
        assert (ticket.csat, ticket.csat_comment) == ("good", "thanks!")
        event = s.exec(
            select(TicketEvent).where(TicketEvent.ticket_id == tid, TicketEvent.kind == "csat")
        ).one()
    assert event.actor == CUSTOMER
    assert event.data["rating"] == "good" and event.data["comment"] == "thanks!"


def test_intake_alone_records_the_answer_without_reopening(engine: Engine, tmp_path: Path) -> None:
    settings = config(tmp_path, enabled=True)
    tid = open_ticket(engine, settings)
    assert send(engine, settings, tid)
    with session_scope(engine) as s:
        intake.receive(
            s, intake_config(settings), mailbox="support", data=answer_mail(tid, "bad, slow")
        )
    with Session(engine) as s:
        ticket = s.get(Ticket, tid)
        assert ticket is not None
        assert (ticket.status, ticket.reopened, ticket.csat) == ("resolved", 0, "bad")


def test_what_is_not_an_answer(engine: Engine, tmp_path: Path) -> None:
    settings = config(tmp_path, enabled=True)
    tid = open_ticket(engine, settings)

    def answers(data: bytes) -> bool:
        with session_scope(engine) as s:
            ticket = s.get(Ticket, tid)
            assert ticket is not None
            return survey.record_answer(s, ticket=ticket, mail=parse(data), now=NOW)

    assert not answers(answer_mail(tid, "good"))  # no survey was sent yet
    assert send(engine, settings, tid)
    assert not answers(answer_mail(tid, "It still jams every morning."))  # a follow-up
    assert not answers(answer_mail(tid, "No, it still jams every morning at nine."))
    assert not answers(answer_mail(tid, "good", sender="mallory@evil.example"))  # a stranger
    assert answers(answer_mail(tid, "👎 took a week"))
    assert answers(answer_mail(tid, "Very good!"))  # a second answer replaces the first
    with Session(engine) as s:
        ticket = s.get(Ticket, tid)
        assert ticket is not None and (ticket.csat, ticket.csat_comment) == ("good", None)
        ratings = s.exec(
            select(TicketEvent).where(TicketEvent.ticket_id == tid, TicketEvent.kind == "csat")
        ).all()
    assert [(e.data["rating"], e.data["previous"]) for e in ratings] == [
        ("bad", None),
        ("good", "bad"),
    ]
    with session_scope(engine) as s:  # reopened by a follow-up: no longer asked
        ticket = s.get(Ticket, tid)
        assert ticket is not None
        ticket.status = "open"
    assert not answers(answer_mail(tid, "bad"))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Good, thanks!", ("good", "thanks!")),
        ("good", ("good", None)),
        ("  **BAD** - nobody read my mail", ("bad", "nobody read my mail")),
        ("Very good.", ("good", None)),
        ("Yes, thank you", ("good", "thank you")),
        ("yes", ("good", None)),
        ("No", ("bad", None)),
        ("👍🏽", ("good", None)),
        ("👎 slow", ("bad", "slow")),
        ("Gut, danke", ("good", "danke")),
        ("Bra!", ("good", None)),
        ("dårlig", ("bad", None)),
        ("great\n\n-- \nCarla Customer\n+47 555 1234", ("good", None)),
        ("not good", None),
        ("No thanks", None),
        ("No, the printer still jams", None),
        ("Yes but the printer still jams every single morning at nine", None),
        ("Hello, the printer jams again", None),
        ("Goodness, it jams again", None),
        ("", None),
        ("   ", None),
        ("?!", None),
    ],
)
def test_parse_answer(text: str, expected: tuple[str, str | None] | None) -> None:
    assert parse_answer(text) == expected


def test_survey_template_renders_with_sample_values(tmp_path: Path) -> None:
    from inboxd.tickets import templates

    body = templates.render("survey.txt", survey.sample_context(), folder=None)
    assert "Hello Carla Customer," in body and "[#1234]" in body


def test_an_agent_resolving_the_ticket_sends_the_survey_once(
    engine: Engine, tmp_path: Path
) -> None:
    from inboxd.tickets import actions

    settings = config(tmp_path, enabled=True)
    tid = open_ticket(engine, settings)  # answered and resolved behind the agent's back
    with session_scope(engine) as s:
        ticket = s.get(Ticket, tid)
        assert ticket is not None
        ticket.status, ticket.resolved_at = "open", None
        lead = actions.agent(settings, settings.team(ticket.team or "").lead or "")
    assert surveys(engine, tid) == []
    for _ in range(2):  # resolved, reopened, resolved again: one survey only
        with session_scope(engine) as s:
            actions.set_status(
                s, settings=settings, who=lead, ticket_id=tid, status="resolved", now=NOW
            )
        assert len(surveys(engine, tid)) == 1
        with session_scope(engine) as s:
            actions.set_status(
                s, settings=settings, who=lead, ticket_id=tid, status="open", now=NOW
            )
