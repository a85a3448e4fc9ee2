"""config_drift: configuration files against an accepted baseline, and `maint-agent config-drift diff|accept`.

Real files in a temporary tree, a real state directory, and the real CLI as a
subprocess against a config whose `agent.state_dir` the CLI must find like the
daemon does.

The operator story: someone edits nginx.conf, loosens a key file's mode or
drops a file into conf.d; the next run names the file and what changed (never
its contents); after review `config-drift accept` makes that the new normal and
the check is OK again.
"""

from __future__ import annotations

import grp
import json
import os
import pwd
import stat
from pathlib import Path

import pytest

from agent.config.yamlsrc import ConfigError

from agent.config.load import parse_config
from agent.plugin.result import CheckResult, Status
from checks.base import CheckContext
from checks.drift import ConfigDriftCheck, baseline_path
from tests.conftest import run_cli
from tests.metrics_contract import assert_family_contract

SECRET_LINE = "password = s3cret-Value-42\n"


@pytest.fixture
def etc(tmp_path) -> Path:
    root = tmp_path / "etc"
    (root / "nginx" / "conf.d").mkdir(parents=True)
    (root / "nginx" / "nginx.conf").write_text("worker_processes auto;\n")
    (root / "nginx" / "conf.d" / "app.conf").write_text("server { listen 443 ssl; }\n")
    (root / "app.ini").write_text("[db]\n" + SECRET_LINE)
    (root / "app.ini").chmod(0o640)
    return root


def make(etc: Path, name: str = "drift", **options) -> ConfigDriftCheck:
    opts = {"name": name, "type": "config_drift", "paths": [str(etc / "nginx"), str(etc / "*.ini")], **options}
    return ConfigDriftCheck(ConfigDriftCheck.Options.model_validate(opts))


def run(check: ConfigDriftCheck, state: Path, **ctx) -> CheckResult:
    return check.run(CheckContext(timeout=10, state_dir=state, **ctx))


def value(result: CheckResult, name: str) -> float | None:
    return next((s.value for s in result.samples if s.name == name), None)


@pytest.fixture
def state(tmp_path) -> Path:
    return tmp_path / "var"


@pytest.fixture
def recorded(etc, state) -> ConfigDriftCheck:
    """A check whose first run has recorded the baseline."""
    check = make(etc)
    first = run(check, state)
    assert first.status is Status.OK and first.summary == "baseline recorded (3 files)"
    return check


def test_drift_first_run_records_baseline_ok(etc, state):
    result = run(make(etc), state)
    assert result.status is Status.OK
    assert result.summary == "baseline recorded (3 files)"
    stored = baseline_path(state, "drift")
    assert stat.S_IMODE(stored.stat().st_mode) == 0o600
    files = json.loads(stored.read_text())["files"]
    assert set(files) == {str(etc / "nginx/nginx.conf"), str(etc / "nginx/conf.d/app.conf"), str(etc / "app.ini")}
    assert files[str(etc / "app.ini")]["mode"] == "0640"
    assert (value(result, "files"), value(result, "drifted_files")) == (3, 0)


def test_drift_unchanged_files_ok(recorded, state):
    result = run(recorded, state)
    assert result.status is Status.OK
    assert result.summary == "3 files match the baseline"


def test_drift_content_change_warning_names_file_not_contents(recorded, etc, state):
    (etc / "app.ini").write_text("[db]\npassword = other-Secret-999\n")
    result = run(recorded, state)
    assert result.status is Status.WARNING
    assert result.summary.startswith(f"1 of 3 files differ from the baseline: {etc / 'app.ini'} (content, size ")
    assert result.summary.endswith("review, then `maint-agent config-drift accept drift`")
    assert result.details["drift"] == [{"path": str(etc / "app.ini"), "change": "content, size 32 → 33"}]
    text = json.dumps(result.details) + result.summary
    stored = json.loads(baseline_path(state, "drift").read_text())["files"][str(etc / "app.ini")]
    assert "Secret" not in text and "s3cret" not in text and stored["sha256"] not in text
    assert value(result, "drifted_files") == 1


def test_drift_same_size_edit_detected_by_checksum(recorded, etc, state):
    (etc / "nginx/nginx.conf").write_text("worker_processes 4444;\n")
    result = run(recorded, state)
    assert result.details["drift"] == [{"path": str(etc / "nginx/nginx.conf"), "change": "content"}]


def test_drift_chmod_and_chown_reported(recorded, etc, state):
    (etc / "app.ini").chmod(0o644)
    expected = {str(etc / "app.ini"): "mode 0640 → 0644"}
    if os.geteuid() == 0:    # only root can give a file away
        conf = etc / "nginx/nginx.conf"
        group = grp.getgrgid(conf.stat().st_gid).gr_name
        os.chown(conf, pwd.getpwnam("nobody").pw_uid, -1)
        expected[str(conf)] = f"owner root:{group} → nobody:{group}"
    result = run(recorded, state)
    assert result.status is Status.WARNING
    assert {row["path"]: row["change"] for row in result.details["drift"]} == expected


def test_drift_added_and_removed_files(recorded, etc, state):
    (etc / "nginx/conf.d/evil.conf").write_text("server { listen 8080; }\n")
    (etc / "nginx/conf.d/app.conf").unlink()
    result = run(recorded, state)
    assert result.status is Status.WARNING
    assert result.details["drift"] == [{"path": str(etc / "nginx/conf.d/evil.conf"), "change": "added"},
                                       {"path": str(etc / "nginx/conf.d/app.conf"), "change": "removed"}]
    assert value(result, "files") == 3 and value(result, "drifted_files") == 2


def test_drift_on_drift_critical(etc, state):
    check = make(etc, on_drift="critical")
    run(check, state)
    (etc / "app.ini").write_text("changed\n")
    assert run(check, state).status is Status.CRITICAL


def test_drift_baseline_survives_new_check_instance(recorded, etc, state):
    """A daemon restart or reload builds a new check object: the baseline is on disk, not in memory."""
    (etc / "app.ini").write_text("changed\n")
    result = run(make(etc), state)
    assert result.status is Status.WARNING
    assert value(result, "baseline_age_seconds") >= 0


def test_drift_without_state_dir_unknown(etc):
    result = make(etc).run(CheckContext(timeout=10))
    assert result.status is Status.UNKNOWN
    assert result.summary == "no state directory to keep the baseline in"


def test_drift_too_many_files_unknown(etc, state):
    result = run(make(etc, max_files=2), state)
    assert result.status is Status.UNKNOWN
    assert "more than 2 files match" in result.summary
    assert not baseline_path(state, "drift").exists()


def test_drift_timeout_while_hashing_unknown(etc, state):
    clock = iter(range(0, 10**6, 100))
    result = run(make(etc), state, monotonic=lambda: float(next(clock)))
    assert result.status is Status.UNKNOWN
    assert result.summary.startswith("timed out after 10s while hashing ")


def test_drift_corrupt_baseline_unknown(etc, state):
    path = baseline_path(state, "drift")
    path.parent.mkdir(parents=True)
    path.write_text("{not json")
    result = run(make(etc), state)
    assert result.status is Status.UNKNOWN
    assert result.summary.startswith(f"cannot read {path}")


def test_drift_metric_contract(recorded, etc, state):
    (etc / "app.ini").write_text("changed\n")
    assert_family_contract(recorded, [run(recorded, state)])


def test_drift_config_relative_path_refused():
    text = "checks:\n  - name: drift\n    type: config_drift\n    paths: [etc/nginx]\n"
    with pytest.raises(ConfigError) as err:
        parse_config(text, "agent.yaml")
    assert [str(i) for i in err.value.issues] == [
        "agent.yaml:4: checks[0].paths: 'etc/nginx' must be an absolute path or glob"]


# --- the CLI ----------------------------------------------------------------------------------------------

@pytest.fixture
def config(write_config, etc, tmp_path) -> Path:
    return write_config(f"""
        agent: {{state_dir: {tmp_path}/var}}
        checks:
          - name: drift
            type: config_drift
            paths: ["{etc}/nginx", "{etc}/*.ini"]
          - name: keys
            type: config_drift
            paths: ["{etc}/app.ini"]
          - name: disk
            type: disk
        """)


def test_cli_diff_accept_cycle(config, etc, tmp_path):
    first = run_cli("check", "drift", config=config)
    assert first.returncode == 0 and "no baseline yet (3 files)" in first.stdout
    assert not (tmp_path / "var/config_drift/drift.json").exists(), "a one-off check writes no baseline"
    recorded = run_cli("config-drift", "accept", "drift", config=config)
    assert recorded.returncode == 0 and recorded.stdout.startswith("drift: baseline recorded (3 files)")
    assert (tmp_path / "var/config_drift/drift.json").exists(), "the CLI uses the daemon's state dir"

    clean = run_cli("config-drift", "diff", "drift", config=config)
    assert (clean.returncode, clean.stdout) == (0, "(none)\n")

    (etc / "app.ini").chmod(0o600)
    (etc / "nginx/conf.d/new.conf").write_text("x\n")
    drifted = run_cli("config-drift", "diff", "drift", "--format", "json", config=config)
    assert drifted.returncode == 1
    assert json.loads(drifted.stdout) == [
        {"check": "drift", "path": str(etc / "app.ini"), "change": "mode 0640 → 0600"},
        {"check": "drift", "path": str(etc / "nginx/conf.d/new.conf"), "change": "added"}]
    assert run_cli("check", "drift", config=config).returncode == 1

    accepted = run_cli("config-drift", "accept", "drift", config=config)
    assert accepted.returncode == 0, accepted.stderr
    lines = accepted.stdout.splitlines()
    assert lines[0] == "drift: baseline accepted (4 files, 2 changed)"
    assert lines[1].split() == ["CHECK", "PATH", "CHANGE"]
    assert lines[2].split()[:2] == ["drift", str(etc / "app.ini")]

    assert run_cli("config-drift", "diff", "drift", config=config).returncode == 0
    again = run_cli("check", "drift", config=config)
    assert again.returncode == 0 and "4 files match the baseline" in again.stdout


def test_cli_accept_all_records_missing_baselines(config, tmp_path):
    result = run_cli("config-drift", "accept", config=config)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["drift: baseline recorded (3 files)", "keys: baseline recorded (1 file)"]
    assert (tmp_path / "var/config_drift/keys.json").exists()


def test_cli_diff_without_baseline_exit_1(config):
    result = run_cli("config-drift", "diff", "keys", config=config)
    assert result.returncode == 1
    assert "keys: no baseline recorded yet" in result.stderr


@pytest.mark.parametrize("name, message", [
    ("disk", "no config_drift check named 'disk' (it is a disk check)"),
    ("nope", "no config_drift check named 'nope'; config_drift checks: drift, keys"),
])
def test_cli_wrong_check_name_exit_2(config, name, message):
    result = run_cli("config-drift", "diff", name, config=config)
    assert result.returncode == 2
    assert result.stderr.strip() == f"maint-agent: {message}"


def test_cli_config_drift_help():
    result = run_cli("config-drift", "accept", "--help")
    assert result.returncode == 0 and "accepted baseline" in result.stdout
