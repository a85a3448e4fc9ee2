"""The remediation policy on a fake clock: when the agent acts on a check, and when it holds back.

The operator story: a web server that goes CRITICAL is restarted once, at once; if the restart does not
help, the on-call is paged — once, not on every result; the agent waits longer between each further
restart and gives up after `max_attempts`, saying so; nothing runs outside the maintenance window; the
problem counts as resolved only after the check has stayed OK for `settle`; and a restart of the agent
in the middle of all this forgets nothing. Times are plain floats (T0 + offset seconds); nothing sleeps.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from zoneinfo import ZoneInfo

import pytest

from actions.command import CommandAction
from agent.policy import BindingState, Decision, Policy
from agent.plugin.result import Status
from checks.system import CpuCheck

UTC = ZoneInfo("UTC")
SUNDAY_0300 = datetime(2024, 1, 7, 3, 0, tzinfo=timezone.utc)   # 2024-01-07 was a Sunday
T0 = SUNDAY_0300.timestamp()

OK, WARNING, CRITICAL, UNKNOWN = Status.OK, Status.WARNING, Status.CRITICAL, Status.UNKNOWN


def action(name: str = "restart", **options) -> CommandAction.Options:
    return CommandAction.Options.model_validate({"name": name, "type": "command", "argv": ["/bin/true"], **options})


def check(*bindings: dict, name: str = "web") -> CpuCheck.Options:
    return CpuCheck.Options.model_validate({"name": name, "type": "cpu", "actions": list(bindings)})


def short(decision: Decision) -> str:
    """A decision as one word or two, so a sequence reads like the audit log."""
    if decision.kind == "run":
        return f"run {decision.action} {decision.event}"
    if decision.kind == "skip":
        return f"skip {decision.reason}"
    if decision.kind == "verified":
        return f"verified {'fixed' if decision.fixed else 'not fixed'}"
    if decision.kind == "escalate":
        return f"escalate {decision.event}"
    return decision.kind


def shorts(decisions: list[Decision]) -> list[str]:
    return [short(d) for d in decisions]


class Story:
    """Results of one check fed to a Policy in order, at T0 + offset seconds."""

    def __init__(self, *bindings: dict, actions=(), notify=(), name: str = "web", tz=UTC, policy=None):
        self.check = check(*bindings, name=name)
        self.policy = policy or Policy({a.name: a for a in actions}, {n: True for n in notify}, tz)

    def at(self, offset: float, status: Status) -> list[Decision]:
        return self.policy.observe(self.check, status, T0 + offset)

    def finish(self, offset: float, ok: bool = True, attempt_id: int | None = 1, action: str = "restart",
               verify: bool = True) -> list[Decision]:
        return self.policy.finished(self.check.name, action, attempt_id, ok, T0 + offset, verify=verify)

    def state(self, action: str = "restart") -> BindingState:
        return self.policy.state(self.check.name, action)


def restart_story(binding: dict | None = None, **options) -> Story:
    """`web` bound to a `restart` command action with `options`, escalating to `page` unless told otherwise."""
    options.setdefault("escalate", ["page"])
    return Story({"action": "restart", **(binding or {})},
                 actions=[action("restart", **options), action("page")], notify=["page"])


def fails_verification(story: Story, offset: float, attempt_id: int = 1) -> list[Decision]:
    """The attempt handed out earlier finishes at `offset`; the check is still CRITICAL 1 s later
    (verify_after is 1s in the stories that use this)."""
    assert story.finish(offset, attempt_id=attempt_id) == []
    return story.at(offset + 1, CRITICAL)


# --- when a binding triggers ------------------------------------------------------------------------

def test_policy_first_critical_runs_action_at_once():
    story = restart_story()
    assert story.at(0, CRITICAL) == [Decision("run", "web", "restart", event="trigger")]


@pytest.mark.parametrize("status", [OK, WARNING, UNKNOWN])
def test_policy_status_not_in_default_when_never_acts(status):
    story = restart_story()
    for offset in range(0, 3600, 60):
        assert story.at(offset, status) == []
    assert story.state().attempts == []


def test_policy_warning_acts_when_binding_lists_it():
    story = restart_story({"when": ["warning", "critical"]})
    assert shorts(story.at(0, WARNING)) == ["run restart trigger"]


def test_policy_unknown_acts_only_when_listed():
    story = restart_story({"when": ["unknown"]})
    assert story.at(0, CRITICAL) == []
    assert shorts(story.at(10, UNKNOWN)) == ["run restart trigger"]


def test_policy_after_three_needs_three_consecutive_bad_results():
    story = restart_story({"after": 3})
    assert story.at(0, CRITICAL) == []
    assert story.at(30, CRITICAL) == []
    assert shorts(story.at(60, CRITICAL)) == ["run restart trigger"]


@pytest.mark.parametrize("interruption", [OK, WARNING])
def test_policy_after_streak_reset_by_a_result_outside_when(interruption):
    story = restart_story({"after": 3})
    assert story.at(0, CRITICAL) == []
    assert story.at(30, CRITICAL) == []
    assert story.at(60, interruption) == []
    assert story.at(90, CRITICAL) == []
    assert story.at(120, CRITICAL) == []
    assert shorts(story.at(150, CRITICAL)) == ["run restart trigger"]


def test_policy_sustained_for_waits_until_bad_status_held_that_long():
    story = restart_story({"for": "2m"})
    for offset in (0, 30, 60, 90, 119):
        assert story.at(offset, CRITICAL) == [], offset
    assert shorts(story.at(120, CRITICAL)) == ["run restart trigger"]


def test_policy_sustained_for_restarts_after_an_ok():
    story = restart_story({"for": "2m"})
    assert story.at(0, CRITICAL) == []
    assert story.at(100, OK) == []
    assert story.at(110, CRITICAL) == []
    assert story.at(200, CRITICAL) == []          # 90 s since the new bad streak began, not 200
    assert shorts(story.at(230, CRITICAL)) == ["run restart trigger"]


def test_policy_after_and_for_both_required():
    story = restart_story({"after": 2, "for": "60s"})
    assert story.at(0, CRITICAL) == []
    assert story.at(10, CRITICAL) == []           # two results, but only 10 s
    assert shorts(story.at(60, CRITICAL)) == ["run restart trigger"]
    other = restart_story({"after": 3, "for": "60s"})
    assert other.at(0, CRITICAL) == []
    assert other.at(100, CRITICAL) == []          # held 100 s, but only two results
    assert shorts(other.at(101, CRITICAL)) == ["run restart trigger"]


def test_policy_binding_naming_unknown_action_ignored():
    story = Story({"action": "missing"}, {"action": "restart"}, actions=[action("restart")])
    assert story.at(0, CRITICAL) == [Decision("run", "web", "restart")]
    assert ("web", "missing") not in story.policy.states
    assert set(story.policy.take_dirty()) == {("web", "restart")}


def test_policy_checks_sharing_an_action_are_counted_apart():
    policy = Policy({"restart": action("restart", max_attempts=1, escalate=["page"]), "page": action("page")},
                    {"page": True}, UTC)
    web = Story({"action": "restart"}, name="web", policy=policy)
    db = Story({"action": "restart"}, name="db", policy=policy)
    assert shorts(web.at(0, CRITICAL)) == ["run restart trigger"]
    web.finish(1, ok=False)
    assert "exhausted" in shorts(web.at(400, CRITICAL))
    assert policy.exhausted("web") and not policy.exhausted("db")
    assert shorts(db.at(401, CRITICAL)) == ["run restart trigger"]


# --- maintenance windows ----------------------------------------------------------------------------

def test_policy_inside_window_acts():
    story = restart_story({"window": "sun 02:00-04:00"})
    assert shorts(story.at(0, CRITICAL)) == ["run restart trigger"]     # Sunday 03:00


def test_policy_outside_window_skips_once_not_on_every_result():
    story = restart_story({"window": "sun 02:00-04:00"})
    first = story.at(2 * 3600, CRITICAL)                               # Sunday 05:00
    assert shorts(first) == ["skip window"]
    assert "sun 02:00-04:00" in first[0].detail
    for offset in range(2 * 3600 + 60, 6 * 3600, 60):
        assert story.at(offset, CRITICAL) == [], offset
    assert story.state().attempts == []


def test_policy_outside_window_acts_when_window_opens_next_week():
    story = restart_story({"window": "sun 02:00-04:00"})
    assert shorts(story.at(2 * 3600, CRITICAL)) == ["skip window"]      # Sunday 05:00
    assert story.at(3 * 86400, CRITICAL) == []                          # Wednesday 03:00
    next_sunday_0200 = 7 * 86400 - 3600
    assert story.at(next_sunday_0200 - 60, CRITICAL) == []              # Sunday 01:59
    assert shorts(story.at(next_sunday_0200, CRITICAL)) == ["run restart trigger"]


@pytest.mark.parametrize("moment, acts", [
    (datetime(2024, 1, 6, 21, 59), False),     # Saturday, before the window
    (datetime(2024, 1, 6, 22, 0), True),       # Saturday 22:00, the window opens
    (datetime(2024, 1, 6, 23, 30), True),
    (datetime(2024, 1, 7, 3, 0), True),        # Sunday after midnight: still Saturday's window
    (datetime(2024, 1, 7, 5, 59), True),
    (datetime(2024, 1, 7, 6, 0), False),       # the window has closed
    (datetime(2024, 1, 7, 23, 0), False),      # Sunday evening: no window starts on Sunday
    (datetime(2024, 1, 8, 3, 0), False),       # Monday early: Sunday had no window
])
def test_policy_overnight_window_belongs_to_the_day_it_starts(moment, acts):
    story = restart_story({"window": "sat 22:00-06:00"})
    offset = moment.replace(tzinfo=timezone.utc).timestamp() - T0
    assert shorts(story.at(offset, CRITICAL)) == (["run restart trigger"] if acts else ["skip window"])


@pytest.mark.parametrize("utc_hour, acts", [(0, False), (1, True), (2, True), (3, False)])
def test_policy_window_read_in_the_policy_time_zone(utc_hour, acts):
    # Berlin is UTC+1 in January: sun 02:00-04:00 local is 01:00-03:00 UTC
    story = Story({"action": "restart", "window": "sun 02:00-04:00"}, actions=[action("restart")],
                  tz=ZoneInfo("Europe/Berlin"))
    offset = (utc_hour - 3) * 3600
    assert shorts(story.at(offset, CRITICAL)) == (["run restart trigger"] if acts else ["skip window"])


def test_policy_window_skip_audited_again_in_a_later_episode():
    story = restart_story({"window": "sun 02:00-04:00"}, settle="10m")
    assert shorts(story.at(2 * 3600, CRITICAL)) == ["skip window"]      # Sunday 05:00
    assert story.at(2 * 3600 + 60, OK) == []                            # the problem went away by itself
    assert story.at(86400, OK) == []                                    # and stayed away a whole day
    assert shorts(story.at(2 * 86400, CRITICAL)) == ["skip window"]     # a new problem, Tuesday 03:00


# --- one attempt at a time, then verification -------------------------------------------------------

def test_policy_running_attempt_blocks_a_second_run():
    story = restart_story()
    assert shorts(story.at(0, CRITICAL)) == ["run restart trigger"]
    for offset in (10, 299, 300, 1000, 5000):     # even long after the cooldown (300 s by default)
        assert story.at(offset, CRITICAL) == [], offset
    assert story.state().attempts == [T0]


def test_policy_finished_lists_pending_verification():
    story = restart_story(verify_after="30s")
    story.at(0, CRITICAL)
    assert story.policy.verify_due() == []
    assert story.finish(5, attempt_id=7) == []
    assert story.policy.verify_due() == [("web", T0 + 35)]


def test_policy_result_started_before_verify_after_ignored():
    story = restart_story(verify_after="30s")
    story.at(0, CRITICAL)
    story.finish(5, attempt_id=7)
    assert story.at(20, CRITICAL) == []           # started before the restart could take effect
    assert story.at(34.9, OK) == []
    assert story.policy.verify_due() == [("web", T0 + 35)]


def test_policy_first_result_after_verify_after_confirms_fix():
    story = restart_story(verify_after="30s")
    story.at(0, CRITICAL)
    story.finish(5, attempt_id=7)
    assert story.at(35, OK) == [Decision("verified", "web", "restart", attempt_id=7, fixed=True)]
    assert story.policy.verify_due() == []
    assert story.at(65, OK) == []                 # verified once, not on every result


def test_policy_failed_verification_escalates_to_action_escalate_names():
    story = restart_story(verify_after="30s", escalate=["page", "mail"])
    story.at(0, CRITICAL)
    story.finish(5, attempt_id=7)
    decisions = story.at(35, CRITICAL)
    assert shorts(decisions) == ["verified not fixed", "escalate escalate", "skip cooldown"]
    assert decisions[0] == Decision("verified", "web", "restart", attempt_id=7, fixed=False)
    assert decisions[1] == Decision("escalate", "web", "restart", event="escalate",
                                    reason="the action did not help", notify=("page", "mail"))


def test_policy_warning_at_verification_counts_as_fixed_for_a_critical_binding():
    # a clean-up that takes a disk from 95 % to 85 % fixed what the binding (when: [critical]) was for
    story = restart_story(verify_after="30s")
    story.at(0, CRITICAL)
    story.finish(5)
    assert shorts(story.at(35, WARNING)) == ["verified fixed"]


def test_policy_ok_with_a_pending_critical_at_verification_counts_as_not_fixed():
    story = restart_story(verify_after="30s")
    story.at(0, CRITICAL)
    story.finish(5)
    decisions = story.policy.observe(story.check, OK, T0 + 35, pending=CRITICAL)
    assert shorts(decisions)[:1] == ["verified not fixed"]


def test_policy_failed_verification_without_escalate_only_audited():
    story = restart_story(verify_after="30s", escalate=[])
    story.at(0, CRITICAL)
    story.finish(5)
    assert shorts(story.at(35, CRITICAL)) == ["verified not fixed", "skip cooldown"]


def test_policy_escalates_only_once_per_episode():
    story = restart_story(verify_after="1s", cooldown="60s", backoff=1, max_attempts=10)
    story.at(0, CRITICAL)
    assert shorts(fails_verification(story, 1)) == ["verified not fixed", "escalate escalate", "skip cooldown"]
    assert shorts(story.at(60, CRITICAL)) == ["run restart trigger"]
    assert shorts(fails_verification(story, 61, attempt_id=2)) == ["verified not fixed", "skip cooldown"]
    assert shorts(story.at(120, CRITICAL)) == ["run restart trigger"]
    assert story.finish(121, ok=False, attempt_id=3) == []      # nor when a later attempt fails outright


def test_policy_finished_without_verify_waits_for_nothing():
    story = restart_story(cooldown="60s")
    story.at(0, CRITICAL)
    assert story.finish(1, verify=False) == []
    assert story.policy.verify_due() == []
    assert shorts(story.at(2, CRITICAL)) == ["skip cooldown"]
    assert shorts(story.at(60, CRITICAL)) == ["run restart trigger"]


# --- settling -----------------------------------------------------------------------------------------

def test_policy_fixed_and_ok_for_settle_resolves_and_forgets_attempts():
    story = restart_story(verify_after="30s", settle="10m")
    story.at(0, CRITICAL)
    story.finish(5)
    assert shorts(story.at(35, OK)) == ["verified fixed"]
    assert story.at(600, OK) == []                # OK since 35 s: not yet settled
    decisions = story.at(635, OK)
    assert decisions == [Decision("resolved", "web", "restart", reason="OK for 600s after remediation")]
    # attempts are kept and age out through `within`: recurring crashes still run into max_attempts
    assert story.state().attempts == [T0]
    assert story.at(700, OK) == []                # resolved once
    assert shorts(story.at(701, CRITICAL)) == ["run restart trigger"]   # a new episode: no cooldown left


def test_policy_settle_counts_from_first_ok_even_before_verification():
    story = restart_story(verify_after="30s", settle="60s")
    story.at(0, CRITICAL)
    assert story.at(2, OK) == []                  # OK already while the restart runs
    story.finish(5)
    assert shorts(story.at(62, OK)) == ["verified fixed", "resolved"]


def test_policy_resolve_after_escalation_resolves_the_notification():
    story = restart_story(verify_after="1s", cooldown="60s", settle="5m")
    story.at(0, CRITICAL)
    assert "escalate escalate" in shorts(fails_verification(story, 1))
    assert story.at(100, OK) == []
    decisions = story.at(400, OK)
    assert shorts(decisions) == ["resolved", "escalate resolve"]
    assert decisions[1] == Decision("escalate", "web", "restart", event="resolve",
                                    reason="the check is OK again", notify=("page",))
    assert story.state().escalated is False


def test_policy_relapse_while_settling_retries_after_cooldown():
    story = restart_story(verify_after="30s", settle="10m", cooldown="2m")
    story.at(0, CRITICAL)
    story.finish(5)
    assert shorts(story.at(35, OK)) == ["verified fixed"]
    assert shorts(story.at(65, CRITICAL)) == ["skip cooldown"]      # the fix did not hold
    assert story.state().fixed_at is None
    assert story.at(100, CRITICAL) == []
    assert shorts(story.at(120, CRITICAL)) == ["run restart trigger"]
    assert story.state().attempts == [T0, T0 + 120]


def test_policy_short_ok_during_settle_does_not_resolve():
    story = restart_story(verify_after="30s", settle="10m")
    story.at(0, CRITICAL)
    story.finish(5)
    story.at(35, OK)
    story.at(300, UNKNOWN)                        # no news: the settle clock restarts
    assert story.at(700, OK) == []
    assert story.at(1299, OK) == []
    assert shorts(story.at(1300, OK)) == ["resolved"]


# --- cooldown and backoff -----------------------------------------------------------------------------

def test_policy_cooldown_grows_by_backoff_and_skips_audited_once():
    story = restart_story(verify_after="1s", cooldown="60s", backoff=2, max_attempts=5)
    assert shorts(story.at(0, CRITICAL)) == ["run restart trigger"]
    decisions = fails_verification(story, 1)
    assert shorts(decisions) == ["verified not fixed", "escalate escalate", "skip cooldown"]
    assert decisions[-1].detail == "next attempt allowed 58s from now"
    assert story.at(30, CRITICAL) == []
    assert story.at(59, CRITICAL) == []
    assert shorts(story.at(60, CRITICAL)) == ["run restart trigger"]        # 60 s after the first
    decisions = fails_verification(story, 61, attempt_id=2)
    assert shorts(decisions) == ["verified not fixed", "skip cooldown"]     # audited again for this attempt
    assert decisions[-1].detail == "next attempt allowed 118s from now"
    assert story.at(120, CRITICAL) == []                                    # 60 s is no longer enough
    assert story.at(179, CRITICAL) == []
    assert shorts(story.at(180, CRITICAL)) == ["run restart trigger"]       # 120 s after the second
    fails_verification(story, 181, attempt_id=3)
    assert story.at(419, CRITICAL) == []
    assert shorts(story.at(420, CRITICAL)) == ["run restart trigger"]       # 240 s after the third


def test_policy_backoff_one_keeps_cooldown_constant():
    story = restart_story(verify_after="1s", cooldown="60s", backoff=1, max_attempts=5)
    story.at(0, CRITICAL)
    fails_verification(story, 1)
    assert shorts(story.at(60, CRITICAL)) == ["run restart trigger"]
    fails_verification(story, 61, attempt_id=2)
    assert shorts(story.at(120, CRITICAL)) == ["run restart trigger"]


# --- attempts run out ---------------------------------------------------------------------------------

def exhausted_story(**options) -> Story:
    """Two restarts within the hour that did not help; the third due result exhausts remediation."""
    options = {"verify_after": "1s", "cooldown": "60s", "backoff": 1, "max_attempts": 2, "within": "1h",
               "settle": "5m", **options}
    story = restart_story(**options)
    story.at(0, CRITICAL)
    fails_verification(story, 1)
    assert shorts(story.at(60, CRITICAL)) == ["run restart trigger"]
    return story


def test_policy_max_attempts_within_window_exhausts_and_escalates_again():
    story = exhausted_story()
    decisions = fails_verification(story, 61, attempt_id=2)
    assert shorts(decisions) == ["verified not fixed", "skip limit", "exhausted", "escalate escalate"]
    assert decisions[1].detail == "2 attempts within 3600s (max_attempts 2)"
    assert decisions[2] == Decision("exhausted", "web", "restart", reason="2 attempts did not fix it")
    assert decisions[3] == Decision("escalate", "web", "restart", event="escalate", reason="remediation exhausted",
                                    notify=("page",))
    assert story.policy.exhausted("web")


def test_policy_exhausted_audits_one_skip_then_stays_quiet():
    story = exhausted_story()
    fails_verification(story, 61, attempt_id=2)
    decisions = story.at(120, CRITICAL)
    assert shorts(decisions) == ["skip exhausted"]
    assert "maint-agent actions reset" in decisions[0].detail
    for offset in (180, 600, 3600, 2 * 3600):     # even after the attempts left `within`
        assert story.at(offset, CRITICAL) == [], offset
    assert story.policy.exhausted("web")


def test_policy_exhausted_without_escalate_still_reports_exhaustion():
    story = exhausted_story(escalate=[])
    assert shorts(fails_verification(story, 61, attempt_id=2)) == ["verified not fixed", "skip limit", "exhausted"]


def test_policy_exhaustion_clears_after_ok_for_settle():
    story = exhausted_story()
    fails_verification(story, 61, attempt_id=2)
    story.at(120, CRITICAL)
    assert story.at(200, OK) == []
    assert story.at(499, OK) == []
    decisions = story.at(500, OK)
    assert shorts(decisions) == ["resolved", "escalate resolve"]
    assert decisions[0].reason == "OK for 300s after remediation (remediation resumed)"
    assert not story.policy.exhausted("web")
    assert story.state().attempts == []          # resuming after exhaustion starts afresh
    assert shorts(story.at(560, CRITICAL)) == ["run restart trigger"]


def test_policy_exhaustion_survives_a_brief_ok():
    story = exhausted_story()
    fails_verification(story, 61, attempt_id=2)
    story.at(120, CRITICAL)
    assert story.at(200, OK) == []
    assert story.at(300, CRITICAL) == []          # the skip was audited already
    assert story.at(600, OK) == []                # settle restarts from here
    assert story.policy.exhausted("web")
    assert shorts(story.at(900, OK)) == ["resolved", "escalate resolve"]


def test_policy_reset_clears_exhaustion_and_attempts():
    story = exhausted_story()
    fails_verification(story, 61, attempt_id=2)
    assert story.policy.reset("web") == ["restart"]
    assert not story.policy.exhausted("web")
    assert story.state().attempts == []
    assert ("web", "restart") in story.policy.take_dirty()
    assert shorts(story.at(63, CRITICAL)) == ["run restart trigger"]      # no cooldown either


def test_policy_reset_unknown_check_resets_nothing():
    story = exhausted_story()
    assert story.policy.reset("db") == []
    assert story.state().attempts == [T0, T0 + 60]


@pytest.mark.parametrize("within, third", [("10m", "run restart trigger"), ("1h", "skip limit")])
def test_policy_attempts_older_than_within_do_not_count(within, third):
    # a flapping service: each restart helps for a while; only restarts within `within` count
    story = restart_story(verify_after="1s", cooldown="400s", backoff=1, max_attempts=2, within=within,
                          settle="1h")
    story.at(0, CRITICAL)
    story.finish(1)
    assert shorts(story.at(2, OK)) == ["verified fixed"]
    assert shorts(story.at(400, CRITICAL)) == ["run restart trigger"]
    story.finish(401, attempt_id=2)
    assert shorts(story.at(402, OK)) == ["verified fixed"]
    assert shorts(story.at(800, CRITICAL))[0] == third
    assert story.policy.exhausted("web") is (third == "skip limit")


# --- the action itself failed -------------------------------------------------------------------------

def test_policy_failed_action_escalates_once():
    story = restart_story(cooldown="60s", backoff=1)
    story.at(0, CRITICAL)
    assert story.finish(1, ok=False) == [Decision("escalate", "web", "restart", event="escalate",
                                                 reason="the action failed", notify=("page",))]
    assert story.policy.verify_due() == []
    assert shorts(story.at(2, CRITICAL)) == ["skip cooldown"]              # no verification of a failed run
    assert shorts(story.at(60, CRITICAL)) == ["run restart trigger"]
    assert story.finish(61, ok=False) == []


def test_policy_failed_action_without_escalate_says_nothing():
    story = restart_story(escalate=[])
    story.at(0, CRITICAL)
    assert story.finish(1, ok=False) == []
    assert story.state().running is False


# --- notification bindings ----------------------------------------------------------------------------

def notify_story(binding: dict | None = None, **options) -> Story:
    return Story({"action": "page", **(binding or {})}, actions=[action("page", **options)], notify=["page"])


def test_policy_notification_triggers_once_per_episode():
    story = notify_story(settle="5m")
    assert story.at(0, CRITICAL) == [Decision("run", "web", "page", event="trigger")]
    for offset in range(60, 7200, 60):            # nothing more while it stays bad, whatever the cooldown
        assert story.at(offset, CRITICAL) == [], offset


def test_policy_notification_resolves_after_ok_for_settle():
    story = notify_story(settle="5m")
    story.at(0, CRITICAL)
    assert story.at(60, OK) == []
    assert story.at(359, OK) == []
    assert story.at(360, OK) == [Decision("run", "web", "page", event="resolve", reason="OK for 300s")]
    assert story.at(420, OK) == []
    assert shorts(story.at(480, CRITICAL)) == ["run page trigger"]         # a new episode


def test_policy_notification_brief_ok_neither_resolves_nor_retriggers():
    story = notify_story(settle="5m")
    story.at(0, CRITICAL)
    assert story.at(60, OK) == []
    assert story.at(120, CRITICAL) == []
    assert story.at(400, OK) == []                # OK since 60 s? no: since 400 s
    assert shorts(story.at(700, OK)) == ["run page resolve"]


def test_policy_notification_ok_without_trigger_resolves_nothing():
    story = notify_story(settle="5m")
    for offset in (0, 400, 1000):
        assert story.at(offset, OK) == []


def test_policy_notification_honours_after_and_when():
    story = notify_story({"after": 2, "when": ["warning", "critical"]})
    assert story.at(0, WARNING) == []
    assert shorts(story.at(60, CRITICAL)) == ["run page trigger"]


def test_policy_notification_outside_window_skips_once_then_triggers_inside():
    story = notify_story({"window": "sun 02:00-04:00"})
    assert shorts(story.at(2 * 3600, CRITICAL)) == ["skip window"]         # Sunday 05:00
    assert story.at(3 * 3600, CRITICAL) == []
    assert shorts(story.at(7 * 86400 - 3600, CRITICAL)) == ["run page trigger"]


def test_policy_notification_and_remediation_on_one_check():
    story = Story({"action": "page"}, {"action": "restart"},
                  actions=[action("page"), action("restart")], notify=["page"])
    assert shorts(story.at(0, CRITICAL)) == ["run page trigger", "run restart trigger"]
    assert story.at(10, CRITICAL) == []


def test_policy_notification_state_does_not_grow_with_each_episode():
    story = notify_story(settle="1m")
    for episode in range(50):
        base = episode * 1000
        story.at(base, CRITICAL)
        story.at(base + 10, OK)
        assert shorts(story.at(base + 100, OK)) == ["run page resolve"]
    assert len(story.state("page").attempts) <= 1


def test_policy_notification_window_skip_audited_again_in_a_later_episode():
    story = notify_story({"window": "sun 02:00-04:00"}, settle="10m")
    assert shorts(story.at(2 * 3600, CRITICAL)) == ["skip window"]
    story.at(2 * 3600 + 60, OK)
    story.at(86400, OK)
    assert shorts(story.at(2 * 86400, CRITICAL)) == ["skip window"]


# --- state across restarts ----------------------------------------------------------------------------

def restarted(story: Story, actions=None) -> Story:
    """The same check in a fresh Policy that loaded what the old one handed to the store."""
    rows = story.policy.take_dirty()
    for text in rows.values():
        json.loads(text)                          # the store holds plain JSON text
    old = story.policy
    policy = Policy(actions or old.actions, old.notifies, old.tz)
    policy.load(rows)
    fresh = Story(policy=policy)
    fresh.check = story.check
    return fresh


def test_policy_restart_mid_attempt_remembers_attempt_and_forgets_running():
    story = restart_story(cooldown="60s")
    story.at(0, CRITICAL)                         # handed out; the agent dies before it finishes
    after = restarted(story)
    assert after.state().running is False
    assert after.state().attempts == [T0]
    assert shorts(after.at(30, CRITICAL)) == ["skip cooldown"]   # not run again at once
    assert shorts(after.at(60, CRITICAL)) == ["run restart trigger"]


def test_policy_restart_keeps_pending_verification():
    story = restart_story(verify_after="30s")
    story.at(0, CRITICAL)
    story.finish(5, attempt_id=42)
    after = restarted(story)
    assert after.policy.verify_due() == [("web", T0 + 35)]
    assert after.at(20, OK) == []
    assert after.at(35, OK) == [Decision("verified", "web", "restart", attempt_id=42, fixed=True)]


def test_policy_restart_keeps_exhaustion_and_its_audit():
    story = exhausted_story()
    fails_verification(story, 61, attempt_id=2)
    after = restarted(story)
    assert after.policy.exhausted("web")
    assert after.state().attempts == [T0, T0 + 60]
    assert after.state().escalated is True
    assert shorts(after.at(120, CRITICAL)) == ["skip exhausted"]
    assert after.at(180, CRITICAL) == []
    assert after.at(200, OK) == []
    assert shorts(after.at(500, OK)) == ["resolved", "escalate resolve"]


def test_policy_restart_keeps_streak_and_sustained_start():
    story = restart_story({"after": 3, "for": "2m"})
    story.at(0, CRITICAL)
    story.at(60, CRITICAL)
    after = restarted(story)
    assert after.at(90, CRITICAL) == []           # three results, but held only 90 s
    assert shorts(after.at(120, CRITICAL)) == ["run restart trigger"]


def test_policy_restart_keeps_notification_sent():
    story = notify_story(settle="5m")
    story.at(0, CRITICAL)
    after = restarted(story)
    assert after.at(60, CRITICAL) == []           # not paged twice for one episode
    after.at(100, OK)
    assert shorts(after.at(400, OK)) == ["run page resolve"]


def test_policy_take_dirty_hands_out_changed_states_once():
    story = restart_story()
    story.at(0, OK)
    assert set(story.policy.take_dirty()) == {("web", "restart")}
    assert story.policy.take_dirty() == {}
    story.at(60, OK)                              # nothing changed: nothing to write
    assert story.policy.take_dirty() == {}
    story.at(120, CRITICAL)
    assert json.loads(story.policy.take_dirty()[("web", "restart")])["attempts"] == [T0 + 120]
    story.finish(121)
    assert set(story.policy.take_dirty()) == {("web", "restart")}


def test_policy_load_ignores_corrupt_row_and_keeps_the_others():
    good = restart_story(cooldown="60s")
    good.at(0, CRITICAL)
    rows = good.policy.take_dirty()
    rows[("db", "restart")] = '{"streak": 3, "attempts": [1'          # cut short by a full disk
    rows[("cache", "restart")] = "\x00\x00garbage"
    policy = Policy(good.policy.actions, good.policy.notifies, UTC)
    policy.load(rows)
    assert policy.state("db", "restart") == BindingState()
    assert policy.state("cache", "restart") == BindingState()
    assert policy.state("web", "restart").attempts == [T0]


def test_policy_load_accepts_rows_with_missing_or_unknown_fields():
    policy = Policy({"restart": action("restart")}, {}, UTC)
    policy.load({("web", "restart"): '{"attempts": [5.0], "exhausted": true, "added_later": 1}'})
    st = policy.state("web", "restart")
    assert st.attempts == [5.0] and st.exhausted is True
    assert st.streak == 0 and st.verify_after is None


def test_policy_load_clears_running():
    policy = Policy({"restart": action("restart")}, {}, UTC)
    policy.load({("web", "restart"): BindingState(running=True, attempts=[T0]).to_json()})
    assert policy.state("web", "restart").running is False
    story = Story({"action": "restart"}, policy=policy)
    assert shorts(story.at(300, CRITICAL)) == ["run restart trigger"]


@pytest.mark.parametrize("text", ["null", "[]", "3"])
def test_policy_load_ignores_row_that_is_not_a_json_object(text):
    policy = Policy({"restart": action("restart")}, {}, UTC)
    policy.load({("web", "restart"): text, ("db", "restart"): BindingState(attempts=[T0]).to_json()})
    assert policy.state("web", "restart") == BindingState()
    assert policy.state("db", "restart").attempts == [T0]


def test_policy_verify_due_lists_every_pending_verification():
    policy = Policy({"restart": action("restart", verify_after="30s"),
                     "flush": action("flush", verify_after="2m")}, {}, UTC)
    web = Story({"action": "restart"}, name="web", policy=policy)
    db = Story({"action": "flush"}, name="db", policy=policy)
    web.at(0, CRITICAL)
    db.at(0, CRITICAL)
    web.finish(10)
    assert policy.verify_due() == [("web", T0 + 40)]
    db.finish(20, action="flush")
    assert sorted(policy.verify_due()) == [("db", T0 + 140), ("web", T0 + 40)]
    web.at(40, OK)
    assert policy.verify_due() == [("db", T0 + 140)]



def test_policy_recurring_crashes_run_into_the_limit_even_when_each_restart_helps():
    # a service that dies every 15 minutes and is fixed each time must not be restarted without limit:
    # the 4th crash within the hour finds remediation exhausted (and escalated); only settling resumes it
    story = restart_story(verify_after="30s", settle="10m", cooldown="1m", max_attempts=3, within="1h")
    runs, seen = 0, []
    for cycle in range(4):
        start = cycle * 900
        decisions = shorts(story.at(start, CRITICAL))
        seen += decisions
        if "run restart trigger" in decisions:
            runs += 1
            story.finish(start + 5)
        story.at(start + 40, OK)
        if cycle < 3:
            story.at(start + 700, OK)
    assert runs == 3
    assert "exhausted" in seen and "escalate escalate" in seen
    assert story.policy.exhausted("web")


def test_policy_failed_notification_is_sent_again_after_the_cooldown():
    story = Story({"action": "page"}, actions=[action("page", cooldown="1m")], notify=["page"])
    assert shorts(story.at(0, CRITICAL)) == ["run page trigger"]
    story.policy.finished("web", "page", None, False, T0 + 1, verify=False, event="trigger")
    assert story.at(30, CRITICAL) == []           # within the cooldown
    assert shorts(story.at(61, CRITICAL)) == ["run page trigger"]
    story.policy.finished("web", "page", None, True, T0 + 62, verify=False, event="trigger")
    assert story.at(120, CRITICAL) == []          # delivered: once per episode


# --- the agent's own shortage ---------------------------------------------------------------------------

def agent_fault_at(story: Story, offset: float) -> list[Decision]:
    """An UNKNOWN the agent caused itself (out of file descriptors): what agent.plugin.faults marks."""
    return story.policy.observe(story.check, UNKNOWN, T0 + offset, agent_fault=True)


def test_policy_agent_fault_never_acts_even_when_unknown_is_listed():
    story = restart_story({"when": ["critical", "unknown"]})
    notify = notify_story({"when": ["unknown"]})
    for offset in range(0, 600, 10):
        assert agent_fault_at(story, offset) == []
        assert agent_fault_at(notify, offset) == []
    assert story.state().attempts == [] and notify.state().notified is False


def test_policy_agent_fault_neither_breaks_nor_extends_a_streak():
    story = restart_story({"after": 3})
    assert story.at(0, CRITICAL) == []
    assert agent_fault_at(story, 30) == []
    assert story.at(60, CRITICAL) == []
    assert shorts(story.at(90, CRITICAL)) == ["run restart trigger"]


def test_policy_agent_fault_at_verification_waits_for_a_real_result_without_escalating():
    story = restart_story(verify_after="30s")
    story.at(0, CRITICAL)
    story.finish(5, attempt_id=7)
    assert agent_fault_at(story, 35) == []            # neither "not fixed" nor an escalation
    assert story.policy.verify_due() == [("web", T0 + 35)]
    assert story.at(40, OK) == [Decision("verified", "web", "restart", attempt_id=7, fixed=True)]


# --- maintenance: planned work is neither fixed nor paged about ----------------------------------------

def held(story: Story, offset: float, status: Status) -> list[Decision]:
    """A result of `web` at `offset` while it is in maintenance (the time does not matter: nothing accrues)."""
    return story.policy.hold(story.check, status)


def test_policy_maintenance_holds_the_restart_and_audits_it_once():
    story = restart_story()
    assert [(d.kind, d.reason) for d in held(story, 0, CRITICAL)] == [("skip", "maintenance")]
    for offset in range(30, 3600, 30):
        assert held(story, offset, CRITICAL) == [], offset
    assert story.state().attempts == [] and story.state().streak == 0


def test_policy_maintenance_ended_acts_on_the_next_bad_result():
    story = restart_story()
    held(story, 0, CRITICAL)
    assert shorts(story.at(60, CRITICAL)) == ["run restart trigger"]


def test_policy_maintenance_results_do_not_count_towards_after_and_for():
    # `after: 3, for: 5m`: bad results during the maintenance count for nothing once it ends
    story = restart_story({"after": 3, "for": "5m"})
    for offset in range(0, 3600, 60):
        held(story, offset, CRITICAL)
    assert story.at(3600, CRITICAL) == []
    assert story.at(3660, CRITICAL) == []
    assert story.at(3720, CRITICAL) == []                       # three results, but held only 2 minutes
    assert shorts(story.at(3900, CRITICAL)) == ["run restart trigger"]


def test_policy_maintenance_holds_notifications_and_pages_afterwards():
    story = notify_story()
    assert shorts(held(story, 0, CRITICAL)) == ["skip maintenance"]
    assert shorts(story.at(600, CRITICAL)) == ["run page trigger"]


def test_policy_maintenance_ok_results_do_not_settle_an_open_incident():
    story = notify_story(settle="5m")
    story.at(0, CRITICAL)
    for offset in range(60, 1200, 60):
        assert held(story, offset, OK) == []
    assert story.at(1200, OK) == []                             # settling starts when the maintenance ended
    assert shorts(story.at(1500, OK)) == ["run page resolve"]


def test_policy_maintenance_skip_audited_again_in_the_next_maintenance():
    story = restart_story(settle="1m")
    held(story, 0, CRITICAL)
    story.at(60, OK)
    assert shorts(held(story, 86400, CRITICAL)) == ["skip maintenance"]


def test_policy_maintenance_status_outside_when_is_not_audited():
    story = restart_story()
    assert held(story, 0, WARNING) == [] and held(story, 60, UNKNOWN) == []
