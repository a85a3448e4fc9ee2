"""Every child process the agent starts sees PATH, the C locale and what its caller lists — never the agent's own.

The agent runs with secrets in its environment (`${env:NAME}` references),
systemd's CREDENTIALS_DIRECTORY and NOTIFY_SOCKET, maybe libpq's PGPASSWORD.
Each component that starts a program is pointed at a stand-in that writes
the environment it was given to a file; none of those variables may be in it.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from actions.base import ActionContext
from actions.command import CommandAction
from actions.systemd import SystemdRestartAction
from agent.plugin.child_env import AGENT_ONLY, SAFE_PATH, child_env
from checks.backup import BackupFilesCheck
from checks.base import CheckContext
from checks.logscan import LogScanCheck
from checks.nagios import NagiosCheck
from checks.smart import SmartCheck
from checks.systemd import SystemdUnitCheck
from checks.updates import OsUpdatesCheck

AGENT_ENV = {
    "CREDENTIALS_DIRECTORY": "/run/credentials/maint-agent.service",
    "NOTIFY_SOCKET": "/run/systemd/notify",
    "WATCHDOG_USEC": "30000000",
    "PGPASSWORD": "pg-password-of-the-agent",
    "MAINT_TEST_DB_SECRET": "s3cret-referenced-by-the-config",
    "HOME": "/var/lib/maint-agent",
}


@pytest.fixture
def agent_env(monkeypatch):
    for name, value in AGENT_ENV.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("APT_CONFIG", "/etc/apt/apt-maint.conf")


@pytest.fixture
def stand_in(tmp_path):
    """A program that records its environment (one file per call) and prints `output`; returns (path, envs)."""
    def make(name: str, output: str = "", code: int = 0) -> tuple[str, callable]:
        seen = tmp_path / "seen" / name
        seen.mkdir(parents=True)
        folder = tmp_path / "bin"
        folder.mkdir(exist_ok=True)
        program = folder / name
        program.write_text(f"#!/bin/sh\n/usr/bin/env > {seen}/$$.env\nprintf '%s' '{output}'\nexit {code}\n")
        program.chmod(program.stat().st_mode | stat.S_IXUSR)

        def envs() -> list[dict]:
            return [dict(line.split("=", 1) for line in f.read_text().splitlines() if "=" in line)
                    for f in sorted(seen.glob("*.env"))]
        return str(program), envs
    return make


def assert_clean(envs: list[dict], allowed: set[str] = frozenset()) -> None:
    assert envs, "the stand-in never ran"
    for env in envs:
        leaked = {k: v for k, v in env.items() if k in AGENT_ENV or v in AGENT_ENV.values()}
        assert leaked == {}, f"the agent's environment reached a child: {leaked}"
        assert env["PATH"] == SAFE_PATH and env["LC_ALL"] == "C"
        extra = set(env) - {"PATH", "LANG", "LC_ALL", "PWD", "SHLVL", "_"} - allowed   # sh adds PWD, SHLVL, _
        assert extra == set(), extra


def check_of(cls, **options):
    return cls(cls.Options.model_validate({"name": "probe", "type": cls.TYPE, **options}))


def test_child_env_nagios_plugin_sees_only_its_allowlist(agent_env, stand_in):
    program, envs = stand_in("check_env", "OK")
    check_of(NagiosCheck, command=[program], env={"PLUGIN_TOKEN": "${env:MAINT_TEST_DB_SECRET}"}).run(
        CheckContext(timeout=10))
    assert_clean([{k: v for k, v in e.items() if k != "PLUGIN_TOKEN"} for e in envs()])
    assert envs()[0]["PLUGIN_TOKEN"] == AGENT_ENV["MAINT_TEST_DB_SECRET"]     # given on purpose by reference


def test_child_env_command_action_built_from_nothing(agent_env, stand_in):
    program, envs = stand_in("restart-workers")
    assert CommandAction(CommandAction.Options.model_validate(
        {"name": "cmd", "type": "command", "argv": [program], "pass_env": ["HOME"]})).execute(ActionContext(10)).ok
    assert envs()[0]["HOME"] == "/var/lib/maint-agent"                 # passed on because the config names it
    assert_clean([{k: v for k, v in e.items() if k != "HOME"} for e in envs()])


def test_child_env_command_action_cannot_pass_on_the_agents_own():
    with pytest.raises(ValueError, match="CREDENTIALS_DIRECTORY, NOTIFY_SOCKET: the agent's own"):
        CommandAction.Options.model_validate({"name": "cmd", "type": "command", "argv": ["/bin/true"],
                                              "pass_env": ["NOTIFY_SOCKET", "CREDENTIALS_DIRECTORY"]})


def test_child_env_os_updates_apt_gets_apt_config_only(agent_env, stand_in, tmp_path):
    program, envs = stand_in("apt-get")
    check_of(OsUpdatesCheck, apt_get=program, reboot_required_file=str(tmp_path / "reboot")).run(
        CheckContext(timeout=10))
    assert envs()[0]["APT_CONFIG"] == "/etc/apt/apt-maint.conf"
    assert_clean(envs(), {"APT_CONFIG", "DEBIAN_FRONTEND"})


def test_child_env_journalctl_systemctl_smartctl(agent_env, stand_in, tmp_path):
    journalctl, journal_envs = stand_in("journalctl")
    check_of(LogScanCheck, source="journal", journalctl=journalctl, initial_since="1h").run(
        CheckContext(timeout=10, state_dir=tmp_path / "var"))
    assert_clean(journal_envs(), {"SYSTEMD_PAGER", "SYSTEMD_COLORS"})

    systemctl, systemctl_envs = stand_in("systemctl", "ActiveState=active")
    SystemdUnitCheck(SystemdUnitCheck.Options.model_validate(      # tmp_path stands in for /run/systemd/system
        {"name": "units", "type": "systemd_unit", "units": ["nginx.service"], "systemctl": systemctl}),
        sd_booted=tmp_path).run(CheckContext(timeout=10))
    SystemdRestartAction(SystemdRestartAction.Options.model_validate(
        {"name": "restart", "type": "systemd_restart", "unit": "nginx.service", "systemctl": systemctl})).execute(
        ActionContext(10))
    assert len(systemctl_envs()) >= 2
    assert_clean(systemctl_envs(), {"SYSTEMD_PAGER", "SYSTEMD_COLORS", "SYSTEMD_LESS"})

    smartctl, smart_envs = stand_in("smartctl", "{}")
    check_of(SmartCheck, devices=["/dev/sda"], smartctl=smartctl).run(CheckContext(timeout=10))
    assert_clean(smart_envs())


def test_child_env_pg_restore_verifying_a_backup(agent_env, stand_in, tmp_path):
    program, envs = stand_in("pg_restore", "TOC Entries: 3")
    dump = tmp_path / "dumps" / "appdb.dump"
    dump.parent.mkdir()
    dump.write_bytes(b"PGDMP" + b"\0" * 100)
    os.utime(dump, (1, 1))
    check_of(BackupFilesCheck, path=str(dump), pg_bin_dir=str(Path(program).parent), settle=0).run(
        CheckContext(timeout=10))
    assert len(envs()) == 2                                       # --list, then every data block
    assert_clean(envs())


def test_child_env_refuses_to_pass_the_agents_own_and_never_copies_the_rest(agent_env):
    with pytest.raises(ValueError, match="PGPASSWORD belong to the agent"):
        child_env(passed=["PGPASSWORD"])
    assert child_env({"X": "1"}, passed=["HOME", "UNSET_NAME"]) == {
        "PATH": SAFE_PATH, "LANG": "C", "LC_ALL": "C", "HOME": "/var/lib/maint-agent", "X": "1"}
    assert {"CREDENTIALS_DIRECTORY", "NOTIFY_SOCKET", "PGPASSWORD"} <= AGENT_ONLY
