"""backup_set and s3_backup `set: true` against a real nightly set made by PostgreSQL 15's own tools.

The operator story (seed 002 "Backup Strategy"): every night one directory
`/backups/database/$TIMESTAMP` receives a pg_dumpall of the cluster, a pg_dump per
database (gzipped) and a `pg_basebackup -Ft -z` base backup, and is synced to
`s3://…/database/$TIMESTAMP`. The agent says whether the newest set is complete, whether
each member reads back to its end, how old the set is, and whether the bucket holds the
same set member by member — naming what is missing or differs. The set is made once per
module from the test primary (tests/fixtures/postgres.py `pg_pair`): two databases with
rows, the real dumps, the real base backup.
"""

from __future__ import annotations

import gzip
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from pydantic import ValidationError

from agent.evaluate import WindowState, evaluate
from agent.plugin.result import CheckResult, Status
from checks.backup_set import BackupSetCheck
from checks.base import CheckContext
from checks.s3 import S3BackupCheck
from tests.fixtures.postgres import BINDIR, REPLICATION_USER, pg_pair  # noqa: F401 (session fixture)
from tests.fixtures.s3 import PART, Bucket, aws_env, moto  # noqa: F401 (fixtures; aws_env is autouse)
from tests.metrics_contract import assert_family_contract

HOUR = 3600.0
EXPECT = ["full_backup.sql.gz", "aicamera_backup.sql.gz", "analytics_backup.sql.gz", "**/base.tar.gz",
          "**/pg_wal.tar.gz"]
DATABASES = {"aicamera": "aicamera_backup.sql.gz", "aicamera_analytics": "analytics_backup.sql.gz"}


def _client(server, program: str, *args: str) -> bytes:
    out = subprocess.run([str(BINDIR / program), "-h", "127.0.0.1", "-p", str(server.port), "-U", "postgres", *args],
                         capture_output=True, timeout=120, check=True)
    return out.stdout


@pytest.fixture(scope="module")
def nightly(pg_pair, tmp_path_factory) -> Path:
    """One set as the seed's nightly job writes it: dumps gzipped, the base backup in wal_archive/."""
    primary = pg_pair.primary
    for database in DATABASES:
        primary.query(f"CREATE DATABASE {database}")
        primary.query("CREATE TABLE cameras AS SELECT g AS id, md5(g::text) AS name FROM generate_series(1, 500) g",
                      dbname=database)
    try:
        template = tmp_path_factory.mktemp("nightly") / "set"
        subprocess.run([str(BINDIR / "pg_basebackup"), "-h", "127.0.0.1", "-p", str(primary.port), "-U",
                        REPLICATION_USER, "-D", str(template / "wal_archive"), "-Ft", "-z", "-c", "fast",
                        "--no-sync"], check=True, capture_output=True, timeout=120)
        (template / "full_backup.sql.gz").write_bytes(gzip.compress(_client(primary, "pg_dumpall")))
        for database, name in DATABASES.items():
            (template / name).write_bytes(gzip.compress(_client(primary, "pg_dump", database)))
    finally:
        for database in DATABASES:
            primary.query(f"DROP DATABASE IF EXISTS {database}")
    return template


def place(root: Path, template: Path, stamp: str, age: float = 0.0) -> Path:
    """Copy the template set to root/<stamp>, every file `age` seconds old."""
    target = root / stamp
    shutil.copytree(template, target)
    when = time.time() - age
    for path in target.rglob("*"):
        os.utime(path, (when, when))
    return target


def make(root: Path, **options) -> BackupSetCheck:
    return BackupSetCheck(BackupSetCheck.Options.model_validate(
        {"name": "nightly", "type": "backup_set", "path": f"{root}/*", "expect": EXPECT, **options}))


def run(check, wall=time.time, timeout: float = 30.0) -> CheckResult:
    return check.run(CheckContext(timeout=timeout, wall=wall))


def value(result: CheckResult, name: str) -> float | None:
    found = [s.value for s in result.samples if s.name == name]
    return found[0] if found else None


def truncate(path: Path, keep: int) -> None:
    data = path.read_bytes()
    path.write_bytes(data[:keep])
    os.utime(path, (time.time() - 2 * HOUR, time.time() - 2 * HOUR))


# --- backup_set ----------------------------------------------------------------------------------------

def test_backup_set_real_nightly_set_complete_and_verified(nightly, tmp_path):
    place(tmp_path, nightly, "20261201_020000", age=26 * HOUR)
    place(tmp_path, nightly, "20261202_020000", age=2 * HOUR)
    (tmp_path / "last_backup_timestamp").write_text("20261202_020000\n")     # a file, not a set
    check = make(tmp_path)
    result = run(check)
    assert result.status is Status.OK, result.summary
    assert result.summary.startswith("set 20261202_020000 complete: 5 members verified (3 gzip, 2 tar), newest 2h")
    assert value(result, "sets") == 2 and value(result, "verified") == 1
    assert value(result, "members_missing") == 0 and value(result, "members_failed") == 0
    assert 2 * HOUR - 60 < value(result, "age_seconds") < 2 * HOUR + 60
    members = {m["member"]: m for m in result.details["judged"]["members"]}
    assert set(members) == {"full_backup.sql.gz", "aicamera_backup.sql.gz", "analytics_backup.sql.gz",
                            "wal_archive/base.tar.gz", "wal_archive/pg_wal.tar.gz"}
    assert members["wal_archive/base.tar.gz"]["format"] == "tar" and members["wal_archive/base.tar.gz"]["entries"] > 100
    assert evaluate(check, result, WindowState(), time.time()).status is Status.OK
    again = run(check)
    assert all(m.get("cached") for m in again.details["judged"]["members"]), "an unchanged member is not read again"
    assert_family_contract(check, [result, run(make(tmp_path / "none"))])


def test_backup_set_member_missing_critical_names_it_and_the_last_good_set(nightly, tmp_path):
    place(tmp_path, nightly, "20261201_020000", age=26 * HOUR)
    newest = place(tmp_path, nightly, "20261202_020000", age=7 * HOUR)
    shutil.rmtree(newest / "wal_archive")                                  # the base backup died
    (newest / "analytics_backup.sql.gz").unlink()
    result = run(make(tmp_path))
    assert result.status is Status.CRITICAL
    assert ("set 20261202_020000 incomplete: missing analytics_backup.sql.gz, **/base.tar.gz, **/pg_wal.tar.gz "
            "(2 of 5 expected present)") in result.summary
    assert "last good set 20261201_020000" in result.summary
    assert value(result, "members_missing") == 3 and value(result, "verified") == 0
    assert value(result, "last_success_timestamp_seconds") == pytest.approx(time.time() - 26 * HOUR, abs=60)


@pytest.mark.parametrize("member, reason", [
    ("wal_archive/base.tar.gz", "gzip stream truncated"),
    ("aicamera_backup.sql.gz", "gzip stream truncated"),
])
def test_backup_set_truncated_member_critical(nightly, tmp_path, member, reason):
    newest = place(tmp_path, nightly, "20261202_020000", age=2 * HOUR)
    path = newest / member
    truncate(path, path.stat().st_size // 2)
    result = run(make(tmp_path))
    assert result.status is Status.CRITICAL
    assert f"20261202_020000/{member}" in result.summary and reason in result.summary
    assert value(result, "members_failed") == 1 and value(result, "verified") == 0
    assert "no good set among the newest" in result.summary


def test_backup_set_dump_cut_before_its_trailer_critical(nightly, tmp_path):
    newest = place(tmp_path, nightly, "20261202_020000", age=2 * HOUR)
    dump = gzip.decompress((newest / "full_backup.sql.gz").read_bytes())
    (newest / "full_backup.sql.gz").write_bytes(gzip.compress(dump[: len(dump) * 2 // 3]))   # pg_dumpall died
    os.utime(newest / "full_backup.sql.gz", (time.time() - 2 * HOUR,) * 2)
    result = run(make(tmp_path))
    assert result.status is Status.CRITICAL
    assert "full_backup.sql.gz (gzip): pg_dumpall script incomplete" in result.summary


def test_backup_set_newest_being_written_previous_set_judged(nightly, tmp_path):
    place(tmp_path, nightly, "20261201_020000", age=24 * HOUR)
    writing = tmp_path / "20261202_020000"
    writing.mkdir()
    (writing / "full_backup.sql.gz").write_bytes((nightly / "full_backup.sql.gz").read_bytes())   # just now
    result = run(make(tmp_path))
    assert result.status is Status.OK, result.summary
    assert result.summary.startswith("set 20261201_020000 complete")
    assert "newest set 20261202_020000 in progress (a file modified" in result.summary
    old = time.time() - HOUR
    os.utime(writing / "full_backup.sql.gz", (old, old))
    still = run(make(tmp_path))                              # members missing, but 1 h old: within complete_within
    assert still.status is Status.OK
    assert "in progress (members missing, 1h old, within complete_within 6h)" in still.summary
    stuck = run(make(tmp_path, complete_within="30m"))       # the job should have finished by now
    assert stuck.status is Status.CRITICAL
    assert "set 20261202_020000 incomplete: missing aicamera_backup.sql.gz" in stuck.summary


def test_backup_set_older_than_26h_warns_by_threshold(nightly, tmp_path):
    place(tmp_path, nightly, "20261201_020000", age=30 * HOUR)
    check = make(tmp_path)
    result = run(check)
    assert result.status is Status.OK
    verdict = evaluate(check, result, WindowState(), time.time())
    assert verdict.status is Status.WARNING and "age_seconds" in verdict.summary


def test_backup_set_no_directory_critical(tmp_path):
    (tmp_path / "last_backup_timestamp").write_text("x")
    result = run(make(tmp_path))
    assert result.status is Status.CRITICAL and result.summary == f"no backup set directory matches {tmp_path}/*"


@pytest.mark.parametrize("options, message", [
    ({"path": "backups/*", "expect": ["a"]}, "must be an absolute path"),
    ({"path": "/backups/*", "expect": []}, "at least 1 item"),
    ({"path": "/backups/*", "expect": ["/etc/passwd"]}, "relative to the set directory"),
    ({"path": "/backups/*", "expect": ["../other/x"]}, "without '..'"),
])
def test_backup_set_options_invalid_rejected(options, message):
    with pytest.raises(ValidationError) as info:
        BackupSetCheck.Options.model_validate({"name": "n", "type": "backup_set", **options})
    assert message in str(info.value)


# --- the same set in S3 (s3_backup set: true) -------------------------------------------------------------------

def sync(bucket: Bucket, local_set: Path, prefix: str = "database/", **extra) -> None:
    """Upload every file of the set the way `aws s3 sync DIR s3://bucket/database/STAMP` lays it out."""
    for path in sorted(p for p in local_set.rglob("*") if p.is_file()):
        key = f"{prefix}{local_set.name}/{path.relative_to(local_set)}"
        bucket.put(key, path.read_bytes(), **extra)


def s3_set(bucket: Bucket, root: Path, **options) -> S3BackupCheck:
    return S3BackupCheck(S3BackupCheck.Options.model_validate(
        {"name": "nightly-s3", "type": "s3_backup", "endpoint_url": bucket.endpoint, "bucket": bucket.name,
         "prefix": "database/", "local_path": f"{root}/*", "set": True, "connect_timeout": "1s", **options}))


@pytest.fixture
def bucket(moto) -> Bucket:
    return Bucket(moto)


def test_s3_set_synced_with_crc64nvme_verified_member_by_member(nightly, tmp_path, bucket):
    newest = place(tmp_path, nightly, "20261202_020000", age=HOUR)
    sync(bucket, newest, ChecksumAlgorithm="CRC64NVME", ServerSideEncryption="aws:kms")
    check = s3_set(bucket, tmp_path)
    result = run(check)
    assert result.status is Status.OK, result.summary
    total = sum(1 for p in newest.rglob("*") if p.is_file())
    assert f"newest local set 20261202_020000: {total} members present, verified (CRC64NVME ×{total})" \
        in result.summary
    assert value(result, "verified") == 1 and value(result, "local_copy_present") == 1
    rows = result.details["set"]["members"]
    assert {r["key"] for r in rows} >= {"database/20261202_020000/full_backup.sql.gz",
                                        "database/20261202_020000/wal_archive/base.tar.gz"}
    assert all(r["integrity"]["method"] == "crc64nvme" and r["integrity"]["match"] for r in rows)
    assert_family_contract(check, [result])


def test_s3_set_member_missing_and_member_differing_critical_named(nightly, tmp_path, bucket):
    newest = place(tmp_path, nightly, "20261202_020000", age=HOUR)
    sync(bucket, newest, ChecksumAlgorithm="CRC32C", ServerSideEncryption="aws:kms")
    bucket.api.delete_object(Bucket=bucket.name, Key="database/20261202_020000/wal_archive/pg_wal.tar.gz")
    dump = newest / "aicamera_backup.sql.gz"
    data = bytearray(dump.read_bytes())
    data[len(data) // 2] ^= 0x01                                           # same size, one bit flipped locally
    dump.write_bytes(bytes(data))
    result = run(s3_set(bucket, tmp_path))
    assert result.status is Status.CRITICAL
    assert "members missing from the bucket: wal_archive/pg_wal.tar.gz" in result.summary
    assert "1 member differs: aicamera_backup.sql.gz (CRC32C differs)" in result.summary
    assert value(result, "verified") == 0 and value(result, "local_copy_present") == 0


def test_s3_set_multipart_member_without_checksum_size_only_not_verified(nightly, tmp_path, bucket):
    newest = place(tmp_path, nightly, "20261202_020000", age=HOUR)
    (newest / "wal_archive" / "base.tar.gz").unlink()
    (newest / "wal_archive" / "base.tar.gz").write_bytes(os.urandom(PART + 100))   # a big member: multipart
    sync(bucket, newest, ChecksumAlgorithm="SHA256")
    bucket.multipart("database/20261202_020000/wal_archive/base.tar.gz",
                     (newest / "wal_archive" / "base.tar.gz").read_bytes())       # re-uploaded without a checksum
    result = run(s3_set(bucket, tmp_path))
    assert result.status is Status.OK, result.summary
    assert "1 size only (wal_archive/base.tar.gz): multipart upload (2 parts) without an S3 checksum" \
        in result.summary
    assert value(result, "verified") == 0


def test_s3_set_newest_not_uploaded_within_upload_grace_ok(nightly, tmp_path, bucket):
    place(tmp_path, nightly, "20261202_020000", age=60)
    bucket.put("database/20261201_020000/full_backup.sql.gz", b"yesterday")
    result = run(s3_set(bucket, tmp_path, upload_grace="1h"))
    assert result.status is Status.OK, result.summary
    assert "not uploaded yet" in result.summary and value(result, "local_copy_present") == 0
    late = run(s3_set(bucket, tmp_path))
    assert late.status is Status.CRITICAL and "members missing from the bucket" in late.summary


def test_s3_set_needs_local_path():
    with pytest.raises(ValidationError) as info:
        S3BackupCheck.Options.model_validate({"name": "s", "type": "s3_backup", "bucket": "backups", "set": True})
    assert "set: true needs local_path" in str(info.value)
