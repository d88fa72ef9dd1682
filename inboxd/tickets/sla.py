"""SLA clocks on business time: which policy applies, when each target is due, the sweep.

A ticket races up to three clocks, each a target in business time of its policy's
calendar:

* ``first_response``: from ``created_at`` (when inboxd stored the mail, never its Date
  header) until the first agent reply (`on_agent_reply`; a note or the ack never counts);
* ``next_response`` (when the policy sets one): from a customer follow-up after the first
  response, while no agent reply is owed yet, until the next agent reply; a new cycle
  for each follow-up that makes a reply owed;
* ``resolution``: from ``created_at`` until the status is resolved; reopening starts a
  new cycle from the reopen instant.

``pending`` pauses every clock (``paused_at``); leaving it pushes each threshold still
ahead of the pause by the business time spent pending, so that time never counts. Each
clock has two thresholds, stored as UTC instants: the warning (``warn_at`` of the target
used) and the breach (the due instant). ``sla_check_at`` is the earliest threshold not yet
fired, or a pending ticket's auto-resolve instant, so the sweep is one indexed range
query. A threshold fires once per clock cycle: its marker ``clock:level:cycle`` joins
``sla_fired`` in the transaction that records its event and runs its escalations, and
one sweep runs at a time (PostgreSQL: a transaction advisory lock; SQLite: ``BEGIN
IMMEDIATE``), so a re-run, or a second daemon, finds nothing left to do.

Escalations are the policy's `on_warning`/`on_breach` actions and nothing else. Mails
(`notify-team`, `notify-lead`) are outbox rows of kind `escalation`, held until the team's
calendar (else the policy's) opens when `notify_in_business_hours`; the notices of one
sweep that share recipients, level and hold become one digest mail.
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime, timedelta, tzinfo
from operator import attrgetter
from typing import TYPE_CHECKING, Any, TypeAlias

from sqlalchemy import Engine, insert, text
from sqlalchemy import select as core_select
from sqlmodel import Session

from inboxd import records
from inboxd.clock import utcnow
from inboxd.config import BUILTIN_CALENDAR, WEEKDAYS, General
from inboxd.db import Prepared
from inboxd.errors import ConfigError
from inboxd.leases import lock_key
from inboxd.mail import compose
from inboxd.models import Ticket, TicketEvent
from inboxd.tickets import assignment, events, templates
from inboxd.tickets.calendar import BusinessCalendar
from inboxd.tickets.clocks import (  # reading the clocks: pure, shared with the read path
    CLOCKS,
    DONE,
    LIVE,
    ClockName,
    Level,
    Threshold,
    running,
    thresholds,
)
from inboxd.tickets.clocks import State as State
from inboxd.tickets.clocks import active_due as active_due
from inboxd.tickets.clocks import instants as _get
from inboxd.tickets.clocks import sla_state as sla_state

if TYPE_CHECKING:
    from zoneinfo import ZoneInfo

    from inboxd.config import Mailbox, Settings, SlaPolicy, Team

log = logging.getLogger("inboxd.sla")

PRIORITIES = ("low", "normal", "high", "urgent")
SWEEP_LOCK = lock_key("sweep", "sla")
ESCALATION_TEMPLATE = "escalation.txt"
DIGEST_LIMIT = 50  # tickets listed in one escalation mail; a longer list is not read
CLOCK_LABELS: Mapping[str, str] = {
    "first_response": "first response",
    "next_response": "next response",
    "resolution": "resolution",
}
_DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
_MONTHS = (
    "January", "February", "March", "April", "May", "June",
    "July", "August", "September", "October", "November", "December",
)  # fmt: skip


# -- calendars and policies ----------------------------------------------------------

_CALENDARS: dict[int, dict[str, BusinessCalendar]] = {}


def calendar(settings: Settings, name: str) -> BusinessCalendar:
    """The business calendar `name` ("24x7" built in), built once per settings object.

    Raises ConfigError for an unknown name or a calendar without open hours.
    """
    key = id(settings)
    cache = _CALENDARS.get(key)
    if cache is None:
        cache = _CALENDARS[key] = {}
        weakref.finalize(settings, _CALENDARS.pop, key, None)  # a reload drops the old ones
    found = cache.get(name)
    if found is None:
        found = cache[name] = _build_calendar(settings, name)
    return found


def _build_calendar(settings: Settings, name: str) -> BusinessCalendar:
    if name == BUILTIN_CALENDAR:
        return BusinessCalendar.always()
    spec = settings.calendar(name)
    try:
        return BusinessCalendar(
            tz=spec.zone,
            hours={WEEKDAYS.index(day): ranges for day, ranges in spec.hours.items()},
            holidays=frozenset(spec.holidays),
            name=name,
        )
    except ValueError as exc:
        raise ConfigError(f"calendar {name!r}: {exc}") from None


def _named(items: Iterable[Any], name: str | None) -> Any:
    return next((i for i in items if i.name == name), None) if name else None


def mailbox_of(settings: Settings, ticket: Ticket) -> Mailbox | None:
    return named_mailbox(settings, ticket.mailbox)


def named_mailbox(settings: Settings, name: str | None) -> Mailbox | None:
    return _named(settings.mailboxes, name)  # type: ignore[no-any-return]


def team_of(settings: Settings, ticket: Ticket) -> Team | None:
    return _named(settings.teams, ticket.team)  # type: ignore[no-any-return]


def select_policy(settings: Settings, ticket: Ticket) -> tuple[str | None, str | None]:
    """The policy for a new ticket and where it came from, first found wins:

    the routing rule (`then.sla`, already in `ticket.sla_policy`), the mailbox's `sla`,
    the team's `sla`, `sla_defaults.by_priority[priority]`, `sla_defaults.default`;
    else (None, None): no SLA applies.
    """
    if ticket.sla_policy:
        return ticket.sla_policy, "rule"
    mailbox = mailbox_of(settings, ticket)
    if mailbox is not None and mailbox.sla:
        return mailbox.sla, "mailbox"
    team = team_of(settings, ticket)
    if team is not None and team.sla:
        return team.sla, "team"
    by_priority = dict(settings.sla_defaults.by_priority)
    if ticket.priority in by_priority:
        return by_priority[ticket.priority], "priority"
    if settings.sla_defaults.default:
        return settings.sla_defaults.default, "default"
    return None, None


def resolve(settings: Settings, name: str | None) -> tuple[SlaPolicy, BusinessCalendar] | None:
    """The policy called `name` and its calendar; None (logged) when either is gone."""
    if not name:
        return None
    try:
        policy = settings.sla_policy(name)
        return policy, calendar(settings, policy.calendar)
    except ConfigError as exc:
        log.warning("SLA policy unusable", extra={"policy": name, "error": str(exc)})
        return None


# -- clock bookkeeping on the ticket ------------------------------------------------


# What the clocks and the sweep read and write of a ticket: a `Ticket`, or the sweep's
# plain `_Due` row (a backlog of thousands never becomes ORM instances).
Clocked: TypeAlias = "Ticket | _Due"


def _set(ticket: Clocked, clock: ClockName, warn: datetime | None, due: datetime | None) -> None:
    if clock == "first_response":
        ticket.first_response_warn_at, ticket.first_response_due = warn, due
    elif clock == "next_response":
        ticket.next_response_warn_at, ticket.next_response_due = warn, due
    else:
        ticket.resolution_warn_at, ticket.resolution_due = warn, due


def _targets(
    cal: BusinessCalendar, start: datetime, target: timedelta, warn_at: float
) -> tuple[datetime, datetime]:
    """(warning instant, due instant) of a target of `target` business time from `start`."""
    return cal.add(start, target * warn_at), cal.add(start, target)


def _next_check(
    ticket: Clocked, auto_resolve: timedelta, known: list[Threshold] | None = None
) -> datetime | None:
    """The next instant the sweep must look at this ticket, or None.

    `known`: the ticket's `thresholds`, when the caller has them already.
    """
    if ticket.status not in LIVE:
        return None
    paused = ticket.paused_at if ticket.status == "pending" else None
    fired = ticket.sla_fired
    # Earliest first, so the first one still to fire is the next; while paused, only
    # what was reached before the pause is still to fire.
    found = next(
        (
            t.at
            for t in (thresholds(ticket) if known is None else known)
            if (paused is None or t.at <= paused) and t.marker not in fired
        ),
        None,
    )
    if paused is None:
        return found
    resolve_at = paused + auto_resolve
    return resolve_at if found is None or resolve_at < found else found


def _recheck(ticket: Clocked, settings: Settings) -> None:
    ticket.sla_check_at = _next_check(ticket, settings.inboxd.auto_resolve_pending)


def _lock(session: Session, ticket: Ticket) -> None:
    """Write our pending changes, then re-read the ticket under its row lock.

    On PostgreSQL a sweep may have fired a threshold since this transaction read the row:
    without the lock and the re-read, our write of `sla_fired` would undo its marker and
    the threshold would fire again. (SQLite's BEGIN IMMEDIATE already serialises us.)
    """
    if ticket.id is None:
        return
    session.flush()
    session.refresh(ticket, with_for_update=True)


# -- the hooks: intake and agent actions call these ----------------------------------


def start_clocks(session: Session, *, ticket: Ticket, settings: Settings) -> str | None:
    """Choose the policy of a new ticket and set its due instants; returns the policy name.

    Clocks start at `ticket.created_at`. Records an `sla` event saying which policy
    applies and why (or that none does). Never commits.
    """
    data = set_clocks(ticket, settings)
    assert ticket.id is not None
    events.record(
        session, ticket_id=ticket.id, at=ticket.created_at, actor=events.SYSTEM, kind="sla", **data
    )
    return ticket.sla_policy


def set_clocks(ticket: Ticket, settings: Settings) -> dict[str, Any]:
    """`start_clocks` on a ticket not stored yet (intake writes it with its clocks in one
    INSERT); returns the `sla` event's data for the caller to record once it has an id."""
    name, source = select_policy(settings, ticket)
    found = resolve(settings, name)
    ticket.sla_policy = name if found is not None else None
    data: dict[str, Any] = {"policy": ticket.sla_policy, "source": source}
    if found is None:
        for clock in CLOCKS:
            _set(ticket, clock, None, None)
        if name is not None:
            data["problem"] = f"policy {name!r} is not usable; no SLA clock runs"
    else:
        policy, cal = found
        start = ticket.created_at
        _set(ticket, "first_response", *_targets(cal, start, policy.first_response, policy.warn_at))
        _set(ticket, "resolution", *_targets(cal, start, policy.resolution, policy.warn_at))
        data |= {
            "calendar": policy.calendar,
            "first_response_due": _iso(ticket.first_response_due),
            "resolution_due": _iso(ticket.resolution_due),
        }
    _recheck(ticket, settings)
    return data


def on_agent_reply(session: Session, *, ticket: Ticket, settings: Settings, now: datetime) -> None:
    """An agent replied to the customer: the first response (once) and any owed next
    response are met. Call it for replies only, never for notes. Never commits."""
    _lock(session, ticket)
    if ticket.first_response_at is None:
        ticket.first_response_at = now
    _set(ticket, "next_response", None, None)
    _recheck(ticket, settings)


def on_customer_reply(
    session: Session, *, ticket: Ticket, settings: Settings, now: datetime
) -> None:
    """A person on the customer side wrote again (after any status change it caused).

    Once the first response was given and no reply is owed yet, a policy with a
    `next_response` target starts a new next-response cycle from `now`. Never commits.
    """
    if ticket.status != "open" or ticket.first_response_at is None:
        return
    found = resolve(settings, ticket.sla_policy)
    if found is None or found[0].next_response is None:
        return
    _lock(session, ticket)
    if ticket.next_response_due is not None:  # a reply is owed already: its clock goes on
        return
    policy, cal = found
    assert policy.next_response is not None
    ticket.next_response_cycle += 1
    _set(ticket, "next_response", *_targets(cal, now, policy.next_response, policy.warn_at))
    _recheck(ticket, settings)


def on_status_change(
    session: Session,
    *,
    ticket: Ticket,
    settings: Settings,
    old: str,
    new: str,
    now: datetime,
) -> None:
    """Move the clocks along with a status change from `old` to `new` (sets the status).

    pending pauses; leaving pending resumes with the paused business time excluded;
    resolved meets the resolution target (and ends any owed next response); leaving
    resolved or closed (a reopen) starts a new resolution cycle from `now`. Never commits.
    """
    if old == new:
        return
    _lock(session, ticket)
    _change_status(ticket, settings, old=old, new=new, now=now)


def _change_status(
    ticket: Clocked, settings: Settings, *, old: str, new: str, now: datetime
) -> None:
    ticket.status = new
    found = resolve(settings, ticket.sla_policy)
    if old == "pending" and ticket.paused_at is not None:
        if new in LIVE and found is not None:
            _resume(ticket, found[1], now)
        ticket.paused_at = None
    if new == "pending":
        ticket.paused_at = now
    if new in DONE or new == "merged":
        if new == "resolved" and ticket.resolved_at is None:
            ticket.resolved_at = now
        _set(ticket, "next_response", None, None)
        ticket.paused_at = None
    if old in DONE and new in LIVE and found is not None:
        policy, cal = found
        ticket.resolution_cycle += 1
        _set(ticket, "resolution", *_targets(cal, now, policy.resolution, policy.warn_at))
    _recheck(ticket, settings)


def _resume(ticket: Clocked, cal: BusinessCalendar, now: datetime) -> None:
    """Push every threshold still ahead of the pause by the business time spent paused."""
    paused_at = ticket.paused_at
    assert paused_at is not None
    pause = cal.elapsed(paused_at, now)
    if not pause:
        return
    for clock in CLOCKS:
        if not running(ticket, clock):
            continue
        warn, due, _ = _get(ticket, clock)
        _set(
            ticket,
            clock,
            cal.add(warn, pause) if warn is not None and warn > paused_at else warn,
            cal.add(due, pause) if due is not None and due > paused_at else due,
        )


# -- what a ticket's SLA looks like now ----------------------------------------------


@dataclass(frozen=True, slots=True)
class Promise:
    """What we may tell a customer about the first response."""

    policy: str
    within: timedelta  # the target, in business time of the calendar
    business: bool  # False for the always-open calendar: plain hours
    due: datetime  # aware UTC


def promise(settings: Settings, ticket: Ticket) -> Promise | None:
    """The first-response promise of a ticket whose clocks started; None: promise nothing."""
    found = resolve(settings, ticket.sla_policy)
    if found is None or ticket.first_response_due is None or not running(ticket, "first_response"):
        return None
    policy = found[0]
    return Promise(
        policy=ticket.sla_policy or "",
        within=policy.first_response,
        business=policy.calendar != BUILTIN_CALENDAR,
        due=ticket.first_response_due,
    )


# -- the sweep --------------------------------------------------------------------------


@dataclass(slots=True)
class SweepResult:
    """What one sweep did. `ran` is False when another process held the sweep."""

    ran: bool = True
    examined: int = 0
    warnings: int = 0
    breaches: int = 0
    escalations: int = 0
    notifications: int = 0
    auto_resolved: int = 0
    more: bool = False  # the batch was full: tickets may still be due

    def add(self, other: SweepResult) -> None:
        for f in fields(self):
            if f.name not in ("ran", "more"):
                setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))
        self.more = other.more


def sweep(session: Session, *, settings: Settings, now: datetime, limit: int = 1000) -> SweepResult:
    """Fire every threshold reached by `now`, run its escalations, auto-resolve stale
    pending tickets; at most `limit` tickets, most overdue first.

    One indexed query (`sla_check_at <= now`) reads the due rows' clock columns as plain
    rows; what changed is written back by one executemany UPDATE per set of changed
    columns, the events by one INSERT. Rows another transaction holds are skipped
    (PostgreSQL SKIP LOCKED) and found by the next sweep. Notifications for the same
    people, level and delivery time are one mail per sweep: a burst of breaches (every
    overnight ticket at the first opening hour) is one digest, not a mail storm. The
    caller owns the transaction and makes sure one sweep runs at a time (`run_sweep`
    does both). Ticket instances the session holds are flushed first and expired after.
    """
    session.flush()  # the caller's pending changes, before we read past the ORM
    batch = _Batch(session, settings, now)
    conn = session.connection()
    rows = conn.execute(
        core_select(*_DUE_COLUMNS)
        .where(_TICKET.c.sla_check_at <= now)
        .order_by(_TICKET.c.sla_check_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
    ).all()
    batch.result.more = len(rows) >= limit
    changes: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for row in rows:
        due = _Due(*row)
        batch.result.examined += 1
        _sweep_ticket(batch, due)
        # Index 0 is the id, never written; the rest are compared with what was read.
        changed = {
            n: v
            for n, v, old in zip(_DUE_NAMES[1:], due.values(), row[1:], strict=True)
            if v != old
        }
        if changed:
            changes.setdefault(tuple(changed), []).append({"_id": due.id, **changed})
    for names, params in changes.items():
        records.update_by_id(Ticket, names).many(session, params)
    for key, group in batch.notices.items():
        _send(batch, key, group)
    if batch.events:  # one executemany for the batch: a backlog fires thousands
        _INSERT_EVENTS.many(session, batch.events)
    session.flush()
    written = {r[0] for r in rows}
    for obj in list(session.identity_map.values()):
        if isinstance(obj, Ticket) and obj.id in written:
            session.expire(obj)
    return batch.result


def run_sweep(
    engine: Engine, settings: Settings, now: datetime | None = None, *, limit: int = 1000
) -> SweepResult:
    """Run the sweep in its own transactions (batches of `limit`) and commit.

    On PostgreSQL each batch first takes a transaction advisory lock and skips the sweep
    when another process holds it; on SQLite, BEGIN IMMEDIATE makes a second sweep wait
    and then find nothing left. Either way every threshold fires once.
    """
    total = SweepResult()
    for _ in range(100):  # bounded: a full batch is followed by another, not forever
        at = now or utcnow()
        with Session(engine, expire_on_commit=False) as session, session.begin():
            if engine.dialect.name == "postgresql":
                got = session.connection().execute(
                    text("SELECT pg_try_advisory_xact_lock(:key)"), {"key": SWEEP_LOCK}
                )
                if not got.scalar():
                    total.ran = total.examined > 0
                    return total
            batch = sweep(session, settings=settings, now=at, limit=limit)
        total.add(batch)
        if not batch.more:
            break
    return total


_TICKET = Ticket.__table__  # type: ignore[attr-defined]


@dataclass(slots=True, eq=False)
class _Due:
    """A due ticket's columns as the sweep reads and writes them (`_DUE_NAMES` is this order)."""

    id: int | None
    status: str
    priority: str
    team: str | None
    assignee: str | None
    mailbox: str | None
    subject: str
    customer_addr: str | None
    customer_name: str | None
    sla_policy: str | None
    updated_at: datetime
    last_customer_at: datetime | None
    first_response_at: datetime | None
    resolved_at: datetime | None
    paused_at: datetime | None
    sla_check_at: datetime | None
    sla_fired: list[str]
    first_response_warn_at: datetime | None
    first_response_due: datetime | None
    next_response_warn_at: datetime | None
    next_response_due: datetime | None
    next_response_cycle: int
    resolution_warn_at: datetime | None
    resolution_due: datetime | None
    resolution_cycle: int

    def values(self) -> tuple[Any, ...]:
        """Every column but the id, in `_DUE_NAMES` order."""
        return _DUE_VALUES(self)  # type: ignore[no-any-return]


_DUE_NAMES = tuple(f.name for f in fields(_Due))
_DUE_COLUMNS = tuple(_TICKET.c[name] for name in _DUE_NAMES)
_DUE_VALUES = attrgetter(*_DUE_NAMES[1:])


_INSERT_EVENTS = Prepared(insert(TicketEvent.__table__))  # type: ignore[attr-defined]


@dataclass(frozen=True, slots=True)
class _MailKey:
    """Notifications that can share one mail: same people, sender, level and hold."""

    recipients: tuple[str, ...]
    mailbox: str
    level: Level
    not_before: datetime | None


@dataclass(frozen=True, slots=True)
class _Notice:
    ticket: Clocked
    threshold: Threshold
    action: str


@dataclass(slots=True)
class _Batch:
    """One sweep transaction: what it found, the mails and events it will write."""

    session: Session
    settings: Settings
    now: datetime
    result: SweepResult = field(default_factory=SweepResult)
    notices: dict[_MailKey, list[_Notice]] = field(default_factory=dict)
    events: list[dict[str, Any]] = field(default_factory=list)
    # Memos for the batch: a burst shares a handful of policies, teams and mail keys.
    policies: dict[str | None, tuple[SlaPolicy, BusinessCalendar] | None] = field(
        default_factory=dict
    )
    mail_keys: dict[tuple[Any, ...], _MailKey | str] = field(default_factory=dict)

    def policy(self, name: str | None) -> tuple[SlaPolicy, BusinessCalendar] | None:
        if name not in self.policies:
            self.policies[name] = resolve(self.settings, name)
        return self.policies[name]

    def record(self, ticket: Clocked, kind: str, **data: Any) -> None:
        """A ticket event, as `events.record` writes it, inserted with the batch."""
        self.events.append(
            {
                "ticket_id": ticket.id,
                "at": self.now,
                "actor": events.SYSTEM,
                "kind": kind,
                "data": data,
            }
        )


def _sweep_ticket(b: _Batch, ticket: Clocked) -> None:
    if ticket.status not in LIVE:
        ticket.sla_check_at = None
        return
    found = b.policy(ticket.sla_policy)
    paused = ticket.paused_at if ticket.status == "pending" else None
    horizon = min(b.now, paused) if paused is not None else b.now
    known = thresholds(ticket)
    for threshold in known:
        if threshold.at > horizon or threshold.marker in ticket.sla_fired:
            continue
        ticket.sla_fired = [*ticket.sla_fired, threshold.marker]  # a new list: seen as changed
        _fire(b, ticket, threshold, found[0] if found else None)
    ar = b.settings.inboxd.auto_resolve_pending
    if (
        paused is not None
        and b.now >= paused + ar
        and (ticket.last_customer_at is None or ticket.last_customer_at <= paused)
    ):
        _change_status(ticket, b.settings, old="pending", new="resolved", now=b.now)
        b.record(
            ticket,
            "auto-resolved",
            old="pending",
            new="resolved",
            pending_since=_iso(paused),
            reason=f"no answer from the customer for {_words(ar, business=False)}",
        )
        b.result.auto_resolved += 1
    else:  # firing changes no threshold: the list read above is still the ticket's
        ticket.sla_check_at = _next_check(ticket, ar, known)
    if ticket.sla_check_at is not None and ticket.sla_check_at <= b.now:
        # Cannot happen by construction; never let one ticket spin the sweep.
        log.error("SLA check did not advance", extra={"ticket": ticket.id})
        ticket.sla_check_at = None


def _fire(b: _Batch, ticket: Clocked, t: Threshold, policy: SlaPolicy | None) -> None:
    b.record(
        ticket,
        f"sla-{t.level}",
        clock=t.clock,
        cycle=t.cycle,
        policy=ticket.sla_policy,
        due=_iso(_get(ticket, t.clock)[1]),
        threshold_at=_iso(t.at),
    )
    if t.level == "warning":
        b.result.warnings += 1
    else:
        b.result.breaches += 1
    actions = (policy.on_warning if t.level == "warning" else policy.on_breach) if policy else ()
    for action in actions:
        b.result.escalations += 1
        if action in ("notify-team", "notify-lead"):
            key_or_skip = _mail_key(b, ticket, t, action, policy)
            if isinstance(key_or_skip, _MailKey):
                b.notices.setdefault(key_or_skip, []).append(_Notice(ticket, t, action))
                continue  # its event is written with the mail, which it names
            data: dict[str, Any] = {"skipped": key_or_skip}
        else:
            data = _act(b, ticket, action)
        b.record(ticket, "escalation", action=action, clock=t.clock, level=t.level, **data)


def _act(b: _Batch, ticket: Clocked, action: str) -> dict[str, Any]:
    """Run one escalation action on the ticket; what it did, for its event."""
    if action == "raise-priority":
        old = ticket.priority if ticket.priority in PRIORITIES else "normal"
        new = PRIORITIES[min(PRIORITIES.index(old) + 1, len(PRIORITIES) - 1)]
        ticket.priority = new
        return {"old": old, "new": new} if new != old else {"skipped": "already urgent"}
    if action.startswith("reassign:"):
        target = _named(b.settings.teams, action[9:])
        if target is None:
            return {"skipped": f"team {action[9:]} is not in the configuration"}
        if ticket.team == target.name:
            return {"skipped": f"already with team {target.name}"}
        spec = assignment.TeamSpec(target.name, tuple(target.members), target.assignment)
        old_team, ticket.team = ticket.team, target.name
        ticket.updated_at = b.now
        # The assignment strategies count tickets in the database: written at once, as
        # each one moves, so a burst of reassignments spreads over the team.
        records.update_by_id(Ticket, ("team", "updated_at")).rows(
            b.session, {"_id": ticket.id, "team": target.name, "updated_at": b.now}
        )
        ticket.assignee = assignment.choose(b.session, spec)
        assigned = {"_id": ticket.id, "assignee": ticket.assignee}
        records.update_by_id(Ticket, ("assignee",)).rows(b.session, assigned)
        return {"old": old_team, "new": target.name, "assignee": ticket.assignee}
    return {"skipped": "unknown action"}


def _mail_key(
    b: _Batch, ticket: Clocked, t: Threshold, action: str, policy: SlaPolicy | None
) -> _MailKey | str:
    """Where a notify action's mail goes and when, or why it cannot go anywhere."""
    memo = (ticket.team, ticket.mailbox, action, t.level, id(policy))
    found = b.mail_keys.get(memo)
    if found is None:
        found = b.mail_keys[memo] = _new_mail_key(b, ticket, t, action, policy)
    return found


def _new_mail_key(
    b: _Batch, ticket: Clocked, t: Threshold, action: str, policy: SlaPolicy | None
) -> _MailKey | str:
    team = _named(b.settings.teams, ticket.team)
    if team is None:
        return "the ticket has no team"
    if action == "notify-lead":
        recipients = [team.lead] if team.lead else []
    else:
        recipients = [team.address] if team.address else list(team.members)
    if not recipients:
        return f"team {team.name} has no {action[7:]} address"
    mailbox = _named(b.settings.mailboxes, ticket.mailbox)
    if mailbox is None and b.settings.mailboxes:
        mailbox = b.settings.mailboxes[0]
    if mailbox is None:
        return "no mailbox to send from"
    hold = _hold_until(b.settings, team, policy, b.now)
    return _MailKey(tuple(sorted(set(recipients))), mailbox.name, t.level, hold)


def _send(b: _Batch, key: _MailKey, notices: list[_Notice]) -> None:
    """Queue one mail for these notices (a digest when several), then their events."""
    from inboxd.tickets import outbox  # outbox -> views -> sla: import when first needed

    mailbox = b.settings.mailbox(key.mailbox)
    general = b.settings.inboxd
    context = _escalation_context([(n.ticket, n.threshold) for n in notices], key.level, general)
    try:
        body = templates.render(ESCALATION_TEMPLATE, context, folder=general.templates)
    except templates.TemplateProblem as exc:  # an escalation is never lost to a template
        log.error("escalation template failed", extra={"error": str(exc)})
        body = (
            context["summary"]
            + "\n\n"
            + "".join(f"{t['reference']} {t['subject']}\n" for t in context["tickets"])
        )
    single = notices[0].ticket if len(notices) == 1 else None
    word = "breached" if key.level == "breach" else "at risk"
    if single is not None:
        assert single.id is not None
        label = CLOCK_LABELS[notices[0].threshold.clock]
        subject = f"{general.tag(single.id)} SLA {word}: {label} - {single.subject}"
    else:
        subject = f"SLA {word}: {len(notices)} tickets"
    message = compose.build(
        compose.Outgoing(
            sender=mailbox.address,
            sender_name="inboxd",
            to=list(key.recipients),
            subject=subject,
            text=body,
            at=b.now,
            auto_submitted="auto-generated",
        )
    )
    row = outbox.enqueue(
        b.session,
        kind="escalation",
        message=message,
        smtp=mailbox.smtp,
        now=b.now,
        mailbox=mailbox.name,
        # The mail's own ticket, read after the sweep's UPDATEs: it records the Message-ID.
        ticket=b.session.get(Ticket, single.id, populate_existing=True) if single else None,
        not_before=key.not_before,
    )
    b.result.notifications += 1
    for n in notices:
        b.record(
            n.ticket,
            "escalation",
            action=n.action,
            clock=n.threshold.clock,
            level=n.threshold.level,
            to=list(key.recipients),
            message_id=row.message_id,
            not_before=_iso(key.not_before),
            tickets_in_mail=len(notices),
        )


def _hold_until(
    settings: Settings, team: Team, policy: SlaPolicy | None, now: datetime
) -> datetime | None:
    """The next opening of the team's calendar (else the policy's), when closed now."""
    if policy is None or not policy.notify_in_business_hours:
        return None
    try:
        cal = calendar(settings, team.calendar or policy.calendar)
    except ConfigError:
        return None
    opens = cal.next_open(now)
    return opens if opens > now else None


def _escalation_context(
    items: list[tuple[Clocked, Threshold]], level: Level, general: General
) -> dict[str, Any]:
    """The escalation template's variables: a summary line and one entry per ticket, the
    first `DIGEST_LIMIT` of them (`more` counts the rest; their events name the mail)."""
    tickets: list[dict[str, Any]] = []
    for ticket, t in items[:DIGEST_LIMIT]:
        assert ticket.id is not None
        due = _get(ticket, t.clock)[1]
        tickets.append(
            {
                "id": ticket.id,
                "reference": general.tag(ticket.id),
                "subject": templates.plain(ticket.subject),
                "clock": CLOCK_LABELS[t.clock],
                "due": _local_words(due, general.zone) if due else "-",
                "policy": ticket.sla_policy,
                "status": ticket.status,
                "priority": ticket.priority,
                "team": ticket.team,
                "assignee": ticket.assignee,
                "customer": templates.plain(ticket.customer_addr),
                "customer_name": templates.plain(ticket.customer_name),
            }
        )
    count = len(items)
    if count == 1:
        one = tickets[0]
        summary = (
            f"SLA breached: the {one['clock']} target of ticket {one['reference']} was missed."
            if level == "breach"
            else f"SLA at risk: the {one['clock']} target of ticket {one['reference']}"
            " is close to its deadline."
        )
    else:
        summary = (
            f"SLA breached: {count} tickets missed a target."
            if level == "breach"
            else f"SLA at risk: {count} tickets are close to a deadline."
        )
    return {
        "summary": summary,
        "level": level,
        "count": count,
        "tickets": tickets,
        "more": count - len(tickets),
    }


def sample_context() -> dict[str, Any]:
    """Values of the escalation template's variables, for `templates.check`."""
    ticket = Ticket(
        id=1234,
        subject="Printer on fire",
        priority="high",
        team="frontline",
        customer_addr="customer@example.org",
        customer_name="Carla Customer",
        created_at=datetime(2026, 1, 5, 9, tzinfo=UTC),
        updated_at=datetime(2026, 1, 5, 9, tzinfo=UTC),
        first_response_due=datetime(2026, 1, 5, 13, tzinfo=UTC),
        sla_policy="standard",
    )
    threshold = Threshold("first_response", "breach", datetime(2026, 1, 5, 13, tzinfo=UTC), 0)
    return _escalation_context([(ticket, threshold)], "breach", General(database="sqlite://"))


# -- words ------------------------------------------------------------------------------


def _iso(at: datetime | None) -> str | None:
    return at.isoformat() if at is not None else None


def _words(d: timedelta, *, business: bool) -> str:
    """A duration as a reader says it: "4 business hours", "90 minutes", "7 days"."""
    minutes = max(1, round(d.total_seconds() / 60))
    kind = "business " if business else ""
    if not business and minutes >= 1440 and minutes % 1440 == 0:
        n, unit = minutes // 1440, "day"
    elif minutes % 60 == 0:
        n, unit = minutes // 60, "hour"
    else:
        n, unit = minutes, "minute"
    return f"{n} {kind}{unit}{'' if n == 1 else 's'}"


def duration_words(d: timedelta, *, business: bool) -> str:
    """Public name of the duration wording, for the acknowledgement."""
    return _words(d, business=business)


def offset_label(offset: timedelta | None) -> str:
    """`UTC+01:00`, `UTC-05:30`, `UTC+00:00`."""
    minutes = int((offset or timedelta(0)).total_seconds() // 60)
    sign = "+" if minutes >= 0 else "-"
    return f"UTC{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"


def time_words(at: datetime, tz: tzinfo, *, now: datetime) -> str:
    """`Tuesday 10:00 (UTC+01:00)` in `tz`; the date joins in when a week or more away.

    English day and month names whatever the process locale, like the rest of the text.
    """
    local = at.astimezone(tz)
    day = _DAYS[local.weekday()]
    if (local.date() - now.astimezone(tz).date()).days >= 7:  # the weekday alone is ambiguous
        day = f"{day} {local.day} {_MONTHS[local.month - 1]}"
    return f"{day} {local:%H:%M} ({offset_label(local.utcoffset())})"


def _local_words(at: datetime, zone: ZoneInfo) -> str:
    """`Tuesday 2026-04-07 11:00 (UTC+02:00)`: for agents, who may read it days later."""
    local = at.astimezone(zone)
    return f"{_DAYS[local.weekday()]} {local:%Y-%m-%d %H:%M} ({offset_label(local.utcoffset())})"
