"""What every command shares: the config it runs on, the database, output helpers."""

from __future__ import annotations

import contextlib
import json
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from inboxd.cli.readconfig import ReadConfig
    from inboxd.config import Settings
    from inboxd.tickets.views import Reader


def fail(message: str, code: int) -> NoReturn:
    """`inboxd: error: ...` on stderr and exit; nothing for an empty message (help shown)."""
    if message:
        print(f"inboxd: error: {message}", file=sys.stderr)  # noqa: T201 - the CLI's voice
    sys.exit(code)


@dataclass
class CliState:
    """Per-invocation state; `reset` runs first in every command (tests call main() often)."""

    config_option: Path | None = None
    agent_option: str | None = None  # --as / $INBOXD_AGENT; `inboxd.cli.identity` reads it

    def reset(self, config_option: Path | None, agent_option: str | None = None) -> None:
        self.__dict__.clear()
        self.config_option = config_option
        self.agent_option = agent_option

    @property
    def config_path(self) -> Path:
        from inboxd.locate import resolve_config_path

        return resolve_config_path(self.config_option)

    @cached_property
    def settings(self) -> Settings:
        from inboxd.config import load_settings

        return load_settings(self.config_path)

    @cached_property
    def read_config(self) -> ReadConfig:
        """The database and the teams: all the read commands need, mostly from a cache."""
        from inboxd.cli.readconfig import load

        return load(self.config_path, lambda: self.settings)

    @cached_property
    def engine(self) -> Engine:
        from inboxd.db import make_engine

        engine = make_engine(self.settings.inboxd.database, pooled=False)
        require_current_schema(engine)
        return engine


STATE = CliState()


@contextlib.contextmanager
def read_scope() -> Iterator[Reader]:
    """One read-only transaction, for commands that only read (`ticket list`, `show`).

    On a SQLite file it is a bare `sqlite3` connection in a deferred transaction: a
    snapshot that takes no write lock (the engine's `BEGIN IMMEDIATE` would wait behind a
    writer) and needs no SQLAlchemy, whose import alone costs more than the whole query.
    Any other database reads through the engine, in a transaction rolled back at the end.
    """
    from inboxd.tickets.views import SessionReader, SqliteReader

    path = _sqlite_file(STATE.read_config.database)
    conn = _open_sqlite(path) if path is not None else None
    if conn is None:
        from sqlmodel import Session

        with Session(STATE.engine) as session:
            try:
                yield SessionReader(session)
            finally:
                session.rollback()
        return
    try:
        conn.execute("BEGIN")  # deferred: the first read takes the snapshot
        yield SqliteReader(conn)
    finally:
        conn.close()  # rolls back: nothing was written


def _sqlite_file(url: str) -> str | None:
    """The file of a plain `sqlite:///FILE` URL; None for anything else (in memory,
    query options, other drivers), which goes through SQLAlchemy."""
    if not url.startswith("sqlite:///"):
        return None
    file = url.removeprefix("sqlite:///")
    if not file or file == ":memory:" or "?" in file or file.startswith("file:"):
        return None
    return file


def _open_sqlite(path: str) -> Any:
    """A connection on a current schema, or None to let SQLAlchemy open the database and
    say what is wrong with it (missing, unreadable, old schema) in its usual words."""
    import sqlite3

    from inboxd.db import BUSY_TIMEOUT_MS

    if not Path(path).is_file():
        return None
    try:
        conn = sqlite3.connect(
            path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None, check_same_thread=False
        )
    except sqlite3.Error:
        return None
    head = _head_from_files()
    try:
        current = conn.execute("SELECT version_num FROM alembic_version").fetchall()
    except sqlite3.Error:
        current = []
    if head is None or [tuple(r) for r in current] != [(head,)]:
        conn.close()
        return None
    return conn


_REVISION = re.compile(r"^revision(?:\s*:[^=]*)?=\s*[\"']([^\"']+)[\"']", re.M)
_DOWN = re.compile(r"^down_revision(?:\s*:[^=]*)?=(.*)$", re.M)


def require_current_schema(engine: Engine) -> None:
    """`db.require_schema`, without loading Alembic when the schema is current.

    Importing Alembic costs more than a whole `ticket list`; the head revision is read
    from the revision files instead. Anything unexpected (a file without a revision, two
    heads, an old or missing schema) goes to Alembic's own check and its error message.
    """
    head = _head_from_files()
    if head is not None:
        from sqlalchemy.exc import SQLAlchemyError

        try:
            with engine.connect() as conn:
                current = conn.exec_driver_sql("SELECT version_num FROM alembic_version").all()
        except SQLAlchemyError:
            current = []
        if [tuple(r) for r in current] == [(head,)]:
            return
    from inboxd.db import require_schema

    require_schema(engine)


def _head_from_files() -> str | None:
    from inboxd.db import migrations_dir

    revisions: set[str] = set()
    parents: set[str] = set()
    for path in (migrations_dir() / "versions").glob("*.py"):
        if path.name == "__init__.py":
            continue
        text = path.read_text(encoding="utf-8")
        found = _REVISION.search(text)
        down = _DOWN.search(text)
        if found is None or down is None:
            return None
        revisions.add(found.group(1))
        parents.update(re.findall(r"[\"']([^\"']+)[\"']", down.group(1)))
    heads = revisions - parents
    return heads.pop() if len(heads) == 1 else None


def emit_json(doc: Any) -> None:
    """The JSON document alone on stdout (no rich wrapping)."""
    sys.stdout.write(json.dumps(doc, ensure_ascii=False, indent=2, default=str))
    sys.stdout.write("\n")
