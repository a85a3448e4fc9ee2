"""The result model every check returns (Nagios plugin convention)."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any


SUMMARY_CAP_CHARS = 300   # a summary is one line for a table, a log line or a mail subject


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
    return Sample(name, float(value), tuple(sorted(labels.items())))


@dataclass(frozen=True)
class CheckResult:
    """What a check measured. `status` here is the check's own verdict (e.g. a
    target unreachable); thresholds from config are applied afterwards by
    `agent.evaluate`."""

    status: Status
    summary: str
    samples: tuple[Sample, ...] = ()
    details: dict[str, Any] = field(default_factory=dict)

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
