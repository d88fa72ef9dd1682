"""full-text index (SQLite): only what people wrote, not our automatic mail

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-23 16:00:00

Hand-written. Search has always left out our automatic mail (outgoing without an
author: acknowledgements, surveys, notifications), whose words stand on every ticket
(`inboxd.tickets.search`). SQLite still indexed it: a full-text row for every
acknowledgement, about a third of the index, written on the intake path of every new
ticket. The triggers of migration 0002 now skip such rows (`_AUTOMATIC`); the update
triggers also watch `direction` and `author`, so a row that changes sides is added or
removed. Existing rows are reindexed as 0002 does (contentless FTS5 cannot delete a row
it never held, so the index starts empty and every row of people is inserted once), then
merged into one segment. On a million messages this takes a minute or two.

PostgreSQL is unchanged: its GIN index is an expression index, and the search query
filters automatic mail on both databases.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_COLUMNS = "subject, text, from_addr, from_name, to_addrs, cc_addrs"
_DELETE_OLD = """
    INSERT INTO message_fts(message_fts, rowid, subject, body, addrs)
    SELECT 'delete', id, subject, body, addrs FROM message_search_doc WHERE id = old.id;
"""
_INSERT_NEW = """
    INSERT INTO message_fts(rowid, subject, body, addrs)
    SELECT id, subject, body, addrs FROM message_search_doc WHERE id = new.id;
"""
_NAMES = ("message_fts_ai", "message_fts_bd", "message_fts_bu", "message_fts_au")


def _automatic(row: str) -> str:
    return f"({row}.direction = 'out' AND {row}.author IS NULL)"


_PEOPLE_ONLY = {
    "message_fts_ai": (
        f"AFTER INSERT ON message WHEN NOT {_automatic('new')} BEGIN {_INSERT_NEW} END"
    ),
    "message_fts_bd": (
        f"BEFORE DELETE ON message WHEN NOT {_automatic('old')} BEGIN {_DELETE_OLD} END"
    ),
    "message_fts_bu": (
        f"BEFORE UPDATE OF {_COLUMNS}, direction, author ON message "
        f"WHEN NOT {_automatic('old')} BEGIN {_DELETE_OLD} END"
    ),
    "message_fts_au": (
        f"AFTER UPDATE OF {_COLUMNS}, direction, author ON message "
        f"WHEN NOT {_automatic('new')} BEGIN {_INSERT_NEW} END"
    ),
}
# Migration 0002's triggers, for the downgrade.
_EVERY_ROW = {
    "message_fts_ai": f"AFTER INSERT ON message BEGIN {_INSERT_NEW} END",
    "message_fts_bd": f"BEFORE DELETE ON message BEGIN {_DELETE_OLD} END",
    "message_fts_bu": f"BEFORE UPDATE OF {_COLUMNS} ON message BEGIN {_DELETE_OLD} END",
    "message_fts_au": f"AFTER UPDATE OF {_COLUMNS} ON message BEGIN {_INSERT_NEW} END",
}


_REINDEX = (
    "INSERT INTO message_fts(rowid, subject, body, addrs) "
    "SELECT d.id, d.subject, d.body, d.addrs FROM message_search_doc AS d "
    "JOIN message AS m ON m.id = d.id"
)


def _reindex(triggers: dict[str, str], *, people_only: bool) -> None:
    for name in _NAMES:
        op.execute(f"DROP TRIGGER IF EXISTS {name}")
    for name, body in triggers.items():
        op.execute(f"CREATE TRIGGER {name} {body}")
    op.execute("INSERT INTO message_fts(message_fts) VALUES ('delete-all')")
    people = " WHERE NOT (m.direction = 'out' AND m.author IS NULL)"
    op.execute(_REINDEX + people if people_only else _REINDEX)
    op.execute("INSERT INTO message_fts(message_fts) VALUES ('optimize')")


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        _reindex(_PEOPLE_ONLY, people_only=True)


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        _reindex(_EVERY_ROW, people_only=False)
