"""The maintenance report for one period [start, end): figures from the store, rendered as text, HTML,
JSON and CSV (seed 004 "Maintenance metrics", "Maintenance log", checklists; seed 002 backups and RTO).

Where the figures come from:

- **checks**: every run in the period; days whose raw runs were pruned by retention come from the
  daily rollups (`check_rollups`), so a quarter's counts survive a 90-day raw retention. Incidents
  need the order of runs and are computed from raw runs only (the report says since when).
- **incident**: a span of consecutive non-OK runs of one check, from the first non-OK run to the
  first OK run after it (ongoing when the period ends first); its severity is the check's configured
  `severity` (P0–P3), its status the worst status seen in the span.
- **availability** of an `http` check: OK runs / runs (seed: > 99.9 %).
- **backup success rate**: OK runs / runs of the `backup_files`, `backup_set` and `s3_backup` checks (seed: 100 %).
- **disaster recovery** (seed 002: RTO ≤ 4 h, RPO ≤ 1 h): the last run of each `restore_test` and
  `restore_cluster` check (any time before the period ends) with its measured RTO
  (`restore_duration_seconds`) against its target (`restore_test`'s `critical`, `restore_cluster`'s
  `rto`) and, for a scratch-cluster restore, its measured RPO (`restore_rpo_seconds`: how far before the
  end of the restore the backup recovered to) against `rpo`.
- **preventive vs corrective** (seed: 80/20): the policy's executed action runs and operators' log
  entries. An action run counts when it ran (not a dry run, not a skip) and is not a notification;
  it is preventive when its check is calendar-scheduled (routine work such as the weekly ANALYZE) or
  its binding has a maintenance `window`, corrective when a failing result of an interval check
  triggered it. A manual `action run` is not counted from the audit: the log entry it writes
  (category `corrective`) counts instead. Operator entries (`log add`, checklist ticks: source `cli`)
  count by category: PREVENTIVE_CATEGORIES (planned work: updates, hardware, reviews, ticks…) or
  CORRECTIVE_CATEGORIES (incidents, fixes); `other` is not counted.
- **maintenance time**: how long at least one maintenance window (`maint-agent maintenance start`, the
  config's `maintenance:` windows) was in force within the period, overlapping windows counted once, a
  window stopped early up to its stop; the goal is MAINTENANCE_TARGET per week (a month's target is that
  times its weeks).
- **days until full**: a least-squares line through a disk's `used_ratio{mount=…}` over the period
  (raw runs, and rollup daily averages weighted by their run count where raw runs were pruned),
  extrapolated from its value at the period's end to 100 % (and to the check's `critical`). A line,
  and so every trend and days-until-full, needs TREND_MIN_SPAN (a day) of data with points in at least
  TREND_MIN_POINTS distinct hours (a rollup day counts once): two minutes of a fresh install make no
  trend, the report says "not enough history".
- **history start**: the oldest run the store holds (or its oldest rollup day). A period reaching back
  before it is covered from there on, and the report says so; it has no worst status without runs.

Everything is read with plain SQL on the connection given (the CLI's read-only one or the outbox's);
Jinja2 is imported only when rendering.
"""

from __future__ import annotations

import csv
import io
import json
import math
import sqlite3
from dataclasses import dataclass, field, fields, is_dataclass, replace
from datetime import date, datetime, time as dtime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from zoneinfo import ZoneInfo

from agent.reports.checklist import PERIOD_CHECKLISTS, checklist_status, period_bounds, period_label
from agent.plugin.redact import REDACT
from agent.plugin.result import Status, worst
from agent.timefmt import iso_utc
from agent.plugin.units import format_duration, format_size

if TYPE_CHECKING:
    from agent.config.load import LoadedConfig

Period = Literal["day", "week", "month", "quarter"]
PREVENTIVE_CATEGORIES = frozenset({"hardware", "software", "update", "security", "backup", "database", "network",
                                   "configuration", "review", "checklist"})   # `log add --category`, ticks
CORRECTIVE_CATEGORIES = frozenset({"incident", "corrective"})                 # `corrective`: `action run`
OPERATOR_SOURCE = "cli"                          # maintenance_log rows people wrote (the agent's: agent, policy)
TAKEN_DECISIONS = (None, "ran")                  # audit rows of attempts that executed (not skips, not dry runs)
AVAILABILITY_TARGET = 0.999                      # seed 004: uptime > 99.9 %
BACKUP_TARGET = 1.0                              # seed 004: backup success rate 100 %
PREVENTIVE_TARGET = 0.8                          # seed 004: preventive vs corrective 80/20
RESOLUTION_TARGET = 4 * 3600.0                   # seed 004: issue resolution time < 4 hours average
MAINTENANCE_TARGET = 2 * 3600.0                  # seed 004: maintenance time < 2 hours per week
WEEK = 7 * 86400.0
BACKUP_TYPES = ("backup_files", "backup_set", "s3_backup")
RESTORE_TYPES = ("restore_test", "restore_cluster")
RTO_TARGET = 4 * 3600.0                          # seed 002: RTO ≤ 4 hours (a check's own target wins)
RPO_TARGET = 3600.0                              # seed 002: RPO ≤ 1 hour
TREND_METRICS = {"cpu": "usage_ratio", "memory": "used_ratio", "swap": "used_ratio", "load": "per_core",
                 "redis": "memory_used_ratio", "pg_connections": "connections_used_ratio"}
SLOW_QUERIES_LISTED = 10
DAY = 86400.0
TREND_MIN_SPAN = DAY            # a trend from less than a day of data is noise
TREND_MIN_POINTS = 12           # …and from fewer than 12 distinct hours with data
TEMPLATES = Path(__file__).resolve().parent / "templates"


# -- the report's parts -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Goal:
    """A seed success metric: the figure of the period against its target."""

    name: str
    value: float | None
    target: float
    unit: Literal["ratio", "seconds"]
    better: Literal["above", "below"]

    @property
    def met(self) -> bool | None:
        if self.value is None:
            return None
        return self.value >= self.target if self.better == "above" else self.value <= self.target


@dataclass(frozen=True)
class CheckLine:
    check: str
    type: str
    severity: str | None
    runs: int
    ok: int
    warning: int
    critical: int
    unknown: int
    worst: str

    @property
    def failures(self) -> int:
        return self.runs - self.ok

    @property
    def ok_ratio(self) -> float | None:
        return self.ok / self.runs if self.runs else None


@dataclass(frozen=True)
class Incident:
    check: str
    severity: str | None
    start: float
    end: float | None           # None: still failing when the period ended
    duration: float             # to `end`, or to the period's end while ongoing
    worst: str
    began_before_period: bool


@dataclass(frozen=True)
class ActionLine:
    started: float
    action: str
    action_type: str
    check: str | None
    trigger_status: str | None
    decision: str | None
    dry_run: bool
    exit_code: int | None
    verified: bool | None
    outcome: str | None
    target: str | None
    kind: Literal["preventive", "corrective"] | None   # None: not counted (notification, dry run, skip)


@dataclass(frozen=True)
class BackupLine:
    check: str
    type: str
    runs: int
    ok: int

    @property
    def success_ratio(self) -> float | None:
        return self.ok / self.runs if self.runs else None


@dataclass(frozen=True)
class JobLine:
    """A job watched by a heartbeat check: its runs in the period as the job reported them."""

    check: str
    runs: int                             # finished runs (success or failure signals)
    failures: int
    mean_duration_seconds: float | None   # from the runs that sent a start signal
    max_duration_seconds: float | None
    last_run: float | None
    last_result: str | None               # success or fail


@dataclass(frozen=True)
class RestoreTest:
    """The last run of a restore test: measured RTO and (scratch-cluster restores) RPO against their targets."""

    check: str
    started: float
    status: str
    restore_seconds: float | None
    passed: bool | None
    rto_target: float | None
    type: str = "restore_test"
    rpo_seconds: float | None = None
    rpo_target: float | None = None
    recovered_at: float | None = None

    @property
    def within_rto(self) -> bool | None:
        if self.restore_seconds is None or self.rto_target is None:
            return None
        return self.restore_seconds <= self.rto_target

    @property
    def within_rpo(self) -> bool | None:
        if self.rpo_seconds is None or self.rpo_target is None:
            return None
        return self.rpo_seconds <= self.rpo_target


@dataclass(frozen=True)
class Availability:
    check: str
    runs: int
    ok: int
    mean_response_seconds: float | None

    @property
    def ratio(self) -> float | None:
        return self.ok / self.runs if self.runs else None

    @property
    def met(self) -> bool | None:
        return None if self.ratio is None else self.ratio >= AVAILABILITY_TARGET


@dataclass(frozen=True)
class Series:
    """A least-squares line y = intercept + slope·x through one metric, x in days since the period start."""

    points: float               # runs (rollup days count as their number of runs)
    mean: float
    low: float
    high: float
    first: float | None
    last: float | None
    slope_per_day: float | None
    fitted_end: float | None    # the line's value at the period's end
    enough: bool = True         # False: too little history for a line (slope and fitted_end are None)


@dataclass(frozen=True)
class DiskForecast:
    check: str
    mount: str
    series: Series
    size_bytes: float | None
    critical: float | None
    days_until_full: float | None       # None: not growing (or too few points)
    days_until_critical: float | None


@dataclass(frozen=True)
class Trend:
    check: str
    metric: str
    series: Series


@dataclass(frozen=True)
class DbGrowth:
    check: str
    database: str
    series: Series

    @property
    def growth_bytes(self) -> float | None:
        s = self.series
        return None if s.first is None or s.last is None else s.last - s.first


@dataclass(frozen=True)
class SlowQuery:
    check: str
    database: str | None
    calls: int | None
    mean_seconds: float
    max_seconds: float | None
    query: str


@dataclass(frozen=True)
class LogEntry:
    at: float
    category: str | None
    author: str | None
    message: str


@dataclass(frozen=True)
class MaintenanceLine:
    """A maintenance window that was in force during the period."""

    id: int
    name: str | None                 # the config window's name; None for `maintenance start`
    checks: str                      # "all" or the names
    start: float
    end: float                       # when it ended, or the end of the period/now while in force
    seconds: float                   # of it inside the period
    state: str                       # active, stopped, expired, removed
    author: str
    reason: str


@dataclass(frozen=True)
class ChecklistLine:
    item: str
    title: str
    automated: bool
    done: bool
    status: str | None
    note: str | None


@dataclass(frozen=True)
class Maintenance:
    preventive: int
    corrective: int

    @property
    def preventive_ratio(self) -> float | None:
        total = self.preventive + self.corrective
        return self.preventive / total if total else None


@dataclass(frozen=True)
class Report:
    host: str
    period: Period
    label: str
    start: float
    end: float
    timezone: str
    generated: float
    worst: str
    goals: list[Goal]
    checklist: list[ChecklistLine]
    checks: list[CheckLine]
    incidents: list[Incident]
    actions: list[ActionLine]
    maintenance: Maintenance
    backups: list[BackupLine]
    restore_tests: list[RestoreTest]
    availability: list[Availability]
    disks: list[DiskForecast]
    trends: list[Trend]
    databases: list[DbGrowth]
    slow_queries: list[SlowQuery]
    log: list[LogEntry]
    maintenance_windows: list[MaintenanceLine] = field(default_factory=list)
    maintenance_seconds: float = 0.0     # time with at least one window in force, within the period
    notes: list[str] = field(default_factory=list)
    jobs: list[JobLine] = field(default_factory=list)
    history_start: float | None = None     # the oldest run in the store; None: no run at all

    @property
    def covered_from(self) -> float | None:
        """Where the figures begin: the period's start, or the history's start when that is later (None when
        the history begins after the period)."""
        if self.history_start is None or self.history_start >= self.end:
            return None
        return max(self.start, self.history_start)

    @property
    def checklist_done(self) -> int:
        return sum(line.done for line in self.checklist)

    @property
    def mean_resolution_seconds(self) -> float | None:
        closed = [i.duration for i in self.incidents if i.end is not None]
        return sum(closed) / len(closed) if closed else None


# -- periods ------------------------------------------------------------------------------------------------


def last_complete(period: Period, now: float, tz: ZoneInfo) -> tuple[float, float]:
    """The most recent period that ended at or before `now`."""
    current, _ = period_bounds(period, now, tz)
    return period_bounds(period, current - 1.0, tz)


# -- building -----------------------------------------------------------------------------------------------


@dataclass
class _Scope:
    """What every query needs: the period, which part comes from rollups, the configured checks."""

    conn: sqlite3.Connection
    loaded: "LoadedConfig"
    start: float
    end: float
    raw_start: float                    # raw runs are used from here; days before come from rollups
    rollup_days: tuple[str, ...]
    ids: dict[str, int]                 # check name → store id
    types: dict[str, str]               # check name → type (configured, else as stored)
    history_start: float | None = None  # the oldest run, or the midnight of the oldest rollup day
    pruned: bool = False                # retention removed raw runs the period would have used

    def options(self, name: str):
        return next((c for c in self.loaded.checks if c.name == name), None)

    def checks_of(self, *types: str) -> list[str]:
        return sorted(name for name, kind in self.types.items() if kind in types and name in self.ids)


def build_report(conn: sqlite3.Connection, loaded: "LoadedConfig", period: Period, start: float, end: float,
                 now: float) -> Report:
    """Given a store connection and a period [start, end), return every figure of the report."""
    tz = loaded.tz
    scope = _scope(conn, loaded, start, end, tz)
    checks = _check_lines(scope)
    incidents = _incidents(scope, min(end, now))
    actions = _actions(scope)
    log = _log(scope)
    maintenance = Maintenance(
        preventive=sum(a.kind == "preventive" for a in actions) + sum(_log_kind(e) == "preventive" for e in log),
        corrective=sum(a.kind == "corrective" for a in actions) + sum(_log_kind(e) == "corrective" for e in log))
    by_name = {line.check: line for line in checks}
    backups = [BackupLine(n, scope.types[n], by_name[n].runs, by_name[n].ok)
               for n in scope.checks_of(*BACKUP_TYPES) if n in by_name]
    availability = [Availability(n, by_name[n].runs, by_name[n].ok, _mean(scope, n, "response_seconds"))
                    for n in scope.checks_of("http") if n in by_name]
    checklist = _checklist(conn, loaded, period, start, end)
    windows, maintenance_seconds = _maintenance_windows(conn, start, min(end, now))
    report = Report(
        host=loaded.config.agent.hostname, period=period, label=period_label(period, start, tz), start=start,
        end=end, timezone=str(tz), generated=now,
        worst=_worst(checks), goals=[], checklist=checklist,
        checks=checks, incidents=incidents, actions=actions, maintenance=maintenance, backups=backups,
        restore_tests=_restore_tests(scope), availability=availability, disks=_disks(scope),
        trends=_trends(scope), databases=_databases(scope), slow_queries=_slow_queries(scope), log=log,
        maintenance_windows=windows, maintenance_seconds=maintenance_seconds, notes=_notes(scope, start),
        jobs=_jobs(scope), history_start=scope.history_start)
    report.goals.extend(_goals(report))
    return report


def _worst(checks: list[CheckLine]) -> str:
    """The worst status of the period's runs; "none" without runs (no green badge for no data)."""
    ran = [Status[c.worst.upper()] for c in checks if c.runs]
    return worst(*ran).label if ran else "none"


def _scope(conn: sqlite3.Connection, loaded: "LoadedConfig", start: float, end: float, tz: ZoneInfo) -> _Scope:
    """Split the period: rollup days where retention pruned the raw runs, raw runs from then on.

    The day holding the oldest raw run is taken from its rollup when there is one (its morning may be
    pruned); without a rollup (a store younger than a day) the raw runs are all there is.
    """
    ids, types = {}, {c.name: c.type for c in loaded.checks}
    for check_id, name, kind in conn.execute("SELECT id, name, type FROM checks"):
        ids[name] = check_id
        types.setdefault(name, kind)
    oldest = conn.execute("SELECT min(started) FROM check_runs").fetchone()[0]
    first_rolled = conn.execute("SELECT min(day) FROM check_rollups").fetchone()[0]
    starts = [t for t in (oldest, _midnight(date.fromisoformat(first_rolled), tz) if first_rolled else None)
              if t is not None]
    raw_start, days, pruned = start, (), False
    if oldest is not None and oldest > start:
        first_day = datetime.fromtimestamp(start, tz).date()
        oldest_day = datetime.fromtimestamp(oldest, tz).date()
        rolled = conn.execute("SELECT sum(runs) FROM check_rollups WHERE day = ?",
                              (oldest_day.isoformat(),)).fetchone()[0]
        last_day = datetime.fromtimestamp(end - 1, tz).date()
        through = min(oldest_day if rolled else oldest_day - timedelta(days=1), last_day)
        raw_start = max(start, min(end, _midnight(through + timedelta(days=1), tz)))
        days = tuple((first_day + timedelta(days=n)).isoformat() for n in range((through - first_day).days + 1))
        pruned = _was_pruned(conn, oldest, oldest_day, rolled, tz) and raw_start > start
    return _Scope(conn, loaded, start, end, raw_start, days, ids, types, min(starts, default=None), pruned)


def _was_pruned(conn: sqlite3.Connection, oldest: float, oldest_day: date, rolled: int | None, tz: ZoneInfo) -> bool:
    """Whether retention removed raw runs: a rollup of a day before the oldest raw run, or the oldest run's
    day rolled up with more runs than it still has (its morning pruned). A young store has neither."""
    if conn.execute("SELECT 1 FROM check_rollups WHERE day < ? LIMIT 1", (oldest_day.isoformat(),)).fetchone():
        return True
    if not rolled:
        return False
    kept = conn.execute("SELECT count(*) FROM check_runs WHERE started >= ? AND started < ?",
                        (_midnight(oldest_day, tz), _midnight(oldest_day + timedelta(days=1), tz))).fetchone()[0]
    return rolled > kept


def _midnight(day: date, tz: ZoneInfo) -> float:
    return datetime.combine(day, dtime(0), tz).timestamp()


def _in_days(days: tuple[str, ...]) -> str:
    return ",".join("?" * len(days)) or "NULL"


def _check_lines(scope: _Scope) -> list[CheckLine]:
    counts: dict[int, list[int]] = {}
    for check_id, *numbers in scope.conn.execute(
            "SELECT check_id, count(*), sum(status=0), sum(status=1), sum(status=2), sum(status=3) "
            "FROM check_runs WHERE started >= ? AND started < ? GROUP BY check_id", (scope.raw_start, scope.end)):
        counts[check_id] = numbers
    for check_id, *numbers in scope.conn.execute(
            f"SELECT check_id, sum(runs), sum(ok), sum(warning), sum(critical), sum(unknown) FROM check_rollups "
            f"WHERE day IN ({_in_days(scope.rollup_days)}) GROUP BY check_id", scope.rollup_days):
        counts[check_id] = [a + b for a, b in zip(counts.get(check_id, [0] * 5), numbers)]
    names = {check_id: name for name, check_id in scope.ids.items()}
    configured = [c.name for c in scope.loaded.checks]
    lines = []
    for name in configured + sorted(names[i] for i in counts if names[i] not in configured):
        runs, ok, warning, critical, unknown = counts.get(scope.ids.get(name), [0] * 5)
        statuses = [s for s, n in ((Status.OK, ok), (Status.WARNING, warning), (Status.CRITICAL, critical),
                                   (Status.UNKNOWN, unknown)) if n]
        options = scope.options(name)
        lines.append(CheckLine(name, scope.types.get(name, "?"), options.severity if options else None, runs, ok,
                               warning, critical, unknown, worst(*statuses).label if runs else "none"))
    return lines


def _incidents(scope: _Scope, until: float) -> list[Incident]:
    """Non-OK spans from the status changes of raw runs (a window query: only changes leave SQLite)."""
    names = {check_id: name for name, check_id in scope.ids.items()}
    changes: dict[int, list[tuple[float, int, int]]] = {}
    for check_id, started, status, previous in scope.conn.execute(
            "SELECT check_id, started, status, prev FROM ("
            " SELECT check_id, started, status,"
            "  lag(status, 1, -1) OVER (PARTITION BY check_id ORDER BY started) AS prev"
            " FROM check_runs WHERE started >= ? AND started < ?) WHERE status != prev ORDER BY check_id, started",
            (scope.raw_start, scope.end)):
        changes.setdefault(check_id, []).append((started, status, previous))
    incidents = []
    for check_id, rows in changes.items():
        name = names[check_id]
        options = scope.options(name)
        severity = options.severity if options else None
        opened: tuple[float, bool] | None = None
        seen: list[Status] = []
        for started, status, previous in rows:
            if status != Status.OK and opened is None:
                opened = (started, False)
                if previous == -1:   # failing from the period's first run on: find where it began
                    opened = _began(scope, check_id, started)
                seen = []
            if status != Status.OK:
                seen.append(Status(status))
            elif opened is not None:
                incidents.append(Incident(name, severity, opened[0], started, started - opened[0],
                                          worst(*seen).label, opened[1]))
                opened = None
        if opened is not None:
            incidents.append(Incident(name, severity, opened[0], None, max(0.0, until - opened[0]),
                                      worst(*seen).label, opened[1]))
    return sorted(incidents, key=lambda i: (i.start, i.check))


def _began(scope: _Scope, check_id: int, first: float) -> tuple[float, bool]:
    """(start, began before the period) of a span failing at the period's first run: its start is
    the first non-OK run after the last OK one before it (the oldest raw run when none was OK)."""
    last_ok = scope.conn.execute("SELECT max(started) FROM check_runs WHERE check_id = ? AND started < ? AND "
                                 "status = 0", (check_id, first)).fetchone()[0]
    row = scope.conn.execute("SELECT min(started) FROM check_runs WHERE check_id = ? AND started > ? AND "
                             "started <= ?", (check_id, last_ok if last_ok is not None else -math.inf,
                                              first)).fetchone()
    began = row[0] if row and row[0] is not None else first
    return (began, True) if began < scope.start else (first, False)


def _actions(scope: _Scope) -> list[ActionLine]:
    from actions import ACTION_TYPES

    lines = []
    for row in scope.conn.execute(
            "SELECT started, action, action_type, check_name, trigger_status, decision, dry_run, exit_code, "
            "verified, outcome, target, source FROM action_runs WHERE started >= ? AND started < ? ORDER BY started",
            (scope.start, scope.end)):
        started, action, action_type, check, trigger_status, decision, dry_run, exit_code, verified, outcome, \
            target, source = row
        notifies = getattr(ACTION_TYPES.get(action_type), "NOTIFIES", False)
        counted = not dry_run and decision in TAKEN_DECISIONS and not notifies and source != "manual"
        lines.append(ActionLine(started, action, action_type, check, trigger_status, decision, bool(dry_run),
                                exit_code, None if verified is None else bool(verified), outcome,
                                target, _action_kind(scope, action, check, trigger_status) if counted else None))
    return lines


def _action_kind(scope: _Scope, action: str, check: str | None,
                 trigger_status: str | None) -> Literal["preventive", "corrective"]:
    from agent.config.triggers import Calendar

    if check is None or trigger_status not in ("warning", "critical", "unknown"):
        return "preventive"      # not forced by a failure
    if isinstance(scope.loaded.triggers.get(check), Calendar):
        return "preventive"      # routine: a calendar-scheduled check found work to do
    options = scope.options(check)
    binding = next((b for b in options.actions if b.action == action), None) if options else None
    return "preventive" if binding is not None and binding.window else "corrective"


def _log_kind(entry: LogEntry) -> str | None:
    category = (entry.category or "").lower()
    if category in PREVENTIVE_CATEGORIES:
        return "preventive"
    return "corrective" if category in CORRECTIVE_CATEGORIES else None


def _log(scope: _Scope) -> list[LogEntry]:
    """Operator entries only; the agent's own lines (start, stop, reloads, remediation) are in the
    actions table or are not maintenance work."""
    return [LogEntry(at, category, author, REDACT(message)) for at, category, author, message in scope.conn.execute(
        "SELECT at, category, author, message FROM maintenance_log WHERE at >= ? AND at < ? AND source = ? "
        "ORDER BY at", (scope.start, scope.end, OPERATOR_SOURCE))]


def _checklist(conn: sqlite3.Connection, loaded: "LoadedConfig", period: Period, start: float,
               end: float) -> list[ChecklistLine]:
    return [ChecklistLine(item["id"], item["title"], item["kind"] == "automated", item["done"], item["status"],
                          REDACT(item["note"]) if item["note"] else None)
            for item in checklist_status(conn, loaded.config.checklists, period, start, end, tz=loaded.tz)]


def _maintenance_windows(conn: sqlite3.Connection, start: float, end: float) -> tuple[list[MaintenanceLine], float]:
    """The windows in force within [start, end) (end: the period's end, or now for the current period) and the
    time at least one of them was."""
    from agent.maintenance import read_windows, seconds_in
    try:
        windows = [w for w in read_windows(conn, since=start, until=end) if w.until > start]
    except sqlite3.OperationalError as exc:   # a store an older agent wrote: no window recorded
        if "no such table" not in str(exc):
            raise
        return [], 0.0
    lines = [MaintenanceLine(w.id, w.name, "all" if w.checks is None else ", ".join(w.checks), w.starts,
                             min(w.until, end), seconds_in([w], start, end),
                             w.end_reason or ("active" if w.ends > end else "expired"), w.author, REDACT(w.reason))
             for w in sorted(windows, key=lambda w: (w.starts, w.id))]
    clipped = [replace(w, ended=min(w.until, end)) for w in windows]
    return lines, seconds_in(clipped, start, end)


def _jobs(scope: _Scope) -> list[JobLine]:
    """Runs, failures and durations of every job a heartbeat check watches, from the signals it sent."""
    from agent.plugin.heartbeat import job_runs
    names = [c.name for c in scope.loaded.checks if c.type == "heartbeat"]
    if not names:
        return []
    return [JobLine(j.check, j.runs, j.failures, j.mean_duration, j.max_duration, j.last_finish, j.last_kind)
            for j in job_runs(scope.conn, names, scope.start, scope.end)]


def _restore_tests(scope: _Scope) -> list[RestoreTest]:
    tests = []
    for name in scope.checks_of(*RESTORE_TYPES):
        row = scope.conn.execute(
            "SELECT started, status, json_extract(metrics, '$.restore_duration_seconds'), "
            "json_extract(metrics, '$.restore_passed'), json_extract(metrics, '$.restore_rpo_seconds'), "
            "json_extract(metrics, '$.restore_recovered_timestamp_seconds') FROM check_runs "
            "WHERE check_id = ? AND started < ? ORDER BY started DESC LIMIT 1",
            (scope.ids[name], scope.end)).fetchone()
        if row is None:
            continue
        kind, options = scope.types[name], scope.options(name)
        if kind == "restore_cluster":
            rto, rpo = (options.rto, options.rpo) if options else (RTO_TARGET, RPO_TARGET)
        else:
            rto, rpo = getattr(options, "critical", None) if options else None, None
        tests.append(RestoreTest(name, row[0], Status(row[1]).label, row[2], None if row[3] is None else bool(row[3]),
                                 rto, kind, row[4], rpo, row[5]))
    return tests


def _series(scope: _Scope, name: str, metric: str) -> dict[str, Series]:
    """Per metric key (`metric` or `metric{labels}`) of one check: mean, range and the fitted line.

    Sums for the least-squares fit are taken in SQL; x is in days since the period start, so the
    normal equations stay well conditioned for a quarter of per-minute runs.
    """
    check_id = scope.ids.get(name)
    if check_id is None:
        return {}
    sums: dict[str, list[float]] = {}
    spread: dict[str, list[float]] = {}    # key → [first x, last x, distinct hours with data]
    match = "(j.key = ? OR j.key GLOB ?)"
    for key, n, sx, sy, sxx, sxy, low, high, x0, x1, hours in scope.conn.execute(
            "SELECT j.key, count(*), sum(x), sum(y), sum(x * x), sum(x * y), min(y), max(y), min(x), max(x),"
            " count(DISTINCT CAST(x * 24 AS INTEGER)) FROM ("
            " SELECT j.key AS key, (r.started - ?) / 86400.0 AS x, j.value AS y FROM check_runs r,"
            f" json_each(r.metrics) j WHERE r.check_id = ? AND r.started >= ? AND r.started < ? AND {match}) j"
            " GROUP BY j.key", (scope.start, check_id, scope.raw_start, scope.end, metric, metric + "{*")):
        sums[key] = [n, sx, sy, sxx, sxy, low, high]
        spread[key] = [x0, x1, hours]
    for day, runs, key, avg, low, high in scope.conn.execute(
            "SELECT g.day, g.runs, j.key, json_extract(j.value, '$.avg'), json_extract(j.value, '$.min'),"
            f" json_extract(j.value, '$.max') FROM check_rollups g, json_each(g.metrics) j WHERE g.check_id = ?"
            f" AND g.day IN ({_in_days(scope.rollup_days)}) AND {match}",
            (check_id, *scope.rollup_days, metric, metric + "{*")):
        x = (_midnight(date.fromisoformat(day), scope.loaded.tz) + DAY / 2 - scope.start) / DAY
        acc = sums.setdefault(key, [0, 0.0, 0.0, 0.0, 0.0, math.inf, -math.inf])
        acc[0:5] = [acc[0] + runs, acc[1] + runs * x, acc[2] + runs * avg, acc[3] + runs * x * x,
                    acc[4] + runs * x * avg]
        acc[5], acc[6] = min(acc[5], low), max(acc[6], high)
        seen = spread.setdefault(key, [x, x, 0])
        seen[:] = [min(seen[0], x), max(seen[1], x), seen[2] + 1]
    span = (scope.end - scope.start) / DAY
    return {key: _fit(*acc, span, *_ends(scope, check_id, key), enough=_enough(*spread[key]))
            for key, acc in sorted(sums.items())}


def _enough(first_x: float, last_x: float, hours: int) -> bool:
    """Whether points from `first_x` to `last_x` (days) in `hours` distinct hours can carry a trend."""
    return (last_x - first_x) * DAY >= TREND_MIN_SPAN and hours >= TREND_MIN_POINTS


def _fit(n: float, sx: float, sy: float, sxx: float, sxy: float, low: float, high: float, span: float,
         first: float | None, last: float | None, enough: bool = True) -> Series:
    denominator = n * sxx - sx * sx
    if not enough or n < 2 or denominator <= 1e-12 * max(1.0, n * sxx):
        slope = fitted = None
    else:
        slope = (n * sxy - sx * sy) / denominator
        fitted = (sy - slope * sx) / n + slope * span
    return Series(n, sy / n, low, high, first, last, slope, fitted, enough)


def _ends(scope: _Scope, check_id: int, key: str) -> tuple[float | None, float | None]:
    """The key's first and last raw values in the period (SQLite returns the row of min()/max())."""
    out = []
    for pick in ("min", "max"):
        row = scope.conn.execute(
            f"SELECT j.value, {pick}(r.started) FROM check_runs r, json_each(r.metrics) j WHERE r.check_id = ? "
            "AND r.started >= ? AND r.started < ? AND j.key = ?", (check_id, scope.start, scope.end, key)).fetchone()
        out.append(row[0] if row else None)
    return out[0], out[1]


def _mean(scope: _Scope, name: str, metric: str) -> float | None:
    series = _series(scope, name, metric).get(metric)
    return series.mean if series else None


def _label(key: str) -> str:
    """`used_ratio{mount=/var}` → `/var`."""
    inner = key[key.find("{") + 1:-1] if "{" in key else ""
    return inner.split("=", 1)[1] if "=" in inner else inner


def _disks(scope: _Scope) -> list[DiskForecast]:
    forecasts = []
    for name in scope.checks_of("disk"):
        options = scope.options(name)
        critical = getattr(options, "critical", None) if options else None
        sizes = _series(scope, name, "size_bytes")
        for key, series in _series(scope, name, "used_ratio").items():
            mount = _label(key)
            size = sizes.get(f"size_bytes{{mount={mount}}}")
            size_bytes = (size.last if size.last is not None else size.mean) if size else None
            forecasts.append(DiskForecast(name, mount, series, size_bytes, critical,
                                          _days_until(series, 1.0), _days_until(series, critical)))
    return forecasts


def _days_until(series: Series, level: float | None) -> float | None:
    """Days from the period's end until the fitted line reaches `level`; None when it is not rising."""
    if level is None or series.slope_per_day is None or series.slope_per_day <= 1e-9:
        return None
    return max(0.0, (level - series.fitted_end) / series.slope_per_day)


def _trends(scope: _Scope) -> list[Trend]:
    trends = []
    for kind, metric in TREND_METRICS.items():
        for name in scope.checks_of(kind):
            trends += [Trend(name, key, series) for key, series in _series(scope, name, metric).items()]
    return trends


def _databases(scope: _Scope) -> list[DbGrowth]:
    return [DbGrowth(name, _label(key), series) for name in scope.checks_of("pg_tables")
            for key, series in _series(scope, name, "database_size_bytes").items()]


def _slow_queries(scope: _Scope) -> list[SlowQuery]:
    """The slowest statements by mean time from each pg_statements check's latest run in the period."""
    queries = []
    for name in scope.checks_of("pg_statements"):
        row = scope.conn.execute("SELECT details FROM check_runs WHERE check_id = ? AND started >= ? AND "
                                 "started < ? ORDER BY started DESC LIMIT 1",
                                 (scope.ids[name], scope.start, scope.end)).fetchone()
        statements = (json.loads(row[0]) or {}).get("statements", []) if row and row[0] else []
        for entry in statements:
            queries.append(SlowQuery(name, entry.get("database"), entry.get("calls"),
                                     float(entry.get("mean_seconds") or 0.0), entry.get("max_seconds"),
                                     REDACT(str(entry.get("query") or "")).strip()))
    return sorted(queries, key=lambda q: -q.mean_seconds)[:SLOW_QUERIES_LISTED]


def _notes(scope: _Scope, start: float) -> list[str]:
    if not scope.pruned:
        return []
    tz = scope.loaded.tz
    return [f"runs before {datetime.fromtimestamp(scope.raw_start, tz):%Y-%m-%d} were pruned by retention: counts "
            "and trends there come from daily rollups; incidents are listed from that day on"]


def _goals(report: Report) -> list[Goal]:
    runs = sum(a.runs for a in report.availability)
    backups = sum(b.runs for b in report.backups)
    return [
        Goal("availability", sum(a.ok for a in report.availability) / runs if runs else None,
             AVAILABILITY_TARGET, "ratio", "above"),
        Goal("backup success rate", sum(b.ok for b in report.backups) / backups if backups else None,
             BACKUP_TARGET, "ratio", "above"),
        Goal("preventive share", report.maintenance.preventive_ratio, PREVENTIVE_TARGET, "ratio", "above"),
        Goal("mean resolution time", report.mean_resolution_seconds, RESOLUTION_TARGET, "seconds", "below"),
        Goal("maintenance time", report.maintenance_seconds,
             MAINTENANCE_TARGET * (report.end - report.start) / WEEK, "seconds", "below"),
    ]


# -- rendering ----------------------------------------------------------------------------------------------


_TIME_KEYS = {"start", "end", "started", "at", "generated", "last_run", "history_start", "covered_from"}


def to_dict(report: Report) -> dict[str, Any]:
    """Every field and derived figure; times as ISO 8601 UTC (for programs, like the CLI's JSON)."""
    return _plain(report)


def _plain(value: Any, key: str = "") -> Any:
    if is_dataclass(value):
        out = {f.name: _plain(getattr(value, f.name), f.name) for f in fields(value)}
        for name, attr in vars(type(value)).items():
            if isinstance(attr, property):
                out[name] = _plain(getattr(value, name), name)
        return out
    if isinstance(value, list):
        return [_plain(v, key) for v in value]
    if key in _TIME_KEYS and isinstance(value, (int, float)) and not isinstance(value, bool):
        return iso_utc(value)
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def render_json(report: Report) -> str:
    """The CLI's one JSON style (agent/output.py): a key per line, each list one object per line."""
    from agent.output import json_document
    return json_document(to_dict(report))


_CSV_ITEMS = {"goals": "name", "checklist": "item", "checks": "check", "incidents": "check", "actions": "action",
              "backups": "check", "restore_tests": "check", "availability": "check", "disks": "mount",
              "trends": "metric", "databases": "database", "slow_queries": "check", "log": "category",
              "maintenance_windows": "id", "jobs": "check"}


def render_csv(report: Report) -> str:
    """Every figure as one row `section,row,item,metric,value` (long format: a spreadsheet pivots it;
    `row` tells apart two entries of one item, such as two incidents of one check)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["section", "row", "item", "metric", "value"])
    data = to_dict(report)
    for key in ("host", "period", "label", "start", "end", "timezone", "history_start", "covered_from", "worst",
                "checklist_done", "mean_resolution_seconds", "maintenance_seconds"):
        writer.writerow(["report", 1, "", key, _csv_value(data[key])])
    for key in ("preventive", "corrective", "preventive_ratio"):
        writer.writerow(["maintenance", 1, "", key, _csv_value(data["maintenance"][key])])
    for section, item in _CSV_ITEMS.items():
        for index, row in enumerate(data[section], 1):
            writer.writerows([section, index, row[item], metric, _csv_value(value)]
                             for metric, value in _flat(row).items() if metric != item)
    return out.getvalue()


def _flat(row: dict, prefix: str = "") -> dict[str, Any]:
    out = {}
    for key, value in row.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[prefix + key] = value
    return out


def _csv_value(value: Any) -> Any:
    if isinstance(value, float):
        return f"{value:.6g}"
    return "" if value is None else value


def _environment(tz: ZoneInfo, html: bool):
    import jinja2

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATES)), autoescape=html,
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True,
                             keep_trailing_newline=True, extensions=["jinja2.ext.do"])
    env.filters.update(
        when=lambda ts: "-" if ts is None else datetime.fromtimestamp(ts, tz).strftime("%Y-%m-%d %H:%M"),
        day=lambda ts: datetime.fromtimestamp(ts, tz).strftime("%a %Y-%m-%d"),
        dur=lambda s: "-" if s is None else format_duration(s),
        pct=_percent, size=lambda b: "-" if b is None else format_size(b),
        days=lambda d: "not growing" if d is None else ("full now" if d <= 0 else f"{d:.0f} days" if d >= 10
                                                        else f"{d:.1f} days"),
        num=lambda v: "-" if v is None else f"{v:g}")
    env.globals.update(AVAILABILITY_TARGET=AVAILABILITY_TARGET, RTO_TARGET=RTO_TARGET, RPO_TARGET=RPO_TARGET,
                       CHECKLISTS=PERIOD_CHECKLISTS, table=_text_table)
    return env


def _text_table(headers: list[str], rows: list[list[Any]]) -> str:
    """Aligned columns for the text report, indented by two spaces; `(none)` for no rows."""
    if not rows:
        return "  (none)"
    cells = [[str(h).upper() for h in headers]] + [["-" if v is None else str(v) for v in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    return "\n".join("  " + "  ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip() for row in cells)


def _percent(value: float | None, digits: int = 1) -> str:
    """`99.2%`; more digits where rounding would show a shortfall as 100 % (99.96 % is not 100.0 %)."""
    if value is None:
        return "-"
    text = f"{value * 100:.{digits}f}"
    while value < 1 and float(text) >= 100 and digits < 4:
        digits += 1
        text = f"{value * 100:.{digits}f}"
    return text + "%"


def render_text(report: Report) -> str:
    return _environment(ZoneInfo(report.timezone), html=False).get_template("report.txt.j2").render(r=report)


def render_html(report: Report) -> str:
    return _environment(ZoneInfo(report.timezone), html=True).get_template("report.html.j2").render(r=report)


RENDERERS = {"text": render_text, "html": render_html, "json": render_json, "csv": render_csv}
