"""The shipped unit, sysusers file and drop-ins, checked offline by systemd's own tools (PID 1 is not
systemd here, so nothing is started: `systemd-analyze verify` and `security --offline=true`)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from tests.conftest import REPO, have

UNIT = REPO / "systemd" / "maint-agent.service"
DROPINS = sorted((REPO / "systemd" / "dropins").glob("*.conf"))
INSTALLED_PROGRAM = "/opt/maint-agent/bin/maint-agent"
TARGET_EXPOSURE = 2.0

pytestmark = pytest.mark.skipif(not have("systemd-analyze"), reason="systemd-analyze missing (Debian package systemd)")


def runnable_copy(tmp_path: Path, dropin: Path | None = None) -> Path:
    """The unit with its program pointed at this checkout's maint-agent: `verify` checks that ExecStart=
    exists and /opt/maint-agent is not installed here. Nothing else changes. A drop-in goes where systemd
    looks for it, `maint-agent.service.d/` beside the unit, which both `verify` and `security` read."""
    program = REPO / ".venv" / "bin" / "maint-agent"
    if not program.exists():
        pytest.skip(f"{program} missing (make test creates it)")
    text = UNIT.read_text()
    assert INSTALLED_PROGRAM in text
    path = tmp_path / UNIT.name
    path.write_text(text.replace(INSTALLED_PROGRAM, str(program)))
    if dropin is not None:
        (tmp_path / f"{UNIT.name}.d").mkdir()
        (tmp_path / f"{UNIT.name}.d" / dropin.name).write_text(dropin.read_text())
    return path


def verify(path: Path) -> subprocess.CompletedProcess:
    return subprocess.run(["systemd-analyze", "verify", "--man=false", str(path)], capture_output=True, text=True,
                          timeout=60)


def exposure(path: Path) -> tuple[float, subprocess.CompletedProcess]:
    # systemd 252 takes the threshold in tenths (0..100): 20 is an exposure of 2.0
    proc = subprocess.run(["systemd-analyze", "security", "--offline=true", f"--threshold={int(TARGET_EXPOSURE * 10)}",
                           "--no-pager", str(path)], capture_output=True, text=True, timeout=60)
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d)", proc.stdout)
    assert match, proc.stdout + proc.stderr
    return float(match.group(1)), proc


def test_unit_verify_is_clean(tmp_path):
    proc = verify(runnable_copy(tmp_path))
    assert proc.returncode == 0 and proc.stderr == "" and proc.stdout == "", proc.stderr


def test_unit_security_exposure_at_most_2_0(tmp_path):
    score, proc = exposure(UNIT)
    print(f"systemd-analyze security --offline=true {UNIT.name}: {score}")
    assert proc.returncode == 0, proc.stdout[-400:]
    assert score <= TARGET_EXPOSURE


def test_unit_is_type_notify_with_watchdog_user_and_state_directory():
    text = UNIT.read_text()
    for line in ("Type=notify", "NotifyAccess=main", "ExecReload=/bin/kill -HUP $MAINPID", "Restart=on-failure",
                 "User=maint-agent", "StateDirectory=maint-agent", "ProtectSystem=strict", "NoNewPrivileges=yes",
                 "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6\n", "SystemCallFilter=@system-service",
                 "CapabilityBoundingSet=\n", "PrivateDevices=yes"):
        assert line in text, line
    assert re.search(r"^WatchdogSec=\d+s$", text, re.M)
    assert re.search(r"^StartLimitBurst=\d+$", text, re.M)
    assert not re.search(r"^ReadWritePaths=", text, re.M), "writable paths come only from documented drop-ins"


def _limit(text: str, key: str) -> int:
    match = re.search(rf"^{key}=(\d+)([KMG]?)$", text, re.M)
    assert match, f"{key}= missing"
    return int(match.group(1)) * {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}[match.group(2)]


def test_unit_resource_limits_leave_room_for_the_listener_cap_and_the_checks():
    from agent.config.schema import AgentSection, HttpSection
    text = UNIT.read_text()
    connections = next(m.le for m in HttpSection.model_fields["max_connections"].metadata if hasattr(m, "le"))
    workers = next(m.le for m in AgentSection.model_fields["workers"].metadata if hasattr(m, "le"))
    # listener (open + evicted still closing) + running checks + 4 actions + the agent itself, at the maxima
    assert _limit(text, "LimitNOFILE") >= 2 * connections + workers * 8 + 4 * 8 + 30 + 1024
    assert _limit(text, "MemoryMax") >= 4 * 110 * (1 << 20)          # 110 MiB peak measured (docs/security.md)
    default_connections = HttpSection.model_fields["max_connections"].default
    assert _limit(text, "TasksMax") >= 2 * 2 * default_connections + 64   # 73 tasks peak measured


@pytest.mark.parametrize("dropin", DROPINS, ids=[d.stem for d in DROPINS])
def test_unit_with_each_example_dropin_verifies(tmp_path, dropin):
    path = runnable_copy(tmp_path, dropin)
    proc = verify(path)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    score, _ = exposure(path)
    print(f"with {dropin.name}: exposure {score}")


def test_smart_dropin_gives_the_agent_itself_no_capability_and_no_disk_group():
    """smartctl runs as root through sudo (privilege: sudo); the agent's own capability sets stay empty and it
    cannot read raw disks. The bounding set is only the ceiling a set-uid child (sudo → smartctl) may reach."""
    lines = [line for line in (REPO / "systemd" / "dropins" / "smart-devices.conf").read_text().splitlines()
             if line and not line.startswith("#")]
    assert not [line for line in lines if line.startswith(("AmbientCapabilities=", "SupplementaryGroups=", "User="))]
    assert [line for line in lines if line.startswith("CapabilityBoundingSet=")] == [
        "CapabilityBoundingSet=CAP_SYS_RAWIO CAP_SYS_ADMIN"]
    assert "PrivateDevices=no" in lines and "DeviceAllow=block-sd r" in lines


def test_unit_with_smart_and_sudo_dropins_together_verifies(tmp_path):
    """The SMART set-up: smart-devices.conf needs relaxed-sudo.conf beside it (sudo is set-uid)."""
    path = runnable_copy(tmp_path, REPO / "systemd" / "dropins" / "relaxed-sudo.conf")
    smart = REPO / "systemd" / "dropins" / "smart-devices.conf"
    (tmp_path / f"{UNIT.name}.d" / smart.name).write_text(smart.read_text())
    proc = verify(path)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    score, _ = exposure(path)
    print(f"with relaxed-sudo.conf and smart-devices.conf: exposure {score}")


@pytest.mark.skipif(not have("systemd-sysusers"), reason="systemd-sysusers missing")
def test_sysusers_creates_a_system_user_without_login(tmp_path):
    (tmp_path / "etc").mkdir()
    conf = REPO / "systemd" / "maint-agent.sysusers.conf"
    proc = subprocess.run(["systemd-sysusers", f"--root={tmp_path}", str(conf)], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    user = next(line for line in (tmp_path / "etc" / "passwd").read_text().splitlines()
                if line.startswith("maint-agent:")).split(":")
    assert int(user[2]) < 1000, "a system user"
    assert user[5:] == ["/var/lib/maint-agent", "/usr/sbin/nologin"]
    assert any(line.startswith("maint-agent:") for line in (tmp_path / "etc" / "group").read_text().splitlines())
