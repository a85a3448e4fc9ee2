"""Host resource checks (seed 004 "System Health Monitoring"), all from psutil."""

from __future__ import annotations

import os
import re
import time
from typing import Literal

import psutil
from pydantic import Field, field_validator

from agent.plugin.result import CheckResult, Status, sample
from checks.base import (
    Check, CheckContext, CheckOptions, CountThresholds, DurationThresholds, MetricSpec,
    RatioThresholds, Threshold,
)
from agent.plugin.fields import HostPort, PositiveDuration, Regex, Size
from agent.plugin.address import split_target
from checks.net import connect_time
from agent.plugin.units import format_duration, format_size


class CpuCheck(Check):
    """CPU busy share of all cores between two runs (the first run samples for 1 s)."""

    TYPE = "cpu"
    EXAMPLE = """
        - name: cpu
          type: cpu
          every: 15s
          warning: 80%
          critical: 95%
          for: 5m                 # only a sustained breach counts
    """

    class Options(CheckOptions, RatioThresholds):
        type: Literal["cpu"]

    METRICS = (
        MetricSpec("usage_ratio", "ratio", "Share of CPU time not idle across all cores."),
        MetricSpec("iowait_ratio", "ratio", "Share of CPU time waiting for I/O."),
    )
    THRESHOLD = Threshold(("usage_ratio",), "ratio")

    def __init__(self, options):
        super().__init__(options)
        self._previous = None

    def run(self, ctx: CheckContext) -> CheckResult:
        if self._previous is None:
            self._previous = psutil.cpu_times()
            time.sleep(min(1.0, ctx.timeout / 2))
        current = psutil.cpu_times()
        before, self._previous = self._previous, current
        deltas = {f: getattr(current, f) - getattr(before, f) for f in current._fields}
        # guest time is already counted in user on Linux
        total = sum(v for k, v in deltas.items() if k not in ("guest", "guest_nice"))
        if total <= 0:
            return CheckResult.unknown("no CPU time elapsed between samples")
        idle = deltas.get("idle", 0.0) + deltas.get("iowait", 0.0)
        usage = min(1.0, max(0.0, 1 - idle / total))
        iowait = deltas.get("iowait", 0.0) / total
        return CheckResult.ok(
            f"CPU {usage:.1%} busy, iowait {iowait:.1%}",
            [sample("usage_ratio", usage), sample("iowait_ratio", iowait)])


class MemoryCheck(Check):
    """Memory in use = total − available (what the kernel can give without swapping)."""

    TYPE = "memory"
    EXAMPLE = """
        - name: memory
          type: memory
          every: 15s
          warning: 85%
          critical: 95%
          for: 5m
    """

    class Options(CheckOptions, RatioThresholds):
        type: Literal["memory"]

    METRICS = (
        MetricSpec("used_ratio", "ratio", "Share of memory not available to new processes."),
        MetricSpec("available_bytes", "bytes", "Memory available without swapping."),
        MetricSpec("total_bytes", "bytes", "Physical memory."),
    )
    THRESHOLD = Threshold(("used_ratio",), "ratio")

    def run(self, ctx: CheckContext) -> CheckResult:
        vm = psutil.virtual_memory()
        used = (vm.total - vm.available) / vm.total if vm.total else 0.0
        return CheckResult.ok(
            f"memory {used:.1%} used, {vm.available / 2**30:.1f} GiB available",
            [sample("used_ratio", used), sample("available_bytes", vm.available),
             sample("total_bytes", vm.total)])


class SwapCheck(Check):
    TYPE = "swap"
    EXAMPLE = """
        - name: swap
          type: swap
          every: 1m
          warning: 50%
          critical: 80%
    """

    class Options(CheckOptions, RatioThresholds):
        type: Literal["swap"]

    METRICS = (
        MetricSpec("used_ratio", "ratio", "Share of swap in use (0 when there is no swap)."),
        MetricSpec("used_bytes", "bytes", "Swap in use."),
        MetricSpec("total_bytes", "bytes", "Swap configured."),
    )
    THRESHOLD = Threshold(("used_ratio",), "ratio")

    def run(self, ctx: CheckContext) -> CheckResult:
        sw = psutil.swap_memory()
        if not sw.total:
            return CheckResult.ok("no swap configured", [
                sample("used_ratio", 0), sample("used_bytes", 0), sample("total_bytes", 0)])
        used = sw.used / sw.total
        return CheckResult.ok(
            f"swap {used:.1%} used of {sw.total / 2**30:.1f} GiB",
            [sample("used_ratio", used), sample("used_bytes", sw.used), sample("total_bytes", sw.total)])


class DiskCheck(Check):
    """Space and inodes per mount; the thresholds apply to both (either exhausts the disk).

    used_ratio = used / (used + free), as df shows it: blocks reserved for root
    count as unavailable.
    """

    TYPE = "disk"
    EXAMPLE = """
        - name: disk
          type: disk
          every: 1m
          mounts: [/, /var/lib/postgresql]
          warning: 80%
          critical: 90%
    """

    class Options(CheckOptions, RatioThresholds):
        type: Literal["disk"]
        mounts: tuple[str, ...] = Field(("/",), min_length=1, description="mount points (or any path on them)")

        @field_validator("mounts")
        @classmethod
        def _absolute(cls, mounts):
            for mount in mounts:
                if not mount.startswith("/"):
                    raise ValueError(f"mount {mount!r} must be an absolute path")
            return mounts

    METRICS = (
        MetricSpec("used_ratio", "ratio", "Share of the filesystem's space in use (as df shows it).", ("mount",)),
        MetricSpec("free_bytes", "bytes", "Space available to unprivileged users.", ("mount",)),
        MetricSpec("size_bytes", "bytes", "Filesystem size.", ("mount",)),
        MetricSpec("inodes_used_ratio", "ratio", "Share of inodes in use (absent when the filesystem has none).",
                   ("mount",)),
    )
    THRESHOLD = Threshold(("used_ratio", "inodes_used_ratio"), "ratio")

    def run(self, ctx: CheckContext) -> CheckResult:
        samples, parts, missing = [], [], []
        for mount in self.options.mounts:
            try:
                st = os.statvfs(mount)
            except OSError as exc:
                missing.append(f"{mount}: {exc.strerror}")
                continue
            used_blocks = (st.f_blocks - st.f_bfree) * st.f_frsize
            free = st.f_bavail * st.f_frsize
            ratio = used_blocks / (used_blocks + free) if used_blocks + free else 0.0
            samples += [sample("used_ratio", ratio, mount=mount), sample("free_bytes", free, mount=mount),
                         sample("size_bytes", st.f_blocks * st.f_frsize, mount=mount)]
            text = f"{mount} {ratio:.1%}"
            if st.f_files:
                inodes = (st.f_files - st.f_ffree) / st.f_files
                samples.append(sample("inodes_used_ratio", inodes, mount=mount))
                text += f" (inodes {inodes:.1%})"
            parts.append(text)
        if missing:
            return CheckResult.critical("cannot stat " + "; ".join(missing), samples)
        return CheckResult.ok("disk used: " + ", ".join(parts), samples)


class LoadCheck(Check):
    """Load average divided by the number of cores, so one threshold fits every host."""

    TYPE = "load"
    EXAMPLE = """
        - name: load
          type: load
          every: 30s
          period: 5m
          warning: 2
          critical: 4
          for: 10m
    """

    class Options(CheckOptions, CountThresholds):
        type: Literal["load"]
        period: Literal["1m", "5m", "15m"] = Field("5m", description="which load average the thresholds apply to")

    METRICS = (MetricSpec("per_core", "count", "Load average divided by logical CPUs.", ("period",)),)
    THRESHOLD = Threshold(("per_core",), "count")

    def threshold_samples(self, result):
        return [s for s in result.samples if s.label("period") == self.options.period]

    def run(self, ctx: CheckContext) -> CheckResult:
        cores = psutil.cpu_count() or 1
        loads = dict(zip(("1m", "5m", "15m"), (v / cores for v in psutil.getloadavg())))
        return CheckResult.ok(
            f"load per core {loads['1m']:.2f} {loads['5m']:.2f} {loads['15m']:.2f} ({cores} cores)",
            [sample("per_core", v, period=p) for p, v in loads.items()])


class NetworkLatencyCheck(Check):
    """TCP connect round trip to host:port targets; an unreachable target is CRITICAL."""

    TYPE = "network_latency"
    EXAMPLE = """
        - name: db-network
          type: network_latency
          every: 1m
          targets: ["10.0.0.5:5432", "10.0.0.6:5432"]
          warning: 20ms
          critical: 200ms
    """
    METRIC_PREFIX = "network"

    class Options(CheckOptions, DurationThresholds):
        type: Literal["network_latency"]
        targets: tuple[HostPort, ...] = Field(..., min_length=1,
                                              description="host:port, e.g. 10.0.0.5:5432 or [::1]:22")
        attempts: int = Field(3, ge=1, le=20, description="connects per target; the average is reported")
        connect_timeout: PositiveDuration = 2.0

    METRICS = (
        MetricSpec("latency_seconds", "seconds", "Average TCP connect time.", ("target",)),
        MetricSpec("reachable", "boolean", "1 when every connect attempt succeeded.", ("target",)),
    )
    THRESHOLD = Threshold(("latency_seconds",), "seconds")

    def run(self, ctx: CheckContext) -> CheckResult:
        samples, parts, failures = [], [], []
        started = ctx.monotonic()
        for target in self.options.targets:
            host, port = split_target(target)
            times, error = [], None
            for _ in range(self.options.attempts):
                timeout = min(self.options.connect_timeout, ctx.remaining(started))
                if timeout <= 0:
                    error = "out of time"
                    break
                try:
                    times.append(connect_time(host, port, timeout))
                except OSError as exc:
                    error = "timed out" if isinstance(exc, TimeoutError) else (exc.strerror or str(exc))
                    break
            samples.append(sample("reachable", 0 if error else 1, target=target))
            if error:
                failures.append(f"{target} unreachable: {error}")
                continue
            average = sum(times) / len(times)
            samples.append(sample("latency_seconds", average, target=target))
            parts.append(f"{target} {format_duration(average)}")
        if failures:
            return CheckResult.critical("; ".join(failures + parts), samples)
        return CheckResult.ok("connect " + ", ".join(parts), samples)


class ProcessCheck(Check):
    """Count of processes matching a name or a command-line regex (e.g. a worker pool below 2).

    Thresholds are minimum counts: `critical: 2` is CRITICAL when fewer than 2 match.
    """

    TYPE = "process"
    EXAMPLE = """
        - name: worker-pool
          type: process
          every: 30s
          cmdline: "celery .*worker"
          warning: 4              # fewer than 4 workers
          critical: 2
    """

    class Options(CheckOptions, CountThresholds):
        type: Literal["process"]
        process_name: str | None = Field(None, description="exact process name (comm), e.g. celery")
        cmdline: Regex | None = Field(None, description="regular expression searched in the full command line")
        user: str | None = None

    METRICS = (MetricSpec("instances", "count", "Processes matching the check's pattern."),)
    THRESHOLD = Threshold(("instances",), "count", bad_when="below")

    def run(self, ctx: CheckContext) -> CheckResult:
        opts = self.options
        if not opts.process_name and not opts.cmdline:
            return CheckResult.unknown("neither process_name nor cmdline is configured")
        pattern = re.compile(opts.cmdline) if opts.cmdline else None
        own = os.getpid()
        count = 0
        for proc in psutil.process_iter(["name", "cmdline", "username", "status"]):
            info = proc.info
            # a zombie has exited (only its parent has not reaped it yet): it is not running
            if proc.pid == own or info["status"] == psutil.STATUS_ZOMBIE:
                continue
            if opts.process_name and info["name"] != opts.process_name:
                continue
            if pattern and not pattern.search(" ".join(info["cmdline"] or ())):
                continue
            if opts.user and info["username"] != opts.user:
                continue
            count += 1
        what = opts.process_name or f"/{opts.cmdline}/"
        return CheckResult.ok(f"{count} processes match {what}", [sample("instances", count)])


class FileCheck(Check):
    """Existence, age and size of a file: the generic freshness probe. Thresholds apply to age."""

    TYPE = "file"
    EXAMPLE = """
        - name: backup-stamp
          type: file
          every: 5m
          path: /backups/database/last_backup_timestamp
          warning: 26h            # age of the file
          critical: 48h
    """

    class Options(CheckOptions, DurationThresholds):
        type: Literal["file"]
        path: str
        missing: Literal["critical", "warning", "unknown", "ok"] = "critical"
        min_size: Size | None = Field(None, description="CRITICAL when the file is smaller")

    METRICS = (
        MetricSpec("exists", "boolean", "1 when the file exists."),
        MetricSpec("age_seconds", "seconds", "Time since the file was last modified."),
        MetricSpec("size_bytes", "bytes", "File size."),
    )
    THRESHOLD = Threshold(("age_seconds",), "seconds")

    def run(self, ctx: CheckContext) -> CheckResult:
        path = self.options.path
        try:
            st = os.stat(path)
        except FileNotFoundError:
            return CheckResult(Status[self.options.missing.upper()], f"{path} does not exist",
                               (sample("exists", 0),))
        except OSError as exc:
            return CheckResult.unknown(f"cannot stat {path}: {exc.strerror}")
        age = max(0.0, ctx.wall() - st.st_mtime)
        samples = (sample("exists", 1), sample("age_seconds", age), sample("size_bytes", st.st_size))
        if self.options.min_size is not None and st.st_size < self.options.min_size:
            return CheckResult.critical(
                f"{path} is {st.st_size} bytes, below the minimum {self.options.min_size}", samples)
        return CheckResult(Status.OK, f"{path} modified {format_duration(age)} ago, {format_size(st.st_size)}",
                           samples)
