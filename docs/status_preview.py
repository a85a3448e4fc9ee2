"""Screenshot the status page of a running agent on a seeded demo store, for people to look at.

    python docs/status_preview.py --png docs/status-page.png --check-png docs/status-check.png

`make status-screenshot` runs this. The browser test (tests/service/test_service_statuspage.py) goes
the same way: DEMO_CONFIG, `seed` and `chromium` are shared. A demo host's config (local checks only,
so the agent really runs them: CPU, memory, load, disk, its own /healthz, a plugin that warns about
pending updates), a store seeded with DAYS days of their history (daily CPU waves, disk growth, a web
outage six hours ago that a restart fixed, a CPU warning two days ago), audit rows, log entries and a
checklist tick; then the agent runs on it and headless Chromium loads the pages.
"""

from __future__ import annotations

import argparse
import math
import os
import random
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.request
from datetime import datetime
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from agent.plugin.calendar import fire_times_between  # noqa: E402  (after the path insert: runs from a checkout)
from agent.config.triggers import Interval  # noqa: E402
from agent.config.load import LoadedConfig, load_config
from agent.plugin.result import Evaluated, Status, sample  # noqa: E402
from agent.store.writer import Store  # noqa: E402

DAYS = 35
HOUR, DAY = 3600.0, 86400.0
SEED_STEP = 300.0          # one seeded run per 5 minutes (or the check's interval when longer)

DEMO_CONFIG = """
agent: {{hostname: web-1.example.com, state_dir: "{state}"}}
http: {{listen: "127.0.0.1:{port}"}}
checklists:
  weekly:
    - {{id: security-review, title: Security review}}
    - {{id: capacity, title: Capacity planning, checks: [disk-root]}}
  monthly:
    - {{id: restore-drill, title: Restore drill of the nightly dump}}
actions:
  - {{name: restart-web, type: command, argv: [/bin/true], description: restart the web service}}
checks:
  - {{name: cpu, type: cpu, every: 1m, warning: 80%, critical: 95%, for: 5m}}
  - {{name: memory, type: memory, every: 1m, warning: 85%, critical: 95%, for: 5m}}
  - {{name: load, type: load, every: 1m, warning: 2, critical: 4}}
  - {{name: disk-root, type: disk, every: 1m, mounts: [/], warning: 80%, critical: 90%}}
  - {{name: web-health, type: http, every: 1m, url: "http://127.0.0.1:{port}/healthz", warning: 500ms,
      critical: 2s, severity: P1, actions: [{{action: restart-web, when: [critical], after: 2}}]}}
  - {{name: gateway-latency, type: network_latency, every: 1m, targets: ["127.0.0.1:{port}"], warning: 50ms,
      critical: 200ms}}
  - {{name: apt-updates, type: nagios, every: 5m, severity: P3,
      command: [/bin/sh, -c, "echo 'APT WARNING: 3 packages can be upgraded (1 security) | packages=3;1;10'; exit 1"]}}
  - {{name: backup-fresh, type: file, schedule: "02:30", path: /var/backups/app/nightly.dump, warning: 26h,
      critical: 50h}}
  - {{name: tls-expiry, type: tls_cert, schedule: weekly, target: "127.0.0.1:{port}"}}
  - {{name: swap, type: swap, every: 1m, enabled: false}}
"""


def demo_config(port: int, state: Path) -> str:
    return textwrap.dedent(DEMO_CONFIG).lstrip().format(port=port, state=state)


# -- history ------------------------------------------------------------------------------------------------


class Demo:
    """Synthetic results shaped like a real host's; one method per check type, OK with no samples for others."""

    def __init__(self, now: float, tz):
        self.now, self.tz, self.rng = now, tz, random.Random(17)
        self.outage = (now - 6 * HOUR, now - 6 * HOUR + 20 * 60)           # web-health down for 20 minutes
        self.busy = (now - 2 * DAY - 3 * HOUR, now - 2 * DAY - 2 * HOUR)   # a CPU warning

    def result(self, options, t: float) -> tuple[Status, str, list]:
        method = getattr(self, f"_{options.type}", None)
        return method(options, t) if method else (Status.OK, "ok", [])

    def _wave(self, t: float, base: float, swing: float) -> float:
        """Busy afternoons, quiet nights."""
        hour = datetime.fromtimestamp(t, self.tz).hour
        return base + swing * max(0.0, math.sin((hour - 8) / 24 * 2 * math.pi)) + self.rng.uniform(0, 0.04)

    def _cpu(self, options, t):
        usage = 0.87 if self.busy[0] <= t < self.busy[1] else self._wave(t, 0.12, 0.38)
        status = Status.WARNING if usage > 0.8 and t >= self.busy[0] + 300 else Status.OK
        return status, f"CPU {usage * 100:.1f}% busy", [sample("usage_ratio", usage), sample("iowait_ratio", 0.01)]

    def _memory(self, options, t):
        used = 0.52 + 0.003 * (t - self.now + DAYS * DAY) / DAY + self.rng.uniform(0, 0.02)
        return Status.OK, f"memory {used * 100:.1f}% used", [sample("used_ratio", used),
                                                              sample("available_bytes", (1 - used) * 16 * 2**30)]

    def _load(self, options, t):
        per_core = self._wave(t, 0.2, 0.9)
        return Status.OK, f"load per core {per_core:.2f}", [sample("per_core", per_core * f, period=p)
                                                            for p, f in (("1m", 1.1), ("5m", 1.0), ("15m", 0.9))]

    def _disk(self, options, t):
        used = 0.58 + 0.0035 * (t - self.now + DAYS * DAY) / DAY + self.rng.uniform(-0.002, 0.002)
        size = 250 * 2**30
        return Status.OK, f"disk used: / {used * 100:.1f}%", [
            sample("used_ratio", used, mount="/"), sample("free_bytes", (1 - used) * size, mount="/"),
            sample("size_bytes", size, mount="/"), sample("inodes_used_ratio", 0.12, mount="/")]

    def _http(self, options, t):
        if self.outage[0] <= t < self.outage[1]:
            return Status.CRITICAL, "connect failed: connection refused", []
        seconds = 0.035 + self.rng.uniform(0, 0.02) + (0.3 if self.busy[0] <= t < self.busy[1] else 0.0)
        return Status.OK, f"HTTP 200 in {seconds * 1000:.0f}ms", [
            sample("status_code", 200), sample("response_seconds", seconds), sample("response_body_bytes", 33)]

    def _network_latency(self, options, t):
        target = options.targets[0]
        seconds = 0.0004 + self.rng.uniform(0, 0.0006)
        return Status.OK, f"connect {target} {seconds * 1000:.1f}ms", [
            sample("latency_seconds", seconds, target=target), sample("reachable", 1, target=target)]

    def _nagios(self, options, t):
        pending = 3 if t > self.now - 2 * DAY else (1 if t > self.now - 9 * DAY else 0)
        status = Status.WARNING if pending else Status.OK
        text = f"APT {status.name}: {pending} packages can be upgraded" if pending else "APT OK: 0 packages"
        return status, text, [sample("exit_code", int(status)),
                              sample("perfdata_value", pending, label="packages", unit="count")]

    def _file(self, options, t):
        age = 3.5 * HOUR + self.rng.uniform(0, 600)
        return Status.OK, f"{options.path} modified {age / HOUR:.1f}h ago", [
            sample("exists", 1), sample("age_seconds", age), sample("size_bytes", 7.4 * 2**30)]


def run_times(loaded: LoadedConfig, name: str, start: float, end: float) -> list[float]:
    trigger = loaded.triggers[name]
    if isinstance(trigger, Interval):   # backwards from `end`: the newest run is due again only after it
        step = max(trigger.seconds, SEED_STEP)
        return [end - i * step for i in range(int((end - start) // step), -1, -1)]
    return fire_times_between(trigger.spec, start, end, loaded.tz)


def seed(loaded: LoadedConfig, now: float, days: float = DAYS, *,
         leave_unrun: tuple[str, ...] = ("tls-expiry",)) -> None:
    """Write `days` of demo history ending just before `now` into the config's store (an agent started right
    after shows it until each check is next due), roll up the completed days as the agent's nightly task
    would, and add audit rows, log entries and a checklist tick."""
    store = Store(loaded.db_path)
    demo = Demo(now, loaded.tz)
    start, end = now - days * DAY, now - 5
    runs = []
    for options in loaded.checks:
        if options.name in leave_unrun or not options.enabled:
            continue
        for t in run_times(loaded, options.name, start, end):
            status, summary, samples = demo.result(options, t)
            runs.append(Evaluated(options.name, options.type, status, summary, tuple(samples), {}, t, 0.02, t))
    store.record_runs(runs)
    outage = demo.outage[0]
    for offset, outcome, verified in ((60, "success", 1), (240, "fixed", 1)):
        store.record_action({
            "started": outage + offset, "duration": 1.2, "action": "restart-web", "action_type": "command",
            "check_name": "web-health", "trigger": "connect failed: connection refused", "trigger_status": "critical",
            "target": "/bin/true", "dry_run": 0, "exit_code": 0, "output": "", "outcome": outcome,
            "decision": "ran" if offset == 60 else "verified", "source": "policy", "verified": verified,
            "details": '{"summary":"restarted the web service"}'})
    store.add_log("Applied security updates (openssl, nginx) and rebooted", at=now - 8 * DAY, category="update",
                  author="minh", source="cli")
    store.add_log("web outage: worker pool exhausted; pool raised from 20 to 40", at=outage + 900,
                  category="incident", author="linh", source="cli", check_name="web-health")
    store.add_log("CVE review: nothing open above medium", at=now - 1 * DAY, category="checklist", author="minh",
                  source="cli", check_name="weekly.security-review")
    cfg = loaded.config.store.retention
    store.rollup_and_prune(now, loaded.tz, max(cfg.raw, (days + 1) * DAY), cfg.rollups)
    store.close()


# -- the browser ----------------------------------------------------------------------------------------------


def chromium(url: str, screenshot: Path | None = None, size: tuple[int, int] = (1280, 900),
             timeout: float = 120) -> str:
    """Load `url` in headless Chromium (Debian's `chromium`; as root it needs --no-sandbox); return the DOM
    it built and, given a path, save a PNG of the window."""
    argv = ["chromium", "--headless", "--disable-gpu", "--hide-scrollbars", "--dump-dom",
            f"--window-size={size[0]},{size[1]}"]
    if os.geteuid() == 0:
        argv.append("--no-sandbox")
    if screenshot is not None:
        argv.append(f"--screenshot={screenshot}")
    done = subprocess.run(argv + [url], capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0 or not done.stdout.strip():
        raise RuntimeError(f"chromium failed ({done.returncode}): {done.stderr[-1500:]}")
    return done.stdout


# -- make status-screenshot ---------------------------------------------------------------------------------------


def _free_port() -> int:
    import socket
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _get(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status
    except OSError:
        return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--png", type=Path, required=True, help="screenshot of the overview")
    parser.add_argument("--check-png", type=Path, help="screenshot of one check's page")
    parser.add_argument("--days", type=float, default=DAYS, help=f"days of seeded history (default {DAYS})")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="maint-agent-status-") as directory:
        port, state = _free_port(), Path(directory) / "var"
        config = Path(directory) / "agent.yaml"
        config.write_text(demo_config(port, state))
        loaded = load_config(config)
        seed(loaded, time.time(), args.days)
        log = open(Path(directory) / "agent.log", "wb")
        agent = subprocess.Popen([sys.executable, "-m", "agent.cli", "run", "--config", str(config)], cwd=REPO,
                                 stdout=log, stderr=subprocess.STDOUT)
        try:
            base = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 30
            while _get(base + "/healthz") != 200:
                if agent.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"the agent did not start:\n{(Path(directory) / 'agent.log').read_text()}")
                time.sleep(0.1)
            args.png.parent.mkdir(parents=True, exist_ok=True)
            chromium(base + "/?refresh=0", args.png, (1280, 820))
            if args.check_png:
                chromium(base + "/check/web-health?refresh=0", args.check_png, (1280, 1400))
        finally:
            agent.terminate()
            agent.wait(timeout=30)
            log.close()
    print(f"wrote {args.png}" + (f" and {args.check_png}" if args.check_png else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
