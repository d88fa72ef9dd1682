"""Agent actions and the queue, over tickets made by the real intake, on SQLite and PostgreSQL."""

from __future__ import annotations

import email
import email.policy
import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from pathlib import Path

import pytest
from servers import Database
from sqlalchemy import Engine
from sqlmodel import col, select
from support import ROOT, Box, write_config

from inboxd.config import Settings, load_settings
from inboxd.db import session_scope
from inboxd.errors import Forbidden, InboxdError, NotFound
from inboxd.mail.compose import Attachment
from inboxd.mail.parse import attachment_payload
from inboxd.models import Message, Outbox, RawMail, Ticket, TicketEvent, TicketTag
from inboxd.tickets import actions, intake, queue, tokens, views
from inboxd.tickets.templates import TemplateProblem

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
EXTRA = """
[sla.standard]
first_response = "4h"
resolution = "3d"
[sla_defaults]
default = "standard"
[[team]]
name = "solo"
members = ["sam@example.com"]
"""
CANNED = "Hello {{ customer.name or 'there' }},\n\nticket {{ ticket.reference }}: {{ ticket.subject }}.\n\n{{ agent.name }}\n"  # noqa: E501


class Clock:
    def __init__(self, at: datetime) -> None:
        self.at = at

    def __call__(self) -> datetime:
        return self.at

    def advance(self, **delta: float) -> datetime:
        self.at += timedelta(**delta)
        return self.at


@dataclass
class Desk:
    """A configured help desk over one test database, with a pinned clock."""

    settings: Settings
    engine: Engine
    clock: Clock

    def mail(self, data: bytes, mailbox: str = "support") -> int:
        cfg = intake.IntakeConfig.from_settings(
            self.settings, secret=b"unused", rules=None, clock=self.clock
        )
        with session_scope(self.engine) as s:
            got = intake.receive(s, cfg, mailbox=mailbox, data=data)
        assert got.ticket_id is not None, got
        return got.ticket_id

    def who(self, address: str) -> actions.Agent:
        return actions.agent(self.settings, address)

    def ticket(self, ticket_id: int) -> Ticket:
        with session_scope(self.engine) as s:
            t = s.get(Ticket, ticket_id)
            assert t is not None
            return t

    def unassign(self, ticket_id: int) -> None:
        with session_scope(self.engine) as s:
            actions.assign(
                s,
                settings=self.settings,
                who=self.who("lea@example.com"),
                ticket_id=ticket_id,
                assignee=None,
                now=self.clock(),
            )


@pytest.fixture
def desk(tmp_path: Path, database: Database) -> Desk:
    folder = tmp_path / "cfg"
    (folder / "templates" / "canned").mkdir(parents=True)
    (folder / "templates" / "canned" / "thanks.txt").write_text(CANNED)
    (folder / "templates" / "canned" / "broken.txt").write_text("Hi {{ customer.nickname }}\n")
    (folder / "templates" / "canned" / "sneaky.txt").write_text("{{ ticket.__class__.__mro__ }}\n")
    config = write_config(
        folder,
        database=database.url,
        boxes=[
            Box(name="support", address="support@example.com"),
            Box(name="billing", address="billing@example.com", team="billing"),
        ],
        extra=EXTRA,
    )
    config.write_text(
        config.read_text().replace("[inboxd]\n", '[inboxd]\ntemplates = "templates"\n', 1)
    )
    return Desk(load_settings(config), database.engine, Clock(T0))


def mail(
    *,
    subject: str = "Printer broken",
    sender: str = "Carla Customer <carla@client.example>",
    to: str = "support@example.com",
    cc: str | None = None,
    body: str = "Hello, it does not print.",
    message_id: str | None = None,
    in_reply_to: str | None = None,
    references: str | None = None,
    attachment: tuple[str, bytes] | None = None,
) -> bytes:
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = to
    if cc:
        msg["Cc"] = cc
    msg["Subject"] = subject
    msg["Date"] = format_datetime(T0)
    msg["Message-ID"] = message_id or make_msgid(domain="client.example")
    if in_reply_to:
        msg["In-Reply-To"] = in_reply_to
        msg["References"] = references or in_reply_to
    msg.set_content(body)
    if attachment:
        msg.add_attachment(
            attachment[1], maintype="application", subtype="octet-stream", filename=attachment[0]
        )
    return msg.as_bytes()


def outbox_rows(engine: Engine, kind: str = "reply") -> list[Outbox]:
    with session_scope(engine) as s:
        return list(
            s.exec(select(Outbox).where(Outbox.kind == kind).order_by(col(Outbox.id))).all()
        )


def kinds(engine: Engine, ticket_id: int) -> list[tuple[str, str]]:
    with session_scope(engine) as s:
        rows = s.exec(
            select(TicketEvent)
            .where(TicketEvent.ticket_id == ticket_id)
            .order_by(col(TicketEvent.id))
        ).all()
        return [(e.actor, e.kind) for e in rows]


# ---------------------------------------------------------------------------- identity


def test_agents_are_members_or_leads_of_a_team(desk: Desk) -> None:
    lea = desk.who("LEA@example.com ")
    assert lea.address == "lea@example.com"
    assert lea.teams == {"frontline", "billing"} and lea.leads == {"frontline", "billing"}
    ann = desk.who("ann@example.com")
    assert ann.teams == {"frontline"} and not ann.leads
    with pytest.raises(NotFound, match=r"unknown agent zed@example.com \(agents: ann@"):
        desk.who("zed@example.com")


# ---------------------------------------------------------------------------- reply


def test_reply_threads_addresses_and_stops_the_first_response_clock(desk: Desk) -> None:
    first = mail(
        subject="Printer broken",
        cc="Boss <boss@client.example>, ann@example.com, support@example.com",
        message_id="m1@client.example",
    )
    ticket_id = desk.mail(first)
    # The customer writes again, quoting the ack: the reply must answer this one.
    second = mail(
        subject=f"Re: [#{ticket_id}] Printer broken",
        message_id="m2@client.example",
        in_reply_to="m1@client.example",
        references="<m0@client.example> <m1@client.example>",
    )
    assert desk.mail(second) == ticket_id
    assert desk.ticket(ticket_id).assignee == "ann@example.com"  # round-robin
    now = desk.clock.advance(minutes=30)

    with session_scope(desk.engine) as s:
        done = actions.reply(
            s,
            settings=desk.settings,
            who=desk.who("ann@example.com"),
            ticket_id=ticket_id,
            text="We are on it.\n",
            now=now,
            attachments=[Attachment("log.txt", "text/plain", b"line 1\n")],
        )
        secret = tokens.reply_secret(s, desk.settings.inboxd.secret())

    [row] = outbox_rows(desk.engine)
    sent = email.message_from_bytes(row.data, policy=email.policy.default)
    assert sent["From"] == "Support <support@example.com>"
    assert sent["To"] == "carla@client.example"
    assert sent["Cc"] == "boss@client.example"  # never an agent or our own address
    assert sent["Subject"] == f"[#{ticket_id}] Printer broken"
    assert sent["In-Reply-To"] == "<m2@client.example>"
    assert sent["References"].split() == [
        "<m0@client.example>",
        "<m1@client.example>",
        "<m2@client.example>",
    ]
    local = sent["Reply-To"].addresses[0].username
    assert tokens.verify_token(secret, local.partition("+")[2]) == ticket_id
    assert row.recipients == ["carla@client.example", "boss@client.example"]
    assert row.smtp == "default" and row.mailbox == "support"
    assert done.message_id == row.message_id and done.outbox_id == row.id

    ticket = desk.ticket(ticket_id)
    assert ticket.first_response_at == now
    with session_scope(desk.engine) as s:
        detail = views.ticket_detail(s, ticket_id, now=now)
    out = [m for m in detail["messages"] if m["direction"] == "out" and m["author"]]
    assert [m["text"].strip() for m in out] == ["We are on it."]
    [attached] = out[0]["attachments"]
    assert attached["filename"] == "log.txt" and attached["number"] == 1
    with session_scope(desk.engine) as s:
        raw = s.get(RawMail, out[0]["id"])
        assert raw is not None and raw.data is not None
        assert attachment_payload(bytes(raw.data), attached["index"])[1] == b"line 1\n"
    assert ("ann@example.com", "replied") in kinds(desk.engine, ticket_id)


def contact_form_mail() -> bytes:
    """What a WordPress/Typeform-style contact form sends: a no-reply sender, the visitor
    in Reply-To."""
    msg = EmailMessage()
    msg["From"] = "My Shop <noreply@myshop.example>"
    msg["To"] = "support@example.com"
    msg["Reply-To"] = "Jane Doe <jane@customer.example>"
    msg["Subject"] = "New contact form submission"
    msg["Date"] = format_datetime(T0)
    msg["Message-ID"] = "form-1@myshop.example"
    msg.set_content("Name: Jane Doe\nMessage: my order 1234 has not arrived.\n")
    return msg.as_bytes()


def test_contact_form_ticket_is_for_the_visitor_in_reply_to(desk: Desk) -> None:
    """The form's no-reply sender opens a ticket (it is not an auto-reply); the ack and the
    agent's reply go to the visitor, never to the robot; the visitor's answer joins."""
    ticket_id = desk.mail(contact_form_mail())
    ticket = desk.ticket(ticket_id)
    assert (ticket.customer_addr, ticket.customer_name) == ("jane@customer.example", "Jane Doe")
    [ack] = outbox_rows(desk.engine, "ack")
    assert ack.recipients == ["jane@customer.example"]
    with session_scope(desk.engine) as s:
        actions.reply(
            s,
            settings=desk.settings,
            who=desk.who("ann@example.com"),
            ticket_id=ticket_id,
            text="It ships today.",
            now=desk.clock.advance(minutes=10),
        )
    [row] = outbox_rows(desk.engine)
    sent = email.message_from_bytes(row.data, policy=email.policy.default)
    assert sent["To"] == "jane@customer.example"
    assert sent["Cc"] is None  # not the form's noreply@ sender
    assert row.recipients == ["jane@customer.example"]
    # Jane answers the acknowledgement from her own mailbox: the same ticket.
    answer = mail(
        sender="Jane Doe <jane@customer.example>",
        subject=f"Re: [#{ticket_id}] New contact form submission",
        in_reply_to=f"<{ack.message_id}>",
    )
    assert desk.mail(answer) == ticket_id


def test_a_reply_never_copies_a_no_reply_participant(desk: Desk) -> None:
    """A robot on the thread (a no-reply notifier in Cc) gets no copy of the agent's reply."""
    ticket_id = desk.mail(mail(cc="Tracker <noreply@tracker.example>, Boss <boss@client.example>"))
    with session_scope(desk.engine) as s:
        done = actions.reply(
            s,
            settings=desk.settings,
            who=desk.who("ann@example.com"),
            ticket_id=ticket_id,
            text="On it.",
            now=desk.clock.advance(minutes=1),
        )
    assert done.cc == ("boss@client.example",)


@pytest.mark.parametrize(
    ("subject", "expected"),
    [
        ("Printer broken", "[#7] Printer broken"),
        ("Re: [#7] Printer broken", "[#7] Printer broken"),
        ("RE: Aw: Fwd: Printer broken", "[#7] Printer broken"),
        ("[#7] Re: [#7] Printer broken", "[#7] Printer broken"),
        ("", "[#7]"),
        ("Line\r\nBcc: x@evil.example", "[#7] Line Bcc: x@evil.example"),
    ],
)
def test_reply_subject_has_the_tag_once_and_no_stacked_re(
    desk: Desk, subject: str, expected: str
) -> None:
    assert actions.reply_subject(desk.settings, Ticket(id=7, subject=subject)) == expected


def test_reply_claims_an_unassigned_ticket_and_can_set_pending(desk: Desk) -> None:
    ticket_id = desk.mail(mail())
    desk.unassign(ticket_id)
    with session_scope(desk.engine) as s:
        done = actions.reply(
            s,
            settings=desk.settings,
            who=desk.who("bob@example.com"),
            ticket_id=ticket_id,
            text="Could you send a photo?",
            now=desk.clock.advance(minutes=5),
            cc=False,
            status="pending",
        )
    assert done.assigned and done.status == "pending" and done.cc == ()
    ticket = desk.ticket(ticket_id)
    assert (ticket.assignee, ticket.status) == ("bob@example.com", "pending")
    assert ticket.paused_at is not None  # the SLA clocks wait on the customer


def test_reply_and_notes_are_refused_where_they_must_be(desk: Desk) -> None:
    ticket_id = desk.mail(mail())  # ann's
    bob, ann, lea = (
        desk.who("bob@example.com"),
        desk.who("ann@example.com"),
        desk.who("lea@example.com"),
    )
    sam = desk.who("sam@example.com")
    with session_scope(desk.engine) as s, pytest.raises(Forbidden, match="assigned to ann@"):
        actions.reply(s, settings=desk.settings, who=bob, ticket_id=ticket_id, text="x", now=T0)
    with session_scope(desk.engine) as s, pytest.raises(Forbidden, match="team frontline"):
        actions.note(s, who=sam, ticket_id=ticket_id, text="x", now=T0)
    with session_scope(desk.engine) as s, pytest.raises(InboxdError, match="empty reply"):
        actions.reply(s, settings=desk.settings, who=ann, ticket_id=ticket_id, text=" \n", now=T0)
    with session_scope(desk.engine) as s, pytest.raises(NotFound, match="no ticket 999"):
        actions.reply(s, settings=desk.settings, who=ann, ticket_id=999, text="x", now=T0)
    # A colleague of the team may leave a note on ann's ticket; the lead may answer.
    with session_scope(desk.engine) as s:
        actions.note(s, who=bob, ticket_id=ticket_id, text="I know this printer", now=T0)
        actions.reply(s, settings=desk.settings, who=lea, ticket_id=ticket_id, text="x", now=T0)
    with session_scope(desk.engine) as s:
        actions.set_status(
            s, settings=desk.settings, who=ann, ticket_id=ticket_id, status="closed", now=T0
        )
    with session_scope(desk.engine) as s, pytest.raises(Forbidden, match="closed is final"):
        actions.reply(s, settings=desk.settings, who=ann, ticket_id=ticket_id, text="x", now=T0)
    with session_scope(desk.engine) as s:  # a note on a closed ticket is still fine
        actions.note(s, who=ann, ticket_id=ticket_id, text="customer called", now=T0)
    assert len(outbox_rows(desk.engine)) == 1


def test_a_note_is_a_message_that_is_never_mailed(desk: Desk) -> None:
    ticket_id = desk.mail(mail())
    before = len(outbox_rows(desk.engine, "ack"))
    with session_scope(desk.engine) as s:
        noted = actions.note(
            s, who=desk.who("ann@example.com"), ticket_id=ticket_id, text="toner?\n", now=T0
        )
    with session_scope(desk.engine) as s:
        msg = s.get(Message, noted.message_pk)
        assert msg is not None
        assert (msg.direction, msg.author, msg.text, msg.ticket_id) == (
            "note",
            "ann@example.com",
            "toner?\n",
            ticket_id,
        )
        assert s.exec(select(Outbox).where(Outbox.kind != "ack")).all() == []
    assert len(outbox_rows(desk.engine, "ack")) == before
    assert ("ann@example.com", "note") in kinds(desk.engine, ticket_id)


# ---------------------------------------------------------------------------- roles


def test_assignment_follows_roles(desk: Desk) -> None:
    ticket_id = desk.mail(mail())
    desk.unassign(ticket_id)
    ann, bob, lea = (desk.who(a) for a in ("ann@example.com", "bob@example.com", "lea@example.com"))
    settings = desk.settings

    def assign(who: actions.Agent, to: str | None) -> actions.Changed:
        with session_scope(desk.engine) as s:
            return actions.assign(
                s, settings=settings, who=who, ticket_id=ticket_id, assignee=to, now=T0
            )

    def claim(who: actions.Agent) -> actions.Changed:
        with session_scope(desk.engine) as s:
            return actions.claim(s, who=who, ticket_id=ticket_id, now=T0)

    with pytest.raises(Forbidden, match="only a lead of team frontline"):
        assign(ann, "bob@example.com")
    assert claim(ann).new == "ann@example.com"
    assert not claim(ann).changed
    with pytest.raises(Forbidden, match=r"assigned to ann@example\.com"):
        claim(bob)
    assert assign(ann, None).new is None  # ann releases it to the queue
    assert assign(lea, "bob@example.com").new == "bob@example.com"
    with pytest.raises(Forbidden, match="not in team frontline"):
        assign(lea, "carl@example.com")
    with pytest.raises(NotFound, match="unknown agent"):
        assign(lea, "nobody@client.example")
    assert desk.ticket(ticket_id).assignee == "bob@example.com"
    actors = [a for a, k in kinds(desk.engine, ticket_id) if k == "assigned"]
    assert actors[-3:] == ["ann@example.com", "ann@example.com", "lea@example.com"]


def test_transfer_moves_to_the_new_team_queue(desk: Desk) -> None:
    ticket_id = desk.mail(mail())  # frontline, ann's
    with session_scope(desk.engine) as s, pytest.raises(NotFound, match="no team nope"):
        actions.transfer(
            s, settings=desk.settings, who=desk.who("ann@example.com"), ticket_id=ticket_id,
            team="nope", now=T0,
        )  # fmt: skip
    with session_scope(desk.engine) as s:
        done = actions.transfer(
            s, settings=desk.settings, who=desk.who("ann@example.com"), ticket_id=ticket_id,
            team="billing", now=T0,
        )  # fmt: skip
    assert (done.old, done.new) == ("frontline", "billing")
    ticket = desk.ticket(ticket_id)
    # billing assigns the least loaded member; ann cannot touch it any more
    assert ticket.team == "billing" and ticket.assignee == "carl@example.com"
    with session_scope(desk.engine) as s, pytest.raises(Forbidden, match="team billing"):
        actions.set_priority(
            s, who=desk.who("ann@example.com"), ticket_id=ticket_id, priority="high", now=T0
        )


def test_status_transitions_follow_help_desk_rules(desk: Desk) -> None:
    ticket_id = desk.mail(mail())
    ann, lea = desk.who("ann@example.com"), desk.who("lea@example.com")

    def status(who: actions.Agent, new: str) -> actions.Changed:
        with session_scope(desk.engine) as s:
            return actions.set_status(
                s, settings=desk.settings, who=who, ticket_id=ticket_id, status=new,
                now=desk.clock.advance(minutes=10),
            )  # fmt: skip

    assert status(ann, "pending").new == "pending"
    assert desk.ticket(ticket_id).paused_at is not None
    assert status(ann, "open").new == "open"
    assert desk.ticket(ticket_id).paused_at is None
    resolved = status(ann, "resolved")
    assert resolved.changed and desk.ticket(ticket_id).resolved_at is not None
    with pytest.raises(Forbidden, match="from resolved to pending"):
        status(ann, "pending")
    with pytest.raises(InboxdError, match="unknown status 'done'"):
        status(ann, "done")
    status(ann, "closed")
    closed = desk.ticket(ticket_id)
    assert closed.closed_at is not None
    with pytest.raises(Forbidden, match="only a lead of team frontline"):
        status(ann, "open")
    with pytest.raises(Forbidden, match="closed is final"):
        status(lea, "resolved")
    assert not status(lea, "closed").changed
    status(lea, "open")
    reopened = desk.ticket(ticket_id)
    assert (reopened.status, reopened.reopened, reopened.closed_at, reopened.resolved_at) == (
        "open",
        1,
        None,
        None,
    )
    statuses = [k for _, k in kinds(desk.engine, ticket_id) if k == "status"]
    assert len(statuses) == 5  # pending, open, resolved, closed, open


def test_priority_and_tags(desk: Desk) -> None:
    ticket_id = desk.mail(mail())
    ann = desk.who("ann@example.com")
    add, remove = actions.parse_tag_changes(["+VIP", "printer", "-spam"])
    assert (add, remove) == (["vip", "printer"], ["spam"])
    with pytest.raises(InboxdError, match="not a tag"):
        actions.parse_tag_changes(["+bad tag"])
    with session_scope(desk.engine) as s:
        done = actions.tag(s, who=ann, ticket_id=ticket_id, add=add, remove=remove, now=T0)
        assert done.new == ["printer", "vip"]
        again = actions.tag(s, who=ann, ticket_id=ticket_id, add=["vip"], now=T0)
        assert not again.changed
        actions.tag(s, who=ann, ticket_id=ticket_id, remove=["vip"], now=T0)
        actions.set_priority(s, who=ann, ticket_id=ticket_id, priority="URGENT", now=T0)
        with pytest.raises(InboxdError, match="unknown priority"):
            actions.set_priority(s, who=ann, ticket_id=ticket_id, priority="asap", now=T0)
    with session_scope(desk.engine) as s:
        tags = s.exec(select(TicketTag.tag).where(TicketTag.ticket_id == ticket_id)).all()
    assert list(tags) == ["printer"]
    assert desk.ticket(ticket_id).priority == "urgent"
    assert [k for _, k in kinds(desk.engine, ticket_id)][-3:] == ["tags", "tags", "priority"]


def test_only_a_lead_merges_and_merged_is_final(desk: Desk) -> None:
    a = desk.mail(mail(subject="Printer broken", message_id="a@client.example"))
    b = desk.mail(mail(subject="Printer still broken", message_id="b@client.example"))
    ann, lea = desk.who("ann@example.com"), desk.who("lea@example.com")
    with session_scope(desk.engine) as s, pytest.raises(Forbidden, match="only a lead"):
        actions.merge(s, settings=desk.settings, who=ann, source_id=b, into_id=a, now=T0)
    with session_scope(desk.engine) as s, pytest.raises(InboxdError, match="into itself"):
        actions.merge(s, settings=desk.settings, who=lea, source_id=a, into_id=a, now=T0)
    with session_scope(desk.engine) as s:
        done = actions.merge(s, settings=desk.settings, who=lea, source_id=b, into_id=a, now=T0)
    assert (done.source, done.into) == (b, a)
    source = desk.ticket(b)
    assert (source.status, source.merged_into) == ("merged", a)
    with session_scope(desk.engine) as s:
        subjects = s.exec(
            select(Message.subject).where(Message.ticket_id == a, Message.direction == "in")
        ).all()
    assert sorted(subjects) == ["Printer broken", "Printer still broken"]
    with session_scope(desk.engine) as s, pytest.raises(Forbidden, match=f"merged into ticket {a}"):
        actions.reply(s, settings=desk.settings, who=lea, ticket_id=b, text="x", now=T0)
    with session_scope(desk.engine) as s, pytest.raises(Forbidden, match="merged is final"):
        actions.set_status(s, settings=desk.settings, who=lea, ticket_id=b, status="open", now=T0)
    # Mail answering the merged ticket's first message lands in the surviving ticket.
    assert desk.mail(mail(in_reply_to="b@client.example", subject="Re: x")) == a


def test_canned_responses_are_sandboxed_and_strict(desk: Desk) -> None:
    ticket_id = desk.mail(mail())
    ann = desk.who("ann@example.com")
    with session_scope(desk.engine) as s:
        body = actions.canned(desk.settings, "thanks", session=s, ticket_id=ticket_id, who=ann)
        assert body == (f"Hello Carla Customer,\n\nticket [#{ticket_id}]: Printer broken.\n\nAnn\n")
        with pytest.raises(TemplateProblem, match="nickname"):
            actions.canned(desk.settings, "broken", session=s, ticket_id=ticket_id, who=ann)
        with pytest.raises(TemplateProblem):
            actions.canned(desk.settings, "sneaky", session=s, ticket_id=ticket_id, who=ann)
        with pytest.raises(NotFound, match="known: broken, sneaky, thanks"):
            actions.canned(desk.settings, "missing", session=s, ticket_id=ticket_id, who=ann)
        with pytest.raises(InboxdError, match="not a template name"):
            actions.canned(desk.settings, "../ack", session=s, ticket_id=ticket_id, who=ann)


# ---------------------------------------------------------------------------- the queue


def _set(engine: Engine, ticket_id: int, **values: object) -> None:
    with session_scope(engine) as s:
        t = s.get(Ticket, ticket_id)
        assert t is not None
        for k, v in values.items():
            setattr(t, k, v)


def test_queue_is_ordered_by_the_nearest_due_and_filters(desk: Desk) -> None:
    ids = [desk.mail(mail(subject=f"t{i}")) for i in range(7)]
    t0, t1, t2, t3, t4, t5, t6 = ids
    now = T0 + timedelta(hours=2)
    h = timedelta(hours=1)
    # Clocks set by hand: t1 overdue, t0 due soon, t2 answered (resolution counts), t3 no SLA,
    # t4 resolved (out of the queue), t5 pending (paused but listed), t6 billing.
    _set(desk.engine, t0, first_response_due=now + h, resolution_due=now + 50 * h)
    _set(desk.engine, t1, first_response_due=now - h, priority="urgent")
    _set(desk.engine, t2, first_response_at=T0, first_response_due=now - 5 * h,
         next_response_due=now + 30 * h, resolution_due=now + 20 * h)  # fmt: skip
    _set(
        desk.engine,
        t3,
        first_response_due=None,
        resolution_due=None,
        sla_policy=None,
        assignee=None,
    )
    _set(desk.engine, t4, status="resolved")
    _set(desk.engine, t5, status="pending", first_response_due=now + 3 * h)
    _set(desk.engine, t6, team="billing", first_response_due=now + 2 * h)
    with session_scope(desk.engine) as s:
        s.add(TicketTag(ticket_id=t0, tag="vip"))

    def page(limit: int = 50, **kw: object) -> list[int]:
        with session_scope(desk.engine) as s:
            return [t.id or 0 for t in queue.page(s, queue.QueueFilter(**kw), now=now, limit=limit)]  # type: ignore[arg-type]

    assert page() == [t1, t0, t6, t5, t2, t3]
    assert page(limit=2) == [t1, t0]
    assert page(teams=("frontline",)) == [t1, t0, t5, t2, t3]
    assert page(statuses=("open",), teams=("frontline",)) == [t1, t0, t2, t3]
    assert page(breaching=True) == [t1]
    assert page(tags=("vip",)) == [t0]
    assert page(priorities=("urgent",)) == [t1]
    assert page(unassigned=True) == [t3]
    assignee = desk.ticket(t0).assignee
    assert assignee is not None and t0 in page(assignee=assignee)
    assert page(mailbox="billing") == []
    assert page(statuses=("resolved",)) == [t4]
    with session_scope(desk.engine) as s:
        everyone = queue.every(s, now=now)
        assert [t.id for t in everyone] == ids
        assert queue.count(s, queue.QueueFilter(teams=("frontline",)), now=now) == 5
        docs = views.ticket_docs(s, everyone, now=now)
    due = {d["id"]: d["sla_due"] for d in docs}
    assert due[t1] == (now - h).isoformat() and due[t2] == (now + 20 * h).isoformat()
    assert due[t3] is None and due[t4] is None


def test_queue_sql_matches_the_index_migration() -> None:
    text_ = (ROOT / "migrations" / "versions" / "0003_queue_index.py").read_text()
    namespace: dict[str, object] = {}
    exec(compile(text_, "0003", "exec"), namespace)
    assert namespace["_DUE"] == queue.QUEUE_DUE_SQL
    assert namespace["_LIVE"] == queue.LIVE_SQL


def test_default_queue_reads_the_index(sqlite_database: Database) -> None:
    """Both page queries are answered by an index in the order they need: no sort, no scan.

    One agent's open tickets may come from ix_ticket_assignee_status (only theirs)."""
    from sqlalchemy.dialects import sqlite

    path = sqlite_database.url.removeprefix("sqlite:///")
    plans = []
    for flt in (
        queue.QueueFilter(teams=("frontline", "billing")),
        queue.QueueFilter(statuses=("open",), assignee="ann@example.com", tags=("vip",)),
        queue.QueueFilter(breaching=True),
    ):
        pairs = queue.page_queries(flt, now=T0, limit=50)
        for query in (q for pair in pairs for q in pair if q is not None):
            sql = str(
                query.compile(dialect=sqlite.dialect(), compile_kwargs={"literal_binds": True})
            )
            with sqlite3.connect(path) as conn:
                rows = conn.execute(f"EXPLAIN QUERY PLAN {sql}").fetchall()
            conn.close()
            plans.append(" | ".join(r[3] for r in rows))
    for plan in plans:
        assert "INDEX ix_ticket_live_due" in plan or "INDEX ix_ticket_assignee_status" in plan, plan
        assert "SCAN" not in plan and "TEMP B-TREE" not in plan, plan
