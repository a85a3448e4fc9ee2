"""command: a configured argv, run without a shell, in its own process group, with an allowlisted environment.

The operator story (seed 004: restart the worker pool when fewer than 2
workers run): the service's own restart script runs exactly as listed — no
shell expands what is in it — sees only PATH, the C locale and what the config passes
on, is killed with everything it started when it overruns, and leaves a capped,
redacted excerpt of its output in the audit.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from pydantic import ValidationError

from actions.base import OUTPUT_CAP_CHARS, ActionContext
from actions.command import CommandAction
from agent.plugin.redact import Redactor
from tests.conftest import run_cli, wait_for

SH = shutil.which("sh") or "/bin/sh"


def make(**options) -> CommandAction:
    return CommandAction(CommandAction.Options.model_validate({"name": "restart-workers", "type": "command",
                                                               **options}))


def test_command_runs_the_argv_without_a_shell(tmp_path):
    marker = tmp_path / "injected"
    result = make(argv=["/bin/echo", f"$HOME; touch {marker}", "*", "`id`"]).execute(ActionContext(10))
    assert result.ok and result.exit_code == 0
    assert result.output == f"$HOME; touch {marker} * `id`"
    assert not marker.exists()


def test_command_environment_is_the_allowlist_only(monkeypatch):
    monkeypatch.setenv("MAINT_TEST_LEAK", "agent-only")
    monkeypatch.setenv("MAINT_TEST_PASSED", "passed-on")
    monkeypatch.setenv("MAINT_TEST_SECRET", "s3cret-value-for-env")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", "/run/credentials/maint-agent.service")
    result = make(argv=["/usr/bin/env"], pass_env=["MAINT_TEST_PASSED", "MAINT_TEST_ABSENT"],
                  env={"WORKER_TOKEN": "${env:MAINT_TEST_SECRET}"}).execute(
        ActionContext(10, redact=Redactor(["s3cret-value-for-env"])))
    assert result.ok
    env = dict(line.split("=", 1) for line in result.output.splitlines())
    assert env == {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C", "LC_ALL": "C",
                   "MAINT_TEST_PASSED": "passed-on", "WORKER_TOKEN": "***"}   # the secret reached it, redacted here


def _alive(pid: int) -> bool:
    """True while the process exists and is not a zombie (PID 1 here may not reap orphans)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state != "Z"


def test_command_timeout_kills_the_whole_process_group(tmp_path):
    pidfile = tmp_path / "child.pid"
    result = make(argv=[SH, "-c", f"sleep 60 & echo $! > {pidfile}; wait"]).execute(ActionContext(0.5))
    assert not result.ok and result.exit_code is None
    assert result.summary == "timed out after 0.5s (process group killed)"
    child = int(pidfile.read_text())
    wait_for(lambda: not _alive(child), 5, what="the backgrounded sleep to be killed with its group")


def test_command_output_is_capped(tmp_path):
    result = make(argv=[SH, "-c", "head -c 20000 /dev/zero | tr '\\0' x"]).execute(ActionContext(10))
    assert result.ok
    assert len(result.output) < OUTPUT_CAP_CHARS + 100 and result.output.startswith("x" * 100)
    assert result.output.endswith("(16000 more characters)")


def test_command_failure_exit_is_not_ok_unless_listed(tmp_path):
    failing = make(argv=[SH, "-c", "echo 'supervisor: ERROR (no such group)' >&2; exit 3"]).execute(
        ActionContext(10))
    assert not failing.ok and failing.exit_code == 3
    assert failing.summary.endswith("exit 3 (supervisor: ERROR (no such group))")
    assert make(argv=[SH, "-c", "exit 3"], ok_codes=[0, 3]).execute(ActionContext(10)).ok


def test_command_dry_run_runs_nothing(tmp_path):
    marker = tmp_path / "ran"
    result = make(argv=["/usr/bin/touch", str(marker)], dry_run=True).execute(ActionContext(10, dry_run=True))
    assert result.ok and result.summary == f"would run: /usr/bin/touch {marker}"
    assert not marker.exists()


def test_command_missing_program_is_a_failure_not_an_exception(tmp_path):
    result = make(argv=[str(tmp_path / "no-such-script")]).execute(ActionContext(10))
    assert not result.ok and "No such file or directory" in result.summary


def test_command_relative_program_is_rejected():
    with pytest.raises(ValidationError, match="must be an absolute path"):
        make(argv=["supervisorctl", "restart", "workers:*"])


def test_command_relative_program_is_rejected_at_config_check(write_config):
    config = write_config("""
        actions:
          - name: restart-workers
            type: command
            argv: [supervisorctl, restart, "workers:*"]
        """)
    out = run_cli("config", "check", str(config))
    assert out.returncode == 2
    assert f"{config}:4: actions[0].argv: program 'supervisorctl' must be an absolute path" in out.stderr
