"""What a pg_dump script may run in a restore test's scratch database, and a pg_dumpall script in a scratch cluster.

The statements pg_dump writes are few kinds: SET, `SELECT pg_catalog.…` calls
with literal arguments (set_config, setval, large objects), CREATE/ALTER/DROP
of objects inside the database, COMMENT ON, SECURITY LABEL, GRANT/REVOKE on
objects, COPY … FROM stdin, INSERT … VALUES (--inserts), REFRESH MATERIALIZED
VIEW, and BEGIN/COMMIT around large-object data. Anything else — and anything
that reaches outside the scratch database (databases, roles, tablespaces,
subscriptions, ALTER SYSTEM, role membership, server files and programs,
native code) — is refused with a reason before it is sent.

This judges the dump's top-level statements. Code the dump defines (a
PL/pgSQL function used by an index or a materialized view) still runs with
the restore role's rights: that is why restore_test refuses privileged roles
(docs/security.md).

`judge_cluster` is the policy for a pg_dumpall script replayed into a private
scratch cluster (`restore_cluster`): there, roles and databases are what the
script is for, so CREATE/ALTER/DROP ROLE and DATABASE, role membership,
GRANT on databases and pg_dumpall's template1 flag update are allowed too.
Still refused: tablespaces (directories on the host), subscriptions
(connections out), ALTER SYSTEM, and settings that load native code into a
session (`*_preload_libraries`, `dynamic_library_path`), on top of everything
the single-database policy refuses.
"""

from __future__ import annotations

import re
from typing import Iterator

from checks.pg_script import DOLLAR_STRING, NUMBER, OPERATOR, PUNCT, QUOTED_IDENT, STRING, WORD, Statement, Tokens

# object kinds that live outside one database (shared catalogs) or reach other databases
OUTSIDE = frozenset({"DATABASE", "ROLE", "USER", "GROUP", "TABLESPACE", "SUBSCRIPTION"})
# languages whose functions cannot reach the host: PostgreSQL's trusted ones (plperl, pltcl: not plperlu, pltclu)
TRUSTED_LANGUAGES = frozenset({"sql", "plpgsql", "plperl", "pltcl", "pllua", "plv8", "pljs"})
# pg_catalog functions pg_dump calls with literal arguments
DUMP_FUNCTIONS = frozenset({"set_config", "setval", "lo_create", "lo_open", "lowrite", "lo_close"})
_CREATE_MODIFIERS = frozenset({"TEMP", "TEMPORARY", "UNLOGGED", "GLOBAL", "LOCAL", "TRUSTED", "PROCEDURAL", "UNIQUE",
                               "DEFAULT", "CONSTRAINT"})
_LITERAL_WORDS = frozenset({"NULL", "DEFAULT", "TRUE", "FALSE"})
_NAMED = {
    "DO": "DO runs anonymous code",
    "CALL": "CALL runs a procedure",
    "LOAD": "LOAD loads a shared library into the server",
    "REASSIGN": "REASSIGN OWNED changes objects in other databases",
    "IMPORT": "IMPORT FOREIGN SCHEMA reads another server",
    "VACUUM": "VACUUM is not part of a dump",
    "CHECKPOINT": "CHECKPOINT acts on the whole server",
}


def judge(statement: Statement) -> str | None:
    """Given a statement read from a dump, return why restore_test refuses it, or None to run it."""
    t = statement.tokens
    first = t.word(0)
    if first is None:
        return "not a statement pg_dump writes (it does not start with a command word)"
    check = _RULES.get(first)
    if check is None:
        return _NAMED.get(first, f"{first} is not a statement pg_dump writes")
    for name, value in _settings(t):   # SET, ALTER … SET and set_config alike
        refused = _setting_refused(name, value)
        if refused:
            return f"setting {refused}"
    return check(t)


def _kind_after(t: Tokens, i: int) -> tuple[str | None, int]:
    """The object kind word at i, with USER MAPPING read as one kind; return (kind, index after it)."""
    kind = t.word(i)
    if kind == "USER" and t.word(i + 1) == "MAPPING":
        return "USER MAPPING", i + 2
    return kind, i + 1


def _outside(verb: str, kind: str | None) -> str | None:
    if kind == "SYSTEM":
        return "ALTER SYSTEM changes the server's configuration"
    if kind in OUTSIDE:
        return f"{verb} {kind} reaches outside the scratch database"
    return None


# client encodings whose multibyte characters may end in the bytes of `\` or `'`: the server would read a
# string's end where this reader does not (PostgreSQL's client-only encodings and their aliases)
_SPLITTING_ENCODINGS = frozenset({"big5", "gb18030", "gbk", "johab", "mskanji", "shiftjis", "shiftjis2004", "sjis",
                                  "uhc", "win932", "win936", "win949", "win950", "windows932", "windows936",
                                  "windows949", "windows950"})


def _setting_refused(name: str | None, value: bytes | None) -> str | None:
    """Why setting `name` to `value` (None: not given as a constant) would make the server read the rest of the
    script differently from this reader, or None. `name` None: a name written so the reader cannot tell."""
    if name is None:
        return "a setting named with U&\"…\" escapes (pg_dump writes plain names)"
    if name == "standard_conforming_strings" and (value or b"").lower() != b"on":
        return "standard_conforming_strings other than on (pg_dump always writes on)"
    if name == "client_encoding" and re.sub(rb"[^a-z0-9]", b"", (value or b"").lower()).decode() in \
            _SPLITTING_ENCODINGS:
        return f"client_encoding {(value or b'').decode('ascii', 'replace')}: its characters can end in the bytes " \
               f"of a quote or a backslash"
    return None


def _settings(t: Tokens) -> Iterator[tuple[str | None, bytes | None]]:
    """(name, value) of every `SET name {=|TO} value` at the statement's top level (SET …, ALTER ROLE/DATABASE/
    FUNCTION … SET …) and of `set_config('name', 'value', …)`; name None when written with U&"…" escapes."""
    for i, depth in t.depths():
        if depth or t.word(i) != "SET":
            continue
        j = i + 1 if t.word(i + 1) not in ("SESSION", "LOCAL") else i + 2
        if t.kind(j) == QUOTED_IDENT and t.value(j)[:1] in (b"U", b"u"):
            yield None, None
            continue
        name = _identifier(t, j)
        if name is not None:
            given = t.kind(j + 1) in (OPERATOR, WORD) and t.value(j + 1).upper() in (b"=", b"TO")
            yield name, _constant(t, j + 2) if given else None
    if t.word(0) == "SELECT" and t.word(3) == "SET_CONFIG":
        args = [_constant(t, i) for i in range(5, len(t) - 1) if t.kind(i) in (STRING, DOLLAR_STRING)]
        if args:
            yield args[0].decode("utf-8", "replace").lower(), args[1] if len(args) > 1 else None


def _constant(t: Tokens, i: int) -> bytes | None:
    """A setting's value as the server reads it: a word, a number or a plain string (its quotes removed)."""
    kind = t.kind(i)
    if kind in (WORD, NUMBER):
        return t.value(i)
    if kind == STRING and t.value(i)[:1] == b"'":
        return t.value(i)[1:-1].replace(b"''", b"'")
    return None


def _create(t: Tokens) -> str | None:
    i = 1
    if t.word(1) == "OR" and t.word(2) == "REPLACE":
        i = 3
    while t.word(i) in _CREATE_MODIFIERS:
        i += 1
    kind, after = _kind_after(t, i)
    refused = _outside("CREATE", kind)
    if refused:
        return refused
    if kind == "LANGUAGE":
        return "CREATE LANGUAGE installs a language handler (native code)"
    if kind in ("FUNCTION", "PROCEDURE"):
        return _language(t, after, kind)
    return None


def _language(t: Tokens, start: int, kind: str) -> str | None:
    """Every LANGUAGE clause must name a trusted language; a SQL-standard body (BEGIN ATOMIC, RETURN) comes last."""
    name_end = _qualified_name(t, start) or start
    for i, depth in t.depths():
        if i < name_end or depth:   # the routine's own name (a function may be called `return` or `begin`)
            continue
        word = t.word(i)
        if word == "BEGIN" and t.word(i + 1) == "ATOMIC":
            break
        if word == "RETURN" and t.word(i - 1) not in ("RETURNS", "SETOF") and t.value(i - 1) != b".":
            break   # RETURN expr, not a type named return
        if word == "LANGUAGE":
            name = _name(t, i + 1)
            if name not in TRUSTED_LANGUAGES:
                return (f"{kind} in language {name or '?'}: only trusted languages "
                        f"({', '.join(sorted(TRUSTED_LANGUAGES))}) are restored; others run native code on the host")
    return None


def _name(t: Tokens, i: int) -> str | None:
    """A language name given as a word, a quoted identifier or an old-style string."""
    kind = t.kind(i)
    if kind == WORD:
        return t.value(i).decode("utf-8", "replace").lower()
    if kind in (QUOTED_IDENT, STRING):
        return t.value(i)[1:-1].decode("utf-8", "replace")
    return None


def _alter(t: Tokens) -> str | None:
    kind, _ = _kind_after(t, 1)
    return _outside("ALTER", kind)


def _drop(t: Tokens) -> str | None:
    kind, _ = _kind_after(t, 1)
    if kind == "OWNED":
        return "DROP OWNED also revokes privileges in other databases"
    return _outside("DROP", kind)


def _comment(t: Tokens) -> str | None:
    if t.word(1) != "ON":
        return "COMMENT without ON"
    kind, _ = _kind_after(t, 2)
    return _outside("COMMENT ON", kind)


def _security_label(t: Tokens) -> str | None:
    on = next((i for i in range(len(t)) if t.word(i) == "ON"), None)
    if t.word(1) != "LABEL" or on is None:
        return "SECURITY other than SECURITY LABEL … ON"
    kind, _ = _kind_after(t, on + 1)
    return _outside("SECURITY LABEL ON", kind)


def _grant(t: Tokens) -> str | None:
    verb = t.word(0)
    on = next((i for i, depth in t.depths() if not depth and t.word(i) == "ON"), None)
    if on is None:
        return f"{verb} of role membership (pg_dump grants privileges on objects only; roles are cluster-wide)"
    kind, _ = _kind_after(t, on + 1)
    if kind in ("DATABASE", "TABLESPACE", "PARAMETER"):
        return f"{verb} ON {kind} reaches outside the scratch database"
    return None


def _copy(t: Tokens) -> str | None:
    """Only `COPY name [(column, …)] FROM stdin`: COPY to or from files and programs runs on the server's host."""
    i = _qualified_name(t, 1)
    if i is not None and _is(t, i, b"("):
        i = _column_list(t, i)
    if i is not None and t.word(i) == "FROM" and t.word(i + 1) == "STDIN" and i + 2 == len(t):
        return None
    return "COPY other than COPY table FROM stdin (COPY to or from a file or PROGRAM runs on the database host)"


def _is(t: Tokens, i: int, punct: bytes) -> bool:
    return t.kind(i) == PUNCT and t.value(i) == punct


def _column_list(t: Tokens, i: int) -> int | None:
    """Given `(` at i, return the index after `(name, …)`, or None when it is not a plain list of names."""
    i += 1
    while t.kind(i) in (WORD, QUOTED_IDENT):
        if _is(t, i + 1, b","):
            i += 2
        elif _is(t, i + 1, b")"):
            return i + 2
        else:
            return None
    return None


def _qualified_name(t: Tokens, i: int) -> int | None:
    """Index after `name` or `schema.name` at i, or None."""
    if t.kind(i) not in (WORD, QUOTED_IDENT):
        return None
    if t.kind(i + 1) == PUNCT and t.value(i + 1) == b".":
        return i + 3 if t.kind(i + 2) in (WORD, QUOTED_IDENT) else None
    return i + 1


def _select(t: Tokens) -> str | None:
    """`SELECT pg_catalog.f(literal, …)` for the functions pg_dump calls, and its large-object clean-up query."""
    if _lo_unlink(t):
        return None
    name = t.value(3).decode("ascii", "replace").lower() if t.kind(3) == WORD else ""
    if (t.word(1) == "PG_CATALOG" and t.value(2) == b"." and name in DUMP_FUNCTIONS
            and t.value(4) == b"(" and t.value(len(t) - 1) == b")" and _literals(t, 5, len(t) - 1)):
        return None
    return "SELECT other than pg_dump's pg_catalog calls with literal arguments (set_config, setval, lo_*)"


def _lo_unlink(t: Tokens) -> bool:
    """pg_dump --clean: SELECT pg_catalog.lo_unlink(oid) FROM pg_catalog.pg_largeobject_metadata WHERE oid = '…'"""
    shape = [t.value(i).lower() for i in range(len(t) - 1)]
    return (shape == [b"select", b"pg_catalog", b".", b"lo_unlink", b"(", b"oid", b")", b"from", b"pg_catalog", b".",
                      b"pg_largeobject_metadata", b"where", b"oid", b"="]
            and t.kind(len(t) - 1) == STRING)


def _literals(t: Tokens, start: int, end: int, punct: bytes = b",") -> bool:
    """Tokens start..end are constants: strings, numbers, signs, NULL/DEFAULT/TRUE/FALSE and `punct`."""
    for i in range(start, end):
        kind = t.kind(i)
        if kind in (STRING, NUMBER, DOLLAR_STRING):
            continue
        if kind == WORD and t.word(i) in _LITERAL_WORDS:
            continue
        if kind == OPERATOR and t.value(i) in (b"-", b"+"):
            continue
        if kind == PUNCT and t.value(i) in punct:
            continue
        return False
    return True


def _insert(t: Tokens) -> str | None:
    """pg_dump --inserts: INSERT INTO name [(columns)] [OVERRIDING … VALUE] VALUES (constants), …"""
    i = _qualified_name(t, 2) if t.word(1) == "INTO" else None
    if i is not None and _is(t, i, b"("):
        i = _column_list(t, i)
    if i is not None and t.word(i) == "OVERRIDING" and t.word(i + 1) in ("SYSTEM", "USER") \
            and t.word(i + 2) == "VALUE":
        i += 3
    if i is not None and t.word(i) == "VALUES" and _literals(t, i + 1, len(t), b",()"):
        return None
    return "INSERT other than INSERT … VALUES with constants (pg_dump --inserts)"


def _refresh(t: Tokens) -> str | None:
    if t.word(1) == "MATERIALIZED" and t.word(2) == "VIEW":
        return None
    return "REFRESH other than REFRESH MATERIALIZED VIEW"


def _allowed(t: Tokens) -> str | None:
    return None


_RULES = {
    "SET": _allowed, "RESET": _allowed, "SELECT": _select, "INSERT": _insert, "CREATE": _create, "ALTER": _alter,
    "DROP": _drop, "COMMENT": _comment, "SECURITY": _security_label, "GRANT": _grant, "REVOKE": _grant,
    "COPY": _copy, "REFRESH": _refresh, "BEGIN": _allowed, "COMMIT": _allowed,
}


# --- pg_dumpall into a private scratch cluster ---------------------------------------------------------------

# settings that make a later session load a shared library (native code) or look for one elsewhere
LIBRARY_SETTINGS = frozenset({"session_preload_libraries", "local_preload_libraries", "shared_preload_libraries",
                              "dynamic_library_path"})
_CLUSTER_KINDS = frozenset({"DATABASE", "ROLE", "USER", "GROUP"})


def judge_cluster(statement: Statement) -> str | None:
    """Given a statement read from a pg_dumpall script, return why a scratch-cluster restore refuses it, or None."""
    t = statement.tokens
    for name, value in _settings(t):   # ALTER ROLE/DATABASE … SET included: they apply to later sessions
        if name in LIBRARY_SETTINGS:
            return f"setting {name} makes sessions load native code"
        refused = _setting_refused(name, value)
        if refused:
            return f"setting {refused}"
    first = t.word(0)
    if first in ("CREATE", "ALTER", "DROP", "COMMENT", "SECURITY"):
        kind = _cluster_kind(t)
        if kind == "TABLESPACE":
            return f"{first} TABLESPACE: a tablespace is a directory on the database host"
        if kind in _CLUSTER_KINDS:
            return _create_database(t) if first == "CREATE" and kind == "DATABASE" else None
    if first in ("GRANT", "REVOKE"):
        return _cluster_grant(statement)
    if first == "UPDATE":
        return None if _template_flag(t) else "UPDATE other than pg_dumpall's pg_database.datistemplate flag"
    return judge(statement)


def created_database(statement: Statement) -> str | None:
    """The database a `CREATE DATABASE name …` statement creates (as the server will name it), else None."""
    t = statement.tokens
    if t.word(0) != "CREATE" or t.word(1) != "DATABASE":
        return None
    return _identifier(t, 2)


def _identifier(t: Tokens, i: int) -> str | None:
    """A name token as the server reads it: bare words fold to lower case, quoted ones keep theirs."""
    if t.kind(i) == WORD:
        return t.value(i).decode("utf-8", "replace").lower()
    if t.kind(i) == QUOTED_IDENT and t.value(i).startswith(b'"'):
        return t.value(i)[1:-1].replace(b'""', b'"').decode("utf-8", "replace")
    return None


def _cluster_kind(t: Tokens) -> str | None:
    """The object kind of CREATE/ALTER/DROP/COMMENT ON/SECURITY LABEL … ON statements."""
    first = t.word(0)
    if first == "COMMENT":
        return t.word(2) if t.word(1) == "ON" else None
    if first == "SECURITY":
        on = next((i for i in range(len(t)) if t.word(i) == "ON"), None)
        return t.word(on + 1) if on is not None else None
    i = 1
    while first == "CREATE" and t.word(i) in _CREATE_MODIFIERS:
        i += 1
    return t.word(i)


def _create_database(t: Tokens) -> str | None:
    for i, depth in t.depths():
        if not depth and t.word(i) == "TABLESPACE":
            return "CREATE DATABASE … TABLESPACE: a tablespace is a directory on the database host"
    return None


def _cluster_grant(statement: Statement) -> str | None:
    """Role membership and privileges on databases are the cluster's own; tablespaces are the host's."""
    t = statement.tokens
    on = next((i for i, depth in t.depths() if not depth and t.word(i) == "ON"), None)
    if on is None:
        return None
    kind = t.word(on + 1)
    if kind == "TABLESPACE":
        return f"{t.word(0)} ON TABLESPACE: a tablespace is a directory on the database host"
    if kind in ("DATABASE", "PARAMETER"):
        return None
    return judge(statement)



def _template_flag(t: Tokens) -> bool:
    """pg_dumpall --clean: UPDATE pg_catalog.pg_database SET datistemplate = {true|false} WHERE datname = '…'"""
    shape = [t.value(i).lower() for i in range(len(t) - 1)]
    return (shape[:4] == [b"update", b"pg_catalog", b".", b"pg_database"]
            and shape[4:] in ([b"set", b"datistemplate", b"=", b"false", b"where", b"datname", b"="],
                              [b"set", b"datistemplate", b"=", b"true", b"where", b"datname", b"="])
            and t.kind(len(t) - 1) == STRING)
