"""SLA clocks, the sweep and escalations, driven through the real intake with a pinned clock."""

from __future__ import annotations

import email
import email.policy
import threading
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from servers import Database
from sqlalchemy import Engine, text
from sqlmodel import Session, col, select
from support import Box, write_config

from inboxd.config import Settings, load_settings
from inboxd.db import make_engine, session_scope
from inboxd.leases import lock_key
from inboxd.models import Outbox, Ticket, TicketEvent
from inboxd.tickets import intake, sla, views
from inboxd.wiring import load_checked_rules

SECRET = b"sla-test-secret"
OSLO = ZoneInfo("Europe/Oslo")
SLA_CONFIG = """
[calendar.office]
timezone = "Europe/Oslo"
holidays = [2026-04-02, 2026-04-03, 2026-04-06]  # Maundy Thursday, Good Friday, Easter Monday
[calendar.office.hours]
mon = "09:00-17:00"
tue = "09:00-17:00"
wed = "09:00-17:00"
thu = "09:00-17:00"
fri = "09:00-17:00"

[sla.office]
calendar = "office"
first_response = "4h"
next_response = "2h"
resolution = "16h"
warn_at = 0.5
on_warning = ["notify-team"]
on_breach = ["notify-lead"]

[sla.fast]
first_response = "1h"
resolution = "1d"
warn_at = 0.5
on_warning = ["notify-team"]
on_breach = ["notify-lead", "raise-priority", "reassign:billing"]
notify_in_business_hours = false

[sla.quiet]
first_response = "1h"
resolution = "1d"
"""


def oslo(*args: int) -> datetime:
    """A wall-clock time in Oslo as an aware UTC instant."""
    return datetime(*args, tzinfo=OSLO).astimezone(UTC)  # type: ignore[misc]


class Clock:
    """A clock the test moves by hand; intake reads it through `IntakeConfig.clock`."""

    def __init__(self, at: datetime) -> None:
        self.at = at

    def __call__(self) -> datetime:
        return self.at


def make_settings(
    tmp_path: Path, *, extra: str = "", rules: str = "", edit: Callable[[str], str] | None = None
) -> Settings:
    path = write_config(
        tmp_path / "cfg",
        database=f"sqlite:///{tmp_path / 'unused.db'}",
        boxes=[Box("support", "support@example.com")],
        rules=rules,
        extra=SLA_CONFIG + extra,
    )
    if edit is not None:
        path.write_text(edit(path.read_text()))
    return load_settings(path)


def cfg(settings: Settings, clock: Clock, *, rules: bool = False) -> intake.IntakeConfig:
    return intake.IntakeConfig.from_settings(
        settings,
        secret=SECRET,
        rules=load_checked_rules(settings) if rules else None,
        clock=clock,
    )


def mail(
    *,
    subject: str = "Printer broken",
    sender: str = "carla@client.example",
    date: datetime | None = None,
    in_reply_to: str | None = None,
    message_id: str | None = None,
) -> bytes:
    msg = EmailMessage()
    msg["From"] = f"Carla Customer <{sender}>"
    msg["To"] = "support@example.com"
    msg["Subject"] = subject
    msg["Date"] = format_datetime(date or datetime(2026, 1, 1, tzinfo=UTC))
    msg["Message-ID"] = message_id or make_msgid(domain="client.example")
    if in_reply_to:
        msg["In-Reply-To"] = in_reply_to
        msg["References"] = in_reply_to
    msg.set_content("Hello, it does not print.")
    return msg.as_bytes()


def receive(engine: Engine, config: intake.IntakeConfig, data: bytes) -> intake.Received:
    with session_scope(engine) as s:
        return intake.receive(s, config, mailbox="support", data=data)


def ticket(engine: Engine, ticket_id: int) -> Ticket:
    with Session(engine, expire_on_commit=False) as s:
        found = s.get(Ticket, ticket_id)
        assert found is not None
        return found


def set_status(engine: Engine, settings: Settings, ticket_id: int, new: str, at: datetime) -> None:
    """What an agent's status change does: set it, and move the clocks along."""
    with session_scope(engine) as s:
        t = s.get(Ticket, ticket_id)
        assert t is not None
        old, t.status = t.status, new
        sla.on_status_change(s, ticket=t, settings=settings, old=old, new=new, now=at)


def agent_reply(engine: Engine, settings: Settings, ticket_id: int, at: datetime) -> None:
    with session_scope(engine) as s:
        t = s.get(Ticket, ticket_id)
        assert t is not None
        sla.on_agent_reply(s, ticket=t, settings=settings, now=at)


def events_of(engine: Engine, ticket_id: int, *kinds: str) -> list[TicketEvent]:
    with Session(engine) as s:
        return list(
            s.exec(
                select(TicketEvent)
                .where(TicketEvent.ticket_id == ticket_id, col(TicketEvent.kind).in_(kinds))
                .order_by(col(TicketEvent.id))
            ).all()
        )


def escalation_mails(engine: Engine) -> list[tuple[Outbox, EmailMessage]]:
    with Session(engine) as s:
        rows = s.exec(
            select(Outbox).where(Outbox.kind == "escalation").order_by(col(Outbox.id))
        ).all()
    return [
        (r, email.message_from_bytes(r.data, policy=email.policy.default))  # type: ignore[misc]
        for r in rows
    ]


# -- which policy -----------------------------------------------------------------------


def test_policy_selection_order(tmp_path: Path) -> None:
    def edit(config: str) -> str:
        config = config.replace('smtp = "default"\n', 'smtp = "default"\nsla = "quiet"\n', 1)
        return config.replace('name = "billing"\n', 'name = "billing"\nsla = "fast"\n', 1)

    defaults = '[sla_defaults]\ndefault = "office"\nby_priority = { urgent = "fast" }\n'
    settings = make_settings(tmp_path, extra=defaults, edit=edit)

    def choose(**fields: Any) -> tuple[str | None, str | None]:
        return sla.select_policy(settings, Ticket(**{"priority": "normal", **fields}))

    assert choose(sla_policy="office", mailbox="support", team="billing") == ("office", "rule")
    assert choose(mailbox="support", team="billing") == ("quiet", "mailbox")
    assert choose(mailbox="other", team="billing") == ("fast", "team")
    assert choose(mailbox="other", team="frontline", priority="urgent") == ("fast", "priority")
    assert choose(mailbox="other", team="frontline") == ("office", "default")
    bare = make_settings(tmp_path / "bare")
    assert sla.select_policy(bare, Ticket(priority="urgent", team="frontline")) == (None, None)


def test_routing_rule_policy_is_recorded_with_its_due_times(
    tmp_path: Path, sqlite_engine: Engine
) -> None:
    rules = '[[rule]]\nname = "outage"\nwhen.subject = "(?i)outage"\nthen.sla = "fast"\n'
    settings = make_settings(tmp_path, rules=rules, extra='[sla_defaults]\ndefault = "office"\n')
    at = datetime(2026, 4, 14, 10, tzinfo=UTC)
    r = receive(sqlite_engine, cfg(settings, Clock(at), rules=True), mail(subject="Outage!"))
    t = ticket(sqlite_engine, r.ticket_id or 0)
    assert t.sla_policy == "fast"
    assert t.first_response_due == at + timedelta(hours=1)
    assert t.resolution_due == at + timedelta(days=1)
    assert t.sla_check_at == at + timedelta(minutes=30)  # the first warning
    [event] = events_of(sqlite_engine, t.id or 0, "sla")
    assert event.data["policy"] == "fast" and event.data["source"] == "rule"


def test_no_policy_means_no_clock(tmp_path: Path, sqlite_engine: Engine) -> None:
    settings = make_settings(tmp_path)
    r = receive(sqlite_engine, cfg(settings, Clock(datetime(2026, 4, 14, tzinfo=UTC))), mail())
    t = ticket(sqlite_engine, r.ticket_id or 0)
    assert (t.sla_policy, t.first_response_due, t.resolution_due, t.sla_check_at) == (None,) * 4
    assert views.sla_state(t, datetime(2026, 5, 1, tzinfo=UTC)) is None


# -- clocks -------------------------------------------------------------------------------


def test_office_hours_due_across_easter_weekend(tmp_path: Path, sqlite_engine: Engine) -> None:
    """Wednesday 15:00 in Oslo, then Maundy Thursday, Good Friday, a weekend, Easter Monday."""
    settings = make_settings(tmp_path, extra='[sla_defaults]\ndefault = "office"\n')
    stored = oslo(2026, 4, 1, 15, 0)
    # The Date header says Monday: the clock starts when inboxd stored the mail.
    r = receive(
        sqlite_engine, cfg(settings, Clock(stored)), mail(date=datetime(2026, 3, 30, tzinfo=UTC))
    )
    t = ticket(sqlite_engine, r.ticket_id or 0)
    assert t.created_at == stored
    # 2 h on Wednesday, then nothing until Tuesday 09:00, then 2 h more.
    assert t.first_response_due == oslo(2026, 4, 7, 11, 0)
    assert t.first_response_due == datetime(2026, 4, 7, 9, 0, tzinfo=UTC)
    assert t.first_response_warn_at == oslo(2026, 4, 1, 17, 0)  # half of 4 h: Wednesday's close
    # 16 h: 2 on Wednesday, 8 on Tuesday, 6 on Wednesday the 8th.
    assert t.resolution_due == oslo(2026, 4, 8, 15, 0)
    assert views.sla_state(t, oslo(2026, 4, 1, 16, 0)) == "ok"
    assert views.sla_state(t, oslo(2026, 4, 6, 12, 0)) == "warning"
    assert views.sla_state(t, oslo(2026, 4, 7, 11, 0)) == "breached"
    assert views.active_due(t) == t.first_response_due


def test_pending_pauses_and_resume_excludes_paused_business_time(
    tmp_path: Path, engine: Engine
) -> None:
    settings = make_settings(tmp_path, extra='[sla_defaults]\ndefault = "office"\n')
    clock = Clock(oslo(2026, 4, 13, 9, 0))  # a Monday
    r = receive(engine, cfg(settings, clock), mail(message_id="<q1@client.example>"))
    tid = r.ticket_id or 0
    t = ticket(engine, tid)
    assert t.first_response_due == oslo(2026, 4, 13, 13, 0)
    assert t.resolution_due == oslo(2026, 4, 14, 17, 0)

    set_status(engine, settings, tid, "pending", oslo(2026, 4, 13, 10, 0))
    t = ticket(engine, tid)
    assert t.paused_at == oslo(2026, 4, 13, 10, 0)
    assert views.sla_state(t, oslo(2026, 4, 13, 14, 0)) == "paused"
    # Past the original deadline, nothing fires while the ticket waits on the customer.
    result = sla.run_sweep(engine, settings, oslo(2026, 4, 13, 14, 0))
    assert (result.warnings, result.breaches) == (0, 0)

    # The customer answers on Tuesday 10:00: 7 h on Monday + 1 h on Tuesday were paused.
    clock.at = oslo(2026, 4, 14, 10, 0)
    reply = mail(subject="Re: Printer broken", in_reply_to="<q1@client.example>")
    assert receive(engine, cfg(settings, clock), reply).ticket_id == tid
    t = ticket(engine, tid)
    assert (t.status, t.paused_at) == ("open", None)
    assert t.first_response_due == oslo(2026, 4, 14, 13, 0)  # 3 h were left at the pause
    assert t.first_response_warn_at == oslo(2026, 4, 14, 11, 0)  # 1 h was left to the warning
    assert t.resolution_due == oslo(2026, 4, 15, 17, 0)  # 15 h were left
    assert sla.run_sweep(engine, settings, oslo(2026, 4, 14, 10, 59)).warnings == 0
    assert sla.run_sweep(engine, settings, oslo(2026, 4, 14, 11, 0)).warnings == 1
    assert views.sla_state(ticket(engine, tid), oslo(2026, 4, 14, 11, 0)) == "warning"


def test_agent_reply_meets_first_response_then_next_response_cycles(
    tmp_path: Path, sqlite_engine: Engine
) -> None:
    settings = make_settings(tmp_path, extra='[sla_defaults]\ndefault = "office"\n')
    clock = Clock(oslo(2026, 4, 13, 9, 0))
    r = receive(sqlite_engine, cfg(settings, clock), mail(message_id="<n1@client.example>"))
    tid = r.ticket_id or 0
    agent_reply(sqlite_engine, settings, tid, oslo(2026, 4, 13, 10, 0))
    t = ticket(sqlite_engine, tid)
    assert t.first_response_at == oslo(2026, 4, 13, 10, 0)
    assert t.next_response_due is None
    assert t.sla_check_at == oslo(2026, 4, 13, 17, 0)  # the resolution warning: 8 of 16 h
    assert views.sla_state(t, oslo(2026, 4, 13, 14, 0)) == "ok"  # 13:00 passed: met in time

    clock.at = oslo(2026, 4, 13, 16, 30)
    receive(sqlite_engine, cfg(settings, clock), mail(in_reply_to="<n1@client.example>"))
    t = ticket(sqlite_engine, tid)
    assert t.next_response_cycle == 1
    assert t.next_response_due == oslo(2026, 4, 14, 10, 30)  # 30 min today, 90 tomorrow
    clock.at = oslo(2026, 4, 14, 9, 0)  # a second follow-up: the owed reply keeps its clock
    receive(sqlite_engine, cfg(settings, clock), mail(in_reply_to="<n1@client.example>"))
    assert ticket(sqlite_engine, tid).next_response_due == oslo(2026, 4, 14, 10, 30)

    sla.run_sweep(sqlite_engine, settings, oslo(2026, 4, 14, 10, 30))
    assert views.sla_state(ticket(sqlite_engine, tid), oslo(2026, 4, 14, 10, 30)) == "breached"
    agent_reply(sqlite_engine, settings, tid, oslo(2026, 4, 14, 11, 0))
    t = ticket(sqlite_engine, tid)
    assert (t.next_response_due, t.first_response_at) == (None, oslo(2026, 4, 13, 10, 0))
    fired = [(e.data["clock"], e.kind) for e in events_of(sqlite_engine, tid, "sla-warning")]
    fired += [(e.data["clock"], e.kind) for e in events_of(sqlite_engine, tid, "sla-breach")]
    assert sorted(fired) == [
        ("next_response", "sla-breach"),
        ("next_response", "sla-warning"),
        ("resolution", "sla-warning"),
    ]


def test_reopen_restarts_the_resolution_clock(tmp_path: Path, sqlite_engine: Engine) -> None:
    settings = make_settings(tmp_path, extra='[sla_defaults]\ndefault = "office"\n')
    clock = Clock(oslo(2026, 4, 13, 9, 0))
    r = receive(sqlite_engine, cfg(settings, clock), mail(message_id="<r1@client.example>"))
    tid = r.ticket_id or 0
    agent_reply(sqlite_engine, settings, tid, oslo(2026, 4, 13, 9, 30))
    set_status(sqlite_engine, settings, tid, "resolved", oslo(2026, 4, 13, 11, 0))
    t = ticket(sqlite_engine, tid)
    assert (t.sla_check_at, t.resolved_at) == (None, oslo(2026, 4, 13, 11, 0))
    assert views.sla_state(t, oslo(2026, 4, 20, 9, 0)) == "met"

    clock.at = oslo(2026, 4, 16, 15, 0)  # Thursday: the customer writes again
    receive(sqlite_engine, cfg(settings, clock), mail(in_reply_to="<r1@client.example>"))
    t = ticket(sqlite_engine, tid)
    assert (t.status, t.reopened, t.resolution_cycle) == ("open", 1, 1)
    assert t.resolution_due == oslo(2026, 4, 20, 15, 0)  # Thursday 2 h, Friday 8, Monday 6
    assert t.next_response_due == oslo(2026, 4, 16, 17, 0)  # a reply is owed again
    assert views.sla_state(t, oslo(2026, 4, 16, 15, 0)) == "ok"

    # An agent reopening a resolved ticket restarts it the same way.
    set_status(sqlite_engine, settings, tid, "resolved", oslo(2026, 4, 17, 9, 0))
    set_status(sqlite_engine, settings, tid, "open", oslo(2026, 4, 17, 10, 0))
    t = ticket(sqlite_engine, tid)
    assert (t.resolution_cycle, t.resolution_due) == (2, oslo(2026, 4, 21, 10, 0))
    assert t.next_response_due is None


# -- the sweep and escalations ---------------------------------------------------------


def test_each_threshold_fires_once_across_sweeps(tmp_path: Path, engine: Engine) -> None:
    settings = make_settings(tmp_path, extra='[sla_defaults]\ndefault = "fast"\n')
    start = datetime(2026, 4, 14, 10, tzinfo=UTC)
    r = receive(engine, cfg(settings, Clock(start)), mail())
    tid = r.ticket_id or 0
    assert ticket(engine, tid).team == "frontline"

    assert sla.run_sweep(engine, settings, start + timedelta(minutes=29)).examined == 0
    first = sla.run_sweep(engine, settings, start + timedelta(minutes=30))
    again = sla.run_sweep(engine, settings, start + timedelta(minutes=30))
    later = sla.run_sweep(engine, settings, start + timedelta(minutes=45))
    assert (first.warnings, first.escalations, first.notifications) == (1, 1, 1)
    assert (again.examined, later.examined) == (0, 0)
    assert views.sla_state(ticket(engine, tid), start + timedelta(minutes=45)) == "warning"

    breach = sla.run_sweep(engine, settings, start + timedelta(hours=1))
    assert (breach.breaches, breach.escalations, breach.notifications) == (1, 3, 1)
    assert sla.run_sweep(engine, settings, start + timedelta(hours=2)).examined == 0
    t = ticket(engine, tid)
    assert (t.priority, t.team, t.assignee) == ("high", "billing", "carl@example.com")
    assert views.sla_state(t, start + timedelta(hours=2)) == "breached"
    assert t.sla_fired == ["first_response:warning:0", "first_response:breach:0"]
    assert t.sla_check_at == start + timedelta(hours=12)  # the resolution warning

    kinds = [(e.kind, e.data.get("clock"), e.data.get("action")) for e in events_of(
        engine, tid, "sla-warning", "sla-breach", "escalation"
    )]  # fmt: skip
    assert kinds == [
        ("sla-warning", "first_response", None),
        ("escalation", "first_response", "notify-team"),
        ("sla-breach", "first_response", None),
        ("escalation", "first_response", "raise-priority"),
        ("escalation", "first_response", "reassign:billing"),
        ("escalation", "first_response", "notify-lead"),  # written with its mail
    ]
    mails = escalation_mails(engine)
    assert [sorted(row.recipients) for row, _ in mails] == [
        ["ann@example.com", "bob@example.com"],
        ["lea@example.com"],
    ]
    row, msg = mails[1]
    assert msg["Subject"] == f"[#{tid}] SLA breached: first response - Printer broken"
    assert msg["Auto-Submitted"] == "auto-generated"
    assert "was missed" in msg.get_body().get_content()  # type: ignore[union-attr]
    assert (row.not_before, row.next_attempt_at) == (None, start + timedelta(hours=1))
    assert row.ticket_id == tid and row.mailbox == "support"

    # The resolution clock has its own thresholds; the billing team hears of it now.
    sla.run_sweep(engine, settings, start + timedelta(hours=12))
    assert sorted(escalation_mails(engine)[-1][0].recipients) == [
        "carl@example.com",
        "dina@example.com",
    ]


def test_concurrent_sweeps_fire_each_threshold_exactly_once(
    tmp_path: Path, database: Database
) -> None:
    settings = make_settings(tmp_path, extra='[sla_defaults]\ndefault = "fast"\n')
    start = datetime(2026, 4, 14, 10, tzinfo=UTC)
    config = cfg(settings, Clock(start))
    with session_scope(database.engine) as s:
        ids = [
            intake.receive(s, config, mailbox="support", data=mail(subject=f"n{i}")).ticket_id
            for i in range(40)
        ]
    engines = [make_engine(database.url) for _ in range(4)]
    barrier = threading.Barrier(len(engines))
    results: list[sla.SweepResult] = []

    def run(e: Engine) -> None:
        barrier.wait()
        results.append(sla.run_sweep(e, settings, start + timedelta(hours=1), limit=15))

    threads = [threading.Thread(target=run, args=(e,)) for e in engines]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    for e in engines:
        e.dispose()
    assert len(results) == len(engines)
    with Session(database.engine) as s:
        fired = s.exec(
            select(TicketEvent).where(
                col(TicketEvent.kind).in_(["sla-warning", "sla-breach", "escalation"])
            )
        ).all()
        mails = set(s.exec(select(Outbox.message_id).where(Outbox.kind == "escalation")).all())
    counted = Counter((e.ticket_id, e.kind, e.data.get("action")) for e in fired)
    kinds = [("sla-warning", None), ("sla-breach", None), ("escalation", "notify-team")]
    kinds += [("escalation", "notify-lead"), ("escalation", "raise-priority")]
    kinds += [("escalation", "reassign:billing")]
    assert set(counted) == {(tid, kind, action) for tid in ids for kind, action in kinds}
    assert set(counted.values()) == {1}
    assert {e.data["message_id"] for e in fired if "message_id" in e.data} == mails
    assert sum(r.warnings for r in results) == len(ids)
    assert sum(r.breaches for r in results) == len(ids)


def test_sweep_in_a_callers_session_keeps_its_tickets_current(
    tmp_path: Path, engine: Engine
) -> None:
    """The sweep writes with Core statements: a Ticket the caller holds is not left stale,
    and the caller's own pending change is written, not lost."""
    settings = make_settings(tmp_path, extra='[sla_defaults]\ndefault = "fast"\n')
    start = datetime(2026, 4, 14, 10, tzinfo=UTC)
    tid = receive(engine, cfg(settings, Clock(start)), mail()).ticket_id or 0
    with session_scope(engine) as s:
        held = s.get(Ticket, tid)
        assert held is not None
        held.category = "hardware"  # pending in the caller's session
        result = sla.sweep(s, settings=settings, now=start + timedelta(hours=1))
        assert (result.warnings, result.breaches) == (1, 1)
        assert held.sla_fired == ["first_response:warning:0", "first_response:breach:0"]
        assert (held.priority, held.team) == ("high", "billing")
        assert held.sla_check_at == start + timedelta(hours=12)
    t = ticket(engine, tid)
    assert (t.category, t.priority, t.team, t.assignee) == (
        "hardware",
        "high",
        "billing",
        "carl@example.com",
    )


@pytest.mark.usefixtures("postgres")
def test_sweep_skips_while_another_process_holds_it(
    tmp_path: Path, postgres_database: Database
) -> None:
    engine = postgres_database.engine
    settings = make_settings(tmp_path, extra='[sla_defaults]\ndefault = "fast"\n')
    start = datetime(2026, 4, 14, 10, tzinfo=UTC)
    tid = receive(engine, cfg(settings, Clock(start)), mail()).ticket_id or 0
    other = make_engine(postgres_database.url)
    try:
        with other.connect() as conn:  # another daemon, mid-sweep
            conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": lock_key("sweep", "sla")})
            held = sla.run_sweep(engine, settings, start + timedelta(hours=1))
            conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": lock_key("sweep", "sla")})
    finally:
        other.dispose()
    assert (held.ran, held.warnings) == (False, 0)
    assert events_of(engine, tid, "sla-warning") == []
    done = sla.run_sweep(engine, settings, start + timedelta(hours=1))
    assert (done.ran, done.warnings, done.breaches) == (True, 1, 1)


def test_a_burst_of_breaches_is_one_digest_per_recipient(
    tmp_path: Path, sqlite_engine: Engine
) -> None:
    settings = make_settings(tmp_path, extra='[sla_defaults]\ndefault = "office"\n')
    start = oslo(2026, 4, 13, 8, 0)  # overnight mail: all due at the same opening hour
    config = cfg(settings, Clock(start))
    ids = [receive(sqlite_engine, config, mail(subject=f"n{i}")).ticket_id for i in range(5)]
    result = sla.run_sweep(sqlite_engine, settings, oslo(2026, 4, 13, 13, 0))
    assert (result.warnings, result.breaches, result.notifications) == (5, 5, 2)
    [(warn_row, _), (breach_row, breach_msg)] = escalation_mails(sqlite_engine)
    assert sorted(warn_row.recipients) == ["ann@example.com", "bob@example.com"]
    assert breach_row.recipients == ["lea@example.com"]
    assert breach_row.ticket_id is None  # a digest belongs to no single ticket
    assert breach_msg["Subject"] == "SLA breached: 5 tickets"
    text = breach_msg.get_body().get_content()  # type: ignore[union-attr]
    assert text.startswith("SLA breached: 5 tickets missed a target.")
    assert all(f"[#{tid}] n{i}" in text for i, tid in enumerate(ids))
    named = {
        e.data["message_id"]
        for tid in ids
        for e in events_of(sqlite_engine, tid or 0, "escalation")
    }
    assert named == {warn_row.message_id, breach_row.message_id}


def test_escalation_mail_waits_for_business_hours(tmp_path: Path, sqlite_engine: Engine) -> None:
    settings = make_settings(tmp_path, extra='[sla_defaults]\ndefault = "office"\n')
    start = oslo(2026, 4, 17, 15, 0)  # Friday afternoon
    tid = receive(sqlite_engine, cfg(settings, Clock(start)), mail()).ticket_id or 0
    # Half of 4 h is used up exactly at Friday's close: the warning fires then...
    result = sla.run_sweep(sqlite_engine, settings, oslo(2026, 4, 17, 17, 0))
    assert (result.warnings, result.notifications) == (1, 1)
    [(row, msg)] = escalation_mails(sqlite_engine)
    # ...and its mail waits for Monday morning.
    assert row.not_before == oslo(2026, 4, 20, 9, 0)
    assert row.next_attempt_at == oslo(2026, 4, 20, 9, 0)
    [event] = events_of(sqlite_engine, tid, "escalation")
    assert event.data["not_before"] == oslo(2026, 4, 20, 9, 0).isoformat()
    body = msg.get_body().get_content()  # type: ignore[union-attr]
    assert "First response due: Monday 2026-04-20 09:00 (UTC+00:00)" in body  # inboxd's zone


def test_team_calendar_holds_a_24x7_policy_mail(tmp_path: Path, sqlite_engine: Engine) -> None:
    """The team's calendar says when its people read mail, whatever the policy's calendar."""

    def edit(config: str) -> str:
        return config.replace('name = "frontline"\n', 'name = "frontline"\ncalendar = "office"\n')

    extra = """
[sla.round-the-clock]
first_response = "1h"
resolution = "1d"
on_breach = ["notify-team"]

[sla_defaults]
default = "round-the-clock"
"""
    settings = make_settings(tmp_path, extra=extra, edit=edit)
    start = oslo(2026, 4, 18, 12, 0)  # Saturday
    receive(sqlite_engine, cfg(settings, Clock(start)), mail())
    assert sla.run_sweep(sqlite_engine, settings, start + timedelta(hours=1)).breaches == 1
    [(row, _)] = escalation_mails(sqlite_engine)
    assert row.not_before == oslo(2026, 4, 20, 9, 0)


@pytest.mark.parametrize("policy", ["office", None])
def test_stale_pending_ticket_is_resolved(
    tmp_path: Path, sqlite_engine: Engine, policy: str | None
) -> None:
    extra = f'[sla_defaults]\ndefault = "{policy}"\n' if policy else ""
    settings = make_settings(tmp_path, extra=extra)
    start = oslo(2026, 4, 13, 9, 0)
    tid = receive(sqlite_engine, cfg(settings, Clock(start)), mail()).ticket_id or 0
    agent_reply(sqlite_engine, settings, tid, start + timedelta(minutes=20))
    paused = start + timedelta(minutes=30)
    set_status(sqlite_engine, settings, tid, "pending", paused)
    assert ticket(sqlite_engine, tid).sla_check_at == paused + timedelta(days=7)

    early = sla.run_sweep(sqlite_engine, settings, paused + timedelta(days=7, seconds=-1))
    assert (early.auto_resolved, ticket(sqlite_engine, tid).status) == (0, "pending")
    done = sla.run_sweep(sqlite_engine, settings, paused + timedelta(days=7))
    t = ticket(sqlite_engine, tid)
    assert (done.auto_resolved, t.status) == (1, "resolved")
    assert t.resolved_at == paused + timedelta(days=7)
    assert t.sla_check_at is None
    [event] = events_of(sqlite_engine, tid, "auto-resolved")
    assert event.data["reason"] == "no answer from the customer for 7 days"
    assert sla.run_sweep(sqlite_engine, settings, paused + timedelta(days=30)).examined == 0


def test_duration_and_time_words() -> None:
    assert sla.duration_words(timedelta(hours=4), business=True) == "4 business hours"
    assert sla.duration_words(timedelta(hours=1), business=True) == "1 business hour"
    assert sla.duration_words(timedelta(minutes=90), business=False) == "90 minutes"
    assert sla.duration_words(timedelta(days=2), business=False) == "2 days"
    assert sla.duration_words(timedelta(days=2), business=True) == "48 business hours"
    now = datetime(2026, 4, 1, 13, tzinfo=UTC)
    from datetime import timezone

    minus = timezone(-timedelta(hours=5, minutes=30))
    assert sla.time_words(now + timedelta(hours=1), minus, now=now) == "Wednesday 08:30 (UTC-05:30)"
    week = sla.time_words(now + timedelta(days=7), UTC, now=now)
    assert week == "Wednesday 8 April 13:00 (UTC+00:00)"
