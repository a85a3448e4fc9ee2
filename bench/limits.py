#!/usr/bin/env python3
"""Peak memory, tasks and descriptors of the agent under load: the figures behind the unit's MemoryMax=,
TasksMax= and LimitNOFILE= (docs/security.md).

Two profiles, each with every interval check run every second (so the 4 workers stay busy):
- the repo's agent.yaml (host checks);
- examples/ai-camera.yaml against a real PostgreSQL 15 primary + standby, a real Redis primary + replica
  and a local S3 (moto), with stub credentials; its actions, reports and notifications are removed so
  nothing restarts or leaves this machine.

Load, for `--seconds`: 4 keep-alive scrapers of /metrics, a flood of idle connections (300 at a time,
reopened), 20 slow clients trickling headers and a client sending 1 MiB of headers, all at once.
Sampled every 0.5 s: the agent's RSS and threads, its descriptors, and the RSS and tasks of its whole
process tree (children count against MemoryMax= and TasksMax= too).

    .venv/bin/python bench/limits.py --seconds 60
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from _common import HOST, MIB, OUT, REPO, free_port, log, machine, table, write_json  # noqa: E402


def interval_every_second(data: dict) -> None:
    for check in data.get("checks", []):
        if check.get("every"):
            check["every"] = "1s"


def repo_profile(workdir: Path, port: int) -> tuple[Path, dict]:
    data = yaml.safe_load((REPO / "agent.yaml").read_text())
    data["agent"]["state_dir"] = str(workdir / "var")
    data["http"]["listen"] = f"{HOST}:{port}"
    for check in data["checks"]:
        if check.get("type") == "network_latency":
            check["targets"] = [f"{HOST}:{port}"]
    interval_every_second(data)
    path = workdir / "agent.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path, {}


def example_profile(workdir: Path, port: int, servers) -> tuple[Path, dict]:
    pg, redis_port, s3_port = servers
    creds = workdir / "credentials"
    creds.mkdir()
    from tests.fixtures.postgres import MONITOR_USER
    (creds / "pg.dsn").write_text(pg.primary.dsn(user=MONITOR_USER, password=pg.monitor_password) + "\n")
    (creds / "restore.dsn").write_text(pg.primary.dsn() + "\n")
    (creds / "redis.password").write_text("bench-redis\n")
    for name in ("s3.key_id", "s3.secret", "pagerduty.key", "smtp.password"):
        (creds / name).write_text("bench\n")
    (creds / "slack.webhook").write_text(f"http://{HOST}:1/not-used\n")
    data = yaml.safe_load((REPO / "examples" / "ai-camera.yaml").read_text())
    data["agent"]["state_dir"] = str(workdir / "var")
    data["http"]["listen"] = f"{HOST}:{port}"
    for key in ("actions", "reports", "smtp", "checklists"):
        data.pop(key, None)
    for check in data["checks"]:
        check.pop("actions", None)
        if check["type"] in ("redis", "redis_replication"):
            check["port"] = redis_port
        if check["type"] == "s3_backup":
            check["endpoint_url"] = f"http://{HOST}:{s3_port}"
    interval_every_second(data)
    path = workdir / "agent.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path, {"CREDENTIALS_DIRECTORY": str(creds)}


# -- load -----------------------------------------------------------------------------------------------


def scraper(port: int, stop: threading.Event, counts: dict) -> None:
    import http.client
    while not stop.is_set():
        conn = http.client.HTTPConnection(HOST, port, timeout=5)
        try:
            for _ in range(50):
                conn.request("GET", "/metrics")
                conn.getresponse().read()
                counts["scrapes"] += 1
        except OSError:
            counts["scrape_errors"] += 1
        finally:
            conn.close()


def idle_flood(port: int, stop: threading.Event) -> None:
    while not stop.is_set():
        socks = []
        for _ in range(300):
            try:
                socks.append(socket.create_connection((HOST, port), timeout=2))
            except OSError:
                break
        stop.wait(1.0)
        for sock in socks:
            sock.close()


def slow_client(port: int, stop: threading.Event) -> None:
    while not stop.is_set():
        try:
            with socket.create_connection((HOST, port), timeout=2) as sock:
                for byte in b"GET /metrics HTTP/1.1\r\nX-Slow: " + b"a" * 60:
                    if stop.is_set():
                        return
                    sock.sendall(bytes([byte]))
                    stop.wait(0.5)
        except OSError:
            pass


def big_headers(port: int, stop: threading.Event) -> None:
    request = b"GET /metrics HTTP/1.1\r\n" + b"X-Big: " + b"a" * MIB + b"\r\n\r\n"
    while not stop.is_set():
        try:
            with socket.create_connection((HOST, port), timeout=2) as sock:
                sock.sendall(request)
                sock.recv(256)
        except OSError:
            pass


class Sampler(threading.Thread):
    """Every 0.5 s: the agent's RSS, threads and descriptors, and its process tree's RSS and tasks (peaks)."""

    def __init__(self, pid: int):
        super().__init__(daemon=True)
        self.process = psutil.Process(pid)
        self.peak = {"rss": 0, "threads": 0, "fds": 0, "tree_rss": 0, "tree_tasks": 0}
        self.children: dict[str, float] = {}   # command → its peak RSS (MiB)
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.wait(0.5):
            try:
                tree = [self.process] + self.process.children(recursive=True)
                values = {"rss": self.process.memory_info().rss, "threads": self.process.num_threads(),
                          "fds": self.process.num_fds(), "tree_rss": 0, "tree_tasks": 0}
                for member in tree:
                    try:
                        rss = member.memory_info().rss
                        values["tree_rss"] += rss
                        values["tree_tasks"] += member.num_threads()
                        if member is not self.process:
                            name = " ".join(member.cmdline()[:3])
                            self.children[name] = max(self.children.get(name, 0.0), rss / MIB)
                    except psutil.Error:
                        pass
            except psutil.Error:
                return
            self.peak = {k: max(self.peak[k], values[k]) for k in self.peak}


def measure(config: Path, env: dict, seconds: float) -> dict:
    port = int(yaml.safe_load(config.read_text())["http"]["listen"].rsplit(":", 1)[1])
    logfile = config.parent / "agent.log"
    with open(logfile, "ab") as fh:
        agent = subprocess.Popen([sys.executable, "-m", "agent.cli", "run", "--config", str(config)], cwd=REPO,
                                 stdin=subprocess.DEVNULL, stdout=fh, stderr=subprocess.STDOUT,
                                 env={**os.environ, "PYTHONPATH": str(REPO), **env})
    sampler = Sampler(agent.pid)
    sampler.start()   # from the start: the store's migration runs in a child
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection((HOST, port), timeout=1).close()
                break
            except OSError:
                if agent.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"agent did not start:\n{logfile.read_text()[-2000:]}")
                time.sleep(0.2)
        time.sleep(3)   # every interval check has run once
        idle_rss = sampler.process.memory_info().rss
        stop, counts = threading.Event(), {"scrapes": 0, "scrape_errors": 0}
        workers = [threading.Thread(target=scraper, args=(port, stop, counts)) for _ in range(4)]
        workers += [threading.Thread(target=idle_flood, args=(port, stop)),
                    threading.Thread(target=big_headers, args=(port, stop))]
        workers += [threading.Thread(target=slow_client, args=(port, stop)) for _ in range(20)]
        for thread in workers:
            thread.start()
        time.sleep(seconds)
        stop.set()
        for thread in workers:
            thread.join(10)
        after_rss = sampler.process.memory_info().rss
        checks = len(re.findall(r"^maint_check_status\{", http_metrics(port), re.M))
        sampler.stop.set()
        peak = sampler.peak
        return {"idle_rss_mib": idle_rss / MIB, "peak_rss_mib": peak["rss"] / MIB, "after_rss_mib": after_rss / MIB,
                "peak_tree_rss_mib": peak["tree_rss"] / MIB, "peak_threads": peak["threads"],
                "peak_tree_tasks": peak["tree_tasks"], "peak_fds": peak["fds"], "checks_reporting": checks,
                "children_peak_rss_mib": {k: round(v, 1) for k, v in sampler.children.items()}, **counts}
    finally:
        sampler.stop.set()
        agent.terminate()
        agent.wait(20)


def http_metrics(port: int) -> str:
    import http.client
    conn = http.client.HTTPConnection(HOST, port, timeout=5)
    try:
        conn.request("GET", "/metrics")
        return conn.getresponse().read().decode()
    finally:
        conn.close()


def start_servers(root: Path):
    """A PostgreSQL pair, a Redis primary with a replica (password bench-redis) and moto's S3, for the example."""
    from tests.fixtures.postgres import start_pair
    from tests.fixtures.redis import RedisServers
    os.chmod(root, 0o755)
    pg = start_pair(root / "pg")
    redis = RedisServers(root / "redis")
    primary = redis.start(password="bench-redis")
    redis.start(replica_of=primary, password="bench-redis")
    s3_port = free_port()
    moto = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", HOST, "-p", str(s3_port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return pg, redis, primary.port, moto, s3_port


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=60.0)
    args = parser.parse_args()
    results = {}
    with tempfile.TemporaryDirectory(prefix="maint-limits-") as tmp:
        work = Path(tmp)
        (work / "repo").mkdir()
        log("repo agent.yaml")
        results["agent.yaml"] = measure(repo_profile(work / "repo", free_port())[0], {}, args.seconds)
        servers_root = Path(tempfile.mkdtemp(prefix="maint-limits-srv-", dir="/tmp"))
        pg, redis, redis_port, moto, s3_port = start_servers(servers_root)
        try:
            (work / "example").mkdir()
            log("examples/ai-camera.yaml")
            config, env = example_profile(work / "example", free_port(), (pg, redis_port, s3_port))
            results["examples/ai-camera.yaml"] = measure(config, env, args.seconds)
        finally:
            moto.terminate()
            moto.wait(10)
            redis.stop_all()
            for server in (pg.standby, pg.primary):
                server.stop()
            subprocess.run(["rm", "-rf", str(servers_root)], check=False)
    rows = [[name, f"{r['idle_rss_mib']:.1f}", f"{r['peak_rss_mib']:.1f}", f"{r['after_rss_mib']:.1f}",
             f"{r['peak_tree_rss_mib']:.1f}", str(r["peak_threads"]), str(r["peak_tree_tasks"]), str(r["peak_fds"]),
             str(r["checks_reporting"]), str(r["scrapes"])] for name, r in results.items()]
    print(f"{machine()}; {args.seconds:g} s of load per profile")
    print(table(rows, ["profile", "idle RSS MiB", "peak RSS MiB", "after RSS MiB", "peak tree RSS MiB",
                       "peak threads", "peak tree tasks", "peak fds", "checks", "scrapes"]))
    for name, r in results.items():
        print(f"{name}: children seen (peak RSS MiB): {r['children_peak_rss_mib']}")
    OUT.mkdir(exist_ok=True)
    write_json(str(OUT / "limits.json"), {"machine": machine(), "seconds": args.seconds, "results": results})
    return 0


if __name__ == "__main__":
    sys.exit(main())
