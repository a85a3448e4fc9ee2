"""The result model every check returns (Nagios plugin convention)."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any


SUMMARY_CAP_CHARS = 300   # a summary is one line for a table, a log line or a mail subject


def cap_summary(text: str, limit: int = SUMMARY_CAP_CHARS) -> str:
    """Given a summary, return it cut to at most `limit` characters, a cut marked with "…"."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


class Status(enum.IntEnum):
    """Nagios order: the number is the exit code and the exported gauge value."""

    OK = 0
    WARNING = 1
    CRITICAL = 2
    UNKNOWN = 3

    @property
    def label(self) -> str:
        return _LABEL[self]

    @property
    def severity(self) -> int:
        """Rank for "worst of": OK < WARNING < UNKNOWN < CRITICAL (Checkmk's order).

        UNKNOWN outranks WARNING because a check that cannot tell may hide a
        failure; it stays below CRITICAL, which is a known failure.
        """
        return _SEVERITY[self]

    @classmethod
    def parse(cls, text: str) -> "Status":
        try:
            return cls[text.strip().upper()]
        except KeyError:
            raise ValueError(f"unknown status {text!r} (expected ok, warning, critical, unknown)") from None


_SEVERITY = {Status.OK: 0, Status.WARNING: 1, Status.UNKNOWN: 2, Status.CRITICAL: 3}
_LABEL = {s: s.name.lower() for s in Status}   # looked up per result: not an enum property and a lower() each time


def worst(*statuses: Status) -> Status:
    """Return the most severe status (OK when given none)."""
    return max(statuses, key=_SEVERITY.__getitem__, default=Status.OK)


@dataclass(frozen=True)
class Sample:
    """One measured value. `labels` are sorted (key, value) pairs of bounded cardinality."""

    name: str
    value: float
    labels: tuple[tuple[str, str], ...] = ()

    @property
    def key(self) -> str:
        """Stable text key used in the store: `used_ratio{mount=/}`."""
        if not self.labels:
            return self.name
        inner = ",".join(f"{k}={v}" for k, v in self.labels)
        return f"{self.name}{{{inner}}}"

    def label(self, name: str) -> str | None:
        return dict(self.labels).get(name)


def sample(name: str, value: float, **labels: str) -> Sample:
    return Sample(name, float(value), tuple(sorted(labels.items())) if labels else ())


@dataclass(frozen=True)
class CheckResult:
    """What a check measured. `status` here is the check's own verdict (e.g. a
    target unreachable); thresholds from config are applied afterwards by
    `agent.evaluate`."""

    status: Status
    summary: str
    samples: tuple[Sample, ...] = ()
    details: dict[str, Any] = field(default_factory=dict)
    recheck_at: float | None = None   # the verdict changes by itself then (a job's deadline): run again at that time

    def __post_init__(self):
        """One value per series: a second sample with the same name and labels (a plugin printing a label
        twice, a mount listed twice) would be a duplicate series in /metrics and a silent overwrite in the
        store. The first is kept; the keys of the dropped ones go to details["duplicate_samples"]."""
        if len({(s.name, s.labels) for s in self.samples}) == len(self.samples):
            return   # what nearly every result is: nothing to drop
        seen, kept, dropped = set(), [], []
        for s in self.samples:
            series = (s.name, s.labels)
            if series in seen:
                dropped.append(s.key)
            else:
                seen.add(series)
                kept.append(s)
        if dropped:
            object.__setattr__(self, "samples", tuple(kept))
            object.__setattr__(self, "details", {**self.details, "duplicate_samples": sorted(set(dropped))})

    @classmethod
    def ok(cls, summary: str, samples=(), **details: Any) -> "CheckResult":
        return cls(Status.OK, summary, tuple(samples), details)

    @classmethod
    def unknown(cls, summary: str, **details: Any) -> "CheckResult":
        return cls(Status.UNKNOWN, summary, (), details)

    @classmethod
    def critical(cls, summary: str, samples=(), **details: Any) -> "CheckResult":
        return cls(Status.CRITICAL, summary, tuple(samples), details)


@dataclass(frozen=True)
class Evaluated:
    """A result after thresholds and sustained windows: what is stored and exported."""

    check: str
    check_type: str
    status: Status
    summary: str
    samples: tuple[Sample, ...]
    details: dict[str, Any]
    started: float          # wall-clock epoch seconds
    duration: float         # seconds
    scheduled: float        # wall-clock epoch seconds the run was due
    pending: Status = Status.OK   # status a breach will turn into once its `for` window has held
    maintenance: bool = False     # ran while the check was in maintenance: its actions were held
