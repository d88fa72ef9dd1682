"""The newcomer's first command: `inboxd demo` runs the real intake on embedded defaults."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from support import cli_json


def test_demo_makes_the_promised_tickets(tmp_path: Path) -> None:
    folder = tmp_path / "demo"
    proc = subprocess.run(
        [sys.executable, "-m", "inboxd", "demo", "--dir", str(folder)],
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr.decode()
    config = folder / "inboxd.toml"
    tickets = {t["subject"]: t for t in cli_json(config, "ticket", "list", "--all")}
    printer = tickets["Printer driver crashes on startup"]
    assert printer["message_count"] == 3  # question, the reply that joined, our ack
    refund = tickets["Refund for order 88123"]
    assert (refund["team"], refund["priority"], refund["tags"]) == ("billing", "high", ["refund"])
    assert tickets["URGENT: API is down for all our users"]["priority"] == "urgent"
    stranger = tickets["Re: [#1] Printer driver crashes on startup"]
    assert stranger["id"] != printer["id"]  # a stranger's tag does not get into ticket 1
    assert not any("Automatic reply" in s for s in tickets)  # the vacation reply opened none
    # Running it again is safe: the same mail is recognised, nothing doubles.
    again = subprocess.run(
        [sys.executable, "-m", "inboxd", "demo", "--dir", str(folder)],
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert again.returncode == 0
    assert len(cli_json(config, "ticket", "list", "--all")) == len(tickets)
