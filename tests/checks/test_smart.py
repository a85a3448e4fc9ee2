"""smart: disk health from smartctl's JSON — recorded ATA and NVMe reports through a stand-in, and the real smartctl.

No block device is visible in this sandbox (a container without /dev/sd* or
/dev/nvme*), so the disk reports come from a stand-in `smartctl` (configured
by path, as an operator configures the real one) that prints recordings in
smartctl 7.3's JSON schema (`smartctl -H -A --json=c`): a healthy SATA hard
disk, a failing one (DISK FAILING, reallocated and pending sectors, exit
status 24), a healthy NVMe drive and a worn NVMe drive with a critical warning
(exit status 8), and `--scan-open --json` listing two of them. Its exit codes
are smartctl's bit masks. It logs its calls so the tests see the device type
passed on.

The real /usr/sbin/smartctl runs too: against a device that does not exist it
must turn into UNKNOWN carrying smartctl's own message.

The operator story: a disk that reports itself failing, or an NVMe drive out
of spare blocks, is CRITICAL and named; a hot or remapping disk warns; a disk
smartctl cannot read is UNKNOWN with the reason, never OK.
"""

from __future__ import annotations

import json
import os
import pwd
import re
import stat
import subprocess
import time
from pathlib import Path

import pytest

from agent.config.yamlsrc import ConfigError

from agent.config.load import parse_config
from agent.plugin.result import CheckResult, Status
from checks.base import CheckContext
from checks.smart import SmartCheck, decode_exit
from tests.metrics_contract import assert_family_contract

SMARTCTL = "/usr/sbin/smartctl"


def _smartctl(argv: list[str], exit_status: int) -> dict:
    return {"version": [7, 3], "svn_revision": "5338", "platform_info": "x86_64-linux-6.1.0-31-amd64",
            "build_info": "(local build)", "argv": ["smartctl", *argv], "exit_status": exit_status}


def _attr(id_: int, name: str, value: int, worst: int, thresh: int, raw: int, raw_string: str | None = None,
          prefailure: bool = False, when_failed: str = "") -> dict:
    flags = 0x33 if prefailure else 0x32
    return {"id": id_, "name": name, "value": value, "worst": worst, "thresh": thresh, "when_failed": when_failed,
            "flags": {"value": flags, "string": ("PO--CK " if prefailure else "-O--CK "), "prefailure": prefailure,
                      "updated_online": True, "performance": False, "error_rate": False, "event_count": True,
                      "auto_keep": True},
            "raw": {"value": raw, "string": raw_string if raw_string is not None else str(raw)}}


def ata_report(device: str, passed: bool, exit_status: int, reallocated: int, pending: int, temperature: int,
               hours: int, failed_now: bool = False) -> dict:
    """A SATA hard disk as `smartctl -H -A --json=c -d sat DEVICE` reports it (smartctl 7.3)."""
    table = [
        _attr(1, "Raw_Read_Error_Rate", 200, 200, 51, 0, prefailure=True),
        _attr(3, "Spin_Up_Time", 177, 175, 21, 8141, prefailure=True),
        _attr(4, "Start_Stop_Count", 100, 100, 0, 152),
        _attr(5, "Reallocated_Sector_Ct", 5 if failed_now else 200, 5 if failed_now else 200, 140, reallocated,
              prefailure=True, when_failed="now" if failed_now else ""),
        _attr(7, "Seek_Error_Rate", 200, 200, 0, 0),
        _attr(9, "Power_On_Hours", 39, 39, 0, hours),
        _attr(12, "Power_Cycle_Count", 100, 100, 0, 150),
        _attr(194, "Temperature_Celsius", 112, 101, 0, temperature + (22 << 16) + (49 << 32),
              f"{temperature} (Min/Max 22/49)"),
        _attr(196, "Reallocated_Event_Count", 200, 200, 0, min(reallocated, 200)),
        _attr(197, "Current_Pending_Sector", 200, 200, 0, pending),
        _attr(198, "Offline_Uncorrectable", 100, 253, 0, 0),
        _attr(199, "UDMA_CRC_Error_Count", 200, 200, 0, 0),
    ]
    argv = ["-H", "-A", "--json=c", "-d", "sat", device]
    return {"json_format_version": [1, 0], "smartctl": _smartctl(argv, exit_status),
            "local_time": {"time_t": 1736074800, "asctime": "Sun Jan  5 11:00:00 2025 UTC"},
            "device": {"name": device, "info_name": f"{device} [SAT]", "type": "sat", "protocol": "ATA"},
            "smart_status": {"passed": passed},
            "ata_smart_attributes": {"revision": 16, "table": table},
            "power_on_time": {"hours": hours}, "power_cycle_count": 150, "temperature": {"current": temperature}}


def nvme_report(device: str, exit_status: int, critical_warning: int, percentage_used: int, media_errors: int,
                temperature: int, hours: int) -> dict:
    """An NVMe drive as `smartctl -H -A --json=c -d nvme DEVICE` reports it (smartctl 7.3)."""
    status: dict = {"passed": critical_warning == 0, "nvme": {"value": critical_warning}}
    if critical_warning & 1:
        status["nvme"]["spare_below_threshold"] = True
    log = {"critical_warning": critical_warning, "temperature": temperature,
           "available_spare": 100 if critical_warning == 0 else 4, "available_spare_threshold": 10,
           "percentage_used": percentage_used, "data_units_read": 48215877, "data_units_written": 61034122,
           "host_reads": 512036811, "host_writes": 1033826145, "controller_busy_time": 2911,
           "power_cycles": 88, "power_on_hours": hours, "unsafe_shutdowns": 23, "media_errors": media_errors,
           "num_err_log_entries": media_errors, "warning_temp_time": 0, "critical_comp_time": 0,
           "temperature_sensors": [temperature, temperature + 8]}
    argv = ["-H", "-A", "--json=c", "-d", "nvme", device]
    return {"json_format_version": [1, 0], "smartctl": _smartctl(argv, exit_status),
            "local_time": {"time_t": 1736074800, "asctime": "Sun Jan  5 11:00:00 2025 UTC"},
            "device": {"name": device, "info_name": device, "type": "nvme", "protocol": "NVMe"},
            "smart_status": status, "nvme_smart_health_information_log": log,
            "temperature": {"current": temperature}, "power_cycle_count": 88, "power_on_time": {"hours": hours}}


DEVICES = {
    "sda": (ata_report("/dev/sda", True, 0, reallocated=0, pending=0, temperature=34, hours=31577), 0),
    "sdb": (ata_report("/dev/sdb", False, 24, reallocated=1832, pending=24, temperature=47, hours=52003,
                       failed_now=True), 24),
    "nvme0": (nvme_report("/dev/nvme0", 0, 0, percentage_used=3, media_errors=0, temperature=38, hours=8120), 0),
    "nvme1": (nvme_report("/dev/nvme1", 8, 1, percentage_used=97, media_errors=3, temperature=51, hours=40210), 8),
}
SCAN = {"json_format_version": [1, 0], "smartctl": _smartctl(["--scan-open", "--json"], 0),
        "devices": [{"name": "/dev/sda", "info_name": "/dev/sda [SAT]", "type": "sat", "protocol": "ATA"},
                    {"name": "/dev/nvme0", "info_name": "/dev/nvme0", "type": "nvme", "protocol": "NVMe"}]}
OPEN_FAILED = {"json_format_version": [1, 0],   # recorded from the real smartctl 7.3 (-d sat, no such device)
               "smartctl": {**_smartctl(["-H", "-A", "--json=c", "-d", "sat", "/dev/DEV"], 2),
                            "messages": [{"string": "Smartctl open device: /dev/DEV [SAT] failed: No such device",
                                          "severity": "error"}]},
               "local_time": {"time_t": 1736074800, "asctime": "Sun Jan  5 11:00:00 2025 UTC"}}

STAND_IN = r"""#!/bin/sh
# smartctl stand-in: replays smartctl 7.3 JSON recordings; see test_smart.py.
dir="$(dirname "$0")"
printf '%s\n' "$*" >> "$dir/calls"
[ -e "$dir/hang" ] && exec sleep 30
if [ "$1" = "--scan-open" ]; then cat "$dir/scan.json"; exit 0; fi
for device; do :; done
name="$(basename "$device")"
if [ -f "$dir/devices/$name.json" ]; then cat "$dir/devices/$name.json"; exit "$(cat "$dir/devices/$name.rc")"; fi
sed "s|/dev/DEV|$device|g" "$dir/open-failed.json"
exit 2
"""


class StandIn:
    def __init__(self, root: Path):
        self.root = root
        (root / "devices").mkdir(parents=True)
        for name, (report, code) in DEVICES.items():
            self.record(name, report, code)
        (root / "scan.json").write_text(json.dumps(SCAN))
        (root / "open-failed.json").write_text(json.dumps(OPEN_FAILED, separators=(",", ":")))
        self.path = root / "smartctl"
        self.path.write_text(STAND_IN)
        self.path.chmod(self.path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)

    def record(self, name: str, report: dict, code: int) -> None:
        (self.root / "devices" / f"{name}.json").write_text(json.dumps(report, separators=(",", ":")))
        (self.root / "devices" / f"{name}.rc").write_text(str(code))

    def calls(self) -> list[str]:
        path = self.root / "calls"
        return path.read_text().splitlines() if path.exists() else []

    def check(self, **options) -> SmartCheck:
        return SmartCheck(SmartCheck.Options.model_validate(
            {"name": "disks", "type": "smart", "smartctl": str(self.path), **options}))


@pytest.fixture
def smartctl(tmp_path) -> StandIn:
    return StandIn(tmp_path / "smartctl-standin")


def run(check: SmartCheck, timeout: float = 10.0) -> CheckResult:
    return check.run(CheckContext(timeout=timeout))


def value(result: CheckResult, name: str, device: str) -> float | None:
    return next((s.value for s in result.samples if s.name == name and s.label("device") == device), None)


# --- disk reports ---------------------------------------------------------------------------------------------

def test_smart_scanned_devices_healthy_ok(smartctl):
    result = run(smartctl.check())
    assert result.status is Status.OK, result.summary
    assert result.summary == "/dev/sda, /dev/nvme0 healthy"
    assert smartctl.calls() == ["--scan-open --json", "-H -A --json=c -d sat /dev/sda",
                                "-H -A --json=c -d nvme /dev/nvme0"]
    assert value(result, "healthy", "/dev/sda") == 1
    assert value(result, "temperature_celsius", "/dev/sda") == 34
    assert value(result, "power_on_seconds", "/dev/sda") == 31577 * 3600
    assert value(result, "reallocated_sectors", "/dev/sda") == 0
    assert value(result, "pending_sectors", "/dev/sda") == 0
    assert value(result, "wear_used_ratio", "/dev/nvme0") == pytest.approx(0.03)
    assert value(result, "nvme_critical_warning", "/dev/nvme0") == 0
    assert value(result, "media_errors", "/dev/nvme0") == 0
    assert value(result, "reallocated_sectors", "/dev/nvme0") is None


def test_smart_failing_ata_disk_critical_with_reasons(smartctl):
    result = run(smartctl.check(devices=["/dev/sda", "/dev/sdb"]))
    assert result.status is Status.CRITICAL
    assert result.summary == ("/dev/sdb: SMART status check returned DISK FAILING; a pre-fail attribute is at or "
                              "below its threshold; 1832 reallocated sectors; 24 sectors pending reallocation; "
                              "/dev/sda healthy")
    assert value(result, "healthy", "/dev/sdb") == 0
    assert value(result, "reallocated_sectors", "/dev/sdb") == 1832
    assert result.details["devices"]["/dev/sdb"]["status"] == "critical"
    assert "--scan-open --json" not in smartctl.calls()


def test_smart_nvme_critical_warning_and_wear(smartctl):
    result = run(smartctl.check(devices=["/dev/nvme1"]))
    assert result.status is Status.CRITICAL
    assert result.summary == ("/dev/nvme1: SMART status check returned DISK FAILING; NVMe critical warning: "
                              "available spare below threshold; 3 media errors; 97% of rated endurance used")
    assert value(result, "nvme_critical_warning", "/dev/nvme1") == 1
    assert value(result, "wear_used_ratio", "/dev/nvme1") == pytest.approx(0.97)


def test_smart_reallocated_sectors_warning_without_failure(smartctl):
    smartctl.record("sdc", ata_report("/dev/sdc", True, 0, reallocated=8, pending=0, temperature=36, hours=100), 0)
    result = run(smartctl.check(devices=["/dev/sdc"]))
    assert result.status is Status.WARNING
    assert result.summary == "/dev/sdc: 8 reallocated sectors"
    assert run(smartctl.check(devices=["/dev/sdc"], reallocated_critical=5)).status is Status.CRITICAL
    assert run(smartctl.check(devices=["/dev/sdc"], reallocated_warning=10)).status is Status.OK


def test_smart_temperature_thresholds(smartctl):
    assert run(smartctl.check(devices=["/dev/sda"], temperature_warning=34)).summary == "/dev/sda: temperature 34°C"
    assert run(smartctl.check(devices=["/dev/sda"], temperature_warning=30,
                              temperature_critical=34)).status is Status.CRITICAL
    assert run(smartctl.check(devices=["/dev/sda"], temperature_warning=None,
                              temperature_critical=None)).status is Status.OK


def test_smart_past_threshold_failure_exit_bit_warning(smartctl):
    """Exit status bit 5: healthy now, but an attribute was at or below its threshold in the past."""
    report, _ = DEVICES["sda"]
    smartctl.record("sdd", report, 32)
    result = run(smartctl.check(devices=["/dev/sdd"]))
    assert result.status is Status.WARNING
    assert result.summary == "/dev/sdd: an attribute was at or below its threshold in the past"


def test_smart_device_type_option_passed(smartctl):
    result = run(smartctl.check(devices=[{"path": "/dev/sda", "type": "megaraid,0"}]))
    assert result.status is Status.OK
    assert smartctl.calls() == ["-H -A --json=c -d megaraid,0 /dev/sda"]


def test_smart_open_failed_unknown_with_smartctl_message(smartctl):
    result = run(smartctl.check(devices=[{"path": "/dev/sdx", "type": "sat"}, "/dev/sda"]))
    assert result.status is Status.UNKNOWN
    assert result.summary == "/dev/sdx: Smartctl open device: /dev/sdx [SAT] failed: No such device; /dev/sda healthy"
    assert value(result, "healthy", "/dev/sdx") is None


def test_smart_scan_finds_nothing_unknown(smartctl):
    (smartctl.root / "scan.json").write_text(json.dumps({**SCAN, "devices": []}))
    result = run(smartctl.check())
    assert result.status is Status.UNKNOWN
    assert result.summary.startswith("smartctl --scan-open found no devices")


def test_smart_hanging_smartctl_unknown_within_timeout(smartctl):
    (smartctl.root / "hang").touch()
    started = time.monotonic()
    result = run(smartctl.check(devices=["/dev/sda"]), timeout=1.0)
    assert time.monotonic() - started < 3
    assert result.status is Status.UNKNOWN
    assert result.summary == "/dev/sda: smartctl timed out after 1s"


def test_smart_smartctl_missing_unknown(tmp_path):
    check = SmartCheck(SmartCheck.Options.model_validate(
        {"name": "disks", "type": "smart", "smartctl": str(tmp_path / "none"), "devices": ["/dev/sda"]}))
    result = run(check)
    assert result.status is Status.UNKNOWN
    assert result.summary == f"/dev/sda: cannot run {tmp_path}/none: No such file or directory"


def test_smart_metric_contract(smartctl):
    check = smartctl.check(devices=["/dev/sda", "/dev/sdb", "/dev/nvme0", "/dev/nvme1"])
    assert_family_contract(check, [run(check)])


def test_decode_exit_bits():
    assert decode_exit(0) == []
    assert [s for s, _ in decode_exit(2)] == [Status.UNKNOWN]
    assert [s for s, _ in decode_exit(24)] == [Status.CRITICAL, Status.CRITICAL]
    assert [m for _, m in decode_exit(64 | 128)] == ["the device error log contains errors",
                                                     "the device self-test log contains errors"]


def test_smart_config_critical_below_warning_refused():
    text = "checks:\n  - name: disks\n    type: smart\n    temperature_warning: 60\n    temperature_critical: 50\n"
    with pytest.raises(ConfigError) as err:
        parse_config(text, "agent.yaml")
    assert [str(i) for i in err.value.issues] == [
        "agent.yaml:5: checks[0].temperature_critical: must not be below temperature_warning (got 50 < 60)"]


# --- privilege: sudo (the agent holds no capability; sudo runs smartctl as root) -------------------------------

FAKE_SUDO = """#!/bin/sh
# sudo stand-in: records its argv, insists on -n (never a password prompt), runs the rest
printf '%s\\n' "$*" >> "$(dirname "$0")/sudo-calls"
[ "$1" = "-n" ] || { echo "sudo: a password is required" >&2; exit 1; }
shift
exec "$@"
"""


def fake_sudo(directory: Path, text: str = FAKE_SUDO) -> Path:
    sudo = directory / "sudo"
    sudo.write_text(text)
    sudo.chmod(0o755)
    return sudo


def test_smart_privilege_sudo_runs_exact_argv_through_sudo_n(smartctl, tmp_path):
    sudo = fake_sudo(tmp_path)
    result = run(smartctl.check(devices=["/dev/sda", {"path": "/dev/bus/0", "type": "megaraid,0"}],
                                privilege="sudo", sudo=str(sudo)))
    assert (tmp_path / "sudo-calls").read_text().splitlines() == [
        f"-n {smartctl.path} -H -A --json=c /dev/sda", f"-n {smartctl.path} -H -A --json=c -d megaraid,0 /dev/bus/0"]
    assert value(result, "healthy", "/dev/sda") == 1


def test_smart_privilege_sudo_refused_unknown_naming_the_sudoers_line(smartctl, tmp_path):
    sudo = fake_sudo(tmp_path, "#!/bin/sh\necho 'sudo: a password is required' >&2\nexit 1\n")
    result = run(smartctl.check(devices=[{"path": "/dev/bus/0", "type": "megaraid,0"}], privilege="sudo",
                                sudo=str(sudo)))
    assert result.status is Status.UNKNOWN
    user = pwd.getpwuid(os.geteuid()).pw_name
    assert result.summary == (f"/dev/bus/0: sudo: a password is required (sudoers needs: {user} ALL=(root) "
                              f"NOPASSWD: {smartctl.path} -H -A --json\\=c -d megaraid\\,0 /dev/bus/0)")


def test_smart_privilege_sudo_under_no_new_privileges_names_the_drop_ins(smartctl, tmp_path):
    said = ('sudo: The "no new privileges" flag is set, which prevents sudo from running as root.\n'
            'sudo: If sudo is running in a container, you may need to adjust the container configuration.')
    sudo = fake_sudo(tmp_path, f"#!/bin/sh\ncat >&2 <<'EOF'\n{said}\nEOF\nexit 1\n")
    result = run(smartctl.check(devices=["/dev/sda"], privilege="sudo", sudo=str(sudo)))
    assert result.summary == ('/dev/sda: sudo: The "no new privileges" flag is set, which prevents sudo from running '
                              'as root. (the unit needs the drop-ins relaxed-sudo.conf and smart-devices.conf)')


@pytest.mark.parametrize("options, error", [
    ({}, "privilege: sudo needs `devices`"),
    ({"devices": ["/dev/sd a"]}, "'/dev/sd a': with privilege: sudo a path may hold letters, digits and /._:+=,- only"),
    ({"devices": ["/dev/sd*"]}, "'/dev/sd*': with privilege: sudo a path may hold"),
])
def test_smart_privilege_sudo_options_refused(options, error):
    with pytest.raises(ValueError, match=re.escape(error)):
        SmartCheck.Options.model_validate({"name": "disks", "type": "smart", "privilege": "sudo", **options})


SUDO_AS_NOBODY = """#!/bin/sh
# the agent's user calling the real sudo: `nobody`, with the test's sudoers file in a private mount namespace
exec unshare -m sh -c 'mount --bind "$0" /etc/sudoers && exec setpriv --reuid nobody --regid nogroup \\
    --clear-groups /usr/bin/sudo "$@"' "$(dirname "$0")/sudoers" "$@"
"""


@pytest.mark.skipif(os.geteuid() != 0 or not all(os.access(p, os.X_OK) for p in
                                                  ("/usr/bin/sudo", "/usr/bin/unshare", "/usr/bin/setpriv", SMARTCTL)),
                    reason="needs root, sudo (Debian package sudo), unshare, setpriv and smartctl")
def test_smart_privilege_sudo_real_sudo_runs_smartctl_only_for_the_line_it_names(tmp_path):
    """The real sudo, as an unprivileged user, with a sudoers file holding the line the check asked for:
    smartctl runs as root for that device (its own answer comes back), and is refused for any other."""
    sudoers = tmp_path / "sudoers"
    sudoers.write_text("Defaults !requiretty, !use_pty, !lecture\n")
    sudoers.chmod(0o440)
    sudo = fake_sudo(tmp_path, SUDO_AS_NOBODY)
    check = SmartCheck(SmartCheck.Options.model_validate({
        "name": "disks", "type": "smart", "privilege": "sudo", "sudo": str(sudo),
        "devices": [{"path": "/dev/nonexistent", "type": "sat"}, "/dev/other"]}))
    refused = run(check, timeout=30)
    assert refused.summary.startswith("/dev/nonexistent: sudo: a password is required (sudoers needs: ")
    asked = refused.summary.partition("NOPASSWD: ")[2].partition(")")[0]
    assert asked == r"/usr/sbin/smartctl -H -A --json\=c -d sat /dev/nonexistent"
    sudoers.chmod(0o640)
    sudoers.write_text(sudoers.read_text() + f"nobody ALL=(root) NOPASSWD: {asked}\n")
    sudoers.chmod(0o440)
    assert subprocess.run(["visudo", "-cqf", str(sudoers)]).returncode == 0
    result = run(check, timeout=30)
    assert result.summary.startswith("/dev/nonexistent: Smartctl open device: /dev/nonexistent [SAT] failed: ")
    assert "; /dev/other: sudo: a password is required (sudoers needs: " in result.summary


# --- the real smartctl ----------------------------------------------------------------------------------------

real = pytest.mark.skipif(not os.access(SMARTCTL, os.X_OK), reason="smartctl missing (Debian package smartmontools)")


@real
@pytest.mark.parametrize("device, message", [
    ("/dev/nonexistent", "/dev/nonexistent: Unable to detect device type"),
    ({"path": "/dev/nonexistent", "type": "sat"}, "Smartctl open device: /dev/nonexistent [SAT] failed: "
                                                  "No such device"),
])
def test_smart_real_smartctl_missing_device_unknown(device, message):
    check = SmartCheck(SmartCheck.Options.model_validate({"name": "disks", "type": "smart", "devices": [device]}))
    result = run(check)
    assert result.status is Status.UNKNOWN
    assert result.summary == f"/dev/nonexistent: {message.removeprefix('/dev/nonexistent: ')}"


@real
def test_smart_real_smartctl_scan_runs():
    """Whatever this machine has: the real scan answers, and no device means UNKNOWN, never OK."""
    result = run(SmartCheck(SmartCheck.Options.model_validate({"name": "disks", "type": "smart"})), timeout=30)
    if result.summary.startswith("smartctl --scan-open found no devices"):
        assert result.status is Status.UNKNOWN       # this sandbox: no block devices
    else:
        assert result.details["devices"], result.summary
