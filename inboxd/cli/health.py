"""`inboxd status`: is ingestion alive? A report an admin reads and a monitor can run."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from rich.console import Console
from rich.table import Table
from sqlalchemy import Engine, func
from sqlmodel import Session, col, select

from inboxd.clock import utcnow
from inboxd.config import Settings
from inboxd.db import session_scope
from inboxd.models import Daemon, Delivery, Incident, MailboxState, Message
from inboxd.tickets import outbox
from inboxd.tickets.views import iso

DAEMON_STALE_S = 60.0


def _age(now: datetime, at: datetime | None) -> float | None:
    return None if at is None else round((now - at).total_seconds(), 1)


def outbox_backlog(session: Session, now: datetime) -> dict[str, Any]:
    """The outbox backlog as `status --json` shows it."""
    b = outbox.backlog(session, now)
    return {
        "queued": b.queued,
        "held": b.held,
        "sending": b.sending,
        "failed": b.failed,
        "oldest_queued_at": iso(b.oldest_due_at),
        "oldest_queued_age_s": _age(now, b.oldest_due_at),
    }


def report(settings: Settings, engine: Engine) -> dict[str, Any]:
    now = utcnow()
    stale_s = settings.inboxd.stale_after.total_seconds()
    with session_scope(engine) as s:
        states = {r.name: r for r in s.exec(select(MailboxState)).all()}
        quarantined = dict(
            s.exec(
                select(Delivery.mailbox, func.count())
                .join(Message, col(Message.id) == col(Delivery.message_pk))
                .where(col(Message.quarantined).is_(True))
                .group_by(Delivery.mailbox)
            ).all()
        )
        daemons = s.exec(
            select(Daemon).where(col(Daemon.stopped_at).is_(None)).order_by(col(Daemon.started_at))
        ).all()
        backlog = outbox_backlog(s, now)
        incidents = [
            {
                "key": i.key,
                "kind": i.kind,
                "detail": i.detail,
                "opened_at": iso(i.opened_at),
                "alert_message_id": i.alert_message_id,
            }
            for i in s.exec(
                select(Incident)
                .where(col(Incident.open_key).is_not(None))
                .order_by(col(Incident.opened_at))
            ).all()
        ]
    problems: list[str] = []
    boxes = []
    for mb in settings.mailboxes:
        st = states.get(mb.name)
        lag = _age(now, st.last_sync_at if st else None)
        entry = {
            "name": mb.name,
            "address": mb.address,
            "source": "imap" if mb.imap else "pipe",
            "owner": st.owner if st else None,
            "idle": bool(st and st.idle),
            "last_sync_at": iso(st.last_sync_at) if st else None,
            "lag_s": lag,
            "last_error": st.last_error if st else None,
            "last_error_at": iso(st.last_error_at) if st else None,
            "error_kind": st.error_kind if st else None,
            "quarantined": int(quarantined.get(mb.name, 0)),
        }
        if mb.imap is not None:
            if lag is None:
                problems.append(f"mailbox {mb.name}: never synced")
            elif lag > stale_s:
                problems.append(f"mailbox {mb.name}: last good sync {int(lag)}s ago")
            if st is not None and st.error_kind == "auth":
                problems.append(f"mailbox {mb.name}: {st.last_error}")
        boxes.append(entry)
    stuck_s = settings.inboxd.outbox_stuck_after.total_seconds()
    backlog["stuck_after_s"] = stuck_s
    waited = backlog["oldest_queued_age_s"]
    if waited is not None and waited > stuck_s:
        problems.append(
            f"outbox: oldest queued mail waiting {_span(waited)} "
            f"(more than {_span(stuck_s)}; see `inboxd outbox list`)"
        )
    live = [
        {
            "id": d.id,
            "host": d.host,
            "pid": d.pid,
            "started_at": iso(d.started_at),
            "heartbeat_at": iso(d.heartbeat_at),
            "alive": (now - d.heartbeat_at).total_seconds() <= DAEMON_STALE_S,
            # Its share of the work: the mailboxes whose worker it runs now.
            "mailboxes": [b["name"] for b in boxes if b["owner"] == d.id],
        }
        for d in daemons
    ]
    return {
        "healthy": not problems,
        "problems": problems,
        "checked_at": iso(now),
        "daemons": live,
        "mailboxes": boxes,
        "quarantined": sum(b["quarantined"] for b in boxes),
        "outbox": backlog,
        "incidents": incidents,
    }


def _span(seconds: float) -> str:
    if seconds < 90:
        return f"{int(seconds)}s"
    if seconds < 5400:
        return f"{int(seconds // 60)}m"
    return f"{seconds / 3600:.1f}h"


def _ago(seconds: float | None) -> str:
    return "never" if seconds is None else f"{_span(seconds)} ago"


def render(doc: dict[str, Any]) -> None:
    console = Console(highlight=False)
    verdict = "[green]healthy[/green]" if doc["healthy"] else "[red]UNHEALTHY[/red]"
    console.print(f"inboxd status: {verdict}")
    for p in doc["problems"]:
        console.print(f"  [red]![/red] {p}")
    if doc["daemons"]:
        for d in doc["daemons"]:
            state = "alive" if d["alive"] else "silent"
            held = ", ".join(d["mailboxes"]) or "none"
            console.print(
                f"daemon {d['id']} on {d['host']} pid {d['pid']}: {state}, "
                f"heartbeat {d['heartbeat_at']}, mailboxes {len(d['mailboxes'])} ({held})",
                markup=False,
            )
    else:
        console.print("no daemon running")
    table = Table(show_edge=False)
    for col_name in ("mailbox", "source", "owner", "last good sync", "quarantined", "last error"):
        table.add_column(col_name)
    for b in doc["mailboxes"]:
        table.add_row(
            b["name"],
            b["source"] + (" (idle)" if b["idle"] else ""),
            b["owner"] or "-",
            _ago(b["lag_s"]),
            str(b["quarantined"]),
            b["last_error"] or "-",
        )
    console.print(table)
    box = doc["outbox"]
    out = Table(show_edge=False)
    for col_name in ("outbox", "queued", "held", "sending", "failed", "oldest queued"):
        out.add_column(col_name)
    waited = box["oldest_queued_age_s"]
    out.add_row(
        "backlog",
        str(box["queued"]),
        str(box["held"]),
        str(box["sending"]),
        str(box["failed"]),
        "-" if waited is None else _ago(waited),
    )
    console.print(out)
    for i in doc["incidents"]:
        console.print(
            f"admins alerted {i['opened_at']}: {i['key']} {i['kind']} ({i['detail']})",
            markup=False,
        )
