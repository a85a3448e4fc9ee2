"""Config file safety: `config check` warns (and fails with --strict) when the config or a secret file can
be read by others; `config show` prints the effective config without a secret value."""

from __future__ import annotations

import os
import textwrap

import pytest
import yaml

from tests.conftest import run_cli


@pytest.fixture
def secret_config(tmp_path):
    secret = tmp_path / "metrics.password"
    secret.write_text("file-Secret-0c7d\n")
    config = tmp_path / "agent.yaml"
    config.write_text(textwrap.dedent(f"""
        agent: {{state_dir: {tmp_path}/var}}
        http:
          basic_auth: {{username: prometheus, password: "${{file:{secret}}}"}}
        checks:
          - {{name: cpu, type: cpu}}
    """))
    return config, secret


def test_config_check_private_files_pass_strict(secret_config):
    config, secret = secret_config
    config.chmod(0o640)
    secret.chmod(0o600)
    proc = run_cli("config", "check", "--strict", str(config))
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr


def test_config_check_world_readable_secret_file_warns_and_strict_fails(secret_config):
    config, secret = secret_config
    config.chmod(0o600)
    secret.chmod(0o644)
    loose = run_cli("config", "check", str(config))
    assert loose.returncode == 0
    assert loose.stderr == f"warning: {secret}: readable by every user (mode 0644; chmod 0640 or 0600)\n"
    strict = run_cli("config", "check", "--strict", str(config))
    assert strict.returncode == 2 and strict.stdout == ""
    assert strict.stderr.startswith(f"error: {secret}: readable by every user")


def test_config_check_strict_wants_the_config_private_even_without_literal_secrets(secret_config):
    config, secret = secret_config
    config.chmod(0o644)
    secret.chmod(0o600)
    assert run_cli("config", "check", str(config)).stderr == "", "only references inside: no warning"
    strict = run_cli("config", "check", "--strict", str(config))
    assert strict.returncode == 2 and f"error: {config}: readable by every user" in strict.stderr


def test_config_check_world_writable_config_always_warns(secret_config):
    config, secret = secret_config
    secret.chmod(0o600)
    config.chmod(0o666)
    proc = run_cli("config", "check", str(config))
    assert proc.returncode == 0 and f"warning: {config}: writable by every user (mode 0666)" in proc.stderr


@pytest.mark.skipif(os.geteuid() != 0, reason="chown to another user needs root")
def test_config_check_secret_owned_by_another_user_fails_strict(secret_config):
    config, secret = secret_config
    config.chmod(0o600)
    secret.chmod(0o600)
    os.chown(secret, 65534, 65534)   # nobody
    proc = run_cli("config", "check", "--strict", str(config))
    assert proc.returncode == 2 and "owned by nobody" in proc.stderr


def test_daemon_warns_at_start_about_exposed_files(agent_factory, tmp_path):
    secret = tmp_path / "pw"
    secret.write_text("start-Secret-11\n")
    secret.chmod(0o644)
    agent = agent_factory(f"""
        agent: {{state_dir: "{{state}}"}}
        http:
          listen: 127.0.0.1:{{port}}
          basic_auth: {{username: p, password: "${{file:{secret}}}"}}
    """)
    agent.config.chmod(0o600)
    agent.start()
    assert agent.stop() == 0
    assert f"level=warning event=config.file_exposed file={secret} problem=\"readable by every user" in agent.log.read_text()


def test_config_show_fills_defaults_and_never_shows_a_value(secret_config, monkeypatch):
    config, secret = secret_config
    monkeypatch.setenv("MAINT_TEST_DSN", "host=db password=env-Secret-44ee")
    config.write_text(config.read_text() + textwrap.dedent("""
          - {name: db, type: postgres, dsn: "${env:MAINT_TEST_DSN}"}
        smtp: {host: mail, sender: a@example.test, username: a, password: literal-Secret-5a5a}
    """))
    proc = run_cli("config", "show", str(config))
    assert proc.returncode == 0, proc.stderr
    shown = yaml.safe_load(proc.stdout)
    assert shown["agent"]["workers"] == 4 and shown["agent"]["check_timeout"] == "30s", "defaults filled in"
    assert shown["http"]["basic_auth"]["password"] == f"${{file:{secret}}}"
    assert shown["smtp"]["password"] == "***"
    assert shown["checks"][1]["dsn"] == "${env:MAINT_TEST_DSN}"
    for value in ("file-Secret-0c7d", "env-Secret-44ee", "literal-Secret-5a5a"):
        assert value not in proc.stdout + proc.stderr
    again = config.parent / "shown.yaml"
    again.write_text(proc.stdout.replace("password: '***'", "password: literal-Secret-5a5a"))
    assert run_cli("config", "check", str(again)).returncode == 0, "the output is a valid config"


def test_config_check_strict_fails_on_a_readable_tls_key(tmp_path, pki):
    key = tmp_path / "agent.key"
    key.write_bytes(pki.server_key.read_bytes())
    key.chmod(0o644)
    web = tmp_path / "web.yml"
    web.write_text(f"tls_server_config: {{cert_file: {pki.server_cert}, key_file: agent.key}}\n")
    config = tmp_path / "agent.yaml"
    config.write_text(f"http: {{listen: 127.0.0.1:9469, web_config: {web}}}\n")
    config.chmod(0o600)
    proc = run_cli("config", "check", "--strict", str(config))
    assert proc.returncode == 2
    assert set(proc.stderr.splitlines()) == {
        f"error: {key}: readable by every user (mode 0644; chmod 0640 or 0600)",
        f"error: {web}: readable by every user (mode 0644; chmod 0640 or 0600)"}   # strict: the web config too
