"""The real agent as a subprocess: /metrics through promtool, history, reload, SIGKILL, catch-up, SIGTERM."""

import hashlib
import json
import os
import re
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import psutil
import pytest

from tests.conftest import have, wait_for

CHECK_DUMMY = "/usr/lib/nagios/plugins/check_dummy"

BASE = """
agent:
  state_dir: {state}
  workers: 4
http:
  listen: 127.0.0.1:{port}
checks:
"""


def scraped_status(agent, check: str) -> float | None:
    match = re.search(rf'^maint_check_status{{check="{re.escape(check)}",[^}}]*}} (\S+)$', agent.metrics(), re.M)
    return float(match.group(1)) if match else None


def runs_total(agent, check: str) -> float:
    total = 0.0
    for value in re.findall(rf'^maint_check_runs_total{{check="{re.escape(check)}",[^}}]*}} (\S+)$',
                            agent.metrics(), re.M):
        total += float(value)
    return total


def history(agent, *args) -> list[dict]:
    out = agent.cli("history", "--format", "json", "--limit", "0", *args)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def db_path(agent) -> Path:
    return agent.config.parent / "var" / "maint-agent.db"


@pytest.mark.skipif(not have("promtool"), reason="promtool missing (Debian package prometheus)")
def test_daemon_metrics_scrape_passes_promtool_and_history_shows_runs(agent_factory):
    agent = agent_factory(BASE + """
  - {name: cpu, type: cpu, every: 1s, warning: 80%, for: 5m}
  - {name: memory, type: memory, every: 1s, warning: 85%}
  - {name: swap, type: swap, every: 1s}
  - {name: disk, type: disk, every: 1s, mounts: [/, /tmp], critical: 99.9%}
  - {name: load, type: load, every: 1s}
  - {name: self-latency, type: network_latency, every: 1s, targets: ["127.0.0.1:{port}"], warning: 200ms}
  - {name: test-runner, type: process, every: 1s, cmdline: "pytest", critical: 1}
  - {name: config-file, type: file, every: 1s, path: "{state}/../agent.yaml", warning: 1h}
  - {name: echo-plugin, type: nagios, every: 1s, command: [/bin/echo, "OK - fine | time=0.5s;1;2 size=10KB"]}
""").start()
    names = ["cpu", "memory", "swap", "disk", "load", "self-latency", "test-runner", "config-file", "echo-plugin"]
    wait_for(lambda: all(scraped_status(agent, n) is not None for n in names), 20, what="every check to report")
    body = agent.metrics()
    assert scraped_status(agent, "test-runner") == 0, "the agent sees the pytest process"
    assert 'maint_disk_used_ratio{check="disk",mount="/tmp"}' in body
    assert 'maint_nagios_perfdata_value{check="echo-plugin",label="time",unit="seconds"} 0.5' in body
    promtool = subprocess.run(["promtool", "check", "metrics"], input=body, capture_output=True, text=True)
    assert promtool.returncode == 0 and promtool.stdout == "" and promtool.stderr == "", promtool.stderr

    runs = history(agent, "--check", "cpu")
    assert runs and all(r["check"] == "cpu" for r in runs)
    assert set(runs[0]) >= {"started", "status", "summary", "metrics", "duration_seconds"}
    assert "usage_ratio" in runs[0]["metrics"]

    status, text = agent.get("/healthz")
    assert status == 200 and text.startswith(b"ok 9 checks")
    assert agent.stop() == 0


def test_daemon_sighup_broken_config_keeps_old_then_valid_config_applies(agent_factory):
    agent = agent_factory(BASE + """
  - {name: fast, type: load, every: 200ms}
""").start()
    wait_for(lambda: runs_total(agent, "fast") >= 2, what="first runs")
    good = agent.config.read_text()
    agent.config.write_text(good + "  - {name: broken, type: load, every: 5x, warnign: 1}\n")
    agent.send(signal.SIGHUP)
    wait_for(lambda: "maint_agent_config_last_reload_successful 0.0" in agent.metrics(), what="failed reload")
    log = agent.log.read_text()
    assert "event=config.invalid" in log and "checks[1].every" in log and "did you mean 'warning'" in log
    before = runs_total(agent, "fast")
    wait_for(lambda: runs_total(agent, "fast") >= before + 3, what="old config to keep running")
    assert scraped_status(agent, "broken") is None

    agent.config.write_text(good + "  - {name: added, type: memory, every: 200ms}\n")
    agent.send(signal.SIGHUP)
    wait_for(lambda: scraped_status(agent, "added") is not None, what="the new check to run")
    assert "maint_agent_config_last_reload_successful 1.0" in agent.metrics()
    assert agent.proc.poll() is None
    log_rows = agent.cli("history", "--check", "added", "--format", "json")
    assert json.loads(log_rows.stdout)


def test_daemon_sigkill_during_writes_loses_no_committed_run_and_catches_up_once(agent_factory):
    config = BASE + "".join(f"  - {{name: burst-{i}, type: memory, every: 100ms}}\n" for i in range(6)) + """
  - {name: nightly, type: disk, schedule: daily, mounts: [/]}
"""
    agent = agent_factory(config).start()
    wait_for(lambda: len(history(agent)) >= 150, 30, what="a burst of committed runs")
    seen = history(agent)                       # committed: read by another process from the file
    agent.proc.kill()                           # SIGKILL mid-burst
    agent.proc.wait()

    db = sqlite3.connect(db_path(agent))
    assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    stored = {(r[0], r[1]) for r in db.execute(
        "SELECT c.name, r.started FROM check_runs r JOIN checks c ON c.id = r.check_id")}
    missing = [r for r in seen
               if not any(name == r["check"] and abs(started - _epoch(r["started"])) < 1 for name, started in stored)]
    assert not missing, f"{len(missing)} committed runs lost"
    nightly_runs = db.execute("SELECT count(*) FROM check_runs r JOIN checks c ON c.id = r.check_id "
                              "WHERE c.name = 'nightly'").fetchone()[0]
    assert nightly_runs == 0, "a calendar check does not run at first start"
    # the agent was "down" across three nightly slots
    with db:
        db.execute("UPDATE scheduler_state SET last_fired = ? WHERE check_name = 'nightly'",
                   (time.time() - 3 * 86400 - 600,))
    db.close()

    agent.start()
    wait_for(lambda: len(history(agent, "--check", "nightly")) >= 1, 20, what="the catch-up run")
    count_after_catch_up = len(history(agent, "--check", "burst-0"))
    wait_for(lambda: len(history(agent, "--check", "burst-0")) >= count_after_catch_up + 20, 20,
             what="twenty more scheduler rounds")
    assert len(history(agent, "--check", "nightly")) == 1, "missed slots run once, not once per slot"
    log = agent.log.read_text()
    assert log.count("event=check.catch_up check=nightly") == 1
    assert agent.stop() == 0


def _epoch(iso: str) -> float:
    from datetime import datetime
    return datetime.fromisoformat(iso).timestamp()


def test_daemon_sigterm_lets_running_check_finish_and_exits_zero(agent_factory):
    agent = agent_factory(BASE + """
  - {name: slow, type: nagios, every: 1h, timeout: 20s, command: [/bin/sh, -c, "sleep 1.5; echo OK - slept"]}
""").start()
    wait_for(lambda: "slow" in agent.log.read_text() or agent.proc.poll() is None, what="agent up")
    time.sleep(0.3)  # the first run starts immediately; signal while it is sleeping
    started = time.monotonic()
    assert agent.stop(signal.SIGTERM) == 0
    assert time.monotonic() - started < 10
    runs = history(agent, "--check", "slow")
    assert len(runs) == 1 and runs[0]["status"] == "ok" and runs[0]["summary"] == "OK - slept"
    assert "event=agent.stopped" in agent.log.read_text()


@pytest.mark.skipif(not Path(CHECK_DUMMY).exists(), reason="monitoring-plugins-basic not installed")
def test_daemon_status_exit_code_reflects_problems(agent_factory):
    agent = agent_factory(BASE + f"""
  - {{name: good, type: nagios, every: 1h, command: [{CHECK_DUMMY}, "0", "all good"]}}
  - {{name: bad, type: nagios, every: 1h, command: [{CHECK_DUMMY}, "2", "on fire"]}}
""").start()
    wait_for(lambda: len(history(agent)) >= 2, what="both checks")
    out = agent.cli("status", "--format", "json")
    assert out.returncode == 1
    rows = {r["check"]: r for r in json.loads(out.stdout)["checks"]}
    assert rows["bad"]["status"] == "critical" and "on fire" in rows["bad"]["summary"]
    assert rows["good"]["status"] == "ok"
    csv_out = agent.cli("status", "--format", "csv")
    assert csv_out.stdout.splitlines()[0].startswith("check,type,status")


def test_daemon_basic_auth_protects_metrics_not_healthz(agent_factory, tmp_path, monkeypatch):
    secret = tmp_path / "metrics-password"
    secret.write_text("s3cret-value\n")
    agent = agent_factory(BASE.replace("http:\n", f"http:\n  basic_auth: {{username: prom, password: '${{file:{secret}}}'}}\n")
                          + "  - {name: load, type: load, every: 1s}\n").start()
    assert agent.get("/metrics")[0] == 401
    assert agent.get("/healthz")[0] == 200
    import base64
    token = base64.b64encode(b"prom:s3cret-value").decode()
    status, body = agent.get("/metrics", {"Authorization": f"Basic {token}"})
    assert status == 200 and b"maint_agent_info" in body
    assert agent.get("/metrics", {"Authorization": "Basic " + base64.b64encode(b"prom:wrong").decode()})[0] == 401
    agent.stop()
    everything = agent.log.read_text() + db_path(agent).read_bytes().decode("latin-1")
    assert "s3cret-value" not in everything


def test_daemon_invalid_config_refuses_to_start_exit_two(agent_factory):
    agent = agent_factory(BASE + "  - {name: x, type: cpu, every: 5x}\n")
    out = agent.cli("run")
    assert out.returncode == 2
    assert f"{agent.config}:7: checks[0].every: invalid duration '5x'" in out.stderr


def test_daemon_started_with_umask_000_keeps_state_dir_and_store_private(agent_factory, tmp_path):
    agent = agent_factory(BASE + "  - {name: load, type: load, every: 1s}\n").start(umask=0o000)
    db = tmp_path / "var" / "maint-agent.db"
    wait_for(lambda: history(agent, "--check", "load"), what="a run in the store")
    files = (db.parent, db, Path(f"{db}-wal"), Path(f"{db}-shm"))
    assert {f.name: oct(f.stat().st_mode & 0o777) for f in files} == {
        "var": "0o700", "maint-agent.db": "0o600", "maint-agent.db-wal": "0o600", "maint-agent.db-shm": "0o600"}
    agent.stop()
    assert "store.mode_narrowed" not in agent.log.read_text()


def test_daemon_store_not_a_database_refuses_to_start_naming_it_file_unchanged(agent_factory, tmp_path):
    agent = agent_factory(BASE + "  - {name: load, type: load}\n")
    db = tmp_path / "var" / "maint-agent.db"
    db.parent.mkdir()
    db.write_bytes(b"not a database, maybe the operator's notes\n" * 200)
    before = hashlib.sha256(db.read_bytes()).hexdigest()
    out = agent.cli("run")
    assert out.returncode == 2, out.stderr
    assert (f'event=agent.failed error="store {db} is not a usable SQLite database (file is not a database): move '
            f'it aside (mv {db} {db}.bad) and start again; the agent never overwrites it"') in out.stderr
    assert "Traceback" not in out.stderr
    assert hashlib.sha256(db.read_bytes()).hexdigest() == before
    assert sorted(p.name for p in db.parent.iterdir()) == ["maint-agent.db"]   # no -wal or -shm beside it


def test_daemon_port_in_use_exits_one_with_reason(agent_factory):
    import socket
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        agent = agent_factory(BASE.replace("{port}", str(port)) + "  - {name: load, type: load}\n")
        out = agent.cli("run")
    assert out.returncode == 1 and "event=agent.failed" in out.stderr
    assert (f"cannot listen on 127.0.0.1:{port}: address already in use; another maint-agent may be running"
            in out.stderr)


def test_daemon_hung_huge_and_broken_checks_leave_fast_check_on_time(agent_factory):
    agent = agent_factory(BASE + """
  - {name: fast, type: load, every: 200ms}
  - {name: hung, type: nagios, every: 200ms, timeout: 1s, command: [/bin/sleep, "1000"]}
  - {name: huge, type: nagios, every: 500ms, command: [/bin/sh, -c, "yes | head -c 20000000"]}
  - {name: broken, type: nagios, every: 500ms, command: [/nonexistent/plugin]}
""").start()
    wait_for(lambda: runs_total(agent, "fast") >= 25, 30, what="25 runs of the fast check")
    body = agent.metrics()
    lag = float(re.search(r'^maint_check_schedule_lag_seconds{check="fast"} (\S+)$', body, re.M).group(1))
    assert lag < 0.1
    assert scraped_status(agent, "hung") == 3 and scraped_status(agent, "broken") == 3
    assert scraped_status(agent, "huge") == 0
    hung = history(agent, "--check", "hung")
    assert hung and all("timed out" in r["summary"] for r in hung)
    fast = history(agent, "--check", "fast")
    assert fast and all(r["status"] == "ok" for r in fast)
    assert agent.proc.poll() is None


@pytest.fixture
def small_tmpfs(tmp_path):
    """A 2 MiB tmpfs to fill up (root only; skipped where mounting is not permitted)."""
    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def test_daemon_disk_full_keeps_results_and_writes_them_when_space_returns(agent_factory, small_tmpfs):
    agent = agent_factory(BASE.replace("{state}", str(small_tmpfs)) + """
  - {name: fast, type: load, every: 100ms}
""").start()
    wait_for(lambda: runs_total(agent, "fast") >= 5, what="first runs")
    filler = small_tmpfs / "filler"
    with open(filler, "wb") as fh:
        try:
            while True:
                fh.write(b"\0" * 65536)
        except OSError:
            pass
    wait_for(lambda: re.search(r"^maint_store_write_errors_total [1-9]", agent.metrics(), re.M), 20,
             what="a failed store write")
    assert agent.get("/healthz")[0] == 503
    filler.unlink()
    wait_for(lambda: "maint_store_pending_runs 0.0" in agent.metrics(), 20, what="the backlog to be written")
    evaluated = runs_total(agent, "fast")
    assert agent.stop() == 0
    db = sqlite3.connect(small_tmpfs / "maint-agent.db")
    stored = db.execute("SELECT count(*) FROM check_runs").fetchone()[0]
    assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    assert stored >= evaluated, f"{evaluated - stored} runs evaluated during the outage were lost"


def test_daemon_sd_notify_ready_watchdog_reloading_stopping(agent_factory, tmp_path):
    """systemd cannot run as PID 1 here: a datagram socket stands in for its NOTIFY_SOCKET."""
    import socket
    path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(10)
    messages: list[str] = []

    def received(token: str) -> bool:
        while not any(token in m for m in messages):
            messages.append(sock.recv(4096).decode())
        return True

    agent = agent_factory(BASE + "  - {name: load, type: load, every: 200ms}\n")
    agent.start(env={"NOTIFY_SOCKET": str(path), "WATCHDOG_USEC": "400000"})
    assert received("READY=1")
    ready = next(m for m in messages if "READY=1" in m)
    assert "STATUS=1 checks" in ready and f"MAINPID={agent.proc.pid}" in ready
    messages.clear()
    assert received("WATCHDOG=1")
    agent.send(signal.SIGHUP)
    assert received("RELOADING=1") and received("READY=1")
    agent.send(signal.SIGTERM)
    assert received("STOPPING=1")
    assert agent.proc.wait(10) == 0
    sock.close()


def test_daemon_store_maintenance_missed_runs_at_start_rolls_up_and_prunes(agent_factory):
    from agent.plugin.result import Evaluated, Status, sample
    from agent.store.writer import Store

    agent = agent_factory(BASE + "  - {name: load, type: load, every: 1h}\n")
    store = Store(db_path(agent))
    old = time.time() - 100 * 86400
    store.record_runs([Evaluated("load", "load", Status.OK, "old", (sample("per_core", 0.5, period="5m"),), {},
                                 old + i * 60, 0.01, old + i * 60) for i in range(10)])
    store.mark_fired("_store_maintenance", time.time() - 2 * 86400)   # the agent was down at 00:15
    store.close()
    agent.start()

    def pruned():
        db = sqlite3.connect(db_path(agent))
        try:
            return db.execute("SELECT count(*) FROM check_runs WHERE started < ?", (old + 86400,)).fetchone()[0] == 0
        finally:
            db.close()

    wait_for(pruned, 20, what="the old raw runs to be pruned")
    db = sqlite3.connect(db_path(agent))
    rollups = db.execute("SELECT runs, ok FROM check_rollups").fetchall()
    assert sum(r[0] for r in rollups) == 10 and sum(r[1] for r in rollups) == 10
    assert "event=task.done task=store_maintenance" in agent.log.read_text()


def test_daemon_reload_with_changed_options_keeps_status_and_counters(agent_factory):
    agent = agent_factory(BASE + "  - {name: load, type: load, every: 200ms, description: before}\n").start()
    wait_for(lambda: runs_total(agent, "load") >= 3, what="first runs")
    agent.config.write_text(agent.config.read_text().replace("description: before", "description: after"))
    before = runs_total(agent, "load")
    agent.send(signal.SIGHUP)
    wait_for(lambda: "event=config.reloaded" in agent.log.read_text(), what="the reload")
    assert scraped_status(agent, "load") == 0, "no gap in the status after a reload"
    assert runs_total(agent, "load") >= before, "counters are not reset"


def test_daemon_calendar_run_queued_at_shutdown_is_caught_up_next_start(agent_factory):
    agent = agent_factory(BASE.replace("workers: 4", "workers: 1") + """
  - {name: slow, type: nagios, every: 1h, command: [/bin/sh, -c, "sleep 2; echo OK"]}
  - {name: nightly, type: disk, schedule: daily, mounts: [/]}
""")
    from agent.store.writer import Store
    store = Store(db_path(agent))
    store.mark_fired("nightly", time.time() - 3 * 86400)
    store.close()
    agent.start()
    wait_for(lambda: "event=check.catch_up check=nightly" in agent.log.read_text(), what="catch-up queued")
    assert agent.stop(signal.SIGTERM) == 0          # nightly was still queued behind slow
    assert history(agent, "--check", "nightly") == []
    agent.start()
    wait_for(lambda: len(history(agent, "--check", "nightly")) == 1, 20, what="the catch-up after restart")


HANGING = """#!/bin/sh
# hangs like a stuck plugin, with a helper of its own in the background
sleep 600 &
echo $! > "$0.helper.tmp" && mv "$0.helper.tmp" "$0.helper"
echo $$ > "$0.pid.tmp" && mv "$0.pid.tmp" "$0.pid"
wait
"""
STUBBORN = HANGING.replace("wait\n", """(trap '' TERM; exec sleep 601) &
echo $! > "$0.stubborn.tmp" && mv "$0.stubborn.tmp" "$0.stubborn"
wait
""")


def _alive(pid: int) -> bool:
    """A zombie is dead: it holds nothing but its pid until its new parent (init) reaps it."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["sigterm", "ctrl-c"])
def test_daemon_stop_kills_children_still_running_after_grace(agent_factory, tmp_path, sig):
    """A plugin and a journalctl still running at shutdown, each with a background helper (the plugin's
    second one deaf to SIGTERM), are gone once the agent has exited and named in the log: none is left
    orphaned in its own session, where neither Ctrl-C nor the agent's SIGTERM would reach it."""
    scripts, parts = {}, {"plugin": ("pid", "helper", "stubborn"), "journalctl": ("pid", "helper")}
    for name, text in (("plugin", STUBBORN), ("journalctl", HANGING)):
        scripts[name] = tmp_path / f"hanging-{name}"
        scripts[name].write_text(text)
        scripts[name].chmod(0o755)
    agent = agent_factory(BASE.replace("workers: 4", "workers: 4\n  shutdown_grace: 300ms") + f"""
  - {{name: stuck-plugin, type: nagios, every: 1h, timeout: 10m, command: [{scripts["plugin"]}]}}
  - {{name: stuck-journal, type: log_scan, source: journal, every: 1h, timeout: 10m,
      journalctl: {scripts["journalctl"]}}}
""")
    pids: dict[str, int] = {}
    try:
        agent.start()
        for name, script in scripts.items():
            for part in parts[name]:
                path = Path(f"{script}.{part}")
                wait_for(path.exists, what=f"{path.name} to start")
                pids[f"{name}.{part}"] = int(path.read_text())
        assert all(_alive(pid) for pid in pids.values())
        assert agent.stop(sig) == 0
        wait_for(lambda: not any(_alive(pid) for pid in pids.values()), 10,
                 what=f"every child to be gone: {[n for n, p in pids.items() if _alive(p)]}")
    finally:
        for pid in pids.values():      # without the fix: do not leave them running on the test host
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    log = agent.log.read_text()
    assert (f"event=child.killed check=stuck-plugin pid={pids['plugin.pid']} program={scripts['plugin']} "
            f"signal=SIGKILL") in log, "the helper deaf to SIGTERM needed SIGKILL"
    assert (f"event=child.killed check=stuck-journal pid={pids['journalctl.pid']} "
            f"program={scripts['journalctl']} signal=SIGTERM") in log
    assert log.index("event=child.killed") < log.index("event=agent.stopped")
