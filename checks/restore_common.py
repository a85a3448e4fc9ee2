"""What the restore tests share: the sanity queries run in a restored database, how their values are shown and
stored, and the metrics both restore types report under (so one alert rule covers a scratch database and a
scratch cluster alike)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from agent.plugin.fields import PositiveDuration
from checks.base import MetricSpec

RESTORE_METRICS = (
    MetricSpec("restore_last_success_timestamp_seconds", "seconds",
               "Unix time the latest passing restore test ended (0: none since the agent started)."),
    MetricSpec("restore_passed", "boolean", "1 when the latest restore test restored and passed every sanity "
                                            "query."),
    MetricSpec("restore_duration_seconds", "seconds",
               "Time to restore the backup: create the scratch database and load it, or extract or initdb a "
               "scratch cluster and recover or load it (the measured RTO)."),
    MetricSpec("restore_database_size_bytes", "bytes", "Size of the restored database (all of a scratch "
                                                            "cluster's)."),
    MetricSpec("restore_tables", "count", "Tables in the restored database (all of a scratch cluster's)."),
    MetricSpec("restore_sanity_failed", "count", "Sanity queries that failed or missed their expectation."),
)


class SanityQuery(BaseModel):
    """One query run in the restored scratch database (read-only) and what its first column must be."""

    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)
    query: str = Field(..., min_length=1, description="SQL returning one value, e.g. SELECT count(*) FROM users")
    name: str | None = Field(None, description="shown in the summary instead of the query text")
    min: float | None = Field(None, description="the value must be at least this")
    max: float | None = Field(None, description="the value must be at most this")
    equals: float | str | None = Field(None, description="the value must equal this")
    timeout: PositiveDuration | None = Field(None, description="statement_timeout of this query; default: the check's")

    @model_validator(mode="after")
    def _range(self):
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min ({self.min:g}) is above max ({self.max:g})")
        return self

    def label(self) -> str:
        return self.name or (self.query if len(self.query) <= 60 else self.query[:59] + "…")

    def expectation(self) -> str:
        parts = [f"≥ {self.min:g}" if self.min is not None else "",
                 f"≤ {self.max:g}" if self.max is not None else "",
                 f"= {self.equals}" if self.equals is not None else ""]
        return " and ".join(p for p in parts if p) or "runs without error"

    def failure(self, value: Any, rows: int) -> str | None:
        """Given the first column of the first row (and how many rows came), return why it misses, or None."""
        if self.min is None and self.max is None and self.equals is None:
            return None
        if rows == 0:
            return "returned no row"
        if value is None:
            return "returned NULL"
        number = numeric(value)
        if self.equals is not None:
            same = (number == float(self.equals)) if isinstance(self.equals, float) and number is not None \
                else str(value) == str(self.equals)
            if not same:
                return f"returned {shown(value)}, expected = {self.equals}"
        if self.min is not None or self.max is not None:
            if number is None:
                return f"returned {shown(value)}, not a number"
            if self.min is not None and number < self.min:
                return f"returned {shown(value)}, expected ≥ {self.min:g}"
            if self.max is not None and number > self.max:
                return f"returned {shown(value)}, expected ≤ {self.max:g}"
        return None


def numeric(value: Any) -> float | None:
    if isinstance(value, bool):
        return float(value)
    try:
        return float(value) if isinstance(value, (int, float)) or type(value).__name__ == "Decimal" else None
    except (TypeError, ValueError):
        return None


def shown(value: Any) -> str:
    number = numeric(value)
    return f"{number:g}" if number is not None else repr(str(value)[:60])


def jsonable(value: Any) -> Any:
    number = numeric(value)
    if number is not None:
        return int(number) if number.is_integer() and abs(number) < 2**53 else number
    if value is None or isinstance(value, str):
        return value
    return value.isoformat() if hasattr(value, "isoformat") else str(value)


def run_sanity(conn, query: SanityQuery, limit: float) -> tuple[Any, str | None]:
    """Given a psycopg connection to a restored database, run `query` under `limit` seconds of
    statement_timeout; return its first value (JSON-ready) and why it misses its expectation (None
    when it passes). psycopg's errors (QueryCanceled at the timeout) reach the caller, which knows
    whether the test's own deadline or the query's timeout ran out."""
    conn.execute(f"SET statement_timeout = {max(1, int(limit * 1000))}")
    cur = conn.execute(query.query)
    rows = cur.fetchmany(2) if cur.description else []
    value = next(iter(rows[0].values()), None) if rows else None
    return jsonable(value), query.failure(value, len(rows))
