"""A daemon's SQLite writers never checkpoint the WAL themselves: a thread of its own
copies their pages into the database after commits, and the log stays bounded."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from conftest import Database
from sqlalchemy import text

from inboxd import checkpoint
from inboxd.db import make_engine


def _sizes(db: Path) -> tuple[int, int]:
    wal = Path(f"{db}-wal")
    return db.stat().st_size, wal.stat().st_size if wal.exists() else 0


def test_commits_are_checkpointed_by_the_background_thread(
    sqlite_database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """40 batches of 1 MB committed back to back: the thread copies them all into the
    database, and empties the log whenever it passes the limit (8 MB here)."""
    monkeypatch.setattr(checkpoint, "WAL_LIMIT_BYTES", 8 << 20)
    db = Path(sqlite_database.url.removeprefix("sqlite:///"))
    engine = make_engine(sqlite_database.url)
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE filler (data BLOB)"))
    start_db, _ = _sizes(db)
    cp = checkpoint.WalCheckpointer(engine)
    try:
        with engine.connect() as conn:  # the writers' own connections do not checkpoint
            assert conn.execute(text("PRAGMA wal_autocheckpoint")).scalar() == 0
        for _ in range(40):
            with engine.begin() as conn:
                conn.execute(text("INSERT INTO filler VALUES (:d)"), {"d": os.urandom(1 << 20)})
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            grown, wal = _sizes(db)
            if grown - start_db >= 40 << 20 and wal <= 8 << 20:
                break
            time.sleep(0.05)
        # Only a checkpoint writes the database file, and only the thread checkpointed.
        assert grown - start_db >= 40 << 20
        assert wal <= 8 << 20, wal
    finally:
        cp.close()
    assert not cp._thread.is_alive()
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM filler")).scalar() == 40
    engine.dispose()
