"""Remediation end to end: a real HTTP service the test kills, the agent's `http` check, a `command` action
that restarts it through a tiny supervisor script (tests/fixtures/service.py), verification, audit, metrics,
counters that survive an agent restart, escalation to a real local webhook receiver."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import free_port, wait_for
from tests.fixtures.webhook import Receiver

SERVICE = Path(__file__).resolve().parents[1] / "fixtures" / "service.py"


def start_service(port: int, pidfile: Path, die_after: float | None = None) -> None:
    argv = [sys.executable, str(SERVICE), "start", str(port), str(pidfile)]
    subprocess.run(argv + (["--die-after", str(die_after)] if die_after else []), check=True, timeout=15)


def kill_service(pidfile: Path) -> None:
    try:
        os.kill(int(pidfile.read_text()), signal.SIGKILL)
    except (ProcessLookupError, FileNotFoundError, ValueError):
        pass


@pytest.fixture
def service(tmp_path):
    port, pidfile = free_port(), tmp_path / "service.pid"
    yield port, pidfile
    kill_service(pidfile)


def audit(db: Path, where: str = "1") -> list[dict]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    conn.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in conn.execute(f"SELECT * FROM action_runs WHERE {where} ORDER BY id")]
    finally:
        conn.close()


def log_lines(db: Path) -> list[str]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return [r[0] for r in conn.execute("SELECT message FROM maintenance_log ORDER BY id")]
    finally:
        conn.close()


CONFIG = """
agent:
  state_dir: {state}
http:
  listen: 127.0.0.1:{port}
actions:
  - name: restart-svc
    type: command
    argv: [PYTHON, SERVICE, start, "SVC_PORT", PIDFILE EXTRA]
    cooldown: 1s
    backoff: 1
    max_attempts: MAX
    within: 1h
    verify_after: 0.6s
    settle: 1.5s
    ESCALATE
NOTIFY
checks:
  - name: svc
    type: http
    url: http://127.0.0.1:SVC_PORT/health
    every: 0.3s
    timeout: 2s
    severity: P1
    actions:
      - action: restart-svc
"""


def config(port: int, pidfile: Path, *, max_attempts: int = 3, die_after: float | None = None,
           notify: str = "", escalate: str = "") -> str:
    extra = f', "--die-after", "{die_after}"' if die_after else ""
    return (CONFIG.replace("PYTHON", sys.executable).replace("SERVICE", str(SERVICE))
            .replace("SVC_PORT", str(port)).replace("PIDFILE", str(pidfile)).replace(" EXTRA", extra)
            .replace("MAX", str(max_attempts)).replace("NOTIFY", notify).replace("ESCALATE", escalate))


def test_killed_service_is_restarted_once_and_verified(agent_factory, service):
    port, pidfile = service
    start_service(port, pidfile)
    agent = agent_factory(config(port, pidfile)).start()
    db = agent.config.parent / "var" / "maint-agent.db"
    wait_for(lambda: 'maint_check_status{check="svc",severity="P1",type="http"} 0.0' in agent.metrics(),
             what="service seen healthy")

    kill_service(pidfile)

    rows = wait_for(lambda: [r for r in audit(db) if r["outcome"] == "fixed"], timeout=20,
                    what="restart verified as fixed")
    wait_for(lambda: any("resolved" in line or "OK for" in line for line in log_lines(db)), timeout=20,
             what="resolved after the settle time")
    ran = audit(db, "decision = 'ran'")
    assert len(ran) == 1, ran                      # one attempt, not one per failing result
    row = rows[0]
    assert row["check_name"] == "svc" and row["trigger_status"] == "critical" and row["verified"] == 1
    assert row["exit_code"] == 0 and row["source"] == "policy" and row["target"] == sys.executable
    metrics = agent.metrics()
    assert 'maint_action_runs_total{action="restart-svc",result="success"} 1.0' in metrics
    assert 'maint_check_remediation_exhausted{check="svc"} 0.0' in metrics
    listing = agent.cli("actions", "--format", "json")
    assert listing.returncode == 0, listing.stderr
    assert [r["outcome"] for r in json.loads(listing.stdout)] == ["fixed"]


def test_dry_run_audits_would_run_and_changes_nothing(agent_factory, service, tmp_path):
    port, pidfile = service
    start_service(port, pidfile)
    text = config(port, pidfile).replace("agent:\n", "agent:\n  dry_run: true\n", 1)
    agent = agent_factory(text).start()
    db = agent.config.parent / "var" / "maint-agent.db"
    wait_for(lambda: 'check="svc",severity="P1",type="http"} 0.0' in agent.metrics(), what="healthy")
    first_pid = pidfile.read_text()
    kill_service(pidfile)
    # the audit row is written as `running` before the action starts, then completed: wait for the completed one
    rows = wait_for(lambda: audit(db, "decision = 'dry_run' AND outcome != 'running'"), timeout=20,
                    what="a completed would-run row")
    assert rows[0]["dry_run"] == 1 and rows[0]["outcome"] == "dry_run"
    assert json.loads(rows[0]["details"])["summary"].startswith("would run")
    assert pidfile.read_text() == first_pid         # the restart script never ran
    wait_for(lambda: 'check="svc",severity="P1",type="http"} 2.0' in agent.metrics(), what="critical exposed")


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()


ROUTING_KEY = "R0UT1NGKEY-very-secret-0123456789"
WEBHOOK_TOKEN = "T0KEN-webhook-secret-abcdef"


def test_restart_loop_stops_at_the_limit_escalates_and_survives_an_agent_restart(agent_factory, service, receiver,
                                                                              tmp_path):
    from actions import ACTION_TYPES
    if "notify" not in ACTION_TYPES:
        pytest.skip("the notify action type is not available")
    port, pidfile = service
    start_service(port, pidfile)
    notify = f"""  - name: page
    type: notify
    pagerduty:
      routing_key: ${{env:PD_KEY}}
      url: http://127.0.0.1:{receiver.port}/v2/enqueue
    slack:
      url: ${{env:SLACK_URL}}
"""
    text = config(port, pidfile, max_attempts=2, die_after=0.2, notify=notify, escalate="escalate: [page]")
    env = {"PD_KEY": ROUTING_KEY, "SLACK_URL": f"http://127.0.0.1:{receiver.port}/hooks/{WEBHOOK_TOKEN}"}
    agent = agent_factory(text).start(env=env)
    db = agent.config.parent / "var" / "maint-agent.db"
    wait_for(lambda: 'check="svc",severity="P1",type="http"} 0.0' in agent.metrics(), what="healthy")
    kill_service(pidfile)

    wait_for(lambda: len(audit(db, "decision = 'ran' AND action = 'restart-svc'")) == 1, timeout=20,
             what="first restart")
    # restart the agent mid-sequence: the attempt already made must still count
    assert agent.stop() == 0
    agent.start(env=env)

    wait_for(lambda: audit(db, "decision = 'limit'"), timeout=30, what="attempts stopped at the limit")
    wait_for(lambda: 'maint_check_remediation_exhausted{check="svc"} 1.0' in agent.metrics(), what="exhausted gauge")
    ran = audit(db, "decision = 'ran' AND action = 'restart-svc'")
    assert len(ran) == 2, ran                     # max_attempts across the restart, not per process
    assert all(r["outcome"] == "not fixed" for r in ran)

    pd = wait_for(lambda: [b for b in receiver.bodies if "routing_key" in b and "exhausted" in json.dumps(b)],
                  timeout=20, what="PagerDuty escalation for exhaustion")
    event = pd[0]
    assert event["event_action"] == "trigger" and event["routing_key"] == ROUTING_KEY
    assert event["dedup_key"].endswith("/svc")
    keys = {b["dedup_key"] for b in receiver.bodies if "dedup_key" in b}
    assert len(keys) == 1                          # one incident, one stable dedup key
    assert event["payload"]["severity"] == "error"  # P1 → error
    assert any(f"/hooks/{WEBHOOK_TOKEN}" == p for p in receiver.paths)   # Slack got it too

    # exhausted: more bad results do not restart it again
    before = len(audit(db, "decision = 'ran' AND action = 'restart-svc'"))
    wait_for(lambda: audit(db, "decision = 'exhausted'") or True, timeout=2)
    assert len(audit(db, "decision = 'ran' AND action = 'restart-svc'")) == before

    # an operator resets it: the agent tries again
    reset = agent.cli("actions", "reset", "svc")
    assert reset.returncode == 0, reset.stderr
    wait_for(lambda: len(audit(db, "decision = 'ran' AND action = 'restart-svc'")) > before, timeout=20,
             what="attempt after reset")

    # secrets stay out of the audit, the log and the journal
    dump = json.dumps(audit(db)) + "\n".join(log_lines(db)) + agent.log.read_text()
    assert ROUTING_KEY not in dump and WEBHOOK_TOKEN not in dump
