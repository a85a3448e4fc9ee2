"""The statements a single-database pg_dump writes are restored; anything reaching outside the scratch database is not.

The accepted list is what pg_dump 15 writes (plain, --inserts, --clean, owners,
grants, large objects, BEGIN ATOMIC bodies); the real-dump restore tests in
test_backup.py run every statement of real dumps through the same judge.
"""

from __future__ import annotations

import pytest

from checks.dump_policy import created_database, judge, judge_cluster
from checks.pg_script import Statement, read_segments


def statement(sql: str) -> Statement:
    data = sql.encode() + b";\n" + (b"\\.\n" if "stdin" in sql.lower() else b"")     # COPY data ends at \.
    (first,) = [s for s in read_segments([data]) if isinstance(s, Statement)]
    return first


@pytest.mark.parametrize("sql", [
    "SET statement_timeout = 0",
    "SET standard_conforming_strings = on",
    "SET client_encoding = 'UTF8'",
    "SET client_encoding = 'LATIN1'",
    "SELECT pg_catalog.set_config('search_path', '', false)",
    "SET default_table_access_method = heap",
    "SET SESSION AUTHORIZATION app_owner",
    "CREATE SCHEMA shop",
    "ALTER SCHEMA shop OWNER TO app_owner",
    "CREATE EXTENSION IF NOT EXISTS pgcrypto WITH SCHEMA shop",
    "COMMENT ON EXTENSION pgcrypto IS 'cryptographic functions'",
    "CREATE FUNCTION shop.add(a integer, b integer) RETURNS integer\n    LANGUAGE sql IMMUTABLE\n    AS $$SELECT a + b$$",
    "CREATE FUNCTION shop.touch() RETURNS trigger\n    LANGUAGE plpgsql\n    AS $_$ BEGIN RETURN NEW; END $_$",
    "CREATE OR REPLACE FUNCTION public.p(language text) RETURNS text LANGUAGE plperl AS $$ return 1 $$",
    "CREATE FUNCTION shop.std(a integer) RETURNS integer\n    LANGUAGE sql\n    BEGIN ATOMIC\n SELECT language FROM t;\nEND",
    "CREATE TABLE shop.users (id integer NOT NULL, name text)",
    "ALTER TABLE ONLY shop.users ALTER COLUMN id SET DEFAULT nextval('shop.users_id_seq'::regclass)",
    "CREATE USER MAPPING FOR app_owner SERVER srv OPTIONS (password 'p', \"user\" 'u')",
    "ALTER DEFAULT PRIVILEGES FOR ROLE app_owner IN SCHEMA shop GRANT SELECT ON TABLES  TO app_reader",
    "SELECT pg_catalog.lo_create('16771')",
    "ALTER LARGE OBJECT 16771 OWNER TO app_owner",
    "BEGIN",
    "SELECT pg_catalog.lo_open('16771', 131072)",
    "SELECT pg_catalog.lowrite(0, '\\x6c61726765')",
    "SELECT pg_catalog.lo_close(0)",
    "COMMIT",
    "SELECT pg_catalog.setval('shop.counter', 123, true)",
    "SELECT pg_catalog.setval('shop.neg', -5, false)",
    "COPY shop.users (id, name, \"Mixed\") FROM stdin",
    "INSERT INTO shop.audit (id, what) OVERRIDING SYSTEM VALUE VALUES\n\t(1, 'row 1'),\n\t(2, NULL)",
    "INSERT INTO shop.odd VALUES ('NaN', '-Infinity', B'101', true, -1.5e3, DEFAULT)",
    "GRANT SELECT ON TABLE shop.users TO app_reader",
    "GRANT SELECT(a, b) ON TABLE shop.users TO app_reader",
    "REVOKE ALL ON SCHEMA public FROM PUBLIC",
    "REFRESH MATERIALIZED VIEW shop.kinds",
    "SECURITY LABEL FOR dummy ON TABLE shop.users IS 'x'",
    "CREATE EVENT TRIGGER et ON ddl_command_start EXECUTE FUNCTION shop.on_ddl()",
    "DROP TABLE IF EXISTS shop.users",
    "SELECT pg_catalog.lo_unlink(oid) FROM pg_catalog.pg_largeobject_metadata WHERE oid = '16772'",
    "CREATE PUBLICATION pub WITH (publish = 'insert, update, delete, truncate')",
])
def test_policy_statements_pg_dump_writes_are_restored(sql):
    assert judge(statement(sql)) is None


@pytest.mark.parametrize("sql, reason", [
    ("CREATE DATABASE x", "CREATE DATABASE reaches outside"),
    ("ALTER DATABASE appdb OWNER TO me", "ALTER DATABASE reaches outside"),
    ("DROP DATABASE appdb", "DROP DATABASE reaches outside"),
    ("CREATE ROLE evil SUPERUSER", "CREATE ROLE reaches outside"),
    ("CREATE USER evil", "CREATE USER reaches outside"),
    ("ALTER USER maint_restore PASSWORD 'x'", "ALTER USER reaches outside"),
    ("ALTER ROLE maint_restore SET search_path = evil", "ALTER ROLE reaches outside"),
    ("DROP GROUP g", "DROP GROUP reaches outside"),
    ("CREATE TABLESPACE t LOCATION '/tmp'", "CREATE TABLESPACE reaches outside"),
    ("CREATE SUBSCRIPTION s CONNECTION 'host=x' PUBLICATION p", "CREATE SUBSCRIPTION reaches outside"),
    ("ALTER SYSTEM SET archive_command = 'id'", "ALTER SYSTEM"),
    ("COMMENT ON DATABASE appdb IS 'x'", "COMMENT ON DATABASE reaches outside"),
    ("COMMENT ON ROLE postgres IS 'x'", "COMMENT ON ROLE reaches outside"),
    ("SECURITY LABEL ON ROLE postgres IS 'x'", "SECURITY LABEL ON ROLE reaches outside"),
    ("GRANT pg_execute_server_program TO me", "role membership"),
    ("GRANT CREATE ON DATABASE appdb TO me", "GRANT ON DATABASE"),
    ("GRANT SET ON PARAMETER work_mem TO me", "GRANT ON PARAMETER"),
    ("DROP OWNED BY app_owner", "DROP OWNED"),
    ("REASSIGN OWNED BY a TO b", "REASSIGN OWNED"),
    ("LOAD 'auto_explain'", "LOAD loads a shared library"),
    ("DO $$ BEGIN PERFORM 1; END $$", "DO runs anonymous code"),
    ("CALL shop.proc(1)", "CALL runs a procedure"),
    ("COPY t TO PROGRAM 'id'", "COPY other than COPY table FROM stdin"),
    ("COPY t FROM PROGRAM 'id'", "COPY other than"),
    ("COPY t FROM '/etc/passwd'", "COPY other than"),
    ("COPY t TO STDOUT", "COPY other than"),
    ("COPY t FROM stdin WITH (FORMAT csv)", "COPY other than"),
    ("COPY (SELECT 1) TO '/tmp/x'", "COPY other than"),
    ("CREATE FUNCTION sh(cstring) RETURNS int AS 'libc.so.6', 'system' LANGUAGE c", "in language c"),
    ("CREATE FUNCTION sh(cstring) RETURNS int LANGUAGE C AS 'libc.so.6', 'system'", "in language c"),
    ("CREATE FUNCTION f() RETURNS int LANGUAGE internal AS 'int4in'", "in language internal"),
    ("CREATE OR REPLACE FUNCTION f() RETURNS int LANGUAGE plpython3u AS $$ import os $$", "language plpython3u"),
    ("CREATE PROCEDURE p() LANGUAGE 'plperlu' AS $$ system('id') $$", "language plperlu"),
    ("CREATE LANGUAGE plpython3u HANDLER h", "CREATE LANGUAGE installs a language handler"),
    ("CREATE TRUSTED PROCEDURAL LANGUAGE x HANDLER h", "CREATE LANGUAGE"),
    ("SELECT 1", "SELECT other than pg_dump's"),
    ("SELECT pg_catalog.setval(pg_catalog.pg_read_file('/etc/passwd'), 1)", "SELECT other than"),
    ("SELECT pg_catalog.lo_export(16771, '/tmp/x')", "SELECT other than"),
    ("SELECT pg_catalog.lo_import('/etc/shadow')", "SELECT other than"),
    ("SELECT public.sh('id')", "SELECT other than"),
    ("INSERT INTO t SELECT evil() UNION ALL VALUES (1)", "INSERT other than"),
    ("INSERT INTO t VALUES (evil())", "INSERT other than"),
    ("INSERT INTO t VALUES (1) RETURNING evil()", "INSERT other than"),
    ("SET standard_conforming_strings = off", "standard_conforming_strings other than on"),
    # ways around the reader's view of strings, and routine names that looked like a SQL-standard body
    ('SET "standard_conforming_strings" = off', "standard_conforming_strings other than on"),
    ("SELECT pg_catalog.set_config('standard_conforming_strings', 'off', false)",
     "standard_conforming_strings other than on"),
    ("SET client_encoding = 'SJIS'", "client_encoding SJIS"),
    ("SET client_encoding TO 'win-932'", "client_encoding win-932"),
    ("SELECT pg_catalog.set_config('client_encoding', 'GBK', false)", "client_encoding GBK"),
    ('SET U&"standard_conforming_strings" = off', "U&"),
    ("ALTER FUNCTION f() SET standard_conforming_strings = off", "standard_conforming_strings other than on"),
    ("CREATE FUNCTION return() RETURNS int LANGUAGE c AS '$libdir/plpgsql', 'plpgsql_call_handler'", "language c"),
    ("CREATE FUNCTION f() RETURNS public.return LANGUAGE c AS 'x', 'y'", "language c"),
    ("CREATE FUNCTION f() RETURNS SETOF return LANGUAGE plpython3u AS 'x'", "language plpython3u"),
    ("UPDATE t SET a = 1", "UPDATE is not a statement pg_dump writes"),
    ("VACUUM FULL", "VACUUM"),
    ("(SELECT 1)", "does not start with a command word"),
])
def test_policy_statements_reaching_outside_the_scratch_database_refused(sql, reason):
    refused = judge(statement(sql))
    assert refused is not None and reason in refused, refused


# --- pg_dumpall into a private scratch cluster ------------------------------------------------------------------

@pytest.mark.parametrize("sql", [
    "SET default_transaction_read_only = off",
    "CREATE ROLE app",
    "ALTER ROLE app WITH NOSUPERUSER INHERIT NOCREATEROLE NOCREATEDB LOGIN NOREPLICATION NOBYPASSRLS PASSWORD "
    "'SCRAM-SHA-256$4096:x'",
    "ALTER ROLE postgres WITH SUPERUSER INHERIT CREATEROLE CREATEDB LOGIN REPLICATION BYPASSRLS",
    "ALTER ROLE app SET search_path TO shop, public",
    "ALTER ROLE app IN DATABASE aicamera SET work_mem TO '64MB'",
    "GRANT pg_monitor TO maint_monitor GRANTED BY postgres",
    "CREATE DATABASE aicamera WITH TEMPLATE = template0 ENCODING = 'UTF8' LOCALE_PROVIDER = libc LOCALE = 'C.UTF-8'",
    "ALTER DATABASE aicamera OWNER TO app",
    "ALTER DATABASE aicamera SET timezone TO 'Asia/Ho_Chi_Minh'",
    "COMMENT ON DATABASE aicamera IS 'cameras'",
    "GRANT CONNECT ON DATABASE aicamera TO app",
    "REVOKE CONNECT,TEMPORARY ON DATABASE template1 FROM PUBLIC",
    "GRANT SET ON PARAMETER work_mem TO app",
    "DROP DATABASE IF EXISTS aicamera",
    "DROP ROLE IF EXISTS app",
    "UPDATE pg_catalog.pg_database SET datistemplate = false WHERE datname = 'template1'",
    "COPY shop.users (id, name) FROM stdin",
    "CREATE TABLE shop.users (id integer NOT NULL)",
])
def test_cluster_policy_statements_pg_dumpall_writes_are_restored(sql):
    assert judge_cluster(statement(sql)) is None


@pytest.mark.parametrize("sql, reason", [
    ("CREATE TABLESPACE fast LOCATION '/ssd/pg'", "CREATE TABLESPACE: a tablespace is a directory on the database host"),
    ("ALTER TABLESPACE fast OWNER TO app", "ALTER TABLESPACE"),
    ("DROP TABLESPACE fast", "DROP TABLESPACE"),
    ("COMMENT ON TABLESPACE fast IS 'x'", "COMMENT TABLESPACE"),
    ("GRANT CREATE ON TABLESPACE fast TO app", "GRANT ON TABLESPACE"),
    ("CREATE DATABASE x TABLESPACE = fast", "CREATE DATABASE … TABLESPACE"),
    ("ALTER ROLE app SET session_preload_libraries = '/tmp/evil.so'", "session_preload_libraries makes sessions load"),
    ("ALTER ROLE app IN DATABASE d SET \"local_preload_libraries\" TO evil", "local_preload_libraries"),
    ("ALTER DATABASE aicamera SET dynamic_library_path TO '/tmp'", "dynamic_library_path"),
    ("SET SESSION session_preload_libraries = 'evil'", "session_preload_libraries"),
    ('ALTER ROLE victim SET U&"session_preload_libraries" = \'/tmp/x.so\'', "U&"),
    ("ALTER DATABASE d SET standard_conforming_strings = off", "standard_conforming_strings other than on"),
    ("CREATE FUNCTION f() RETURNS int LANGUAGE sql SET local_preload_libraries = 'x' AS 'SELECT 1'",
     "local_preload_libraries"),
    ("CREATE SUBSCRIPTION s CONNECTION 'host=prod' PUBLICATION p", "CREATE SUBSCRIPTION"),
    ("ALTER SYSTEM SET archive_command = 'id'", "ALTER SYSTEM"),
    ("COPY t TO PROGRAM 'id'", "COPY other than"),
    ("CREATE FUNCTION sh(cstring) RETURNS int LANGUAGE c AS 'libc.so.6', 'system'", "in language c"),
    ("UPDATE pg_catalog.pg_authid SET rolsuper = true", "UPDATE other than pg_dumpall's"),
    ("UPDATE pg_catalog.pg_database SET datallowconn = true WHERE datname = 'template0'", "UPDATE other than"),
    ("DO $$ BEGIN PERFORM 1; END $$", "DO runs anonymous code"),
    ("LOAD 'auto_explain'", "LOAD loads a shared library"),
    ("REASSIGN OWNED BY a TO b", "REASSIGN OWNED"),
])
def test_cluster_policy_host_reaching_statements_refused(sql, reason):
    refused = judge_cluster(statement(sql))
    assert refused is not None and reason in refused, refused


@pytest.mark.parametrize("sql, name", [
    ("CREATE DATABASE aicamera WITH TEMPLATE = template0", "aicamera"),
    ("CREATE DATABASE AiCamera", "aicamera"),
    ('CREATE DATABASE "Ai ""Cam"""', 'Ai "Cam"'),
    ("CREATE TABLE aicamera (id int)", None),
])
def test_created_database_named_as_the_server_names_it(sql, name):
    assert created_database(statement(sql)) == name
