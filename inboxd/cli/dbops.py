"""`inboxd db backup|purge`: an online SQLite copy, and the retention purge on demand."""

from __future__ import annotations

import os
import sqlite3
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any

import typer

from inboxd.cli.common import STATE, emit_json
from inboxd.errors import ConfigError, InboxdError

BACKUP_BUSY_S = 30.0


def register(db_app: typer.Typer) -> None:
    db_app.command("backup")(backup)
    db_app.command("purge")(purge)


def backup(
    path: Annotated[
        Path, typer.Argument(help="The copy to write; a folder gets inboxd-<UTC time>.db in it.")
    ],
    force: Annotated[bool, typer.Option("--force", help="Replace PATH if it exists.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """Copy the SQLite database while the daemon runs, then check the copy."""
    from sqlalchemy.engine import make_url

    from inboxd.clock import utcnow
    from inboxd.db import is_sqlite

    url = STATE.settings.inboxd.database
    if not is_sqlite(url):
        parsed = make_url(url)
        raise InboxdError(
            "db backup copies SQLite databases only; back up PostgreSQL with "
            f"`pg_dump -Fc -f inboxd.dump {parsed.database or 'DBNAME'}` and restore it with "
            "`pg_restore -d DBNAME inboxd.dump`"
        )
    source = make_url(url).database
    if not source or source == ":memory:":
        raise ConfigError("[inboxd] database is an in-memory SQLite database: nothing to copy")
    if path.is_dir():
        path = path / f"inboxd-{utcnow():%Y%m%dT%H%M%SZ}.db"
    summary = backup_sqlite(Path(source), path, force=force)
    if as_json:
        emit_json(summary)
        return
    tables = ", ".join(f"{name} {count}" for name, count in summary["tables"].items())
    print(  # noqa: T201
        f"{summary['path']}: {summary['bytes']} bytes, integrity ok, "
        f"schema revision {summary['revision'] or '-'}\n{tables}"
    )


def backup_sqlite(source: Path, target: Path, *, force: bool = False) -> dict[str, Any]:
    """Copy `source` to `target` with SQLite's online backup, then verify the copy.

    The copy is one consistent snapshot even while the daemon writes (one backup step
    reads every page in a single read transaction; under WAL writers go on meanwhile).
    It is written next to `target` and renamed into place only once `PRAGMA
    integrity_check` says ok, so `target` is never a half-written file. The copy is in
    rollback-journal mode: one self-contained file, readable by the owner only.
    """
    if not source.is_file():
        raise InboxdError(f"database file not found: {source}")
    if target.exists() and not force:
        raise InboxdError(f"{target} exists (pass --force to replace it)")
    if not target.parent.is_dir():
        raise InboxdError(f"folder not found: {target.parent}")
    partial = target.with_name(f".{target.name}.partial-{os.getpid()}")
    partial.unlink(missing_ok=True)
    os.close(os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    try:
        # URI mode=rw: never create an empty database when the file vanished meanwhile.
        src = sqlite3.connect(f"{source.resolve().as_uri()}?mode=rw", uri=True, timeout=30)
        dst = sqlite3.connect(partial)
        try:
            src.execute(f"PRAGMA busy_timeout={int(BACKUP_BUSY_S * 1000)}")
            src.backup(dst)  # pages=-1: the whole database in one step, one snapshot
            dst.execute("PRAGMA journal_mode=DELETE")
            dst.commit()
        finally:
            src.close()
            dst.close()
        summary = verify_copy(partial)
        with open(partial, "rb") as f:
            os.fsync(f.fileno())
        os.replace(partial, target)
        _fsync_dir(target.parent)
    except sqlite3.Error as exc:
        raise InboxdError(f"backup failed: {exc}") from exc
    finally:
        partial.unlink(missing_ok=True)
    return {"path": str(target), "bytes": target.stat().st_size} | summary


def verify_copy(path: Path) -> dict[str, Any]:
    """Integrity check, schema revision and row counts of a SQLite file (read only)."""
    conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    try:
        problems = [row[0] for row in conn.execute("PRAGMA integrity_check")]
        if problems != ["ok"]:
            raise InboxdError(f"the copy fails the integrity check: {'; '.join(problems[:3])}")
        names = [
            row[0]
            for row in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' "
                "AND name NOT LIKE 'sqlite_%' AND sql NOT LIKE 'CREATE VIRTUAL TABLE%' "
                "ORDER BY name"
            )
        ]
        tables = {
            name: conn.execute(f'SELECT count(*) FROM "{name}"').fetchone()[0]  # noqa: S608 - names from sqlite_master
            for name in names
        }
        revision = None
        if "alembic_version" in tables:
            row = conn.execute("SELECT version_num FROM alembic_version").fetchone()
            revision = row[0] if row else None
    finally:
        conn.close()
    return {"integrity": "ok", "revision": revision, "tables": tables}


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def purge(
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Count what would be purged; change nothing.")
    ] = False,
    older_than: Annotated[
        str | None,
        typer.Option("--older-than", help='Override [inboxd] retention, e.g. "90d".'),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """Drop the raw mail of tickets closed longer than [inboxd] retention."""
    from inboxd.clock import utcnow
    from inboxd.config import parse_duration
    from inboxd.db import session_scope
    from inboxd.tickets import privacy
    from inboxd.tickets.views import iso

    retention = _retention(older_than, parse_duration)
    now = utcnow()
    with session_scope(STATE.engine) as s:
        found = privacy.count_purgeable(s, older_than=retention, now=now)
        purged = 0 if dry_run else privacy.purge_closed(s, older_than=retention, now=now)
    doc = {
        "dry_run": dry_run,
        "closed_before": iso(found.cutoff),
        "tickets": found.tickets,
        "raw_mails": found.raw_mails if dry_run else purged,
    }
    if as_json:
        emit_json(doc)
        return
    verb = "would purge" if dry_run else "purged"
    print(  # noqa: T201
        f"{verb} the raw mail of {doc['raw_mails']} messages on {found.tickets} tickets "
        f"closed before {doc['closed_before']}"
    )


def _retention(older_than: str | None, parse: Any) -> timedelta:
    if older_than is not None:
        try:
            value: timedelta = parse(older_than)
        except ValueError as exc:
            raise ConfigError(f"--older-than: {exc}") from None
        if value <= timedelta(0):
            raise ConfigError("--older-than: must be longer than zero")
        return value
    retention = STATE.settings.inboxd.retention
    if retention is None:
        raise ConfigError(
            'no retention set (add retention = "365d" to [inboxd], or pass --older-than)'
        )
    return retention
