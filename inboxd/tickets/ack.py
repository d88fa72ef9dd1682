"""Acknowledgements: one templated mail per new ticket from a person, never to a machine.

What the customer gets: the ticket reference, the team, and the expected first response
from the SLA, as a duration ("within 4 business hours") and as a time in their own UTC
offset, read from their Date header ("by Tuesday 10:00 (UTC+01:00)"). Without an SLA the
mail promises nothing. The mail comes from the mailbox's address, carries a signed reply
token in Reply-To, threads under the customer's mail and says it is automatic (RFC 3834
`Auto-Submitted: auto-replied`, Exchange's `X-Auto-Response-Suppress`, our loop header).

Who never gets one: anything classify did not call `human` (auto-replies, bounces, bulk,
spam, our own mail), replies to existing tickets (intake only calls this for a new
ticket), imported backlog, our own addresses and agents, and a sender who already got
`ack.rate_limit` acks within `ack.rate_window` (two autoresponders cannot loop through
us). Every decision is a ticket event: `ack-sent`, or `ack-suppressed` with the reason.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from typing import TYPE_CHECKING, Any

from sqlalchemy import bindparam, func
from sqlalchemy import select as sa_select
from sqlmodel import Session

from inboxd.db import Prepared
from inboxd.mail import compose
from inboxd.models import Outbox, Ticket
from inboxd.tickets import outbox, sla, templates
from inboxd.tickets.tokens import make_token, reply_address

if TYPE_CHECKING:
    from inboxd.config import Mailbox, Settings
    from inboxd.mail.parse import ParsedMail

log = logging.getLogger("inboxd.ack")


@dataclass(slots=True)
class Opening:
    """A new ticket's acknowledgement, decided before the ticket row is written (so the
    row counts the ack among its messages), and what intake writes after it: the
    ticket's events and thread ids, the ack's among them, a statement each."""

    skip: str | None  # why there is no acknowledgement; None: one is due, and counted
    events: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    ids: list[str | None] = field(default_factory=list)


def plan(
    session: Session,
    *,
    settings: Settings,
    customer_addr: str | None,
    mailbox: str | None,
    kind: str,
    now: datetime,
    agents: frozenset[str] = frozenset(),
    imported: bool = False,
) -> str | None:
    """Why the new ticket of `customer_addr` in `mailbox` gets no acknowledgement, or
    None when it gets one. `kind` is the classification of the mail that opens it."""
    if not settings.ack.enabled:
        return "acknowledgements are off ([ack] enabled = false)"
    if imported:
        return "imported mail is never acknowledged"
    if kind != "human":
        return f"{kind} mail is never acknowledged"
    address = (customer_addr or "").strip().lower()
    if not address:
        return "the mail has no sender address"
    staff = ours(settings, address, agents=agents)
    if staff is not None:
        return f"the sender is {staff}"
    if sla.named_mailbox(settings, mailbox) is None:
        return f"mailbox {mailbox!r} is not in the configuration"
    window = settings.ack.rate_window
    sent = _ACKS_SINCE.scalar(session, {"address": address, "since": now - window})
    if sent >= settings.ack.rate_limit:
        return (
            f"rate limit: {sent} acknowledgements to this sender within "
            f"{sla.duration_words(window, business=False)}"
        )
    return None


def acknowledge(
    session: Session,
    *,
    settings: Settings,
    ticket: Ticket,
    mail: ParsedMail,
    secret: bytes,
    now: datetime,
    opening: Opening,
) -> outbox.Queued | None:
    """Queue the acknowledgement of the new `ticket` opened by `mail`, as `plan` decided
    when the ticket was opened, or say why not.

    Call after the SLA clocks started (the promise comes from them) and the mail is
    stored. The event (`ack-sent`, or `ack-suppressed` with the reason) and the ack's
    Message-ID go into `opening`, for the caller to write. Returns the outbox row, or
    None when suppressed. Never commits, and never raises for a bad template or address:
    the customer's mail is processed either way, and the event says what went wrong
    (the ticket then counts one message less than planned).
    """
    assert ticket.id is not None
    reason = opening.skip
    mailbox = sla.mailbox_of(settings, ticket)
    message: compose.Rendered | None = None
    if reason is None and mailbox is not None:
        try:
            message = _build(settings, ticket, mail, mailbox, secret=secret, now=now)
        except templates.TemplateProblem as exc:
            log.error("acknowledgement template failed", extra={"error": str(exc)})
            reason = f"template error: {exc}"
        except ValueError as exc:  # an address compose refuses
            reason = f"cannot build the mail: {exc}"
    if message is None or mailbox is None:
        opening.events.append(("ack-suppressed", {"reason": reason or "no mailbox"}))
        if opening.skip is None:  # counted when planned
            outbox.count_down(session, ticket)
        return None
    row = outbox.queue_for_customer(
        session,
        kind="ack",
        mail=message,
        mailbox=mailbox,
        ticket=ticket,
        now=now,
        event=None,
        remember=False,
        counted=True,
    )
    opening.ids.append(row.message_id)
    opening.events.append(("ack-sent", {"to": row.rcpt_key, "message_id": row.message_id}))
    return row


_OUTBOX = Outbox.__table__  # type: ignore[attr-defined]
_ACKS_SINCE = Prepared(
    sa_select(func.count(_OUTBOX.c.id)).where(
        _OUTBOX.c.kind == "ack",
        _OUTBOX.c.rcpt_key == bindparam("address"),
        _OUTBOX.c.created_at > bindparam("since"),
    )
)


def ours(settings: Settings, address: str, *, agents: frozenset[str] = frozenset()) -> str | None:
    """What `address` is to us when it is ours ("one of our own addresses", "an agent")."""
    local, _, domain = address.rpartition("@")
    if f"{local.partition('+')[0]}@{domain}" in settings.own_addresses():
        return "one of our own addresses"
    if address in agents or address in settings.agents():
        return "an agent"
    return None


def _build(
    settings: Settings,
    ticket: Ticket,
    mail: ParsedMail,
    mailbox: Mailbox,
    *,
    secret: bytes,
    now: datetime,
) -> compose.Rendered:
    assert ticket.id is not None and ticket.customer_addr is not None
    context = _context(settings, ticket, mail, mailbox, now=now)
    name = mailbox.ack_template or settings.ack.template
    body = templates.render(name, context, folder=settings.inboxd.templates)
    subject = settings.ack.subject.format(id=ticket.id, subject=templates.plain(ticket.subject))
    return compose.render(
        compose.Outgoing(
            sender=mailbox.address,
            sender_name=display_name(mailbox),
            to=[ticket.customer_addr],
            subject=subject,
            text=body,
            at=now,
            reply_to=reply_address(mailbox.address, make_token(secret, ticket.id)),
            in_reply_to=mail.message_id,
            references=list(mail.references),
            auto_submitted="auto-replied",
        )
    )


def display_name(mailbox: Mailbox) -> str:
    """The name our mail comes from: the mailbox's name, as words ("billing-eu" -> "Billing Eu")."""
    return mailbox.name.replace("-", " ").replace("_", " ").title()


def customer_zone(mail: ParsedMail, settings: Settings) -> tzinfo:
    """The customer's own UTC offset from their Date header; else inboxd's time zone."""
    offset = mail.date.utcoffset() if mail.date is not None else None
    if offset is None:
        return settings.inboxd.zone
    return timezone(offset)


def _context(
    settings: Settings, ticket: Ticket, mail: ParsedMail, mailbox: Mailbox, *, now: datetime
) -> dict[str, Any]:
    assert ticket.id is not None
    promise = sla.promise(settings, ticket)
    expected: dict[str, Any] | None = None
    if promise is not None:
        tz = customer_zone(mail, settings)
        expected = {
            "policy": promise.policy,
            "within": sla.duration_words(promise.within, business=promise.business),
            "by": sla.time_words(promise.due, tz, now=now),
            "due": promise.due.astimezone(tz),
        }
    return {
        "ticket": {
            "id": ticket.id,
            "reference": settings.inboxd.tag(ticket.id),
            "subject": templates.plain(ticket.subject),
            "priority": ticket.priority,
        },
        "customer": {
            "name": templates.plain(ticket.customer_name, limit=100),
            "address": templates.plain(ticket.customer_addr),
        },
        "team": ticket.team,
        "mailbox": {
            "name": mailbox.name,
            "address": mailbox.address,
            "display_name": display_name(mailbox),
        },
        "sla": expected,
    }


def sample_context(*, with_sla: bool) -> dict[str, Any]:
    """Values of the acknowledgement template's variables, for `templates.check`."""
    due = datetime(2026, 1, 6, 9, tzinfo=UTC)
    plus_one = timezone(timedelta(hours=1))
    return {
        "ticket": {
            "id": 1234,
            "reference": "[#1234]",
            "subject": "Printer on fire",
            "priority": "normal",
        },
        "customer": {"name": "Carla Customer", "address": "customer@example.org"},
        "team": "frontline",
        "mailbox": {
            "name": "support",
            "address": "support@example.com",
            "display_name": "Support",
        },
        "sla": {
            "policy": "standard",
            "within": "4 business hours",
            "by": "Tuesday 10:00 (UTC+01:00)",
            "due": due.astimezone(plus_one),
        }
        if with_sla
        else None,
    }
