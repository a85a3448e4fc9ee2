"""Scheduled reports: the outbox, delivery with retries, resending (the `reports:` section: agent.config.reports).

A report is rendered once, when its period has ended, and stored as the complete RFC 5322
message in `report_outbox` before any delivery is tried: a mail server that is down, refuses
or wants credentials never loses a report. Delivery retries with exponential backoff (1 min,
2 min, 4 min … capped at 1 h); after MAX_ATTEMPTS the row is `failed` — kept, listed by
`maint-agent report outbox`, and sent again by `maint-agent report resend ID`. The optional
JSON upload to S3 is an outbox row of its own (recipient `s3://bucket/key`), so it gets the
same retries, listing and resend.

Rows: pending → (sending) → sent | failed. `sending` is a lease: a process that claimed a row
and died leaves it due again once the lease has passed, so the daemon and a CLI `--send`
never deliver the same row twice at once.

The daemon calls `queue_report` when a report's schedule fires and `deliver_pending`
periodically; both open their own connection (`agent.store.writer.connect`).
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agent.config.reports import SUBJECT_PLACEHOLDERS, ReportSection, ReportUpload

if TYPE_CHECKING:
    import sqlite3

    from agent.config.load import LoadedConfig

MAX_ATTEMPTS = 10
FIRST_RETRY_SECONDS = 60.0
MAX_RETRY_SECONDS = 3600.0
S3_SCHEME = "s3://"


def render_subject(template: str, values: dict[str, str]) -> str:
    from agent.plugin.mailer import one_line
    return one_line(template.format(**{key: one_line(str(values[key])) for key in SUBJECT_PLACEHOLDERS}))


# -- queueing -----------------------------------------------------------------------------------------------


class ReportError(Exception):
    """A report cannot be queued or uploaded (no smtp: section, S3 refused); the text says why."""


def queue_report(store_path: Path, loaded: "LoadedConfig", section: ReportSection, now: float) -> int:
    """Render the period that ended last before `now` and store it as `pending`; return the outbox id.

    Idempotent per (report, period): a schedule fired twice (catch-up after a restart) queues once.
    """
    from agent.reports.build import last_complete
    start, end = last_complete(section.period, now, loaded.tz)
    return queue_period(store_path, loaded, section, start, end, now)


def queue_period(store_path: Path, loaded: "LoadedConfig", section: ReportSection, start: float, end: float,
                 now: float, *, again: bool = False) -> int:
    """Render the period [start, end) and queue its mail (and S3 upload); with `again`, queue it even
    when that period was queued before (an operator's `report --send`)."""
    from agent.store.writer import connect

    conn = connect(store_path)
    try:
        if not again:
            row = conn.execute("SELECT id FROM report_outbox WHERE report = ? AND period_start = ? AND "
                               "recipients NOT LIKE 's3://%' ORDER BY id LIMIT 1", (section.name, start)).fetchone()
            if row:
                return row[0]
        mail, upload = _render(conn, loaded, section, start, end, now)
        conn.execute("BEGIN IMMEDIATE")
        try:
            ids = [_insert(conn, section, start, end, now, *row) for row in (mail, upload) if row]
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        return ids[0]
    finally:
        conn.close()


def _render(conn: "sqlite3.Connection", loaded: "LoadedConfig", section: ReportSection, start: float, end: float,
            now: float) -> tuple[tuple[list[str], str, bytes], tuple[list[str], str, bytes] | None]:
    """(recipients, subject, message) of the mail, and of the S3 upload when configured."""
    from agent.plugin.mailer import build_message
    from agent.reports.build import build_report, render_csv, render_html, render_json, render_text

    smtp = loaded.config.smtp
    if smtp is None:
        raise ReportError(f"report {section.name}: no smtp: section configured")
    report = build_report(conn, loaded, section.period, start, end, now)
    tz = loaded.tz
    last_day = datetime.fromtimestamp(end, tz) - timedelta(seconds=1)
    subject = render_subject(section.subject, {
        "host": report.host, "period": section.period, "label": report.label, "worst": report.worst,
        "start": datetime.fromtimestamp(start, tz).date().isoformat(), "end": last_day.date().isoformat(),
        "report": section.name})
    stem = f"maint-agent-{report.host}-{section.name}-{report.label}"
    attachments = [(f"{stem}.csv", "text/csv", render_csv(report).encode())] if section.attach_csv else []
    message = build_message(smtp.sender, section.recipients, subject, render_text(report), render_html(report),
                            attachments, date=now)
    mail = (list(section.recipients), subject, message.as_bytes())
    if section.s3_upload is None:
        return mail, None
    key = f"{section.s3_upload.prefix.strip('/')}/host={report.host}/{section.name}/{report.label}.json"
    return mail, ([f"{S3_SCHEME}{section.s3_upload.bucket}/{key}"], key, render_json(report).encode())


def _insert(conn: "sqlite3.Connection", section: ReportSection, start: float, end: float, now: float,
            recipients: list[str], subject: str, message: bytes) -> int:
    return conn.execute(
        "INSERT INTO report_outbox(created, report, period, period_start, period_end, recipients, subject, "
        "message, status, attempts, next_attempt) VALUES (?,?,?,?,?,?,?,?, 'pending', 0, ?)",
        (now, section.name, section.period, start, end, json.dumps(recipients), subject, message, now)).lastrowid


# -- delivery -----------------------------------------------------------------------------------------------


def retry_delay(attempts: int) -> float:
    """Seconds before the next try after `attempts` failed ones: 1 min, 2 min, 4 min … at most 1 h."""
    return min(FIRST_RETRY_SECONDS * 2 ** (attempts - 1), MAX_RETRY_SECONDS)


def deliver_pending(store_path: Path, loaded: "LoadedConfig", now: float) -> dict[str, int]:
    """Try every outbox row that is due; return how many were sent, will be retried, and failed for good."""
    from agent.store.writer import connect

    conn = connect(store_path)
    counts = {"sent": 0, "retrying": 0, "failed": 0}
    try:
        due = [row[0] for row in conn.execute(
            "SELECT id FROM report_outbox WHERE status IN ('pending', 'sending') AND next_attempt <= ? ORDER BY id",
            (now,))]
        for outbox_id in due:
            row = _claim(conn, outbox_id, now, _lease(loaded))
            if row is not None:
                counts[_attempt(conn, loaded, row, now)] += 1
    finally:
        conn.close()
    return counts


def _lease(loaded: "LoadedConfig") -> float:
    """How long a claimed row is left alone: longer than any one delivery can take."""
    smtp = loaded.config.smtp
    return 6 * (smtp.timeout if smtp else 30.0) + 60.0


def _claim(conn: "sqlite3.Connection", outbox_id: int, now: float, lease: float) -> tuple | None:
    """Mark a due row `sending` (atomically: one deliverer per row) and return it, or None when taken."""
    claimed = conn.execute(
        "UPDATE report_outbox SET status = 'sending', next_attempt = ? WHERE id = ? AND "
        "status IN ('pending', 'sending') AND next_attempt <= ?", (now + lease, outbox_id, now)).rowcount
    if not claimed:
        return None
    return conn.execute("SELECT id, report, recipients, message, attempts FROM report_outbox WHERE id = ?",
                        (outbox_id,)).fetchone()


def _attempt(conn: "sqlite3.Connection", loaded: "LoadedConfig", row: tuple, now: float) -> str:
    """Deliver one claimed row and record the outcome; return `sent`, `retrying` or `failed`."""
    from agent.plugin.mailer import MailError
    from agent.plugin.redact import REDACT

    outbox_id, report, recipients, message, attempts = row
    recipients = json.loads(recipients)
    attempts += 1
    try:
        warning = _deliver(loaded, report, recipients, bytes(message))
    except (MailError, ReportError) as exc:
        error = REDACT(str(exc))
        if attempts >= MAX_ATTEMPTS:
            conn.execute("UPDATE report_outbox SET status = 'failed', attempts = ?, last_error = ? WHERE id = ?",
                         (attempts, error, outbox_id))
            _log(conn, now, f"report {report} (outbox {outbox_id}) not delivered after {attempts} attempts: {error}; "
                            f"kept: maint-agent report resend {outbox_id}")
            return "failed"
        conn.execute("UPDATE report_outbox SET status = 'pending', attempts = ?, last_error = ?, next_attempt = ? "
                     "WHERE id = ?", (attempts, error, now + retry_delay(attempts), outbox_id))
        return "retrying"
    conn.execute("UPDATE report_outbox SET status = 'sent', attempts = ?, last_error = ?, sent_at = ? WHERE id = ?",
                 (attempts, REDACT(warning) if warning else None, now, outbox_id))
    _log(conn, now, f"report {report} (outbox {outbox_id}) delivered to {', '.join(recipients)}"
                    + (f"; {warning}" if warning else ""))
    return "sent"


def _deliver(loaded: "LoadedConfig", report: str, recipients: list[str], message: bytes) -> str | None:
    """Send a stored message (or upload a stored JSON report); return a warning for a partial delivery."""
    from agent.plugin.mailer import send_bytes

    if recipients and recipients[0].startswith(S3_SCHEME):
        section = next((r for r in loaded.config.reports if r.name == report), None)
        if section is None or section.s3_upload is None:
            raise ReportError(f"report {report} has no s3_upload in the config any more")
        _upload(section.s3_upload, recipients[0], message)
        return None
    if loaded.config.smtp is None:
        raise ReportError("no smtp: section configured")
    refused = send_bytes(loaded.config.smtp, recipients, message)
    return f"refused recipients: {refused}" if refused else None


def _upload(upload: ReportUpload, url: str, body: bytes) -> None:
    """PUT the JSON report; botocore is imported here only (hosts without s3_upload never load it)."""
    from agent.plugin.fields import Secret, SecretUnavailable

    try:
        import botocore.exceptions
        import botocore.session
        from botocore.config import Config
    except ImportError:
        raise ReportError("botocore is not installed (pip install 'maint-agent[s3]')") from None
    bucket, _, key = url.removeprefix(S3_SCHEME).partition("/")
    credentials = {}
    try:
        if upload.access_key_id:
            credentials = {"aws_access_key_id": Secret(upload.access_key_id).reveal(),
                           "aws_secret_access_key": Secret(upload.secret_access_key).reveal()}
    except SecretUnavailable as exc:
        raise ReportError(f"cannot read the s3_upload credentials: {exc.reason}") from None
    config = Config(connect_timeout=upload.timeout, read_timeout=upload.timeout, retries={"max_attempts": 1})
    client = botocore.session.get_session().create_client(
        "s3", region_name=upload.region, endpoint_url=upload.endpoint_url, config=config, **credentials)
    try:
        client.put_object(Bucket=bucket, Key=key, Body=body, ContentType="application/json")
    except botocore.exceptions.ClientError as exc:
        error = exc.response.get("Error", {})
        raise ReportError(f"upload to {url} refused: {error.get('Code', '?')} {error.get('Message', '')}".strip()) \
            from None
    except botocore.exceptions.BotoCoreError as exc:
        raise ReportError(f"upload to {url} failed: {exc}") from None
    finally:
        client.close()


def _log(conn: "sqlite3.Connection", now: float, message: str) -> None:
    conn.execute("INSERT INTO maintenance_log(at, category, author, source, message) VALUES (?, 'report', "
                 "'maint-agent', 'agent', ?)", (now, message))


# -- operators ----------------------------------------------------------------------------------------------


def resend(store_path: Path, outbox_id: int, now: float) -> bool:
    """Make a kept row due again with a fresh attempt budget (after fixing the mail server or the config);
    False when there is no such row."""
    from agent.store.writer import connect

    conn = connect(store_path)
    try:
        return bool(conn.execute("UPDATE report_outbox SET status = 'pending', attempts = 0, next_attempt = ? "
                                 "WHERE id = ?", (now, outbox_id)).rowcount)
    finally:
        conn.close()


def outbox(conn: "sqlite3.Connection") -> list[dict[str, Any]]:
    """Every outbox row, newest first, without the message bytes."""
    columns = ("id", "created", "report", "period", "period_start", "period_end", "recipients", "subject",
               "status", "attempts", "next_attempt", "last_error", "sent_at")
    rows = conn.execute(f"SELECT {', '.join(columns)} FROM report_outbox ORDER BY id DESC").fetchall()
    return [dict(zip(columns, row), recipients=json.loads(row[6])) for row in rows]
