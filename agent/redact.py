"""Keep secrets out of text that leaves the process: logs, audit rows, reports, notifications.

The config holds secrets only as references (`${env:…}`, `${file:…}`, `${credential:…}`); the
values are read at the moment of use. `Redactor` knows the current values of every secret in
the config (re-read on each `refresh`) and replaces them, and credentials embedded in URLs
(`postgresql://user:pass@host`, `password=…` in a conninfo), with `***`.
"""

from __future__ import annotations

import re
import threading
from typing import Any, Callable, Iterable

from pydantic import BaseModel

from agent.fields import Secret, SecretUnavailable

MASK = "***"
MIN_SECRET_CHARS = 4    # shorter values would mask ordinary words; they are weak secrets anyway
_URL_CREDENTIALS = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<user>[^:@/\s]*):(?P<pw>[^@/\s]+)@")
_KEYWORDS = re.compile(r"(?i)\b(?P<key>password|passwd|pwd|token|secret|api_key|apikey|routing_key)"
                       r"(?P<sep>\s*[=:]\s*)(?P<value>'[^']*'|\"[^\"]*\"|[^\s,;&]+)")


def secrets_in(value: Any) -> Iterable[Secret]:
    """Every Secret in a (nested) pydantic model, mapping or sequence."""
    if isinstance(value, Secret):
        yield value
    elif isinstance(value, BaseModel):
        for name in type(value).model_fields:
            yield from secrets_in(getattr(value, name, None))
    elif isinstance(value, dict):
        for item in value.values():
            yield from secrets_in(item)
    elif isinstance(value, (list, tuple, set, frozenset)):
        for item in value:
            yield from secrets_in(item)


class Redactor:
    def __init__(self, values: Iterable[str] = ()):
        self._lock = threading.Lock()
        self._values: tuple[str, ...] = ()
        self.add(values)

    def add(self, values: Iterable[str]) -> None:
        with self._lock:
            known = set(self._values) | {v for v in values if v and len(v) >= MIN_SECRET_CHARS}
            self._values = tuple(sorted(known, key=len, reverse=True))   # longest first: no partial leftovers

    def refresh(self, *configs: Any) -> None:
        """Learn the current value of every secret referenced by the given config objects."""
        values = []
        for config in configs:
            for secret in secrets_in(config):
                try:
                    values.append(secret.reveal())
                except SecretUnavailable:
                    pass
        self.add(values)

    def __call__(self, text: str) -> str:
        if not text:
            return text
        for value in self._values:
            if value in text:
                text = text.replace(value, MASK)
        text = _URL_CREDENTIALS.sub(lambda m: f"{m['scheme']}{m['user']}:{MASK}@", text)
        return _KEYWORDS.sub(lambda m: f"{m['key']}{m['sep']}{MASK}", text)


def redact_tree(value: Any, redact: Callable[[str], str]) -> Any:
    """Redact every string inside a structure (never its JSON text: a mask must not eat the quotes)."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {key: redact_tree(item, redact) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact_tree(item, redact) for item in value]
    return value


REDACT = Redactor()
"""The process-wide redactor: the daemon refreshes it from the config at start and on reload."""
