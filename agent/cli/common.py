"""What the command modules share: exit codes, the error line, reading the config (whole, or lean from the
YAML alone for the fast read commands), opening the store read-only, and the one time rule for input and
tables. `agent.cli.main` and every `agent.cli_*` module import from here; nothing here imports them."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import NamedTuple
from zoneinfo import ZoneInfo


EXIT_OK, EXIT_PROBLEM, EXIT_USAGE, EXIT_UNKNOWN = 0, 1, 2, 3
STATUS_NAMES = ("ok", "warning", "critical", "unknown")


def fail(message: str, code: int = EXIT_USAGE) -> int:
    print(f"maint-agent: {message}", file=sys.stderr)
    return code


def unknown_name(kind: str, name: str, known) -> str:
    """`no check named 'dsk' (did you mean 'disk'?)`, or the known names when none is close."""
    import difflib
    known = sorted({k for k in known if k})
    hint = difflib.get_close_matches(name, known, n=1)
    if hint:
        return f"no {kind} named {name!r} (did you mean {hint[0]!r}?)"
    return f"no {kind} named {name!r}" + (f"; known: {', '.join(known)}" if known else "")


def config_path(args) -> Path:
    from agent.plugin.paths import default_config
    return getattr(args, "config", None) or default_config()


def load_or_report(path: Path, offline: bool = True):
    """Full validation (imports pydantic); None after printing every error. `offline` (what every command
    but `run`, `config check` and the senders uses) checks secret references for form, without reading
    them: an operator's shell has no $CREDENTIALS_DIRECTORY, and listing checks needs no password."""
    from agent.config.load import load_config
    from agent.plugin.fields import secrets_offline
    from agent.config.yamlsrc import ConfigError
    try:
        with secrets_offline(offline):
            return load_config(path)
    except ConfigError as exc:
        for issue in exc.issues:
            print(issue, file=sys.stderr)
        return None


class ConfiguredCheck(NamedTuple):
    """A check as the config file names it (read without validating the whole file)."""

    name: str
    type: str
    enabled: bool
    interval: float | None          # seconds; None for a calendar check (`schedule:`)


class LeanConfig(NamedTuple):
    """What the lean commands need from the config, read from the YAML alone without validating the whole
    file (keeps `status` and `history` fast and free of pydantic and of the secrets)."""

    path: Path
    db: Path
    tz: ZoneInfo
    hostname: str | None
    checks: tuple[ConfiguredCheck, ...]

    @property
    def names(self) -> set[str]:
        """The enabled checks' names."""
        return {c.name for c in self.checks if c.enabled}

    @property
    def all_names(self) -> set[str]:
        return {c.name for c in self.checks}


def read_yaml(path: Path) -> dict:
    """The config file's mapping, parsed without validation; ValueError (ConfigError for an unreadable or
    non-UTF-8 file) when it cannot be read."""
    import yaml
    from agent.config.yamlsrc import read_text
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    try:
        data = yaml.load(read_text(path), Loader=loader) or {}
    except yaml.YAMLError as exc:   # callers report ValueError as "cannot read config"
        raise ValueError(f"invalid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ValueError("the config must be a mapping of sections")
    return data


def read_checks(path: Path) -> tuple[Path, dict[str, dict]]:
    """The store's path and every check entry by name (as written, disabled ones, conf.d ones too)."""
    from agent.config.includes import read_checks_fast
    from agent.plugin.paths import store_path
    data = read_yaml(path)
    agent, store = data.get("agent") or {}, data.get("store") or {}
    return store_path(path, agent.get("state_dir"), store.get("path")), read_checks_fast(path, data)


def read_fast(path: Path) -> LeanConfig:
    """The config's store, zone and checks; ValueError (or OSError) when the file cannot be read."""
    from agent.config.includes import read_checks_fast
    from agent.plugin.paths import store_path
    from agent.timefmt import agent_zone
    data = read_yaml(path)
    agent = data.get("agent") or {}
    store = data.get("store") or {}
    default = _seconds(agent.get("default_interval"), 60.0)
    checks = tuple(ConfiguredCheck(str(c["name"]), str(c.get("type") or "?"), c.get("enabled", True) is not False,
                                   None if c.get("schedule") is not None else _seconds(c.get("every"), default))
                   for c in read_checks_fast(path, data).values() if isinstance(c, dict) and c.get("name"))
    return LeanConfig(Path(path), store_path(path, agent.get("state_dir"), store.get("path")),
                      agent_zone(agent.get("timezone")), agent.get("hostname"), checks)


def _seconds(value, default: float) -> float:
    from agent.plugin.units import parse_duration
    try:
        return parse_duration(value) if value is not None else default
    except ValueError:
        return default


def lean_config(args) -> LeanConfig:
    """The lean config of --config; exits 2 with the reason when it cannot be read."""
    from agent.config.yamlsrc import ConfigError
    path = config_path(args)
    try:
        return read_fast(path)
    except ConfigError as exc:   # unreadable or not UTF-8: file:line: reason
        raise SystemExit(fail(str(exc)))
    except (OSError, ValueError, AttributeError, TypeError, KeyError) as exc:
        raise SystemExit(fail(f"cannot read config {path}: {exc}"))


def open_store(args):
    """(read-only connection, lean config); exits 2 with the reason when either is missing."""
    from agent.plugin.storefile import StoreMissing, open_readonly
    lean = lean_config(args)
    try:
        return open_readonly(lean.db), lean
    except StoreMissing as exc:
        raise SystemExit(fail(str(exc)))


def time_range(args, now: float, tz: ZoneInfo) -> tuple[float | None, float | None]:
    """`--since` and `--until` of a listing command (either may be absent), read in the agent's zone;
    ValueError names a bad one."""
    since = parse_when(args.since, now, tz) if getattr(args, "since", None) else None
    until = parse_when(args.until, now, tz) if getattr(args, "until", None) else None
    return since, until


def parse_when(text: str, now: float, tz: ZoneInfo) -> float:
    """'7d' → now − 7 days; '2026-11-01' or '2026-11-01T08:00' → that time in the agent's zone `tz`."""
    from agent.timefmt import parse_when
    return parse_when(text, now, tz)


def time_format(fmt: str, tz: ZoneInfo, now: float | None = None):
    """Tables show wall time in the agent's zone (named in their headers); JSON and CSV ISO 8601 UTC."""
    from agent.timefmt import time_format
    return time_format(fmt, tz, time.time() if now is None else now)


def column_headers(when, *columns: str) -> dict[str, str]:
    """Table titles of time columns with the zone they are in: `LAST RUN (CET)`."""
    header = getattr(when, "header", None)
    return {c: header(c) for c in columns} if header else {}


# -- commands ---------------------------------------------------------------------------------------------


# -- what several command modules' parsers and handlers share -------------------------------------------

TIME_HELP = "7d, 12h (ago), 2026-11-01 or 2026-11-01T08:00 (in the agent's time zone)"


def shared_options(parser: argparse.ArgumentParser, *, output_format: bool) -> argparse.ArgumentParser:
    """--config (and --format) for a subcommand of a command that has them too, without defaults: a value
    given before the subcommand's word (`checklist -c FILE weekly`) is kept, not reset by the subcommand.
    Declared afresh: parsers built with `parents=` share the parent's option objects and defaults."""
    from pathlib import Path
    from agent.output import FORMATS
    parser.add_argument("-c", "--config", type=Path, default=argparse.SUPPRESS,
                        help="config file (default: as for the other commands)")
    if output_format:
        parser.add_argument("--format", choices=FORMATS, default=argparse.SUPPRESS,
                            help="output format (default: table)")
    return parser


def _default_author() -> str:
    """The person behind sudo, not root: entries say who did the work."""
    import getpass
    import os
    try:
        return os.environ.get("SUDO_USER") or getpass.getuser()
    except (KeyError, OSError):   # a uid without a passwd entry (containers)
        return f"uid {os.getuid()}"


def author_name(given: str | None) -> str:
    """Who did it: `--by`, else the person behind sudo; raise ValueError for more than one short line."""
    author = (given or "").strip() or _default_author()
    if "\n" in author or len(author) > 100:
        raise ValueError("--by must be one short line (a name)")
    return author
