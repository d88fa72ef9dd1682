"""full-text search over messages

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23 12:00:00

Hand-written (autogenerate does not see these objects). What `inboxd.tickets.search`
queries, per dialect:

* SQLite: the contentless FTS5 table `message_fts` (subject, body, addrs; rowid is
  `message.id`), kept in sync with `message` by triggers that read the view
  `message_search_doc`. The view flattens the JSON address lists to "addr name ...",
  so the JSON keys are not indexed as words; contentless, the text is not stored twice
  (a contentless 'delete' needs the old values: the BEFORE triggers read them). A
  later batch migration that rebuilds `message` drops its triggers: such a revision
  must create them again (copy `_SQLITE_TRIGGERS`) and reindex as `upgrade` does.
* PostgreSQL: the IMMUTABLE function `inboxd_message_document(...)` and a GIN index over
  it; queries repeat the same call so the planner uses the index.

Both tokenise alike: words are runs of letters and digits, so `alice@client.example`
is the words alice, client, example on either database (PostgreSQL's parser would keep
it as one email token; `translate` splits it first). Neither folds diacritics.

Every statement is idempotent (IF [NOT] EXISTS, OR REPLACE, a full reindex on SQLite):
running it over a half-applied state converges.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# -- SQLite ----------------------------------------------------------------------------

_SQLITE_ADDRS = """
    SELECT group_concat(
        coalesce(json_extract(value, '$.addr'), '') || ' ' ||
        coalesce(json_extract(value, '$.name'), ''), ' ')
    FROM json_each(CASE WHEN json_valid({col}) THEN {col} ELSE '[]' END)
"""

_SQLITE_VIEW = f"""
CREATE VIEW IF NOT EXISTS message_search_doc AS
SELECT
    message.id AS id,
    message.subject AS subject,
    message.text AS body,
    coalesce(message.from_addr, '') || ' ' || coalesce(message.from_name, '') || ' ' ||
    coalesce(({_SQLITE_ADDRS.format(col="message.to_addrs")}), '') || ' ' ||
    coalesce(({_SQLITE_ADDRS.format(col="message.cc_addrs")}), '') AS addrs
FROM message
"""  # noqa: S608 - built from constants only

_SQLITE_FTS = """
CREATE VIRTUAL TABLE IF NOT EXISTS message_fts USING fts5(
    subject, body, addrs,
    content='',
    tokenize='unicode61 remove_diacritics 0'
)
"""

_INDEXED = "subject, text, from_addr, from_name, to_addrs, cc_addrs"
_DELETE_OLD = """
    INSERT INTO message_fts(message_fts, rowid, subject, body, addrs)
    SELECT 'delete', id, subject, body, addrs FROM message_search_doc WHERE id = old.id;
"""
_INSERT_NEW = """
    INSERT INTO message_fts(rowid, subject, body, addrs)
    SELECT id, subject, body, addrs FROM message_search_doc WHERE id = new.id;
"""
# The old values must be read while the row is still there: BEFORE triggers. They only
# read `message` and write `message_fts`, which SQLite allows (lang_createtrigger.html).
_SQLITE_TRIGGERS = {
    "message_fts_ai": f"AFTER INSERT ON message BEGIN {_INSERT_NEW} END",
    "message_fts_bd": f"BEFORE DELETE ON message BEGIN {_DELETE_OLD} END",
    "message_fts_bu": f"BEFORE UPDATE OF {_INDEXED} ON message BEGIN {_DELETE_OLD} END",
    "message_fts_au": f"AFTER UPDATE OF {_INDEXED} ON message BEGIN {_INSERT_NEW} END",
}

# -- PostgreSQL ------------------------------------------------------------------------

_PG_SPLIT = "'@./-_:+'"  # characters that glue words into email/host/file tokens
_PG_SPACES = "'       '"
_PG_ADDRS = """
    (SELECT string_agg(concat_ws(' ', e->>'addr', e->>'name'), ' ')
     FROM json_array_elements(CASE WHEN json_typeof({col}) = 'array'
                                   THEN {col} ELSE '[]'::json END) AS e)
"""
_PG_FUNCTION = f"""
CREATE OR REPLACE FUNCTION inboxd_message_document(
    subject text, body text, from_addr text, from_name text, to_addrs json, cc_addrs json
) RETURNS tsvector
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT setweight(to_tsvector('simple'::regconfig,
                     translate(coalesce(subject, ''), {_PG_SPLIT}, {_PG_SPACES})), 'A')
        || setweight(to_tsvector('simple'::regconfig,
                     translate(concat_ws(' ', from_addr, from_name,
                                         {_PG_ADDRS.format(col="to_addrs")},
                                         {_PG_ADDRS.format(col="cc_addrs")}),
                               {_PG_SPLIT}, {_PG_SPACES})), 'B')
        -- a tsvector holds at most 1 MB: index the first 100k characters of a body
        || to_tsvector('simple'::regconfig,
                       translate(left(coalesce(body, ''), 100000), {_PG_SPLIT}, {_PG_SPACES}))
$$
"""
_PG_INDEX = f"""
CREATE INDEX IF NOT EXISTS ix_message_search ON message
USING gin (inboxd_message_document({_INDEXED}))
"""


def upgrade() -> None:
    dialect = op.get_bind().dialect.name
    if dialect == "sqlite":
        op.execute(_SQLITE_VIEW)
        op.execute(_SQLITE_FTS)
        for name, body in _SQLITE_TRIGGERS.items():
            op.execute(f"CREATE TRIGGER IF NOT EXISTS {name} {body}")
        # Index what is already there ('rebuild' would read the view from inside FTS5,
        # where SQLite refuses json_each): start empty, insert every row once.
        op.execute("INSERT INTO message_fts(message_fts) VALUES ('delete-all')")
        op.execute(
            "INSERT INTO message_fts(rowid, subject, body, addrs) "
            "SELECT id, subject, body, addrs FROM message_search_doc"
        )
    elif dialect == "postgresql":
        op.execute(_PG_FUNCTION)
        op.execute(_PG_INDEX)


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    if dialect == "sqlite":
        for name in _SQLITE_TRIGGERS:
            op.execute(f"DROP TRIGGER IF EXISTS {name}")
        op.execute("DROP TABLE IF EXISTS message_fts")
        op.execute("DROP VIEW IF EXISTS message_search_doc")
    elif dialect == "postgresql":
        op.execute("DROP INDEX IF EXISTS ix_message_search")
        op.execute(
            "DROP FUNCTION IF EXISTS inboxd_message_document(text, text, text, text, json, json)"
        )
