"""`maint-agent status`, the screen on-call opens first: whether the agent runs, every configured check worst
first, stale and pending results, colour only on a terminal. Real daemons where the story needs one."""

from __future__ import annotations

import json
import os
import pty
import re
import signal
import subprocess
import time

import pytest

from agent.store.liveness import LOST_AFTER_SECONDS, Liveness, liveness, process_alive, process_identity
from agent.plugin.result import Evaluated, Status
from agent.cli.common import ConfiguredCheck
from agent.cli.statusview import build, header_line, status_cell, summary_cell
from agent.store.writer import Store
from agent.timefmt import iso_utc
from tests.conftest import AGENT, REPO, run_cli, wait_for

DAEMON = """
agent: {{state_dir: {{state}}, timezone: Asia/Ho_Chi_Minh}}
http: {{listen: "127.0.0.1:{{port}}"}}
checks:
  - {{name: broken, type: nagios, every: 1s, command: [/bin/sh, -c, "echo CRITICAL - down; exit 2"]}}
  - {{name: shaky, type: nagios, every: 1s, command: [/bin/sh, -c, "echo WARNING - slow; exit 1"]}}
  - {{name: fine, type: nagios, every: 1s, command: [/bin/true]}}
  - {{name: filling, type: disk, every: 1s, mounts: [/], warning: 0.1%, critical: 0.2%, for: 5m}}
  - {{name: nightly, type: load, schedule: daily}}
  - {{name: spare, type: memory, enabled: false}}
"""


def status(agent, *args: str) -> subprocess.CompletedProcess:
    return agent.cli("status", *args)


def status_json(agent) -> tuple[int, dict]:
    out = status(agent, "--format", "json")
    return out.returncode, json.loads(out.stdout)


def test_status_says_the_agent_is_running_then_down_when_it_is_stopped(agent_factory):
    agent = agent_factory(DAEMON.format()).start()
    def settled():
        code, view = status_json(agent)
        rows = {row["check"]: row for row in view["checks"]}
        return view if rows["broken"]["status"] == "critical" and rows["shaky"]["status"] == "warning" and \
            rows["fine"]["status"] == "ok" and rows["filling"]["pending_in_seconds"] is not None else None

    view = wait_for(settled, what="results of every interval check and the heartbeat of the pending breach")
    assert view["agent"]["running"] and view["agent"]["pid"] == agent.proc.pid
    assert view["agent"]["timezone"] == "Asia/Ho_Chi_Minh" and view["agent"]["newest_result_age_seconds"] < 5
    names = [row["check"] for row in view["checks"]]
    assert names == ["broken", "shaky", "filling", "fine", "nightly", "spare"], "worst first, then name"
    nightly = next(row for row in view["checks"] if row["check"] == "nightly")
    assert nightly["status"] == "never_run" and nightly["next_due"].endswith("T19:00:00.000Z"), "02:00 at +07"

    table = status(agent)
    assert table.returncode == 1, "a check is not OK"
    header, columns, *rows = table.stdout.splitlines()
    assert header.startswith(f"agent running (pid {agent.proc.pid}, up ")
    assert "6 checks: 1 critical, 1 warning, 2 ok, 1 never run, 1 disabled (1 pending)" in header
    assert "times in Asia/Ho_Chi_Minh (+07)" in header and "LAST RUN (+07)" in columns
    filling = next(line for line in rows if line.startswith("filling"))
    assert re.search(r"ok → critical in (4m[0-9]+s|5m)  ", filling), filling
    assert re.search(r"^nightly\s+never run\s+-\s+-\s+next 20\d\d-\d\d-\d\d 02:00:00$", next(
        line for line in rows if line.startswith("nightly")))
    assert re.search(r"^spare\s+disabled\b", rows[-1])

    agent.stop(signal.SIGTERM)
    down = status(agent)
    assert down.returncode == 1
    assert down.stdout.startswith("agent NOT RUNNING (stopped "), down.stdout
    code, view = status_json(agent)
    assert code == 1 and view["agent"]["running"] is False and view["agent"]["state"] == "stopped"


def test_status_says_the_agent_is_down_at_once_after_sigkill(agent_factory):
    agent = agent_factory(DAEMON.format()).start()
    wait_for(lambda: status_json(agent)[1]["agent"]["running"], what="the first heartbeat")
    agent.proc.send_signal(signal.SIGKILL)
    agent.proc.wait()
    out = status(agent)
    assert out.returncode == 1
    assert out.stdout.startswith(f"agent NOT RUNNING (pid {agent.proc.pid} is gone; last heartbeat "), out.stdout


def test_status_all_ok_with_the_agent_running_exits_zero(agent_factory):
    agent = agent_factory("""
        agent: {state_dir: {state}}
        http: {listen: "127.0.0.1:{port}"}
        checks:
          - {name: fine, type: nagios, every: 1s, command: [/bin/true]}
          - {name: nightly, type: load, schedule: daily}
    """).start()
    out = wait_for(lambda: (lambda r: r if "1 ok" in r.stdout else None)(status(agent)), what="a result")
    assert out.returncode == 0, "never run (a calendar check waiting for its slot) is not a problem"


def test_status_dry_run_daemon_shows_the_mode_and_logs_it_at_start(agent_factory):
    agent = agent_factory("""
        agent: {state_dir: {state}}
        http: {listen: "127.0.0.1:{port}"}
        checks:
          - {name: fine, type: nagios, every: 1s, command: [/bin/true]}
    """)
    agent._log_fh = open(agent.log, "ab")
    agent.proc = subprocess.Popen([*AGENT, "run", "--dry-run", "--config", str(agent.config)], cwd=REPO,
                                  stdout=agent._log_fh, stderr=subprocess.STDOUT)
    wait_for(agent._ready, what="agent /healthz")
    view = wait_for(lambda: (lambda v: v if v["agent"]["running"] else None)(status_json(agent)[1]))
    assert view["agent"]["modes"] == ["dry_run"]
    assert " · DRY RUN · " in status(agent).stdout.splitlines()[0]
    started = next(line for line in agent.log.read_text().splitlines() if "event=agent.started" in line)
    assert "dry_run=true" in started


# -- the view, over a fake clock --------------------------------------------------------------------------

NOW = 1_800_000_000.0
RUNNING = Liveness(True, "running", "pid 1, up 1h")


def run(status: int = 0, age: float = 10.0, pending: int = 0, summary: str = "fine") -> dict:
    return {"status": status, "pending": pending, "started": NOW - age, "duration": 0.01, "summary": summary,
            "type": "load"}


def view(configured, latest, beats=None, live=RUNNING, retired=False):
    record = {"checks": beats or {}, "pid": 1, "dry_run": False}
    return build(configured, latest, record, live, NOW - 1, NOW, iso_utc, retired=retired)


def test_status_view_flags_interval_result_older_than_three_intervals_as_stale_and_exits_one():
    checks = [ConfiguredCheck("fresh", "load", True, 60.0), ConfiguredCheck("old", "load", True, 60.0)]
    v = view(checks, {"fresh": run(age=179), "old": run(age=181)})
    rows = {r["check"]: r for r in v.rows}
    assert not rows["fresh"]["stale"] and rows["old"]["stale"]
    assert rows["old"]["stale_reason"] == "ran 3m1s ago, every 1m"
    assert [r["check"] for r in v.rows] == ["old", "fresh"], "a stale OK ranks above OK"
    assert v.problem and status_cell(rows["old"]) == "ok, stale"


def test_status_view_flags_calendar_check_whose_slot_passed_fifteen_minutes_ago():
    checks = [ConfiguredCheck("nightly", "load", True, None)]
    late = view(checks, {"nightly": run(age=86400)}, {"nightly": {"next": NOW - 901, "every": None}})
    on_time = view(checks, {"nightly": run(age=86400)}, {"nightly": {"next": NOW - 60, "every": None}})
    assert late.rows[0]["stale"] and not on_time.rows[0]["stale"]


def test_status_view_pending_breach_shows_what_it_turns_into_and_when():
    checks = [ConfiguredCheck("cpu", "cpu", True, 15.0)]
    v = view(checks, {"cpu": run(pending=2)}, {"cpu": {"next": NOW + 5, "every": 15.0, "pending_at": NOW + 190}})
    assert status_cell(v.rows[0]) == "ok → critical in 3m10s" and not v.problem
    down = view(checks, {"cpu": run(pending=2)}, {"cpu": {"pending_at": NOW + 190}},
                live=Liveness(False, "stopped", "stopped 1m ago"))
    assert status_cell(down.rows[0]) == "ok → critical (pending)" and down.problem, "the agent is down"


def test_status_view_never_run_checks_say_next_due_or_that_the_agent_must_reload():
    checks = [ConfiguredCheck("weekly", "disk", True, None), ConfiguredCheck("added", "disk", True, 60.0),
              ConfiguredCheck("spare", "disk", False, 60.0)]
    v = view(checks, {}, {"weekly": {"next": NOW + 3600, "every": None}})
    rows = {r["check"]: r for r in v.rows}
    assert rows["weekly"]["summary"] == f"next {iso_utc(NOW + 3600)}"
    assert "not loaded by the running agent" in rows["added"]["summary"]
    assert rows["spare"]["status"] == "disabled" and rows["spare"]["marks"] == ["disabled"]
    assert [r["check"] for r in v.rows] == ["added", "weekly", "spare"] and not v.problem
    assert v.counts == {"never_run": 2, "disabled": 1, "stale": 0, "pending": 0}


def test_status_view_marks_checks_in_maintenance_and_says_so_in_the_header():
    checks = [ConfiguredCheck("pg", "postgres", True, 60.0), ConfiguredCheck("disk", "disk", True, 60.0)]
    record = {"checks": {}, "pid": 1, "dry_run": False}
    v = build(checks, {"pg": run(2), "disk": run(0)}, record, RUNNING, NOW - 1, NOW, iso_utc,
              maintenance={"pg": NOW + 3600})
    rows = {r["check"]: r for r in v.rows}
    assert rows["pg"]["marks"] == ["maintenance"] and rows["pg"]["maintenance_until"] == iso_utc(NOW + 3600)
    assert rows["disk"]["maintenance_until"] is None and "maintenance" not in rows["disk"]["marks"]
    assert status_cell(rows["pg"]) == "critical, maintenance"
    assert summary_cell(rows["pg"]).startswith(f"MAINTENANCE until {iso_utc(NOW + 3600)} — ")
    assert v.modes == ["maintenance"] and v.counts["maintenance"] == 1
    assert "MAINTENANCE" in header_line(v, "db1", "UTC", NOW)


def test_status_view_orders_critical_unknown_warning_before_ok_then_by_name():
    checks = [ConfiguredCheck(n, "load", True, 60.0) for n in ("a-ok", "b-warn", "c-unknown", "d-crit", "e-crit")]
    latest = {"a-ok": run(0), "b-warn": run(1), "c-unknown": run(3), "d-crit": run(2), "e-crit": run(2)}
    assert [r["check"] for r in view(checks, latest).rows] == ["d-crit", "e-crit", "c-unknown", "b-warn", "a-ok"]


# -- liveness ---------------------------------------------------------------------------------------------


def test_heartbeat_liveness_stopped_gone_hung_lost_and_running():
    beat = {"pid": 42, "beat": NOW - 5, "started": NOW - 3600}
    assert liveness(None, NOW).state == "unknown"
    assert liveness({**beat, "stopped": NOW - 30}, NOW).detail == "stopped 30s ago"
    assert liveness(beat, NOW, alive=False).state == "gone"
    old = {**beat, "beat": NOW - LOST_AFTER_SECONDS - 1}
    assert liveness(old, NOW, alive=True).state == "hung" and liveness(old, NOW, alive=None).state == "lost"
    live = liveness(beat, NOW, alive=True)
    assert live.running and live.detail == "pid 42, up 1h"


def test_heartbeat_process_alive_refuses_a_recycled_pid():
    sleeper = subprocess.Popen(["sleep", "30"])
    try:
        record = process_identity(sleeper.pid)
        assert process_alive(record) is True
        assert process_alive({**record, "proc_start": "1"}) is False, "same pid, another process"
        assert process_alive({**record, "host": "elsewhere"}) is None, "another host's store: cannot tell"
    finally:
        sleeper.kill()
        sleeper.wait()
    assert process_alive(record) is False


# -- colour ------------------------------------------------------------------------------------------------


@pytest.fixture
def failing_store(write_config, tmp_path):
    config = write_config(f"""
        agent: {{state_dir: {tmp_path}/var}}
        checks:
          - {{name: disk, type: disk, every: 1m}}
    """)
    store = Store(tmp_path / "var" / "maint-agent.db")
    now = time.time()
    store.record_runs([Evaluated("disk", "disk", Status.CRITICAL, "full", (), {}, now, 0.01, now)])
    store.close()
    return config


def on_terminal(config, env: dict) -> str:
    """`status` with its stdout on a pseudo-terminal, as an operator's shell runs it."""
    master, slave = pty.openpty()
    proc = subprocess.Popen([*AGENT, "status", "--config", str(config)], cwd=REPO, stdout=slave,
                            stderr=subprocess.PIPE, env=env)
    os.close(slave)
    chunks = []
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:   # EIO: the other side closed
            break
        if not chunk:
            break
        chunks.append(chunk)
    proc.wait(timeout=30)
    os.close(master)
    return b"".join(chunks).decode()


def test_status_colours_a_terminal_but_not_a_pipe_nor_with_no_color(failing_store):
    env = {k: v for k, v in os.environ.items() if k != "NO_COLOR"}
    coloured = on_terminal(failing_store, {**env, "COLUMNS": "200"})
    assert "\x1b[1;31mcritical" in coloured and "\x1b[1;31mNOT RUNNING" in coloured
    assert "\x1b[" not in on_terminal(failing_store, {**env, "NO_COLOR": "1"})
    piped = run_cli("status", config=failing_store)
    assert piped.returncode == 1 and "\x1b[" not in piped.stdout and "critical" in piped.stdout
