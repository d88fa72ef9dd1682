"""Admin alerts: a mailbox that fails for good or goes stale is mailed about once.

An incident is a row in `incident`; while it is open its `open_key` ("mailbox:NAME")
sits in a unique index, so among several daemons on one PostgreSQL exactly one inserts
it and queues the alert, in the same transaction. Retries, other daemons and restarts
find the incident open and stay quiet. When the mailbox syncs again, one daemon closes
the incident (a conditional UPDATE) and queues one "recovered" mail; a later failure is
a new incident and alerts again.

The mail goes through the outbox (kind `alert`), so it survives a restart and is sent
by the daemon's sender; it leaves from the failing mailbox's address and SMTP endpoint.
Errors of kind auth or config alert at once (the worker reports them through
`WorkerContext.on_error`); any other failure alerts once the mailbox has had no good
sync for `stale_after`, checked by the periodic job `run_check`.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from email.message import EmailMessage
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine, update
from sqlmodel import Session, col, select

from inboxd.db import session_scope
from inboxd.mail import compose
from inboxd.models import Incident, MailboxState
from inboxd.tickets import outbox
from inboxd.tickets.views import iso

if TYPE_CHECKING:
    from inboxd.config import Mailbox, Settings

log = logging.getLogger("inboxd.alerts")

PERSISTENT_KINDS = frozenset({"auth", "config"})  # retrying will not fix these: alert at once
SENDER_NAME = "inboxd"
MAX_DETAIL = 500


@dataclass(frozen=True, slots=True)
class Problem:
    """Why a mailbox needs an admin: its kind (auth | config | stale) and one line."""

    kind: str
    detail: str


@dataclass(slots=True)
class CheckResult:
    """What one check did: incidents opened (alerted) and resolved (recovery mailed)."""

    opened: list[str] = field(default_factory=list)
    resolved: list[str] = field(default_factory=list)


def mailbox_key(name: str) -> str:
    return f"mailbox:{name}"


def open_incident(
    session: Session,
    *,
    settings: Settings,
    mailbox: Mailbox,
    problem: Problem,
    now: datetime,
    reporter: str | None = None,
) -> Incident | None:
    """Open the mailbox's incident and queue the alert; None when one is open already.

    Nothing happens without `[inboxd] admins`. Never commits; the caller's transaction
    holds the incident and the outbox row together.
    """
    if not settings.inboxd.admins:
        return None
    key = mailbox_key(mailbox.name)
    inserted = session.exec(
        _insert_if_absent(session).values(
            key=key,
            open_key=key,
            kind=problem.kind,
            detail=problem.detail[:MAX_DETAIL],
            opened_at=now,
            opened_by=reporter,
        )
    ).first()
    if inserted is None:
        return None  # open already: this is a retry, or another daemon was first
    incident = session.get(Incident, inserted[0])
    assert incident is not None
    state = session.get(MailboxState, mailbox.name)
    message = _alert_message(settings, mailbox, problem, state, now, reporter)
    row = outbox.enqueue(
        session,
        kind="alert",
        message=message,
        smtp=mailbox.smtp,
        now=now,
        mailbox=mailbox.name,
    )
    incident.alert_message_id = row.message_id
    if state is not None:
        state.alerted_at = now
        session.add(state)
    session.add(incident)
    session.flush()
    log.warning(
        "admins alerted",
        extra={
            "mailbox": mailbox.name,
            "kind": problem.kind,
            "error": problem.detail,
            "to": ",".join(settings.inboxd.admins),
            "incident": incident.id,
        },
    )
    return incident


def _insert_if_absent(session: Session) -> Any:
    """INSERT ... ON CONFLICT DO NOTHING RETURNING id: a row only for the first writer."""
    from sqlalchemy.dialects import postgresql, sqlite

    dialect = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
    return dialect.insert(Incident).on_conflict_do_nothing().returning(col(Incident.id))


def resolve_incident(
    session: Session,
    *,
    settings: Settings,
    incident: Incident,
    mailbox: Mailbox | None,
    now: datetime,
) -> bool:
    """Close `incident`; queue one "recovered" mail when the mailbox is still configured.

    False when another daemon closed it first (the conditional UPDATE found nothing).
    """
    closed = session.exec(
        update(Incident)
        .where(col(Incident.id) == incident.id, col(Incident.open_key).is_not(None))
        .values(open_key=None, resolved_at=now)
        .returning(col(Incident.id))
    ).first()
    if closed is None:
        return False
    if mailbox is not None and settings.inboxd.admins:
        state = session.get(MailboxState, mailbox.name)
        row = outbox.enqueue(
            session,
            kind="alert",
            message=_recovered_message(settings, mailbox, incident, state, now),
            smtp=mailbox.smtp,
            now=now,
            mailbox=mailbox.name,
        )
        session.exec(
            update(Incident)
            .where(col(Incident.id) == incident.id)
            .values(recovery_message_id=row.message_id)
        )
    log.info(
        "incident resolved",
        extra={"key": incident.key, "kind": incident.kind, "incident": incident.id},
    )
    return True


def problem_of(
    state: MailboxState | None,
    *,
    stale_after: timedelta,
    now: datetime,
    since: datetime | None,
) -> Problem | None:
    """What is wrong with a mailbox now, from its recorded state; None when nothing is.

    A sync that reached the end of the folder clears the error, so a recorded error kind
    means it failed since. Staleness counts from the last good sync, or from `since`
    (this daemon's start) when that is later: a daemon back after a long stop gets
    `stale_after` to catch up before anyone is mailed.
    """
    if state is not None and state.error_kind in PERSISTENT_KINDS:
        return Problem(state.error_kind, state.last_error or state.error_kind)
    last = state.last_sync_at if state is not None else None
    marks = [t for t in (last, since) if t is not None]
    if not marks:
        return None
    quiet = now - max(marks)
    if quiet <= stale_after:
        return None
    what = f"no good sync for {_words(now - last)}" if last else "never synced"
    if state is not None and state.last_error:
        what += f"; last error: {state.last_error}"
    return Problem("stale", what)


def _recovered(state: MailboxState | None, incident: Incident) -> bool:
    """A sync reached the end of the folder after the incident opened, without error since."""
    return (
        state is not None
        and state.error_kind is None
        and state.last_sync_at is not None
        and state.last_sync_at >= incident.opened_at
    )


def check(
    session: Session,
    *,
    settings: Settings,
    now: datetime,
    since: datetime | None = None,
    reporter: str | None = None,
) -> CheckResult:
    """Open incidents for failing or stale IMAP mailboxes, resolve those that recovered.

    Idempotent: run it from every daemon as often as you like. Never commits.
    """
    result = CheckResult()
    if not settings.inboxd.admins:
        return result
    states = {s.name: s for s in session.exec(select(MailboxState)).all()}
    open_ = {
        i.key: i
        for i in session.exec(select(Incident).where(col(Incident.open_key).is_not(None))).all()
    }
    configured = {mailbox_key(mb.name): mb for mb in settings.mailboxes if mb.imap is not None}
    for key, mb in configured.items():
        state = states.get(mb.name)
        incident = open_.get(key)
        if incident is None:
            problem = problem_of(
                state, stale_after=settings.inboxd.stale_after, now=now, since=since
            )
            if problem is not None and open_incident(
                session, settings=settings, mailbox=mb, problem=problem, now=now, reporter=reporter
            ):
                result.opened.append(mb.name)
        elif _recovered(state, incident) and resolve_incident(
            session, settings=settings, incident=incident, mailbox=mb, now=now
        ):
            result.resolved.append(mb.name)
    for key, incident in open_.items():  # a mailbox taken out of the config: no mail
        if key.startswith("mailbox:") and key not in configured:
            resolve_incident(session, settings=settings, incident=incident, mailbox=None, now=now)
    return result


def run_check(
    engine: Engine,
    settings: Settings,
    now: datetime,
    *,
    since: datetime | None = None,
    reporter: str | None = None,
) -> CheckResult:
    """`check` in its own transaction, committed (the daemon's periodic job)."""
    with session_scope(engine) as s:
        return check(s, settings=settings, now=now, since=since, reporter=reporter)


def report_error(
    engine: Engine,
    settings: Settings,
    *,
    mailbox: str,
    kind: str,
    error: str,
    now: datetime,
    reporter: str | None = None,
) -> bool:
    """A worker's error, as it happens: alert now when retrying cannot fix it.

    True when this call opened the incident (the alert is queued and committed).
    """
    if kind not in PERSISTENT_KINDS or not settings.inboxd.admins:
        return False
    mb = next((m for m in settings.mailboxes if m.name == mailbox), None)
    if mb is None:
        return False
    with session_scope(engine) as s:
        incident = open_incident(
            s,
            settings=settings,
            mailbox=mb,
            problem=Problem(kind, error),
            now=now,
            reporter=reporter,
        )
    return incident is not None


def open_incidents(session: Session) -> Sequence[Incident]:
    """Incidents not resolved yet, oldest first (for `inboxd status`)."""
    return session.exec(
        select(Incident)
        .where(col(Incident.open_key).is_not(None))
        .order_by(col(Incident.opened_at))
    ).all()


# -- the mails --------------------------------------------------------------------------

_ADVICE = {
    "auth": (
        "The server refuses the login. Check the password (password_env / password_file)\n"
        "or, for OAuth2, that token_command still prints a valid access token."
    ),
    "config": "The mailbox's configuration is incomplete or a secret cannot be read.",
    "stale": (
        "The mailbox has not been read to the end for longer than `stale_after`: the\n"
        "server may be down or unreachable, or a worker is stuck. `inboxd status` shows\n"
        "the last error."
    ),
}


def _alert_message(
    settings: Settings,
    mailbox: Mailbox,
    problem: Problem,
    state: MailboxState | None,
    now: datetime,
    reporter: str | None,
) -> EmailMessage:
    what = {"auth": "login refused", "config": "misconfigured", "stale": "stale"}.get(
        problem.kind, problem.kind
    )
    imap = mailbox.imap
    failing_at = state.last_error_at if state and state.last_error_at else now
    synced_at = state.last_sync_at if state else None
    lines = [
        f"Mailbox {mailbox.name} ({mailbox.address}) is {what}.",
        "",
        f"Problem:        {compose.one_line(problem.detail)}",
        f"Failing at:     {iso(failing_at)}",
        f"Last good sync: {iso(synced_at) if synced_at else 'never'}",
    ]
    if imap is not None:
        lines.append(f"Server:         {imap.host}:{imap.port} as {imap.username}")
    lines += [
        f"Reported by:    {reporter or socket.gethostname()}",
        "",
        _ADVICE.get(problem.kind, ""),
        "",
        "inboxd keeps retrying. This is the only mail about this incident; you will get",
        "one more when the mailbox syncs again. Check now: inboxd status",
    ]
    return _build(settings, mailbox, f"[inboxd] mailbox {mailbox.name} {what}", lines, now)


def _recovered_message(
    settings: Settings,
    mailbox: Mailbox,
    incident: Incident,
    state: MailboxState | None,
    now: datetime,
) -> EmailMessage:
    lines = [
        f"Mailbox {mailbox.name} ({mailbox.address}) syncs again.",
        "",
        f"Problem was:    {compose.one_line(incident.detail)}",
        f"Alerted at:     {iso(incident.opened_at)}",
        f"Good sync at:   {iso(state.last_sync_at) if state and state.last_sync_at else iso(now)}",
        f"Down for about: {_words(now - incident.opened_at)} since the alert",
    ]
    return _build(settings, mailbox, f"[inboxd] mailbox {mailbox.name} recovered", lines, now)


def _build(
    settings: Settings, mailbox: Mailbox, subject: str, lines: list[str], now: datetime
) -> EmailMessage:
    return compose.build(
        compose.Outgoing(
            sender=mailbox.address,
            sender_name=SENDER_NAME,
            to=list(settings.inboxd.admins),
            subject=subject,
            text="\n".join(lines) + "\n",
            at=now,
            auto_submitted="auto-generated",  # RFC 3834: no autoresponder answers it
        )
    )


def _words(d: timedelta) -> str:
    s = max(0, int(d.total_seconds()))
    if s < 120:
        return f"{s}s"
    if s < 7200:
        return f"{s // 60}m"
    if s < 172_800:
        return f"{s // 3600}h{(s % 3600) // 60:02d}m"
    return f"{s // 86400}d"
