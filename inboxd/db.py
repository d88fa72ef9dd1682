"""Engines, sessions and the schema-revision check.

SQLite is the embedded default (WAL, busy timeout, foreign keys, `BEGIN IMMEDIATE` so
two writers wait instead of failing on lock upgrade); PostgreSQL is the multi-host
engine. The same models and the same Alembic revisions serve both.
"""

from __future__ import annotations

import contextlib
import itertools
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from inboxd.errors import SchemaError

# SQLAlchemy is imported where it is used: `inboxd ticket list` and `show` read through a
# bare sqlite3 connection and must not pay for it (`UTCDateTime` is built on first use).
if TYPE_CHECKING:
    from sqlalchemy import Engine
    from sqlalchemy.engine import Dialect
    from sqlmodel import Session, SQLModel

BUSY_TIMEOUT_MS = 30_000


@cache
def _utc_datetime() -> type[Any]:
    from sqlalchemy import DateTime
    from sqlalchemy.types import TypeDecorator

    # Most instants of a mail are one `now`, bound to a dozen columns of several tables:
    # the last one written on SQLite is kept, for every column (an immutable value, held
    # here, so its id is never reused; one tuple, replaced whole, so threads can share it).
    last: list[tuple[datetime | None, str | None]] = [(None, None)]

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

        def bind_processor(self, dialect: Dialect) -> Callable[[Any], Any] | None:
            """On SQLite, one function for what `process_bind_param` and SQLAlchemy's
            DATETIME processor do in two (a dozen instants a mail): the same text."""
            if dialect.name != "sqlite":
                return super().bind_processor(dialect)

            def process(value: datetime | None) -> str | None:
                if value is None:
                    return None
                seen = last[0]
                if seen[0] is value:
                    return seen[1]
                offset = value.utcoffset()
                if offset is None:
                    raise ValueError("naive datetime given to a UTC column")
                text = (value.astimezone(UTC) if offset else value).isoformat(" ", "microseconds")
                last[0] = (value, text[:26])  # without the "+00:00"
                return text[:26]

            return process

        def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
            if value is None:
                return None
            return value.replace(tzinfo=value.tzinfo or UTC).astimezone(UTC)

    UTCDateTime.__module__, UTCDateTime.__qualname__ = __name__, "UTCDateTime"
    return UTCDateTime


def __getattr__(name: str) -> Any:
    """`UTCDateTime`, the column type, built (with SQLAlchemy) when first imported."""
    if name == "UTCDateTime":
        return _utc_datetime()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def is_sqlite(url: str) -> bool:
    return url.startswith("sqlite")


def make_engine(url: str, *, echo: bool = False, pooled: bool = True) -> Engine:
    """An engine for `url` with the pragmas and transaction mode inboxd relies on.

    `pooled=False` opens a connection per use (migrations, short CLI runs).
    """
    from sqlalchemy import create_engine, event
    from sqlalchemy.pool import NullPool

    if is_sqlite(url):
        engine = create_engine(
            url,
            echo=echo,
            json_serializer=json_text,
            connect_args={"timeout": BUSY_TIMEOUT_MS / 1000, "check_same_thread": False},
            **({} if pooled else {"poolclass": NullPool}),
        )
        event.listen(engine, "connect", _sqlite_pragmas)
        event.listen(engine, "begin", _sqlite_begin_immediate)
        return engine
    if not pooled:
        return create_engine(url, echo=echo, poolclass=NullPool, json_serializer=json_text)
    return create_engine(
        url,
        echo=echo,
        pool_pre_ping=True,
        pool_size=5,
        max_overflow=10,
        json_serializer=json_text,
    )


def json_text(value: Any) -> str:
    """`json.dumps`, with the empty lists most JSON columns of a mail hold written directly."""
    if value == [] and type(value) is list:
        return "[]"
    return _dumps(value)


_dumps = json.JSONEncoder().encode  # what json.dumps uses with default arguments


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    dbapi_conn.isolation_level = None  # let SQLAlchemy's "begin" event emit BEGIN itself
    for pragma in (
        "journal_mode=WAL",
        f"busy_timeout={BUSY_TIMEOUT_MS}",
        "foreign_keys=ON",
        "synchronous=NORMAL",
        "cache_size=-65536",
    ):
        dbapi_conn.execute(f"PRAGMA {pragma}")


def _sqlite_begin_immediate(conn: Any) -> None:
    conn.exec_driver_sql("BEGIN IMMEDIATE")


@contextlib.contextmanager
def session_scope(engine: Engine) -> Iterator[Session]:
    """One transaction: committed when the block ends, rolled back on an exception."""
    from sqlmodel import Session

    with Session(engine, expire_on_commit=False) as session, session.begin():
        yield session


@contextlib.contextmanager
def savepoint(session: Session) -> Iterator[None]:
    """A SAVEPOINT on the session's connection: the block's writes stay or go together.

    Plain SQL on the driver's cursor: `Session.begin_nested` costs as much as a small
    mail's INSERTs.
    ORM changes made in the block are flushed inside it. On an exception the database
    rolls back to the savepoint and the session forgets its objects, whose in-memory
    state may hold changes the rollback undid; the exception propagates.
    """
    conn = session.connection()
    cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    name = f"inboxd_{next(_SAVEPOINTS)}"
    try:
        cursor.execute(f"SAVEPOINT {name}")
        try:
            yield
            if session.new or session.dirty or session.deleted:
                session.flush()
        except BaseException:
            cursor.execute(f"ROLLBACK TO SAVEPOINT {name}")
            cursor.execute(f"RELEASE SAVEPOINT {name}")
            session.expunge_all()
            raise
        cursor.execute(f"RELEASE SAVEPOINT {name}")
    except conn.dialect.loaded_dbapi.Error as exc:
        raise _wrapped(exc, "SAVEPOINT", (), conn.dialect) from exc
    finally:
        cursor.close()


_SAVEPOINTS = itertools.count(1)


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
        from sqlalchemy import inspect

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


class Prepared:
    """A Core statement compiled once per dialect and parameter set, run on the DBAPI cursor.

    The intake path runs a dozen small statements per mail; through
    `Connection.execute` SQLAlchemy's per-call bookkeeping (cache keys, parameter
    processing, result objects) costs several times what SQLite spends executing them.
    This keeps SQLAlchemy's compiler and bind processors (JSON, aware datetimes) and
    skips the rest. For INSERT/UPDATE/SELECT with plain bound values; results come back
    as raw tuples, unprocessed (`records.get` applies the column types itself). Driver
    errors are raised as SQLAlchemy's, like any other statement's.
    """

    __slots__ = ("_make", "_plans")

    def __init__(self, statement: Any | Callable[[str], Any]) -> None:
        """`statement`, or a function of the dialect name that builds it (upserts differ)."""
        self._make = statement if callable(statement) else (lambda _dialect: statement)
        self._plans: dict[tuple[str, tuple[str, ...]], _Plan] = {}

    def rows(self, session: Session, params: dict[str, Any]) -> list[tuple[Any, ...]]:
        """Execute once with `params`; the result rows (empty for a statement without)."""
        driver, dialect = _driver_connection(session)
        plan = self._plan(dialect, tuple(params))
        cursor = driver.cursor()
        args = plan.arguments(params)
        try:
            cursor.execute(plan.sql, args)
            return cursor.fetchall() if cursor.description else []
        except dialect.loaded_dbapi.Error as exc:
            raise _wrapped(exc, plan.sql, args, dialect) from exc
        finally:
            cursor.close()

    def scalar(self, session: Session, params: dict[str, Any]) -> Any:
        """The first column of the first row, or None."""
        found = self.rows(session, params)
        return found[0][0] if found else None

    def many(self, session: Session, rows: list[dict[str, Any]]) -> None:
        """Execute once per row (executemany); every row has the same keys."""
        if not rows:
            return
        driver, dialect = _driver_connection(session)
        plan = self._plan(dialect, tuple(rows[0]))
        cursor = driver.cursor()
        args = [plan.arguments(r) for r in rows]
        try:
            cursor.executemany(plan.sql, args)
        except dialect.loaded_dbapi.Error as exc:
            raise _wrapped(exc, plan.sql, args, dialect) from exc
        finally:
            cursor.close()

    def _plan(self, dialect: Dialect, keys: tuple[str, ...]) -> _Plan:
        plan = self._plans.get((dialect.name, keys))
        if plan is None:
            compiled = self._make(dialect.name).compile(dialect=dialect, column_keys=list(keys))
            processors = dict(compiled._bind_processors)
            plan = _Plan(
                compiled.string,
                tuple((name, processors.get(name)) for name in compiled.positiontup)
                if compiled.positional
                else None,
                processors,
                # Literals of the statement itself (e.g. `kind == "ack"`) are binds too.
                {
                    name: bind.effective_value
                    for name, bind in compiled.binds.items()
                    if name not in keys and not bind.required
                },
            )
            self._plans[(dialect.name, keys)] = plan
        return plan


_DRIVER = "inboxd.driver-connection"


def _driver_connection(session: Session) -> tuple[Any, Dialect]:
    """The driver connection under the session's transaction, and its dialect.

    Kept in `session.info` while the transaction is active: `Session.connection()` walks
    the session's state machine each time, on each of a mail's statements.
    """
    transaction = session.get_transaction()
    held = session.info.get(_DRIVER)
    if held is not None and held[0] is transaction and transaction.is_active:
        return held[1], held[2]  # (a failed flush deactivates it: then as SQLAlchemy says)
    conn = session.connection()
    driver = conn.connection.dbapi_connection
    session.info[_DRIVER] = (session.get_transaction(), driver, conn.dialect)
    return driver, conn.dialect


def _wrapped(exc: Exception, sql: str, args: Any, dialect: Dialect) -> Exception:
    from sqlalchemy.exc import DBAPIError

    return DBAPIError.instance(sql, args, exc, dialect.loaded_dbapi.Error)


@dataclass(frozen=True, slots=True)
class _Plan:
    sql: str
    # Positional style (SQLite): each placeholder's parameter name and bind processor.
    steps: tuple[tuple[str, Callable[[Any], Any] | None], ...] | None
    processors: dict[str, Callable[[Any], Any]]  # named style (PostgreSQL)
    literals: dict[str, Any]

    def arguments(self, params: dict[str, Any]) -> Any:
        merged = self.literals | params if self.literals else params
        if self.steps is not None:
            return [merged[k] if proc is None else proc(merged[k]) for k, proc in self.steps]
        procs = self.processors
        return {k: procs[k](v) if k in procs else v for k, v in merged.items()}


def insert_ignore(session: Session, model: type[Any], rows: list[dict[str, Any]]) -> None:
    """INSERT rows, skipping any that would violate a unique key (first writer wins).

    Runs several times per ingested mail, hence `Prepared`.
    """
    if rows:
        _insert_ignore_stmt(model).many(session, rows)


@cache
def _insert_ignore_stmt(model: type[Any]) -> Prepared:
    return Prepared(lambda dialect: upsert(dialect, model).on_conflict_do_nothing())


def upsert(dialect: str, model_or_table: Any) -> Any:
    """The dialect's INSERT, which has ON CONFLICT clauses (PostgreSQL's or SQLite's)."""
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        return pg_insert(model_or_table)
    from sqlalchemy.dialects.sqlite import insert as sqlite_insert

    return sqlite_insert(model_or_table)


@cache
def _defaults_of(model: type[SQLModel]) -> tuple[tuple[str, Any, Any], ...]:
    out = []
    for column in model.__table__.columns:  # type: ignore[attr-defined]
        if column.primary_key or column.computed is not None:  # the database fills these
            continue
        info = model.model_fields.get(column.name)
        if info is None:
            out.append((column.name, None, None))
        else:
            out.append(
                (column.name, info.default_factory, None if info.is_required() else info.default)
            )
    return tuple(out)


def model_defaults(model: type[SQLModel]) -> dict[str, Any]:
    """Every column's Python-side default, for a Core INSERT that skips the model."""
    return {
        name: factory() if factory is not None else default
        for name, factory, default in _defaults_of(model)
    }
