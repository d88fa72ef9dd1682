"""Upkeep of SQLite's full-text index: one merge a day keeps intake and search fast.

FTS5 writes each transaction's new terms as a small segment and merges segments as
they pile up (`automerge`), inside the writing transaction. On a large index that
incremental merging is the dearest part of storing a mail: with a million messages it
made the message INSERT three times dearer than on a small database (bench/history.py).
Once a day the daemon merges the whole index into one segment (FTS5 `optimize`, a few
seconds for a million messages, during which writers wait), in a quiet hour of the night
(`[inboxd] search_merge_hour`); afterwards new mail merges only into the day's small
segments, and searches read fewer segments too.

A mailbox worker's batch of mail is indexed once, at the end of its transaction
(`deferred`, migration 0007): FTS5 writes a segment at every statement otherwise.

PostgreSQL's GIN index needs nothing of the kind (autovacuum keeps it).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, tzinfo
from typing import TYPE_CHECKING

from sqlalchemy import text

from inboxd.db import session_scope, upsert
from inboxd.models import Setting

if TYPE_CHECKING:
    from sqlalchemy import Engine
    from sqlmodel import Session

log = logging.getLogger("inboxd.searchindex")

MIN_GAP = timedelta(hours=20)  # one merge per quiet hour, whatever the check's schedule
OVERDUE = timedelta(hours=48)  # a daemon never running at the quiet hour still merges
_LAST_OPTIMIZED = "search-index-optimized-at"


def optimize_if_due(engine: Engine, now: datetime, *, zone: tzinfo = UTC, hour: int = 3) -> bool:
    """Merge the SQLite full-text index once a day, in the quiet `hour` (local to `zone`).

    Writers wait while it runs (seconds on a large index), so it waits for the night:
    it merges when the local clock shows `hour` and the last merge is `MIN_GAP` old,
    or at any hour once the last merge is `OVERDUE`. The first check on a database
    only starts the clock. True when it merged. The check and the merge share one
    write transaction, so two processes (a daemon and a `run --once`) never both merge.
    """
    if engine.dialect.name != "sqlite":
        return False
    started = time.perf_counter()
    with session_scope(engine) as s:
        row = s.get(Setting, _LAST_OPTIMIZED)
        if row is None:
            _record(s, now)
            return False
        since = now - datetime.fromisoformat(row.value)
        quiet = now.astimezone(zone).hour == hour
        if not ((quiet and since >= MIN_GAP) or since >= OVERDUE):
            return False
        _merge(s, now)
    log.info("search index optimized", extra={"seconds": round(time.perf_counter() - started, 2)})
    return True


def optimize(engine: Engine, now: datetime) -> None:
    """Merge the SQLite full-text index now, whatever the hour (a freshly built history)."""
    if engine.dialect.name == "sqlite":
        with session_scope(engine) as s:
            _merge(s, now)


def _merge(session: Session, now: datetime) -> None:
    session.execute(text("INSERT INTO message_fts(message_fts) VALUES ('optimize')"))
    _record(session, now)


def _record(session: Session, now: datetime) -> None:
    stmt = upsert("sqlite", Setting).values(key=_LAST_OPTIMIZED, value=now.isoformat())
    session.execute(
        stmt.on_conflict_do_update(index_elements=["key"], set_={"value": now.isoformat()})
    )


@contextlib.contextmanager
def deferred(session: Session) -> Iterator[None]:
    """The messages the block stores are indexed in one statement when it ends (SQLite).

    Call inside a writing transaction, before the block's first message: the mark in
    `fts_deferred` (migration 0007) tells the triggers to leave every message above the
    current largest id to this function. A mark some earlier transaction left behind
    (it cannot happen, save by a bug) is taken over, so what it kept out is indexed too.
    On an exception nothing is indexed: the caller rolls the transaction back.
    """
    if session.get_bind().dialect.name != "sqlite":
        yield
        return
    left = session.execute(text("SELECT min(above) FROM fts_deferred")).scalar()
    top = session.execute(text("SELECT coalesce(max(id), 0) FROM message")).scalar_one()
    above = min(left, top) if left is not None else top
    if left is not None:
        log.warning("full-text index: taking over a deferral mark", extra={"above": left})
        session.execute(text("DELETE FROM fts_deferred"))
    session.execute(text("INSERT INTO fts_deferred (above) VALUES (:above)"), {"above": above})
    yield
    session.flush()
    session.execute(_INDEX_ABOVE, {"above": above})
    session.execute(text("DELETE FROM fts_deferred"))


_INDEX_ABOVE = text(
    "INSERT INTO message_fts(rowid, subject, body, addrs) "
    "SELECT d.id, d.subject, d.body, d.addrs FROM message_search_doc AS d "
    "JOIN message AS m ON m.id = d.id "
    "WHERE m.id > :above AND NOT (m.direction = 'out' AND m.author IS NULL)"
)
