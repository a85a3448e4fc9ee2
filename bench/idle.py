#!/usr/bin/env python3
"""Idle footprint: RSS and CPU of `maint-agent run` (the repo's checks) next to node_exporter and monit.

Starts the agent on a private copy of agent.yaml (temp state_dir, free port, same checks), waits until
every interval check has run once, then measures all processes side by side over one window:
RSS (MiB) sampled every second (end and max), USS at the end, and CPU % of one core
= (user+system CPU seconds over the window) / wall seconds × 100, from psutil cpu_times.

Anchors: prometheus-node-exporter (default collectors, nobody scraping it) and monit with 10 checks
every 15 s (`monit -I`, no httpd). A missing anchor is skipped with a message.

    .venv/bin/python bench/idle.py                # 120 s window
    .venv/bin/python bench/idle.py --seconds 30   # shorter, for a quick look
    .venv/bin/python bench/idle.py --existing-store   # a restart: the store exists, no migration runs
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (AGENT_BIN, MIB, MONIT, NODE_EXPORTER, REPO, VENV_PYTHON, fmt, log, loadavg,  # noqa: E402
                     machine, ratio, start_agent, start_monit, start_node_exporter, stop_all, table, write_json)

TARGET_RSS_MIB = 40.0
TARGET_CPU_PCT = 0.2
MAX_SECONDS = 3600

# Where the agent's RSS goes: what `maint-agent run` imports and builds, one step at a time, in a fresh
# interpreter; the last rows are what the daemon does not keep resident, for comparison.
BREAKDOWN_STEPS = [
    ("interpreter (venv python + site)", ""),
    ("agent.cli.main (argparse, sqlite3)", "import agent.cli.main"),
    ("pydantic (+ pydantic_core)", "import pydantic"),
    ("yaml", "import yaml"),
    ("agent.config.load (pydantic's model machinery, hashlib via secrets, core sections built)", "import agent.config.load"),
    ("load_config(agent.yaml): its check types (psutil), models built",
     "import agent.config.load; agent.config.load.load_config('agent.yaml')"),
    ("agent.daemon (listener, logging, runner, store; no http.server, no ssl)", "import agent.daemon"),
    ("the listener's first request (email header parser)",
     "import agent.http.server, email.parser; email.parser.Parser().parsestr('Host: x\\r\\n\\r\\n').get('Host')"),
    ("— not resident: ssl, http.server (TLS loads ssl; the listener parses HTTP itself)", "import ssl, http.server"),
    ("— not resident: importlib.metadata (pydantic's plugin scan, skipped: agent/__init__.py)",
     "import importlib.metadata"),
    ("— not resident: every other check and action type", "import checks, actions; dict(checks.CHECK_TYPES); "
                                                         "dict(actions.ACTION_TYPES)"),
    ("— not resident: report, archive, mail, web-config modules",
     "import agent.reports.delivery, agent.store.archive, agent.plugin.mailer, agent.config.web"),
    ("— not resident: sqlite_utils (migrations run in a child)", "import sqlite_utils"),
    ("— not resident: prometheus_client (/metrics is rendered by agent.http.promtext)", "import prometheus_client"),
]
BREAKDOWN_CODE = r"""
import json, sys, time
def mem():
    out = {}
    for line in open("/proc/self/status"):
        key, _, value = line.partition(":")
        if key in ("VmRSS", "RssAnon", "RssFile"):
            out[key] = int(value.split()[0]) / 1024
    return out
rows = []
for label, stmt in json.loads(sys.argv[1]):
    t = time.perf_counter()
    exec(stmt)
    rows.append([label, time.perf_counter() - t, mem()])
print(json.dumps(rows))
"""


def proc_status(pid: int) -> dict:
    out = {}
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                if key in ("VmRSS", "RssAnon", "RssFile", "RssShmem"):
                    out[key] = int(value.split()[0]) / 1024
    except OSError:
        pass
    return out


def rss_breakdown(python: Path) -> list | None:
    try:
        done = subprocess.run([str(python), "-c", BREAKDOWN_CODE, json.dumps(BREAKDOWN_STEPS)], cwd=REPO,
                              capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        log(f"RSS breakdown failed: {exc}")
        return None
    if done.returncode != 0:
        log(f"RSS breakdown failed: {done.stderr.strip()[-500:]}")
        return None
    return json.loads(done.stdout)


class Sampler:
    def __init__(self, proc):
        self.name = proc.name
        self.ps = psutil.Process(proc.pid)
        self.rss_max = 0
        self.rss_end = 0
        self.uss_end = None
        self.threads = None
        self.cpu0 = None
        self.t0 = None
        self.cpu_pct = None
        self.samples = 0

    def start(self) -> None:
        t = self.ps.cpu_times()
        self.cpu0, self.t0 = t.user + t.system, time.monotonic()
        self.sample()

    def sample(self) -> None:
        rss = self.ps.memory_info().rss
        self.rss_end = rss
        self.rss_max = max(self.rss_max, rss)
        self.samples += 1

    def finish(self) -> None:
        self.sample()
        t = self.ps.cpu_times()
        wall = time.monotonic() - self.t0
        self.cpu_pct = (t.user + t.system - self.cpu0) / wall * 100.0
        self.wall = wall
        try:
            self.uss_end = self.ps.memory_full_info().uss
        except (psutil.AccessDenied, AttributeError):
            self.uss_end = None
        self.threads = self.ps.num_threads()
        self.status = proc_status(self.ps.pid)

    def as_dict(self) -> dict:
        return {"name": self.name, "pid": self.ps.pid, "rss_end_mib": self.rss_end / MIB,
                "rss_max_mib": self.rss_max / MIB, "uss_end_mib": self.uss_end / MIB if self.uss_end else None,
                "rss_anon_mib": self.status.get("RssAnon"), "rss_file_mib": self.status.get("RssFile"),
                "cpu_pct_one_core": self.cpu_pct, "threads": self.threads, "samples": self.samples,
                "window_seconds": self.wall}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=120.0, help="measurement window (default 120)")
    ap.add_argument("--settle", type=float, default=5.0,
                    help="seconds to wait after everything is up, before the window opens (default 5)")
    ap.add_argument("--interval", type=float, default=1.0, help="RSS sampling interval (default 1 s)")
    ap.add_argument("--existing-store", action="store_true",
                    help="measure a restart: start once to create the store, stop, start again (no migration "
                         "in the measured process); default: first start on a fresh state_dir")
    ap.add_argument("--agent-bin", type=Path, default=AGENT_BIN)
    ap.add_argument("--node-exporter", default=NODE_EXPORTER)
    ap.add_argument("--monit", default=MONIT)
    ap.add_argument("--no-breakdown", action="store_true",
                    help="skip the import-by-import RSS breakdown of the agent's interpreter")
    ap.add_argument("--python", type=Path, default=VENV_PYTHON, help="the agent's interpreter, for the breakdown")
    ap.add_argument("--json-out", help="also write the figures as JSON to this file")
    args = ap.parse_args(argv)
    if not 0 < args.seconds <= MAX_SECONDS:
        ap.error(f"--seconds must be in (0, {MAX_SECONDS}]")

    procs = []
    with tempfile.TemporaryDirectory(prefix="maint-bench-idle-") as tmp:
        work = Path(tmp)
        try:
            if args.existing_store:
                log("first start, to create and migrate the store; stopped once every interval check has run")
                start_agent(work, agent_bin=args.agent_bin).stop()
            log(f"starting maint-agent ({args.agent_bin}) on a copy of agent.yaml in {work}"
                + (" (store exists: no migration)" if args.existing_store else " (fresh state_dir)"))
            agent = start_agent(work, agent_bin=args.agent_bin, wait_checks=not args.existing_store)
            procs.append(agent)
            log(f"maint-agent pid {agent.pid} on 127.0.0.1:{agent.port}; " +
                ("checks run when next due by the persisted schedule" if args.existing_store else
                 f"{agent.extra['interval_checks']} interval checks have run"))
            procs.append(start_node_exporter(work, args.node_exporter))
            procs.append(start_monit(work, args.monit))
            running = [p for p in procs if p is not None]
            time.sleep(args.settle)
            load_start = loadavg()
            samplers = [Sampler(p) for p in running]
            for s in samplers:
                s.start()
            log(f"measuring {', '.join(s.name for s in samplers)} for {args.seconds:g} s")
            end = time.monotonic() + args.seconds
            while (now := time.monotonic()) < end:
                time.sleep(min(args.interval, end - now))
                for p, s in zip(running, samplers):
                    if not p.alive():
                        raise RuntimeError(f"{p.name} exited during the window:\n{p.tail()}")
                    s.sample()
            for s in samplers:
                s.finish()
        finally:
            stop_all(procs)

    by_name = {s.name: s for s in samplers}
    agent_s = by_name["maint-agent"]
    cpu_resolution = 1 / psutil.CLK_TCK if hasattr(psutil, "CLK_TCK") else 0.01
    floor = cpu_resolution / args.seconds * 100

    def cpu_cell(value: float) -> str:
        return f"< {floor:.3f}" if value == 0 else f"{value:.3f}"

    def cpu_ratio(s) -> str:
        if s is agent_s:
            return "-"
        if s.cpu_pct == 0:
            return f"> {agent_s.cpu_pct / floor:.1f}×" if agent_s.cpu_pct else "n/a"
        return f"{agent_s.cpu_pct / s.cpu_pct:.2f}×"

    rows = []
    for s in samplers:
        rows.append([s.name, fmt(s.rss_end / MIB, ".1f"), fmt(s.rss_max / MIB, ".1f"),
                     fmt(s.status.get("RssAnon"), ".1f"), fmt(s.status.get("RssFile"), ".1f"),
                     fmt(s.uss_end / MIB if s.uss_end else None, ".1f"), cpu_cell(s.cpu_pct), str(s.threads),
                     "-" if s is agent_s else fmt(ratio(agent_s.rss_end, s.rss_end), ".2f") + "×", cpu_ratio(s)])
    start_kind = "restart on an existing store" if args.existing_store else "first start, fresh state_dir"
    print(f"\n## Idle footprint — {args.seconds:g} s window, agent {start_kind} ({machine()}; {load_start} at "
          f"start)\n")
    print(table(rows, ["name", "RSS MiB (end)", "RSS MiB (max)", "anon", "file", "USS MiB", "CPU % of 1 core",
                       "threads", "agent/this RSS", "agent/this CPU"]))
    print(f"(CPU from psutil cpu_times, user+system, tick {cpu_resolution * 1000:g} ms → resolution "
          f"{floor:.4f} % over this window)")
    for name, hint in (("node_exporter", args.node_exporter), ("monit", args.monit)):
        if name not in by_name:
            print(f"(anchor {name} skipped: {hint} not installed)")
    rss_ok = agent_s.rss_max / MIB <= TARGET_RSS_MIB
    cpu_ok = agent_s.cpu_pct <= TARGET_CPU_PCT
    print(f"\ntarget RSS ≤ {TARGET_RSS_MIB:g} MiB: agent max {agent_s.rss_max / MIB:.1f} MiB → "
          f"{'met' if rss_ok else 'MISSED'}")
    print(f"target CPU ≤ {TARGET_CPU_PCT:g} %: agent {cpu_cell(agent_s.cpu_pct)} % → "
          f"{'met' if cpu_ok else 'MISSED'}")

    breakdown = None if args.no_breakdown else rss_breakdown(args.python)
    if breakdown:
        print("\nWhere the agent's RSS goes (fresh interpreter, the daemon's imports one by one, cumulative):\n")
        rows, prev = [], None
        for label, seconds, mem in breakdown:
            rows.append([label, f"{mem['VmRSS']:.1f}", "" if prev is None else f"+{mem['VmRSS'] - prev:.1f}",
                         f"{mem['RssAnon']:.1f}", f"{mem['RssFile']:.1f}", f"{seconds * 1000:.0f}"])
            prev = mem["VmRSS"]
        print(table(rows, ["step", "RSS MiB", "Δ MiB", "anon", "file", "import ms"]))
        print(f"(the running agent: {agent_s.rss_end / MIB:.1f} MiB; the rest is threads, SQLite cache, "
              f"config/state objects and allocator slack)")

    write_json(args.json_out, {
        "rss_breakdown": breakdown,
        "benchmark": "idle", "window_seconds": args.seconds, "agent_checks": agent.extra["checks"],
        "existing_store": args.existing_store,
        "machine": machine(), "load_start": load_start, "load_end": loadavg(),
        "processes": [s.as_dict() for s in samplers],
        "targets": {"rss_mib": TARGET_RSS_MIB, "cpu_pct": TARGET_CPU_PCT},
        "met": {"rss": rss_ok, "cpu": cpu_ok},
    })
    return 0


if __name__ == "__main__":
    sys.exit(main())
