"""The Prometheus exporter-toolkit web config (`--web.config.file`) for /metrics: TLS, client certificates,
bcrypt basic auth, response headers, rate limit.

Operators already have this file for node_exporter and friends, so `http.web_config` takes it as is
(https://github.com/prometheus/exporter-toolkit/blob/master/docs/web-configuration.md). Like the
toolkit, relative paths are relative to the file and the file is re-read when it (or a certificate it
names) changes, so a renewed certificate needs no restart. Where Python's `ssl` cannot do what a key
asks (client certificates accepted without verification, curve preferences) the key is an error with
the reason, never silently ignored.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import re
import ssl
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Callable, Literal, Mapping

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from agent.plugin.fields import Duration
from agent.config.yamlsrc import ConfigError, load_yaml, read_text

TLS_VERSIONS = {"TLS10": ssl.TLSVersion.TLSv1, "TLS11": ssl.TLSVersion.TLSv1_1,
                "TLS12": ssl.TLSVersion.TLSv1_2, "TLS13": ssl.TLSVersion.TLSv1_3}
TlsVersion = Literal["TLS10", "TLS11", "TLS12", "TLS13"]

GO_CIPHER_SUITES = {
    # crypto/tls CipherSuites() names (TLS ≤ 1.2; Go does not let TLS 1.3 suites be configured) → OpenSSL names
    "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256": "ECDHE-ECDSA-AES128-GCM-SHA256",
    "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256": "ECDHE-RSA-AES128-GCM-SHA256",
    "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384": "ECDHE-ECDSA-AES256-GCM-SHA384",
    "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384": "ECDHE-RSA-AES256-GCM-SHA384",
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256": "ECDHE-ECDSA-CHACHA20-POLY1305",
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256": "ECDHE-RSA-CHACHA20-POLY1305",
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305": "ECDHE-ECDSA-CHACHA20-POLY1305",
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305": "ECDHE-RSA-CHACHA20-POLY1305",
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA": "ECDHE-ECDSA-AES128-SHA",
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA": "ECDHE-RSA-AES128-SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA": "ECDHE-ECDSA-AES256-SHA",
    "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA": "ECDHE-RSA-AES256-SHA",
}
_BCRYPT_RE = re.compile(r"^\$2[abxy]?\$(\d\d)\$[./A-Za-z0-9]{53}$")
AUTH_CACHE_ENTRIES = 256
RELOAD_CHECK_SECONDS = 1.0


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TlsServerConfig(_Model):
    cert: str | None = Field(None, description="server certificate chain as inline PEM (instead of cert_file)")
    key: str | None = Field(None, description="server private key as inline PEM (instead of key_file)")
    client_ca: str | None = Field(None, description="client CA certificates as inline PEM (instead of client_ca_file)")
    cert_file: str | None = Field(None, description="server certificate chain (PEM); relative to this file")
    key_file: str | None = Field(None, description="server private key (PEM); relative to this file")
    client_auth_type: Literal["NoClientCert", "RequestClientCert", "RequireAnyClientCert", "VerifyClientCertIfGiven",
                              "RequireAndVerifyClientCert"] = Field(
        "NoClientCert", description="RequireAndVerifyClientCert for mTLS; the unverified kinds are refused")
    client_ca_file: str | None = Field(None, description="CA bundle that signs client certificates (PEM)")
    client_allowed_sans: tuple[str, ...] = Field((), description="a client certificate must carry one of these "
                                                                 "SANs (DNS, IP, e-mail or URI), exactly")
    min_version: TlsVersion = "TLS12"
    max_version: TlsVersion = "TLS13"
    cipher_suites: tuple[str, ...] = Field((), description="Go names of TLS ≤ 1.2 suites; default: OpenSSL's")
    prefer_server_cipher_suites: bool = True
    curve_preferences: tuple[str, ...] = ()

    @field_validator("cipher_suites")
    @classmethod
    def _known_suites(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        unknown = [name for name in value if name not in GO_CIPHER_SUITES]
        if unknown:
            raise ValueError(f"unknown cipher suite {', '.join(unknown)}; known: {', '.join(GO_CIPHER_SUITES)}")
        return value

    @field_validator("curve_preferences")
    @classmethod
    def _no_curves(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if value:
            raise ValueError("not supported by maint-agent (Python's ssl cannot restrict the key-exchange "
                             "groups); remove it to use OpenSSL's defaults")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> "TlsServerConfig":
        if self.cert and self.cert_file or self.key and self.key_file or self.client_ca and self.client_ca_file:
            raise ValueError("give a certificate, key or CA either inline or as a file, not both")
        if not (self.cert or self.cert_file) or not (self.key or self.key_file):
            raise ValueError("needs cert_file and key_file (or cert and key); remove tls_server_config "
                             "to serve plain HTTP")
        if self.client_auth_type in ("RequestClientCert", "RequireAnyClientCert"):
            raise ValueError(f"client_auth_type {self.client_auth_type} accepts certificates nobody verified; "
                             "use RequireAndVerifyClientCert (or VerifyClientCertIfGiven) with client_ca_file")
        verifies = self.client_auth_type != "NoClientCert"
        if verifies and not (self.client_ca or self.client_ca_file):
            raise ValueError(f"client_auth_type {self.client_auth_type} needs client_ca_file")
        if not verifies and (self.client_ca or self.client_ca_file):
            raise ValueError("client_ca_file is set but client_auth_type is NoClientCert: "
                             "set client_auth_type: RequireAndVerifyClientCert")
        if self.client_allowed_sans and self.client_auth_type != "RequireAndVerifyClientCert":
            raise ValueError("client_allowed_sans needs client_auth_type: RequireAndVerifyClientCert")
        if TLS_VERSIONS[self.min_version] > TLS_VERSIONS[self.max_version]:
            raise ValueError(f"min_version {self.min_version} is above max_version {self.max_version}")
        return self


class Headers(_Model):
    content_security_policy: str | None = Field(None, alias="Content-Security-Policy")
    x_frame_options: str | None = Field(None, alias="X-Frame-Options", description="deny or sameorigin")
    x_content_type_options: str | None = Field(None, alias="X-Content-Type-Options", description="nosniff")
    x_xss_protection: str | None = Field(None, alias="X-XSS-Protection")
    strict_transport_security: str | None = Field(None, alias="Strict-Transport-Security")

    @field_validator("x_frame_options")
    @classmethod
    def _frame(cls, value: str | None) -> str | None:
        if value and value.lower() not in ("deny", "sameorigin"):
            raise ValueError("must be deny or sameorigin")
        return value

    @field_validator("x_content_type_options")
    @classmethod
    def _nosniff(cls, value: str | None) -> str | None:
        if value and value.lower() != "nosniff":
            raise ValueError("must be nosniff")
        return value

    def as_dict(self) -> dict[str, str]:
        """The headers to send: the blank ones are unset, as in the toolkit."""
        return {info.alias: value for name, info in type(self).model_fields.items()
                if (value := getattr(self, name))}


class HttpServerConfig(_Model):
    http2: bool = Field(True, description="accepted for compatibility; the agent speaks HTTP/1.1 (ALPN says so)")
    headers: Headers = Headers()


class RateLimit(_Model):
    interval: Duration = Field(0.0, description="one request per interval on average; 0 disables")
    burst: int = Field(0, ge=0, description="requests allowed at once")

    @model_validator(mode="after")
    def _burst(self) -> "RateLimit":
        if self.interval > 0 and self.burst < 1:
            raise ValueError("burst must be at least 1 when interval is set (or nothing would be served)")
        return self


def _bcrypt_hash(value: str) -> str:
    if not _BCRYPT_RE.match(value):
        raise ValueError("must be a bcrypt hash such as $2y$10$… (htpasswd -nBC 10 \"\" | tr -d ':\\n')")
    return value


def _user_name(value: str) -> str:
    if not value or ":" in value:
        raise ValueError(f"user name {value!r} must be non-empty and without ':'")
    return value


class WebConfig(_Model):
    tls_server_config: TlsServerConfig | None = None
    http_server_config: HttpServerConfig = HttpServerConfig()
    basic_auth_users: dict[Annotated[str, AfterValidator(_user_name)], Annotated[str, AfterValidator(_bcrypt_hash)]] = \
        Field(default_factory=dict, description="user → bcrypt hash")
    rate_limit: RateLimit | None = None

    def files(self) -> list[Path]:
        """Every file the config names: what a change of triggers a re-read."""
        tls = self.tls_server_config
        return [Path(p) for p in (tls.cert_file, tls.key_file, tls.client_ca_file) if p] if tls else []

    def secret_files(self) -> list[Path]:
        """Files whose contents must stay private (the TLS key)."""
        tls = self.tls_server_config
        return [Path(tls.key_file)] if tls and tls.key_file else []


# -- loading ----------------------------------------------------------------------------------------------


def load_web_config(path: str | Path) -> WebConfig:
    """Given the path of a web config, return it validated, with paths made absolute and the TLS
    material loaded once; raise ConfigError with every problem (file:line: key: message)."""
    path = Path(path)
    source = load_yaml(read_text(path, "web config"), str(path))
    data = source.data if source.data is not None else {}
    if not isinstance(data, dict):
        raise ConfigError([source.issue((), "the web config must be a mapping (tls_server_config:, "
                                            "basic_auth_users:, …)")])
    try:
        config = WebConfig.model_validate(_resolve_paths(data, path.parent))
    except ValidationError as exc:
        raise ConfigError([source.issue(_loc(error["loc"]), _message(error))
                           for error in exc.errors(include_url=False)]) from None
    unreadable = [source.issue(("tls_server_config", key), f"cannot read {name}: {reason}")
                  for key, name, reason in _unreadable(config.tls_server_config)]
    if unreadable:
        raise ConfigError(unreadable)
    if config.tls_server_config:
        try:
            server_context(config.tls_server_config)
        except (OSError, ssl.SSLError, ValueError) as exc:
            raise ConfigError([source.issue(("tls_server_config",), f"cannot load the TLS material: {_ssl_reason(exc)}")])
    return config


def _resolve_paths(data: dict, base: Path) -> dict:
    """The toolkit reads cert_file & co. relative to the web config file, not to the working directory."""
    tls = data.get("tls_server_config")
    if not isinstance(tls, dict):
        return data
    resolved = {k: str(base / v) if k.endswith("_file") and isinstance(v, str) and v else v for k, v in tls.items()}
    return {**data, "tls_server_config": resolved}


def _loc(loc: tuple) -> tuple:
    """Pydantic marks a bad mapping key with a '[key]' level the YAML does not have."""
    return loc[:-1] if loc and loc[-1] == "[key]" else loc


def _unreadable(tls: TlsServerConfig | None) -> list[tuple[str, str, str]]:
    """(key, file, reason) for each named file that cannot be opened: reported at its own line."""
    found = []
    for key in ("cert_file", "key_file", "client_ca_file"):
        name = getattr(tls, key) if tls else None
        if name:
            try:
                with open(name, "rb"):
                    pass
            except OSError as exc:
                found.append((key, name, exc.strerror or str(exc)))
    return found


def _message(error: dict) -> str:
    """Pydantic's message in the operator's words; never quotes the input (an inline key is a secret)."""
    kind = error["type"]
    if kind == "extra_forbidden":
        return "unknown key"
    if kind == "missing":
        return "required key is missing"
    message = error["msg"]
    for prefix in ("Value error, ", "Assertion failed, "):
        message = message.removeprefix(prefix)
    return message


def _ssl_reason(exc: Exception) -> str:
    if isinstance(exc, ssl.SSLError):
        return exc.reason or str(exc)
    if isinstance(exc, OSError):
        return f"{exc.filename}: {exc.strerror}" if exc.filename else (exc.strerror or str(exc))
    return str(exc)


def server_context(tls: TlsServerConfig) -> ssl.SSLContext:
    """Given a validated tls_server_config, return the server SSLContext; raise OSError or ssl.SSLError
    when a certificate or key cannot be loaded."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = TLS_VERSIONS[tls.min_version]
    context.maximum_version = TLS_VERSIONS[tls.max_version]
    if tls.cert_file and tls.key_file:
        context.load_cert_chain(tls.cert_file, tls.key_file)
    else:
        with _memory_file(tls.cert or "") as cert, _memory_file(tls.key or "") as key:
            context.load_cert_chain(cert or tls.cert_file, key or tls.key_file)
    if tls.client_auth_type != "NoClientCert":
        context.verify_mode = (ssl.CERT_REQUIRED if tls.client_auth_type == "RequireAndVerifyClientCert"
                               else ssl.CERT_OPTIONAL)
        context.load_verify_locations(cafile=tls.client_ca_file, cadata=tls.client_ca)
    if tls.cipher_suites:
        context.set_ciphers(":".join(GO_CIPHER_SUITES[name] for name in tls.cipher_suites))
    if tls.prefer_server_cipher_suites:
        context.options |= ssl.OP_CIPHER_SERVER_PREFERENCE
    else:
        context.options &= ~ssl.OP_CIPHER_SERVER_PREFERENCE
    context.set_alpn_protocols(["http/1.1"])
    return context


class _memory_file:
    """Inline PEM as a file name for `load_cert_chain` (which takes only paths), without writing the key
    to disk: a memfd, visible as /proc/self/fd/N for the moment of loading. Empty text → None."""

    def __init__(self, text: str):
        self.text, self.fd = text, -1

    def __enter__(self) -> str | None:
        if not self.text:
            return None
        self.fd = os.memfd_create("maint-agent-pem", os.MFD_CLOEXEC)
        os.write(self.fd, self.text.encode())
        return f"/proc/self/fd/{self.fd}"

    def __exit__(self, *exc: object) -> None:
        if self.fd >= 0:
            os.close(self.fd)


def allowed_san(peer: Mapping[str, Any] | None, allowed: tuple[str, ...]) -> bool:
    """Given a verified peer certificate (`SSLSocket.getpeercert()`), return True when one of its
    subjectAltName values equals an allowed entry (DNS, IP, e-mail or URI, as the toolkit matches)."""
    if not allowed:
        return True
    names = {value for _kind, value in (peer or {}).get("subjectAltName", ())}
    return any(entry in names for entry in allowed)


# -- basic auth -------------------------------------------------------------------------------------------


class Authenticator:
    """HTTP basic auth against bcrypt hashes (web config) and/or one plain credential (`http.basic_auth`).

    bcrypt costs ~70 ms at cost 10, too much per scrape, so a verdict is cached under
    (user, SHA-256(password)): a repeated scrape costs a hash and a dict lookup. A password never
    seen before pays bcrypt, whose comparison is constant-time; an unknown user pays it too (against
    a dummy hash of the same cost), so response times do not tell which user names exist. The plain
    credential is compared as SHA-256 digests with `hmac.compare_digest`.
    """

    def __init__(self, users: Mapping[str, str], plain: tuple[str, str] | None = None):
        self._users = {user: hashed.encode() for user, hashed in users.items()}
        self._plain = (_digest(plain[0].encode()), _digest(plain[1].encode())) if plain else None
        self._cache: OrderedDict[tuple[str, bytes], bool] = OrderedDict()
        self._lock = threading.Lock()
        self._dummy = _dummy_hash(self._users.values()) if self._users else b""

    def check(self, header: str | None) -> bool:
        """Given an Authorization header (or None), return True when it carries valid credentials."""
        credentials = _parse_basic(header)
        if credentials is None:
            return False
        user, password = credentials
        plain_ok = self._plain_ok(user, password)
        return self._hash_ok(user, password) or plain_ok

    def _plain_ok(self, user: bytes, password: bytes) -> bool:
        if self._plain is None:
            return False
        same_user = hmac.compare_digest(_digest(user), self._plain[0])
        same_password = hmac.compare_digest(_digest(password), self._plain[1])
        return same_user and same_password

    def _hash_ok(self, user: bytes, password: bytes) -> bool:
        if not self._users:
            return False
        import bcrypt
        name = user.decode("utf-8", "replace")
        key = (name, _digest(password))
        with self._lock:
            cached = self._cache.get(key)
            if cached is not None:
                self._cache.move_to_end(key)
                return cached
        hashed = self._users.get(name)
        try:
            verdict = bcrypt.checkpw(password, hashed or self._dummy) and hashed is not None
        except ValueError:   # a password bcrypt cannot take (NUL byte)
            verdict = False
        with self._lock:
            self._cache[key] = verdict
            while len(self._cache) > AUTH_CACHE_ENTRIES:
                self._cache.popitem(last=False)
        return verdict


def _digest(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def _parse_basic(header: str | None) -> tuple[bytes, bytes] | None:
    if not header or not header[:6].lower() == "basic ":
        return None
    try:
        decoded = base64.b64decode(header[6:].strip(), validate=True)
    except (binascii.Error, ValueError):
        return None
    user, sep, password = decoded.partition(b":")
    return (user, password) if sep else None


def _dummy_hash(hashes) -> bytes:
    """A hash of a random password at the highest configured cost: what an unknown user is checked against."""
    import bcrypt
    cost = max(int(_BCRYPT_RE.match(h.decode()).group(1)) for h in hashes)
    return bcrypt.hashpw(os.urandom(16).hex().encode(), bcrypt.gensalt(rounds=max(4, min(cost, 31))))


# -- rate limit -------------------------------------------------------------------------------------------


class RateLimiter:
    """A token bucket like Go's rate.Limiter: `burst` requests at once, refilled one per `interval`."""

    def __init__(self, interval: float, burst: int, clock: Callable[[], float] = time.monotonic):
        self.interval, self.burst, self.clock = interval, burst, clock
        self._tokens, self._at = float(burst), clock()
        self._lock = threading.Lock()

    def allow(self) -> bool:
        with self._lock:
            now = self.clock()
            self._tokens = min(self.burst, self._tokens + (now - self._at) / self.interval)
            self._at = now
            if self._tokens >= 1:
                self._tokens -= 1
                return True
            return False


# -- what the server applies ------------------------------------------------------------------------------


@dataclass(frozen=True)
class WebSecurity:
    """What /metrics applies to a connection and its requests, built from one version of the web config."""

    context: ssl.SSLContext | None = None
    auth: Authenticator | None = None
    headers: dict[str, str] = field(default_factory=dict)
    allowed_sans: tuple[str, ...] = ()
    limiter: RateLimiter | None = None


def build_security(web: WebConfig | None, plain: tuple[str, str] | None) -> WebSecurity:
    """Given a web config (or None) and the plain `http.basic_auth` credential, return what the server applies."""
    users = web.basic_auth_users if web else {}
    auth = Authenticator(users, plain) if users or plain else None
    if web is None:
        return WebSecurity(auth=auth)
    tls = web.tls_server_config
    limit = web.rate_limit
    return WebSecurity(context=server_context(tls) if tls else None, auth=auth,
                       headers=web.http_server_config.headers.as_dict(),
                       allowed_sans=tls.client_allowed_sans if tls else (),
                       limiter=RateLimiter(limit.interval, limit.burst) if limit and limit.interval > 0 else None)


class WebConfigFile:
    """The web config as the server sees it: re-read (at most once a second) when the file or a certificate
    it names changes; a broken new version is logged and the previous one kept."""

    def __init__(self, path: str | Path, plain: tuple[str, str] | None, clock: Callable[[], float] = time.monotonic):
        self.path, self.plain, self.clock = Path(path), plain, clock
        config = load_web_config(self.path)
        self._security = build_security(config, plain)
        self._stamp = self._stamps(config)
        self._config = config
        self._checked = clock()
        self._lock = threading.Lock()

    def current(self) -> WebSecurity:
        now = self.clock()
        if now - self._checked < RELOAD_CHECK_SECONDS:
            return self._security
        with self._lock:
            if now - self._checked >= RELOAD_CHECK_SECONDS:
                self._checked = now
                self._maybe_reload()
        return self._security

    def _maybe_reload(self) -> None:
        from agent.plugin import logs
        if self._stamps(self._config) == self._stamp:
            return
        try:
            config = load_web_config(self.path)
            security = build_security(config, self.plain)
        except ConfigError as exc:
            for issue in exc.issues:
                logs.event("web_config.invalid", "error", error=str(issue))
            logs.event("web_config.reload_failed", "error", kept="previous web config")
            self._stamp = self._stamps(self._config)   # report a broken version once, not every second
            return
        except (OSError, ssl.SSLError) as exc:
            logs.event("web_config.reload_failed", "error", error=_ssl_reason(exc), kept="previous web config")
            self._stamp = self._stamps(self._config)
            return
        self._config, self._security, self._stamp = config, security, self._stamps(config)
        logs.event("web_config.reloaded", file=str(self.path), tls=security.context is not None)

    def _stamps(self, config: WebConfig) -> tuple:
        def stamp(path: Path) -> tuple:
            try:
                st = path.stat()
            except OSError:
                return (str(path), None)
            return (str(path), st.st_mtime_ns, st.st_size, st.st_ino)
        return tuple(stamp(p) for p in [self.path, *config.files()])
