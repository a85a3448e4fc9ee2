"""Shared pieces of the production-service tests: a throw-away PKI made with the real `openssl`, and the
agent reached over HTTPS with a client certificate and basic auth."""

from __future__ import annotations

import base64
import ssl
import subprocess
import types
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import AgentProcess, have


@dataclass(frozen=True)
class Pki:
    """A CA, a server certificate for 127.0.0.1/localhost, a client certificate from the same CA, and a
    client certificate from another CA (which the agent must refuse)."""

    dir: Path
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    rogue_cert: Path
    rogue_key: Path

    def issue_server(self, name: str) -> tuple[Path, Path]:
        """Another server certificate from the same CA (a renewal)."""
        return _issue(self.dir, name, self.ca, self.dir / "ca.key", "serverAuth",
                      "IP:127.0.0.1,DNS:localhost")


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def _ca(directory: Path, name: str) -> tuple[Path, Path]:
    _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "2",
             "-keyout", f"{name}.key", "-out", f"{name}.crt", "-subj", f"/CN={name}", cwd=directory)
    return directory / f"{name}.crt", directory / f"{name}.key"


def _issue(directory: Path, name: str, ca: Path, ca_key: Path, usage: str, san: str) -> tuple[Path, Path]:
    ext = directory / f"{name}.ext"
    ext.write_text(f"subjectAltName={san}\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature\n"
                   f"extendedKeyUsage={usage}\n")
    _openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", f"{name}.key",
             "-out", f"{name}.csr", "-subj", f"/CN={name}", cwd=directory)
    _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", str(ca), "-CAkey", str(ca_key), "-CAcreateserial",
             "-days", "2", "-out", f"{name}.crt", "-extfile", str(ext), cwd=directory)
    return directory / f"{name}.crt", directory / f"{name}.key"


@pytest.fixture(scope="session")
def pki(tmp_path_factory) -> Pki:
    if not have("openssl"):
        pytest.skip("openssl missing (Debian package openssl)")
    directory = tmp_path_factory.mktemp("pki")
    ca, ca_key = _ca(directory, "ca")
    server = _issue(directory, "server", ca, ca_key, "serverAuth", "IP:127.0.0.1,DNS:localhost")
    client = _issue(directory, "client", ca, ca_key, "clientAuth", "DNS:prometheus.test")
    rogue_ca, rogue_ca_key = _ca(directory, "rogue-ca")
    rogue = _issue(directory, "rogue", rogue_ca, rogue_ca_key, "clientAuth", "DNS:prometheus.test")
    return Pki(directory, ca, *server, *client, *rogue)


def client_context(pki: Pki, with_cert: bool = True) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(pki.ca))
    if with_cert:
        context.load_cert_chain(pki.client_cert, pki.client_key)
    return context


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def speak_https(agent: AgentProcess, context: ssl.SSLContext, headers: dict[str, str]) -> AgentProcess:
    """Make the agent's `get` (and so `start`'s readiness wait and `metrics`) use HTTPS with this client."""

    def get(self, path: str, extra: dict | None = None) -> tuple[int, bytes]:
        request = urllib.request.Request(f"https://127.0.0.1:{self.port}{path}", headers={**headers, **(extra or {})})
        try:
            with urllib.request.urlopen(request, timeout=5, context=context) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    agent.get = types.MethodType(get, agent)
    return agent
