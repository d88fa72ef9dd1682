"""Who works what: nothing here outlives its process, so a killed daemon restarts at once.

SQLite: one daemon per database, held with `flock` on a file beside it (the kernel
drops it when the process dies). PostgreSQL: each mailbox is a session advisory lock
held on its own connection; when the holder dies the server drops the lock and a
standby daemon takes the mailbox over within seconds. Each daemon also holds a presence
lock of its own for its whole life, so peers count the live daemons (`live_daemon_ids`)
without waiting for a dead one's heartbeat to go stale.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy import Connection, Engine, create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

from inboxd.errors import InboxdError
from inboxd.models import Daemon

# pg_locks shows a bigint advisory key as classid (high 32 bits), objid (low), objsubid 1.
_HELD_ADVISORY = text(
    "SELECT classid::bigint, objid::bigint FROM pg_locks"
    " WHERE locktype = 'advisory' AND objsubid = 1 AND granted"
)


def lock_key(kind: str, name: str) -> int:
    """A stable signed 64-bit advisory-lock key for (kind, name)."""
    digest = hashlib.sha256(f"inboxd:{kind}:{name}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def _split(key: int) -> tuple[int, int]:
    """(classid, objid) under which pg_locks lists the advisory lock `key`."""
    return (key >> 32) & 0xFFFFFFFF, key & 0xFFFFFFFF


def _held_keys(conn: Connection) -> set[tuple[int, int]]:
    return {(int(c), int(o)) for c, o in conn.execute(_HELD_ADVISORY).all()}


def _session_engine(engine: Engine) -> Engine:
    # A pool would keep the session (and its locks) alive after close: no pooling here.
    return create_engine(engine.url.render_as_string(hide_password=False), poolclass=NullPool)


def live_daemon_ids(engine: Engine, *, now: datetime, dead_after: timedelta) -> set[str]:
    """Daemons not stopped, with a heartbeat younger than `dead_after` and (PostgreSQL)
    still holding their presence lock: a killed daemon drops out at once."""
    table = Daemon.__table__  # type: ignore[attr-defined]
    with engine.connect() as conn:
        rows = conn.execute(
            table.select()
            .with_only_columns(table.c.id)
            .where(table.c.stopped_at.is_(None), table.c.heartbeat_at > now - dead_after)
        ).all()
        ids = {str(r[0]) for r in rows}
        if engine.dialect.name != "postgresql" or not ids:
            return ids
        held = _held_keys(conn)
    return {i for i in ids if _split(lock_key("daemon", i)) in held}


class DaemonPresence:
    """A PostgreSQL session lock held while the daemon runs: the server drops it the moment
    the process (or its connection) dies. `hold` is idempotent and re-takes a lost lock."""

    def __init__(self, engine: Engine, daemon_id: str) -> None:
        self.shared = engine.dialect.name == "postgresql"
        self.engine = _session_engine(engine) if self.shared else engine
        self.key = lock_key("daemon", daemon_id)
        self._conn: Connection | None = None

    def hold(self) -> None:
        if not self.shared:
            return
        if self._conn is not None:
            try:
                self._conn.execute(text("SELECT 1"))
                return
            except Exception:  # noqa: BLE001 - the session and its lock are gone: retake
                self.release()
        conn = self.engine.connect()
        conn.execution_options(isolation_level="AUTOCOMMIT")
        try:
            conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": self.key})
        except BaseException:
            conn.close()
            raise
        self._conn = conn

    def release(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except Exception:  # noqa: BLE001
                pass
            self._conn = None


@contextmanager
def daemon_lock(engine: Engine) -> Iterator[None]:
    """Refuse a second daemon on one SQLite database; PostgreSQL needs no such lock."""
    if engine.dialect.name != "sqlite":
        yield
        return
    database = make_url(str(engine.url)).database
    if not database or database == ":memory:":
        yield
        return
    path = Path(database + ".daemon.lock")
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "?"
            raise InboxdError(
                f"another inboxd daemon (pid {holder}) is running on {database} "
                "(SQLite allows one; use PostgreSQL to run several)"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield
    finally:
        os.close(fd)  # closing drops the lock


class MailboxLease:
    """Exclusive right to work one mailbox, for as long as this process holds it."""

    def __init__(self, engine: Engine, mailbox: str) -> None:
        self.shared = engine.dialect.name == "postgresql"
        self.engine = _session_engine(engine) if self.shared else engine
        self._pooled = engine  # for looks that hold nothing
        self.mailbox = mailbox
        self.key = lock_key("mailbox", mailbox)
        self._conn: Connection | None = None

    def acquire(self) -> bool:
        """Try once; True when this process now owns the mailbox."""
        if not self.shared:
            return True  # the daemon-wide flock already makes us the only worker
        if self._conn is None:
            self._conn = self.engine.connect()
            self._conn.execution_options(isolation_level="AUTOCOMMIT")
        got = bool(
            self._conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": self.key}).scalar()
        )
        if not got:
            self.release()
        return got

    @property
    def held(self) -> bool:
        """Whether this process holds the lock (as far as it knows: see `alive`)."""
        return not self.shared or self._conn is not None

    def is_free(self) -> bool:
        """Whether no session at all holds this mailbox's lock (a look, not a try)."""
        if not self.shared:
            return True
        with self._pooled.connect() as conn:
            return _split(self.key) not in _held_keys(conn)

    def alive(self) -> bool:
        """False once the lock's connection is gone (the lock went with it)."""
        if not self.shared:
            return True
        if self._conn is None:
            return False
        try:
            self._conn.execute(text("SELECT 1"))
            return True
        except Exception:  # noqa: BLE001 - any failure means the session and its lock are gone
            self.release()
            return False

    def release(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()  # ends the session: the server drops its advisory locks
            except Exception:  # noqa: BLE001
                pass
            self._conn = None
