"""Agent notifications: only to teams that opted in, never to the actor or the customer."""

from __future__ import annotations

import email
import email.policy
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path

import pytest
from sqlalchemy import Engine
from sqlmodel import Session, select
from support import make_mail

from inboxd.config import Settings, load_settings
from inboxd.db import session_scope
from inboxd.mail.parse import parse
from inboxd.models import Message, Outbox, Ticket, TicketEvent
from inboxd.tickets import intake, notify, outbox

FRIDAY_NOON = datetime(2026, 11, 20, 12, tzinfo=UTC)
SATURDAY = datetime(2026, 11, 21, 10, tzinfo=UTC)
MONDAY_OPEN = datetime(2026, 11, 23, 9, tzinfo=UTC)
CONFIG = """
[inboxd]
database = "sqlite:///unused.db"
timezone = "UTC"

[smtp.default]
host = "127.0.0.1"
port = 2525
security = "none"

[[mailbox]]
name = "support"
address = "support@example.com"
default_team = "frontline"
smtp = "default"

[[mailbox]]
name = "billing"
address = "billing@example.com"
default_team = "billing"
smtp = "default"

[[mailbox]]
name = "nights"
address = "nights@example.com"
default_team = "night"
smtp = "default"

[[team]]
name = "frontline"
members = ["ann@example.com", "bob@example.com"]
lead = "lea@example.com"
notify = ["new-ticket", "customer-reply", "assigned"]

[[team]]
name = "billing"
members = ["carl@example.com"]

[[team]]
name = "night"
members = ["nina@example.com"]
address = "night-list@example.com"
calendar = "office"
notify = ["new-ticket"]

[calendar.office]
timezone = "UTC"

[calendar.office.hours]
mon = "09:00-17:00"
tue = "09:00-17:00"
wed = "09:00-17:00"
thu = "09:00-17:00"
fri = "09:00-17:00"
"""


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    (tmp_path / "rules").mkdir()
    path = tmp_path / "inboxd.toml"
    path.write_text(CONFIG)
    return load_settings(path)


def new_ticket(engine: Engine, settings: Settings, mailbox: str = "support", **mail: str) -> int:
    cfg = intake.IntakeConfig(
        secret=b"x",
        own_addresses=settings.own_addresses(),
        agents=settings.agents(),
        default_teams={m.name: m.default_team for m in settings.mailboxes},
    )
    with session_scope(engine) as s:
        received = intake.receive(s, cfg, mailbox=mailbox, data=make_mail(**mail))
    assert received.ticket_id is not None
    return received.ticket_id


def stored(session: Session, rows: list[outbox.Queued]) -> list[Outbox]:
    """The outbox rows as the database holds them (what the sender will read)."""
    found = [session.get(Outbox, r.id) for r in rows]
    assert all(row is not None for row in found)
    return [row for row in found if row is not None]


def sent(rows: list[outbox.Queued]) -> list[tuple[str, EmailMessage]]:
    out = []
    for row in rows:
        msg = email.message_from_bytes(row.data, policy=email.policy.default)
        assert isinstance(msg, EmailMessage)
        out.append((row.rcpt_key, msg))
    return out


def test_new_ticket_to_each_member_never_the_customer(engine: Engine, settings: Settings) -> None:
    tid = new_ticket(
        engine,
        settings,
        subject="Printer jams",
        sender="Carla <carla@client.example>",
        body="It jams every morning.\n\nOn Monday someone wrote:\n> old stuff",
    )
    with session_scope(engine) as s:
        ticket = s.get(Ticket, tid)
        assert ticket is not None
        rows = notify.new_ticket(s, settings=settings, ticket=ticket, now=FRIDAY_NOON)
        mails = sent(rows)
        assert all(r.kind == "notify" and r.not_before is None for r in stored(s, rows))
    assert [to for to, _ in mails] == ["ann@example.com", "bob@example.com"]
    _, mail = mails[0]
    assert mail["From"] == "inboxd <support@example.com>"
    assert mail["To"] == "ann@example.com"
    assert mail["Subject"] == f"[#{tid}] New ticket: Printer jams"
    assert mail["Auto-Submitted"] == "auto-generated"
    body = mail.get_content()
    assert f"New ticket for frontline: [#{tid}] Printer jams" in body
    assert "From:      Carla <carla@client.example>" in body
    assert "It jams every morning." in body and "old stuff" not in body
    assert f"inboxd ticket show {tid}" in body
    with Session(engine) as s:
        event = s.exec(
            select(TicketEvent).where(TicketEvent.ticket_id == tid, TicketEvent.kind == "notified")
        ).one()
        outgoing = s.exec(select(Message).where(Message.direction == "out")).all()
    assert event.data["what"] == "new-ticket"
    assert event.data["to"] == ["ann@example.com", "bob@example.com"]
    assert outgoing == []  # internal mail is not part of the customer's conversation

    # A member writing in as a customer is not told about their own ticket.
    own = new_ticket(engine, settings, subject="My laptop", sender="bob@example.com")
    with session_scope(engine) as s:
        ticket = s.get(Ticket, own)
        assert ticket is not None
        rows = notify.new_ticket(s, settings=settings, ticket=ticket, now=FRIDAY_NOON)
        assert [r.rcpt_key for r in rows] == ["ann@example.com"]


def test_teams_that_did_not_opt_in_get_nothing(engine: Engine, settings: Settings) -> None:
    tid = new_ticket(engine, settings, "billing", subject="Invoice", to="billing@example.com")
    with session_scope(engine) as s:
        ticket = s.get(Ticket, tid)
        assert ticket is not None and ticket.team == "billing"
        ticket.assignee = "carl@example.com"
        mail = parse(make_mail(subject="Re: Invoice", to="billing@example.com"))
        assert notify.new_ticket(s, settings=settings, ticket=ticket, now=FRIDAY_NOON) == []
        assert (
            notify.customer_reply(
                s, settings=settings, ticket=ticket, message=mail, now=FRIDAY_NOON
            )
            == []
        )
        assert (
            notify.assigned(
                s,
                settings=settings,
                ticket=ticket,
                agent="carl@example.com",
                actor="lea@example.com",
                now=FRIDAY_NOON,
            )
            == []
        )
        assert s.exec(select(Outbox)).all() == []


def test_customer_reply_to_the_assignee_only(engine: Engine, settings: Settings) -> None:
    tid = new_ticket(engine, settings, subject="Printer jams", sender="carla@client.example")
    with session_scope(engine) as s:
        ticket = s.get(Ticket, tid)
        assert ticket is not None
        unassigned = parse(make_mail(sender="carla@client.example", body="Any news?"))
        assert (
            notify.customer_reply(
                s, settings=settings, ticket=ticket, message=unassigned, now=FRIDAY_NOON
            )
            == []
        )
        ticket.assignee = "ann@example.com"
        stored = s.exec(select(Message).where(Message.ticket_id == tid)).one()
        stored.text = "Still jamming.\n\n> quoted history"
        rows = notify.customer_reply(
            s, settings=settings, ticket=ticket, message=stored, now=FRIDAY_NOON
        )
        [(to, mail)] = sent(rows)
        # The assignee writing on their own ticket is not told about it.
        by_ann = parse(make_mail(sender="ann@example.com", body="Note to self"))
        assert (
            notify.customer_reply(
                s, settings=settings, ticket=ticket, message=by_ann, now=FRIDAY_NOON
            )
            == []
        )
    assert to == "ann@example.com"
    assert mail["Subject"] == f"[#{tid}] Customer replied: Printer jams"
    body = mail.get_content()
    assert body.startswith(f"carla@client.example wrote on [#{tid}] Printer jams (status: open):")
    assert "Still jamming." in body and "quoted history" not in body


def test_assigned_never_to_the_actor(engine: Engine, settings: Settings) -> None:
    tid = new_ticket(engine, settings, subject="Printer jams", sender="carla@client.example")
    with session_scope(engine) as s:
        ticket = s.get(Ticket, tid)
        assert ticket is not None

        def assign(agent: str, actor: str) -> list[Outbox]:
            return notify.assigned(
                s, settings=settings, ticket=ticket, agent=agent, actor=actor, now=FRIDAY_NOON
            )

        assert assign("ann@example.com", "ann@example.com") == []  # claimed it herself
        assert assign("ann@example.com", "ANN@example.com") == []
        [(to, mail)] = sent(assign("bob@example.com", "ann@example.com"))
        [(_, by_system)] = sent(assign("bob@example.com", "system"))
        assert assign("carla@client.example", "ann@example.com") == []  # never the customer
    assert to == "bob@example.com"
    assert mail["Subject"] == f"[#{tid}] Assigned to you: Printer jams"
    assert mail.get_content().startswith(f"ann@example.com assigned [#{tid}] Printer jams to you.")
    assert by_system.get_content().startswith(f"inboxd assigned [#{tid}]")


def test_team_list_address_and_business_hours(engine: Engine, settings: Settings) -> None:
    tid = new_ticket(engine, settings, "nights", subject="Server down", to="nights@example.com")
    with session_scope(engine) as s:
        ticket = s.get(Ticket, tid)
        assert ticket is not None and ticket.team == "night"
        weekend = notify.new_ticket(s, settings=settings, ticket=ticket, now=SATURDAY)
        weekday = notify.new_ticket(s, settings=settings, ticket=ticket, now=FRIDAY_NOON)
        [held] = stored(s, weekend)
        [now_row] = stored(s, weekday)
        held_at = (held.not_before, held.next_attempt_at, now_row.not_before)
    [(to, mail)] = sent(weekend)
    assert to == "night-list@example.com"  # the list, not each member
    assert mail["From"] == "inboxd <nights@example.com>"
    # The weekend's waits for the team's hours; the weekday's goes at once.
    assert held_at == (MONDAY_OPEN, MONDAY_OPEN, None)


def test_templates_render_with_sample_values() -> None:
    from inboxd.tickets import templates

    for what in ("new-ticket", "customer-reply", "assigned"):
        body = templates.render(f"notify-{what}.txt", notify.sample_context(what), folder=None)  # type: ignore[arg-type]
        assert "[#1234] Printer on fire" in body and "inboxd ticket show 1234" in body
