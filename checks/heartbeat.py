"""`heartbeat`: a dead man's switch for jobs that report themselves (cron jobs, backups, batch jobs).

The job signals through `maint-agent ping NAME` (or `maint-agent ping NAME -- COMMAND`, which wraps
it): a start, then a success or a failure. The check judges the latest signals against the job's
rhythm — `period:` (it runs every so often) or `schedule:` (its cron time) — and `grace:`:

- new: no signal yet, and the first deadline has not passed (OK);
- up: the latest finish was a success and the next one is not yet due, or a run is in progress (OK);
- late: the next success is overdue, within `grace` (WARNING);
- down: overdue by more than `grace`, or a run started and did not finish within `grace` (CRITICAL);
- failed: the latest finish was a failure (CRITICAL, until a success).

The verdict is a pure function of (signals, when the agent began watching, now); the daemon runs
the check again when a signal arrives and at the moment the verdict changes by itself (the
result's `recheck_at`), so late and down are noticed on time, not at the next interval.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Callable, Literal

from pydantic import Field, model_validator

from agent.plugin.fields import Duration, PositiveDuration
from agent.plugin.result import CheckResult, Status, sample
from agent.plugin.units import format_duration, format_timestamp
from checks.base import Check, CheckContext, CheckOptions, MetricSpec

State = Literal["new", "up", "late", "down", "failed"]
STATE_STATUS = {"new": Status.OK, "up": Status.OK, "late": Status.WARNING, "down": Status.CRITICAL,
                "failed": Status.CRITICAL}


@dataclass(frozen=True)
class Judgement:
    state: State
    summary: str
    deadline: float | None       # the next success is due by then (late after it, down after it + grace)
    next_change: float | None    # the verdict changes by itself at this instant, with no new signal


def judge(signals, watched_since: float, now: float, due_after: Callable[[float], float],
          grace: float) -> Judgement:
    """Given a job's latest signals (agent.plugin.heartbeat.Signals), when the agent began watching it, the time,
    the job's rhythm (`due_after(t)`: when the next success is due after one at t) and the grace, return
    its state."""
    finish, success = signals.finish, signals.success
    if signals.running:
        start = signals.start
        ends = start.at + grace
        if now >= ends:
            return Judgement("down", f"down: started {_ago(now, start.at)} and did not finish within the grace "
                                     f"of {format_duration(grace)}", None, None)
        if finish is not None and finish.kind == "fail":
            return Judgement("failed", f"failed: {_failure(finish, now)}; running again since "
                                       f"{_ago(now, start.at)}", None, ends)
        return Judgement("up", f"up: running since {_ago(now, start.at)}"
                               + (f"; last success {_ago(now, success.at)}" if success else ""), None, ends)
    if finish is not None and finish.kind == "fail":
        return Judgement("failed", f"failed: {_failure(finish, now)}", None, None)
    reference = success.at if success else watched_since
    deadline = due_after(reference)
    done = f"last success {_ago(now, success.at)}" + _took(success) if success else "no signal yet"
    if now < deadline:
        state: State = "up" if success else "new"
        return Judgement(state, f"{state}: {done}; next due in {format_duration(deadline - now)}", deadline,
                         deadline)
    if now < deadline + grace:
        return Judgement("late", f"late: {done}; due {_ago(now, deadline)}, down in "
                                 f"{format_duration(deadline + grace - now)}", deadline, deadline + grace)
    return Judgement("down", f"down: {done}; due {_ago(now, deadline)} (grace {format_duration(grace)})",
                     deadline, None)


def _ago(now: float, at: float) -> str:
    return f"{format_duration(max(0.0, now - at))} ago"


def _took(signal) -> str:
    return f" (took {format_duration(signal.duration)})" if signal.duration is not None else ""


def _failure(finish, now: float) -> str:
    status = f"exit status {finish.exit_status}" if finish.exit_status is not None else "the job reported failure"
    said = f": {_first_line(finish.message)}" if finish.message else ""
    return f"{status} {_ago(now, finish.at)}{_took(finish)}{said}"


def _first_line(text: str, limit: int = 120) -> str:
    line = text.strip().splitlines()[-1] if text.strip() else ""
    return line if len(line) <= limit else line[:limit - 1] + "…"


class HeartbeatCheck(Check):
    """A job's dead man's switch (`maint-agent ping NAME`); `schedule:` here is the job's own calendar."""

    TYPE = "heartbeat"
    EXAMPLE = """
        - name: nightly-backup-job    # cron: maint-agent ping nightly-backup-job -- /usr/local/bin/backup.sh
          type: heartbeat
          schedule: "02:00"
          grace: 2h
          every: 5m
          severity: P1
    """
    WATCHES_SCHEDULE = True
    METRICS = (
        MetricSpec("last_success_timestamp_seconds", "seconds", "Unix time of the job's latest success signal."),
        MetricSpec("last_duration_seconds", "seconds",
                   "Run time of the job's latest finished run, from its start signal (absent without one)."),
        MetricSpec("last_exit_status", "count", "Exit status the job's latest finish reported (0: success)."),
        MetricSpec("deadline_timestamp_seconds", "seconds",
                   "Unix time the next success is due: late after it, down after it plus the grace."),
        MetricSpec("running", "boolean", "1 while a run is in progress (a start newer than the latest finish)."),
    )

    class Options(CheckOptions):
        type: Literal["heartbeat"]
        period: PositiveDuration | None = Field(None, description="the job runs this often (e.g. 1d): late when no success "
                                                       "came within it; or give `schedule:`")
        schedule: str | None = Field(
            None, description="the job's own calendar (a name from `schedules:` or a spec such as '02:00'): late "
                              "when no success came since the last due time; or give `period:`")
        grace: Duration = Field(3600.0, description="late (WARNING) turns down (CRITICAL) after this much more; also "
                                                 "how long a started run may take")

        @model_validator(mode="after")
        def _rhythm(self):
            if (self.period is None) == (self.schedule is None):
                raise ValueError("give the job's rhythm: either period (e.g. 1d) or schedule (e.g. '02:00')")
            return self

    def run(self, ctx: CheckContext) -> CheckResult:
        if ctx.store is None:
            return CheckResult.unknown("heartbeat signals live in the agent's store, which this run cannot read")
        from agent.plugin.heartbeat import Signals, first_seen, latest
        from agent.plugin.storefile import StoreMissing, open_readonly
        now = ctx.wall()
        try:
            conn = open_readonly(ctx.store)
        except StoreMissing:
            signals, since = Signals(), None
        else:
            try:
                signals, since = latest(conn, self.options.name), first_seen(conn, self.options.name)
            finally:
                conn.close()
        verdict = judge(signals, since if since is not None else now, now, self._due_after(ctx),
                        self.options.grace)
        return CheckResult(STATE_STATUS[verdict.state], verdict.summary, self._samples(signals, verdict),
                           self._details(signals, verdict), recheck_at=verdict.next_change)

    def _due_after(self, ctx: CheckContext) -> Callable[[float], float]:
        if self.options.period is not None:
            return lambda at: at + self.options.period
        from agent.plugin.calendar import next_fire, parse_calendar
        spec, tz = parse_calendar(self.options.schedule), ctx.tz or timezone.utc
        return lambda at: next_fire(spec, datetime.fromtimestamp(at, timezone.utc), tz).timestamp()

    @staticmethod
    def _samples(signals, verdict: Judgement) -> list:
        out = [sample("running", 1 if signals.running else 0)]
        if signals.success is not None:
            out.append(sample("last_success_timestamp_seconds", signals.success.at))
        finish = signals.finish
        if finish is not None and finish.duration is not None:
            out.append(sample("last_duration_seconds", finish.duration))
        if finish is not None:
            out.append(sample("last_exit_status", finish.exit_status if finish.exit_status is not None
                              else (0 if finish.kind == "success" else 1)))
        if verdict.deadline is not None:
            out.append(sample("deadline_timestamp_seconds", verdict.deadline))
        return out

    @staticmethod
    def _details(signals, verdict: Judgement) -> dict:
        def when(signal):
            return None if signal is None else format_timestamp(signal.at)
        details = {"state": verdict.state, "last_start": when(signals.start), "last_finish": when(signals.finish),
                   "last_success": when(signals.success)}
        if signals.finish is not None and signals.finish.message:
            details["message"] = signals.finish.message[-2000:]
        return details
