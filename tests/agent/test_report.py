"""Reports from a store seeded with a known week (fake clock): every figure checked against the history
that produced it, then rendered as text, HTML, JSON, CSV and a PNG by headless Chromium."""

from __future__ import annotations

import csv
import io
import json
import math
import shutil
import subprocess
from datetime import datetime, timezone

import pytest

from agent.config.load import load_config
from agent.reports.checklist import period_bounds
from agent.reports.build import build_report, last_complete, render_csv, render_html, render_json, render_text
from agent.plugin.result import Evaluated, Status, sample
from agent.store.writer import Store
from tests.conftest import run_cli

UTC = timezone.utc
START = datetime(2026, 3, 2, tzinfo=UTC).timestamp()        # a Monday: the week [START, END)
END = START + 7 * 86400
DAY = 86400.0
MIN = 60.0

CONFIG = """
agent: {{hostname: web-1, timezone: UTC, state_dir: var}}
smtp: {smtp}
reports:
  - {{name: weekly, period: week, recipients: [ops@example.com, "Duty Manager <duty@example.com>"], attach_csv: true}}
checklists:
  weekly:
    - {{id: capacity, title: Capacity planning, checks: [disk]}}
    - {{id: security-review, title: Security review}}
    - {{id: docs, title: Documentation update}}
actions:
  - {{name: restart-web, type: command, argv: [/bin/true]}}
  - {{name: analyze, type: command, argv: [/bin/true]}}
  - {{name: rotate-logs, type: command, argv: [/bin/true]}}
checks:
  - {{name: web, type: http, every: 10m, url: "http://127.0.0.1:1/", severity: P1,
      actions: [{{action: restart-web}}, {{action: rotate-logs, when: [warning], window: "sun 02:00-04:00"}}]}}
  - {{name: disk, type: disk, every: 1h, mounts: [/], warning: 80%, critical: 90%}}
  - {{name: cpu, type: cpu, every: 1h}}
  - {{name: dumps, type: backup_files, every: 6h, path: "{tmp}/dumps/*.gz"}}
  - {{name: restore, type: restore_test, dsn: "host=127.0.0.1 dbname=postgres", path: "{tmp}/dumps/*.dump"}}
  - {{name: pg-tables, type: pg_tables, schedule: daily, dsn: "host=127.0.0.1 dbname=app",
      actions: [{{action: analyze, when: [warning]}}]}}
  - {{name: pg-slow, type: pg_statements, schedule: weekly, dsn: "host=127.0.0.1 dbname=app"}}
"""
NO_SMTP = '{host: 127.0.0.1, port: 2525, security: none, sender: "maint-agent <maint@example.com>"}'


def run(check, check_type, started, status=Status.OK, samples=(), details=None):
    return Evaluated(check, check_type, status, f"{check} {status.label}", tuple(samples), details or {},
                     started, 0.01, started)


def disk_used(t: float) -> float:
    """The true line, 0.5 at the week's start, +1 percentage point a day, with a small wobble."""
    days = (t - START) / DAY
    return 0.5 + 0.01 * days + 0.002 * math.sin(days * 17.0)


WEB_FAILING = {  # started → status of the web check's non-OK runs
    START - 10 * MIN: Status.CRITICAL,                       # began before the period, OK again at START + 10m
    START: Status.CRITICAL,
    START + DAY + 600 * MIN: Status.CRITICAL,                # day 1 10:00–10:30: 30 minutes
    START + DAY + 610 * MIN: Status.CRITICAL,
    START + DAY + 620 * MIN: Status.CRITICAL,
    START + 3 * DAY + 720 * MIN: Status.WARNING,             # day 3 12:00–12:20, worst critical
    START + 3 * DAY + 730 * MIN: Status.CRITICAL,
    END - 20 * MIN: Status.CRITICAL,                         # still failing when the week ends
    END - 10 * MIN: Status.CRITICAL,
}


def seed(store: Store) -> None:
    runs = [run("web", "http", t, WEB_FAILING.get(t, Status.OK), [sample("response_seconds", 0.1)])
            for t in (START - 20 * MIN, START - 10 * MIN)]
    runs += [run("web", "http", START + i * 10 * MIN, WEB_FAILING.get(START + i * 10 * MIN, Status.OK),
                 [sample("response_seconds", 0.1)]) for i in range(7 * 144)]
    runs += [run("disk", "disk", START + h * 3600, samples=[sample("used_ratio", disk_used(START + h * 3600),
                                                                   mount="/"),
                                                            sample("size_bytes", 100 * 2**30, mount="/")])
             for h in range(7 * 24)]
    runs += [run("cpu", "cpu", START + h * 3600, samples=[sample("usage_ratio", 0.2 + 0.1 * (h % 2))])
             for h in range(7 * 24)]
    runs += [run("dumps", "backup_files", START + i * 6 * 3600, Status.CRITICAL if i == 5 else Status.OK)
             for i in range(28)]
    runs += [run("restore", "restore_test", START + 2 * DAY,
                 samples=[sample("restore_duration_seconds", 5400), sample("restore_passed", 1)])]
    runs += [run("pg-tables", "pg_tables", START + d * DAY + 3600,
                 samples=[sample("database_size_bytes", 1e9 + 5e7 * d, database="app")]) for d in range(7)]
    statements = [{"database": "app", "calls": 120, "mean_seconds": 0.8, "max_seconds": 2.5,
                   "query": "SELECT * FROM users WHERE password='hunter22'"},
                  {"database": "app", "calls": 5000, "mean_seconds": 0.05, "max_seconds": 0.3,
                   "query": "SELECT count(*) FROM events"}]
    runs += [run("pg-slow", "pg_statements", START + 6 * DAY, details={"statements": statements})]
    store.record_runs(runs)
    actions = [  # started, action, type, check, trigger_status, decision, dry_run, source
        (START + DAY + 615 * MIN, "restart-web", "command", "web", "critical", "ran", 0, "policy"),      # corrective
        (START + 2 * DAY + 3700, "analyze", "command", "pg-tables", "warning", "ran", 0, "policy"),       # calendar
        (START + 3 * DAY + 735 * MIN, "restart-web", "command", "web", "critical", "dry_run", 1, "policy"),
        (START + 3 * DAY + 740 * MIN, "restart-web", "command", "web", "critical", "cooldown", 0, "policy"),
        (START + 4 * DAY, "restart-web", "command", None, "manual", "ran", 0, "manual"),   # counted by its log entry
        (START + 6 * DAY + 2 * 3600, "rotate-logs", "command", "web", "warning", "ran", 0, "policy"),   # in a window
    ]
    for started, action, kind, check, trigger_status, decision, dry_run, source in actions:
        store.conn.execute(
            "INSERT INTO action_runs(started, duration, action, action_type, check_name, trigger, target, dry_run,"
            " exit_code, output, verified, outcome, decision, source, trigger_status) VALUES"
            " (?, 0.5, ?, ?, ?, 'web critical', '/bin/true', ?, 0, '', 1, 'success', ?, ?, ?)",
            (started, action, kind, check, dry_run, decision, source, trigger_status))
    store.add_log("Replaced disk sdb", at=START + 2 * DAY, category="hardware", author="anna", source="cli")
    store.add_log("Fixed nginx config after the outage", at=START + 3 * DAY + 800 * MIN, category="incident",
                  author="bo", source="cli")
    store.add_log("reviewed CVE list", at=START + 4 * DAY, category="checklist", author="anna", source="cli",
                  check_name="weekly.security-review")
    store.add_log("restart-web ran by hand: ok", at=START + 4 * DAY, category="corrective", author="bo",
                  source="cli")
    store.add_log("agent started", at=START + 5 * DAY)   # the agent's own lines: not in the report
    seed_maintenance(store)
    store.add_log("web: settled after remediation (restart-web)", at=START + 5 * DAY, category="action",
                  source="policy")


def seed_maintenance(store: Store) -> None:
    """3h30m of maintenance in the week: 30m of a window from the week before, the Sunday ANALYZE window (2h),
    and on day 1 two overlapping windows of 10:00-10:45 (stopped early) and 10:30-11:00 (1h together)."""
    from agent.maintenance import Window
    windows = [  # starts, planned end, checks, source, name, ended, end reason
        (START - 30 * MIN, START + 30 * MIN, None, "cli", None, START + 30 * MIN, "expired"),
        (START + 6 * DAY + 120 * MIN, START + 6 * DAY + 240 * MIN, ("pg-tables",), "config", "weekly-analyze",
         START + 6 * DAY + 240 * MIN, "expired"),
        (START + DAY + 600 * MIN, START + DAY + 720 * MIN, ("web",), "cli", None, START + DAY + 645 * MIN, "stopped"),
        (START + DAY + 630 * MIN, START + DAY + 660 * MIN, ("web", "disk"), "cli", None, None, None),
        (END + 60 * MIN, END + 120 * MIN, None, "cli", None, None, None),                  # the next week's
    ]
    for starts, ends, checks, source, name, ended, reason in windows:
        window_id = store.open_window(Window(0, starts, ends, checks, "nginx upgrade password=hunter22", "anna",
                                             source, name))
        if ended is not None:
            store.end_window(window_id, at=ended, by="anna", reason=reason)


def make_seeded(tmp_path, write_config, smtp: str = NO_SMTP):
    """The config above with `smtp` as its smtp: section, and its store holding the seeded week."""
    loaded = load_config(write_config(CONFIG.format(tmp=tmp_path, smtp=smtp)))
    store = Store(loaded.db_path)
    seed(store)
    return loaded, store


@pytest.fixture
def seeded(tmp_path, write_config):
    loaded, store = make_seeded(tmp_path, write_config)
    yield loaded, store
    store.close()


def test_report_week_figures_match_the_seeded_history(seeded):
    loaded, store = seeded
    report = build_report(store.conn, loaded, "week", START, END, now=END + 3600)
    assert (report.host, report.label, report.worst) == ("web-1", "2026-W10", "critical")

    checks = {c.check: c for c in report.checks}
    assert (checks["web"].runs, checks["web"].failures, checks["web"].critical, checks["web"].warning) == \
        (1008, 8, 7, 1)
    assert checks["web"].severity == "P1" and checks["disk"].severity == "P2"
    assert checks["dumps"].worst == "critical" and checks["cpu"].worst == "ok"

    [web] = report.availability
    assert web.ratio == pytest.approx(1000 / 1008) and web.met is False
    assert web.mean_response_seconds == pytest.approx(0.1)

    incidents = [(i.check, i.start, i.end, i.duration, i.worst, i.severity, i.began_before_period)
                 for i in report.incidents if i.check == "web"]
    assert incidents == [
        ("web", START - 10 * MIN, START + 10 * MIN, 20 * MIN, "critical", "P1", True),
        ("web", START + DAY + 600 * MIN, START + DAY + 630 * MIN, 30 * MIN, "critical", "P1", False),
        ("web", START + 3 * DAY + 720 * MIN, START + 3 * DAY + 740 * MIN, 20 * MIN, "critical", "P1", False),
        ("web", END - 20 * MIN, None, 20 * MIN, "critical", "P1", False),
    ]
    dumps = [i for i in report.incidents if i.check == "dumps"]
    assert [(i.start, i.duration) for i in dumps] == [(START + 30 * 3600, 6 * 3600)]
    assert report.mean_resolution_seconds == pytest.approx((20 + 30 + 20 + 360) * MIN / 4)

    [backup] = report.backups
    assert (backup.runs, backup.ok) == (28, 27) and backup.success_ratio == pytest.approx(27 / 28)
    [restore] = report.restore_tests
    assert (restore.restore_seconds, restore.passed, restore.rto_target, restore.within_rto) == \
        (5400, True, 4 * 3600, True)

    [disk] = report.disks
    true_end = 0.5 + 0.01 * 7
    assert disk.mount == "/" and disk.size_bytes == 100 * 2**30
    assert disk.series.slope_per_day == pytest.approx(0.01, rel=0.05)
    assert disk.days_until_full == pytest.approx((1 - true_end) / 0.01, abs=1.0)        # 43 days
    assert disk.days_until_critical == pytest.approx((0.9 - true_end) / 0.01, abs=1.0)  # 33 days
    [cpu] = report.trends
    assert cpu.series.mean == pytest.approx(0.25) and cpu.series.high == pytest.approx(0.3)
    [database] = report.databases
    assert database.growth_bytes == pytest.approx(6 * 5e7)
    assert database.series.slope_per_day is None and not database.series.enough, "7 daily points: no trend"

    assert [q.mean_seconds for q in report.slow_queries] == [0.8, 0.05]
    assert "hunter22" not in report.slow_queries[0].query

    kinds = [(a.action, a.kind) for a in report.actions]
    assert kinds == [("restart-web", "corrective"), ("analyze", "preventive"), ("restart-web", None),
                     ("restart-web", None), ("restart-web", None), ("rotate-logs", "preventive")]
    # preventive: analyze (calendar-scheduled check), rotate-logs (maintenance window), the hardware entry and
    # the checklist tick; corrective: the restart on a failing interval check, the incident entry and the entry
    # the manual restart wrote (its audit row is not counted twice); dry run and skip are listed, not counted
    assert (report.maintenance.preventive, report.maintenance.corrective) == (4, 3)
    assert report.maintenance.preventive_ratio == pytest.approx(4 / 7)

    assert [e.message for e in report.log] == ["Replaced disk sdb", "Fixed nginx config after the outage",
                                               "reviewed CVE list", "restart-web ran by hand: ok"]
    assert [(c.item, c.done, c.status) for c in report.checklist] == [
        ("capacity", True, "ok"), ("security-review", True, None), ("docs", False, None)]
    goals = {g.name: (g.value, g.met) for g in report.goals}
    assert goals["availability"] == (pytest.approx(1000 / 1008), False)
    assert goals["backup success rate"] == (pytest.approx(27 / 28), False)
    assert goals["preventive share"] == (pytest.approx(4 / 7), False)
    assert goals["mean resolution time"][1] is True
    assert goals["maintenance time"] == (pytest.approx(3.5 * 3600), False)
    assert [(m.start, m.seconds, m.checks, m.name, m.state) for m in report.maintenance_windows] == [
        (START - 30 * MIN, 30 * MIN, "all", None, "expired"),
        (START + DAY + 600 * MIN, 45 * MIN, "web", None, "stopped"),
        (START + DAY + 630 * MIN, 30 * MIN, "web, disk", None, "expired"),
        (START + 6 * DAY + 120 * MIN, 120 * MIN, "pg-tables", "weekly-analyze", "expired")]
    assert "hunter22" not in report.maintenance_windows[0].reason


def test_report_renderings_carry_the_same_figures(seeded):
    loaded, store = seeded
    report = build_report(store.conn, loaded, "week", START, END, now=END + 3600)
    text = render_text(report)
    assert "99.206%" in text and "96.4%" in text and "43 days" in text and "NOT MET" in text
    assert "2 of 3 done" in text and "Replaced disk sdb" in text and "agent started" not in text
    assert "MAINTENANCE WINDOWS (3h30m in force" in text and "weekly-analyze" in text
    html = render_html(report)
    assert "99.206%" in html and "43 days" in html
    assert "<script" not in html and "<link" not in html and "<style" not in html and "src=" not in html
    data = json.loads(render_json(report))
    assert data["start"] == "2026-03-02T00:00:00.000Z" and data["availability"][0]["ratio"] == pytest.approx(1000 / 1008)
    assert data["maintenance"]["preventive_ratio"] == pytest.approx(4 / 7)
    rows = list(csv.DictReader(io.StringIO(render_csv(report))))
    by_key = {(r["section"], r["item"], r["metric"]): r["value"] for r in rows}
    assert float(by_key[("availability", "web", "ratio")]) == pytest.approx(1000 / 1008, rel=1e-5)
    assert float(by_key[("disks", "/", "days_until_full")]) == pytest.approx(43, abs=1.0)
    assert by_key[("checks", "web", "failures")] == "8"
    assert float(by_key[("report", "", "maintenance_seconds")]) == 3.5 * 3600
    assert "Maintenance windows (3h30m in force" in html


def test_report_of_an_empty_store_renders_every_format_without_data(tmp_path, write_config):
    loaded = load_config(write_config(CONFIG.format(tmp=tmp_path, smtp=NO_SMTP)))
    store = Store(loaded.db_path)
    report = build_report(store.conn, loaded, "week", START, END, now=END)
    assert report.worst == "none" and not report.incidents
    assert all(g.value is None for g in report.goals if g.name != "maintenance time")
    assert report.maintenance_seconds == 0 and report.goals[-1].met is True
    assert "no data" in render_text(report) and "no http check ran in this period" in render_html(report)
    assert json.loads(render_json(report))["checks"][0]["worst"] == "none" and render_csv(report)
    store.close()


def test_report_last_complete_period_is_the_one_before_now():
    tz = load_zone = __import__("zoneinfo").ZoneInfo("Europe/Berlin")
    now = datetime(2026, 3, 11, 9, 30, tzinfo=load_zone).timestamp()   # a Wednesday
    start, end = last_complete("week", now, tz)
    assert datetime.fromtimestamp(start, tz).isoformat() == "2026-03-02T00:00:00+01:00"
    assert datetime.fromtimestamp(end, tz).isoformat() == "2026-03-09T00:00:00+01:00"
    start, end = last_complete("quarter", now, tz)
    assert datetime.fromtimestamp(start, tz).date().isoformat() == "2025-10-01"


def test_report_quarter_uses_rollups_where_raw_runs_were_pruned(tmp_path, write_config):
    loaded = load_config(write_config(CONFIG.format(tmp=tmp_path, smtp=NO_SMTP)))
    store = Store(loaded.db_path)
    quarter = datetime(2026, 1, 1, tzinfo=UTC).timestamp()
    days = 90
    store.record_runs([run("disk", "disk", quarter + h * 3600, Status.CRITICAL if h == 10 else Status.OK,
                           [sample("used_ratio", 0.3 + 0.005 * h / 24, mount="/")]) for h in range(days * 24)])
    store.rollup_and_prune(quarter + 91 * DAY, loaded.tz, keep_raw=30 * DAY, keep_rollups=730 * DAY)
    assert store.conn.execute("SELECT min(started) FROM check_runs").fetchone()[0] > quarter + 59 * DAY
    report = build_report(store.conn, loaded, "quarter", quarter, quarter + days * DAY, now=quarter + 91 * DAY)
    disk = next(c for c in report.checks if c.check == "disk")
    assert (disk.runs, disk.failures) == (days * 24, 1), "pruned days are counted from their rollups"
    [forecast] = report.disks
    assert forecast.series.slope_per_day == pytest.approx(0.005, rel=0.02)
    assert forecast.days_until_full == pytest.approx((1 - (0.3 + 0.005 * days)) / 0.005, abs=1.0)
    assert report.notes and "rollups" in report.notes[0]
    store.close()


def test_report_cli_prints_the_period_from_date_in_every_format(seeded):
    loaded, _ = seeded
    done = run_cli("report", "--period", "week", "--from", "2026-03-04", "--format", "json", config=loaded.path)
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    assert data["label"] == "2026-W10" and data["availability"][0]["ok"] == 1000
    done = run_cli("report", "--report", "weekly", "--from", "2026-03-02", config=loaded.path)
    assert done.returncode == 0 and "99.206%" in done.stdout and "web-1" in done.stdout
    done = run_cli("report", "--period", "fortnight", config=loaded.path)
    assert done.returncode == 2


@pytest.mark.skipif(not shutil.which("chromium"), reason="Debian's chromium is not installed")
def test_report_html_renders_to_png_in_headless_chromium(seeded, tmp_path):
    loaded, store = seeded
    page = tmp_path / "report.html"
    page.write_text(render_html(build_report(store.conn, loaded, "week", START, END, now=END)))
    png = tmp_path / "report.png"
    done = subprocess.run(["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                           f"--screenshot={png}", "--window-size=1000,1600", page.as_uri()],
                          capture_output=True, text=True, timeout=120)
    assert png.exists(), done.stderr[-2000:]
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20000


def test_report_json_upload_to_s3_retries_until_the_bucket_exists(tmp_path, write_config, closed_port, monkeypatch):
    """moto in server mode is the S3 endpoint; the mail goes nowhere (refused) and does not hold the upload up."""
    import boto3
    from moto.server import ThreadedMotoServer

    from agent.reports.delivery import deliver_pending, queue_report
    from tests.conftest import free_port

    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=free_port(), verbose=False)
    server.start()
    try:
        endpoint = "http://%s:%d" % server.get_host_and_port()
        upload = (f"s3_upload: {{{{bucket: fleet-reports, prefix: reports/, endpoint_url: '{endpoint}', "
                  f"region: us-east-1, access_key_id: testing, secret_access_key: testing}}}}")
        smtp = f'{{host: 127.0.0.1, port: {closed_port}, security: none, sender: maint@example.com}}'
        text = CONFIG.replace("attach_csv: true}}", f"attach_csv: true, {upload}}}}}").format(tmp=tmp_path, smtp=smtp)
        loaded = load_config(write_config(text))
        store = Store(loaded.db_path)
        seed(store)
        queue_report(loaded.db_path, loaded, loaded.config.reports[0], END + 3600)
        assert deliver_pending(loaded.db_path, loaded, END + 3600) == {"sent": 0, "retrying": 2, "failed": 0}
        errors = dict(store.conn.execute("SELECT subject, last_error FROM report_outbox"))
        key = "reports/host=web-1/weekly/2026-W10.json"
        assert "NoSuchBucket" in errors[key] and "connection refused" in next(e for s, e in errors.items() if s != key)

        s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="testing",
                          aws_secret_access_key="testing")
        s3.create_bucket(Bucket="fleet-reports")
        assert deliver_pending(loaded.db_path, loaded, END + 3600 + 60)["sent"] == 1
        data = json.loads(s3.get_object(Bucket="fleet-reports", Key=key)["Body"].read())
        assert data["label"] == "2026-W10" and data["availability"][0]["ratio"] == pytest.approx(1000 / 1008)
        store.close()
    finally:
        server.stop()


def test_report_period_long_pruned_comes_only_from_its_own_rollup_days(tmp_path, write_config):
    loaded = load_config(write_config(CONFIG.format(tmp=tmp_path, smtp=NO_SMTP)))
    store = Store(loaded.db_path)
    store.record_runs([run("cpu", "cpu", START + h * 3600, samples=[sample("usage_ratio", 0.5)])
                       for h in range(30 * 24)])
    store.rollup_and_prune(START + 31 * DAY, loaded.tz, keep_raw=5 * DAY, keep_rollups=730 * DAY)
    report = build_report(store.conn, loaded, "week", START, END, now=START + 31 * DAY)
    assert next(c for c in report.checks if c.check == "cpu").runs == 7 * 24
    assert report.incidents == [] and report.trends[0].series.mean == pytest.approx(0.5)
    store.close()


def fresh_store(tmp_path, write_config, minutes: int = 2, every: float = 10.0):
    """What a new install has after `minutes` of running: disk results every `every` seconds, ending now."""
    config = write_config(f"""
        agent: {{hostname: web-1, timezone: UTC, state_dir: {tmp_path}/var}}
        checks:
          - {{name: disk, type: disk, every: 10s, mounts: [/], critical: 90%}}
    """)
    loaded = load_config(config)
    store = Store(loaded.db_path)
    now = datetime(2026, 3, 11, 9, 30, tzinfo=UTC).timestamp()   # a Wednesday
    count = int(minutes * 60 / every)
    store.record_runs([run("disk", "disk", now - (count - i) * every,
                           samples=[sample("used_ratio", 0.40 + 0.0001 * i, mount="/")]) for i in range(count)])
    return loaded, store, now


def test_report_of_a_fresh_install_has_no_worst_status_no_pruned_note_and_says_where_history_starts(
        tmp_path, write_config):
    loaded, store, now = fresh_store(tmp_path, write_config)
    start, end = last_complete("week", now, loaded.tz)
    report = build_report(store.conn, loaded, "week", start, end, now)
    text = render_text(report)
    assert report.worst == "none" and "worst status: none (no runs in this period)" in text
    assert "History: starts 2026-03-11 09:28, after this period: there is no data for it." in text
    assert not report.notes and "pruned" not in text
    title = next(line for line in render_html(report).splitlines() if "web-1 &middot;" in line)
    assert ">none</span>" in title and ">ok</span>" not in title, "no green OK badge without runs"
    store.close()


def test_report_trend_and_days_until_full_need_a_day_of_history(tmp_path, write_config):
    loaded, store, now = fresh_store(tmp_path, write_config)
    start, end = period_bounds("day", now, loaded.tz)
    report = build_report(store.conn, loaded, "day", start, end, now)
    [disk] = report.disks
    assert not disk.series.enough and disk.series.slope_per_day is None and disk.days_until_full is None
    text = render_text(report)
    assert "not enough history" in text and "pp/day" not in text and "days" not in text.split("CAPACITY")[1][:300]
    assert "History: starts 2026-03-11 09:28; this report covers 2026-03-11 09:28 to " in text
    assert "not enough history" in render_html(report)
    store.close()


def test_report_trend_from_a_day_of_hourly_points_is_fitted(tmp_path, write_config):
    loaded, store, now = fresh_store(tmp_path, write_config, minutes=26 * 60, every=3600.0)
    start, end = now - 2 * DAY, now
    [disk] = build_report(store.conn, loaded, "week", start, end, now).disks
    assert disk.series.enough and disk.series.slope_per_day == pytest.approx(0.0024, rel=0.01)
    store.close()
