"""systemd units (seed 004 "Application Health Checks": the services are up): type `systemd_unit`.

Asks `systemctl` (argv lists, never a shell; `--no-pager`, C locale) rather than
D-Bus: no extra dependency, the same view the operator gets at the prompt, and
a path that tests can point at a stand-in. One `systemctl show` call reads every
configured unit (its blocks come back in argument order, separated by blank
lines); one `list-units --state=failed` call counts the host's failed units, as
JSON from systemd 250 on and from the plain table before.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from agent.plugin import children
from agent.plugin.child_env import child_env
from agent.plugin.fields import AbsolutePath
from agent.plugin.result import CheckResult, Status, sample
from agent.plugin.units import format_duration
from checks.base import Check, CheckContext, CheckOptions, CountThresholds, MetricSpec, Threshold

SD_BOOTED = Path("/run/systemd/system")   # what sd_booted(3) tests: systemd is PID 1
JSON_SINCE = 250                          # systemctl tables as --output=json
PROPERTIES = ("Id", "LoadState", "ActiveState", "SubState", "Result", "NRestarts")
_UNIT_RE = re.compile(r"^[A-Za-z0-9:_.\\@][A-Za-z0-9:_.\\@-]*$")
_ACCEPTED = {"active": {"active", "reloading"}, "inactive": {"inactive"}}
_ENV = child_env({"SYSTEMD_COLORS": "0", "SYSTEMD_PAGER": "", "SYSTEMD_LESS": ""})


class SystemctlError(Exception):
    """systemctl could not be run or answered with an error; the message is for the operator."""


class SystemdUnitCheck(Check):
    """Named units are in their expected state (default active), and how many units on the host have failed.

    A unit not in its expected state, or not found, is CRITICAL and named in the
    summary. `expect` maps a unit to `active` (active or reloading), `inactive`, or
    `not-failed` (anything but failed, e.g. a oneshot run by a timer). On a host
    where systemd is not PID 1 the check is UNKNOWN.
    """

    TYPE = "systemd_unit"
    EXAMPLE = """
        - name: units
          type: systemd_unit
          every: 1m
          units: [postgresql@15-main.service, redis-server.service, nginx, backup.service]
          expect: {backup.service: not-failed}    # a oneshot job: inactive between runs is fine
    """
    METRIC_PREFIX = "systemd"

    class Options(CheckOptions, CountThresholds):
        type: Literal["systemd_unit"]
        units: tuple[str, ...] = Field(..., min_length=1,
                                       description="unit names, e.g. [beauth.service, postgresql@15-main.service]; "
                                                   "a name without a suffix means .service")
        expect: dict[str, Literal["active", "inactive", "not-failed"]] = Field(
            default_factory=dict, description="expected state per unit when not `active`, e.g. "
                                              "{backup.service: not-failed}")
        systemctl: AbsolutePath = Field("/usr/bin/systemctl", description="the systemctl program (absolute path)")

        @field_validator("units")
        @classmethod
        def _unit_names(cls, units):
            for unit in units:
                if not _UNIT_RE.match(unit):
                    raise ValueError(f"{unit!r} is not a unit name (letters, digits, ':_.\\@-'; no globs)")
            if len(set(units)) != len(units):
                raise ValueError("a unit is listed twice")
            return units

        @model_validator(mode="after")
        def _expect_listed(self):
            unlisted = sorted(set(self.expect) - set(self.units))
            if unlisted:
                raise ValueError(f"expect names units not in `units`: {', '.join(unlisted)}")
            return self

    METRICS = (
        MetricSpec("unit_active", "boolean", "1 when the unit is active (or reloading).", ("unit",)),
        MetricSpec("unit_restarts", "count", "Automatic restarts of the service since it was last started "
                                             "(NRestarts).", ("unit",)),
        MetricSpec("failed_units", "count", "Units in the failed state on the host."),
    )
    THRESHOLD = Threshold(("failed_units",), "count")

    def __init__(self, options, sd_booted: Path = SD_BOOTED):
        super().__init__(options)
        self._sd_booted = sd_booted
        self._version: int | None = None

    def run(self, ctx: CheckContext) -> CheckResult:
        if not self._sd_booted.is_dir():
            return CheckResult.unknown(f"systemd is not running on this host (no {self._sd_booted})")
        started = ctx.monotonic()
        try:
            blocks = self._show(ctx.remaining(started))
            failed = self._failed(ctx.remaining(started))
        except SystemctlError as exc:
            return CheckResult.unknown(str(exc))
        samples, wrong, states = [], [], []
        for unit, props in zip(self.options.units, blocks):
            active = props.get("ActiveState", "?")
            state = f"{unit} {active}/{props.get('SubState', '?')}"
            if props.get("Result", "success") != "success":
                state += f" ({props['Result']})"
            samples.append(sample("unit_active", 1 if active in _ACCEPTED["active"] else 0, unit=unit))
            if props.get("NRestarts", "").isdigit():
                samples.append(sample("unit_restarts", int(props["NRestarts"]), unit=unit))
            expected = self.options.expect.get(unit, "active")
            if props.get("LoadState") == "not-found":
                wrong.append(f"{unit} not found")
            elif not _as_expected(active, expected):
                wrong.append(f"{state}, expected {expected}")
            else:
                states.append(state)
        samples.append(sample("failed_units", len(failed)))
        on_host = f"{len(failed)} failed unit{'s' * (len(failed) != 1)} on the host"
        if failed:
            on_host += ": " + ", ".join(failed[:5]) + (", …" if len(failed) > 5 else "")
        details = {"failed_units": failed, "units": dict(zip(self.options.units, blocks))}
        if wrong:
            return CheckResult(Status.CRITICAL, "; ".join(wrong) + f"; {on_host}", tuple(samples), details)
        return CheckResult(Status.OK, ", ".join(states) + f"; {on_host}", tuple(samples), details)

    def _show(self, timeout: float) -> list[dict[str, str]]:
        """Given the configured units, return one {property: value} per unit, in the same order."""
        out = self._systemctl(["show", "--no-pager", f"--property={','.join(PROPERTIES)}", "--",
                               *self.options.units], timeout)
        blocks = parse_show(out)
        if len(blocks) != len(self.options.units):
            raise SystemctlError(f"systemctl show returned {len(blocks)} blocks for "
                                 f"{len(self.options.units)} units")
        return blocks

    def _failed(self, timeout: float) -> list[str]:
        """Names of the host's failed units."""
        if self._version is None:
            self._version = parse_version(self._systemctl(["--version"], timeout))
        if self._version >= JSON_SINCE:
            out = self._systemctl(["list-units", "--state=failed", "--output=json", "--no-pager"], timeout)
            try:
                return [entry["unit"] for entry in json.loads(out)]
            except (ValueError, TypeError, KeyError) as exc:
                raise SystemctlError(f"cannot parse systemctl's JSON list of failed units: {exc}") from None
        out = self._systemctl(["list-units", "--state=failed", "--no-legend", "--plain", "--no-pager"], timeout)
        return [line.split()[0] for line in out.splitlines() if line.strip()]

    def _systemctl(self, args: list[str], timeout: float) -> str:
        argv = [self.options.systemctl, *args]
        if timeout <= 0:
            raise SystemctlError(f"out of time before systemctl {args[0]}")
        try:
            with children.popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, env=_ENV) as proc:
                stdout, stderr = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise SystemctlError(f"systemctl {args[0]} timed out after {format_duration(timeout)}") from None
        except OSError as exc:
            raise SystemctlError(f"cannot run {argv[0]}: {exc.strerror}") from None
        if proc.returncode != 0:
            reason = " ".join(stderr.split())[:200] or "no message"
            if "not been booted with systemd" in reason:
                raise SystemctlError(f"systemd is not running on this host: {reason}")
            raise SystemctlError(f"systemctl {args[0]} exited with {proc.returncode}: {reason}")
        return stdout


def _as_expected(active: str, expected: str) -> bool:
    if expected == "not-failed":
        return active != "failed"
    return active in _ACCEPTED[expected]


def parse_show(text: str) -> list[dict[str, str]]:
    """Given `systemctl show` output for several units, return one {property: value} per blank-line block."""
    blocks, current = [], {}
    for line in text.splitlines():
        if not line.strip():
            if current:
                blocks.append(current)
                current = {}
            continue
        key, sep, value = line.partition("=")
        if sep:
            current[key] = value
    if current:
        blocks.append(current)
    return blocks


def parse_version(text: str) -> int:
    """Given `systemctl --version` output ("systemd 252 (252.38-1~deb12u1)"), return 252; 0 when unreadable."""
    match = re.match(r"systemd (\d+)", text)
    return int(match.group(1)) if match else 0
