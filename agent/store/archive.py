"""The S3 history archive: each completed local day's check runs, actions and log as gzip JSONL.

Keys are Hive-style partitions, so Athena, DuckDB or Spark query a whole fleet by host and date:

    s3://BUCKET/PREFIX/host=H/date=YYYY-MM-DD/runs.jsonl.gz      one check run per line
                                              actions.jsonl.gz   the action audit rows
                                              log.jsonl.gz       the maintenance log

- Idempotent: a day always has the same three keys and (gzip without a timestamp) the same
  bytes for the same rows; uploading it again overwrites them.
- Resumable: `archive_days` in the store records every day uploaded or failed, with its
  attempts and the reason. A run uploads the completed days not yet uploaded, oldest first, at
  most `max_days_per_run`; the first run reaches back to the oldest day in the store, at most
  `max_days_per_run` days (that first day is remembered, so later runs never reach further).
  A run stops at the first day that fails: the bucket is then most likely unreachable for all,
  and the next run retries from that day.
- Its own SQLite connection: the daemon's store is in use by other threads; WAL lets this
  reader run beside them, and its few writes (the `archive_days` rows) wait on the busy timeout.

botocore is imported only when an upload runs (as in checks/s3.py): hosts without an archive
never load it. Every request attempt is bounded by `connect_timeout`/`read_timeout`, at most
three attempts. Errors name the S3 error code or the network failure, never a credential.
"""

from __future__ import annotations

import gzip
import json
import re
import sqlite3
import tempfile
from dataclasses import dataclass
from datetime import date, datetime, time as dtime, timedelta
from pathlib import Path
from typing import IO, Any, Iterable
from zoneinfo import ZoneInfo

from agent.config.archive import ArchiveSection
from agent.plugin.fields import Secret
from agent.plugin.redact import REDACT
from agent.plugin.units import format_timestamp

OBJECTS = ("runs", "actions", "log")
FIRST_DAY_KEY = "archive_first_day"      # agent_state: the oldest day the archive covers
MAX_ATTEMPTS = 3
_HOST_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$")


@dataclass(frozen=True)
class DayState:
    """One row of `archive_days`, or a day not recorded yet (status `pending`)."""

    day: str
    status: str
    uploaded_at: float | None = None
    attempts: int = 0
    objects: dict[str, Any] | None = None
    last_error: str | None = None


# --- which days -----------------------------------------------------------------------------------


def day_bounds(day: date, tz: ZoneInfo) -> tuple[float, float]:
    """Given a local day, return its [start, end) in Unix time (23 or 25 hours long on DST days)."""
    start = datetime.combine(day, dtime(0), tz).timestamp()
    return start, datetime.combine(day + timedelta(days=1), dtime(0), tz).timestamp()


def first_day(conn: sqlite3.Connection, tz: ZoneInfo, today: date, max_days: int) -> date | None:
    """The oldest day the archive covers: remembered, else the store's oldest row's day but at most
    `max_days` back; None while the store holds nothing."""
    row = conn.execute("SELECT value FROM agent_state WHERE key = ?", (FIRST_DAY_KEY,)).fetchone()
    if row:
        return date.fromisoformat(row[0])
    oldest = conn.execute("SELECT min(t) FROM (SELECT min(started) AS t FROM check_runs "
                          "UNION ALL SELECT min(started) FROM action_runs "
                          "UNION ALL SELECT min(at) FROM maintenance_log)").fetchone()[0]
    if oldest is None:
        return None
    return max(datetime.fromtimestamp(oldest, tz).date(), today - timedelta(days=max_days))


def day_states(conn: sqlite3.Connection, tz: ZoneInfo, today: date, max_days: int) -> list[DayState]:
    """Every day from the first one to yesterday, with its recorded state or `pending`, oldest first;
    days recorded before the first one (uploaded by hand with --day) are listed too."""
    recorded = {}
    for day, status, uploaded_at, objects, attempts, last_error in conn.execute(
            "SELECT day, status, uploaded_at, objects, attempts, last_error FROM archive_days"):
        recorded[day] = DayState(day, status, uploaded_at, attempts or 0, json.loads(objects) if objects else None,
                                 last_error)
    start = first_day(conn, tz, today, max_days)
    days = set(recorded)
    if start is not None:
        days |= {(start + timedelta(days=n)).isoformat() for n in range((today - start).days)}
    return [recorded.get(day) or DayState(day, "pending") for day in sorted(days)]


def pending_days(conn: sqlite3.Connection, tz: ZoneInfo, today: date, max_days: int) -> list[date]:
    """Completed days not uploaded yet (failed ones included), oldest first."""
    return [date.fromisoformat(s.day) for s in day_states(conn, tz, today, max_days) if s.status != "uploaded"]


# --- the rows of a day ------------------------------------------------------------------------------


_RUNS_SQL = """
    SELECT json_object('check', c.name, 'type', c.type,
                       'started', strftime('%Y-%m-%dT%H:%M:%fZ', r.started, 'unixepoch'),
                       'duration_seconds', round(r.duration, 4),
                       'status', CASE r.status WHEN 0 THEN 'ok' WHEN 1 THEN 'warning' WHEN 2 THEN 'critical'
                                 ELSE 'unknown' END,
                       'summary', r.summary, 'metrics', json(coalesce(r.metrics, '{}')))
    FROM check_runs r JOIN checks c ON c.id = r.check_id
    WHERE r.started >= ? AND r.started < ? ORDER BY r.started, c.name"""


def _run_lines(conn: sqlite3.Connection, start: float, end: float) -> Iterable[str]:
    """Built by SQLite: a day of a 15-second check is thousands of rows."""
    return (row[0] for row in conn.execute(_RUNS_SQL, (start, end)))


def _row_lines(conn: sqlite3.Connection, table: str, time_column: str, start: float, end: float) -> Iterable[str]:
    """Every column of `table` (whatever migrations added), the time as UTC ISO, JSON text columns as JSON."""
    cursor = conn.execute(f"SELECT * FROM {table} WHERE {time_column} >= ? AND {time_column} < ? "
                          f"ORDER BY {time_column}, id", (start, end))
    columns = [d[0] for d in cursor.description]
    for values in cursor:
        row = dict(zip(columns, values))
        row[time_column] = format_timestamp(row[time_column], timespec="milliseconds")   # as history --format json
        if isinstance(row.get("details"), str):
            try:
                row["details"] = json.loads(row["details"])
            except ValueError:
                pass
        yield json.dumps(row, separators=(",", ":"), ensure_ascii=False, default=str)


def _gzip_lines(lines: Iterable[str]) -> tuple[IO[bytes], int, int]:
    """Spool lines into a gzip temp file (a day may be large); return (file at 0, lines, bytes).
    mtime=0: the same rows give the same bytes, so a re-upload is a true overwrite."""
    spool = tempfile.TemporaryFile()
    count = 0
    with gzip.GzipFile(fileobj=spool, mode="wb", mtime=0) as gz:
        for line in lines:
            gz.write(line.encode() + b"\n")
            count += 1
    size = spool.tell()
    spool.seek(0)
    return spool, count, size


# --- S3 -----------------------------------------------------------------------------------------------


def day_prefix(section: ArchiveSection, hostname: str, day: date) -> str:
    partition = f"host={hostname}/date={day.isoformat()}"
    return f"{section.prefix}/{partition}" if section.prefix else partition


def _credentials(section: ArchiveSection) -> dict[str, str]:
    """Explicit keys revealed now (a rotated file is picked up), or {} for the standard AWS chain."""
    if section.access_key_id is None:
        return {}
    return {"aws_access_key_id": Secret(section.access_key_id).reveal(),
            "aws_secret_access_key": Secret(section.secret_access_key).reveal()}


def _client(section: ArchiveSection, credentials: dict[str, str]):
    from botocore.config import Config
    import botocore.session

    from agent import __version__

    config = Config(connect_timeout=section.connect_timeout, read_timeout=section.read_timeout,
                    retries={"max_attempts": MAX_ATTEMPTS, "mode": "standard"},
                    s3={"addressing_style": section.addressing_style}, user_agent_extra=f"maint-agent/{__version__}")
    return botocore.session.get_session().create_client(
        "s3", region_name=section.region, endpoint_url=section.endpoint_url, config=config, **credentials)


def _reason(exc: Exception) -> str:
    """Given a botocore error, return what failed: the S3 error code, or the network failure."""
    response = getattr(exc, "response", None)
    if isinstance(response, dict) and "Error" in response:
        error = response["Error"]
        code, message = error.get("Code", "?"), error.get("Message", "")
        http = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        return f"S3 error {code} (HTTP {http}){': ' + message if message else ''}"
    name = type(exc).__name__
    if name in ("NoCredentialsError", "PartialCredentialsError"):
        return "no AWS credentials (none in the environment, ~/.aws, or instance metadata)"
    if name in ("EndpointConnectionError", "ConnectTimeoutError", "ConnectionClosedError", "ReadTimeoutError"):
        cause = _os_error(exc)
        what = "no answer" if name == "ReadTimeoutError" else "cannot connect"
        return f"{what}: {cause.strerror if cause is not None and cause.strerror else name}"
    return f"{name}: {exc}"


def _os_error(exc: BaseException | None) -> OSError | None:
    """The OSError under botocore's wrapping of urllib3's wrapping (refused, timed out, DNS)."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, OSError) and exc.strerror:
            return exc
        seen.add(id(exc))
        wrapped = getattr(exc, "kwargs", None)
        exc = exc.__cause__ or exc.__context__ or (wrapped.get("error") if isinstance(wrapped, dict) else None)
    return None


def _upload_day(conn: sqlite3.Connection, api, section: ArchiveSection, hostname: str, day: date,
                tz: ZoneInfo) -> dict[str, dict[str, Any]]:
    """Put the day's three objects; return {object: {key, lines, bytes}}."""
    start, end = day_bounds(day, tz)
    sources = {"runs": lambda: _run_lines(conn, start, end),
               "actions": lambda: _row_lines(conn, "action_runs", "started", start, end),
               "log": lambda: _row_lines(conn, "maintenance_log", "at", start, end)}
    base = day_prefix(section, hostname, day)
    done = {}
    for name in OBJECTS:
        key = f"{base}/{name}.jsonl.gz"
        spool, lines, size = _gzip_lines(sources[name]())
        with spool:
            api.put_object(Bucket=section.bucket, Key=key, Body=spool, ContentType="application/gzip")
        done[name] = {"key": key, "lines": lines, "bytes": size}
    return done


# --- recording and the run ----------------------------------------------------------------------------


def _record(conn: sqlite3.Connection, day: date, now: float, objects: dict | None, error: str | None) -> None:
    """Upsert the day's row: uploaded (objects, error cleared) or failed (error kept, objects of an
    earlier upload kept); attempts count both."""
    if error is None:
        conn.execute(
            "INSERT INTO archive_days(day, status, uploaded_at, objects, attempts, last_error) "
            "VALUES (?, 'uploaded', ?, ?, 1, NULL) ON CONFLICT(day) DO UPDATE SET status = 'uploaded', "
            "uploaded_at = excluded.uploaded_at, objects = excluded.objects, attempts = attempts + 1, "
            "last_error = NULL", (day.isoformat(), now, json.dumps(objects, separators=(",", ":"))))
    else:
        conn.execute(
            "INSERT INTO archive_days(day, status, attempts, last_error) VALUES (?, 'failed', 1, ?) "
            "ON CONFLICT(day) DO UPDATE SET status = 'failed', attempts = attempts + 1, "
            "last_error = excluded.last_error", (day.isoformat(), error))


def _remember_first_day(conn: sqlite3.Connection, day: date) -> None:
    conn.execute("INSERT OR IGNORE INTO agent_state(key, value) VALUES (?, ?)", (FIRST_DAY_KEY, day.isoformat()))


def _scrub(text: str, secrets: Iterable[str]) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return REDACT(text)


def archive_pending(store_path: Path, section: ArchiveSection, hostname: str, tz: ZoneInfo, now: float, *,
                    day: date | None = None) -> dict[str, Any]:
    """Upload every completed local day not uploaded yet (or only `day`, again if it was), recording each.

    Returns {"uploaded": [{day, objects}], "failed": [{day, error}], "remaining": days left for the
    next run}. Raises ValueError for a host name unfit for a key or a `day` that is not over yet, and
    sqlite3.Error when the store cannot be read or written; S3 and credential problems are recorded
    on the day, not raised.
    """
    if not _HOST_RE.match(hostname):
        raise ValueError(f"host name {hostname!r} cannot be a key partition (letters, digits, . _ : -)")
    from agent.store.writer import connect

    if not store_path.is_file():   # sqlite would create an empty one
        raise ValueError(f"no store at {store_path} (has the agent run with this config?)")
    today = datetime.fromtimestamp(now, tz).date()
    if day is not None and day >= today:
        raise ValueError(f"{day.isoformat()} is not over yet (today is {today.isoformat()} in {tz.key})")
    conn = connect(store_path)
    try:
        if day is None:
            start = first_day(conn, tz, today, section.max_days_per_run)
            if start is not None:
                _remember_first_day(conn, start)
            pending = pending_days(conn, tz, today, section.max_days_per_run)
        else:
            pending = [day]
        batch = pending[:section.max_days_per_run]
        return _upload(conn, section, hostname, tz, now, batch, len(pending) - len(batch))
    finally:
        conn.close()


def _upload(conn: sqlite3.Connection, section: ArchiveSection, hostname: str, tz: ZoneInfo, now: float,
            days: list[date], later: int) -> dict[str, Any]:
    """Upload `days` in order, stopping at the first failure (the rest stay pending)."""
    from agent.plugin import logs

    result: dict[str, Any] = {"uploaded": [], "failed": [], "remaining": later}
    if not days:
        return result
    secrets: list[str] = []
    try:
        credentials = _credentials(section)
        secrets = list(credentials.values())
        api = _client(section, credentials)
    except (OSError, LookupError) as exc:
        return _fail(conn, days, now, f"cannot read the S3 credentials: {getattr(exc, 'reason', None) or exc}",
                     result)
    except ImportError:
        return _fail(conn, days, now, "botocore is not installed (pip install 'maint-agent[s3]')", result)
    import botocore.exceptions

    try:
        for index, day in enumerate(days):
            try:
                objects = _upload_day(conn, api, section, hostname, day, tz)
            except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError, OSError) as exc:
                where = f"s3://{section.bucket}/{day_prefix(section, hostname, day)}/"
                return _fail(conn, days[index:], now, _scrub(f"{where}: {_reason(exc)}", secrets), result)
            _record(conn, day, now, objects, None)
            logs.event("archive.uploaded", day=day.isoformat(), runs=objects["runs"]["lines"],
                       actions=objects["actions"]["lines"], log=objects["log"]["lines"])
            result["uploaded"].append({"day": day.isoformat(), "objects": objects})
    finally:
        api.close()
    return result


def _fail(conn: sqlite3.Connection, days: list[date], now: float, error: str, result: dict[str, Any]) -> dict:
    """Record the first of `days` as failed with `error`; the others stay pending for the next run."""
    from agent.plugin import logs

    _record(conn, days[0], now, None, error)
    logs.event("archive.failed", "warning", day=days[0].isoformat(), error=error)
    result["failed"].append({"day": days[0].isoformat(), "error": error})
    result["remaining"] += len(days) - 1
    return result
