"""The maintenance log (`log add`, `log list`, the agent's own entries) and `history export` for other tools."""

import csv
import io
import json
import subprocess
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest

from agent.cli.history import EXPORT_COLUMNS
from agent.plugin.result import Evaluated, Status, sample
from agent.store.writer import Store
from tests.conftest import AGENT, REPO, run_cli


@pytest.fixture
def config(write_config, tmp_path):
    return write_config(f"""
        agent: {{state_dir: {tmp_path}/var}}
        checks:
          - {{name: disk, type: disk, every: 1m}}
          - {{name: pg, type: nagios, every: 1m, command: [/bin/true]}}
    """)


def entries(config, *args) -> list[dict]:
    out = run_cli("log", "list", "--format", "json", *args, config=config)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


# -- log add / list -----------------------------------------------------------------------------------------


def test_log_add_creates_the_store_and_records_who_did_what(config, tmp_path, monkeypatch):
    monkeypatch.setenv("SUDO_USER", "alice")
    assert not (tmp_path / "var" / "maint-agent.db").exists()
    out = run_cli("log", "add", "Replaced disk sdb", "--category", "hardware", "--check", "disk", config=config)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "logged #1 (hardware, by alice)"
    [entry] = entries(config)
    assert {k: entry[k] for k in ("category", "author", "source", "check", "message")} == \
        {"category": "hardware", "author": "alice", "source": "cli", "check": "disk", "message": "Replaced disk sdb"}
    assert abs(datetime.fromisoformat(entry["at"].replace("Z", "+00:00")).timestamp() - time.time()) < 30


def test_log_add_by_and_at_override_author_and_time(config):
    run_cli("log", "add", "Rotated TLS certificate", "--by", "bob", "--at", "2026-01-02T03:04", "--category",
            "security", config=config, check=True)
    [entry] = entries(config)
    assert entry["author"] == "bob" and entry["at"] == datetime(2026, 1, 2, 3, 4).astimezone(timezone.utc).strftime(
        "%Y-%m-%dT%H:%M:%S.000Z")


def test_log_add_masks_credentials_in_the_message(config):
    run_cli("log", "add", "reset redis password=hunter22 and postgresql://app:s3cret@db/app", config=config,
            check=True)
    message = entries(config)[0]["message"]
    assert "hunter22" not in message and "s3cret" not in message and "password=***" in message


@pytest.mark.parametrize("args, error", [
    (["  "], "the message is empty"),
    (["x", "--category", "hardwre"], "invalid choice: 'hardwre'"),
    (["x", "--check", "dsk"], "no check named 'dsk' (did you mean 'disk'?)"),
    (["x", "--at", "2999-01-01"], "in the future"),
    (["x", "--at", "soonish"], "invalid time"),
    (["x", "--by", "a\nb"], "one short line"),
])
def test_log_add_refuses_bad_input_with_exit_two(config, tmp_path, args, error):
    out = run_cli("log", "add", *args, config=config)
    assert out.returncode == 2 and error in out.stderr
    assert not (tmp_path / "var" / "maint-agent.db").exists()


@pytest.fixture
def logged(config, tmp_path):
    """A log with operator entries, agent entries and a checklist tick, an hour apart, oldest first."""
    store = Store(tmp_path / "var" / "maint-agent.db")
    now = time.time()
    rows = [("agent started (version 1, 2 checks)", "agent", "maint-agent", "agent", None),
            ("Replaced disk sdb", "hardware", "alice", "cli", "disk"),
            ("catch-up run of pg: due time missed while the agent was down", "agent", "maint-agent", "agent", "pg"),
            ("Vacuumed the events table", "database", "bob", "cli", "pg"),
            ("CVE review", "checklist", "alice", "cli", "weekly.security-review")]
    for index, (message, category, author, source, check) in enumerate(rows):
        store.add_log(message, at=now - (len(rows) - index) * 3600, category=category, author=author, source=source,
                      check_name=check)
    store.close()
    return config


def test_log_list_newest_first_and_filters(logged):
    assert [e["message"] for e in entries(logged)][:2] == ["CVE review", "Vacuumed the events table"]
    assert [e["author"] for e in entries(logged, "--source", "cli")] == ["alice", "bob", "alice"]
    assert [e["category"] for e in entries(logged, "--category", "hardware,database")] == ["database", "hardware"]
    assert [e["message"][:8] for e in entries(logged, "--check", "pg")] == ["Vacuumed", "catch-up"]
    assert len(entries(logged, "--since", "150m")) == 2
    assert [e["category"] for e in entries(logged, "--until", "270m")] == ["agent"]
    assert len(entries(logged, "--limit", "3")) == 3


def test_log_list_table_and_csv(logged):
    table = run_cli("log", "list", config=logged).stdout.splitlines()
    assert table[0].split()[:1] + table[0].split()[2:] == ["AT", "CATEGORY", "AUTHOR", "CHECK", "MESSAGE"]
    assert table[0].split()[1].startswith("(") and len(table) == 6, "the time column names its zone"
    assert table[1].split()[2:5] == ["checklist", "alice", "weekly.security-review"]
    rows = list(csv.DictReader(io.StringIO(run_cli("log", "list", "--format", "csv", config=logged).stdout)))
    assert list(rows[0]) == ["id", "at", "category", "author", "source", "check", "message"]
    assert [r["id"] for r in rows] == ["5", "4", "3", "2", "1"] and rows[-1]["check"] == ""


def test_log_list_without_store_or_subcommand_exits_two(config):
    assert run_cli("log", "list", config=config).returncode == 2
    assert run_cli("log").returncode == 2


def test_log_agent_writes_start_and_stop_beside_an_operator_entry(agent_factory):
    agent = agent_factory("""
        agent: {state_dir: "{state}"}
        http: {listen: "127.0.0.1:{port}"}
        checks:
          - {name: pg, type: nagios, every: 1h, command: [/bin/true]}
    """).start()
    added = agent.cli("log", "add", "Upgraded PostgreSQL to 15.8", "--category", "update", "--by", "carol")
    assert added.returncode == 0, added.stderr   # written beside the running daemon (WAL, busy timeout)
    assert agent.stop() == 0
    log = json.loads(agent.cli("log", "list", "--format", "json").stdout)
    assert [(e["source"], e["message"].split(" (")[0]) for e in reversed(log)] == [
        ("agent", "agent started"), ("cli", "Upgraded PostgreSQL to 15.8"), ("agent", "agent stopped")]
    assert log[0]["category"] == "agent" and log[0]["author"] == "maint-agent"


# -- history export ---------------------------------------------------------------------------------------

T0 = datetime(2026, 11, 2, 8, 0, tzinfo=timezone.utc).timestamp()
HISTORY = [
    Evaluated("disk", "disk", Status.OK, "/ 41% used", (sample("used_ratio", 0.41, mount="/"),), {}, T0, 0.012, T0),
    Evaluated("pg", "nagios", Status.WARNING, "slow: 0.3s", (sample("response_seconds", 0.3),),
              {"output": "WARNING - slow", "perfdata": {"time": 0.3}}, T0 + 60.5, 0.3, T0 + 60, Status.CRITICAL),
    Evaluated("disk", "disk", Status.CRITICAL, "/ 96% used, \"quoted\", comma", (sample("used_ratio", 0.96, mount="/"),),
              {}, T0 + 120.25, 0.01, T0 + 120),
    Evaluated("pg", "nagios", Status.UNKNOWN, "timeout", (), {"error": "timed out after 30s"}, T0 + 180, 30.0,
              T0 + 180),
]


def expected(run: Evaluated) -> dict:
    return {"check": run.check, "type": run.check_type,
            "started": datetime.fromtimestamp(run.started, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z",
            "duration_seconds": run.duration, "status": run.status.label,
            "pending": run.pending.label if run.pending is not Status.OK else None, "summary": run.summary,
            "metrics": {s.key: s.value for s in run.samples}, "details": run.details}


@pytest.fixture
def history(config, tmp_path):
    store = Store(tmp_path / "var" / "maint-agent.db")
    store.record_runs(HISTORY)
    store.close()
    return config


def test_history_export_jsonl_round_trips_every_field_oldest_first(history):
    out = run_cli("history", "export", "--since", "2026-01-01", config=history)
    assert out.returncode == 0, out.stderr
    assert [json.loads(line) for line in out.stdout.splitlines()] == [expected(r) for r in HISTORY]


def test_history_export_csv_round_trips_with_json_columns(history):
    out = run_cli("history", "export", "--format", "csv", config=history)
    assert out.returncode == 0, out.stderr
    rows = list(csv.DictReader(io.StringIO(out.stdout)))
    assert tuple(rows[0]) == EXPORT_COLUMNS
    decoded = [{**row, "duration_seconds": float(row["duration_seconds"]), "pending": row["pending"] or None,
                "metrics": json.loads(row["metrics"]), "details": json.loads(row["details"])} for row in rows]
    assert decoded == [expected(r) for r in HISTORY]


def test_history_export_filters_by_check_and_time(history):
    since = datetime.fromtimestamp(T0 + 60, timezone.utc).astimezone().strftime("%Y-%m-%dT%H:%M:%S")
    until = datetime.fromtimestamp(T0 + 180, timezone.utc).astimezone().strftime("%Y-%m-%dT%H:%M:%S")
    out = run_cli("history", "export", "--since", since, "--until", until, config=history)
    assert [json.loads(line)["summary"] for line in out.stdout.splitlines()] == [HISTORY[1].summary,
                                                                                  HISTORY[2].summary]
    pg = run_cli("history", "--config", str(history), "export", "--check", "pg")   # options before the word are kept
    assert [json.loads(line)["status"] for line in pg.stdout.splitlines()] == ["warning", "unknown"]
    typo = run_cli("history", "export", "--check", "pgg", config=history)
    assert typo.returncode == 2 and "did you mean 'pg'" in typo.stderr


def test_history_export_output_file_is_complete_or_absent(history, tmp_path):
    target = tmp_path / "out" / "runs.csv"
    target.parent.mkdir()
    out = run_cli("history", "export", "--format", "csv", "--output", str(target), config=history)
    assert out.returncode == 0 and out.stdout.strip() == f"exported 4 runs to {target}"
    assert len(target.read_text().splitlines()) == 5 and [p.name for p in target.parent.iterdir()] == ["runs.csv"]
    missing_dir = run_cli("history", "export", "--output", str(tmp_path / "nope" / "x.jsonl"), config=history)
    assert missing_dir.returncode == 2 and "cannot write" in missing_dir.stderr


def export_with_umask(config, output: Path, umask: int) -> subprocess.CompletedProcess:
    return subprocess.run([*AGENT, "history", "export", "--config", str(config), "--output", str(output)], cwd=REPO,
                          capture_output=True, text=True, timeout=60, umask=umask)


def test_history_export_output_file_private_even_with_umask_022(history, tmp_path):
    target = tmp_path / "runs.jsonl"
    target.write_text("an older export\n")
    target.chmod(0o644)
    out = export_with_umask(history, target, 0o022)
    assert out.returncode == 0, out.stderr
    assert len(target.read_text().splitlines()) == 4
    assert oct(target.stat().st_mode & 0o777) == "0o600"   # summaries and command output: the owner's alone


def test_history_export_never_writes_through_a_planted_symlink(history, tmp_path):
    """Someone who can write the output directory (/tmp) plants a link to a file root owns elsewhere."""
    victim = tmp_path / "elsewhere" / "passwd"
    victim.parent.mkdir()
    victim.write_text("root:x:0:0::/root:/bin/sh\n")
    drop = tmp_path / "shared"
    drop.mkdir(mode=0o1777)
    link = drop / "runs.jsonl"
    link.symlink_to(victim)
    out = export_with_umask(history, link, 0o022)
    assert out.returncode == 2
    assert out.stderr == (f"maint-agent: cannot write {link}: is a symbolic link (to {victim}); name the file "
                          "itself (output never follows a link)\n")
    assert victim.read_text() == "root:x:0:0::/root:/bin/sh\n"
    assert link.is_symlink() and sorted(p.name for p in drop.iterdir()) == ["runs.jsonl"]   # no temp file left


def test_history_listing_still_works_beside_export(history):
    out = run_cli("history", "--check", "disk", "--format", "json", config=history)
    assert out.returncode == 0, out.stderr
    assert [r["status"] for r in json.loads(out.stdout)] == ["critical", "ok"]


@pytest.mark.parametrize("command", [["log"], ["log", "add"], ["log", "list"], ["history", "export"]])
def test_log_and_export_help_exits_zero(command):
    out = run_cli(*command, "--help")
    assert out.returncode == 0 and f"usage: maint-agent {' '.join(command)}" in out.stdout
