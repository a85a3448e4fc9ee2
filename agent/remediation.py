"""Carrying out the policy's decisions: run actions off the scheduler's threads, audit every decision,
ask for verifying runs, keep the counters persistent and the metrics current.

`execute_action` and `audit_row` are shared with `maint-agent action run NAME` (manual runs).
"""

from __future__ import annotations

import json
import threading
import time
from typing import Callable

from actions import ACTION_TYPES
from actions.base import ActionContext, ActionOptions, ActionResult, TriggerInfo
from agent.plugin import children, logs
from agent.plugin.faults import fault_of
from agent.policy import Decision, Policy
from agent.plugin.redact import REDACT, redact_tree
from agent.plugin.result import Evaluated

MAX_CONCURRENT_ACTIONS = 4


def execute_action(options: ActionOptions, trigger: TriggerInfo | None, *, dry_run: bool, smtp=None,
                   hostname: str, redact: Callable[[str], str] = REDACT,
                   outbox=None) -> tuple[ActionResult, float, float]:
    """Run one action (or evaluate it, in dry-run); never raises. Returns (result, started, duration)."""
    action = ACTION_TYPES[options.type](options)
    ctx = ActionContext(timeout=options.timeout, dry_run=dry_run, trigger=trigger, hostname=hostname,
                        redact=redact, smtp=smtp, outbox=outbox)
    started, clock = time.time(), time.monotonic()
    try:
        with children.owner("action", options.name):
            result = action.execute(ctx)
        if not isinstance(result, ActionResult):
            result = ActionResult(False, f"action returned {type(result).__name__}, not an ActionResult")
    except Exception as exc:  # the one place an action's bug becomes a failed, audited result
        result = ActionResult(False, redact(f"action failed: {type(exc).__name__}: {exc}")[:500])
    return result, started, time.monotonic() - clock


def audit_row(options: ActionOptions, trigger: TriggerInfo | None, result: ActionResult | None, *,
              started: float, duration: float, dry_run: bool, source: str, decision: str,
              redact: Callable[[str], str] = REDACT, detail: str = "") -> dict:
    """The `action_runs` row for a decision; every free text is redacted."""
    try:
        target = ACTION_TYPES[options.type](options).target()
    except Exception:  # a target that cannot be told must not lose the audit row
        target = "?"
    if result is None:
        outcome = "skipped"
    elif dry_run:
        outcome = "dry_run" if result.ok else "failure"
    else:
        outcome = "success" if result.ok else "failure"
    details = redact_tree({"summary": result.summary if result else detail, "event": trigger.event if trigger else None,
                         "reason": trigger.reason if trigger else None, **(result.details if result else {})}, redact)
    return {
        "started": started, "duration": duration, "action": options.name, "action_type": options.type,
        "check_name": trigger.check if trigger else None,
        "trigger": redact(trigger.summary) if trigger else None,
        "trigger_status": trigger.status if trigger else None, "target": redact(target),
        "dry_run": int(dry_run), "exit_code": result.exit_code if result else None,
        "output": redact(result.output if result and result.output else detail),
        "outcome": outcome, "decision": decision, "source": source,
        "details": json.dumps(details, default=str, separators=(",", ":")),
    }


class Remediator:
    """The daemon's side of the policy. `observe` runs on the result sink's thread, `poll` on the
    scheduler loop, actions on their own threads; one lock guards the policy's state."""

    def __init__(self, store, state, request_run: Callable[[str], bool], safely: Callable, hostname: str,
                 outbox=None):
        self.store = store
        self.outbox = outbox                 # agent.notifications.Outbox: where notifications are queued
        self.state = state                   # AgentState: counters and gauges for /metrics
        self.request_run = request_run       # check name → True when a run was queued
        self.safely = safely                 # daemon's "store write that never raises"
        self.hostname = hostname
        self.policy: Policy | None = None
        self.actions: dict[str, ActionOptions] = {}
        self.checks: dict = {}
        self.dry_run = False
        self.smtp = None
        self._lock = threading.RLock()
        self._targets: dict[tuple[str, str], threading.Lock] = {}
        self._slots = threading.BoundedSemaphore(MAX_CONCURRENT_ACTIONS)
        self._threads: list[threading.Thread] = []
        self._requested: dict[str, float] = {}

    # -- config ----------------------------------------------------------------------------------------

    def configure(self, loaded, dry_run: bool) -> None:
        """(Re)load the actions; the policy's counters carry over (and come from the store at first)."""
        with self._lock:
            self.actions = loaded.actions
            self.checks = {c.name: c for c in loaded.checks if c.enabled}
            self.dry_run = dry_run or loaded.config.agent.dry_run
            self.smtp = loaded.config.smtp
            notifies = {name: ACTION_TYPES[o.type].NOTIFIES for name, o in self.actions.items()}
            first = self.policy is None
            if first:
                self.policy = Policy(self.actions, notifies, loaded.tz)
                stored = self.safely("policy_states", self.store.policy_states)
                self.policy.load(stored or {})
                self.safely("action_audit", self.store.interrupt_running_actions)
            else:
                self.policy.actions, self.policy.notifies, self.policy.tz = self.actions, notifies, loaded.tz
            self._publish_exhausted()

    # -- results ---------------------------------------------------------------------------------------

    def observe(self, run: Evaluated) -> None:
        check = self.checks.get(run.check)
        if check is None or not check.actions:
            return
        with self._lock:
            if run.maintenance:   # planned work: nothing accrues, nothing runs, the hold is audited
                decisions = self.policy.hold(check, run.status)
            else:
                decisions = self.policy.observe(check, run.status, run.started, run.pending,
                                                agent_fault=fault_of(run.details) is not None)
            dirty = self.policy.take_dirty()
        if dirty:
            self.safely("policy_state", self.store.save_policy_states, dirty)
        trigger = TriggerInfo(check.name, run.status.label, run.summary, check.severity, dict(run.details or {}))
        self._carry_out(decisions, trigger)

    def _carry_out(self, decisions: list[Decision], trigger: TriggerInfo) -> None:
        for decision in decisions:
            options = self.actions.get(decision.action)
            if options is None:
                continue
            if decision.kind == "run":
                event_trigger = TriggerInfo(trigger.check, trigger.status, trigger.summary, trigger.severity,
                                            trigger.details, decision.event, decision.reason)
                self._start(options, event_trigger, "policy", verify=not ACTION_TYPES[options.type].NOTIFIES)
            elif decision.kind == "skip":
                self._skipped(options, trigger, decision.reason, decision.detail)
            elif decision.kind == "verified":
                if decision.attempt_id is not None:
                    self.safely("action_audit", self.store.update_action, decision.attempt_id,
                                verified=int(bool(decision.fixed)), outcome="fixed" if decision.fixed else "not fixed")
                logs.event("action.verified", "info" if decision.fixed else "warning", action=options.name,
                           check=trigger.check, fixed=decision.fixed)
            elif decision.kind == "escalate":
                marker = "dry run — nothing was executed: " if self._dry(options) or self.dry_run else ""
                held = trigger.check in self.state.maintenance   # an action that ended after maintenance began
                for name in decision.notify:
                    notify = self.actions.get(name)
                    if notify is not None and held:
                        self._skipped(notify, trigger, "maintenance", f"{decision.event} of {options.name} held: "
                                                                      f"{trigger.check} is in maintenance")
                    elif notify is not None:
                        self._start(notify, TriggerInfo(trigger.check, trigger.status, trigger.summary,
                                                        trigger.severity, trigger.details, decision.event,
                                                        f"{marker}{options.name}: {decision.reason}"), "escalation",
                                    verify=False)
            elif decision.kind in ("resolved", "exhausted"):
                self._log(f"{trigger.check}: {decision.reason} ({options.name})", trigger.check,
                          category="corrective")
                logs.event(f"remediation.{decision.kind}", "info" if decision.kind == "resolved" else "error",
                           check=trigger.check, action=options.name, reason=decision.reason)
                self._publish_exhausted()

    def _skipped(self, options: ActionOptions, trigger: TriggerInfo, reason: str, detail: str) -> None:
        self.state.action_decided(options.name, reason)
        row = audit_row(options, trigger, None, started=time.time(), duration=0.0, dry_run=self._dry(options),
                        source="policy", decision=reason, detail=detail)
        self.safely("action_audit", self.store.record_action, row)
        logs.event("action.skipped", "warning", action=options.name, check=trigger.check, reason=reason,
                   detail=detail)

    def _dry(self, options: ActionOptions) -> bool:
        """Global dry-run holds back every corrective action; notifications still go out (marked as dry
        run) so operators see what would have happened. An action's own dry_run holds it back too."""
        if options.dry_run:
            return True
        return self.dry_run and not ACTION_TYPES[options.type].NOTIFIES

    def _start(self, options: ActionOptions, trigger: TriggerInfo, source: str, verify: bool) -> None:
        dry_run = self._dry(options)
        if self.dry_run and ACTION_TYPES[options.type].NOTIFIES and "dry run" not in trigger.reason:
            note = "agent in dry run: corrective actions are evaluated, none is executed"
            trigger = TriggerInfo(trigger.check, trigger.status, trigger.summary, trigger.severity, trigger.details,
                                  trigger.event, f"{trigger.reason} ({note})" if trigger.reason else note)
        thread = threading.Thread(target=self._run, args=(options, trigger, source, verify, dry_run),
                                  name=f"action-{options.name}", daemon=True)
        with self._lock:
            self._threads = [t for t in self._threads if t.is_alive()] + [thread]
        thread.start()

    def _target_lock(self, options: ActionOptions) -> threading.Lock:
        try:
            target = ACTION_TYPES[options.type](options).target()
        except Exception:
            target = options.name
        with self._lock:
            return self._targets.setdefault((options.type, target), threading.Lock())

    def _run(self, options: ActionOptions, trigger: TriggerInfo, source: str, verify: bool, dry_run: bool) -> None:
        decision = "dry_run" if dry_run else "ran"
        # the row exists before the action starts: an agent killed mid-action leaves "running", which the
        # next start marks "interrupted" — an attempt is never unaudited
        row = audit_row(options, trigger, None, started=time.time(), duration=0.0, dry_run=dry_run, source=source,
                        decision=decision)
        row["outcome"] = "running"
        attempt_id = self.safely("action_audit", self.store.record_action, row)
        attempt_id = attempt_id if isinstance(attempt_id, int) else None
        with self._target_lock(options), self._slots:   # one action of a kind at a time per target
            result, started, duration = execute_action(options, trigger, dry_run=dry_run, smtp=self.smtp,
                                                       hostname=self.hostname, outbox=self.outbox)
        row = audit_row(options, trigger, result, started=started, duration=duration, dry_run=dry_run,
                        source=source, decision=decision)
        if verify and result.ok and not dry_run:
            row["outcome"] = "verifying"
        if attempt_id is None:
            attempt_id = self.safely("action_audit", self.store.record_action, row)
            attempt_id = attempt_id if isinstance(attempt_id, int) else None
        else:
            self.safely("action_audit", self.store.update_action, attempt_id, **row)
        self.state.action_ran(options.name, "dry_run" if dry_run else ("success" if result.ok else "failure"), started)
        logs.event("action.ran", "info" if result.ok else "error", action=options.name, check=trigger.check,
                   trigger=trigger.event, source=source, dry_run=dry_run or None, ok=result.ok,
                   summary=REDACT(result.summary), seconds=f"{duration:.2f}")
        verb = "would run" if dry_run else "ran"
        self._log(f"{options.name} {verb} for {trigger.check} ({trigger.status}): {REDACT(result.summary)}",
                  trigger.check, category="notification" if not verify else "corrective")
        if source == "policy":
            # a notification the outbox retries is handled: the policy does not send it again
            handled = result.ok or bool(result.details.get("queued"))
            with self._lock:
                more = self.policy.finished(trigger.check, options.name, attempt_id, handled, time.time(),
                                            verify=verify and not dry_run, event=trigger.event)
                dirty = self.policy.take_dirty()
            if dirty:
                self.safely("policy_state", self.store.save_policy_states, dirty)
            self._carry_out(more, trigger)

    def _publish_exhausted(self) -> None:
        with self._lock:
            exhausted = {name: self.policy.exhausted(name) for name, check in self.checks.items() if check.actions}
        self.state.remediation_exhausted(exhausted)

    def _log(self, message: str, check: str | None, category: str) -> None:
        self.safely("maintenance_log", self.store.add_log, message, at=time.time(), category=category,
                    source="policy", check_name=check)

    # -- scheduler loop --------------------------------------------------------------------------------

    def reset(self, target: str) -> None:
        """An operator's `actions reset CHECK` (taken from the store by the daemon)."""
        with self._lock:
            reset = self.policy.reset(target)
            dirty = self.policy.take_dirty()
        self.safely("policy_state", self.store.save_policy_states, dirty)
        self._log(f"remediation of {target} reset by an operator ({', '.join(reset) or 'no state'})",
                  target, category="corrective")
        logs.event("remediation.reset", check=target, actions=",".join(reset) or None)
        self._publish_exhausted()

    def poll(self, now: float) -> float | None:
        """Due verifications; returns seconds until the next verification is due."""
        with self._lock:
            due = self.policy.verify_due() if self.policy else []
        waits = []
        for check, at in due:
            if at > now:
                waits.append(at - now)
            elif self._requested.get(check) != at and self.request_run(check):
                self._requested[check] = at
        return min(waits) if waits else None

    def drain(self, timeout: float) -> None:
        end = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, end - time.monotonic()))
