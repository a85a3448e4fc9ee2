"""Shared field types: one rule each, the same error wherever a model uses it."""

from __future__ import annotations

import pytest
from pydantic import TypeAdapter, ValidationError

from agent.plugin.fields import AbsoluteArgv, AbsoluteGlob, PositiveDuration, Regex, Severity
from agent.plugin.result import cap_summary


def _error(kind, value) -> str:
    with pytest.raises(ValidationError) as caught:
        TypeAdapter(kind).validate_python(value)
    return caught.value.errors()[0]["msg"]


def test_absolute_argv_program_named_from_the_root():
    assert TypeAdapter(AbsoluteArgv).validate_python(["/usr/bin/true", "x"]) == ("/usr/bin/true", "x")
    assert _error(AbsoluteArgv, ["true"]) == ("Value error, program 'true' must be an absolute path (argv list, "
                                              "no shell, no PATH lookup)")
    assert "at least 1 item" in _error(AbsoluteArgv, [])


def test_regex_compiled_at_config_check():
    assert TypeAdapter(Regex).validate_python(r"\bERROR\b") == r"\bERROR\b"
    assert _error(Regex, "(") == "Value error, invalid regular expression: missing ), unterminated subpattern " \
                                 "at position 0"


def test_severity_p0_to_p3_only():
    assert TypeAdapter(Severity).validate_python("P0") == "P0"
    assert "'P0', 'P1', 'P2' or 'P3'" in _error(Severity, "P4")


def test_absolute_glob_and_positive_duration():
    assert TypeAdapter(AbsoluteGlob).validate_python("/backups/*/x.gz") == "/backups/*/x.gz"
    assert _error(AbsoluteGlob, "backups/*") == "Value error, 'backups/*' must be an absolute path or glob"
    assert TypeAdapter(PositiveDuration).validate_python("1h") == 3600.0
    assert _error(PositiveDuration, "0s") == "Value error, must be above 0"


def test_cap_summary_marks_the_cut():
    assert cap_summary("short") == "short"
    assert cap_summary("x" * 400) == "x" * 299 + "…"
    assert cap_summary("abcdef", 4) == "abc…"
