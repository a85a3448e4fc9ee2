"""PostgreSQL probes (seed 004 "Application Health Checks", seed 002 replication and DR targets).

Every type connects the same way (`checks.pg_session.open_session`): the DSN is read from its
reference at the moment of use and never shown; `connect_timeout`,
`statement_timeout`, TCP keepalives and `tcp_user_timeout` are always set and the
session is read-only (`default_transaction_read_only=on`), so a probe can neither
hang on a stuck server nor change data. The role needs `pg_monitor` (for other
sessions' queries, replication positions and pg_stat_statements), not superuser.

A run never outlives its timeout. Each query's statement_timeout is the lower of
the option and the time left in the run, so a slow server cancels the query
itself (UNKNOWN, "query cancelled …"). statement_timeout is server-side, though:
a server, proxy or network that stops answering after the connection opened
would keep the probe waiting forever. A watchdog timer armed at the end of the
run (plus WATCHDOG_GRACE_SECONDS, so the server's own cancel reports first)
sends a cancel request and then shuts the socket down, so whatever call is
waiting returns; the result is CRITICAL "timed out after …" (the server did not
answer at all, as when it does not answer a connection attempt). Connecting is
bounded by connect_timeout, which libpq counts in whole seconds, at least 2.

One connection per run, closed at the end: a check every 15–60 s costs one
loopback handshake, and in exchange no backend slot is held between runs (the
connection-usage check would otherwise count seven agent sessions), a failover or
a multi-host DSN is followed at the next run instead of sticking to the old
server, an overrunning run abandoned by the runner never shares a connection with
the next one, and there is no stale-connection state to get wrong.

A server that cannot be reached (refused, timed out, shutting down, out of
connection slots) is CRITICAL: the application cannot reach it either. Any other
failure (authentication, a missing privilege or extension, a query cancelled by
`statement_timeout`) is UNKNOWN: the probe could not tell.

psycopg is imported inside the functions that use it, never at import time.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import Field

from agent.plugin.fields import Duration, Secret
from agent.plugin.result import CheckResult, Sample, Status, cap_summary, sample, worst
from agent.plugin.units import format_duration, format_size
from checks.base import Check, CheckContext, DurationThresholds, MetricSpec, RatioThresholds, Threshold
from checks.pg_session import (
    WATCHDOG_GRACE_SECONDS, PgOptions, ProbeFailed, Session, Watchdog, describe_error, is_down, libpq_agent_fault,
    open_session, redact_query, statement_ms,
)

class PgCheck(Check):
    """Connect, hand the session to `probe` under the run's watchdog, turn every failure into CRITICAL or UNKNOWN."""

    METRIC_PREFIX = "pg"
    options: PgOptions

    def run(self, ctx: CheckContext) -> CheckResult:
        import psycopg

        try:
            dsn = Secret(self.options.dsn).reveal()
        except (OSError, LookupError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            return CheckResult.unknown(f"cannot read the DSN: {reason}")
        started = ctx.monotonic()
        deadline = started + ctx.timeout
        try:
            conn = open_session(dsn, self.options, ctx.timeout)
        except ProbeFailed as exc:
            return CheckResult(exc.status, exc.reason)
        except psycopg.Error as exc:
            if fault := libpq_agent_fault(exc):
                return fault.result()
            reason = describe_error(exc, dsn)
            if is_down(exc):
                return self.unreachable(f"cannot connect: {reason}")
            return CheckResult.unknown(f"cannot connect: {reason}")
        opened = ctx.monotonic()
        session = Session(conn, opened - started, deadline, self.options.statement_timeout, ctx.monotonic,
                          statement_ms(self.options.statement_timeout, ctx.timeout))
        watchdog = Watchdog(conn, deadline - opened + WATCHDOG_GRACE_SECONDS)
        failure: psycopg.Error | None = None
        try:
            result = self.probe(session, ctx)
        except psycopg.Error as exc:
            failure = exc
        finally:
            watchdog.disarm()
            conn.close()
        if failure is None:
            return result
        if watchdog.fired:
            return self.unreachable(f"timed out after {format_duration(ctx.timeout)}: no answer from the server "
                                    f"(cancel sent, connection closed)")
        if isinstance(failure, psycopg.errors.QueryCanceled):
            if session.limited_by_run:
                return CheckResult.unknown(f"query cancelled at the end of the run's timeout "
                                           f"({format_duration(ctx.timeout)})")
            return CheckResult.unknown(f"query cancelled by statement_timeout "
                                       f"({format_duration(self.options.statement_timeout)})")
        reason = describe_error(failure, dsn)
        if is_down(failure) or conn.broken:
            return self.unreachable(f"connection lost: {reason}")
        state = f"{failure.sqlstate}: " if getattr(failure, "sqlstate", None) else ""
        return CheckResult.unknown(f"query failed: {state}{reason}")

    def unreachable(self, reason: str) -> CheckResult:
        return CheckResult.critical(reason)

    def probe(self, session: Session, ctx: CheckContext) -> CheckResult:
        raise NotImplementedError


def _seconds(value) -> float | None:
    return None if value is None else max(0.0, float(value))


# --- connectivity --------------------------------------------------------------------------------------------

class PostgresCheck(PgCheck):
    """Connectivity: connect and `SELECT 1` round trip, server version, and the role (primary or standby).

    The role is read at every run because failover changes it; `expect_role`
    turns a wrong role into CRITICAL (a primary that came back as a second
    primary, a standby promoted by mistake). The thresholds apply to the
    `SELECT 1` round trip, not to the connect time (which includes TLS and
    authentication and is exported separately).
    """

    TYPE = "postgres"
    EXAMPLE = """
        - name: pg
          type: postgres
          every: 30s
          dsn: ${credential:pg.dsn}   # systemd LoadCredential=pg.dsn:/etc/maint-agent/pg.dsn
          expect_role: primary
          warning: 200ms          # connect and query time
    """

    class Options(PgOptions, DurationThresholds):
        type: Literal["postgres"]
        expect_role: Literal["primary", "standby"] | None = Field(
            None, description="CRITICAL when the server's role (pg_is_in_recovery) is not this one")

    METRICS = (
        MetricSpec("up", "boolean", "1 when the server accepted a connection and answered SELECT 1."),
        MetricSpec("connect_seconds", "seconds", "Time to open the connection (TCP, TLS, authentication)."),
        MetricSpec("round_trip_seconds", "seconds", "Time for SELECT 1 on the open connection."),
        MetricSpec("server_version_num", "count", "server_version_num, e.g. 150004 for 15.4."),
        MetricSpec("in_recovery", "boolean", "1 on a standby (pg_is_in_recovery()), 0 on a primary."),
    )
    THRESHOLD = Threshold(("round_trip_seconds",), "seconds")

    def unreachable(self, reason: str) -> CheckResult:
        return CheckResult.critical(reason, [sample("up", 0)])

    def probe(self, session: Session, ctx: CheckContext) -> CheckResult:
        before = ctx.monotonic()
        session.one("SELECT 1")
        round_trip = ctx.monotonic() - before
        row = session.one("SELECT current_setting('server_version_num')::int AS num, "
                          "current_setting('server_version') AS version, pg_is_in_recovery() AS in_recovery")
        role = "standby" if row["in_recovery"] else "primary"
        samples = [sample("up", 1), sample("connect_seconds", session.connect_seconds),
                   sample("round_trip_seconds", round_trip), sample("server_version_num", row["num"]),
                   sample("in_recovery", 1 if row["in_recovery"] else 0)]
        version = str(row["version"]).split(" ", 1)[0]
        summary = (f"{role}, PostgreSQL {version}, connect {format_duration(session.connect_seconds)}, "
                   f"SELECT 1 {format_duration(round_trip)}")
        expected = self.options.expect_role
        if expected and role != expected:
            return CheckResult.critical(f"role is {role}, expected {expected} — {summary}", samples, role=role)
        return CheckResult.ok(summary, samples, role=role, version=row["version"])


# --- connection usage ----------------------------------------------------------------------------------------

_STATES = ("active", "idle", "idle_in_transaction", "idle_in_transaction_aborted")


class PgConnectionsCheck(PgCheck):
    """Client connections against the limit non-superusers can reach, and how many are in each state.

    used_ratio = client backends / (max_connections − superuser_reserved_connections
    − reserved_connections): the application gets "remaining connection slots are
    reserved" at that point, not at max_connections, so that is where 100 % is.
    It can exceed 1 when superusers use the reserved slots. Walsenders,
    autovacuum and background workers have their own limits and are not counted.
    """

    TYPE = "pg_connections"
    EXAMPLE = """
        - name: pg-connections
          type: pg_connections
          every: 1m
          dsn: ${credential:pg.dsn}
          warning: 80%            # of max_connections
          critical: 95%
    """

    class Options(PgOptions, RatioThresholds):
        type: Literal["pg_connections"]

    METRICS = (
        MetricSpec("connections_used_ratio", "ratio",
                   "Client backends divided by the connections available to non-superusers."),
        MetricSpec("connections_limit", "count",
                   "Connections available to non-superusers (max_connections minus reserved)."),
        MetricSpec("connections", "count", "Client backends by state (idle_in_transaction, active, …).",
                   ("state",)),
    )
    THRESHOLD = Threshold(("connections_used_ratio",), "ratio")

    def probe(self, session: Session, ctx: CheckContext) -> CheckResult:
        limits = session.one(
            "SELECT current_setting('max_connections')::int AS max, "
            "current_setting('superuser_reserved_connections')::int "
            "  + coalesce(current_setting('reserved_connections', true)::int, 0) AS reserved")
        rows = session.all("SELECT coalesce(state, 'unknown') AS state, count(*) AS n FROM pg_stat_activity "
                           "WHERE backend_type = 'client backend' GROUP BY 1")
        counts = dict.fromkeys(_STATES, 0)
        for row in rows:
            key = re.sub(r"[^a-z]+", "_", row["state"].lower()).strip("_")
            counts[key] = counts.get(key, 0) + row["n"]
        total = sum(counts.values())
        limit = max(1, limits["max"] - limits["reserved"])
        ratio = total / limit
        samples = [sample("connections_used_ratio", ratio), sample("connections_limit", limit)]
        samples += [sample("connections", n, state=state) for state, n in counts.items()]
        states = ", ".join(f"{n} {state.replace('_', ' ')}" for state, n in counts.items() if n)
        return CheckResult.ok(f"{total}/{limit} connections ({ratio:.0%}): {states}", samples,
                              max_connections=limits["max"], reserved=limits["reserved"])


# --- replication ---------------------------------------------------------------------------------------------

_WAL_STATUSES = ("reserved", "extended", "unreserved", "lost")
_LAG_STAGES = ("sent", "write", "flush", "replay")
RECEIVER_TIMEOUT_MARGIN_SECONDS = 10.0
_BACKLOG_POSITIONS_KEPT = 512


def receiver_silence_limit(explicit: float | None, wal_receiver_timeout: float | None,
                           status_interval: float | None) -> float | None:
    """Given `receiver_timeout` and the standby's settings (seconds), return how long its receiver may go unheard.

    An idle primary sends nothing until the standby pings it, which the
    standby does after wal_receiver_timeout/2 of silence, on its next wakeup
    (up to wal_receiver_status_interval later); a margin covers the round trip
    and scheduling. None when nothing bounds the silence
    (wal_receiver_timeout = 0 and no explicit receiver_timeout): not judged.
    """
    if explicit is not None:
        return explicit
    if not wal_receiver_timeout:
        return None
    return wal_receiver_timeout / 2 + (status_interval or 0.0) + RECEIVER_TIMEOUT_MARGIN_SECONDS


Backlog = tuple[tuple[int, float], ...]      # receive positions seen ahead of replay, with when first seen


def replay_delay(backlog: Backlog, receive: int | None, replay: int | None, now: float) -> tuple[Backlog, float]:
    """Given the backlog of earlier runs, this run's receive and replay positions and `now` (monotonic), return
    the new backlog and for how long replay has been behind.

    A run appends the receive position when it moved ahead; positions replay
    has reached are dropped. The oldest one left was first seen at t: the WAL
    right after the replay position was already received then, so replay has
    been behind for at least now − t. 0 when everything received is replayed,
    and on the first run that sees replay behind (a batch that is being
    replayed right now is no delay). A receive position below the last one
    seen (receiver restarted, new timeline) starts over.
    """
    if receive is None or replay is None:
        return (), 0.0
    if backlog and receive < backlog[-1][0]:
        backlog = ()
    if not backlog or receive > backlog[-1][0]:
        backlog = (*backlog, (receive, now))
    backlog = tuple(entry for entry in backlog if entry[0] > replay)
    if len(backlog) > _BACKLOG_POSITIONS_KEPT:     # keep the oldest, which the delay is counted from
        backlog = backlog[:1] + backlog[-(_BACKLOG_POSITIONS_KEPT - 1):]
    return backlog, (max(0.0, now - backlog[0][1]) if backlog else 0.0)


class PgReplicationCheck(PgCheck):
    """Streaming replication seen from whichever side this server is on; the role is detected at every run.

    `expect_role` (primary or standby) turns the other role into CRITICAL: a
    standby promoted by mistake, or a second primary after a split brain.

    On a primary: every physical standby in pg_stat_replication with its state
    and byte lag per stage (sent/write/flush/replay against
    pg_current_wal_lsn()) and its replay lag in seconds. Logical replication
    walsenders (subscriptions, pg_recvlogical, CDC tools) are listed in the
    details but are not standbys and are not counted: a walsender is logical
    when its session is bound to a database (pg_stat_activity.datname, set only
    for `replication=database` connections) or it holds a logical slot.
    pg_basebackup walsenders (state `backup`) are left out. PostgreSQL shows
    replay_lag as NULL once a standby has replayed everything — that is 0, not
    infinity. NULL while replay bytes are outstanding means the walsender has
    no fresh sample (replay stalled right after an idle spell); the check then
    counts from the first run that saw it so, instead of reporting 0. Fewer
    standbys than `expected_standbys` is CRITICAL, naming the missing ones when
    names are given. Replication slots (on either side): an inactive slot is
    WARNING (it keeps WAL until the disk fills), wal_status `unreserved`
    WARNING, `lost` CRITICAL; retained bytes = pg_wal_lsn_diff(current,
    restart_lsn).

    On a standby the replay delay must neither grow while the primary is idle,
    nor jump when it writes again after an idle spell, nor hide a dead link:

    - link healthy = pg_stat_wal_receiver has a row with status `streaming`
      and its last message from the primary is younger than the silence limit:
      `receiver_timeout` when set, else derived from the standby's settings as
      wal_receiver_timeout/2 + wal_receiver_status_interval + 10 s (an idle
      primary is only heard from when the standby pings it, after
      wal_receiver_timeout/2 of silence). With wal_receiver_timeout = 0 the
      standby never pings, so silence is not judged unless receiver_timeout
      is set.
    - link healthy: lag = how long replay has been behind receive, tracked
      across runs by this check instance (see `replay_delay`): 0 while
      everything received is replayed and on the first run that sees a gap;
      then now − the time a run first saw the oldest still-unreplayed receive
      position, so it resets when replay reaches what earlier runs saw
      received. It is capped by now() − pg_last_xact_replay_timestamp(). A
      paused or stuck replay therefore shows up one run after the WAL
      arrived; a batch replayed between two runs never does.
    - link down or absent: lag = now() − pg_last_xact_replay_timestamp(), the
      time since the last replayed commit: how stale the standby's data may
      be, since nothing says what the primary has written meanwhile.

    A receiver that is missing, not streaming or silent beyond the limit is
    CRITICAL whatever the lag says. Clock skew between the two hosts adds to
    the link-down lag.
    """

    TYPE = "pg_replication"
    EXAMPLE = """
        - name: pg-replication
          type: pg_replication
          every: 30s
          dsn: ${credential:pg.dsn}
          expected_standbys: 1
          warning: 60s            # replay lag
          critical: 300s
    """

    class Options(PgOptions, DurationThresholds):
        type: Literal["pg_replication"]
        expect_role: Literal["primary", "standby"] | None = Field(
            None, description="CRITICAL when the server's role (pg_is_in_recovery) is not this one")
        expected_standbys: Annotated[int, Field(ge=0)] | tuple[str, ...] | None = Field(
            None, description="on a primary: how many physical standbys must be connected, or their "
                              "application_name list (named in the alarm when missing); logical replication "
                              "clients do not count")
        receiver_timeout: Duration | None = Field(
            None, description="on a standby: CRITICAL when the WAL receiver heard nothing from the primary for "
                              "this long; default wal_receiver_timeout/2 + wal_receiver_status_interval + 10s, "
                              "not judged when wal_receiver_timeout is 0")

    METRICS = (
        MetricSpec("replication_standbys", "count",
                   "Physical standbys connected to this primary (pg_stat_replication, logical clients excluded)."),
        MetricSpec("replication_standby_streaming", "boolean", "1 when the standby's walsender is streaming.",
                   ("standby",)),
        MetricSpec("replication_standby_lag_bytes", "bytes",
                   "WAL the standby has not yet sent/written/flushed/replayed, seen from the primary.",
                   ("standby", "stage")),
        MetricSpec("replication_standby_lag_seconds", "seconds",
                   "The standby's replay lag seen from the primary (0 when caught up).", ("standby",)),
        MetricSpec("replication_lag_seconds", "seconds",
                   "On a standby: replay delay, 0 when caught up with a healthy link (see the check's docs)."),
        MetricSpec("replication_replay_gap_bytes", "bytes", "On a standby: WAL received but not yet replayed."),
        MetricSpec("replication_receiver_streaming", "boolean", "On a standby: 1 when the WAL receiver streams."),
        MetricSpec("replication_receiver_last_message_age_seconds", "seconds",
                   "On a standby: time since the last message from the primary."),
        MetricSpec("replication_slot_active", "boolean", "1 when a client uses the replication slot.", ("slot",)),
        MetricSpec("replication_slot_retained_bytes", "bytes", "WAL kept for the replication slot.", ("slot",)),
        MetricSpec("replication_slot_wal_status", "boolean", "1 for the slot's current wal_status.",
                   ("slot", "wal_status")),
    )
    THRESHOLD = Threshold(("replication_standby_lag_seconds", "replication_lag_seconds"), "seconds")

    def __init__(self, options):
        super().__init__(options)
        self._stalled_since: dict[str, tuple[str, float]] = {}   # standby -> (replay_lsn, first seen, wall)
        self._backlog: Backlog = ()                               # standby side, see replay_delay

    def probe(self, session: Session, ctx: CheckContext) -> CheckResult:
        in_recovery = session.one("SELECT pg_is_in_recovery() AS r")["r"]
        role = "standby" if in_recovery else "primary"
        samples: list[Sample] = []
        if in_recovery:
            status, summary, details = self._standby_side(session, samples, ctx)
        else:
            self._backlog = ()
            status, summary, details = self._primary_side(session, samples, ctx)
        slot_status, slot_notes, slots = self._slots(session, samples)
        status = worst(status, slot_status)
        notes = [summary, *slot_notes]
        expected = self.options.expect_role
        if expected and role != expected:
            status = Status.CRITICAL
            notes.insert(0, f"role is {role}, expected {expected}")
        details["slots"] = slots
        details["role"] = role
        return CheckResult(status, cap_summary("; ".join(n for n in notes if n)), tuple(samples), details)

    def _primary_side(self, session: Session, samples: list, ctx: CheckContext):
        walsenders = session.all("""
            SELECT r.application_name, r.client_addr::text AS client_addr, r.state, r.sync_state,
                   r.replay_lsn::text AS replay_lsn,
                   pg_wal_lsn_diff(pg_current_wal_lsn(), r.sent_lsn) AS sent,
                   pg_wal_lsn_diff(pg_current_wal_lsn(), r.write_lsn) AS write,
                   pg_wal_lsn_diff(pg_current_wal_lsn(), r.flush_lsn) AS flush,
                   pg_wal_lsn_diff(pg_current_wal_lsn(), r.replay_lsn) AS replay,
                   extract(epoch FROM r.replay_lag) AS replay_lag,
                   a.datname,
                   a.datname IS NOT NULL OR EXISTS (
                       SELECT 1 FROM pg_replication_slots s WHERE s.active_pid = r.pid AND s.slot_type = 'logical'
                   ) AS logical
            FROM pg_stat_replication r LEFT JOIN pg_stat_activity a ON a.pid = r.pid
            WHERE r.state IS DISTINCT FROM 'backup'
            ORDER BY r.application_name, r.client_addr""")
        rows = [row for row in walsenders if not row["logical"]]
        logical = [{"application_name": row["application_name"], "client_addr": row["client_addr"],
                    "database": row["datname"], "state": row["state"]} for row in walsenders if row["logical"]]
        names = [row["application_name"] or "unnamed" for row in rows]
        status, notes, standbys = Status.OK, [], []
        now = ctx.wall()
        seen = set()
        for name, row in zip(names, rows):
            label = name if names.count(name) == 1 else f"{name}@{row['client_addr']}"
            seen.add(label)
            streaming = row["state"] == "streaming"
            samples.append(sample("replication_standby_streaming", 1 if streaming else 0, standby=label))
            for stage in _LAG_STAGES:
                if row[stage] is not None:
                    samples.append(sample("replication_standby_lag_bytes", max(0.0, float(row[stage])),
                                          standby=label, stage=stage))
            lag = self._replay_seconds(label, row, now)
            if lag is not None:
                samples.append(sample("replication_standby_lag_seconds", lag, standby=label))
            if not streaming:
                status = worst(status, Status.WARNING)
                notes.append(f"standby {label} is {row['state']}")
            standbys.append({"standby": label, "client_addr": row["client_addr"], "state": row["state"],
                             "sync_state": row["sync_state"], "replay_lag_seconds": lag,
                             **{f"{stage}_lag_bytes": row[stage] for stage in _LAG_STAGES}})
        self._stalled_since = {k: v for k, v in self._stalled_since.items() if k in seen}
        samples.append(sample("replication_standbys", len(rows)))
        missing = self._missing(names, len(rows))
        if missing:
            status = Status.CRITICAL
            notes.insert(0, missing)
        lags = ", ".join(f"{s['standby']} {s['state']} replay {format_size(float(s['replay_lag_bytes'] or 0))}"
                         + (f"/{format_duration(s['replay_lag_seconds'])}" if s["replay_lag_seconds"] is not None
                            else "") for s in standbys)
        summary = f"primary with {len(rows)} standby{'s' if len(rows) != 1 else ''}" + (f" ({lags})" if lags else "")
        if logical:
            summary += (f", {len(logical)} logical replication client{'s' if len(logical) != 1 else ''} "
                        f"(not counted as standbys)")
        return status, "; ".join([*notes, summary]), {"standbys": standbys, "logical_clients": logical}

    def _replay_seconds(self, label: str, row: dict, now: float) -> float | None:
        replay_bytes = float(row["replay"]) if row["replay"] is not None else None
        if row["replay_lag"] is not None:
            self._stalled_since.pop(label, None)
            return _seconds(row["replay_lag"])
        if replay_bytes is None:
            return None
        if replay_bytes <= 0:
            self._stalled_since.pop(label, None)
            return 0.0
        lsn, since = self._stalled_since.get(label, (None, None))
        if lsn != row["replay_lsn"]:
            self._stalled_since[label] = (row["replay_lsn"], now)
            return 0.0
        return max(0.0, now - since)

    def _missing(self, names: list[str], connected: int) -> str:
        expected = self.options.expected_standbys
        if expected is None:
            return ""
        if isinstance(expected, int):
            if connected < expected:
                return f"{connected} of {expected} expected standbys connected"
            return ""
        absent = [name for name in expected if name not in names]
        if absent:
            return f"standby missing: {', '.join(absent)} (expected {', '.join(expected)})"
        return ""

    def _standby_side(self, session: Session, samples: list, ctx: CheckContext):
        pos = session.one("""
            SELECT pg_wal_lsn_diff(pg_last_wal_receive_lsn(), '0/0')::bigint AS receive_pos,
                   pg_wal_lsn_diff(pg_last_wal_replay_lsn(), '0/0')::bigint AS replay_pos,
                   extract(epoch FROM now() - pg_last_xact_replay_timestamp()) AS since_replay,
                   pg_get_wal_replay_pause_state() AS pause_state,
                   pg_last_wal_receive_lsn()::text AS receive_lsn, pg_last_wal_replay_lsn()::text AS replay_lsn,
                   (SELECT setting::float8 * CASE unit WHEN 'ms' THEN 0.001 WHEN 'min' THEN 60 ELSE 1 END
                    FROM pg_settings WHERE name = 'wal_receiver_timeout') AS wal_receiver_timeout,
                   (SELECT setting::float8 * CASE unit WHEN 'ms' THEN 0.001 WHEN 'min' THEN 60 ELSE 1 END
                    FROM pg_settings WHERE name = 'wal_receiver_status_interval') AS status_interval""")
        now = ctx.monotonic()
        receiver = session.one("""
            SELECT status, extract(epoch FROM now() - last_msg_receipt_time) AS last_msg_age,
                   sender_host, sender_port, slot_name FROM pg_stat_wal_receiver""")
        status, notes = Status.OK, []
        receiver_status = receiver["status"] if receiver else None
        streaming = receiver_status == "streaming"
        age = _seconds(receiver["last_msg_age"]) if receiver else None
        limit = receiver_silence_limit(self.options.receiver_timeout, pos["wal_receiver_timeout"],
                                       pos["status_interval"])
        samples.append(sample("replication_receiver_streaming", 1 if streaming else 0))
        if age is not None:
            samples.append(sample("replication_receiver_last_message_age_seconds", age))
        if not streaming:
            status = Status.CRITICAL
            notes.append(f"WAL receiver not streaming (status: {receiver_status or 'no receiver'})")
        elif limit is not None and (age is None or age > limit):
            status = Status.CRITICAL
            heard = f"for {format_duration(age)}" if age is not None else "ever"
            origin = "receiver_timeout" if self.options.receiver_timeout is not None else \
                "limit from wal_receiver_timeout"
            notes.append(f"no message from the primary {heard} ({origin} {format_duration(limit)})")
        healthy_link = status is Status.OK
        receive, replay = pos["receive_pos"], pos["replay_pos"]
        gap = float(receive - replay) if receive is not None and replay is not None else None
        if gap is not None:
            samples.append(sample("replication_replay_gap_bytes", max(0.0, gap)))
        self._backlog, behind = replay_delay(self._backlog, receive, replay, now)
        since_replay = _seconds(pos["since_replay"])
        if healthy_link:
            lag = behind if since_replay is None else min(behind, since_replay)
        else:
            lag = since_replay
        if lag is not None:
            samples.append(sample("replication_lag_seconds", lag))
            lag_text = f"replay lag {format_duration(lag)}"
        else:
            lag_text = "replay lag unknown (no transaction replayed since the standby started)"
        if pos["pause_state"] != "not paused":
            notes.append(f"replay {pos['pause_state']}")
        gap_text = f", {format_size(max(0.0, gap))} received not replayed" if gap is not None else ""
        summary = f"standby: {lag_text}{gap_text}"
        details = {"receiver_status": receiver_status, "last_message_age_seconds": age, "replay_gap_bytes": gap,
                   "receiver_timeout_seconds": limit, "replay_behind_seconds": behind,
                   "since_last_replayed_commit_seconds": since_replay,
                   "receive_lsn": pos["receive_lsn"], "replay_lsn": pos["replay_lsn"],
                   "pause_state": pos["pause_state"],
                   "sender": f"{receiver['sender_host']}:{receiver['sender_port']}" if receiver else None}
        return status, "; ".join([*notes, summary]), details

    def _slots(self, session: Session, samples: list):
        rows = session.all("""
            SELECT slot_name, slot_type, active, wal_status,
                   pg_wal_lsn_diff(CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn()
                                        ELSE pg_current_wal_lsn() END, restart_lsn) AS retained
            FROM pg_replication_slots WHERE NOT temporary ORDER BY slot_name""")
        status, notes, slots = Status.OK, [], []
        for row in rows:
            slot = row["slot_name"]
            retained = max(0.0, float(row["retained"])) if row["retained"] is not None else 0.0
            samples.append(sample("replication_slot_active", 1 if row["active"] else 0, slot=slot))
            samples.append(sample("replication_slot_retained_bytes", retained, slot=slot))
            for wal_status in _WAL_STATUSES:
                samples.append(sample("replication_slot_wal_status", 1 if row["wal_status"] == wal_status else 0,
                                      slot=slot, wal_status=wal_status))
            if row["wal_status"] == "lost":
                status = worst(status, Status.CRITICAL)
                notes.append(f"slot {slot} lost its WAL (its consumer cannot catch up)")
            elif not row["active"]:
                status = worst(status, Status.WARNING)
                notes.append(f"slot {slot} inactive, retains {format_size(retained)}")
            elif row["wal_status"] == "unreserved":
                status = worst(status, Status.WARNING)
                notes.append(f"slot {slot} retains {format_size(retained)}, beyond max_wal_size (unreserved)")
            slots.append({"slot": slot, "type": row["slot_type"], "active": row["active"],
                          "wal_status": row["wal_status"], "retained_bytes": retained})
        return status, notes, slots


# --- WAL archiving -------------------------------------------------------------------------------------------

_SEGMENT_RE = re.compile(r"^[0-9A-F]{8}([0-9A-F]{8})([0-9A-F]{8})")


class PgArchivingCheck(PgCheck):
    """WAL archiving from pg_stat_archiver: failures and how far the archive is behind (the RPO).

    CRITICAL while the archiver is failing (its last failure is newer than its
    last success) or when failed_count rose since the previous run — so a
    failure between two runs is not missed even if a retry then succeeded.

    archiver_lag_seconds (the thresholds; the recovery point objective is 1 h) is how long the
    oldest completed WAL segment has been waiting to be archived: the age of
    the oldest `.ready` file in pg_wal/archive_status (created when the segment
    is complete), 0 when none waits. It does not grow on an idle server, where
    the time since the last archive does (exported as
    archiver_last_archived_age_seconds, not judged): an idle server writes only
    small records PostgreSQL deliberately does not switch segments for. The
    unfinished current segment is archived when full or after archive_timeout,
    so the RPO is about archiver_lag_seconds + archive_timeout; the summary says
    when archive_timeout is 0 (that bound is then "when the segment fills").

    archive_mode=off is UNKNOWN "archiving disabled": the check was configured
    to vouch for the RPO and cannot. On a standby with archive_mode=on the
    primary archives, so the check is OK with a note; with archive_mode=always
    the standby's own archiver is checked.
    """

    TYPE = "pg_archiving"
    EXAMPLE = """
        - name: pg-archiving
          type: pg_archiving
          every: 5m
          dsn: ${credential:pg.dsn}
          warning: 30m            # since the last WAL segment was archived
          critical: 1h
    """

    class Options(PgOptions, DurationThresholds):
        type: Literal["pg_archiving"]

    METRICS = (
        MetricSpec("archiver_lag_seconds", "seconds",
                   "How long the oldest completed WAL segment has waited to be archived (0 when none waits)."),
        MetricSpec("archiver_ready_segments", "count", "Completed WAL segments waiting to be archived."),
        MetricSpec("archiver_pending_bytes", "bytes",
                   "WAL written past the last archived segment, the unfinished current segment included."),
        MetricSpec("archiver_last_archived_age_seconds", "seconds", "Time since the last successful archive."),
        MetricSpec("archiver_archived_files", "count", "Files archived since statistics were reset."),
        MetricSpec("archiver_failed_attempts", "count", "Failed archive attempts since statistics were reset."),
        MetricSpec("archiver_failing", "boolean", "1 while the last archive attempt failed."),
    )
    THRESHOLD = Threshold(("archiver_lag_seconds",), "seconds")

    def __init__(self, options):
        super().__init__(options)
        self._failed_before: int | None = None

    def probe(self, session: Session, ctx: CheckContext) -> CheckResult:
        row = session.one("""
            SELECT current_setting('archive_mode') AS archive_mode, pg_is_in_recovery() AS in_recovery,
                   current_setting('archive_timeout') AS archive_timeout,
                   a.archived_count, a.last_archived_wal, a.failed_count, a.last_failed_wal,
                   extract(epoch FROM now() - a.last_archived_time) AS archived_age,
                   extract(epoch FROM now() - a.last_failed_time) AS failed_age,
                   coalesce(a.last_failed_time > a.last_archived_time
                            OR (a.last_failed_time IS NOT NULL AND a.last_archived_time IS NULL), false) AS failing,
                   pg_wal_lsn_diff(CASE WHEN pg_is_in_recovery() THEN pg_last_wal_receive_lsn()
                                        ELSE pg_current_wal_lsn() END, '0/0') AS position,
                   (SELECT setting::bigint FROM pg_settings WHERE name = 'wal_segment_size') AS segment_size
            FROM pg_stat_archiver a""")
        mode = row["archive_mode"]
        if mode == "off":
            return CheckResult.unknown("archiving disabled (archive_mode=off)", archive_mode=mode)
        if row["in_recovery"] and mode != "always":
            return CheckResult.ok(f"standby: WAL is archived by the primary (archive_mode={mode})",
                                  archive_mode=mode)
        ready = session.one("SELECT count(*) AS n, extract(epoch FROM now() - min(modification)) AS oldest_age "
                            "FROM pg_ls_archive_statusdir() WHERE name LIKE '%.ready'")
        failed = int(row["failed_count"])
        before, self._failed_before = self._failed_before, failed
        new_failures = failed - before if before is not None and failed >= before else 0
        lag = _seconds(ready["oldest_age"]) or 0.0
        samples = [sample("archiver_lag_seconds", lag), sample("archiver_ready_segments", ready["n"]),
                   sample("archiver_archived_files", row["archived_count"]),
                   sample("archiver_failed_attempts", failed), sample("archiver_failing", 1 if row["failing"] else 0)]
        archived_age = _seconds(row["archived_age"])
        if archived_age is not None:
            samples.append(sample("archiver_last_archived_age_seconds", archived_age))
        pending = self._pending_bytes(row)
        if pending is not None:
            samples.append(sample("archiver_pending_bytes", pending))
        details = {"archive_mode": mode, "archive_timeout": row["archive_timeout"],
                   "last_archived_wal": row["last_archived_wal"], "last_failed_wal": row["last_failed_wal"],
                   "ready_segments": ready["n"], "new_failures": new_failures}
        if ready["n"]:
            text = f"{ready['n']} segment{'s' if ready['n'] != 1 else ''} waiting, oldest {format_duration(lag)}"
        else:
            text = "all completed WAL segments archived"
        if archived_age is not None:
            text += f" (last {row['last_archived_wal']} {format_duration(archived_age)} ago)"
        else:
            text += " (nothing archived since statistics were reset)"
        if row["archive_timeout"] in ("0", "0s", "0ms"):
            text += "; archive_timeout=0: the current segment is archived only when full"
        if row["failing"] or new_failures:
            why = "archiving failing" if row["failing"] else "archive command failed"
            count = f"{new_failures} failure{'s' if new_failures != 1 else ''} since last run, " if new_failures else ""
            when = f" {format_duration(_seconds(row['failed_age']))} ago" if row["failed_age"] is not None else ""
            return CheckResult.critical(
                cap_summary(f"{why}: {count}last failed {row['last_failed_wal']}{when} — {text}"), samples, **details)
        return CheckResult.ok(cap_summary(text), samples, **details)

    @staticmethod
    def _pending_bytes(row: dict) -> float | None:
        match = _SEGMENT_RE.match(row["last_archived_wal"] or "")
        if not match or row["position"] is None or not row["segment_size"]:
            return None
        size = int(row["segment_size"])
        segment = int(match.group(1), 16) * (0x100000000 // size) + int(match.group(2), 16)
        return max(0.0, float(row["position"]) - (segment + 1) * size)


# --- sessions ------------------------------------------------------------------------------------------------

class PgActivityCheck(PgCheck):
    """Long-running queries and sessions idle in a transaction (they hold locks and block vacuum).

    Client backends only, this probe's own session excluded. Idle-in-transaction
    time is counted from the last state change, as
    idle_in_transaction_session_timeout does. The thresholds apply to both
    longest durations; `long_query` sets what is counted as long. The
    offenders, with their query text truncated, go to the details (the store
    and the report), never to metric labels.
    """

    TYPE = "pg_activity"
    EXAMPLE = """
        - name: pg-activity
          type: pg_activity
          every: 1m
          dsn: ${credential:pg.dsn}
          long_query: 5m
          warning: 5m             # the longest query or idle transaction
          critical: 30m
    """

    class Options(PgOptions, DurationThresholds):
        type: Literal["pg_activity"]
        long_query: Duration = Field(60.0, description="a query running, or a transaction idle, longer than "
                                                       "this is counted and listed in the details")
        query_text_chars: int = Field(200, ge=0, le=10000,
                                      description="query text kept in the details per session (0: none)")
        max_listed: int = Field(20, ge=1, le=1000, description="sessions listed in the details at most")

    METRICS = (
        MetricSpec("activity_longest_query_seconds", "seconds", "Longest running query (0 when none runs)."),
        MetricSpec("activity_longest_idle_in_transaction_seconds", "seconds",
                   "Longest time a session has been idle inside a transaction (0 when none)."),
        MetricSpec("activity_long_queries", "count", "Queries running longer than long_query."),
        MetricSpec("activity_long_idle_in_transaction", "count",
                   "Sessions idle in a transaction longer than long_query."),
    )
    THRESHOLD = Threshold(("activity_longest_query_seconds", "activity_longest_idle_in_transaction_seconds"),
                          "seconds")

    def probe(self, session: Session, ctx: CheckContext) -> CheckResult:
        rows = session.all("""
            SELECT pid, datname, usename, application_name, state, wait_event_type, wait_event,
                   extract(epoch FROM now() - query_start) AS query_seconds,
                   extract(epoch FROM now() - state_change) AS state_seconds,
                   extract(epoch FROM now() - xact_start) AS xact_seconds,
                   left(query, %(chars)s) AS query
            FROM pg_stat_activity
            WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()
              AND state IN ('active', 'idle in transaction', 'idle in transaction (aborted)')""",
                           {"chars": self.options.query_text_chars})
        running = [(_seconds(r["query_seconds"]) or 0.0, r) for r in rows if r["state"] == "active"]
        idle = [(_seconds(r["state_seconds"]) or 0.0, r) for r in rows if r["state"] != "active"]
        limit = self.options.long_query
        long_running = sorted((x for x in running if x[0] > limit), key=lambda x: -x[0])
        long_idle = sorted((x for x in idle if x[0] > limit), key=lambda x: -x[0])
        longest = max((s for s, _ in running), default=0.0)
        longest_idle = max((s for s, _ in idle), default=0.0)
        samples = [sample("activity_longest_query_seconds", longest),
                   sample("activity_longest_idle_in_transaction_seconds", longest_idle),
                   sample("activity_long_queries", len(long_running)),
                   sample("activity_long_idle_in_transaction", len(long_idle))]
        listed = sorted(long_running + long_idle, key=lambda x: -x[0])[: self.options.max_listed]
        sessions = [{"pid": r["pid"], "database": r["datname"], "user": r["usename"],
                     "application": r["application_name"], "state": r["state"], "seconds": round(seconds, 3),
                     "transaction_seconds": _seconds(r["xact_seconds"]),
                     "wait_event": f"{r['wait_event_type']}:{r['wait_event']}" if r["wait_event"] else None,
                     **({"query": redact_query(r["query"])} if self.options.query_text_chars else {})}
                    for seconds, r in listed]
        parts = [f"longest query {format_duration(longest)}" if running else "no query running",
                 f"longest idle in transaction {format_duration(longest_idle)}" if idle
                 else "none idle in transaction"]
        if long_running or long_idle:
            parts.append(f"over {format_duration(limit)}: {len(long_running)} running, {len(long_idle)} idle in "
                         f"transaction")
        return CheckResult.ok(", ".join(parts), samples, sessions=sessions)


# --- pg_stat_statements --------------------------------------------------------------------------------------

class PgStatementsCheck(PgCheck):
    """Slow statements from pg_stat_statements: the top N by mean execution time go to the details.

    Statistics are cumulative since the last pg_stat_statements_reset(), over
    all databases of the server. Without the extension in the connected
    database the result is UNKNOWN "pg_stat_statements not installed": the
    check was asked to watch statement times and cannot (an OK would hide the
    missing extension for good). Statement text goes to the details only.
    """

    TYPE = "pg_statements"
    EXAMPLE = """
        - name: pg-slow-statements
          type: pg_statements
          schedule: weekly
          dsn: ${credential:pg.dsn}
          top: 10
          warning: 500ms          # mean time of the slowest statement
    """

    class Options(PgOptions, DurationThresholds):
        type: Literal["pg_statements"]
        top: int = Field(10, ge=1, le=100, description="statements listed in the details")
        min_calls: int = Field(1, ge=1, description="statements called fewer times are ignored (a one-off "
                                                    "migration would otherwise top the list)")
        query_text_chars: int = Field(300, ge=0, le=10000, description="statement text kept per entry (0: none)")

    METRICS = (
        MetricSpec("statements_max_mean_seconds", "seconds",
                   "Highest mean execution time of a statement called at least min_calls times."),
        MetricSpec("statements_calls", "count", "Calls of all tracked statements (cumulative)."),
        MetricSpec("statements_exec_seconds", "seconds", "Execution time of all tracked statements (cumulative)."),
        MetricSpec("statements_tracked", "count", "Statements pg_stat_statements currently tracks."),
    )
    THRESHOLD = Threshold(("statements_max_mean_seconds",), "seconds")

    def probe(self, session: Session, ctx: CheckContext) -> CheckResult:
        from psycopg import sql

        ext = session.one("SELECT extnamespace::regnamespace::text AS schema, extversion FROM pg_extension "
                          "WHERE extname = 'pg_stat_statements'")
        if ext is None:
            return CheckResult.unknown("pg_stat_statements not installed in this database "
                                       "(CREATE EXTENSION pg_stat_statements; it must be in "
                                       "shared_preload_libraries)")
        view = sql.Identifier(ext["schema"], "pg_stat_statements")
        totals = session.one(sql.SQL(
            "SELECT count(*) AS tracked, coalesce(sum(calls), 0) AS calls, "
            "coalesce(sum(total_exec_time), 0) / 1000 AS exec_seconds, "
            "max(mean_exec_time) FILTER (WHERE calls >= %(min)s) / 1000 AS max_mean FROM {}").format(view),
            {"min": self.options.min_calls})
        top = session.all(sql.SQL("""
            SELECT s.queryid, d.datname, r.rolname, s.calls, s.mean_exec_time / 1000 AS mean_seconds,
                   s.max_exec_time / 1000 AS max_seconds, s.total_exec_time / 1000 AS total_seconds, s.rows,
                   left(s.query, %(chars)s) AS query
            FROM {} s LEFT JOIN pg_database d ON d.oid = s.dbid LEFT JOIN pg_roles r ON r.oid = s.userid
            WHERE s.calls >= %(min)s ORDER BY s.mean_exec_time DESC LIMIT %(top)s""").format(view),
            {"min": self.options.min_calls, "top": self.options.top, "chars": self.options.query_text_chars})
        max_mean = float(totals["max_mean"] or 0.0)
        samples = [sample("statements_max_mean_seconds", max_mean), sample("statements_calls", totals["calls"]),
                   sample("statements_exec_seconds", totals["exec_seconds"]),
                   sample("statements_tracked", totals["tracked"])]
        statements = [{"queryid": str(r["queryid"]), "database": r["datname"], "user": r["rolname"],
                       "calls": r["calls"], "mean_seconds": float(r["mean_seconds"]),
                       "max_seconds": float(r["max_seconds"]), "total_seconds": float(r["total_seconds"]),
                       "rows": r["rows"], **({"query": redact_query(r["query"])} if self.options.query_text_chars else {})}
                      for r in top]
        worst_db = f" (in {statements[0]['database']}, {statements[0]['calls']} calls)" if statements else ""
        return CheckResult.ok(f"slowest mean {format_duration(max_mean)}{worst_db}; {totals['tracked']} statements "
                              f"tracked", samples, statements=statements, extension_version=ext["extversion"])


# --- tables and indexes --------------------------------------------------------------------------------------

class PgTablesCheck(PgCheck):
    """Table health in the connected database: dead tuples, vacuum/analyze staleness, unused indexes, sizes.

    Per table (the configured `tables`, else the `top` by dead tuples):
    dead tuple ratio = n_dead_tup / (n_live_tup + n_dead_tup), the thresholds'
    target, judged only for tables with at least `min_tuples` dead tuples (a
    10-row table with 5 dead ones is no alarm). With `stale_after`, a table
    whose last (auto)vacuum — or (auto)analyze — is older than that, or that
    was never done, while it has at least `min_tuples` dead (or modified)
    tuples, is WARNING. Unused indexes: idx_scan = 0 since statistics were
    reset, leaving out unique, primary-key and constraint indexes (their use is
    enforcement, not scans); on a standby the counts only cover queries run
    there. Database sizes (pg_database_size) for every database one may
    connect to, for growth over time; the growth since the previous run is in
    the details. Set `tables` for stable series: the top-N set changes with
    the load.
    """

    TYPE = "pg_tables"
    EXAMPLE = """
        - name: pg-tables
          type: pg_tables
          schedule: daily
          dsn: ${credential:pg.dsn}
          warning: 20%            # dead tuples
          critical: 50%
          stale_after: 7d
    """

    class Options(PgOptions, RatioThresholds):
        type: Literal["pg_tables"]
        tables: tuple[str, ...] = Field((), description="tables to watch, `schema.table` or `table`; default: "
                                                        "the top ones by dead tuples")
        top: int = Field(10, ge=1, le=100, description="tables reported when `tables` is empty")
        min_tuples: int = Field(1000, ge=0, description="tables with fewer dead (or modified) tuples are not "
                                                        "judged by the thresholds or `stale_after`")
        stale_after: Duration | None = Field(None, description="WARNING when a changed table was not "
                                                               "vacuumed or analyzed for this long")

    METRICS = (
        MetricSpec("table_dead_tuple_ratio", "ratio", "Dead tuples / (live + dead tuples).", ("table",)),
        MetricSpec("table_dead_tuples", "count", "Dead tuples (n_dead_tup).", ("table",)),
        MetricSpec("table_size_bytes", "bytes", "Table size with indexes and TOAST.", ("table",)),
        MetricSpec("table_last_vacuum_age_seconds", "seconds",
                   "Time since the last vacuum or autovacuum (absent when never).", ("table",)),
        MetricSpec("table_last_analyze_age_seconds", "seconds",
                   "Time since the last analyze or autoanalyze (absent when never).", ("table",)),
        MetricSpec("unused_indexes", "count",
                   "Indexes never scanned since statistics reset (unique and constraint indexes excluded)."),
        MetricSpec("unused_index_bytes", "bytes", "Size of those unused indexes."),
        MetricSpec("database_size_bytes", "bytes", "pg_database_size of each database.", ("database",)),
    )
    THRESHOLD = Threshold(("table_dead_tuple_ratio",), "ratio")

    def __init__(self, options):
        super().__init__(options)
        self._sizes: dict[str, float] = {}

    def threshold_samples(self, result: CheckResult) -> list[Sample]:
        dead = {s.label("table"): s.value for s in result.samples if s.name == "table_dead_tuples"}
        return [s for s in result.samples if s.name == "table_dead_tuple_ratio"
                and dead.get(s.label("table"), 0) >= self.options.min_tuples]

    def probe(self, session: Session, ctx: CheckContext) -> CheckResult:
        wanted = list(self.options.tables)
        tables = session.all("""
            SELECT s.schemaname || '.' || s.relname AS name, s.relname, s.n_live_tup, s.n_dead_tup,
                   s.n_mod_since_analyze,
                   extract(epoch FROM now() - greatest(s.last_vacuum, s.last_autovacuum)) AS vacuum_age,
                   extract(epoch FROM now() - greatest(s.last_analyze, s.last_autoanalyze)) AS analyze_age,
                   pg_total_relation_size(s.relid) AS size
            FROM pg_stat_user_tables s
            WHERE cardinality(%(wanted)s::text[]) = 0
               OR s.schemaname || '.' || s.relname = ANY(%(wanted)s) OR s.relname = ANY(%(wanted)s)
            ORDER BY s.n_dead_tup DESC, s.schemaname, s.relname
            LIMIT %(limit)s""", {"wanted": wanted, "limit": self.options.top if not wanted else 10000})
        unused = session.all("""
            SELECT s.schemaname || '.' || s.indexrelname AS index, s.schemaname || '.' || s.relname AS table,
                   pg_relation_size(s.indexrelid) AS size
            FROM pg_stat_user_indexes s JOIN pg_index i ON i.indexrelid = s.indexrelid
            WHERE s.idx_scan = 0 AND NOT i.indisunique AND NOT i.indisprimary
              AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = s.indexrelid)
            ORDER BY size DESC, 1""")
        databases = session.all("""
            SELECT datname, pg_database_size(oid) AS size FROM pg_database
            WHERE NOT datistemplate AND datallowconn
              AND (has_database_privilege(oid, 'CONNECT') OR pg_has_role('pg_read_all_stats', 'USAGE'))
            ORDER BY datname""")
        samples, stale, minimum = [], [], self.options.min_tuples
        for t in tables:
            live, dead = int(t["n_live_tup"]), int(t["n_dead_tup"])
            ratio = dead / (live + dead) if live + dead else 0.0
            samples += [sample("table_dead_tuple_ratio", ratio, table=t["name"]),
                        sample("table_dead_tuples", dead, table=t["name"]),
                        sample("table_size_bytes", t["size"], table=t["name"])]
            for metric, key in (("table_last_vacuum_age_seconds", "vacuum_age"),
                                ("table_last_analyze_age_seconds", "analyze_age")):
                if t[key] is not None:
                    samples.append(sample(metric, _seconds(t[key]), table=t["name"]))
            stale += self._stale(t, dead, minimum)
        unused_bytes = sum(int(u["size"]) for u in unused)
        samples += [sample("unused_indexes", len(unused)), sample("unused_index_bytes", unused_bytes)]
        growth = {}
        for db in databases:
            samples.append(sample("database_size_bytes", db["size"], database=db["datname"]))
            if db["datname"] in self._sizes:
                growth[db["datname"]] = int(db["size"]) - self._sizes[db["datname"]]
        self._sizes = {db["datname"]: int(db["size"]) for db in databases}
        found = {t["name"] for t in tables} | {t["relname"] for t in tables}
        missing = [name for name in wanted if name not in found]
        details = {"tables": [{k: t[k] for k in ("name", "n_live_tup", "n_dead_tup", "n_mod_since_analyze",
                                                   "vacuum_age", "analyze_age", "size")} for t in tables],
                   "unused_indexes": unused[:50], "database_growth_bytes": growth}
        worst_table = max(tables, key=lambda t: int(t["n_dead_tup"]), default=None)
        parts = [f"{len(tables)} tables"]
        if worst_table is not None:
            parts.append(f"most dead tuples: {worst_table['name']} ({int(worst_table['n_dead_tup'])})")
        parts.append(f"{len(unused)} unused indexes ({format_size(unused_bytes)})")
        status = Status.OK
        if stale:
            status = Status.WARNING
            parts.insert(0, "stale: " + ", ".join(stale))
        if missing:
            status = Status.WARNING
            parts.insert(0, "tables not found: " + ", ".join(missing))
        return CheckResult(status, cap_summary("; ".join(parts)), tuple(samples), details)

    def _stale(self, t: dict, dead: int, minimum: int) -> list[str]:
        limit = self.options.stale_after
        if limit is None:
            return []
        out = []
        for what, age, changed in (("vacuum", t["vacuum_age"], dead),
                                   ("analyze", t["analyze_age"], int(t["n_mod_since_analyze"] or 0))):
            if changed >= max(1, minimum) and (age is None or float(age) > limit):
                when = "never" if age is None else f"{format_duration(float(age))} ago"
                out.append(f"{t['name']} {what} {when}")
        return out
