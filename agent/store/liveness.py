"""The daemon's heartbeat in the store, so `maint-agent status` can tell whether the agent is running.

The store's newest result alone cannot say it: a stopped agent leaves results that look fine for as long
as nobody compares their age with the schedule. So the daemon's scheduler loop writes one row
(`agent_state`, key `daemon`) every HEARTBEAT_SECONDS: who it is (pid, the process's start time and pid
namespace, so a recycled pid is not mistaken for it), when it started, whether it runs dry, and per check
what only it knows (next due time, interval, when a pending breach turns). A clean stop marks the row
stopped. The CLI reads it with the store's read-only connection:

- stopped, or the pid is gone (or is another process now): not running, at once;
- no heartbeat for LOST_AFTER_SECONDS: not running, or hung when its process is still there;
- otherwise running.

Standard library only (the lean CLI path imports it).
"""

from __future__ import annotations

import json
import os
import socket
from dataclasses import dataclass
from typing import Any

HEARTBEAT_KEY = "daemon"
HEARTBEAT_SECONDS = 10.0
LOST_AFTER_SECONDS = 3 * HEARTBEAT_SECONDS


def process_identity(pid: int | None = None) -> dict[str, Any]:
    """This process (or `pid`) as the heartbeat records it: pid, start time in clock ticks since boot,
    pid namespace, host name."""
    pid = pid or os.getpid()
    return {"pid": pid, "proc_start": _proc_stat(pid)[1], "pid_ns": _pid_namespace(), "host": socket.gethostname()}


def _proc_stat(pid: int) -> tuple[str | None, str | None]:
    """(state, start time) of a process from /proc/PID/stat; (None, None) when it cannot be read."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None, None
    return fields[0], (fields[19] if len(fields) > 19 else None)   # fields 3 and 22 of proc(5)


def _pid_namespace() -> str | None:
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return None


def encode(record: dict[str, Any]) -> str:
    return json.dumps(record, separators=(",", ":"), allow_nan=False)


def read(conn) -> dict[str, Any] | None:
    """The latest heartbeat record from a store connection; None when the daemon never wrote one."""
    try:
        row = conn.execute("SELECT value FROM agent_state WHERE key = ?", (HEARTBEAT_KEY,)).fetchone()
    except Exception:   # sqlite3.Error: a store from before the table existed
        return None
    if not row:
        return None
    try:
        record = json.loads(row[0])
    except ValueError:
        return None
    return record if isinstance(record, dict) else None


def process_alive(record: dict[str, Any]) -> bool | None:
    """Whether the recorded daemon process still exists: None when this process cannot tell (another
    host's store, another pid namespace)."""
    pid = record.get("pid")
    if not isinstance(pid, int) or record.get("host") != socket.gethostname():
        return None
    if record.get("pid_ns") is None or record.get("pid_ns") != _pid_namespace():
        return None
    state, started = _proc_stat(pid)
    if state in ("Z", "X"):   # killed, not yet reaped by its parent
        return False
    if started is not None:
        return record.get("proc_start") in (None, started)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass(frozen=True)
class Liveness:
    """What the heartbeat says about the daemon: `state` is running, stopped, gone, hung, lost or unknown."""

    running: bool
    state: str
    detail: str


def liveness(record: dict[str, Any] | None, now: float, alive: bool | None = None) -> Liveness:
    """Given the heartbeat record, the time and whether its process exists (None: cannot tell), return
    whether the daemon is running and why that is believed."""
    from agent.timefmt import ago
    if record is None:
        return Liveness(False, "unknown", "no heartbeat in the store (has this agent version run with this config?)")
    beat, pid = float(record.get("beat") or 0.0), record.get("pid")
    if record.get("stopped"):
        return Liveness(False, "stopped", f"stopped {ago(now - float(record['stopped']))} ago")
    if alive is False:
        return Liveness(False, "gone", f"pid {pid} is gone; last heartbeat {ago(now - beat)} ago, no clean stop")
    if now - beat > LOST_AFTER_SECONDS:
        if alive:
            return Liveness(False, "hung", f"pid {pid} exists but wrote no heartbeat for {ago(now - beat)}")
        return Liveness(False, "lost", f"no heartbeat for {ago(now - beat)}")
    started = float(record.get("started") or beat)
    return Liveness(True, "running", f"pid {pid}, up {ago(now - started)}")
