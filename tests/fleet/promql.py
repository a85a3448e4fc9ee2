"""The metric names and label matchers a PromQL expression uses, for checking rules and dashboards
against the metric contract (a rule naming a metric the agent does not export never fires)."""

from __future__ import annotations

import re

from agent.http.metrics import contract

KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless",
            "offset", "inf", "nan"}
# series Prometheus makes itself: scrape health and the alert state
BUILTIN = {"up", "ALERTS", "ALERTS_FOR_STATE", "scrape_duration_seconds", "scrape_samples_scraped"}
BUILTIN_LABELS = {"instance", "job"}

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'')
_GROUPING = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_SELECTOR = re.compile(r"(?<![\w.:])([a-zA-Z_:][a-zA-Z0-9_:]*)\s*(\{[^}]*\})?\s*(\()?")
_MATCHER = re.compile(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)")


def _blank(text: str) -> str:
    """Grafana variables ($host, ${datasource}, $__rate_interval) and ranges ([5m]) are not names."""
    return re.sub(r"\[[^\]]*\]", "", re.sub(r"\$\{?\w+\}?", "x", text))


def selectors(expr: str) -> list[tuple[str, set[str]]]:
    """Given a PromQL expression, return each metric it selects with the label names its matchers use."""
    out = []
    text = _GROUPING.sub("", _blank(expr))
    strings = []
    text = _STRING.sub(lambda m: strings.append(m.group(0)) or f'"{len(strings) - 1}"', text)
    for match in _SELECTOR.finditer(text):
        name, matchers, call = match.groups()
        if call or name in KEYWORDS:
            continue
        out.append((name, set(_MATCHER.findall(matchers or ""))))
    return out


def exported() -> dict[str, set[str]]:
    """Every series name the agent exports (a counter's `_total`, a histogram's parts) → its labels."""
    names = {}
    for family in contract():
        labels = set(family.labels)
        if family.kind == "histogram":
            for part in ("_bucket", "_sum", "_count"):
                names[family.name + part] = labels | ({"le"} if part == "_bucket" else set())
        else:
            names[family.name] = labels
    return names


def unknown_in(expr: str, recorded: set[str]) -> list[str]:
    """What in `expr` is neither exported by the agent, nor recorded by our rules, nor Prometheus's own:
    names, and label names a matcher uses that the metric does not have."""
    known = exported()
    problems = []
    for name, labels in selectors(expr):
        if name in BUILTIN:
            continue
        if name in recorded:
            continue
        if name not in known:
            problems.append(f"metric {name}")
        elif labels - known[name] - BUILTIN_LABELS:
            problems.append(f"{name} has no label {sorted(labels - known[name] - BUILTIN_LABELS)}")
    return problems
