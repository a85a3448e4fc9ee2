"""Pydantic field types for agent.yaml: human units in, base units out.

Each type also declares its JSON Schema so `maint-agent config schema` shows what
an operator may write (`"30s"`), not what the agent stores (30.0).
"""

from __future__ import annotations

import os
import re
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import AfterValidator, BeforeValidator, Field, WithJsonSchema

from agent.plugin.address import split_target
from agent.plugin.units import format_duration, parse_duration, parse_ratio, parse_size

MAX_DURATION_SECONDS = 400 * 86400.0
"""Any wait, period, timeout or threshold: longer is a typo (`every: 10**30`), and would overflow the clock."""
MAX_LONG_DURATION_SECONDS = 100 * 365 * 86400.0
"""Ages and retention periods, where years make sense; bounded only so date arithmetic cannot overflow."""

_DURATION_PATTERN = r"^(\d+(\.\d+)?(ms|s|m|h|d|w))+$"


def _duration_schema(minimum: dict, limit: float) -> WithJsonSchema:
    return WithJsonSchema({"anyOf": [{"type": "string", "pattern": _DURATION_PATTERN},
                                     {"type": "number", **minimum, "maximum": limit}],
                           "description": "seconds, or a duration such as 250ms, 30s, 5m, 26h, 7d; "
                                          f"at most {format_duration(limit)}"})


def _at_most(seconds: float, limit: float) -> float:
    if seconds > limit:
        raise ValueError(f"must be at most {format_duration(limit)}")
    return seconds


def _duration(value: object) -> float:
    """Checked before pydantic sees seconds, so an error quotes what the operator wrote (`'401d'`)."""
    return _at_most(parse_duration(value), MAX_DURATION_SECONDS)


def _positive_duration(value: object) -> float:
    seconds = _duration(value)
    if seconds <= 0:
        raise ValueError("must be above 0")
    return seconds


def _long_duration(value: object) -> float:
    return _at_most(parse_duration(value), MAX_LONG_DURATION_SECONDS)


Duration = Annotated[float, BeforeValidator(_duration), _duration_schema({"minimum": 0}, MAX_DURATION_SECONDS)]
"""0 … 400 days."""

PositiveDuration = Annotated[float, BeforeValidator(_positive_duration),
                             _duration_schema({"exclusiveMinimum": 0}, MAX_DURATION_SECONDS)]
"""A timeout or an interval: 0 would mean every run times out, or a busy loop."""

LongDuration = Annotated[float, BeforeValidator(_long_duration),
                         _duration_schema({"minimum": 0}, MAX_LONG_DURATION_SECONDS)]
"""An age or a retention period: 0 … 100 years."""

def _calendar_spec(text: str) -> str:
    from agent.plugin.calendar import CalendarSpecError, parse_calendar
    try:
        parse_calendar(text)
    except CalendarSpecError as exc:
        raise ValueError(f"invalid calendar spec {text!r}: {exc}") from None
    return text


CalendarText = Annotated[str, AfterValidator(_calendar_spec)]
"""A calendar spec (`mon 03:00`, `*-*-1 04:00`), validated per value, so an error names its own key and line."""

DURATION_PARSERS = (_duration, _positive_duration, _long_duration)
"""The validators of the duration field types, so `config show` can print such a field back as `90d`."""

Size = Annotated[
    int,
    BeforeValidator(parse_size),
    WithJsonSchema({"anyOf": [{"type": "string"}, {"type": "integer", "minimum": 0}],
                    "description": "bytes, or a size such as 512MiB, 10GiB, 2GB"}),
]

Ratio = Annotated[
    float,
    BeforeValidator(parse_ratio),
    WithJsonSchema({"anyOf": [{"type": "string", "pattern": r"^\d+(\.\d+)?%$"},
                              {"type": "number", "minimum": 0}],
                    "description": "a percentage such as 85%, or a ratio 0..1"}),
]

Count = Annotated[float, Field(ge=0)]

Name = Annotated[
    str,
    Field(pattern=r"^[a-z0-9][a-z0-9_.-]{0,62}$",
          description="lower-case letters, digits, '.', '_' and '-'; used as a metric label"),
]


def _host_port(value: str) -> str:
    split_target(value)
    return value


HostPort = Annotated[
    str,
    AfterValidator(_host_port),
    WithJsonSchema({"type": "string", "description": "host:port, e.g. 127.0.0.1:5432 or [::1]:9469"}),
]


def _absolute_path(path: str) -> str:
    if not path.startswith("/"):
        raise ValueError(f"{path!r} must be an absolute path")
    return path


AbsolutePath = Annotated[str, AfterValidator(_absolute_path)]
"""A file or program named from the root, so what runs never depends on the daemon's working directory."""


def _absolute_glob(path: str) -> str:
    if not path.startswith("/"):
        raise ValueError(f"{path!r} must be an absolute path or glob")
    return path


AbsoluteGlob = Annotated[str, AfterValidator(_absolute_glob)]
"""A file or a glob (`*`, `?`, `[…]`, `**`) named from the root."""


def _absolute_globs(paths: tuple[str, ...]) -> tuple[str, ...]:
    for path in paths:
        _absolute_glob(path)
    return paths


AbsoluteGlobs = Annotated[tuple[str, ...], AfterValidator(_absolute_globs)]
"""Files or globs named from the root (the error names the list, as the line operators edit)."""


def _absolute_argv(argv: tuple[str, ...]) -> tuple[str, ...]:
    if not argv[0].startswith("/"):
        raise ValueError(f"program {argv[0]!r} must be an absolute path (argv list, no shell, no PATH lookup)")
    return argv


AbsoluteArgv = Annotated[tuple[str, ...], Field(min_length=1), AfterValidator(_absolute_argv)]
"""A program and its arguments, run without a shell: the program named from the root, never looked up in PATH."""


def _regex(pattern: str) -> str:
    try:
        re.compile(pattern)
    except re.error as exc:
        raise ValueError(f"invalid regular expression: {exc}") from None
    return pattern


Regex = Annotated[str, AfterValidator(_regex), WithJsonSchema({"type": "string", "format": "regex",
                                                               "description": "a Python regular expression"})]
"""A regular expression, compiled once at config check so a typo is a config error, not an UNKNOWN at run time."""

Severity = Literal["P0", "P1", "P2", "P3"]
"""An incident level, P0 the most severe: labels a check's alerts and routes its notifications."""


_SECRET_RE = re.compile(r"^\$\{(env|file|credential):([^}]+)\}$")


def check_http_url(url: str, field: str, form: str, credentials_hint: str) -> str:
    """Given a URL option, return it; raise ValueError unless it is http(s)://host… without credentials
    (those belong in secret references, never in a URL that ends up in logs and the store)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{field} {url!r} must be {form}")
    if parts.username or parts.password:
        raise ValueError(f"{field} must not contain credentials: {credentials_hint}")
    return url


def is_reference(value: object) -> bool:
    """True for `${env:…}`, `${file:…}`, `${credential:…}`: safe to show, unlike the secret itself."""
    return isinstance(value, str) and bool(_SECRET_RE.match(value))


class SecretUnavailable(LookupError):
    """A secret reference that cannot be read now; `reason` speaks to the operator and never holds the value.

    A LookupError, so a caller that catches (OSError, LookupError) around `reveal()` still catches it.
    """

    def __init__(self, reference: str, reason: str):
        super().__init__(reason)
        self.reference, self.reason = reference, reason


class Secret(str):
    """A reference to a secret (`${env:NAME}`, `${file:/path}`, `${credential:NAME}`).

    The string value IS the reference, so the config, logs, reports and the
    store only ever hold the reference; `reveal()` reads the secret at the
    moment of use. A literal value is accepted but discouraged.
    """

    def reveal(self) -> str:
        """Return the secret's value; raise SecretUnavailable (with `reason`, e.g. `No such file or
        directory` or `environment variable X is not set`) when it cannot be read."""
        match = _SECRET_RE.match(self)
        if not match:
            return str(self)
        kind, ref = match.groups()
        if kind == "env":
            value = os.environ.get(ref)
            if value is None:
                raise SecretUnavailable(str(self), f"environment variable {ref} is not set")
            return value
        path = Path(ref) if kind == "file" else _credential_path(self, ref)
        try:
            return path.read_text().rstrip("\n")
        except OSError as exc:
            raise SecretUnavailable(str(self), exc.strerror or str(exc)) from None
        except UnicodeDecodeError:
            raise SecretUnavailable(str(self), "not UTF-8 text") from None

    def __repr__(self) -> str:
        return f"Secret({str.__repr__(self) if _SECRET_RE.match(self) else '***'})"


def _credential_path(reference: str, name: str) -> Path:
    directory = os.environ.get("CREDENTIALS_DIRECTORY")
    if not directory:
        raise SecretUnavailable(reference, f"credential {name}: CREDENTIALS_DIRECTORY is not set "
                                           "(use LoadCredential= in the unit)")
    return Path(directory) / name


_OFFLINE: ContextVar[bool] = ContextVar("maint_agent_secrets_offline", default=False)


@contextmanager
def secrets_offline(enabled: bool = True):
    """While active, loading a config checks secret references for form only and reads none (`config check
    --offline` in a config repository's CI; the CLI's read commands, run where $CREDENTIALS_DIRECTORY is not
    set). The daemon never loads this way: it must know at start that every secret is readable."""
    token = _OFFLINE.set(enabled)
    try:
        yield
    finally:
        _OFFLINE.reset(token)


def secrets_are_offline() -> bool:
    return _OFFLINE.get()


def _check_secret(value: str) -> Secret:
    """Resolve once at load so a missing variable or unreadable file is a config error, then forget the value."""
    secret = Secret(value)
    if value.startswith("${") and value.endswith("}") and not _SECRET_RE.match(value):
        raise ValueError(f"invalid secret reference {value} (use ${{env:NAME}}, ${{file:/path}} or "
                         f"${{credential:NAME}})")
    if _OFFLINE.get():
        return secret
    try:
        secret.reveal()
    except SecretUnavailable as exc:
        raise ValueError(f"cannot read secret {value}: {exc.reason}") from None
    return secret


SecretStr = Annotated[
    str,
    AfterValidator(_check_secret),
    WithJsonSchema({"type": "string",
                    "description": "a secret reference: ${env:NAME}, ${file:/path} or ${credential:NAME}"}),
]
