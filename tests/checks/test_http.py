"""HTTP, TLS certificate and TCP probes against real servers on 127.0.0.1, started here.

The operator story: beAuth's /health answering 500, slowly, with the wrong JSON, or
not at all is CRITICAL (or WARNING past 200 ms) with a summary that says which; a
server that accepts and then stalls or trickles bytes cannot hold a worker past the
check's timeout; a self-signed certificate three days from expiry raises the alarm.
"""

from __future__ import annotations

import base64
import gc
import json
import os
import re
import shutil
import socket
import socketserver
import ssl
import subprocess
import sys
import textwrap
import threading
import time
import warnings
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs

import pytest
from pydantic import ValidationError

from agent.config.load import parse_config
from agent.evaluate import WindowState, evaluate
from agent.plugin.result import CheckResult, Status
from agent.config.yamlsrc import ConfigError
from checks.base import CheckContext
from checks.http import HttpCheck, TcpCheck, TlsCertCheck, cert_validity, json_equal, status_ranges
from checks.net import ResolveTimeout, resolve
from tests.conftest import REPO, have, wait_for
from tests.metrics_contract import assert_family_contract

DAY = 86400.0
JSON_BODY = {"status": "ok", "checks": {"db": "up", "cache": "down"}, "items": [{"n": 1}], "count": 1}
BASIC = "Basic " + base64.b64encode(b"ops:s3cret").decode()

pytestmark = pytest.mark.skipif(not have("openssl"), reason="openssl CLI missing (Debian package openssl)")


def make(check_cls, **options):
    """Build a check from an options dict the way the config loader does."""
    name = options.pop("name", check_cls.TYPE.replace("_", "-"))
    return check_cls(check_cls.Options.model_validate({"name": name, "type": check_cls.TYPE, **options}))


def run(check, timeout: float = 5.0, **ctx) -> CheckResult:
    """Run the check; fail when it leaves a socket or file unclosed behind it."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        result = check.run(CheckContext(timeout=timeout, **ctx))
        gc.collect()
    leaks = [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)]
    assert not leaks, f"run left resources open: {leaks}"
    return result


def timed(check, timeout: float) -> tuple[CheckResult, float]:
    t0 = time.monotonic()
    result = run(check, timeout=timeout)
    return result, time.monotonic() - t0


def only(result: CheckResult, name: str) -> float:
    matches = [s.value for s in result.samples if s.name == name]
    assert len(matches) == 1, f"expected one {name} in {result.samples}"
    return matches[0]


def verdict(check, result: CheckResult, now: float | None = None):
    return evaluate(check, result, WindowState(), time.time() if now is None else now)


# --- servers ----------------------------------------------------------------------------------

class Handler(BaseHTTPRequestHandler):
    """Routes for each story; `trickle*` routes write until the client hangs up or the server stops."""

    def log_message(self, *args):
        pass

    def _send(self, code: int, body: bytes = b"", **headers: str) -> None:
        self.send_response(code)
        for key, value in {"Content-Length": str(len(body)), **headers}.items():
            self.send_header(key.replace("_", "-"), value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _trickle(self, data: bytes) -> None:
        while not self.server.stopping.is_set():
            try:
                self.wfile.write(data)
            except OSError:
                return
            self.server.stopping.wait(0.2)

    def do_HEAD(self):
        self.do_GET()

    def do_GET(self):
        path, _, query = self.path.partition("?")
        self.server.requests.append((path, {key.lower(): value for key, value in self.headers.items()}))
        if path == "/ok":
            self._send(200, b"healthy: ok\n", Content_Type="text/plain")
        elif path == "/error":
            self._send(500, b"database connection failed\n")
        elif path == "/slow":
            self.server.stopping.wait(0.5)
            self._send(200, b"late but fine\n")
        elif path == "/redirect":
            self._send(302, Location="/ok?token=abc")
        elif path == "/goto":
            self._send(302, Location=parse_qs(query)["to"][0])
        elif path.startswith("/hops/"):   # /hops/3 redirects 3 times, then answers 200
            left = int(path.removeprefix("/hops/"))
            self._send(302, Location=f"/hops/{left - 1}") if left else self._send(200, b"arrived\n")
        elif path == "/json":
            self._send(200, json.dumps(JSON_BODY).encode(), Content_Type="application/json")
        elif path == "/big":
            self._send(200, b"x" * (3 * 2**20))
        elif path == "/auth":
            ok = self.headers.get("Authorization") == BASIC
            self._send(200 if ok else 401, b"welcome" if ok else b"who are you?")
        elif path == "/token":
            ok = self.headers.get("X-Token") == "t0ken"
            self._send(200 if ok else 403)
        elif path == "/trickle-body":
            self.send_response(200)
            self.send_header("Content-Length", "1000000")
            self.end_headers()
            self._trickle(b"x")
        elif path == "/trickle-headers":
            self.wfile.write(b"HTTP/1.0 200 OK\r\n")
            self._trickle(b"X-Pad: a\r\n")
        else:
            self._send(404)

    def do_POST(self):
        length = int(self.headers.get("Content-Length", 0))
        body = self.rfile.read(length)
        self._send(200, b"method=POST body=" + body)


class QuietHTTPServer(ThreadingHTTPServer):
    """Clients hanging up mid-response (a capped body, a timed-out trickle) are expected here."""

    def handle_error(self, request, client_address):
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class TLSHTTPServer(QuietHTTPServer):
    """HTTPS with the handshake in the connection's own thread, so a client that fails it
    (or never finishes it) cannot stall the accept loop. Records the SNI names asked for."""

    def __init__(self, address, handler, context: ssl.SSLContext):
        super().__init__(address, handler)
        self.context = context
        self.server_names: list[str | None] = []
        context.sni_callback = lambda sslobj, name, ctx: self.server_names.append(name)

    def finish_request(self, request, client_address):
        request.settimeout(5)
        try:
            tls = self.context.wrap_socket(request, server_side=True)
        except OSError:
            return
        try:
            self.RequestHandlerClass(tls, client_address, self)
        finally:
            tls.close()


def serve(server):
    server.stopping = threading.Event()
    server.requests = []   # (path, {lower-case header: value}) of each GET, to see what reached whom
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    return server


def stop(server):
    server.stopping.set()
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def web():
    """Base URL of the plain HTTP server."""
    server = serve(QuietHTTPServer(("127.0.0.1", 0), Handler))
    yield f"http://127.0.0.1:{server.server_address[1]}"
    stop(server)


def openssl_cert(directory, days: int, names: str = "DNS:localhost,IP:127.0.0.1") -> tuple[str, str]:
    """A self-signed certificate valid for `days` for the subjectAltName `names`: (cert, key) paths."""
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", str(days),
                    "-subj", "/CN=maint-agent test", "-addext", f"subjectAltName={names}",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    return str(cert), str(key)


def tls_server(cert: tuple[str, str]) -> TLSHTTPServer:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*cert)
    return serve(TLSHTTPServer(("127.0.0.1", 0), Handler, context))


def openssl_not_after(cert: str) -> float:
    out = subprocess.run(["openssl", "x509", "-in", cert, "-noout", "-enddate"], check=True,
                         capture_output=True, text=True).stdout
    text = out.strip().removeprefix("notAfter=")
    return datetime.strptime(text, "%b %d %H:%M:%S %Y GMT").replace(tzinfo=timezone.utc).timestamp()


@pytest.fixture(scope="module")
def cert(tmp_path_factory) -> tuple[str, str]:
    """A self-signed certificate for localhost/127.0.0.1 that expires in 3 days: (cert, key). Handed out once
    it has less than 3 days left (a second at most), so the tests at the 3-day threshold never meet it equal."""
    made = openssl_cert(tmp_path_factory.mktemp("tls"), days=3)
    expires = openssl_not_after(made[0])
    wait_for(lambda: expires - time.time() < 3 * DAY - 1, timeout=5, what="the certificate to age past 3 days left")
    return made


@pytest.fixture(scope="module")
def tls_web(cert):
    """The same routes over HTTPS with the 3-day self-signed certificate."""
    server = tls_server(cert)
    yield server
    stop(server)


@pytest.fixture(scope="module")
def other_name_tls(tmp_path_factory):
    """HTTPS on 127.0.0.1 with a certificate for db.internal only: (server, cert path)."""
    cert = openssl_cert(tmp_path_factory.mktemp("other"), days=30, names="DNS:db.internal")
    server = tls_server(cert)
    yield server, cert[0]
    stop(server)


@pytest.fixture
def other_web():
    """Another plain HTTP server on 127.0.0.1 (another port, so another origin than `web`)."""
    server = serve(QuietHTTPServer(("127.0.0.1", 0), Handler))
    yield server
    stop(server)


@pytest.fixture
def silent():
    """A listening socket that never accepts: connects complete in the kernel, nothing ever answers."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    yield sock.getsockname()[1]
    sock.close()






class LineService(socketserver.BaseRequestHandler):
    """A Redis/SMTP stand-in: greets with `greeting`, answers PING with +PONG, anything else with -ERR and hangs up."""

    greeting = b""

    def handle(self):
        self.request.settimeout(5)
        if self.greeting:
            self.request.sendall(self.greeting)
        data = b""
        while b"\n" not in data:
            chunk = self.request.recv(1024)
            if not chunk:
                return
            data += chunk
        self.request.sendall(b"+PONG\r\n" if data.strip() == b"PING" else b"-ERR unknown command\r\n")


@pytest.fixture
def line_service():
    """Start a LineService with a given greeting; return its host:port."""
    servers = []

    def start(greeting: bytes = b"") -> str:
        handler = type("Service", (LineService,), {"greeting": greeting})
        server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), handler)
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
        servers.append(server)
        return f"127.0.0.1:{server.server_address[1]}"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


# --- http: status, latency, body --------------------------------------------------------------

def test_http_healthy_endpoint_is_ok_with_status_latency_and_size(web):
    result = run(make(HttpCheck, url=f"{web}/ok"))
    assert result.status is Status.OK, result.summary
    assert result.summary.startswith("200 OK in ")
    assert only(result, "status_code") == 200
    assert 0 < only(result, "response_seconds") < 1
    assert only(result, "response_body_bytes") == len(b"healthy: ok\n")


def test_http_server_error_is_critical_naming_the_status(web):
    result = run(make(HttpCheck, url=f"{web}/error"))
    assert result.status is Status.CRITICAL
    assert result.summary == "status 500 Internal Server Error, expected 2xx"
    assert only(result, "status_code") == 500
    assert result.details["body_excerpt"] == "database connection failed\n"


@pytest.mark.parametrize("auth", [{"username": "ops", "password": "s3cret"}, {"headers": {"Cookie": "sid=1"}},
                                  {"headers": {"X-Token": "${env:MAINT_TEST_HTTP_TOKEN}"}}],
                         ids=["basic auth", "cookie", "secret header"])
def test_http_authenticated_request_keeps_no_body_unless_asked(web, auth, monkeypatch):
    monkeypatch.setenv("MAINT_TEST_HTTP_TOKEN", "t0ken-value")
    result = run(make(HttpCheck, url=f"{web}/error", **auth))
    assert result.status is Status.CRITICAL and result.details["body_excerpt"].startswith("(not kept: ")
    kept = run(make(HttpCheck, url=f"{web}/error", keep_body=True, **auth))
    assert kept.details["body_excerpt"] == "database connection failed\n"


def test_http_listed_status_class_accepts_a_500(web):
    result = run(make(HttpCheck, url=f"{web}/error", expect_status=["5xx"]))
    assert result.status is Status.OK


def test_http_slow_response_over_200ms_warns(web):
    check = make(HttpCheck, url=f"{web}/slow", warning="200ms", critical="2s")
    result = run(check)
    assert result.status is Status.OK
    assert only(result, "response_seconds") >= 0.5
    final = verdict(check, result)
    assert final.status is Status.WARNING
    assert final.summary.startswith("response_seconds ")
    assert "> 200ms" in final.summary


def test_http_fast_response_under_200ms_stays_ok(web):
    check = make(HttpCheck, url=f"{web}/ok", warning="200ms")
    assert verdict(check, run(check)).status is Status.OK


def test_http_redirect_not_followed_is_critical_naming_the_location_without_query(web):
    result = run(make(HttpCheck, url=f"{web}/redirect"))
    assert result.status is Status.CRITICAL
    assert result.summary == "status 302 Found, expected 2xx (redirect to /ok; follow_redirects is off)"
    assert "token" not in result.summary


def test_http_redirect_followed_reaches_the_target_ok(web):
    result = run(make(HttpCheck, url=f"{web}/redirect", follow_redirects=True, expect_body="healthy"))
    assert result.status is Status.OK, result.summary
    assert only(result, "status_code") == 200


@pytest.mark.parametrize("scheme", ["http", "https"])
def test_http_redirect_to_another_origin_drops_the_headers_and_basic_auth(web, tls_web, other_web, scheme,
                                                                          monkeypatch):
    """An API key for our service must not be handed to whatever host a redirect names (nor sent over plain http)."""
    monkeypatch.setenv("MAINT_TEST_HTTP_PASSWORD", "s3cret")
    start = web if scheme == "http" else f"https://127.0.0.1:{tls_web.server_address[1]}"
    elsewhere = f"http://127.0.0.1:{other_web.server_address[1]}"
    check = make(HttpCheck, url=f"{start}/goto?to={elsewhere}/token", follow_redirects=True, verify=False,
                 headers={"X-Token": "t0ken", "X-Api-Key": "k3y-8d2e"},
                 username="ops", password="${env:MAINT_TEST_HTTP_PASSWORD}")
    result = run(check)
    assert result.status is Status.CRITICAL
    assert result.summary == "status 403 Forbidden, expected 2xx"
    [(path, seen)] = other_web.requests
    assert path == "/token"
    assert not {"x-token", "x-api-key", "authorization"} & set(seen), seen


def test_http_redirect_within_the_origin_keeps_the_headers_and_basic_auth(web, monkeypatch):
    monkeypatch.setenv("MAINT_TEST_HTTP_PASSWORD", "s3cret")
    token = run(make(HttpCheck, url=f"{web}/goto?to=/token", follow_redirects=True, headers={"X-Token": "t0ken"}))
    assert token.status is Status.OK, token.summary
    auth = run(make(HttpCheck, url=f"{web}/goto?to={web}/auth", follow_redirects=True, expect_body="welcome",
                    username="ops", password="${env:MAINT_TEST_HTTP_PASSWORD}"))
    assert auth.status is Status.OK, auth.summary


def test_http_redirects_past_the_limit_are_critical(web):
    five = run(make(HttpCheck, url=f"{web}/hops/5", follow_redirects=True, expect_body="arrived"))
    assert five.status is Status.OK, five.summary
    six = run(make(HttpCheck, url=f"{web}/hops/6", follow_redirects=True))
    assert six.status is Status.CRITICAL
    assert six.summary == "more than 5 redirects"


def test_http_body_substring_present_is_ok(web):
    assert run(make(HttpCheck, url=f"{web}/ok", expect_body="healthy: ok")).status is Status.OK


def test_http_missing_body_substring_is_critical(web):
    result = run(make(HttpCheck, url=f"{web}/ok", expect_body="all systems go"))
    assert result.status is Status.CRITICAL
    assert result.summary == "body does not contain 'all systems go'"
    assert only(result, "status_code") == 200


def test_http_json_paths_equal_is_ok(web):
    check = make(HttpCheck, url=f"{web}/json",
                 expect_json={"status": "ok", "checks.db": "up", "items.0.n": 1, "count": 1.0})
    result = run(check)
    assert result.status is Status.OK, result.summary


def test_http_json_value_mismatch_is_critical_with_both_values(web):
    result = run(make(HttpCheck, url=f"{web}/json", expect_json={"checks.cache": "up", "count": True}))
    assert result.status is Status.CRITICAL
    assert result.summary == 'json checks.cache is "down", expected "up"; json count is 1, expected true'


def test_http_json_missing_path_is_critical_naming_the_key(web):
    result = run(make(HttpCheck, url=f"{web}/json", expect_json={"checks.queue": "up", "items.3.n": 1}))
    assert result.status is Status.CRITICAL
    assert result.summary == "json checks.queue: no 'queue' in the response; json items.3.n: no '3' in the response"


def test_http_json_expected_but_body_is_text_is_critical(web):
    result = run(make(HttpCheck, url=f"{web}/ok", expect_json={"status": "ok"}))
    assert result.status is Status.CRITICAL
    assert result.summary.startswith("body is not JSON: ")


def test_http_body_over_the_cap_is_read_only_up_to_the_cap(web):
    result = run(make(HttpCheck, url=f"{web}/big", max_body_size="64KiB"))
    assert result.status is Status.OK
    assert only(result, "response_body_bytes") == 64 * 1024
    assert "(truncated)" in result.summary


def test_http_post_sends_the_body(web):
    result = run(make(HttpCheck, url=f"{web}/echo", method="POST", body="hello",
                      expect_body="method=POST body=hello"))
    assert result.status is Status.OK, result.summary


def test_http_head_is_ok_without_a_body(web):
    result = run(make(HttpCheck, url=f"{web}/ok", method="HEAD"))
    assert result.status is Status.OK
    assert only(result, "response_body_bytes") == 0


# --- http: secrets by reference ---------------------------------------------------------------

def test_http_basic_auth_password_by_reference_is_sent_and_never_shown(web, monkeypatch):
    monkeypatch.setenv("MAINT_TEST_HTTP_PASSWORD", "s3cret")
    check = make(HttpCheck, url=f"{web}/auth", username="ops", password="${env:MAINT_TEST_HTTP_PASSWORD}",
                 expect_body="welcome")
    result = run(check)
    assert result.status is Status.OK, result.summary
    assert "s3cret" not in repr(check.options) + repr(result)


def test_http_wrong_password_is_critical_401(web, monkeypatch):
    monkeypatch.setenv("MAINT_TEST_HTTP_PASSWORD", "guess")
    result = run(make(HttpCheck, url=f"{web}/auth", username="ops", password="${env:MAINT_TEST_HTTP_PASSWORD}"))
    assert result.status is Status.CRITICAL
    assert result.summary == "status 401 Unauthorized, expected 2xx"


def test_http_header_value_from_a_secret_file_is_sent(web, tmp_path):
    token = tmp_path / "token"
    token.write_text("t0ken\n")
    result = run(make(HttpCheck, url=f"{web}/token", headers={"X-Token": f"${{file:{token}}}"}))
    assert result.status is Status.OK, result.summary


def test_http_secret_unreadable_at_run_is_unknown(web, tmp_path):
    token = tmp_path / "token"
    token.write_text("t0ken")
    check = make(HttpCheck, url=f"{web}/token", headers={"X-Token": f"${{file:{token}}}"})
    token.unlink()
    result = run(check)
    assert result.status is Status.UNKNOWN
    assert result.summary == f"cannot read a secret: ${{file:{token}}}: No such file or directory"


# --- http: failures to answer -----------------------------------------------------------------

def test_http_connection_refused_is_critical(closed_port):
    result = run(make(HttpCheck, url=f"http://127.0.0.1:{closed_port}/health"))
    assert result.status is Status.CRITICAL
    assert result.summary == "connection refused"
    assert result.samples == ()


def test_http_server_that_never_answers_times_out_within_the_timeout(silent):
    result, elapsed = timed(make(HttpCheck, url=f"http://127.0.0.1:{silent}/health"), timeout=1.0)
    assert result.status is Status.CRITICAL
    assert result.summary == "timed out after 1s waiting for the response"
    assert 0.9 <= elapsed <= 1.0 + 1


def test_http_trickling_body_times_out_within_the_timeout(web):
    result, elapsed = timed(make(HttpCheck, url=f"{web}/trickle-body"), timeout=1.0)
    assert result.status is Status.CRITICAL
    assert result.summary == "timed out after 1s reading the body"
    assert 0.9 <= elapsed <= 1.0 + 1


def test_http_trickling_headers_time_out_within_the_timeout(web):
    result, elapsed = timed(make(HttpCheck, url=f"{web}/trickle-headers"), timeout=1.0)
    assert result.status is Status.CRITICAL
    assert result.summary == "timed out after 1s waiting for the response"
    assert 0.9 <= elapsed <= 1.0 + 1


def test_http_unreachable_host_reports_the_connect_timeout(blackhole):
    check = make(HttpCheck, url=f"http://127.0.0.1:{blackhole}/", connect_timeout="300ms")
    result, elapsed = timed(check, timeout=5.0)
    assert result.status is Status.CRITICAL
    assert result.summary == "connect timed out after 300ms"
    assert elapsed < 0.3 + 1


# --- http: TLS --------------------------------------------------------------------------------

def test_http_https_with_ca_file_is_ok(tls_web, cert):
    result = run(make(HttpCheck, url=f"https://127.0.0.1:{tls_web.server_address[1]}/ok", ca_file=cert[0]))
    assert result.status is Status.OK, result.summary


def test_http_https_self_signed_without_ca_file_is_critical_certificate_verify_failed(tls_web):
    result = run(make(HttpCheck, url=f"https://127.0.0.1:{tls_web.server_address[1]}/ok"))
    assert result.status is Status.CRITICAL
    assert result.summary.startswith("certificate verify failed: ")
    assert "self-signed" in result.summary or "self signed" in result.summary


def test_http_https_host_name_not_in_certificate_is_critical(other_name_tls):
    server, ca_file = other_name_tls
    result = run(make(HttpCheck, url=f"https://127.0.0.1:{server.server_address[1]}/ok", ca_file=ca_file))
    assert result.status is Status.CRITICAL
    assert result.summary.startswith("certificate verify failed: ")
    assert "127.0.0.1" in result.summary


def test_http_https_verify_false_accepts_the_self_signed_certificate(tls_web):
    result = run(make(HttpCheck, url=f"https://127.0.0.1:{tls_web.server_address[1]}/ok", verify=False))
    assert result.status is Status.OK, result.summary


def test_http_https_trickling_body_times_out_within_the_timeout(tls_web):
    check = make(HttpCheck, url=f"https://127.0.0.1:{tls_web.server_address[1]}/trickle-body", verify=False)
    result, elapsed = timed(check, timeout=1.0)
    assert result.summary == "timed out after 1s reading the body"
    assert 0.9 <= elapsed <= 1.0 + 1


def test_http_missing_ca_file_is_unknown(tls_web, tmp_path):
    result = run(make(HttpCheck, url=f"https://127.0.0.1:{tls_web.server_address[1]}/ok",
                      ca_file=str(tmp_path / "absent.pem")))
    assert result.status is Status.UNKNOWN
    assert result.summary.startswith(f"cannot load ca_file {tmp_path / 'absent.pem'}: ")


@pytest.mark.parametrize("how", ["renamed over", "rewritten in place"])
def test_http_rotated_ca_file_is_trusted_on_the_next_run(tmp_path, how):
    """The service moves to a certificate from a new CA; once ca_file holds the new CA, the next run is OK."""
    (tmp_path / "old").mkdir()
    (tmp_path / "new").mkdir()
    old, new = openssl_cert(tmp_path / "old", days=30), openssl_cert(tmp_path / "new", days=30)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*old)
    server = serve(TLSHTTPServer(("127.0.0.1", 0), Handler, context))
    ca_file = tmp_path / "ca.pem"
    shutil.copy(old[0], ca_file)
    check = make(HttpCheck, url=f"https://127.0.0.1:{server.server_address[1]}/ok", ca_file=str(ca_file))
    try:
        assert run(check).status is Status.OK
        context.load_cert_chain(*new)
        stale = run(check)
        assert stale.summary.startswith("certificate verify failed: "), stale.summary
        if how == "renamed over":
            shutil.copy(new[0], tmp_path / "ca.pem.tmp")
            os.replace(tmp_path / "ca.pem.tmp", ca_file)
        else:
            ca_file.write_bytes(open(new[0], "rb").read())
        rotated = run(check)
        assert rotated.status is Status.OK, rotated.summary
    finally:
        stop(server)


def test_http_ca_file_unchanged_keeps_the_client(tls_web, cert):
    check = make(HttpCheck, url=f"https://127.0.0.1:{tls_web.server_address[1]}/ok", ca_file=cert[0])
    run(check)
    client = check._client
    assert run(check).status is Status.OK
    assert check._client is client


# --- http: config and the client --------------------------------------------------------------

@pytest.mark.parametrize(("options", "message"), [
    ({"url": "ftp://127.0.0.1/x"}, "must be http://host/"),
    ({"url": "http://ops:pw@127.0.0.1/x"}, "must not contain credentials"),
    ({"url": "http://127.0.0.1/", "method": "HEAD", "expect_body": "ok"}, "a HEAD response has no body"),
    ({"url": "https://127.0.0.1/", "verify": False, "ca_file": "/etc/ssl/ca.pem"}, "verify is false"),
    ({"url": "https://127.0.0.1/", "ca_file": "ca.pem"}, "must be an absolute path"),
    ({"url": "http://127.0.0.1/", "username": "ops"}, "needs both username and password"),
    ({"url": "http://127.0.0.1/", "expect_status": ["2xx", "20"]}, "status '20'"),
    ({"url": "http://127.0.0.1/", "expect_status": ["399-300"]}, "low to high"),
    ({"url": "http://127.0.0.1/", "expect_json": {"checks..db": 1}}, "dotted keys"),
    ({"url": "http://127.0.0.1/", "method": "BREW"}, "method"),
    ({"url": "http://127.0.0.1/", "expect_json": {"built": datetime(2024, 1, 1)}}, "not a JSON value"),
])
def test_http_invalid_options_are_rejected_with_the_reason(options, message):
    with pytest.raises(ValidationError) as info:
        make(HttpCheck, **options)
    assert message in str(info.value)


def test_http_family_from_agent_yaml_loads_and_reports_mistakes_with_lines():
    good = parse_config(textwrap.dedent("""
        checks:
          - {name: beauth, type: http, url: "http://127.0.0.1:3000/health", warning: 200ms,
             expect_json: {status: ok, checks.db: up}}
          - {name: api-cert, type: tls_cert, target: "127.0.0.1:443", warning: 21d}
          - {name: redis-ping, type: tcp, target: "127.0.0.1:6379", send: "PING\\r\\n", expect: "+PONG"}
    """), "agent.yaml")
    beauth, cert_check, ping = good.config.checks
    assert beauth.warning == 0.2 and beauth.expect_json == {"status": "ok", "checks.db": "up"}
    assert (cert_check.warning, cert_check.critical) == (21 * DAY, 3 * DAY)
    assert ping.send == "PING\r\n"
    with pytest.raises(ConfigError) as info:
        parse_config(textwrap.dedent("""
            checks:
              - {name: a, type: http, url: "127.0.0.1:3000/health"}
              - {name: b, type: tls_cert, target: "127.0.0.1:443", warning: 1d, critical: 3d}
        """), "agent.yaml")
    issues = [(issue.line, issue.path) for issue in info.value.issues]
    assert issues == [(3, "checks[0].url"), (4, "checks[1].warning")]


def test_http_status_spec_forms_become_ranges():
    assert status_ranges((200, "3xx", "500-503", "204")) == ((200, 200), (300, 399), (500, 503), (204, 204))
    assert make(HttpCheck, url="http://127.0.0.1/", expect_status=204).options.expect_status == (204,)


def test_http_json_equality_is_strict_about_types():
    assert json_equal(1, 1.0)
    assert not json_equal(1, True)
    assert not json_equal("1", 1)
    assert json_equal({"a": [1, {"b": None}]}, {"a": [1.0, {"b": None}]})
    assert not json_equal({"a": [True]}, {"a": [1]})


def test_http_client_is_made_on_the_first_run_and_kept(web):
    check = make(HttpCheck, url=f"{web}/ok")
    assert check._client is None
    run(check)
    client = check._client
    run(check)
    assert check._client is client


def test_http_httpx_is_imported_only_when_a_check_runs():
    code = ("import sys, agent.config.load, checks; from checks.http import HttpCheck;"
            "HttpCheck(HttpCheck.Options(name='x', type='http', url='http://127.0.0.1/'));"
            "print('httpx' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_http_metrics_follow_the_contract(web):
    results = [run(make(HttpCheck, url=f"{web}/ok")), run(make(HttpCheck, url=f"{web}/error")),
               run(make(HttpCheck, url="http://127.0.0.1:1/"))]
    assert_family_contract(make(HttpCheck, url=f"{web}/ok", warning="200ms"), results)


# --- tls_cert ---------------------------------------------------------------------------------

def test_tls_cert_expiring_in_3_days_is_critical_under_the_default_thresholds(tls_web):
    check = make(TlsCertCheck, target=f"127.0.0.1:{tls_web.server_address[1]}")
    result = run(check)
    assert result.status is Status.OK, result.summary
    assert 2.9 * DAY < only(result, "cert_expiry_seconds") <= 3 * DAY
    assert "expires in 3.0 days" in result.summary
    final = verdict(check, result)
    assert final.status is Status.CRITICAL
    assert final.summary.startswith("cert_expiry_seconds 2d23h < 3d — certificate for 127.0.0.1 expires in")


def test_tls_cert_thresholds_in_days_choose_warning(tls_web):
    check = make(TlsCertCheck, target=f"127.0.0.1:{tls_web.server_address[1]}", warning="14d", critical="2d")
    assert verdict(check, run(check)).status is Status.WARNING


def test_tls_cert_far_from_expiry_is_ok(tls_web):
    check = make(TlsCertCheck, target=f"127.0.0.1:{tls_web.server_address[1]}", warning="2d", critical="1d")
    assert verdict(check, run(check)).status is Status.OK


def test_tls_cert_not_after_matches_openssl(tls_web, cert):
    result = run(make(TlsCertCheck, target=f"127.0.0.1:{tls_web.server_address[1]}"))
    assert only(result, "cert_not_after_timestamp_seconds") == openssl_not_after(cert[0])


def test_tls_cert_expired_is_critical_whatever_the_thresholds(tls_web):
    check = make(TlsCertCheck, target=f"127.0.0.1:{tls_web.server_address[1]}", warning=None, critical=None)
    result = run(check, wall=lambda: time.time() + 4 * DAY)
    assert result.status is Status.CRITICAL
    assert result.summary.startswith("certificate expired 1d")
    assert only(result, "cert_expiry_seconds") < 0


def test_tls_cert_not_yet_valid_is_critical(tls_web):
    result = run(make(TlsCertCheck, target=f"127.0.0.1:{tls_web.server_address[1]}"),
                 wall=lambda: time.time() - DAY)
    assert result.status is Status.CRITICAL
    assert result.summary.startswith("certificate not valid before ")


def test_tls_cert_server_name_is_sent_as_sni(tls_web):
    result = run(make(TlsCertCheck, target=f"127.0.0.1:{tls_web.server_address[1]}", server_name="localhost"))
    assert result.status is Status.OK
    assert wait_for(lambda: "localhost" in tls_web.server_names, timeout=5, what="the server to see SNI")
    assert "certificate for localhost" in result.summary


def test_tls_cert_plain_http_port_is_critical_handshake_failed(web):
    result = run(make(TlsCertCheck, target=web.removeprefix("http://")))
    assert result.status is Status.CRITICAL
    assert result.summary.startswith("TLS handshake failed: ")
    assert result.samples == ()


def test_tls_cert_server_that_never_answers_times_out_within_the_timeout(silent):
    result, elapsed = timed(make(TlsCertCheck, target=f"127.0.0.1:{silent}"), timeout=1.0)
    assert result.status is Status.CRITICAL
    assert result.summary == "timed out after 1s"
    assert 0.9 <= elapsed <= 1.0 + 1


def test_tls_cert_unreachable_host_reports_the_connect_timeout(blackhole):
    result, elapsed = timed(make(TlsCertCheck, target=f"127.0.0.1:{blackhole}", connect_timeout="300ms"), 5.0)
    assert result.status is Status.CRITICAL
    assert result.summary == "connect timed out after 300ms"
    assert elapsed < 0.3 + 1


def test_tls_cert_connection_refused_is_critical(closed_port):
    result = run(make(TlsCertCheck, target=f"127.0.0.1:{closed_port}"))
    assert result.status is Status.CRITICAL
    assert result.summary == "connection refused"


def test_tls_cert_generalized_time_after_2049_is_read(tmp_path):
    pem, _ = openssl_cert(tmp_path, days=36500)   # notAfter in the 2120s: GeneralizedTime, not UTCTime
    der = ssl.PEM_cert_to_DER_cert(open(pem).read())
    not_before, not_after = cert_validity(der)
    assert not_after == openssl_not_after(pem)
    assert abs(not_before - time.time()) < 300


def test_tls_cert_garbage_is_not_a_certificate():
    with pytest.raises(ValueError):
        cert_validity(b"\x30\x03\x02\x01\x00")
    with pytest.raises(ValueError):
        cert_validity(b"hello")


def test_tls_cert_invalid_target_is_rejected():
    with pytest.raises(ValidationError, match="must be host:port"):
        make(TlsCertCheck, target="localhost")


def test_tls_cert_metrics_follow_the_contract(tls_web):
    check = make(TlsCertCheck, target=f"127.0.0.1:{tls_web.server_address[1]}")
    assert_family_contract(check, [run(check)])


# --- tcp --------------------------------------------------------------------------------------

def test_tcp_listening_port_is_ok_with_connect_time(silent):
    result = run(make(TcpCheck, target=f"127.0.0.1:{silent}"))
    assert result.status is Status.OK
    assert result.summary.startswith("connected in ")
    assert 0 < only(result, "connect_seconds") < 1


def test_tcp_connect_time_over_threshold_warns(silent):
    check = make(TcpCheck, target=f"127.0.0.1:{silent}", warning="0s")
    final = verdict(check, run(check))
    assert final.status is Status.WARNING
    assert final.summary.startswith("connect_seconds ")


def test_tcp_connection_refused_is_critical(closed_port):
    result = run(make(TcpCheck, target=f"127.0.0.1:{closed_port}"))
    assert result.status is Status.CRITICAL
    assert result.summary == "connection refused"


def test_tcp_unreachable_host_reports_the_connect_timeout(blackhole):
    result, elapsed = timed(make(TcpCheck, target=f"127.0.0.1:{blackhole}", connect_timeout="300ms"), 5.0)
    assert result.status is Status.CRITICAL
    assert result.summary == "connect timed out after 300ms"
    assert elapsed < 0.3 + 1


def test_tcp_ping_answered_with_pong_is_ok(line_service):
    result = run(make(TcpCheck, target=line_service(), send="PING\r\n", expect="+PONG"))
    assert result.status is Status.OK, result.summary
    assert re.fullmatch(r"connected in [\d.]+(ms|µs), '\+PONG' after [\d.]+(ms|µs)", result.summary), result.summary
    assert 0 < only(result, "response_seconds") < 1


def test_tcp_smtp_banner_is_ok_without_sending(line_service):
    result = run(make(TcpCheck, target=line_service(b"220 mail ESMTP ready\r\n"), expect="220 "))
    assert result.status is Status.OK, result.summary


def test_tcp_wrong_reply_then_close_is_critical_showing_what_came(line_service):
    result = run(make(TcpCheck, target=line_service(), send="HELLO\r\n", expect="+PONG"))
    assert result.status is Status.CRITICAL
    assert result.summary.endswith("; connection closed waiting for '+PONG' (got '-ERR unknown command\\r\\n')")
    assert only(result, "connect_seconds") > 0


def test_tcp_server_that_never_answers_times_out_within_the_timeout(silent):
    check = make(TcpCheck, target=f"127.0.0.1:{silent}", send="PING\r\n", expect="+PONG")
    result, elapsed = timed(check, timeout=1.0)
    assert result.status is Status.CRITICAL
    assert "; timed out after 1s waiting for '+PONG' (got '')" in result.summary
    assert 0.9 <= elapsed <= 1.0 + 1


@pytest.fixture
def dead_resolver():
    """A getaddrinfo that never answers for names (a DNS server gone silent) until the test ends."""
    released = threading.Event()
    real = socket.getaddrinfo

    def getaddrinfo(host, *args, **kwargs):
        if kwargs.get("flags", 0) & socket.AI_NUMERICHOST:
            return real(host, *args, **kwargs)
        released.wait(30)
        raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")

    yield getaddrinfo
    released.set()


def test_resolve_dead_resolver_times_out_within_the_timeout(dead_resolver):
    t0 = time.monotonic()
    with pytest.raises(ResolveTimeout):
        resolve("db.internal", 5432, 0.3, getaddrinfo=dead_resolver)
    assert 0.3 <= time.monotonic() - t0 < 0.3 + 0.5


def test_resolve_answers_and_errors_pass_through():
    answer = [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("10.0.0.7", 5432))]
    assert resolve("db.internal", 5432, 1.0, getaddrinfo=lambda *a, **k: answer) == answer

    def unknown(*args, **kwargs):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    with pytest.raises(socket.gaierror):
        resolve("no-such-host.invalid", 5432, 1.0, getaddrinfo=unknown)


def test_resolve_address_literal_needs_no_time():
    assert resolve("127.0.0.1", 80, 0.0)[0][4] == ("127.0.0.1", 80)
    assert resolve("::1", 80, 0.0)[0][4][:2] == ("::1", 80)


def test_resolve_address_literal_loads_no_idna_codec():
    """A str host makes getaddrinfo load the idna codec (~0.6 MiB kept by the daemon); a literal needs none."""
    code = ("import sys; from checks.net import resolve; resolve('127.0.0.1', 80, 0.0); resolve('::1', 80, 0.0);"
            "print('encodings.idna' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_tcp_name_that_does_not_resolve_in_time_is_critical_within_the_timeout(dead_resolver, monkeypatch):
    monkeypatch.setattr(socket, "getaddrinfo", dead_resolver)
    result, elapsed = timed(make(TcpCheck, target="redis.internal:6379", connect_timeout="500ms"), timeout=5.0)
    assert result.status is Status.CRITICAL
    assert result.summary == "name resolution timed out after 500ms"
    assert elapsed < 0.5 + 1


def test_tcp_metrics_follow_the_contract(line_service):
    check = make(TcpCheck, target=line_service(), send="PING\r\n", expect="+PONG", warning="100ms")
    assert_family_contract(check, [run(check)])
