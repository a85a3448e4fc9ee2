"""/metrics and /healthz: prometheus_client exposition of the agent's latest in-memory state.

The body is rendered when the state changes (after a batch of results), not
on scrape: a scrape never runs a check, reads SQLite or walks the jobs, so it
costs the same with 5 checks or 500 and concurrent scrapes do not contend.
"""

from __future__ import annotations

import gzip
import socket
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable, Iterable

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from agent.job import Job
from agent.result import Status
from checks import CHECK_TYPES
from checks.base import MetricSpec

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
PING_BODY_CAP = 10 * 1024


@dataclass(frozen=True)
class Family:
    """One exported metric family: the contract the exposition is tested against."""

    name: str
    kind: str          # gauge or counter
    help: str
    labels: tuple[str, ...]


AGENT_FAMILIES = (
    Family("maint_agent_info", "gauge", "Agent build information (always 1).", ("version",)),
    Family("maint_agent_start_time_seconds", "gauge", "Unix time the agent started.", ()),
    Family("maint_agent_config_last_reload_successful", "gauge", "1 when the last config (re)load succeeded.", ()),
    Family("maint_agent_config_last_reload_success_timestamp_seconds", "gauge",
           "Unix time of the last successful config load.", ()),
    Family("maint_store_write_errors_total", "counter", "Failed store writes (results kept and retried).", ()),
    Family("maint_store_pending_runs", "gauge", "Results not yet committed to the store.", ()),
    Family("maint_runner_workers", "gauge", "Size of the check worker pool.", ()),
    Family("maint_runner_abandoned_runs_total", "counter",
           "Runs that overran their timeout and were reported UNKNOWN while their thread was left behind.", ()),
    Family("maint_check_status", "gauge", "Latest status: 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN; `severity` is "
           "the check's configured incident level P0..P3.", ("check", "type", "severity")),
    Family("maint_check_pending_status", "gauge",
           "Status a threshold breach turns into once its `for` window has held (0 when none is pending).",
           ("check",)),
    Family("maint_check_last_run_timestamp_seconds", "gauge", "Unix time the latest run started.", ("check",)),
    Family("maint_check_last_duration_seconds", "gauge", "Duration of the latest run.", ("check",)),
    Family("maint_check_next_run_timestamp_seconds", "gauge", "Unix time the next run is due.", ("check",)),
    Family("maint_check_interval_seconds", "gauge", "Configured interval (interval checks only).", ("check",)),
    Family("maint_check_schedule_lag_seconds", "gauge", "Latest run's start minus its due time.", ("check",)),
    Family("maint_check_runs_total", "counter", "Completed runs by resulting status.", ("check", "status")),
    Family("maint_check_skipped_runs_total", "counter",
           "Runs skipped because the previous run of the check was still in flight.", ("check",)),
    Family("maint_check_remediation_exhausted", "gauge",
           "1 while a corrective action of the check used up its attempts (until it settles or is reset).",
           ("check",)),
    Family("maint_action_runs_total", "counter",
           "Action decisions by result: success, failure, dry_run (ran or would run); cooldown, limit, "
           "exhausted, window (skipped).", ("action", "result")),
    Family("maint_action_last_run_timestamp_seconds", "gauge", "Unix time the action last ran (or would have, "
           "in dry-run).", ("action",)),
    Family("maint_notifications_pending", "gauge",
           "Notifications stored in the outbox and not yet delivered (being retried with backoff).", ()),
    Family("maint_notification_failures_total", "counter",
           "Failed delivery attempts of notifications, by channel (slack, pagerduty, email); each failed retry "
           "counts.", ("channel",)),
)


def check_families() -> list[Family]:
    """The per-type metric families, from each check type's declared METRICS."""
    families = {}
    for cls in CHECK_TYPES.values():
        for spec in cls.METRICS:
            name = exported_name(cls.metric_prefix(), spec)
            families[name] = Family(name, "gauge", spec.help, ("check", *spec.labels))
    return list(families.values())


def contract() -> list[Family]:
    return list(AGENT_FAMILIES) + check_families()


def exported_name(prefix: str, spec: MetricSpec) -> str:
    return f"maint_{prefix}_{spec.name}"


class AgentState:
    """What the collector reads. The daemon replaces `jobs` with a new list (never mutates it in
    place), so a render sees either the old or the new set of checks."""

    def __init__(self, version: str, workers: int):
        self.version = version
        self.start_time = time.time()
        self.workers = workers
        self.jobs: list[Job] = []
        self.store_write_errors = 0
        self.store_pending = 0
        self.abandoned_runs = 0
        self.config_ok = True
        self.config_loaded_at = self.start_time
        self.action_results: dict[tuple[str, str], int] = {}   # (action, result) → count
        self.action_last_run: dict[str, float] = {}
        self.exhausted: dict[str, bool] = {}                   # check → remediation exhausted
        self.notifications_pending = 0
        self.notification_failures: dict[str, int] = {}        # channel → failed attempts


class StateCollector:
    def __init__(self, state: AgentState):
        self.state = state

    def collect(self) -> Iterable[Metric]:
        st = self.state
        fams = {f.name: f for f in AGENT_FAMILIES}

        def gauge(name, value=None):
            f = fams[name]
            g = GaugeMetricFamily(name, f.help, labels=f.labels or None)
            if value is not None:
                g.add_metric([], value)
            return g

        def counter(name, value=None):
            f = fams[name]
            c = CounterMetricFamily(name.removesuffix("_total"), f.help, labels=f.labels or None)
            if value is not None:
                c.add_metric([], value)
            return c

        info = gauge("maint_agent_info")
        info.add_metric([st.version], 1)
        yield info
        yield gauge("maint_agent_start_time_seconds", st.start_time)
        yield gauge("maint_agent_config_last_reload_successful", 1 if st.config_ok else 0)
        yield gauge("maint_agent_config_last_reload_success_timestamp_seconds", st.config_loaded_at)
        yield counter("maint_store_write_errors_total", st.store_write_errors)
        yield gauge("maint_store_pending_runs", st.store_pending)
        yield gauge("maint_runner_workers", st.workers)
        yield counter("maint_runner_abandoned_runs_total", st.abandoned_runs)
        yield from self._jobs(gauge, counter)
        yield from self._actions(gauge, counter)
        yield gauge("maint_notifications_pending", st.notifications_pending)
        failures = counter("maint_notification_failures_total")
        for channel, count in sorted(st.notification_failures.items()):
            failures.add_metric([channel], count)
        yield failures

    def _actions(self, gauge, counter) -> Iterable[Metric]:
        st = self.state
        exhausted, runs = gauge("maint_check_remediation_exhausted"), counter("maint_action_runs_total")
        last = gauge("maint_action_last_run_timestamp_seconds")
        for check, value in sorted(st.exhausted.items()):
            exhausted.add_metric([check], 1 if value else 0)
        for (action, result), count in sorted(st.action_results.items()):
            runs.add_metric([action, result], count)
        for action, at in sorted(st.action_last_run.items()):
            last.add_metric([action], at)
        yield from (exhausted, runs, last)

    def _jobs(self, gauge, counter) -> Iterable[Metric]:
        jobs = list(self.state.jobs)
        status, pending = gauge("maint_check_status"), gauge("maint_check_pending_status")
        last_run, duration = gauge("maint_check_last_run_timestamp_seconds"), gauge("maint_check_last_duration_seconds")
        next_run, interval = gauge("maint_check_next_run_timestamp_seconds"), gauge("maint_check_interval_seconds")
        lag, runs, skipped = (gauge("maint_check_schedule_lag_seconds"), counter("maint_check_runs_total"),
                              counter("maint_check_skipped_runs_total"))
        values: dict[str, GaugeMetricFamily] = {}
        specs = {f.name: f for f in check_families()}
        for job in jobs:
            name = job.name
            next_run.add_metric([name], job.next_due)
            seconds = getattr(job.trigger, "seconds", None)
            if seconds is not None:
                interval.add_metric([name], seconds)
            skipped.add_metric([name], job.skipped)
            for st in Status:
                runs.add_metric([name, st.label], job.runs.get(st.label, 0))
            latest = job.latest
            if latest is None:
                continue
            status.add_metric([name, job.check.TYPE, job.options.severity], int(latest.status))
            pending.add_metric([name], int(latest.pending))
            last_run.add_metric([name], latest.started)
            duration.add_metric([name], latest.duration)
            lag.add_metric([name], job.lag)
            prefix = job.check.metric_prefix()
            for s in latest.samples:
                spec = job.check.metric_spec(s.name)
                if spec is None:
                    continue
                metric = exported_name(prefix, spec)
                family = values.get(metric)
                if family is None:
                    f = specs[metric]
                    family = values[metric] = GaugeMetricFamily(metric, f.help, labels=f.labels)
                labels = dict(s.labels)
                family.add_metric([name] + [labels.get(label, "") for label in spec.labels], s.value)
        yield from (status, pending, last_run, duration, next_run, interval, lag, runs, skipped)
        yield from values.values()


class Exposition:
    """The rendered /metrics body, refreshed by the daemon after each state change."""

    def __init__(self, state: AgentState):
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(StateCollector(state))
        self._lock = threading.Lock()
        self._body = b""
        self._gzipped: bytes | None = None

    def refresh(self) -> None:
        """Render under the lock: the loop and the sink both refresh, and an older body must not win."""
        with self._lock:
            self._body, self._gzipped = generate_latest(self.registry), None

    def body(self, want_gzip: bool) -> tuple[bytes, bool]:
        with self._lock:
            if not want_gzip:
                return self._body, False
            if self._gzipped is None:
                self._gzipped = gzip.compress(self._body, compresslevel=5)
            return self._gzipped, True


class MetricsServer(ThreadingHTTPServer):
    """/metrics and /healthz over HTTP, or HTTPS with the TLS, client-certificate, basic-auth, header and
    rate-limit settings of an exporter-toolkit web config (`agent.webconfig`); `credentials` is the plain
    `http.basic_auth` pair, accepted beside the web config's users."""

    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], exposition: Exposition, healthy: Callable[[], tuple[bool, str]],
                 credentials: tuple[str, str] | None = None, *, web_config: str | None = None,
                 healthz_auth: bool = False, on_ping: Callable[[str, str], tuple[int, str]] | None = None):
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.exposition = exposition
        self.healthy = healthy
        self.on_ping = on_ping   # (path after /ping/, body) → (HTTP status, text): a job's heartbeat signal
        self.healthz_auth = healthz_auth
        self._security = None
        if web_config or credentials:
            from agent.webconfig import WebConfigFile, build_security   # only then: its models cost ~0.4 MiB
            if web_config:
                self._security = WebConfigFile(web_config, credentials).current
            else:
                static = build_security(None, credentials)
                self._security = lambda: static
        super().__init__(address, _Handler)

    def security(self):
        """The `agent.webconfig.WebSecurity` for the next connection or request; None when /metrics is open."""
        return self._security() if self._security else None

    def handle_error(self, request, client_address) -> None:
        """A failed TLS handshake (a scanner, a client without the required certificate) or a dropped
        connection is routine: one debug line, not a traceback on stderr."""
        import sys
        from agent import logs
        exc = sys.exc_info()[1]
        logs.event("http.connection_failed", "debug", client=client_address[0], error=f"{type(exc).__name__}: {exc}")

    def serve_in_thread(self) -> threading.Thread:
        thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.5}, name="http",
                                  daemon=True)
        thread.start()
        return thread


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 15   # an idle keep-alive connection (or a stalled TLS handshake) gives its thread back
    wbufsize = -1  # buffer headers and body into one send: no Nagle / delayed-ACK stall on keep-alive
    server: MetricsServer

    def setup(self) -> None:
        """TLS handshake here, in the connection's own thread, so a slow client never blocks accept()."""
        security = self.server.security()
        context = security.context if security else None
        if context is not None:
            self.request.settimeout(self.timeout)
            self.request = context.wrap_socket(self.request, server_side=True)
            self._check_client_san(security.allowed_sans)
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def _check_client_san(self, allowed: tuple[str, ...]) -> None:
        from agent.webconfig import allowed_san
        if not allowed_san(self.request.getpeercert(), allowed):
            self.request.close()
            raise ConnectionRefusedError("client certificate has none of tls_server_config.client_allowed_sans")

    def finish(self) -> None:
        super().finish()
        if hasattr(self.request, "getpeercert"):   # socketserver closes the plain socket, not our TLS wrapper
            try:
                self.request.shutdown(socket.SHUT_WR)
            except OSError:
                pass
            self.request.close()

    def do_GET(self) -> None:  # noqa: N802 (http.server naming)
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
        if path == "/":
            return self._send(200, b'<html><body><a href="/metrics">/metrics</a> '
                                   b'<a href="/healthz">/healthz</a></body></html>\n', "text/html; charset=utf-8")
        self._send(404, b"not found\n", "text/plain; charset=utf-8")

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
        self.wfile.flush()

    do_HEAD = do_GET

    def do_POST(self) -> None:  # noqa: N802 (http.server naming)
        """`POST /ping/NAME[/start|/fail|/EXIT]`: a job's heartbeat signal, with the auth of /metrics; the body
        (at most PING_BODY_CAP bytes) is the job's message. A browser's cross-site form cannot send one
        (requests with an Origin header are refused)."""
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
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if not 0 <= length <= PING_BODY_CAP:
            self.close_connection = True
            return self._send(413, f"body must be at most {PING_BODY_CAP} bytes\n".encode(),
                              "text/plain; charset=utf-8")
        body = self.rfile.read(length).decode("utf-8", "replace")
        code, text = self.server.on_ping(path.removeprefix("/ping/"), body)
        self._send(code, text.encode() + b"\n", "text/plain; charset=utf-8")

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - scrapes are not events
        pass
