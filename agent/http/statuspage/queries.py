"""The status page's reads: plain SQL on the store's read-only connection, every one bounded.

Rows returned are capped by LIMITs, and so are the rows a chart reads: its series, status strip and
incidents come from at most the newest RAW_SCAN_ROWS runs of the range, aggregated by SQLite into a
few hundred buckets per metric. A page costs about the same on a store of ten thousand runs or ten
million; longer ranges come from the daily rollups.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from datetime import date, datetime, time as dtime, timedelta
from zoneinfo import ZoneInfo

from agent.http.statuspage.charts import Point, StatusBucket

RUNS_LISTED = 50          # a check's latest runs
AUDIT_LISTED = 20         # a check's latest action audit rows
PAGE_ROWS = 200           # /actions and /log
INCIDENT_ROWS = 5000      # non-OK runs read to find a range's incidents (newest first)
SERIES_ROWS = 20000       # (bucket, metric) rows of one chart range
RAW_SCAN_ROWS = 60000     # runs one chart range reads at most (six weeks of a check running every minute)
_ROLLED = ("min", "avg", "max")   # a rollup's figures of one metric, as Point takes them


@dataclass(frozen=True)
class MainValue:
    """Which samples a check's sparkline follows (its threshold metrics) and which side is bad."""

    names: tuple[str, ...]
    bad_when: str          # above | below

    def sql(self) -> tuple[str, list[str]]:
        """A per-run SQL expression of the worst such sample, with its parameters: exact names and
        `name{labels}` keys."""
        pick = "max" if self.bad_when == "above" else "min"
        tests = " OR ".join(["j.key = ? OR j.key GLOB ?"] * len(self.names))
        params = [p for name in self.names for p in (name, name + "{*")]
        return (f"(SELECT {pick}(j.value) FROM json_each(r.metrics) j WHERE j.type IN ('integer', 'real') "
                f"AND ({tests}))", params)


def check_ids(conn: sqlite3.Connection) -> dict[str, int]:
    return {name: check_id for check_id, name in conn.execute("SELECT id, name FROM checks")}


def latest_run(conn: sqlite3.Connection, check_id: int) -> sqlite3.Row | None:
    """The newest run of one check: one index seek."""
    rows = conn.execute("SELECT started, duration, status, pending, summary FROM check_runs WHERE check_id = ? "
                        "ORDER BY started DESC LIMIT 1", (check_id,)).fetchall()
    return rows[0] if rows else None


def day_buckets(conn: sqlite3.Connection, check_id: int, after: float, bucket_seconds: float,
                main: MainValue | None) -> list[tuple]:
    """Runs of one check started after `after`, grouped into buckets of `bucket_seconds` (epoch-aligned):
    (bucket, runs, ok, warning, critical, unknown, newest started, worst main value)."""
    value, params = main.sql() if main else ("NULL", [])
    pick = "max" if main is None or main.bad_when == "above" else "min"
    return conn.execute(
        f"SELECT CAST(r.started / ? AS INTEGER) AS b, count(*), sum(r.status = 0), sum(r.status = 1), "
        f"sum(r.status = 2), sum(r.status = 3), max(r.started), {pick}({value}) "
        f"FROM check_runs r WHERE r.check_id = ? AND r.started > ? GROUP BY b",
        (bucket_seconds, *params, check_id, after)).fetchall()


def raw_series(conn: sqlite3.Connection, check_id: int, start: float, end: float,
               bucket_seconds: float) -> dict[str, list[Point]]:
    """Every numeric metric of one check over [start, end) in epoch-aligned buckets, from raw runs:
    metric key → points oldest first."""
    series: dict[str, list[Point]] = {}
    for bucket, key, low, mean, high in conn.execute(
            "SELECT CAST(r.started / ? AS INTEGER) AS b, j.key, min(j.value), avg(j.value), max(j.value) "
            f"FROM {_scan('started, metrics')} r, json_each(r.metrics) j WHERE j.type IN ('integer', 'real') "
            "GROUP BY b, j.key ORDER BY b LIMIT ?",
            (bucket_seconds, check_id, start, end, RAW_SCAN_ROWS, SERIES_ROWS)):
        series.setdefault(key, []).append(Point(bucket * bucket_seconds, (bucket + 1) * bucket_seconds,
                                                low, mean, high))
    return series


def raw_statuses(conn: sqlite3.Connection, check_id: int, start: float, end: float,
                 bucket_seconds: float) -> dict[int, tuple[int, int, int, int]]:
    """Status counts of one check's runs over [start, end) per epoch-aligned bucket number."""
    return {bucket: (ok, warning, critical, unknown) for bucket, ok, warning, critical, unknown in conn.execute(
        "SELECT CAST(started / ? AS INTEGER) AS b, sum(status = 0), sum(status = 1), sum(status = 2), "
        f"sum(status = 3) FROM {_scan('started, status')} GROUP BY b",
        (bucket_seconds, check_id, start, end, RAW_SCAN_ROWS))}


def _scan(columns: str) -> str:
    """The newest RAW_SCAN_ROWS runs of one check in [start, end), as a subquery (check_id, start, end, limit)."""
    return (f"(SELECT {columns} FROM check_runs WHERE check_id = ? AND started >= ? AND started < ? "
            "ORDER BY started DESC LIMIT ?)")


def scan_floor(conn: sqlite3.Connection, check_id: int, start: float, end: float) -> float | None:
    """Where a chart's reading stops: the oldest run it reads when [start, end) holds RAW_SCAN_ROWS runs
    or more, else None (it reads them all)."""
    rows = conn.execute("SELECT started FROM check_runs WHERE check_id = ? AND started >= ? AND started < ? "
                        "ORDER BY started DESC LIMIT 1 OFFSET ?", (check_id, start, end, RAW_SCAN_ROWS - 1)).fetchall()
    return rows[0][0] if rows else None


def rollup_series(conn: sqlite3.Connection, check_id: int, first_day: date, tz: ZoneInfo
                  ) -> tuple[dict[str, list[Point]], list[StatusBucket], float | None]:
    """Daily rollups of one check from `first_day` on: metric key → points, status buckets, and the end of
    the last rolled-up day (where raw runs take over; None when nothing is rolled up)."""
    series: dict[str, list[Point]] = {}
    statuses: list[StatusBucket] = []
    last_end = None
    for day, ok, warning, critical, unknown, metrics in conn.execute(
            "SELECT day, ok, warning, critical, unknown, metrics FROM check_rollups WHERE check_id = ? AND day >= ? "
            "ORDER BY day LIMIT 800", (check_id, first_day.isoformat())):
        start = local_midnight(date.fromisoformat(day), tz)
        last_end = local_midnight(date.fromisoformat(day) + timedelta(days=1), tz)
        statuses.append(StatusBucket(start, last_end, (ok, warning, critical, unknown)))
        try:
            stats = json.loads(metrics) if metrics else {}
        except ValueError:   # a damaged row: its counts still show
            stats = {}
        for key, figures in stats.items():
            if isinstance(figures, dict) and all(isinstance(figures.get(k), (int, float)) for k in _ROLLED):
                series.setdefault(key, []).append(Point(start, last_end, *(figures[k] for k in _ROLLED)))
    return series, statuses, last_end


def local_midnight(day: date, tz: ZoneInfo) -> float:
    return datetime.combine(day, dtime(0), tz).timestamp()


def oldest_raw(conn: sqlite3.Connection, check_id: int) -> float | None:
    return conn.execute("SELECT min(started) FROM check_runs WHERE check_id = ?", (check_id,)).fetchall()[0][0]


def transitions(conn: sqlite3.Connection, check_id: int, start: float, end: float) -> tuple[list[tuple], bool]:
    """The runs that matter for incidents in [start, end) (of its newest RAW_SCAN_ROWS runs): every non-OK
    run and each OK run right after one, oldest first, as (started, status); and whether INCIDENT_ROWS cut
    older ones off."""
    rows = conn.execute(
        "SELECT started, status FROM (SELECT started, status, lag(status) OVER (ORDER BY started) AS prev "
        f"FROM {_scan('started, status')}) WHERE status != 0 OR prev != 0 ORDER BY started DESC LIMIT ?",
        (check_id, start, end, RAW_SCAN_ROWS, INCIDENT_ROWS + 1)).fetchall()
    return rows[:INCIDENT_ROWS][::-1], len(rows) > INCIDENT_ROWS


def recent_runs(conn: sqlite3.Connection, check_id: int) -> list[sqlite3.Row]:
    return conn.execute("SELECT started, duration, status, pending, summary FROM check_runs WHERE check_id = ? "
                        "ORDER BY started DESC LIMIT ?", (check_id, RUNS_LISTED)).fetchall()


_AUDIT = ("SELECT id, started, duration, action, action_type, check_name, trigger_status, trigger, target, decision, "
          "source, dry_run, exit_code, outcome, verified, output, details FROM action_runs")


def audit(conn: sqlite3.Connection, check: str | None = None) -> list[dict]:
    """Action audit rows newest first (all checks, or one check's latest few), with the summary the
    action left in `details`."""
    if check is None:
        rows = conn.execute(f"{_AUDIT} ORDER BY started DESC, id DESC LIMIT ?", (PAGE_ROWS,))
    else:
        rows = conn.execute(f"{_AUDIT} WHERE check_name = ? ORDER BY started DESC, id DESC LIMIT ?",
                            (check, AUDIT_LISTED))
    out = []
    for row in rows:
        entry = dict(row)
        try:
            details = json.loads(row["details"]) if row["details"] else {}
        except ValueError:
            details = {}
        entry["summary"] = details.get("summary") if isinstance(details, dict) else None
        out.append(entry)
    return out


def log_entries(conn: sqlite3.Connection, category: str | None = None) -> list[sqlite3.Row]:
    sql = "SELECT id, at, category, author, source, check_name, message FROM maintenance_log"
    params: list = []
    if category:
        sql += " WHERE category = ?"
        params.append(category)
    return conn.execute(sql + " ORDER BY at DESC, id DESC LIMIT ?", (*params, PAGE_ROWS)).fetchall()

