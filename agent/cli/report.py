"""`maint-agent report`: print a period's maintenance report, send it now, list and resend the outbox.

    maint-agent report [--period week] [--from 2026-11-02] [--format text|html|json|csv] [--report NAME] [--send]
    maint-agent report outbox [--format table|json|csv]
    maint-agent report resend ID

Printing reads the store read-only; `--send` and `resend` write the outbox (a small write beside
the daemon's, which WAL and the busy timeout serialise) and deliver at once.
"""

from __future__ import annotations

import json
import sys
import time

REPORT_FORMATS = ("text", "html", "json", "csv")
PERIODS = ("day", "week", "month", "quarter")


def register(sub, common, fmt) -> None:
    """Add this area's subparsers to `sub`; `common` gives --config, `fmt` gives --format."""
    report = sub.add_parser("report", parents=[common],
                            help="print the maintenance report of the last complete period (or send it)",
                            description="Print the report of the last complete period, or of the one holding "
                                        "--from. With --send, queue it in the outbox and deliver it now to the "
                                        "recipients of the named report (exit 1 when delivery failed; the "
                                        "message stays in the outbox for `report resend`).")
    report.add_argument("--period", choices=PERIODS, help="default: the --report's period, else week")
    report.add_argument("--from", dest="start", metavar="DATE",
                        help="the period holding this date (2026-11-02, in the agent's time zone), instead of "
                             "the last complete one")
    report.add_argument("--format", dest="report_format", choices=REPORT_FORMATS, default="text",
                        help="output format (default: text)")
    report.add_argument("--report", metavar="NAME", help="a report from `reports:` (its period and recipients)")
    report.add_argument("--send", action="store_true", help="email it now through smtp: instead of printing it")
    report.set_defaults(handler=cmd_report)
    actions = report.add_subparsers(title="report commands", metavar="COMMAND")
    p = actions.add_parser("outbox", parents=[common, fmt], help="queued, sent and failed reports (exit 1 when "
                                                                 "any failed for good)")
    p.set_defaults(handler=cmd_outbox)
    p = actions.add_parser("resend", parents=[common], help="deliver a kept report again now (by outbox ID)")
    p.add_argument("id", type=int, help="the ID `report outbox` shows")
    p.set_defaults(handler=cmd_resend)


def cmd_report(args) -> int:
    from agent.cli.common import EXIT_OK, EXIT_USAGE, config_path, fail, load_or_report

    loaded = load_or_report(config_path(args), offline=not args.send)   # sending needs the SMTP password
    if loaded is None:
        return EXIT_USAGE
    section = None
    if args.report or args.send:
        section = _section(loaded, args.report)
        if section is None:
            return EXIT_USAGE
    period = args.period or (section.period if section else "week")
    try:
        start, end = _bounds(period, args.start, loaded.tz)
    except ValueError as exc:
        return fail(str(exc))
    if not loaded.db_path.exists():
        return fail(f"no store at {loaded.db_path} (has the agent run with this config?)")
    from agent.plugin.redact import REDACT
    REDACT.refresh(loaded.config)    # the configured secrets' values are masked in log entries and queries
    if args.send:
        return _send(loaded, section, period, start, end)
    from agent.plugin.storefile import open_readonly
    from agent.reports.build import RENDERERS, build_report
    from agent.plugin.terminal import json_c1_escaped, printable
    conn = open_readonly(loaded.db_path)
    text = RENDERERS[args.report_format](build_report(conn, loaded, period, start, end, time.time()))
    # summaries and log entries are what checks and people wrote: no control character reaches the terminal
    sys.stdout.write(json_c1_escaped(text) if args.report_format == "json" else printable(text, keep_newlines=True))
    return EXIT_OK


def _section(loaded, name: str | None):
    """The named report, or the only one configured; None after saying why."""
    from agent.cli.common import fail

    reports = loaded.config.reports
    if name is None and len(reports) == 1:
        return reports[0]
    if name is None:
        fail("--send needs --report NAME" + (f" (one of: {', '.join(r.name for r in reports)})" if reports
                                              else "; no reports: are configured"))
        return None
    section = next((r for r in reports if r.name == name), None)
    if section is None:
        from agent.cli.common import unknown_name
        fail(unknown_name("report", name, [r.name for r in reports])
              + ("" if reports else " (no reports: configured)"))
    return section


def _bounds(period: str, start: str | None, tz) -> tuple[float, float]:
    """The period holding the date `start` in the agent's zone `tz`, else the last complete one."""
    from agent.reports.checklist import period_bounds
    from agent.reports.build import last_complete
    from agent.timefmt import parse_day

    if start is None:
        return last_complete(period, time.time(), tz)
    try:
        return period_bounds(period, parse_day(start, tz), tz)
    except ValueError:
        raise ValueError(f"invalid --from {start!r} (use a date such as 2026-11-02)") from None


def _send(loaded, section, period: str, start: float, end: float) -> int:
    from agent.cli.common import EXIT_OK, EXIT_PROBLEM, fail
    from agent.plugin.mailer import MailError
    from agent.reports.delivery import ReportError, deliver_pending, queue_period

    if period != section.period:
        section = section.model_copy(update={"period": period})
    now = time.time()
    try:
        outbox_id = queue_period(loaded.db_path, loaded, section, start, end, now, again=True)
    except (ReportError, MailError) as exc:
        return fail(str(exc))
    deliver_pending(loaded.db_path, loaded, now)
    return _outcome(loaded, outbox_id, EXIT_OK, EXIT_PROBLEM)


def _outcome(loaded, outbox_id: int, ok: int, problem: int) -> int:
    """Say what happened to an outbox row; `ok` when it was delivered."""
    from agent.plugin.storefile import open_readonly

    conn = open_readonly(loaded.db_path)
    status, error, recipients = conn.execute("SELECT status, last_error, recipients FROM report_outbox WHERE id = ?",
                                             (outbox_id,)).fetchone()
    if status == "sent":
        print(f"report {outbox_id} sent to {', '.join(json.loads(recipients))}"
              + (f" ({error})" if error else ""))
        return ok
    print(f"maint-agent: report {outbox_id} not delivered: {error}; kept in the outbox (status {status}), "
          f"retried by the agent or with: maint-agent report resend {outbox_id}", file=sys.stderr)
    return problem


def cmd_outbox(args) -> int:
    from agent.cli.common import EXIT_OK, EXIT_PROBLEM, column_headers, open_store, time_format
    from agent.output import emit
    from agent.reports.delivery import outbox

    conn, lean = open_store(args)
    when = time_format(args.format, lean.tz)
    rows = [{**row, **{k: when(row[k]) for k in ("created", "period_start", "period_end", "next_attempt",
                                                   "sent_at")},
             "recipients": row["recipients"] if args.format == "json" else ", ".join(row["recipients"])}
            for row in outbox(conn)]
    emit(rows, args.format, ["id", "created", "report", "status", "attempts", "recipients", "last_error"],
         headers=column_headers(when, "created"))
    return EXIT_PROBLEM if any(row["status"] == "failed" for row in rows) else EXIT_OK


def cmd_resend(args) -> int:
    from agent.cli.common import EXIT_OK, EXIT_PROBLEM, EXIT_USAGE, config_path, fail, load_or_report
    from agent.reports.delivery import deliver_pending, resend

    loaded = load_or_report(config_path(args), offline=False)
    if loaded is None:
        return EXIT_USAGE
    if not loaded.db_path.exists():
        return fail(f"no store at {loaded.db_path} (has the agent run with this config?)")
    now = time.time()
    if not resend(loaded.db_path, args.id, now):
        return fail(f"no report with ID {args.id} in the outbox (see: maint-agent report outbox)")
    deliver_pending(loaded.db_path, loaded, now)
    return _outcome(loaded, args.id, EXIT_OK, EXIT_PROBLEM)
