"""`inboxd customer export|erase`: a person's data, handed over or removed (GDPR art. 15, 17)."""

from __future__ import annotations

import getpass
import json
import os
import re
from pathlib import Path
from typing import Annotated, Any

import typer

from inboxd.cli.common import STATE, emit_json
from inboxd.errors import ConfigError, InboxdError

app = typer.Typer(no_args_is_help=True)


def _address(value: str) -> str:
    from inboxd.tickets.privacy import normalise

    address = normalise(value)
    local, at, domain = address.rpartition("@")
    if not at or not local or not domain or any(c.isspace() for c in address):
        raise ConfigError(f"not an e-mail address: {value!r} (an address like name@example.com)")
    return address


def _not_ours(address: str) -> None:
    """Agents and inboxd's own mailboxes are configuration, not customers."""
    settings = STATE.settings
    if settings.mailbox_for(address) is not None:
        raise InboxdError(f"{address} is one of inboxd's own mailbox addresses, not a customer")
    if address in settings.agents():
        raise InboxdError(f"{address} is an agent in the config, not a customer")


def _default_folder(address: str) -> Path:
    safe = re.sub(r"[^a-z0-9@._+-]", "_", address).lstrip(".") or "customer"
    return Path(f"inboxd-export-{safe}")


@app.command("export")
def export(
    address: Annotated[str, typer.Argument(help="The customer's e-mail address.")],
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="Folder to write (default ./inboxd-export-ADDRESS)."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the manifest as JSON.")] = False,
) -> None:
    """Write every message (raw .eml) and ticket of ADDRESS, with a manifest."""
    from inboxd.clock import utcnow
    from inboxd.db import session_scope
    from inboxd.tickets import privacy

    addr = _address(address)
    folder = output if output is not None else _default_folder(addr)
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise InboxdError(f"{folder} exists and is not an empty folder (choose another with -o)")
    with session_scope(STATE.engine) as s:
        result = privacy.export(s, address=addr, now=utcnow())
    manifest = write_export(result, folder)
    if as_json:
        emit_json(manifest | {"folder": str(folder)})
        return
    counts = manifest["counts"]
    purged = f", {counts['raw_purged']} without raw mail (purged)" if counts["raw_purged"] else ""
    print(  # noqa: T201
        f"{folder}: {counts['tickets']} tickets, {counts['files']} messages{purged}"
        + ("" if counts["messages"] or counts["tickets"] else f" (nothing stored for {addr})")
    )


def write_export(result: Any, folder: Path) -> dict[str, Any]:
    """Write the files of a `privacy.CustomerExport`; private to the running user (0700/0600).

    Every path is built from row ids by `privacy.message_path`; a path that would leave
    `folder` anyway is refused, never written.
    """
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    root = folder.resolve()
    for m in result.messages:
        if m.data is None:
            continue
        target = (root / m.path).resolve()
        if not target.is_relative_to(root):
            raise InboxdError(f"refusing to write outside {folder}: {m.path}")
        target.parent.mkdir(mode=0o700, exist_ok=True)
        _write(target, m.data)
    manifest: dict[str, Any] = result.manifest()
    _write(root / "tickets.json", _json(result.tickets))
    _write(root / "manifest.json", _json(manifest))
    return manifest


def _json(doc: Any) -> bytes:
    return (json.dumps(doc, ensure_ascii=False, indent=2, default=str) + "\n").encode()


def _write(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


@app.command("erase")
def erase(
    address: Annotated[str, typer.Argument(help="The customer's e-mail address.")],
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """Erase ADDRESS: their mail, addresses and names; ticket metrics stay, anonymised."""
    from inboxd.clock import utcnow
    from inboxd.db import session_scope
    from inboxd.tickets import privacy, tokens

    addr = _address(address)
    _not_ours(addr)
    if not yes:
        typer.confirm(
            f"Erase every message, address and name of {addr}? This cannot be undone",
            abort=True,
            err=True,
        )
    with session_scope(STATE.engine) as s:
        secret = tokens.reply_secret(s, STATE.settings.inboxd.secret())
        result = privacy.erase(
            s, address=addr, secret=secret, now=utcnow(), actor=f"cli:{_operator()}"
        )
    if as_json:
        emit_json(result.as_dict())
        return
    if not result.changed:
        print(f"nothing (left) to erase for {addr}")  # noqa: T201
        return
    mentions = sum(result.mentions.values())
    print(  # noqa: T201
        f"erased {addr} as {result.token}: {result.messages} messages, "
        f"{result.customer_tickets} customer tickets anonymised, "
        f"{result.participants} participant rows, {result.outbox} outgoing mails, "
        f"{mentions} other mentions; {result.tickets} tickets keep an `erased` event"
    )


def _operator() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (containers)
        return str(os.getuid())
