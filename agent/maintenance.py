"""Maintenance mode: planned work the agent must not "fix" or page about.

A maintenance window covers some checks (or all) from `starts` until `ends`. Operators open one with
`maint-agent maintenance start … --for 2h` (a row the CLI writes), recurring ones come from the
config's `maintenance:` entries (a calendar spec and a duration; the daemon records each occurrence
as a row when it begins). The rows in `maintenance_windows` are the one record both the daemon and
the CLI read, so a window survives restarts, its expiry is noticed after a restart, and the report
and the log can say who did what, why and for how long.

While a check is covered, it still runs and its results are stored (marked `maintenance`), but the
remediation policy holds its actions and notifications (audited `skipped: maintenance`) and its
`for:`/`after:` counters do not accrue.

Stdlib only (the CLI imports it): the functions take a sqlite3 connection; `Tracker` is the
daemon's side, with the store and the clock passed in.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass, replace
from datetime import datetime, timezone, tzinfo
from typing import Callable, Iterable

from agent.plugin.calendar import CalendarSpec, next_fire, previous_fire
from agent.plugin.storefile import where_clause

LOG_CATEGORY = "maintenance"
REQUEST_KIND = "maintenance"
"""The `operator_requests` kind the CLI leaves after changing a window: the daemon re-reads them at once."""
MAX_SECONDS = 7 * 86400.0
"""The longest `maintenance start --for`: a forgotten window must end by itself within a week."""


@dataclass(frozen=True)
class Window:
    """One maintenance window as stored. `checks` None covers every check."""

    id: int
    starts: float
    ends: float                      # planned end
    checks: tuple[str, ...] | None
    reason: str
    author: str
    source: str                      # cli (an operator) or config (a `maintenance:` entry)
    name: str | None = None          # the config entry's name
    ended: float | None = None       # when it really ended (stopped or expired); None while it lasts
    ended_by: str | None = None
    end_reason: str | None = None    # stopped, expired, removed (from the config)

    def covers(self, check: str) -> bool:
        return self.checks is None or check in self.checks

    def active(self, now: float) -> bool:
        return self.ended is None and self.starts <= now < self.ends

    @property
    def until(self) -> float:
        """When it ended or will end."""
        return self.ended if self.ended is not None else self.ends

    def scope(self) -> str:
        return "all checks" if self.checks is None else ", ".join(self.checks)


@dataclass(frozen=True)
class Recurring:
    """A config `maintenance:` entry, parsed: begins at every fire time of `spec`, lasts `seconds`."""

    name: str
    spec: CalendarSpec
    seconds: float
    checks: tuple[str, ...] | None
    reason: str


# -- pure functions ---------------------------------------------------------------------------------------


def coverage(windows: Iterable[Window], checks: Iterable[str], now: float) -> dict[str, float]:
    """Given windows, the configured check names and the time, return check → end of its maintenance
    (the latest end among the active windows covering it) for every check in maintenance now."""
    active = [w for w in windows if w.active(now)]
    out = {}
    for check in checks:
        ends = [w.ends for w in active if w.covers(check)]
        if ends:
            out[check] = max(ends)
    return out


def occurrence(window: Recurring, now: float, tz: tzinfo) -> tuple[float, float] | None:
    """Given a recurring window and the time, return (start, end) of its occurrence holding `now`, or None."""
    start = previous_fire(window.spec, datetime.fromtimestamp(now, timezone.utc), tz).timestamp()
    end = start + window.seconds
    return (start, end) if start <= now < end else None


def next_start(window: Recurring, now: float, tz: tzinfo) -> float:
    """The next time the recurring window begins, after `now`."""
    return next_fire(window.spec, datetime.fromtimestamp(now, timezone.utc), tz).timestamp()


def seconds_in(windows: Iterable[Window], start: float, end: float) -> float:
    """Given windows and a period [start, end), return how long at least one window was on in it
    (overlapping windows count once: this is time the host was under planned work)."""
    spans = sorted((max(w.starts, start), min(w.until, end)) for w in windows)
    total, reach = 0.0, start
    for low, high in spans:
        low = max(low, reach)
        if high > low:
            total += high - low
            reach = high
    return total


# -- the store ----------------------------------------------------------------------------------------------

_COLUMNS = "id, starts, ends, checks, reason, author, source, name, ended, ended_by, end_reason"


def _window(row) -> Window:
    checks = json.loads(row[3]) if row[3] else None
    return Window(row[0], row[1], row[2], tuple(checks) if checks is not None else None, row[4] or "",
                  row[5] or "", row[6] or "", row[7], row[8], row[9], row[10])


def read_windows(conn: sqlite3.Connection, *, open_only: bool = False, since: float | None = None,
                 until: float | None = None) -> list[Window]:
    """Windows, newest first: those not ended (`open_only`), or those that overlap [since, until)."""
    where, params = where_clause((("ended IS NULL", open_only), ("coalesce(ended, ends) > ?", since),
                                  ("starts < ?", until)))
    sql = f"SELECT {_COLUMNS} FROM maintenance_windows{where} ORDER BY starts DESC, id DESC"
    return [_window(row) for row in conn.execute(sql, params)]


def get_window(conn: sqlite3.Connection, window_id: int) -> Window | None:
    row = conn.execute(f"SELECT {_COLUMNS} FROM maintenance_windows WHERE id = ?", (window_id,)).fetchone()
    return _window(row) if row else None


def insert_window(conn: sqlite3.Connection, window: Window) -> int | None:
    """Add a window (its `id` is ignored); return the new id, or None when this occurrence of a config window
    is recorded already."""
    cursor = conn.execute(
        "INSERT INTO maintenance_windows(starts, ends, checks, reason, author, source, name) VALUES (?,?,?,?,?,?,?) "
        "ON CONFLICT DO NOTHING",
        (window.starts, window.ends, json.dumps(list(window.checks)) if window.checks is not None else None,
         window.reason, window.author, window.source, window.name))
    return cursor.lastrowid if cursor.rowcount else None


def end_window(conn: sqlite3.Connection, window_id: int, *, at: float, by: str, reason: str) -> bool:
    """Mark a window ended; False when it had ended already."""
    return bool(conn.execute("UPDATE maintenance_windows SET ended = ?, ended_by = ?, end_reason = ? "
                             "WHERE id = ? AND ended IS NULL", (at, by, reason, window_id)).rowcount)


def request_refresh(conn: sqlite3.Connection, at: float, window_id: int) -> None:
    """Tell a running daemon that a window changed (it polls the operator requests every second)."""
    conn.execute("INSERT INTO operator_requests(at, kind, target) VALUES (?, ?, ?)", (at, REQUEST_KIND, str(window_id)))


def log_message(window: Window, event: str, at: float) -> str:
    """The maintenance-log line for a window that started, was stopped or expired: who, why, how long."""
    from agent.plugin.units import format_duration
    label = f"maintenance #{window.id}" + (f" ({window.name})" if window.name else "")
    reason = f": {window.reason}" if window.reason else ""
    if event == "started":
        return (f"{label} started for {window.scope()}, {format_duration(window.ends - window.starts)} until "
                f"{_local(window.ends)}{reason}")
    planned = format_duration(window.ends - window.starts)
    lasted = format_duration(max(0.0, at - window.starts))
    how = {"stopped": f"stopped by {window.ended_by or '?'}", "expired": "expired",
           "removed": "ended: removed from the config"}.get(event, event)
    return f"{label} {how} after {lasted} (planned {planned}) for {window.scope()}{reason}"


def _local(at: float) -> str:
    return datetime.fromtimestamp(at).astimezone().strftime("%Y-%m-%d %H:%M %Z").strip()


def log_check(window: Window) -> str | None:
    """The log entry's check: the one check a window covers, else none (the message lists them)."""
    return window.checks[0] if window.checks is not None and len(window.checks) == 1 else None


# -- the daemon's side --------------------------------------------------------------------------------------


class Tracker:
    """Which checks are in maintenance, recomputed when a window may have begun or ended (never on scrape).

    `refresh(now)` records config windows that began, ends windows that expired (also those that
    expired while the agent was down: at their planned end), ends config windows whose entry left the
    config, and returns check → end of maintenance plus when to look again.
    """

    def __init__(self, store, add_log: Callable[..., object]):
        self.store = store              # agent.store.writer.Store (its methods take its lock)
        self.add_log = add_log          # daemon's best-effort maintenance-log write
        self.recurring: tuple[Recurring, ...] = ()
        self.checks: tuple[str, ...] = ()
        self.tz: tzinfo = timezone.utc

    def configure(self, recurring: Iterable[Recurring], checks: Iterable[str], tz: tzinfo) -> None:
        self.recurring, self.checks, self.tz = tuple(recurring), tuple(checks), tz

    def refresh(self, now: float) -> tuple[dict[str, float], float | None]:
        """Return (check → end of its maintenance, the time the answer may next change); raise on a store error."""
        for window in self.recurring:
            span = occurrence(window, now, self.tz)
            if span is not None:
                opened = Window(0, span[0], span[1], window.checks, window.reason, "maint-agent", "config",
                                window.name)
                new_id = self.store.open_window(opened)
                if new_id is not None:
                    self._log(replace(opened, id=new_id), "started", span[0])
        windows = self.store.open_windows()
        configured = {w.name for w in self.recurring}
        current = []
        for window in windows:
            if window.ends <= now:
                self._end(window, window.ends, "expired")
            elif window.source == "config" and window.name not in configured:
                self._end(window, now, "removed")
            else:
                current.append(window)
        covered = coverage(current, self.checks, now)
        changes = [w.starts for w in current if w.starts > now] + [w.ends for w in current]
        changes += [next_start(w, now, self.tz) for w in self.recurring]
        return covered, min(changes, default=None)

    def _end(self, window: Window, at: float, reason: str) -> None:
        if self.store.end_window(window.id, at=at, by="maint-agent", reason=reason):
            ended = replace(window, ended=at, ended_by="maint-agent", end_reason=reason)
            self._log(ended, reason, at)

    def _log(self, window: Window, event: str, at: float) -> None:
        self.add_log(log_message(window, event, at), at=at, category=LOG_CATEGORY, author="maint-agent",
                     source="agent", check_name=log_check(window))
