"""`maint-agent history` and `history export`: past runs, newest first, in the CLI's formats; and the whole
run history streamed, oldest first, as JSON lines, a JSON array or CSV for other tools.

`history` has a start-up budget (it is what scripts and dashboards call): building its parser imports only
this module, and the handlers import what they need.
"""

from __future__ import annotations

import argparse
import sys
import time

from agent.cli.common import (
    EXIT_OK, STATUS_NAMES, TIME_HELP, column_headers, fail, open_store, shared_options, time_format, time_range,
    unknown_name,
)
from agent.output import emit
from agent.timefmt import TIME_FORMS, utc_sql

EXPORT_COLUMNS = ("check", "type", "started", "duration_seconds", "status", "pending", "summary", "metrics",
                  "details")
EXPORT_FORMATS = ("jsonl", "json", "csv")


def register(sub, common, fmt) -> None:
    """Add `history` and its `export` subcommand to `sub`; `common` gives --config, `fmt` gives --format."""
    p = sub.add_parser("history", parents=[common, fmt], help="past runs, newest first")
    p.add_argument("--check", help="only this check")
    p.add_argument("--status", help="comma-separated statuses: ok,warning,critical,unknown")
    p.add_argument("--since", help=f"{TIME_FORMS} (in the agent's time zone)")
    p.add_argument("--until", help="same forms as --since; exclusive")
    p.add_argument("--limit", type=int, default=None,
                   help="at most this many runs, 0 for no limit (default: 100 for table, no limit for json/csv)")
    p.set_defaults(handler=cmd_history)
    _register_export(p)


def _register_export(history) -> None:
    history_sub = history.add_subparsers(title="history commands", metavar="COMMAND")
    p = shared_options(history_sub.add_parser("export", help="stream runs, oldest first, as JSON lines or CSV "
                                                              "for other tools"), output_format=False)
    p.add_argument("--since", default=argparse.SUPPRESS, help=f"{TIME_HELP} (default: everything kept)")
    p.add_argument("--until", default=argparse.SUPPRESS, help="same forms as --since; exclusive")
    p.add_argument("--check", default=argparse.SUPPRESS, help="only this check")
    p.add_argument("--format", dest="export_format", choices=EXPORT_FORMATS, default="jsonl",
                   help="jsonl: one JSON object per line; json: the same objects as one JSON array (one per "
                        "line, like every --format json); csv: metrics and details as JSON (default: jsonl)")
    p.add_argument("-o", "--output", help="write to this file (replaced only when complete) instead of stdout")
    p.set_defaults(handler=cmd_history_export)


def cmd_history(args) -> int:
    from agent.store.history import runs, write_runs_json
    now = time.time()
    conn, lean = open_store(args)
    try:
        since, until = time_range(args, now, lean.tz)
        statuses = [STATUS_NAMES.index(s.strip().lower()) for s in args.status.split(",")] if args.status else None
    except ValueError as exc:
        return fail(str(exc) if "invalid time" in str(exc) else
                     f"invalid --status {args.status!r} (use ok,warning,critical,unknown)")
    if args.limit is None:
        args.limit = 100 if args.format == "table" else 0
    if args.limit < 0:
        return fail("--limit must be 0 (no limit) or more")
    if args.check and args.check not in lean.all_names:
        stored = {row[0] for row in conn.execute("SELECT name FROM checks")}
        if args.check not in stored:
            return fail(unknown_name("check", args.check, lean.all_names | stored))
    query = dict(check=args.check, statuses=statuses, since=since, until=until, limit=args.limit or None)
    if args.format == "json":
        sys.stdout.flush()
        write_runs_json(conn, sys.stdout.buffer, **query)
        return EXIT_OK
    when = time_format(args.format, lean.tz, now)
    rows = [{"check": r["check_name"], "started": when(r["started"]), "status": STATUS_NAMES[r["status"]],
             "duration_seconds": round(r["duration"], 4), "summary": r["summary"], "metrics": r["metrics"]}
            for r in runs(conn, **query)]
    emit(rows, args.format, ["started", "check", "status", "summary"], headers=column_headers(when, "started"))
    return EXIT_OK


# -- history export ---------------------------------------------------------------------------------------

_STATUS_SQL = "CASE {0} WHEN 0 THEN 'ok' WHEN 1 THEN 'warning' WHEN 2 THEN 'critical' ELSE 'unknown' END"
_EXPORT_FIELDS = {
    "check": "c.name", "type": "c.type", "started": utc_sql("r.started"),
    "duration_seconds": "r.duration", "status": _STATUS_SQL.format("r.status"),
    "pending": f"CASE WHEN r.pending = 0 THEN NULL ELSE {_STATUS_SQL.format('r.pending')} END",
    "summary": "r.summary", "metrics": "coalesce(r.metrics, '{}')", "details": "coalesce(r.details, '{}')",
}
"""Column → SQL. SQLite formats times and statuses (and for jsonl builds the object), so a month of a
1/min check streams without a Python object per field."""


def _export_sql(jsonl: bool, check: str | None, since: float | None, until: float | None) -> tuple[str, list]:
    if jsonl:
        pairs = ", ".join(f"'{name}', " + (f"json({sql})" if name in ("metrics", "details") else sql)
                          for name, sql in _EXPORT_FIELDS.items())
        columns = f"json_object({pairs})"
    else:
        columns = ", ".join(_EXPORT_FIELDS[name] for name in EXPORT_COLUMNS)
    from agent.plugin.storefile import where_clause
    where, params = where_clause((("r.check_id = (SELECT id FROM checks WHERE name = ?)", check),
                                  ("r.started >= ?", since), ("r.started < ?", until)))
    return f"SELECT {columns} FROM check_runs r JOIN checks c ON c.id = r.check_id{where} ORDER BY r.started", params


def cmd_history_export(args) -> int:
    now = time.time()
    conn, lean = open_store(args)
    try:
        since, until = time_range(args, now, lean.tz)
    except ValueError as exc:
        return fail(str(exc))
    if args.check and not conn.execute("SELECT 1 FROM checks WHERE name = ?", (args.check,)).fetchone():
        if args.check not in lean.all_names:
            known = {row[0] for row in conn.execute("SELECT name FROM checks")} | lean.all_names
            return fail(unknown_name("check", args.check, known))
    cursor = conn.execute(*_export_sql(args.export_format != "csv", args.check, since, until))
    if not args.output:
        _write_export(cursor, args.export_format, sys.stdout)
        return EXIT_OK
    try:
        count = _export_to_file(cursor, args.export_format, args.output)
    except OSError as exc:
        return fail(f"cannot write {args.output}: {exc.strerror or exc}")
    print(f"exported {count} runs to {args.output}")
    return EXIT_OK


def _export_to_file(cursor, fmt: str, output: str) -> int:
    """Write beside the target and rename: a reader never sees half an export, and the history (check
    summaries, command output) lands in a file only its owner can read, never through a planted link."""
    from pathlib import Path
    from agent.plugin.outfile import replace_file
    with replace_file(Path(output), newline="") as out:
        return _write_export(cursor, fmt, out)


def _write_export(cursor, fmt: str, out) -> int:
    """Stream rows from the cursor (never all in memory); return how many were written."""
    from agent.output import csv_field
    from agent.plugin.terminal import json_c1_escaped
    count = 0
    if fmt in ("jsonl", "json"):
        array = fmt == "json"   # the CLI's one JSON style: an array, one object per line
        for (line,) in cursor:
            out.write(("[\n" if not count else ",\n") if array else "")
            out.write(json_c1_escaped(line) + ("" if array else "\n"))
            count += 1
        if array:
            out.write("\n]\n" if count else "[]\n")
        return count
    import csv
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(EXPORT_COLUMNS)
    for row in cursor:
        writer.writerow([csv_field(value) for value in row])
        count += 1
    return count
