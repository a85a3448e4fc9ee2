"""Thresholds and sustained windows: a pure function of (state, result, now).

A breach of `warning`/`critical` becomes WARNING/CRITICAL only once it has held
for the check's `for:` window (Prometheus `for`, Monit "for N cycles"); until
then the result is OK with `pending` naming what it will turn into. The check's
own verdict (a target unreachable, UNKNOWN) is never delayed: `for:` smooths
measurements, not failures to measure. An UNKNOWN run leaves the window as it
was — no data neither confirms nor clears a breach.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from agent.plugin.result import CheckResult, Sample, Status, worst
from agent.plugin.units import format_value
from checks.base import Check


@dataclass(frozen=True)
class WindowState:
    """When the current warning-or-worse and critical breaches began (wall seconds)."""

    warning_since: float | None = None
    critical_since: float | None = None


@dataclass(frozen=True)
class Verdict:
    status: Status
    summary: str
    pending: Status
    state: WindowState


def breach_level(check: Check, result: CheckResult) -> tuple[Status, list[str]]:
    """Given a result, return the worst raw threshold breach and a phrase per breaching sample."""
    spec = check.THRESHOLD
    warning = getattr(check.options, "warning", None)
    critical = getattr(check.options, "critical", None)
    if spec is None or (warning is None and critical is None):
        return Status.OK, []
    level, reasons = Status.OK, []
    for s in check.threshold_samples(result):
        hit = _level(s.value, warning, critical, spec.bad_when)
        if hit is not Status.OK:
            limit = critical if hit is Status.CRITICAL else warning
            sign = ">" if spec.bad_when == "above" else "<"
            reasons.append(f"{_describe(s)} {format_value(s.value, spec.unit)} {sign} "
                           f"{format_value(limit, spec.unit)}")
            level = worst(level, hit)
    return level, reasons


def _level(value: float, warning: float | None, critical: float | None, bad_when: str) -> Status:
    beyond = (lambda limit: value > limit) if bad_when == "above" else (lambda limit: value < limit)
    if critical is not None and beyond(critical):
        return Status.CRITICAL
    if warning is not None and beyond(warning):
        return Status.WARNING
    return Status.OK


def _describe(s: Sample) -> str:
    labels = " ".join(v for _, v in s.labels)
    return f"{s.name} {labels}".strip() if labels else s.name


def evaluate(check: Check, result: CheckResult, state: WindowState, now: float) -> Verdict:
    """Given a check's raw result, its window state and the time, return the final verdict."""
    if result.status is Status.UNKNOWN:
        return Verdict(Status.UNKNOWN, result.summary, Status.OK, state)
    level, reasons = breach_level(check, result)
    state = _advance(state, level, now)
    window = check.options.sustained
    held = Status.OK
    if state.critical_since is not None and now - state.critical_since >= window:
        held = Status.CRITICAL
    elif state.warning_since is not None and now - state.warning_since >= window:
        held = Status.WARNING
    status = result.status if held is Status.OK else worst(result.status, held)
    pending = level if level.severity > held.severity else Status.OK
    summary = result.summary
    if reasons:
        prefix = "; ".join(reasons)
        if pending is not Status.OK:
            since = state.critical_since if pending is Status.CRITICAL else state.warning_since
            prefix += f" (pending {pending.label}: held {now - since:.0f}s of {window:.0f}s)"
        summary = f"{prefix} — {summary}"
    return Verdict(status, summary, pending, state)


_CLEAR = WindowState()


def _advance(state: WindowState, level: Status, now: float) -> WindowState:
    if level is Status.OK:
        return _CLEAR
    warning_since = state.warning_since if state.warning_since is not None else now
    if level is Status.CRITICAL:
        critical_since = state.critical_since if state.critical_since is not None else now
        return replace(state, warning_since=warning_since, critical_since=critical_since)
    return WindowState(warning_since=warning_since, critical_since=None)
