"""Backup sets (seed 002 "Backup Strategy"): type `backup_set`.

The nightly job writes one timestamped directory: a `pg_dumpall` of the cluster, a
`pg_dump` per database, a `pg_basebackup -Ft -z` base backup. A restore needs the set,
not the newest of each file: a night whose pg_dumpall succeeded and whose base backup died
leaves a fresh-looking directory that cannot be used for a point-in-time recovery. So the
newest set directory must hold every `expect` member (globs relative to it), and every
member must read back by its format (`checks.backup.verify_backup`): gzip to its
end-of-stream marker, pg_dump/pg_dumpall scripts to their "dump complete" trailer, custom
dumps through pg_restore, tar (also `.tar.gz`) archives to their end-of-archive marker, and
a `<file>.sha256` sidecar when present.

The set being written is not judged half-done: while its newest file is younger than
`settle`, or it lacks members and is younger than `complete_within`, the previous set is
judged and the summary says the newest is in progress. The set's age is that of its newest
member. A member that passed and has not changed (inode, size, mtime, sidecar) is not read
again by this agent process, so a multi-GiB base backup is read once per night.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import Field, field_validator

from agent.plugin.fields import AbsoluteGlob, Duration
from agent.plugin.result import CheckResult, Status, cap_summary, sample, worst
from agent.plugin.units import format_duration, format_size
from checks.backup_sets import BackupSet, Member, expected_members, read_set, set_directories
from checks.backup_verify import (
    SIDECAR_SUFFIX, BackupFile, CannotVerify, Verification, VerifyTimeout, sidecar_key, verify_backup,
)
from checks.base import Check, CheckContext, CheckOptions, MetricSpec, Threshold

OLDER_SETS = 2            # older sets read when the newest is bad, to find the last good one


@dataclass
class SetVerdict:
    """What judging one set found."""

    backup_set: BackupSet
    missing: list[str] = field(default_factory=list)              # expect globs matching nothing
    readings: list[Verification] = field(default_factory=list)    # one per matched member

    @property
    def failed(self) -> list[Verification]:
        return [v for v in self.readings if not v.ok]

    @property
    def good(self) -> bool:
        return not self.missing and not self.failed

    def evidence(self, now: float) -> dict[str, Any]:
        return {"path": self.backup_set.path, "missing": self.missing,
                "members": [{**v.evidence(now), "member": os.path.relpath(v.file.path, self.backup_set.path)}
                            for v in self.readings]}


class BackupSetCheck(Check):
    """The newest backup set directory holds every expected member, each readable to its end.

    CRITICAL: no set directory, the newest set missing members (named), a member that does
    not read back (truncated gzip or tar, a dump without its trailer, a sidecar mismatch).
    WARNING: a member without its `.sha256` sidecar under `require_checksum`. UNKNOWN: the
    run's timeout reached while reading (raise `timeout`: the first read of a new base
    backup takes as long as gunzip of it), pg_restore missing for a custom-format member.
    Thresholds: the set's age (default warning 26h, critical 48h).
    """

    TYPE = "backup_set"
    EXAMPLE = """
        - name: db-nightly-set
          type: backup_set
          every: 1h
          path: /backups/database/2*          # one directory per night
          expect: [full_backup.sql.gz, app_backup.sql.gz, "**/base.tar.gz"]
          complete_within: 4h
          warning: 26h
          critical: 48h
    """

    class Options(CheckOptions):
        type: Literal["backup_set"]
        path: AbsoluteGlob = Field(..., description="absolute glob of the set directories, e.g. /backups/database/*; the "
                                           "greatest name is the newest (timestamped names)")
        expect: tuple[str, ...] = Field(..., min_length=1, description="member globs relative to a set directory, "
                                                                       "e.g. [full_backup.sql.gz, '**/base.tar.gz']")
        settle: Duration = Field(300.0, description="a set with a file modified more recently is still being "
                                                    "written: the previous set is judged")
        complete_within: Duration = Field(
            6 * 3600.0, description="a newest set younger than this that lacks members is taken as still being "
                                    "written (the nightly job's duration)")
        require_checksum: bool = Field(False, description="WARNING when a member has no <file>.sha256 sidecar")
        pg_bin_dir: str | None = Field(None, description="where pg_restore is (custom-format members); default: "
                                                         "PATH, then the newest /usr/lib/postgresql/*/bin")
        warning: Duration | None = Field(26 * 3600.0, description="WARNING when the set is older")
        critical: Duration | None = Field(48 * 3600.0, description="CRITICAL when the set is older")

        @field_validator("expect")
        @classmethod
        def _relative(cls, patterns):
            for pattern in patterns:
                if pattern.startswith("/") or ".." in pattern.split("/") or not pattern.strip():
                    raise ValueError(f"expect {pattern!r}: a glob relative to the set directory, without '..'")
            return patterns

    METRICS = (
        MetricSpec("age_seconds", "seconds", "Age of the judged set: time since its newest member was written."),
        MetricSpec("size_bytes", "bytes", "Total size of the judged set's members."),
        MetricSpec("sets", "count", "Set directories matching the glob."),
        MetricSpec("members_missing", "count", "Expected members the judged set lacks."),
        MetricSpec("members_failed", "count", "Members of the judged set that did not read back."),
        MetricSpec("verified", "boolean", "1 when the judged set is complete and every member read back."),
        MetricSpec("last_success_timestamp_seconds", "seconds",
                   "Newest member mtime of the newest complete, verified set (0 when none among those read)."),
    )
    THRESHOLD = Threshold(("age_seconds",), "seconds")

    def __init__(self, options):
        super().__init__(options)
        self._verified: dict[tuple, Verification] = {}    # (path, file key, sidecar key) → last reading

    def run(self, ctx: CheckContext) -> CheckResult:
        opts = self.options
        deadline = ctx.monotonic() + ctx.timeout
        now = ctx.wall()
        try:
            directories = set_directories(opts.path)
            sets = [read_set(directory) for directory in directories[:2 + OLDER_SETS]]
        except OSError as exc:
            return CheckResult.unknown(f"cannot list {exc.filename or opts.path}: {exc.strerror or exc}")
        samples = [sample("sets", len(directories))]
        if not sets:
            return CheckResult(Status.CRITICAL, f"no backup set directory matches {opts.path}",
                               (*samples, sample("last_success_timestamp_seconds", 0)), {"path": opts.path})
        details: dict[str, Any] = {"path": opts.path, "sets": [s.name for s in sets]}
        notes = []
        writing = self._in_progress(sets[0], now)
        if writing:
            details["in_progress"] = {"set": sets[0].name, "why": writing}
            if len(sets) == 1:
                return CheckResult(Status.WARNING, f"the only set {sets[0].name} is in progress ({writing})",
                                   (*samples, sample("last_success_timestamp_seconds", 0)), details)
            notes.append(f"newest set {sets[0].name} in progress ({writing})")
            sets = sets[1:]
        self._forget_absent(sets)
        try:
            verdict = self._judge(sets[0], deadline, ctx)
            last_good = verdict if verdict.good else self._last_good(sets[1:1 + OLDER_SETS], deadline, ctx)
        except VerifyTimeout as exc:
            return CheckResult(Status.UNKNOWN, f"reading a member of set {sets[0].name} timed out after "
                                               f"{format_duration(ctx.timeout)} (read {format_size(exc.read_bytes)}): "
                                               f"raise the check's timeout", tuple(samples), details)
        except CannotVerify as exc:
            return CheckResult(Status.UNKNOWN, str(exc), tuple(samples), details)
        details["judged"] = verdict.evidence(now)
        return self._result(verdict, last_good, now, samples, details, notes)

    def _result(self, verdict: SetVerdict, last_good: SetVerdict | None, now: float, samples: list,
                details: dict, notes: list[str]) -> CheckResult:
        judged = verdict.backup_set
        newest = judged.newest_mtime
        size = sum(v.file.size for v in verdict.readings)
        samples += [sample("size_bytes", size), sample("members_missing", len(verdict.missing)),
                    sample("members_failed", len(verdict.failed)), sample("verified", 1 if verdict.good else 0),
                    sample("last_success_timestamp_seconds", last_good.backup_set.newest_mtime if last_good else 0)]
        if newest is not None:
            samples.append(sample("age_seconds", max(0.0, now - newest)))
        statuses, phrases = [Status.OK], []
        if verdict.missing:
            statuses.append(Status.CRITICAL)
            phrases.append(f"set {judged.name} incomplete: missing {', '.join(verdict.missing)} "
                           f"({len(self.options.expect) - len(verdict.missing)} of {len(self.options.expect)} "
                           f"expected present)")
        for reading in verdict.failed:
            statuses.append(Status.CRITICAL)
            phrases.append(f"{judged.name}/{os.path.relpath(reading.file.path, judged.path)} ({reading.format}): "
                           f"{reading.reason}")
        unproven = [v for v in verdict.readings if v.ok and v.checksum == "missing (required)"]
        if unproven:
            statuses.append(Status.WARNING)
            phrases.append(f"no {SIDECAR_SUFFIX} sidecar (require_checksum): "
                           f"{', '.join(os.path.relpath(v.file.path, judged.path) for v in unproven)}")
        if verdict.good:
            formats = ", ".join(f"{n} {fmt}" for fmt, n in sorted(Counter(v.format for v in verdict.readings).items()))
            age = f", newest {format_duration(max(0.0, now - newest))} ago" if newest is not None else ""
            phrases.insert(0, f"set {judged.name} complete: {len(verdict.readings)} members verified ({formats})"
                              f"{age}, {format_size(size)}")
        elif last_good is not None:
            phrases.append(f"last good set {last_good.backup_set.name}")
        else:
            phrases.append("no good set among the newest")
        summary = cap_summary("; ".join(phrases + notes))
        return CheckResult(worst(*statuses), summary, tuple(samples), details)

    def _in_progress(self, newest: BackupSet, now: float) -> str | None:
        """Why the newest set looks still being written, or None: a fresh file, or members missing while young."""
        opts = self.options
        latest = newest.newest_mtime
        if latest is not None and now - latest < opts.settle:
            return f"a file modified {format_duration(max(0.0, now - latest))} ago"
        try:
            born = latest if latest is not None else os.stat(newest.path).st_mtime
        except OSError:
            return None
        if now - born < opts.complete_within and any(not files for files in
                                                     expected_members(newest, opts.expect).values()):
            return (f"members missing, {format_duration(max(0.0, now - born))} old, within complete_within "
                    f"{format_duration(opts.complete_within)}")
        return None

    def _judge(self, backup_set: BackupSet, deadline: float, ctx: CheckContext) -> SetVerdict:
        verdict = SetVerdict(backup_set)
        seen = set()
        for pattern, members in expected_members(backup_set, self.options.expect).items():
            if not members:
                verdict.missing.append(pattern)
            for member in members:
                if member.path not in seen:
                    seen.add(member.path)
                    verdict.readings.append(self._verify(member, deadline, ctx))
        return verdict

    def _last_good(self, older: list[BackupSet], deadline: float, ctx: CheckContext) -> SetVerdict | None:
        for backup_set in older:
            verdict = self._judge(backup_set, deadline, ctx)
            if verdict.good:
                return verdict
        return None

    def _verify(self, member: Member, deadline: float, ctx: CheckContext) -> Verification:
        key = (member.path, member.key, sidecar_key(member.path))
        cached = self._verified.get(key)
        if cached is not None:
            cached.cached = True
            return cached
        reading = verify_backup(BackupFile(member.path, member.size, member.mtime, member.key), "auto",
                                deadline=deadline, monotonic=ctx.monotonic, wall=ctx.wall,
                                bin_dir=self.options.pg_bin_dir, min_size=None,
                                require_checksum=self.options.require_checksum)
        self._verified[key] = reading
        return reading

    def _forget_absent(self, sets: list[BackupSet]) -> None:
        present = {(m.path, m.key) for s in sets for m in s.members}
        self._verified = {k: v for k, v in self._verified.items() if (k[0], k[1]) in present}
