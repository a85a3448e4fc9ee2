"""When each check runs next: pure functions of (trigger, persisted state, now).

Interval checks keep their cadence (no drift) and skip slots missed while the
agent was stopped or stalled. Calendar checks fire at their local wall time;
a due time missed while the agent was down is run once on start (systemd
`Persistent=true`), never once per missed slot. Times are wall-clock epoch
seconds; the calendar module does the local-time arithmetic.
"""

from __future__ import annotations

import heapq
import itertools
import math
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Generic, Protocol, TypeVar
from zoneinfo import ZoneInfo

from agent.plugin.calendar import catch_up_due, jitter_offset_seconds, next_fire
from agent.config.triggers import Interval, Trigger
from agent.plugin.units import format_duration


@dataclass(frozen=True)
class Plan:
    next_due: float             # when to start the run (jitter included)
    next_fire: float | None     # calendar: the slot itself; None for intervals
    catch_up: bool = False      # a missed calendar slot: run now, once
    arm: bool = False           # first sight of a calendar check: persist `now` as its last fired time


def _utc(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, timezone.utc)


def plan_start(trigger: Trigger, last_fired: float | None, last_run: float | None, now: float, tz: ZoneInfo,
               jitter_key: str, jitter: float) -> Plan:
    """Given the persisted state of a check at agent start, return its first run."""
    if isinstance(trigger, Interval):
        if last_run is not None and now < min(last_run, now) + trigger.seconds:
            return Plan(min(last_run, now) + trigger.seconds, None)
        return Plan(now + jitter_offset_seconds(jitter_key, min(jitter, trigger.seconds)), None)
    if last_fired is None:
        fire = next_fire(trigger.spec, _utc(now), tz).timestamp()
        return Plan(fire + jitter_offset_seconds(jitter_key, jitter), fire, arm=True)
    if catch_up_due(trigger.spec, _utc(last_fired), _utc(now), tz):
        return Plan(now, now, catch_up=True)
    fire = next_fire(trigger.spec, _utc(last_fired), tz).timestamp()
    return Plan(fire + jitter_offset_seconds(jitter_key, jitter), fire)


def plan_next(trigger: Trigger, scheduled: float, fired: float | None, now: float, tz: ZoneInfo,
              jitter_key: str, jitter: float) -> Plan:
    """Given the run just dispatched (due at `scheduled`, slot `fired`), return the following one."""
    if isinstance(trigger, Interval):
        return Plan(next_interval_due(trigger.seconds, scheduled, now), None)
    fire = next_fire(trigger.spec, _utc(max(fired if fired is not None else now, now)), tz).timestamp()
    return Plan(fire + jitter_offset_seconds(jitter_key, jitter), fire)


def next_interval_due(every: float, scheduled: float, now: float) -> float:
    """Given an interval check's run due at `scheduled`, dispatched at `now`, return when the next is due: on
    its cadence, the slots already passed (a stall) skipped."""
    return scheduled + max(1, math.floor((now - scheduled) / every) + 1) * every


def clamp_to_clock(trigger: Trigger, next_due: float, now: float) -> float:
    """After the wall clock steps back, an interval check is due at most one interval from now
    (otherwise it would pause for the size of the step); calendar slots stay where they are."""
    if isinstance(trigger, Interval):
        return min(next_due, now + trigger.seconds)
    return next_due


def jitter_key_for(hostname: str, check: str) -> str:
    """What the jitter offset hashes: stable per host and check, different across a fleet."""
    return f"{hostname}/{check}"


class _Timed(Protocol):
    next_due: float


T = TypeVar("T", bound=_Timed)


class DueQueue(Generic[T]):
    """Jobs ordered by `next_due`, so the loop takes the due ones and learns the soonest in O(log n) per
    run, not by scanning every check each time it wakes (with 1,000 checks in different phases it wakes
    about as often as there are checks). `push` a job again after changing its `next_due`; entries
    left behind by a change are recognised and dropped when they surface."""

    def __init__(self, jobs: list[T] = ()):
        self._order = itertools.count()   # ties keep insertion order; jobs themselves are not compared
        self._heap: list[tuple[float, int, T]] = [(job.next_due, next(self._order), job) for job in jobs]
        heapq.heapify(self._heap)

    def push(self, job: T) -> None:
        heapq.heappush(self._heap, (job.next_due, next(self._order), job))

    def pop_due(self, now: float) -> list[T]:
        """The jobs due at `now`, each once, in due order."""
        due: dict[int, T] = {}
        while self._heap and self._heap[0][0] <= now:
            at, _, job = heapq.heappop(self._heap)
            if at == job.next_due:
                due.setdefault(id(job), job)
        return list(due.values())

    def soonest(self) -> float:
        """The earliest `next_due` (infinity when empty); stale entries on top are dropped first."""
        while self._heap and self._heap[0][0] != self._heap[0][2].next_due:
            heapq.heappop(self._heap)
        return self._heap[0][0] if self._heap else math.inf


def describe(trigger: Trigger) -> str:
    if isinstance(trigger, Interval):
        return f"every {format_duration(trigger.seconds)}"
    return trigger.spec.describe() if trigger.name == trigger.spec.text else f"{trigger.name} ({trigger.spec.describe()})"



def compact(trigger: Trigger) -> str:
    """The schedule as the config says it, for a table column: `every 15s`, `daily 02:00`, `sun 02:30`."""
    if isinstance(trigger, Interval):
        return f"every {format_duration(trigger.seconds)}"
    text = trigger.spec.text
    return text if trigger.name == text else f"{trigger.name} {text}"
