"""`maint-agent` command line. Exit codes: 0 ok, 1 a check failed / problem found, 2 usage or config error,
3 a check's result is UNKNOWN (`check NAME` only).

Read commands (`status`, `history`) import only the standard library and
sqlite3 and open the store read-only: they start fast and never disturb the
running daemon, which they do not talk to.
"""

from __future__ import annotations

import argparse
import importlib
import sqlite3
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from agent.output import FORMATS, emit

EXIT_OK, EXIT_PROBLEM, EXIT_USAGE, EXIT_UNKNOWN = 0, 1, 2, 3
STATUS_NAMES = ("ok", "warning", "critical", "unknown")
COMMAND_MODULES = ("agent.cli_actions", "agent.cli_log", "agent.cli_report", "agent.cli_fleet", "agent.cli_drift")
"""Further commands, one module per area: `register(sub, common, fmt)` adds its subparsers."""
STANDALONE_COMMANDS = ("run", "status")
"""Commands defined here that no COMMAND_MODULES extends (`history` gains `export`): parsed without importing them."""


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser(_command_word(argv))
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help()
        return EXIT_USAGE
    del parser
    try:
        return args.handler(args)
    except BrokenPipeError:
        return EXIT_OK
    except sqlite3.Error as exc:
        return _fail(f"store: {exc}")
    except KeyboardInterrupt:
        return 130


def _command_word(argv: list[str]) -> str | None:
    """The command named on the command line (options come after it)."""
    return next((arg for arg in argv if not arg.startswith("-")), None)


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser of every command, or for a STANDALONE_COMMANDS `command` only of those defined here: `run`
    (the daemon keeps what it imports for months) and `status` (start-up time) skip COMMAND_MODULES."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-c", "--config", type=Path, default=None,
                        help="config file (default: $MAINT_AGENT_CONFIG, ./agent.yaml, /etc/maint-agent/agent.yaml)")
    fmt = argparse.ArgumentParser(add_help=False)
    fmt.add_argument("--format", choices=FORMATS, default="table", help="output format (default: table)")

    parser = argparse.ArgumentParser(prog="maint-agent", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    from agent import __version__
    parser.add_argument("--version", action="version", version=f"maint-agent {__version__}")
    sub = parser.add_subparsers(title="commands", metavar="COMMAND")

    p = sub.add_parser("run", parents=[common], help="run the agent in the foreground (what systemd starts)")
    p.add_argument("--dry-run", action="store_true",
                   help="evaluate and audit every action as 'would run'; no corrective action executes")
    p.set_defaults(handler=cmd_run)

    config = sub.add_parser("config", help="validate, show the effective config, or print its JSON Schema")
    config_sub = config.add_subparsers(title="config commands", metavar="COMMAND")
    p = config_sub.add_parser("check", parents=[common],
                              help="validate a config file: exit 0 with a summary, or 2 with every error; "
                                   "files others can read are warnings (errors with --strict)")
    p.add_argument("file", nargs="?", type=Path, help="config file (default as for --config)")
    p.add_argument("--strict", action="store_true",
                   help="exit 2 when the config, a secret file or the TLS key is readable or writable by others or "
                        "owned by another user; the config must be private even without literal secrets")
    p.set_defaults(handler=cmd_config_check)
    p = config_sub.add_parser("show", parents=[common],
                              help="print the effective config as YAML, defaults filled in; secrets appear as their "
                                   "reference, literal ones as ***")
    p.add_argument("file", nargs="?", type=Path, help="config file (default as for --config)")
    p.set_defaults(handler=cmd_config_show)
    p = config_sub.add_parser("schema", help="print the config's JSON Schema")
    p.set_defaults(handler=cmd_config_schema)
    config.set_defaults(handler=lambda a: (config.print_help(), EXIT_USAGE)[1])

    p = sub.add_parser("checks", parents=[common, fmt], help="list configured checks with schedule, next due, last status")
    p.set_defaults(handler=cmd_checks)

    p = sub.add_parser("check", parents=[common, fmt],
                       help="run one check now and print its result (exit 0 OK, 1 WARNING/CRITICAL, 3 UNKNOWN); "
                            "not recorded in the store")
    p.add_argument("name")
    p.set_defaults(handler=cmd_check)

    p = sub.add_parser("status", parents=[common, fmt],
                       help="latest result of every configured check (exit 1 when any is not OK)")
    p.add_argument("--all", action="store_true", help="also checks that are no longer in the config")
    p.set_defaults(handler=cmd_status)

    p = sub.add_parser("history", parents=[common, fmt], help="past runs, newest first")
    p.add_argument("--check", help="only this check")
    p.add_argument("--status", help="comma-separated statuses: ok,warning,critical,unknown")
    p.add_argument("--since", help="7d, 12h, 2026-11-01 or 2026-11-01T08:00 (local time)")
    p.add_argument("--until", help="same forms as --since; exclusive")
    p.add_argument("--limit", type=int, default=None,
                   help="at most this many runs, 0 for no limit (default: 100 for table, no limit for json/csv)")
    p.set_defaults(handler=cmd_history)
    if command not in STANDALONE_COMMANDS:   # each module keeps its top-level imports light
        for module in COMMAND_MODULES:
            importlib.import_module(module).register(sub, common, fmt)
    return parser


# -- helpers ----------------------------------------------------------------------------------------------


def _fail(message: str, code: int = EXIT_USAGE) -> int:
    print(f"maint-agent: {message}", file=sys.stderr)
    return code


def _config_path(args) -> Path:
    from agent.paths import default_config
    return args.config or default_config()


def _load(path: Path):
    """Full validation (imports pydantic); None after printing every error."""
    from agent.config import load_config
    from agent.yamlsrc import ConfigError
    try:
        return load_config(path)
    except ConfigError as exc:
        for issue in exc.issues:
            print(issue, file=sys.stderr)
        return None


def _read_fast(path: Path) -> tuple[Path, set[str]]:
    """The store's path and the configured check names from the YAML alone, without validating the
    whole config (keeps `status` and `history` fast)."""
    import yaml
    from agent.paths import store_path
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    with open(path, encoding="utf-8") as fh:
        try:
            data = yaml.load(fh, Loader=loader) or {}
        except yaml.YAMLError as exc:   # callers report ValueError as "cannot read config"
            raise ValueError(f"invalid YAML: {exc}") from None
    agent = data.get("agent") or {}
    store = data.get("store") or {}
    names = {c.get("name") for c in data.get("checks") or () if isinstance(c, dict) and c.get("enabled", True)}
    return store_path(path, agent.get("state_dir"), store.get("path")), names


def _open_store(args):
    """(read-only connection, configured check names); exits 2 with the reason when either is missing."""
    from agent.history import StoreMissing, open_readonly
    path = _config_path(args)
    try:
        db, names = _read_fast(path)
    except (OSError, ValueError, AttributeError) as exc:
        raise SystemExit(_fail(f"cannot read config {path}: {exc}"))
    try:
        return open_readonly(db), names
    except StoreMissing as exc:
        raise SystemExit(_fail(str(exc)))


def _time_range(args, now: float) -> tuple[float | None, float | None]:
    """`--since` and `--until` of a listing command (either may be absent); ValueError names a bad one."""
    since = _parse_when(args.since, now) if args.since else None
    until = _parse_when(args.until, now) if args.until else None
    return since, until


def _parse_when(text: str, now: float) -> float:
    """'7d' → now − 7 days; '2026-11-01' or '2026-11-01T08:00' → that local time."""
    from agent.units import parse_duration
    try:
        return now - parse_duration(text)
    except ValueError:
        pass
    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
        raise ValueError(f"invalid time {text!r} (use 7d, 12h, 2026-11-01 or 2026-11-01T08:00)") from None


def _local(value: float | None) -> str | None:
    """Tables are for people: local wall time, like journalctl."""
    return datetime.fromtimestamp(value).strftime("%Y-%m-%d %H:%M:%S") if value else None


def _time_format(fmt: str):
    return _local if fmt == "table" else _iso


def _iso(value: float | None) -> str | None:
    """JSON and CSV are for programs: ISO 8601 in UTC."""
    if not value:
        return None
    return datetime.fromtimestamp(value, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


# -- commands ---------------------------------------------------------------------------------------------


def cmd_run(args) -> int:
    import signal
    signal.signal(signal.SIGHUP, signal.SIG_IGN)   # a reload before the daemon is up must not kill it
    loaded = _load(_config_path(args))
    if loaded is None:
        return EXIT_USAGE
    from agent.daemon import Daemon
    from agent import logs
    logs.setup(loaded.config.agent.log_level)
    try:
        return Daemon(loaded, dry_run=args.dry_run).run()
    except (OSError, RuntimeError, sqlite3.Error) as exc:   # port taken, store unreadable or from a newer agent
        logs.event("agent.failed", "error", error=str(exc))
        return 1


def cmd_config_check(args) -> int:
    loaded = _load(args.file or _config_path(args))
    if loaded is None:
        return EXIT_USAGE
    from agent.config import exposed_files
    exposed = exposed_files(loaded, strict=args.strict)
    for problem in exposed:
        print(f"{'error' if args.strict else 'warning'}: {problem}", file=sys.stderr)
    if exposed and args.strict:
        return EXIT_USAGE
    print(loaded.summary())
    return EXIT_OK


def cmd_config_show(args) -> int:
    loaded = _load(args.file or _config_path(args))
    if loaded is None:
        return EXIT_USAGE
    import yaml
    from agent.fields import is_reference
    from agent.redact import REDACT, secrets_in
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

    document = mask(loaded.config.model_dump(mode="json", by_alias=True))
    text = yaml.safe_dump(document, sort_keys=False, allow_unicode=True, default_flow_style=False)
    sys.stdout.write(f"# effective config of {loaded.path}: defaults filled in, durations in seconds, sizes in "
                     f"bytes, ratios 0..1\n{text}")
    return EXIT_OK


def cmd_config_schema(args) -> int:
    import json
    from agent.config import json_schema
    print(json.dumps(json_schema(), indent=2))
    return EXIT_OK


def cmd_checks(args) -> int:
    loaded = _load(_config_path(args))
    if loaded is None:
        return EXIT_USAGE
    from agent.history import StoreMissing, latest_runs, open_readonly, scheduler_state
    from agent.scheduler import describe, jitter_key_for, plan_start
    try:
        conn = open_readonly(loaded.db_path)
        persisted, latest = scheduler_state(conn), {r["check_name"]: r for r in latest_runs(conn)}
    except StoreMissing:
        persisted, latest = {}, {}
    now, when = time.time(), _time_format(args.format)
    rows = []
    for options in loaded.checks:
        trigger = loaded.triggers[options.name]
        fired, ran = persisted.get(options.name, (None, None))
        plan = plan_start(trigger, fired, ran, now, loaded.tz, jitter_key_for(loaded.config.agent.hostname,
                                                                              options.name), options.jitter)
        last = latest.get(options.name)
        rows.append({"check": options.name, "type": options.type, "schedule": describe(trigger),
                     "enabled": options.enabled, "next_due": when(plan.next_due) if options.enabled else None,
                     "last_run": when(last["started"]) if last else None,
                     "last_status": STATUS_NAMES[last["status"]] if last else None})
    emit(rows, args.format, ["check", "type", "schedule", "next_due", "last_run", "last_status"])
    return EXIT_OK


def cmd_check(args) -> int:
    loaded = _load(_config_path(args))
    if loaded is None:
        return EXIT_USAGE
    options = next((c for c in loaded.checks if c.name == args.name), None)
    if options is None:
        import difflib
        hint = difflib.get_close_matches(args.name, [c.name for c in loaded.checks], n=1)
        return _fail(f"no check named {args.name!r}" + (f" (did you mean {hint[0]!r}?)" if hint else ""))
    from agent.evaluate import WindowState, evaluate
    from agent.job import Job
    from agent.result import Status
    from agent.runner import Runner
    from checks import CHECK_TYPES

    job = Job(CHECK_TYPES[options.type](options), loaded.triggers[options.name], loaded.timeout_for(options))
    outcome = []
    runner = Runner(1, lambda *a: outcome.append(a), state_dir=loaded.db_path.parent, keep_state=False)
    runner.request(job, time.time())
    while not outcome:
        wait = runner.pump()
        time.sleep(min(0.01, wait if wait is not None else 0.01))
    _, result, started, duration, _ = outcome[0]
    verdict = evaluate(job.check, result, WindowState(), started + duration)
    row = {"check": options.name, "status": verdict.status.label, "pending": verdict.pending.label
           if verdict.pending is not Status.OK else None, "duration_seconds": round(duration, 4),
           "summary": verdict.summary, "metrics": {s.key: s.value for s in result.samples}}
    emit([row], args.format, ["check", "status", "duration_seconds", "summary"])
    if args.format == "table" and row["metrics"]:
        for key, value in row["metrics"].items():
            print(f"  {key} = {value:g}")
    if verdict.status is Status.UNKNOWN:
        return EXIT_UNKNOWN
    return EXIT_OK if verdict.status is Status.OK else EXIT_PROBLEM


def cmd_status(args) -> int:
    from agent.history import latest_runs
    conn, configured = _open_store(args)
    when = _time_format(args.format)
    rows = [{"check": r["check_name"], "type": r["type"], "status": STATUS_NAMES[r["status"]],
             "pending": STATUS_NAMES[r["pending"]] if r["pending"] else None,
             "last_run": when(r["started"]), "duration_seconds": round(r["duration"], 4), "summary": r["summary"]}
            for r in latest_runs(conn) if args.all or r["check_name"] in configured]
    emit(rows, args.format, ["check", "status", "last_run", "summary"])
    return EXIT_PROBLEM if any(r["status"] != "ok" for r in rows) else EXIT_OK


def cmd_history(args) -> int:
    from agent.history import runs, write_runs_json
    now = time.time()
    try:
        since, until = _time_range(args, now)
        statuses = [STATUS_NAMES.index(s.strip().lower()) for s in args.status.split(",")] if args.status else None
    except ValueError as exc:
        return _fail(str(exc) if "invalid time" in str(exc) else
                     f"invalid --status {args.status!r} (use ok,warning,critical,unknown)")
    if args.limit is None:
        args.limit = 100 if args.format == "table" else 0
    if args.limit < 0:
        return _fail("--limit must be 0 (no limit) or more")
    conn, _ = _open_store(args)
    query = dict(check=args.check, statuses=statuses, since=since, until=until, limit=args.limit or None)
    if args.format == "json":
        sys.stdout.flush()
        write_runs_json(conn, sys.stdout.buffer, **query)
        return EXIT_OK
    when = _time_format(args.format)
    rows = [{"check": r["check_name"], "started": when(r["started"]), "status": STATUS_NAMES[r["status"]],
             "duration_seconds": round(r["duration"], 4), "summary": r["summary"], "metrics": r["metrics"]}
            for r in runs(conn, **query)]
    emit(rows, args.format, ["started", "check", "status", "summary"])
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
