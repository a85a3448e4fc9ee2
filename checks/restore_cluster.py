"""Scratch-cluster restore tests (seed 002 "Backup procedures", RTO ≤ 4 h, RPO ≤ 1 h): type `restore_cluster`.

`restore_test` restores one database's dump into a scratch database on a live
server. The seed's other two backups need a server of their own: a
`pg_basebackup -Ft -z` base backup is a whole data directory to recover, and a
`pg_dumpall` file creates roles and databases. This check restores the newest
of either into a temporary PostgreSQL cluster that the agent starts for the
test, measures the restore time (RTO) and the point in time the backup
recovers to (RPO: the test's time minus that point), runs sanity queries in
the databases it holds, and removes it.

The work happens in a worker process (`checks.restore_worker`), niced, in its
own process group recorded with the agent's children; the scratch server runs
in that group, as the agent's user or as `run_as` when the agent is root
(`checks.scratch_cluster`). The agent keeps what must survive the worker:

- one restore at a time per host: an exclusive lock on
  `<state_dir>/restore_cluster.lock`, which also records the run directory in
  use (a later run waits for it, within its own timeout);
- the run directory `<scratch_dir>/maint-restore-<UTC time>-<random>` (0700),
  removed after every run whatever happened — timeout, failure, crash of the
  worker — after the scratch server is stopped: its `postmaster.pid` is read
  and the process killed only when it is a `postgres` of the expected user
  whose working directory is that data directory;
- at the agent's start (`startup`), and before each run, what a killed agent
  left — the recorded run directory and any `maint-restore-*` directory in
  `scratch_dir` — is removed the same way, with a `restore_cluster.leftover_removed`
  log line.

Nothing in the agent process imports psycopg or reads the backup: its memory
stays where it was while the worker restores gigabytes.
"""

from __future__ import annotations

import json
import os
import pwd
import re
import secrets
import shutil
import stat
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from agent.plugin import logs
from agent.plugin.child_env import child_env
from agent.plugin.fields import AbsolutePath, Duration, PositiveDuration
from agent.plugin.result import SUMMARY_CAP_CHARS, CheckResult, Status, sample, worst
from agent.plugin.units import format_duration, format_size
from checks.backup_verify import BackupFile, find_backups
from checks.base import Check, CheckContext, CheckOptions, MetricSpec
from checks.bounded_process import StreamedOutput
from checks.restore_common import RESTORE_METRICS, SanityQuery
from checks.scratch_dirs import LOCK_NAME, RUN_PREFIX, HostLock, leftover_dirs, remove_run_dir, track

WORKER_GRACE_SECONDS = 20.0        # past the worker's own deadline: it stops the server and reports
NICE = 10
_SOCKET_TAIL = "/maint-restore-20260101t000000-00000000/socket/.s.PGSQL.5432"
_SUN_PATH_MAX = 107                # sockaddr_un.sun_path, without its NUL
_UNSAFE_PATH = re.compile(r"['%\"\\\x00-\x1f\x7f]")
_WORKER_BOOT = "import sys; sys.path.insert(0, sys.argv[1]); from checks.restore_worker import main; " \
               "sys.exit(main(sys.argv[2]))"
_CODE_ROOT = str(Path(__file__).resolve().parent.parent)
_OUTPUT_CAP = 1024 * 1024
_SHARED = {m.name: m for m in RESTORE_METRICS}


class ClusterSanityQuery(SanityQuery):
    """A sanity query with the restored database it runs in."""

    database: str = Field("postgres", min_length=1, description="the restored database to run it in")


def _plain_path(path: str | None) -> str | None:
    """Paths written into postgresql.conf and a shell command: no quotes, `%`, backslashes or control characters."""
    if path is not None and _UNSAFE_PATH.search(path):
        raise ValueError(f"{path!r}: quotes, '%', backslashes and control characters are not accepted here")
    return path


# --- the check -----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Source:
    kind: Literal["base_backup", "pg_dumpall"]
    file: BackupFile
    wal_tar: str | None = None


class _Stop(Exception):
    def __init__(self, status: Status, reason: str):
        super().__init__(reason)
        self.status = status
        self.reason = reason


class RestoreClusterCheck(Check):
    """The quarterly DR drill on a scratch cluster: restore the newest base backup or pg_dumpall, query, remove.

    The newest match of `path` (by mtime; a file still being written, younger
    than `settle`, is skipped) is either a base backup's `base.tar.gz` from
    `pg_basebackup -Ft -z` (with `pg_wal.tar.gz` beside it, or WAL from
    `wal_archive`, or both) or a `pg_dumpall` script (`.sql`, `.sql.gz`);
    `format` says which when the name does not. The cluster runs the backup's
    major version (PG_VERSION in the base backup, the dump's "Dumped from
    database version") from `/usr/lib/postgresql/<major>/bin` or `pg_bin_dir`,
    with its data in a new 0700 directory under `scratch_dir`, listening on a
    Unix socket in a private directory beside it and nowhere else.

    Before anything is written the backup is read to its end (a truncated
    archive or dump is CRITICAL then) and the free space of `scratch_dir` must
    be at least 1.2 × what it expands to (UNKNOWN otherwise, nothing
    written). A base backup then recovers (`wal_archive` adds a
    `restore_command` copying from that directory, so the restore reaches the
    newest archived commit); a pg_dumpall script is replayed without psql and
    judged statement by statement (`checks.dump_policy.judge_cluster`: roles
    and databases yes; meta-commands, tablespaces, subscriptions, COPY to or
    from programs, untrusted languages, library-loading settings no; refused:
    UNKNOWN). Then every database is counted (tables; rows unless
    `count_rows: false`; size) and the `sanity` queries run in their
    `database`, read-only.

    CRITICAL when the restore fails (the server's own FATAL line or the
    failing statement), a sanity query misses, the restore took longer than
    `rto` or the recovered point is older than `rpo` at the end of the restore
    (`restore_rpo_seconds`: the data this backup would lose). A base backup
    recovers to its last replayed transaction (`pg_last_xact_replay_timestamp`),
    or to its start when none was replayed; a pg_dumpall file to its mtime. The
    scratch directory is removed after every run; when it cannot be, WARNING.

    PostgreSQL refuses to run as root: an agent running as root needs `run_as`
    (a dedicated unprivileged user; the backup files must be readable by the
    agent, the WAL archive by `run_as`). Restores of one host run one at a
    time; a run waiting for another counts its wait in its `timeout` (default
    6h). Without `every` or `schedule` the test runs on the `quarterly`
    schedule.
    """

    TYPE = "restore_cluster"
    METRIC_PREFIX = "backup"


    EXAMPLE = """
        - name: dr-cluster-restore
          type: restore_cluster
          schedule: quarterly
          timeout: 6h
          path: /backups/database/2*/base.tar.gz     # pg_basebackup -Ft -z; pg_wal.tar.gz beside it
          wal_archive: /backups/wal                  # recovers to the newest archived commit
          scratch_dir: /var/lib/maint-agent/restore  # 1.2 × the expanded backup must be free
          sanity:
            - {database: app, name: users exist, query: "SELECT count(*) FROM users", min: 1}
          rto: 4h
          rpo: 1h
    """
    class Options(CheckOptions):
        type: Literal["restore_cluster"]
        path: str = Field(..., description="absolute glob of the backups, e.g. /backups/database/*/base.tar.gz or "
                                           "/backups/database/*/full_backup.sql.gz; the newest is restored")
        format: Literal["auto", "base_backup", "pg_dumpall"] = Field(
            "auto", description="base_backup: pg_basebackup -Ft base.tar[.gz]; pg_dumpall: its SQL script, plain "
                                "or gzip; auto: a .tar/.tar.gz/.tgz name is a base backup, anything else a script")
        scratch_dir: AbsolutePath = Field(..., description="directory the scratch cluster's data goes under (one "
                                                           "new 0700 directory per run; created 0711 when missing); "
                                                           "needs 1.2 × the backup's expanded size free")
        wal_archive: AbsolutePath | None = Field(
            None, description="directory archive_command copies WAL into; recovery fetches segments from it, so a "
                              "base backup recovers to the newest archived commit")
        run_as: str | None = Field(None, pattern=r"^[a-z_][a-z0-9_.-]{0,31}$",
                                   description="unprivileged user the scratch cluster runs as when the agent runs "
                                               "as root (PostgreSQL refuses root); give it a user of its own")
        role: str = Field("postgres", min_length=1, max_length=63,
                          description="base backups: a superuser of the backed-up cluster to connect as")
        pg_bin_dir: AbsolutePath | None = Field(None, description="where postgres and initdb are; default "
                                                                  "/usr/lib/postgresql/<backup's major>/bin")
        sanity: tuple[ClusterSanityQuery, ...] = Field(
            (), description="queries with expectations and their database, e.g. {database: aicamera, query: "
                            "SELECT count(*) FROM users, min: 1}")
        count_rows: bool = Field(True, description="count every table's rows (reads all restored data); false: "
                                                   "tables and sizes only")
        rto: Duration = Field(4 * 3600.0, description="CRITICAL when the restore takes longer (the RTO target)")
        rpo: Duration = Field(3600.0, description="CRITICAL when the recovered point is older than this at the end "
                                                  "of the restore (the RPO target)")
        settle: Duration = Field(300.0, description="backups modified more recently are taken as still being "
                                                    "written and ignored")
        timeout: PositiveDuration | None = Field(6 * 3600.0, description="the whole test, waiting for another "
                                                                         "restore included")
        statement_timeout: PositiveDuration = Field(60.0, description="each sanity query without its own timeout")

        _paths = field_validator("scratch_dir", "wal_archive")(_plain_path)

        @field_validator("path")
        @classmethod
        def _absolute(cls, path: str) -> str:
            if not path.startswith("/"):
                raise ValueError(f"must be an absolute path or glob (got {path!r})")
            return path

        @field_validator("scratch_dir")
        @classmethod
        def _socket_fits(cls, path: str) -> str:
            longest = len(path.rstrip("/").encode()) + len(_SOCKET_TAIL)
            if longest > _SUN_PATH_MAX:
                raise ValueError(f"{path!r} is too long: the scratch server's socket path would take {longest} "
                                 f"bytes, Unix sockets allow {_SUN_PATH_MAX}")
            return path

        @model_validator(mode="before")
        @classmethod
        def _quarterly(cls, data):
            if isinstance(data, dict) and "every" not in data and "schedule" not in data:
                return {**data, "schedule": "quarterly"}
            return data

    METRICS = (
        _SHARED["restore_last_success_timestamp_seconds"],
        _SHARED["restore_passed"],
        _SHARED["restore_duration_seconds"],
        _SHARED["restore_database_size_bytes"],
        _SHARED["restore_tables"],
        _SHARED["restore_sanity_failed"],
        MetricSpec("restore_recovered_timestamp_seconds", "seconds",
                   "Point in time the restored backup recovered to (last replayed transaction, else the backup's "
                   "start; a pg_dumpall file's mtime)."),
        MetricSpec("restore_rpo_seconds", "seconds",
                   "Time from the recovered point to the end of the restore: the data this backup would lose (the "
                   "measured RPO)."),
        MetricSpec("restore_databases", "count", "Databases in the restored scratch cluster."),
        MetricSpec("restore_rows", "count", "Rows counted in the restored tables."),
    )

    def __init__(self, options):
        super().__init__(options)
        self._last_success = 0.0

    # --- the agent's start ---------------------------------------------------------------------------------

    def startup(self, state_dir: Path | None) -> None:
        """Remove what a killed agent left (its scratch server included), unless a restore is running now."""
        lock = HostLock(self._lock_path(state_dir))
        try:
            if not lock.acquire(None):
                return
        except OSError as exc:
            logs.event("restore_cluster.lock_failed", "error", check=self.options.name, file=str(lock.path),
                       error=exc.strerror)
            return
        try:
            self._clean_leftovers(lock)
        finally:
            lock.release()

    def _lock_path(self, state_dir: Path | None) -> Path:
        return Path(state_dir or self.options.scratch_dir) / LOCK_NAME

    def _clean_leftovers(self, lock: HostLock) -> list[dict]:
        recorded = lock.recorded()
        uid = recorded.get("uid")
        if not isinstance(uid, int):
            uid = self._server_uid()
        removals = []
        for path in leftover_dirs(self.options.scratch_dir, recorded.get("run_dir")):
            removal = remove_run_dir(path, uid)
            removals.append(removal.evidence())
            logs.event("restore_cluster.leftover_removed", "warning" if removal.removed else "error",
                       check=self.options.name, dir=removal.path, removed=removal.removed,
                       postmaster=removal.postmaster, error=removal.error)
        lock.record(None)
        return removals

    def _server_uid(self) -> int:
        if self.options.run_as and os.geteuid() == 0:
            try:
                return pwd.getpwnam(self.options.run_as).pw_uid
            except KeyError:
                pass
        return os.geteuid()

    # --- a run ---------------------------------------------------------------------------------------------

    def run(self, ctx: CheckContext) -> CheckResult:
        o = self.options
        started = ctx.monotonic()
        details: dict[str, Any] = {}
        try:
            user = self._server_user()
            source = self._source(ctx)
            details.update(file=source.file.evidence(ctx.wall()), kind=source.kind, wal_tar=source.wal_tar,
                           wal_archive=o.wal_archive)
            facts = self._locked(source, user, ctx, started, details)
        except _Stop as stop:
            return self._result(stop.status, stop.reason, details)
        return self._conclude(source, facts, details, ctx)

    def _server_user(self) -> tuple[int, int] | None:
        """(uid, gid) the scratch server runs as when the agent is root, None for the agent's own user."""
        o = self.options
        euid = os.geteuid()
        if o.run_as is None:
            if euid == 0:
                raise _Stop(Status.UNKNOWN, "the agent runs as root and PostgreSQL refuses to: set run_as to an "
                                            "unprivileged user of its own for the scratch cluster")
            return None
        try:
            entry = pwd.getpwnam(o.run_as)
        except KeyError:
            raise _Stop(Status.UNKNOWN, f"run_as user {o.run_as!r} does not exist on this host") from None
        if entry.pw_uid == 0:
            raise _Stop(Status.UNKNOWN, f"run_as user {o.run_as!r} is root, which PostgreSQL refuses")
        if euid != 0:
            if entry.pw_uid != euid:
                raise _Stop(Status.UNKNOWN, f"the agent runs as uid {euid} and cannot start the scratch cluster as "
                                            f"{o.run_as!r}: leave run_as out (the cluster then runs as the agent's "
                                            f"user)")
            return None
        return entry.pw_uid, entry.pw_gid

    def _source(self, ctx: CheckContext) -> Source:
        o = self.options
        try:
            files, writing = find_backups(o.path, ctx.wall(), o.settle)
        except OSError as exc:
            raise _Stop(Status.UNKNOWN, f"cannot list {o.path}: {exc.strerror} ({exc.filename})") from None
        files = [f for f in files if not os.path.basename(f.path).startswith("pg_wal.tar")]   # beside base.tar.gz
        if not files:
            note = f" ({len(writing)} still being written)" if writing else ""
            raise _Stop(Status.CRITICAL, f"no backup matches {o.path}{note}")
        newest = files[0]
        kind = o.format if o.format != "auto" else \
            "base_backup" if newest.path.endswith((".tar", ".tar.gz", ".tgz")) else "pg_dumpall"
        if kind == "pg_dumpall":
            return Source(kind, newest)
        folder = os.path.dirname(newest.path)
        wal = next((p for p in (os.path.join(folder, n) for n in ("pg_wal.tar.gz", "pg_wal.tar"))
                    if os.path.isfile(p)), None)
        if wal is None and o.wal_archive is None:
            raise _Stop(Status.CRITICAL, f"pg_wal.tar.gz missing beside {os.path.basename(newest.path)} in "
                                         f"{folder} and no wal_archive configured: the base backup cannot recover "
                                         f"to a consistent state without its WAL")
        return Source(kind, newest, wal)

    def _locked(self, source: Source, user, ctx: CheckContext, started: float, details: dict) -> dict:
        """Take the host's restore lock, clear leftovers, run the worker in a new run directory, remove it."""
        o = self.options
        deadline = started + ctx.timeout
        reserve = min(60.0, max(5.0, ctx.timeout * 0.05))      # kept back to stop the server and remove its files
        lock = HostLock(self._lock_path(ctx.state_dir))

        def waiting(holder: dict) -> None:
            logs.event("restore_cluster.waiting", check=o.name, holder=holder.get("check"))

        try:
            taken = lock.acquire(deadline - reserve, ctx.monotonic, waiting)
        except OSError as exc:
            raise _Stop(Status.UNKNOWN, f"cannot open the restore lock {lock.path}: {exc.strerror}") from None
        if not taken:
            holder = lock.holder.get("check", "another restore")
            raise _Stop(Status.UNKNOWN, f"timed out after {format_duration(ctx.timeout)} waiting for {holder} to "
                                        f"finish (one restore at a time per host)")
        uid = user[0] if user else os.geteuid()
        try:
            leftovers = self._clean_leftovers(lock)
            if leftovers:
                details["leftovers_removed"] = leftovers
            run_dir = self._run_dir(user, ctx)
            details["scratch"] = str(run_dir)
            track(run_dir, uid)
            lock.record({"check": o.name, "run_dir": str(run_dir), "uid": uid, "pid": os.getpid(),
                         "started": ctx.wall()})
            try:
                return self._work(source, run_dir, user, ctx, deadline - reserve, details)
            finally:
                removal = remove_run_dir(run_dir, uid)
                details["removal"] = removal.evidence()
                lock.record(None)
        finally:
            lock.release()

    def _run_dir(self, user, ctx: CheckContext) -> Path:
        scratch = self.options.scratch_dir
        try:
            os.mkdir(scratch, 0o711)        # traversable by run_as, listed by the agent only
        except FileExistsError:
            pass
        except OSError as exc:
            raise _Stop(Status.UNKNOWN, f"cannot create scratch_dir {scratch}: {exc.strerror}") from None
        try:
            st = os.lstat(scratch)
        except OSError as exc:
            raise _Stop(Status.UNKNOWN, f"scratch_dir {scratch}: {exc.strerror}") from None
        if not stat.S_ISDIR(st.st_mode):
            raise _Stop(Status.UNKNOWN, f"scratch_dir {scratch} is not a directory (a symlink is not followed: name "
                                        f"the directory itself)")
        if st.st_mode & stat.S_IWOTH and not st.st_mode & stat.S_ISVTX:
            raise _Stop(Status.UNKNOWN, f"scratch_dir {scratch} is writable by everyone without the sticky bit: "
                                        f"others could replace the restore's directory")
        stamp = time.strftime("%Y%m%dt%H%M%S", time.gmtime(ctx.wall()))
        path = Path(scratch) / f"{RUN_PREFIX}{stamp}-{secrets.token_hex(4)}"
        try:
            os.mkdir(path, 0o700)
            if user:
                os.chown(path, *user)
        except OSError as exc:
            raise _Stop(Status.UNKNOWN, f"cannot create the scratch directory in {scratch}: {exc.strerror}") from None
        return path

    def _work(self, source: Source, run_dir: Path, user, ctx: CheckContext, deadline: float, details: dict) -> dict:
        """Run the worker until it reports or its deadline passes; return its facts or raise _Stop."""
        o = self.options
        seconds = deadline - ctx.monotonic() - WORKER_GRACE_SECONDS
        if seconds <= 0:
            raise _Stop(Status.UNKNOWN, "timed out before the restore began")
        spec = {"kind": source.kind, "backup": source.file.path, "wal_tar": source.wal_tar,
                "wal_archive": o.wal_archive, "run_dir": str(run_dir), "user": list(user) if user else None,
                "bin_dir": o.pg_bin_dir, "role": o.role, "count_rows": o.count_rows,
                "sanity": [q.model_dump(exclude_none=True) for q in o.sanity],
                "statement_timeout": o.statement_timeout, "seconds": seconds, "parent": os.getpid()}
        argv = _lowered_priority() + [sys.executable, "-I", "-c", _WORKER_BOOT, _CODE_ROOT, json.dumps(spec)]
        logs.event("restore_cluster.start", check=o.name, file=source.file.path, kind=source.kind, dir=str(run_dir))
        result, lines, began = None, _Lines(), ctx.monotonic()
        try:
            with StreamedOutput(argv, deadline=deadline, env=child_env(), monotonic=ctx.monotonic) as child:
                try:
                    for chunk in child:
                        for line in lines.feed(chunk):
                            result = self._event(line, ctx.monotonic() - began) or result
                except TimeoutError:
                    raise _Stop(Status.UNKNOWN, f"restore timed out after {format_duration(ctx.timeout)} (the "
                                                f"check's timeout; set it above the expected restore time); "
                                                f"worker and scratch server killed") from None
                finally:
                    details["worker_errors"] = child.errors[-2000:] or None
        except OSError as exc:
            raise _Stop(Status.UNKNOWN, f"cannot start the restore worker: {exc.strerror or exc}") from None
        if result is None:
            raise _Stop(Status.UNKNOWN, f"the restore worker ended without a result: "
                                        f"{_last_line(details.get('worker_errors'))}")
        details.update(result.get("facts", {}))
        status = {"ok": None, "critical": Status.CRITICAL}.get(result["status"], Status.UNKNOWN)
        if status is not None:
            raise _Stop(status, result.get("reason") or "the restore failed")
        return result["facts"]

    def _event(self, line: bytes, elapsed: float) -> dict | None:
        try:
            event = json.loads(line)
        except ValueError:
            return None
        if not isinstance(event, dict):
            return None
        if "phase" in event:
            logs.event("restore_cluster.phase", check=self.options.name, phase=event["phase"],
                       elapsed=format_duration(elapsed))
        elif "waiting" in event:
            logs.event("restore_cluster.progress", check=self.options.name, waiting=event["waiting"],
                       elapsed=format_duration(elapsed))
        return event.get("result") if isinstance(event.get("result"), dict) else None

    # --- the verdict ---------------------------------------------------------------------------------------

    def _conclude(self, source: Source, facts: dict, details: dict, ctx: CheckContext) -> CheckResult:
        o = self.options
        databases = facts.get("databases", [])
        sanity = facts.get("sanity", [])
        failed = [s for s in sanity if not s.get("ok")]
        rto = float(facts.get("restore_seconds", 0.0))
        recovered = facts.get("recovered_at")
        rpo = max(0.0, facts["recovered_wall"] - recovered) if recovered is not None else None
        details.update(rpo_seconds=None if rpo is None else round(rpo, 3), rto_target_seconds=o.rto,
                       rpo_target_seconds=o.rpo)
        samples = [sample("restore_duration_seconds", rto),
                   sample("restore_databases", len(databases)),
                   sample("restore_tables", sum(d.get("tables", 0) for d in databases)),
                   sample("restore_database_size_bytes", sum(d.get("size_bytes", 0) for d in databases)),
                   sample("restore_sanity_failed", len(failed))]
        if o.count_rows:
            samples.append(sample("restore_rows", sum(d.get("rows", 0) for d in databases)))
        if recovered is not None:
            samples += [sample("restore_recovered_timestamp_seconds", recovered), sample("restore_rpo_seconds", rpo)]
        problems = []
        if failed:
            problems.append(f"sanity failed ({len(failed)}/{len(sanity)}): "
                            + "; ".join(f"{s['name']}: {s['reason']}" for s in failed))
        if rto > o.rto:
            problems.append(f"RTO not met: the restore took {format_duration(rto)} > {format_duration(o.rto)}")
        if rpo is not None and rpo > o.rpo:
            problems.append(f"RPO not met: the backup recovers to {_when(recovered)}, {format_duration(rpo)} before "
                            f"the restore ended > {format_duration(o.rpo)}"
                            + ("" if source.kind == "pg_dumpall" or o.wal_archive else
                               " (wal_archive would recover past the base backup)"))
        what = f"{os.path.basename(source.file.path)} ({format_size(source.file.size)}, PostgreSQL " \
               f"{facts.get('version', '?')})"
        rows = f", {sum(d.get('rows', 0) for d in databases):,} rows" if o.count_rows else ""
        told = (f"restored {what} in {format_duration(rto)} (RTO ≤ {format_duration(o.rto)}); recovered to "
                f"{_when(recovered)}" + (f" (RPO {format_duration(rpo)} ≤ {format_duration(o.rpo)})"
                                         if rpo is not None else "")
                + f"; {len(databases)} databases, {sum(d.get('tables', 0) for d in databases)} tables{rows}; "
                + (f"{len(sanity) - len(failed)}/{len(sanity)} sanity queries passed" if sanity
                   else "no sanity queries configured"))
        status = Status.CRITICAL if problems else Status.OK
        if not failed:
            self._last_success = ctx.wall()
        summary = "; ".join(problems + [told]) if problems else told
        return self._result(status, summary, details, samples, passed=not failed)

    def _result(self, status: Status, summary: str, details: dict, samples=(), passed: bool = False) -> CheckResult:
        removal = details.get("removal")
        notes = [summary]
        if removal is not None:
            if removal["removed"]:
                notes.append("scratch cluster removed")
            else:
                status = worst(status, Status.WARNING)
                notes.append(f"scratch directory {removal['dir']} NOT removed ({removal['error']}; server "
                             f"{removal['postmaster']}): remove it by hand")
        left = details.get("leftovers_removed")
        if left:
            notes.append(f"removed {len(left)} scratch director{'y' if len(left) == 1 else 'ies'} left by an "
                         f"interrupted run")
        text = "; ".join(notes)
        text = text if len(text) <= SUMMARY_CAP_CHARS else text[:SUMMARY_CAP_CHARS - 1] + "…"
        ran = bool(samples)
        base = [sample("restore_last_success_timestamp_seconds", self._last_success),
                sample("restore_passed", 1 if ran and passed and status is not Status.UNKNOWN else 0)]
        logs.event("restore_cluster.finished", check=self.options.name, status=status.label,
                   removed=removal["removed"] if removal else None)
        return CheckResult(status, text, tuple(base + list(samples)), details)


class _Lines:
    """Split a byte stream into lines, keeping at most _OUTPUT_CAP of an unfinished one."""

    def __init__(self):
        self.pending = b""

    def feed(self, chunk: bytes) -> list[bytes]:
        self.pending += chunk
        *lines, self.pending = self.pending.split(b"\n")
        if len(self.pending) > _OUTPUT_CAP:
            self.pending = b""
        return [line for line in lines if line.strip()]


def _lowered_priority() -> list[str]:
    """`nice -n 10 ionice -c 2 -n 7`: the worker and the scratch server yield CPU and disk to production."""
    prefix = []
    nice = shutil.which("nice")
    if nice:
        prefix += [nice, "-n", str(NICE)]
    ionice = shutil.which("ionice")
    if ionice:
        prefix += [ionice, "-c", "2", "-n", "7"]
    return prefix


def _when(ts: float | None) -> str:
    if ts is None:
        return "an unknown point"
    return time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(ts))


def _last_line(text: str | None) -> str:
    lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
    return lines[-1] if lines else "no message"
