"""`inboxd ticket search QUERY`: full-text search over subjects, bodies and addresses."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from inboxd.cli.common import STATE, emit_json
from inboxd.cli.tickets import app as ticket_app


@ticket_app.command("search")
def search(
    query: Annotated[
        str,
        typer.Argument(
            help='Words (all must match), "a phrase", -excluded, a or b. '
            "Addresses match too: alice@client.example, client.example."
        ),
    ],
    team: Annotated[str | None, typer.Option("--team", help="Only this team's tickets.")] = None,
    status: Annotated[
        list[str] | None,
        typer.Option("--status", help="Only this status (repeatable); default open and pending."),
    ] = None,
    assignee: Annotated[
        str | None, typer.Option("--assignee", help='Only tickets of this agent ("none": nobody).')
    ] = None,
    priority: Annotated[str | None, typer.Option("--priority", help="Only this priority.")] = None,
    tag: Annotated[str | None, typer.Option("--tag", help="Only tickets with this tag.")] = None,
    mailbox: Annotated[
        str | None, typer.Option("--mailbox", help="Only tickets that reached this mailbox.")
    ] = None,
    all_: Annotated[
        bool, typer.Option("--all", help="Any status (resolved and closed too).")
    ] = False,
    limit: Annotated[int, typer.Option("--limit", help="At most this many tickets.")] = 20,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Tickets whose mail matches QUERY, most relevant first, with the matching text."""
    from inboxd.clock import utcnow
    from inboxd.db import session_scope
    from inboxd.models import OPEN_STATUSES
    from inboxd.tickets.search import Filters
    from inboxd.tickets.search import search as run_search

    statuses: tuple[str, ...] | None = OPEN_STATUSES
    if status:
        statuses = tuple(status)
    elif all_:
        statuses = None
    filters = Filters(
        team=team,
        statuses=statuses,
        assignee=assignee,
        priority=priority,
        tag=tag,
        mailbox=mailbox,
    )
    with session_scope(STATE.engine) as s:
        docs = run_search(s, query, filters, limit, now=utcnow())
    if as_json:
        emit_json(docs)
        return
    _render(docs, searched_all=statuses is None)


def _render(docs: list[dict[str, Any]], *, searched_all: bool) -> None:
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    from inboxd.tickets.search import MARK_END, MARK_START

    console = Console(highlight=False)
    if not docs:
        hint = "" if searched_all else " (open and pending tickets; --all for every status)"
        console.print(f"no tickets match{hint}", markup=False)
        return
    table = Table(expand=True, show_edge=False, show_lines=True)
    for name in ("id", "status", "team", "assignee"):
        table.add_column(name, no_wrap=True, overflow="ellipsis", max_width=24)
    table.add_column("subject and match", ratio=1, overflow="fold")
    for d in docs:
        match = Text(d["subject"] or "(no subject)", style="bold")
        match.append("\n")
        match.append_text(_marked(d["snippet"], MARK_START, MARK_END))
        table.add_row(str(d["id"]), d["status"], d["team"] or "-", d["assignee"] or "-", match)
    console.print(table)


def _marked(text: str, start: str, end: str) -> Any:
    """The snippet with its « » marks turned into highlighting."""
    from rich.text import Text

    out = Text()
    rest = text
    while start in rest and end in rest.partition(start)[2]:
        before, _, tail = rest.partition(start)
        inside, _, rest = tail.partition(end)
        out.append(before)
        out.append(inside, style="reverse")
    out.append(rest)
    return out
