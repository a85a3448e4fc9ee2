"""The SQLite store: migrations, WAL reads beside the writer, rollups and retention."""

import json
import os
import sqlite3
import threading
import time
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from agent.store.history import latest_runs, runs

from agent.plugin.storefile import StoreUnusable, open_readonly
from agent.plugin.result import Evaluated, Status, sample
from agent.store.writer import SCHEMA_VERSION, Store

UTC = ZoneInfo("UTC")


def run(check="disk", started=1000.0, status=Status.OK, value=0.5):
    return Evaluated(check, "disk", status, f"{check} {value}", (sample("used_ratio", value, mount="/"),), {},
                     started, 0.01, started)


def test_store_new_file_is_wal_at_current_schema(tmp_path):
    store = Store(tmp_path / "s.db")
    assert store.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert store.conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    store.close()
    Store(tmp_path / "s.db").close()   # reopening migrates nothing and keeps working


def test_store_newer_schema_refused(tmp_path):
    conn = sqlite3.connect(tmp_path / "s.db")
    conn.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(RuntimeError, match="newer than this agent"):
        Store(tmp_path / "s.db")


def _modes(*paths) -> dict[str, str]:
    return {path.name: oct(path.stat().st_mode & 0o777) for path in paths}


@pytest.fixture
def umask():
    """Set the process umask for one test, as a careless start (a shell with umask 000) would."""
    previous = os.umask(0o022)
    yield os.umask
    os.umask(previous)


def test_store_new_files_private_whatever_the_umask(tmp_path, umask):
    umask(0o000)
    path = tmp_path / "state" / "s.db"
    store = Store(path)
    store.record_runs([run()])
    assert _modes(path.parent, path, Path(f"{path}-wal"), Path(f"{path}-shm")) == {
        "state": "0o700", "s.db": "0o600", "s.db-wal": "0o600", "s.db-shm": "0o600"}
    store.close()


def test_store_existing_wide_files_narrowed_and_reported(tmp_path, umask):
    umask(0o000)
    path = tmp_path / "s.db"
    store = Store(path)
    store.record_runs([run()])
    for file in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
        file.chmod(0o644)
    reopened = Store(path)   # the first one still holds the -wal and -shm open
    assert sorted((file.name, oct(mode)) for file, mode in reopened.narrowed) == [
        ("s.db", "0o644"), ("s.db-shm", "0o644"), ("s.db-wal", "0o644")]
    assert set(_modes(path, Path(f"{path}-wal"), Path(f"{path}-shm")).values()) == {"0o600"}
    assert [r["summary"] for r in runs(open_readonly(path))] == ["disk 0.5"]   # narrowed, not rewritten
    reopened.close()
    store.close()


@pytest.mark.parametrize("content", [os.urandom(4096), b"SQLite format 2\x00" + bytes(100), b"not a db\n"],
                         ids=["random", "other-header", "text"])
def test_store_not_a_database_refused_naming_the_file_never_touched(tmp_path, content):
    path = tmp_path / "s.db"
    path.write_bytes(content)
    path.chmod(0o644)
    with pytest.raises(StoreUnusable) as caught:
        Store(path)
    assert str(caught.value) == (f"store {path} is not a usable SQLite database (file is not a database): move it "
                                 f"aside (mv {path} {path}.bad) and start again; the agent never overwrites it")
    assert path.read_bytes() == content and oct(path.stat().st_mode & 0o777) == "0o644"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.db"]
    with pytest.raises(StoreUnusable, match=f"store {path} is not a usable SQLite database"):
        open_readonly(path)


def test_store_runs_round_trip_with_metrics_json(tmp_path):
    store = Store(tmp_path / "s.db")
    store.record_runs([run(started=1000.0), run(started=1060.0, status=Status.CRITICAL, value=0.95)])
    conn = open_readonly(tmp_path / "s.db")
    rows = runs(conn, check="disk")
    assert [r["status"] for r in rows] == [2, 0]
    assert json.loads(rows[0]["metrics"]) == {"used_ratio{mount=/}": 0.95}
    assert latest_runs(conn)[0]["status"] == 2
    assert store.scheduler_state()["disk"][1] == 1060.0


def test_store_readonly_reader_never_blocks_writer(tmp_path):
    store = Store(tmp_path / "s.db")
    store.record_runs([run(started=1.0)])
    reader = open_readonly(tmp_path / "s.db")
    errors, written = [], []

    def write():
        try:
            for i in range(200):
                store.record_runs([run(started=10.0 + i)])
                written.append(i)
        except Exception as exc:  # noqa: BLE001 - the assertion is that nothing is raised
            errors.append(exc)

    writer = threading.Thread(target=write)
    writer.start()
    reads = 0
    while writer.is_alive():
        reader.execute("BEGIN")
        assert runs(reader, limit=None)       # a long read transaction while the writer commits
        reader.execute("COMMIT")
        reads += 1
    writer.join()
    assert not errors and len(written) == 200 and reads > 0
    with pytest.raises(sqlite3.OperationalError, match="readonly"):
        reader.execute("DELETE FROM check_runs")


def test_store_rollup_keeps_daily_counts_and_min_avg_max_then_prunes_raw(tmp_path):
    store = Store(tmp_path / "s.db")
    day1 = datetime(2026, 1, 10, tzinfo=UTC).timestamp()
    store.record_runs([run(started=day1 + 60, value=0.2), run(started=day1 + 120, value=0.6),
                       run(started=day1 + 180, status=Status.WARNING, value=0.85),
                       run(started=day1 + 86400 + 60, value=0.3)])
    now = day1 + 100 * 86400
    done = store.rollup_and_prune(now, UTC, keep_raw=90 * 86400, keep_rollups=730 * 86400)
    assert done["runs_pruned"] == 4
    rows = store.conn.execute("SELECT day, runs, ok, warning, metrics FROM check_rollups ORDER BY day").fetchall()
    assert rows[0][:4] == ("2026-01-10", 3, 2, 1)
    stats = json.loads(rows[0][4])["used_ratio{mount=/}"]
    assert stats["min"] == 0.2 and stats["max"] == 0.85 and abs(stats["avg"] - (0.2 + 0.6 + 0.85) / 3) < 1e-9
    assert rows[1][:2] == ("2026-01-11", 1)
    assert store.conn.execute("SELECT count(*) FROM check_runs").fetchone()[0] == 0
    again = store.rollup_and_prune(now, UTC, keep_raw=90 * 86400, keep_rollups=730 * 86400)
    assert again["days_rolled_up"] == 0, "days already rolled up are not redone"
    later = store.rollup_and_prune(day1 + 800 * 86400, UTC, keep_raw=90 * 86400, keep_rollups=730 * 86400)
    assert later["rollups_pruned"] == 2


def test_store_rollup_keeps_recent_raw_runs(tmp_path):
    store = Store(tmp_path / "s.db")
    now = time.time()
    store.record_runs([run(started=now - 3600)])
    store.rollup_and_prune(now, UTC, keep_raw=90 * 86400, keep_rollups=730 * 86400)
    assert store.conn.execute("SELECT count(*) FROM check_runs").fetchone()[0] == 1


def test_store_unserialisable_details_and_infinite_values_do_not_poison_batch(tmp_path):
    class Unserialisable:
        def __str__(self):
            raise ValueError("cannot serialise")

    store = Store(tmp_path / "s.db")
    odd = Evaluated("x", "disk", Status.OK, "s", (sample("a", float("inf")), sample("b", 1.0)),
                    {"v": Unserialisable()}, 1.0, 0.1, 1.0)
    store.record_runs([run(started=5.0), odd])
    metrics, details = store.conn.execute("SELECT metrics, details FROM check_runs WHERE started = 1.0").fetchone()
    assert json.loads(metrics) == {"b": 1.0}
    assert "not serialisable" in json.loads(details)["error"]
    assert store.rollup_and_prune(10 * 86400, UTC, 90 * 86400, 730 * 86400)["days_failed"] is None


def test_store_full_database_commits_nothing_and_keeps_check_ids_right(tmp_path):
    store = Store(tmp_path / "s.db")
    store.record_runs([run("first", started=1.0)])
    pages = store.conn.execute("PRAGMA page_count").fetchone()[0]
    store.conn.execute(f"PRAGMA max_page_count={pages}")      # the disk is full from here on
    big = [Evaluated("newcheck", "disk", Status.OK, "x" * 4000, (), {}, 10.0 + i, 0.1, 10.0 + i)
           for i in range(50)]
    with pytest.raises(sqlite3.OperationalError, match="full"):
        store.record_runs(big)
    assert not store.conn.in_transaction
    assert store.conn.execute("SELECT count(*) FROM check_runs").fetchone()[0] == 1
    store.conn.execute("PRAGMA max_page_count=1073741823")   # space returns
    store.record_runs([run("other", started=20.0), run("newcheck", started=21.0)])
    rows = dict(store.conn.execute(
        "SELECT r.started, c.name FROM check_runs r JOIN checks c ON c.id = r.check_id").fetchall())
    assert rows == {1.0: "first", 20.0: "other", 21.0: "newcheck"}


def test_store_same_check_same_instant_keeps_both_runs(tmp_path):
    store = Store(tmp_path / "s.db")
    store.record_runs([run(started=100.0, value=0.1), run(started=100.0, value=0.2)])
    assert store.conn.execute("SELECT count(*) FROM check_runs").fetchone()[0] == 2


def test_store_migrate_in_child_creates_schema_without_loading_sqlite_utils(tmp_path):
    import sys
    already = "sqlite_utils" in sys.modules
    store = Store(tmp_path / "child.db", migrate_in_child=True)
    assert store.conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    store.record_runs([run(started=1.0)])
    if not already:
        assert "sqlite_utils" not in sys.modules


def test_store_check_state_keeps_latest_result_and_window_past_retention(tmp_path):
    """A quarterly restore test outlives a 90-day raw retention: its latest result must not."""
    store = Store(tmp_path / "s.db")
    restore = Evaluated("restore", "restore_test", Status.OK, "restored in 47m", (
        sample("restore_last_success_timestamp_seconds", 1000.0), sample("restore_duration_seconds", 2832.0)),
        {"database": "maint_restore_x"}, 1000.0, 2832.0, 999.0)
    store.record_runs([restore], {"restore": ("key-1", None, None)})
    store.record_runs([run(started=2000.0, status=Status.CRITICAL), run(started=1500.0)],
                      {"disk": ("key-2", 1900.0, 1950.0)})            # an older run arriving late changes nothing
    store.rollup_and_prune(200 * 86400.0, UTC, keep_raw=90 * 86400.0, keep_rollups=730 * 86400.0)
    assert store.conn.execute("SELECT count(*) FROM check_runs").fetchone()[0] == 0
    states = store.check_states()
    store.close()
    assert states["restore"].run == restore
    assert (states["disk"].run.started, states["disk"].run.status) == (2000.0, Status.CRITICAL)
    assert states["disk"].run.samples == (sample("used_ratio", 0.5, mount="/"),)
    assert states["disk"].window == ("key-2", 1900.0, 1950.0)



def test_store_run_at_a_stored_instant_keeps_every_run_of_the_batch(tmp_path):
    """A clock stepped back onto an instant already stored: the clashing run moves on by a microsecond,
    the batch's other runs are stored as they are, none twice."""
    store = Store(tmp_path / "s.db")
    store.record_runs([run("disk", started=100.0)])
    store.record_runs([run("other", started=99.0), run("disk", started=100.0, value=0.7), run("disk", started=101.0)])
    rows = store.conn.execute("SELECT c.name, r.started, r.summary FROM check_runs r JOIN checks c ON c.id = r.check_id"
                              " ORDER BY c.name, r.started").fetchall()
    assert [(name, summary) for name, _, summary in rows] == [
        ("disk", "disk 0.5"), ("disk", "disk 0.7"), ("disk", "disk 0.5"), ("other", "other 0.5")]
    assert rows[1][1] == pytest.approx(100.000001)


def test_store_window_follows_every_change_across_batches(tmp_path):
    """A window equal to the last one committed is skipped; every change, and a window lost with a failed
    batch, still reaches the file."""
    store = Store(tmp_path / "s.db")
    for started, window in ((1.0, ("k", None, None)), (2.0, ("k", None, None)), (3.0, ("k", 2.5, None)),
                            (4.0, ("k", None, None))):
        store.record_runs([run(started=started)], {"disk": window})
        assert store.check_states()["disk"].window == window
    pages = store.conn.execute("PRAGMA page_count").fetchone()[0]
    store.conn.execute(f"PRAGMA max_page_count={pages}")      # the disk is full: this batch is lost
    with pytest.raises(sqlite3.OperationalError, match="full"):
        store.record_runs([Evaluated("disk", "disk", Status.OK, "x" * 40000, (), {}, 5.0, 0.1, 5.0)],
                          {"disk": ("k", 4.5, 4.5)})
    store.conn.execute("PRAGMA max_page_count=1073741823")
    store.conn.execute("UPDATE check_state SET options_key = 'other'")   # what the file holds no longer matches
    store.record_runs([run(started=6.0)], {"disk": ("k", None, None)})
    assert store.check_states()["disk"].window == ("k", None, None)


def test_store_sample_columns_are_the_json_encoders_text_for_every_kind_of_sample():
    """The sample columns are written by hand for float values and text labels: the same text as the JSON
    encoder, non-finite values left out, a repeated series once (its last value), anything else encoded."""
    from agent.plugin.result import Sample
    from agent.store.writer import _encode_samples, _encode_samples_slowly
    odd = [Sample("plain", 0.1), Sample("big", 1e300), Sample("tiny", -5e-324), Sample("int", 3),
           Sample("flag", True), Sample("inf", float("inf")), Sample("nan", float("nan")),
           Sample("used_ratio", 0.5, (("mount", '/mnt/"x",y=z'), ("ünit", "é\u2028\x00"))),
           Sample("used_ratio", 0.7, (("mount", '/mnt/"x",y=z'), ("ünit", "é\u2028\x00"))),
           Sample("numeric_label", 1.0, (("port", 5432),))]
    for kept in ([], odd[:3], odd[5:9], odd[:2] + odd[7:9], odd, odd[3:5], odd[9:]):
        result = Evaluated("x", "disk", Status.OK, "s", tuple(kept), {}, 1.0, 0.1, 1.0)
        assert _encode_samples(result) == _encode_samples_slowly(result), kept


def test_where_clause_leaves_out_absent_filters_and_spreads_lists():
    from agent.plugin.storefile import where_clause
    assert where_clause((("a = ?", None), ("b IN (?)", []), ("c IS NULL", False))) == ("", [])
    assert where_clause((("a = ?", 0.0), ("b IN (?)", [1, 2, 3]), ("c IS NULL", True), ("d < ?", "x"))) == (
        " WHERE a = ? AND b IN (?,?,?) AND c IS NULL AND d < ?", [0.0, 1, 2, 3, "x"])
