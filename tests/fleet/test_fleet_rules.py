"""The shipped Prometheus rules and Alertmanager routing (deploy/): valid for the real tools, every
alert labelled, documented and unit-tested, and routed by incident level as seed 000 says."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO, have

PROMETHEUS = REPO / "deploy" / "prometheus"
RULES = PROMETHEUS / "maint-agent.rules.yml"
ALERTMANAGER = REPO / "deploy" / "alertmanager" / "alertmanager.yml"
needs_promtool = pytest.mark.skipif(not have("promtool"), reason="promtool missing (Debian package prometheus)")
needs_amtool = pytest.mark.skipif(not have("amtool"), reason="amtool missing (Debian package prometheus-alertmanager)")


def run(*argv: str | Path, cwd: Path = REPO) -> subprocess.CompletedProcess:
    return subprocess.run([str(a) for a in argv], cwd=cwd, capture_output=True, text=True, timeout=120)


def alert_rules() -> list[dict]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


def unit_tests() -> list[dict]:
    return [test for path in sorted((PROMETHEUS / "tests").glob("*.yml"))
            for test in yaml.safe_load(path.read_text())["tests"]]


@needs_promtool
def test_rules_promtool_check_rules_is_clean():
    out = run("promtool", "check", "rules", RULES)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS" in out.stdout and "WARNING" not in out.stdout + out.stderr


@needs_promtool
def test_rules_promtool_unit_tests_pass():
    files = sorted((PROMETHEUS / "tests").glob("*.yml"))
    assert files
    out = run("promtool", "test", "rules", *files, cwd=PROMETHEUS / "tests")
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.count("SUCCESS") == len(files), out.stdout


def test_rules_every_alert_is_labelled_with_severity_priority_and_runbook():
    for rule in alert_rules():
        name, labels = rule["alert"], rule["labels"]
        templated = "{{" in labels["severity"]
        assert templated or labels["severity"] in ("critical", "warning", "info"), name
        assert templated == ("{{" in labels["priority"]), name
        assert templated or labels["priority"] in ("p0", "p1", "p2", "p3"), name
        runbook = rule["annotations"]["runbook"]
        assert runbook == f"docs/runbooks/{name}.md", name
        assert (REPO / runbook).is_file(), f"{runbook} missing"


def test_rules_every_alert_has_a_unit_test_where_it_fires_and_one_where_it_does_not():
    fired, quiet = set(), set()
    for test in unit_tests():
        for case in test.get("alert_rule_test", ()):
            (fired if case.get("exp_alerts") else quiet).add(case["alertname"])
    names = {rule["alert"] for rule in alert_rules()}
    assert names - fired == set(), "never seen firing"
    assert names - quiet == set(), "never seen quiet or resolved"


def test_rules_every_runbook_belongs_to_an_alert():
    names = {rule["alert"] for rule in alert_rules()}
    documented = {p.stem for p in (REPO / "docs" / "runbooks").glob("*.md")} - {"README"}
    assert documented == names


@needs_promtool
def test_prometheus_example_config_is_valid_and_loads_the_rules():
    out = run("promtool", "check", "config", PROMETHEUS / "prometheus.yml", cwd=PROMETHEUS)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS: 1 rule files found" in out.stdout


@needs_amtool
def test_alertmanager_example_config_is_valid():
    out = run("amtool", "check-config", ALERTMANAGER)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS" in out.stdout


@needs_amtool
@pytest.mark.parametrize("labels, receivers", [
    (["priority=p0"], "pagerduty-critical,slack-alerts"),
    (["priority=p1"], "pagerduty-high,slack-alerts"),
    (["priority=p2"], "slack-warnings"),
    (["priority=p3"], "email-low"),
    ([], "slack-alerts"),
])
def test_alertmanager_routes_each_priority_as_seed_000(labels, receivers):
    out = run("amtool", "config", "routes", "test", f"--config.file={ALERTMANAGER}", "alertname=MaintCheckCritical",
              *labels)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == receivers


@needs_amtool
def test_alertmanager_routes_the_maintenance_alert_nowhere():
    out = run("amtool", "config", "routes", "test", f"--config.file={ALERTMANAGER}",
              "alertname=MaintCheckInMaintenance", "priority=p3", "severity=info")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "maintenance"


ALERTMANAGER_BIN = "/usr/bin/prometheus-alertmanager"


@pytest.mark.skipif(not Path(ALERTMANAGER_BIN).exists(), reason="alertmanager missing (prometheus-alertmanager)")
def test_alertmanager_holds_alerts_of_a_check_in_maintenance_not_other_hosts_or_checks(tmp_path):
    """The real Alertmanager with the shipped config: an alert someone added for a check in maintenance is
    inhibited; the same alert on another host, or for another check, is not."""
    import json
    import time
    import urllib.request

    from tests.conftest import free_port, wait_for
    port = free_port()
    proc = subprocess.Popen([ALERTMANAGER_BIN, f"--config.file={ALERTMANAGER}", f"--storage.path={tmp_path}",
                             f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address="],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    api = f"http://127.0.0.1:{port}/api/v2"

    def call(path: str, body: list | None = None):
        request = urllib.request.Request(api + path, data=json.dumps(body).encode() if body is not None else None,
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                return json.loads(response.read() or b"null")
        except OSError:
            return None

    try:
        wait_for(lambda: call("/status"), 20, what="alertmanager to answer")
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        alert = {"startsAt": now, "annotations": {"summary": "test"}}
        labels = [{"alertname": "MaintCheckInMaintenance", "job": "maint-agent", "instance": "db1", "check": "pg",
                   "severity": "info", "priority": "p3"},
                  {"alertname": "PostgresSlowCommits", "instance": "db1", "check": "pg", "priority": "p1"},
                  {"alertname": "PostgresSlowCommits", "instance": "db2", "check": "pg", "priority": "p1"},
                  {"alertname": "PostgresSlowCommits", "instance": "db1", "check": "pg-replication", "priority": "p1"},
                  {"alertname": "NodeDown", "instance": "db1", "priority": "p1"}]
        call("/alerts", [{**alert, "labels": label} for label in labels])

        def states():
            alerts = call("/alerts") or []
            return {(a["labels"]["alertname"], a["labels"]["instance"], a["labels"].get("check")):
                    a["status"]["state"] for a in alerts}

        wait_for(lambda: states().get(("PostgresSlowCommits", "db1", "pg")) == "suppressed", 20,
                 what="the alert of the check in maintenance to be inhibited")
        assert states() == {("MaintCheckInMaintenance", "db1", "pg"): "active",
                            ("PostgresSlowCommits", "db1", "pg"): "suppressed",
                            ("PostgresSlowCommits", "db2", "pg"): "active",
                            ("PostgresSlowCommits", "db1", "pg-replication"): "active",
                            ("NodeDown", "db1", None): "active"}
    finally:
        proc.terminate()
        proc.wait(10)
