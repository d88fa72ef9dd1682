"""`inboxd report`: volume, response and resolution times, SLA, reopens, CSAT, backlog."""

from __future__ import annotations

import sys
from datetime import date, datetime
from typing import TYPE_CHECKING, Annotated

import typer

from inboxd.cli.common import STATE, emit_json
from inboxd.errors import ConfigError

if TYPE_CHECKING:
    from zoneinfo import ZoneInfo

    from inboxd.tickets.reports import GroupReport, Rate, Report

BAR_WIDTH = 10


def report(
    since: Annotated[
        str,
        typer.Option(
            "--since",
            help='Window start: a duration back from now ("7d", "24h", "2w") or a date '
            "(2026-11-01, midnight in [inboxd].timezone).",
        ),
    ] = "7d",
    by: Annotated[
        str | None, typer.Option("--by", help="Group by team, agent, mailbox or category.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    as_csv: Annotated[bool, typer.Option("--csv", help="CSV: one line per group.")] = False,
) -> None:
    """Support metrics for the tickets created since --since (backlog: every open ticket)."""
    from inboxd.clock import utcnow
    from inboxd.db import session_scope
    from inboxd.tickets import reports

    if by is not None and by not in reports.DIMENSIONS:
        raise ConfigError(f"unknown --by {by!r} (one of: {', '.join(reports.DIMENSIONS)})")
    if as_json and as_csv:
        raise ConfigError("--json and --csv exclude each other (pick one)")
    settings = STATE.settings
    now = utcnow()
    start = window_start(since, now=now, zone=settings.inboxd.zone)
    with session_scope(STATE.engine) as s:
        result = reports.compute(s, settings=settings, since=start, now=now, by=by)
    if as_json:
        emit_json(result.to_dict())
    elif as_csv:
        sys.stdout.write(reports.csv_text(result))
    else:
        render(result, zone=settings.inboxd.zone)


def window_start(text: str, *, now: datetime, zone: ZoneInfo) -> datetime:
    """`now` minus a duration, or a local date's midnight; ConfigError otherwise."""
    from inboxd.config import parse_duration

    try:
        day = date.fromisoformat(text.strip())
    except ValueError:
        try:
            return now - parse_duration(text)
        except ValueError:
            raise ConfigError(
                f'invalid --since {text!r} (a duration like "7d" or a date like 2026-11-01)'
            ) from None
    start = datetime.combine(day, datetime.min.time(), tzinfo=zone)
    if start >= now:
        raise ConfigError(f"--since {text} is not in the past (a date before today)")
    return start


# -- rendering ----------------------------------------------------------------------


def duration_text(seconds: float | None) -> str:
    """Short, for tables: 45s, 12m, 3h05m, 2d04h."""
    if seconds is None:
        return "-"
    s = round(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def bar(value: float, most: float, width: int = BAR_WIDTH) -> str:
    """A bar of `value` against `most`, in eighths of a block."""
    if most <= 0 or value <= 0:
        return ""
    eighths = max(1, round(8 * width * min(value, most) / most))
    full, rest = divmod(eighths, 8)
    return "█" * full + ("", "▏", "▎", "▍", "▌", "▋", "▊", "▉")[rest]


def render(result: Report, *, zone: ZoneInfo) -> None:
    """Three tables that fit 80 columns: volume and times, quality, backlog."""
    from rich.console import Console
    from rich.table import Table

    from inboxd.tickets.reports import BUCKETS

    console = Console(highlight=False)
    span = f"{result.since.astimezone(zone):%Y-%m-%d %H:%M} to "
    span += f"{result.until.astimezone(zone):%Y-%m-%d %H:%M} ({zone.key})"
    grouped = f", by {result.by}" if result.by else ""
    console.print(f"Tickets created {span}{grouped}", markup=False, style="bold")
    rows: list[GroupReport] = [*result.groups, result.total]

    def table(title: str, caption: str | None, *columns: str) -> Table:
        t = Table(
            title=title,
            caption=caption,
            show_edge=False,
            title_justify="left",
            caption_justify="left",
        )
        t.add_column("", overflow="fold")
        for name in columns:
            t.add_column(name, justify="right", no_wrap=True)
        return t

    def last(g: GroupReport) -> bool:  # a rule above the (all) line
        return len(rows) > 1 and g is rows[-2]

    most = max((g.created for g in result.groups), default=result.total.created)
    times = table(
        "Volume and times: median / p90",
        "second line: business time of the SLA policy's calendar (24x7 without one)",
        "created",
        "",
        "first response",
        "resolution",
    )
    for g in rows:
        d = g.to_dict()
        times.add_row(
            g.key,
            str(g.created),
            bar(g.created, most, BAR_WIDTH) if g is not result.total else "",
            _times(d["first_response"]),
            _times(d["resolution"]),
            end_section=last(g),
        )
    console.print(times)

    quality = table(
        "Quality",
        "SLA: met of known outcomes; reopened: of resolved once; FCR: resolved with one reply",
        "SLA 1st",
        "SLA res",
        "reopened",
        "FCR",
        "CSAT",
    )
    for g in rows:
        quality.add_row(
            g.key,
            _rate(g.sla_first_response),
            _rate(g.sla_resolution),
            _rate(g.reopened),
            _rate(g.fcr),
            _rate(g.csat, f"{g.csat.hits}/{g.csat.total} good"),
            end_section=last(g),
        )
    console.print(quality)

    most_open = max((g.backlog_total for g in result.groups), default=result.total.backlog_total)
    backlog = table(
        "Backlog now: open and pending tickets by age",
        None,
        *(b[0] for b in BUCKETS),
        "total",
        "",
    )
    for g in rows:
        backlog.add_row(
            g.key,
            *(str(g.backlog[b[0]]) for b in BUCKETS),
            str(g.backlog_total),
            bar(g.backlog_total, most_open, BAR_WIDTH) if g is not result.total else "",
            end_section=last(g),
        )
    console.print(backlog)


def _times(d: dict[str, float | None]) -> str:
    wall = f"{duration_text(d['median_s'])} / {duration_text(d['p90_s'])}"
    business = f"{duration_text(d['business_median_s'])} / {duration_text(d['business_p90_s'])}"
    return wall if d["median_s"] is None else f"{wall}\n{business}"


def _rate(rate: Rate, counts: str | None = None) -> str:
    """The share on one line, its counts and a bar below: `60.0%`, `3/5`, `█████`."""
    if rate.pct is None:
        return "-"
    return f"{rate.pct:.1f}%\n{counts or f'{rate.hits}/{rate.total}'}\n{bar(rate.pct, 100.0, 5)}"
