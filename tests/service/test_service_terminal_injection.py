"""A hostile plugin's output never drives the operator's terminal: a monitoring-plugins style script prints
an OSC title sequence, a clear-screen CSI, a carriage return that would overwrite what is shown and a C1
CSI, and every place that shows it (`status`, `history` as table, CSV and JSON, `history export`, `checks`,
`check NAME`, `log list`, `report`, the daemon's log) carries a visible escape instead of the raw bytes. The daemon's
log also reads as logfmt: every line parses, no key twice."""

from __future__ import annotations

import json
import re
from datetime import date

import pytest

from tests.conftest import wait_for
from tests.fixtures.logfmt import agent_lines, duplicate_keys

PLUGIN = r"""#!/bin/sh
# a check_* plugin gone rogue: its output is what the target host said
printf 'CRITICAL - \033]0;pwned\007title \033[2Jcleared\rback \302\233csi \233raw\ttab|load=1;2;3\n'
printf 'second line \033[31mred\n'
exit 2
"""
RAW_CONTROL = re.compile(rb"[\x00-\x08\x0b-\x1f\x7f]|\xc2[\x80-\x9f]|(?<![\xc2-\xf4])[\x80-\x9f]")
"""C0 (newline and tab allowed in the line structure only), DEL, C1 as UTF-8, and a stray C1 byte."""


def raw_controls(data: bytes) -> list[bytes]:
    return [m.group() for m in RAW_CONTROL.finditer(data)]


@pytest.fixture
def hostile(agent_factory, tmp_path):
    plugin = tmp_path / "check_rogue"
    plugin.write_text(PLUGIN)
    plugin.chmod(0o755)
    agent = agent_factory(f"""
        agent: {{state_dir: "{{state}}"}}
        http: {{listen: "127.0.0.1:{{port}}"}}
        checks:
          - {{name: rogue, type: nagios, every: 1s, command: ["{plugin}"]}}
    """)
    agent.start()
    wait_for(lambda: 'maint_check_runs_total{check="rogue",status="critical"} 2.0' in agent.metrics(), 20,
             what="the plugin to fail twice")
    return agent


def test_terminal_injection_plugin_output_reaches_no_terminal_raw(hostile):
    today = date.today().isoformat()
    pasted = hostile.cli("log", "add", "pasted title \x1b]0;pwned\x07 from a terminal\r\x9b2J")
    assert pasted.returncode == 0, pasted.stderr
    outputs = {
        "status": hostile.cli("status"),
        "status json": hostile.cli("status", "--format", "json"),
        "checks": hostile.cli("checks"),
        "history": hostile.cli("history"),
        "history csv": hostile.cli("history", "--format", "csv"),
        "history json": hostile.cli("history", "--format", "json"),
        "history export csv": hostile.cli("history", "export", "--format", "csv"),
        "history export jsonl": hostile.cli("history", "export"),
        "check NAME": hostile.cli("check", "rogue"),
        "log list": hostile.cli("log", "list"),
        "log list csv": hostile.cli("log", "list", "--format", "csv"),
        "report": hostile.cli("report", "--period", "day", "--from", today),
        "report csv": hostile.cli("report", "--period", "day", "--from", today, "--format", "csv"),
    }
    for what, done in outputs.items():
        assert done.returncode in (0, 1), f"{what}: {done.stderr}"
        shown = "title" in done.stdout or "pasted" in done.stdout or what in ("checks", "report", "report csv")
        assert shown, f"{what} shows the hostile text: {done.stdout}"
        assert not raw_controls(done.stdout.encode()), f"{what} writes raw control bytes: {done.stdout!r}"
    assert "\\x1b]0;pwned\\x07title \\x1b[2Jcleared\\x0dback \\x9bcsi" in outputs["status"].stdout, \
        "the escapes are visible, as \\xNN"
    assert "\\x09tab" in outputs["history"].stdout, "a tab would break the table's columns"
    stored = json.loads(outputs["status json"].stdout)["checks"][0]["summary"]
    assert stored.startswith("CRITICAL - \x1b]0;pwned\x07title"), "JSON escapes them and keeps the text as it was"

    assert hostile.stop() == 0
    log = hostile.log.read_bytes()
    assert b"check=rogue" in log and b"pwned" in log
    assert not raw_controls(log), f"raw control bytes in the log: {raw_controls(log)}"


def test_terminal_injection_daemon_log_is_logfmt_with_each_key_once(hostile):
    assert hostile.stop() == 0
    lines = agent_lines(hostile.log.read_text())
    summaries = [dict(line)["summary"] for line in lines if ("check", "rogue") in line and "summary" in dict(line)]
    assert summaries and summaries[0].startswith("CRITICAL - \\x1b]0;pwned\\x07title"), summaries
    for line in lines:
        assert not duplicate_keys(line), line
