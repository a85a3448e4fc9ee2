#!/usr/bin/env python3
"""Fault → detection and fault → verified recovery for a killed HTTP service (issue 5's benchmark).

A real HTTP service (tests/fixtures/service.py, started detached like a service manager would) is
watched by the agent's `http` check every `--interval` seconds; the check is bound to a `command`
action that restarts it (cooldown 0, verify_after 1 s). The script kills the service `--faults` times at
random phases of the interval and reads the store for:

- detection = start + duration of the first CRITICAL run after the kill − kill time;
- recovery = end of the verifying OK run (the audit row says `fixed`) − kill time.

Targets (issue 5): detection ≤ one interval, recovery ≤ two intervals (seed: detect within 5 min,
respond within 15 min).

    .venv/bin/python bench/remediation.py                       # 10 s interval, 5 faults (~2 min)
    .venv/bin/python bench/remediation.py --interval 2 --faults 3
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (AGENT_BIN, REPO, _spawn, fmt, free_port, log, loadavg, machine, percentile,  # noqa: E402
                     table, wait_http, write_json)

SERVICE = REPO / "tests" / "fixtures" / "service.py"
MAX_FAULTS = 50

CONFIG = """agent:
  state_dir: {state}
http:
  listen: 127.0.0.1:{port}
actions:
  - name: restart-service
    type: command
    argv: [{python}, {service}, start, "{svc_port}", {pidfile}]
    cooldown: 0s
    max_attempts: 100
    verify_after: 1s
    settle: 1s
checks:
  - name: service
    type: http
    url: http://127.0.0.1:{svc_port}/
    every: {interval}s
    timeout: 2s
    actions:
      - action: restart-service
"""


def query(db: Path, sql: str, params=()) -> list[tuple]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


def wait(condition, timeout: float, what: str):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise TimeoutError(f"timed out after {timeout:g}s waiting for {what}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--interval", type=float, default=10.0, help="check interval in seconds (default 10)")
    parser.add_argument("--faults", type=int, default=5, help=f"kills to measure (≤ {MAX_FAULTS})")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json-out")
    args = parser.parse_args()
    if not 1 <= args.faults <= MAX_FAULTS:
        parser.error(f"--faults must be 1..{MAX_FAULTS}")
    rng = random.Random(args.seed)
    work = Path(tempfile.mkdtemp(prefix="bench-remediation-"))
    svc_port, agent_port, pidfile = free_port(), free_port(), work / "service.pid"
    cfg = work / "agent.yaml"
    cfg.write_text(CONFIG.format(state=work / "var", port=agent_port, python=sys.executable, service=SERVICE,
                                 svc_port=svc_port, pidfile=pidfile, interval=args.interval))
    db = work / "var" / "maint-agent.db"
    subprocess.run([sys.executable, str(SERVICE), "start", str(svc_port), str(pidfile)], check=True, timeout=15)
    log(f"{machine()}; {loadavg()}")
    agent = _spawn("maint-agent", [str(AGENT_BIN), "run", "--config", str(cfg)], work / "agent.log", agent_port)
    detections, recoveries = [], []
    recovered_at = 0.0
    try:
        wait_http(agent, "/healthz", 30)
        wait(lambda: query(db, "SELECT 1 FROM check_runs WHERE status = 0"), 3 * args.interval, "a first OK run")
        for number in range(args.faults):
            time.sleep(rng.uniform(0, args.interval))        # a random phase of the check's interval
            fixed_before = query(db, "SELECT count(*) FROM action_runs WHERE outcome = 'fixed'")[0][0]
            killed = time.time()
            os.kill(int(pidfile.read_text()), signal.SIGKILL)
            bad = wait(lambda: query(db, "SELECT started + duration FROM check_runs WHERE status = 2 AND started >= ? "
                                         "ORDER BY started LIMIT 1", (max(killed - args.interval, recovered_at),)),
                       3 * args.interval + 10, "detection")
            detected = max(bad[0][0], killed)
            wait(lambda: query(db, "SELECT count(*) FROM action_runs WHERE outcome = 'fixed'")[0][0] > fixed_before,
                 4 * args.interval + 10, "verified recovery")
            ok = query(db, "SELECT started + duration FROM check_runs WHERE status = 0 AND started > ? "
                           "ORDER BY started LIMIT 1", (detected,))
            recovered_at = ok[0][0]
            detections.append(detected - killed)
            recoveries.append(ok[0][0] - killed)
            log(f"fault {number + 1}: detected after {detections[-1]:.2f}s, recovered (verified) after "
                f"{recoveries[-1]:.2f}s")
            time.sleep(1.5)                                   # let the settle time pass before the next fault
    finally:
        agent.stop()
        try:
            os.kill(int(pidfile.read_text()), signal.SIGKILL)
        except (OSError, ValueError):
            pass
    detections.sort()
    recoveries.sort()
    result = {
        "interval_seconds": args.interval, "faults": args.faults, "machine": machine(), "load_start": loadavg(),
        "detection_seconds": {"median": percentile(detections, 50), "max": detections[-1]},
        "recovery_seconds": {"median": percentile(recoveries, 50), "max": recoveries[-1]},
        "detection_target_met": detections[-1] <= args.interval,
        "recovery_target_met": recoveries[-1] <= 2 * args.interval,
    }
    print(table([["fault → detection", fmt(result["detection_seconds"]["median"]),
                  fmt(result["detection_seconds"]["max"]), f"≤ {args.interval:g}"],
                 ["fault → verified recovery", fmt(result["recovery_seconds"]["median"]),
                  fmt(result["recovery_seconds"]["max"]), f"≤ {2 * args.interval:g}"]],
                ["figure (s)", "median", "max", "target"]))
    write_json(args.json_out, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
