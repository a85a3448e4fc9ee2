"""Redis checks against real `redis-server` processes: a primary, a replica, a password-protected server.

The operator story: the platform's Redis and its replica are watched for being up,
for memory running into `maxmemory` (never an infinite ratio when there is none),
for evictions, and for replication that silently stops — the replica's link to a
stopped primary, a replica that falls behind, a replica that disappears. The
password is read through a reference and never shows up in what the agent reports.
"""

from __future__ import annotations

import math
import os
import signal
import socket
import socketserver
import threading
import time

import pytest
from pydantic import ValidationError

from agent.config.yamlsrc import ConfigError

from agent.config.load import parse_config
from agent.evaluate import WindowState, evaluate
from agent.plugin.result import CheckResult, Status
from checks.base import CheckContext
from checks.redis import RedisCheck, RedisReplicationCheck
from tests.conftest import free_port, wait_for
from tests.fixtures.redis import RedisServer, RedisServers

PASSWORD = "pw-7c1f3e-correct-horse"


@pytest.fixture
def servers(tmp_path):
    started = RedisServers(tmp_path / "redis")
    yield started
    started.stop_all()


@pytest.fixture
def pair(servers) -> tuple[RedisServer, RedisServer]:
    """A primary and a replica whose first sync has completed."""
    primary = servers.start(name="primary")
    replica = servers.start(replica_of=primary, name="replica")
    wait_for(lambda: replica.info("master_link_status") == "up", 15, what="the replica's link to come up")
    wait_for(lambda: "state=online" in (primary.info("slave0") or ""), 15, what="the primary to see it online")
    return primary, replica


def make(cls, server: RedisServer | None = None, **options):
    """Build a check from an options dict the way the config loader does."""
    if server is not None:
        options.setdefault("port", server.port)
    name = options.pop("name", cls.TYPE.replace("_", "-"))
    return cls(cls.Options.model_validate({"name": name, "type": cls.TYPE, **options}))


def run(check, timeout: float = 5.0) -> CheckResult:
    return check.run(CheckContext(timeout=timeout))


def final(check, result: CheckResult) -> Status:
    """The status after the config's thresholds, as the daemon would store it."""
    return evaluate(check, result, WindowState(), time.time()).status


def value(result: CheckResult, name: str, **labels: str) -> float | None:
    matches = [s.value for s in result.samples if s.name == name and dict(s.labels) == labels]
    assert len(matches) <= 1
    return matches[0] if matches else None


def secret_file(tmp_path, text: str) -> str:
    path = tmp_path / "redis-password"
    path.write_text(text + "\n")
    path.chmod(0o600)
    return f"${{file:{path}}}"


# --- reachability and memory ------------------------------------------------------------------

def test_redis_healthy_pair_ok(pair):
    primary, replica = pair
    on_primary, on_replica = run(make(RedisCheck, primary)), run(make(RedisCheck, replica))
    assert on_primary.status is Status.OK, on_primary.summary
    assert on_replica.status is Status.OK, on_replica.summary
    assert value(on_primary, "up") == 1 and value(on_primary, "role_info", role="primary") == 1
    assert value(on_replica, "role_info", role="replica") == 1
    assert 0 < value(on_primary, "ping_seconds") < 1
    assert value(on_primary, "used_memory_bytes") > 0
    assert value(on_primary, "connected_clients") >= 1


def test_redis_maxmemory_zero_no_ratio_sample(servers):
    server = servers.start()
    check = make(RedisCheck, server, warning="90%", critical="95%")
    result = run(check)
    assert value(result, "maxmemory_bytes") == 0
    assert value(result, "memory_used_ratio") is None
    assert all(math.isfinite(s.value) for s in result.samples)
    assert "no maxmemory set" in result.summary
    assert final(check, result) is Status.OK


def test_redis_memory_near_maxmemory_warning(servers):
    server = servers.start()
    c = servers.client(server)
    used = int(c.info("memory")["used_memory"])
    c.config_set("maxmemory-policy", "allkeys-lru")
    c.config_set("maxmemory", used + 256 * 1024)
    for i in range(600):
        c.set(f"key:{i}", "x" * 1024)
    check = make(RedisCheck, server, warning="90%")
    result = run(check)
    ratio = value(result, "memory_used_ratio")
    assert ratio is not None and 0.9 < ratio < 1.05, result.summary
    assert value(result, "maxmemory_bytes") == used + 256 * 1024
    verdict = evaluate(check, result, WindowState(), time.time())
    assert verdict.status is Status.WARNING
    assert "memory_used_ratio" in verdict.summary


def test_redis_evictions_between_runs_rate_reported(servers):
    server = servers.start()
    c = servers.client(server)
    c.config_set("maxmemory-policy", "allkeys-lru")
    c.config_set("maxmemory", int(c.info("memory")["used_memory"]) + 128 * 1024)
    check = make(RedisCheck, server)
    first = run(check)
    assert value(first, "evicted_keys_per_second") is None, "no rate without a previous run"
    for i in range(2000):
        c.set(f"key:{i}", "x" * 512)
    second = run(check)
    assert value(second, "evicted_keys") > value(first, "evicted_keys")
    assert value(second, "evicted_keys_per_second") > 0


def test_redis_restarted_server_no_negative_rate(servers):
    server = servers.start()
    check = make(RedisCheck, server)
    c = servers.client(server)
    c.config_set("maxmemory-policy", "allkeys-lru")
    c.config_set("maxmemory", int(c.info("memory")["used_memory"]) + 128 * 1024)
    for i in range(2000):
        c.set(f"key:{i}", "x" * 512)
    assert value(run(check), "evicted_keys") > 0
    server.stop()
    servers.start(port=server.port, name="restarted")
    result = run(check)
    assert value(result, "evicted_keys") == 0
    assert value(result, "evicted_keys_per_second") is None


# --- passwords ----------------------------------------------------------------------------------

def test_redis_password_by_file_reference_ok(servers, tmp_path):
    server = servers.start(password=PASSWORD)
    reference = secret_file(tmp_path, PASSWORD)
    check = make(RedisCheck, server, password=reference)
    result = run(check)
    assert result.status is Status.OK, result.summary
    assert check.options.password == reference, "the options keep the reference, not the value"
    assert PASSWORD not in repr(check.options)


@pytest.mark.parametrize("given", ["wrong-pw-91b2d4", None], ids=["wrong", "missing"])
def test_redis_wrong_password_unknown_without_secret(servers, tmp_path, given):
    server = servers.start(password=PASSWORD)
    options = {"password": secret_file(tmp_path, given)} if given else {}
    for cls in (RedisCheck, RedisReplicationCheck):
        result = run(make(cls, server, **options))
        assert result.status is Status.UNKNOWN, result.summary
        assert "auth" in result.summary.lower(), result.summary
        shown = result.summary + repr(result.details) + repr(result.samples)
        assert PASSWORD not in shown and (given is None or given not in shown)


def test_redis_password_file_removed_unknown(servers, tmp_path):
    server = servers.start(password=PASSWORD)
    check = make(RedisCheck, server, password=secret_file(tmp_path, PASSWORD))
    (tmp_path / "redis-password").unlink()
    result = run(check)
    assert result.status is Status.UNKNOWN
    assert "cannot read the password" in result.summary and PASSWORD not in result.summary


# --- a server that is not there or does not answer ---------------------------------------------

def test_redis_server_down_critical_within_timeout():
    port = free_port()
    check = make(RedisCheck, port=port)
    started = time.monotonic()
    result = run(check, timeout=2.0)
    assert time.monotonic() - started < 2.0 + 1.0
    assert result.status is Status.CRITICAL
    assert "down" in result.summary and str(port) in result.summary
    assert value(result, "up") == 0


def test_redis_silent_listener_critical_timed_out():
    """A port that accepts connections but never answers (a hung server) ends within the timeout."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        check = make(RedisCheck, port=listener.getsockname()[1])
        started = time.monotonic()
        result = run(check, timeout=1.0)
        elapsed = time.monotonic() - started
    assert elapsed < 1.0 + 1.0, elapsed
    assert result.status is Status.CRITICAL
    assert "timed out" in result.summary


class SlowRedis(socketserver.StreamRequestHandler):
    """A Redis stand-in that answers every command correctly, each after `delay` seconds (a server
    alive but crawling: swapping, or stuck behind a slow command)."""

    delay = 0.0
    INFO = ("# Server\r\nrun_id:slow0\r\n# Clients\r\nconnected_clients:1\r\n# Memory\r\n"
            "used_memory:1048576\r\nmaxmemory:0\r\n# Stats\r\nevicted_keys:0\r\n# Replication\r\n"
            "role:master\r\nconnected_slaves:0\r\nmaster_repl_offset:0\r\n").encode()

    def handle(self):
        while True:
            command = self._read_command()
            if command is None or self.server.stopping.wait(self.delay):
                return
            if command == "PING":
                reply = b"+PONG\r\n"
            elif command == "INFO":
                reply = b"$%d\r\n%s\r\n" % (len(self.INFO), self.INFO)
            else:   # CLIENT SETINFO, AUTH, SELECT
                reply = b"+OK\r\n"
            try:
                self.wfile.write(reply)
            except OSError:
                return

    def _read_command(self) -> str | None:
        """The name of the next RESP command (an array of bulk strings), None when the client hung up."""
        header = self.rfile.readline()
        if not header.startswith(b"*"):
            return None
        words = []
        for _ in range(int(header[1:])):
            length = int(self.rfile.readline()[1:])
            words.append(self.rfile.read(length + 2)[:-2])
        return words[0].decode().upper() if words else None


@pytest.fixture
def slow_redis():
    """Start a SlowRedis answering each command after `delay` seconds; return its port."""
    servers = []

    def start(delay: float) -> int:
        server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), type("Slow", (SlowRedis,), {"delay": delay}))
        server.daemon_threads, server.stopping = True, threading.Event()
        threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
        servers.append(server)
        return server.server_address[1]

    yield start
    for server in servers:
        server.stopping.set()
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("address", ["host", "url"])
def test_redis_every_command_slow_critical_within_timeout(slow_redis, address):
    """Each reply comes well within the timeout, but together they do not: the run still ends at its timeout."""
    port = slow_redis(delay=1.2)
    check = make(RedisCheck, **({"port": port} if address == "host" else {"url": f"redis://127.0.0.1:{port}/0"}))
    started = time.monotonic()
    result = run(check, timeout=2.0)
    elapsed = time.monotonic() - started
    assert elapsed < 2.0 + 1.0, elapsed
    assert result.status is Status.CRITICAL, result.summary
    assert result.summary == f"redis {check.options.target()} timed out after 2s"
    assert value(result, "up") == 0


def test_redis_slightly_slow_server_within_timeout_ok(slow_redis):
    """The same stand-in answering each command in 100ms is healthy: the deadline cuts only overruns."""
    result = run(make(RedisCheck, port=slow_redis(delay=0.1)), timeout=2.0)
    assert result.status is Status.OK, result.summary
    assert result.summary.startswith("primary, memory 1.0MiB, no maxmemory set, "), result.summary


def test_redis_replication_server_down_unknown():
    result = run(make(RedisReplicationCheck, port=free_port()), timeout=2.0)
    assert result.status is Status.UNKNOWN
    assert "cannot read replication" in result.summary


# --- replication ---------------------------------------------------------------------------------

def test_redis_replication_healthy_pair_ok(pair):
    primary, replica = pair
    on_primary = run(make(RedisReplicationCheck, primary, expected_replicas=1, expect_role="primary"))
    assert on_primary.status is Status.OK, on_primary.summary
    assert value(on_primary, "connected_replicas") == 1
    # the primary's periodic PING to its replicas moves the offset by a few bytes until the next ACK
    assert 0 <= value(on_primary, "replica_lag_bytes", replica=f"127.0.0.1:{replica.port}") < 1024
    on_replica = run(make(RedisReplicationCheck, replica, expect_role="replica"))
    assert on_replica.status is Status.OK, on_replica.summary
    assert value(on_replica, "master_link_up") == 1
    assert value(on_replica, "master_sync_in_progress") == 0
    assert 0 <= value(on_replica, "master_last_io_seconds") < 60


def test_redis_replication_primary_stopped_replica_critical(pair):
    primary, replica = pair
    check = make(RedisReplicationCheck, replica)
    primary.stop()
    result = wait_for(lambda: (r := run(check)).status is Status.CRITICAL and r, 15,
                      what="the replica side to turn CRITICAL")
    assert "link to the primary is down" in result.summary
    assert value(result, "master_link_up") == 0
    assert value(result, "master_last_io_seconds") is None, "no last-I/O age while the link is down"
    assert value(result, "master_link_down_seconds") >= 0


def test_redis_replication_replica_stopped_primary_critical(pair):
    primary, replica = pair
    check = make(RedisReplicationCheck, primary, expected_replicas=1)
    replica.stop()
    result = wait_for(lambda: (r := run(check)).status is Status.CRITICAL and r, 15,
                      what="the primary side to turn CRITICAL")
    assert "0 replicas online, expected 1" in result.summary
    assert value(result, "connected_replicas") == 0


def test_redis_replication_paused_replica_lag_critical_then_ok(pair, servers):
    """A replica that stops acknowledging (SIGSTOP) while the primary writes falls behind in bytes."""
    primary, replica = pair
    check = make(RedisReplicationCheck, primary, expected_replicas=1, warning="16KiB", critical="64KiB")
    label = f"127.0.0.1:{replica.port}"
    os.kill(replica.proc.pid, signal.SIGSTOP)
    try:
        c = servers.client(primary)
        for i in range(200):
            c.set(f"key:{i}", "x" * 1024)
        result = run(check)
        assert value(result, "replica_lag_bytes", replica=label) > 64 * 1024
        assert final(check, result) is Status.CRITICAL
    finally:
        os.kill(replica.proc.pid, signal.SIGCONT)
    wait_for(lambda: final(check, run(check)) is Status.OK, 15, what="the lag to drain after SIGCONT")


def test_redis_replication_unexpected_role_critical(pair):
    _, replica = pair
    result = run(make(RedisReplicationCheck, replica, expect_role="primary"))
    assert result.status is Status.CRITICAL
    assert result.summary.startswith("replica, expected primary")


# --- configuration ------------------------------------------------------------------------------

def test_redis_config_url_with_password_rejected_without_echo():
    """The error names the problem and the check, and does not print the password it refuses."""
    text = "checks:\n  - name: cache\n    type: redis\n    url: 'redis://:hunter2@127.0.0.1:6379/0'\n"
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "agent.yaml")
    message = str(caught.value)
    assert "checks[0]: url must not contain a password" in message
    assert "hunter2" not in message


def test_redis_options_url_and_port_rejected():
    with pytest.raises(ValidationError, match="either url or host/port/db"):
        make(RedisCheck, url="redis://127.0.0.1:6379/0", port=6380)


def test_redis_url_connects_ok(servers):
    server = servers.start()
    result = run(make(RedisCheck, url=f"redis://127.0.0.1:{server.port}/1"))
    assert result.status is Status.OK, result.summary


# --- metric contract ----------------------------------------------------------------------------

def test_redis_metrics_match_contract(pair, servers):
    from tests.metrics_contract import assert_family_contract

    primary, replica = pair
    memory = servers.start(name="memory")
    c = servers.client(memory)
    c.config_set("maxmemory-policy", "allkeys-lru")
    c.config_set("maxmemory", int(c.info("memory")["used_memory"]) + 128 * 1024)
    check = make(RedisCheck, memory, warning="90%")
    first = run(check)
    for i in range(2000):
        c.set(f"key:{i}", "x" * 512)
    results = [first, run(check), run(make(RedisCheck, port=free_port()))]
    assert_family_contract(check, results)

    replication = make(RedisReplicationCheck, primary, expected_replicas=1, warning="1MiB")
    on_primary, replica_up = run(replication), run(make(RedisReplicationCheck, replica))
    primary.stop()
    replica_down = wait_for(lambda: (r := run(make(RedisReplicationCheck, replica))).status is Status.CRITICAL
                            and r, 15, what="the replica's link to go down")
    assert_family_contract(replication, [on_primary, replica_up, replica_down])
