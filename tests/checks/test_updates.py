"""os_updates: pending and security updates from a real `apt-get -s dist-upgrade`, and the reboot flag.

The counts come from the real apt-get of this machine, pointed (through
APT_CONFIG, which the check passes on like any environment of the unit) at a
private apt root built by the fixture: a dpkg status file naming three
installed packages, and two local `copy:` repositories — one labelled like
Debian's security archive (Label Debian-Security, suite bookworm-security),
one like the main archive — whose package lists the fixture copies with a real
`apt-get update` into its own lists directory (`copy:` rather than `file:`,
which apt reads in place, so that a list not refreshed stays old as on a host). No network, no lock on the
host's apt, and the same parsing path as production.

The operator story: a security update waiting turns the check WARNING with the
package named; a reboot after a kernel update is noticed; apt failing is
UNKNOWN with apt's own error, never a silent OK.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import textwrap
from email.utils import formatdate
from pathlib import Path

import pytest

from agent.config.yamlsrc import ConfigError

from agent.config.load import parse_config
from agent.plugin.result import CheckResult, Status
from checks.base import CheckContext
from checks.updates import OsUpdatesCheck, parse_simulation
from tests.metrics_contract import assert_family_contract

APT_GET = "/usr/bin/apt-get"
pytestmark = pytest.mark.skipif(not os.access(APT_GET, os.X_OK), reason="apt-get missing (not a Debian host)")

STATUS_ENTRY = """\
Package: {name}
Status: install ok installed
Priority: optional
Section: misc
Installed-Size: 10
Maintainer: Test <test@example.org>
Architecture: all
Version: {version}
Description: a package of the test apt root

"""
PACKAGE_ENTRY = """\
Package: {name}
Version: {version}
Architecture: all
Maintainer: Test <test@example.org>
Installed-Size: 10
Filename: pool/{name}_{version}_all.deb
Size: 100
SHA256: {sha}
Section: misc
Priority: optional
Description: a package of the test apt root

"""


class AptRoot:
    """A private apt configuration: its own status file, sources, lists and cache."""

    def __init__(self, root: Path):
        self.root = root
        for sub in ("security", "main", "lists/partial", "cache/archives/partial", "etc/apt.conf.d",
                    "etc/preferences.d", "etc/sources.list.d"):
            (root / sub).mkdir(parents=True)
        (root / "extended_states").touch()
        self.labels = {"security": ("Debian-Security", "bookworm-security", "12"),
                       "main": ("Debian", "stable", "12.15")}
        (root / "etc/sources.list").write_text(f"deb [trusted=yes] copy:{root}/security ./\n"
                                               f"deb [trusted=yes] copy:{root}/main ./\n")
        (root / "apt.conf").write_text(textwrap.dedent(f"""\
            Dir::State::status "{root}/status";
            Dir::State::extended_states "{root}/extended_states";
            Dir::State::Lists "{root}/lists";
            Dir::Cache "{root}/cache";
            Dir::Etc::SourceList "{root}/etc/sources.list";
            Dir::Etc::SourceParts "{root}/etc/sources.list.d";
            Dir::Etc::Parts "{root}/etc/apt.conf.d";
            Dir::Etc::Preferences "{root}/etc/preferences";
            Dir::Etc::PreferencesParts "{root}/etc/preferences.d";
            APT::Sandbox::User "root";
            """))
        self.env = {**os.environ, "APT_CONFIG": str(root / "apt.conf")}

    def installed(self, **packages: str) -> None:
        (self.root / "status").write_text("".join(STATUS_ENTRY.format(name=n.replace("_", "-"), version=v)
                                                  for n, v in packages.items()))

    def publish(self, repo: str, **packages: str) -> None:
        """Put packages (name=version) in a repository, with a Release file that lists its checksum (how
        apt tells a changed index); `update()` then loads it."""
        index = "".join(PACKAGE_ENTRY.format(name=n.replace("_", "-"), version=v, sha="0" * 64)
                        for n, v in packages.items()).encode()
        (self.root / repo / "Packages").write_bytes(index)
        label, suite, version = self.labels[repo]
        (self.root / repo / "Release").write_text(
            f"Origin: Debian\nLabel: {label}\nSuite: {suite}\nVersion: {version}\nCodename: {suite}\n"
            f"Date: {formatdate(usegmt=True)}\nSHA256:\n {hashlib.sha256(index).hexdigest()} {len(index)} Packages\n")

    def update(self) -> None:
        subprocess.run([APT_GET, "update", "-q"], env=self.env, check=True, capture_output=True, timeout=60)


@pytest.fixture
def apt(tmp_path, monkeypatch) -> AptRoot:
    root = AptRoot(tmp_path / "aptroot")
    root.installed(hello_maint="1.0-1", tool_maint="2.0-1", steady_maint="3.0-1")
    root.publish("security", hello_maint="1.0-1+deb12u1")
    root.publish("main", tool_maint="2.1-1", steady_maint="3.0-1")
    root.update()
    monkeypatch.setenv("APT_CONFIG", str(root.root / "apt.conf"))
    return root


def check(tmp_path: Path, **options) -> OsUpdatesCheck:
    opts = {"name": "updates", "type": "os_updates", "reboot_required_file": str(tmp_path / "reboot-required"),
            **options}
    return OsUpdatesCheck(OsUpdatesCheck.Options.model_validate(opts))


def run(c: OsUpdatesCheck, timeout: float = 30.0) -> CheckResult:
    return c.run(CheckContext(timeout=timeout))


def value(result: CheckResult, name: str) -> float | None:
    return next((s.value for s in result.samples if s.name == name), None)


# --- counts from a real apt-get ------------------------------------------------------------------------------

def test_os_updates_security_update_pending_warning_named(apt, tmp_path):
    result = run(check(tmp_path))
    assert result.status is Status.WARNING, result.summary
    assert value(result, "pending_updates") == 2
    assert value(result, "security_updates") == 1
    assert value(result, "reboot_required") == 0
    assert result.summary.startswith("2 updates pending, 1 security (hello-maint)")
    assert result.details["security_packages"] == ["hello-maint 1.0-1 → 1.0-1+deb12u1"]
    assert result.details["other_packages"] == ["tool-maint 2.0-1 → 2.1-1"]


def test_os_updates_only_regular_updates_ok_by_default(apt, tmp_path):
    apt.publish("security")
    apt.update()
    result = run(check(tmp_path))
    assert result.status is Status.OK, result.summary
    assert (value(result, "pending_updates"), value(result, "security_updates")) == (1, 0)


def test_os_updates_pending_warning_counts_all_updates(apt, tmp_path):
    apt.publish("security")
    apt.update()
    assert run(check(tmp_path, pending_warning=1)).status is Status.WARNING
    assert run(check(tmp_path, pending_warning=2)).status is Status.OK


def test_os_updates_security_critical_at_count(apt, tmp_path):
    assert run(check(tmp_path, security_critical=1)).status is Status.CRITICAL
    assert run(check(tmp_path, security_warning=None)).status is Status.OK


def test_os_updates_nothing_pending_ok(apt, tmp_path):
    apt.publish("security")
    apt.publish("main", tool_maint="2.0-1")
    apt.update()
    result = run(check(tmp_path, pending_warning=1))
    assert result.status is Status.OK
    assert result.summary == "0 updates pending, 0 security"


def test_os_updates_lists_not_refreshed_unless_asked(apt, tmp_path):
    """A newer security update published after the last `apt-get update` is seen only with refresh: true."""
    apt.publish("security", hello_maint="1.0-1+deb12u1", steady_maint="3.0-1+deb12u1")
    assert value(run(check(tmp_path)), "security_updates") == 1
    refreshed = run(check(tmp_path, refresh=True))
    assert value(refreshed, "security_updates") == 2, refreshed.summary
    assert "apt-get update failed" not in refreshed.summary


def test_os_updates_broken_status_file_unknown_with_apt_error(apt, tmp_path):
    (apt.root / "status").write_text("Package: broken\nthis is not a control file\n")
    result = run(check(tmp_path))
    assert result.status is Status.UNKNOWN
    assert result.summary.startswith("apt-get -s dist-upgrade: exit code 100: ")
    assert "status" in result.summary


def test_os_updates_apt_get_missing_unknown(tmp_path):
    result = run(check(tmp_path, apt_get=str(tmp_path / "no-apt-get")))
    assert result.status is Status.UNKNOWN
    assert "cannot run" in result.summary


def test_os_updates_metric_contract(apt, tmp_path):
    c = check(tmp_path)
    assert_family_contract(c, [run(c)])


# --- reboot required ---------------------------------------------------------------------------------------

def test_os_updates_reboot_required_names_packages(apt, tmp_path):
    (tmp_path / "reboot-required").write_text("*** System restart required ***\n")
    (tmp_path / "reboot-required.pkgs").write_text("linux-image-6.1.0-31-amd64\nlibc6\nlinux-image-6.1.0-31-amd64\n")
    apt.publish("security")
    apt.update()
    result = run(check(tmp_path))
    assert result.status is Status.WARNING
    assert value(result, "reboot_required") == 1
    assert result.summary.endswith("; reboot required by linux-image-6.1.0-31-amd64, libc6")
    assert result.details["reboot_required_by"] == ["linux-image-6.1.0-31-amd64", "libc6"]
    assert run(check(tmp_path, reboot_required="critical")).status is Status.CRITICAL
    assert run(check(tmp_path, reboot_required="ok")).status is Status.OK


def test_os_updates_reboot_required_without_pkgs_file(apt, tmp_path):
    (tmp_path / "reboot-required").touch()
    result = run(check(tmp_path, security_warning=None))
    assert result.status is Status.WARNING
    assert result.summary.endswith("; reboot required")


# --- parsing and config ------------------------------------------------------------------------------------

def test_parse_simulation_ubuntu_security_and_new_packages():
    """Lines as apt prints them on Ubuntu (jammy-security suite) and for a package a dist-upgrade newly installs."""
    text = ("Inst linux-image-5.15.0-92-generic (5.15.0-92.102 Ubuntu:22.04/jammy-updates, "
            "Ubuntu:22.04/jammy-security [amd64])\n"
            "Inst openssl [3.0.2-0ubuntu1.12] (3.0.2-0ubuntu1.14 Ubuntu:22.04/jammy-updates [amd64]) []\n"
            "Conf openssl (3.0.2-0ubuntu1.14 Ubuntu:22.04/jammy-updates [amd64])\n")
    updates = parse_simulation(text)
    assert [(u.name, u.installed, u.candidate, u.security) for u in updates] == [
        ("linux-image-5.15.0-92-generic", None, "5.15.0-92.102", True),
        ("openssl", "3.0.2-0ubuntu1.12", "3.0.2-0ubuntu1.14", False)]
    assert updates[0].describe() == "linux-image-5.15.0-92-generic (new) → 5.15.0-92.102"


def test_os_updates_config_critical_below_warning_refused():
    text = "checks:\n  - name: updates\n    type: os_updates\n    security_warning: 5\n    security_critical: 2\n"
    with pytest.raises(ConfigError) as err:
        parse_config(text, "agent.yaml")
    assert [str(i) for i in err.value.issues] == [
        "agent.yaml:5: checks[0].security_critical: must not be below security_warning (got 2 < 5)"]


def test_os_updates_config_relative_apt_get_refused():
    text = "checks:\n  - name: updates\n    type: os_updates\n    apt_get: apt-get\n"
    with pytest.raises(ConfigError) as err:
        parse_config(text, "agent.yaml")
    assert "checks[0].apt_get: 'apt-get' must be an absolute path" in str(err.value.issues[0])


# --- the real host -----------------------------------------------------------------------------------------

def test_os_updates_real_host_apt_answers(tmp_path, monkeypatch):
    """This machine's own apt configuration and lists: whatever the count, apt answers and the check reports it."""
    monkeypatch.delenv("APT_CONFIG", raising=False)
    if not shutil.which("dpkg"):
        pytest.skip("dpkg missing")
    result = run(check(tmp_path), timeout=60)
    assert result.status in (Status.OK, Status.WARNING), result.summary
    pending, security = value(result, "pending_updates"), value(result, "security_updates")
    assert pending is not None and 0 <= security <= pending
    assert result.summary.startswith(f"{pending:.0f} updates pending, {security:.0f} security")
