"""`maint-agent log` and `checklist`: the maintenance log (the procedures' "record all maintenance
activities") and the daily…quarterly checklists.

Every CLI invocation imports this module to build its parser, so the top level imports argparse
only; the handlers import what they need, including agent.cli.main's helpers (no import cycle).
"""

from __future__ import annotations

import argparse

from agent.cli.common import TIME_HELP, author_name, shared_options

LOG_CATEGORIES = ("hardware", "software", "update", "security", "backup", "database", "network", "configuration",
                  "incident", "review", "other")
"""What an operator's entry is about (`log add --category`). A fixed set, so reports group entries and a
typo is refused. The agent writes its own under `agent` (start, stop, reloads, catch-up runs), `action`
(remediation), `checklist` (ticks, written by `checklist done`) and `maintenance` (windows started, stopped
or expired; `maintenance start|stop` write theirs with the operator as author)."""
CHECKLISTS = ("daily", "weekly", "monthly", "quarterly")
"""agent.config.checklists.CHECKLIST_PERIODS's keys, repeated here so building the parser needs no pydantic."""
SOURCES = ("cli", "agent", "policy")
"""Who wrote a log entry: operators (`log add`, `checklist done`, `action run`), the agent, its remediation."""
AGENT_CATEGORIES = ("agent", "action", "checklist", "corrective", "notification", "report")
"""Categories the agent and the CLI write themselves, beside an operator's LOG_CATEGORIES."""


def register(sub, common, fmt) -> None:
    """Add `log` and `checklist` to `sub`; `common` gives --config, `fmt` gives --format."""
    _register_log(sub, common, fmt)
    _register_checklist(sub, common, fmt)


def _register_log(sub, common, fmt) -> None:
    log = sub.add_parser("log", help="the maintenance log: what was done on this host, when and by whom")
    log_sub = log.add_subparsers(title="log commands", metavar="COMMAND")
    p = log_sub.add_parser("add", parents=[common], help="record a maintenance activity")
    p.add_argument("message", help="what was done, e.g. \"Replaced disk sdb\"")
    p.add_argument("--category", choices=LOG_CATEGORIES, default="other", help="what it is about (default: other)")
    p.add_argument("--by", help="who did it (default: $SUDO_USER, else the login user)")
    p.add_argument("--check", help="the configured check this entry is about")
    p.add_argument("--at", help=f"when it was done, if not now: {TIME_HELP}")
    p.set_defaults(handler=cmd_log_add)
    p = log_sub.add_parser("list", parents=[common, fmt], help="entries, newest first")
    p.add_argument("--since", help=TIME_HELP)
    p.add_argument("--until", help="same forms as --since; exclusive")
    p.add_argument("--category", help="comma-separated categories, e.g. hardware,agent,checklist")
    p.add_argument("--source", help="comma-separated sources: cli (operators), agent, policy (corrective actions)")
    p.add_argument("--check", help="only entries about this check (or checklist item, e.g. weekly.security-review)")
    p.add_argument("--limit", type=int, default=None,
                   help="at most this many entries, 0 for no limit (default: 100 for table, no limit for json/csv)")
    p.set_defaults(handler=cmd_log_list)
    log.set_defaults(handler=lambda args: _usage(log))


def _register_checklist(sub, common, fmt) -> None:
    at_help = ("the period holding this time instead of the current one: 7d, 12h (ago), 2026-11-01 or "
               "2026-11-01T08:00 (in the agent's time zone)")
    checklist = sub.add_parser(
        "checklist", parents=[common, fmt],
        help="the maintenance checklists of the current period: automated status and manual ticks "
             "(exit 1 when an item is not done or its checks were not all OK)")
    checklist.add_argument("--at", help=at_help)
    checklist.set_defaults(handler=cmd_checklist, checklist=None)
    checklist_sub = checklist.add_subparsers(title="checklists", metavar="CHECKLIST")
    for name in CHECKLISTS:
        p = shared_options(checklist_sub.add_parser(name, help=f"only the {name} checklist"), output_format=True)
        p.add_argument("--at", default=argparse.SUPPRESS, help=at_help)
        p.set_defaults(handler=cmd_checklist, checklist=name)
    p = shared_options(checklist_sub.add_parser("done", help="tick a manual item for its current period"),
                        output_format=False)
    p.add_argument("item", metavar="CHECKLIST.ITEM", help="e.g. weekly.security-review")
    p.add_argument("--note", required=True, help="what was done or found (kept in the maintenance log)")
    p.add_argument("--by", help="who did it (default: $SUDO_USER, else the login user)")
    p.add_argument("--at", default=argparse.SUPPRESS,
                   help="when it was done, if not now; ticks that time's period (forms as for --at above)")
    p.set_defaults(handler=cmd_checklist_done)


def _usage(parser: argparse.ArgumentParser) -> int:
    from agent.cli.common import EXIT_USAGE
    parser.print_help()
    return EXIT_USAGE


# -- shared -------------------------------------------------------------------------------------------------


def _parse_at(text: str, now: float, tz) -> float:
    """A time an operator typed, read in the agent's zone `tz` (agent/timefmt.py)."""
    from agent.timefmt import parse_when
    return parse_when(text, now, tz)


def _past(at: float, now: float) -> float:
    if at > now + 60:
        raise ValueError("--at is in the future: record work once it is done")
    return at


def _append(db_path, message: str, **fields) -> int:
    """Write one maintenance-log row beside a running daemon (WAL, busy timeout); create the store
    when the agent has never run, so a log can start before the agent does."""
    from agent.store.writer import Store
    store = Store(db_path)
    try:
        return store.add_log(message, source="cli", **fields)
    finally:
        store.close()


def _csv_list(text: str | None) -> list[str]:
    return [part.strip() for part in (text or "").split(",") if part.strip()]


def _check_choices(option: str, values: list[str], known) -> None:
    """Raise ValueError naming a value of a comma-separated option that is not one of `known`."""
    import difflib
    for value in values:
        if value not in known:
            close = difflib.get_close_matches(value, list(known), n=1)
            raise ValueError(f"unknown {option} {value!r}" + (f" (did you mean {close[0]!r}?)" if close else "")
                             + f"; one of: {', '.join(sorted(known))}")


# -- log ----------------------------------------------------------------------------------------------------


def cmd_log_add(args) -> int:
    import time
    from agent.cli.common import EXIT_OK, fail, lean_config, unknown_name
    from agent.plugin.redact import REDACT
    message = args.message.strip()
    if not message:
        return fail("the message is empty: say what was done")
    lean = lean_config(args)
    db_path, names = lean.db, lean.all_names
    now = time.time()
    try:
        at = _past(_parse_at(args.at, now, lean.tz), now) if args.at else now
        author = author_name(args.by)
    except ValueError as exc:
        return fail(str(exc))
    if args.check and args.check not in names:
        return fail(unknown_name("check", args.check, names))
    try:
        entry = _append(db_path, REDACT(message), at=at, category=args.category, author=author,
                        check_name=args.check)
    except (OSError, RuntimeError) as exc:   # state dir not writable; a store from a newer agent
        return fail(f"cannot write the store {db_path}: {exc}")
    print(f"logged #{entry} ({args.category}, by {author})")
    return EXIT_OK


def cmd_log_list(args) -> int:
    import time
    from agent.cli.common import EXIT_OK, column_headers, fail, open_store, time_format, time_range, unknown_name
    from agent.output import emit
    now = time.time()
    conn, lean = open_store(args)

    def stored(column: str) -> set[str]:
        return {row[0] for row in conn.execute(f"SELECT DISTINCT {column} FROM maintenance_log") if row[0]}

    try:
        since, until = time_range(args, now, lean.tz)
        _check_choices("--source", _csv_list(args.source), set(SOURCES) | stored("source"))
        _check_choices("--category", _csv_list(args.category),
                       set(LOG_CATEGORIES + AGENT_CATEGORIES) | stored("category"))
    except ValueError as exc:
        return fail(str(exc))
    limit = args.limit if args.limit is not None else (100 if args.format == "table" else 0)
    if limit < 0:
        return fail("--limit must be 0 (no limit) or more")
    logged = stored("check_name")
    for name in _csv_list(args.check):
        if name not in lean.all_names and name not in logged:
            return fail(unknown_name("check", name, lean.all_names | logged))
    from agent.plugin.storefile import where_clause
    where, params = where_clause((("category IN (?)", _csv_list(args.category)),
                                  ("source IN (?)", _csv_list(args.source)),
                                  ("check_name IN (?)", _csv_list(args.check)), ("at >= ?", since), ("at < ?", until)))
    sql = (f"SELECT id, at, category, author, source, check_name, message FROM maintenance_log{where}"
           " ORDER BY at DESC, id DESC")
    if limit:
        sql += f" LIMIT {int(limit)}"
    when = time_format(args.format, lean.tz, now)
    rows = [{"id": r["id"], "at": when(r["at"]), "category": r["category"], "author": r["author"],
             "source": r["source"], "check": r["check_name"], "message": r["message"]}
            for r in conn.execute(sql, params)]
    emit(rows, args.format, ["at", "category", "author", "check", "message"], headers=column_headers(when, "at"))
    return EXIT_OK


# -- checklists -------------------------------------------------------------------------------------------


def cmd_checklist(args) -> int:
    import time
    from agent.reports.checklist import checklist_status, period_bounds, period_label
    from agent.config.checklists import CHECKLIST_PERIODS
    from agent.cli.common import EXIT_OK, EXIT_PROBLEM, EXIT_USAGE, column_headers, config_path, fail, load_or_report, time_format
    from agent.plugin.storefile import StoreMissing, open_readonly
    from agent.output import emit
    loaded = load_or_report(config_path(args))
    if loaded is None:
        return EXIT_USAGE
    tz, now = loaded.tz, time.time()
    try:
        at = _parse_at(args.at, now, tz) if args.at else now
        conn = open_readonly(loaded.db_path)
    except (ValueError, StoreMissing) as exc:
        return fail(str(exc))
    section, when = loaded.config.checklists, time_format(args.format, tz, now)
    rows = []
    for name in [args.checklist] if args.checklist else CHECKLISTS:
        period = CHECKLIST_PERIODS[name]
        start, end = period_bounds(period, at, tz)
        label = period_label(period, start, tz)
        for item in checklist_status(conn, section, period, start, end, tz=tz):
            rows.append(_checklist_row(name, label, when(start), when(end), item, when, args.format == "table"))
    emit(rows, args.format, ["item", "title", "period", "done", "status", "when", "by", "detail"],
         headers=column_headers(when, "when"))
    return EXIT_PROBLEM if any(not r["done"] or r["status"] not in (None, "ok") for r in rows) else EXIT_OK


def _checklist_row(name: str, label: str, start: str, end: str, item: dict, when, table: bool) -> dict:
    """One item as the CLI shows it: its full key first (what `checklist done` takes)."""
    row = {"item": f"{name}.{item['id']}", "checklist": name, "period": label, "period_start": start,
           "period_end": end, **item, "last_run": when(item["last_run"]), "ticked_at": when(item["ticked_at"])}
    if table:   # one "when / by / detail" triple reads better than two half-empty ones
        automated = item["kind"] == "automated"
        row["when"] = row["last_run"] if automated else row["ticked_at"]
        row["by"] = item["ticked_by"]
        row["detail"] = (f"{item['runs']} runs" + (f"; not run: {', '.join(item['missing'])}" if item["missing"]
                                                   else "")) if automated else item["note"]
    return row


def cmd_checklist_done(args) -> int:
    import time
    from agent.reports.checklist import TICK_CATEGORY, period_bounds, period_label
    from agent.config.checklists import CHECKLIST_PERIODS
    from agent.cli.common import EXIT_OK, EXIT_USAGE, config_path, fail, load_or_report
    from agent.plugin.redact import REDACT
    loaded = load_or_report(config_path(args))
    if loaded is None:
        return EXIT_USAGE
    section = loaded.config.checklists
    items = {f"{name}.{item.id}": item for name in CHECKLISTS for item in section.items(name)}
    key = args.item.strip()
    item = items.get(key)
    if item is None:
        from agent.cli.common import unknown_name
        return fail(unknown_name("checklist item", key, items) if items else
                     f"no checklist item {key!r} (no checklists: in the config)")
    period = CHECKLIST_PERIODS[key.split(".", 1)[0]]
    if item.checks:
        return fail(f"{key} is automated: it is done when {', '.join(item.checks)} ran this {period}; "
                     f"there is nothing to tick (add a note with `maint-agent log add --check NAME …`)")
    note = args.note.strip()
    if not note:
        return fail("--note is empty: say what was done or found")
    tz, now = loaded.tz, time.time()
    try:
        at = _past(_parse_at(args.at, now, tz), now) if args.at else now
        author = author_name(args.by)
    except ValueError as exc:
        return fail(str(exc))
    try:
        _append(loaded.db_path, REDACT(note), at=at, category=TICK_CATEGORY, author=author, check_name=key)
    except (OSError, RuntimeError) as exc:
        return fail(f"cannot write the store {loaded.db_path}: {exc}")
    start, _ = period_bounds(period, at, tz)
    print(f"ticked {key} ({item.title}) for {period_label(period, start, tz)}, by {author}")
    return EXIT_OK


