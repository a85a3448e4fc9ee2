"""log_scan: new error and warning lines since the previous run, in real files and in real journal files.

Files are real files in a temporary directory, rotated the ways logrotate
rotates them (rename + create, copytruncate). The journal path runs the real
journalctl on real journal files: journald is not running here (PID 1 is not
systemd), so the fixture writes the entries with `systemd-journal-remote`
(Debian package systemd-journal-remote), which turns journal export format
into a journal file, and the check reads them with `journal_directory`
(journalctl --directory), the option an operator would use for a journal
copied off a host. Only the deadline test uses a stand-in journalctl: a real
one that hangs on demand cannot be had.

The operator story: the daily "Log Review" counts the errors written since the
previous review, never the same line twice, through rotations, and shows the
last few lines (secrets masked).
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import time
from pathlib import Path

import pytest

from agent.config.yamlsrc import ConfigError

from agent.config.load import parse_config
from agent.evaluate import WindowState, evaluate
from agent.plugin.redact import REDACT
from agent.plugin.result import CheckResult, Status
from checks.base import CheckContext
from checks.logscan import LogScanCheck
from tests.metrics_contract import assert_family_contract

JOURNAL_REMOTE = "/lib/systemd/systemd-journal-remote"
JOURNALCTL = "/usr/bin/journalctl"


def make(name: str = "logs", **options) -> LogScanCheck:
    return LogScanCheck(LogScanCheck.Options.model_validate({"name": name, "type": "log_scan", **options}))


def run(check: LogScanCheck, state: Path, timeout: float = 10.0, **ctx) -> CheckResult:
    return check.run(CheckContext(timeout=timeout, state_dir=state, **ctx))


def count(result: CheckResult, level: str) -> float | None:
    return next((s.value for s in result.samples if s.name == "matching_lines" and s.label("level") == level), None)


def value(result: CheckResult, name: str) -> float | None:
    return next((s.value for s in result.samples if s.name == name), None)


def verdict(check: LogScanCheck, result: CheckResult) -> Status:
    return evaluate(check, result, WindowState(), time.time()).status


def append(path: Path, text: str) -> None:
    with open(path, "a") as fh:
        fh.write(text)


@pytest.fixture
def logs(tmp_path) -> Path:
    directory = tmp_path / "log"
    directory.mkdir()
    (directory / "app.log").write_text("2026-01-01 ERROR old error, before the agent\n")
    return directory


@pytest.fixture
def state(tmp_path) -> Path:
    return tmp_path / "var"


@pytest.fixture
def scan(logs, state) -> LogScanCheck:
    """A file check whose first run has recorded where app.log ends."""
    check = make(paths=[str(logs / "*.log")])
    first = run(check, state)
    assert first.status is Status.OK
    assert first.summary == "first run: end of 1 file recorded, counting from now on"
    assert count(first, "error") == 0
    return check


# --- files: counting only what is new -------------------------------------------------------------------------

def test_logscan_new_lines_counted_once(scan, logs, state):
    append(logs / "app.log", "INFO started\nWARNING disk slow\nERROR db down password=hunter2-secret\n"
                             "CRITICAL queue full\nmessage about an ERRORless day\n")
    result = run(scan, state)
    assert (count(result, "error"), count(result, "warning")) == (2, 1)
    assert result.summary.startswith("2 error and 1 warning lines in 1 file since the previous run (")
    assert verdict(scan, result) is Status.WARNING       # default: any new error line warns
    assert [(e["level"], e["line"]) for e in result.details["lines"]] == [
        ("warning", "WARNING disk slow"), ("error", "ERROR db down password=***"), ("error", "CRITICAL queue full")]
    assert "hunter2-secret" not in json.dumps(result.details) + result.summary

    again = run(scan, state)
    assert (count(again, "error"), count(again, "warning")) == (0, 0)
    assert again.summary == "0 error and 0 warning lines in 1 file since the previous run"
    assert verdict(scan, again) is Status.OK


def test_logscan_line_being_written_counted_when_complete(scan, logs, state):
    append(logs / "app.log", "ERROR first\nERROR still being wri")
    assert count(run(scan, state), "error") == 1
    append(logs / "app.log", "tten\n")
    result = run(scan, state)
    assert count(result, "error") == 1
    assert result.details["lines"][0]["line"] == "ERROR still being written"


def test_logscan_rotation_by_rename_reads_both_files(scan, logs, state):
    """logrotate's default (create): app.log → app.log.1, a new app.log. Lines written to the old file
    between the last run and the rotation are not lost, and nothing is counted twice."""
    append(logs / "app.log", "ERROR before the previous run ends\n")
    assert count(run(scan, state), "error") == 1
    append(logs / "app.log", "ERROR late line in the old file\n")
    os.rename(logs / "app.log", logs / "app.log.1")
    (logs / "app.log").write_text("ERROR first line of the new file\nWARNING second\n")
    result = run(scan, state)
    assert (count(result, "error"), count(result, "warning")) == (2, 1)
    assert [e["line"] for e in result.details["lines"]][:2] == ["ERROR first line of the new file", "WARNING second"]
    assert result.details["lines"][2]["source"].endswith("app.log.1")
    assert count(run(scan, state), "error") == 0


def test_logscan_rotated_file_matched_by_glob_not_recounted(logs, state):
    """With a glob that also matches rotated files, the renamed file keeps its position (followed by inode)."""
    check = make(paths=[str(logs / "app.log*")])
    run(check, state)
    append(logs / "app.log", "ERROR one\n")
    assert count(run(check, state), "error") == 1
    os.rename(logs / "app.log", logs / "app.log.1")
    (logs / "app.log").write_text("ERROR two\n")
    result = run(check, state)
    assert count(result, "error") == 1
    assert [e["line"] for e in result.details["lines"]] == ["ERROR two"]


def test_logscan_copytruncate_reads_from_start(scan, logs, state):
    append(logs / "app.log", "ERROR a\nERROR b\nERROR c\n")
    run(scan, state)
    with open(logs / "app.log", "r+") as fh:
        fh.truncate(0)
    append(logs / "app.log", "ERROR after truncation\n")
    result = run(scan, state)
    assert count(result, "error") == 1
    assert result.details["lines"][0]["line"] == "ERROR after truncation"


def test_logscan_file_appearing_later_read_from_start(scan, logs, state):
    (logs / "worker.log").write_text("ERROR worker crashed\nWARN retrying\n")
    result = run(scan, state)
    assert (count(result, "error"), count(result, "warning")) == (1, 1)
    assert "in 2 files" in result.summary


def test_logscan_initial_bytes_scans_tail_on_first_run(logs, state):
    (logs / "app.log").write_text("ERROR " + "x" * 200 + "\nERROR recent one\nWARNING recent two\n")
    result = run(make(paths=[str(logs / "app.log")], initial_bytes=60), state)
    assert (count(result, "error"), count(result, "warning")) == (1, 1), "the cut first line is skipped"
    assert result.summary.startswith("1 error and 1 warning lines in 1 file since the previous run")


def test_logscan_max_bytes_reads_newest_and_reports_skipped(scan, logs, state):
    append(logs / "app.log", "ERROR old backlog line\n" * 1000 + "INFO filler\n" * 30 + "ERROR newest\n")
    result = run(make(paths=[str(logs / "*.log")], max_bytes=300), state)
    assert count(result, "error") == 1
    assert value(result, "skipped_bytes") > 20000
    assert "of older data skipped (max_bytes)" in result.summary


def test_logscan_budget_shared_fairly_between_files(scan, logs, state):
    (logs / "quiet.log").write_text("")
    run(scan, state)
    append(logs / "app.log", "INFO noise\n" * 5000)
    append(logs / "quiet.log", "ERROR the one that matters\n")
    result = run(make(paths=[str(logs / "*.log")], max_bytes=4096), state)
    assert count(result, "error") == 1, "a busy log must not starve a quiet one"


def test_logscan_timeout_stops_and_next_run_continues(scan, logs, state):
    lines = 120_000      # ~2.5 MiB: more than one read chunk
    append(logs / "app.log", "ERROR numbered line\n" * lines)
    clock = iter(range(0, 10**6, 6))      # each reading of the clock advances 6 s: two 1 MiB chunks, then 12 > 10 s
    first = run(scan, state, monotonic=lambda: float(next(clock)))
    assert "stopped at the 10s timeout, continuing next run" in first.summary
    assert 0 < count(first, "error") < lines
    second = run(scan, state)
    assert count(first, "error") + count(second, "error") == lines


def test_logscan_thresholds_levels_and_critical(scan, logs, state):
    append(logs / "app.log", "WARNING a\nWARNING b\nWARNING c\nERROR d\n")
    check = make(paths=[str(logs / "*.log")], warning=None, critical=2, thresholds_apply_to=["error", "warning"])
    result = run(check, state)
    final = evaluate(check, result, WindowState(), time.time())
    assert final.status is Status.CRITICAL
    assert final.summary.startswith("matching_lines warning 3 > 2")


def test_logscan_custom_pattern_ignore_case_no_warning_level(scan, logs, state):
    append(logs / "app.log", "Traceback (most recent call last):\ntraceback again\nWARNING ignored\n")
    check = make(paths=[str(logs / "*.log")], error_pattern="^traceback", warning_pattern=None, ignore_case=True)
    result = run(check, state)
    assert count(result, "error") == 2 and count(result, "warning") is None
    assert result.summary.startswith("2 error lines in 1 file")


def test_logscan_no_file_matches_unknown(tmp_path, state):
    result = run(make(paths=[str(tmp_path / "nothing/*.log")]), state)
    assert result.status is Status.UNKNOWN
    assert result.summary == f"no file matches {tmp_path}/nothing/*.log"


def test_logscan_unreadable_file_unknown_others_counted(scan, logs, state):
    """A log that cannot be opened (here a dangling symlink: root reads every regular file) makes the
    result UNKNOWN, naming it, while the other files are still counted."""
    (logs / "gone.log").symlink_to(logs / "deleted-target.log")
    append(logs / "app.log", "ERROR still counted\n")
    result = run(scan, state)
    assert result.status is Status.UNKNOWN
    assert count(result, "error") == 1
    assert f"cannot read {logs}/gone.log: No such file or directory" in result.summary


def test_logscan_without_state_dir_unknown(logs):
    result = make(paths=[str(logs / "*.log")]).run(CheckContext(timeout=5))
    assert result.status is Status.UNKNOWN


def test_logscan_metric_contract(scan, logs, state):
    append(logs / "app.log", "ERROR x\n")
    assert_family_contract(scan, [run(scan, state)])


@pytest.mark.parametrize("options, message", [
    ({}, "checks[0]: source: files needs `paths`"),
    ({"paths": ["/var/log/*.log"], "error_pattern": "(unclosed"},
     "checks[0].error_pattern: invalid regular expression: missing ), unterminated subpattern at position 0"),
    ({"paths": ["var/log/app.log"]}, "checks[0].paths: 'var/log/app.log' must be an absolute path or glob"),
    ({"paths": ["/var/log/x.log"], "unit": "nginx.service"},
     "checks[0]: unit, priority and journal_directory apply to source: journal only"),
    ({"source": "journal", "priority": "loud"},
     "checks[0].priority: Input should be 'emerg', 'alert', 'crit', 'err', 'warning', 'notice', 'info' or 'debug'"),
])
def test_logscan_config_errors(options, message):
    lines = "".join(f"    {k}: {json.dumps(v)}\n" for k, v in options.items())
    with pytest.raises(ConfigError) as err:
        parse_config("checks:\n  - name: logs\n    type: log_scan\n" + lines, "agent.yaml")
    assert message in str(err.value.issues[0])


# --- journal ----------------------------------------------------------------------------------------------------

class Journal:
    """A directory of real journal files, written by systemd-journal-remote from export format."""

    def __init__(self, directory: Path):
        self.directory = directory
        self.files = 0

    def write(self, *entries: tuple[float, str, int, str]) -> None:
        """Entries of (unix time, unit, syslog priority, message) go into a new journal file."""
        export = "".join(
            f"__REALTIME_TIMESTAMP={int(ts * 1e6)}\n__MONOTONIC_TIMESTAMP={int((ts - BOOTED) * 1e6)}\n"
            f"_BOOT_ID=0123456789abcdef0123456789abcdef\n_HOSTNAME=web1\n_SYSTEMD_UNIT={unit}\n"
            f"SYSLOG_IDENTIFIER={unit.split('.')[0]}\nPRIORITY={priority}\nMESSAGE={message}\n\n"
            for ts, unit, priority, message in entries)
        self.files += 1
        subprocess.run([JOURNAL_REMOTE, "-o", str(self.directory / f"remote-{self.files}.journal"), "-"],
                       input=export, text=True, check=True, capture_output=True, timeout=30)


@pytest.fixture
def journal(tmp_path) -> Journal:
    if not os.access(JOURNAL_REMOTE, os.X_OK) or not os.access(JOURNALCTL, os.X_OK):
        pytest.skip("systemd-journal-remote or journalctl missing (Debian packages systemd-journal-remote, systemd)")
    directory = tmp_path / "journal"
    directory.mkdir()
    return Journal(directory)


T0 = 1_790_000_000.0
BOOTED = T0 - 86400     # one boot for every entry: journalctl orders a boot's entries by monotonic time


def journal_check(journal: Journal, **options) -> LogScanCheck:
    return make(source="journal", journal_directory=str(journal.directory), **options)


def test_logscan_journal_counts_since_previous_run(journal, state):
    journal.write((T0 - 7200, "beauth.service", 3, "ERROR too old for the first window"),
                  (T0 - 600, "beauth.service", 3, "ERROR database unreachable password=hunter2-secret"),
                  (T0 - 500, "nginx.service", 4, "WARNING upstream slow"),
                  (T0 - 400, "nginx.service", 6, "GET / 200"))
    check = journal_check(journal, initial_since="1h")
    first = run(check, state, wall=lambda: T0)
    assert (count(first, "error"), count(first, "warning")) == (1, 1), first.summary
    assert first.summary.startswith("1 error and 1 warning lines in the journal of the last 1h (")
    assert [e["line"].split(" ", 1)[1] for e in first.details["lines"]] == [
        "web1 beauth: ERROR database unreachable password=***",
        "web1 nginx: WARNING upstream slow"]
    assert "hunter2-secret" not in json.dumps(first.details) + first.summary

    journal.write((T0 + 30, "beauth.service", 3, "FATAL worker died"))
    second = run(check, state, wall=lambda: T0 + 60)
    assert (count(second, "error"), count(second, "warning")) == (1, 0)
    assert second.summary.startswith("1 error and 0 warning lines in the journal since the previous run")
    third = run(check, state, wall=lambda: T0 + 120)
    assert count(third, "error") == 0


def test_logscan_journal_first_run_counts_from_now(journal, state):
    journal.write((T0 - 60, "beauth.service", 3, "ERROR before the agent"))
    result = run(journal_check(journal), state, wall=lambda: T0)
    assert result.summary == "first run: counting journal entries from now on"
    assert count(result, "error") == 0


def test_logscan_journal_unit_and_priority_filters(journal, state):
    journal.write((T0 - 60, "beauth.service", 3, "ERROR beauth failed"),
                  (T0 - 50, "beauth.service", 6, "ERROR in an info-level message"),
                  (T0 - 40, "nginx.service", 3, "ERROR nginx failed"))
    check = journal_check(journal, unit="beauth.service", priority="err", initial_since="5m")
    result = run(check, state, wall=lambda: T0)
    assert count(result, "error") == 1
    assert "ERROR beauth failed" in result.details["lines"][0]["line"]
    assert "in the journal beauth.service priority err of the last 5m" in result.summary


def test_logscan_journal_max_bytes_counts_newest(journal, state):
    journal.write(*[(T0 - 600 + i, "app.service", 3, f"ERROR number {i}") for i in range(200)])
    result = run(journal_check(journal, initial_since="1h", max_bytes=500), state, wall=lambda: T0)
    assert 0 < count(result, "error") < 200
    assert result.details["lines"][-1]["line"].endswith("ERROR number 199")
    assert "max_bytes (500B) reached: older entries not read" in result.summary


def test_logscan_journal_unreadable_directory_unknown_with_reason(tmp_path, state):
    check = make(source="journal", journal_directory=str(tmp_path / "no-journal"))
    result = run(check, state)
    assert result.status is Status.UNKNOWN
    assert result.summary == f"journalctl failed: Failed to open {tmp_path}/no-journal: No such file or directory"


def test_logscan_journal_without_journal_files_unknown_not_ok(tmp_path, state):
    """An empty journal directory (or a host whose journald never ran) must not read as "no errors"."""
    (tmp_path / "empty-journal").mkdir()
    check = make(source="journal", journal_directory=str(tmp_path / "empty-journal"), initial_since="1h")
    result = run(check, state)
    assert result.status is Status.UNKNOWN
    assert result.summary.startswith("journalctl found no journal files")


def test_logscan_journal_hanging_journalctl_killed_at_deadline(tmp_path, state):
    """A stand-in journalctl that prints two lines and hangs (a real one cannot be made to hang)."""
    stand_in = tmp_path / "journalctl"
    stand_in.write_text("#!/bin/sh\necho 'ERROR one'\necho 'WARNING two'\nexec sleep 60\n")
    stand_in.chmod(stand_in.stat().st_mode | stat.S_IXUSR)
    check = make(source="journal", journalctl=str(stand_in), initial_since="1h")
    started = time.monotonic()
    result = run(check, state, timeout=1.0)
    assert time.monotonic() - started < 3
    assert (count(result, "error"), count(result, "warning")) == (1, 1)
    assert "stopped at the 1s timeout: older entries not read" in result.summary


def test_logscan_journal_metric_contract(journal, state):
    journal.write((T0 - 60, "beauth.service", 3, "ERROR x"))
    check = journal_check(journal, initial_since="1h")
    assert_family_contract(check, [run(check, state, wall=lambda: T0)])


def test_logscan_details_redacted_by_process_redactor(scan, logs, state):
    """A configured secret's value (known to the process-wide redactor) never reaches the details."""
    REDACT.add(["Tr0ub4dor-value"])
    append(logs / "app.log", "ERROR login failed with Tr0ub4dor-value\n")
    result = run(scan, state)
    assert result.details["lines"][0]["line"] == "ERROR login failed with ***"
