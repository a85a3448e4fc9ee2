"""When to act on a check's results: the remediation policy, as pure functions of results and time.

For every binding of a check to an action (`checks[].actions[]`), `Policy.observe` turns each
evaluated result into decisions the daemon carries out:

- **act** when the status is one the binding names, `after` consecutive times, held for `for`,
  inside the binding's maintenance window — unless the action is waiting for its verification,
  cooling down (cooldown × backoff^(n−1) after the n-th attempt) or out of attempts
  (`max_attempts` within `within`; Monit's "3 restarts within 5 cycles"): then **skip**, audited once
  per reason and episode, not once per result;
- **verify**: the first result that started at least `verify_after` after the action finished says
  whether it helped; if not, **escalate** (the action's `escalate:` notifications), once per episode;
- **resolve** only after the check has stayed OK for `settle` (seed 003: mitigate fast, then verify
  for a while before closing): attempts are forgotten and escalated incidents get a resolve;
- out of attempts → "remediation exhausted" (escalated once) until the check has been OK for
  `settle` or an operator resets it.

While a check is in maintenance (`hold`) nothing runs and nothing accrues: the streaks behind `after`
and `for` start again when the maintenance ends, and an action a bad result would have counted towards
is audited **skip** `maintenance`, once per maintenance episode.

Notification actions bound to a check (`NOTIFIES`) send one trigger per episode and one resolve
after the check settled. The state per binding is a small dataclass, serialised to JSON so it
survives restarts and reloads (a known Monit weakness).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Literal
from zoneinfo import ZoneInfo

from actions.base import ActionOptions
from agent.plugin.calendar import parse_window
from agent.plugin.result import Status
from checks.base import ActionBinding, CheckOptions

SkipReason = Literal["cooldown", "limit", "exhausted", "window", "running", "maintenance"]


@dataclass
class BindingState:
    """What the policy remembers about one (check, action) pair."""

    streak: int = 0                       # consecutive results with a triggering status
    bad_since: float | None = None
    ok_since: float | None = None
    attempts: list[float] = field(default_factory=list)   # start times within `within`
    running: bool = False                 # an attempt was handed out and has not finished
    verify_after: float | None = None     # the result that verifies the last attempt starts at/after this
    attempt_id: int | None = None         # audit row of the attempt awaiting verification
    fixed_at: float | None = None         # verification passed; settling since
    exhausted: bool = False
    open: bool = False                    # remediation attempted in this episode and not yet resolved
    escalated: bool = False               # escalation sent in this episode (a resolve is owed)
    notified: bool = False                # notify bindings: trigger sent in this episode
    last_skip: str | None = None          # skip reason already audited in this episode

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    def snapshot(self) -> tuple:
        """The values, cheap to take and compare per result (`to_json` is for the store)."""
        return tuple(tuple(v) if isinstance(v, list) else v for v in vars(self).values())

    @classmethod
    def from_json(cls, text: str) -> "BindingState":
        data = json.loads(text)
        if not isinstance(data, dict):
            raise TypeError(f"policy state is a {type(data).__name__}, not an object")
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})


@dataclass(frozen=True)
class Decision:
    """One thing for the daemon to do.

    kind:
    - `run`: execute `action` for `check` (`event` trigger|resolve for notifications);
    - `skip`: audit that `action` was not run (`reason`);
    - `verified`: update the audit row `attempt_id` with `fixed`;
    - `escalate`: run the notifications in `notify` with `event` escalate (`reason`) or resolve;
    - `resolved`: the check settled after remediation (a maintenance-log line);
    - `exhausted`: out of attempts (a maintenance-log line; the gauge goes to 1).
    """

    kind: Literal["run", "skip", "verified", "escalate", "resolved", "exhausted"]
    check: str
    action: str
    event: Literal["trigger", "escalate", "resolve"] = "trigger"
    reason: str = ""
    attempt_id: int | None = None
    fixed: bool | None = None
    notify: tuple[str, ...] = ()
    detail: str = ""


class Policy:
    """Decisions for all bindings; `states` is keyed by (check, action) and persisted by the caller."""

    def __init__(self, actions: dict[str, ActionOptions], notifies: dict[str, bool], tz: ZoneInfo):
        self.actions = actions
        self.notifies = notifies          # action name → True for notification types
        self.tz = tz
        self.states: dict[tuple[str, str], BindingState] = {}
        self.dirty: set[tuple[str, str]] = set()
        self.verifying: set[tuple[str, str]] = set()   # bindings with an attempt awaiting its verifying run

    def state(self, check: str, action: str) -> BindingState:
        return self.states.setdefault((check, action), BindingState())

    def exhausted(self, check: str) -> bool:
        """Whether an action bound to `check` is out of attempts (a look-up per configured action, not a scan)."""
        return any(st.exhausted for action in self.actions if (st := self.states.get((check, action))) is not None)

    # -- results ---------------------------------------------------------------------------------------

    def observe(self, check: CheckOptions, status: Status, started: float,
                pending: Status = Status.OK, agent_fault: bool = False) -> list[Decision]:
        """Decisions for one evaluated result of `check` that started at `started`; `pending` is the status
        a `for:` window is holding back (a result "OK, pending CRITICAL" is not good news).

        A result the agent's own shortage caused (`agent_fault`: out of file descriptors, memory,
        threads) says nothing about the target: no decision, and no streak, verification or settling
        moves on it — the next real result carries on where the last one left off."""
        if agent_fault:
            return []
        decisions: list[Decision] = []
        for binding in check.actions:
            options = self.actions.get(binding.action)
            if options is None:
                continue
            key = (check.name, binding.action)
            st = self.state(*key)
            before = st.snapshot()
            good = self._track(st, binding, status, pending, started)
            if self.notifies.get(binding.action):
                decisions += self._notification(check, binding, options, st, started)
            else:
                decisions += self._remediation(check, binding, options, st, good, started)
            if st.snapshot() != before:
                self.dirty.add(key)
        return decisions

    def hold(self, check: CheckOptions, status: Status) -> list[Decision]:
        """Decisions for a result of `check` while it is in maintenance: none runs; the streaks (`after`, `for`)
        and the settle time are cleared, so neither bad nor good results of planned work count once it ends;
        a binding the status would have counted towards is audited as skipped, once per maintenance episode.
        An attempt awaiting verification keeps waiting for a result from after the maintenance."""
        decisions: list[Decision] = []
        for binding in check.actions:
            if binding.action not in self.actions:
                continue
            key = (check.name, binding.action)
            st = self.state(*key)
            before = st.to_json()
            st.streak, st.bad_since, st.ok_since = 0, None, None
            if status.label in binding.when:
                decisions += self._skip(check, binding, st, "maintenance", f"{check.name} is in maintenance: "
                                        f"{binding.action} held ({status.label})")
            if st.to_json() != before:
                self.dirty.add(key)
        return decisions

    @staticmethod
    def _track(st: BindingState, binding: ActionBinding, status: Status, pending: Status, at: float) -> bool:
        """Update the streaks; return whether the result is good news for this binding: none of its
        statuses, now or pending, and not UNKNOWN (a clean-up that takes a disk from 95 % to 85 % fixed
        a binding on CRITICAL even though the check still warns)."""
        if status.label in binding.when:
            st.streak += 1
            st.bad_since = st.bad_since if st.bad_since is not None else at
            st.ok_since = None
            return False
        st.streak, st.bad_since = 0, None
        if st.last_skip != "exhausted":   # the next bad result starts a new episode, audited afresh
            st.last_skip = None           # (exhaustion is one episode until it settles or is reset)
        good = status is not Status.UNKNOWN and pending.label not in binding.when
        if good:
            st.ok_since = st.ok_since if st.ok_since is not None else at
        else:
            st.ok_since = None
        return good

    def _due(self, binding: ActionBinding, st: BindingState, at: float) -> bool:
        return st.streak >= binding.after and st.bad_since is not None and at - st.bad_since >= binding.sustained

    def _settled(self, options: ActionOptions, st: BindingState, at: float) -> bool:
        return st.ok_since is not None and at - st.ok_since >= options.settle

    def _in_window(self, binding: ActionBinding, at: float) -> bool:
        if binding.window is None:
            return True
        return parse_window(binding.window).contains(datetime.fromtimestamp(at, timezone.utc), self.tz)

    def _notification(self, check, binding, options, st: BindingState, at) -> list[Decision]:
        if st.attempts and at - st.attempts[-1] < options.cooldown:
            return []             # the last send failed: retried after the cooldown
        if st.notified and self._settled(options, st, at):
            st.notified, st.last_skip = False, None
            return [Decision("run", check.name, binding.action, event="resolve",
                             reason=f"OK for {options.settle:g}s")]
        if st.notified or not self._due(binding, st, at):
            return []
        if not self._in_window(binding, at):
            return self._skip(check, binding, st, "window", f"outside the window {binding.window}")
        st.notified, st.last_skip = True, None
        return [Decision("run", check.name, binding.action, event="trigger")]

    def _remediation(self, check, binding, options: ActionOptions, st: BindingState, good: bool,
                     at: float) -> list[Decision]:
        out: list[Decision] = []
        if st.running:
            return out
        if st.verify_after is not None:
            if at < st.verify_after:
                return out        # a result from before the action took effect says nothing
            fixed = good
            out.append(Decision("verified", check.name, binding.action, attempt_id=st.attempt_id, fixed=fixed))
            st.verify_after, st.attempt_id = None, None
            if fixed:
                st.fixed_at = at
            else:
                out += self._escalate(check, binding, options, st, "the action did not help")
        if st.ok_since is not None and (st.open or st.fixed_at is not None or st.exhausted or st.escalated):
            if self._settled(options, st, at):
                out += self._resolve(check, binding, options, st)
            return out
        if good:
            return out
        st.fixed_at = None        # bad again while settling: the fix did not hold
        if not self._due(binding, st, at):
            return out
        if st.exhausted:
            return out + self._skip(check, binding, st, "exhausted", "remediation exhausted: waiting for the "
                                    "check to settle or `maint-agent actions reset`")
        if not self._in_window(binding, at):
            return out + self._skip(check, binding, st, "window", f"outside the window {binding.window}")
        last = st.attempts[-1] if st.attempts else None
        st.attempts = [t for t in st.attempts if at - t < options.within]
        if len(st.attempts) >= options.max_attempts:
            st.exhausted = True
            out += self._skip(check, binding, st, "limit", f"{len(st.attempts)} attempts within "
                              f"{options.within:g}s (max_attempts {options.max_attempts})")
            out.append(Decision("exhausted", check.name, binding.action,
                                reason=f"{len(st.attempts)} attempts did not fix it"))
            return out + self._escalate(check, binding, options, st, "remediation exhausted", again=True)
        if last is not None:      # the cooldown runs from the last attempt even when `within` forgot it
            wait = options.cooldown * options.backoff ** max(0, len(st.attempts) - 1)
            if at - last < wait:
                return out + self._skip(check, binding, st, "cooldown", f"next attempt allowed "
                                        f"{wait - (at - last):.0f}s from now")
        st.attempts.append(at)
        st.running, st.open, st.last_skip = True, True, None
        return out + [Decision("run", check.name, binding.action, event="trigger")]

    def _skip(self, check, binding, st: BindingState, reason: SkipReason, text: str) -> list[Decision]:
        if st.last_skip == reason:
            return []             # audited once per reason and episode, not once per result
        st.last_skip = reason
        return [Decision("skip", check.name, binding.action, reason=reason, detail=text)]

    def _escalate(self, check, binding, options: ActionOptions, st: BindingState, reason: str,
                  again: bool = False) -> list[Decision]:
        if not options.escalate or (st.escalated and not again):
            return []
        st.escalated = True
        return [Decision("escalate", check.name, binding.action, event="escalate", reason=reason,
                         notify=options.escalate)]

    def _resolve(self, check, binding, options: ActionOptions, st: BindingState) -> list[Decision]:
        out = [Decision("resolved", check.name, binding.action,
                        reason=f"OK for {options.settle:g}s after remediation"
                        + (" (remediation resumed)" if st.exhausted else ""))]
        if st.escalated and options.escalate:
            out.append(Decision("escalate", check.name, binding.action, event="resolve",
                                reason="the check is OK again", notify=options.escalate))
        # attempts are kept and age out through `within`: a service that crashes every 15 minutes and
        # recovers each time still runs into max_attempts (a resolve is not a licence to restart forever);
        # after exhaustion, settling is the documented way to resume, like an operator's reset
        if st.exhausted:
            st.attempts = []
        st.exhausted, st.escalated, st.open, st.fixed_at, st.last_skip = False, False, False, None, None
        return out

    # -- action outcomes and operators -----------------------------------------------------------------

    def finished(self, check: str, action: str, attempt_id: int | None, ok: bool, at: float,
                 verify: bool = True, event: str = "trigger") -> list[Decision]:
        """An attempt handed out by `observe` ended at `at`; returns escalations for a failed run."""
        st = self.state(check, action)
        st.running = False
        self.dirty.add((check, action))
        if self.notifies.get(action):
            # a failed notification is sent again after the action's cooldown (one PagerDuty 5xx must not
            # leave the on-call unpaged, nor an incident open for good)
            st.attempts = [] if ok else [at]
            if not ok:
                st.notified = event != "trigger"
            return []
        if ok and verify and action in self.actions:
            st.verify_after = at + self.actions[action].verify_after
            self.verifying.add((check, action))
            st.attempt_id = attempt_id
            return []
        if ok:
            return []
        options = self.actions.get(action)
        if options is None or not options.escalate or st.escalated:
            return []
        st.escalated = True
        return [Decision("escalate", check, action, event="escalate", reason="the action failed",
                         notify=options.escalate)]

    def verify_due(self) -> list[tuple[str, float]]:
        """(check, time) for every attempt waiting for its verifying run (only those bindings are looked at)."""
        self.verifying = {key for key in self.verifying if self.states[key].verify_after is not None}
        return [(check, self.states[check, action].verify_after) for check, action in self.verifying
                if action in self.actions]

    def reset(self, check: str) -> list[str]:
        """An operator's `actions reset CHECK`: forget attempts and exhaustion; return the actions reset."""
        names = []
        for (name, action), st in self.states.items():
            if name == check:
                # a running attempt stays running: its result and verification still arrive
                st.attempts, st.exhausted, st.last_skip = [], False, None
                st.fixed_at, st.open = None, False
                self.dirty.add((name, action))
                names.append(action)
        return names

    def load(self, rows: dict[tuple[str, str], str]) -> None:
        for key, text in rows.items():
            try:
                state = BindingState.from_json(text)
            except (ValueError, TypeError, AttributeError):
                continue          # an unreadable row starts fresh rather than stopping the agent
            state.running = False  # the process that ran it is gone; its verification still counts
            self.states[key] = state
            if state.verify_after is not None:
                self.verifying.add(key)

    def take_dirty(self) -> dict[tuple[str, str], str]:
        out = {key: self.states[key].to_json() for key in self.dirty if key in self.states}
        self.dirty.clear()
        return out
