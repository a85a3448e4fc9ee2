"""Heartbeat signals from jobs: what `maint-agent ping` writes and the `heartbeat` check reads.

A cron job, backup script or batch job says that it started, succeeded or failed; each signal is
one row of `heartbeat_signals`. Writers: `maint-agent ping` (while the daemon runs and while it is
stopped: the row waits in the store) and the agent's listener (`POST /ping/NAME`). Readers: the
`heartbeat` check (a job's latest signals), the daemon (which jobs signalled since it last looked,
so it evaluates them at once) and the report (runs, failures and durations per job).

Standard library only: `ping` runs from cron around every job and must start fast.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

SIGNAL_KINDS = ("start", "success", "fail")
MESSAGE_CAP_BYTES = 10 * 1024   # what a job may say about a run (its last lines of output, a reason)


@dataclass(frozen=True)
class Signal:
    at: float
    kind: str                       # start, success or fail
    exit_status: int | None = None
    duration: float | None = None   # a finish's run time, from the start signal before it
    message: str | None = None


@dataclass(frozen=True)
class Signals:
    """The latest signals of one job: what its state is judged from."""

    start: Signal | None = None     # the latest start
    finish: Signal | None = None    # the latest success or fail
    success: Signal | None = None   # the latest success

    @property
    def running(self) -> bool:
        """A start newer than the latest finish: the job is running (or died without a word)."""
        return self.start is not None and (self.finish is None or self.start.at > self.finish.at)


def finish_kind(exit_status: int | None, failed: bool = False) -> str:
    """`--fail`, or a non-zero exit status, is a failure; anything else a success."""
    return "fail" if failed or (exit_status is not None and exit_status != 0) else "success"


def cap_message(text: str | None) -> str | None:
    """At most MESSAGE_CAP_BYTES of UTF-8, cut on a character boundary; None for nothing to say."""
    if not text:
        return None
    data = text.encode("utf-8", "replace")
    if len(data) <= MESSAGE_CAP_BYTES:
        return text
    return data[:MESSAGE_CAP_BYTES].decode("utf-8", "ignore")


def record(conn: sqlite3.Connection, check: str, kind: str, at: float, *, exit_status: int | None = None,
           duration: float | None = None, message: str | None = None, source: str = "cli") -> Signal:
    """Store one signal and return it. A finish without a measured duration gets one from the job's
    start signal, when that start came after the previous finish (`ping --start` … `ping`)."""
    if kind not in SIGNAL_KINDS:
        raise ValueError(f"unknown signal {kind!r} (expected one of {', '.join(SIGNAL_KINDS)})")
    message = cap_message(message)
    conn.execute("BEGIN IMMEDIATE")
    try:
        if kind != "start" and duration is None:
            signals = latest(conn, check)
            if signals.running and signals.start.at <= at:
                duration = at - signals.start.at
        conn.execute("INSERT INTO heartbeat_signals(check_name, at, kind, exit_status, duration, message, source) "
                     "VALUES (?,?,?,?,?,?,?)", (check, at, kind, exit_status, duration, message, source))
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return Signal(at, kind, exit_status, duration, message)


def _signal(row) -> Signal | None:
    return Signal(*row) if row else None


def latest(conn: sqlite3.Connection, check: str) -> Signals:
    """The job's latest start, finish and success (three index seeks)."""
    columns = "SELECT at, kind, exit_status, duration, message FROM heartbeat_signals WHERE check_name = ? AND "
    order = " ORDER BY at DESC, id DESC LIMIT 1"
    return Signals(
        start=_signal(conn.execute(columns + "kind = 'start'" + order, (check,)).fetchone()),
        finish=_signal(conn.execute(columns + "kind IN ('success', 'fail')" + order, (check,)).fetchone()),
        success=_signal(conn.execute(columns + "kind = 'success'" + order, (check,)).fetchone()))


def first_seen(conn: sqlite3.Connection, check: str) -> float | None:
    """When the agent first judged this job (its earliest stored run): a job that never signals is
    late one period after that, not never."""
    row = conn.execute("SELECT min(r.started) FROM check_runs r JOIN checks c ON c.id = r.check_id "
                       "WHERE c.name = ?", (check,)).fetchone()
    return row[0] if row else None


def last_signal_id(conn: sqlite3.Connection) -> int:
    return conn.execute("SELECT coalesce(max(id), 0) FROM heartbeat_signals").fetchone()[0]


def signalled_since(conn: sqlite3.Connection, after_id: int) -> tuple[int, set[str]]:
    """(newest signal id, jobs that signalled after `after_id`): what the daemon evaluates at once."""
    rows = conn.execute("SELECT id, check_name FROM heartbeat_signals WHERE id > ? ORDER BY id",
                        (after_id,)).fetchall()
    return (rows[-1][0] if rows else after_id), {name for _, name in rows}


@dataclass(frozen=True)
class JobRuns:
    """One job's finished runs in a report period."""

    check: str
    runs: int
    failures: int
    mean_duration: float | None
    max_duration: float | None
    last_finish: float | None
    last_kind: str | None


def job_runs(conn: sqlite3.Connection, checks: list[str], start: float, end: float) -> list[JobRuns]:
    """Runs (finish signals), failures and durations of each job in [start, end), in the order given."""
    out = []
    for check in checks:
        runs, failures, mean, high, last = conn.execute(
            "SELECT count(*), coalesce(sum(kind = 'fail'), 0), avg(duration), max(duration), max(at) "
            "FROM heartbeat_signals WHERE check_name = ? AND kind IN ('success', 'fail') AND at >= ? AND at < ?",
            (check, start, end)).fetchone()
        kind = conn.execute("SELECT kind FROM heartbeat_signals WHERE check_name = ? AND at = ? AND kind != 'start'",
                            (check, last)).fetchone() if last is not None else None
        out.append(JobRuns(check, runs, failures, mean, high, last, kind[0] if kind else None))
    return out


def prune(conn: sqlite3.Connection, before: float) -> int:
    """Forget signals older than the raw-run retention, keeping each job's latest start, finish and
    success (what its state is judged from, however long ago that was)."""
    return conn.execute(
        "DELETE FROM heartbeat_signals WHERE at < ? AND id NOT IN ("
        " SELECT max(id) FROM heartbeat_signals GROUP BY check_name, kind = 'start', kind = 'success')",
        (before,)).rowcount
