"""`maint-agent fleet targets` (Prometheus file_sd from a host list) and `maint-agent archive status|run`
(the S3 history archive, agent/store/archive.py). Registered by agent.cli.main; heavy imports stay inside the handlers."""

from __future__ import annotations

import json
import re
import sys
import time
from datetime import date, datetime
from pathlib import Path

from agent.cli.common import EXIT_OK, EXIT_PROBLEM, EXIT_USAGE, fail

DEFAULT_PORT = 9469
_LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
_HOST = re.compile(r"^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9][A-Za-z0-9_.-]*)(:\d{1,5})?$")


def register(sub, common, fmt) -> None:
    """Add `fleet` and `archive` to `sub`; `common` gives --config, `fmt` gives --format."""
    fleet = sub.add_parser("fleet", help="helpers for running many agents (Prometheus service discovery)")
    fleet_sub = fleet.add_subparsers(title="fleet commands", metavar="COMMAND")
    p = fleet_sub.add_parser(
        "targets", help="write a Prometheus file_sd JSON from a host list, one target per host with a `host` label",
        description="Hosts come from the command line or from files (one host per line, optionally followed by "
                    "k=v labels for that host; # starts a comment). A host without :port gets --port.")
    p.add_argument("--hosts", nargs="+", required=True, metavar="FILE|HOST",
                   help="host names (db1, db1:9470, [::1]) or files listing them")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"default port (default: {DEFAULT_PORT})")
    p.add_argument("--label", action="append", default=[], metavar="K=V", help="a label for every target "
                                                                                "(repeatable)")
    p.add_argument("--output", type=Path, help="write here atomically (temp file + rename); default: stdout")
    p.set_defaults(handler=cmd_fleet_targets)
    fleet.set_defaults(handler=lambda a: (fleet.print_help(), EXIT_USAGE)[1])

    archive = sub.add_parser("archive", help="the S3 history archive (config section `archive:`)")
    archive_sub = archive.add_subparsers(title="archive commands", metavar="COMMAND")
    p = archive_sub.add_parser("status", parents=[common, fmt],
                               help="each day's upload state: uploaded, failed (exit 1), pending")
    p.set_defaults(handler=cmd_archive_status)
    p = archive_sub.add_parser("run", parents=[common],
                               help="upload the pending days now (exit 1 when a day failed)")
    p.add_argument("--day", type=_day, help="upload only this completed day (YYYY-MM-DD), again if it was")
    p.set_defaults(handler=cmd_archive_run)
    archive.set_defaults(handler=lambda a: (archive.print_help(), EXIT_USAGE)[1])


# -- fleet targets --------------------------------------------------------------------------------------


class TargetError(ValueError):
    """A host or label the file_sd JSON cannot hold; the text names it (and the file line)."""


def parse_label(text: str) -> tuple[str, str]:
    """'k=v' → (k, v); raise TargetError unless k is a Prometheus label name not reserved (`__…`)."""
    name, sep, value = text.partition("=")
    if not sep or not _LABEL_NAME.match(name) or name.startswith("__"):
        raise TargetError(f"invalid label {text!r} (use name=value, name of [a-zA-Z_][a-zA-Z0-9_]*, not __…)")
    return name, value


def target_of(host: str, port: int) -> tuple[str, str]:
    """'db1' → ('db1:9469', 'db1'); 'db1:9470' → ('db1:9470', 'db1'); '[::1]' and bare '::1' → ('[::1]:9469', '::1')."""
    if host.count(":") > 1 and not host.startswith("["):
        host = f"[{host}]"
    match = _HOST.match(host)
    if not match:
        raise TargetError(f"invalid host {host!r} (a name or address, optionally :port)")
    name, given = match.group(1), match.group(2)
    if given and not 0 < int(given[1:]) < 65536:
        raise TargetError(f"invalid port in {host!r}")
    return f"{name}{given or f':{port}'}", name.strip("[]")


FILE_SUFFIXES = (".txt", ".list", ".hosts", ".lst", ".conf", ".cfg", ".csv", ".json", ".yaml", ".yml", ".ini")
"""A `--hosts` value ending so that is not present is a mistyped file, not a host of that name."""


def read_hosts(values: list[str]) -> list[tuple[str, dict[str, str]]]:
    """Each value is a host, or a file of `host [k=v …]` lines (a value with a '/' or a file suffix such as
    `.txt` is always a file, so a mistyped path fails instead of becoming a host); return (host, labels)
    in order."""
    hosts = []
    for value in values:
        path = Path(value)
        if not path.is_file() and "/" not in value:
            if value.lower().endswith(FILE_SUFFIXES):
                raise TargetError(f"no host list file {value!r} here ({Path.cwd()}): give an existing file, or a "
                                  f"host name with its port (`{value}:{DEFAULT_PORT}`) if it really is a host")
            hosts.append((value, {}))
            continue
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            words = line.split("#", 1)[0].split()
            if not words:
                continue
            try:
                hosts.append((words[0], dict(parse_label(w) for w in words[1:])))
            except TargetError as exc:
                raise TargetError(f"{path}:{number}: {exc}") from None
    return hosts


def file_sd(hosts: list[tuple[str, dict[str, str]]], port: int, labels: dict[str, str]) -> list[dict]:
    """One file_sd group per host, labels: the common ones, the host's own, and `host`; a host listed
    twice is an error (its labels would be ambiguous)."""
    groups, seen = [], {}
    for host, own in hosts:
        target, name = target_of(host, port)
        if target in seen:
            raise TargetError(f"host {host!r} is listed twice (as {seen[target]!r})")
        seen[target] = host
        groups.append({"targets": [target], "labels": {**labels, **own, "host": name}})
    return groups


def write_targets(path: Path, text: str) -> None:
    """Prometheus re-reads file_sd files on change: it must never see a half-written one. It runs as its
    own user, so the file is 0644 (host names and labels only; nothing secret)."""
    from agent.plugin.outfile import replace_file
    path.parent.mkdir(parents=True, exist_ok=True)
    with replace_file(path, mode=0o644) as out:
        out.write(text)


def cmd_fleet_targets(args) -> int:
    if not 0 < args.port < 65536:
        return fail(f"invalid --port {args.port}")
    try:
        labels = dict(parse_label(text) for text in args.label)
        groups = file_sd(read_hosts(args.hosts), args.port, labels)
    except TargetError as exc:
        return fail(str(exc))
    except (OSError, UnicodeDecodeError) as exc:
        return fail(f"cannot read the host list {getattr(exc, 'filename', None) or ''}: "
                     f"{getattr(exc, 'strerror', None) or exc}")
    text = json.dumps(groups, indent=2) + "\n"
    if args.output is None:
        sys.stdout.write(text)
        return EXIT_OK
    try:
        write_targets(args.output, text)
    except OSError as exc:
        return fail(f"cannot write {args.output}: {exc.strerror or exc}", EXIT_PROBLEM)
    print(f"{args.output}: {len(groups)} target{'s' * (len(groups) != 1)}", file=sys.stderr)
    return EXIT_OK


# -- archive ---------------------------------------------------------------------------------------------


def _day(text: str) -> date:
    import argparse
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid day {text!r} (use YYYY-MM-DD)") from None


def _archive_config(args):
    """(loaded config, its archive section), or an exit code after saying what is missing."""
    from agent.cli.common import config_path, load_or_report
    loaded = load_or_report(config_path(args), offline=getattr(args, "handler", None) is cmd_archive_status)
    if loaded is None:
        return None, EXIT_USAGE
    section = loaded.config.archive
    if section is None:
        return None, fail(f"{loaded.path}: no `archive:` section (see docs/fleet.md)")
    return (loaded, section), EXIT_OK


def cmd_archive_status(args) -> int:
    from agent.store.archive import day_states
    from agent.plugin.storefile import StoreMissing, open_readonly
    from agent.output import emit

    found, code = _archive_config(args)
    if found is None:
        return code
    loaded, section = found
    try:
        conn = open_readonly(loaded.db_path)
    except StoreMissing as exc:
        return fail(str(exc))
    try:
        states = day_states(conn, loaded.tz, datetime.now(loaded.tz).date(), section.max_days_per_run)
    finally:
        conn.close()
    rows = [{"day": s.day, "status": s.status, "uploaded_at": _when(s.uploaded_at, args.format, loaded.tz),
             "attempts": s.attempts, "lines": _lines(s.objects), "last_error": s.last_error,
             **({"objects": s.objects} if args.format == "json" else {})} for s in states]
    emit(rows, args.format, ["day", "status", "uploaded_at", "attempts", "lines", "last_error"])
    if not section.enabled:
        print("maint-agent: archive.enabled is false: the daemon uploads nothing", file=sys.stderr)
    return EXIT_PROBLEM if any(s.status == "failed" for s in states) else EXIT_OK


def _lines(objects: dict | None) -> str | None:
    if not objects:
        return None
    return ", ".join(f"{name} {info['lines']}" for name, info in objects.items())


def _when(value: float | None, fmt: str, tz) -> str | None:
    from agent.cli.common import time_format
    return time_format(fmt, tz)(value)


def cmd_archive_run(args) -> int:
    from agent.store.archive import archive_pending, day_prefix

    found, code = _archive_config(args)
    if found is None:
        return code
    loaded, section = found
    if not section.enabled and args.day is None:
        return fail("archive.enabled is false (give --day to upload one day anyway)")
    try:
        result = archive_pending(loaded.db_path, section, loaded.config.agent.hostname, loaded.tz, time.time(),
                                 day=args.day)
    except ValueError as exc:
        return fail(str(exc))
    host = loaded.config.agent.hostname
    for done in result["uploaded"]:
        where = f"s3://{section.bucket}/{day_prefix(section, host, date.fromisoformat(done['day']))}/"
        print(f"{done['day']}: uploaded {where} ({_lines(done['objects'])})")
    for failed in result["failed"]:
        print(f"{failed['day']}: FAILED: {failed['error']}")
    if result["remaining"]:
        print(f"{result['remaining']} more day(s) pending: run again, or wait for the daily upload")
    if not result["uploaded"] and not result["failed"]:
        print("nothing to upload: every completed day is archived")
    return EXIT_PROBLEM if result["failed"] else EXIT_OK
