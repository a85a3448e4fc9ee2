"""Run the segments of a dump script on one psycopg connection: no psql, so no psql meta-command can exist.

Statements go out with the extended query protocol, pipelined in batches
(one round trip per batch, not per statement): the server parses each one
as a single command and refuses a message holding two ("cannot insert
multiple commands into a prepared statement"), so what the policy judged is
exactly what runs, even if a hostile script fooled the tokenizer about where
a statement ends. COPY … FROM stdin data goes through the COPY protocol,
where it is only ever data. A `Watchdog` cancels the running statement at the
deadline (the dump's own `SET statement_timeout = 0` cannot outlive it) and
reports progress while a long statement runs.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from typing import Callable, Iterable, Iterator

from checks.pg_script import Connect, CopyData, CopyEnd, ScriptRefused, Segment, Statement

BATCH_STATEMENTS = 500
BATCH_BYTES = 4 * 1024 * 1024
_CUT_AFTER_CANCEL_SECONDS = 5.0      # a cancel the server does not act on: close the socket instead


class StatementFailed(Exception):
    """The server rejected a statement of the script; `line` and `excerpt` say which."""

    def __init__(self, line: int, excerpt: str, error: Exception):
        first = (str(error).strip().splitlines() or [type(error).__name__])[0]
        super().__init__(f"line {line}: {first}")
        self.line = line
        self.excerpt = excerpt
        self.error = error
        self.message = first


class ScriptLoader:
    """Feed segments to `conn` (autocommit), judging every statement first with `judge` (reason or None).

    `on_connect(segment)` decides on a `\\connect` line: it raises to refuse it
    (a single-database restore) or returns the connection to go on with (a
    cluster restore). Raise ScriptRefused for a refused statement and
    StatementFailed when the server rejects one; the exceptions of the segment
    iterator (a corrupt or incomplete file) pass through, after aborting a
    COPY in progress.
    """

    def __init__(self, conn, judge: Callable[[Statement], str | None], on_connect: Callable[[Connect], object],
                 batch_statements: int = BATCH_STATEMENTS, batch_bytes: int = BATCH_BYTES):
        self.conn = conn
        self.judge = judge
        self.on_connect = on_connect
        self.batch_statements = batch_statements
        self.batch_bytes = batch_bytes
        self.pending: list[Statement] = []
        self.pending_bytes = 0
        self.statements = 0
        self.copy_bytes = 0

    def load(self, segments: Iterable[Segment]) -> None:
        it = iter(segments)
        for segment in it:
            if isinstance(segment, Statement):
                reason = self.judge(segment)
                if reason:
                    raise ScriptRefused(segment.line, reason, segment.excerpt())
                if segment.copy_in:
                    self._flush()
                    self._copy(segment, it)
                elif _outside_transaction(segment):
                    self._flush()
                    self._alone(segment)
                else:
                    self._queue(segment)
            elif isinstance(segment, Connect):
                self._flush()
                self.conn = self.on_connect(segment)
            else:   # CopyData/CopyEnd outside a COPY cannot come from ScriptReader
                raise ScriptRefused(getattr(segment, "line", 0), "COPY data without its COPY statement")
        self._flush()

    def _queue(self, statement: Statement) -> None:
        self.pending.append(statement)
        self.pending_bytes += len(statement.text)
        if len(self.pending) >= self.batch_statements or self.pending_bytes >= self.batch_bytes:
            self._flush()

    def _flush(self) -> None:
        """Send the pending statements in one pipeline; on an error, name the first statement without a result."""
        import psycopg

        batch, self.pending, self.pending_bytes = self.pending, [], 0
        if not batch:
            return
        cursors = []
        pipelined = psycopg.Pipeline.is_supported()
        try:
            with self.conn.pipeline() if pipelined else contextlib.nullcontext():
                for statement in batch:
                    cursor = self.conn.cursor()
                    cursors.append(cursor)
                    # without a pipeline (libpq < 14), binary results force the extended protocol all the same
                    cursor.execute(statement.text, binary=not pipelined)
        except psycopg.Error as exc:
            failed = next((s for s, c in zip(batch, cursors) if c.pgresult is None), batch[len(cursors) - 1])
            raise StatementFailed(failed.line, failed.excerpt(), exc) from None
        finally:
            for cursor in cursors:
                cursor.close()
        self.statements += len(batch)

    def _alone(self, statement: Statement) -> None:
        """One statement in a message of its own, outside any pipeline (binary results keep it to the extended
        protocol: still one command per message)."""
        import psycopg

        try:
            with self.conn.cursor() as cursor:
                cursor.execute(statement.text, binary=True)
        except psycopg.Error as exc:
            raise StatementFailed(statement.line, statement.excerpt(), exc) from None
        self.statements += 1

    def _copy(self, statement: Statement, it: Iterator[Segment]) -> None:
        """COPY … FROM stdin with the data chunks that follow it, up to its CopyEnd."""
        import psycopg

        try:
            with self.conn.cursor() as cursor, cursor.copy(statement.text) as copy:
                for segment in it:
                    if isinstance(segment, CopyEnd):
                        break
                    if not isinstance(segment, CopyData):
                        raise ScriptRefused(statement.line, "COPY data without its end marker")
                    copy.write(segment.data)
                    self.copy_bytes += len(segment.data)
        except psycopg.Error as exc:
            raise StatementFailed(statement.line, statement.excerpt(), exc) from None
        self.statements += 1


def _outside_transaction(statement: Statement) -> bool:
    """CREATE/DROP DATABASE (a pg_dumpall script's): the server refuses them inside a pipeline's transaction."""
    t = statement.tokens
    return t.word(0) in ("CREATE", "DROP") and t.word(1) == "DATABASE"


class Watchdog:
    """While a load runs: call `tick(elapsed)` every `every` seconds and, at `deadline` (monotonic), cancel the
    connection's running statement; if that does not end it within a few seconds, cut the socket."""

    def __init__(self, conn, deadline: float, *, tick: Callable[[float], None] | None = None, every: float = 60.0,
                 monotonic: Callable[[], float] = time.monotonic, cut_after: float = _CUT_AFTER_CANCEL_SECONDS):
        self.conn = conn
        self.cut_after = cut_after
        self.deadline = deadline
        self.tick = tick
        self.every = every
        self.monotonic = monotonic
        self.expired = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="restore-watchdog", daemon=True)

    def __enter__(self) -> "Watchdog":
        self.started = self.monotonic()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        next_tick = self.started + self.every
        while not self._stop.is_set():
            now = self.monotonic()
            if now >= self.deadline:
                self._expire()
                return
            if self.tick is not None and now >= next_tick:
                self.tick(now - self.started)
                next_tick = now + self.every
            wake = min(self.deadline, next_tick) if self.tick is not None else self.deadline
            self._stop.wait(max(0.01, wake - now))

    def _expire(self) -> None:
        self.expired = True
        try:
            if hasattr(self.conn, "cancel_safe"):               # psycopg ≥ 3.2: bounded, non-blocking cancel
                self.conn.cancel_safe(timeout=self.cut_after)
            else:
                self.conn.cancel()
        except Exception:  # noqa: BLE001 - the socket cut below is the fallback whatever went wrong
            pass
        if self._stop.wait(self.cut_after):
            return
        try:
            fd = os.dup(self.conn.pgconn.socket)
        except Exception:  # noqa: BLE001 - the connection is already closed
            return
        with socket.socket(fileno=fd) as sock:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
