"""Outbox benchmark: inboxd's sender vs bare aiosmtplib on one connection, in one run.

    python -m bench.outbox --messages 2000 [--db sqlite|postgresql] [--latency 200]

Starts the aiosmtpd sink from tests/servers.py (and PostgreSQL for --db postgresql),
enqueues N replies with `outbox.enqueue`, then measures:
  (a) baseline: one aiosmtplib connection sending the same stored bytes back to back;
  (b) inboxd: `run_sender` delivering the queued rows (claim, send, record per row);
and prints messages/s for both and the ratio b/a. With --latency K it then enqueues K
rows one by one from a thread, nudging the sender as a mailbox thread does, and reports
commit -> accepted by the relay p50/p99.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

import aiosmtplib  # noqa: E402
from servers import Postgres, SmtpSink  # noqa: E402
from sqlalchemy import Engine  # noqa: E402
from support import Box, write_config  # noqa: E402

from inboxd.config import load_settings  # noqa: E402
from inboxd.db import make_engine, session_scope, upgrade  # noqa: E402
from inboxd.mail import smtp  # noqa: E402
from inboxd.mail.compose import Outgoing, build  # noqa: E402
from inboxd.tickets import outbox  # noqa: E402

TEXT = "Thank you for your message. We are looking into it and will answer soon.\n" * 12


def enqueue(engine: Engine, n: int, start: int = 0) -> list[bytes]:
    now = datetime.now(UTC)
    out: list[bytes] = []
    with session_scope(engine) as s:
        for i in range(start, start + n):
            msg = build(
                Outgoing(
                    sender="support@example.com",
                    sender_name="Support",
                    to=[f"customer{i}@client.example"],
                    subject=f"Re: order {i}",
                    text=TEXT,
                    at=now,
                )
            )
            out.append(outbox.enqueue(s, kind="notify", message=msg, smtp="default", now=now).data)
    return out


async def baseline(sink: SmtpSink, messages: list[bytes]) -> float:
    client = aiosmtplib.SMTP(hostname=sink.host, port=sink.port, start_tls=False)
    started = time.perf_counter()
    await client.connect()
    for i, data in enumerate(messages):
        await client.sendmail("support@example.com", [f"customer{i}@client.example"], data)
    await client.quit()
    return time.perf_counter() - started


async def inboxd_run(settings: object, engine: Engine, sink: SmtpSink, n: int) -> float:
    wake, stop = asyncio.Event(), asyncio.Event()
    started = time.perf_counter()
    task = asyncio.create_task(
        smtp.run_sender(settings, engine, wake=wake, stop=stop, owner="bench:1")  # type: ignore[arg-type]
    )
    await sink.wait_for_async(n, 600)
    elapsed = time.perf_counter() - started
    stop.set()
    await task
    return elapsed


async def latency(settings: object, engine: Engine, sink: SmtpSink, k: int) -> list[float]:
    wake, stop = asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(
        smtp.run_sender(settings, engine, wake=wake, stop=stop, owner="bench:2")  # type: ignore[arg-type]
    )
    loop = asyncio.get_running_loop()
    samples: list[float] = []
    base = len(sink.messages)
    for i in range(k):

        def commit_and_nudge(i: int = i) -> float:
            enqueue(engine, 1, start=1_000_000 + i)
            at = time.perf_counter()
            loop.call_soon_threadsafe(wake.set)
            return at

        committed = await asyncio.to_thread(commit_and_nudge)
        await sink.wait_for_async(base + i + 1, 30)
        samples.append(time.perf_counter() - committed)
    stop.set()
    await task
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--db", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--latency", type=int, default=100)
    args = parser.parse_args()

    sink = SmtpSink.create()
    pg = Postgres.create() if args.db == "postgresql" else None
    try:
        with tempfile.TemporaryDirectory() as tmp:
            if pg is not None:
                pg.create_database("bench_outbox")
                url = pg.url("bench_outbox")
            else:
                url = f"sqlite:///{tmp}/bench.db"
            upgrade(url)
            engine = make_engine(url)
            config = write_config(
                Path(tmp) / "cfg",
                database=url,
                boxes=[Box("support", "support@example.com")],
                smtp_port=sink.port,
            )
            settings = load_settings(config)
            messages = enqueue(engine, args.messages)
            size = sum(len(m) for m in messages) / len(messages)

            base_s = asyncio.run(baseline(sink, messages))
            sink.clear()
            ours_s = asyncio.run(inboxd_run(settings, engine, sink, args.messages))
            n = args.messages
            print(f"messages: {n} of ~{size:.0f} bytes, database {args.db}")
            print(f"baseline aiosmtplib, one connection: {n / base_s:8.0f} msg/s")
            print(f"inboxd sender (claim/send/record): {n / ours_s:8.0f} msg/s")
            print(f"ratio inboxd/baseline:             {base_s / ours_s:8.2f}")
            if args.latency:
                sink.clear()
                samples = sorted(asyncio.run(latency(settings, engine, sink, args.latency)))
                p50 = statistics.median(samples) * 1000
                p99 = samples[min(len(samples) - 1, int(len(samples) * 0.99))] * 1000
                print(
                    f"commit+nudge -> relay accepted, {len(samples)} rows: "
                    f"p50 {p50:.1f} ms, p99 {p99:.1f} ms"
                )
            engine.dispose()
    finally:
        sink.close()
        if pg is not None:
            pg.close()


if __name__ == "__main__":
    main()
