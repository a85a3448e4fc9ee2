"""Disk health from S.M.A.R.T. (seed 004 "Hardware checks", "Disk health checks"): type `smart`.

Runs `smartctl -H -A --json=c [-d TYPE] DEVICE` per device (the configured
ones, or every device `smartctl --scan-open --json` finds), through
`checks.bounded_process` (argv, own process group, killed at the deadline).
smartctl's exit status is a bit mask (`man smartctl`, RETURN VALUES), decoded
by `decode_exit`: bits 0–2 mean smartctl could not tell (UNKNOWN, with its own
message), bit 3 "DISK FAILING" and bit 4 (a pre-fail attribute at or below its
threshold now) are CRITICAL, bits 5–7 (an attribute failed in the past, errors
in the device's error or self-test log) are WARNING.

ATA disks report reallocated (5) and pending (197) sectors, temperature and
power-on hours; NVMe drives the health log's critical_warning (any bit set is
CRITICAL), percentage_used (wear) and media_errors.

smartctl needs raw access to the disks, which the hardened unit forbids
(PrivateDevices=yes, no capabilities), and the agent should never hold
CAP_SYS_RAWIO (ATA/SCSI pass-through) or CAP_SYS_ADMIN (NVMe admin commands)
itself. With `privilege: sudo` the check runs `sudo -n SMARTCTL ARGS…`, and
sudoers allows exactly those command lines, one per configured device
(`sudoers_command` writes them; an UNKNOWN result quotes the missing one), so
the only thing the agent can do as root is read SMART data of listed disks.
The unit then needs systemd/dropins/relaxed-sudo.conf (sudo is set-uid) and
systemd/dropins/smart-devices.conf (the disk device nodes; the capability
bounding set smartctl may use under sudo). `privilege: none` runs smartctl
directly, for an agent run as root outside the unit. Without either
smartctl cannot open the devices and the check is UNKNOWN with the reason,
never OK.
"""

from __future__ import annotations

import json
import os
import pwd
import re
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from agent.plugin.child_env import child_env
from agent.plugin.fields import AbsolutePath, Ratio
from agent.plugin.result import CheckResult, Sample, Status, sample, worst
from checks.base import Check, CheckContext, CheckOptions, MetricSpec
from checks.bounded_process import run_bounded

_EXIT_BITS = (
    (Status.UNKNOWN, "command line did not parse"),
    (Status.UNKNOWN, "device open failed, or it did not identify itself, or it is in a low-power mode"),
    (Status.UNKNOWN, "a SMART or other command to the disk failed, or a SMART data checksum is wrong"),
    (Status.CRITICAL, "SMART status check returned DISK FAILING"),
    (Status.CRITICAL, "a pre-fail attribute is at or below its threshold"),
    (Status.WARNING, "an attribute was at or below its threshold in the past"),
    (Status.WARNING, "the device error log contains errors"),
    (Status.WARNING, "the device self-test log contains errors"),
)
_NVME_WARNINGS = ((0x01, "available spare below threshold"), (0x02, "temperature beyond threshold"),
                  (0x04, "reliability degraded"), (0x08, "media read-only"),
                  (0x10, "volatile memory backup failed"), (0x20, "persistent memory region unreliable"))
_ATTR_REALLOCATED, _ATTR_POWER_ON_HOURS, _ATTR_PENDING = 5, 9, 197
_ATTR_TEMPERATURES = (194, 190)
_DATA_KEYS = ("smart_status", "ata_smart_attributes", "nvme_smart_health_information_log")
_ENV = child_env()
_SUDOERS_SPECIAL = re.compile(r"([\\,:=])")        # escaped with a backslash in a sudoers argument
_SUDOERS_PLAIN = re.compile(r"^/[A-Za-z0-9/._:+=,-]+$")  # device paths a sudoers rule can match exactly


def sudoers_command(argv: list[str]) -> str:
    """Given the argv sudo runs (smartctl and its arguments), return it as a sudoers Cmnd whose arguments
    match exactly: `,` `:` `=` `\\` escaped; the options only let through arguments of plain characters."""
    return " ".join(_SUDOERS_SPECIAL.sub(r"\\\1", arg) for arg in argv)


def decode_exit(code: int) -> list[tuple[Status, str]]:
    """Given smartctl's exit status, return (status, meaning) for every bit set, lowest bit first."""
    return [entry for bit, entry in enumerate(_EXIT_BITS) if code & (1 << bit)]


class SmartDevice(BaseModel):
    """A device with the smartctl device type it needs (-d), e.g. a disk behind a RAID controller."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    path: AbsolutePath = Field(..., description="the device, e.g. /dev/sda or /dev/bus/0")
    type: str | None = Field(None, pattern=r"^[a-z0-9_,+/-]+$",
                             description="smartctl -d TYPE, e.g. sat, nvme, megaraid,0")


@dataclass
class DeviceHealth:
    """What one device's smartctl run said: a status, reasons, samples."""

    device: str
    status: Status = Status.OK
    reasons: list[str] = field(default_factory=list)
    samples: list[Sample] = field(default_factory=list)
    facts: dict[str, Any] = field(default_factory=dict)

    def flag(self, status: Status, reason: str) -> None:
        self.status = worst(self.status, status)
        self.reasons.append(reason.removeprefix(f"{self.device}: "))   # smartctl often names the device

    def measure(self, name: str, value: float | None) -> None:
        if value is not None:
            self.samples.append(sample(name, value, device=self.device))
            self.facts[name] = value


def _messages(report: dict) -> str:
    """smartctl's own error messages (`smartctl.messages`)."""
    messages = (report.get("smartctl") or {}).get("messages") or []
    return "; ".join(str(m.get("string", "")).strip() for m in messages if isinstance(m, dict)
                     and m.get("severity") in ("error", "warning", None))


def _attributes(report: dict) -> dict[int, dict]:
    table = (report.get("ata_smart_attributes") or {}).get("table") or []
    return {a["id"]: a for a in table if isinstance(a, dict) and "id" in a}


def _raw(attribute: dict | None) -> int | None:
    """An ATA attribute's raw count; temperatures pack min/max into the high bytes, so take the
    leading number of the raw string (`34 (Min/Max 20/45)`)."""
    if not attribute:
        return None
    raw = attribute.get("raw") or {}
    match = re.match(r"\s*(\d+)", str(raw.get("string", "")))
    if match:
        return int(match.group(1))
    return raw.get("value") if isinstance(raw.get("value"), int) else None


class SmartCheck(Check):
    """S.M.A.R.T. health of disks: overall assessment, sector reallocation, temperature, NVMe wear.

    CRITICAL when a disk reports itself failing (or an NVMe critical warning),
    WARNING on reallocated or pending sectors, heat or wear beyond the
    configured limits; UNKNOWN when smartctl cannot read a device (it says why).
    """

    TYPE = "smart"
    EXAMPLE = """
        - name: disk-health
          type: smart
          schedule: daily
          devices: [/dev/sda, {path: /dev/nvme0, type: nvme}]
    """

    class Options(CheckOptions):
        type: Literal["smart"]
        smartctl: AbsolutePath = Field("/usr/sbin/smartctl", description="the smartctl program (absolute path, "
                                                                         "Debian package smartmontools)")
        devices: tuple[AbsolutePath | SmartDevice, ...] = Field(
            (), description="devices to check, e.g. [/dev/sda, {path: /dev/bus/0, type: 'megaraid,0'}]; "
                            "empty: every device `smartctl --scan-open` finds")
        temperature_warning: int | None = Field(60, ge=0, le=150, description="WARNING at or above this "
                                                                               "temperature (°C); spinning "
                                                                               "disks want ~50")
        temperature_critical: int | None = Field(70, ge=0, le=150, description="CRITICAL at or above this "
                                                                                "temperature (°C)")
        reallocated_warning: int | None = Field(1, ge=1, description="WARNING at or above this many "
                                                                     "reallocated sectors (ATA)")
        reallocated_critical: int | None = Field(None, ge=1, description="CRITICAL at or above this many "
                                                                         "reallocated sectors (ATA)")
        pending_warning: int | None = Field(1, ge=1, description="WARNING at or above this many sectors "
                                                                 "pending reallocation (ATA)")
        wear_warning: Ratio | None = Field(0.9, description="WARNING when an NVMe drive has used this share of "
                                                            "its rated endurance (percentage_used)")
        privilege: Literal["none", "sudo"] = Field(
            "none", description="none: run smartctl as the agent's user (root outside the unit); sudo: run "
                                "`sudo -n SMARTCTL -H -A --json=c [-d TYPE] DEVICE`, allowed per device in "
                                "sudoers, so the agent itself holds no capability (docs/deploy.md)")
        sudo: AbsolutePath = Field("/usr/bin/sudo", description="the sudo program (with privilege: sudo)")

        @field_validator("temperature_critical", "reallocated_critical")
        @classmethod
        def _above_warning(cls, value, info: ValidationInfo):
            lower = info.field_name.replace("_critical", "_warning")
            warning = info.data.get(lower)
            if value is not None and warning is not None and warning > value:
                raise ValueError(f"must not be below {lower} (got {value} < {warning})")
            return value

        @model_validator(mode="after")
        def _sudo_lists_devices(self):
            """sudoers allows exact command lines: the devices must be known in advance, not scanned."""
            if self.privilege == "sudo":
                if not self.devices:
                    raise ValueError("privilege: sudo needs `devices` (sudoers allows each device's exact "
                                     "smartctl command line; a scan cannot be allowed in advance)")
                paths = [d.path if isinstance(d, SmartDevice) else d for d in self.devices]
                for path in [self.smartctl, *paths]:
                    if not _SUDOERS_PLAIN.match(path):
                        raise ValueError(f"{path!r}: with privilege: sudo a path may hold letters, digits and "
                                         f"/._:+=,- only (a sudoers rule must match it exactly)")
            return self

    METRICS = (
        MetricSpec("healthy", "boolean", "1 when the device's SMART overall-health self-assessment passed.",
                   ("device",)),
        MetricSpec("temperature_celsius", "count", "Current device temperature in °C.", ("device",)),
        MetricSpec("power_on_seconds", "seconds", "Time the device has been powered on (from power-on hours).",
                   ("device",)),
        MetricSpec("reallocated_sectors", "count", "Reallocated sectors (ATA attribute 5).", ("device",)),
        MetricSpec("pending_sectors", "count", "Sectors waiting to be reallocated (ATA attribute 197).",
                   ("device",)),
        MetricSpec("nvme_critical_warning", "count", "NVMe health log critical_warning bits (0 when fine).",
                   ("device",)),
        MetricSpec("media_errors", "count", "NVMe unrecovered data integrity errors (media_errors).",
                   ("device",)),
        MetricSpec("wear_used_ratio", "ratio", "Share of the NVMe drive's rated endurance used "
                                               "(percentage_used; may exceed 1).", ("device",)),
    )

    def run(self, ctx: CheckContext) -> CheckResult:
        started = ctx.monotonic()
        devices: list[SmartDevice] = [d if isinstance(d, SmartDevice) else SmartDevice(path=d)
                                      for d in self.options.devices]
        if not devices:
            found, error = self._scan(ctx, started)
            if error:
                return CheckResult.unknown(error)
            if not found:
                return CheckResult.unknown("smartctl --scan-open found no devices (a VM or container, or "
                                           "PrivateDevices= hides them); list `devices` or disable the check")
            devices = found
        results = [self._device(device, ctx, started) for device in devices]
        status = worst(*(r.status for r in results))
        bad = [r for r in results if r.status is not Status.OK]
        parts = [f"{r.device}: {'; '.join(r.reasons)}" for r in bad]
        fine = [r.device for r in results if r.status is Status.OK]
        if fine:
            parts.append(f"{', '.join(fine)} healthy" if len(fine) < 6 else f"{len(fine)} devices healthy")
        samples = tuple(s for r in results for s in r.samples)
        details = {"devices": {r.device: {"status": r.status.label, "reasons": r.reasons, **r.facts}
                               for r in results}}
        return CheckResult(status, "; ".join(parts), samples, details)

    def _smartctl(self, args: list[str], ctx: CheckContext, started: float) -> tuple[int | None, dict | None,
                                                                                      str | None]:
        """Run smartctl; return (exit status, parsed JSON, None) or (…, the reason it could not be read)."""
        if ctx.remaining(started) <= 0:
            return None, None, "out of time"
        command = [self.options.smartctl, *args]
        argv = [self.options.sudo, "-n", *command] if self.options.privilege == "sudo" else command
        try:
            done = run_bounded(argv, deadline=started + ctx.timeout, env=_ENV, monotonic=ctx.monotonic)
        except OSError as exc:
            return None, None, f"cannot run {argv[0]}: {exc.strerror}"
        if done.timed_out:
            return None, None, f"smartctl timed out after {ctx.timeout:g}s"
        try:
            report = json.loads(done.output)
        except ValueError:
            refused = self._sudo_refusal(done.output, command)
            if refused:
                return done.returncode, None, refused
            return done.returncode, None, f"smartctl exit status {done.returncode}, no JSON: {done.reason()}"
        if not isinstance(report, dict):
            return done.returncode, None, "smartctl printed JSON that is not an object"
        return done.returncode, report, None

    def _sudo_refusal(self, output: str, command: list[str]) -> str | None:
        """sudo's own complaint when it would not run smartctl, and what the operator must add."""
        if self.options.privilege != "sudo":
            return None
        said = next((line.strip() for line in output.splitlines() if line.startswith("sudo:")), None)
        if said is None:
            return None
        if "no new privileges" in said:
            return f"{said} (the unit needs the drop-ins relaxed-sudo.conf and smart-devices.conf)"
        user = pwd.getpwuid(os.geteuid()).pw_name
        return f"{said} (sudoers needs: {user} ALL=(root) NOPASSWD: {sudoers_command(command)})"

    def _scan(self, ctx: CheckContext, started: float) -> tuple[list[SmartDevice], str | None]:
        code, report, error = self._smartctl(["--scan-open", "--json"], ctx, started)
        if error:
            return [], f"smartctl --scan-open: {error}"
        if code:
            return [], f"smartctl --scan-open exit status {code}: {_messages(report) or 'no message'}"
        return [SmartDevice.model_construct(path=d["name"], type=d.get("type")) for d in report.get("devices") or ()
                if isinstance(d, dict) and d.get("name")], None

    def _device(self, device: SmartDevice, ctx: CheckContext, started: float) -> DeviceHealth:
        args = ["-H", "-A", "--json=c"] + (["-d", device.type] if device.type else []) + [device.path]
        health = DeviceHealth(device.path)
        code, report, error = self._smartctl(args, ctx, started)
        if error:
            health.flag(Status.UNKNOWN, error)
            return health
        bits = decode_exit(code or 0)
        if (code or 0) & 0b11 or not any(key in report for key in _DATA_KEYS):
            health.flag(Status.UNKNOWN, _messages(report) or "; ".join(meaning for _, meaning in bits)
                        or "smartctl returned no SMART data")
            return health
        passed = (report.get("smart_status") or {}).get("passed")
        health.measure("healthy", None if passed is None else int(bool(passed)))
        for status, meaning in bits:
            health.flag(status, meaning)
        if passed is False and not (code or 0) & 8:
            health.flag(Status.CRITICAL, "SMART overall-health self-assessment FAILED")
        self._common(report, health)
        if "nvme_smart_health_information_log" in report:
            self._nvme(report["nvme_smart_health_information_log"], health)
        else:
            self._ata(report, health)
        return health

    def _common(self, report: dict, health: DeviceHealth) -> None:
        attributes = _attributes(report)
        temperature = (report.get("temperature") or {}).get("current")
        if temperature is None:
            temperature = next((_raw(attributes.get(i)) for i in _ATTR_TEMPERATURES if i in attributes), None)
        hours = (report.get("power_on_time") or {}).get("hours")
        if hours is None:
            hours = _raw(attributes.get(_ATTR_POWER_ON_HOURS))
        health.measure("temperature_celsius", temperature)
        health.measure("power_on_seconds", None if hours is None else hours * 3600)
        self._limit(health, temperature, self.options.temperature_warning, self.options.temperature_critical,
                    "temperature {value}°C")

    def _ata(self, report: dict, health: DeviceHealth) -> None:
        attributes = _attributes(report)
        reallocated, pending = _raw(attributes.get(_ATTR_REALLOCATED)), _raw(attributes.get(_ATTR_PENDING))
        health.measure("reallocated_sectors", reallocated)
        health.measure("pending_sectors", pending)
        self._limit(health, reallocated, self.options.reallocated_warning, self.options.reallocated_critical,
                    "{value} reallocated sectors")
        self._limit(health, pending, self.options.pending_warning, None, "{value} sectors pending reallocation")

    def _nvme(self, log: dict, health: DeviceHealth) -> None:
        critical = log.get("critical_warning")
        used = log.get("percentage_used")
        health.measure("nvme_critical_warning", critical)
        health.measure("media_errors", log.get("media_errors"))
        health.measure("wear_used_ratio", None if used is None else used / 100)
        if critical:
            named = [text for bit, text in _NVME_WARNINGS if critical & bit] or [f"0x{critical:02x}"]
            health.flag(Status.CRITICAL, "NVMe critical warning: " + ", ".join(named))
        if log.get("media_errors"):
            health.flag(Status.WARNING, f"{log['media_errors']} media errors")
        if used is not None and self.options.wear_warning is not None and used / 100 >= self.options.wear_warning:
            health.flag(Status.WARNING, f"{used}% of rated endurance used")

    @staticmethod
    def _limit(health: DeviceHealth, value: float | None, warning: float | None, critical: float | None,
               text: str) -> None:
        if value is None:
            return
        if critical is not None and value >= critical:
            health.flag(Status.CRITICAL, text.format(value=value))
        elif warning is not None and value >= warning:
            health.flag(Status.WARNING, text.format(value=value))
