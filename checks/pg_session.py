"""The PostgreSQL session every pg check, `restore_test` and `pg_maintenance` use.

`open_session` connects the same way for all of them: the DSN is read from its
reference at the moment of use and never shown; `connect_timeout`,
`statement_timeout`, TCP keepalives and `tcp_user_timeout` are always set and the
session is read-only (`default_transaction_read_only=on`), so a probe can neither
hang on a stuck server nor change data.

statement_timeout is server-side: a server, proxy or network that stops answering
after the connection opened would keep a caller waiting forever. `Watchdog`, armed
at the end of the run (plus WATCHDOG_GRACE_SECONDS, so the server's own cancel
reports first), sends a cancel request and then shuts the socket down, so whatever
call is waiting returns. Connecting is bounded by connect_timeout, which libpq
counts in whole seconds, at least 2.

`is_down` tells a server that cannot be reached (refused, timed out, shutting down,
out of connection slots) from any other failure; `describe_error` and
`redact_query` keep the DSN and passwords out of what is shown and stored.

psycopg is imported inside the functions that use it, never at import time.
"""

from __future__ import annotations

import os
import re
import socket
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

from pydantic import Field

from agent.plugin.faults import AgentFault, agent_fault, strerror_fault
from agent.plugin.fields import PositiveDuration, SecretStr
from agent.plugin.result import Status
from checks.base import CheckOptions

# libpq's messages for "the server is not there or not taking connections". English texts: under a translated
# libpq a down server falls through to UNKNOWN, still with the reason.
_DOWN_MARKERS = (
    "connection refused", "timeout expired", "timed out", "could not translate host name", "no route to host",
    "network is unreachable", "server closed the connection", "connection reset", "no such file or directory",
    "the database system is starting up", "the database system is shutting down",
    "the database system is in recovery mode", "not yet accepting connections", "too many clients",
    "connection slots are reserved", "terminating connection due to administrator command",
)
_SERVER_SAID = re.compile(r"\b(?:FATAL|ERROR|PANIC):")
_DOWN_SQLSTATE_CLASSES = ("08", "57P")   # connection exception, operator intervention (shutdown, crash)

WATCHDOG_GRACE_SECONDS = 0.25   # past the run's end: a server-side cancel at the deadline arrives first
CANCEL_WAIT_SECONDS = 0.5       # the watchdog's cancel request; the socket is shut down after it either way
STATEMENT_SLACK_MS = 100        # re-send statement_timeout only when it would outlast the run by more than this


class PgOptions(CheckOptions):
    """Keys every PostgreSQL check accepts."""

    dsn: SecretStr = Field(..., description="libpq connection string or URI, usually a reference such as "
                                            "${file:/etc/maint-agent/pg.dsn}; never logged or shown")
    connect_timeout: PositiveDuration = Field(5.0, description="give up connecting after this long (libpq counts whole "
                                                               "seconds, at least 2)")
    statement_timeout: PositiveDuration = Field(5.0, description="server-side limit for each query of the probe "
                                                                 "(lowered to the time left in the run)")


def statement_ms(option_seconds: float, left_seconds: float) -> int:
    return max(1, int(min(option_seconds, left_seconds) * 1000))


@dataclass
class Session:
    """An open read-only connection, how long it took to open, and the run's deadline its queries fit in.

    Before each query whose session statement_timeout would outlast the run,
    the timeout is lowered to the time left (`limited_by_run` then tells a
    cancel at the run's end from one at the configured statement_timeout).
    """

    conn: Any
    connect_seconds: float
    deadline: float | None = None                 # monotonic; None: no run deadline (statement_timeout only)
    statement_timeout: float = 5.0
    monotonic: Callable[[], float] = time.monotonic
    limit_ms: int = 0                             # statement_timeout currently set in the session (0: unknown)
    limited_by_run: bool = False

    def __post_init__(self):
        self.limited_by_run = 0 < self.limit_ms < int(self.statement_timeout * 1000)

    def one(self, sql, params=None) -> dict:
        self._fit_statement_timeout()
        return self.conn.execute(sql, params).fetchone()

    def all(self, sql, params=None) -> list[dict]:
        self._fit_statement_timeout()
        return self.conn.execute(sql, params).fetchall()

    def _fit_statement_timeout(self) -> None:
        if self.deadline is None:
            return
        wanted = statement_ms(self.statement_timeout, self.deadline - self.monotonic())
        if self.limit_ms and wanted + STATEMENT_SLACK_MS >= self.limit_ms:
            return
        self.conn.execute(f"SET statement_timeout = {int(wanted)}")
        self.limit_ms = wanted
        self.limited_by_run = wanted < int(self.statement_timeout * 1000)


class ProbeFailed(Exception):
    """Raised by `open_session` with an operator-readable reason and the status it maps to."""

    def __init__(self, status: Status, reason: str):
        super().__init__(reason)
        self.status = status
        self.reason = reason


def open_session(dsn: str, options: PgOptions, timeout: float):
    """Given a revealed DSN, return an autocommit, read-only connection with its timeouts set.

    The probe's own `options` (statement_timeout, read-only), connect_timeout,
    TCP keepalives and tcp_user_timeout replace any the DSN carries, so the
    DSN cannot switch them off. Raise ProbeFailed when the DSN does not parse
    (without echoing it) and psycopg.Error when connecting fails.
    """
    import psycopg
    from psycopg.conninfo import conninfo_to_dict
    from psycopg.rows import dict_row

    try:
        params = conninfo_to_dict(dsn)
    except psycopg.Error:
        raise ProbeFailed(Status.UNKNOWN, "invalid DSN (libpq cannot parse it; not shown because it may "
                                          "hold a password)") from None
    ours = (f"-c statement_timeout={statement_ms(options.statement_timeout, timeout)} "
            f"-c default_transaction_read_only=on")
    params["options"] = f"{params['options']} {ours}" if params.get("options") else ours
    params["connect_timeout"] = str(max(1, round(min(options.connect_timeout, timeout))))
    # a peer that vanishes mid-query: unacknowledged data or unanswered keepalives end the connection within
    # about the run's timeout (TCP only; libpq ignores them on Unix sockets)
    probe_every = str(max(1, int(timeout // 4)))
    params.update(keepalives="1", keepalives_idle=probe_every, keepalives_interval=probe_every,
                  keepalives_count="3", tcp_user_timeout=str(max(1000, int(timeout * 1000))))
    params.setdefault("application_name", "maint-agent")
    return psycopg.connect(**params, autocommit=True, row_factory=dict_row, prepare_threshold=None)


class Watchdog:
    """Given an open connection and the seconds a run has left, cancel and cut the connection when they run out.

    Firing sends a cancel request (bounded by CANCEL_WAIT_SECONDS), then shuts
    the socket down through a duplicate of its descriptor, so a call blocked on
    the connection in another thread returns with an error. `disarm` stops the
    timer and waits for a firing in progress: close the connection only after it.
    """

    def __init__(self, conn, seconds: float):
        self.conn = conn
        self.fired = False
        self._timer = threading.Timer(max(0.0, seconds), self._fire)
        self._timer.name = "pg-watchdog"
        self._timer.daemon = True
        self._timer.start()

    def _fire(self) -> None:
        import psycopg

        self.fired = True
        cancel = getattr(self.conn, "cancel_safe", None)    # psycopg 3.1 has none: statement_timeout ends the query
        if cancel is not None:
            try:
                cancel(timeout=CANCEL_WAIT_SECONDS)
            except psycopg.Error:
                pass              # no answer to the cancel either: the shutdown below still ends the wait
        try:
            with socket.socket(fileno=os.dup(self.conn.pgconn.socket)) as sock:
                sock.shutdown(socket.SHUT_RDWR)
        except (OSError, psycopg.Error):
            pass                  # already closed or broken: nothing is waiting on it

    def disarm(self) -> None:
        self._timer.cancel()
        self._timer.join()


def describe_error(exc: Exception, dsn: str) -> str:
    """Given a psycopg error, return its first line with the DSN and any password blanked out."""
    from psycopg.conninfo import conninfo_to_dict

    text = str(exc).strip().split("\n", 1)[0].removeprefix("connection failed: ").strip()
    password = conninfo_to_dict(dsn).get("password")     # parses: open_session parsed it before connecting
    for secret in (dsn, password):
        if secret:
            text = text.replace(str(secret), "***")
    return text or type(exc).__name__


def is_down(exc: Exception) -> bool:
    """Given a psycopg error, return True when the server is not there or not taking connections (CRITICAL:
    the application cannot reach it either), False for any other failure (UNKNOWN: the probe could not tell)."""
    state = getattr(exc, "sqlstate", None) or ""
    if state.startswith(_DOWN_SQLSTATE_CLASSES):
        return True
    text = str(exc).lower()
    return not state and any(marker in text for marker in _DOWN_MARKERS)


def libpq_agent_fault(exc: Exception) -> AgentFault | None:
    """libpq reports its own calls failing in words only ('could not create socket: Too many open files',
    'could not look up local user ID 0: Too many open files'): the agent's shortage — unless the server
    said it (FATAL:/ERROR:, or a SQLSTATE), which is the server's own trouble and stays the target's."""
    fault = agent_fault(exc)
    text = str(exc)
    if fault is not None or getattr(exc, "sqlstate", None) or _SERVER_SAID.search(text):
        return fault
    lines = text.strip().splitlines()
    return strerror_fault(lines[0].rsplit(": ", 1)[-1]) if lines else None


# PASSWORD '…' in CREATE/ALTER ROLE and OPTIONS (password '…'): an SQL literal
_SQL_PASSWORD_RE = re.compile(r"(?i)(\bpassword\s+)'(?:[^']|'')*'?")
# password=… in conninfo strings (dblink_connect, CREATE SUBSCRIPTION … CONNECTION): quoted inside an SQL literal
# (''…''), quoted ('…'), or bare
_CONNINFO_PASSWORD_RE = re.compile(r"(?i)(\bpassword\s*=\s*)(''(?:\\''|[^'])*(?:''|$)|'(?:\\'|[^'])*'?|[^\s'\"]+)")
_URI_PASSWORD_RE = re.compile(r"(?i)(\bpostgres(?:ql)?://[^\s:/@'\"]*:)[^\s@'\"]*(@)")


def _blank_conninfo_password(match: re.Match) -> str:
    value = match.group(2)
    quote = "''" if value.startswith("''") else "'" if value.startswith("'") else ""
    return f"{match.group(1)}{quote}***{quote}"


def redact_query(query: str | None) -> str | None:
    """Given query text bound for the details and the store, return it with passwords blanked.

    Covers PASSWORD '…' (CREATE/ALTER ROLE, user mapping options), password=…
    in conninfo strings, quoted or not (dblink_connect('host=x password=secret'))
    and the password of postgresql://user:password@host URIs.
    """
    if query is None:
        return None
    query = _SQL_PASSWORD_RE.sub(r"\1'***'", query)
    query = _CONNINFO_PASSWORD_RE.sub(_blank_conninfo_password, query)
    return _URI_PASSWORD_RE.sub(r"\1***\2", query)
