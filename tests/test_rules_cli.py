"""`inboxd rules check | test | replay`, through the real command line."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from servers import Database
from sqlalchemy import text
from sqlmodel import col, select
from support import CORPUS, Box, cli, cli_json, make_mail, write_config

from inboxd.clock import utcnow
from inboxd.db import session_scope
from inboxd.models import Message, RawMail, Ticket

BOXES = [
    Box("support", "support@example.com"),
    Box("billing", "billing@example.com", team="billing"),
]
# Nothing may touch the database: it is in a folder that does not exist.
NO_DATABASE = "sqlite:////nonexistent/inboxd-rules-test/inboxd.db"

RULES = r"""
[[rule]]
name = "refunds"
description = "Refunds go to billing, high priority"
when.mailbox = ["support", "billing"]
when.subject = "(?i)\\b(refund|money back)\\b"
then.team = "billing"
then.category = "refund"
then.priority = "high"
then.tags = ["refund"]

[[rule]]
name = "vip"
when.from_domain = "vip.example"
then.priority = "urgent"
then.tags = ["vip"]
then.stop = false

[[rule]]
name = "mailing-lists"
when.to = ["*@notmuchmail.org"]
then.category = "mailing-list"
then.priority = "low"
then.tags = ["list"]

[[rule]]
name = "old-stuff"
enabled = false
when.subject = "fax"
then.team = "billing"
"""


def config_for(tmp_path: Path, *, rules: str = RULES, database: str = NO_DATABASE) -> Path:
    return write_config(tmp_path / "cfg", database=database, boxes=BOXES, rules=rules)


def lines(proc: Any) -> list[str]:
    return proc.stdout.decode().splitlines()


# ---------------------------------------------------------------------------- check


BAD_RULES = """
[[rule]]
name = "refunds"
when.subjct = "refund"
then.team = "biling"

[[rule]]
name = "refunds"
when.subject = "(unclosed"
then.priority = "hi"
then.assign = "zed@example.com"
"""


def test_check_reports_every_error_located_one_line_each(tmp_path: Path) -> None:
    config = config_for(tmp_path, rules=BAD_RULES)
    (config.parent / "rules" / "20-broken.toml").write_text('[[rule]]\nname = "x\n')
    proc = cli(config, "rules", "check", check=False)
    assert proc.returncode == 1
    assert lines(proc) == [
        'rules/10-test.toml: rule "refunds": when.subjct: unknown condition (known: mailbox, '
        "from, from_domain, to, cc, subject, body, header, has_attachment, any, all, not)",
        'rules/10-test.toml: rule "refunds": then.team: unknown team "biling" '
        "(teams: billing, frontline)",
        'rules/10-test.toml: rule "refunds": name: duplicate rule name (also in '
        "rules/10-test.toml)",
        'rules/10-test.toml: rule "refunds": when.subject: bad regex: missing ), '
        "unterminated subpattern at position 0",
        'rules/10-test.toml: rule "refunds": then.priority: unknown priority "hi" '
        "(expected low, normal, high, urgent)",
        'rules/10-test.toml: rule "refunds": then.assign: unknown agent "zed@example.com" '
        "(agents: ann@example.com, bob@example.com, carl@example.com, dina@example.com, "
        "lea@example.com)",
        "rules/20-broken.toml: invalid TOML: Illegal character '\\n' (at line 2, column 10)",
    ]
    assert proc.stderr == b""
    assert not Path(NO_DATABASE.removeprefix("sqlite:///")).parent.exists()


def test_check_json_lists_the_same_errors(tmp_path: Path) -> None:
    config = config_for(tmp_path, rules=BAD_RULES)
    proc = cli(config, "rules", "check", "--json", check=False)
    assert proc.returncode == 1
    doc = json.loads(proc.stdout)
    assert doc["ok"] is False
    assert len(doc["errors"]) == 6
    assert doc["errors"][1] == {
        "file": "rules/10-test.toml",
        "rule": "refunds",
        "key": "then.team",
        "problem": 'unknown team "biling" (teams: billing, frontline)',
        "text": 'rules/10-test.toml: rule "refunds": then.team: unknown team "biling" '
        "(teams: billing, frontline)",
    }


def test_check_good_rules_prints_a_summary(tmp_path: Path) -> None:
    config = config_for(tmp_path)
    (config.parent / "rules" / "90-tags.toml").write_text(
        '[[rule]]\nname = "tag-all"\nthen.tags = ["seen"]\nthen.stop = false\n'
    )
    (config.parent / "rules" / "README.md").write_text("not a rule file")
    proc = cli(config, "rules", "check")
    assert lines(proc) == ["rules: ok (4 rules in 2 files, 1 disabled)"]
    assert cli_json(config, "rules", "check") == {
        "ok": True,
        "folder": "rules",
        "files": 2,
        "rules": 4,
        "disabled": 1,
        "errors": [],
    }


def test_check_another_folder_given_with_rules_option(tmp_path: Path) -> None:
    """A change under review, in its own folder: errors are shown with its path."""
    config = config_for(tmp_path)
    new = tmp_path / "rules-new"
    new.mkdir()
    (new / "10-billing.toml").write_text(
        '[[rule]]\nname = "refunds"\nwhen.subject = "refund"\nthen.team = "biling"\n'
    )
    proc = cli(config, "rules", "check", "--rules", str(new), check=False)
    assert proc.returncode == 1
    assert lines(proc) == [
        f'{new}/10-billing.toml: rule "refunds": then.team: unknown team "biling" '
        "(teams: billing, frontline)"
    ]
    (new / "10-billing.toml").write_text(
        '[[rule]]\nname = "refunds"\nwhen.subject = "refund"\nthen.team = "billing"\n'
    )
    assert lines(cli(config, "rules", "check", "--rules", str(new))) == [
        f"{new}: ok (1 rule in 1 file)"
    ]
    empty = tmp_path / "empty"
    empty.mkdir()
    assert lines(cli(config, "rules", "check", "--rules", str(empty))) == [
        f"{empty}: ok (0 rules in 0 files)"
    ]
    proc = cli(config, "rules", "check", "--rules", str(tmp_path / "missing"), check=False)
    assert (proc.returncode, lines(proc)) == (
        1,
        [f"{tmp_path}/missing: rules folder does not exist"],
    )


def test_check_refuses_a_broken_config_with_one_line(tmp_path: Path) -> None:
    config = config_for(tmp_path)
    config.write_text(config.read_text() + '\n[[team]]\nname = "x"\nassignment = "random"\n')
    proc = cli(config, "rules", "check", check=False)
    assert proc.returncode == 2
    err = proc.stderr.decode()
    assert err.startswith("inboxd: error: ") and err.count("\n") == 1
    assert "run `inboxd check`" in err


# ---------------------------------------------------------------------------- test


def refund_mail(tmp_path: Path, **overrides: Any) -> Path:
    fields: dict[str, Any] = {
        "subject": "Money back for order 1234, please",
        "sender": "Alice <alice@customer.example>",
        "to": "Support <support@example.com>",
        "body": "I was charged twice.",
        "message_id": "<refund-1@customer.example>",
    }
    path = tmp_path / "refund.eml"
    path.write_bytes(make_mail(**(fields | overrides)))
    return path


def test_rules_test_shows_the_decision_and_which_text_matched(tmp_path: Path) -> None:
    config = config_for(tmp_path)
    mail = refund_mail(tmp_path)
    out = lines(cli(config, "rules", "test", str(mail)))
    assert out[0] == f"mail      {mail}"
    assert (
        out[1]
        == '          from alice@customer.example, subject "Money back for order 1234, please"'
    )
    assert out[2] == "mailbox   support (To: support@example.com)"
    assert out[3] == "kind      human: the sender gets an acknowledgement"
    body = "\n".join(out)
    assert '  team      billing       set by rule "refunds"' in out
    assert '  priority  high          set by rule "refunds"' in out
    assert '  tags      refund        set by rule "refunds"' in out
    assert "  assign    least-loaded  team billing's own assignment (no rule set one)" in out
    assert "  matched   refunds (rules/10-test.toml), stop" in out
    assert (
        '      ✓ when.subject: subject "Money back for order 1234, please" matched '
        r'(?i)\b(refund|money back)\b at "Money back"'
    ) in out
    assert '      ✓ when.mailbox: mailbox "support" is one of billing, support' in out
    assert '  skipped   vip (rules/10-test.toml): rule "refunds" stopped evaluation' in out
    assert "old-stuff" not in body  # disabled: never evaluated


def test_rules_test_json_is_a_stable_document(tmp_path: Path) -> None:
    config = config_for(tmp_path)
    doc = cli_json(config, "rules", "test", str(refund_mail(tmp_path, sender="ceo@vip.example")))
    assert doc["mailbox"] == "support"
    assert doc["mailbox_chosen_by"] == "To: support@example.com"
    assert doc["message_id"] == "refund-1@customer.example"
    assert doc["classification"] == {
        "kind": "human",
        "reasons": [],
        "acknowledge": True,
        "opens_ticket": True,
    }
    assert doc["decision"] == {
        "team": "billing",
        "category": "refund",
        "priority": "high",
        "tags": ["refund"],
        "sla": None,
        "assign": None,
        "team_assignment": "least-loaded",
        "matched": ["refunds"],
        "set_by": {
            "team": "refunds",
            "category": "refunds",
            "priority": "refunds",
            "tags.refund": "refunds",
        },
    }
    assert doc["stopped_by"] == "refunds"
    assert [(t["rule"], t["outcome"]) for t in doc["trace"]] == [
        ("refunds", "matched"),
        ("vip", "skipped"),
        ("mailing-lists", "skipped"),
    ]
    assert doc["trace"][0]["conditions"] == [
        {
            "condition": "when.mailbox",
            "matched": True,
            "detail": 'mailbox "support" is one of billing, support',
        },
        {
            "condition": "when.subject",
            "matched": True,
            "detail": 'subject "Money back for order 1234, please" matched '
            r'(?i)\b(refund|money back)\b at "Money back"',
        },
    ]


def test_rules_test_continuing_rule_then_default_team(tmp_path: Path) -> None:
    """vip does not stop: its priority and tag stay, the team is the mailbox's default."""
    config = config_for(tmp_path)
    mail = refund_mail(tmp_path, subject="Hello", sender="ceo@vip.example")
    doc = cli_json(config, "rules", "test", str(mail), "--mailbox", "billing")
    assert doc["mailbox_chosen_by"] == "--mailbox"
    dec = doc["decision"]
    assert (dec["team"], dec["priority"], dec["tags"]) == ("billing", "urgent", ["vip"])
    assert dec["set_by"] == {"priority": "vip", "tags.vip": "vip", "team": "default"}
    assert [t["outcome"] for t in doc["trace"]] == ["no match", "matched", "no match"]
    assert doc["trace"][1]["stop"] is False
    assert doc["trace"][0]["conditions"][0]["matched"] is True  # mailbox
    assert doc["trace"][0]["conditions"][1]["detail"] == (
        r'subject "Hello" does not match (?i)\b(refund|money back)\b'
    )
    out = lines(cli(config, "rules", "test", str(mail), "--mailbox", "billing"))
    assert "  team      billing       default team of mailbox billing (no rule set one)" in out
    assert "  matched   vip (rules/10-test.toml), continue (stop = false)" in out
    assert "      ✓ when.from_domain: from domain vip.example is within vip.example" in out


@pytest.mark.skipif(not CORPUS.is_dir(), reason="../shared/corpus is absent")
def test_rules_test_on_a_mailing_list_mail_from_the_corpus(tmp_path: Path) -> None:
    config = config_for(tmp_path)
    mail = CORPUS / "notmuch" / "corpora" / "default" / "cur" / "29:2,"
    doc = cli_json(config, "rules", "test", str(mail))
    assert doc["subject"] == "[notmuch] archive"
    assert doc["mailbox"] == "support"
    assert doc["mailbox_chosen_by"] == "the first mailbox: no To/Cc address is one of ours"
    assert doc["decision"]["team"] == "frontline"
    assert doc["decision"]["category"] == "mailing-list"
    assert doc["decision"]["set_by"]["team"] == "default"
    lists = doc["trace"][2]
    assert (lists["rule"], lists["outcome"]) == ("mailing-lists", "matched")
    assert lists["conditions"][0]["detail"] == (
        'to notmuch@notmuchmail.org matched "*@notmuchmail.org"'
    )


@pytest.mark.skipif(not CORPUS.is_dir(), reason="../shared/corpus is absent")
def test_rules_test_on_a_bounce_from_the_corpus(tmp_path: Path) -> None:
    """A bounce never opens a ticket nor gets an acknowledgement; the output says so."""
    config = config_for(tmp_path)
    mail = CORPUS / "flufl-bounce" / "data" / "postfix_01.txt"
    doc = cli_json(config, "rules", "test", str(mail))
    assert doc["classification"]["kind"] == "bounce"
    assert doc["classification"]["acknowledge"] is False
    assert doc["classification"]["opens_ticket"] is False
    assert doc["decision"]["matched"] == []
    out = lines(cli(config, "rules", "test", str(mail)))
    assert out[3].startswith("kind      bounce (")
    assert out[3].endswith(": no acknowledgement; never opens a ticket of its own (so no routing)")


def test_rules_test_refuses_what_is_not_a_mail_in_one_line(tmp_path: Path) -> None:
    config = config_for(tmp_path)
    junk = tmp_path / "junk.eml"
    junk.write_bytes(b'[inboxd]\ndatabase = "sqlite:///x.db"\n')  # a config, not a mail
    proc = cli(config, "rules", "test", str(junk), check=False)
    assert proc.returncode == 1
    assert proc.stdout == b""
    assert proc.stderr.decode() == (
        f"inboxd: error: {junk}: not a mail inboxd can read (does not start with a header line)\n"
    )
    empty = tmp_path / "empty.eml"
    empty.write_bytes(b"")
    proc = cli(config, "rules", "test", str(empty), check=False)
    assert (proc.returncode, proc.stderr.decode()) == (
        1,
        f"inboxd: error: {empty}: not a mail (the file is empty)\n",
    )
    proc = cli(config, "rules", "test", str(tmp_path / "nope.eml"), check=False)
    assert proc.returncode == 1
    assert proc.stderr.decode() == (
        f"inboxd: error: {tmp_path}/nope.eml: cannot read: No such file or directory\n"
    )
    proc = cli(config, "rules", "test", str(refund_mail(tmp_path)), "-m", "sales", check=False)
    assert (proc.returncode, proc.stderr.decode()) == (
        2,
        'inboxd: error: unknown mailbox "sales" (mailboxes: billing, support)\n',
    )


@pytest.mark.skipif(not CORPUS.is_dir(), reason="../shared/corpus is absent")
def test_rules_test_refuses_an_outlook_binary(tmp_path: Path) -> None:
    config = config_for(tmp_path)
    mail = CORPUS / "mail-parser" / "mails" / "mail_outlook_1"
    proc = cli(config, "rules", "test", str(mail), check=False)
    assert proc.returncode == 1
    err = proc.stderr.decode()
    assert err.startswith(f"inboxd: error: {mail}: not a mail inboxd can read (")
    assert err.count("\n") == 1


def test_rules_test_refuses_a_failing_rule_set(tmp_path: Path) -> None:
    """Testing a set the daemon would refuse is pointless: say where the first error is."""
    config = config_for(tmp_path, rules=BAD_RULES)
    proc = cli(config, "rules", "test", str(refund_mail(tmp_path)), check=False)
    assert proc.returncode == 2
    assert proc.stderr.decode() == (
        'inboxd: error: rules/10-test.toml: rule "refunds": when.subjct: unknown condition '
        "(known: mailbox, from, from_domain, to, cc, subject, body, header, has_attachment, "
        "any, all, not) (run `inboxd rules check`; 5 more)\n"
    )


def test_rules_test_escapes_terminal_control_characters(tmp_path: Path) -> None:
    config = config_for(tmp_path)
    mail = tmp_path / "evil.eml"
    mail.write_bytes(
        b"From: x@evil.example\r\nTo: support@example.com\r\n"
        b"Subject: =?utf-8?q?refund_=1B]0;pwned=07_=E2=80=AEtxt?=\r\n\r\nhi\r\n"
    )
    out = cli(config, "rules", "test", str(mail)).stdout.decode()
    assert "\x1b" not in out and "\x07" not in out and "\u202e" not in out
    assert "refund" in out


# ---------------------------------------------------------------------------- replay


OLD_RULES = r"""
[[rule]]
name = "refunds"
when.subject = "(?i)\\brefund\\b"
then.team = "billing"
then.category = "refund"
then.priority = "high"
"""

NEW_RULES = r"""
[[rule]]
name = "refunds"
when.subject = "(?i)\\brefund\\b"
then.team = "billing"
then.category = "refund"
then.priority = "urgent"

[[rule]]
name = "invoices"
when.subject = "(?i)\\binvoice\\b"
then.team = "billing"
then.category = "invoice"
"""


def snapshot(database: Database) -> dict[str, list[tuple[Any, ...]]]:
    """Every row a replay could touch, as plain tuples."""
    tables = {
        "ticket": "SELECT * FROM ticket ORDER BY id",
        "ticket_event": "SELECT id, ticket_id, kind, actor FROM ticket_event ORDER BY id",
        "ticket_tag": "SELECT * FROM ticket_tag ORDER BY ticket_id, tag",
        "team": "SELECT * FROM team ORDER BY name",
        "message": "SELECT id, ticket_id, classification, quarantined FROM message ORDER BY id",
        "raw_mail": "SELECT message_pk, purged_at FROM raw_mail ORDER BY message_pk",
    }
    with database.engine.connect() as conn:
        return {name: [tuple(r) for r in conn.execute(text(sql))] for name, sql in tables.items()}


def test_replay_counts_what_a_new_rule_set_would_change_and_writes_nothing(
    database: Database, tmp_path: Path
) -> None:
    config = config_for(tmp_path, rules=OLD_RULES, database=database.url)
    mails = tmp_path / "mails"
    mails.mkdir()

    def add(name: str, **fields: Any) -> None:
        (mails / f"{name}.eml").write_bytes(make_mail(message_id=f"<{name}@c.example>", **fields))

    for n in range(4):
        add(f"refund{n}", subject=f"Refund for order {n}", sender=f"r{n}@c.example")
    for n in range(4):
        add(f"invoice{n}", subject=f"Invoice {n} is wrong", sender=f"i{n}@c.example")
    for n in range(2):
        add(f"login{n}", subject="Cannot log in", sender=f"l{n}@c.example")
    add("account", subject="Account question", sender="a@c.example")
    # A reply asking for a refund: the ticket's first mail decides, not this one.
    add(
        "account2-reply",
        subject="Refund instead",
        sender="a@c.example",
        in_reply_to="<account@c.example>",
    )
    add(
        "ooo",
        subject="Out of office",
        sender="o@c.example",
        headers={"Auto-Submitted": "auto-replied"},
    )
    imported = cli_json(config, "import", str(mails), "--mailbox", "support")
    assert imported["tickets"] == 11

    with session_scope(database.engine) as s:
        ids = dict(
            s.exec(
                select(Message.message_id, Message.ticket_id).where(Message.direction == "in")
            ).all()
        )
        # invoice3 was opened two months ago: outside --since 30d.
        s.get(Ticket, ids["invoice3@c.example"]).created_at = utcnow() - timedelta(days=60)  # type: ignore[union-attr]
        # refund3's raw mail was purged by retention: it cannot be replayed.
        raw = s.exec(
            select(RawMail)
            .join(Message, col(Message.id) == col(RawMail.message_pk))
            .where(Message.message_id == "refund3@c.example")
        ).one()
        raw.data, raw.purged_at = None, utcnow()
        # An agent moved login1 to billing since: replay compares with creation, not this.
        login1 = s.get(Ticket, ids["login1@c.example"])
        assert login1 is not None
        login1.team, login1.priority = "billing", "low"
    before = snapshot(database)

    new = tmp_path / "rules-new"
    new.mkdir()
    (new / "10-billing.toml").write_text(NEW_RULES)
    doc = cli_json(config, "rules", "replay", "--rules", str(new))
    assert doc["tickets"] == 10  # 11 opened, one before the window
    assert doc["replayed"] == 9
    assert doc["skipped"] == {"raw mail purged": 1}
    assert doc["changed"] == 6 and doc["unchanged"] == 3
    assert doc["compared_with"] == "routed-at-creation"
    changes = [(c["field"], c["old"], c["new"], c["count"], c["rules"]) for c in doc["changes"]]
    assert changes == [
        ("team", "frontline", "billing", 3, {"invoices": 3}),
        ("category", None, "invoice", 3, {"invoices": 3}),
        ("priority", "high", "urgent", 3, {"refunds": 3}),
    ]
    invoices = doc["changes"][0]["tickets"]
    assert invoices == sorted(ids[f"invoice{n}@c.example"] for n in range(3))

    out = lines(cli(config, "rules", "replay", "--rules", str(new)))
    assert "6 would change, 3 would not" in out
    assert "  team frontline -> billing: 3" in [line.split("  (")[0] for line in out]
    assert "  category (none) -> invoice: 3" in [line.split("  (")[0] for line in out]
    assert "  priority high -> urgent: 3" in [line.split("  (")[0] for line in out]
    assert "skipped 1: 1 raw mail purged" in out

    wide = cli_json(config, "rules", "replay", "--rules", str(new), "--since", "90d")
    assert wide["tickets"] == 11
    assert wide["changes"][0]["count"] == 4  # invoice3 is back in

    same = cli_json(config, "rules", "replay")  # the running rules against themselves
    assert (same["changed"], same["changes"], same["replayed"]) == (0, [], 9)

    assert snapshot(database) == before  # nothing written, whatever the backend


def test_replay_refuses_a_bad_duration_and_a_failing_rule_set(tmp_path: Path) -> None:
    config = config_for(tmp_path)
    proc = cli(config, "rules", "replay", "--since", "a month", check=False)
    assert proc.returncode == 2
    assert proc.stderr.decode().startswith("inboxd: error: --since: invalid duration 'a month'")
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "x.toml").write_text('[[rule]]\nname = "x"\nthen.team = "nobody"\n')
    proc = cli(config, "rules", "replay", "--rules", str(bad), check=False)
    assert proc.returncode == 2
    assert proc.stderr.decode() == (
        f'inboxd: error: {bad}/x.toml: rule "x": then.team: unknown team "nobody" '
        f"(teams: billing, frontline) (run `inboxd rules check --rules {bad}`)\n"
    )
