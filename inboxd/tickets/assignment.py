"""Who gets a routed ticket: nobody, the next agent in rotation, or the least loaded.

Round-robin keeps its position in the `team` row and reads it under a row lock
(`SELECT ... FOR UPDATE` on PostgreSQL; SQLite's `BEGIN IMMEDIATE` already serialises
writers), so the rotation stays fair across restarts and across several daemons.
On PostgreSQL the turn is taken in a short transaction of its own (see
`_next_in_rotation`). Least-loaded takes no lock: two writers at the same instant may
pick the same agent, and the next pick, counting again, evens it out.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Connection, bindparam, func
from sqlalchemy import select as sa_select
from sqlalchemy import update as sa_update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlmodel import Session, col, select

from inboxd.db import insert_ignore
from inboxd.models import OPEN_STATUSES, Team, Ticket

STRATEGIES = ("none", "round-robin", "least-loaded")


@dataclass(frozen=True, slots=True)
class TeamSpec:
    name: str
    members: tuple[str, ...]
    strategy: str = "none"


def choose(session: Session, team: TeamSpec, *, strategy: str | None = None) -> str | None:
    """The agent to assign, or None to leave the ticket in the team queue.

    `strategy` (from a routing rule) overrides the team's own; an address assigns
    that agent directly.
    """
    how = strategy or team.strategy
    if how not in STRATEGIES:
        return how.lower()  # an agent address, checked by the rules validator
    if how == "none" or not team.members:
        return None
    if how == "round-robin":
        return _next_in_rotation(session, team)
    if how == "least-loaded":
        return _least_loaded(session, team)
    raise AssertionError(f"unhandled strategy {how!r}")


def _next_in_rotation(session: Session, team: TeamSpec) -> str:
    """The member after the last one, and remember it.

    PostgreSQL: in a transaction of its own, committed at once. Held until the caller
    commits (a batch of 50 mails), the row lock would let two batches that take turns
    in two teams in opposite order deadlock, and one of their mails be quarantined; and
    it would serialise all of a team's batches. The price: a turn taken by a transaction
    that then rolls back is lost, so one agent misses one ticket. SQLite: in the caller's
    transaction; there is only one writer (`BEGIN IMMEDIATE`), so nothing to deadlock
    with, and a second connection could not write anyway.
    """
    bind = session.get_bind()
    if bind.dialect.name == "postgresql":
        with bind.engine.begin() as conn:
            conn.execute(_PG_ADD_TEAM, {"name": team.name, "active": True, "rr_last": None})
            return _take_turn(conn, team)
    insert_ignore(session, Team, [{"name": team.name, "active": True, "rr_last": None}])
    return _take_turn(session.connection(), team)


def _take_turn(conn: Connection, team: TeamSpec) -> str:
    last = conn.execute(_RR_LAST, {"team": team.name}).scalar()
    members = list(team.members)
    nxt = members[(members.index(last) + 1) % len(members)] if last in members else members[0]
    conn.execute(_RR_SET, {"team": team.name, "agent": nxt})
    return nxt


_T = Team.__table__.c  # type: ignore[attr-defined]
# The row lock serialises concurrent assigners on PostgreSQL (SQLite: BEGIN IMMEDIATE).
_RR_LAST = sa_select(_T.rr_last).where(_T.name == bindparam("team")).with_for_update()
_RR_SET = (
    sa_update(Team.__table__)  # type: ignore[attr-defined]
    .where(_T.name == bindparam("team"))
    .values(rr_last=bindparam("agent"))
)
_PG_ADD_TEAM = pg_insert(Team.__table__).on_conflict_do_nothing()  # type: ignore[attr-defined]


def _least_loaded(session: Session, team: TeamSpec) -> str:
    counts = dict(
        session.exec(
            select(Ticket.assignee, func.count())
            .where(col(Ticket.assignee).in_(team.members), col(Ticket.status).in_(OPEN_STATUSES))
            .group_by(Ticket.assignee)
        ).all()
    )
    # Fewest open tickets; ties go to the member listed first, so the choice is stable.
    return min(team.members, key=lambda m: (counts.get(m, 0), team.members.index(m)))
