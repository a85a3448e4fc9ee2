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
import re
import shutil
import sqlite3
import subprocess
import tarfile
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pytest
from pydantic import ValidationError

from agent.config.load import parse_config
from agent.evaluate import WindowState, evaluate
from agent.plugin.result import CheckResult, Status
from agent.plugin.units import format_size
from agent.config.yamlsrc import ConfigError
from checks.backup import BackupFilesCheck, Keep, RetentionPolicy, retention_gaps
from checks.restore_test import RestoreTestCheck, ensure_scratch, scratch_name
from checks.base import CheckContext
from tests.conftest import wait_for
from tests.fixtures.postgres import BINDIR, RESTORE_USER, pg_single  # noqa: F401 (session fixture)
from tests.metrics_contract import assert_family_contract

psycopg = pytest.importorskip("psycopg")

HOUR, DAY = 3600.0, 86400.0
PRIVILEGED_USER = "maint_restore_ops"
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
        """What no restore test may change: row counts, tables, databases, roles and the server's settings."""
        out = {}
        for db, tables in (("postgres", ()), ("appdb", ("users", "events")), ("otherdb", ("keep_me",))):
            with self.server.connect(db) as conn:
                for table in tables:
                    out[f"{db}.{table}"] = conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
                out[f"{db} tables"] = sorted(r[0] for r in conn.execute(
                    "SELECT relname FROM pg_class WHERE relnamespace = 'public'::regnamespace"))
                if db == "postgres":
                    out["databases"] = sorted(r[0] for r in conn.execute("SELECT datname FROM pg_database"))
                    out["roles"] = sorted(conn.execute("SELECT rolname, rolsuper, rolcreaterole, rolcreatedb "
                                                       "FROM pg_roles").fetchall())
                    out["members"] = sorted(conn.execute("SELECT roleid, member FROM pg_auth_members").fetchall())
                    out["settings"] = conn.execute("SELECT name, setting FROM pg_file_settings "
                                                   "ORDER BY name, seqno").fetchall()
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
    # a role that can run programs on the database host through a role it belongs to
    server.query(f"CREATE ROLE maint_ops IN ROLE pg_execute_server_program")
    server.query(f"CREATE ROLE {PRIVILEGED_USER} LOGIN CREATEDB IN ROLE maint_ops")
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
def marks():
    """A directory where an attack would leave its mark: writable by the agent and by the server's OS user."""
    folder = Path(tempfile.mkdtemp(prefix="maint-restore-marks-", dir="/tmp"))
    folder.chmod(0o777)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


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
    assert d["file"]["path"] == str(source) and d["format"] == "plain" and d["tool"] == "psycopg"
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


def test_restore_test_custom_dump_restores_through_pg_restore_sql(app, dumps, tmp_path, untouched):
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


def test_restore_test_timeout_during_restore_cancels_load_drops_scratch_unknown(app, dumps, tmp_path, untouched):
    trailer = b"--\n-- PostgreSQL database dump complete\n"
    slow = dumps["plain"].replace(trailer, b"CREATE MATERIALIZED VIEW public.slow AS SELECT 1 AS one FROM pg_sleep(60);\n\n" + trailer)
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
                                     "restore time); load cancelled; scratch database dropped"), result.summary
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


# each attack goes in after pg_dump's `SET statement_timeout = 0;`, followed by a table that must never appear
ATTACKS = {
    "shell after SQL on one line": (b"SELECT 1; \\! touch {mark}", 0, "SELECT other than pg_dump's"),
    "shell after an allowed SET on one line": (b"SET client_min_messages = warning; \\! touch {mark}", 0,
                                               "psql meta-command after other text on its line"),
    "shell after leading spaces": (b"  \\! touch {mark}", 0, "psql meta-command (a dump is data"),
    "shell inside a statement": (b"CREATE TABLE public.t (a int\n\\! touch {mark}\n);", 1,
                                 "psql meta-command inside a statement"),
    "shell after a literal with an embedded quote": (b"SET application_name = 'it''s; \\! no'; \\! touch {mark}", 0,
                                                     "psql meta-command after other text on its line"),
    "shell after an escape string": (b"SET application_name = E'it\\'s \\\\! no'; \\! touch {mark}", 0,
                                     "psql meta-command after other text on its line"),
    "connect to the real database": (b"\\c otherdb", 0, "\\connect to database 'otherdb'"),
    "lift psql's restricted mode, then shell": (b"\\unrestrict KEY\n\\! touch {mark}", 1, "psql meta-command"),
    "connect after leading spaces": (b"   \\connect otherdb", 0, "\\connect to database 'otherdb'"),
    "output to a file": (b"\\o {mark}", 0, "psql meta-command"),
    "client-side copy to a file": (b"\\copy (SELECT 1) TO '{mark}'", 0, "psql meta-command"),
    "copy to a program": (b"COPY public.escaped TO PROGRAM 'touch {mark}';", 0, "COPY other than COPY table FROM"),
    "copy from a program": (b"COPY public.escaped FROM PROGRAM 'touch {mark}';", 0, "COPY other than COPY table"),
    "create a role": (b"CREATE ROLE evil LOGIN;", 0, "CREATE ROLE reaches outside the scratch database"),
    "drop the real database": (b"DROP DATABASE otherdb;", 0, "DROP DATABASE reaches outside the scratch database"),
    "grant role membership": (b"GRANT pg_execute_server_program TO maint_restore;", 0, "of role membership"),
    "alter the server's configuration": (b"ALTER SYSTEM SET work_mem = '1GB';", 0, "ALTER SYSTEM changes"),
    "native code": (b"CREATE FUNCTION public.sh(cstring) RETURNS int AS 'libc.so.6', 'system' LANGUAGE c;", 0,
                    "FUNCTION in language c"),
    "load a library": (b"LOAD 'plpgsql';", 0, "LOAD loads a shared library"),
}


def _inject(script: bytes, attack: bytes) -> tuple[bytes, int]:
    """The script with `attack` on the line after `SET statement_timeout = 0;`, and that line's number.

    The \\restrict lines of pg_dump ≥ 15.14 go: psql would refuse most backslash commands between them, but
    dumps of older versions have none, and whoever writes a hostile file leaves them out (or unrestricts).
    """
    script = re.sub(rb"(?m)^\\(un)?restrict [A-Za-z0-9]+\n", b"", script)
    marker = b"SET statement_timeout = 0;\n"
    line = script[:script.index(marker)].count(b"\n") + 2
    return script.replace(marker, marker + attack + b"\nCREATE TABLE public.escaped (id int);\n", 1), line


@pytest.mark.parametrize("attack", list(ATTACKS), ids=list(ATTACKS))
def test_restore_test_hostile_plain_dump_refused_nothing_runs(app, dumps, tmp_path, marks, untouched, attack):
    payload, offset, reason = ATTACKS[attack]
    mark = marks / "ran"
    script, line = _inject(dumps["plain"], payload.replace(b"{mark}", str(mark).encode()))
    place(tmp_path, "appdb.sql.gz", gzip.compress(script), HOUR)
    result = run(restore_check(app, str(tmp_path / "*.sql.gz")))
    assert result.status is Status.UNKNOWN, result.summary
    assert result.summary.startswith(f"appdb.sql.gz refused at line {line + offset}: "), result.summary
    assert reason in result.summary, result.summary
    assert result.summary.endswith("; scratch database dropped") and result.details["scratch_dropped"] is True
    assert not mark.exists() and not list(marks.iterdir())
    assert value(result, "restore_passed") == 0 and value(result, "restore_duration_seconds") is None


SUPERUSER_ATTACKS = {
    "shell": b"SET application_name = 'x'; \\! touch {mark}",
    "copy to a program": b"COPY (SELECT 1) TO PROGRAM 'touch {mark}';",
    "native code": b"CREATE FUNCTION public.sh(cstring) RETURNS int AS '{libc}', 'system' LANGUAGE c;\n"
                   b"SELECT public.sh('touch {mark}');",
    "connect after leading spaces": b"   \\connect otherdb",
}
LIBC = next((p for p in ("/lib/x86_64-linux-gnu/libc.so.6", "/lib/aarch64-linux-gnu/libc.so.6", "/lib64/libc.so.6")
             if os.path.exists(p)), "/lib/libc.so.6")


@pytest.mark.parametrize("attack", list(SUPERUSER_ATTACKS), ids=list(SUPERUSER_ATTACKS))
def test_restore_test_hostile_dump_refused_even_as_allowed_superuser(app, dumps, tmp_path, marks, untouched, attack):
    """allow_superuser trusts the dump's code, never its psql commands or its reach outside the scratch database."""
    mark = marks / "ran"
    payload = SUPERUSER_ATTACKS[attack].replace(b"{mark}", str(mark).encode()).replace(b"{libc}", LIBC.encode())
    script, line = _inject(dumps["plain"], payload)
    place(tmp_path, "appdb.sql.gz", gzip.compress(script), HOUR)
    check = RestoreTestCheck(RestoreTestCheck.Options.model_validate(
        {"name": "drill", "type": "restore_test", "dsn": app.server.dsn(), "path": str(tmp_path / "*.sql.gz"),
         "settle": 0, "allow_superuser": True}))
    result = run(check)
    assert result.status is Status.UNKNOWN and f"refused at line {line}: " in result.summary, result.summary
    assert result.details["privileged_role"] == ["it is a superuser"]
    assert not mark.exists()


@pytest.mark.parametrize("user", ["postgres", PRIVILEGED_USER])
def test_restore_test_privileged_role_refused_before_anything_is_created(app, dumps, tmp_path, untouched, user):
    place(tmp_path, "appdb.sql.gz", dumps["plain.gz"], HOUR)
    check = RestoreTestCheck(RestoreTestCheck.Options.model_validate(
        {"name": "drill", "type": "restore_test", "dsn": app.server.dsn(user=user),
         "path": str(tmp_path / "*.sql.gz"), "settle": 0}))
    result = run(check)
    why = "it is a superuser" if user == "postgres" else "it can act as pg_execute_server_program"
    assert result.status is Status.UNKNOWN
    assert result.summary.startswith(f"refusing to restore as {user}: {why}, so SQL carried by the dump"), \
        result.summary
    assert "set allow_superuser: true" in result.summary
    assert result.details["scratch_dropped"] == "never created"


def test_restore_test_pg_restore_gets_no_password_connection_or_agent_environment(app, tmp_path, monkeypatch,
                                                                                     untouched):
    """pg_restore only turns the archive into SQL: no connection string, no password, none of the agent's env."""
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", "/run/credentials/maint-agent.service")
    monkeypatch.setenv("MAINT_TEST_AGENT_SECRET", "agent-secret-value")
    seen = tmp_path / "seen"
    bindir = tmp_path / "bin"
    bindir.mkdir()
    stand_in = bindir / "pg_restore"
    stand_in.write_text(f"#!/bin/sh\n/usr/bin/env > {seen}.env\nprintf '%s\\n' \"$@\" > {seen}.argv\n"
                        "printf -- '--\\n-- PostgreSQL database dump\\n--\\nSET statement_timeout = 0;\\n"
                        "CREATE TABLE public.t (a int);\\n--\\n-- PostgreSQL database dump complete\\n--\\n'\n")
    stand_in.chmod(0o755)
    place(tmp_path, "appdb.dump", b"PGDMP" + b"\0" * 200, HOUR)
    result = run(restore_check(app, str(tmp_path / "*.dump"), pg_bin_dir=str(bindir)))
    assert result.status is Status.OK, result.summary
    env = dict(line.split("=", 1) for line in (tmp_path / "seen.env").read_text().splitlines() if "=" in line)
    assert set(env) <= {"PATH", "LANG", "LC_ALL", "PWD", "SHLVL", "_"}, env
    assert (tmp_path / "seen.argv").read_text().splitlines() == [
        "--file=-", "--no-owner", "--no-privileges", str(tmp_path / "appdb.dump")]
    assert app.password not in (tmp_path / "seen.env").read_text() + (tmp_path / "seen.argv").read_text()


# --- restore_test: real dumps of a schema with every kind of object ------------------------------------------

RICH_SCHEMA = r"""
SET ROLE app_owner;
CREATE SCHEMA shop;
CREATE EXTENSION pgcrypto WITH SCHEMA shop;
CREATE TYPE shop.mood AS ENUM ('sad', 'ok', 'happy');
CREATE TYPE shop.pair AS (a int, b text);
CREATE DOMAIN shop.posint AS integer CHECK (VALUE > 0);
CREATE SEQUENCE shop.counter START 100;
CREATE COLLATION shop.c2 (locale = 'C');
CREATE TABLE shop.users (id serial PRIMARY KEY, name text NOT NULL, mood shop.mood DEFAULT 'ok', note text,
  data bytea, tags text[], j jsonb, amount numeric(10,2), age shop.posint, gen int GENERATED ALWAYS AS (id * 2) STORED);
CREATE TABLE shop.audit (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, what text);
CREATE TABLE shop.events (id bigserial, user_id int REFERENCES shop.users ON DELETE CASCADE, kind text,
  at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (id, at)) PARTITION BY RANGE (at);
CREATE TABLE shop.events_2025 PARTITION OF shop.events FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
CREATE TABLE shop.events_2026 PARTITION OF shop.events FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');
INSERT INTO shop.users (name, mood, note, data, tags, j, amount, age) VALUES
 ('semi;colon', 'happy', E'back\\slash \\! not a command\nnew line; \\. inside\n\\.\n', '\x00ff5c2e', '{a,"b;c"}',
  '{"k": "v;\\\\"}', 12.5, 3),
 ('quote''s "dq"', 'sad', $$dollar $x$ text; -- not a comment /* nor this$$, NULL, NULL, NULL, NULL, NULL),
 (E'\\.', 'ok', E'\\.\n\\c otherdb\n\\.', NULL, '{}', '[]', 0, 1);
INSERT INTO shop.audit (what) SELECT 'row ' || g FROM generate_series(1, 20) g;
INSERT INTO shop.events (user_id, kind, at)
  SELECT 1 + g % 3, 'k' || g % 7, '2025-06-01'::timestamptz + g * interval '1 day' FROM generate_series(1, 400) g;
CREATE INDEX events_kind ON shop.events (kind);
CREATE UNIQUE INDEX users_lower_name ON shop.users (lower(name));
CREATE VIEW shop.user_events AS
  SELECT u.name, count(e.*) AS n FROM shop.users u LEFT JOIN shop.events e ON e.user_id = u.id GROUP BY u.name;
CREATE MATERIALIZED VIEW shop.kinds AS SELECT kind, count(*) AS n FROM shop.events GROUP BY kind;
CREATE FUNCTION shop.add(a int, b int) RETURNS int LANGUAGE sql IMMUTABLE AS 'SELECT a + b';
CREATE FUNCTION shop.std(a int) RETURNS int LANGUAGE sql
  BEGIN ATOMIC SELECT a + 1; SELECT CASE WHEN a > 0 THEN a ELSE 0 END; END;
CREATE PROCEDURE shop.proc(a int) LANGUAGE sql BEGIN ATOMIC INSERT INTO shop.audit (what) VALUES ('p' || a); END;
CREATE FUNCTION shop.touch() RETURNS trigger LANGUAGE plpgsql AS $body$
BEGIN
  NEW.note := coalesce(NEW.note, '') || E';touched \\! $$ '' \\c';
  RETURN NEW;
END;
$body$;
CREATE TRIGGER users_touch BEFORE UPDATE ON shop.users FOR EACH ROW EXECUTE FUNCTION shop.touch();
CREATE AGGREGATE shop.mysum(int) (SFUNC = int4pl, STYPE = int);
CREATE OPERATOR shop.=== (LEFTARG = int, RIGHTARG = int, FUNCTION = shop.add);
CREATE CAST (shop.pair AS text) WITH INOUT;
CREATE RULE no_insert AS ON INSERT TO shop.user_events DO INSTEAD NOTHING;
ALTER TABLE shop.users ENABLE ROW LEVEL SECURITY;
CREATE POLICY visible ON shop.users USING (name <> 'hidden');
CREATE TEXT SEARCH CONFIGURATION shop.cfg (COPY = pg_catalog.english);
CREATE STATISTICS shop.st ON name, mood FROM shop.users;
COMMENT ON TABLE shop.users IS 'the users; with a ''quote'' and \ backslash';
COMMENT ON COLUMN shop.users.name IS $$dollar; comment$$;
GRANT SELECT ON shop.users TO app_reader;
GRANT USAGE ON SCHEMA shop TO app_reader;
SELECT setval('shop.counter', 123);
SELECT lo_from_bytea(0, convert_to(E'large object; with \\ and \n\\.\n\\! id\n', 'UTF8'));
SELECT lo_from_bytea(0, decode(repeat('ab5c2e0a', 20000), 'hex'));
"""
# objects only a superuser restores: an untrusted extension, a foreign data wrapper, an event trigger
SUPERUSER_EXTRAS = """
CREATE EXTENSION pg_stat_statements;
CREATE FOREIGN DATA WRAPPER dummy;
CREATE SERVER srv FOREIGN DATA WRAPPER dummy OPTIONS (host 'x');
CREATE USER MAPPING FOR app_owner SERVER srv OPTIONS (user 'u', password 'p');
CREATE FOREIGN TABLE shop.ft (a int) SERVER srv;
CREATE FUNCTION shop.on_ddl() RETURNS event_trigger LANGUAGE plpgsql AS $$ BEGIN END $$;
CREATE EVENT TRIGGER et ON ddl_command_start EXECUTE FUNCTION shop.on_ddl();
ALTER EVENT TRIGGER et DISABLE;
ALTER DEFAULT PRIVILEGES FOR ROLE app_owner IN SCHEMA shop GRANT SELECT ON TABLES TO app_reader;
"""
# what the restored copy must hold; {expected} values are read from the original
RICH_SANITY = {
    "users": "SELECT count(*) FROM shop.users",
    "events through the partitions": "SELECT count(*) FROM shop.events",
    "rows intact": "SELECT md5(string_agg(concat_ws('|', id, name, mood, note, encode(data, 'hex'), tags, j, "
                   "amount, age, gen), ',' ORDER BY id)) FROM shop.users",
    "large objects": "SELECT md5(string_agg(oid::text || md5(lo_get(oid)), ',' ORDER BY oid)) "
                     "FROM pg_largeobject_metadata",
    "BEGIN ATOMIC function": "SELECT shop.std(5)",
    "materialized view refreshed": "SELECT sum(n) FROM shop.kinds",
    "sequence": "SELECT last_value FROM shop.counter",
    "comment": "SELECT obj_description('shop.users'::regclass)",
    "identity": "SELECT max(id) FROM shop.audit",
}


@dataclass
class Rich:
    dumps: dict          # format → bytes, or a directory for pg_directory
    expected: dict       # sanity name → value in the original database


@pytest.fixture(scope="module")
def rich(app, tmp_path_factory) -> Rich:
    """richdb: every kind of object a non-superuser can restore; richsu: the same plus superuser-only objects."""
    s = app.server
    s.query("CREATE ROLE app_reader")
    s.query("CREATE DATABASE richdb OWNER app_owner")
    s.query(RICH_SCHEMA, dbname="richdb")
    s.query("CREATE DATABASE richsu TEMPLATE richdb OWNER app_owner")
    s.query(SUPERUSER_EXTRAS, dbname="richsu")
    expected = {name: s.value(query, dbname="richdb") for name, query in RICH_SANITY.items()}
    folder = tmp_path_factory.mktemp("rich-dumps")
    _dump(s, "pg_dump", "-Fd", "-f", str(folder / "richdb.dir"), "richdb")
    plain = _dump(s, "pg_dump", "--no-owner", "richdb")        # grants kept: the restore role owns the objects
    return Rich({"plain": plain, "plain.gz": gzip.compress(plain), "pg_custom": _dump(s, "pg_dump", "-Fc", "richdb"),
                 "pg_tar": _dump(s, "pg_dump", "-Ft", "richdb"), "pg_directory": folder / "richdb.dir",
                 "owned su": gzip.compress(_dump(s, "pg_dump", "richsu"))}, expected)


def place_dump(folder: Path, rich: Rich, fmt: str) -> str:
    """Put the `fmt` dump of richdb in `folder` an hour old; return a glob matching it."""
    dump = rich.dumps[fmt]
    if isinstance(dump, Path):
        target = folder / "richdb.dir"
        shutil.copytree(dump, target)
        moment = time.time() - HOUR
        for path in [*target.iterdir(), target]:
            os.utime(path, (moment, moment))
    else:
        place(folder, f"richdb.{fmt}", dump, HOUR)
    return str(folder / "richdb.*")


def rich_sanity(rich: Rich) -> list[dict]:
    return [{"name": name, "query": query, "equals": rich.expected[name]} for name, query in RICH_SANITY.items()]


@pytest.mark.parametrize("fmt", ["plain", "plain.gz", "pg_custom", "pg_directory", "pg_tar"])
def test_restore_test_real_dumps_of_every_format_restore_and_pass_sanity(app, rich, tmp_path, untouched, fmt):
    result = run(restore_check(app, place_dump(tmp_path, rich, fmt), sanity=rich_sanity(rich)))
    assert result.status is Status.OK, result.summary
    d = result.details
    assert [q["name"] for q in d["sanity"] if not q["ok"]] == []
    assert d["format"] == fmt.removesuffix(".gz") and d["tables"] == 5 and d["statements"] > 100
    assert d["tool"] == ("psycopg" if fmt.startswith("plain") else "pg_restore")
    assert d["restore_role"] == RESTORE_USER and "privileged_role" not in d
    assert result.summary.endswith(f"{len(RICH_SANITY)}/{len(RICH_SANITY)} sanity queries passed; "
                                   f"scratch database dropped"), result.summary


def test_restore_test_owned_dump_with_superuser_objects_restores_as_allowed_superuser(app, rich, tmp_path,
                                                                                       untouched):
    place(tmp_path, "richsu.sql.gz", rich.dumps["owned su"], HOUR)
    sanity = rich_sanity(rich) + [
        {"name": "owner kept", "query": "SELECT tableowner FROM pg_tables WHERE tablename = 'users'",
         "equals": "app_owner"},
        {"name": "grant kept", "query": "SELECT has_table_privilege('app_reader', 'shop.users', 'SELECT')",
         "equals": 1},
        {"name": "event trigger", "query": "SELECT count(*) FROM pg_event_trigger", "equals": 1}]
    check = RestoreTestCheck(RestoreTestCheck.Options.model_validate(
        {"name": "drill", "type": "restore_test", "dsn": app.server.dsn(), "path": str(tmp_path / "*.sql.gz"),
         "settle": 0, "allow_superuser": True, "sanity": sanity}))
    result = run(check)
    assert result.status is Status.OK, result.summary
    assert result.details["privileged_role"] == ["it is a superuser"]


@pytest.mark.parametrize("fmt, data, reason", [
    ("pg_tar", gzip.compress(b"x" * 1024, mtime=0), "is not a tar archive (a compressed one: pg_restore reads uncompressed "
                                           "tar archives only)"),
    ("pg_custom", b"-- PostgreSQL database dump\n", "is not a custom-format dump (no PGDMP header)"),
    ("pg_directory", b"PGDMP", "is not a pg_dump directory (no toc.dat)"),
])
def test_restore_test_dump_not_of_its_configured_format_critical_nothing_created(app, tmp_path, untouched, fmt, data,
                                                                                 reason):
    place(tmp_path, "appdb.backup", data, HOUR)
    result = run(restore_check(app, str(tmp_path / "appdb.backup"), format=fmt))
    assert result.status is Status.CRITICAL and result.summary.startswith(f"appdb.backup {reason}"), result.summary
    assert result.details["scratch_dropped"] == "never created"


def test_restore_test_owned_plain_dump_as_createdb_role_fails_with_hint(app, dumps, tmp_path, untouched):
    place(tmp_path, "appdb.sql.gz", dumps["owned.gz"], HOUR)
    result = run(restore_check(app, str(tmp_path / "*.sql.gz")))
    assert result.status is Status.CRITICAL
    assert "dump with --no-owner --no-privileges, or restore as a role allowed what the dump does" \
        in result.summary, result.summary


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
