"""The Prometheus text format (0.0.4), written byte for byte as prometheus_client's `generate_latest` writes it.

The agent renders /metrics itself rather than through prometheus_client: its registry renders every series
on every refresh, where the agent re-renders only the checks whose state changed, and the daemon need not
import the package (~1 MiB resident beyond what it loads anyway).
`tests/agent/test_exposition_reference.py` holds the two outputs side by side.
"""

from __future__ import annotations

import math

INF, MINUS_INF = float("inf"), float("-inf")


def header(name: str, kind: str, help_text: str) -> str:
    """`# HELP` and `# TYPE` lines of a family (a counter's name ends in `_total`)."""
    escaped = help_text.replace("\\", r"\\").replace("\n", r"\n")
    return f"# HELP {name} {escaped}\n# TYPE {name} {kind}\n"


def line(name: str, labels: tuple[tuple[str, str], ...], value: float) -> str:
    """One sample line. `labels` are (name, value) pairs in any order: the format sorts them by name."""
    if not labels:
        return f"{name} {go_float(value)}\n"
    inner = ",".join(f'{key}="{escape(text)}"' for key, text in sorted(labels))
    return f"{name}{{{inner}}} {go_float(value)}\n"


def escape(value: str) -> str:
    """A label value: backslash, newline and double quote escaped."""
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def go_float(value: float) -> str:
    """A value as Go prints it (and Prometheus expects): `+Inf`, `NaN`, `1.0`, `1.7e+09`."""
    d = float(value)
    if d == INF:
        return "+Inf"
    if d == MINUS_INF:
        return "-Inf"
    if math.isnan(d):
        return "NaN"
    s = repr(d)
    dot = s.find(".")
    if d > 0 and dot > 6:   # Go switches to an exponent sooner than Python
        mantissa = f"{s[0]}.{s[1:dot]}{s[dot + 1:]}".rstrip("0.")
        return f"{mantissa}e+{dot - 1:02d}"
    return s
