"""Agent notifications, opt-in per team (`[[team]] notify = [...]`):

* `new-ticket`: a ticket entered the team's queue -> the team's list `address` when it
  has one, else every member (the lead only when there are no members);
* `customer-reply`: a customer wrote on a ticket -> its assignee;
* `assigned`: a ticket was given to an agent -> that agent.

Never to the agent who caused it (`actor`, or the sender of the reply), never to the
customer or anyone else taking part in the ticket, never to our own mailboxes. One mail
per recipient (kind `notify`), from the ticket's mailbox address, Subject `[#id] ...`,
`Auto-Submitted: auto-generated`, body from `notify-<what>.txt`. A team with a
`calendar` gets them when it is open: outside its hours the mail waits in the outbox
(`not_before`). Each sending is a ticket event (`notified`). Nothing here commits, and a
template or address problem never fails the caller: it is logged and recorded instead.
"""

from __future__ import annotations

import logging
import unicodedata
from collections.abc import Iterable
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

from sqlmodel import Session, col, select

from inboxd.errors import ConfigError
from inboxd.mail import compose
from inboxd.mail.text import reply_text
from inboxd.models import Message, Participant, Ticket
from inboxd.tickets import events, outbox, sla, templates

if TYPE_CHECKING:
    from inboxd.config import Settings, Team
    from inboxd.mail.parse import ParsedMail

log = logging.getLogger("inboxd.notify")

What = Literal["new-ticket", "customer-reply", "assigned"]
EXCERPT_CHARS = 1000
SENDER_NAME = "inboxd"
SUBJECTS: dict[What, str] = {
    "new-ticket": "New ticket",
    "customer-reply": "Customer replied",
    "assigned": "Assigned to you",
}


def new_ticket(
    session: Session, *, settings: Settings, ticket: Ticket, now: datetime
) -> list[outbox.Queued]:
    """Tell the ticket's team a new ticket is in its queue, if it asked to be told."""
    team = _team(settings, ticket, "new-ticket")
    if team is None:
        return []
    recipients = [team.address] if team.address else list(team.members)
    if not recipients and team.lead:
        recipients = [team.lead]
    first = _first_inbound(session, ticket)
    return _send(
        session,
        settings=settings,
        ticket=ticket,
        team=team,
        what="new-ticket",
        recipients=recipients,
        actor=None,
        context={"excerpt": excerpt(first.text) if first else ""},
        now=now,
    )


def customer_reply(
    session: Session,
    *,
    settings: Settings,
    ticket: Ticket,
    message: Message | ParsedMail,
    now: datetime,
) -> list[outbox.Queued]:
    """Tell the assignee that `message` (a customer's mail: the stored row or the parsed
    mail) joined their ticket."""
    team = _team(settings, ticket, "customer-reply")
    if team is None or not ticket.assignee:
        return []
    if isinstance(message, Message):
        sender = (message.from_addr or "").lower() or None
    else:
        sender = message.from_.addr.lower() if message.from_ else None
    return _send(
        session,
        settings=settings,
        ticket=ticket,
        team=team,
        what="customer-reply",
        recipients=[ticket.assignee],
        actor=sender,
        context={
            "sender": templates.plain(sender or ""),
            "excerpt": excerpt(message.text),
        },
        now=now,
    )


def assigned(
    session: Session,
    *,
    settings: Settings,
    ticket: Ticket,
    agent: str,
    actor: str,
    now: datetime,
) -> list[outbox.Queued]:
    """Tell `agent` that `actor` (an agent, or "system") gave them `ticket`."""
    team = _team(settings, ticket, "assigned")
    if team is None:
        return []
    first = _first_inbound(session, ticket)
    return _send(
        session,
        settings=settings,
        ticket=ticket,
        team=team,
        what="assigned",
        recipients=[agent],
        actor=actor,
        context={
            "actor": templates.plain(actor),
            "excerpt": excerpt(first.text) if first else "",
        },
        now=now,
    )


# -- the shared part ----------------------------------------------------------------


def excerpt(text: str | None, *, limit: int = EXCERPT_CHARS) -> str:
    """What the customer wrote, without quoted history, at most `limit` characters.

    Line breaks stay (it is the body, not a header); control characters go.
    """
    body = reply_text(text or "")
    body = "".join(c for c in body if c in "\n\t" or unicodedata.category(c)[0] != "C")
    lines = [line.rstrip() for line in body.strip().split("\n")]
    body = "\n".join(lines)
    while "\n\n\n" in body:
        body = body.replace("\n\n\n", "\n\n")
    return body if len(body) <= limit else body[: limit - 1].rstrip() + "…"


def _first_inbound(session: Session, ticket: Ticket) -> Message | None:
    """The mail that opened the ticket: what a notification quotes."""
    return session.exec(
        select(Message)
        .where(Message.ticket_id == ticket.id, Message.direction == "in")
        .order_by(col(Message.received_at), col(Message.id))
    ).first()


def _team(settings: Settings, ticket: Ticket, what: What) -> Team | None:
    team = sla.team_of(settings, ticket)
    return team if team is not None and what in team.notify else None


def _excluded(session: Session, settings: Settings, ticket: Ticket, actor: str | None) -> set[str]:
    """Addresses never notified about this ticket: the actor, its people, our mailboxes."""
    people = session.exec(
        select(Participant.address).where(Participant.ticket_id == ticket.id)
    ).all()
    out = {a.lower() for a in people} | set(settings.own_addresses())
    out |= {a.lower() for a in (ticket.customer_addr, actor) if a}
    return out


def _bare(address: str) -> str:
    local, _, domain = address.strip().lower().rpartition("@")
    return f"{local.partition('+')[0]}@{domain}"


def _recipients(candidates: Iterable[str], excluded: set[str]) -> list[str]:
    out: list[str] = []
    for address in candidates:
        a = address.strip().lower()
        if "@" in a and a not in excluded and _bare(a) not in excluded and a not in out:
            out.append(a)
    return out


def _context(settings: Settings, ticket: Ticket) -> dict[str, Any]:
    assert ticket.id is not None
    return {
        "id": ticket.id,
        "reference": settings.inboxd.tag(ticket.id),
        "subject": templates.plain(ticket.subject),
        "status": ticket.status,
        "priority": ticket.priority or "normal",
        "team": ticket.team,
        "assignee": ticket.assignee,
        "customer": templates.plain(ticket.customer_addr or ""),
        "customer_name": templates.plain(ticket.customer_name, limit=100),
        "mailbox": ticket.mailbox,
    }


def _hold_until(settings: Settings, team: Team, now: datetime) -> datetime | None:
    """The next opening of the team's calendar when it is closed now; else None."""
    if not team.calendar:
        return None
    try:
        opens = sla.calendar(settings, team.calendar).next_open(now)
    except (ConfigError, ValueError):
        return None
    return opens if opens > now else None


def _send(
    session: Session,
    *,
    settings: Settings,
    ticket: Ticket,
    team: Team,
    what: What,
    recipients: list[str],
    actor: str | None,
    context: dict[str, Any],
    now: datetime,
) -> list[outbox.Queued]:
    if ticket.id is None:
        return []
    to = _recipients(recipients, _excluded(session, settings, ticket, actor))
    mailbox = sla.mailbox_of(settings, ticket) or (
        settings.mailboxes[0] if settings.mailboxes else None
    )
    if not to or mailbox is None:
        return []
    values = {"ticket": _context(settings, ticket), "actor": "", "sender": "", **context}
    name = f"notify-{what}.txt"
    subject = f"{settings.inboxd.tag(ticket.id)} {SUBJECTS[what]}: "
    subject += templates.plain(ticket.subject) or "(no subject)"
    hold = _hold_until(settings, team, now)
    rows: list[outbox.Queued] = []
    for recipient in to:
        try:
            body = templates.render(
                name, {**values, "recipient": recipient}, folder=settings.inboxd.templates
            )
            message = compose.build(
                compose.Outgoing(
                    sender=mailbox.address,
                    sender_name=SENDER_NAME,
                    to=[recipient],
                    subject=subject,
                    text=body,
                    at=now,
                    auto_submitted="auto-generated",
                )
            )
        except (templates.TemplateProblem, ValueError) as exc:
            log.error("notification not sent", extra={"ticket": ticket.id, "error": str(exc)})
            events.record(
                session,
                ticket_id=ticket.id,
                at=now,
                actor=events.SYSTEM,
                kind="notify-failed",
                what=what,
                to=recipient,
                reason=str(exc),
            )
            continue
        rows.append(
            outbox.enqueue(
                session,
                kind="notify",
                message=message,
                smtp=mailbox.smtp,
                now=now,
                mailbox=mailbox.name,
                ticket=ticket,
                not_before=hold,
            )
        )
    if rows:
        events.record(
            session,
            ticket_id=ticket.id,
            at=now,
            actor=events.SYSTEM,
            kind="notified",
            what=what,
            to=[r.rcpt_key for r in rows],
            not_before=hold.isoformat() if hold else None,
        )
    return rows


def sample_context(what: What) -> dict[str, Any]:
    """Values of a notification template's variables, for `templates.check`."""
    return {
        "ticket": {
            "id": 1234,
            "reference": "[#1234]",
            "subject": "Printer on fire",
            "status": "open",
            "priority": "high",
            "team": "frontline",
            "assignee": "ann@example.com",
            "customer": "customer@example.org",
            "customer_name": "Carla Customer",
            "mailbox": "support",
        },
        "actor": "lea@example.com" if what == "assigned" else "",
        "sender": "customer@example.org" if what == "customer-reply" else "",
        "excerpt": "The printer in room 4 is on fire.\nPlease send help.",
        "recipient": "ann@example.com",
    }
