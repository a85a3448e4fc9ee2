"""What `check NAME`, `checks` and `config show` print reads in human units with the thresholds that
applied (JSON and CSV keep base units), and a one-off `check` writes nothing anywhere."""

from __future__ import annotations

import json
import re

import pytest

from agent.plugin.units import duration_text, format_duration, parse_duration, parse_ratio, parse_size, ratio_text, size_text
from tests.conftest import run_cli


def test_check_table_shows_human_units_and_the_thresholds_that_applied(write_config, tmp_path):
    config = write_config(f"""
        agent: {{state_dir: {tmp_path}/var}}
        checks:
          - {{name: disk-root, type: disk, every: 1m, mounts: [/], warning: 80%, critical: 99.9%, for: 5m}}
    """)
    out = run_cli("check", "disk-root", config=config)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].split() == ["CHECK", "STATUS", "DURATION", "SUMMARY"]
    assert re.match(r"disk-root\s+ok\s+[\d.]+(µs|ms)\s", lines[1]), lines[1]
    used = next(line for line in lines if line.strip().startswith("used_ratio{mount=/}"))
    assert re.search(r"\s\d+(\.\d)?%\s+\(warning > 80%, critical > 99\.9%\)$", used), used
    free = next(line for line in lines if line.strip().startswith("free_bytes{mount=/}"))
    assert re.search(r"\s\d+\.\d(KiB|MiB|GiB|TiB)$", free) and "e+" not in free, free
    assert "thresholds: warning > 80%, critical > 99.9% on used_ratio, inodes_used_ratio; held for 5m" in lines
    assert any(line.startswith("not recorded: a one-off run writes nothing") for line in lines)


def test_check_json_keeps_base_units_and_the_thresholds(write_config, tmp_path):
    config = write_config(f"""
        agent: {{state_dir: {tmp_path}/var}}
        checks:
          - {{name: disk-root, type: disk, every: 1m, mounts: [/], warning: 80%, critical: 99.9%}}
    """)
    row = json.loads(run_cli("check", "disk-root", "--format", "json", config=config).stdout)[0]
    assert 0 < row["metrics"]["used_ratio{mount=/}"] < 1 and row["metrics"]["free_bytes{mount=/}"] > 1024
    assert row["thresholds"] == {"metrics": ["used_ratio", "inodes_used_ratio"], "unit": "ratio", "bad_when": "above",
                                 "warning": 0.8, "critical": pytest.approx(0.999), "for_seconds": 0.0}
    assert row["recorded"] is False and isinstance(row["duration_seconds"], float)


def test_sub_millisecond_durations_keep_their_digits_as_microseconds(closed_port, write_config, tmp_path):
    assert format_duration(0.00025) == "250µs" and format_duration(0.0015) == "1.5ms"
    assert format_duration(0.15) == "150ms" and format_duration(0) == "0ms"
    import socket
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    try:
        config = write_config(f"""
            agent: {{state_dir: {tmp_path}/var}}
            checks:
              - {{name: lat, type: network_latency, every: 1m, targets: ["127.0.0.1:{server.getsockname()[1]}"]}}
        """)
        out = run_cli("check", "lat", "--format", "json", config=config)
    finally:
        server.close()
    summary = json.loads(out.stdout)[0]["summary"]
    assert re.fullmatch(r"connect 127\.0\.0\.1:\d+ [\d.]+(µs|ms)", summary) and " 0.0ms" not in summary, summary


def test_checks_marks_disabled_checks_and_shows_a_compact_schedule(write_config, tmp_path):
    config = write_config(f"""
        agent: {{state_dir: {tmp_path}/var}}
        checks:
          - {{name: cpu, type: cpu, every: 15s}}
          - {{name: quarterly-load, type: load, schedule: quarterly}}
          - {{name: workers, type: process, every: 30s, process_name: celery, enabled: false}}
    """)
    lines = run_cli("checks", config=config).stdout.splitlines()
    rows = {line.split()[0]: line for line in lines[1:]}
    assert re.search(r"\bevery 15s\b", rows["cpu"])
    assert "quarterly jan,apr,jul,oct 1 05:00" in rows["quarterly-load"]
    assert re.search(r"^workers\s+process\s+every 30s\s+disabled\s", rows["workers"]), rows["workers"]
    assert max(len(line) for line in lines) < 120
    data = {r["check"]: r for r in json.loads(run_cli("checks", "--format", "json", config=config).stdout)}
    assert data["workers"]["enabled"] is False and data["workers"]["next_due"] is None


def test_config_show_prints_durations_sizes_and_ratios_as_written_and_reads_back_the_same(write_config, tmp_path):
    config = write_config(f"""
        agent: {{state_dir: {tmp_path}/var, check_timeout: 45s}}
        store: {{retention: {{raw: 90d}}}}
        checks:
          - {{name: disk-root, type: disk, every: 1m30s, warning: 85%, critical: 92.5%, for: 5m}}
          - {{name: mem, type: memory, every: 250ms}}
    """)
    out = run_cli("config", "show", config=config)
    assert out.returncode == 0, out.stderr
    text = out.stdout
    for line in ("    raw: 90d", "    rollups: 730d", "  check_timeout: 45s", " warning: 85%", "  critical: 92.5%",
                 "  every: 1m30s", "  for: 5m", "  every: 250ms"):
        assert line in text, line
    assert "7776000" not in text and "0.85" not in text
    again = write_config(text, name="shown.yaml")
    assert run_cli("config", "show", config=again).stdout.split("\n", 1)[1] == text.split("\n", 1)[1], \
        "what config show prints is a config that shows the same"


@pytest.mark.parametrize("seconds", [0, 0.25, 0.0005, 1.5, 59, 90, 3600, 93784.5, 7776000])
def test_duration_text_parses_back_exactly(seconds):
    assert parse_duration(duration_text(seconds)) == pytest.approx(seconds, abs=1e-9)


@pytest.mark.parametrize("size", [0, 1, 1234, 1024, 10 * 2**30, 500 * 10**6])
def test_size_text_parses_back_exactly(size):
    assert parse_size(size_text(size)) == size


@pytest.mark.parametrize("ratio", [0.85, 0.855, 0.07, 1.0, 0.999])
def test_ratio_text_parses_back_exactly(ratio):
    assert parse_ratio(ratio_text(ratio)) == pytest.approx(ratio)


def test_a_one_off_check_writes_no_baseline_and_no_store(write_config, tmp_path):
    watched = tmp_path / "etc"
    watched.mkdir()
    (watched / "app.conf").write_text("port = 1\n")
    state = tmp_path / "var"
    config = write_config(f"""
        agent: {{state_dir: {state}}}
        checks:
          - {{name: config-files, type: config_drift, every: 1h, paths: [{watched}]}}
    """)
    out = run_cli("check", "config-files", "--format", "json", config=config)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)[0]["summary"].startswith("no baseline yet (1 file)")
    assert not state.exists(), f"a one-off check wrote {sorted(p.name for p in state.rglob('*'))}"
