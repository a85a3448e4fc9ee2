"""What each page shows, gathered from the config, the daemon's live state and the store.

The config names the checks (one that never ran still gets a row); the daemon's state has the newest
result of each check that ran since the start, when it is next due and whether a breach is pending; the
store has everything older. Each function returns the template's context; times are epoch seconds and
the templates format them in the agent's zone.
"""

from __future__ import annotations

import os
import sqlite3
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from agent.plugin.calendar import parse_window
from agent import maintenance as windows_store
from agent.reports.checklist import checklist_status, period_bounds, period_label
from agent.config.checklists import CHECKLIST_PERIODS
from agent.config.triggers import Calendar
from agent.plugin.result import Status
from agent.scheduler import describe
from agent.http.statuspage import charts, queries
from agent.http.statuspage.charts import Point, StatusBucket
from agent.http.statuspage.queries import MainValue
from agent.http.statuspage.recent import Recent
from agent.plugin.units import format_value
from checks import CHECK_TYPES
from checks.base import Check

if TYPE_CHECKING:
    from agent.config.load import LoadedConfig
    from agent.http.metrics import AgentState

STATUS_LABELS = tuple(s.label for s in Status)     # by stored status number
OVERVIEW_ORDER = {"critical": 0, "unknown": 1, "warning": 2, "pending": 3, "never": 4, "ok": 5, "disabled": 6}
SPARK_W, SPARK_H, BAR_W, BAR_H = 120, 22, 144, 12
MAX_CHARTS = 24


@dataclass(frozen=True)
class Range:
    key: str
    title: str
    seconds: float
    bucket: float          # raw bucket width; beyond raw retention the chart uses daily rollups
    step: str              # x-axis labels (charts.time_ticks)


RANGES = {r.key: r for r in (
    Range("24h", "last 24 hours", 86400.0, 900.0, "hour:3"),
    Range("7d", "last 7 days", 7 * 86400.0, 7200.0, "day:1"),
    Range("30d", "last 30 days", 30 * 86400.0, 21600.0, "day:5"),
    Range("1y", "last year", 365 * 86400.0, 86400.0, "month"),
)}
TAIL_BUCKET = 21600.0      # raw runs after the last rolled-up day, on a rollup chart


# -- the header every page shows ----------------------------------------------------------------------------


def agent_header(loaded: LoadedConfig, state: AgentState, now: float) -> dict[str, Any]:
    """The agent's own health: version, uptime, store size, write errors, config reload."""
    db = loaded.db_path
    size = 0
    for path in (db, db.with_name(db.name + "-wal")):
        try:
            size += os.stat(path).st_size
        except OSError:
            pass
    return {"host": loaded.config.agent.hostname, "version": state.version, "started": state.start_time,
            "uptime": now - state.start_time, "store": str(db), "store_bytes": size,
            "write_errors": state.store_write_errors, "pending_writes": state.store_pending,
            "config_ok": state.config_ok, "config_loaded_at": state.config_loaded_at, "config": str(loaded.path),
            "zone": str(loaded.tz)}


# -- overview -----------------------------------------------------------------------------------------------


def main_value(cls: type[Check]) -> tuple[MainValue | None, str]:
    """What a check type's sparkline follows: its threshold metrics (the worst of them), else its first
    plain numeric metric; with the unit to print it in."""
    if cls.THRESHOLD is not None:
        return MainValue(cls.THRESHOLD.metrics, cls.THRESHOLD.bad_when), cls.THRESHOLD.unit
    spec = next((m for m in cls.METRICS if not m.labels and m.unit not in ("info", "boolean")), None)
    return (MainValue((spec.name,), "above"), spec.unit) if spec else (None, "count")


def overview(conn: sqlite3.Connection, loaded: LoadedConfig, state: AgentState, recent: Recent,
             now: float) -> dict[str, Any]:
    """Every configured check, worst first: status, summary, last run, next due, pending breach, maintenance,
    a 24 h sparkline of its main value and an availability bar."""
    ids = queries.check_ids(conn)
    jobs = {job.name: job for job in state.jobs}
    store = str(loaded.db_path)
    rows = [_row(conn, options, jobs.get(options.name), ids.get(options.name), store, recent, now,
                 _maintenance_text(state, options.name, loaded))
            for options in loaded.checks]
    if ids:
        recent.forget({(store, ids[o.name]) for o in loaded.checks if o.name in ids})
    rows.sort(key=lambda r: (r["order"], r["name"]))
    counts = {label: sum(r["status"] == label for r in rows) for label in (*STATUS_LABELS, "never", "disabled")}
    return {"rows": rows, "counts": counts, "empty": not any(r["last_run"] for r in rows),
            "spark_w": SPARK_W, "spark_h": SPARK_H, "bar_w": BAR_W, "bar_h": BAR_H}


def _maintenance_text(state: AgentState, name: str, loaded: LoadedConfig) -> str | None:
    """"until 2026-12-07 04:00" while the check is in maintenance, else None (the page says "none")."""
    until = state.maintenance.get(name)
    if until is None:
        return None
    return datetime.fromtimestamp(until, loaded.tz).strftime("until %Y-%m-%d %H:%M")


def _row(conn: sqlite3.Connection, options, job, check_id: int | None, store: str, recent: Recent,
         now: float, maintenance: str | None = None) -> dict[str, Any]:
    """One check's overview row: its newest result from the daemon (from the store when it has not run since
    the agent started), its schedule, and its day."""
    latest = job.latest if job is not None else None
    if latest is not None:
        status, started, summary, pending = latest.status.label, latest.started, latest.summary, latest.pending
    else:
        stored = queries.latest_run(conn, check_id) if check_id is not None else None
        status = STATUS_LABELS[stored["status"]] if stored else None
        started, summary = (stored["started"], stored["summary"]) if stored else (None, None)
        pending = Status(stored["pending"]) if stored else Status.OK
    main, unit = main_value(CHECK_TYPES[options.type])
    day = (recent.day(conn, store, check_id, main, now, lambda d: _day_view(d, main, unit))
           if check_id is not None else _day_view(None, main, unit))
    shown = "disabled" if not options.enabled else status or "never"
    return {"name": options.name, "type": options.type, "description": options.description,
            "severity": options.severity, "status": shown,
            "order": OVERVIEW_ORDER["pending" if shown == "ok" and pending is not Status.OK else shown],
            "summary": summary, "last_run": started, "next_due": job.next_due if job is not None else None,
            "running": bool(job is not None and job.in_flight),
            "pending": pending.label if pending is not Status.OK else None,
            "maintenance": maintenance,
            **day}


def _day_view(day, main: MainValue | None, unit: str) -> dict[str, Any]:
    """The sparkline and availability bar of a check's day (None: it never ran)."""
    if day is None:
        return {"spark": "", "spark_text": None, "bar": [], "availability": None, "runs_24h": 0, "bar_text": ""}
    known = [v for v in day.values if v is not None]
    text = None
    if main is not None and known:
        latest = next(v for v in reversed(day.values) if v is not None)
        text = (f"{' / '.join(main.names)}, last 24 h: lowest {format_value(min(known), unit)}, highest "
                f"{format_value(max(known), unit)}, latest {format_value(latest, unit)}")
    totals = charts.totals(day.counts)
    runs = sum(totals)
    return {"spark": charts.sparkline(day.values, SPARK_W, SPARK_H), "spark_text": text,
            "bar": charts.bar(day.counts, BAR_W, BAR_H), "availability": totals[0] / runs if runs else None,
            "runs_24h": runs, "bar_text": ", ".join(f"{n} {label}" for n, label in zip(totals, STATUS_LABELS) if n)}


# -- one check ----------------------------------------------------------------------------------------------


def check(conn: sqlite3.Connection, loaded: LoadedConfig, state: AgentState, name: str, range_key: str,
          now: float) -> dict[str, Any] | None:
    """One check's page: charts of every metric over the range, threshold lines, incidents, the latest runs,
    bound actions and their audit. None when no configured check has that name."""
    options = next((c for c in loaded.checks if c.name == name), None)
    if options is None:
        return None
    cls = CHECK_TYPES[options.type]
    job = next((j for j in state.jobs if j.name == name), None)
    span = RANGES.get(range_key) or RANGES["24h"]
    start = now - span.seconds
    check_id = queries.check_ids(conn).get(name)
    tz = loaded.tz
    series: dict[str, list[Point]] = {}
    statuses: list[StatusBucket] = []
    source = "raw"
    if check_id is not None:
        if _reads_raw(loaded, name, span):
            series, statuses = _raw(conn, check_id, start, now, span.bucket)
        else:
            series, statuses = _rolled_up(conn, check_id, start, now, tz)
            source = "rollups"
    chart_list = _charts(cls, options, series, statuses, start, now, tz, span)
    transitions, truncated = queries.transitions(conn, check_id, start, now) if check_id is not None else ([], False)
    read_from = [t for t in (queries.oldest_raw(conn, check_id), queries.scan_floor(conn, check_id, start, now))
                 if t is not None] if check_id is not None else []
    actions = loaded.actions
    runs = [dict(r, status_label=STATUS_LABELS[r["status"]],
                 pending_label=STATUS_LABELS[r["pending"]] if r["pending"] else None)
            for r in (queries.recent_runs(conn, check_id) if check_id is not None else [])]
    if job is not None and job.latest is not None:
        latest = {"summary": job.latest.summary, "started": job.latest.started, "status": job.latest.status.label,
                  "pending": job.latest.pending.label if job.latest.pending is not Status.OK else None}
    elif runs:
        latest = {"summary": runs[0]["summary"], "started": runs[0]["started"], "status": runs[0]["status_label"],
                  "pending": runs[0]["pending_label"]}
    else:
        latest = None
    return {
        "check": options, "trigger": describe(loaded.triggers[name]),
        "thresholds": _threshold_texts(cls, options),
        "job": {"next_due": job.next_due, "running": job.in_flight} if job is not None else None,
        "latest": latest,
        "span": span, "ranges": list(RANGES.values()), "source": source, "charts": chart_list,
        "uncharted": max(0, len(_chart_keys(cls, series)) - MAX_CHARTS),
        "incidents": incidents(transitions, now), "incidents_truncated": truncated,
        "incidents_from": max(read_from) if read_from and max(read_from) > start else None,
        "runs": runs,
        "bindings": [{"binding": b, "action": actions.get(b.action)} for b in options.actions],
        "maintenance": _maintenance_text(state, name, loaded),
        "audit": queries.audit(conn, check=name),
    }


def _reads_raw(loaded: LoadedConfig, name: str, span: Range) -> bool:
    """Raw runs where retention keeps them for the whole range and the range's runs fit one chart's read
    (a check every 15 s has 40 320 runs a week); daily rollups otherwise."""
    if span.seconds > loaded.config.store.retention.raw:
        return False
    every = getattr(loaded.triggers[name], "seconds", None)
    return every is None or span.seconds / every <= queries.RAW_SCAN_ROWS


def _raw(conn, check_id: int, start: float, end: float, bucket: float):
    series = queries.raw_series(conn, check_id, start, end, bucket)
    counts = queries.raw_statuses(conn, check_id, start, end, bucket)
    statuses = [StatusBucket(b * bucket, (b + 1) * bucket, counts.get(b, (0, 0, 0, 0)))
                for b in range(int(start // bucket), int(end // bucket) + 1)]
    return series, statuses


def _rolled_up(conn, check_id: int, start: float, end: float, tz):
    """Daily rollups, then raw runs for the days not rolled up yet (today, at least)."""
    series, statuses, rolled_end = queries.rollup_series(conn, check_id, datetime.fromtimestamp(start, tz).date(), tz)
    tail_series, tail_statuses = _raw(conn, check_id, max(start, rolled_end or start), end, TAIL_BUCKET)
    for key, points in tail_series.items():
        series.setdefault(key, []).extend(points)
    first_tail = max(start, rolled_end or start)
    statuses += [b for b in tail_statuses if b.end > first_tail]
    return series, statuses


def _chart_keys(cls: type[Check], series: dict[str, list[Point]]) -> list[str]:
    """Threshold metrics first, then in the order the type declares its metrics, then by labels."""
    order: dict[str, int] = {}
    for name in (*(cls.THRESHOLD.metrics if cls.THRESHOLD else ()), *(m.name for m in cls.METRICS)):
        order.setdefault(name, len(order))
    keys = [k for k in series if _unit(cls, *split_key(k)) != "info"]
    return sorted(keys, key=lambda k: (order.get(split_key(k)[0], len(order)), k))


def _charts(cls, options, series, statuses, start, end, tz, span: Range) -> list[dict[str, Any]]:
    out = []
    for key in _chart_keys(cls, series)[:MAX_CHARTS]:
        metric, labels = split_key(key)
        unit = _unit(cls, metric, labels)
        points = series[key]
        limits = _limits(cls, options, metric)
        spec = cls.metric_spec(metric)
        means = [p.mean for p in points]
        out.append({
            "key": key, "metric": metric, "labels": labels, "unit": unit, "help": spec.help if spec else "",
            "chart": charts.line_chart(points, start, end, unit, limits, statuses, tz, span.step),
            "points": points, "limits": [(label, format_value(v, unit)) for label, v in limits],
            "summary": (f"lowest {format_value(min(p.low for p in points), unit)}, mean "
                        f"{format_value(sum(means) / len(means), unit)}, highest "
                        f"{format_value(max(p.high for p in points), unit)}, latest {format_value(means[-1], unit)}")
            if points else "no data"})
    return out


def split_key(key: str) -> tuple[str, str]:
    """`used_ratio{mount=/}` → (`used_ratio`, `mount=/`)."""
    metric, brace, rest = key.partition("{")
    return metric, rest[:-1] if brace and rest.endswith("}") else rest


def _unit(cls: type[Check], metric: str, labels: str) -> str:
    """The metric's declared unit; a plugin's perfdata carries its own in a `unit` label."""
    spec = cls.metric_spec(metric)
    unit = spec.unit if spec else "count"
    for pair in labels.split(","):
        name, _, value = pair.partition("=")
        if name == "unit" and value in ("seconds", "bytes", "ratio"):
            return value
    return unit


def _limits(cls: type[Check], options, metric: str) -> list[tuple[str, float]]:
    """(warning|critical, limit) drawn on a chart of a threshold metric."""
    if cls.THRESHOLD is None or metric not in cls.THRESHOLD.metrics:
        return []
    return [(label, float(value)) for label in ("warning", "critical")
            if isinstance(value := getattr(options, label, None), (int, float)) and not isinstance(value, bool)]


def _threshold_texts(cls: type[Check], options) -> list[str]:
    if cls.THRESHOLD is None:
        return []
    side = ">" if cls.THRESHOLD.bad_when == "above" else "<"
    return [f"{label} when {' / '.join(cls.THRESHOLD.metrics)} {side} {format_value(limit, cls.THRESHOLD.unit)}"
            for label, limit in _limits(cls, options, cls.THRESHOLD.metrics[0])]


def incidents(transitions: list[tuple[float, int]], now: float) -> list[dict[str, Any]]:
    """Given the non-OK runs of a range and the OK run after each streak, oldest first, return the
    incidents newest first: a span of consecutive non-OK runs from its first non-OK run to the first
    OK run after it (`end` None while it lasts), its worst status and its number of non-OK runs."""
    spans: list[dict[str, Any]] = []
    current = None
    for started, status in transitions:
        if status:
            if current is None:
                current = {"start": started, "end": None, "worst": Status(status), "runs": 0}
                spans.append(current)
            current["runs"] += 1
            if Status(status).severity > current["worst"].severity:
                current["worst"] = Status(status)
        elif current is not None:
            current["end"] = started
            current = None
    for span in spans:
        span["duration"] = (span["end"] if span["end"] is not None else now) - span["start"]
        span["worst"] = span["worst"].label
    return spans[::-1]


# -- actions, log, checklists, maintenance ------------------------------------------------------------------


def actions(conn: sqlite3.Connection, loaded: LoadedConfig) -> dict[str, Any]:
    return {"audit": queries.audit(conn), "limit": queries.PAGE_ROWS,
            "configured": [{"action": a, "checks": [c.name for c in loaded.checks
                                                    if any(b.action == a.name for b in c.actions)]}
                           for a in loaded.config.actions]}


def log(conn: sqlite3.Connection, category: str | None) -> dict[str, Any]:
    return {"entries": queries.log_entries(conn, category), "category": category, "limit": queries.PAGE_ROWS}


def checklists(conn: sqlite3.Connection, loaded: LoadedConfig, now: float) -> dict[str, Any]:
    """The current period of every configured checklist, its items and their ticks."""
    tz, section = loaded.tz, loaded.config.checklists
    lists = []
    for name, period in CHECKLIST_PERIODS.items():
        if not section.items(name):
            continue
        start, end = period_bounds(period, now, tz)
        lists.append({"name": name, "label": period_label(period, start, tz), "start": start, "end": end,
                      "items": checklist_status(conn, section, period, start, end, tz=tz)})
    return {"lists": lists}


def maintenance(conn: sqlite3.Connection, loaded: LoadedConfig, state: AgentState, now: float) -> dict[str, Any]:
    """Maintenance in force (from the store's windows), the action windows and what is scheduled."""
    tz = loaded.tz
    moment = datetime.fromtimestamp(now, tz)
    jobs = {job.name: job for job in state.jobs}
    windows = [{"check": c.name, "action": b.action, "window": b.window,
                "open": parse_window(b.window).contains(moment, tz)}
               for c in loaded.checks for b in c.actions if b.window]
    scheduled = [{"check": c.name, "schedule": describe(loaded.triggers[c.name]), "enabled": c.enabled,
                  "next_due": jobs[c.name].next_due if c.name in jobs else None}
                 for c in loaded.checks if isinstance(loaded.triggers[c.name], Calendar)]
    scheduled.sort(key=lambda s: (s["next_due"] is None, s["next_due"] or 0, s["check"]))
    cfg = loaded.config
    tasks = [{"task": "store rollup and prune", "schedule": cfg.store.maintenance_at}]
    tasks += [{"task": f"report {r.name}", "schedule": r.schedule_name} for r in cfg.reports]
    active = [{"check": w.scope(), "since": w.starts, "until": w.until, "reason": w.reason}
              for w in windows_store.read_windows(conn, open_only=True) if w.active(now)]
    return {"active": active, "windows": windows, "scheduled": scheduled, "tasks": tasks}
