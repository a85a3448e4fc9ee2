"""Checklists: local periods (DST, quarters), automated items from the runs of the period, manual ticks,
and `maint-agent checklist` as the operator uses it."""

import json
import re
import time
from datetime import datetime, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import yaml

from agent.config.checklists import CHECKLIST_PERIODS, ChecklistItem, ChecklistsSection
from agent.reports.checklist import (checklist_status, period_bounds,
                             period_label)
from agent.cli.log import CHECKLISTS
from agent.plugin.storefile import open_readonly
from agent.plugin.result import Evaluated, Status, sample
from agent.store.writer import Store
from tests.conftest import run_cli

BERLIN = ZoneInfo("Europe/Berlin")
HAVANA = ZoneInfo("America/Havana")   # DST starts at midnight: 00:00 on 2026-03-08 does not exist
REPO = Path(__file__).resolve().parents[2]


def local(tz, *parts) -> float:
    return datetime(*parts, tzinfo=tz).timestamp()


def utc(*parts) -> float:
    return datetime(*parts, tzinfo=timezone.utc).timestamp()


# -- period_bounds (pure) -------------------------------------------------------------------------------


def test_period_bounds_day_of_spring_forward_is_23_hours():
    start, end = period_bounds("day", local(BERLIN, 2026, 3, 29, 12), BERLIN)
    assert (start, end) == (utc(2026, 3, 28, 23), utc(2026, 3, 29, 22))
    assert end - start == 23 * 3600


def test_period_bounds_week_runs_monday_to_monday_across_dst():
    sunday_night = local(BERLIN, 2026, 3, 29, 23, 59, 59)
    start, end = period_bounds("week", sunday_night, BERLIN)
    assert (start, end) == (local(BERLIN, 2026, 3, 23), local(BERLIN, 2026, 3, 30))
    assert end - start == 7 * 86400 - 3600
    assert period_bounds("week", end, BERLIN)[0] == end   # Monday 00:00 opens the next week


def test_period_bounds_month_of_fall_back_is_one_hour_longer():
    start, end = period_bounds("month", local(BERLIN, 2026, 10, 31, 23, 30), BERLIN)
    assert (start, end) == (local(BERLIN, 2026, 10, 1), local(BERLIN, 2026, 11, 1))
    assert end - start == 31 * 86400 + 3600


@pytest.mark.parametrize("at, first, following", [
    ((2026, 3, 31, 23, 59, 59), (2026, 1, 1), (2026, 4, 1)),
    ((2026, 4, 1, 0, 0, 0), (2026, 4, 1), (2026, 7, 1)),
    ((2026, 9, 30, 12, 0, 0), (2026, 7, 1), (2026, 10, 1)),
    ((2026, 12, 31, 23, 0, 0), (2026, 10, 1), (2027, 1, 1)),
])
def test_period_bounds_quarter_starts_jan_apr_jul_oct(at, first, following):
    assert period_bounds("quarter", local(BERLIN, *at), BERLIN) == (local(BERLIN, *first), local(BERLIN, *following))


def test_period_bounds_midnight_swallowed_by_dst_starts_at_first_existing_instant():
    start, end = period_bounds("day", local(HAVANA, 2026, 3, 8, 12), HAVANA)
    assert start == utc(2026, 3, 8, 5)       # 01:00 CDT, the first instant of that local day
    assert end == utc(2026, 3, 9, 4)         # next midnight, CDT
    assert period_bounds("day", start - 1, HAVANA)[1] == start   # the day before ends where this one starts


def test_period_bounds_unknown_period_raises():
    with pytest.raises(ValueError, match="unknown period 'fortnight'"):
        period_bounds("fortnight", 0, BERLIN)


def test_period_label_names_each_period():
    at = local(BERLIN, 2026, 11, 3, 10)
    assert [period_label(p, period_bounds(p, at, BERLIN)[0], BERLIN) for p in ("day", "week", "month", "quarter")] \
        == ["2026-11-03", "2026-W45", "2026-11", "2026-Q4"]


def test_checklist_names_match_the_cli_words():
    assert tuple(CHECKLIST_PERIODS) == CHECKLISTS == tuple(ChecklistsSection.model_fields)


# -- checklist_status against a real store --------------------------------------------------------------


def run(check: str, started: float, status: Status = Status.OK) -> Evaluated:
    return Evaluated(check, "nagios", status, f"{check} {status.label}", (sample("value", 1),), {}, started, 0.01,
                     started)


WEEK = (local(BERLIN, 2026, 11, 2), local(BERLIN, 2026, 11, 9))
SECTION = ChecklistsSection(weekly=(
    ChecklistItem(id="one", title="One check", checks=("a",)),
    ChecklistItem(id="two", title="Two checks", checks=("a", "b")),
    ChecklistItem(id="gap", title="A check that did not run", checks=("a", "c")),
    ChecklistItem(id="review", title="Security review", manual=True),
    ChecklistItem(id="untouched", title="Nobody did it"),
), daily=(ChecklistItem(id="review", title="Daily review"),))


@pytest.fixture
def week_store(tmp_path):
    store = Store(tmp_path / "s.db")
    start, end = WEEK
    store.record_runs([
        run("a", start - 60, Status.CRITICAL),          # last week: does not count
        run("a", start), run("a", start + 3600, Status.WARNING), run("a", end - 1),
        run("b", start + 7200, Status.UNKNOWN),
        run("c", start - 3600), run("c", end),           # before and after, never inside
    ])
    store.add_log("old tick", at=start - 10, category="checklist", author="carol", source="cli",
                  check_name="weekly.review")
    store.add_log("first look", at=start + 100, category="checklist", author="alice", source="cli",
                  check_name="weekly.review")
    store.add_log("patched openssl", at=start + 200, category="checklist", author="bob", source="cli",
                  check_name="weekly.review")
    store.add_log("a daily tick", at=start + 300, category="checklist", author="dan", source="cli",
                  check_name="daily.untouched")
    store.add_log("not a tick", at=start + 400, category="other", author="eve", source="cli",
                  check_name="weekly.untouched")
    yield store
    store.close()


def test_checklist_status_automated_items_done_when_each_check_ran_with_worst_status(week_store):
    items = {i["id"]: i for i in checklist_status(open_readonly(week_store.path), SECTION, "week", *WEEK)}
    one = items["one"]
    assert (one["kind"], one["done"], one["status"], one["runs"], one["last_run"], one["missing"]) == \
        ("automated", True, "warning", 3, WEEK[1] - 1, [])
    assert (items["two"]["done"], items["two"]["status"], items["two"]["runs"]) == (True, "unknown", 4)
    assert (items["gap"]["done"], items["gap"]["status"], items["gap"]["missing"]) == (False, "warning", ["c"])


def test_checklist_status_manual_item_takes_latest_tick_of_its_own_checklist(week_store):
    items = {i["id"]: i for i in checklist_status(week_store.conn, SECTION, "week", *WEEK)}
    review = items["review"]
    assert (review["kind"], review["done"], review["status"]) == ("manual", True, None)
    assert (review["ticked_by"], review["ticked_at"], review["note"]) == ("bob", WEEK[0] + 200, "patched openssl")
    assert items["untouched"]["done"] is False and items["untouched"]["ticked_by"] is None
    assert [i["id"] for i in checklist_status(week_store.conn, SECTION, "week", *WEEK)] == \
        ["one", "two", "gap", "review", "untouched"]   # config order


def test_checklist_status_previous_period_sees_only_its_own_runs(week_store):
    previous = (WEEK[0] - 7 * 86400, WEEK[0])
    items = {i["id"]: i for i in checklist_status(week_store.conn, SECTION, "week", *previous)}
    assert (items["one"]["status"], items["one"]["runs"]) == ("critical", 1)
    assert items["two"]["missing"] == ["b"]
    assert items["review"]["note"] == "old tick"


def test_checklist_status_counts_runs_pruned_by_retention_from_daily_rollups(tmp_path):
    """A quarterly DR test runs on the quarter's first day; 90 days of raw retention prune it before
    the quarter ends. The item must stay done, and keep its status."""
    store = Store(tmp_path / "s.db")
    quarter = period_bounds("quarter", local(BERLIN, 2026, 11, 15), BERLIN)
    first_day = quarter[0] + 5 * 3600
    store.record_runs([run("restore", first_day, Status.CRITICAL), run("restore", first_day + 60),
                       run("disk", first_day + 120)])
    store.record_runs([run("disk", quarter[0] + 86400 * d + 3600) for d in range(1, 40)])
    now = quarter[1] - 3600
    store.rollup_and_prune(now, BERLIN, keep_raw=now - (quarter[0] + 86400 + 1800), keep_rollups=800 * 86400)
    assert store.conn.execute("SELECT count(*) FROM check_runs WHERE started < ?",
                              (quarter[0] + 86400,)).fetchone()[0] == 0   # the first day is gone from raw runs
    section = ChecklistsSection(quarterly=(ChecklistItem(id="dr", title="DR test", checks=("restore",)),
                                           ChecklistItem(id="capacity", title="Capacity", checks=("disk",))))
    dr, capacity = checklist_status(store.conn, section, "quarter", *quarter, tz=BERLIN)
    assert (dr["done"], dr["status"], dr["runs"]) == (True, "critical", 2)
    assert dr["last_run"] == quarter[0]          # known to the day only, from the rollup
    assert (capacity["runs"], capacity["last_run"]) == (40, quarter[0] + 86400 * 39 + 3600)
    without_zone = checklist_status(store.conn, section, "quarter", *quarter)
    assert without_zone[0]["done"] is False      # raw runs only
    store.close()


def test_checklist_status_fresh_store_uses_raw_runs_of_today(tmp_path):
    store = Store(tmp_path / "s.db")
    day = period_bounds("day", local(BERLIN, 2026, 11, 3, 12), BERLIN)
    store.record_runs([run("a", day[0] + 3600)])
    store.set_state("rollup_through", "2026-11-02")   # the daemon rolled up yesterday, when nothing ran yet
    section = ChecklistsSection(daily=(ChecklistItem(id="x", title="X", checks=("a",)),))
    assert checklist_status(store.conn, section, "day", *day, tz=BERLIN)[0]["done"] is True
    store.close()


def test_checklist_status_unknown_period_raises(week_store):
    with pytest.raises(ValueError, match="unknown period"):
        checklist_status(week_store.conn, SECTION, "weekly", *WEEK)


# -- config -------------------------------------------------------------------------------------------------


def test_checklist_config_rejects_duplicates_both_kinds_and_unknown_checks(write_config):
    config = write_config("""
        checks:
          - {name: disk, type: disk, every: 1m}
        checklists:
          weekly:
            - {id: a, title: A, checks: [disk], manual: true}
            - {id: b, title: B, checks: [dsk]}
          monthly:
            - {id: c, title: C}
            - {id: c, title: again}
    """)
    out = run_cli("config", "check", str(config))
    assert out.returncode == 2
    assert f"{config}:5: checklists.weekly[0]: an item is either bound to checks or manual" in out.stderr
    assert f"{config}:7: checklists.monthly: duplicate item id 'c'" in out.stderr
    fixed = config.read_text().replace(", manual: true", "").replace("{id: c, title: again}", "{id: d, title: D}")
    config.write_text(fixed)
    out = run_cli("config", "check", str(config))
    assert "checklists.weekly[1].checks[0]: no check named 'dsk' (did you mean 'disk'?)" in out.stderr


def test_example_profile_carries_the_seed_checklists_bound_to_its_checks():
    """Only the checklists: the whole profile's validation (with credentials) is tests/test_examples.py's."""
    data = yaml.safe_load((REPO / "examples" / "ai-camera.yaml").read_text())
    section = ChecklistsSection.model_validate(data["checklists"])
    kinds = {f"{name}.{item.id}": item.kind for name in CHECKLISTS for item in section.items(name)}
    assert kinds["daily.system-health"] == kinds["daily.backup-verification"] == "automated"
    assert kinds["monthly.disaster-recovery-test"] == "automated"
    assert kinds["monthly.team-training"] == kinds["weekly.documentation-update"] == "manual"
    assert kinds["monthly.process-review"] == kinds["weekly.security-review"] == "manual"
    assert all(len(section.items(name)) == 5 for name in CHECKLISTS)
    bound = {check for name in CHECKLISTS for item in section.items(name) for check in item.checks}
    from agent.config.includes import read_checks_fast
    assert bound <= set(read_checks_fast(REPO / "examples" / "ai-camera.yaml", data)), "defined here or in conf.d"


# -- the command ------------------------------------------------------------------------------------------


@pytest.fixture
def checklist_config(write_config, tmp_path):
    config = write_config(f"""
        agent: {{state_dir: {tmp_path}/var, timezone: Europe/Berlin}}
        checks:
          - {{name: disk, type: disk, every: 1m}}
          - {{name: restore, type: nagios, schedule: monthly, command: [/bin/true]}}
        checklists:
          weekly:
            - {{id: capacity, title: Capacity planning, checks: [disk]}}
            - {{id: security-review, title: Security review}}
          monthly:
            - {{id: dr-test, title: Disaster recovery test, checks: [restore]}}
    """)
    store = Store(tmp_path / "var" / "maint-agent.db")
    store.record_runs([run("disk", time.time())])
    store.close()
    return config


def test_cli_checklist_shows_period_items_and_exits_one_until_all_done(checklist_config):
    out = run_cli("checklist", "weekly", config=checklist_config)
    assert out.returncode == 1, out.stderr
    lines = out.stdout.splitlines()
    header = lines[0].split()
    assert header[:6] + header[7:] == ["ITEM", "TITLE", "PERIOD", "DONE", "STATUS", "WHEN", "BY", "DETAIL"]
    assert header[6] in ("(CET)", "(CEST)"), "times in the agent's zone, named"
    assert lines[1].startswith("weekly.capacity ") and " yes " in lines[1] and "1 runs" in lines[1]
    assert lines[2].startswith("weekly.security-review ") and " no " in lines[2]

    done = run_cli("checklist", "done", "weekly.security-review", "--note", "CVE review: nothing open", "--by",
                   "alice", config=checklist_config)
    assert done.returncode == 0, done.stderr
    assert "ticked weekly.security-review (Security review)" in done.stdout and "by alice" in done.stdout
    out = run_cli("checklist", "weekly", "--format", "json", config=checklist_config)
    assert out.returncode == 0, out.stderr
    review = json.loads(out.stdout)[1]
    assert (review["item"], review["done"], review["ticked_by"], review["note"]) == \
        ("weekly.security-review", True, "alice", "CVE review: nothing open")
    assert review["ticked_at"].endswith("Z") and re.fullmatch(r"\d{4}-W\d{2}", review["period"])


def test_cli_checklist_without_name_lists_every_checklist(checklist_config):
    out = run_cli("checklist", "--format", "csv", config=checklist_config)
    assert out.returncode == 1   # the monthly DR test has not run
    rows = out.stdout.splitlines()
    assert rows[0].startswith("item,checklist,period,period_start,period_end,id,title,kind,done,status")
    assert [r.split(",")[0] for r in rows[1:]] == ["weekly.capacity", "weekly.security-review", "monthly.dr-test"]


def test_cli_checklist_options_before_the_checklist_word_are_kept(checklist_config, tmp_path):
    out = run_cli("checklist", "--format", "json", "--config", str(checklist_config), "weekly")
    assert out.returncode == 1 and json.loads(out.stdout)[0]["item"] == "weekly.capacity"


def test_cli_checklist_at_shows_an_earlier_period(checklist_config):
    run_cli("checklist", "done", "weekly.security-review", "--note", "looked", "--at", "8d", config=checklist_config,
            check=True)
    earlier = json.loads(run_cli("checklist", "weekly", "--at", "8d", "--format", "json",
                                 config=checklist_config).stdout)
    now = json.loads(run_cli("checklist", "weekly", "--format", "json", config=checklist_config).stdout)
    assert earlier[1]["done"] is True and now[1]["done"] is False
    assert earlier[0]["done"] is False and earlier[0]["period"] != now[0]["period"]


def test_cli_checklist_done_unknown_item_exits_two_with_hint(checklist_config):
    out = run_cli("checklist", "done", "weekly.security-reveiw", "--note", "x", config=checklist_config)
    assert out.returncode == 2
    assert "no checklist item named 'weekly.security-reveiw' (did you mean 'weekly.security-review'?)" in out.stderr
    bare = run_cli("checklist", "done", "security-review", "--note", "x", config=checklist_config)
    assert bare.returncode == 2 and "did you mean 'weekly.security-review'" in bare.stderr


def test_cli_checklist_done_refuses_automated_items_and_empty_notes(checklist_config):
    automated = run_cli("checklist", "done", "weekly.capacity", "--note", "x", config=checklist_config)
    assert automated.returncode == 2 and "automated: it is done when disk ran this week" in automated.stderr
    empty = run_cli("checklist", "done", "weekly.security-review", "--note", "  ", config=checklist_config)
    assert empty.returncode == 2 and "--note is empty" in empty.stderr
    missing = run_cli("checklist", "done", "weekly.security-review", config=checklist_config)
    assert missing.returncode == 2 and "--note" in missing.stderr
    future = run_cli("checklist", "done", "weekly.security-review", "--note", "x", "--at", "2999-01-01",
                     config=checklist_config)
    assert future.returncode == 2 and "in the future" in future.stderr


def test_cli_checklist_without_store_exits_two(write_config, tmp_path):
    config = write_config(f"agent: {{state_dir: {tmp_path}/nowhere}}\n")
    out = run_cli("checklist", config=config)
    assert out.returncode == 2 and "no store" in out.stderr


@pytest.mark.parametrize("command", [["checklist"], ["checklist", "weekly"], ["checklist", "done"]])
def test_cli_checklist_help_exits_zero(command):
    out = run_cli(*command, "--help")
    assert out.returncode == 0 and "usage: maint-agent checklist" in out.stdout
