"""Engines, sessions and the schema-revision check.

SQLite is the embedded default (WAL, busy timeout, foreign keys, `BEGIN IMMEDIATE` so
two writers wait instead of failing on lock upgrade); PostgreSQL is the multi-host
engine. The same models and the same Alembic revisions serve both.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any

from sqlalchemy import DateTime, Engine, create_engine, event, inspect
from sqlalchemy.engine import Dialect
from sqlalchemy.pool import NullPool
from sqlalchemy.types import TypeDecorator
from sqlmodel import Session

from inboxd.errors import SchemaError

BUSY_TIMEOUT_MS = 30_000


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC in and out on every backend (SQLite hands back naive values otherwise)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(UTC)
        # SQLite compares timestamps as text: store one fixed format without offset.
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=value.tzinfo or UTC).astimezone(UTC)


def is_sqlite(url: str) -> bool:
    return url.startswith("sqlite")


def make_engine(url: str, *, echo: bool = False, pooled: bool = True) -> Engine:
    """An engine for `url` with the pragmas and transaction mode inboxd relies on.

    `pooled=False` opens a connection per use (migrations, short CLI runs).
    """
    if is_sqlite(url):
        engine = create_engine(
            url,
            echo=echo,
            connect_args={"timeout": BUSY_TIMEOUT_MS / 1000, "check_same_thread": False},
            **({} if pooled else {"poolclass": NullPool}),
        )
        event.listen(engine, "connect", _sqlite_pragmas)
        event.listen(engine, "begin", _sqlite_begin_immediate)
        return engine
    if not pooled:
        return create_engine(url, echo=echo, poolclass=NullPool)
    return create_engine(url, echo=echo, pool_pre_ping=True, pool_size=5, max_overflow=10)


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    dbapi_conn.isolation_level = None  # let SQLAlchemy's "begin" event emit BEGIN itself
    for pragma in (
        "journal_mode=WAL",
        f"busy_timeout={BUSY_TIMEOUT_MS}",
        "foreign_keys=ON",
        "synchronous=NORMAL",
    ):
        dbapi_conn.execute(f"PRAGMA {pragma}")


def _sqlite_begin_immediate(conn: Any) -> None:
    conn.exec_driver_sql("BEGIN IMMEDIATE")


@contextlib.contextmanager
def session_scope(engine: Engine) -> Iterator[Session]:
    """One transaction: committed when the block ends, rolled back on an exception."""
    with Session(engine, expire_on_commit=False) as session, session.begin():
        yield session


# -- migrations ---------------------------------------------------------------------


@cache
def migrations_dir() -> Path:
    """The Alembic folder: shipped as `inboxd.migrations`, or the checkout's `migrations/`."""
    try:
        import inboxd.migrations as shipped  # type: ignore[import-not-found]

        return Path(shipped.__file__).resolve().parent
    except ImportError:  # pragma: no cover - a checkout without an install
        return Path(__file__).resolve().parent.parent / "migrations"


def _alembic_config(url: str) -> Any:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(migrations_dir()))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    cfg.attributes["configure_logger"] = False
    return cfg


def head_revision() -> str:
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(_alembic_config("sqlite://")).get_current_head()
    assert head is not None, "migrations folder has no revision"
    return head


def current_revision(engine: Engine) -> str | None:
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def upgrade(url: str) -> tuple[str | None, str]:
    """Apply every pending revision; returns (revision before, revision after)."""
    from alembic import command

    engine = make_engine(url, pooled=False)
    try:
        before = current_revision(engine)
    finally:
        engine.dispose()
    cfg = _alembic_config(url)
    command.upgrade(cfg, "head")
    return before, head_revision()


def require_schema(engine: Engine) -> None:
    """Refuse to work on a missing or old schema, naming the command that fixes it."""
    try:
        current = current_revision(engine)
    except Exception as exc:
        raise SchemaError(f"cannot open the database: {_first_line(exc)}") from exc
    head = head_revision()
    if current is None:
        if inspect(engine).get_table_names():
            raise SchemaError(
                "the database has tables but no inboxd schema revision (run `inboxd db upgrade`)"
            )
        raise SchemaError("the database has no inboxd schema (run `inboxd db upgrade`)")
    if current != head:
        raise SchemaError(
            f"the database schema is at revision {current}, this inboxd needs {head} "
            "(run `inboxd db upgrade`)"
        )


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def insert_ignore(session: Session, model: type[Any], rows: list[dict[str, Any]]) -> None:
    """INSERT rows, skipping any that would violate a unique key (first writer wins).

    Core, not the ORM: this runs several times per ingested mail. The statement has no
    inline values, so SQLAlchemy compiles it once and reuses it.
    """
    if not rows:
        return
    session.connection().execute(_insert_ignore_stmt(session.get_bind().dialect.name, model), rows)


@cache
def _insert_ignore_stmt(dialect: str, model: type[Any]) -> Any:
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        return pg_insert(model).on_conflict_do_nothing()
    from sqlalchemy.dialects.sqlite import insert as sqlite_insert

    return sqlite_insert(model).on_conflict_do_nothing()
