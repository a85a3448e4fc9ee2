"""The scheduler's pure planning: interval cadence, calendar slots, catch-up once after downtime."""

from datetime import datetime
from zoneinfo import ZoneInfo

from agent.plugin.calendar import parse_calendar
from agent.config.triggers import Calendar, Interval
from agent.scheduler import plan_next, plan_start

BERLIN = ZoneInfo("Europe/Berlin")


def ts(text: str, tz=BERLIN) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=tz).timestamp()


DAILY = Calendar(parse_calendar("02:30"), "daily")


def test_plan_start_interval_never_run_runs_now():
    plan = plan_start(Interval(15), None, None, 1000.0, BERLIN, "h/c", 0)
    assert plan.next_due == 1000.0 and not plan.catch_up


def test_plan_start_interval_recent_run_waits_for_rest_of_interval():
    plan = plan_start(Interval(60), None, 990.0, 1000.0, BERLIN, "h/c", 0)
    assert plan.next_due == 1050.0


def test_plan_start_interval_jitter_spreads_first_run_within_interval():
    plans = {plan_start(Interval(60), None, None, 1000.0, BERLIN, f"host{i}/c", 30).next_due for i in range(20)}
    assert len(plans) > 1 and all(1000.0 <= p < 1030.0 for p in plans)


def test_plan_next_interval_keeps_cadence_without_drift():
    plan = plan_next(Interval(15), 1000.0, None, 1000.4, BERLIN, "h/c", 0)
    assert plan.next_due == 1015.0


def test_plan_next_interval_after_stall_skips_missed_slots():
    plan = plan_next(Interval(15), 1000.0, None, 1100.0, BERLIN, "h/c", 0)
    assert plan.next_due == 1105.0


def test_plan_start_calendar_first_sight_arms_without_running():
    now = ts("2026-11-23T10:00")
    plan = plan_start(DAILY, None, None, now, BERLIN, "h/c", 0)
    assert plan.arm and not plan.catch_up
    assert plan.next_due == ts("2026-11-24T02:30")


def test_plan_start_calendar_missed_while_down_catches_up_once():
    last_fired = ts("2026-11-20T02:30")
    now = ts("2026-11-23T10:00")          # three slots missed
    plan = plan_start(DAILY, last_fired, None, now, BERLIN, "h/c", 0)
    assert plan.catch_up and plan.next_due == now
    following = plan_next(DAILY, plan.next_due, plan.next_fire, now, BERLIN, "h/c", 0)
    assert following.next_due == ts("2026-11-24T02:30")   # not the 21st, 22nd, 23rd


def test_plan_start_calendar_nothing_missed_waits_for_next_slot():
    plan = plan_start(DAILY, ts("2026-11-23T02:30"), None, ts("2026-11-23T10:00"), BERLIN, "h/c", 0)
    assert not plan.catch_up and plan.next_due == ts("2026-11-24T02:30")


def test_plan_next_calendar_jitter_stays_stable_per_host():
    fired = ts("2026-11-23T02:30")
    a = plan_next(DAILY, fired, fired, fired, BERLIN, "host-a/c", 600)
    b = plan_next(DAILY, fired, fired, fired, BERLIN, "host-a/c", 600)
    assert a == b
    assert a.next_fire == ts("2026-11-24T02:30") and a.next_fire <= a.next_due < a.next_fire + 600


def test_plan_next_calendar_dst_fall_back_runs_once_per_day():
    slot = Calendar(parse_calendar("02:30"), "x")
    plan = plan_start(slot, ts("2026-10-23T02:30"), None, ts("2026-10-23T03:00"), BERLIN, "h/c", 0)
    days = []
    for _ in range(5):
        days.append(datetime.fromtimestamp(plan.next_due, BERLIN).date().isoformat())
        plan = plan_next(slot, plan.next_due, plan.next_fire, plan.next_due, BERLIN, "h/c", 0)
    assert days == ["2026-10-24", "2026-10-25", "2026-10-26", "2026-10-27", "2026-10-28"]


def test_clamp_to_clock_interval_after_clock_step_back_due_within_one_interval():
    from agent.scheduler import clamp_to_clock
    assert clamp_to_clock(Interval(15), 1000.0 + 3600, 1000.0) == 1015.0
    assert clamp_to_clock(Interval(15), 1010.0, 1000.0) == 1010.0


def test_clamp_to_clock_calendar_slot_unchanged():
    from agent.scheduler import clamp_to_clock
    assert clamp_to_clock(DAILY, 1000.0 + 86400, 1000.0) == 1000.0 + 86400


def test_plan_start_interval_last_run_in_future_after_clock_step_back_not_delayed():
    plan = plan_start(Interval(60), None, 5000.0, 1000.0, BERLIN, "h/c", 0)
    assert plan.next_due == 1060.0


class _Due:
    def __init__(self, name, next_due):
        self.name, self.next_due = name, next_due


def test_due_queue_gives_due_jobs_once_in_order_and_the_soonest_of_the_rest():
    from agent.scheduler import DueQueue
    a, b, c = _Due("a", 10.0), _Due("b", 5.0), _Due("c", 20.0)
    queue = DueQueue([a, b, c])
    assert queue.soonest() == 5.0
    assert queue.pop_due(4.0) == []
    assert [j.name for j in queue.pop_due(10.0)] == ["b", "a"]
    assert queue.soonest() == 20.0 and queue.pop_due(10.0) == []


def test_due_queue_job_moved_after_push_surfaces_at_its_new_time_only():
    from agent.scheduler import DueQueue
    a, b = _Due("a", 10.0), _Due("b", 15.0)
    queue = DueQueue([a, b])
    a.next_due = 30.0                  # dispatched and planned: the old entry at 10 is stale
    queue.push(a)
    assert queue.soonest() == 15.0
    assert [j.name for j in queue.pop_due(20.0)] == ["b"]
    a.next_due = 25.0                  # moved twice, pushed twice: still given once
    queue.push(a)
    queue.push(a)
    assert [j.name for j in queue.pop_due(40.0)] == ["a"]
    assert queue.soonest() == float("inf")
