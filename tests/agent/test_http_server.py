"""The listener's connection table on a fake clock: who makes room at the limit, and what is counted; its
request handling, which must answer every request as http.server's BaseHTTPRequestHandler does."""

from __future__ import annotations

import http.server
import io
import re
import socket
import threading

import pytest

from agent.http.server import Connections, MetricsServer, _HttpRequestHandler


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def pairs():
    """Real connected sockets: (server side, client side) pairs, all closed at the end."""
    made = []

    def make():
        pair = socket.socketpair()
        made.append(pair)
        return pair

    yield make
    for a, b in made:
        a.close()
        b.close()


def test_connections_at_limit_evict_the_longest_waiting_and_cut_its_socket(pairs):
    clock = Clock()
    table = Connections(limit=2, header_timeout=5.0, clock=clock)
    (s1, c1), (s2, c2), (s3, _) = pairs(), pairs(), pairs()
    first = table.admit(s1)
    clock.now += 1
    second = table.admit(s2)
    clock.now += 1
    third = table.admit(s3)
    assert third is not None and first.evicted and not second.evicted
    c1.settimeout(1)
    assert c1.recv(1) == b""                     # the client sees the close at once
    assert table.snapshot() == (2, {"limit": 0, "evicted": 1, "header_timeout": 0, "header_too_large": 0})


def test_connections_busy_serving_are_never_evicted_so_the_newcomer_is_refused(pairs):
    table = Connections(limit=2, header_timeout=5.0, clock=Clock())
    for conn in (table.admit(pairs()[0]), table.admit(pairs()[0])):
        table.serving(conn)
    assert table.admit(pairs()[0]) is None
    assert table.snapshot()[1]["limit"] == 1


def test_connections_kept_alive_wait_restarts_after_each_reply(pairs):
    clock = Clock()
    table = Connections(limit=2, header_timeout=5.0, clock=clock)
    old = table.admit(pairs()[0])
    clock.now += 1
    young = table.admit(pairs()[0])
    table.serving(old)
    clock.now += 1
    table.waiting(old)                           # answered: now it has waited least
    assert old.remaining() == 5.0
    table.admit(pairs()[0])
    assert young.evicted and not old.evicted


def test_connections_closing_evictions_bounded_by_the_limit(pairs):
    table = Connections(limit=1, header_timeout=5.0, clock=Clock())
    first = table.admit(pairs()[0])
    second = table.admit(pairs()[0])             # evicts first, whose thread has not closed it yet
    assert first.evicted and second is not None
    assert table.admit(pairs()[0]) is None       # one still closing: refused, descriptors stay ≤ 2 × limit
    table.close(first)
    assert table.admit(pairs()[0]) is not None


def test_connections_close_counts_once_and_changes_move_with_rejections(pairs):
    table = Connections(limit=1, header_timeout=5.0, clock=Clock())
    conn = table.admit(pairs()[0])
    table.close(conn)
    table.close(conn)
    assert table.snapshot()[0] == 0 and table.changes == 0
    table.reject("header_timeout")
    assert table.changes == 1 and table.snapshot()[1]["header_timeout"] == 1


def test_server_binds_without_a_reverse_lookup_of_its_address(monkeypatch):
    """http.server's HTTPServer looks its address up (getfqdn) for a server_name nothing reads: a dead resolver
    would hold up the start, and the lookup loads the idna codec for the daemon's whole life."""
    def no_lookup(*args):
        raise AssertionError("reverse DNS lookup at bind")

    monkeypatch.setattr(socket, "getfqdn", no_lookup)
    server = MetricsServer(("127.0.0.1", 0), None, lambda: (True, "ok"))
    try:
        assert server.server_address[0] == "127.0.0.1" and server.server_address[1] > 0
    finally:
        server.server_close()


class Routes:
    """The same two routes on both handlers; rfile is the raw request, wfile collects the reply."""

    protocol_version = "HTTP/1.1"

    def setup(self):
        self.rfile, self.wfile = io.BytesIO(self.request), io.BytesIO()

    def finish(self):
        pass

    def do_GET(self):  # noqa: N802
        body = (f"{self.command} {self.path} {self.request_version} connection={self.headers.get('Connection')!r} "
                f"two={self.headers.get('X-Two')!r} has-two={'x-two' in self.headers}\n").encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    do_HEAD = do_POST = do_GET

    def log_message(self, *args):
        pass


class Stdlib(Routes, http.server.BaseHTTPRequestHandler):
    pass


class Ours(Routes, _HttpRequestHandler):
    pass


REQUESTS = [
    b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /a HTTP/1.1\r\n\r\nHEAD /b HTTP/1.1\r\n\r\nPOST /c HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
    b"GET /a HTTP/1.1\r\nConnection: close\r\n\r\nGET /never HTTP/1.1\r\n\r\n",
    b"GET /a HTTP/1.0\r\n\r\nGET /never HTTP/1.0\r\n\r\n",
    b"GET /a HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\nGET /b HTTP/1.0\r\n\r\n",
    b"GET //evil.example/x HTTP/1.1\r\n\r\n",
    b"GET /nine\r\n", b"POST /nine\r\n", b"GET\r\n\r\n", b"\r\n\r\n", b"",
    b"GET / HTTP/2.0\r\n\r\n", b"GET / HTTP/1.x\r\n\r\n", b"GET / HTTP/1.\xb2\r\n\r\n",
    b"GET / HTTP/01234567890.1\r\n\r\n", b"GET / HTTP/1.1 extra\r\n\r\n", b"GET /<b>&x HTTP/9<i>\r\n\r\n",
    b"HEAD / HTTP/3.0\r\n\r\n", b"BREW /pot HTTP/1.1\r\n\r\n", b"get / HTTP/1.1\r\n\r\n",
    b"GET / HTTP/1.1\r\n" + b"X-Pad: y\r\n" * 99 + b"\r\n",
    b"GET / HTTP/1.1\r\n" + b"X-Pad: y\r\n" * 100 + b"\r\n",
    b"GET / HTTP/1.1\r\nX-Two: a\r\n  folded\r\n\r\n",
    b"GET / HTTP/1.1\r\nBad Header: 1\r\nX-Two: hidden\r\n\r\n",
    b"GET / HTTP/1.1\r\nX-Two: bare\rcarriage: return\r\nx-two: second\r\n\r\n",
    b"GET / HTTP/1.1\nX-Two: \xe9t\xe9\n\n",
    b"POST / HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 0\r\n\r\n",
    b"POST / HTTP/1.0\r\nExpect: 100-continue\r\n\r\n",
    b"GET /" + b"a" * 70000 + b" HTTP/1.1\r\n\r\n",
    b"GET / HTTP/1.1\r\nX-Long: " + b"a" * 70000 + b"\r\n\r\n",
]


@pytest.mark.parametrize("raw", REQUESTS, ids=range(len(REQUESTS)))
def test_request_handler_answers_byte_for_byte_as_http_server(raw):
    """Without http.server (and so without ssl) the listener parses requests and writes replies, error pages
    and headers exactly as BaseHTTPRequestHandler does; only the Date may differ."""
    replies = []
    for handler in (Stdlib, Ours):
        done = handler(raw, ("127.0.0.1", 40000), None)
        replies.append(re.sub(rb"\r\nDate: [^\r]*\r\n", b"\r\nDate: *\r\n", done.wfile.getvalue()))
    assert replies[1] == replies[0]


SMUGGLED = b"GET /healthz?smuggled HTTP/1.1\r\nHost: x\r\n\r\n"


@pytest.mark.parametrize("head", [
    b"GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nContent-Length: 44\r\n\r\n",
    b"GET /healthz HTTP/1.1\r\nHost: x\r\nno colon here\r\nContent-Length: 44\r\n\r\n",
    b"POST /ping/job HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nContent-Length: 44\r\n\r\n",
    b"GET /healthz HTTP/1.1\r\nHost: x\r\nX: a\r\r\nContent-Length: 44\r\n\r\n",
    b"POST /ping/job HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nX: a\r\r\nTransfer-Encoding: chunked\r\n\r\n",
    b"POST /ping/job HTTP/1.1\r\nHost: x\r\nContent-Length: 1_0\r\n\r\n",
    b"POST /ping/job HTTP/1.1\r\nHost: x\r\nContent-Length: \xa05\r\n\r\n",
], ids=["two-content-lengths", "malformed-header-hides-the-rest", "ping-two-content-lengths",
        "bare-cr-hides-content-length", "bare-cr-hides-transfer-encoding", "ping-length-int-reads-leniently",
        "ping-length-non-breaking-space"])
def test_listener_ambiguous_framing_gets_one_reply_and_the_connection_ends(head):
    """Request smuggling: a proxy in front may take the bytes after these headers for a body, the listener for
    a second request. The listener answers the first request only and closes, whatever follows."""
    pings = []
    server = MetricsServer(("127.0.0.1", 0), None, lambda: (True, "ok"),
                           on_ping=lambda name, body: (pings.append(name), (200, "ok"))[1])
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with socket.create_connection(server.server_address[:2], timeout=5) as sock:
            sock.sendall(head + SMUGGLED)
            reply = b""
            while chunk := sock.recv(65536):   # until the listener closes (a kept-alive one: timeout, fail)
                reply += chunk
    finally:
        server.shutdown()
        server.server_close()
    assert reply.count(b"HTTP/1.1 ") == 1, reply
    assert pings == []
    if head.startswith(b"POST"):
        assert reply.startswith(b"HTTP/1.1 400 ")
