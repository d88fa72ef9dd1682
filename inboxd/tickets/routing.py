"""Routing rules: load and check `rules/*.toml`, then route a ParsedMail to a Decision.

Pure: no database, no sockets, no clock. Rules are compiled once by `load_rules` (every
regex included); `route` is the hot path and does no tracing; `explain` gives the same
decision plus a trace of every condition, for `inboxd rules test`.

Order
    Files are read in file-name order (code-point order of the name: `10-billing.toml`
    before `20-urgent.toml` before `90-tags.toml`); names starting with "." and
    anything not ending in ".toml" are ignored, subfolders too. Rules are evaluated in
    that file order, then in their order within the file. The first matching rule with
    `then.stop = true` (the default) ends the evaluation: first match wins. A matching
    rule with `then.stop = false` adds its actions and evaluation goes on: tags
    accumulate (deduplicated, first seen first), a later scalar action (team, category,
    priority, sla, assign) overrides an earlier one. When no rule set a team, the
    mailbox's default team applies.

Rule
    [[rule]]
    name = "refunds"                  # required, unique across all files: letters,
                                      # digits, "-", "_", "." (it is stored on tickets)
    description = "..."               # optional, shown by `inboxd rules`
    enabled = true                    # optional; false keeps the rule checked but unused
    when.<condition> = ...            # all conditions must hold; no `when`: every mail
    then.<action> = ...

Conditions (under `when`, and inside `any`/`all`/`not`; several are ANDed)
    mailbox = ["billing", "support"]  any of these mailbox names (exact)
    from = ["a@x.example", "*@bank.example"]
                                      any of; exact address or glob (* ? [..]),
                                      case-insensitive. An address also matches
                                      without its "+detail" (RFC 5233 subaddress), so
                                      "billing@x" matches "billing+123@x".
    from_domain = ["bank.example"]    the sender's domain is one of these or a subdomain
                                      of one (label-wise: "evilbank.example" is not in
                                      "bank.example")
    to = [...], cc = [...]            as `from`, against any To / Cc address
    subject = "(?i)\\brefund\\b"      Python regex, re.search over the subject
    body = "(?i)refund"               re.search over the first BODY_SCAN_CHARS (65,536)
                                      characters of the text body: a bound on the cost
                                      of one mail; what matters is near the top anyway
    header = { "X-Priority" = "1" }   each named header must hold (ANDed); the value is
                                        "text"      equal to any value of the header,
                                                    ignoring case and outer whitespace
                                        "/regex/"   re.search over each value of it
                                        ["a", "/b/"] any of these
                                        true/false  the header is present / absent
    has_attachment = true             the mail has (true) or has no (false) attachment
    any = [ {...}, {...} ]            at least one table holds (each table is ANDed)
    all = [ {...}, {...} ]            every table holds
    not = { ... }                     the table does not hold
    A list may be written as a single string: `from = "a@x.example"`.

Actions (under `then`)
    team = "billing"                  a team from inboxd.toml
    category = "refund"
    priority = "high"                 low | normal | high | urgent (unset: normal)
    tags = ["refund"]
    sla = "urgent"                    an SLA policy from inboxd.toml
    assign = "round-robin"            none | round-robin | least-loaded | an agent's
                                      address (a member of `then.team` when the rule
                                      sets one)
    stop = true                       default true
"""

from __future__ import annotations

import fnmatch
import json
import re
import tomllib
from collections.abc import Callable, Iterable, Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from itertools import chain
from operator import attrgetter
from pathlib import Path
from re import _parser as _sre_parser  # type: ignore[attr-defined]
from typing import Any

from inboxd.errors import ConfigError
from inboxd.mail.parse import ParsedMail

PRIORITIES = ("low", "normal", "high", "urgent")
ASSIGN_STRATEGIES = ("none", "round-robin", "least-loaded")
BODY_SCAN_CHARS = 65_536
CONDITIONS = (
    "mailbox",
    "from",
    "from_domain",
    "to",
    "cc",
    "subject",
    "body",
    "header",
    "has_attachment",
    "any",
    "all",
    "not",
)
ACTIONS = ("team", "category", "priority", "tags", "sla", "assign", "stop")
RULE_KEYS = ("name", "description", "enabled", "when", "then")

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")
_TAG = re.compile(r"[^\s,]{1,64}")
_HEADER_NAME = re.compile(r"[!-9;-~]+")  # printable ASCII but ":", RFC 5322 3.6.8
_DOMAIN = re.compile(r"[a-z0-9_-]+(\.[a-z0-9_-]+)*")
_REGEX_WITH_FLAGS = re.compile(r"/.*/[a-zA-Z]+")
_GLOB_CHARS = frozenset("*?[")
_MAX_SHOWN = 80  # characters of mail text quoted in a trace


# ---------------------------------------------------------------------------- API types


@dataclass(frozen=True, slots=True)
class RuleError:
    """One problem in the rules folder, located by file, rule and key path.

    `rule` is None for a problem of the whole file (TOML syntax, unknown top-level key),
    the rule's name otherwise, or "#N" for the N-th `[[rule]]` of a file when it has no
    usable name.
    """

    file: str
    rule: str | None
    key: str
    problem: str

    def __str__(self) -> str:
        parts = [self.file]
        if self.rule is not None:
            parts.append(
                f"rule {self.rule}" if self.rule.startswith("#") else f'rule "{self.rule}"'
            )
        if self.key:
            parts.append(self.key)
        parts.append(self.problem)
        return ": ".join(parts)


class RulesInvalid(ConfigError):
    """The rules folder has errors; `errors` lists every one of them."""

    def __init__(self, errors: Sequence[RuleError]) -> None:
        self.errors = tuple(errors)
        super().__init__("\n".join(map(str, self.errors)))


@dataclass(frozen=True)
class RoutingContext:
    """What rules may name, taken from inboxd.toml.

    `team_members` maps a team to its agents (lead included); when it knows the team a
    rule sets, `assign = "<agent>"` must name one of them. An empty `mailboxes` leaves
    `when.mailbox` unchecked.
    """

    teams: frozenset[str]
    agents: frozenset[str]
    slas: frozenset[str]
    team_members: Mapping[str, frozenset[str]] = field(default_factory=dict)
    mailboxes: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class Actions:
    """What a matching rule sets; None (or no tags) leaves a field to other rules."""

    team: str | None = None
    category: str | None = None
    priority: str | None = None
    tags: tuple[str, ...] = ()
    sla: str | None = None
    assign: str | None = None
    stop: bool = True


@dataclass(frozen=True, slots=True, eq=False)
class Rule:
    """One compiled rule. `file` is the display path of the file that holds it."""

    name: str
    description: str
    file: str
    actions: Actions
    _conditions: tuple[_Condition, ...]  # as written, for explain
    _tests: tuple[Callable[[_Facts], bool], ...]  # cheapest first, mailbox left out
    _mailboxes: frozenset[str] | None  # from a top-level when.mailbox: the route prefilter

    @property
    def stop(self) -> bool:
        return self.actions.stop


@dataclass(frozen=True)
class RuleSet:
    """The compiled rules of one folder, in evaluation order."""

    rules: tuple[Rule, ...]
    source: Path
    _by_mailbox: dict[str, tuple[Rule, ...]] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    def __len__(self) -> int:
        return len(self.rules)

    def candidates(self, mailbox: str) -> tuple[Rule, ...]:
        """The rules that can match mail of `mailbox`, in order (cached per mailbox)."""
        found = self._by_mailbox.get(mailbox)
        if found is None:
            found = tuple(r for r in self.rules if r._mailboxes is None or mailbox in r._mailboxes)
            if len(self._by_mailbox) >= 256:  # mailbox names come from config: few
                self._by_mailbox.clear()
            self._by_mailbox[mailbox] = found
        return found


@dataclass(frozen=True, slots=True)
class Decision:
    """Where a mail goes and why.

    `priority` is "normal" when no rule set it; `assign` is None when no rule set it
    and "none" when a rule said so. `matched` names the rules that fired, in order.
    `set_by` maps each field a rule set ("team", "category", "priority", "sla",
    "assign", and "tags.<tag>" for each tag) to the name of the last rule that set it;
    "team" maps to "default" when the mailbox's default team applied.
    """

    team: str
    category: str | None
    priority: str
    tags: tuple[str, ...]
    sla: str | None
    assign: str | None
    matched: tuple[str, ...]
    set_by: Mapping[str, str]


@dataclass(frozen=True, slots=True)
class ConditionTrace:
    """One condition's outcome; `condition` is its key path, e.g. "when.any[1].subject"."""

    condition: str
    matched: bool
    detail: str


@dataclass(frozen=True, slots=True)
class RuleTrace:
    """One rule's outcome; `skipped` when an earlier rule stopped the evaluation."""

    rule: str
    file: str
    matched: bool
    conditions: tuple[ConditionTrace, ...]
    skipped: bool


# ---------------------------------------------------------------------------- the mail


class _Facts:
    """What conditions read from one mail, normalised once per route call."""

    __slots__ = (
        "attachments",
        "cc",
        "cc_forms",
        "folded_subject",
        "folded_text",
        "headers",
        "mailbox",
        "sender",
        "sender_domains",
        "sender_forms",
        "subject",
        "text",
        "to",
        "to_forms",
    )

    def __init__(self, mail: ParsedMail, mailbox: str) -> None:
        self.mailbox = mailbox
        sender = mail.from_.addr.lower() if mail.from_ is not None else ""
        self.sender: tuple[str, ...] = (sender,) if sender else ()
        self.sender_forms = _forms(self.sender)
        self.sender_domains = _domain_suffixes(sender)
        self.to = tuple(a.addr.lower() for a in mail.to)
        self.to_forms = _forms(self.to)
        self.cc = tuple(a.addr.lower() for a in mail.cc)
        self.cc_forms = _forms(self.cc)
        self.subject = mail.subject or ""
        self.text = mail.text or ""
        self.headers = mail.headers
        self.attachments = len(mail.attachments)
        self.folded_subject: str | None = None  # _fold()ed on first use, for needles
        self.folded_text: str | None = None


def _fold(text: str) -> str:
    """Lowercase `text` so that every character an ASCII regex literal matches, with or
    without IGNORECASE, becomes that literal's lowercase: re also matches i, k and s
    with U+0130, U+0131, U+017F and U+212A (re docs, "IGNORECASE"), and U+0130 is the
    only character whose lower() is two characters."""
    if not text.isascii():
        for odd, ascii_ in _FOLD_EXTRA:
            if odd in text:
                text = text.replace(odd, ascii_)
    return text.lower()


_FOLD_EXTRA = (("\u0130", "i"), ("\u0131", "i"), ("\u017f", "s"), ("\u212a", "k"))


def _unplussed(addr: str) -> str:
    """`a+detail@x` -> `a@x` (RFC 5233 subaddress); other addresses unchanged."""
    local, at, domain = addr.rpartition("@")
    if at and "+" in local[1:]:
        return local.split("+", 1)[0] + "@" + domain
    return addr


def _forms(addrs: tuple[str, ...]) -> frozenset[str]:
    return frozenset(addrs) | frozenset(map(_unplussed, addrs))


def _domain_suffixes(addr: str) -> frozenset[str]:
    """`a@mail.bank.example` -> {mail.bank.example, bank.example, example}."""
    _, at, domain = addr.rpartition("@")
    labels = domain.rstrip(".").split(".") if at else []
    return frozenset(".".join(labels[i:]) for i in range(len(labels)) if labels[i])


def _quote(text: str) -> str:
    """Mail text for a trace line: quoted, escaped (no terminal control), shortened."""
    if len(text) > _MAX_SHOWN:
        text = text[: _MAX_SHOWN - 1] + "…"
    return json.dumps(text, ensure_ascii=False)


# ---------------------------------------------------------------------------- conditions
#
# Each condition has `test(facts) -> bool` (the hot path) and `explain(facts, out) ->
# bool`, which must return the same answer and append what it saw to `out`. `cost` is
# a rough relative price, so a rule checks set lookups before it runs a regex.


class _Condition:
    __slots__ = ("cost", "path")

    def __init__(self, path: str, cost: int) -> None:
        self.path = path
        self.cost = cost

    def test(self, f: _Facts) -> bool:
        raise NotImplementedError

    def explain(self, f: _Facts, out: list[ConditionTrace]) -> bool:
        raise NotImplementedError

    def _say(self, out: list[ConditionTrace], matched: bool, detail: str) -> bool:
        out.append(ConditionTrace(self.path, matched, detail))
        return matched


class _Mailbox(_Condition):
    __slots__ = ("names",)

    def __init__(self, path: str, names: frozenset[str]) -> None:
        super().__init__(path, 1)
        self.names = names

    def test(self, f: _Facts) -> bool:
        return f.mailbox in self.names

    def explain(self, f: _Facts, out: list[ConditionTrace]) -> bool:
        hit = f.mailbox in self.names
        verb = "is" if hit else "is not"
        return self._say(out, hit, f"mailbox {_quote(f.mailbox)} {verb} one of {_join(self.names)}")


class _Attachment(_Condition):
    __slots__ = ("want",)

    def __init__(self, path: str, want: bool) -> None:
        super().__init__(path, 1)
        self.want = want

    def test(self, f: _Facts) -> bool:
        return (f.attachments > 0) is self.want

    def explain(self, f: _Facts, out: list[ConditionTrace]) -> bool:
        n = f.attachments
        has = f"mail has {n} attachment{'s' if n != 1 else ''}" if n else "mail has no attachment"
        return self._say(out, (n > 0) is self.want, has)


class _Addresses(_Condition):
    """from / to / cc: exact addresses (a set lookup) or globs."""

    __slots__ = ("addrs_of", "exact", "forms_of", "globs", "label", "shown")

    def __init__(self, path: str, field_: str, patterns: tuple[str, ...]) -> None:
        exact = frozenset(p for p in patterns if not _GLOB_CHARS & set(p))
        globs = tuple((p, re.compile(fnmatch.translate(p))) for p in patterns if p not in exact)
        super().__init__(path, 2 + 3 * len(globs))
        # field_ is "sender", "to" or "cc": which _Facts attributes it reads
        self.addrs_of = attrgetter(field_)
        self.forms_of = attrgetter(field_ + "_forms")
        self.label = "from" if field_ == "sender" else field_
        self.exact = exact
        self.globs = globs
        self.shown = _join(patterns)

    def test(self, f: _Facts) -> bool:
        forms: frozenset[str] = self.forms_of(f)
        if not self.exact.isdisjoint(forms):
            return True
        for _, glob in self.globs:
            for addr in forms:
                if glob.match(addr):
                    return True
        return False

    def explain(self, f: _Facts, out: list[ConditionTrace]) -> bool:
        label = self.label
        addrs: tuple[str, ...] = self.addrs_of(f)
        if not addrs:
            return self._say(out, False, f"no {label.capitalize()} address")
        for addr in addrs:
            for form in dict.fromkeys((addr, _unplussed(addr))):
                if form in self.exact:
                    return self._say(out, True, f"{label} {addr} matched {_quote(form)}")
                for text, glob in self.globs:
                    if glob.match(form):
                        return self._say(out, True, f"{label} {addr} matched {_quote(text)}")
        return self._say(out, False, f"{label} {', '.join(addrs)} matches none of {self.shown}")


class _FromDomain(_Condition):
    __slots__ = ("domains",)

    def __init__(self, path: str, domains: frozenset[str]) -> None:
        super().__init__(path, 2)
        self.domains = domains

    def test(self, f: _Facts) -> bool:
        return not self.domains.isdisjoint(f.sender_domains)

    def explain(self, f: _Facts, out: list[ConditionTrace]) -> bool:
        if not f.sender:
            return self._say(out, False, "no From address")
        domain = f.sender[0].rpartition("@")[2]
        within = sorted(self.domains & f.sender_domains, key=len, reverse=True)
        if within:
            return self._say(out, True, f"from domain {domain} is within {within[0]}")
        return self._say(
            out, False, f"from domain {domain} is not within any of {_join(self.domains)}"
        )


class _Regex(_Condition):
    """subject / body: re.search; the body only up to BODY_SCAN_CHARS.

    `needles` are literals one of which any match must contain (see `_needles`): when
    none is in the folded text the regex cannot match and is not run. That is what
    keeps 500 rules under a millisecond: a substring test costs a fraction of a search.
    `explain` always runs the regex, so comparing it with `route` tests the needles.
    """

    __slots__ = ("needles", "regex")

    def __init__(self, path: str, regex: re.Pattern[str], cost: int) -> None:
        super().__init__(path, cost)
        self.regex = regex
        self.needles = _needles(regex)

    def _shown(self, m: re.Match[str] | None) -> str:
        raise NotImplementedError


class _Subject(_Regex):
    __slots__ = ()

    def __init__(self, path: str, regex: re.Pattern[str]) -> None:
        super().__init__(path, regex, 10)

    def test(self, f: _Facts) -> bool:
        if self.needles is not None:
            hay = f.folded_subject
            if hay is None:
                hay = f.folded_subject = _fold(f.subject)
            for needle in self.needles:
                if needle in hay:
                    break
            else:
                return False
        return self.regex.search(f.subject) is not None

    def explain(self, f: _Facts, out: list[ConditionTrace]) -> bool:
        m = self.regex.search(f.subject)
        seen = f"subject {_quote(f.subject)}"
        if m is None:
            return self._say(out, False, f"{seen} does not match {self.regex.pattern}")
        return self._say(out, True, f"{seen} matched {self.regex.pattern} at {_quote(m.group())}")


class _Body(_Regex):
    __slots__ = ()

    def __init__(self, path: str, regex: re.Pattern[str]) -> None:
        super().__init__(path, regex, 50)

    def test(self, f: _Facts) -> bool:
        if self.needles is not None:
            hay = f.folded_text
            if hay is None:
                hay = f.folded_text = _fold(f.text[:BODY_SCAN_CHARS])
            for needle in self.needles:
                if needle in hay:
                    break
            else:
                return False
        return self.regex.search(f.text, 0, BODY_SCAN_CHARS) is not None

    def explain(self, f: _Facts, out: list[ConditionTrace]) -> bool:
        m = self.regex.search(f.text, 0, BODY_SCAN_CHARS)
        seen = f"body ({min(len(f.text), BODY_SCAN_CHARS)} characters searched)"
        if m is None:
            return self._say(out, False, f"{seen} does not match {self.regex.pattern}")
        at = f"at {_quote(m.group())} (character {m.start()})"
        return self._say(out, True, f"{seen} matched {self.regex.pattern} {at}")


_MIN_NEEDLE = 3  # shorter literals are in nearly every text: not worth the test
_MAX_NEEDLES = 64


def _needles(regex: re.Pattern[str]) -> tuple[str, ...] | None:
    """Lowercase ASCII literals one of which every match of `regex` contains, or None.

    Reads the parse tree of the re module (`re._parser`, private): a sequence needs all
    its items, so any one item's literals will do (the most selective is kept); a run
    of literal characters is one literal; a branch needs one of its alternatives'
    literals; a repeat needs its body's when it must occur at least once. Anything else
    (classes, anchors, backreferences, lookarounds, non-ASCII) yields nothing. Found
    literals are compared against `_fold`ed text. Should the private module change,
    the answer is None and rules only lose speed.
    """
    try:
        found = _literals(_sre_parser.parse(regex.pattern, regex.flags))
    except Exception:  # noqa: BLE001 - a private API: on any surprise, no prefilter
        return None
    if found is None or min(map(len, found)) < _MIN_NEEDLE or len(found) > _MAX_NEEDLES:
        return None
    return tuple(sorted(found, key=len, reverse=True))


def _literals(items: Iterable[tuple[Any, Any]]) -> frozenset[str] | None:
    # Any: re._parser's tree, (opcode, argument) pairs whose argument type varies by op
    best: frozenset[str] | None = None

    def consider(option: frozenset[str] | None) -> None:
        nonlocal best
        if option and (best is None or _selectivity(option) > _selectivity(best)):
            best = option

    run: list[str] = []
    for op, av in items:
        name = getattr(op, "name", "")
        if name == "LITERAL" and isinstance(av, int) and av < 128:
            run.append(chr(av).lower())
            continue
        consider(frozenset(("".join(run),)) if run else None)
        run = []
        if name == "SUBPATTERN":
            consider(_literals(av[-1]))
        elif name == "ATOMIC_GROUP":
            consider(_literals(av))
        elif name in ("MAX_REPEAT", "MIN_REPEAT", "POSSESSIVE_REPEAT"):
            low, _, body = av
            if low >= 1:
                consider(_literals(body))
        elif name == "BRANCH":
            options = [_literals(branch) for branch in av[1]]
            if all(options):
                consider(frozenset(chain.from_iterable(o for o in options if o)))
    consider(frozenset(("".join(run),)) if run else None)
    return best


def _selectivity(option: frozenset[str]) -> tuple[int, int]:
    """Longer shortest literal first, then fewer literals."""
    return (min(map(len, option)), -len(option))


class _Header(_Condition):
    """One named header: equal to a value, matching a /regex/, present or absent."""

    __slots__ = ("equals", "name", "present", "regexes", "shown")

    def __init__(
        self,
        path: str,
        name: str,
        *,
        equals: frozenset[str] = frozenset(),
        regexes: tuple[re.Pattern[str], ...] = (),
        present: bool | None = None,
        shown: str = "",
    ) -> None:
        super().__init__(path, 3 + 5 * len(regexes))
        self.name = name.lower()
        self.equals = equals  # casefolded
        self.regexes = regexes
        self.present = present
        self.shown = shown

    def _hit(self, values: tuple[str, ...]) -> str | None:
        """The first value that satisfies the condition, or None."""
        for value in values:
            if value.strip().casefold() in self.equals:
                return value
            for regex in self.regexes:
                if regex.search(value):
                    return value
        return None

    def test(self, f: _Facts) -> bool:
        values = f.headers.get(self.name, ())
        if self.present is not None:
            return bool(values) is self.present
        return self._hit(values) is not None

    def explain(self, f: _Facts, out: list[ConditionTrace]) -> bool:
        values = f.headers.get(self.name, ())
        if self.present is not None:
            hit = bool(values) is self.present
            state = "present" if values else "absent"
            return self._say(out, hit, f"header {self.name} is {state}")
        if not values:
            return self._say(out, False, f"header {self.name} is absent")
        value = self._hit(values)
        if value is not None:
            return self._say(out, True, f"header {self.name} {_quote(value)} matched {self.shown}")
        shown = ", ".join(_quote(v) for v in values[:3])
        return self._say(out, False, f"header {self.name} {shown} matches none of {self.shown}")


def _all_of(tests: tuple[Callable[[_Facts], bool], ...], f: _Facts) -> bool:
    # A plain loop, not all(genexpr): this is the hot path and a generator costs more.
    for test in tests:  # noqa: SIM110
        if not test(f):
            return False
    return True


def _by_cost(conds: Iterable[_Condition]) -> tuple[Callable[[_Facts], bool], ...]:
    return tuple(c.test for c in sorted(conds, key=lambda c: c.cost))


class _Group(_Condition):
    """A table of conditions, all of which must hold: one entry of any/all, or not's."""

    __slots__ = ("conds", "tests")

    def __init__(self, path: str, conds: tuple[_Condition, ...]) -> None:
        super().__init__(path, sum(c.cost for c in conds))
        self.conds = conds
        self.tests = _by_cost(conds)

    def test(self, f: _Facts) -> bool:
        return _all_of(self.tests, f)

    def explain(self, f: _Facts, out: list[ConditionTrace]) -> bool:
        if len(self.conds) == 1:
            return self.conds[0].explain(f, out)
        mark = len(out)
        out.append(ConditionTrace(self.path, False, ""))  # placeholder, filled below
        hits = [c.explain(f, out) for c in self.conds]
        ok = all(hits)
        detail = f"{hits.count(True)} of {len(hits)} conditions hold"
        out[mark] = ConditionTrace(self.path, ok, detail)
        return ok


class _Any(_Condition):
    __slots__ = ("groups", "tests")

    def __init__(self, path: str, groups: tuple[_Group, ...]) -> None:
        super().__init__(path, sum(g.cost for g in groups))
        self.groups = groups
        self.tests = _by_cost(groups)

    def test(self, f: _Facts) -> bool:
        for test in self.tests:  # noqa: SIM110 (hot path, see _all_of)
            if test(f):
                return True
        return False

    def explain(self, f: _Facts, out: list[ConditionTrace]) -> bool:
        mark = len(out)
        out.append(ConditionTrace(self.path, False, ""))
        hits = [g.explain(f, out) for g in self.groups]
        ok = any(hits)
        out[mark] = ConditionTrace(self.path, ok, f"{hits.count(True)} of {len(hits)} hold")
        return ok


class _All(_Condition):
    __slots__ = ("groups", "tests")

    def __init__(self, path: str, groups: tuple[_Group, ...]) -> None:
        super().__init__(path, sum(g.cost for g in groups))
        self.groups = groups
        self.tests = _by_cost(groups)

    def test(self, f: _Facts) -> bool:
        return _all_of(self.tests, f)

    def explain(self, f: _Facts, out: list[ConditionTrace]) -> bool:
        mark = len(out)
        out.append(ConditionTrace(self.path, False, ""))
        hits = [g.explain(f, out) for g in self.groups]
        ok = all(hits)
        out[mark] = ConditionTrace(self.path, ok, f"{hits.count(True)} of {len(hits)} hold")
        return ok


class _Not(_Condition):
    __slots__ = ("group",)

    def __init__(self, path: str, group: _Group) -> None:
        super().__init__(path, group.cost)
        self.group = group

    def test(self, f: _Facts) -> bool:
        return not self.group.test(f)

    def explain(self, f: _Facts, out: list[ConditionTrace]) -> bool:
        mark = len(out)
        out.append(ConditionTrace(self.path, False, ""))
        inner = self.group.explain(f, out)
        detail = "the table does not hold" if not inner else "the table holds"
        out[mark] = ConditionTrace(self.path, not inner, detail)
        return not inner


def _join(items: Iterable[str]) -> str:
    """Sets sorted (stable messages), sequences in their written order."""
    return ", ".join(sorted(items) if isinstance(items, AbstractSet) else items)


# ---------------------------------------------------------------------------- evaluation


class _Outcome:
    """The decision being built as matching rules are applied in order."""

    __slots__ = ("assign", "category", "matched", "priority", "set_by", "sla", "tags", "team")

    def __init__(self) -> None:
        self.team: str | None = None
        self.category: str | None = None
        self.priority: str | None = None
        self.sla: str | None = None
        self.assign: str | None = None
        self.tags: dict[str, None] = {}  # ordered set
        self.matched: list[str] = []
        self.set_by: dict[str, str] = {}

    def apply(self, rule: Rule) -> None:
        a, name = rule.actions, rule.name
        self.matched.append(name)
        if a.team is not None:
            self.team = a.team
            self.set_by["team"] = name
        if a.category is not None:
            self.category = a.category
            self.set_by["category"] = name
        if a.priority is not None:
            self.priority = a.priority
            self.set_by["priority"] = name
        if a.sla is not None:
            self.sla = a.sla
            self.set_by["sla"] = name
        if a.assign is not None:
            self.assign = a.assign
            self.set_by["assign"] = name
        for tag in a.tags:
            if tag not in self.tags:
                self.tags[tag] = None
                self.set_by["tags." + tag] = name

    def decision(self, default_team: str) -> Decision:
        team = self.team
        if team is None:
            team = default_team
            self.set_by["team"] = "default"
        return Decision(
            team=team,
            category=self.category,
            priority=self.priority or "normal",
            tags=tuple(self.tags),
            sla=self.sla,
            assign=self.assign,
            matched=tuple(self.matched),
            set_by=self.set_by,
        )


def route(rules: RuleSet, mail: ParsedMail, *, mailbox: str, default_team: str) -> Decision:
    """Decide team, category, priority, tags, SLA and assignment for `mail`.

    Stops at the first matching rule with stop = true; no trace is kept. Raises nothing
    for any ParsedMail.
    """
    facts = _Facts(mail, mailbox)
    outcome = _Outcome()
    for rule in rules.candidates(mailbox):
        for test in rule._tests:
            if not test(facts):
                break
        else:
            outcome.apply(rule)
            if rule.actions.stop:
                break
    return outcome.decision(default_team)


def explain(
    rules: RuleSet, mail: ParsedMail, *, mailbox: str, default_team: str
) -> tuple[Decision, tuple[RuleTrace, ...]]:
    """The decision `route` gives, and why: every condition of every rule reached.

    Rules after the one that stopped are traced as skipped, with no conditions.
    """
    facts = _Facts(mail, mailbox)
    outcome = _Outcome()
    traces: list[RuleTrace] = []
    stopped = False
    for rule in rules.rules:
        if stopped:
            traces.append(RuleTrace(rule.name, rule.file, False, (), skipped=True))
            continue
        out: list[ConditionTrace] = []
        ok = all([c.explain(facts, out) for c in rule._conditions])
        if not rule._conditions:
            out.append(ConditionTrace("when", True, "no conditions: every mail matches"))
        traces.append(RuleTrace(rule.name, rule.file, ok, tuple(out), skipped=False))
        if ok:
            outcome.apply(rule)
            stopped = rule.actions.stop
    return outcome.decision(default_team), tuple(traces)


# ---------------------------------------------------------------------------- loading


def load_rules(
    folder: Path, ctx: RoutingContext, *, display_base: Path | None = None
) -> tuple[RuleSet, list[RuleError]]:
    """Read and check every `*.toml` in `folder`, in file-name order.

    Returns the rule set and every error found. The rule set holds only the rules that
    had no error, so it is complete only when the list is empty: whatever routes mail
    must refuse to start otherwise (`require_rules` does). A missing folder is an
    error; an empty one gives no rules. Raises nothing.
    """
    shown = _display(folder, display_base)
    if not folder.is_dir():
        what = "does not exist" if not folder.exists() else "is not a folder"
        return RuleSet((), folder), [RuleError(shown, None, "", f"rules folder {what}")]
    documents: list[tuple[str, Mapping[str, object]]] = []
    errors: list[RuleError] = []
    files = sorted(
        (p for p in folder.iterdir() if p.suffix == ".toml" and not p.name.startswith(".")),
        key=lambda p: p.name,
    )
    for path in files:
        file = _display(path, display_base)
        try:
            documents.append((file, tomllib.loads(path.read_bytes().decode("utf-8"))))
        except tomllib.TOMLDecodeError as exc:  # its text ends "(at line L, column C)"
            errors.append(RuleError(file, None, "", f"invalid TOML: {exc}"))
        except UnicodeDecodeError as exc:
            errors.append(RuleError(file, None, "", f"not UTF-8 text: {exc.reason}"))
        except OSError as exc:
            errors.append(RuleError(file, None, "", f"cannot read: {exc.strerror or exc}"))
    ruleset, more = compile_rules(documents, ctx, source=folder)
    return ruleset, errors + more


def check_rules(
    folder: Path, ctx: RoutingContext, *, display_base: Path | None = None
) -> list[RuleError]:
    """Every error in the rules folder (see `load_rules`); empty when it is good."""
    return load_rules(folder, ctx, display_base=display_base)[1]


def require_rules(
    folder: Path, ctx: RoutingContext, *, display_base: Path | None = None
) -> RuleSet:
    """The rule set of `folder`; raises RulesInvalid, with every error, if it has any."""
    ruleset, errors = load_rules(folder, ctx, display_base=display_base)
    if errors:
        raise RulesInvalid(errors)
    return ruleset


def compile_rules(
    documents: Iterable[tuple[str, Mapping[str, object]]],
    ctx: RoutingContext,
    *,
    source: Path,
) -> tuple[RuleSet, list[RuleError]]:
    """Check and compile parsed rule documents `(display file, TOML table)`, in order.

    What `load_rules` does after reading the files; tests and tools call it on data.
    """
    compiler = _Compiler(ctx)
    rules: list[Rule] = []
    for file, doc in documents:
        rules.extend(compiler.document(file, doc))
    return RuleSet(tuple(rules), source), compiler.errors


def _display(path: Path, base: Path | None) -> str:
    if base is not None:
        for p, b in ((path, base), (path.resolve(), base.resolve())):
            try:
                return p.relative_to(b).as_posix()
            except ValueError:
                continue
    return path.as_posix()


def _kind(value: object) -> str:
    """The TOML name of a value's type, for messages."""
    if isinstance(value, bool):
        return "boolean"
    for py, name in ((str, "string"), (int, "integer"), (float, "float")):
        if isinstance(value, py):
            return name
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "table"
    return "date/time"


class _Compiler:
    """Turns TOML tables into Rules, collecting every error instead of stopping."""

    def __init__(self, ctx: RoutingContext) -> None:
        self.ctx = ctx
        self.errors: list[RuleError] = []
        self.names: dict[str, str] = {}  # rule name -> file that defined it first
        self.agents = {a.lower(): a for a in ctx.agents}
        self.file = ""
        self.rule: str | None = None

    def err(self, key: str, problem: str) -> None:
        self.errors.append(RuleError(self.file, self.rule, key, problem))

    def document(self, file: str, doc: Mapping[str, object]) -> list[Rule]:
        self.file, self.rule = file, None
        for key in doc:
            if key != "rule":
                self.err(key, "unknown top-level key (known: rule)")
        entries = doc.get("rule", [])
        if not isinstance(entries, list):
            self.err("rule", f"expected an array of tables ([[rule]]), got {_kind(entries)}")
            return []
        rules = []
        for index, entry in enumerate(entries, start=1):
            self.rule = f"#{index}"
            if not isinstance(entry, dict):
                self.err("", f"expected a table ([[rule]]), got {_kind(entry)}")
                continue
            rule = self.compile_rule(file, entry)
            if rule is not None:
                rules.append(rule)
        self.rule = None
        return rules

    def compile_rule(self, file: str, entry: Mapping[str, object]) -> Rule | None:
        before = len(self.errors)
        name = entry.get("name")
        if name is None:
            self.err("name", "missing (every rule needs a unique name)")
        elif not isinstance(name, str):
            self.err("name", f"expected a string, got {_kind(name)}")
        elif not _NAME.fullmatch(name):
            self.err(
                "name",
                "must be 1-100 letters, digits, '-', '_' or '.', starting with a letter or digit",
            )
        else:
            self.rule = name
            if name in self.names:
                self.err("name", f"duplicate rule name (also in {self.names[name]})")
            else:
                self.names[name] = file
        for key in entry:
            if key not in RULE_KEYS:
                self.err(key, f"unknown key (known: {', '.join(RULE_KEYS)})")
        description = entry.get("description", "")
        if not isinstance(description, str):
            self.err("description", f"expected a string, got {_kind(description)}")
            description = ""
        enabled = entry.get("enabled", True)
        if not isinstance(enabled, bool):
            self.err("enabled", f"expected true or false, got {_kind(enabled)}")
        when = entry.get("when", {})
        conds: tuple[_Condition, ...] = ()
        if isinstance(when, dict):
            conds = self.conditions(when, "when")
        else:
            self.err("when", f"expected a table of conditions, got {_kind(when)}")
        then = entry.get("then", {})
        actions = Actions()
        if isinstance(then, dict):
            actions = self.actions(then)
        else:
            self.err("then", f"expected a table of actions, got {_kind(then)}")
        if len(self.errors) > before or enabled is False or not isinstance(name, str):
            return None
        mailboxes = None
        for c in conds:
            if isinstance(c, _Mailbox):
                mailboxes = c.names
        return Rule(
            name=name,
            description=description,
            file=file,
            actions=actions,
            _conditions=conds,
            _tests=_by_cost(c for c in conds if not isinstance(c, _Mailbox)),
            _mailboxes=mailboxes,
        )

    # -- conditions

    def conditions(self, table: Mapping[str, object], path: str) -> tuple[_Condition, ...]:
        """The conditions of one table, in written order (invalid ones left out)."""
        conds: list[_Condition] = []
        for key, value in table.items():
            at = f"{path}.{key}"
            if key not in CONDITIONS:
                self.err(at, f"unknown condition (known: {', '.join(CONDITIONS)})")
                continue
            conds.extend(self.condition(key, value, at))
        return tuple(conds)

    def condition(self, key: str, value: object, at: str) -> list[_Condition]:
        if key == "mailbox":
            names = self.strings(value, at)
            if names is None:
                return []
            unknown = [n for n in names if self.ctx.mailboxes and n not in self.ctx.mailboxes]
            for n in unknown:
                self.err(at, f'unknown mailbox "{n}" (mailboxes: {_join(self.ctx.mailboxes)})')
            return [] if unknown else [_Mailbox(at, frozenset(names))]
        if key in ("from", "to", "cc"):
            patterns = self.addresses(value, at)
            field_ = "sender" if key == "from" else key
            return [] if patterns is None else [_Addresses(at, field_, patterns)]
        if key == "from_domain":
            domains = self.domains(value, at)
            return [] if domains is None else [_FromDomain(at, frozenset(domains))]
        if key in ("subject", "body"):
            if not isinstance(value, str):
                self.err(at, f"expected a string (a regex), got {_kind(value)}")
                return []
            regex = self.regex(value, at)
            if regex is None:
                return []
            return [_Body(at, regex) if key == "body" else _Subject(at, regex)]
        if key == "header":
            return self.headers(value, at)
        if key == "has_attachment":
            if not isinstance(value, bool):
                self.err(at, f"expected true or false, got {_kind(value)}")
                return []
            return [_Attachment(at, value)]
        if key == "not":
            if not isinstance(value, dict):
                self.err(at, f"expected a table of conditions, got {_kind(value)}")
                return []
            group = self.group(value, at)
            return [] if group is None else [_Not(at, group)]
        # any / all
        if not isinstance(value, list) or not value:
            got = "an empty array" if isinstance(value, list) else _kind(value)
            self.err(at, f"expected a non-empty array of condition tables, got {got}")
            return []
        groups: list[_Group] = []
        ok = True
        for i, item in enumerate(value):
            if not isinstance(item, dict):
                self.err(f"{at}[{i}]", f"expected a table of conditions, got {_kind(item)}")
                ok = False
                continue
            group = self.group(item, f"{at}[{i}]")
            ok = ok and group is not None
            if group is not None:
                groups.append(group)
        if not ok:
            return []
        return [_Any(at, tuple(groups)) if key == "any" else _All(at, tuple(groups))]

    def group(self, table: Mapping[str, object], at: str) -> _Group | None:
        if not table:
            self.err(at, "empty table (write at least one condition)")
            return None
        before = len(self.errors)
        conds = self.conditions(table, at)
        return None if len(self.errors) > before else _Group(at, conds)

    def strings(self, value: object, at: str) -> tuple[str, ...] | None:
        """A string or a non-empty array of non-empty strings."""
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, list):
            self.err(at, f"expected a string or an array of strings, got {_kind(value)}")
            return None
        if not items:
            self.err(at, "empty array (it would never match)")
            return None
        good: list[str] = []
        for i, item in enumerate(items):
            where = at if isinstance(value, str) else f"{at}[{i}]"
            if not isinstance(item, str):
                self.err(where, f"expected a string, got {_kind(item)}")
            elif not item.strip():
                self.err(where, "empty string")
            else:
                good.append(item.strip())
        return tuple(good) if len(good) == len(items) else None

    def addresses(self, value: object, at: str) -> tuple[str, ...] | None:
        items = self.strings(value, at)
        if items is None:
            return None
        bad = [p for p in items if "@" not in p]
        for p in bad:
            hint = " (for a domain use from_domain)" if at.endswith(".from") else ""
            self.err(at, f'"{p}" is not an address or address pattern like "*@x.example"{hint}')
        return None if bad else tuple(dict.fromkeys(p.lower() for p in items))

    def domains(self, value: object, at: str) -> tuple[str, ...] | None:
        items = self.strings(value, at)
        if items is None:
            return None
        bad = [d for d in items if not _DOMAIN.fullmatch(d.lower().rstrip("."))]
        for d in bad:
            self.err(at, f'"{d}" is not a domain like "bank.example" (subdomains match too)')
        return None if bad else tuple(d.lower().rstrip(".") for d in items)

    def regex(self, source: str, at: str) -> re.Pattern[str] | None:
        if not source:
            self.err(at, "empty regex (it would match every mail)")
            return None
        try:
            return re.compile(source)
        except re.error as exc:
            self.err(at, f"bad regex: {exc}")
            return None

    def headers(self, value: object, at: str) -> list[_Condition]:
        if not isinstance(value, dict):
            self.err(at, f'expected a table like {{ "X-Priority" = "1" }}, got {_kind(value)}')
            return []
        if not value:
            self.err(at, "empty table (name at least one header)")
            return []
        conds: list[_Condition] = []
        for name, spec in value.items():
            where = f"{at}.{name}"
            if not _HEADER_NAME.fullmatch(name):
                self.err(where, "not a header name")
                continue
            if isinstance(spec, bool):
                conds.append(_Header(where, name, present=spec))
                continue
            items = self.strings(spec, where)
            if items is None:
                continue
            equals: set[str] = set()
            regexes: list[re.Pattern[str]] = []
            ok = True
            for item in items:
                if len(item) >= 2 and item.startswith("/") and item.endswith("/"):
                    regex = self.regex(item[1:-1], where)
                    ok = ok and regex is not None
                    if regex is not None:
                        regexes.append(regex)
                elif _REGEX_WITH_FLAGS.fullmatch(item):
                    self.err(
                        where,
                        f'"{item}": flags after the closing "/" are not supported;'
                        ' write them inside, as in "/(?i)high/"',
                    )
                    ok = False
                else:
                    equals.add(item.casefold())
            if ok:
                shown = ", ".join(_quote(i) for i in items)
                conds.append(
                    _Header(
                        where, name, equals=frozenset(equals), regexes=tuple(regexes), shown=shown
                    )
                )
        return conds

    # -- actions

    def actions(self, table: Mapping[str, object]) -> Actions:
        for key in table:
            if key not in ACTIONS:
                self.err(f"then.{key}", f"unknown action (known: {', '.join(ACTIONS)})")
        ctx = self.ctx
        team = self.choice(table, "team", ctx.teams, "team", "teams")
        category = self.text(table, "category")
        priority = self.text(table, "priority")
        if priority is not None and priority not in PRIORITIES:
            self.err(
                "then.priority", f'unknown priority "{priority}" (expected {", ".join(PRIORITIES)})'
            )
            priority = None
        sla = self.choice(table, "sla", ctx.slas, "SLA policy", "policies")
        assign = self.assignee(table.get("assign"), team)
        tags: tuple[str, ...] = ()
        if "tags" in table:
            found = self.strings(table["tags"], "then.tags") or ()
            bad = [t for t in found if not _TAG.fullmatch(t)]
            for tag in bad:
                self.err(
                    "then.tags", f'"{tag}" is not a tag (1-64 characters, no spaces or commas)'
                )
            tags = () if bad else tuple(dict.fromkeys(found))
        stop = table.get("stop", True)
        if not isinstance(stop, bool):
            self.err("then.stop", f"expected true or false, got {_kind(stop)}")
            stop = True
        if stop is False and not any(k in table for k in ACTIONS if k != "stop"):
            self.err("then", "no actions and stop = false: the rule would do nothing")
        return Actions(team, category, priority, tags, sla, assign, stop)

    def text(self, table: Mapping[str, object], key: str) -> str | None:
        value = table.get(key)
        if value is None:
            return None
        if not isinstance(value, str):
            self.err(f"then.{key}", f"expected a string, got {_kind(value)}")
            return None
        if not value.strip():
            self.err(f"then.{key}", "empty string")
            return None
        return value.strip()

    def choice(
        self, table: Mapping[str, object], key: str, known: frozenset[str], what: str, plural: str
    ) -> str | None:
        value = self.text(table, key)
        if value is not None and value not in known:
            listed = _join(known) if known else "none defined"
            self.err(f"then.{key}", f'unknown {what} "{value}" ({plural}: {listed})')
            return None
        return value

    def assignee(self, value: object, team: str | None) -> str | None:
        if value is None:
            return None
        at = "then.assign"
        if not isinstance(value, str):
            self.err(at, f"expected a string, got {_kind(value)}")
            return None
        wanted = value.strip().lower()
        if wanted in ASSIGN_STRATEGIES:
            return wanted
        if "@" not in wanted:
            self.err(
                at,
                f'unknown assignment "{value}" (expected {", ".join(ASSIGN_STRATEGIES)}'
                " or an agent's address)",
            )
            return None
        agent = self.agents.get(wanted)
        if agent is None:
            listed = _join(self.ctx.agents) if self.ctx.agents else "none defined"
            self.err(at, f'unknown agent "{value}" (agents: {listed})')
            return None
        members = self.ctx.team_members.get(team) if team is not None else None
        if members is not None and wanted not in {m.lower() for m in members}:
            self.err(
                at,
                f'agent "{agent}" is not a member of team "{team}"'
                f" (members: {_join(members) or 'none'})",
            )
            return None
        return agent
