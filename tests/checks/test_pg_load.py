"""The loader on a real PostgreSQL 15: what the policy judged is exactly what runs, errors name their line.

Even a statement the tokenizer got wrong cannot smuggle a second command: the
server itself refuses a message holding two. Errors inside a pipelined batch
are pinned to the statement that failed; a refusal stops the batch it was in.
"""

from __future__ import annotations

import os
import signal
import time

import pytest

from checks.dump_policy import judge
from checks.pg_load import ScriptLoader, StatementFailed, Watchdog
from checks.pg_script import ScriptRefused, Statement, Tokens, read_segments
from tests.fixtures.postgres import pg_single  # noqa: F401 (session fixture)

psycopg = pytest.importorskip("psycopg")


@pytest.fixture
def scratch(pg_single):
    """A throw-away database and an autocommit session on it, as restore_test opens one."""
    pg_single.query("DROP DATABASE IF EXISTS maint_load_test")
    pg_single.query("CREATE DATABASE maint_load_test")
    conn = psycopg.connect(pg_single.dsn(dbname="maint_load_test"), autocommit=True, prepare_threshold=None)
    yield conn
    conn.close()
    pg_single.query("DROP DATABASE maint_load_test WITH (FORCE)")


def refuse_connect(segment):
    raise ScriptRefused(segment.line, "no \\connect")


def tables(conn) -> list[str]:
    return sorted(r[0] for r in conn.execute("SELECT relname FROM pg_class WHERE relnamespace = 'public'::regnamespace"
                                             " AND relkind = 'r'"))


def test_loader_statement_hiding_a_second_command_is_refused_by_the_server(scratch):
    """A tokenizer fooled about where a statement ends still cannot run the second command."""
    text = b"CREATE TABLE public.a (x int); CREATE TABLE public.smuggled (x int)"
    (fooled,) = [s for s in read_segments([b"CREATE TABLE public.a (x int);\n"]) if isinstance(s, Statement)]
    forged = Statement(text, 7, Tokens(text, fooled.tokens.kinds, fooled.tokens.starts, fooled.tokens.ends))
    assert judge(forged) is None                                  # the policy saw only CREATE TABLE
    with pytest.raises(StatementFailed) as caught:
        ScriptLoader(scratch, judge, refuse_connect).load([forged])
    assert caught.value.line == 7 and "cannot insert multiple commands" in caught.value.message
    assert tables(scratch) == []


def test_loader_error_in_a_batch_names_its_statement_line(scratch):
    script = (b"SET client_min_messages = warning;\nCREATE TABLE public.a (x int);\n"
              b"CREATE TABLE public.b (x no_such_type);\nCREATE TABLE public.c (x int);\n")
    with pytest.raises(StatementFailed) as caught:
        ScriptLoader(scratch, judge, refuse_connect).load(read_segments([script]))
    assert caught.value.line == 3 and 'type "no_such_type" does not exist' in caught.value.message
    assert caught.value.excerpt == "CREATE TABLE public.b (x no_such_type)"


def test_loader_refusal_stops_the_batch_it_was_in(scratch):
    script = b"CREATE TABLE public.a (x int);\nCREATE TABLE public.b (x int);\nDROP DATABASE postgres;\n"
    with pytest.raises(ScriptRefused, match="line 3: DROP DATABASE reaches outside"):
        ScriptLoader(scratch, judge, refuse_connect).load(read_segments([script]))
    assert tables(scratch) == []


def test_loader_copy_data_and_batches_load_in_order(scratch):
    rows = b"".join(b"%d\tname;%d \\\\! x\n" % (i, i) for i in range(5000))
    script = (b"CREATE TABLE public.t (id int, name text);\nCOPY public.t (id, name) FROM stdin;\n" + rows +
              b"\\.\n" + b"".join(b"INSERT INTO public.t VALUES (%d, 'i');\n" % i for i in range(1200)))
    loader = ScriptLoader(scratch, judge, refuse_connect, batch_statements=100)
    loader.load(read_segments([script[i:i + 4096] for i in range(0, len(script), 4096)]))
    assert scratch.execute("SELECT count(*), count(*) FILTER (WHERE name LIKE '%\\! x') FROM public.t").fetchone() \
        == (6200, 5000)
    assert loader.statements == 1202


def test_watchdog_cancels_at_the_deadline_and_reports_progress(scratch):
    ticks = []
    began = time.monotonic()
    with Watchdog(scratch, began + 1.0, tick=ticks.append, every=0.2) as watch:
        with pytest.raises(psycopg.errors.QueryCanceled):
            scratch.execute("SELECT pg_sleep(30)")
    assert watch.expired and time.monotonic() - began < 3 and len(ticks) >= 3


def test_watchdog_cuts_the_socket_when_the_server_ignores_the_cancel(scratch):
    """A backend that does not answer (stopped here with SIGSTOP) cannot hold the run past the deadline."""
    pid = scratch.info.backend_pid
    os.kill(pid, signal.SIGSTOP)
    try:
        began = time.monotonic()
        with Watchdog(scratch, began + 0.5, cut_after=0.5) as watch:
            with pytest.raises(psycopg.OperationalError):
                scratch.execute("SELECT 1")
        assert watch.expired and time.monotonic() - began < 3
    finally:
        os.kill(pid, signal.SIGCONT)
