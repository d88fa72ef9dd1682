"""Fair sharing of mailboxes between daemons: the policy, and two real daemons on PostgreSQL."""

from __future__ import annotations

import json
import signal
import threading
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from servers import Database, Dovecot
from sqlalchemy import func
from sqlmodel import Session, col, select
from support import Box, cli, daemon, daemon_log, make_mail, wait_for, write_config

from inboxd.balance import Balancer, HandOver, fair_share
from inboxd.leases import DaemonPresence, live_daemon_ids
from inboxd.models import Daemon, Delivery, Message

# -- the policy --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mailboxes", "live", "share"),
    [(4, 1, 4), (4, 2, 2), (4, 3, 2), (8, 3, 3), (8, 4, 2), (3, 4, 1), (0, 2, 0), (5, 0, 5)],
)
def test_fair_share_is_the_ceiling_of_mailboxes_per_live_daemon(
    mailboxes: int, live: int, share: int
) -> None:
    assert fair_share(mailboxes, live) == share


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def _balancer(live: set[str], clock: Clock, mailboxes: int = 4) -> Balancer:
    return Balancer(
        me="a", mailboxes=mailboxes, live=lambda: set(live), monotonic=clock, check_every_s=2.0
    )


def _checks(b: Balancer, clock: Clock, n: int) -> None:
    """n periodic checks, as the workers' calls between IDLE slices trigger them."""
    for _ in range(n):
        clock.t += 2.0
        b.should_yield("any")


def test_a_daemon_claims_up_to_its_share_and_no_more() -> None:
    clock, live = Clock(), {"a", "b"}
    b = _balancer(live, clock)
    assert [b.acquire(m, lambda: True) for m in ("m1", "m2", "m3")] == [True, True, False]
    assert b.held() == ["m1", "m2"]
    b.release("m1")
    assert not b.acquire("m3", lambda: False)  # held elsewhere: nothing counted
    assert b.held() == ["m2"]
    assert b.acquire("m3", lambda: True)


def test_a_newcomer_gets_the_most_recently_taken_mailboxes_after_two_checks() -> None:
    clock, live = Clock(), {"a"}
    b = _balancer(live, clock)
    for m in ("m1", "m2", "m3", "m4"):
        assert b.acquire(m, lambda: True)
    live.add("b")
    _checks(b, clock, 1)
    assert not any(b.should_yield(m) for m in ("m1", "m2", "m3", "m4"))  # one check: wait
    _checks(b, clock, 1)
    assert [m for m in ("m1", "m2", "m3", "m4") if b.should_yield(m)] == ["m3", "m4"]
    b.release("m3")
    b.release("m4")
    _checks(b, clock, 3)
    assert not b.acquire("m3", lambda: True)  # no flapping: handed over stays handed over
    assert b.held() == ["m1", "m2"]


def test_a_daemon_seen_for_one_check_only_moves_nothing() -> None:
    clock, live = Clock(), {"a"}
    b = _balancer(live, clock)
    for m in ("m1", "m2", "m3", "m4"):
        b.acquire(m, lambda: True)
    live.add("b")
    _checks(b, clock, 1)
    live.discard("b")
    _checks(b, clock, 3)
    assert not any(b.should_yield(m) for m in ("m1", "m2", "m3", "m4"))
    assert b.share == 4


def test_when_a_peer_dies_the_survivor_may_take_its_mailboxes_at_the_next_check() -> None:
    clock, live = Clock(), {"a", "b"}
    b = _balancer(live, clock)
    b.acquire("m1", lambda: True)
    b.acquire("m2", lambda: True)
    assert not b.acquire("m3", lambda: True)
    live.discard("b")
    clock.t += 2.0
    assert b.acquire("m3", lambda: True)
    assert b.acquire("m4", lambda: True)


def test_a_mailbox_nobody_works_is_taken_above_the_share_and_kept() -> None:
    clock, live = Clock(), {"a", "b"}
    b = Balancer(me="a", mailboxes=4, live=lambda: set(live), monotonic=clock, orphan_after_s=15.0)
    b.acquire("m1", lambda: True)
    b.acquire("m2", lambda: True)
    free = {"m3": True}
    assert not b.acquire("m3", lambda: True, free=lambda: free["m3"])  # b may take it any moment
    clock.t += 10
    assert not b.acquire("m3", lambda: True, free=lambda: free["m3"])
    clock.t += 6
    assert b.acquire("m3", lambda: True, free=lambda: free["m3"])  # free 16 s: nobody is coming
    _checks(b, clock, 5)
    assert not b.should_yield("m3")  # kept while the same daemons are live
    live.add("c")
    _checks(b, clock, 2)
    assert [m for m in b.held() if b.should_yield(m)] == ["m3"]  # shared again: share 2


def test_a_mailbox_someone_holds_is_never_taken_above_the_share() -> None:
    clock, live = Clock(), {"a", "b"}
    b = Balancer(me="a", mailboxes=4, live=lambda: set(live), monotonic=clock, orphan_after_s=1)
    b.acquire("m1", lambda: True)
    b.acquire("m2", lambda: True)
    for _ in range(5):
        clock.t += 5
        assert not b.acquire("m3", lambda: True, free=lambda: False)


def test_an_uncountable_database_keeps_the_last_count() -> None:
    clock = Clock()
    answers: list[Any] = [{"a", "b"}, RuntimeError("database away")]

    def live() -> set[str]:
        answer = answers.pop(0) if answers else {"a", "b"}
        if isinstance(answer, Exception):
            raise answer
        return answer

    b = Balancer(me="a", mailboxes=4, live=live, monotonic=clock)
    b.acquire("m1", lambda: True)
    assert b.live == 2
    clock.t += 3
    b.acquire("m2", lambda: True)
    assert b.live == 2
    assert not b.acquire("m3", lambda: True)


def test_hand_over_acts_as_a_halt_for_one_worker_only() -> None:
    halt = threading.Event()
    asked = {"now": False}
    h = HandOver(halt, lambda: asked["now"])
    assert not h.is_set()
    assert not h.wait(0.05)
    asked["now"] = True
    assert h.is_set()
    asked["now"] = False
    assert h.is_set()  # latched: the worker finishes leaving
    assert not halt.is_set()  # the daemon goes on
    h2 = HandOver(halt, lambda: False)
    threading.Timer(0.1, halt.set).start()
    started = time.monotonic()
    assert h2.wait(10)
    assert time.monotonic() - started < 2


# -- two daemons on PostgreSQL -------------------------------------------------------------


def test_a_daemon_counts_live_while_it_beats_and_holds_its_presence(
    postgres_database: Database,
) -> None:
    engine = postgres_database.engine
    now = datetime.now(UTC)
    with Session(engine) as s:
        for name, beat in (("fresh", now), ("silent", now - timedelta(seconds=61))):
            s.add(Daemon(id=name, host="h", pid=1, started_at=beat, heartbeat_at=beat))
        s.commit()

    def live() -> set[str]:
        return live_daemon_ids(engine, now=now, dead_after=timedelta(seconds=60))

    assert live() == set()  # rows alone are not enough: a SIGKILLed daemon leaves its row
    fresh, silent = DaemonPresence(engine, "fresh"), DaemonPresence(engine, "silent")
    fresh.hold()
    silent.hold()
    fresh.hold()  # idempotent
    try:
        assert live() == {"fresh"}  # the silent one's heartbeat is too old
        fresh.release()  # what the server does when the process dies
        assert live() == set()
        fresh.hold()
        assert live() == {"fresh"}
    finally:
        fresh.release()
        silent.release()


def _status(config: Path) -> dict[str, Any]:
    proc = cli(config, "status", "--json", check=False)  # exits 1 while unhealthy
    return json.loads(proc.stdout)  # type: ignore[no-any-return]


def _owned(config: Path) -> dict[int, int]:
    """Mailboxes owned per daemon pid, as `inboxd status --json` shows them: by each
    mailbox's owner, and the same by each daemon's share."""
    doc = _status(config)
    pid_of = {d["id"]: d["pid"] for d in doc["daemons"]}
    by_owner = Counter(pid_of.get(b["owner"], -1) for b in doc["mailboxes"] if b["owner"])
    by_share = {d["pid"]: len(d["mailboxes"]) for d in doc["daemons"] if d["mailboxes"]}
    assert by_share == {pid: n for pid, n in by_owner.items() if pid != -1}, doc
    return dict(by_owner)


def _stored(db: Database) -> tuple[int, int, int]:
    with Session(db.engine) as s:
        inbound = col(Message.direction) == "in"  # acknowledgements are messages too
        messages = s.exec(select(func.count()).select_from(Message).where(inbound)).one()
        deliveries = s.exec(select(func.count()).select_from(Delivery)).one()
        distinct = s.exec(
            select(func.count(func.distinct(Message.message_id))).where(inbound)
        ).one()
    return int(messages), int(deliveries), int(distinct)


class Appender:
    """APPENDs one mail every `every_s` to the mailboxes in turn, from its own thread."""

    def __init__(self, dovecot: Dovecot, boxes: list[Box], every_s: float = 0.25) -> None:
        self.dovecot, self.boxes, self.every_s = dovecot, boxes, every_s
        self.sent = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        clients = {b.name: self.dovecot.client(b.user or "") for b in self.boxes}
        try:
            while not self._stop.wait(self.every_s):
                box = self.boxes[self.sent % len(self.boxes)]
                clients[box.name].append(
                    "INBOX",
                    make_mail(subject=f"during {self.sent}", sender=f"c{self.sent}@client.example"),
                )
                self.sent += 1
        finally:
            for c in clients.values():
                c.logout()

    def __enter__(self) -> Appender:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)


def test_a_second_daemon_takes_half_the_mailboxes_and_gives_them_back_when_killed(
    tmp_path: Path, postgres_database: Database, dovecot: Dovecot
) -> None:
    db = postgres_database
    boxes = []
    for name in ("support", "billing", "sales", "press"):
        user, password = dovecot.new_user()
        boxes.append(Box(name=name, address=f"{name}@example.com", user=user, password=password))
    config = write_config(tmp_path / "cfg", database=db.url, boxes=boxes, imap_port=dovecot.port)
    with daemon(config) as first:
        wait_for(lambda: _owned(config) == {first.pid: 4}, timeout=30, every=0.5, what="A owns 4")
        with Appender(dovecot, boxes) as appender, daemon(config) as second:
            started = time.monotonic()
            wait_for(
                lambda: _owned(config) == {first.pid: 2, second.pid: 2},
                timeout=40,
                every=0.5,
                what="two mailboxes each",
            )
            split_s = time.monotonic() - started
            time.sleep(6)  # three balancer checks: nothing moves back and forth
            assert _owned(config) == {first.pid: 2, second.pid: 2}
            second.send_signal(signal.SIGKILL)
            second.wait()
            killed = time.monotonic()
            wait_for(
                lambda: _owned(config) == {first.pid: 4},
                timeout=40,
                every=0.5,
                what="the survivor to own all 4",
            )
            takeover_s = time.monotonic() - killed
            time.sleep(2)  # mail appended after the takeover too
        sent = appender.sent
        wait_for(lambda: _stored(db)[1] >= sent, timeout=60, what=f"{sent} mails stored")
        time.sleep(1)  # a duplicate would land now
        assert first.poll() is None, daemon_log(config)[-3000:]
    assert _stored(db) == (sent, sent, sent)  # every mail exactly once, one delivery each
    assert sent > 40
    assert split_s < 30, split_s
    assert takeover_s < 15, takeover_s
