"""One line per event, key=value, on stderr; every line passes through the secret redactor.

Under journald (stderr is the stream `$JOURNAL_STREAM` names, see sd_journal_stream_fd(3)) a line
starts with its syslog priority (`<3>` error, `<4>` warning, `<6>` info, `<7>` debug) and carries no
timestamp: journald adds its own and files the priority, so `journalctl -p err -u maint-agent`
works. Anywhere else (a terminal, `make run`, a log file) a line starts with an ISO 8601 local
timestamp with milliseconds instead, since nothing else would record when it happened.
"""

from __future__ import annotations

import logging
import os
import sys
from datetime import datetime

from agent.redact import REDACT

_LOGGER = logging.getLogger("maint-agent")
SYSLOG_PRIORITY = {logging.ERROR: 3, logging.WARNING: 4, logging.INFO: 6, logging.DEBUG: 7}


class _JournalFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return f"<{SYSLOG_PRIORITY.get(record.levelno, 6)}>{REDACT(record.getMessage())}"


class _PlainFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        stamp = datetime.fromtimestamp(record.created).astimezone().isoformat(timespec="milliseconds")
        return f"{stamp} {REDACT(record.getMessage())}"


def under_journal(stream=None) -> bool:
    """True when `stream` (default stderr) is the journal stream systemd connected: `$JOURNAL_STREAM` is
    `device:inode` of it. A child whose stderr was redirected elsewhere inherits the variable but fails
    the comparison, as sd_journal_stream_fd(3) recommends."""
    value = os.environ.get("JOURNAL_STREAM", "")
    device, _, inode = value.partition(":")
    if not device.isdigit() or not inode.isdigit():
        return False
    try:
        st = os.fstat((stream or sys.stderr).fileno())
    except (OSError, ValueError, AttributeError):
        return False
    return (st.st_dev, st.st_ino) == (int(device), int(inode))


def setup(level: str = "info") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_JournalFormatter() if under_journal(sys.stderr) else _PlainFormatter())
    _LOGGER.handlers[:] = [handler]
    _LOGGER.setLevel(level.upper())
    _LOGGER.propagate = False


def set_level(level: str) -> None:
    _LOGGER.setLevel(level.upper())


def _quote(value: object) -> str:
    text = str(value)
    if text == "" or any(c in text for c in ' "=\n\t'):
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
    return text


def event(name: str, level: str = "info", **fields: object) -> None:
    """Log `level=… event=name k=v …`; the redactor masks any secret value that slipped into a field."""
    number = logging.getLevelName(level.upper())
    if not _LOGGER.isEnabledFor(number):
        return
    parts = [f"level={level}", f"event={name}"] + [f"{k}={_quote(REDACT(str(v)))}" for k, v in fields.items()
                                                     if v is not None]
    _LOGGER.log(number, " ".join(parts))
