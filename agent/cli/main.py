"""`maint-agent` command line. Exit codes: 0 ok, 1 a check failed / problem found, 2 usage or config error,
3 a check's result is UNKNOWN (`check NAME` only).

Read commands (`status`, `history`) import only the standard library and
sqlite3 and open the store read-only: they start fast and never disturb the
running daemon, which they do not talk to.
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
import time
from pathlib import Path

from agent.cli.common import (
    EXIT_OK, EXIT_PROBLEM, EXIT_UNKNOWN, EXIT_USAGE, STATUS_NAMES, column_headers, config_path, fail,
    load_or_report, open_store, time_format, unknown_name,
)
from agent.plugin.storefile import StoreUnusable
from agent.output import FORMATS, emit

STANDALONE_COMMANDS = ("run", "status")
"""Commands defined here that no command module extends: parsed without importing any command module."""


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    wrapped: list[str] = []
    if argv[:1] == ["ping"] and "--" in argv:   # `ping NAME [options] -- COMMAND ARGS…`: the command is the job's
        argv, wrapped = argv[:argv.index("--")], argv[argv.index("--") + 1:]
    parser = build_parser(_command_word(argv))
    args = parser.parse_args(argv)
    if argv[:1] == ["ping"]:
        args.command = wrapped
    if not getattr(args, "handler", None):
        parser.print_help()
        return EXIT_USAGE
    del parser
    try:
        return args.handler(args)
    except BrokenPipeError:
        return EXIT_OK
    except StoreUnusable as exc:   # names the file and what to do
        return fail(str(exc))
    except sqlite3.Error as exc:
        return fail(f"store: {exc}")
    except KeyboardInterrupt:
        return 130


def _command_word(argv: list[str]) -> str | None:
    """The command named on the command line (`-c FILE` may come before it)."""
    words = iter(argv)
    for arg in words:
        if arg in ("-c", "--config"):
            next(words, None)
        elif not arg.startswith("-"):
            return arg
    return None


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser of every command, or for a STANDALONE_COMMANDS `command` only of those defined here: `run`
    (the daemon keeps what it imports for months) and `status` (start-up time) skip the command modules, and
    `history` builds only its own."""
    # -c/--config before the command word (`maint-agent -c FILE status`) or after it: the subcommands'
    # option has no default, so it never resets a value given before the word
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-c", "--config", type=Path, default=argparse.SUPPRESS,
                        help="config file (default: $MAINT_AGENT_CONFIG, ./agent.yaml, /etc/maint-agent/agent.yaml)")
    fmt = argparse.ArgumentParser(add_help=False)
    fmt.add_argument("--format", choices=FORMATS, default="table", help="output format (default: table)")

    parser = argparse.ArgumentParser(prog="maint-agent", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    from agent import __version__
    parser.add_argument("--version", action="version", version=f"maint-agent {__version__}")
    parser.add_argument("-c", "--config", type=Path, default=None,
                        help="config file, before or after the command (default: $MAINT_AGENT_CONFIG, "
                             "./agent.yaml, /etc/maint-agent/agent.yaml)")
    sub = parser.add_subparsers(title="commands", metavar="COMMAND")

    p = sub.add_parser("run", parents=[common], help="run the agent in the foreground (what systemd starts)")
    p.add_argument("--dry-run", action="store_true",
                   help="evaluate and audit every action as 'would run'; no corrective action executes")
    p.set_defaults(handler=cmd_run)

    config = sub.add_parser("config", parents=[common],
                            help="validate, show the effective config, or print its JSON Schema")
    config_sub = config.add_subparsers(title="config commands", metavar="COMMAND")
    p = config_sub.add_parser("check", parents=[common],
                              help="validate a config file: exit 0 with a summary, or 2 with every error; "
                                   "files others can read are warnings (errors with --strict)")
    p.add_argument("file", nargs="?", type=Path, help="config file (default as for --config)")
    p.add_argument("--strict", action="store_true",
                   help="exit 2 when the config, a secret file or the TLS key is readable or writable by others or "
                        "owned by another user; the config must be private even without literal secrets")
    p.add_argument("--offline", "--no-secrets", dest="offline", action="store_true",
                   help="validate everything but whether the secrets can be read (a config repository's CI, a "
                        "host without the credentials): references are checked for form only")
    p.set_defaults(handler=cmd_config_check)
    p = config_sub.add_parser("show", parents=[common],
                              help="print the effective config as YAML, defaults filled in, in the units you "
                                   "write (90d, 10GiB, 85%%); secrets appear as their reference, literal ones as ***")
    p.add_argument("file", nargs="?", type=Path, help="config file (default as for --config)")
    p.set_defaults(handler=cmd_config_show)
    p = config_sub.add_parser("schema", help="print the config's JSON Schema")
    p.set_defaults(handler=cmd_config_schema)
    config.set_defaults(handler=lambda a: (config.print_help(), EXIT_USAGE)[1])

    p = sub.add_parser("checks", parents=[common, fmt],
                       help="list configured checks (disabled ones marked) with schedule, next due, last status")
    p.set_defaults(handler=cmd_checks)

    p = sub.add_parser("check", parents=[common, fmt],
                       help="run one check now and print its result with the thresholds that applied (exit 0 OK, "
                            "1 WARNING/CRITICAL, 3 UNKNOWN); writes nothing: not the store, not a baseline")
    p.add_argument("name")
    p.set_defaults(handler=cmd_check)

    p = sub.add_parser("status", parents=[common, fmt],
                       help="is the agent running, and the latest result of every configured check, worst first "
                            "(exit 1 when the agent is not running or any check is not OK or stale)")
    p.add_argument("--all", action="store_true", help="also checks that are no longer in the config")
    p.set_defaults(handler=cmd_status)

    if command not in STANDALONE_COMMANDS:   # each module keeps its top-level imports light
        _register_command_modules(sub, common, fmt, command)
    return parser


def _register_command_modules(sub, common, fmt, command: str | None) -> None:
    """Further commands, one module per area, each adding its subparsers with `register(sub, common, fmt)`;
    imported here by name (and only when a command needs them), never by a string. `history` (a read
    command scripts call) builds only its own."""
    from agent.cli import history
    history.register(sub, common, fmt)
    if command == "history":
        return
    from agent.cli import actions, drift, fleet, log, maintenance, notifications, ping, report
    for module in (actions, log, report, fleet, drift, maintenance, ping, notifications):
        module.register(sub, common, fmt)


# -- helpers ----------------------------------------------------------------------------------------------


def cmd_run(args) -> int:
    import os
    import signal
    signal.signal(signal.SIGHUP, signal.SIG_IGN)   # a reload before the daemon is up must not kill it
    os.umask(0o077)   # the store, state and anything a check leaves are the agent's alone, however it was started
    loaded = load_or_report(config_path(args), offline=False)
    if loaded is None:
        return EXIT_USAGE
    from agent.daemon import Daemon
    from agent.plugin import logs
    logs.setup(loaded.config.agent.log_level)
    try:
        return Daemon(loaded, dry_run=args.dry_run).run()
    except StoreUnusable as exc:   # not a database: starting again will not help, the operator must look
        logs.event("agent.failed", "error", error=str(exc))
        return EXIT_USAGE
    except (OSError, RuntimeError, sqlite3.Error) as exc:   # port taken, store unreadable or from a newer agent
        logs.event("agent.failed", "error", error=_start_error(exc, loaded.config.http.listen))
        return 1


def _start_error(exc: Exception, listen: str) -> str:
    """Why the agent could not start, with what to do when its address is taken."""
    import errno
    if isinstance(exc, OSError) and exc.errno == errno.EADDRINUSE:
        return (f"cannot listen on {listen}: address already in use; another maint-agent may be running with "
                f"this config (see `maint-agent status`), or another program holds the port: set http.listen "
                f"to a free one")
    return str(exc)


def cmd_config_check(args) -> int:
    path = args.file or config_path(args)
    loaded = load_or_report(path, offline=args.offline)
    if loaded is None:
        return EXIT_USAGE
    from agent.config.exposure import exposed_files
    exposed = exposed_files(loaded, strict=args.strict)
    for problem in exposed:
        print(f"{'error' if args.strict else 'warning'}: {problem}", file=sys.stderr)
    if exposed and args.strict:
        return EXIT_USAGE
    print(loaded.summary() + ("; secrets not read (--offline)" if args.offline else ""))
    return EXIT_OK


def cmd_config_show(args) -> int:
    loaded = load_or_report(args.file or config_path(args))
    if loaded is None:
        return EXIT_USAGE
    from agent.cli.configview import human_config
    from agent.plugin.fields import is_reference
    from agent.plugin.redact import REDACT, secrets_in
    literals = {str(s) for s in secrets_in(loaded.config) if not is_reference(s)}
    REDACT.refresh(loaded.config)

    def mask(value):
        """Literal secrets become ***, references stay (they are what the operator wrote); any other text
        passes the redactor (a URL with credentials in a field that is not a secret)."""
        if isinstance(value, dict):
            return {k: mask(v) for k, v in value.items()}
        if isinstance(value, list):
            return [mask(v) for v in value]
        if not isinstance(value, str) or is_reference(value):
            return value
        return "***" if value in literals else REDACT(value)

    document = mask(human_config(loaded.config))
    document.pop("include", None)   # merged below: the output is one complete config
    header = (f"# effective config of {loaded.path}: defaults filled in; durations, sizes and "
              f"percentages in the units config files take (90d, 10GiB, 85%)\n")
    if loaded.included:
        header += "# merged from the files it includes: " + ", ".join(str(p) for p in loaded.included) + "\n"
    sys.stdout.write(header + _with_origins(document, loaded.origins))
    return EXIT_OK


def _with_origins(document: dict, origins: dict) -> str:
    """The config as YAML, each entry that came from an included file preceded by `# from FILE:LINE`."""
    import yaml

    def dump(value) -> str:
        return yaml.safe_dump(value, sort_keys=False, allow_unicode=True, default_flow_style=False)

    if not origins:
        return dump(document)
    out = []
    for key, value in document.items():
        if key in ("checks", "actions", "reports") and value:
            out.append(f"{key}:\n" + "".join(_origin(origins, (key, entry.get("name"))) + dump([entry])
                                             for entry in value))
        elif key == "checklists" and any(value.values()):
            parts = []
            for period, items in value.items():
                body = "".join(_origin(origins, ("checklists", period, item.get("id")), "  ")
                               + _indent(dump([item])) for item in items) if items else "  []\n"
                parts.append(f"  {period}:" + ("\n" + body if items else " []\n"))
            out.append("checklists:\n" + "".join(parts))
        else:
            out.append(dump({key: value}))
    return "".join(out)


def _origin(origins: dict, key: tuple, indent: str = "") -> str:
    where = origins.get(key)
    return f"{indent}# from {where}\n" if where else ""


def _indent(text: str) -> str:
    return "".join(f"  {line}" for line in text.splitlines(keepends=True))


def cmd_config_schema(args) -> int:
    import json
    from agent.config.schema import json_schema
    print(json.dumps(json_schema(), indent=2))
    return EXIT_OK


def cmd_checks(args) -> int:
    loaded = load_or_report(config_path(args))
    if loaded is None:
        return EXIT_USAGE
    from agent.store.history import latest_runs, scheduler_state
    from agent.plugin.storefile import StoreMissing, open_readonly
    from agent.scheduler import compact, describe, jitter_key_for, plan_start
    try:
        conn = open_readonly(loaded.db_path)
        persisted, latest = scheduler_state(conn), {r["check_name"]: r for r in latest_runs(conn)}
    except StoreMissing:
        persisted, latest = {}, {}
    now = time.time()
    when = time_format(args.format, loaded.tz, now)
    table = args.format == "table"
    rows = []
    for options in loaded.checks:
        trigger = loaded.triggers[options.name]
        fired, ran = persisted.get(options.name, (None, None))
        plan = plan_start(trigger, fired, ran, now, loaded.tz, jitter_key_for(loaded.config.agent.hostname,
                                                                              options.name), options.jitter)
        last = latest.get(options.name)
        next_due = when(plan.next_due) if options.enabled else ("disabled" if table else None)
        rows.append({"check": options.name, "type": options.type, "enabled": options.enabled,
                     "schedule": compact(trigger), "schedule_description": describe(trigger), "next_due": next_due,
                     "last_run": when(last["started"]) if last else None,
                     "last_status": STATUS_NAMES[last["status"]] if last else None})
    emit(rows, args.format, ["check", "type", "schedule", "next_due", "last_run", "last_status"],
         headers=column_headers(when, "next_due", "last_run"))
    return EXIT_OK


def cmd_check(args) -> int:
    loaded = load_or_report(config_path(args))
    if loaded is None:
        return EXIT_USAGE
    options = next((c for c in loaded.checks if c.name == args.name), None)
    if options is None:
        return fail(unknown_name("check", args.name, [c.name for c in loaded.checks]))
    from agent.cli.checkview import result_lines, result_row
    from agent.evaluate import WindowState, evaluate
    from agent.job import Job
    from agent.plugin.redact import REDACT, redacted_outcome
    from agent.plugin.result import Status
    from agent.runner import Runner
    from checks import CHECK_TYPES

    REDACT.refresh(loaded.config)   # what the daemon knows after loading this config, so the same is masked

    job = Job(CHECK_TYPES[options.type](options), loaded.triggers[options.name], loaded.timeout_for(options))
    outcome = []
    # keep_state=False: a one-off run reads what the daemon keeps (baselines, log offsets) and never writes it
    runner = Runner(1, lambda *a: outcome.append(a), state_dir=loaded.db_path.parent, keep_state=False,
                    store=loaded.db_path, tz=loaded.tz)
    runner.request(job, time.time())
    while not outcome:
        wait = runner.pump()
        time.sleep(min(0.01, wait if wait is not None else 0.01))
    _, result, started, duration, _ = outcome[0]
    verdict = evaluate(job.check, result, WindowState(), started + duration)
    summary, _ = redacted_outcome(verdict.summary, None, REDACT)
    row = result_row(job.check, verdict, result, summary, duration)
    if args.format == "table":
        sys.stdout.write(result_lines(job.check, row, result))
    else:
        emit([row], args.format, list(row))
    if verdict.status is Status.UNKNOWN:
        return EXIT_UNKNOWN
    return EXIT_OK if verdict.status is Status.OK else EXIT_PROBLEM


def cmd_status(args) -> int:
    from agent.store import liveness as heartbeat
    from agent.store.history import latest_runs, maintenance_now
    from agent.output import json_document, use_colour
    from agent.cli.statusview import build, header_line, status_cell, summary_cell
    from agent.timefmt import ago, zone_text
    conn, lean = open_store(args)
    now = time.time()
    when = time_format(args.format, lean.tz, now)
    record = heartbeat.read(conn)
    live = heartbeat.liveness(record, now, heartbeat.process_alive(record) if record else None)
    latest = {r["check_name"]: dict(r) for r in latest_runs(conn)}
    # the newest result's end, from each check's newest run (index seeks): not a scan of every run kept
    newest = max((row["started"] + row["duration"] for row in latest.values()), default=None)
    view = build(list(lean.checks), latest, record, live, newest, now, when, retired=args.all,
                 maintenance=maintenance_now(conn, lean.all_names, now))
    zone = zone_text(lean.tz, now)
    if args.format == "json":
        agent = {**view.agent, "modes": view.modes, "timezone": str(lean.tz)}
        sys.stdout.write(json_document({"agent": agent, "counts": view.counts, "checks": view.rows}))
    elif args.format == "csv":
        emit(view.rows, "csv", [])
    else:
        colour = use_colour(sys.stdout)
        header = header_line(view, lean.hostname, zone, now)
        if colour and not view.agent["running"]:
            header = header.replace("NOT RUNNING", "\x1b[1;31mNOT RUNNING\x1b[0m", 1)
        print(header)
        rows = [{**row, "status_text": status_cell(row), "summary_text": summary_cell(row),
                 "age": ago(row["age_seconds"]) if row["age_seconds"] is not None else None} for row in view.rows]
        emit(rows, "table", ["check", "status_text", "last_run", "age", "summary_text"],
             headers={"status_text": "STATUS", "summary_text": "SUMMARY", **column_headers(when, "last_run")}, paint=_paint)
    return EXIT_PROBLEM if view.problem else EXIT_OK


def _paint(row: dict, column: str) -> str | None:
    """Status colours: red critical, magenta unknown, yellow warning, stale or pending, green OK, dim others."""
    if column != "status_text":
        return None
    if row["stale"] or (row["status"] == "ok" and row["pending"]):
        return "33"
    return {"critical": "1;31", "unknown": "35", "warning": "33", "ok": "32"}.get(row["status"], "2")




if __name__ == "__main__":
    sys.exit(main())
