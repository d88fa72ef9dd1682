"""The acknowledgement as the customer gets it: read back from the outbox row intake wrote."""

from __future__ import annotations

import email
import email.policy
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from pathlib import Path

import pytest
from servers import Database, SmtpSink
from sqlalchemy import Engine
from sqlmodel import Session, col, select
from support import Box, cli, write_config

from inboxd.config import Settings, load_settings
from inboxd.db import session_scope
from inboxd.models import Message, Outbox, Ticket, TicketEvent
from inboxd.tickets import intake, templates, tokens

SECRET = b"ack-test-secret"
PLUS_ONE = timezone(timedelta(hours=1))
SLA = """
[calendar.office]
timezone = "Europe/Oslo"
holidays = [2026-04-02, 2026-04-03, 2026-04-06]
[calendar.office.hours]
mon = "09:00-17:00"
tue = "09:00-17:00"
wed = "09:00-17:00"
thu = "09:00-17:00"
fri = "09:00-17:00"

[sla.office]
calendar = "office"
first_response = "4h"
resolution = "3d"

[sla_defaults]
default = "office"
"""
# Wednesday before Easter, 15:00 in Oslo; the customer writes from UTC+01:00.
STORED = datetime(2026, 4, 1, 13, 0, tzinfo=UTC)
SENT = STORED.astimezone(PLUS_ONE)


class Clock:
    def __init__(self, at: datetime) -> None:
        self.at = at

    def __call__(self) -> datetime:
        return self.at


def make_settings(
    tmp_path: Path, *, extra: str = SLA, edit: Callable[[str], str] | None = None
) -> Settings:
    path = write_config(
        tmp_path / "cfg",
        database=f"sqlite:///{tmp_path / 'unused.db'}",
        boxes=[Box("support", "support@example.com")],
        extra=extra,
    )
    if edit is not None:
        path.write_text(edit(path.read_text()))
    return load_settings(path)


def mail(
    *,
    subject: str = "Printer broken",
    sender: str = "carla@client.example",
    name: str = "Carla Customer",
    to: str = "support@example.com",
    date: datetime | None = SENT,
    message_id: str | None = None,
    in_reply_to: str | None = None,
    headers: dict[str, str] | None = None,
) -> bytes:
    msg = EmailMessage()
    msg["From"] = f"{name} <{sender}>"
    msg["To"] = to
    msg["Subject"] = subject
    if date is not None:
        msg["Date"] = format_datetime(date)
    msg["Message-ID"] = message_id or make_msgid(domain="client.example")
    if in_reply_to:
        msg["In-Reply-To"] = in_reply_to
        msg["References"] = f"<older@client.example> {in_reply_to}"
    for key, value in (headers or {}).items():
        msg[key] = value
    msg.set_content("Hello, the printer on floor 2 does not print.")
    return msg.as_bytes()


def receive(
    engine: Engine, settings: Settings, data: bytes, *, at: datetime = STORED, source: str = "imap"
) -> intake.Received:
    config = intake.IntakeConfig.from_settings(settings, secret=SECRET, rules=None, clock=Clock(at))
    with session_scope(engine) as s:
        return intake.receive(s, config, mailbox="support", data=data, source=source)  # type: ignore[arg-type]


def acks(engine: Engine) -> list[tuple[Outbox, EmailMessage]]:
    with Session(engine) as s:
        rows = s.exec(select(Outbox).where(Outbox.kind == "ack").order_by(col(Outbox.id))).all()
    return [
        (r, email.message_from_bytes(r.data, policy=email.policy.default))  # type: ignore[misc]
        for r in rows
    ]


def events(engine: Engine, ticket_id: int | None, kind: str) -> list[TicketEvent]:
    with Session(engine) as s:
        return list(
            s.exec(
                select(TicketEvent)
                .where(TicketEvent.ticket_id == ticket_id, TicketEvent.kind == kind)
                .order_by(col(TicketEvent.id))
            ).all()
        )


def body(msg: EmailMessage) -> str:
    part = msg.get_body(preferencelist=("plain",))
    assert part is not None
    return part.get_content()  # type: ignore[no-any-return]


def test_acknowledgement_headers_and_body(tmp_path: Path, sqlite_engine: Engine) -> None:
    settings = make_settings(tmp_path)
    r = receive(sqlite_engine, settings, mail(message_id="<q1@client.example>"))
    assert r.outcome == "new-ticket"
    [(row, msg)] = acks(sqlite_engine)

    assert (row.ticket_id, row.mailbox, row.smtp) == (r.ticket_id, "support", "default")
    assert row.recipients == ["carla@client.example"]
    assert msg["From"].addresses[0].display_name == "Support"
    assert msg["From"].addresses[0].addr_spec == "support@example.com"
    assert [a.addr_spec for a in msg["To"].addresses] == ["carla@client.example"]
    assert msg["Subject"] == f"[#{r.ticket_id}] Printer broken"
    assert msg["In-Reply-To"] == "<q1@client.example>"
    assert msg["References"].split() == ["<q1@client.example>"]
    assert msg["Auto-Submitted"] == "auto-replied"
    assert msg["X-Auto-Response-Suppress"] == "All"
    assert msg["X-Inboxd-Loop"]
    reply_to = [a.addr_spec for a in msg["Reply-To"].addresses]
    assert tokens.find_ticket_token(SECRET, reply_to, settings.own_addresses()) == r.ticket_id

    text = body(msg)
    assert "Hello Carla Customer," in text
    assert f"opened ticket [#{r.ticket_id}]" in text
    assert "frontline team" in text
    # Two business hours on Wednesday, Easter closes Thursday to Monday, two on Tuesday:
    # 09:00 UTC on Tuesday, which is 10:00 where the customer is.
    assert "within 4 business hours, that is by Tuesday 10:00 (UTC+01:00)." in text

    [sent] = events(sqlite_engine, r.ticket_id, "ack-sent")
    assert sent.data["message_id"] == row.message_id
    with Session(sqlite_engine) as s:
        t = s.get(Ticket, r.ticket_id)
        assert t is not None
        assert t.first_response_at is None  # an acknowledgement is not a response
        conversation = s.exec(
            select(Message.direction)
            .where(Message.ticket_id == r.ticket_id)
            .order_by(col(Message.received_at), col(Message.id))
        ).all()
    assert list(conversation) == ["in", "out"]  # the customer's mail first, then the ack


def test_without_a_date_header_the_time_is_in_inboxd_zone(
    tmp_path: Path, sqlite_engine: Engine
) -> None:
    settings = make_settings(tmp_path)
    receive(sqlite_engine, settings, mail(date=None))
    [(_, msg)] = acks(sqlite_engine)
    assert "by Tuesday 09:00 (UTC+00:00)." in body(msg)


def test_without_sla_the_ack_promises_nothing(tmp_path: Path, sqlite_engine: Engine) -> None:
    settings = make_settings(tmp_path, extra="")
    receive(sqlite_engine, settings, mail())
    [(_, msg)] = acks(sqlite_engine)
    text = body(msg)
    assert "we cannot promise a time" in text
    assert "within" not in text and " by " not in text


def test_reply_to_the_acknowledgement_joins_the_ticket(
    tmp_path: Path, sqlite_engine: Engine
) -> None:
    settings = make_settings(tmp_path)
    first = receive(sqlite_engine, settings, mail())
    [(row, msg)] = acks(sqlite_engine)
    later = STORED + timedelta(hours=1)
    by_reference = receive(
        sqlite_engine,
        settings,
        mail(subject="Also the scanner", in_reply_to=f"<{row.message_id}>"),
        at=later,
    )
    assert (by_reference.outcome, by_reference.ticket_id) == ("joined", first.ticket_id)
    # A client that only keeps the Reply-To address (no References) still lands there.
    by_token = receive(
        sqlite_engine,
        settings,
        mail(subject="one more thing", to=msg["Reply-To"].addresses[0].addr_spec),
        at=later,
    )
    assert (by_token.outcome, by_token.ticket_id) == ("joined", first.ticket_id)
    assert len(acks(sqlite_engine)) == 1  # replies are never acknowledged


DSN = (
    b"From: Mail Delivery System <MAILER-DAEMON@mx.client.example>\r\n"
    b"To: support@example.com\r\n"
    b"Subject: Undelivered Mail Returned to Sender\r\n"
    b"Message-ID: <dsn1@mx.client.example>\r\n"
    b"MIME-Version: 1.0\r\n"
    b'Content-Type: multipart/report; report-type=delivery-status; boundary="R"\r\n\r\n'
    b"--R\r\nContent-Type: text/plain\r\n\r\nYour message could not be delivered.\r\n"
    b"--R\r\nContent-Type: message/delivery-status\r\n\r\n"
    b"Reporting-MTA: dns; mx.client.example\r\n\r\n"
    b"Final-Recipient: rfc822; gone@client.example\r\nAction: failed\r\nStatus: 5.1.1\r\n"
    b"--R--\r\n"
)


@pytest.mark.parametrize(
    ("data", "kind", "reason"),
    [
        (mail(headers={"Auto-Submitted": "auto-replied"}), "auto-reply", None),
        (mail(subject="Out of office: back on Monday"), "auto-reply", None),
        (DSN, "bounce", None),
        (mail(headers={"X-Spam-Flag": "YES"}), "spam", None),
        (mail(sender="support@example.com", name="Support"), "own", None),
        (mail(headers={"List-Id": "<news.client.example>"}), "bulk", "bulk mail"),
        (mail(sender="ann@example.com", name="Ann Agent"), "human", "the sender is an agent"),
    ],
    ids=["auto-submitted", "out-of-office", "bounce", "spam", "own", "bulk", "agent"],
)
def test_no_acknowledgement_for_machines_ourselves_and_agents(
    tmp_path: Path, sqlite_engine: Engine, data: bytes, kind: str, reason: str | None
) -> None:
    settings = make_settings(tmp_path)
    r = receive(sqlite_engine, settings, data)
    assert r.classification == kind
    assert acks(sqlite_engine) == []
    if reason is None:
        assert r.ticket_id is None  # never a ticket of its own, so nothing to acknowledge
    else:
        [event] = events(sqlite_engine, r.ticket_id, "ack-suppressed")
        assert reason in event.data["reason"]


def test_rate_limit_per_sender(tmp_path: Path, engine: Engine) -> None:
    settings = make_settings(tmp_path)
    results = [
        receive(
            engine, settings, mail(subject=f"Problem {i}"), at=STORED + timedelta(minutes=10 * i)
        )
        for i in range(5)
    ]
    assert [r.outcome for r in results] == ["new-ticket"] * 5
    assert [row.ticket_id for row, _ in acks(engine)] == [r.ticket_id for r in results[:3]]
    for r in results[3:]:
        [event] = events(engine, r.ticket_id, "ack-suppressed")
        assert event.data["reason"] == "rate limit: 3 acknowledgements to this sender within 1 hour"
    # Another sender is not affected, and an hour after the first ack there is room again.
    other = receive(engine, settings, mail(sender="dan@client.example"), at=STORED)
    again = receive(engine, settings, mail(subject="Problem 6"), at=STORED + timedelta(minutes=61))
    assert [row.ticket_id for row, _ in acks(engine)][3:] == [other.ticket_id, again.ticket_id]


def test_header_injection_through_subject_and_name_is_inert(
    tmp_path: Path, sqlite_engine: Engine
) -> None:
    settings = make_settings(tmp_path)
    raw = (
        b"From: =?utf-8?q?Carla=0D=0A=E2=80=AEX-Evil=3D1?= <carla@client.example>\r\n"
        b"To: support@example.com\r\n"
        b"Subject: =?utf-8?q?Help=0D=0ABcc:_victim@evil.example=0D=0A=0D=0Afake_body?=\r\n"
        b"Date: " + format_datetime(SENT).encode() + b"\r\n"
        b"Message-ID: <inject@client.example>\r\n"
        b"\r\n"
        b"Hello\r\n"
    )
    r = receive(sqlite_engine, settings, raw)
    [(row, msg)] = acks(sqlite_engine)
    assert row.recipients == ["carla@client.example"]
    # Every header line of what we send is one of ours: no injected Bcc, no fake body.
    head = row.data.replace(b"\r\n", b"\n").split(b"\n\n", 1)[0].decode()
    names = {line.split(":", 1)[0].lower() for line in head.splitlines() if line[:1].strip()}
    assert names <= {
        "from", "to", "reply-to", "subject", "date", "message-id", "in-reply-to", "references",
        "auto-submitted", "x-auto-response-suppress", "precedence", "x-inboxd-loop",
        "mime-version", "content-type", "content-transfer-encoding",
    }  # fmt: skip
    assert msg["Bcc"] is None
    assert str(msg["Subject"]) == f"[#{r.ticket_id}] Help Bcc: victim@evil.example fake body"
    text = body(msg)
    assert "Hello Carla X-Evil=1," in text  # one line, the bidi override dropped
    assert not any(line.startswith(("Bcc:", "fake body")) for line in text.splitlines())


def test_plain_text_values_are_defused() -> None:
    assert templates.plain("a\r\nBcc: x\u202eevil\u200b \t b") == "a Bcc: xevil b"
    assert len(templates.plain("x" * 500)) == 200


def test_mailbox_template_override_and_a_broken_template(
    tmp_path: Path, sqlite_engine: Engine
) -> None:
    folder = tmp_path / "cfg" / "templates"
    folder.mkdir(parents=True)
    (folder / "vip-ack.txt").write_text(
        "Ticket {{ ticket.reference }} is with {{ mailbox.display_name }}"
        "{% if sla %}, answer by {{ sla.by }}{% endif %}.\n"
    )
    (folder / "broken-ack.txt").write_text("Hello {{ customer.nickname }}\n")

    def edit(template: str) -> Callable[[str], str]:
        def apply(config: str) -> str:
            config = config.replace(
                'rules = "rules"\n', 'rules = "rules"\ntemplates = "templates"\n'
            )
            return config.replace(
                'smtp = "default"\n', f'smtp = "default"\nack_template = "{template}"\n', 1
            )

        return apply

    settings = make_settings(tmp_path, edit=edit("vip-ack.txt"))
    r = receive(sqlite_engine, settings, mail())
    [(_, msg)] = acks(sqlite_engine)
    assert (
        body(msg)
        == f"Ticket [#{r.ticket_id}] is with Support, answer by Tuesday 10:00 (UTC+01:00).\n"
    )
    assert templates.check(settings) == []
    assert conversation(sqlite_engine, r.ticket_id) == (2, ["in", "out"])  # mail and ack

    broken = make_settings(tmp_path, edit=edit("broken-ack.txt"))
    r = receive(sqlite_engine, broken, mail(subject="Second"))
    assert r.outcome == "new-ticket"  # the customer's mail is processed all the same
    [event] = events(sqlite_engine, r.ticket_id, "ack-suppressed")
    assert event.data["reason"].startswith("template error: template broken-ack.txt")
    assert "nickname" in event.data["reason"]
    # The ack was counted when the ticket was opened; it never came: one message.
    assert conversation(sqlite_engine, r.ticket_id) == (1, ["in"])
    assert templates.check(broken) == [
        "template broken-ack.txt, line 1: 'dict object' has no attribute 'nickname'"
    ]


def conversation(engine: Engine, ticket_id: int | None) -> tuple[int, list[str]]:
    """The ticket's message count and its messages' directions, as `ticket show` has them."""
    with Session(engine) as s:
        ticket = s.get(Ticket, ticket_id)
        assert ticket is not None
        rows = s.exec(
            select(Message.direction).where(Message.ticket_id == ticket_id).order_by(Message.id)
        ).all()
        return ticket.message_count, list(rows)


def test_shipped_templates_check_clean(tmp_path: Path) -> None:
    assert templates.check(make_settings(tmp_path)) == []


def test_imported_and_disabled_are_not_acknowledged(tmp_path: Path, sqlite_engine: Engine) -> None:
    settings = make_settings(tmp_path)
    imported = receive(sqlite_engine, settings, mail(), source="import")
    off = make_settings(tmp_path / "off", extra=SLA + "[ack]\nenabled = false\n")
    disabled = receive(sqlite_engine, off, mail(subject="Another"))
    assert acks(sqlite_engine) == []
    reasons = [
        events(sqlite_engine, r.ticket_id, "ack-suppressed")[0].data["reason"]
        for r in (imported, disabled)
    ]
    assert reasons == [
        "imported mail is never acknowledged",
        "acknowledgements are off ([ack] enabled = false)",
    ]


def test_acknowledgement_reaches_the_customer_over_smtp(
    tmp_path: Path, sqlite_database: Database, smtp_sink: SmtpSink
) -> None:
    """The whole way: the MTA pipe stores a mail, `run --once` sends its ack to the relay."""
    config = write_config(
        tmp_path / "cfg",
        database=sqlite_database.url,
        boxes=[Box("support", "support@example.com")],
        smtp_port=smtp_sink.port,
        extra=SLA,
    )
    delivered = cli(config, "deliver", "--mailbox", "support", input=mail(date=datetime.now(UTC)))
    assert b"new-ticket" in delivered.stdout + delivered.stderr
    cli(config, "run", "--once")
    [got] = smtp_sink.wait_for(1)
    assert got.rcpt_tos == ("carla@client.example",)
    assert got.mail_from == "support@example.com"
    assert got.message["Subject"] == "[#1] Printer broken"
    assert got.message["Auto-Submitted"] == "auto-replied"
    assert "within 4 business hours, that is by " in body(got.message)
    with Session(sqlite_database.engine) as s:
        [row] = s.exec(select(Outbox).where(Outbox.kind == "ack")).all()
    assert row.status == "sent"
