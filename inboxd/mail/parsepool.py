"""Parsing beside the database work: a process that parses a batch while intake stores it.

Intake spends about a fifth of each mail in mail-parser and a good half in database
statements, one after the other on one core. A mailbox worker with a fetched batch hands
the raw mails to this pool in a few chunks and then stores them in order, each as soon
as its parse is back: the second core parses mail n+1.. while the first stores mail n.

Small batches (an IDLE wake-up brings one or two mails) parse in the worker's own thread:
a round trip to another process costs more than it saves there. The pool starts on the
first large batch, so `run --once` over a quiet mailbox never spawns it. When the pool
breaks (its process died) or is closed, the batch parses in-process as before, where
the poison-mail guard (`mailboxes.POISON_LIMIT`) deals with a mail that kills parsers.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import CancelledError, Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from multiprocessing import get_context

from inboxd.mail.parse import Parsed, parse, parse_for_intake

log = logging.getLogger("inboxd.parsepool")

POOL_MIN_BATCH = 8  # fewer mails than this parse in the worker's own thread
CHUNK = 10  # mails per task: small enough that storing starts early, big enough to amortise


def _parse_chunk(datas: Sequence[bytes], max_bytes: int) -> list[Parsed]:
    return [parse_for_intake(d, max_bytes) for d in datas]


class ParsePool:
    """One parser process, shared by every mailbox worker of a daemon."""

    def __init__(self, processes: int = 1) -> None:
        self._processes = processes
        self._executor: ProcessPoolExecutor | None = None
        self._lock = threading.Lock()
        self._closed = False

    @classmethod
    def for_this_machine(cls) -> ParsePool | None:
        """A pool when a second core can run it; None on one core (nothing to gain)."""
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1
        return cls() if cores >= 2 else None

    def parses(self, datas: Sequence[bytes], max_bytes: int) -> Iterator[Parsed]:
        """The parse of each mail, in order; parsed ahead in the pool when it is worth it."""
        executor = self._executor_for(len(datas))
        if executor is None:
            yield from (parse_for_intake(d, max_bytes) for d in datas)
            return
        futures: list[Future[list[Parsed]]] = []
        try:
            for i in range(0, len(datas), CHUNK):
                futures.append(executor.submit(_parse_chunk, datas[i : i + CHUNK], max_bytes))
        except (BrokenProcessPool, RuntimeError):  # broken or shut down meanwhile
            self._discard(executor)
        for i in range(0, len(datas), CHUNK):
            chunk = datas[i : i + CHUNK]
            k = i // CHUNK
            yield from self._results(futures[k] if k < len(futures) else None, chunk, max_bytes)

    def _results(
        self, future: Future[list[Parsed]] | None, chunk: Sequence[bytes], max_bytes: int
    ) -> Iterator[Parsed]:
        if future is not None:
            try:
                yield from future.result()
                return
            except BrokenProcessPool:
                log.warning("parser process died; parsing in the worker")
                self._discard(None)
            except CancelledError:  # the pool closed under a worker still busy at shutdown
                pass
        yield from (parse_for_intake(d, max_bytes) for d in chunk)

    def _executor_for(self, n: int) -> ProcessPoolExecutor | None:
        if n < POOL_MIN_BATCH:
            return None
        with self._lock:
            if self._executor is None and not self._closed:
                # spawn: forking a process that runs threads can copy a held lock.
                self._executor = ProcessPoolExecutor(
                    self._processes,
                    mp_context=get_context("spawn"),
                    initializer=_warm_up,
                    initargs=(os.getpid(),),
                )
            return self._executor

    def _discard(self, executor: ProcessPoolExecutor | None) -> None:
        """Drop a broken pool; the next large batch starts a fresh one."""
        with self._lock:
            broken = executor or self._executor
            if broken is not None and broken is self._executor:
                self._executor = None
        if broken is not None:
            broken.shutdown(wait=False, cancel_futures=True)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=True, cancel_futures=True)

    def pids(self) -> list[int]:
        """The parser processes (for memory figures)."""
        executor = self._executor
        procs: dict[int, object] = getattr(executor, "_processes", None) or {}
        return list(procs)


def _warm_up(parent: int) -> None:
    """In the parser process: leave with the daemon, and import the parser's
    dependencies before the first batch arrives."""

    def watch() -> None:  # a SIGKILLed daemon cannot shut its pool down; it may be
        # gone before this runs, so the daemon's pid is given, not read here.
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(0)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()
    parse(b"From: a@example.com\r\nSubject: warm-up\r\n\r\nhello\r\n")
