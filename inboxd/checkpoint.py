"""Background WAL checkpoints for a daemon's SQLite engine.

By default SQLite checkpoints inside the COMMIT that takes the write-ahead log past
1,000 pages: the committing thread copies every page the log holds back into the
database file, random writes all over a large file, while the mailbox's batch waits.
A daemon's engine turns that off on its own connections (`wal_autocheckpoint=0`) and
this thread checkpoints instead, right after commits, on a connection of its own:
sqlite3 releases the GIL, so the copy runs beside the next batch.

PASSIVE checkpoints never wait for readers or writers; the log rewinds to its start
when a writer finds it all copied. Should writers keep it from rewinding until it passes
`WAL_LIMIT_BYTES`, a TRUNCATE checkpoint (which waits for the writer between two
transactions) empties it. Other processes (the CLI, `inboxd deliver`)
keep SQLite's default, so the log stays bounded when no daemon runs.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sqlalchemy import Engine

log = logging.getLogger("inboxd.checkpoint")

COALESCE_S = 0.05  # let the commits of a burst land before copying their pages
IDLE_CHECK_S = 5.0  # a checkpoint at least this often, commit or not
WAL_LIMIT_BYTES = 64 * 1024 * 1024
CHECKPOINT_BUSY_MS = 1000


class WalCheckpointer:
    """Checkpoints `engine`'s database after its commits, in a thread of its own."""

    def __init__(self, engine: Engine) -> None:
        from sqlalchemy import event

        assert engine.dialect.name == "sqlite", "WAL checkpoints are a SQLite matter"
        self._engine = engine
        self._dirty = threading.Event()
        self._stopping = False
        event.listen(engine, "connect", _no_autocheckpoint)
        event.listen(engine, "commit", self._committed)
        engine.dispose()  # connections opened before the hook get it on reconnect
        self._thread = threading.Thread(target=self._run, name="wal-checkpoint", daemon=True)
        self._thread.start()

    def _committed(self, _conn: Any) -> None:
        self._dirty.set()

    def _run(self) -> None:
        database = self._engine.url.database or ""
        conn = sqlite3.connect(database, check_same_thread=False)
        try:
            # Short: a TRUNCATE checkpoint holds writers off while it waits for readers.
            conn.execute(f"PRAGMA busy_timeout={CHECKPOINT_BUSY_MS}")
            while not self._stopping:
                self._dirty.wait(IDLE_CHECK_S)
                if self._stopping:
                    break
                self._dirty.clear()
                time.sleep(COALESCE_S)
                _checkpoint(conn, "PASSIVE")
                if _size(database + "-wal") > WAL_LIMIT_BYTES:
                    _checkpoint(conn, "TRUNCATE")
            _checkpoint(conn, "PASSIVE")  # leave a short log behind for the next start
        finally:
            conn.close()

    def close(self) -> None:
        """Stop the thread after one last checkpoint; commits after this do their own."""
        from sqlalchemy import event

        self._stopping = True
        self._dirty.set()
        self._thread.join(10)
        event.remove(self._engine, "connect", _no_autocheckpoint)
        event.remove(self._engine, "commit", self._committed)


def _no_autocheckpoint(dbapi_conn: Any, _record: Any) -> None:
    dbapi_conn.execute("PRAGMA wal_autocheckpoint=0")


def _checkpoint(conn: sqlite3.Connection, mode: str) -> None:
    try:
        conn.execute(f"PRAGMA wal_checkpoint({mode})").fetchall()
    except sqlite3.Error as exc:  # busy or locked: the next commit tries again
        level = logging.WARNING if mode == "TRUNCATE" else logging.DEBUG
        log.log(level, "WAL checkpoint failed", extra={"mode": mode, "error": str(exc)})


def _size(path: str) -> int:
    try:
        return os.path.getsize(path)
    except OSError:
        return 0
