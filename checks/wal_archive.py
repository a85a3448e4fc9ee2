"""WAL archive continuity (seed 002 "RPO ≤ 1 h"): type `wal_archive`.

A base backup restores only as far as the archive holds every WAL segment from the
backup's start onward; one missing segment stops recovery there, silently, months before
anyone tries. This check reads the archive directory `archive_command` copies into and
answers, every few minutes, the two questions a restore test answers once a quarter:

- **continuity**: every segment from the last base backup's start (the newest `*.backup`
  history file PostgreSQL archives at the end of each base backup, or `start_segment`) to
  the newest archived segment is there, and at least through the backup's stop location.
  CRITICAL names the first missing segment;
- **freshness** (the RPO): the newest segment's age (its file's mtime, i.e. when it was
  archived). `critical` defaults to 1 h, the seed's RPO. An idle server does not switch
  segments, so the age then also grows; with `archive_timeout` set, a busy server's age
  stays below it.

Segment names are `TTTTTTTTXXXXXXXXYYYYYYYY`: timeline, then the segment number split in
"xlogid" (the high 32 bits of the LSN) and the segment within it. An xlogid holds 4 GiB, so
with 16 MiB segments YYYYYYYY runs 00..FF and 0000000100000000000000FF is followed by
000000010000000100000000; `segment_size` (PostgreSQL's `wal_segment_size`) sets that
arithmetic for other sizes. After a promotion the newest timeline's history file
(`0000000N.history`) says where each ancestor timeline ended; a position counts as present
when a segment of the newest timeline, or of an ancestor up to its switch point, is there.
Without that file every lower timeline is accepted (and the details say so).

Compressed segments (`.gz`, `.zst`, `.lz4`, `.xz`, `.bz2`, `.br`) count as present; an
uncompressed one of the wrong size is a truncated copy and CRITICAL. `.partial` segments
(left by a promotion) and other files are ignored. Archives kept by pgBackRest, Barman or
WAL-G use their own layouts and tools to verify them; this reads the plain
`cp %p ARCHIVE/%f` layout of the PostgreSQL documentation.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from agent.plugin.fields import AbsolutePath, Duration, Size
from agent.plugin.result import CheckResult, Status, sample, worst
from agent.plugin.units import format_duration, format_size
from checks.base import Check, CheckContext, CheckOptions, MetricSpec, Threshold

XLOGID_BYTES = 1 << 32                    # the LSN range one "xlogid" (XXXXXXXX in a segment name) covers
DEFAULT_SEGMENT_BYTES = 16 * 1024 * 1024
MAX_LISTED = 20                           # missing segments / gap ranges kept in the details
COMPRESSED = (".gz", ".zst", ".lz4", ".xz", ".bz2", ".br")
_SEGMENT_RE = re.compile(r"^([0-9A-F]{8})([0-9A-F]{8})([0-9A-F]{8})(\.(?:gz|zst|lz4|xz|bz2|br))?$")
_BACKUP_RE = re.compile(r"^([0-9A-F]{24})\.([0-9A-F]{8})\.backup$")
_HISTORY_RE = re.compile(r"^([0-9A-F]{8})\.history$")
_LSN_RE = re.compile(r"([0-9A-Fa-f]{1,8})/([0-9A-Fa-f]{1,8})")


def parse_lsn(text: str) -> int:
    """Given an LSN as PostgreSQL prints it (`16/B374D848`), return it as a byte position."""
    match = _LSN_RE.fullmatch(text.strip())
    if not match:
        raise ValueError(f"not an LSN: {text!r}")
    return (int(match[1], 16) << 32) | int(match[2], 16)


@dataclass(frozen=True)
class WalLayout:
    """Segment names ↔ segment numbers for one wal_segment_size."""

    segment_size: int = DEFAULT_SEGMENT_BYTES

    @property
    def per_xlogid(self) -> int:
        """Segments per xlogid: 0x100 for 16 MiB segments, 0x40 for 64 MiB, 0x1000 for 1 MiB."""
        return XLOGID_BYTES // self.segment_size

    def name(self, timeline: int, segno: int) -> str:
        return f"{timeline:08X}{segno // self.per_xlogid:08X}{segno % self.per_xlogid:08X}"

    def parse(self, name: str) -> tuple[int, int] | None:
        """Given a segment's file name, return (timeline, segment number); None when it is not a segment
        name for this segment size (e.g. a low part beyond the xlogid's last segment)."""
        match = _SEGMENT_RE.match(name)
        if not match:
            return None
        timeline, xlogid, low = (int(match[i], 16) for i in (1, 2, 3))
        if timeline == 0 or low >= self.per_xlogid:
            return None
        return timeline, xlogid * self.per_xlogid + low

    def segno(self, lsn: int) -> int:
        return lsn // self.segment_size


@dataclass(frozen=True)
class Segment:
    name: str
    timeline: int
    segno: int
    size: int
    mtime: float
    compressed: bool


@dataclass(frozen=True)
class BackupLabel:
    """A base backup's history file in the archive: where its WAL starts and stops."""

    name: str
    timeline: int
    start_lsn: int
    stop_lsn: int | None
    start_time: str | None


@dataclass
class Archive:
    """What one listing of the archive directory found."""

    segments: list[Segment]
    backups: list[BackupLabel]
    history: dict[int, list[tuple[int, int]]]   # timeline → [(ancestor timeline, LSN where it ended), …]


def read_archive(path: str, layout: WalLayout) -> Archive:
    """Given the archive directory, list its segments, backup history files and timeline histories.

    Raise OSError when the directory cannot be listed; a file that vanishes or cannot be read
    while listing is skipped (pg_archivecleanup may be running).
    """
    segments, backups, history = [], [], {}
    with os.scandir(path) as entries:
        for entry in entries:
            name = entry.name
            parsed = layout.parse(name)
            try:
                if parsed is not None:
                    if entry.is_file():
                        st = entry.stat()
                        segments.append(Segment(name, parsed[0], parsed[1], st.st_size, st.st_mtime,
                                                name.endswith(COMPRESSED)))
                elif _BACKUP_RE.match(name):
                    label = _read_backup_label(entry.path, name, layout)
                    if label is not None:
                        backups.append(label)
                elif (match := _HISTORY_RE.match(name)) is not None:
                    history[int(match[1], 16)] = _read_history(entry.path)
            except (OSError, UnicodeDecodeError, ValueError):
                continue
    return Archive(segments, backups, history)


def _read_backup_label(path: str, name: str, layout: WalLayout) -> BackupLabel | None:
    """The `*.backup` file's start (from its name, as PostgreSQL names it) and its STOP WAL LOCATION."""
    match = _BACKUP_RE.match(name)
    parsed = layout.parse(match[1])
    if parsed is None:
        return None
    timeline, segno = parsed
    with open(path, encoding="utf-8") as fh:
        text = fh.read(8192)
    stop = re.search(r"^STOP WAL LOCATION: (\S+)", text, re.M)
    started = re.search(r"^START TIME: (.+)$", text, re.M)
    return BackupLabel(name, timeline, segno * layout.segment_size + int(match[2], 16),
                       parse_lsn(stop[1]) if stop else None, started[1].strip() if started else None)


def _read_history(path: str) -> list[tuple[int, int]]:
    """A timeline history file's lines `parentTLI  switchLSN  reason` as [(parent, switch LSN), …]."""
    out = []
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            fields = line.split()
            if len(fields) >= 2 and fields[0].isdigit() and _LSN_RE.fullmatch(fields[1]):
                out.append((int(fields[0]), parse_lsn(fields[1])))
    return out


@dataclass(frozen=True)
class Chain:
    """The newest timeline and its ancestors, each with the last segment it is followed to."""

    timeline: int
    ends: dict[int, int | None]   # timeline → last segment number on the chain (None: no limit)
    known: bool                   # False: no history file, every lower timeline accepted

    def holds(self, timeline: int, segno: int) -> bool:
        if timeline not in self.ends:
            return False
        end = self.ends[timeline]
        return end is None or segno <= end

    def timeline_at(self, segno: int) -> int:
        """The timeline whose segment a restore reads at this position (the newest one without a history)."""
        for timeline, end in sorted(self.ends.items()):
            if end is not None and segno <= end:
                return timeline
        return self.timeline


def follow_chain(archive: Archive, layout: WalLayout) -> Chain | None:
    """The newest timeline among the segments and its ancestry; None when there are no segments."""
    if not archive.segments:
        return None
    newest = max(segment.timeline for segment in archive.segments)
    if newest in archive.history:
        ends: dict[int, int | None] = {tli: layout.segno(lsn) for tli, lsn in archive.history[newest]}
        ends[newest] = None
        return Chain(newest, ends, True)
    return Chain(newest, {segment.timeline: None for segment in archive.segments}, newest == 1)


@dataclass(frozen=True)
class Gaps:
    missing: int
    first: list[int]                  # the first missing segment numbers (at most MAX_LISTED)
    ranges: list[tuple[int, int]]     # the first gap ranges, inclusive (at most MAX_LISTED)


def find_gaps(present: list[int], start: int, end: int) -> Gaps:
    """Given the sorted segment numbers present, return what is missing in [start, end]."""
    missing, first, ranges = 0, [], []
    expected = start
    for segno in [s for s in present if start <= s <= end] + [end + 1]:
        if segno > expected:
            missing += segno - expected
            if len(ranges) < MAX_LISTED:
                ranges.append((expected, segno - 1))
            first.extend(range(expected, min(segno, expected + MAX_LISTED - len(first))))
        expected = max(expected, segno + 1)
    return Gaps(missing, first[:MAX_LISTED], ranges)


@dataclass(frozen=True)
class Start:
    """Where continuity is checked from, the segment it must reach at least, and how the summary says it."""

    segno: int
    stop: int | None
    origin: str | None                # None: no backup history and no start_segment (the oldest segment)
    details: dict[str, Any]


class WalArchiveCheck(Check):
    """A local WAL archive holds every segment since the last base backup, and its newest one is recent.

    CRITICAL: a segment missing between the base backup's start and the newest segment (or
    the backup's stop), a truncated uncompressed segment, no segments at all, the directory
    missing. WARNING: no base backup history file and no `start_segment` (continuity is then
    checked from the oldest segment, which is not proof a restore would work). Thresholds:
    the newest segment's age (`critical` 1 h by default, the recovery point objective).
    """

    TYPE = "wal_archive"
    EXAMPLE = """
        - name: wal-archive
          type: wal_archive
          every: 5m
          path: /backups/wal      # where archive_command copies the segments
          warning: 30m
          critical: 1h            # the recovery point objective
    """

    class Options(CheckOptions):
        type: Literal["wal_archive"]
        path: AbsolutePath = Field(..., description="the archive directory archive_command copies segments into")
        segment_size: Size = Field(DEFAULT_SEGMENT_BYTES, description="the server's wal_segment_size (initdb "
                                                                       "--wal-segsize); 16MiB by default")
        start_segment: str | None = Field(
            None, description="check continuity from this segment (e.g. 000000010000000A00000042) instead of the "
                              "newest base backup's *.backup history file")
        warning: Duration | None = Field(None, description="WARNING when the newest archived segment is older")
        critical: Duration | None = Field(3600.0, description="CRITICAL when the newest archived segment is older: "
                                                              "the recovery point objective (1h)")

        @field_validator("segment_size")
        @classmethod
        def _segment_size(cls, size):
            if size < 1 << 20 or size > 1 << 30 or size & (size - 1):
                raise ValueError(f"segment_size must be a power of two from 1MiB to 1GiB, as PostgreSQL's "
                                 f"wal_segment_size (got {size} bytes)")
            return size

        @field_validator("start_segment")
        @classmethod
        def _start(cls, name):
            if name is not None and not re.fullmatch(r"[0-9A-F]{24}", name):
                raise ValueError(f"start_segment {name!r} is not a WAL segment name (24 upper-case hex digits)")
            return name

        @model_validator(mode="after")
        def _start_fits_the_segment_size(self):
            layout = WalLayout(self.segment_size)
            if self.start_segment is not None and layout.parse(self.start_segment) is None:
                raise ValueError(f"start_segment {self.start_segment}: its last 8 digits must be below "
                                 f"{layout.per_xlogid:X} with segment_size {format_size(self.segment_size)}")
            return self

    METRICS = (
        MetricSpec("newest_age_seconds", "seconds", "Time since the newest WAL segment was archived (its mtime)."),
        MetricSpec("gap_segments", "count", "WAL segments missing between the last base backup's start and the "
                                            "newest archived segment."),
        MetricSpec("segments", "count", "WAL segments present from the last base backup's start to the newest."),
    )
    THRESHOLD = Threshold(("newest_age_seconds",), "seconds")

    def run(self, ctx: CheckContext) -> CheckResult:
        opts = self.options
        layout = WalLayout(opts.segment_size)
        try:
            archive = read_archive(opts.path, layout)
        except FileNotFoundError:
            return CheckResult.critical(f"{opts.path}: the WAL archive directory does not exist")
        except OSError as exc:
            return CheckResult.unknown(f"{opts.path}: cannot list the WAL archive: {exc.strerror or exc}")
        chain = follow_chain(archive, layout)
        if chain is None:
            return CheckResult.critical(f"{opts.path}: no WAL segments in the archive", (sample("segments", 0),))
        on_chain = sorted((s for s in archive.segments if chain.holds(s.timeline, s.segno)),
                          key=lambda s: (s.segno, s.timeline))
        start = self._start(archive, chain, layout, on_chain[0])
        newest = on_chain[-1]
        end = max(newest.segno, start.stop if start.stop is not None else newest.segno)
        in_range = [s for s in on_chain if start.segno <= s.segno <= end]
        present = sorted({s.segno for s in in_range})
        gaps = find_gaps(present, start.segno, end)
        age = max(0.0, ctx.wall() - newest.mtime)

        def name(segno: int) -> str:
            return layout.name(chain.timeline_at(segno), segno)

        details: dict[str, Any] = {
            "path": opts.path, "segment_size_bytes": opts.segment_size, "timeline": chain.timeline,
            "start": start.details, "newest": {"segment": newest.name, "age_seconds": age},
            "range": {"first": name(start.segno), "last": name(end), "segments": len(present)}}
        if not chain.known:
            details["timeline_history"] = f"no {chain.timeline:08X}.history: segments of every timeline accepted"
        statuses, phrases = [Status.OK], []
        if gaps.missing:
            details["missing"] = [name(segno) for segno in gaps.first]
            details["gaps"] = [[name(first), name(last)] for first, last in gaps.ranges]
            statuses.append(Status.CRITICAL)
            after = f" after {start.origin}" if start.origin else ""
            phrases.append(f"{gaps.missing} WAL segment{'s' * (gaps.missing != 1)} missing{after}, first "
                           f"{details['missing'][0]}: a restore stops there")
        else:
            since = f" since {start.origin}" if start.origin else ""
            phrases.append(f"{len(present)} segments contiguous{since} to {newest.name}, newest archived "
                           f"{format_duration(age)} ago")
        short = [s for s in in_range if not s.compressed and s.size != opts.segment_size]
        if short:
            statuses.append(Status.CRITICAL)
            details["truncated"] = [{"segment": s.name, "size_bytes": s.size} for s in short[:MAX_LISTED]]
            phrases.append(f"{len(short)} segment{'s' * (len(short) != 1)} not {format_size(opts.segment_size)} "
                           f"long, first {short[0].name} ({short[0].size} B): a truncated copy, or set segment_size")
        if start.origin is None:
            statuses.append(Status.WARNING)
            phrases.append("no base backup history file (*.backup) in the archive and no start_segment: "
                           "checked from the oldest segment")
        samples = (sample("newest_age_seconds", age), sample("gap_segments", gaps.missing),
                   sample("segments", len(present)))
        return CheckResult(worst(*statuses), f"{opts.path}: " + "; ".join(phrases), samples, details)

    def _start(self, archive: Archive, chain: Chain, layout: WalLayout, oldest: Segment) -> Start:
        """start_segment when configured, else the newest base backup on the chain, else the oldest segment."""
        configured = self.options.start_segment
        if configured is not None:
            return Start(layout.parse(configured)[1], None, f"start_segment {configured}",
                         {"segment": configured, "from": "start_segment"})
        labels = [b for b in archive.backups if chain.holds(b.timeline, layout.segno(b.start_lsn))]
        if not labels:
            return Start(oldest.segno, None, None, {"segment": oldest.name, "from": "oldest segment"})
        label = max(labels, key=lambda b: (b.start_lsn, b.timeline))
        stop = layout.segno(label.stop_lsn) if label.stop_lsn is not None else None
        when = f" ({label.start_time})" if label.start_time else ""
        return Start(layout.segno(label.start_lsn), stop, f"the base backup {label.name}{when}",
                     {"backup_history": label.name, "start_time": label.start_time,
                      "segment": layout.name(label.timeline, layout.segno(label.start_lsn))})
