"""The Prometheus endpoint: values read from the database at scrape time."""

from __future__ import annotations

import socket
import sys
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.utils import make_msgid
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from servers import Database, free_port
from sqlmodel import select
from support import Box, make_mail, write_config

from inboxd.clock import fixed
from inboxd.config import Settings, load_settings
from inboxd.db import session_scope
from inboxd.errors import ConfigError, InboxdError
from inboxd.metrics import MetricsHandle, start_metrics
from inboxd.models import Message, Outbox
from inboxd.tickets import events, intake, mailboxes, outbox

NOW = datetime(2026, 11, 2, 12, 0, tzinfo=UTC)


def metrics_config(folder: Path, database: str, listen: str | None) -> Settings:
    path = write_config(
        folder,
        database=database,
        boxes=[Box("support", "support@example.com"), Box("billing", "billing@example.com")],
    )
    if listen is not None:
        text = path.read_text().replace(
            'timezone = "UTC"\n', f'timezone = "UTC"\nmetrics = "{listen}"\n', 1
        )
        path.write_text(text)
    return load_settings(path)


def scrape(handle: MetricsHandle) -> dict[str, float]:
    """Every sample as `name{label="value"}` -> value."""
    with urllib.request.urlopen(handle.url, timeout=10) as response:
        assert response.status == 200
        body = response.read().decode()
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(body):
        for s in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items()))
            out[f"{s.name}{{{labels}}}" if labels else s.name] = s.value
    return out


@pytest.fixture
def running(database: Database, tmp_path: Path) -> Iterator[tuple[Settings, MetricsHandle]]:
    settings = metrics_config(tmp_path, database.url, f"127.0.0.1:{free_port()}")
    handle = start_metrics(settings, database.engine, clock=fixed(NOW), cache_s=0)
    assert handle is not None
    yield settings, handle
    handle.close()


def ack_message(to: str) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = "support@example.com"
    msg["To"] = to
    msg["Subject"] = "We got your mail"
    msg["Message-ID"] = make_msgid(domain="example.com")
    msg.set_content("Thanks.")
    return msg


def test_endpoint_reports_what_the_database_holds(
    running: tuple[Settings, MetricsHandle], database: Database
) -> None:
    settings, handle = running
    assert handle.host == "127.0.0.1"
    empty = scrape(handle)
    assert empty["inboxd_database_up"] == 1
    assert empty['inboxd_messages_ingested_total{mailbox="support"}'] == 0
    assert empty["inboxd_tickets_created_total"] == 0
    assert empty["inboxd_outbox_oldest_queued_age_seconds"] == 0

    engine = database.engine
    cfg = intake.IntakeConfig.from_settings(settings, secret=b"k", rules=None, clock=fixed(NOW))
    shared = make_mail(subject="To both", sender="c1@client.example", to="support@example.com")
    with session_scope(engine) as s:
        for n in range(3):
            data = make_mail(subject=f"Q{n}", sender=f"c{n}@client.example")
            intake.receive(s, cfg, mailbox="support", data=data)
        intake.receive(s, cfg, mailbox="billing", data=make_mail(sender="d@client.example"))
        intake.receive(s, cfg, mailbox="support", data=shared)
        intake.receive(s, cfg, mailbox="billing", data=shared)  # one mail, two mailboxes
        intake.receive(
            s, cfg, mailbox="billing", data=make_mail(subject="Bad", sender="e@x.example")
        )
        # What the daemon's other parts write: a sync, SLA breaches, outgoing mail.
        mailboxes.record_sync(s, "support", at=NOW - timedelta(seconds=30), pending=0, owner="d1")
        for _ in range(2):
            events.record(s, ticket_id=1, at=NOW, actor="system", kind="sla-breach")
        outbox.enqueue(
            s,
            kind="notify",
            message=ack_message("lea@example.com"),
            smtp="default",
            now=NOW - timedelta(seconds=90),
        )
        outbox.enqueue(  # held for business hours: queued, but not waiting yet
            s,
            kind="escalation",
            message=ack_message("lead@example.com"),
            smtp="default",
            now=NOW - timedelta(hours=2),
            not_before=NOW + timedelta(hours=1),
        )
    with session_scope(engine) as s:
        # Quarantined: the row and flag are what the metric counts.
        bad = s.exec(select(Message).where(Message.subject == "Bad")).one()
        bad.quarantined, bad.quarantine_reason = True, "unparsable: test"
        acks = s.exec(select(Outbox).where(Outbox.kind == "ack").order_by(Outbox.id)).all()
        assert len(acks) == 6  # intake acknowledged each new ticket
        for row in acks[:2]:
            row.status, row.sent_at = "sent", NOW
        acks[2].created_at = NOW - timedelta(seconds=400)  # the oldest one still waiting

    got = scrape(handle)
    assert got["inboxd_database_up"] == 1
    assert got['inboxd_messages_ingested_total{mailbox="support"}'] == 4
    assert got['inboxd_messages_ingested_total{mailbox="billing"}'] == 3
    assert got["inboxd_tickets_created_total"] == 6
    assert got['inboxd_tickets_open{team="frontline"}'] == 6
    assert got["inboxd_acks_sent_total"] == 2
    assert got["inboxd_outbox_queued"] == 6  # four acks, the notification, the held one
    assert got["inboxd_outbox_oldest_queued_age_seconds"] == 400
    assert got['inboxd_mailbox_sync_lag_seconds{mailbox="support"}'] == 30
    assert 'inboxd_mailbox_sync_lag_seconds{mailbox="billing"}' not in got  # never synced
    assert got["inboxd_sla_breaches_total"] == 2
    assert got["inboxd_quarantined_messages"] == 1

    # A second process's endpoint over the same database says the same.
    other = start_metrics(
        metrics_config(Path(str(settings.base_dir) + "-2"), database.url, f"{free_port()}"),
        engine,
        clock=fixed(NOW),
        cache_s=0,
    )
    assert other is not None
    try:
        assert scrape(other) == got
    finally:
        other.close()


def test_metrics_off_starts_nothing(sqlite_database: Database, tmp_path: Path) -> None:
    settings = metrics_config(tmp_path, sqlite_database.url, None)
    assert start_metrics(settings, sqlite_database.engine) is None


def test_missing_prometheus_client_is_one_clear_error(
    sqlite_database: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = metrics_config(tmp_path, sqlite_database.url, "127.0.0.1:9108")
    monkeypatch.setitem(sys.modules, "prometheus_client", None)  # as if not installed
    with pytest.raises(ConfigError) as err:
        start_metrics(settings, sqlite_database.engine)
    assert str(err.value) == (
        "[inboxd] metrics is set but prometheus-client is not installed "
        "(pip install 'inboxd[metrics]', or remove metrics from inboxd.toml)"
    )


def test_a_taken_port_is_a_clear_error(sqlite_database: Database, tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        settings = metrics_config(tmp_path, sqlite_database.url, f"127.0.0.1:{port}")
        with pytest.raises(InboxdError) as err:
            start_metrics(settings, sqlite_database.engine)
    assert str(err.value) == f"metrics: cannot listen on 127.0.0.1:{port}: Address already in use"
