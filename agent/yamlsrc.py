"""YAML with line numbers, so every config error can say `agent.yaml:42: checks[3].critical: …`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import yaml

Loc = tuple[str | int, ...]


@dataclass(frozen=True)
class ConfigIssue:
    """One operator-facing config error."""

    file: str
    line: int
    path: str
    message: str

    def __str__(self) -> str:
        where = f"{self.path}: " if self.path else ""
        return f"{self.file}:{self.line}: {where}{self.message}"


class ConfigError(Exception):
    """Every problem found in a config (its main file and included ones), each with file, line and YAML path;
    by file in the order the files were read, then by line."""

    def __init__(self, issues: list[ConfigIssue]):
        files = list(dict.fromkeys(i.file for i in issues))
        self.issues = sorted(issues, key=lambda i: (files.index(i.file), i.line, i.path))
        super().__init__("\n".join(str(i) for i in self.issues))


def format_path(loc: Loc) -> str:
    """('checks', 3, 'critical') → 'checks[3].critical'."""
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


@dataclass
class YamlSource:
    """Parsed YAML data plus the line of every key and list item."""

    file: str
    data: Any
    lines: dict[Loc, int]

    def line_of(self, loc: Loc) -> int:
        """The line of the deepest part of `loc` present in the file (a missing key → its parent)."""
        for end in range(len(loc), 0, -1):
            line = self.lines.get(tuple(loc[:end]))
            if line:
                return line
        return 1

    def issue(self, loc: Loc, message: str) -> ConfigIssue:
        return ConfigIssue(self.file, self.line_of(loc), format_path(loc), message)


def load_yaml(text: str, file: str) -> YamlSource:
    """Given YAML text, return data with line numbers; raise ConfigError on syntax errors or duplicate keys."""
    loader = yaml.SafeLoader(text)
    issues: list[ConfigIssue] = []
    lines: dict[Loc, int] = {(): 1}
    try:
        root = loader.get_single_node()
        data = _build(loader, root, (), lines, issues, file) if root is not None else {}
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 1
        problem = ": ".join(p for p in (exc.context, exc.problem) if p)
        raise ConfigError([ConfigIssue(file, line, "", f"invalid YAML: {problem}")]) from None
    except yaml.YAMLError as exc:
        raise ConfigError([ConfigIssue(file, 1, "", f"invalid YAML: {exc}")]) from None
    finally:
        loader.dispose()
    if issues:
        raise ConfigError(issues)
    return YamlSource(file, data, lines)


def _build(loader, node, loc: Loc, lines, issues, file) -> Any:
    if isinstance(node, yaml.MappingNode):
        loader.flatten_mapping(node)
        result: dict = {}
        for key_node, value_node in node.value:
            key = loader.construct_object(key_node, deep=True)
            if not isinstance(key, (str, int, float, bool)) or isinstance(key, bool):
                issues.append(ConfigIssue(file, key_node.start_mark.line + 1, format_path(loc),
                                          f"mapping key {key!r} must be a string"))
                continue
            key = str(key)
            child = (*loc, key)
            if key in result:
                issues.append(ConfigIssue(file, key_node.start_mark.line + 1, format_path(child),
                                          f"duplicate key (first on line {lines[child]})"))
                continue
            lines[child] = key_node.start_mark.line + 1
            result[key] = _build(loader, value_node, child, lines, issues, file)
        return result
    if isinstance(node, yaml.SequenceNode):
        items = []
        for index, item in enumerate(node.value):
            lines[(*loc, index)] = item.start_mark.line + 1
            items.append(_build(loader, item, (*loc, index), lines, issues, file))
        return items
    return loader.construct_object(node, deep=True)
