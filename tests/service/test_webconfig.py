"""The exporter-toolkit web config: what an operator's file may say, the errors a mistake gets (with the
web config's own file and line), and the basic-auth check's cache and timing."""

from __future__ import annotations

import base64
import textwrap
import time
from pathlib import Path

import bcrypt
import pytest

from agent.config.web import Authenticator, RateLimiter, WebConfigFile, load_web_config, server_context
from agent.config.yamlsrc import ConfigError
from tests.conftest import run_cli
from tests.service.conftest import Pki


def write(tmp_path: Path, text: str, name: str = "web.yml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text).lstrip())
    return path


def issues(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_web_config(path)
    return [str(issue) for issue in caught.value.issues]


def header(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def test_webconfig_relative_paths_are_relative_to_the_file(tmp_path, pki: Pki):
    (tmp_path / "tls").mkdir()
    for source, name in ((pki.server_cert, "agent.crt"), (pki.server_key, "agent.key"), (pki.ca, "ca.crt")):
        (tmp_path / "tls" / name).write_bytes(source.read_bytes())
    path = write(tmp_path, """
        tls_server_config:
          cert_file: tls/agent.crt
          key_file: tls/agent.key
          client_auth_type: RequireAndVerifyClientCert
          client_ca_file: tls/ca.crt
          cipher_suites: [TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256]
        rate_limit: {interval: 100ms, burst: 5}
    """)
    config = load_web_config(path)
    assert config.tls_server_config.cert_file == str(tmp_path / "tls" / "agent.crt")
    assert config.secret_files() == [tmp_path / "tls" / "agent.key"]


def test_webconfig_inline_pem_loads_without_files(tmp_path, pki: Pki):
    cert, key = pki.server_cert.read_text(), pki.server_key.read_text()
    path = write(tmp_path, "tls_server_config:\n  cert: |\n" + textwrap.indent(cert, "    ")
                 + "  key: |\n" + textwrap.indent(key, "    "))
    context = server_context(load_web_config(path).tls_server_config)
    assert context.minimum_version.name == "TLSv1_2"


def test_webconfig_every_mistake_reported_with_its_line(tmp_path, pki: Pki):
    path = write(tmp_path, f"""
        tls_server_config:
          cert_file: {pki.server_cert}
          key_file: {pki.server_key}
          client_auth_type: RequireAnyClientCert
          client_ca_file: {pki.ca}
        http_server_config:
          headers: {{X-Frame-Options: allow}}
        basic_auth_users:
          prometheus: not-a-hash
        tsl_server_config: {{}}
    """)
    found = issues(path)
    assert any(f"{path}:1: tls_server_config: " in i and "accepts certificates nobody verified" in i for i in found)
    assert f"{path}:7: http_server_config.headers.X-Frame-Options: must be deny or sameorigin" in found
    assert any(i.startswith(f"{path}:9: basic_auth_users.prometheus: must be a bcrypt hash") for i in found)
    assert f"{path}:10: tsl_server_config: unknown key" in found


@pytest.mark.parametrize("text, message", [
    ("tls_server_config: {client_auth_type: RequireAndVerifyClientCert}", "needs cert_file and key_file"),
    ("tls_server_config: {cert_file: /nonexistent.crt, key_file: /nonexistent.key}",
     "tls_server_config.cert_file: cannot read /nonexistent.crt: No such file or directory"),
    ("tls_server_config: {cert_file: a, key_file: b, curve_preferences: [X25519]}", "not supported by maint-agent"),
    ("tls_server_config: {cert_file: a, key_file: b, min_version: TLS13, max_version: TLS12}",
     "min_version TLS13 is above max_version TLS12"),
    ("tls_server_config: {cert_file: a, key_file: b, cipher_suites: [TLS_RSA_WITH_RC4_128_SHA]}",
     "unknown cipher suite TLS_RSA_WITH_RC4_128_SHA"),
    ("rate_limit: {interval: 1s}", "burst must be at least 1"),
], ids=["no-cert", "missing-file", "curves", "versions", "cipher", "burst"])
def test_webconfig_mistake_has_a_reason(tmp_path, text, message):
    found = issues(write(tmp_path, text + "\n"))
    assert any(message in issue for issue in found), found


def test_webconfig_inline_key_never_quoted_in_errors(tmp_path):
    found = issues(write(tmp_path, "tls_server_config: {cert_file: a, key: 'PRIVATE-KEY-MATERIAL', "
                                   "key_file: b}\n"))
    assert found and not any("PRIVATE-KEY-MATERIAL" in issue for issue in found)


def test_config_check_names_the_web_config_file_and_line(write_config, tmp_path):
    web = write(tmp_path, "basic_auth_users:\n  prometheus: plain-text-password\n")
    config = write_config(f"http:\n  listen: 127.0.0.1:9469\n  web_config: {web}\n")
    proc = run_cli("config", "check", str(config))
    assert proc.returncode == 2
    assert proc.stderr.startswith(f"{config}:3: http.web_config: {web}:2: basic_auth_users.prometheus: "
                                  "must be a bcrypt hash"), proc.stderr
    assert "plain-text-password" not in proc.stderr


def test_authenticator_accepts_only_the_right_user_and_password():
    auth = Authenticator({"prometheus": bcrypt.hashpw(b"s3cret", bcrypt.gensalt(4)).decode()},
                         plain=("local", "plain-pass"))
    assert auth.check(header("prometheus", "s3cret"))
    assert auth.check(header("local", "plain-pass"))
    for bad in (header("prometheus", "wrong"), header("nobody", "s3cret"), header("local", "s3cret"),
                header("prometheus", ""), "Basic !!!", "Bearer abc", None, ""):
        assert not auth.check(bad), bad


def test_authenticator_repeated_scrape_skips_bcrypt_unknown_user_still_pays_it():
    auth = Authenticator({"prometheus": bcrypt.hashpw(b"s3cret", bcrypt.gensalt(10)).decode()})

    def seconds(value: str) -> float:
        started = time.perf_counter()
        auth.check(value)
        return time.perf_counter() - started

    first = seconds(header("prometheus", "s3cret"))
    cached = min(seconds(header("prometheus", "s3cret")) for _ in range(5))
    unknown = seconds(header("nobody", "guess"))
    wrong = seconds(header("prometheus", "guess"))
    assert cached < first / 5, (first, cached)
    assert unknown > wrong / 3, "an unknown user is checked against a dummy hash of the same cost"


def test_rate_limiter_allows_burst_then_one_per_interval():
    now = [0.0]
    limiter = RateLimiter(interval=1.0, burst=2, clock=lambda: now[0])
    assert [limiter.allow() for _ in range(3)] == [True, True, False]
    now[0] = 1.0
    assert [limiter.allow() for _ in range(2)] == [True, False]


def test_webconfig_file_broken_edit_keeps_the_previous_version(tmp_path):
    hashed = bcrypt.hashpw(b"s3cret", bcrypt.gensalt(4)).decode()
    path = write(tmp_path, f"basic_auth_users: {{prometheus: '{hashed}'}}\n")
    now = [0.0]
    web = WebConfigFile(path, None, clock=lambda: now[0])
    assert web.current().auth.check(header("prometheus", "s3cret"))
    path.write_text("basic_auth_users: {prometheus: plain}\n")
    now[0] = 5.0
    assert web.current().auth.check(header("prometheus", "s3cret")), "the broken edit is not applied"
    other = bcrypt.hashpw(b"n3w", bcrypt.gensalt(4)).decode()
    path.write_text(f"basic_auth_users: {{prometheus: '{other}'}}\n")
    now[0] = 10.0
    assert web.current().auth.check(header("prometheus", "n3w"))
