"""The ticket audit trail: every change is an event naming who or what made it."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlmodel import Session

from inboxd.models import TicketEvent

SYSTEM = "system"


def record(
    session: Session, *, ticket_id: int, at: datetime, actor: str, kind: str, **data: Any
) -> TicketEvent:
    """Add one event; the caller's transaction commits it with the change it describes."""
    event = TicketEvent(ticket_id=ticket_id, at=at, actor=actor, kind=kind, data=data)
    session.add(event)
    return event
