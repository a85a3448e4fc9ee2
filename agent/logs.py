"""One line per event, key=value, for journald (which adds the timestamp)."""

from __future__ import annotations

import logging
import sys

_LOGGER = logging.getLogger("maint-agent")


def setup(level: str = "info") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
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
    """Log `level=… event=name k=v …`; callers pass only values that are safe to show (no secrets)."""
    number = logging.getLevelName(level.upper())
    if not _LOGGER.isEnabledFor(number):
        return
    parts = [f"level={level}", f"event={name}"] + [f"{k}={_quote(v)}" for k, v in fields.items() if v is not None]
    _LOGGER.log(number, " ".join(parts))
