"""wal_archive: the WAL archive has every segment since the last base backup, and a recent one.

The operator story (seed 002, RPO ≤ 1 h): a base backup is only as good as the WAL archived
after it. The archive of a real PostgreSQL 15 primary (archive_command `cp`) after a real
`pg_basebackup -Ft -z` and a few segment switches is contiguous; one segment removed from
it turns the check CRITICAL, naming that segment. Segment-name arithmetic (0x100 segments per
xlogid at 16 MiB, other wal_segment_size values), timelines after a promotion, truncated
copies and the archive's age against the RPO are tested on archive directories written here.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from pydantic import ValidationError

from agent.evaluate import WindowState, evaluate
from agent.plugin.result import CheckResult, Status
from checks.base import CheckContext
from checks.wal_archive import WalArchiveCheck, WalLayout, find_gaps, parse_lsn
from tests.conftest import wait_for
from tests.fixtures.postgres import BINDIR, REPLICATION_USER, pg_pair  # noqa: F401 (session fixture)
from tests.metrics_contract import assert_family_contract

MiB = 1024 * 1024
SEG16 = WalLayout(16 * MiB)


def make(path: Path, **options) -> WalArchiveCheck:
    return WalArchiveCheck(WalArchiveCheck.Options.model_validate(
        {"name": "wal", "type": "wal_archive", "path": str(path), **options}))


def run(check: WalArchiveCheck, wall=time.time) -> CheckResult:
    return check.run(CheckContext(timeout=10, wall=wall))


def value(result: CheckResult, name: str) -> float | None:
    found = [s.value for s in result.samples if s.name == name]
    return found[0] if found else None


class FakeArchive:
    """An archive directory laid out as `cp %p ARCHIVE/%f` leaves it; segments are sparse files of full size."""

    def __init__(self, root: Path, layout: WalLayout = SEG16):
        self.root, self.layout = root, layout
        root.mkdir(parents=True, exist_ok=True)

    def segment(self, timeline: int, segno: int, size: int | None = None, age: float = 0.0) -> str:
        name = self.layout.name(timeline, segno)
        path = self.root / name
        with open(path, "wb") as fh:
            fh.truncate(self.layout.segment_size if size is None else size)
        when = time.time() - age
        os.utime(path, (when, when))
        return name

    def segments(self, timeline: int, first: int, last: int, **kwargs) -> list[str]:
        return [self.segment(timeline, segno, **kwargs) for segno in range(first, last + 1)]

    def backup_label(self, timeline: int, segno: int, offset: int = 0x28, stop_segno: int | None = None) -> str:
        """A `*.backup` history file as pg_backup_stop writes it."""
        start = segno * self.layout.segment_size + offset
        stop = (stop_segno if stop_segno is not None else segno) * self.layout.segment_size + 0x100
        name = f"{self.layout.name(timeline, segno)}.{offset:08X}.backup"
        (self.root / name).write_text(
            f"START WAL LOCATION: {start >> 32:X}/{start & 0xFFFFFFFF:X} (file {self.layout.name(timeline, segno)})\n"
            f"STOP WAL LOCATION: {stop >> 32:X}/{stop & 0xFFFFFFFF:X} (file {self.layout.name(timeline, segno)})\n"
            f"CHECKPOINT LOCATION: 0/0\nBACKUP METHOD: streamed\nBACKUP FROM: primary\n"
            f"START TIME: 2026-12-01 02:00:00 UTC\nLABEL: nightly\nSTART TIMELINE: {timeline}\n")
        return name


# --- segment names ------------------------------------------------------------------------------

def test_wal_layout_16mib_has_0x100_segments_per_xlogid():
    assert SEG16.per_xlogid == 0x100
    assert SEG16.name(1, 0xFF) == "0000000100000000000000FF"
    assert SEG16.name(1, 0x100) == "000000010000000100000000", "…FF is followed by the next xlogid's 00"
    assert SEG16.parse("000000010000000100000000") == (1, 0x100)
    assert SEG16.parse("000000020000000A00000042") == (2, 0xA * 0x100 + 0x42)
    assert SEG16.parse("000000010000000000000100") is None, "no segment 0x100 in a 16 MiB xlogid"
    assert SEG16.parse("000000010000000000000003.gz") == (1, 3)
    assert SEG16.parse("000000010000000000000003.partial") is None
    assert SEG16.parse("000000010000000000000003.00000028.backup") is None


def test_wal_layout_other_segment_sizes():
    big, small = WalLayout(64 * MiB), WalLayout(1 * MiB)
    assert big.per_xlogid == 0x40 and small.per_xlogid == 0x1000
    assert big.name(1, 0x40) == "000000010000000100000000"
    assert big.parse("000000010000000000000040") is None
    assert small.name(1, 0xFFF) == "000000010000000000000FFF"
    assert big.segno(parse_lsn("1/0")) == 0x40 and SEG16.segno(parse_lsn("16/B374D848")) == 0x16B3


def test_wal_find_gaps_ranges_and_first_missing():
    gaps = find_gaps([1, 2, 5, 6, 9], 1, 10)
    assert gaps.missing == 5 and gaps.first == [3, 4, 7, 8, 10]
    assert gaps.ranges == [(3, 4), (7, 8), (10, 10)]
    assert find_gaps([3, 4, 5], 3, 5).missing == 0
    assert find_gaps([4, 5], 3, 5).first == [3], "the start segment itself missing is a gap"


# --- continuity on written archives ---------------------------------------------------------------

def test_wal_archive_contiguous_across_an_xlogid_boundary_ok(tmp_path):
    archive = FakeArchive(tmp_path / "archive")
    archive.segments(1, 0xF0, 0x1FF)                       # 00000001 00000000 000000F0 … 00000001 00000001 000000FF
    label = archive.backup_label(1, 0xFA)
    result = run(make(archive.root))
    assert result.status is Status.OK, result.summary
    assert value(result, "gap_segments") == 0 and value(result, "segments") == 0x1FF - 0xFA + 1
    assert result.details["start"]["backup_history"] == label
    assert result.details["range"] == {"first": "0000000100000000000000FA", "last": "0000000100000001000000FF",
                                       "segments": 0x1FF - 0xFA + 1}
    assert f"segments contiguous since the base backup {label} (2026-12-01 02:00:00 UTC)" in result.summary


def test_wal_archive_segment_missing_after_the_backup_critical_naming_it(tmp_path):
    archive = FakeArchive(tmp_path / "archive")
    archive.segments(1, 0xFA, 0x105)
    archive.backup_label(1, 0xFC)
    (archive.root / "000000010000000100000000").unlink()       # the first segment of the next xlogid
    (archive.root / "000000010000000100000003").unlink()
    result = run(make(archive.root))
    assert result.status is Status.CRITICAL
    assert "2 WAL segments missing after the base backup" in result.summary
    assert "first 000000010000000100000000: a restore stops there" in result.summary
    assert value(result, "gap_segments") == 2
    assert result.details["missing"] == ["000000010000000100000000", "000000010000000100000003"]


def test_wal_archive_gap_before_the_backup_ignored(tmp_path):
    archive = FakeArchive(tmp_path / "archive")
    archive.segments(1, 1, 3)
    archive.segments(1, 6, 9)                                  # 4 and 5 removed, but the backup starts at 7
    archive.backup_label(1, 7)
    assert run(make(archive.root)).status is Status.OK


def test_wal_archive_not_yet_archived_to_the_backup_stop_critical(tmp_path):
    archive = FakeArchive(tmp_path / "archive")
    archive.segments(1, 5, 6)
    archive.backup_label(1, 5, stop_segno=8)
    result = run(make(archive.root))
    assert result.status is Status.CRITICAL
    assert result.details["missing"] == ["000000010000000000000007", "000000010000000000000008"]


def test_wal_archive_without_backup_history_warns_and_checks_from_the_oldest(tmp_path):
    archive = FakeArchive(tmp_path / "archive")
    archive.segments(1, 3, 6)
    result = run(make(archive.root))
    assert result.status is Status.WARNING
    assert "no base backup history file (*.backup)" in result.summary
    assert result.details["start"] == {"segment": "000000010000000000000003", "from": "oldest segment"}
    configured = run(make(archive.root, start_segment="000000010000000000000002"))
    assert configured.status is Status.CRITICAL and configured.details["missing"] == ["000000010000000000000002"]


def test_wal_archive_truncated_segment_critical_compressed_accepted(tmp_path):
    archive = FakeArchive(tmp_path / "archive")
    archive.segments(1, 1, 4)
    archive.backup_label(1, 1)
    archive.segment(1, 3, size=8 * MiB)                           # a copy cut short
    (archive.root / "000000010000000000000004").rename(archive.root / "000000010000000000000004.zst")
    (archive.root / "000000010000000000000004.zst").write_bytes(b"compressed")
    result = run(make(archive.root))
    assert result.status is Status.CRITICAL
    assert "1 segment not 16.0MiB long, first 000000010000000000000003 (8388608 B)" in result.summary
    assert value(result, "gap_segments") == 0


def test_wal_archive_64mib_segments_need_segment_size(tmp_path):
    archive = FakeArchive(tmp_path / "archive", WalLayout(64 * MiB))
    archive.segments(1, 0x3E, 0x41)                               # …3E, …3F, then 00000001 00000001 00000000, …01
    archive.backup_label(1, 0x3E)
    assert run(make(archive.root, segment_size="64MiB")).status is Status.OK
    wrong = run(make(archive.root))
    assert wrong.status is Status.CRITICAL, "with 16 MiB arithmetic, …40 to …FF look missing and sizes are wrong"


def test_wal_archive_follows_the_newest_timeline_through_its_history(tmp_path):
    archive = FakeArchive(tmp_path / "archive")
    archive.segments(1, 1, 6)                                    # timeline 1 ran on to 6 (a stale old primary)
    archive.backup_label(1, 2)
    (archive.root / "00000002.history").write_text("1\t0/4000100\tno recovery target specified\n")
    archive.segments(2, 4, 8)                                    # promoted inside segment 4
    ok = run(make(archive.root))
    assert ok.status is Status.OK, ok.summary
    assert ok.details["timeline"] == 2 and ok.details["range"]["last"] == "000000020000000000000008"
    (archive.root / "000000020000000000000006").unlink()        # timeline 1's segment 6 is not on the chain
    gap = run(make(archive.root))
    assert gap.status is Status.CRITICAL and gap.details["missing"] == ["000000020000000000000006"]


def test_wal_archive_newest_older_than_rpo_critical_by_threshold(tmp_path):
    archive = FakeArchive(tmp_path / "archive")
    archive.segments(1, 1, 3, age=30)
    archive.backup_label(1, 1)
    check = make(archive.root, warning="30m")
    fresh = run(check)
    assert evaluate(check, fresh, WindowState(), time.time()).status is Status.OK
    assert 25 < value(fresh, "newest_age_seconds") < 120
    for later, status in ((45 * 60, Status.WARNING), (2 * 3600, Status.CRITICAL)):
        result = run(check, wall=lambda: time.time() + later)
        assert result.status is Status.OK, "the age is a measurement: the thresholds decide"
        verdict = evaluate(check, result, WindowState(), time.time())
        assert verdict.status is status and "newest_age_seconds" in verdict.summary


def test_wal_archive_directory_missing_critical_empty_critical(tmp_path):
    assert run(make(tmp_path / "nowhere")).status is Status.CRITICAL
    (tmp_path / "empty").mkdir()
    result = run(make(tmp_path / "empty"))
    assert result.status is Status.CRITICAL and "no WAL segments" in result.summary


@pytest.mark.parametrize("options, message", [
    ({"path": "archive"}, "must be an absolute path"),
    ({"path": "/a", "segment_size": "10MiB"}, "power of two"),
    ({"path": "/a", "start_segment": "00000001000000000000000g"}, "not a WAL segment name"),
    ({"path": "/a", "start_segment": "000000010000000000000040", "segment_size": "64MiB"}, "below 40"),
])
def test_wal_archive_options_invalid_rejected(options, message):
    with pytest.raises(ValidationError) as info:
        WalArchiveCheck.Options.model_validate({"name": "wal", "type": "wal_archive", **options})
    assert message in str(info.value)


# --- a real primary's archive ------------------------------------------------------------------------

def archived(pair, name: str) -> bool:
    last = pair.primary.value("SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver")
    return last[:24] >= name and (pair.archive / name).exists()


@pytest.fixture
def base_backup_then_switches(pg_pair, tmp_path):
    """A real `pg_basebackup -Ft -z` of the primary, then four segment switches with writes between, all
    archived; returns the names of the segments the switches completed."""
    target = tmp_path / "base"
    subprocess.run([str(BINDIR / "pg_basebackup"), "-h", "127.0.0.1", "-p", str(pg_pair.primary.port),
                    "-U", REPLICATION_USER, "-D", str(target), "-Ft", "-z", "-c", "fast", "--no-sync"],
                   check=True, capture_output=True, timeout=120)
    assert (target / "base.tar.gz").exists() and (target / "pg_wal.tar.gz").exists()
    pg_pair.primary.query("CREATE TABLE wal_archive_probe (n int, filler text)")
    switched = []
    try:
        for round_ in range(4):
            pg_pair.primary.query("INSERT INTO wal_archive_probe SELECT g, repeat('x', 200) "
                                  "FROM generate_series(1, 2000) g")
            switched.append(pg_pair.primary.value("SELECT pg_walfile_name(pg_switch_wal())"))
        wait_for(lambda: archived(pg_pair, switched[-1]), 30, what=f"{switched[-1]} to be archived")
        yield switched
    finally:
        pg_pair.primary.query("DROP TABLE IF EXISTS wal_archive_probe")


def test_wal_archive_real_primary_contiguous_then_a_removed_segment_critical(pg_pair, base_backup_then_switches,
                                                                              tmp_path):
    switched = base_backup_then_switches
    copy = tmp_path / "archive"                      # the shared archive stays whole: remove from a linked copy
    shutil.copytree(pg_pair.archive, copy, copy_function=os.link)
    check = make(copy)
    result = run(check)
    assert result.status is Status.OK, result.summary
    backups = sorted(p.name for p in copy.glob("*.backup"))
    assert result.details["start"]["backup_history"] == backups[-1]
    assert result.details["newest"]["segment"] >= switched[-1]
    assert value(result, "gap_segments") == 0 and value(result, "segments") >= 4
    assert value(result, "newest_age_seconds") < 60
    middle = switched[1]
    (copy / middle).unlink()
    result = run(check)
    assert result.status is Status.CRITICAL
    assert f"1 WAL segment missing after the base backup {backups[-1]}" in result.summary
    assert f"first {middle}" in result.summary
    assert result.details["missing"] == [middle] and value(result, "gap_segments") == 1
    assert (pg_pair.archive / middle).exists()
    assert_family_contract(check, [result])
