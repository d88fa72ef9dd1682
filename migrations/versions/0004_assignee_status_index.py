"""least-loaded assignment: open tickets per agent from the index

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-23 14:00:00

Hand-written. Least-loaded assignment (`inboxd.tickets.assignment._open_counts`) counts
each team member's open and pending tickets for every new ticket routed to such a team.
With only `ix_ticket_assignee` SQLite (and PostgreSQL) walked every ticket the agent ever
had and read each row for its status: intake slowed down as the history grew (bench/
history.py: a million tickets halved the ingest rate). `ix_ticket_assignee_status`
answers the count from the index alone, reading only the live tickets; it serves every
lookup by assignee as well, so it replaces `ix_ticket_assignee`.

Idempotent (IF [NOT] EXISTS): `tools/regen_initial_migration.py` rebuilds 0001 from the
models, which then creates the new index and not the old one; this revision is a no-op
there.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute("CREATE INDEX IF NOT EXISTS ix_ticket_assignee_status ON ticket (assignee, status)")
    op.execute("DROP INDEX IF EXISTS ix_ticket_assignee")


def downgrade() -> None:
    op.execute("CREATE INDEX IF NOT EXISTS ix_ticket_assignee ON ticket (assignee)")
    op.execute("DROP INDEX IF EXISTS ix_ticket_assignee_status")
