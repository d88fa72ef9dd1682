"""Every real-world mail in ../shared/corpus goes through IMAP into inboxd without a crash."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from servers import Database, Dovecot
from sqlalchemy import func
from sqlmodel import Session, select
from support import CORPUS, Box, cli, cli_json, write_config

from inboxd.models import Delivery, Message

SKIP_NAMES = {"LICENSE", "LICENSE.txt", "README", "README.md", "copyright"}
pytestmark = pytest.mark.skipif(not CORPUS.is_dir(), reason="../shared/corpus is absent")


def corpus_files() -> list[Path]:
    return sorted(
        p
        for p in CORPUS.rglob("*")
        if p.is_file() and p.name not in SKIP_NAMES and p.suffix not in (".json", ".md")
    )


def test_every_corpus_mail_is_stored_once_and_nothing_stops_the_worker(
    tmp_path: Path, sqlite_database: Database, dovecot: Dovecot
) -> None:
    files = corpus_files()
    assert len(files) > 400
    user, password = dovecot.new_user()
    imap = dovecot.client(user, timeout=60)
    appended: list[Path] = []
    refused: list[Path] = []
    try:
        for path in files:
            try:
                imap.append("INBOX", path.read_bytes())
                appended.append(path)
            except Exception:  # Dovecot refuses some binary junk (NUL bytes): not mail
                refused.append(path)
    finally:
        imap.logout()
    box = Box(name="support", address="support@example.com", user=user, password=password)
    config = write_config(
        tmp_path / "cfg", database=sqlite_database.url, boxes=[box], imap_port=dovecot.port
    )
    cli(config, "run", "--once")

    with Session(sqlite_database.engine) as s:
        deliveries = s.exec(select(func.count()).select_from(Delivery)).one()
        inbound = s.exec(select(func.count()).where(Message.direction == "in")).one()
        quarantined = s.exec(select(func.count()).where(Message.quarantined)).one()
    # One delivery per distinct mail; duplicates in the corpus (same Message-ID) fold.
    assert deliveries == inbound
    assert inbound <= len(appended)
    distinct_bytes = len({p.read_bytes() for p in appended})
    assert inbound >= distinct_bytes - _same_message_id_pairs(appended)
    status = cli_json(config, "status")
    assert status["mailboxes"][0]["last_error"] is None
    assert status["quarantined"] == quarantined
    print(  # noqa: T201
        f"corpus: {len(files)} files, {len(appended)} appended, {len(refused)} refused by "
        f"Dovecot, {inbound} stored, {quarantined} quarantined"
    )


def _same_message_id_pairs(paths: list[Path]) -> int:
    """How many files repeat a Message-ID of an earlier file (inboxd keeps one of each)."""
    from inboxd.mail.parse import UnparsableMail, parse

    seen: set[str] = set()
    repeats = 0
    for p in paths:
        try:
            mid = parse(p.read_bytes()).message_id
        except UnparsableMail:
            continue
        if mid in seen:
            repeats += 1
        elif mid:
            seen.add(mid)
    return repeats


def test_quarantined_mail_is_visible(tmp_path: Path, sqlite_database: Database) -> None:
    outlook = CORPUS / "mail-parser" / "mails" / "mail_outlook_1"
    config = write_config(
        tmp_path / "cfg",
        database=sqlite_database.url,
        boxes=[Box(name="support", address="support@example.com")],
    )
    out = cli(config, "deliver", "--mailbox", "support", input=outlook.read_bytes())
    assert b"quarantined" in out.stderr
    with Session(sqlite_database.engine) as s:
        row = s.exec(select(Message).where(Message.quarantined)).one()
    doc = cli_json(config, "message", "show", f"#{row.id}")
    assert doc["quarantined"] is True
    assert doc["quarantine_reason"]
    assert json.loads(cli(config, "status", "--json", check=False).stdout)["quarantined"] == 1
