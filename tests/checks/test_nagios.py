"""Nagios-compatible plugins run for real: Debian's monitoring-plugins and small shell commands.

The operator story: any plugin from the Nagios world can be dropped in; its exit
code is the status, its perfdata become samples in base units, and a plugin that
hangs or floods its output cannot hang or flood the agent.
"""

from __future__ import annotations

import gc
import itertools
import os
import socket
import time
import warnings

import psutil
import pytest
from pydantic import ValidationError

from agent.evaluate import WindowState, evaluate
from agent.plugin.result import CheckResult, Status
from checks.base import CheckContext
from checks.nagios import OUTPUT_CAP_BYTES, SUMMARY_CAP_CHARS, NagiosCheck, parse_perfdata
from tests.conftest import wait_for

PLUGINS = "/usr/lib/nagios/plugins"
_unique = itertools.count(1)


def plugin(name: str) -> str:
    path = os.path.join(PLUGINS, name)
    if not os.access(path, os.X_OK):
        pytest.skip(f"{path} missing (Debian package monitoring-plugins-basic)")
    return path


def nagios(*command: str, **options) -> NagiosCheck:
    return NagiosCheck(NagiosCheck.Options.model_validate(
        {"name": "plugin", "type": "nagios", "command": list(command), **options}))


def run(check: NagiosCheck, timeout: float = 10.0) -> CheckResult:
    """Run the check; fail when it leaves a file (the plugin's pipe) unclosed behind it."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        result = check.run(CheckContext(timeout=timeout))
        gc.collect()
    leaks = [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)]
    assert not leaks, f"run left resources open: {leaks}"
    return result


def perf(result: CheckResult) -> dict[str, tuple[float, str]]:
    """Map perfdata labels to (value, unit)."""
    return {s.label("label"): (s.value, s.label("unit")) for s in result.samples if s.name == "perfdata_value"}


def exit_code(result: CheckResult) -> float:
    return next(s.value for s in result.samples if s.name == "exit_code")


def unique_sleep() -> str:
    """A sleep duration nobody else on the host uses, so its argv identifies our processes."""
    return f"60.{os.getpid()}{next(_unique)}"


def processes_with_argv(argv: list[str]) -> list[int]:
    found = []
    for proc in psutil.process_iter(["cmdline", "status"]):
        if proc.info["status"] != psutil.STATUS_ZOMBIE and proc.info["cmdline"] == argv:
            found.append(proc.pid)
    return found


# --- exit code and text -----------------------------------------------------------------------

@pytest.mark.parametrize(("code", "status", "text"), [
    (0, Status.OK, "OK: all fine"), (1, Status.WARNING, "WARNING: all fine"),
    (2, Status.CRITICAL, "CRITICAL: all fine"), (3, Status.UNKNOWN, "UNKNOWN: all fine")])
def test_nagios_check_dummy_exit_code_is_status_with_text(code, status, text):
    result = run(nagios(plugin("check_dummy"), str(code), "all fine"))
    assert result.status is status
    assert result.summary == text
    assert exit_code(result) == code
    assert result.details["output"] == text + "\n"
    assert evaluate(nagios("/bin/true"), result, WindowState(), time.time()).status is status


def test_nagios_exit_code_outside_convention_is_unknown():
    result = run(nagios("/bin/sh", "-c", "echo 'weird exit'; exit 7"))
    assert result.status is Status.UNKNOWN
    assert result.summary == "weird exit"
    assert exit_code(result) == 7


def test_nagios_no_output_summary_names_exit_code():
    result = run(nagios("/bin/false"))
    assert result.status is Status.WARNING
    assert result.summary == "exit code 1, no output"


def test_nagios_plugin_killed_by_signal_is_unknown():
    result = run(nagios("/bin/sh", "-c", "echo partial; kill -9 $$"))
    assert result.status is Status.UNKNOWN
    assert result.summary == "plugin killed by signal 9"


def test_nagios_extra_env_reaches_plugin_with_c_locale():
    result = run(nagios("/bin/sh", "-c", 'echo "OK $GREETING $LANG"', env={"GREETING": "hello"}))
    assert result.summary == "OK hello C"


# --- perfdata from real plugins ---------------------------------------------------------------

def test_nagios_check_load_perfdata_become_labelled_samples():
    result = run(nagios(plugin("check_load"), "-w", "99,99,99", "-c", "99,99,99"))
    assert result.status is Status.OK
    assert result.summary.startswith("LOAD OK")
    data = perf(result)
    assert set(data) == {"load1", "load5", "load15"}
    for label, (value, unit) in data.items():
        assert unit == "count"
        assert value >= 0
    assert data["load15"][0] == pytest.approx(psutil.getloadavg()[2], abs=0.05)
    for s in result.samples:
        if s.name == "perfdata_value":
            assert [k for k, _ in s.labels] == ["label", "unit"]


def test_nagios_check_load_over_threshold_is_critical():
    result = run(nagios(plugin("check_load"), "-w", "0,0,0", "-c", "0,0,0"))
    # a load of exactly 0.00 does not exceed 0; any activity does
    assert result.status in (Status.OK, Status.CRITICAL)
    assert result.summary.startswith("LOAD")


def test_nagios_check_disk_root_perfdata_in_bytes():
    result = run(nagios(plugin("check_disk"), "-w", "10%", "-c", "5%", "-p", "/"))
    assert result.status in (Status.OK, Status.WARNING, Status.CRITICAL)
    assert result.summary.startswith("DISK ")
    value, unit = perf(result)["/"]
    assert unit == "bytes"
    st = os.statvfs("/")
    used = (st.f_blocks - st.f_bfree) * st.f_frsize
    assert value == pytest.approx(used, rel=0.02, abs=256 * 2**20)


def test_nagios_check_tcp_listening_port_reports_time_in_seconds():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        port = sock.getsockname()[1]
        result = run(nagios(plugin("check_tcp"), "-H", "127.0.0.1", "-p", str(port)))
    assert result.status is Status.OK, result.summary
    value, unit = perf(result)["time"]
    assert unit == "seconds"
    assert 0 <= value < 1


def test_nagios_check_tcp_closed_port_is_critical():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))        # bound, not listening: refused
        port = sock.getsockname()[1]
        result = run(nagios(plugin("check_tcp"), "-H", "127.0.0.1", "-p", str(port)))
    assert result.status is Status.CRITICAL
    assert "refused" in result.summary.lower()


def test_nagios_multiline_output_perfdata_after_long_text_parsed():
    script = "printf 'OK - fine|a=1s\\nlong text line\\nmore text|b=2KB c=50%%\\n'"
    result = run(nagios("/bin/sh", "-c", script))
    assert result.summary == "OK - fine"
    assert perf(result) == {"a": (1.0, "seconds"), "b": (2048.0, "bytes"), "c": (0.5, "ratio")}


# --- hung, flooding and broken plugins --------------------------------------------------------

def test_nagios_hung_command_is_unknown_timed_out_and_killed():
    argv = ["/bin/sleep", unique_sleep()]
    t0 = time.monotonic()
    result = run(nagios(*argv), timeout=1.0)
    elapsed = time.monotonic() - t0
    assert result.status is Status.UNKNOWN
    assert "timed out" in result.summary
    assert 0.9 <= elapsed < 3.0       # the deadline, with room for a loaded 2-core machine
    wait_for(lambda: not processes_with_argv(argv), timeout=5, what=f"{argv} to be gone")


def test_nagios_hung_command_children_killed_with_process_group():
    duration = unique_sleep()
    script = f"sleep {duration} & sleep {duration}"
    t0 = time.monotonic()
    result = run(nagios("/bin/sh", "-c", script), timeout=1.0)
    assert time.monotonic() - t0 < 3.0
    assert result.status is Status.UNKNOWN
    assert "timed out" in result.summary
    wait_for(lambda: not processes_with_argv(["sleep", duration])
             and not processes_with_argv(["/bin/sh", "-c", script]),
             timeout=5, what="the shell and both sleeps to be gone")


def test_nagios_plugin_closing_stdout_but_running_still_times_out():
    duration = unique_sleep()
    t0 = time.monotonic()
    result = run(nagios("/bin/sh", "-c", f"exec >&- 2>&-; sleep {duration}"), timeout=1.0)
    assert time.monotonic() - t0 < 1.5
    assert result.status is Status.UNKNOWN
    assert "timed out" in result.summary
    wait_for(lambda: not processes_with_argv(["sleep", duration]), timeout=5, what="the sleep to be gone")


def test_nagios_huge_output_completes_with_output_capped():
    t0 = time.monotonic()
    result = run(nagios("/bin/sh", "-c", "yes | head -c 50000000"), timeout=30)
    assert time.monotonic() - t0 < 15
    assert result.status is Status.OK
    assert result.summary == "y"
    assert len(result.details["output"].encode()) <= OUTPUT_CAP_BYTES
    assert len(result.summary) <= SUMMARY_CAP_CHARS


def test_nagios_huge_single_line_summary_capped():
    result = run(nagios("/bin/sh", "-c", "head -c 5000000 /dev/zero | tr '\\0' x; echo"), timeout=30)
    assert result.status is Status.OK
    assert result.summary == "x" * SUMMARY_CAP_CHARS
    assert len(result.details["output"].encode()) <= OUTPUT_CAP_BYTES


def test_nagios_nonexistent_program_is_unknown_cannot_run():
    result = run(nagios("/nonexistent/check_thing", "-w", "1"))
    assert result.status is Status.UNKNOWN
    assert result.summary.startswith("cannot run /nonexistent/check_thing")
    assert "No such file or directory" in result.summary


def test_nagios_non_executable_program_is_unknown_cannot_run(tmp_path):
    script = tmp_path / "check_noexec"
    script.write_text("#!/bin/sh\necho OK\n")
    script.chmod(0o644)
    result = run(nagios(str(script)))
    assert result.status is Status.UNKNOWN
    assert result.summary.startswith(f"cannot run {script}")


@pytest.mark.parametrize("program", ["check_load", "./check_load", "sh"])
def test_nagios_relative_program_rejected_by_options(program):
    with pytest.raises(ValidationError, match="must be an absolute path"):
        nagios(program, "-w", "1")


def test_nagios_empty_command_rejected_by_options():
    with pytest.raises(ValidationError):
        nagios()


# --- perfdata parsing (pure) ------------------------------------------------------------------

def parsed(text: str) -> list[tuple[str, float, str]]:
    samples, duplicates = parse_perfdata(text)
    assert duplicates == []
    return [(s.label("label"), s.value, s.label("unit")) for s in samples]


@pytest.mark.parametrize(("text", "expected"), [
    ("rta=250ms;100;500", [("rta", 0.25, "seconds")]),
    ("time=0.2s;1;2;0", [("time", 0.2, "seconds")]),
    ("jitter=1500us", [("jitter", 0.0015, "seconds")]),
    ("pl=20%;40;80;0;100", [("pl", 0.2, "ratio")]),
    ("size=10KB", [("size", 10240.0, "bytes")]),
    ("mem=3MB", [("mem", 3 * 2**20, "bytes")]),
    ("disk=2GB", [("disk", 2 * 2**30, "bytes")]),
    ("/=23643291648B;243497277849;257024904396;0;270552530944", [("/", 23643291648.0, "bytes")]),
    ("errors=17c", [("errors", 17.0, "count")]),
    ("users=3;5;10", [("users", 3.0, "count")]),
    ("offset=-0.5s", [("offset", -0.5, "seconds")]),
    ("big=1.5e3", [("big", 1500.0, "count")]),
])
def test_parse_perfdata_converts_units_to_base(text, expected):
    assert parsed(text) == [(label, pytest.approx(value), unit) for label, value, unit in expected]


def test_parse_perfdata_several_values_and_quoted_labels():
    text = "'free space'=512MB;;;0 load1=0.5;5;10;0; 'C:\\ used %'=50%"
    assert parsed(text) == [("free space", 512 * 2**20, "bytes"), ("load1", 0.5, "count"),
                            ("C:\\ used %", 0.5, "ratio")]


def test_parse_perfdata_undetermined_value_skipped():
    assert parsed("rta=U;100;500 pl=0%;20;60") == [("pl", 0.0, "ratio")]


def test_parse_perfdata_empty_text_has_no_samples():
    assert parse_perfdata("") == ([], [])
    assert parse_perfdata("   ") == ([], [])


def test_parse_perfdata_repeated_label_keeps_first_value_and_names_the_label():
    samples, duplicates = parse_perfdata("'rta'=1ms;200;500 pl=0% rta=2ms 'rta'=3ms;200;500 pl=5%")
    assert [(s.label("label"), s.value) for s in samples] == [("rta", pytest.approx(0.001)), ("pl", 0.0)]
    assert duplicates == ["rta", "pl"]


def test_nagios_plugin_repeating_a_perfdata_label_gives_one_sample_and_names_the_repeat(tmp_path):
    """A plugin that prints `'rta'` twice (two hosts' summaries concatenated): one series, the first value,
    and details say which label was repeated instead of a second `perfdata_value{label="rta"}`."""
    script = tmp_path / "check_twice"
    script.write_text("#!/bin/sh\necho \"OK - 2 hosts | 'rta'=1.5ms;200;500 pl=0%;40;80\"\n"
                      "echo \"second host | 'rta'=9.0ms;200;500 pl=0%;40;80\"\n")
    script.chmod(0o755)
    result = run(nagios(str(script)))
    rta = [s for s in result.samples if s.name == "perfdata_value" and s.label("label") == "rta"]
    assert [s.value for s in rta] == [pytest.approx(0.0015)]
    assert result.details["perfdata_duplicates"] == ["rta", "pl"]
    assert len({(s.name, s.labels) for s in result.samples}) == len(result.samples)


def test_nagios_hand_written_plugin_every_perfdata_form_exit_3_unknown_with_samples(tmp_path):
    """A plugin of our own printing every perfdata form the plugin guidelines allow."""
    from tests.metrics_contract import assert_family_contract
    plugin = tmp_path / "check_everything"
    plugin.write_text("#!/bin/sh\n"
                      "echo \"UNKNOWN - cannot tell | 'time spent'=1.5ms;1;2;0;10 hits=5c ratio=85%;80;90;0;100 "
                      "size=1.5GB;;;0 neg=-3;;;; sci=1e3s unknown=U;1;2 raw=42\"\n"
                      "echo 'second line of long text'\n"
                      "echo \"more text | 'quoted '' label'=7KB late=2us\"\n"
                      "exit 3\n")
    plugin.chmod(0o755)
    check = NagiosCheck(NagiosCheck.Options.model_validate({"name": "everything", "type": "nagios",
                                                            "command": [str(plugin)]}))
    result = check.run(CheckContext(timeout=5))
    assert result.status is Status.UNKNOWN and result.summary == "UNKNOWN - cannot tell"
    values = {(s.label("label"), s.label("unit")): s.value for s in result.samples if s.name == "perfdata_value"}
    assert values[("time spent", "seconds")] == pytest.approx(0.0015)
    assert values[("hits", "count")] == 5
    assert values[("ratio", "ratio")] == pytest.approx(0.85)
    assert values[("size", "bytes")] == pytest.approx(1.5 * 2**30)
    assert values[("neg", "count")] == -3
    assert values[("sci", "seconds")] == 1000
    assert values[("raw", "count")] == 42
    assert values[("late", "seconds")] == pytest.approx(2e-6)
    assert values[("quoted ' label", "bytes")] == 7 * 1024
    assert ("unknown", "count") not in values, "U (undetermined) is not a value"
    assert_family_contract(check, [result])
