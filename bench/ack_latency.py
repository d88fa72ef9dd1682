"""Arrival -> acknowledgement benchmark: a real `inboxd run` under IDLE, one run.

    python -m bench.ack_latency [--messages 200] [--gap-ms 50-100] [--db sqlite|postgresql]
                                [--keep]

Starts a private Dovecot and an aiosmtpd sink from tests/servers.py (and PostgreSQL for
--db postgresql), runs `inboxd run` in a child process watching the Dovecot INBOX under
IDLE and answering through the sink, then APPENDs N new customer mails one by one from a
second IMAP connection, spaced by a random gap. Each comes from its own sender, so the
ack rate limit never holds one back. It measures, per mail, from the start of its APPEND:

  (a) baseline: the IMAP server's IDLE notification (`* n EXISTS`) seen by a third
      connection that only IDLEs: the floor of any IDLE client;
  (b) the acknowledgement accepted by the SMTP sink (matched by its In-Reply-To),

and prints p50/p99 of both, the ratio b/a, and where (b) goes: mail stored and ack
queued (`message.received_at`, the instant of the intake transaction, which writes both),
the row visible to a reader polling every 10 ms (committed: the mailbox worker commits a
fetched batch at once), ack sent (`outbox.sent_at`).
The clocks compared are all `time.time()` on this host. A plain script, not a test.
"""

from __future__ import annotations

import argparse
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from email.message import EmailMessage
from email.parser import BytesHeaderParser
from email.utils import format_datetime, make_msgid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from servers import Dovecot, Postgres, SmtpSink  # noqa: E402
from support import Box, write_config  # noqa: E402

SLA = """
[sla.standard]
first_response = "4h"
resolution = "3d"

[sla_defaults]
default = "standard"
"""


class TimedSink(SmtpSink):
    """The test sink, noting when each message arrived, by the Message-ID it answers."""

    def __init__(self) -> None:
        super().__init__()
        self.arrived: dict[str, float] = {}

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        at = time.time()
        answered = BytesHeaderParser().parsebytes(bytes(envelope.content))["In-Reply-To"]
        if answered:
            self.arrived.setdefault(str(answered).strip(), at)
        return await super().handle_DATA(server, session, envelope)


class IdleWatcher(threading.Thread):
    """A bare IMAP client in IDLE: when the server announced each message number."""

    def __init__(self, dovecot: Dovecot, user: str) -> None:
        super().__init__(daemon=True)
        self.client = dovecot.client(user, timeout=30)
        self.client.select_folder("INBOX")
        self.seen: dict[int, float] = {}  # message sequence number -> time announced
        self.stop = threading.Event()
        self.ready = threading.Event()

    def run(self) -> None:
        last = 0
        self.client.idle()
        self.ready.set()
        while not self.stop.is_set():
            for item in self.client.idle_check(timeout=0.5):
                if len(item) >= 2 and item[1] == b"EXISTS":
                    at = time.time()
                    for seq in range(last + 1, int(item[0]) + 1):  # EXISTS may cover several
                        self.seen.setdefault(seq, at)
                    last = max(last, int(item[0]))
        self.client.idle_done()
        self.client.logout()


class RowWatcher(threading.Thread):
    """Polls the database every 10 ms: when each probe's row was first visible (committed)."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        from inboxd.db import make_engine

        self.engine = make_engine(url)
        self.seen: dict[str, float] = {}  # <message-id> -> time its row was first read
        self.stop = threading.Event()

    def run(self) -> None:
        from sqlalchemy import text

        query = text("SELECT id, message_id FROM message WHERE id > :last AND direction = 'in'")
        last = 0
        while not self.stop.is_set():
            with self.engine.connect() as conn:
                rows = conn.execute(query, {"last": last}).all()
            at = time.time()
            for pk, message_id in rows:
                last = max(last, pk)
                self.seen.setdefault(f"<{message_id}>", at)
            time.sleep(0.01)
        self.engine.dispose()


def probe(i: int) -> tuple[str, bytes]:
    """A new customer's first mail, from a sender of its own (no ack rate limit)."""
    msg = EmailMessage()
    mid = make_msgid(domain="probe.example")
    msg["From"] = f"Customer {i} <customer{i}@client.example>"
    msg["To"] = "support@example.com"
    msg["Subject"] = f"Latency probe {i}: the printer does not print"
    msg["Date"] = format_datetime(datetime.now(UTC))
    msg["Message-ID"] = mid
    msg.set_content("Hello,\n\nthe printer on floor 2 does not print.\n")
    return mid, msg.as_bytes()


def wait(predicate: Callable[[], bool], timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def stages(url: str, sent: dict[str, float]) -> dict[str, list[float]]:
    """Per probe, seconds from APPEND to: stored, ack sent (database clocks).

    The ack row is written in the transaction that stores the mail, with the same instant.
    """
    from sqlalchemy import text

    from inboxd.db import make_engine

    engine = make_engine(url)
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT m.message_id, m.received_at, o.sent_at FROM message m"
                " JOIN outbox o ON o.ticket_id = m.ticket_id AND o.kind = 'ack'"
                " WHERE m.direction = 'in'"
            )
        ).all()
    engine.dispose()

    def seconds(at: Any) -> float:
        value = at if isinstance(at, datetime) else datetime.fromisoformat(str(at))
        return (value if value.tzinfo else value.replace(tzinfo=UTC)).timestamp()

    out: dict[str, list[float]] = {"stored, ack queued": [], "ack sent": []}
    for message_id, received_at, sent_at in rows:
        start = sent.get(f"<{message_id}>")
        if start is None or sent_at is None:
            continue
        out["stored, ack queued"].append(seconds(received_at) - start)
        out["ack sent"].append(seconds(sent_at) - start)
    return out


def explain(url: str, missing: list[str]) -> dict[str, str]:
    """What the database says of mails whose acknowledgement never reached the sink."""
    from sqlalchemy import text

    from inboxd.db import make_engine

    engine = make_engine(url)
    out: dict[str, str] = {}
    with engine.connect() as conn:
        for mid in missing:
            row = conn.execute(
                text("SELECT ticket_id, classification FROM message WHERE message_id = :m"),
                {"m": mid.strip("<>")},
            ).first()
            if row is None:
                out[mid] = "not stored"
                continue
            found = conn.execute(
                text(
                    "SELECT e.kind, e.data, o.status, o.last_error FROM ticket_event e"
                    " LEFT JOIN outbox o ON o.ticket_id = e.ticket_id AND o.kind = 'ack'"
                    " WHERE e.ticket_id = :t AND e.kind LIKE 'ack%'"
                ),
                {"t": row[0]},
            ).all()
            out[mid] = f"ticket {row[0]} ({row[1]}): {[tuple(f) for f in found]}"
    engine.dispose()
    return out


def measure(
    dovecot: Dovecot, sink: TimedSink, url: str, work: Path, n: int, gap: tuple[float, float]
) -> None:
    from inboxd.db import upgrade

    upgrade(url)
    user, password = dovecot.new_user()
    config = write_config(
        work / "cfg",
        database=url,
        imap_port=dovecot.port,
        smtp_port=sink.port,
        boxes=[Box("support", "support@example.com", user, password)],
        extra=SLA,
    )
    log = (work / "daemon.log").open("wb")
    daemon = subprocess.Popen(
        [sys.executable, "-m", "inboxd", "--config", str(config), "run"],
        stdout=log,
        stderr=log,
    )
    watcher = IdleWatcher(dovecot, user)
    watcher.start()
    rows = RowWatcher(url)
    rows.start()
    sent: dict[str, float] = {}
    try:
        watcher.ready.wait(10)
        time.sleep(3)  # the daemon connected, caught up (nothing) and idles
        if daemon.poll() is not None:
            raise SystemExit(f"inboxd run exited {daemon.returncode}; see {work / 'daemon.log'}")
        imap = dovecot.client(user)
        rng = random.Random(1)
        for i in range(n):
            mid, data = probe(i)
            sent[mid] = time.time()
            imap.append("INBOX", data)
            time.sleep(rng.uniform(*gap))
        imap.logout()
        if not wait(lambda: len(sink.arrived) >= n, 60):
            print(f"only {len(sink.arrived)} of {n} acknowledgements arrived within 60 s")
    finally:
        watcher.stop.set()
        rows.stop.set()
        watcher.join(5)
        rows.join(5)
        daemon.terminate()
        daemon.wait(15)
        log.close()

    order = list(sent)  # APPEND order = message sequence number - 1 (empty INBOX, kept)
    missing = [mid for mid in order if mid not in sink.arrived]
    if missing:
        print(f"no acknowledgement for {len(missing)} mails: {explain(url, missing)}")
    idle = [watcher.seen[i + 1] - sent[mid] for i, mid in enumerate(order) if i + 1 in watcher.seen]
    acked = [sink.arrived[mid] - sent[mid] for mid in order if mid in sink.arrived]
    if not idle or not acked:
        raise SystemExit("no IDLE notification or no acknowledgement measured")
    print(f"{n} mails APPENDed one by one, {gap[0] * 1000:.0f}-{gap[1] * 1000:.0f} ms apart")

    def line(label: str, values: list[float]) -> None:
        if not values:
            print(f"{label:<46} nothing measured")
            return
        print(
            f"{label:<46} {len(values):4d} mails  p50 {pct(values, 50) * 1000:7.1f} ms"
            f"  p99 {pct(values, 99) * 1000:7.1f} ms  max {max(values) * 1000:7.1f} ms"
        )

    line("(a) baseline, APPEND -> IDLE EXISTS seen", idle)
    line("(b) inboxd, APPEND -> ack accepted by SMTP", acked)
    breakdown = stages(url, sent)
    line("    of which APPEND -> stored, ack queued", breakdown["stored, ack queued"])
    committed = [rows.seen[mid] - sent[mid] for mid in order if mid in rows.seen]
    line("    of which APPEND -> row committed (polled)", committed)
    line("    of which APPEND -> ack sent", breakdown["ack sent"])
    print(
        f"ratio p50 b/a = {pct(acked, 50) / pct(idle, 50):.1f}, "
        f"p99 b/a = {pct(acked, 99) / pct(idle, 99):.1f}; "
        f"mean b = {statistics.mean(acked) * 1000:.0f} ms  (target p99 < 2000 ms)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=200)
    parser.add_argument("--gap-ms", default="50-100", help="random pause between APPENDs")
    parser.add_argument("--db", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--keep", action="store_true", help="keep the work folder (daemon log)")
    args = parser.parse_args()
    low, _, high = args.gap_ms.partition("-")
    gap = (float(low) / 1000, float(high or low) / 1000)

    dovecot = Dovecot.create()
    sink = TimedSink()
    sink.start()
    pg = Postgres.create() if args.db == "postgresql" else None
    work = Path(tempfile.mkdtemp(prefix="inboxd-bench-ack-"))
    try:
        if pg is not None:
            pg.create_database("ack")
            url = pg.url("ack")
        else:
            url = f"sqlite:///{work / 'ack.db'}"
        measure(dovecot, sink, url, work, args.messages, gap)
    finally:
        sink.stop()
        dovecot.close()
        if pg is not None:
            pg.close()
        if args.keep:
            print(f"work folder kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
