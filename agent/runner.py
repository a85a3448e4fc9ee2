"""Runs checks in a bounded pool of threads with a per-check timeout.

A check that overruns its timeout is reported UNKNOWN at the deadline and its
thread is abandoned: the slot is freed so other checks keep their schedule, and
the check itself is not started again while that thread lives (no overlap;
each skipped run is counted). Python cannot kill a thread, so checks that do
I/O pass their own timeouts to it (sockets, subprocesses) and rarely get here.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass
from datetime import tzinfo
from pathlib import Path
from typing import Callable

from agent import children, logs
from agent.faults import agent_fault
from agent.job import Job
from agent.result import CheckResult
from agent.units import format_duration
from checks.base import CheckContext

Deliver = Callable[[Job, CheckResult, float, float, float], None]   # job, result, started, duration, scheduled
Started = Callable[[Job, float], None]                                # job, calendar slot being run
DEADLINE_GRACE = 1.0   # let a check's own timeout (killing a plugin) report first


@dataclass(eq=False)
class _Run:
    job: Job
    scheduled: float
    fired: float | None = None  # the calendar slot this run serves
    started_wall: float = 0.0
    started_mono: float = 0.0
    deadline: float = 0.0
    done: bool = False          # delivered (finished or timed out)
    abandoned: bool = False


class Runner:
    def __init__(self, workers: int, deliver: Deliver, wake: Callable[[], None] = lambda: None,
                 wall: Callable[[], float] = time.time, monotonic: Callable[[], float] = time.monotonic,
                 started: Started = lambda job, fired: None, state_dir: Path | None = None,
                 keep_state: bool = True, store: Path | None = None, tz: tzinfo | None = None):
        self.workers = workers
        self.state_dir, self.keep_state = state_dir, keep_state
        self.store, self.tz = store, tz   # what checks read besides the host (heartbeat signals, local time)
        self._deliver = deliver
        self._started = started
        self._wake = wake
        self._wall, self._monotonic = wall, monotonic
        self._lock = threading.Lock()
        self._queue: deque[_Run] = deque()
        self._running: list[_Run] = []
        self.abandoned = 0

    def request(self, job: Job, scheduled: float, fired: float | None = None) -> bool:
        """Queue a run; return False (and count a skip) when the check is still in flight.

        `fired` (a calendar slot) is reported to `started` when the run actually begins, so a
        run queued behind busy workers and dropped at shutdown is not recorded as done.
        """
        with self._lock:
            if job.in_flight:
                job.skipped += 1
                if not job.skipping:   # one line per episode, not one per interval
                    job.skipping = True
                    logs.event("check.skipping", "warning", check=job.name, reason="previous run still in flight")
                return False
            job.in_flight = True
            self._queue.append(_Run(job, scheduled, fired))
            return True

    def pump(self) -> float | None:
        """Start queued runs while slots are free and time out overrunning ones; return seconds to the next deadline."""
        now = self._monotonic()
        expired, starting = [], []
        with self._lock:
            for run in self._running:
                if not run.done and now >= run.deadline:
                    run.done = run.abandoned = True
                    expired.append(run)
            self._running = [r for r in self._running if not r.done]
            while self._queue and len(self._running) < self.workers:
                run = self._queue.popleft()
                run.started_wall, run.started_mono = self._wall(), self._monotonic()
                run.deadline = run.started_mono + run.job.timeout + DEADLINE_GRACE
                self._running.append(run)
                starting.append(run)
                threading.Thread(target=self._execute, args=(run,), name=f"check-{run.job.name}",
                                 daemon=True).start()
            next_deadline = min((r.deadline for r in self._running), default=None)
        for run in starting:
            if run.fired is not None:
                self._started(run.job, run.fired)
        for run in expired:
            self.abandoned += 1
            logs.event("check.timeout", "warning", check=run.job.name, timeout=f"{run.job.timeout:g}s")
            result = CheckResult.unknown(f"timed out after {format_duration(run.job.timeout)}")
            self._deliver(run.job, result, run.started_wall, now - run.started_mono, run.scheduled)
        return None if next_deadline is None else max(0.0, next_deadline - now)

    def _execute(self, run: _Run) -> None:
        job = run.job
        ctx = CheckContext(timeout=job.timeout, wall=self._wall, monotonic=self._monotonic, state_dir=self.state_dir,
                           keep_state=self.keep_state, store=self.store, tz=self.tz)
        try:
            with children.owner("check", job.name):
                result = job.check.run(ctx)
            if not isinstance(result, CheckResult):
                result = CheckResult.unknown(f"check returned {type(result).__name__}, not a CheckResult")
        except Exception as exc:  # the one place a check's failure is turned into a result
            fault = agent_fault(exc)   # the agent's own shortage (EMFILE…): UNKNOWN, marked, never the target's
            result = fault.result() if fault else CheckResult.unknown(
                f"check failed: {type(exc).__name__}: {exc}"[:500])
        duration = self._monotonic() - run.started_mono
        with self._lock:
            job.in_flight = job.skipping = False
            late = run.done
            run.done = True
        if late:
            logs.event("check.late_result_discarded", "warning", check=job.name,
                       duration=format_duration(duration))
        else:
            self._deliver(job, result, run.started_wall, duration, run.scheduled)
        self._wake()

    def idle(self) -> bool:
        with self._lock:
            return not self._queue and not any(not r.done for r in self._running)

    def drop_queued(self) -> None:
        """Forget runs not yet started (shutdown): they never began, so nothing is lost."""
        with self._lock:
            for run in self._queue:
                run.job.in_flight = False
            self._queue.clear()

    @property
    def busy(self) -> int:
        with self._lock:
            return sum(not r.done for r in self._running)
