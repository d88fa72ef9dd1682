"""Outbox delivery against a real aiosmtpd sink: sent once, kept while SMTP is down,
4xx retried, 5xx failed onto the ticket, dead claims taken back, no row sent twice."""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import socket
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from servers import HOST, Database, SmtpSink, free_port
from sqlalchemy import Engine
from sqlmodel import Session, select
from support import Box, cli, cli_json, daemon, daemon_log, wait_for, write_config

from inboxd.cli.main import main
from inboxd.config import Settings, load_settings
from inboxd.db import make_engine, session_scope
from inboxd.mail import smtp
from inboxd.mail.compose import Outgoing, build, render
from inboxd.models import Daemon, Message, Outbox, Ticket
from inboxd.tickets import outbox, views

CUSTOMER = "customer@client.example"


class Clock:
    """An injected clock tests move forward: backoff is passed, never slept through."""

    def __init__(self) -> None:
        self.at = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.at

    def advance(self, **delta: float) -> None:
        self.at += timedelta(**delta)


@dataclass(frozen=True)
class Queued:
    id: int
    message_id: str
    data: bytes


def settings_for(tmp_path: Path, db: Database, port: int, extra: str = "") -> Settings:
    return load_settings(config_for(tmp_path, db, port, extra))


def config_for(tmp_path: Path, db: Database, port: int, extra: str = "") -> Path:
    box = Box(name="support", address="support@example.com")
    return write_config(tmp_path / "cfg", database=db.url, boxes=[box], smtp_port=port, extra=extra)


def new_ticket(engine: Engine, now: datetime) -> int:
    with session_scope(engine) as s:
        ticket = Ticket(subject="Printer on fire", created_at=now, updated_at=now)
        ticket.customer_addr = CUSTOMER
        s.add(ticket)
        s.flush()
        assert ticket.id is not None
        return ticket.id


def enqueue(
    engine: Engine,
    now: datetime,
    *,
    to: Sequence[str] = (CUSTOMER,),
    subject: str = "Re: Printer on fire",
    kind: str = "notify",
    ticket_id: int | None = None,
    endpoint: str = "default",
    text: str = "We are on it.\n",
) -> Queued:
    """A row written the way inboxd writes them: compose.build + outbox.enqueue."""
    msg = build(
        Outgoing(
            sender="support@example.com",
            sender_name="Support",
            to=list(to),
            subject=subject,
            text=text,
            at=now,
        )
    )
    with session_scope(engine) as s:
        ticket = s.get(Ticket, ticket_id) if ticket_id is not None else None
        row = outbox.enqueue(
            s, kind=kind, message=msg, smtp=endpoint, now=now, mailbox="support", ticket=ticket
        )
        assert row.id is not None
        return Queued(row.id, row.message_id, row.data)


def test_customer_mail_joins_the_conversation_with_pending_ticket_changes(
    database: Database,
) -> None:
    """An outgoing reply counts on its ticket, and changes the caller made to the ticket
    in the same transaction (not flushed yet) are kept, not overwritten by the count."""
    now = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
    ticket_id = new_ticket(database.engine, now)
    rendered = render(
        Outgoing(
            sender="support@example.com",
            sender_name="Support",
            to=[CUSTOMER],
            subject="Re: Printer on fire",
            text="Fixed.\n",
            at=now,
        )
    )
    with session_scope(database.engine) as s:
        ticket = s.get(Ticket, ticket_id)
        assert ticket is not None and ticket.message_count == 0
        ticket.message_count += 1  # e.g. a mail the caller joined in the same transaction
        ticket.status = "pending"
        outbox.enqueue(
            s,
            kind="reply",
            message=rendered,
            smtp="default",
            now=now,
            mailbox="support",
            ticket=ticket,
        )
        assert ticket.message_count == 2
    with Session(database.engine) as s:
        stored = s.get(Ticket, ticket_id)
        assert stored is not None
        assert (stored.message_count, stored.status) == (2, "pending")
        out = s.exec(select(Message).where(Message.ticket_id == ticket_id)).one()
        assert (out.direction, out.from_addr, out.from_name) == (
            "out",
            "support@example.com",
            "Support",
        )
        assert out.message_id == rendered.message_id and out.text == "Fixed.\n"


def row(engine: Engine, row_id: int) -> Outbox:
    with Session(engine) as s:
        found = s.get(Outbox, row_id)
        assert found is not None
        return found


def wire(data: bytes) -> bytes:
    """The stored bytes as SMTP carries them (CRLF line ends)."""
    return data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def one_round(sender: smtp.Sender) -> dict[str, int]:
    counts, _ = asyncio.run(sender.round())
    return {k: v for k, v in counts.items() if v}


def new_sender(
    settings: Settings, engine: Engine, clock: Clock, owner: str = "test:1"
) -> smtp.Sender:
    return smtp.Sender(settings, engine, owner=owner, clock=clock)


# ---------------------------------------------------------------------------- delivery


def test_queued_row_is_delivered_as_stored_and_marked_sent(
    tmp_path: Path, database: Database, smtp_sink: SmtpSink
) -> None:
    clock = Clock()
    settings = settings_for(tmp_path, database, smtp_sink.port)
    q = enqueue(database.engine, clock(), to=[CUSTOMER, "boss@client.example"], text="Grüße\n")

    counts = asyncio.run(smtp.flush(settings, database.engine, owner="once:1", clock=clock))

    assert counts == {"sent": 1, "deferred": 0, "failed": 0, "requeued": 0}
    [got] = smtp_sink.wait_for(1)
    assert got.content == wire(q.data)  # exactly the bytes written at enqueue
    assert got.message["Message-ID"] == f"<{q.message_id}>"
    assert got.mail_from == "support@example.com"
    assert sorted(got.rcpt_tos) == ["boss@client.example", CUSTOMER]
    sent = row(database.engine, q.id)
    assert (sent.status, sent.attempts, sent.sent_at, sent.last_error) == ("sent", 1, clock(), None)
    assert sent.claimed_by is None
    assert (
        asyncio.run(smtp.flush(settings, database.engine, owner="once:2", clock=clock))["sent"] == 0
    )  # a sent row is never sent again


def test_nudge_sends_at_once(
    tmp_path: Path, database: Database, smtp_sink: SmtpSink, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A mailbox thread's commit sets `wake`: the row goes out without waiting for a poll."""
    monkeypatch.setattr(smtp, "IDLE_MAX_S", 60.0)  # only the nudge can make it in time
    settings = settings_for(tmp_path, database, smtp_sink.port)

    async def scenario() -> float:
        wake, stop = asyncio.Event(), asyncio.Event()
        task = asyncio.create_task(
            smtp.run_sender(settings, database.engine, wake=wake, stop=stop, owner="d:1")
        )
        await asyncio.sleep(0.5)  # the sender is idle now, waiting up to a minute
        loop = asyncio.get_running_loop()

        def mailbox_thread() -> None:  # what an IMAP worker does after its commit
            enqueue(database.engine, datetime.now(UTC))
            loop.call_soon_threadsafe(wake.set)

        started = time.monotonic()
        await asyncio.to_thread(mailbox_thread)
        await smtp_sink.wait_for_async(1, 10)
        elapsed = time.monotonic() - started
        stop.set()
        await asyncio.wait_for(task, 5)
        return elapsed

    elapsed = asyncio.run(scenario())
    assert elapsed < 5, f"sent {elapsed:.1f}s after the nudge"
    with Session(database.engine) as s:
        assert [r.status for r in s.exec(select(Outbox)).all()] == ["sent"]


def test_smtp_down_keeps_rows_then_delivers_each_once(
    tmp_path: Path, database: Database, smtp_sink: SmtpSink, caplog: pytest.LogCaptureFixture
) -> None:
    clock = Clock()
    settings = settings_for(tmp_path, database, smtp_sink.port)
    sender = new_sender(settings, database.engine, clock)
    rows = [enqueue(database.engine, clock(), subject=f"update {i}") for i in range(3)]
    smtp_sink.stop()
    try:
        with caplog.at_level(logging.INFO, logger="inboxd.smtp"):
            assert one_round(sender) == {"deferred": 3}
            for q in rows:
                r = row(database.engine, q.id)
                assert (r.status, r.attempts) == ("queued", 1)
                assert r.next_attempt_at >= clock() + timedelta(seconds=15)  # backoff, jittered
                assert r.last_error and "cannot reach SMTP endpoint 'default'" in r.last_error
            assert one_round(sender) == {}  # not due yet: nothing tried
            clock.advance(minutes=2)
            assert one_round(sender) == {"deferred": 3}
            assert {row(database.engine, q.id).attempts for q in rows} == {2}
        unreachable = [r for r in caplog.records if r.getMessage() == "smtp endpoint unreachable"]
        assert len(unreachable) == 1  # a lasting condition is logged once, not per retry
    finally:
        smtp_sink.start()

    clock.advance(minutes=5)
    with caplog.at_level(logging.INFO, logger="inboxd.smtp"):
        assert one_round(sender) == {"sent": 3}
    assert any(r.getMessage() == "smtp endpoint reachable again" for r in caplog.records)
    got = smtp_sink.wait_for(3)
    assert sorted(m.message["Message-ID"] for m in got) == sorted(f"<{q.message_id}>" for q in rows)
    clock.advance(hours=2)
    assert one_round(sender) == {}
    assert len(smtp_sink.messages) == 3
    assert {row(database.engine, q.id).status for q in rows} == {"sent"}


def test_4xx_is_retried_later(tmp_path: Path, database: Database, smtp_sink: SmtpSink) -> None:
    clock = Clock()
    sender = new_sender(settings_for(tmp_path, database, smtp_sink.port), database.engine, clock)
    q = enqueue(database.engine, clock())
    smtp_sink.reply = "451 4.3.0 try later"

    assert one_round(sender) == {"deferred": 1}
    r = row(database.engine, q.id)
    assert (r.status, r.attempts, r.last_error) == ("queued", 1, "451 4.3.0 try later")
    assert len(smtp_sink.refused) == 1 and not smtp_sink.messages

    smtp_sink.reply = None
    assert one_round(sender) == {}  # backoff holds it
    clock.advance(minutes=1)
    assert one_round(sender) == {"sent": 1}
    assert [m.message["Message-ID"] for m in smtp_sink.wait_for(1)] == [f"<{q.message_id}>"]
    assert row(database.engine, q.id).attempts == 2


def test_5xx_fails_with_reason_and_ticket_event(
    tmp_path: Path, database: Database, smtp_sink: SmtpSink
) -> None:
    clock = Clock()
    sender = new_sender(settings_for(tmp_path, database, smtp_sink.port), database.engine, clock)
    ticket_id = new_ticket(database.engine, clock())
    q = enqueue(database.engine, clock(), kind="reply", ticket_id=ticket_id)
    smtp_sink.reply = "550 5.1.1 no such user"

    assert one_round(sender) == {"failed": 1}
    r = row(database.engine, q.id)
    assert (r.status, r.last_error) == ("failed", "550 5.1.1 no such user")
    with Session(database.engine) as s:
        doc = views.ticket_detail(s, ticket_id, now=clock())  # what `ticket show` prints
    [event] = [e for e in doc["events"] if e["kind"] == "delivery-failure"]
    assert event["data"]["reason"] == "550 5.1.1 no such user"
    assert event["data"]["mail_kind"] == "reply"
    assert event["data"]["original_message_id"] == q.message_id
    assert event["data"]["recipients"] == [
        {
            "address": CUSTOMER,
            "status": "5.1.1",
            "temporary": False,
            "diagnostic": "550 5.1.1 no such user",
        }
    ]
    smtp_sink.reply = None
    clock.advance(days=1)
    assert one_round(sender) == {}  # a failed row is never retried by itself
    assert not smtp_sink.messages


def test_refused_recipients_are_recorded_and_4xx_ones_retried(
    tmp_path: Path, database: Database, smtp_sink: SmtpSink
) -> None:
    clock = Clock()
    sender = new_sender(settings_for(tmp_path, database, smtp_sink.port), database.engine, clock)
    ticket_id = new_ticket(database.engine, clock())
    to = [CUSTOMER, "ghost@client.example", "busy@client.example"]
    q = enqueue(database.engine, clock(), to=to, kind="reply", ticket_id=ticket_id)
    replies = {
        "ghost@client.example": "550 5.1.1 no such user",
        "busy@client.example": "450 4.2.1 busy",
    }
    smtp_sink.rcpt_reply = replies.get

    assert one_round(sender) == {"deferred": 1}
    [first] = smtp_sink.wait_for(1)
    assert first.rcpt_tos == (CUSTOMER,)
    r = row(database.engine, q.id)
    assert (r.status, r.recipients) == ("queued", ["busy@client.example"])
    assert r.last_error and "ghost@client.example: 550 5.1.1 no such user" in r.last_error
    with Session(database.engine) as s:
        events = views.ticket_detail(s, ticket_id, now=clock())["events"]
    [event] = [e for e in events if e["kind"] == "delivery-failure"]
    assert [x["address"] for x in event["data"]["recipients"]] == ["ghost@client.example"]
    assert event["data"]["partial"] is True

    smtp_sink.rcpt_reply = None
    clock.advance(minutes=1)
    assert one_round(sender) == {"sent": 1}
    second = smtp_sink.wait_for(2)[1]
    assert second.rcpt_tos == ("busy@client.example",)
    assert second.content == first.content  # the same message, only to whom it missed
    assert row(database.engine, q.id).status == "sent"


def test_transient_failures_give_up_after_days(
    tmp_path: Path, database: Database, smtp_sink: SmtpSink
) -> None:
    clock = Clock()
    sender = new_sender(settings_for(tmp_path, database, smtp_sink.port), database.engine, clock)
    ticket_id = new_ticket(database.engine, clock())
    q = enqueue(database.engine, clock(), kind="reply", ticket_id=ticket_id)
    smtp_sink.reply = "451 4.3.0 try later"
    for _ in range(5):
        assert one_round(sender) == {"deferred": 1}
        clock.advance(hours=1, minutes=1)
    clock.advance(days=3)
    assert one_round(sender) == {"failed": 1}
    r = row(database.engine, q.id)
    assert r.status == "failed"
    assert r.last_error == "gave up after 6 attempts: 451 4.3.0 try later"
    with Session(database.engine) as s:
        events = views.ticket_detail(s, ticket_id, now=clock())["events"]
    [event] = [e for e in events if e["kind"] == "delivery-failure"]
    assert event["data"]["recipients"][0]["temporary"] is True


def test_rows_of_a_dead_sender_are_sent_again(
    tmp_path: Path, database: Database, smtp_sink: SmtpSink
) -> None:
    clock = Clock()
    engine = database.engine
    sender = new_sender(settings_for(tmp_path, database, smtp_sink.port), engine, clock)
    now = clock()
    with session_scope(engine) as s:
        for name, beat in (("dead:1", now - timedelta(minutes=5)), ("alive:1", now)):
            s.add(Daemon(id=name, host="h", pid=1, started_at=beat, heartbeat_at=beat))
    dead, alive, lost = (enqueue(engine, now, subject=s) for s in ("dead", "alive", "lost"))
    for q, owner, at in (
        (dead, "dead:1", now),  # its daemon stopped beating
        (alive, "alive:1", now - timedelta(minutes=30)),  # a long send, owner alive: keep
        (lost, "tool:1", now - timedelta(minutes=11)),  # no daemon row: the claim timed out
    ):
        with session_scope(engine) as s:
            [claim] = outbox.claim_due(s, owner=owner, now=at, limit=1, ids=[q.id])
            assert claim.id == q.id

    assert one_round(sender) == {"requeued": 2, "sent": 2}
    got = smtp_sink.wait_for(2)
    assert sorted(m.message["Subject"] for m in got) == ["dead", "lost"]
    assert row(engine, alive.id).status == "sending"
    assert row(engine, dead.id).status == "sent"


def test_a_stale_sender_does_not_clobber_a_row_taken_back(
    database: Database,
) -> None:
    """The dead-looking sender's late result: a lost claim is not marked by it."""
    engine, now = database.engine, datetime.now(UTC)
    q = enqueue(engine, now)
    with session_scope(engine) as s:
        outbox.claim_due(s, owner="slow:1", now=now - timedelta(minutes=20), limit=1, ids=[q.id])
    with session_scope(engine) as s:
        assert outbox.requeue_stale(s, now=now) == [q.id]
        assert [c.id for c in outbox.claim_due(s, owner="fresh:1", now=now, limit=1)] == [q.id]
    with session_scope(engine) as s:
        assert outbox.start_send(s, row_id=q.id, owner="slow:1", now=now) is None
        failed = outbox.Attempt(error="421 bye")
        assert outbox.record_attempt(s, row_id=q.id, owner="slow:1", now=now, attempt=failed) == (
            "skipped"
        )
    assert (row(engine, q.id).status, row(engine, q.id).claimed_by) == ("sending", "fresh:1")


def test_two_senders_never_send_a_row_twice(
    tmp_path: Path, database: Database, smtp_sink: SmtpSink, caplog: pytest.LogCaptureFixture
) -> None:
    """Two daemons, each with its own engine (as two processes), race for 60 rows.

    On PostgreSQL the claim is SELECT ... FOR UPDATE SKIP LOCKED; on SQLite BEGIN
    IMMEDIATE serialises the claims.
    """
    settings = settings_for(tmp_path, database, smtp_sink.port)
    now = datetime.now(UTC)
    rows = [enqueue(database.engine, now, subject=f"n{i}") for i in range(60)]
    engines = [make_engine(database.url) for _ in range(2)]

    async def scenario() -> None:
        wake, stop = asyncio.Event(), asyncio.Event()
        tasks = [
            asyncio.create_task(
                smtp.run_sender(settings, e, wake=wake, stop=stop, owner=f"d:{i}", batch=4)
            )
            for i, e in enumerate(engines)
        ]
        await smtp_sink.wait_for_async(len(rows), 60)
        await asyncio.sleep(1.0)  # room for a duplicate to show up
        stop.set()
        await asyncio.wait_for(asyncio.gather(*tasks), 10)

    try:
        with caplog.at_level(logging.INFO, logger="inboxd.smtp"):
            asyncio.run(scenario())
    finally:
        for e in engines:
            e.dispose()
    senders = {getattr(r, "owner", None) for r in caplog.records if r.getMessage() == "sent"}
    assert senders == {"d:0", "d:1"}  # both took part in the race
    ids = [m.message["Message-ID"] for m in smtp_sink.messages]
    assert len(ids) == len(set(ids)) == len(rows)
    with Session(database.engine) as s:
        assert {r.status for r in s.exec(select(Outbox)).all()} == {"sent"}


class CountingSink(SmtpSink):
    """The sink, counting SMTP sessions (each connection says EHLO once)."""

    def __init__(self, port: int | None = None) -> None:
        super().__init__(port)
        self.sessions = 0

    async def handle_EHLO(
        self, server: Any, session: Any, envelope: Any, hostname: str, responses: list[str]
    ) -> list[str]:
        self.sessions += 1
        session.host_name = hostname
        return responses


@pytest.fixture
def counting_sink() -> Iterator[CountingSink]:
    sink = CountingSink.create()
    assert isinstance(sink, CountingSink)
    yield sink
    sink.close()


def test_one_connection_per_endpoint_per_batch(
    tmp_path: Path, sqlite_database: Database, counting_sink: CountingSink
) -> None:
    port = counting_sink.port
    other = f'[smtp.other]\nhost = "127.0.0.1"\nport = {port}\nsecurity = "none"\n'
    settings = settings_for(tmp_path, sqlite_database, port, extra=other)
    clock = Clock()
    engine = sqlite_database.engine
    for i in range(5):
        enqueue(engine, clock(), subject=f"default {i}")
    for i in range(3):
        enqueue(engine, clock(), subject=f"other {i}", endpoint="other")

    assert one_round(new_sender(settings, engine, clock)) == {"sent": 8}
    assert len(counting_sink.wait_for(8)) == 8
    assert counting_sink.sessions == 2  # one per endpoint, not one per message


def test_unknown_endpoint_keeps_the_row(
    tmp_path: Path, sqlite_database: Database, smtp_sink: SmtpSink
) -> None:
    clock = Clock()
    engine = sqlite_database.engine
    sender = new_sender(settings_for(tmp_path, sqlite_database, smtp_sink.port), engine, clock)
    q = enqueue(engine, clock(), endpoint="gone")
    assert one_round(sender) == {"deferred": 1}
    r = row(engine, q.id)
    assert r.status == "queued"
    assert r.last_error == "unknown SMTP endpoint 'gone' (inboxd.toml has: default)"


@pytest.mark.parametrize(
    ("security", "expected"),
    [("starttls", "STARTTLS"), ("tls", "SSL")],
)
def test_tls_is_required_never_opportunistic(
    tmp_path: Path,
    sqlite_database: Database,
    smtp_sink: SmtpSink,
    security: str,
    expected: str,
) -> None:
    """A relay configured for TLS that does not offer it gets nothing in clear."""
    endpoint = (
        f'[smtp.secure]\nhost = "127.0.0.1"\nport = {smtp_sink.port}\nsecurity = "{security}"\n'
    )
    settings = settings_for(tmp_path, sqlite_database, smtp_sink.port, extra=endpoint)
    clock = Clock()
    q = enqueue(sqlite_database.engine, clock(), endpoint="secure")
    assert one_round(new_sender(settings, sqlite_database.engine, clock)) == {"deferred": 1}
    r = row(sqlite_database.engine, q.id)
    assert r.status == "queued"
    assert r.last_error and expected in r.last_error
    assert not smtp_sink.messages


def test_a_silent_relay_times_out_and_the_row_waits(
    tmp_path: Path, sqlite_database: Database, silent_smtp: int
) -> None:
    endpoint = (
        f'[smtp.slow]\nhost = "127.0.0.1"\nport = {silent_smtp}\nsecurity = "none"\n'
        'timeout = "1s"\n'
    )
    settings = settings_for(tmp_path, sqlite_database, silent_smtp, extra=endpoint)
    clock = Clock()
    q = enqueue(sqlite_database.engine, clock(), endpoint="slow")
    assert one_round(new_sender(settings, sqlite_database.engine, clock)) == {"deferred": 1}
    r = row(sqlite_database.engine, q.id)
    assert (r.status, r.attempts) == ("queued", 1)
    assert r.last_error and r.last_error.startswith("cannot reach SMTP endpoint 'slow'")
    assert "Timed out" in r.last_error


# ---------------------------------------------------------------------------- the CLI


def run_cli(config: Path, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """`inboxd --config CONFIG ARGS...` in this process: (exit code, stdout, stderr)."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as exited:
        main(["--config", str(config), *args])
    out, err = capsys.readouterr()
    return int(exited.value.code or 0), out, err


def test_outbox_list_and_retry(
    tmp_path: Path, database: Database, smtp_sink: SmtpSink, capsys: pytest.CaptureFixture[str]
) -> None:
    clock = Clock()
    config = config_for(tmp_path, database, smtp_sink.port)
    sender = new_sender(load_settings(config), database.engine, clock)
    ticket_id = new_ticket(database.engine, clock())
    failed = enqueue(
        database.engine, clock(), subject="Refund [#7] ok?", kind="reply", ticket_id=ticket_id
    )
    smtp_sink.reply = "550 5.7.1 rejected"
    assert one_round(sender) == {"failed": 1}
    smtp_sink.reply = None
    sent = enqueue(database.engine, clock(), subject="All good")
    assert one_round(sender) == {"sent": 1}

    rows = cli_json(config, "outbox", "list")  # a real process: stdout is the JSON alone
    assert [r["id"] for r in rows] == [sent.id, failed.id]  # newest first
    doc = rows[1]
    assert doc["subject"] == "Refund [#7] ok?"
    assert (doc["status"], doc["attempts"], doc["kind"], doc["ticket"]) == (
        "failed",
        1,
        "reply",
        ticket_id,
    )
    assert doc["to"] == [CUSTOMER]
    assert doc["last_error"] == "550 5.7.1 rejected"
    assert doc["next_attempt_at"] is None and doc["created_at"]
    code, out, _ = run_cli(config, capsys, "outbox", "list", "--status", "failed", "--json")
    assert [r["id"] for r in json.loads(out)] == [failed.id]
    code, table, _ = run_cli(config, capsys, "outbox", "list")
    assert code == 0
    assert "[#7]" in table and "failed" in table  # the subject is text, never markup

    out = cli(config, "outbox", "retry", str(failed.id)).stdout.decode()
    assert f"outbox row {failed.id} queued again (was failed)" in out
    _, out, _ = run_cli(config, capsys, "outbox", "list", "--status", "queued", "--json")
    [again] = json.loads(out)
    assert again["id"] == failed.id and again["next_attempt_at"]
    assert asyncio.run(smtp.flush(load_settings(config), database.engine, owner="o:1"))["sent"] == 1
    assert row(database.engine, failed.id).status == "sent"

    code, out, err = run_cli(config, capsys, "outbox", "retry", str(sent.id))
    assert code == 1 and not out
    [line] = err.splitlines()
    assert line.startswith(f"inboxd: error: outbox row {sent.id} was sent at ")
    code, _, err = run_cli(config, capsys, "outbox", "retry", "9999")
    assert code == 1
    assert err == "inboxd: error: no outbox row 9999 (see `inboxd outbox list`)\n"
    code, _, err = run_cli(config, capsys, "outbox", "list", "--status", "lost")
    assert code == 2 and "lost" in err


# ---------------------------------------------------------------------------- the daemon


def test_run_once_flushes_the_outbox(
    tmp_path: Path, database: Database, smtp_sink: SmtpSink
) -> None:
    config = config_for(tmp_path, database, smtp_sink.port)
    now = datetime.now(UTC)
    q = enqueue(database.engine, now)
    with session_scope(database.engine) as s:  # backoff far ahead: --once tries anyway
        r = s.get(Outbox, q.id)
        assert r is not None
        r.next_attempt_at, r.attempts = now + timedelta(hours=1), 3

    cli(config, "run", "--once")

    assert [m.message["Message-ID"] for m in smtp_sink.wait_for(1)] == [f"<{q.message_id}>"]
    assert row(database.engine, q.id).status == "sent"


def test_daemon_sends_and_stops_promptly(
    tmp_path: Path, database: Database, smtp_sink: SmtpSink
) -> None:
    config = config_for(tmp_path, database, smtp_sink.port)
    with daemon(config) as proc:
        q = enqueue(database.engine, datetime.now(UTC))  # another process enqueues
        smtp_sink.wait_for(1, 20)
        wait_for(lambda: row(database.engine, q.id).status == "sent", what="row marked sent")
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0, daemon_log(config)
        assert time.monotonic() - started < 5
    assert "outbox sender stopped" in daemon_log(config)


@pytest.fixture
def silent_smtp() -> Iterator[int]:
    """A port that accepts TCP and never says a word: a hung relay."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, free_port()))
        sock.listen(16)
        yield sock.getsockname()[1]


def test_sigterm_cuts_a_hung_send_and_requeues(
    tmp_path: Path, database: Database, silent_smtp: int
) -> None:
    config = config_for(tmp_path, database, silent_smtp)  # endpoint timeout 60 s
    q = enqueue(database.engine, datetime.now(UTC))
    with daemon(config) as proc:
        wait_for(lambda: row(database.engine, q.id).status == "sending", what="row claimed")
        time.sleep(0.5)  # the sender now waits for a greeting that never comes
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0, daemon_log(config)
        assert time.monotonic() - started < 5
    r = row(database.engine, q.id)
    assert (r.status, r.claimed_by) == ("queued", None)  # back in the queue, not lost


@given(
    at=st.datetimes(
        min_value=datetime(1900, 1, 1),
        max_value=datetime(9999, 12, 31),
        timezones=st.sampled_from(
            [UTC, *(timezone(timedelta(minutes=m)) for m in (-720, -570, -60, 60, 330, 845))]
        ),
    )
)
def test_our_date_header_is_what_the_email_package_writes(at: datetime) -> None:
    from email.utils import format_datetime

    from inboxd.mail.compose import date_header

    assert date_header(at) == format_datetime(at)
