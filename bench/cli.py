"""Agent CLI benchmark: `inboxd ticket list` and `ticket show` on a million tickets.

    python -m bench.cli [--tickets 1000000] [--runs 7] [--db PATH] [--importtime]

Generates a SQLite database (migrated by `inboxd.db.upgrade`, then filled with bulk
INSERTs in one transaction: 95% of the tickets resolved or closed, the rest open or
pending across five teams, each live ticket with one inbound message and its delivery,
one ticket with a 40-message thread and its events), writes a config next to it, and
times as child processes, process start included, the median of --runs runs:

  list      inboxd --as ann@example.com ticket list           (the default queue, a table)
  list-json inboxd --as ann@example.com ticket list --json
  show      inboxd ticket show ID                              (the 40-message ticket)

Baselines measured in the same run: `python -c pass` (interpreter start), a bare
`python -c "import sqlite3; ..."` running the same page query (and, for show, the
ticket's rows) with no inboxd at all, and `inboxd --help`: what any inboxd command pays
in imports before it does anything. Ratios are against the first two; the time over
`--help` is what the command itself costs. With --db PATH an
existing database of the right size is reused. A plain script: nothing asserts a time.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

TEAMS = ("frontline", "billing", "tech", "returns", "sales")
MEMBERS = {team: [f"{team}{i}@example.com" for i in range(1, 5)] for team in TEAMS}
MEMBERS["frontline"][0] = "ann@example.com"
AGENT = "ann@example.com"
NOW = datetime.now(UTC)
THREAD = 40  # messages on the ticket `show` reads

CONFIG = """
[inboxd]
database = "sqlite:///{db}"
rules = "rules"

[smtp.default]
host = "127.0.0.1"
port = 2525
security = "none"

[[mailbox]]
name = "support"
address = "support@example.com"
default_team = "frontline"
smtp = "default"

[sla.standard]
first_response = "4h"
resolution = "3d"

[sla_defaults]
default = "standard"
"""


def _ts(at: datetime) -> str:
    """The text SQLAlchemy stores for an aware UTC instant on SQLite."""
    return at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")


def write_config(folder: Path, db: Path) -> Path:
    (folder / "rules").mkdir(parents=True, exist_ok=True)
    teams = "".join(
        f'\n[[team]]\nname = "{team}"\nmembers = {json.dumps(members)}\n'
        f'lead = "lead-{team}@example.com"\n'
        for team, members in MEMBERS.items()
    )
    path = folder / "inboxd.toml"
    path.write_text(CONFIG.format(db=db) + teams)
    return path


def generate(db: Path, tickets: int, seed: int) -> int:
    """Fill a freshly migrated database; returns the id of the long-thread ticket."""
    from inboxd.db import upgrade

    upgrade(f"sqlite:///{db}")
    rng = random.Random(seed)
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=OFF")
    conn.execute("PRAGMA cache_size=-400000")
    # Secondary indexes are built once at the end: far faster than maintained per row.
    indexes = conn.execute(
        "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL "
        "AND tbl_name IN ('ticket', 'message', 'delivery', 'ticket_tag')"
    ).fetchall()
    for name, _ in indexes:
        conn.execute(f"DROP INDEX {name}")
    conn.execute("BEGIN")
    started = time.perf_counter()
    rows = []
    live: list[tuple[int, str, str]] = []
    for i in range(1, tickets + 1):
        created = NOW - timedelta(minutes=rng.randint(1, 60 * 24 * 365))
        r = rng.random()
        status = (
            "closed" if r < 0.70 else "resolved" if r < 0.95 else "open" if r < 0.98 else "pending"
        )
        team = rng.choice(TEAMS)
        assignee = rng.choice([*MEMBERS[team], None])
        first_due = created + timedelta(hours=4)
        resolution_due = created + timedelta(days=3)
        answered = status not in ("open",) or rng.random() < 0.3
        customer = f"customer{rng.randint(1, 200_000)}@client{rng.randint(1, 999)}.example"
        rows.append(
            (
                i, f"Question {i} about order {rng.randint(10000, 99999)}", status,
                rng.choice(("low", "normal", "normal", "normal", "high", "urgent")), team,
                assignee, customer, "support", _ts(created), _ts(created),
                _ts(created + timedelta(hours=1)) if answered else None,
                _ts(created + timedelta(days=1)) if status in ("resolved", "closed") else None,
                "standard", _ts(first_due), _ts(resolution_due), "[]", 1,
            )
        )  # fmt: skip
        if status in ("open", "pending"):
            live.append((i, customer, _ts(created)))
        if len(rows) == 50_000:
            _insert_tickets(conn, rows)
            rows.clear()
    _insert_tickets(conn, rows)
    # One inbound message and its delivery per live ticket (the queue shows mailboxes).
    conn.executemany(
        "INSERT INTO message (id, content_hash, direction, ticket_id, mailbox, from_addr, "
        "classification, reasons, to_addrs, cc_addrs, reply_to, subject, in_reply_to, "
        '"references", text, attachments, size, received_at, quarantined, attempts, '
        "message_id) VALUES (?, ?, 'in', ?, 'support', ?, 'human', '[]', '[]', '[]', '[]', "
        "'Question', '[]', '[]', 'Hello, where is my order?', '[]', 200, ?, 0, 0, ?)",
        ((n, f"h{n}", t, c, at, f"m{n}@client.example") for n, (t, c, at) in enumerate(live, 1)),
    )
    conn.executemany(
        "INSERT INTO delivery (message_pk, mailbox, source, delivered_at) "
        "VALUES (?, 'support', 'imap', ?)",
        ((n, at) for n, (_, _, at) in enumerate(live, 1)),
    )
    conn.executemany(
        "INSERT INTO ticket_tag (ticket_id, tag) VALUES (?, ?)",
        ((t, rng.choice(("vip", "refund", "outage"))) for t, _, _ in live[::7]),
    )
    thread_ticket = live[0][0]
    _long_thread(conn, thread_ticket, first_pk=len(live) + 1)
    conn.execute("COMMIT")
    for _name, sql in indexes:
        conn.execute(sql)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    print(
        f"generated {tickets} tickets ({len(live)} live) in {time.perf_counter() - started:.0f} s"
    )
    return thread_ticket


def _insert_tickets(conn: sqlite3.Connection, rows: Sequence[tuple[object, ...]]) -> None:
    conn.executemany(
        "INSERT INTO ticket (id, subject, status, priority, team, assignee, customer_addr, "
        "mailbox, created_at, updated_at, first_response_at, resolved_at, sla_policy, "
        "first_response_due, resolution_due, sla_fired, message_count, next_response_cycle, "
        "resolution_cycle, reopened) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, "
        "?, 0, 0, 0)",
        rows,
    )


def _long_thread(conn: sqlite3.Connection, ticket: int, *, first_pk: int) -> None:
    """A real conversation on one ticket: mail in and out, notes, raw bytes, events."""
    quoted = "\n".join(f"> earlier line {n}" for n in range(30))
    for n in range(THREAD):
        pk = first_pk + n
        direction = ("in", "out", "note")[n % 3]
        at = _ts(NOW - timedelta(hours=THREAD - n))
        text = f"Message {n}: the parcel has not arrived yet.\n\nOn Monday, we wrote:\n{quoted}\n"
        conn.execute(
            "INSERT INTO message (id, content_hash, direction, ticket_id, mailbox, from_addr, "
            "author, classification, reasons, to_addrs, cc_addrs, reply_to, subject, "
            'in_reply_to, "references", text, attachments, size, received_at, quarantined, '
            "attempts, message_id) VALUES (?, ?, ?, ?, 'support', ?, ?, 'human', '[]', "
            "'[]', '[]', '[]', 'Parcel', '[]', '[]', ?, ?, ?, ?, 0, 0, ?)",
            (
                pk, f"t{pk}", direction, ticket,
                AGENT if direction != "in" else "customer@client.example",
                AGENT if direction != "in" else None, text,
                json.dumps([{"index": 0, "filename": "photo.jpg", "content_type": "image/jpeg",
                             "size": 1000, "sha256": "0"}] if n == 0 else []),
                len(text), at, None if direction == "note" else f"thread{n}@example.com",
            ),
        )  # fmt: skip
        conn.execute(
            "INSERT INTO raw_mail (message_pk, data) VALUES (?, ?)", (pk, text.encode() * 4)
        )
        conn.execute(
            "INSERT INTO ticket_event (ticket_id, at, actor, kind, data) VALUES (?, ?, ?, ?, ?)",
            (ticket, at, AGENT, "note" if direction == "note" else "message", "{}"),
        )


def _medians(
    commands: dict[str, list[str]], runs: int, env: dict[str, str]
) -> dict[str, tuple[float, bytes]]:
    """Median wall time and output of each command; runs interleave, so a busy machine
    slows every command alike instead of whichever ran while it was busy."""
    outputs: dict[str, bytes] = {}
    for name, cmd in commands.items():  # once each first: warm caches, check it works
        out = subprocess.run(cmd, capture_output=True, check=False, env=env)
        if out.returncode != 0:
            sys.exit(f"{' '.join(cmd)} failed: {out.stderr.decode()[-2000:]}")
        outputs[name] = out.stdout
    times: dict[str, list[float]] = {name: [] for name in commands}
    for _ in range(runs):
        for name, cmd in commands.items():
            started = time.perf_counter()
            subprocess.run(cmd, capture_output=True, check=True, env=env)
            times[name].append(time.perf_counter() - started)
    return {name: (statistics.median(times[name]), outputs[name]) for name in commands}


def _page_sql() -> tuple[str, dict[str, object]]:
    """The default queue's first statement for the agent and its parameters, as inboxd
    sends them to SQLite."""
    from inboxd.tickets import queue, views

    teams = tuple(t for t, members in MEMBERS.items() if AGENT in members)
    first, _ = queue.page_statements(queue.QueueFilter(teams=teams), now=NOW, limit=50)[0]
    return first.sql, {k: views.bind_value(v, "sqlite") for k, v in first.params.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tickets", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--db", type=Path, help="database file to create or reuse")
    parser.add_argument("--importtime", action="store_true", help="top imports of `list`")
    args = parser.parse_args()

    folder = Path(tempfile.mkdtemp(prefix="inboxd-bench-cli-"))
    db = args.db or folder / "bench.db"
    meta = db.with_suffix(".json")
    if db.exists() and meta.exists() and json.loads(meta.read_text())["tickets"] == args.tickets:
        thread_ticket = json.loads(meta.read_text())["thread_ticket"]
        print(f"reusing {db}")
    else:
        for suffix in ("", "-wal", "-shm"):
            Path(f"{db}{suffix}").unlink(missing_ok=True)
        thread_ticket = generate(db, args.tickets, args.seed)
        meta.write_text(json.dumps({"tickets": args.tickets, "thread_ticket": thread_ticket}))
    config = write_config(folder, db.resolve())

    py = [sys.executable]
    # As installed: byte-code compiled once. A checkout run with PYTHONDONTWRITEBYTECODE
    # would recompile every inboxd module on each start; keep the .pyc out of the tree.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPYCACHEPREFIX"] = str(folder / "pycache")
    inboxd = [*py, "-m", "inboxd", "--config", str(config)]
    page_sql, page_params = _page_sql()
    bare_list = (
        f"import sqlite3; c = sqlite3.connect({str(db)!r}); "
        f"rows = c.execute({page_sql!r}, {page_params!r}).fetchall(); print(len(rows))"
    )
    bare_show = (
        f"import sqlite3; c = sqlite3.connect({str(db)!r}); "
        f"c.execute('SELECT * FROM ticket WHERE id = ?', ({thread_ticket},)).fetchall(); "
        f"c.execute('SELECT * FROM message WHERE ticket_id = ? ORDER BY received_at, id', "
        f"({thread_ticket},)).fetchall(); "
        f"c.execute('SELECT * FROM ticket_event WHERE ticket_id = ? ORDER BY id', "
        f"({thread_ticket},)).fetchall()"
    )
    env_note = f"{platform.python_implementation()} {platform.python_version()}, "
    env_note += f"SQLite {sqlite3.sqlite_version}, {os.cpu_count()} CPUs"
    print(f"{args.tickets} tickets, {args.runs} runs each, median wall time, {env_note}")

    measured = _medians(
        {
            "pass": [*py, "-c", "pass"],
            "bare-list": [*py, "-c", bare_list],
            "bare-show": [*py, "-c", bare_show],
            # What every inboxd command pays before it runs: the CLI and what it imports.
            "help": [*inboxd, "--help"],
            "list": [*inboxd, "--as", AGENT, "ticket", "list"],
            "list-json": [*inboxd, "--as", AGENT, "ticket", "list", "--json"],
            "show": [*inboxd, "ticket", "show", str(thread_ticket)],
        },
        args.runs,
        env,
    )
    python_start = measured["pass"][0]
    sqlite_page, count = measured["bare-list"]
    sqlite_show = measured["bare-show"][0]
    floor = measured["help"][0]
    results = {name: measured[name] for name in ("list", "list-json", "show")}
    page_size = len(json.loads(results["list-json"][1]))
    rows = count.decode().strip()
    print(f"  python -c pass                 {python_start * 1000:7.0f} ms")
    print(f"  bare sqlite3 page ({rows} rows)    {sqlite_page * 1000:7.0f} ms")
    print(f"  bare sqlite3 ticket + thread   {sqlite_show * 1000:7.0f} ms")
    print(f"  inboxd --help (import floor)   {floor * 1000:7.0f} ms")
    for name, (seconds, _) in results.items():
        base = sqlite_show if name == "show" else sqlite_page
        verdict = "ok" if seconds < 0.5 else "over the 0.5 s target"
        print(
            f"  inboxd {name:<10}              {seconds * 1000:7.0f} ms   "
            f"x{seconds / python_start:5.1f} python start, x{seconds / base:5.1f} bare sqlite3, "
            f"+{(seconds - floor) * 1000:.0f} ms over --help   ({verdict})"
        )
    print(f"  (list shows {page_size} tickets; show reads a {THREAD}-message thread)")
    if args.importtime:
        proc = subprocess.run(
            [*py, "-X", "importtime", "-m", "inboxd", "--config", str(config), "--as", AGENT,
             "ticket", "list", "--json"],
            capture_output=True, check=True, env=env,
        )  # fmt: skip
        lines = [ln for ln in proc.stderr.decode().splitlines() if ln.startswith("import time:")]
        parsed: list[tuple[int, str]] = []
        for ln in lines[1:]:  # "import time: self | cumulative | name"
            _, us, module = ln.split("|", 2)
            parsed.append((int(us), module.strip()))
        print("  heaviest imports of `ticket list --json` (cumulative, ms):")
        for us_total, module in sorted(parsed, reverse=True)[:20]:
            print(f"    {us_total / 1000:7.1f}  {module}")


if __name__ == "__main__":
    main()
