"""A ticket's SLA clocks read from its stored instants: thresholds, state, nearest due.

Pure functions over attributes, importing nothing heavy: `inboxd.tickets.sla` (which
sets the clocks and runs the sweep) and the agent CLI's read path (`views`, which must
not load SQLAlchemy or the config models) share them, so the state the queue shows is
the state the sweep acts on.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal, NamedTuple, Protocol

ClockName = Literal["first_response", "next_response", "resolution"]
Level = Literal["warning", "breach"]
State = Literal["ok", "warning", "breached", "paused", "met"]
CLOCKS: tuple[ClockName, ...] = ("first_response", "next_response", "resolution")
LIVE = ("open", "pending")  # statuses whose clocks run (pending: paused)
DONE = ("resolved", "closed")


class Threshold(NamedTuple):
    """One instant a clock crosses: its warning or its breach, in one cycle.

    A named tuple: the sweep builds a few per due ticket, thousands in a burst.
    """

    clock: ClockName
    level: Level
    at: datetime
    cycle: int

    @property
    def marker(self) -> str:
        return f"{self.clock}:{self.level}:{self.cycle}"


class ClockFields(Protocol):
    """What reading the clocks needs of a ticket: a `Ticket`, a sweep row or a read row."""

    status: str
    sla_policy: str | None
    first_response_at: datetime | None
    resolved_at: datetime | None
    sla_fired: list[str]
    first_response_warn_at: datetime | None
    first_response_due: datetime | None
    next_response_warn_at: datetime | None
    next_response_due: datetime | None
    next_response_cycle: int
    resolution_warn_at: datetime | None
    resolution_due: datetime | None
    resolution_cycle: int


def instants(ticket: ClockFields, clock: ClockName) -> tuple[datetime | None, datetime | None, int]:
    """(warning instant, due instant, cycle) of one clock."""
    if clock == "first_response":
        return ticket.first_response_warn_at, ticket.first_response_due, 0
    if clock == "next_response":
        return ticket.next_response_warn_at, ticket.next_response_due, ticket.next_response_cycle
    return ticket.resolution_warn_at, ticket.resolution_due, ticket.resolution_cycle


def running(ticket: ClockFields, clock: ClockName) -> bool:
    """Whether this clock still races (paused ones included): its target is not met yet."""
    if ticket.status not in LIVE or instants(ticket, clock)[1] is None:
        return False
    return clock != "first_response" or ticket.first_response_at is None


_CLOCK_ORDER = {clock: i for i, clock in enumerate(CLOCKS)}


def thresholds(ticket: ClockFields) -> list[Threshold]:
    """Every threshold of the running clocks' current cycles, earliest first."""
    if ticket.status not in LIVE:
        return []
    out: list[Threshold] = []
    # Each attribute read once: the sweep calls this for every due ticket, twice.
    clocks: list[tuple[ClockName, datetime | None, datetime | None]] = [
        ("next_response", ticket.next_response_warn_at, ticket.next_response_due),
        ("resolution", ticket.resolution_warn_at, ticket.resolution_due),
    ]
    if ticket.first_response_at is None:
        clocks.append(("first_response", ticket.first_response_warn_at, ticket.first_response_due))
    for clock, warn, due in clocks:
        if due is None:
            continue
        cycle = (
            ticket.next_response_cycle
            if clock == "next_response"
            else ticket.resolution_cycle
            if clock == "resolution"
            else 0
        )
        if warn is not None:
            out.append(Threshold(clock, "warning", warn, cycle))
        out.append(Threshold(clock, "breach", due, cycle))
    out.sort(key=lambda t: (t.at, t.level == "breach", _CLOCK_ORDER[t.clock]))
    return out


def active_due(ticket: ClockFields) -> datetime | None:
    """The nearest deadline of the clocks still racing (paused ones included)."""
    dues = [instants(ticket, c)[1] for c in CLOCKS if running(ticket, c)]
    return min((d for d in dues if d is not None), default=None)


def sla_state(ticket: ClockFields, now: datetime) -> State | None:
    """ok | warning | breached | paused | met, or None when no SLA applies (or merged).

    breached: a target of a current cycle was missed (fired, met late, or past due now);
    met: resolved or closed without that; paused: pending; warning: a running clock
    passed its warning instant.
    """
    if ticket.sla_policy is None or ticket.status == "merged":
        return None
    if ticket.status == "pending":
        return "paused"
    fired = set(ticket.sla_fired)
    if any(f"{c}:breach:{instants(ticket, c)[2]}" in fired for c in CLOCKS):
        return "breached"
    late = [
        (ticket.first_response_at, ticket.first_response_due),
        (ticket.resolved_at if ticket.status in DONE else None, ticket.resolution_due),
    ]
    if any(at is not None and due is not None and at > due for at, due in late):
        return "breached"
    live = thresholds(ticket)
    if any(t.level == "breach" and now >= t.at for t in live):
        return "breached"
    if ticket.status in DONE:
        return "met"
    if any(t.level == "warning" and (now >= t.at or t.marker in fired) for t in live):
        return "warning"
    return "ok"
