"""Every child process the agent starts, while it runs, so shutdown can end what checks left running.

Checks and actions start plugins, `psql`, `smartctl`, `journalctl`, `systemctl`
in their own process group (a timeout kills the child and whatever it
started). Their threads cannot be killed, so a child still running when the
agent exits would be orphaned, in a session of its own that no Ctrl-C reaches.
Each child is therefore started through `popen`, which records its process
group until it is reaped; at shutdown the daemon calls `stop_all`, which
refuses new children and ends every recorded group: SIGTERM, then SIGKILL for
what is still there after a short wait.

Who started a child (`check NAME` or `action NAME`) comes from `owner`, set by
the runner and the remediator around each run, and is named in the log.
"""

from __future__ import annotations

import contextvars
import errno
import os
import signal
import subprocess
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

from agent.plugin.faults import agent_resources

STOP_WAIT_SECONDS = 2.0   # between SIGTERM and SIGKILL at shutdown

_OWNER: contextvars.ContextVar[tuple[str, str] | None] = contextvars.ContextVar("child_owner", default=None)


@dataclass(frozen=True)
class Child:
    """A running child: its pid, which is also its process group id, and who started it."""

    pid: int
    program: str
    owner: tuple[str, str] | None   # ("check", "nightly-restore"), ("action", "restart-beauth")


@dataclass(frozen=True)
class Stopped:
    """A child group ended at shutdown, and the last signal it needed."""

    child: Child
    signal: str


class _Registry:
    def __init__(self):
        self.lock = threading.Lock()
        self.running: dict[int, Child] = {}
        self.closed = False


_REGISTRY = _Registry()


class owner:
    """`with owner(kind, name):` children started inside the block (in this thread) belong to `kind` `name`
    (check, action). A class rather than a generator: it wraps every check run (a third of the cost)."""

    __slots__ = ("_owner", "_token")

    def __init__(self, kind: str, name: str):
        self._owner = (kind, name)

    def __enter__(self) -> None:
        self._token = _OWNER.set(self._owner)

    def __exit__(self, *exc) -> None:
        _OWNER.reset(self._token)


@contextmanager
def popen(argv: list[str], **kwargs) -> Iterator[subprocess.Popen]:
    """Given an argv and `subprocess.Popen` keywords, yield the started child in a process group of its own.

    The child is recorded until the block ends; leaving the block while it still runs (an exception, a
    deadline) kills its whole group and reaps it. Raise OSError when the program cannot start, or
    ECANCELED once the agent is shutting down (a check must not start children that nobody will end).
    """
    _refuse_when_closed()
    with agent_resources():     # EMFILE/ENOMEM/EAGAIN here is the agent's shortage, not the program's
        proc = subprocess.Popen(argv, start_new_session=True, **kwargs)
    child = Child(proc.pid, str(argv[0]), _OWNER.get())
    with _REGISTRY.lock:
        refused = _REGISTRY.closed
        if not refused:
            _REGISTRY.running[proc.pid] = child
    try:
        if refused:     # shutdown began while it was starting: it is ours to end
            _refuse_when_closed()
        yield proc
    finally:
        try:
            if proc.poll() is None:
                kill_group(proc)
            for pipe in (proc.stdin, proc.stdout, proc.stderr):
                if pipe is not None and not pipe.closed:
                    pipe.close()
        finally:
            with _REGISTRY.lock:
                _REGISTRY.running.pop(proc.pid, None)


def kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL the child's process group (it and everything it started), then reap the child."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def running() -> list[Child]:
    with _REGISTRY.lock:
        return list(_REGISTRY.running.values())


def stop_all(wait_seconds: float = STOP_WAIT_SECONDS) -> list[Stopped]:
    """Refuse new children, then end every recorded group: SIGTERM, and SIGKILL after `wait_seconds` for the
    groups still there. Return one `Stopped` per group signalled, in start order."""
    with _REGISTRY.lock:
        _REGISTRY.closed = True
        children = list(_REGISTRY.running.values())
    last: dict[int, str] = {}
    for child in children:
        if _signal_group(child.pid, signal.SIGTERM):
            last[child.pid] = "SIGTERM"
    deadline = time.monotonic() + wait_seconds
    while any(_alive(child) for child in children if child.pid in last) and time.monotonic() < deadline:
        time.sleep(0.02)
    # a group with no member left refuses the signal: SIGKILL is named only where something was still there
    for child in children:
        if child.pid in last and _signal_group(child.pid, signal.SIGKILL):
            last[child.pid] = "SIGKILL"
    return [Stopped(child, last[child.pid]) for child in children if child.pid in last]


def reopen() -> None:
    """Accept children again (tests, and a CLI that runs the daemon twice in one process)."""
    with _REGISTRY.lock:
        _REGISTRY.closed = False


def _refuse_when_closed() -> None:
    if _REGISTRY.closed:
        raise OSError(errno.ECANCELED, "the agent is shutting down")


def _alive(child: Child) -> bool:
    """Whether the group still has a member: the leader may be gone while a grandchild that ignores SIGTERM
    lives on (a leader that died stays a member until its starter reaps it, which takes a moment)."""
    try:
        os.killpg(child.pid, 0)
    except ProcessLookupError:
        return False
    return True


def _signal_group(pgid: int, sig: int) -> bool:
    try:
        os.killpg(pgid, sig)
        return True
    except ProcessLookupError:
        return False
