"""/metrics is byte-identical to what prometheus_client's generate_latest writes for the same state.

The agent renders the text format itself and re-renders only the checks whose state changed; the
reference here is the collector the agent used before (prometheus_client families, rendered whole
by `generate_latest` on every refresh), kept as the oracle.
"""

from __future__ import annotations

import math
from typing import Iterable

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from agent.plugin.calendar import parse_calendar
from agent.config.triggers import Calendar, Interval
from agent.job import Job
from agent.http.metrics import AGENT_FAMILIES, AgentState, Exposition, check_families, exported_name
from agent.http.promtext import go_float
from agent.plugin.result import Evaluated, Status, sample
from checks import CHECK_TYPES


class ReferenceCollector:
    """The agent's collector before it rendered the text itself: every family, every check, every time."""

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


def reference(state: AgentState) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ReferenceCollector(state))
    return generate_latest(registry)


def make_job(type_name: str, name: str, trigger=None, **options) -> Job:
    cls = CHECK_TYPES[type_name]
    check = cls(cls.Options.model_validate({"name": name, "type": type_name, **options}))
    return Job(check, trigger or Interval(15.0), 5.0, next_due=1_767_225_600.25)


def record(job: Job, status: Status, samples, started: float, duration: float = 0.0123,
           pending: Status = Status.OK) -> None:
    """What the sink does with a result: a new latest, the lag, one more run counted."""
    job.latest = Evaluated(job.name, job.check.TYPE, status, "summary", tuple(samples), {}, started, duration,
                           started - 0.5, pending)
    job.lag = 0.5
    job.runs[status.label] += 1


WEIRD = 'C:\\data "primary"\nsecond line'   # every character the format escapes


@pytest.fixture
def populated() -> AgentState:
    state = AgentState('1.0-"dev"\\x', 4)
    state.start_time, state.config_loaded_at = 1_767_225_000.123456, 1_767_225_001.5
    state.store_write_errors, state.store_pending, state.abandoned_runs = 3, 7, 2
    disk = make_job("disk", "disk-weird", mounts=["/"], severity="P1")
    record(disk, Status.CRITICAL, [sample("used_ratio", 0.97, mount=WEIRD), sample("free_bytes", 1.5e12, mount=WEIRD),
                                   sample("used_ratio", math.nan, mount="/"), sample("size_bytes", math.inf, mount="/"),
                                   sample("inodes_used_ratio", -math.inf, mount="/"), sample("bogus", 1)],
           started=1_767_225_600.0, duration=math.nan, pending=Status.CRITICAL)
    files = make_job("file", "file-a", path="/etc/hostname")
    record(files, Status.OK, [sample("exists", 1), sample("age_seconds", 1234567.891), sample("size_bytes", 12)],
           started=1_767_225_601.0)
    record(files, Status.WARNING, [sample("exists", 1), sample("age_seconds", 0.0), sample("size_bytes", 0)],
           started=1_767_225_602.0)
    never = make_job("file", "never-ran", path="/nonexistent")
    calendar = make_job("disk", "weekly", Calendar(parse_calendar("mon 03:00"), "weekly"), mounts=["/"])
    record(calendar, Status.OK, [sample("used_ratio", 1e-7, mount="/")], started=1_767_225_603.0)
    nagios = make_job("nagios", "plugin", command=["/bin/true"])
    record(nagios, Status.UNKNOWN, [sample("perfdata_value", -12345678.5, label="t", unit="ms"),
                                    sample("exit_code", 3)], started=1_767_225_604.0)
    never.skipped = 5
    state.jobs = [disk, files, never, calendar, nagios]
    state.exhausted = {"disk-weird": True, "file-a": False}
    state.action_results = {("clean", "success"): 2, ("clean", "cooldown"): 1, ('page "on-call"', "failure"): 1}
    state.action_last_run = {"clean": 1_767_225_500.0}
    return state


def test_exposition_populated_state_matches_generate_latest(populated):
    body, zipped = Exposition(populated).body(False)
    assert not zipped
    assert body == reference(populated)
    assert b'mount="C:\\\\data \\"primary\\"\\nsecond line"' in body and b"NaN" in body and b"+Inf" in body


def test_exposition_after_results_reloads_and_changed_families_matches_generate_latest(populated):
    exposition = Exposition(populated)
    exposition.body(False)
    disk, files, never, calendar, nagios = populated.jobs
    steps = [
        lambda: record(files, Status.OK, [sample("exists", 0)], started=1_767_225_700.0),   # families shrink
        lambda: record(never, Status.OK, [sample("size_bytes", 1), sample("exists", 1)],    # first result, new order
                       started=1_767_225_701.0),
        lambda: setattr(calendar, "next_due", 1_767_830_400.0),                             # dispatched
        lambda: setattr(nagios, "skipped", nagios.skipped + 1),                             # skipped while in flight
        lambda: record(disk, Status.OK, [], started=1_767_225_702.0),                       # no samples at all
        lambda: setattr(populated, "jobs", [nagios, files, disk]),                          # a reload
        lambda: populated.exhausted.update({"plugin": True}),
        lambda: populated.action_results.update({("clean", "success"): 3}),
    ]
    for step in steps:
        step()
        exposition.refresh()
        assert exposition.body(False)[0] == reference(populated)


def test_exposition_renders_once_per_change_not_per_scrape(populated):
    exposition = Exposition(populated)
    first = exposition.body(False)[0]
    record(populated.jobs[1], Status.OK, [sample("exists", 1)], started=1_767_225_800.0)
    assert exposition.body(False)[0] is first, "no refresh, no render: the cached body is served"
    exposition.refresh()
    second = exposition.body(False)[0]
    assert second != first and exposition.body(False)[0] is second


@pytest.mark.parametrize("value", [0.0, -0.0, 1.0, 0.5, 1e-7, 123456.0, 1234567.0, 1_767_225_600.123, 1e22, -1e22,
                                   math.inf, -math.inf, math.nan, 3, True])
def test_go_float_matches_prometheus_client(value):
    from prometheus_client.utils import floatToGoString
    assert go_float(value) == floatToGoString(value)
