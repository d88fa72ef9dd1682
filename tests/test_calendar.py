"""Business-time arithmetic: hand-computed cases, DST in both directions, properties, ICS."""

from __future__ import annotations

import pickle
from bisect import bisect_left
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, date, datetime, time, timedelta
from itertools import accumulate
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from inboxd.tickets.calendar import END_OF_DAY, BusinessCalendar, parse_ics_holidays

OSLO = ZoneInfo("Europe/Oslo")
NEW_YORK = ZoneInfo("America/New_York")
H = timedelta(hours=1)
MIN = timedelta(minutes=1)


def utc(y: int, mo: int, d: int, h: int = 0, mi: int = 0) -> datetime:
    return datetime(y, mo, d, h, mi, tzinfo=UTC)


def oslo(y: int, mo: int, d: int, h: int = 0, mi: int = 0, *, fold: int = 0) -> datetime:
    return datetime(y, mo, d, h, mi, tzinfo=OSLO, fold=fold)


def ny(y: int, mo: int, d: int, h: int = 0, mi: int = 0) -> datetime:
    return datetime(y, mo, d, h, mi, tzinfo=NEW_YORK)


def spec(
    tz: str,
    hours: Mapping[str, Sequence[str] | str],
    *,
    holidays: Iterable[date] = (),
    holidays_ics: str | None = None,
) -> BusinessCalendar:
    return BusinessCalendar.from_spec(
        name="t", timezone=tz, hours=hours, holidays=holidays, holidays_ics=holidays_ics
    )


# Mon-Thu 09-17, Fri 09-16, closed Christmas Eve and Day 2026 (a Thursday and a Friday).
OFFICE = spec(
    "Europe/Oslo",
    {"mon-thu": "09:00-17:00", "fri": "09:00-16:00"},
    holidays=[date(2026, 12, 24), date(2026, 12, 25)],
)
LUNCH = spec("Europe/Oslo", {"mon-fri": ["08:00-12:00", "13:00-17:00"]})
NY_OFFICE = spec("America/New_York", {"mon-fri": "09:00-17:00"})
FULL_DAYS = {"mon-sun": "00:00-24:00"}
OSLO_24X7 = spec("Europe/Oslo", FULL_DAYS)  # continuous: the fast path
# The same hours plus a holiday far away, which forces the day-by-day path.
OSLO_24X7_SLOW = spec("Europe/Oslo", FULL_DAYS, holidays=[date(2031, 1, 1)])
NY_24X7_SLOW = spec("America/New_York", FULL_DAYS, holidays=[date(2031, 1, 1)])
OSLO_SUNDAYS = spec("Europe/Oslo", {"sun": "00:00-24:00"})
NY_SUNDAYS = spec("America/New_York", {"sun": "00:00-24:00"})


# --- hand-computed cases ----------------------------------------------------------------


def test_friday_afternoon_plus_four_hours_lands_monday_noon() -> None:
    # Fri 2026-01-16 15:00 CET: 1 h until Friday's 16:00 close, weekend closed,
    # Mon 19th 09:00 + 3 h = 12:00 CET = 11:00 UTC.
    due = OFFICE.add(oslo(2026, 1, 16, 15), 4 * H)
    assert due == utc(2026, 1, 19, 11)
    assert due.tzinfo is UTC


def test_christmas_holidays_and_weekend_are_skipped() -> None:
    # Wed 2026-12-23 16:00: 1 h to 17:00; Thu 24 and Fri 25 holidays, Sat-Sun closed;
    # Mon 28 09:00 + 3 h = 12:00 CET = 11:00 UTC.
    assert OFFICE.add(oslo(2026, 12, 23, 16), 4 * H) == utc(2026, 12, 28, 11)
    # Tue 22 10:00: 7 h Tuesday + 8 h Wednesday = 15 h; Mon 28 09:00 + 1 h = 10:00 CET.
    assert OFFICE.add(oslo(2026, 12, 22, 10), 16 * H) == utc(2026, 12, 28, 9)
    assert OFFICE.elapsed(oslo(2026, 12, 23, 17), oslo(2026, 12, 28, 9)) == timedelta(0)
    assert not OFFICE.is_open(oslo(2026, 12, 24, 10))
    assert OFFICE.next_open(oslo(2026, 12, 24, 10)) == utc(2026, 12, 28, 8)


def test_overnight() -> None:
    # Mon 2026-01-19 16:30 + 1 h: 30 min Monday, Tue 09:00 + 30 min = 09:30 CET.
    assert OFFICE.add(oslo(2026, 1, 19, 16, 30), H) == utc(2026, 1, 20, 8, 30)
    # Starting at night counts from the next opening: Tue 02:00 + 1 h = Tue 10:00 CET.
    assert OFFICE.add(oslo(2026, 1, 20, 2), H) == utc(2026, 1, 20, 9)


def test_several_ranges_a_day() -> None:
    # Tue 2026-01-20 11:00 + 2 h: 1 h to the 12:00 lunch, 13:00 + 1 h = 14:00 CET.
    assert LUNCH.add(oslo(2026, 1, 20, 11), 2 * H) == utc(2026, 1, 20, 13)
    # Starting during lunch waits for 13:00: 12:15 + 30 min = 13:30 CET.
    assert LUNCH.add(oslo(2026, 1, 20, 12, 15), 30 * MIN) == utc(2026, 1, 20, 12, 30)
    assert LUNCH.elapsed(oslo(2026, 1, 20, 11), oslo(2026, 1, 20, 14)) == 2 * H
    assert not LUNCH.is_open(oslo(2026, 1, 20, 12, 30))
    assert LUNCH.is_open(oslo(2026, 1, 20, 13))  # open at the opening instant
    assert not LUNCH.is_open(oslo(2026, 1, 20, 17))  # closed at the closing instant


def test_target_used_up_at_closing_is_due_at_closing() -> None:
    # The earliest instant with 1 h elapsed: 12:00 CET, not 13:00 after lunch.
    assert LUNCH.add(oslo(2026, 1, 20, 11), H) == utc(2026, 1, 20, 11)
    # Fri 15:00 + 1 h is Fri 16:00, not Monday 09:00.
    assert OFFICE.add(oslo(2026, 1, 16, 15), H) == utc(2026, 1, 16, 15)


def test_zero_duration_is_due_at_once_open_or_not() -> None:
    saturday = oslo(2026, 1, 17, 12)
    assert OFFICE.add(saturday, timedelta(0)) == utc(2026, 1, 17, 11)
    assert OFFICE.add(oslo(2026, 1, 19, 10), timedelta(0)) == utc(2026, 1, 19, 9)
    # Any positive amount waits for Monday's opening: 09:00 CET + 1 us.
    tiny = timedelta(microseconds=1)
    assert OFFICE.add(saturday, tiny) == utc(2026, 1, 19, 8) + tiny


def test_elapsed_across_a_weekend() -> None:
    # Fri 2026-01-16 15:00 -> Mon 19 10:00: 1 h Friday + 1 h Monday.
    assert OFFICE.elapsed(oslo(2026, 1, 16, 15), oslo(2026, 1, 19, 10)) == 2 * H
    assert OFFICE.elapsed(oslo(2026, 1, 19, 10), oslo(2026, 1, 16, 15)) == timedelta(0)
    # Inputs in any offset denote the same instants.
    assert OFFICE.elapsed(utc(2026, 1, 16, 14), ny(2026, 1, 19, 4)) == 2 * H


# --- DST, Europe/Oslo: 2026-03-29 02:00 -> 03:00 and 2026-10-25 03:00 -> 02:00 ------------


def test_oslo_office_hours_across_both_changes() -> None:
    # Fri 27 Mar 15:00 CET (14:00 UTC): 1 h Friday; Mon 30 Mar 09:00 CEST + 3 h = 12:00
    # CEST = 10:00 UTC. The local result is still noon; only the UTC instant moved.
    due = OFFICE.add(oslo(2026, 3, 27, 15), 4 * H)
    assert due == utc(2026, 3, 30, 10)
    assert due.astimezone(OSLO).time() == time(12)
    # Fri 23 Oct 15:00 CEST (13:00 UTC) + 4 h: Mon 26 Oct 12:00 CET = 11:00 UTC.
    assert OFFICE.add(oslo(2026, 10, 23, 15), 4 * H) == utc(2026, 10, 26, 11)
    assert OFFICE.elapsed(oslo(2026, 3, 27, 15), oslo(2026, 3, 30, 12)) == 4 * H


@pytest.mark.parametrize("cal", [OSLO_24X7, OSLO_24X7_SLOW], ids=["fast", "per-day"])
def test_oslo_24x7_local_hours_are_real_hours(cal: BusinessCalendar) -> None:
    # Sat 28 Mar 23:00 CET = 22:00 UTC; + 4 real hours = 02:00 UTC = 04:00 CEST
    # (the wall clock moved 5 h).
    assert cal.add(oslo(2026, 3, 28, 23), 4 * H) == utc(2026, 3, 29, 2)
    # Sat 24 Oct 23:00 CEST = 21:00 UTC; + 4 h = 01:00 UTC = the second 02:00 (CET).
    due = cal.add(oslo(2026, 10, 24, 23), 4 * H)
    assert due == utc(2026, 10, 25, 1)
    assert due.astimezone(OSLO) == oslo(2026, 10, 25, 2, fold=1)
    # Saturday 00:00 CET to Monday 00:00 CEST is 47 real hours.
    assert cal.elapsed(oslo(2026, 3, 28), oslo(2026, 3, 30)) == 47 * H
    assert cal.elapsed(oslo(2026, 10, 24), oslo(2026, 10, 26)) == 49 * H


def test_oslo_whole_day_is_23_or_25_hours() -> None:
    # Sunday 29 Mar 00:00-24:00 lasts 23 h; Sunday 25 Oct lasts 25 h.
    assert OSLO_SUNDAYS.elapsed(oslo(2026, 3, 28), oslo(2026, 3, 31)) == 23 * H
    assert OSLO_SUNDAYS.elapsed(oslo(2026, 10, 24), oslo(2026, 10, 27)) == 25 * H
    # Sat 28 Mar noon + 24 h: Sunday gives 23 h (Mar 28 23:00 -> Mar 29 22:00 UTC);
    # Sun 5 Apr 00:00 CEST = Apr 4 22:00 UTC, + 1 h = 23:00 UTC.
    assert OSLO_SUNDAYS.add(oslo(2026, 3, 28, 12), 24 * H) == utc(2026, 4, 4, 23)
    # Sunday 25 Oct from its start + 24 h: 23:00 CET the same day (the day has 25 h).
    assert OSLO_SUNDAYS.add(oslo(2026, 10, 25), 24 * H) == utc(2026, 10, 25, 22)


def test_oslo_range_spanning_the_change_counts_real_time() -> None:
    cal = spec("Europe/Oslo", {"sun": "01:00-04:00"})
    # 25 Oct: 01:00 CEST (Oct 24 23:00 UTC) to 04:00 CET (03:00 UTC) = 4 h.
    assert cal.elapsed(oslo(2026, 10, 24), oslo(2026, 10, 26)) == 4 * H
    assert cal.add(oslo(2026, 10, 25, 1), 4 * H) == utc(2026, 10, 25, 3)
    # The second pass of 02:30 (CET, 01:30 UTC) lies inside the interval.
    assert cal.is_open(utc(2026, 10, 25, 1, 30))
    # 29 Mar: 01:00 CET (00:00 UTC) to 04:00 CEST (02:00 UTC) = 2 h.
    assert cal.elapsed(oslo(2026, 3, 28), oslo(2026, 3, 30)) == 2 * H


def test_oslo_boundaries_in_the_gap_and_in_the_repeated_hour() -> None:
    cal = spec("Europe/Oslo", {"sun": "00:00-02:30, 02:30-05:00"})
    late = spec("Europe/Oslo", {"sun": "02:30-05:00"})
    # 29 Mar: 02:30 does not exist; the boundary is the jump itself, 01:00 UTC (03:00 CEST).
    # 00:00 CET (Mar 28 23:00 UTC) -> 01:00 UTC is 2 h; 01:00 -> 05:00 CEST (03:00 UTC) 2 h.
    opening = late.next_open(oslo(2026, 3, 28, 12))
    assert opening == utc(2026, 3, 29, 1)
    assert opening.astimezone(OSLO).astimezone(UTC) == opening  # a real local time, 03:00
    assert late.elapsed(oslo(2026, 3, 28), oslo(2026, 3, 30)) == 2 * H
    assert cal.elapsed(oslo(2026, 3, 28), oslo(2026, 3, 30)) == 4 * H
    # 25 Oct: 02:30 happens twice; the boundary is the first, 02:30 CEST = 00:30 UTC.
    # 00:00 CEST (Oct 24 22:00 UTC) -> 00:30 UTC is 2.5 h; 00:30 -> 05:00 CET (04:00 UTC)
    # is 3.5 h; together exactly the 6 real hours from midnight to 05:00.
    assert late.next_open(oslo(2026, 10, 24, 12)) == utc(2026, 10, 25, 0, 30)
    assert late.elapsed(oslo(2026, 10, 24), oslo(2026, 10, 26)) == 3.5 * H
    assert cal.elapsed(oslo(2026, 10, 24), oslo(2026, 10, 26)) == 6 * H


def test_range_wholly_inside_the_gap_is_empty_that_day() -> None:
    cal = spec("Europe/Oslo", {"sun": "02:00-03:00"})
    # 29 Mar has no 02:00-03:00; the next Sunday opens at 02:00 CEST = 00:00 UTC.
    assert cal.elapsed(oslo(2026, 3, 28), oslo(2026, 3, 30)) == timedelta(0)
    assert cal.next_open(oslo(2026, 3, 28, 12)) == utc(2026, 4, 5, 0)
    # On 25 Oct the range is 02:00 CEST (00:00 UTC) to 03:00 CET (02:00 UTC): 2 h.
    assert cal.elapsed(oslo(2026, 10, 24), oslo(2026, 10, 26)) == 2 * H


# --- DST, America/New_York: 2026-03-08 02:00 -> 03:00 and 2026-11-01 02:00 -> 01:00 -------


def test_new_york_office_hours_across_both_changes() -> None:
    # Fri 6 Mar 16:00 EST (21:00 UTC) + 2 h: 1 h Friday; Mon 9 Mar 09:00 EDT (13:00 UTC)
    # + 1 h = 14:00 UTC.
    assert NY_OFFICE.add(ny(2026, 3, 6, 16), 2 * H) == utc(2026, 3, 9, 14)
    # Fri 30 Oct 16:00 EDT (20:00 UTC) + 2 h: Mon 2 Nov 10:00 EST = 15:00 UTC.
    assert NY_OFFICE.add(ny(2026, 10, 30, 16), 2 * H) == utc(2026, 11, 2, 15)
    assert NY_OFFICE.elapsed(ny(2026, 10, 30, 16), ny(2026, 11, 2, 10)) == 2 * H


def test_new_york_24x7_local_hours() -> None:
    # Sat 7 Mar 23:00 EST = Mar 8 04:00 UTC; + 4 h = 08:00 UTC = 04:00 EDT.
    assert NY_24X7_SLOW.add(ny(2026, 3, 7, 23), 4 * H) == utc(2026, 3, 8, 8)
    # Sat 31 Oct 23:00 EDT = Nov 1 03:00 UTC; + 4 h = 07:00 UTC = 02:00 EST.
    assert NY_24X7_SLOW.add(ny(2026, 10, 31, 23), 4 * H) == utc(2026, 11, 1, 7)
    assert NY_SUNDAYS.elapsed(ny(2026, 3, 7), ny(2026, 3, 10)) == 23 * H
    assert NY_SUNDAYS.elapsed(ny(2026, 10, 31), ny(2026, 11, 3)) == 25 * H


def test_new_york_repeated_hour() -> None:
    # 1 Nov 01:00-02:00 runs from the first 01:00 (EDT, 05:00 UTC) to 02:00 EST (07:00 UTC).
    cal = spec("America/New_York", {"sun": "01:00-02:00"})
    assert cal.elapsed(ny(2026, 10, 31), ny(2026, 11, 3)) == 2 * H
    assert cal.is_open(utc(2026, 11, 1, 6, 30))  # 01:30 EST, the second pass
    # A boundary at the ambiguous 01:30 is its first occurrence (EDT, 05:30 UTC), so the
    # two ranges tile 00:00 EDT (04:00 UTC) to 03:00 EST (08:00 UTC): 1.5 h + 2.5 h.
    split = spec("America/New_York", {"sun": "00:00-01:30, 01:30-03:00"})
    assert split.next_open(utc(2026, 11, 1, 5)) == utc(2026, 11, 1, 5)
    assert split.elapsed(ny(2026, 10, 31), ny(2026, 11, 1, 1, 30)) == 1.5 * H
    assert split.elapsed(ny(2026, 10, 31), ny(2026, 11, 3)) == 4 * H


# --- zones with changes at midnight and a skipped day --------------------------------------


def test_santiago_changes_at_midnight() -> None:
    tz = ZoneInfo("America/Santiago")
    # Sat 4 Apr 24:00 (-03) goes back to 23:00 (-04): Saturday lasts 25 h, from
    # 03:00 UTC Apr 4 to 04:00 UTC Apr 5.
    sat = spec("America/Santiago", {"sat": "00:00-24:00"})
    assert sat.elapsed(utc(2026, 4, 1), utc(2026, 4, 8)) == 25 * H
    assert sat.add(datetime(2026, 4, 4, tzinfo=tz), 25 * H) == utc(2026, 4, 5, 4)
    # Sun 6 Sep 00:00 (-04) jumps to 01:00 (-03): Sunday opens at the jump, 04:00 UTC,
    # and lasts 23 h.
    sun = spec("America/Santiago", {"sun": "00:00-24:00"})
    assert sun.next_open(utc(2026, 9, 5, 12)) == utc(2026, 9, 6, 4)
    assert sun.elapsed(utc(2026, 9, 4), utc(2026, 9, 9)) == 23 * H


def test_apia_skipped_day() -> None:
    # Samoa skipped Fri 2011-12-30 (Thu 24:00 -10 became Sat 00:00 +14). Daily 09-17:
    # Thu 29 16:00 -10 (Dec 30 02:00 UTC) + 2 h: 1 h Thursday, no Friday,
    # Sat 31 09:00 +14 (Dec 30 19:00 UTC) + 1 h = 20:00 UTC.
    cal = spec("Pacific/Apia", {"mon-sun": "09:00-17:00"})
    start = datetime(2011, 12, 29, 16, tzinfo=ZoneInfo("Pacific/Apia"))
    assert cal.add(start, 2 * H) == utc(2011, 12, 30, 20)


# --- always() -----------------------------------------------------------------------------


@given(
    a=st.datetimes(timezones=st.just(UTC)),
    b=st.datetimes(timezones=st.just(UTC)),
    d=st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=3000)),
)
def test_always_is_plain_utc_arithmetic(a: datetime, b: datetime, d: timedelta) -> None:
    cal = BusinessCalendar.always()
    assert cal.name == "24x7"
    assert cal.elapsed(a, b) == max(b - a, timedelta(0))
    assert cal.is_open(a)
    assert cal.next_open(a) == a
    try:
        expected = a + d
    except OverflowError:
        return
    assert cal.add(a, d) == expected


# --- properties over a family of calendars, including DST edges ---------------------------

CALENDARS = {
    "office": OFFICE,
    "lunch-ny-holidays": spec(
        "America/New_York",
        {"mon-fri": "08:00-12:00,13:00-17:00", "sat": "10:00-12:00"},
        holidays=[date(2026, 11, 26), date(2026, 12, 25), date(2027, 1, 1)],
    ),
    "oslo-sundays": OSLO_SUNDAYS,
    "oslo-night": spec("Europe/Oslo", {"mon-sun": "00:00-02:30, 22:00-24:00"}),
    "oslo-dst-edges": spec("Europe/Oslo", {"sun": "01:00-02:30,02:30-04:00", "wed": "09:00-10:00"}),
    "oslo-24x7-per-day": OSLO_24X7_SLOW,
    "lord-howe": spec(
        "Australia/Lord_Howe", {"sun": "01:30-02:15, 02:15-03:00", "mon": "09:00-17:00"}
    ),
    "santiago": spec("America/Santiago", {"sat-sun": "00:00-24:00", "tue": "23:00-24:00"}),
}


def in_utc(at: datetime) -> datetime:
    """Aware datetimes sharing a tzinfo compare and subtract as wall times; UTC does not."""
    return at.astimezone(UTC)


calendars = st.sampled_from(list(CALENDARS.values()))
zones = st.sampled_from([UTC, OSLO, NEW_YORK, ZoneInfo("America/Santiago")])
instants = st.datetimes(
    min_value=datetime(2025, 9, 1), max_value=datetime(2027, 6, 1), timezones=zones
)
durations = st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=40))


@given(cal=calendars, a=instants, d=durations)
def test_elapsed_inverts_add_from_any_start(
    cal: BusinessCalendar, a: datetime, d: timedelta
) -> None:
    # add(a, d) is the earliest t with elapsed(a, t) == d, so the round trip is exact for
    # every start, open or not (closed time before the first opening counts zero).
    due = cal.add(a, d)
    assert due.tzinfo is UTC
    assert due >= a
    assert cal.elapsed(a, due) == d
    if d:  # earliest: one microsecond sooner is not enough
        assert cal.elapsed(a, due - timedelta(microseconds=1)) < d


@given(cal=calendars, x=instants, d=durations)
def test_round_trip_from_open_starts(cal: BusinessCalendar, x: datetime, d: timedelta) -> None:
    a = cal.next_open(x)
    assert cal.is_open(a)
    due = cal.add(a, d)
    assert cal.elapsed(a, due) == d
    # From an open start the clock runs at once, so the converse holds too.
    assert cal.add(a, cal.elapsed(a, due)) == due


@given(cal=calendars, a=instants, b=instants)
def test_add_of_elapsed_reaches_b_only_when_the_clock_was_running(
    cal: BusinessCalendar, a: datetime, b: datetime
) -> None:
    spent = cal.elapsed(a, b)
    back = cal.add(a, spent)
    if b <= a:
        # Compare in UTC: PEP 495 makes == across zones False for a time in a fold.
        assert back == a.astimezone(UTC)
        return
    assert back <= b  # the earliest instant with that much business time
    assert cal.elapsed(back, b) == timedelta(0)  # nothing business-like in between
    if spent and cal.elapsed(b - timedelta(microseconds=1), b):  # running just before b
        assert back == b.astimezone(UTC)


@given(cal=calendars, a1=instants, a2=instants, d1=durations, d2=durations)
def test_add_is_monotone(
    cal: BusinessCalendar, a1: datetime, a2: datetime, d1: timedelta, d2: timedelta
) -> None:
    a1, a2 = sorted((a1, a2), key=in_utc)
    d1, d2 = sorted((d1, d2))
    assert cal.add(a1, d1) <= cal.add(a2, d1)
    assert cal.add(a1, d1) <= cal.add(a1, d2)


@given(cal=calendars, points=st.lists(instants, min_size=3, max_size=3))
def test_elapsed_is_additive(cal: BusinessCalendar, points: list[datetime]) -> None:
    a, b, c = sorted(map(in_utc, points))
    assert cal.elapsed(a, c) == cal.elapsed(a, b) + cal.elapsed(b, c)
    assert cal.elapsed(a, c) <= c - a


@given(cal=calendars, x=instants)
def test_next_open(cal: BusinessCalendar, x: datetime) -> None:
    opening = cal.next_open(x)
    assert opening >= x
    assert cal.is_open(opening)
    assert cal.elapsed(x, opening) == timedelta(0)
    if cal.is_open(x):
        assert opening == x.astimezone(UTC)
    # The opening is a real local wall time: it survives a round trip through the zone.
    assert opening.astimezone(cal.tz).astimezone(UTC) == opening


# --- an independent oracle on every transition day of several zones ------------------------


def _transition_days(tz: ZoneInfo, year: int) -> list[date]:
    days = []
    at = datetime(year, 1, 1, tzinfo=UTC)
    offset = at.astimezone(tz).utcoffset()
    while at.year == year:
        at += timedelta(minutes=15)
        new = at.astimezone(tz).utcoffset()
        if new != offset:
            days.append(at.astimezone(tz).date())
            offset = new
    return days


ORACLE_ZONES = [
    "Europe/Oslo",
    "America/New_York",
    "America/Santiago",  # changes at midnight
    "Asia/Beirut",  # falls back from 00:00 to 23:00 the day before
    "America/Havana",  # falls back from 01:00 to 00:00
    "Australia/Lord_Howe",  # 30-minute change
]
TRANSITIONS = [(z, d) for z in ORACLE_ZONES for d in _transition_days(ZoneInfo(z), 2026)]

quarter_hours = st.integers(0, 96).map(lambda q: time.max if q == 96 else time(q // 4, q % 4 * 15))


@st.composite
def day_ranges(draw: st.DrawFn) -> tuple[tuple[time, time], ...]:
    cuts = sorted(set(draw(st.lists(quarter_hours, min_size=2, max_size=6))))
    pairs = list(zip(cuts[::2], cuts[1::2], strict=False))
    return tuple((s, e) for s, e in pairs if s < e)


@settings(deadline=None)
@given(
    where=st.sampled_from(TRANSITIONS),
    ranges=day_ranges().filter(bool),
    probes=st.lists(st.integers(0, 2 * 96), min_size=2, max_size=2),
)
def test_matches_a_brute_force_oracle_on_transition_days(
    where: tuple[str, date], ranges: tuple[tuple[time, time], ...], probes: list[int]
) -> None:
    """The oracle reads the definition literally: a boundary w is the first minute at which
    the wall clock shows w or later, found by scanning UTC minutes, with no fold logic."""
    zone, day = where
    tz = ZoneInfo(zone)
    cal = BusinessCalendar(tz=tz, hours=dict.fromkeys(range(7), ranges), holidays=frozenset())
    origin = datetime.combine(day - timedelta(days=3), time(), UTC)
    minutes = [origin + i * MIN for i in range(7 * 24 * 60)]
    walls = [m.astimezone(tz).replace(tzinfo=None) for m in minutes]
    high = list(accumulate(walls, max))  # first minute with wall >= w, by bisection

    def first_at_or_after(wall: datetime) -> datetime:
        return minutes[bisect_left(high, wall)]

    spans = []
    for d in (day + timedelta(days=k) for k in range(-2, 3)):
        for start, end in ranges:
            close = (
                datetime.combine(d + timedelta(days=1), time())
                if end == END_OF_DAY
                else (datetime.combine(d, end))
            )
            spans.append((first_at_or_after(datetime.combine(d, start)), first_at_or_after(close)))

    def reference(a: datetime, b: datetime) -> timedelta:
        return sum((max(min(hi, b) - max(lo, a), timedelta(0)) for lo, hi in spans), timedelta(0))

    window = (
        datetime.combine(day, time(), UTC) - 12 * H,
        datetime.combine(day, time(), UTC) + 36 * H,
    )
    a, b = sorted(window[0] + p * 15 * MIN for p in probes)
    assert cal.elapsed(*window) == reference(*window)
    assert cal.elapsed(a, b) == reference(a, b)
    assert cal.is_open(a) == any(lo <= a < hi for lo, hi in spans)


# --- construction and validation ----------------------------------------------------------


def test_from_spec_shapes() -> None:
    cal = spec(
        "Europe/Oslo",
        {
            "Mon-Wed": "09:00-17:00",
            "thursday": ["08:00-12:00", "13:00-17:00"],
            "fri": "",
            "sat": "10:00-14:00,15:00-16:00",
            "sun": "closed",
        },
    )
    assert cal.hours[0] == ((time(9), time(17)),)
    assert cal.hours[3] == ((time(8), time(12)), (time(13), time(17)))
    assert cal.hours[5] == ((time(10), time(14)), (time(15), time(16)))
    assert 4 not in cal.hours
    assert 6 not in cal.hours
    assert spec("UTC", {"sun": "00:00-24:00"}).hours[6] == ((time(0), END_OF_DAY),)
    assert hash(cal) == hash(
        spec(
            "Europe/Oslo",
            {
                "mon-wed": "09:00-17:00",
                **{"thu": "08:00-12:00,13:00-17:00", "sat": "10:00-14:00, 15:00-16:00"},
            },
        )
    )


@pytest.mark.parametrize(
    ("hours", "timezone", "message"),
    [
        ({"mon": "09:00-17:00"}, "Europe/Olso", "timezone: unknown time zone 'Europe/Olso'"),
        ({"mondag": "09:00-17:00"}, "UTC", "hours.mondag: unknown day"),
        ({"fri-mon": "09:00-17:00"}, "UTC", "hours.fri-mon: day range runs backwards"),
        ({"mon": "9-17"}, "UTC", "hours.mon: bad range '9-17'"),
        ({"mon": "09:00-25:00"}, "UTC", "hours.mon: no such time"),
        ({"mon": "24:00-24:00"}, "UTC", "hours.mon: no such time"),
        ({"mon": "22:00-06:00"}, "UTC", "a range cannot cross midnight"),
        ({"mon": "09:00-09:00"}, "UTC", "ends before it starts"),
        ({"mon": "09:00-12:00,11:00-17:00"}, "UTC", "hours.mon: ranges overlap at 11:00"),
        ({"mon-fri": "09:00-17:00", "wed": "10:00-11:00"}, "UTC", "wed is already given"),
        ({"mon": ""}, "UTC", "hours: no business hours on any day"),
        ({}, "UTC", "hours: no business hours on any day"),
    ],
)
def test_from_spec_rejects_bad_input(hours: Mapping[str, str], timezone: str, message: str) -> None:
    with pytest.raises(ValueError) as exc:
        spec(timezone, hours)
    assert message in str(exc.value)


def test_pickles_and_compares_by_value() -> None:
    OFFICE.add(oslo(2026, 1, 16, 15), H)  # fill the cache; it is not part of the value
    copy = pickle.loads(pickle.dumps(OFFICE))
    assert copy == OFFICE
    assert hash(copy) == hash(OFFICE)
    assert copy.add(oslo(2026, 1, 16, 15), 4 * H) == utc(2026, 1, 19, 11)


def test_construction_rejects_a_calendar_that_never_opens() -> None:
    with pytest.raises(ValueError, match="no business hours"):
        BusinessCalendar(tz=OSLO, hours={}, holidays=frozenset())
    with pytest.raises(ValueError, match="overlap"):
        BusinessCalendar(
            tz=OSLO, hours={0: ((time(9), time(12)), (time(11), time(13)))}, holidays=frozenset()
        )
    with pytest.raises(ValueError, match="not a date"):
        BusinessCalendar(
            tz=OSLO, hours={0: ((time(9), time(12)),)}, holidays=frozenset({datetime(2026, 1, 1)})
        )


def test_years_of_holidays_raise_instead_of_looping() -> None:
    start = date(2026, 1, 1)
    closed = frozenset(start + timedelta(days=i) for i in range(4 * 366))
    cal = BusinessCalendar(tz=OSLO, hours={0: ((time(9), time(17)),)}, holidays=closed, name="x")
    with pytest.raises(ValueError, match="no business hours within"):
        cal.add(oslo(2026, 1, 1), H)
    with pytest.raises(ValueError, match="no business hours within"):
        cal.next_open(oslo(2026, 1, 1))
    assert cal.elapsed(oslo(2026, 1, 1), oslo(2027, 1, 1)) == timedelta(0)


def test_naive_and_negative_inputs_are_refused() -> None:
    naive = datetime(2026, 1, 19, 10)
    for call in (
        lambda: OFFICE.add(naive, H),
        lambda: OFFICE.elapsed(naive, oslo(2026, 1, 20)),
        lambda: OFFICE.elapsed(oslo(2026, 1, 20), naive),
        lambda: OFFICE.is_open(naive),
        lambda: OFFICE.next_open(naive),
        lambda: BusinessCalendar.always().add(naive, H),
    ):
        with pytest.raises(ValueError, match="naive"):
            call()
    with pytest.raises(ValueError, match="negative"):
        OFFICE.add(oslo(2026, 1, 19, 10), -H)


# --- ICS ----------------------------------------------------------------------------------

ICS = (
    "BEGIN:VCALENDAR\r\n"
    "VERSION:2.0\r\n"
    "X-WR-CALNAME:Holidays\r\n"
    "BEGIN:VEVENT\r\n"
    "UID:xmas\r\n"
    "DTSTART;VALUE=DA\r\n"  # folded inside a parameter (RFC 5545 3.1)
    " TE:20261224\r\n"
    "DTEND;VALUE=DATE:20261227\r\n"  # exclusive: 24, 25, 26
    "SUMMARY:Christmas Eve\\, Day and Boxing\r\n"
    "\tDay\r\n"  # folded with a tab
    "BEGIN:VALARM\r\n"
    "DTSTART:19990101\r\n"  # belongs to the alarm, not the event
    "END:VALARM\r\n"
    "END:VEVENT\r\n"
    "BEGIN:VEVENT\r\n"
    "UID:national\r\n"
    "DTSTART;VALUE=DATE:20260517\r\n"
    "RRULE:FREQ=YEARLY\r\n"
    "END:VEVENT\r\n"
    "BEGIN:VEVENT\r\n"
    'DTSTART;TZID="Europe/Oslo:odd":20260601T090000\r\n'  # timed: its own date
    "DTEND;TZID=Europe/Oslo:20260601T170000\r\n"
    "END:VEVENT\r\n"
    "this line means nothing\r\n"
    "BEGIN:VEVENT\r\n"
    "DTSTART:not-a-date\r\n"
    "END:VEVENT\r\n"
    "END:VCALENDAR\r\n"
)


def test_ics_folded_multi_day_yearly_and_timed() -> None:
    days = parse_ics_holidays(ICS)
    assert {date(2026, 12, 24), date(2026, 12, 25), date(2026, 12, 26)} <= days
    assert date(2026, 12, 27) not in days
    # Yearly from 2026 through 2036 (DTSTART's year + ICS_YEARLY_HORIZON_YEARS).
    assert {d for d in days if (d.month, d.day) == (5, 17)} == {
        date(y, 5, 17) for y in range(2026, 2037)
    }
    assert date(2026, 6, 1) in days
    assert date(1999, 1, 1) not in days
    assert len(days) == 3 + 11 + 1


def test_ics_yearly_rule_parts() -> None:
    def one(body: str, **kw: date) -> set[date]:
        text = f"BEGIN:VCALENDAR\nBEGIN:VEVENT\n{body}\nEND:VEVENT\nEND:VCALENDAR\n"
        return set(parse_ics_holidays(text, **kw))

    # Thanksgiving, 4th Thursday of November: 2026-11-26, 2027-11-25, 2028-11-23.
    assert one("DTSTART;VALUE=DATE:20261126\nRRULE:FREQ=YEARLY;BYMONTH=11;BYDAY=4TH;COUNT=3") == {
        date(2026, 11, 26),
        date(2027, 11, 25),
        date(2028, 11, 23),
    }
    # Memorial Day, last Monday of May: 2026-05-25, 2027-05-31.
    assert one(
        "DTSTART;VALUE=DATE:20260525\nRRULE:FREQ=YEARLY;BYMONTH=5;BYDAY=-1MO;UNTIL=20271231"
    ) == {
        date(2026, 5, 25),
        date(2027, 5, 31),
    }
    # Feb 29 recurs only in leap years; INTERVAL and an explicit horizon.
    assert one("DTSTART;VALUE=DATE:20240229\nRRULE:FREQ=YEARLY", until=date(2033, 1, 1)) == {
        date(2024, 2, 29),
        date(2028, 2, 29),
        date(2032, 2, 29),
    }
    assert one("DTSTART;VALUE=DATE:20260101\nRRULE:FREQ=YEARLY;INTERVAL=2;COUNT=3") == {
        date(2026, 1, 1),
        date(2028, 1, 1),
        date(2030, 1, 1),
    }
    # EXDATE drops one, RDATE adds one; a rule we do not expand keeps its first instance.
    assert one(
        "DTSTART;VALUE=DATE:20260501\nRRULE:FREQ=YEARLY;COUNT=3\n"
        "EXDATE;VALUE=DATE:20270501\nRDATE;VALUE=DATE:20260502"
    ) == {date(2026, 5, 1), date(2026, 5, 2), date(2028, 5, 1)}
    assert one("DTSTART;VALUE=DATE:20260101\nRRULE:FREQ=MONTHLY;COUNT=5") == {date(2026, 1, 1)}
    assert one("DTSTART;VALUE=DATE:20260101\nRRULE:FREQ=YEARLY;BYWEEKNO=1") == {date(2026, 1, 1)}
    assert one("DTSTART;VALUE=DATE:20260101\nDURATION:P3D") == {
        date(2026, 1, 1),
        date(2026, 1, 2),
        date(2026, 1, 3),
    }
    assert one("DTSTART;VALUE=DATE:20260101\nSTATUS:CANCELLED") == set()
    assert one("DTSTART;VALUE=DATE:20260101\nDTEND;VALUE=DATE:20300101") == set()  # > a year


def test_ics_moved_instance_replaces_the_original() -> None:
    text = (
        "BEGIN:VCALENDAR\n"
        "BEGIN:VEVENT\nUID:u1\nDTSTART;VALUE=DATE:20260704\nRRULE:FREQ=YEARLY;COUNT=3\nEND:VEVENT\n"
        "BEGIN:VEVENT\nUID:u1\nRECURRENCE-ID;VALUE=DATE:20270704\n"
        "DTSTART;VALUE=DATE:20270705\nEND:VEVENT\n"
        "END:VCALENDAR\n"
    )
    assert parse_ics_holidays(text) == {date(2026, 7, 4), date(2027, 7, 5), date(2028, 7, 4)}


def test_ics_that_is_not_icalendar_is_an_error() -> None:
    with pytest.raises(ValueError, match="not an iCalendar document"):
        parse_ics_holidays("/etc/inboxd/holidays.ics")
    with pytest.raises(ValueError, match=r"^holidays_ics: not an iCalendar document"):
        spec("UTC", {"mon": "09:00-17:00"}, holidays_ics="<html>404</html>")
    assert parse_ics_holidays("BEGIN:VCALENDAR\nEND:VCALENDAR\n") == frozenset()


def test_from_spec_with_ics_holidays() -> None:
    cal = spec(
        "Europe/Oslo",
        {"mon-thu": "09:00-17:00", "fri": "09:00-16:00"},
        holidays=[date(2026, 12, 31)],
        holidays_ics=ICS,
    )
    # Wed 2026-12-23 16:00 + 4 h: 1 h Wednesday; 24-26 from the ICS, Sunday closed,
    # Mon 28 09:00 + 3 h = 12:00 CET.
    assert cal.add(oslo(2026, 12, 23, 16), 4 * H) == utc(2026, 12, 28, 11)
    assert not cal.is_open(oslo(2026, 12, 31, 10))
    assert not cal.is_open(oslo(2030, 5, 17, 10))  # a Friday, from the yearly rule
