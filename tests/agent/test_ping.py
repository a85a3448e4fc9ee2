"""`maint-agent ping` and heartbeat checks against the real daemon.

The operator story: the nightly pg_dump runs from cron as `maint-agent ping pg-dump -- pg_dump …`.
While it reports on time the heartbeat is OK; when it stops the check turns late, then down, and
the bound notification pages; a failed run is CRITICAL at once and `ping -- COMMAND` exits with the
command's status, its output passing through; a ping sent while the agent is stopped counts when
it starts; a mistyped job name is refused with a suggestion. Periods here are seconds, not days.
"""

from __future__ import annotations

import json
import re
import time

from tests.conftest import run_cli, wait_for
from tests.fixtures.webhook import Receiver

BASE = """
agent:
  state_dir: {state}
http:
  listen: 127.0.0.1:{port}
"""

HEARTBEAT = BASE + """
actions:
  - {name: page, type: notify, slack: {url: "${file:HOOK}"}}
checks:
  - {name: pg-dump, type: heartbeat, period: 2s, grace: 2s, every: 1h, actions: [{action: page}]}
  - {name: other, type: load, every: 1h}
"""


def ping(config, *args: str):
    """`maint-agent ping --config CONFIG ARGS…`: the config before a `-- COMMAND`."""
    return run_cli("ping", "--config", str(config), *args)


def status_of(agent, check: str) -> float | None:
    match = re.search(rf'^maint_check_status{{check="{check}",[^}}]*}} (\S+)$', agent.metrics(), re.M)
    return float(match.group(1)) if match else None


def metric(agent, name: str, check: str) -> float | None:
    match = re.search(rf'^{name}{{check="{check}"}} (\S+)$', agent.metrics(), re.M)
    return float(match.group(1)) if match else None


def summary(agent, check: str) -> str:
    rows = json.loads(agent.cli("status", "--format", "json").stdout)["checks"]
    return next(r["summary"] for r in rows if r["check"] == check)


def test_ping_heartbeat_up_late_down_failed_up_and_the_report_lists_the_runs(agent_factory, tmp_path):
    receiver = Receiver()
    try:
        (tmp_path / "hook").write_text(f"{receiver.url}/services/T0/B0/x\n")
        agent = agent_factory(HEARTBEAT.replace("HOOK", str(tmp_path / "hook"))).start()
        wait_for(lambda: status_of(agent, "pg-dump") == 0, what="a new heartbeat to be OK")
        assert summary(agent, "pg-dump").startswith("new: no signal yet")

        out = ping(agent.config, "pg-dump")
        pinged = time.monotonic()
        assert (out.returncode, out.stdout, out.stderr) == (0, "", ""), "silent for cron"
        wait_for(lambda: metric(agent, "maint_heartbeat_last_success_timestamp_seconds", "pg-dump"), 2,
                 what="the signal to be judged within 2 s")
        assert summary(agent, "pg-dump").startswith("up: last success")

        wait_for(lambda: status_of(agent, "pg-dump") == 1, 4, what="late once the period is over")
        assert time.monotonic() - pinged >= 2 - 0.1
        wait_for(lambda: status_of(agent, "pg-dump") == 2, 4, what="down once the grace is over")
        assert time.monotonic() - pinged >= 4 - 0.1
        assert summary(agent, "pg-dump").startswith("down: last success")
        wait_for(lambda: receiver.bodies, 5, what="the bound notification")
        assert "pg-dump CRITICAL" in receiver.bodies[0]["text"] and "down:" in receiver.bodies[0]["text"]

        failed = ping(agent.config, "pg-dump", "--", "sh", "-c", "echo dumping; echo 'pg_dump: error' >&2; exit 3")
        assert (failed.returncode, failed.stdout, failed.stderr) == (3, "dumping\n", "pg_dump: error\n")
        wait_for(lambda: metric(agent, "maint_heartbeat_last_exit_status", "pg-dump") == 3, 2,
                 what="the failure to be judged")
        assert status_of(agent, "pg-dump") == 2 and summary(agent, "pg-dump").startswith("failed: exit status 3")
        assert ping(agent.config, "pg-dump", "--", "false").returncode == 1

        done = ping(agent.config, "pg-dump", "--", "sh", "-c", "sleep 0.3")
        assert done.returncode == 0
        wait_for(lambda: status_of(agent, "pg-dump") == 0, 2, what="up again after a success")
        assert metric(agent, "maint_heartbeat_last_duration_seconds", "pg-dump") >= 0.3

        report = agent.cli("report", "--period", "day", "--from", time.strftime("%Y-%m-%d"), "--format", "json")
        [job] = json.loads(report.stdout)["jobs"]
        assert (job["check"], job["runs"], job["failures"], job["last_result"]) == ("pg-dump", 4, 2, "success")
        assert job["max_duration_seconds"] >= 0.3
    finally:
        receiver.close()


def test_ping_while_the_agent_is_stopped_counts_when_it_starts(agent_factory):
    agent = agent_factory(BASE + """
checks:
  - {name: batch, type: heartbeat, period: 1h}
""").start()
    wait_for(lambda: status_of(agent, "batch") == 0, what="first judgement")
    assert agent.stop() == 0
    assert ping(agent.config, "batch", "--start").returncode == 0
    assert ping(agent.config, "batch", "--exit-status", "0", "--message", "42 rows").returncode == 0
    agent.start()
    wait_for(lambda: metric(agent, "maint_heartbeat_last_success_timestamp_seconds", "batch"), 5,
             what="the signal sent while stopped")
    assert summary(agent, "batch").startswith("up: last success")
    assert metric(agent, "maint_heartbeat_last_duration_seconds", "batch") is not None, "from the --start"


def test_ping_unknown_job_suggests_the_name_and_exits_2(write_config, tmp_path):
    config = write_config(f"""
        agent: {{state_dir: {tmp_path}/var}}
        checks:
          - {{name: pg-dump, type: heartbeat, period: 1d}}
          - {{name: disk, type: disk, mounts: [/]}}
    """)
    typo = run_cli("ping", "pg-dupm", config=config)
    assert typo.returncode == 2 and "no heartbeat named 'pg-dupm' (did you mean 'pg-dump'?)" in typo.stderr
    other = run_cli("ping", "disk", config=config)
    assert other.returncode == 2 and "'disk' is a disk check, not a heartbeat" in other.stderr
    mixed = ping(config, "pg-dump", "--fail", "--", "true")
    assert mixed.returncode == 2
    # the store does not exist yet: nothing is recorded, and the job still runs with its own status
    wrapped = ping(config, "pg-dupm", "--", "sh", "-c", "echo ran; exit 4")
    assert wrapped.returncode == 4 and wrapped.stdout == "ran\n" and "did you mean 'pg-dump'" in wrapped.stderr
    assert run_cli("ping", "pg-dump", config=config).returncode == 1
    missing = ping(config, "pg-dump", "--", "/nonexistent/job")
    assert missing.returncode == 127 and "command not found: /nonexistent/job" in missing.stderr


def post(agent, path: str, body: bytes = b"", headers: dict | None = None) -> tuple[int, bytes]:
    import urllib.error
    import urllib.request
    request = urllib.request.Request(f"http://127.0.0.1:{agent.port}{path}", data=body, method="POST",
                                     headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def test_ping_over_http_needs_the_metrics_auth_and_keeps_the_body_as_message(agent_factory, tmp_path):
    import base64
    (tmp_path / "password").write_text("s3cret\n")
    agent = agent_factory(BASE + f"""  basic_auth: {{username: jobs, password: "${{file:{tmp_path}/password}}"}}
checks:
  - {{name: batch, type: heartbeat, period: 1h}}
""").start()
    auth = {"Authorization": "Basic " + base64.b64encode(b"jobs:s3cret").decode()}
    assert post(agent, "/ping/batch")[0] == 401
    assert post(agent, "/ping/batch/start", headers=auth) == (200, b"OK\n")
    assert post(agent, "/ping/batch/3", b"rsync: connection unexpectedly closed", auth)[0] == 200
    wait_for(lambda: summary(agent, "batch").startswith("failed: exit status 3"), 3, what="the failure")
    assert "rsync: connection unexpectedly closed" in summary(agent, "batch")
    assert post(agent, "/ping/batch", b"ok", auth)[0] == 200
    wait_for(lambda: summary(agent, "batch").startswith("up: last success"), 3, what="the success")
    assert post(agent, "/ping/bacth", b"", auth) == (404, b"no heartbeat named 'bacth'\n")
    assert post(agent, "/ping/batch/256", b"", auth)[0] == 404
    assert post(agent, "/ping/batch", b"x" * (10 * 1024 + 1), auth)[0] == 413
    assert post(agent, "/ping/batch", b"", {**auth, "Origin": "https://evil.example"})[0] == 403
