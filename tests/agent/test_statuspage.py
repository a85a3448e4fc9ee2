"""The status page rendered in-process from a real store with a fixed clock: what each page shows, its
headers, escaping, 404s, an empty store, and the chart geometry. The running agent, a real browser and
authentication are in tests/service/test_service_statuspage.py."""

from __future__ import annotations

import html
import re
from datetime import datetime, timezone

import pytest

from agent import maintenance
from agent.config.load import load_config
from agent.job import Job
from agent.http.metrics import AgentState
from agent.plugin.result import Evaluated, Status, sample
from agent.http.statuspage import SECURITY_HEADERS, charts, respond
from agent.http.statuspage.pages import incidents
from agent.http.statuspage.queries import MainValue
from agent.http.statuspage.recent import Recent
from agent.store.writer import Store
from checks import CHECK_TYPES

NOW = datetime(2026, 3, 4, 12, 0, tzinfo=timezone.utc).timestamp()
MIN = 60.0
CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"

CONFIG = """
agent: {state_dir: var, timezone: UTC, hostname: web-1}
checklists:
  weekly:
    - {id: review, title: Security review}
    - {id: capacity, title: Capacity planning, checks: [fresh]}
actions:
  - {name: fix-disk, type: command, argv: [/bin/true]}
checks:
  - {name: disk, type: disk, every: 1m, mounts: [/], warning: 80%, critical: 90%,
     actions: [{action: fix-disk, window: "sun 02:00-04:00"}]}
  - {name: web, type: http, every: 1m, url: "http://127.0.0.1:1/", critical: 2s}
  - {name: plugin, type: nagios, every: 1m, command: [/bin/true]}
  - {name: fresh, type: cpu, every: 1m}
  - {name: dr-drill, type: cpu, schedule: monthly}
  - {name: spare-swap, type: swap, every: 1m, enabled: false}
"""


def run(check: str, kind: str, started: float, status: Status = Status.OK, samples=(), summary: str = "",
        pending: Status = Status.OK) -> Evaluated:
    return Evaluated(check, kind, status, summary or f"{check} {status.label}", tuple(samples), {}, started, 0.01,
                     started, pending)


@pytest.fixture
def loaded(write_config):
    return load_config(write_config(CONFIG))


@pytest.fixture
def seeded(loaded):
    """A day of runs: disk climbing to a WARNING, web down for 20 minutes two hours ago, a chatty plugin."""
    store = Store(loaded.db_path)
    runs = []
    for i in range(24 * 60, 0, -5):
        t = NOW - i * MIN
        used = 0.5 + 0.35 * (1 - i / (24 * 60))
        runs.append(run("disk", "disk", t, Status.WARNING if used > 0.8 else Status.OK,
                        [sample("used_ratio", used, mount="/"), sample("size_bytes", 2**30, mount="/")]))
        down = NOW - 120 * MIN <= t < NOW - 100 * MIN
        runs.append(run("web", "http", t, Status.CRITICAL if down else Status.OK,
                        [] if down else [sample("response_seconds", 0.05)]))
        runs.append(run("plugin", "nagios", t, samples=[sample("exit_code", 0)],
                        summary='<script>alert("plugin")</script><b>bold</b>'))
    store.record_runs(runs)
    store.add_log("<img src=x onerror=alert(1)> replaced the disk", at=NOW - 3600, category="hardware",
                  author="<i>ops</i>", source="cli")
    store.add_log("<script>alert('note')</script>", at=NOW - 1800, category="checklist", author="ana", source="cli",
                  check_name="weekly.review")
    store.close()
    return loaded


def page(loaded, path: str, query: str = "", state: AgentState | None = None) -> tuple[int, str, dict]:
    code, body, content_type, headers = respond(path, query, loaded, state or AgentState("9.9.9", 2), now=NOW)
    assert content_type == "text/html; charset=utf-8"
    return code, body.decode(), headers


def rows(text: str) -> list[str]:
    """The overview's check names, top to bottom."""
    return re.findall(r'<a href="/check/([^"?]+)', text.split("<tbody>", 1)[1])


# -- pages -----------------------------------------------------------------------------------------------------


def test_statuspage_overview_lists_every_configured_check_worst_first(seeded):
    code, text, _ = page(seeded, "/")
    assert code == 200
    assert rows(text) == ["disk", "dr-drill", "fresh", "plugin", "web", "spare-swap"]   # web is OK again since 10:20
    assert ">WARNING<" in text and ">NOT RUN YET<" in text and ">DISABLED<" in text and ">OK<" in text
    assert 'class="row-warning"' in text
    assert text.count('<svg class="spark"') == 3 and text.count('<svg class="bar"') == 3
    assert "no data yet" in text                     # the checks that never ran
    assert "maint-agent 9.9.9" in text and "web-1" in text


def test_statuspage_overview_orders_critical_before_warning_and_shows_a_pending_breach(seeded):
    state = AgentState("9.9.9", 2)
    cls = CHECK_TYPES["http"]
    options = next(c for c in seeded.checks if c.name == "web")
    job = Job(cls(options), seeded.triggers["web"], 5)
    job.latest = run("web", "http", NOW - 10, Status.CRITICAL, summary="connection refused")
    job.next_due = NOW + 50
    fresh = Job(CHECK_TYPES["cpu"](next(c for c in seeded.checks if c.name == "fresh")), seeded.triggers["fresh"], 5)
    fresh.latest = run("fresh", "cpu", NOW - 5, Status.OK, pending=Status.CRITICAL, summary="cpu 97%")
    state.jobs = [job, fresh]
    code, text, _ = page(seeded, "/", state=state)
    assert rows(text)[:3] == ["web", "disk", "fresh"]
    assert "connection refused" in text and "in 50s" in text
    assert '<span class="badge critical">pending critical</span>' in text


def test_statuspage_check_page_draws_a_chart_per_metric_with_threshold_lines_and_incidents(seeded):
    code, text, _ = page(seeded, "/check/disk")
    assert code == 200
    assert text.count('<svg class="chart"') == 2      # used_ratio{mount=/}, size_bytes{mount=/}
    assert text.count("<title id=\"chart-") == 2 and "<desc id=\"chart-1-d\">" in text
    assert 'class="limit warning"' in text and "warning 80%" in text and "critical 90%" in text
    assert text.count("<summary>Data table</summary>") == 2
    assert "fix-disk" in text and "sun 02:00-04:00" in text
    code, text, _ = page(seeded, "/check/web")
    incidents_table = text.split("<h2>Incidents</h2>", 1)[1].split("<h2>", 1)[0]
    assert "2026-03-04 10:00:00" in incidents_table and "2026-03-04 10:20:00" in incidents_table
    assert "20m" in incidents_table and ">CRITICAL<" in incidents_table
    assert "critical 2s, above the plotted range" in text   # 2 s against 50 ms responses: named, not drawn


def test_statuspage_check_page_ranges_beyond_raw_retention_use_daily_rollups(write_config):
    loaded = load_config(write_config(CONFIG + "store: {retention: {raw: 14d}}\n"))
    store = Store(loaded.db_path)
    store.record_runs([run("disk", "disk", NOW - d * 86400 - h * 3600, samples=[sample("used_ratio", 0.4 + d / 100,
                                                                                      mount="/")])
                       for d in range(40, 0, -1) for h in (0, 6, 12)])
    store.rollup_and_prune(NOW, loaded.tz, 400 * 86400, 800 * 86400)
    store.close()
    _, text, _ = page(loaded, "/check/disk", "range=30d")
    assert "daily rollups" in text and text.count('<svg class="chart"') == 1
    _, text, _ = page(loaded, "/check/disk", "range=7d")
    assert "from the stored runs" in text


def test_statuspage_a_range_with_more_runs_than_a_chart_reads_comes_from_rollups(seeded, monkeypatch):
    from agent.http.statuspage import queries
    monkeypatch.setattr(queries, "RAW_SCAN_ROWS", 100)   # a day of a 1-minute check is 1440 runs
    _, text, _ = page(seeded, "/check/disk")
    assert "daily rollups" in text and text.count('<svg class="chart"') == 2
    assert "from stored runs since 2026-03-04 03:40" in text    # incidents: the newest 100 runs, every 5 minutes


def test_statuspage_actions_log_checklists_and_maintenance_pages(seeded):
    for path, expected in (("/actions", "fix-disk"), ("/log", "replaced the disk"),
                           ("/checklists", "Security review"), ("/maintenance", "sun 02:00-04:00")):
        code, text, _ = page(seeded, path)
        assert code == 200 and expected in text, path
        assert f'href="{path}" aria-current="page"' in text
    _, text, _ = page(seeded, "/checklists")
    assert "2026-W10" in text and "✓ done" in text and "open" in text
    _, text, _ = page(seeded, "/maintenance")
    assert "Active maintenance" in text and "None: every check alerts" in text and "dr-drill" in text


def test_statuspage_escapes_plugin_output_log_entries_and_checklist_notes(seeded):
    for path in ("/", "/check/plugin", "/log", "/checklists"):
        _, text, _ = page(seeded, path)
        assert "<script>" not in text and "<img" not in text and "<b>bold" not in text and "<i>ops" not in text, path
    assert html.escape('<script>alert("plugin")</script><b>bold</b>', quote=False) in page(seeded, "/")[1] \
        .replace("&#34;", '"')
    assert "&lt;script&gt;alert(&#39;note&#39;)&lt;/script&gt;" in page(seeded, "/checklists")[1]
    assert "&lt;img src=x onerror=alert(1)&gt;" in page(seeded, "/log")[1]


def test_statuspage_unknown_check_is_404_with_a_link_back(seeded):
    code, text, headers = page(seeded, "/check/%3Cscript%3Enope")
    assert code == 404
    assert "No check named “&lt;script&gt;nope” is configured." in text
    assert '<a href="/">← back to the overview of all checks</a>' in text
    assert headers["Content-Security-Policy"] == CSP
    assert page(seeded, "/nothing-here")[0] == 404


def test_statuspage_every_page_carries_the_csp_and_nosniff(seeded):
    for path in ("/", "/check/disk", "/check/missing", "/actions", "/log", "/checklists", "/maintenance", "/x"):
        _, _, headers = page(seeded, path)
        assert headers["Content-Security-Policy"] == CSP, path
        assert headers["X-Content-Type-Options"] == "nosniff", path
    assert SECURITY_HEADERS["Cache-Control"] == "no-store"


def test_statuspage_empty_store_says_no_data_yet_on_every_page(loaded):
    Store(loaded.db_path).close()
    code, text, _ = page(loaded, "/")
    assert code == 200 and "No data yet" in text and len(rows(text)) == 6
    for path in ("/check/disk", "/check/dr-drill", "/actions", "/log", "/checklists", "/maintenance"):
        code, text, _ = page(loaded, path)
        assert code == 200, path
    assert "No data yet" in page(loaded, "/check/disk")[1]
    assert "the maintenance log is empty" in page(loaded, "/log")[1]


def test_statuspage_store_missing_is_a_503_page(loaded):
    code, text, headers = page(loaded, "/")
    assert code == 503 and "no store at" in text and headers["X-Content-Type-Options"] == "nosniff"


def test_statuspage_auto_refresh_is_on_by_default_and_a_query_turns_it_off(seeded):
    _, text, _ = page(seeded, "/")
    assert '<meta http-equiv="refresh" content="30">' in text and 'href="/?refresh=0">stop auto-refresh' in text
    _, text, _ = page(seeded, "/check/disk", "refresh=0&range=7d")
    assert 'http-equiv="refresh"' not in text
    assert 'href="/check/disk?range=30d&amp;refresh=0"' in text           # links keep it off
    assert 'href="/check/disk?range=7d">turn it on' in text
    assert '<meta http-equiv="refresh" content="3600">' in page(seeded, "/", "refresh=999999")[1]
    assert page(seeded, "/", "&".join(f"f{i}=1" for i in range(100)))[0] == 200


def test_statuspage_a_bug_is_a_500_page_and_one_log_line(seeded, monkeypatch):
    import agent.http.statuspage.pages as pages
    from agent.plugin import logs

    events = []
    monkeypatch.setattr(pages, "overview", lambda *a: 1 / 0)
    monkeypatch.setattr(logs, "event", lambda name, level="info", **fields: events.append((name, level, fields)))
    code, text, headers = page(seeded, "/")
    assert code == 500 and "ZeroDivisionError" not in text and headers["X-Content-Type-Options"] == "nosniff"
    assert events == [("statuspage.failed", "error", {"path": "/", "error": "ZeroDivisionError: division by zero"})]


# -- the overview's day buckets -------------------------------------------------------------------------------


def test_recent_reads_only_runs_newer_than_the_last_request(seeded):
    from agent.plugin.storefile import open_readonly
    conn = open_readonly(seeded.db_path)
    check_id = conn.execute("SELECT id FROM checks WHERE name = 'disk'").fetchone()[0]
    recent, main = Recent(), MainValue(("used_ratio",), "above")
    day = recent.day(conn, "s", check_id, main, NOW)
    # 48 half hours, the last one the current (12:00-12:30, empty so far): 23.5 h of runs every 5 minutes
    assert len(day.counts) == 48 and sum(map(sum, day.counts)) == 23.5 * 60 / 5
    assert day.values[-1] is None and day.values[-2] == pytest.approx(0.85, abs=0.01)
    statements: list[str] = []
    conn.set_trace_callback(statements.append)
    store = Store(seeded.db_path)
    store.record_runs([run("disk", "disk", NOW + 30, Status.CRITICAL, [sample("used_ratio", 0.95, mount="/")])])
    store.close()
    day = recent.day(conn, "s", check_id, main, NOW + 60)
    assert day.counts[-1][2] == 1 and day.values[-1] == 0.95
    assert any(f"r.started > {NOW - 5 * MIN}" in s for s in statements), statements   # only after the newest seen


def test_recent_drops_buckets_older_than_a_day(seeded):
    from agent.plugin.storefile import open_readonly
    conn = open_readonly(seeded.db_path)
    check_id = conn.execute("SELECT id FROM checks WHERE name = 'disk'").fetchone()[0]
    recent = Recent()
    recent.day(conn, "s", check_id, None, NOW)
    later = recent.day(conn, "s", check_id, None, NOW + 12 * 3600)
    assert sum(map(sum, later.counts[:24])) > 0 and sum(map(sum, later.counts[24:])) == 0
    assert len(recent._checks[("s", check_id)].buckets) <= 48


# -- pure parts ------------------------------------------------------------------------------------------------


def test_incidents_span_from_first_bad_run_to_first_good_one_worst_status_kept():
    transitions = [(100, 1), (160, 2), (220, 0), (500, 3), (560, 3)]
    spans = incidents(transitions, now=1000)
    assert spans[0] == {"start": 500, "end": None, "worst": "unknown", "runs": 2, "duration": 500}
    assert spans[1] == {"start": 100, "end": 220, "worst": "critical", "runs": 2, "duration": 120}


def test_bar_merges_neighbouring_buckets_of_one_colour_into_one_path_per_colour():
    counts = [(5, 0, 0, 0)] * 3 + [(4, 1, 0, 0), (0, 0, 0, 0), (5, 0, 0, 0), (3, 0, 2, 0)]
    shapes = dict(charts.bar(counts, 70, 10))
    assert shapes == {"ok": "M0.0 0h30.0v10h-30.0zM50.0 0h10.0v10h-10.0z", "warning": "M30.0 0h10.0v10h-10.0z",
                      "none": "M40.0 0h10.0v10h-10.0z", "critical": "M60.0 0h10.0v10h-10.0z"}


def test_sparkline_breaks_at_gaps_and_marks_a_lone_value():
    assert charts.sparkline([1, 2, None, 3, None, None], 50, 12, pad=1) == "M0.0 11.0L10.0 6.0M28.5 1.0L31.5 1.0"
    assert charts.sparkline([None, None], 50, 12) == ""


def test_time_ticks_fall_on_local_hours_days_and_months():
    from zoneinfo import ZoneInfo
    tz = ZoneInfo("Europe/Berlin")
    start = datetime(2026, 3, 28, 22, 40, tzinfo=tz).timestamp()
    ticks = charts.time_ticks(start, start + 86400, tz, "hour:3")
    assert [t for _, t in ticks][:4] == ["00:00", "03:00", "06:00", "09:00"]   # across the DST change
    days = charts.time_ticks(start, start + 3 * 86400, tz, "day:1")
    assert [t for _, t in days] == ["Sun 29", "Mon 30", "Tue 31"]
    months = charts.time_ticks(start, start + 300 * 86400, tz, "month")
    assert [t for _, t in months][:3] == ["Apr", "May", "Jun"] and [t for _, t in months][-2:] == ["Dec", "2027"]


def test_chart_strip_places_buckets_by_time_and_leaves_gaps_empty():
    buckets = [charts.StatusBucket(0, 10, (1, 0, 0, 0)), charts.StatusBucket(10, 20, (2, 0, 0, 0)),
               charts.StatusBucket(50, 60, (1, 0, 0, 0)), charts.StatusBucket(60, 70, (0, 0, 1, 0))]
    segments = charts.strip(buckets, lambda t: t * 2)
    assert [(s.x, s.width, s.worst, s.breakdown) for s in segments] == [
        (0, 40, "ok", "3 runs: 3 ok"), (100, 20, "ok", "1 run: 1 ok"), (120, 20, "critical", "1 run: 1 critical")]


def test_line_chart_starts_at_zero_and_keeps_thresholds_near_the_data_in_view():
    points = [charts.Point(i * 10, i * 10 + 10, 0.5, 0.6, 0.7) for i in range(10)]
    chart = charts.line_chart(points, 0, 100, "ratio", [("warning", 0.8), ("critical", 9.0)], [], timezone.utc,
                              "hour:1")
    assert [t.text for t in chart.y_ticks] == ["0%", "25%", "50%", "75%"]
    assert [(line.label, line.text) for line in chart.thresholds] == [("warning", "80%")]
    assert chart.off_scale == (("critical", "900%"),)
    assert chart.line.startswith("M") and "M" not in chart.line[1:]       # one unbroken line


# -- config ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("http, served", [
    ("{}", True),
    ("{listen: '[::1]:9469'}", True),
    ("{listen: 'localhost:9469'}", True),
    ("{listen: '0.0.0.0:9469'}", False),
    ("{listen: '0.0.0.0:9469', ui: true}", True),
    ("{listen: '127.0.0.1:9469', ui: false}", False),
    ("{listen: '0.0.0.0:9469', basic_auth: {username: u, password: p}}", True),
])
def test_http_ui_default_serves_the_page_only_on_loopback_or_behind_auth(write_config, http, served):
    assert load_config(write_config(f"http: {http}\n")).config.http.status_page is served


def test_statuspage_shows_a_check_in_maintenance_on_the_overview_check_page_and_maintenance_page(seeded):
    store = Store(seeded.db_path)
    with store.conn:
        maintenance.insert_window(store.conn, maintenance.Window(
            0, NOW - 600, NOW + 3600, ("web",), "<b>PG 15.8 upgrade</b>", "ana", "cli"))
    store.close()
    state = AgentState("9.9.9", 2)
    state.maintenance = {"web": NOW + 3600}
    until = datetime.fromtimestamp(NOW + 3600, seeded.tz).strftime("until %Y-%m-%d %H:%M")
    _, overview, _ = page(seeded, "/", state=state)
    web_row = next(r for r in overview.split("<tr") if "/check/web" in r)
    disk_row = next(r for r in overview.split("<tr") if "/check/disk" in r)
    assert until in web_row and until not in disk_row
    assert until in page(seeded, "/check/web", state=state)[1]
    _, text, _ = page(seeded, "/maintenance", state=state)
    assert "None: every check alerts" not in text
    assert "&lt;b&gt;PG 15.8 upgrade&lt;/b&gt;" in text and "<b>PG" not in text
