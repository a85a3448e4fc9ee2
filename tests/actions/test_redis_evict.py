"""redis_evict against a real redis-server: only keys that match and have been idle long enough go.

The operator story (seed 004: Redis memory > 90 % → clear old cache entries):
cache keys nobody has read for a while are removed in batches, keys in use and
keys outside the cache's prefix (sessions) stay, a dry run only counts, and a
server that cannot tell idle time (LFU policy) or refuses the login makes the
action fail with a reason that never holds the password. The server's own
command statistics show what was sent: SCAN, OBJECT, UNLINK — never a flush.

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


@pytest.mark.parametrize("pattern", ["*", "**", "?*", ""])
def test_redis_evict_pattern_matching_every_key_is_rejected(pattern):
    with pytest.raises(ValidationError, match="every key"):
        make(6379, patterns=[pattern])


def test_redis_evict_source_never_names_a_flush_command():
    assert "flush" not in inspect.getsource(actions.redis).lower()
