"""`make install DESTDIR=…` from a clean copy of the tree (as from a fresh clone): the venv with the package,
the unit, sysusers, the polkit rule with the units filled in, the default config; `make uninstall` keeps
the state unless PURGE=1. Builds a real venv with pip (from the configured index): ~15 s, once."""

from __future__ import annotations

import json
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, have

UNITS = "beauth.service becamera.service"
COPY_IGNORE = shutil.ignore_patterns(".venv", "var", "build", ".pytest_cache", "*.egg-info", "out", "__pycache__",
                                     ".git")


def make(source: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["make", "--no-print-directory", "-C", str(source), *args], capture_output=True,
                          text=True, timeout=600)


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> tuple[Path, Path, subprocess.CompletedProcess]:
    if not have("make"):
        pytest.skip("make missing")
    base = tmp_path_factory.mktemp("install")
    source, dest = base / "src", base / "dest"
    shutil.copytree(REPO, source, ignore=COPY_IGNORE)
    # PYTHON= as a developer's shell has it (a pyenv or venv interpreter): the production venv must not use it
    proc = make(source, "install", f"DESTDIR={dest}", "EXTRAS=", f"UNITS={UNITS}", f"PYTHON={sys.executable}")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return source, dest, proc


def test_install_lays_out_venv_unit_sysusers_polkit_and_config(installed):
    _, dest, proc = installed
    venv = dest / "opt" / "maint-agent"
    for path in ("opt/maint-agent/bin/maint-agent", "opt/maint-agent/bin/python",
                 "etc/systemd/system/maint-agent.service", "usr/lib/sysusers.d/maint-agent.conf",
                 "usr/share/polkit-1/rules.d/50-maint-agent.rules", "etc/maint-agent/agent.yaml",
                 "opt/maint-agent/share/doc/maint-agent/deploy.md",
                 "opt/maint-agent/share/doc/maint-agent/dropins/cleanup-roots.conf"):
        assert (dest / path).exists(), path
    assert (dest / "usr/local/bin/maint-agent").readlink() == Path("/opt/maint-agent/bin/maint-agent")
    config = dest / "etc" / "maint-agent" / "agent.yaml"
    assert stat.S_IMODE(config.stat().st_mode) == 0o640
    assert stat.S_IMODE((dest / "etc" / "maint-agent" / "credentials").stat().st_mode) == 0o700
    assert (venv / "bin" / "maint-agent").read_text().startswith("#!/opt/maint-agent/bin/python"), \
        "the staged venv runs from PREFIX once copied to the real root"
    assert "systemctl enable --now maint-agent" in proc.stdout
    check = subprocess.run([str(venv / "bin" / "python"), "-m", "agent.cli", "config", "check", str(config)],
                           capture_output=True, text=True, timeout=60, cwd="/")
    assert check.returncode == 0, check.stderr
    assert "listen 127.0.0.1:9469" in check.stdout and "/var/lib/maint-agent/maint-agent.db" in check.stdout


def test_install_ships_the_docs_the_installed_config_refers_to(installed):
    _, dest, _ = installed
    config = (dest / "etc/maint-agent/agent.yaml").read_text()
    referred = [line.split("#", 1)[1].strip().split()[-1] for line in config.splitlines()
                if "/share/doc/" in line]
    assert referred == ["/opt/maint-agent/share/doc/maint-agent/examples/ai-camera.yaml",
                        "/opt/maint-agent/share/doc/maint-agent/config-reference.md"]
    for path in referred:
        assert (dest / path.lstrip("/")).is_file(), path
    assert (dest / referred[1].lstrip("/")).read_text() == (REPO / "docs/config-reference.md").read_text()


def test_install_builds_the_venv_on_the_system_python_so_a_staged_tree_runs_anywhere(installed):
    """pyvenv.cfg names the interpreter the venv runs on: the build machine's (a developer's .venv, pyenv)
    would not exist on the server; /usr/bin/python3 does on every Debian host with that Python."""
    _, dest, _ = installed
    cfg = dict(line.split(" = ", 1) for line in (dest / "opt/maint-agent/pyvenv.cfg").read_text().splitlines()
               if " = " in line)
    assert cfg["home"] == "/usr/bin" and cfg.get("executable", "/usr/bin/python3").startswith("/usr/bin/python3")
    assert (dest / "opt/maint-agent/bin/python").resolve().parent == Path("/usr/bin")
    assert str(dest) not in (dest / "opt/maint-agent/pyvenv.cfg").read_text()


def test_install_keeps_an_existing_config(installed):
    source, dest, _ = installed
    config = dest / "etc" / "maint-agent" / "agent.yaml"
    config.write_text(config.read_text() + "# edited by the operator\n")
    proc = make(source, "install-files", f"DESTDIR={dest}")   # `install` minus the venv
    assert proc.returncode == 0, proc.stderr
    assert config.read_text().endswith("# edited by the operator\n")
    assert "kept the existing" in proc.stdout
    assert '"beauth.service"' in (dest / "usr/share/polkit-1/rules.d/50-maint-agent.rules").read_text(), \
        "a re-install without UNITS= keeps the rule's list"


@pytest.mark.skipif(not have("node"), reason="node missing: the polkit rule is checked with a JavaScript engine")
def test_install_polkit_rule_allows_only_listed_units_for_the_agent_user(installed):
    """polkitd needs a system bus, absent here: the installed rule runs in node against a stand-in `polkit`
    object that records the rule and answers `lookup` like polkit's action details."""
    _, dest, _ = installed
    rule = (dest / "usr/share/polkit-1/rules.d/50-maint-agent.rules").read_text()
    cases = [("maint-agent", "beauth.service", "restart", "yes"), ("maint-agent", "becamera.service", "start", "yes"),
             ("maint-agent", "sshd.service", "restart", "not_handled"),
             ("maint-agent", "beauth.service", "stop", "not_handled"),
             ("alice", "beauth.service", "restart", "not_handled")]
    script = """
const Result = {YES: "yes", NO: "no", NOT_HANDLED: "not_handled"};
let rule = null;
const polkit = {Result, addRule: (f) => { rule = f; }};
""" + rule + f"""
const cases = {json.dumps(cases)};
const answers = cases.map(([user, unit, verb]) => rule(
    {{id: "org.freedesktop.systemd1.manage-units", lookup: (k) => ({{unit, verb}})[k]}}, {{user}}));
answers.push(rule({{id: "org.freedesktop.login1.reboot", lookup: () => undefined}}, {{user: "maint-agent"}}));
console.log(JSON.stringify(answers));
"""
    proc = subprocess.run(["node", "-e", script], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == [c[3] for c in cases] + ["not_handled"]


def test_uninstall_removes_files_but_keeps_state_unless_purge(installed):
    source, dest, _ = installed
    state = dest / "var" / "lib" / "maint-agent"
    state.mkdir(parents=True)
    (state / "maint-agent.db").write_bytes(b"history")
    proc = make(source, "uninstall", f"DESTDIR={dest}")
    assert proc.returncode == 0, proc.stderr
    for path in ("opt/maint-agent", "etc/systemd/system/maint-agent.service", "usr/lib/sysusers.d/maint-agent.conf",
                 "usr/share/polkit-1/rules.d/50-maint-agent.rules", "usr/local/bin/maint-agent"):
        assert not (dest / path).exists() and not (dest / path).is_symlink(), path
    assert (state / "maint-agent.db").read_bytes() == b"history"
    assert (dest / "etc" / "maint-agent" / "agent.yaml").exists()
    proc = make(source, "uninstall", f"DESTDIR={dest}", "PURGE=1")
    assert proc.returncode == 0, proc.stderr
    assert not state.exists() and not (dest / "etc" / "maint-agent").exists()
