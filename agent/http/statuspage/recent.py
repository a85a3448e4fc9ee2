"""The last 24 hours of every check in half-hour buckets: the overview's sparklines and availability bars.

Reading a day of runs of 100 checks on every page load would mean some 150 000 rows a request. The buckets
are kept between requests instead, and each request adds only the runs committed since the one before (one
index seek per check when nothing new arrived); the first request after a start pays for the whole day once.
Runs of one check never overlap, so they are committed in the order they started: "started after the
newest one seen" misses none. A clock stepped back is the exception; its runs show from the next start.
"""

from __future__ import annotations

import sqlite3
import threading
from dataclasses import dataclass, field
from typing import Any, Callable

from agent.http.statuspage.queries import MainValue, day_buckets

BUCKET_SECONDS = 1800.0
BUCKETS = 48              # 24 h
_NONE = (0, 0, 0, 0)


@dataclass
class _Bucket:
    counts: list[int] = field(default_factory=lambda: [0, 0, 0, 0])
    value: float | None = None    # the worst main value of its runs


@dataclass
class _Check:
    main: MainValue | None
    seen: float = float("-inf")   # newest run added
    buckets: dict[int, _Bucket] = field(default_factory=dict)
    drawn: tuple[int, Any] | None = None   # (first bucket, what `draw` made of the day) while nothing changed


@dataclass(frozen=True)
class Day:
    """One check's last 24 h, oldest first: status counts (ok, warning, critical, unknown) and the worst
    main value of each bucket; bucket `first` starts at first × BUCKET_SECONDS."""

    first: int
    counts: list[tuple[int, int, int, int]]
    values: list[float | None]


class Recent:
    """Per store, per check id: the buckets and the newest run they include. Safe to share across threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._checks: dict[tuple[str, int], _Check] = {}

    def day(self, conn: sqlite3.Connection, store: str, check_id: int, main: MainValue | None, now: float,
            draw: Callable[[Day], Any] = lambda day: day) -> Any:
        """Given the store's read-only connection, the check's id and main value and the time, return
        `draw(day)` of its last 24 h; drawn again only when a run arrived or the window moved on."""
        current = int(now // BUCKET_SECONDS)
        first = current - BUCKETS + 1
        with self._lock:
            state = self._checks.get((store, check_id))
            if state is None or state.main != main:
                state = self._checks[(store, check_id)] = _Check(main)
            after = max(state.seen, first * BUCKET_SECONDS - 1e-6)
            for bucket, _runs, ok, warning, critical, unknown, newest, value in day_buckets(
                    conn, check_id, after, BUCKET_SECONDS, main):
                slot = state.buckets.setdefault(bucket, _Bucket())
                for index, count in enumerate((ok, warning, critical, unknown)):
                    slot.counts[index] += count or 0
                if value is not None:
                    slot.value = value if slot.value is None else _worse(main, slot.value, value)
                state.seen = max(state.seen, newest)
                state.drawn = None
            for old in [b for b in state.buckets if b < first]:
                del state.buckets[old]
            if state.drawn is None or state.drawn[0] != first:
                slots = [state.buckets.get(bucket) for bucket in range(first, current + 1)]
                day = Day(first, [tuple(s.counts) if s else _NONE for s in slots],
                          [s.value if s else None for s in slots])
                state.drawn = (first, draw(day))
            return state.drawn[1]

    def forget(self, keep: set[tuple[str, int]]) -> None:
        """Drop checks no longer configured (a reload removed them)."""
        with self._lock:
            for key in [k for k in self._checks if k not in keep]:
                del self._checks[key]


def _worse(main: MainValue | None, a: float, b: float) -> float:
    return max(a, b) if main is None or main.bad_when == "above" else min(a, b)
