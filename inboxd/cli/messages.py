"""`inboxd message ...`: any stored message, on a ticket or not."""

from __future__ import annotations

from typing import Annotated

import typer

from inboxd.cli.common import STATE, emit_json

app = typer.Typer(no_args_is_help=True)


@app.command("show")
def show(
    message: Annotated[str, typer.Argument(help="A Message-ID (angle brackets optional) or #row.")],
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """A stored message: classification, ticket, mailboxes, quarantine state."""
    from rich.console import Console

    from inboxd.db import session_scope
    from inboxd.tickets import views

    with session_scope(STATE.engine) as s:
        doc = views.message_detail(s, message)
    if as_json:
        emit_json(doc)
        return
    console = Console()
    console.print(f"[bold]{doc['subject'] or '(no subject)'}[/bold]")
    for key in (
        "message_id",
        "from",
        "to",
        "cc",
        "date",
        "mailboxes",
        "classification",
        "ticket",
        "quarantined",
        "quarantine_reason",
    ):
        value = doc[key]
        if value not in (None, [], False):
            console.print(
                f"{key:>18}: {', '.join(value) if isinstance(value, list) else value}",
                highlight=False,
                markup=False,
            )
    console.print()
    console.print(doc["text"][:4000], highlight=False, markup=False)
