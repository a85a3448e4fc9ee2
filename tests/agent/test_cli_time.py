"""One time rule: what an operator types and what tables show is in the agent's zone (`agent.timezone`,
default the host's), named in the headers; JSON and CSV are ISO 8601 UTC, rounded to the millisecond
the same way in every format. The host here runs in UTC, the agent in Asia/Ho_Chi_Minh (+07)."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
from datetime import datetime, timezone

import pytest

from agent.plugin.result import Evaluated, Status, sample
from agent.store.writer import Store
from agent.timefmt import TableTime, iso_utc, parse_when
from tests.conftest import AGENT, REPO

HOST_UTC = {**os.environ, "TZ": "UTC"}
LATE_ON_2ND = datetime(2026, 12, 2, 16, 0, tzinfo=timezone.utc).timestamp()    # 23:00 on the 2nd at +07
EARLY_ON_3RD = datetime(2026, 12, 2, 18, 0, tzinfo=timezone.utc).timestamp()   # 01:00 on the 3rd at +07


def cli(*args: str, config) -> subprocess.CompletedProcess:
    return subprocess.run([*AGENT, *args, "--config", str(config)], cwd=REPO, capture_output=True, text=True,
                          timeout=60, env=HOST_UTC)


@pytest.fixture
def vietnam(write_config, tmp_path):
    config = write_config(f"""
        agent: {{state_dir: {tmp_path}/var, timezone: Asia/Ho_Chi_Minh}}
        checks:
          - {{name: disk, type: disk, every: 1m}}
          - {{name: nightly, type: load, schedule: daily}}
    """)
    store = Store(tmp_path / "var" / "maint-agent.db")
    store.record_runs([Evaluated("disk", "disk", Status.OK, name, (sample("used_ratio", 0.5, mount="/"),), {},
                                 ts, 0.01, ts) for name, ts in (("late on the 2nd", LATE_ON_2ND),
                                                                 ("early on the 3rd", EARLY_ON_3RD))])
    store.close()
    return config


def test_history_since_and_report_from_read_a_date_in_the_agent_zone_and_select_the_same_runs(vietnam):
    history = cli("history", "--since", "2026-12-03", "--until", "2026-12-04", "--format", "json", config=vietnam)
    assert history.returncode == 0, history.stderr
    assert [r["summary"] for r in json.loads(history.stdout)] == ["early on the 3rd"]
    report = cli("report", "--period", "day", "--from", "2026-12-03", "--format", "json", config=vietnam)
    assert report.returncode == 0, report.stderr
    disk = next(c for c in json.loads(report.stdout)["checks"] if c["check"] == "disk")
    assert disk["runs"] == 1, "the same words select the same runs"
    explicit = cli("history", "--since", "2026-12-03T00:00+07:00", "--format", "json", config=vietnam)
    assert len(json.loads(explicit.stdout)) == 1, "an explicit offset is taken as given"


def test_tables_show_agent_zone_times_and_name_the_zone_in_headers(vietnam):
    table = cli("history", config=vietnam).stdout.splitlines()
    assert table[0].startswith("STARTED (+07)")
    assert table[1].startswith("2026-12-03 01:00:00") and table[2].startswith("2026-12-02 23:00:00")
    checks = cli("checks", config=vietnam).stdout.splitlines()
    assert "NEXT DUE (+07)" in checks[0] and "LAST RUN (+07)" in checks[0]
    nightly = next(line for line in checks if line.startswith("nightly"))
    assert " 02:00:00 " in nightly and "daily 02:00" in nightly, "daily at 02:00 is due at 02:00 in the agent zone"


def test_json_and_csv_round_milliseconds_identically_in_every_format(write_config, tmp_path):
    config = write_config(f"agent: {{state_dir: {tmp_path}/var}}\n")
    moments = [1796000000.1495, 1796000000.1496, 1796000000.9996, 1796000000.0004, 1796000000.25]
    store = Store(tmp_path / "var" / "maint-agent.db")
    store.record_runs([Evaluated("c", "load", Status.OK, str(i), (), {}, ts, 0.0, ts) for i, ts in enumerate(moments)])
    store.close()
    expected = {str(i): iso_utc(ts) for i, ts in enumerate(moments)}
    assert expected["2"] == "2026-11-30T00:53:21.000Z", "rounds up into the next second"
    as_json = {r["summary"]: r["started"] for r in json.loads(cli("history", "--format", "json", config=config).stdout)}
    as_csv = {r["summary"]: r["started"] for r in csv.DictReader(io.StringIO(
        cli("history", "--format", "csv", config=config).stdout))}
    jsonl = {r["summary"]: r["started"] for r in map(json.loads, cli("history", "export", config=config)
                                                    .stdout.splitlines())}
    export_csv = {r["summary"]: r["started"] for r in csv.DictReader(io.StringIO(
        cli("history", "export", "--format", "csv", config=config).stdout))}
    export_json = {r["summary"]: r["started"] for r in json.loads(
        cli("history", "export", "--format", "json", config=config).stdout)}
    assert as_json == as_csv == jsonl == export_csv == export_json == expected


def test_parse_when_reads_dates_in_the_given_zone_and_durations_back_from_now():
    from zoneinfo import ZoneInfo
    tz = ZoneInfo("Asia/Ho_Chi_Minh")
    assert parse_when("2026-12-03", 0, tz) == datetime(2026, 12, 2, 17, tzinfo=timezone.utc).timestamp()
    assert parse_when("2026-12-03T08:00Z", 0, tz) == datetime(2026, 12, 3, 8, tzinfo=timezone.utc).timestamp()
    assert parse_when("2h", 10_000, tz) == 10_000 - 7200
    with pytest.raises(ValueError, match="invalid time 'yesterday'"):
        parse_when("yesterday", 0, tz)


def test_table_time_marks_a_cell_whose_offset_differs_from_the_header():
    from zoneinfo import ZoneInfo
    winter = datetime(2026, 1, 10, 12, tzinfo=timezone.utc).timestamp()
    summer = datetime(2026, 7, 10, 12, tzinfo=timezone.utc).timestamp()
    when = TableTime(ZoneInfo("Europe/Berlin"), winter)
    assert when.header("last_run") == "LAST RUN (CET)"
    assert when(winter) == "2026-01-10 13:00:00" and when(summer) == "2026-07-10 14:00:00 CEST"
