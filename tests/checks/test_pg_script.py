"""The dump reader: a psql-compatible tokenizer that yields statements, COPY data and \\connect, never runs anything.

What it protects: a backslash is a psql command only outside literals,
comments and COPY data; every such command is refused with its line except
pg_dump's own \\restrict/\\unrestrict; statements end at the `;` psql would end
them at, wherever the chunks of a multi-GB stream happen to be cut.
"""

from __future__ import annotations

import random

import pytest

from checks.pg_script import (
    Connect, CopyData, CopyEnd, ScriptIncomplete, ScriptReader, ScriptRefused, Statement, read_segments,
)

TRICKY = rb"""--
-- PostgreSQL database dump
--

\restrict abcDEF123
SET statement_timeout = 0;
SET application_name = 'semi;colon \! not a command';
COMMENT ON TABLE t IS 'it''s; \c other';
COMMENT ON TABLE t IS E'esc\'aped; \\! still a string \\';
COMMENT ON TABLE t IS e'lower-case E\\';
CREATE TABLE "semi;\!colon""quote" (a int, b text DEFAULT ';');
CREATE FUNCTION f() RETURNS text LANGUAGE plpgsql AS $$ BEGIN RETURN ';\! $x$'; END $$;
CREATE FUNCTION g() RETURNS text LANGUAGE sql AS $body$ SELECT '$$;\c' $body$;
CREATE FUNCTION h(a integer) RETURNS integer
    LANGUAGE sql
    BEGIN ATOMIC
 SELECT (a + 1);
 SELECT CASE WHEN (a > 0) THEN a ELSE 0 END AS "case";
END;
-- a comment; \! with a backslash
/* a block; /* nested \c db */ still; comment */ SELECT pg_catalog.set_config('search_path', '', false);
SELECT a$b$ FROM t WHERE x = $1 AND y = U&'d\0061t' AND z = B'101' AND w = X'1f';
COPY public.t (a, b) FROM stdin;
1	\\! not a command; \c nor this
2	\.not the end
3	a\.b
\\.
\.
SELECT pg_catalog.setval('public.t_a_seq', 3, true);

--
-- PostgreSQL database dump complete
--

\unrestrict abcDEF123
"""


def segments(data: bytes, chunk: int | None = None, **limits) -> list:
    """The reader's segments for `data` cut into chunks of `chunk` bytes, with COPY data joined up."""
    chunks = [data] if chunk is None else [data[i:i + chunk] for i in range(0, len(data), chunk)]
    out: list = []
    for seg in read_segments(chunks, **limits):
        if isinstance(seg, CopyData) and out and isinstance(out[-1], CopyData):
            out[-1] = CopyData(out[-1].data + seg.data)
        else:
            out.append(seg)
    return out


def shape(segs: list) -> list:
    """Comparable form: statements as (line, text, token kinds, token starts, copy_in)."""
    return [(s.line, s.text, bytes(s.tokens.kinds), list(s.tokens.starts), list(s.tokens.ends), s.copy_in)
            if isinstance(s, Statement) else s for s in segs]


def texts(segs: list) -> list[bytes]:
    return [s.text for s in segs if isinstance(s, Statement)]


def test_reader_semicolons_and_backslashes_inside_literals_comments_and_copy_data_are_not_commands():
    segs = segments(TRICKY)
    assert texts(segs) == [
        b"SET statement_timeout = 0",
        b"SET application_name = 'semi;colon \\! not a command'",
        b"COMMENT ON TABLE t IS 'it''s; \\c other'",
        b"COMMENT ON TABLE t IS E'esc\\'aped; \\\\! still a string \\\\'",
        b"COMMENT ON TABLE t IS e'lower-case E\\\\'",
        b"CREATE TABLE \"semi;\\!colon\"\"quote\" (a int, b text DEFAULT ';')",
        b"CREATE FUNCTION f() RETURNS text LANGUAGE plpgsql AS $$ BEGIN RETURN ';\\! $x$'; END $$",
        b"CREATE FUNCTION g() RETURNS text LANGUAGE sql AS $body$ SELECT '$$;\\c' $body$",
        b"CREATE FUNCTION h(a integer) RETURNS integer\n    LANGUAGE sql\n    BEGIN ATOMIC\n SELECT (a + 1);\n"
        b" SELECT CASE WHEN (a > 0) THEN a ELSE 0 END AS \"case\";\nEND",
        b"SELECT pg_catalog.set_config('search_path', '', false)",
        b"SELECT a$b$ FROM t WHERE x = $1 AND y = U&'d\\0061t' AND z = B'101' AND w = X'1f'",
        b"COPY public.t (a, b) FROM stdin",
        b"SELECT pg_catalog.setval('public.t_a_seq', 3, true)",
    ]
    copy = next(i for i, s in enumerate(segs) if isinstance(s, Statement) and s.copy_in)
    assert segs[copy + 1] == CopyData(b"1\t\\\\! not a command; \\c nor this\n2\t\\.not the end\n3\ta\\.b\n\\\\.\n")
    assert segs[copy + 2] == CopyEnd(28)
    assert [s.line for s in segs if isinstance(s, Statement)][:3] == [6, 7, 8]


def test_reader_tokens_name_literals_words_and_parameters():
    statement = next(s for s in segments(TRICKY) if s.text.startswith(b"SELECT a$b$"))
    t = statement.tokens
    values = [(chr(t.kind(i)), t.value(i)) for i in range(len(t))]
    assert ("w", b"a$b$") in values and ("x", b"$1") in values          # identifiers may hold $; $1 is a parameter
    assert ("s", b"U&'d\\0061t'") in values and ("s", b"B'101'") in values and ("s", b"X'1f'") in values
    assert t.word(0) == "SELECT" and t.word(1) == "A$B$"


@pytest.mark.parametrize("seed", range(3))
def test_reader_chunk_boundaries_anywhere_give_the_same_segments(seed):
    expected = shape(segments(TRICKY))
    assert shape(segments(TRICKY, chunk=1)) == expected                 # byte by byte
    rng = random.Random(seed)
    cuts = sorted(rng.sample(range(1, len(TRICKY)), 40))
    pieces = [TRICKY[a:b] for a, b in zip([0] + cuts, cuts + [len(TRICKY)])]
    joined: list = []
    for seg in read_segments(pieces):
        if isinstance(seg, CopyData) and joined and isinstance(joined[-1], CopyData):
            joined[-1] = CopyData(joined[-1].data + seg.data)
        else:
            joined.append(seg)
    assert shape(joined) == expected


@pytest.mark.parametrize("script, line, reason", [
    (b"SELECT 1; \\! touch /tmp/x\n", 1, "psql meta-command after other text on its line"),
    (b"SET a.b = 1;\n  \\! touch /tmp/x\n", 2, "psql meta-command (a dump is data"),
    (b"\t\\o /tmp/x\n", 1, "psql meta-command"),
    (b"\\copy t TO '/tmp/x'\n", 1, "psql meta-command"),
    (b"SET a.b = 'it''s'; \\! id\n", 1, "psql meta-command after other text"),
    (b"SET a.b = E'it\\'s'; \\! id\n", 1, "psql meta-command after other text"),
    (b"SET a.b = $$x$$; \\! id\n", 1, "psql meta-command after other text"),
    (b"/* c */ \\! id\n", 1, "psql meta-command after other text"),
    (b"CREATE TABLE t (a int\n\\! id\n);\n", 2, "psql meta-command inside a statement"),
    (b"SELECT 1 \\g\n", 1, "psql meta-command inside a statement"),
    (b"SET a.b = 1; \\restrict KEY\n", 1, "psql meta-command after other text"),
    (b"\\restrict KEY; \\! id\n", 1, "psql meta-command"),
    (b"\\set ON_ERROR_STOP 0\n", 1, "psql meta-command"),
    (b"\\connect\n", 1, "psql meta-command"),
    (b"\\c appdb otheruser\n", 1, "\\connect to another user, host or port"),
    (b"\\connect \"dbname=x host=elsewhere\"\n", 1, "\\connect with connection options other than dbname"),
])
def test_reader_psql_meta_commands_refused_with_their_line(script, line, reason):
    with pytest.raises(ScriptRefused) as caught:
        segments(script)
    assert caught.value.line == line and reason in caught.value.reason, caught.value


def test_reader_excerpt_of_a_refused_line_has_no_control_characters():
    with pytest.raises(ScriptRefused) as caught:
        segments(b"\\! printf '\x1b]0;pwned\x07\x1b[2J' \xe2\x80\xae\r\n")
    shown = caught.value.excerpt
    assert shown.startswith("\\! printf '?]0;pwned??[2J'") and all(c.isprintable() for c in shown), shown
    assert "\x1b" not in str(caught.value) and "\u202e" not in str(caught.value)


def test_reader_restrict_alone_on_its_line_dropped_connect_yielded():
    segs = segments(b"\\restrict K1\nSET a.b = 1;\n\\unrestrict K1\n\\connect appdb\n\\restrict K2\n"
                    b"\\c \"Mixed\"\"Case\"\n\\connect -reuse-previous=on \"dbname='we\\'ird'\"\nSET a.b = 2;\n")
    assert segs[1:] == [Connect("appdb", 4, "\\connect appdb"), Connect('Mixed"Case', 6, '\\c "Mixed""Case"'),
                        Connect("we'ird", 7, "\\connect -reuse-previous=on \"dbname='we\\'ird'\""),
                        segs[-1]]
    assert texts(segs) == [b"SET a.b = 1", b"SET a.b = 2"]


def test_reader_copy_terminator_only_at_the_start_of_a_line():
    segs = segments(b"COPY t FROM stdin;\r\na\\.\n\\.x\n\\\\.\n\\.\r\nSELECT 1;\nCOPY t FROM stdin;\nz\n\\.")
    assert segs[1] == CopyData(b"a\\.\n\\.x\n\\\\.\n") and segs[2] == CopyEnd(5)
    assert segs[5:] == [CopyData(b"z\n"), CopyEnd(9)]                    # \. on the script's last line


def test_reader_text_after_copy_on_its_line_refused():
    with pytest.raises(ScriptRefused, match=r"line 1: text after COPY … FROM stdin; on its line"):
        segments(b"COPY t FROM stdin; \\! id\n1\n\\.\n")


@pytest.mark.parametrize("script, line, what", [
    (b"SET a.b = 1;\nSELECT 'unterminated;\n", 2, "inside a quoted string"),
    (b"SELECT E'x\\';\n", 1, "inside a quoted string"),
    (b"SELECT $a$ x; $b$;\n", 1, "inside a dollar-quoted string"),
    (b"SELECT 1;\n/* /* */\n", 2, "inside a /* comment"),
    (b"SELECT \"x;\n", 1, "inside a quoted identifier"),
    (b"\n\nCREATE TABLE t (a int", 3, "inside a statement"),
    (b"COPY t FROM stdin;\n1\n2\n", 4, "inside COPY data"),
])
def test_reader_truncated_script_is_incomplete_with_its_line(script, line, what):
    with pytest.raises(ScriptIncomplete) as caught:
        segments(script)
    assert caught.value.line == line and what in caught.value.reason, caught.value


def test_reader_statement_beyond_the_size_cap_refused():
    with pytest.raises(ScriptRefused, match=r"line 2: statement or token longer than 1000 bytes"):
        segments(b"SET a.b = 1;\nCOMMENT ON TABLE t IS '" + b"x" * 5000 + b"';\n", chunk=100,
                 max_statement_bytes=1000)
    with pytest.raises(ScriptRefused, match=r"more than 10 tokens"):
        segments(b"SELECT 1,2,3,4,5,6,7;\n", max_tokens=10)


def test_reader_memory_stays_bounded_on_a_large_copy_and_many_statements():
    reader = ScriptReader(max_statement_bytes=64 * 1024)
    row = b"42\tsome text with \\\\ and ; and \\. inside\n"
    fed = copied = statements = 0
    largest = 0

    def chunks():
        yield b"COPY public.t (a, b) FROM stdin;\n"
        for _ in range(400):                                  # ~16 MB of data in 40 KiB chunks
            yield row * 1000
        yield b"\\.\n"
        for i in range(20000):
            yield b"SELECT pg_catalog.setval('s', %d, true);\n" % i

    for chunk in chunks():
        fed += len(chunk)
        for seg in reader.feed(chunk):
            copied += len(seg.data) if isinstance(seg, CopyData) else 0
            statements += isinstance(seg, Statement)
        largest = max(largest, len(reader.buf))
    list(reader.finish())
    assert copied == len(row) * 400_000 and statements == 20001
    assert largest <= 64 * 1024
