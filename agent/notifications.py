"""The notification outbox: every notification is stored before it is sent, retried with backoff, kept.

A notify action (a check's problem, an escalation, a resolve: actions/notify.py) renders its message
for each channel and hands it here. Each (notification, channel) becomes a row of
`notification_outbox` before the first attempt, holding exactly what is sent — the Slack text, the
PagerDuty event with its dedup key, the mail — but never a webhook URL or routing key: those are
read from the config at each attempt. The action makes the first attempt at once; a failed one is
retried by the daemon after 1 min, 2 min, 4 min … at most 1 h (per action: `delivery:`) until it
is delivered or out of attempts. Then it is `failed`: kept, listed by `maint-agent notifications`,
sent again by `maint-agent notifications resend ID`.

A receiver gets each notification once when all goes well and the identical one after a retry
(PagerDuty folds repeats by the dedup key; Slack shows the same text). A row being sent is leased
(`sending` until a deadline): a process that dies mid-attempt leaves it due again after the lease,
and two processes never send one row at the same time.

Rows: pending → sending → sent | pending (retry later) | failed.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any, Callable

from agent.plugin import logs
from agent.plugin.redact import REDACT
from agent.plugin.units import format_duration

POLL_SECONDS = 1.0            # due retries and `notifications resend` are picked up within this
LEASE_GRACE_SECONDS = 60.0    # a claimed row is left alone for the action's timeout plus this
ACTIVE = ("pending", "sending")
LIST_COLUMNS = ("id", "created", "action", "channel", "check_name", "event", "dedup_key", "title", "status",
                "attempts", "next_attempt", "last_error", "sent_at")


def retry_delay(attempts: int, first: float, longest: float) -> float:
    """Seconds before the next attempt after `attempts` failed ones: first, 2×first, 4×first … at most
    `longest`."""
    return min(first * 2 ** max(0, attempts - 1), longest)


class Outbox:
    """One process's handle on the outbox (the daemon's, or `maint-agent action run`'s). Thread-safe: actions
    queue from their own threads while the daemon's notifier thread retries."""

    def __init__(self, path: Path, state=None, on_change: Callable[[], None] = lambda: None,
                 wall: Callable[[], float] = time.time):
        self.path = path
        self.state = state                 # AgentState: the pending gauge and failure counters, when a daemon's
        self.on_change = on_change         # e.g. re-render /metrics
        self.wall = wall
        self.actions: dict[str, Any] = {}  # notify actions by name, from the current config
        self.smtp = None
        self._conn: sqlite3.Connection | None = None
        self._lock = threading.Lock()
        self._wake = threading.Event()

    def configure(self, actions: dict[str, Any], smtp) -> None:
        """The current config's actions and mail server: what a retry is sent with."""
        self.actions, self.smtp = dict(actions), smtp

    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            from agent.store.writer import connect
            self._conn = connect(self.path)
        return self._conn

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    # -- a notify action's first attempt --------------------------------------------------------------

    def send(self, options, *, check: str | None, event: str, dedup_key: str, title: str,
             parcels: dict[str, dict], deadline: float,
             monotonic: Callable[[], float] = time.monotonic) -> dict[str, tuple[str, str]]:
        """Queue one row per channel, then try each once now (until `deadline`, a monotonic time). Returns
        channel → (sent | retrying | failed, what happened). Raises sqlite3.Error when the rows cannot be
        stored (the caller then sends without the outbox)."""
        now = self.wall()
        lease = now + options.timeout + LEASE_GRACE_SECONDS
        with self._lock:
            conn = self._db()
            conn.execute("BEGIN IMMEDIATE")
            try:
                ids = {channel: conn.execute(
                    "INSERT INTO notification_outbox(created, action, channel, check_name, event, dedup_key, title,"
                    " payload, status, attempts, next_attempt) VALUES (?,?,?,?,?,?,?,?, 'sending', 0, ?)",
                    (now, options.name, channel, check, event, dedup_key, title, json.dumps(payload), lease)).lastrowid
                    for channel, payload in parcels.items()}
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        outcomes = {}
        for channel, row_id in ids.items():
            left = deadline - monotonic()
            outcome = (self._attempt(options, channel, parcels[channel], left) if left > 0
                       else "failed: not sent, the time limit was reached")
            outcomes[channel] = self._settle(row_id, options, options.name, channel, check, 0, outcome)
        return outcomes

    # -- retries ----------------------------------------------------------------------------------------

    def deliver_due(self) -> dict[str, int]:
        """Try every row that is due (a retry, a resend, a lease that ran out); return counts by outcome."""
        now = self.wall()
        with self._lock:
            due = [row[0] for row in self._db().execute(
                "SELECT id FROM notification_outbox WHERE status IN ('pending', 'sending') AND next_attempt <= ? "
                "ORDER BY id", (now,))]
        counts: dict[str, int] = {}
        for row_id in due:
            row = self._claim(row_id)
            if row is None:
                continue
            _, action, channel, check, payload, attempts = row
            options = self.actions.get(action)
            if options is None:
                outcome = f"failed: no notify action named {action!r} in the config any more"
            else:
                outcome = self._attempt(options, channel, json.loads(payload), options.timeout)
            state, _ = self._settle(row_id, options, action, channel, check, attempts, outcome)
            counts[state] = counts.get(state, 0) + 1
        return counts

    def _claim(self, row_id: int) -> tuple | None:
        """Mark a due row `sending` until its lease ends (atomically: one sender per row); None when taken."""
        now = self.wall()
        with self._lock:
            conn = self._db()
            row = conn.execute("SELECT action FROM notification_outbox WHERE id = ?", (row_id,)).fetchone()
            options = self.actions.get(row[0]) if row else None
            lease = now + (options.timeout if options else 0.0) + LEASE_GRACE_SECONDS
            claimed = conn.execute(
                "UPDATE notification_outbox SET status = 'sending', next_attempt = ? WHERE id = ? AND "
                "status IN ('pending', 'sending') AND next_attempt <= ?", (lease, row_id, now)).rowcount
            if not claimed:
                return None
            return conn.execute("SELECT id, action, channel, check_name, payload, attempts FROM notification_outbox "
                                "WHERE id = ?", (row_id,)).fetchone()

    def _attempt(self, options, channel: str, payload: dict, timeout: float) -> str:
        """One delivery: "sent …" or "failed: …" (never a URL or key; the action's own code sends)."""
        from actions import ACTION_TYPES
        try:
            return ACTION_TYPES[options.type](options).deliver(channel, payload, smtp=self.smtp,
                                                              timeout=max(0.1, timeout), redact=REDACT)
        except Exception as exc:  # a bug in one channel must not stop the outbox
            return REDACT(f"failed: {type(exc).__name__}: {exc}")[:500]

    def _settle(self, row_id: int, options, action: str, channel: str, check: str | None, attempts: int,
                outcome: str) -> tuple[str, str]:
        """Record an attempt's outcome; return (sent | retrying | failed, text for the audit)."""
        attempts += 1
        now = self.wall()
        if outcome.startswith("sent"):
            state, text = "sent", outcome
            sql, args = "status = 'sent', sent_at = ?, last_error = NULL", (now,)
            if attempts > 1:
                logs.event("notification.sent", id=row_id, action=action, channel=channel, check=check,
                           attempts=attempts)
        else:
            error = outcome.removeprefix("failed: ")
            if self.state is not None:
                failures = self.state.notification_failures
                failures[channel] = failures.get(channel, 0) + 1
            delivery = getattr(options, "delivery", None)
            if delivery is None or attempts >= delivery.attempts:
                state = "failed"
                text = f"failed: {error} (gave up after {attempts} attempt{'s' * (attempts != 1)}; kept as " \
                       f"notification {row_id})"
                sql, args = "status = 'failed', last_error = ?", (error,)
                logs.event("notification.failed", "error", id=row_id, action=action, channel=channel, check=check,
                           attempts=attempts, error=error)
                self._log(now, f"notification {row_id} ({action}, {channel}) for {check or 'a manual run'} not "
                               f"delivered after {attempts} attempts: {error}; kept: maint-agent notifications "
                               f"resend {row_id}", check)
            else:
                delay = retry_delay(attempts, delivery.first_retry, delivery.max_retry)
                state = "retrying"
                text = f"failed: {error}; retrying in {format_duration(delay)} (notification {row_id})"
                sql, args = "status = 'pending', next_attempt = ?, last_error = ?", (now + delay, error)
                logs.event("notification.retrying", "warning", id=row_id, action=action, channel=channel,
                           check=check, attempts=attempts, retry_in=format_duration(delay), error=error)
        with self._lock:
            self._db().execute(f"UPDATE notification_outbox SET {sql}, attempts = ? WHERE id = ?",
                               (*args, attempts, row_id))
        self.refresh()
        return state, text

    def _log(self, now: float, message: str, check: str | None) -> None:
        with self._lock:
            self._db().execute("INSERT INTO maintenance_log(at, category, author, source, check_name, message) "
                               "VALUES (?, 'notification', 'maint-agent', 'agent', ?, ?)", (now, check, message))

    # -- the daemon's notifier thread ----------------------------------------------------------------------

    def refresh(self) -> None:
        """Publish the number of undelivered notifications."""
        if self.state is not None:
            with self._lock:
                self.state.notifications_pending = self._db().execute(
                    "SELECT count(*) FROM notification_outbox WHERE status IN ('pending', 'sending')").fetchone()[0]
        self.on_change()

    def serve(self, stop: threading.Event) -> None:
        """Deliver due rows until `stop` is set; a failure of the outbox itself is logged, never fatal."""
        while not stop.is_set():
            try:
                self.deliver_due()
            except Exception as exc:  # sqlite3.Error, OSError: the next round tries again
                logs.event("notification.outbox_failed", "error", error=f"{type(exc).__name__}: {exc}")
            self._wake.wait(POLL_SECONDS)
            self._wake.clear()

    def wake(self) -> None:
        self._wake.set()


# -- operators (the CLI) ---------------------------------------------------------------------------------------


def listing(conn: sqlite3.Connection, statuses: list[str] | None = None, limit: int | None = None) -> list[dict]:
    """Outbox rows, newest first, without their payloads."""
    where, params = "", []
    if statuses:
        where = f" WHERE status IN ({','.join('?' * len(statuses))})"
        params = list(statuses)
    sql = f"SELECT {', '.join(LIST_COLUMNS)} FROM notification_outbox{where} ORDER BY id DESC"
    if limit:
        sql += f" LIMIT {int(limit)}"
    return [dict(zip(LIST_COLUMNS, row)) for row in conn.execute(sql, params)]


def resend(conn: sqlite3.Connection, row_id: int, now: float) -> bool:
    """Make a row due again with a fresh attempt budget (after fixing the webhook or the config); False when
    there is no such row. The same payload goes out: PagerDuty folds it by its dedup key."""
    return bool(conn.execute("UPDATE notification_outbox SET status = 'pending', attempts = 0, next_attempt = ? "
                             "WHERE id = ?", (now, row_id)).rowcount)
