"""Routing benchmark: route generated mail through a large generated rule set.

    python -m bench.routing [--rules 500] [--mails 2000] [--seed 1]

Writes the rules as TOML files to a temporary folder and loads them with
`load_rules`, as the daemon does, then times `route` per message (median, p99).

Baseline, measured in the same run on the same mails: one compiled `re.search` of the
subject per rule, with a pattern of the shape most rules use (a case-insensitive
word alternation). That is the least a rule engine that looks at every rule can do, so
"ratio" says what evaluating the real mix of conditions, combinators and actions costs
against just touching every rule once. Below 1 means the prefilters and cheap-first
ordering skip more work than the real conditions add.

A plain script, not a test: nothing asserts a duration.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import re
import statistics
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from inboxd.mail.parse import Address, Attachment, ParsedMail
from inboxd.tickets.routing import PRIORITIES, RoutingContext, RuleSet, explain, load_rules, route

TEAMS = ("frontline", "billing", "tech", "shipping", "returns", "legal", "sales", "partners")
SLAS = ("standard", "urgent", "gold")
MAILBOXES = ("support", "billing", "sales", "partners")
RULES_PER_FILE = 50

_COMMON_TEXT = """
hello hi thanks please help question order account issue problem update need regarding
about your my the a an with from for when cannot can't working again today yesterday
last week still waiting reply ticket support team customer service delivery package
shipping address change cancel subscription plan price upgrade downgrade login password
email phone number app website page error message screen invoice payment card charged
twice refund receipt item broken missing wrong size
"""
COMMON = tuple(_COMMON_TEXT.split())


def _word(rng: random.Random, n: int) -> str:
    return "".join(rng.choice("bcdfghjklmnprstvwz") + rng.choice("aeiou") for _ in range(n))


def vocabulary(rng: random.Random) -> dict[str, list[str]]:
    """Rare words (products, SKUs, partner names) that rules key on; mail seldom has them."""
    return {
        "products": [
            f"{_word(rng, 3)}{rng.choice(['', ' pro', ' max', '-x'])}" for _ in range(400)
        ],
        "vendors": [f"{_word(rng, 3)}.example" for _ in range(300)],
        "customers": [f"{_word(rng, 4)}.example" for _ in range(2000)],
        "people": [_word(rng, 2) for _ in range(300)],
    }


def _alternation(rng: random.Random, words: list[str], k: int) -> str:
    return r"(?i)\b(" + "|".join(re.escape(w) for w in rng.sample(words, k)) + r")\b"


def make_rule(rng: random.Random, v: dict[str, list[str]], i: int) -> dict[str, object]:
    """One rule of a realistic mix: mostly subject and sender keys, some body and headers."""
    when: dict[str, object] = {}
    kind = rng.choices(
        ["subject", "domain", "address", "body", "header", "any", "not", "to"],
        weights=[35, 20, 10, 10, 5, 10, 5, 5],
    )[0]
    if rng.random() < 0.5:
        when["mailbox"] = rng.sample(MAILBOXES, rng.randint(1, 2))
    if kind == "subject":
        when["subject"] = _alternation(rng, v["products"], rng.randint(1, 4))
    elif kind == "domain":
        when["from_domain"] = rng.sample(v["vendors"], rng.randint(1, 5))
        if rng.random() < 0.4:
            when["subject"] = _alternation(rng, v["products"], 2)
    elif kind == "address":
        addrs = [f"{rng.choice(v['people'])}@{rng.choice(v['vendors'])}" for _ in range(3)]
        if rng.random() < 0.5:
            addrs[0] = f"*@{rng.choice(v['vendors'])}"
        when["from"] = addrs
    elif kind == "body":
        when["body"] = _alternation(rng, v["products"], rng.randint(1, 3))
        if rng.random() < 0.5:
            when["has_attachment"] = True
    elif kind == "header":
        when["header"] = {"X-Customer-Tier": rng.choice(["gold", "/^plat/", ["a1", "a2"]])}
    elif kind == "any":
        when["any"] = [
            {"subject": _alternation(rng, v["products"], 2)},
            {"from_domain": rng.sample(v["vendors"], 2)},
            {"to": [f"{rng.choice(v['people'])}@example.com"], "has_attachment": True},
        ]
    elif kind == "not":
        when["subject"] = _alternation(rng, v["products"], 3)
        when["not"] = {"from_domain": rng.sample(v["vendors"], 2)}
    else:
        when["cc" if rng.random() < 0.3 else "to"] = [f"{rng.choice(v['people'])}@example.com"]
    then: dict[str, object] = {"team": rng.choice(TEAMS), "category": f"cat{i % 40}"}
    if rng.random() < 0.5:
        then["priority"] = rng.choice(PRIORITIES)
    if rng.random() < 0.3:
        then["tags"] = [f"tag{rng.randrange(60)}" for _ in range(rng.randint(1, 3))]
    if rng.random() < 0.2:
        then["sla"] = rng.choice(SLAS)
    if rng.random() < 0.1:
        del then["team"]
        then["stop"] = False
    return {
        "name": f"rule-{i:04d}",
        "description": f"generated {kind} rule",
        "when": when,
        "then": then,
    }


def make_mail(rng: random.Random, v: dict[str, list[str]]) -> tuple[ParsedMail, str]:
    """A support mail: common words, now and then a product name or a vendor sender."""
    words = rng.choices(COMMON, k=rng.randint(4, 10))
    if rng.random() < 0.1:
        words.insert(rng.randrange(len(words)), rng.choice(v["products"]))
    subject = " ".join(words).capitalize()
    body_words = rng.choices(COMMON, k=rng.randint(50, 700))  # about 300 B to 4 KiB
    if rng.random() < 0.05:
        body_words.insert(rng.randrange(len(body_words)), rng.choice(v["products"]))
    text = "\n".join(" ".join(body_words[i : i + 12]) for i in range(0, len(body_words), 12))
    domain = rng.choice(v["vendors"] if rng.random() < 0.1 else v["customers"])
    headers: dict[str, tuple[str, ...]] = {
        "x-mailer": ("Thunderbird 115",),
        "received": ("from mx.example by mx.example",) * 3,
    }
    if rng.random() < 0.1:
        headers["x-customer-tier"] = (rng.choice(["gold", "platinum", "a1", "b2"]),)
    attachments: tuple[Attachment, ...] = ()
    if rng.random() < 0.2:
        attachments = (Attachment(0, "scan.pdf", "application/pdf", 40_000, "0" * 64),)
    mail = ParsedMail(
        message_id=f"{rng.getrandbits(64):x}@{domain}",
        in_reply_to=(),
        references=(),
        from_=Address(f"{rng.choice(v['people'])}@{domain}"),
        to=(Address(f"{rng.choice(MAILBOXES)}@example.com"),),
        cc=(),
        reply_to=(),
        subject=subject,
        date=None,
        text=text,
        html=None,
        attachments=attachments,
        headers=headers,
    )
    return mail, rng.choice(MAILBOXES)


def _toml(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)  # a valid TOML basic string
    if isinstance(value, list):
        return "[" + ", ".join(map(_toml, value)) + "]"
    if isinstance(value, Mapping):
        return "{ " + ", ".join(f"{json.dumps(k)} = {_toml(x)}" for k, x in value.items()) + " }"
    raise TypeError(type(value))


def write_rules(folder: Path, rules: list[dict[str, object]]) -> None:
    for start in range(0, len(rules), RULES_PER_FILE):
        lines: list[str] = []
        for rule in rules[start : start + RULES_PER_FILE]:
            lines.append("[[rule]]")
            for section in ("name", "description"):
                lines.append(f"{section} = {_toml(rule[section])}")
            for section in ("when", "then"):
                table = rule[section]
                assert isinstance(table, dict)
                lines.extend(f"{section}.{k} = {_toml(x)}" for k, x in table.items())
            lines.append("")
        (folder / f"{start // RULES_PER_FILE:02d}-generated.toml").write_text("\n".join(lines))


def time_each(
    fn: Callable[[ParsedMail, str], object], mails: list[tuple[ParsedMail, str]]
) -> list[float]:
    """Microseconds per call, one sample per mail."""
    samples = []
    clock = time.perf_counter_ns
    for mail, mailbox in mails:
        t0 = clock()
        fn(mail, mailbox)
        samples.append((clock() - t0) / 1000)
    return samples


def p99(samples: list[float]) -> float:
    return statistics.quantiles(samples, n=100)[98]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rules", type=int, default=500)
    parser.add_argument("--mails", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()

    rng = random.Random(args.seed)
    vocab = vocabulary(rng)
    ctx = RoutingContext(teams=frozenset(TEAMS), agents=frozenset(), slas=frozenset(SLAS))
    rule_data = [make_rule(rng, vocab, i) for i in range(args.rules)]
    mails = [make_mail(rng, vocab) for _ in range(args.mails)]

    with tempfile.TemporaryDirectory() as tmp:
        write_rules(Path(tmp), rule_data)
        t0 = time.perf_counter()
        ruleset, errors = load_rules(Path(tmp), ctx)
        load_ms = (time.perf_counter() - t0) * 1000
    if errors:
        raise SystemExit("\n".join(map(str, errors)))

    baseline_patterns = [re.compile(_alternation(rng, vocab["products"], 3)) for _ in ruleset.rules]

    def baseline(mail: ParsedMail, mailbox: str) -> None:
        for pattern in baseline_patterns:
            pattern.search(mail.subject)

    def routed(mail: ParsedMail, mailbox: str) -> None:
        route(ruleset, mail, mailbox=mailbox, default_team="frontline")

    def explained(mail: ParsedMail, mailbox: str) -> None:
        explain(ruleset, mail, mailbox=mailbox, default_team="frontline")

    for fn in (baseline, routed):  # warm caches (regex, per-mailbox candidate lists)
        time_each(fn, mails[:200])
    base = time_each(baseline, mails)
    took = time_each(routed, mails)
    traced = time_each(explained, mails[:200])
    report(ruleset, mails, load_ms, base, took, traced)


def report(
    ruleset: RuleSet,
    mails: list[tuple[ParsedMail, str]],
    load_ms: float,
    base: list[float],
    took: list[float],
    traced: list[float],
) -> None:
    decisions = [route(ruleset, m, mailbox=mb, default_team="frontline") for m, mb in mails]
    hit = sum(1 for d in decisions if d.matched)
    print(f"Python {platform.python_version()}, {platform.machine()}")
    print(f"rules: {len(ruleset)} (loaded and compiled in {load_ms:.1f} ms)")
    print(
        f"mails: {len(mails)}, matched by at least one rule: {hit} ({100 * hit / len(mails):.1f}%)"
    )
    print(f"{'':34}{'median µs':>10}{'p99 µs':>10}")
    rows = [
        ("route", took),
        ("baseline: 1 subject re.search/rule", base),
        ("explain (200 mails, traced)", traced),
    ]
    for label, samples in rows:
        print(f"{label:34}{statistics.median(samples):>10.1f}{p99(samples):>10.1f}")
    ratio = statistics.median(took) / statistics.median(base)
    print(f"ratio route / baseline (median): {ratio:.2f}")
    print(
        f"baseline = {len(ruleset)} x re.search(subject) per mail, each pattern a"
        r" (?i)\b(w1|w2|w3)\b alternation like the rules' subject conditions"
    )
    verdict = "met" if statistics.median(took) < 1000 else "MISSED"
    print(f"target < 1000 µs median per message with {len(ruleset)} rules: {verdict}")


if __name__ == "__main__":
    main()
