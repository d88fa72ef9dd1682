"""Routing rules: each condition, combinators, order, stop/continue, validation, traces."""

from __future__ import annotations

import dataclasses
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from inboxd.mail.parse import Address, Attachment, ParsedMail
from inboxd.tickets import routing
from inboxd.tickets.routing import (
    BODY_SCAN_CHARS,
    Decision,
    RoutingContext,
    RuleError,
    RuleSet,
    RulesInvalid,
    check_rules,
    compile_rules,
    explain,
    load_rules,
    require_rules,
    route,
)

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT.parent / "shared" / "corpus"

# The example configuration, inboxd.toml: what rules/*.toml are written against.
CTX = RoutingContext(
    teams=frozenset({"frontline", "billing"}),
    agents=frozenset(
        {
            "ann@example.com",
            "bob@example.com",
            "carl@example.com",
            "dina@example.com",
            "lea@example.com",
        }
    ),
    slas=frozenset({"standard", "urgent"}),
    team_members={
        "frontline": frozenset({"ann@example.com", "bob@example.com", "lea@example.com"}),
        "billing": frozenset({"carl@example.com", "dina@example.com", "lea@example.com"}),
    },
    mailboxes=frozenset({"support", "billing"}),
)


def mail(
    *,
    from_: str | None = "alice@customer.example",
    to: tuple[str, ...] = ("support@example.com",),
    cc: tuple[str, ...] = (),
    subject: str = "Hello",
    text: str = "Hi there.",
    headers: Mapping[str, tuple[str, ...]] | None = None,
    attachments: int = 0,
) -> ParsedMail:
    return ParsedMail(
        message_id="m1@customer.example",
        in_reply_to=(),
        references=(),
        from_=Address(from_) if from_ is not None else None,
        to=tuple(Address(a) for a in to),
        cc=tuple(Address(a) for a in cc),
        reply_to=(),
        subject=subject,
        date=None,
        text=text,
        html=None,
        attachments=tuple(
            Attachment(i, f"f{i}.pdf", "application/pdf", 10, "0" * 64) for i in range(attachments)
        ),
        headers=dict(headers or {}),
    )


def ruleset(*files: str, ctx: RoutingContext = CTX) -> RuleSet:
    """Compile TOML texts as rules/00.toml, rules/01.toml, ...; fail on any error."""
    docs = [(f"rules/{i:02d}.toml", tomllib.loads(text)) for i, text in enumerate(files)]
    rules, errors = compile_rules(docs, ctx, source=Path("rules"))
    assert errors == []
    return rules


def errors_of(*files: str, ctx: RoutingContext = CTX) -> list[str]:
    docs = [(f"rules/{i:02d}.toml", tomllib.loads(text)) for i, text in enumerate(files)]
    return [str(e) for e in compile_rules(docs, ctx, source=Path("rules"))[1]]


def decide(rules: RuleSet, m: ParsedMail, mailbox: str = "support") -> Decision:
    """route(), checked against explain() on every call."""
    decision = route(rules, m, mailbox=mailbox, default_team="frontline")
    assert explain(rules, m, mailbox=mailbox, default_team="frontline")[0] == decision
    return decision


def matches(when: str, m: ParsedMail, mailbox: str = "support") -> bool:
    rules = ruleset(f'[[rule]]\nname = "r"\n{when}\nthen.team = "billing"\n')
    return decide(rules, m, mailbox).matched == ("r",)


# -------------------------------------------------------------------- each condition alone


CONDITION_CASES: list[tuple[str, str, dict[str, Any], dict[str, Any] | None]] = [
    # (id, when, mail that matches, mail that does not)
    ("mailbox", 'when.mailbox = ["billing"]', {"mailbox": "billing"}, {"mailbox": "support"}),
    ("mailbox-string", 'when.mailbox = "billing"', {"mailbox": "billing"}, {}),
    ("from", 'when.from = ["A@X.example"]', {"from_": "a@x.example"}, {"from_": "b@x.example"}),
    ("from-glob", 'when.from = ["*@bank.example"]', {"from_": "n@bank.example"},
     {"from_": "n@evilbank.example"}),
    ("from-plus", 'when.from = ["bob@x.example"]', {"from_": "bob+news@x.example"},
     {"from_": "bobby@x.example"}),
    ("from-missing", 'when.from = ["a@x.example"]', {"from_": "a@x.example"}, {"from_": None}),
    ("from_domain", 'when.from_domain = ["bank.example"]', {"from_": "a@bank.example"},
     {"from_": "a@evilbank.example"}),
    ("from_domain-sub", 'when.from_domain = ["Bank.Example"]', {"from_": "a@mx.eu.bank.example"},
     {"from_": "a@bank.example.org"}),
    ("to", 'when.to = ["billing@example.com"]',
     {"to": ("x@example.com", "Billing@Example.com")}, {"to": ("support@example.com",)}),
    ("to-plus", 'when.to = ["support@example.com"]', {"to": ("support+t0k3n@example.com",)},
     {"to": ()}),
    ("cc", 'when.cc = ["boss@example.com"]', {"cc": ("boss@example.com",)},
     {"to": ("boss@example.com",)}),
    ("cc-glob", 'when.cc = ["*@legal.example"]', {"cc": ("a@legal.example",)},
     {"cc": ("a@example.com",)}),
    ("subject", 'when.subject = "(?i)\\\\brefund\\\\b"', {"subject": "REFUND please"},
     {"subject": "refunded"}),
    ("subject-case", 'when.subject = "Refund"', {"subject": "Re: Refund"},
     {"subject": "refund"}),
    ("body", 'when.body = "(?i)chargeback"', {"text": "a\nb CHARGEBACK c"},
     {"text": "charge back"}),
    ("body-cap", 'when.body = "needle"', {"text": "x" * (BODY_SCAN_CHARS - 6) + "needle"},
     {"text": "x" * (BODY_SCAN_CHARS - 5) + "needle"}),
    ("header-exact", 'when.header = { "X-Priority" = "1" }',
     {"headers": {"x-priority": (" 1 ",)}}, {"headers": {"x-priority": ("1 (Highest)",)}}),
    ("header-exact-case", 'when.header = { "Importance" = "high" }',
     {"headers": {"importance": ("High",)}}, {"headers": {}}),
    ("header-regex", 'when.header = { "X-Priority" = "/^1\\\\b/" }',
     {"headers": {"x-priority": ("1 (Highest)",)}}, {"headers": {"x-priority": ("10",)}}),
    ("header-any-value", 'when.header = { "Received" = "/from mx2/" }',
     {"headers": {"received": ("from mx1", "from mx2")}}, {"headers": {"received": ("mx1",)}}),
    ("header-list", 'when.header = { "X-Tier" = ["gold", "/^plat/"] }',
     {"headers": {"x-tier": ("platinum",)}}, {"headers": {"x-tier": ("silver",)}}),
    ("header-present", 'when.header = { "List-Id" = true }',
     {"headers": {"list-id": ("<l.example>",)}}, {"headers": {}}),
    ("header-absent", 'when.header = { "List-Id" = false }', {"headers": {}},
     {"headers": {"list-id": ("<l.example>",)}}),
    ("header-both", 'when.header = { "X-A" = "1", "X-B" = "2" }',
     {"headers": {"x-a": ("1",), "x-b": ("2",)}}, {"headers": {"x-a": ("1",)}}),
    ("has_attachment", "when.has_attachment = true", {"attachments": 2}, {"attachments": 0}),
    ("has_no_attachment", "when.has_attachment = false", {"attachments": 0},
     {"attachments": 1}),
    ("catch-all", "", {}, None),
]  # fmt: skip


@pytest.mark.parametrize(
    ("when", "hit", "miss"),
    [pytest.param(w, h, m, id=i) for i, w, h, m in CONDITION_CASES],
)
def test_condition_alone(when: str, hit: dict[str, Any], miss: dict[str, Any] | None) -> None:
    for kwargs, expected in ((hit, True), (miss, False)):
        if kwargs is None:
            continue
        kwargs = dict(kwargs)
        mailbox = kwargs.pop("mailbox", "support")
        assert matches(when, mail(**kwargs), mailbox) is expected, (kwargs, expected)


def test_conditions_in_one_when_are_anded() -> None:
    when = 'when.from_domain = "bank.example"\nwhen.subject = "(?i)refund"'
    assert matches(when, mail(from_="a@bank.example", subject="Refund"))
    assert not matches(when, mail(from_="a@bank.example", subject="Hello"))
    assert not matches(when, mail(from_="a@shop.example", subject="Refund"))


# -------------------------------------------------------------------- combinators


def test_any() -> None:
    when = 'when.any = [ { subject = "(?i)invoice" }, { to = ["billing@example.com"] } ]'
    assert matches(when, mail(subject="Invoice 42"))
    assert matches(when, mail(to=("billing@example.com",)))
    assert not matches(when, mail())


def test_all() -> None:
    when = 'when.all = [ { subject = "a" }, { subject = "b" } ]'
    assert matches(when, mail(subject="ab"))
    assert not matches(when, mail(subject="a"))


def test_not() -> None:
    when = 'when.from_domain = "bank.example"\nwhen.not = { from = ["noreply@bank.example"] }'
    assert matches(when, mail(from_="anna@bank.example"))
    assert not matches(when, mail(from_="noreply@bank.example"))
    assert matches('when.not = { from = ["a@x.example"] }', mail(from_=None))


def test_table_inside_any_is_anded() -> None:
    when = 'when.any = [ { to = "billing@example.com", has_attachment = true } ]'
    assert matches(when, mail(to=("billing@example.com",), attachments=1))
    assert not matches(when, mail(to=("billing@example.com",)))


def test_nesting() -> None:
    when = """
when.all = [
    { any = [ { subject = "(?i)urgent" }, { header = { "X-Priority" = "1" } } ] },
    { not = { any = [ { from_domain = "monitor.example" }, { has_attachment = true } ] } },
]
"""
    urgent = mail(subject="URGENT: help")
    assert matches(when, urgent)
    assert matches(when, mail(headers={"x-priority": ("1",)}))
    assert not matches(when, mail(subject="urgent", from_="bot@monitor.example"))
    assert not matches(when, mail(subject="urgent", attachments=1))
    assert not matches(when, mail(subject="calm"))


# -------------------------------------------------------------------- order and actions


def test_files_are_read_in_file_name_order(tmp_path: Path) -> None:
    for name, team in (("b.toml", "frontline"), ("a.toml", "billing"), ("c.txt", "nope")):
        (tmp_path / name).write_text(f'[[rule]]\nname = "{name}"\nthen.team = "{team}"\n')
    (tmp_path / ".#a.toml").write_text("editor lock file, not TOML")
    rules, errors = load_rules(tmp_path, CTX)
    assert errors == []
    assert [r.name for r in rules.rules] == ["a.toml", "b.toml"]
    assert decide(rules, mail()).team == "billing"


def test_rules_in_a_file_are_evaluated_in_order() -> None:
    rules = ruleset(
        """
[[rule]]
name = "first"
when.subject = "x"
then.team = "billing"

[[rule]]
name = "second"
when.subject = "x"
then.team = "frontline"
""",
    )
    assert decide(rules, mail(subject="x")).matched == ("first",)


def test_first_match_wins_and_continue_accumulates() -> None:
    rules = ruleset(
        """
[[rule]]
name = "urgent"
when.subject = "(?i)down"
then.priority = "urgent"
then.sla = "urgent"
then.tags = ["outage", "p1"]
then.stop = false

[[rule]]
name = "vip"
when.from_domain = "bigcorp.example"
then.priority = "high"
then.tags = ["vip", "p1"]
then.assign = "lea@example.com"
then.stop = false
""",
        """
[[rule]]
name = "billing"
when.subject = "(?i)invoice|down"
then.team = "billing"
then.category = "invoice"

[[rule]]
name = "never"
then.team = "frontline"
then.tags = ["never"]
""",
    )
    d = decide(rules, mail(from_="ceo@bigcorp.example", subject="Invoice site down"))
    assert d == Decision(
        team="billing",
        category="invoice",
        priority="high",
        tags=("outage", "p1", "vip"),
        sla="urgent",
        assign="lea@example.com",
        matched=("urgent", "vip", "billing"),
        set_by={
            "priority": "vip",
            "sla": "urgent",
            "tags.outage": "urgent",
            "tags.p1": "urgent",
            "tags.vip": "vip",
            "assign": "vip",
            "team": "billing",
            "category": "billing",
        },
    )
    # the catch-all rule only gets mail that the stopping rule did not take
    d = decide(rules, mail(subject="Hello"))
    assert (d.team, d.tags, d.matched) == ("frontline", ("never",), ("never",))


def test_no_match_goes_to_the_default_team() -> None:
    rules = ruleset('[[rule]]\nname = "r"\nwhen.subject = "x"\nthen.team = "billing"\n')
    d = route(rules, mail(subject="y"), mailbox="billing", default_team="billing-desk")
    assert d == Decision("billing-desk", None, "normal", (), None, None, (), {"team": "default"})


def test_a_continuing_rule_without_team_leaves_the_default_team() -> None:
    rules = ruleset('[[rule]]\nname = "tag"\nthen.tags = ["seen"]\nthen.stop = false\n')
    d = decide(rules, mail())
    assert (d.team, d.tags, d.set_by["team"]) == ("frontline", ("seen",), "default")


def test_a_stopping_rule_without_actions_keeps_the_default() -> None:
    rules = ruleset(
        '[[rule]]\nname = "leave-alone"\nwhen.from = "ceo@example.com"\n'
        '[[rule]]\nname = "all"\nthen.team = "billing"\n'
    )
    assert decide(rules, mail(from_="ceo@example.com")).team == "frontline"
    assert decide(rules, mail()).team == "billing"


def test_disabled_rule_is_checked_but_not_used() -> None:
    text = '[[rule]]\nname = "off"\nenabled = false\nthen.team = "billing"\n'
    assert len(ruleset(text)) == 0
    assert errors_of(text, text) == [
        'rules/01.toml: rule "off": name: duplicate rule name (also in rules/00.toml)'
    ]
    assert errors_of(text.replace('"billing"', '"biling"')) == [
        'rules/00.toml: rule "off": then.team: unknown team "biling" (teams: billing, frontline)'
    ]


def test_mailbox_prefilter_keeps_order() -> None:
    rules = ruleset(
        '[[rule]]\nname = "a"\nwhen.mailbox = "billing"\nthen.tags = ["a"]\nthen.stop = false\n'
        '[[rule]]\nname = "b"\nthen.tags = ["b"]\nthen.stop = false\n'
        '[[rule]]\nname = "c"\nwhen.mailbox = ["support", "billing"]\nthen.tags = ["c"]\n'
    )
    assert decide(rules, mail(), "billing").tags == ("a", "b", "c")
    assert decide(rules, mail(), "support").tags == ("b", "c")
    assert decide(rules, mail(), "other").tags == ("b",)


# -------------------------------------------------------------------- explain


def test_explain_traces_conditions_and_skips_after_stop() -> None:
    rules = ruleset(
        """
[[rule]]
name = "refunds"
when.mailbox = ["billing", "support"]
when.subject = "(?i)\\\\brefund\\\\b"
then.team = "billing"

[[rule]]
name = "later"
then.team = "frontline"
"""
    )
    decision, traces = explain(
        rules, mail(subject="Refund please"), mailbox="support", default_team="frontline"
    )
    assert decision.matched == ("refunds",)
    first, second = traces
    assert (first.rule, first.file, first.matched, first.skipped) == (
        "refunds",
        "rules/00.toml",
        True,
        False,
    )
    assert [(c.condition, c.matched, c.detail) for c in first.conditions] == [
        ("when.mailbox", True, 'mailbox "support" is one of billing, support'),
        ("when.subject", True, 'subject "Refund please" matched (?i)\\brefund\\b at "Refund"'),
    ]
    assert (second.matched, second.skipped, second.conditions) == (False, True, ())


def test_explain_shows_every_condition_even_after_a_failure() -> None:
    rules = ruleset(
        """
[[rule]]
name = "r"
when.from_domain = "bank.example"
when.any = [ { subject = "a" }, { to = "billing@example.com", has_attachment = true } ]
when.not = { header = { "Auto-Submitted" = "/^auto-/" } }
"""
    )
    _, (trace,) = explain(rules, mail(subject="b"), mailbox="support", default_team="x")
    assert not trace.matched
    assert [(c.condition, c.matched) for c in trace.conditions] == [
        ("when.from_domain", False),
        ("when.any", False),
        ("when.any[0].subject", False),
        ("when.any[1]", False),
        ("when.any[1].to", False),
        ("when.any[1].has_attachment", False),
        ("when.not", True),
        ("when.not.header.Auto-Submitted", False),
    ]
    details = {c.condition: c.detail for c in trace.conditions}
    assert details["when.from_domain"] == (
        "from domain customer.example is not within any of bank.example"
    )
    assert details["when.not.header.Auto-Submitted"] == "header auto-submitted is absent"


def test_explain_quotes_mail_text_safely() -> None:
    rules = ruleset('[[rule]]\nname = "r"\nwhen.subject = "x"\n')
    _, (trace,) = explain(rules, mail(subject="\x1b[31mx"), mailbox="s", default_team="t")
    assert "\x1b" not in trace.conditions[0].detail
    assert '"\\u001b[31mx"' in trace.conditions[0].detail


# -------------------------------------------------------------------- validation

KNOWN = "mailbox, from, from_domain, to, cc, subject, body, header, has_attachment, any, all, not"


def write(folder: Path, name: str, text: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(text)


def test_unknown_condition_message(tmp_path: Path) -> None:
    write(tmp_path / "rules", "billing.toml", '[[rule]]\nname = "refunds"\nwhen.subjct = "x"\n')
    errors = check_rules(tmp_path / "rules", CTX, display_base=tmp_path)
    assert [str(e) for e in errors] == [
        f'rules/billing.toml: rule "refunds": when.subjct: unknown condition (known: {KNOWN})'
    ]
    assert errors[0] == RuleError(
        "rules/billing.toml", "refunds", "when.subjct", f"unknown condition (known: {KNOWN})"
    )


def test_unknown_team_message(tmp_path: Path) -> None:
    ctx = RoutingContext(frozenset({"billing", "tech"}), frozenset(), frozenset())
    write(tmp_path / "rules", "billing.toml", '[[rule]]\nname = "refunds"\nthen.team = "biling"\n')
    errors = check_rules(tmp_path / "rules", ctx, display_base=tmp_path)
    assert [str(e) for e in errors] == [
        'rules/billing.toml: rule "refunds": then.team: unknown team "biling"'
        " (teams: billing, tech)"
    ]


def test_four_mistakes_give_four_errors(tmp_path: Path) -> None:
    write(
        tmp_path,
        "10-billing.toml",
        """
[[rule]]
name = "refunds"
when.subjct = "refund"
when.body = "(unclosed"
then.team = "biling"
then.priority = "hgih"
""",
    )
    assert [str(e) for e in check_rules(tmp_path, CTX, display_base=tmp_path)] == [
        f'10-billing.toml: rule "refunds": when.subjct: unknown condition (known: {KNOWN})',
        '10-billing.toml: rule "refunds": when.body: bad regex: missing ), unterminated'
        " subpattern at position 0",
        '10-billing.toml: rule "refunds": then.team: unknown team "biling"'
        " (teams: billing, frontline)",
        '10-billing.toml: rule "refunds": then.priority: unknown priority "hgih"'
        " (expected low, normal, high, urgent)",
    ]


def test_errors_across_files_all_reported(tmp_path: Path) -> None:
    write(tmp_path, "a.toml", '[[rule]]\nname = "x"\nthen.sla = "gold"\n')
    write(tmp_path, "b.toml", "[[rule]\nname = 1\n")
    write(tmp_path, "c.toml", '[[rule]]\nname = "x"\nthen.team = "billing"\n')
    rules, errors = load_rules(tmp_path, CTX, display_base=tmp_path)
    assert [str(e) for e in errors] == [
        "b.toml: invalid TOML: Expected ']]' at the end of an array declaration"
        " (at line 1, column 7)",
        'a.toml: rule "x": then.sla: unknown SLA policy "gold" (policies: standard, urgent)',
        'c.toml: rule "x": name: duplicate rule name (also in a.toml)',
    ]
    assert len(rules) == 0
    with pytest.raises(RulesInvalid) as raised:
        require_rules(tmp_path, CTX)
    assert len(raised.value.errors) == 3
    assert raised.value.exit_code == 2


VALIDATION_CASES = [
    ('[[rule]]\nwhen.subject = "x"\n', "rule #1: name: missing (every rule needs a unique name)"),
    ('[[rule]]\nname = "a"\n[[rule]]\nname = 7\n', "rule #2: name: expected a string, got integer"),
    ('[[rule]]\nname = "a b"\n', "rule #1: name: must be 1-100 letters, digits, '-', '_' or '.',"
     " starting with a letter or digit"),
    ('[[rule]]\nname = "r"\ndescripton = "x"\n',
     'rule "r": descripton: unknown key (known: name, description, enabled, when, then)'),
    ('rules = []\n', "rules: unknown top-level key (known: rule)"),
    ('[rule]\nname = "r"\n', "rule: expected an array of tables ([[rule]]), got table"),
    ('[[rule]]\nname = "r"\nthen.teem = "billing"\n',
     'rule "r": then.teem: unknown action (known: team, category, priority, tags, sla, assign,'
     " stop)"),
    ('[[rule]]\nname = "r"\nwhen.subject = 5\n',
     'rule "r": when.subject: expected a string (a regex), got integer'),
    ('[[rule]]\nname = "r"\nwhen.subject = ""\n',
     'rule "r": when.subject: empty regex (it would match every mail)'),
    ('[[rule]]\nname = "r"\nwhen.from = ["bank.example"]\n',
     'rule "r": when.from: "bank.example" is not an address or address pattern like'
     ' "*@x.example" (for a domain use from_domain)'),
    ('[[rule]]\nname = "r"\nwhen.from = []\n', 'rule "r": when.from: empty array (it would never'
     " match)"),
    ('[[rule]]\nname = "r"\nwhen.to = ["a@x.example", 3]\n',
     'rule "r": when.to[1]: expected a string, got integer'),
    ('[[rule]]\nname = "r"\nwhen.from_domain = ["*.bank.example"]\n',
     'rule "r": when.from_domain: "*.bank.example" is not a domain like "bank.example"'
     " (subdomains match too)"),
    ('[[rule]]\nname = "r"\nwhen.mailbox = "suport"\n',
     'rule "r": when.mailbox: unknown mailbox "suport" (mailboxes: billing, support)'),
    ('[[rule]]\nname = "r"\nwhen.has_attachment = "yes"\n',
     'rule "r": when.has_attachment: expected true or false, got string'),
    ('[[rule]]\nname = "r"\nwhen.header = { "X-Priority" = "/^1/i" }\n',
     'rule "r": when.header.X-Priority: "/^1/i": flags after the closing "/" are not supported;'
     ' write them inside, as in "/(?i)high/"'),
    ('[[rule]]\nname = "r"\nwhen.header = { "X-Priority" = "/[a-/" }\n',
     'rule "r": when.header.X-Priority: bad regex: unterminated character set at position 0'),
    ('[[rule]]\nname = "r"\nwhen.header = { "X Priority" = "1" }\n',
     'rule "r": when.header.X Priority: not a header name'),
    ('[[rule]]\nname = "r"\nwhen.header = { "X-Priority" = 1 }\n',
     'rule "r": when.header.X-Priority: expected a string or an array of strings, got integer'),
    ('[[rule]]\nname = "r"\nwhen.any = []\n',
     'rule "r": when.any: expected a non-empty array of condition tables, got an empty array'),
    ('[[rule]]\nname = "r"\nwhen.all = [ "x" ]\n',
     'rule "r": when.all[0]: expected a table of conditions, got string'),
    ('[[rule]]\nname = "r"\nwhen.not = [ { subject = "x" } ]\n',
     'rule "r": when.not: expected a table of conditions, got array'),
    ('[[rule]]\nname = "r"\nwhen.any = [ { subjct = "x" } ]\n',
     f'rule "r": when.any[0].subjct: unknown condition (known: {KNOWN})'),
    ('[[rule]]\nname = "r"\nwhen.not = {}\n',
     'rule "r": when.not: empty table (write at least one condition)'),
    ('[[rule]]\nname = "r"\nwhen = "always"\n',
     'rule "r": when: expected a table of conditions, got string'),
    ('[[rule]]\nname = "r"\nthen.sla = "urgnt"\n',
     'rule "r": then.sla: unknown SLA policy "urgnt" (policies: standard, urgent)'),
    ('[[rule]]\nname = "r"\nthen.priority = "hgih"\n',
     'rule "r": then.priority: unknown priority "hgih" (expected low, normal, high, urgent)'),
    ('[[rule]]\nname = "r"\nthen.assign = "round_robin"\n',
     'rule "r": then.assign: unknown assignment "round_robin" (expected none, round-robin,'
     " least-loaded or an agent's address)"),
    ('[[rule]]\nname = "r"\nthen.assign = "zed@example.com"\n',
     'rule "r": then.assign: unknown agent "zed@example.com" (agents: ann@example.com,'
     " bob@example.com, carl@example.com, dina@example.com, lea@example.com)"),
    ('[[rule]]\nname = "r"\nthen.team = "frontline"\nthen.assign = "carl@example.com"\n',
     'rule "r": then.assign: agent "carl@example.com" is not a member of team "frontline"'
     " (members: ann@example.com, bob@example.com, lea@example.com)"),
    ('[[rule]]\nname = "r"\nthen.tags = ["two words"]\n',
     'rule "r": then.tags: "two words" is not a tag (1-64 characters, no spaces or commas)'),
    ('[[rule]]\nname = "r"\nthen.stop = "no"\n',
     'rule "r": then.stop: expected true or false, got string'),
    ('[[rule]]\nname = "r"\nthen.stop = false\n',
     'rule "r": then: no actions and stop = false: the rule would do nothing'),
    ('[[rule]]\nname = "r"\nthen.category = 3\n',
     'rule "r": then.category: expected a string, got integer'),
    ('[[rule]]\nname = "r"\nenabled = "no"\n',
     'rule "r": enabled: expected true or false, got string'),
]  # fmt: skip


@pytest.mark.parametrize(("text", "message"), VALIDATION_CASES)
def test_validation_messages(text: str, message: str) -> None:
    assert errors_of(text) == [f"rules/00.toml: {message}"]


def test_assign_accepts_strategies_and_any_agent_without_team() -> None:
    rules = ruleset(
        '[[rule]]\nname = "a"\nthen.assign = "Carl@Example.com"\nthen.stop = false\n'
        '[[rule]]\nname = "b"\nthen.team = "billing"\nthen.assign = "Least-Loaded"\n'
    )
    assert [r.actions.assign for r in rules.rules] == ["carl@example.com", "least-loaded"]


def test_missing_folder_is_an_error_and_empty_folder_is_not(tmp_path: Path) -> None:
    rules, errors = load_rules(tmp_path / "rules", CTX, display_base=tmp_path)
    assert [str(e) for e in errors] == ["rules: rules folder does not exist"]
    (tmp_path / "rules").mkdir()
    rules, errors = load_rules(tmp_path / "rules", CTX)
    assert (len(rules), errors) == (0, [])
    assert decide(rules, mail()).team == "frontline"


def test_undecodable_file_is_reported(tmp_path: Path) -> None:
    (tmp_path / "a.toml").write_bytes(b'[[rule]]\nname = "\xff"\n')
    assert [str(e) for e in check_rules(tmp_path, CTX, display_base=tmp_path)] == [
        "a.toml: not UTF-8 text: invalid start byte"
    ]


# -------------------------------------------------------------------- the example rules


def test_example_rules_are_valid() -> None:
    rules, errors = load_rules(ROOT / "rules", CTX, display_base=ROOT)
    assert [str(e) for e in errors] == []
    assert all(r.description for r in rules.rules)
    assert [r.file for r in rules.rules] == sorted(r.file for r in rules.rules)


@pytest.mark.parametrize(
    ("m", "mailbox", "expected"),
    [
        (mail(subject="Refund for order 12"), "support", ("billing", "refund", "high")),
        (mail(subject="Invoice copy"), "support", ("billing", "invoice", "normal")),
        (mail(subject="Website down!"), "support", ("frontline", None, "urgent")),
        (mail(subject="Website down!", headers={"auto-submitted": ("auto-generated",)}),
         "support", ("frontline", None, "normal")),
        (mail(subject="Locked out", text="can't login"), "support",
         ("frontline", "account", "normal")),
        (mail(from_="x@payments.example.net", subject="Case 7"), "billing",
         ("billing", "dispute", "high")),
        (mail(from_="noreply@payments.example.net", subject="News"), "billing",
         ("billing", None, "normal")),
    ],
)  # fmt: skip
def test_example_rules_route(
    m: ParsedMail, mailbox: str, expected: tuple[str, str | None, str]
) -> None:
    rules = require_rules(ROOT / "rules", CTX)
    d = route(rules, m, mailbox=mailbox, default_team=mailbox.replace("support", "frontline"))
    assert (d.team, d.category, d.priority) == expected


def test_example_urgent_rule_continues_to_tags() -> None:
    rules = require_rules(ROOT / "rules", CTX)
    m = mail(from_="it@eu.bigcorp.example", subject="Outage", attachments=1)
    d = decide(rules, m)
    assert d.tags == ("outage", "attachment", "vip")
    assert (d.sla, d.set_by["sla"], d.set_by["team"]) == ("urgent", "outage", "default")


# -------------------------------------------------------------------- route == explain

MAILBOXES = ("support", "billing", "sales")
ADDRESSES = ("a@x.example", "b+tag@x.example", "c@sub.x.example", "d@y.example", "e@z.example")
PATTERNS = (*ADDRESSES, "b@x.example", "*@x.example", "?@y.example", "*@*.x.example")
DOMAINS = ("x.example", "sub.x.example", "y.example", "example")
REGEXES = (
    r"(?i)\brefund\b",
    r"invoice",
    r"(?i)(down|outage)",
    r"^Re:",
    r"\d{2}",
    r"(?i)kiss",
    r"(?i)(?:ab|ac)d+",
    r"s+",
    r"(?i)is\b",
    r"[A-Z]{3}",
    r"(?i)(?:refund|money (back|return))",
)
# \u0130 \u0131 \u017f \u212a: the non-ASCII letters re's IGNORECASE matches with i, i, s, k
WORDS = ("Refund", "refund", "invoice", "DOWN", "outage", "Re:", "12", "Kiss", "K\u0130SS",
         "K\u0131ss", "\u017fis", "abdd", "ACD", "money back", "hello", "\u212aiss", "is",
         "x")  # fmt: skip
HEADERS = ("X-Priority", "List-Id")

text_st = st.lists(st.sampled_from(WORDS), max_size=5).map(" ".join)
leaf_st = st.one_of(
    st.builds(lambda v: {"mailbox": v}, st.lists(st.sampled_from(MAILBOXES), min_size=1)),
    st.builds(lambda v: {"from": v}, st.lists(st.sampled_from(PATTERNS), min_size=1)),
    st.builds(lambda v: {"to": v}, st.lists(st.sampled_from(PATTERNS), min_size=1)),
    st.builds(lambda v: {"cc": v}, st.lists(st.sampled_from(PATTERNS), min_size=1)),
    st.builds(lambda v: {"from_domain": v}, st.lists(st.sampled_from(DOMAINS), min_size=1)),
    st.builds(lambda v: {"subject": v}, st.sampled_from(REGEXES)),
    st.builds(lambda v: {"body": v}, st.sampled_from(REGEXES)),
    st.builds(lambda v: {"has_attachment": v}, st.booleans()),
    st.builds(
        lambda v: {"header": v},
        st.dictionaries(
            st.sampled_from(HEADERS),
            st.one_of(st.booleans(), st.sampled_from(["1", "/^1/", "/(?i)list/", "2"])),
            min_size=1,
        ),
    ),
)


def _merge(parts: list[dict[str, Any]]) -> dict[str, Any]:
    table: dict[str, Any] = {}
    for part in parts:
        table.update(part)
    return table


conditions_st = st.recursive(
    st.lists(leaf_st, min_size=1, max_size=3).map(_merge),
    lambda inner: st.one_of(
        inner,
        st.builds(lambda v: {"any": v}, st.lists(inner, min_size=1, max_size=3)),
        st.builds(lambda v: {"all": v}, st.lists(inner, min_size=1, max_size=3)),
        st.builds(lambda v: {"not": v}, inner),
        st.builds(lambda a, b: {**a, **b}, inner, leaf_st),
    ),
    max_leaves=8,
)
then_st = st.fixed_dictionaries(
    {},
    optional={
        "team": st.sampled_from(sorted(CTX.teams)),
        "category": st.sampled_from(["a", "b"]),
        "priority": st.sampled_from(routing.PRIORITIES),
        "tags": st.lists(st.sampled_from(["t1", "t2", "t3"]), min_size=1),
        "sla": st.sampled_from(sorted(CTX.slas)),
        "assign": st.sampled_from(["round-robin", "none", "lea@example.com"]),
        "stop": st.booleans(),
    },
).filter(lambda then: then.get("stop", True) or len(then) > 1)
rule_st = st.fixed_dictionaries({"then": then_st}, optional={"when": conditions_st})
mail_st = st.builds(
    mail,
    from_=st.one_of(st.none(), st.sampled_from(ADDRESSES)),
    to=st.lists(st.sampled_from(ADDRESSES), max_size=2).map(tuple),
    cc=st.lists(st.sampled_from(ADDRESSES), max_size=2).map(tuple),
    subject=text_st,
    text=text_st,
    headers=st.dictionaries(
        st.sampled_from([h.lower() for h in HEADERS]),
        st.lists(st.sampled_from(["1", "2", "<list.example>", "x"]), min_size=1).map(tuple),
    ),
    attachments=st.integers(0, 2),
)


@given(
    rules=st.lists(rule_st, max_size=8),
    split=st.integers(0, 8),
    mails=st.lists(st.tuples(mail_st, st.sampled_from(MAILBOXES)), min_size=1, max_size=5),
    data=st.data(),
)
@settings(suppress_health_check=[HealthCheck.too_slow])
def test_route_equals_explain(
    rules: list[dict[str, Any]],
    split: int,
    mails: list[tuple[ParsedMail, str]],
    data: st.DataObject,
) -> None:
    named = [{"name": f"r{i}", **rule} for i, rule in enumerate(rules)]
    named = data.draw(st.permutations(named), label="order")
    docs = [("rules/a.toml", {"rule": named[:split]}), ("rules/b.toml", {"rule": named[split:]})]
    any_mailbox = dataclasses.replace(CTX, mailboxes=frozenset())
    ruleset_, errors = compile_rules(docs, any_mailbox, source=Path("rules"))
    assert errors == []
    for m, mailbox in mails:
        decision = route(ruleset_, m, mailbox=mailbox, default_team="frontline")
        explained, traces = explain(ruleset_, m, mailbox=mailbox, default_team="frontline")
        assert decision == explained
        assert decision.matched == tuple(t.rule for t in traces if t.matched)
        fired = [t for t in traces if t.matched]
        assert all(not t.skipped for t in fired)
        if any(t.skipped for t in traces):
            assert named_stop(named, fired[-1].rule)


def named_stop(rules: list[dict[str, Any]], name: str) -> bool:
    rule = next(r for r in rules if r["name"] == name)
    return bool(rule["then"].get("stop", True))


# -------------------------------------------------------------------- regex prefilter

ODD = "aAbBkKiIsS \u0130\u0131\u017f\u212a0-_\n"
piece_st = st.recursive(
    st.one_of(
        st.text(ODD, min_size=1, max_size=4).map(re.escape),
        st.sampled_from([".", "[a-k]", r"\b", r"\d", "[^s]", "^", "$", r"\s"]),
    ),
    lambda inner: st.one_of(
        st.lists(inner, min_size=1, max_size=4).map("".join),
        st.lists(inner, min_size=1, max_size=3).map(lambda xs: "(?:" + "|".join(xs) + ")"),
        st.tuples(inner, st.sampled_from(["*", "+", "?", "{2}", "{0,2}", "{1,3}?", "++"])).map(
            lambda t: f"(?:{t[0]}){t[1]}"
        ),
        inner.map(lambda x: f"(?>{x})"),
        inner.map(lambda x: f"(?i:{x})"),
        inner.map(lambda x: f"(?=x{x})"),
    ),
    max_leaves=10,
)


@given(
    source=st.tuples(st.sampled_from(["", "(?i)", "(?s)"]), piece_st).map("".join),
    data=st.data(),
)
@settings(suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
def test_needles_never_hide_a_match(source: str, data: st.DataObject) -> None:
    regex = re.compile(source)
    needles = routing._needles(regex)
    if needles is None:
        return
    texts = [
        data.draw(st.text(ODD, max_size=12), label="any text"),
        data.draw(st.from_regex(regex), label="a matching text"),
    ]
    for text in texts:
        if regex.search(text):
            folded = routing._fold(text)
            assert any(n in folded for n in needles), (source, text, needles)


@pytest.mark.parametrize(
    ("source", "needles"),
    [
        (r"(?i)\b(refund|chargeback)\b", ("chargeback", "refund")),
        (r"Invoice #\d+", ("invoice #",)),
        (r"(?:ab|cd)x", None),  # shortest literal below 3: not worth testing
        (r"(?:order|ticket)\s+(?:number|no)?\d+", ("ticket", "order")),
        (r"colou?r", ("colo",)),
        (r"\w+@\w+", None),
        (r"(?i)(?:password reset){1,2}", ("password reset",)),
    ],
)
def test_needles_examples(source: str, needles: tuple[str, ...] | None) -> None:
    assert routing._needles(re.compile(source)) == needles


def test_needles_fold_the_odd_ignorecase_letters() -> None:
    regex = re.compile("(?i)kiss")
    rules = ruleset('[[rule]]\nname = "r"\nwhen.subject = "(?i)kiss"\nwhen.body = "(?i)kiss"\n')
    for odd in ("K\u0130SS", "k\u0131ss", "ki\u017fs", "\u212aiss"):
        assert regex.search(odd)
        assert decide(rules, mail(subject=odd, text=odd)).matched == ("r",)


# -------------------------------------------------------------------- real mail


def _corpus_files() -> list[Path]:
    if not CORPUS.is_dir():
        return []
    skip = {".json", ".md", ".txt", ".html", ".py"}
    return sorted(
        p
        for p in CORPUS.rglob("*")
        if p.is_file() and p.suffix.lower() not in skip and "LICENSE" not in p.name.upper()
    )


def test_corpus_routes_without_error() -> None:
    parse = getattr(__import__("inboxd.mail.parse", fromlist=["parse"]), "parse", None)
    files = _corpus_files()
    if parse is None or not files:
        pytest.skip("inboxd.mail.parse.parse or ../shared/corpus is not there yet")
    from inboxd.mail.parse import UnparsableMail

    rules = require_rules(ROOT / "rules", CTX)
    routed = 0
    for path in files:
        try:
            m = parse(path.read_bytes())
        except UnparsableMail:
            continue
        for mailbox in ("support", "billing"):
            d = route(rules, m, mailbox=mailbox, default_team="frontline")
            assert explain(rules, m, mailbox=mailbox, default_team="frontline")[0] == d
            assert d.team in CTX.teams
        routed += 1
    assert routed > len(files) // 2
