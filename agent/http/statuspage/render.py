"""Jinja2 for the status page: one environment, autoescape on for every template (SVG included)."""

from __future__ import annotations

import functools
from datetime import datetime
from pathlib import Path

from agent.plugin.units import format_duration, format_size, format_value

TEMPLATES = Path(__file__).resolve().parent / "templates"


@functools.cache
def environment():
    """Built on the first page request; templates compile once and stay cached."""
    import jinja2

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATES)), autoescape=True,
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)

    @jinja2.pass_context
    def when(ctx, ts: float | None, fmt: str = "%Y-%m-%d %H:%M") -> str:
        return "-" if ts is None else datetime.fromtimestamp(ts, ctx["tz"]).strftime(fmt)

    @jinja2.pass_context
    def ago(ctx, ts: float | None) -> str:
        """`5m ago`, `in 40s`, `now` against the request's time."""
        if ts is None:
            return "-"
        delta = ctx["now"] - ts
        if abs(delta) < 1:
            return "now"
        return f"{format_duration(delta)} ago" if delta > 0 else f"in {format_duration(-delta)}"

    env.filters.update(when=when, ago=ago, dur=lambda s: "-" if s is None else format_duration(s),
                       size=lambda b: "-" if b is None else format_size(b),
                       value=lambda v, unit: "-" if v is None else format_value(v, unit),
                       pct=lambda r: "-" if r is None else _percent(r))
    return env


def _percent(ratio: float) -> str:
    """99.93%: two decimals below 100 %, so a few failures never read as 100 %."""
    if ratio <= 0 or ratio >= 1:
        return f"{ratio * 100:.0f}%"
    text = f"{ratio * 100:.2f}"
    return (text if float(text) < 100 else "99.99") + "%"


def render(template: str, **context) -> str:
    return environment().get_template(template).render(**context)
