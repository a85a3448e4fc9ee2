"""systemd_unit: named services up, failed units counted — against a recorded-output stand-in and the real host.

systemd cannot run as PID 1 here; this stand-in replays recorded output. The
fixture writes a small executable `systemctl` script that prints what systemd 252
(Debian 12) prints for `systemctl show -p …` and `systemctl list-units
--state=failed` (JSON and the plain table) for units that are active/running,
failed/failed with Result=exit-code, inactive/dead, activating/auto-restart, a
timer and an unknown unit, and exits with systemctl's exit codes (0 for show and
list-units, 1 for an unknown verb or when there is no bus). It logs its calls so
the tests can see that one `show` call covers every unit.

The real-host path runs the real /usr/bin/systemctl of this machine, where
systemd is not running: the check must say so (UNKNOWN), not crash or claim OK.

The operator story: a crashed worker, a service stuck in a restart loop, or a
unit name typo in the config all turn the check CRITICAL with the unit named.
"""

from __future__ import annotations

import os
import shutil
import stat
import time
from pathlib import Path

import pytest
from pydantic import ValidationError

from agent.config.yamlsrc import ConfigError

from agent.config.load import parse_config
from agent.evaluate import WindowState, evaluate
from agent.plugin.result import CheckResult, Status
from checks.base import CheckContext
from checks.systemd import SD_BOOTED, SystemdUnitCheck, parse_show, parse_version

# --- recorded output of systemd 252 (252.38-1~deb12u1) ------------------------------------------
# `systemctl show --property=…` prints the Service interface's properties (Result, NRestarts)
# before the Unit interface's (Id, LoadState, ActiveState, SubState); a timer has no NRestarts.

VERSION_252 = """\
systemd 252 (252.38-1~deb12u1)
+PAM +AUDIT +SELINUX +APPARMOR +IMA +SMACK +SECCOMP +GCRYPT -GNUTLS +OPENSSL +ACL +BLKID +CURL +ELFUTILS \
+FIDO2 +IDN2 -IDN +IPTC +KMOD +LIBCRYPTSETUP +LIBFDISK +PCRE2 -PWQUALITY +P11KIT +QRENCODE +TPM2 +BZIP2 +LZ4 \
+XZ +ZLIB +ZSTD -BPF_FRAMEWORK -XKBCOMMON +UTMP +SYSVINIT default-hierarchy=unified
"""
VERSION_241 = """\
systemd 241 (241)
+PAM +AUDIT +SELINUX +IMA +APPARMOR +SMACK +SYSVINIT +UTMP +LIBCRYPTSETUP +GCRYPT +GNUTLS +ACL +XZ +LZ4 \
+SECCOMP +BLKID +ELFUTILS +KMOD -IDN2 +IDN -PCRE2 default-hierarchy=hybrid
"""

UNITS = {
    "nginx.service": "Result=success\nNRestarts=0\nId=nginx.service\nLoadState=loaded\n"
                     "ActiveState=active\nSubState=running\n",
    "beauth-worker.service": "Result=exit-code\nNRestarts=0\nId=beauth-worker.service\nLoadState=loaded\n"
                             "ActiveState=failed\nSubState=failed\n",
    "backup.service": "Result=success\nNRestarts=0\nId=backup.service\nLoadState=loaded\n"
                      "ActiveState=inactive\nSubState=dead\n",
    "becamera.service": "Result=exit-code\nNRestarts=3\nId=becamera.service\nLoadState=loaded\n"
                        "ActiveState=activating\nSubState=auto-restart\n",
    "backup.timer": "Result=success\nId=backup.timer\nLoadState=loaded\nActiveState=active\nSubState=waiting\n",
}
NOT_FOUND = "Result=success\nNRestarts=0\nId={unit}\nLoadState=not-found\nActiveState=inactive\nSubState=dead\n"

FAILED_JSON = ('[{"unit":"beauth-worker.service","load":"loaded","active":"failed","sub":"failed",'
               '"description":"beAuth background worker"}]\n')
FAILED_PLAIN = "beauth-worker.service loaded failed failed beAuth background worker\n"
NONE_FAILED_JSON = "[]\n"
NO_BUS = ("System has not been booted with systemd as init system (PID 1). Can't operate.\n"
          "Failed to connect to bus: Host is down\n")

STAND_IN = r"""#!/bin/sh
# systemctl stand-in: replays output recorded from systemd 252 (Debian 12); see test_systemd.py.
dir="$(dirname "$0")"
printf '%s\n' "$*" >> "$dir/calls"
[ -e "$dir/hang" ] && exec sleep 30
if [ -e "$dir/no-bus" ]; then cat "$dir/no-bus" >&2; exit 1; fi
case "$1" in
  --version) cat "$dir/version"; exit 0 ;;
  show)
    if [ "$2 $3 $4" = "--no-pager --property=Id,LoadState,ActiveState,SubState,Result,NRestarts --" ]; then
      shift 4
      first=1
      for unit in "$@"; do
        case "$unit" in *.*) ;; *) unit="$unit.service" ;; esac
        [ "$first" = 1 ] || echo
        first=0
        if [ -f "$dir/units/$unit" ]; then cat "$dir/units/$unit"; else sed "s/{unit}/$unit/" "$dir/not-found"; fi
      done
      exit 0
    fi ;;
  list-units)
    case "$*" in
      "list-units --state=failed --output=json --no-pager")
        [ -f "$dir/failed.json" ] && { cat "$dir/failed.json"; exit 0; } ;;
      "list-units --state=failed --no-legend --plain --no-pager")
        cat "$dir/failed.plain"; exit 0 ;;
    esac ;;
esac
echo "Unknown command verb '$1', or unrecorded call: $*" >&2
exit 1
"""


class StandIn:
    """A directory holding the stand-in `systemctl`, its recordings and its call log."""

    def __init__(self, root: Path):
        self.root = root
        (root / "units").mkdir(parents=True)
        for unit, text in UNITS.items():
            (root / "units" / unit).write_text(text)
        (root / "not-found").write_text(NOT_FOUND)
        self.path = root / "systemctl"
        self.path.write_text(STAND_IN)
        self.path.chmod(self.path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
        self.booted = root / "run-systemd-system"    # stands in for /run/systemd/system
        self.booted.mkdir()
        self.record(version=VERSION_252, failed_json=FAILED_JSON, failed_plain=FAILED_PLAIN)

    def record(self, version: str | None = None, failed_json: str | None = None,
               failed_plain: str | None = None) -> None:
        for name, text in (("version", version), ("failed.json", failed_json), ("failed.plain", failed_plain)):
            if text is not None:
                (self.root / name).write_text(text)

    def forget(self, name: str) -> None:
        (self.root / name).unlink()

    def set_flag(self, flag: str, text: str = "") -> None:
        (self.root / flag).write_text(text)

    def calls(self) -> list[str]:
        path = self.root / "calls"
        return path.read_text().splitlines() if path.exists() else []

    def check(self, *units: str, **options) -> SystemdUnitCheck:
        opts = SystemdUnitCheck.Options.model_validate(
            {"name": "units", "type": "systemd_unit", "units": list(units), "systemctl": str(self.path), **options})
        return SystemdUnitCheck(opts, sd_booted=self.booted)


@pytest.fixture
def standin(tmp_path) -> StandIn:
    return StandIn(tmp_path / "systemctl-standin")


def run(check, timeout: float = 5.0) -> CheckResult:
    return check.run(CheckContext(timeout=timeout))


def value(result: CheckResult, name: str, **labels: str) -> float | None:
    matches = [s.value for s in result.samples if s.name == name and dict(s.labels) == labels]
    assert len(matches) <= 1
    return matches[0] if matches else None


# --- unit states -----------------------------------------------------------------------------------

def test_systemd_units_active_ok(standin):
    result = run(standin.check("nginx.service", "backup.timer"))
    assert result.status is Status.OK, result.summary
    assert "nginx.service active/running" in result.summary
    assert value(result, "unit_active", unit="nginx.service") == 1
    assert value(result, "unit_active", unit="backup.timer") == 1
    assert value(result, "unit_restarts", unit="nginx.service") == 0
    assert value(result, "unit_restarts", unit="backup.timer") is None, "a timer has no NRestarts"
    assert value(result, "failed_units") == 1


def test_systemd_unit_failed_critical_named(standin):
    result = run(standin.check("nginx.service", "beauth-worker.service"))
    assert result.status is Status.CRITICAL
    assert "beauth-worker.service failed/failed (exit-code), expected active" in result.summary
    assert "nginx" not in result.summary.split(";")[0]
    assert value(result, "unit_active", unit="beauth-worker.service") == 0
    assert result.details["failed_units"] == ["beauth-worker.service"]


def test_systemd_unit_restart_loop_critical(standin):
    result = run(standin.check("becamera.service"))
    assert result.status is Status.CRITICAL
    assert "becamera.service activating/auto-restart (exit-code)" in result.summary
    assert value(result, "unit_restarts", unit="becamera.service") == 3
    assert value(result, "unit_active", unit="becamera.service") == 0


def test_systemd_unit_inactive_by_default_critical(standin):
    result = run(standin.check("backup.service"))
    assert result.status is Status.CRITICAL
    assert "backup.service inactive/dead, expected active" in result.summary


@pytest.mark.parametrize("expected", ["inactive", "not-failed"])
def test_systemd_unit_inactive_as_expected_ok(standin, expected):
    result = run(standin.check("backup.service", expect={"backup.service": expected}))
    assert result.status is Status.OK, result.summary


def test_systemd_unit_failed_not_failed_expectation_critical(standin):
    result = run(standin.check("beauth-worker.service", expect={"beauth-worker.service": "not-failed"}))
    assert result.status is Status.CRITICAL


def test_systemd_unit_typo_not_found_critical(standin):
    result = run(standin.check("ngnix.service", expect={"ngnix.service": "inactive"}))
    assert result.status is Status.CRITICAL
    assert "ngnix.service not found" in result.summary


def test_systemd_unit_without_suffix_label_as_configured(standin):
    result = run(standin.check("nginx"))
    assert result.status is Status.OK, result.summary
    assert value(result, "unit_active", unit="nginx") == 1


def test_systemd_units_one_show_call_in_order(standin):
    check = standin.check("nginx.service", "becamera.service", "backup.timer")
    result = run(check)
    shows = [c for c in standin.calls() if c.startswith("show")]
    assert shows == ["show --no-pager --property=Id,LoadState,ActiveState,SubState,Result,NRestarts -- "
                     "nginx.service becamera.service backup.timer"]
    assert result.details["units"]["becamera.service"]["SubState"] == "auto-restart"
    run(check)
    assert standin.calls().count("--version") == 1, "the systemd version is asked once per check"


# --- failed units on the host ----------------------------------------------------------------------

def test_systemd_failed_units_over_threshold_warning(standin):
    check = standin.check("nginx.service", warning=0)
    result = run(check)
    assert result.status is Status.OK
    verdict = evaluate(check, result, WindowState(), time.time())
    assert verdict.status is Status.WARNING
    assert "beauth-worker.service" in verdict.summary


def test_systemd_no_failed_units_zero(standin):
    standin.record(failed_json=NONE_FAILED_JSON)
    check = standin.check("nginx.service", warning=0)
    result = run(check)
    assert value(result, "failed_units") == 0
    assert evaluate(check, result, WindowState(), time.time()).status is Status.OK


def test_systemd_old_version_plain_table_counted(standin):
    standin.record(version=VERSION_241)
    standin.forget("failed.json")
    result = run(standin.check("nginx.service"))
    assert result.status is Status.OK, result.summary
    assert value(result, "failed_units") == 1
    assert not any("--output=json" in c for c in standin.calls())


# --- systemd or systemctl not usable ---------------------------------------------------------------

def test_systemd_no_bus_unknown(standin):
    standin.set_flag("no-bus", NO_BUS)
    result = run(standin.check("nginx.service"))
    assert result.status is Status.UNKNOWN
    assert result.summary.startswith("systemd is not running on this host")


def test_systemd_systemctl_missing_unknown(standin, tmp_path):
    check = standin.check("nginx.service", systemctl=str(tmp_path / "no-such-systemctl"))
    result = run(check)
    assert result.status is Status.UNKNOWN
    assert "cannot run" in result.summary


def test_systemd_systemctl_hangs_unknown_within_timeout(standin):
    standin.set_flag("hang")
    started = time.monotonic()
    result = run(standin.check("nginx.service"), timeout=1.0)
    assert time.monotonic() - started < 1.0 + 1.0
    assert result.status is Status.UNKNOWN
    assert "timed out" in result.summary


def test_systemd_real_host_not_pid1_unknown():
    """The real path on this machine: the default marker and the real systemctl."""
    if SD_BOOTED.is_dir():
        pytest.skip("systemd is running on this host")
    check = SystemdUnitCheck(SystemdUnitCheck.Options.model_validate(
        {"name": "units", "type": "systemd_unit", "units": ["ssh.service"]}))
    result = run(check)
    assert result.status is Status.UNKNOWN
    assert result.summary == "systemd is not running on this host (no /run/systemd/system)"


def test_systemd_real_systemctl_without_systemd_unknown(tmp_path):
    """Even when the marker directory is there, the real systemctl's refusal becomes UNKNOWN with its reason."""
    systemctl = shutil.which("systemctl") or "/usr/bin/systemctl"
    if not os.access(systemctl, os.X_OK):
        pytest.skip("systemctl missing (Debian package systemd)")
    if SD_BOOTED.is_dir():
        pytest.skip("systemd is running on this host")
    booted = tmp_path / "run-systemd-system"
    booted.mkdir()
    check = SystemdUnitCheck(SystemdUnitCheck.Options.model_validate(
        {"name": "units", "type": "systemd_unit", "units": ["ssh.service"], "systemctl": systemctl}),
        sd_booted=booted)
    result = run(check)
    assert result.status is Status.UNKNOWN
    assert result.summary.startswith("systemd is not running on this host: ")
    assert "not been booted with systemd" in result.summary


# --- configuration and parsing -----------------------------------------------------------------------

@pytest.mark.parametrize(("options", "message"), [
    ({"units": ["nginx*"]}, "not a unit name"),
    ({"units": ["--all"]}, "not a unit name"),
    ({"units": []}, "at least 1"),
    ({"units": ["a.service", "a.service"]}, "listed twice"),
    ({"units": ["a.service"], "expect": {"b.service": "inactive"}}, "not in `units`"),
    ({"units": ["a.service"], "expect": {"a.service": "running"}}, "active"),
    ({"units": ["a.service"], "systemctl": "systemctl"}, "absolute path"),
])
def test_systemd_options_invalid_rejected(options, message):
    with pytest.raises(ValidationError, match=message):
        SystemdUnitCheck.Options.model_validate({"name": "units", "type": "systemd_unit", **options})


def test_systemd_relative_systemctl_config_error_names_path_once():
    """The operator sees where and what, without the field's name said twice."""
    with pytest.raises(ConfigError) as info:
        parse_config("checks:\n  - {name: units, type: systemd_unit, units: [a.service], systemctl: systemctl}\n",
                     "agent.yaml")
    assert str(info.value) == "agent.yaml:2: checks[0].systemctl: 'systemctl' must be an absolute path"


def test_systemd_parse_show_blocks_in_order():
    text = UNITS["nginx.service"] + "\n" + UNITS["backup.timer"] + "\n" + NOT_FOUND.format(unit="x.service")
    blocks = parse_show(text)
    assert [b["Id"] for b in blocks] == ["nginx.service", "backup.timer", "x.service"]
    assert blocks[2]["LoadState"] == "not-found"


def test_systemd_parse_version_numbers():
    assert parse_version(VERSION_252) == 252
    assert parse_version(VERSION_241) == 241
    assert parse_version("garbage") == 0


# --- metric contract ---------------------------------------------------------------------------------

def test_systemd_metrics_match_contract(standin):
    from tests.metrics_contract import assert_family_contract

    check = standin.check("nginx.service", "beauth-worker.service", "becamera.service", "backup.timer", warning=0)
    results = [run(check), run(standin.check("backup.service", expect={"backup.service": "inactive"}))]
    standin.set_flag("no-bus", NO_BUS)
    results.append(run(check))
    assert_family_contract(check, results)
