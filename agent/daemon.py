"""The daemon: scheduler loop, result sink, signals, reload, sd_notify.

Threads: the main loop (due checks, timeouts, watchdog, signals), the runner's
pool of check workers, the sink (evaluate → store → metrics; the store's only
writer) and the HTTP server. Signals only set flags; the loop acts on them.
At shutdown running checks get `agent.shutdown_grace`; the child processes
still running after it are killed (agent.plugin.children), never left orphaned.
"""

from __future__ import annotations

import os
import signal
import stat
import threading
import time
from collections import deque

from agent import __version__
from agent.plugin import children, logs
from agent.store import liveness
from agent.plugin.calendar import CalendarSpec, parse_calendar
from agent.config.load import LoadedConfig, load_config
from agent.evaluate import WindowState, evaluate
from agent.job import Job
from agent.plugin.faults import fault_of
from agent.http.server import MetricsServer
from agent.maintenance import REQUEST_KIND as MAINTENANCE_REQUEST, Tracker as MaintenanceTracker
from agent.http.metrics import AgentState, Exposition
from agent.notifications import Outbox
from agent.plugin.address import split_target
from agent.plugin.result import CheckResult, Evaluated, Status
from agent.remediation import Remediator
from agent.runner import Runner
from agent.tasks import Task, Tasks
from agent.scheduler import DueQueue, clamp_to_clock, jitter_key_for, next_interval_due, plan_next, plan_start
from agent.plugin.redact import REDACT, redacted_outcome
from agent.sdnotify import notify, watchdog_interval
from agent.store.writer import SavedState, Store
from agent.config.triggers import Calendar, Interval
from agent.plugin.units import format_timestamp
from agent.config.yamlsrc import ConfigError
from actions import ACTION_TYPES
from checks import CHECK_TYPES

MAX_TICK_SECONDS = 1.0
STATUS_EVERY_SECONDS = 1.0   # the STATUS= line (a count over every check) is refreshed at most this often
MAX_PENDING_RUNS = 10000
STORE_MAINTENANCE = "_store_maintenance"
OUTBOX_EVERY_SECONDS = 60.0
REQUEST_POLL_SECONDS = 1.0   # how often the CLI's requests (actions reset, maintenance) are looked for
SIGNAL_POLL_SECONDS = 1.0   # a heartbeat signal is judged within this (plus the check's run time)
SINK_BATCH_SECONDS = 0.25
SINK_POLL_SECONDS = 0.02   # how often a gathering sink looks whether the runner went idle


class Daemon:
    def __init__(self, loaded: LoadedConfig, dry_run: bool = False):
        self.loaded = loaded
        self.dry_run = dry_run
        self.store = Store(loaded.db_path, migrate_in_child=True)
        self.state = AgentState(__version__, loaded.config.agent.workers)
        self.outbox = Outbox(loaded.db_path, self.state, on_change=lambda: self.exposition.refresh())
        self.remediator = Remediator(self.store, self.state, self._request_verification, self._safely,
                                     loaded.config.agent.hostname, outbox=self.outbox)
        self.exposition = Exposition(self.state)
        self._wake = threading.Event()
        self._results: deque = deque()            # results for the sink; None asks it to finish
        self._results_posted = threading.Event()  # set when the sink may have something to take
        self._pending: list[Evaluated] = []
        self.runner = Runner(loaded.config.agent.workers, self._deliver, self._wake.set, started=self._mark_fired,
                             state_dir=loaded.db_path.parent, store=loaded.db_path, tz=loaded.tz)
        self._signal_id = self.store.last_signal_id()   # heartbeat signals already seen
        self._next_signal_poll = 0.0
        self._unmarked: dict[str, float] = {}   # calendar slots whose mark_fired write failed: retried
        self._windows: dict[str, tuple] = {}     # `for:` windows to commit with the pending runs
        self._option_keys: dict[str, str] = {}
        self._unmarked_lock = threading.Lock()
        self.jobs: dict[str, Job] = {}
        self._due: DueQueue[Job] = DueQueue()
        self._rechecking: set[str] = set()   # jobs with a `recheck_at`: the loop looks at these, not at every job
        self._last_now = 0.0
        self.tz = loaded.tz
        self.maintenance = MaintenanceTracker(self.store, self._safely_log)
        self._maintenance_at: float | None = 0.0   # when the set of checks in maintenance may change next
        self._next_requests = 0.0
        self._stop = threading.Event()
        self._reload = False
        self._heartbeat = time.monotonic()
        self._listener_seen, self._listener_rendered = 0, 0.0
        self._sink_thread = threading.Thread(target=self._sink, name="sink", daemon=True)
        self._notifier = threading.Thread(target=self.outbox.serve, args=(self._stop,), name="notifier", daemon=True)
        self.tasks = Tasks(self._mark_slot)
        self.server: MetricsServer | None = None
        self._identity = liveness.process_identity()
        self._started_at = time.time()
        self._beat_due = 0.0
        self._pending_turns = 0   # pending breaches begun, ended or changed (the sink counts them)
        self._beat_turns = 0      # …as many as the last heartbeat had seen

    # -- lifecycle -------------------------------------------------------------------------------------

    def run(self) -> int:
        cfg = self.loaded.config
        self._install_signals()
        self._apply(self.loaded, first=True)
        self._refresh_maintenance(time.time())
        self._startup_checks()
        _warn_exposed_files(self.loaded)
        _warn_loose_store(self.store)
        host, port = split_target(cfg.http.listen)
        auth = cfg.http.basic_auth
        self.server = MetricsServer((host, port), self.exposition, self._health,
                                    (auth.username, auth.password.reveal()) if auth else None,
                                    web_config=cfg.http.web_config, healthz_auth=cfg.http.healthz_auth,
                                    max_connections=cfg.http.max_connections, header_timeout=cfg.http.header_timeout,
                                    status_page=self._status_page_source if cfg.http.status_page else None,
                                    on_ping=self._ping)
        self.state.listener = self.server.connections
        if cfg.http.ui is None and not cfg.http.status_page:
            logs.event("http.status_page_off", listen=cfg.http.listen,
                       reason="not a loopback address and no basic_auth or web_config; http.ui: true serves it")
        self.server.serve_in_thread()
        self._sink_thread.start()
        self._safely("notification_outbox", self.outbox.refresh)
        self._notifier.start()
        self.exposition.refresh()
        dry = " in dry run: no corrective action executes" if self._dry_run() else ""
        self._log(f"agent started (version {__version__}, {len(self.jobs)} checks){dry}")
        logs.event("agent.started", version=__version__, checks=len(self.jobs), listen=cfg.http.listen,
                   store=str(self.loaded.db_path), pid=os.getpid(),
                   dry_run="true" if self._dry_run() else None)
        self._beat(time.time())
        notify("READY=1", f"STATUS={self._status_line()}", f"MAINPID={os.getpid()}")
        _release_startup_memory()
        try:
            self._loop()
        finally:
            self._shutdown()
        return 0

    def _startup_checks(self) -> None:
        """Before the first run, each check may undo what a killed agent left (a restore's scratch cluster)."""
        for job in self.jobs.values():
            try:
                job.check.startup(self.loaded.db_path.parent)
            except Exception as exc:  # a clean-up that fails is logged; the agent still starts
                logs.event("check.startup_failed", "error", check=job.name, error=f"{type(exc).__name__}: {exc}")

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
            for job in self._rechecks():
                if job.recheck_at <= now:
                    self._run_now(job)   # a result's recheck time or a heartbeat signal
            signals_in = self._poll_signals(now)
            tasks_in = self.tasks.run_due(now)
            self._take_requests(now)
            if self._maintenance_at is not None and now >= self._maintenance_at:
                self._refresh_maintenance(now)
            verify_in = self.remediator.poll(now)
            deadline_in = self.runner.pump()
            self._heartbeat = time.monotonic()
            self._publish_listener()
            if now >= self._beat_due or self._pending_turns != self._beat_turns:
                self._beat(now)   # a pending breach turned: `status` shows when it turns, so say it now
            if self._heartbeat - status_at >= STATUS_EVERY_SECONDS:
                status, status_at = self._status_line(), self._heartbeat
            if watchdog and self._heartbeat - last_ping >= watchdog:
                notify("WATCHDOG=1", f"STATUS={status}")
                last_ping, last_status = self._heartbeat, status
            elif status != last_status:   # without a watchdog, STATUS= still follows the checks
                notify(f"STATUS={status}")
                last_status = status
            wait = min([MAX_TICK_SECONDS, signals_in, max(0.0, self._due.soonest() - time.time())]
                       + [max(0.0, j.recheck_at - time.time()) for j in self._rechecks() if not j.in_flight]
                       + ([max(0.0, last_ping + watchdog - time.monotonic())] if watchdog else [])
                       + ([deadline_in] if deadline_in is not None else [])
                       + ([verify_in] if verify_in is not None else [])
                       + ([max(0.0, self._maintenance_at - time.time())] if self._maintenance_at is not None else [])
                       + ([tasks_in] if tasks_in is not None else []))
            self._wake.wait(wait)
            self._wake.clear()

    def _publish_listener(self) -> None:
        """Early-closed connections are counted by the listener's threads; /metrics shows them within a second
        (rendered at most once a second for them, however hard the listener is hit)."""
        changes = self.server.connections.changes if self.server else 0
        if changes != self._listener_seen and self._heartbeat - self._listener_rendered >= MAX_TICK_SECONDS:
            self._listener_seen, self._listener_rendered = changes, self._heartbeat
            self.exposition.refresh()

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
        self.outbox.wake()
        self._notifier.join(timeout=max(0.0, end - time.monotonic()) + 1.0)   # a retry in flight may finish
        self._stop_children()
        self._beat(time.time(), stopped=True)
        if self.server:
            self.server.shutdown()
            self.server.server_close()
        self._log("agent stopped")
        if not self._notifier.is_alive():   # an attempt still running keeps its lease: retried after the restart
            self._safely("close", self.outbox.close)
        self._safely("close", self.store.close)
        logs.event("agent.stopped")

    def _stop_children(self) -> None:
        """After the grace period: a plugin or command still running would outlive the agent in a session of
        its own (no Ctrl-C or SIGTERM reaches it). End each group, one line per child. Results of the runs
        this interrupts arrive after the sink stopped, so none is stored or acted upon."""
        for stopped in children.stop_all():
            child = stopped.child
            owner = {child.owner[0]: child.owner[1]} if child.owner else {}
            logs.event("child.killed", "warning", **owner, pid=child.pid, program=child.program,
                       signal=stopped.signal)

    # -- config ----------------------------------------------------------------------------------------

    def _apply(self, loaded: LoadedConfig, first: bool = False) -> None:
        """Build jobs for a (new) config; a check whose options did not change keeps its state."""
        persisted = self.store.scheduler_state()
        saved = self._safely("check_state", self.store.check_states) or {}
        now = time.time()
        tz = loaded.tz   # resolved once per config: the host's zone is a realpath() of /etc/localtime
        jobs: dict[str, Job] = {}
        self._option_keys = {options.name: options_key(options) for options in loaded.checks if options.enabled}
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
                self._restore(job, saved.get(options.name))
            fired, ran = persisted.get(options.name, (None, None))
            plan = plan_start(trigger, fired, ran, now, tz, jitter_key(loaded, job.name), options.jitter)
            if plan.arm:
                self._mark_fired(job, now)
            if plan.catch_up:
                logs.event("check.catch_up", check=job.name, last_fired=format_timestamp(fired or None, utc=False))
                self._log(f"catch-up run of {job.name}: due time missed while the agent was down",
                          check_name=job.name)
            job.next_due, job.next_fire = plan.next_due, plan.next_fire
            if job.check.WATCHES_SCHEDULE:
                job.next_due = now   # a job's deadline may have passed, or it signalled, while the agent was down
            jobs[options.name] = job
        self.loaded, self.tz = loaded, tz
        self.jobs = jobs
        self._due = DueQueue(list(jobs.values()))
        self.state.jobs = list(jobs.values())
        self.runner.tz = loaded.tz
        notifiers = {name: o for name, o in loaded.actions.items() if ACTION_TYPES[o.type].NOTIFIES}
        self.outbox.configure(notifiers, loaded.config.smtp)
        for options in notifiers.values():   # every configured channel's failure counter exists from the start
            for channel in ACTION_TYPES[options.type](options).channels():
                self.state.notification_failures.setdefault(channel, 0)
        self.remediator.configure(loaded, self.dry_run)
        self.maintenance.configure([w.recurring() for w in loaded.config.maintenance], list(jobs), loaded.tz)
        self._maintenance_at = now   # the config's windows or checks may have changed
        self.tasks.configure(self._internal_tasks(loaded), persisted, now, tz)
        logs.set_level(loaded.config.agent.log_level)
        REDACT.refresh(loaded.config)

    def _restore(self, job: Job, saved: SavedState | None) -> None:
        """A check new to this process continues from its state in the store: its latest result (so /metrics and
        the STATUS line show its status from the first scrape, not after its next run — an hour, a week or a
        quarter away) and its `for:` window when its options are the ones the window was measured under."""
        if saved is None or saved.run.check_type != job.check.TYPE:
            return
        job.latest = saved.run
        job.lag = max(0.0, saved.run.started - saved.run.scheduled)
        key, warning_since, critical_since = saved.window
        if key == self._option_keys.get(job.name):
            job.window = WindowState(warning_since, critical_since)

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
        self._beat_due = 0.0   # the next loop tells `status` about added and removed checks
        notify("READY=1", f"STATUS={self._status_line()}")

    # -- scheduling and results ------------------------------------------------------------------------

    def _dispatch(self, jobs: list[Job], now: float) -> None:
        """Queue a run of every due check, then plan each one's next."""
        self.runner.request_many([(job, job.next_due, job.next_fire) for job in jobs])
        for job in jobs:
            trigger = job.trigger
            if isinstance(trigger, Interval):   # plan_next's interval case, without building a Plan per run
                job.next_due, job.next_fire = next_interval_due(trigger.seconds, job.next_due, now), None
                self._due.push(job)
                continue
            plan = plan_next(trigger, job.next_due, job.next_fire, now, self.tz, jitter_key(self.loaded, job.name),
                             job.options.jitter)
            job.next_due, job.next_fire = plan.next_due, plan.next_fire
            self._due.push(job)
            if isinstance(trigger, Calendar):
                # the next-run gauge must move at dispatch: a long calendar check (a restore test) would
                # otherwise look overdue to the dead man's switch until its result arrives
                self.exposition.refresh()

    def _take_requests(self, now: float) -> None:
        """What the CLI asked for (`actions reset`, `maintenance start|stop`), applied within a second or so."""
        if now < self._next_requests:
            return
        self._next_requests = now + REQUEST_POLL_SECONDS
        for _, _, kind, target, _ in self._safely("operator_requests", self.store.take_requests) or []:
            if kind == "reset":
                self.remediator.reset(target)
            elif kind == MAINTENANCE_REQUEST:
                self._maintenance_at = now
            else:
                logs.event("operator_request.unknown", "warning", kind=kind, target=target)

    def _refresh_maintenance(self, now: float) -> None:
        """Recompute which checks are in maintenance; a store error keeps the previous answer and retries."""
        try:
            covered, self._maintenance_at = self.maintenance.refresh(now)
        except Exception as exc:  # sqlite3.Error, OSError: keep the previous set, try again in a tick
            self.state.store_write_errors += 1
            logs.event("store.write_failed", "error", what="maintenance", error=f"{type(exc).__name__}: {exc}")
            self._maintenance_at = now + MAX_TICK_SECONDS
            return
        if covered != self.state.maintenance:
            began = sorted(set(covered) - set(self.state.maintenance))
            ended = sorted(set(self.state.maintenance) - set(covered))
            self.state.maintenance = covered
            logs.event("maintenance.changed", checks=",".join(sorted(covered)) or None,
                       began=",".join(began) or None, ended=",".join(ended) or None)
            self.exposition.refresh()

    def _run_now(self, job: Job) -> bool:
        """An extra run outside the schedule (a result's recheck time, a heartbeat signal)."""
        if job.in_flight:
            return False
        job.recheck_at = None
        self._rechecking.discard(job.name)
        return self.runner.request(job, time.time(), None)

    def _recheck(self, job: Job, at: float) -> None:
        """Run `job` again at `at` (or sooner, if it is due again sooner already)."""
        job.recheck_at = at if job.recheck_at is None else min(job.recheck_at, at)
        self._rechecking.add(job.name)

    def _rechecks(self) -> list[Job]:
        """The jobs waiting for a recheck (a name whose job is gone or was rechecked is dropped)."""
        waiting = []
        for name in list(self._rechecking):   # the sink thread adds to the set meanwhile
            job = self.jobs.get(name)
            if job is None or job.recheck_at is None:
                self._rechecking.discard(name)
            else:
                waiting.append(job)
        return waiting

    def _poll_signals(self, now: float) -> float:
        """Jobs that pinged since the last look (`maint-agent ping` writes to the store from another process)
        are judged at once; returns seconds until the next look."""
        if now >= self._next_signal_poll:
            self._next_signal_poll = now + SIGNAL_POLL_SECONDS
            seen = self._safely("heartbeat_signals", self.store.signalled_since, self._signal_id)
            if seen:
                self._signal_id, names = seen
                for name in names:
                    job = self.jobs.get(name)
                    if job is not None and not self._run_now(job):
                        self._recheck(job, now)   # in flight: judged again once that run is done
        return max(0.0, self._next_signal_poll - now)

    def _ping(self, target: str, message: str) -> tuple[int, str]:
        """A heartbeat signal over HTTP (`POST /ping/NAME[/start|/fail|/EXIT]`): stored like `maint-agent
        ping`'s, then judged by the next look at the signals."""
        from agent.plugin.heartbeat import finish_kind
        name, _, what = target.partition("/")
        job = self.jobs.get(name)
        if job is None or job.check.TYPE != "heartbeat":
            return 404, f"no heartbeat named {name!r}"
        if what in ("", "start", "fail"):
            kind, status = ("start" if what == "start" else finish_kind(None, what == "fail")), None
        elif what.isdigit() and int(what) <= 255:
            kind, status = finish_kind(int(what)), int(what)
        else:
            return 404, "use /ping/NAME, /ping/NAME/start, /ping/NAME/fail or /ping/NAME/EXIT_STATUS (0-255)"
        try:
            self.store.record_signal(name, kind, time.time(), exit_status=status, message=message or None,
                                     source="http")
        except Exception as exc:  # sqlite3.Error, OSError: the job learns it was not recorded
            self.state.store_write_errors += 1
            logs.event("store.write_failed", "error", what="heartbeat_signal", error=f"{type(exc).__name__}: {exc}")
            return 503, "signal not recorded (store write failed)"
        self._next_signal_poll = 0.0
        self._wake.set()
        return 200, "OK"

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

    def _safely_log(self, message: str, **fields) -> None:
        self._safely("maintenance_log", self.store.add_log, message, **fields)

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
        name, latest = job.name, job.latest
        verdict = evaluate(job.check, result, job.window, started + duration)
        job.window = verdict.state
        self._windows[name] = (self._option_keys.get(name), verdict.state.warning_since, verdict.state.critical_since)
        # what a check says may quote a secret (a plugin echoing its URL): redacted before the store,
        # /metrics' exposition, the logs and the reports ever see it
        summary, details = redacted_outcome(verdict.summary, result.details, REDACT)
        run = Evaluated(name, job.check.TYPE, verdict.status, summary, result.samples, details,
                        started, duration, scheduled, verdict.pending, name in self.state.maintenance)
        previous = latest.status if latest else None
        resource = fault_of(result.details)
        if resource is not None:   # the agent's own shortage: counted, logged, never acted on (agent.plugin.faults)
            self.state.resource_errors[resource] += 1
            logs.event("agent.out_of_resources", "error", check=name, resource=resource, reason=result.summary)
        job.latest = run
        if verdict.pending is not (latest.pending if latest else Status.OK):
            self._pending_turns += 1   # after job.latest: a heartbeat the loop writes now sees the new pending
        if result.recheck_at is not None:
            self._recheck(job, result.recheck_at)
        job.lag = max(0.0, started - scheduled)
        job.runs[verdict.status.label] += 1
        if verdict.status is not previous:
            logs.event("check.status_changed", "info" if verdict.status is Status.OK else "warning", check=name,
                       status=verdict.status.label, was=previous.label if previous else None,
                       summary=summary)
        return run

    def _flush(self) -> None:
        if not self._pending:
            return
        try:
            self.store.record_runs(self._pending, self._windows)
            self._pending, self._windows = [], {}
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
                from agent.reports.delivery import deliver_pending, queue_report
                queued = queue_report(db, loaded, section, now)
                return {"report": section.name, "queued": queued, **(deliver_pending(db, loaded, now) or {})}
            from agent.config.reports import report_schedule
            tasks.append(Task(f"_report:{section.name}",
                              Calendar(report_schedule(section, cfg.schedules), section.schedule_name), report))
        if cfg.reports:
            def outbox(now: float) -> dict | None:
                from agent.reports.delivery import deliver_pending
                return deliver_pending(db, loaded, now) or None
            tasks.append(Task("_outbox", Interval(OUTBOX_EVERY_SECONDS), outbox))
        if cfg.archive is not None and cfg.archive.enabled:
            def archive(now: float) -> dict:
                from agent.store.archive import archive_pending
                return archive_pending(db, cfg.archive, cfg.agent.hostname, tz, now)
            tasks.append(Task("_archive", Calendar(parse_calendar(cfg.archive.at), "archive"),
                              archive))
        return tasks

    def _status_page_source(self) -> tuple[LoadedConfig, AgentState]:
        """What the status page reads besides the store: the current config (it follows reloads) and the state."""
        return self.loaded, self.state

    # -- health ----------------------------------------------------------------------------------------

    def _dry_run(self) -> bool:
        return self.dry_run or self.loaded.config.agent.dry_run

    def _beat(self, now: float, stopped: bool = False) -> None:
        """Write the heartbeat `maint-agent status` reads (agent/store/liveness.py): from the scheduler loop only,
        so a hung loop stops it; a failed write is counted like any other, never fatal."""
        self._beat_due = now + liveness.HEARTBEAT_SECONDS
        self._beat_turns = self._pending_turns   # before reading the jobs: a turn from here on beats again
        record = {**self._identity, "version": __version__, "started": self._started_at, "beat": now,
                  "stopped": now if stopped else None, "dry_run": self._dry_run(), "config": str(self.loaded.path),
                  "checks": {name: _job_beat(job) for name, job in list(self.jobs.items())}}
        self._safely("heartbeat", self.store.set_state, liveness.HEARTBEAT_KEY, liveness.encode(record))

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
        held = sum(name in self.state.maintenance for name in self.jobs)
        return (f"{len(self.jobs)} checks" + (f", {bad}" if bad else ", all ok")
                + (f", {held} in maintenance" if held else ""))


def _job_beat(job: Job) -> dict:
    """What only the daemon knows of a check: when it runs next, its interval (None: a calendar), and
    when a pending breach turns into its status if it holds."""
    latest, window = job.latest, job.window
    pending_at = None
    if latest is not None and latest.pending is not Status.OK:
        since = window.critical_since if latest.pending is Status.CRITICAL else window.warning_since
        pending_at = since + job.options.sustained if since is not None else None
    return {"next": job.next_due, "every": job.trigger.seconds if isinstance(job.trigger, Interval) else None,
            "pending_at": pending_at}


def _warn_exposed_files(loaded: LoadedConfig) -> None:
    """Loudly, at every start: the config or a secret file that others can read (`config check --strict` fails)."""
    from agent.config.exposure import exposed_files
    for problem in exposed_files(loaded):
        logs.event("config.file_exposed", "warning", file=str(problem.path), problem=problem.reason)


def _warn_loose_store(store: Store) -> None:
    """Store files that others could read were narrowed to the owner at open: say so. The directory is
    only reported, never changed (with `store.path` it may be a shared one such as /srv)."""
    for file, mode in store.narrowed:
        logs.event("store.mode_narrowed", "warning", file=str(file), was=f"{mode:04o}", now=f"{mode & 0o700:04o}")
    directory = store.path.parent
    mode = stat.S_IMODE(directory.stat().st_mode)
    if mode & 0o077:
        logs.event("store.dir_exposed", "warning", dir=str(directory), mode=f"{mode:04o}",
                   problem="others can list the state directory (chmod 0700)")


def _maintenance_spec(loaded: LoadedConfig) -> CalendarSpec:
    return parse_calendar(loaded.config.store.maintenance_at)


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


def options_key(options) -> str:
    """A digest of a check's options: a stored `for:` window is resumed only under the options it was measured
    with (changed thresholds start it afresh, as a reload does)."""
    import hashlib
    return hashlib.sha256(options.model_dump_json(by_alias=True).encode()).hexdigest()[:16]


def jitter_key(loaded: LoadedConfig, check: str) -> str:
    return jitter_key_for(loaded.config.agent.hostname, check)
