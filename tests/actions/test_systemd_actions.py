"""systemd_restart / systemd_start: the exact argv reaches systemctl, failures carry systemctl's reason.

PID 1 is not systemd here, so the real systemctl cannot restart anything; a
stand-in `systemctl` script (an absolute path in a temp dir, given through the
`systemctl` option) records each argv it gets, one line of NUL-separated words,
prints what systemctl prints and exits like it. The real /usr/bin/systemctl 252
of this host is used once to show it accepts `--no-ask-password restart -- UNIT`
(it gets as far as connecting to the bus, unlike an unknown option).

The operator story: the agent restarts beauth.service when its endpoint fails,
and the audit shows exactly what ran and why it failed when it did.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from pydantic import ValidationError

from actions.base import ActionContext
from actions.systemd import SystemdRestartAction, SystemdStartAction

STAND_IN = """\
#!/bin/sh
# records argv; `fail-*.service` fails like systemd does for a unit that is not there
log={log}
first=1
for word in "$@"; do
  if [ $first = 1 ]; then first=0; else printf '\\0' >> "$log"; fi
  printf '%s' "$word" >> "$log"
done
printf '\\n' >> "$log"
last=""; for word in "$@"; do last="$word"; done
case "$*" in
  *is-active*) cat {state} 2>/dev/null || echo active; exit 0 ;;
esac
case "$last" in
  fail-*) echo "Failed to restart $last: Unit $last not found." >&2; exit 5 ;;
esac
exit 0
"""


@pytest.fixture
def systemctl(tmp_path: Path):
    """An absolute path to the stand-in, and a reader of the argvs it recorded."""
    log, state = tmp_path / "calls", tmp_path / "state"
    script = tmp_path / "bin" / "systemctl"
    script.parent.mkdir()
    script.write_text(STAND_IN.format(log=log, state=state))
    script.chmod(0o755)

    def calls() -> list[list[str]]:
        if not log.exists():
            return []
        return [line.split("\0") for line in log.read_text().splitlines()]

    return str(script), calls, state


def make(cls, **options):
    return cls(cls.Options.model_validate({"name": "restart-beauth", "type": cls.TYPE, **options}))


def test_systemd_restart_runs_systemctl_restart_with_double_dash(systemctl):
    program, calls, _ = systemctl
    result = make(SystemdRestartAction, unit="beauth@1.service", systemctl=program).execute(ActionContext(10))
    assert result.ok, result.summary
    assert result.summary == "restarted beauth@1.service"
    assert calls() == [["--no-ask-password", "restart", "--", "beauth@1.service"]]
    assert result.details["argv"] == [program, "--no-ask-password", "restart", "--", "beauth@1.service"]


def test_systemd_start_runs_systemctl_start(systemctl):
    program, calls, _ = systemctl
    result = make(SystemdStartAction, unit="nginx.service", systemctl=program).execute(ActionContext(10))
    assert result.ok and calls() == [["--no-ask-password", "start", "--", "nginx.service"]]


def test_systemd_restart_via_sudo_runs_sudo_noninteractive(systemctl, tmp_path):
    program, calls, _ = systemctl
    sudo = tmp_path / "bin" / "sudo"          # a stand-in sudo: checks -n, then runs the rest
    sudo.write_text('#!/bin/sh\n[ "$1" = "-n" ] || { echo "sudo: a password is required" >&2; exit 1; }\n'
                    'shift\nexec "$@"\n')
    sudo.chmod(0o755)
    action = make(SystemdRestartAction, unit="beauth.service", via="sudo", systemctl=program, sudo=str(sudo))
    assert action.argv() == [str(sudo), "-n", program, "--no-ask-password", "restart", "--", "beauth.service"]
    assert action.execute(ActionContext(10)).ok
    assert calls() == [["--no-ask-password", "restart", "--", "beauth.service"]]


def test_systemd_restart_failure_is_not_ok_with_systemctls_reason(systemctl):
    program, _, _ = systemctl
    result = make(SystemdRestartAction, unit="fail-worker.service", systemctl=program).execute(ActionContext(10))
    assert not result.ok
    assert result.exit_code == 5
    assert "Unit fail-worker.service not found" in result.summary
    assert "not found" in result.output


def test_systemd_restart_dry_run_records_nothing(systemctl):
    program, calls, _ = systemctl
    result = make(SystemdRestartAction, unit="beauth.service", systemctl=program).execute(
        ActionContext(10, dry_run=True))
    assert result.ok and result.summary.startswith("would run: ")
    assert "restart -- beauth.service" in result.summary
    assert calls() == []


def test_systemd_restart_confirm_active_fails_when_unit_is_not_active(systemctl):
    program, calls, state = systemctl
    state.write_text("failed\n")
    result = make(SystemdRestartAction, unit="beauth.service", systemctl=program, confirm_active=True).execute(
        ActionContext(10))
    assert not result.ok and "it is failed" in result.summary
    assert calls()[-1] == ["is-active", "--", "beauth.service"]
    state.write_text("active\n")
    assert make(SystemdRestartAction, unit="beauth.service", systemctl=program, confirm_active=True).execute(
        ActionContext(10)).ok


def test_systemd_restart_missing_program_is_a_failure_not_an_exception(tmp_path):
    result = make(SystemdRestartAction, unit="beauth.service", systemctl=str(tmp_path / "nope")).execute(
        ActionContext(10))
    assert not result.ok and "cannot run" in result.summary


@pytest.mark.parametrize("unit", ["nginx", "../../etc/passwd.service", "a b.service", "-H.service",
                                  "--force.service", "web/1.service", "*.service", ""])
def test_systemd_unit_option_rejects_what_is_not_one_unit_name(unit):
    with pytest.raises(ValidationError):
        make(SystemdRestartAction, unit=unit)


def test_systemd_relative_systemctl_is_rejected():
    with pytest.raises(ValidationError, match="absolute"):
        make(SystemdRestartAction, unit="nginx.service", systemctl="systemctl")


def test_real_systemctl_accepts_the_argv_form_up_to_the_bus():
    if not os.access("/usr/bin/systemctl", os.X_OK):
        pytest.skip("no /usr/bin/systemctl on this host")
    if Path("/proc/1/comm").read_text().strip() == "systemd":
        pytest.skip("PID 1 is systemd: this would really restart a unit")
    ours = subprocess.run(["/usr/bin/systemctl", "--no-ask-password", "restart", "--", "maint-agent-x.service"],
                          capture_output=True, text=True, timeout=10)
    bogus = subprocess.run(["/usr/bin/systemctl", "--bogus-option", "restart", "--", "maint-agent-x.service"],
                           capture_output=True, text=True, timeout=10)
    assert "unrecognized option" in bogus.stderr
    assert "unrecognized" not in ours.stderr and "booted with systemd" in ours.stderr
