"""Shared assertion for check families whose probes need a real server (postgres, redis, http…)."""

from __future__ import annotations

import subprocess

from prometheus_client.parser import text_string_to_metric_families

from agent.config.triggers import Interval
from agent.evaluate import WindowState, evaluate
from agent.job import Job
from agent.http.metrics import AgentState, Exposition, contract
from agent.plugin.result import CheckResult, Evaluated
from checks import CHECK_TYPES
from tests.conftest import have


def render(check, result: CheckResult) -> str:
    """The /metrics text the daemon would serve for this one result."""
    state = AgentState("test", 1)
    job = Job(check, Interval(60), 5)
    verdict = evaluate(check, result, WindowState(), 0)
    job.latest = Evaluated(check.options.name, check.TYPE, verdict.status, verdict.summary, result.samples, {},
                           1.0, 0.1, 1.0, verdict.pending)
    state.jobs = [job]
    exposition = Exposition(state)
    exposition.refresh()
    return exposition.body(False)[0].decode()


def assert_family_contract(check, results: list[CheckResult], require_all: bool = True) -> None:
    """Every sample of `results` is a declared metric with declared labels; with `require_all`, every
    metric the type declares appears in at least one result; the exposition passes promtool."""
    cls = CHECK_TYPES[check.TYPE]
    declared = {m.name: m for m in cls.METRICS}
    seen = set()
    for result in results:
        for s in result.samples:
            assert s.name in declared, f"{check.TYPE}: sample {s.name} not in METRICS"
            assert {k for k, _ in s.labels} == set(declared[s.name].labels), f"{check.TYPE}: labels of {s.name}"
            seen.add(s.name)
        text = render(check, result)
        names = {f.name for f in text_string_to_metric_families(text)}
        promised = {f.name.removesuffix("_total") for f in contract()}
        assert names <= promised, f"exported but not in contract: {names - promised}"
        if have("promtool"):
            out = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True)
            assert (out.returncode, out.stdout, out.stderr) == (0, "", ""), out.stderr
    if require_all:
        assert seen == set(declared), f"{check.TYPE}: declared but never produced: {set(declared) - seen}"
