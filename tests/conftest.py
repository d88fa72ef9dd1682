"""Fixtures: real servers on 127.0.0.1 (Dovecot, PostgreSQL, an SMTP sink) and databases.

Servers start once per session, the first time a test asks for them, and stop at the
end of it. A server the machine lacks skips its tests with the reason; under
INBOXD_TEST_REQUIRE_SERVERS=1 (set by .ci/run) that skip is a failure instead, so CI
never passes by testing nothing. See STYLE.md section 11.
"""

from __future__ import annotations

import itertools
import os
import shutil
import signal
import sqlite3
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType
from typing import NoReturn, TypeVar

import pytest
from servers import (
    Database,
    Dovecot,
    Postgres,
    ServerFailed,
    ServerUnavailable,
    SmtpSink,
)
from sqlalchemy import Engine

POSTGRES_TEMPLATE = "inboxd_template"

T = TypeVar("T")

# The read commands cache the validated config's read view under $XDG_CACHE_HOME: the
# tests' caches go to a folder of their own, not the user's ~/.cache.
os.environ["XDG_CACHE_HOME"] = tempfile.mkdtemp(prefix="inboxd-test-cache-")

try:
    from hypothesis import settings

    # dev keeps the edit-test loop short; .ci/run selects ci (HYPOTHESIS_PROFILE=ci).
    settings.register_profile("dev", max_examples=10)
    settings.register_profile("ci", max_examples=100, deadline=None)
    settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))
except ImportError:  # hypothesis is a test extra; the server fixtures do not need it
    pass


_SESSION_PID = os.getpid()


def _terminate(signum: int, frame: FrameType | None) -> NoReturn:
    """SIGTERM (a CI timeout, `kill`) unwinds like Ctrl-C, so finalizers stop the servers.

    A child forked without exec inherits this handler: it dies as SIGTERM would kill it.
    """
    if os.getpid() != _SESSION_PID:
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
    raise KeyboardInterrupt(f"signal {signum}")


def pytest_configure(config: pytest.Config) -> None:
    if threading.current_thread() is threading.main_thread() and (
        signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
    ):
        signal.signal(signal.SIGTERM, _terminate)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark tests by the servers they use, so `-m "not dovecot"` and the like work."""
    for item in items:
        names = set(getattr(item, "fixturenames", ()))
        if names & {"dovecot", "mailbox_user"}:
            item.add_marker(pytest.mark.dovecot)
        if names & {"postgres", "postgres_database"}:
            item.add_marker(pytest.mark.postgres)


def start_or_skip(factory: Callable[[], T]) -> T:
    """Run a server factory: skip if the server is missing (fail under REQUIRE), fail if broken."""
    try:
        return factory()
    except ServerUnavailable as exc:
        if os.environ.get("INBOXD_TEST_REQUIRE_SERVERS", "") not in ("", "0"):
            pytest.fail(f"{exc} (INBOXD_TEST_REQUIRE_SERVERS=1)", pytrace=False)
        pytest.skip(str(exc))
    except ServerFailed as exc:
        pytest.fail(str(exc), pytrace=False)


# ---------------------------------------------------------------------------- IMAP


@pytest.fixture(scope="session")
def dovecot() -> Iterator[Dovecot]:
    """The session's Dovecot. A test that stops it starts it again; `mailbox_user` also does."""
    server = start_or_skip(Dovecot.create)
    yield server
    server.close()


@pytest.fixture
def mailbox_user(dovecot: Dovecot) -> tuple[str, str]:
    """A new Dovecot user with an empty INBOX: (name, password).

    Starts Dovecot again first if an earlier test stopped it and failed before restarting.
    """
    try:
        dovecot.start()
    except ServerFailed as exc:
        pytest.fail(str(exc), pytrace=False)
    return dovecot.new_user()


# ---------------------------------------------------------------------------- SMTP


@pytest.fixture(scope="session")
def smtp_server() -> Iterator[SmtpSink]:
    """The session's SMTP sink; tests use `smtp_sink`, which resets it."""
    sink = start_or_skip(SmtpSink.create)
    yield sink
    sink.close()


@pytest.fixture
def smtp_sink(smtp_server: SmtpSink) -> SmtpSink:
    """The SMTP sink, running, empty, and accepting every recipient and message."""
    smtp_server.start()
    smtp_server.reset()
    return smtp_server


# ---------------------------------------------------------------------------- PostgreSQL


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    """The session's PostgreSQL cluster."""
    server = start_or_skip(Postgres.create)
    yield server
    server.close()


# ---------------------------------------------------------------------------- databases
#
# Migrations run once per backend per session into a template; each test gets a copy.

_names = itertools.count(1)


@pytest.fixture(scope="session")
def _sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated SQLite file, its WAL folded in, so copying the one file is a full copy."""
    from inboxd.db import upgrade

    path = tmp_path_factory.mktemp("sqlite-template") / "template.db"
    upgrade(f"sqlite:///{path}")
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    return path


@pytest.fixture(scope="session")
def _postgres_template(postgres: Postgres) -> str:
    """A migrated PostgreSQL database that CREATE DATABASE ... TEMPLATE copies per test."""
    from inboxd.db import upgrade

    postgres.drop_database(POSTGRES_TEMPLATE)
    postgres.create_database(POSTGRES_TEMPLATE)
    upgrade(postgres.url(POSTGRES_TEMPLATE))
    postgres.seal_template(POSTGRES_TEMPLATE)
    return POSTGRES_TEMPLATE


def _sqlite_database(template: Path, tmp_path: Path) -> Iterator[Database]:
    from inboxd.db import make_engine

    path = tmp_path / "inboxd.db"
    shutil.copyfile(template, path)
    url = f"sqlite:///{path}"
    engine = make_engine(url)
    yield Database(backend="sqlite", url=url, engine=engine)
    engine.dispose()


def _postgres_database(postgres: Postgres, template: str) -> Iterator[Database]:
    from inboxd.db import make_engine

    name = f"test_{os.getpid()}_{next(_names)}"
    postgres.create_database(name, template=template)
    url = postgres.url(name)
    engine = make_engine(url)
    try:
        yield Database(backend="postgresql", url=url, engine=engine)
    finally:
        engine.dispose()
        postgres.drop_database(name)  # WITH (FORCE): a subprocess's session does not block it


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    """A fresh migrated database on each backend in turn (the test runs twice)."""
    if request.param == "sqlite":
        yield from _sqlite_database(request.getfixturevalue("_sqlite_template"), tmp_path)
    else:
        yield from _postgres_database(
            request.getfixturevalue("postgres"), request.getfixturevalue("_postgres_template")
        )


@pytest.fixture
def engine(database: Database) -> Engine:
    """Engine of `database`: the test runs on SQLite and on PostgreSQL."""
    return database.engine


@pytest.fixture
def db_url(database: Database) -> str:
    """URL of `database`, for a subprocess (`inboxd run --db ...`) or a second engine."""
    return database.url


@pytest.fixture
def sqlite_database(_sqlite_template: Path, tmp_path: Path) -> Iterator[Database]:
    """A fresh migrated SQLite database, for tests the backend does not matter to."""
    yield from _sqlite_database(_sqlite_template, tmp_path)


@pytest.fixture
def sqlite_engine(sqlite_database: Database) -> Engine:
    """Engine of `sqlite_database`."""
    return sqlite_database.engine


@pytest.fixture
def postgres_database(postgres: Postgres, _postgres_template: str) -> Iterator[Database]:
    """A fresh migrated PostgreSQL database, for what only PostgreSQL has (SKIP LOCKED...)."""
    yield from _postgres_database(postgres, _postgres_template)
