#!/usr/bin/env python3
"""Scale: what one check run costs the agent from 30 to 1,000 checks, with Monit running the same checks beside it.

For each N (default 30, 100, 300, 1000) the agent runs N trivial checks (`type: file`, a stat of its own
file, every 1 s) from a fresh state_dir, and Monit runs the same N files as `check file` on a 1 s cycle
(`set daemon 1`, no httpd) at the same time. After a warm-up both are measured over one window:

- CPU % of one core = (user+system CPU seconds over the window) / wall seconds × 100 (psutil cpu_times);
- CPU ms per check run: the agent's CPU over the runs it completed in the window (from its
  `maint_check_runs_total`); Monit's over N checks × one cycle per second (its nominal rate);
- RSS (max over the window, sampled every second);
- `/metrics` size and sequential latency (keep-alive, plain text, after the window while the checks keep
  running, so most scrapes find a changed state to render).

Then N = 100 `http` checks every 5 s against an HTTP server in this process (the realistic service
probe), reporting the agent's CPU per run; and the agent's RSS with 1,000 checks at minute 2 and at the
end of `--soak` seconds (off by default: the default run takes about three minutes).

    .venv/bin/python bench/scale.py                        # N = 30, 100, 300, 1000 and 100 http checks
    .venv/bin/python bench/scale.py --sizes 100 --window 10 --no-http   # a quick look
    .venv/bin/python bench/scale.py --soak 600             # plus RSS at 1,000 checks after 2 and 10 minutes
    .venv/bin/python bench/scale.py --profile              # plus a py-spy profile of the agent at each N

Every process started here is stopped here, by its pid; everything listens on 127.0.0.1; every loop is
bounded in time.
"""

from __future__ import annotations

import argparse
import http.server
import re
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (AGENT_BIN, HOST, MIB, MONIT, NODE_EXPORTER, OUT, Proc, _spawn, fmt, free_port,  # noqa: E402
                     http_get, loadavg, log, machine, ratio, start_monit, start_node_exporter, stop_all, table,
                     wait_http, which, write_json)
from scrape import TARGET_RPS_FACTOR, concurrent_python, concurrent_wrk, sequential  # noqa: E402

TARGET_MS_PER_RUN = 0.25
TARGET_FLAT_FACTOR = 1.3
TARGET_CPU_PCT_AT_1000 = 30.0
TARGET_MONIT_FACTOR = 6.0
TARGET_RSS_MIB_AT_1000 = 70.0
TARGET_RSS_GROWTH_MIB = 2.0
TARGET_SEQ_P99_MS = 2.0
SOAK_FIRST_MARK = 120.0
MAX_SECONDS = 3600
RUNS_LINE = re.compile(rb"^maint_check_runs_total\{[^}]*\} (\S+)$", re.M)
LAST_RUN_LINE = b"maint_check_last_run_timestamp_seconds{"


# -- configs -------------------------------------------------------------------------------------------------


def agent_yaml(workdir: Path, port: int, checks: list[dict], workers: int) -> Path:
    """An agent.yaml with `checks` (already complete entries) and nothing else configured."""
    lines = ["version: 1", "agent:", f"  state_dir: {workdir / 'var'}", f"  workers: {workers}", "http:",
             f"  listen: {HOST}:{port}", "checks:"]
    for check in checks:
        lines.append(f"  - name: {check['name']}")
        lines += [f"    {key}: {value}" for key, value in check.items() if key != "name"]
    path = workdir / "agent.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


def file_checks(files: list[Path]) -> list[dict]:
    return [{"name": f"file-{i:04d}", "type": "file", "every": "1s", "path": str(path)} for i, path in enumerate(files)]


def http_checks(port: int, n: int, every: str) -> list[dict]:
    return [{"name": f"http-{i:04d}", "type": "http", "every": every, "url": f"http://{HOST}:{port}/health/{i}",
             "timeout": "5s"} for i in range(n)]


def monitrc_files(workdir: Path, files: list[Path]) -> Path:
    """Monit watching the same files on a 1 s cycle; no httpd. Monit demands mode 0600."""
    text = "".join([f"set daemon 1\nset logfile {workdir / 'monit.log'}\nset pidfile {workdir / 'monit.pid'}\n"
                    f"set idfile {workdir / 'monit.id'}\nset statefile {workdir / 'monit.state'}\n\n"]
                   + [f"check file f{i:04d} with path {path}\n" for i, path in enumerate(files)])
    path = workdir / "monitrc"
    path.write_text(text)
    path.chmod(0o600)
    return path


# -- processes -----------------------------------------------------------------------------------------------


def start_agent(workdir: Path, config: Path, port: int, checks: int, agent_bin: Path, ready_timeout: float) -> Proc:
    """`maint-agent run` on `config`; returns once every check has run once."""
    proc = _spawn("maint-agent", [str(agent_bin), "run", "--config", str(config)], workdir / "agent.log", port,
                  cwd=workdir)
    try:
        wait_http(proc, "/healthz", ready_timeout)
        wait_http(proc, "/metrics", ready_timeout, lambda s, b: s == 200 and b.count(LAST_RUN_LINE) >= checks)
    except BaseException:
        proc.stop()
        raise
    return proc


def runs_total(port: int) -> float:
    status, body = http_get(port, "/metrics", timeout=10)
    if status != 200:
        raise RuntimeError(f"/metrics answered {status}")
    return sum(float(value) for value in RUNS_LINE.findall(body))


class HealthServer(http.server.ThreadingHTTPServer):
    """What the http checks probe: 200 and a short body, on 127.0.0.1, in a thread of this process."""

    daemon_threads = True

    def __init__(self):
        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                body = b"ok\n"
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        super().__init__((HOST, 0), Handler)
        self.thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.shutdown()
        self.server_close()


# -- measuring -----------------------------------------------------------------------------------------------


class Window:
    """CPU and max RSS of some processes over one window of wall time."""

    def __init__(self, procs: list[Proc]):
        self.procs = procs
        self.ps = {p.name: psutil.Process(p.pid) for p in procs}
        self.cpu0 = {name: _cpu(ps) for name, ps in self.ps.items()}
        self.rss_max = {name: ps.memory_info().rss for name, ps in self.ps.items()}
        self.t0 = time.monotonic()

    def run(self, seconds: float) -> None:
        end = self.t0 + seconds
        while (now := time.monotonic()) < end:
            time.sleep(min(1.0, end - now))
            for p in self.procs:
                if not p.alive():
                    raise RuntimeError(f"{p.name} exited during the window:\n{p.tail()}")
                self.rss_max[p.name] = max(self.rss_max[p.name], self.ps[p.name].memory_info().rss)

    def result(self) -> dict[str, dict]:
        wall = time.monotonic() - self.t0
        return {name: {"cpu_seconds": _cpu(ps) - self.cpu0[name], "wall_seconds": wall,
                       "cpu_pct_one_core": (_cpu(ps) - self.cpu0[name]) / wall * 100,
                       "rss_max_mib": self.rss_max[name] / MIB, "threads": ps.num_threads()}
                for name, ps in self.ps.items()}


def _cpu(ps: psutil.Process) -> float:
    t = ps.cpu_times()
    return t.user + t.system


def profile(agent: Proc, seconds: float, label: str) -> dict | None:
    """A py-spy sample of the agent (when py-spy is installed): the functions with the most own time."""
    spy = which(str(Path(sys.executable).parent / "py-spy")) or which("py-spy")
    if spy is None:
        log("no py-spy (pip install py-spy): profile skipped")
        return None
    OUT.mkdir(parents=True, exist_ok=True)
    raw = OUT / f"scale-profile-{label}.txt"
    done = subprocess.run([spy, "record", "--pid", str(agent.pid), "--duration", str(int(seconds)), "--format", "raw",
                           "--output", str(raw), "--rate", "200", "--nonblocking"], capture_output=True, text=True,
                          timeout=seconds + 60)
    if done.returncode != 0 or not raw.exists():
        log(f"py-spy failed: {done.stderr.strip()[-300:]}")
        return None
    own, total, samples = Counter(), Counter(), 0
    for entry in raw.read_text().splitlines():
        stack, _, count = entry.rpartition(" ")
        frames = [f for f in stack.split(";") if f]
        if not frames or not count.isdigit():
            continue
        n = int(count)
        samples += n
        own[_frame(frames[-1])] += n
        for frame in set(map(_frame, frames)):
            total[frame] += n
    busy = samples - sum(n for f, n in own.items() if _idle(f))
    return {"file": str(raw), "samples": samples, "busy_samples": busy,
            "own": [(f, n) for f, n in own.most_common(40) if not _idle(f)][:12],
            "total": [(f, n) for f, n in total.most_common(60) if not _idle(f)][:15]}


def _frame(text: str) -> str:
    """`refresh (agent/http/metrics.py:213)` → `agent/http/metrics.py:refresh`."""
    m = re.match(r"(.*) \((.*?)(?::\d+)?\)$", text.strip())
    if not m:
        return text.strip()
    func, where = m.groups()
    where = re.sub(r".*/(site-packages|lib/python3\.\d+)/", "", where)
    where = re.sub(r".*/(agent|checks|actions)/", r"\1/", where)
    return f"{where}:{func}"


def _idle(frame: str) -> bool:
    """Frames where a thread waits for I/O: py-spy leaves out idle threads, but a select() may slip in."""
    return frame.rsplit(".", 1)[-1].rsplit(":", 1)[-1] in ("select", "poll", "sleep", "accept", "serve_forever")


# -- the parts -----------------------------------------------------------------------------------------------


def file_size_step(n: int, files: list[Path], args, work: Path) -> dict:
    """N file checks next to Monit's N `check file`: CPU, runs, RSS, /metrics size and latency."""
    step_dir = work / f"n{n}"
    step_dir.mkdir()
    port = free_port()
    config = agent_yaml(step_dir, port, file_checks(files[:n]), args.workers)
    procs: list[Proc] = []
    try:
        log(f"N={n}: starting the agent with {n} file checks every 1 s")
        agent = start_agent(step_dir, config, port, n, args.agent_bin, args.ready_timeout)
        procs.append(agent)
        monit = None if args.no_monit else start_monit(step_dir, args.monit, rc=monitrc_files(step_dir, files[:n]))
        if monit:
            procs.append(monit)
        time.sleep(args.warmup)
        load = loadavg()
        runs0 = runs_total(port)
        window = Window(procs)
        seconds = window_for(n, args.window)
        log(f"N={n}: measuring {', '.join(p.name for p in procs)} for {seconds:g} s")
        window.run(seconds)
        measured = window.result()
        runs = runs_total(port) - runs0
        log(f"N={n}: {args.requests} sequential /metrics requests")
        seq = sequential(port, "/metrics", args.requests, 60.0, gzip=False, warmup=20)
        conc = concurrent(port, args) if n == max(args.size_list) else None
        prof = profile(agent, args.profile_seconds, f"n{n}") if args.profile else None
        a = measured["maint-agent"]
        out = {"n": n, "load_start": load, "agent": {**a, "runs": runs,
                                                     "ms_per_run": a["cpu_seconds"] * 1000 / runs if runs else None,
                                                     "runs_per_second": runs / a["wall_seconds"]},
               "metrics_bytes": seq["body_bytes"], "sequential": seq, "concurrent": conc, "profile": prof}
        if monit:
            m = measured["monit"]
            nominal = n * m["wall_seconds"]    # N checks per 1 s cycle
            out["monit"] = {**m, "checks_nominal": nominal, "ms_per_check": m["cpu_seconds"] * 1000 / nominal}
        return out
    finally:
        stop_all(procs)


def concurrent(port: int, args) -> dict:
    """20 keep-alive connections for a few seconds (wrk when installed, else a client-bound Python pool)."""
    log(f"{args.connections} connections to /metrics for {args.duration} s")
    wrk = which("wrk")
    if wrk:
        return concurrent_wrk(wrk, port, "/metrics", 2, args.connections, args.duration, gzip=False)
    return concurrent_python(port, "/metrics", args.connections, args.duration, gzip=False)


def node_exporter_step(args, work: Path) -> dict | None:
    """node_exporter's /metrics under the same 20 connections: the anchor of the req/s ratio."""
    step_dir = work / "node_exporter"
    step_dir.mkdir()
    node = start_node_exporter(step_dir, args.node_exporter)
    if node is None:
        return None
    try:
        return concurrent(node.port, args)
    finally:
        node.stop()


def window_for(n: int, window: float) -> float:
    """Small N get a longer window (up to 3×): CPU time comes in 10 ms ticks, and 30 runs a second of a
    cheap check add up to only a few ticks a second."""
    return window * min(3.0, max(1.0, 100 / n))


def soak_step(files: list[Path], args, work: Path) -> dict:
    """1,000 file checks for `--soak` seconds: RSS at minute 2 and at the end."""
    n = min(1000, len(files))
    step_dir = work / "soak"
    step_dir.mkdir()
    port = free_port()
    agent = start_agent(step_dir, agent_yaml(step_dir, port, file_checks(files[:n]), args.workers), port, n,
                        args.agent_bin, args.ready_timeout)
    try:
        started = psutil.Process(agent.pid).create_time()
        ps = psutil.Process(agent.pid)
        marks: dict[str, float] = {}
        log(f"soak: {n} file checks for {args.soak:g} s; RSS at {SOAK_FIRST_MARK:g} s and at the end")
        while (age := time.time() - started) < args.soak:
            if not agent.alive():
                raise RuntimeError(f"the agent exited during the soak:\n{agent.tail()}")
            if age >= SOAK_FIRST_MARK and "first" not in marks:
                marks["first"] = ps.memory_info().rss / MIB
                log(f"soak: RSS {marks['first']:.1f} MiB at {age:.0f} s")
            time.sleep(min(5.0, max(0.1, args.soak - age)))
        marks["end"] = ps.memory_info().rss / MIB
        return {"n": n, "seconds": args.soak, "rss_first_mib": marks.get("first"), "rss_end_mib": marks["end"],
                "first_at": SOAK_FIRST_MARK}
    finally:
        agent.stop()


def http_step(args, work: Path) -> dict:
    """N http checks every few seconds against a local server: the agent's CPU per run."""
    step_dir = work / "http"
    step_dir.mkdir()
    with HealthServer() as server:
        port = free_port()
        checks = http_checks(server.server_address[1], args.http_checks, f"{args.http_every:g}s")
        agent = start_agent(step_dir, agent_yaml(step_dir, port, checks, args.workers), port, len(checks),
                            args.agent_bin, args.ready_timeout)
        try:
            time.sleep(args.warmup)
            runs0 = runs_total(port)
            window = Window([agent])
            log(f"http: {len(checks)} checks every {args.http_every:g} s, measuring for {args.http_window:g} s")
            window.run(args.http_window)
            a = window.result()["maint-agent"]
            runs = runs_total(port) - runs0
        finally:
            agent.stop()
    return {"n": len(checks), "every_seconds": args.http_every, **a, "runs": runs,
            "ms_per_run": a["cpu_seconds"] * 1000 / runs if runs else None}


# -- report --------------------------------------------------------------------------------------------------


def report(steps: list[dict], http: dict | None, soak: dict | None, node: dict | None, args) -> dict:
    rows = []
    for s in steps:
        a, m, q = s["agent"], s.get("monit"), s["sequential"]
        rows.append([str(s["n"]), f"{a['cpu_pct_one_core']:.1f}", fmt(a["ms_per_run"], ".3f"),
                     f"{a['runs_per_second']:.0f}", f"{a['rss_max_mib']:.1f}", f"{s['metrics_bytes']:,}",
                     f"{q['p50_ms']:.2f} / {q['p99_ms']:.2f}",
                     f"{m['cpu_pct_one_core']:.2f}" if m else "skipped", fmt(m and m["ms_per_check"], ".4f"),
                     fmt(m and m["rss_max_mib"], ".1f"), fmt(ratio(a["ms_per_run"], m and m["ms_per_check"]), ".1f"),
                     fmt(ratio(a["rss_max_mib"], m and m["rss_max_mib"]), ".1f")])
    print(f"\n## Scale — file checks every 1 s, {args.window:g} s window (N < 100: up to 3× longer) after "
          f"{args.warmup:g} s warm-up ({machine()}; agent.workers {args.workers})\n")
    print(table(rows, ["N", "agent CPU %", "ms/run", "runs/s", "RSS MiB", "/metrics B", "seq p50/p99 ms",
                       "Monit CPU %", "Monit ms/check", "Monit RSS", "agent/Monit per check", "agent/Monit RSS"]))
    print("(CPU % of one core, user+system; Monit's per-check figure assumes one cycle per second; "
          "loads at each start: " + "; ".join(f"N={s['n']} {s['load_start']}" for s in steps) + ")")
    if any("monit" not in s for s in steps):
        print(f"(Monit skipped: {args.monit} not installed — apt-get install monit)" if not args.no_monit
              else "(Monit skipped: --no-monit)")
    for s in steps:
        if s.get("concurrent"):
            c = s["concurrent"]
            anchor = (f"; node_exporter {node['rps']:,.0f} req/s → {c['rps'] / node['rps']:.1f}× (target ≥ "
                      f"{TARGET_RPS_FACTOR:g}×)" if node and node.get("rps") else "; node_exporter not installed")
            print(f"\n/metrics under {args.connections} connections at N={s['n']} ({c['client']}): "
                  f"{c['rps']:,.0f} req/s, p50 {fmt(c.get('p50_ms'), '.2f')} ms, p99 {fmt(c.get('p99_ms'), '.2f')} ms"
                  + anchor)
    if http:
        print(f"\nhttp checks: {http['n']} every {http['every_seconds']:g} s against a local server: "
              f"CPU {http['cpu_pct_one_core']:.2f} % of a core, {fmt(http['ms_per_run'], '.3f')} ms per run "
              f"({http['runs']:.0f} runs in {http['wall_seconds']:.0f} s), RSS {http['rss_max_mib']:.1f} MiB")
    for s in steps:
        if s.get("profile"):
            p = s["profile"]
            print(f"\nprofile at N={s['n']} (py-spy, {p['busy_samples']} busy of {p['samples']} samples; {p['file']}):")
            print("  own time:   " + "; ".join(f"{f} {n / max(1, p['busy_samples']) * 100:.0f} %" for f, n in p["own"][:8]))
            print("  inclusive:  " + "; ".join(f"{f} {n / max(1, p['busy_samples']) * 100:.0f} %"
                                               for f, n in p["total"][:10]))

    by_n = {s["n"]: s for s in steps}
    met: dict[str, bool | None] = {}
    per_run = {n: s["agent"]["ms_per_run"] for n, s in by_n.items()}
    print()
    if per_run:
        worst = max(per_run.values())
        met["ms_per_run"] = worst <= TARGET_MS_PER_RUN
        print(f"target CPU per run ≤ {TARGET_MS_PER_RUN:g} ms at every N: worst {worst:.3f} ms → "
              f"{'met' if met['ms_per_run'] else 'MISSED'}")
    if 30 in per_run and 1000 in per_run:
        flat = per_run[1000] / per_run[30]
        met["flat"] = flat <= TARGET_FLAT_FACTOR
        print(f"target flat (1,000 within {TARGET_FLAT_FACTOR:g}× of 30): {flat:.2f}× → "
              f"{'met' if met['flat'] else 'MISSED'}")
    if 1000 in by_n:
        cpu = by_n[1000]["agent"]["cpu_pct_one_core"]
        p99 = by_n[1000]["sequential"]["p99_ms"]
        met["cpu_1000"], met["p99_1000"] = cpu <= TARGET_CPU_PCT_AT_1000, p99 <= TARGET_SEQ_P99_MS
        print(f"target 1,000 checks @ 1 s ≤ {TARGET_CPU_PCT_AT_1000:g} % of a core: {cpu:.1f} % → "
              f"{'met' if met['cpu_1000'] else 'MISSED'}")
        print(f"target /metrics sequential p99 ≤ {TARGET_SEQ_P99_MS:g} ms at 1,000 checks: {p99:.2f} ms → "
              f"{'met' if met['p99_1000'] else 'MISSED'}")
    largest = by_n.get(max(by_n)) if by_n else None
    if largest and largest.get("concurrent") and node and node.get("rps"):
        factor = largest["concurrent"]["rps"] / node["rps"]
        met["rps"] = factor >= TARGET_RPS_FACTOR
        print(f"target {args.connections}-connection req/s ≥ {TARGET_RPS_FACTOR:g}× node_exporter at "
              f"N={largest['n']}: {factor:.1f}× → {'met' if met['rps'] else 'MISSED'}")
    factors = {n: ratio(s["agent"]["ms_per_run"], s["monit"]["ms_per_check"]) for n, s in by_n.items() if "monit" in s}
    if factors:
        worst_n = max(factors, key=lambda n: factors[n] or 0)
        met["monit"] = (factors[worst_n] or float("inf")) <= TARGET_MONIT_FACTOR
        print(f"target ≤ {TARGET_MONIT_FACTOR:g}× Monit per check: worst {fmt(factors[worst_n], '.1f')}× at "
              f"N={worst_n} → {'met' if met['monit'] else 'MISSED'}")
    if soak:
        first, end = soak["rss_first_mib"], soak["rss_end_mib"]
        met["rss_soak"] = end <= TARGET_RSS_MIB_AT_1000
        print(f"RSS at {soak['n']} checks: {fmt(first, '.1f')} MiB at {soak['first_at']:g} s, {end:.1f} MiB at "
              f"{soak['seconds']:g} s (target ≤ {TARGET_RSS_MIB_AT_1000:g} MiB → {'met' if met['rss_soak'] else 'MISSED'}"
              + (f"; growth {end - first:+.1f} MiB, target ≤ {TARGET_RSS_GROWTH_MIB:g} → "
                 f"{'met' if end - first <= TARGET_RSS_GROWTH_MIB else 'MISSED'})" if first is not None else ")"))
        if first is not None:
            met["rss_growth"] = end - first <= TARGET_RSS_GROWTH_MIB
    elif 1000 in by_n:
        rss = by_n[1000]["agent"]["rss_max_mib"]
        print(f"RSS at 1,000 checks after {args.warmup + args.window:g} s: {rss:.1f} MiB (the 2- and 10-minute "
              f"figures need --soak 600)")
    return met


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="30,100,300,1000", help="numbers of file checks (default 30,100,300,1000)")
    ap.add_argument("--warmup", type=float, default=5.0, help="seconds after every check ran once (default 5)")
    ap.add_argument("--window", type=float, default=20.0,
                    help="measurement window per N, s (default 20; below N = 100 up to 3× longer)")
    ap.add_argument("--requests", type=int, default=1000, help="sequential /metrics requests per N (default 1000)")
    ap.add_argument("--workers", type=int, default=4, help="agent.workers (default 4, as agent.yaml)")
    ap.add_argument("--http-checks", type=int, default=100, help="http checks (default 100)")
    ap.add_argument("--http-every", type=float, default=5.0, help="their interval, s (default 5)")
    ap.add_argument("--http-window", type=float, default=30.0, help="their measurement window, s (default 30)")
    ap.add_argument("--no-http", action="store_true", help="skip the http checks")
    ap.add_argument("--soak", type=float, default=0.0,
                    help="also run 1,000 file checks this long (s) and print RSS at 2 minutes and at the end "
                         "(600 for the 10-minute figure; default 0: skipped)")
    ap.add_argument("--no-monit", action="store_true", help="skip Monit")
    ap.add_argument("--connections", type=int, default=20, help="concurrent /metrics connections at the largest N")
    ap.add_argument("--duration", type=int, default=10, help="seconds of the concurrent run (default 10)")
    ap.add_argument("--node-exporter", default=NODE_EXPORTER)
    ap.add_argument("--monit", default=MONIT)
    ap.add_argument("--profile", action="store_true", help="after each window, profile the agent with py-spy")
    ap.add_argument("--profile-seconds", type=float, default=10.0)
    ap.add_argument("--ready-timeout", type=float, default=120.0)
    ap.add_argument("--agent-bin", type=Path, default=AGENT_BIN)
    ap.add_argument("--json-out", help="also write the figures as JSON to this file")
    args = ap.parse_args(argv)
    sizes = args.size_list = sorted({int(n) for n in args.sizes.split(",") if n.strip()})
    if not sizes or not all(1 <= n <= 5000 for n in sizes):
        ap.error("--sizes must be numbers in 1..5000")
    for name in ("warmup", "window", "http_window", "profile_seconds"):
        if not 0 < getattr(args, name) <= MAX_SECONDS:
            ap.error(f"--{name.replace('_', '-')} must be in (0, {MAX_SECONDS}]")
    if not 0 <= args.soak <= 4 * MAX_SECONDS or 0 < args.soak <= SOAK_FIRST_MARK:
        ap.error(f"--soak must be 0 or more than {SOAK_FIRST_MARK:g} s (at most {4 * MAX_SECONDS} s)")
    if not 1 <= args.http_checks <= 5000 or not 1 <= args.requests <= 100_000 or not 1 <= args.workers <= 64:
        ap.error("--http-checks in 1..5000, --requests in 1..100000, --workers in 1..64")
    if not 1 <= args.connections <= 1000 or not 1 <= args.duration <= 600:
        ap.error("--connections in 1..1000, --duration in 1..600")

    with tempfile.TemporaryDirectory(prefix="maint-bench-scale-") as tmp:
        work = Path(tmp)
        files = []
        (work / "files").mkdir()
        for i in range(max(sizes + ([1000] if args.soak else []))):
            path = work / "files" / f"f{i:04d}"
            path.write_text("x\n")
            files.append(path)
        steps = [file_size_step(n, files, args, work) for n in sizes]
        node = node_exporter_step(args, work)
        http = None if args.no_http else http_step(args, work)
        soak = soak_step(files, args, work) if args.soak else None
    met = report(steps, http, soak, node, args)
    for s in steps:
        if s.get("concurrent"):
            s["concurrent"].pop("raw", None)
    write_json(args.json_out, {"benchmark": "scale", "machine": machine(), "steps": steps, "http": http,
                               "soak": soak, "node_exporter_concurrent": node, "met": met,
                               "targets": {"ms_per_run": TARGET_MS_PER_RUN, "flat_factor": TARGET_FLAT_FACTOR,
                                           "cpu_pct_at_1000": TARGET_CPU_PCT_AT_1000,
                                           "monit_factor": TARGET_MONIT_FACTOR,
                                           "rss_mib_at_1000": TARGET_RSS_MIB_AT_1000,
                                           "rss_growth_mib": TARGET_RSS_GROWTH_MIB, "seq_p99_ms": TARGET_SEQ_P99_MS}})
    return 0


if __name__ == "__main__":
    sys.exit(main())
