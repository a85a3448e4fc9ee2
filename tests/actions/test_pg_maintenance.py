"""pg_maintenance against a real PostgreSQL 15 server started by the tests.

The operator story (seed 004: weekly ANALYZE, optimise indexes; seed 003: data
first): statistics are refreshed on the tables named in the config or flagged
by the pg_tables check, VACUUM (ANALYZE) and REINDEX CONCURRENTLY run only
where listed, a table the application holds locked is skipped after
lock_timeout instead of queueing the application behind us, a dry run changes
nothing, and a config that tries to slip SQL in (DROP, DELETE, TRUNCATE) is
refused at `config check`. The DSN's password never shows in a result.

Uses the session's stand-alone server (tests/fixtures/postgres.py `pg_single`)
with a database of its own, dropped at the end.
"""

from __future__ import annotations

import threading

import pytest
from pydantic import ValidationError

from actions.base import ActionContext, TriggerInfo
from actions.postgres import PgMaintenanceAction
from tests.conftest import run_cli, wait_for
from tests.fixtures.postgres import pg_single  # noqa: F401 (session fixture)

psycopg = pytest.importorskip("psycopg")
DB = "maint_actions"


@pytest.fixture(scope="module")
def db(pg_single):
    """A fresh database with tables t1..t4 (rows, one index each); returns the server."""
    pg_single.query(f"DROP DATABASE IF EXISTS {DB}")
    pg_single.query(f"CREATE DATABASE {DB}")
    for table in ("t1", "t2", "t3", "t4"):
        pg_single.query(f"CREATE TABLE {table} (id int PRIMARY KEY, v text)", dbname=DB)
        pg_single.query(f"CREATE INDEX {table}_v ON {table} (v)", dbname=DB)
        pg_single.query(f"INSERT INTO {table} SELECT g, md5(g::text) FROM generate_series(1, 500) g", dbname=DB)
    yield pg_single
    pg_single.query(f"DROP DATABASE IF EXISTS {DB} WITH (FORCE)")


def make(server, **options) -> PgMaintenanceAction:
    options = {"name": "pg-maint", "type": "pg_maintenance", "dsn": server.dsn(dbname=DB), **options}
    return PgMaintenanceAction(PgMaintenanceAction.Options.model_validate(options))


def stat(server, table: str, column: str):
    return server.value(f"SELECT {column} FROM pg_stat_user_tables WHERE relname = %s", (table,), dbname=DB)


def reset_stats(server) -> None:
    server.query("SELECT pg_stat_reset()", dbname=DB)


def test_pg_analyze_updates_last_analyze_of_the_listed_tables(db):
    reset_stats(db)
    result = make(db, operation="analyze", tables=["public.t1", "t2"]).execute(ActionContext(30))
    assert result.ok, result.summary
    assert result.summary == "analyzed public.t1, t2"
    assert result.details["tables"]["public.t1"].startswith('ok: ANALYZE "public"."t1"')
    wait_for(lambda: stat(db, "t1", "last_analyze") and stat(db, "t2", "last_analyze"), 5,
             what="last_analyze of t1 and t2")
    assert stat(db, "t3", "last_analyze") is None


def test_pg_analyze_defaults_to_the_tables_the_check_flagged(db):
    reset_stats(db)
    trigger = TriggerInfo("pg-tables", "warning", "stale: public.t3 analyze never",
                          details={"tables": [{"name": "public.t3", "n_dead_tup": 0}, {"name": "bad name; x"}]})
    result = make(db, operation="analyze").execute(ActionContext(30, trigger=trigger))
    assert result.ok and result.summary == "analyzed public.t3"
    assert result.details["skipped_names"] == ["bad name; x"]
    wait_for(lambda: stat(db, "t3", "last_analyze"), 5, what="last_analyze of t3")
    assert stat(db, "t1", "last_analyze") is None


def test_pg_analyze_without_tables_analyzes_the_whole_database(db):
    reset_stats(db)
    result = make(db, operation="analyze").execute(ActionContext(30))
    assert result.ok and result.summary == "analyzed the whole database"
    wait_for(lambda: all(stat(db, t, "last_analyze") for t in ("t1", "t2", "t3", "t4")), 5,
             what="every table analyzed")


def test_pg_vacuum_analyze_updates_last_vacuum(db):
    reset_stats(db)
    db.query("DELETE FROM t4 WHERE id <= 100", dbname=DB)       # the test's own setup: dead tuples to vacuum
    result = make(db, operation="vacuum_analyze", tables=["public.t4"]).execute(ActionContext(30))
    assert result.ok and result.summary == "vacuumed and analyzed public.t4"
    wait_for(lambda: stat(db, "t4", "last_vacuum") and stat(db, "t4", "last_analyze"), 5,
             what="last_vacuum and last_analyze of t4")


def test_pg_vacuum_without_any_tables_refuses(db):
    result = make(db, operation="vacuum_analyze").execute(ActionContext(30))
    assert not result.ok and "no tables" in result.summary


def test_pg_reindex_concurrently_rebuilds_the_listed_tables_indexes(db):
    before = db.value("SELECT pg_relation_filenode('t2_v')", dbname=DB)
    result = make(db, operation="reindex_concurrently", tables=["public.t2"]).execute(ActionContext(30))
    assert result.ok and result.summary == "reindexed public.t2"
    assert db.value("SELECT pg_relation_filenode('t2_v')", dbname=DB) != before
    assert db.value("SELECT count(*) FROM pg_index WHERE NOT indisvalid", dbname=DB) == 0


def test_pg_dry_run_changes_nothing(db):
    reset_stats(db)
    before = db.value("SELECT pg_relation_filenode('t1_v')", dbname=DB)
    for operation in ("analyze", "vacuum_analyze", "reindex_concurrently"):
        result = make(db, operation=operation, tables=["public.t1"], dry_run=True).execute(
            ActionContext(30, dry_run=True))
        assert result.ok and result.summary == f"would run {operation} on public.t1"
    assert "would run REINDEX TABLE CONCURRENTLY \"public\".\"t1\"" in result.details["tables"]["public.t1"]
    assert stat(db, "t1", "last_analyze") is None and stat(db, "t1", "last_vacuum") is None
    assert db.value("SELECT pg_relation_filenode('t1_v')", dbname=DB) == before


def test_pg_missing_table_fails_and_the_others_still_run(db):
    result = make(db, operation="analyze", tables=["public.nope", "public.t1"]).execute(ActionContext(30))
    assert not result.ok
    assert result.details["tables"] == {"public.nope": "failed: table not found",
                                        "public.t1": result.details["tables"]["public.t1"]}
    assert result.details["tables"]["public.t1"].startswith("ok:")
    assert "failed: public.nope: table not found" in result.summary


def test_pg_locked_table_is_skipped_after_lock_timeout(db):
    locked, release = threading.Event(), threading.Event()

    def hold_lock():
        with db.connect(DB) as conn:
            with conn.transaction():
                conn.execute("LOCK TABLE t3 IN ACCESS EXCLUSIVE MODE")
                locked.set()
                release.wait(20)

    holder = threading.Thread(target=hold_lock)
    holder.start()
    try:
        assert locked.wait(10)
        result = make(db, operation="vacuum_analyze", tables=["t3", "t1"], lock_timeout="200ms").execute(
            ActionContext(30))
    finally:
        release.set()
        holder.join()
    assert not result.ok
    assert result.details["tables"]["t3"] == "failed: lock not granted within 200ms; skipped"
    assert result.details["tables"]["t1"].startswith("ok:")


def test_pg_unreachable_server_fails_without_the_password(closed_port):
    secret = "pw-maint-9e1d-never-shown"
    for dsn in (f"host=127.0.0.1 port={closed_port} dbname=x user=maint password={secret}",
                f"postgresql://maint:{secret}@127.0.0.1:{closed_port}/x"):
        action = PgMaintenanceAction(PgMaintenanceAction.Options.model_validate(
            {"name": "pg", "type": "pg_maintenance", "dsn": dsn, "operation": "analyze", "tables": ["t1"]}))
        result = action.execute(ActionContext(10))
        assert not result.ok and result.summary.startswith("cannot connect:") and "refused" in result.summary
        assert secret not in result.summary + result.output + repr(result.details)
        assert secret not in action.target()


@pytest.mark.parametrize("tables", [["x; DROP TABLE y"], ["t1 WHERE true; DELETE FROM t1"], ['"t1"'],
                                    ["public.t1.extra"], ["TRUNCATE t1"], ["1abc"]])
def test_pg_table_names_that_are_not_plain_identifiers_are_rejected(tables):
    with pytest.raises(ValidationError, match="is not a table name"):
        PgMaintenanceAction.Options.model_validate(
            {"name": "pg", "type": "pg_maintenance", "dsn": "host=x", "operation": "analyze", "tables": tables})


def test_pg_reindex_needs_listed_tables():
    with pytest.raises(ValidationError, match="reindex_concurrently needs `tables`"):
        PgMaintenanceAction.Options.model_validate(
            {"name": "pg", "type": "pg_maintenance", "dsn": "host=x", "operation": "reindex_concurrently"})


def test_pg_config_naming_drop_delete_truncate_is_rejected_at_config_check(write_config):
    config = write_config("""
        actions:
          - name: weekly-analyze
            type: pg_maintenance
            dsn: "host=127.0.0.1 dbname=app"
            operation: analyze
            tables: [public.events]
          - name: sneaky-drop
            type: pg_maintenance
            dsn: "host=127.0.0.1 dbname=app"
            operation: "DROP TABLE events"
          - name: sneaky-delete
            type: pg_maintenance
            dsn: "host=127.0.0.1 dbname=app"
            operation: analyze
            tables: ["events; DELETE FROM events", "public.ok", "x; TRUNCATE y"]
          - name: sneaky-sql
            type: pg_maintenance
            dsn: "host=127.0.0.1 dbname=app"
            operation: analyze
            sql: "TRUNCATE events"
        """)
    out = run_cli("config", "check", str(config))
    assert out.returncode == 2, out.stdout + out.stderr
    errors = out.stderr.splitlines()
    assert f"{config}:10: actions[1].operation: Input should be 'analyze', 'vacuum_analyze' or " \
           f"'reindex_concurrently' (got 'DROP TABLE events')" in errors
    assert any(e.startswith(f"{config}:15: actions[2].tables[0]: 'events; DELETE FROM events' is not a table name")
               for e in errors)
    assert any(e.startswith(f"{config}:15: actions[2].tables[2]: 'x; TRUNCATE y' is not a table name")
               for e in errors)
    assert any(e.startswith(f"{config}:20: actions[3].sql: unknown key") for e in errors)
    assert len(errors) == 4
