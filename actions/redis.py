"""`redis_evict`: remove cache keys idle longer than a threshold (e.g. Redis memory > 90 % → clear old cache).

Only keys matching the configured patterns, and only those whose OBJECT
IDLETIME (seconds since last access; reading it does not touch the key) is
above `idle_longer_than`: SCAN MATCH … COUNT batch, one pipelined OBJECT
IDLETIME per key of a batch, then UNLINK of the idle ones (freed in the
background, so the server never blocks on a big value). Bounded by `max_keys`
and the action's timeout, which also bounds every socket operation (the
deadline shuts the socket down, as in checks/redis.py). A key read between
the IDLETIME and the UNLINK still goes: it is a cache entry, and the window is
one round trip. Nothing here empties a whole database. A pattern must start
with a literal prefix of at least two characters before any glob character
(`*`, `?`, `[`, `\\`): `cache:*` names one family of keys, while `*:*`,
`[a-z]*` or `[^@]*` also match `session:*` and job queues, so they are refused
at config check. The SCAN MATCH argument is always a configured pattern as
written, never built from anything the server returned; key names from SCAN
only ever go back as whole arguments of OBJECT IDLETIME and UNLINK. OBJECT
IDLETIME is not tracked under an LFU `maxmemory-policy`: the action then fails
saying so, removing nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Literal

from pydantic import AfterValidator, Field

from actions.base import Action, ActionContext, ActionOptions, ActionResult
from agent.plugin.address import split_target
from agent.plugin.fields import HostPort, PositiveDuration, Secret, SecretStr, SecretUnavailable
from agent.plugin.units import format_duration, format_size
from checks.net import SocketDeadline

SAMPLE_KEYS = 20     # removed keys named in the details
GLOB_CHARACTERS = "*?[\\"
MIN_LITERAL_PREFIX = 2


def check_key_pattern(pattern: str) -> str:
    """Given a SCAN MATCH glob, return it; raise ValueError unless it starts with a literal prefix of at least
    MIN_LITERAL_PREFIX characters before any glob character (an escaping `\\` ends the prefix too)."""
    glob_at = next((i for i, ch in enumerate(pattern) if ch in GLOB_CHARACTERS), len(pattern))
    if glob_at < MIN_LITERAL_PREFIX:
        raise ValueError(f"pattern {pattern!r} must start with a literal prefix of at least {MIN_LITERAL_PREFIX} "
                         f"characters before any glob character (* ? [ \\): the prefix of the cache's keys, e.g. "
                         f"'cache:*' (a pattern like '*:*' or '[a-z]*' also matches 'session:*' keys and job "
                         f"queues)")
    return pattern


KeyPattern = Annotated[str, AfterValidator(check_key_pattern)]
"""Checked per entry, so an error points at the offending line of `patterns:`."""


class _Failed(Exception):
    """The server refused or could not be asked; the reason is free of the password."""


@dataclass
class _Tally:
    scanned: int = 0
    idle: int = 0
    removed: int = 0
    sample: list[str] = field(default_factory=list)
    seen: set[bytes] = field(default_factory=set)
    out_of_time: bool = False
    limit_reached: bool = False


class RedisEvictAction(Action):
    """Remove keys matching `patterns` idle longer than `idle_longer_than` (SCAN, OBJECT IDLETIME, UNLINK)."""

    TYPE = "redis_evict"
    EXAMPLE = """
        - name: evict-idle-cache
          type: redis_evict
          address: 127.0.0.1:6379
          password: ${credential:redis.password}
          patterns: ["cache:*"]
          idle_longer_than: 6h
          cooldown: 15m
    """

    class Options(ActionOptions):
        type: Literal["redis_evict"]
        address: HostPort = Field("127.0.0.1:6379", description="the server, host:port")
        username: str | None = Field(None, description="ACL user (Redis 6+); default: the default user")
        password: SecretStr | None = Field(None, description="a secret reference such as "
                                                             "${file:/etc/maint-agent/redis}")
        db: int = Field(0, ge=0, description="database number")
        tls: bool = Field(False, description="connect with TLS (certificate verified against the system store)")
        patterns: tuple[KeyPattern, ...] = Field(min_length=1, description="SCAN MATCH globs of the keys that "
                                                 "may go, each starting with a literal prefix of at least 2 "
                                                 "characters, e.g. ['cache:*', 'thumb:*']")
        idle_longer_than: PositiveDuration = Field(description="only keys not read or written for this long, e.g. "
                                                               "1h (above 0: a key in use is never removed)")
        batch: int = Field(500, ge=1, le=100_000, description="SCAN COUNT: keys looked at per round trip")
        max_keys: int = Field(100_000, ge=1, description="remove at most this many keys per run")
        memory_purge: bool = Field(False, description="afterwards send MEMORY PURGE (jemalloc returns freed "
                                                      "pages to the system)")

    def target(self) -> str:
        return f"redis {self.options.address} db {self.options.db}"

    def execute(self, ctx: ActionContext) -> ActionResult:
        opts = self.options
        try:
            password = Secret(opts.password).reveal() if opts.password else None
        except SecretUnavailable as exc:
            return ActionResult(False, f"cannot read the password {opts.password}: {exc.reason}")

        def scrub(text: str) -> str:
            return ctx.redact(text.replace(password, "***") if password else text)

        started = ctx.monotonic()
        tally = _Tally()
        details: dict = {"patterns": list(opts.patterns), "idle_longer_than_seconds": opts.idle_longer_than}
        try:
            with SocketDeadline(ctx.timeout) as deadline:
                try:
                    memory = self._run(ctx, started, password, deadline, tally, details)
                except _Failed as failure:
                    return ActionResult(False, scrub(f"{self.target()}: {failure}"), details=_done(tally, details))
        except TimeoutError:
            tally.out_of_time = True
            memory = None
        details = _done(tally, details)
        if memory is not None:
            details["used_memory_bytes"] = memory
        verb = "would remove" if ctx.dry_run else "removed"
        summary = (f"{verb} {tally.removed} idle key{'s' * (tally.removed != 1)} of {tally.scanned} matching "
                   f"(idle > {format_duration(opts.idle_longer_than)}) on {self.target()}")
        if memory is not None and not ctx.dry_run:
            summary += f"; used_memory {format_size(memory[0])} → {format_size(memory[1])}"
        if tally.limit_reached:
            summary += f"; max_keys {opts.max_keys} reached"
        if opts.memory_purge:
            summary += "; would send MEMORY PURGE" if ctx.dry_run else ("; MEMORY PURGE sent" if memory else "")
        if tally.out_of_time:
            return ActionResult(False, scrub(f"stopped at the time limit ({format_duration(ctx.timeout)}): "
                                             f"{summary}"), details=details)
        return ActionResult(True, scrub(summary), details=details)

    def _run(self, ctx: ActionContext, started: float, password: str | None, deadline: SocketDeadline,
             tally: _Tally, details: dict) -> tuple[int, int] | None:
        """Connect, evict, purge; return used_memory before and after. Raise _Failed or TimeoutError."""
        import redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        opts = self.options
        host, port = split_target(opts.address)

        def handshake(connection) -> None:
            deadline.watch(connection._sock)     # the deadline covers AUTH/SELECT too (see checks/redis.py)
            connection.on_connect()

        client = None
        try:
            # single_connection_client connects (and logs in) right here
            client = redis.Redis(host=host, port=port, db=opts.db, username=opts.username, password=password,
                                 ssl=opts.tls, socket_connect_timeout=ctx.timeout, socket_timeout=ctx.timeout,
                                 retry=Retry(NoBackoff(), 0), protocol=2, single_connection_client=True,
                                 health_check_interval=0, redis_connect_func=handshake)
            before = int(client.info("memory")["used_memory"])
            for pattern in opts.patterns:
                self._evict(client, pattern, ctx, started, tally)
                if tally.out_of_time or tally.limit_reached:
                    break
            if opts.memory_purge and not ctx.dry_run and not tally.out_of_time:
                client.execute_command("MEMORY PURGE")
            after = int(client.info("memory")["used_memory"])
            return before, after
        except (redis.RedisError, OSError) as exc:
            if deadline.fired or isinstance(exc, redis.TimeoutError):
                raise TimeoutError from None
            raise _Failed(_describe(exc, redis)) from None
        finally:
            if client is not None:
                client.close()

    def _evict(self, client, pattern: str, ctx: ActionContext, started: float, tally: _Tally) -> None:
        """SCAN MATCH `pattern` (one of the configured patterns, passed as is) and remove the idle keys found."""
        opts = self.options
        cursor = 0
        while True:
            if ctx.remaining(started) <= 0:
                tally.out_of_time = True
                return
            cursor, keys = client.scan(cursor, match=pattern, count=opts.batch)
            keys = [key for key in keys if key not in tally.seen]   # SCAN may return a key twice
            tally.scanned += len(keys)
            idle = _idle_keys(client, keys, opts.idle_longer_than)
            tally.idle += len(idle)
            room = opts.max_keys - tally.removed
            if len(idle) > room:
                idle, tally.limit_reached = idle[:room], True
            tally.seen.update(idle)
            if idle:
                tally.removed += len(idle) if ctx.dry_run else client.unlink(*idle)
                tally.sample += [k.decode("utf-8", "replace") for k in idle[:SAMPLE_KEYS - len(tally.sample)]]
            if cursor == 0 or tally.limit_reached:
                return


def _idle_keys(client, keys: list[bytes], threshold: float) -> list[bytes]:
    """The keys idle longer than `threshold` seconds; raise _Failed when the server does not track idle time."""
    if not keys:
        return []
    import redis

    pipe = client.pipeline(transaction=False)
    for key in keys:
        pipe.object("idletime", key)
    idle = []
    for key, seconds in zip(keys, pipe.execute(raise_on_error=False)):
        if isinstance(seconds, redis.ResponseError):
            if "LFU" in str(seconds):
                raise _Failed("OBJECT IDLETIME is not available: the server's maxmemory-policy is an LFU "
                              "policy, which does not track idle time; nothing was removed (use an LRU "
                              "policy, or let Redis evict by itself)")
            raise _Failed(f"OBJECT IDLETIME refused: {seconds}")
        if seconds is not None and seconds > threshold:   # None: the key expired or went since SCAN
            idle.append(key)
    return idle


def _describe(exc: Exception, redis) -> str:
    if isinstance(exc, redis.AuthenticationError):
        return f"authentication failed: {exc}"
    if isinstance(exc, redis.ResponseError) and str(exc).startswith(("NOAUTH", "WRONGPASS")):
        return f"authentication failed: {exc}"
    if isinstance(exc, redis.ResponseError) and str(exc).startswith("NOPERM"):
        return f"not allowed for this user: {exc}"
    if isinstance(exc, (redis.ConnectionError, OSError)):
        return f"cannot connect: {exc}"
    return f"{type(exc).__name__}: {exc}"


def _done(tally: _Tally, details: dict) -> dict:
    return {**details, "scanned": tally.scanned, "idle": tally.idle, "removed": tally.removed,
            "removed_sample": tally.sample, "limit_reached": tally.limit_reached}
