"""The command line: --help everywhere, formats, filters and exit codes (0 ok, 1 problem, 2 usage, 3 unknown)."""

import csv
import hashlib
import io
import json
import os
import time

import pytest
from pathlib import Path

from agent.plugin.result import Evaluated, Status, sample
from agent.store.writer import Store
from tests.conftest import run_cli

COMMANDS = [[], ["run"], ["config"], ["config", "check"], ["config", "schema"], ["checks"], ["check"], ["status"],
            ["history"]]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "top")
def test_cli_help_every_command_exits_zero(command):
    out = run_cli(*command, "--help")
    assert out.returncode == 0 and "usage: maint-agent" in out.stdout


def test_cli_unknown_command_exits_two():
    assert run_cli("frobnicate").returncode == 2


@pytest.fixture
def populated(write_config, tmp_path):
    config = write_config(f"""
        agent: {{state_dir: {tmp_path}/var}}
        checks:
          - {{name: disk, type: disk, every: 1m, critical: 99%}}
          - {{name: nightly, type: load, schedule: daily}}
          - {{name: dummy-ok, type: nagios, every: 1h, command: [/bin/true]}}
          - {{name: dummy-unknown, type: nagios, every: 1h, command: [/bin/sh, -c, "echo UNKNOWN - no idea; exit 3"]}}
          - {{name: dummy-crit, type: nagios, every: 1h, command: [/bin/sh, -c, "echo CRITICAL - down; exit 2"]}}
    """)
    store = Store(tmp_path / "var" / "maint-agent.db")
    now = time.time()
    rows = []
    for i in range(30):
        status = Status.CRITICAL if i % 10 == 9 else Status.OK
        rows.append(Evaluated("disk", "disk", status, f"run {i}", (sample("used_ratio", i / 100, mount="/"),), {},
                              now - (30 - i) * 86400 / 2, 0.01, now - (30 - i) * 86400 / 2))
    store.record_runs(rows)
    store.close()
    return config


def test_cli_history_filters_by_check_status_and_since(populated):
    out = run_cli("history", "--check", "disk", "--status", "critical", "--format", "json", config=populated)
    assert out.returncode == 0, out.stderr
    rows = json.loads(out.stdout)
    assert [r["summary"] for r in rows] == ["run 29", "run 19", "run 9"]
    recent = json.loads(run_cli("history", "--since", "50h", "--format", "json", config=populated).stdout)
    assert [r["summary"] for r in recent] == ["run 29", "run 28", "run 27", "run 26"]
    limited = json.loads(run_cli("history", "--limit", "5", "--format", "json", config=populated).stdout)
    assert len(limited) == 5 and limited[0]["summary"] == "run 29"


def test_cli_history_csv_and_table_formats(populated):
    out = run_cli("history", "--limit", "3", "--format", "csv", config=populated)
    rows = list(csv.DictReader(io.StringIO(out.stdout)))
    assert len(rows) == 3 and rows[0]["check"] == "disk" and rows[0]["status"] == "critical"
    table = run_cli("history", "--limit", "3", config=populated).stdout.splitlines()
    assert table[0].split()[:1] + table[0].split()[2:] == ["STARTED", "CHECK", "STATUS", "SUMMARY"]
    assert len(table) == 4


def test_cli_history_bad_since_and_status_exit_two(populated):
    bad_since = run_cli("history", "--since", "yesterday-ish", config=populated)
    assert bad_since.returncode == 2 and "invalid time" in bad_since.stderr
    bad_status = run_cli("history", "--status", "fine", config=populated)
    assert bad_status.returncode == 2 and "--status" in bad_status.stderr


def test_cli_status_without_store_exits_two_with_reason(write_config, tmp_path):
    config = write_config(f"agent: {{state_dir: {tmp_path}/nowhere}}\n")
    out = run_cli("status", config=config)
    assert out.returncode == 2 and "no store at" in out.stderr


@pytest.mark.parametrize("command", [["status"], ["history"], ["checks"], ["history", "export"], ["report"],
                                     ["log", "list"]], ids=" ".join)
def test_cli_store_not_a_database_exits_two_naming_it_never_touched(write_config, tmp_path, command):
    config = write_config(f"""
        agent: {{state_dir: {tmp_path}/var}}
        checks:
          - {{name: disk, type: disk}}
    """)
    store = tmp_path / "var" / "maint-agent.db"
    store.parent.mkdir()
    store.write_bytes(os.urandom(8192))
    before = hashlib.sha256(store.read_bytes()).hexdigest()
    out = run_cli(*command, config=config)
    assert (out.returncode, out.stdout) == (2, "")
    assert out.stderr == (f"maint-agent: store {store} is not a usable SQLite database (file is not a database): "
                          f"move it aside (mv {store} {store}.bad) and start again; the agent never overwrites it\n")
    assert hashlib.sha256(store.read_bytes()).hexdigest() == before
    assert sorted(p.name for p in store.parent.iterdir()) == ["maint-agent.db"]


def test_cli_status_problem_exits_one(populated):
    out = run_cli("status", "--format", "json", config=populated)
    assert out.returncode == 1
    row = json.loads(out.stdout)["checks"][0]
    assert (row["check"], row["status"], row["summary"]) == ("disk", "critical", "run 29")
    assert row["stale"] and row["stale_reason"] == "ran 12h ago, every 1m"


@pytest.mark.parametrize("name,code,status", [("dummy-ok", 0, "ok"), ("dummy-crit", 1, "critical"),
                                              ("dummy-unknown", 3, "unknown")])
def test_cli_check_runs_once_exit_code_by_status(populated, name, code, status):
    out = run_cli("check", name, "--format", "json", config=populated)
    assert out.returncode == code, out.stderr
    assert json.loads(out.stdout)[0]["status"] == status


def test_cli_check_unknown_name_suggests(populated):
    out = run_cli("check", "dsk", config=populated)
    assert out.returncode == 2 and "did you mean 'disk'" in out.stderr


def test_cli_checks_lists_schedule_next_due_and_last_status(populated):
    out = run_cli("checks", "--format", "json", config=populated)
    rows = {r["check"]: r for r in json.loads(out.stdout)}
    assert rows["disk"]["schedule"] == "every 1m" and rows["disk"]["last_status"] == "critical"
    assert rows["nightly"]["schedule"] == "daily 02:00" and rows["nightly"]["last_status"] is None
    assert rows["nightly"]["schedule_description"] == "daily (daily at 02:00)"
    assert "T02:00:00" in rows["nightly"]["next_due"]


def test_cli_config_check_invalid_exits_two(write_config):
    config = write_config("agent: {workers: 0}\n")
    out = run_cli("config", "check", str(config))
    assert out.returncode == 2 and f"{config}:1: agent.workers:" in out.stderr


def test_cli_history_table_defaults_to_newest_hundred_json_exports_all(write_config, tmp_path):
    config = write_config(f"agent: {{state_dir: {tmp_path}/var}}\n")
    store = Store(tmp_path / "var" / "maint-agent.db")
    now = time.time()
    store.record_runs([Evaluated("load", "load", Status.OK, f"run {i}", (), {}, now - i, 0.0, now - i)
                       for i in range(150)])
    store.close()
    assert len(run_cli("history", config=config).stdout.splitlines()) == 101   # header + 100
    assert len(json.loads(run_cli("history", "--format", "json", config=config).stdout)) == 150
    assert len(json.loads(run_cli("history", "--format", "json", "--limit", "7", config=config).stdout)) == 7


def test_cli_status_hides_checks_removed_from_config_unless_all(populated):
    store = Store(populated.parent / "var" / "maint-agent.db")
    store.record_runs([Evaluated("retired", "disk", Status.CRITICAL, "gone", (), {}, time.time(), 0.0, time.time())])
    store.close()
    names = [r["check"] for r in json.loads(run_cli("status", "--format", "json", config=populated).stdout)["checks"]]
    assert "retired" not in names and "disk" in names
    every = [r["check"] for r in json.loads(run_cli("status", "--all", "--format", "json",
                                                    config=populated).stdout)["checks"]]
    assert "retired" in every


def test_cli_history_reads_stopped_store_from_read_only_directory(populated):
    """A user who may read but not write the state directory (the daemon stopped, no -wal file)."""
    import os
    import shutil
    import subprocess
    import sys
    import tempfile
    base = Path(tempfile.mkdtemp(prefix="maint-ro-", dir="/tmp"))
    try:
        state = base / "var"
        state.mkdir()
        shutil.copy(populated.parent / "var" / "maint-agent.db", state / "maint-agent.db")
        config = base / "agent.yaml"
        config.write_text(f"agent: {{state_dir: {state}}}\n")
        for path, mode in ((base, 0o755), (config, 0o644), (state / "maint-agent.db", 0o444), (state, 0o555)):
            os.chmod(path, mode)
        out = subprocess.run(["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", sys.executable,
                              "-m", "agent.cli", "history", "--limit", "2", "--format", "json", "--config",
                              str(config)], capture_output=True, text=True, cwd=str(Path(__file__).parents[2]),
                             env={**os.environ, "HOME": "/tmp"})
        if "Permission denied" in out.stderr and "agent.cli" not in out.stderr:
            pytest.skip(f"the interpreter or repo is not readable by nobody here: {out.stderr.strip()}")
        assert out.returncode == 0, out.stderr
        assert len(json.loads(out.stdout)) == 2
        assert not (state / "maint-agent.db-wal").exists()
    finally:
        os.chmod(base / "var", 0o755)
        shutil.rmtree(base)


def test_cli_history_json_streamed_in_chunks_same_text_as_one_list(tmp_path):
    """`history --format json` writes SQLite's objects chunk by chunk; the text is the one list it used to join."""
    import sqlite3
    from agent.store.history import _RUN_JSON, _runs_query, write_runs_json
    from agent.plugin.storefile import open_readonly
    store = Store(tmp_path / "maint-agent.db")
    now = time.time()
    store.record_runs([Evaluated("disk", "disk", Status(i % 4), f'run {i} "quoted" \\ é\nline', (
        sample("used_ratio", i / 7, mount="/"), sample("free_bytes", 1.5e12 + i, mount='/mnt/"x"')), {},
        now - i * 61.5, i / 3000, now - i * 61.5) for i in range(25)])
    store.close()
    conn = open_readonly(tmp_path / "maint-agent.db")
    for query in ({"limit": None}, {"statuses": [2], "limit": None}, {"check": "nope", "limit": None}):
        objects = [row[0] for row in conn.execute(*_runs_query(_RUN_JSON, query.get("check"), query.get("statuses"),
                                                                None, None, None))]
        expected = ("[\n" + ",\n".join(objects) + "\n]\n" if objects else "[]\n").encode()
        out = io.BytesIO()
        assert write_runs_json(conn, out, chunk=4, **query) == len(objects)
        assert out.getvalue() == expected
        assert json.loads(out.getvalue()) == [json.loads(o) for o in objects]
    assert conn.text_factory is str and isinstance(conn.execute("SELECT 1").fetchone(), sqlite3.Row)


def test_cli_history_parses_with_its_own_module_only_and_the_same_way():
    """`history` is what scripts call: its parser is built from agent/cli/history.py alone, and reads exactly as
    in the full parser (export included)."""
    import subprocess
    import sys
    from agent.cli.main import build_parser
    code = ("import sys; from agent.cli.main import build_parser; build_parser('history'); "
            "print(sorted(m for m in sys.modules if m.startswith('agent.cli.')))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                          cwd=Path(__file__).resolve().parents[2])
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["['agent.cli.common',", "'agent.cli.history',", "'agent.cli.main']"]
    every = build_parser()._subparsers._group_actions[0].choices["history"]
    alone = build_parser("history")._subparsers._group_actions[0].choices["history"]
    assert alone.format_help() == every.format_help()
    export = [a for a in alone._actions if a.dest == "handler" or a.__class__.__name__ == "_SubParsersAction"]
    assert export and "export" in export[0].choices


def test_cli_standalone_commands_parse_without_the_other_command_modules_and_the_same_way():
    import subprocess
    import sys
    from agent.cli.main import STANDALONE_COMMANDS, build_parser
    code = ("import sys; from agent.cli.main import build_parser; build_parser('run'); "
            "areas = ('actions', 'drift', 'fleet', 'log', 'maintenance', 'notifications', 'ping', 'report'); "
            "print(sorted(m for m in sys.modules if m in ['agent.cli.' + a for a in areas]))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                          cwd=Path(__file__).resolve().parents[2])
    assert done.returncode == 0 and done.stdout.strip() == "[]", done.stderr
    every = build_parser()._subparsers._group_actions[0].choices
    for command in STANDALONE_COMMANDS:   # no command module adds to these parsers
        alone = build_parser(command)._subparsers._group_actions[0].choices
        assert alone[command].format_help() == every[command].format_help()
        assert alone[command]._subparsers is None and every[command]._subparsers is None
