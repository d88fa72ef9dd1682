"""`inboxd ticket ...`: the agent's queue, the conversation, and what agents do to tickets.

Each command is a thin face over `inboxd.tickets.queue`, `views` and `actions`: it reads
the options (and files, stdin or an editor), runs one function in one transaction and
prints the result. Modules a command does not need are imported inside it: `ticket
list` and `ticket show` are typed many times a day.
"""

from __future__ import annotations

import sys
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from inboxd.cli.common import STATE, emit_json
from inboxd.errors import ConfigError, InboxdError, NotFound

if TYPE_CHECKING:
    from rich.console import Console

    from inboxd.mail.compose import Attachment
    from inboxd.tickets.actions import Changed
    from inboxd.tickets.agents import Agent

app = typer.Typer(no_args_is_help=True)

JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]
TicketArg = Annotated[int, typer.Argument(help="Ticket number.", show_default=False)]
MessageOpt = Annotated[
    str | None, typer.Option("--message", "-m", help="The text (else --file, stdin or $EDITOR).")
]
FileOpt = Annotated[
    Path | None, typer.Option("--file", "-F", help="Read the text from this file ('-': stdin).")
]


# -- the queue -------------------------------------------------------------------------


@app.command("list")
def list_tickets(
    all_: Annotated[
        bool, typer.Option("--all", help="Every ticket, any status and team, unpaginated.")
    ] = False,
    team: Annotated[
        list[str] | None, typer.Option("--team", help="Only this team (repeatable).")
    ] = None,
    status: Annotated[
        list[str] | None,
        typer.Option("--status", help="Only this status (repeatable); default open and pending."),
    ] = None,
    assignee: Annotated[
        str | None, typer.Option("--assignee", help="me, nobody, or an agent's address.")
    ] = None,
    priority: Annotated[
        list[str] | None, typer.Option("--priority", help="Only this priority (repeatable).")
    ] = None,
    tag: Annotated[
        list[str] | None, typer.Option("--tag", help="Only tickets with this tag (repeatable).")
    ] = None,
    mailbox: Annotated[
        str | None, typer.Option("--mailbox", help="Only tickets that reached this mailbox.")
    ] = None,
    breaching: Annotated[
        bool, typer.Option("--breaching", help="Only open tickets past their SLA due.")
    ] = False,
    limit: Annotated[int, typer.Option("--limit", help="At most this many tickets.")] = 50,
    as_json: JsonOpt = False,
) -> None:
    """The queue: your teams' open and pending tickets, nearest SLA due first.

    With --as: the agent's teams; without: every team. --all lists every ticket.
    """
    # The read path imports no SQLAlchemy, ORM or pydantic models beyond the config's.
    from inboxd.cli import identity
    from inboxd.cli.common import read_scope
    from inboxd.clock import utcnow
    from inboxd.tickets import queue, views
    from inboxd.tickets.queue import NOBODY, OPEN_STATUSES, PRIORITIES, STATUSES

    config = STATE.read_config
    who = identity.current()
    now = utcnow()
    for name in team or ():
        if name not in {t.name for t in config.teams}:
            known = ", ".join(t.name for t in config.teams)
            raise NotFound(f"no team {name} (teams: {known})")
    for value, known_values, what in (
        *((s, STATUSES, "status") for s in status or ()),
        *((p, PRIORITIES, "priority") for p in priority or ()),
    ):
        if value not in known_values:
            raise ConfigError(f"unknown {what} {value!r} (expected {', '.join(known_values)})")
    teams: tuple[str, ...] | None = tuple(team) if team else None
    if teams is None and who is not None and not all_:
        teams = tuple(sorted(who.teams))
    mine: str | None = None
    if assignee is not None and assignee.lower() == "me":
        if who is None:
            identity.whoami()  # says who must be named
        assert who is not None
        mine = who.address
    elif assignee is not None and assignee.lower() not in NOBODY:
        mine = assignee.strip().lower()
    flt = queue.QueueFilter(
        statuses=tuple(status) if status else (STATUSES if all_ else OPEN_STATUSES),
        teams=teams,
        assignee=mine,
        unassigned=assignee is not None and assignee.lower() in NOBODY,
        priorities=tuple(priority or ()),
        tags=tuple(t.lower() for t in tag or ()),
        mailbox=mailbox,
        breaching=breaching,
    )
    with read_scope() as r:
        found = (
            queue.every_rows(r, flt, now=now)
            if all_
            else queue.page_rows(r, flt, now=now, limit=limit)
        )
        docs = views.ticket_docs(r, found, now=now)
        total = (
            len(docs) if all_ or as_json or len(docs) < limit else queue.count_rows(r, flt, now=now)
        )
    if as_json:
        emit_json(docs)
        return
    _queue_table(docs, total=total, now=now, who=who)


def _queue_table(
    docs: list[dict[str, Any]], *, total: int, now: datetime, who: Agent | None
) -> None:
    from rich.table import Table
    from rich.text import Text

    console = _console()
    if not docs:
        scope = f"{who.address}'s teams" if who is not None else "the queue"
        console.print(f"no tickets in {scope} match", markup=False, highlight=False)
        return
    table = Table(expand=True, show_edge=False, pad_edge=False, box=None, header_style="bold")
    # Narrow columns keep their width; customer and subject share what the terminal has.
    for name, kw in (
        ("id", {"justify": "right", "min_width": 2}),
        ("age", {"justify": "right", "min_width": 3}),
        ("sla", {"min_width": 8}),
        ("pri", {"min_width": 3}),
        ("team", {"min_width": 4, "max_width": 14}),
        ("assignee", {"min_width": 8, "max_width": 16}),
        ("customer", {"ratio": 2, "min_width": 8}),
        ("subject", {"ratio": 3, "min_width": 10}),
    ):
        table.add_column(name, no_wrap=True, overflow="ellipsis", **kw)
    for d in docs:
        table.add_row(
            str(d["id"]),
            _ago(now - datetime.fromisoformat(d["created_at"])),
            _sla_cell(d, now),
            Text(d["priority"], style=_PRIORITY_STYLE.get(d["priority"], "")),
            d["team"] or "-",
            (d["assignee"] or "-").partition("@")[0],  # agents are known by their name
            d["customer"] or "-",
            Text(d["subject"] or "(no subject)"),
        )
    console.print(table)
    if total > len(docs):
        console.print(
            f"{len(docs)} of {total} shown (--limit N for more)", style="dim", highlight=False
        )


_PRIORITY_STYLE = {"urgent": "bold red", "high": "yellow", "low": "dim"}
_SLA_STYLE = {"breached": "bold red", "warning": "yellow", "paused": "dim", "met": "green"}


def _sla_cell(doc: dict[str, Any], now: datetime) -> Any:
    from rich.text import Text

    state = doc["sla_state"]
    if state is None:
        return Text("-", style="dim")
    label = {"breached": "LATE", "warning": "warn"}.get(state, state)
    due = doc.get("sla_due")
    if due and state not in ("met", "paused"):
        left = datetime.fromisoformat(due) - now  # time left, or how late (LATE 2h05m)
        label += f" {_ago(abs(left))}"
    return Text(label, style=_SLA_STYLE.get(state, ""))


def _ago(delta: timedelta) -> str:
    """A duration in one or two units: 45s, 12m, 3h05m, 2d4h, 6w."""
    seconds = int(max(delta.total_seconds(), 0))
    if seconds < 60:
        return f"{seconds}s"
    minutes, hours, days = seconds // 60, seconds // 3600, seconds // 86400
    if minutes < 60:
        return f"{minutes}m"
    if hours < 24:
        return f"{hours}h{minutes % 60:02d}m"
    if days < 14:
        return f"{days}d{hours % 24}h"
    return f"{days // 7}w"


def _console() -> Console:
    from rich.console import Console

    return Console(highlight=False)


# -- the conversation -----------------------------------------------------------------------


@app.command("show")
def show(
    ticket: TicketArg,
    full: Annotated[
        bool, typer.Option("--full", help="Show quoted history too (collapsed by default).")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """The whole conversation, oldest first: mail in, replies out, internal notes, events."""
    from inboxd.cli import identity
    from inboxd.cli.common import read_scope
    from inboxd.clock import utcnow
    from inboxd.tickets import views

    identity.current()  # a wrong --as is said now, not silently ignored
    now = utcnow()
    with read_scope() as r:
        doc = views.ticket_detail(r, ticket, now=now)
    if as_json:
        emit_json(doc)
        return
    _render(doc, full=full, now=now)


_DIRECTION = {
    "in": ("IN", "bold cyan"),
    "out": ("OUT", "bold green"),
    "note": ("NOTE", "bold yellow"),
}


def _render(doc: dict[str, Any], *, full: bool, now: datetime) -> None:
    from rich.text import Text

    from inboxd.mail.text import reply_text

    console = _console()
    console.print(Text(f"#{doc['id']} {doc['subject'] or '(no subject)'}", style="bold"))
    facts = [
        doc["status"] + (f" into #{doc['merged_into']}" if doc["merged_into"] else ""),
        doc["priority"],
        f"team {doc['team'] or '-'}",
        f"assignee {doc['assignee'] or '-'}",
    ]
    console.print(" · ".join(facts), markup=False)
    sla_line = Text("SLA ")
    sla_line.append_text(_sla_cell(doc, now))
    if doc["sla_policy"]:
        sla_line.append(f" (policy {doc['sla_policy']})", style="dim")
    console.print(sla_line)
    customer = doc["customer"] or "-"
    if doc["customer_name"]:
        customer = f"{doc['customer_name']} <{customer}>"
    others = [p["address"] for p in doc.get("participants", []) if p["role"] != "customer"]
    console.print(
        f"customer {customer}" + (f" · cc {', '.join(others)}" if others else ""), markup=False
    )
    console.print(
        f"mailboxes {', '.join(doc['mailboxes']) or '-'}"
        + (f" · tags {', '.join(doc['tags'])}" if doc["tags"] else "")
        + (f" · follows #{doc['previous_ticket']}" if doc["previous_ticket"] else ""),
        markup=False,
    )
    for m in doc["messages"]:
        console.print()
        _render_message(console, m, full=full, reply_text=reply_text)
    if doc["events"]:
        console.print()
        console.rule(Text("events", style="dim"), align="left", style="dim")
        for e in doc["events"]:
            line = Text(f"{_short_time(e['at'])}  ", style="dim")
            line.append(f"{e['actor']}  ")
            line.append(e["kind"], style="bold red" if e["kind"] == "delivery-failure" else "bold")
            details = _event_details(e["data"])
            if details:
                line.append(f"  {details}")
            console.print(line)


def _render_message(console: Console, m: dict[str, Any], *, full: bool, reply_text: Any) -> None:
    from rich.text import Text

    label, style = _DIRECTION.get(m["direction"], (m["direction"].upper(), "bold"))
    head = Text(f"{label:<4} ", style=style)
    if m["direction"] == "note":
        head.append(f"{m['author'] or m['from'] or '?'} (internal, not sent)", style="yellow")
    elif m["direction"] == "out":
        who = f"{m['author']} via {m['from']}" if m["author"] else (m["from"] or "?")
        head.append(f"{who} → {', '.join(m['to'])}")
        if m["cc"]:
            head.append(f" cc {', '.join(m['cc'])}")
    else:
        sender = m["from"] or "?"
        head.append(f"{m['from_name']} <{sender}>" if m["from_name"] else sender)
    head.append(f"  {_short_time(m['date'] or m['received_at'])}", style="dim")
    kind = m["classification"]
    if kind not in (None, "human", "own"):
        head.append(f"  [{kind}]", style="magenta")
    if m["quarantined"]:
        head.append(f"  [quarantined: {m['quarantine_reason']}]", style="red")
    console.rule(style=style.replace("bold ", ""))
    console.print(head)
    bounce = m.get("bounce")
    if bounce:
        for r in bounce.get("recipients", []):
            console.print(
                Text(
                    f"delivery failure: {r.get('address')} {r.get('status') or ''} "
                    f"{'(temporary)' if r.get('temporary') else ''} {r.get('diagnostic') or ''}",
                    style="red",
                )
            )
    text = (m["text"] or "").rstrip()
    shown = text if full else reply_text(text).rstrip()
    console.print(Text(shown or "(no text)", style="" if shown else "dim"))
    if shown != text:
        console.print(Text("… quoted history hidden (--full shows it)", style="dim"))
    if m["attachments"]:
        # The name as `ticket attachment` saves it: no path, no bidi tricks (`gpj.exe`).
        from inboxd.mail.names import safe_filename

        for a in m["attachments"]:
            name = safe_filename(a.get("filename") or "", int(a.get("index", 0)))
            console.print(
                Text(
                    f"  [{a.get('number', a['index'])}] {name} "
                    f"({a.get('content_type', '?')}, {_size(a.get('size', 0))})",
                    style="blue",
                )
            )


def _short_time(value: str | None) -> str:
    if not value:
        return "?"
    at = datetime.fromisoformat(value)
    return at.strftime("%Y-%m-%d %H:%M ") + (at.strftime("%z") or "UTC")


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB"):
        if n < 1024 or unit == "MB":
            return f"{n} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return f"{n} B"


def _event_details(data: dict[str, Any]) -> str:
    parts = []
    for key, value in data.items():
        if value in (None, [], {}, ""):
            continue
        if isinstance(value, list) and value and isinstance(value[0], dict):
            value = ", ".join(str(v.get("address", v)) for v in value)
        elif isinstance(value, list):
            value = ", ".join(str(v) for v in value)
        elif isinstance(value, dict):
            value = ", ".join(f"{k}={v}" for k, v in value.items())
        parts.append(f"{key}={value}")
    return " ".join(parts)[:300]


@app.command("attachment")
def attachment(
    ticket: TicketArg,
    number: Annotated[
        int,
        typer.Argument(help="Attachment number, as `ticket show` lists it.", show_default=False),
    ],
    output: Annotated[
        Path | None,
        typer.Option(
            "--output",
            "-o",
            help="File to write, or a folder (the attachment's sanitised name is used in it). "
            "Default: stdout when it is not a terminal.",
        ),
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing file.")] = False,
) -> None:
    """Save attachment N of a ticket, decoded from the stored raw mail."""
    from inboxd.clock import utcnow
    from inboxd.db import session_scope
    from inboxd.mail.parse import UnparsableMail, attachment_payload, safe_filename
    from inboxd.models import RawMail
    from inboxd.tickets import views

    with session_scope(STATE.engine) as s:
        doc = views.ticket_detail(s, ticket, now=utcnow())
        found = [
            (m, a) for m in doc["messages"] for a in m["attachments"] if a.get("number") == number
        ]
        if not found:
            count = sum(len(m["attachments"]) for m in doc["messages"])
            raise NotFound(f"ticket {ticket} has no attachment {number} (it has {count})")
        msg, meta = found[0]
        raw = s.get(RawMail, msg["id"])
        if raw is None or raw.data is None:
            raise InboxdError(
                f"the raw mail of message {msg['id']} is no longer stored: attachment {number} "
                "cannot be recovered"
            )
        data = bytes(raw.data)
    try:
        _meta, payload = attachment_payload(data, int(meta["index"]))
    except (UnparsableMail, IndexError) as exc:
        raise InboxdError(f"cannot read attachment {number}: {exc}") from None
    name = safe_filename(meta.get("filename") or "", int(meta["index"]))
    if output is None:
        if sys.stdout.isatty():
            raise ConfigError(
                f"attachment {number} ({name}) is binary: pass -o FILE or -o FOLDER, or pipe it"
            )
        sys.stdout.buffer.write(payload)
        sys.stdout.flush()
        return
    # The sender's file name is only ever a name inside the folder the agent chose.
    target = output / name if output.is_dir() else output
    try:
        with open(target, "wb" if force else "xb") as fh:
            fh.write(payload)
    except FileExistsError:
        raise InboxdError(f"{target} exists (--force overwrites it)") from None
    except OSError as exc:
        raise InboxdError(f"cannot write {target}: {exc.strerror}") from None
    print(f"saved {target} ({_size(len(payload))})")  # noqa: T201


# -- actions ---------------------------------------------------------------------------------


def _text(
    message: str | None, file: Path | None, *, what: str, ticket: int, prefill: str = ""
) -> str:
    """The text of a reply or note: -m, --file, stdin when piped, else $EDITOR."""
    if message is not None and file is not None:
        raise ConfigError("give the text once: -m or --file, not both")
    if message is not None:
        return message
    if file is not None:
        if str(file) == "-":
            return sys.stdin.read()
        try:
            return file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise InboxdError(f"cannot read {file}: {getattr(exc, 'strerror', exc)}") from None
    if not sys.stdin.isatty():
        return sys.stdin.read()
    return _edit(what=what, ticket=ticket, prefill=prefill)


def _edit(*, what: str, ticket: int, prefill: str) -> str:
    """Open $VISUAL/$EDITOR on a draft; lines starting with '#' are dropped."""
    import os
    import shlex
    import subprocess
    import tempfile

    editor = os.environ.get("VISUAL") or os.environ.get("EDITOR") or "vi"
    header = (
        f"\n# Write your {what} for ticket {ticket} above. Lines starting with '#' are "
        "dropped;\n# an empty text cancels.\n" + prefill
    )
    fd, name = tempfile.mkstemp(prefix=f"inboxd-{ticket}-", suffix=".txt")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(header)
        done = subprocess.run([*shlex.split(editor), name], check=False)
        if done.returncode != 0:
            raise InboxdError(f"{editor} exited with status {done.returncode}; nothing sent")
        text = Path(name).read_text(encoding="utf-8")
    finally:
        Path(name).unlink(missing_ok=True)
    return "\n".join(line for line in text.splitlines() if not line.startswith("#")).strip()


def _attachments(paths: list[Path] | None) -> list[Attachment]:
    import mimetypes

    from inboxd.mail.compose import Attachment

    out: list[Attachment] = []
    for path in paths or ():
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise InboxdError(f"cannot attach {path}: {exc.strerror}") from None
        ctype = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        out.append(Attachment(filename=path.name, content_type=ctype, data=data))
    return out


def _context_of(ticket: int) -> str:
    """The last customer mail, as '#' lines under the editor draft."""
    from inboxd.db import session_scope
    from inboxd.mail.text import reply_text
    from inboxd.tickets import actions

    with session_scope(STATE.engine) as s:
        last = actions._last_inbound(s, ticket)
        if last is None:
            return ""
        lines = reply_text(last.text or "").splitlines()[:40]
        return f"#\n# {last.from_addr} wrote:\n" + "".join(f"#   {line}\n" for line in lines)


@app.command("reply")
def reply(
    ticket: TicketArg,
    message: MessageOpt = None,
    file: FileOpt = None,
    template: Annotated[
        str | None,
        typer.Option("--template", "-t", help="A canned response: <templates>/canned/NAME.txt."),
    ] = None,
    attach: Annotated[
        list[Path] | None, typer.Option("--attach", "-a", help="Attach a file (repeatable).")
    ] = None,
    no_cc: Annotated[
        bool, typer.Option("--no-cc", help="Only the customer; leave other participants out.")
    ] = False,
    status: Annotated[
        str | None,
        typer.Option("--status", help="Then set this status (e.g. pending: waiting on them)."),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Reply to the customer; the daemon's outbox sends it (threaded, with the reply token)."""
    from dataclasses import asdict

    from inboxd.cli import identity
    from inboxd.clock import utcnow
    from inboxd.db import session_scope
    from inboxd.tickets import actions

    who = identity.whoami()
    if template is not None:
        if message is not None or file is not None:
            raise ConfigError("give the text once: --template, -m or --file")
        with session_scope(STATE.engine) as s:
            text = actions.canned(STATE.settings, template, session=s, ticket_id=ticket, who=who)
    else:
        prefill = _context_of(ticket) if message is None and file is None else ""
        text = _text(message, file, what="reply", ticket=ticket, prefill=prefill)
    files = _attachments(attach)
    with session_scope(STATE.engine) as s:
        done = actions.reply(
            s,
            settings=STATE.settings,
            who=who,
            ticket_id=ticket,
            text=text,
            now=utcnow(),
            attachments=files,
            cc=not no_cc,
            status=status,
        )
    if as_json:
        emit_json(asdict(done))
        return
    cc = f" (cc {', '.join(done.cc)})" if done.cc else ""
    files_note = f", {len(done.attachments)} attachment(s)" if done.attachments else ""
    print(  # noqa: T201
        f"ticket {done.ticket_id}: reply to {', '.join(done.to)}{cc}{files_note} queued "
        f"as outbox #{done.outbox_id}; status {done.status}"
        + ("; assigned to you" if done.assigned else "")
    )


@app.command("note")
def note(
    ticket: TicketArg,
    message: MessageOpt = None,
    file: FileOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Add an internal note: agents see it in `ticket show`; it is never mailed."""
    from dataclasses import asdict

    from inboxd.cli import identity
    from inboxd.clock import utcnow
    from inboxd.db import session_scope
    from inboxd.tickets import actions

    who = identity.whoami()
    text = _text(message, file, what="note", ticket=ticket)
    with session_scope(STATE.engine) as s:
        done = actions.note(s, who=who, ticket_id=ticket, text=text, now=utcnow())
    if as_json:
        emit_json(asdict(done))
        return
    print(f"ticket {done.ticket_id}: note added (internal, not sent)")  # noqa: T201


def _changed(done: Changed, *, as_json: bool) -> None:
    from dataclasses import asdict

    if as_json:
        emit_json(asdict(done))
        return

    def show(value: Any) -> str:
        if isinstance(value, list):
            return ", ".join(value) or "(none)"
        return "nobody" if value is None else str(value)

    if done.changed:
        line = f"ticket {done.ticket_id}: {done.field} {show(done.old)} -> {show(done.new)}"
    else:
        line = f"ticket {done.ticket_id}: {done.field} already {show(done.new)} (nothing changed)"
    print(line)  # noqa: T201


def _act(name: str, **kw: Any) -> Changed:
    """Run action `name` as the acting agent, in one transaction."""
    from inboxd.cli import identity
    from inboxd.clock import utcnow
    from inboxd.db import session_scope
    from inboxd.tickets import actions

    who = identity.whoami()
    with session_scope(STATE.engine) as s:
        result: Changed = getattr(actions, name)(s, who=who, now=utcnow(), **kw)
    return result


@app.command("claim")
def claim(ticket: TicketArg, as_json: JsonOpt = False) -> None:
    """Take an unassigned ticket of your team."""
    _changed(_act("claim", ticket_id=ticket), as_json=as_json)


@app.command("assign")
def assign(
    ticket: TicketArg,
    agent: Annotated[
        str, typer.Argument(help="An agent's address, me, or nobody.", show_default=False)
    ],
    as_json: JsonOpt = False,
) -> None:
    """Give a ticket to an agent of its team (to someone else: team leads only)."""
    from inboxd.cli import identity
    from inboxd.tickets.actions import NOBODY

    target: str | None = agent
    if agent.lower() == "me":
        target = identity.whoami().address
    elif agent.lower() in NOBODY:
        target = None
    done = _act("assign", settings=STATE.settings, ticket_id=ticket, assignee=target)
    _changed(done, as_json=as_json)


@app.command("transfer")
def transfer(
    ticket: TicketArg,
    team: Annotated[str, typer.Argument(help="The team to hand it to.", show_default=False)],
    as_json: JsonOpt = False,
) -> None:
    """Move a ticket to another team's queue (its assignment strategy applies)."""
    _changed(
        _act("transfer", settings=STATE.settings, ticket_id=ticket, team=team), as_json=as_json
    )


@app.command("status")
def status(
    ticket: TicketArg,
    new: Annotated[
        str, typer.Argument(help="open, pending, resolved or closed.", show_default=False)
    ],
    as_json: JsonOpt = False,
) -> None:
    """Set the status: pending pauses the SLA clocks; closed is final (a lead may reopen)."""
    done = _act("set_status", settings=STATE.settings, ticket_id=ticket, status=new.lower())
    _changed(done, as_json=as_json)


@app.command("priority")
def priority(
    ticket: TicketArg,
    new: Annotated[str, typer.Argument(help="low, normal, high or urgent.", show_default=False)],
    as_json: JsonOpt = False,
) -> None:
    """Set the priority."""
    _changed(_act("set_priority", ticket_id=ticket, priority=new), as_json=as_json)


@app.command("tag", context_settings={"ignore_unknown_options": True})
def tag(
    ticket: TicketArg,
    changes: Annotated[
        list[str], typer.Argument(help="+tag adds, -tag removes (a bare tag adds).")
    ],
    as_json: JsonOpt = False,
) -> None:
    """Add and remove tags: `inboxd ticket tag 12 +vip -spam`."""
    from inboxd.tickets.actions import parse_tag_changes

    add, remove = parse_tag_changes(changes)
    _changed(_act("tag", ticket_id=ticket, add=add, remove=remove), as_json=as_json)


@app.command("merge")
def merge(
    source: Annotated[int, typer.Argument(help="The ticket to merge away.", show_default=False)],
    into: Annotated[int, typer.Argument(help="The ticket that keeps both.", show_default=False)],
    reason: Annotated[str | None, typer.Option("--reason", help="Why (kept in events).")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Merge SOURCE into INTO (team leads): one conversation, replies keep threading."""
    from dataclasses import asdict

    from inboxd.cli import identity
    from inboxd.clock import utcnow
    from inboxd.db import session_scope
    from inboxd.tickets import actions

    who = identity.whoami()
    with session_scope(STATE.engine) as s:
        done = actions.merge(
            s,
            settings=STATE.settings,
            who=who,
            source_id=source,
            into_id=into,
            now=utcnow(),
            reason=reason,
        )
    if as_json:
        emit_json(asdict(done))
        return
    print(f"ticket {done.source} merged into ticket {done.into}")  # noqa: T201
