"""Redis (seed 004 application health, seed 002 replication): types `redis` and `redis_replication`.

Two types rather than one with switches, because a type has one warning/critical
pair: `redis` thresholds the memory used ratio, `redis_replication` the replicas'
offset lag in bytes, and an operator tunes them separately (and may watch the
replication of the primary only). Both share the connection options and the
metric prefix `redis`.

The client is imported inside `run` (no work at import). redis-py's timeouts
apply to each socket operation (connect, AUTH, the handshake's CLIENT SETINFO,
PING, INFO), so they are set to the run's timeout with no retries and the run as
a whole is bounded by a deadline that shuts the socket down: a server that
accepts and never answers, or answers each command slowly, ends the run within
its timeout instead of holding a worker.
The password is kept as a reference and read only to connect; reasons are
scrubbed of it in case a server or client ever echoes it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, Field, model_validator

from agent.plugin.faults import OutOfResources, agent_fault
from agent.plugin.fields import Secret, SecretStr, SecretUnavailable
from agent.plugin.result import CheckResult, Sample, Status, sample
from agent.plugin.units import format_duration, format_size
from checks.base import Check, CheckContext, CheckOptions, MetricSpec, RatioThresholds, SizeThresholds, Threshold
from checks.net import SocketDeadline

_ROLES = {"master": "primary", "slave": "replica"}


class RedisConnection(BaseModel):
    """Where the server is and how to log in; shared by both Redis types."""

    host: str = Field("127.0.0.1", description="server address (or use `url`)")
    port: int = Field(6379, ge=1, le=65535, description="server port")
    url: str | None = Field(None, description="redis://host:port/db, rediss://… or unix:///path.sock, instead of "
                                              "host/port/db; never with a password in it (use `password`)")
    username: str | None = Field(None, description="ACL user (Redis 6+); default: the default user")
    password: SecretStr | None = Field(None, description="a secret reference such as ${file:/etc/maint-agent/redis}")
    db: int = Field(0, ge=0, description="database number")

    @model_validator(mode="after")
    def _url_or_address(self):
        """Checked on the whole model, not the `url` field, so an error never quotes a URL holding a password."""
        if self.url is None:
            return self
        parts = urlsplit(self.url)
        if parts.password is not None:
            raise ValueError("url must not contain a password: give it as `password: ${file:…}` or ${env:…}")
        if parts.scheme not in ("redis", "rediss", "unix"):
            raise ValueError(f"url scheme must be redis, rediss or unix (got {parts.scheme or 'none'!r})")
        if self.model_fields_set & {"host", "port", "db"}:
            raise ValueError("give either url or host/port/db, not both")
        return self

    def target(self) -> str:
        return self.url or f"{self.host}:{self.port}"


class RedisProblem(Exception):
    """The server could not be asked: `down` (refused, timed out, closed) or not (auth, permissions)."""

    def __init__(self, reason: str, down: bool):
        super().__init__(reason)
        self.reason, self.down = reason, down


def query(opts: RedisConnection, timeout: float, section: str = "default") -> tuple[float, dict[str, Any]]:
    """Given connection options, connect, PING and INFO `section` within `timeout` in all;
    return (PING seconds, INFO fields).

    Raise RedisProblem (never a client exception) with a reason free of the password, OutOfResources
    when the agent itself could not connect for want of descriptors or memory.
    """
    try:
        password = Secret(opts.password).reveal() if opts.password else None
    except SecretUnavailable as exc:
        raise RedisProblem(f"cannot read the password {opts.password}: {exc.reason}", down=False) from None
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    def scrub(text: str) -> str:
        return text.replace(password, "***") if password else text

    client = None
    with SocketDeadline(timeout) as deadline:

        def handshake(connection) -> None:
            # redis-py calls this in place of its on_connect once the socket is connected,
            # so the deadline watches the handshake (AUTH, CLIENT SETINFO, SELECT) too
            deadline.watch(connection._sock)
            connection.on_connect()

        settings = dict(username=opts.username, password=password, socket_connect_timeout=timeout,
                        socket_timeout=timeout, retry=Retry(NoBackoff(), 0), protocol=2, decode_responses=True,
                        single_connection_client=True, health_check_interval=0, redis_connect_func=handshake)
        try:
            if opts.url:
                client = redis.Redis.from_url(opts.url, **settings)
            else:
                client = redis.Redis(host=opts.host, port=opts.port, db=opts.db, **settings)
            started = time.perf_counter()
            client.ping()
            rtt = time.perf_counter() - started
            return rtt, client.info(section)
        except (redis.RedisError, OSError) as exc:
            if fault := agent_fault(exc):   # redis-py wraps the OSError of the agent's own socket()
                raise OutOfResources(fault) from None
            if deadline.fired or isinstance(exc, redis.TimeoutError):
                raise RedisProblem(f"timed out after {format_duration(timeout)}", down=True) from None
            if isinstance(exc, redis.AuthenticationError):
                raise RedisProblem(scrub(f"authentication failed: {exc}"), down=False) from None
            if isinstance(exc, (redis.ConnectionError, OSError)):
                raise RedisProblem(scrub(f"down: {exc}"), down=True) from None
            raise RedisProblem(scrub(f"{type(exc).__name__}: {exc}"), down=False) from None
        finally:
            if client is not None:
                client.close()


@dataclass(frozen=True)
class _Evictions:
    run_id: str
    evicted: int
    at: float   # monotonic seconds


class RedisCheck(Check):
    """A Redis server answers PING; memory used against `maxmemory`, evictions, clients and role.

    The memory used ratio exists only when `maxmemory` is set: `maxmemory 0` means
    unlimited, so no ratio is reported (never an infinite one) and the summary says
    "no maxmemory set". The eviction rate is per second since the previous run of the
    check (absent on the first run and after a server restart). A server that does not
    answer is CRITICAL; one that refuses the login is UNKNOWN.
    """

    TYPE = "redis"
    EXAMPLE = """
        - name: redis
          type: redis
          every: 30s
          host: 127.0.0.1
          port: 6379
          password: ${credential:redis.password}
          warning: 90%            # used memory of maxmemory
          critical: 97%
    """

    class Options(CheckOptions, RedisConnection, RatioThresholds):
        type: Literal["redis"]

    METRICS = (
        MetricSpec("up", "boolean", "1 when the server answered PING."),
        MetricSpec("ping_seconds", "seconds", "PING round trip."),
        MetricSpec("role_info", "info", "The server's replication role (primary or replica), always 1.", ("role",)),
        MetricSpec("used_memory_bytes", "bytes", "Memory allocated by Redis (INFO used_memory)."),
        MetricSpec("maxmemory_bytes", "bytes", "Configured maxmemory; 0 means unlimited."),
        MetricSpec("memory_used_ratio", "ratio", "used_memory / maxmemory (absent when maxmemory is 0, unlimited)."),
        MetricSpec("evicted_keys", "count", "Keys evicted since the server started (a counter)."),
        MetricSpec("evicted_keys_per_second", "count",
                   "Keys evicted per second since the check's previous run."),
        MetricSpec("connected_clients", "count", "Client connections, replicas excluded."),
    )
    THRESHOLD = Threshold(("memory_used_ratio",), "ratio")

    def __init__(self, options):
        super().__init__(options)
        self._previous: _Evictions | None = None

    def run(self, ctx: CheckContext) -> CheckResult:
        opts = self.options
        try:
            rtt, info = query(opts, ctx.timeout)
        except RedisProblem as problem:
            if problem.down:
                return CheckResult.critical(f"redis {opts.target()} {problem.reason}", [sample("up", 0)])
            return CheckResult.unknown(f"redis {opts.target()}: {problem.reason}")
        role = _ROLES.get(info.get("role"), str(info.get("role")))
        used, limit = int(info["used_memory"]), int(info.get("maxmemory", 0))
        evicted, clients = int(info.get("evicted_keys", 0)), int(info.get("connected_clients", 0))
        samples = [sample("up", 1), sample("ping_seconds", rtt), sample("role_info", 1, role=role),
                   sample("used_memory_bytes", used), sample("maxmemory_bytes", limit),
                   sample("evicted_keys", evicted), sample("connected_clients", clients)]
        if limit > 0:
            samples.append(sample("memory_used_ratio", used / limit))
            memory = f"memory {format_size(used)} of maxmemory {format_size(limit)} ({used / limit:.1%})"
        else:
            memory = f"memory {format_size(used)}, no maxmemory set"
        rate = self._eviction_rate(str(info.get("run_id", "")), evicted, ctx.monotonic())
        evictions = f"{evicted} evicted keys"
        if rate is not None:
            samples.append(sample("evicted_keys_per_second", rate))
            evictions += f" ({rate:.3g}/s)"
        return CheckResult.ok(
            f"{role}, {memory}, {evictions}, {clients} client{'s' * (clients != 1)}, PING {format_duration(rtt)}",
            samples)

    def _eviction_rate(self, run_id: str, evicted: int, now: float) -> float | None:
        """Keys evicted per second since the previous run; None on the first run or after a restart."""
        before, self._previous = self._previous, _Evictions(run_id, evicted, now)
        if before is None or before.run_id != run_id or evicted < before.evicted or now <= before.at:
            return None
        return (evicted - before.evicted) / (now - before.at)


class RedisReplicationCheck(Check):
    """Redis replication as the server sees it now (roles change on failover).

    On a primary: replicas connected and online against `expected_replicas` (fewer
    online is CRITICAL) and each replica's offset lag in bytes, labelled by the
    replica's ip:port from INFO. On a replica: the link to the primary (down is
    CRITICAL), seconds since the last I/O with it and whether a full sync is running.
    `warning`/`critical` are sizes that apply to each replica's lag. A server that
    cannot be asked is UNKNOWN here (the `redis` check reports it down).
    """

    TYPE = "redis_replication"
    EXAMPLE = """
        - name: redis-replication
          type: redis_replication
          every: 30s
          password: ${credential:redis.password}
          expected_replicas: 1
          warning: 1MiB           # replication backlog not yet acknowledged
          critical: 64MiB
    """
    METRIC_PREFIX = "redis"

    class Options(CheckOptions, RedisConnection, SizeThresholds):
        type: Literal["redis_replication"]
        expected_replicas: int | None = Field(
            None, ge=0, description="on a primary: CRITICAL when fewer replicas are connected and online")
        expect_role: Literal["any", "primary", "replica"] = Field(
            "any", description="CRITICAL when the server has another role (e.g. a primary demoted by mistake)")

    METRICS = (
        MetricSpec("replication_primary", "boolean", "1 on a primary, 0 on a replica."),
        MetricSpec("connected_replicas", "count", "Replicas connected to this primary, in any state."),
        MetricSpec("replica_lag_bytes", "bytes", "Primary's replication offset minus the replica's acknowledged "
                                                 "offset.", ("replica",)),
        MetricSpec("master_link_up", "boolean", "On a replica: 1 when the link to the primary is up."),
        MetricSpec("master_last_io_seconds", "seconds",
                   "On a replica: seconds since the last interaction with the primary (absent while the link is "
                   "down)."),
        MetricSpec("master_link_down_seconds", "seconds", "On a replica: how long the link has been down."),
        MetricSpec("master_sync_in_progress", "boolean", "On a replica: 1 while a full sync from the primary runs."),
    )
    THRESHOLD = Threshold(("replica_lag_bytes",), "bytes")

    def run(self, ctx: CheckContext) -> CheckResult:
        opts = self.options
        try:
            _, info = query(opts, ctx.timeout, "replication")
        except RedisProblem as problem:
            return CheckResult.unknown(f"redis {opts.target()}: cannot read replication: {problem.reason}")
        role = _ROLES.get(info.get("role"), str(info.get("role")))
        if role == "primary":
            status, summary, samples = self._primary(info)
        else:
            status, summary, samples = self._replica(info)
        if opts.expect_role != "any" and role != opts.expect_role:
            status = Status.CRITICAL
            summary = f"{role}, expected {opts.expect_role}: {summary}"
        return CheckResult(status, summary, tuple(samples), {"role": role})

    def _primary(self, info: dict[str, Any]) -> tuple[Status, str, list[Sample]]:
        offset = int(info.get("master_repl_offset", 0))
        replicas = [info[k] for k in sorted(info, key=_replica_index) if _replica_index(k) >= 0]
        samples = [sample("replication_primary", 1), sample("connected_replicas", int(info.get("connected_slaves", 0)))]
        parts, online = [], 0
        for replica in replicas:
            address = f"{replica.get('ip')}:{replica.get('port')}"
            lag = max(0, offset - int(replica.get("offset", 0)))
            samples.append(sample("replica_lag_bytes", lag, replica=address))
            state = replica.get("state", "?")
            online += state == "online"
            parts.append(f"{address} {state} lag {format_size(lag)}")
        expected = self.options.expected_replicas
        status = Status.OK
        head = f"primary, {online} of {len(replicas)} replicas online"
        if expected is not None:
            head += f" (expected {expected})"
            if online < expected:
                status = Status.CRITICAL
                head = f"primary has {online} replicas online, expected {expected}"
        return status, "; ".join([head, *parts]), samples

    def _replica(self, info: dict[str, Any]) -> tuple[Status, str, list[Sample]]:
        primary = f"{info.get('master_host')}:{info.get('master_port')}"
        link_up = info.get("master_link_status") == "up"
        syncing = int(info.get("master_sync_in_progress", 0)) == 1
        samples = [sample("replication_primary", 0), sample("master_link_up", 1 if link_up else 0),
                   sample("master_sync_in_progress", 1 if syncing else 0)]
        last_io = int(info.get("master_last_io_seconds_ago", -1))
        if last_io >= 0:
            samples.append(sample("master_last_io_seconds", last_io))
        if link_up:
            return Status.OK, f"replica of {primary}, link up, last I/O {last_io}s ago", samples
        down_for = int(info.get("master_link_down_since_seconds", -1))
        reason = f"replica of {primary}: link to the primary is down"
        if down_for >= 0:
            samples.append(sample("master_link_down_seconds", down_for))
            reason += f" for {format_duration(down_for)}"
        if syncing:
            reason += ", full sync in progress"
        return Status.CRITICAL, reason, samples


def _replica_index(key: str) -> int:
    """`slave3` → 3; any other INFO key → -1."""
    rest = key.removeprefix("slave")
    return int(rest) if rest != key and rest.isdigit() else -1
