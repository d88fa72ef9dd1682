"""Who works what: nothing here outlives its process, so a killed daemon restarts at once.

SQLite: one daemon per database, held with `flock` on a file beside it (the kernel
drops it when the process dies). PostgreSQL: each mailbox is a session advisory lock
held on its own connection; when the holder dies the server drops the lock and a
standby daemon takes the mailbox over within seconds.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import Connection, Engine, create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

from inboxd.errors import InboxdError


def lock_key(kind: str, name: str) -> int:
    """A stable signed 64-bit advisory-lock key for (kind, name)."""
    digest = hashlib.sha256(f"inboxd:{kind}:{name}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


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
        # A pool would keep the session (and its lock) alive after close: no pooling here.
        self.engine = (
            create_engine(engine.url.render_as_string(hide_password=False), poolclass=NullPool)
            if self.shared
            else engine
        )
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
