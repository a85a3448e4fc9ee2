"""Scratch-cluster restore tests against the real primary of tests/fixtures/postgres.py (`pg_pair`).

The primary archives its WAL (archive_mode=on, `cp` into the pair's archive directory). The module
takes a real `pg_basebackup -Ft -z` (base.tar.gz + pg_wal.tar.gz) and a real `pg_dumpall`, then
writes rows after the base backup and waits until their WAL is archived. Every restore runs the
real worker and a real PostgreSQL 15 scratch server, as the `postgres` user (tests run as root and
PostgreSQL refuses root), and every test ends by checking that the scratch directory is empty and
that no process works in it.
"""

from __future__ import annotations

import gzip
import logging
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from agent.plugin.result import CheckResult, Status
from checks.base import CheckContext
from checks.restore_cluster import RestoreClusterCheck
from checks.scratch_dirs import LOCK_NAME, HostLock
from checks.scratch_cluster import ScratchServer, ServerUser
from tests.conftest import wait_for
from tests.fixtures.postgres import BINDIR, REPLICATION_USER, pg_pair  # noqa: F401 (session fixture)
from tests.metrics_contract import assert_family_contract

ROWS_BEFORE = 500                # cameras rows in the base backup and the dump
ROWS_AFTER = 40                  # written after the base backup: only the WAL archive has them
RUN_AS = "postgres" if os.geteuid() == 0 else None


@pytest.fixture(scope="module")
def backups(pg_pair):
    """A database and a role on the primary, its base backup and pg_dumpall, then rows only the archive holds."""
    primary = pg_pair.primary
    root = Path(tempfile.mkdtemp(prefix="maint-dr-", dir="/tmp"))
    os.chmod(root, 0o755)
    primary.query("CREATE ROLE dr_reader LOGIN")
    primary.query("CREATE DATABASE dr_app")
    try:
        primary.query("CREATE TABLE cameras (id int PRIMARY KEY, name text NOT NULL)", dbname="dr_app")
        primary.query(f"INSERT INTO cameras SELECT g, 'cam-' || g FROM generate_series(1, {ROWS_BEFORE}) g",
                      dbname="dr_app")
        primary.query("GRANT SELECT ON cameras TO dr_reader", dbname="dr_app")
        base = root / "20261203_020000"
        subprocess.run([str(BINDIR / "pg_basebackup"), "-h", "127.0.0.1", "-p", str(primary.port),
                        "-U", REPLICATION_USER, "-D", str(base), "-Ft", "-z", "-c", "fast", "--no-sync"],
                       check=True, capture_output=True, timeout=120)
        dump = subprocess.run([str(BINDIR / "pg_dumpall"), "-h", "127.0.0.1", "-p", str(primary.port),
                               "-U", "postgres"], check=True, capture_output=True, timeout=120).stdout
        (base / "full_backup.sql.gz").write_bytes(gzip.compress(dump, mtime=0))
        for path in base.iterdir():
            os.utime(path, (time.time() - 600, time.time() - 600))        # older than `settle`
        primary.query(f"INSERT INTO cameras SELECT g, 'late-' || g FROM generate_series({ROWS_BEFORE + 1}, "
                      f"{ROWS_BEFORE + ROWS_AFTER}) g", dbname="dr_app")
        segment = primary.value("SELECT pg_walfile_name(pg_switch_wal())")
        wait_for(lambda: (pg_pair.archive / segment).exists(), 30, what=f"{segment} to be archived")
        yield {"root": root, "base": base / "base.tar.gz", "dump": base / "full_backup.sql.gz", "sql": dump,
               "archive": pg_pair.archive}
    finally:
        primary.query("DROP DATABASE IF EXISTS dr_app WITH (FORCE)")
        primary.query("DROP ROLE IF EXISTS dr_reader")
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def scratch(backups):
    """A scratch_dir the `postgres` user can reach; at the end it must be empty and nobody working in it."""
    path = Path(tempfile.mkdtemp(prefix="scratch-", dir=backups["root"]))
    os.chmod(path, 0o755)
    yield path
    assert list(path.iterdir()) == [], "the scratch directory was not emptied"
    assert processes_in(path) == [], "a process still works in the scratch directory"


def processes_in(path: Path) -> list[str]:
    """Processes whose working directory or command line is inside `path` (a scratch server, the worker)."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cwd = os.readlink(f"/proc/{pid}/cwd")
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z" and (cwd.startswith(str(path)) or str(path) in cmdline):
            found.append(f"{pid} {cmdline[:120]}")
    return found


def place(backups, folder: Path, *names: str) -> Path:
    """Copy members of the backup set into `folder` (mtime kept), return it."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        shutil.copy2(backups["base"].parent / name, folder / name)
    return folder


def make(path, scratch: Path, **options) -> RestoreClusterCheck:
    raw = {"name": "dr", "type": "restore_cluster", "path": str(path), "scratch_dir": str(scratch), **options}
    if RUN_AS:
        raw.setdefault("run_as", RUN_AS)
    return RestoreClusterCheck(RestoreClusterCheck.Options.model_validate(raw))


def run(check: RestoreClusterCheck, state: Path, timeout: float = 120.0) -> CheckResult:
    state.mkdir(exist_ok=True)
    return check.run(CheckContext(timeout=timeout, state_dir=state))


def value(result: CheckResult, name: str) -> float | None:
    return next((s.value for s in result.samples if s.name == name), None)


def test_restore_cluster_base_backup_with_its_pg_wal_recovers_and_reports_rpo(backups, scratch, tmp_path):
    check = make(backups["base"], scratch, sanity=[
        {"name": "cameras", "database": "dr_app", "query": "SELECT count(*) FROM cameras", "equals": ROWS_BEFORE},
        {"name": "reader role", "query": "SELECT count(*) FROM pg_roles WHERE rolname = 'dr_reader'", "equals": 1}])
    result = run(check, tmp_path / "var")
    assert result.status is Status.OK, result.summary
    d = result.details
    assert d["version"] == "15" and d["kind"] == "base_backup" and d["wal_tar"].endswith("pg_wal.tar.gz")
    assert [s["ok"] for s in d["sanity"]] == [True, True]
    app = next(db for db in d["databases"] if db["name"] == "dr_app")
    assert app["tables"] == 1 and app["rows"] == ROWS_BEFORE
    assert d["free_bytes"] >= d["needed_bytes"] == int(d["expanded_bytes"] * 1.2)
    assert d["removal"] == {"dir": d["scratch"], "removed": True, "postmaster": "not running", "error": None}
    assert d["server"] == "stopped"
    recovered = value(result, "restore_recovered_timestamp_seconds")
    assert d["backup_start"] - 1 <= recovered <= time.time()
    assert 0 <= value(result, "restore_rpo_seconds") < 3600
    assert 0 < value(result, "restore_duration_seconds") < 60 and value(result, "restore_passed") == 1
    assert value(result, "restore_rows") >= ROWS_BEFORE and value(result, "restore_databases") >= 2
    assert "restored base.tar.gz" in result.summary and "scratch cluster removed" in result.summary
    assert "RPO" in result.summary and "RTO" in result.summary
    assert_family_contract(check, [result])


def test_restore_cluster_base_backup_with_the_wal_archive_reaches_commits_after_the_backup(backups, scratch,
                                                                                           tmp_path):
    began = time.time()
    check = make(backups["base"], scratch, wal_archive=str(backups["archive"]), sanity=[
        {"database": "dr_app", "query": "SELECT count(*) FROM cameras", "equals": ROWS_BEFORE + ROWS_AFTER},
        {"database": "dr_app", "query": "SELECT count(*) FROM cameras WHERE name LIKE 'late-%'", "min": 1}])
    result = run(check, tmp_path / "var")
    assert result.status is Status.OK, result.summary
    assert result.details["recovered_source"] == "last transaction replayed"
    assert value(result, "restore_recovered_timestamp_seconds") > result.details["backup_start"]
    assert value(result, "restore_rpo_seconds") < time.time() - began + 300


def test_restore_cluster_pg_dumpall_restores_databases_and_roles(backups, scratch, tmp_path):
    check = make(backups["dump"], scratch, sanity=[
        {"database": "dr_app", "query": "SELECT count(*) FROM cameras", "equals": ROWS_BEFORE},
        {"query": "SELECT count(*) FROM pg_roles WHERE rolname IN ('dr_reader', 'postgres', 'replicator')",
         "equals": 3},
        {"database": "dr_app", "query": "SELECT has_table_privilege('dr_reader', 'cameras', 'SELECT')",
         "equals": "True"}])
    result = run(check, tmp_path / "var")
    assert result.status is Status.OK, result.summary
    d = result.details
    assert d["kind"] == "pg_dumpall" and d["version"] == "15" and "dr_app" in d["databases_created"]
    assert d["statements"] > 10 and d["roles"] >= 3
    assert [s["ok"] for s in d["sanity"]] == [True, True, True]
    assert d["recovered_source"].startswith("the dump file's modification time")
    assert_family_contract(check, [result])


def test_restore_cluster_yesterdays_dump_misses_the_rpo_critical(backups, scratch, tmp_path):
    folder = place(backups, tmp_path / "sets" / "20261202_020000", "full_backup.sql.gz")
    dump = folder / "full_backup.sql.gz"
    os.utime(dump, (time.time() - 26 * 3600, time.time() - 26 * 3600))
    result = run(make(dump, scratch, count_rows=False), tmp_path / "var")
    assert result.status is Status.CRITICAL
    assert result.summary.startswith("RPO not met: the backup recovers to ")
    assert "> 1h" in result.summary and "restored full_backup.sql.gz" in result.summary
    assert value(result, "restore_rpo_seconds") > 26 * 3600 - 60
    assert value(result, "restore_passed") == 1 and value(result, "restore_rows") is None


def test_restore_cluster_truncated_base_backup_critical_before_anything_is_written(backups, scratch, tmp_path):
    folder = place(backups, tmp_path / "sets" / "cut", "pg_wal.tar.gz")
    data = backups["base"].read_bytes()
    (folder / "base.tar.gz").write_bytes(data[: len(data) // 2])
    os.utime(folder / "base.tar.gz", (time.time() - 600, time.time() - 600))
    result = run(make(folder / "base.tar.gz", scratch), tmp_path / "var")
    assert result.status is Status.CRITICAL
    assert result.summary.startswith("base.tar.gz: truncated: the archive ends at member ")
    assert "extract" not in result.details["phases"] and result.details["removal"]["removed"] is True


def test_restore_cluster_missing_pg_wal_critical(backups, scratch, tmp_path):
    folder = place(backups, tmp_path / "sets" / "no-wal", "base.tar.gz")
    result = run(make(folder / "base.tar.gz", scratch), tmp_path / "var")
    assert result.status is Status.CRITICAL
    assert result.summary.startswith("pg_wal.tar.gz missing beside base.tar.gz")
    empty = scratch.parent / "empty-archive"
    empty.mkdir(mode=0o755, exist_ok=True)
    result = run(make(folder / "base.tar.gz", scratch, wal_archive=str(empty)), tmp_path / "var")
    assert result.status is Status.CRITICAL
    assert result.summary.startswith("the restored server did not start: FATAL: ")
    assert "server_log" in result.details and result.details["removal"]["removed"] is True


def test_restore_cluster_dumpall_with_a_meta_command_refused_nothing_runs(backups, scratch, tmp_path):
    marker = tmp_path / "pwned"
    sql = backups["sql"]
    at = sql.index(b"\n--\n-- Databases\n--\n")
    hostile = sql[:at] + f"\n\\! touch {marker}\n".encode() + sql[at:]
    folder = tmp_path / "sets" / "hostile"
    folder.mkdir(parents=True)
    (folder / "full_backup.sql").write_bytes(hostile)
    os.utime(folder / "full_backup.sql", (time.time() - 600, time.time() - 600))
    line = hostile[:hostile.index(b"\\! touch")].count(b"\n") + 1
    result = run(make(folder / "full_backup.sql", scratch), tmp_path / "var")
    assert result.status is Status.UNKNOWN
    assert result.summary.startswith(f"full_backup.sql refused at line {line}: psql meta-command")
    assert not marker.exists()
    assert result.details["server"] == "stopped" and result.details["removal"]["removed"] is True


def test_restore_cluster_not_enough_space_refused_before_writing(backups, tmp_path):
    small = Path(tempfile.mkdtemp(prefix="tiny-", dir=backups["root"]))
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m,mode=0755", "tmpfs", str(small)],
                             capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        result = run(make(backups["base"], small), tmp_path / "var")
        assert result.status is Status.UNKNOWN
        assert "not enough space in " + str(small) in result.summary
        assert "1.2 × that is" in result.summary and "nothing was written" in result.summary
        assert result.details["free_bytes"] < result.details["needed_bytes"]
        assert list(small.iterdir()) == []
    finally:
        subprocess.run(["umount", str(small)], check=True)


@pytest.mark.skipif(os.geteuid() != 0, reason="the agent runs as root only in this test")
def test_restore_cluster_as_root_without_run_as_refused(scratch, tmp_path):
    check = RestoreClusterCheck(RestoreClusterCheck.Options.model_validate(
        {"name": "dr", "type": "restore_cluster", "path": "/nonexistent/*.tar.gz", "scratch_dir": str(scratch)}))
    result = run(check, tmp_path / "var")
    assert result.status is Status.UNKNOWN
    assert "PostgreSQL refuses to: set run_as to an unprivileged user" in result.summary


def test_restore_cluster_waits_for_another_restore_then_times_out_unknown(backups, scratch, tmp_path):
    state = tmp_path / "var"
    state.mkdir()
    holder = HostLock(state / LOCK_NAME)
    assert holder.acquire(None)
    holder.record({"check": "nightly-dr"})
    try:
        began = time.monotonic()
        result = run(make(backups["base"], scratch), state, timeout=6)
        assert time.monotonic() - began < 5
    finally:
        holder.release()
    assert result.status is Status.UNKNOWN
    assert result.summary == "timed out after 6s waiting for nightly-dr to finish (one restore at a time per host)"


def test_restore_cluster_options_refuse_unsafe_paths_and_long_sockets(tmp_path):
    from pydantic import ValidationError
    for bad, message in (({"scratch_dir": "/srv/o'brien"}, "quotes, '%'"),
                         ({"scratch_dir": "/srv/x", "wal_archive": "/wal/%f"}, "quotes, '%'"),
                         ({"scratch_dir": "/" + "d" * 60}, "too long: the scratch server's socket path"),
                         ({"scratch_dir": "relative"}, "must be an absolute path")):
        with pytest.raises(ValidationError, match=message):
            RestoreClusterCheck.Options.model_validate({"name": "dr", "type": "restore_cluster",
                                                        "path": "/b/*.tar.gz", **bad})
    options = RestoreClusterCheck.Options.model_validate({"name": "dr", "type": "restore_cluster",
                                                          "path": "/b/*.tar.gz", "scratch_dir": "/srv/x"})
    assert options.schedule == "quarterly" and options.timeout == 6 * 3600 and (options.rto, options.rpo) == \
        (4 * 3600, 3600)


# --- leftovers of a killed agent ---------------------------------------------------------------------------------

@pytest.mark.skipif(os.geteuid() != 0, reason="starts the scratch server as the postgres user")
def test_startup_kills_our_stray_postmaster_leaves_others_and_removes_both_dirs(pg_pair, backups, scratch, tmp_path,
                                                                                caplog):
    entry = pwd.getpwnam("postgres")
    user = ServerUser(entry.pw_uid, entry.pw_gid)
    ours = scratch / "maint-restore-20260101t000000-0000abcd"
    decoy = scratch / "maint-restore-20260101t000000-0000dcba"
    for folder in (ours, decoy):
        folder.mkdir(mode=0o700)
        os.chown(folder, user.uid, user.gid)
    server = ScratchServer(ours, BINDIR, user)
    server.initdb("maint_restore_admin", time.monotonic() + 60)
    server.configure(replace=False, recovery=None)
    server.hand_over()
    server.start()
    wait_for(lambda: (server.data / "postmaster.pid").exists() and server.socket.joinpath(".s.PGSQL.5432").exists(),
             30, what="the stray scratch server to listen")
    primary_pid = int((pg_pair.primary.datadir / "postmaster.pid").read_text().split()[0])
    (decoy / "data").mkdir()
    (decoy / "data" / "postmaster.pid").write_text(f"{primary_pid}\n{decoy / 'data'}\n")

    check = make(backups["base"], scratch)
    (tmp_path / "var").mkdir()
    with caplog.at_level(logging.INFO, logger="maint-agent"):
        check.startup(tmp_path / "var")
    server.proc.wait(10)                         # reaped: the test started it
    lines = [r.getMessage() for r in caplog.records if "restore_cluster.leftover_removed" in r.getMessage()]
    assert len(lines) == 2, lines
    assert any(f"dir={ours}" in line and f"postmaster=\"killed (pid {server.proc.pid})\"" in line
               and "removed=True" in line for line in lines), lines
    assert any(f"dir={decoy}" in line and f"left alone: pid {primary_pid} from postmaster.pid is not the scratch "
               f"server" in line for line in lines), lines
    assert pg_pair.primary.value("SELECT 1") == 1, "the decoy's pid (the primary) must be left running"


@pytest.mark.parametrize("also_the_worker", [False, True], ids=["agent", "agent-and-worker"])
def test_agent_killed_mid_restore_next_start_removes_the_scratch_cluster(backups, scratch, agent_factory,
                                                                         also_the_worker):
    run_as = f"run_as: {RUN_AS}, " if RUN_AS else ""
    config = """
        agent: {{state_dir: "{{state}}"}}
        http: {{listen: "127.0.0.1:{{port}}"}}
        checks:
          - {{name: dr, type: restore_cluster, {when}, path: "{path}", scratch_dir: "{scratch}", {run_as}count_rows: false,
             sanity: [{{name: slow, query: "SELECT pg_sleep(60)", timeout: 90s}}]}}
    """
    fill = {"path": backups["dump"], "scratch": scratch, "run_as": run_as}
    agent = agent_factory(config.format(when="every: 1h", **fill)).start()
    wait_for(lambda: "phase=probe" in agent.log.read_text(), 60, what="the restore to reach its sanity queries")
    workers = [line.split()[0] for line in processes_in(scratch) if "restore_worker" in line]
    assert len(workers) == 1 and any("postgres" in line for line in processes_in(scratch))
    if also_the_worker:                  # as the OOM killer might: the worker first, the agent frozen meanwhile
        agent.send(signal.SIGSTOP)
        os.kill(int(workers[0]), signal.SIGKILL)
    agent.proc.kill()
    agent.proc.wait()
    (run_dir,) = scratch.iterdir()
    if also_the_worker:
        assert any("postgres" in line for line in processes_in(scratch)), "the stray server should still run"
    else:                                # the worker dies with the agent and shuts its server down at once
        wait_for(lambda: processes_in(scratch) == [], 15, what="the worker and its server to end with the agent")

    agent.stop()
    again = agent_factory(config.format(when='schedule: "jan 1 00:00"', **fill), name="agent2.yaml").start()
    wait_for(lambda: "event=restore_cluster.leftover_removed" in again.log.read_text(), 30,
             what="the next start to remove the leftover")
    line = next(line for line in again.log.read_text().splitlines() if "restore_cluster.leftover_removed" in line)
    assert f"dir={run_dir}" in line and "removed=True" in line
    assert ("postmaster=\"killed (pid" in line) if also_the_worker else ("postmaster=\"not running\"" in line)
    wait_for(lambda: processes_in(scratch) == [], 15, what="every process of the old restore to be gone")
