"""A batch of mail in one transaction (`intake.store_batch`): fast while nothing fails,
and, when a mail does fail, exactly what mail-by-mail savepoints would have stored."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import Engine
from sqlmodel import Session, func, select
from support import make_mail

from inboxd.models import Message, Ticket
from inboxd.tickets import intake

CFG = intake.IntakeConfig(
    secret=b"x",
    own_addresses=frozenset({"support@example.com"}),
    default_teams={"support": "frontline"},
)


def _mails(*subjects: str) -> list[intake.Incoming]:
    return [intake.Incoming(make_mail(subject=s)) for s in subjects]


def test_a_failing_mail_is_quarantined_and_the_rest_of_the_batch_stored_once(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    opened = intake._open_ticket
    attempts: list[str] = []

    def open_or_fail(session: Session, cfg: intake.IntakeConfig, mail: Any, **kw: Any) -> Ticket:
        attempts.append(mail.subject)
        if mail.subject == "Broken":
            raise RuntimeError("rules engine bug")
        return opened(session, cfg, mail, **kw)

    monkeypatch.setattr(intake, "_open_ticket", open_or_fail)
    cursor: list[int] = []
    results = intake.store_batch(
        engine,
        CFG,
        _mails("First", "Broken", "Last"),
        mailbox="support",
        source="import",
        finish=lambda s: cursor.append(1),
    )
    assert [r.outcome for r in results] == ["new-ticket", "quarantined", "new-ticket"]
    assert results[1].reason == "processing failed: RuntimeError: rules engine bug"
    # Tried without savepoints up to the failure, then the whole batch again, isolated.
    assert attempts == ["First", "Broken", "First", "Broken", "Last"]
    assert cursor == [1]  # `finish` ran in the transaction that committed
    with Session(engine) as s:
        rows = s.exec(select(Message.subject, Message.quarantined, Message.ticket_id)).all()
        assert sorted((subject, q, t is not None) for subject, q, t in rows) == [
            ("Broken", True, False),
            ("First", False, True),
            ("Last", False, True),
        ]
        assert s.exec(select(func.count()).select_from(Ticket)).one() == 2


def test_a_batch_whose_source_fails_stores_nothing(engine: Engine) -> None:
    """A parse that went missing (the worker's strict zip) fails the batch: never a
    partial commit that would move the cursor past a mail never stored."""

    def two_then_broken() -> Iterator[intake.Incoming]:
        yield from _mails("One", "Two")
        raise ValueError("zip() argument 2 is shorter than argument 1")

    finished: list[int] = []
    with pytest.raises(ValueError, match="shorter"):
        intake.store_batch(
            engine,
            CFG,
            two_then_broken(),
            mailbox="support",
            source="imap",
            finish=lambda s: finished.append(1),
        )
    assert finished == []
    with Session(engine) as s:
        assert s.exec(select(func.count()).select_from(Message)).one() == 0
