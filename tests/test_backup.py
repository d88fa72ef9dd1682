"""`inboxd db backup`: an online SQLite copy taken while mail is being written."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

from servers import Database
from support import Box, cli, cli_json, make_mail, write_config

from inboxd.config import load_settings
from inboxd.db import make_engine, session_scope
from inboxd.tickets import intake

WRITER_PAUSE_S = 0.005


class Writer(threading.Thread):
    """Stores one new customer mail (a new ticket) per transaction until stopped."""

    def __init__(self, config: Path) -> None:
        super().__init__(daemon=True)
        settings = load_settings(config)
        self.engine = make_engine(settings.inboxd.database)
        self.cfg = intake.IntakeConfig.from_settings(settings, secret=b"k", rules=None)
        self.stop = threading.Event()
        self.written = 0
        self.error: BaseException | None = None

    def write_one(self) -> None:
        n = self.written + 1
        data = make_mail(
            subject=f"Question {n}",
            sender=f"customer{n}@client.example",
            body=f"Question number {n}.\n" + "padding line\n" * 2000,
        )
        with session_scope(self.engine) as s:
            intake.receive(s, self.cfg, mailbox="support", data=data, source="pipe")
        self.written = n

    def run(self) -> None:
        try:
            while not self.stop.wait(WRITER_PAUSE_S):
                self.write_one()
        except BaseException as exc:
            self.error = exc


def tickets_by_id(config: Path) -> dict[int, dict[str, object]]:
    return {t["id"]: t for t in cli_json(config, "ticket", "list", "--all")}


def test_backup_while_writing_is_a_consistent_readable_copy(
    sqlite_database: Database, tmp_path: Path
) -> None:
    config = write_config(
        tmp_path / "live",
        database=sqlite_database.url,
        boxes=[Box("support", "support@example.com")],
    )
    writer = Writer(config)
    for _ in range(60):  # a few MB, so the copy takes a moment
        writer.write_one()
    writer.start()
    try:
        before = writer.written
        copy = tmp_path / "backups" / "copy.db"
        copy.parent.mkdir()
        summary = cli_json(config, "db", "backup", str(copy))
        during = writer.written
    finally:
        writer.stop.set()
        writer.join(10)
    assert writer.error is None
    assert during > before  # mail kept arriving while the command ran

    assert summary["path"] == str(copy) and summary["integrity"] == "ok"
    assert summary["bytes"] == copy.stat().st_size > 1_000_000
    counts = summary["tables"]
    # One snapshot: each stored mail has its delivery, its ticket, the ack intake queued
    # for it (an outbox row and an outbound message), and raw bytes for both messages.
    tickets = counts["ticket"]
    assert before <= tickets <= writer.written
    assert (counts["delivery"], counts["outbox"], counts["message"]) == (
        tickets,
        tickets,
        2 * tickets,
    )
    assert counts["raw_mail"] == counts["message"]
    assert (copy.stat().st_mode & 0o777) == 0o600
    assert not list(copy.parent.glob(".*partial*"))
    conn = sqlite3.connect(copy)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"  # one file
    finally:
        conn.close()

    copy_config = write_config(
        tmp_path / "restored",
        database=f"sqlite:///{copy}",
        boxes=[Box("support", "support@example.com")],
    )
    copied = tickets_by_id(copy_config)
    live = tickets_by_id(config)
    assert sorted(copied) == list(range(1, counts["ticket"] + 1))
    for ticket_id, doc in copied.items():
        assert doc == live[ticket_id]
    upgrade = cli(copy_config, "db", "upgrade").stdout.decode()
    assert upgrade.startswith("database schema is current")


def test_backup_refuses_to_overwrite_and_names_a_folder_target(
    sqlite_database: Database, tmp_path: Path
) -> None:
    config = write_config(
        tmp_path, database=sqlite_database.url, boxes=[Box("support", "support@example.com")]
    )
    target = tmp_path / "exists.db"
    target.write_bytes(b"precious")
    proc = cli(config, "db", "backup", str(target), check=False)
    assert proc.returncode == 1
    assert proc.stderr.decode() == f"inboxd: error: {target} exists (pass --force to replace it)\n"
    assert target.read_bytes() == b"precious"

    replaced = cli_json(config, "db", "backup", str(target), "--force")
    assert replaced["integrity"] == "ok" and target.read_bytes()[:15] == b"SQLite format 3"

    folder = tmp_path / "nightly"
    folder.mkdir()
    text = cli(config, "db", "backup", str(folder)).stdout.decode()
    made = list(folder.glob("inboxd-*.db"))
    assert len(made) == 1 and text.startswith(f"{made[0]}: ")
    assert "integrity ok" in text and "ticket 0" in text


def test_backup_on_postgresql_points_to_pg_dump(
    postgres_database: Database, tmp_path: Path
) -> None:
    config = write_config(
        tmp_path, database=postgres_database.url, boxes=[Box("support", "support@example.com")]
    )
    proc = cli(config, "db", "backup", str(tmp_path / "x.db"), check=False)
    assert proc.returncode == 1
    err = proc.stderr.decode()
    assert err.count("\n") == 1
    assert err.startswith("inboxd: error: db backup copies SQLite databases only;")
    assert "pg_dump -Fc" in err and "pg_restore" in err
    assert not (tmp_path / "x.db").exists()
