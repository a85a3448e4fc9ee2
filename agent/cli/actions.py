"""`maint-agent actions` (the audit), `actions reset CHECK`, `action run NAME` (manual trigger)."""

from __future__ import annotations

import argparse


def register(sub, common, fmt) -> None:
    p = sub.add_parser("actions", parents=[common, fmt],
                       help="the action audit: every decision (ran, dry-run, skipped for cooldown/limit/window), "
                            "newest first; `actions reset CHECK` clears exhausted remediation")
    p.add_argument("--since", help="7d, 12h (ago), 2026-11-01 or 2026-11-01T08:00 (in the agent's time zone); "
                                   "default 7d")
    p.add_argument("--check", help="only decisions for this check")
    p.add_argument("--action", help="only this action")
    p.add_argument("--limit", type=int, default=None, help="at most this many rows (default: 100 for table)")
    p.set_defaults(handler=cmd_actions)
    actions_sub = p.add_subparsers(title="actions commands", metavar="COMMAND")
    r = actions_sub.add_parser("reset", parents=[common],
                               help="forget a check's attempts and exhausted state (the running agent applies "
                                    "it within seconds)")
    r.add_argument("check")
    r.set_defaults(handler=cmd_actions_reset)

    action = sub.add_parser("action", help="run one configured action by hand")
    action_sub = action.add_subparsers(title="action commands", metavar="COMMAND")
    r = action_sub.add_parser("run", parents=[common, fmt],
                              help="run a configured action now (audited as manual); exit 0 when it succeeded, 1 when "
                                   "it failed")
    r.add_argument("name")
    r.add_argument("--dry-run", action="store_true", help="evaluate and audit as 'would run'; change nothing")
    r.add_argument("--check", help="act as if triggered by this check (its severity and latest result)")
    r.set_defaults(handler=cmd_action_run)
    action.set_defaults(handler=lambda a: (action.print_help(), 2)[1])


def cmd_actions(args: argparse.Namespace) -> int:
    import json
    import time

    from agent.cli.common import EXIT_OK, column_headers, fail, open_store, parse_when, time_format, unknown_name
    from agent.output import emit
    conn, lean = open_store(args)
    now = time.time()
    try:
        since = parse_when(args.since or "7d", now, lean.tz)
    except ValueError as exc:
        return fail(str(exc))
    limit = args.limit if args.limit is not None else (100 if args.format == "table" else 0)
    for kind, value, column in (("check", args.check, "check_name"), ("action", args.action, "action")):
        if value and not conn.execute(f"SELECT 1 FROM action_runs WHERE {column} = ? LIMIT 1", (value,)).fetchone():
            known = {row[0] for row in conn.execute(f"SELECT DISTINCT {column} FROM action_runs")}
            if kind == "check" and value in lean.all_names:
                continue   # configured, just never acted upon: an empty list is the answer
            if kind == "check":
                known |= lean.all_names
            return fail(unknown_name(kind, value, known))
    from agent.plugin.storefile import where_clause
    where, params = where_clause((("started >= ?", since), ("check_name = ?", args.check or None),
                                  ("action = ?", args.action or None)))
    sql = ("SELECT id, started, duration, action, action_type, check_name, trigger_status, trigger, target, "
           f"decision, source, dry_run, exit_code, outcome, verified, output, details FROM action_runs{where} "
           "ORDER BY started DESC, id DESC" + (" LIMIT ?" if limit else ""))
    when = time_format(args.format, lean.tz, now)
    rows = []
    for r in conn.execute(sql, params + ([limit] if limit else [])):
        try:
            details = json.loads(r["details"]) if r["details"] else {}
        except ValueError:   # a row written by an older agent: show it without its summary
            details = {}
        row = {"id": r["id"], "time": when(r["started"]), "check": r["check_name"], "action": r["action"],
               "type": r["action_type"], "decision": r["decision"], "source": r["source"],
               "trigger": f"{r['trigger_status']}: {r['trigger']}" if r["trigger_status"] else None,
               "target": r["target"], "exit_code": r["exit_code"], "duration_seconds": round(r["duration"] or 0, 3),
               "outcome": r["outcome"], "verified": None if r["verified"] is None else bool(r["verified"]),
               "summary": details.get("summary")}
        if args.format != "table":
            row["output"] = r["output"]
            row["dry_run"] = bool(r["dry_run"])
        rows.append(row)
    emit(rows, args.format, ["time", "check", "action", "decision", "outcome", "summary"],
         headers=column_headers(when, "time"))
    return EXIT_OK


def cmd_actions_reset(args: argparse.Namespace) -> int:
    import time

    from agent.cli.common import EXIT_OK, fail, lean_config, unknown_name
    from agent.store.writer import connect
    lean = lean_config(args)   # the store and the check names only: a reset must not need the config's secrets
    db, names = lean.db, lean.names
    if args.check not in names:
        return fail(unknown_name("check", args.check, names))
    if not db.exists():
        return fail(f"no store at {db} (has the agent run with this config?)")
    conn = connect(db)
    conn.execute("INSERT INTO operator_requests(at, kind, target) VALUES (?, 'reset', ?)", (time.time(), args.check))
    conn.close()
    print(f"reset of {args.check} requested; the running agent applies it within a few seconds")
    return EXIT_OK


def cmd_action_run(args: argparse.Namespace) -> int:
    import sqlite3
    import time

    from actions.base import TriggerInfo
    from agent.cli.common import EXIT_OK, EXIT_PROBLEM, EXIT_USAGE, config_path, fail, load_or_report, unknown_name
    from agent.output import emit
    from agent.plugin.redact import REDACT
    from agent.remediation import audit_row, execute_action
    from agent.store.writer import Store
    from agent.plugin.terminal import printable
    loaded = load_or_report(config_path(args), offline=False)   # the action may need its secrets now
    if loaded is None:
        return EXIT_USAGE
    options = loaded.actions.get(args.name)
    if options is None:
        return fail(unknown_name("action", args.name, loaded.actions))
    check = None
    if args.check:
        check = next((c for c in loaded.checks if c.name == args.check), None)
        if check is None:
            return fail(unknown_name("check", args.check, [c.name for c in loaded.checks]))
    REDACT.refresh(loaded.config)
    trigger = TriggerInfo(check.name if check else "manual", "manual", f"run by hand ({_who()})",
                          check.severity if check else "P3", event="trigger", reason="manual run")
    dry_run = args.dry_run or options.dry_run or loaded.config.agent.dry_run
    decision = "dry_run" if dry_run else "ran"
    try:   # audited before it runs: an action nobody can audit does not run
        store = Store(loaded.db_path)
        row = audit_row(options, trigger, None, started=time.time(), duration=0.0, dry_run=dry_run,
                        source="manual", decision=decision)
        row.update(outcome="running", check_name=check.name if check else None)
        audit_id = store.record_action(row)
    except (OSError, sqlite3.Error, RuntimeError) as exc:
        return fail(f"cannot write the audit to the store {loaded.db_path}: {exc}")
    from actions import ACTION_TYPES
    from agent.notifications import Outbox
    outbox = Outbox(loaded.db_path)   # a notification is queued like the daemon's: a failed one is retried by it
    outbox.configure({name: o for name, o in loaded.actions.items() if ACTION_TYPES[o.type].NOTIFIES},
                     loaded.config.smtp)
    result, started, duration = execute_action(options, trigger, dry_run=dry_run, smtp=loaded.config.smtp,
                                               hostname=loaded.config.agent.hostname, outbox=outbox)
    outbox.close()
    row = audit_row(options, trigger, result, started=started, duration=duration, dry_run=dry_run,
                    source="manual", decision=decision)
    row["check_name"] = check.name if check else None
    store.update_action(audit_id, **row)
    store.add_log(f"{options.name} {'would run' if dry_run else 'ran'} by hand: {REDACT(result.summary)}",
                  at=started, category="corrective", author=_who(), source="cli",
                  check_name=check.name if check else None)
    store.close()
    emit([{"action": options.name, "dry_run": dry_run, "ok": result.ok, "exit_code": result.exit_code,
           "duration_seconds": round(duration, 3), "summary": REDACT(result.summary)}], args.format,
         ["action", "ok", "summary"])
    if args.format == "table" and result.output:
        print(printable(REDACT(result.output), keep_newlines=True))
    return EXIT_OK if result.ok else EXIT_PROBLEM


def _who() -> str:
    import getpass
    import os
    return os.environ.get("SUDO_USER") or getpass.getuser()
