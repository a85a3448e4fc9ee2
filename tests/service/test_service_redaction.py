"""Secrets stay secret: a config whose secrets are known strings, checks that fail in ways that could
carry them (a PostgreSQL DSN with a password against a closed port, a plugin that prints the webhook
URL it was given, a server that echoes basic auth in every encoding, a webhook receiver that names the
token it rejects), then the log, the store's bytes, exports, the audit and `config show` are searched
for every one."""

from __future__ import annotations

import base64
import json
import sqlite3
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import quote, quote_plus

import pytest

from tests.conftest import run_cli, wait_for
from tests.fixtures.logfmt import agent_lines, duplicate_keys
from tests.fixtures.webhook import Receiver
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


# -- a server that echoes the credentials, in every encoding a peer might pick --------------------------

API_USER = "monitor"
API_PASSWORD = "api/Secret+5e6f?7a b"      # '/', '+', '?' and ' ' encode differently in each form


def encoded(text: str) -> dict[str, str]:
    raw = text.encode()
    b64 = base64.b64encode(raw).decode()
    return {"plain": text, "base64": b64, "base64 unpadded": b64.rstrip("="),
            "base64 url-safe": base64.urlsafe_b64encode(raw).decode().rstrip("="),
            "percent": quote(text, safe=""), "form": quote_plus(text), "json": json.dumps(text)[1:-1]}


FORBIDDEN = {**{f"password {k}": v for k, v in encoded(API_PASSWORD).items()},
             **{f"user:password {k}": v for k, v in encoded(f"{API_USER}:{API_PASSWORD}").items()}}


class EchoingServer:
    """Answers every GET with 500, the Authorization header in the reason phrase, and a body that quotes
    the header line, the bare base64 and the password percent-encoded and JSON-escaped."""

    def __init__(self):
        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (http.server naming)
                auth = self.headers.get("Authorization", "")
                token = auth.removeprefix("Basic ")
                password = base64.b64decode(token).decode().partition(":")[2] if token else ""
                body = (f"Authorization: {auth}\r\nseen {token.rstrip('=')} / "
                        f"{base64.urlsafe_b64encode(base64.b64decode(token or '')).decode()}\r\n"
                        f"?p={quote(password, safe='')} {json.dumps({'password': password})}\r\n").encode()
                self.send_response(500, f"rejected {auth}")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def echoing(agent_factory, monkeypatch):
    server = EchoingServer()
    monkeypatch.setenv("MAINT_TEST_API_PASSWORD", API_PASSWORD)
    url = f"http://127.0.0.1:{server.port}/health"
    agent = agent_factory(f"""
        agent: {{state_dir: "{{state}}"}}
        http: {{listen: "127.0.0.1:{{port}}"}}
        checks:
          - {{name: api, type: http, every: 1s, url: "{url}", username: {API_USER},
              password: "${{env:MAINT_TEST_API_PASSWORD}}"}}
          - {{name: api-kept, type: http, every: 1s, url: "{url}", username: {API_USER},
              password: "${{env:MAINT_TEST_API_PASSWORD}}", keep_body: true}}
    """)
    agent.start()
    for name in ("api", "api-kept"):
        wait_for(lambda: f'maint_check_runs_total{{check="{name}",status="critical"}} 2.0' in agent.metrics(), 20,
                 what=f"{name} to fail twice")
    yield agent
    server.close()


def leaks(text: str | bytes) -> list[str]:
    data = text.encode() if isinstance(text, str) else text
    return [name for name, value in FORBIDDEN.items() if value.encode() in data]


def test_redaction_basic_auth_echoed_by_the_server_stays_out_of_store_export_and_log(echoing):
    var = echoing.config.parent / "var"
    while_running = b"".join(path.read_bytes() for path in var.glob("maint-agent.db*"))
    assert b"rejected Basic ***" in while_running, "the failure is stored, the credentials masked"
    assert not leaks(while_running), "in the store or its WAL"
    exports = {fmt: echoing.cli("history", "export", "--format", fmt) for fmt in ("csv", "jsonl")}
    for fmt, done in exports.items():
        assert done.returncode == 0, done.stderr
        assert not leaks(done.stdout), f"in history export --format {fmt}"
    details = {row["check"]: row["details"] for row in map(json.loads, exports["jsonl"].stdout.splitlines())}
    assert details["api"]["body_excerpt"].startswith("(not kept"), "an authenticated request's answer is not kept"
    assert "Authorization: ***" in details["api-kept"]["body_excerpt"], "kept on request, header value masked"
    assert "?p=***" in details["api-kept"]["body_excerpt"], details["api-kept"]
    assert echoing.stop() == 0
    assert not leaks(b"".join(path.read_bytes() for path in var.glob("maint-agent.db*")))
    log = echoing.log.read_text()
    assert "check=api-kept" in log and not leaks(log), "in the log"


def test_redaction_check_command_masks_exactly_like_the_daemon(echoing):
    status = json.loads(echoing.cli("status", "--format", "json").stdout)
    stored = {row["check"]: row["summary"] for row in status["checks"]}
    for name in ("api", "api-kept"):
        table = echoing.cli("check", name)
        shown = echoing.cli("check", name, "--format", "json")
        assert table.returncode == shown.returncode == 1, shown.stderr
        assert not leaks(table.stdout + shown.stdout + shown.stderr), f"check {name} prints a credential"
        assert json.loads(shown.stdout)[0]["summary"] == stored[name] == "status 500 rejected Basic ***, expected 2xx"


# -- a webhook receiver that names the token it rejects --------------------------------------------------

HOOK_SEGMENT = "XoXsEcReT0kenSegment42"
PLUGIN_DOWN = "CRITICAL - service down"


@pytest.fixture
def rejecting(agent_factory, monkeypatch):
    receiver = Receiver()
    monkeypatch.setenv("MAINT_TEST_SLACK_URL", f"{receiver.url}/reject/services/T0AB12CD/B0EF34GH/{HOOK_SEGMENT}")
    agent = agent_factory(f"""
        agent: {{state_dir: "{{state}}"}}
        http: {{listen: "127.0.0.1:{{port}}"}}
        actions:
          - {{name: page, type: notify, slack: {{url: "${{env:MAINT_TEST_SLACK_URL}}"}}}}
        checks:
          - name: down
            type: nagios
            every: 1s
            command: [/bin/sh, -c, 'echo "{PLUGIN_DOWN}"; exit 2']
            actions: [{{action: page}}]
    """)
    yield agent, receiver
    receiver.close()


def test_redaction_webhook_token_named_by_the_receiver_stays_out_of_log_audit_and_action_run(rejecting):
    agent, receiver = rejecting
    agent.start()
    db = agent.config.parent / "var" / "maint-agent.db"
    rows = wait_for(lambda: agent_audit(db, "action = 'page' AND outcome = 'failure'"), 20,
                    what="the notification to be refused")
    assert receiver.paths and receiver.paths[0].endswith(HOOK_SEGMENT), "the receiver got the real URL"
    assert "HTTP 403 (token *** rejected)" in rows[0]["output"] + rows[0]["details"], rows[0]
    manual = agent.cli("action", "run", "page")
    manual_json = agent.cli("action", "run", "page", "--format", "json")
    assert manual.returncode == manual_json.returncode == 1, manual.stderr
    assert "token *** rejected" in manual.stdout, manual.stdout
    audit_listing = agent.cli("actions", "--format", "json")
    assert agent.stop() == 0
    stored = b"".join(path.read_bytes() for path in db.parent.glob("maint-agent.db*"))
    log = agent.log.read_text()
    assert "event=action.ran" in log and "token *** rejected" in log
    ran = [dict(line) for line in agent_lines(log) if ("event", "action.ran") in line]
    assert ran and all(not duplicate_keys(line) for line in agent_lines(log)), "each key once (logfmt)"
    assert ran[0]["trigger"] == "trigger" and ran[0]["action"] == "page", ran[0]
    for what, text in (("the log", log), ("action run", manual.stdout + manual.stderr + manual_json.stdout),
                       ("the audit listing", audit_listing.stdout), ("the store", stored.decode("utf-8", "replace"))):
        assert HOOK_SEGMENT not in text, f"the token segment in {what}"


def agent_audit(db, where: str) -> list[dict]:
    if not db.exists():
        return []
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    conn.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in conn.execute(f"SELECT * FROM action_runs WHERE {where} ORDER BY id")]
    except sqlite3.OperationalError:   # the daemon has not created its tables yet
        return []
    finally:
        conn.close()
