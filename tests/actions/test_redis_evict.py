"""redis_evict against a real redis-server: only keys that match and have been idle long enough go.

The operator story (seed 004: Redis memory > 90 % → clear old cache entries):
cache keys nobody has read for a while are removed in batches, keys in use and
keys outside the cache's prefix (sessions) stay, a dry run only counts, and a
server that cannot tell idle time (LFU policy) or refuses the login makes the
action fail with a reason that never holds the password. The server's own
command statistics show what was sent: SCAN, OBJECT, UNLINK — never a flush;
its slow log (every command, with its arguments) shows that SCAN only ever
matched the configured pattern. A pattern without a literal prefix of two
characters (`*:*`, `[a-z]*`, which also match sessions and job queues) is a
config error.

Idle time has a resolution of one second, so the tests wait (with a deadline)
until the old keys' OBJECT IDLETIME reaches 2 s, read the fresh keys right
before each run and use a 1 s threshold.
"""

from __future__ import annotations

import inspect

import pytest
from pydantic import ValidationError

import actions.redis
from actions.base import ActionContext
from actions.redis import RedisEvictAction
from agent.config.load import load_config
from agent.config.yamlsrc import ConfigError
from tests.conftest import wait_for
from tests.fixtures.redis import RedisServers

PASSWORD = "pw-evict-5b2e-battery-staple"


@pytest.fixture
def servers(tmp_path):
    started = RedisServers(tmp_path / "redis")
    yield started
    started.stop_all()


def make(port: int, **options) -> RedisEvictAction:
    options = {"name": "evict-cache", "type": "redis_evict", "address": f"127.0.0.1:{port}",
               "patterns": ["cache:*"], "idle_longer_than": "1s", **options}
    return RedisEvictAction(RedisEvictAction.Options.model_validate(options))


def fill(client, old: int = 5, fresh: int = 3, sessions: int = 3) -> None:
    """Old and fresh cache keys and idle session keys; return once the old ones have been idle 2 s."""
    for i in range(old):
        client.set(f"cache:old:{i}", "x" * 100)
    for i in range(sessions):
        client.set(f"session:{i}", "user")
    for i in range(fresh):
        client.set(f"cache:fresh:{i}", "y")
    wait_for(lambda: min(client.object("idletime", f"cache:old:{i}") for i in range(old)) >= 2, 10,
             interval=0.1, what="the old keys to be idle for 2 s")


def touch_fresh(client, fresh: int = 3) -> None:
    for i in range(fresh):
        client.get(f"cache:fresh:{i}")


def commands(client) -> set[str]:
    return {name.removeprefix("cmdstat_") for name in client.info("commandstats")}


def logged_commands(client) -> list[list[str]]:
    """Every command in the server's slow log (all of them with slowlog-log-slower-than 0), as argument lists."""
    entries = client.slowlog_get(1000)
    return [(e["command"].decode() if isinstance(e["command"], bytes) else e["command"]).split(" ")
            for e in entries]


def test_redis_evict_removes_only_idle_matching_keys(servers):
    server = servers.start()
    client = servers.client(server)
    fill(client)
    touch_fresh(client)
    dry = make(server.port, dry_run=True).execute(ActionContext(10, dry_run=True))
    assert dry.ok and dry.summary.startswith("would remove 5 idle keys of 8 matching"), dry.summary
    assert client.dbsize() == 11
    touch_fresh(client)
    limited = make(server.port, max_keys=2, batch=2).execute(ActionContext(10))
    assert limited.ok and limited.details["removed"] == 2 and limited.details["limit_reached"]
    assert "max_keys 2 reached" in limited.summary
    touch_fresh(client)
    result = make(server.port, batch=2).execute(ActionContext(10))
    assert result.ok and result.details["removed"] == 3, result.summary
    assert sorted(client.keys("*")) == ["cache:fresh:0", "cache:fresh:1", "cache:fresh:2",
                                        "session:0", "session:1", "session:2"]
    sent = commands(client)
    assert {"scan", "object|idletime", "unlink"} <= sent
    assert not {name for name in sent if "flush" in name or name == "del"}


def test_redis_evict_with_password_and_memory_purge(servers, monkeypatch):
    server = servers.start(password=PASSWORD)
    client = servers.client(server)
    fill(client, old=2, fresh=1, sessions=0)
    touch_fresh(client, 1)
    monkeypatch.setenv("MAINT_TEST_REDIS_PW", PASSWORD)
    result = make(server.port, password="${env:MAINT_TEST_REDIS_PW}", memory_purge=True).execute(ActionContext(10))
    assert result.ok and result.details["removed"] == 2 and "MEMORY PURGE sent" in result.summary
    assert "memory|purge" in commands(client)
    assert client.keys("*") == ["cache:fresh:0"]


def test_redis_evict_wrong_password_fails_without_showing_it(servers, monkeypatch):
    server = servers.start(password=PASSWORD)
    wrong = "pw-wrong-7d1c-not-the-one"
    monkeypatch.setenv("MAINT_TEST_REDIS_PW", wrong)
    result = make(server.port, password="${env:MAINT_TEST_REDIS_PW}").execute(ActionContext(10))
    assert not result.ok and "authentication failed" in result.summary
    shown = result.summary + result.output + repr(result.details)
    assert wrong not in shown and PASSWORD not in shown


def test_redis_evict_under_an_lfu_policy_fails_clearly_and_removes_nothing(servers):
    server = servers.start("--maxmemory-policy", "allkeys-lfu")
    client = servers.client(server)
    client.set("cache:a", "1")
    result = make(server.port).execute(ActionContext(10))
    assert not result.ok and "LFU" in result.summary and "nothing was removed" in result.summary
    assert client.exists("cache:a")


def test_redis_evict_unreachable_server_is_a_failure(closed_port):
    result = make(closed_port).execute(ActionContext(5))
    assert not result.ok and "cannot connect" in result.summary


def test_redis_evict_removes_only_the_cache_keys_beside_sessions_and_a_queue(servers):
    server = servers.start("--slowlog-log-slower-than", "0", "--slowlog-max-len", "1000")
    client = servers.client(server)
    client.set("session:1", "user")
    client.rpush("queue:jobs", "job-1", "job-2")
    client.set("cache:x", "thumbnail")
    wait_for(lambda: min(client.object("idletime", key) for key in ("session:1", "queue:jobs", "cache:x")) >= 2,
             10, interval=0.1, what="every key to be idle for 2 s")
    client.slowlog_reset()
    result = make(server.port, patterns=["cache:*"], batch=1).execute(ActionContext(10))
    assert result.ok and result.details["removed"] == 1, result.summary
    assert sorted(client.keys("*")) == ["queue:jobs", "session:1"]
    assert client.lrange("queue:jobs", 0, -1) == ["job-1", "job-2"]
    sent = logged_commands(client)
    scans = [args for args in sent if args[0].upper() == "SCAN"]
    assert scans and all(args[2:4] == ["MATCH", "cache:*"] for args in scans), scans
    assert [args[1:] for args in sent if args[0].upper() == "UNLINK"] == [["cache:x"]]


@pytest.mark.parametrize("pattern", ["[^@]*", "[a-z]*", "*:*", "\\*", "a*", "*", "**", "?*", ""])
def test_redis_evict_pattern_without_a_literal_prefix_is_rejected(pattern):
    with pytest.raises(ValidationError) as caught:
        make(6379, patterns=["cache:*", pattern])
    [error] = caught.value.errors()
    assert error["loc"] == ("patterns", 1)
    assert "must start with a literal prefix of at least 2 characters before any glob character" in error["msg"]
    assert "e.g. 'cache:*'" in error["msg"]


@pytest.mark.parametrize("pattern", ["cache:*", "ca*", "session:expired:*", "thumb:[0-9]*", "cache:\\*", "ab"])
def test_redis_evict_pattern_with_a_literal_prefix_is_accepted(pattern):
    assert make(6379, patterns=[pattern]).options.patterns == (pattern,)


def test_redis_evict_broad_pattern_is_a_located_config_error(write_config):
    config = write_config("""
        actions:
          - name: evict-cache
            type: redis_evict
            patterns:
              - "cache:*"
              - "*:*"
            idle_longer_than: 1h
        """)
    with pytest.raises(ConfigError) as caught:
        load_config(config)
    [issue] = caught.value.issues
    assert (issue.line, issue.path) == (6, "actions[0].patterns[1]"), str(issue)
    assert issue.message.startswith("pattern '*:*' must start with a literal prefix of at least 2 characters")


def test_redis_evict_source_never_names_a_flush_command():
    assert "flush" not in inspect.getsource(actions.redis).lower()
