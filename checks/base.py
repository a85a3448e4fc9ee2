"""The shape every check type has: an options model, declared metrics, `run(ctx)`."""

from __future__ import annotations

import socket
from pathlib import Path
import time
from dataclasses import dataclass, field
from datetime import tzinfo
from typing import Annotated, Callable, ClassVar, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from agent.plugin.fields import Count, Duration, Name, PositiveDuration, Ratio, Severity, Size
from agent.plugin.result import CheckResult, Sample


def _window(text: str) -> str:
    from agent.plugin.calendar import CalendarSpecError, parse_window
    try:
        parse_window(text)
    except CalendarSpecError as exc:
        raise ValueError(f"invalid maintenance window: {exc}") from None
    return text


class ActionBinding(BaseModel):
    """When a check runs one of the configured `actions:`."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True, defer_build=True)

    action: Name = Field(description="the name of an entry in `actions:`")
    when: tuple[Literal["warning", "critical", "unknown"], ...] = Field(
        ("critical",), min_length=1, description="statuses that trigger the action")
    after: int = Field(1, ge=1, le=1000, description="consecutive results with one of those statuses first")
    sustained: Duration = Field(0.0, alias="for", description="…and the bad status has held this long")
    window: Annotated[str, AfterValidator(_window)] | None = Field(
        None, description="act only inside this local-time window, e.g. 'sun 02:00-04:00' or 'mon..fri 22:00-06:00'")


class CheckOptions(BaseModel):
    """Fields every check accepts; each type adds its own (and `type: Literal[...]`)."""

    # defer_build: a type's validator is built the first time a config uses it, so a host
    # pays (in memory) only for the check types it runs, not for all 20+
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True, defer_build=True)

    name: Name
    type: str
    description: str = ""
    enabled: bool = True
    every: PositiveDuration | None = Field(None, description="run at this interval, e.g. 15s")
    schedule: str | None = Field(
        None, description="a name from `schedules:` (daily, weekly, …) or a calendar spec such as 'sun 02:30'")
    timeout: PositiveDuration | None = Field(None, description="default: agent.check_timeout")
    jitter: Duration = Field(0.0, description="spread calendar runs by up to this much (stable per host)")
    sustained: Duration = Field(
        0.0, alias="for", description="a threshold breach turns WARNING/CRITICAL only after holding this long")
    severity: Severity = Field(
        "P2", description="incident level, P0 the most severe: labels alerts and notifications of this check")
    actions: tuple[ActionBinding, ...] = Field((), description="corrective actions and notifications to run")


class RatioThresholds(BaseModel):
    model_config = ConfigDict(defer_build=True)
    warning: Ratio | None = None
    critical: Ratio | None = None


class DurationThresholds(BaseModel):
    model_config = ConfigDict(defer_build=True)
    warning: Duration | None = None
    critical: Duration | None = None


class SizeThresholds(BaseModel):
    model_config = ConfigDict(defer_build=True)
    warning: Size | None = None
    critical: Size | None = None


class CountThresholds(BaseModel):
    model_config = ConfigDict(defer_build=True)
    warning: Count | None = None
    critical: Count | None = None


@dataclass(frozen=True)
class MetricSpec:
    """One exported metric: `maint_<prefix>_<name>` with labels `check` + `labels`."""

    name: str
    unit: Literal["ratio", "seconds", "bytes", "count", "boolean", "info"]
    help: str
    labels: tuple[str, ...] = ()


@dataclass(frozen=True)
class Threshold:
    """Which samples the config's warning/critical apply to, and which side is bad."""

    metrics: tuple[str, ...]
    unit: str
    bad_when: Literal["above", "below"] = "above"


@dataclass(frozen=True)
class CheckContext:
    """What a run may use from the outside world; injected so tests can replace it. Frozen: the runner shares
    one context among concurrent runs with the same timeout and zone."""

    timeout: float
    wall: Callable[[], float] = time.time
    monotonic: Callable[[], float] = time.monotonic
    hostname: str = field(default_factory=socket.gethostname)
    state_dir: Path | None = None   # the agent's state directory (baselines a check keeps between runs)
    keep_state: bool = True         # False for a one-off `maint-agent check NAME`: read state, never move it
    store: Path | None = None       # the agent's store, to read what others recorded there (heartbeat signals)
    tz: tzinfo | None = None        # the agent's zone for local wall times (agent.timezone); None: UTC

    def remaining(self, started: float) -> float:
        """Seconds left of the run's timeout, for I/O that takes its own timeout."""
        return max(0.0, self.timeout - (self.monotonic() - started))


class Check:
    """Base class. A subclass sets TYPE, Options, METRICS, THRESHOLD and implements run()."""

    TYPE: ClassVar[str]
    Options: ClassVar[type[CheckOptions]]
    METRIC_PREFIX: ClassVar[str | None] = None
    METRICS: ClassVar[tuple[MetricSpec, ...]] = ()
    THRESHOLD: ClassVar[Threshold | None] = None
    WATCHES_SCHEDULE: ClassVar[bool] = False
    """True when `schedule:` is the calendar of what the check watches (a job's cron time), not when the check
    runs: it then runs `every` (default agent.default_interval), and when its result says so (`recheck_at`)."""
    EXAMPLE: ClassVar[str] = ""
    """A short `checks:` entry in YAML (indented as convenient): docs/config-reference.md shows it under the type
    and tests/test_type_examples.py validates it, so the example an operator copies always works."""

    def __init__(self, options: CheckOptions):
        self.options = options

    @classmethod
    def metric_prefix(cls) -> str:
        return cls.METRIC_PREFIX or cls.TYPE

    @classmethod
    def metric_spec(cls, name: str) -> MetricSpec | None:
        return next((m for m in cls.METRICS if m.name == name), None)

    def threshold_samples(self, result: CheckResult) -> list[Sample]:
        """The samples the configured warning/critical are compared with."""
        if self.THRESHOLD is None:
            return []
        return [s for s in result.samples if s.name in self.THRESHOLD.metrics]

    def run(self, ctx: CheckContext) -> CheckResult:
        raise NotImplementedError

    def startup(self, state_dir: Path | None) -> None:
        """Called once when the agent starts, before the first run: undo what a killed agent left behind (a
        restore test's scratch cluster). Most checks leave nothing."""
