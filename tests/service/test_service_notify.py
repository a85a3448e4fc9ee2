"""sd_notify as systemd sees it. systemd cannot be PID 1 here, so the test plays its part: it binds the
datagram socket that $NOTIFY_SOCKET names and reads what the daemon sends, as systemd would."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import AGENT, REPO, AgentProcess, wait_for

BASE = """
agent: {state_dir: "{state}"}
http: {listen: "127.0.0.1:{port}"}
checks:
"""
WATCHDOG_USEC = 600_000          # WatchdogSec=0.6s: the daemon pings every 0.3 s


class FakeSystemd:
    """The receiving end of $NOTIFY_SOCKET: every datagram, in order, each as a set of KEY=VALUE lines."""

    def __init__(self, path: Path):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.path = path
        self.seen: list[dict[str, str]] = []

    def next(self, timeout: float) -> dict[str, str] | None:
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(4096).decode()
        except TimeoutError:
            return None
        message = dict(line.split("=", 1) for line in data.splitlines() if "=" in line)
        self.seen.append(message)
        return message

    def wait(self, key: str, timeout: float = 15.0) -> dict[str, str]:
        """The next message carrying `key` (earlier ones are kept in `seen`)."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            message = self.next(left)
            if message is not None and key in message:
                return message
        pytest.fail(f"no {key} within {timeout}s; got {self.seen[-5:]}")

    def quiet(self, key: str, seconds: float) -> list[dict[str, str]]:
        """Every message with `key` during the next `seconds` (the test expects none)."""
        end, found = time.monotonic() + seconds, []
        while (left := end - time.monotonic()) > 0:
            message = self.next(left)
            if message is not None and key in message:
                found.append(message)
        return found

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def systemd(tmp_path):
    fake = FakeSystemd(tmp_path / "notify.sock")
    yield fake
    fake.close()


STALLABLE = """
import os, sys, time
from agent.daemon import Daemon
from agent.cli.main import main
stall, take_requests = os.environ.pop("STALL_FILE"), Daemon._take_requests
def blocking(self, now):   # a deadlocked scheduler loop, as long as the file exists
    while os.path.exists(stall):
        time.sleep(0.05)
    return take_requests(self, now)
Daemon._take_requests = blocking
sys.exit(main(sys.argv[1:]))
"""
"""The agent with its scheduler loop blocked while $STALL_FILE exists: the test's own double of a deadlock, so
the production loop carries no test hook (every other part — HTTP server, workers, sd_notify — is the real one)."""


def spawn(agent: AgentProcess, env: dict[str, str], stall: Path | None = None) -> None:
    """Start without waiting for /healthz: the test wants to see what comes first."""
    agent._log_fh = open(agent.log, "ab")
    argv = [*AGENT] if stall is None else [sys.executable, "-c", STALLABLE]
    extra = {} if stall is None else {"STALL_FILE": str(stall)}
    agent.proc = subprocess.Popen([*argv, "run", "--config", str(agent.config)], cwd=REPO, stdout=agent._log_fh,
                                  stderr=subprocess.STDOUT, env={**os.environ, **env, **extra})


def test_notify_ready_after_metrics_answers_watchdog_pauses_while_loop_blocked(agent_factory, systemd, tmp_path):
    stall = tmp_path / "stall"
    agent = agent_factory(BASE + "  - {name: load, type: load, every: 200ms}\n")
    spawn(agent, {"NOTIFY_SOCKET": str(systemd.path), "WATCHDOG_USEC": str(WATCHDOG_USEC)}, stall)

    ready = systemd.wait("READY")
    status, body = agent.get("/metrics")             # asked the moment READY=1 arrived
    assert status == 200 and b"maint_agent_info" in body
    assert ready["STATUS"].startswith("1 checks") and ready["MAINPID"] == str(agent.proc.pid)

    pings = [systemd.wait("WATCHDOG", 2) for _ in range(4)]
    assert all(p["WATCHDOG"] == "1" for p in pings), "keeps arriving, well within WatchdogSec"

    stall.touch()                                    # the scheduler loop now blocks (STALLABLE)
    systemd.quiet("WATCHDOG", WATCHDOG_USEC / 2e6 + 0.2)   # at most one ping already under way
    assert systemd.quiet("WATCHDOG", 3 * WATCHDOG_USEC / 1e6) == [], \
        "a blocked loop must stop the pings, so systemd's watchdog restarts the agent"
    assert agent.get("/metrics")[0] == 200, "only the loop is blocked, not the HTTP server"

    stall.unlink()
    systemd.wait("WATCHDOG", 3)

    agent.send(signal.SIGHUP)
    reloading = systemd.wait("RELOADING")
    assert reloading["RELOADING"] == "1" and int(reloading["MONOTONIC_USEC"]) > 0
    assert "STATUS" in systemd.wait("READY", 10)

    agent.send(signal.SIGTERM)
    systemd.wait("STOPPING")
    assert agent.proc.wait(15) == 0


def test_notify_without_watchdog_sends_no_pings_but_status_follows_checks(agent_factory, systemd, tmp_path):
    agent = agent_factory(BASE + f"  - {{name: gone, type: file, every: 200ms, path: {tmp_path}/absent}}\n")
    spawn(agent, {"NOTIFY_SOCKET": str(systemd.path)})
    assert systemd.wait("READY")["STATUS"] == "1 checks, all ok"   # nothing has run yet
    changed = systemd.wait("STATUS")
    assert changed["STATUS"] == "1 checks, 1 critical"
    assert not any("WATCHDOG" in m for m in systemd.seen)
    agent.stop()


def test_notify_watchdog_for_another_pid_is_not_ours(agent_factory, systemd):
    """WATCHDOG_PID names the process the watchdog is for; a child that inherited the variables stays quiet."""
    agent = agent_factory(BASE + "  - {name: load, type: load, every: 200ms}\n")
    spawn(agent, {"NOTIFY_SOCKET": str(systemd.path), "WATCHDOG_USEC": str(WATCHDOG_USEC), "WATCHDOG_PID": "1"})
    systemd.wait("READY")
    assert systemd.quiet("WATCHDOG", 3 * WATCHDOG_USEC / 1e6) == []
    wait_for(lambda: agent.get("/healthz")[0] == 200, what="the agent to be healthy all the same")
    agent.stop()
