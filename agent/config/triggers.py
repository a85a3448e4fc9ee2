"""What makes a job run: a fixed interval or a calendar. Derived once from the config, read by the
scheduler, the daemon's own tasks, the reports and the status page."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Union

from agent.plugin.calendar import CalendarSpec


@dataclass(frozen=True)
class Interval:
    seconds: float


@dataclass(frozen=True)
class Calendar:
    spec: CalendarSpec
    name: str   # the `schedules:` name, or the spec as written


Trigger = Union[Interval, Calendar]
