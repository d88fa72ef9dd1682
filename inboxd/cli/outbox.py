"""`inboxd outbox ...`: outgoing mail as rows, what became of each, and a manual retry."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

import typer

from inboxd.cli.common import STATE, emit_json

app = typer.Typer(no_args_is_help=True)


class Status(StrEnum):
    queued = "queued"
    sending = "sending"
    sent = "sent"
    failed = "failed"


@app.command("list")
def list_rows(
    status: Annotated[
        Status | None, typer.Option("--status", help="Only rows in this state.")
    ] = None,
    limit: Annotated[
        int, typer.Option("--limit", min=1, help="At most this many, newest first.")
    ] = 100,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Outgoing mail, newest first: where it goes, its state, retries and last error."""
    from inboxd.db import session_scope
    from inboxd.tickets import outbox

    with session_scope(STATE.engine) as s:
        rows = outbox.listing(s, status=status.value if status else None, limit=limit)
    if as_json:
        emit_json(rows)
        return
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    console = Console()
    wide = console.width >= 120  # kind and created only where they fit
    table = Table(expand=True, show_edge=False)
    columns: list[tuple[str, int]] = [  # (name, ratio): 0 is as wide as its text
        ("id", 0),
        *([("kind", 0)] if wide else []),
        ("ticket", 0),
        ("to", 2),
        ("subject", 3),
        ("status", 0),
        ("tries", 0),
        ("next try", 0),
        ("last error", 3),
        *([("created", 0)] if wide else []),
    ]
    for name, ratio in columns:
        if ratio:  # the long texts wrap rather than vanish in a narrow terminal
            table.add_column(name, ratio=ratio, min_width=8, overflow="fold")
        else:
            table.add_column(name, no_wrap=True)
    for r in rows:
        cells = {
            "id": str(r["id"]),
            "kind": r["kind"],
            "ticket": str(r["ticket"]) if r["ticket"] is not None else "-",
            "to": ", ".join(r["to"]),
            "subject": r["subject"],
            "status": r["status"],
            "tries": str(r["attempts"]),
            "next try": _short(r["next_attempt_at"]),
            "last error": r["last_error"] or "",
            "created": _short(r["created_at"]),
        }
        table.add_row(*(Text(cells[name]) for name, _ in columns))  # Text: never rich markup
    console.print(table)


@app.command("retry")
def retry(
    row: Annotated[int, typer.Argument(help="Outbox row id (see `inboxd outbox list`).")],
) -> None:
    """Send a queued or failed row again, now; a running daemon picks it up within seconds."""
    from inboxd.clock import utcnow
    from inboxd.db import session_scope
    from inboxd.tickets import outbox

    with session_scope(STATE.engine) as s:
        was = outbox.retry(s, row_id=row, now=utcnow())
    print(  # noqa: T201 - the CLI's voice
        f"outbox row {row} queued again (was {was}); a running `inboxd run` sends it "
        "within seconds, or run `inboxd run --once`"
    )


def _short(at: str | None) -> str:
    """`2025-03-04T05:06:07+00:00` -> `03-04 05:06` (UTC), enough to read a queue."""
    return "-" if at is None else at[5:16].replace("T", " ")
