"""The agents' command line end to end: mail into Dovecot, `inboxd run --once`, then
`inboxd --as AGENT ticket ...` in a child process, as an agent types it."""

from __future__ import annotations

import email
import email.policy
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import pytest
from servers import Database, Dovecot, SmtpSink
from sqlmodel import Session, col, select
from support import Box, cli, cli_json, write_config

from inboxd.models import Outbox
from inboxd.tickets import tokens

ANN, BOB, LEA, CARL = "ann@example.com", "bob@example.com", "lea@example.com", "carl@example.com"
CUSTOMER = "carla@client.example"
QUOTED_BODY = (
    "Hello, the printer on floor 3 is broken.\n"
    "\n"
    "On Mon, 2 Mar 2026, Support wrote:\n"
    "> an old answer of ours\n"
    "> with two lines\n"
)
SLA = """
[sla.standard]
first_response = "4h"
resolution = "3d"
[sla_defaults]
default = "standard"
"""
# Mail about invoices goes to billing, and nobody is assigned there by a rule.
RULES = """
[[rule]]
name = "invoices"
when.subject = "(?i)invoice"
then.team = "billing"
then.assign = "none"
"""


@dataclass
class Desk:
    """A configured inboxd over Dovecot and the SMTP sink, driven like a user would."""

    config: Path
    dovecot: Dovecot
    user: str
    db: Database

    def deliver(self, *raws: bytes) -> None:
        """APPEND the mail to the mailbox, then one `inboxd run --once`."""
        for raw in raws:
            self.dovecot.append(self.user, "INBOX", raw)
        cli(self.config, "run", "--once")

    def run(self, agent: str | None, *args: str, check: bool = True, input: bytes | None = None):  # type: ignore[no-untyped-def]
        who = ("--as", agent) if agent else ()
        return cli(self.config, *who, "ticket", *args, check=check, input=input)

    def json(self, agent: str | None, *args: str) -> Any:
        who = ("--as", agent) if agent else ()
        return cli_json(self.config, *who, "ticket", *args)

    def refused(self, agent: str | None, *args: str) -> str:
        """The one line a refused command prints; it must exit 1 without a traceback."""
        proc = self.run(agent, *args, check=False)
        err = proc.stderr.decode()
        assert proc.returncode == 1, (proc.returncode, err)
        assert "Traceback" not in err and err.count("\n") == 1, err
        assert err.startswith("inboxd: error: ")
        return err.strip()

    def outbox(self, kind: str) -> list[Outbox]:
        with Session(self.db.engine) as s:
            return list(
                s.exec(select(Outbox).where(Outbox.kind == kind).order_by(col(Outbox.id))).all()
            )


def make_desk(
    tmp_path: Path, db: Database, dovecot: Dovecot, smtp_port: int, *, templates: bool = False
) -> Desk:
    user, password = dovecot.new_user()
    folder = tmp_path / "cfg"
    config = write_config(
        folder,
        database=db.url,
        boxes=[Box(name="support", address="support@example.com", user=user, password=password)],
        imap_port=dovecot.port,
        smtp_port=smtp_port,
        rules=RULES,
        extra=SLA,
    )
    if templates:
        (folder / "templates" / "canned").mkdir(parents=True)
        (folder / "templates" / "canned" / "thanks.txt").write_text(
            "Dear {{ customer.name }},\n\nthank you; {{ ticket.reference }} is solved.\n\n"
            "{{ agent.name }}\n"
        )
        config.write_text(
            config.read_text().replace("[inboxd]\n", '[inboxd]\ntemplates = "templates"\n', 1)
        )
    return Desk(config, dovecot, user, db)


def customer_mail(
    *,
    subject: str = "Printer broken",
    body: str = QUOTED_BODY,
    message_id: str = "<first@client.example>",
    sender: str = f"Carla Customer <{CUSTOMER}>",
    cc: str | None = "Boss <boss@client.example>",
    in_reply_to: str | None = None,
    references: str | None = None,
    attachment: tuple[str, bytes] | None = None,
    headers: dict[str, str] | None = None,
) -> bytes:
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = "support@example.com"
    if cc:
        msg["Cc"] = cc
    msg["Subject"] = subject
    msg["Date"] = format_datetime(datetime.now(UTC))
    msg["Message-ID"] = message_id
    if in_reply_to:
        msg["In-Reply-To"] = in_reply_to
        msg["References"] = references or in_reply_to
    for name, value in (headers or {}).items():
        msg[name] = value
    msg.set_content(body)
    if attachment:
        msg.add_attachment(
            attachment[1], maintype="application", subtype="octet-stream", filename=attachment[0]
        )
    return msg.as_bytes()


def parse(data: bytes) -> EmailMessage:
    parsed = email.message_from_bytes(data, policy=email.policy.default)
    assert isinstance(parsed, EmailMessage)
    return parsed


# ---------------------------------------------------------------------------- threading


def test_reply_goes_out_threaded_and_the_answer_joins_the_ticket(
    tmp_path: Path, database: Database, dovecot: Dovecot, smtp_sink: SmtpSink
) -> None:
    desk = make_desk(tmp_path, database, dovecot, smtp_sink.port)
    desk.deliver(customer_mail())
    [ticket] = desk.json(ANN, "list")
    tid = ticket["id"]
    assert (ticket["team"], ticket["assignee"], ticket["customer"]) == ("frontline", ANN, CUSTOMER)
    assert ticket["sla_state"] == "ok" and ticket["sla_due"] == ticket["first_response_due"]

    attachment = tmp_path / "steps.txt"
    attachment.write_text("1. open the tray\n")
    out = desk.run(ANN, "reply", str(tid), "-m", "We are on it.", "--attach", str(attachment))
    assert f"ticket {tid}: reply to {CUSTOMER} (cc boss@client.example)" in out.stdout.decode()

    [row] = desk.outbox("reply")
    sent = parse(row.data)
    assert sent["From"] == "Support <support@example.com>"
    assert sent["To"] == CUSTOMER and sent["Cc"] == "boss@client.example"
    assert sent["Subject"] == f"[#{tid}] Printer broken"
    assert sent["In-Reply-To"] == "<first@client.example>"
    assert sent["References"] == "<first@client.example>"
    reply_to = sent["Reply-To"].addresses[0]
    token = reply_to.username.partition("+")[2]
    with Session(database.engine) as s:
        assert tokens.verify_token(tokens.reply_secret(s), token) == tid
    assert reply_to.domain == "example.com" and reply_to.username.startswith("support+")
    assert [p.get_filename() for p in sent.iter_attachments()] == ["steps.txt"]

    cli(desk.config, "run", "--once")  # the outbox goes out through the SMTP sink
    received = {m.message["Message-ID"]: m for m in smtp_sink.wait_for(2)}  # ack and reply
    delivered = received[f"<{row.message_id}>"]
    assert set(delivered.rcpt_tos) == {CUSTOMER, "boss@client.example"}

    # The customer answers our reply from their mail client: no tag, no token, only
    # In-Reply-To and References name our mail.
    desk.deliver(
        customer_mail(
            subject="Re: printer",
            body="Thanks, it works again.",
            message_id="<answer@client.example>",
            cc=None,
            in_reply_to=f"<{row.message_id}>",
            references=f"<first@client.example> <{row.message_id}>",
        )
    )
    assert [t["id"] for t in desk.json(None, "list", "--all")] == [tid]
    shown = desk.json(ANN, "show", str(tid))
    assert [(m["direction"], m["author"]) for m in shown["messages"]] == [
        ("in", None),
        ("out", None),  # the acknowledgement
        ("out", ANN),
        ("in", None),
    ]
    assert shown["messages"][-1]["text"].strip() == "Thanks, it works again."
    assert shown["first_response_at"] is not None
    assert [a["filename"] for a in shown["messages"][2]["attachments"]] == ["steps.txt"]
    kinds = [(e["actor"], e["kind"]) for e in shown["events"]]
    assert (ANN, "replied") in kinds

    text = desk.run(ANN, "show", str(tid)).stdout.decode()
    words = " ".join(text.split())  # long lines wrap at the terminal width
    assert "IN Carla Customer <carla@client.example>" in words
    assert f"OUT {ANN} via support@example.com → {CUSTOMER} cc boss@client.example" in words
    assert "quoted history hidden" in text and "> an old answer" not in text
    assert "> an old answer of ours" in desk.run(ANN, "show", str(tid), "--full").stdout.decode()


# ---------------------------------------------------------------------------- roles


def test_roles_and_refusals(
    tmp_path: Path,
    sqlite_database: Database,
    dovecot: Dovecot,
    smtp_sink: SmtpSink,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    desk = make_desk(tmp_path, sqlite_database, dovecot, smtp_sink.port)
    desk.deliver(
        customer_mail(message_id="<one@client.example>"),
        customer_mail(subject="Printer still broken", message_id="<two@client.example>"),
    )
    one, two = (t["id"] for t in desk.json(LEA, "list", "--all"))
    assert [t["assignee"] for t in desk.json(LEA, "list", "--all")] == [ANN, BOB]

    assert desk.refused("zed@example.com", "list") == (
        "inboxd: error: unknown agent zed@example.com "
        "(agents: ann@example.com, bob@example.com, carl@example.com, dina@example.com, "
        "lea@example.com)"
    )
    assert "assigned to ann@example.com" in desk.refused(BOB, "reply", str(one), "-m", "hi")
    assert "only a lead of team frontline" in desk.refused(BOB, "assign", str(two), ANN)
    assert "only a lead of team frontline" in desk.refused(ANN, "merge", str(two), str(one))
    assert "assigned to bob@example.com" in desk.refused(ANN, "transfer", str(two), "billing")
    assert desk.refused(ANN, "show", "99") == "inboxd: error: no ticket 99"
    assert "unknown status 'done'" in desk.refused(BOB, "status", str(two), "done")
    no_one = desk.run(None, "claim", str(one), check=False)
    assert no_one.returncode == 2 and "pass --as AGENT" in no_one.stderr.decode()

    # The lead reassigns, then merges; a member works what is theirs.
    assert desk.run(LEA, "assign", str(two), ANN).stdout.decode().strip() == (
        f"ticket {two}: assignee {BOB} -> {ANN}"
    )
    monkeypatch.setenv("INBOXD_AGENT", LEA)  # the same as --as
    assert desk.run(None, "merge", str(two), str(one), "--reason", "same printer").returncode == 0
    monkeypatch.delenv("INBOXD_AGENT")
    merged = desk.json(None, "show", str(two))
    assert (merged["status"], merged["merged_into"]) == ("merged", one)
    assert "merged into ticket" in desk.refused(ANN, "reply", str(two), "-m", "hello")
    survivor = desk.json(None, "show", str(one))
    assert {m["subject"] for m in survivor["messages"] if m["direction"] == "in"} == {
        "Printer broken",
        "Printer still broken",
    }
    assert (LEA, "merged-from") in [(e["actor"], e["kind"]) for e in survivor["events"]]

    # Closed is final for members; the lead reopens.
    assert desk.run(ANN, "status", str(one), "closed").returncode == 0
    assert "closed is final" in desk.refused(ANN, "reply", str(one), "-m", "hello")
    assert "only a lead of team frontline" in desk.refused(ANN, "status", str(one), "open")
    assert desk.run(LEA, "status", str(one), "open").stdout.decode().strip() == (
        f"ticket {one}: status closed -> open"
    )


# ---------------------------------------------------------------------------- reading


def test_show_tells_kinds_apart_and_saves_attachments_safely(
    tmp_path: Path, sqlite_database: Database, dovecot: Dovecot, smtp_sink: SmtpSink
) -> None:
    desk = make_desk(tmp_path, sqlite_database, dovecot, smtp_sink.port)
    desk.deliver(customer_mail(attachment=("../../etc/passwd", b"root:x:0:0\n")))
    [ticket] = desk.json(ANN, "list")
    tid = str(ticket["id"])
    [ack] = desk.outbox("ack")
    desk.deliver(  # the customer's autoresponder answers our acknowledgement
        customer_mail(
            subject="Out of office",
            body="I am away until Monday.",
            message_id="<ooo@client.example>",
            cc=None,
            in_reply_to=f"<{ack.message_id}>",
            headers={"Auto-Submitted": "auto-replied"},
        )
    )
    desk.run(ANN, "note", tid, input=b"Printer model HL-2270, toner ordered.\n")

    text = desk.run(ANN, "show", tid).stdout.decode()
    assert "[auto-reply]" in text
    assert f"NOTE {ANN} (internal, not sent)" in text
    assert "Printer model HL-2270, toner ordered." in text
    assert "[1] passwd (application/octet-stream" in text
    assert len(desk.outbox("reply")) == 0  # a note is never mailed

    folder = tmp_path / "downloads"
    folder.mkdir()
    saved = desk.run(ANN, "attachment", tid, "1", "-o", str(folder)).stdout.decode()
    assert saved.startswith(f"saved {folder / 'passwd'}")
    assert [p.name for p in folder.iterdir()] == ["passwd"]
    assert (folder / "passwd").read_bytes() == b"root:x:0:0\n"
    assert "exists (--force overwrites it)" in desk.refused(
        ANN, "attachment", tid, "1", "-o", str(folder)
    )
    chosen = tmp_path / "mine.bin"
    desk.run(ANN, "attachment", tid, "1", "-o", str(chosen))
    assert chosen.read_bytes() == b"root:x:0:0\n"
    assert desk.run(ANN, "attachment", tid, "1").stdout == b"root:x:0:0\n"  # piped: stdout
    assert "has no attachment 2 (it has 1)" in desk.refused(ANN, "attachment", tid, "2")


def test_queue_filters_and_table(
    tmp_path: Path,
    sqlite_database: Database,
    dovecot: Dovecot,
    smtp_sink: SmtpSink,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    desk = make_desk(tmp_path, sqlite_database, dovecot, smtp_sink.port)
    desk.deliver(
        customer_mail(message_id="<p1@client.example>"),
        customer_mail(subject="Invoice 2026-113 missing", message_id="<p2@client.example>"),
        customer_mail(subject="Scanner too", message_id="<p3@client.example>"),
    )
    printer, invoice, scanner = (t["id"] for t in desk.json(None, "list", "--all"))

    def ids(agent: str | None, *args: str) -> list[int]:
        return [t["id"] for t in desk.json(agent, "list", *args)]

    assert sorted(ids(None)) == [printer, invoice, scanner]  # no --as: every open ticket
    assert ids(ANN) == [printer, scanner]  # frontline only, nearest due first
    assert ids(CARL) == [invoice]
    assert ids(CARL, "--assignee", "nobody") == [invoice]
    assert ids(ANN, "--assignee", "me") == [printer]
    assert ids(LEA, "--team", "billing") == [invoice]
    assert ids(ANN, "--limit", "1") == [printer]
    assert ids(ANN, "--breaching") == []

    assert desk.run(BOB, "tag", str(scanner), "+VIP", "-spam", "+hardware").stdout.decode() == (
        f"ticket {scanner}: tags (none) -> hardware, vip\n"
    )
    assert ids(ANN, "--tag", "vip") == [scanner]
    desk.run(BOB, "priority", str(scanner), "urgent")
    assert ids(ANN, "--priority", "urgent") == [scanner]
    desk.run(BOB, "status", str(scanner), "resolved")
    assert ids(ANN) == [printer]
    assert ids(ANN, "--status", "resolved") == [scanner]
    assert scanner in ids(ANN, "--all")
    desk.run(CARL, "claim", str(invoice))
    assert ids(CARL, "--assignee", "me") == [invoice]
    desk.run(CARL, "transfer", str(invoice), "frontline")
    assert ids(ANN, "--team", "frontline", "--assignee", "nobody") == []  # round-robin took it

    monkeypatch.setenv("COLUMNS", "90")  # rich sizes the table to the terminal
    table = desk.run(LEA, "list").stdout.decode().splitlines()
    assert table[0].split() == [
        "id",
        "age",
        "sla",
        "pri",
        "team",
        "assignee",
        "customer",
        "subject",
    ]
    assert all(len(line) <= 90 for line in table), table
    assert any(line.split()[0] == str(printer) and "ok " in line for line in table[1:])


# ---------------------------------------------------------------------------- text sources


def test_reply_and_note_text_from_stdin_file_and_canned_template(
    tmp_path: Path, sqlite_database: Database, dovecot: Dovecot, smtp_sink: SmtpSink
) -> None:
    desk = make_desk(tmp_path, sqlite_database, dovecot, smtp_sink.port, templates=True)
    desk.deliver(customer_mail())
    tid = str(desk.json(ANN, "list")[0]["id"])

    desk.run(ANN, "reply", tid, "--no-cc", input=b"From stdin.\n")
    draft = tmp_path / "draft.txt"
    draft.write_text("From a file.\n")
    desk.run(ANN, "reply", tid, "--file", str(draft), "--status", "pending")
    desk.run(ANN, "reply", tid, "--template", "thanks")
    bodies = [parse(r.data) for r in desk.outbox("reply")]
    assert [b.get_content().strip() for b in bodies[:2]] == ["From stdin.", "From a file."]
    assert bodies[0]["Cc"] is None and bodies[1]["Cc"] == "boss@client.example"
    assert bodies[2].get_content() == (
        f"Dear Carla Customer,\n\nthank you; [#{tid}] is solved.\n\nAnn\n"
    )
    assert desk.json(ANN, "show", tid)["status"] == "pending"
    assert "no canned response 'nope'" in desk.refused(ANN, "reply", tid, "--template", "nope")
    assert "empty reply" in desk.refused(ANN, "reply", tid, "-m", "   ")


def test_editor_draft_drops_comment_lines(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from inboxd.cli import tickets

    script = tmp_path / "fake-editor.py"
    script.write_text(
        "import sys\n"
        "path = sys.argv[1]\n"
        "draft = open(path).read()\n"
        "assert '# carla wrote:' in draft\n"
        "open(path, 'w').write('Typed in the editor.\\n' + draft)\n"
    )
    monkeypatch.delenv("VISUAL", raising=False)
    monkeypatch.setenv("EDITOR", f"{sys.executable} {script}")
    text = tickets._edit(what="reply", ticket=7, prefill="# carla wrote:\n#   hello\n")
    assert text == "Typed in the editor."


# ------------------------------------------------------------------ start-up and read path

# What `ticket list` and `ticket show` must not import: each costs start-up time an agent
# pays many times a day (bench/cli.py measures it).
HEAVY = {"sqlalchemy", "sqlmodel", "alembic", "jinja2", "mailparser", "imapclient", "aiosmtplib"}
PROBE = """
import sys
from inboxd.cli.main import main
try:
    main(sys.argv[2:])
finally:
    loaded = sorted({m.split(".")[0] for m in sys.modules} & set(sys.argv[1].split(",")))
    print("loaded:" + ",".join(loaded), file=sys.stderr)
"""


def _probe(*args: str) -> tuple[str, set[str]]:
    """Run `inboxd ARGS` in a child; its stdout and which of HEAVY it imported.

    The first of ARGS is the comma-separated module names to look for."""
    proc = subprocess.run(
        [sys.executable, "-c", PROBE, *args],
        capture_output=True,
        timeout=120,
        check=False,
        env={**os.environ, "COLUMNS": "120"},
    )
    err = proc.stderr.decode()
    assert proc.returncode == 0, err
    line = [ln for ln in err.splitlines() if ln.startswith("loaded:")][-1]
    return proc.stdout.decode(), {m for m in line.removeprefix("loaded:").split(",") if m}


def test_help_lists_every_command_without_importing_them() -> None:
    """Lazy loading cannot silently drop a command: `inboxd --help` lists exactly what the
    registrations produce, each with the help text its own module gives."""
    import contextlib
    import io

    from typer.main import get_group

    from inboxd.cli import main as cli_main

    eager = cli_main.build(list(cli_main.COMMANDS))
    assert list(eager) == list(cli_main.COMMANDS)  # same names, in the listed order
    for name, command in eager.items():
        first = " ".join((command.help or "").split("\n\n")[0].split())
        assert first == cli_main.COMMANDS[name].help, name

    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as done:
        cli_main.main(["--help"])
    assert done.value.code == 0
    listing = out.getvalue().split("Commands:\n", 1)[1]
    for name in ("ticket", "message", "rules", "outbox", "customer", "db", "report", "check"):
        assert f"\n  {name} " in f"\n{listing}", name
    # The same rows as a root group holding every command, built eagerly.
    group = get_group(cli_main.app)
    group.commands = eager
    with group.make_context("inboxd", ["--help"], resilient_parsing=True) as ctx:
        formatter = ctx.make_formatter()
        type(group).__mro__[1].format_commands(group, ctx, formatter)
    assert listing.rstrip() == formatter.getvalue().split("Commands:\n", 1)[1].rstrip()


def test_help_and_sub_help_load_only_what_they_show() -> None:
    _, loaded = _probe(",".join(HEAVY), "--help")
    assert loaded == set()
    out, loaded = _probe(",".join(HEAVY), "ticket", "--help")
    assert "list" in out and "show" in out and "search" in out
    assert loaded == set()


def test_filter_vocabulary_matches_the_models() -> None:
    from inboxd import models
    from inboxd.tickets import actions, queue

    assert queue.STATUSES == models.STATUSES
    assert queue.OPEN_STATUSES == models.OPEN_STATUSES
    assert queue.PRIORITIES == actions.PRIORITIES
    assert queue.NOBODY == actions.NOBODY


def test_list_and_show_read_without_the_orm_and_agree_with_it(
    tmp_path: Path, sqlite_database: Database
) -> None:
    """`ticket list` and `show` on SQLite use a bare sqlite3 connection: the documents are
    the ones the ORM session path builds, and nothing heavy is imported."""
    from datetime import timedelta

    from inboxd.db import session_scope
    from inboxd.models import Delivery, Message, Participant, Ticket, TicketEvent, TicketTag
    from inboxd.tickets import views

    now = datetime.now(UTC)
    config = write_config(tmp_path / "cfg", database=sqlite_database.url, boxes=[], extra=SLA)
    with session_scope(sqlite_database.engine) as s:
        t = Ticket(
            subject="Printer",
            team="frontline",
            assignee=ANN,
            customer_addr=CUSTOMER,
            mailbox="support",
            created_at=now - timedelta(hours=5),
            updated_at=now - timedelta(hours=1),
            sla_policy="standard",
            first_response_warn_at=now - timedelta(hours=2),
            first_response_due=now + timedelta(hours=1),
            resolution_due=now + timedelta(days=2),
            sla_fired=["first_response:warning:0"],
            message_count=1,
        )
        s.add(t)
        s.flush()
        assert t.id is not None
        m = Message(
            content_hash="h1",
            ticket_id=t.id,
            mailbox="support",
            from_addr=CUSTOMER,
            to_addrs=[{"addr": "support@example.com", "name": ""}],
            subject="Printer",
            date_at=now - timedelta(hours=5),
            date_offset_min=120,
            text="Hello\n> quoted\n",
            attachments=[{"index": 0, "filename": "a.pdf", "content_type": "x/y", "size": 3}],
            received_at=now - timedelta(hours=5),
            bounce={"recipients": []},
        )
        s.add(m)
        s.flush()
        s.add(Delivery(message_pk=m.id or 0, mailbox="support", delivered_at=now))
        s.add(Participant(ticket_id=t.id, address=CUSTOMER, role="customer"))
        s.add(TicketTag(ticket_id=t.id, tag="vip"))
        s.add(TicketEvent(ticket_id=t.id, at=now, actor=ANN, kind="note", data={"x": [1]}))
        ticket_id = t.id

    heavy = ",".join(HEAVY)
    out, loaded = _probe(heavy, "--config", str(config), "--as", ANN, "ticket", "list", "--json")
    assert loaded == set()
    listed = json.loads(out)
    out, loaded = _probe(heavy, "--config", str(config), "ticket", "show", str(ticket_id), "--json")
    assert loaded == set()
    shown = json.loads(out)
    table, loaded = _probe(heavy, "--config", str(config), "--as", ANN, "ticket", "list")
    assert loaded == set() and "Printer" in table

    with session_scope(sqlite_database.engine) as s:
        orm_list = views.ticket_docs(s, [s.get(Ticket, ticket_id)], now=now)  # type: ignore[list-item]
        orm_show = views.ticket_detail(s, ticket_id, now=now)
    assert listed == json.loads(json.dumps(orm_list, default=str))
    assert shown == json.loads(json.dumps(orm_show, default=str))
    assert shown["sla_state"] == "warning" and shown["tags"] == ["vip"]
    assert shown["messages"][0]["date"].endswith("+02:00")
    assert shown["messages"][0]["attachments"][0]["number"] == 1
    assert shown["events"][0]["data"] == {"x": [1]}


def _clock_fields() -> Any:
    from datetime import timedelta

    from hypothesis import strategies as st

    base = datetime(2026, 3, 1, tzinfo=UTC)
    instant = st.one_of(st.none(), st.integers(-48, 48).map(lambda h: base + timedelta(hours=h)))
    return st.fixed_dictionaries(
        {
            "status": st.sampled_from(("open", "pending", "resolved", "closed", "merged")),
            "sla_policy": st.sampled_from((None, "standard")),
            "first_response_at": instant,
            "resolved_at": instant,
            "first_response_warn_at": instant,
            "first_response_due": instant,
            "next_response_warn_at": instant,
            "next_response_due": instant,
            "resolution_warn_at": instant,
            "resolution_due": instant,
            "next_response_cycle": st.integers(0, 2),
            "resolution_cycle": st.integers(0, 2),
            "sla_fired": st.lists(
                st.sampled_from(
                    [
                        f"{c}:{lvl}:{n}"
                        for c in ("first_response", "next_response", "resolution")
                        for lvl in ("warning", "breach")
                        for n in (0, 1)
                    ]
                ),
                max_size=3,
            ),
        }
    )


def test_read_path_sla_state_is_the_sla_modules() -> None:
    """`views` reads the clocks with the sweep's own functions, over rows as over tickets."""
    pytest.importorskip("hypothesis")
    from dataclasses import fields as dataclass_fields

    from hypothesis import given, settings

    from inboxd.models import Ticket
    from inboxd.tickets import sla, views

    assert (views.sla_state, views.active_due) == (sla.sla_state, sla.active_due)
    now = datetime(2026, 3, 1, 6, tzinfo=UTC)
    blank = {f.name: None for f in dataclass_fields(views.TicketRow)}

    @settings(max_examples=400, deadline=None)
    @given(_clock_fields())
    def check(fields: dict[str, Any]) -> None:
        ticket = Ticket(subject="s", created_at=now, updated_at=now, **fields)
        row = views.TicketRow(**{**blank, "id": 1, "subject": "s", **fields})
        assert views.sla_state(row, now) == sla.sla_state(ticket, now)
        assert views.active_due(row) == sla.active_due(ticket)

    check()


def test_plain_option_values_convert_as_typer_converts_them() -> None:
    """`inboxd.cli.coerce` spares the pydantic import for plain values; every value, plain
    or not, converts to what Typer's own converter gives, or fails with its message."""
    from typer._click import Context
    from typer._click.exceptions import BadParameter
    from typer._coercion import build_runtime_param
    from typer.main import get_group

    from inboxd.cli import coerce, main

    commands = main.build(["ticket"])["ticket"].commands
    group = get_group(main.app)  # --config, --as
    params = [
        *group.params,
        *commands["list"].params,
        *commands["show"].params,
        *commands["attachment"].params,
    ]
    samples: list[Any] = [
        None, "", "ann@example.com", "é", "\udcff", "12", "0012", " 12", "+3", "1_000",
        "-5", "12.5", "x", "99999999999999999999", 50, True, (), ("a",), ("a", "b"), "a/",
        "./inboxd.toml", "inboxd.toml", "/nonexistent/dir/f", Path("p"), "a\0b",
    ]  # fmt: skip
    checked = 0
    for param in params:
        ctx = Context(commands["list"])
        for value in samples:
            results = []
            for runtime in (coerce.LightParam(param), build_runtime_param(param.type_descriptor)):
                try:
                    got: Any = runtime.coerce(value, param=param, ctx=ctx)
                    results.append(("ok", type(got), got))
                except (BadParameter, ValueError) as exc:
                    results.append(("error", type(exc), str(exc)))
            assert results[0] == results[1], (param.name, value)
            checked += 1
    assert checked > 300


def test_read_commands_validate_a_config_once_then_use_the_cached_view(
    tmp_path: Path, sqlite_database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After one full validation, `ticket list` needs no pydantic; any edit of the file
    validates in full again, so a new member is known at once and a broken file is still
    reported as broken, whatever an older cache said."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    config = write_config(tmp_path / "cfg", database=sqlite_database.url, boxes=[], extra=SLA)
    watch = "pydantic,inboxd"
    args = ("--config", str(config), "--as", ANN, "ticket", "list", "--json")

    assert json.loads(_probe(watch, *args)[0]) == []  # the first run validates in full
    [cached] = (tmp_path / "cache" / "inboxd").iterdir()
    assert cached.stat().st_mode & 0o077 == 0  # the owner's only
    out, loaded = _probe(watch, *args)
    assert json.loads(out) == [] and "pydantic" not in loaded

    newcomer = "newbie@example.com"
    text = config.read_text()
    assert '"ann@example.com"' in text
    config.write_text(text.replace('"ann@example.com"', f'"ann@example.com", "{newcomer}"', 1))
    proc = subprocess.run(
        [sys.executable, "-m", "inboxd", "--config", str(config), "--as", newcomer, "ticket",
         "list", "--json"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == []

    config.write_text(text.replace("[[team]]", "[[team]]\nbogus_key = 1", 1))
    proc = subprocess.run(
        [sys.executable, "-m", "inboxd", "--config", str(config), "ticket", "list"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert proc.returncode == 2  # a configuration error, as every command reports it
    assert "bogus_key" in proc.stderr and "Traceback" not in proc.stderr
