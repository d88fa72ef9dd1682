"""Read models: tickets and messages as plain dicts, the stable `--json` schema.

Timestamps are ISO 8601 with offset; `team` and `mailboxes` are names from the config;
`priority` is never null. Lists are built with a fixed number of queries, not one per row.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime, timedelta, timezone
from typing import Any

from sqlmodel import Session, col, select

from inboxd.errors import NotFound
from inboxd.models import Delivery, Message, Participant, Ticket, TicketEvent, TicketTag
from inboxd.tickets import sla

TicketDoc = dict[str, Any]


def iso(at: datetime | None) -> str | None:
    return at.isoformat() if at is not None else None


def sla_state(ticket: Ticket, now: datetime) -> str | None:
    """ok | warning | breached | paused | met, or None when no SLA policy applies."""
    return sla.sla_state(ticket, now)


def active_due(ticket: Ticket) -> datetime | None:
    """The deadline the ticket is racing now: first response, next response, resolution."""
    return sla.active_due(ticket)


def _mailboxes_by_ticket(session: Session, ticket_ids: Sequence[int]) -> dict[int, list[str]]:
    out: dict[int, list[str]] = defaultdict(list)
    if not ticket_ids:
        return out
    rows = session.exec(
        select(Message.ticket_id, Delivery.mailbox)
        .join(Delivery, col(Delivery.message_pk) == col(Message.id))
        .where(col(Message.ticket_id).in_(ticket_ids))
        .distinct()
    ).all()
    for ticket_id, mailbox in rows:
        if ticket_id is not None and mailbox not in out[ticket_id]:
            out[ticket_id].append(mailbox)
    for names in out.values():
        names.sort()
    return out


def _tags_by_ticket(session: Session, ticket_ids: Sequence[int]) -> dict[int, list[str]]:
    out: dict[int, list[str]] = defaultdict(list)
    if not ticket_ids:
        return out
    for ticket_id, tag in session.exec(
        select(TicketTag.ticket_id, TicketTag.tag)
        .where(col(TicketTag.ticket_id).in_(ticket_ids))
        .order_by(col(TicketTag.tag))
    ).all():
        out[ticket_id].append(tag)
    return out


def ticket_docs(session: Session, tickets: Sequence[Ticket], *, now: datetime) -> list[TicketDoc]:
    ids = [t.id for t in tickets if t.id is not None]
    mailboxes = _mailboxes_by_ticket(session, ids)
    tags = _tags_by_ticket(session, ids)
    return [
        _ticket_doc(t, mailboxes.get(t.id or 0, []), tags.get(t.id or 0, []), now) for t in tickets
    ]


def _ticket_doc(t: Ticket, mailboxes: list[str], tags: list[str], now: datetime) -> TicketDoc:
    return {
        "id": t.id,
        "subject": t.subject,
        "status": t.status,
        "priority": t.priority or "normal",
        "team": t.team,
        "category": t.category,
        "assignee": t.assignee,
        "customer": t.customer_addr,
        "customer_name": t.customer_name,
        "mailbox": t.mailbox,
        "mailboxes": mailboxes,
        "tags": tags,
        "message_count": t.message_count,
        "created_at": iso(t.created_at),
        "updated_at": iso(t.updated_at),
        "first_response_at": iso(t.first_response_at),
        "first_response_due": iso(t.first_response_due),
        "next_response_due": iso(t.next_response_due),
        "resolution_due": iso(t.resolution_due),
        "sla_policy": t.sla_policy,
        "sla_state": sla_state(t, now),
        "merged_into": t.merged_into,
        "previous_ticket": t.previous_ticket,
        "resolved_at": iso(t.resolved_at),
        "closed_at": iso(t.closed_at),
        "csat": t.csat,
        "sla_due": iso(active_due(t)),  # the nearest due still racing: the queue's order
    }


def list_all(session: Session, *, now: datetime) -> list[TicketDoc]:
    """Every ticket, any status and team, oldest first (`ticket list --all --json`)."""
    tickets = session.exec(select(Ticket).order_by(col(Ticket.id))).all()
    return ticket_docs(session, tickets, now=now)


def get_ticket(session: Session, ticket_id: int) -> Ticket:
    ticket = session.get(Ticket, ticket_id)
    if ticket is None:
        raise NotFound(f"no ticket {ticket_id}")
    return ticket


def sender_date(msg: Message) -> datetime | None:
    """The Date header in the sender's own UTC offset."""
    if msg.date_at is None:
        return None
    return msg.date_at.astimezone(timezone(timedelta(minutes=msg.date_offset_min or 0)))


def message_docs(session: Session, messages: Sequence[Message]) -> list[dict[str, Any]]:
    ids = [m.id for m in messages if m.id is not None]
    boxes: dict[int, list[str]] = defaultdict(list)
    if ids:
        for pk, mailbox in session.exec(
            select(Delivery.message_pk, Delivery.mailbox)
            .where(col(Delivery.message_pk).in_(ids))
            .order_by(col(Delivery.id))
        ).all():
            boxes[pk].append(mailbox)
    return [_message_doc(m, boxes.get(m.id or 0, [])) for m in messages]


def _message_doc(m: Message, mailboxes: list[str]) -> dict[str, Any]:
    return {
        "id": m.id,
        "message_id": m.message_id,
        "direction": m.direction,
        "from": m.from_addr,
        "from_name": m.from_name,
        "to": [a["addr"] for a in m.to_addrs],
        "cc": [a["addr"] for a in m.cc_addrs],
        "subject": m.subject,
        "date": iso(sender_date(m)),
        "received_at": iso(m.received_at),
        "mailboxes": mailboxes,
        "classification": m.classification,
        "reasons": list(m.reasons),
        "ticket": m.ticket_id,
        "quarantined": m.quarantined,
        "quarantine_reason": m.quarantine_reason,
        "author": m.author,
        "bounce": m.bounce,
        "text": m.text,
        "attachments": [dict(a) for a in m.attachments],
    }


def ticket_detail(session: Session, ticket_id: int, *, now: datetime) -> TicketDoc:
    """One ticket with its messages (oldest first) and events (`ticket show --json`)."""
    ticket = get_ticket(session, ticket_id)
    doc = ticket_docs(session, [ticket], now=now)[0]
    messages = session.exec(
        select(Message)
        .where(Message.ticket_id == ticket_id)
        .order_by(col(Message.received_at), col(Message.id))
    ).all()
    doc["messages"] = message_docs(session, messages)
    number = 0
    for m in doc["messages"]:  # one numbering over the thread: `ticket attachment ID N`
        for a in m["attachments"]:
            number += 1
            a["number"] = number
    doc["participants"] = [
        {"address": p.address, "name": p.name, "role": p.role}
        for p in session.exec(
            select(Participant)
            .where(Participant.ticket_id == ticket_id)
            .order_by(col(Participant.id))
        ).all()
    ]
    events = session.exec(
        select(TicketEvent).where(TicketEvent.ticket_id == ticket_id).order_by(col(TicketEvent.id))
    ).all()
    doc["events"] = [
        {"at": iso(e.at), "actor": e.actor, "kind": e.kind, "data": e.data} for e in events
    ]
    return doc


def find_messages(session: Session, key: str) -> list[Message]:
    """Messages by Message-ID (angle brackets optional) or by row id (`#12` or `12`)."""
    key = key.strip()
    if key.lstrip("#").isdigit():
        msg = session.get(Message, int(key.lstrip("#")))
        if msg is not None:
            return [msg]
    mid = key.strip("<>")
    found = session.exec(select(Message).where(Message.message_id == mid)).all()
    if not found:
        raise NotFound(f"no stored message {key}")
    return list(found)


def message_detail(session: Session, key: str) -> dict[str, Any]:
    msg = find_messages(session, key)[0]
    return message_docs(session, [msg])[0]
