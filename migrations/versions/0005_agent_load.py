"""least-loaded assignment on SQLite: open tickets per agent, kept by triggers

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-23 15:10:00

Hand-written (autogenerate does not see these objects). Least-loaded assignment picks
the team member with the fewest open or pending tickets, for every new ticket routed to
such a team. Counted from `ix_ticket_assignee_status` the pick reads every live ticket
of every member: with 2,000 open tickets an agent it took 1.7 ms, more than the rest of
the intake's lookups together, and it grows with the backlog.

SQLite: `agent_load` holds each agent's count, kept by triggers on `ticket` in the same
transaction as the change (an INSERT, a new status or assignee, a DELETE), whatever code
or tool makes it; SQLite has one writer at a time, so the counter row is never contended.
PostgreSQL keeps counting from the index: there the counter row of a popular agent would
be locked by one daemon's batch until it commits, serialising (and deadlocking) batches
of several daemons; its picks are serialised per team instead
(`inboxd.tickets.assignment._least_loaded_pg`).

A later batch migration that rebuilds `ticket` drops these triggers: such a revision must
create them again (copy `_TRIGGERS`) and recount as `upgrade` does. Idempotent: running
it over a half-applied state converges (the counts are rebuilt from the tickets).
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_OLD_COUNTED = "old.assignee IS NOT NULL AND old.status IN ('open', 'pending')"
_NEW_COUNTED = "new.assignee IS NOT NULL AND new.status IN ('open', 'pending')"
_ADD_NEW = (
    "INSERT INTO agent_load (assignee, open) SELECT new.assignee, 1 "
    f"WHERE {_NEW_COUNTED} ON CONFLICT (assignee) DO UPDATE SET open = open + 1;"
)
_REMOVE_OLD = (
    "UPDATE agent_load SET open = open - 1 "
    "WHERE assignee = old.assignee AND old.status IN ('open', 'pending');"
)
_TRIGGERS = {
    "agent_load_ai": f"AFTER INSERT ON ticket BEGIN {_ADD_NEW} END",
    "agent_load_ad": f"AFTER DELETE ON ticket BEGIN {_REMOVE_OLD} END",
    "agent_load_au": f"AFTER UPDATE OF assignee, status ON ticket BEGIN {_REMOVE_OLD} {_ADD_NEW} END",
}


def upgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    op.execute(
        "CREATE TABLE IF NOT EXISTS agent_load ("
        "assignee TEXT PRIMARY KEY NOT NULL, open INTEGER NOT NULL) WITHOUT ROWID"
    )
    for name, body in _TRIGGERS.items():
        op.execute(f"CREATE TRIGGER IF NOT EXISTS {name} {body}")
    op.execute("DELETE FROM agent_load")
    op.execute(
        "INSERT INTO agent_load (assignee, open) SELECT assignee, count(*) FROM ticket "
        "WHERE assignee IS NOT NULL AND status IN ('open', 'pending') GROUP BY assignee"
    )


def downgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    for name in _TRIGGERS:
        op.execute(f"DROP TRIGGER IF EXISTS {name}")
    op.execute("DROP TABLE IF EXISTS agent_load")
