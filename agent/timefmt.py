"""One time rule for everything the command line reads and prints.

- Every date or time an operator types (`--since 2026-12-03`, `--at`, `report --from`) and every time a
  table shows is in the agent's zone (`agent.timezone`, default: the host's), the zone that also decides
  calendar slots, checklist periods and report days — so the same words select the same runs everywhere.
  Tables name that zone in their headers (`LAST RUN (CET)`); a cell whose offset differs from the
  header's (a summer time in a winter listing) carries its own abbreviation.
- JSON and CSV are for programs: ISO 8601 in UTC with milliseconds, rounded to the nearest millisecond
  the same way whether Python (`iso_utc`) or SQLite (`utc_sql`) writes it.

Standard library only: the lean commands (`status`, `history`) import this.
"""

from __future__ import annotations

import math
import os
from datetime import date, datetime, timezone
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

TIME_FORMS = "7d, 12h (ago), 2026-11-01 or 2026-11-01T08:00"


def local_zone() -> ZoneInfo:
    """The host's zone from /etc/localtime (TZ wins), UTC when it cannot be told."""
    name = os.environ.get("TZ", "").lstrip(":")
    if not name:
        try:
            target = os.path.realpath("/etc/localtime")
            name = target.split("zoneinfo/", 1)[1] if "zoneinfo/" in target else ""
        except OSError:
            name = ""
    try:
        return ZoneInfo(name or "UTC")
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


def agent_zone(name: str | None) -> ZoneInfo:
    """Given `agent.timezone` as written (None when absent), return the zone the agent works in; an
    invalid name falls back to the host's zone (the config check reports it)."""
    if name:
        try:
            return ZoneInfo(str(name))
        except (ZoneInfoNotFoundError, ValueError):
            pass
    return local_zone()


def utc_ms(ts: float) -> int:
    """Milliseconds since the epoch, rounded half up; `utc_sql` rounds the same double the same way."""
    return math.floor(ts * 1000 + 0.5)


def iso_utc(ts: float | None) -> str | None:
    """Given epoch seconds, return `2026-11-23T04:19:02.577Z` (None for no time)."""
    if ts is None:
        return None
    ms = utc_ms(ts)
    moment = datetime.fromtimestamp(ms // 1000, timezone.utc)
    return f"{moment:%Y-%m-%dT%H:%M:%S}.{ms % 1000:03d}Z"


def utc_sql(column: str) -> str:
    """The SQL expression SQLite evaluates to `iso_utc(column)` (its own strftime('%f') rounds otherwise)."""
    ms = f"CAST({column} * 1000 + 0.5 AS INTEGER)"
    return f"(strftime('%Y-%m-%dT%H:%M:%S', {ms} / 1000, 'unixepoch') || printf('.%03dZ', {ms} % 1000))"


def zone_label(tz: ZoneInfo, at: float) -> str:
    """The zone's abbreviation at `at` (`CET`, `UTC`), or its offset where it has none (`+07`)."""
    return datetime.fromtimestamp(at, tz).tzname() or str(tz)


def zone_text(tz: ZoneInfo, at: float) -> str:
    """`Europe/Berlin (CET)`, `UTC`: how a header names the zone its times are in."""
    label = zone_label(tz, at)
    return str(tz) if label == str(tz) else f"{tz} ({label})"


class TableTime:
    """Formats times for a table in one zone; `label` goes into the column headers."""

    def __init__(self, tz: ZoneInfo, now: float):
        self.tz = tz
        self.label = zone_label(tz, now)
        self._offset = datetime.fromtimestamp(now, tz).utcoffset()

    def __call__(self, ts: float | None, seconds: bool = True) -> str | None:
        if ts is None:
            return None
        moment = datetime.fromtimestamp(ts, self.tz)
        text = moment.strftime("%Y-%m-%d %H:%M:%S" if seconds else "%Y-%m-%d %H:%M")
        return text if moment.utcoffset() == self._offset else f"{text} {moment.tzname()}"

    def header(self, column: str) -> str:
        return f"{column.replace('_', ' ').upper()} ({self.label})"


def time_format(fmt: str, tz: ZoneInfo, now: float):
    """The formatter of an output format: wall time in `tz` for tables, ISO 8601 UTC otherwise."""
    return TableTime(tz, now) if fmt == "table" else iso_utc


def parse_when(text: str, now: float, tz: ZoneInfo) -> float:
    """Given `7d`/`12h` (that long before `now`), `2026-11-01` (midnight) or `2026-11-01T08:00`, return
    epoch seconds; a date or time without an offset is read in `tz`. Raise ValueError naming the forms."""
    from agent.plugin.units import parse_duration
    try:
        return now - parse_duration(text)
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(f"invalid time {text!r} (use {TIME_FORMS})") from None
    return (moment if moment.tzinfo else moment.replace(tzinfo=tz)).timestamp()


def parse_day(text: str, tz: ZoneInfo) -> float:
    """Given `2026-11-02`, return the noon of that day in `tz` (a moment safely inside the day)."""
    try:
        day = date.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(f"invalid date {text!r} (use a date such as 2026-11-02)") from None
    return datetime(day.year, day.month, day.day, 12, tzinfo=tz).timestamp()


def ago(seconds: float) -> str:
    """`4s`, `3m10s`, `2h13m`, `5d2h`: an age or a time left, to the second below an hour."""
    seconds = max(0, int(round(seconds)))
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        count, seconds = divmod(seconds, size)
        if count or (unit == "s" and not parts):
            parts.append(f"{count}{unit}")
    return "".join(parts[:2])
