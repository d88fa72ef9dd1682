"""The agents' queue: live tickets, nearest SLA due first, one indexed page at a time.

The order is `QUEUE_DUE_SQL`, the nearest due of the clocks still racing (what
`clocks.active_due` computes in Python), and the index `ix_ticket_live_due` (migration 0003)
holds exactly that expression and id, for open and pending tickets only. A page is read
in index order and stops at `limit`, so the default queue costs the same with a thousand
tickets ever handled or a million. Queries repeat the expression and the index predicate
(`LIVE_SQL`) verbatim: SQLite uses an expression or partial index only then.

The statements are SQL text with `:name` parameters, run through a `views.Reader`: a bare
`sqlite3` connection for `inboxd ticket list` (no SQLAlchemy import on that path), or a
session. `page`, `count` and `every` are the same queries for callers holding a session.
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from inboxd.tickets.views import (
    TICKET_COLUMNS,
    Reader,
    TicketRow,
    in_list,
    reader,
    ticket_row,
)

if TYPE_CHECKING:
    from sqlmodel import Session

    from inboxd.models import Ticket

DEFAULT_LIMIT = 50
# The vocabulary of a filter; tests/test_agent_cli.py holds these equal to `inboxd.models`
# and `inboxd.tickets.actions`, which the CLI's read path does not import.
STATUSES = ("open", "pending", "resolved", "closed", "merged")
OPEN_STATUSES = ("open", "pending")
PRIORITIES = ("low", "normal", "high", "urgent")
NOBODY = ("nobody", "none", "-")  # spellings of "no assignee"

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
_DUE = f"({QUEUE_DUE_SQL})"


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


@dataclass(frozen=True, slots=True)
class Statement:
    """SQL text and its parameters (`:name`; datetimes bound by the reader)."""

    sql: str
    params: dict[str, Any]


def _in(column: str, prefix: str, values: Sequence[Any], params: dict[str, Any]) -> str:
    if not values:
        return "1 = 0"  # an empty IN matches nothing
    sql, more = in_list(prefix, values)
    params.update(more)
    return f"{column} IN {sql}"


def _conditions(flt: QueueFilter, now: datetime) -> tuple[list[str], dict[str, Any]]:
    where: list[str] = []
    params: dict[str, Any] = {}
    statuses = set(flt.statuses)
    if statuses <= set(OPEN_STATUSES):
        where.append(LIVE_SQL)  # lets ix_ticket_live_due serve the query
    if statuses != set(OPEN_STATUSES) and not statuses >= set(STATUSES):
        where.append(_in("ticket.status", "status_", sorted(statuses), params))
    if flt.teams is not None:
        where.append(_in("ticket.team", "team_", flt.teams, params))
    if flt.unassigned:
        where.append("ticket.assignee IS NULL")
    elif flt.assignee is not None:
        where.append("ticket.assignee = :assignee")
        params["assignee"] = flt.assignee.lower()
    if flt.priorities:
        where.append(_in("ticket.priority", "priority_", flt.priorities, params))
    for i, tag in enumerate(flt.tags):
        where.append(
            "(EXISTS (SELECT * FROM ticket_tag WHERE ticket_tag.ticket_id = ticket.id "  # noqa: S608
            f"AND ticket_tag.tag = :tag_{i}))"
        )
        params[f"tag_{i}"] = tag
    if flt.mailbox is not None:
        where.append(
            "(ticket.mailbox = :mailbox OR (EXISTS (SELECT * FROM message, delivery "
            "WHERE message.ticket_id = ticket.id AND delivery.message_pk = message.id "
            "AND delivery.mailbox = :mailbox)))"
        )
        params["mailbox"] = flt.mailbox
    if flt.breaching:
        # Pending tickets are paused, never breaching; a met target is out of the CASE.
        where.append("ticket.status = 'open'")
        where.append(f"{_DUE} <= :now")
        params["now"] = now
    return where, params


def page_statements(
    flt: QueueFilter, *, now: datetime, limit: int
) -> list[tuple[Statement, Statement | None]]:
    """The statements of a page: per status, (tickets with a due in due order, the others
    by id or None when none can match), each selecting `TICKET_COLUMNS` and `queue_due`.

    One status per statement: with `status = ?` first, ix_ticket_live_due (status, due, id)
    returns rows already in order and stops after `limit`; SQLite's planner, which has no
    statistics, would otherwise prefer ix_ticket_queue (status, team) and sort every live
    ticket of the teams. Statuses outside the queue are one plain statement.
    """
    where, params = _conditions(flt, now)
    live = [s for s in OPEN_STATUSES if s in flt.statuses and not (flt.breaching and s != "open")]
    groups: list[list[str]] = [[f"ticket.status = '{s}'"] for s in live]
    if not set(flt.statuses) <= set(OPEN_STATUSES):
        groups = [[]]
    out: list[tuple[Statement, Statement | None]] = []
    for extra in groups:
        base = f"SELECT {TICKET_COLUMNS}, {_DUE} AS queue_due FROM ticket WHERE " + " AND ".join(  # noqa: S608
            [*where, *extra] or ["1 = 1"]
        )
        with_due = Statement(
            f"{base} AND {_DUE} IS NOT NULL ORDER BY {_DUE}, ticket.id LIMIT :limit",
            {**params, "limit": limit},
        )
        without = Statement(
            f"{base} AND {_DUE} IS NULL ORDER BY ticket.id LIMIT :limit",
            {**params, "limit": limit},
        )
        out.append((with_due, None if flt.breaching else without))
    return out


def page_rows(
    r: Reader, flt: QueueFilter, *, now: datetime, limit: int = DEFAULT_LIMIT
) -> list[TicketRow]:
    """Up to `limit` tickets, nearest due first (overdue ones lead), then those without
    a due, oldest first. Each statement reads at most `limit` rows in index order."""
    if limit <= 0:
        return []
    statements = page_statements(flt, now=now, limit=limit)
    with_due: list[tuple[Any, int, TicketRow]] = []
    for first, _ in statements:
        for row in r.rows(first.sql, first.params):
            t = ticket_row(row)
            # Compared as stored: fixed-format text on SQLite, instants elsewhere.
            with_due.append((row["queue_due"], t.id, t))
    found = [t for _, _, t in heapq.nsmallest(limit, with_due, key=lambda x: (x[0], x[1]))]
    if len(found) < limit:
        rest: list[TicketRow] = []
        for _, second in statements:
            if second is not None:
                params = {**second.params, "limit": limit - len(found)}
                rest += [ticket_row(row) for row in r.rows(second.sql, params)]
        found += sorted(rest, key=lambda t: t.id)[: limit - len(found)]
    return found


def count_rows(r: Reader, flt: QueueFilter, *, now: datetime) -> int:
    """How many tickets the filter matches (the page's "N of M")."""
    where, params = _conditions(flt, now)
    sql = "SELECT count(*) AS n FROM ticket" + (" WHERE " + " AND ".join(where) if where else "")  # noqa: S608
    return int(r.rows(sql, params)[0]["n"])


def every_rows(r: Reader, flt: QueueFilter | None = None, *, now: datetime) -> list[TicketRow]:
    """Every ticket the filter matches (default: all of them), by number, unpaginated."""
    where, params = _conditions(flt, now) if flt is not None else ([], {})
    sql = f"SELECT {TICKET_COLUMNS} FROM ticket"  # noqa: S608
    if where:
        sql += " WHERE " + " AND ".join(where)
    return [ticket_row(row) for row in r.rows(sql + " ORDER BY ticket.id", params)]


# -- the same queries for callers holding a session, as ORM tickets ---------------------


def _tickets(session: Session, rows: Sequence[TicketRow]) -> list[Ticket]:
    from sqlmodel import col, select

    from inboxd.models import Ticket

    by_id: dict[int, Ticket] = {}
    ids = [t.id for t in rows]
    for start in range(0, len(ids), 500):
        chunk = ids[start : start + 500]
        for t in session.exec(select(Ticket).where(col(Ticket.id).in_(chunk))).all():
            by_id[t.id or 0] = t
    return [by_id[i] for i in ids if i in by_id]


def page(
    session: Session, flt: QueueFilter, *, now: datetime, limit: int = DEFAULT_LIMIT
) -> list[Ticket]:
    """`page_rows` as ORM tickets."""
    return _tickets(session, page_rows(reader(session), flt, now=now, limit=limit))


def count(session: Session, flt: QueueFilter, *, now: datetime) -> int:
    """`count_rows` in the session's transaction."""
    return count_rows(reader(session), flt, now=now)


def every(session: Session, flt: QueueFilter | None = None, *, now: datetime) -> list[Ticket]:
    """`every_rows` as ORM tickets."""
    return _tickets(session, every_rows(reader(session), flt, now=now))


def page_queries(flt: QueueFilter, *, now: datetime, limit: int) -> list[tuple[Any, Any | None]]:
    """`page_statements` as SQLAlchemy text clauses (to compile them, e.g. for a plan)."""
    from sqlalchemy import bindparam, text

    from inboxd.db import UTCDateTime

    def clause(st: Statement) -> Any:
        binds = [
            bindparam(k, v, type_=UTCDateTime) if isinstance(v, datetime) else bindparam(k, v)
            for k, v in st.params.items()
        ]
        return text(st.sql).bindparams(*binds)

    return [
        (clause(a), None if b is None else clause(b))
        for a, b in page_statements(flt, now=now, limit=limit)
    ]
