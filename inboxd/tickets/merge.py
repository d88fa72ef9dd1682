"""Merging two tickets into one conversation: nothing is lost, replies keep threading."""

from __future__ import annotations

from datetime import datetime

from sqlmodel import Session, col, select, update

from inboxd.db import insert_ignore
from inboxd.errors import InboxdError
from inboxd.models import Message, Participant, ThreadRef, Ticket, TicketTag
from inboxd.tickets import events


def merge(
    session: Session, *, source: Ticket, into: Ticket, actor: str, at: datetime, reason: str
) -> None:
    """Move `source`'s messages, ids, participants and tags into `into`.

    `source` stays as a `merged` ticket pointing at `into`, with its own events, so
    its number still resolves; mail threading to it lands in `into`.
    """
    if source.id is None or into.id is None or source.id == into.id:
        raise InboxdError("a ticket cannot be merged into itself")
    if source.status == "merged" or into.status == "merged":
        raise InboxdError(
            f"ticket {source.id if source.status == 'merged' else into.id} is already merged"
        )
    session.exec(
        update(Message).where(col(Message.ticket_id) == source.id).values(ticket_id=into.id)
    )
    session.exec(
        update(ThreadRef).where(col(ThreadRef.ticket_id) == source.id).values(ticket_id=into.id)
    )
    people = session.exec(select(Participant).where(Participant.ticket_id == source.id)).all()
    insert_ignore(
        session,
        Participant,
        [
            {
                "ticket_id": into.id,
                "address": p.address,
                "name": p.name,
                "role": "cc" if p.role == "customer" else p.role,
            }
            for p in people
        ],
    )
    tags = session.exec(select(TicketTag.tag).where(TicketTag.ticket_id == source.id)).all()
    insert_ignore(session, TicketTag, [{"ticket_id": into.id, "tag": t} for t in tags])
    into.message_count += source.message_count
    into.updated_at = at
    source.message_count = 0
    source.status = "merged"
    source.merged_into = into.id
    source.updated_at = at
    events.record(
        session, ticket_id=source.id, at=at, actor=actor, kind="merged", into=into.id, reason=reason
    )
    events.record(
        session,
        ticket_id=into.id,
        at=at,
        actor=actor,
        kind="merged-from",
        source=source.id,
        reason=reason,
    )


def has_outbound(session: Session, ticket_id: int) -> bool:
    """Whether an agent already answered on this ticket (then it is not merged silently)."""
    row = session.exec(
        select(Message.id).where(
            Message.ticket_id == ticket_id,
            Message.direction == "out",
            Message.author.is_not(None),  # type: ignore[union-attr]  # an agent, not the ack
        )
    ).first()
    return row is not None
