"""The daemon's log lines are logfmt a parser can trust: each key once, no control character from a
check's text, the secret redactor applied."""

from __future__ import annotations

import logging

import pytest

from agent.plugin import logs
from agent.plugin.redact import REDACT
from tests.fixtures.logfmt import agent_lines, duplicate_keys, pairs


@pytest.fixture
def log_text(capsys):
    """Call it to start logging to the captured stderr (inside the test: capsys swaps streams between
    setup and call), call what it returns for the text logged since."""

    def start():
        logs.setup("debug")
        return lambda: capsys.readouterr().err

    yield start
    logging.getLogger("maint-agent").handlers[:] = []


def test_logs_field_named_like_a_line_key_is_renamed_not_repeated(log_text):
    logged = log_text()
    logs.event("action.ran", "info", event="trigger", level="high", check="db", field_event="x")
    [line] = agent_lines(logged())
    assert not duplicate_keys(line)
    assert line == [("level", "info"), ("event", "action.ran"), ("field_event", "trigger"),
                    ("field_level", "high"), ("check", "db"), ("field_field_event", "x")]


def test_logs_control_characters_in_values_names_and_messages_are_escaped(log_text):
    logged = log_text()
    summary = "CRITICAL \x1b]0;pwned\x07 \x1b[2J\rover \x9bcsi\tend\nnext"
    logs.event("check.status_changed\x1b[2J", "warning", check="rogue", summary=summary, **{"k\x07ey": "v"})
    logging.getLogger("maint-agent").warning("free text \x1b[31m\r")
    text = logged()
    assert not any(ord(c) < 0x20 and c != "\n" or 0x7F <= ord(c) < 0xA0 for c in text), repr(text)
    event, free = agent_lines(text)
    fields = dict(event)
    assert fields["event"] == "check.status_changed\\x1b[2J" and "k_ey" in fields
    assert fields["summary"] == "CRITICAL \\x1b]0;pwned\\x07 \\x1b[2J\\x0dover \\x9bcsi\\x09end\nnext"
    assert free == pairs("free text \\x1b[31m\\x0d")


def test_logs_values_are_redacted_before_quoting(log_text):
    logged = log_text()
    REDACT.add(["logs-Secret-4242"])
    logs.event("check.failed", "error", error='auth "logs-Secret-4242" refused')
    [line] = agent_lines(logged())
    assert dict(line)["error"] == 'auth "***" refused'
