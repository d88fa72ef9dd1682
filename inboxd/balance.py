"""Fair sharing of mailboxes between daemons on one PostgreSQL: a small, clock-injected policy.

Each daemon holds at most `fair_share(M, live daemons)` mailboxes. A worker asks its
daemon's `Balancer` to try a mailbox's lock (`acquire`) and, while it works the
mailbox, whether to hand it over (`should_yield`, between batches and IDLE slices). The
balancer re-counts the live daemons every `check_every_s`; a daemon above its share for
two consecutive checks hands over its most recently acquired mailboxes, so a newcomer
gets work within seconds and a blip in the count moves nothing.

A mailbox nobody has held for `orphan_after_s` is taken even above the share (a peer
that counts as live but cannot work it, e.g. a host configured without it), and kept
until the set of live daemons changes: a mailbox is never left unworked for long.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Collection
from typing import Literal

log = logging.getLogger("inboxd.balance")

CHECK_EVERY_S = 2.0  # how often the live daemons are counted (one query, shared by workers)
OVER_CHECKS = 2  # consecutive checks above the share before a mailbox is handed over
ORPHAN_AFTER_S = 15.0  # a mailbox free this long is taken even above the share
HALT_SLICE_S = 0.5  # how often a `HandOver.wait` looks at the balancer


def fair_share(mailboxes: int, live_daemons: int) -> int:
    """The most mailboxes one daemon should hold: ceil(M / N), N counted as at least 1."""
    return math.ceil(max(0, mailboxes) / max(1, live_daemons))


class Balancer:
    """One daemon's view of its share; thread-safe, shared by that daemon's mailbox workers.

    `live` returns the ids of the live daemons (this one is always counted); it is called
    at most once per `check_every_s` and may raise: the last count is kept then.
    """

    def __init__(
        self,
        *,
        me: str,
        mailboxes: int,
        live: Callable[[], Collection[str]],
        monotonic: Callable[[], float] = time.monotonic,
        check_every_s: float = CHECK_EVERY_S,
        over_checks: int = OVER_CHECKS,
        orphan_after_s: float = ORPHAN_AFTER_S,
    ) -> None:
        self.me = me
        self.mailboxes = mailboxes
        self._live_fn = live
        self._now = monotonic
        self._check_every_s = check_every_s
        self._over_checks = over_checks
        self._orphan_after_s = orphan_after_s
        self._lock = threading.Lock()
        self._attempting = threading.Lock()  # one lock attempt at a time
        self._counting = threading.Lock()  # one thread queries; the others use the last count
        self._live: frozenset[str] = frozenset({me})
        self._checked_at: float | None = None
        self._held: dict[str, int] = {}  # mailbox -> acquisition order (higher: more recent)
        self._seq = 0
        self._over = 0  # consecutive checks above the share
        self._leaving: set[str] = set()  # asked to hand over
        self._orphans: set[str] = set()  # taken above the share; kept while the live set holds
        self._free_since: dict[str, float] = {}

    # -- what workers call ----------------------------------------------------------

    @property
    def live(self) -> int:
        return len(self._live)

    @property
    def share(self) -> int:
        return fair_share(self.mailboxes, len(self._live))

    def held(self) -> list[str]:
        """The mailboxes this daemon holds, oldest acquisition first."""
        with self._lock:
            return sorted(self._held, key=self._held.__getitem__)

    def acquire(
        self, mailbox: str, take: Callable[[], bool], *, free: Callable[[], bool] | None = None
    ) -> bool:
        """Run `take()` (try the mailbox's lock) if this daemon may hold one more mailbox.

        True when taken: the mailbox counts as held until `release`. Within the share
        the attempt is made; above it only for a mailbox that `free()` (nobody holds its
        lock) has reported free for `orphan_after_s`. Attempts run one at a time, so
        siblings trying locks held elsewhere never crowd each other out of the share.
        An exception from `take` propagates with nothing counted.
        """
        self._maybe_check()
        with self._attempting:
            why = self._may_take(mailbox, free)
            if why is None or not take():
                return False
            with self._lock:
                self._take(mailbox)
                if why == "orphan":
                    self._orphans.add(mailbox)
        if why == "orphan":
            log.warning(
                "took an unworked mailbox above the share",
                extra={"mailbox": mailbox, "share": self.share, "live": self.live},
            )
        return True

    def _may_take(
        self, mailbox: str, free: Callable[[], bool] | None
    ) -> Literal["share", "orphan"] | None:
        with self._lock:
            if mailbox in self._held or len(self._held) < self.share:
                return "share"
        if free is None:
            return None
        try:
            is_free = free()  # outside the lock: a query
        except Exception as exc:  # noqa: BLE001 - cannot look: do not take it
            log.warning("mailbox lock not looked at", extra={"mailbox": mailbox, "error": str(exc)})
            return None
        now = self._now()
        with self._lock:
            if not is_free:
                self._free_since.pop(mailbox, None)
                return None
            since = self._free_since.setdefault(mailbox, now)
            return "orphan" if now - since >= self._orphan_after_s else None

    def release(self, mailbox: str) -> None:
        """The mailbox's lock is gone (handed over, lost, or never got)."""
        with self._lock:
            self._held.pop(mailbox, None)
            self._leaving.discard(mailbox)
            self._orphans.discard(mailbox)

    def should_yield(self, mailbox: str) -> bool:
        """Whether the worker of `mailbox` should finish its batch and hand it over."""
        self._maybe_check()
        with self._lock:
            return mailbox in self._leaving

    # -- the periodic check -----------------------------------------------------------

    def _take(self, mailbox: str) -> None:
        self._seq += 1
        self._held[mailbox] = self._seq
        self._free_since.pop(mailbox, None)

    def _maybe_check(self) -> None:
        now = self._now()
        if self._checked_at is not None and now - self._checked_at < self._check_every_s:
            return
        if not self._counting.acquire(blocking=False):
            return  # another worker is counting
        try:
            self._checked_at = now
            try:
                live = frozenset(self._live_fn()) | {self.me}
            except Exception as exc:  # noqa: BLE001 - the database is away: keep the last count
                log.warning("live daemons not counted", extra={"error": str(exc)})
                return
            self.check(live)
        finally:
            self._counting.release()

    def check(self, live: Collection[str]) -> None:
        """One check against this live set: counts toward, or away from, a hand-over."""
        live = frozenset(live) | {self.me}
        with self._lock:
            if live != self._live:
                self._orphans.clear()  # a new set of daemons: every holding is up for sharing
                self._live = live
            share = self.share
            yieldable = sorted(
                (m for m in self._held if m not in self._orphans),
                key=self._held.__getitem__,
            )
            excess = min(len(self._held) - share, len(yieldable))
            if excess <= 0:
                self._over = 0
                self._leaving.clear()
                return
            self._over += 1
            if self._over < self._over_checks:
                return
            leaving = set(yieldable[-excess:])  # the most recently acquired go first
            new = leaving - self._leaving
            self._leaving = leaving
        if new:
            log.info(
                "handing mailboxes over",
                extra={
                    "mailboxes": ",".join(sorted(new)),
                    "share": share,
                    "live": len(live),
                },
            )


class HandOver(threading.Event):
    """`halt` for a worker that owns its mailbox: the daemon stops, or the mailbox goes.

    The worker's sync, IDLE and backoff loops only look at their halt event, so this is
    how a hand-over ends the current batch or IDLE slice like a shutdown would, while the
    daemon's own event stays untouched. Once asked, it stays set.
    """

    def __init__(self, halt: threading.Event, asked: Callable[[], bool]) -> None:
        super().__init__()
        self._halt = halt
        self._asked = asked

    def is_set(self) -> bool:
        if super().is_set() or self._halt.is_set():
            return True
        if self._asked():
            self.set()
            return True
        return False

    def wait(self, timeout: float | None = None) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.is_set():
            step = HALT_SLICE_S
            if deadline is not None:
                step = min(step, deadline - time.monotonic())
                if step <= 0:
                    return False
            self._halt.wait(step)
        return True
