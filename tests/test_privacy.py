"""Customer export and erasure, and the retention purge, on SQLite and PostgreSQL."""

from __future__ import annotations

import email
import email.policy
import json
import sqlite3
import warnings
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.utils import make_msgid
from pathlib import Path
from typing import Any

import pytest
from servers import Database
from sqlalchemy import Engine, MetaData
from sqlalchemy import select as sa_select
from sqlalchemy.exc import SAWarning
from sqlmodel import Session, col, select
from support import Box, cli, cli_json, write_config

from inboxd.cli.main import main
from inboxd.config import Settings, load_settings
from inboxd.db import session_scope
from inboxd.mail.compose import Outgoing, build
from inboxd.models import Message, Outbox, RawMail, Ticket
from inboxd.tickets import intake, outbox, privacy, views

ERIN = "erin@client.example"
ERIN_NAME = "Erin Erasable"
FRANK = "frank@other.example"
GINA = "gina@third.example"


@dataclass
class World:
    """A database with Erin's tickets and other customers' ones, and its config."""

    config: Path
    settings: Settings
    engine: Engine
    backend: str
    erin_ticket: int
    frank_ticket: int
    gina_ticket: int


def mail(
    *,
    sender: str,
    to: str = "support@example.com",
    cc: str | None = None,
    subject: str,
    body: str,
    in_reply_to: str | None = None,
    attachment: tuple[str, bytes] | None = None,
) -> tuple[bytes, str]:
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = to
    if cc:
        msg["Cc"] = cc
    msg["Subject"] = subject
    msg["Date"] = "Mon, 02 Nov 2026 10:00:00 +0100"
    mid = make_msgid(domain="mail.example")
    msg["Message-ID"] = mid
    if in_reply_to:
        msg["In-Reply-To"] = f"<{in_reply_to}>"
        msg["References"] = f"<{in_reply_to}>"
    msg.set_content(body)
    if attachment:
        msg.add_attachment(attachment[1], maintype="text", subtype="plain", filename=attachment[0])
    return msg.as_bytes(), mid.strip("<>")


def receive(engine: Engine, settings: Settings, data: bytes, mailbox: str = "support") -> int:
    cfg = intake.IntakeConfig.from_settings(settings, secret=b"test-secret", rules=None)
    with session_scope(engine) as s:
        r = intake.receive(s, cfg, mailbox=mailbox, data=data, source="pipe")
    assert r.ticket_id is not None, r
    return r.ticket_id


def agent_reply(engine: Engine, ticket_id: int, *, to: str, text: str) -> None:
    now = datetime.now(UTC)
    with session_scope(engine) as s:
        ticket = s.get(Ticket, ticket_id)
        message = build(
            Outgoing(
                sender="support@example.com",
                sender_name="Support",
                to=[to],
                subject=f"Re: {ticket.subject}",
                text=text,
                at=now,
            )
        )
        outbox.enqueue(
            s,
            kind="reply",
            message=message,
            smtp="default",
            now=now,
            mailbox="support",
            ticket=ticket,
            author="ann@example.com",
        )


def build_world(tmp_path: Path, database: Database) -> World:
    config = write_config(
        tmp_path,
        database=database.url,
        boxes=[Box("support", "support@example.com"), Box("billing", "billing@example.com")],
    )
    settings = load_settings(config)
    engine = database.engine
    first, first_mid = mail(
        sender=f"{ERIN_NAME} <{ERIN}>",
        subject="Printer on fire",
        body="My printer is on fire. Call me at +47 555 0100.",
        attachment=("../../evil.sh", b"rm -rf /\n"),
    )
    erin_ticket = receive(engine, settings, first)  # intake queues an ack to her itself
    agent_reply(engine, erin_ticket, to=ERIN, text=f"Hello {ERIN_NAME}, we are on it.")
    again, _ = mail(
        sender=f"{ERIN_NAME} <{ERIN}>",
        subject="Re: Printer on fire",
        body="Still burning.",
        in_reply_to=first_mid,
    )
    assert receive(engine, settings, again) == erin_ticket
    frank, _ = mail(
        sender=f"Frank <{FRANK}>",
        cc=f"{ERIN_NAME} <{ERIN}>",
        subject="Invoice 42 for our team",
        body="Erin and I need invoice 42 again.",
    )
    frank_ticket = receive(engine, settings, frank, mailbox="billing")
    gina, _ = mail(
        sender=f"Gina <{GINA}>",
        subject="Access request",
        body=f"My colleague {ERIN.upper()} said you could help.",
    )
    gina_ticket = receive(engine, settings, gina)
    with session_scope(engine) as s:  # an internal note on Erin's ticket, as an agent writes it
        note = Message(
            content_hash="note-1",
            direction="note",
            ticket_id=erin_ticket,
            author="ann@example.com",
            text="Erin called twice, sounded upset.",
            received_at=datetime.now(UTC),
        )
        s.add(note)
    agent_reply(engine, gina_ticket, to=GINA, text="Hi Gina, granted.")
    return World(config, settings, engine, database.backend, erin_ticket, frank_ticket, gina_ticket)


@pytest.fixture
def world(tmp_path: Path, database: Database) -> World:
    return build_world(tmp_path / "site", database)


# -- export ----------------------------------------------------------------------------


def test_export_holds_exactly_their_mail_and_tickets(world: World, tmp_path: Path) -> None:
    out = tmp_path / "export"
    manifest = cli_json(world.config, "customer", "export", ERIN.upper(), "-o", str(out))

    assert manifest["address"] == ERIN
    assert manifest["tickets"] == [world.erin_ticket, world.frank_ticket]
    # Erin's two mails, our reply and ack to her, Frank's mail with her in Cc; not Gina's.
    assert manifest["counts"] == {"tickets": 2, "messages": 5, "files": 5, "raw_purged": 0}
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    eml = [f["path"] for f in manifest["files"]]
    assert files == sorted([*eml, "manifest.json", "tickets.json"])
    assert {p.split("/")[0] for p in eml} == {
        f"ticket-{world.erin_ticket}",
        f"ticket-{world.frank_ticket}",
    }
    for entry in manifest["files"]:
        parsed = email.message_from_bytes(
            (out / entry["path"]).read_bytes(), policy=email.policy.default
        )
        assert parsed["Message-ID"].strip("<>") == entry["message_id"]
        people = " ".join(str(parsed[h] or "") for h in ("From", "To", "Cc")).lower()
        assert ERIN in people
        assert entry["path"].endswith(f"-{entry['direction']}.eml")

    tickets = json.loads((out / "tickets.json").read_text())
    assert [t["id"] for t in tickets] == [world.erin_ticket, world.frank_ticket]
    assert tickets[0]["customer"] == ERIN and tickets[1]["customer"] == FRANK
    everything = "\n".join(p.read_text(errors="replace") for p in out.rglob("*") if p.is_file())
    assert GINA not in everything and "Access request" not in everything
    # The attachment travels inside its .eml; its name never became a path.
    assert not list(tmp_path.rglob("evil.sh"))
    assert all(".." not in f for f in files)
    assert (out.stat().st_mode & 0o777) == 0o700


def test_export_refuses_a_folder_with_files(
    world: World, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "busy"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    code, _, err = run(world.config, "customer", "export", ERIN, "-o", str(out), capsys=capsys)
    assert code == 1
    assert err == (
        f"inboxd: error: {out} exists and is not an empty folder (choose another with -o)\n"
    )
    assert [p.name for p in out.iterdir()] == ["keep.txt"]


def test_export_of_a_stranger_is_empty_not_an_error(world: World, tmp_path: Path) -> None:
    manifest = cli_json(
        world.config, "customer", "export", "nobody@nowhere.example", "-o", str(tmp_path / "x")
    )
    assert manifest["counts"] == {"tickets": 0, "messages": 0, "files": 0, "raw_purged": 0}


# -- erase -----------------------------------------------------------------------------


def dump(engine: Engine, backend: str) -> str:
    """Every value of every table as text (blobs decoded and also in hex), the FTS index too."""
    meta = MetaData()
    with warnings.catch_warnings():  # expression indexes are not reflected: no data in them
        warnings.simplefilter("ignore", SAWarning)
        meta.reflect(engine)
    parts: list[str] = []
    with engine.connect() as conn:
        for table in meta.sorted_tables:
            for row in conn.execute(sa_select(table)).all():
                for value in row:
                    if isinstance(value, bytes | memoryview):
                        raw = bytes(value)
                        parts += [raw.decode("latin-1"), raw.hex()]
                    else:
                        parts.append(json.dumps(value, default=str, ensure_ascii=False))
    if backend == "sqlite":
        path = engine.url.database
        assert path is not None
        conn2 = sqlite3.connect(path)
        try:
            parts.extend(conn2.iterdump())
        finally:
            conn2.close()
    return "\n".join(parts).lower()


def tickets(engine: Engine) -> list[dict[str, Any]]:
    """What `ticket list --all --json` prints."""
    with session_scope(engine) as s:
        return views.list_all(s, now=datetime(2027, 1, 1, tzinfo=UTC))


def run(config: Path, *args: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """`inboxd --config CONFIG ARGS...` in this process: (exit code, stdout, stderr)."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as exited:
        main(["--config", str(config), *args])
    out, err = capsys.readouterr()
    return int(exited.value.code or 0), out, err


def kinds(engine: Engine, ticket_id: int) -> list[str]:
    with session_scope(engine) as s:
        return [
            e["kind"] for e in views.ticket_detail(s, ticket_id, now=datetime.now(UTC))["events"]
        ]


def search_index_hits(world: World, query: str) -> list[int]:
    """Rows SQLite's full-text index still finds for `query` (PostgreSQL computes it)."""
    if world.backend != "sqlite":
        return []
    conn = sqlite3.connect(world.engine.url.database or "")
    try:
        if not conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'message_fts'").fetchone():
            pytest.skip("no full-text index in this schema")
        rows = conn.execute("SELECT rowid FROM message_fts WHERE message_fts MATCH ?", (query,))
        return [r[0] for r in rows]
    finally:
        conn.close()


KEPT = ("id", "status", "priority", "team", "mailbox", "message_count", "created_at")
KEPT += ("first_response_at", "first_response_due", "resolution_due", "sla_policy", "closed_at")


def test_erase_removes_the_address_everywhere_and_keeps_the_metrics(world: World) -> None:
    erin_hex = ERIN.encode().hex()
    before = tickets(world.engine)
    before_kinds = {t["id"]: kinds(world.engine, t["id"]) for t in before}
    text = dump(world.engine, world.backend)
    assert ERIN in text and erin_hex in text and ERIN_NAME.lower() in text
    assert search_index_hits(world, "erasable OR erin") != [] or world.backend != "sqlite"

    refused = cli(world.config, "customer", "erase", ERIN, input=b"n\n", check=False)
    assert refused.returncode == 1 and b"aborted" in refused.stderr
    assert ERIN in dump(world.engine, world.backend)

    summary = cli_json(world.config, "customer", "erase", ERIN, "--yes")
    token = summary["token"]
    assert token.startswith("erased-") and len(token) == len("erased-") + 8
    assert summary["messages"] == 6  # 2 from her, reply and ack to her, Frank's Cc, the note
    assert summary["customer_tickets"] == 1
    assert summary["tickets"] == 2
    assert summary["outbox"] == 2  # the reply (sent or not) and the queued ack

    text = dump(world.engine, world.backend)
    assert ERIN not in text and erin_hex not in text
    assert ERIN_NAME.lower() not in text
    assert "printer on fire" not in text and "+47 555 0100" not in text
    assert "evil.sh" not in text  # attachment metadata of her message
    assert "sounded upset" not in text  # the note on her ticket
    assert FRANK in text and GINA in text  # other customers keep their data
    assert search_index_hits(world, "erasable OR erin") == []

    after = tickets(world.engine)
    assert [{k: t[k] for k in KEPT} for t in after] == [{k: t[k] for k in KEPT} for t in before]
    by_id = {t["id"]: t for t in after}
    assert by_id[world.erin_ticket]["customer"] == token
    assert by_id[world.erin_ticket]["customer_name"] is None
    assert by_id[world.erin_ticket]["subject"] == "(erased)"
    assert by_id[world.frank_ticket]["customer"] == FRANK
    for t in after:
        now_kinds = kinds(world.engine, t["id"])
        expected = before_kinds[t["id"]]
        if t["id"] in (world.erin_ticket, world.frank_ticket):
            expected = [*expected, "erased"]
        assert now_kinds == expected
    with session_scope(world.engine) as s:
        detail = views.ticket_detail(s, world.erin_ticket, now=datetime.now(UTC))
        erased = [e for e in detail["events"] if e["kind"] == "erased"]
        assert erased[0]["data"]["token"] == token
        assert ERIN not in json.dumps(erased)
        # Gina's own mail stays, with the address in it replaced by the token.
        gina = s.exec(
            select(Message).where(Message.ticket_id == world.gina_ticket, Message.direction == "in")
        ).one()
        raw = s.get(RawMail, gina.id)
        assert raw is not None and raw.data is not None and token.encode() in raw.data
        assert token in gina.text
        queued = s.exec(
            select(Outbox).where(Outbox.kind == "ack", Outbox.ticket_id == world.erin_ticket)
        ).one()
        assert (queued.status, queued.last_error, queued.recipients) == (
            "failed",
            "recipient erased",
            [token],
        )

    again = cli_json(world.config, "customer", "erase", ERIN, "--yes")
    assert again == {
        "token": token,
        "messages": 0,
        "customer_tickets": 0,
        "tickets": 0,
        "participants": 0,
        "outbox": 0,
        "mentions": {},
    }
    assert tickets(world.engine) == after


def test_erase_refuses_agents_and_our_own_addresses(
    world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    for address in ("ann@example.com", "support@example.com", "Support+t1-abc@example.com"):
        code, _, err = run(world.config, "customer", "erase", address, "--yes", capsys=capsys)
        assert code == 1, address
        assert err.startswith("inboxd: error: ") and "not a customer" in err
        assert err.count("\n") == 1
    code, _, err = run(world.config, "customer", "erase", "no-at-sign", "--yes", capsys=capsys)
    assert (code, err) == (
        2,
        "inboxd: error: not an e-mail address: 'no-at-sign' (an address like name@example.com)\n",
    )


def test_erase_leaves_longer_addresses_alone(sqlite_database: Database, tmp_path: Path) -> None:
    config = write_config(
        tmp_path, database=sqlite_database.url, boxes=[Box("support", "support@example.com")]
    )
    settings = load_settings(config)
    engine = sqlite_database.engine
    for sender in ("ann@x.example", "joann@x.example", "ann@x.example.net", "bo+ann@x.example"):
        data, _ = mail(sender=sender, subject=f"from {sender}", body=f"I am {sender}.")
        receive(engine, settings, data)
    with session_scope(engine) as s:
        result = privacy.erase(s, address="ann@x.example", secret=b"k", now=datetime.now(UTC))
    assert (result.messages, result.customer_tickets, result.outbox) == (2, 1, 1)  # mail, ack
    with session_scope(engine) as s:
        customers = sorted(t.customer_addr or "" for t in s.exec(select(Ticket)).all())
    assert customers == sorted(
        [result.token, "joann@x.example", "ann@x.example.net", "bo+ann@x.example"]
    )


# -- retention -------------------------------------------------------------------------


def close(engine: Engine, ticket_id: int, at: datetime) -> None:
    with Session(engine) as s, s.begin():
        ticket = s.get(Ticket, ticket_id)
        assert ticket is not None
        ticket.status, ticket.resolved_at, ticket.closed_at = "closed", at, at


def raw_state(engine: Engine, ticket_id: int) -> list[tuple[bool, bool]]:
    """(has raw bytes, has purged_at) for each message of the ticket."""
    with Session(engine) as s:
        rows = s.exec(
            select(RawMail.data, RawMail.purged_at)
            .join(Message, col(Message.id) == col(RawMail.message_pk))
            .where(Message.ticket_id == ticket_id)
        ).all()
    return [(data is not None, at is not None) for data, at in rows]


def test_purge_drops_only_old_closed_tickets_raw_mail(world: World) -> None:
    now = datetime.now(UTC)
    close(world.engine, world.erin_ticket, now - timedelta(days=400))
    close(world.engine, world.frank_ticket, now - timedelta(days=10))
    with session_scope(world.engine) as s:  # the reply went out; the ack still waits
        reply = s.exec(
            select(Outbox).where(Outbox.kind == "reply", Outbox.ticket_id == world.erin_ticket)
        ).one()
        reply.status, reply.sent_at = "sent", now
    # Gina's ticket stays open however old it is.

    dry = cli_json(world.config, "db", "purge", "--dry-run", "--older-than", "365d")
    assert (dry["dry_run"], dry["tickets"], dry["raw_mails"]) == (True, 1, 4)
    assert all(has for has, _ in raw_state(world.engine, world.erin_ticket))

    with session_scope(world.engine) as s:
        purged = privacy.purge_closed(s, older_than=timedelta(days=365), now=now)
    assert purged == 4  # her two mails, our reply and ack (the note has no raw mail)
    assert raw_state(world.engine, world.erin_ticket) == [(False, True)] * 4
    assert all(state == (True, False) for state in raw_state(world.engine, world.frank_ticket))
    assert all(state == (True, False) for state in raw_state(world.engine, world.gina_ticket))
    with session_scope(world.engine) as s:
        detail = views.ticket_detail(s, world.erin_ticket, now=now)  # still reads
        assert "Still burning." in [m["text"].strip() for m in detail["messages"]]
        assert privacy.purge_closed(s, older_than=timedelta(days=365), now=now) == 0
        rows = s.exec(select(Outbox).where(Outbox.ticket_id == world.erin_ticket)).all()
        assert sorted((o.kind, o.status, len(o.data) > 0) for o in rows) == [
            ("ack", "queued", True),  # not sent yet: kept whatever the ticket's age
            ("reply", "sent", False),
        ]

    # The export says which messages lost their raw mail.
    manifest = cli_json(
        world.config, "customer", "export", ERIN, "-o", str(world.config.parent / "exp")
    )
    assert manifest["counts"]["raw_purged"] == 4


def test_run_purge_follows_the_configured_retention(world: World) -> None:
    now = datetime.now(UTC)
    close(world.engine, world.erin_ticket, now - timedelta(days=40))
    assert privacy.run_purge(world.engine, world.settings, now) == 0  # no retention: keep
    text = world.config.read_text().replace(
        'timezone = "UTC"\n', 'timezone = "UTC"\nretention = "30d"\n', 1
    )
    world.config.write_text(text)
    settings = load_settings(world.config)
    assert privacy.run_purge(world.engine, settings, now) == 4
    assert raw_state(world.engine, world.erin_ticket) == [(False, True)] * 4

    out = cli(world.config, "db", "purge").stdout.decode()
    assert out.startswith("purged the raw mail of 0 messages")


def test_purge_without_retention_says_how_to_set_it(
    world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(world.config, "db", "purge", capsys=capsys)
    assert (code, err) == (
        2,
        'inboxd: error: no retention set (add retention = "365d" to [inboxd], '
        "or pass --older-than)\n",
    )
    code, _, err = run(world.config, "db", "purge", "--older-than", "soon", capsys=capsys)
    assert code == 2 and err.startswith("inboxd: error: --older-than: invalid duration")
