"""The runner keeps fast checks on time beside hung, raising and chatty ones (real threads, real clock).

These checks are test doubles of the Check interface defined here, since no
production check type sleeps forever or raises on purpose.
"""

import threading
import time
from typing import Literal

from agent.config.triggers import Interval
from agent.job import Job
from agent.plugin.result import CheckResult, Status, sample
from agent.runner import Runner
from checks.base import Check, CheckOptions
from tests.conftest import wait_for


class _Opts(CheckOptions):
    type: Literal["test"] = "test"


class FastCheck(Check):
    TYPE = "test"
    Options = _Opts

    def run(self, ctx):
        return CheckResult.ok("fast", [sample("x", 1)])


class HungCheck(FastCheck):
    release = threading.Event()

    def run(self, ctx):
        self.release.wait()          # sleeps "forever" (until the test ends)
        return CheckResult.ok("woke up")


class RaisingCheck(FastCheck):
    def run(self, ctx):
        raise ZeroDivisionError("division by zero in probe")


class HugeCheck(FastCheck):
    def run(self, ctx):
        return CheckResult.ok("x" * 5_000_000, [sample(f"s{i}", i) for i in range(50)])


def job(cls, name, timeout=0.5):
    return Job(cls(_Opts(name=name)), Interval(0.1), timeout)


class Collector:
    def __init__(self):
        self.results = []
        self.lock = threading.Lock()

    def __call__(self, job, result, started, duration, scheduled):
        with self.lock:
            self.results.append((job.name, result, started, duration, scheduled))

    def of(self, name):
        with self.lock:
            return [r for r in self.results if r[0] == name]


def drive(runner, jobs, seconds, every=0.1):
    """A miniature scheduler loop: request every job each `every` seconds, pump in between."""
    end = time.monotonic() + seconds
    next_round = 0.0
    while time.monotonic() < end:
        now = time.monotonic()
        if now >= next_round:
            for j in jobs:
                runner.request(j, time.time())
            next_round = now + every
        runner.pump()
        time.sleep(0.005)


def test_runner_hung_raising_huge_beside_fast_fast_stays_on_time():
    out = Collector()
    runner = Runner(2, out)
    fast, hung, raising, huge = (job(FastCheck, "fast"), job(HungCheck, "hung"),
                                 job(RaisingCheck, "raising"), job(HugeCheck, "huge"))
    try:
        drive(runner, [fast, hung, raising, huge], seconds=2.0)
        fast_runs = out.of("fast")
        # 2 s at one request per 100 ms: ~20 slots; a fast check delayed by the hung one would get ~4
        assert len(fast_runs) >= 15
        lags = [started - scheduled for _, _, started, _, scheduled in fast_runs]
        assert max(lags) < 0.2
        hung_runs = out.of("hung")
        assert len(hung_runs) == 1, "a hung check never overlaps itself"
        assert hung_runs[0][1].status is Status.UNKNOWN and "timed out after" in hung_runs[0][1].summary
        assert hung.skipped >= 10, "each due run while hung is counted as skipped"
        assert runner.abandoned == 1
        raised = out.of("raising")
        assert raised and all(r[1].status is Status.UNKNOWN for r in raised)
        assert "ZeroDivisionError: division by zero in probe" in raised[0][1].summary
        assert out.of("huge") and out.of("huge")[0][1].status is Status.OK
    finally:
        HungCheck.release.set()


def test_runner_abandoned_check_finishes_late_result_discarded_and_runs_again():
    out = Collector()
    gate = threading.Event()

    class SlowOnce(FastCheck):
        calls = 0

        def run(self, ctx):
            SlowOnce.calls += 1
            if SlowOnce.calls == 1:
                gate.wait(5)
                return CheckResult.ok("late")
            return CheckResult.ok("second")

    runner = Runner(1, out)
    slow = job(SlowOnce, "slow", timeout=0.2)
    runner.request(slow, time.time())
    wait_for(lambda: runner.pump() is None or out.of("slow"), 5, what="the timeout result")
    assert out.of("slow")[0][1].status is Status.UNKNOWN
    assert not runner.request(slow, time.time()), "still in flight while the abandoned thread lives"
    gate.set()
    wait_for(lambda: not slow.in_flight, 5, what="the abandoned thread to end")
    assert runner.request(slow, time.time())
    wait_for(lambda: (runner.pump(), len(out.of("slow")) == 2)[1], 5, what="the second run")
    summaries = [r[1].summary for r in out.of("slow")]
    assert "late" not in summaries and summaries[1] == "second"


def test_runner_pool_bound_limits_concurrency():
    out = Collector()
    active, peak = [0], [0]
    lock = threading.Lock()

    class Counting(FastCheck):
        def run(self, ctx):
            with lock:
                active[0] += 1
                peak[0] = max(peak[0], active[0])
            time.sleep(0.05)
            with lock:
                active[0] -= 1
            return CheckResult.ok("done")

    runner = Runner(3, out)
    jobs = [job(Counting, f"c{i}") for i in range(10)]
    for j in jobs:
        runner.request(j, time.time())
    wait_for(lambda: (runner.pump(), len(out.results) == 10)[1], 10, what="all ten runs")
    assert peak[0] == 3


def test_runner_non_result_return_becomes_unknown():
    class Bad(FastCheck):
        def run(self, ctx):
            return {"status": "ok"}

    out = Collector()
    runner = Runner(1, out)
    runner.request(job(Bad, "bad"), time.time())
    wait_for(lambda: (runner.pump(), out.results)[1], 5)
    assert out.results[0][1].status is Status.UNKNOWN and "not a CheckResult" in out.results[0][1].summary


class Gauge:
    """How many runs are inside `run` at once, and the most there ever were."""

    def __init__(self):
        self.lock = threading.Lock()
        self.active = self.peak = 0

    def __enter__(self):
        with self.lock:
            self.active += 1
            self.peak = max(self.peak, self.active)

    def __exit__(self, *exc):
        with self.lock:
            self.active -= 1


def test_runner_after_hung_checks_pool_still_runs_others_at_full_width(monkeypatch):
    monkeypatch.setattr("agent.runner.DEADLINE_GRACE", 0.05)
    gauge, release = Gauge(), threading.Event()

    class Hangs(FastCheck):
        def run(self, ctx):
            release.wait(30)
            return CheckResult.ok("woke up")

    class Busy(FastCheck):
        def run(self, ctx):
            with gauge:
                time.sleep(0.2)
            return CheckResult.ok("done")

    out = Collector()
    runner = Runner(3, out)
    hung = [job(Hangs, f"hung{i}", timeout=0.1) for i in range(5)]   # more hung checks than workers
    try:
        for j in hung:
            runner.request(j, time.time())
        wait_for(lambda: (runner.pump(), runner.abandoned == 5)[1], 10, what="every hung run abandoned")
        busy = [job(Busy, f"busy{i}") for i in range(6)]
        started = time.monotonic()
        for j in busy:
            runner.request(j, time.time())
        wait_for(lambda: (runner.pump(), all(out.of(j.name) for j in busy))[1], 10, what="the six busy runs")
        assert gauge.peak == 3, "five stuck threads, yet three runs at once: each was replaced"
        assert time.monotonic() - started < 1.0, "six 0.2 s runs on three workers take two rounds, not six"
        assert all(out.of(j.name)[0][1].status is Status.OK for j in busy)
        assert all(out.of(j.name)[0][1].status is Status.UNKNOWN for j in hung)
    finally:
        release.set()
    wait_for(lambda: not any(j.in_flight for j in hung), 5, what="the hung threads to end")
    assert all(len(out.of(j.name)) == 1 for j in hung), "late results are discarded"


def test_runner_reuses_its_workers_instead_of_a_thread_per_run():
    seen = []

    class Records(FastCheck):
        def run(self, ctx):
            seen.append(threading.current_thread())   # kept alive: a thread object is never reused
            return CheckResult.ok("done")

    out = Collector()
    runner = Runner(2, out)
    jobs = [job(Records, f"r{i}") for i in range(10)]
    for _ in range(5):
        for j in jobs:
            runner.request(j, time.time())
        wait_for(lambda: not any(j.in_flight for j in jobs), 5, what="a round of runs")
    assert len(out.results) == 50
    assert len(set(seen)) <= 2
    runner.close()
    wait_for(lambda: not any(t.is_alive() for t in set(seen)), 5, what="the workers to end after close()")


def test_runner_burst_of_quick_checks_is_worked_through_by_one_worker():
    """Checks whose last run was quick (a stat) share one woken worker instead of four taking turns at
    the interpreter lock; the first round, whose durations are unknown yet, may use them all."""
    seen = []

    class Records(FastCheck):
        def run(self, ctx):
            seen.append(threading.current_thread())
            time.sleep(0.001)   # lets go of the interpreter lock, as a stat does
            return CheckResult.ok("done")

    runner = Runner(4, Collector())
    jobs = [job(Records, f"r{i}") for i in range(12)]   # ~15 ms of work, well within STALL_SECONDS
    for round_ in range(3):
        seen.clear()
        assert all(runner.request_many([(j, time.time(), None) for j in jobs]))
        wait_for(lambda: not any(j.in_flight for j in jobs), 5, what="a round of runs")
        if round_:
            assert len(set(seen)) == 1, f"round {round_} ran on {len(set(seen))} workers"
    runner.close()


def test_runner_quick_check_that_hangs_holds_the_queue_at_most_a_stall(monkeypatch):
    """A check that was quick hangs on its next run (a stat on a dead NFS mount) in the one worker its
    round was given: the scheduler loop's pump wakes another for the runs queued behind it within
    STALL_SECONDS, long before the hung run's deadline frees anything."""
    from agent.runner import STALL_SECONDS
    hang = threading.Event()
    release = threading.Event()

    class SometimesHangs(FastCheck):
        def run(self, ctx):
            if hang.is_set():
                release.wait(30)
            return CheckResult.ok("done")

    out = Collector()
    runner = Runner(3, out)
    first = job(SometimesHangs, "nfs", timeout=5.0)
    others = [job(FastCheck, f"f{i}") for i in range(5)]
    try:
        runner.request_many([(j, time.time(), None) for j in [first, *others]])
        wait_for(lambda: not any(j.in_flight for j in [first, *others]), 5, what="the first round")
        assert first.quick and all(j.quick for j in others)
        hang.set()
        queued = time.time()
        runner.request_many([(j, queued, None) for j in [first, *others]])
        wait_for(lambda: (runner.pump(), all(len(out.of(j.name)) == 2 for j in others))[1], 3,
                 what="the runs queued behind the hung one")
        lags = [out.of(j.name)[1][2] - queued for j in others]
        assert max(lags) < STALL_SECONDS + 0.5, lags
        assert first.in_flight and runner.abandoned == 0
    finally:
        release.set()
        runner.close()


def test_runner_quick_checks_one_worker_cannot_keep_up_with_get_more_workers():
    """Sixty 5 ms runs (quick, but 0.3 s on one worker): once the oldest queued run has waited
    STALL_SECONDS, the worker taking the next run wakes another, without the scheduler loop's help."""
    seen = set()

    class Takes5ms(FastCheck):
        def run(self, ctx):
            seen.add(threading.current_thread())
            time.sleep(0.005)
            return CheckResult.ok("done")

    runner = Runner(4, Collector())
    jobs = [job(Takes5ms, f"t{i}") for i in range(60)]
    for _ in range(2):
        seen.clear()
        runner.request_many([(j, time.time(), None) for j in jobs])
        wait_for(lambda: not any(j.in_flight for j in jobs), 5, what="a round of runs")
    assert all(j.quick for j in jobs)
    assert len(seen) > 1, "a backlog of quick runs stays on one worker"
    runner.close()
