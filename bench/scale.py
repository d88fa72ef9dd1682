"""Scale-out benchmark: 1, 2 and 4 `inboxd run` processes on one PostgreSQL, 8 mailboxes.

    python -m bench.scale [--messages 1600] [--daemons 1,2,4] [--probes 40]

Starts a private Dovecot, PostgreSQL and an aiosmtpd sink (tests/servers.py). For each
daemon count N, in a fresh database:
  bulk:    M generated mails (each from its own sender, so each gets an ack) are loaded
           into 8 mailboxes, then N real `inboxd run` processes are started together;
           the ingest rate is deliveries committed / (last - first commit), and the ack
           rate counts until the sink has every acknowledgement;
  latency: with the daemons idling, K probes are APPENDed one by one (round-robin over
           the mailboxes); latency is APPEND -> that probe's ack received by the sink.
It prints both, the ratio of each rate against N=1 measured in the same run, which
daemon got how many mailboxes, the CPU seconds of daemons, PostgreSQL and Dovecot
during the bulk phase, and where the daemons' time goes: every daemon runs under a
stack sampler (`--sampled-child`, sys._current_frames every 10 ms, all threads) and
PostgreSQL has pg_stat_statements on.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from servers import Dovecot, Postgres, SmtpSink  # noqa: E402
from support import Box, stop, write_config  # noqa: E402

MAILBOXES = 8
SAMPLE_EVERY_S = 0.01
PROBE_WAIT_S = 15.0  # a probe not acknowledged by then is reported missing
WORDS = "printer invoice refund login crash error order shipping payment outage export".split()


# -- the sampled daemon (child process) ----------------------------------------------------

# Innermost frame wins: a stack is charged to the first of these found from the leaf up.
_CATEGORIES = (
    ("/psycopg/", "PostgreSQL round-trips (psycopg)"),
    ("/sqlalchemy/", "SQLAlchemy"),
    ("/sqlmodel/", "SQLAlchemy"),
    ("/imapclient/", "IMAP (imapclient, imaplib)"),
    ("/imaplib.py", "IMAP (imapclient, imaplib)"),
    ("/mailparser/", "parsing (mail-parser, email)"),
    ("/email/", "parsing (mail-parser, email)"),
    ("/aiosmtplib/", "SMTP (aiosmtplib)"),
    ("/inboxd/tickets/routing.py", "inboxd: routing"),
    ("/inboxd/tickets/", "inboxd: tickets (intake, threading, SLA, ack, outbox)"),
    ("/inboxd/mail/", "inboxd: mail (imap worker, parse, compose, smtp)"),
    ("/inboxd/", "inboxd: other"),
)
_WAITING = ("idle_check", "_idle", "wait", "select", "_worker", "get", "sleep", "run_forever")


def _charge(frames: list[Any]) -> str:
    """The category of one thread's stack, `frames` from the leaf up."""
    leaf = frames[0]
    if leaf.f_code.co_name in _WAITING and "/inboxd/" not in leaf.f_code.co_filename:
        if any(f.f_code.co_name == "_idle" for f in frames):
            return "waiting: IMAP IDLE"
        return "waiting: idle thread or event loop"
    if any(f.f_code.co_name == "_idle" for f in frames):
        return "waiting: IMAP IDLE"
    for f in frames:
        name = f.f_code.co_filename
        for needle, category in _CATEGORIES:
            if needle in name:
                return category
    return "other (stdlib, asyncio, logging)"


def sampled_child(out: Path, argv: list[str]) -> None:
    """Run `inboxd ARGV` in this process, sampling every thread's stack until it exits."""
    samples: Counter[str] = Counter()
    functions: Counter[str] = Counter()  # inboxd functions on busy stacks (inclusive)
    stop = threading.Event()

    def sample() -> None:
        me = threading.get_ident()
        while not stop.wait(SAMPLE_EVERY_S):
            for ident, frame in sys._current_frames().items():
                if ident == me:
                    continue
                frames = []
                f: Any = frame
                while f is not None:
                    frames.append(f)
                    f = f.f_back
                category = _charge(frames)
                samples[category] += 1
                if not category.startswith("waiting"):
                    seen = {
                        f"{Path(x.f_code.co_filename).stem}.{x.f_code.co_name}"
                        for x in frames
                        if "/inboxd/" in x.f_code.co_filename
                    }
                    functions.update(seen)

    sampler = threading.Thread(target=sample, name="bench-sampler", daemon=True)
    sampler.start()
    from inboxd.cli.main import main

    try:
        main(argv)
    finally:
        stop.set()
        sampler.join()
        out.write_text(json.dumps({"samples": samples, "functions": functions}))


# -- the bench ----------------------------------------------------------------------------


def generate(n: int, tag: str) -> list[bytes]:
    """Mail from n different senders (so each opens a ticket and gets one ack)."""
    rnd = random.Random(n)
    out = []
    for i in range(n):
        msg = EmailMessage()
        msg["From"] = f"Customer {i} <c{i}.{tag}@client{i % 50}.example>"
        msg["To"] = "support@example.com"
        msg["Subject"] = " ".join(rnd.choice(WORDS) for _ in range(5)).capitalize()
        msg["Date"] = format_datetime(time_now())
        msg["Message-ID"] = make_msgid(domain="client.example")
        msg.set_content("Hello,\n\n" + " ".join(rnd.choice(WORDS) for _ in range(80)) + "\n")
        out.append(msg.as_bytes())
    return out


def time_now() -> Any:
    from datetime import UTC, datetime

    return datetime.now(UTC)


class TimedSink(SmtpSink):
    """The test sink, noting when each recipient's mail arrived (time.time())."""

    def __init__(self) -> None:
        super().__init__()
        self.arrived: dict[str, float] = {}
        self.count = 0

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        at = time.time()  # not parsed or kept: the sink shares the 2 cores with the rest
        for rcpt in envelope.rcpt_tos:
            self.arrived.setdefault(rcpt.lower(), at)
        self.count += 1
        return "250 OK"


def cpu_by_parent() -> dict[int, float]:
    """CPU seconds (user + system) of every live process, summed under itself and its parent.

    PostgreSQL backends call setsid(), so a session id does not group them: their parent
    (the postmaster) does; Dovecot's imap processes are children of its master too.
    """
    tick = os.sysconf("SC_CLK_TCK")
    out: Counter[int] = Counter()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        cpu = (int(fields[11]) + int(fields[12])) / tick
        out[int(entry.name)] += cpu
        out[int(fields[1])] += cpu
    return dict(out)


def cpu_of_pids(pids: list[int]) -> float:
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / tick
    return total


@dataclass
class Run:
    daemons: int
    messages: int
    ingest_s: float = 0.0
    acks_s: float = 0.0
    acks: int = 0
    suppressed: Counter[str] = field(default_factory=Counter)
    owners: list[int] = field(default_factory=list)
    latency: list[float] = field(default_factory=list)
    cpu: dict[str, float] = field(default_factory=dict)
    wall_s: float = 0.0
    samples: Counter[str] = field(default_factory=Counter)
    functions: Counter[str] = field(default_factory=Counter)
    statements: list[tuple[float, int, str]] = field(default_factory=list)

    @property
    def ingest_rate(self) -> float:
        return self.messages / self.ingest_s if self.ingest_s else 0.0

    @property
    def ack_rate(self) -> float:
        return self.acks / self.acks_s if self.acks_s else 0.0


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, round(p / 100 * (len(s) - 1)))]


@contextmanager
def daemons(config: Path, n: int, work: Path) -> Iterator[list[subprocess.Popen[bytes]]]:
    procs = []
    for i in range(n):
        log = open(work / f"daemon{i}.log", "ab")  # noqa: SIM115 - closed with the process
        procs.append(
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "bench.scale",
                    "--sampled-child",
                    str(work / f"samples{i}.json"),
                    "--config",
                    str(config),
                    "run",
                ],
                cwd=ROOT,
                stdout=log,
                stderr=log,
                start_new_session=True,
            )
        )
        log.close()
    try:
        yield procs
    finally:
        stop(procs, wait_s=20)


def one_run(
    n: int, total: int, probes: int, dovecot: Dovecot, pg: Postgres, sink: TimedSink, work: Path
) -> Run:
    from sqlalchemy import text

    from inboxd.db import make_engine, upgrade

    name = f"scale_{n}"
    pg.drop_database(name)
    pg.create_database(name)
    url = pg.url(name)
    upgrade(url)
    engine = make_engine(url)
    with engine.begin() as conn:
        conn.execute(text("CREATE EXTENSION IF NOT EXISTS pg_stat_statements"))
    boxes = []
    for i in range(MAILBOXES):
        user, password = dovecot.new_user()
        boxes.append(Box(f"box{i}", f"box{i}@example.com", user, password))
    config = write_config(
        work / f"cfg{n}", database=url, boxes=boxes, imap_port=dovecot.port, smtp_port=sink.port
    )
    mails = generate(total, tag=f"n{n}")
    for i, box in enumerate(boxes):
        imap = dovecot.client(box.user or "", timeout=120)
        try:
            mine = mails[i::MAILBOXES]
            for j in range(0, len(mine), 200):
                imap.multiappend("INBOX", mine[j : j + 200])
        finally:
            imap.logout()
    sink.count = 0
    sink.arrived.clear()
    run = Run(daemons=n, messages=total)

    def count() -> int:
        with engine.connect() as conn:
            return int(conn.execute(text("SELECT count(*) FROM delivery")).scalar_one())

    with engine.begin() as conn:
        conn.execute(text("SELECT pg_stat_statements_reset()"))
    pg_sid = int((pg.data_dir / "postmaster.pid").read_text().split()[0])
    dc_sid = int((dovecot.dir / "run" / "master.pid").read_text().split()[0])
    with daemons(config, n, work) as procs:
        cpu0 = cpu_by_parent()
        d0 = cpu_of_pids([p.pid for p in procs])
        b0 = cpu_of_pids([os.getpid()])
        wall0 = time.perf_counter()
        deadline = time.monotonic() + 300
        while count() < total:
            if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
                raise SystemExit(f"N={n}: ingest stalled; see {work}/daemon*.log")
            time.sleep(0.1)
        with engine.connect() as conn:
            first, last = conn.execute(
                text("SELECT min(delivered_at), max(delivered_at) FROM delivery")
            ).one()
        run.ingest_s = (last - first).total_seconds()
        while time.monotonic() < deadline:  # until every queued mail reached the sink
            with engine.connect() as conn:
                unsent, acks = conn.execute(
                    text(
                        "SELECT count(*) FILTER (WHERE status IN ('queued', 'sending')),"
                        " count(*) FILTER (WHERE kind = 'ack') FROM outbox"
                    )
                ).one()
            if unsent == 0 and sink.count >= acks:
                break
            time.sleep(0.05)
        run.acks = int(acks)
        with engine.connect() as conn:
            run.suppressed = Counter(
                dict(
                    conn.execute(
                        text(
                            "SELECT data->>'reason', count(*) FROM ticket_event"
                            " WHERE kind = 'ack-suppressed' GROUP BY 1"
                        )
                    ).all()
                )
            )
        if sink.arrived:
            run.acks_s = max(sink.arrived.values()) - first.timestamp()
        run.wall_s = time.perf_counter() - wall0
        cpu1 = cpu_by_parent()
        run.cpu = {
            "daemons": cpu_of_pids([p.pid for p in procs]) - d0,
            "postgresql": cpu1.get(pg_sid, 0.0) - cpu0.get(pg_sid, 0.0),
            "dovecot": cpu1.get(dc_sid, 0.0) - cpu0.get(dc_sid, 0.0),
            "bench": cpu_of_pids([os.getpid()]) - b0,
        }
        with engine.connect() as conn:
            owners = conn.execute(text("SELECT owner FROM mailbox_state")).scalars().all()
            run.statements = [
                (float(t), int(c), " ".join(str(q).split())[:90])
                for t, c, q in conn.execute(
                    text(
                        "SELECT total_exec_time, calls, query FROM pg_stat_statements"
                        " WHERE dbid = (SELECT oid FROM pg_database WHERE datname = :d)"
                        " ORDER BY total_exec_time DESC LIMIT 6"
                    ),
                    {"d": name},
                ).all()
            ]
        run.owners = sorted(Counter(owners).values(), reverse=True)
        run.latency = latency(dovecot, boxes, sink, probes, tag=f"n{n}")
    for i in range(n):
        path = work / f"samples{i}.json"
        if path.exists():
            data = json.loads(path.read_text())
            run.samples.update(data["samples"])
            run.functions.update(data["functions"])
    engine.dispose()
    return run


def latency(dovecot: Dovecot, boxes: list[Box], sink: TimedSink, k: int, tag: str) -> list[float]:
    """APPEND under IDLE -> the probe's acknowledgement received by the sink, k probes."""
    time.sleep(2)  # every worker back in IDLE after the bulk
    sent: dict[str, float] = {}
    clients = {b.name: dovecot.client(b.user or "") for b in boxes}
    try:
        for i in range(k):
            box = boxes[i % len(boxes)]
            sender = f"probe{i}.{tag}@probe.example"
            msg = EmailMessage()
            msg["From"] = sender
            msg["To"] = box.address
            msg["Subject"] = f"latency probe {i}"
            msg["Date"] = format_datetime(time_now())
            msg["Message-ID"] = make_msgid(domain="probe.example")
            msg.set_content("probe")
            sent[sender] = time.time()
            clients[box.name].append("INBOX", msg.as_bytes())
            time.sleep(random.uniform(0.02, 0.08))
    finally:
        for c in clients.values():
            c.logout()
    deadline = time.monotonic() + PROBE_WAIT_S
    while not all(s in sink.arrived for s in sent) and time.monotonic() < deadline:
        time.sleep(0.05)
    return [sink.arrived[s] - t for s, t in sent.items() if s in sink.arrived]


def enable_pg_stat_statements(pg: Postgres) -> None:
    import psycopg

    with psycopg.connect(pg.conninfo(), autocommit=True) as conn:
        conn.execute("ALTER SYSTEM SET shared_preload_libraries = 'pg_stat_statements'")
    pg.stop()
    pg.start()


def report(runs: list[Run], probes: int) -> None:
    base = runs[0]
    print()
    print(
        f"{'daemons':>7} {'mailboxes each':>15} {'ingest msg/s':>13} {'ratio':>6} "
        f"{'acks/s':>8} {'ratio':>6} {'ack p50':>8} {'ack p99':>8}   CPU s (daemons/pg/dovecot)"
    )
    for r in runs:
        lat = r.latency
        p50 = f"{pct(lat, 50) * 1000:.0f}ms" if lat else "-"
        p99 = f"{pct(lat, 99) * 1000:.0f}ms" if lat else "-"
        print(
            f"{r.daemons:>7} {'/'.join(map(str, r.owners)):>15} {r.ingest_rate:>13.0f} "
            f"{r.ingest_rate / base.ingest_rate:>6.2f} {r.ack_rate:>8.0f} "
            f"{r.ack_rate / base.ack_rate:>6.2f} {p50:>8} {p99:>8}   "
            f"{r.cpu['daemons']:.1f}/{r.cpu['postgresql']:.1f}/{r.cpu['dovecot']:.1f}"
            f" in {r.wall_s:.1f}s wall"
        )
        for reason, c in r.suppressed.items():
            print(f"        ({c} acks suppressed: {reason})")
        if len(lat) < probes:
            print(
                f"        ({probes - len(lat)} of {probes} probes got no ack within "
                f"{PROBE_WAIT_S:.0f} s: see the note below)"
            )
    for r in (runs[0], runs[-1]) if len(runs) > 1 else runs:
        total = sum(r.samples.values()) or 1
        busy = sum(v for k, v in r.samples.items() if not k.startswith("waiting")) or 1
        print(f"\nwhere the daemons' threads are (N={r.daemons}, {total} stack samples):")
        for cat, v in r.samples.most_common():
            share = f"{100 * v / busy:5.1f}% of busy" if not cat.startswith("waiting") else ""
            print(f"  {100 * v / total:5.1f}%  {cat:<55} {share}")
        print("  busiest inboxd functions (inclusive, share of busy samples):")
        for fn, v in r.functions.most_common(8):
            print(f"    {100 * v / busy:5.1f}%  {fn}")
        print(f"  PostgreSQL, top statements by total time (N={r.daemons}):")
        for t, c, q in r.statements:
            print(f"    {t:8.0f} ms {c:7d} calls  {q}")
    cores = os.cpu_count() or 1
    last = runs[-1]
    used = sum(last.cpu.values()) / max(last.wall_s, 1e-9)
    print(
        f"\nWith {last.daemons} daemons the measured processes used {used:.1f} of {cores} cores "
        f"during the bulk phase (daemons {last.cpu['daemons']:.0f}s, PostgreSQL "
        f"{last.cpu['postgresql']:.0f}s, Dovecot {last.cpu['dovecot']:.0f}s CPU)."
    )
    if last.statements:
        t, c, q = last.statements[0]
        share = 100 * t / (sum(x[0] for x in last.statements) or 1)
        print(
            f"Top PostgreSQL statement with {last.daemons} daemons ({share:.0f}% of the top 6): {q}"
        )
    print(
        "What limits scaling: mailboxes are shared fairly (see 'mailboxes each'), so it is the\n"
        "database. Every new ticket of a round-robin team takes its turn in a short transaction\n"
        "of its own that locks the team row (SELECT ... FOR UPDATE on team.rr_last): picks for\n"
        "one team are serialised across all daemons, and each costs a connection and a commit.\n"
        "On this host the daemons, PostgreSQL and Dovecot also share two cores. More hosts add\n"
        "outbox senders (acks/s) at once; ingest would scale further with rotation positions\n"
        "handed out in blocks (one lock per N tickets) or teams without round-robin."
    )


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "--sampled-child":
        sampled_child(Path(sys.argv[2]), sys.argv[3:])
        return
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--messages", type=int, default=600, help="bulk mails, over 8 mailboxes")
    ap.add_argument("--daemons", default="1,2,4", help="daemon counts, comma-separated")
    ap.add_argument("--probes", type=int, default=30, help="latency probes per daemon count")
    args = ap.parse_args()
    counts = [int(x) for x in args.daemons.split(",")]

    started = time.perf_counter()
    dovecot = Dovecot.create()
    pg = Postgres.create()
    sink = TimedSink()
    sink.start()
    work = Path(tempfile.mkdtemp(prefix="inboxd-bench-scale-"))
    try:
        enable_pg_stat_statements(pg)
        runs = []
        for n in counts:
            run = one_run(n, args.messages, args.probes, dovecot, pg, sink, work)
            lat = run.latency
            print(
                f"N={n}: {args.messages} mails ingested in {run.ingest_s:.1f}s "
                f"({run.ingest_rate:.0f}/s), {run.acks} acks all received after {run.acks_s:.1f}s, "
                f"ack p99 {pct(lat, 99) * 1000:.0f} ms over {len(lat)} probes"
                if lat
                else f"N={n}: no latency probe acknowledged",
                flush=True,
            )
            runs.append(run)
        report(runs, args.probes)
        print(f"\n(bench took {time.perf_counter() - started:.0f}s; logs in {work})")
    finally:
        sink.stop()
        dovecot.close()
        pg.close()
        if os.environ.get("INBOXD_BENCH_KEEP") is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
