"""The real Prometheus server (Debian's `prometheus`) scraping the agent over mutual TLS with basic auth:
`up == 1` for the right credentials and `up == 0` for a wrong password, read through its HTTP API."""

from __future__ import annotations

import json
import subprocess
import urllib.parse
import urllib.request

import pytest

from tests.conftest import free_port, have, wait_for
from tests.service.conftest import basic, client_context, speak_https
from tests.service.test_service_tls import PASSWORD, agent_config, web_config

pytestmark = pytest.mark.skipif(not have("prometheus"), reason="prometheus missing (Debian package prometheus)")


@pytest.fixture
def prometheus(tmp_path):
    """Start prometheus on a free loopback port with a config the test writes; stopped at the end."""
    procs = []

    def start(config: str) -> int:
        port = free_port()
        path = tmp_path / "prometheus.yml"
        path.write_text(config)
        log = open(tmp_path / "prometheus.log", "wb")
        procs.append(subprocess.Popen(["prometheus", f"--config.file={path}", f"--storage.tsdb.path={tmp_path}/tsdb",
                                       f"--web.listen-address=127.0.0.1:{port}"], stdout=log, stderr=log))
        return port

    yield start
    for proc in procs:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def up_by_job(port: int) -> dict[str, str]:
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": "up"})
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            data = json.load(response)
    except OSError:
        return {}
    return {r["metric"]["job"]: r["value"][1] for r in data["data"]["result"]}


def test_prometheus_scrapes_agent_over_mtls_with_basic_auth(agent_factory, prometheus, tmp_path, pki):
    agent = agent_factory(agent_config(web_config(tmp_path, pki)))
    speak_https(agent, client_context(pki), basic("prometheus", PASSWORD)).start()
    (tmp_path / "scrape-password").write_text(PASSWORD)
    (tmp_path / "wrong-password").write_text("not-the-password")

    def job(name: str, password_file: str) -> dict:
        return {"job_name": name, "scheme": "https",
                "basic_auth": {"username": "prometheus", "password_file": str(tmp_path / password_file)},
                "tls_config": {"ca_file": str(pki.ca), "cert_file": str(pki.client_cert),
                               "key_file": str(pki.client_key)},
                "static_configs": [{"targets": [f"127.0.0.1:{agent.port}"]}]}

    port = prometheus(json.dumps({   # JSON is YAML
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
        "scrape_configs": [job("maint-agent", "scrape-password"), job("wrong-password", "wrong-password")]}))
    jobs = wait_for(lambda: (lambda up: up if len(up) == 2 else None)(up_by_job(port)), 30,
                    what="prometheus to scrape both jobs")
    assert jobs == {"maint-agent": "1", "wrong-password": "0"}
