"""the agents' queue index: live tickets by nearest SLA due

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23 13:00:00

Hand-written: autogenerate skips expression indexes on SQLite (it cannot reflect them).
`ix_ticket_live_due` orders open and pending tickets by the nearest due of the clocks
still racing (`sla.active_due` in SQL: the first-response due while no agent answered,
the next-response due, the resolution due), then by id, per status, so `inboxd ticket
list` reads a page in index order however many tickets were ever handled. It is partial
(live tickets only) and its expression is `inboxd.tickets.queue.QUEUE_DUE_SQL`: queries
repeat both the expression and the predicate verbatim, which is what SQLite needs to use
it. Plain CASE, not LEAST/min(): PostgreSQL's LEAST skips NULLs, SQLite's min() returns
NULL.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_FIRST = "(CASE WHEN first_response_at IS NULL THEN first_response_due END)"
_DUE = (
    "CASE"
    f" WHEN {_FIRST} IS NOT NULL AND (next_response_due IS NULL OR {_FIRST} <= next_response_due)"
    f" AND (resolution_due IS NULL OR {_FIRST} <= resolution_due) THEN {_FIRST}"
    " WHEN next_response_due IS NOT NULL"
    " AND (resolution_due IS NULL OR next_response_due <= resolution_due) THEN next_response_due"
    " ELSE resolution_due END"
)
_LIVE = "status IN ('open', 'pending')"


def upgrade() -> None:
    op.execute(
        f"CREATE INDEX IF NOT EXISTS ix_ticket_live_due ON ticket (status, ({_DUE}), id) "
        f"WHERE {_LIVE}"
    )


def downgrade() -> None:
    op.execute("DROP INDEX IF EXISTS ix_ticket_live_due")
