"""Keep secrets out of text that leaves the process: logs, audit rows, reports, notifications.

The config holds secrets only as references (`${env:…}`, `${file:…}`, `${credential:…}`); the
values are read at the moment of use. `Redactor` knows the current values of every secret in
the config (re-read on each `refresh`) and replaces them, and credentials embedded in URLs
(`postgresql://user:pass@host`, `password=…` in a conninfo), with `***`.

A peer that echoes a secret rarely echoes it as configured: a server answering 401 quotes the
`Authorization: Basic …` header (base64 of `user:password`), a webhook receiver says "token … rejected"
about one segment of its URL, a JSON error escapes it, a proxy logs it percent-encoded. So each value is
also known in its encoded forms (`encoded_forms`), the `user:password` pair of every basic-auth
username/password in the config is a value of its own, each path segment and query value of a secret
URL is one (`url_parts`), and the values of Authorization, Proxy-Authorization, Cookie and Set-Cookie
header lines are masked whatever they hold.
"""

from __future__ import annotations

import base64
import json
import re
import threading
from typing import Any, Callable, Iterable
from urllib.parse import parse_qsl, quote, quote_plus, unquote, urlsplit

from pydantic import BaseModel

from agent.plugin.fields import Secret, SecretUnavailable
from agent.plugin.result import SUMMARY_CAP_CHARS

MASK = "***"
MIN_SECRET_CHARS = 4    # shorter values would mask ordinary words; they are weak secrets anyway
MIN_BASE64_CORE_CHARS = 8   # the offset-independent middle of a base64 form, registered from this length
ROUTE_WORD_MAX_CHARS = 15   # a lower-case word segment of a secret URL up to this length is a route, not a key
_URL_CREDENTIALS = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<user>[^:@/\s]*):(?P<pw>[^@/\s]+)@")
_KEYWORDS = re.compile(r"(?i)\b(?P<key>password|passwd|pwd|token|secret|api_key|apikey|routing_key)"
                       r"(?P<sep>\s*[=:]\s*)(?P<value>'[^']*'|\"[^\"]*\"|[^\s,;&]+)")
_CREDENTIAL_HEADERS = re.compile(
    r"(?im)(?<![\w-])(?P<name>proxy-authorization|authorization|set-cookie|cookie)(?P<sep>[\"']?[ \t]*:[ \t]*)"
    r"(?P<value>\"(?:[^\"\\\r\n]|\\.)*\"|'[^'\r\n]*'|[^\r\n]+)")
_CREDENTIAL_WORDS = ("://", "authorization", "cookie", "password", "passwd", "pwd", "token", "secret", "api_key",
                     "apikey", "routing_key")   # what the three patterns above need, in lower case
_ROUTE_WORD = re.compile(r"^[a-z]+(?:[-_.][a-z]+)*$")
_PERCENT = re.compile(r"%[0-9A-F]{2}")


def encoded_forms(value: str) -> set[str]:
    """Given a secret, return it and the forms it takes when a peer or a library echoes it: base64
    (standard and URL-safe, padded or not, and the middle of its encoding at each of the three byte
    offsets it can have inside a longer base64 text), percent-encoded (`%2F` and `%2f`, `+` or `%20`
    for a space) and JSON-escaped (ASCII-only or not, `/` as `\\/` or not)."""
    raw = value.encode()
    forms = {value}
    for k in range(3):
        encoded = base64.b64encode(b"\0" * k + raw).decode()
        if k == 0:
            forms |= {encoded, encoded.rstrip("=")}
        core = encoded[-(-8 * k // 6):(8 * (k + len(raw))) // 6]
        if len(core) >= MIN_BASE64_CORE_CHARS:
            forms.add(core)
    forms |= {form.replace("+", "-").replace("/", "_") for form in forms if form != value}
    for percent in (quote(value, safe=""), quote(value, safe="/"), quote_plus(value, safe="")):
        forms |= {percent, _PERCENT.sub(lambda m: m.group().lower(), percent)}
    for escaped in (json.dumps(value)[1:-1], json.dumps(value, ensure_ascii=False)[1:-1]):
        forms |= {escaped, escaped.replace("/", "\\/")}
    return forms


def url_parts(value: str) -> set[str]:
    """Given a secret that is an http(s) URL (a Slack webhook), return the parts a receiver may quote on their own:
    every path segment and query value (as written and decoded) and the userinfo. A lower-case word
    segment (`services`, `hooks`, `enqueue`) is the route, not the key, and stays readable. Only http(s):
    a database URL's secret is its password, which `_URL_CREDENTIALS` masks, not its database name."""
    parts = urlsplit(value)
    if parts.scheme.lower() not in ("http", "https") or not parts.netloc:
        return set()
    found = {parts.password or "", parts.fragment}
    for segment in parts.path.split("/"):
        if len(segment) > ROUTE_WORD_MAX_CHARS or not _ROUTE_WORD.match(segment):
            found |= {segment, unquote(segment)}
    for _, item in parse_qsl(parts.query, keep_blank_values=True):
        found |= {item, quote_plus(item)}
    return {part for part in found if len(part) >= MIN_SECRET_CHARS}


def basic_auth_pairs(value: Any) -> Iterable[str]:
    """`user:password` of every model in a (nested) config with a `username` and a Secret `password`:
    the text HTTP basic auth encodes (and SMTP, Redis ACL logins quote)."""
    if isinstance(value, BaseModel):
        username, password = getattr(value, "username", None), getattr(value, "password", None)
        if isinstance(username, str) and isinstance(password, Secret):
            try:
                yield f"{username}:{password.reveal()}"
            except SecretUnavailable:
                pass
        for name in type(value).model_fields:
            yield from basic_auth_pairs(getattr(value, name, None))
    elif isinstance(value, dict):
        for item in value.values():
            yield from basic_auth_pairs(item)
    elif isinstance(value, (list, tuple, set, frozenset)):
        for item in value:
            yield from basic_auth_pairs(item)


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
        """Learn secret values, each with its encoded forms (see `encoded_forms`)."""
        forms = set()
        for value in values:
            if value and len(value) >= MIN_SECRET_CHARS:
                forms |= encoded_forms(value) | url_parts(value)
        with self._lock:
            known = set(self._values) | forms
            self._values = tuple(sorted(known, key=len, reverse=True))   # longest first: no partial leftovers

    def refresh(self, *configs: Any) -> None:
        """Learn the current value of every secret referenced by the given config objects, and the
        `user:password` pair of every basic-auth login among them."""
        values = []
        for config in configs:
            for secret in secrets_in(config):
                try:
                    values.append(secret.reveal())
                except SecretUnavailable:
                    pass
            values += basic_auth_pairs(config)
        self.add(values)

    def __call__(self, text: str) -> str:
        if not text:
            return text
        for value in self._values:
            if value in text:
                text = text.replace(value, MASK)
        return text if _cannot_hold_credentials(text) else mask_credentials(text)


def mask_credentials(text: str) -> str:
    """Given a text, return it with credential headers, URL passwords and `password=…`-style values masked."""
    text = _CREDENTIAL_HEADERS.sub(_mask_header, text)
    text = _URL_CREDENTIALS.sub(lambda m: f"{m['scheme']}{m['user']}:{MASK}@", text)
    return _KEYWORDS.sub(lambda m: f"{m['key']}{m['sep']}{MASK}", text)


def _cannot_hold_credentials(text: str) -> bool:
    """True when no pattern of `mask_credentials` can match: each match holds one of `_CREDENTIAL_WORDS`.
    Most summaries (`/srv/x modified 3s ago`) are answered by a few substring tests instead of three
    case-insensitive regex passes. Only ASCII text is judged: re's case folding pairs characters that
    str.lower does not (the Kelvin sign with k), so any other text goes through the patterns."""
    if not text.isascii():
        return False
    lowered = text.lower()
    for word in _CREDENTIAL_WORDS:
        if word in lowered:
            return False
    return True


def _mask_header(match: re.Match) -> str:
    value = match["value"]
    quote_char = value[0] if value[0] in "\"'" and len(value) > 1 and value[-1] == value[0] else ""
    return f"{match['name']}{match['sep']}{quote_char}{MASK}{quote_char}"


def redact_tree(value: Any, redact: Callable[[str], str]) -> Any:
    """Redact every string inside a structure (never its JSON text: a mask must not eat the quotes)."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {key: redact_tree(item, redact) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact_tree(item, redact) for item in value]
    return value


def redacted_outcome(summary: str, details: dict[str, Any] | None,
                     redact: Callable[[str], str]) -> tuple[str, dict[str, Any] | None]:
    """Given what a check said, return (summary, details) as the daemon stores, exports and logs them and
    `maint-agent check NAME` prints them: redacted, the summary capped."""
    return redact(summary)[:SUMMARY_CAP_CHARS * 2], redact_tree(details, redact) if details else details


REDACT = Redactor()
"""The process-wide redactor: the daemon refreshes it from the config at start and on reload."""
