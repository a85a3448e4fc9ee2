"""The agent's own scheduled work, next to the checks: store maintenance, scheduled reports, the report
outbox, the S3 history archive.

Each task is a calendar slot (persisted in `scheduler_state` under a `_`-prefixed name, so a slot missed
while the agent was down is caught up once, like a check) or an interval, and runs on its own thread;
a task still running when it is due again is not started twice. A task's failure is logged, never fatal.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Callable
from zoneinfo import ZoneInfo

from agent.plugin import logs
from agent.config.triggers import Calendar, Interval
from agent.scheduler import Plan, plan_next, plan_start


@dataclass
class Task:
    name: str                          # `_store_maintenance`, `_report:weekly`, `_outbox`, `_archive`
    trigger: Calendar | Interval
    work: Callable[[float], dict | None]
    plan: Plan | None = None
    thread: threading.Thread | None = field(default=None, repr=False)

    def same_as(self, other: "Task") -> bool:
        return self.name == other.name and self.trigger == other.trigger


class Tasks:
    def __init__(self, mark_slot: Callable[[str, float], None]):
        self._mark_slot = mark_slot
        self.tasks: dict[str, Task] = {}

    def configure(self, tasks: list[Task], persisted: dict[str, tuple[float | None, float | None]], now: float,
                  tz: ZoneInfo) -> None:
        """Adopt a (new) set of tasks; an unchanged task keeps its plan and running thread."""
        self.tz = tz
        adopted: dict[str, Task] = {}
        for task in tasks:
            old = self.tasks.get(task.name)
            if old and old.same_as(task):
                old.work = task.work    # the new config's closure
                adopted[task.name] = old
                continue
            fired, _ = persisted.get(task.name, (None, None))
            task.plan = plan_start(task.trigger, fired, None, now, tz, task.name, 0)
            if task.plan.arm:
                self._mark_slot(task.name, now)
            adopted[task.name] = task
        self.tasks = adopted

    def run_due(self, now: float) -> float | None:
        """Start every due task; return seconds until the next one is due."""
        for task in self.tasks.values():
            plan = task.plan
            if plan is None or plan.next_due > now or (task.thread and task.thread.is_alive()):
                continue
            if plan.next_fire is not None:
                self._mark_slot(task.name, plan.next_fire)
            task.thread = threading.Thread(target=self._run, args=(task,), name=f"task{task.name}", daemon=True)
            task.thread.start()
            task.plan = plan_next(task.trigger, plan.next_due, plan.next_fire, now, self.tz, task.name, 0)
        dues = [t.plan.next_due - now for t in self.tasks.values() if t.plan]
        return max(0.0, min(dues)) if dues else None

    @staticmethod
    def _run(task: Task) -> None:
        started = time.monotonic()
        try:
            done = task.work(time.time())
            if done:
                logs.event("task.done", task=task.name.lstrip("_"), seconds=f"{time.monotonic() - started:.2f}",
                           **{k: v for k, v in done.items() if v is not None})
        except Exception as exc:  # a task's failure is reported, and the next slot tries again
            logs.event("task.failed", "error", task=task.name.lstrip("_"), error=f"{type(exc).__name__}: {exc}")

    def join(self, timeout: float) -> None:
        end = time.monotonic() + timeout
        for task in self.tasks.values():
            if task.thread and task.thread.is_alive():
                task.thread.join(max(0.0, end - time.monotonic()))
