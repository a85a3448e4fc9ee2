"""agent.plugin.children: the child processes of checks are known while they run, and shutdown ends them.

Real children (sh, sleep) in this process; the daemon-level story (SIGTERM, Ctrl-C, nothing orphaned) is in
test_daemon.py.
"""

from __future__ import annotations

import threading
import time

import pytest

from agent.plugin import children
from checks.base import CheckContext
from checks.bounded_process import run_bounded
from checks.nagios import NagiosCheck
from tests.conftest import wait_for


@pytest.fixture
def registry():
    """stop_all closes the process-wide registry: open it again for the tests that follow."""
    yield
    children.reopen()


def test_children_run_bounded_child_recorded_with_owner_while_it_runs_then_forgotten(tmp_path):
    release = tmp_path / "release"

    def run():
        with children.owner("check", "slow-plugin"):
            run_bounded(["/bin/sh", "-c", f"while [ ! -e {release} ]; do sleep 0.02; done"],
                        deadline=time.monotonic() + 10)

    thread = threading.Thread(target=run)
    thread.start()
    seen = wait_for(lambda: [c for c in children.running() if c.program == "/bin/sh"], what="the child")
    release.touch()
    thread.join()
    assert seen[0].owner == ("check", "slow-plugin")
    assert not [c for c in children.running() if c.pid == seen[0].pid]


def test_children_deadline_kill_forgets_the_child():
    done = run_bounded(["/bin/sleep", "30"], deadline=time.monotonic() + 0.2)
    assert done.timed_out
    assert not [c for c in children.running() if c.program == "/bin/sleep"]


def test_children_stop_all_ends_running_groups_and_refuses_new_children(registry):
    outcome = {}
    thread = threading.Thread(target=lambda: outcome.update(done=run_bounded(
        ["/bin/sh", "-c", "sleep 30 & wait"], deadline=time.monotonic() + 30)))
    thread.start()
    wait_for(lambda: [c for c in children.running() if c.program == "/bin/sh"], what="the child")
    started = time.monotonic()
    stopped = children.stop_all(wait_seconds=5)
    assert [(s.child.program, s.signal) for s in stopped] == [("/bin/sh", "SIGTERM")]
    thread.join(5)
    assert time.monotonic() - started < 3
    assert outcome["done"].returncode == -15

    check = NagiosCheck(NagiosCheck.Options.model_validate(
        {"name": "late", "type": "nagios", "command": ["/bin/echo", "OK"]}))
    result = check.run(CheckContext(timeout=5))
    assert result.summary == "cannot run /bin/echo: the agent is shutting down"
