"""Pending OS updates (seed 004 "System Updates", "Security patches"): type `os_updates`.

Asks apt what a `dist-upgrade` would do, as a simulation: `apt-get -s -o
Debug::NoLocking=1 dist-upgrade` needs no root, takes no lock and changes
nothing, so it can run every few hours beside unattended-upgrades or an
operator's own apt session. Every `Inst` line is a pending update; it is a
security update when one of its origins is a security archive (`-security`
suite, `Debian-Security` label).

The check does not refresh the package lists by default: Debian's
`apt-daily.timer` (and Ubuntu's) already runs `apt-get update` twice a day, and
an agent that runs `apt-get update` itself would hold apt's lock and compete
with it. `refresh: true` runs `apt-get update` first (needs root and the lock:
only for hosts without those timers).

A reboot is required when `/var/run/reboot-required` exists (written by the
packages' postinst via update-notifier-common / needrestart); its `.pkgs`
companion names the packages that asked for it.

apt-get gets an environment built from nothing (PATH, the C locale,
DEBIAN_FRONTEND=noninteractive) plus `APT_CONFIG` when the agent has it, so
`APT_CONFIG` set in the unit points apt at another configuration; a proxy
goes in that configuration (`Acquire::http::Proxy`), not in the environment.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Literal

from pydantic import Field, ValidationInfo, field_validator

from agent.plugin.child_env import child_env
from agent.plugin.fields import AbsolutePath
from agent.plugin.result import CheckResult, Status, sample, worst
from checks.base import Check, CheckContext, CheckOptions, MetricSpec
from checks.bounded_process import Finished, run_bounded

_INST_RE = re.compile(r"^Inst\s+(?P<name>\S+)\s+(?:\[(?P<installed>[^\]]*)\]\s+)?"
                      r"\((?P<candidate>\S+)\s+(?P<origins>[^\[)]*?)\s*\[[^\]]*\]\)")
_SIMULATE = ("-s", "-o", "Debug::NoLocking=1", "dist-upgrade")
_ENV = {"DEBIAN_FRONTEND": "noninteractive"}


@dataclass(frozen=True)
class PendingUpdate:
    """One `Inst` line: a package apt would upgrade (or newly install for a dist-upgrade)."""

    name: str
    installed: str | None
    candidate: str
    origins: str

    @property
    def security(self) -> bool:
        origins = self.origins.lower()
        return "-security" in origins or "debian-security" in origins

    def describe(self) -> str:
        return f"{self.name} {self.installed or '(new)'} → {self.candidate}"


def parse_simulation(text: str) -> list[PendingUpdate]:
    """Given `apt-get -s dist-upgrade` output, return its `Inst` lines in order."""
    updates = []
    for line in text.splitlines():
        match = _INST_RE.match(line)
        if match:
            updates.append(PendingUpdate(match["name"], match["installed"], match["candidate"],
                                         match["origins"].strip()))
    return updates


def apt_error(done: Finished) -> str:
    """apt's own reason (its `E:` lines), else the generic one."""
    errors = [line[2:].strip() for line in done.output.splitlines() if line.startswith("E:")]
    return "; ".join(errors)[:300] if errors else done.reason()


class OsUpdatesCheck(Check):
    """Pending apt updates, security updates among them, and whether the host waits for a reboot.

    Counts come from a simulated `apt-get dist-upgrade` against the package
    lists the distribution's apt timers keep fresh. WARNING from one pending
    security update by default; `security_critical`, `pending_warning` and
    `reboot_required` make it stricter or quieter.
    """

    TYPE = "os_updates"
    EXAMPLE = """
        - name: os-updates
          type: os_updates
          schedule: daily
          security_warning: 1
          security_critical: 10
          reboot_required: warning
    """
    METRIC_PREFIX = "os"

    class Options(CheckOptions):
        type: Literal["os_updates"]
        security_warning: int | None = Field(
            1, ge=1, description="WARNING when at least this many security updates are pending (null: never)")
        security_critical: int | None = Field(
            None, ge=1, description="CRITICAL when at least this many security updates are pending")
        pending_warning: int | None = Field(
            None, ge=1, description="WARNING when at least this many updates of any kind are pending")
        reboot_required: Literal["warning", "critical", "ok"] = Field(
            "warning", description="status while the host waits for a reboot after an update")
        reboot_required_file: AbsolutePath = Field(
            "/var/run/reboot-required", description="the flag file packages create when they need a reboot")
        apt_get: AbsolutePath = Field("/usr/bin/apt-get", description="the apt-get program (absolute path)")
        refresh: bool = Field(
            False, description="run `apt-get update` first (needs root and apt's lock); leave off where "
                               "apt-daily.timer refreshes the lists")
        max_listed: int = Field(50, ge=1, le=1000, description="packages named in the details at most")

        @field_validator("security_critical")
        @classmethod
        def _above_warning(cls, value, info: ValidationInfo):
            warning = info.data.get("security_warning")
            if value is not None and warning is not None and warning > value:
                raise ValueError(f"must not be below security_warning (got {value} < {warning})")
            return value

    METRICS = (
        MetricSpec("pending_updates", "count", "Packages a dist-upgrade would install or upgrade."),
        MetricSpec("security_updates", "count", "Pending updates coming from a security archive."),
        MetricSpec("reboot_required", "boolean", "1 while the host waits for a reboot after an update."),
    )

    def run(self, ctx: CheckContext) -> CheckResult:
        started = ctx.monotonic()
        notes, status = [], Status.OK
        if self.options.refresh:
            error = self._apt(["update", "-q"], ctx, started)[1]
            if error:
                notes.append(f"apt-get update failed: {error}")
                status = Status.WARNING
        done, error = self._apt(list(_SIMULATE), ctx, started)
        if error:
            return CheckResult.unknown(f"apt-get -s dist-upgrade: {error}")
        updates = parse_simulation(done.output)
        security = [u for u in updates if u.security]
        reboot, why = self._reboot_required()
        status = worst(status, self._status(len(updates), len(security), reboot))
        summary = f"{len(updates)} updates pending, {len(security)} security"
        if security:
            summary += " (" + ", ".join(u.name for u in security[:5]) + (", …" if len(security) > 5 else "") + ")"
        if reboot:
            summary += "; reboot required" + (f" by {', '.join(why[:5])}" if why else "")
        cap = self.options.max_listed
        details = {"security_packages": [u.describe() for u in security[:cap]],
                   "other_packages": [u.describe() for u in updates if not u.security][:cap],
                   "reboot_required_by": why[:cap]}
        samples = (sample("pending_updates", len(updates)), sample("security_updates", len(security)),
                   sample("reboot_required", 1 if reboot else 0))
        return CheckResult(status, "; ".join([summary, *notes]), samples, details)

    def _status(self, pending: int, security: int, reboot: bool) -> Status:
        opts = self.options
        status = Status.OK
        if opts.security_critical is not None and security >= opts.security_critical:
            status = Status.CRITICAL
        elif opts.security_warning is not None and security >= opts.security_warning:
            status = Status.WARNING
        if opts.pending_warning is not None and pending >= opts.pending_warning:
            status = worst(status, Status.WARNING)
        if reboot:
            status = worst(status, Status[opts.reboot_required.upper()])
        return status

    def _apt(self, args: list[str], ctx: CheckContext, started: float) -> tuple[Finished | None, str | None]:
        """Run apt-get with `args` within the run's time; return (finished, None) or (…, the reason it failed)."""
        if ctx.remaining(started) <= 0:
            return None, "out of time"
        argv = [self.options.apt_get, *args]
        try:
            done = run_bounded(argv, deadline=started + ctx.timeout, env=child_env(_ENV, passed=("APT_CONFIG",)),
                               monotonic=ctx.monotonic)
        except OSError as exc:
            return None, f"cannot run {argv[0]}: {exc.strerror}"
        if done.timed_out:
            return done, f"timed out after {ctx.timeout:g}s"
        if done.returncode != 0:
            return done, f"exit code {done.returncode}: {apt_error(done)}"
        return done, None

    def _reboot_required(self) -> tuple[bool, list[str]]:
        """Whether the flag file exists, and the packages its `.pkgs` companion names."""
        flag = self.options.reboot_required_file
        if not os.path.exists(flag):
            return False, []
        try:
            with open(flag + ".pkgs", encoding="utf-8", errors="replace") as fh:
                packages = [line.strip() for line in fh if line.strip()]
        except OSError:
            packages = []
        return True, list(dict.fromkeys(packages))
