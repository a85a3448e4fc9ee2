"""`include:`: one file per service in conf.d/, as Ansible, Puppet or Salt write them.

The operator story: agent.yaml holds the agent-wide settings and `include: ["conf.d/*.yaml"]`; each
service's role drops its checks, actions, checklist items and reports into conf.d. A mistake is
reported in the file and line the role wrote (`conf.d/postgres.yaml:4: checks[0].…`), a name two
files define is an error naming both, `config show` says where each entry came from, and SIGHUP
picks up a file added later (a broken one is refused and the running config kept).
"""

from __future__ import annotations

import re
import signal
import textwrap
from pathlib import Path

import pytest

from agent.config.exposure import exposed_files
from agent.config.load import load_config
from agent.config.yamlsrc import ConfigError
from tests.conftest import run_cli, wait_for

MAIN = """
agent: {state_dir: var}
include: ["conf.d/*.yaml"]
checks:
  - {name: disk, type: disk, mounts: [/]}
checklists:
  daily:
    - {id: system-health, title: System health, checks: [disk]}
"""


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip())
    return path


@pytest.fixture
def confd(tmp_path, monkeypatch) -> Path:
    """agent.yaml in the current directory, so paths read as an operator in /etc/maint-agent sees them."""
    monkeypatch.chdir(tmp_path)
    write(tmp_path / "agent.yaml", MAIN)
    return tmp_path / "conf.d"


def errors(config: str = "agent.yaml") -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_config(config)
    return [str(issue) for issue in caught.value.issues]


def test_includes_add_checks_actions_checklists_and_reports_in_sorted_order(confd):
    write(confd / "redis.yaml", """
        checks:
          - {name: redis, type: redis, host: 127.0.0.1, port: 6379, actions: [{action: page}]}
    """)
    write(confd / "postgres.yaml", """
        # written by the postgres role
        checks:
          - {name: pg-dump, type: heartbeat, period: 1d}
        actions:
          - {name: page, type: notify, slack: {url: "${env:SLACK_URL}"}}
        checklists:
          weekly:
            - {id: vacuum-review, title: Vacuum review, checks: [pg-dump]}
        reports:
          - {name: weekly, period: week, recipients: [ops@example.com]}
        smtp_is_not_here: {}
    """.replace("        smtp_is_not_here: {}\n", ""))
    write(confd / ".postgres.yaml.swp", "not yaml: [")           # hidden files are never matched
    write(confd / "notes.txt", "not yaml: [")
    (confd.parent / "agent.yaml").write_text(MAIN + "smtp: {host: mail.example.com, sender: a@example.com}\n")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("SLACK_URL", "https://hooks.example.com/services/T/B/x")
        loaded = load_config("agent.yaml")
    assert [c.name for c in loaded.checks] == ["disk", "pg-dump", "redis"], "main first, then files sorted"
    assert [a.name for a in loaded.config.actions] == ["page"]
    assert [i.id for i in loaded.config.checklists.weekly] == ["vacuum-review"]
    assert [r.name for r in loaded.config.reports] == ["weekly"]
    assert [p.name for p in loaded.included] == ["postgres.yaml", "redis.yaml"]
    assert loaded.origins[("checks", "redis")] == "conf.d/redis.yaml:2"
    assert loaded.origins[("checklists", "weekly", "vacuum-review")] == "conf.d/postgres.yaml:8"
    assert ("checks", "disk") not in loaded.origins
    assert "2 included files" in loaded.summary()


def test_includes_errors_are_located_in_the_included_file(confd):
    write(confd / "postgres.yaml", """
        checks:
          - name: pg
            type: postgres
            dsn: "host=127.0.0.1"
            warnign: 200ms
          - {name: pg-dump, type: heartbeat, period: 1x}
        agent: {workers: 2}
    """)
    write(confd / "broken.yaml", "checks:\n  - {name: x, type: load\n")
    assert errors() == [
        "conf.d/broken.yaml:3: invalid YAML: while parsing a flow mapping: expected ',' or '}', but got '<stream end>'",
        "conf.d/postgres.yaml:5: checks[0].warnign: unknown key (did you mean 'warning'?)",
        "conf.d/postgres.yaml:6: checks[1].period: invalid duration '1x' (use a number with ms, s, m, h, d or w, "
        "e.g. 30s, 5m, 1h30m)",
        "conf.d/postgres.yaml:7: agent: an included file may add only checks:, actions:, reports: and checklists: "
        "(agent: belongs in agent.yaml)",
    ]


def test_includes_duplicate_names_across_files_name_both_places(confd):
    write(confd / "a.yaml", """
        actions:
          - {name: page, type: command, argv: [/bin/true]}
        checklists:
          daily:
            - {id: system-health, title: again}
    """)
    write(confd / "b.yaml", """
        checks:
          - {name: load, type: load}
          - {name: disk, type: disk, mounts: [/]}
        actions:
          - {name: page, type: command, argv: [/bin/false]}
    """)
    assert errors() == [
        "conf.d/a.yaml:5: checklists.daily[0].id: duplicate daily checklist item id 'system-health' (first defined "
        "at agent.yaml:7)",
        "conf.d/b.yaml:3: checks[1].name: duplicate check name 'disk' (first defined at agent.yaml:4)",
        "conf.d/b.yaml:5: actions[0].name: duplicate action name 'page' (first defined at conf.d/a.yaml:2)",
    ]


def test_includes_must_be_a_list_of_globs(confd):
    (confd.parent / "agent.yaml").write_text(MAIN.replace('["conf.d/*.yaml"]', '"conf.d/*.yaml"'))
    assert errors() == ['agent.yaml:3: include: must be a list of file globs, e.g. ["conf.d/*.yaml"]']


def test_includes_config_show_names_the_file_of_each_entry_and_is_a_valid_config(confd):
    write(confd / "postgres.yaml", """
        checks:
          - {name: pg-dump, type: heartbeat, period: 1d}
        checklists:
          weekly:
            - {id: vacuum-review, title: Vacuum review, checks: [pg-dump]}
    """)
    shown = run_cli("config", "show", str(confd.parent / "agent.yaml"))
    assert shown.returncode == 0, shown.stderr
    assert f"# merged from the files it includes: {confd}/postgres.yaml" in shown.stdout
    assert re.search(rf"^# from {confd}/postgres.yaml:2\n- name: pg-dump$", shown.stdout, re.M)
    assert re.search(rf"^  # from {confd}/postgres.yaml:5\n  - id: vacuum-review$", shown.stdout, re.M)
    assert "include:" not in shown.stdout
    again = write(confd.parent / "shown" / "agent.yaml", shown.stdout)
    loaded = load_config(again)
    assert [c.name for c in loaded.checks] == ["disk", "pg-dump"] and not loaded.included
    assert [i.id for i in loaded.config.checklists.weekly] == ["vacuum-review"]


def test_includes_a_file_others_may_write_is_flagged(confd):
    path = write(confd / "postgres.yaml", "checks:\n  - {name: load, type: load}\n")
    path.chmod(0o666)
    problems = exposed_files(load_config("agent.yaml"))
    assert [(p.path.name, p.reason) for p in problems if p.path.resolve() == path] == [
        ("postgres.yaml", "writable by every user (mode 0666)")]


def test_includes_sighup_picks_up_a_new_file_and_refuses_a_broken_one(agent_factory):
    agent = agent_factory("""
agent:
  state_dir: {state}
http:
  listen: 127.0.0.1:{port}
include: [conf.d/*.yaml]
checks:
  - {name: load, type: load, every: 200ms}
""")
    confd = agent.config.parent / "conf.d"
    write(confd / "jobs.yaml", "checks:\n  - {name: batch, type: heartbeat, period: 1h}\n")
    agent.start()
    wait_for(lambda: 'maint_check_status{check="batch"' in agent.metrics(), what="the included check")
    assert agent.cli("ping", "batch").returncode == 0, "ping finds a heartbeat defined in conf.d"

    write(confd / "memory.yaml", "checks:\n  - {name: memory, type: memory, every: 200ms}\n")
    agent.send(signal.SIGHUP)
    wait_for(lambda: 'maint_check_status{check="memory"' in agent.metrics(), what="the file added to conf.d")

    write(confd / "typo.yaml", "checks:\n  - {name: swap, type: swap, evry: 1s}\n")
    agent.send(signal.SIGHUP)
    wait_for(lambda: "maint_agent_config_last_reload_successful 0.0" in agent.metrics(), what="a refused reload")
    assert f"{confd}/typo.yaml:2: checks[0].evry: unknown key (did you mean 'every'?)" in agent.log.read_text()
    assert 'maint_check_status{check="memory"' in agent.metrics() and 'check="swap"' not in agent.metrics()
