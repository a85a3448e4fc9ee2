"""The status page of a running agent: what headless Chromium sees, authentication exactly like /metrics
(basic auth, and mutual TLS with bcrypt users), escaping of what plugins, operators' log entries and
checklist notes say, and a page that is not loaded before anyone asks for it.

The browser test and `make status-screenshot` share docs/status_preview.py: the demo config, its
seeded history and the Chromium call."""

from __future__ import annotations

import base64
import shutil
import sqlite3
import ssl
import textwrap
import time
import urllib.error
import urllib.request

import bcrypt
import httpx
import pytest

from agent.config.load import load_config
from docs.status_preview import chromium, demo_config, seed
from tests.conftest import AgentProcess, wait_for
from tests.service.conftest import Pki, client_context, speak_https

CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"
PASSWORD = "page-pass-7c21"


def fetch(agent: AgentProcess, path: str, headers: dict | None = None) -> tuple[int, dict, bytes]:
    request = urllib.request.Request(f"http://127.0.0.1:{agent.port}{path}", headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def imported(agent: AgentProcess, module: str) -> bool:
    """Whether the agent (started with PYTHONVERBOSE=1, which logs every import on stderr) imported `module`."""
    return f"import '{module}' #" in agent.log.read_text(errors="replace")


# -- a real browser ----------------------------------------------------------------------------------------------


@pytest.mark.skipif(not shutil.which("chromium"), reason="Debian's chromium is not installed")
def test_statuspage_in_chromium_shows_every_check_and_an_svg_per_chart(agent_factory, tmp_path):
    agent = agent_factory(demo_config("{port}", "{state}"))
    loaded = load_config(agent.config)
    seed(loaded, time.time(), days=2)
    agent.start()
    base = f"http://127.0.0.1:{agent.port}"

    dom = chromium(f"{base}/?refresh=0", tmp_path / "overview.png")
    for options in loaded.checks:
        assert f'<a href="/check/{options.name}?refresh=0">{options.name}</a>' in dom, options.name
    assert "<script" not in dom

    dom = chromium(f"{base}/check/web-health?refresh=0", tmp_path / "check.png", size=(1280, 1600))
    conn = sqlite3.connect(f"file:{loaded.db_path}?mode=ro", uri=True)
    series = {key for (key,) in conn.execute(
        "SELECT DISTINCT j.key FROM check_runs r JOIN checks c ON c.id = r.check_id, json_each(r.metrics) j "
        "WHERE c.name = 'web-health' AND r.started >= ?", (time.time() - 86400,))}
    conn.close()
    assert len(series) == 3 and dom.count('<svg class="chart"') == len(series) == dom.count("<figure")
    assert ">CRITICAL<" in dom.split("<h2>Incidents</h2>", 1)[1]   # the seeded outage six hours ago
    for png in ("overview.png", "check.png"):
        data = (tmp_path / png).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20000, png


# -- authentication: the page is refused exactly like /metrics -------------------------------------------------


def test_statuspage_basic_auth_refuses_the_page_exactly_like_metrics(agent_factory, tmp_path):
    secret = tmp_path / "password"
    secret.write_text(PASSWORD + "\n")
    agent = agent_factory(f"""
        agent: {{state_dir: "{{state}}"}}
        http:
          listen: 127.0.0.1:{{port}}
          basic_auth: {{username: ops, password: '${{file:{secret}}}'}}
        checks:
          - {{name: load, type: load, every: 1s}}
    """).start()
    for headers in ({}, basic("ops", "wrong"), basic("nobody", PASSWORD)):
        refused = fetch(agent, "/metrics", headers)
        assert refused[0] == 401
        for path in ("/", "/check/load", "/log", "/nothing"):
            status, got, body = fetch(agent, path, headers)
            assert (status, got.get("WWW-Authenticate"), body) == (401, refused[1]["WWW-Authenticate"], refused[2])
    status, headers, body = fetch(agent, "/", basic("ops", PASSWORD))
    assert status == 200 and b">load</a>" in body
    assert headers["Content-Security-Policy"] == CSP and headers["X-Content-Type-Options"] == "nosniff"


def test_statuspage_mutual_tls_and_bcrypt_users_guard_the_page_like_metrics(agent_factory, tmp_path, pki: Pki):
    hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=4)).decode()
    web = tmp_path / "web-config.yml"
    web.write_text(textwrap.dedent(f"""
        tls_server_config:
          cert_file: {pki.server_cert}
          key_file: {pki.server_key}
          client_auth_type: RequireAndVerifyClientCert
          client_ca_file: {pki.ca}
        basic_auth_users:
          ops: "{hashed}"
    """))
    agent = agent_factory(f"""
        agent: {{state_dir: "{{state}}"}}
        http: {{listen: "127.0.0.1:{{port}}", web_config: {web}}}
        checks:
          - {{name: load, type: load, every: 1s}}
    """)
    speak_https(agent, client_context(pki), basic("ops", PASSWORD)).start()
    url = f"https://127.0.0.1:{agent.port}"
    with httpx.Client(verify=client_context(pki), timeout=10) as http:
        for path in ("/metrics", "/", "/check/load"):
            assert http.get(url + path).status_code == 401, path
        page = http.get(url + "/", auth=("ops", PASSWORD))
    assert page.status_code == 200 and ">load</a>" in page.text
    assert page.headers["Content-Security-Policy"] == CSP
    with httpx.Client(verify=client_context(pki, with_cert=False), timeout=10) as http:
        for path in ("/metrics", "/"):
            with pytest.raises((httpx.TransportError, ssl.SSLError)):
                http.get(url + path, auth=("ops", PASSWORD))


# -- escaping ------------------------------------------------------------------------------------------------------


def test_statuspage_escapes_plugin_output_log_entries_and_checklist_notes(agent_factory):
    agent = agent_factory("""
        agent: {state_dir: "{state}"}
        http: {listen: "127.0.0.1:{port}"}
        checklists:
          weekly: [{id: review, title: "Security <em>review</em>"}]
        checks:
          - name: plugin
            type: nagios
            every: 1s
            command: [/bin/sh, -c, "echo '<script>alert(1)</script><b>loud</b> | \\"t<i>\\"=1'; exit 2"]
    """).start()
    assert agent.cli("log", "add", '<img src=x onerror="alert(2)"> swapped <u>disk</u>', "--category", "hardware",
                     "--by", "<svg onload=alert(3)>").returncode == 0
    assert agent.cli("checklist", "done", "weekly.review", "--note", "</td><script>alert(4)</script>",
                     "--by", "ana").returncode == 0
    wait_for(lambda: b"alert(1)" in fetch(agent, "/")[2], 15, what="the plugin's first result on the page")
    pages = {path: fetch(agent, path)[2].decode() for path in ("/", "/check/plugin", "/log", "/checklists")}
    for path, text in pages.items():
        for raw in ("<script", "<img", "<b>loud", "<u>disk", "<svg onload", "<em>review", "<i>"):
            assert raw not in text, (path, raw)
    assert "&lt;script&gt;alert(1)&lt;/script&gt;&lt;b&gt;loud&lt;/b&gt;" in pages["/"]
    assert "&lt;script&gt;alert(1)" in pages["/check/plugin"]
    assert "&lt;img src=x onerror=&#34;alert(2)&#34;&gt;" in pages["/log"]
    assert "&lt;svg onload=alert(3)&gt;" in pages["/log"]
    assert "&lt;/td&gt;&lt;script&gt;alert(4)&lt;/script&gt;" in pages["/checklists"]
    assert "Security &lt;em&gt;review&lt;/em&gt;" in pages["/checklists"]


# -- headers, 404, nothing loaded before the first request, and switched off ----------------------------------------


def test_statuspage_is_loaded_on_the_first_request_with_its_headers_and_404s(agent_factory):
    agent = agent_factory("""
        agent: {state_dir: "{state}"}
        http: {listen: "127.0.0.1:{port}"}
        checks:
          - {name: load, type: load, every: 1s}
    """).start(env={"PYTHONVERBOSE": "1"})
    assert agent.get("/metrics")[0] == 200 and agent.get("/healthz")[0] == 200
    assert imported(agent, "agent.http.metrics")
    assert not imported(agent, "agent.http.statuspage") and not imported(agent, "jinja2"), "loaded before the first page"
    status, headers, body = fetch(agent, "/")
    assert status == 200 and headers["Content-Type"] == "text/html; charset=utf-8"
    assert headers["Content-Security-Policy"] == CSP and headers["X-Content-Type-Options"] == "nosniff"
    assert imported(agent, "agent.http.statuspage") and imported(agent, "jinja2")
    status, headers, body = fetch(agent, "/check/no-such-check")
    assert status == 404 and headers["Content-Security-Policy"] == CSP
    assert "No check named “no-such-check” is configured." in body.decode() and b'href="/"' in body
    assert fetch(agent, "/favicon.ico")[0] == 404


def test_statuspage_http_ui_false_keeps_the_plain_index_and_loads_nothing(agent_factory):
    agent = agent_factory("""
        agent: {state_dir: "{state}"}
        http: {listen: "127.0.0.1:{port}", ui: false}
        checks:
          - {name: load, type: load, every: 1s}
    """).start(env={"PYTHONVERBOSE": "1"})
    status, headers, body = fetch(agent, "/")
    assert status == 200 and b'<a href="/metrics">' in body and "Content-Security-Policy" not in headers
    assert fetch(agent, "/check/load")[0] == 404
    assert imported(agent, "agent.http.metrics") and not imported(agent, "agent.http.statuspage")
