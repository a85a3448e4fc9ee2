"""The restore worker: one scratch-cluster restore test, in a child process of the agent.

`restore_cluster` starts this module as a child (niced, its own process group,
recorded with the agent's children) so the agent itself stays small and
responsive: gunzip, tar extraction, the SQL tokenizer and psycopg run here, not
in the agent's threads. The worker dies with the agent (PR_SET_PDEATHSIG): it
then shuts the scratch server down at once and leaves the directory to the
agent, which removes it at its next start.

Input: one JSON spec (argv). Output: JSON lines on stdout — `{"phase": …}` as
the test moves on, and one `{"result": {"status", "reason", "facts"}}` at the
end. The worker never removes the run directory; the agent does, whatever
happened here.

A base backup (`pg_basebackup -Ft -z`): both archives are read to their end
first (their size, PG_VERSION, backup_label, a truncated file found before
anything is written), the free space is checked, then base.tar.gz is extracted
(`checks.safe_tar`), pg_wal.tar.gz into pg_wal/, the configuration replaced and
recovery.signal written, with a `restore_command` that copies from the WAL
archive when one is configured (`false` otherwise: WAL only from pg_wal/). The
server starts with hot_standby off, so the first session it accepts means
recovery is complete. The recovered point is `pg_last_xact_replay_timestamp()`,
or the backup's START TIME when no transaction was replayed.

A pg_dumpall file: read to its end first (size, version, "dump complete"
trailer), then initdb with a bootstrap role of the agent's own name and the
script replayed through `checks.pg_script` and `checks.pg_load` with the
cluster policy (`checks.dump_policy.judge_cluster`); `\\connect` is followed only
to a database the script created, or to the `postgres`/`template1` databases
initdb made. The recovered point is the file's modification time (the dump
ended then; its data is from before).

RTO is measured from the first byte written (extraction, initdb) to the first
session the restored server accepts (base backup) or the script's last
statement (pg_dumpall).
"""

from __future__ import annotations

import ctypes
import gzip
import json
import os
import re
import signal
import sys
import time
import traceback
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

from checks import safe_tar
from checks.scratch_cluster import PORT, Deadline, RoleMissing, ScratchServer, ServerFailed, ServerUser, \
    restore_command

SPACE_FACTOR = 1.2                         # free space needed: the backup's expanded size × this
INITDB_BYTES = 64 * 1024 * 1024            # a new cluster's own files before any data (16 MiB of WAL included)
CHUNK_BYTES = 1024 * 1024
HEAD_BYTES = 1024 * 1024                   # of a pg_dumpall script: where its version line must be
BOOTSTRAP_ROLE = "maint_restore_admin"     # pg_dumpall creates every role it dumps, `postgres` too
PRESENT_DATABASES = frozenset({"postgres", "template1"})   # initdb's, which pg_dumpall connects to uncreated
_VERSION_LINE = re.compile(rb"^-- Dumped from database version (\d+)(?:\.\d+)?", re.M)
_PR_SET_PDEATHSIG = 1


class Outcome(Exception):
    """Ends the test with a status (ok, critical, unknown) and the reason."""

    def __init__(self, status: str, reason: str):
        super().__init__(reason)
        self.status = status
        self.reason = reason


class Interrupted(Exception):
    """SIGTERM: the agent is stopping or died."""


def critical(reason: str) -> Outcome:
    return Outcome("critical", reason)


def unknown(reason: str) -> Outcome:
    return Outcome("unknown", reason)


def emit(**line: Any) -> None:
    sys.stdout.write(json.dumps(line, default=str) + "\n")
    sys.stdout.flush()


class Restore:
    """One test run from its spec; `facts` collects what the agent reports."""

    def __init__(self, spec: dict):
        self.spec = spec
        self.began = time.monotonic()
        self.deadline = self.began + spec["seconds"]
        self.run_dir = Path(spec["run_dir"])
        user = spec.get("user")
        self.user = ServerUser(*user) if user else None
        self.server: ScratchServer | None = None
        self.facts: dict[str, Any] = {"phases": {}}
        self._phase: tuple[str, float] | None = None

    # --- bookkeeping ---------------------------------------------------------------------------------------

    def phase(self, name: str) -> None:
        now = time.monotonic()
        if self._phase is not None:
            self.facts["phases"][self._phase[0]] = round(now - self._phase[1], 3)
        self._phase = (name, now)
        emit(phase=name, elapsed=round(now - self.began, 3))

    def left(self) -> float:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise Deadline()
        return left

    def timed_out(self) -> Outcome:
        where = self._phase[0] if self._phase else "start"
        return unknown(f"timed out in phase {where} after {round(time.monotonic() - self.began)}s (the check's "
                       f"timeout; set it above the expected restore time)")

    # --- the run -------------------------------------------------------------------------------------------

    def run(self) -> None:
        try:
            if self.spec["kind"] == "base_backup":
                self._base_backup()
            else:
                self._dumpall()
        except (Deadline, safe_tar.Deadline):
            raise self.timed_out() from None
        finally:
            self._stop()

    def _stop(self) -> None:
        if self.server is not None and self.server.proc is not None:
            self.phase("stop")
            self.facts["server"] = self.server.stop(time.monotonic() + 60)
            self.phase("done")

    def _bin_dir(self, major: str) -> Path:
        configured = self.spec.get("bin_dir")
        bin_dir = Path(configured) if configured else Path(f"/usr/lib/postgresql/{major}/bin")
        missing = [p for p in ("postgres", "initdb") if not os.access(bin_dir / p, os.X_OK)]
        if missing:
            raise unknown(f"PostgreSQL {major} server programs not found in {bin_dir} ({', '.join(missing)}): "
                          f"install postgresql-{major} or set pg_bin_dir")
        return bin_dir

    def _space(self, expanded: int) -> None:
        """Refuse before writing anything when the scratch file system cannot hold expanded × SPACE_FACTOR."""
        st = os.statvfs(self.run_dir)
        free = st.f_bavail * st.f_frsize
        needed = int(expanded * SPACE_FACTOR)
        self.facts.update(expanded_bytes=expanded, needed_bytes=needed, free_bytes=free)
        if free < needed:
            raise unknown(f"not enough space in {self.run_dir.parent}: the backup expands to {_size(expanded)}, "
                          f"{SPACE_FACTOR:g} × that is {_size(needed)}, {_size(free)} free; nothing was written")

    # --- a base backup -------------------------------------------------------------------------------------

    def _base_backup(self) -> None:
        spec = self.spec
        base, wal = spec["backup"], spec.get("wal_tar")
        self.phase("scan")
        contents = self._scan(base)
        wal_contents = self._scan(wal) if wal else safe_tar.Contents()
        version = contents.files.get("PG_VERSION", b"").decode("ascii", "replace").strip()
        label = contents.files.get("backup_label")
        if not version or label is None:
            missing = "PG_VERSION" if not version else "backup_label"
            raise critical(f"{Path(base).name} holds no {missing}: not a pg_basebackup base backup")
        if contents.files.get("tablespace_map", b"").strip():
            raise unknown(f"{Path(base).name} has tablespaces (tablespace_map is not empty): recovery would create "
                          f"them at the original server's paths, so restore_cluster restores base backups without "
                          f"tablespaces only")
        self.facts.update(version=version, members=contents.members + wal_contents.members,
                          backup_start=_label_time(label))
        bin_dir = self._bin_dir(version.split(".")[0])
        self._space(contents.expanded_bytes + wal_contents.expanded_bytes)

        self.phase("extract")
        restore_began = time.monotonic()
        server = self.server = ScratchServer(self.run_dir, bin_dir, self.user)
        server.data.mkdir(mode=0o700)
        total = contents.expanded_bytes + wal_contents.expanded_bytes
        self._extract(base, server.data, contents.expanded_bytes)
        if wal:
            self._extract(wal, server.data / "pg_wal", wal_contents.expanded_bytes)
        server.configure(replace=True, recovery=restore_command(spec.get("wal_archive")))
        server.hand_over()
        self.facts["written_bytes"] = total

        self.phase("recover")
        server.start()
        session = self._ready(spec["role"])
        self.facts["restore_seconds"] = round(time.monotonic() - restore_began, 3)
        with session:
            replayed = session.execute("SELECT extract(epoch FROM pg_last_xact_replay_timestamp()) AS t").fetchone()["t"]
        if replayed is not None:
            self.facts.update(recovered_at=float(replayed), recovered_source="last transaction replayed")
        else:
            self.facts.update(recovered_at=self.facts["backup_start"],
                              recovered_source="backup start (no transaction replayed after it)")
        self.facts["recovered_wall"] = time.time()
        self.facts["recovery"] = _recovery_figures(server.log)
        self._probe(spec["role"])

    def _scan(self, path: str) -> safe_tar.Contents:
        try:
            return safe_tar.scan(path, self.deadline)
        except safe_tar.ArchiveCorrupt as exc:
            raise critical(f"{Path(path).name}: {exc}") from None
        except safe_tar.ArchiveRefused as exc:
            raise unknown(f"{Path(path).name} refused: {exc}") from None
        except OSError as exc:
            raise unknown(f"cannot read {path}: {exc.strerror}") from None

    def _extract(self, path: str, dest: Path, expanded: int) -> None:
        try:
            safe_tar.extract(path, str(dest), deadline=self.deadline, max_bytes=expanded)
        except safe_tar.ArchiveCorrupt as exc:
            raise critical(f"{Path(path).name}: {exc}") from None
        except safe_tar.ArchiveRefused as exc:
            raise unknown(f"{Path(path).name} refused: {exc}") from None
        except OSError as exc:
            raise unknown(f"cannot extract {Path(path).name} into the scratch directory: {exc.strerror}") from None

    # --- a pg_dumpall file ---------------------------------------------------------------------------------

    def _dumpall(self) -> None:
        path = self.spec["backup"]
        self.phase("scan")
        sql_bytes, head = self._read_script(path)
        found = _VERSION_LINE.search(head)
        if found is None:
            raise unknown(f"{Path(path).name}: no '-- Dumped from database version' line in its first "
                          f"{_size(HEAD_BYTES)}: set pg_bin_dir to the server version to restore it with")
        major = found.group(1).decode()
        self.facts.update(version=major, sql_bytes=sql_bytes)
        bin_dir = self._bin_dir(major)
        self._space(sql_bytes + INITDB_BYTES)

        self.phase("initdb")
        restore_began = time.monotonic()
        server = self.server = ScratchServer(self.run_dir, bin_dir, self.user)
        server.initdb(BOOTSTRAP_ROLE, self.deadline)
        server.configure(replace=False, recovery=None)
        server.hand_over()
        server.start()
        session = self._ready(BOOTSTRAP_ROLE)
        self.phase("load")
        self._load(path, session)
        self.facts["restore_seconds"] = round(time.monotonic() - restore_began, 3)
        self.facts.update(recovered_at=os.stat(path).st_mtime,
                          recovered_source="the dump file's modification time (its data is from before)",
                          recovered_wall=time.time())
        self._probe(BOOTSTRAP_ROLE)

    def _chunks(self, path: str) -> Iterator[bytes]:
        """The script's SQL text in chunks (gzip decompressed), the deadline checked between them."""
        with open(path, "rb") as raw:
            gzipped = raw.read(2) == b"\x1f\x8b"
        with (gzip.open(path, "rb") if gzipped else open(path, "rb")) as fh:
            while True:
                if time.monotonic() >= self.deadline:
                    raise Deadline()
                chunk = fh.read(CHUNK_BYTES)
                if not chunk:
                    return
                yield chunk

    def _read_script(self, path: str) -> tuple[int, bytes]:
        """Read the script to its end: its size, its head; raise when it is not a complete pg_dumpall script."""
        name = Path(path).name
        total, head, tail = 0, b"", b""
        try:
            for chunk in self._chunks(path):
                total += len(chunk)
                if len(head) < HEAD_BYTES:
                    head += chunk[:HEAD_BYTES - len(head)]
                tail = (tail + chunk)[-4096:]
        except (EOFError, gzip.BadGzipFile, OSError) as exc:
            if isinstance(exc, OSError) and not isinstance(exc, gzip.BadGzipFile) and exc.strerror:
                raise unknown(f"cannot read {path}: {exc.strerror}") from None
            raise critical(f"{name}: gzip stream corrupt or truncated ({exc})") from None
        if b"-- PostgreSQL database cluster dump" not in head[:4096]:
            raise unknown(f"{name} does not start like pg_dumpall output (no '-- PostgreSQL database cluster dump' "
                          f"header)")
        if b"-- PostgreSQL database cluster dump complete" not in tail:
            raise critical(f"{name}: pg_dumpall script incomplete: no 'PostgreSQL database cluster dump complete' "
                           f"at its end (the dump stopped early)")
        return total, head

    def _load(self, path: str, session) -> None:
        from checks.dump_policy import created_database, judge_cluster
        from checks.pg_load import ScriptLoader, StatementFailed, Watchdog
        from checks.pg_script import ScriptIncomplete, ScriptRefused, read_segments
        import psycopg

        name = Path(path).name
        created: set[str] = set()
        state = {"conn": session}

        def judge(statement):
            reason = judge_cluster(statement)
            if reason is None:
                database = created_database(statement)
                if database is not None:
                    created.add(database)
            return reason

        def on_connect(segment):
            if segment.dbname not in created and segment.dbname not in PRESENT_DATABASES:
                raise ScriptRefused(segment.line, f"\\connect to {segment.dbname!r}, a database the script did not "
                                                  f"create", segment.text)
            state["conn"].close()
            state["conn"] = self._session(segment.dbname, BOOTSTRAP_ROLE, read_only=False)
            watch.conn = state["conn"]
            return state["conn"]

        loader = ScriptLoader(session, judge, on_connect)
        with Watchdog(session, self.deadline) as watch:
            try:
                loader.load(read_segments(self._chunks(path)))
            except ScriptRefused as exc:
                raise unknown(f"{name} refused at line {exc.line}: {exc.reason}"
                              + (f": {exc.excerpt}" if exc.excerpt else "")) from None
            except ScriptIncomplete as exc:
                raise critical(f"{name} ends early: {exc}") from None
            except StatementFailed as exc:
                if watch.expired:
                    raise Deadline() from None
                self.facts["failed_statement"] = exc.excerpt
                raise critical(f"restore of {name} failed at line {exc.line}: {exc.message}") from None
            except psycopg.Error as exc:
                if watch.expired:
                    raise Deadline() from None
                raise unknown(f"connection to the scratch server lost: {_first_line(exc)}") from None
            finally:
                state["conn"].close()
            if watch.expired:
                raise Deadline()
        self.facts.update(statements=loader.statements, databases_created=sorted(created))

    # --- sessions, inventory, sanity -----------------------------------------------------------------------

    def _session(self, dbname: str, role: str, read_only: bool = True):
        import psycopg
        from psycopg.rows import dict_row

        options = "-c default_transaction_read_only=on" if read_only else "-c standard_conforming_strings=on"
        return psycopg.connect(host=str(self.server.socket), port=PORT, user=role, dbname=dbname,
                               connect_timeout=str(max(2, min(30, round(self.left())))), options=options,
                               application_name="maint-agent restore_cluster", autocommit=True,
                               prepare_threshold=None, row_factory=dict_row)

    def _ready(self, role: str):
        """The first session the restored server accepts (read-write: a pg_dumpall load needs one)."""
        last = [time.monotonic()]

        def progress() -> None:
            if time.monotonic() - last[0] >= 60:
                last[0] = time.monotonic()
                emit(waiting="recovery", elapsed=round(last[0] - self.began, 3))

        try:
            return self.server.wait_ready(lambda: self._session("postgres", role, read_only=False), self.deadline,
                                          progress)
        except ServerFailed as exc:
            self.facts["server_log"] = self.server.log_tail()[-4000:]
            raise critical(f"the restored server did not start: {exc.reason}") from None
        except RoleMissing as exc:
            raise unknown(f"cannot connect as {role}: {exc} (set role to a superuser of the backed-up "
                          f"cluster)") from None

    def _probe(self, role: str) -> None:
        """Databases, tables, rows and sizes of the restored cluster, then the sanity queries."""
        import psycopg

        self.phase("probe")
        with self._session("postgres", role) as conn:
            names = [r["datname"] for r in conn.execute(
                "SELECT datname FROM pg_database WHERE datallowconn AND NOT datistemplate ORDER BY datname")]
            self.facts["roles"] = conn.execute(
                "SELECT count(*) AS n FROM pg_roles WHERE rolname !~ '^pg_' AND rolname <> %s",
                (BOOTSTRAP_ROLE,)).fetchone()["n"]
        databases = []
        for name in names:
            with self._session(name, role) as conn:
                databases.append(self._inventory(conn, name))
        self.facts["databases"] = databases
        results = []
        sessions: dict[str, Any] = {}
        try:
            for query in self.spec["sanity"]:
                results.append(self._sanity(query, role, sessions))
        finally:
            for conn in sessions.values():
                try:
                    conn.close()
                except psycopg.Error:
                    pass
        self.facts["sanity"] = results

    def _inventory(self, conn, name: str) -> dict:
        from psycopg import sql

        tables = conn.execute("""
            SELECT n.nspname AS schema, c.relname AS name FROM pg_class c
            JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition
              AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_toast%%'
            ORDER BY 1, 2""").fetchall()
        entry = {"name": name, "tables": len(tables),
                 "size_bytes": conn.execute("SELECT pg_database_size(current_database()) AS s").fetchone()["s"]}
        if self.spec["count_rows"]:
            rows = 0
            for t in tables:
                conn.execute(f"SET statement_timeout = {max(1, int(self.left() * 1000))}")
                rows += conn.execute(sql.SQL("SELECT count(*) AS n FROM {}").format(
                    sql.Identifier(t["schema"], t["name"]))).fetchone()["n"]
            entry["rows"] = rows
        return entry

    def _sanity(self, query: dict, role: str, sessions: dict) -> dict:
        import psycopg
        from checks.restore_common import SanityQuery, run_sanity

        model = SanityQuery.model_validate({k: v for k, v in query.items() if k != "database"})
        database = query.get("database") or "postgres"
        limit = min(model.timeout or self.spec["statement_timeout"], self.left())
        entry = {"name": model.label(), "database": database, "expect": model.expectation(),
                 "timeout_seconds": round(limit, 3)}
        began = time.monotonic()
        try:
            conn = sessions.get(database)
            if conn is None:
                conn = sessions[database] = self._session(database, role)
            value, reason = run_sanity(conn, model, limit)
            entry.update(value=value, ok=reason is None, reason=reason)
        except psycopg.errors.QueryCanceled:
            if limit >= self.deadline - began:
                raise Deadline() from None
            entry.update(value=None, ok=False, reason=f"cancelled after {limit:g}s (its timeout)")
        except psycopg.Error as exc:
            entry.update(value=None, ok=False, reason=f"error: {_first_line(exc)}")
        entry["seconds"] = round(time.monotonic() - began, 3)
        return entry


def _first_line(exc: Exception) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def _size(count: int) -> str:
    from agent.plugin.units import format_size
    return format_size(count)


def _recovery_figures(log: Path) -> dict:
    """The scratch server's own account of its recovery: WAL segments restored from the archive, the redo's
    CPU and elapsed time, the timeline it promoted to."""
    figures: dict[str, Any] = {"wal_segments_from_archive": 0}
    try:
        with open(log, errors="replace") as fh:
            for line in fh:
                if "restored log file" in line:
                    figures["wal_segments_from_archive"] += 1
                elif found := re.search(r"redo done at \S+ system usage: (.*)$", line):
                    figures["redo"] = found.group(1).strip()
                elif found := re.search(r"selected new timeline ID: (\d+)", line):
                    figures["timeline"] = int(found.group(1))
    except OSError:
        pass
    return figures


def _label_time(label: bytes) -> float | None:
    """backup_label's `START TIME: 2026-12-03 10:17:53 UTC` as a Unix time (None when absent or odd)."""
    found = re.search(rb"^START TIME: (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d) (\S+)", label, re.M)
    if not found:
        return None
    moment = datetime.strptime(found.group(1).decode(), "%Y-%m-%d %H:%M:%S")
    zone = found.group(2).decode()
    if zone in ("UTC", "GMT"):
        return moment.replace(tzinfo=timezone.utc).timestamp()
    return moment.timestamp()       # the server's local zone name: read as the agent's local time


def _die_with_parent(parent: int) -> None:
    """SIGTERM when the agent's thread that started us goes away (Linux), and stop if it already has."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent:
        sys.exit(3)


def main(spec_text: str) -> int:
    spec = json.loads(spec_text)
    os.umask(0o077)
    restore = Restore(spec)

    def on_term(signum, frame):
        if restore.server is not None:
            restore.server.interrupt()
        raise Interrupted()

    signal.signal(signal.SIGTERM, on_term)
    _die_with_parent(spec["parent"])
    status, reason = "ok", None
    try:
        restore.run()
    except Outcome as outcome:
        status, reason = outcome.status, outcome.reason
    except Interrupted:
        status, reason = "unknown", "interrupted: the agent is stopping"
    except Exception as exc:  # noqa: BLE001 - reported to the agent as UNKNOWN with the reason, traceback on stderr
        traceback.print_exc()
        status, reason = "unknown", f"restore worker failed: {type(exc).__name__}: {exc}"
    emit(result={"status": status, "reason": reason, "facts": restore.facts})
    return 0
