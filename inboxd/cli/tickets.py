"""`inboxd ticket ...`: the queue and the conversation."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from inboxd.cli.common import STATE, emit_json
from inboxd.clock import utcnow
from inboxd.db import session_scope
from inboxd.tickets import views

app = typer.Typer(no_args_is_help=True)


@app.command("list")
def list_tickets(
    all_: Annotated[bool, typer.Option("--all", help="Every ticket, any status and team.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """The ticket queue."""
    with session_scope(STATE.engine) as s:
        docs = views.list_all(s, now=utcnow())
    if not all_:
        docs = [d for d in docs if d["status"] in ("open", "pending")]
    if as_json:
        emit_json(docs)
        return
    table = Table(expand=True, show_edge=False)
    for name, ratio in (
        ("id", 0),
        ("status", 0),
        ("pri", 0),
        ("team", 0),
        ("assignee", 1),
        ("customer", 2),
        ("subject", 4),
    ):
        table.add_column(name, ratio=ratio or None, no_wrap=True, overflow="ellipsis")
    for d in docs:
        table.add_row(
            str(d["id"]),
            d["status"],
            d["priority"],
            d["team"] or "-",
            d["assignee"] or "-",
            d["customer"] or "-",
            d["subject"],
        )
    Console().print(table)


@app.command("show")
def show(
    ticket: Annotated[int, typer.Argument(help="Ticket number.")],
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """The whole conversation, oldest first, and the ticket's events."""
    with session_scope(STATE.engine) as s:
        doc = views.ticket_detail(s, ticket, now=utcnow())
    if as_json:
        emit_json(doc)
        return
    _render(doc)


def _render(doc: dict[str, Any]) -> None:
    console = Console(highlight=False)
    console.print(f"[bold]#{doc['id']} {doc['subject']}[/bold]", markup=True)
    console.print(
        f"{doc['status']} · {doc['priority']} · team {doc['team'] or '-'} · "
        f"assignee {doc['assignee'] or '-'} · customer {doc['customer'] or '-'} · "
        f"mailboxes {', '.join(doc['mailboxes']) or '-'}",
        markup=False,
    )
    for m in doc["messages"]:
        label = {"in": "IN ", "out": "OUT", "note": "NOTE"}.get(m["direction"], m["direction"])
        kind = f" [{m['classification']}]" if m["classification"] not in (None, "human") else ""
        console.rule(f"{label} {m['from'] or '?'} · {m['date'] or m['received_at']}{kind}")
        console.print(m["text"].strip()[:8000] or "(no text)", markup=False)
        for a in m["attachments"]:
            console.print(
                f"  📎 {a['index']}: {a['filename']} ({a['content_type']}, {a['size']} B)",
                markup=False,
            )
    if doc["events"]:
        console.rule("events")
        for e in doc["events"]:
            console.print(f"{e['at']}  {e['actor']}  {e['kind']}", markup=False)
