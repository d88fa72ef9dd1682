"""Admin commands: check, db, run, deliver, import, status, demo."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from inboxd.cli import dbops
from inboxd.cli.common import STATE, emit_json
from inboxd.errors import ConfigError, InboxdError, TempFail

db_app = typer.Typer(help="Database schema and backups.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.command("check")(check)
    app.command("run")(run)
    app.command("deliver")(deliver)
    app.command("import")(import_mail)
    app.command("status")(status)
    app.command("demo")(demo)
    app.add_typer(db_app, name="db")
    dbops.register(db_app)


def check() -> None:
    """Validate inboxd.toml and the rules folder; every problem, one line each (exit 1)."""
    from inboxd.config import check_config, load_settings
    from inboxd.tickets.routing import check_rules
    from inboxd.wiring import routing_context

    path = STATE.config_path
    findings = [str(f) for f in check_config(path)]
    settings = None
    if not findings:
        settings = load_settings(path)
        findings += [
            str(e)
            for e in check_rules(
                settings.inboxd.rules, routing_context(settings), display_base=settings.base_dir
            )
        ]
        from inboxd.tickets import templates

        findings += templates.check(settings)
    for line in findings:
        print(line)  # noqa: T201 - linter-style findings on stdout
    if findings:
        raise typer.Exit(1)
    assert settings is not None
    from inboxd.tickets.routing import load_rules

    rules, _ = load_rules(settings.inboxd.rules, routing_context(settings))
    print(  # noqa: T201
        f"{path.name}: ok ({len(settings.mailboxes)} mailboxes, {len(settings.teams)} teams, "
        f"{len(rules)} rules)"
    )


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Create or upgrade the database schema (safe to run again: a no-op when current)."""
    from inboxd.db import upgrade

    before, after = upgrade(STATE.settings.inboxd.database)
    if before == after:
        print(f"database schema is current (revision {after})")  # noqa: T201
    else:
        print(f"database schema upgraded: {before or 'empty'} -> {after}")  # noqa: T201


def run(
    once: Annotated[
        bool,
        typer.Option("--once", help="Sync every mailbox once, do the scheduled work once, exit."),
    ] = False,
    log_format: Annotated[str, typer.Option("--log-format", help="text (key=value) or json.")] = "",
) -> None:
    """Run the daemon: pull every mailbox, open and route tickets, until SIGTERM."""
    from inboxd import daemon, logs

    settings = STATE.settings
    fmt = log_format or settings.inboxd.log_format
    if fmt not in ("text", "json"):
        raise ConfigError(f"--log-format: unknown format {fmt!r} (expected text or json)")
    logs.setup(fmt, settings.inboxd.log_level)  # type: ignore[arg-type]
    if once:
        done = daemon.run_once(settings)
        results = done.mailboxes
        failed = [name for name, n in results.items() if n is None]
        for name, n in results.items():
            print(f"{name}: {'not synced (see `inboxd status`)' if n is None else f'{n} new'}")  # noqa: T201
        sent = done.outbox
        summary = (
            f"outbox: {sent['sent']} sent, {sent['deferred']} deferred, {sent['failed']} failed"
        )
        if sent.get("requeued"):
            summary += f", {sent['requeued']} requeued from a dead sender"
        print(summary)  # noqa: T201
        if failed and len(failed) == len(results):
            raise InboxdError("no mailbox could be synced (see `inboxd status`)")
        return
    daemon.serve(settings)


def deliver(
    mailbox: Annotated[
        str, typer.Option("--mailbox", "-m", help="The mailbox this mail was sent to.")
    ],
) -> None:
    """Store one message from stdin (MTA pipe). Exit 0 once committed, 75 to make the MTA retry."""
    from inboxd.cli.ingest import deliver_stdin

    # Every failure, an admin's config mistake included, is a temporary one for the MTA:
    # it keeps the mail and retries, where any other exit code would bounce it.
    try:
        settings = STATE.settings
        settings.mailbox(mailbox)
        outcome = deliver_stdin(settings, mailbox, sys.stdin.buffer)
    except InboxdError as exc:
        raise TempFail(str(exc)) from exc
    except Exception as exc:
        raise TempFail(f"could not store the message: {type(exc).__name__}: {exc}") from exc
    print(outcome, file=sys.stderr)  # noqa: T201


def import_mail(
    path: Annotated[
        Path, typer.Argument(help="An mbox file, a Maildir, a folder of .eml files, or one .eml.")
    ],
    mailbox: Annotated[
        str, typer.Option("--mailbox", "-m", help="Record the mail as delivered to this mailbox.")
    ],
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """Backfill from mbox/Maildir; safe to run twice (duplicates are skipped)."""
    from inboxd.cli.ingest import import_path

    summary = import_path(STATE.settings, mailbox, path, progress=not as_json)
    if as_json:
        emit_json(summary)
    else:
        print(  # noqa: T201
            f"{path}: {summary['stored']} stored, {summary['duplicates']} duplicates skipped, "
            f"{summary['quarantined']} quarantined, {summary['tickets']} new tickets"
        )


def status(
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Daemons, mailboxes (last good sync, lag, last error), quarantine, outbox backlog,
    open incidents. Exit 1 when unhealthy."""
    from inboxd.cli.health import render, report

    doc = report(STATE.settings, STATE.engine)
    if as_json:
        emit_json(doc)
    else:
        render(doc)
    if not doc["healthy"]:
        raise typer.Exit(1)


def demo(
    folder: Annotated[
        Path, typer.Option("--dir", help="Where to write the demo config and database.")
    ] = Path("inboxd-demo"),
) -> None:
    """Try inboxd on embedded defaults: a SQLite demo fed with bundled sample mail."""
    from inboxd.cli.demo import run_demo

    run_demo(folder)
