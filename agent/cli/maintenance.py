"""`maint-agent maintenance start|stop|list`: planned work the agent must not fix or page about.

The CLI writes the window (and its maintenance-log line) to the store itself, so it works while the
daemon is stopped too, and leaves an operator request that a running daemon picks up within a second
or two (see agent/maintenance.py). Exit codes: 0 done, 1 nothing to do (no such window in force),
2 usage or config error.

Every CLI invocation imports this module to build its parser, so the top level imports argparse only.
"""

from __future__ import annotations

import argparse

SINCE_DEFAULT = "7d"


class NotInForce(Exception):
    """`maintenance stop` found nothing to stop (exit 1, not a usage error)."""


def register(sub, common, fmt) -> None:
    maintenance = sub.add_parser(
        "maintenance", help="maintenance mode: checks keep running, their corrective actions, notifications and "
                            "alerts are held (start, stop, list)")
    maintenance_sub = maintenance.add_subparsers(title="maintenance commands", metavar="COMMAND")
    p = maintenance_sub.add_parser(
        "start", parents=[common],
        help="put checks (or --all) in maintenance for a while; the running agent applies it within 2 s")
    p.add_argument("checks", nargs="*", metavar="CHECK", help="the checks the work affects")
    p.add_argument("--all", action="store_true", help="every check (host-wide work)")
    p.add_argument("--for", dest="duration", required=True, metavar="DURATION",
                   help="how long, e.g. 30m or 2h (at most 7d); it ends by itself")
    p.add_argument("--reason", required=True, help="what work is planned, e.g. \"PG 15.8 upgrade\"")
    p.add_argument("--by", help="who does it (default: $SUDO_USER, else the login user)")
    p.set_defaults(handler=cmd_maintenance_start)
    p = maintenance_sub.add_parser("stop", parents=[common],
                                   help="end a maintenance window now (its ID from `maintenance list`) or all of them")
    p.add_argument("id", nargs="?", type=int, metavar="ID", help="the window's number")
    p.add_argument("--all", action="store_true", help="every window in force")
    p.add_argument("--by", help="who ends it (default: $SUDO_USER, else the login user)")
    p.set_defaults(handler=cmd_maintenance_stop)
    p = maintenance_sub.add_parser(
        "list", parents=[common, fmt],
        help="windows in force, those that ended recently and the next one of each configured window")
    p.add_argument("--since", default=SINCE_DEFAULT,
                   help=f"also windows that ended since then: 7d, 12h, 2026-11-01 (default: {SINCE_DEFAULT})")
    p.set_defaults(handler=cmd_maintenance_list)
    maintenance.set_defaults(handler=lambda args: (maintenance.print_help(), 2)[1])


def cmd_maintenance_start(args: argparse.Namespace) -> int:
    import time

    from agent import maintenance
    from agent.cli.common import EXIT_OK, fail
    from agent.cli.common import unknown_name
    from agent.cli.common import author_name
    from agent.plugin.redact import REDACT
    from agent.plugin.units import format_duration, parse_duration
    if bool(args.checks) == args.all:
        return fail("name the checks the work affects, or give --all (not both)")
    try:
        seconds = parse_duration(args.duration)
    except ValueError as exc:
        return fail(f"--for: {exc}")
    if not 0 < seconds <= maintenance.MAX_SECONDS:
        return fail(f"--for must be more than 0 and at most {format_duration(maintenance.MAX_SECONDS)} (got "
                     f"{args.duration}); for longer work start a new window when this one ends")
    reason = " ".join(args.reason.split())
    if not reason:
        return fail("--reason is empty: say what work is planned")
    try:
        author = author_name(args.by)
    except ValueError as exc:
        return fail(str(exc))
    lean = _config(args)
    db, names = lean.db, lean.all_names
    unknown = [name for name in args.checks if name not in names]
    if unknown:
        return fail(unknown_name("check", unknown[0], names))
    now = time.time()
    window = maintenance.Window(0, now, now + seconds, tuple(dict.fromkeys(args.checks)) or None, REDACT(reason),
                                author, "cli")

    def start(conn):
        from dataclasses import replace
        started = replace(window, id=maintenance.insert_window(conn, window))
        _log(conn, started, "started", now, author)
        maintenance.request_refresh(conn, now, started.id)
        return started

    window = _write(db, start)
    print(f"maintenance #{window.id} started for {window.scope()} until {_local(window.ends)} "
          f"({format_duration(seconds)}); the running agent applies it within 2 s")
    return EXIT_OK


def cmd_maintenance_stop(args: argparse.Namespace) -> int:
    import time

    from agent import maintenance
    from agent.cli.common import EXIT_OK, EXIT_PROBLEM, fail
    from agent.cli.common import author_name
    from agent.plugin.units import format_duration
    if (args.id is None) == (not args.all):
        return fail("give the ID of a window (see `maint-agent maintenance list`) or --all (not both)")
    try:
        author = author_name(args.by)
    except ValueError as exc:
        return fail(str(exc))
    db = _config(args).db
    if not db.exists():
        return fail(f"no store at {db} (has the agent run with this config?)")
    now = time.time()

    def stop(conn):
        from dataclasses import replace
        if args.all:
            targets = [w for w in maintenance.read_windows(conn, open_only=True) if w.active(now)]
            if not targets:
                raise NotInForce("no maintenance is in force")
        else:
            window = maintenance.get_window(conn, args.id)
            if window is None:
                raise LookupError(f"no maintenance #{args.id} (see `maint-agent maintenance list`)")
            if not window.active(now):
                raise NotInForce(f"maintenance #{args.id} is not in force: {_state(window, now)} "
                                 f"{_local(window.until if window.starts <= now else window.starts)}")
            targets = [window]
        stopped = []
        for window in targets:
            if maintenance.end_window(conn, window.id, at=now, by=author, reason="stopped"):
                window = replace(window, ended=now, ended_by=author, end_reason="stopped")
                _log(conn, window, "stopped", now, author)
                maintenance.request_refresh(conn, now, window.id)
                stopped.append(window)
        return stopped

    try:
        stopped = _write(db, stop)
    except LookupError as exc:
        return fail(str(exc))
    except NotInForce as exc:
        return fail(str(exc), EXIT_PROBLEM)
    for window in stopped:
        print(f"maintenance #{window.id} stopped after {format_duration(now - window.starts)} (planned "
              f"{format_duration(window.ends - window.starts)}) for {window.scope()}; the running agent applies it "
              f"within 2 s")
    return EXIT_OK


def cmd_maintenance_list(args: argparse.Namespace) -> int:
    import sqlite3
    import time

    from agent import maintenance
    from agent.cli.common import EXIT_OK, fail, open_store, parse_when, time_format
    from agent.output import emit
    now = time.time()
    try:
        lean = _config(args)
        since = parse_when(args.since, now, lean.tz)
    except ValueError as exc:
        return fail(str(exc))
    conn, _ = open_store(args)
    try:
        windows = maintenance.read_windows(conn, since=since)
    except sqlite3.OperationalError as exc:   # a store an older agent wrote: no window recorded yet
        if "no such table" not in str(exc):
            raise
        windows = []
    when = time_format(args.format, lean.tz, now)
    listed = [(w, _state(w, now)) for w in windows] + [(w, "scheduled") for w in _scheduled(args, now)]
    order = {"active": 0, "scheduled": 1}
    listed.sort(key=lambda pair: (order.get(pair[1], 2), pair[0].starts if pair[1] == "scheduled" else -pair[0].starts))
    rows = [_row(window, state, now, when) for window, state in listed]
    emit(rows, args.format, ["id", "state", "checks", "starts", "ends", "by", "reason"])
    return EXIT_OK


def _state(window, now: float) -> str:
    """active, scheduled, stopped, expired (also when the agent has not recorded it yet) or removed."""
    if window.ended is not None:
        return window.end_reason or "ended"
    if window.ends <= now:
        return "expired"
    return "active" if window.starts <= now else "scheduled"


def _row(window, state: str, now: float, when) -> dict:
    return {"id": window.id or None, "state": state, "name": window.name, "source": window.source,
            "checks": "all" if window.checks is None else ", ".join(window.checks),
            "all_checks": window.checks is None, "starts": when(window.starts), "ends": when(window.until),
            "planned_seconds": round(window.ends - window.starts, 3),
            "remaining_seconds": round(window.ends - now, 3) if state == "active" else None,
            "by": f"config ({window.name})" if window.source == "config" else window.author,
            "reason": window.reason, "ended_by": window.ended_by, "end_reason": window.end_reason}


def _scheduled(args, now: float) -> list:
    """The next occurrence of each configured window, read from the YAML alone (a listing must not need the
    secrets the full validation reads); an entry `config check` would refuse is left out."""
    import yaml
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    from agent import maintenance
    from agent.plugin.calendar import CalendarSpecError, parse_calendar
    from agent.cli.common import config_path
    from agent.plugin.units import parse_duration
    try:
        with open(config_path(args), encoding="utf-8") as fh:
            data = yaml.load(fh, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)) or {}
        entries = list(data.get("maintenance") or [])
        zone = (data.get("agent") or {}).get("timezone")
    except (OSError, yaml.YAMLError, AttributeError, TypeError):
        return []
    if not entries:
        return []
    try:
        tz = ZoneInfo(zone) if zone else None
    except (ZoneInfoNotFoundError, ValueError):
        return []
    if tz is None:
        from agent.timefmt import local_zone
        tz = local_zone()
    upcoming = []
    for entry in entries:
        try:
            checks = entry.get("checks")
            recurring = maintenance.Recurring(entry["name"], parse_calendar(entry["at"]),
                                              parse_duration(entry["duration"]), tuple(checks) if checks else None,
                                              entry.get("reason") or "")
        except (KeyError, TypeError, ValueError, AttributeError, CalendarSpecError):
            continue
        starts = maintenance.next_start(recurring, now, tz)
        upcoming.append(maintenance.Window(0, starts, starts + recurring.seconds, recurring.checks, recurring.reason,
                                           "maint-agent", "config", recurring.name))
    return upcoming


def _config(args):
    """The lean config (store path, zone, configured checks) from the YAML alone; exits 2 when it cannot be
    read."""
    from agent.cli.common import lean_config
    return lean_config(args)


def _write(db, change):
    """Run `change(conn)` in one transaction on the store (created when the agent never ran, so a window can be
    opened before the agent starts); exits 2 when the store cannot be written."""
    import sqlite3

    from agent.cli.common import fail
    from agent.store.writer import Store
    try:
        store = Store(db)
    except (OSError, RuntimeError, sqlite3.Error) as exc:
        raise SystemExit(fail(f"cannot write the store {db}: {exc}"))
    conn = store.conn
    try:
        conn.execute("BEGIN IMMEDIATE")
        try:
            result = change(conn)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
    finally:
        store.close()
    return result


def _log(conn, window, event: str, at: float, author: str) -> None:
    from agent import maintenance
    conn.execute("INSERT INTO maintenance_log(at, category, author, source, check_name, message) VALUES "
                 "(?,?,?,?,?,?)", (at, maintenance.LOG_CATEGORY, author, "cli", maintenance.log_check(window),
                                   maintenance.log_message(window, event, at)))


def _local(at: float) -> str:
    from datetime import datetime
    return datetime.fromtimestamp(at).strftime("%Y-%m-%d %H:%M:%S")
