"""`maint-agent config-drift diff|accept`: review and accept the drift `config_drift` checks report.

The baseline lives where the daemon keeps it (`<state_dir>/config_drift/<check>.json`,
the state directory derived from the config like the daemon does), so an accepted
baseline is what the next scheduled run compares with. Every CLI invocation imports
this module to build its parser: the top level imports argparse only.
"""

from __future__ import annotations

import sys

COLUMNS = ["check", "path", "change"]


def register(sub, common, fmt) -> None:
    """Add `config-drift` with `diff` and `accept` to `sub`; `common` gives --config, `fmt` gives --format."""
    drift = sub.add_parser("config-drift", help="show or accept differences from the baseline of config_drift checks",
                           description=__doc__.split("\n\n")[0])
    drift_sub = drift.add_subparsers(title="config-drift commands", metavar="COMMAND")
    p = drift_sub.add_parser("diff", parents=[common, fmt],
                             help="files changed, added or removed since the accepted baseline (exit 1 when any)")
    p.add_argument("check", metavar="CHECK", help="a config_drift check's name")
    p.set_defaults(handler=cmd_diff)
    p = drift_sub.add_parser("accept", parents=[common, fmt],
                             help="record the files as they are now as the accepted baseline; prints what changed",
                             description="Record the files of the named config_drift checks (all when none is "
                                         "named) as they are now as the accepted baseline, and print what "
                                         "changed. Review first with `maint-agent config-drift diff CHECK`.")
    p.add_argument("checks", nargs="*", metavar="CHECK", help="config_drift checks (default: all of them)")
    p.set_defaults(handler=cmd_accept)
    drift.set_defaults(handler=lambda a: (drift.print_help(), 2)[1])


def _drift_checks(loaded, names: list[str]):
    """The named config_drift checks (all when none named); raise SystemExit(2) naming a wrong one."""
    from agent.cli.common import fail
    drift = {c.name: c for c in loaded.checks if c.type == "config_drift"}
    if not names:
        if not drift:
            raise SystemExit(fail(f"{loaded.path} has no config_drift check"))
        return list(drift.values())
    chosen = []
    for name in names:
        if name not in drift:
            other = next((c for c in loaded.checks if c.name == name), None)
            hint = f" (it is a {other.type} check)" if other else (
                f"; config_drift checks: {', '.join(drift)}" if drift else "")
            raise SystemExit(fail(f"no config_drift check named {name!r}{hint}"))
        chosen.append(drift[name])
    return chosen


def _current(loaded, options) -> dict:
    """The watched files as they are now; raise SystemExit(1) when they cannot be hashed."""
    import time
    from agent.cli.common import EXIT_PROBLEM, fail
    from checks.drift import OutOfTime, snapshot
    timeout = loaded.timeout_for(options)
    try:
        return snapshot(options.paths, options.max_files, time.monotonic() + timeout, time.monotonic)
    except ValueError as exc:
        raise SystemExit(fail(f"{options.name}: {exc}", EXIT_PROBLEM))
    except OutOfTime as exc:
        raise SystemExit(fail(f"{options.name}: timed out after {timeout:g}s while hashing {exc}", EXIT_PROBLEM))


def _baseline(path):
    from agent.cli.common import EXIT_PROBLEM, fail
    from checks.drift import load_baseline
    try:
        return load_baseline(path)
    except ValueError as exc:
        raise SystemExit(fail(str(exc), EXIT_PROBLEM))


def cmd_diff(args) -> int:
    from agent.cli.common import EXIT_OK, EXIT_PROBLEM, EXIT_USAGE, config_path, load_or_report
    from agent.output import emit
    from checks.drift import baseline_path, compare
    loaded = load_or_report(config_path(args))
    if loaded is None:
        return EXIT_USAGE
    options = _drift_checks(loaded, [args.check])[0]
    path = baseline_path(loaded.db_path.parent, options.name)
    baseline = _baseline(path)
    if baseline is None:
        print(f"{options.name}: no baseline recorded yet in {path} (the check records one on its first run; "
              f"or `maint-agent config-drift accept {options.name}`)", file=sys.stderr)
        return EXIT_PROBLEM
    drift = compare(baseline["files"], _current(loaded, options))
    emit([{"check": options.name, **row} for row in drift.rows()], args.format, COLUMNS)
    return EXIT_PROBLEM if drift.count else EXIT_OK


def cmd_accept(args) -> int:
    import time
    from agent.cli.common import EXIT_OK, EXIT_PROBLEM, EXIT_USAGE, config_path, load_or_report
    from agent.output import emit
    from checks.drift import baseline_path, compare, file_count, save_baseline
    loaded = load_or_report(config_path(args))
    if loaded is None:
        return EXIT_USAGE
    rows, said = [], []
    for options in _drift_checks(loaded, args.checks):
        path = baseline_path(loaded.db_path.parent, options.name)
        previous = _baseline(path)
        current = _current(loaded, options)
        try:
            save_baseline(path, current, time.time())
        except OSError as exc:
            print(f"maint-agent: {options.name}: cannot write {path}: {exc.strerror}", file=sys.stderr)
            return EXIT_PROBLEM
        if previous is None:
            said.append(f"{options.name}: baseline recorded ({file_count(len(current))})")
            continue
        drift = compare(previous["files"], current)
        rows += [{"check": options.name, **row} for row in drift.rows()]
        said.append(f"{options.name}: baseline accepted ({file_count(len(current))}, {drift.count} changed)")
    if args.format == "table":
        print("\n".join(said))
        if rows:
            emit(rows, args.format, COLUMNS)
    else:
        emit(rows, args.format, COLUMNS)
    return EXIT_OK
