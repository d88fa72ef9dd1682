"""The parser process: the same parse as in the worker, in order; small batches stay in
the worker unless there is a time limit; a mail that outlasts the limit is stored
unparsed; a dead parser costs nothing but time; it never outlives its daemon."""

from __future__ import annotations

import functools
import hashlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine
from support import make_mail, slow_mail

from inboxd.mail import parsepool
from inboxd.mail.parse import Parsed, parse_for_intake
from inboxd.mail.parsepool import ParsePool
from inboxd.tickets.intake import IntakeConfig

CORPUS = Path(__file__).resolve().parents[2] / "shared" / "corpus"
LIMIT = 25 * 1024 * 1024
PARSE = functools.partial(parse_for_intake, max_bytes=LIMIT)
# What a worker hands the pool: parse, classify and hash (`classify.screened`).
SCREEN = IntakeConfig(secret=b"x", own_addresses=frozenset({"support@example.com"})).reader()


def _mails(n: int) -> list[bytes]:
    """Corpus mail when the corpus is there (odd ones included), else generated mail."""
    files = sorted(p for p in CORPUS.rglob("*") if p.is_file() and p.suffix != ".json")
    found = [p.read_bytes() for p in files[:n]]
    found += [make_mail(subject=f"Mail {i}") for i in range(n - len(found))]
    return [*found, b"\x00\x01 not a mail", b"x" * 200]


@pytest.fixture
def pool() -> Iterator[ParsePool]:
    p = ParsePool()
    yield p
    p.close()


def test_the_pool_parses_what_the_worker_would_in_the_same_order(pool: ParsePool) -> None:
    mails = _mails(60)
    got = list(pool.parses(mails, SCREEN))
    assert pool.pids(), "a large batch goes to the parser process"
    assert got == [SCREEN(m) for m in mails]
    assert got[-2].mail is None and got[-2].problem  # quarantined, not raised
    assert got[-2].digest == hashlib.sha256(mails[-2]).hexdigest()
    assert {p.verdict.kind for p in got if p.mail} >= {"human"}
    assert all(p.screened_as == (frozenset({"support@example.com"}), ()) for p in got if p.mail)


def test_an_oversize_mail_is_reported_not_parsed(pool: ParsePool) -> None:
    mails = [make_mail(subject=f"Mail {i}") for i in range(10)]
    got = list(pool.parses(mails, functools.partial(parse_for_intake, max_bytes=100)))
    assert all(p.mail is None and (p.problem or "").startswith("oversize") for p in got)


def test_a_small_batch_parses_in_the_worker(pool: ParsePool) -> None:
    mails = [make_mail(subject=f"Mail {i}") for i in range(parsepool.POOL_MIN_BATCH - 1)]
    assert [p.mail.subject for p in pool.parses(mails, PARSE) if p.mail] == [
        f"Mail {i}" for i in range(len(mails))
    ]
    assert pool.pids() == []  # never started


def test_a_pool_started_in_the_background_serves_the_first_batch(pool: ParsePool) -> None:
    """`inboxd run` spawns the parser at start, so its first mail does not wait for it."""
    pool.start_in_background()
    deadline = time.monotonic() + 30
    while not pool.pids() and time.monotonic() < deadline:
        time.sleep(0.01)
    started = pool.pids()
    assert started, "the parser process started before any mail"
    mails = [make_mail(subject=f"Mail {i}") for i in range(3)]
    assert [p.mail.subject for p in pool.parses(mails, PARSE, timeout=5.0) if p.mail] == [
        "Mail 0",
        "Mail 1",
        "Mail 2",
    ]
    assert pool.pids() == started  # the same process: no second spawn


def test_a_mail_that_outlasts_the_time_limit_is_stored_unparsed(pool: ParsePool) -> None:
    mails = [make_mail(subject=f"Mail {i}") for i in range(20)]
    mails.insert(12, slow_mail())
    got = list(pool.parses(mails, PARSE, timeout=1.0))
    assert len(got) == 21
    assert got[12].mail is None
    assert got[12].problem == "parsing took longer than 1 s; stored without parsing"
    # Every other mail of the batch, before and after it, parsed as usual and in order.
    assert [p.mail.subject for p in got if p.mail] == [f"Mail {i}" for i in range(20)]
    assert pool.pids(), "a fresh parser process took over"


def test_with_a_time_limit_a_single_mail_parses_in_the_pool(pool: ParsePool) -> None:
    (got,) = pool.parses([slow_mail()], PARSE, timeout=1.0)
    assert got.mail is None and "longer than 1 s" in (got.problem or "")
    (fine,) = pool.parses([make_mail(subject="Next")], PARSE, timeout=1.0)
    assert fine.mail is not None and fine.mail.subject == "Next"


def test_a_stuck_mail_is_caught_when_another_worker_waits_behind_it(pool: ParsePool) -> None:
    """Two mailboxes share the parser. The one queued behind the stuck mail may reach the
    limit first and kill the process: the stuck mail must still be found and set aside,
    never parsed in its worker's thread (where nothing could stop it)."""
    first = [make_mail(subject=f"First {i}") for i in range(300)] + [slow_mail()]
    second = [make_mail(subject=f"Second {i}") for i in range(5)]
    got: dict[str, list[Parsed]] = {}

    def run(name: str, mails: list[bytes]) -> None:
        got[name] = list(pool.parses(mails, PARSE, timeout=1.0))

    one = threading.Thread(target=run, args=("first", first))
    one.start()
    time.sleep(0.05)  # the second batch queues behind the first, stuck mail included
    run("second", second)
    one.join()
    assert got["first"][-1].mail is None
    assert got["first"][-1].problem == "parsing took longer than 1 s; stored without parsing"
    assert [p.mail.subject for p in got["first"] if p.mail] == [f"First {i}" for i in range(300)]
    assert [p.mail.subject for p in got["second"] if p.mail] == [f"Second {i}" for i in range(5)]


def test_a_pool_closed_while_a_mail_is_stuck_still_gives_every_parse(pool: ParsePool) -> None:
    """Shutdown under a stuck parse: the limit still fires, no fresh process may start,
    and the batch still gets one parse per mail (here the stuck one, in the worker)."""
    mails = [make_mail(subject=f"Mail {i}") for i in range(12)] + [slow_mail()]
    got: list[Parsed] = []
    worker = threading.Thread(target=lambda: got.extend(pool.parses(mails, PARSE, timeout=1.0)))
    worker.start()
    time.sleep(0.3)
    pool.close()
    worker.join()
    assert len(got) == len(mails)
    assert [p.mail.subject for p in got[:12] if p.mail] == [f"Mail {i}" for i in range(12)]


def test_a_killed_parser_process_costs_the_batch_nothing(pool: ParsePool) -> None:
    mails = [make_mail(subject=f"Mail {i}") for i in range(40)]
    assert len(list(pool.parses(mails, PARSE))) == 40
    (pid,) = pool.pids()
    os.kill(pid, signal.SIGKILL)
    time.sleep(0.2)
    got = list(pool.parses(mails, PARSE))  # parsed in the worker meanwhile
    assert [p.mail.subject for p in got if p.mail] == [f"Mail {i}" for i in range(40)]
    again = list(pool.parses(mails, PARSE))  # and a fresh process takes over
    assert len(again) == 40
    assert pool.pids() and pool.pids() != [pid]


def test_the_parser_process_leaves_with_a_killed_daemon(tmp_path: Path) -> None:
    script = (
        "import sys, time\n"
        "from inboxd.mail.parsepool import ParsePool\n"
        "pool = ParsePool()\n"
        "mail = b'From: a@example.com\\r\\nSubject: s\\r\\n\\r\\nbody\\r\\n'\n"
        "from functools import partial\n"
        "from inboxd.mail.parse import parse_for_intake\n"
        "list(pool.parses([mail] * 20, partial(parse_for_intake, max_bytes=10**6)))\n"
        "print(pool.pids()[0], flush=True)\n"
        "time.sleep(60)\n"
    )
    daemon = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert daemon.stdout is not None
        parser = int(daemon.stdout.readline())
        daemon.kill()
        daemon.wait(5)
        deadline = time.monotonic() + 5
        while _alive(parser) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _alive(parser)
    finally:
        daemon.kill()


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_intake_takes_the_parsers_verdict_only_for_the_config_it_was_made_for(
    engine: Engine,
) -> None:
    """A verdict made in the parser process stands; one made before a reload changed our
    addresses is made again (here the sender became one of ours: `own`, not `human`)."""
    from inboxd.db import session_scope
    from inboxd.tickets import intake

    before = IntakeConfig(secret=b"x", own_addresses=frozenset({"support@example.com"}))
    after = IntakeConfig(
        secret=b"x", own_addresses=frozenset({"support@example.com", "desk@example.com"})
    )
    mails = [make_mail(sender="desk@example.com", subject=f"Printer {i}") for i in range(2)]
    screened = [before.reader()(m) for m in mails]
    assert [p.verdict.kind for p in screened] == ["human", "human"]
    with session_scope(engine) as s:
        kept = intake.receive(s, before, mailbox="support", data=mails[0], parsed=screened[0])
        redone = intake.receive(s, after, mailbox="support", data=mails[1], parsed=screened[1])
    assert (kept.classification, redone.classification) == ("human", "own")
    assert kept.outcome == "new-ticket" and redone.outcome == "no-ticket"
