"""`inboxd demo`: a SQLite inboxd fed with the bundled sample mail, through the real intake."""

from __future__ import annotations

from email.parser import BytesHeaderParser
from email.utils import getaddresses
from importlib import resources
from pathlib import Path

from inboxd.cli.common import STATE

DEMO_CONFIG = """\
# inboxd demo configuration: two mailboxes fed by `inboxd deliver` / `inboxd import`
# (no IMAP server needed). See the inboxd.toml in the repository for every key.
[inboxd]
database = "sqlite:///demo.db"
rules = "rules"
timezone = "Europe/Oslo"

[smtp.default]
host = "127.0.0.1"
port = 2525
security = "none"

[[mailbox]]
name = "support"
address = "support@example.com"
default_team = "frontline"
smtp = "default"

[[mailbox]]
name = "billing"
address = "billing@example.com"
default_team = "billing"
smtp = "default"

[[team]]
name = "frontline"
members = ["ann@example.com", "bob@example.com"]
lead = "lea@example.com"
assignment = "round-robin"
sla = "standard"

[[team]]
name = "billing"
members = ["carl@example.com"]
lead = "lea@example.com"
assignment = "least-loaded"
sla = "standard"

[calendar.office]
timezone = "Europe/Oslo"
hours.mon = "09:00-17:00"
hours.tue = "09:00-17:00"
hours.wed = "09:00-17:00"
hours.thu = "09:00-17:00"
hours.fri = "09:00-16:00"

[sla.standard]
calendar = "office"
first_response = "4h"
resolution = "3d"

[sla.urgent]
calendar = "24x7"
first_response = "1h"
resolution = "1d"
"""

DEMO_RULES = """\
[[rule]]
name = "refunds"
description = "Refunds and chargebacks go to billing"
when.subject = "(?i)\\\\b(refund|chargeback)\\\\b"
then.team = "billing"
then.category = "refund"
then.priority = "high"
then.tags = ["refund"]

[[rule]]
name = "outage"
description = "Anything that says it is down is urgent"
when.any = [ { subject = "(?i)\\\\b(urgent|down|outage)\\\\b" }, { body = "(?i)\\\\b503\\\\b" } ]
then.priority = "urgent"
then.sla = "urgent"
then.tags = ["outage"]
"""


def _mailbox_for(data: bytes, addresses: dict[str, str], default: str) -> str:
    headers = BytesHeaderParser().parsebytes(data)
    for _, addr in getaddresses(headers.get_all("to", []) + headers.get_all("cc", [])):
        if addr.lower() in addresses:
            return addresses[addr.lower()]
    return default


def run_demo(folder: Path) -> None:
    from rich.console import Console
    from sqlalchemy import func
    from sqlmodel import select

    from inboxd.cli import tickets as ticket_cli
    from inboxd.config import load_settings
    from inboxd.db import session_scope, upgrade
    from inboxd.models import Outbox
    from inboxd.tickets import intake

    console = Console(highlight=False)
    folder.mkdir(parents=True, exist_ok=True)
    config = folder / "inboxd.toml"
    if not config.exists():
        config.write_text(DEMO_CONFIG)
        (folder / "rules").mkdir(exist_ok=True)
        (folder / "rules" / "10-demo.toml").write_text(DEMO_RULES)
    settings = load_settings(config)
    upgrade(settings.inboxd.database)
    console.print(f"demo config: {config}  database: {settings.inboxd.database}", markup=False)

    from inboxd.daemon import open_runtime

    runtime = open_runtime(settings)
    by_address = {mb.address: mb.name for mb in settings.mailboxes}
    samples = sorted(
        (p for p in resources.files("inboxd.samples").iterdir() if p.name.endswith(".eml")),
        key=lambda p: p.name,
    )
    with session_scope(runtime.engine) as s:
        for sample in samples:
            data = sample.read_bytes()
            mailbox = _mailbox_for(data, by_address, settings.mailboxes[0].name)
            r = intake.receive(
                s, runtime.intake_config(), mailbox=mailbox, data=data, source="pipe"
            )
            where = f"ticket {r.ticket_id}" if r.ticket_id else "no ticket"
            console.print(
                f"{sample.name:<24} -> {mailbox:<8} {r.outcome:<11} {where} "
                f"[{r.classification or '-'}]",
                markup=False,
            )
        queued = s.exec(select(func.count()).select_from(Outbox)).one()
    runtime.engine.dispose()
    console.print(
        f"\n{queued} acknowledgements wait in the outbox (no SMTP server in the demo): "
        f"inboxd --config {config} outbox list",
        markup=False,
    )
    STATE.reset(config)
    ticket_cli.list_tickets(all_=True, as_json=False)
    console.print(f"\nNext: inboxd --config {config} ticket show 1", markup=False)
