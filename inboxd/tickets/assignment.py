"""Who gets a routed ticket: nobody, the next agent in rotation, or the least loaded.

Round-robin keeps its position in the `team` row and reads it under a row lock
(`SELECT ... FOR UPDATE` on PostgreSQL; SQLite's `BEGIN IMMEDIATE` already serialises
writers), so the rotation stays fair across restarts and across several daemons.
On PostgreSQL the turn is taken in a short transaction of its own (see
`_next_in_rotation`).

Least-loaded counts open tickets. On SQLite it reads the counts that triggers keep in
`agent_load` (migration 0005), in the writer's transaction, which `BEGIN IMMEDIATE`
serialises: nothing to add. On PostgreSQL
two daemons counting at once would not see each other's new, uncommitted tickets and
could both pick the same agent; `_least_loaded_pg` closes that gap without holding a
lock until the caller commits (see there).
"""

from __future__ import annotations

import hashlib
import itertools
from collections import Counter
from dataclasses import dataclass

from sqlalchemy import Connection, bindparam, func, text
from sqlalchemy import select as sa_select
from sqlalchemy import update as sa_update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlmodel import Session, col, select

from inboxd.db import Prepared, insert_ignore
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
    commits (a batch of 200 mails), the row lock would let two batches that take turns
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
    found = _RR_LAST_SQLITE.rows(session, {"team": team.name})
    if not found:  # the team's first round-robin ticket
        insert_ignore(session, Team, [{"name": team.name, "active": True, "rr_last": None}])
    nxt = _after(team, found[0][0] if found else None)
    _RR_SET_SQLITE.rows(session, {"team": team.name, "agent": nxt})
    return nxt


def _after(team: TeamSpec, last: str | None) -> str:
    members = list(team.members)
    return members[(members.index(last) + 1) % len(members)] if last in members else members[0]


def _take_turn(conn: Connection, team: TeamSpec) -> str:
    nxt = _after(team, conn.execute(_RR_LAST, {"team": team.name}).scalar())
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
# SQLite, every new ticket of a round-robin team: prepared (see `db.Prepared`).
_RR_LAST_SQLITE = Prepared(sa_select(_T.rr_last).where(_T.name == bindparam("team")))
_RR_SET_SQLITE = Prepared(_RR_SET)
_PG_ADD_TEAM = pg_insert(Team.__table__).on_conflict_do_nothing()  # type: ignore[attr-defined]


def _least_loaded(session: Session, team: TeamSpec) -> str:
    """The member with the fewest open tickets; ties go to the member listed first."""
    if session.get_bind().dialect.name == "postgresql":
        return _least_loaded_pg(session, team)
    return _fewest(team, _kept_counts(session, team))


def _kept_counts(session: Session, team: TeamSpec) -> Counter[str]:
    """SQLite: open tickets per member from `agent_load`, which triggers keep in step with
    `ticket` (migration 0005), as the caller's transaction sees them."""
    if session.new or session.dirty or session.deleted:
        session.flush()  # a status changed in memory moves the counts once written
    members = set(team.members)
    return Counter({a: n for a, n in _AGENT_LOAD.rows(session, {}) if a in members})


# One row per agent ever assigned: a few hundred at most, read whole.
_AGENT_LOAD = Prepared(text("SELECT assignee, open FROM agent_load"))


def _open_counts(session: Session, team: TeamSpec) -> Counter[str]:
    """Open tickets per member, as the caller's transaction sees them (its own new
    tickets included: `session.exec` flushes pending changes first)."""
    rows = session.exec(
        select(Ticket.assignee, func.count())
        .where(col(Ticket.assignee).in_(team.members), col(Ticket.status).in_(OPEN_STATUSES))
        .group_by(Ticket.assignee)
    ).all()
    return Counter({assignee: n for assignee, n in rows if assignee is not None})


def _fewest(team: TeamSpec, counts: Counter[str]) -> str:
    # Ties go to the member listed first, so the choice is stable.
    return min(team.members, key=lambda m: (counts[m], team.members.index(m)))


def _least_loaded_pg(session: Session, team: TeamSpec) -> str:
    """Least-loaded on PostgreSQL, safe against concurrent writers.

    Every pick is announced by a shared transaction-level advisory lock that the
    picking transaction holds until it ends: keyed (team and agent, pick number), so
    `pg_locks` lists one row per pick not yet committed, however many a batch makes.
    A pick counts open tickets as its transaction sees them plus the picks other
    transactions still hold. Picks of a team are serialised by the team row's lock,
    taken in a short transaction of its own and released as soon as this pick is
    announced: no lock waits for the caller's commit, so batches never wait on one
    another nor deadlock across teams (the reason given in `_next_in_rotation`).

    Exactly once: PostgreSQL makes a commit visible before it releases the committing
    transaction's locks, and the locks are read before the tickets, so a pick whose
    transaction commits meanwhile is counted twice at worst (a harmless overestimate),
    never missed. A transaction that rolls back releases its picks with it.
    """
    keys = {_pick_key(team.name, m): m for m in team.members}
    with session.get_bind().engine.begin() as mutex:
        mutex.execute(_PG_ADD_TEAM, {"name": team.name, "active": True, "rr_last": None})
        mutex.execute(_TEAM_LOCK, {"team": team.name})
        conn = session.connection()
        pending = conn.execute(_PENDING_PICKS, {"keys": list(keys)}).all()
        counts = _open_counts(session, team)
        for key, n in pending:
            counts[keys[int(key)]] += n
        agent = _fewest(team, counts)
        key = _pick_key(team.name, agent)
        signed = key - 2**32 if key >= 2**31 else key  # the int4 pg_locks shows unsigned
        conn.execute(_ANNOUNCE_PICK, {"key": signed, "pick": _next_pick()})
    return agent


def _pick_key(team: str, agent: str) -> int:
    """A stable 32-bit advisory lock key for (team, agent); a collision only overcounts.

    Unsigned, as `pg_locks.classid` shows it.
    """
    digest = hashlib.blake2b(f"inboxd-pick\0{team}\0{agent}".encode(), digest_size=4)
    return int.from_bytes(digest.digest(), "big")


_pick_numbers = itertools.count()


def _next_pick() -> int:
    """Distinct second keys within a transaction, so every pick is a row in pg_locks."""
    return next(_pick_numbers) % 2**31


_TEAM_LOCK = sa_select(_T.name).where(_T.name == bindparam("team")).with_for_update()
# Other transactions' announced picks in this database (ours are in our own tickets).
_PENDING_PICKS = text(
    "SELECT classid::bigint AS key, count(*) FROM pg_locks "
    "WHERE locktype = 'advisory' AND objsubid = 2 AND granted "
    "AND database = (SELECT oid FROM pg_database WHERE datname = current_database()) "
    "AND pid <> pg_backend_pid() AND classid::bigint = ANY(:keys) "
    "GROUP BY classid"
)
_ANNOUNCE_PICK = text(
    "SELECT pg_advisory_xact_lock_shared(CAST(:key AS integer), CAST(:pick AS integer))"
)
