"""Render a sample weekly report of the example profile from a demo store, for people to look at.

    python docs/report_preview.py --html var/report-preview/report.html --text docs/report-sample.txt

`make report-preview` runs this and screenshots the HTML with headless Chromium into
docs/report-sample.png. The store is seeded with one synthetic week (2026-03-02 to 03-09,
local time of the profile) for every check in examples/ai-camera.yaml: metrics shaped like
a real host (daily CPU waves, disks and the database growing, a beAuth outage and its
restart, a backup that shrank), so every section of the report has something to show. The
output is deterministic: same profile, same report.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import random
import re
import sys
import tempfile
from datetime import datetime, timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from agent.plugin.calendar import fire_times_between  # noqa: E402  (after the path insert: runs from a checkout)
from agent.config.triggers import Interval  # noqa: E402
from agent.config.load import LoadedConfig, load_config
from agent.maintenance import Window  # noqa: E402
from agent.reports.build import build_report, render_html, render_text  # noqa: E402
from agent.plugin.result import Evaluated, Status, sample  # noqa: E402
from agent.store.writer import Store  # noqa: E402

PROFILE = REPO / "examples" / "ai-camera.yaml"
HOST = "app-1.ai-camera"
DAY = 86400.0
MIN_SPACING = 600.0      # at most one demo run per 10 minutes per check: a week stays small


def load_profile() -> LoadedConfig:
    """The example profile with placeholder credentials (it only holds references) and a stable host name."""
    credentials = Path(tempfile.mkdtemp(prefix="maint-agent-preview-"))
    texts = [PROFILE.read_text()] + [p.read_text() for p in sorted((PROFILE.parent / "conf.d").glob("*.yaml"))]
    for name in set(re.findall(r"\$\{credential:([^}]+)\}", "".join(texts))):
        value = ("https://hooks.example.invalid/preview" if "webhook" in name or "url" in name
                 else "host=127.0.0.1 dbname=preview user=preview" if "dsn" in name else "preview-only")
        (credentials / name).write_text(value + "\n")
    os.environ["CREDENTIALS_DIRECTORY"] = str(credentials)
    loaded = load_config(PROFILE)
    agent = loaded.config.agent.model_copy(update={"hostname": HOST})
    return dataclasses.replace(loaded, config=loaded.config.model_copy(update={"agent": agent}))


def fire_times(loaded: LoadedConfig, name: str, start: float, end: float) -> list[float]:
    trigger = loaded.triggers[name]
    if isinstance(trigger, Interval):
        step = max(trigger.seconds, MIN_SPACING)
        return [start + i * step for i in range(int((end - start) // step))]
    return fire_times_between(trigger.spec, start, end, loaded.tz)


class Week:
    """Synthetic results for the week [start, end): one method per check type, a default for the rest."""

    def __init__(self, start: float, tz):
        self.start, self.tz, self.rng = start, tz, random.Random(45)

    def days(self, t: float) -> float:
        return (t - self.start) / DAY

    def hour(self, t: float) -> float:
        moment = datetime.fromtimestamp(t, self.tz)
        return moment.hour + moment.minute / 60

    def at(self, day: int, hour: int, minute: int = 0) -> float:
        """Local wall time on the week's n-th day (the week starts at local midnight; no DST in the profile's zone)."""
        return self.start + day * DAY + hour * 3600 + minute * 60

    def result(self, options, t: float) -> tuple[Status, list, dict]:
        method = getattr(self, f"_{options.type}", None)
        return method(options, t) if method else (Status.OK, [], {})

    def _wave(self, t: float, base: float, swing: float) -> float:
        """Busy afternoons, quiet nights."""
        return base + swing * max(0.0, math.sin((self.hour(t) - 8) / 24 * 2 * math.pi)) + self.rng.uniform(0, 0.03)

    def _cpu(self, options, t):
        return Status.OK, [sample("usage_ratio", self._wave(t, 0.18, 0.42)), sample("iowait_ratio", 0.02)], {}

    def _memory(self, options, t):
        return Status.OK, [sample("used_ratio", 0.58 + 0.006 * self.days(t) + self.rng.uniform(0, 0.02))], {}

    def _load(self, options, t):
        return Status.OK, [sample("per_core", self._wave(t, 0.3, 1.1), period="5m")], {}

    def _disk(self, options, t):
        growth = {0: (0.61, 0.0045, 200), 1: (0.70, 0.0092, 500)}
        samples = []
        for index, mount in enumerate(options.mounts):
            base, per_day, gib = growth.get(index, (0.4, 0.001, 100))
            used = base + per_day * self.days(t) + self.rng.uniform(-0.002, 0.002)
            samples += [sample("used_ratio", used, mount=mount), sample("size_bytes", gib * 2**30, mount=mount)]
        return Status.OK, samples, {}

    def _http(self, options, t):
        slow = 0.085 if "beauth" in options.name else 0.14
        outage = options.name.startswith("beauth") and self.at(2, 14, 5) <= t < self.at(2, 14, 45)
        if outage:
            return Status.CRITICAL, [sample("response_seconds", 2.0)], {}
        brownout = options.name.startswith("becamera") and self.at(4, 19) <= t < self.at(4, 19, 30)
        status = Status.WARNING if brownout else Status.OK
        return status, [sample("response_seconds", 0.31 if brownout else slow + self.rng.uniform(0, 0.03)),
                        sample("status_code", 200)], {}

    def _pg_connections(self, options, t):
        return Status.OK, [sample("connections_used_ratio", self._wave(t, 0.22, 0.3))], {}

    def _redis(self, options, t):
        return Status.OK, [sample("memory_used_ratio", 0.62 + 0.011 * self.days(t) + self.rng.uniform(0, 0.01))], {}

    def _pg_tables(self, options, t):
        return Status.OK, [sample("database_size_bytes", 48 * 2**30 + 1.6 * 2**30 * self.days(t), database="aicamera"),
                           sample("database_size_bytes", 9 * 2**20, database="postgres")], {}

    def _pg_statements(self, options, t):
        statements = [
            {"database": "aicamera", "calls": 18422, "mean_seconds": 0.412, "max_seconds": 3.9,
             "query": "SELECT camera_id, date_trunc($1, created_at), count(*) FROM events WHERE created_at >= $2 "
                      "GROUP BY 1, 2 ORDER BY 2"},
            {"database": "aicamera", "calls": 2210, "mean_seconds": 0.187, "max_seconds": 1.2,
             "query": "UPDATE counters SET value = value + $1 WHERE camera_id = $2 AND day = $3"},
            {"database": "aicamera", "calls": 96011, "mean_seconds": 0.021, "max_seconds": 0.4,
             "query": "SELECT * FROM sessions WHERE token = $1"},
        ]
        return Status.OK, [sample("statements_max_mean_seconds", 0.412)], {"statements": statements}

    def _heartbeat(self, options, t):
        failed = self.at(3, 2, 40) <= t < self.at(4, 2, 40)   # Thursday's dump failed; Friday's succeeded
        return (Status.CRITICAL if failed else Status.OK), [], {}

    def _backup_files(self, options, t):
        shrank = self.at(3, 2) <= t < self.at(3, 8)    # a dump 70 % smaller than the day before
        return (Status.WARNING if shrank else Status.OK), [sample("verified", 1)], {}


def seed(store: Store, loaded: LoadedConfig, start: float, end: float) -> None:
    week = Week(start, loaded.tz)
    runs = []
    for options in loaded.checks:
        for t in fire_times(loaded, options.name, start, end):
            status, samples, details = week.result(options, t)
            runs.append(Evaluated(options.name, options.type, status, f"{options.name} {status.label}",
                                  tuple(samples), details, t, 0.05, t))
        if options.type == "restore_test":     # the monthly DR drill ran on the 1st, before this week
            t = start - DAY + 4 * 3600
            runs.append(Evaluated(options.name, options.type, Status.OK, "restored and checked", (
                sample("restore_duration_seconds", 47 * 60 + 12), sample("restore_passed", 1)), {}, t, 2832.0, t))
    store.record_runs(runs)
    from agent.plugin.heartbeat import record
    for options in loaded.checks:   # the nightly job pings at 02:00 and runs ~40 min; Thursday's run failed
        if options.type == "heartbeat":
            for day in range(7):
                began = week.at(day, 2) + week.rng.uniform(0, 60)
                took = 38 * 60 + week.rng.uniform(0, 300)
                record(store.conn, options.name, "start", began)
                failed = day == 3
                record(store.conn, options.name, "fail" if failed else "success", began + took,
                       exit_status=2 if failed else 0, duration=took,
                       message="pg_dump: error: could not write to output file: No space left on device"
                       if failed else None)
    audit = [  # started, action, check, trigger status, decision, source, outcome
        (week.at(2, 14, 12), "restart-beauth", "beauth-health", "critical", "ran", "policy", "success"),
        (week.at(2, 14, 13), "page-oncall", "beauth-health", "critical", "ran", "escalation", "success"),
        (week.at(2, 14, 14), "restart-beauth", "beauth-health", "critical", "cooldown", "policy", "skipped"),
        (week.at(6, 2, 6), "analyze-tables", "pg-tables", "warning", "ran", "policy", "success"),
    ]
    types = {name: action.type for name, action in loaded.actions.items()}
    for started, action, check, trigger_status, decision, source, outcome in audit:
        store.conn.execute(
            "INSERT INTO action_runs(started, duration, action, action_type, check_name, trigger, target, dry_run,"
            " exit_code, output, verified, outcome, decision, source, trigger_status) VALUES"
            " (?, 2.4, ?, ?, ?, '', '', 0, ?, '', ?, ?, ?, ?, ?)",
            (started, action, types.get(action, "command"), check, None if decision != "ran" else 0,
             None if decision != "ran" or source != "policy" else 1, outcome, decision, source, trigger_status))
    entries = [
        (week.at(0, 9, 30), "checklist", "linh", "daily.log-review", "no new ERROR patterns in beauth/becamera"),
        (week.at(1, 16), "update", "minh", None, "Applied security updates (openssl, nginx) and rebooted app-1"),
        (week.at(2, 15, 6), "incident", "linh", None, "beAuth down from 14:05: connection pool exhausted; "
                                                     "pool size raised from 20 to 40"),
        (week.at(3, 11), "checklist", "minh", "weekly.security-review", "CVE review: nothing open above medium"),
        (week.at(4, 10), "backup", "minh", None, "Moved dumps older than 30 days to S3 after the capacity review"),
        (week.at(5, 17), "checklist", "linh", "weekly.documentation-update", "runbook: pool sizing section"),
    ]
    for at, category, author, key, message in entries:
        store.add_log(message, at=at, category=category, author=author, source="cli", check_name=key)
    windows = [  # starts, minutes, checks, author, source, config window, reason
        (week.at(1, 15, 40), 30, None, "minh", "cli", None, "security updates and reboot of app-1"),
        (week.at(6, 2), 90, ("pg-activity", "pg-connections"), "maint-agent", "config", "weekly-analyze",
         "weekly ANALYZE and index maintenance"),
    ]
    for starts, minutes, checks, author, source, name, reason in windows:
        window_id = store.open_window(Window(0, starts, starts + minutes * 60, checks, reason, author, source, name))
        store.end_window(window_id, at=starts + minutes * 60, by="maint-agent", reason="expired")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--html", type=Path, required=True, help="write the HTML report here")
    parser.add_argument("--text", type=Path, help="write the text report here")
    args = parser.parse_args(argv)
    loaded = load_profile()
    start = datetime(2026, 3, 2, tzinfo=loaded.tz).timestamp()
    end = (datetime(2026, 3, 2, tzinfo=loaded.tz) + timedelta(days=7)).timestamp()
    with tempfile.TemporaryDirectory() as directory:
        store = Store(Path(directory) / "preview.db")
        seed(store, loaded, start, end)
        report = build_report(store.conn, loaded, "week", start, end, now=end + 7 * 3600)
        store.close()
    args.html.parent.mkdir(parents=True, exist_ok=True)
    args.html.write_text(render_html(report))
    if args.text:
        args.text.write_text(render_text(report))
    print(f"wrote {args.html}" + (f" and {args.text}" if args.text else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
