"""Secrets stay secret: a config whose secrets are known strings, checks that fail in ways that could
carry them (a PostgreSQL DSN with a password against a closed port, a plugin that prints the webhook
URL it was given), then the log, the store's bytes and `config show` are searched for every one."""

from __future__ import annotations

import pytest

from tests.conftest import run_cli, wait_for
from tests.service.conftest import basic

PG_PASSWORD = "pg-Secret-7f3a9c"
METRICS_PASSWORD = "metrics-Secret-2b8e41"
WEBHOOK_TOKEN = "T0KEN-Secret-c4d5e6"
WEBHOOK_URL = f"https://hooks.example.test/services/{WEBHOOK_TOKEN}"
LITERAL_PASSWORD = "literal-Secret-99aa11"
SECRETS = (PG_PASSWORD, METRICS_PASSWORD, WEBHOOK_TOKEN, LITERAL_PASSWORD)


@pytest.fixture
def leaky(agent_factory, tmp_path, closed_port, monkeypatch):
    pytest.importorskip("psycopg")
    dsn = tmp_path / "pg.dsn"
    dsn.write_text(f"host=127.0.0.1 port={closed_port} dbname=app user=maint password={PG_PASSWORD} "
                   "connect_timeout=2\n")
    dsn.chmod(0o600)
    monkeypatch.setenv("MAINT_TEST_METRICS_PASSWORD", METRICS_PASSWORD)
    monkeypatch.setenv("MAINT_TEST_WEBHOOK_URL", WEBHOOK_URL)
    agent = agent_factory(f"""
        agent: {{state_dir: "{{state}}", log_level: debug}}
        http:
          listen: 127.0.0.1:{{port}}
          basic_auth: {{username: prometheus, password: "${{env:MAINT_TEST_METRICS_PASSWORD}}"}}
        smtp: {{host: 127.0.0.1, port: {closed_port}, sender: agent@example.test, username: agent,
                password: "{LITERAL_PASSWORD}"}}
        checks:
          - {{name: db, type: postgres, every: 1s, dsn: "${{file:{dsn}}}"}}
          - name: notify-hook
            type: nagios
            every: 1s
            env: {{WEBHOOK_URL: "${{env:MAINT_TEST_WEBHOOK_URL}}"}}
            command: [/bin/sh, -c, 'echo "CRITICAL - POST $WEBHOOK_URL failed: connection refused"; exit 2']
    """)
    auth = basic("prometheus", METRICS_PASSWORD)
    original_get = agent.get
    agent.get = lambda path, headers=None: original_get(path, {**auth, **(headers or {})})
    agent.start()
    return agent


def fail_both_checks(agent) -> None:
    wait_for(lambda: b'maint_check_runs_total{check="db",status="critical"} 2.0' in agent.get("/metrics")[1], 20,
             what="the PostgreSQL check to fail twice")
    wait_for(lambda: b'maint_check_runs_total{check="notify-hook",status="critical"} 2.0' in agent.get("/metrics")[1],
             20, what="the plugin to fail twice")
    assert agent.stop() == 0


def test_redaction_failed_checks_leave_no_secret_in_log_or_config_show(leaky):
    fail_both_checks(leaky)
    log = leaky.log.read_text()
    assert "event=check.status_changed check=notify-hook" in log and "POST *** failed" in log, \
        "the failure is reported, only the secret is masked"
    shown = run_cli("config", "show", config=leaky.config)
    assert shown.returncode == 0, shown.stderr
    assert "password: ${env:MAINT_TEST_METRICS_PASSWORD}" in shown.stdout, "a reference is shown as written"
    assert "password: '***'" in shown.stdout, "a literal secret is masked"
    for secret in SECRETS:
        assert secret not in log, f"{secret} in the log"
        assert secret not in shown.stdout + shown.stderr, f"{secret} in config show"


def test_redaction_failed_checks_leave_no_secret_in_the_store(leaky):
    fail_both_checks(leaky)
    var = leaky.config.parent / "var"
    stored = b"".join(path.read_bytes() for path in var.glob("maint-agent.db*"))
    assert b"POST" in stored, "the plugin's failures are stored"
    for secret in SECRETS:
        assert secret.encode() not in stored, f"{secret} in the store"
