"""heartbeat: a job's dead man's switch, judged from the signals it sent.

The operator story: the nightly pg_dump cron job reports through `maint-agent ping`; when it
stops reporting the check turns late (WARNING), then down (CRITICAL) once the grace is over; a
reported failure is CRITICAL at once; a run that started and never finished is down after the
grace; a job on a calendar is due after its next cron time, in the agent's zone. The verdict is a
pure function of (signals, watched since, now) and is tested with a fake clock; the check reads
the signals from a real store written by the same code `ping` uses.
"""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from agent.config.load import parse_config
from agent.plugin.heartbeat import Signal, Signals, record
from agent.plugin.result import Status
from agent.store.writer import Store
from agent.config.triggers import Interval
from checks.base import CheckContext
from checks.heartbeat import HeartbeatCheck, judge
from tests.metrics_contract import assert_family_contract

HOUR, DAY = 3600.0, 86400.0
T0 = 1_800_000_000.0   # 2027-01-15 08:00 UTC


def every_day(at: float) -> float:
    return at + DAY


def ok(at, duration=None):
    return Signal(at, "success", 0, duration)


def test_judge_never_signalled_is_new_until_a_period_after_the_agent_began_watching():
    new = judge(Signals(), T0, T0 + 10 * HOUR, every_day, HOUR)
    assert (new.state, new.deadline, new.next_change) == ("new", T0 + DAY, T0 + DAY)
    assert new.summary.startswith("new: no signal yet; next due in 14h")
    assert judge(Signals(), T0, T0 + DAY + 60, every_day, HOUR).state == "late"
    never = judge(Signals(), T0, T0 + DAY + 2 * HOUR, every_day, HOUR)
    assert never.state == "down" and "no signal yet" in never.summary


def test_judge_success_within_period_is_up_then_late_then_down_after_grace():
    signals = Signals(start=Signal(T0 - 300, "start"), finish=ok(T0, 300), success=ok(T0, 300))
    up = judge(signals, T0 - DAY, T0 + HOUR, every_day, HOUR)
    assert (up.state, up.next_change) == ("up", T0 + DAY)
    assert up.summary == "up: last success 1h ago (took 5m); next due in 23h"
    late = judge(signals, T0 - DAY, T0 + DAY + 600, every_day, HOUR)
    assert (late.state, late.next_change) == ("late", T0 + DAY + HOUR)
    assert late.summary == "late: last success 1d10m ago (took 5m); due 10m ago, down in 50m"
    down = judge(signals, T0 - DAY, T0 + DAY + HOUR, every_day, HOUR)
    assert (down.state, down.next_change) == ("down", None)


def test_judge_reported_failure_is_failed_until_the_next_success():
    failed = Signal(T0, "fail", 3, 42.0, "pg_dump: error: connection to server failed\n")
    signals = Signals(start=Signal(T0 - 42, "start"), finish=failed, success=ok(T0 - DAY))
    verdict = judge(signals, T0 - 2 * DAY, T0 + 60, every_day, HOUR)
    assert verdict.state == "failed" and verdict.next_change is None
    assert verdict.summary == "failed: exit status 3 1m ago (took 42s): pg_dump: error: connection to server failed"


def test_judge_started_run_is_up_until_the_grace_then_down():
    signals = Signals(start=Signal(T0 + DAY, "start"), finish=ok(T0), success=ok(T0))
    running = judge(signals, T0 - DAY, T0 + DAY + 600, every_day, HOUR)
    assert (running.state, running.next_change) == ("up", T0 + DAY + HOUR)
    assert running.summary.startswith("up: running since 10m ago")
    hung = judge(signals, T0 - DAY, T0 + DAY + HOUR, every_day, HOUR)
    assert hung.state == "down" and "did not finish within the grace of 1h" in hung.summary


def test_check_schedule_is_due_after_the_next_cron_time_in_the_agent_zone(tmp_path):
    """A 02:00 Asia/Ho_Chi_Minh job (19:00 UTC) that succeeded at 02:20 is due again at 02:00 the next day."""
    store = Store(tmp_path / "maint-agent.db")
    zone = ZoneInfo("Asia/Ho_Chi_Minh")
    success = datetime(2027, 1, 15, 2, 20, tzinfo=zone).timestamp()
    record(store.conn, "nightly", "success", success)
    check = HeartbeatCheck(HeartbeatCheck.Options(name="nightly", type="heartbeat", schedule="02:00", grace="1h"))
    now = success + 12 * HOUR
    result = check.run(CheckContext(5, wall=lambda: now, store=store.path, tz=zone))
    due = datetime(2027, 1, 16, 2, 0, tzinfo=zone).timestamp()
    assert result.status is Status.OK and result.recheck_at == due
    assert dict((s.name, s.value) for s in result.samples)["deadline_timestamp_seconds"] == due
    late = check.run(CheckContext(5, wall=lambda: due + 60, store=store.path, tz=zone))
    assert late.status is Status.WARNING and late.details["state"] == "late"


def test_check_reads_signals_from_the_store_and_measures_the_run_from_its_start(tmp_path):
    store = Store(tmp_path / "maint-agent.db")
    record(store.conn, "dump", "start", T0)
    record(store.conn, "dump", "success", T0 + 95, exit_status=0)
    check = HeartbeatCheck(HeartbeatCheck.Options(name="dump", type="heartbeat", period="1d"))
    result = check.run(CheckContext(5, wall=lambda: T0 + 100, store=store.path))
    values = {s.name: s.value for s in result.samples}
    assert result.status is Status.OK and values["last_duration_seconds"] == 95
    assert values["last_success_timestamp_seconds"] == T0 + 95 and values["running"] == 0
    assert values["last_exit_status"] == 0 and result.details["state"] == "up"
    record(store.conn, "dump", "fail", T0 + 200, exit_status=2, message="disk full")
    failed = check.run(CheckContext(5, wall=lambda: T0 + 201, store=store.path))
    assert failed.status is Status.CRITICAL and failed.details["message"] == "disk full"
    assert_family_contract(check, [result, failed])


def test_check_without_store_is_new_and_a_missing_store_is_not_an_error(tmp_path):
    check = HeartbeatCheck(HeartbeatCheck.Options(name="dump", type="heartbeat", period="1h"))
    assert check.run(CheckContext(5)).status is Status.UNKNOWN
    fresh = check.run(CheckContext(5, wall=lambda: T0, store=tmp_path / "none.db"))
    assert fresh.status is Status.OK and fresh.details["state"] == "new"


def test_record_keeps_at_most_10_kb_of_a_message(tmp_path):
    store = Store(tmp_path / "maint-agent.db")
    signal = record(store.conn, "dump", "fail", T0, message="é" * 20000)
    assert len(signal.message.encode()) <= 10 * 1024
    stored = store.conn.execute("SELECT message FROM heartbeat_signals").fetchone()[0]
    assert stored == signal.message


BASE = """
agent: {state_dir: var}
schedules: {nightly: "02:30"}
checks:
"""


def test_config_heartbeat_schedule_name_resolves_and_the_check_runs_on_its_own_interval():
    loaded = parse_config(BASE + """
  - {name: dump, type: heartbeat, schedule: nightly, grace: 1h, every: 30s}
  - {name: batch, type: heartbeat, period: 15m}
""", "agent.yaml")
    dump, batch = loaded.checks
    assert dump.schedule == "02:30" and loaded.triggers["dump"] == Interval(30.0)
    assert batch.period == 900.0 and batch.grace == 3600.0 and loaded.triggers["batch"] == Interval(60.0)


@pytest.mark.parametrize("entry, error", [
    ("{name: dump, type: heartbeat}", "agent.yaml:5: checks[0]: give the job's rhythm: either period"),
    ("{name: dump, type: heartbeat, period: 1d, schedule: '02:00'}", "agent.yaml:5: checks[0]: give the job's"),
    ("{name: dump, type: heartbeat, schedule: nigthly}",
     "agent.yaml:5: checks[0].schedule: not a schedule name (daily, weekly, monthly, quarterly, nightly) nor a "
     "calendar spec"),
    ("{name: dump, type: heartbeat, period: 0s}", "agent.yaml:5: checks[0].period: must be above 0"),
])
def test_config_heartbeat_errors_are_located(entry, error):
    from agent.config.yamlsrc import ConfigError
    with pytest.raises(ConfigError) as caught:
        parse_config(BASE + f"  - {entry}\n", "agent.yaml")
    assert error in str(caught.value)


def test_retention_prunes_old_signals_but_keeps_each_jobs_latest(tmp_path):
    """A monthly job whose last run is older than the raw retention must not turn "new" again."""
    from agent.plugin.heartbeat import latest, prune
    store = Store(tmp_path / "maint-agent.db")
    for day in range(5):
        record(store.conn, "monthly", "start", T0 + day * DAY)
        record(store.conn, "monthly", "success" if day % 2 else "fail", T0 + day * DAY + 60)
    before = latest(store.conn, "monthly")
    assert prune(store.conn, T0 + 100 * DAY) == 7
    assert latest(store.conn, "monthly") == before
    assert store.conn.execute("SELECT count(*) FROM heartbeat_signals").fetchone()[0] == 3
