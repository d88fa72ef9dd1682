"""The `inboxd` command: global options, sub-command groups, errors as one line.

Sub-commands load lazily: `inboxd ticket list` imports the ticket commands and nothing
else, since an agent types it many times a day and every module costs start-up time.
`COMMANDS` names each top-level command with its one-line help (what `inboxd --help`
lists without importing anything) and the function that registers it; a test holds the
table equal to what the registrations produce.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from typer.core import TyperCommand, TyperGroup

from inboxd.cli import coerce
from inboxd.cli.common import STATE, fail
from inboxd.errors import InboxdError

# The settings of the root command; a lazily built command is built under the same ones.
_APP_SETTINGS: dict[str, Any] = {
    "name": "inboxd",
    "help": "Shared-inbox email ticketing daemon.",
    "no_args_is_help": True,
    "pretty_exceptions_enable": False,
    "add_completion": True,
    "rich_markup_mode": None,
}


def _admin(app: typer.Typer) -> None:
    from inboxd.cli import admin

    admin.register(app)


def _report(app: typer.Typer) -> None:
    from inboxd.cli import report

    app.command("report")(report.report)


def _ticket(app: typer.Typer) -> None:
    from inboxd.cli import search, tickets  # search registers `ticket search` on the group

    del search
    app.add_typer(tickets.app, name="ticket", help="Read and work tickets.")


def _message(app: typer.Typer) -> None:
    from inboxd.cli import messages

    app.add_typer(messages.app, name="message", help="Stored messages, whatever their ticket.")


def _rules(app: typer.Typer) -> None:
    from inboxd.cli import rules

    app.add_typer(rules.app, name="rules", help="Check rules, test them on a mail, replay them.")


def _outbox(app: typer.Typer) -> None:
    from inboxd.cli import outbox

    app.add_typer(outbox.app, name="outbox", help="Outgoing mail: its delivery state, retries.")


def _customer(app: typer.Typer) -> None:
    from inboxd.cli import customer

    app.add_typer(
        customer.app, name="customer", help="A customer's data: export it, or erase it (GDPR)."
    )


@dataclass(frozen=True, slots=True)
class Entry:
    """A top-level command: its one-line help and what registers it on an app."""

    help: str
    register: Callable[[typer.Typer], None]


# In the order `inboxd --help` lists them (Typer lists commands, then groups).
COMMANDS: dict[str, Entry] = {
    "check": Entry(
        "Validate inboxd.toml and the rules folder; every problem, one line each (exit 1).",
        _admin,
    ),
    "run": Entry(
        "Run the daemon: pull every mailbox, open and route tickets, until SIGTERM.",
        _admin,
    ),
    "deliver": Entry(
        "Store one message from stdin (MTA pipe). Exit 0 once committed, 75 to make the MTA retry.",
        _admin,
    ),
    "import": Entry(
        "Backfill from mbox/Maildir; safe to run twice (duplicates are skipped).", _admin
    ),
    "status": Entry(
        "Daemons, mailboxes (last good sync, lag, last error), quarantine, outbox backlog, "
        "open incidents. Exit 1 when unhealthy.",
        _admin,
    ),
    "demo": Entry(
        "Try inboxd on embedded defaults: a SQLite demo fed with bundled sample mail.", _admin
    ),
    "report": Entry(
        "Support metrics for the tickets created since --since (backlog: every open ticket).",
        _report,
    ),
    "db": Entry("Database schema and backups.", _admin),
    "ticket": Entry("Read and work tickets.", _ticket),
    "message": Entry("Stored messages, whatever their ticket.", _message),
    "rules": Entry("Check rules, test them on a mail, replay them.", _rules),
    "outbox": Entry("Outgoing mail: its delivery state, retries.", _outbox),
    "customer": Entry("A customer's data: export it, or erase it (GDPR).", _customer),
}


def build(names: list[str]) -> dict[str, Any]:
    """The click commands of `names`, registered as the eager CLI registered them."""
    app = typer.Typer(**_APP_SETTINGS)
    done: set[Callable[[typer.Typer], None]] = set()
    for name in names:
        register = COMMANDS[name].register
        if register not in done:
            register(app)
            done.add(register)
    return dict(typer.main.get_group(app).commands)


class LazyGroup(TyperGroup):
    """The root group: a command's module is imported when that command runs.

    Listing commands (`inboxd --help`, completion, suggestions) reads `COMMANDS` only.
    """

    def list_commands(self, ctx: Any) -> list[str]:
        return [*self.commands, *(n for n in COMMANDS if n not in self.commands)]

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        if cmd_name not in self.commands and cmd_name in COMMANDS:
            for name, command in build([cmd_name]).items():
                self.commands.setdefault(name, command)
        return self.commands.get(cmd_name)

    def format_commands(self, ctx: Any, formatter: Any) -> None:
        # Typer's own listing, with each help taken from the table instead of an import.
        loaded = self.commands
        self.commands = {
            name: loaded.get(name) or TyperCommand(name=name, help=COMMANDS[name].help)
            for name in self.list_commands(ctx)
        }
        try:
            super().format_commands(ctx, formatter)
        finally:
            self.commands = loaded


app = typer.Typer(cls=LazyGroup, **_APP_SETTINGS)
coerce.install()  # parameters convert plain values without pydantic (see inboxd.cli.coerce)


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
