"""Intake cost must not grow with history: how least-loaded assignment counts.

`bench/history.py` measures the rate; these tests pin the schema it depends on: the
covering index PostgreSQL counts from, and the per-agent counts SQLite's triggers keep.
"""

from __future__ import annotations

import sqlite3
import warnings
from datetime import UTC, datetime

import sqlalchemy
from conftest import Database
from sqlalchemy import Engine, insert
from sqlmodel import Session

from inboxd.db import session_scope
from inboxd.models import Ticket
from inboxd.tickets import assignment


def _ticket_indexes(engine: Engine) -> dict[str, list[str]]:
    with warnings.catch_warnings():  # SQLite cannot reflect the expression index of 0003
        warnings.simplefilter("ignore", sqlalchemy.exc.SAWarning)
        found = sqlalchemy.inspect(engine).get_indexes("ticket")
    return {ix["name"]: list(ix["column_names"]) for ix in found if ix["name"]}


def test_open_tickets_per_agent_are_indexed(database: Database) -> None:
    indexes = _ticket_indexes(database.engine)
    assert indexes["ix_ticket_assignee_status"] == ["assignee", "status"]
    assert "ix_ticket_assignee" not in indexes  # the composite index serves its lookups


def test_upgrade_from_0003_replaces_the_assignee_index(database: Database) -> None:
    """A database made before revision 0004 gets the index, and keeps its tickets."""
    from alembic import command

    from inboxd.db import _alembic_config, current_revision, head_revision, upgrade

    cfg = _alembic_config(database.url)
    command.downgrade(cfg, "0003")
    assert "ix_ticket_assignee" in _ticket_indexes(database.engine)
    assert "ix_ticket_assignee_status" not in _ticket_indexes(database.engine)
    _add_tickets(database.engine, [("ann@example.com", "open")])

    upgrade(database.url)

    assert current_revision(database.engine) == head_revision()
    assert _ticket_indexes(database.engine)["ix_ticket_assignee_status"] == ["assignee", "status"]
    assert "ix_ticket_assignee" not in _ticket_indexes(database.engine)
    with Session(database.engine) as s:
        team = assignment.TeamSpec("billing", ("ann@example.com", "bob@example.com"))
        assert assignment._open_counts(s, team) == {"ann@example.com": 1}


def test_least_loaded_on_postgresql_counts_from_the_index_alone(
    postgres_database: Database,
) -> None:
    """PostgreSQL counts live tickets per member (SQLite reads `agent_load`, below)
    through an index, never a walk over the closed history."""
    engine = postgres_database.engine
    history = [("ann@example.com", "closed")] * 300 + [("bob@example.com", "resolved")] * 300
    _add_tickets(engine, [*history, ("ann@example.com", "open"), ("bob@example.com", "pending")])
    team = assignment.TeamSpec("billing", ("ann@example.com", "bob@example.com"), "least-loaded")
    with session_scope(engine) as s:
        assert assignment._open_counts(s, team) == {"ann@example.com": 1, "bob@example.com": 1}
        assert assignment.choose(s, team) == "ann@example.com"  # ties: the first listed
        s.execute(sqlalchemy.text("SET LOCAL enable_seqscan = off"))  # a tiny table: ask
        plan = " ".join(
            row[0]
            for row in s.execute(
                sqlalchemy.text(
                    "EXPLAIN SELECT assignee, count(*) FROM ticket "
                    "WHERE assignee IN ('ann@example.com', 'bob@example.com') "
                    "AND status IN ('open', 'pending') GROUP BY assignee"
                )
            )
        )
    assert "Seq Scan" not in plan, plan  # an index that holds only live tickets


def test_least_loaded_on_sqlite_reads_no_ticket_row(sqlite_database: Database) -> None:
    """SQLite picks from the counts the triggers keep: one small read, whatever the history."""
    engine = sqlite_database.engine
    history = [("ann@example.com", "closed")] * 300 + [("bob@example.com", "resolved")] * 300
    _add_tickets(engine, [*history, ("ann@example.com", "open"), ("bob@example.com", "pending")])
    team = assignment.TeamSpec("billing", ("ann@example.com", "bob@example.com"), "least-loaded")
    statements: list[str] = []

    def trace(conn: sqlite3.Connection, _record: object) -> None:
        conn.set_trace_callback(statements.append)

    sqlalchemy.event.listen(engine, "connect", trace)
    engine.dispose()
    with session_scope(engine) as s:
        statements.clear()
        assert assignment.choose(s, team) == "ann@example.com"  # 1 each: the first listed
    reads = [sql for sql in statements if sql.lstrip().upper().startswith("SELECT")]
    assert reads == ["SELECT assignee, open FROM agent_load"], statements


def test_agent_load_follows_every_change_to_tickets(sqlite_database: Database) -> None:
    """Whatever writes `ticket` (intake, an agent, a merge, an erasure), the kept counts
    equal the live count: 300 random inserts, status changes, reassignments, deletes."""
    import random

    engine = sqlite_database.engine
    agents = ["ann@example.com", "bob@example.com", "cid@example.com", None]
    statuses = ["open", "pending", "resolved", "closed"]
    rnd = random.Random(3)
    for step in range(300):
        op = rnd.random()
        with session_scope(engine) as s:
            ids = [row[0] for row in s.execute(sqlalchemy.text("SELECT id FROM ticket"))]
            if op < 0.4 or not ids:
                _insert_in(s, [(rnd.choice(agents), rnd.choice(statuses))])
            elif op < 0.65:
                ticket = s.get(Ticket, rnd.choice(ids))
                assert ticket is not None
                ticket.status = rnd.choice(statuses)
            elif op < 0.85:
                ticket = s.get(Ticket, rnd.choice(ids))
                assert ticket is not None
                ticket.assignee, ticket.status = rnd.choice(agents), rnd.choice(statuses)
            else:
                s.execute(
                    sqlalchemy.text("DELETE FROM ticket WHERE id = :i"), {"i": rnd.choice(ids)}
                )
        if step % 25 == 24:
            assert _kept(engine) == _live(engine), f"after step {step}"
    assert sum(_live(engine).values()) > 0


def test_upgrade_from_0004_counts_the_open_tickets(sqlite_database: Database) -> None:
    from alembic import command

    from inboxd.db import _alembic_config, upgrade

    command.downgrade(_alembic_config(sqlite_database.url), "0004")
    _add_tickets(
        sqlite_database.engine,
        [("ann@example.com", "open"), ("ann@example.com", "pending"), ("bob@example.com", "open")]
        + [("bob@example.com", "closed")] * 5,
    )
    upgrade(sqlite_database.url)
    assert _kept(sqlite_database.engine) == {"ann@example.com": 2, "bob@example.com": 1}
    _add_tickets(sqlite_database.engine, [("bob@example.com", "open")])
    assert _kept(sqlite_database.engine) == {"ann@example.com": 2, "bob@example.com": 2}


def _kept(engine: Engine) -> dict[str, int]:
    with engine.connect() as conn:
        rows = conn.execute(sqlalchemy.text("SELECT assignee, open FROM agent_load")).all()
    return {a: n for a, n in rows if n}


def _live(engine: Engine) -> dict[str, int]:
    with engine.connect() as conn:
        rows = conn.execute(
            sqlalchemy.text(
                "SELECT assignee, count(*) FROM ticket WHERE assignee IS NOT NULL "
                "AND status IN ('open', 'pending') GROUP BY assignee"
            )
        ).all()
    return dict(rows)


def _add_tickets(engine: Engine, rows: list[tuple[str | None, str]]) -> None:
    with session_scope(engine) as s:
        _insert_in(s, rows)


def _insert_in(s: Session, rows: list[tuple[str | None, str]]) -> None:
    now = datetime.now(UTC)
    s.execute(
        insert(Ticket),
        [
            {
                "subject": "history",
                "status": status,
                "assignee": agent,
                "team": "billing",
                "created_at": now,
                "updated_at": now,
                "sla_fired": [],
            }
            for agent, status in rows
        ],
    )
