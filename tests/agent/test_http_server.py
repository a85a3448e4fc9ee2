"""The listener's connection table on a fake clock: who makes room at the limit, and what is counted."""

from __future__ import annotations

import socket

import pytest

from agent.http_server import Connections, MetricsServer


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
    """HTTPServer looks its address up (getfqdn) for a server_name nothing reads: a dead resolver would hold up
    the start, and the lookup loads the idna codec for the daemon's whole life."""
    def no_lookup(*args):
        raise AssertionError("reverse DNS lookup at bind")

    monkeypatch.setattr(socket, "getfqdn", no_lookup)
    server = MetricsServer(("127.0.0.1", 0), None, lambda: (True, "ok"))
    try:
        assert server.server_address[0] == "127.0.0.1" and server.server_port == server.server_address[1]
    finally:
        server.server_close()
