"""Error and warning lines in logs since the previous run (seed 004 "Log Review"): type `log_scan`.

Files: each run reads only what was appended since the previous run. A small
state file (`<state_dir>/log_scan/<check>.json`) keeps, per file, the device,
inode and offset reached. A file is followed by its inode, so a log renamed
by logrotate (`app.log` → `app.log.1`) is read to its end before the new
`app.log` is read from its start; a file that shrank below the offset was
truncated (copytruncate) and is read from its start. Only complete lines are
counted: a line still being written is read again next time.

The first run has no offsets: it records where each file ends and counts
nothing (like logtail), unless `initial_bytes` asks it to scan that much of
each file's end. A file that appears later (a new glob match) is read from
its start.

Journal: `journalctl --since=@<previous run> --until=@<now> --output=short-iso
--reverse` (optionally `-u UNIT`, `-p PRIORITY`, `--directory=`), newest
first, so the budget covers the most recent entries. The first run counts
`initial_since` back (default: nothing). Its output is streamed line by line
rather than through `checks.bounded_process.run_bounded`, whose output cap
(head and tail) would drop lines from the count; the child gets the same
treatment: argv, own process group (recorded in `agent.plugin.children`), killed at
the deadline.

Under the hardened unit the agent's user reads the system journal only as a
member of group systemd-journal (a drop-in `SupplementaryGroups=systemd-journal`;
many files in /var/log want group adm): journalctl then says it sees only the
user's own messages, and the check turns that notice into UNKNOWN rather than
reporting "0 errors".

Each run reads at most `max_bytes` (split fairly between files; older backlog
beyond it is skipped and reported, the newest part is read) and stops at the
check's timeout, keeping what it reached. Matching lines kept in the details
pass through the redactor.
"""

from __future__ import annotations

import collections
import glob
import os
import re
import selectors
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Literal

from pydantic import Field, model_validator

from agent.plugin import children
from agent.plugin.child_env import child_env
from agent.plugin.fields import AbsoluteGlobs, AbsolutePath, Count, Duration, Regex, Size
from agent.plugin.jsonfile import read_json, write_json_atomic
from agent.plugin.redact import REDACT
from agent.plugin.result import CheckResult, Status, sample
from agent.plugin.units import format_duration, format_size
from checks.base import Check, CheckContext, CheckOptions, MetricSpec, Threshold

STATE_VERSION = 1
CHUNK_BYTES = 1024 * 1024
MAX_LINE_BYTES = 64 * 1024        # an unterminated line longer than this is counted as it is
_JOURNAL_BLIND = (   # journalctl notices (exit 0) meaning the count would be a false "no errors"
    ("No journal files were found", "journalctl found no journal files (journald not running, or "
                                    "journal_directory empty)"),
    ("not seeing messages from other users and the system",
     "the agent's user cannot read the system journal: add it to group systemd-journal (or adm)"),
)
_ROTATED_SUFFIXES = (".gz", ".xz", ".bz2", ".zst", ".lz4")


class OutOfTime(Exception):
    """The run's deadline passed; for a file, `args[0]` is the offset reached."""


@dataclass
class Tally:
    """Matching lines counted so far, and the last few kept for the details."""

    patterns: dict[str, re.Pattern]
    keep: int
    line_chars: int
    counts: dict[str, int] = field(default_factory=dict)
    last: collections.deque = field(default_factory=collections.deque)
    read_bytes: int = 0
    skipped_bytes: int = 0
    notes: list[str] = field(default_factory=list)

    def __post_init__(self):
        self.counts = {level: 0 for level in self.patterns}
        self.last = collections.deque(maxlen=self.keep)

    def line(self, text: str, source: str) -> None:
        for level, pattern in self.patterns.items():   # error first: a line counts once, at its worst level
            if pattern.search(text):
                self.counts[level] += 1
                self.last.append({"source": source, "level": level, "line": text[: self.line_chars]})
                return


# --- files ---------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Plan:
    """What to read of one file this run: [start, end) of the file open as `path`."""

    path: str
    key: str              # "dev:inode", how the state follows a file across renames
    start: int
    end: int
    finished: bool        # a rotated-away file: nothing more will be written, its last line counts


def _key(st: os.stat_result) -> str:
    return f"{st.st_dev}:{st.st_ino}"


def _rotated_candidates(path: str) -> list[str]:
    """Where logrotate puts `path` after rotation, uncompressed: path.1, path-20250105, …"""
    found = glob.glob(glob.escape(path) + ".*") + glob.glob(glob.escape(path) + "-*")
    return [p for p in found if not p.endswith(_ROTATED_SUFFIXES)]


def plan_files(patterns: tuple[str, ...], offsets: dict[str, int] | None, follow_rotated: bool,
               initial_bytes: int) -> tuple[list[Plan], list[str], dict[str, str]]:
    """Given the globs and the saved {key: offset} (None on the first run), return (what to read,
    patterns matching nothing, {path: reason} for files that cannot be opened)."""
    seen: dict[str, tuple[str, os.stat_result]] = {}
    unmatched, errors = [], {}
    for pattern in patterns:
        matches = sorted(glob.glob(pattern))
        if not matches:
            unmatched.append(pattern)
        for path in matches:
            try:
                st = os.stat(path)
            except OSError as exc:
                errors[path] = exc.strerror or str(exc)
                continue
            if os.path.isfile(path) and _key(st) not in seen:
                seen[_key(st)] = (path, st)
    plans = []
    for key, (path, st) in seen.items():
        if offsets is None:
            start = max(0, st.st_size - initial_bytes)
        else:
            start = offsets.get(key, 0)
            if start > st.st_size:      # truncated in place
                start = 0
        plans.append(Plan(path, key, start, st.st_size, finished=False))
    if offsets and follow_rotated:
        plans += _rotated_rests(offsets, seen)
    return plans, unmatched, errors


def _rotated_rests(offsets: dict[str, int], seen: dict[str, tuple[str, os.stat_result]]) -> list[Plan]:
    """Files read last time whose inode no longer matches the globs, found again beside their old name."""
    missing = {key for key in offsets if key not in seen}
    if not missing:
        return []
    plans = []
    for path, _ in seen.values():
        for candidate in _rotated_candidates(path):
            try:
                st = os.stat(candidate)
            except OSError:
                continue
            key = _key(st)
            if key in missing and st.st_size > offsets[key]:
                plans.append(Plan(candidate, key, offsets[key], st.st_size, finished=True))
                missing.discard(key)
    return plans


def share_budget(plans: list[Plan], budget: int) -> dict[str, int]:
    """Split `budget` bytes fairly: smallest backlog first, each file takes at most an even share of what is
    left, so one busy log cannot starve the others."""
    shares = {}
    ordered = sorted(plans, key=lambda p: p.end - p.start)
    for index, plan in enumerate(ordered):
        even = budget // (len(ordered) - index)
        shares[plan.key] = min(plan.end - plan.start, even)
        budget -= shares[plan.key]
    return shares


def read_file(plan: Plan, allowed: int, tally: Tally, deadline: float, monotonic: Callable[[], float]) -> int:
    """Count the complete lines of `plan` (its newest `allowed` bytes); return the offset reached.

    Reading that starts inside a line (the budget or `initial_bytes` cut the
    backlog) skips to the next line. Raise OutOfTime(offset reached) at the deadline.
    """
    start = plan.start
    if plan.end - start > allowed:
        tally.skipped_bytes += plan.end - allowed - start
        start = plan.end - allowed
    with open(plan.path, "rb") as fh:
        skip_partial = False
        if start > 0:
            fh.seek(start - 1)
            skip_partial = fh.read(1) != b"\n"
        position, pending = start, b""
        while position < plan.end:
            chunk = fh.read(min(CHUNK_BYTES, plan.end - position))
            if not chunk:
                break
            position += len(chunk)
            tally.read_bytes += len(chunk)
            lines = (pending + chunk).split(b"\n")
            pending = lines.pop()
            if skip_partial and lines:
                lines, skip_partial = lines[1:], False
            for line in lines:
                tally.line(line.decode("utf-8", "replace"), plan.path)
            if monotonic() >= deadline:
                raise OutOfTime(position - len(pending))
    if pending and not skip_partial and (plan.finished or len(pending) > MAX_LINE_BYTES):
        tally.line(pending.decode("utf-8", "replace"), plan.path)
        pending = b""
    return position - len(pending)


# --- journal -------------------------------------------------------------------------------------------------

class LineStream:
    """A child's stdout, line by line, bounded like `run_bounded`: argv, own process group, killed at the
    deadline or once `max_bytes` were read. After iterating: `returncode` (None when stopped early),
    `stderr` (capped), `truncated` (stopped at `max_bytes`)."""

    def __init__(self, argv: list[str], deadline: float, max_bytes: int, env: dict[str, str],
                 monotonic: Callable[[], float]):
        self.argv, self.deadline, self.max_bytes, self.env, self.monotonic = argv, deadline, max_bytes, env, monotonic
        self.returncode: int | None = None
        self.stderr = ""
        self.truncated = False

    def __iter__(self) -> Iterator[bytes]:
        """Raise OSError when the program cannot start, OutOfTime at the deadline."""
        with children.popen(self.argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=self.env) as proc:
            yield from self._lines(proc)

    def _lines(self, proc: subprocess.Popen) -> Iterator[bytes]:
        stderr, pending, total = bytearray(), b"", 0
        try:
            with selectors.DefaultSelector() as sel:
                sel.register(proc.stdout, selectors.EVENT_READ, "out")
                sel.register(proc.stderr, selectors.EVENT_READ, "err")
                while sel.get_map() and not self.truncated:
                    wait = self.deadline - self.monotonic()
                    if wait <= 0:
                        raise OutOfTime()
                    for key, _ in sel.select(wait):
                        chunk = os.read(key.fd, 65536)
                        if not chunk:
                            sel.unregister(key.fileobj)
                        elif key.data == "err":
                            stderr += chunk[: 4096 - len(stderr)]
                        else:
                            chunk = chunk[: self.max_bytes - total]
                            total += len(chunk)
                            self.truncated = total >= self.max_bytes
                            lines = (pending + chunk).split(b"\n")
                            pending = lines.pop()
                            yield from lines
                            if self.truncated:
                                break
            if pending and not self.truncated:
                yield pending
            if not self.truncated:
                proc.wait(max(0.0, self.deadline - self.monotonic()))
                self.returncode = proc.returncode
        except subprocess.TimeoutExpired:
            raise OutOfTime() from None
        finally:
            self.stderr = stderr.decode("utf-8", "replace")
            if proc.returncode is None:
                children.kill_group(proc)


class LogScanCheck(Check):
    """Lines matching an error or a warning pattern in log files or the journal, since the previous run.

    `warning`/`critical` apply to the count of new lines at the levels in
    `thresholds_apply_to` (default: error lines; any new error line warns).
    The first run records where the logs end and counts nothing unless
    `initial_bytes` (files) or `initial_since` (journal) says how far back to look.
    """

    TYPE = "log_scan"
    EXAMPLE = """
        - name: app-logs
          type: log_scan
          every: 15m
          paths: [/var/log/app/*.log]
          warning: 10             # new error lines since the previous run
          critical: 100
    """

    class Options(CheckOptions):
        type: Literal["log_scan"]
        source: Literal["files", "journal"] = Field("files", description="log files (`paths`) or the journal")
        paths: AbsoluteGlobs = Field((), description="absolute files or globs, e.g. [/var/log/nginx/error.log, "
                                                       "/var/log/beauth/*.log] (source: files)")
        follow_rotated: bool = Field(True, description="read the rest of a file logrotate renamed (app.log.1, "
                                                       "app.log-20250105; not compressed ones)")
        error_pattern: Regex = Field(r"\b(ERROR|CRITICAL|FATAL)\b", description="regular expression of an error "
                                                                            "line")
        warning_pattern: Regex | None = Field(r"\bWARN(ING)?\b", description="regular expression of a warning "
                                                                           "line (null: not counted)")
        ignore_case: bool = Field(False, description="match the patterns case-insensitively")
        warning: Count | None = Field(0, description="WARNING above this many new lines (default: any)")
        critical: Count | None = Field(None, description="CRITICAL above this many new lines")
        thresholds_apply_to: tuple[Literal["error", "warning"], ...] = Field(
            ("error",), min_length=1, description="levels whose line counts `warning`/`critical` apply to")
        initial_bytes: Size = Field(0, description="first run: scan this much of each file's end (0: start at "
                                                   "the end, count from the next run)")
        initial_since: Duration = Field(0.0, description="first run: count journal entries this far back (0: "
                                                         "from the first run on)")
        max_bytes: Size = Field(64 * 2**20, description="read at most this much per run; older new data "
                                                        "beyond it is skipped (the newest is read)")
        max_lines: int = Field(20, ge=0, le=1000, description="matching lines kept in the details (newest)")
        line_chars: int = Field(300, ge=20, le=10000, description="characters kept of each such line")
        journalctl: AbsolutePath = Field("/usr/bin/journalctl", description="the journalctl program (source: "
                                                                             "journal)")
        journal_directory: AbsolutePath | None = Field(None, description="read journal files from this "
                                                                         "directory (--directory) instead of "
                                                                         "the system journal")
        unit: str | None = Field(None, description="only this unit's entries (journalctl -u)")
        priority: Literal["emerg", "alert", "crit", "err", "warning", "notice", "info", "debug"] | None = Field(
            None, description="only entries of this priority or more severe (journalctl -p)")

        @model_validator(mode="after")
        def _source_options(self):
            if self.source == "files" and not self.paths:
                raise ValueError("source: files needs `paths`")
            if self.source == "files" and (self.unit or self.priority or self.journal_directory):
                raise ValueError("unit, priority and journal_directory apply to source: journal only")
            if self.source == "journal" and self.paths:
                raise ValueError("paths apply to source: files only")
            return self

    METRICS = (
        MetricSpec("matching_lines", "count", "New lines since the previous run matching the error or warning "
                                              "pattern.", ("level",)),
        MetricSpec("read_bytes", "bytes", "Log data read by the latest run."),
        MetricSpec("skipped_bytes", "bytes", "New log data left unread by the latest run (beyond max_bytes)."),
    )
    THRESHOLD = Threshold(("matching_lines",), "count")

    def threshold_samples(self, result):
        return [s for s in result.samples
                if s.name == "matching_lines" and s.label("level") in self.options.thresholds_apply_to]

    def _tally(self) -> Tally:
        flags = re.IGNORECASE if self.options.ignore_case else 0
        patterns = {"error": re.compile(self.options.error_pattern, flags)}
        if self.options.warning_pattern is not None:
            patterns["warning"] = re.compile(self.options.warning_pattern, flags)
        return Tally(patterns, self.options.max_lines, self.options.line_chars)

    def run(self, ctx: CheckContext) -> CheckResult:
        if ctx.state_dir is None:
            return CheckResult.unknown("no state directory to keep the read positions in")
        path = ctx.state_dir / "log_scan" / f"{self.options.name}.json"
        try:
            state = read_json(path)
        except ValueError as exc:
            return CheckResult.unknown(str(exc))
        if not isinstance(state, dict) or state.get("version") != STATE_VERSION:
            state = None
        scan = self._journal if self.options.source == "journal" else self._files
        return scan(ctx, path, state, self._tally())

    def _files(self, ctx: CheckContext, path: Path, state: dict | None, tally: Tally) -> CheckResult:
        opts = self.options
        started = ctx.monotonic()
        offsets = state.get("files") if state else None
        plans, unmatched, errors = plan_files(opts.paths, offsets, opts.follow_rotated, opts.initial_bytes)
        if not plans and not errors:
            return CheckResult.unknown(f"no file matches {', '.join(opts.paths)}")
        shares = share_budget(plans, opts.max_bytes)
        reached = {plan.key: plan.start for plan in plans}
        for plan in plans:
            try:
                reached[plan.key] = read_file(plan, shares[plan.key], tally, started + ctx.timeout, ctx.monotonic)
            except OutOfTime as exc:
                reached[plan.key] = exc.args[0]
                tally.notes.append(f"stopped at the {ctx.timeout:g}s timeout, continuing next run")
                break
            except OSError as exc:
                errors[plan.path] = exc.strerror or str(exc)
        live = [p.key for p in plans if not p.finished]
        # a rotated-away file is forgotten once read to its end; one cut short by the timeout is kept
        keep = live + [p.key for p in plans if p.finished and reached[p.key] < p.end]
        try:
            if ctx.keep_state:
                write_json_atomic(path, {"version": STATE_VERSION, "files": {key: reached[key] for key in keep}})
        except OSError as exc:
            return CheckResult.unknown(f"cannot save read positions to {path}: {exc.strerror}")
        if unmatched:
            tally.notes.append(f"nothing matches {', '.join(unmatched[:3])}")
        where = f"{len(live)} file{'s' * (len(live) != 1)}"
        if offsets is None and not opts.initial_bytes:
            return self._result(tally, f"first run: end of {where} recorded, counting from now on", errors,
                                first=True)
        return self._result(tally, f"in {where} since the previous run", errors)

    def _journal(self, ctx: CheckContext, path: Path, state: dict | None, tally: Tally) -> CheckResult:
        opts = self.options
        started, now = ctx.monotonic(), ctx.wall()
        since = state.get("journal_until") if state else None
        first = since is None
        if first:
            since = now - opts.initial_since
        since = min(since, now)     # the clock was set back: nothing is new, rather than a journalctl error
        stream = LineStream(self._journal_argv(since, now), started + ctx.timeout, opts.max_bytes,
                            child_env({"SYSTEMD_PAGER": "", "SYSTEMD_COLORS": "0"}),
                            ctx.monotonic)
        try:
            for line in stream:
                if not line.startswith(b"-- "):      # journalctl's own markers: -- No entries --, -- Boot … --
                    tally.read_bytes += len(line) + 1
                    tally.line(line.decode("utf-8", "replace"), "journal")
        except OSError as exc:
            return CheckResult.unknown(f"cannot run {opts.journalctl}: {exc.strerror}")
        except OutOfTime:
            tally.notes.append(f"stopped at the {ctx.timeout:g}s timeout: older entries not read")
        if stream.truncated:
            tally.notes.append(f"max_bytes ({format_size(opts.max_bytes)}) reached: older entries not read")
        elif stream.returncode not in (0, None):
            reason = " ".join(stream.stderr.split())[:300] or f"exit code {stream.returncode}"
            return CheckResult.unknown(f"journalctl failed: {reason}")
        blind = next((hint for notice, hint in _JOURNAL_BLIND if notice in stream.stderr), None)
        if blind:
            return CheckResult.unknown(blind)
        try:
            if ctx.keep_state:
                write_json_atomic(path, {"version": STATE_VERSION, "journal_until": now})
        except OSError as exc:
            return CheckResult.unknown(f"cannot save the journal position to {path}: {exc.strerror}")
        tally.last.reverse()    # read newest first; the details list oldest first like the files
        scope = "".join(f" {x}" for x in (opts.unit, f"priority {opts.priority}" if opts.priority else None) if x)
        if first and not opts.initial_since:
            return self._result(tally, f"first run: counting journal{scope} entries from now on", {}, first=True)
        if first:
            return self._result(tally, f"in the journal{scope} of the last {format_duration(opts.initial_since)}",
                                {})
        return self._result(tally, f"in the journal{scope} since the previous run", {})

    def _journal_argv(self, since: float, until: float) -> list[str]:
        opts = self.options
        # not --quiet: its notices on stderr are how a journal the agent cannot see is told from a quiet one
        argv = [opts.journalctl, f"--since=@{since:.6f}", f"--until=@{until:.6f}", "--output=short-iso",
                "--reverse", "--no-pager"]
        if opts.journal_directory:
            argv.append(f"--directory={opts.journal_directory}")
        if opts.unit:
            argv += ["--unit", opts.unit]
        if opts.priority:
            argv += ["--priority", opts.priority]
        return argv

    def _result(self, tally: Tally, where: str, errors: dict[str, str], first: bool = False) -> CheckResult:
        """`where` completes "N error and M warning lines …"; on a first run that counted nothing it is the
        whole summary."""
        counts = tally.counts
        parts = [f"{counts['error']} error"] + ([f"{counts['warning']} warning"] if "warning" in counts else [])
        summary = where if first else f"{' and '.join(parts)} lines {where}"
        if tally.read_bytes:
            summary += f" ({format_size(tally.read_bytes)} read)"
        if tally.skipped_bytes:
            summary += f"; {format_size(tally.skipped_bytes)} of older data skipped (max_bytes)"
        notes = list(tally.notes)
        status = Status.OK
        if errors:
            status = Status.UNKNOWN
            notes.append("cannot read " + ", ".join(f"{p}: {r}" for p, r in list(errors.items())[:3]))
        if tally.last:
            notes.append(f"last: {REDACT(tally.last[-1]['line'])[:120]}")
        summary = "; ".join([summary, *notes])
        samples = [sample("matching_lines", n, level=level) for level, n in counts.items()]
        samples += [sample("read_bytes", tally.read_bytes), sample("skipped_bytes", tally.skipped_bytes)]
        lines = [{**entry, "line": REDACT(entry["line"])} for entry in tally.last]
        return CheckResult(status, summary, tuple(samples), {"lines": lines, "unreadable": errors})
