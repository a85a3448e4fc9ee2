"""Backups on disk and restore tests (seed 002 "Backup Strategy", "Backup Verification Script", RPO/RTO).

`backup_files` watches the dumps a backup job leaves on disk: how old the
newest is, whether it reads back to its end, whether it shrank suspiciously,
and whether as many are kept as the retention policy promises. `restore_test`
is the disaster recovery drill, automated: it restores the newest dump into a
scratch database, runs sanity queries there, drops it, and reports the
measured restore time (the RTO figure).

Every read of a backup is streamed in chunks (bounded memory whatever the file
size) and checks the run's deadline between chunks, so a huge file ends in
UNKNOWN "timed out" instead of a hung worker. pg_restore runs through
`checks.bounded_process` (own process group, killed at the deadline, an
environment built from nothing). A restore never runs psql: the dump's SQL is
read by `checks.pg_script` and sent through psycopg (`checks.pg_load`).
Metric labels are the check name only: file names go to the details (the
evidence the store keeps), never to labels.
"""

from __future__ import annotations

import os
import re
import secrets
import time
import zlib
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any, Iterator, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from agent.plugin import logs
from agent.plugin.child_env import child_env
from agent.plugin.fields import AbsoluteGlob, Duration, LongDuration, PositiveDuration, Ratio, Secret, Size
from agent.plugin.result import CheckResult, Sample, Status, cap_summary, sample, worst
from agent.plugin.units import format_duration, format_size
from checks.base import Check, CheckContext, CheckOptions, DurationThresholds, MetricSpec, Threshold
from checks.backup_verify import (
    CHUNK_BYTES, EDGE_BYTES, SIDECAR_SUFFIX, BackupFile, CannotVerify, Corrupt, GunzipReader, RawReader, Recorder,
    Verification, VerifyTimeout, drain_raw, dump_script_problem, find_backups, find_program, read_sidecar,
    sidecar_key, verify_backup,
)
from checks.bounded_process import Finished, StreamedOutput
from checks.dump_policy import judge
from checks.pg_load import ScriptLoader, StatementFailed, Watchdog
from checks.pg_script import Connect, ScriptIncomplete, ScriptRefused, read_segments
from checks.pg_session import PgOptions, ProbeFailed, describe_error, is_down, open_session, redact_query
from checks.restore_common import RESTORE_METRICS, SanityQuery, run_sanity

_FALLBACK_FILES = 3                # older backups read when the newest fails, to find the last good one


def _default_keys(data: Any, **defaults: Any) -> Any:
    """Fill `defaults` into raw options only when none of their keys was given (warning/critical as a pair)."""
    if isinstance(data, dict) and not any(key in data for key in defaults):
        return {**data, **defaults}
    return data


def _short(path: str, pattern: str) -> str:
    """The part of `path` below the glob's fixed directory: `20250105/full_backup.sql.gz`."""
    base = os.path.dirname(re.split(r"[*?\[]", pattern, maxsplit=1)[0])
    return os.path.relpath(path, base) if base else path


# --- retention (pure) ----------------------------------------------------------------------------------------

class Keep(BaseModel):
    """GFS counts: how many of the most recent days, ISO weeks and months must each hold a backup."""

    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)
    daily: int = Field(0, ge=0, le=3660)
    weekly: int = Field(0, ge=0, le=520)
    monthly: int = Field(0, ge=0, le=240)

    def span_seconds(self) -> float:
        return max(self.daily * 86400.0, self.weekly * 7 * 86400.0, self.monthly * 31 * 86400.0)


class RetentionPolicy(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)
    max_age: LongDuration | None = Field(None, description="WARNING when a backup older than this is still there "
                                                           "(the clean-up is not running)")
    keep: Keep | None = Field(None, description="GFS counts, e.g. {daily: 7, weekly: 4, monthly: 12}")

    @model_validator(mode="after")
    def _consistent(self):
        if self.max_age is None and self.keep is None:
            raise ValueError("give max_age, keep or both")
        if self.max_age is not None and self.keep is not None and self.max_age < self.keep.span_seconds():
            raise ValueError(f"max_age ({format_duration(self.max_age)}) is shorter than what keep needs "
                             f"({format_duration(self.keep.span_seconds())}): the two rules contradict")
        return self


def _period(tier: str, moment: date) -> date:
    if tier == "daily":
        return moment
    if tier == "weekly":
        return moment - timedelta(days=moment.weekday())
    return moment.replace(day=1)


def _shift(tier: str, period: date, back: int) -> date:
    if tier == "daily":
        return period - timedelta(days=back)
    if tier == "weekly":
        return period - timedelta(weeks=back)
    months = period.year * 12 + period.month - 1 - back
    return date(months // 12, months % 12 + 1, 1)


def _label(tier: str, period: date) -> str:
    if tier == "weekly":
        year, week, _ = period.isocalendar()
        return f"{year}-W{week:02d}"
    return period.strftime("%Y-%m") if tier == "monthly" else period.isoformat()


def retention_gaps(times: list[float], now: float, keep: Keep) -> dict[str, dict]:
    """Given backup mtimes, the time and GFS counts, return per tier {needed, kept, missing: [periods]}.

    A tier of N needs a backup in each of its N most recent periods (local
    days, ISO weeks, calendar months). The current period counts once it holds
    a backup; until then (tonight's backup has not run yet) the N periods
    before it are the ones needed. A new installation therefore warns until
    it has built up the history its policy promises.
    """
    today = datetime.fromtimestamp(now).date()
    out = {}
    for tier, count in (("daily", keep.daily), ("weekly", keep.weekly), ("monthly", keep.monthly)):
        if not count:
            continue
        have = {_period(tier, datetime.fromtimestamp(t).date()) for t in times if t <= now}
        current = _period(tier, today)
        periods = [_shift(tier, current, back) for back in range(count + 1)]
        periods = periods[:count] if current in have else periods[1:]
        missing = [_label(tier, p) for p in periods if p not in have]
        out[tier] = {"needed": count, "kept": count - len(missing), "missing": missing}
    return out


# --- backup_files --------------------------------------------------------------------------------------------

class BackupFilesCheck(Check):
    """Backup files on disk: the newest one's age, size and integrity, shrinkage, and retention.

    The newest file matching `path` (by mtime) is read to its end according to
    its format (`auto` tells by the first bytes): gzip streams decompress to
    the end-of-stream marker and CRC, pg_dump/pg_dumpall scripts (plain or
    gzip) must end with their "dump complete" trailer, custom-format dumps pass
    `pg_restore --list` and `pg_restore -f /dev/null` (every data block), tar
    archives list to their end-of-archive marker. A `<file>.sha256` sidecar is
    compared when present. Any failure — or a zero-byte file, or one below
    `min_size` — is CRITICAL. A missing sidecar with `require_checksum` is
    WARNING: the data read back fine, only the proof against the original is
    missing.

    The thresholds (default, when neither is given: warning 26h, critical 48h —
    a daily backup plus slack) apply to the newest file's age. When
    the newest fails, up to three older ones are read to find the newest good
    one, whose mtime is `last_success_timestamp_seconds`. A file that passed
    and has not changed since (inode, size, mtime) is not read again by this
    agent process.

    Retention, all WARNING: with `max_age`, any backup older than that still
    present (the clean-up is not running); with `keep`, each of the N most
    recent days/ISO weeks/months (local time) must hold a backup (the current
    one counts once it has one) — fewer means backups were lost or the
    clean-up deletes too much. `shrink_ratio` = 1 − newest/previous size;
    WARNING at `max_shrink` or more. Use one pattern per database, or the
    comparison mixes dumps of different databases.
    """

    TYPE = "backup_files"
    EXAMPLE = """
        - name: db-dumps
          type: backup_files
          every: 15m
          path: /backups/database/*/full_backup.sql.gz
          warning: 26h            # age of the newest dump
          critical: 48h
          retention: {max_age: 30d, keep: {daily: 7, weekly: 4}}
    """
    METRIC_PREFIX = "backup"

    class Options(CheckOptions, DurationThresholds):
        type: Literal["backup_files"]
        warning: Duration | None = Field(None, description="age of the newest backup; 26h when neither warning "
                                                           "nor critical is given")
        critical: Duration | None = Field(None, description="age of the newest backup; 48h when neither warning "
                                                            "nor critical is given")
        path: AbsoluteGlob = Field(..., description="absolute glob of the backup files, e.g. "
                                           "/backups/database/*/full_backup.sql.gz; `**` matches subdirectories")
        format: Literal["auto", "gzip", "pg_custom", "tar", "plain"] = Field(
            "auto", description="how to verify the newest file; auto: by its first bytes")
        min_size: Size | None = Field(None, description="CRITICAL when the newest backup is smaller")
        max_shrink: Ratio | None = Field(0.6, description="WARNING when the newest is this much smaller than the "
                                                          "previous one (60%: less than 40% of its size)")
        require_checksum: bool = Field(False, description="WARNING when the newest has no <file>.sha256 sidecar")
        retention: RetentionPolicy | None = Field(None, description="max_age and/or keep {daily, weekly, "
                                                                    "monthly}; each breach is WARNING")
        settle: Duration = Field(300.0, description="files modified more recently are taken as still being "
                                                    "written and ignored")
        pg_bin_dir: str | None = Field(None, description="where pg_restore is; default: PATH, then the newest "
                                                         "/usr/lib/postgresql/*/bin")

        @model_validator(mode="before")
        @classmethod
        def _default_thresholds(cls, data):
            return _default_keys(data, warning="26h", critical="48h")

    METRICS = (
        MetricSpec("last_success_timestamp_seconds", "seconds",
                   "Modification time of the newest backup that passed verification (0 when none did)."),
        MetricSpec("age_seconds", "seconds", "Time since the newest backup was written."),
        MetricSpec("size_bytes", "bytes", "Size of the newest backup."),
        MetricSpec("verified", "boolean", "1 when the newest backup passed verification."),
        MetricSpec("files", "count", "Backups matching the pattern (files still being written excluded)."),
        MetricSpec("shrink_ratio", "ratio", "1 - newest size / previous size (0 when it grew)."),
        MetricSpec("retention_missing_periods", "count",
                   "Days, weeks and months of the keep policy that hold no backup."),
        MetricSpec("expired_files", "count", "Backups older than retention.max_age still present."),
    )
    THRESHOLD = Threshold(("age_seconds",), "seconds")

    def __init__(self, options):
        super().__init__(options)
        self._verified: dict[tuple, Verification] = {}   # (path, file key, sidecar key) → last reading

    def run(self, ctx: CheckContext) -> CheckResult:
        o = self.options
        started = ctx.monotonic()
        deadline = started + ctx.timeout
        now = ctx.wall()
        try:
            files, writing = find_backups(o.path, now, o.settle)
        except OSError as exc:
            return CheckResult.unknown(f"cannot list {o.path}: {exc.strerror} ({exc.filename})")
        samples = [sample("files", len(files))]
        details: dict[str, Any] = {"path": o.path, "files": [f.evidence(now) for f in files[:100]]}
        if writing:
            details["still_being_written"] = [f.evidence(now) for f in writing]
        present = {(f.path, f.key) for f in files}
        self._verified = {k: v for k, v in self._verified.items() if (k[0], k[1]) in present}
        if not files:
            samples.append(sample("last_success_timestamp_seconds", 0))
            note = f" ({len(writing)} still being written)" if writing else ""
            return CheckResult(Status.CRITICAL, f"no backup matches {o.path}{note}", tuple(samples), details)
        newest = files[0]
        samples += [sample("age_seconds", max(0.0, now - newest.mtime)), sample("size_bytes", newest.size)]
        notes: list[str] = []
        self._policy(files, now, samples, details, notes)
        try:
            v = self._verify(newest, deadline, ctx)
        except VerifyTimeout as exc:
            return self._timed_out(newest, exc, ctx, samples, details, notes)
        except CannotVerify as exc:
            return CheckResult(Status.UNKNOWN, str(exc), tuple(samples), details)
        details["newest"] = v.evidence(now)
        samples.append(sample("verified", 1 if v.ok else 0))
        good = v if v.ok else self._last_good(files[1:1 + _FALLBACK_FILES], deadline, ctx, details, now)
        samples.append(sample("last_success_timestamp_seconds", good.file.mtime if good else 0))
        name = _short(newest.path, o.path)
        described = f"{name} {format_duration(max(0.0, now - newest.mtime))} ago, {format_size(newest.size)}"
        if v.checksum == "missing (required)":
            notes.insert(0, f"{name}: no {SIDECAR_SUFFIX} sidecar (require_checksum)")
        elif v.checksum.startswith("unreadable"):
            notes.insert(0, f"{name}: {v.checksum}")
        status = Status.WARNING if notes else Status.OK
        if v.ok:
            matches = ", sha256 matches" if v.checksum == "match" else ""
            notes.append(f"newest {described}, verified ({v.format}{matches})")
        else:
            status = Status.CRITICAL
            since = (f"last good backup {_short(good.file.path, o.path)} from "
                     f"{format_duration(now - good.file.mtime)} ago" if good else "no good backup among the newest")
            notes.insert(0, f"newest backup {described} ({v.format}): {v.reason} — {since}")
        notes.append(f"{len(files)} backup{'s' if len(files) != 1 else ''}")
        return CheckResult(status, cap_summary("; ".join(notes)), tuple(samples), details)

    def _verify(self, f: BackupFile, deadline: float, ctx: CheckContext) -> Verification:
        key = (f.path, f.key, sidecar_key(f.path))
        cached = self._verified.get(key)
        if cached is not None:
            cached.cached = True
            return cached
        o = self.options
        v = verify_backup(f, o.format, deadline=deadline, monotonic=ctx.monotonic, wall=ctx.wall,
                          bin_dir=o.pg_bin_dir, min_size=o.min_size, require_checksum=o.require_checksum)
        self._verified[key] = v
        return v

    def _last_good(self, older: list[BackupFile], deadline: float, ctx: CheckContext, details: dict,
                   now: float) -> Verification | None:
        """The newest of `older` that passes, reading within what is left of the run; None when none does."""
        tried = []
        for f in older:
            try:
                v = self._verify(f, deadline, ctx)
            except (VerifyTimeout, CannotVerify):
                break
            tried.append(v.evidence(now))
            if v.ok:
                details["older_checked"] = tried
                return v
        details["older_checked"] = tried
        return None

    def _policy(self, files: list[BackupFile], now: float, samples: list, details: dict, notes: list) -> None:
        o = self.options
        if len(files) > 1 and files[1].size > 0:
            ratio = max(0.0, 1 - files[0].size / files[1].size)
            samples.append(sample("shrink_ratio", ratio))
            details["previous"] = files[1].evidence(now)
            if o.max_shrink is not None and ratio >= o.max_shrink:
                notes.append(f"newest is {ratio:.0%} smaller than the previous ({format_size(files[0].size)} vs "
                             f"{format_size(files[1].size)}; max_shrink {o.max_shrink:.0%})")
        policy = o.retention
        if policy is None:
            return
        retention: dict[str, Any] = {}
        if policy.max_age is not None:
            expired = [f for f in files if now - f.mtime > policy.max_age]
            samples.append(sample("expired_files", len(expired)))
            retention["expired"] = [f.path for f in expired[:50]]
            if expired:
                oldest = now - expired[-1].mtime
                notes.append(f"{len(expired)} backup{'s' if len(expired) != 1 else ''} older than "
                             f"{format_duration(policy.max_age)} still kept (oldest {format_duration(oldest)}): "
                             f"is the clean-up running?")
        if policy.keep is not None:
            gaps = retention_gaps([f.mtime for f in files], now, policy.keep)
            missing = sum(len(g["missing"]) for g in gaps.values())
            samples.append(sample("retention_missing_periods", missing))
            retention["keep"] = gaps
            short = [f"{g['kept']}/{g['needed']} {tier}" for tier, g in gaps.items() if g["missing"]]
            if short:
                first = next(g["missing"][0] for g in gaps.values() if g["missing"])
                notes.append(f"retention: only {', '.join(short)} periods hold a backup (e.g. none for {first})")
        details["retention"] = retention

    def _timed_out(self, f: BackupFile, exc: VerifyTimeout, ctx: CheckContext, samples, details, notes):
        cached = [v for v in self._verified.values() if v.ok]
        good = max(cached, key=lambda v: v.file.mtime, default=None)
        samples.append(sample("last_success_timestamp_seconds", good.file.mtime if good else 0))
        summary = (f"verification of {_short(f.path, self.options.path)} timed out after "
                   f"{format_duration(ctx.timeout)} (read {format_size(exc.read_bytes)} of {format_size(f.size)}); "
                   f"raise the check's timeout")
        details["newest"] = {**f.evidence(ctx.wall()), "integrity": "timed out", "read_bytes": exc.read_bytes}
        return CheckResult(Status.UNKNOWN, cap_summary("; ".join([summary, *notes])), tuple(samples), details)


# --- restore_test: the scratch database ----------------------------------------------------------------------

SCRATCH_PREFIX = "maint_restore_"
SCRATCH_RE = re.compile(r"maint_restore_(\d{8}t\d{6})_[0-9a-f]{8}")


def scratch_name(wall: float) -> str:
    """A fresh scratch database name: `maint_restore_<UTC time>_<random>`, unique across runs and hosts."""
    return f"{SCRATCH_PREFIX}{time.strftime('%Y%m%dt%H%M%S', time.gmtime(wall))}_{secrets.token_hex(4)}"


def ensure_scratch(name: str) -> str:
    """Return `name` when it is a scratch database name; raise RuntimeError otherwise.

    Called right before every DROP DATABASE (and kept as a real test, not an
    `assert` that `python -O` would strip): no code path can drop a database
    that does not carry the scratch pattern.
    """
    if not SCRATCH_RE.fullmatch(name):
        raise RuntimeError(f"refusing to drop {name!r}: not a restore_test scratch database name")
    return name


def _scratch_created(name: str) -> float | None:
    found = SCRATCH_RE.fullmatch(name)
    if not found:
        return None
    return datetime.strptime(found.group(1) + "+0000", "%Y%m%dt%H%M%S%z").timestamp()


# --- restore_test: loading a dump ----------------------------------------------------------------------------

_DRAIN_SECONDS = 30.0        # after the server rejects a statement, how long pg_restore may take to show its own error
_PRIVILEGED_SQL = """
    SELECT r.rolname, r.rolsuper, r.rolcreaterole AND current_setting('server_version_num')::int < 160000
    FROM pg_roles r
    WHERE pg_has_role(current_user, r.oid, 'MEMBER')
      AND (r.rolsuper OR (r.rolcreaterole AND current_setting('server_version_num')::int < 160000)
           OR r.rolname IN ('pg_execute_server_program', 'pg_read_server_files', 'pg_write_server_files'))
    ORDER BY r.rolname"""


def role_privileges(conn) -> tuple[str, list[str]]:
    """Given a session, return its role and what lets that role reach the database host (empty: nothing).

    A superuser, membership in pg_execute_server_program, pg_read_server_files
    or pg_write_server_files (the role itself or one it can SET ROLE to), and
    CREATEROLE before PostgreSQL 16 (it can grant itself those roles).
    """
    me, superuser = conn.execute("SELECT rolname, rolsuper FROM pg_roles WHERE rolname = current_user").fetchone()
    if superuser:
        return me, ["it is a superuser"]        # a superuser is a member of every role: the rest says nothing more
    reasons = []
    for role, superuser, createrole in conn.execute(_PRIVILEGED_SQL).fetchall():
        if superuser:
            reasons.append(f"it can act as superuser {role}")
        elif createrole:
            reasons.append(f"{'it' if role == me else role} has CREATEROLE, which before PostgreSQL 16 can grant "
                           f"pg_execute_server_program")
        else:
            reasons.append(f"it can act as {role}")
    return me, reasons


def restore_format(path: str) -> str:
    """Given a dump's path, return pg_directory, pg_custom, pg_tar or plain from what it holds."""
    if os.path.isdir(path):
        return "pg_directory"
    with open(path, "rb") as fh:
        head = fh.read(512)
    if head.startswith(b"PGDMP"):
        return "pg_custom"
    if head[257:262] == b"ustar":
        return "pg_tar"
    return "plain"


def _format_problem(path: str, fmt: str) -> str | None:
    """Why the dump at `path` is not of format `fmt` (given in the options), or None."""
    if fmt == "pg_directory":
        return None if os.path.isfile(os.path.join(path, "toc.dat")) else "is not a pg_dump directory (no toc.dat)"
    if os.path.isdir(path):
        return "is a directory, not a file"
    with open(path, "rb") as fh:
        head = fh.read(512)
    if fmt == "pg_custom" and not head.startswith(b"PGDMP"):
        return "is not a custom-format dump (no PGDMP header)"
    if fmt == "pg_tar" and head[257:262] != b"ustar":
        compressed = " (a compressed one: pg_restore reads uncompressed tar archives only)" \
            if head.startswith(b"\x1f\x8b") else ""
        return f"is not a tar archive{compressed}"
    return None


class _ToolFailed(Exception):
    """pg_restore could not turn the archive into SQL; the message is its first error."""


class _ChunkReader:
    """`read()` over an iterator of chunks (pg_restore's output), for Recorder."""

    def __init__(self, chunks: Iterator[bytes]):
        self.chunks = chunks

    def read(self, n: int = -1) -> bytes:
        return next(self.chunks, b"")


class _LoadRun:
    """One load: the SQL text (from the file or from pg_restore) through the reader into the loader."""

    def __init__(self, program: str | None, source: BackupFile, loader: ScriptLoader, deadline: float, monotonic):
        self.program = program
        self.source = source
        self.loader = loader
        self.deadline = deadline
        self.monotonic = monotonic
        self.text: Recorder | None = None
        self.raw: RawReader | None = None
        self.errors = ""

    def sql_bytes(self) -> int:
        return self.text.total if self.text is not None else 0

    def go(self) -> None:
        if self.program is None:
            self._plain()
        else:
            self._archive()

    def _plain(self) -> None:
        with open(self.source.path, "rb") as fh:
            self.raw = RawReader(fh, self.deadline, self.monotonic)
            gzipped = fh.read(2) == b"\x1f\x8b"
            fh.seek(0)
            self.text = Recorder(GunzipReader(self.raw) if gzipped else self.raw)
            self._script()

    def _archive(self) -> None:
        """`pg_restore -f -` writes the archive as SQL without a connection; its failure is the reason to give."""
        argv = [self.program, "--file=-", "--no-owner", "--no-privileges", self.source.path]
        with StreamedOutput(argv, deadline=self.deadline, env=child_env(), monotonic=self.monotonic) as child:
            chunks = iter(child)
            self.text = Recorder(_ChunkReader(chunks))
            try:
                self._script()
            except (StatementFailed, Corrupt):
                self._drain(child, chunks)
                raise
            finally:
                self.errors = child.errors
            if child.returncode != 0:
                raise _ToolFailed(self._reason(child))

    def _drain(self, child: StreamedOutput, chunks: Iterator[bytes]) -> None:
        """When the load failed first, let pg_restore finish briefly: a corrupt archive is the real cause."""
        until = min(self.deadline, self.monotonic() + _DRAIN_SECONDS)
        child.deadline = until
        try:
            for _ in chunks:
                pass
        except TimeoutError:
            return
        finally:
            self.errors = child.errors
        if child.returncode not in (0, None):
            raise _ToolFailed(self._reason(child)) from None

    @staticmethod
    def _reason(child: StreamedOutput) -> str:
        return Finished(child.returncode, child.errors, 0.0, 0).reason()

    def _script(self) -> None:
        text = self.text
        try:
            self.loader.load(read_segments(iter(lambda: text.read(CHUNK_BYTES), b"")))
        except ScriptIncomplete as exc:
            raise Corrupt(dump_script_problem(text.head, text.tail) or f"the script ends early ({exc})") from None
        problem = dump_script_problem(text.head, text.tail)
        if problem:
            raise Corrupt(problem)


def _refuse_connect(segment: Connect):
    raise ScriptRefused(segment.line, f"\\connect to database {segment.dbname!r}: restore_test restores one "
                                      f"database into its scratch database and never follows \\connect",
                        segment.text)


def _owner_hint(message: str, program: str | None) -> str:
    if program is None and re.search(r"must be (owner|member|able to SET ROLE)|permission denied", message):
        return (" (plain dumps restore with their owners and grants: dump with --no-owner --no-privileges, or "
                "restore as a role allowed what the dump does)")
    return ""


def _peek_script(path: str) -> bytes:
    """The first EDGE_BYTES of the SQL text of a plain or gzip-compressed dump."""
    with open(path, "rb") as fh:
        head = fh.read(64 * 1024)
    if not head.startswith(b"\x1f\x8b"):
        return head[:EDGE_BYTES]
    try:
        return zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(head, EDGE_BYTES)
    except zlib.error as exc:
        raise Corrupt(f"gzip data corrupt at its start: {exc}") from None


class _Stop(Exception):
    """Ends a restore test early with a status and the reason; the scratch database is still dropped."""

    def __init__(self, status: Status, reason: str):
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass
class _Attempt:
    """One restore test in progress: what the `finally` needs to clean up and the evidence so far."""

    name: str
    may_exist: bool = False            # set before CREATE DATABASE is sent: a lost reply must still be cleaned up
    began: float = 0.0                 # monotonic time CREATE DATABASE was sent: the RTO clock starts there
    details: dict = field(default_factory=dict)
    samples: list = field(default_factory=list)


class RestoreTestCheck(Check):
    """The DR drill: restore the newest backup into a scratch database, query it, drop it (monthly, timeout 6h).

    The newest dump matching `path` (a glob, or one file; a `pg_dump -Fd`
    directory counts as one dump) is restored on the server of `dsn` — a
    maintenance connection whose role has CREATEDB and nothing more, to an
    existing database such as `postgres` — into a new database named
    `maint_restore_<UTC time>_<random>`, created from template0. The scratch
    database is dropped (`DROP DATABASE … WITH (FORCE)`) at the end of every
    run — success, failure, timeout or error — and only a name matching that
    pattern is ever dropped; a DSN naming a scratch database is refused.
    Scratch databases older than the timeout left by a killed agent are
    reported (WARNING), not dropped.

    A dump is data written by another job, so restoring it never runs psql.
    Plain SQL (`.sql`, `.sql.gz`, gzip decompressed by the agent) is read by a
    tokenizer and sent through psycopg on a session pinned to the scratch
    database; custom, directory and tar archives are first turned into SQL by
    `pg_restore -f - --no-owner --no-privileges` (no database connection) and
    take the same path. Every statement is judged before it is sent: only what
    a single-database pg_dump writes runs (UNKNOWN "refused at line N"
    otherwise) — no psql meta-command, no `\\connect`, nothing that reaches
    outside the scratch database (databases, roles, tablespaces,
    subscriptions, ALTER SYSTEM, COPY to or from files or programs, functions
    in untrusted languages). pg_dumpall files are refused as a whole. Plain
    dumps restore with their owners and grants, so the role must be allowed
    what the script does, or the dump be taken with --no-owner
    --no-privileges. A role that is a superuser, or can act as
    pg_execute_server_program, pg_read_server_files or pg_write_server_files
    (or holds CREATEROLE, which can grant those before PostgreSQL 16), is
    refused unless `allow_superuser` is set: code carried by the dump runs
    with the role's rights (docs/security.md).

    `restore_duration_seconds` (create + load, the measured RTO) is what
    `warning`/`critical` judge; by default (neither given) critical 4h, the
    recovery time objective. The run is bounded by the check's `timeout`, which defaults to
    6h for this type: set it above the expected restore time (e.g. `timeout:
    4h`). At the deadline the running statement is cancelled (pg_restore
    killed), the scratch database dropped and the result is UNKNOWN. Without
    `every` or `schedule` the test runs on the `monthly` schedule. Sanity
    queries run read-only in the scratch database, each under its own
    statement_timeout. `restore_last_success_timestamp_seconds` lives in the
    agent's memory: it is 0 after a restart until a test passes again (the
    store has the history).
    """

    TYPE = "restore_test"
    EXAMPLE = """
        - name: restore-test
          type: restore_test
          schedule: monthly
          timeout: 6h
          dsn: ${credential:restore.dsn}   # a role with CREATEDB only, to the restore server
          path: /backups/database/*/app.dump
          sanity:
            - {name: users exist, query: "SELECT count(*) FROM users", min: 1}
          critical: 4h            # the recovery time objective
    """
    METRIC_PREFIX = "backup"

    class Options(PgOptions, DurationThresholds):
        type: Literal["restore_test"]
        warning: Duration | None = Field(None, description="restore duration (create + load)")
        critical: Duration | None = Field(None, description="restore duration; 4h (the recovery time objective) when neither "
                                                            "warning nor critical is given")
        path: AbsoluteGlob = Field(..., description="absolute path or glob of the dumps (files, or pg_dump -Fd "
                                           "directories); the newest is restored")
        format: Literal["auto", "plain", "pg_custom", "pg_directory", "pg_tar"] = Field(
            "auto", description="plain: SQL script, optionally gzip-compressed; pg_custom, pg_directory, pg_tar: "
                                "pg_dump -Fc, -Fd, -Ft; auto: by the first bytes (a directory holding toc.dat)")
        sanity: tuple[SanityQuery, ...] = Field((), description="queries with expectations, e.g. "
                                                                "{query: SELECT count(*) FROM users, min: 1}")
        jobs: int = Field(1, ge=1, le=64, description="kept for existing configurations; no effect: archives are "
                                                     "converted to SQL by one pg_restore and loaded in one session")
        allow_superuser: bool = Field(False, description="restore even when the DSN's role is a superuser or can "
                                                         "run programs or read/write files on the database host "
                                                         "(the dump's code then runs with those rights; see "
                                                         "docs/security.md)")
        verify_checksum: bool = Field(True, description="compare a <file>.sha256 sidecar when present")
        progress_every: PositiveDuration = Field(60.0, description="log a progress line this often during the restore")
        settle: Duration = Field(300.0, description="files modified more recently are taken as still being "
                                                    "written and ignored")
        pg_bin_dir: str | None = Field(None, description="where pg_restore is (archive formats); default: PATH, "
                                                         "then the newest /usr/lib/postgresql/*/bin")
        timeout: PositiveDuration | None = Field(6 * 3600.0,
                                                 description="the whole test; above the expected restore time")
        statement_timeout: PositiveDuration = Field(60.0, description="CREATE/DROP DATABASE and each sanity query "
                                                                      "without its own timeout")

        @model_validator(mode="before")
        @classmethod
        def _type_defaults(cls, data):
            return _default_keys(_default_keys(data, warning=None, critical="4h"), every=None, schedule="monthly")


    METRICS = RESTORE_METRICS
    THRESHOLD = Threshold(("restore_duration_seconds",), "seconds")

    def __init__(self, options):
        super().__init__(options)
        self._last_success = 0.0

    def run(self, ctx: CheckContext) -> CheckResult:
        import psycopg
        from psycopg.conninfo import conninfo_to_dict

        o = self.options
        started = ctx.monotonic()
        try:
            dsn = Secret(o.dsn).reveal()
        except (OSError, LookupError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            return self._result(Status.UNKNOWN, f"cannot read the DSN: {reason}", None, {})
        try:
            params = conninfo_to_dict(dsn)
        except psycopg.Error:
            return self._result(Status.UNKNOWN, "invalid DSN (libpq cannot parse it; not shown because it may "
                                                "hold a password)", None, {})
        if str(params.get("dbname", "")).startswith(SCRATCH_PREFIX):
            return self._result(Status.UNKNOWN, "refusing to run: the DSN's database has the scratch-database "
                                                "prefix; point it at a maintenance database such as postgres",
                                None, {})
        try:
            files, writing = find_backups(o.path, ctx.wall(), o.settle, dump_dirs=True)
        except OSError as exc:
            return self._result(Status.UNKNOWN, f"cannot list {o.path}: {exc.strerror} ({exc.filename})", None, {})
        if not files:
            note = f" ({len(writing)} still being written)" if writing else ""
            return self._result(Status.CRITICAL, f"no backup matches {o.path}{note}", None, {"path": o.path})
        source = files[0]
        attempt = _Attempt(scratch_name(ctx.wall()))
        attempt.details.update(file=source.evidence(ctx.wall()), scratch_database=attempt.name)
        outcome: _Stop | None = None
        reserve = min(30.0, max(1.0, ctx.timeout * 0.1))   # time kept back to drop the scratch database
        try:
            self._test(source, dsn, params, attempt, ctx, started + ctx.timeout - reserve)
        except _Stop as stop:
            outcome = stop
        except psycopg.Error as exc:
            outcome = _Stop(Status.UNKNOWN, f"database error: {describe_error(exc, dsn)}")
        finally:
            dropped = self._drop(params, dsn, attempt, reserve) if attempt.may_exist else None
        return self._conclude(outcome, dropped, source, attempt, ctx, started)

    # the steps, in order

    def _test(self, source: BackupFile, dsn: str, params: dict, attempt: _Attempt, ctx: CheckContext,
              deadline: float) -> None:
        fmt, program = self._plan(source)
        attempt.details["format"] = fmt
        if fmt in ("pg_custom", "pg_tar"):
            self._check_sidecar_first(source, attempt, deadline, ctx)
        elif fmt == "pg_directory":
            attempt.details["checksum"] = "not applicable (directory)"
        self._create(params, dsn, attempt, ctx, deadline)
        loaded = self._load(program, source, dsn, params, attempt, ctx, deadline)
        attempt.samples.append(sample("restore_duration_seconds", loaded))
        self._probe(dsn, attempt, ctx, deadline)

    def _plan(self, source: BackupFile) -> tuple[str, str | None]:
        """Return the dump's format and the pg_restore that turns it into SQL (None for plain SQL)."""
        o = self.options
        name = _short(source.path, o.path)
        try:
            fmt = o.format if o.format != "auto" else restore_format(source.path)
            problem = _format_problem(source.path, fmt)
            if problem:
                raise _Stop(Status.CRITICAL, f"{name} {problem}")
            text = _peek_script(source.path) if fmt == "plain" else b""
        except OSError as exc:
            raise _Stop(Status.UNKNOWN, f"cannot read {source.path}: {exc.strerror}") from None
        except Corrupt as exc:
            raise _Stop(Status.CRITICAL, f"{name}: {exc}") from None
        if fmt == "plain":
            if b"-- PostgreSQL database cluster dump" in text:
                raise _Stop(Status.UNKNOWN, f"{name} is a pg_dumpall cluster dump: it would create roles "
                                            f"and connect to other databases, so restore_test refuses it (point "
                                            f"path at single-database pg_dump files)")
            if b"-- PostgreSQL database dump" not in text:
                raise _Stop(Status.UNKNOWN, f"{name} does not start like pg_dump output; restore_test "
                                            f"restores pg_dump files only")
            return fmt, None
        program = find_program("pg_restore", o.pg_bin_dir)
        if program is None:
            raise _Stop(Status.UNKNOWN, "pg_restore not found (install postgresql-client or set pg_bin_dir)")
        return fmt, program

    def _check_sidecar_first(self, source: BackupFile, attempt: _Attempt, deadline: float, ctx) -> None:
        """Custom and tar archives: compare the sidecar before restoring (pg_restore reads the file itself)."""
        if not self.options.verify_checksum or not os.path.exists(source.path + SIDECAR_SUFFIX):
            return
        try:
            with open(source.path, "rb") as fh:
                raw = RawReader(fh, deadline, ctx.monotonic)
                drain_raw(raw)
        except VerifyTimeout:
            raise _Stop(Status.UNKNOWN, f"timed out hashing {source.path} for its sidecar") from None
        except OSError as exc:
            raise _Stop(Status.UNKNOWN, f"cannot read {source.path}: {exc.strerror}") from None
        self._compare_sidecar(source, raw.sha.hexdigest(), attempt, "not restored")

    def _compare_sidecar(self, source: BackupFile, digest: str, attempt: _Attempt, consequence: str) -> None:
        attempt.details["sha256"] = digest
        state, expected = read_sidecar(source.path)
        if state == "present":
            attempt.details["checksum"] = "match" if expected == digest else "mismatch"
            if expected != digest:
                raise _Stop(Status.CRITICAL, f"sha256 of {os.path.basename(source.path)} ({digest[:16]}…) differs "
                                             f"from its sidecar ({expected[:16]}…); {consequence}")
        else:
            attempt.details["checksum"] = state

    def _maintenance(self, params: dict, connect_timeout: float, statement_timeout: float):
        """A read-write autocommit session on the DSN's database for CREATE/DROP DATABASE, both timeouts set."""
        import psycopg

        p = dict(params)
        ours = f"-c statement_timeout={max(1, int(statement_timeout * 1000))}"
        p["options"] = f"{p['options']} {ours}" if p.get("options") else ours
        p["connect_timeout"] = str(max(2, round(connect_timeout)))
        # a server that vanishes mid-statement ends the connection instead of leaving the run waiting
        p.update(keepalives="1", keepalives_idle="5", keepalives_interval="5", keepalives_count="3",
                 tcp_user_timeout=str(max(1000, int((statement_timeout + 5) * 1000))))
        p.setdefault("application_name", "maint-agent restore_test")
        return psycopg.connect(**p, autocommit=True, prepare_threshold=None)

    def _create(self, params: dict, dsn: str, attempt: _Attempt, ctx: CheckContext, deadline: float) -> None:
        import psycopg
        from psycopg import sql

        o = self.options
        left = deadline - ctx.monotonic()
        if left <= 0:
            raise _Stop(Status.UNKNOWN, "timed out before the restore began")
        before = ctx.monotonic()
        try:
            conn = self._maintenance(params, min(o.connect_timeout, left), min(o.statement_timeout, left))
        except psycopg.Error as exc:
            raise _Stop(Status.UNKNOWN, f"cannot connect to the restore server: {describe_error(exc, dsn)}") from None
        with conn:
            current = conn.execute("SELECT current_database()").fetchone()[0]
            if current.startswith(SCRATCH_PREFIX):
                raise _Stop(Status.UNKNOWN, f"refusing to run: connected to {current}, a scratch-database name; "
                                            f"point the DSN at a maintenance database such as postgres")
            self._check_role(conn, attempt)
            rows = conn.execute(r"SELECT datname FROM pg_database WHERE datname LIKE 'maint\_restore\_%'").fetchall()
            wall = ctx.wall()
            leftovers = [r[0] for r in rows if (_scratch_created(r[0]) or wall) < wall - ctx.timeout]
            if leftovers:
                attempt.details["leftover_scratch_databases"] = leftovers
            attempt.may_exist = True
            try:
                conn.execute(sql.SQL("CREATE DATABASE {} TEMPLATE template0").format(sql.Identifier(attempt.name)))
            except psycopg.errors.DuplicateDatabase:
                attempt.may_exist = False      # someone else's: never ours to drop
                raise _Stop(Status.UNKNOWN, f"scratch name {attempt.name} already exists; not touched") from None
            except psycopg.Error as exc:
                if not is_down(exc) and not conn.broken:
                    attempt.may_exist = False
                raise _Stop(Status.UNKNOWN, f"cannot create the scratch database: {describe_error(exc, dsn)}") \
                    from None
        attempt.details["create_seconds"] = round(ctx.monotonic() - before, 3)
        attempt.began = before

    def _check_role(self, conn, attempt: _Attempt) -> None:
        """Refuse a role that lets the dump's SQL reach the database host, unless allow_superuser says so."""
        role, reasons = role_privileges(conn)
        attempt.details["restore_role"] = role
        if not reasons:
            return
        if not self.options.allow_superuser:
            raise _Stop(Status.UNKNOWN, f"refusing to restore as {role}: {'; '.join(reasons)}, so SQL carried by "
                                        f"the dump (COPY … PROGRAM, untrusted languages, code in its functions) "
                                        f"could run programs and read or write files on the database host; use a "
                                        f"role with CREATEDB only, or set allow_superuser: true for dumps trusted "
                                        f"like the database's owner")
        attempt.details["privileged_role"] = reasons

    def _session(self, params: dict, name: str, connect_timeout: float):
        """The load's session, pinned to the scratch database: autocommit, nothing prepared, standard strings."""
        import psycopg

        p = dict(params)
        ours = "-c standard_conforming_strings=on"
        p["options"] = f"{p['options']} {ours}" if p.get("options") else ours
        p.update(dbname=ensure_scratch(name), application_name="maint-agent restore_test",
                 connect_timeout=str(max(2, round(connect_timeout))),
                 keepalives="1", keepalives_idle="5", keepalives_interval="5", keepalives_count="3")
        return psycopg.connect(**p, autocommit=True, prepare_threshold=None)

    def _load(self, program: str | None, source: BackupFile, dsn: str, params: dict, attempt: _Attempt,
              ctx: CheckContext, deadline: float) -> float:
        """Load the dump into the scratch database through psycopg; return create + load seconds (the RTO figure).

        Plain SQL is read from the file; archives from `pg_restore -f -` (when
        `program` is given). Raise _Stop with the outcome when it is not a
        success.
        """
        import psycopg

        o = self.options
        tool = "pg_restore" if program else "psycopg"
        name = _short(source.path, o.path)
        load_began = ctx.monotonic()
        left = deadline - load_began
        if left <= 0:
            raise _Stop(Status.UNKNOWN, "timed out before the load began")
        try:
            conn = self._session(params, attempt.name, min(o.connect_timeout, left))
        except psycopg.Error as exc:
            raise _Stop(Status.UNKNOWN, f"cannot connect to the scratch database: {describe_error(exc, dsn)}") \
                from None
        logs.event("restore_test.start", check=o.name, file=source.path, size=source.size, database=attempt.name,
                   tool=tool)
        run = _LoadRun(program, source, ScriptLoader(conn, judge, _refuse_connect), deadline, ctx.monotonic)

        def progress(elapsed: float) -> None:
            logs.event("restore_test.progress", check=o.name, database=attempt.name, elapsed=format_duration(elapsed),
                       sql_bytes=run.sql_bytes(), file_bytes=source.size)

        stop: _Stop | None = None
        of_sql = " of the SQL pg_restore wrote" if program else ""
        with conn, Watchdog(conn, deadline, tick=progress, every=o.progress_every, monotonic=ctx.monotonic) as watch:
            try:
                run.go()
            except OSError as exc:
                what = f"run {program}" if program and exc.filename == program else f"read {source.path}"
                stop = _Stop(Status.UNKNOWN, f"cannot {what}: {exc.strerror or exc}")
            except (VerifyTimeout, TimeoutError):
                stop = self._timed_out(program, ctx)
            except ScriptRefused as exc:
                stop = _Stop(Status.UNKNOWN, f"{name} refused at line {exc.line}{of_sql}: {exc.reason}"
                                             + (f": {exc.excerpt}" if exc.excerpt else ""))
            except Corrupt as exc:
                stop = _Stop(Status.CRITICAL, f"{name}: {exc}")
            except _ToolFailed as exc:
                stop = _Stop(Status.CRITICAL, f"restore of {name} failed: {exc}")
            except StatementFailed as exc:
                attempt.details["failed_statement"] = exc.excerpt
                stop = self._timed_out(program, ctx) if watch.expired else \
                    _Stop(Status.CRITICAL, f"restore of {name} failed at line {exc.line}{of_sql}: {exc.message}"
                                           f"{_owner_hint(exc.message, program)}")
            except psycopg.Error as exc:
                stop = self._timed_out(program, ctx) if watch.expired else \
                    _Stop(Status.UNKNOWN, f"connection to the scratch database lost: {describe_error(exc, dsn)}")
            if watch.expired and stop is None:
                stop = self._timed_out(program, ctx)
        attempt.details.update(tool=tool, load_seconds=round(ctx.monotonic() - load_began, 3),
                               sql_bytes=run.sql_bytes(), statements=run.loader.statements,
                               output=run.errors[-2000:] or None)
        if stop is not None:
            raise stop
        if run.raw is not None and o.verify_checksum:
            self._compare_sidecar(source, run.raw.sha.hexdigest(), attempt, "the restore used a file that "
                                                                           "is not the one backed up")
        return ctx.monotonic() - attempt.began

    @staticmethod
    def _timed_out(program: str | None, ctx: CheckContext) -> _Stop:
        return _Stop(Status.UNKNOWN, f"restore timed out after {format_duration(ctx.timeout)} (the check's "
                                     f"timeout; set it above the expected restore time); load cancelled"
                                     + ("; pg_restore killed" if program else ""))

    def _probe(self, dsn: str, attempt: _Attempt, ctx: CheckContext, deadline: float) -> None:
        """Read the restored database's size and tables, then run the sanity queries read-only."""
        import psycopg
        from psycopg.conninfo import make_conninfo

        o = self.options
        began = ctx.monotonic()
        try:
            conn = open_session(make_conninfo(dsn, dbname=ensure_scratch(attempt.name)), o,
                                max(0.001, deadline - ctx.monotonic()))
        except (psycopg.Error, ProbeFailed) as exc:
            raise _Stop(Status.UNKNOWN, f"cannot connect to the scratch database: {describe_error(exc, dsn)}") \
                from None
        results, failed = [], 0
        with conn:
            stats = conn.execute("""
                SELECT pg_database_size(current_database()) AS size,
                       (SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                        WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema')
                          AND n.nspname NOT LIKE 'pg\\_toast%') AS tables""").fetchone()
            attempt.samples += [sample("restore_database_size_bytes", stats["size"]),
                                sample("restore_tables", stats["tables"])]
            attempt.details.update(database_size_bytes=stats["size"], tables=stats["tables"])
            for query in o.sanity:
                entry = self._sanity(conn, query, dsn, ctx, deadline)
                results.append(entry)
                failed += not entry["ok"]
        attempt.details.update(sanity=results, sanity_seconds=round(ctx.monotonic() - began, 3))
        attempt.samples.append(sample("restore_sanity_failed", failed))
        if failed:
            bad = [f"{r['name']}: {r['reason']}" for r in results if not r["ok"]]
            raise _Stop(Status.CRITICAL, f"sanity failed ({failed}/{len(results)}): {'; '.join(bad)}")

    def _sanity(self, conn, query: SanityQuery, dsn: str, ctx: CheckContext, deadline: float) -> dict:
        import psycopg

        left = deadline - ctx.monotonic()
        own = query.timeout or self.options.statement_timeout
        if left <= 0:
            raise _Stop(Status.UNKNOWN, f"timed out after {format_duration(ctx.timeout)} before sanity query "
                                        f"{query.label()!r}")
        limit = min(own, left)
        entry = {"name": query.label(), "query": redact_query(query.query), "expect": query.expectation(),
                 "timeout_seconds": round(limit, 3)}
        began = ctx.monotonic()
        try:
            value, reason = run_sanity(conn, query, limit)
            entry.update(value=value, ok=reason is None, reason=reason)
        except psycopg.errors.QueryCanceled:
            if own > left:
                raise _Stop(Status.UNKNOWN, f"timed out after {format_duration(ctx.timeout)} in sanity query "
                                            f"{query.label()!r}") from None
            entry.update(value=None, ok=False, reason=f"cancelled after {format_duration(limit)} (its timeout)")
        except psycopg.Error as exc:
            if conn.broken:
                raise _Stop(Status.UNKNOWN, f"connection to the scratch database lost: "
                                            f"{describe_error(exc, dsn)}") from None
            entry.update(value=None, ok=False, reason=f"error: {describe_error(exc, dsn)}")
        entry["seconds"] = round(ctx.monotonic() - began, 3)
        return entry

    def _drop(self, params: dict, dsn: str, attempt: _Attempt, budget: float) -> str | None:
        """DROP the scratch database (terminating its sessions); return None when gone, else why not."""
        import psycopg
        from psycopg import sql

        name = ensure_scratch(attempt.name)
        try:
            with self._maintenance(params, min(self.options.connect_timeout, max(2.0, budget)),
                                   max(5.0, budget)) as conn:
                conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
                still = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
        except psycopg.Error as exc:
            logs.event("restore_test.drop_failed", "error", check=self.options.name, database=name,
                       reason=describe_error(exc, dsn))
            return describe_error(exc, dsn)
        return "still listed in pg_database after DROP" if still else None

    def _conclude(self, outcome: _Stop | None, drop_error: str | None, source: BackupFile, attempt: _Attempt,
                  ctx: CheckContext, started: float) -> CheckResult:
        o = self.options
        details = attempt.details
        details["scratch_dropped"] = drop_error is None if attempt.may_exist else "never created"
        details["total_seconds"] = round(ctx.monotonic() - started, 3)
        notes = []
        if outcome is None:
            self._last_success = ctx.wall()
            tables, size = details.get("tables"), details.get("database_size_bytes") or 0
            sanity = len(details.get("sanity", []))
            status = Status.OK
            notes.append(f"restored {_short(source.path, o.path)} ({format_size(source.size)}, {details['format']}) "
                         f"in {format_duration(details['load_seconds'] + details.get('create_seconds', 0))}: "
                         f"{tables} tables, {format_size(size)}; "
                         + (f"{sanity}/{sanity} sanity queries passed" if sanity else "no sanity queries configured"))
        else:
            status = outcome.status
            notes.append(outcome.reason)
        if drop_error is not None and attempt.may_exist:
            status = worst(status, Status.WARNING)
            notes.append(f"scratch database {attempt.name} NOT dropped ({drop_error}): drop it by hand with "
                         f"DROP DATABASE {attempt.name} WITH (FORCE)")
        elif attempt.may_exist:
            notes.append("scratch database dropped")
        leftovers = details.get("leftover_scratch_databases")
        if leftovers:
            status = worst(status, Status.WARNING)
            notes.append(f"{len(leftovers)} scratch database(s) left by an interrupted run: {', '.join(leftovers)} "
                         f"(drop them by hand)")
        logs.event("restore_test.finished", check=o.name, status=status.label, database=attempt.name,
                   seconds=f"{details['total_seconds']:g}", dropped=details["scratch_dropped"])
        return self._result(status, "; ".join(notes), outcome, details, attempt.samples)

    def _result(self, status: Status, summary: str, outcome: _Stop | None, details: dict,
                samples: list[Sample] = ()) -> CheckResult:
        passed = status is not Status.UNKNOWN and outcome is None and bool(samples)
        base = [sample("restore_last_success_timestamp_seconds", self._last_success),
                sample("restore_passed", 1 if passed else 0)]
        return CheckResult(status, cap_summary(summary), tuple(base + list(samples)), details)
