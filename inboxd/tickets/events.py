"""The ticket audit trail: every change is an event naming who or what made it."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import insert
from sqlmodel import Session

from inboxd.db import Prepared
from inboxd.models import TicketEvent

SYSTEM = "system"
_INSERT = Prepared(insert(TicketEvent.__table__))  # type: ignore[attr-defined]


def record(
    session: Session, *, ticket_id: int, at: datetime, actor: str, kind: str, **data: Any
) -> None:
    """Add one event; the caller's transaction commits it with the change it describes.

    A prepared INSERT on the session's connection: events are written often (several
    per ingested mail) and never read back in the same transaction.
    """
    _INSERT.rows(
        session, {"ticket_id": ticket_id, "at": at, "actor": actor, "kind": kind, "data": data}
    )


def record_all(
    session: Session,
    *,
    ticket_id: int,
    at: datetime,
    actor: str,
    kinds: list[tuple[str, dict[str, Any]]],
) -> None:
    """Add several events of one change at once (one executemany), in the order given."""
    _INSERT.many(
        session,
        [
            {"ticket_id": ticket_id, "at": at, "actor": actor, "kind": kind, "data": data}
            for kind, data in kinds
        ],
    )
