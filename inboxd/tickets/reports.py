"""Support metrics over a window: what a support lead reads on Monday morning.

The cohort is every ticket created in the window (`since <= created_at < until`), merged
ones left out (their mail counts in the ticket they went into). Over it:

* created: how many;
* first response time: `first_response_at - created_at` of the answered ones; wall clock
  and business time of the ticket's SLA policy calendar (24x7 without a policy);
* resolution time: `resolved_at - created_at` of the resolved and closed ones, the same
  two ways;
* SLA compliance per target, of the tickets with a due time whose outcome is known:
  met when the target was reached by the due instant, breached when reached late or
  not reached and past due at `until`; tickets still inside their target are counted
  in neither;
* reopen rate: tickets reopened at least once, of those resolved at least once;
* first-contact resolution: resolved tickets with exactly one agent reply, of the
  resolved ones (an agent reply is an outgoing message with an author: not the ack,
  not the survey);
* CSAT: good and bad answers, and the share of good;
* backlog: every ticket open or pending at `until`, whenever created, by age.

Medians are the middle value (the mean of the two middle ones for an even count); p90 is
the nearest rank (the smallest value at least 90 % of the values are at or below), so
it is always a duration that really happened. Counting is done in SQL; percentiles in
Python over the window's durations.
"""

from __future__ import annotations

import csv
import io
import math
import statistics
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal, get_args

from sqlalchemy import case, func, literal
from sqlmodel import Session, col, select

from inboxd.models import OPEN_STATUSES, Message, Ticket
from inboxd.tickets import sla
from inboxd.tickets.calendar import BusinessCalendar

if TYPE_CHECKING:
    from inboxd.config import Settings

__all__ = [
    "BUCKETS",
    "DIMENSIONS",
    "Durations",
    "GroupReport",
    "Rate",
    "Report",
    "compute",
    "csv_text",
    "median",
    "p90",
]

Dimension = Literal["team", "agent", "mailbox", "category"]
DIMENSIONS: tuple[Dimension, ...] = get_args(Dimension)
_NONE_LABEL = {"team": "(no team)", "agent": "(unassigned)", "mailbox": "(none)"}
_NONE_LABEL["category"] = "(none)"
TOTAL = "(all)"
DAY = timedelta(days=1)
# Backlog age buckets: [lower, upper) ages.
BUCKETS: tuple[tuple[str, timedelta, timedelta | None], ...] = (
    ("<1d", timedelta(0), DAY),
    ("1-3d", DAY, 3 * DAY),
    ("3-7d", 3 * DAY, 7 * DAY),
    (">7d", 7 * DAY, None),
)
DONE = ("resolved", "closed")


# -- statistics ---------------------------------------------------------------------


def median(values: Sequence[float]) -> float | None:
    return float(statistics.median(values)) if values else None


def p90(values: Sequence[float]) -> float | None:
    """Nearest-rank 90th percentile."""
    if not values:
        return None
    ordered = sorted(values)
    return float(ordered[max(0, math.ceil(0.9 * len(ordered)) - 1)])


@dataclass(frozen=True, slots=True)
class Durations:
    """Wall-clock and business-time seconds of one measure (first response, resolution)."""

    wall_s: tuple[float, ...] = ()
    business_s: tuple[float, ...] = ()

    @property
    def count(self) -> int:
        return len(self.wall_s)

    def to_dict(self) -> dict[str, Any]:
        return {
            "count": self.count,
            "median_s": _round(median(self.wall_s)),
            "p90_s": _round(p90(self.wall_s)),
            "business_median_s": _round(median(self.business_s)),
            "business_p90_s": _round(p90(self.business_s)),
        }


@dataclass(frozen=True, slots=True)
class Rate:
    """`hits` out of `total`; `pct` is None when there is nothing to divide by."""

    hits: int = 0
    total: int = 0

    @property
    def pct(self) -> float | None:
        return round(100.0 * self.hits / self.total, 1) if self.total else None


def _round(value: float | None) -> int | None:
    return None if value is None else round(value)


# -- the report ---------------------------------------------------------------------


@dataclass
class GroupReport:
    """Every measure for one group (a team, an agent, ...) or for all tickets."""

    key: str
    created: int = 0
    first_response: Durations = Durations()
    resolution: Durations = Durations()
    sla_first_response: Rate = Rate()  # hits: met; total: met + breached
    sla_resolution: Rate = Rate()
    reopened: Rate = Rate()  # hits: reopened; total: resolved at least once
    fcr: Rate = Rate()  # hits: one agent reply; total: resolved
    csat: Rate = Rate()  # hits: good; total: good + bad
    backlog: dict[str, int] = field(default_factory=lambda: {b[0]: 0 for b in BUCKETS})

    @property
    def backlog_total(self) -> int:
        return sum(self.backlog.values())

    def to_dict(self) -> dict[str, Any]:
        def compliance(rate: Rate) -> dict[str, Any]:
            return {"met": rate.hits, "breached": rate.total - rate.hits, "pct": rate.pct}

        return {
            "key": self.key,
            "created": self.created,
            "first_response": self.first_response.to_dict(),
            "resolution": self.resolution.to_dict(),
            "sla": {
                "first_response": compliance(self.sla_first_response),
                "resolution": compliance(self.sla_resolution),
            },
            "reopen": {
                "reopened": self.reopened.hits,
                "resolved": self.reopened.total,
                "pct": self.reopened.pct,
            },
            "fcr": {"one_reply": self.fcr.hits, "resolved": self.fcr.total, "pct": self.fcr.pct},
            "csat": {
                "good": self.csat.hits,
                "bad": self.csat.total - self.csat.hits,
                "pct": self.csat.pct,
            },
            "backlog": {**self.backlog, "total": self.backlog_total},
        }


@dataclass
class Report:
    since: datetime
    until: datetime
    by: Dimension | None
    total: GroupReport
    groups: list[GroupReport]  # empty when not grouped; ordered by volume, then key

    def to_dict(self) -> dict[str, Any]:
        return {
            "since": self.since.isoformat(),
            "until": self.until.isoformat(),
            "by": self.by,
            "total": self.total.to_dict(),
            "groups": [g.to_dict() for g in self.groups],
        }


@dataclass(frozen=True, slots=True)
class _Row:
    """The columns of a cohort ticket the measures need."""

    id: int
    key: str
    created_at: datetime
    first_response_at: datetime | None
    first_response_due: datetime | None
    resolved_at: datetime | None
    resolution_due: datetime | None
    status: str
    reopened: int
    csat: str | None
    sla_policy: str | None


def _key_column(by: Dimension | None) -> Any:
    return {
        "team": col(Ticket.team),
        "agent": col(Ticket.assignee),
        "mailbox": col(Ticket.mailbox),
        "category": col(Ticket.category),
        None: None,
    }[by]


def _label(by: Dimension | None, value: str | None) -> str:
    if by is None:
        return TOTAL
    return value if value else _NONE_LABEL[by]


def compute(
    session: Session,
    *,
    settings: Settings,
    since: datetime,
    now: datetime,
    by: Dimension | None = None,
) -> Report:
    """The report for tickets created in `[since, now)`, optionally grouped. Reads only."""
    if by is not None and by not in DIMENSIONS:
        raise ValueError(f"unknown dimension {by!r}")
    key = _key_column(by)
    in_window = (
        col(Ticket.created_at) >= since,
        col(Ticket.created_at) < now,
        col(Ticket.status) != "merged",
    )
    columns = (
        col(Ticket.id),
        col(Ticket.created_at),
        col(Ticket.first_response_at),
        col(Ticket.first_response_due),
        col(Ticket.resolved_at),
        col(Ticket.resolution_due),
        col(Ticket.status),
        col(Ticket.reopened),
        col(Ticket.csat),
        col(Ticket.sla_policy),
    )
    rows = [
        _Row(r[0], _label(by, r[-1] if key is not None else None), *r[1:10])
        for r in session.exec(
            # sqlmodel's select() is typed for at most 4 columns
            select(*columns, *([key] if key is not None else [])).where(*in_window)  # type: ignore[call-overload]
        ).all()
    ]
    replies = _agent_replies(session, in_window)
    backlog = _backlog(session, key, by, now)

    calendar_of = _calendars(settings)
    groups: dict[str, list[_Row]] = defaultdict(list)
    for row in rows:
        groups[row.key].append(row)
    total = _measure(TOTAL, rows, replies, calendar_of, now)
    for counts in backlog.values():
        for bucket, n in counts.items():
            total.backlog[bucket] += n
    reports: list[GroupReport] = []
    if by is not None:
        for name in sorted(set(groups) | set(backlog)):
            group = _measure(name, groups.get(name, []), replies, calendar_of, now)
            group.backlog.update(backlog.get(name, {}))
            reports.append(group)
        reports.sort(key=lambda g: (-g.created, -g.backlog_total))  # stable: then by name
    return Report(since=since, until=now, by=by, total=total, groups=reports)


def _agent_replies(session: Session, in_window: Iterable[Any]) -> dict[int, int]:
    """Agent replies per cohort ticket (outgoing messages with an author)."""
    ticket_id = col(Message.ticket_id)
    rows = session.exec(
        select(ticket_id, func.count(col(Message.id)))
        .join(Ticket, col(Ticket.id) == ticket_id)
        .where(*in_window)
        .where(col(Message.direction) == "out", col(Message.author).is_not(None))
        .group_by(ticket_id)
    ).all()
    return {int(t): int(n) for t, n in rows if t is not None}


def _backlog(
    session: Session, key: Any, by: Dimension | None, now: datetime
) -> dict[str, dict[str, int]]:
    """Open and pending tickets now, per group label and age bucket (counted in SQL)."""
    created = col(Ticket.created_at)
    bucket = case(
        *[(created > now - upper, name) for name, _, upper in BUCKETS if upper is not None],
        else_=BUCKETS[-1][0],
    )
    group = key if key is not None else literal("")
    # Group by the subquery's columns: PostgreSQL would not see two renderings of the
    # CASE (each with its own bound parameters) as the same expression.
    aged = (
        select(group.label("grp"), bucket.label("bucket"))
        .where(col(Ticket.status).in_(OPEN_STATUSES))
        .subquery("aged")
    )
    rows = session.exec(
        select(aged.c.grp, aged.c.bucket, func.count()).group_by(aged.c.grp, aged.c.bucket)
    ).all()
    out: dict[str, dict[str, int]] = defaultdict(dict)
    for value, name, count in rows:
        out[_label(by, value)][name] = int(count)
    return out


def _calendars(settings: Settings) -> Callable[[str | None], BusinessCalendar]:
    """The business calendar of an SLA policy, 24x7 when there is none (cached)."""
    cache: dict[str | None, BusinessCalendar] = {}

    def calendar_of(policy: str | None) -> BusinessCalendar:
        found = cache.get(policy)
        if found is None:
            resolved = sla.resolve(settings, policy)
            found = cache[policy] = resolved[1] if resolved else BusinessCalendar.always()
        return found

    return calendar_of


def _measure(
    name: str,
    rows: Sequence[_Row],
    replies: dict[int, int],
    calendar_of: Callable[[str | None], BusinessCalendar],
    now: datetime,
) -> GroupReport:
    first_wall: list[float] = []
    first_business: list[float] = []
    done_wall: list[float] = []
    done_business: list[float] = []
    fr_met = fr_total = res_met = res_total = 0
    reopened = ever_resolved = one_reply = resolved = good = answered = 0
    for r in rows:
        cal = calendar_of(r.sla_policy)
        if r.first_response_at is not None:
            first_wall.append((r.first_response_at - r.created_at).total_seconds())
            first_business.append(cal.elapsed(r.created_at, r.first_response_at).total_seconds())
        is_resolved = r.resolved_at is not None and r.status in DONE
        if is_resolved:
            assert r.resolved_at is not None
            done_wall.append((r.resolved_at - r.created_at).total_seconds())
            done_business.append(cal.elapsed(r.created_at, r.resolved_at).total_seconds())
            resolved += 1
            one_reply += replies.get(r.id, 0) == 1
        outcome = _sla_outcome(r.first_response_at, r.first_response_due, now)
        if outcome is not None:
            fr_total += 1
            fr_met += outcome
        outcome = _sla_outcome(r.resolved_at if is_resolved else None, r.resolution_due, now)
        if outcome is not None:
            res_total += 1
            res_met += outcome
        if is_resolved or r.reopened > 0:
            ever_resolved += 1
            reopened += r.reopened > 0
        if r.csat in ("good", "bad"):
            answered += 1
            good += r.csat == "good"
    return GroupReport(
        key=name,
        created=len(rows),
        first_response=Durations(tuple(first_wall), tuple(first_business)),
        resolution=Durations(tuple(done_wall), tuple(done_business)),
        sla_first_response=Rate(fr_met, fr_total),
        sla_resolution=Rate(res_met, res_total),
        reopened=Rate(reopened, ever_resolved),
        fcr=Rate(one_reply, resolved),
        csat=Rate(good, answered),
    )


def _sla_outcome(reached: datetime | None, due: datetime | None, now: datetime) -> bool | None:
    """True met, False breached, None no target or still running."""
    if due is None:
        return None
    if reached is not None:
        return reached <= due
    return False if now > due else None


# -- CSV ----------------------------------------------------------------------------

CSV_COLUMNS = (
    "group",
    "created",
    "first_response_count",
    "first_response_median_s",
    "first_response_p90_s",
    "first_response_business_median_s",
    "first_response_business_p90_s",
    "resolution_count",
    "resolution_median_s",
    "resolution_p90_s",
    "resolution_business_median_s",
    "resolution_business_p90_s",
    "sla_first_response_met",
    "sla_first_response_breached",
    "sla_first_response_pct",
    "sla_resolution_met",
    "sla_resolution_breached",
    "sla_resolution_pct",
    "reopened",
    "reopen_base",
    "reopen_pct",
    "fcr",
    "fcr_base",
    "fcr_pct",
    "csat_good",
    "csat_bad",
    "csat_pct",
    "backlog_lt_1d",
    "backlog_1_3d",
    "backlog_3_7d",
    "backlog_gt_7d",
    "backlog_total",
)


def csv_row(group: GroupReport) -> list[Any]:
    d = group.to_dict()
    fr, res, s = d["first_response"], d["resolution"], d["sla"]
    return [
        group.key,
        group.created,
        *(fr[k] for k in ("count", "median_s", "p90_s", "business_median_s", "business_p90_s")),
        *(res[k] for k in ("count", "median_s", "p90_s", "business_median_s", "business_p90_s")),
        *(s["first_response"][k] for k in ("met", "breached", "pct")),
        *(s["resolution"][k] for k in ("met", "breached", "pct")),
        *(d["reopen"][k] for k in ("reopened", "resolved", "pct")),
        *(d["fcr"][k] for k in ("one_reply", "resolved", "pct")),
        *(d["csat"][k] for k in ("good", "bad", "pct")),
        *(group.backlog[b[0]] for b in BUCKETS),
        group.backlog_total,
    ]


def csv_text(report: Report) -> str:
    """One header line, one line per group, then the `(all)` line; empty cells for n/a."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for group in [*report.groups, report.total]:
        writer.writerow(["" if v is None else v for v in csv_row(group)])
    return out.getvalue()
