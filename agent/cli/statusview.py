"""What `maint-agent status` shows: a pure function of (configured checks, latest runs, heartbeat, now).

The header says whether the daemon is running (agent/store/liveness.py), how old the newest result is, the
counts by status and the modes the agent is in; the rows are every configured check, worst first:
failures, then stale results (older than three intervals, like the MaintCheckNotRunning alert; a
calendar check whose slot passed 15 minutes ago without a run, like MaintCheckScheduleMissed), pending
breaches (`ok → critical in 3m10s`), OK, never run (`next 2026-12-07 03:00`), disabled.

Standard library only: `status` must start fast and never need the config's secrets.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from agent.cli.common import ConfiguredCheck
from agent.store.liveness import Liveness
from agent.timefmt import ago

STATUS_NAMES = ("ok", "warning", "critical", "unknown")
STALE_INTERVALS = 3                 # as the MaintCheckNotRunning alert rule
CALENDAR_MISSED_SECONDS = 900.0     # as the MaintCheckScheduleMissed alert rule
_RANK = {"critical": 0, "unknown": 1, "warning": 2, "ok": 4, "never_run": 6, "disabled": 7, "retired": 8}
NOT_OK = ("critical", "unknown", "warning")


@dataclass
class StatusView:
    agent: dict[str, Any]
    counts: dict[str, int]
    rows: list[dict[str, Any]]
    modes: list[str] = field(default_factory=list)

    @property
    def problem(self) -> bool:
        """Exit 1: the daemon is not running, or a check is not OK or stale."""
        return not self.agent["running"] or any(r["status"] in NOT_OK or r["stale"] for r in self.rows
                                                 if r["status"] != "retired")


def build(configured: list[ConfiguredCheck], latest: dict[str, dict], record: dict | None, live: Liveness,
          newest: float | None, now: float, when: Callable[[float | None], Any], retired: bool = False,
          maintenance: dict[str, float] | None = None) -> StatusView:
    """Given the configured checks, the newest run of each check by name (status, pending, started,
    duration, summary, type), the heartbeat record and what it means, the newest result's time, a
    time formatter and the checks in maintenance (check → when it ends), return the header facts and
    one row per check, worst first."""
    maintenance = maintenance or {}
    beats = (record or {}).get("checks") or {}
    rows = [_row(check, latest.get(check.name), beats.get(check.name), live, now, when) for check in configured]
    if retired:
        names = {c.name for c in configured}
        rows += [_retired(name, run, now, when) for name, run in sorted(latest.items()) if name not in names]
    rows.sort(key=lambda r: (_rank(r), r["check"]))
    counts: dict[str, int] = {}
    for row in rows:
        counts[row["status"]] = counts.get(row["status"], 0) + 1
    counts["stale"] = sum(r["stale"] for r in rows)
    counts["pending"] = sum(r["pending"] is not None for r in rows)
    modes = ["dry_run"] if record and live.running and record.get("dry_run") else []
    for row in rows:
        if row["check"] in maintenance:
            row["marks"].append("maintenance")
            row["maintenance_until"] = when(maintenance[row["check"]])
    if any(row["check"] in maintenance for row in rows):
        modes.append("maintenance")
    if any(row["check"] in maintenance for row in rows):
        counts["maintenance"] = sum(row["check"] in maintenance for row in rows)
    agent = {"running": live.running, "state": live.state, "detail": live.detail,
             "pid": (record or {}).get("pid"), "version": (record or {}).get("version"),
             "started": when((record or {}).get("started")), "heartbeat": when((record or {}).get("beat")),
             "newest_result": when(newest), "newest_result_age_seconds": round(now - newest, 3) if newest else None}
    return StatusView(agent, counts, rows, modes)


def _rank(row: dict) -> float:
    """Failures first, then stale and pending OK results, then OK, never run, disabled."""
    if row["status"] == "ok" and (row["stale"] or row["pending"]):
        return 3 if row["stale"] or row["pending"] == "critical" else 3.5
    return _RANK[row["status"]]


def _row(check: ConfiguredCheck, run: dict | None, beat: dict | None, live: Liveness, now: float,
         when: Callable) -> dict[str, Any]:
    row: dict[str, Any] = {"check": check.name, "type": check.type, "status": None, "stale": False,
                           "stale_reason": None, "pending": None, "pending_in_seconds": None, "last_run": None, "age_seconds": None,
                           "next_due": None, "duration_seconds": None, "summary": None, "marks": [],
                           "maintenance_until": None}
    next_due = _next_due(beat, check, now) if live.running else None
    if not check.enabled:
        row.update(status="disabled", summary="enabled: false in the config")
        row["marks"].append("disabled")
        return row
    row["next_due"] = when(next_due)
    if run is None:
        row["status"] = "never_run"
        if next_due is not None:
            row["summary"] = f"next {when(next_due)}"
        elif live.running:
            row["summary"] = "not loaded by the running agent (added since it started? reload it)"
        else:
            row["summary"] = "the agent is not running"
        return row
    started = run["started"]
    row.update(status=STATUS_NAMES[run["status"]], last_run=when(started), age_seconds=round(now - started, 3),
               duration_seconds=round(run["duration"], 4), summary=run["summary"])
    stale = _stale(check, beat, started, now)
    if stale:
        row.update(stale=True, stale_reason=stale)
        row["marks"].append("stale")
    if run["pending"]:
        row["pending"] = STATUS_NAMES[run["pending"]]
        turns = (beat or {}).get("pending_at") if live.running else None
        if turns is not None:
            row["pending_in_seconds"] = round(max(0.0, turns - now), 3)
    return row


def _next_due(beat: dict | None, check: ConfiguredCheck, now: float) -> float | None:
    """The next run as of the last heartbeat, an interval check's rolled forward past `now` (the heartbeat
    is up to HEARTBEAT_SECONDS old)."""
    due = (beat or {}).get("next")
    every = (beat or {}).get("every") or check.interval
    if due is not None and every and due < now:
        due += (int((now - due) // every) + 1) * every
    return due


def _stale(check: ConfiguredCheck, beat: dict | None, started: float, now: float) -> str | None:
    """Why the newest result is too old to trust, or None."""
    interval = (beat or {}).get("every", check.interval) if beat else check.interval
    if interval:
        if now - started > STALE_INTERVALS * interval:
            return f"ran {ago(now - started)} ago, every {ago(interval)}"
        return None
    due = (beat or {}).get("next")
    if due is not None and due < started:
        return None
    if due is not None and now - due > CALENDAR_MISSED_SECONDS:
        return f"due {ago(now - due)} ago and not run"
    return None


def _retired(name: str, run: dict, now: float, when: Callable) -> dict[str, Any]:
    return {"check": name, "type": run["type"], "status": "retired", "stale": False, "stale_reason": None,
            "pending": None,
            "pending_in_seconds": None, "last_run": when(run["started"]), "age_seconds": round(now - run["started"], 3),
            "next_due": None, "duration_seconds": round(run["duration"], 4),
            "summary": f"no longer in the config; last {STATUS_NAMES[run['status']]}: {run['summary']}",
            "marks": ["retired"]}


def status_cell(row: dict) -> str:
    """The STATUS column: `critical`, `ok → critical in 3m10s`, `ok, stale`, `never run`, `disabled`."""
    text = row["status"].replace("_", " ")
    if row["pending"]:
        eta = row["pending_in_seconds"]
        text += f" → {row['pending']}" + (f" in {ago(eta)}" if eta else " (pending)" if eta is None else " now")
    if row["stale"]:
        text += ", stale"
    if row.get("maintenance_until"):
        text += ", maintenance"
    return text


def summary_cell(row: dict) -> str | None:
    """The SUMMARY column: why a result is stale, then what the check said."""
    summary = row["summary"]
    if row["stale_reason"]:
        summary = f"STALE ({row['stale_reason']}) — {summary}"
    if row.get("maintenance_until"):
        summary = f"MAINTENANCE until {row['maintenance_until']} — {summary}"
    return summary


def header_line(view: StatusView, host: str | None, zone: str, now: float) -> str:
    """One line: agent running or not (and why), newest result's age, counts by status, modes, zone."""
    agent = view.agent
    state = "running" if agent["running"] else "NOT RUNNING"
    parts = [f"agent {state} ({agent['detail']})"]
    age = agent["newest_result_age_seconds"]
    parts.append(f"newest result {ago(age)} ago" if age is not None else "no results yet")
    order = ("critical", "unknown", "warning", "ok", "never_run", "disabled", "retired")
    counts = ", ".join(f"{view.counts[s]} {s.replace('_', ' ')}" for s in order if view.counts.get(s))
    extra = [f"{view.counts[s]} {s}" for s in ("stale", "pending") if view.counts.get(s)]
    total = sum(view.counts.get(s, 0) for s in order if s != "retired")
    parts.append(f"{total} checks: {counts or 'none configured'}" + (f" ({', '.join(extra)})" if extra else ""))
    parts += [mode.replace("_", " ").upper() for mode in view.modes]
    parts.append(f"times in {zone}")
    return (f"{host}: " if host else "") + " · ".join(parts)
