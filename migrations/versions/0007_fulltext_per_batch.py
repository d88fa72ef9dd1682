"""full-text index (SQLite): a batch of mail is indexed once, at the end of its transaction

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-08 02:00:00

Hand-written. FTS5 writes its pending terms to disk at every statement that opens a
statement journal or savepoint, so a message INSERT through migration 0006's trigger
wrote a segment of its own, and incremental merging followed: about 110 us of a 40 us
INSERT, on every mail. A mailbox worker stores a batch of mail in one transaction; with
this revision it indexes the whole batch in one statement at the end instead
(`inboxd.tickets.searchindex.deferred`), one segment per batch.

While the table `fts_deferred` holds a row, which it only ever does inside the writing
transaction that inserted it (SQLite has one writer at a time), messages with an id above
its `above` are not indexed by the triggers: neither added on INSERT or UPDATE nor
deleted on UPDATE or DELETE (the index does not hold them yet). The transaction indexes
them, as they then are, before it commits. Without a row the triggers behave as 0006's.
No row is reindexed: the index already holds exactly what 0006 put there.

PostgreSQL is unchanged (its GIN index is an expression index).
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
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


def _deferred(row: str) -> str:
    """The row is above the deferral mark of the running transaction (NULL: no mark)."""
    return f"coalesce({row}.id > (SELECT max(above) FROM fts_deferred), 0)"  # noqa: S608 - constants


_PER_BATCH = {
    "message_fts_ai": (
        f"AFTER INSERT ON message WHEN NOT {_automatic('new')} AND NOT {_deferred('new')} "
        f"BEGIN {_INSERT_NEW} END"
    ),
    "message_fts_bd": (
        f"BEFORE DELETE ON message WHEN NOT {_automatic('old')} AND NOT {_deferred('old')} "
        f"BEGIN {_DELETE_OLD} END"
    ),
    "message_fts_bu": (
        f"BEFORE UPDATE OF {_COLUMNS}, direction, author ON message "
        f"WHEN NOT {_automatic('old')} AND NOT {_deferred('old')} BEGIN {_DELETE_OLD} END"
    ),
    "message_fts_au": (
        f"AFTER UPDATE OF {_COLUMNS}, direction, author ON message "
        f"WHEN NOT {_automatic('new')} AND NOT {_deferred('new')} BEGIN {_INSERT_NEW} END"
    ),
}
# Migration 0006's triggers, for the downgrade.
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


def _triggers(triggers: dict[str, str]) -> None:
    for name in _NAMES:
        op.execute(f"DROP TRIGGER IF EXISTS {name}")
    for name, body in triggers.items():
        op.execute(f"CREATE TRIGGER {name} {body}")


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        op.execute("CREATE TABLE IF NOT EXISTS fts_deferred (above INTEGER NOT NULL)")
        _triggers(_PER_BATCH)


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        _triggers(_PEOPLE_ONLY)
        op.execute("DROP TABLE IF EXISTS fts_deferred")
