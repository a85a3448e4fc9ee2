"""The exposition matches the metric contract both ways and passes promtool."""

import re
import subprocess

import pytest
from prometheus_client.parser import text_string_to_metric_families

from agent.config.triggers import Interval
from agent.evaluate import WindowState, evaluate
from agent.job import Job
from agent.http.metrics import AgentState, Exposition, contract
from agent.plugin.result import Evaluated
from checks import CHECK_TYPES
from checks.base import CheckContext
from tests.conftest import have

# one real, runnable configuration per check type
OPTIONS = {
    "cpu": {}, "memory": {}, "swap": {}, "load": {},
    "disk": {"mounts": ["/"]},
    "network_latency": {"targets": ["127.0.0.1:9"], "connect_timeout": "200ms", "attempts": 1},
    "process": {"process_name": "python3"},
    "file": {"path": "/etc/hostname"},
    "nagios": {"command": ["/bin/echo", "OK | t=1ms b=2KB"]},
}


# types whose probes need a server (postgres, redis, http…): their own tests call
# tests.metrics_contract.assert_family_contract against the real server
SERVER_BACKED = set(CHECK_TYPES) - set(OPTIONS)


@pytest.fixture(scope="module")
def exposition_text():
    state = AgentState("test", 2)
    jobs = []
    for type_name, cls in CHECK_TYPES.items():
        if type_name in SERVER_BACKED:
            continue
        check = cls(cls.Options.model_validate({"name": f"c-{type_name.replace('_', '-')}", "type": type_name,
                                                **OPTIONS[type_name]}))
        job = Job(check, Interval(60), 5)
        result = check.run(CheckContext(timeout=5))
        verdict = evaluate(check, result, WindowState(), 0)
        job.latest = Evaluated(check.options.name, type_name, verdict.status, verdict.summary, result.samples,
                               {}, 1.0, 0.1, 1.0, verdict.pending)
        job.runs[verdict.status.label] += 1
        jobs.append(job)
    # a reachable target too, so both network families appear
    import socket
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        cls = CHECK_TYPES["network_latency"]
        check = cls(cls.Options.model_validate({"name": "up", "type": "network_latency",
                                                "targets": [f"127.0.0.1:{server.getsockname()[1]}"]}))
        result = check.run(CheckContext(timeout=5))
    job = Job(check, Interval(60), 5)
    job.latest = Evaluated("up", "network_latency", result.status, "", result.samples, {}, 1.0, 0.1, 1.0)
    jobs.append(job)
    state.jobs = jobs
    exposition = Exposition(state)
    exposition.refresh()
    return exposition.body(False)[0].decode()


def test_exposition_families_match_contract_both_ways(exposition_text):
    exported = {}
    for family in text_string_to_metric_families(exposition_text):
        exported[family.name] = family
    served = {name for name, cls in CHECK_TYPES.items() if name in SERVER_BACKED}
    skipped = {f"maint_{CHECK_TYPES[t].metric_prefix()}_{m.name}" for t in served for m in CHECK_TYPES[t].METRICS}
    promised = {f.name.removesuffix("_total"): f for f in contract() if f.name not in skipped}
    assert set(exported) == set(promised), (
        f"exported but not in contract: {set(exported) - set(promised)}; "
        f"in contract but not exported: {set(promised) - set(exported)}")
    for name, family in exported.items():
        spec = promised[name]
        assert family.type == spec.kind, name
        for s in family.samples:
            labels = set(s.labels) - ({"status"} if name == "maint_check_runs" else set())
            assert labels <= set(spec.labels), f"{s.name} has undeclared labels {labels - set(spec.labels)}"


def test_exposition_names_follow_conventions(exposition_text):
    for family in contract():
        assert family.name.startswith("maint_")
        assert re.fullmatch(r"[a-z_]+", family.name)
        assert "check" not in family.labels or family.labels[0] == "check"


@pytest.mark.skipif(not have("promtool"), reason="promtool missing (Debian package prometheus)")
def test_exposition_promtool_check_metrics_prints_nothing(exposition_text):
    out = subprocess.run(["promtool", "check", "metrics"], input=exposition_text, capture_output=True, text=True)
    assert (out.returncode, out.stdout, out.stderr) == (0, "", "")


def test_exposition_gzip_variant_decodes_to_same_body():
    import gzip
    exposition = Exposition(AgentState("test", 1))
    exposition.refresh()
    plain, _ = exposition.body(False)
    zipped, was = exposition.body(True)
    assert was and gzip.decompress(zipped) == plain
