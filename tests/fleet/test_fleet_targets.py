"""`maint-agent fleet targets`: a Prometheus file_sd JSON from a host list, written atomically, that
Prometheus itself accepts; mistakes in the list are usage errors, never a silently odd target."""

from __future__ import annotations

import json
import os
import subprocess
import textwrap

import pytest

from agent.cli.fleet import target_of
from tests.conftest import have, run_cli


def targets(*args: str) -> tuple[int, list | None, str]:
    out = run_cli("fleet", "targets", *args)
    return out.returncode, json.loads(out.stdout) if out.returncode == 0 and out.stdout else None, out.stderr


def test_fleet_targets_one_group_per_host_with_its_host_label():
    code, groups, _ = targets("--hosts", "db1", "db2.example.internal:9470", "::1", "--label", "env=prod")
    assert code == 0
    assert groups == [
        {"targets": ["db1:9469"], "labels": {"env": "prod", "host": "db1"}},
        {"targets": ["db2.example.internal:9470"], "labels": {"env": "prod", "host": "db2.example.internal"}},
        {"targets": ["[::1]:9469"], "labels": {"env": "prod", "host": "::1"}}]


def test_fleet_targets_reads_host_files_with_per_host_labels_and_comments(tmp_path):
    hosts = tmp_path / "fleet-hosts"
    hosts.write_text(textwrap.dedent("""
        # the database pair
        db1 role=primary
        db2 role=standby   # streaming from db1

        web1
        """))
    code, groups, _ = targets("--hosts", str(hosts), "cache1", "--port", "9500", "--label", "env=prod")
    assert code == 0
    assert [(g["targets"][0], g["labels"]) for g in groups] == [
        ("db1:9500", {"env": "prod", "role": "primary", "host": "db1"}),
        ("db2:9500", {"env": "prod", "role": "standby", "host": "db2"}),
        ("web1:9500", {"env": "prod", "host": "web1"}),
        ("cache1:9500", {"env": "prod", "host": "cache1"})]


def test_fleet_targets_output_replaces_the_file_atomically(tmp_path):
    out_dir = tmp_path / "targets"
    out_dir.mkdir()
    path = out_dir / "fleet.json"
    path.write_text("[]")
    inode = os.stat(path).st_ino
    result = run_cli("fleet", "targets", "--hosts", "db1", "db2", "--output", str(path))
    assert result.returncode == 0, result.stderr
    assert "2 targets" in result.stderr and result.stdout == ""
    assert [g["labels"]["host"] for g in json.loads(path.read_text())] == ["db1", "db2"]
    assert os.stat(path).st_ino != inode                 # renamed over, never rewritten in place
    assert sorted(p.name for p in out_dir.iterdir()) == ["fleet.json"]   # no temp file left behind
    assert oct(os.stat(path).st_mode & 0o777) == "0o644"


def test_fleet_targets_output_at_a_symlink_refused_never_written_through(tmp_path):
    victim = tmp_path / "prometheus.yml"
    victim.write_text("scrape_configs: []\n")
    link = tmp_path / "fleet.json"
    link.symlink_to(victim)
    result = run_cli("fleet", "targets", "--hosts", "db1", "--output", str(link))
    assert result.returncode != 0 and f"cannot write {link}: is a symbolic link (to {victim})" in result.stderr
    assert victim.read_text() == "scrape_configs: []\n" and link.is_symlink()


@pytest.mark.parametrize("args, message", [
    (["--hosts", "db1", "--label", "__address__=x"], "invalid label"),
    (["--hosts", "db1", "--label", "env"], "invalid label"),
    (["--hosts", "db1", "db1:9469"], "listed twice"),
    (["--hosts", "bad host"], "invalid host"),
    (["--hosts", "db1:99999"], "invalid port"),
    (["--hosts", "./no-such-list"], "cannot read the host list"),
    (["--hosts", "db1", "--port", "0"], "invalid --port"),
])
def test_fleet_targets_mistakes_are_usage_errors(args, message):
    code, _, stderr = targets(*args)
    assert code == 2 and message in stderr


def test_fleet_targets_bad_label_in_a_host_file_names_the_line(tmp_path):
    hosts = tmp_path / "hosts"
    hosts.write_text("db1\ndb2 role\n")
    code, _, stderr = targets("--hosts", str(hosts))
    assert code == 2 and f"{hosts}:2: invalid label 'role'" in stderr


def test_fleet_target_of_keeps_an_explicit_port_and_brackets_ipv6():
    assert target_of("[fe80::1]:9470", 9469) == ("[fe80::1]:9470", "fe80::1")
    assert target_of("10.0.0.5", 9469) == ("10.0.0.5:9469", "10.0.0.5")


@pytest.mark.skipif(not have("promtool"), reason="promtool missing (Debian package prometheus)")
def test_fleet_targets_file_is_accepted_by_prometheus(tmp_path):
    path = tmp_path / "fleet.json"
    assert run_cli("fleet", "targets", "--hosts", "db1", "::1", "--label", "env=prod",
                   "--output", str(path)).returncode == 0
    config = tmp_path / "prometheus.yml"
    config.write_text(f"scrape_configs:\n  - job_name: maint-agent\n    file_sd_configs: [{{files: ['{path}']}}]\n")
    out = subprocess.run(["promtool", "check", "config", str(config)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "WARNING" not in out.stdout + out.stderr, out.stdout + out.stderr
