"""The environment of every child process the agent starts: built from nothing, never copied from the agent's.

The agent's own environment holds what no plugin, command or client tool
should see: secrets given as `${env:NAME}` references, systemd's
CREDENTIALS_DIRECTORY (the path to every credential), NOTIFY_SOCKET and
WATCHDOG_* (a child could tell systemd the agent is ready or alive), libpq's
PGPASSWORD. A child gets PATH, English messages in the C locale (reasons
quoted from tools read the same everywhere), and only the names its caller
lists: fixed values, or names explicitly passed on from the agent's
environment (`passed`), which can never be one of the agent's own.
"""

from __future__ import annotations

import os
from typing import Iterable, Mapping

SAFE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# the agent's own: never passed on, even when a configuration names them
AGENT_ONLY = frozenset({"CREDENTIALS_DIRECTORY", "NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "LISTEN_FDS",
                        "LISTEN_PID", "LISTEN_FDNAMES", "INVOCATION_ID", "JOURNAL_STREAM", "PGPASSWORD", "PGPASSFILE",
                        "PGSERVICEFILE", "MAINT_AGENT_CONFIG"})


def child_env(fixed: Mapping[str, str] | None = None, passed: Iterable[str] = ()) -> dict[str, str]:
    """Given fixed values and names to copy from the agent's environment, return a child's whole environment.

    Raise ValueError for a `passed` name in AGENT_ONLY (a caller bug or a
    configuration that tries to hand the agent's credentials to a child).
    """
    names = list(passed)
    refused = sorted(set(names) & AGENT_ONLY)
    if refused:
        raise ValueError(f"{', '.join(refused)} belong to the agent and are never passed to a child")
    env = {"PATH": SAFE_PATH, "LANG": "C", "LC_ALL": "C"}
    env.update({name: os.environ[name] for name in names if name in os.environ})
    env.update(fixed or {})
    return env
