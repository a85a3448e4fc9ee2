"""Rules and dashboard name only what the agent exports (docs/metrics.md, `agent.http.metrics.contract()`):
a query over a misspelt metric or label is empty forever, and an alert over it never fires."""

from __future__ import annotations

import json

import yaml

from tests.conftest import REPO
from tests.fleet.promql import selectors, unknown_in

RULES = REPO / "deploy" / "prometheus" / "maint-agent.rules.yml"
DASHBOARD = REPO / "deploy" / "grafana" / "maint-agent.json"


def rules() -> list[dict]:
    return [rule for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]]


def recorded() -> set[str]:
    return {rule["record"] for rule in rules() if "record" in rule}


def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def panels(items: list[dict]):
    for panel in items:
        yield panel
        yield from panels(panel.get("panels", ()))


def test_promql_selectors_skip_functions_keywords_and_grouping_labels():
    assert selectors('sum by (check) (increase(maint_action_runs_total{instance=~"$host"}[$__rate_interval]))') \
        == [("maint_action_runs_total", {"instance"})]
    assert selectors("a > on (instance, check) group_left (severity) b offset 5m") == [("a", set()), ("b", set())]
    assert unknown_in('maint_disk_used_ratio{mountpoint="/"}', set()) == ["maint_disk_used_ratio has no label "
                                                                            "['mountpoint']"]


def test_rules_use_only_exported_metrics_and_labels():
    names = recorded()
    for rule in rules():
        assert unknown_in(rule["expr"], names) == [], rule.get("alert") or rule.get("record")


def test_dashboard_queries_use_only_exported_metrics_and_labels():
    names = recorded()
    queries = [target["expr"] for panel in panels(dashboard()["panels"]) for target in panel.get("targets", ())]
    assert len(queries) >= 15
    for expr in queries:
        assert unknown_in(expr, names) == [], expr


def test_dashboard_has_fleet_matrix_host_variable_and_the_issue_panels():
    board = dashboard()
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["host"]["query"]["query"] == "label_values(maint_agent_info, instance)"
    assert unknown_in("maint_agent_info", set()) == []
    titles = {panel["title"]: panel for panel in panels(board["panels"])}
    matrix = titles["Hosts × checks"]
    assert matrix["transformations"][0]["options"] == {"columnField": "check", "rowField": "instance",
                                                       "valueField": "Value"}
    for title in ("Check status over time", "PostgreSQL replication lag", "Backup age", "Actions over time"):
        assert title in titles
    for panel in panels(board["panels"]):
        for target in panel.get("targets", ()):
            if panel["title"] not in ("Agents up", "Agents down", "Alerts firing"):
                assert 'instance=~"$host"' in target["expr"], panel["title"]
    ids = [panel["id"] for panel in panels(board["panels"])]
    assert len(ids) == len(set(ids))
