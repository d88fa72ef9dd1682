"""The `inboxd` command: global options, sub-command groups, errors as one line."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, NoReturn

import typer

import inboxd.cli.search  # noqa: F401 - registers `ticket search` on the ticket group
from inboxd.cli import admin, customer, messages, outbox, report, rules, tickets
from inboxd.cli.common import STATE, fail
from inboxd.errors import InboxdError

app = typer.Typer(
    name="inboxd",
    help="Shared-inbox email ticketing daemon.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=True,
    rich_markup_mode=None,
)


@app.callback()
def _global(
    config: Annotated[
        Path | None,
        typer.Option(
            "--config", "-c", help="Config file (default: $INBOXD_CONFIG or ./inboxd.toml)."
        ),
    ] = None,
    agent: Annotated[
        str | None,
        typer.Option(
            "--as",
            envvar="INBOXD_AGENT",
            help="The agent acting (an address of a team member or lead; $INBOXD_AGENT).",
            show_envvar=False,
        ),
    ] = None,
) -> None:
    STATE.reset(config, agent)


admin.register(app)
app.add_typer(tickets.app, name="ticket", help="Read and work tickets.")
app.add_typer(messages.app, name="message", help="Stored messages, whatever their ticket.")
app.add_typer(rules.app, name="rules", help="Check rules, test them on a mail, replay them.")
app.add_typer(outbox.app, name="outbox", help="Outgoing mail: its delivery state, retries.")
app.command("report")(report.report)
app.add_typer(
    customer.app, name="customer", help="A customer's data: export it, or erase it (GDPR)."
)


def main(argv: list[str] | None = None) -> NoReturn:
    """Entry point: user errors are one line on stderr, never a traceback."""
    try:
        rc = app(args=argv, prog_name="inboxd", standalone_mode=False)
    except InboxdError as exc:
        fail(str(exc), exc.exit_code)
    except typer.Abort:
        fail("aborted", 1)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.TyperException as exc:  # usage errors of Typer's bundled Click
        fail(exc.format_message(), getattr(exc, "exit_code", 2))
    except KeyboardInterrupt:
        fail("interrupted", 130)
    except BrokenPipeError:
        sys.exit(0)
    sys.exit(rc if isinstance(rc, int) else 0)
