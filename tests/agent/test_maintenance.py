"""Maintenance windows on a fake clock: which checks are covered, when recurring windows begin and end,
expiry noticed after a restart, maintenance time in a period; then the CLI that opens and ends them."""

from __future__ import annotations

import json
import sqlite3
from datetime import datetime, timezone
from zoneinfo import ZoneInfo

import pytest

from agent.plugin.calendar import parse_calendar
from agent.maintenance import Recurring, Tracker, Window, coverage, occurrence, read_windows, seconds_in
from agent.store.writer import Store
from tests.conftest import run_cli

UTC = timezone.utc
BERLIN = ZoneInfo("Europe/Berlin")
SUNDAY_0200 = datetime(2026, 3, 1, 2, 0, tzinfo=UTC).timestamp()   # 2026-03-01 is a Sunday
HOUR = 3600.0


def window(id_=1, starts=0.0, ends=HOUR, checks=("pg",), **more) -> Window:
    return Window(id_, starts, ends, checks, more.pop("reason", "upgrade"), more.pop("author", "anna"),
                  more.pop("source", "cli"), **more)


def weekly(checks=("pg",), at="sun 02:00", seconds=2 * HOUR) -> Recurring:
    return Recurring("weekly-analyze", parse_calendar(at), seconds, checks, "weekly ANALYZE")


# -- pure -----------------------------------------------------------------------------------------------------

def test_coverage_names_each_covered_check_with_the_latest_end():
    windows = [window(1, 0, HOUR, ("pg",)), window(2, 0, 3 * HOUR, ("pg", "redis")), window(3, 0, 2 * HOUR, None)]
    assert coverage(windows, ["pg", "redis", "disk"], 60) == {"pg": 3 * HOUR, "redis": 3 * HOUR, "disk": 2 * HOUR}


def test_coverage_ignores_ended_expired_and_future_windows():
    windows = [window(1, 0, HOUR, ended=600), window(2, 0, 60), window(3, 7200, 9000)]
    assert coverage(windows, ["pg"], 700) == {}


def test_occurrence_holds_now_only_inside_the_window():
    assert occurrence(weekly(), SUNDAY_0200 + 60, UTC) == (SUNDAY_0200, SUNDAY_0200 + 2 * HOUR)
    assert occurrence(weekly(), SUNDAY_0200 + 2 * HOUR, UTC) is None
    assert occurrence(weekly(), SUNDAY_0200 - 1, UTC) is None


def test_occurrence_is_read_in_the_agent_time_zone():
    # 02:00 in Berlin is 01:00 UTC in winter
    start, _ = occurrence(weekly(), SUNDAY_0200 - HOUR + 60, BERLIN)
    assert start == SUNDAY_0200 - HOUR


def test_seconds_in_counts_overlapping_windows_once_and_clips_to_the_period():
    windows = [window(1, 0, 2 * HOUR), window(2, HOUR, 3 * HOUR), window(3, 10 * HOUR, 12 * HOUR, ended=11 * HOUR)]
    assert seconds_in(windows, 0, 100 * HOUR) == 4 * HOUR
    assert seconds_in(windows, 2.5 * HOUR, 10.5 * HOUR) == HOUR


# -- the daemon's tracker over a real store ----------------------------------------------------------------


class Logs:
    def __init__(self):
        self.lines: list[tuple[str, dict]] = []

    def __call__(self, message, **fields):
        self.lines.append((message, fields))


@pytest.fixture
def store(tmp_path):
    store = Store(tmp_path / "s.db")
    yield store
    store.close()


def tracker(store, recurring=(), checks=("pg", "redis")) -> tuple[Tracker, Logs]:
    logs = Logs()
    t = Tracker(store, logs)
    t.configure(recurring, checks, UTC)
    return t, logs


def test_tracker_records_a_recurring_window_once_and_logs_its_start_and_expiry(store):
    t, logs = tracker(store, [weekly()])
    covered, next_at = t.refresh(SUNDAY_0200 + 10)
    assert covered == {"pg": SUNDAY_0200 + 2 * HOUR} and next_at == SUNDAY_0200 + 2 * HOUR
    t.refresh(SUNDAY_0200 + 20)                                     # a second look records nothing new
    assert len(read_windows(store.conn)) == 1
    covered, next_at = t.refresh(SUNDAY_0200 + 2 * HOUR)
    assert covered == {} and next_at == SUNDAY_0200 + 7 * 86400
    [(started, fields), (expired, _)] = logs.lines
    assert "(weekly-analyze) started for pg, 2h" in started and fields["check_name"] == "pg"
    assert fields["category"] == "maintenance" and fields["at"] == SUNDAY_0200
    assert "expired after 2h (planned 2h) for pg: weekly ANALYZE" in expired


def test_tracker_window_that_expired_while_the_agent_was_down_ends_at_its_planned_end(store):
    store.open_window(window(0, 1000.0, 1000.0 + HOUR, None))
    t, logs = tracker(store)
    assert t.refresh(1000.0 + 5 * HOUR) == ({}, None)
    [ended] = read_windows(store.conn)
    assert (ended.ended, ended.end_reason, ended.ended_by) == (1000.0 + HOUR, "expired", "maint-agent")
    assert logs.lines[0][1]["at"] == 1000.0 + HOUR


def test_tracker_recurring_window_stopped_by_an_operator_is_not_reopened(store):
    t, _ = tracker(store, [weekly()])
    t.refresh(SUNDAY_0200 + 10)
    [current] = read_windows(store.conn)
    store.end_window(current.id, at=SUNDAY_0200 + 60, by="anna", reason="stopped")
    assert t.refresh(SUNDAY_0200 + 70)[0] == {}


def test_tracker_recurring_window_removed_from_the_config_ends(store):
    t, logs = tracker(store, [weekly()])
    t.refresh(SUNDAY_0200 + 10)
    t.configure([], ("pg",), UTC)
    assert t.refresh(SUNDAY_0200 + 20)[0] == {}
    assert read_windows(store.conn)[0].end_reason == "removed" and "removed from the config" in logs.lines[-1][0]


def test_tracker_covers_only_configured_checks(store):
    store.open_window(window(0, 0, 10 * HOUR, ("pg", "gone")))
    t, _ = tracker(store)
    assert t.refresh(60)[0] == {"pg": 10 * HOUR}


# -- store -----------------------------------------------------------------------------------------------------

def test_store_upgrade_seeds_each_checks_latest_state_from_its_runs(tmp_path):
    """A store written by the previous schema: the first restart after the upgrade keeps the statuses too."""
    from agent.store.writer import MIGRATIONS, SCHEMA_VERSION
    import sqlite_utils
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path)
    db = sqlite_utils.Database(conn)
    for migrate in MIGRATIONS[:2]:
        migrate(db)
    conn.execute("PRAGMA user_version=2")
    conn.execute("INSERT INTO checks(id, name, type) VALUES (1, 'disk', 'disk')")
    for started, status, used in ((100.0, 0, 0.5), (200.0, 2, 0.97)):
        conn.execute("INSERT INTO check_runs(check_id, started, duration, scheduled, status, pending, summary,"
                     " metrics) VALUES (1, ?, 0.1, ?, ?, 0, 'disk', ?)",
                     (started, started, status, json.dumps({"used_ratio{mount=/srv,x}": used, "count": 3})))
    conn.commit()
    conn.close()
    store = Store(path)
    assert store.conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    saved = store.check_states()["disk"]
    store.close()
    assert saved.run.status == 2 and saved.run.started == 200.0
    assert {(s.name, s.value, s.labels) for s in saved.run.samples} == {
        ("used_ratio", 0.97, (("mount", "/srv,x"),)), ("count", 3.0, ())}


# -- CLI ---------------------------------------------------------------------------------------------------------

CONFIG = """
agent: {state_dir: var}
maintenance:
  - {name: weekly-analyze, at: "sun 02:00", duration: 2h, checks: [pg], reason: weekly ANALYZE}
checks:
  - {name: pg, type: load, every: 1h}
  - {name: redis, type: memory, every: 1h}
"""


def listing(config) -> list[dict]:
    out = run_cli("maintenance", "list", "--format", "json", config=config)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_cli_maintenance_start_list_stop_with_log_and_exit_codes(write_config):
    config = write_config(CONFIG)
    out = run_cli("maintenance", "start", "pg", "--for", "2h", "--reason", "PG 15.8 upgrade", "--by", "anna",
                  config=config)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("maintenance #1 started for pg until ")
    [active, scheduled] = listing(config)
    assert (active["id"], active["state"], active["checks"], active["by"], active["reason"]) == \
        (1, "active", "pg", "anna", "PG 15.8 upgrade")
    assert 7190 < active["remaining_seconds"] <= 7200
    assert (scheduled["state"], scheduled["name"], scheduled["planned_seconds"]) == ("scheduled", "weekly-analyze", 7200)

    out = run_cli("maintenance", "stop", "1", "--by", "bo", config=config)
    assert out.returncode == 0 and "stopped after" in out.stdout, out.stderr
    assert run_cli("maintenance", "stop", "1", config=config).returncode == 1        # not in force any more
    assert run_cli("maintenance", "stop", "--all", config=config).returncode == 1
    assert listing(config)[-1]["state"] == "stopped" and listing(config)[-1]["ended_by"] == "bo"

    entries = json.loads(run_cli("log", "list", "--format", "json", config=config).stdout)
    assert [(e["category"], e["author"], e["check"]) for e in entries] == [("maintenance", "bo", "pg"),
                                                                             ("maintenance", "anna", "pg")]
    assert "stopped by bo after" in entries[0]["message"] and "PG 15.8 upgrade" in entries[0]["message"]
    assert "started for pg, 2h until" in entries[1]["message"]


@pytest.mark.parametrize("argv, message", [
    (["start", "--for", "1h", "--reason", "x"], "name the checks the work affects, or give --all"),
    (["start", "pg", "--all", "--for", "1h", "--reason", "x"], "not both"),
    (["start", "pgg", "--for", "1h", "--reason", "x"], "no check named 'pgg' (did you mean 'pg'?)"),
    (["start", "pg", "--for", "soon", "--reason", "x"], "--for:"),
    (["start", "pg", "--for", "8d", "--reason", "x"], "at most 7d"),
    (["start", "pg", "--for", "1h", "--reason", "  "], "--reason is empty"),
    (["stop"], "give the ID of a window"),
    (["stop", "7"], "no maintenance #7"),
])
def test_cli_maintenance_usage_errors_exit_two(write_config, argv, message):
    config = write_config(CONFIG)
    run_cli("maintenance", "start", "redis", "--for", "1h", "--reason", "creates the store", config=config)
    out = run_cli("maintenance", *argv, config=config)
    assert out.returncode == 2 and message in out.stderr, out.stderr


def test_cli_maintenance_help_and_bare_command():
    assert run_cli("maintenance", "--help").returncode == 0
    assert "--for DURATION" in run_cli("maintenance", "start", "--help").stdout
    assert run_cli("maintenance").returncode == 2


def test_cli_maintenance_list_csv_and_table_of_a_store_without_windows(write_config):
    config = write_config(CONFIG.replace("maintenance:\n  - {name: weekly-analyze, at: \"sun 02:00\", duration: 2h, "
                                         "checks: [pg], reason: weekly ANALYZE}\n", ""))
    run_cli("log", "add", "creates the store", config=config)
    assert run_cli("maintenance", "list", config=config).stdout == "(none)\n"
    assert run_cli("maintenance", "list", "--format", "csv", config=config).stdout.startswith("id,state,checks")
