"""The agents' queue: live tickets, nearest SLA due first, one indexed page at a time.

The order is `QUEUE_DUE_SQL`, the nearest due of the clocks still racing (what
`sla.active_due` computes in Python), and the index `ix_ticket_live_due` (migration 0003)
holds exactly that expression and id, for open and pending tickets only. A page is read
in index order and stops at `limit`, so the default queue costs the same with a thousand
tickets ever handled or a million. Queries repeat the expression and the index predicate
(`LIVE_SQL`) verbatim: SQLite uses an expression or partial index only then.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import exists, func, literal_column, or_, text
from sqlmodel import Session, col, select

from inboxd.db import UTCDateTime
from inboxd.models import (
    OPEN_STATUSES,
    STATUSES,
    Delivery,
    Message,
    Ticket,
    TicketTag,
)

DEFAULT_LIMIT = 50
# Verbatim the expression and predicate of ix_ticket_live_due (a test holds them equal).
_FIRST = "(CASE WHEN first_response_at IS NULL THEN first_response_due END)"
QUEUE_DUE_SQL = (
    "CASE"
    f" WHEN {_FIRST} IS NOT NULL AND (next_response_due IS NULL OR {_FIRST} <= next_response_due)"
    f" AND (resolution_due IS NULL OR {_FIRST} <= resolution_due) THEN {_FIRST}"
    " WHEN next_response_due IS NOT NULL"
    " AND (resolution_due IS NULL OR next_response_due <= resolution_due) THEN next_response_due"
    " ELSE resolution_due END"
)
LIVE_SQL = "status IN ('open', 'pending')"
QUEUE_DUE = literal_column(f"({QUEUE_DUE_SQL})", UTCDateTime)


@dataclass(frozen=True, slots=True)
class QueueFilter:
    """Which tickets a queue shows; every field narrows it (None or empty: no condition)."""

    statuses: tuple[str, ...] = OPEN_STATUSES
    teams: tuple[str, ...] | None = None
    assignee: str | None = None  # an agent address
    unassigned: bool = False  # nobody's tickets only
    priorities: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()  # every one of them
    mailbox: str | None = None  # came in through, or reached, this mailbox
    breaching: bool = False  # open and past the nearest due now


def _conditions(flt: QueueFilter, now: datetime) -> list[Any]:
    where: list[Any] = []
    statuses = set(flt.statuses)
    if statuses <= set(OPEN_STATUSES):
        where.append(text(LIVE_SQL))  # lets ix_ticket_live_due serve the query
    if statuses != set(OPEN_STATUSES) and not statuses >= set(STATUSES):
        where.append(col(Ticket.status).in_(sorted(statuses)))
    if flt.teams is not None:
        where.append(col(Ticket.team).in_(flt.teams))
    if flt.unassigned:
        where.append(col(Ticket.assignee).is_(None))
    elif flt.assignee is not None:
        where.append(col(Ticket.assignee) == flt.assignee.lower())
    if flt.priorities:
        where.append(col(Ticket.priority).in_(flt.priorities))
    for tag in flt.tags:
        where.append(
            exists().where(col(TicketTag.ticket_id) == col(Ticket.id), col(TicketTag.tag) == tag)
        )
    if flt.mailbox is not None:
        reached = (
            exists()
            .where(col(Message.ticket_id) == col(Ticket.id))
            .where(col(Delivery.message_pk) == col(Message.id))
            .where(col(Delivery.mailbox) == flt.mailbox)
        )
        where.append(or_(col(Ticket.mailbox) == flt.mailbox, reached))
    if flt.breaching:
        # Pending tickets are paused, never breaching; a met target is out of the CASE.
        due = QUEUE_DUE
        where.append(col(Ticket.status) == "open")
        where.append(due <= now)
    return where


def page_queries(flt: QueueFilter, *, now: datetime, limit: int) -> list[tuple[Any, Any | None]]:
    """The statements of a page: per status, (tickets with a due in due order, the others
    by id or None when none can match), each selecting (Ticket, due).

    One status per statement: with `status = ?` first, ix_ticket_live_due (status, due, id)
    returns rows already in order and stops after `limit`; SQLite's planner, which has no
    statistics, would otherwise prefer ix_ticket_queue (status, team) and sort every live
    ticket of the teams. Statuses outside the queue are one plain statement.
    """
    where = _conditions(flt, now)
    due = QUEUE_DUE
    live = [s for s in OPEN_STATUSES if s in flt.statuses and not (flt.breaching and s != "open")]
    groups: list[list[Any]] = [[col(Ticket.status) == s] for s in live]
    if not set(flt.statuses) <= set(OPEN_STATUSES):
        groups = [[]]
    out: list[tuple[Any, Any | None]] = []
    for extra in groups:
        base = select(Ticket, due).where(*where, *extra)
        with_due = base.where(due.is_not(None)).order_by(due, col(Ticket.id)).limit(limit)
        without = base.where(due.is_(None)).order_by(col(Ticket.id)).limit(limit)
        out.append((with_due, None if flt.breaching else without))
    return out


def page(
    session: Session, flt: QueueFilter, *, now: datetime, limit: int = DEFAULT_LIMIT
) -> list[Ticket]:
    """Up to `limit` tickets, nearest due first (overdue ones lead), then those without
    a due, oldest first. Each statement reads at most `limit` rows in index order."""
    if limit <= 0:
        return []
    queries = page_queries(flt, now=now, limit=limit)
    with_due: list[tuple[datetime, int, Ticket]] = []
    for first, _ in queries:
        with_due += [(d, t.id or 0, t) for t, d in session.exec(first).all()]
    found = [t for _, _, t in heapq.nsmallest(limit, with_due, key=lambda r: (r[0], r[1]))]
    if len(found) < limit:
        rest: list[Ticket] = []
        for _, second in queries:
            if second is not None:
                rest += [t for t, _ in session.exec(second.limit(limit - len(found))).all()]
        found += sorted(rest, key=lambda t: t.id or 0)[: limit - len(found)]
    return found


def count(session: Session, flt: QueueFilter, *, now: datetime) -> int:
    """How many tickets the filter matches (the page's "N of M")."""
    where = _conditions(flt, now)
    return int(session.exec(select(func.count()).select_from(Ticket).where(*where)).one())


def every(session: Session, flt: QueueFilter | None = None, *, now: datetime) -> list[Ticket]:
    """Every ticket the filter matches (default: all of them), by number, unpaginated."""
    query = select(Ticket).order_by(col(Ticket.id))
    if flt is not None:
        query = query.where(*_conditions(flt, now))
    return list(session.exec(query).all())
