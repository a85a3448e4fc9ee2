"""The shipped sudoers file, read by the real sudo: it allows exactly the command lines the agent runs.

The file names the `maint-agent` user, which does not exist here, so a copy names `nobody`; it is put in
place of /etc/sudoers inside a private mount namespace (the host's sudoers is never touched), and
`sudo -l -U nobody COMMAND` answers whether that exact command line is allowed.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from agent.plugin.result import Status
from checks.base import CheckContext
from checks.smart import SmartCheck
from tests.conftest import REPO

SUDOERS = REPO / "systemd" / "sudoers.maint-agent"

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or not all(os.access(p, os.X_OK) for p in ("/usr/bin/sudo", "/usr/sbin/visudo",
                                                                 "/usr/bin/unshare")),
    reason="needs root, sudo and visudo (Debian package sudo) and unshare")


@pytest.fixture
def allowed(tmp_path):
    """allowed(argv) -> whether the shipped rules let `nobody` run argv as root."""
    copy = tmp_path / "sudoers"
    copy.write_text(SUDOERS.read_text().replace("maint-agent", "nobody"))
    copy.chmod(0o440)

    def check(argv: list[str]) -> bool:
        proc = subprocess.run(["unshare", "-m", "sh", "-c", 'mount --bind "$0" /etc/sudoers && '
                               'exec sudo -n -l -U nobody "$@"', str(copy), *argv],
                              capture_output=True, text=True, timeout=30)
        assert proc.returncode in (0, 1), proc.stderr
        return proc.returncode == 0
    return check


def test_sudoers_file_parses():
    proc = subprocess.run(["visudo", "-cf", str(SUDOERS)], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_sudoers_allows_the_smart_checks_command_lines_and_nothing_else(allowed, tmp_path):
    recorder = tmp_path / "sudo"
    recorder.write_text('#!/bin/sh\nprintf \'%s\\n\' "$*" >> "$0.calls"\nexit 1\n')
    recorder.chmod(0o755)
    check = SmartCheck(SmartCheck.Options.model_validate({
        "name": "disks", "type": "smart", "privilege": "sudo", "sudo": str(recorder),
        "devices": ["/dev/sda", {"path": "/dev/nvme0", "type": "nvme"}]}))
    assert check.run(CheckContext(timeout=10)).status is Status.UNKNOWN
    runs = [line.split(" ") for line in Path(f"{recorder}.calls").read_text().splitlines()]
    assert [argv[0] for argv in runs] == ["-n", "-n"]
    for argv in runs:
        assert allowed(argv[1:]), argv
    for argv in (["/usr/sbin/smartctl", "-H", "-A", "--json=c", "/dev/sda", "-s", "on"],
                 ["/usr/sbin/smartctl", "-a", "/dev/sda"],
                 ["/usr/sbin/smartctl", "-H", "-A", "--json=c", "/dev/sdb"],
                 ["/usr/sbin/smartctl", "-H", "-A", "--json=c", "-d", "sat", "/dev/nvme0"],
                 ["/usr/sbin/smartctl", "--scan-open", "--json"]):
        assert not allowed(argv), argv


def test_sudoers_allows_the_listed_restarts_only(allowed):
    assert allowed(["/usr/bin/systemctl", "--no-ask-password", "restart", "--", "beauth.service"])
    assert not allowed(["/usr/bin/systemctl", "--no-ask-password", "stop", "--", "beauth.service"])
    assert not allowed(["/usr/bin/systemctl", "--no-ask-password", "restart", "--", "sshd.service"])
