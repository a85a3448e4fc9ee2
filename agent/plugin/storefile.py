"""Opening the agent's SQLite store file: read-only while the daemon writes, and telling a damaged file
from a busy one. Standard library only: `maint-agent ping` and the CLI start fast, and the
`heartbeat` check reads its signals through it without depending on the store's writer."""

from __future__ import annotations

import sqlite3
from pathlib import Path


class StoreMissing(Exception):
    pass


class StoreUnusable(sqlite3.DatabaseError):
    """The store's file is there but SQLite cannot use it (not a database, damaged). The agent and the
    CLI stop rather than start afresh over it: the file may be the operator's (a wrong `store.path`) or
    the evidence of what went wrong. A DatabaseError, so code that copes with a failing store copes."""


def store_unusable(path: Path, reason: str) -> StoreUnusable:
    return StoreUnusable(f"store {path} is not a usable SQLite database ({reason}): move it aside "
                         f"(mv {path} {path}.bad) and start again; the agent never overwrites it")


def unusable_or_same(path: Path, exc: sqlite3.DatabaseError) -> sqlite3.DatabaseError:
    """Given an error from opening the store, return StoreUnusable when the file itself is at fault
    (not a database, damaged), else the error unchanged (locked, read-only, disk full)."""
    if getattr(exc, "sqlite_errorcode", None) in (sqlite3.SQLITE_NOTADB, sqlite3.SQLITE_CORRUPT):
        return store_unusable(path, str(exc))
    return exc


def open_readonly(path: Path, shared: bool = False) -> sqlite3.Connection:
    """Open the store without the right to write; the daemon keeps writing meanwhile (WAL).
    `shared`: usable from any thread (the caller serialises its use), as the status page does.

    A stopped daemon leaves no -wal/-shm files, and a read-only WAL open must create them,
    which a user without write access to the state directory cannot: then the file is
    opened as immutable (nothing is writing it). Raise StoreMissing or StoreUnusable (not a database).
    """
    if not path.exists():
        raise StoreMissing(f"no store at {path} (has the agent run with this config?)")
    conn = _connect(f"file:{path}?mode=ro", shared)
    try:
        conn.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchall()
    except sqlite3.OperationalError:
        if Path(f"{path}-wal").exists():
            raise
        conn.close()
        conn = _connect(f"file:{path}?mode=ro&immutable=1", shared)
    except sqlite3.DatabaseError as exc:
        conn.close()
        raise unusable_or_same(path, exc) from None
    return conn


def _connect(uri: str, shared: bool = False) -> sqlite3.Connection:
    conn = sqlite3.connect(uri, uri=True, timeout=5, check_same_thread=not shared)
    conn.execute("PRAGMA busy_timeout=5000")
    conn.row_factory = sqlite3.Row
    return conn


def where_clause(filters) -> tuple[str, list]:
    """Given (condition, value) pairs, return `" WHERE c1 AND c2 …"` and its parameters ("" and [] when nothing
    filters). A pair whose value is None or an empty list is left out; True stands for a condition without a
    parameter (`ended IS NULL`); a list fills its condition's `(?)` with one `?` per item (an IN list)."""
    conditions, params = [], []
    for condition, value in filters:
        if value is None or value is False or (isinstance(value, (list, tuple)) and not value):
            continue
        if isinstance(value, (list, tuple)):
            condition = condition.replace("(?)", f"({','.join('?' * len(value))})")
            params.extend(value)
        elif value is not True:
            params.append(value)
        conditions.append(condition)
    return (" WHERE " + " AND ".join(conditions) if conditions else ""), params
