"""Thresholds and sustained `for:` windows, evaluated with a fake clock (no I/O).

The operator story: a disk creeping over 85 % for a minute must not page anyone
when `for: 5m` is configured, but must page once it has held for five minutes;
a target that cannot be reached at all pages at once.
"""

from __future__ import annotations

import pytest

from agent.evaluate import Verdict, WindowState, breach_level, evaluate
from agent.plugin.result import CheckResult, Status, sample
from checks.system import DiskCheck, LoadCheck, NetworkLatencyCheck, ProcessCheck

T0 = 1_700_000_000.0   # an arbitrary wall-clock epoch; only differences matter


class Story:
    """Feeds results to `evaluate` in order on a fake clock (T0 + offset seconds), carrying
    the window state from one verdict to the next like the daemon does."""

    def __init__(self, check):
        self.check = check
        self.state = WindowState()

    def at(self, offset: float, result: CheckResult) -> Verdict:
        verdict = evaluate(self.check, result, self.state, T0 + offset)
        self.state = verdict.state
        return verdict


def disk_check(**options) -> DiskCheck:
    return DiskCheck(DiskCheck.Options.model_validate(
        {"name": "disk", "type": "disk", "mounts": ["/", "/var/lib/postgresql"], **options}))


def disk_result(*ratios: float, inodes: float = 0.01, status: Status = Status.OK) -> CheckResult:
    mounts = ("/", "/var/lib/postgresql")
    samples = []
    for mount, ratio in zip(mounts, ratios):
        samples += [sample("used_ratio", ratio, mount=mount), sample("free_bytes", 1e9, mount=mount),
                    sample("inodes_used_ratio", inodes, mount=mount)]
    return CheckResult(status, "disk used: …", tuple(samples))


def process_check(**options) -> ProcessCheck:
    return ProcessCheck(ProcessCheck.Options.model_validate(
        {"name": "workers", "type": "process", "cmdline": "celery worker", **options}))


def instances(count: int) -> CheckResult:
    return CheckResult.ok(f"{count} processes match", [sample("instances", count)])


# --- no window --------------------------------------------------------------------------------

def test_evaluate_without_thresholds_passes_result_through():
    check = disk_check()
    verdict = evaluate(check, disk_result(0.99, 0.99), WindowState(), T0)
    assert verdict.status is Status.OK
    assert verdict.pending is Status.OK
    assert verdict.summary == "disk used: …"
    assert verdict.state == WindowState()


def test_evaluate_zero_window_breach_is_immediate():
    check = disk_check(warning="80%", critical="90%")
    assert evaluate(check, disk_result(0.85, 0.1), WindowState(), T0).status is Status.WARNING
    verdict = evaluate(check, disk_result(0.95, 0.1), WindowState(), T0)
    assert verdict.status is Status.CRITICAL
    assert verdict.pending is Status.OK


def test_evaluate_value_equal_to_threshold_is_not_a_breach():
    check = disk_check(warning="80%", critical="90%")
    assert evaluate(check, disk_result(0.80, 0.10), WindowState(), T0).status is Status.OK
    assert evaluate(check, disk_result(0.10, 0.90), WindowState(), T0).status is Status.WARNING


# --- sustained window -------------------------------------------------------------------------

def test_evaluate_breach_before_window_elapses_is_ok_with_pending_warning():
    story = Story(disk_check(warning="80%", critical="90%", **{"for": "5m"}))
    first = story.at(0, disk_result(0.85, 0.1))
    assert first.status is Status.OK
    assert first.pending is Status.WARNING
    assert first.state.warning_since == T0
    later = story.at(240, disk_result(0.86, 0.1))
    assert later.status is Status.OK
    assert later.pending is Status.WARNING
    assert "pending warning: held 240s of 300s" in later.summary


def test_evaluate_breach_held_for_window_turns_warning():
    story = Story(disk_check(warning="80%", critical="90%", **{"for": "5m"}))
    story.at(0, disk_result(0.85, 0.1))
    story.at(120, disk_result(0.85, 0.1))
    verdict = story.at(300, disk_result(0.85, 0.1))
    assert verdict.status is Status.WARNING
    assert verdict.pending is Status.OK
    assert "pending" not in verdict.summary


def test_evaluate_critical_breach_held_for_window_turns_critical():
    story = Story(disk_check(warning="80%", critical="90%", **{"for": "5m"}))
    assert story.at(0, disk_result(0.95, 0.1)).pending is Status.CRITICAL
    assert story.at(299, disk_result(0.95, 0.1)).status is Status.OK
    verdict = story.at(300, disk_result(0.95, 0.1))
    assert verdict.status is Status.CRITICAL
    assert verdict.pending is Status.OK


def test_evaluate_warning_held_then_critical_starts_is_warning_with_critical_pending():
    story = Story(disk_check(warning="80%", critical="90%", **{"for": "5m"}))
    story.at(0, disk_result(0.85, 0.1))
    assert story.at(300, disk_result(0.85, 0.1)).status is Status.WARNING
    verdict = story.at(360, disk_result(0.95, 0.1))
    assert verdict.status is Status.WARNING
    assert verdict.pending is Status.CRITICAL
    assert verdict.state == WindowState(warning_since=T0, critical_since=T0 + 360)
    assert story.at(660, disk_result(0.95, 0.1)).status is Status.CRITICAL


def test_evaluate_critical_easing_to_warning_keeps_warning_window():
    story = Story(disk_check(warning="80%", critical="90%", **{"for": "5m"}))
    story.at(0, disk_result(0.95, 0.1))
    assert story.at(300, disk_result(0.95, 0.1)).status is Status.CRITICAL
    verdict = story.at(360, disk_result(0.85, 0.1))
    assert verdict.status is Status.WARNING
    assert verdict.state == WindowState(warning_since=T0, critical_since=None)


def test_evaluate_recovery_resets_window():
    story = Story(disk_check(warning="80%", **{"for": "5m"}))
    story.at(0, disk_result(0.85, 0.1))
    recovered = story.at(200, disk_result(0.50, 0.1))
    assert recovered.status is Status.OK
    assert recovered.pending is Status.OK
    assert recovered.state == WindowState()
    assert recovered.summary == "disk used: …"
    again = story.at(400, disk_result(0.85, 0.1))       # 400 s after the first breach, 0 s into this one
    assert again.status is Status.OK
    assert again.pending is Status.WARNING
    assert again.state.warning_since == T0 + 400
    assert story.at(700, disk_result(0.85, 0.1)).status is Status.WARNING


def test_evaluate_unknown_result_leaves_window_untouched():
    story = Story(disk_check(warning="80%", **{"for": "5m"}))
    story.at(0, disk_result(0.85, 0.1))
    before = story.state
    verdict = story.at(200, CheckResult.unknown("statvfs timed out"))
    assert verdict.status is Status.UNKNOWN
    assert verdict.summary == "statvfs timed out"
    assert verdict.pending is Status.OK
    assert verdict.state == before
    # the breach kept counting from its start: no data neither confirms nor clears it
    assert story.at(300, disk_result(0.85, 0.1)).status is Status.WARNING


def test_evaluate_unknown_result_on_clean_state_stays_clean():
    story = Story(disk_check(warning="80%", **{"for": "5m"}))
    assert story.at(0, CheckResult.unknown("no data")).state == WindowState()


def test_evaluate_check_own_critical_is_never_delayed():
    check = NetworkLatencyCheck(NetworkLatencyCheck.Options.model_validate(
        {"name": "db-link", "type": "network_latency", "targets": ["10.0.0.5:5432"],
         "warning": "50ms", "critical": "200ms", "for": "10m"}))
    result = CheckResult.critical("10.0.0.5:5432 unreachable: Connection refused",
                                  [sample("reachable", 0, target="10.0.0.5:5432")])
    verdict = evaluate(check, result, WindowState(), T0)
    assert verdict.status is Status.CRITICAL
    assert verdict.summary.startswith("10.0.0.5:5432 unreachable")
    assert verdict.state == WindowState()       # nothing breached a threshold: no window opened


def test_evaluate_check_own_critical_with_pending_breach_stays_critical():
    check = NetworkLatencyCheck(NetworkLatencyCheck.Options.model_validate(
        {"name": "links", "type": "network_latency", "targets": ["10.0.0.5:5432", "10.0.0.6:5432"],
         "warning": "50ms", "for": "10m"}))
    result = CheckResult.critical("10.0.0.6:5432 unreachable: timed out; 10.0.0.5:5432 80.0ms", [
        sample("reachable", 1, target="10.0.0.5:5432"), sample("latency_seconds", 0.08, target="10.0.0.5:5432"),
        sample("reachable", 0, target="10.0.0.6:5432")])
    verdict = evaluate(check, result, WindowState(), T0)
    assert verdict.status is Status.CRITICAL
    assert verdict.pending is Status.WARNING
    assert "latency_seconds 10.0.0.5:5432 80ms > 50ms" in verdict.summary


# --- direction, several samples ---------------------------------------------------------------

@pytest.mark.parametrize(("count", "expected"), [
    (0, Status.CRITICAL), (1, Status.CRITICAL), (2, Status.WARNING), (3, Status.OK), (8, Status.OK)])
def test_evaluate_process_count_below_thresholds_alarms(count, expected):
    check = process_check(warning=3, critical=2)
    verdict = evaluate(check, instances(count), WindowState(), T0)
    assert verdict.status is expected
    if expected is not Status.OK:
        assert f"instances {count} <" in verdict.summary


def test_evaluate_process_count_below_critical_names_limit():
    verdict = evaluate(process_check(critical=2), instances(1), WindowState(), T0)
    assert verdict.status is Status.CRITICAL
    assert verdict.summary.startswith("instances 1 < 2 — ")


def test_evaluate_process_count_below_sustained_is_pending_first():
    story = Story(process_check(critical=2, **{"for": "1m"}))
    first = story.at(0, instances(1))
    assert (first.status, first.pending) == (Status.OK, Status.CRITICAL)
    assert story.at(60, instances(1)).status is Status.CRITICAL
    assert story.at(90, instances(2)).state == WindowState()


def test_evaluate_several_mounts_worst_breach_wins():
    check = disk_check(warning="80%", critical="90%")
    verdict = evaluate(check, disk_result(0.85, 0.95), WindowState(), T0)
    assert verdict.status is Status.CRITICAL
    assert "used_ratio / 85% > 80%" in verdict.summary
    assert "used_ratio /var/lib/postgresql 95% > 90%" in verdict.summary


def test_evaluate_summary_names_only_breaching_sample():
    check = disk_check(warning="80%")
    verdict = evaluate(check, disk_result(0.30, 0.85), WindowState(), T0)
    assert verdict.status is Status.WARNING
    assert verdict.summary.startswith("used_ratio /var/lib/postgresql 85% > 80% — ")
    assert "used_ratio / " not in verdict.summary


def test_evaluate_disk_inodes_breach_alarms_with_space_free():
    check = disk_check(warning="80%", critical="90%")
    verdict = evaluate(check, disk_result(0.10, 0.10, inodes=0.97), WindowState(), T0)
    assert verdict.status is Status.CRITICAL
    assert "inodes_used_ratio /var/lib/postgresql 97% > 90%" in verdict.summary


def test_evaluate_load_thresholds_apply_to_configured_period_only():
    check = LoadCheck(LoadCheck.Options.model_validate(
        {"name": "load", "type": "load", "period": "15m", "warning": 1.5}))
    result = CheckResult.ok("load", [sample("per_core", 4.0, period="1m"), sample("per_core", 2.0, period="5m"),
                                     sample("per_core", 1.0, period="15m")])
    assert evaluate(check, result, WindowState(), T0).status is Status.OK
    busy = CheckResult.ok("load", [sample("per_core", 1.0, period="1m"), sample("per_core", 2.0, period="15m")])
    verdict = evaluate(check, busy, WindowState(), T0)
    assert verdict.status is Status.WARNING
    assert "per_core 15m 2 > 1.5" in verdict.summary


def test_breach_level_ignores_samples_outside_threshold_metrics():
    check = disk_check(warning="1%")
    result = CheckResult.ok("x", [sample("free_bytes", 1e12, mount="/"), sample("size_bytes", 1e12, mount="/")])
    assert breach_level(check, result) == (Status.OK, [])
