"""Shared helpers for the benchmark scripts: free ports, a private copy of agent.yaml, starting and
stopping the agent and the anchors (node_exporter, monit), small statistics.

Every process started here is ended here, by its own pid. Everything listens on 127.0.0.1 only.
"""

from __future__ import annotations

import http.client
import json
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
OUT = BENCH / "out"
VENV_BIN = REPO / ".venv" / "bin"
AGENT_BIN = VENV_BIN / "maint-agent"
VENV_PYTHON = VENV_BIN / "python"
NODE_EXPORTER = "/usr/bin/prometheus-node-exporter"
MONIT = "/usr/bin/monit"
HOST = "127.0.0.1"
MIB = 1024 * 1024


def log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def which(path_or_name: str) -> str | None:
    """An executable's path, or None (the caller then skips that anchor with a message)."""
    if os.sep in path_or_name:
        return path_or_name if os.access(path_or_name, os.X_OK) else None
    return shutil.which(path_or_name)


def machine() -> str:
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{platform.system()} {platform.release()}, {os.cpu_count()} CPUs {cpu}".strip() + \
        f", Python {platform.python_version()}"


def loadavg() -> str:
    """The 1/5/15-minute load averages: benchmarks want a quiet machine, so every report shows them."""
    try:
        return "load average {:.2f} {:.2f} {:.2f}".format(*os.getloadavg())
    except OSError:
        return "load average n/a"


# -- the agent's config ------------------------------------------------------------------------------------


def agent_config(workdir: Path, port: int, source: Path = REPO / "agent.yaml") -> tuple[Path, int, int]:
    """Copy the repo's agent.yaml into `workdir`, with state_dir inside it and http.listen on `port`.

    The checks stay the same; a check that probes the agent's own listen address follows it to the new
    port (otherwise `latency-metrics-self` would probe a dev agent or nothing). Returns (path, number of
    interval checks, i.e. the ones that run right after start, number of checks).
    """
    text = source.read_text(encoding="utf-8")
    data = yaml.safe_load(text)
    old_listen = (data.get("http") or {}).get("listen", "127.0.0.1:9469")
    new_listen = f"{HOST}:{port}"
    state_dir = workdir / "var"
    text, n = re.subn(r"(?m)^(\s*state_dir:\s*)\S+", lambda m: f"{m.group(1)}{state_dir}", text, count=1)
    if n != 1:
        raise SystemExit(f"cannot find agent.state_dir in {source}")
    text = text.replace(old_listen, new_listen)
    new = yaml.safe_load(text)
    assert new["agent"]["state_dir"] == str(state_dir) and new["http"]["listen"] == new_listen, new
    assert [c["name"] for c in new["checks"]] == [c["name"] for c in data["checks"]]
    path = workdir / "agent.yaml"
    path.write_text(text, encoding="utf-8")
    interval_checks = sum(1 for c in new["checks"] if c.get("every") and c.get("enabled", True))
    return path, interval_checks, len(new["checks"])


# -- processes ---------------------------------------------------------------------------------------------


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen
    port: int | None = None
    logfile: Path | None = None
    extra: dict = field(default_factory=dict)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def tail(self, lines: int = 20) -> str:
        if not self.logfile or not self.logfile.exists():
            return ""
        return "\n".join(self.logfile.read_text(errors="replace").splitlines()[-lines:])

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM this process (by pid), then SIGKILL it after `timeout`."""
        if self.popen.poll() is not None:
            return
        try:
            os.kill(self.popen.pid, signal.SIGTERM)
            self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            log(f"{self.name} (pid {self.popen.pid}) ignored SIGTERM for {timeout:g}s; SIGKILL")
            os.kill(self.popen.pid, signal.SIGKILL)
            self.popen.wait(timeout=5)
        except ProcessLookupError:
            pass


def _spawn(name: str, argv: list[str], logfile: Path, port: int | None = None, **kw) -> Proc:
    fh = open(logfile, "ab")
    try:
        popen = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=fh, stderr=subprocess.STDOUT, **kw)
    finally:
        fh.close()
    return Proc(name, popen, port, logfile)


def http_get(port: int, path: str, timeout: float = 2.0) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def wait_http(proc: Proc, path: str, timeout: float, ok=lambda status, body: status == 200) -> bytes:
    """Poll 127.0.0.1:port/path until `ok`; raise if the process died or `timeout` passed."""
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        if not proc.alive():
            raise RuntimeError(f"{proc.name} exited with {proc.popen.returncode}:\n{proc.tail()}")
        try:
            status, body = http_get(proc.port, path)
            if ok(status, body):
                return body
            last = f"HTTP {status}"
        except OSError as exc:
            last = str(exc)
        time.sleep(0.2)
    raise RuntimeError(f"{proc.name} not ready on {HOST}:{proc.port}{path} after {timeout:g}s ({last}):\n"
                       f"{proc.tail()}")


def start_agent(workdir: Path, *, agent_bin: Path = AGENT_BIN, ready_timeout: float = 60.0,
                wait_checks: bool = True) -> Proc:
    """Start `maint-agent run` on a private copy of agent.yaml; return once /healthz answers and (with
    wait_checks, for a first start) every interval check has run. On a restart the persisted schedule
    decides when each check is next due, so there is nothing to wait for beyond /metrics."""
    port = free_port()
    cfg, interval_checks, all_checks = agent_config(workdir, port)
    proc = _spawn("maint-agent", [str(agent_bin), "run", "--config", str(cfg)], workdir / "agent.log", port,
                  cwd=workdir)
    proc.extra.update(config=cfg, interval_checks=interval_checks, checks=all_checks)
    try:
        wait_http(proc, "/healthz", ready_timeout)
        wait_http(proc, "/metrics", ready_timeout,
                  lambda s, b: s == 200 and (not wait_checks or
                                             b.count(b"maint_check_last_run_timestamp_seconds{") >= interval_checks))
    except BaseException:
        proc.stop()
        raise
    return proc


def start_node_exporter(workdir: Path, binary: str = NODE_EXPORTER, ready_timeout: float = 30.0) -> Proc | None:
    exe = which(binary)
    if exe is None:
        log(f"SKIP node_exporter anchor: {binary} not found (Debian: apt-get install prometheus-node-exporter)")
        return None
    port = free_port()
    proc = _spawn("node_exporter", [exe, f"--web.listen-address={HOST}:{port}"], workdir / "node_exporter.log",
                  port)
    try:
        wait_http(proc, "/metrics", ready_timeout)
    except BaseException:
        proc.stop()
        raise
    return proc


def monitrc(workdir: Path, every: int = 15) -> Path:
    """10 checks every `every` s, mirroring the agent's host checks; no httpd. monit demands mode 0600."""
    path = workdir / "monitrc"
    checks = [
        # cpu, memory, swap, load of the agent → one `check system`
        f"check system bench_host\n"
        f"    if cpu usage > 95% for 20 cycles then alert\n"
        f"    if memory usage > 85% for 20 cycles then alert\n"
        f"    if swap usage > 50% for 40 cycles then alert\n"
        f"    if loadavg (5min) per core > 2 for 40 cycles then alert",
        "check filesystem fs_root with path /\n    if space usage > 90% then alert\n"
        "    if inode usage > 90% then alert",
        *(  # monit's filesystem check needs a mount point; where /var or /tmp is none, watch the directory
            f"check filesystem fs_{d} with path /{d}\n    if space usage > 90% then alert" if os.path.ismount(f"/{d}")
            else f"check directory dir_{d} with path /{d}\n    if failed permission {mode} then alert"
            for d, mode in (("var", "755"), ("tmp", "1777"))),
        "check directory apt_lists with path /var/lib/apt/lists\n    if timestamp > 7 days then alert",
        "check file etc_passwd with path /etc/passwd\n    if changed checksum then alert",
        "check file etc_group with path /etc/group\n    if changed checksum then alert",
        "check file etc_hosts with path /etc/hosts\n    if timestamp > 3650 days then alert",
        "check network loopback with interface lo\n    if link down then alert",
        'check process maint_agent matching "maint-agent"\n    if not exist then alert',
    ]
    assert len(checks) == 10
    text = (f"set daemon {every}\n"
            f"set logfile {workdir / 'monit.log'}\n"
            f"set pidfile {workdir / 'monit.pid'}\n"
            f"set idfile {workdir / 'monit.id'}\n"
            f"set statefile {workdir / 'monit.state'}\n"
            f"# no `set httpd`: the HTTP interface stays off\n\n" + "\n\n".join(checks) + "\n")
    path.write_text(text)
    path.chmod(0o600)
    return path


def start_monit(workdir: Path, binary: str = MONIT, every: int = 15, rc: Path | None = None) -> Proc | None:
    """monit in the foreground on `rc` (default: `monitrc(workdir, every)`); None when it is not installed."""
    exe = which(binary)
    if exe is None:
        log(f"SKIP monit anchor: {binary} not found (Debian: apt-get install monit)")
        return None
    rc = rc or monitrc(workdir, every)
    syntax = subprocess.run([exe, "-t", "-c", str(rc)], capture_output=True, text=True, timeout=30)
    if syntax.returncode != 0:
        raise RuntimeError(f"monit rejected {rc}: {syntax.stdout}{syntax.stderr}")
    proc = _spawn("monit", [exe, "-I", "-c", str(rc)], workdir / "monit.stdout", None, cwd=workdir)
    proc.logfile = workdir / "monit.log"
    time.sleep(2.0)                     # monit runs its first cycle at start; fail fast if it exits
    if not proc.alive():
        raise RuntimeError(f"monit exited with {proc.popen.returncode}:\n"
                           f"{(workdir / 'monit.stdout').read_text(errors='replace')}\n{proc.tail()}")
    return proc


def stop_all(procs) -> None:
    for proc in procs:
        if proc is not None:
            proc.stop()


# -- numbers -----------------------------------------------------------------------------------------------


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of an ascending list."""
    if not sorted_values:
        return float("nan")
    rank = max(1, min(len(sorted_values), int(-(-q * len(sorted_values) // 100))))
    return sorted_values[rank - 1]


def ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b == 0:
        return None
    return a / b


def fmt(value, spec: str = ".2f", none: str = "n/a") -> str:
    if value is None or (isinstance(value, float) and value != value):
        return none
    return format(value, spec)


def table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    line = lambda r: "  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip()  # noqa: E731
    return "\n".join([line(header), line(["-" * w for w in widths])] + [line(r) for r in rows])


def write_json(path: str | None, data: dict) -> None:
    if path:
        Path(path).write_text(json.dumps(data, indent=2, default=str) + "\n")
