"""`inboxd run`: mailbox threads, the asyncio loop (heartbeat, scheduled work), signals.

The main thread runs the loop; each mailbox has its own thread with its own IMAP client
and database sessions. They share a stop event and a nudge, nothing else. TERM/INT stop
gracefully (workers leave IDLE within a second and finish their transaction); HUP
reloads the rules and keeps the old set when the new one fails the check.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine
from sqlmodel import select

from inboxd import alerts
from inboxd.balance import Balancer
from inboxd.checkpoint import WalCheckpointer
from inboxd.clock import Clock, utcnow
from inboxd.config import Settings
from inboxd.db import make_engine, require_schema, session_scope
from inboxd.errors import ConfigError
from inboxd.leases import DaemonPresence, daemon_lock, live_daemon_ids
from inboxd.mail import smtp
from inboxd.mail.imap import MailboxWorker, WorkerContext
from inboxd.models import Daemon
from inboxd.tickets import intake, tokens
from inboxd.tickets.outbox import OWNER_DEAD_AFTER
from inboxd.wiring import load_checked_rules

if TYPE_CHECKING:
    from inboxd.mail.parsepool import ParsePool

log = logging.getLogger("inboxd.daemon")

HEARTBEAT_S = 10.0
PURGE_EVERY_S = 3600.0
SHUTDOWN_JOIN_S = 4.0


@dataclass
class Runtime:
    """The state a running daemon swaps atomically on reload."""

    settings: Settings
    engine: Engine
    clock: Clock = utcnow
    daemon_id: str = field(
        default_factory=lambda: f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
    )
    # Stale-mailbox alerts count from here when it is later than the last good sync, so
    # a daemon back after a long stop may catch up first; None for `run --once`.
    alert_since: datetime | None = None
    # PostgreSQL `run`: held for the daemon's life, so peers count it live (see balance.py).
    presence: DaemonPresence | None = None
    checkpointer: WalCheckpointer | None = None
    parse_pool: ParsePool | None = None
    _intake: intake.IntakeConfig | None = None

    def intake_config(self) -> intake.IntakeConfig:
        assert self._intake is not None
        return self._intake

    def load(self) -> None:
        """(Re)load rules and derived settings; raises ConfigError and keeps the old ones."""
        rules = load_checked_rules(self.settings)
        with session_scope(self.engine) as s:
            secret = tokens.reply_secret(s, self.settings.inboxd.secret())
        self._intake = intake.IntakeConfig.from_settings(
            self.settings, secret=secret, rules=rules, clock=self.clock
        )

    def checkpoint_in_background(self) -> None:
        """SQLite: WAL checkpoints off the writers' threads, for long write-heavy runs."""
        if self.engine.dialect.name == "sqlite" and self.checkpointer is None:
            self.checkpointer = WalCheckpointer(self.engine)

    def parse_ahead(self) -> None:
        """Batches parse in a second process while the workers store them (two cores up)."""
        from inboxd.mail.parsepool import ParsePool  # the daemon's alone: `deliver` skips it

        if self.parse_pool is None:
            self.parse_pool = ParsePool.for_this_machine()

    def close(self) -> None:
        if self.parse_pool is not None:
            self.parse_pool.close()
            self.parse_pool = None
        if self.checkpointer is not None:
            self.checkpointer.close()
            self.checkpointer = None
        self.engine.dispose()

    def workers(
        self,
        halt: threading.Event,
        nudge: Callable[[], None],
        balancer: Balancer | None = None,
    ) -> list[MailboxWorker]:
        ctx = WorkerContext(
            engine=self.engine,
            intake_config=self.intake_config,
            halt=halt,
            nudge=nudge,
            on_error=lambda mailbox, kind, error: self.mailbox_failed(mailbox, kind, error, nudge),
            owner=self.daemon_id,
            clock=self.clock,
            balancer=balancer,
            parse_pool=self.parse_pool,
        )
        return [MailboxWorker(mb, ctx) for mb in self.settings.mailboxes if mb.imap is not None]

    def balancer(self) -> Balancer | None:
        """Fair sharing of the mailboxes with the other live daemons (PostgreSQL only)."""
        if self.engine.dialect.name != "postgresql":
            return None  # SQLite: one daemon per database (flock)
        self.presence = DaemonPresence(self.engine, self.daemon_id)
        self.presence.hold()
        return Balancer(
            me=self.daemon_id,
            mailboxes=sum(1 for mb in self.settings.mailboxes if mb.imap is not None),
            live=lambda: live_daemon_ids(
                self.engine, now=self.clock(), dead_after=OWNER_DEAD_AFTER
            ),
        )

    def mailbox_failed(
        self, mailbox: str, kind: str, error: str, nudge: Callable[[], None]
    ) -> None:
        """A worker's error hook (its thread): alert the admins at once when it is lasting."""
        try:
            if alerts.report_error(
                self.engine,
                self.settings,
                mailbox=mailbox,
                kind=kind,
                error=error,
                now=self.clock(),
                reporter=self.daemon_id,
            ):
                nudge()  # the alert waits in the outbox: wake the sender
        except Exception as exc:  # noqa: BLE001 - the periodic check alerts later instead
            log.warning("alert not recorded", extra={"mailbox": mailbox, "error": str(exc)})

    def heartbeat(self, *, stopped: bool = False) -> None:
        if self.presence is not None and not stopped:
            self.presence.hold()  # re-taken if the database dropped our session
        now = self.clock()
        host, pid = socket.gethostname(), os.getpid()
        with session_scope(self.engine) as s:
            row = s.get(Daemon, self.daemon_id)
            if row is None:
                row = Daemon(
                    id=self.daemon_id,
                    host=host,
                    pid=pid,
                    started_at=now,
                    heartbeat_at=now,
                    mailboxes=[mb.name for mb in self.settings.mailboxes],
                )
            row.heartbeat_at = now
            row.stopped_at = now if stopped else None
            s.add(row)


def open_runtime(settings: Settings) -> Runtime:
    engine = make_engine(settings.inboxd.database)
    require_schema(engine)
    runtime = Runtime(settings=settings, engine=engine)
    runtime.load()
    return runtime


@dataclass(frozen=True, slots=True)
class OnceResult:
    """What `inboxd run --once` did: new mail per mailbox (None: not synced), outbox counts."""

    mailboxes: dict[str, int | None]
    outbox: dict[str, int]  # sent, deferred, failed, requeued (see `smtp.flush`)


def run_once(settings: Settings) -> OnceResult:
    """Sync every mailbox once, do the scheduled work, then try every queued outgoing mail."""
    runtime = open_runtime(settings)
    runtime.checkpoint_in_background()
    runtime.parse_ahead()
    with daemon_lock(runtime.engine):
        runtime.heartbeat()
        halt = threading.Event()
        results: dict[str, int | None] = {}
        for worker in runtime.workers(halt, lambda: None):
            results[worker.mb.name] = worker.run_once()
        for name, job in scheduled_jobs(runtime):
            _run_job(name, job)  # escalations and alerts it queues go out in the flush below
        sent = asyncio.run(_flush_outbox(runtime))
        log.info("outbox flushed", extra=sent)
        runtime.heartbeat(stopped=True)
    runtime.close()
    return OnceResult(mailboxes=results, outbox=sent)


def scheduled_jobs(runtime: Runtime) -> list[tuple[str, Callable[[], object]]]:
    """The periodic work: SLA sweep (and escalations), retention purge, mailbox alerts,
    the daily merge of SQLite's search index."""
    from inboxd.tickets import privacy, searchindex, sla

    settings, engine = runtime.settings, runtime.engine
    return [
        ("sla-sweep", lambda: sla.run_sweep(engine, settings, runtime.clock())),
        ("retention-purge", lambda: privacy.run_purge(engine, settings, runtime.clock())),
        (
            "search-index",
            lambda: searchindex.optimize_if_due(
                engine,
                runtime.clock(),
                zone=settings.inboxd.zone,
                hour=settings.inboxd.search_merge_hour,
            ),
        ),
        (
            "mailbox-alerts",
            lambda: alerts.run_check(
                engine,
                settings,
                runtime.clock(),
                since=runtime.alert_since,
                reporter=runtime.daemon_id,
            ),
        ),
    ]


def _run_job(name: str, job: Callable[[], object]) -> None:
    """Run one job; a failure is logged and the schedule goes on."""
    try:
        job()
    except Exception:
        log.exception("scheduled job failed", extra={"job": name})


def _start_scheduler(runtime: Runtime, nudge: Callable[[], None]) -> Any:
    """apscheduler 3.x in the loop's thread pool; every process runs the idempotent jobs.

    3.x cannot share a job store between processes: the sweep is exactly-once by its
    advisory lock and fired markers, the purge by being idempotent.
    """
    from apscheduler.schedulers.asyncio import AsyncIOScheduler

    scheduler = AsyncIOScheduler(
        timezone=UTC,
        job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": 30},
    )
    intervals = {
        "sla-sweep": runtime.settings.inboxd.sweep_interval.total_seconds(),
        "retention-purge": PURGE_EVERY_S,
        "search-index": PURGE_EVERY_S,  # checks hourly, merges in the quiet hour
        "mailbox-alerts": runtime.settings.inboxd.sweep_interval.total_seconds(),
    }
    for name, job in scheduled_jobs(runtime):

        def run(name: str = name, job: Callable[[], object] = job) -> None:
            _run_job(name, job)
            nudge()  # escalation mail waits in the outbox: wake the sender

        scheduler.add_job(
            run, "interval", seconds=intervals[name], id=name, next_run_time=runtime.clock()
        )
    scheduler.start()
    return scheduler


async def _flush_outbox(runtime: Runtime) -> dict[str, int]:
    """`smtp.flush`, heartbeating meanwhile: other daemons must not think us dead mid-send."""

    async def beat() -> None:
        while True:
            await asyncio.sleep(HEARTBEAT_S)
            await asyncio.to_thread(runtime.heartbeat)

    beat_task = asyncio.create_task(beat())
    try:
        return await smtp.flush(
            runtime.settings, runtime.engine, owner=runtime.daemon_id, clock=runtime.clock
        )
    finally:
        beat_task.cancel()


def serve(settings: Settings) -> None:
    """Run until SIGTERM/SIGINT."""
    runtime = open_runtime(settings)
    runtime.checkpoint_in_background()
    runtime.parse_ahead()
    if runtime.parse_pool is not None:
        runtime.parse_pool.start_in_background()
    with daemon_lock(runtime.engine):
        asyncio.run(_serve(runtime))
    runtime.close()


async def _serve(runtime: Runtime) -> None:
    runtime.alert_since = runtime.clock()
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    wake = asyncio.Event()
    halt = threading.Event()

    def reload() -> None:
        try:
            runtime.load()
            log.info("reloaded")
        except ConfigError as exc:
            log.error("reload refused, keeping the running rules", extra={"error": str(exc)})

    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    loop.add_signal_handler(signal.SIGHUP, reload)

    def nudge() -> None:  # called from mailbox threads after a commit
        loop.call_soon_threadsafe(wake.set)

    from inboxd.metrics import start_metrics

    metrics = start_metrics(runtime.settings, runtime.engine)
    balancer = await asyncio.to_thread(runtime.balancer)
    await asyncio.to_thread(runtime.heartbeat)
    threads = [
        threading.Thread(target=w.run, name=f"imap:{w.mb.name}", daemon=True)
        for w in runtime.workers(halt, nudge, balancer)
    ]
    for t in threads:
        t.start()
    sender = asyncio.create_task(
        smtp.run_sender(
            runtime.settings,
            runtime.engine,
            wake=wake,
            stop=stop,
            owner=runtime.daemon_id,
            clock=runtime.clock,
        )
    )
    scheduler = _start_scheduler(runtime, nudge)
    log.info("started", extra={"daemon": runtime.daemon_id, "mailboxes": len(threads)})

    async def beat() -> None:
        while not stop.is_set():
            try:
                await asyncio.to_thread(runtime.heartbeat)
            except Exception as exc:  # noqa: BLE001 - a missed heartbeat is logged, not fatal
                log.warning("heartbeat failed", extra={"error": str(exc)})
            try:
                await asyncio.wait_for(stop.wait(), HEARTBEAT_S)
            except TimeoutError:
                pass

    beat_task = asyncio.create_task(beat())
    await stop.wait()
    log.info("stopping")
    halt.set()
    scheduler.shutdown(wait=False)
    if metrics is not None:
        metrics.close()
    await beat_task
    if runtime.presence is not None:
        # Peers count us gone at once and take the mailboxes as our workers let go.
        await asyncio.to_thread(runtime.presence.release)
        runtime.presence = None
    # The sender finishes or cuts its send (smtp.STOP_GRACE_S) while the threads wind down.
    done = await asyncio.gather(
        sender,
        *(asyncio.to_thread(t.join, SHUTDOWN_JOIN_S) for t in threads),
        return_exceptions=True,
    )
    if isinstance(done[0], BaseException):
        log.error("outbox sender crashed", extra={"error": repr(done[0])})
    alive = [t.name for t in threads if t.is_alive()]
    if alive:
        log.warning("threads still busy at exit", extra={"threads": ",".join(alive)})
    await asyncio.to_thread(runtime.heartbeat, stopped=True)
    log.info("stopped")


def live_daemons(engine: Engine, *, stale_after_s: float, now: Clock = utcnow) -> list[Daemon]:
    with session_scope(engine) as s:
        rows = s.exec(select(Daemon).where(Daemon.stopped_at.is_(None))).all()  # type: ignore[union-attr]
    current = now()
    return [r for r in rows if (current - r.heartbeat_at).total_seconds() <= stale_after_s]
