"""`maint-agent notifications`: the notification outbox; `notifications resend ID` sends one again."""

from __future__ import annotations

import argparse

STATUSES = ("pending", "sending", "sent", "failed")


def register(sub, common, fmt) -> None:
    p = sub.add_parser("notifications", parents=[common, fmt],
                       help="every notification (trigger, escalation, resolve) and its delivery: pending ones are "
                            "retried with backoff, failed ones kept; `notifications resend ID` sends one again")
    p.add_argument("--status", help="comma-separated: pending,sending,sent,failed (default: all)")
    p.add_argument("--limit", type=int, default=None, help="at most this many rows (default: 100 for table)")
    p.set_defaults(handler=cmd_notifications)
    notifications_sub = p.add_subparsers(title="notifications commands", metavar="COMMAND")
    r = notifications_sub.add_parser("resend", parents=[common],
                                     help="make a notification due again with a fresh attempt budget (the running "
                                          "agent sends it within seconds; the same dedup key and text)")
    r.add_argument("id", type=int)
    r.set_defaults(handler=cmd_notifications_resend)


def cmd_notifications(args: argparse.Namespace) -> int:
    from agent.cli.common import EXIT_OK, fail, open_store, time_format
    from agent.notifications import listing
    from agent.output import emit
    statuses = [s.strip().lower() for s in args.status.split(",")] if args.status else None
    if statuses and not set(statuses) <= set(STATUSES):
        return fail(f"invalid --status {args.status!r} (use {','.join(STATUSES)})")
    limit = args.limit if args.limit is not None else (100 if args.format == "table" else 0)
    conn, lean = open_store(args)
    when = time_format(args.format, lean.tz)
    rows = []
    for row in listing(conn, statuses, limit or None):
        rows.append({"id": row["id"], "created": when(row["created"]), "action": row["action"],
                     "channel": row["channel"], "check": row["check_name"], "event": row["event"],
                     "status": row["status"], "attempts": row["attempts"],
                     "next_attempt": when(row["next_attempt"]) if row["status"] in ("pending", "sending") else None,
                     "sent_at": when(row["sent_at"]), "last_error": row["last_error"], "title": row["title"],
                     "dedup_key": row["dedup_key"]})
    emit(rows, args.format, ["id", "created", "channel", "check", "event", "status", "attempts", "next_attempt",
                             "last_error"])
    return EXIT_OK


def cmd_notifications_resend(args: argparse.Namespace) -> int:
    import time

    from agent.cli.common import EXIT_OK, EXIT_PROBLEM, config_path, fail, read_fast
    from agent.notifications import resend
    from agent.store.writer import connect
    path = config_path(args)
    try:
        db = read_fast(path).db
    except (OSError, ValueError, AttributeError) as exc:
        return fail(f"cannot read config {path}: {exc}")
    if not db.exists():
        return fail(f"no store at {db} (has the agent run with this config?)")
    conn = connect(db)
    try:
        if not resend(conn, args.id, time.time()):
            return fail(f"no notification {args.id} (see maint-agent notifications)", EXIT_PROBLEM)
    finally:
        conn.close()
    print(f"notification {args.id} queued again; the running agent sends it within seconds")
    return EXIT_OK
