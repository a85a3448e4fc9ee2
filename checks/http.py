"""Service probes (seed 004 "Application Health Checks"): an HTTP request, a TLS certificate's
expiry, a TCP connect with an optional banner exchange.

Every probe is bounded by the run's timeout as a whole, not only per socket
operation: a server that accepts and never answers, or trickles a byte at a
time, ends as CRITICAL "timed out after …" before the runner gives up on the
thread. httpx costs ~5 MiB of RSS, so it is imported only by a check that runs.
"""

from __future__ import annotations

import json
import os
import re
import socket
import ssl
import time
from datetime import datetime, timezone
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from agent import __version__
from agent.plugin.address import split_target
from agent.plugin.fields import (
    AbsolutePath, Duration, HostPort, PositiveDuration, Secret, SecretStr, SecretUnavailable, Size, check_http_url,
    is_reference,
)
from agent.plugin.faults import agent_fault
from agent.plugin.result import CheckResult, sample
from agent.plugin.units import format_duration, format_size
from checks.base import Check, CheckContext, CheckOptions, DurationThresholds, MetricSpec, Threshold
from checks.net import SocketDeadline, describe_connect_error, describe_error, open_connection

MAX_REDIRECTS = 5
EXCERPT_CHARS = 300           # of a failing response's body, kept in the run's details
CREDENTIAL_HEADERS = ("authorization", "proxy-authorization", "cookie")
BODY_NOT_KEPT = ("(not kept: the request is authenticated and its answer may echo the credentials; "
                 "keep_body: true keeps it)")
BANNER_CAP_BYTES = 64 * 1024  # tcp: read at most this much looking for `expect`
DAY = 86400.0

_STATUS_RE = re.compile(r"^(?:([1-5])xx|(\d{3})(?:-(\d{3}))?)$")


def status_ranges(spec: tuple[int | str, ...]) -> tuple[tuple[int, int], ...]:
    """Given `(200, "3xx", "500-503")`, return inclusive ranges; raise ValueError on another form."""
    ranges = []
    for item in spec:
        match = _STATUS_RE.match(str(item).strip().lower())
        if not match:
            raise ValueError(f"status {item!r}: use a code (200), a class (2xx) or a range (200-299)")
        if match.group(1):
            low = int(match.group(1)) * 100
            ranges.append((low, low + 99))
            continue
        low = int(match.group(2))
        high = int(match.group(3) or low)
        if not 100 <= low <= high <= 599:
            raise ValueError(f"status {item!r}: codes are 100..599, low to high")
        ranges.append((low, high))
    return tuple(ranges)


def json_path(document: Any, path: str) -> Any:
    """Given parsed JSON and a dotted path (`checks.db`, `items.0.name`), return the value there;
    raise KeyError naming the first segment that is missing. A key containing a dot cannot be addressed."""
    value = document
    for part in path.split("."):
        if isinstance(value, dict) and part in value:
            value = value[part]
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            raise KeyError(part)
    return value


def json_equal(actual: Any, expected: Any) -> bool:
    """JSON equality without Python's coercions: `true` is not `1`, `"1"` is not `1`; `1` equals `1.0`."""
    if isinstance(actual, bool) or isinstance(expected, bool):
        return type(actual) is type(expected) and actual == expected
    if isinstance(actual, (int, float)) and isinstance(expected, (int, float)):
        return actual == expected
    if isinstance(actual, dict) and isinstance(expected, dict):
        return actual.keys() == expected.keys() and all(json_equal(actual[k], expected[k]) for k in actual)
    if isinstance(actual, list) and isinstance(expected, list):
        return len(actual) == len(expected) and all(map(json_equal, actual, expected))
    return type(actual) is type(expected) and actual == expected


class HttpCheck(Check):
    """One HTTP request; OK when the status is expected and the body matches (the health-check procedure warns above 200 ms).

    The thresholds apply to `response_seconds`: from sending the request to the last byte of the
    body read (at most `max_body_size`). A new connection per run, so the time includes connecting.
    Redirects are followed here, not by httpx, so the configured headers and basic auth reach the
    configured URL's origin only (httpx would carry custom headers such as X-Api-Key anywhere).
    A failing response's body is kept (an excerpt, in the details) only for an unauthenticated request
    or with `keep_body: true`: a server's error page that echoes the request's headers would otherwise
    put the credentials in the store, in whatever encoding it chose.
    """

    TYPE = "http"
    EXAMPLE = """
        - name: api-health
          type: http
          every: 1m
          url: http://127.0.0.1:3000/health
          expect_status: [200]
          expect_json: {status: ok}
          warning: 200ms          # response time
          critical: 2s
          for: 5m
          severity: P1
    """

    class Options(CheckOptions, DurationThresholds):
        type: Literal["http"]
        url: str = Field(..., description="http:// or https:// URL; credentials go in username/password")
        method: Literal["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"] = "GET"
        headers: dict[str, SecretStr] = Field(
            default_factory=dict, description="request headers; values may be secret references")
        body: str | None = Field(None, description="request body, sent as given")
        expect_status: tuple[int | str, ...] = Field(
            ("2xx",), min_length=1,
            description="accepted status codes: 200, a class 2xx or a range 200-399; a redirect is not a "
                        "success unless listed here or followed")
        expect_body: str | None = Field(None, description="CRITICAL unless the body contains this text")
        expect_json: dict[str, Any] | None = Field(
            None, description="dotted path → expected JSON value, e.g. {status: ok, checks.db: up, items.0.id: 1}")
        follow_redirects: bool = Field(False, description=f"follow up to {MAX_REDIRECTS} redirects")
        verify: bool = Field(True, description="verify the server's certificate and host name")
        ca_file: AbsolutePath | None = Field(
            None, description="PEM bundle to trust instead of the system store (an internal CA, a self-signed cert)")
        username: str | None = Field(None, description="basic auth user")
        password: SecretStr | None = Field(None, description="basic auth password")
        connect_timeout: PositiveDuration = Field(5.0, description="capped by the run's timeout, which bounds the "
                                                                   "whole request")
        max_body_size: Size = Field("1MiB", validate_default=True, description="read at most this much of the body")
        keep_body: bool | None = Field(
            None, description=f"keep the first {EXCERPT_CHARS} characters of a failing response's body in the "
                              "run's details; default: yes, unless the request is authenticated (username, or an "
                              "Authorization, Proxy-Authorization or Cookie header, or any header given as a secret), "
                              "whose error pages may echo the credentials")

        @field_validator("url")
        @classmethod
        def _http_url(cls, url):
            return check_http_url(url, "url", "http://host/… or https://host/…",
                                  "use username and password (a secret reference)")

        @field_validator("expect_status", mode="before")
        @classmethod
        def _one_or_many(cls, spec):
            return (spec,) if isinstance(spec, (int, str)) else spec

        @field_validator("expect_status")
        @classmethod
        def _statuses(cls, spec):
            status_ranges(spec)
            return spec

        @field_validator("expect_json")
        @classmethod
        def _paths(cls, expected):
            for path, value in (expected or {}).items():
                if not path or "" in path.split("."):
                    raise ValueError(f"json path {path!r} must be dotted keys such as checks.db")
                try:
                    json.dumps(value)
                except (TypeError, ValueError):
                    raise ValueError(f"json {path}: {value!r} is not a JSON value (quote it)") from None
            return expected

        @model_validator(mode="after")
        def _consistent(self):
            if self.method == "HEAD" and (self.expect_body is not None or self.expect_json is not None):
                raise ValueError("a HEAD response has no body: expect_body/expect_json need GET or POST")
            if self.ca_file and not self.verify:
                raise ValueError("ca_file is set but verify is false: drop one of them")
            if (self.username is None) != (self.password is None):
                raise ValueError("basic auth needs both username and password")
            return self

        def authenticated(self) -> bool:
            """True when the request carries credentials: basic auth, a credential header, or a header whose
            value is a secret (an X-Api-Key)."""
            return self.username is not None or any(
                key.lower() in CREDENTIAL_HEADERS or is_reference(value) for key, value in self.headers.items())

        def keeps_body(self) -> bool:
            return self.keep_body if self.keep_body is not None else not self.authenticated()

    METRICS = (
        MetricSpec("status_code", "count", "HTTP status code of the last response."),
        MetricSpec("response_seconds", "seconds",
                   "Time from starting the request (connect included) to the end of the body read."),
        MetricSpec("response_body_bytes", "bytes", "Body bytes read (at most the check's max_body_size)."),
    )
    THRESHOLD = Threshold(("response_seconds",), "seconds")

    def __init__(self, options):
        super().__init__(options)
        self._statuses = status_ranges(options.expect_status)
        self._client = None      # one httpx.Client per check, made on its first run …
        self._ca_stamp = None    # … and again when ca_file changes (identity, size, mtime when it was loaded)

    def run(self, ctx: CheckContext) -> CheckResult:
        started = ctx.monotonic()
        opts = self.options
        try:
            headers = {key: Secret(value).reveal() for key, value in opts.headers.items()}
            auth = (opts.username, Secret(opts.password).reveal()) if opts.username is not None else None
        except SecretUnavailable as exc:
            return CheckResult.unknown(f"cannot read a secret: {exc.reference}: {exc.reason}")
        try:
            client = self._current_client()
        except (OSError, ssl.SSLError) as exc:
            if fault := agent_fault(exc):
                return fault.result()
            return CheckResult.unknown(f"cannot load ca_file {opts.ca_file}: {exc.strerror or exc}")
        import httpx

        budget = ctx.remaining(started)
        connect = min(opts.connect_timeout, budget)
        timeout = httpx.Timeout(connect=connect, read=budget, write=budget, pool=budget)
        body, truncated, response = bytearray(), False, None
        t0 = time.perf_counter()
        with SocketDeadline(budget) as deadline:
            try:
                response = self._send(httpx, client, headers, auth, timeout, deadline)
                try:
                    for chunk in response.iter_bytes():
                        room = opts.max_body_size - len(body)
                        body += chunk[:room]
                        if len(chunk) > room:
                            truncated = True
                            break
                finally:
                    response.close()
                elapsed = time.perf_counter() - t0
            except httpx.HTTPError as exc:
                if fault := agent_fault(exc):   # httpx wraps the OSError of the agent's own socket()
                    return fault.result()
                phase = "reading the body" if response is not None else "waiting for the response"
                return CheckResult.critical(self._failure(httpx, exc, deadline.fired, connect, ctx.timeout, phase))
        return self._verdict(response, bytes(body), truncated, elapsed)

    def _send(self, httpx, client, headers: dict[str, str], auth, timeout, deadline: SocketDeadline):
        """Given the revealed headers and auth, send the request and follow redirects when configured;
        return the last response, open for streaming its body; raise httpx.TooManyRedirects past
        MAX_REDIRECTS.

        Once a redirect leaves the url's origin (scheme, host and port: another host, another port,
        https to http) the configured headers and basic auth are dropped for the rest of the chain.
        """
        opts = self.options
        request = client.build_request(
            opts.method, opts.url, headers=headers, content=opts.body.encode() if opts.body is not None else None,
            timeout=timeout, extensions={"trace": _watch_connections(deadline)})
        origin, trusted = _origin(request.url), True
        for _ in range(MAX_REDIRECTS + 1):
            if trusted and _origin(request.url) != origin:
                trusted = False
                for key in [*headers, *(("Authorization",) if auth else ())]:
                    request.headers.pop(key, None)
            response = client.send(request, auth=auth if trusted else None, stream=True)
            if not opts.follow_redirects or response.next_request is None:
                return response
            response.close()
            request = response.next_request
        raise httpx.TooManyRedirects(f"more than {MAX_REDIRECTS} redirects", request=request)

    def _current_client(self):
        """The check's httpx.Client, made again when ca_file has changed since it was loaded, so a
        rotated CA is trusted on the next run rather than after a restart (a stat per run); raise
        OSError or ssl.SSLError when ca_file cannot be read or loaded."""
        stamp = None
        if self.options.ca_file:
            st = os.stat(self.options.ca_file)
            stamp = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
        if self._client is None or stamp != self._ca_stamp:
            client = self._make_client()
            if self._client is not None:
                self._client.close()
            self._client, self._ca_stamp = client, stamp
        return self._client

    def _make_client(self):
        import httpx

        opts = self.options
        tls_possible = opts.url.startswith("https:") or opts.follow_redirects
        # system trust store (what update-ca-certificates maintains), not httpx's bundled certifi;
        # a plain-http probe that cannot be redirected never needs one (it costs ~2 MiB)
        verify = ssl.create_default_context(cafile=opts.ca_file) if opts.verify and tls_possible else False
        return httpx.Client(
            verify=verify, follow_redirects=False,   # followed by _send, which keeps secrets to the origin
            trust_env=False,   # no proxy or .netrc from the daemon's environment: probe the service directly
            limits=httpx.Limits(max_keepalive_connections=0),   # a fresh connection per run, as a client sees it
            headers={"User-Agent": f"maint-agent/{__version__}", "Accept-Encoding": "identity"})

    @staticmethod
    def _failure(httpx, exc: Exception, fired: bool, connect: float, timeout: float, phase: str) -> str:
        if isinstance(exc, httpx.ConnectTimeout) and not fired:
            return f"connect timed out after {format_duration(connect)}"
        if fired or isinstance(exc, httpx.TimeoutException):
            return f"timed out after {format_duration(timeout)} {phase}"
        if isinstance(exc, httpx.TooManyRedirects):
            return f"more than {MAX_REDIRECTS} redirects"
        cause = exc   # httpx wraps httpcore's error, which wraps (as context) the socket's OSError
        while cause is not None and not isinstance(cause, OSError):
            cause = cause.__cause__ or cause.__context__
        if cause is not None:
            return describe_error(cause, connect)
        return f"{type(exc).__name__}: {exc}"

    def _verdict(self, response, body: bytes, truncated: bool, elapsed: float) -> CheckResult:
        opts = self.options
        code = response.status_code
        samples = (sample("status_code", code), sample("response_seconds", elapsed),
                   sample("response_body_bytes", len(body)))
        head = f"{code} {response.reason_phrase}".strip()
        problems = []
        if not any(low <= code <= high for low, high in self._statuses):
            text = f"status {head}, expected {', '.join(map(str, opts.expect_status))}"
            location = response.headers.get("location")
            if location and 300 <= code < 400:
                text += f" (redirect to {location.split('?', 1)[0]}; follow_redirects is off)"
            problems.append(text)
        else:
            problems += self._body_problems(response, body, truncated)
        if problems:
            if not opts.keeps_body():
                return CheckResult.critical("; ".join(problems), samples, body_excerpt=BODY_NOT_KEPT)
            excerpt = body[:EXCERPT_CHARS].decode("utf-8", "replace")
            return CheckResult.critical("; ".join(problems), samples, body_excerpt=excerpt)
        size = format_size(len(body)) + (" (truncated)" if truncated else "")
        return CheckResult.ok(f"{head} in {format_duration(elapsed)}, {size}", samples)

    def _body_problems(self, response, body: bytes, truncated: bool) -> list[str]:
        opts = self.options
        scope = f" (first {format_size(opts.max_body_size)})" if truncated else ""
        problems = []
        if opts.expect_body is not None:
            try:
                text = body.decode(response.charset_encoding or "utf-8", "replace")
            except LookupError:
                text = body.decode("utf-8", "replace")
            if opts.expect_body not in text:
                problems.append(f"body{scope} does not contain {opts.expect_body!r}")
        if opts.expect_json is not None:
            try:
                document = json.loads(body)
            except ValueError as exc:
                return problems + [f"body{scope} is not JSON: {exc}"]
            for path, expected in opts.expect_json.items():
                try:
                    actual = json_path(document, path)
                except KeyError as exc:
                    problems.append(f"json {path}: no {exc.args[0]!r} in the response")
                    continue
                if not json_equal(actual, expected):
                    problems.append(f"json {path} is {_short_json(actual)}, expected {_short_json(expected)}")
        return problems


def _short_json(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 80 else text[:77] + "..."


def _origin(url) -> tuple[str, str, int]:
    """(scheme, host, port) of an httpx.URL, the port filled in when it is the scheme's default."""
    return url.scheme, url.host, url.port or {"http": 80, "https": 443}.get(url.scheme, 0)


def _watch_connections(deadline: SocketDeadline):
    """An httpcore `trace` callback (a documented extension) that hands each new TCP socket to deadline."""

    def trace(event: str, info: dict) -> None:
        if event != "connection.connect_tcp.complete":
            return
        sock = info["return_value"].get_extra_info("socket")
        if sock is not None:
            deadline.watch(sock)

    return trace


def cert_validity(der: bytes) -> tuple[float, float]:
    """Given a DER X.509 certificate, return (notBefore, notAfter) as Unix times; raise ValueError
    when it is not one. Walks the fixed start of TBSCertificate (RFC 5280 §4.1), so no X.509
    library is needed for the one field this check reads."""

    def element(pos: int, tag: int | None = None) -> tuple[int, int, int]:
        if pos + 2 > len(der):
            raise ValueError("truncated certificate")
        found, length, pos = der[pos], der[pos + 1], pos + 2
        if length & 0x80:
            count = length & 0x7F
            length, pos = int.from_bytes(der[pos:pos + count], "big"), pos + count
        if (tag is not None and found != tag) or pos + length > len(der):
            raise ValueError("not a DER X.509 certificate")
        return found, pos, pos + length

    _, certificate, _ = element(0, 0x30)
    _, pos, _ = element(certificate, 0x30)            # tbsCertificate
    tag, _, end = element(pos)
    if tag == 0xA0:                                   # [0] version, absent in v1 certificates
        pos = end
    for _ in ("serialNumber", "signature", "issuer"):
        pos = element(pos)[2]
    _, validity, _ = element(pos, 0x30)
    not_before = element(validity)
    not_after = element(not_before[2])
    return _asn1_time(der, *not_before), _asn1_time(der, *not_after)


def _asn1_time(der: bytes, tag: int, start: int, end: int) -> float:
    text = der[start:end].decode("ascii")
    if tag == 0x17:    # UTCTime YYMMDDHHMMSSZ: years 50..99 are 19xx (RFC 5280 §4.1.2.5.1)
        parsed = datetime.strptime(text, "%y%m%d%H%M%SZ")
        if parsed.year >= 2050:
            parsed = parsed.replace(year=parsed.year - 100)
    elif tag == 0x18:  # GeneralizedTime YYYYMMDDHHMMSSZ
        parsed = datetime.strptime(text, "%Y%m%d%H%M%SZ")
    else:
        raise ValueError(f"unexpected time tag 0x{tag:02x}")
    return parsed.replace(tzinfo=timezone.utc).timestamp()


def _utc(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


class TlsCertCheck(Check):
    """Time until the server's leaf certificate expires; thresholds are minimums in days (`14d`).

    The certificate is fetched without verification, so a self-signed or internal one is
    measured too (chain and host name are the `http` check's business). An expired or
    not-yet-valid certificate is CRITICAL regardless of the thresholds.
    """

    TYPE = "tls_cert"
    EXAMPLE = """
        - name: public-tls
          type: tls_cert
          schedule: daily
          target: 127.0.0.1:443
          server_name: api.example.com
          warning: 21d            # time left before the certificate expires
          critical: 7d
    """
    METRIC_PREFIX = "tls"

    class Options(CheckOptions, DurationThresholds):
        type: Literal["tls_cert"]
        target: HostPort = Field(..., description="host:port, e.g. api.example.com:443 or [::1]:8443")
        server_name: str | None = Field(None, description="SNI name to ask for; default: the target's host")
        connect_timeout: PositiveDuration = Field(5.0, description="capped by the run's timeout, which bounds the "
                                                                   "handshake")
        warning: Duration | None = Field(14 * DAY, description="WARNING when the certificate expires sooner")
        critical: Duration | None = Field(3 * DAY, description="CRITICAL when the certificate expires sooner")

    METRICS = (
        MetricSpec("cert_expiry_seconds", "seconds",
                   "Time until the leaf certificate's notAfter (negative once expired)."),
        MetricSpec("cert_not_after_timestamp_seconds", "seconds", "Unix time of the leaf certificate's notAfter."),
    )
    THRESHOLD = Threshold(("cert_expiry_seconds",), "seconds", bad_when="below")

    def run(self, ctx: CheckContext) -> CheckResult:
        started = ctx.monotonic()
        host, port = split_target(self.options.target)
        name = self.options.server_name or host
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        timeout = min(self.options.connect_timeout, ctx.remaining(started))
        try:
            sock, _ = open_connection(host, port, timeout)
        except OSError as exc:
            return CheckResult.critical(describe_connect_error(exc, timeout))
        with sock:
            sock.settimeout(max(ctx.remaining(started), 1e-3))
            try:
                with context.wrap_socket(sock, server_hostname=name) as tls:
                    der = tls.getpeercert(binary_form=True)
            except OSError as exc:
                return CheckResult.critical(describe_error(exc, ctx.timeout))
        if not der:
            return CheckResult.critical("the server sent no certificate")
        try:
            not_before, not_after = cert_validity(der)
        except ValueError as exc:
            return CheckResult.unknown(f"cannot read the certificate: {exc}")
        now = ctx.wall()
        left = not_after - now
        samples = (sample("cert_expiry_seconds", left), sample("cert_not_after_timestamp_seconds", not_after))
        if left <= 0:
            return CheckResult.critical(f"certificate expired {format_duration(-left)} ago ({_utc(not_after)})",
                                        samples)
        if not_before > now:
            return CheckResult.critical(f"certificate not valid before {_utc(not_before)}", samples)
        return CheckResult.ok(f"certificate for {name} expires in {left / DAY:.1f} days ({_utc(not_after)})",
                              samples)


class TcpCheck(Check):
    """TCP connect time to host:port, optionally a request/banner exchange (Redis PING → +PONG, SMTP 220).

    Thresholds apply to the connect time; `expect` missing from the reply is CRITICAL.
    """

    TYPE = "tcp"
    EXAMPLE = """
        - name: smtp-banner
          type: tcp
          every: 1m
          target: 127.0.0.1:25
          expect: "220 "
          warning: 100ms          # connect time
    """

    class Options(CheckOptions, DurationThresholds):
        type: Literal["tcp"]
        target: HostPort = Field(..., description="host:port, e.g. 127.0.0.1:6379 or [::1]:25")
        connect_timeout: PositiveDuration = Field(5.0, description="capped by the run's timeout")
        send: str | None = Field(None, description='text sent after connecting (YAML "PING\\r\\n" for CR LF)')
        expect: str | None = Field(
            None, description=f"CRITICAL unless the reply contains this text within the timeout "
                              f"(first {BANNER_CAP_BYTES // 1024} KiB)")

    METRICS = (
        MetricSpec("connect_seconds", "seconds", "TCP connect time."),
        MetricSpec("response_seconds", "seconds", "Time from connected to the expected reply (with `expect` only)."),
    )
    THRESHOLD = Threshold(("connect_seconds",), "seconds")

    def run(self, ctx: CheckContext) -> CheckResult:
        started = ctx.monotonic()
        opts = self.options
        host, port = split_target(opts.target)
        timeout = min(opts.connect_timeout, ctx.remaining(started))
        try:
            sock, connect_seconds = open_connection(host, port, timeout)
        except OSError as exc:
            return CheckResult.critical(describe_connect_error(exc, timeout))
        samples = [sample("connect_seconds", connect_seconds)]
        summary = f"connected in {format_duration(connect_seconds)}"
        with sock:
            t0 = time.perf_counter()
            try:
                if opts.send is not None:
                    sock.settimeout(max(ctx.remaining(started), 1e-3))
                    sock.sendall(opts.send.encode())
                if opts.expect is None:
                    return CheckResult.ok(summary, samples)
                received, problem = _read_until(sock, opts.expect.encode(), lambda: ctx.remaining(started))
            except OSError as exc:
                return CheckResult.critical(f"{summary}; then {describe_error(exc, ctx.timeout)}", samples)
        if problem:
            if problem == "timed out":
                problem = f"timed out after {format_duration(ctx.timeout)}"
            got = received[:60].decode("utf-8", "replace")
            return CheckResult.critical(f"{summary}; {problem} waiting for {opts.expect!r} (got {got!r})", samples,
                                        received=received[:EXCERPT_CHARS].decode("utf-8", "replace"))
        response = time.perf_counter() - t0
        samples.append(sample("response_seconds", response))
        return CheckResult.ok(f"{summary}, {opts.expect!r} after {format_duration(response)}", samples)


def _read_until(sock: socket.socket, wanted: bytes, remaining) -> tuple[bytes, str]:
    """Read until `wanted` appears; return (bytes read, "" or why it never did)."""
    received = bytearray()
    while wanted not in received:
        left = remaining()
        if left <= 0:
            return bytes(received), "timed out"
        sock.settimeout(left)
        try:
            chunk = sock.recv(4096)
        except TimeoutError:
            continue
        if not chunk:
            return bytes(received), "connection closed"
        received += chunk
        if len(received) > BANNER_CAP_BYTES:
            return bytes(received), f"no match in the first {format_size(BANNER_CAP_BYTES)}"
    return bytes(received), ""
