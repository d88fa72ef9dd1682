"""Intake cost must not grow with history: the index least-loaded assignment counts from.

`bench/history.py` measures the rate; these tests pin the schema it depends on, on both
backends, and the plan SQLite picks for the count.
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


def test_least_loaded_count_reads_only_the_index(sqlite_database: Database) -> None:
    """SQLite answers the count from the index (no table rows, however long the history)."""
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
        assert assignment._open_counts(s, team) == {"ann@example.com": 1, "bob@example.com": 1}
        assert assignment.choose(s, team) == "ann@example.com"  # ties: the first listed
    counts = [sql for sql in statements if "count(*)" in sql and "FROM ticket" in sql]
    assert counts
    path = sqlite_database.url.removeprefix("sqlite:///")
    with sqlite3.connect(path) as conn:
        plan = " ".join(row[3] for row in conn.execute(f"EXPLAIN QUERY PLAN {counts[0]}"))
    conn.close()
    assert "COVERING INDEX ix_ticket_assignee_status" in plan, plan


def _add_tickets(engine: Engine, rows: list[tuple[str, str]]) -> None:
    now = datetime.now(UTC)
    with session_scope(engine) as s:
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
