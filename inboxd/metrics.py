"""Optional Prometheus endpoint (`[inboxd] metrics = "127.0.0.1:9108"`).

Every value is read from the database when Prometheus scrapes, by a custom collector,
not counted in process memory: several daemons on several hosts then report the same
numbers, and a restart resets nothing. The queries are counts over indexes; the answer
is cached for a few seconds so concurrent scrapes cost one round of queries.
prometheus-client is an extra (`pip install 'inboxd[metrics]'`), imported only here.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine, create_engine, func, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.pool import NullPool
from sqlmodel import Session, col

from inboxd.clock import Clock, utcnow
from inboxd.db import UTCDateTime
from inboxd.errors import ConfigError, InboxdError
from inboxd.models import (
    OPEN_STATUSES,
    Delivery,
    MailboxState,
    Message,
    Outbox,
    Ticket,
    TicketEvent,
)
from inboxd.tickets import outbox

if TYPE_CHECKING:
    from inboxd.config import Settings

log = logging.getLogger("inboxd.metrics")

CACHE_S = 5.0
SLA_BREACH_KIND = "sla-breach"


@dataclass(frozen=True)
class Snapshot:
    """The numbers behind one scrape."""

    ingested: dict[str, int]  # mailbox -> deliveries
    tickets_created: int
    tickets_open: dict[str, int]  # team ("" for none) -> open or pending tickets
    acks_sent: int
    outbox_queued: int
    outbox_oldest_age_s: float
    sync_lag_s: dict[str, float]  # mailbox -> seconds since its last complete sync
    sla_breaches: int
    quarantined: int


def read_snapshot(engine: Engine, mailboxes: list[str], now: datetime) -> Snapshot:
    """Count everything the endpoint reports, in one connection."""
    with engine.connect() as conn:
        ingested = dict.fromkeys(mailboxes, 0)
        ingested |= dict(
            conn.execute(
                select(col(Delivery.mailbox), func.count()).group_by(col(Delivery.mailbox))
            ).all()
        )
        tickets_created = conn.execute(select(func.count()).select_from(Ticket)).scalar_one()
        tickets_open = {
            team or "": n
            for team, n in conn.execute(
                select(col(Ticket.team), func.count())
                .where(col(Ticket.status).in_(OPEN_STATUSES))
                .group_by(col(Ticket.team))
            ).all()
        }
        acks_sent = conn.execute(
            select(func.count())
            .select_from(Outbox)
            .where(col(Outbox.kind) == "ack", col(Outbox.status) == "sent")
        ).scalar_one()
        synced = conn.execute(select(col(MailboxState.name), col(MailboxState.last_sync_at))).all()
        breaches = conn.execute(
            select(func.count())
            .select_from(TicketEvent)
            .where(col(TicketEvent.kind) == SLA_BREACH_KIND)
        ).scalar_one()
        quarantined = conn.execute(
            select(func.count()).select_from(Message).where(col(Message.quarantined).is_(True))
        ).scalar_one()
    with Session(engine) as session:
        backlog = outbox.backlog(session, now)
    oldest_at = backlog.oldest_due_at
    return Snapshot(
        ingested={k: int(v) for k, v in ingested.items()},
        tickets_created=int(tickets_created),
        tickets_open=tickets_open,
        acks_sent=int(acks_sent),
        outbox_queued=backlog.queued + backlog.sending,
        outbox_oldest_age_s=max(0.0, (now - oldest_at).total_seconds()) if oldest_at else 0.0,
        sync_lag_s={
            name: max(0.0, (now - at).total_seconds())
            for name, raw in synced
            if (at := _aware(raw)) is not None
        },
        sla_breaches=int(breaches),
        quarantined=int(quarantined),
    )


def _aware(value: Any) -> datetime | None:
    """Aware UTC whatever the driver hands back for an aggregate (SQLite: naive)."""
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return UTCDateTime().process_result_value(value, None)  # type: ignore[arg-type]


@dataclass(eq=False)  # the registry keys collectors by identity
class InboxdCollector:
    """A prometheus-client collector over the database, cached for `cache_s` seconds."""

    engine: Engine
    mailboxes: list[str]
    clock: Clock = utcnow
    cache_s: float = CACHE_S
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _cached: tuple[float, Snapshot | None] | None = None

    def snapshot(self) -> Snapshot | None:
        """The current numbers, or None when the database cannot be read."""
        with self._lock:
            mono = time.monotonic()
            if self._cached is not None and mono - self._cached[0] < self.cache_s:
                return self._cached[1]
            try:
                snap: Snapshot | None = read_snapshot(self.engine, self.mailboxes, self.clock())
            except SQLAlchemyError as exc:
                log.warning("metrics: cannot read the database", extra={"error": str(exc)})
                snap = None
            self._cached = (mono, snap)
            return snap

    def describe(self) -> Iterator[Any]:
        yield from self._families(None)

    def collect(self) -> Iterator[Any]:
        yield from self._families(self.snapshot())

    def _families(self, snap: Snapshot | None) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        up = GaugeMetricFamily("inboxd_database_up", "1 when the last scrape read the database.")
        if snap is None:
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        ingested = CounterMetricFamily(
            "inboxd_messages_ingested",
            "Messages stored per mailbox (deliveries: one mail to two mailboxes counts twice).",
            labels=["mailbox"],
        )
        for mailbox, n in sorted(snap.ingested.items()):
            ingested.add_metric([mailbox], n)
        yield ingested
        yield CounterMetricFamily(
            "inboxd_tickets_created", "Tickets ever opened.", value=snap.tickets_created
        )
        open_ = GaugeMetricFamily(
            "inboxd_tickets_open", "Open or pending tickets per team.", labels=["team"]
        )
        for team, n in sorted(snap.tickets_open.items()):
            open_.add_metric([team], n)
        yield open_
        yield CounterMetricFamily(
            "inboxd_acks_sent", "Acknowledgements delivered to customers.", value=snap.acks_sent
        )
        yield GaugeMetricFamily(
            "inboxd_outbox_queued",
            "Outgoing mail not yet delivered (queued or being sent).",
            value=snap.outbox_queued,
        )
        yield GaugeMetricFamily(
            "inboxd_outbox_oldest_queued_age_seconds",
            "Age of the oldest undelivered outgoing mail; 0 when none waits.",
            value=snap.outbox_oldest_age_s,
        )
        lag = GaugeMetricFamily(
            "inboxd_mailbox_sync_lag_seconds",
            "Seconds since the mailbox's last complete sync (absent: never synced).",
            labels=["mailbox"],
        )
        for mailbox, seconds in sorted(snap.sync_lag_s.items()):
            lag.add_metric([mailbox], seconds)
        yield lag
        yield CounterMetricFamily(
            "inboxd_sla_breaches",
            "SLA breaches recorded (sla-breach events).",
            value=snap.sla_breaches,
        )
        yield GaugeMetricFamily(
            "inboxd_quarantined_messages",
            "Messages stored but quarantined (unparsable, oversize, failed processing).",
            value=snap.quarantined,
        )


@dataclass
class MetricsHandle:
    """A running endpoint; `close()` stops it (the daemon calls it on shutdown)."""

    host: str
    port: int
    collector: InboxdCollector
    _server: Any
    _thread: threading.Thread
    _reader: Engine | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/metrics"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
        if self._reader is not None:
            self._reader.dispose()


def reader_engine(engine: Engine) -> tuple[Engine, bool]:
    """An engine for scrapes: (engine, whether it is ours to dispose).

    inboxd's SQLite engines open every transaction with BEGIN IMMEDIATE (the write
    lock); a scrape must not queue behind the intake, so SQLite gets a plain reader.
    """
    if engine.dialect.name != "sqlite":
        return engine, False
    reader = create_engine(
        engine.url,
        poolclass=NullPool,
        connect_args={"timeout": 5, "check_same_thread": False},
    )
    return reader, True


def start_metrics(
    settings: Settings, engine: Engine, *, clock: Clock = utcnow, cache_s: float = CACHE_S
) -> MetricsHandle | None:
    """Serve /metrics on `[inboxd] metrics` (default host 127.0.0.1); None when it is unset.

    Raises ConfigError when prometheus-client is missing, InboxdError when the address
    cannot be bound. The server runs in daemon threads.
    """
    bind = settings.inboxd.metrics_bind
    if bind is None:
        return None
    try:
        from prometheus_client import CollectorRegistry, start_http_server
    except ImportError:
        raise ConfigError(
            "[inboxd] metrics is set but prometheus-client is not installed "
            "(pip install 'inboxd[metrics]', or remove metrics from inboxd.toml)"
        ) from None
    host, port = bind
    reader, owned = reader_engine(engine)
    collector = InboxdCollector(
        reader, [mb.name for mb in settings.mailboxes], clock=clock, cache_s=cache_s
    )
    registry = CollectorRegistry()
    registry.register(collector)
    try:
        server, thread = start_http_server(port, addr=host, registry=registry)
    except OSError as exc:
        if owned:
            reader.dispose()
        raise InboxdError(f"metrics: cannot listen on {host}:{port}: {exc.strerror}") from None
    log.info("metrics listening", extra={"url": f"http://{host}:{port}/metrics"})
    return MetricsHandle(host, port, collector, server, thread, reader if owned else None)
