"""Base-backup archives are sized and extracted as data: members that are not plain files or directories inside
the data directory are refused before anything of them is written, and a truncated archive is named as such."""

from __future__ import annotations

import gzip
import io
import os
import tarfile
import time

from pathlib import Path

import pytest

from checks.safe_tar import ArchiveCorrupt, ArchiveRefused, Deadline, extract, scan

FAR = time.monotonic() + 3600


def member(name: str, data: bytes = b"", **attrs) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o600
    for key, value in attrs.items():
        setattr(info, key, value)
    if info.type != tarfile.REGTYPE:
        info.size = 0
    return info, data


def archive(path: Path, *members, first_empty_member: bool = False) -> Path:
    """A gzip-compressed tar; `first_empty_member` writes an empty gzip member first, as pg_basebackup -z does."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if info.type == tarfile.REGTYPE else None)
    path.write_bytes((gzip.compress(b"", mtime=0) if first_empty_member else b"")
                     + gzip.compress(raw.getvalue(), mtime=0))
    return path


def data_dir(tmp_path: Path) -> Path:
    dest = tmp_path / "data"
    dest.mkdir()
    return dest


def test_scan_sizes_members_and_captures_pg_version_across_gzip_members(tmp_path):
    path = archive(tmp_path / "base.tar.gz",
                   member("backup_label", b"START TIME: 2026-12-03 02:00:01 UTC\n"),
                   member("PG_VERSION", b"15\n"),
                   member("global", type=tarfile.DIRTYPE, mode=0o700),
                   member("global/1262", b"x" * 8192),
                   member("./pg_wal/archive_status", type=tarfile.DIRTYPE, mode=0o700),
                   first_empty_member=True)
    found = scan(str(path), FAR)
    assert (found.members, found.expanded_bytes) == (5, 8192 + 36 + 3)
    assert found.files == {"backup_label": b"START TIME: 2026-12-03 02:00:01 UTC\n", "PG_VERSION": b"15\n"}
    dest = data_dir(tmp_path)
    assert extract(str(path), str(dest), deadline=FAR, max_bytes=found.expanded_bytes) == found.expanded_bytes
    assert (dest / "global" / "1262").stat().st_size == 8192 and (dest / "pg_wal" / "archive_status").is_dir()


@pytest.mark.parametrize("hostile, named", [
    (member("/etc/cron.d/evil", b"* * * * * root id\n"), "absolute path '/etc/cron.d/evil'"),
    (member("base/../../evil", b"x"), "'..' in 'base/../../evil'"),
    (member("pg_wal", type=tarfile.SYMTYPE, linkname="/var/lib/postgresql"), "link 'pg_wal' -> '/var/lib/postgresql'"),
    (member("global/pg_control", type=tarfile.LNKTYPE, linkname="PG_VERSION"), "link 'global/pg_control'"),
    (member("dev/sda", type=tarfile.BLKTYPE, devmajor=8, devminor=0), "device 'dev/sda'"),
    (member("fifo", type=tarfile.FIFOTYPE), "special file 'fifo'"),
], ids=["absolute", "dotdot", "symlink", "hardlink", "device", "fifo"])
def test_members_a_base_backup_never_holds_refused_before_extraction(tmp_path, hostile, named):
    path = archive(tmp_path / "base.tar.gz", member("PG_VERSION", b"15\n"), hostile, member("after", b"y"))
    with pytest.raises(ArchiveRefused, match="a base backup holds only files and directories") as refused:
        scan(str(path), FAR)
    assert named in str(refused.value)
    dest = data_dir(tmp_path)
    with pytest.raises(ArchiveRefused, match="a base backup holds only files and directories"):
        extract(str(path), str(dest), deadline=FAR, max_bytes=1 << 20)
    assert not (dest / "after").exists() and not (tmp_path / "evil").exists()
    assert not os.path.lexists(dest / "pg_wal")


def test_truncated_archive_corrupt_names_where_it_ends(tmp_path):
    whole = archive(tmp_path / "whole.tar.gz", member("PG_VERSION", b"15\n"),
                    member("base/1/1259", os.urandom(200_000)))
    cut = tmp_path / "cut.tar.gz"
    cut.write_bytes(whole.read_bytes()[:60_000])
    with pytest.raises(ArchiveCorrupt, match=r"truncated: the archive ends at member 2 \('base/1/1259'\) before its end-of-stream"):
        scan(str(cut), FAR)
    with pytest.raises(ArchiveCorrupt, match="truncated"):
        extract(str(cut), str(data_dir(tmp_path)), deadline=FAR, max_bytes=1 << 20)


def test_damaged_gzip_corrupt(tmp_path):
    whole = archive(tmp_path / "whole.tar.gz", member("base/1/1259", os.urandom(50_000)))
    data = bytearray(whole.read_bytes())
    data[200:216] = bytes(16)
    whole.write_bytes(bytes(data))
    with pytest.raises(ArchiveCorrupt, match="unreadable"):
        scan(str(whole), FAR)


def test_extraction_stops_past_the_sized_bytes(tmp_path):
    path = archive(tmp_path / "base.tar.gz", member("a", b"x" * 1000), member("b", b"y" * 1000))
    with pytest.raises(ArchiveRefused, match="expands beyond the 1500 bytes it held when it was sized"):
        extract(str(path), str(data_dir(tmp_path)), deadline=FAR, max_bytes=1500)
    assert not (tmp_path / "data" / "b").exists()


def test_deadline_stops_between_members(tmp_path):
    path = archive(tmp_path / "base.tar.gz", member("a", b"x"))
    with pytest.raises(Deadline):
        scan(str(path), time.monotonic() - 1)
    with pytest.raises(Deadline):
        extract(str(path), str(data_dir(tmp_path)), deadline=time.monotonic() - 1, max_bytes=10)


def test_plain_tar_read_too(tmp_path):
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        info, data = member("PG_VERSION", b"16\n")
        tar.addfile(info, io.BytesIO(data))
    path = tmp_path / "base.tar"
    path.write_bytes(raw.getvalue())
    assert scan(str(path), FAR).files == {"PG_VERSION": b"16\n"}

