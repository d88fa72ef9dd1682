"""Business calendars: weekly local opening hours, holidays, and exact business-time arithmetic.

Semantics (the SLA clock relies on every line of this):

* Opening hours are local wall-clock ranges ``[start, end)`` per weekday; ``end`` may be
  ``24:00`` (stored as ``time.max``), meaning the next local midnight. A range never
  crosses midnight: an overnight shift is ``22:00-24:00`` on one day and ``00:00-06:00``
  on the next. A holiday is a local date on which no range of that date opens (a range
  of the day before that ends at ``24:00`` is not affected).
* Each wall-clock boundary ``w`` on a date is the real instant at which the local clock
  first shows ``w`` or later. An ambiguous time (the repeated hour after a fall-back)
  is its first occurrence (PEP 495 ``fold=0``); a non-existent time (the gap of a
  spring-forward) is the instant of the transition, so no boundary is ever a
  non-existent local time. This map is non-decreasing, so each range is one real
  interval and adjacent ranges and days tile the timeline without gaps or double counting.
* Business time is real elapsed time inside those intervals, never wall-clock
  differences: ``00:00-24:00`` is 23 h on a spring-forward day and 25 h on a fall-back
  day, and in Europe/Oslo ``01:00-04:00`` on 2026-10-25 is 4 h (it contains the repeated
  hour) while on 2026-03-29 it is 2 h. During a repeated hour an instant is open when it
  lies inside such an interval, whatever the clock shows the second time round.
* Intervals are half-open: open at the opening instant, closed at the closing instant.
* ``add(start, d)`` is the earliest instant ``t >= start`` with ``elapsed(start, t) == d``.
  Hence ``add(start, 0) == start`` even outside business hours (a zero-length target is
  due at once), a target that is used up exactly at closing time is due at the closing
  instant (not at the next opening), and ``elapsed(a, add(a, d)) == d`` for every ``a``.
  The converse ``add(a, elapsed(a, b)) == b`` holds only when business time was running
  just before ``b``; otherwise the result is the last closing before ``b`` (or ``a``).

All arithmetic is on aware UTC datetimes and ``timedelta`` (integer microseconds), so it
is exact. Work is O(local days spanned), each day's intervals computed once per calendar
and cached; a calendar open 24x7 with no holidays short-circuits to plain arithmetic.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from functools import cache
from itertools import pairwise
from types import MappingProxyType
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

__all__ = ["END_OF_DAY", "ICS_YEARLY_HORIZON_YEARS", "BusinessCalendar", "parse_ics_holidays"]

END_OF_DAY = time.max
"""A range end meaning ``24:00``: the next local midnight."""

ICS_YEARLY_HORIZON_YEARS = 10
"""Yearly ICS rules expand through the end of DTSTART's year plus this many years."""

_ZERO = timedelta(0)
_ONE_DAY = timedelta(days=1)
_SEARCH_HORIZON_DAYS = 3 * 366  # consecutive closed days after which add/next_open give up
_CACHE_MAX_DAYS = 4096  # the sweep touches a moving window of dates; this bounds memory

_DAY_NAMES = {
    **{name: i for i, name in enumerate(("mon", "tue", "wed", "thu", "fri", "sat", "sun"))},
    **{
        name: i
        for i, name in enumerate(
            ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
        )
    },
}
_RANGE = re.compile(r"(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})")

Span = tuple[datetime, datetime]
"""A real business interval ``[open, close)`` in UTC."""


@dataclass(frozen=True, slots=True)
class BusinessCalendar:
    """Weekly local opening hours in one time zone, minus holidays; see the module docstring.

    ``hours`` maps weekday (0 = Monday) to sorted, non-overlapping ``(start, end)`` local
    times with ``end`` = ``END_OF_DAY`` for 24:00. Construction validates and normalises
    it and raises ``ValueError`` when no weekday has hours (``add`` could never finish).
    """

    tz: ZoneInfo
    hours: Mapping[int, tuple[tuple[time, time], ...]]
    holidays: frozenset[date]
    name: str = ""
    # Per-date UTC intervals; mutated in place, never reassigned, so frozen still holds.
    # A lost race between threads only recomputes a day.
    _days: dict[date, tuple[Span, ...]] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )
    _continuous: bool = field(default=False, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.tz, tzinfo):
            raise ValueError(f"tz must be a ZoneInfo, not {type(self.tz).__name__}")
        hours: dict[int, tuple[tuple[time, time], ...]] = {}
        for weekday, ranges in self.hours.items():
            if not isinstance(weekday, int) or not 0 <= weekday <= 6:
                raise ValueError(f"hours: weekday {weekday!r} is not 0 (Monday) to 6 (Sunday)")
            checked = sorted(_check_range(weekday, r) for r in ranges)
            for (_, prev_end), (start, _) in pairwise(checked):
                if start < prev_end:
                    raise ValueError(f"hours: weekday {weekday}: ranges overlap at {start}")
            if checked:
                hours[weekday] = tuple(checked)
        if not hours:
            raise ValueError(
                "hours: no business hours on any weekday "
                "(business time could never pass; use BusinessCalendar.always() for 24x7)"
            )
        for day in self.holidays:
            if isinstance(day, datetime) or not isinstance(day, date):
                raise ValueError(f"holidays: {day!r} is not a date")
        object.__setattr__(self, "hours", MappingProxyType(hours))
        object.__setattr__(self, "holidays", frozenset(self.holidays))
        full_day = ((time(0), END_OF_DAY),)
        continuous = not self.holidays and all(hours.get(d) == full_day for d in range(7))
        object.__setattr__(self, "_continuous", continuous)

    def __hash__(self) -> int:
        return hash((self.tz, tuple(sorted(self.hours.items())), self.holidays, self.name))

    def __reduce__(self) -> tuple[type[BusinessCalendar], tuple[object, ...]]:
        # A mappingproxy cannot be pickled; rebuild from plain values (and an empty cache).
        return type(self), (self.tz, dict(self.hours), self.holidays, self.name)

    @classmethod
    def always(cls) -> BusinessCalendar:
        """The "24x7" calendar: business time is real time (one shared instance)."""
        return _always()

    @classmethod
    def from_spec(
        cls,
        *,
        name: str,
        timezone: str,
        hours: Mapping[str, Sequence[str] | str],
        holidays: Iterable[date] = (),
        holidays_ics: str | None = None,
    ) -> BusinessCalendar:
        """Build a calendar from configuration values.

        ``hours`` keys are day names (``mon`` or ``monday``, any case) or day ranges
        (``mon-fri``); values are ``"HH:MM-HH:MM"`` ranges, comma-separated or as a list,
        ``24:00`` allowed as an end, ``""``/``"closed"``/``[]`` for a closed day.
        ``holidays_ics`` is iCalendar text (not a path), parsed by ``parse_ics_holidays``.
        Raises ``ValueError`` whose message starts with the offending key
        (``hours.tue: ...``) and ends with what was expected.
        """
        try:
            tz = ZoneInfo(timezone)
        except (ZoneInfoNotFoundError, ValueError, TypeError):
            raise ValueError(
                f"timezone: unknown time zone {timezone!r} "
                "(expected an IANA name such as 'Europe/Oslo')"
            ) from None
        weekly: dict[int, list[tuple[time, time]]] = {}
        for key, value in hours.items():
            days = _parse_days(key)
            ranges = [_parse_range(key, text) for text in _range_texts(key, value)]
            for day in days:
                if day in weekly:
                    raise ValueError(
                        f"hours.{key}: {_weekday_name(day)} is already given by another key "
                        "(expected each day once)"
                    )
                weekly[day] = list(ranges)
        for day, ranges in weekly.items():
            ranges.sort()
            for (_, prev_end), (start, _) in pairwise(ranges):
                if start < prev_end:
                    raise ValueError(
                        f"hours.{_weekday_name(day)}: ranges overlap at {start:%H:%M} "
                        "(expected sorted, non-overlapping ranges)"
                    )
        if not any(weekly.values()):
            raise ValueError(
                "hours: no business hours on any day "
                '(expected at least one range, such as mon = "09:00-17:00")'
            )
        days_off = set(holidays)
        if holidays_ics is not None:
            try:
                days_off |= parse_ics_holidays(holidays_ics)
            except ValueError as exc:
                raise ValueError(f"holidays_ics: {exc}") from None
        return cls(
            tz=tz,
            hours={d: tuple(r) for d, r in weekly.items()},
            holidays=frozenset(days_off),
            name=name,
        )

    def add(self, start: datetime, duration: timedelta) -> datetime:
        """The earliest instant by which ``duration`` of business time has passed since
        ``start`` (aware UTC). ``start`` itself for a zero duration, open or not.

        Raises ``ValueError`` on a naive ``start``, a negative duration, or when the
        calendar stays closed for three years in a row.
        """
        at = _utc(start, "start")
        if duration < _ZERO:
            raise ValueError(f"negative business duration {duration}")
        if not duration or self._continuous:
            return at + duration
        remaining = duration
        for opens, closes in self._spans_from(at):
            if remaining <= closes - opens:
                return opens + remaining
            remaining -= closes - opens
        raise AssertionError("unreachable: _spans_from never ends without raising")

    def elapsed(self, a: datetime, b: datetime) -> timedelta:
        """Business time between the instants ``a`` and ``b``; zero when ``b <= a``."""
        begin, end = _utc(a, "a"), _utc(b, "b")
        if end <= begin:
            return _ZERO
        if self._continuous:
            return end - begin
        total = _ZERO
        # Date d's intervals lie between d's and d+1's first midnights, so the date that
        # holds an instant is its local date or, in a fall-back across midnight, the next
        # one; a day of margin on each side covers [begin, end).
        day, last = self._local_date(begin) - _ONE_DAY, self._local_date(end) + _ONE_DAY
        while day <= last:
            for opens, closes in self._spans(day):
                lo, hi = max(opens, begin), min(closes, end)
                if lo < hi:
                    total += hi - lo
            day += _ONE_DAY
        return total

    def is_open(self, at: datetime) -> bool:
        """Whether business time is running at the instant ``at``."""
        instant = _utc(at, "at")
        if self._continuous:
            return True
        day = self._local_date(instant)
        return any(
            opens <= instant < closes
            for d in (day - _ONE_DAY, day, day + _ONE_DAY)
            for opens, closes in self._spans(d)
        )

    def next_open(self, at: datetime) -> datetime:
        """``at`` (as UTC) when open, else the next opening instant (aware UTC).

        Raises ``ValueError`` when the calendar stays closed for three years in a row.
        """
        instant = _utc(at, "at")
        if self._continuous:
            return instant
        return next(self._spans_from(instant))[0]

    def _spans_from(self, at: datetime) -> Iterator[Span]:
        """Business intervals clipped to start at ``at`` or later, in order, forever.

        Raises ``ValueError`` after ``_SEARCH_HORIZON_DAYS`` closed days in a row, which only
        a holiday list covering years can cause; construction rules out an empty week.
        """
        day = self._local_date(at) - _ONE_DAY
        closed_days = 0
        while True:
            found = False
            for opens, closes in self._spans(day):
                if closes > at:
                    found = True
                    yield max(opens, at), closes
            closed_days = 0 if found else closed_days + 1
            if closed_days > _SEARCH_HORIZON_DAYS:
                raise ValueError(
                    f"calendar {self.name!r}: no business hours within "
                    f"{_SEARCH_HORIZON_DAYS} days after {at.isoformat()}"
                )
            day += _ONE_DAY

    def _spans(self, day: date) -> tuple[Span, ...]:
        """The real UTC intervals of the local date ``day`` (empty on holidays)."""
        spans = self._days.get(day)
        if spans is not None:
            return spans
        result: list[Span] = []
        if day not in self.holidays:
            for start, end in self.hours.get(day.weekday(), ()):
                opens = self._instant(datetime.combine(day, start))
                if end == END_OF_DAY:
                    closes = self._instant(datetime.combine(day + _ONE_DAY, time(0)))
                else:
                    closes = self._instant(datetime.combine(day, end))
                if opens < closes:  # a range wholly inside a DST gap is empty that day
                    result.append((opens, closes))
        spans = tuple(result)
        if len(self._days) >= _CACHE_MAX_DAYS:
            self._days.clear()
        self._days[day] = spans
        return spans

    def _instant(self, wall: datetime) -> datetime:
        """The first instant at which the local clock shows the naive ``wall`` or later."""
        first = wall.replace(tzinfo=self.tz, fold=0).astimezone(UTC)
        second = wall.replace(tzinfo=self.tz, fold=1).astimezone(UTC)
        if first <= second:  # equal: an ordinary time; less: a repeated one (take the first)
            return first
        # ``wall`` is in a gap. PEP 495: fold=0 reads it with the offset before the
        # transition, fold=1 with the one after, so the transition T lies in
        # (second, first]. Bisect on microseconds for the first instant with the new offset.
        after = first.astimezone(self.tz).utcoffset()
        lo, hi = second, first
        while hi - lo > timedelta(microseconds=1):
            mid = lo + (hi - lo) // 2
            if mid.astimezone(self.tz).utcoffset() == after:
                hi = mid
            else:
                lo = mid
        return hi

    def _local_date(self, instant: datetime) -> date:
        return instant.astimezone(self.tz).date()


@cache
def _always() -> BusinessCalendar:
    full_day = ((time(0), END_OF_DAY),)
    return BusinessCalendar(
        tz=ZoneInfo("UTC"),
        hours=dict.fromkeys(range(7), full_day),
        holidays=frozenset(),
        name="24x7",
    )


def _utc(value: datetime, what: str) -> datetime:
    """``value`` as aware UTC; naive datetimes are refused, never guessed."""
    if not isinstance(value, datetime):
        raise ValueError(f"{what} must be a datetime, not {type(value).__name__}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"naive datetime for {what}: {value.isoformat()}")
    return value.astimezone(UTC)


def _check_range(weekday: int, pair: tuple[time, time]) -> tuple[time, time]:
    try:
        start, end = pair
    except (TypeError, ValueError):
        raise ValueError(f"hours: weekday {weekday}: {pair!r} is not a (start, end) pair") from None
    for t in (start, end):
        if not isinstance(t, time) or t.tzinfo is not None:
            raise ValueError(f"hours: weekday {weekday}: {t!r} is not a naive local time")
    start, end = start.replace(fold=0), end.replace(fold=0)
    if start == END_OF_DAY or not start < end:
        raise ValueError(f"hours: weekday {weekday}: range {start}-{end} is empty or reversed")
    return start, end


def _weekday_name(day: int) -> str:
    return ("mon", "tue", "wed", "thu", "fri", "sat", "sun")[day]


def _parse_days(key: str) -> list[int]:
    expected = "(expected mon..sun, a full day name, or a range such as mon-fri)"
    parts = [p.strip().lower() for p in str(key).split("-")]
    if len(parts) > 2 or not all(p in _DAY_NAMES for p in parts):
        raise ValueError(f"hours.{key}: unknown day {expected}")
    first, last = _DAY_NAMES[parts[0]], _DAY_NAMES[parts[-1]]
    if last < first:
        raise ValueError(f"hours.{key}: day range runs backwards {expected}")
    return list(range(first, last + 1))


def _range_texts(key: str, value: Sequence[str] | str) -> list[str]:
    items = [value] if isinstance(value, str) else value
    texts: list[str] = []
    for item in items:
        if not isinstance(item, str):
            raise ValueError(
                f'hours.{key}: {type(item).__name__} is not text (expected "09:00-17:00")'
            )
        texts += [t.strip() for t in item.split(",")]
    return [t for t in texts if t and t.lower() != "closed"]


def _parse_range(key: str, text: str) -> tuple[time, time]:
    expected = '(expected "HH:MM-HH:MM" such as "09:00-17:00"; "24:00" may end a day)'
    match = _RANGE.fullmatch(text)
    if match is None:
        raise ValueError(f"hours.{key}: bad range {text!r} {expected}")
    sh, sm, eh, em = map(int, match.groups())
    if sh > 23 or sm > 59 or em > 59 or eh > 24 or (eh == 24 and em):
        raise ValueError(f"hours.{key}: no such time in {text!r} {expected}")
    start, end = time(sh, sm), END_OF_DAY if eh == 24 else time(eh, em)
    if not start < end:
        raise ValueError(
            f"hours.{key}: range {text!r} ends before it starts (expected start < end; "
            'a range cannot cross midnight: split it as "22:00-24:00" and "00:00-06:00" '
            "on the next day)"
        )
    return start, end


# --- iCalendar holidays (RFC 5545, the subset holiday feeds use) -----------------------

_ICS_DATE = re.compile(r"(\d{4})(\d{2})(\d{2})(?:T(\d{2})(\d{2})(\d{2})Z?)?")
_ICS_DURATION = re.compile(r"\+?P(?:(\d+)W)?(?:(\d+)D)?(?:T(?:(\d+)H)?(?:(\d+)M)?(?:(\d+)S)?)?")
_ICS_WEEKDAYS = {"MO": 0, "TU": 1, "WE": 2, "TH": 3, "FR": 4, "SA": 5, "SU": 6}
_ICS_BYDAY = re.compile(r"([+-]?[1-5])(MO|TU|WE|TH|FR|SA|SU)")
_ICS_RULE_PARTS = {"FREQ", "INTERVAL", "COUNT", "UNTIL", "BYMONTH", "BYMONTHDAY", "BYDAY", "WKST"}
_ICS_MAX_EVENT_DAYS = 366

Props = dict[str, list[tuple[dict[str, str], str]]]


def parse_ics_holidays(text: str, *, until: date | None = None) -> frozenset[date]:
    """The dates covered by the VEVENTs of an iCalendar document.

    Supported: all-day events (``DTSTART;VALUE=DATE``, exclusive ``DTEND`` or ``DURATION``,
    multi-day); timed events mark DTSTART's written date (and, when DTEND falls on a later
    date, the days up to it; a midnight end is exclusive); ``RRULE:FREQ=YEARLY`` with
    INTERVAL, COUNT, UNTIL, BYMONTH, BYMONTHDAY and ordinal BYDAY (``4TH``, ``-1MO``),
    expanded through ``until`` or, by default, the end of DTSTART's year plus
    ``ICS_YEARLY_HORIZON_YEARS``; RDATE, EXDATE, RECURRENCE-ID overrides and
    ``STATUS:CANCELLED``. Lines are unfolded per RFC 5545 3.1. Anything else (other
    frequencies or rule parts, bad values, events longer than a year) is skipped: an
    event with a rule we cannot expand keeps its first occurrence.

    Raises ``ValueError`` only when ``text`` is not iCalendar at all (no BEGIN:VCALENDAR),
    which catches a file path or an HTML error page passed by mistake.
    """
    # RFC 5545 3.1: a line break followed by one space or tab is a fold; remove both.
    unfolded = re.sub(r"\r?\n[ \t]", "", text.lstrip("\ufeff"))
    lines = unfolded.splitlines()
    if not any(line.strip().upper() == "BEGIN:VCALENDAR" for line in lines):
        raise ValueError("not an iCalendar document (expected BEGIN:VCALENDAR)")
    stack: list[str] = []
    events: list[Props] = []
    for line in lines:
        parsed = _ics_content_line(line)
        if parsed is None:
            continue
        name, params, value = parsed
        if name == "BEGIN":
            stack.append(value.strip().upper())
            if stack[-1] == "VEVENT":
                events.append({})
        elif name == "END":
            component = value.strip().upper()
            if component in stack:  # tolerate a missing END by unwinding to the match
                del stack[len(stack) - 1 - stack[::-1].index(component) :]
        elif stack and stack[-1] == "VEVENT" and events:
            events[-1].setdefault(name, []).append((params, value))

    masters: list[tuple[str, list[date], int]] = []
    moved: dict[str, set[date]] = {}
    days: set[date] = set()
    for props in events:
        event = _ics_event(props, until)
        if event is None:
            continue
        uid, recurrence_id, starts, length = event
        if recurrence_id is not None and uid:
            moved.setdefault(uid, set()).add(recurrence_id)
            days |= {s + timedelta(days=k) for s in starts for k in range(length)}
        else:
            masters.append((uid, starts, length))
    for uid, starts, length in masters:
        skip = moved.get(uid, set()) if uid else set()
        days |= {s + timedelta(days=k) for s in starts if s not in skip for k in range(length)}
    return frozenset(days)


def _ics_content_line(line: str) -> tuple[str, dict[str, str], str] | None:
    """``name *(";" param) ":" value``; quoted parameter values may hold ``:`` and ``;``."""
    fields: list[str] = []
    current: list[str] = []
    quoted = False
    for i, char in enumerate(line):
        if char == '"':
            quoted = not quoted
        elif not quoted and char in ";:":
            fields.append("".join(current))
            current = []
            if char == ":":
                name, *params = fields
                if not name.strip():
                    return None
                pairs = {}
                for param in params:
                    key, _, val = param.partition("=")
                    pairs[key.strip().upper()] = val.strip().strip('"')
                return name.strip().upper(), pairs, line[i + 1 :]
            continue
        current.append(char)
    return None


def _ics_date(value: str) -> tuple[date, time | None] | None:
    match = _ICS_DATE.fullmatch(value.strip())
    if match is None:
        return None
    y, mo, d, h, mi, s = match.groups()
    try:
        day = date(int(y), int(mo), int(d))
        at = None if h is None else time(int(h), int(mi), min(int(s), 59))  # 60: leap second
    except ValueError:
        return None
    return day, at


def _ics_duration(value: str) -> timedelta | None:
    match = _ICS_DURATION.fullmatch(value.strip())
    if match is None:
        return None
    w, d, h, m, s = (int(g) if g else 0 for g in match.groups())
    return timedelta(weeks=w, days=d, hours=h, minutes=m, seconds=s)


def _ics_event(props: Props, until: date | None) -> tuple[str, date | None, list[date], int] | None:
    """``(uid, recurrence-id date, occurrence start dates, days per occurrence)``."""

    def first(name: str) -> str | None:
        values = props.get(name)
        return values[0][1] if values else None

    start_value = first("DTSTART")
    start = _ics_date(start_value) if start_value is not None else None
    if start is None:
        return None
    start_day, start_time = start
    uid = (first("UID") or "").strip()
    rid_value = first("RECURRENCE-ID")
    rid = _ics_date(rid_value) if rid_value is not None else None
    recurrence_id = rid[0] if rid is not None else None
    if (first("STATUS") or "").strip().upper() == "CANCELLED":
        return uid, recurrence_id, [], 0

    end_value, duration_value = first("DTEND"), first("DURATION")
    end = _ics_date(end_value) if end_value is not None else None
    duration = _ics_duration(duration_value) if duration_value is not None else None
    if end is None and duration is not None:
        at = datetime.combine(start_day, start_time or time(0)) + duration
        end = (at.date(), None if start_time is None and at.time() == time(0) else at.time())
    length = 1
    if end is not None:
        end_day, end_time = end
        # An all-day end date is exclusive (RFC 5545 3.6.1); a timed end is exclusive
        # only at midnight.
        length = (end_day - start_day).days + (0 if end_time in (None, time(0)) else 1)
        length = max(length, 1)
    if length > _ICS_MAX_EVENT_DAYS:
        return None

    starts = [start_day]
    rule = first("RRULE")
    if rule is not None:
        starts = _ics_yearly(rule, start_day, until)
    for params, value in props.get("RDATE", []):
        if params.get("VALUE", "").upper() != "PERIOD":
            starts += [d[0] for v in value.split(",") if (d := _ics_date(v)) is not None]
    excluded = {
        d[0]
        for _, value in props.get("EXDATE", [])
        for v in value.split(",")
        if (d := _ics_date(v)) is not None
    }
    return uid, recurrence_id, [s for s in starts if s not in excluded], length


def _ics_yearly(rule: str, start: date, until: date | None) -> list[date]:
    """Occurrence dates of a FREQ=YEARLY rule; ``[start]`` when the rule is not understood.

    DTSTART is always the first occurrence and counts toward COUNT (RFC 5545 3.8.5.3);
    dates a rule names that do not exist (Feb 29, a fifth Monday) are skipped.
    """
    try:
        parts = dict(p.split("=", 1) for p in rule.strip().upper().split(";") if p)
    except ValueError:
        return [start]
    if parts.get("FREQ") != "YEARLY" or not set(parts) <= _ICS_RULE_PARTS:
        return [start]
    try:
        interval = int(parts.get("INTERVAL", "1"))
        count = int(parts["COUNT"]) if "COUNT" in parts else None
        months = [int(m) for m in parts["BYMONTH"].split(",")] if "BYMONTH" in parts else []
        monthdays = (
            [int(d) for d in parts["BYMONTHDAY"].split(",")] if "BYMONTHDAY" in parts else []
        )
    except ValueError:
        return [start]
    bydays: list[tuple[int, int]] = []
    for item in parts.get("BYDAY", "").split(",") if "BYDAY" in parts else []:
        match = _ICS_BYDAY.fullmatch(item.strip())
        if match is None:  # no ordinal: every such weekday, not a holiday pattern
            return [start]
        bydays.append((int(match[1]), _ICS_WEEKDAYS[match[2]]))
    if (
        interval < 1
        or (count is not None and count < 1)
        or not all(1 <= m <= 12 for m in months)
        or not all(1 <= abs(d) <= 31 for d in monthdays)
        or (bydays and (monthdays or not months))
    ):
        return [start]

    last_year = min(start.year + ICS_YEARLY_HORIZON_YEARS, date.max.year - 1)
    horizon = until if until is not None else date(last_year, 12, 31)
    if "UNTIL" in parts:
        rule_until = _ics_date(parts["UNTIL"])
        if rule_until is None:
            return [start]
        horizon = min(horizon, rule_until[0])

    occurrences = [start]
    year = start.year
    while year <= horizon.year:
        for day in sorted(_ics_year_dates(year, start, months, monthdays, bydays)):
            if day <= start:
                continue
            if day > horizon or (count is not None and len(occurrences) >= count):
                return occurrences
            occurrences.append(day)
        year += interval
    return occurrences


def _ics_year_dates(
    year: int, start: date, months: list[int], monthdays: list[int], bydays: list[tuple[int, int]]
) -> set[date]:
    found: set[date] = set()
    for month in months or [start.month]:
        first_day = date(year, month, 1)
        month_days = ((first_day + timedelta(days=32)).replace(day=1) - first_day).days
        if bydays:
            for nth, weekday in bydays:
                if nth > 0:
                    day = 1 + (weekday - first_day.weekday()) % 7 + 7 * (nth - 1)
                else:
                    last_weekday = date(year, month, month_days).weekday()
                    day = month_days - (last_weekday - weekday) % 7 - 7 * (-nth - 1)
                if 1 <= day <= month_days:
                    found.add(date(year, month, day))
        else:
            for md in monthdays or [start.day]:
                day = md if md > 0 else month_days + md + 1
                if 1 <= day <= month_days:
                    found.add(date(year, month, day))
    return found
