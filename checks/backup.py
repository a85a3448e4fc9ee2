"""Backups on disk (the backup strategy: how old, whether they read back, how many are kept).

`backup_files` watches the dumps a backup job leaves on disk: how old the
newest is, whether it reads back to its end, whether it shrank suspiciously,
and whether as many are kept as the retention policy promises. The restore
drill that loads a dump into a scratch database is `restore_test`
(checks/restore_test.py).

Every read of a backup is streamed in chunks (bounded memory whatever the file
size) and checks the run's deadline between chunks, so a huge file ends in
UNKNOWN "timed out" instead of a hung worker. Metric labels are the check name
only: file names go to the details (the evidence the store keeps), never to labels.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from agent.plugin.fields import AbsoluteGlob, Duration, LongDuration, Ratio, Size
from agent.plugin.result import CheckResult, Status, cap_summary, sample
from agent.plugin.units import format_duration, format_size
from checks.base import Check, CheckContext, CheckOptions, DurationThresholds, MetricSpec, Threshold
from checks.backup_verify import (
    SIDECAR_SUFFIX, BackupFile, CannotVerify, Verification, VerifyTimeout, find_backups, sidecar_key, verify_backup,
    default_keys, short_path,
)

_FALLBACK_FILES = 3                # older backups read when the newest fails, to find the last good one


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
            return default_keys(data, warning="26h", critical="48h")

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
        name = short_path(newest.path, o.path)
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
            since = (f"last good backup {short_path(good.file.path, o.path)} from "
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
        summary = (f"verification of {short_path(f.path, self.options.path)} timed out after "
                   f"{format_duration(ctx.timeout)} (read {format_size(exc.read_bytes)} of {format_size(f.size)}); "
                   f"raise the check's timeout")
        details["newest"] = {**f.evidence(ctx.wall()), "integrity": "timed out", "read_bytes": exc.read_bytes}
        return CheckResult(Status.UNKNOWN, cap_summary("; ".join([summary, *notes])), tuple(samples), details)
