"""The seed's daily/weekly/monthly/quarterly maintenance checklists and their state for a period.

An item is either automated — bound to checks, done once each of them ran in the
period, with the worst result they had meanwhile — or manual, ticked by a person
(`maint-agent checklist done weekly.security-review --note …`), which writes a
`maintenance_log` row (category `checklist`, check_name `weekly.security-review`).

`period_bounds` and `checklist_status` are shared by the CLI and the report writer:
pure over (period, instant, zone) and over the store's rows respectively.
"""

from __future__ import annotations

import sqlite3
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from agent.config.checklists import CHECKLIST_PERIODS, ChecklistItem, ChecklistsSection
from agent.plugin.result import Status, worst

PERIOD_CHECKLISTS = {period: name for name, period in CHECKLIST_PERIODS.items()}
TICK_CATEGORY = "checklist"


# -- periods (pure) -----------------------------------------------------------------------------------------


def period_bounds(period: str, at: float, tz: ZoneInfo) -> tuple[float, float]:
    """Given day|week|month|quarter and an instant, return the [start, end) epoch seconds of the local
    period holding it: days from local midnight, weeks from Monday, quarters from Jan/Apr/Jul/Oct 1.
    A period spanning a DST change is an hour shorter or longer; raise ValueError for another period."""
    day = datetime.fromtimestamp(at, tz).date()
    if period == "day":
        first, following = day, day + timedelta(days=1)
    elif period == "week":
        first = day - timedelta(days=day.weekday())
        following = first + timedelta(days=7)
    elif period == "month":
        first = day.replace(day=1)
        following = _add_months(first, 1)
    elif period == "quarter":
        first = date(day.year, (day.month - 1) // 3 * 3 + 1, 1)
        following = _add_months(first, 3)
    else:
        raise ValueError(f"unknown period {period!r} (expected day, week, month or quarter)")
    return _midnight(first, tz), _midnight(following, tz)


def period_label(period: str, start: float, tz: ZoneInfo) -> str:
    """A period's short name for tables and subjects: 2026-11-03, 2026-W45, 2026-11, 2026-Q4."""
    first = datetime.fromtimestamp(start, tz).date()
    if period == "week":
        year, week, _ = first.isocalendar()
        return f"{year}-W{week:02d}"
    if period == "month":
        return f"{first:%Y-%m}"
    if period == "quarter":
        return f"{first.year}-Q{(first.month - 1) // 3 + 1}"
    return first.isoformat()


def _add_months(first: date, months: int) -> date:
    index = first.month - 1 + months
    return date(first.year + index // 12, index % 12 + 1, 1)


def _midnight(day: date, tz: ZoneInfo) -> float:
    """The first instant of a local day. Where a DST gap swallows midnight (Havana, Beirut), fold=0 maps
    00:00 through the offset before the change, which lands on the first time that exists."""
    return datetime.combine(day, time(0), tz).timestamp()


# -- state of a period (reads the store) -------------------------------------------------------------------


def checklist_status(conn: sqlite3.Connection, section: ChecklistsSection, period: str, start: float, end: float,
                     *, tz: ZoneInfo | None = None) -> list[dict]:
    """Given a store connection and a period's [start, end), return one dict per item of that period's
    checklist: id, title, kind (automated|manual), done, status (worst label, None when nothing ran or
    the item is manual), runs, last_run, ticked_by, ticked_at, note, plus checks and missing (bound
    checks that did not run). Times are epoch seconds.

    Pass the agent's zone as `tz` so runs already pruned by retention still count, from the daily
    rollups (a quarterly DR test on the quarter's first day is pruned by its end with 90 days of raw
    retention); without it only raw runs count. Raise ValueError for an unknown period.
    """
    if period not in PERIOD_CHECKLISTS:
        raise ValueError(f"unknown period {period!r} (expected day, week, month or quarter)")
    checklist = PERIOD_CHECKLISTS[period]
    items = section.items(checklist)
    names = sorted({name for item in items for name in item.checks})
    runs = _runs_by_check(conn, names, start, end, tz) if names else {}
    ticks = _ticks(conn, checklist, [item.id for item in items if not item.checks], start, end)
    return [_automated(item, runs) if item.checks else _manual(item, ticks.get(item.id)) for item in items]


def _automated(item: ChecklistItem, runs: dict[str, tuple[int, float, Status]]) -> dict:
    ran = [runs[name] for name in item.checks if name in runs]
    missing = [name for name in item.checks if name not in runs]
    return {"id": item.id, "title": item.title, "kind": "automated", "done": not missing,
            "status": worst(*(status for _, _, status in ran)).label if ran else None,
            "runs": sum(count for count, _, _ in ran), "last_run": max((last for _, last, _ in ran), default=None),
            "ticked_by": None, "ticked_at": None, "note": None, "checks": list(item.checks), "missing": missing}


def _manual(item: ChecklistItem, tick: tuple[float, str, str] | None) -> dict:
    at, author, note = tick or (None, None, None)
    return {"id": item.id, "title": item.title, "kind": "manual", "done": tick is not None, "status": None,
            "runs": None, "last_run": None, "ticked_by": author, "ticked_at": at, "note": note, "checks": [],
            "missing": []}


_SEVERITY_SQL = "CASE r.status WHEN 0 THEN 0 WHEN 1 THEN 1 WHEN 3 THEN 2 ELSE 3 END"
_BY_SEVERITY = sorted(Status, key=lambda s: s.severity)


def _runs_by_check(conn: sqlite3.Connection, names: list[str], start: float, end: float,
                   tz: ZoneInfo | None) -> dict[str, tuple[int, float, Status]]:
    """check name → (runs, last run, worst status) over [start, end): daily rollups for the days already
    rolled up before the oldest raw run left (retention pruned the rest), raw runs after them."""
    marks = ",".join("?" * len(names))
    raw_from = _rolled_until(conn, start, end, tz) if tz is not None else start
    found: dict[str, tuple[int, float, Status]] = {}
    if raw_from > start:
        first_day = datetime.fromtimestamp(start, tz).date().isoformat()
        last_day = datetime.fromtimestamp(raw_from, tz).date().isoformat()
        for name, count, day, warning, unknown, critical in conn.execute(
                f"SELECT c.name, sum(u.runs), max(u.day), sum(u.warning), sum(u.unknown), sum(u.critical) "
                f"FROM check_rollups u JOIN checks c ON c.id = u.check_id WHERE c.name IN ({marks}) "
                f"AND u.day >= ? AND u.day < ? AND u.runs > 0 GROUP BY c.name", (*names, first_day, last_day)):
            status = (Status.CRITICAL if critical else Status.UNKNOWN if unknown else
                      Status.WARNING if warning else Status.OK)
            found[name] = (count, _midnight(date.fromisoformat(day), tz), status)
    for name, count, last, severity in conn.execute(
            f"SELECT c.name, count(*), max(r.started), max({_SEVERITY_SQL}) FROM check_runs r "
            f"JOIN checks c ON c.id = r.check_id WHERE c.name IN ({marks}) AND r.started >= ? AND r.started < ? "
            f"GROUP BY c.name", (*names, raw_from, end)):
        earlier = found.get(name, (0, None, Status.OK))
        found[name] = (earlier[0] + count, last, worst(earlier[2], _BY_SEVERITY[severity]))
    return found


def _rolled_until(conn: sqlite3.Connection, start: float, end: float, tz: ZoneInfo) -> float:
    """Where raw runs take over from rollups inside [start, end): the midnight after the day of the
    oldest raw run (days before it were pruned, that day partly), capped by the last rolled-up day."""
    through = conn.execute("SELECT value FROM agent_state WHERE key = 'rollup_through'").fetchone()
    if not through:
        return start
    oldest = conn.execute("SELECT min(started) FROM check_runs").fetchone()[0]
    if oldest is not None and oldest <= start:
        return start
    boundary = _midnight(date.fromisoformat(through[0]) + timedelta(days=1), tz)
    if oldest is not None:
        boundary = min(boundary, _midnight(datetime.fromtimestamp(oldest, tz).date() + timedelta(days=1), tz))
    return max(start, min(end, boundary))


def _ticks(conn: sqlite3.Connection, checklist: str, ids: list[str], start: float,
           end: float) -> dict[str, tuple[float, str, str]]:
    """item id → (at, author, note) of its latest tick in [start, end)."""
    if not ids:
        return {}
    keys = [f"{checklist}.{item}" for item in ids]
    rows = conn.execute(
        f"SELECT check_name, at, author, message FROM maintenance_log WHERE category = ? AND at >= ? AND at < ? "
        f"AND check_name IN ({','.join('?' * len(keys))}) ORDER BY at, id", (TICK_CATEGORY, start, end, *keys))
    return {key.split(".", 1)[1]: (at, author, note) for key, at, author, note in rows}
