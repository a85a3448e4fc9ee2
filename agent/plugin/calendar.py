"""Calendar schedules (`"02:30"`, `"mon 03:00"`, `"jan,apr,jul,oct 1 05:00"`) as pure functions.

A spec names a local wall-clock time plus optional months, weekdays or days of
the month. Fire times are computed in the host's time zone and returned as
UTC instants, so the scheduler never does calendar arithmetic itself.

DST rules (the reason this module exists):
- a wall time that does not exist (spring-forward gap) fires once, shifted
  forward by the size of the gap (02:30 in Europe/Berlin on 2026-03-29 fires
  at 03:30 CEST = 01:30 UTC);
- a wall time that happens twice (fall-back) fires once, at its first
  occurrence (fold=0).

Nothing here reads the clock: `after`, `before` and `now` are always passed in.
The stdlib `calendar` module is deliberately not imported, because this file
shadows its name when `agent/` itself ends up on sys.path.
"""

from __future__ import annotations

import hashlib
import math
import re
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone, tzinfo

WEEKDAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
MONTH_NAMES = ("jan", "feb", "mar", "apr", "may", "jun",
               "jul", "aug", "sep", "oct", "nov", "dec")
LAST_DAY = 32
"""Stands for `last` in `CalendarSpec.days`; clamps to every month's length like 29..31 do."""

SEARCH_LIMIT_DAYS = 400 * 8
"""How many local dates next_fire/previous_fire walk before giving up (every valid spec matches within a year)."""

_TIME_RE = re.compile(r"^(\d{1,2}):(\d{2})$")
_DAY_RE = re.compile(r"^\d+$")
_SHORTEST_MONTH = {2: 28, 4: 30, 6: 30, 9: 30, 11: 30}


class CalendarSpecError(ValueError):
    """A calendar spec an operator wrote cannot be used; the message names the bad token."""


@dataclass(frozen=True)
class CalendarSpec:
    """A parsed calendar spec; build it with parse_calendar() so `text` and the fields agree."""

    hour: int
    minute: int
    weekdays: frozenset[int] | None  # 0=Mon..6=Sun; None = any weekday
    days: frozenset[int] | None      # 1..31, LAST_DAY (32) = last; None = any day
    months: frozenset[int] | None    # 1..12; None = any month
    text: str                        # the spec as written, lowercased, single spaces

    def __post_init__(self) -> None:
        """Reject field values that next_fire could not honour, even when built by hand."""
        if not (0 <= self.hour <= 23 and 0 <= self.minute <= 59):
            raise CalendarSpecError(f"time {self.hour}:{self.minute:02d} is out of range (00:00..23:59)")
        if self.weekdays is not None and self.days is not None:
            raise CalendarSpecError("give either weekdays or a day of month, not both")
        for name, values, low, high in (("weekday", self.weekdays, 0, 6),
                                        ("day", self.days, 1, LAST_DAY),
                                        ("month", self.months, 1, 12)):
            if values is not None and (not values or not all(low <= v <= high for v in values)):
                raise CalendarSpecError(f"{name} values {sorted(values)} are out of range {low}..{high}")

    @property
    def time_text(self) -> str:
        """The fire time as `HH:MM`."""
        return f"{self.hour:02d}:{self.minute:02d}"

    def describe(self) -> str:
        """Return a human sentence such as "weekly on mon at 03:00" for status pages and logs."""
        at = f"at {self.time_text}"
        months = _names_text(self.months, MONTH_NAMES, first=1) if self.months else None
        if self.days is not None:
            phrase = f"on {_days_text(self.days)}"
            note = " (last day in shorter months)" if self._some_day_clamps() else ""
            if months is None:
                return f"monthly {phrase} {at}{note}"
            return f"{phrase} of {months} {at}{note}"
        if self.weekdays is not None:
            weekdays = _names_text(self.weekdays, WEEKDAY_NAMES, first=0)
            if months is None:
                return f"weekly on {weekdays} {at}"
            return f"on {weekdays} in {months} {at}"
        if months is None:
            return f"daily {at}"
        return f"daily in {months} {at}"

    def _some_day_clamps(self) -> bool:
        """True when a numbered day (29..31) is missing from some selected month and moves to its last day."""
        months = self.months or range(1, 13)
        return any(day != LAST_DAY and day > _SHORTEST_MONTH.get(month, 31)
                   for day in (self.days or ()) for month in months)

    def matches(self, local_date: date) -> bool:
        """Given a local calendar date, return whether the spec fires on it (days past month end clamp to it)."""
        if self.months is not None and local_date.month not in self.months:
            return False
        if self.weekdays is not None and local_date.weekday() not in self.weekdays:
            return False
        if self.days is not None:
            length = days_in_month(local_date.year, local_date.month)
            return local_date.day in {min(day, length) for day in self.days}
        return True


def days_in_month(year: int, month: int) -> int:
    """Given a year and month, return how many days the month has (leap years included)."""
    following = date(year + month // 12, month % 12 + 1, 1)
    return (following - timedelta(days=1)).day


def parse_calendar(text: str) -> CalendarSpec:
    """Given a spec like `"jan,apr,jul,oct 1 05:00"`, return a CalendarSpec; raise CalendarSpecError naming the bad token."""
    if not isinstance(text, str):
        raise CalendarSpecError(f"calendar spec must be a string (got {text!r})")
    tokens = text.lower().split()
    if not tokens:
        raise CalendarSpecError("empty calendar spec (expected e.g. '02:30', 'mon 03:00' or '1 04:00')")
    *leading, last = tokens
    if not _TIME_RE.match(last):
        raise CalendarSpecError(f"missing time: the last token must be HH:MM (got {last!r})")
    hour, minute = _parse_time(last)

    months = weekdays = days = None
    seen: list[str] = []
    for token in leading:
        if _TIME_RE.match(token):
            raise CalendarSpecError(f"duplicate time token {token!r}: give one HH:MM, as the last token")
        kind = _token_kind(token)
        if kind == "months":
            if "months" in seen:
                raise CalendarSpecError(f"duplicate months token {token!r}: combine them with commas")
            if seen:
                raise CalendarSpecError(
                    f"months token {token!r} must come first, before the day or weekday token")
            months = _parse_months(token)
        elif kind == "weekdays":
            if "weekdays" in seen:
                raise CalendarSpecError(f"duplicate weekday token {token!r}: combine them with commas")
            if "days" in seen:
                raise CalendarSpecError("give either weekdays or a day of month, not both")
            weekdays = _parse_names(token, WEEKDAY_NAMES, "weekday", first=0)
        else:
            if "days" in seen:
                raise CalendarSpecError(f"duplicate day-of-month token {token!r}: combine them with commas")
            if "weekdays" in seen:
                raise CalendarSpecError("give either weekdays or a day of month, not both")
            days = _parse_days(token)
        seen.append(kind)
    return CalendarSpec(hour=hour, minute=minute, weekdays=weekdays, days=days,
                        months=months, text=" ".join(tokens))


def next_fire(spec: CalendarSpec, after: datetime, tz: tzinfo) -> datetime:
    """Given an aware `after`, return the first fire time strictly after it as an aware UTC datetime; raise ValueError for a naive `after`."""
    _require_aware(after, "after")
    # Start a day early: a wall time in a gap near midnight can land on the next local date.
    start = after.astimezone(tz).date() - timedelta(days=1)
    for offset in range(SEARCH_LIMIT_DAYS):
        candidate = _fire_on(spec, start + timedelta(days=offset), tz)
        if candidate is not None and candidate > after:
            return candidate
    raise CalendarSpecError(f"calendar {spec.text!r} has no fire time within {SEARCH_LIMIT_DAYS} days")


def fire_times_between(spec: CalendarSpec, start: float, end: float, tz: tzinfo) -> list[float]:
    """Given Unix times, return every fire time in (start, end) as Unix times, oldest first (demo history)."""
    times, moment = [], datetime.fromtimestamp(start, tz)
    while (moment := next_fire(spec, moment, tz)).timestamp() < end:
        times.append(moment.timestamp())
    return times


def previous_fire(spec: CalendarSpec, before: datetime, tz: tzinfo) -> datetime:
    """Given an aware `before`, return the latest fire time <= it as an aware UTC datetime (the start of the current period)."""
    _require_aware(before, "before")
    start = before.astimezone(tz).date() + timedelta(days=1)
    for offset in range(SEARCH_LIMIT_DAYS):
        candidate = _fire_on(spec, start - timedelta(days=offset), tz)
        if candidate is not None and candidate <= before:
            return candidate
    raise CalendarSpecError(f"calendar {spec.text!r} has no fire time within {SEARCH_LIMIT_DAYS} days")


def catch_up_due(spec: CalendarSpec, last_fired: datetime | None, now: datetime, tz: tzinfo) -> bool:
    """True when at least one fire time fell in (last_fired, now] — the agent was down across a due time and must run the job ONCE now (systemd Persistent=true). False when last_fired is None (never armed: nothing was missed)."""
    _require_aware(now, "now")
    if last_fired is None:
        return False
    if last_fired >= now:
        return False
    return next_fire(spec, last_fired, tz) <= now


def jitter_offset_seconds(key: str, max_seconds: float) -> float:
    """Deterministic offset in [0, max_seconds) from a sha256 of key (e.g. 'host/check'), so a fleet spreads its runs but each host is stable (like systemd FixedRandomDelay). 0 when max_seconds <= 0."""
    if math.isnan(max_seconds) or math.isinf(max_seconds):
        raise ValueError(f"jitter maximum must be a finite number of seconds (got {max_seconds!r})")
    if max_seconds <= 0:
        return 0.0
    digest = hashlib.sha256(key.encode("utf-8")).digest()
    fraction = (int.from_bytes(digest[:8], "big") >> 11) / float(1 << 53)  # 53 bits: exact in a float, < 1
    offset = fraction * max_seconds
    if offset >= max_seconds:  # rounding of the product can reach the bound
        offset = math.nextafter(max_seconds, 0.0)
    return offset


def _fire_on(spec: CalendarSpec, local_date: date, tz: tzinfo) -> datetime | None:
    """Given a local date, return the spec's UTC fire instant on it, or None when the date does not match.

    fold=0 makes an ambiguous wall time its first occurrence and a non-existent
    one the instant it names under the pre-transition offset (shifted by the gap).
    """
    if not spec.matches(local_date):
        return None
    wall = datetime(local_date.year, local_date.month, local_date.day,
                    spec.hour, spec.minute, tzinfo=tz, fold=0)
    return wall.astimezone(timezone.utc)


def _require_aware(moment: datetime, name: str) -> None:
    """Raise ValueError when `moment` is naive, since its instant would depend on the host's zone."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"{name} must be a timezone-aware datetime (got naive {moment!r})")


def _parse_time(token: str) -> tuple[int, int]:
    """Given `HH:MM` or `H:MM`, return (hour, minute); raise CalendarSpecError when out of range."""
    match = _TIME_RE.match(token)
    assert match is not None
    hour, minute = int(match.group(1)), int(match.group(2))
    if hour > 23:
        raise CalendarSpecError(f"hour out of range in {token!r} (expected 00..23)")
    if minute > 59:
        raise CalendarSpecError(f"minute out of range in {token!r} (expected 00..59)")
    return hour, minute


def _token_kind(token: str) -> str:
    """Given a non-time token, return 'months', 'weekdays' or 'days' from its first word; raise CalendarSpecError for garbage."""
    if token == "*":
        return "months"
    head = token.split(",")[0].split("..")[0]
    if head in MONTH_NAMES:
        return "months"
    if head in WEEKDAY_NAMES:
        return "weekdays"
    if head == "last" or _DAY_RE.match(head):
        return "days"
    if head.isalpha() and len(head) == 3:
        where = f" in {token!r}" if token != head else ""
        raise CalendarSpecError(
            f"unknown weekday or month {head!r}{where} (expected mon..sun or jan..dec)")
    raise CalendarSpecError(
        f"unrecognised token {token!r} (expected months like jan,apr, weekdays like mon..fri, "
        f"a day of month 1..31 or last, and a final HH:MM)")


def _parse_months(token: str) -> frozenset[int] | None:
    """Given `*`, `jan,apr` or `jan..mar`, return month numbers (None for `*`)."""
    if token == "*":
        return None
    return _parse_names(token, MONTH_NAMES, "month", first=1)


def _parse_names(token: str, names: tuple[str, ...], what: str, first: int) -> frozenset[int]:
    """Given a comma list of names or `a..b` ranges, return their numbers; raise CalendarSpecError on unknown names or wrapping ranges."""
    expected = f"{names[0]}..{names[-1]}"

    def number(name: str) -> int:
        if name not in names:
            raise CalendarSpecError(f"unknown {what} {name!r} (expected {expected})")
        return names.index(name) + first

    values: set[int] = set()
    for part in token.split(","):
        if ".." in part:
            low_name, _, high_name = part.partition("..")
            low, high = number(low_name), number(high_name)
            if low > high:
                listed = ",".join(names[(i - first) % len(names)]
                                  for i in _wrapped(low, high, first, len(names)))
                raise CalendarSpecError(
                    f"{what} range {part!r} wraps around; list it instead, e.g. {listed!r}")
            values.update(range(low, high + 1))
        else:
            values.add(number(part))
    return frozenset(values)


def _wrapped(low: int, high: int, first: int, count: int) -> list[int]:
    """Given a wrapping range low..high, return its values in order (for the error hint)."""
    return list(range(low, first + count)) + list(range(first, high + 1))


def _parse_days(token: str) -> frozenset[int]:
    """Given `1`, `1,15`, `1..7` or `last`, return day numbers (LAST_DAY for last); raise CalendarSpecError when out of 1..31."""
    values: set[int] = set()
    for part in token.split(","):
        if ".." in part:
            low_text, _, high_text = part.partition("..")
            low, high = _day_number(low_text, token), _day_number(high_text, token)
            if LAST_DAY in (low, high) or low > high:
                raise CalendarSpecError(f"day range {part!r} must run upwards within 1..31")
            values.update(range(low, high + 1))
        else:
            values.add(_day_number(part, token))
    return frozenset(values)


def _day_number(part: str, token: str) -> int:
    """Given one day word, return its number; raise CalendarSpecError naming it when it is not 1..31 or last."""
    if part == "last":
        return LAST_DAY
    if not _DAY_RE.match(part):
        raise CalendarSpecError(f"invalid day of month {part!r} in {token!r} (expected 1..31 or last)")
    day = int(part)
    if not 1 <= day <= 31:
        raise CalendarSpecError(f"day of month {part!r} out of range (expected 1..31 or last)")
    return day


def _names_text(values: frozenset[int], names: tuple[str, ...], first: int) -> str:
    """Given numbers, return names joined by commas, with runs of three or more written as `a..b`."""
    ordered = sorted(values)
    runs: list[list[int]] = []
    for value in ordered:
        if runs and value == runs[-1][-1] + 1:
            runs[-1].append(value)
        else:
            runs.append([value])
    parts = []
    for run in runs:
        if len(run) >= 3:
            parts.append(f"{names[run[0] - first]}..{names[run[-1] - first]}")
        else:
            parts.extend(names[value - first] for value in run)
    return ",".join(parts)


def _days_text(days: frozenset[int]) -> str:
    """Given day numbers, return "day 1", "days 1,15" or "the last day"."""
    if days == frozenset({LAST_DAY}):
        return "the last day"
    words = [("last" if day == LAST_DAY else str(day)) for day in sorted(days)]
    return ("day " if len(words) == 1 else "days ") + ",".join(words)


@dataclass(frozen=True)
class TimeWindow:
    """A recurring local-time window such as `"sun 02:00-04:00"` or `"mon..fri 22:00-06:00"` (maintenance
    windows). A window whose end is not after its start runs past midnight; the weekdays name the day it
    starts on."""

    weekdays: frozenset[int] | None
    start: int            # minutes after local midnight
    end: int
    text: str

    def contains(self, moment: datetime, tz: tzinfo) -> bool:
        _require_aware(moment, "moment")
        local = moment.astimezone(tz)
        minute = local.hour * 60 + local.minute
        overnight = self.end <= self.start
        if not overnight:
            return self._day_ok(local.weekday()) and self.start <= minute < self.end
        if minute >= self.start:
            return self._day_ok(local.weekday())
        return minute < self.end and self._day_ok((local.weekday() - 1) % 7)

    def _day_ok(self, weekday: int) -> bool:
        return self.weekdays is None or weekday in self.weekdays


def parse_window(text: str) -> TimeWindow:
    """`[weekdays] HH:MM-HH:MM`; weekdays as in calendar specs (`sun`, `mon..fri`, `sat,sun`)."""
    tokens = " ".join(text.lower().split()).split(" ")
    if not tokens or tokens == [""] or len(tokens) > 2:
        raise CalendarSpecError(f"expected '[weekdays] HH:MM-HH:MM', e.g. 'sun 02:00-04:00' (got {text!r})")
    weekdays = _parse_names(tokens[0], WEEKDAY_NAMES, "weekday", 0) if len(tokens) == 2 else None
    span = tokens[-1].split("-")
    if len(span) != 2 or not all(_TIME_RE.match(part) for part in span):
        raise CalendarSpecError(f"expected a time range HH:MM-HH:MM (got {tokens[-1]!r})")
    (h1, m1), (h2, m2) = _parse_time(span[0]), _parse_time(span[1])
    if (h1, m1) == (h2, m2):
        raise CalendarSpecError(f"the window {tokens[-1]!r} is empty")
    return TimeWindow(weekdays, h1 * 60 + m1, h2 * 60 + m2, " ".join(tokens))
