"""`inboxd rules ...`: check a rules folder, test it on a mail, replay it over stored tickets.

`check` and `test` need the config (teams, agents, SLA policies, mailboxes) but no
database; `replay` reads the database through a read-only session that is rolled back.
`--rules DIR` points any of them at another folder (a rule change under review) instead
of the one inboxd.toml names.
"""

from __future__ import annotations

import contextlib
import tomllib
import unicodedata
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from inboxd.cli.common import STATE, emit_json
from inboxd.errors import ConfigError, InboxdError

if TYPE_CHECKING:
    from rich.console import Console
    from sqlalchemy import Engine
    from sqlmodel import Session

    from inboxd.config import Mailbox, Settings
    from inboxd.mail.parse import ParsedMail
    from inboxd.tickets.classify import Classification
    from inboxd.tickets.replay import ReplayResult
    from inboxd.tickets.routing import Decision, RuleError, RuleSet, RuleTrace

app = typer.Typer(no_args_is_help=True)

RulesOption = Annotated[
    Path | None,
    typer.Option(
        "--rules",
        help="Rules folder to use instead of the one inboxd.toml names (e.g. a change to review).",
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]
# Fields a rule sets, in the order they are shown.
DECISION_FIELDS = ("team", "category", "priority", "tags", "sla", "assign")


# ---------------------------------------------------------------------------- check


@app.command("check")
def check(rules: RulesOption = None, as_json: JsonOption = False) -> None:
    """Validate the rules; every problem located.

    Each problem is one line, `file: rule "name": key: problem (expected)`; exit 1 when
    there is any, else a one-line summary. Needs no database.
    """
    from inboxd.tickets.routing import load_rules
    from inboxd.wiring import routing_context

    settings = STATE.settings
    folder, base = _folder(settings, rules)
    ruleset, errors = load_rules(folder, routing_context(settings), display_base=base)
    errors = sorted(errors, key=lambda e: e.file)  # by file; in a file, as written (stable)
    files = _rule_files(folder)
    written = sum(_count_entries(p) for p in files)
    shown = _shown_folder(folder, base)
    if as_json:
        emit_json(
            {
                "ok": not errors,
                "folder": shown,
                "files": len(files),
                "rules": len(ruleset),
                "disabled": max(written - len(ruleset), 0) if not errors else None,
                "errors": [_error_doc(e) for e in errors],
            }
        )
    else:
        for error in errors:
            print(_printable(str(error)))  # noqa: T201 - linter-style findings on stdout
        if not errors:
            disabled = written - len(ruleset)
            extra = f", {disabled} disabled" if disabled > 0 else ""
            what = f"{_plural(len(ruleset), 'rule')} in {_plural(len(files), 'file')}{extra}"
            print(f"{shown}: ok ({what})")  # noqa: T201
    if errors:
        raise typer.Exit(1)


def _error_doc(error: RuleError) -> dict[str, Any]:
    return {
        "file": error.file,
        "rule": error.rule,
        "key": error.key,
        "problem": error.problem,
        "text": str(error),
    }


def _rule_files(folder: Path) -> list[Path]:
    """The files `load_rules` reads, in its order."""
    if not folder.is_dir():
        return []
    return sorted(
        (p for p in folder.iterdir() if p.suffix == ".toml" and not p.name.startswith(".")),
        key=lambda p: p.name,
    )


def _count_entries(path: Path) -> int:
    """`[[rule]]` tables written in a file (enabled or not); 0 when it does not load."""
    try:
        entries = tomllib.loads(path.read_text("utf-8")).get("rule", [])
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return 0
    return len(entries) if isinstance(entries, list) else 0


# ---------------------------------------------------------------------------- test


@app.command("test")
def route_mail(
    message: Annotated[Path, typer.Argument(help="A mail as a file (.eml, RFC 822).")],
    mailbox: Annotated[
        str | None,
        typer.Option(
            "--mailbox",
            "-m",
            help="Mailbox it arrived in (default: the one its To/Cc names, else the first).",
        ),
    ] = None,
    rules: RulesOption = None,
    as_json: JsonOption = False,
) -> None:
    """Route a mail file; show the decision and why.

    The decision (team, category, priority, tags, SLA, assignment, and the rule that set
    each), the classification (which decides the acknowledgement), and every rule in
    evaluation order: matched, not, or skipped after a stop, with what each condition
    saw. Needs no database.
    """
    from inboxd.tickets.classify import classify
    from inboxd.tickets.intake import NO_NEW_TICKET
    from inboxd.tickets.routing import explain

    settings = STATE.settings
    raw = _read_mail_file(message)
    mail = _parse(message, raw)
    box, chosen_by = _pick_mailbox(settings, mail, mailbox)
    ruleset = _checked_rules(settings, rules)
    decision, traces = explain(ruleset, mail, mailbox=box.name, default_team=box.default_team)
    verdict = classify(
        mail,
        raw,
        own_addresses=settings.own_addresses(),
        blocklist=settings.inboxd.sender_blocklist,
    )
    team_strategy = _team_strategy(settings, decision.team)
    doc = _test_doc(message, mail, box.name, chosen_by, verdict, decision, traces, ruleset)
    doc["decision"]["team_assignment"] = team_strategy
    doc["rules"] = _shown_folder(*_folder(settings, rules))
    doc["classification"]["opens_ticket"] = verdict.kind not in NO_NEW_TICKET
    if as_json:
        emit_json(doc)
    else:
        _render_test(doc)


def _read_mail_file(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise InboxdError(f"{path}: cannot read: {exc.strerror or exc}") from None


def _parse(path: Path, raw: bytes) -> ParsedMail:
    from inboxd.mail.parse import UnparsableMail, parse

    if not raw.strip():
        raise InboxdError(f"{path}: not a mail (the file is empty)")
    try:
        return parse(raw)
    except UnparsableMail as exc:
        raise InboxdError(f"{path}: not a mail inboxd can read ({_first_line(exc)})") from None
    except Exception as exc:  # noqa: BLE001 - a parser bug is the mail's problem, said in one line
        problem = f"{type(exc).__name__}: {_first_line(exc)}"
        raise InboxdError(f"{path}: not a mail inboxd can read ({problem})") from None


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return _printable(lines[0]) if lines else type(exc).__name__


def _pick_mailbox(settings: Settings, mail: ParsedMail, name: str | None) -> tuple[Mailbox, str]:
    """The mailbox to route as: --mailbox, else the first To then Cc address that is one
    of ours, else the first configured mailbox. Also says how it was chosen."""
    if name is not None:
        return settings.mailbox(name), "--mailbox"
    for header, addresses in (("To", mail.to), ("Cc", mail.cc)):
        for address in addresses:
            found = settings.mailbox_for(address.addr)
            if found is not None:
                return found, f"{header}: {address.addr}"
    if not settings.mailboxes:
        raise ConfigError("inboxd.toml defines no mailbox (add a [[mailbox]])")
    return settings.mailboxes[0], "the first mailbox: no To/Cc address is one of ours"


def _team_strategy(settings: Settings, team: str) -> str | None:
    for t in settings.teams:
        if t.name == team:
            return t.assignment
    return None


def _test_doc(
    path: Path,
    mail: ParsedMail,
    mailbox: str,
    chosen_by: str,
    verdict: Classification,
    decision: Decision,
    traces: tuple[RuleTrace, ...],
    ruleset: RuleSet,
) -> dict[str, Any]:
    """The stable `rules test --json` document."""
    stops = {r.name: r.stop for r in ruleset.rules}
    stopped_by = next((t.rule for t in traces if t.matched and stops.get(t.rule, True)), None)
    return {
        "file": str(path),
        "message_id": mail.message_id,
        "from": mail.from_.addr if mail.from_ else None,
        "to": [a.addr for a in mail.to],
        "cc": [a.addr for a in mail.cc],
        "subject": mail.subject,
        "mailbox": mailbox,
        "mailbox_chosen_by": chosen_by,
        "classification": {
            "kind": verdict.kind,
            "reasons": list(verdict.reasons),
            "acknowledge": verdict.may_acknowledge,
        },
        "decision": {
            "team": decision.team or None,
            "category": decision.category,
            "priority": decision.priority,
            "tags": list(decision.tags),
            "sla": decision.sla,
            "assign": decision.assign,
            "team_assignment": None,  # the team's own strategy, when no rule sets one
            "matched": list(decision.matched),
            "set_by": dict(decision.set_by),
        },
        "rules": str(ruleset.source),
        "stopped_by": stopped_by,
        "trace": [
            {
                "rule": t.rule,
                "file": t.file,
                "outcome": "skipped" if t.skipped else "matched" if t.matched else "no match",
                "matched": t.matched,
                "skipped": t.skipped,
                "stop": bool(t.matched and stops.get(t.rule, True)),
                "conditions": [
                    {"condition": c.condition, "matched": c.matched, "detail": c.detail}
                    for c in t.conditions
                ],
            }
            for t in traces
        ],
    }


def _render_test(doc: dict[str, Any]) -> None:
    console = _console()
    say = _printer(console)
    cls, dec = doc["classification"], doc["decision"]
    say(f"mail      {doc['file']}")
    say(f"          from {doc['from'] or '(none)'}, subject {_q(doc['subject'])}")
    say(f"mailbox   {doc['mailbox']} ({doc['mailbox_chosen_by']})")
    reasons = f" ({'; '.join(cls['reasons'])})" if cls["reasons"] else ""
    ack = "the sender gets an acknowledgement" if cls["acknowledge"] else "no acknowledgement"
    ticket = "" if cls["opens_ticket"] else "; never opens a ticket of its own (so no routing)"
    say(f"kind      {cls['kind']}{reasons}: {ack}{ticket}")
    say("")
    say("decision", style="bold")
    set_by = dec["set_by"]
    rows: list[tuple[str, str, str]] = []
    for name in DECISION_FIELDS:
        value, why = dec[name], set_by.get(name)
        if name == "tags":
            value = ", ".join(dec["tags"]) or "-"
            by = {t: set_by.get("tags." + t, "?") for t in dec["tags"]}
            if len(set(by.values())) == 1:
                reason = f"set by rule {_q(next(iter(by.values())))}"
            else:
                reason = "set by " + ", ".join(f"{_q(r)} ({t})" for t, r in by.items())
            reason = reason if by else "no rule set any"
        elif name == "team" and why == "default":
            reason = f"default team of mailbox {doc['mailbox']} (no rule set one)"
        elif why:
            reason = f"set by rule {_q(why)}"
        elif name == "assign":
            value = dec["team_assignment"] or "none"
            reason = f"team {dec['team']}'s own assignment (no rule set one)"
        else:
            reason = "no rule set it"
        rows.append((name, value or "-", reason))
    width = max(len(_printable(v)) for _, v, _ in rows)
    for name, value, reason in rows:
        say(f"  {name:<9} {_printable(value):<{width}}  {reason}")
    say("")
    say(f"rules ({len(doc['trace'])}, in evaluation order)", style="bold")
    if not doc["trace"]:
        say("  (no rules: every mail goes to its mailbox's default team)")
    for t in doc["trace"]:
        where = f"{t['rule']} ({t['file']})"
        if t["skipped"]:
            stopper = _q(doc["stopped_by"])
            say(f"  skipped   {where}: rule {stopper} stopped evaluation", style="dim")
            continue
        if t["matched"]:
            stop = "stop" if t["stop"] else "continue (stop = false)"
            say(f"  matched   {where}, {stop}", style="green")
        else:
            say(f"  no match  {where}")
        for c in t["conditions"]:
            mark = "✓" if c["matched"] else "✗"
            say(f"      {mark} {c['condition']}: {c['detail']}")


# ---------------------------------------------------------------------------- replay


@app.command("replay")
def replay(
    since: Annotated[
        str, typer.Option("--since", help='How far back: tickets created within, e.g. "30d".')
    ] = "30d",
    rules: RulesOption = None,
    as_json: JsonOption = False,
) -> None:
    """What the rules would change; writes nothing.

    Re-routes the first inbound mail of every ticket created within --since (parsed
    from its stored raw bytes) and counts each change of team, category and priority
    against the decision the ticket got when it was created.
    """
    from inboxd.clock import utcnow
    from inboxd.config import parse_duration
    from inboxd.tickets import replay as replaying

    settings = STATE.settings
    try:
        window = parse_duration(since)
    except ValueError as exc:
        raise ConfigError(f"--since: {exc}") from None
    ruleset = _checked_rules(settings, rules)
    try:
        start = utcnow() - window
    except OverflowError:  # "99999w": from the beginning
        start = datetime.min.replace(tzinfo=UTC)
    default_teams = {mb.name: mb.default_team for mb in settings.mailboxes}
    with _read_only_session(settings.inboxd.database) as session:
        total = replaying.count_tickets(session, since=start)
        with _progress(total, enabled=not as_json) as tick:
            result = replaying.replay(
                session, ruleset, since=start, default_teams=default_teams, progress=tick
            )
    folder, base = _folder(settings, rules)
    doc = _replay_doc(result, since, _shown_folder(folder, base))
    if as_json:
        emit_json(doc)
    else:
        _render_replay(doc)


def _replay_doc(result: ReplayResult, since: str, folder: str) -> dict[str, Any]:
    """The stable `rules replay --json` document."""
    return {
        "rules": folder,
        "since": result.since.isoformat(),
        "window": since,
        "compared_with": "routed-at-creation",
        "fields": list(result.fields),
        "tickets": result.tickets,
        "replayed": result.replayed,
        "changed": result.changed,
        "unchanged": result.unchanged,
        "changes": [
            {
                "field": c.field,
                "old": c.old,
                "new": c.new,
                "count": c.count,
                "rules": dict(c.rules),
                "tickets": list(c.tickets),
            }
            for c in result.changes
        ],
        "skipped": dict(result.skipped),
    }


def _render_replay(doc: dict[str, Any]) -> None:
    say = _printer(_console())
    since = datetime.fromisoformat(doc["since"]).strftime("%Y-%m-%d %H:%M UTC")
    say(
        f"replayed {doc['rules']} over {_plural(doc['replayed'], 'ticket')} created since "
        f"{since} (last {doc['window']})"
    )
    say(
        "compared with the decision each ticket got when it was created (its routed event),"
        " not its current fields"
    )
    say(f"{doc['changed']} would change, {doc['unchanged']} would not")
    for c in doc["changes"]:
        rules = ", ".join(
            f"{_q(name) if name not in ('', 'default') else name or 'no rule'} {n}"
            for name, n in c["rules"].items()
        )
        tickets = ", ".join(f"#{t}" for t in c["tickets"])
        more = ", ..." if c["count"] > len(c["tickets"]) else ""
        say(
            f"  {c['field']} {_value(c['old'])} -> {_value(c['new'])}: {c['count']}"
            f"  (by {rules}; tickets {tickets}{more})"
        )
    if doc["skipped"]:
        parts = ", ".join(f"{n} {reason}" for reason, n in doc["skipped"].items())
        say(f"skipped {sum(doc['skipped'].values())}: {parts}")


def _value(value: str | None) -> str:
    return "(none)" if value is None else value


@contextlib.contextmanager
def _progress(total: int, *, enabled: bool) -> Iterator[Any]:
    """A transient progress bar on stderr; yields the per-ticket callback."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    bar = Progress(
        TextColumn("replaying"),
        BarColumn(),
        MofNCompleteColumn(),
        console=Console(stderr=True),
        disable=not enabled,
        transient=True,
    )
    with bar:
        task = bar.add_task("replay", total=total)
        yield lambda: bar.advance(task)


@contextlib.contextmanager
def _read_only_session(url: str) -> Iterator[Session]:
    """A session that cannot write, rolled back at the end.

    SQLite: a deferred `BEGIN` (inboxd's engines take the write lock with `BEGIN
    IMMEDIATE`, which would stall a running daemon for the whole replay) and `PRAGMA
    query_only`. PostgreSQL: `SET TRANSACTION READ ONLY`.
    """
    from sqlmodel import Session

    from inboxd.db import require_schema

    engine = _read_only_engine(url)
    try:
        require_schema(engine)
        with Session(engine) as session:
            if engine.dialect.name == "postgresql":
                session.connection().exec_driver_sql("SET TRANSACTION READ ONLY")
            try:
                yield session
            finally:
                session.rollback()
    finally:
        engine.dispose()


def _read_only_engine(url: str) -> Engine:
    from sqlalchemy import create_engine, event
    from sqlalchemy.pool import NullPool

    from inboxd.db import BUSY_TIMEOUT_MS, is_sqlite, make_engine

    if not is_sqlite(url):
        return make_engine(url, pooled=False)
    engine = create_engine(
        url,
        poolclass=NullPool,
        connect_args={"timeout": BUSY_TIMEOUT_MS / 1000, "check_same_thread": False},
    )

    def pragmas(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # SQLAlchemy's "begin" event emits BEGIN itself
        dbapi_conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        dbapi_conn.execute("PRAGMA query_only=ON")

    def begin(conn: Any) -> None:
        conn.exec_driver_sql("BEGIN")

    event.listen(engine, "connect", pragmas)
    event.listen(engine, "begin", begin)
    return engine


# ---------------------------------------------------------------------------- shared


def _folder(settings: Settings, option: Path | None) -> tuple[Path, Path | None]:
    """The rules folder, and the base its files are shown relative to.

    The configured folder is shown relative to inboxd.toml's folder ("rules/x.toml"); a
    `--rules` folder as the admin typed it.
    """
    if option is not None:
        return option, None
    return settings.inboxd.rules, settings.base_dir


def _shown_folder(folder: Path, base: Path | None) -> str:
    if base is not None:
        with contextlib.suppress(ValueError):
            return folder.resolve().relative_to(base.resolve()).as_posix() or "."
    return folder.as_posix()


def _checked_rules(settings: Settings, option: Path | None) -> RuleSet:
    """The rule set of the folder; ConfigError naming the first problem when it fails
    the check (a set the daemon would refuse is not worth testing)."""
    from inboxd.tickets.routing import load_rules
    from inboxd.wiring import routing_context

    folder, base = _folder(settings, option)
    ruleset, errors = load_rules(folder, routing_context(settings), display_base=base)
    if errors:
        fix = "inboxd rules check" + (f" --rules {folder}" if option is not None else "")
        more = f"; {len(errors) - 1} more" if len(errors) > 1 else ""
        raise ConfigError(f"{_printable(str(errors[0]))} (run `{fix}`{more})")
    return ruleset


def _plural(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _q(text: str | None) -> str:
    return f'"{_printable(text or "")}"'


def _printable(text: str) -> str:
    """Mail and file text made safe for a terminal: control and bidi characters escaped."""
    if text.isprintable():
        return text
    return "".join(
        ch
        if ch.isprintable() or ch == " "
        else ch.encode("unicode_escape").decode("ascii")
        if unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp")
        else ch
        for ch in text
    )


def _console() -> Console:
    from rich.console import Console

    return Console(highlight=False)


def _printer(console: Console) -> Any:
    """print(text) without markup or wrapping, mail text escaped; style optional."""

    def say(text: str, *, style: str | None = None) -> None:
        console.print(_printable(text), markup=False, soft_wrap=True, style=style)

    return say
