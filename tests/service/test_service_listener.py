"""/metrics under attack by clients without credentials, against the real agent: floods of idle and
half-handshaken connections, trickled headers, oversized headers; and a check that fails because the agent
itself ran out of descriptors, which must not restart anything.

The agent's descriptor limit is lowered on the running process (prlimit), as `LimitNOFILE=` would set it
under systemd (PID 1 is not systemd here).
"""

from __future__ import annotations

import resource
import socket
import sqlite3
import ssl
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psutil
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import AgentProcess, wait_for
from tests.service.conftest import Pki, speak_https

MiB = 1024 * 1024


def agent_config(header_timeout: str = "5s", max_connections: int = 16, web_config: Path | None = None) -> str:
    web = f"\n          web_config: {web_config}" if web_config else ""
    return f"""
        agent: {{state_dir: "{{state}}"}}
        http:
          listen: 127.0.0.1:{{port}}
          max_connections: {max_connections}
          header_timeout: {header_timeout}{web}
        checks:
          - {{name: load, type: load, every: 1s}}
    """


def tls_only(tmp_path: Path, pki: Pki) -> Path:
    path = tmp_path / "web-config.yml"
    path.write_text(f"tls_server_config:\n  cert_file: {pki.server_cert}\n  key_file: {pki.server_key}\n")
    return path


def tls_agent(agent_factory, tmp_path, pki, **options) -> AgentProcess:
    agent = agent_factory(agent_config(web_config=tls_only(tmp_path, pki), **options))
    return speak_https(agent, ssl.create_default_context(cafile=str(pki.ca)), {}).start()


def client_hello() -> bytes:
    """The first flight of a real TLS client: what a half-open handshake starts with."""
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context.wrap_bio(incoming, outgoing, server_hostname="localhost")
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


def lowest_free_descriptor(pid: int) -> int:
    used = {int(entry.name) for entry in Path(f"/proc/{pid}/fd").iterdir()}
    return next(n for n in range(len(used) + 1) if n not in used)


def limit_descriptors(pid: int, soft: int) -> tuple[int, int]:
    """Lower the process's RLIMIT_NOFILE soft limit; return the previous limits."""
    return resource.prlimit(pid, resource.RLIMIT_NOFILE, (soft, resource.prlimit(pid, resource.RLIMIT_NOFILE)[1]))


def samples(agent: AgentProcess, family: str) -> dict[str, float]:
    """The family's samples by their one label value ('' without labels)."""
    for f in text_string_to_metric_families(agent.metrics()):
        if f.name == family:
            return {next(iter(s.labels.values()), ""): s.value for s in f.samples}
    return {}


def timed_get(agent: AgentProcess, path: str) -> tuple[int, float]:
    started = time.monotonic()
    status, _ = agent.get(path)
    return status, time.monotonic() - started


# --- connection floods ---------------------------------------------------------------------------------

def test_listener_idle_and_half_handshake_floods_leave_metrics_and_healthz_answering(agent_factory, tmp_path, pki):
    agent = tls_agent(agent_factory, tmp_path, pki, max_connections=16)
    # what the unit's LimitNOFILE= leaves the listener: room for the cap, far less than the flood
    limit_descriptors(agent.proc.pid, lowest_free_descriptor(agent.proc.pid) + 48)
    hello = client_hello()
    idle = [socket.create_connection(("127.0.0.1", agent.port), timeout=5) for _ in range(200)]
    half = []
    for _ in range(50):
        sock = socket.create_connection(("127.0.0.1", agent.port), timeout=5)
        sock.sendall(hello[: len(hello) // 2])
        half.append(sock)
    attackers = idle + half
    try:
        # all but the 16 newest are closed by the agent at once, long before any deadline
        wait_for(lambda: closed_by_server(attackers) >= len(attackers) - 16, timeout=3,
                 what="the agent to close the connections beyond its limit")
        for path in ("/metrics", "/healthz"):
            status, seconds = timed_get(agent, path)
            assert status == 200 and seconds < 1.0, (path, status, seconds)
        rejected = wait_for(lambda: sum(samples(agent, "maint_http_connections_rejected").values()) >= 234 or None,
                            timeout=5, what="the early closes counted in /metrics")
        assert rejected
        assert samples(agent, "maint_http_open_connections")[""] <= 16
    finally:
        for sock in attackers:
            sock.close()


def test_listener_clients_that_never_read_their_replies_do_not_lock_out_a_scrape(agent_factory):
    agent = agent_factory(agent_config(max_connections=8, header_timeout="2s")).start()
    pipelined = b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n" * 200
    hogs = []
    for _ in range(8):   # every slot busy sending replies nobody reads
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1)
        sock.connect(("127.0.0.1", agent.port))
        sock.sendall(pipelined)
        hogs.append(sock)
    try:
        for _ in range(3):
            status, seconds = timed_get(agent, "/metrics")
            assert status == 200 and seconds < 1.0, (status, seconds)
    finally:
        for sock in hogs:
            sock.close()


def test_listener_trickled_ping_bodies_do_not_lock_out_a_scrape(agent_factory):
    agent = agent_factory(agent_config(max_connections=8, header_timeout="2s")).start()
    slow = []
    for _ in range(16):   # more than the limit: a body promised, then a byte at a time (never, here)
        sock = socket.create_connection(("127.0.0.1", agent.port), timeout=5)
        sock.sendall(b"POST /ping/x HTTP/1.1\r\nHost: x\r\nContent-Length: 10000\r\n\r\nz")
        slow.append(sock)
    try:
        for _ in range(3):
            status, seconds = timed_get(agent, "/metrics")
            assert status == 200 and seconds < 1.0, (status, seconds)
    finally:
        for sock in slow:
            sock.close()


def closed_by_server(socks: list[socket.socket]) -> int:
    """How many of `socks` the server has closed (EOF or reset waiting), without blocking."""
    closed = 0
    for sock in socks:
        sock.setblocking(False)   # with a timeout, recv would first wait for data whatever its flags
        try:
            closed += sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
        except BlockingIOError:
            pass
        except ConnectionResetError:
            closed += 1
    return closed


# --- one deadline for the handshake and the headers ----------------------------------------------------

def closed_after(port: int, payload: bytes, every: float, give_up: float) -> float:
    """Send `payload` a byte every `every` seconds; return the seconds until the server closed the connection
    (pytest.fail after `give_up`)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    started = time.monotonic()
    try:
        for i in range(len(payload)):
            try:
                sock.sendall(payload[i:i + 1])
                sock.settimeout(every)
                if sock.recv(4096) == b"":
                    return time.monotonic() - started
            except TimeoutError:
                pass
            except (ConnectionResetError, BrokenPipeError):
                return time.monotonic() - started
            if time.monotonic() - started > give_up:
                break
        pytest.fail(f"still open after {time.monotonic() - started:.1f}s")
    finally:
        sock.close()


def test_listener_headers_trickled_a_byte_a_second_cut_at_the_total_deadline(agent_factory):
    agent = agent_factory(agent_config(header_timeout="2s")).start()
    seconds = closed_after(agent.port, b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 100, every=1.0,
                           give_up=4.0)
    assert 1.8 <= seconds <= 3.0, seconds
    counted = wait_for(lambda: samples(agent, "maint_http_connections_rejected").get("header_timeout", 0) >= 1,
                       timeout=5, what="header_timeout counted")
    assert counted


def test_listener_tls_handshake_trickled_cut_at_the_total_deadline(agent_factory, tmp_path, pki):
    agent = tls_agent(agent_factory, tmp_path, pki, header_timeout="2s")
    seconds = closed_after(agent.port, client_hello(), every=0.5, give_up=4.0)
    assert 1.8 <= seconds <= 3.0, seconds


def test_listener_kept_alive_connection_still_serves_several_requests(agent_factory):
    agent = agent_factory(agent_config(header_timeout="2s")).start()
    with socket.create_connection(("127.0.0.1", agent.port), timeout=5) as sock:
        for _ in range(3):
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            reply = b""
            while not reply.endswith(b"\n") or b"\r\n\r\n" not in reply:
                reply += sock.recv(4096)
            assert reply.startswith(b"HTTP/1.1 200 ")


# --- header size -----------------------------------------------------------------------------------------

# 99 headers of 64 KB: under http.server's own limits (100 headers, 64 KiB a line), so without a cap on the
# total it parses all of them
HUGE = b"GET /metrics HTTP/1.1\r\n" + b"".join(b"X-Pad-%02d: %s\r\n" % (i, b"a" * 64000) for i in range(99)) + b"\r\n"


def first_line_of_reply(port: int, request: bytes) -> bytes:
    """Send `request` from another thread (the server may stop reading) and return the reply's status line."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        def send() -> None:
            try:
                sock.sendall(request)
            except OSError:
                pass   # the server closed after its reply: expected
        sender = threading.Thread(target=send, daemon=True)
        sender.start()
        reply = b""
        while b"\r\n" not in reply:
            chunk = sock.recv(4096)
            if not chunk:
                break
            reply += chunk
        sender.join(10)
        return reply.split(b"\r\n", 1)[0]


def test_listener_huge_headers_get_431_and_agent_memory_stays_flat(agent_factory):
    agent = agent_factory(agent_config()).start()
    process = psutil.Process(agent.proc.pid)
    assert agent.get("/metrics")[0] == 200
    before = process.memory_info().rss
    with ThreadPoolExecutor(10) as pool:
        lines = list(pool.map(lambda _: first_line_of_reply(agent.port, HUGE), range(10)))
    grown = process.memory_info().rss - before
    print(f"RSS {before / MiB:.1f} MiB before, {grown / MiB:+.2f} MiB after 10 × {len(HUGE) / MiB:.1f} MiB of headers")
    assert grown < 4 * MiB
    assert lines == [b"HTTP/1.1 431 Request Header Fields Too Large"] * 10
    counted = wait_for(lambda: samples(agent, "maint_http_connections_rejected").get("header_too_large") == 10,
                       timeout=5, what="header_too_large counted")
    assert counted and agent.get("/healthz")[0] == 200


# --- the agent's own shortage ------------------------------------------------------------------------------

@pytest.fixture
def target_port():
    """A TCP service that is up the whole time (accepts and closes)."""
    server = socket.create_server(("127.0.0.1", 0), backlog=128)

    def serve() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            conn.close()

    threading.Thread(target=serve, daemon=True).start()
    yield server.getsockname()[1]
    server.close()


def test_check_out_of_descriptors_is_unknown_and_its_bound_restart_never_runs(agent_factory, tmp_path, target_port):
    marker = tmp_path / "restarted"
    agent = agent_factory(f"""
        agent: {{state_dir: "{{state}}"}}
        http: {{listen: "127.0.0.1:{{port}}"}}
        actions:
          - {{name: restart-target, type: command, argv: [/bin/touch, "{marker}"]}}
        checks:
          - name: target
            type: tcp
            target: 127.0.0.1:{target_port}
            every: 200ms
            actions: [{{action: restart-target, when: [critical, unknown]}}]
    """).start()
    wait_for(lambda: "status=ok" in agent.log.read_text(), what="the target's first OK")
    pid = agent.proc.pid
    previous = resource.prlimit(pid, resource.RLIMIT_NOFILE)

    def starved() -> bool:
        limit_descriptors(pid, lowest_free_descriptor(pid))   # not one descriptor more, as after a flood
        log = agent.log.read_text()
        return "event=agent.out_of_resources" in log or "status=critical" in log

    try:
        wait_for(starved, timeout=10, what="a run of the check without a descriptor")
    finally:
        resource.prlimit(pid, resource.RLIMIT_NOFILE, previous)
    db = tmp_path / "var" / "maint-agent.db"

    def stored(sql: str) -> list[tuple]:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
            return conn.execute(sql).fetchall()

    bad = wait_for(lambda: stored("SELECT status, summary FROM check_runs WHERE status > 0"), timeout=10,
                   what="the starved run in the store")
    assert stored("SELECT action, decision, outcome FROM action_runs") == [] and not marker.exists()
    assert set(bad) == {(3, "agent out of resources: Too many open files (EMFILE)")}
    assert "event=agent.out_of_resources" in agent.log.read_text()
    wait_for(lambda: samples(agent, "maint_agent_resource_errors").get("open_files", 0) >= 1, timeout=5,
             what="the fault counted in /metrics")
