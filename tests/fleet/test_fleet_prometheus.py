"""A real Prometheus (Debian `prometheus`, started here on 127.0.0.1 with its own config and storage)
scrapes a running agent found through a file_sd file written by `maint-agent fleet targets`, with
the shipped relabeling and rules: the host is up under its name, the check status series is there
with its incident level, and a check forced CRITICAL raises MaintCheckCritical at that level."""

from __future__ import annotations

import json
import subprocess
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from agent.http.metrics import contract
from tests.conftest import REPO, free_port, have, run_cli, wait_for

PROMETHEUS = REPO / "deploy" / "prometheus"
pytestmark = pytest.mark.skipif(not have("prometheus"), reason="prometheus missing (Debian package prometheus)")


def fast_rules(tmp_path: Path) -> Path:
    """The shipped rules with every `for:` cut to 1s, so a 1s-evaluation Prometheus fires within seconds."""
    rules = yaml.safe_load((PROMETHEUS / "maint-agent.rules.yml").read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            if "for" in rule:
                rule["for"] = "1s"
    path = tmp_path / "rules.yml"
    path.write_text(yaml.safe_dump(rules, sort_keys=False))
    return path


class Prometheus:
    def __init__(self, tmp_path: Path, targets: Path):
        shipped = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())["scrape_configs"][0]
        config = {
            "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(fast_rules(tmp_path))],
            "scrape_configs": [{"job_name": shipped["job_name"], "file_sd_configs": [{"files": [str(targets)]}],
                                "relabel_configs": shipped["relabel_configs"]}],
        }
        (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
        self.url = f"http://127.0.0.1:{free_port()}"
        self.log = open(tmp_path / "prometheus.log", "wb")
        self.proc = subprocess.Popen(
            ["prometheus", f"--config.file={tmp_path / 'prometheus.yml'}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
             f"--web.listen-address={self.url.removeprefix('http://')}", "--log.level=warn"],
            stdout=self.log, stderr=subprocess.STDOUT)

    def get(self, path: str, **params) -> dict | None:
        url = f"{self.url}{path}" + (f"?{urllib.parse.urlencode(params)}" if params else "")
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return json.loads(response.read()) if path.startswith("/api") else {"ok": response.status == 200}
        except OSError:
            assert self.proc.poll() is None, f"prometheus exited with {self.proc.returncode}"
            return None

    def query(self, promql: str) -> list[dict]:
        answer = self.get("/api/v1/query", query=promql)
        return answer["data"]["result"] if answer else []

    def alerts(self, name: str) -> list[dict]:
        answer = self.get("/api/v1/alerts")
        return [a for a in answer["data"]["alerts"] if a["labels"]["alertname"] == name] if answer else []

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


@pytest.fixture
def prometheus(tmp_path):
    started = []

    def start(targets: Path) -> Prometheus:
        server = Prometheus(tmp_path, targets)
        started.append(server)
        wait_for(lambda: server.get("/-/ready"), 20, what="prometheus /-/ready")
        return server

    yield start
    for server in started:
        server.stop()


def test_prometheus_scrapes_the_agent_and_a_critical_check_fires_at_its_level(agent_factory, prometheus, tmp_path):
    agent = agent_factory("""
        agent: {state_dir: "{state}", hostname: fleet-test}
        http: {listen: "127.0.0.1:{port}"}
        checks:
          - {name: backup-marker, type: file, every: 1s, path: /nonexistent/maint-agent-fleet-test, severity: P1}
          - {name: memory, type: memory, every: 1s}
        """).start()
    targets = tmp_path / "targets.json"
    written = run_cli("fleet", "targets", "--hosts", f"127.0.0.1:{agent.port}", "--label", "env=test",
                      "--output", str(targets))
    assert written.returncode == 0, written.stderr
    server = prometheus(targets)

    up = wait_for(lambda: server.query('up{job="maint-agent"} == 1'), 20, what="up == 1")
    assert up[0]["metric"] == {"__name__": "up", "job": "maint-agent", "instance": "127.0.0.1", "env": "test"}

    status = wait_for(lambda: server.query('maint_check_status{check="backup-marker"}'), 10, what="status series")
    assert status[0]["metric"] == {"__name__": "maint_check_status", "job": "maint-agent", "instance": "127.0.0.1",
                                   "env": "test", "check": "backup-marker", "type": "file", "severity": "P1"}
    assert status[0]["value"][1] == "2"

    firing = wait_for(lambda: [a for a in server.alerts("MaintCheckCritical") if a["state"] == "firing"], 20,
                      what="MaintCheckCritical firing")
    alert, = firing
    assert alert["labels"] == {"alertname": "MaintCheckCritical", "job": "maint-agent", "instance": "127.0.0.1",
                               "env": "test", "check": "backup-marker", "type": "file", "severity": "critical",
                               "priority": "p1"}
    assert alert["annotations"] == {"summary": "backup-marker (file) is CRITICAL on 127.0.0.1",
                                    "runbook": "docs/runbooks/MaintCheckCritical.md"}
    assert server.alerts("MaintAgentDown") == []


def test_running_agent_exposes_only_contract_metrics(agent_factory):
    agent = agent_factory("""
        agent: {state_dir: "{state}"}
        http: {listen: "127.0.0.1:{port}"}
        checks:
          - {name: cpu, type: cpu, every: 1s}
          - {name: disk, type: disk, every: 1s, mounts: [/]}
          - {name: marker, type: file, every: 1s, path: /nonexistent/x}
        """).start()
    wait_for(lambda: "maint_disk_used_ratio" in agent.metrics(), 10, what="disk metrics")
    families = {f.name: f.type for f in text_string_to_metric_families(agent.metrics())}
    promised = {f.name.removesuffix("_total") if f.kind == "counter" else f.name: f.kind for f in contract()}
    assert {name: kind for name, kind in families.items() if name not in promised} == {}
    assert all(promised[name] == kind for name, kind in families.items())
