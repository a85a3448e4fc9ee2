"""Nagios/monitoring-plugins compatible commands: exit code is the status, perfdata are samples.

Runs an argv list (never a shell), in its own process group so a timeout kills
the plugin and everything it started; output is capped so a chatty plugin
cannot fill memory or the store.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field

from agent.plugin.child_env import child_env
from agent.plugin.result import SUMMARY_CAP_CHARS, CheckResult, Status, sample
from agent.plugin.fields import AbsoluteArgv, Secret, SecretStr
from checks.base import Check, CheckContext, CheckOptions, MetricSpec
from checks.bounded_process import OUTPUT_CAP_BYTES, run_bounded  # noqa: F401 (the cap plugins are held to)


_PERF_RE = re.compile(r"""('(?:[^']|'')+'|[^\s=']+)=([-+]?[\d.]+(?:[eE][-+]?\d+)?)([a-zA-Z%]*)""")
_UOM = {"s": ("seconds", 1.0), "ms": ("seconds", 1e-3), "us": ("seconds", 1e-6),
        "%": ("ratio", 0.01), "B": ("bytes", 1), "KB": ("bytes", 1024), "MB": ("bytes", 2**20),
        "GB": ("bytes", 2**30), "TB": ("bytes", 2**40), "kB": ("bytes", 1024), "KiB": ("bytes", 1024),
        "MiB": ("bytes", 2**20), "GiB": ("bytes", 2**30), "TiB": ("bytes", 2**40),
        "c": ("count", 1), "": ("count", 1)}


class NagiosCheck(Check):
    TYPE = "nagios"
    EXAMPLE = """
        - name: load-plugin
          type: nagios
          every: 5m
          command: [/usr/lib/nagios/plugins/check_load, -r, -w, "2,1.5,1.2", -c, "4,3,2"]
    """

    class Options(CheckOptions):
        type: Literal["nagios"]
        command: AbsoluteArgv = Field(description="argv list, e.g. [/usr/lib/nagios/plugins/check_load, -w, '5,4,3']")
        env: dict[str, SecretStr] = Field(
            default_factory=dict, description="extra environment (PATH, LANG=C and LC_ALL=C are set; nothing "
                                              "else of the agent's); values may be "
                                              "secret references such as ${file:/etc/maint-agent/pgpass}")

    METRICS = (
        MetricSpec("perfdata_value", "count",
                   "A plugin's performance data value in base units (seconds, bytes, ratio).", ("label", "unit")),
        MetricSpec("exit_code", "count", "The plugin's exit code."),
    )

    def run(self, ctx: CheckContext) -> CheckResult:
        try:
            extra = {key: Secret(value).reveal() for key, value in self.options.env.items()}
        except (OSError, LookupError) as exc:
            return CheckResult.unknown(f"cannot read a secret for the plugin's environment: {exc}")
        env = child_env(extra)
        try:
            done = run_bounded(list(self.options.command), deadline=ctx.monotonic() + ctx.timeout, env=env,
                               monotonic=ctx.monotonic)
        except OSError as exc:
            return CheckResult.unknown(f"cannot run {self.options.command[0]}: {exc.strerror}")
        if done.timed_out:
            return CheckResult.unknown(f"plugin timed out after {ctx.timeout:g}s")
        code, text = done.returncode, done.output
        first_line, _, rest = text.partition("\n")
        summary_part, _, perf_text = first_line.partition("|")
        perf_text += " " + rest.partition("|")[2]
        perfdata, duplicates = parse_perfdata(perf_text)
        samples = [sample("exit_code", code)] + perfdata
        status = Status(code) if code in (0, 1, 2, 3) else Status.UNKNOWN
        summary = summary_part.strip()[:SUMMARY_CAP_CHARS] or f"exit code {code}, no output"
        if code < 0:
            summary = f"plugin killed by signal {-code}"
        details = {"output": text[:4096]}
        if duplicates:
            details["perfdata_duplicates"] = duplicates
        return CheckResult(status, summary, tuple(samples), details)


def _unquote(label: str) -> str:
    """'time spent' → time spent; a quote inside a quoted label is doubled ('it''s')."""
    return label[1:-1].replace("''", "'") if label.startswith("'") else label


def parse_perfdata(text: str) -> tuple[list, list[str]]:
    """Given Nagios perfdata (`time=0.2s;1;2 size=10KB`), return samples in base units and the labels that
    appeared more than once: a label is one series, so its first value counts and the repeats are named."""
    samples, seen, duplicates = [], set(), []
    for quoted, value, uom in _PERF_RE.findall(text):
        label = _unquote(quoted)
        if label in seen:
            if label not in duplicates:
                duplicates.append(label)
            continue
        seen.add(label)
        unit, factor = _UOM.get(uom, ("count", 1.0))
        samples.append(sample("perfdata_value", float(value) * factor, label=label, unit=unit))
    return samples, duplicates
