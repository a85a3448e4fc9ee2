"""Secure /metrics against the running agent: an exporter-toolkit web config with mutual TLS, bcrypt basic
auth and headers, spoken to with httpx as Prometheus would."""

from __future__ import annotations

import hashlib
import shutil
import socket
import ssl
import textwrap
from pathlib import Path

import bcrypt
import httpx
import pytest

from tests.conftest import wait_for
from tests.service.conftest import Pki, basic, client_context, speak_https

PASSWORD = "scrape-pass-5e1f"


def web_config(tmp_path: Path, pki: Pki, tls_extra: str = "") -> Path:
    """The exporter-toolkit file: mTLS with the test CA, one bcrypt user, two headers; `tls_extra` adds
    lines to tls_server_config."""
    hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=4)).decode()
    shutil.copy(pki.server_cert, tmp_path / "server.crt")   # a copy the test may renew
    shutil.copy(pki.server_key, tmp_path / "server.key")
    path = tmp_path / "web-config.yml"
    path.write_text(textwrap.dedent(f"""
        tls_server_config:
          cert_file: server.crt
          key_file: server.key
          client_auth_type: RequireAndVerifyClientCert
          client_ca_file: {pki.ca}
          min_version: TLS12
        {tls_extra}
        http_server_config:
          headers:
            X-Content-Type-Options: nosniff
            X-Frame-Options: deny
        basic_auth_users:
          prometheus: "{hashed}"
    """))
    return path


def agent_config(web: Path, healthz_auth: bool = False) -> str:
    return f"""
        agent: {{state_dir: "{{state}}", log_level: debug}}
        http:
          listen: 127.0.0.1:{{port}}
          web_config: {web}
          healthz_auth: {str(healthz_auth).lower()}
        checks:
          - {{name: load, type: load, every: 1s}}
    """


@pytest.fixture
def tls_agent(agent_factory, tmp_path, pki):
    agent = agent_factory(agent_config(web_config(tmp_path, pki)))
    return speak_https(agent, client_context(pki), basic("prometheus", PASSWORD)).start()


def client(pki: Pki, with_cert: bool = True, **kwargs) -> httpx.Client:
    return httpx.Client(verify=client_context(pki, with_cert), timeout=5, **kwargs)


def test_tls_metrics_valid_client_cert_and_password_gets_metrics_and_headers(tls_agent, pki):
    with client(pki, auth=("prometheus", PASSWORD)) as http:
        response = http.get(f"https://127.0.0.1:{tls_agent.port}/metrics")
        again = http.get(f"https://127.0.0.1:{tls_agent.port}/metrics")   # the cached verdict, same connection
    assert response.status_code == 200 and again.status_code == 200
    assert "maint_agent_info" in response.text
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["X-Frame-Options"] == "deny"


@pytest.mark.parametrize("auth", [("prometheus", "wrong-password"), ("nobody", PASSWORD), None],
                         ids=["wrong-password", "unknown-user", "no-credentials"])
def test_tls_metrics_bad_or_missing_credentials_gets_401(tls_agent, pki, auth):
    with client(pki, auth=auth) as http:
        response = http.get(f"https://127.0.0.1:{tls_agent.port}/metrics")
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Basic")
    assert "maint_agent_info" not in response.text


def test_tls_healthz_open_by_default_but_still_needs_the_client_cert(tls_agent, pki):
    with client(pki) as http:
        assert http.get(f"https://127.0.0.1:{tls_agent.port}/healthz").status_code == 200


def test_tls_healthz_auth_option_requires_credentials(agent_factory, tmp_path, pki):
    agent = agent_factory(agent_config(web_config(tmp_path, pki), healthz_auth=True))
    speak_https(agent, client_context(pki), basic("prometheus", PASSWORD)).start()
    with client(pki) as http:
        assert http.get(f"https://127.0.0.1:{agent.port}/healthz").status_code == 401
    with client(pki, auth=("prometheus", PASSWORD)) as http:
        assert http.get(f"https://127.0.0.1:{agent.port}/healthz").status_code == 200


def handshake_error(context: ssl.SSLContext, port: int) -> str:
    """Connect, handshake and read; return the TLS error the client saw ('' when the server let it in).
    With TLS 1.3 a refused client certificate shows on the first read, not in the handshake."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        try:
            with context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
                tls.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                return "" if tls.recv(1024).startswith(b"HTTP/1.1 ") else "connection closed"
        except (ssl.SSLError, ConnectionError) as exc:
            return str(exc)


def refused_for(agent, reason: str) -> bool:
    """The server's own account (a debug line per failed connection): the client side sees an alert or,
    racing the server's close, only an EOF."""
    return any("event=http.connection_failed" in line and reason in line for line in agent.log.read_text().splitlines())


def test_tls_client_without_certificate_is_refused(tls_agent, pki):
    assert handshake_error(client_context(pki, with_cert=False), tls_agent.port) != ""
    wait_for(lambda: refused_for(tls_agent, "PEER_DID_NOT_RETURN_A_CERTIFICATE"), 5, what="the server's reason")
    with client(pki, with_cert=False, auth=("prometheus", PASSWORD)) as http:
        with pytest.raises(httpx.TransportError):
            http.get(f"https://127.0.0.1:{tls_agent.port}/metrics")


def test_tls_client_certificate_from_another_ca_is_refused(tls_agent, pki):
    context = client_context(pki, with_cert=False)
    context.load_cert_chain(pki.rogue_cert, pki.rogue_key)
    assert handshake_error(context, tls_agent.port) != ""
    wait_for(lambda: refused_for(tls_agent, "CERTIFICATE_VERIFY_FAILED"), 5, what="the server's reason")


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1:DeprecationWarning")
def test_tls_1_1_client_is_refused_by_the_server(tls_agent, pki):
    context = client_context(pki)
    context.minimum_version = ssl.TLSVersion.TLSv1
    context.maximum_version = ssl.TLSVersion.TLSv1_1
    context.set_ciphers("DEFAULT:@SECLEVEL=0")   # let this client offer TLS 1.1 at all
    error = handshake_error(context, tls_agent.port)
    # the server's "protocol version" alert, not the client declining to offer TLS 1.1
    assert "alert protocol version" in error.lower(), error
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    assert handshake_error(context, tls_agent.port) == "", "TLS 1.2 is the configured minimum and must work"


def test_tls_renewed_certificate_is_served_without_restart(tls_agent, pki, tmp_path):
    def served() -> bytes:
        with socket.create_connection(("127.0.0.1", tls_agent.port), timeout=5) as raw:
            with client_context(pki).wrap_socket(raw, server_hostname="127.0.0.1") as tls:
                return hashlib.sha256(tls.getpeercert(binary_form=True)).digest()

    before = served()
    cert, key = pki.issue_server("renewed")
    shutil.copy(key, tmp_path / "server.key")
    shutil.copy(cert, tmp_path / "server.crt")
    wait_for(lambda: served() != before, 10, what="the renewed certificate to be served")
    assert "event=web_config.reloaded" in tls_agent.log.read_text()
    assert tls_agent.proc.poll() is None


def test_tls_client_allowed_sans_change_refuses_the_client_after_reload(agent_factory, tmp_path, pki):
    web = web_config(tmp_path, pki, tls_extra="  client_allowed_sans: [prometheus.test]")
    agent = speak_https(agent_factory(agent_config(web)), client_context(pki), basic("prometheus", PASSWORD))
    agent.start()
    assert handshake_error(client_context(pki), agent.port) == ""
    web.write_text(web.read_text().replace("[prometheus.test]", "[prometheus.other]"))
    # like the exporter toolkit, the file is looked at when a client connects
    wait_for(lambda: handshake_error(client_context(pki), agent.port) != "", 10, what="the client to be refused")
    assert "event=web_config.reloaded" in agent.log.read_text()
    assert agent.proc.poll() is None, "the agent keeps running; it only refuses the client"
