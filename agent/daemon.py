"""The daemon: scheduler loop, result sink, signals, reload, sd_notify.

Threads: the main loop (due checks, timeouts, watchdog, signals), the runner's
pool of check workers, the sink (evaluate → store → metrics; the store's only
writer) and the HTTP server. Signals only set flags; the loop acts on them.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections import deque

from agent import __version__, logs
from agent.calendar import CalendarSpec, parse_calendar
from agent.config import Calendar, Interval, LoadedConfig, load_config
from agent.evaluate import WindowState, evaluate
from agent.job import Job
from agent.metrics import AgentState, Exposition, MetricsServer
from agent.address import split_target
from agent.result import SUMMARY_CAP_CHARS, CheckResult, Evaluated, Status
from agent.remediation import Remediator
from agent.runner import Runner
from agent.tasks import Task, Tasks
from agent.scheduler import DueQueue, clamp_to_clock, jitter_key_for, plan_next, plan_start
from agent.redact import REDACT, redact_tree
from agent.sdnotify import notify, watchdog_interval
from agent.store import Store
from agent.yamlsrc import ConfigError
from checks import CHECK_TYPES

MAX_TICK_SECONDS = 1.0
STATUS_EVERY_SECONDS = 1.0   # the STATUS= line (a count over every check) is refreshed at most this often
MAX_PENDING_RUNS = 10000
STORE_MAINTENANCE = "_store_maintenance"
OUTBOX_EVERY_SECONDS = 60.0
SINK_BATCH_SECONDS = 0.25
SINK_POLL_SECONDS = 0.02   # how often a gathering sink looks whether the runner went idle


class Daemon:
    def __init__(self, loaded: LoadedConfig, dry_run: bool = False):
        self.loaded = loaded
        self.dry_run = dry_run
        self.store = Store(loaded.db_path, migrate_in_child=True)
        self.state = AgentState(__version__, loaded.config.agent.workers)
        self.remediator = Remediator(self.store, self.state, self._request_verification, self._safely,
                                     loaded.config.agent.hostname)
        self.exposition = Exposition(self.state)
        self._wake = threading.Event()
        self._results: deque = deque()            # results for the sink; None asks it to finish
        self._results_posted = threading.Event()  # set when the sink may have something to take
        self._pending: list[Evaluated] = []
        self.runner = Runner(loaded.config.agent.workers, self._deliver, self._wake.set, started=self._mark_fired,
                             state_dir=loaded.db_path.parent)
        self._unmarked: dict[str, float] = {}   # calendar slots whose mark_fired write failed: retried
        self._unmarked_lock = threading.Lock()
        self.jobs: dict[str, Job] = {}
        self._due: DueQueue[Job] = DueQueue()
        self._last_now = 0.0
        self.tz = loaded.tz
        self._stop = threading.Event()
        self._reload = False
        self._heartbeat = time.monotonic()
        self._sink_thread = threading.Thread(target=self._sink, name="sink", daemon=True)
        self.tasks = Tasks(self._mark_slot)
        self.server: MetricsServer | None = None

    # -- lifecycle -------------------------------------------------------------------------------------

    def run(self) -> int:
        cfg = self.loaded.config
        self._install_signals()
        self._apply(self.loaded, first=True)
        _warn_exposed_files(self.loaded)
        host, port = split_target(cfg.http.listen)
        auth = cfg.http.basic_auth
        self.server = MetricsServer((host, port), self.exposition, self._health,
                                    (auth.username, auth.password.reveal()) if auth else None,
                                    web_config=cfg.http.web_config, healthz_auth=cfg.http.healthz_auth)
        self.server.serve_in_thread()
        self._sink_thread.start()
        self.exposition.refresh()
        self._log(f"agent started (version {__version__}, {len(self.jobs)} checks)")
        logs.event("agent.started", version=__version__, checks=len(self.jobs), listen=cfg.http.listen,
                   store=str(self.loaded.db_path), pid=os.getpid())
        notify("READY=1", f"STATUS={self._status_line()}", f"MAINPID={os.getpid()}")
        _release_startup_memory()
        try:
            self._loop()
        finally:
            self._shutdown()
        return 0

    def _install_signals(self) -> None:
        signal.signal(signal.SIGTERM, lambda *_: self.stop())
        signal.signal(signal.SIGINT, lambda *_: self.stop())
        signal.signal(signal.SIGHUP, lambda *_: self._request_reload())

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()

    def _request_reload(self) -> None:
        self._reload = True
        self._wake.set()

    def _loop(self) -> None:
        watchdog = watchdog_interval()
        last_ping, last_status = 0.0, self._status_line()
        status, status_at = last_status, time.monotonic()
        while not self._stop.is_set():
            _stall_for_tests()
            if self._reload:
                self._reload = False
                self._do_reload()
            now = time.time()
            if self._unmarked:
                with self._unmarked_lock:
                    retry = self._unmarked.popitem() if self._unmarked else None
                if retry:
                    self._mark_slot(*retry)
            if now < self._last_now:   # the wall clock stepped back
                self._clamp(now)
            self._last_now = now
            due = self._due.pop_due(now)
            if due:
                self._dispatch(due, now)
            tasks_in = self.tasks.run_due(now)
            verify_in = self.remediator.poll(now)
            deadline_in = self.runner.pump()
            self._heartbeat = time.monotonic()
            if self._heartbeat - status_at >= STATUS_EVERY_SECONDS:
                status, status_at = self._status_line(), self._heartbeat
            if watchdog and self._heartbeat - last_ping >= watchdog:
                notify("WATCHDOG=1", f"STATUS={status}")
                last_ping, last_status = self._heartbeat, status
            elif status != last_status:   # without a watchdog, STATUS= still follows the checks
                notify(f"STATUS={status}")
                last_status = status
            wait = min([MAX_TICK_SECONDS, max(0.0, self._due.soonest() - time.time())]
                       + ([max(0.0, last_ping + watchdog - time.monotonic())] if watchdog else [])
                       + ([deadline_in] if deadline_in is not None else [])
                       + ([verify_in] if verify_in is not None else [])
                       + ([tasks_in] if tasks_in is not None else []))
            self._wake.wait(wait)
            self._wake.clear()

    def _clamp(self, now: float) -> None:
        """After the wall clock stepped back, interval checks are due within one interval (not after the step)."""
        for job in self.jobs.values():
            job.next_due = clamp_to_clock(job.trigger, job.next_due, now)
        self._due = DueQueue(list(self.jobs.values()))

    def _shutdown(self) -> None:
        notify("STOPPING=1")
        grace = self.loaded.config.agent.shutdown_grace
        logs.event("agent.stopping", running=self.runner.busy, grace=f"{grace:g}s")
        self.runner.drop_queued()
        end = time.monotonic() + grace
        while not self.runner.idle() and time.monotonic() < end:
            self.runner.pump()
            time.sleep(0.05)
        self.runner.pump()
        self.runner.close()
        self.remediator.drain(max(0.0, end - time.monotonic()))
        self._post(None)
        self._sink_thread.join(timeout=max(5.0, grace))
        if self.server:
            self.server.shutdown()
            self.server.server_close()
        self._log("agent stopped")
        self._safely("close", self.store.close)
        logs.event("agent.stopped")

    # -- config ----------------------------------------------------------------------------------------

    def _apply(self, loaded: LoadedConfig, first: bool = False) -> None:
        """Build jobs for a (new) config; a check whose options did not change keeps its state."""
        persisted = self.store.scheduler_state()
        now = time.time()
        tz = loaded.tz   # resolved once per config: the host's zone is a realpath() of /etc/localtime
        jobs: dict[str, Job] = {}
        for options in loaded.checks:
            if not options.enabled:
                continue
            trigger = loaded.triggers[options.name]
            job = self.jobs.get(options.name)
            if job and job.options == options and job.trigger == trigger:
                jobs[options.name] = job
                continue
            check = CHECK_TYPES[options.type](options)
            if job:
                # changed options: keep the latest result, counters and in-flight flag (no gap in
                # metrics, no overlap with a run still going); thresholds may differ, so the window restarts
                job.check, job.timeout, job.window = check, loaded.timeout_for(options), WindowState()
                if job.trigger == trigger:
                    jobs[options.name] = job
                    continue
                job.trigger = trigger
            else:
                job = Job(check, trigger, loaded.timeout_for(options))
            fired, ran = persisted.get(options.name, (None, None))
            plan = plan_start(trigger, fired, ran, now, tz, jitter_key(loaded, job.name), options.jitter)
            if plan.arm:
                self._mark_fired(job, now)
            if plan.catch_up:
                logs.event("check.catch_up", check=job.name, last_fired=_iso(fired))
                self._log(f"catch-up run of {job.name}: due time missed while the agent was down",
                          check_name=job.name)
            job.next_due, job.next_fire = plan.next_due, plan.next_fire
            jobs[options.name] = job
        self.loaded, self.tz = loaded, tz
        self.jobs = jobs
        self._due = DueQueue(list(jobs.values()))
        self.state.jobs = list(jobs.values())
        self.remediator.configure(loaded, self.dry_run)
        self.tasks.configure(self._internal_tasks(loaded), persisted, now, tz)
        logs.set_level(loaded.config.agent.log_level)
        REDACT.refresh(loaded.config)

    def _do_reload(self) -> None:
        notify("RELOADING=1", f"MONOTONIC_USEC={time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000}")
        try:
            loaded = load_config(self.loaded.path)
        except ConfigError as exc:
            for issue in exc.issues:
                logs.event("config.invalid", "error", error=str(issue))
            logs.event("config.reload_failed", "error", errors=len(exc.issues), kept="previous config")
            self.state.config_ok = False
            self._log(f"config reload failed ({len(exc.issues)} errors); previous config kept")
        else:
            old_cfg, new_cfg = self.loaded.config, loaded.config
            for what, old, new in (("http", old_cfg.http, new_cfg.http), ("store", self.loaded.db_path, loaded.db_path),
                                   ("agent.workers", old_cfg.agent.workers, new_cfg.agent.workers),
                                   ("agent.hostname", old_cfg.agent.hostname, new_cfg.agent.hostname)):
                if old != new:
                    logs.event("config.needs_restart", "warning", changed=what, kept=str(old))
            self._apply(loaded)
            self.state.config_ok = True
            self.state.config_loaded_at = time.time()
            self._log(f"config reloaded ({len(self.jobs)} checks)")
            logs.event("config.reloaded", checks=len(self.jobs))
        self.exposition.refresh()
        notify("READY=1", f"STATUS={self._status_line()}")

    # -- scheduling and results ------------------------------------------------------------------------

    def _dispatch(self, jobs: list[Job], now: float) -> None:
        """Queue a run of every due check, then plan each one's next."""
        self.runner.request_many([(job, job.next_due, job.next_fire) for job in jobs])
        for job in jobs:
            plan = plan_next(job.trigger, job.next_due, job.next_fire, now, self.tz, jitter_key(self.loaded, job.name),
                             job.options.jitter)
            job.next_due, job.next_fire = plan.next_due, plan.next_fire
            self._due.push(job)
            if isinstance(job.trigger, Calendar):
                # the next-run gauge must move at dispatch: a long calendar check (a restore test) would
                # otherwise look overdue to the dead man's switch until its result arrives
                self.exposition.refresh()

    def _request_verification(self, check: str) -> bool:
        """The remediator wants a run of `check` now, to see whether an action helped."""
        job = self.jobs.get(check)
        if job is None or job.in_flight:
            return False
        return self.runner.request(job, time.time(), None)

    def _mark_fired(self, job: Job, fired: float) -> None:
        """Runner callback: a calendar run has started, so its slot is done (catch-up will not repeat it)."""
        self._mark_slot(job.name, fired)

    def _mark_slot(self, name: str, fired: float) -> None:
        """Persist a calendar slot as done; called from the loop, the tasks and the runner's workers."""
        with self._unmarked_lock:
            self._unmarked[name] = fired
            for pending, slot in list(self._unmarked.items()):
                if self._safely("mark_fired", self.store.mark_fired, pending, slot) is not False:
                    self._unmarked.pop(pending, None)

    def _safely(self, what: str, write, *args, **kwargs):
        """Run a store write from the main loop; a full or broken disk is logged and counted, never fatal.
        Returns False when the write failed."""
        try:
            return write(*args, **kwargs)
        except Exception as exc:  # sqlite3.Error, OSError: the loop must keep scheduling
            self.state.store_write_errors += 1
            logs.event("store.write_failed", "error", what=what, error=f"{type(exc).__name__}: {exc}")
            return False

    def _log(self, message: str, **fields) -> None:
        """An automatic maintenance-log entry (best effort)."""
        self._safely("maintenance_log", self.store.add_log, message, at=time.time(), **fields)

    def _deliver(self, job: Job, result: CheckResult, started: float, duration: float, scheduled: float) -> None:
        self._post((job, result, started, duration, scheduled))

    def _post(self, item) -> None:
        """Hand a result to the sink: a deque append, and a wake-up only when it is not already due."""
        self._results.append(item)
        if not self._results_posted.is_set():
            self._results_posted.set()

    def _sink(self) -> None:
        """Evaluate, store and publish results; batches what arrives together into one commit."""
        running = True
        while running:
            self._results_posted.clear()   # before looking: a result posted from here on sets it again
            if not self._results:
                self._results_posted.wait(5.0 if self._pending else None)   # pending: retry the store
            batch, running = self._gather()
            evaluated = []
            for entry in batch:
                try:
                    evaluated.append(self._evaluate(*entry))
                except Exception as exc:  # a bug in evaluation loses this one result, not the batch
                    logs.event("sink.evaluate_failed", "error", check=entry[0].name,
                               error=f"{type(exc).__name__}: {exc}")
            self._pending.extend(evaluated)
            for run in evaluated:
                try:
                    self.remediator.observe(run)
                except Exception as exc:  # a policy bug must not stop results from being stored
                    logs.event("remediation.failed", "error", check=run.check, error=f"{type(exc).__name__}: {exc}")
            try:
                self._flush()
                self.state.abandoned_runs = self.runner.abandoned
                self.exposition.refresh()
            except Exception as exc:  # a bug here must not stop every later result from being stored
                logs.event("sink.failed", "error", error=f"{type(exc).__name__}: {exc}")

    def _gather(self) -> tuple[list, bool]:
        """The results one wake-up commits: those queued, and, while the runner still has runs going
        (checks due together), those arriving within SINK_BATCH_SECONDS, so a burst is one transaction
        (a commit with synchronous=FULL costs ~0.2 ms of CPU and an fsync). Meanwhile the sink looks every
        SINK_POLL_SECONDS instead of waking for each result. Returns (batch, keep running)."""
        batch = []
        end = time.monotonic() + SINK_BATCH_SECONDS
        while True:
            while self._results:
                more = self._results.popleft()   # the sink is the only consumer
                if more is None:
                    return batch, False
                batch.append(more)
            wait = end - time.monotonic()
            if wait <= 0 or self.runner.idle():
                return batch, True
            time.sleep(min(wait, SINK_POLL_SECONDS))

    def _evaluate(self, job: Job, result: CheckResult, started: float, duration: float,
                  scheduled: float) -> Evaluated:
        verdict = evaluate(job.check, result, job.window, started + duration)
        job.window = verdict.state
        # what a check says may quote a secret (a plugin echoing its URL): redacted before the store,
        # /metrics' exposition, the logs and the reports ever see it
        run = Evaluated(job.name, job.check.TYPE, verdict.status, REDACT(verdict.summary)[:SUMMARY_CAP_CHARS * 2],
                        result.samples, redact_tree(result.details, REDACT) if result.details else result.details,
                        started, duration, scheduled, verdict.pending)
        previous = job.latest.status if job.latest else None
        job.latest = run
        job.lag = max(0.0, started - scheduled)
        job.runs[verdict.status.label] += 1
        if verdict.status is not previous:
            logs.event("check.status_changed", "info" if verdict.status is Status.OK else "warning", check=job.name,
                       status=verdict.status.label, was=previous.label if previous else None,
                       summary=verdict.summary)
        return run

    def _flush(self) -> None:
        if not self._pending:
            return
        try:
            self.store.record_runs(self._pending)
            self._pending = []
        except Exception as exc:  # disk full, I/O error: keep the results and retry
            self.state.store_write_errors += 1
            logs.event("store.write_failed", "error", error=str(exc), pending=len(self._pending))
            if len(self._pending) > MAX_PENDING_RUNS:
                dropped = len(self._pending) - MAX_PENDING_RUNS
                self._pending = self._pending[dropped:]
                logs.event("store.dropped_runs", "error", dropped=dropped)
        self.state.store_pending = len(self._pending)

    # -- the agent's own tasks ------------------------------------------------------------------------------

    def _internal_tasks(self, loaded: LoadedConfig) -> list[Task]:
        """Store maintenance, scheduled reports and their outbox, the S3 archive (see agent/tasks.py)."""
        cfg, db, tz = loaded.config, loaded.db_path, loaded.tz
        retention = cfg.store.retention

        def maintain(now: float) -> dict:
            return self.store.rollup_and_prune(now, tz, retention.raw, retention.rollups)

        tasks = [Task(STORE_MAINTENANCE, Calendar(_maintenance_spec(loaded), "store maintenance"), maintain)]
        for section in cfg.reports:
            def report(now: float, section=section) -> dict:
                from agent.reporting import deliver_pending, queue_report
                queued = queue_report(db, loaded, section, now)
                return {"report": section.name, "queued": queued, **(deliver_pending(db, loaded, now) or {})}
            from agent.reporting import report_schedule
            tasks.append(Task(f"_report:{section.name}",
                              Calendar(report_schedule(section, cfg.schedules), section.schedule_name), report))
        if cfg.reports:
            def outbox(now: float) -> dict | None:
                from agent.reporting import deliver_pending
                return deliver_pending(db, loaded, now) or None
            tasks.append(Task("_outbox", Interval(OUTBOX_EVERY_SECONDS), outbox))
        if cfg.archive is not None and getattr(cfg.archive, "enabled", True):
            def archive(now: float) -> dict:
                from agent.archive import archive_pending
                return archive_pending(db, cfg.archive, cfg.agent.hostname, tz, now)
            tasks.append(Task("_archive", Calendar(parse_calendar(getattr(cfg.archive, "at", "00:45")), "archive"),
                              archive))
        return tasks

    # -- health ----------------------------------------------------------------------------------------

    def _health(self) -> tuple[bool, str]:
        stalled = time.monotonic() - self._heartbeat
        if stalled > 10 * MAX_TICK_SECONDS:
            return False, f"scheduler loop stalled for {stalled:.0f}s"
        if self.state.store_pending:
            return False, f"{self.state.store_pending} results not yet written to the store"
        return True, "ok " + self._status_line()

    def _status_line(self) -> str:
        counts = {s: 0 for s in Status}
        for job in self.jobs.values():
            if job.latest:
                counts[job.latest.status] += 1
        bad = ", ".join(f"{n} {s.label}" for s, n in counts.items() if n and s is not Status.OK)
        return f"{len(self.jobs)} checks" + (f", {bad}" if bad else ", all ok")


def _stall_for_tests() -> None:
    """Test hook, not a feature: while the file named by $MAINT_AGENT_TEST_STALL_FILE exists the scheduler
    loop blocks, as a deadlocked loop would, so tests can watch WATCHDOG=1 stop and /healthz turn 503."""
    path = os.environ.get("MAINT_AGENT_TEST_STALL_FILE")
    while path and os.path.exists(path):
        time.sleep(0.05)


def _warn_exposed_files(loaded: LoadedConfig) -> None:
    """Loudly, at every start: the config or a secret file that others can read (`config check --strict` fails)."""
    from agent.config import exposed_files
    for problem in exposed_files(loaded):
        logs.event("config.file_exposed", "warning", file=str(problem.path), problem=problem.reason)


def _maintenance_spec(loaded: LoadedConfig) -> CalendarSpec:
    return parse_calendar(loaded.config.store.maintenance_at)


def _iso(ts: float | None) -> str | None:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(ts)) if ts else None


def _release_startup_memory() -> None:
    """Hand the heap that config validation and imports left free back to the OS (glibc keeps it
    otherwise): a few MiB of resident memory for the daemon's whole life."""
    import gc
    gc.collect()
    try:
        import ctypes
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):   # not glibc: nothing to trim
        pass


def jitter_key(loaded: LoadedConfig, check: str) -> str:
    return jitter_key_for(loaded.config.agent.hostname, check)
