"""/metrics: the Prometheus exposition of the agent's latest in-memory state.

A scrape never runs a check or reads SQLite. The body is rendered at most once
per change of state, on the first scrape after it, re-rendering only the checks
whose state moved (`Exposition`); every other scrape serves the cached bytes,
so concurrent scrapes do not contend and a result costs the same with 5 checks
or 1,000.
"""

from __future__ import annotations

import functools
import gzip
import threading
import time
from dataclasses import dataclass

from agent.plugin.faults import RESOURCES
from agent.job import Job
from agent.http.promtext import header, line
from agent.plugin.result import Status
from checks import CHECK_TYPES
from checks.base import MetricSpec

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


@dataclass(frozen=True)
class Family:
    """One exported metric family: the contract the exposition is tested against."""

    name: str
    kind: str          # gauge or counter
    help: str
    labels: tuple[str, ...]


AGENT_FAMILIES = (
    Family("maint_agent_info", "gauge", "Agent build information (always 1).", ("version",)),
    Family("maint_agent_start_time_seconds", "gauge", "Unix time the agent started.", ()),
    Family("maint_agent_config_last_reload_successful", "gauge", "1 when the last config (re)load succeeded.", ()),
    Family("maint_agent_config_last_reload_success_timestamp_seconds", "gauge",
           "Unix time of the last successful config load.", ()),
    Family("maint_store_write_errors_total", "counter", "Failed store writes (results kept and retried).", ()),
    Family("maint_store_pending_runs", "gauge", "Results not yet committed to the store.", ()),
    Family("maint_agent_maintenance_until_timestamp_seconds", "gauge",
           "Unix time the current maintenance ends (the latest end of the windows in force); 0 when none is.", ()),
    Family("maint_runner_workers", "gauge", "Size of the check worker pool.", ()),
    Family("maint_runner_abandoned_runs_total", "counter",
           "Runs that overran their timeout and were reported UNKNOWN while their thread was left behind.", ()),
    Family("maint_check_status", "gauge", "Latest status: 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN; `severity` is "
           "the check's configured incident level P0..P3.", ("check", "type", "severity")),
    Family("maint_check_pending_status", "gauge",
           "Status a threshold breach turns into once its `for` window has held (0 when none is pending).",
           ("check",)),
    Family("maint_check_last_run_timestamp_seconds", "gauge", "Unix time the latest run started.", ("check",)),
    Family("maint_check_last_duration_seconds", "gauge", "Duration of the latest run.", ("check",)),
    Family("maint_check_next_run_timestamp_seconds", "gauge", "Unix time the next run is due.", ("check",)),
    Family("maint_check_interval_seconds", "gauge", "Configured interval (interval checks only).", ("check",)),
    Family("maint_check_schedule_lag_seconds", "gauge", "Latest run's start minus its due time.", ("check",)),
    Family("maint_check_runs_total", "counter", "Completed runs by resulting status, counted from 0 at each agent "
           "start (the latest status itself is restored from the store).", ("check", "status")),
    Family("maint_check_skipped_runs_total", "counter",
           "Runs skipped because the previous run of the check was still in flight.", ("check",)),
    Family("maint_check_in_maintenance", "gauge",
           "1 while the check is in maintenance (it runs, its actions and notifications are held), else 0.",
           ("check",)),
    Family("maint_check_remediation_exhausted", "gauge",
           "1 while a corrective action of the check used up its attempts (until it settles or is reset).",
           ("check",)),
    Family("maint_action_runs_total", "counter",
           "Action decisions by result: success, failure, dry_run (ran or would run); cooldown, limit, "
           "exhausted, window, maintenance (skipped).", ("action", "result")),
    Family("maint_action_last_run_timestamp_seconds", "gauge", "Unix time the action last ran (or would have, "
           "in dry-run).", ("action",)),
    Family("maint_agent_resource_errors_total", "counter",
           "Check runs the agent could not do for want of its own resources (open_files, memory, tasks): "
           "reported UNKNOWN, never acted on.", ("resource",)),
    Family("maint_http_connections_rejected_total", "counter",
           "Connections to /metrics closed early: limit (every slot busy), evicted (the one waiting longest for "
           "its request, to make room), header_timeout (TLS handshake and headers not in within "
           "http.header_timeout), header_too_large (request line and headers over 16 KiB, answered 431).",
           ("reason",)),
    Family("maint_http_open_connections", "gauge",
           "Connections to /metrics open when the exposition was rendered (at most http.max_connections).", ()),
    Family("maint_notifications_pending", "gauge",
           "Notifications stored in the outbox and not yet delivered (being retried with backoff).", ()),
    Family("maint_notification_failures_total", "counter",
           "Failed delivery attempts of notifications, by channel (slack, pagerduty, email); each failed retry "
           "counts.", ("channel",)),
)


def check_families() -> list[Family]:
    """The per-type metric families, from each check type's declared METRICS (imports every check type)."""
    families = {}
    for cls in CHECK_TYPES.values():
        families.update(type_families(cls))
    return list(families.values())


@functools.cache
def type_families(cls: type) -> dict[str, Family]:
    """One check type's metric families by exported name (no two types export the same name: a test checks)."""
    families = {}
    for spec in cls.METRICS:
        name = exported_name(cls.metric_prefix(), spec)
        families[name] = Family(name, "gauge", spec.help, ("check", *spec.labels))
    return families


def contract() -> list[Family]:
    return list(AGENT_FAMILIES) + check_families()


def exported_name(prefix: str, spec: MetricSpec) -> str:
    return f"maint_{prefix}_{spec.name}"


class AgentState:
    """What the collector reads. The daemon replaces `jobs` with a new list (never mutates it in
    place), so a render sees either the old or the new set of checks."""

    def __init__(self, version: str, workers: int):
        self.version = version
        self.start_time = time.time()
        self.workers = workers
        self.jobs: list[Job] = []
        self.store_write_errors = 0
        self.store_pending = 0
        self.abandoned_runs = 0
        self.config_ok = True
        self.config_loaded_at = self.start_time
        self.action_results: dict[tuple[str, str], int] = {}   # (action, result) → count
        self.action_last_run: dict[str, float] = {}
        self.exhausted: dict[str, bool] = {}                   # check → remediation exhausted
        self.resource_errors = dict.fromkeys(RESOURCES, 0)     # resource → runs lost to the agent's own shortage
        self.listener = None   # the HTTP server's Connections (`snapshot()`), set once it listens
        self.maintenance: dict[str, float] = {}                # check in maintenance → when it ends (replaced whole)
        self.notifications_pending = 0
        self.notification_failures: dict[str, int] = {}        # channel → failed attempts

    def action_decided(self, action: str, result: str) -> None:
        """One decision about an action, counted by result: success, failure, dry_run when it ran, or why it
        did not (exhausted, window, maintenance …)."""
        key = (action, result)
        self.action_results[key] = self.action_results.get(key, 0) + 1

    def action_ran(self, action: str, result: str, at: float) -> None:
        """An action that ran (or would have, dry_run): counted, and when."""
        self.action_decided(action, result)
        self.action_last_run[action] = at

    def remediation_exhausted(self, exhausted: dict[str, bool]) -> None:
        """Which checks' remediation is exhausted, replaced whole (a render sees the old or the new mapping)."""
        self.exhausted = exhausted


# the per-check families, in the order they are exposed; the families of measured values follow
CHECK_FAMILIES = (
    "maint_check_status", "maint_check_pending_status", "maint_check_last_run_timestamp_seconds",
    "maint_check_last_duration_seconds", "maint_check_next_run_timestamp_seconds", "maint_check_interval_seconds",
    "maint_check_schedule_lag_seconds", "maint_check_runs_total", "maint_check_skipped_runs_total",
    "maint_check_in_maintenance",
)
_AGENT_HEAD = ("maint_agent_info", "maint_agent_start_time_seconds", "maint_agent_config_last_reload_successful",
               "maint_agent_config_last_reload_success_timestamp_seconds", "maint_store_write_errors_total",
               "maint_store_pending_runs", "maint_agent_maintenance_until_timestamp_seconds", "maint_runner_workers",
               "maint_runner_abandoned_runs_total")
_STATUS_LABELS = tuple(s.label for s in Status)


@functools.cache
def _headers() -> dict[str, str]:
    """`# HELP`/`# TYPE` of the agent's own families, by name (those of measured values come with their type)."""
    return {f.name: header(f.name, f.kind, f.help) for f in AGENT_FAMILIES}


@dataclass(frozen=True, eq=False)
class _CheckLines:
    """One check's lines, per family: what a result of that check re-renders."""

    key: tuple
    fixed: tuple[bytes, ...]                  # one entry per CHECK_FAMILIES (b"" when none)
    values: tuple[tuple[str, bytes], ...]     # value families in the order the samples name them
    families: dict[str, Family]               # the check type's value families


def _check_key(job: Job, in_maintenance: bool) -> tuple:
    """Everything a check's lines are rendered from: equal keys, equal lines."""
    return (job.check, job.trigger, job.next_due, job.skipped, job.latest, job.lag, tuple(job.runs.items()),
            in_maintenance)


def _check_lines(job: Job, key: tuple) -> _CheckLines:
    name = job.name
    check = (("check", name),)
    lines = dict.fromkeys(CHECK_FAMILIES, "")
    lines["maint_check_in_maintenance"] = line("maint_check_in_maintenance", check, 1 if key[-1] else 0)
    lines["maint_check_next_run_timestamp_seconds"] = line("maint_check_next_run_timestamp_seconds", check,
                                                           job.next_due)
    seconds = getattr(job.trigger, "seconds", None)
    if seconds is not None:
        lines["maint_check_interval_seconds"] = line("maint_check_interval_seconds", check, seconds)
    lines["maint_check_runs_total"] = "".join(
        line("maint_check_runs_total", (("check", name), ("status", label)), job.runs.get(label, 0))
        for label in _STATUS_LABELS)
    lines["maint_check_skipped_runs_total"] = line("maint_check_skipped_runs_total", check, job.skipped)
    families = type_families(type(job.check))
    values: dict[str, list[str]] = {}
    latest = job.latest
    if latest is not None:
        lines["maint_check_status"] = line("maint_check_status", (("check", name), ("type", job.check.TYPE),
                                                                  ("severity", job.options.severity)),
                                           int(latest.status))
        lines["maint_check_pending_status"] = line("maint_check_pending_status", check, int(latest.pending))
        lines["maint_check_last_run_timestamp_seconds"] = line("maint_check_last_run_timestamp_seconds", check,
                                                               latest.started)
        lines["maint_check_last_duration_seconds"] = line("maint_check_last_duration_seconds", check,
                                                          latest.duration)
        lines["maint_check_schedule_lag_seconds"] = line("maint_check_schedule_lag_seconds", check, job.lag)
        prefix = job.check.metric_prefix()
        for s in latest.samples:
            spec = job.check.metric_spec(s.name)
            if spec is None:
                continue
            metric = exported_name(prefix, spec)
            labels = dict(s.labels)
            given = [name] + [labels.get(label, "") for label in spec.labels]
            values.setdefault(metric, []).append(line(metric, tuple(zip(families[metric].labels, given)), s.value))
    return _CheckLines(key, tuple(lines[family].encode() for family in CHECK_FAMILIES),
                       tuple((metric, "".join(texts).encode()) for metric, texts in values.items()), families)


class Exposition:
    """The /metrics body, rendered from the state at most once per scrape and only after it changed.

    `refresh()` (the sink after each batch, the loop after a reload) only marks the state changed. The
    next scrape renders: the agent-wide families whole, each check's lines from a cache kept per check
    and per family, re-rendered only for the checks whose state moved since. A result therefore costs
    the same with 5 checks or 1,000, and the body is the one prometheus_client's `generate_latest`
    would write for the same state (a test compares them).
    """

    def __init__(self, state: AgentState):
        self.state = state
        self._lock = threading.Lock()
        self._dirty = True
        self._body = b""
        self._gzipped: bytes | None = None
        self._jobs: list[Job] | None = None      # the list the per-check caches below are positioned on
        self._checks: list[_CheckLines | None] = []
        self._fixed: list[list[bytes]] = []       # per CHECK_FAMILIES entry: each check's lines, by position
        self._values: dict[str, list[bytes]] = {}  # per value family: each check's lines, by position
        self._order: list[str] = []               # value families in order of first appearance
        self._value_headers: dict[str, bytes] = {}
        self._actions: tuple[tuple, bytes] = ((), b"")

    def refresh(self) -> None:
        """The state changed: the next scrape renders it. Cheap enough to call after every result."""
        self._dirty = True

    def body(self, want_gzip: bool) -> tuple[bytes, bool]:
        with self._lock:
            if self._dirty:
                self._dirty = False   # before reading the state: a change during the render marks it again
                self._body, self._gzipped = self._render(), None
            if not want_gzip:
                return self._body, False
            if self._gzipped is None:
                self._gzipped = gzip.compress(self._body, compresslevel=5)
            return self._gzipped, True

    def _render(self) -> bytes:
        headers = _headers()
        parts = [self._agent_block(headers), self._limits_block(headers)]
        self._update_checks(self.state.jobs)
        for index, name in enumerate(CHECK_FAMILIES):
            parts.append(headers[name].encode())
            parts += self._fixed[index]
        for name in self._order:
            parts.append(self._value_headers[name])
            parts += self._values[name]
        parts.append(self._actions_block(headers))
        parts.append(self._notifications_block(headers))
        return b"".join(parts)

    def _update_checks(self, jobs: list[Job]) -> None:
        """Re-render the lines of the checks whose state changed; a new list of checks (a reload) starts over."""
        if jobs is not self._jobs or len(jobs) != len(self._checks):
            self._jobs, count = jobs, len(jobs)
            self._checks = [None] * count
            self._fixed = [[b""] * count for _ in CHECK_FAMILIES]
            self._values, self._order = {}, []
        reorder = False
        maintenance = self.state.maintenance
        for position, job in enumerate(jobs):
            cached = self._checks[position]
            key = _check_key(job, job.name in maintenance)
            if cached is not None and cached.key == key:
                continue
            fresh = self._checks[position] = _check_lines(job, key)
            for index, text in enumerate(fresh.fixed):
                self._fixed[index][position] = text
            before = [name for name, _ in cached.values] if cached is not None else []
            for name in before:
                self._values[name][position] = b""
            for name, text in fresh.values:
                if name not in self._values:
                    self._values[name] = [b""] * len(jobs)
                    family = fresh.families[name]
                    self._value_headers[name] = header(family.name, family.kind, family.help).encode()
                self._values[name][position] = text
            reorder = reorder or before != [name for name, _ in fresh.values]
        if reorder:
            self._order = list(dict.fromkeys(name for cached in self._checks for name, _ in cached.values))
            self._values = {name: self._values[name] for name in self._order}

    def _agent_block(self, headers: dict[str, str]) -> bytes:
        st = self.state
        values = (None, st.start_time, 1 if st.config_ok else 0, st.config_loaded_at, st.store_write_errors,
                  st.store_pending, max(st.maintenance.values(), default=0), st.workers, st.abandoned_runs)
        parts = []
        for name, value in zip(_AGENT_HEAD, values):
            parts.append(headers[name])
            parts.append(line(name, (("version", st.version),), 1) if name == "maint_agent_info"
                         else line(name, (), value))
        return "".join(parts).encode()

    def _actions_block(self, headers: dict[str, str]) -> bytes:
        st = self.state
        key = (dict(st.exhausted), dict(st.action_results), dict(st.action_last_run))
        if key != self._actions[0]:
            exhausted, results, last = key
            text = "".join((
                headers["maint_check_remediation_exhausted"],
                *(line("maint_check_remediation_exhausted", (("check", check),), 1 if value else 0)
                  for check, value in sorted(exhausted.items())),
                headers["maint_action_runs_total"],
                *(line("maint_action_runs_total", (("action", action), ("result", result)), count)
                  for (action, result), count in sorted(results.items())),
                headers["maint_action_last_run_timestamp_seconds"],
                *(line("maint_action_last_run_timestamp_seconds", (("action", action),), at)
                  for action, at in sorted(last.items())),
            ))
            self._actions = (key, text.encode())
        return self._actions[1]

    def _limits_block(self, headers: dict[str, str]) -> bytes:
        """The agent's own limits: runs lost to its shortages, and its listener's early closes."""
        st = self.state
        open_now, reasons = st.listener.snapshot() if st.listener is not None else (0, {})
        return "".join((
            headers["maint_agent_resource_errors_total"],
            *(line("maint_agent_resource_errors_total", (("resource", resource),), count)
              for resource, count in st.resource_errors.items()),
            headers["maint_http_connections_rejected_total"],
            *(line("maint_http_connections_rejected_total", (("reason", reason),), count)
              for reason, count in reasons.items()),
            headers["maint_http_open_connections"],
            line("maint_http_open_connections", (), open_now),
        )).encode()

    def _notifications_block(self, headers: dict[str, str]) -> bytes:
        st = self.state
        return "".join((
            headers["maint_notifications_pending"],
            line("maint_notifications_pending", (), st.notifications_pending),
            headers["maint_notification_failures_total"],
            *(line("maint_notification_failures_total", (("channel", channel),), count)
              for channel, count in sorted(st.notification_failures.items())),
        )).encode()
