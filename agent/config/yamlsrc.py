"""YAML with line numbers, so every config error can say `agent.yaml:42: checks[3].critical: …`.

Loading is bounded: a config is a few hundred nodes, so a file whose aliases expand to
more than MAX_ALIASED_NODES nodes (a "billion laughs" of a few hundred bytes would
otherwise build hundreds of millions), an alias inside its own anchor, or nesting
deeper than MAX_DEPTH is refused at the line that does it, before anything is built.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

Loc = tuple[str | int, ...]

MAX_ALIASED_NODES = 10_000
MAX_DEPTH = 64


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


def read_text(path: Path, what: str = "config") -> str:
    """Given a config file's path, return its text; raise ConfigError when it cannot be read or is not
    UTF-8 (at the line of the first bad byte, which an editor can jump to)."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError([ConfigIssue(str(path), 0, "", f"cannot read {what}: {exc.strerror or exc}")]) from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        message = (f"cannot read {what}: byte 0x{data[exc.start]:02x} in column {column} is not UTF-8 "
                   "(save the file as UTF-8)")
        raise ConfigError([ConfigIssue(str(path), line, "", message)]) from None


class _BoundedLoader(yaml.SafeLoader):
    """A SafeLoader that counts, while composing, how many nodes the aliases stand for, and refuses
    a document that would expand beyond MAX_ALIASED_NODES, refers to itself or nests beyond MAX_DEPTH.

    Every composed node carries `expanded`: itself plus everything below it, aliases counted in full.
    An anchor gets it only once complete, so an alias without it points into its own anchor.
    """

    def __init__(self, text: str, file: str):
        super().__init__(text)
        self.file, self.aliased, self.depth = file, 0, 0

    def compose_node(self, parent, index):
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent):
            self._count_alias(event)
            return super().compose_node(parent, index)
        self.depth += 1
        try:
            if self.depth > MAX_DEPTH:
                raise self._refuse(event, f"nested more than {MAX_DEPTH} levels deep")
            node = super().compose_node(parent, index)
        finally:
            self.depth -= 1
        node.expanded = 1 + sum(child.expanded for child in _children(node))
        return node

    def _count_alias(self, event) -> None:
        target = self.anchors.get(event.anchor)
        if target is None:
            return   # an undefined alias: the composer says so
        size = getattr(target, "expanded", None)
        if size is None:
            raise self._refuse(event, f"alias *{event.anchor} is inside its own anchor (a recursive alias)")
        self.aliased += size
        if self.aliased > MAX_ALIASED_NODES:
            raise self._refuse(event, f"too many YAML aliases: they would expand to more than {MAX_ALIASED_NODES:,} "
                                      "values (write the values out, or use fewer aliases)")

    def _refuse(self, event, message: str) -> ConfigError:
        return ConfigError([ConfigIssue(self.file, event.start_mark.line + 1, "", message)])


def _children(node) -> list:
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    return node.value if isinstance(node, yaml.SequenceNode) else []


def load_yaml(text: str, file: str) -> YamlSource:
    """Given YAML text, return data with line numbers; raise ConfigError on syntax errors, duplicate keys
    and documents too costly to build (aliases expanding beyond MAX_ALIASED_NODES, nesting beyond MAX_DEPTH)."""
    loader = _BoundedLoader(text, file)
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
