"""`include:` — one file per service (conf.d/*.yaml), as fleets manage config with Ansible, Puppet or Salt.

The main file may name files by globs (`include: ["conf.d/*.yaml"]`, relative to the main file's
directory; each glob's matches sorted, globs in order, a file matched twice read once, hidden files
never matched). An included file may add entries to `checks:`, `actions:`, `reports:` and
`checklists:` — nothing else: agent-wide settings stay in one place. Its entries are appended to
the main file's, and every error in them names the included file and its own line and path
(`conf.d/postgres.yaml:12: checks[0].dsn: …`). A name defined twice across files is an error that
names both places. The merge is redone at every load, so SIGHUP picks up an added or removed file.

`include_paths` and `read_checks_fast` use only the standard library and PyYAML: the lean CLI
commands (`ping`, `status`) find checks defined in included files without validating anything.
"""

from __future__ import annotations

import glob
from pathlib import Path
from typing import Any

from agent.config.yamlsrc import ConfigError, ConfigIssue, Loc, YamlSource, load_yaml

INCLUDABLE = ("checks", "actions", "reports", "checklists")
NAMED = {"checks": ("name", "check name"), "actions": ("name", "action name"), "reports": ("name", "report name")}
CHECKLISTS = ("daily", "weekly", "monthly", "quarterly")


def include_paths(main: Path, patterns: list[str]) -> list[tuple[str, Path]]:
    """Given the main file and its `include:` globs, return (path as shown, path) of every match: relative
    globs are taken from the main file's directory; each glob's matches sorted; the main file and repeats
    skipped."""
    seen = {main.resolve()}
    found = []
    for pattern in patterns:
        full = pattern if Path(pattern).is_absolute() else str(main.parent / pattern)
        for match in sorted(glob.glob(full)):
            path = Path(match)
            if path.resolve() in seen or not path.is_file():
                continue
            seen.add(path.resolve())
            found.append((match, path))
    return found


class MergedSource:
    """The main file's YamlSource plus where each entry that came from an included file was written: an
    issue about `checks[7].dsn` is reported in the file, line and path the operator wrote it at."""

    def __init__(self, main: YamlSource):
        self.main = main
        self.file = main.file
        self.data = main.data
        self.origins: dict[Loc, tuple[YamlSource, Loc]] = {}   # merged entry → (its file, its path there)
        self.included: list[Path] = []

    def _resolve(self, loc: Loc) -> tuple[YamlSource, Loc]:
        for length in (3, 2):   # checklists.daily[4] is three parts deep, checks[7] two
            origin = self.origins.get(tuple(loc[:length]))
            if origin is not None:
                return origin[0], (*origin[1], *loc[length:])
        return self.main, loc

    def line_of(self, loc: Loc) -> int:
        source, local = self._resolve(loc)
        return source.line_of(local)

    def issue(self, loc: Loc, message: str) -> ConfigIssue:
        source, local = self._resolve(loc)
        return source.issue(local, message)

    def where(self, loc: Loc) -> str:
        """`conf.d/postgres.yaml:12`: the file and line of an entry."""
        source, local = self._resolve(loc)
        return f"{source.file}:{source.line_of(local)}"

    def first_defined(self, first: Loc, again: Loc) -> str:
        """How a duplicate's message names the first definition: its line when in the same file, else file:line."""
        source, local = self._resolve(first)
        if source is self._resolve(again)[0]:
            return f"line {source.line_of(local)}"
        return f"{source.file}:{source.line_of(local)}"


def merge_includes(source: YamlSource, issues: list[ConfigIssue]) -> MergedSource:
    """Append the entries of every included file to the main file's data (in place); problems go to `issues`."""
    merged = MergedSource(source)
    data = source.data
    patterns = data.get("include")
    if patterns is None:
        return merged
    if not isinstance(patterns, list) or not all(isinstance(p, str) and p for p in patterns):
        issues.append(source.issue(("include",), "must be a list of file globs, e.g. [\"conf.d/*.yaml\"]"))
        return merged
    for shown, path in include_paths(Path(source.file), patterns):
        included = _read(shown, path, issues)
        if included is not None:
            merged.included.append(path)
            _merge_file(merged, included, issues)
    return merged


def _read(shown: str, path: Path, issues: list[ConfigIssue]) -> YamlSource | None:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else str(exc)
        issues.append(ConfigIssue(shown, 0, "", f"cannot read included file: {reason}"))
        return None
    try:
        included = load_yaml(text, shown)
    except ConfigError as exc:
        issues.extend(exc.issues)
        return None
    if included.data is None:
        included.data = {}   # an empty file (a service with nothing configured yet) adds nothing
    if not isinstance(included.data, dict):
        issues.append(included.issue((), "an included file is a mapping: checks:, actions:, reports:, checklists:"))
        return None
    return included


def _merge_file(merged: MergedSource, included: YamlSource, issues: list[ConfigIssue]) -> None:
    data = merged.data
    for key, value in included.data.items():
        if key not in INCLUDABLE:
            where = "" if key == "include" else f" ({key}: belongs in {merged.file})"
            issues.append(included.issue((key,), f"an included file may add only checks:, actions:, reports: and "
                                                 f"checklists:{where}"))
            continue
        if value is None:
            continue
        if key == "checklists":
            _merge_checklists(merged, included, value, issues)
            continue
        if not isinstance(value, list):
            issues.append(included.issue((key,), f"must be a list of {key}"))
            continue
        target = data.get(key)
        if target is None:
            target = data[key] = []
        if not isinstance(target, list):
            continue      # the main file's own error says so
        field, what = NAMED[key]
        _append(merged, included, (key,), target, value, field, what, issues)


def _merge_checklists(merged: MergedSource, included: YamlSource, value: Any, issues: list[ConfigIssue]) -> None:
    if not isinstance(value, dict):
        issues.append(included.issue(("checklists",), "must be a mapping of daily:, weekly:, monthly:, quarterly:"))
        return
    target = merged.data.get("checklists")
    if target is None:
        target = merged.data["checklists"] = {}
    if not isinstance(target, dict):
        return
    for period, items in value.items():
        if period not in CHECKLISTS:
            issues.append(included.issue(("checklists", period), "unknown checklist (daily, weekly, monthly, "
                                                                 "quarterly)"))
            continue
        if items is None:
            continue
        if not isinstance(items, list):
            issues.append(included.issue(("checklists", period), "must be a list of items"))
            continue
        existing = target.get(period)
        if existing is None:
            existing = target[period] = []
        if isinstance(existing, list):
            _append(merged, included, ("checklists", period), existing, items, "id", f"{period} checklist item id",
                    issues)


def _append(merged: MergedSource, included: YamlSource, prefix: Loc, target: list, items: list, field: str,
            what: str, issues: list[ConfigIssue]) -> None:
    """Append an included file's entries, each remembering its origin; a name already defined (in the main
    file or an earlier included one) is an error naming both places, and the entry is left out."""
    names = {entry.get(field): index for index, entry in enumerate(target) if isinstance(entry, dict)}
    for index, entry in enumerate(items):
        local = (*prefix, index)
        name = entry.get(field) if isinstance(entry, dict) else None
        if isinstance(name, str) and name in names:
            first = (*prefix, names[name])
            issues.append(included.issue((*local, field), f"duplicate {what} '{name}' (first defined at "
                                                          f"{merged.where(first)})"))
            continue
        if isinstance(name, str):
            names[name] = len(target)
        merged.origins[(*prefix, len(target))] = (included, local)
        target.append(entry)


def read_checks_fast(main: Path, data: dict) -> dict[str, dict]:
    """Every check entry by name from the main file's data and its included files, as written (no
    validation, unreadable included files skipped): what the lean CLI commands need."""
    import yaml
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    checks = {c.get("name"): c for c in data.get("checks") or () if isinstance(c, dict)}
    patterns = data.get("include")
    if not isinstance(patterns, list):
        return checks
    for _, path in include_paths(main, [p for p in patterns if isinstance(p, str) and p]):
        try:
            with open(path, encoding="utf-8") as fh:
                included = yaml.load(fh, Loader=loader) or {}
        except (OSError, UnicodeDecodeError, yaml.YAMLError):
            continue
        if isinstance(included, dict) and isinstance(included.get("checks"), list):
            for c in included["checks"]:
                if isinstance(c, dict):
                    checks.setdefault(c.get("name"), c)
    return checks
