"""Upkeep of SQLite's full-text index: one merge a day keeps intake and search fast.

FTS5 writes each transaction's new terms as a small segment and merges segments as
they pile up (`automerge`), inside the writing transaction. On a large index that
incremental merging is the dearest part of storing a mail: with a million messages it
made the message INSERT three times dearer than on a small database (bench/history.py).
Once a day the daemon merges the whole index into one segment (FTS5 `optimize`, a few
seconds for a million messages, during which writers wait); afterwards new mail merges
only into the day's small segments, and searches read fewer segments too.

PostgreSQL's GIN index needs nothing of the kind (autovacuum keeps it).
"""

from __future__ import annotations

import logging
import time
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from inboxd.db import session_scope, upsert
from inboxd.models import Setting

if TYPE_CHECKING:
    from sqlalchemy import Engine

log = logging.getLogger("inboxd.searchindex")

OPTIMIZE_EVERY = timedelta(hours=24)
_LAST_OPTIMIZED = "search-index-optimized-at"


def optimize_if_due(engine: Engine, now: datetime, *, every: timedelta = OPTIMIZE_EVERY) -> bool:
    """Merge the SQLite full-text index when the last merge is `every` old (or never ran).

    True when it merged. The check and the merge share one write transaction, so two
    processes (a daemon and a `run --once`) never both merge.
    """
    if engine.dialect.name != "sqlite":
        return False
    from sqlalchemy import text

    started = time.perf_counter()
    with session_scope(engine) as s:
        row = s.get(Setting, _LAST_OPTIMIZED)
        if row is not None and now - datetime.fromisoformat(row.value) < every:
            return False
        s.execute(text("INSERT INTO message_fts(message_fts) VALUES ('optimize')"))
        stmt = upsert("sqlite", Setting).values(key=_LAST_OPTIMIZED, value=now.isoformat())
        s.execute(
            stmt.on_conflict_do_update(index_elements=["key"], set_={"value": now.isoformat()})
        )
    log.info("search index optimized", extra={"seconds": round(time.perf_counter() - started, 2)})
    return True
