"""Ingest benchmark: inboxd vs the raw IMAP FETCH + mail-parser baseline, in one run.

    python -m bench.ingest --messages 10000 [--db sqlite|postgresql] [--rounds 3]
                           [--latency 200] [--inline-parse]

Starts a private Dovecot (and PostgreSQL for --db postgresql) from tests/servers.py,
loads N generated messages, then measures:
  (a) baseline: imapclient FETCH BODY.PEEK[] in batches of inboxd's default `batch_size`
      (200) + mailparser on each;
  (b) inboxd: the mailbox worker syncing the same folder to committed rows
      (parse, classify, thread, route, store), in a child process so its peak RSS is its own,
      with the parser process `inboxd run` starts (or without: --inline-parse);
and prints messages/s for both and the ratio b/a, in --rounds pairs run back to back
in alternating order (this machine's speed drifts by a third between runs), then the
median ratio. With --latency K it then APPENDs K probes 20-80 ms apart twice: to a bare
imapclient in IDLE (the baseline: APPEND -> `EXISTS`, the server's own notification
delay) and to the daemon under IDLE (APPEND -> committed row, rows polled every 5 ms),
and reports p50/p99 of both.
"""

from __future__ import annotations

import argparse
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from servers import Dovecot, Postgres  # noqa: E402
from support import Box, write_config  # noqa: E402

WORDS = (
    "printer invoice refund login password crash error update order shipping account billing "
    "payment server outage slow export report api token mobile app"
).split()


def generate(n: int, seed: int = 7) -> list[bytes]:
    """Realistic-ish mail: a third are replies, some HTML-only, some with attachments."""
    rnd = random.Random(seed)
    ids: list[str] = []
    out = []
    start = datetime(2026, 11, 2, 8, 0, tzinfo=UTC)
    for i in range(n):
        msg = EmailMessage()
        sender = f"customer{rnd.randrange(max(1, n // 3))}@client{rnd.randrange(50)}.example"
        subject = " ".join(rnd.choice(WORDS) for _ in range(rnd.randrange(3, 9))).capitalize()
        msg["From"] = f"Customer {i} <{sender}>"
        msg["To"] = "support@example.com"
        msg["Date"] = format_datetime(start + timedelta(seconds=37 * i))
        mid = make_msgid(domain="client.example")
        msg["Message-ID"] = mid
        if ids and rnd.random() < 0.33:
            parent = rnd.choice(ids[-500:])
            msg["In-Reply-To"] = parent
            msg["References"] = parent
            subject = "Re: " + subject
        msg["Subject"] = subject
        body = "\n".join(
            " ".join(rnd.choice(WORDS) for _ in range(12)) for _ in range(rnd.randrange(3, 30))
        )
        if rnd.random() < 0.15:
            msg.set_content(f"<html><body><p>{body}</p></body></html>", subtype="html")
        else:
            msg.set_content(body)
        if rnd.random() < 0.1:
            msg.add_attachment(
                rnd.randbytes(rnd.randrange(2_000, 60_000)),
                maintype="application",
                subtype="octet-stream",
                filename=f"log-{i}.bin",
            )
        ids.append(mid)
        out.append(msg.as_bytes())
    return out


def load(dovecot: Dovecot, user: str, mails: list[bytes]) -> None:
    imap = dovecot.client(user, timeout=120)
    try:
        for i in range(0, len(mails), 500):
            imap.multiappend("INBOX", mails[i : i + 500])
    finally:
        imap.logout()


def baseline(dovecot: Dovecot, user: str) -> tuple[int, float]:
    import mailparser

    from inboxd.config import ImapSettings

    imap = dovecot.client(user, timeout=120)
    started = time.perf_counter()
    imap.select_folder("INBOX", readonly=True)
    uids = imap.search(["ALL"])
    n = 0
    size = ImapSettings.model_fields["batch_size"].default  # the FETCH inboxd makes
    for i in range(0, len(uids), size):
        batch = uids[i : i + size]
        for item in imap.fetch(batch, ["BODY.PEEK[]"]).values():
            mailparser.parse_from_bytes(item[b"BODY[]"])
            n += 1
    elapsed = time.perf_counter() - started
    imap.logout()
    return n, elapsed


CHILD = """
import sys, time, json, threading
from inboxd.config import load_settings
from inboxd.daemon import open_runtime
from inboxd.mail.imap import MailboxWorker
settings = load_settings(__import__('pathlib').Path(sys.argv[1]))
runtime = open_runtime(settings)
runtime.checkpoint_in_background()  # as `inboxd run` does
if sys.argv[2] == "parse-ahead":
    runtime.parse_ahead()  # as `inboxd run` does
worker = runtime.workers(threading.Event(), lambda: None)[0]
t = time.perf_counter()
n = worker.run_once()
elapsed = time.perf_counter() - t
# VmHWM, not ru_maxrss: Linux carries ru_maxrss over from the parent across fork + exec.
def peak_mb(pid):
    status = open(f"/proc/{pid}/status").read()
    return int(status.split("VmHWM:")[1].split()[0]) / 1024
pool = runtime.parse_pool
parser_mb = sum(peak_mb(pid) for pid in pool.pids()) if pool else 0.0
print(json.dumps({"n": n, "s": elapsed, "rss_mb": peak_mb("self"), "parser_mb": parser_mb}))
"""


def inboxd_ingest(config: Path, *, parse_ahead: bool = True) -> dict[str, float]:
    import json

    proc = subprocess.run(
        [sys.executable, "-c", CHILD, str(config), "parse-ahead" if parse_ahead else "inline"],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise SystemExit(proc.stderr[-3000:])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def database_url(kind: str, work: Path, pg: Postgres | None, name: str) -> str:
    from inboxd.db import upgrade

    if kind == "postgresql":
        assert pg is not None
        pg.create_database(name)
        url = pg.url(name)
    else:
        url = f"sqlite:///{work / (name + '.db')}"
    upgrade(url)
    return url


def probe(i: int) -> tuple[str, bytes]:
    subject = f"latency probe {i}"
    msg = EmailMessage()
    msg["From"] = "probe@client.example"
    msg["To"] = "support@example.com"
    msg["Subject"] = subject
    msg["Message-ID"] = make_msgid(domain="probe.example")
    msg.set_content("probe")
    return subject, msg.as_bytes()


def append_probes(dovecot: Dovecot, user: str, k: int) -> list[float]:
    """APPEND k probes, 20 to 80 ms apart; when each APPEND was sent."""
    imap = dovecot.client(user)
    sent: list[float] = []
    try:
        for i in range(k):
            _, data = probe(i)
            sent.append(time.perf_counter())
            imap.append("INBOX", data)
            time.sleep(random.uniform(0.02, 0.08))
    finally:
        imap.logout()
    return sent


def idle_alone(dovecot: Dovecot, user: str, k: int) -> list[float]:
    """The baseline: APPEND -> `* n EXISTS` at a bare imapclient in IDLE, same probes."""
    watcher = dovecot.client(user)
    before = int(watcher.select_folder("INBOX")[b"EXISTS"])
    watcher.idle()
    sent: list[float] = []
    appender = threading.Thread(target=lambda: sent.extend(append_probes(dovecot, user, k)))
    announced: list[float] = []  # announced[j]: when message before + j + 1 was announced
    appender.start()
    deadline = time.monotonic() + 30 + k * 0.1
    while len(announced) < k and time.monotonic() < deadline:
        for response in watcher.idle_check(timeout=1):
            if len(response) > 1 and response[1] == b"EXISTS":
                now = time.perf_counter()
                while len(announced) < min(k, int(response[0]) - before):
                    announced.append(now)
    appender.join()
    watcher.idle_done()
    watcher.logout()
    return sorted(a - t for a, t in zip(announced, sent, strict=False))


def latency(dovecot: Dovecot, config: Path, url: str, user: str, k: int) -> list[float]:
    from sqlalchemy import text

    from inboxd.db import make_engine

    engine = make_engine(url)
    seen: dict[str, float] = {}
    stop = threading.Event()

    def poll() -> None:
        last = 0
        while not stop.is_set():
            with engine.connect() as conn:
                rows = conn.execute(
                    text("SELECT id, subject FROM message WHERE id > :l"), {"l": last}
                ).all()
            now = time.perf_counter()
            for pk, subject in rows:
                last = max(last, pk)
                seen.setdefault(subject, now)
            time.sleep(0.005)

    daemon = subprocess.Popen(
        [sys.executable, "-m", "inboxd", "--config", str(config), "run"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    poller = threading.Thread(target=poll, daemon=True)
    try:
        time.sleep(3)  # connected and idling
        poller.start()
        sent = append_probes(dovecot, user, k)
        subjects = [probe(i)[0] for i in range(k)]
        deadline = time.monotonic() + 30
        while len([s for s in subjects if s in seen]) < k and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        stop.set()
        daemon.terminate()
        daemon.wait(10)
        engine.dispose()
    return sorted(seen[s] - t for s, t in zip(subjects, sent, strict=True) if s in seen)


def pct(values: list[float], p: float) -> float:
    return values[min(len(values) - 1, round(p / 100 * (len(values) - 1)))]


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--messages", type=int, default=10_000)
    ap.add_argument("--db", choices=("sqlite", "postgresql"), default="sqlite")
    ap.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="(a)+(b) pairs, in alternating order (0: latency only)",
    )
    ap.add_argument(
        "--latency", type=int, default=200, help="probes for the IDLE latency (0: skip)"
    )
    ap.add_argument(
        "--inline-parse",
        action="store_true",
        help="parse in the worker's thread, without the parser process",
    )
    args = ap.parse_args()

    dovecot = Dovecot.create()
    pg = Postgres.create() if args.db == "postgresql" else None
    work = Path(tempfile.mkdtemp(prefix="inboxd-bench-"))
    try:
        user, password = dovecot.new_user()
        mails = generate(args.messages)
        t = time.perf_counter()
        load(dovecot, user, mails)
        print(
            f"loaded {len(mails)} messages into Dovecot in {time.perf_counter() - t:.1f}s "
            f"({sum(map(len, mails)) / 1e6:.1f} MB)"
        )
        del mails

        # The machine's speed drifts between runs: each round measures (a) and (b) back to
        # back, in alternating order, and the ratio is the median of the rounds' ratios.
        ratios: list[float] = []
        for r in range(args.rounds):
            url = database_url(args.db, work, pg, f"bench{r}")
            config = write_config(
                work / f"cfg{r}",
                database=url,
                imap_port=dovecot.port,
                boxes=[Box("support", "support@example.com", user, password)],
            )
            measured: dict[str, tuple[int, float]] = {}
            result: dict[str, float] = {}
            for step in ("a", "b") if r % 2 == 0 else ("b", "a"):
                if step == "a":
                    measured["a"] = baseline(dovecot, user)
                else:
                    result = inboxd_ingest(config, parse_ahead=not args.inline_parse)
            n, secs = measured["a"]
            base_rate = n / secs
            rate = result["n"] / result["s"]
            ratios.append(rate / base_rate)
            print(f"round {r + 1}/{args.rounds}:")
            print(
                f"  (a) baseline FETCH + mail-parser : {n} msgs in {secs:.2f}s = "
                f"{base_rate:,.0f} msgs/s"
            )
            print(
                f"  (b) inboxd ingest ({args.db}): {int(result['n'])} msgs in "
                f"{result['s']:.2f}s = {rate:,.0f} msgs/s, peak RSS {result['rss_mb']:.0f} MB "
                f"(+ parser process {result['parser_mb']:.0f} MB)"
            )
            print(f"  ratio b/a = {rate / base_rate:.2f}")
        if ratios:
            print(
                f"ratio b/a, median of {len(ratios)} = {statistics.median(ratios):.2f}  "
                f"(rounds: {', '.join(f'{x:.2f}' for x in ratios)}; target >= 0.5)"
            )

        if args.latency:
            bare = idle_alone(dovecot, dovecot.new_user()[0], args.latency)
            user2, password2 = dovecot.new_user()
            url2 = database_url(args.db, work, pg, "latency")
            config2 = write_config(
                work / "cfg-latency",
                database=url2,
                imap_port=dovecot.port,
                boxes=[Box("support", "support@example.com", user2, password2)],
            )
            lat = latency(dovecot, config2, url2, user2, args.latency)
            if bare:
                print(
                    f"baseline APPEND -> EXISTS at a bare client in IDLE over "
                    f"{len(bare)}/{args.latency} msgs: p50 {pct(bare, 50) * 1000:.0f} ms, "
                    f"p99 {pct(bare, 99) * 1000:.0f} ms"
                )
            if lat:
                versus = f", {pct(lat, 50) / pct(bare, 50):.2f} times IDLE alone" if bare else ""
                print(
                    f"APPEND -> committed row under IDLE over {len(lat)}/{args.latency} msgs: "
                    f"p50 {pct(lat, 50) * 1000:.0f} ms, p99 {pct(lat, 99) * 1000:.0f} ms, "
                    f"mean {statistics.mean(lat) * 1000:.0f} ms{versus}  (target p99 < 1000 ms)"
                )
            else:
                print("latency: no probe arrived")
    finally:
        dovecot.close()
        if pg is not None:
            pg.close()
        import shutil

        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
