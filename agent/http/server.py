"""The /metrics and /healthz listener, bounded so that nobody without credentials can exhaust the agent.

Three limits apply before any request is authenticated:

- **connections**: at most `http.max_connections` open at once. At the limit the connection that
  has waited longest for its request (idle, mid-handshake or trickling headers) is closed to make
  room; when every slot is busy serving a reply, the new one is closed at once — either way
  before its TLS handshake and before a byte is read. Refusing the newcomer instead would let a
  handful of idle sockets, reopened as they time out, lock Prometheus out for good.
- **time**: the TLS handshake and the request line and headers must be in within
  `http.header_timeout` of the accept, in total (not per read: a byte every few seconds is cut
  at the deadline). A kept-alive connection has as long again after each reply.
- **size**: the request line and headers may take MAX_HEADER_BYTES; beyond that the answer is
  431 and the connection closes. A request body is never read.

Each early close is counted (`maint_http_connections_rejected_total{reason}`).

Requests are read and answered by `_HttpRequestHandler`, the part of http.server's BaseHTTPRequestHandler
this listener uses, without http.server: that imports http.client, which imports ssl on every host, TLS or
not (with html and mimetypes ~1.9 MiB resident). ssl loads with a web config's TLS or a check that speaks TLS.
"""

from __future__ import annotations

import email.parser
import email.utils
import errno
import io
import re
import socket
import socketserver
import sys
import threading
import time
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Callable

from agent.http.metrics import CONTENT_TYPE, Exposition

PING_BODY_CAP = 10 * 1024        # a heartbeat's message (POST /ping/…)
MAX_HEADER_BYTES = 16 * 1024     # request line + headers; browsers and Prometheus send well under 2 KiB
REJECT_REASONS = ("limit", "evicted", "header_timeout", "header_too_large")
REPLY_TIMEOUT_SECONDS = 15.0     # to hand over one reply, in total: a client reading a byte at a time is cut
LINGER_SECONDS = 0.5             # after a 431, read and drop what the client still sends, so it sees the reply
LINGER_BYTES = 1024 * 1024       # (not an RST) — for this long or this much, whichever comes first
ACCEPT_BACKOFF_SECONDS = 0.1     # accept() failing for want of descriptors: pause instead of spinning
_HEAD_END = re.compile(rb"\r?\n\r?\n")


class _Dropped(Exception):
    """The connection was closed on purpose and counted: nothing to log."""


@dataclass(eq=False)
class Connection:
    """One accepted connection: its socket (plain, then TLS), whether it waits for a request and since when."""

    sock: socket.socket
    since: float                # start of the current wait: the accept, or the end of the previous reply
    deadline: float             # the wait's end (monotonic)
    clock: Callable[[], float] = time.monotonic
    waiting: bool = True        # False while a request is being answered: such a connection is never evicted
    evicted: bool = False
    closed: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def remaining(self) -> float:
        return self.deadline - self.clock()

    def upgrade(self, wrap: Callable[[socket.socket], socket.socket]) -> socket.socket:
        """Replace the socket by `wrap(socket)` (the TLS layer), so that `cut` reaches the new one; raise
        _Dropped when the connection was evicted meanwhile."""
        with self._lock:
            if self.evicted or self.closed:
                raise _Dropped
            self.sock = wrap(self.sock)
            return self.sock

    def cut(self) -> None:
        """Shut the connection down from another thread: a handshake or read blocked on it returns at once.
        The socket-level shutdown, not SSLSocket's, which would pull the TLS state from under that read."""
        with self._lock:
            if not self.closed:
                try:
                    socket.socket.shutdown(self.sock, socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> bool:
        """Close it; return False when it already was."""
        with self._lock:
            if self.closed:
                return False
            self.closed = True
            try:
                socket.socket.shutdown(self.sock, socket.SHUT_WR)   # FIN after the reply
            except OSError:
                pass
            self.sock.close()
            return True


class Connections:
    """The listener's open connections: the cap, who makes room for a newcomer, and the early-close counters.

    An evicted connection leaves the count at once but holds its descriptor until its thread has closed
    it; at most `limit` may be closing at a time, so the listener never holds more than 2 × limit.
    """

    def __init__(self, limit: int, header_timeout: float, clock: Callable[[], float] = time.monotonic):
        self.limit, self.header_timeout, self.clock = limit, header_timeout, clock
        self.changes = 0                # moves with every early close: the daemon re-renders /metrics then
        self._open: set[Connection] = set()
        self._closing = 0               # evicted, not yet closed by their threads
        self._rejected = dict.fromkeys(REJECT_REASONS, 0)
        self._lock = threading.Lock()

    def admit(self, sock: socket.socket) -> Connection | None:
        """Given a just-accepted socket, return its Connection, or None when every slot is busy serving
        (the caller closes it). At the limit the connection waiting longest is cut to make room."""
        now = self.clock()
        with self._lock:
            victim = None
            if len(self._open) >= self.limit:
                victim = min((c for c in self._open if c.waiting), key=lambda c: c.since, default=None)
                if victim is None or self._closing >= self.limit:
                    self._count("limit")
                    return None
                self._open.discard(victim)
                victim.evicted = True
                self._closing += 1
                self._count("evicted")
            conn = Connection(sock, now, now + self.header_timeout, self.clock)
            self._open.add(conn)
        if victim is not None:
            victim.cut()
        return conn

    def serving(self, conn: Connection) -> None:
        with self._lock:
            conn.waiting = False

    def waiting(self, conn: Connection) -> None:
        """A reply went out: the connection may wait for the next request, for header_timeout again."""
        with self._lock:
            now = self.clock()
            conn.waiting, conn.since, conn.deadline = True, now, now + self.header_timeout

    def reject(self, reason: str) -> None:
        with self._lock:
            self._count(reason)

    def close(self, conn: Connection) -> None:
        closed_now = conn.close()
        with self._lock:
            self._open.discard(conn)
            if closed_now and conn.evicted:
                self._closing -= 1

    def snapshot(self) -> tuple[int, dict[str, int]]:
        """(open connections, early closes by reason), for the exposition."""
        with self._lock:
            return len(self._open), dict(self._rejected)

    def _count(self, reason: str) -> None:
        self._rejected[reason] += 1
        self.changes += 1


class MetricsServer(socketserver.TCPServer):
    """/metrics and /healthz over HTTP, or HTTPS with the TLS, client-certificate, basic-auth, header and
    rate-limit settings of an exporter-toolkit web config (`agent.config.web`); `credentials` is the plain
    `http.basic_auth` pair, accepted beside the web config's users. One thread per admitted connection."""

    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], exposition: Exposition, healthy: Callable[[], tuple[bool, str]],
                 credentials: tuple[str, str] | None = None, *, web_config: str | None = None,
                 healthz_auth: bool = False, max_connections: int = 64, header_timeout: float = 5.0,
                 status_page: Callable[[], tuple] | None = None,
                 on_ping: Callable[[str, str], tuple[int, str]] | None = None):
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.exposition = exposition
        self.healthy = healthy
        self.healthz_auth = healthz_auth
        self.status_page = status_page   # () → (LoadedConfig, AgentState) for agent.http.statuspage; None: page off
        self.on_ping = on_ping   # (path after /ping/, body) → (HTTP status, text): a job's heartbeat signal
        self.connections = Connections(max_connections, header_timeout)
        self._security = None
        self._accept_failing = False
        if web_config or credentials:
            from agent.config.web import WebConfigFile, build_security   # only then: its models cost ~0.4 MiB
            if web_config:
                self._security = WebConfigFile(web_config, credentials).current
            else:
                static = build_security(None, credentials)
                self._security = lambda: static
        super().__init__(address, _Handler)

    def security(self):
        """The `agent.config.web.WebSecurity` for the next connection or request; None when /metrics is open."""
        return self._security() if self._security else None

    def get_request(self):
        """accept(); when the agent is out of descriptors the listening socket stays readable, so pause
        briefly rather than spin (as Go's net/http does), and say so once per episode."""
        try:
            accepted = super().get_request()
        except OSError as exc:
            if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                if not self._accept_failing:
                    from agent.plugin import logs
                    logs.event("http.accept_failed", "error", error=f"{exc.strerror} ({errno.errorcode[exc.errno]})")
                self._accept_failing = True
                time.sleep(ACCEPT_BACKOFF_SECONDS)
            raise
        self._accept_failing = False
        return accepted

    def process_request(self, request: socket.socket, client_address) -> None:
        """In the accepting thread: admit the connection (or close it at once) and serve it in its own thread."""
        conn = self.connections.admit(request)
        if conn is None:
            self.shutdown_request(request)
            return
        try:
            threading.Thread(target=self._serve, args=(conn, client_address), name="http-conn", daemon=True).start()
        except RuntimeError as exc:   # out of threads: the connection is closed, the listener keeps going
            from agent.plugin import logs
            logs.event("http.connection_failed", "warning", client=client_address[0], error=str(exc))
            self.connections.close(conn)

    def _serve(self, conn: Connection, client_address) -> None:
        try:
            _Handler(conn, client_address, self)
        except _Dropped:
            pass
        except Exception:
            if not conn.evicted:
                self.handle_error(conn.sock, client_address)
        finally:
            self.connections.close(conn)

    def handle_error(self, request, client_address) -> None:
        """A failed TLS handshake (a scanner, a client without the required certificate) or a dropped
        connection is routine: one debug line, not a traceback on stderr."""
        import sys
        from agent.plugin import logs
        exc = sys.exc_info()[1]
        logs.event("http.connection_failed", "debug", client=client_address[0], error=f"{type(exc).__name__}: {exc}")

    def serve_in_thread(self) -> threading.Thread:
        thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.5}, name="http",
                                  daemon=True)
        thread.start()
        return thread


class _ReplyWriter:
    """The handler's wfile: a reply is collected, then sent in one go (no Nagle or delayed-ACK stall between
    headers and body) within REPLY_TIMEOUT_SECONDS in all, however slowly the client reads."""

    closed = False

    def __init__(self, sock: socket.socket):
        self._sock = sock
        self._parts: list[bytes] = []

    def write(self, data: bytes) -> int:
        self._parts.append(bytes(data))
        return len(data)

    def flush(self) -> None:
        if not self._parts:
            return
        view, self._parts = memoryview(b"".join(self._parts)), []
        deadline = time.monotonic() + REPLY_TIMEOUT_SECONDS
        while view:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"the client did not take the reply within {REPLY_TIMEOUT_SECONDS:g}s")
            self._sock.settimeout(left)
            view = view[self._sock.send(view):]

    def close(self) -> None:
        self._parts, self.closed = [], True


_DIGITS = re.compile(r"[0-9]*")              # a Content-Length as every proxy reads it
_BARE_CR_OR_NUL = re.compile(rb"\r(?!\n)|\x00")   # in a request head: framing others may read otherwise
_MAX_LINE = 65536   # http.server's limits: a request line or header line, and header lines with the blank one
_MAX_HEADERS = 100
_ERROR_PAGE = """\
<!DOCTYPE HTML>
<html lang="en">
    <head>
        <meta charset="utf-8">
        <title>Error response</title>
    </head>
    <body>
        <h1>Error response</h1>
        <p>Error code: %(code)d</p>
        <p>Message: %(message)s.</p>
        <p>Error code explanation: %(code)s - %(explain)s.</p>
    </body>
</html>
"""


def _version_number(version: str) -> tuple[int, int] | None:
    """`HTTP/1.1` → (1, 1); None when it is not an HTTP version as http.server reads one."""
    if not version.startswith("HTTP/"):
        return None
    parts = version.split("/", 1)[1].split(".")
    if len(parts) != 2 or not all(part.isdigit() and len(part) <= 10 for part in parts):
        return None
    try:
        return int(parts[0]), int(parts[1])
    except ValueError:   # digits int() does not read, such as '²'
        return None


def _html_escape(text: str) -> str:
    """html.escape(text, quote=False), without html (its unescape table is 2,000 entries)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


class _HttpRequestHandler(socketserver.BaseRequestHandler):
    """BaseHTTPRequestHandler (Python 3.11) without http.server: request line, headers (the email parser
    reads them, as http.client's parse_headers does), method dispatch, keep-alive and Expect handling, and
    replies byte for byte as http.server writes them, error pages and Server header included. `rfile` holds
    the request; subclasses set `rfile` and `wfile` in setup() and implement do_GET and the like."""

    server_version = "BaseHTTP/0.6"   # what http.server sends: scrapers and tests see the same header
    sys_version = "Python/" + sys.version.split()[0]
    protocol_version = "HTTP/1.0"
    default_request_version = "HTTP/0.9"
    error_message_format = _ERROR_PAGE
    error_content_type = "text/html;charset=utf-8"
    responses = {status: (status.phrase, status.description) for status in HTTPStatus.__members__.values()}
    rfile: io.BufferedIOBase
    wfile: io.BufferedIOBase

    def handle(self) -> None:
        self.close_connection = True
        self.handle_one_request()
        while not self.close_connection:
            self.handle_one_request()

    def handle_one_request(self) -> None:
        try:
            self.raw_requestline = self.rfile.readline(_MAX_LINE + 1)
            if len(self.raw_requestline) > _MAX_LINE:
                self.requestline = self.request_version = self.command = ""
                self.send_error(HTTPStatus.REQUEST_URI_TOO_LONG)
                return
            if not self.raw_requestline:
                self.close_connection = True
                return
            if not self.parse_request():
                return
            method = getattr(self, "do_" + self.command, None)
            if method is None:
                self.send_error(HTTPStatus.NOT_IMPLEMENTED, "Unsupported method (%r)" % self.command)
                return
            method()
            self.wfile.flush()
        except TimeoutError:   # a read or a write timed out: the connection ends
            self.close_connection = True

    def parse_request(self) -> bool:
        """Request line and headers into command, path, request_version and headers; False (the error reply
        sent, if any) when they are malformed."""
        self.command = None
        self.request_version = version = self.default_request_version
        self.close_connection = True
        self.requestline = requestline = str(self.raw_requestline, "iso-8859-1").rstrip("\r\n")
        words = requestline.split()
        if not words:
            return False
        if len(words) >= 3:
            version = words[-1]
            number = _version_number(version)
            if number is None:
                self.send_error(HTTPStatus.BAD_REQUEST, "Bad request version (%r)" % version)
                return False
            if number >= (1, 1) and self.protocol_version >= "HTTP/1.1":
                self.close_connection = False
            if number >= (2, 0):
                self.send_error(HTTPStatus.HTTP_VERSION_NOT_SUPPORTED,
                                "Invalid HTTP version (%s)" % version.split("/", 1)[1])
                return False
            self.request_version = version
        if not 2 <= len(words) <= 3:
            self.send_error(HTTPStatus.BAD_REQUEST, "Bad request syntax (%r)" % requestline)
            return False
        command, path = words[:2]
        if len(words) == 2:
            self.close_connection = True
            if command != "GET":
                self.send_error(HTTPStatus.BAD_REQUEST, "Bad HTTP/0.9 request type (%r)" % command)
                return False
        self.command, self.path = command, path
        if self.path.startswith("//"):   # an open redirect would read it as a host
            self.path = "/" + self.path.lstrip("/")
        lines = []
        while True:
            line = self.rfile.readline(_MAX_LINE + 1)
            if len(line) > _MAX_LINE:
                self.send_error(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, "Line too long",
                                "got more than %d bytes when reading header line" % _MAX_LINE)
                return False
            lines.append(line)
            if len(lines) > _MAX_HEADERS:
                self.send_error(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, "Too many headers",
                                "got more than %d headers" % _MAX_HEADERS)
                return False
            if line in (b"\r\n", b"\n", b""):
                break
        self.headers = email.parser.Parser().parsestr(b"".join(lines).decode("iso-8859-1"))
        connection = self.headers.get("Connection", "").lower()
        if connection == "close":
            self.close_connection = True
        elif connection == "keep-alive" and self.protocol_version >= "HTTP/1.1":
            self.close_connection = False
        if (self.headers.get("Expect", "").lower() == "100-continue" and self.protocol_version >= "HTTP/1.1"
                and self.request_version >= "HTTP/1.1"):
            return self.handle_expect_100()
        return True

    def handle_expect_100(self) -> bool:
        self.send_response_only(HTTPStatus.CONTINUE)
        self.end_headers()
        return True

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """An error reply with http.server's HTML page; the connection closes after it."""
        short, long = self.responses.get(code, ("???", "???"))
        message = short if message is None else message
        explain = long if explain is None else explain
        self.send_response(code, message)
        self.send_header("Connection", "close")
        body = None
        if code >= 200 and code not in (HTTPStatus.NO_CONTENT, HTTPStatus.RESET_CONTENT, HTTPStatus.NOT_MODIFIED):
            body = (self.error_message_format % {"code": code, "message": _html_escape(message),
                                                 "explain": _html_escape(explain)}).encode("UTF-8", "replace")
            self.send_header("Content-Type", self.error_content_type)
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD" and body:
            self.wfile.write(body)

    def send_response(self, code: int, message: str | None = None) -> None:
        self.send_response_only(code, message)
        self.send_header("Server", f"{self.server_version} {self.sys_version}")
        self.send_header("Date", email.utils.formatdate(time.time(), usegmt=True))

    def send_response_only(self, code: int, message: str | None = None) -> None:
        if self.request_version != "HTTP/0.9":
            if message is None:
                message = self.responses[code][0] if code in self.responses else ""
            self._headers_buffer().append(f"{self.protocol_version} {code:d} {message}\r\n".encode("latin-1"))

    def send_header(self, keyword: str, value: str) -> None:
        if self.request_version != "HTTP/0.9":
            self._headers_buffer().append(f"{keyword}: {value}\r\n".encode("latin-1"))
        if keyword.lower() == "connection":
            if value.lower() == "close":
                self.close_connection = True
            elif value.lower() == "keep-alive":
                self.close_connection = False

    def end_headers(self) -> None:
        if self.request_version != "HTTP/0.9":
            self._headers_buffer().append(b"\r\n")
            self.wfile.write(b"".join(self._headers))
            self._headers = []

    def _headers_buffer(self) -> list[bytes]:
        if not hasattr(self, "_headers"):
            self._headers = []
        return self._headers


class _Handler(_HttpRequestHandler):
    protocol_version = "HTTP/1.1"
    server: MetricsServer

    def __init__(self, conn: Connection, client_address, server: MetricsServer):
        self.conn = conn
        self._unread = bytearray()   # bytes past the previous request's headers (a pipelined request)
        self._answered = 0
        super().__init__(conn.sock, client_address, server)

    def setup(self) -> None:
        """TLS handshake here, in the connection's own thread and within the header deadline, so a slow or
        silent client never blocks accept() and never holds its slot past the deadline."""
        security = self.server.security()
        context = security.context if security else None
        if context is not None:
            self.request = self.conn.upgrade(
                lambda sock: context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False))
            try:
                self._within_deadline()
                self.request.do_handshake()   # the timeout bounds the whole handshake, not each read
            except TimeoutError:
                self.server.connections.reject("header_timeout")
                raise _Dropped from None
            self._check_client_san(security.allowed_sans)
        self.connection = self.request
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.rfile = io.BytesIO()
        self.wfile = _ReplyWriter(self.connection)

    def _check_client_san(self, allowed: tuple[str, ...]) -> None:
        from agent.config.web import allowed_san
        if not allowed_san(self.request.getpeercert(), allowed):
            raise ConnectionRefusedError("client certificate has none of tls_server_config.client_allowed_sans")

    def _within_deadline(self) -> None:
        """Set the socket's timeout to what is left of the connection's deadline; raise TimeoutError past it."""
        left = self.conn.remaining()
        if left <= 0:
            raise TimeoutError("header deadline passed")
        self.request.settimeout(left)

    def handle_one_request(self) -> None:
        head = self._read_head()
        if head is None:
            self.close_connection = True
            return
        self.rfile = io.BytesIO(head)
        self.server.connections.serving(self.conn)
        try:
            super().handle_one_request()
            self.wfile.flush()   # an error reply (400, 501) is written but not flushed by handle_one_request
        except OSError:
            self.close_connection = True
        finally:
            self._answered += 1
            self.server.connections.waiting(self.conn)

    def _read_head(self) -> bytes | None:
        """Return the next request's line and headers (through the blank line), read within the connection's
        deadline and MAX_HEADER_BYTES; None when the connection is to end (closed, cut, timed out, too large)."""
        buffer = self._unread
        while True:
            end = _HEAD_END.search(buffer)
            if end is not None and end.end() <= MAX_HEADER_BYTES:
                head, self._unread = bytes(buffer[:end.end()]), buffer[end.end():]
                return head
            if len(buffer) >= MAX_HEADER_BYTES:
                self._refuse_too_large()
                return None
            try:
                self._within_deadline()
                chunk = self.request.recv(MAX_HEADER_BYTES - len(buffer))
            except TimeoutError:
                if buffer or not self._answered:   # a kept-alive connection idle to its deadline is no offence
                    self.server.connections.reject("header_timeout")
                return None
            except OSError:   # reset by the client, or cut to make room
                return None
            if not chunk:
                return None
            buffer += chunk

    def _refuse_too_large(self) -> None:
        """431 and close, without reading or keeping the rest; a short linger lets the client read the reply."""
        self.server.connections.reject("header_too_large")
        body = f"request line and headers exceed {MAX_HEADER_BYTES // 1024} KiB\n".encode()
        self.wfile.write(b"HTTP/1.1 431 Request Header Fields Too Large\r\nContent-Type: text/plain; charset=utf-8\r\n"
                         b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(body), body))
        try:
            self.wfile.flush()
            socket.socket.shutdown(self.request, socket.SHUT_WR)
            deadline, drained = time.monotonic() + LINGER_SECONDS, 0
            while drained < LINGER_BYTES and (left := deadline - time.monotonic()) > 0:
                self.request.settimeout(left)
                chunk = self.request.recv(64 * 1024)
                if not chunk:
                    break
                drained += len(chunk)
        except OSError:
            pass

    def parse_request(self) -> bool:
        if not super().parse_request():
            return False
        # Framing a proxy in front could read otherwise is answered (a POST with 400) and the connection ends,
        # so no byte after the request is read as another one.
        self.ambiguous = self._ambiguous_framing()
        if (self.ambiguous or self.headers.get("Content-Length", "0").strip() not in ("", "0")
                or "Transfer-Encoding" in self.headers):
            self.close_connection = True   # a body is never read: the connection ends with this reply
        return True

    def _ambiguous_framing(self) -> bool:
        """Whether a proxy in front could frame this request differently from the headers read here: two
        Content-Lengths, one that is not plain ASCII digits (`1_0`, `+5`, non-breaking spaces: int() reads what
        a proxy may not), a header line the email parser took as malformed or as the start of the body (a bare
        CR ends a line for it, hiding every header after it, Transfer-Encoding included), or a NUL."""
        lengths = self.headers.get_all("Content-Length") or []
        return (len(lengths) > 1 or any(not _DIGITS.fullmatch(value.strip(" \t")) for value in lengths)
                or bool(self.headers.defects) or bool(self.headers.get_payload())
                or _BARE_CR_OR_NUL.search(self.rfile.getvalue()) is not None)

    def handle_expect_100(self) -> bool:
        """Never invite a body ("100 Continue"): answer the request and close."""
        self.close_connection = True
        return True

    def finish(self) -> None:
        """Flush the last reply; the connection itself is closed by the server (`Connections.close`)."""
        try:
            self.wfile.flush()
        except OSError:
            pass

    def do_GET(self) -> None:  # noqa: N802 (BaseHTTPRequestHandler naming)
        security = self.server.security()
        path = self.path.split("?", 1)[0]
        if security and security.limiter and not security.limiter.allow():
            return self._send(429, b"too many requests\n", "text/plain; charset=utf-8")
        if (path != "/healthz" or self.server.healthz_auth) and not self._authorised(security):
            return self._send(401, b"unauthorised\n", "text/plain; charset=utf-8",
                              {"WWW-Authenticate": 'Basic realm="maint-agent"'})
        if path == "/healthz":
            ok, text = self.server.healthy()
            return self._send(200 if ok else 503, text.encode() + b"\n", "text/plain; charset=utf-8")
        if path == "/metrics":
            body, zipped = self.server.exposition.body("gzip" in self.headers.get("Accept-Encoding", ""))
            return self._send(200, body, CONTENT_TYPE, {"Content-Encoding": "gzip"} if zipped else None)
        if self.server.status_page is not None:
            from agent.http.statuspage import respond   # on the first page request only: idle memory stays as it was
            return self._send(*respond(path, self.path.partition("?")[2], *self.server.status_page()))
        if path == "/":
            return self._send(200, b'<html><body><a href="/metrics">/metrics</a> '
                                   b'<a href="/healthz">/healthz</a></body></html>\n', "text/html; charset=utf-8")
        self._send(404, b"not found\n", "text/plain; charset=utf-8")

    def do_POST(self) -> None:  # noqa: N802 (BaseHTTPRequestHandler naming)
        """`POST /ping/NAME[/start|/fail|/EXIT]`: a job's heartbeat signal, with the auth of /metrics; the body
        (at most PING_BODY_CAP bytes, read within the connection's deadline) is the job's message. A browser's
        cross-site form cannot send one (requests with an Origin header are refused)."""
        security = self.server.security()
        path = self.path.split("?", 1)[0]
        if security and security.limiter and not security.limiter.allow():
            return self._send(429, b"too many requests\n", "text/plain; charset=utf-8")
        if not self._authorised(security):
            return self._send(401, b"unauthorised\n", "text/plain; charset=utf-8",
                              {"WWW-Authenticate": 'Basic realm="maint-agent"'})
        if not path.startswith("/ping/") or self.server.on_ping is None:
            return self._send(404, b"not found\n", "text/plain; charset=utf-8")
        if "Origin" in self.headers:
            return self._send(403, b"cross-origin requests are refused\n", "text/plain; charset=utf-8")
        if self.ambiguous:
            return self._send(400, b"ambiguous request framing (repeated Content-Length or a malformed header)\n",
                              "text/plain; charset=utf-8")
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if not 0 <= length <= PING_BODY_CAP or "Transfer-Encoding" in self.headers:
            self.close_connection = True
            return self._send(413, f"body must be at most {PING_BODY_CAP} bytes, with a Content-Length\n".encode(),
                              "text/plain; charset=utf-8")
        self.server.connections.waiting(self.conn)   # a trickled body holds no slot others need, like headers
        body = self._read_body(length)
        self.server.connections.serving(self.conn)
        if body is None:
            self.close_connection = True
            return
        code, text = self.server.on_ping(path.removeprefix("/ping/"), body.decode("utf-8", "replace"))
        self._send(code, text.encode() + b"\n", "text/plain; charset=utf-8")

    def _read_body(self, length: int) -> bytes | None:
        """The request's body of `length` bytes, read within the connection's deadline; None when it does not
        arrive in time or the connection ends."""
        buffer = self._unread
        while len(buffer) < length:
            try:
                self._within_deadline()
                chunk = self.request.recv(length - len(buffer))
            except OSError:   # TimeoutError included
                return None
            if not chunk:
                return None
            buffer += chunk
        body, self._unread = bytes(buffer[:length]), buffer[length:]
        return body

    def _authorised(self, security) -> bool:
        return security is None or security.auth is None or security.auth.check(self.headers.get("Authorization"))

    def _send(self, code: int, body: bytes, content_type: str, headers: dict | None = None) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        security = self.server.security()
        for key, value in {**(security.headers if security else {}), **(headers or {})}.items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
        self.server.connections.waiting(self.conn)   # a client slow to take its reply holds no slot others need
        self.wfile.flush()

    do_HEAD = do_GET

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - scrapes are not events
        pass
