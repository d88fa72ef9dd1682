"""`inboxd.records` on both engines: the same ticket as the ORM's, written back exactly.

Intake reads, builds and updates tickets through these helpers; a difference from what
`Session.get` and a flush would do would show up as a wrong ticket, so each test
compares with the ORM itself.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine, inspect, text
from sqlmodel import Session

from inboxd import records
from inboxd.db import model_defaults, session_scope
from inboxd.models import Ticket

NOW = datetime(2026, 11, 23, 9, 30, 15, 123456, tzinfo=UTC)


def _stored_ticket(engine: Engine) -> int:
    with session_scope(engine) as s:
        t = Ticket(
            subject="Printer on fire",
            customer_addr="ann@client.example",
            mailbox="support",
            created_at=NOW,
            updated_at=NOW,
            first_response_due=NOW + timedelta(hours=4),
            sla_fired=["first_response:warning:0"],
            message_count=2,
        )
        s.add(t)
        s.flush()
        assert t.id is not None
        return t.id


def _columns(t: Ticket) -> dict[str, object]:
    return {c.key: getattr(t, c.key) for c in inspect(Ticket).column_attrs}


def test_get_loads_what_session_get_loads(engine: Engine) -> None:
    pk = _stored_ticket(engine)
    with Session(engine) as s:
        ours = records.get(s, Ticket, pk)
        assert ours is not None
        ours_values = _columns(ours)
        assert inspect(ours).persistent and not s.dirty
        assert s.get(Ticket, pk) is ours  # the identity map holds it
    with Session(engine) as s:
        orm = s.get(Ticket, pk)
        assert orm is not None
        assert ours_values == _columns(orm)
    assert ours_values["first_response_due"] == NOW + timedelta(hours=4)
    assert ours_values["sla_fired"] == ["first_response:warning:0"]
    with Session(engine) as s:
        assert records.get(s, Ticket, pk + 1000) is None


def test_write_back_updates_the_changed_columns_and_leaves_the_ticket_clean(
    engine: Engine,
) -> None:
    pk = _stored_ticket(engine)
    later = NOW + timedelta(minutes=5)
    with session_scope(engine) as s:
        t = records.get(s, Ticket, pk)
        assert t is not None
        t.message_count += 1
        t.updated_at = later
        t.status = "pending"
        records.write_back(s, t)
        assert not s.is_modified(t) and not s.dirty  # nothing left for a flush to do
        # Another writer's change to a column we did not touch must survive.
        s.connection().execute(
            text("UPDATE ticket SET subject = 'Renamed' WHERE id = :id"), {"id": pk}
        )
        s.flush()
    with Session(engine) as s:
        row = s.get(Ticket, pk)
        assert row is not None
        assert (row.message_count, row.updated_at, row.status) == (3, later, "pending")
        assert row.subject == "Renamed"


def test_build_then_attach_is_a_clean_persistent_ticket(engine: Engine) -> None:
    values = model_defaults(Ticket) | {
        "subject": "Built",
        "mailbox": "support",
        "created_at": NOW,
        "updated_at": NOW,
    }
    with session_scope(engine) as s:
        t = records.build(Ticket, values)
        assert t.subject == "Built" and t.status == "open" and t.id is None
        pk = (
            s.connection()
            .execute(
                Ticket.__table__.insert().values(values).returning(Ticket.__table__.c.id)  # type: ignore[attr-defined]
            )
            .scalar_one()
        )
        t.id = pk
        records.attach(s, t)
        assert inspect(t).persistent and not s.is_modified(t)
        assert records.get(s, Ticket, pk) is t
        t.priority = "high"
        records.write_back(s, t)
    with Session(engine) as s:
        stored = s.get(Ticket, pk)
        assert stored is not None and stored.priority == "high" and stored.subject == "Built"
