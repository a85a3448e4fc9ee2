"""Input and errors: an unknown name fails with "did you mean" everywhere, --config goes before or after
the command, an unquoted time gets a hint, and JSON has one style
(a taken port: tests/agent/test_daemon.py)."""

from __future__ import annotations

import json
import time

import pytest

from agent.plugin.result import Evaluated, Status
from agent.store.writer import Store
from tests.conftest import run_cli


@pytest.fixture
def configured(write_config, tmp_path):
    config = write_config(f"""
        agent: {{state_dir: {tmp_path}/var}}
        checks:
          - {{name: disk-root, type: disk, every: 1m}}
          - {{name: cpu, type: cpu, every: 15s}}
    """)
    store = Store(tmp_path / "var" / "maint-agent.db")
    now = time.time()
    store.record_runs([Evaluated("disk-root", "disk", Status.OK, "fine", (), {}, now, 0.01, now)])
    store.add_log("Replaced disk sdb", at=now, category="hardware", source="cli", author="ops")
    store.close()
    return config


@pytest.mark.parametrize("args, message", [
    (["history", "--check", "dsk-root"], "no check named 'dsk-root' (did you mean 'disk-root'?)"),
    (["history", "export", "--check", "dsk-root"], "no check named 'dsk-root' (did you mean 'disk-root'?)"),
    (["check", "dsk-root"], "no check named 'dsk-root' (did you mean 'disk-root'?)"),
    (["check", "nosuch"], "no check named 'nosuch'; known: cpu, disk-root"),
    (["log", "list", "--source", "bogus"], "unknown --source 'bogus'; one of: agent, cli, policy"),
    (["log", "list", "--category", "hardwar"], "unknown --category 'hardwar' (did you mean 'hardware'?)"),
    (["log", "list", "--check", "cpuu"], "no check named 'cpuu' (did you mean 'cpu'?)"),
    (["log", "add", "x", "--check", "cpuu"], "no check named 'cpuu' (did you mean 'cpu'?)"),
    (["actions", "--check", "cpuu"], "no check named 'cpuu' (did you mean 'cpu'?)"),
    (["actions", "reset", "cpuu"], "no check named 'cpuu' (did you mean 'cpu'?)"),
    (["checklist", "done", "weekly.nosuch", "--note", "x"], "no checklist item 'weekly.nosuch'"),
])
def test_unknown_names_fail_with_did_you_mean_and_exit_two(configured, args, message):
    out = run_cli(*args, config=configured)
    assert out.returncode == 2 and message in out.stderr, out.stderr


def test_history_of_a_configured_check_without_runs_is_empty_not_an_error(configured):
    out = run_cli("history", "--check", "cpu", "--format", "json", config=configured)
    assert out.returncode == 0 and json.loads(out.stdout) == []


def test_fleet_targets_refuses_a_missing_host_list_file_instead_of_making_it_a_host(tmp_path):
    out = run_cli("fleet", "targets", "--hosts", "nosuchfile.txt")
    assert out.returncode == 2 and "no host list file 'nosuchfile.txt'" in out.stderr
    assert "nosuchfile.txt:9469" not in out.stdout
    explicit = run_cli("fleet", "targets", "--hosts", "db1", "backup.example.txt:9470")
    assert explicit.returncode == 0 and "backup.example.txt:9470" in explicit.stdout


@pytest.mark.parametrize("where", ["before", "after"])
def test_config_option_works_before_and_after_the_command(configured, where):
    argv = (["-c", str(configured), "history", "--format", "json"] if where == "before"
            else ["history", "--format", "json", "-c", str(configured)])
    out = run_cli(*argv)
    assert out.returncode == 0, out.stderr
    assert [r["summary"] for r in json.loads(out.stdout)] == ["fine"]
    nested = run_cli(*(["-c", str(configured), "log", "list", "--format", "json"] if where == "before"
                       else ["log", "list", "--format", "json", "-c", str(configured)]))
    assert nested.returncode == 0 and json.loads(nested.stdout)[0]["message"] == "Replaced disk sdb"


def test_config_check_hints_to_quote_a_time_yaml_read_as_a_number(write_config):
    config = write_config("""
        schedules:
          daily: 12:30
        checks:
          - {name: nightly, type: load, schedule: 2:30}
    """)
    out = run_cli("config", "check", str(config))
    assert out.returncode == 2
    assert f"{config}:2: schedules.daily: " in out.stderr and "quote times: '12:30'" in out.stderr
    assert "quote times: '2:30'" in out.stderr


@pytest.mark.parametrize("command", [["history"], ["checks"], ["log", "list"], ["actions"], ["checklist"],
                                     ["report", "outbox"], ["history", "export", "--format", "json"]])
def test_json_output_is_one_style_an_array_with_one_object_per_line(configured, command):
    args = command if "--format" in command else [*command, "--format", "json"]
    out = run_cli(*args, config=configured)
    assert out.returncode in (0, 1), out.stderr
    data = json.loads(out.stdout)
    assert isinstance(data, list)
    lines = out.stdout.splitlines()
    if data:
        assert lines[0] == "[" and lines[-1] == "]" and len(lines) == len(data) + 2
        assert all(isinstance(json.loads(line.rstrip(",")), dict) for line in lines[1:-1])
    else:
        assert lines == ["[]"]


@pytest.mark.parametrize("command", [["status", "--format", "json"], ["report", "--period", "day", "--format", "json"]])
def test_json_documents_put_a_key_per_line_and_list_objects_one_per_line(configured, command):
    out = run_cli(*command, config=configured)
    data = json.loads(out.stdout)
    lists = [v for v in data.values() if isinstance(v, list) and v and all(isinstance(i, dict) for i in v)]
    assert len(out.stdout.splitlines()) == len(data) + sum(len(v) + 1 for v in lists)
    if command[0] == "status":
        assert set(data) == {"agent", "counts", "checks"} and out.stdout.splitlines()[-1] == "]}"


def test_history_export_lists_its_formats_when_given_another(configured):
    out = run_cli("history", "export", "--format", "xml", config=configured)
    assert out.returncode == 2 and "choose from 'jsonl', 'json', 'csv'" in out.stderr
