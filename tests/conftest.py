"""Shared fixtures: temporary configs and the real agent as a subprocess on a free loopback port."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pytest

REPO = Path(__file__).resolve().parent.parent
AGENT = [sys.executable, "-m", "agent.cli"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(condition: Callable[[], object], timeout: float = 15.0, interval: float = 0.05, what: str = ""):
    """Poll `condition` until it returns a truthy value; fail the test at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what or condition}")
        time.sleep(interval)


def run_cli(*args: str, config: Path | None = None, check: bool = False) -> subprocess.CompletedProcess:
    cmd = [*AGENT, *args]
    if config is not None:
        cmd += ["--config", str(config)]
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=60, check=check)


@pytest.fixture
def write_config(tmp_path: Path) -> Callable[[str], Path]:
    """Write dedented YAML to tmp_path/agent.yaml (state in tmp_path/var) and return its path."""

    def write(text: str, name: str = "agent.yaml") -> Path:
        path = tmp_path / name
        path.write_text(textwrap.dedent(text).lstrip())
        return path

    return write


@dataclass
class AgentProcess:
    """A running `maint-agent run` with its config, port and captured log."""

    config: Path
    port: int
    log: Path
    proc: subprocess.Popen | None = None
    _log_fh: object = field(default=None, repr=False)

    def start(self, timeout: float = 15.0, env: dict | None = None, wrapper: tuple[str, ...] = (),
              umask: int = -1) -> "AgentProcess":
        """`wrapper` is an argv prefix the agent runs under (a confinement that systemd would apply); `umask`
        is the one it inherits, as a shell would pass it (-1 keeps the test's)."""
        self._log_fh = open(self.log, "ab")
        self.proc = subprocess.Popen([*wrapper, *AGENT, "run", "--config", str(self.config)], cwd=REPO,
                                     stdout=self._log_fh, stderr=subprocess.STDOUT,
                                     env={**os.environ, **(env or {})}, umask=umask)
        wait_for(self._ready, timeout, what="agent /healthz to answer")
        return self

    def _ready(self) -> bool:
        if self.proc.poll() is not None:
            pytest.fail(f"agent exited with {self.proc.returncode}:\n{self.log.read_text()}")
        try:
            self.get("/healthz")
            return True
        except OSError:
            return False

    def get(self, path: str, headers: dict | None = None) -> tuple[int, bytes]:
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", headers=headers or {})
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    def metrics(self) -> str:
        status, body = self.get("/metrics")
        assert status == 200
        return body.decode()

    def send(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> int:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self._log_fh:
            self._log_fh.close()
            self._log_fh = None
        return self.proc.returncode if self.proc else 0

    def cli(self, *args: str) -> subprocess.CompletedProcess:
        return run_cli(*args, config=self.config)


@pytest.fixture
def agent_factory(tmp_path: Path):
    """Build (not start) agents from YAML; `{port}` and `{state}` in the text are filled in. All stopped at the
    end, and then their logs must read as logfmt with each key once (tests/fixtures/logfmt.py)."""
    agents: list[AgentProcess] = []

    def make(yaml_text: str, name: str = "agent.yaml") -> AgentProcess:
        port = free_port()
        text = textwrap.dedent(yaml_text).lstrip().replace("{port}", str(port)).replace(
            "{state}", str(tmp_path / "var"))
        path = tmp_path / name
        path.write_text(text)
        agent = AgentProcess(path, port, tmp_path / f"{path.stem}.log")
        agents.append(agent)
        return agent

    yield make
    for agent in agents:
        agent.stop(signal.SIGKILL)
    from tests.fixtures.logfmt import event_problems
    for agent in agents:   # every line any daemon wrote in any test: logfmt, each key once
        problems = event_problems(agent.log.read_text(errors="replace")) if agent.log.exists() else []
        if problems:
            pytest.fail(f"{agent.log}: log lines that logfmt parsers misread:\n" + "\n".join(problems[:5]))


def have(program: str) -> bool:
    return any(os.access(os.path.join(d, program), os.X_OK) for d in os.environ.get("PATH", "").split(os.pathsep))


@pytest.fixture
def closed_port():
    """A port bound but not listening: connects are refused, and nobody else can take it meanwhile."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    yield sock.getsockname()[1]
    sock.close()


@pytest.fixture
def blackhole():
    """A listening socket with backlog 0 whose accept queue is filled: further SYNs are dropped,
    so a connect hangs until its timeout, like a firewalled host."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(0)
    port = server.getsockname()[1]
    fillers = []
    for _ in range(16):
        client = socket.socket()
        client.settimeout(0.3)
        fillers.append(client)
        try:
            client.connect(("127.0.0.1", port))
        except TimeoutError:
            break
    else:
        pytest.skip("could not fill a backlog-0 accept queue on this kernel")
    yield port
    for client in fillers:
        client.close()
    server.close()
