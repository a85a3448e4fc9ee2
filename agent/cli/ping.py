"""`maint-agent ping NAME`: a job's heartbeat signal; `ping NAME -- COMMAND ARGS…` wraps the job.

The signal goes straight into the store, so it is kept whether or not the daemon runs; a running
daemon judges the job within seconds (see checks/heartbeat.py). Silent when all is well (cron mails
whatever a job prints). Exit codes: 0 recorded, 1 not recorded (no store, not writable), 2 unknown
job; the wrapper exits with the command's own status and runs the command even when its signals
cannot be recorded — monitoring never stops the job (a job that never reports goes late, then down).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

USAGE = "maint-agent ping NAME [--start | --fail | --exit-status N] [--message TEXT] [-c CONFIG] [-- COMMAND ARGS…]"


def register(sub, common, fmt) -> None:
    p = sub.add_parser("ping", parents=[common], usage=USAGE,
                       help="a job's heartbeat signal (success by default); with `-- COMMAND ARGS…` run the job "
                            "and send start, then success or failure with its exit status and run time")
    p.add_argument("name", help="a check of type heartbeat")
    kind = p.add_mutually_exclusive_group()
    kind.add_argument("--start", action="store_true", help="the job started: its run time is measured to the "
                                                           "next success or failure")
    kind.add_argument("--fail", action="store_true", help="the job failed")
    kind.add_argument("--exit-status", type=int, metavar="N", help="the job ended with this exit status: 0 is a "
                                                                   "success, anything else a failure")
    p.add_argument("--message", metavar="TEXT", help="what the job has to say (a reason, its last lines of output; "
                                                     "up to 10 KB are kept)")
    p.set_defaults(handler=cmd_ping, command=[])


def cmd_ping(args: argparse.Namespace) -> int:
    from agent.cli.common import EXIT_OK, EXIT_PROBLEM, EXIT_USAGE, config_path, read_checks
    if args.command and (args.start or args.fail or args.exit_status is not None):
        return _say("--start, --fail and --exit-status are for a bare ping; with `-- COMMAND` the command's "
                    "exit status decides", EXIT_USAGE)
    path = config_path(args)
    try:
        db, checks = read_checks(path)
    except (OSError, ValueError, AttributeError) as exc:
        db, problem = None, f"cannot read config {path}: {exc}"
    else:
        problem = _not_a_heartbeat(args.name, checks)
    if args.command:
        return _wrap(args, db, problem)
    if problem:
        return _say(problem, EXIT_USAGE)
    from agent.plugin.heartbeat import finish_kind
    kind = "start" if args.start else finish_kind(args.exit_status, args.fail)
    error = _record(db, args.name, kind, exit_status=args.exit_status, message=args.message)
    return _say(error, EXIT_PROBLEM) if error else EXIT_OK


def _not_a_heartbeat(name: str, checks: dict[str, dict]) -> str | None:
    """None for a configured heartbeat (enabled or not: a disabled one still collects its job's signals)."""
    entry = checks.get(name)
    if entry is not None and entry.get("type") == "heartbeat":
        return None
    if entry is not None:
        return f"{name!r} is a {entry.get('type')} check, not a heartbeat"
    import difflib
    heartbeats = sorted(n for n, c in checks.items() if isinstance(n, str) and c.get("type") == "heartbeat")
    hint = difflib.get_close_matches(name, heartbeats, n=1)
    return (f"no heartbeat named {name!r}" + (f" (did you mean {hint[0]!r}?)" if hint else "")
            + (f"; configured: {', '.join(heartbeats)}" if heartbeats and not hint else "")
            + ("; none is configured (a check with type: heartbeat)" if not heartbeats else ""))


def _record(db: Path | None, name: str, kind: str, **fields) -> str | None:
    """Store one signal; return why it could not be stored, or None. A store that does not exist yet is
    not created here: a cron job running as root would leave the agent a file it cannot write."""
    import sqlite3
    import time
    if db is None:
        return "no store to record in"
    if not db.exists():
        return f"no store at {db} (has the agent run with this config?)"
    from agent.store.writer import Store
    try:
        store = Store(db)   # brings an older store up to date, as the daemon would at its next start
        try:
            store.record_signal(name, kind, time.time(), source="cli", **fields)
        finally:
            store.close()
    except (OSError, sqlite3.Error, RuntimeError) as exc:
        return f"cannot record the {kind} signal in {db}: {exc}"
    finally:
        _keep_owner(db)
    return None


def _keep_owner(db: Path) -> None:
    """Run as root, SQLite may leave a -wal/-shm file behind owned by root, which the agent's own user could
    then not open: give any such file the store's owner."""
    import os
    if os.geteuid() != 0:
        return
    try:
        owner = db.stat()
        for suffix in ("-wal", "-shm"):
            side = Path(f"{db}{suffix}")
            if side.exists() and side.stat().st_uid != owner.st_uid:
                os.chown(side, owner.st_uid, owner.st_gid)
    except OSError:
        pass


def _wrap(args: argparse.Namespace, db: Path | None, problem: str | None) -> int:
    """Run the job between a start and a finish signal; exit with its status."""
    import time
    from agent.plugin.heartbeat import finish_kind
    if problem:
        _say(f"{problem} (running the command anyway; its signals are not recorded)")
    else:
        error = _record(db, args.name, "start")
        if error:
            _say(f"{error} (running the command anyway)")
    began = time.monotonic()
    status, said = _run(args.command)
    if not problem:
        error = _record(db, args.name, finish_kind(status), exit_status=status,
                        duration=time.monotonic() - began, message=args.message or said)
        if error:
            _say(error)
    return status


def _run(command: list[str]) -> tuple[int, str | None]:
    """Run argv (no shell) with the terminal's stdin/stdout/stderr; SIGTERM and SIGHUP sent to the wrapper
    are passed on (Ctrl-C reaches both from the terminal). Returns (exit status, what went wrong or None)."""
    import signal
    import subprocess
    try:
        child = subprocess.Popen(command)
    except FileNotFoundError:
        return _say(f"command not found: {command[0]}", 127), f"command not found: {command[0]}"
    except OSError as exc:
        return _say(f"cannot run {command[0]}: {exc.strerror}", 126), f"cannot run {command[0]}: {exc.strerror}"
    passed = {sig: signal.signal(sig, lambda signum, frame: child.send_signal(signum))
              for sig in (signal.SIGTERM, signal.SIGHUP)}
    previous_int = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        code = child.wait()
    finally:
        for sig, handler in passed.items():
            signal.signal(sig, handler)
        signal.signal(signal.SIGINT, previous_int)
    if code < 0:
        name = signal.Signals(-code).name
        return 128 - code, f"killed by {name}"
    return code, None


def _say(message: str, code: int = 0) -> int:
    print(f"maint-agent: {message}", file=sys.stderr)
    return code
