"""The SQLite store: check runs, action audit, maintenance log, scheduler state, daily rollups, each check's
latest state (what a restart starts from) and maintenance windows.

One writer (the daemon's result sink); the CLI opens the file read-only and, in
WAL mode, reads while the daemon writes. `synchronous=FULL` makes every
committed batch survive a power cut, not only a crash. Schema changes are
forward migrations keyed by `PRAGMA user_version`; sqlite-utils creates the
tables and indexes, the hot-path inserts are plain prepared statements.
"""

from __future__ import annotations

import json
import math
import os
import sqlite3
import stat
import threading
from datetime import date, datetime, time as dtime, timedelta
from json.encoder import encode_basestring_ascii as _json_text
from pathlib import Path
from typing import Callable, Iterable, NamedTuple, Optional
from zoneinfo import ZoneInfo

from agent import maintenance
from agent.plugin.storefile import store_unusable, unusable_or_same
from agent.plugin.result import Evaluated, Sample, Status

SavedWindow = tuple[Optional[str], Optional[float], Optional[float]]
"""A check's `for:` window: (key of the options it was measured under, warning since, critical since)."""

BUSY_TIMEOUT_MS = 5000
SQLITE_HEADER = b"SQLite format 3\x00"
_COMPACT = json.JSONEncoder(separators=(",", ":"))   # built once: json.dumps(…, separators=…) builds one per call
_COMPACT_STRICT = json.JSONEncoder(separators=(",", ":"), default=str, allow_nan=False)
PRUNE_BATCH_ROWS = 20000


def _migrate_1(db) -> None:
    db["checks"].create({"id": int, "name": str, "type": str}, pk="id", not_null={"name"})
    db["checks"].create_index(["name"], unique=True)
    # clustered by check, then time: a month of one check is contiguous pages, not one row per page
    db.execute("""CREATE TABLE check_runs (
        check_id INTEGER NOT NULL REFERENCES checks(id), started REAL NOT NULL, duration REAL NOT NULL,
        scheduled REAL, status INTEGER NOT NULL, pending INTEGER NOT NULL DEFAULT 0, summary TEXT NOT NULL,
        metrics TEXT, details TEXT, PRIMARY KEY (check_id, started)) WITHOUT ROWID""")
    db["check_runs"].create_index(["started"], index_name="check_runs_by_time")
    db.execute("""CREATE TABLE check_rollups (
        check_id INTEGER NOT NULL REFERENCES checks(id), day TEXT NOT NULL, runs INTEGER NOT NULL,
        ok INTEGER NOT NULL, warning INTEGER NOT NULL, critical INTEGER NOT NULL, unknown INTEGER NOT NULL,
        metrics TEXT, PRIMARY KEY (check_id, day)) WITHOUT ROWID""")
    db["action_runs"].create(
        {"id": int, "started": float, "duration": float, "action": str, "action_type": str,
         "check_name": str, "trigger": str, "target": str, "dry_run": int, "exit_code": int,
         "output": str, "verified": int, "outcome": str, "details": str}, pk="id")
    db["action_runs"].create_index(["started"])
    db["maintenance_log"].create(
        {"id": int, "at": float, "category": str, "author": str, "source": str, "check_name": str,
         "message": str}, pk="id", not_null={"at", "message"})
    db["maintenance_log"].create_index(["at"])
    db["scheduler_state"].create({"check_name": str, "last_fired": float, "last_run": float}, pk="check_name")
    db["agent_state"].create({"key": str, "value": str}, pk="key")


def _migrate_2(db) -> None:
    """Actions and policy (issue 5), report outbox (issue 6), S3 archive days (issue 8)."""
    for column, kind in (("decision", "TEXT"), ("source", "TEXT"), ("trigger_status", "TEXT")):
        db.execute(f"ALTER TABLE action_runs ADD COLUMN {column} {kind}")
    db["action_runs"].create_index(["check_name", "started"])
    # remediation counters per (check, action), as JSON: they survive restarts and reloads
    db["policy_state"].create({"check_name": str, "action": str, "state": str}, pk=("check_name", "action"))
    # the CLI asks the daemon for something (`actions reset CHECK`) by a row the daemon consumes
    db["operator_requests"].create({"id": int, "at": float, "kind": str, "target": str, "args": str}, pk="id")
    db["report_outbox"].create(
        {"id": int, "created": float, "report": str, "period": str, "period_start": float, "period_end": float,
         "recipients": str, "subject": str, "message": bytes, "status": str, "attempts": int,
         "next_attempt": float, "last_error": str, "sent_at": float}, pk="id")
    db["report_outbox"].create_index(["status", "next_attempt"])
    db["archive_days"].create({"day": str, "status": str, "uploaded_at": float, "objects": str, "attempts": int,
                               "last_error": str}, pk="day")


def _migrate_3(db) -> None:
    """State that survives a restart (each check's latest result and `for:` window), maintenance windows,
    heartbeat signals from jobs (`maint-agent ping`), the notification outbox."""
    # one row per check: /metrics shows a check's status right after a restart, even when retention pruned
    # the run itself (a quarterly restore test outlives a 90-day raw retention)
    db.execute("""CREATE TABLE check_state (
        check_name TEXT PRIMARY KEY, check_type TEXT NOT NULL, started REAL NOT NULL, duration REAL NOT NULL,
        scheduled REAL, status INTEGER NOT NULL, pending INTEGER NOT NULL DEFAULT 0, summary TEXT NOT NULL,
        samples TEXT, details TEXT, maintenance INTEGER NOT NULL DEFAULT 0,
        options_key TEXT, warning_since REAL, critical_since REAL)""")
    db.execute("ALTER TABLE check_runs ADD COLUMN maintenance INTEGER NOT NULL DEFAULT 0")
    db.execute("""CREATE TABLE maintenance_windows (
        id INTEGER PRIMARY KEY, starts REAL NOT NULL, ends REAL NOT NULL, checks TEXT, reason TEXT,
        author TEXT, source TEXT NOT NULL, name TEXT, ended REAL, ended_by TEXT, end_reason TEXT)""")
    db.execute("CREATE UNIQUE INDEX maintenance_windows_occurrence ON maintenance_windows(name, starts)")
    db.execute("CREATE INDEX maintenance_windows_open ON maintenance_windows(ended)")
    # one row per signal: start, success or fail; `duration` of a finish is measured from its start
    db.execute("""CREATE TABLE heartbeat_signals (
        id INTEGER PRIMARY KEY, check_name TEXT NOT NULL, at REAL NOT NULL, kind TEXT NOT NULL,
        exit_status INTEGER, duration REAL, message TEXT, source TEXT)""")
    db["heartbeat_signals"].create_index(["check_name", "at"])
    # one row per notification and channel, written before the first attempt (agent/notifications.py);
    # `payload` is what is sent, without the webhook URL or routing key (read from the config at each attempt)
    db.execute("""CREATE TABLE notification_outbox (
        id INTEGER PRIMARY KEY, created REAL NOT NULL, action TEXT NOT NULL, channel TEXT NOT NULL,
        check_name TEXT, event TEXT, dedup_key TEXT, title TEXT, payload TEXT NOT NULL, status TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0, next_attempt REAL, last_error TEXT, sent_at REAL)""")
    db["notification_outbox"].create_index(["status", "next_attempt"])
    _seed_check_state(db.conn)


def _seed_check_state(conn: sqlite3.Connection) -> None:
    """An upgraded store starts with each check's newest run, so the first restart after the upgrade keeps the
    statuses too (samples from the run's metrics column, whose keys read back as `name{label=value,…}`)."""
    rows = conn.execute(
        "SELECT c.name, c.type, r.started, r.duration, r.scheduled, r.status, r.pending, r.summary, r.metrics,"
        " r.details FROM checks c JOIN check_runs r ON r.check_id = c.id AND r.started ="
        " (SELECT max(started) FROM check_runs WHERE check_id = c.id)").fetchall()
    for name, kind, started, duration, scheduled, status, pending, summary, metrics, details in rows:
        try:
            samples = [_sample_from_key(key, value) for key, value in json.loads(metrics or "{}").items()]
        except (ValueError, AttributeError):
            samples = []
        conn.execute("INSERT OR IGNORE INTO check_state(check_name, check_type, started, duration, scheduled, status,"
                     " pending, summary, samples, details) VALUES (?,?,?,?,?,?,?,?,?,?)",
                     (name, kind, started, duration, scheduled, status, pending, summary,
                      json.dumps(samples, separators=(",", ":")), details))


def _sample_from_key(key: str, value: float) -> list:
    """`used_ratio{mount=/}` → ["used_ratio", value, {"mount": "/"}] (the check_state samples form). Pairs are
    split at a comma followed by `label=`, so a value holding a comma (a mount point, a unit) stays whole."""
    import re
    name, brace, inner = key.partition("{")
    pairs = re.split(r",(?=[A-Za-z_][A-Za-z0-9_]*=)", inner.removesuffix("}")) if brace else []
    return [name, float(value), dict(pair.split("=", 1) for pair in pairs)]


MIGRATIONS: list[Callable] = [_migrate_1, _migrate_2, _migrate_3]
SCHEMA_VERSION = len(MIGRATIONS)


def _encode(run: Evaluated) -> tuple[str, str, str | None]:
    """(metrics, samples, details) of a run as JSON: metrics `{key: value}` for check_runs, samples
    `[[name, value, {label: value}], …]` for check_state, both with finite values only (SQLite's JSON
    functions reject the others), and details (None when empty)."""
    metrics, samples = _encode_samples(run)
    if not run.details:
        return metrics, samples, None
    try:
        details = _COMPACT_STRICT.encode(run.details)
    except (TypeError, ValueError) as exc:
        details = json.dumps({"error": f"details not serialisable: {exc}"})
    return metrics, samples, details


def _encode_samples(run: Evaluated) -> tuple[str, str]:
    """Both sample columns, written by hand for what checks return (float values, text labels): the text
    json.dumps gives, at a third of the cost; anything else goes through the encoder."""
    metrics, samples = {}, []
    for s in run.samples:
        value, labels = s.value, s.labels
        if type(value) is not float or (labels and not _text_labels(labels)):
            return _encode_samples_slowly(run)
        if not math.isfinite(value):
            continue
        number = float.__repr__(value)
        if labels:
            metrics[_json_text(s.key)] = number
            pairs = ",".join([f"{_json_text(k)}:{_json_text(v)}" for k, v in labels])
            samples.append(f"[{_json_text(s.name)},{number},{{{pairs}}}]")
        else:
            name = _json_text(s.name)
            metrics[name] = number
            samples.append(f"[{name},{number},{{}}]")
    return "{" + ",".join([f"{key}:{number}" for key, number in metrics.items()]) + "}", "[" + ",".join(samples) + "]"


def _text_labels(labels: tuple) -> bool:
    return all(type(k) is str and type(v) is str for k, v in labels)


def _encode_samples_slowly(run: Evaluated) -> tuple[str, str]:
    finite = [s for s in run.samples if math.isfinite(s.value)]
    return (_COMPACT.encode({s.key: s.value for s in finite}),
            _COMPACT.encode([[s.name, s.value, dict(s.labels)] for s in finite]))


def _decode_samples(text: str | None) -> tuple[Sample, ...]:
    return tuple(Sample(name, float(value), tuple(sorted(labels.items()))) for name, value, labels
                 in json.loads(text or "[]"))


class SavedState(NamedTuple):
    """A check's state as the store kept it: its latest run and its `for:` window."""

    run: Evaluated
    window: SavedWindow


def _migrate_in_child(path: Path) -> None:
    """Migrate in a short-lived process, so the daemon never carries the migration tooling's
    memory for the rest of its life (sqlite-utils and click stay resident once imported)."""
    import subprocess
    import sys

    from agent.plugin.child_env import child_env
    done = subprocess.run([sys.executable, "-m", "agent.store.writer", "migrate", str(path)], capture_output=True,
                          text=True, timeout=600, env=child_env(passed=("PYTHONPATH",)))
    if done.returncode != 0:
        raise RuntimeError(f"migrating store {path} failed: {done.stderr.strip().splitlines()[-1:]}")


def connect(path: Path) -> sqlite3.Connection:
    """A read-write connection in WAL mode; raise StoreUnusable when the file is not a database."""
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=BUSY_TIMEOUT_MS / 1000)
    try:
        conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
    except sqlite3.DatabaseError as exc:
        conn.close()
        raise unusable_or_same(path, exc) from None
    return conn


def make_private(path: Path) -> list[tuple[Path, int]]:
    """Given the store's path, create its directory (0700) and an empty store file (0600) when absent, and
    narrow an existing store file, -wal and -shm to the owner; return the files narrowed, with their old mode.

    Whatever the umask: SQLite creates a new database 0644 minus the umask, and its -wal and -shm
    copy the database file's mode, so the file must be private before SQLite first opens it.
    Raise StoreUnusable, without touching it, when the file is not a SQLite database.
    """
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600))
    except FileExistsError:
        _check_header(path)
    narrowed = []
    for file in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
        try:
            mode = stat.S_IMODE(file.stat().st_mode)
            if mode & 0o077:
                os.chmod(file, mode & 0o700)
                narrowed.append((file, mode))
        except FileNotFoundError:
            continue
    return narrowed


def _check_header(path: Path) -> None:
    """An empty file is a new database to SQLite; anything else must start with its header."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(len(SQLITE_HEADER))
    except IsADirectoryError:
        raise store_unusable(path, "a directory") from None
    if head and head != SQLITE_HEADER:
        raise store_unusable(path, "file is not a database")


class Store:
    """The daemon's read-write handle. Every method is safe to call from any thread."""

    def __init__(self, path: Path, migrate_in_child: bool = False):
        self.path = path
        self.narrowed = make_private(path)
        self.conn = connect(path)
        self._lock = threading.Lock()
        self._check_ids: dict[str, int] = {}
        self._windows: dict[str, SavedWindow] = {}   # each check's `for:` window as last committed by this handle
        version = self._version()
        if version < SCHEMA_VERSION and migrate_in_child:
            _migrate_in_child(path)
        else:
            self.migrate()

    def _version(self) -> int:
        version = self.conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise RuntimeError(f"store {self.path} has schema {version}, newer than this agent's {SCHEMA_VERSION}")
        return version

    def migrate(self) -> None:
        """Apply forward migrations; refuse a store written by a newer agent."""
        version = self._version()
        if version == SCHEMA_VERSION:
            return
        import sqlite_utils   # only when there is something to migrate: it pulls in click and more (~3 MiB)

        db = sqlite_utils.Database(self.conn)
        for number in range(version, SCHEMA_VERSION):
            with self._lock:
                self.conn.execute("BEGIN IMMEDIATE")
                try:
                    MIGRATIONS[number](db)
                    self.conn.execute(f"PRAGMA user_version={number + 1}")
                    self.conn.execute("COMMIT")
                except BaseException:
                    if self.conn.in_transaction:
                        self.conn.execute("ROLLBACK")
                    raise

    def close(self) -> None:
        with self._lock:
            self.conn.execute("PRAGMA optimize")
            self.conn.close()

    def _check_id(self, name: str, check_type: str) -> int:
        if name not in self._check_ids:
            row = self.conn.execute("SELECT id FROM checks WHERE name = ?", (name,)).fetchone()
            if row is None:
                row = (self.conn.execute("INSERT INTO checks(name, type) VALUES (?, ?)", (name, check_type)).lastrowid,)
            self._check_ids[name] = row[0]
        return self._check_ids[name]

    def record_runs(self, runs: Iterable[Evaluated], windows: dict[str, SavedWindow] | None = None) -> None:
        """Commit a batch of runs, their scheduler state, each check's latest result and `for:` windows
        (check → (options key, warning since, critical since)) in one transaction (all or nothing).
        A window equal to the one last committed for its check is not written again (most runs leave it
        as it was)."""
        rows = [(run, *_encode(run)) for run in runs]   # (run, metrics, samples, details)
        with self._lock:
            if not self._commit_runs(rows, windows or {}, one_by_one=False):
                self._commit_runs(rows, windows or {}, one_by_one=True)

    def _commit_runs(self, rows: list[tuple[Evaluated, str, str, str | None]], windows: dict[str, SavedWindow],
                     one_by_one: bool) -> bool:
        """One transaction of `record_runs`. The check_runs rows go in with one statement; (check, started) is
        their key, and when a row clashes (a clock stepped back onto a stored instant, two runs of a check at
        one instant) the transaction is rolled back and False returned: inserted `one_by_one`, each clash is
        moved on by a microsecond, so no run is lost. (A savepoint instead would copy every page the batch
        touches.)"""
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            if not self._insert_runs(rows, one_by_one):
                self.conn.execute("ROLLBACK")
                self._check_ids.clear()   # ids inserted in this transaction are gone with it
                return False
            self.conn.executemany(
                "INSERT INTO scheduler_state(check_name, last_run) VALUES (?, ?) "
                "ON CONFLICT(check_name) DO UPDATE SET last_run = excluded.last_run",
                [(run.check, run.started) for run, *_ in rows])
            self.conn.executemany(
                "INSERT INTO check_state(check_name, check_type, started, duration, scheduled, status, pending,"
                " summary, samples, details, maintenance) VALUES (?,?,?,?,?,?,?,?,?,?,?) "
                "ON CONFLICT(check_name) DO UPDATE SET check_type = excluded.check_type,"
                " started = excluded.started, duration = excluded.duration, scheduled = excluded.scheduled,"
                " status = excluded.status, pending = excluded.pending, summary = excluded.summary,"
                " samples = excluded.samples, details = excluded.details, maintenance = excluded.maintenance"
                " WHERE excluded.started >= check_state.started",
                [(run.check, run.check_type, run.started, run.duration, run.scheduled, int(run.status),
                  int(run.pending), run.summary, samples, details, int(run.maintenance))
                 for run, _, samples, details in rows])
            changed = {name: window for name, window in windows.items() if self._windows.get(name) != window}
            self.conn.executemany(
                "UPDATE check_state SET options_key = ?, warning_since = ?, critical_since = ? WHERE check_name = ?",
                [(key, warning_since, critical_since, name)
                 for name, (key, warning_since, critical_since) in changed.items()])
            self.conn.execute("COMMIT")
        except BaseException:
            self._check_ids.clear()   # ids inserted in this transaction are gone with it
            self._windows.clear()     # as are the windows it wrote: the next batch writes them all
            if self.conn.in_transaction:   # SQLite may have rolled back already (disk full)
                self.conn.execute("ROLLBACK")
            raise
        batch = {run.check for run, *_ in rows}   # their check_state rows exist: the window is in the file
        self._windows.update((name, window) for name, window in changed.items() if name in batch)
        return True

    def _insert_runs(self, rows: list[tuple[Evaluated, str, str, str | None]], one_by_one: bool) -> bool:
        """Insert the check_runs rows; False (with one statement) when one clashed with a stored row."""
        insert = ("INSERT INTO check_runs(check_id, started, duration, scheduled, status, pending, summary,"
                  " metrics, details, maintenance) VALUES (?,?,?,?,?,?,?,?,?,?) ON CONFLICT DO NOTHING")
        params = [(self._check_id(run.check, run.check_type), run.started, run.duration, run.scheduled,
                   int(run.status), int(run.pending), run.summary, metrics, details, int(run.maintenance))
                  for run, metrics, _, details in rows]
        if not one_by_one:
            return self.conn.executemany(insert, params).rowcount == len(params)
        for check_id, started, *rest in params:
            while not self.conn.execute(insert, (check_id, started, *rest)).rowcount:
                started += 1e-6
        return True

    def check_states(self) -> dict[str, SavedState]:
        """Each check's latest result and `for:` window as last committed: what a restart starts from."""
        with self._lock:
            rows = self.conn.execute(
                "SELECT check_name, check_type, status, summary, samples, details, started, duration, scheduled,"
                " pending, maintenance, options_key, warning_since, critical_since FROM check_state").fetchall()
        states = {}
        for (name, kind, status, summary, samples, details, started, duration, scheduled, pending, held,
             key, warning_since, critical_since) in rows:
            try:
                run = Evaluated(name, kind, Status(status), summary, _decode_samples(samples),
                                json.loads(details) if details else {}, started, duration,
                                scheduled if scheduled is not None else started, Status(pending), bool(held))
            except (ValueError, TypeError, AttributeError):   # an unreadable row: that check starts afresh
                continue
            states[name] = SavedState(run, (key, warning_since, critical_since))
        return states

    def mark_fired(self, check: str, fired_at: float) -> None:
        """Persist that a calendar check's due time was handled, before it runs (catch-up never repeats)."""
        with self._lock:
            self.conn.execute(
                "INSERT INTO scheduler_state(check_name, last_fired) VALUES (?, ?) "
                "ON CONFLICT(check_name) DO UPDATE SET last_fired = excluded.last_fired", (check, fired_at))

    def scheduler_state(self) -> dict[str, tuple[float | None, float | None]]:
        """check name → (last_fired, last_run)."""
        with self._lock:
            rows = self.conn.execute("SELECT check_name, last_fired, last_run FROM scheduler_state").fetchall()
        return {name: (fired, ran) for name, fired, ran in rows}

    def add_log(self, message: str, *, at: float, category: str = "agent", author: str = "maint-agent",
                source: str = "agent", check_name: str | None = None) -> int:
        with self._lock:
            return self.conn.execute(
                "INSERT INTO maintenance_log(at, category, author, source, check_name, message) VALUES (?,?,?,?,?,?)",
                (at, category, author, source, check_name, message)).lastrowid

    def record_action(self, row: dict) -> int:
        """One audit row (columns of `action_runs`); returns its id."""
        columns = ", ".join(row)
        with self._lock:
            return self.conn.execute(f"INSERT INTO action_runs({columns}) VALUES ({', '.join('?' * len(row))})",
                                     tuple(row.values())).lastrowid

    def update_action(self, action_id: int, **values) -> None:
        """Fill in what is known later (verification outcome)."""
        assignments = ", ".join(f"{column} = ?" for column in values)
        with self._lock:
            self.conn.execute(f"UPDATE action_runs SET {assignments} WHERE id = ?", (*values.values(), action_id))

    def interrupt_running_actions(self) -> int:
        """At start: actions audited as running were cut short when the previous agent process ended."""
        with self._lock:
            return self.conn.execute("UPDATE action_runs SET outcome = 'interrupted' WHERE outcome = 'running'").rowcount

    def policy_states(self) -> dict[tuple[str, str], str]:
        with self._lock:
            rows = self.conn.execute("SELECT check_name, action, state FROM policy_state").fetchall()
        return {(check, action): state for check, action, state in rows}

    def save_policy_states(self, states: dict[tuple[str, str], str]) -> None:
        if not states:
            return
        with self._lock:
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                self.conn.executemany("INSERT OR REPLACE INTO policy_state(check_name, action, state) VALUES (?,?,?)",
                                      [(c, a, state) for (c, a), state in states.items()])
                self.conn.execute("COMMIT")
            except BaseException:
                if self.conn.in_transaction:
                    self.conn.execute("ROLLBACK")
                raise

    def take_requests(self) -> list[tuple[int, float, str, str, str | None]]:
        """Operator requests left by the CLI (id, at, kind, target, args), removed as they are taken."""
        with self._lock:
            rows = self.conn.execute("SELECT id, at, kind, target, args FROM operator_requests ORDER BY id").fetchall()
            if rows:
                self.conn.execute("DELETE FROM operator_requests WHERE id <= ?", (rows[-1][0],))
        return rows

    def open_window(self, window: maintenance.Window) -> int | None:
        with self._lock:
            return maintenance.insert_window(self.conn, window)

    def open_windows(self) -> list[maintenance.Window]:
        with self._lock:
            return maintenance.read_windows(self.conn, open_only=True)

    def end_window(self, window_id: int, *, at: float, by: str, reason: str) -> bool:
        with self._lock:
            return maintenance.end_window(self.conn, window_id, at=at, by=by, reason=reason)

    def last_signal_id(self) -> int:
        from agent.plugin.heartbeat import last_signal_id
        with self._lock:
            return last_signal_id(self.conn)

    def signalled_since(self, after_id: int) -> tuple[int, set[str]]:
        """(newest heartbeat signal id, jobs that signalled after `after_id`)."""
        from agent.plugin.heartbeat import signalled_since
        with self._lock:
            return signalled_since(self.conn, after_id)

    def record_signal(self, check: str, kind: str, at: float, **fields) -> None:
        """A heartbeat signal received by the agent itself (`POST /ping/NAME`)."""
        from agent.plugin.heartbeat import record
        with self._lock:
            record(self.conn, check, kind, at, **fields)

    def get_state(self, key: str) -> str | None:
        with self._lock:
            row = self.conn.execute("SELECT value FROM agent_state WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def set_state(self, key: str, value: str) -> None:
        with self._lock:
            self.conn.execute("INSERT OR REPLACE INTO agent_state(key, value) VALUES (?, ?)", (key, value))

    def rollup_and_prune(self, now: float, tz: ZoneInfo, keep_raw: float, keep_rollups: float) -> dict[str, int]:
        """Roll every completed local day not yet rolled up, then prune raw runs and old rollups.

        Raw rows go in batches so the CLI and the sink are never locked out for long.
        """
        today = datetime.fromtimestamp(now, tz).date()
        through = self.get_state("rollup_through")
        if through:
            day = date.fromisoformat(through) + timedelta(days=1)
        else:
            with self._lock:
                first = self.conn.execute("SELECT min(started) FROM check_runs").fetchone()[0]
            day = datetime.fromtimestamp(first, tz).date() if first is not None else today
        rolled, failed = 0, []
        while day < today:
            try:
                self._rollup_day(day, tz)
                rolled += 1
            except sqlite3.Error as exc:   # one bad day must not stop retention for good
                failed.append(f"{day}: {exc}")
            self.set_state("rollup_through", day.isoformat())
            day += timedelta(days=1)
        pruned = 0
        while True:
            with self._lock:
                deleted = self.conn.execute(
                    "DELETE FROM check_runs WHERE (check_id, started) IN "
                    "(SELECT check_id, started FROM check_runs WHERE started < ? LIMIT ?)",
                    (now - keep_raw, PRUNE_BATCH_ROWS)).rowcount
            pruned += deleted
            if deleted < PRUNE_BATCH_ROWS:
                break
        cutoff = datetime.fromtimestamp(now - keep_rollups, tz).date().isoformat()
        from agent.plugin.heartbeat import prune
        with self._lock:
            dropped = self.conn.execute("DELETE FROM check_rollups WHERE day < ?", (cutoff,)).rowcount
            signals = prune(self.conn, now - keep_raw)
        return {"days_rolled_up": rolled, "runs_pruned": pruned, "rollups_pruned": dropped,
                "signals_pruned": signals,
                "days_failed": "; ".join(failed) or None}

    def _rollup_day(self, day: date, tz: ZoneInfo) -> None:
        start = datetime.combine(day, dtime(0), tz).timestamp()
        end = datetime.combine(day + timedelta(days=1), dtime(0), tz).timestamp()
        with self._lock:
            counts = self.conn.execute(
                "SELECT check_id, count(*), sum(status=0), sum(status=1), sum(status=2), sum(status=3) "
                "FROM check_runs WHERE started >= ? AND started < ? GROUP BY check_id", (start, end)).fetchall()
            stats: dict[int, dict] = {}
            for check_id, key, low, avg, high in self.conn.execute(
                    "SELECT r.check_id, j.key, min(j.value), avg(j.value), max(j.value) "
                    "FROM check_runs r, json_each(r.metrics) j WHERE r.started >= ? AND r.started < ? "
                    "GROUP BY r.check_id, j.key", (start, end)):
                stats.setdefault(check_id, {})[key] = {"min": low, "avg": avg, "max": high}
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                for check_id, runs, ok, warning, critical, unknown in counts:
                    self.conn.execute(
                        "INSERT OR REPLACE INTO check_rollups VALUES (?,?,?,?,?,?,?,?)",
                        (check_id, day.isoformat(), runs, ok, warning, critical, unknown,
                         json.dumps(stats.get(check_id, {}), separators=(",", ":"))))
                self.conn.execute("COMMIT")
            except BaseException:
                if self.conn.in_transaction:
                    self.conn.execute("ROLLBACK")
                raise


if __name__ == "__main__":   # `python -m agent.store.writer migrate PATH`: what the daemon runs before it opens a new store
    import sys
    if len(sys.argv) != 3 or sys.argv[1] != "migrate":
        sys.exit("usage: python -m agent.store.writer migrate PATH")
    Store(Path(sys.argv[2])).close()
