"""Failures of the agent itself, told apart from failures of what a check watches.

A check that cannot open a socket because the agent has used up its file descriptors says
nothing about the database it was about to ask: reporting that as CRITICAL (and restarting the
database for it) turns an attack on the agent, or a leak in it, into an outage of the host.
So such a run is UNKNOWN with "agent out of resources: …", marked in its details (`agent_fault`)
so the remediation policy ignores it, and counted per resource.
"""

from __future__ import annotations

import errno
import os
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

from agent.plugin.result import CheckResult

FAULT_DETAIL = "agent_fault"   # details key of a result the agent's own shortage caused; value: the resource
RESOURCES = ("open_files", "memory", "tasks")   # maint_agent_resource_errors_total{resource}; tasks: threads, processes

_ERRNO_RESOURCE = {
    errno.EMFILE: "open_files",   # this process's RLIMIT_NOFILE (LimitNOFILE=)
    errno.ENFILE: "open_files",   # the host's file table
    errno.ENOMEM: "memory",
    errno.ENOBUFS: "memory",      # socket buffers
    errno.EAGAIN: "tasks",        # fork()/clone() at RLIMIT_NPROC or TasksMax=
}
_THREAD_START_TEXT = ("can't start new thread", "can't create new thread")
_CHAIN_LIMIT = 16


@dataclass(frozen=True)
class AgentFault:
    """Which resource ran out (`RESOURCES`) and how the system said it: 'Too many open files (EMFILE)'."""

    resource: str
    reason: str

    @property
    def summary(self) -> str:
        return f"agent out of resources: {self.reason}"

    def result(self) -> CheckResult:
        """The run's result: UNKNOWN, never CRITICAL, and marked so that no action fires on it."""
        return CheckResult.unknown(self.summary, **{FAULT_DETAIL: self.resource})


class OutOfResources(Exception):
    """Raised by the checks' shared helpers where the agent allocates (a socket, a child process).

    Deliberately not an OSError: a check's `except OSError` (which turns a refused connect into
    CRITICAL for the target) cannot catch it, so it reaches the runner, which reports the fault.
    """

    def __init__(self, fault: AgentFault):
        super().__init__(fault.reason)
        self.fault = fault


@contextmanager
def agent_resources() -> Iterator[None]:
    """Around the agent's own allocations (socket(), getaddrinfo, starting a child): an OSError that means
    the agent is short of something leaves as OutOfResources; any other passes unchanged."""
    try:
        yield
    except OSError as exc:
        fault = agent_fault(exc)
        if fault is None:
            raise
        raise OutOfResources(fault) from exc


def agent_fault(exc: BaseException) -> AgentFault | None:
    """Given an exception a check raised or caught, return the agent's own shortage behind it, or None.

    Looks through the chain of causes, since client libraries wrap the OSError (httpx's
    ConnectError, redis-py's ConnectionError): EMFILE/ENFILE, ENOMEM/ENOBUFS, EAGAIN from
    fork, MemoryError, and the RuntimeError of a thread that could not be started.
    """
    seen: set[int] = set()
    link: BaseException | None = exc
    while link is not None and id(link) not in seen and len(seen) < _CHAIN_LIMIT:
        seen.add(id(link))
        fault = _own_fault(link)
        if fault is not None:
            return fault
        link = link.__cause__ or link.__context__
    return None


def _own_fault(exc: BaseException) -> AgentFault | None:
    if isinstance(exc, OutOfResources):
        return exc.fault
    if isinstance(exc, MemoryError):
        return AgentFault("memory", "out of memory (MemoryError)")
    if isinstance(exc, RuntimeError) and any(text in str(exc) for text in _THREAD_START_TEXT):
        return AgentFault("tasks", f"cannot start a thread ({exc})")
    if isinstance(exc, OSError) and exc.errno in _ERRNO_RESOURCE:
        return errno_fault(exc.errno)
    return None


def errno_fault(code: int) -> AgentFault | None:
    """Given an errno, return the fault it means for the agent, or None when it is not a shortage."""
    resource = _ERRNO_RESOURCE.get(code)
    if resource is None:
        return None
    return AgentFault(resource, f"{os.strerror(code)} ({errno.errorcode[code]})")


def strerror_fault(text: str) -> AgentFault | None:
    """Given the text of a C library's error ('Too many open files'), return its fault, or None.

    For libraries that report the errno only as words (libpq: 'could not create socket: Too
    many open files'); the caller decides that the words describe the agent's own call.
    """
    text = text.strip().rstrip(".")
    code = next((code for code in _ERRNO_RESOURCE if os.strerror(code) == text), None)
    return errno_fault(code) if code is not None else None


def fault_of(details: dict | None) -> str | None:
    """Given a result's details, return the resource the agent ran out of, or None for a real result."""
    value = (details or {}).get(FAULT_DETAIL)
    return value if value in RESOURCES else None
