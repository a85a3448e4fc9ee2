"""Read-only queries over the store for the CLI (stdlib only: the CLI must start fast)."""

from __future__ import annotations

import io
import sqlite3

from agent.plugin.storefile import where_clause
from agent.plugin.terminal import json_c1_escaped_bytes
from agent.timefmt import utc_sql

STATUS_NAMES = ("ok", "warning", "critical", "unknown")


def latest_runs(conn: sqlite3.Connection) -> list[sqlite3.Row]:
    """The newest run of every check, one index seek per check (fast on millions of rows)."""
    return conn.execute(
        "SELECT c.name AS check_name, c.type AS type, r.started, r.duration, r.status, r.pending, r.summary,"
        " r.metrics FROM checks c JOIN check_runs r ON r.check_id = c.id AND r.started = ("
        "  SELECT max(started) FROM check_runs WHERE check_id = c.id)"
        " ORDER BY c.name").fetchall()


def latest_states(conn: sqlite3.Connection) -> list[sqlite3.Row]:
    """Each check's latest result as the daemon keeps it (also when retention pruned the run itself), with
    `maintenance` 1 when it ran in maintenance; from the runs for a store an older agent wrote."""
    try:
        return conn.execute(
            "SELECT check_name, check_type AS type, started, duration, status, pending, summary, maintenance"
            " FROM check_state ORDER BY check_name").fetchall()
    except sqlite3.OperationalError as exc:
        if "no such table" not in str(exc):
            raise
        return latest_runs(conn)


def maintenance_now(conn: sqlite3.Connection, checks: set[str], now: float) -> dict[str, float]:
    """check → when its maintenance ends, for the checks in maintenance at `now` (none for an older store)."""
    from agent.maintenance import coverage, read_windows
    try:
        return coverage(read_windows(conn, open_only=True), checks, now)
    except sqlite3.OperationalError as exc:
        if "no such table" not in str(exc):
            raise
        return {}


_STATUS_SQL = "CASE r.status WHEN 0 THEN 'ok' WHEN 1 THEN 'warning' WHEN 2 THEN 'critical' ELSE 'unknown' END"
_UTC_SQL = utc_sql("r.started")
_RUN_COLUMNS = ("c.name AS check_name, r.started, r.duration, r.scheduled, r.status, r.pending, r.summary,"
                " r.metrics")
_RUN_JSON = (f"json_object('check', c.name, 'started', {_UTC_SQL}, 'status', {_STATUS_SQL},"
             " 'duration_seconds', round(r.duration, 4), 'summary', r.summary,"
             " 'metrics', json(coalesce(r.metrics, '{}')))")


def runs(conn: sqlite3.Connection, *, check: str | None = None, statuses: list[int] | None = None,
         since: float | None = None, until: float | None = None, limit: int | None = 100) -> list[sqlite3.Row]:
    """Runs newest first, filtered; `limit=None` for all."""
    return conn.execute(*_runs_query(_RUN_COLUMNS, check, statuses, since, until, limit)).fetchall()


def write_runs_json(conn: sqlite3.Connection, out: io.BufferedIOBase, *, check: str | None = None,
                    statuses: list[int] | None = None, since: float | None = None, until: float | None = None,
                    limit: int | None = 100, chunk: int = 2000) -> int:
    """Write the runs to `out` as a JSON array, one object a line, each built by SQLite and streamed in chunks
    as UTF-8 bytes: no Python string or row object per run, and constant memory for a month or the whole
    store (`history --format json`). Returns how many runs were written."""
    cursor = conn.cursor()
    cursor.row_factory = None
    previous = conn.text_factory
    conn.text_factory = bytes
    try:
        cursor.execute(*_runs_query(_RUN_JSON, check, statuses, since, until, limit))
        written = 0
        while rows := cursor.fetchmany(chunk):
            out.write(b",\n" if written else b"[\n")
            out.write(json_c1_escaped_bytes(b",\n".join([row[0] for row in rows])))
            written += len(rows)
    finally:
        conn.text_factory = previous
    out.write(b"\n]\n" if written else b"[]\n")
    return written


def _runs_query(columns: str, check, statuses, since, until, limit) -> tuple[str, list]:
    where, params = where_clause((("r.check_id = (SELECT id FROM checks WHERE name = ?)", check or None),
                                  ("r.status IN (?)", statuses), ("r.started >= ?", since), ("r.started < ?", until)))
    sql = f"SELECT {columns} FROM check_runs r JOIN checks c ON c.id = r.check_id{where} ORDER BY r.started DESC"
    if limit:
        sql += f" LIMIT {int(limit)}"
    return sql, params


def scheduler_state(conn: sqlite3.Connection) -> dict[str, tuple[float | None, float | None]]:
    return {row[0]: (row[1], row[2]) for row in
            conn.execute("SELECT check_name, last_fired, last_run FROM scheduler_state")}
