"""PostgreSQL checks against a real PostgreSQL 15 primary and streaming standby started by the tests.

The operator story: the platform's database pair is watched from both sides.
Replication lag alarms when replay really stops, not when the primary is merely
idle or writes again after an idle spell, and a dead WAL receiver is never hidden
behind "received == replayed". A standby that disappears is named, a logical
replication client is not taken for one, and a server that stops answering after
the connection opened cannot hold a probe past its timeout. Connection usage,
long queries, sessions idle in a transaction, slow statements, bloat and WAL
archiving failures each turn into a status with the numbers behind it. The
checks run as a pg_monitor role whose DSN is read through `${file:…}` and never
shows up in what the agent reports.

The pair is started once per session (tests/fixtures/postgres.py); each test puts
back what it changes (paused replay, a stopped standby, a failing archive_command).
"""

from __future__ import annotations

import json
import os
import selectors
import shutil
import socket
import subprocess
import threading
import time

import pytest
from pydantic import ValidationError

from agent.config.load import parse_config
from agent.evaluate import WindowState, evaluate
from agent.plugin.result import CheckResult, Status
from agent.config.yamlsrc import ConfigError
from checks.base import CheckContext
from checks.pg_session import Session, open_session, redact_query
from checks.postgres import (
    PgActivityCheck, PgArchivingCheck, PgConnectionsCheck, PgReplicationCheck, PgStatementsCheck, PgTablesCheck,
    PostgresCheck, receiver_silence_limit, replay_delay,
)
from tests.conftest import free_port, wait_for
from tests.fixtures.postgres import (  # noqa: F401 (session fixtures)
    BINDIR, MONITOR_USER, STANDBY_NAME, pg_logical, pg_pair,
)
from tests.metrics_contract import assert_family_contract

psycopg = pytest.importorskip("psycopg")

# every secret text a test hands to a check; `run` asserts none of them comes back
_SECRETS: set[str] = set()


@pytest.fixture(scope="module")
def dsn(pg_pair, tmp_path_factory):
    """`${file:…}` references to the monitor role's DSNs (with its password) for both servers."""
    folder = tmp_path_factory.mktemp("pg-dsn")
    refs = {}
    for server in (pg_pair.primary, pg_pair.standby):
        text = server.dsn(user=MONITOR_USER, password=pg_pair.monitor_password)
        path = folder / f"{server.name}.dsn"
        path.write_text(text + "\n")
        _SECRETS.update({text, pg_pair.monitor_password})
        refs[server.name] = "${file:" + str(path) + "}"
    return refs


@pytest.fixture(scope="module")
def events(pg_pair):
    """A table on the primary the tests write to, so WAL flows when they need it to."""
    pg_pair.primary.query("CREATE TABLE IF NOT EXISTS maint_events (id bigserial PRIMARY KEY, v text)")
    return lambda n=1: pg_pair.primary.query(
        "INSERT INTO maint_events (v) SELECT md5(g::text) FROM generate_series(1, %s) g", (n,))


def make(cls, dsn: str, **options):
    return cls(cls.Options.model_validate({"name": "pg", "type": cls.TYPE, "dsn": dsn, **options}))


def run(check, timeout: float = 10.0) -> CheckResult:
    """Run the check; fail when a secret (password, DSN text) appears anywhere in the result."""
    result = check.run(CheckContext(timeout=timeout))
    shown = result.summary + json.dumps(result.details, default=str) + repr(result.samples)
    for secret in _SECRETS:
        assert secret not in shown, "a secret leaked into the result"
    return result


def run_until(check, predicate, timeout: float = 15.0, what: str = "") -> CheckResult:
    """Run the check until `predicate(result)` holds and return that result; fail at the deadline."""
    latest: list[CheckResult] = []

    def attempt():
        latest[:] = [run(check)]
        return predicate(latest[0])

    wait_for(attempt, timeout, what=what)
    return latest[0]


def verdict(check, result: CheckResult) -> Status:
    """The final status after the configured thresholds (no `for:` window in these tests)."""
    return evaluate(check, result, WindowState(), time.time()).status


def value(result: CheckResult, name: str, **labels: str) -> float | None:
    want = tuple(sorted(labels.items()))
    found = [s.value for s in result.samples if s.name == name and (not labels or s.labels == want)]
    return found[0] if found else None


# --- connectivity and the connection itself ---------------------------------------------------------------

def test_postgres_primary_and_standby_report_role_version_and_round_trip(pg_pair, dsn):
    primary = make(PostgresCheck, dsn["primary"], expect_role="primary", warning="1s")
    standby = make(PostgresCheck, dsn["standby"], expect_role="standby")
    p, s = run(primary), run(standby)
    assert (p.status, verdict(primary, p)) == (Status.OK, Status.OK), p.summary
    assert s.status is Status.OK, s.summary
    assert p.summary.startswith("primary, PostgreSQL 15") and s.summary.startswith("standby, PostgreSQL 15")
    assert (value(p, "in_recovery"), value(s, "in_recovery")) == (0, 1)
    assert value(p, "up") == 1 and 150000 <= value(p, "server_version_num") < 160000
    assert 0 < value(p, "round_trip_seconds") < 1 and value(p, "connect_seconds") > 0
    down = run(make(PostgresCheck, f"host=127.0.0.1 port={free_port()} user=x dbname=x"))
    assert_family_contract(primary, [p, s, down])


def test_postgres_standby_where_primary_expected_critical(dsn):
    result = run(make(PostgresCheck, dsn["standby"], expect_role="primary"))
    assert result.status is Status.CRITICAL
    assert result.summary.startswith("role is standby, expected primary")


def test_postgres_refused_port_critical_within_connect_timeout():
    check = make(PostgresCheck, f"host=127.0.0.1 port={free_port()} user=postgres dbname=postgres",
                 connect_timeout="2s")
    started = time.monotonic()
    result = run(check)
    assert time.monotonic() - started < 2 + 1
    assert result.status is Status.CRITICAL and "Connection refused" in result.summary, result.summary
    assert value(result, "up") == 0


def test_postgres_server_accepting_but_silent_critical_at_connect_timeout():
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)          # the kernel completes the handshake; nobody ever answers the startup packet
        port = silent.getsockname()[1]
        check = make(PostgresCheck, f"host=127.0.0.1 port={port} user=postgres dbname=postgres",
                     connect_timeout="2s")
        started = time.monotonic()
        result = run(check, timeout=30)
        elapsed = time.monotonic() - started
    assert 1.5 < elapsed < 2 + 1, elapsed
    assert result.status is Status.CRITICAL and "timeout" in result.summary, result.summary


def test_postgres_dsn_by_file_reference_connects_and_is_never_shown(pg_pair, dsn):
    check = make(PostgresCheck, dsn["primary"])
    result = run(check)           # run() also asserts neither the DSN nor the password is in the result
    assert result.status is Status.OK, result.summary
    assert check.options.dsn == dsn["primary"]     # only the reference is kept in the parsed config
    assert pg_pair.monitor_password not in repr(check.options)


def test_postgres_wrong_password_unknown_without_showing_it(pg_pair):
    wrong = "wrong-" + pg_pair.monitor_password[::-1]
    _SECRETS.add(wrong)
    result = run(make(PostgresCheck, pg_pair.primary.dsn(user=MONITOR_USER, password=wrong)))
    assert result.status is Status.UNKNOWN
    assert "password authentication failed" in result.summary, result.summary


def test_postgres_unparsable_dsn_unknown_without_echoing_it():
    _SECRETS.add("topsecret-77")
    result = run(make(PostgresCheck, "host=127.0.0.1 password=topsecret-77 oops"))
    assert result.status is Status.UNKNOWN and result.summary.startswith("invalid DSN"), result.summary


def test_postgres_unreadable_dsn_file_unknown(tmp_path, dsn):
    path = tmp_path / "pg.dsn"
    path.write_text("host=127.0.0.1")
    check = make(PostgresCheck, "${file:" + str(path) + "}")
    path.unlink()
    result = run(check)
    assert result.status is Status.UNKNOWN and result.summary.startswith("cannot read the DSN"), result.summary


def test_pg_session_dsn_options_cannot_lift_timeouts_or_read_only(pg_pair):
    options = PostgresCheck.Options.model_validate({"name": "pg", "type": "postgres", "dsn": "x",
                                                    "statement_timeout": "3s"})
    dsn = pg_pair.primary.dsn(options="'-c statement_timeout=0 -c default_transaction_read_only=off'")
    with open_session(dsn, options, timeout=10) as conn:
        assert conn.execute("SHOW statement_timeout").fetchone()["statement_timeout"] == "3s"
        assert conn.execute("SHOW default_transaction_read_only").fetchone()["default_transaction_read_only"] == "on"
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
            conn.execute("CREATE TABLE maint_must_not_exist (i int)")


def test_pg_tables_locked_table_unknown_at_statement_timeout(pg_pair, dsn):
    pg_pair.primary.query("CREATE TABLE IF NOT EXISTS maint_locked (i int)")
    check = make(PgTablesCheck, dsn["primary"], tables=["maint_locked"], statement_timeout="1s")
    with pg_pair.primary.connect() as locker:
        with locker.transaction():
            locker.execute("LOCK TABLE maint_locked IN ACCESS EXCLUSIVE MODE")
            started = time.monotonic()
            result = run(check)
            elapsed = time.monotonic() - started
    assert result.status is Status.UNKNOWN
    assert result.summary == "query cancelled by statement_timeout (1s)"
    assert elapsed < 3


def test_pg_session_statement_timeout_shrinks_to_the_time_left_in_the_run(pg_pair):
    options = PostgresCheck.Options.model_validate({"name": "pg", "type": "postgres", "dsn": "x",
                                                    "statement_timeout": "5s"})
    # on the standby: a slow statement on the primary would top the slow-statement test's pg_stat_statements
    with open_session(pg_pair.standby.dsn(), options, timeout=1.0) as conn:
        session = Session(conn, 0.0, time.monotonic() + 1.0, 5.0, time.monotonic, 1000)
        session.one("SELECT pg_sleep(0.6)")
        started = time.monotonic()
        with pytest.raises(psycopg.errors.QueryCanceled):
            session.one("SELECT pg_sleep(5)")        # 5s allowed by the option, 0.4s left in the run
        assert time.monotonic() - started < 0.6
        assert session.limited_by_run


def test_pg_tables_locked_table_unknown_at_the_end_of_the_run(pg_pair, dsn):
    pg_pair.primary.query("CREATE TABLE IF NOT EXISTS maint_locked (i int)")
    check = make(PgTablesCheck, dsn["primary"], tables=["maint_locked"], statement_timeout="30s")
    with pg_pair.primary.connect() as locker:
        with locker.transaction():
            locker.execute("LOCK TABLE maint_locked IN ACCESS EXCLUSIVE MODE")
            started = time.monotonic()
            result = run(check, timeout=1.5)
            elapsed = time.monotonic() - started
    assert result.status is Status.UNKNOWN
    assert result.summary == "query cancelled at the end of the run's timeout (1.5s)", result.summary
    assert elapsed < 1.5 + 1


class StallingProxy:
    """A TCP proxy to a PostgreSQL server that forwards each connection's startup exchange, then swallows
    whatever the client sends: the connection opens, the first query never arrives, nothing is ever answered.

    One selector thread; a connection is closed on both sides as soon as either side closes it. Needs
    sslmode=disable and gssencmode=disable (the one-byte SSL/GSS answers are not protocol messages).
    """

    def __init__(self, upstream_port: int):
        self.upstream = upstream_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self._stop_r, self._stop_w = socket.socketpair()
        self._selector = selectors.DefaultSelector()
        self._selector.register(self.listener, selectors.EVENT_READ, "accept")
        self._selector.register(self._stop_r, selectors.EVENT_READ, "stop")
        self._links: dict[socket.socket, dict] = {}
        self._thread = threading.Thread(target=self._loop, name="stalling-proxy", daemon=True)
        self._thread.start()

    def open_links(self) -> int:
        return len(self._links) // 2

    def _loop(self) -> None:
        while True:
            for key, _ in self._selector.select():
                if key.data == "stop":
                    for sock in list(self._links):
                        self._close(sock)
                    return
                if key.data == "accept":
                    client, _ = self.listener.accept()
                    server = socket.create_connection(("127.0.0.1", self.upstream))
                    link = {"client": client, "server": server, "from_server": b"", "ready": False}
                    for sock in (client, server):
                        self._links[sock] = link
                        self._selector.register(sock, selectors.EVENT_READ, "data")
                    continue
                sock = key.fileobj
                link = self._links.get(sock)
                if link is None:
                    continue
                try:
                    data = sock.recv(65536)
                except OSError:
                    data = b""
                if not data:
                    self._close(sock)
                elif sock is link["server"]:
                    link["client"].sendall(data)
                    self._scan_for_ready(link, data)
                elif not link["ready"]:
                    link["server"].sendall(data)

    @staticmethod
    def _scan_for_ready(link: dict, data: bytes) -> None:
        """Set `ready` once the server sent ReadyForQuery ('Z'): the startup exchange is over."""
        if link["ready"]:
            return
        buf = link["from_server"] + data
        while len(buf) >= 5:
            length = int.from_bytes(buf[1:5], "big")
            if len(buf) < 1 + length:
                break
            if buf[:1] == b"Z":
                link["ready"] = True
                return
            buf = buf[1 + length:]
        link["from_server"] = buf

    def _close(self, sock: socket.socket) -> None:
        link = self._links.get(sock)
        if link is None:
            return
        for end in (link["client"], link["server"]):
            self._links.pop(end, None)
            self._selector.unregister(end)
            end.close()

    def close(self) -> None:
        self._stop_w.send(b"x")
        self._thread.join(5)
        self._selector.close()
        for sock in (self.listener, self._stop_r, self._stop_w):
            sock.close()


def run_bounded(check, timeout: float) -> tuple[CheckResult | None, float]:
    """Run the check in a thread and give up waiting one second after its timeout; return (result, seconds)."""
    out: list[CheckResult] = []
    thread = threading.Thread(target=lambda: out.append(run(check, timeout=timeout)), daemon=True)
    started = time.monotonic()
    thread.start()
    thread.join(timeout + 1)
    return (out[0] if out else None), time.monotonic() - started


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_postgres_server_silent_after_connecting_critical_within_timeout_without_leaks(pg_pair):
    proxy = StallingProxy(pg_pair.primary.port)
    try:
        stalled = pg_pair.primary.dsn(port=str(proxy.port), sslmode="disable", gssencmode="disable")
        check = make(PostgresCheck, stalled, statement_timeout="30s")
        result, elapsed = run_bounded(check, timeout=2)
        assert result is not None, "the check hung past its timeout + 1s"
        assert elapsed < 2 + 1, elapsed
        assert result.status is Status.CRITICAL, result.summary
        assert result.summary.startswith("timed out after 2s: no answer from the server"), result.summary
        assert value(result, "up") == 0

        fds, threads = _open_fds(), threading.active_count()
        for _ in range(20):
            result, elapsed = run_bounded(check, timeout=0.2)
            assert result is not None and result.status is Status.CRITICAL, result
            assert elapsed < 0.2 + 1, elapsed
        # the watchdog threads are gone, and every socket (ours, the duplicates, the proxy's) is closed
        wait_for(lambda: proxy.open_links() == 0, 5, what="the proxy to see every connection closed")
        wait_for(lambda: _open_fds() <= fds and threading.active_count() <= threads, 5,
                 what=f"fds back to {fds} and threads to {threads}")
    finally:
        proxy.close()


def test_pg_options_bad_values_reported_at_their_yaml_line():
    text = f"""
checks:
  - name: db
    type: pg_replication
    dsn: "host=127.0.0.1"
    statement_timeout: 0
  - name: conns
    type: pg_connections
    dsn: "host=127.0.0.1"
    warning: 90%
    critical: 80%
"""
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "agent.yaml")
    found = {(i.line, i.path) for i in caught.value.issues}
    assert found == {(6, "checks[0].statement_timeout"), (10, "checks[1].warning")}, caught.value.issues


def test_pg_options_every_type_loads_from_yaml():
    types = ["postgres", "pg_connections", "pg_replication", "pg_archiving", "pg_activity", "pg_statements",
             "pg_tables"]
    entries = "".join(f"""
  - name: {t.replace('_', '-')}
    type: {t}
    dsn: "host=127.0.0.1 dbname=app"
""" for t in types)
    loaded = parse_config("checks:" + entries, "agent.yaml")
    assert [c.type for c in loaded.checks] == types
    with pytest.raises(ValidationError):
        PgReplicationCheck.Options.model_validate({"name": "r", "type": "pg_replication", "dsn": "x",
                                                   "expected_standbys": -1})


# --- connection usage ------------------------------------------------------------------------------------

def test_pg_connections_usage_crossing_80_percent_warns(pg_pair, dsn):
    check = make(PgConnectionsCheck, dsn["primary"], warning="80%", critical="99%")
    before = run(check)
    assert verdict(check, before) is Status.OK, before.summary
    assert value(before, "connections_limit") == 20 - 3           # max_connections - superuser_reserved
    held = []
    try:
        idle_in_tx = pg_pair.primary.connect()
        held.append(idle_in_tx)
        idle_in_tx.execute("BEGIN")
        idle_in_tx.execute("SELECT 1")

        def crossed():
            result = run(check)
            if value(result, "connections_used_ratio") > 0.8:
                return result
            held.append(pg_pair.primary.connect())
            return None

        result = wait_for(crossed, 20, interval=0, what="connection usage to pass 80%")
        assert verdict(check, result) is Status.WARNING, result.summary
        assert value(result, "connections", state="idle_in_transaction") >= 1
        assert value(result, "connections", state="active") >= 1          # the probe's own query
        assert "connections_used_ratio" in evaluate(check, result, WindowState(), 0).summary
        assert_family_contract(check, [before, result])
    finally:
        for conn in held:
            conn.close()


# --- replication -----------------------------------------------------------------------------------------

def test_pg_replication_healthy_pair_ok_with_lag_near_zero(pg_pair, dsn, events):
    events(10)
    pg_pair.wait_replayed()
    primary = make(PgReplicationCheck, dsn["primary"], expected_standbys=1, critical="300s")
    standby = make(PgReplicationCheck, dsn["standby"], critical="300s")
    p, s = run(primary), run(standby)
    assert (p.status, verdict(primary, p)) == (Status.OK, Status.OK), p.summary
    assert (s.status, verdict(standby, s)) == (Status.OK, Status.OK), s.summary
    assert value(p, "replication_standbys") == 1
    assert value(p, "replication_standby_streaming", standby=STANDBY_NAME) == 1
    assert value(p, "replication_standby_lag_seconds", standby=STANDBY_NAME) < 1
    assert value(p, "replication_standby_lag_bytes", standby=STANDBY_NAME, stage="replay") == 0
    assert value(s, "replication_lag_seconds") == 0
    assert value(s, "replication_replay_gap_bytes") == 0
    assert value(s, "replication_receiver_streaming") == 1
    assert s.details["role"] == "standby" and p.details["role"] == "primary"


def test_pg_replication_primary_idle_longer_than_threshold_stays_ok(pg_pair, dsn, events):
    events()
    pg_pair.wait_replayed()
    idle_since = time.monotonic()
    standby = make(PgReplicationCheck, dsn["standby"], critical="2s")
    primary = make(PgReplicationCheck, dsn["primary"], critical="2s", expected_standbys=[STANDBY_NAME])
    # no write for longer than the threshold: the last replayed commit gets older, the lag must not
    wait_for(lambda: time.monotonic() - idle_since > 3, 10, interval=0.2, what="the primary to idle past 2s")
    s, p = run(standby), run(primary)
    assert pg_pair.standby.value("SELECT extract(epoch FROM now() - pg_last_xact_replay_timestamp())") > 2
    assert verdict(standby, s) is Status.OK and value(s, "replication_lag_seconds") == 0, s.summary
    assert verdict(primary, p) is Status.OK and value(p, "replication_standby_lag_seconds",
                                                      standby=STANDBY_NAME) < 2, p.summary


def test_pg_replication_receiver_silent_beyond_receiver_timeout_critical(dsn):
    # the idle link only carries the standby's pings every wal_receiver_timeout/2 (2.5 s here)
    check = make(PgReplicationCheck, dsn["standby"], receiver_timeout="1s")
    result = run_until(check, lambda r: r.status is Status.CRITICAL, 15,
                       what="the receiver's last message to age past 1s")
    assert result.summary.startswith("no message from the primary for"), result.summary
    assert value(result, "replication_receiver_last_message_age_seconds") > 1


def test_pg_replication_replay_paused_lag_grows_critical_then_ok_after_resume(pg_pair, dsn, events):
    standby = make(PgReplicationCheck, dsn["standby"], critical="2s")
    primary = make(PgReplicationCheck, dsn["primary"], critical="2s", expected_standbys=1)
    events()
    pg_pair.wait_replayed()
    pg_pair.standby.query("SELECT pg_wal_replay_pause()")
    try:
        events(100)
        first = run_until(standby, lambda r: value(r, "replication_replay_gap_bytes"), 10,
                          what="WAL received but not replayed")
        late = run_until(standby, lambda r: verdict(standby, r) is Status.CRITICAL, 10,
                         what="the paused standby's lag to pass 2s")
        assert value(late, "replication_lag_seconds") > max(2.0, value(first, "replication_lag_seconds"))
        assert "replay paused" in late.summary or "replay pause requested" in late.summary, late.summary
        # the primary sees it too: WAL flushed on the standby but not replayed, and a replay lag that grows
        p = run_until(primary, lambda r: verdict(primary, r) is Status.CRITICAL, 10,
                      what="the primary's view of the replay lag to pass 2s")
        assert value(p, "replication_standby_lag_bytes", standby=STANDBY_NAME, stage="replay") > 0
        assert value(p, "replication_standby_lag_bytes", standby=STANDBY_NAME, stage="flush") == 0
    finally:
        pg_pair.standby.query("SELECT pg_wal_replay_resume()")
    pg_pair.wait_replayed()
    after = run(standby)
    assert verdict(standby, after) is Status.OK and value(after, "replication_lag_seconds") == 0, after.summary


def test_pg_replication_write_after_idle_spell_not_lag_until_replay_really_stalls(pg_pair, dsn, events):
    standby = make(PgReplicationCheck, dsn["standby"], critical="2s")
    events()
    pg_pair.wait_replayed()
    idle_since = time.monotonic()
    assert verdict(standby, run(standby)) is Status.OK
    wait_for(lambda: time.monotonic() - idle_since > 3, 10, interval=0.2, what="the primary to idle past 2s")
    # WAL arrives after the idle spell and a run sees it received but not yet replayed (held here by a pause,
    # as a bulk load is while it replays): the time since the last replayed commit is not the delay
    pg_pair.standby.query("SELECT pg_wal_replay_pause()")
    try:
        events(1000)
        first = run_until(standby, lambda r: value(r, "replication_replay_gap_bytes"), 10,
                          what="WAL received but not replayed")
        assert verdict(standby, first) is Status.OK, first.summary
        assert value(first, "replication_lag_seconds") < 1
        assert first.details["since_last_replayed_commit_seconds"] > 2
        # replay stays where it is: now it is a delay, counted from the run that first saw the WAL waiting
        late = run_until(standby, lambda r: verdict(standby, r) is Status.CRITICAL, 10,
                         what="the stalled replay's lag to pass 2s")
        assert 2 < value(late, "replication_lag_seconds") <= late.details["since_last_replayed_commit_seconds"]
    finally:
        pg_pair.standby.query("SELECT pg_wal_replay_resume()")
    pg_pair.wait_replayed()
    after = run(standby)
    assert verdict(standby, after) is Status.OK and value(after, "replication_lag_seconds") == 0, after.summary


def test_replay_delay_counts_from_the_first_run_that_saw_the_oldest_unreplayed_position():
    backlog, delay = replay_delay((), 100, 100, now=0.0)
    assert (backlog, delay) == ((), 0.0)                              # caught up
    backlog, delay = replay_delay(backlog, 200, 100, now=10.0)
    assert delay == 0.0                                               # first sight: being replayed right now
    backlog, delay = replay_delay(backlog, 300, 150, now=20.0)
    assert delay == 10.0                                              # 150..200 was already waiting at t=10
    backlog, delay = replay_delay(backlog, 300, 250, now=30.0)
    assert delay == 10.0                                              # past 200: counted from t=20 (300)
    backlog, delay = replay_delay(backlog, 300, 300, now=40.0)
    assert (backlog, delay) == ((), 0.0)
    backlog, delay = replay_delay(((900, 0.0),), 500, 400, now=50.0)  # receive went back: start over
    assert (backlog, delay) == (((500, 50.0),), 0.0)


def test_receiver_silence_limit_follows_the_standbys_ping_period():
    # wal_receiver_timeout 5m: an idle healthy link is silent up to 2.5 min, beyond the old fixed 60s limit
    assert receiver_silence_limit(None, 300.0, 10.0) == 150 + 10 + 10
    assert receiver_silence_limit(None, 5.0, 1.0) == 2.5 + 1 + 10     # the test pair's settings
    assert receiver_silence_limit(None, 0.0, 10.0) is None            # the standby never pings: not judged
    assert receiver_silence_limit(4.0, 0.0, 10.0) == 4.0              # explicit wins


def test_pg_replication_receiver_limit_derived_from_standby_settings_idle_link_ok(pg_pair, dsn):
    check = make(PgReplicationCheck, dsn["standby"])
    assert run(check).details["receiver_timeout_seconds"] == 2.5 + 1 + 10
    strict = make(PgReplicationCheck, dsn["standby"], receiver_timeout="2s")

    def silent_for(seconds):
        return run_until(check, lambda r: value(r, "replication_receiver_last_message_age_seconds") > seconds, 10,
                         what=f"the idle link to be silent for {seconds}s")
    try:
        for setting, limit in (("300s", 150 + 1 + 10), ("0", None)):
            pg_pair.standby.query(f"ALTER SYSTEM SET wal_receiver_timeout = '{setting}'")
            pg_pair.standby.query("SELECT pg_reload_conf()")
            # silent longer than the 2.5s ping period of the fixture's 5s setting: the new one is in force
            result = silent_for(3)
            assert result.status is Status.OK, result.summary
            assert result.details["receiver_timeout_seconds"] == limit
            late = run(strict)
            assert late.status is Status.CRITICAL, late.summary
            assert late.summary.startswith("no message from the primary for") and "receiver_timeout 2s" in \
                late.summary, late.summary
    finally:
        pg_pair.standby.query("ALTER SYSTEM RESET wal_receiver_timeout")
        pg_pair.standby.query("SELECT pg_reload_conf()")
    wait_for(lambda: run(check).details["receiver_timeout_seconds"] == 2.5 + 1 + 10, 10,
             what="the fixture's wal_receiver_timeout back")


def test_pg_replication_primary_where_standby_expected_critical(dsn):
    result = run(make(PgReplicationCheck, dsn["primary"], expect_role="standby", expected_standbys=1))
    assert result.status is Status.CRITICAL
    assert result.summary.startswith("role is primary, expected standby; primary with 1 standby"), result.summary
    assert result.details["role"] == "primary"
    assert run(make(PgReplicationCheck, dsn["standby"], expect_role="standby")).status is Status.OK


def test_pg_replication_logical_client_not_counted_as_standby(pg_logical):
    recvlogical = BINDIR / "pg_recvlogical"
    if not recvlogical.exists():
        pytest.skip(f"{recvlogical} missing (Debian package postgresql-client-15)")
    if not (BINDIR.parent / "lib" / "test_decoding.so").exists():
        pytest.skip("the test_decoding output plugin is missing from the PostgreSQL 15 install")
    consumer = subprocess.Popen(
        [str(recvlogical), "-h", "127.0.0.1", "-p", str(pg_logical.port), "-U", "postgres", "-d", "postgres",
         "--slot", "maint_logical", "--create-slot", "--if-not-exists", "--plugin", "test_decoding", "--start",
         "--file", "/dev/null", "--no-loop"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_for(lambda: pg_logical.query("SELECT 1 FROM pg_stat_replication WHERE state = 'streaming'")
                 or consumer.poll() is not None, 15, what="pg_recvlogical to stream")
        assert consumer.poll() is None, consumer.stderr.read().decode()
        by_count = make(PgReplicationCheck, pg_logical.dsn(), expected_standbys=1)
        result = run(by_count)
        assert result.status is Status.CRITICAL, result.summary
        assert result.summary.startswith("0 of 1 expected standbys connected"), result.summary
        assert "1 logical replication client (not counted as standbys)" in result.summary
        assert value(result, "replication_standbys") == 0
        assert [c["database"] for c in result.details["logical_clients"]] == ["postgres"]
        assert value(result, "replication_slot_active", slot="maint_logical") == 1
        by_name = run(make(PgReplicationCheck, pg_logical.dsn(), expected_standbys=["pg_recvlogical"]))
        assert by_name.summary.startswith("standby missing: pg_recvlogical"), by_name.summary
    finally:
        consumer.terminate()
        consumer.wait(10)
        consumer.stderr.close()
        wait_for(lambda: not pg_logical.value("SELECT active FROM pg_replication_slots "
                                              "WHERE slot_name = 'maint_logical'"), 10, what="the slot released")
        pg_logical.query("SELECT pg_drop_replication_slot('maint_logical')")


def test_pg_replication_receiver_not_streaming_critical_and_lag_not_masked(pg_pair, dsn, events):
    from psycopg import sql

    events()
    pg_pair.wait_replayed()
    original = pg_pair.standby.value("SHOW primary_conninfo")
    nowhere = f"host=127.0.0.1 port={free_port()} user=replicator connect_timeout=1"
    check = make(PgReplicationCheck, dsn["standby"], critical="1h")
    try:
        pg_pair.standby.query(sql.SQL("ALTER SYSTEM SET primary_conninfo = {}").format(sql.Literal(nowhere)))
        pg_pair.standby.query("SELECT pg_reload_conf()")
        result = run_until(check, lambda r: r.status is Status.CRITICAL, 15,
                           what="the standby's receiver to stop streaming")
        assert result.summary.startswith("WAL receiver not streaming"), result.summary
        assert value(result, "replication_receiver_streaming") == 0
        # received == replayed here, yet the lag is the real time since the last replayed commit, not 0
        assert value(result, "replication_lag_seconds") > 0
    finally:
        pg_pair.standby.query(sql.SQL("ALTER SYSTEM SET primary_conninfo = {}").format(sql.Literal(original)))
        pg_pair.standby.query("SELECT pg_reload_conf()")
        wait_for(pg_pair.standby_streaming, 30, what="standby to stream again")
    assert run(check).status is Status.OK


def test_pg_replication_inactive_slot_warns_with_retained_bytes(pg_pair, dsn, events):
    standby_check = make(PgReplicationCheck, dsn["standby"])
    check = make(PgReplicationCheck, dsn["primary"], expected_standbys=1)
    pg_pair.primary.query("SELECT pg_create_physical_replication_slot('maint_test_slot', true)")
    try:
        events(2000)
        result = run(check)
        assert result.status is Status.WARNING, result.summary
        assert "slot maint_test_slot inactive, retains" in result.summary
        assert value(result, "replication_slot_active", slot="maint_test_slot") == 0
        assert value(result, "replication_slot_retained_bytes", slot="maint_test_slot") > 100_000
        assert value(result, "replication_slot_wal_status", slot="maint_test_slot", wal_status="reserved") == 1
        assert value(result, "replication_slot_wal_status", slot="maint_test_slot", wal_status="lost") == 0
        pg_pair.wait_replayed()
        assert_family_contract(check, [result, run(standby_check)])
    finally:
        pg_pair.primary.query("SELECT pg_drop_replication_slot('maint_test_slot')")
    assert run(check).status is Status.OK


def test_pg_replication_standby_stopped_both_sides_critical(pg_pair, dsn):
    by_name = make(PgReplicationCheck, dsn["primary"], expected_standbys=[STANDBY_NAME])
    by_count = make(PgReplicationCheck, dsn["primary"], expected_standbys=1)
    standby = make(PgReplicationCheck, dsn["standby"])
    try:
        pg_pair.standby.stop()
        result = run_until(by_name, lambda r: r.status is Status.CRITICAL, 15,
                           what="the primary to see its standby gone")
        assert result.summary.startswith(f"standby missing: {STANDBY_NAME}"), result.summary
        assert value(result, "replication_standbys") == 0
        assert run(by_count).summary.startswith("0 of 1 expected standbys connected")
        own = run(standby)
        assert own.status is Status.CRITICAL and "Connection refused" in own.summary, own.summary
    finally:
        pg_pair.ensure_standby_running()
    assert run(by_name).status is Status.OK


# --- WAL archiving ---------------------------------------------------------------------------------------

def archiver(pg_pair) -> dict:
    row = pg_pair.primary.query("SELECT archived_count, failed_count, "
                                "coalesce(last_failed_time > last_archived_time, false) FROM pg_stat_archiver")[0]
    return {"archived": row[0], "failed": row[1], "failing": row[2]}


def test_pg_archiving_all_archived_idle_past_threshold_ok(pg_pair, dsn, events):
    check = make(PgArchivingCheck, dsn["primary"], critical="1s")
    events()
    pg_pair.primary.query("SELECT pg_switch_wal()")
    result = run_until(check, lambda r: value(r, "archiver_last_archived_age_seconds") > 1.2
                       and value(r, "archiver_ready_segments") == 0, 15,
                       what="the last archive to be older than the threshold")
    assert verdict(check, result) is Status.OK, result.summary     # idle: nothing waits, however old
    assert value(result, "archiver_lag_seconds") == 0 and value(result, "archiver_failing") == 0
    assert value(result, "archiver_archived_files") >= 1
    assert result.summary.startswith("all completed WAL segments archived")
    assert (pg_pair.archive / result.details["last_archived_wal"]).exists()


def test_pg_archiving_command_failing_critical_then_failures_since_last_run_then_ok(pg_pair, dsn, events):
    watcher = make(PgArchivingCheck, dsn["primary"], critical="1h")
    assert run(watcher).status is Status.OK
    failed_before = archiver(pg_pair)["failed"]
    try:
        pg_pair.primary.query("ALTER SYSTEM SET archive_command = '/bin/false'")
        pg_pair.primary.query("SELECT pg_reload_conf()")
        events()
        pg_pair.primary.query("SELECT pg_switch_wal()")
        wait_for(lambda: archiver(pg_pair)["failed"] > failed_before, 15, what="the archive command to fail")
        rpo = make(PgArchivingCheck, dsn["primary"], critical="1s")
        fresh = run_until(rpo, lambda r: value(r, "archiver_lag_seconds") > 1, 10,
                          what="the waiting segment to age past 1s")
        assert fresh.status is Status.CRITICAL and fresh.summary.startswith("archiving failing"), fresh.summary
        assert value(fresh, "archiver_failing") == 1 and value(fresh, "archiver_ready_segments") >= 1
        assert evaluate(rpo, fresh, WindowState(), 0).summary.startswith("archiver_lag_seconds ")
    finally:
        pg_pair.primary.query("ALTER SYSTEM RESET archive_command")
        pg_pair.primary.query("SELECT pg_reload_conf()")
    wait_for(lambda: not archiver(pg_pair)["failing"], 15, what="archiving to succeed again")
    between = run(watcher)          # not failing any more, but failures happened since its previous run
    assert between.status is Status.CRITICAL, between.summary
    assert between.summary.startswith("archive command failed: ") and "since last run" in between.summary
    assert run(watcher).status is Status.OK
    assert_family_contract(watcher, [between, fresh])


def test_pg_archiving_standby_ok_archived_by_primary(dsn):
    result = run(make(PgArchivingCheck, dsn["standby"]))
    assert result.status is Status.OK and result.summary.startswith("standby: WAL is archived by the primary")


# --- sessions --------------------------------------------------------------------------------------------

def test_pg_activity_long_query_and_idle_in_transaction_detected(pg_pair, dsn):
    check = make(PgActivityCheck, dsn["primary"], long_query="500ms", critical="1s")
    sleeper = pg_pair.primary.connect()
    idle = pg_pair.primary.connect()

    def sleep_long():
        try:
            sleeper.execute("SELECT pg_sleep(30) /* maint-long-query */")
        except psycopg.Error:
            pass                  # cancelled at teardown

    thread = threading.Thread(target=sleep_long, daemon=True)
    try:
        idle.execute("BEGIN")
        idle.execute("SELECT 42 /* maint-idle-tx */")
        thread.start()
        result = run_until(check, lambda r: value(r, "activity_long_queries") >= 1
                           and value(r, "activity_long_idle_in_transaction") >= 1
                           and value(r, "activity_longest_query_seconds") > 1, 15,
                           what="both sessions to pass the thresholds")
        assert verdict(check, result) is Status.CRITICAL
        assert value(result, "activity_longest_idle_in_transaction_seconds") > 0.5
        queries = {s["state"]: s["query"] for s in result.details["sessions"]}
        assert "maint-long-query" in queries["active"] and "maint-idle-tx" in queries["idle in transaction"]
        assert "maint-" not in result.summary
        assert all(not s.labels for s in result.samples)      # query text never becomes a label
        assert_family_contract(check, [result])
    finally:
        sleeper.cancel_safe()
        thread.join(10)
        sleeper.close()
        idle.close()


# --- pg_stat_statements ----------------------------------------------------------------------------------

def test_pg_statements_slow_statement_listed_in_details_and_passwords_redacted(pg_pair, dsn):
    pg_pair.primary.query("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
    secret = "redact-me-" + pg_pair.monitor_password[:6]
    _SECRETS.add(secret)
    pg_pair.primary.query(f"ALTER ROLE replicator PASSWORD '{secret}'")
    pg_pair.primary.query("ALTER ROLE replicator PASSWORD NULL")
    pg_pair.primary.query("SELECT pg_sleep(0.5) /* maint-slow-statement */")
    check = make(PgStatementsCheck, dsn["primary"], warning="200ms", top=100)
    result = run(check)           # asserts the ALTER ROLE password never reached the details
    assert verdict(check, result) is Status.WARNING, result.summary
    slowest = result.details["statements"][0]
    assert "maint-slow-statement" in slowest["query"] and slowest["mean_seconds"] >= 0.5
    assert value(result, "statements_max_mean_seconds") >= 0.5
    assert value(result, "statements_calls") >= 1 and value(result, "statements_tracked") >= 1
    assert any("PASSWORD '***'" in s["query"] for s in result.details["statements"])
    assert "maint-slow-statement" not in result.summary
    assert_family_contract(check, [result])


def test_pg_statements_extension_absent_unknown(pg_pair, dsn):
    if not pg_pair.primary.query("SELECT 1 FROM pg_database WHERE datname = 'maint_noext'"):
        pg_pair.primary.query("CREATE DATABASE maint_noext")
    no_ext = pg_pair.primary.dsn(user=MONITOR_USER, password=pg_pair.monitor_password, dbname="maint_noext")
    _SECRETS.add(no_ext)
    result = run(make(PgStatementsCheck, no_ext))
    assert result.status is Status.UNKNOWN
    assert result.summary.startswith("pg_stat_statements not installed")


def test_redact_password_literals_blanked():
    assert redact_query("ALTER ROLE app PASSWORD 'it''s secret'") == "ALTER ROLE app PASSWORD '***'"
    assert redact_query("SELECT 'password' AS word") == "SELECT 'password' AS word"
    assert redact_query("ALTER ROLE app PASSWORD NULL") == "ALTER ROLE app PASSWORD NULL"
    assert redact_query(None) is None


def test_redact_conninfo_passwords_blanked():
    assert redact_query("SELECT dblink_connect('host=x password=secret dbname=y')") == \
        "SELECT dblink_connect('host=x password=*** dbname=y')"
    assert redact_query("SELECT dblink_connect('c1', 'dbname=y PASSWORD = s3cret')") == \
        "SELECT dblink_connect('c1', 'dbname=y PASSWORD = ***')"
    # a quoted conninfo value inside an SQL literal, with an escaped quote in it
    assert redact_query(r"SELECT dblink('host=x password=''it\''s secret'' user=u', 'SELECT 1')") == \
        "SELECT dblink('host=x password=''***'' user=u', 'SELECT 1')"
    assert redact_query("CREATE USER MAPPING FOR app SERVER s OPTIONS (user 'app', password 'pw')") == \
        "CREATE USER MAPPING FOR app SERVER s OPTIONS (user 'app', password '***')"
    assert redact_query("SELECT dblink_connect('postgresql://app:pw@db:5432/app')") == \
        "SELECT dblink_connect('postgresql://app:***@db:5432/app')"


# --- tables and indexes ----------------------------------------------------------------------------------

def test_pg_tables_dead_tuples_warn_stale_vacuum_and_unused_index_counted(pg_pair, dsn, events):
    primary = pg_pair.primary
    primary.query("DROP TABLE IF EXISTS maint_bloat")
    primary.query("CREATE TABLE maint_bloat (id int PRIMARY KEY, v text) WITH (autovacuum_enabled = off)")
    primary.query("CREATE INDEX maint_bloat_v ON maint_bloat (v)")
    primary.query("INSERT INTO maint_bloat SELECT g, md5(g::text) FROM generate_series(1, 5000) g")
    primary.query("DELETE FROM maint_bloat WHERE id <= 3000")
    check = make(PgTablesCheck, dsn["primary"], tables=["maint_bloat", "public.maint_events", "no_such_table"],
                 warning="50%", critical="90%", min_tuples=1000, stale_after="1h")
    result = run_until(check, lambda r: value(r, "table_dead_tuples", table="public.maint_bloat"), 10,
                       what="the deleted rows to show as dead tuples")
    assert value(result, "table_dead_tuple_ratio", table="public.maint_bloat") == pytest.approx(0.6, abs=0.01)
    assert value(result, "table_size_bytes", table="public.maint_bloat") > 0
    assert value(result, "table_last_vacuum_age_seconds", table="public.maint_bloat") is None   # never
    assert result.status is Status.WARNING
    assert "tables not found: no_such_table" in result.summary
    assert "stale: public.maint_bloat vacuum never" in result.summary, result.summary
    assert verdict(check, result) is Status.WARNING
    assert "table_dead_tuple_ratio public.maint_bloat 60% > 50%" in evaluate(check, result, WindowState(),
                                                                                   0).summary
    unused = [u["index"] for u in result.details["unused_indexes"]]
    assert "public.maint_bloat_v" in unused and "public.maint_bloat_pkey" not in unused
    assert value(result, "unused_indexes") >= 1 and value(result, "unused_index_bytes") > 0
    assert value(result, "database_size_bytes", database="postgres") > 1_000_000

    primary.query("VACUUM ANALYZE maint_bloat")
    primary.query("INSERT INTO maint_bloat SELECT g, 'x' FROM generate_series(1, 1000) g")
    clean = run_until(check, lambda r: value(r, "table_last_vacuum_age_seconds", table="public.maint_bloat")
                      is not None, 10, what="the vacuum to show")
    assert value(clean, "table_dead_tuples", table="public.maint_bloat") == 0
    assert "public.maint_bloat vacuum" not in clean.summary and "public.maint_bloat analyze" not in clean.summary
    assert verdict(check, clean) is Status.WARNING          # still: no_such_table
    assert "postgres" in clean.details["database_growth_bytes"]
    assert_family_contract(check, [result, clean])


def test_pg_tables_small_table_dead_ratio_not_judged(pg_pair, dsn):
    pg_pair.primary.query("DROP TABLE IF EXISTS maint_tiny")
    pg_pair.primary.query("CREATE TABLE maint_tiny (i int) WITH (autovacuum_enabled = off)")
    pg_pair.primary.query("INSERT INTO maint_tiny SELECT generate_series(1, 10)")
    pg_pair.primary.query("DELETE FROM maint_tiny WHERE i <= 9")
    check = make(PgTablesCheck, dsn["primary"], tables=["maint_tiny"], critical="50%", min_tuples=100)
    result = run_until(check, lambda r: value(r, "table_dead_tuples", table="public.maint_tiny"), 10,
                       what="dead tuples to show")
    assert value(result, "table_dead_tuple_ratio", table="public.maint_tiny") == pytest.approx(0.9)
    assert verdict(check, result) is Status.OK, result.summary


# --- through the daemon ----------------------------------------------------------------------------------

def test_pg_checks_in_running_agent_exported_and_secret_never_stored_or_logged(pg_pair, dsn, agent_factory):
    agent = agent_factory(f"""
agent:
  state_dir: {{state}}
  workers: 4
http:
  listen: 127.0.0.1:{{port}}
checks:
  - {{name: db, type: postgres, every: 500ms, dsn: "{dsn['primary']}", expect_role: primary}}
  - {{name: db-replication, type: pg_replication, every: 500ms, dsn: "{dsn['primary']}", expected_standbys: 1}}
  - {{name: standby-replication, type: pg_replication, every: 500ms, dsn: "{dsn['standby']}", critical: 300s}}
""").start()
    wanted = ['maint_pg_up{check="db"} 1.0', 'maint_check_status{check="db",severity="P2",type="postgres"} 0.0',
              f'maint_pg_replication_standby_streaming{{check="db-replication",standby="{STANDBY_NAME}"}} 1.0',
              'maint_pg_replication_lag_seconds{check="standby-replication"}']
    wait_for(lambda: all(w in agent.metrics() for w in wanted), 20, what="the pg checks in /metrics")
    agent.stop()
    state = agent.config.parent / "var"
    assert (state / "maint-agent.db").exists()
    stored = b"".join(f.read_bytes() for f in state.rglob("*") if f.is_file()) + agent.log.read_bytes()
    for secret in _SECRETS:
        assert secret.encode() not in stored, "a secret reached the store or the log"
