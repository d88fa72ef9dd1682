"""SLA sweep benchmark: the cost of one sweep over a large open backlog, on SQLite.

    python -m bench.sla [--tickets 100000] [--backlog 600] [--runs 3] [--seed 1] [--later 0]
                        [--limit 1000]

Generates N live tickets straight into a migrated SQLite database (Core INSERTs, no
intake): created over the last 10 days, 80% on an office-hours policy (Europe/Oslo,
4 h / 3 d) and 20% on a 24x7 one (1 h / 1 d), 10% of them pending. Thresholds that
passed more than `--backlog` seconds ago count as fired by earlier sweeps; those inside
the window are due, as after a daemon that was down for that long. "Now" is 13:00 in
Oslo on a Wednesday: 09:00 + 4 h, when every ticket that came in overnight breaches its
first response at once, the busiest sweep of the day (`--later 17` looks at 13:17, an
ordinary one). Then it measures, each on a fresh copy of the database:

  (a) baseline: the bare indexed SELECT of the due ids (`sla_check_at <= now`, ordered):
      the least any sweep must do;
  (b) `run_sweep` over the backlog: fire every due threshold, write its events and
      escalation mails (notify-team, notify-lead), auto-resolve stale pending tickets,
      in transactions of at most `--limit` tickets (the daemon's default: 1000);
  (c) `run_sweep` again 10 s later: the steady state the daemon pays every interval.

Prints ms per sweep, per due ticket, and the ratio (b)/(a). A plain script, not a test.
"""

from __future__ import annotations

import argparse
import random
import shutil
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from sqlalchemy import insert, select  # noqa: E402
from support import Box, write_config  # noqa: E402

from inboxd.config import Settings, load_settings  # noqa: E402
from inboxd.db import make_engine, upgrade  # noqa: E402
from inboxd.models import Ticket  # noqa: E402
from inboxd.tickets import sla  # noqa: E402

POLICIES = """
[calendar.office]
timezone = "Europe/Oslo"
holidays = [2026-04-02, 2026-04-03, 2026-04-06]
[calendar.office.hours]
mon = "09:00-17:00"
tue = "09:00-17:00"
wed = "09:00-17:00"
thu = "09:00-17:00"
fri = "09:00-16:00"

[sla.standard]
calendar = "office"
first_response = "4h"
resolution = "3d"
warn_at = 0.8
on_warning = ["notify-team"]
on_breach = ["notify-lead"]

[sla.urgent]
first_response = "1h"
resolution = "1d"
warn_at = 0.8
on_warning = ["notify-team"]
on_breach = ["notify-lead", "raise-priority"]
"""
# Wednesday 13:00 in Oslo: 09:00 + 4 h, the first-response deadline of all mail that came
# in overnight. The busiest minute of the sweep's day, on purpose.
NOW = datetime(2026, 4, 15, 11, 0, tzinfo=UTC)


def generate(settings: Settings, url: str, n: int, backlog: timedelta, seed: int) -> int:
    """Insert `n` live tickets; returns how many are due at NOW."""
    rng = random.Random(seed)
    engine = make_engine(url)
    table = Ticket.__table__  # type: ignore[attr-defined]
    teams = ("frontline", "billing")
    fired_before = NOW - backlog
    ar = settings.inboxd.auto_resolve_pending
    rows: list[dict[str, object]] = []
    memo: dict[tuple[str, datetime, timedelta], datetime] = {}

    def add(name: str, start: datetime, d: timedelta) -> datetime:
        key = (name, start, d)
        if key not in memo:
            found = sla.resolve(settings, name)
            assert found is not None
            memo[key] = found[1].add(start, d)
        return memo[key]

    columns = [c.name for c in table.columns if c.name != "id" and c.computed is None]
    due = 0
    with engine.begin() as conn:
        for i in range(n):
            name = "urgent" if rng.random() < 0.2 else "standard"
            found = sla.resolve(settings, name)
            assert found is not None
            policy = found[0]
            created = NOW - timedelta(minutes=rng.randrange(10 * 1440))  # minutes: add() memoised
            t = Ticket(
                subject=f"Generated ticket {i}",
                status="open",
                priority="urgent" if name == "urgent" else "normal",
                team=teams[i % 2],
                customer_addr=f"customer{i % 5000}@client.example",
                mailbox="support",
                created_at=created,
                updated_at=created,
                last_customer_at=created,
                sla_policy=name,
                sla_fired=[],
                message_count=1,
            )
            t.first_response_warn_at = add(name, created, policy.first_response * policy.warn_at)
            t.first_response_due = add(name, created, policy.first_response)
            t.resolution_warn_at = add(name, created, policy.resolution * policy.warn_at)
            t.resolution_due = add(name, created, policy.resolution)
            if rng.random() < 0.3:  # answered already
                t.first_response_at = created + (t.first_response_due - created) * rng.random()
            if rng.random() < 0.1:  # waiting on the customer since some time after creation
                t.status = "pending"
                # Within auto_resolve_pending: older ones were resolved by earlier sweeps.
                t.paused_at = NOW - min(NOW - created, ar) * rng.random()
            horizon = min(fired_before, t.paused_at) if t.paused_at else fired_before
            t.sla_fired = [th.marker for th in sla.thresholds(t) if th.at <= horizon]
            t.sla_check_at = sla._next_check(t, ar)
            if t.sla_check_at is not None and t.sla_check_at <= NOW:
                due += 1
            rows.append({c: getattr(t, c) for c in columns})
            if len(rows) >= 5000:
                conn.execute(insert(table), rows)
                rows.clear()
        if rows:
            conn.execute(insert(table), rows)
    engine.dispose()
    return due


def due_ids() -> Any:
    """The sweep's own range query, bare: ids of every due ticket, most overdue first."""
    c = Ticket.__table__.c  # type: ignore[attr-defined]
    return select(c.id).where(c.sla_check_at <= NOW).order_by(c.sla_check_at)


def baseline_ms(url: str, runs: int) -> float:
    engine = make_engine(url)
    samples = []
    with engine.connect() as conn:
        conn.execute(due_ids()).all()  # warm the page cache once, as a running daemon has it
        for _ in range(runs):
            t0 = time.perf_counter()
            conn.execute(due_ids()).all()
            samples.append(time.perf_counter() - t0)
    engine.dispose()
    return statistics.median(samples) * 1000


def sweep_ms(
    settings: Settings, template: Path, work: Path, runs: int, limit: int
) -> tuple[float, float, sla.SweepResult]:
    """Median ms of the backlog sweep and of the steady-state one after it, on fresh copies."""
    backlog, steady = [], []
    result = sla.SweepResult()
    for _ in range(runs):
        for leftover in (work, Path(f"{work}-wal"), Path(f"{work}-shm")):
            leftover.unlink(missing_ok=True)  # a stale WAL would replay the last run's sweep
        shutil.copyfile(template, work)
        engine = make_engine(f"sqlite:///{work}")
        with engine.connect() as conn:
            conn.execute(due_ids()).all()  # the same warm cache as the baseline
        t0 = time.perf_counter()
        result = sla.run_sweep(engine, settings, NOW, limit=limit)
        backlog.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        sla.run_sweep(engine, settings, NOW + timedelta(seconds=10))
        steady.append(time.perf_counter() - t0)
        engine.dispose()
    return statistics.median(backlog) * 1000, statistics.median(steady) * 1000, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tickets", type=int, default=100_000)
    parser.add_argument("--backlog", type=int, default=600, help="seconds of missed sweeps")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--limit", type=int, default=1000, help="tickets per sweep transaction")
    parser.add_argument(
        "--later", type=int, default=0, help="minutes after the 13:00 burst (an ordinary sweep)"
    )
    args = parser.parse_args()
    global NOW
    NOW += timedelta(minutes=args.later)
    with tempfile.TemporaryDirectory() as tmp:
        template = Path(tmp) / "template.db"
        url = f"sqlite:///{template}"
        upgrade(url)
        settings = load_settings(
            write_config(
                Path(tmp) / "cfg",
                database=url,
                boxes=[Box("support", "support@example.com")],
                extra=POLICIES,
            )
        )
        t0 = time.perf_counter()
        due = generate(settings, url, args.tickets, timedelta(seconds=args.backlog), args.seed)
        gen_s = time.perf_counter() - t0
        base = baseline_ms(url, max(args.runs, 5))
        backlog, steady, result = sweep_ms(
            settings, template, Path(tmp) / "work.db", args.runs, args.limit
        )
    print(f"tickets: {args.tickets} live, generated in {gen_s:.1f} s; due now: {due}")
    print(
        f"sweep fired {result.warnings} warnings, {result.breaches} breaches, "
        f"{result.notifications} mails, {result.auto_resolved} auto-resolved "
        f"({result.examined} tickets examined)"
    )
    per = backlog / max(1, result.examined)
    print(f"baseline, bare indexed SELECT of the due ids: {base:9.2f} ms")
    print(f"run_sweep over the backlog:                   {backlog:9.2f} ms ({per:.3f} ms/ticket)")
    batches = max(1, -(-result.examined // args.limit))
    label = f"  = {batches} transactions of <= {args.limit} tickets:"
    print(f"{label:<46} {backlog / batches:9.2f} ms each")
    print(f"run_sweep 10 s later (steady state):          {steady:9.2f} ms")
    print(f"ratio backlog sweep / baseline:               {backlog / base:9.1f}")


if __name__ == "__main__":
    main()
