"""A configured check as the daemon runs it: the check, its trigger and its live state."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from agent.config.triggers import Trigger
from agent.evaluate import WindowState
from agent.plugin.result import Evaluated
from checks.base import Check, CheckOptions


@dataclass(eq=False)
class Job:
    check: Check
    trigger: Trigger
    timeout: float
    next_due: float = 0.0            # wall epoch seconds, jitter included
    next_fire: float | None = None   # calendar checks: the slot itself, without jitter
    in_flight: bool = False          # queued or running (a hung, abandoned run keeps it set)
    skipped: int = 0                 # due while still in flight
    skipping: bool = False           # the current in-flight episode has already been logged
    quick: bool = False              # the last run finished within runner.QUICK_SECONDS: shares a worker
    runs: Counter = field(default_factory=Counter)   # status label → count
    window: WindowState = field(default_factory=WindowState)
    latest: Evaluated | None = None
    lag: float = 0.0                 # last run's start minus its due time
    recheck_at: float | None = None  # the latest result asked to be run again then (a heartbeat's deadline)

    @property
    def name(self) -> str:
        return self.check.options.name

    @property
    def options(self) -> CheckOptions:
        return self.check.options
