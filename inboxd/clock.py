"""The only place that reads the wall clock, so tests can pin time."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

Clock = Callable[[], datetime]


def utcnow() -> datetime:
    """The current instant, timezone-aware UTC."""
    return datetime.now(UTC)


def fixed(at: datetime) -> Clock:
    """A clock that always answers `at` (for tests and replays)."""
    if at.tzinfo is None:
        raise ValueError("naive datetime")
    return lambda: at
