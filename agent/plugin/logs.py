"""One line per event, key=value, on stderr; every line passes through the secret redactor.

Under journald (stderr is the stream `$JOURNAL_STREAM` names, see sd_journal_stream_fd(3)) a line
starts with its syslog priority (`<3>` error, `<4>` warning, `<6>` info, `<7>` debug) and carries no
timestamp: journald adds its own and files the priority, so `journalctl -p err -u maint-agent`
works. Anywhere else (a terminal, `make run`, a log file) a line starts with an ISO 8601 local
timestamp with milliseconds instead, since nothing else would record when it happened.

A line is logfmt (`level=info event=check.status_changed check=db status=critical summary="…"`): each
key once, so logfmt parsers (Loki, lnav, humanlog) see every field. A field whose name is one of the
line's own keys (`level`, `event`) is written as `field_level=`, `field_event=`. Values pass the secret
redactor, then lose their control characters (a plugin's ESC sequences and `\r` become `\x1b`, `\x0d`;
see agent/plugin/terminal.py); the formatter applies both to the whole line again, for any text that reaches
the logger without `event`.
"""

from __future__ import annotations

import logging
import os
import re
import sys
from datetime import datetime

from agent.plugin.redact import REDACT
from agent.plugin.terminal import printable

_LOGGER = logging.getLogger("maint-agent")
SYSLOG_PRIORITY = {logging.ERROR: 3, logging.WARNING: 4, logging.INFO: 6, logging.DEBUG: 7}


class _JournalFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return f"<{SYSLOG_PRIORITY.get(record.levelno, 6)}>{printable(REDACT(record.getMessage()))}"


class _PlainFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        stamp = datetime.fromtimestamp(record.created).astimezone().isoformat(timespec="milliseconds")
        return f"{stamp} {printable(REDACT(record.getMessage()))}"


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


_KEY_CHARS = re.compile(r"[^A-Za-z0-9_.-]")


def _quote(value: object) -> str:
    """A logfmt value: redacted, control characters escaped (a newline as `\\n` inside quotes), quoted
    when it holds a space, `"`, `=` or nothing."""
    text = printable(REDACT(str(value)), keep_newlines=True)
    if text == "" or any(c in text for c in ' "=\n'):
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
    return text


def _fields(name: str, level: str, fields: dict[str, object]) -> list[str]:
    """`level=… event=… k=v …` with every key once: a field named like a key already on the line
    (`event`, `level`, or a dict key that sanitises to the same name) becomes `field_<name>`."""
    parts, used = [f"level={level}", f"event={_quote(name)}"], {"level", "event"}
    for key, value in fields.items():
        if value is None:
            continue
        key = _KEY_CHARS.sub("_", str(key)) or "_"
        while key in used:
            key = f"field_{key}"
        used.add(key)
        parts.append(f"{key}={_quote(value)}")
    return parts


def event(name: str, level: str = "info", /, **fields: object) -> None:
    """Log `level=… event=name k=v …`; the redactor masks any secret value that slipped into a field.
    `name` and `level` are positional, so a field may be called `level` or `event` too (written as
    `field_level`, `field_event`)."""
    number = logging.getLevelName(level.upper())
    if not _LOGGER.isEnabledFor(number):
        return
    _LOGGER.log(number, " ".join(_fields(name, level, fields)))
