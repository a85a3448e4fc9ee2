"""`maint-agent check NAME` as an operator reads it: each value in its human unit (83.8GiB, 23.1%, 250µs)
beside the thresholds that applied; JSON and CSV keep base units (bytes, ratios 0..1, seconds)."""

from __future__ import annotations

from typing import Any

from agent.plugin.result import CheckResult, Sample, Status
from agent.plugin.terminal import printable
from agent.plugin.units import format_duration, format_value
from checks.base import Check

NOT_RECORDED = "not recorded: a one-off run writes nothing (the store, baselines and log offsets stay as they are)"


def thresholds(check: Check) -> dict[str, Any] | None:
    """The configured warning/critical with the metrics and side they apply to, in base units; None when
    the check has no thresholds set."""
    spec = check.THRESHOLD
    warning, critical = getattr(check.options, "warning", None), getattr(check.options, "critical", None)
    if spec is None or (warning is None and critical is None):
        return None
    return {"metrics": list(spec.metrics), "unit": spec.unit, "bad_when": spec.bad_when, "warning": warning,
            "critical": critical, "for_seconds": check.options.sustained}


def result_row(check: Check, verdict, result: CheckResult, summary: str, duration: float) -> dict[str, Any]:
    """The one-off result in base units, for JSON and CSV (and the table's first line)."""
    return {"check": check.options.name, "type": check.TYPE, "status": verdict.status.label,
            "pending": verdict.pending.label if verdict.pending is not Status.OK else None,
            "duration_seconds": round(duration, 6), "summary": summary,
            "metrics": {s.key: s.value for s in result.samples}, "thresholds": thresholds(check), "recorded": False}


def result_lines(check: Check, row: dict[str, Any], result: CheckResult) -> str:
    """The table form: status line, one line per value (human unit, and the limits where they apply),
    the thresholds and the note that nothing was recorded."""
    from agent.output import emit
    import io
    out = io.StringIO()
    status = row["status"] + (f" → {row['pending']} (pending)" if row["pending"] else "")
    emit([{**row, "status": status, "duration": format_duration(row["duration_seconds"])}], "table",
         ["check", "status", "duration", "summary"], out)
    limits = row["thresholds"]
    values = [(printable(s.key), value_text(check, s), _limit_text(check, s, limits)) for s in result.samples]
    width = max((len(key) for key, _, _ in values), default=0)
    value_width = max((len(text) for _, text, _ in values), default=0)
    for key, text, limit in values:
        out.write(f"  {key.ljust(width)}  {text.ljust(value_width)}  {limit}".rstrip() + "\n")
    out.write(f"thresholds: {threshold_text(limits)}\n{NOT_RECORDED}\n")
    return out.getvalue()


def unit_of(check: Check, s: Sample) -> str:
    """The sample's unit: the metric's declared one, or the `unit` label of a plugin's perfdata."""
    spec = check.metric_spec(s.name)
    labels = dict(s.labels)
    if labels.get("unit") in ("seconds", "bytes", "ratio"):
        return labels["unit"]
    return spec.unit if spec else "count"


def value_text(check: Check, s: Sample) -> str:
    unit = unit_of(check, s)
    if unit == "boolean":
        return "yes" if s.value else "no"
    return format_value(s.value, unit if unit in ("ratio", "seconds", "bytes") else "count")


def _limit_text(check: Check, s: Sample, limits: dict | None) -> str:
    if not limits or s.name not in limits["metrics"]:
        return ""
    sign = ">" if limits["bad_when"] == "above" else "<"
    parts = [f"{level} {sign} {format_value(limits[level], limits['unit'])}" for level in ("warning", "critical")
             if limits[level] is not None]
    return "(" + ", ".join(parts) + ")"


def threshold_text(limits: dict | None) -> str:
    """`warning > 80%, critical > 90% on used_ratio, inodes_used_ratio; held for 5m`, or `none configured`."""
    if not limits:
        return "none configured"
    sign = ">" if limits["bad_when"] == "above" else "<"
    parts = [f"{level} {sign} {format_value(limits[level], limits['unit'])}" for level in ("warning", "critical")
             if limits[level] is not None]
    held = f"; held for {format_duration(limits['for_seconds'])}" if limits["for_seconds"] else ""
    return f"{', '.join(parts)} on {', '.join(limits['metrics'])}{held}"
