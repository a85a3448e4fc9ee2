"""Log lines for journald: under systemd (stderr is the stream $JOURNAL_STREAM names) a syslog priority
prefix and no timestamp, so `journalctl -p err` works; elsewhere an ISO timestamp; secrets masked either way."""

from __future__ import annotations

import os
import re
import subprocess
import sys

from tests.conftest import REPO

SCRIPT = """
from agent.plugin import logs
from agent.plugin.redact import REDACT
REDACT.add(["log-Secret-77aa"])
logs.setup("debug")
logs.event("check.failed", "error", check="db", error="auth failed for password log-Secret-77aa")
logs.event("check.status_changed", "warning", check="disk")
logs.event("agent.started", checks=3)
logs.event("http.connection_failed", "debug", client="127.0.0.1")
"""


def run(tmp_path, journal_stream: str | None) -> list[str]:
    log = tmp_path / "stderr.log"
    with open(log, "wb") as stderr:
        env = {k: v for k, v in os.environ.items() if k != "JOURNAL_STREAM"}
        if journal_stream == "match":
            st = os.fstat(stderr.fileno())
            env["JOURNAL_STREAM"] = f"{st.st_dev}:{st.st_ino}"
        elif journal_stream is not None:
            env["JOURNAL_STREAM"] = journal_stream
        subprocess.run([sys.executable, "-c", SCRIPT], cwd=REPO, stderr=stderr, env=env, check=True, timeout=60)
    return log.read_text().splitlines()


def test_logs_under_journald_carry_priority_and_no_timestamp(tmp_path):
    lines = run(tmp_path, "match")
    assert lines == ["<3>level=error event=check.failed check=db error=\"auth failed for password ***\"",
                     "<4>level=warning event=check.status_changed check=disk",
                     "<6>level=info event=agent.started checks=3",
                     "<7>level=debug event=http.connection_failed client=127.0.0.1"]


def test_logs_elsewhere_start_with_an_iso_timestamp(tmp_path):
    for stream in (None, "1:2"):   # unset, or inherited by a process whose stderr went elsewhere
        lines = run(tmp_path, stream)
        assert len(lines) == 4
        for line in lines:
            assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}[+-]\d\d:\d\d level=\w+ event=", line), line
        assert "log-Secret-77aa" not in "".join(lines)
