"""Parsing beside the database work: a process that parses a batch while intake stores it.

Intake spends about a fifth of each mail in mail-parser and a good half in database
statements, one after the other on one core. A mailbox worker with a fetched batch hands
the raw mails to this pool in a few chunks and then stores them in order, each as soon
as its parse is back: the second core parses mail n+1.. while the first stores mail n.
The worker fetches and hands over the next batch before it stores the current one, so
the parser is a batch ahead and storing never waits for it.

The pool is also the daemon's guard against a mail the parser gets stuck on: a parse
that outlasts `[inboxd] parse_timeout` is killed with its process, and that mail is
stored unparsed and quarantined instead of holding up its mailbox. So with a time limit
every batch parses here, even a single IDLE mail (a round trip costs about a
millisecond); without one, batches under `POOL_MIN_BATCH` parse in the caller's thread.
The pool starts on first use, so `run --once` over a quiet mailbox never spawns it;
`inboxd run` starts it at once, so its first mail does not wait for the spawn.
When the process dies, its chunk parses in-process as before, where the poison-mail
guard (`mailboxes.POISON_LIMIT`) deals with a mail that kills parsers.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import CancelledError, Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from multiprocessing import get_context
from typing import Any

from inboxd.mail.parse import Parsed, parse

log = logging.getLogger("inboxd.parsepool")

POOL_MIN_BATCH = 8  # without a time limit, fewer mails parse in the caller's thread
CHUNK = 10  # mails per task: small enough that storing starts early, big enough to amortise
FIRST_CHUNK = 2  # the worker waits for the first chunk with nothing to store meanwhile
KILLED_RETRIES = 3  # a mail whose parser another worker's limit killed is tried again


class _Killed(Exception):
    """The parser process was killed, for a mail it was stuck on, under this chunk."""


Read = Callable[[bytes], Parsed]
"""What the pool runs on each mail: a picklable function (a module-level one, or a
`functools.partial` of one), `parse_for_intake` or one that also does intake's mail-only
work (`classify.screened`), so that the worker's thread does less."""


def _parse_chunk(datas: Sequence[bytes], read: Read) -> list[Parsed]:
    return [read(d) for d in datas]


class ParsePool:
    """One parser process, shared by every mailbox worker of a daemon."""

    def __init__(self, processes: int = 1) -> None:
        self._processes = processes
        self._executor: ProcessPoolExecutor | None = None
        self._lock = threading.Lock()
        self._closed = False
        self._killed: weakref.WeakSet[ProcessPoolExecutor] = weakref.WeakSet()

    @classmethod
    def for_this_machine(cls) -> ParsePool | None:
        """A pool when a second core can run it; None on one core (nothing to gain)."""
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1
        return cls() if cores >= 2 else None

    def parses(
        self, datas: Sequence[bytes], read: Read, *, timeout: float | None = None
    ) -> Iterator[Parsed]:
        """The parse of each mail, in order; parsed ahead in the pool when it is worth it.

        The mails are handed to the pool at once, before the first parse is asked for:
        a worker starts the next batch's parse, then stores the current one.
        A chunk not back within `timeout` seconds of being awaited holds a mail the parser
        is stuck on: the process is killed and the chunk's mails parsed one at a time in
        a fresh one, each with the same limit; a mail that runs out of it comes back as
        unparsed, with the reason, to be quarantined. The rest of the batch goes on.
        """
        executor = self._executor_for(len(datas), timeout) if datas else None
        if executor is None:
            return (read(d) for d in datas)
        head = datas[:FIRST_CHUNK]
        chunks = [head, *(datas[i : i + CHUNK] for i in range(len(head), len(datas), CHUNK))]
        futures = self._submit(executor, chunks, read)
        return self._collect(executor, chunks, futures, read, timeout)

    def _collect(
        self,
        executor: ProcessPoolExecutor,
        chunks: list[Sequence[bytes]],
        futures: list[Future[list[Parsed]]],
        read: Read,
        timeout: float | None,
    ) -> Iterator[Parsed]:
        for k, chunk in enumerate(chunks):
            future = futures[k] if k < len(futures) else None
            try:
                yield from self._results(executor, future, chunk, read, timeout)
            except (TimeoutError, _Killed) as exc:
                if isinstance(exc, TimeoutError):
                    log.warning("parser stuck on a chunk; parsing its mails one at a time")
                    self._kill(executor)
                yield from (self._one(data, read, timeout) for data in chunk)
                fresh = self._executor_for(sum(map(len, chunks)), timeout)
                if fresh is not None:
                    executor = fresh
                    futures[k + 1 :] = self._submit(executor, chunks[k + 1 :], read)

    def _submit(
        self, executor: ProcessPoolExecutor, chunks: list[Sequence[bytes]], read: Read
    ) -> list[Future[list[Parsed]]]:
        futures: list[Future[list[Parsed]]] = []
        try:
            for chunk in chunks:
                futures.append(executor.submit(_parse_chunk, chunk, read))
        except (BrokenProcessPool, RuntimeError):  # broken or shut down meanwhile
            self._discard(executor)
        return futures

    def _results(
        self,
        executor: ProcessPoolExecutor,
        future: Future[list[Parsed]] | None,
        chunk: Sequence[bytes],
        read: Read,
        timeout: float | None,
    ) -> Iterator[Parsed]:
        """The chunk's parses; raises TimeoutError past the limit, `_Killed` when another
        worker's limit killed the process under it."""
        if future is None and executor in self._killed:
            raise _Killed
        if future is not None:
            try:
                parsed = future.result(timeout=timeout)
            except BrokenProcessPool:
                if executor in self._killed:
                    raise _Killed from None
                log.warning("parser process died; parsing in the worker")
                self._discard(executor)
            except CancelledError:  # the pool closed under a worker still busy at shutdown
                pass
            else:
                yield from parsed
                return
        yield from (read(d) for d in chunk)

    def _one(self, data: bytes, read: Read, timeout: float | None) -> Parsed:
        """One mail in a pool of its own turn, under the limit: finds the one stuck."""
        for _ in range(KILLED_RETRIES):
            executor = self._executor_for(1, timeout)
            if executor is None:  # closed, or a fresh process would not start
                break
            future = self._submit(executor, [[data]], read)
            if not future:
                continue  # the pool broke before it took the mail
            try:
                (parsed,) = self._results(executor, future[0], [data], read, timeout)
            except _Killed:
                continue  # another worker's stuck mail: this one gets a fresh try
            except TimeoutError:
                self._kill(executor)
                log.warning("parser stuck on a mail; storing it unparsed")
                return Parsed(
                    None, f"parsing took longer than {timeout:g} s; stored without parsing"
                )
            return parsed
        return read(data)

    def start_in_background(self) -> None:
        """Spawn the parser process now, off the caller's thread: the daemon's first
        fetched mail then does not wait the quarter second a spawn takes."""
        threading.Thread(
            target=self._executor_for, args=(1, 1.0), name="parser-start", daemon=True
        ).start()

    def _executor_for(self, n: int, timeout: float | None) -> ProcessPoolExecutor | None:
        """The running pool, started if need be; None: parse `n` mails in this thread."""
        if n < POOL_MIN_BATCH and timeout is None:
            return None
        with self._lock:
            if self._executor is None and not self._closed:
                # spawn: forking a process that runs threads can copy a held lock.
                executor = ProcessPoolExecutor(
                    self._processes,
                    mp_context=get_context("spawn"),
                    initializer=_warm_up,
                    initargs=(os.getpid(),),
                )
                try:  # started and warm before any timed wait: a limit measures parsing
                    executor.submit(int).result()
                except BrokenProcessPool:
                    log.warning("parser process failed to start; parsing in the worker")
                    executor.shutdown(wait=False, cancel_futures=True)
                    return None
                self._executor = executor
            return self._executor

    def _discard(self, executor: ProcessPoolExecutor) -> None:
        """Drop a broken pool; the next batch that needs one starts a fresh one."""
        with self._lock:
            if executor is self._executor:
                self._executor = None
        executor.shutdown(wait=False, cancel_futures=True)

    def _kill(self, executor: ProcessPoolExecutor) -> None:
        """Stop a parser stuck on a mail (shutdown would wait for it) and drop its pool.

        Other workers' chunks in it then fail as `_Killed`, not as a crash: they are
        parsed again in the pool, under the limit, never in their worker's thread.
        """
        self._killed.add(executor)
        procs: dict[int, Any] = getattr(executor, "_processes", None) or {}
        for proc in list(procs.values()):
            proc.kill()
        self._discard(executor)

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


def parse_all(
    pool: ParsePool | None, datas: Sequence[bytes], read: Read, timeout: float | None
) -> Iterator[Parsed]:
    """Each mail's parse, in order: in `pool` under the time limit, or here without one."""
    if pool is None:
        return (read(d) for d in datas)
    return pool.parses(datas, read, timeout=timeout)


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
