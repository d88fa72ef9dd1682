"""Helpers for tests that drive inboxd end to end: configs, mail, the CLI, a daemon process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT.parent / "shared" / "corpus"


@dataclass(frozen=True)
class Box:
    """A mailbox for a test config: its name, address and IMAP account (None: pipe only)."""

    name: str
    address: str
    user: str | None = None
    password: str | None = None
    team: str = "frontline"
    on_processed: str = "keep"
    idle: bool = True
    poll_interval: str = "2s"


def write_config(
    folder: Path,
    *,
    database: str,
    boxes: Sequence[Box],
    imap_port: int = 143,
    smtp_port: int = 2525,
    rules: str = "",
    extra: str = "",
) -> Path:
    """A complete inboxd.toml for a test, with password files instead of secrets inline."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "rules").mkdir(exist_ok=True)
    if rules:
        (folder / "rules" / "10-test.toml").write_text(rules)
    parts = [
        f'[inboxd]\ndatabase = "{database}"\nrules = "rules"\ntimezone = "UTC"\n',
        f'[smtp.default]\nhost = "127.0.0.1"\nport = {smtp_port}\nsecurity = "none"\n',
    ]
    for b in boxes:
        parts.append(
            f'[[mailbox]]\nname = "{b.name}"\naddress = "{b.address}"\n'
            f'default_team = "{b.team}"\nsmtp = "default"\non_processed = "{b.on_processed}"\n'
        )
        if b.user is not None:
            pw = folder / f"{b.name}.password"
            pw.write_text(b.password or "")
            parts.append(
                f'imap = {{ host = "127.0.0.1", port = {imap_port}, security = "none", '
                f'username = "{b.user}", password_file = "{pw}", idle = {str(b.idle).lower()}, '
                f'poll_interval = "{b.poll_interval}" }}\n'
            )
    parts.append(
        '[[team]]\nname = "frontline"\nmembers = ["ann@example.com", "bob@example.com"]\n'
        'lead = "lea@example.com"\nassignment = "round-robin"\n'
        '[[team]]\nname = "billing"\nmembers = ["carl@example.com", "dina@example.com"]\n'
        'lead = "lea@example.com"\nassignment = "least-loaded"\n'
    )
    parts.append(extra)
    path = folder / "inboxd.toml"
    path.write_text("\n".join(parts))
    return path


def slow_mail(recipients: int = 100_000) -> bytes:
    """A well-formed mail that takes mail-parser seconds: 100,000 named recipients (2 MB)."""
    to = ", ".join(f'"Recipient {i}" <r{i}@example.com>' for i in range(recipients))
    return (
        f"From: a@example.com\r\nTo: support@example.com, {to}\r\nSubject: Everyone\r\n"
        "Message-ID: <everyone@example.com>\r\n\r\nHello all.\r\n"
    ).encode()


def make_mail(
    *,
    subject: str = "Help needed",
    sender: str = "customer@client.example",
    to: str = "support@example.com",
    body: str = "Hello, something is broken.",
    message_id: str | None = None,
    in_reply_to: str | None = None,
    headers: dict[str, str] | None = None,
) -> bytes:
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = to
    msg["Subject"] = subject
    msg["Date"] = format_datetime(datetime.now(UTC))
    msg["Message-ID"] = message_id or make_msgid(domain="client.example")
    if in_reply_to:
        msg["In-Reply-To"] = in_reply_to
        msg["References"] = in_reply_to
    for k, v in (headers or {}).items():
        msg[k] = v
    msg.set_content(body)
    return msg.as_bytes()


def cli(
    config: Path, *args: str, input: bytes | None = None, check: bool = True
) -> subprocess.CompletedProcess[bytes]:
    """Run `inboxd --config CONFIG ARGS...` in a child process, as a user would."""
    proc = subprocess.run(
        [sys.executable, "-m", "inboxd", "--config", str(config), *args],
        input=input,
        capture_output=True,
        timeout=300,
        check=False,
    )
    if check and proc.returncode != 0:
        pytest.fail(
            f"inboxd {' '.join(args)} exited {proc.returncode}: {proc.stderr.decode()[-2000:]}"
        )
    return proc


def cli_json(config: Path, *args: str) -> Any:
    return json.loads(cli(config, *args, "--json").stdout)


@contextmanager
def daemon(config: Path, *args: str) -> Iterator[subprocess.Popen[bytes]]:
    """`inboxd run` in the background; stopped with SIGTERM (must exit 0 within 5 s)."""
    log = open(config.parent / "daemon.log", "ab")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [sys.executable, "-m", "inboxd", "--config", str(config), "run", *args],
        stdout=log,
        stderr=log,
        start_new_session=True,
    )
    try:
        yield proc
    finally:
        stop([proc])
        log.close()


def stop(procs: Iterable[subprocess.Popen[bytes]], wait_s: float = 10.0) -> None:
    """SIGTERM every daemon still running, all at once; SIGKILL each one still there
    after `wait_s`."""
    procs = list(procs)
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.wait(wait_s)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def wait_for(
    predicate: Callable[[], Any],
    *,
    timeout: float = 20.0,
    every: float = 0.1,
    what: str = "condition",
) -> Any:
    """Poll until `predicate()` is truthy; fail with `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        time.sleep(every)


def daemon_log(config: Path) -> str:
    path = config.parent / "daemon.log"
    return path.read_text(errors="replace") if path.exists() else ""


def env_without(*names: str) -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in names}
