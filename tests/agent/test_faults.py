"""The agent's own shortage is not the target's failure: the classifier, and real checks run in a process
that has used up its file descriptors (RLIMIT_NOFILE lowered in a child, as LimitNOFILE= would)."""

from __future__ import annotations

import errno
import json
import subprocess
import sys
import textwrap

import pytest

from agent.plugin.faults import FAULT_DETAIL, AgentFault, OutOfResources, agent_fault, fault_of, strerror_fault
from agent.plugin.result import Status
from tests.conftest import REPO


def _wrapped(inner: BaseException, outer: type[Exception]) -> Exception:
    """`outer` raised while handling `inner`, as httpx and redis-py wrap a socket's OSError."""
    try:
        try:
            raise inner
        except BaseException:
            raise outer("connection failed")
    except Exception as exc:
        return exc


@pytest.mark.parametrize("exc, resource, reason", [
    (OSError(errno.EMFILE, "Too many open files"), "open_files", "Too many open files (EMFILE)"),
    (OSError(errno.ENFILE, "Too many open files in system"), "open_files", "Too many open files in system (ENFILE)"),
    (OSError(errno.ENOMEM, "Cannot allocate memory"), "memory", "Cannot allocate memory (ENOMEM)"),
    (BlockingIOError(errno.EAGAIN, "Resource temporarily unavailable"), "tasks",
     "Resource temporarily unavailable (EAGAIN)"),
    (MemoryError(), "memory", "out of memory (MemoryError)"),
    (RuntimeError("can't start new thread"), "tasks", "cannot start a thread (can't start new thread)"),
], ids=["emfile", "enfile", "enomem", "eagain", "memoryerror", "thread"])
def test_agent_fault_own_shortage_names_resource_and_errno(exc, resource, reason):
    fault = agent_fault(exc)
    assert fault == AgentFault(resource, reason)
    result = fault.result()
    assert result.status is Status.UNKNOWN
    assert result.summary == f"agent out of resources: {reason}"
    assert fault_of(result.details) == resource


def test_agent_fault_found_behind_a_client_library_wrapper():
    assert agent_fault(_wrapped(OSError(errno.EMFILE, "Too many open files"), ConnectionError)).resource == "open_files"


@pytest.mark.parametrize("exc", [
    ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused"), TimeoutError("timed out"),
    OSError(errno.EHOSTUNREACH, "No route to host"), RuntimeError("dictionary changed size during iteration"),
    ValueError("bad"), _wrapped(ConnectionResetError(errno.ECONNRESET, "reset"), ConnectionError),
], ids=["refused", "timeout", "unreachable", "runtime", "value", "wrapped-reset"])
def test_agent_fault_target_failures_are_not_faults(exc):
    assert agent_fault(exc) is None


def test_agent_fault_out_of_resources_carries_its_fault_and_is_not_an_oserror():
    fault = AgentFault("open_files", "Too many open files (EMFILE)")
    exc = OutOfResources(fault)
    assert not isinstance(exc, OSError)   # a probe's `except OSError` must not turn it into CRITICAL
    assert agent_fault(exc) is fault


def test_agent_fault_cyclic_cause_chain_terminates():
    a, b = ValueError("a"), ValueError("b")
    a.__context__, b.__context__ = b, a
    assert agent_fault(a) is None


def test_strerror_fault_reads_words_only_exactly():
    assert strerror_fault(" Too many open files\n").reason == "Too many open files (EMFILE)"
    assert strerror_fault("Too many open files in system").reason == "Too many open files in system (ENFILE)"
    assert strerror_fault("Connection refused") is None


def test_fault_of_ignores_unmarked_and_unknown_values():
    assert fault_of(None) is None and fault_of({}) is None
    assert fault_of({FAULT_DETAIL: "disk"}) is None


CHILD = textwrap.dedent("""
    import json, os, resource, socket, sys
    from checks import CHECK_TYPES
    from checks.base import CheckContext
    from agent.plugin.faults import agent_fault
    import agent.runner, httpx, psycopg, psycopg.rows, psycopg.conninfo, redis, redis.backoff, redis.retry

    def make(kind, **options):
        cls = CHECK_TYPES[kind]
        return cls(cls.Options.model_validate({"name": kind.replace("_", "-"), "type": kind, **options}))

    listener = socket.create_server(("127.0.0.1", 0))   # a target that is up: only the agent is short
    target = f"127.0.0.1:{listener.getsockname()[1]}"
    checks = [make("tcp", target=target), make("network_latency", targets=[target]),
              make("tls_cert", target=target), make("http", url=f"http://{target}/"),
              make("redis", host="127.0.0.1", port=listener.getsockname()[1]),
              make("postgres", dsn=f"host=127.0.0.1 port={listener.getsockname()[1]} dbname=x connect_timeout=2"),
              make("nagios", command=["/bin/echo", "OK"])]
    resource.setrlimit(resource.RLIMIT_NOFILE, (len(os.listdir("/proc/self/fd")) + 8, resource.getrlimit(
        resource.RLIMIT_NOFILE)[1]))
    held = []
    try:
        while True:
            held.append(os.open("/dev/null", os.O_RDONLY))
    except OSError:
        pass
    out = {}
    for check in checks:
        try:   # what agent.runner does with a check that raises
            result = check.run(CheckContext(timeout=3))
        except Exception as exc:
            fault = agent_fault(exc)
            result = fault.result() if fault else None
        out[check.TYPE] = [result.status.name, result.summary, result.details] if result else repr(exc)
    print(json.dumps(out))
""")


def test_checks_out_of_descriptors_are_unknown_agent_fault_not_critical_for_the_target():
    proc = subprocess.run([sys.executable, "-c", CHILD], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    results = json.loads(proc.stdout)
    for kind, (status, summary, details) in results.items():
        assert (status, summary) == ("UNKNOWN", "agent out of resources: Too many open files (EMFILE)"), kind
        assert details == {FAULT_DETAIL: "open_files"}, kind
