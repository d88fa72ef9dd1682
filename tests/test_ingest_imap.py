"""Ingestion against the private Dovecot: exactly once, IDLE push, outages, UIDVALIDITY."""

from __future__ import annotations

import signal
import socket
import threading
import time
from pathlib import Path

import pytest
from imapclient import IMAPClient
from servers import Database, Dovecot
from sqlalchemy import func
from sqlmodel import Session, select
from support import (
    Box,
    cli,
    cli_json,
    daemon,
    daemon_log,
    make_mail,
    slow_mail,
    wait_for,
    write_config,
)

from inboxd.config import load_settings
from inboxd.daemon import open_runtime
from inboxd.mail import imap
from inboxd.mail.parsepool import ParsePool
from inboxd.models import Delivery, MailboxState, Message, Ticket


def count(db: Database, model: type) -> int:
    """Rows of `model`; for messages, inbound ones (acknowledgements are messages too)."""
    with Session(db.engine) as s:
        q = select(func.count()).select_from(model)
        if model is Message:
            q = q.where(Message.direction == "in")
        return int(s.exec(q).one())


def bulk_append(dovecot: Dovecot, user: str, mails: list[bytes], folder: str = "INBOX") -> None:
    imap = dovecot.client(user, timeout=60)
    try:
        for i in range(0, len(mails), 200):
            imap.multiappend(folder, mails[i : i + 200])
    finally:
        imap.logout()


def config_for(tmp_path: Path, db: Database, dovecot: Dovecot, *boxes: Box) -> Path:
    return write_config(tmp_path / "cfg", database=db.url, boxes=boxes, imap_port=dovecot.port)


def new_box(dovecot: Dovecot, name: str, **kw: object) -> Box:
    user, password = dovecot.new_user()
    return Box(name=name, address=f"{name}@example.com", user=user, password=password, **kw)  # type: ignore[arg-type]


def test_run_once_syncs_several_mailboxes(
    tmp_path: Path, database: Database, dovecot: Dovecot
) -> None:
    support, billing = new_box(dovecot, "support"), new_box(dovecot, "billing", team="billing")
    for i in range(3):
        dovecot.append(support.user or "", "INBOX", make_mail(subject=f"support {i}"))
    dovecot.append(
        billing.user or "",
        "INBOX",
        make_mail(subject="invoice", to="billing@example.com"),
        flags=[b"\\Seen"],
    )  # read on a phone already: still ingested
    config = config_for(tmp_path, database, dovecot, support, billing)

    out = cli(config, "run", "--once").stdout.decode()
    assert "support: 3 new" in out and "billing: 1 new" in out

    tickets = cli_json(config, "ticket", "list", "--all")
    assert sorted(t["subject"] for t in tickets) == [
        "invoice",
        "support 0",
        "support 1",
        "support 2",
    ]
    assert {t["team"] for t in tickets if t["subject"] == "invoice"} == {"billing"}
    assert all(t["priority"] == "normal" and t["status"] == "open" for t in tickets)
    # A second run finds nothing new: the cursor, not flags, says what was fetched.
    assert "support: 0 new" in cli(config, "run", "--once").stdout.decode()
    assert count(database, Message) == 4
    status = cli_json(config, "status")
    assert status["healthy"], status["problems"]
    assert {b["name"]: b["last_error"] for b in status["mailboxes"]} == {
        "support": None,
        "billing": None,
    }


def test_same_message_in_two_mailboxes_is_one_message_one_ticket(
    tmp_path: Path, database: Database, dovecot: Dovecot
) -> None:
    support, billing = new_box(dovecot, "support"), new_box(dovecot, "billing", team="billing")
    mail = make_mail(
        subject="Charged twice",
        to="support@example.com, billing@example.com",
        message_id="<cc-both@client.example>",
    )
    dovecot.append(support.user or "", "INBOX", mail)
    dovecot.append(billing.user or "", "INBOX", mail)
    config = config_for(tmp_path, database, dovecot, support, billing)
    cli(config, "run", "--once")

    msg = cli_json(config, "message", "show", "<cc-both@client.example>")
    assert sorted(msg["mailboxes"]) == ["billing", "support"]
    tickets = cli_json(config, "ticket", "list", "--all")
    assert len(tickets) == 1
    assert tickets[0]["mailboxes"] == ["billing", "support"]
    assert count(database, Message) == 1 and count(database, Delivery) == 2


def test_append_while_idling_arrives_and_sigterm_exits_quickly(
    tmp_path: Path, sqlite_database: Database, dovecot: Dovecot
) -> None:
    box = new_box(dovecot, "support")
    config = config_for(tmp_path, sqlite_database, dovecot, box)
    with daemon(config) as proc:
        wait_for(lambda: _idle(sqlite_database, "support"), what="the worker to enter IDLE")
        dovecot.append(
            box.user or "", "INBOX", make_mail(subject="pushed", message_id="<push@c.example>")
        )
        wait_for(lambda: count(sqlite_database, Ticket) == 1, timeout=10, what="the pushed mail")
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0, daemon_log(config)
        assert time.monotonic() - started < 5
    assert cli_json(config, "message", "show", "push@c.example")["ticket"] == 1


def _idle(db: Database, name: str) -> bool:
    with Session(db.engine) as s:
        row = s.get(MailboxState, name)
        return bool(row and row.last_sync_at is not None)


def test_sigkill_mid_batch_loses_nothing_and_duplicates_nothing(
    tmp_path: Path, database: Database, dovecot: Dovecot
) -> None:
    box = new_box(dovecot, "support")
    n = 1500
    bulk_append(dovecot, box.user or "", [make_mail(subject=f"bulk {i}") for i in range(n)])
    config = config_for(tmp_path, database, dovecot, box)
    for _ in range(3):  # kill it three times while it works through the backlog
        with daemon(config) as proc:
            wait_for(lambda: count(database, Message) > 0, timeout=30, what="ingestion to start")
            time.sleep(0.3)
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        if count(database, Message) == n:
            break
    with daemon(config):
        wait_for(lambda: count(database, Message) == n, timeout=120, what=f"all {n} messages")
        time.sleep(0.5)
    assert count(database, Message) == n
    assert count(database, Delivery) == n
    assert count(database, Ticket) == n
    with Session(database.engine) as s:
        subjects = s.exec(select(Message.subject).where(Message.direction == "in")).all()
        assert len(set(subjects)) == n
        assert s.exec(select(func.count()).where(Message.quarantined)).one() == 0


def test_dovecot_restart_while_idling_then_mail_arrives(
    tmp_path: Path, sqlite_database: Database, dovecot: Dovecot
) -> None:
    box = new_box(dovecot, "support")
    config = config_for(tmp_path, sqlite_database, dovecot, box)
    with daemon(config):
        wait_for(lambda: _idle(sqlite_database, "support"), what="the worker to enter IDLE")
        dovecot.stop()
        try:
            wait_for(
                lambda: _error_seen(sqlite_database, "support"),
                timeout=15,
                what="the worker to notice the outage",
            )
        finally:
            dovecot.start()
        dovecot.append(box.user or "", "INBOX", make_mail(subject="after restart"))
        wait_for(
            lambda: count(sqlite_database, Ticket) == 1, timeout=45, what="mail after the restart"
        )
    status = cli_json(config, "status")
    box_status = status["mailboxes"][0]
    assert box_status["last_error"] is None  # cleared by the next good sync


def test_a_connection_lost_during_a_fetch_keeps_every_batch_fetched_before_it(
    tmp_path: Path, sqlite_database: Database, dovecot: Dovecot, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The worker fetches a batch ahead of the one it stores: when the connection breaks
    on that FETCH, the batch already in hand is still committed, and the next sync takes
    up exactly where the cursor stands."""
    box = new_box(dovecot, "support")
    bulk_append(dovecot, box.user or "", [make_mail(subject=f"mail {i}") for i in range(15)])
    config = config_for(tmp_path, sqlite_database, dovecot, box)
    text = config.read_text().replace("idle = true", "idle = true, batch_size = 5")
    config.write_text(text)
    runtime = open_runtime(load_settings(config))
    try:
        (worker,) = runtime.workers(threading.Event(), lambda: None)
        real_fetch = IMAPClient.fetch
        fetches: list[int] = []

        def fetch_then_lose_the_line(
            client: IMAPClient, messages: object, data: list[str]
        ) -> object:
            if "BODY.PEEK[]" in data:
                fetches.append(1)
            if len(fetches) == 2:  # the connection drops under the second batch's FETCH
                client.socket().shutdown(socket.SHUT_RDWR)
            return real_fetch(client, messages, data)

        monkeypatch.setattr(IMAPClient, "fetch", fetch_then_lose_the_line)
        assert worker.run_once() is None  # failed, and recorded
        assert count(sqlite_database, Message) == 5
        with Session(sqlite_database.engine) as s:
            state = s.get(MailboxState, "support")
            assert state is not None and state.last_uid == 5 and state.last_error

        monkeypatch.setattr(IMAPClient, "fetch", real_fetch)
        assert worker.run_once() == 10
    finally:
        runtime.close()
    assert count(sqlite_database, Message) == 15 and count(sqlite_database, Delivery) == 15
    with Session(sqlite_database.engine) as s:
        subjects = s.exec(select(Message.subject).where(Message.direction == "in")).all()
    assert sorted(subjects) == sorted(f"mail {i}" for i in range(15))


def test_a_folder_of_large_mails_is_fetched_in_batches_bounded_in_bytes(
    tmp_path: Path, sqlite_database: Database, dovecot: Dovecot, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch closes at `batch_size` mails or at `BATCH_MAX_BYTES` of mail, so large
    attachments never fill the daemon's memory; every mail still arrives, once."""
    box = new_box(dovecot, "support")
    large = "attached log line\n" * 60_000  # about 1 MB each
    mails = [make_mail(subject=f"large {i}", body=large) for i in range(5)]
    mails.insert(2, make_mail(subject="small"))
    bulk_append(dovecot, box.user or "", mails)
    config = config_for(tmp_path, sqlite_database, dovecot, box)
    monkeypatch.setattr(imap, "BATCH_MAX_BYTES", 2_500_000)
    real_fetch = IMAPClient.fetch
    batches: list[int] = []

    def counting_fetch(client: IMAPClient, messages: object, data: list[str]) -> object:
        if "BODY.PEEK[]" in data:
            batches.append(len(messages))  # type: ignore[arg-type]
        return real_fetch(client, messages, data)

    monkeypatch.setattr(IMAPClient, "fetch", counting_fetch)
    runtime = open_runtime(load_settings(config))
    try:
        (worker,) = runtime.workers(threading.Event(), lambda: None)
        assert worker.run_once() == 6
    finally:
        runtime.close()
    # About 1.1 MB each: two large and the small one, two large, the last (batch_size 200).
    assert batches == [3, 2, 1]
    with Session(sqlite_database.engine) as s:
        subjects = s.exec(select(Message.subject).where(Message.direction == "in")).all()
    assert sorted(subjects) == sorted(["small", *(f"large {i}" for i in range(5))])


def _error_seen(db: Database, name: str) -> bool:
    with Session(db.engine) as s:
        row = s.get(MailboxState, name)
        return bool(row and row.last_error)


def test_uidvalidity_change_duplicates_nothing(
    tmp_path: Path, database: Database, dovecot: Dovecot
) -> None:
    box = new_box(dovecot, "support")
    user = box.user or ""
    dovecot.create_folder(user, "Support")
    box = Box(name=box.name, address=box.address, user=user, password=box.password)
    mails = [make_mail(subject=f"m{i}") for i in range(5)] + [
        make_mail(subject="no id", message_id="")  # dedupe by content hash
    ]
    mails[-1] = b"\n".join(
        line for line in mails[-1].split(b"\n") if not line.startswith(b"Message-ID")
    )
    bulk_append(dovecot, user, mails, folder="Support")
    config = write_config(
        tmp_path / "cfg", database=database.url, boxes=[box], imap_port=dovecot.port
    )
    toml = config.read_text().replace(
        'poll_interval = "2s"', 'poll_interval = "2s", folder = "Support"'
    )
    config.write_text(toml)
    cli(config, "run", "--once")
    with Session(database.engine) as s:
        before = s.get(MailboxState, "support")
        assert before is not None
        old_validity = before.uidvalidity
    # Recreate the folder: new UIDVALIDITY, the same mail again plus one new.
    dovecot.delete_folder(user, "Support")
    dovecot.create_folder(user, "Support")
    bulk_append(dovecot, user, [*mails, make_mail(subject="fresh")], folder="Support")
    cli(config, "run", "--once")
    with Session(database.engine) as s:
        after = s.get(MailboxState, "support")
        assert after is not None and after.uidvalidity != old_validity
    assert count(database, Message) == 7
    assert count(database, Ticket) == 7


def test_on_processed_move_and_delete(
    tmp_path: Path, sqlite_database: Database, dovecot: Dovecot
) -> None:
    mover = new_box(dovecot, "support", on_processed="move:Done")
    dovecot.create_folder(mover.user or "", "Done")
    deleter = new_box(dovecot, "billing", on_processed="delete", team="billing")
    for b in (mover, deleter):
        dovecot.append(b.user or "", "INBOX", make_mail(subject=f"for {b.name}"))
    config = config_for(tmp_path, sqlite_database, dovecot, mover, deleter)
    cli(config, "run", "--once")
    assert count(sqlite_database, Message) == 2
    imap = dovecot.client(mover.user or "")
    try:
        assert imap.select_folder("INBOX")[b"EXISTS"] == 0
        assert imap.select_folder("Done")[b"EXISTS"] == 1
    finally:
        imap.logout()
    imap = dovecot.client(deleter.user or "")
    try:
        assert imap.select_folder("INBOX")[b"EXISTS"] == 0
    finally:
        imap.logout()


def test_wrong_password_is_reported_and_other_mailboxes_go_on(
    tmp_path: Path, sqlite_database: Database, dovecot: Dovecot
) -> None:
    good = new_box(dovecot, "support")
    bad = new_box(dovecot, "billing", team="billing")
    bad = Box(name=bad.name, address=bad.address, user=bad.user, password="wrong", team="billing")
    dovecot.append(good.user or "", "INBOX", make_mail(subject="fine"))
    config = config_for(tmp_path, sqlite_database, dovecot, good, bad)
    out = cli(config, "run", "--once").stdout.decode()
    assert "support: 1 new" in out and "billing: not synced" in out
    proc = cli(config, "status", "--json", check=False)
    assert proc.returncode == 1
    import json

    doc = json.loads(proc.stdout)
    billing = next(b for b in doc["mailboxes"] if b["name"] == "billing")
    assert billing["error_kind"] == "auth" and "login refused" in billing["last_error"]
    assert any("billing" in p for p in doc["problems"])
    assert b'"wrong"' not in proc.stdout  # the password never shows


def test_deliver_pipe_exit_codes(tmp_path: Path, sqlite_database: Database) -> None:
    config = write_config(
        tmp_path / "cfg",
        database=sqlite_database.url,
        boxes=[Box(name="support", address="support@example.com")],
    )
    mail = make_mail(subject="via pipe", message_id="<pipe@c.example>")
    ok = cli(config, "deliver", "--mailbox", "support", input=mail)
    assert ok.returncode == 0
    again = cli(config, "deliver", "--mailbox", "support", input=mail)
    assert again.returncode == 0 and b"duplicate" in again.stderr
    assert cli_json(config, "message", "show", "pipe@c.example")["mailboxes"] == ["support"]
    # A database that cannot be written: the MTA must keep the mail and retry (75).
    broken = write_config(
        tmp_path / "broken",
        database="sqlite:////nonexistent/dir/x.db",
        boxes=[Box(name="support", address="support@example.com")],
    )
    fail = cli(broken, "deliver", "--mailbox", "support", input=mail, check=False)
    assert fail.returncode == 75, fail.stderr
    assert fail.stderr.decode().startswith("inboxd: error:") and b"Traceback" not in fail.stderr
    assert count(sqlite_database, Message) == 1


@pytest.mark.skipif(
    ParsePool.for_this_machine() is None, reason="the time limit needs a second core"
)
def test_a_mail_that_outlasts_the_parse_time_limit_is_quarantined_and_its_mailbox_goes_on(
    tmp_path: Path, sqlite_database: Database, dovecot: Dovecot
) -> None:
    box = new_box(dovecot, "support")
    dovecot.append(box.user or "", "INBOX", slow_mail())
    dovecot.append(box.user or "", "INBOX", make_mail(subject="Right after it"))
    config = config_for(tmp_path, sqlite_database, dovecot, box)
    limit_parsing_to_one_second(config)

    assert "support: 2 new" in cli(config, "run", "--once").stdout.decode()
    assert [t["subject"] for t in cli_json(config, "ticket", "list", "--all")] == ["Right after it"]
    with Session(sqlite_database.engine) as s:
        (pk,) = s.exec(select(Message.id).where(Message.quarantined)).all()
    doc = cli_json(config, "message", "show", f"#{pk}")
    assert doc["quarantine_reason"] == "parsing took longer than 1 s; stored without parsing"
    assert cli_json(config, "status")["quarantined"] == 1


@pytest.mark.skipif(
    ParsePool.for_this_machine() is None, reason="the time limit needs a second core"
)
def test_import_quarantines_a_mail_that_outlasts_the_parse_time_limit(
    tmp_path: Path, sqlite_database: Database
) -> None:
    folder = tmp_path / "backfill"
    folder.mkdir()
    (folder / "1.eml").write_bytes(make_mail(subject="Before it"))
    (folder / "2.eml").write_bytes(slow_mail())
    (folder / "3.eml").write_bytes(make_mail(subject="After it"))
    config = write_config(
        tmp_path / "cfg",
        database=sqlite_database.url,
        boxes=[Box(name="support", address="support@example.com")],
    )
    limit_parsing_to_one_second(config)
    summary = cli_json(config, "import", str(folder), "--mailbox", "support")
    assert (summary["stored"], summary["quarantined"], summary["tickets"]) == (3, 1, 2)
    assert sorted(t["subject"] for t in cli_json(config, "ticket", "list", "--all")) == [
        "After it",
        "Before it",
    ]


def limit_parsing_to_one_second(config: Path) -> None:
    text = config.read_text().replace("[inboxd]\n", '[inboxd]\nparse_timeout = "1s"\n', 1)
    config.write_text(text)
