"""Several daemons: one per SQLite database; on PostgreSQL they share mailboxes and take over."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

from servers import Database, Dovecot
from sqlalchemy import func
from sqlmodel import Session, select
from support import Box, daemon, daemon_log, make_mail, wait_for, write_config

from inboxd.models import MailboxState, Ticket


def _boxes(dovecot: Dovecot, *names: str) -> list[Box]:
    out = []
    for name in names:
        user, password = dovecot.new_user()
        out.append(Box(name=name, address=f"{name}@example.com", user=user, password=password))
    return out


def _owners(db: Database) -> dict[str, str | None]:
    with Session(db.engine) as s:
        return {r.name: r.owner for r in s.exec(select(MailboxState)).all()}


def _tickets(db: Database) -> int:
    with Session(db.engine) as s:
        return int(s.exec(select(func.count()).select_from(Ticket)).one())


def test_second_daemon_on_sqlite_refuses_to_start(
    tmp_path: Path, sqlite_database: Database, dovecot: Dovecot
) -> None:
    config = write_config(
        tmp_path / "cfg",
        database=sqlite_database.url,
        boxes=_boxes(dovecot, "support"),
        imap_port=dovecot.port,
    )
    with daemon(config):
        wait_for(lambda: _owners(sqlite_database).get("support"), what="the first daemon")
        second = subprocess.run(
            [sys.executable, "-m", "inboxd", "--config", str(config), "run"],
            capture_output=True,
            timeout=30,
            check=False,
        )
    assert second.returncode == 1
    err = second.stderr.decode()
    assert err.startswith("inboxd: error: another inboxd daemon")
    assert "Traceback" not in err


def test_two_daemons_on_postgresql_split_and_take_over(
    tmp_path: Path, postgres_database: Database, dovecot: Dovecot
) -> None:
    db = postgres_database
    boxes = _boxes(dovecot, "support", "billing")
    config = write_config(tmp_path / "cfg", database=db.url, boxes=boxes, imap_port=dovecot.port)
    with daemon(config) as first:
        wait_for(lambda: all(_owners(db).get(b.name) for b in boxes), what="mailboxes owned")
        [first_id] = set(_owners(db).values())  # alone, the first daemon works both
        with daemon(config) as second:
            wait_for(
                lambda: len(set(_owners(db).values())) == 2 and all(_owners(db).values()),
                timeout=45,
                what="the two daemons to share the mailboxes, one each",
            )
            first.send_signal(signal.SIGKILL)
            first.wait()
            started = time.monotonic()
            wait_for(
                lambda: (
                    len(set(_owners(db).values())) == 1
                    and first_id not in _owners(db).values()
                    and all(_owners(db).values())
                ),
                timeout=30,
                what="the survivor to take over both mailboxes",
            )
            takeover_s = time.monotonic() - started
            for b in boxes:
                dovecot.append(b.user or "", "INBOX", make_mail(subject=f"after {b.name}"))
            wait_for(lambda: _tickets(db) == 2, timeout=30, what="mail after the takeover")
            assert second.poll() is None, daemon_log(config)
    assert takeover_s < 15
