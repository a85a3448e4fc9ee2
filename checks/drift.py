"""Configuration drift (seed 004 "Configuration Review"): type `config_drift`.

Records sha256, size, mode and owner of the configured files and compares them
with an accepted baseline kept in the agent's state directory
(`<state_dir>/config_drift/<check>.json`, mode 0600: it holds checksums).

The first run records the baseline and is OK ("baseline recorded"), as Monit's
checksum test does, rather than WARNING until someone runs an init step, as
AIDE does: the agent is installed together with the configuration it should
guard, so that configuration is the accepted one, and a check that warns from
its first run teaches operators to ignore it. From then on a changed, added or
removed file is WARNING (or CRITICAL, `on_drift`) until an operator reviews it
and runs `maint-agent config-drift accept CHECK`, which records the new
baseline (`maint-agent config-drift diff CHECK` shows the differences first).

Details say what changed (content, size, mode, owner) but never the contents
nor the checksums: a checksum of a short secret file can be brute-forced.
"""

from __future__ import annotations

import glob
import grp
import hashlib
import os
import pwd
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal

from pydantic import Field

from agent.plugin.fields import AbsoluteGlobs
from agent.plugin.jsonfile import read_json, write_json_atomic
from agent.plugin.result import CheckResult, Status, sample, worst
from checks.base import Check, CheckContext, CheckOptions, MetricSpec

BASELINE_VERSION = 1
_CHUNK = 1024 * 1024


class OutOfTime(Exception):
    """The run's deadline passed while files were being hashed."""


# --- what a file looks like -------------------------------------------------------------------------------

def _owner(uid: int, gid: int) -> str:
    try:
        user = pwd.getpwuid(uid).pw_name
    except KeyError:
        user = str(uid)
    try:
        group = grp.getgrgid(gid).gr_name
    except KeyError:
        group = str(gid)
    return f"{user}:{group}"


def fingerprint(path: str, deadline: float, monotonic: Callable[[], float]) -> dict[str, Any]:
    """Given a file, return {sha256, size, mode, owner}, or {error} when it cannot be read;
    raise OutOfTime at the deadline (checked between chunks)."""
    try:
        with open(path, "rb") as fh:
            st = os.fstat(fh.fileno())
            digest = hashlib.sha256()
            while chunk := fh.read(_CHUNK):
                digest.update(chunk)
                if monotonic() >= deadline:
                    raise OutOfTime(path)
    except OSError as exc:
        return {"error": exc.strerror or str(exc)}
    return {"sha256": digest.hexdigest(), "size": st.st_size, "mode": f"{stat.S_IMODE(st.st_mode):04o}",
            "owner": _owner(st.st_uid, st.st_gid)}


def expand(patterns: tuple[str, ...], max_files: int) -> tuple[list[str], list[str]]:
    """Given absolute paths or globs, return (regular files, sorted; patterns matching nothing).

    A directory (named or matched) stands for every regular file below it.
    Raise ValueError beyond `max_files` (a glob that swept up a whole tree).
    """
    files, unmatched = set(), []
    for pattern in patterns:
        matches = glob.glob(pattern, recursive=True)
        if not matches:
            unmatched.append(pattern)
        for match in matches:
            if os.path.isdir(match):
                for root, _, names in os.walk(match):
                    files.update(os.path.join(root, n) for n in names if os.path.isfile(os.path.join(root, n)))
            elif os.path.isfile(match):
                files.add(match)
        if len(files) > max_files:
            raise ValueError(f"more than {max_files} files match (raise max_files or narrow the paths)")
    return sorted(files), unmatched


def snapshot(patterns: tuple[str, ...], max_files: int, deadline: float,
             monotonic: Callable[[], float]) -> dict[str, dict[str, Any]]:
    """Given the configured paths, return {file: fingerprint}; raise ValueError or OutOfTime."""
    files, _ = expand(patterns, max_files)
    return {path: fingerprint(path, deadline, monotonic) for path in files}


# --- comparing with the baseline --------------------------------------------------------------------------

@dataclass(frozen=True)
class Drift:
    """Differences between a baseline and the files now."""

    changed: list[dict[str, str]] = field(default_factory=list)   # {path, change}
    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)

    @property
    def count(self) -> int:
        return len(self.changed) + len(self.added) + len(self.removed)

    def rows(self) -> list[dict[str, str]]:
        """One row per drifted file, for the CLI and the details: {path, change}."""
        return (self.changed + [{"path": p, "change": "added"} for p in self.added]
                + [{"path": p, "change": "removed"} for p in self.removed])

    def describe(self, limit: int = 3) -> str:
        rows = self.rows()
        text = ", ".join(f"{r['path']} ({r['change']})" for r in rows[:limit])
        return text + (f", and {len(rows) - limit} more" if len(rows) > limit else "")


def _difference(before: dict[str, Any], after: dict[str, Any]) -> str | None:
    """What changed about one file, in words an operator reads; None when nothing did."""
    if "error" in before or "error" in after:
        if before.get("error") == after.get("error"):
            return None
        return f"readable: {before.get('error', 'yes')} → {after.get('error', 'yes')}"
    parts = []
    if before["sha256"] != after["sha256"]:
        parts.append("content")
    if before["size"] != after["size"]:
        parts.append(f"size {before['size']} → {after['size']}")
    if before["mode"] != after["mode"]:
        parts.append(f"mode {before['mode']} → {after['mode']}")
    if before["owner"] != after["owner"]:
        parts.append(f"owner {before['owner']} → {after['owner']}")
    return ", ".join(parts) or None


def compare(baseline: dict[str, dict[str, Any]], current: dict[str, dict[str, Any]]) -> Drift:
    """Given the baseline's files and the current ones, return what differs (paths sorted)."""
    drift = Drift(added=sorted(set(current) - set(baseline)), removed=sorted(set(baseline) - set(current)))
    for path in sorted(set(baseline) & set(current)):
        change = _difference(baseline[path], current[path])
        if change:
            drift.changed.append({"path": path, "change": change})
    return drift


def file_count(count: int) -> str:
    return f"{count} file{'s' * (count != 1)}"


def baseline_path(state_dir: Path, check: str) -> Path:
    return state_dir / "config_drift" / f"{check}.json"


def load_baseline(path: Path) -> dict[str, Any] | None:
    """The stored baseline, None when none was recorded; raise ValueError when it is unreadable."""
    data = read_json(path)
    if data is None:
        return None
    if not isinstance(data, dict) or data.get("version") != BASELINE_VERSION or not isinstance(
            data.get("files"), dict):
        raise ValueError(f"{path} is not a config_drift baseline (version {BASELINE_VERSION})")
    return data


def save_baseline(path: Path, files: dict[str, dict[str, Any]], accepted: float) -> None:
    write_json_atomic(path, {"version": BASELINE_VERSION, "accepted": accepted, "files": files})


class ConfigDriftCheck(Check):
    """Checksums, sizes, modes and owners of configuration files against an accepted baseline.

    The first run records the baseline (OK); later a changed, added or removed
    file is WARNING (`on_drift`) until `maint-agent config-drift accept`
    records the new state. A directory stands for every file below it.
    """

    TYPE = "config_drift"
    EXAMPLE = """
        - name: config-files
          type: config_drift
          schedule: daily
          paths: [/etc/nginx/nginx.conf, /etc/nginx/sites-enabled/*, /etc/postgresql/15/main/*.conf]
    """

    class Options(CheckOptions):
        type: Literal["config_drift"]
        paths: AbsoluteGlobs = Field(..., min_length=1,
                                       description="absolute files, directories or globs (`**` recurses), e.g. "
                                                   "[/etc/nginx, /etc/postgresql/15/main/*.conf]")
        on_drift: Literal["warning", "critical"] = Field("warning", description="status while files differ "
                                                                                "from the baseline")
        max_files: int = Field(10000, ge=1, le=1_000_000, description="UNKNOWN when the paths match more files")
        max_listed: int = Field(50, ge=1, le=1000, description="drifted files named in the details at most")

    METRICS = (
        MetricSpec("files", "count", "Files watched for drift."),
        MetricSpec("drifted_files", "count", "Files changed, added or removed since the accepted baseline."),
        MetricSpec("baseline_age_seconds", "seconds", "Time since the baseline was accepted."),
    )

    def run(self, ctx: CheckContext) -> CheckResult:
        if ctx.state_dir is None:
            return CheckResult.unknown("no state directory to keep the baseline in")
        path = baseline_path(ctx.state_dir, self.options.name)
        started = ctx.monotonic()
        try:
            baseline = load_baseline(path)
            current = snapshot(self.options.paths, self.options.max_files, started + ctx.timeout, ctx.monotonic)
        except ValueError as exc:
            return CheckResult.unknown(str(exc))
        except OutOfTime as exc:
            return CheckResult.unknown(f"timed out after {ctx.timeout:g}s while hashing {exc}")
        unreadable = sorted(p for p, f in current.items() if "error" in f)
        now = ctx.wall()
        if baseline is None and not ctx.keep_state:   # a one-off `maint-agent check` writes nothing
            return self._result(Status.OK, f"no baseline yet ({file_count(len(current))}): the agent records one "
                                f"at its first run, or `maint-agent config-drift accept {self.options.name}`",
                                current, Drift(), 0.0, unreadable)
        if baseline is None:
            try:
                save_baseline(path, current, now)
            except OSError as exc:
                return CheckResult.unknown(f"cannot record the baseline in {path}: {exc.strerror}")
            return self._result(Status.OK, f"baseline recorded ({file_count(len(current))})", current, Drift(), 0.0,
                                unreadable)
        drift = compare(baseline["files"], current)
        age = max(0.0, now - float(baseline.get("accepted", now)))
        if drift.count:
            status = Status[self.options.on_drift.upper()]
            summary = (f"{drift.count} of {file_count(len(current))} differ from the baseline: {drift.describe()}; "
                       f"review, then `maint-agent config-drift accept {self.options.name}`")
        else:
            status, summary = Status.OK, f"{file_count(len(current))} match the baseline"
        return self._result(status, summary, current, drift, age, unreadable)

    def _result(self, status: Status, summary: str, current: dict, drift: Drift, age: float,
                unreadable: list[str]) -> CheckResult:
        if unreadable:
            status = worst(status, Status.UNKNOWN)
            summary += f"; cannot read {len(unreadable)}: {', '.join(unreadable[:3])}"
        samples = (sample("files", len(current)), sample("drifted_files", drift.count),
                   sample("baseline_age_seconds", age))
        cap = self.options.max_listed
        return CheckResult(status, summary, samples, {"drift": drift.rows()[:cap], "unreadable": unreadable[:cap]})
