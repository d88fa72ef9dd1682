"""History benchmark: intake rate with 1,000 vs 1,000,000 tickets already in the database.

    python -m bench.history [--tickets 1000000] [--small 1000] [--messages 2000]
                            [--db DIR [--keep]] [--explain]

Thread lookup cost must not grow with history (issue 5). Builds two SQLite databases
(migrated by `inboxd.db.upgrade`, then filled with bulk INSERTs in one transaction, as
bench/cli.py does): a large one with --tickets tickets and a small one holding only the
--small most recent of them, the same rows under the same ids. Each ticket carries a
realistic history: the customer's mail (with its delivery), our acknowledgement, an
agent's reply and sometimes a follow-up (messages, full-text rows, thread_ref rows for
every Message-ID), participants, events, and outbox rows (ack, reply, survey). 70% of
the tickets are closed, 25% resolved, the rest open or pending across five teams and
their agents. Both then get what a running daemon does once a day: the merge of the
full-text index (`inboxd.tickets.searchindex`).

Then the same --messages new mails go into both databases, in-process, through
`inboxd.tickets.intake.receive` in transactions of 50 as the IMAP worker commits them
(`MailboxWorker._fetch_and_store`): new conversations, replies to recent history tickets
by In-Reply-To / References / reply token, replies by subject tag (from the customer and
from strangers), auto-replies, replies to mail of this run, and duplicates (the same mail
again, or in a second mailbox). Batches alternate between the databases, so a busy
machine slows both alike. Prints msgs/s for each and the ratio large/small (target
>= 0.8), and checks that every mail landed where it should in both databases (and in
the same ticket in both).

With --db DIR the generated databases are kept there (as pristine copies: each run
ingests into a scratch copy) and reused by the next run with the same sizes.
--explain prints every distinct statement the intake ran on the large database with its
`EXPLAIN QUERY PLAN`, marking full scans. A plain script: nothing asserts a time.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import re
import shutil
import sqlite3
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.utils import format_datetime
from pathlib import Path
from typing import Any

TEAMS = {  # name -> (assignment strategy, members)
    "frontline": ("round-robin", [f"front{i}@example.com" for i in range(1, 6)]),
    "billing": ("least-loaded", [f"bill{i}@example.com" for i in range(1, 5)]),
    "tech": ("least-loaded", [f"tech{i}@example.com" for i in range(1, 7)]),
    "returns": ("round-robin", [f"ret{i}@example.com" for i in range(1, 4)]),
    "sales": ("none", [f"sales{i}@example.com" for i in range(1, 4)]),
}
TEAM_NAMES = tuple(TEAMS)
# Subject words that the rules below route to each team (frontline is the default).
TOPICS = {
    "frontline": ("question about my account", "cannot change my address", "how do I"),
    "billing": ("refund for order", "invoice is wrong", "charged twice"),
    "tech": ("app crash on start", "error 500 when saving", "api token rejected"),
    "returns": ("return a parcel", "parcel damaged", "exchange an item"),
    "sales": ("pricing for 40 seats", "quote for a renewal", "discount for schools"),
}
RULES = """
[[rule]]
name = "billing"
when.subject = "(?i)\\\\b(refund|invoice|charged)\\\\b"
then.team = "billing"

[[rule]]
name = "tech"
when.subject = "(?i)\\\\b(crash|error|api)\\\\b"
then.team = "tech"

[[rule]]
name = "returns"
when.subject = "(?i)\\\\b(return|parcel|exchange)\\\\b"
then.team = "returns"

[[rule]]
name = "sales"
when.subject = "(?i)\\\\b(pricing|quote|discount)\\\\b"
then.team = "sales"

[[rule]]
name = "urgent"
when.subject = "(?i)\\\\burgent\\\\b"
then.priority = "urgent"
then.stop = false
"""
CONFIG = """
[inboxd]
database = "sqlite:///{db}"
rules = "rules"
timezone = "UTC"
secret_file = "secret"

[smtp.default]
host = "127.0.0.1"
port = 2525
security = "none"

[[mailbox]]
name = "support"
address = "support@example.com"
default_team = "frontline"
smtp = "default"

[[mailbox]]
name = "billing"
address = "billing@example.com"
default_team = "billing"
smtp = "default"

[calendar.office]
timezone = "Europe/Oslo"

[calendar.office.hours]
mon = "08:00-18:00"
tue = "08:00-18:00"
wed = "08:00-18:00"
thu = "08:00-18:00"
fri = "08:00-16:00"

[sla.standard]
calendar = "office"
first_response = "4h"
resolution = "3d"

[sla.urgent]
first_response = "1h"
resolution = "1d"

[sla_defaults]
default = "standard"
by_priority = {{ urgent = "urgent" }}

[ack]
enabled = true
rate_limit = 3
rate_window = "1h"

[survey]
enabled = true
"""
SECRET = "bench-history-secret"
SPACING = timedelta(seconds=30)  # between two history tickets: 1M tickets ~ a year
BATCH = 50  # mails per transaction, as the IMAP worker commits them
CUSTOMERS = 200_000
TARGET = 0.8


def _ts(at: datetime) -> str:
    """The text SQLAlchemy stores for an aware UTC instant on SQLite."""
    return at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")


# -- the history ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Past:
    """What a history ticket is, derived from its id alone: both databases agree on it."""

    id: int
    status: str
    team: str
    assignee: str | None
    customer: str
    created: datetime
    answered: bool  # an agent replied
    follow_up: bool  # the customer wrote again after the reply
    cc: str | None
    surveyed: bool

    @property
    def domain(self) -> str:
        return self.customer.rpartition("@")[2]

    @property
    def first_id(self) -> str:
        return f"h{self.id}@{self.domain}"

    @property
    def ack_id(self) -> str:
        return f"ack{self.id}@example.com"

    @property
    def reply_id(self) -> str | None:
        return f"r{self.id}@example.com" if self.answered else None

    @property
    def follow_id(self) -> str | None:
        return f"f{self.id}@{self.domain}" if self.follow_up else None

    @property
    def subject(self) -> str:
        return f"{TOPICS[self.team][self.id % 3]} #{self.id % 9973}"


# Every fact of a history ticket is a hash of its id: `(id * multiplier) % _P % k`, the
# same expression in Python (`past`) and in the SQL that fills the database (`generate`).
_P = 4_294_967_291  # a prime below 2**32: id * multiplier stays far inside 64-bit integers
_M = {
    "status": 2_147_483_629,
    "team": 1_999_999_973,
    "unassigned": 1_500_000_001,
    "member": 1_234_567_891,
    "customer": 987_654_319,
    "answered": 876_543_211,
    "follow_up": 765_432_109,
    "cc": 654_321_017,
    "surveyed": 543_210_989,
}


def _h(ticket_id: int, fact: str, k: int) -> int:
    return ticket_id * _M[fact] % _P % k


def _sql_h(fact: str, k: int | str) -> str:
    return f"(id * {_M[fact]} % {_P} % {k})"


def past(ticket_id: int, top: int, now: datetime) -> Past:
    """History ticket `ticket_id` of a database whose newest ticket is `top`."""
    r = _h(ticket_id, "status", 1000)
    status = "closed" if r < 700 else "resolved" if r < 950 else "open" if r < 980 else "pending"
    team = TEAM_NAMES[_h(ticket_id, "team", len(TEAM_NAMES))]
    members = TEAMS[team][1]
    assignee = (
        None
        if _h(ticket_id, "unassigned", 10) == 0
        else members[_h(ticket_id, "member", len(members))]
    )
    n = _h(ticket_id, "customer", CUSTOMERS)
    answered = status != "open" or _h(ticket_id, "answered", 10) < 3
    done = status in ("resolved", "closed")
    return Past(
        id=ticket_id,
        status=status,
        team=team,
        assignee=assignee,
        customer=f"customer{n}@client{n % 997}.example",
        created=now - (top - ticket_id + 1) * SPACING,
        answered=answered,
        follow_up=answered and _h(ticket_id, "follow_up", 10) < 3,
        cc=f"colleague{n}@client{n % 997}.example" if _h(ticket_id, "cc", 10) == 0 else None,
        surveyed=done and _h(ticket_id, "surveyed", 2) == 0,
    )


# The facts of every ticket in [:lo, :hi], computed once into a temporary table.
_FACTS = f"""
CREATE TEMP TABLE facts AS
WITH RECURSIVE seq(id) AS (SELECT :lo UNION ALL SELECT id + 1 FROM seq WHERE id < :hi),
raw AS (
    SELECT id,
        CASE WHEN {_sql_h("status", 1000)} < 700 THEN 'closed'
             WHEN {_sql_h("status", 1000)} < 950 THEN 'resolved'
             WHEN {_sql_h("status", 1000)} < 980 THEN 'open' ELSE 'pending' END AS status,
        {_sql_h("team", len(TEAM_NAMES))} AS t,
        {_sql_h("unassigned", 10)} = 0 AS unassigned,
        {_sql_h("customer", CUSTOMERS)} AS n,
        {_sql_h("answered", 10)} < 3 AS maybe_answered,
        {_sql_h("follow_up", 10)} < 3 AS maybe_follow_up,
        {_sql_h("cc", 10)} = 0 AS cc,
        {_sql_h("surveyed", 2)} = 0 AS maybe_surveyed,
        :now - (:top - id + 1) * {int(SPACING.total_seconds())} AS at
    FROM seq
)
SELECT raw.id, status, bench_team.name AS team,
    CASE WHEN unassigned THEN NULL ELSE bench_member.address END AS assignee,
    'customer' || n || '@client' || (n % 997) || '.example' AS customer,
    'colleague' || n || '@client' || (n % 997) || '.example' AS colleague,
    'client' || (n % 997) || '.example' AS domain,
    'Customer ' || (raw.id % 9973) AS name,
    bench_topic.text || ' #' || (raw.id % 9973) AS subject,
    status <> 'open' OR maybe_answered AS answered,
    (status <> 'open' OR maybe_answered) AND maybe_follow_up AS follow_up,
    cc,
    status IN ('resolved', 'closed') AND maybe_surveyed AS surveyed,
    status IN ('resolved', 'closed') AS done,
    at
FROM raw
JOIN bench_team ON bench_team.t = raw.t
JOIN bench_member ON bench_member.t = raw.t
    AND bench_member.k = raw.id * {_M["member"]} % {_P} % bench_team.members
JOIN bench_topic ON bench_topic.t = raw.t AND bench_topic.k = raw.id % 3
"""


def _ts_sql(offset: timedelta = timedelta(0)) -> str:
    """The stored text of `facts.at` + offset (all history instants are whole seconds)."""
    return (
        f"(strftime('%Y-%m-%d %H:%M:%S', at + {int(offset.total_seconds())}, 'unixepoch')"
        " || '.000000')"
    )


_FIRST = "'h' || id || '@' || domain"
_ACK = "'ack' || id || '@example.com'"
_REPLY = "'r' || id || '@example.com'"
_FOLLOW = "'f' || id || '@' || domain"
_TO_US = '\'[{"addr": "support@example.com", "name": "Support"}]\''
_TO_THEM = '\'[{"addr": "\' || customer || \'", "name": ""}]\''
_TEXT = (
    "'Hello,' || char(10) || char(10) || subject || ': order ' || (id % 99991) || ' has a problem.'"
)


def _list(*ids: str) -> str:
    """A JSON list of the ids (SQL expressions)."""
    return "'[' || " + " || ', ' || ".join(f"'\"' || {i} || '\"'" for i in ids) + " || ']'"


def _messages(mid: str, direction: str, author: str, kind: str, sender: str, irt: str,
              refs: str, at: str, subject: str, to: str, where: str) -> str:  # fmt: skip
    return (
        "INSERT INTO message (message_id, content_hash, direction, ticket_id, mailbox, author, "
        "classification, reasons, from_addr, to_addrs, cc_addrs, reply_to, subject, date_at, "
        'date_offset_min, in_reply_to, "references", text, attachments, size, received_at, '
        f"quarantined, attempts) SELECT {mid}, 'hist-' || {mid}, '{direction}', id, 'support', "
        f"{author}, {kind}, '[]', {sender}, {to}, '[]', '[]', {subject}, {at}, 0, {irt}, "
        f"{refs}, {_TEXT}, '[]', 480, {at}, 0, 0 FROM facts WHERE {where}"
    )


_RE = "'Re: [#' || id || '] ' || subject"
_FILL = [
    "INSERT INTO ticket (id, subject, status, priority, team, assignee, customer_addr, "
    "customer_name, mailbox, created_at, updated_at, last_customer_at, first_response_at, "
    "resolved_at, closed_at, sla_policy, first_response_due, resolution_due, sla_check_at, "
    "sla_fired, next_response_cycle, resolution_cycle, reopened, message_count) "
    "SELECT id, subject, status, 'normal', team, assignee, customer, name, 'support', "
    f"{_ts_sql()}, "
    f"CASE WHEN follow_up THEN {_ts_sql(timedelta(hours=5))} "
    f"WHEN answered THEN {_ts_sql(timedelta(hours=2))} ELSE {_ts_sql()} END, "
    f"CASE WHEN follow_up THEN {_ts_sql(timedelta(hours=5))} ELSE {_ts_sql()} END, "
    f"CASE WHEN answered THEN {_ts_sql(timedelta(hours=2))} END, "
    f"CASE WHEN done THEN {_ts_sql(timedelta(days=1))} END, "
    f"CASE WHEN status = 'closed' THEN {_ts_sql(timedelta(days=8))} END, 'standard', "
    f"{_ts_sql(timedelta(hours=4))}, {_ts_sql(timedelta(days=3))}, "
    f"CASE WHEN NOT done THEN {_ts_sql(timedelta(hours=3))} END, '[]', 0, 0, 0, "
    "2 + answered + follow_up FROM facts",
    _messages(
        _FIRST,
        "in",
        "NULL",
        "'human'",
        "customer",
        "'[]'",
        "'[]'",
        _ts_sql(),
        "subject",
        _TO_US,
        "1",
    ),
    _messages(
        _ACK,
        "out",
        "NULL",
        "'own'",
        "'support@example.com'",
        _list(_FIRST),
        _list(_FIRST),
        _ts_sql(),
        _RE,
        _TO_THEM,
        "1",
    ),
    _messages(
        _REPLY,
        "out",
        "coalesce(assignee, 'front1@example.com')",
        "NULL",
        "coalesce(assignee, 'front1@example.com')",
        _list(_FIRST),
        _list(_FIRST),
        _ts_sql(timedelta(hours=2)),
        _RE,
        _TO_THEM,
        "answered",
    ),
    _messages(
        _FOLLOW,
        "in",
        "NULL",
        "'human'",
        "customer",
        _list(_REPLY),
        _list(_FIRST, _REPLY),
        _ts_sql(timedelta(hours=5)),
        "subject",
        _TO_US,
        "follow_up",
    ),
    "INSERT INTO thread_ref (message_id, ticket_id) SELECT message_id, ticket_id FROM message",
    "INSERT INTO delivery (message_pk, mailbox, source, uidvalidity, uid, delivered_at) "
    "SELECT id, 'support', 'imap', 1, id, received_at FROM message WHERE direction = 'in'",
    "INSERT INTO participant (ticket_id, address, name, role) "
    "SELECT id, customer, name, 'customer' FROM facts",
    "INSERT INTO participant (ticket_id, address, name, role) "
    "SELECT id, colleague, NULL, 'cc' FROM facts WHERE cc",
    "INSERT INTO outbox (message_id, ticket_id, kind, mailbox, smtp, mail_from, recipients, "
    "rcpt_key, data, status, attempts, next_attempt_at, sent_at, created_at) "
    f"SELECT {_ACK}, id, 'ack', 'support', 'default', 'support@example.com', "
    f"{_list('customer')}, customer, X'00', 'sent', 1, {_ts_sql()}, {_ts_sql()}, {_ts_sql()} "
    "FROM facts",
    "INSERT INTO outbox (message_id, ticket_id, kind, mailbox, smtp, mail_from, recipients, "
    "rcpt_key, data, status, attempts, next_attempt_at, sent_at, created_at) "
    "SELECT 'survey' || id || '@example.com', id, 'survey', 'support', 'default', "
    f"'support@example.com', {_list('customer')}, customer, X'00', 'sent', 1, "
    f"{_ts_sql(timedelta(days=1))}, {_ts_sql(timedelta(days=1))}, "
    f"{_ts_sql(timedelta(days=1))} FROM facts WHERE surveyed",
    "INSERT INTO ticket_event (ticket_id, at, actor, kind, data) "
    f"SELECT id, {_ts_sql()}, 'system', 'created', '{{\"mailbox\": \"support\"}}' FROM facts",
    "INSERT INTO ticket_event (ticket_id, at, actor, kind, data) "
    f"SELECT id, {_ts_sql()}, 'system', 'routed', '{{\"team\": \"' || team || '\"}}' FROM facts",
    "INSERT INTO ticket_event (ticket_id, at, actor, kind, data) "
    f"SELECT id, {_ts_sql()}, 'system', 'ack-sent', '{{\"to\": \"' || customer || '\"}}' "
    "FROM facts",
    "INSERT INTO ticket_event (ticket_id, at, actor, kind, data) "
    f"SELECT id, {_ts_sql(timedelta(days=1))}, coalesce(assignee, 'system'), 'status', "
    '\'{"new": "resolved"}\' FROM facts WHERE done',
    "INSERT INTO ticket_event (ticket_id, at, actor, kind, data) "
    f"SELECT id, {_ts_sql(timedelta(days=8))}, 'system', 'status', '{{\"new\": \"closed\"}}' "
    "FROM facts WHERE status = 'closed'",
    "INSERT INTO ticket_tag (ticket_id, tag) SELECT id, "
    "CASE id % 3 WHEN 0 THEN 'vip' WHEN 1 THEN 'refund' ELSE 'outage' END "
    "FROM facts WHERE id % 11 = 0",
]


def generate(db: Path, ids: range, top: int, now: datetime) -> None:
    """A migrated database holding history tickets `ids`, filled by INSERT ... SELECT in
    one transaction (in SQLite itself: a million tickets in Python rows take minutes)."""
    from inboxd.db import upgrade

    for suffix in ("", "-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    upgrade(f"sqlite:///{db}")
    started = time.perf_counter()
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("PRAGMA journal_mode=OFF")  # a failed run leaves a file to delete anyway
    conn.execute("PRAGMA synchronous=OFF")
    conn.execute("PRAGMA cache_size=-1000000")
    conn.execute("PRAGMA temp_store=MEMORY")
    conn.execute("PRAGMA threads=2")  # CREATE INDEX sorts in parallel
    # Secondary indexes and the full-text triggers are built once at the end: far faster
    # than maintained per row.
    indexes = conn.execute(
        "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL"
    ).fetchall()
    triggers = conn.execute(
        "SELECT name, sql FROM sqlite_master WHERE type = 'trigger' AND tbl_name = 'message'"
    ).fetchall()
    for name, _ in indexes:
        conn.execute(f"DROP INDEX {name}")
    for name, _ in triggers:
        conn.execute(f"DROP TRIGGER {name}")
    conn.execute("BEGIN")
    conn.execute("CREATE TEMP TABLE bench_team (t INTEGER PRIMARY KEY, name TEXT, members INT)")
    conn.execute("CREATE TEMP TABLE bench_member (t INT, k INT, address TEXT)")
    conn.execute("CREATE TEMP TABLE bench_topic (t INT, k INT, text TEXT)")
    for t, (team, (_how, members)) in enumerate(TEAMS.items()):
        conn.execute("INSERT INTO bench_team VALUES (?, ?, ?)", (t, team, len(members)))
        conn.executemany(
            "INSERT INTO bench_member VALUES (?, ?, ?)", [(t, k, m) for k, m in enumerate(members)]
        )
        conn.executemany(
            "INSERT INTO bench_topic VALUES (?, ?, ?)",
            [(t, k, text) for k, text in enumerate(TOPICS[team])],
        )
    params = {"lo": ids.start, "hi": ids.stop - 1, "top": top, "now": int(now.timestamp())}
    conn.execute(_FACTS, params)
    for sql in _FILL:
        conn.execute(sql)
    conn.execute("COMMIT")
    filled = time.perf_counter()
    for _name, sql in indexes:
        conn.execute(sql)
    indexed = time.perf_counter()
    if triggers:  # what migration 0002 does for existing rows
        conn.execute(
            "INSERT INTO message_fts(rowid, subject, body, addrs) "
            "SELECT id, subject, body, addrs FROM message_search_doc"
        )
        for _name, sql in triggers:
            conn.execute(sql)
    _check_facts(conn, ids, top, now)
    (messages,) = conn.execute("SELECT count(*) FROM message").fetchone()
    conn.execute("PRAGMA journal_mode=WAL")  # as inboxd.db leaves it
    conn.close()
    phases = (
        f"rows {filled - started:.0f} s, indexes {indexed - filled:.0f} s, "
        f"full text {time.perf_counter() - indexed:.0f} s"
    )
    size = db.stat().st_size / 1e6
    print(
        f"  generated {len(ids):,} tickets ({messages:,} messages) in {db.name}: "
        f"{time.perf_counter() - started:.0f} s ({phases}), {size:,.0f} MB"
    )


def _check_facts(conn: sqlite3.Connection, ids: range, top: int, now: datetime) -> None:
    """The SQL and `past` agree (the threading check relies on it)."""
    for ticket_id in (ids[0], ids[len(ids) // 2], ids[-1]):
        p = past(ticket_id, top, now)
        row = conn.execute(
            "SELECT status, team, assignee, customer_addr, created_at, message_count "
            "FROM ticket WHERE id = ?",
            (ticket_id,),
        ).fetchone()
        want = (p.status, p.team, p.assignee, p.customer, _ts(p.created))
        assert row[:5] == want and row[5] == 2 + p.answered + p.follow_up, (row, want)
        refs = {m for (m,) in conn.execute(
            "SELECT message_id FROM thread_ref WHERE ticket_id = ?", (ticket_id,)
        )}  # fmt: skip
        assert refs == {p.first_id, p.ack_id, p.reply_id, p.follow_id} - {None}, refs


# -- the new mail -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Expect:
    """Where a new mail must land. `ticket` is a history ticket id; `item` an earlier mail
    of this run (whose ticket it joins, or which it duplicates)."""

    how: str  # new | join | reopen | linked | stranger | auto | run | dup
    ticket: int | None = None
    item: int | None = None


@dataclass(frozen=True, slots=True)
class Item:
    mailbox: str
    data: bytes
    expect: Expect


def _mail(
    *,
    sender: str,
    subject: str,
    at: datetime,
    mid: str,
    to: str = "support@example.com",
    in_reply_to: str | None = None,
    references: list[str] | None = None,
    text: str,
    auto: bool = False,
) -> bytes:
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = to
    msg["Subject"] = subject
    msg["Date"] = format_datetime(at)
    msg["Message-ID"] = f"<{mid}>"
    if in_reply_to:
        msg["In-Reply-To"] = f"<{in_reply_to}>"
    if references:
        msg["References"] = " ".join(f"<{r}>" for r in references)
    if auto:
        msg["Auto-Submitted"] = "auto-replied"
    msg.set_content(text)
    return msg.as_bytes()


def new_mail(n: int, top: int, recent: int, now: datetime, seed: int) -> list[Item]:
    """`n` mails of this run; replies target the `recent` newest history tickets."""
    from inboxd.tickets.tokens import make_token

    rng = random.Random(seed)
    items: list[Item] = []
    opened: list[int] = []  # items that open a ticket of their own
    status_now: dict[int, str] = {}  # history tickets this run reopened
    words = "printer invoice login order shipping account export report mobile".split()
    body = "\n".join(" ".join(rng.choice(words) for _ in range(12)) for _ in range(8))
    for i in range(n):
        at = now + timedelta(seconds=i)
        mid = f"new{i}.{seed}@client{i % 50}.example"
        old = past(top - rng.randrange(recent), top, now)
        status = status_now.get(old.id, old.status)
        r = rng.random()
        if r < 0.45 or not opened:  # a new conversation; some senders write several times
            n_cust = rng.randrange(300) if rng.random() < 0.2 else 1000 + i
            team = rng.choice(TEAM_NAMES)
            subject = f"{rng.choice(TOPICS[team])} {rng.randrange(10_000)}"
            if rng.random() < 0.05:
                subject = f"urgent: {subject}"
            data = _mail(
                sender=f"New Customer <buyer{n_cust}@shop{n_cust % 37}.example>",
                subject=subject, at=at, mid=mid, text=body,
            )  # fmt: skip
            items.append(Item("support", data, Expect("new")))
            opened.append(i)
            continue
        reply_to = old.follow_id or old.reply_id or old.ack_id
        text = f"Hello again,\n\nit still does not work.\n\n> {old.subject}\n"
        joined = status != "closed"
        how = ("reopen" if status == "resolved" else "join") if joined else "linked"
        if r < 0.60:  # reply by In-Reply-To and References
            data = _mail(
                sender=old.customer, subject=f"Re: [#{old.id}] {old.subject}", at=at, mid=mid,
                in_reply_to=reply_to, references=[old.first_id, reply_to], text=text,
            )  # fmt: skip
            items.append(Item("support", data, Expect(how, old.id)))
        elif r < 0.65:  # ghost parent: In-Reply-To unknown, References reach the ticket
            data = _mail(
                sender=old.customer, subject=f"Re: {old.subject}", at=at, mid=mid,
                in_reply_to=f"lost{i}@client.example",
                references=[old.first_id, f"lost{i}@client.example"], text=text,
            )  # fmt: skip
            items.append(Item("support", data, Expect(how, old.id)))
        elif r < 0.68:  # to the reply token in our acknowledgement's Reply-To
            token = make_token(SECRET.encode(), old.id)
            data = _mail(
                sender=old.customer, subject=f"Re: {old.subject}", at=at, mid=mid,
                to=f"support+{token}@example.com", text=text,
            )  # fmt: skip
            items.append(Item("support", data, Expect(how, old.id)))
        elif r < 0.76:  # by subject tag only, from the customer: trusted
            data = _mail(
                sender=old.customer, subject=f"Re: [#{old.id}] {old.subject}", at=at, mid=mid,
                text=text,
            )  # fmt: skip
            items.append(Item("support", data, Expect(how, old.id)))
        elif r < 0.79:  # by subject tag only, from a stranger: a new ticket that notes it
            data = _mail(
                sender=f"stranger{i}@elsewhere.example", subject=f"Re: [#{old.id}] hi",
                at=at, mid=mid, text=text,
            )  # fmt: skip
            items.append(Item("support", data, Expect("stranger", old.id)))
            opened.append(i)
            continue
        elif r < 0.82:  # an autoresponder answering our mail: joins, never reopens
            data = _mail(
                sender=old.customer, subject=f"Automatic reply: {old.subject}", at=at,
                mid=mid, in_reply_to=reply_to, references=[reply_to], text="I am away.",
                auto=True,
            )  # fmt: skip
            items.append(Item("support", data, Expect("auto", old.id)))
            continue
        elif r < 0.93:  # a reply to a mail of this run
            j = rng.choice(opened[-200:])
            parent = f"new{j}.{seed}@client{j % 50}.example"
            data = _mail(
                sender="someone@client.example", subject="Re: earlier", at=at, mid=mid,
                in_reply_to=parent, references=[parent], text=text,
            )  # fmt: skip
            items.append(Item("support", data, Expect("run", item=j)))
            continue
        else:  # the same mail again: redelivered, or also sent to billing@
            j = rng.choice(opened[-200:])
            box = "billing" if rng.random() < 0.5 else "support"
            items.append(Item(box, items[j].data, Expect("dup", item=j)))
            continue
        if how == "linked":
            opened.append(i)
        else:
            status_now[old.id] = "open"
    return items


# -- intake -------------------------------------------------------------------------------


@dataclass
class Target:
    """One database under test and what intake made of each mail."""

    name: str
    path: Path
    config: Path
    engine: Any = None
    cfg: Any = None
    seconds: float = 0.0
    results: list[Any] = field(default_factory=list)
    uids: Counter[str] = field(default_factory=Counter)


def open_target(t: Target, pragmas: list[str]) -> None:
    """The engine and intake config a daemon would use, plus any extra `pragmas`."""
    from sqlalchemy import event

    from inboxd.config import load_settings
    from inboxd.daemon import open_runtime
    from inboxd.db import session_scope
    from inboxd.tickets import mailboxes

    runtime = open_runtime(load_settings(t.config))
    runtime.checkpoint_in_background()  # as `inboxd run` does
    t.engine, t.cfg = runtime.engine, runtime.intake_config()
    if pragmas:

        def extra(dbapi_conn: sqlite3.Connection, _record: Any) -> None:
            for pragma in pragmas:
                dbapi_conn.execute(f"PRAGMA {pragma}")

        event.listen(t.engine, "connect", extra)
        t.engine.dispose()

    with session_scope(t.engine) as s:
        for box in ("support", "billing"):
            mailboxes.reset_for_uidvalidity(s, box, 1)


def ingest_batch(t: Target, batch: list[Item]) -> None:
    """One IMAP batch as `MailboxWorker._fetch_and_store` commits it (less the IMAP)."""
    from inboxd.db import session_scope
    from inboxd.tickets import intake, mailboxes

    started = time.perf_counter()
    with session_scope(t.engine) as s:
        mailboxes.mark_inflight(s, "support", t.uids["support"] + 1)
    with session_scope(t.engine) as s:
        for item in batch:
            t.uids[item.mailbox] += 1
            t.results.append(
                intake.receive(
                    s, t.cfg, mailbox=item.mailbox, data=item.data, source="imap",
                    uidvalidity=1, uid=t.uids[item.mailbox],
                )
            )  # fmt: skip
        mailboxes.advance(s, "support", uidvalidity=1, uid=t.uids["support"])
    t.seconds += time.perf_counter() - started


def check(t: Target, items: list[Item]) -> list[str]:
    """Every mail where `Expect` says; the problems found, as lines."""
    problems: list[str] = []
    conn = sqlite3.connect(t.path)
    for i, (item, r) in enumerate(zip(items, t.results, strict=True)):
        e = item.expect
        want: tuple[str, int | None]
        if e.how in ("join", "reopen", "auto"):
            want = ("joined", e.ticket)
        elif e.how in ("run", "dup"):
            assert e.item is not None
            parent = t.results[e.item]
            want = ("joined" if e.how == "run" else "duplicate", parent.ticket_id)
        else:
            want = ("new-ticket", r.ticket_id)
        if (r.outcome, r.ticket_id) != want:
            problems.append(f"mail {i} ({e.how}): got {r.outcome} {r.ticket_id}, want {want}")
            continue
        if e.how in ("linked", "stranger"):
            column = "previous_ticket" if e.how == "linked" else "subject_ref"
            (ref,) = conn.execute(
                f"SELECT {column} FROM ticket WHERE id = ?",
                (r.ticket_id,),
            ).fetchone()
            if ref != e.ticket:
                problems.append(f"mail {i} ({e.how}): ticket {r.ticket_id} {column}={ref}")
        if e.how == "reopen":
            (status,) = conn.execute(
                "SELECT status FROM ticket WHERE id = ?", (e.ticket,)
            ).fetchone()
            if status != "open":
                problems.append(f"mail {i}: resolved ticket {e.ticket} is {status}, not reopened")
    conn.close()
    return problems


# -- query plans ------------------------------------------------------------------------

_LITERAL = re.compile(r"\bNULL\b|'(?:[^']|'')*'|\b\d+(?:\.\d+)?\b|X'[0-9A-Fa-f]*'")
_LIST = re.compile(r"\(\?(?:, \?)+\)")


@dataclass
class Trace:
    """Statements run on an engine's connections, by shape (literals and lists as ?)."""

    example: dict[str, str] = field(default_factory=dict)  # shape -> one expanded statement
    count: Counter[str] = field(default_factory=Counter)
    via_sqlalchemy: set[str] = field(default_factory=set)  # the rest ran as `Prepared`
    internal: int = 0  # run by triggers and the full-text index, not by inboxd

    @staticmethod
    def shape(sql: str) -> str:
        return _LIST.sub("(?, ...)", _LITERAL.sub("?", " ".join(sql.split())))


def trace_statements(engine: Any) -> Trace:
    """Record every statement SQLite runs on `engine`'s connections.

    SQLAlchemy's `before_cursor_execute` event sees only what goes through
    `Connection.execute`; the hot statements run as `inboxd.db.Prepared` on the raw
    DBAPI cursor, so the sqlite3 trace callback (which sees everything, with the bound
    values expanded) is the complete list and the event only marks who ran what.
    """
    from sqlalchemy import event

    trace = Trace()

    def hook(sql: str) -> None:
        if sql.startswith("--"):  # a trigger's or a virtual table's own statement
            trace.internal += 1
            return
        shape = Trace.shape(sql)
        trace.example.setdefault(shape, sql)
        trace.count[shape] += 1

    def on_connect(dbapi_conn: sqlite3.Connection, _record: Any) -> None:
        dbapi_conn.set_trace_callback(hook)

    def before(_c: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        trace.via_sqlalchemy.add(_LIST.sub("(?, ...)", " ".join(statement.split())))

    event.listen(engine, "connect", on_connect)
    event.listen(engine, "before_cursor_execute", before)
    engine.dispose()  # new connections get the hook
    return trace


def explain(db: Path, trace: Trace, mails: int) -> None:
    """Each statement intake ran, how often per mail, and its plan; full scans flagged."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    skip = ("BEGIN", "COMMIT", "ROLLBACK", "SAVEPOINT", "RELEASE", "PRAGMA")
    shapes = [s for s in trace.count if not s.upper().startswith(skip)]
    print(
        f"\n{len(shapes)} statement shapes on the large database "
        f"(+{trace.internal / mails:.1f} per mail run by triggers and the full-text index); "
        "runs per mail, who ran it (sa: SQLAlchemy, raw: Prepared), plan:"
    )
    for shape, n in trace.count.most_common():
        if shape.upper().startswith(skip):
            continue
        plan = [step[3] for step in conn.execute(f"EXPLAIN QUERY PLAN {trace.example[shape]}")]
        scans = any(s.startswith("SCAN") and "USING" not in s and "CONSTANT" not in s for s in plan)
        sa = any(Trace.shape(s) == shape for s in trace.via_sqlalchemy)
        print(
            f"{n / mails:5.2f} {'sa ' if sa else 'raw'} {'!! FULL SCAN ' if scans else ''}"
            f"{shape[:160]}"
        )
        for step in plan:
            print(f"            {step}")
    conn.close()


# -- main -------------------------------------------------------------------------------


def prepare(folder: Path, keep: Path | None, tickets: int, small: int) -> tuple[Path, Path, int]:
    """The pristine pair of databases (generated, or reused from `keep`): (small, large, top)."""
    home = keep or folder
    home.mkdir(parents=True, exist_ok=True)
    meta_path = home / "history.json"
    want = {"tickets": tickets, "small": small}
    meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
    paths = home / f"small-{small}.db", home / f"large-{tickets}.db"
    if {k: meta.get(k) for k in want} == want and all(p.exists() for p in paths):
        from inboxd.db import upgrade

        for path in paths:  # kept from before a new revision: bring them to the head
            upgrade(f"sqlite:///{path}")
            settle(path, datetime.fromisoformat(meta["now"]))
        print(f"reusing {paths[0]} and {paths[1]}")
        return paths[0], paths[1], tickets
    now = datetime.now(UTC).replace(microsecond=0)
    generate(paths[0], range(tickets - small + 1, tickets + 1), tickets, now)
    generate(paths[1], range(1, tickets + 1), tickets, now)
    for path in paths:
        settle(path, now)
    meta_path.write_text(json.dumps(want | {"now": now.isoformat()}))
    return paths[0], paths[1], tickets


def settle(db: Path, now: datetime) -> None:
    """Leave the history as a running daemon keeps it: its daily merge of the full-text
    index (`inboxd.tickets.searchindex`) has run. Built in one go, the index holds a
    backlog of merges that the first mails would pay for: on a million tickets that
    halved the ingest rate, a state no running daemon's database stays in for long."""
    from inboxd.db import make_engine
    from inboxd.tickets import searchindex

    engine = make_engine(f"sqlite:///{db}", pooled=False)
    try:
        started = time.perf_counter()
        searchindex.optimize(engine, now)
        print(f"  {db.name}: full-text index merged in {time.perf_counter() - started:.1f} s")
    finally:
        engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tickets", type=int, default=1_000_000, help="large history")
    parser.add_argument("--small", type=int, default=1_000, help="small history")
    parser.add_argument("--messages", type=int, default=2_000)
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument("--db", type=Path, help="folder to keep (and reuse) the databases in")
    parser.add_argument("--explain", action="store_true", help="print every query plan")
    parser.add_argument(
        "--pragma",
        action="append",
        default=[],
        help="extra SQLite PRAGMA on every connection, e.g. cache_size=-65536 (repeatable)",
    )
    args = parser.parse_args()
    if args.small > args.tickets:
        parser.error("--small must not exceed --tickets")

    env_note = f"{platform.python_implementation()} {platform.python_version()}, "
    env_note += f"SQLite {sqlite3.sqlite_version}, {os.cpu_count()} CPUs"
    print(
        f"history {args.small:,} vs {args.tickets:,} tickets, {args.messages:,} mails; {env_note}"
    )
    folder = Path(tempfile.mkdtemp(prefix="inboxd-bench-history-"))
    try:
        pristine_small, pristine_large, top = prepare(folder, args.db, args.tickets, args.small)
        targets = []
        for name, pristine in (("small", pristine_small), ("large", pristine_large)):
            work = folder / name
            work.mkdir()
            db = work / "inboxd.db"
            if args.db is None:
                pristine.rename(db)
            else:
                shutil.copyfile(pristine, db)
            (work / "rules").mkdir()
            (work / "rules" / "10-teams.toml").write_text(RULES)
            (work / "secret").write_text(SECRET)
            teams = "".join(
                f'\n[[team]]\nname = "{team}"\nmembers = {json.dumps(members)}\n'
                f'lead = "lead-{team}@example.com"\nassignment = "{how}"\n'
                for team, (how, members) in TEAMS.items()
            )
            config = work / "inboxd.toml"
            config.write_text(CONFIG.format(db=db) + teams)
            targets.append(Target(name, db, config))
        meta = json.loads(((args.db or folder) / "history.json").read_text())
        now = datetime.fromisoformat(meta["now"])
        items = new_mail(args.messages, top, min(args.small, 1000), now, args.seed)
        print(f"  {Counter(item.expect.how for item in items)}")
        for t in targets:
            open_target(t, args.pragma)
        traced = trace_statements(targets[1].engine) if args.explain else None
        # Warm-up is part of the run: both start cold, from a freshly copied file.
        batches = [items[i : i + BATCH] for i in range(0, len(items), BATCH)]
        for k, batch in enumerate(batches):
            order = targets if k % 2 == 0 else targets[::-1]
            for t in order:
                ingest_batch(t, batch)
        small, large = targets
        rates = {t.name: len(items) / t.seconds for t in targets}
        for t in targets:
            print(f"  {t.name:<5} history: {len(items)} mails in {t.seconds:6.2f} s = "
                  f"{rates[t.name]:7.1f} msgs/s")  # fmt: skip
        ratio = rates["large"] / rates["small"]
        verdict = "ok" if ratio >= TARGET else f"below the {TARGET} target"
        print(f"  ratio large/small = {ratio:.2f}  (target >= {TARGET}: {verdict})")
        for t in targets:
            t.engine.dispose()
        outcome = Counter(r.outcome for r in large.results)
        print(f"  outcomes (large): {dict(outcome)}")
        same = sum(
            (a.outcome, a.ticket_id) == (b.outcome, b.ticket_id)
            for a, b in zip(small.results, large.results, strict=True)
        )
        print(f"  same outcome and ticket in both databases: {same}/{len(items)}")
        for t in targets:
            problems = check(t, items)
            print(f"  threading check ({t.name}): {len(items) - len(problems)}/{len(items)} "
                  "mails where expected")  # fmt: skip
            for line in problems[:10]:
                print(f"    {line}")
        if traced is not None:
            explain(large.path, traced, len(items))
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
