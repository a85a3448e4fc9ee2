"""Runs checks on a persistent, bounded pool of worker threads with a per-check timeout.

A check that overruns its timeout is reported UNKNOWN at the deadline and its
thread is abandoned: it no longer counts as a worker, and the pool starts a new
one when there is work for it, so the pool never loses capacity and other
checks keep their schedule. The check itself is not started again while that
thread lives (no overlap; each skipped run is counted). Python cannot kill a
thread, so checks that do I/O pass their own timeouts to it (sockets,
subprocesses) and rarely get here. Workers are started on demand up to
`workers` and then kept: a run costs a queue hand-off, not a thread start.

A worker that finishes a run takes the next queued one without sleeping. Runs of
checks that last finished within QUICK_SECONDS (a stat, a read of /proc) are
handed one worker per request, not one each: a burst of 1,000 of them is worked
through by one thread instead of four taking turns at the interpreter lock. When
the oldest queued run has waited STALL_SECONDS (the awake workers are stuck in a
check that hung, or cannot keep up), another worker joins, at most one per
STALL_SECONDS: a worker taking a run looks, and so does `pump` for when none does.
"""

from __future__ import annotations

import socket
import threading
import time
from collections import deque
from dataclasses import dataclass
from datetime import tzinfo
from pathlib import Path
from typing import Callable

from agent.plugin import children, logs
from agent.plugin.faults import agent_fault
from agent.job import Job
from agent.plugin.result import CheckResult
from agent.plugin.units import format_duration
from checks.base import CheckContext

Deliver = Callable[[Job, CheckResult, float, float, float], None]   # job, result, started, duration, scheduled
Started = Callable[[Job, float], None]                                # job, calendar slot being run
DEADLINE_GRACE = 1.0   # let a check's own timeout (killing a plugin) report first
NO_DEADLINE = float("inf")
QUICK_SECONDS = 0.01   # a run that took less (twice the interpreter's thread switch interval) was quick
STALL_SECONDS = 0.05   # a queued run waiting this long gets another worker


@dataclass(eq=False)
class _Run:
    job: Job
    scheduled: float
    fired: float | None = None  # the calendar slot this run serves
    queued: float = 0.0         # monotonic time it was requested
    started_wall: float = 0.0
    started_mono: float = 0.0
    deadline: float = 0.0
    done: bool = False          # delivered (finished or timed out)
    abandoned: bool = False


class Runner:
    """`request` queues a run, a worker runs it and hands the result to `deliver`; `pump` (the scheduler
    loop) times out overrunning runs. `wake` is called when a worker starts a run whose deadline is
    earlier than the one `pump` last returned, so the loop never sleeps past a deadline."""

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
        self._hostname = socket.gethostname()   # once, not a uname() per run
        self._contexts: dict[tuple, CheckContext] = {}
        self._lock = threading.Lock()
        self._work = threading.Condition(self._lock)
        self._queue: deque[_Run] = deque()
        self._running: set[_Run] = set()
        self._threads = 0             # workers not stuck in an abandoned run
        self._idle = 0                # of those, waiting for work and not yet notified
        self._spawned = 0             # workers ever started (their thread names)
        self._next_deadline = NO_DEADLINE
        self._grown_at = 0.0           # monotonic time the last worker joined for a stalled queue
        self._closed = False
        self.abandoned = 0

    def request(self, job: Job, scheduled: float, fired: float | None = None) -> bool:
        """Queue a run; return False (and count a skip) when the check is still in flight.

        `fired` (a calendar slot) is reported to `started` when the run actually begins, so a
        run queued behind busy workers and dropped at shutdown is not recorded as done.
        """
        return self.request_many([(job, scheduled, fired)])[0]

    def request_many(self, runs: list[tuple[Job, float, float | None]]) -> list[bool]:
        """`request` for every (job, scheduled, fired) of a tick under one lock: workers start on the
        batch once it is queued instead of contending with the scheduler loop for each run."""
        queued = []
        slow = quick = 0
        now = self._monotonic()
        with self._lock:
            for job, scheduled, fired in runs:
                if job.in_flight:
                    job.skipped += 1
                    if not job.skipping:   # one line per episode, not one per interval
                        job.skipping = True
                        logs.event("check.skipping", "warning", check=job.name,
                                   reason="previous run still in flight")
                    queued.append(False)
                    continue
                job.in_flight = True
                self._queue.append(_Run(job, scheduled, fired, now))
                queued.append(True)
                if job.quick:
                    quick = 1
                else:
                    slow += 1
            for _ in range(min(slow + quick, self.workers)):
                self._hand_out()
        return queued

    def _hand_out(self) -> None:
        """Under the lock: a worker for the newest queued run — an idle one, or a new one below `workers`."""
        if self._idle:
            self._idle -= 1
            self._work.notify()
        elif self._threads < self.workers and not self._closed:
            self._threads += 1
            self._spawned += 1
            threading.Thread(target=self._worker, name=f"check-worker-{self._spawned}", daemon=True).start()

    def _spare(self) -> bool:
        """Under the lock: whether `_hand_out` would find a worker (an idle one, or room for a new one)."""
        return bool(self._idle) or (self._threads < self.workers and not self._closed)

    def _stalled(self, now: float) -> bool:
        """Under the lock: the oldest queued run has waited STALL_SECONDS (and as long since a worker last
        joined for it) while a worker is spare."""
        return (bool(self._queue) and now - max(self._queue[0].queued, self._grown_at) >= STALL_SECONDS
                and self._spare())

    def _grow(self, now: float) -> None:
        self._grown_at = now
        self._hand_out()

    def _worker(self) -> None:
        while True:
            with self._lock:
                while not self._queue:
                    if self._closed:
                        self._threads -= 1
                        return
                    self._idle += 1
                    self._work.wait()
                run = self._queue.popleft()
                run.started_wall, run.started_mono = self._wall(), self._monotonic()
                if self._stalled(run.started_mono):
                    self._grow(run.started_mono)
                run.deadline = run.started_mono + run.job.timeout + DEADLINE_GRACE
                self._running.add(run)
                earlier = run.deadline < self._next_deadline
                if earlier:
                    self._next_deadline = run.deadline
            if earlier:
                self._wake()
            if run.fired is not None:
                self._started(run.job, run.fired)
            try:
                keep = self._execute(run)
            except Exception as exc:  # a failing `deliver` must not cost the pool a worker
                logs.event("runner.deliver_failed", "error", check=run.job.name, error=f"{type(exc).__name__}: {exc}")
                keep = True
            if not keep:
                return   # abandoned: a new worker has taken this one's place

    def pump(self) -> float | None:
        """Time out overrunning runs and wake a spare worker for a stalled queue; return seconds until pump is
        needed again: the next deadline or stall check (None when nothing is queued or running)."""
        now = self._monotonic()
        with self._lock:
            expired = [run for run in self._running if now >= run.deadline]
            for run in expired:
                run.done = run.abandoned = True
                self._running.discard(run)
                self._threads -= 1          # its thread is stuck in the check: no longer a worker
                run.job.quick = False
            for _ in range(min(len(expired), len(self._queue))):
                self._hand_out()            # …and queued runs get a new one
            if self._stalled(now):          # no worker took a run for a while: the awake ones are stuck
                self._grow(now)
            self._next_deadline = min((r.deadline for r in self._running), default=NO_DEADLINE)
            next_deadline = self._next_deadline
            if self._queue:                 # about to start: no deadline earlier than the grace from now
                next_deadline = min(next_deadline, now + DEADLINE_GRACE)
                if self._spare():           # …nor than a stall a spare worker would end
                    next_deadline = min(next_deadline, max(self._queue[0].queued, self._grown_at) + STALL_SECONDS)
        for run in expired:
            self.abandoned += 1
            logs.event("check.timeout", "warning", check=run.job.name, timeout=f"{run.job.timeout:g}s")
            result = CheckResult.unknown(f"timed out after {format_duration(run.job.timeout)}")
            self._deliver(run.job, result, run.started_wall, now - run.started_mono, run.scheduled)
        return None if next_deadline == NO_DEADLINE else max(0.0, next_deadline - now)

    def _execute(self, run: _Run) -> bool:
        """Run the check and deliver its result; False when the run had been abandoned meanwhile."""
        job = run.job
        try:
            with children.owner("check", job.name):
                result = job.check.run(self._context(job.timeout))
            if not isinstance(result, CheckResult):
                result = CheckResult.unknown(f"check returned {type(result).__name__}, not a CheckResult")
        except Exception as exc:  # the one place a check's failure is turned into a result
            fault = agent_fault(exc)   # the agent's own shortage (EMFILE…): UNKNOWN, marked, never the target's
            result = fault.result() if fault else CheckResult.unknown(
                f"check failed: {type(exc).__name__}: {exc}"[:500])
        duration = self._monotonic() - run.started_mono
        with self._lock:
            job.in_flight = job.skipping = False
            job.quick = duration < QUICK_SECONDS
            late = run.done
            run.done = True
            self._running.discard(run)
        if late:
            logs.event("check.late_result_discarded", "warning", check=job.name,
                       duration=format_duration(duration))
        else:
            self._deliver(job, result, run.started_wall, duration, run.scheduled)
        return not late

    def _context(self, timeout: float) -> CheckContext:
        """The context of a run: one per timeout and zone (a reload may change it), not one per run; checks
        read it and never change it."""
        key = (timeout, self.tz)
        ctx = self._contexts.get(key)
        if ctx is None:
            ctx = self._contexts[key] = CheckContext(
                timeout=timeout, wall=self._wall, monotonic=self._monotonic, hostname=self._hostname,
                state_dir=self.state_dir, keep_state=self.keep_state, store=self.store, tz=self.tz)
        return ctx

    def idle(self) -> bool:
        with self._lock:
            return not self._queue and not self._running

    def drop_queued(self) -> None:
        """Forget runs not yet started (shutdown): they never began, so nothing is lost."""
        with self._lock:
            for run in self._queue:
                run.job.in_flight = False
            self._queue.clear()

    def close(self) -> None:
        """Let idle workers end (shutdown); a worker busy with a run ends after it."""
        with self._lock:
            self._closed = True
            self._idle = 0
            self._work.notify_all()

    @property
    def busy(self) -> int:
        with self._lock:
            return len(self._running)
