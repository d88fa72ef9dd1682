"""Operations: admin alerts once per incident, the outbox backlog in `status`, `run --once`."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from servers import Database, Dovecot, ReceivedMail, SmtpSink, free_port
from sqlalchemy import func
from sqlmodel import Session, select
from support import Box, cli, daemon, daemon_log, wait_for, write_config

from inboxd.db import session_scope
from inboxd.mail.compose import Outgoing, build
from inboxd.models import Incident, Outbox
from inboxd.tickets import outbox

ADMIN = "ops@example.com"


def config_with(
    folder: Path,
    db: Database,
    *,
    boxes: list[Box],
    imap_port: int,
    smtp_port: int,
    general: str = "",
) -> Path:
    """A test config with `general` lines added to its [inboxd] table."""
    path = write_config(
        folder, database=db.url, boxes=boxes, imap_port=imap_port, smtp_port=smtp_port
    )
    text = path.read_text()
    path.write_text(text.replace('timezone = "UTC"\n', f'timezone = "UTC"\n{general}', 1))
    return path


def alerts(sink: SmtpSink) -> list[ReceivedMail]:
    return [m for m in sink.messages if str(m.message["Subject"]).startswith("[inboxd]")]


def status(config: Path) -> tuple[int, Any]:
    done = cli(config, "status", "--json", check=False)
    return done.returncode, json.loads(done.stdout)


def incidents(db: Database) -> int:
    with Session(db.engine) as s:
        return int(s.exec(select(func.count()).select_from(Incident)).one())


def test_auth_failure_mails_admins_once_then_once_on_recovery(
    tmp_path: Path, database: Database, dovecot: Dovecot, smtp_sink: SmtpSink
) -> None:
    user, password = dovecot.new_user()
    box = Box("support", "support@example.com", user, "not-the-password")
    config = config_with(
        tmp_path / "cfg",
        database,
        boxes=[box],
        imap_port=dovecot.port,
        smtp_port=smtp_sink.port,
        general=f'admins = ["{ADMIN}"]\n',
    )

    outputs = []
    for _ in range(3):  # three retry cycles, as cron would run them
        done = cli(config, "run", "--once", check=False)
        assert done.returncode == 1  # no mailbox could be synced
        outputs.append(done.stdout.decode())

    assert "support: not synced" in outputs[0]
    assert "outbox: 1 sent, 0 deferred, 0 failed" in outputs[0]
    assert "outbox: 0 sent, 0 deferred, 0 failed" in outputs[2]
    [alert] = alerts(smtp_sink)
    assert alert.rcpt_tos == (ADMIN,)
    assert str(alert.message["Subject"]) == "[inboxd] mailbox support login refused"
    assert alert.message["Auto-Submitted"] == "auto-generated"
    body = alert.message.get_content()
    assert "login refused" in body and "not-the-password" not in body
    assert f"127.0.0.1:{dovecot.port} as {user}" in body

    code, doc = status(config)
    assert code == 1
    assert [(i["key"], i["kind"]) for i in doc["incidents"]] == [("mailbox:support", "auth")]

    dovecot.add_user(user, "not-the-password")  # the admin fixes the account
    out = cli(config, "run", "--once").stdout.decode()
    assert "support: 0 new" in out and "outbox: 1 sent" in out
    cli(config, "run", "--once")
    subjects = [str(m.message["Subject"]) for m in alerts(smtp_sink)]
    assert subjects == [
        "[inboxd] mailbox support login refused",
        "[inboxd] mailbox support recovered",
    ]
    code, doc = status(config)
    assert code == 0 and doc["incidents"] == []

    dovecot.add_user(user, password)  # broken again: a new incident, a new alert
    cli(config, "run", "--once", check=False)
    cli(config, "run", "--once", check=False)
    assert len(alerts(smtp_sink)) == 3
    assert incidents(database) == 2


def test_stale_mailbox_alerts_once_across_two_daemons(
    tmp_path: Path, postgres_database: Database, smtp_sink: SmtpSink
) -> None:
    db = postgres_database
    down = free_port()  # an IMAP server that is down: connection refused, retried
    box = Box("support", "support@example.com", "someone", "secret")
    config = config_with(
        tmp_path / "cfg",
        db,
        boxes=[box],
        imap_port=down,
        smtp_port=smtp_sink.port,
        general=f'admins = ["{ADMIN}"]\nstale_after = "2s"\nsweep_interval = "1s"\n',
    )
    with daemon(config) as first, daemon(config) as second:
        wait_for(lambda: alerts(smtp_sink), timeout=30, what="the stale alert")
        time.sleep(6)  # both daemons check every second and retry the connection meanwhile
        assert first.poll() is None and second.poll() is None, daemon_log(config)
    [alert] = alerts(smtp_sink)
    assert str(alert.message["Subject"]) == "[inboxd] mailbox support stale"
    body = alert.message.get_content()
    assert "never synced" in body and "ConnectionRefusedError" in body
    assert incidents(db) == 1
    assert daemon_log(config).count("admins alerted") == 1


def _queue(
    engine: Any, *, subject: str, created_at: datetime, not_before: datetime | None = None
) -> int:
    with session_scope(engine) as s:
        row = outbox.enqueue(
            s,
            kind="notify",
            message=build(
                Outgoing(
                    sender="support@example.com",
                    sender_name="Support",
                    to=["ann@example.com"],
                    subject=subject,
                    text="hello",
                    at=created_at,
                )
            ),
            smtp="default",
            now=created_at,
            not_before=not_before,
        )
        assert row.id is not None
        return row.id


def test_status_reports_the_outbox_backlog(tmp_path: Path, database: Database) -> None:
    now = datetime.now(UTC)
    config = config_with(
        tmp_path / "cfg",
        database,
        boxes=[Box("support", "support@example.com")],  # fed by the MTA pipe: never stale
        imap_port=143,
        smtp_port=free_port(),
    )
    code, doc = status(config)
    assert code == 0
    assert doc["outbox"] | {"stuck_after_s": None} == {
        "queued": 0,
        "held": 0,
        "sending": 0,
        "failed": 0,
        "oldest_queued_at": None,
        "oldest_queued_age_s": None,
        "stuck_after_s": None,
    }

    two_hours_ago = now - timedelta(hours=2)
    _queue(database.engine, subject="old", created_at=two_hours_ago)
    _queue(database.engine, subject="new", created_at=now - timedelta(minutes=1))
    held_until = now + timedelta(hours=3)  # an escalation waiting for business hours
    _queue(
        database.engine, subject="held", created_at=now - timedelta(hours=5), not_before=held_until
    )
    failed = _queue(database.engine, subject="bounced", created_at=now - timedelta(days=2))
    with session_scope(database.engine) as s:
        row = s.get(Outbox, failed)
        assert row is not None
        row.status, row.last_error = "failed", "550 5.1.1 no such user"

    code, doc = status(config)
    backlog = doc["outbox"]
    assert code == 1
    assert (backlog["queued"], backlog["held"], backlog["sending"], backlog["failed"]) == (
        3,
        1,
        0,
        1,
    )
    assert datetime.fromisoformat(backlog["oldest_queued_at"]) == two_hours_ago
    assert 7200 <= backlog["oldest_queued_age_s"] < 7200 + 120
    assert backlog["stuck_after_s"] == 1800
    assert any(p.startswith("outbox: oldest queued mail waiting 2.0h") for p in doc["problems"])
    text = cli(config, "status", check=False)
    assert text.returncode == 1
    out = text.stdout.decode()
    assert "UNHEALTHY" in out and "backlog" in out and "2.0h ago" in out

    relaxed = config_with(
        tmp_path / "cfg2",
        database,
        boxes=[Box("support", "support@example.com")],
        imap_port=143,
        smtp_port=free_port(),
        general='outbox_stuck_after = "3h"\n',
    )
    code, doc = status(relaxed)
    assert code == 0, doc["problems"]
    assert doc["outbox"]["queued"] == 3


def test_outbox_stuck_after_is_validated(tmp_path: Path, database: Database) -> None:
    config = config_with(
        tmp_path / "cfg",
        database,
        boxes=[Box("support", "support@example.com")],
        imap_port=143,
        smtp_port=free_port(),
        general='outbox_stuck_after = "soon"\n',
    )
    done = cli(config, "check", check=False)
    assert done.returncode == 1
    assert "inboxd.outbox_stuck_after: invalid duration" in done.stdout.decode()
