"""backup_files and restore_test against dumps made by the real pg_dump/pg_dumpall of a real PostgreSQL 15.

The operator story (seed 002): every night a job leaves a dump on disk; the
agent tells whether the newest one is fresh, reads back to its end, matches its
checksum, is not suspiciously small, and whether the retention policy is kept —
each failure with a reason that says what is wrong. Once a month it restores the
newest dump into a scratch database, runs the sanity queries the runbook lists,
records how long the restore took (the RTO), and drops the scratch database —
also when the restore fails or times out — without ever touching another
database on that server.

One stand-alone server for the module (tests/fixtures/postgres.py `pg_single`):
`appdb` holds the known rows the dumps are made from, `otherdb` holds rows no test
may change; the restore runs as a CREATEDB role that logs in with a password.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import logging
import os
import sqlite3
import subprocess
import tarfile
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pytest
from pydantic import ValidationError

from agent.config import parse_config
from agent.evaluate import WindowState, evaluate
from agent.result import CheckResult, Status
from agent.units import format_size
from agent.yamlsrc import ConfigError
from checks.backup import (
    BackupFilesCheck, Keep, RestoreTestCheck, RetentionPolicy, ScriptGuard, ScriptRefused, ensure_scratch,
    retention_gaps, scratch_name,
)
from checks.base import CheckContext
from tests.conftest import wait_for
from tests.fixtures.postgres import BINDIR, RESTORE_USER, pg_single  # noqa: F401 (session fixture)
from tests.metrics_contract import assert_family_contract

psycopg = pytest.importorskip("psycopg")

HOUR, DAY = 3600.0, 86400.0
USERS, EVENTS, OTHER_ROWS = 50, 5000, 123
_SECRETS: set[str] = set()


# --- fixtures: a database with known rows and its dumps --------------------------------------------------------

@dataclass
class App:
    server: object
    password: str
    dsn_ref: str

    def scratch_databases(self) -> list[str]:
        rows = self.server.query(r"SELECT datname FROM pg_database WHERE datname LIKE 'maint\_restore%'")
        return [r[0] for r in rows]

    def counts(self) -> dict:
        out = {}
        for db, table in (("appdb", "users"), ("appdb", "events"), ("otherdb", "keep_me")):
            out[f"{db}.{table}"] = self.server.value(f"SELECT count(*) FROM {table}", dbname=db)
        out["databases"] = sorted(r[0] for r in self.server.query("SELECT datname FROM pg_database"))
        out["roles"] = sorted(r[0] for r in self.server.query("SELECT rolname FROM pg_roles"))
        return out


@pytest.fixture(scope="module")
def app(pg_single, tmp_path_factory) -> App:
    server = pg_single
    password = "pw-" + os.urandom(8).hex()
    server.query("CREATE ROLE app_owner")
    server.query(f"CREATE ROLE {RESTORE_USER} LOGIN CREATEDB PASSWORD '{password}'")
    server.query("CREATE DATABASE appdb OWNER app_owner")
    server.query("CREATE DATABASE otherdb")
    server.query(f"""
        SET ROLE app_owner;
        CREATE TABLE users (id serial PRIMARY KEY, name text NOT NULL, created_at timestamptz DEFAULT now());
        INSERT INTO users (name) SELECT 'user' || g FROM generate_series(1, {USERS}) g;
        CREATE TABLE events (id bigserial PRIMARY KEY, user_id int REFERENCES users, kind text,
                             created_at timestamptz NOT NULL);
        INSERT INTO events (user_id, kind, created_at)
            SELECT g % {USERS} + 1, md5(g::text), now() - (g || ' seconds')::interval
            FROM generate_series(1, {EVENTS}) g;""", dbname="appdb")
    server.query(f"CREATE TABLE keep_me AS SELECT g AS id FROM generate_series(1, {OTHER_ROWS}) g", dbname="otherdb")
    path = tmp_path_factory.mktemp("restore-dsn") / "restore.dsn"
    text = server.dsn(user=RESTORE_USER, password=password)
    path.write_text(text + "\n")
    _SECRETS.update({text, password})
    return App(server, password, "${file:" + str(path) + "}")


def _dump(server, *args: str) -> bytes:
    out = subprocess.run([str(BINDIR / args[0]), "-h", "127.0.0.1", "-p", str(server.port), "-U", "postgres",
                          *args[1:]], capture_output=True, timeout=60, check=True)
    return out.stdout


@pytest.fixture(scope="module")
def dumps(app) -> dict[str, bytes]:
    """The bytes of real dumps of appdb: plain SQL (with and without owners), gzip, custom, pg_dumpall."""
    s = app.server
    plain = _dump(s, "pg_dump", "--no-owner", "--no-privileges", "appdb")
    owned = _dump(s, "pg_dump", "appdb")
    return {
        "plain": plain,
        "plain.gz": gzip.compress(plain),
        "owned.gz": gzip.compress(owned),
        "users_only.gz": gzip.compress(_dump(s, "pg_dump", "--no-owner", "-t", "users", "appdb")),
        "custom": _dump(s, "pg_dump", "-Fc", "appdb"),
        "all.gz": gzip.compress(_dump(s, "pg_dumpall")),
    }


@pytest.fixture
def untouched(app):
    """After the test: no scratch database is left and no other database, table or role changed."""
    before = app.counts()
    yield
    assert app.scratch_databases() == []
    assert app.counts() == before


def place(folder: Path, name: str, data: bytes, age: float, now: float | None = None) -> Path:
    """Write a backup whose mtime is `age` seconds before `now`."""
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    moment = (now or time.time()) - age
    os.utime(path, (moment, moment))
    return path


def sidecar(path: Path, digest: str | None = None) -> None:
    digest = digest or hashlib.sha256(path.read_bytes()).hexdigest()
    (path.parent / (path.name + ".sha256")).write_text(f"{digest}  {path.name}\n")


def flipped(data: bytes, offset: int, length: int = 16) -> bytes:
    out = bytearray(data)
    for i in range(offset, offset + length):
        out[i] ^= 0xFF
    return bytes(out)


def files_check(path: str, **options) -> BackupFilesCheck:
    return BackupFilesCheck(BackupFilesCheck.Options.model_validate(
        {"name": "dumps", "type": "backup_files", "path": path, "settle": 0, **options}))


def restore_check(app: App, path: str, **options) -> RestoreTestCheck:
    return RestoreTestCheck(RestoreTestCheck.Options.model_validate(
        {"name": "drill", "type": "restore_test", "dsn": app.dsn_ref, "path": path, "settle": 0,
         "pg_bin_dir": str(BINDIR), **options}))


def run(check, timeout: float = 30.0, **ctx) -> CheckResult:
    """Run the check; fail when a secret (password, DSN text) appears anywhere in the result."""
    result = check.run(CheckContext(timeout=timeout, **ctx))
    shown = result.summary + json.dumps(result.details, default=str) + repr(result.samples)
    for secret in _SECRETS:
        assert secret not in shown, "a secret leaked into the result"
    json.dumps(result.details, default=str, allow_nan=False)     # what the store does with the evidence
    return result


def value(result: CheckResult, name: str) -> float | None:
    return next((s.value for s in result.samples if s.name == name), None)


def verdict(check, result: CheckResult, now: float | None = None) -> tuple[Status, str]:
    v = evaluate(check, result, WindowState(), now or time.time())
    return v.status, v.summary


# --- backup_files: integrity -------------------------------------------------------------------------------

def test_backup_files_nightly_gzip_dumps_ok_with_evidence(tmp_path, dumps):
    for days in (2, 1):
        place(tmp_path, f"2026010{3 - days}/full_backup.sql.gz", dumps["plain.gz"], days * DAY + HOUR)
    newest = place(tmp_path, "20260103/full_backup.sql.gz", dumps["plain.gz"], HOUR)
    sidecar(newest)
    check = files_check(str(tmp_path / "*/full_backup.sql.gz"))
    result = run(check)
    assert verdict(check, result)[0] is Status.OK, result.summary
    assert result.summary.startswith("newest 20260103/full_backup.sql.gz 1h ago"), result.summary
    assert "verified (gzip, sha256 matches)" in result.summary
    evidence = result.details["newest"]
    assert evidence["path"] == str(newest)
    assert evidence["sha256"] == hashlib.sha256(dumps["plain.gz"]).hexdigest()
    assert evidence["checksum"] == "match" and evidence["integrity"] == "ok" and evidence["verified"] is True
    assert evidence["content_bytes"] == len(dumps["plain"]) and evidence["size_bytes"] == len(dumps["plain.gz"])
    assert [f["path"] for f in result.details["files"]][0] == str(newest) and len(result.details["files"]) == 3
    assert value(result, "verified") == 1 and value(result, "files") == 3
    assert value(result, "last_success_timestamp_seconds") == pytest.approx(newest.stat().st_mtime)
    assert value(result, "age_seconds") == pytest.approx(HOUR, abs=5)
    assert value(result, "shrink_ratio") == 0


def test_backup_files_custom_and_pg_dumpall_dumps_ok(tmp_path, dumps):
    place(tmp_path, "app.dump", dumps["custom"], HOUR)
    result = run(files_check(str(tmp_path / "*.dump"), pg_bin_dir=str(BINDIR)))
    assert result.status is Status.OK, result.summary
    assert result.details["newest"]["format"] == "pg_custom" and result.details["newest"]["entries"] > 5
    place(tmp_path, "all.sql.gz", dumps["all.gz"], HOUR)
    result = run(files_check(str(tmp_path / "all.sql.gz")))
    assert result.status is Status.OK, result.summary


def test_backup_files_truncated_gzip_critical_names_last_good_backup(tmp_path, dumps):
    good = place(tmp_path, "a/full_backup.sql.gz", dumps["plain.gz"], DAY)
    data = dumps["plain.gz"]
    place(tmp_path, "b/full_backup.sql.gz", data[: len(data) // 2], HOUR)
    result = run(files_check(str(tmp_path / "*/full_backup.sql.gz")))
    assert result.status is Status.CRITICAL
    cut = format_size(len(data) // 2)
    assert result.summary.startswith(f"newest backup b/full_backup.sql.gz 1h ago, {cut} (gzip): gzip stream "
                                     f"truncated: the file ends after {cut} ({len(data) // 2} bytes) without the "
                                     f"end-of-stream marker"), result.summary
    assert "last good backup a/full_backup.sql.gz from 1d ago" in result.summary
    assert value(result, "verified") == 0
    assert value(result, "last_success_timestamp_seconds") == pytest.approx(good.stat().st_mtime)


def test_backup_files_valid_gzip_of_dump_cut_short_critical(tmp_path, dumps):
    place(tmp_path, "x.sql.gz", gzip.compress(dumps["plain"][: len(dumps["plain"]) // 2]), HOUR)
    result = run(files_check(str(tmp_path / "*.sql.gz")))
    assert result.status is Status.CRITICAL
    assert "pg_dump script incomplete: no '-- PostgreSQL database dump complete' at its end" in result.summary
    assert value(result, "last_success_timestamp_seconds") == 0


def test_backup_files_corrupt_gzip_data_critical(tmp_path, dumps):
    place(tmp_path, "x.sql.gz", flipped(dumps["plain.gz"], len(dumps["plain.gz"]) // 2), HOUR)
    result = run(files_check(str(tmp_path / "*.sql.gz")))
    assert result.status is Status.CRITICAL
    assert "gzip data corrupt: Error -3 while decompressing data: " in result.summary, result.summary


def test_backup_files_zero_byte_newest_critical(tmp_path, dumps):
    place(tmp_path, "a.dump", dumps["custom"], DAY)
    place(tmp_path, "b.dump", b"", HOUR)
    result = run(files_check(str(tmp_path / "*.dump")))
    assert result.status is Status.CRITICAL
    assert result.summary.startswith("newest backup b.dump 1h ago, 0B (plain): empty file (0 bytes) — last good "
                                     "backup a.dump from 1d ago"), result.summary
    assert value(result, "size_bytes") == 0 and value(result, "verified") == 0


def test_backup_files_below_min_size_critical(tmp_path, dumps):
    place(tmp_path, "a.dump", dumps["custom"], HOUR)
    result = run(files_check(str(tmp_path / "*.dump"), min_size="1MiB"))
    assert result.status is Status.CRITICAL and "below min_size 1.0MiB" in result.summary


def test_backup_files_custom_dump_header_corrupted_critical(tmp_path, dumps):
    place(tmp_path, "a.dump", flipped(dumps["custom"], 10), HOUR)
    result = run(files_check(str(tmp_path / "*.dump")))
    assert result.status is Status.CRITICAL
    assert "pg_restore --list failed: pg_restore: error:" in result.summary, result.summary


def test_backup_files_custom_dump_data_corrupted_critical_though_toc_lists(tmp_path, dumps):
    """pg_restore --list reads only the table of contents; the full read finds the broken data block."""
    data = flipped(dumps["custom"], len(dumps["custom"]) - 100)
    path = place(tmp_path, "a.dump", data, HOUR)
    listed = subprocess.run([str(BINDIR / "pg_restore"), "--list", str(path)], capture_output=True)
    assert listed.returncode == 0
    result = run(files_check(str(tmp_path / "*.dump")))
    assert result.status is Status.CRITICAL
    assert "pg_restore (reading every data block) failed: pg_restore: error: could not uncompress data" \
        in result.summary, result.summary


def test_backup_files_sidecar_mismatch_critical(tmp_path, dumps):
    path = place(tmp_path, "a.sql.gz", dumps["plain.gz"], HOUR)
    sidecar(path, "0" * 64)
    result = run(files_check(str(tmp_path / "*.sql.gz")))
    assert result.status is Status.CRITICAL
    assert "sha256 mismatch: file " in result.summary and "a.sql.gz.sha256 0000000000000000…" in result.summary
    assert result.details["newest"]["checksum"] == "mismatch"


def test_backup_files_missing_sidecar_with_require_checksum_warns(tmp_path, dumps):
    place(tmp_path, "a.sql.gz", dumps["plain.gz"], HOUR)
    assert run(files_check(str(tmp_path / "*.sql.gz"))).status is Status.OK
    result = run(files_check(str(tmp_path / "*.sql.gz"), require_checksum=True))
    assert result.status is Status.WARNING
    assert result.summary.startswith("a.sql.gz: no .sha256 sidecar (require_checksum)"), result.summary
    assert value(result, "verified") == 1


def test_backup_files_tar_archive_ok_truncated_tar_critical(tmp_path, dumps):
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for name in ("plain", "custom"):
            info = tarfile.TarInfo(name)
            info.size = len(dumps[name])
            archive.addfile(info, io.BytesIO(dumps[name]))
    data = buffer.getvalue()
    place(tmp_path, "ok/wal_archive.tar.gz", gzip.compress(data), HOUR)
    result = run(files_check(str(tmp_path / "ok/*.tar.gz")))
    assert result.status is Status.OK, result.summary
    assert result.details["newest"]["format"] == "tar" and result.details["newest"]["entries"] == 2
    cut = 512 + len(dumps["plain"]) + (-len(dumps["plain"]) % 512)       # right after the first member
    place(tmp_path, "cut/wal_archive.tar", data[:cut], HOUR)
    result = run(files_check(str(tmp_path / "cut/*.tar")))
    assert result.status is Status.CRITICAL and "tar archive truncated" in result.summary, result.summary


def test_backup_files_nothing_matches_critical(tmp_path):
    result = run(files_check(str(tmp_path / "*.dump")))
    assert result.status is Status.CRITICAL and result.summary == f"no backup matches {tmp_path}/*.dump"
    assert value(result, "files") == 0 and value(result, "last_success_timestamp_seconds") == 0


def test_backup_files_huge_file_stops_at_deadline_unknown(tmp_path):
    """Reading checks the run's deadline between chunks (the clock here advances 1 s per look)."""
    place(tmp_path, "big.sql.gz", gzip.compress(os.urandom(6 * 1024 * 1024), compresslevel=1), HOUR)
    ticks = iter(range(10**6))
    began = time.monotonic()
    result = run(files_check(str(tmp_path / "*.sql.gz")), timeout=4, monotonic=lambda: float(next(ticks)))
    assert time.monotonic() - began < 5
    assert result.status is Status.UNKNOWN
    assert result.summary.startswith("verification of big.sql.gz timed out after 4s (read "), result.summary
    assert "raise the check's timeout" in result.summary


def test_backup_files_dump_still_being_written_ignored(tmp_path, dumps):
    place(tmp_path, "a.sql.gz", dumps["plain.gz"], DAY)
    place(tmp_path, "b.sql.gz", dumps["plain.gz"][:100], 5)          # pg_dump | gzip still writing
    result = run(files_check(str(tmp_path / "*.sql.gz"), settle="2m"))
    assert result.status is Status.OK, result.summary
    assert value(result, "files") == 1 and result.details["newest"]["path"].endswith("a.sql.gz")
    assert [f["path"] for f in result.details["still_being_written"]] == [str(tmp_path / "b.sql.gz")]


def test_backup_files_unchanged_newest_not_read_again_until_rewritten(tmp_path, dumps):
    place(tmp_path, "a.sql.gz", dumps["plain.gz"], HOUR)
    check = files_check(str(tmp_path / "*.sql.gz"))
    assert "cached" not in run(check).details["newest"]
    assert run(check).details["newest"]["cached"] is True
    place(tmp_path, "a.sql.gz", dumps["plain.gz"][:-10], HOUR - 1)
    result = run(check)
    assert result.status is Status.CRITICAL and "cached" not in result.details["newest"]


# --- backup_files: freshness, shrinkage, retention -----------------------------------------------------------

def test_backup_files_stale_newest_critical(tmp_path, dumps):
    path = place(tmp_path, "a.sql.gz", dumps["plain.gz"], 0)
    stale = time.time() - 3 * DAY
    os.utime(path, (stale, stale))
    check = files_check(str(tmp_path / "*.sql.gz"))
    result = run(check)
    assert result.status is Status.OK                       # the file itself is fine…
    status, summary = verdict(check, result)
    assert status is Status.CRITICAL                        # …but three days old (default critical 48h)
    assert summary.startswith("age_seconds 3d > 2d — newest a.sql.gz 3d ago"), summary
    place(tmp_path, "a.sql.gz", dumps["plain.gz"], 27 * HOUR)
    assert verdict(check, run(check))[0] is Status.WARNING  # default warning 26h


def test_backup_files_newest_much_smaller_than_previous_warns(tmp_path, dumps):
    place(tmp_path, "a.sql.gz", dumps["plain.gz"], DAY)
    place(tmp_path, "b.sql.gz", dumps["users_only.gz"], HOUR)
    result = run(files_check(str(tmp_path / "*.sql.gz")))
    assert result.status is Status.WARNING
    ratio = 1 - len(dumps["users_only.gz"]) / len(dumps["plain.gz"])
    assert value(result, "shrink_ratio") == pytest.approx(ratio) and ratio > 0.6
    assert result.summary.startswith(f"newest is {ratio:.0%} smaller than the previous"), result.summary
    assert value(result, "verified") == 1
    assert run(files_check(str(tmp_path / "*.sql.gz"), max_shrink=None)).status is Status.OK


NOON = datetime(2026, 3, 18, 12, 0).timestamp()     # a Wednesday, local time


def test_backup_files_retention_kept_ok_then_gap_and_expired_warn(tmp_path, dumps):
    for day in range(8):
        place(tmp_path, f"d{day}.sql.gz", dumps["users_only.gz"], day * DAY + HOUR, now=NOON)
    policy = {"max_age": "30d", "keep": {"daily": 7}}
    check = files_check(str(tmp_path / "*.sql.gz"), retention=policy)
    result = run(check, wall=lambda: NOON)
    assert result.status is Status.OK, result.summary
    assert value(result, "retention_missing_periods") == 0 and value(result, "expired_files") == 0
    assert result.details["retention"]["keep"]["daily"] == {"needed": 7, "kept": 7, "missing": []}
    os.unlink(tmp_path / "d3.sql.gz")
    place(tmp_path, "old.sql.gz", dumps["users_only.gz"], 40 * DAY, now=NOON)
    result = run(check, wall=lambda: NOON)
    assert result.status is Status.WARNING
    assert value(result, "retention_missing_periods") == 1 and value(result, "expired_files") == 1
    assert "1 backup older than 30d still kept (oldest 40d)" in result.summary, result.summary
    assert "retention: only 6/7 daily periods hold a backup (e.g. none for 2026-03-15)" in result.summary


def test_retention_gaps_current_period_counts_only_once_it_has_a_backup():
    keep = Keep(daily=3)
    yesterday_on = [NOON - DAY * d for d in (1, 2, 3)]
    assert retention_gaps(yesterday_on, NOON, keep)["daily"]["missing"] == []          # tonight's not due yet
    assert retention_gaps([NOON - HOUR, NOON - DAY], NOON, keep)["daily"]["missing"] == ["2026-03-16"]


def test_retention_gaps_weekly_and_monthly_need_distinct_periods():
    times = [NOON - DAY * d for d in range(0, 40)]          # 40 daily backups: 6 ISO weeks, 2 months
    gaps = retention_gaps(times, NOON, Keep(weekly=4, monthly=3))
    assert gaps["weekly"] == {"needed": 4, "kept": 4, "missing": []}
    assert gaps["monthly"] == {"needed": 3, "kept": 2, "missing": ["2026-01"]}


def test_retention_policy_contradicting_rules_rejected():
    with pytest.raises(ValidationError, match=r"max_age \(30d\) is shorter than what keep needs"):
        RetentionPolicy.model_validate({"max_age": "30d", "keep": {"monthly": 12}})
    with pytest.raises(ValidationError, match="give max_age, keep or both"):
        RetentionPolicy.model_validate({})


def test_backup_files_metrics_follow_contract(tmp_path, dumps):
    place(tmp_path, "a.sql.gz", dumps["plain.gz"], DAY)
    place(tmp_path, "b.sql.gz", dumps["plain.gz"], HOUR)
    check = files_check(str(tmp_path / "*.sql.gz"), retention={"max_age": "30d", "keep": {"daily": 2}})
    missing = files_check(str(tmp_path / "*.none"))
    assert_family_contract(check, [run(check), run(missing)])


# --- restore_test: end to end --------------------------------------------------------------------------------

SANITY = [
    {"name": "users", "query": "SELECT count(*) FROM users", "min": 1},
    {"name": "events fresh", "query": "SELECT extract(epoch FROM now() - max(created_at)) FROM events",
     "max": 93600},
    {"query": "SELECT count(DISTINCT user_id) FROM events", "equals": USERS},
]


def test_restore_test_plain_gzip_dump_restores_and_sanity_passes(app, dumps, tmp_path, untouched):
    source = place(tmp_path, "20260103/appdb.sql.gz", dumps["plain.gz"], HOUR)
    sidecar(source)
    check = restore_check(app, str(tmp_path / "*/appdb.sql.gz"), sanity=SANITY)
    result = run(check)
    assert result.status is Status.OK, result.summary
    assert verdict(check, result)[0] is Status.OK
    assert result.summary.startswith("restored 20260103/appdb.sql.gz ("), result.summary
    assert ": 2 tables, " in result.summary and "3/3 sanity queries passed; scratch database dropped" in result.summary
    d = result.details
    assert d["file"]["path"] == str(source) and d["format"] == "plain" and d["tool"] == "psql"
    assert d["sha256"] == hashlib.sha256(dumps["plain.gz"]).hexdigest() and d["checksum"] == "match"
    assert d["sql_bytes"] == len(dumps["plain"]) and d["scratch_dropped"] is True
    assert d["scratch_database"].startswith("maint_restore_")
    assert [(q["name"], q["value"], q["ok"]) for q in d["sanity"]] == [
        ("users", USERS, True), ("events fresh", d["sanity"][1]["value"], True),
        ("SELECT count(DISTINCT user_id) FROM events", USERS, True)]
    assert d["sanity"][0]["expect"] == "≥ 1" and d["sanity"][1]["value"] < 93600
    assert value(result, "restore_duration_seconds") > 0 and value(result, "restore_passed") == 1
    assert value(result, "restore_tables") == 2 and value(result, "restore_sanity_failed") == 0
    assert value(result, "restore_database_size_bytes") > 1_000_000
    assert value(result, "restore_last_success_timestamp_seconds") == pytest.approx(time.time(), abs=30)
    status, summary = verdict(restore_check(app, str(source), critical="1ms"), result)    # an RTO target missed
    assert status is Status.CRITICAL and summary.startswith("restore_duration_seconds "), summary


def test_restore_test_custom_dump_restores_with_parallel_pg_restore(app, dumps, tmp_path, untouched):
    place(tmp_path, "appdb.dump", dumps["custom"], HOUR)
    result = run(restore_check(app, str(tmp_path / "*.dump"), sanity=SANITY[:1], jobs=2))
    assert result.status is Status.OK, result.summary
    assert result.details["tool"] == "pg_restore" and result.details["tables"] == 2
    assert result.details["sanity"][0]["value"] == USERS


def test_restore_test_corrupt_custom_dump_critical_scratch_dropped(app, dumps, tmp_path, untouched):
    place(tmp_path, "appdb.dump", flipped(dumps["custom"], len(dumps["custom"]) - 100), HOUR)
    result = run(restore_check(app, str(tmp_path / "*.dump"), sanity=SANITY))
    assert result.status is Status.CRITICAL
    # usually "could not uncompress data"; garbage decoded before zlib notices may fail the COPY first
    assert result.summary.startswith("restore of appdb.dump failed: pg_restore: error: "), result.summary
    assert result.summary.endswith("; scratch database dropped")
    assert value(result, "restore_passed") == 0 and value(result, "restore_duration_seconds") is None
    assert value(result, "restore_last_success_timestamp_seconds") == 0


def test_restore_test_truncated_gzip_dump_critical_scratch_dropped(app, dumps, tmp_path, untouched):
    place(tmp_path, "appdb.sql.gz", dumps["plain.gz"][:-200], HOUR)
    result = run(restore_check(app, str(tmp_path / "*.sql.gz")))
    assert result.status is Status.CRITICAL
    assert result.summary.startswith("appdb.sql.gz: gzip stream truncated"), result.summary
    assert result.details["scratch_dropped"] is True


def test_restore_test_sanity_expectation_missed_critical_scratch_dropped(app, dumps, tmp_path, untouched):
    place(tmp_path, "appdb.sql.gz", dumps["plain.gz"], HOUR)
    sanity = [{"name": "users", "query": "SELECT count(*) FROM users", "min": 1000},
              {"name": "cameras", "query": "SELECT count(*) FROM camera_streams", "min": 1},
              {"name": "slow", "query": "SELECT pg_sleep(3)", "timeout": "300ms"},
              {"name": "events", "query": "SELECT count(*) FROM events", "equals": EVENTS}]
    check = restore_check(app, str(tmp_path / "*.sql.gz"), sanity=sanity)
    result = run(check)
    assert result.status is Status.CRITICAL
    assert result.summary.startswith(
        "sanity failed (3/4): users: returned 50, expected ≥ 1000; cameras: error: relation \"camera_streams\" "
        "does not exist"), result.summary
    assert "slow: cancelled after 300ms (its timeout)" in result.summary
    assert [q["ok"] for q in result.details["sanity"]] == [False, False, False, True]
    assert value(result, "restore_sanity_failed") == 3 and value(result, "restore_passed") == 0
    assert value(result, "restore_duration_seconds") > 0      # the restore itself worked and was timed
    assert_family_contract(check, [result])


def test_restore_test_timeout_during_restore_kills_psql_drops_scratch_unknown(app, dumps, tmp_path, untouched):
    trailer = b"--\n-- PostgreSQL database dump complete\n"
    slow = dumps["plain"].replace(trailer, b"SELECT pg_sleep(60);\n\n" + trailer)
    place(tmp_path, "appdb.sql.gz", gzip.compress(slow), HOUR)
    lines: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: lines.append(record.getMessage())
    logger = logging.getLogger("maint-agent")
    old_level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        began = time.monotonic()
        result = run(restore_check(app, str(tmp_path / "*.sql.gz"), progress_every="500ms"), timeout=4)
        elapsed = time.monotonic() - began
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
    assert result.status is Status.UNKNOWN
    assert result.summary.startswith("restore timed out after 4s (the check's timeout; set it above the expected "
                                     "restore time); psql killed; scratch database dropped"), result.summary
    assert 3 <= elapsed < 6
    progress = [line for line in lines if "event=restore_test.progress" in line]
    assert len(progress) >= 3 and "check=drill" in progress[0] and "sql_bytes=" in progress[0]
    assert any("event=restore_test.finished" in line and "status=unknown" in line for line in lines)


def test_restore_test_sanity_query_past_deadline_unknown_scratch_dropped(app, dumps, tmp_path, untouched):
    place(tmp_path, "appdb.sql.gz", dumps["plain.gz"], HOUR)
    sanity = [{"name": "sleeper", "query": "SELECT pg_sleep(10)", "timeout": "30s"}]
    began = time.monotonic()
    result = run(restore_check(app, str(tmp_path / "*.sql.gz"), sanity=sanity), timeout=4)
    assert time.monotonic() - began < 6
    assert result.status is Status.UNKNOWN
    assert result.summary.startswith("timed out after 4s in sanity query 'sleeper'"), result.summary


def test_restore_test_pg_dumpall_file_refused_nothing_created(app, dumps, tmp_path, untouched):
    place(tmp_path, "full_backup.sql.gz", dumps["all.gz"], HOUR)
    result = run(restore_check(app, str(tmp_path / "*.sql.gz")))
    assert result.status is Status.UNKNOWN
    assert "is a pg_dumpall cluster dump: it would create roles and connect to other databases" in result.summary
    assert result.details["scratch_dropped"] == "never created"


@pytest.mark.parametrize("command", [b"\\connect otherdb", b"\\! touch /tmp/maint-restore-shell-ran"])
def test_restore_test_psql_meta_command_in_script_refused(app, dumps, tmp_path, untouched, command):
    marker = b"SET statement_timeout = 0;\n"
    script = dumps["plain"].replace(marker, marker + command + b"\nCREATE TABLE escaped (id int);\n", 1)
    place(tmp_path, "appdb.sql.gz", gzip.compress(script), HOUR)
    result = run(restore_check(app, str(tmp_path / "*.sql.gz")))
    assert result.status is Status.UNKNOWN
    assert f"the script contains the psql command '{command.decode()}'" in result.summary, result.summary
    assert not os.path.exists("/tmp/maint-restore-shell-ran")


def test_restore_test_owned_plain_dump_as_createdb_role_fails_with_hint(app, dumps, tmp_path, untouched):
    place(tmp_path, "appdb.sql.gz", dumps["owned.gz"], HOUR)
    result = run(restore_check(app, str(tmp_path / "*.sql.gz")))
    assert result.status is Status.CRITICAL
    assert "use a superuser DSN or dump with --no-owner --no-privileges" in result.summary, result.summary


def test_restore_test_wrong_password_unknown_without_showing_it(app, dumps, tmp_path, untouched):
    place(tmp_path, "appdb.dump", dumps["custom"], HOUR)
    dsn = app.server.dsn(user=RESTORE_USER, password="not-the-password")
    _SECRETS.add(dsn)
    check = RestoreTestCheck(RestoreTestCheck.Options.model_validate(
        {"name": "drill", "type": "restore_test", "dsn": dsn, "path": str(tmp_path / "*.dump"), "settle": 0}))
    result = run(check)
    assert result.status is Status.UNKNOWN
    assert result.summary.startswith("cannot connect to the restore server:") and "password" in result.summary
    assert "not-the-password" not in result.summary


def test_restore_test_dsn_naming_a_scratch_database_refused(app, tmp_path):
    check = RestoreTestCheck(RestoreTestCheck.Options.model_validate(
        {"name": "drill", "type": "restore_test", "dsn": app.server.dsn(dbname="maint_restore_x"),
         "path": str(tmp_path / "*.dump")}))
    result = run(check)
    assert result.status is Status.UNKNOWN and result.summary.startswith("refusing to run: the DSN's database")


def test_restore_test_no_backup_critical(app, tmp_path):
    result = run(restore_check(app, str(tmp_path / "*.dump")))
    assert result.status is Status.CRITICAL and result.summary == f"no backup matches {tmp_path}/*.dump"


def test_ensure_scratch_refuses_any_other_name():
    name = scratch_name(time.time())
    assert ensure_scratch(name) == name
    for other in ("appdb", "postgres", "maint_restore_", "maint_restore_x", name + "x", f"{name}; DROP"):
        with pytest.raises(RuntimeError, match="refusing to drop"):
            ensure_scratch(other)


def test_script_guard_allows_copy_data_and_restrict_refuses_connect():
    guard = ScriptGuard()
    script = (b"\\restrict abc\nSET x = 1;\nCOPY public.t (a) FROM stdin;\n\\N\n\\\\connect\n\\.\n"
              b"\\unrestrict abc\n")
    for i in range(0, len(script), 7):                  # lines split across chunks
        guard.feed(script[i:i + 7])
    guard.finish()
    with pytest.raises(ScriptRefused):
        guard.feed(b"SELECT 1;\n\\c other")
        guard.finish()


# --- in the running agent ------------------------------------------------------------------------------------

def test_backup_checks_in_running_agent_evidence_stored_and_exported(app, dumps, tmp_path, agent_factory, untouched):
    place(tmp_path, "dumps/a.sql.gz", dumps["plain.gz"], DAY)
    newest = place(tmp_path, "dumps/b.sql.gz", dumps["plain.gz"], HOUR)
    sidecar(newest)
    agent = agent_factory(f"""
agent:
  state_dir: {{state}}
http:
  listen: 127.0.0.1:{{port}}
checks:
  - {{name: dumps, type: backup_files, every: 500ms, path: "{tmp_path}/dumps/*.sql.gz", require_checksum: true}}
  - name: drill
    type: restore_test
    every: 1h
    dsn: "{app.dsn_ref}"
    path: "{tmp_path}/dumps/*.sql.gz"
    sanity: [{{name: users, query: "SELECT count(*) FROM users", min: 1}}]
""").start()
    wanted = ['maint_backup_verified{check="dumps"} 1.0', 'maint_check_status{check="dumps",severity="P2",type="backup_files"} 0.0',
              'maint_backup_restore_passed{check="drill"} 1.0',
              'maint_check_status{check="drill",severity="P2",type="restore_test"} 0.0']
    wait_for(lambda: all(w in agent.metrics() for w in wanted), 30, what="both backup checks passing in /metrics")
    agent.stop()
    with sqlite3.connect(agent.config.parent / "var" / "maint-agent.db") as db:
        rows = db.execute("SELECT c.name, r.details FROM check_runs r JOIN checks c ON c.id = r.check_id").fetchall()
    evidence = {name: json.loads(details) for name, details in rows}
    assert evidence["dumps"]["newest"]["sha256"] == hashlib.sha256(dumps["plain.gz"]).hexdigest()
    assert evidence["drill"]["sanity"][0]["value"] == USERS and evidence["drill"]["scratch_dropped"] is True
    stored = b"".join(f.read_bytes() for f in (agent.config.parent / "var").rglob("*") if f.is_file())
    for secret in _SECRETS:
        assert secret.encode() not in stored + agent.log.read_bytes(), "a secret reached the store or the log"


# --- options -------------------------------------------------------------------------------------------------

def test_backup_options_load_from_yaml_with_type_defaults():
    loaded = parse_config("""
checks:
  - name: dumps
    type: backup_files
    path: /backups/database/*/full_backup.sql.gz
    retention: {max_age: 400d, keep: {daily: 7, weekly: 4, monthly: 12}}
  - name: drill
    type: restore_test
    dsn: "host=127.0.0.1 dbname=postgres"
    path: /backups/database/*/appdb.dump
    sanity:
      - {query: "SELECT count(*) FROM users", min: 1}
""", "agent.yaml")
    dumps_check, drill = loaded.checks
    assert (dumps_check.warning, dumps_check.critical) == (26 * HOUR, 48 * HOUR)
    assert (drill.warning, drill.critical, drill.schedule) == (None, 4 * HOUR, "monthly")
    assert loaded.timeout_for(drill) == 6 * HOUR
    assert loaded.triggers["drill"].name == "monthly"


def test_backup_options_bad_values_reported_at_their_yaml_line():
    text = """
checks:
  - name: dumps
    type: backup_files
    path: backups/*.dump
  - name: drill
    type: restore_test
    dsn: "host=127.0.0.1"
    path: /backups/*.dump
    sanity:
      - {query: "SELECT 1", min: 5, max: 1}
"""
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "agent.yaml")
    found = {(i.line, i.path) for i in caught.value.issues}
    assert found == {(5, "checks[0].path"), (11, "checks[1].sanity[0]")}, caught.value.issues
