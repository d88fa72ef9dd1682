"""`inboxd import`: a backfill from an mbox file or a Maildir, safe to run twice."""

from __future__ import annotations

import mailbox
from pathlib import Path

from servers import Database
from sqlmodel import Session, select
from support import Box, cli_json, make_mail, write_config

from inboxd.cli.ingest import IMPORT_COMMIT_EVERY
from inboxd.models import Delivery, Message, Outbox


def test_an_mbox_and_a_maildir_are_imported_once_whatever_the_runs(
    tmp_path: Path, sqlite_database: Database
) -> None:
    # More than two commits' worth: the last batch is a partial one.
    n = 2 * IMPORT_COMMIT_EVERY + 50
    mails = [
        make_mail(subject=f"old {i}", message_id=f"<old-{i}@client.example>") for i in range(n)
    ]
    archive = mailbox.mbox(tmp_path / "archive.mbox")
    for data in mails:
        archive.add(data)
    archive.close()
    maildir = mailbox.Maildir(tmp_path / "Maildir")
    for data in [mails[0], make_mail(subject="newer 1"), make_mail(subject="newer 2")]:
        maildir.add(data)  # the first is in the mbox too
    maildir.close()
    config = write_config(
        tmp_path / "cfg",
        database=sqlite_database.url,
        boxes=[Box(name="support", address="support@example.com")],
    )

    def imported(path: Path) -> dict[str, int]:
        summary: dict[str, int] = cli_json(config, "import", str(path), "--mailbox", "support")
        return summary

    first = imported(tmp_path / "archive.mbox")
    assert first == {"stored": n, "duplicates": 0, "quarantined": 0, "tickets": n}
    again = imported(tmp_path / "archive.mbox")
    assert again == {"stored": 0, "duplicates": n, "quarantined": 0, "tickets": 0}
    assert imported(tmp_path / "Maildir") == {
        "stored": 2,
        "duplicates": 1,
        "quarantined": 0,
        "tickets": 2,
    }

    with Session(sqlite_database.engine) as s:
        subjects = s.exec(select(Message.subject).where(Message.direction == "in")).all()
        deliveries = s.exec(select(Delivery.source, Delivery.mailbox)).all()
        # Backfilled mail is never acknowledged: the customers wrote long ago.
        assert s.exec(select(Outbox.id)).all() == []
    assert sorted(subjects) == sorted([f"old {i}" for i in range(n)] + ["newer 1", "newer 2"])
    assert set(deliveries) == {("import", "support")} and len(deliveries) == n + 2


def test_a_backfill_of_large_mails_holds_a_bounded_number_of_bytes() -> None:
    """Batches close at `IMPORT_COMMIT_EVERY` mails or at the byte bound, whichever comes
    first: two batches of 25 MB mails never hold gigabytes."""
    from inboxd.mail.sources import SourceMail, batched

    def sizes(mails: list[SourceMail], count: int) -> list[int]:
        found = batched(mails, count=count, max_bytes=3_000_000, size=lambda m: len(m.data))
        return [len(b) for b in found]

    big = [SourceMail(f"big-{i}", b"x" * 1_000_000) for i in range(10)]
    assert sizes(big, IMPORT_COMMIT_EVERY) == [3, 3, 3, 1]
    small = [SourceMail(f"small-{i}", b"x" * 100) for i in range(5)]
    assert sizes(small, 2) == [2, 2, 1]
