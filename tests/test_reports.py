"""Reports: the numbers a support lead checks, over crafted tickets and a fixed clock."""

from __future__ import annotations

import csv
import io
import itertools
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from servers import Database
from sqlalchemy import Engine
from support import Box, cli, cli_json, write_config

from inboxd.config import Settings, load_settings
from inboxd.db import session_scope
from inboxd.models import Message, Ticket
from inboxd.tickets import reports
from inboxd.tickets.reports import CSV_COLUMNS, compute, csv_text, median, p90

H = timedelta(hours=1)
MON = datetime(2026, 11, 16, tzinfo=UTC)  # a Monday
TUE, WED, THU, FRI, SAT = (MON + timedelta(days=d) for d in range(1, 6))
NOW = SAT + 12 * H
SINCE = NOW - timedelta(days=7)
OFFICE = """
[calendar.office]
timezone = "UTC"

[calendar.office.hours]
mon = "09:00-17:00"
tue = "09:00-17:00"
wed = "09:00-17:00"
thu = "09:00-17:00"
fri = "09:00-17:00"

[sla.standard]
calendar = "office"
first_response = "4h"
resolution = "16h"
"""
_hashes = itertools.count()


def settings_in(folder: Path, database: str = "sqlite:///unused.db") -> Path:
    return write_config(
        folder,
        database=database,
        boxes=[
            Box("support", "support@example.com"),
            Box("billing", "billing@example.com", team="billing"),
        ],
        extra=OFFICE,
    )


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return load_settings(settings_in(tmp_path / "conf"))


def add_ticket(
    engine: Engine,
    *,
    created: datetime,
    team: str = "frontline",
    status: str = "open",
    first_response: datetime | None = None,
    first_due: datetime | None = None,
    resolved: datetime | None = None,
    resolution_due: datetime | None = None,
    replies: int = 0,
    reopened: int = 0,
    csat: str | None = None,
    assignee: str | None = None,
    policy: str | None = "standard",
    mailbox: str = "support",
    category: str | None = None,
) -> int:
    """A ticket as the clocks would have left it, with `replies` agent replies and an ack."""
    with session_scope(engine) as s:
        t = Ticket(
            subject="crafted",
            status=status,
            team=team,
            assignee=assignee,
            mailbox=mailbox,
            category=category,
            created_at=created,
            updated_at=created,
            first_response_at=first_response,
            first_response_due=first_due,
            resolved_at=resolved,
            resolution_due=resolution_due,
            reopened=reopened,
            csat=csat,
            sla_policy=policy,
        )
        s.add(t)
        s.flush()
        authors = [None] + ["ann@example.com"] * replies  # the ack has no author
        for author in authors:
            s.add(
                Message(
                    content_hash=f"h{next(_hashes)}",
                    direction="out",
                    author=author,
                    ticket_id=t.id,
                    received_at=created,
                )
            )
        assert t.id is not None
        return t.id


@pytest.fixture
def week(engine: Engine) -> dict[str, int]:
    """Seven tickets in the week to Saturday noon, one older, one merged."""
    t = {}
    t["t1"] = add_ticket(  # answered in 1h, resolved in 3h, within both targets
        engine,
        created=MON + 9 * H,
        first_response=MON + 10 * H,
        first_due=MON + 13 * H,
        resolved=MON + 12 * H,
        resolution_due=WED + 9 * H,
        status="resolved",
        replies=1,
        csat="good",
        assignee="ann@example.com",
    )
    t["t2"] = add_ticket(  # overnight: 18h wall, 2 business hours; resolved late, reopened
        engine,
        created=MON + 16 * H,
        first_response=TUE + 10 * H,
        first_due=TUE + 12 * H,
        resolved=WED + 16 * H,
        resolution_due=WED + 12 * H,
        status="closed",
        replies=2,
        reopened=1,
        csat="bad",
        assignee="ann@example.com",
    )
    t["t3"] = add_ticket(  # answered exactly at the due instant; unresolved past its due
        engine,
        created=TUE + 9 * H,
        first_response=TUE + 13 * H,
        first_due=TUE + 13 * H,
        resolution_due=THU + 9 * H,
        replies=1,
        assignee="bob@example.com",
    )
    t["t4"] = add_ticket(  # billing: answered late, resolved next morning with one reply
        engine,
        team="billing",
        mailbox="billing",
        created=WED + 9 * H,
        first_response=WED + 17 * H,
        first_due=WED + 13 * H,
        resolved=THU + 9 * H,
        resolution_due=FRI + 9 * H,
        status="resolved",
        replies=1,
        csat="good",
        assignee="carl@example.com",
        category="refund",
    )
    t["t5"] = add_ticket(  # billing: unanswered, still inside its target
        engine,
        team="billing",
        mailbox="billing",
        created=FRI + 16 * H,
        first_due=MON + timedelta(days=7, hours=11),
        resolution_due=MON + timedelta(days=8),
    )
    t["t6"] = add_ticket(  # no SLA policy: 24x7 business time, no targets
        engine, created=SAT + 11 * H, first_response=SAT + 11.5 * H, status="pending", policy=None
    )
    t["t10"] = add_ticket(  # unanswered past its due
        engine,
        created=THU + 10 * H,
        first_due=THU + 14 * H,
        resolution_due=MON + timedelta(days=7, hours=10),
    )
    t["old"] = add_ticket(engine, created=MON - 6 * 24 * H + 9 * H)  # backlog only
    t["merged"] = add_ticket(engine, created=TUE + 10 * H, status="merged")
    return t


def test_percentiles_are_nearest_rank() -> None:
    assert median([]) is None and p90([]) is None
    assert median([3.0]) == 3.0 and p90([3.0]) == 3.0
    assert median([1.0, 2.0, 3.0, 10.0]) == 2.5
    assert p90([float(x) for x in range(1, 11)]) == 9.0
    assert p90([float(x) for x in range(1, 12)]) == 10.0


def test_week_totals(engine: Engine, settings: Settings, week: dict[str, int]) -> None:
    with session_scope(engine) as s:
        report = compute(s, settings=settings, since=SINCE, now=NOW)
    total = report.to_dict()["total"]
    assert report.groups == []
    assert total["created"] == 7  # the older ticket and the merged one are not counted
    assert total["first_response"] == {
        "count": 5,
        "median_s": 4 * 3600,  # of 0.5h, 1h, 4h, 8h, 18h
        "p90_s": 18 * 3600,
        "business_median_s": 2 * 3600,  # of 0.5h, 1h, 2h, 4h, 8h
        "business_p90_s": 8 * 3600,
    }
    assert total["resolution"] == {
        "count": 3,
        "median_s": 24 * 3600,  # of 3h, 24h, 48h
        "p90_s": 48 * 3600,
        "business_median_s": 8 * 3600,  # of 3h, 8h, 16h
        "business_p90_s": 16 * 3600,
    }
    # First response: t1, t2, t3 (at the due instant) met; t4, t10 breached; t5 running.
    assert total["sla"]["first_response"] == {"met": 3, "breached": 2, "pct": 60.0}
    # Resolution: t1, t4 met; t2 late and t3 unresolved past due breached; t5, t10 running.
    assert total["sla"]["resolution"] == {"met": 2, "breached": 2, "pct": 50.0}
    assert total["reopen"] == {"reopened": 1, "resolved": 3, "pct": 33.3}
    assert total["fcr"] == {"one_reply": 2, "resolved": 3, "pct": 66.7}
    assert total["csat"] == {"good": 2, "bad": 1, "pct": 66.7}
    # Open and pending now: t5 (20h), t6 (1h), t10 (2d2h), t3 (4d3h), old (11d3h).
    assert total["backlog"] == {"<1d": 2, "1-3d": 1, "3-7d": 1, ">7d": 1, "total": 5}


def test_by_team_agent_mailbox_category(
    engine: Engine, settings: Settings, week: dict[str, int]
) -> None:
    with session_scope(engine) as s:
        by_team = compute(s, settings=settings, since=SINCE, now=NOW, by="team").to_dict()
        by_agent = compute(s, settings=settings, since=SINCE, now=NOW, by="agent").to_dict()
        by_box = compute(s, settings=settings, since=SINCE, now=NOW, by="mailbox").to_dict()
        by_cat = compute(s, settings=settings, since=SINCE, now=NOW, by="category").to_dict()
    teams = {g["key"]: g for g in by_team["groups"]}
    assert [g["key"] for g in by_team["groups"]] == ["frontline", "billing"]  # busiest first
    assert teams["frontline"]["created"] == 5 and teams["billing"]["created"] == 2
    assert teams["billing"]["first_response"]["median_s"] == 8 * 3600
    assert teams["billing"]["sla"]["first_response"] == {"met": 0, "breached": 1, "pct": 0.0}
    assert teams["billing"]["sla"]["resolution"] == {"met": 1, "breached": 0, "pct": 100.0}
    assert teams["billing"]["backlog"] == {"<1d": 1, "1-3d": 0, "3-7d": 0, ">7d": 0, "total": 1}
    assert teams["frontline"]["backlog"]["total"] == 4
    assert teams["frontline"]["csat"] == {"good": 1, "bad": 1, "pct": 50.0}
    assert by_team["total"]["created"] == 7

    agents = {g["key"]: g for g in by_agent["groups"]}
    assert set(agents) == {
        "ann@example.com",
        "bob@example.com",
        "carl@example.com",
        "(unassigned)",
    }
    assert agents["ann@example.com"]["fcr"] == {"one_reply": 1, "resolved": 2, "pct": 50.0}
    assert agents["(unassigned)"]["created"] == 3
    assert agents["(unassigned)"]["backlog"]["total"] == 4  # t5, t6, t10 and the old one

    assert {g["key"]: g["created"] for g in by_box["groups"]} == {"support": 5, "billing": 2}
    assert {g["key"]: g["created"] for g in by_cat["groups"]} == {"(none)": 6, "refund": 1}


def test_empty_window(engine: Engine, settings: Settings) -> None:
    with session_scope(engine) as s:
        report = compute(s, settings=settings, since=SINCE, now=NOW, by="team")
    d = report.to_dict()
    assert d["groups"] == [] and d["total"]["created"] == 0
    assert d["total"]["first_response"]["median_s"] is None
    assert d["total"]["sla"]["first_response"] == {"met": 0, "breached": 0, "pct": None}
    lines = csv_text(report).splitlines()
    assert lines[1].startswith("(all),0,0,,,,,0,")


def test_csv(engine: Engine, settings: Settings, week: dict[str, int]) -> None:
    with session_scope(engine) as s:
        report = compute(s, settings=settings, since=SINCE, now=NOW, by="team")
    text = csv_text(report)
    header, *_ = text.splitlines()
    assert header.split(",") == list(CSV_COLUMNS)
    rows = {r["group"]: r for r in csv.DictReader(io.StringIO(text))}
    assert list(rows) == ["frontline", "billing", "(all)"]
    total = rows["(all)"]
    assert total["created"] == "7"
    assert total["first_response_median_s"] == str(4 * 3600)
    assert total["first_response_business_p90_s"] == str(8 * 3600)
    assert total["sla_first_response_pct"] == "60.0"
    assert total["csat_pct"] == "66.7"
    assert [total[c] for c in CSV_COLUMNS if c.startswith("backlog")] == ["2", "1", "1", "1", "5"]
    assert rows["billing"]["resolution_median_s"] == str(24 * 3600)
    assert rows["billing"]["csat_bad"] == "0"


def test_unknown_policy_falls_back_to_wall_clock(engine: Engine, settings: Settings) -> None:
    add_ticket(engine, created=MON + 9 * H, first_response=MON + 20 * H, policy="gone")
    with session_scope(engine) as s:
        fr = compute(s, settings=settings, since=SINCE, now=NOW).to_dict()["total"]
    assert fr["first_response"]["business_median_s"] == 11 * 3600


def test_cli(database: Database, tmp_path: Path) -> None:
    config = settings_in(tmp_path / "conf", database.url)
    now = datetime.now(UTC)
    add_ticket(
        database.engine,
        created=now - 2 * H,
        first_response=now - H,
        resolved=now - 0.5 * H,
        status="resolved",
        replies=1,
        csat="good",
        policy=None,
    )
    add_ticket(database.engine, created=now - 30 * H, team="billing", policy=None)
    add_ticket(database.engine, created=now - 10 * 24 * H, policy=None)  # before --since 7d

    doc = cli_json(config, "report", "--by", "team")
    assert doc["by"] == "team"
    assert doc["total"]["created"] == 2
    assert doc["total"]["first_response"]["median_s"] == 3600
    assert doc["total"]["fcr"] == {"one_reply": 1, "resolved": 1, "pct": 100.0}
    assert doc["total"]["backlog"] == {"<1d": 0, "1-3d": 1, "3-7d": 0, ">7d": 1, "total": 2}
    assert [g["key"] for g in doc["groups"]] == ["billing", "frontline"]  # same volume: by name

    wider = cli_json(config, "report", "--since", "2w")
    assert wider["total"]["created"] == 3 and wider["groups"] == []

    rows = list(csv.reader(io.StringIO(cli(config, "report", "--csv").stdout.decode())))
    assert rows[0] == list(CSV_COLUMNS)
    assert rows[1][:2] == ["(all)", "2"]

    text = cli(config, "report", "--by", "team").stdout.decode()
    for expected in ("Volume and times", "frontline", "billing", "(all)", "Backlog", "1h00m"):
        assert expected in text

    for args, problem in (
        (("--by", "weekday"), "unknown --by 'weekday' (one of: team, agent, mailbox, category)"),
        (("--since", "soon"), "invalid --since 'soon'"),
        (("--json", "--csv"), "--json and --csv exclude each other"),
    ):
        proc = cli(config, "report", *args, check=False)
        assert proc.returncode == 2
        assert proc.stderr.decode().startswith(f"inboxd: error: {problem}")


def test_window_start_takes_a_date_in_the_configured_zone() -> None:
    from zoneinfo import ZoneInfo

    from inboxd.cli.report import duration_text, window_start

    oslo = ZoneInfo("Europe/Oslo")
    start = window_start("2026-11-01", now=NOW, zone=oslo)
    assert start == datetime(2026, 10, 31, 23, tzinfo=UTC)
    assert window_start("36h", now=NOW, zone=oslo) == NOW - 36 * H
    assert [duration_text(s) for s in (None, 42, 720, 3 * 3600 + 300, 2 * 86400 + 4 * 3600)] == [
        "-",
        "42s",
        "12m",
        "3h05m",
        "2d04h",
    ]
    assert reports.DIMENSIONS == ("team", "agent", "mailbox", "category")
