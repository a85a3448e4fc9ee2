"""agent.yaml validation as an operator meets it: every mistake reported at once, with file, line and path.

The corpus in bad_configs/ holds one mistake per file; its first lines say what
the loader must report: `# expect: LINE: PATH: substring of the message`
(PATH `-` for a file-level error such as invalid YAML).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from agent.config.schema import DEFAULT_SCHEDULES, json_schema

from agent.config.load import load_config, parse_config
from agent.config.triggers import Calendar, Interval
from agent.config.yamlsrc import ConfigError, ConfigIssue
from checks import CHECK_TYPES
from tests.conftest import REPO, run_cli

BAD_CONFIGS = Path(__file__).parent / "bad_configs"
BAD_FILES = sorted(BAD_CONFIGS.glob("*.yaml"))
EXPECT_RE = re.compile(r"^# expect: (\d+): (\S+): (.+)$", re.MULTILINE)
UNSET_SECRET_ENV = "MAINT_AGENT_TEST_UNSET_SECRET"
ISSUE_LINE_RE = re.compile(r"^(?P<file>[^:]+):(?P<line>\d+): (?:(?P<path>[\w.\[\]-]+): )?(?P<message>.+)$")


def expectations(path: Path) -> list[tuple[int, str, str]]:
    return [(int(line), "" if where == "-" else where, text) for line, where, text in EXPECT_RE.findall(path.read_text())]


def issues_of(path: Path) -> list[ConfigIssue]:
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    return caught.value.issues


def issues_in(text: str, write_config) -> list[ConfigIssue]:
    return issues_of(write_config(text))


def where(issues: list[ConfigIssue]) -> list[tuple[int, str]]:
    return [(i.line, i.path) for i in issues]


@pytest.fixture
def no_ambient_secrets(monkeypatch):
    """The corpus relies on these being unset; a CI runner or a systemd unit might set them."""
    monkeypatch.delenv(UNSET_SECRET_ENV, raising=False)
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)


def cli_env() -> dict[str, str]:
    import os
    env = dict(os.environ)
    env.pop(UNSET_SECRET_ENV, None)
    return env


# -- the corpus of broken files ---------------------------------------------------------------------------


def test_bad_config_corpus_every_file_has_expectation():
    assert len(BAD_FILES) >= 18
    for path in BAD_FILES:
        assert expectations(path), f"{path.name} has no '# expect: LINE: PATH: message' line"


@pytest.mark.parametrize("path", BAD_FILES, ids=lambda p: p.stem)
def test_load_config_bad_file_reports_expected_issues(path: Path, no_ambient_secrets):
    issues = issues_of(path)
    expected = expectations(path)
    for line, loc, text in expected:
        matching = [i for i in issues if i.line == line and i.path == loc]
        assert matching, f"no issue at line {line} path {loc!r}; got:\n" + "\n".join(map(str, issues))
        assert any(text in i.message for i in matching), (
            f"line {line} {loc}: {text!r} not in " + " | ".join(i.message for i in matching))
    assert len(issues) == len(expected), "one mistake, one report; got:\n" + "\n".join(map(str, issues))
    assert all(i.file == str(path) for i in issues)


@pytest.mark.parametrize("name", ["bad_duration", "unknown_top_level_key", "duplicate_check_name",
                                  "yaml_tab_indented", "warning_not_below_critical"])
def test_config_check_bad_file_exits_2_with_file_line_path_message(name: str):
    path = BAD_CONFIGS / f"{name}.yaml"
    proc = run_cli("config", "check", str(path))
    assert proc.returncode == 2, proc.stderr
    assert proc.stdout == ""
    lines = proc.stderr.splitlines()
    assert lines, "no error printed"
    for line in lines:
        match = ISSUE_LINE_RE.match(line)
        assert match and match["file"] == str(path), f"not FILE:LINE: path: message: {line!r}"
    for number, loc, text in expectations(path):
        prefix = f"{path}:{number}: " + (f"{loc}: " if loc else "")
        assert any(line.startswith(prefix) and text in line for line in lines), (prefix, text, lines)
    assert "Traceback" not in proc.stderr


def test_config_check_installed_script_bad_file_exits_2():
    script = Path(sys.executable).parent / "maint-agent"
    path = BAD_CONFIGS / "unknown_check_type.yaml"
    proc = subprocess.run([str(script), "config", "check", str(path)], capture_output=True, text=True,
                          timeout=60, env=cli_env())
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [
        f"{path}:4: checks[0].type: unknown check type 'cpuu' (did you mean 'cpu'?); "
        f"known types: {', '.join(CHECK_TYPES)}"]


# -- hostile or broken files answer fast, at the right line -----------------------------------------------


def test_config_check_alias_bomb_answers_within_seconds_in_little_memory(tmp_path: Path):
    """A 'billion laughs' of a few hundred bytes once took over 10 s and about 1 GiB before answering."""
    from tests.conftest import AGENT
    path = BAD_CONFIGS / "yaml_alias_bomb.yaml"
    out, err = tmp_path / "stdout", tmp_path / "stderr"
    with out.open("wb") as stdout, err.open("wb") as stderr:
        started = time.monotonic()
        proc = subprocess.Popen([*AGENT, "config", "check", str(path)], cwd=REPO, stdout=stdout, stderr=stderr,
                                env=cli_env())
        guard = threading.Timer(30, proc.kill)   # a regression must fail the test, not hang or swap the host
        guard.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)   # this child's own peak RSS, not the session's largest
        finally:
            guard.cancel()
        proc.returncode = os.waitstatus_to_exitcode(status)
        elapsed = time.monotonic() - started
    assert proc.returncode == 2, err.read_text()
    assert err.read_text() == (f"{path}:8: too many YAML aliases: they would expand to more than 10,000 values "
                               "(write the values out, or use fewer aliases)\n")
    assert elapsed < 5, f"took {elapsed:.1f}s"
    assert usage.ru_maxrss < 150 * 1024, f"peak RSS {usage.ru_maxrss // 1024} MiB"


def test_load_config_deep_nesting_reports_its_line_not_a_traceback(write_config):
    path = write_config("agent:\n  hostname: a\nchecks: " + "[" * 5000 + "]" * 5000 + "\n")
    assert [str(i) for i in issues_of(path)] == [f"{path}:3: nested more than 64 levels deep"]


def test_load_config_not_utf8_reports_line_of_the_byte(tmp_path: Path):
    path = tmp_path / "agent.yaml"
    path.write_bytes(b"# a config saved as Latin-1\n" + b"#\n" * 4 + b"agent:\n  hostname: caf\xe9-01\n")
    assert [str(i) for i in issues_of(path)] == [
        f"{path}:7: cannot read config: byte 0xe9 in column 16 is not UTF-8 (save the file as UTF-8)"]
    proc = run_cli("config", "check", str(path))
    assert (proc.returncode, proc.stderr) == (2, f"{path}:7: cannot read config: byte 0xe9 in column 16 is not "
                                                 "UTF-8 (save the file as UTF-8)\n")


def test_checks_command_every_astronomical_exits_2_at_its_line():
    """`every: 10**30` once passed validation and crashed `maint-agent checks` with OverflowError."""
    path = BAD_CONFIGS / "every_astronomical.yaml"
    proc = run_cli("checks", config=path)
    assert proc.returncode == 2, proc.stdout
    assert proc.stderr == f"{path}:6: checks[0].every: must be at most 400d (got {10**30})\n"


def test_durations_timeouts_above_zero_and_ages_up_to_a_century(write_config):
    issues = issues_in("""
        store:
          retention:
            rollups: 3650d
            raw: 36501d
        checks:
          - name: cpu
            type: cpu
            timeout: 0.001s
            for: 400d
          - name: backups
            type: backup_files
            path: /srv/backup/*.dump
            every: 0
    """, write_config)
    assert [(i.line, i.path, i.message) for i in issues] == [
        (4, "store.retention.raw", "must be at most 36500d (got '36501d')"),
        (13, "checks[1].every", "must be above 0")]


# -- every error at once, both passes ---------------------------------------------------------------------


THREE_MISTAKES = """
    agent:
      workers: many
    checks:
      - name: cpu
        type: cpu
        every: 5x
      - name: memory
        type: memory
        warning: 120%
"""


def test_load_config_three_independent_errors_reports_all_three(write_config):
    issues = issues_in(THREE_MISTAKES, write_config)
    assert where(issues) == [(2, "agent.workers"), (6, "checks[0].every"), (9, "checks[1].warning")]


def test_config_check_three_independent_errors_prints_three_lines(write_config):
    path = write_config(THREE_MISTAKES)
    proc = run_cli("config", "check", str(path))
    assert proc.returncode == 2
    assert [ISSUE_LINE_RE.match(line)["line"] for line in proc.stderr.splitlines()] == ["2", "6", "9"]


def test_load_config_shape_and_logical_errors_reports_both_passes(write_config):
    issues = issues_in("""
        agent:
          workers: many
        checks:
          - name: disk
            type: disk
            warning: 95%
            critical: 90%
          - name: cpu
            type: cpu
            every: 1m
            schedule: daily
    """, write_config)
    assert where(issues) == [(2, "agent.workers"), (6, "checks[0].warning"), (11, "checks[1].schedule")]
    assert issues[1].message == "must be below critical (got 95% ≥ 90%)"


def test_load_config_check_with_shape_error_skips_its_logical_pass(write_config):
    issues = issues_in("""
        checks:
          - name: cpu
            type: cpu
            timeout: 10x
            warning: 95%
            critical: 90%
    """, write_config)
    assert where(issues) == [(4, "checks[0].timeout")]


def test_load_config_several_logical_errors_reports_all(write_config):
    issues = issues_in("""
        checks:
          - name: cpu
            type: cpu
            every: 15s
            schedule: daily
          - name: workers
            type: process
            process_name: celery
            warning: 1
            critical: 3
          - name: cpu
            type: memory
            warning: 90%
            critical: 80%
          - name: report
            type: disk
            schedule: weakly
    """, write_config)
    assert where(issues) == [(5, "checks[0].schedule"), (9, "checks[1].warning"), (11, "checks[2].name"),
                             (13, "checks[2].warning"), (17, "checks[3].schedule")]
    assert "(did you mean 'weekly'?)" in issues[-1].message


def test_load_config_bad_schedules_each_reported_at_its_key(write_config):
    issues = issues_in("""
        schedules:
          nightly: "25:00"
          backups: "sun 02:30"
          Reports: "mon 08:00"
          cleanup: "someday"
    """, write_config)
    assert where(issues) == [(2, "schedules.nightly"), (4, "schedules.Reports"), (5, "schedules.cleanup")]
    assert issues[1].message.startswith("invalid key: ")


def test_config_error_issues_sorted_by_line(write_config):
    issues = issues_in("""
        checks:
          - name: a
            type: cpu
            every: 5x
        agent:
          workers: 0
    """, write_config)
    assert [i.line for i in issues] == sorted(i.line for i in issues) == [4, 6]


def test_load_config_missing_file_reports_cannot_read(tmp_path: Path):
    path = tmp_path / "absent.yaml"
    issues = issues_of(path)
    assert [str(i) for i in issues] == [f"{path}:0: cannot read config: No such file or directory"]


def test_config_check_missing_file_exits_2(tmp_path: Path):
    proc = run_cli("config", "check", str(tmp_path / "absent.yaml"))
    assert proc.returncode == 2
    assert "cannot read config" in proc.stderr


# -- what a valid config becomes --------------------------------------------------------------------------


def repo_checks() -> list[dict]:
    return yaml.safe_load((REPO / "agent.yaml").read_text())["checks"]


def test_load_config_repo_agent_yaml_is_valid():
    loaded = load_config(REPO / "agent.yaml")
    names = [c.name for c in loaded.checks]
    assert names == [c["name"] for c in repo_checks()]
    assert set(loaded.triggers) == set(names)
    calendars = {n for n, t in loaded.triggers.items() if isinstance(t, Calendar)}
    assert calendars == {c["name"] for c in repo_checks() if "schedule" in c}
    assert loaded.db_path == (REPO / "var" / "maint-agent.db").resolve()


def test_parse_config_empty_file_returns_defaults():
    loaded = parse_config("", "empty.yaml")
    assert loaded.checks == ()
    assert loaded.config.version == 1
    assert loaded.config.schedules == DEFAULT_SCHEDULES


def test_load_config_minimal_check_defaults_filled(write_config):
    loaded = load_config(write_config("""
        checks:
          - name: cpu
            type: cpu
    """))
    config, check = loaded.config, loaded.checks[0]
    assert config.agent.check_timeout == 30.0
    assert config.agent.workers == 4
    assert config.agent.default_interval == 60.0
    assert config.agent.log_level == "info"
    assert config.http.listen == "127.0.0.1:9469"
    assert config.http.basic_auth is None
    assert config.store.retention.raw == 90 * 86400
    assert config.store.retention.rollups == 730 * 86400
    assert config.schedules == DEFAULT_SCHEDULES
    assert (check.every, check.schedule, check.timeout, check.sustained) == (None, None, None, 0.0)
    assert (check.warning, check.critical, check.enabled) == (None, None, True)
    assert loaded.timeout_for(check) == 30.0
    assert loaded.triggers == {"cpu": Interval(60.0)}


def test_load_config_schedules_merged_with_defaults(write_config):
    loaded = load_config(write_config("""
        schedules:
          daily: "04:00"
          nightly: "01:30"
        checks:
          - {name: a, type: cpu, schedule: daily}
          - {name: b, type: cpu, schedule: weekly}
          - {name: c, type: cpu, schedule: nightly}
          - {name: d, type: cpu, schedule: "sun 02:30"}
    """))
    assert loaded.config.schedules == {**DEFAULT_SCHEDULES, "daily": "04:00", "nightly": "01:30"}
    triggers = loaded.triggers
    assert (triggers["a"].name, triggers["a"].spec.time_text) == ("daily", "04:00")
    assert (triggers["b"].name, triggers["b"].spec.text) == ("weekly", "mon 03:00")
    assert triggers["c"].spec.time_text == "01:30"
    assert triggers["d"].spec.weekdays == frozenset({6})


def test_load_config_default_schedule_without_schedules_section_resolves(write_config):
    loaded = load_config(write_config("""
        checks:
          - {name: q, type: load, schedule: quarterly}
    """))
    assert loaded.triggers["q"].spec.months == frozenset({1, 4, 7, 10})


def test_load_config_human_units_normalised_to_base_units(write_config):
    loaded = load_config(write_config("""
        agent:
          check_timeout: 45s
          default_interval: 2m
          shutdown_grace: 1500ms
        store:
          retention: {raw: 26h, rollups: 2w}
        checks:
          - {name: cpu, type: cpu, every: 30s, timeout: 10, warning: 85%, critical: 0.95, for: 5m}
          - {name: load, type: load, every: 90, warning: 2, critical: 4}
          - {name: dump, type: file, path: /var/backups/db.dump, min_size: 10GiB, warning: 1h30m, critical: 26h}
          - {name: ping, type: network_latency, targets: ["[::1]:22"], warning: 200ms, critical: 1s}
    """))
    agent, store = loaded.config.agent, loaded.config.store
    assert (agent.check_timeout, agent.default_interval, agent.shutdown_grace) == (45.0, 120.0, 1.5)
    assert (store.retention.raw, store.retention.rollups) == (93600.0, 1209600.0)
    cpu, load, dump, ping = loaded.checks
    assert (cpu.every, cpu.timeout, cpu.warning, cpu.critical, cpu.sustained) == (30.0, 10.0, 0.85, 0.95, 300.0)
    assert isinstance(cpu.every, float)
    assert (load.every, load.warning, load.critical) == (90.0, 2.0, 4.0)
    assert dump.min_size == 10737418240 and isinstance(dump.min_size, int)
    assert (dump.warning, dump.critical) == (5400.0, 93600.0)
    assert (ping.warning, ping.critical) == (0.2, 1.0)
    assert loaded.timeout_for(cpu) == 10.0 and loaded.timeout_for(load) == 45.0


def test_load_config_relative_state_dir_resolves_beside_config(write_config, tmp_path: Path):
    loaded = load_config(write_config("""
        agent:
          state_dir: ./state
          timezone: Europe/Berlin
        http:
          listen: "[::1]:9469"
    """))
    assert loaded.db_path == (tmp_path / "state" / "maint-agent.db").resolve()
    assert loaded.tz.key == "Europe/Berlin"


def test_config_assign_field_raises(write_config):
    loaded = load_config(write_config("""
        checks:
          - {name: cpu, type: cpu, warning: 80%}
    """))
    with pytest.raises(ValidationError, match="frozen"):
        loaded.config.agent.workers = 8
    with pytest.raises(ValidationError, match="frozen"):
        loaded.config.checks[0].warning = 0.99
    with pytest.raises(ValidationError, match="frozen"):
        loaded.config.checks = ()
    with pytest.raises(dataclasses.FrozenInstanceError):
        loaded.config = None
    assert isinstance(loaded.config.checks, tuple)
    assert loaded.config.checks[0].warning == 0.8


# -- secrets: only the reference is ever kept ------------------------------------------------------------


BASIC_AUTH = """
    http:
      basic_auth:
        username: prometheus
        password: {reference}
    checks:
      - {{name: cpu, type: cpu}}
"""


def serialised_forms(loaded) -> dict[str, str]:
    config = loaded.config
    return {"str": str(config), "repr": repr(config), "json": config.model_dump_json(),
            "dump": json.dumps(config.model_dump(mode="json", by_alias=True)), "loaded": repr(loaded),
            "password str": str(config.http.basic_auth.password),
            "password repr": repr(config.http.basic_auth.password)}


def test_secret_env_reference_reveals_value_never_serialised(write_config, monkeypatch):
    secret = "hunter2-env-7f3a"
    monkeypatch.setenv("MAINT_AGENT_TEST_PASSWORD", secret)
    reference = "${env:MAINT_AGENT_TEST_PASSWORD}"
    loaded = load_config(write_config(BASIC_AUTH.format(reference=reference)))
    password = loaded.config.http.basic_auth.password
    assert password.reveal() == secret
    for form, text in serialised_forms(loaded).items():
        assert secret not in text, form
        assert reference in text, form


def test_secret_file_reference_read_at_use(write_config, tmp_path: Path):
    secret_file = tmp_path / "metrics-password"
    secret_file.write_text("first-secret-91c2\n")
    reference = f"${{file:{secret_file}}}"
    loaded = load_config(write_config(BASIC_AUTH.format(reference=reference)))
    password = loaded.config.http.basic_auth.password
    assert password.reveal() == "first-secret-91c2"
    secret_file.write_text("rotated-secret-4d8e\n")
    assert password.reveal() == "rotated-secret-4d8e"
    for form, text in serialised_forms(loaded).items():
        assert "first-secret" not in text and "rotated-secret" not in text, form
        assert reference in text, form


def test_secret_credential_reference_reads_credentials_directory(write_config, tmp_path: Path, monkeypatch):
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    (credentials / "metrics-password").write_text("cred-secret-0b5f")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(credentials))
    loaded = load_config(write_config(BASIC_AUTH.format(reference="${credential:metrics-password}")))
    assert loaded.config.http.basic_auth.password.reveal() == "cred-secret-0b5f"
    assert "cred-secret" not in loaded.config.model_dump_json()


def test_secret_credential_without_directory_reports_error(write_config, no_ambient_secrets):
    issues = issues_in(BASIC_AUTH.format(reference="${credential:metrics-password}"), write_config)
    assert where(issues) == [(4, "http.basic_auth.password")]
    assert "CREDENTIALS_DIRECTORY is not set" in issues[0].message


def test_secret_file_reference_to_directory_reports_error(write_config, tmp_path: Path):
    issues = issues_in(BASIC_AUTH.format(reference=f"${{file:{tmp_path}}}"), write_config)
    assert where(issues) == [(4, "http.basic_auth.password")]
    assert "Is a directory" in issues[0].message


def test_config_check_secret_file_and_other_error_never_prints_secret(write_config, tmp_path: Path):
    secret_file = tmp_path / "pw"
    secret_file.write_text("cli-secret-a41d")
    path = write_config(BASIC_AUTH.format(reference=f"${{file:{secret_file}}}") + "    agent: {workers: many}\n")
    proc = run_cli("config", "check", str(path))
    assert proc.returncode == 2
    assert "cli-secret" not in proc.stdout + proc.stderr
    path = write_config(BASIC_AUTH.format(reference=f"${{file:{secret_file}}}"))
    proc = run_cli("config", "check", str(path))
    assert proc.returncode == 0, proc.stderr
    assert "cli-secret" not in proc.stdout + proc.stderr


# -- JSON Schema ------------------------------------------------------------------------------------------


def test_json_schema_is_valid_draft_2020_12():
    import jsonschema
    schema = json_schema()
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    jsonschema.Draft202012Validator.check_schema(schema)


def test_json_schema_lists_every_check_type():
    schema = json_schema()
    items = schema["properties"]["checks"]["items"]
    assert set(items["discriminator"]["mapping"]) == set(CHECK_TYPES)
    consts = {schema["$defs"][ref["$ref"].rsplit("/", 1)[1]]["properties"]["type"]["const"] for ref in items["oneOf"]}
    assert consts == set(CHECK_TYPES)


def test_json_schema_repo_agent_yaml_accepted():
    import jsonschema
    document = yaml.safe_load((REPO / "agent.yaml").read_text())
    jsonschema.Draft202012Validator(json_schema()).validate(document)


@pytest.mark.parametrize("document", [
    {"chekcs": []},
    {"agent": {"workers": "many"}},
    {"checks": [{"name": "cpu", "type": "cpuu"}]},
    {"checks": [{"name": "cpu", "type": "cpu", "warnign": "80%"}]},
    {"checks": [{"name": "lat", "type": "network_latency"}]},
], ids=["unknown-section", "workers-string", "unknown-type", "unknown-check-key", "missing-targets"])
def test_json_schema_mistake_rejected(document):
    import jsonschema
    assert not jsonschema.Draft202012Validator(json_schema()).is_valid(document)


def test_config_schema_cli_prints_json_schema():
    proc = run_cli("config", "schema")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == json_schema()


# -- `maint-agent config check` on a good file ------------------------------------------------------------


def test_config_check_repo_agent_yaml_exits_0_with_one_summary_line():
    path = REPO / "agent.yaml"
    proc = run_cli("config", "check", str(path))
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    lines = proc.stdout.splitlines()
    assert len(lines) == 1
    enabled = [c for c in repo_checks() if c.get("enabled", True)]
    total, calendars = len(enabled), sum("schedule" in c for c in enabled)
    disabled = len(repo_checks()) - total
    assert lines[0].startswith(f"{path}: OK: {total} checks ({total - calendars} interval, {calendars} calendar"
                               + (f"; {disabled} disabled" if disabled else "") + "), store ")
    assert lines[0].endswith("listen 127.0.0.1:9469")


def test_config_errors_never_quote_secret_values(tmp_path):
    path = tmp_path / "leak.yaml"
    path.write_text(
        "http:\n"
        "  basic_auth: {username: prom, password: 123456789}\n"
        "checks:\n"
        "  - {name: web, type: http, url: \"http://admin:S3cretPw@127.0.0.1/x\"}\n"
        "  - {name: web2, type: http, url: \"htps://admin:S3cretPw@127.0.0.1/x\"}\n"
        "  - {name: web3, type: http, url: \"http://127.0.0.1/x\", headers: {X-Api-Key: 987654321}}\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    text = str(caught.value)
    assert len(caught.value.issues) == 4
    for secret in ("123456789", "S3cretPw", "987654321"):
        assert secret not in text
