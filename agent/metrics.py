"""The /metrics exposition: prometheus_client rendering of the agent's latest in-memory state (served by
`agent.http_server`).

The body is rendered when the state changes (after a batch of results), not
on scrape: a scrape never runs a check, reads SQLite or walks the jobs, so it
costs the same with 5 checks or 500 and concurrent scrapes do not contend.
"""

from __future__ import annotations

import gzip
import threading
import time
from dataclasses import dataclass
from typing import Iterable

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from agent.faults import RESOURCES
from agent.job import Job
from agent.result import Status
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
    """The per-type metric families, from each check type's declared METRICS."""
    families = {}
    for cls in CHECK_TYPES.values():
        for spec in cls.METRICS:
            name = exported_name(cls.metric_prefix(), spec)
            families[name] = Family(name, "gauge", spec.help, ("check", *spec.labels))
    return list(families.values())


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


class StateCollector:
    def __init__(self, state: AgentState):
        self.state = state

    def collect(self) -> Iterable[Metric]:
        st = self.state
        fams = {f.name: f for f in AGENT_FAMILIES}

        def gauge(name, value=None):
            f = fams[name]
            g = GaugeMetricFamily(name, f.help, labels=f.labels or None)
            if value is not None:
                g.add_metric([], value)
            return g

        def counter(name, value=None):
            f = fams[name]
            c = CounterMetricFamily(name.removesuffix("_total"), f.help, labels=f.labels or None)
            if value is not None:
                c.add_metric([], value)
            return c

        info = gauge("maint_agent_info")
        info.add_metric([st.version], 1)
        yield info
        yield gauge("maint_agent_start_time_seconds", st.start_time)
        yield gauge("maint_agent_config_last_reload_successful", 1 if st.config_ok else 0)
        yield gauge("maint_agent_config_last_reload_success_timestamp_seconds", st.config_loaded_at)
        yield counter("maint_store_write_errors_total", st.store_write_errors)
        yield gauge("maint_store_pending_runs", st.store_pending)
        yield gauge("maint_agent_maintenance_until_timestamp_seconds", max(st.maintenance.values(), default=0))
        yield gauge("maint_runner_workers", st.workers)
        yield counter("maint_runner_abandoned_runs_total", st.abandoned_runs)
        yield from self._limits(gauge, counter)
        yield from self._jobs(gauge, counter)
        yield from self._actions(gauge, counter)
        yield gauge("maint_notifications_pending", st.notifications_pending)
        failures = counter("maint_notification_failures_total")
        for channel, count in sorted(st.notification_failures.items()):
            failures.add_metric([channel], count)
        yield failures

    def _limits(self, gauge, counter) -> Iterable[Metric]:
        """The agent's own limits: runs lost to its shortages, and its listener's early closes."""
        st = self.state
        errors, rejected = counter("maint_agent_resource_errors_total"), counter("maint_http_connections_rejected_total")
        for resource, count in st.resource_errors.items():
            errors.add_metric([resource], count)
        open_now, reasons = st.listener.snapshot() if st.listener is not None else (0, {})
        for reason, count in reasons.items():
            rejected.add_metric([reason], count)
        yield from (errors, rejected, gauge("maint_http_open_connections", open_now))

    def _actions(self, gauge, counter) -> Iterable[Metric]:
        st = self.state
        exhausted, runs = gauge("maint_check_remediation_exhausted"), counter("maint_action_runs_total")
        last = gauge("maint_action_last_run_timestamp_seconds")
        for check, value in sorted(st.exhausted.items()):
            exhausted.add_metric([check], 1 if value else 0)
        for (action, result), count in sorted(st.action_results.items()):
            runs.add_metric([action, result], count)
        for action, at in sorted(st.action_last_run.items()):
            last.add_metric([action], at)
        yield from (exhausted, runs, last)

    def _jobs(self, gauge, counter) -> Iterable[Metric]:
        jobs = list(self.state.jobs)
        status, pending = gauge("maint_check_status"), gauge("maint_check_pending_status")
        last_run, duration = gauge("maint_check_last_run_timestamp_seconds"), gauge("maint_check_last_duration_seconds")
        next_run, interval = gauge("maint_check_next_run_timestamp_seconds"), gauge("maint_check_interval_seconds")
        lag, runs, skipped = (gauge("maint_check_schedule_lag_seconds"), counter("maint_check_runs_total"),
                              counter("maint_check_skipped_runs_total"))
        in_maintenance, maintenance = gauge("maint_check_in_maintenance"), self.state.maintenance
        values: dict[str, GaugeMetricFamily] = {}
        specs = {f.name: f for f in check_families()}
        for job in jobs:
            name = job.name
            next_run.add_metric([name], job.next_due)
            seconds = getattr(job.trigger, "seconds", None)
            if seconds is not None:
                interval.add_metric([name], seconds)
            skipped.add_metric([name], job.skipped)
            in_maintenance.add_metric([name], 1 if name in maintenance else 0)
            for st in Status:
                runs.add_metric([name, st.label], job.runs.get(st.label, 0))
            latest = job.latest
            if latest is None:
                continue
            status.add_metric([name, job.check.TYPE, job.options.severity], int(latest.status))
            pending.add_metric([name], int(latest.pending))
            last_run.add_metric([name], latest.started)
            duration.add_metric([name], latest.duration)
            lag.add_metric([name], job.lag)
            prefix = job.check.metric_prefix()
            for s in latest.samples:
                spec = job.check.metric_spec(s.name)
                if spec is None:
                    continue
                metric = exported_name(prefix, spec)
                family = values.get(metric)
                if family is None:
                    f = specs[metric]
                    family = values[metric] = GaugeMetricFamily(metric, f.help, labels=f.labels)
                labels = dict(s.labels)
                family.add_metric([name] + [labels.get(label, "") for label in spec.labels], s.value)
        yield from (status, pending, last_run, duration, next_run, interval, lag, runs, skipped, in_maintenance)
        yield from values.values()


class Exposition:
    """The rendered /metrics body, refreshed by the daemon after each state change."""

    def __init__(self, state: AgentState):
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(StateCollector(state))
        self._lock = threading.Lock()
        self._body = b""
        self._gzipped: bytes | None = None

    def refresh(self) -> None:
        """Render under the lock: the loop and the sink both refresh, and an older body must not win."""
        with self._lock:
            self._body, self._gzipped = generate_latest(self.registry), None

    def body(self, want_gzip: bool) -> tuple[bytes, bool]:
        with self._lock:
            if not want_gzip:
                return self._body, False
            if self._gzipped is None:
                self._gzipped = gzip.compress(self._body, compresslevel=5)
            return self._gzipped, True
