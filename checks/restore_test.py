"""The restore test: the disaster recovery drill, automated (the backup strategy's "Backup Verification
Script", its RPO/RTO). It restores the newest dump into a scratch database, runs sanity queries there, drops
it, and reports the measured restore time (the RTO figure).

A dump is data written by another job: restoring it never runs psql. Its SQL is read by `checks.pg_script`,
judged by `checks.dump_policy` and sent through psycopg (`checks.pg_load`); archives go through pg_restore
(`checks.bounded_process`: own process group, killed at the deadline, an environment built from nothing).
Metric labels are the check name only.
"""

from __future__ import annotations

import os
import re
import secrets
import time
import zlib
from dataclasses import dataclass, field
from datetime import datetime
from typing import Iterator, Literal

from pydantic import Field, model_validator

from agent.plugin import logs
from agent.plugin.child_env import child_env
from agent.plugin.fields import AbsoluteGlob, Duration, PositiveDuration, Secret
from agent.plugin.result import CheckResult, Sample, Status, cap_summary, sample, worst
from agent.plugin.units import format_duration, format_size
from checks.base import Check, CheckContext, DurationThresholds, Threshold
from checks.backup_verify import (
    CHUNK_BYTES, EDGE_BYTES, SIDECAR_SUFFIX, BackupFile, Corrupt, GunzipReader, RawReader, Recorder, VerifyTimeout,
    drain_raw, dump_script_problem, find_backups, find_program, read_sidecar, default_keys, short_path,
)
from checks.bounded_process import Finished, StreamedOutput
from checks.dump_policy import judge
from checks.pg_load import ScriptLoader, StatementFailed, Watchdog
from checks.pg_script import Connect, ScriptIncomplete, ScriptRefused, read_segments
from checks.pg_session import PgOptions, ProbeFailed, describe_error, is_down, open_session, redact_query
from checks.restore_common import RESTORE_METRICS, SanityQuery, run_sanity

# --- restore_test: the scratch database ----------------------------------------------------------------------

SCRATCH_PREFIX = "maint_restore_"
SCRATCH_RE = re.compile(r"maint_restore_(\d{8}t\d{6})_[0-9a-f]{8}")


def scratch_name(wall: float) -> str:
    """A fresh scratch database name: `maint_restore_<UTC time>_<random>`, unique across runs and hosts."""
    return f"{SCRATCH_PREFIX}{time.strftime('%Y%m%dt%H%M%S', time.gmtime(wall))}_{secrets.token_hex(4)}"


def ensure_scratch(name: str) -> str:
    """Return `name` when it is a scratch database name; raise RuntimeError otherwise.

    Called right before every DROP DATABASE (and kept as a real test, not an
    `assert` that `python -O` would strip): no code path can drop a database
    that does not carry the scratch pattern.
    """
    if not SCRATCH_RE.fullmatch(name):
        raise RuntimeError(f"refusing to drop {name!r}: not a restore_test scratch database name")
    return name


def _scratch_created(name: str) -> float | None:
    found = SCRATCH_RE.fullmatch(name)
    if not found:
        return None
    return datetime.strptime(found.group(1) + "+0000", "%Y%m%dt%H%M%S%z").timestamp()


# --- restore_test: loading a dump ----------------------------------------------------------------------------

_DRAIN_SECONDS = 30.0        # after the server rejects a statement, how long pg_restore may take to show its own error
_PRIVILEGED_SQL = """
    SELECT r.rolname, r.rolsuper, r.rolcreaterole AND current_setting('server_version_num')::int < 160000
    FROM pg_roles r
    WHERE pg_has_role(current_user, r.oid, 'MEMBER')
      AND (r.rolsuper OR (r.rolcreaterole AND current_setting('server_version_num')::int < 160000)
           OR r.rolname IN ('pg_execute_server_program', 'pg_read_server_files', 'pg_write_server_files'))
    ORDER BY r.rolname"""


def role_privileges(conn) -> tuple[str, list[str]]:
    """Given a session, return its role and what lets that role reach the database host (empty: nothing).

    A superuser, membership in pg_execute_server_program, pg_read_server_files
    or pg_write_server_files (the role itself or one it can SET ROLE to), and
    CREATEROLE before PostgreSQL 16 (it can grant itself those roles).
    """
    me, superuser = conn.execute("SELECT rolname, rolsuper FROM pg_roles WHERE rolname = current_user").fetchone()
    if superuser:
        return me, ["it is a superuser"]        # a superuser is a member of every role: the rest says nothing more
    reasons = []
    for role, superuser, createrole in conn.execute(_PRIVILEGED_SQL).fetchall():
        if superuser:
            reasons.append(f"it can act as superuser {role}")
        elif createrole:
            reasons.append(f"{'it' if role == me else role} has CREATEROLE, which before PostgreSQL 16 can grant "
                           f"pg_execute_server_program")
        else:
            reasons.append(f"it can act as {role}")
    return me, reasons


def restore_format(path: str) -> str:
    """Given a dump's path, return pg_directory, pg_custom, pg_tar or plain from what it holds."""
    if os.path.isdir(path):
        return "pg_directory"
    with open(path, "rb") as fh:
        head = fh.read(512)
    if head.startswith(b"PGDMP"):
        return "pg_custom"
    if head[257:262] == b"ustar":
        return "pg_tar"
    return "plain"


def _format_problem(path: str, fmt: str) -> str | None:
    """Why the dump at `path` is not of format `fmt` (given in the options), or None."""
    if fmt == "pg_directory":
        return None if os.path.isfile(os.path.join(path, "toc.dat")) else "is not a pg_dump directory (no toc.dat)"
    if os.path.isdir(path):
        return "is a directory, not a file"
    with open(path, "rb") as fh:
        head = fh.read(512)
    if fmt == "pg_custom" and not head.startswith(b"PGDMP"):
        return "is not a custom-format dump (no PGDMP header)"
    if fmt == "pg_tar" and head[257:262] != b"ustar":
        compressed = " (a compressed one: pg_restore reads uncompressed tar archives only)" \
            if head.startswith(b"\x1f\x8b") else ""
        return f"is not a tar archive{compressed}"
    return None


class _ToolFailed(Exception):
    """pg_restore could not turn the archive into SQL; the message is its first error."""


class _ChunkReader:
    """`read()` over an iterator of chunks (pg_restore's output), for Recorder."""

    def __init__(self, chunks: Iterator[bytes]):
        self.chunks = chunks

    def read(self, n: int = -1) -> bytes:
        return next(self.chunks, b"")


class _LoadRun:
    """One load: the SQL text (from the file or from pg_restore) through the reader into the loader."""

    def __init__(self, program: str | None, source: BackupFile, loader: ScriptLoader, deadline: float, monotonic):
        self.program = program
        self.source = source
        self.loader = loader
        self.deadline = deadline
        self.monotonic = monotonic
        self.text: Recorder | None = None
        self.raw: RawReader | None = None
        self.errors = ""

    def sql_bytes(self) -> int:
        return self.text.total if self.text is not None else 0

    def go(self) -> None:
        if self.program is None:
            self._plain()
        else:
            self._archive()

    def _plain(self) -> None:
        with open(self.source.path, "rb") as fh:
            self.raw = RawReader(fh, self.deadline, self.monotonic)
            gzipped = fh.read(2) == b"\x1f\x8b"
            fh.seek(0)
            self.text = Recorder(GunzipReader(self.raw) if gzipped else self.raw)
            self._script()

    def _archive(self) -> None:
        """`pg_restore -f -` writes the archive as SQL without a connection; its failure is the reason to give."""
        argv = [self.program, "--file=-", "--no-owner", "--no-privileges", self.source.path]
        with StreamedOutput(argv, deadline=self.deadline, env=child_env(), monotonic=self.monotonic) as child:
            chunks = iter(child)
            self.text = Recorder(_ChunkReader(chunks))
            try:
                self._script()
            except (StatementFailed, Corrupt):
                self._drain(child, chunks)
                raise
            finally:
                self.errors = child.errors
            if child.returncode != 0:
                raise _ToolFailed(self._reason(child))

    def _drain(self, child: StreamedOutput, chunks: Iterator[bytes]) -> None:
        """When the load failed first, let pg_restore finish briefly: a corrupt archive is the real cause."""
        until = min(self.deadline, self.monotonic() + _DRAIN_SECONDS)
        child.deadline = until
        try:
            for _ in chunks:
                pass
        except TimeoutError:
            return
        finally:
            self.errors = child.errors
        if child.returncode not in (0, None):
            raise _ToolFailed(self._reason(child)) from None

    @staticmethod
    def _reason(child: StreamedOutput) -> str:
        return Finished(child.returncode, child.errors, 0.0, 0).reason()

    def _script(self) -> None:
        text = self.text
        try:
            self.loader.load(read_segments(iter(lambda: text.read(CHUNK_BYTES), b"")))
        except ScriptIncomplete as exc:
            raise Corrupt(dump_script_problem(text.head, text.tail) or f"the script ends early ({exc})") from None
        problem = dump_script_problem(text.head, text.tail)
        if problem:
            raise Corrupt(problem)


def _refuse_connect(segment: Connect):
    raise ScriptRefused(segment.line, f"\\connect to database {segment.dbname!r}: restore_test restores one "
                                      f"database into its scratch database and never follows \\connect",
                        segment.text)


def _owner_hint(message: str, program: str | None) -> str:
    if program is None and re.search(r"must be (owner|member|able to SET ROLE)|permission denied", message):
        return (" (plain dumps restore with their owners and grants: dump with --no-owner --no-privileges, or "
                "restore as a role allowed what the dump does)")
    return ""


def _peek_script(path: str) -> bytes:
    """The first EDGE_BYTES of the SQL text of a plain or gzip-compressed dump."""
    with open(path, "rb") as fh:
        head = fh.read(64 * 1024)
    if not head.startswith(b"\x1f\x8b"):
        return head[:EDGE_BYTES]
    try:
        return zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(head, EDGE_BYTES)
    except zlib.error as exc:
        raise Corrupt(f"gzip data corrupt at its start: {exc}") from None


class _Stop(Exception):
    """Ends a restore test early with a status and the reason; the scratch database is still dropped."""

    def __init__(self, status: Status, reason: str):
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass
class _Attempt:
    """One restore test in progress: what the `finally` needs to clean up and the evidence so far."""

    name: str
    may_exist: bool = False            # set before CREATE DATABASE is sent: a lost reply must still be cleaned up
    began: float = 0.0                 # monotonic time CREATE DATABASE was sent: the RTO clock starts there
    details: dict = field(default_factory=dict)
    samples: list = field(default_factory=list)


class RestoreTestCheck(Check):
    """The DR drill: restore the newest backup into a scratch database, query it, drop it (monthly, timeout 6h).

    The newest dump matching `path` (a glob, or one file; a `pg_dump -Fd`
    directory counts as one dump) is restored on the server of `dsn` — a
    maintenance connection whose role has CREATEDB and nothing more, to an
    existing database such as `postgres` — into a new database named
    `maint_restore_<UTC time>_<random>`, created from template0. The scratch
    database is dropped (`DROP DATABASE … WITH (FORCE)`) at the end of every
    run — success, failure, timeout or error — and only a name matching that
    pattern is ever dropped; a DSN naming a scratch database is refused.
    Scratch databases older than the timeout left by a killed agent are
    reported (WARNING), not dropped.

    A dump is data written by another job, so restoring it never runs psql.
    Plain SQL (`.sql`, `.sql.gz`, gzip decompressed by the agent) is read by a
    tokenizer and sent through psycopg on a session pinned to the scratch
    database; custom, directory and tar archives are first turned into SQL by
    `pg_restore -f - --no-owner --no-privileges` (no database connection) and
    take the same path. Every statement is judged before it is sent: only what
    a single-database pg_dump writes runs (UNKNOWN "refused at line N"
    otherwise) — no psql meta-command, no `\\connect`, nothing that reaches
    outside the scratch database (databases, roles, tablespaces,
    subscriptions, ALTER SYSTEM, COPY to or from files or programs, functions
    in untrusted languages). pg_dumpall files are refused as a whole. Plain
    dumps restore with their owners and grants, so the role must be allowed
    what the script does, or the dump be taken with --no-owner
    --no-privileges. A role that is a superuser, or can act as
    pg_execute_server_program, pg_read_server_files or pg_write_server_files
    (or holds CREATEROLE, which can grant those before PostgreSQL 16), is
    refused unless `allow_superuser` is set: code carried by the dump runs
    with the role's rights (docs/security.md).

    `restore_duration_seconds` (create + load, the measured RTO) is what
    `warning`/`critical` judge; by default (neither given) critical 4h, the
    recovery time objective. The run is bounded by the check's `timeout`, which defaults to
    6h for this type: set it above the expected restore time (e.g. `timeout:
    4h`). At the deadline the running statement is cancelled (pg_restore
    killed), the scratch database dropped and the result is UNKNOWN. Without
    `every` or `schedule` the test runs on the `monthly` schedule. Sanity
    queries run read-only in the scratch database, each under its own
    statement_timeout. `restore_last_success_timestamp_seconds` lives in the
    agent's memory: it is 0 after a restart until a test passes again (the
    store has the history).
    """

    TYPE = "restore_test"
    EXAMPLE = """
        - name: restore-test
          type: restore_test
          schedule: monthly
          timeout: 6h
          dsn: ${credential:restore.dsn}   # a role with CREATEDB only, to the restore server
          path: /backups/database/*/app.dump
          sanity:
            - {name: users exist, query: "SELECT count(*) FROM users", min: 1}
          critical: 4h            # the recovery time objective
    """
    METRIC_PREFIX = "backup"

    class Options(PgOptions, DurationThresholds):
        type: Literal["restore_test"]
        warning: Duration | None = Field(None, description="restore duration (create + load)")
        critical: Duration | None = Field(None, description="restore duration; 4h (the recovery time objective) when neither "
                                                            "warning nor critical is given")
        path: AbsoluteGlob = Field(..., description="absolute path or glob of the dumps (files, or pg_dump -Fd "
                                           "directories); the newest is restored")
        format: Literal["auto", "plain", "pg_custom", "pg_directory", "pg_tar"] = Field(
            "auto", description="plain: SQL script, optionally gzip-compressed; pg_custom, pg_directory, pg_tar: "
                                "pg_dump -Fc, -Fd, -Ft; auto: by the first bytes (a directory holding toc.dat)")
        sanity: tuple[SanityQuery, ...] = Field((), description="queries with expectations, e.g. "
                                                                "{query: SELECT count(*) FROM users, min: 1}")
        jobs: int = Field(1, ge=1, le=64, description="kept for existing configurations; no effect: archives are "
                                                     "converted to SQL by one pg_restore and loaded in one session")
        allow_superuser: bool = Field(False, description="restore even when the DSN's role is a superuser or can "
                                                         "run programs or read/write files on the database host "
                                                         "(the dump's code then runs with those rights; see "
                                                         "docs/security.md)")
        verify_checksum: bool = Field(True, description="compare a <file>.sha256 sidecar when present")
        progress_every: PositiveDuration = Field(60.0, description="log a progress line this often during the restore")
        settle: Duration = Field(300.0, description="files modified more recently are taken as still being "
                                                    "written and ignored")
        pg_bin_dir: str | None = Field(None, description="where pg_restore is (archive formats); default: PATH, "
                                                         "then the newest /usr/lib/postgresql/*/bin")
        timeout: PositiveDuration | None = Field(6 * 3600.0,
                                                 description="the whole test; above the expected restore time")
        statement_timeout: PositiveDuration = Field(60.0, description="CREATE/DROP DATABASE and each sanity query "
                                                                      "without its own timeout")

        @model_validator(mode="before")
        @classmethod
        def _type_defaults(cls, data):
            return default_keys(default_keys(data, warning=None, critical="4h"), every=None, schedule="monthly")


    METRICS = RESTORE_METRICS
    THRESHOLD = Threshold(("restore_duration_seconds",), "seconds")

    def __init__(self, options):
        super().__init__(options)
        self._last_success = 0.0

    def run(self, ctx: CheckContext) -> CheckResult:
        import psycopg
        from psycopg.conninfo import conninfo_to_dict

        o = self.options
        started = ctx.monotonic()
        try:
            dsn = Secret(o.dsn).reveal()
        except (OSError, LookupError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            return self._result(Status.UNKNOWN, f"cannot read the DSN: {reason}", None, {})
        try:
            params = conninfo_to_dict(dsn)
        except psycopg.Error:
            return self._result(Status.UNKNOWN, "invalid DSN (libpq cannot parse it; not shown because it may "
                                                "hold a password)", None, {})
        if str(params.get("dbname", "")).startswith(SCRATCH_PREFIX):
            return self._result(Status.UNKNOWN, "refusing to run: the DSN's database has the scratch-database "
                                                "prefix; point it at a maintenance database such as postgres",
                                None, {})
        try:
            files, writing = find_backups(o.path, ctx.wall(), o.settle, dump_dirs=True)
        except OSError as exc:
            return self._result(Status.UNKNOWN, f"cannot list {o.path}: {exc.strerror} ({exc.filename})", None, {})
        if not files:
            note = f" ({len(writing)} still being written)" if writing else ""
            return self._result(Status.CRITICAL, f"no backup matches {o.path}{note}", None, {"path": o.path})
        source = files[0]
        attempt = _Attempt(scratch_name(ctx.wall()))
        attempt.details.update(file=source.evidence(ctx.wall()), scratch_database=attempt.name)
        outcome: _Stop | None = None
        reserve = min(30.0, max(1.0, ctx.timeout * 0.1))   # time kept back to drop the scratch database
        try:
            self._test(source, dsn, params, attempt, ctx, started + ctx.timeout - reserve)
        except _Stop as stop:
            outcome = stop
        except psycopg.Error as exc:
            outcome = _Stop(Status.UNKNOWN, f"database error: {describe_error(exc, dsn)}")
        finally:
            dropped = self._drop(params, dsn, attempt, reserve) if attempt.may_exist else None
        return self._conclude(outcome, dropped, source, attempt, ctx, started)

    # the steps, in order

    def _test(self, source: BackupFile, dsn: str, params: dict, attempt: _Attempt, ctx: CheckContext,
              deadline: float) -> None:
        fmt, program = self._plan(source)
        attempt.details["format"] = fmt
        if fmt in ("pg_custom", "pg_tar"):
            self._check_sidecar_first(source, attempt, deadline, ctx)
        elif fmt == "pg_directory":
            attempt.details["checksum"] = "not applicable (directory)"
        self._create(params, dsn, attempt, ctx, deadline)
        loaded = self._load(program, source, dsn, params, attempt, ctx, deadline)
        attempt.samples.append(sample("restore_duration_seconds", loaded))
        self._probe(dsn, attempt, ctx, deadline)

    def _plan(self, source: BackupFile) -> tuple[str, str | None]:
        """Return the dump's format and the pg_restore that turns it into SQL (None for plain SQL)."""
        o = self.options
        name = short_path(source.path, o.path)
        try:
            fmt = o.format if o.format != "auto" else restore_format(source.path)
            problem = _format_problem(source.path, fmt)
            if problem:
                raise _Stop(Status.CRITICAL, f"{name} {problem}")
            text = _peek_script(source.path) if fmt == "plain" else b""
        except OSError as exc:
            raise _Stop(Status.UNKNOWN, f"cannot read {source.path}: {exc.strerror}") from None
        except Corrupt as exc:
            raise _Stop(Status.CRITICAL, f"{name}: {exc}") from None
        if fmt == "plain":
            if b"-- PostgreSQL database cluster dump" in text:
                raise _Stop(Status.UNKNOWN, f"{name} is a pg_dumpall cluster dump: it would create roles "
                                            f"and connect to other databases, so restore_test refuses it (point "
                                            f"path at single-database pg_dump files)")
            if b"-- PostgreSQL database dump" not in text:
                raise _Stop(Status.UNKNOWN, f"{name} does not start like pg_dump output; restore_test "
                                            f"restores pg_dump files only")
            return fmt, None
        program = find_program("pg_restore", o.pg_bin_dir)
        if program is None:
            raise _Stop(Status.UNKNOWN, "pg_restore not found (install postgresql-client or set pg_bin_dir)")
        return fmt, program

    def _check_sidecar_first(self, source: BackupFile, attempt: _Attempt, deadline: float, ctx) -> None:
        """Custom and tar archives: compare the sidecar before restoring (pg_restore reads the file itself)."""
        if not self.options.verify_checksum or not os.path.exists(source.path + SIDECAR_SUFFIX):
            return
        try:
            with open(source.path, "rb") as fh:
                raw = RawReader(fh, deadline, ctx.monotonic)
                drain_raw(raw)
        except VerifyTimeout:
            raise _Stop(Status.UNKNOWN, f"timed out hashing {source.path} for its sidecar") from None
        except OSError as exc:
            raise _Stop(Status.UNKNOWN, f"cannot read {source.path}: {exc.strerror}") from None
        self._compare_sidecar(source, raw.sha.hexdigest(), attempt, "not restored")

    def _compare_sidecar(self, source: BackupFile, digest: str, attempt: _Attempt, consequence: str) -> None:
        attempt.details["sha256"] = digest
        state, expected = read_sidecar(source.path)
        if state == "present":
            attempt.details["checksum"] = "match" if expected == digest else "mismatch"
            if expected != digest:
                raise _Stop(Status.CRITICAL, f"sha256 of {os.path.basename(source.path)} ({digest[:16]}…) differs "
                                             f"from its sidecar ({expected[:16]}…); {consequence}")
        else:
            attempt.details["checksum"] = state

    def _maintenance(self, params: dict, connect_timeout: float, statement_timeout: float):
        """A read-write autocommit session on the DSN's database for CREATE/DROP DATABASE, both timeouts set."""
        import psycopg

        p = dict(params)
        ours = f"-c statement_timeout={max(1, int(statement_timeout * 1000))}"
        p["options"] = f"{p['options']} {ours}" if p.get("options") else ours
        p["connect_timeout"] = str(max(2, round(connect_timeout)))
        # a server that vanishes mid-statement ends the connection instead of leaving the run waiting
        p.update(keepalives="1", keepalives_idle="5", keepalives_interval="5", keepalives_count="3",
                 tcp_user_timeout=str(max(1000, int((statement_timeout + 5) * 1000))))
        p.setdefault("application_name", "maint-agent restore_test")
        return psycopg.connect(**p, autocommit=True, prepare_threshold=None)

    def _create(self, params: dict, dsn: str, attempt: _Attempt, ctx: CheckContext, deadline: float) -> None:
        import psycopg
        from psycopg import sql

        o = self.options
        left = deadline - ctx.monotonic()
        if left <= 0:
            raise _Stop(Status.UNKNOWN, "timed out before the restore began")
        before = ctx.monotonic()
        try:
            conn = self._maintenance(params, min(o.connect_timeout, left), min(o.statement_timeout, left))
        except psycopg.Error as exc:
            raise _Stop(Status.UNKNOWN, f"cannot connect to the restore server: {describe_error(exc, dsn)}") from None
        with conn:
            current = conn.execute("SELECT current_database()").fetchone()[0]
            if current.startswith(SCRATCH_PREFIX):
                raise _Stop(Status.UNKNOWN, f"refusing to run: connected to {current}, a scratch-database name; "
                                            f"point the DSN at a maintenance database such as postgres")
            self._check_role(conn, attempt)
            rows = conn.execute(r"SELECT datname FROM pg_database WHERE datname LIKE 'maint\_restore\_%'").fetchall()
            wall = ctx.wall()
            leftovers = [r[0] for r in rows if (_scratch_created(r[0]) or wall) < wall - ctx.timeout]
            if leftovers:
                attempt.details["leftover_scratch_databases"] = leftovers
            attempt.may_exist = True
            try:
                conn.execute(sql.SQL("CREATE DATABASE {} TEMPLATE template0").format(sql.Identifier(attempt.name)))
            except psycopg.errors.DuplicateDatabase:
                attempt.may_exist = False      # someone else's: never ours to drop
                raise _Stop(Status.UNKNOWN, f"scratch name {attempt.name} already exists; not touched") from None
            except psycopg.Error as exc:
                if not is_down(exc) and not conn.broken:
                    attempt.may_exist = False
                raise _Stop(Status.UNKNOWN, f"cannot create the scratch database: {describe_error(exc, dsn)}") \
                    from None
        attempt.details["create_seconds"] = round(ctx.monotonic() - before, 3)
        attempt.began = before

    def _check_role(self, conn, attempt: _Attempt) -> None:
        """Refuse a role that lets the dump's SQL reach the database host, unless allow_superuser says so."""
        role, reasons = role_privileges(conn)
        attempt.details["restore_role"] = role
        if not reasons:
            return
        if not self.options.allow_superuser:
            raise _Stop(Status.UNKNOWN, f"refusing to restore as {role}: {'; '.join(reasons)}, so SQL carried by "
                                        f"the dump (COPY … PROGRAM, untrusted languages, code in its functions) "
                                        f"could run programs and read or write files on the database host; use a "
                                        f"role with CREATEDB only, or set allow_superuser: true for dumps trusted "
                                        f"like the database's owner")
        attempt.details["privileged_role"] = reasons

    def _session(self, params: dict, name: str, connect_timeout: float):
        """The load's session, pinned to the scratch database: autocommit, nothing prepared, standard strings."""
        import psycopg

        p = dict(params)
        ours = "-c standard_conforming_strings=on"
        p["options"] = f"{p['options']} {ours}" if p.get("options") else ours
        p.update(dbname=ensure_scratch(name), application_name="maint-agent restore_test",
                 connect_timeout=str(max(2, round(connect_timeout))),
                 keepalives="1", keepalives_idle="5", keepalives_interval="5", keepalives_count="3")
        return psycopg.connect(**p, autocommit=True, prepare_threshold=None)

    def _load(self, program: str | None, source: BackupFile, dsn: str, params: dict, attempt: _Attempt,
              ctx: CheckContext, deadline: float) -> float:
        """Load the dump into the scratch database through psycopg; return create + load seconds (the RTO figure).

        Plain SQL is read from the file; archives from `pg_restore -f -` (when
        `program` is given). Raise _Stop with the outcome when it is not a
        success.
        """
        import psycopg

        o = self.options
        tool = "pg_restore" if program else "psycopg"
        name = short_path(source.path, o.path)
        load_began = ctx.monotonic()
        left = deadline - load_began
        if left <= 0:
            raise _Stop(Status.UNKNOWN, "timed out before the load began")
        try:
            conn = self._session(params, attempt.name, min(o.connect_timeout, left))
        except psycopg.Error as exc:
            raise _Stop(Status.UNKNOWN, f"cannot connect to the scratch database: {describe_error(exc, dsn)}") \
                from None
        logs.event("restore_test.start", check=o.name, file=source.path, size=source.size, database=attempt.name,
                   tool=tool)
        run = _LoadRun(program, source, ScriptLoader(conn, judge, _refuse_connect), deadline, ctx.monotonic)

        def progress(elapsed: float) -> None:
            logs.event("restore_test.progress", check=o.name, database=attempt.name, elapsed=format_duration(elapsed),
                       sql_bytes=run.sql_bytes(), file_bytes=source.size)

        stop: _Stop | None = None
        of_sql = " of the SQL pg_restore wrote" if program else ""
        with conn, Watchdog(conn, deadline, tick=progress, every=o.progress_every, monotonic=ctx.monotonic) as watch:
            try:
                run.go()
            except OSError as exc:
                what = f"run {program}" if program and exc.filename == program else f"read {source.path}"
                stop = _Stop(Status.UNKNOWN, f"cannot {what}: {exc.strerror or exc}")
            except (VerifyTimeout, TimeoutError):
                stop = self._timed_out(program, ctx)
            except ScriptRefused as exc:
                stop = _Stop(Status.UNKNOWN, f"{name} refused at line {exc.line}{of_sql}: {exc.reason}"
                                             + (f": {exc.excerpt}" if exc.excerpt else ""))
            except Corrupt as exc:
                stop = _Stop(Status.CRITICAL, f"{name}: {exc}")
            except _ToolFailed as exc:
                stop = _Stop(Status.CRITICAL, f"restore of {name} failed: {exc}")
            except StatementFailed as exc:
                attempt.details["failed_statement"] = exc.excerpt
                stop = self._timed_out(program, ctx) if watch.expired else \
                    _Stop(Status.CRITICAL, f"restore of {name} failed at line {exc.line}{of_sql}: {exc.message}"
                                           f"{_owner_hint(exc.message, program)}")
            except psycopg.Error as exc:
                stop = self._timed_out(program, ctx) if watch.expired else \
                    _Stop(Status.UNKNOWN, f"connection to the scratch database lost: {describe_error(exc, dsn)}")
            if watch.expired and stop is None:
                stop = self._timed_out(program, ctx)
        attempt.details.update(tool=tool, load_seconds=round(ctx.monotonic() - load_began, 3),
                               sql_bytes=run.sql_bytes(), statements=run.loader.statements,
                               output=run.errors[-2000:] or None)
        if stop is not None:
            raise stop
        if run.raw is not None and o.verify_checksum:
            self._compare_sidecar(source, run.raw.sha.hexdigest(), attempt, "the restore used a file that "
                                                                           "is not the one backed up")
        return ctx.monotonic() - attempt.began

    @staticmethod
    def _timed_out(program: str | None, ctx: CheckContext) -> _Stop:
        return _Stop(Status.UNKNOWN, f"restore timed out after {format_duration(ctx.timeout)} (the check's "
                                     f"timeout; set it above the expected restore time); load cancelled"
                                     + ("; pg_restore killed" if program else ""))

    def _probe(self, dsn: str, attempt: _Attempt, ctx: CheckContext, deadline: float) -> None:
        """Read the restored database's size and tables, then run the sanity queries read-only."""
        import psycopg
        from psycopg.conninfo import make_conninfo

        o = self.options
        began = ctx.monotonic()
        try:
            conn = open_session(make_conninfo(dsn, dbname=ensure_scratch(attempt.name)), o,
                                max(0.001, deadline - ctx.monotonic()))
        except (psycopg.Error, ProbeFailed) as exc:
            raise _Stop(Status.UNKNOWN, f"cannot connect to the scratch database: {describe_error(exc, dsn)}") \
                from None
        results, failed = [], 0
        with conn:
            stats = conn.execute("""
                SELECT pg_database_size(current_database()) AS size,
                       (SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                        WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema')
                          AND n.nspname NOT LIKE 'pg\\_toast%') AS tables""").fetchone()
            attempt.samples += [sample("restore_database_size_bytes", stats["size"]),
                                sample("restore_tables", stats["tables"])]
            attempt.details.update(database_size_bytes=stats["size"], tables=stats["tables"])
            for query in o.sanity:
                entry = self._sanity(conn, query, dsn, ctx, deadline)
                results.append(entry)
                failed += not entry["ok"]
        attempt.details.update(sanity=results, sanity_seconds=round(ctx.monotonic() - began, 3))
        attempt.samples.append(sample("restore_sanity_failed", failed))
        if failed:
            bad = [f"{r['name']}: {r['reason']}" for r in results if not r["ok"]]
            raise _Stop(Status.CRITICAL, f"sanity failed ({failed}/{len(results)}): {'; '.join(bad)}")

    def _sanity(self, conn, query: SanityQuery, dsn: str, ctx: CheckContext, deadline: float) -> dict:
        import psycopg

        left = deadline - ctx.monotonic()
        own = query.timeout or self.options.statement_timeout
        if left <= 0:
            raise _Stop(Status.UNKNOWN, f"timed out after {format_duration(ctx.timeout)} before sanity query "
                                        f"{query.label()!r}")
        limit = min(own, left)
        entry = {"name": query.label(), "query": redact_query(query.query), "expect": query.expectation(),
                 "timeout_seconds": round(limit, 3)}
        began = ctx.monotonic()
        try:
            value, reason = run_sanity(conn, query, limit)
            entry.update(value=value, ok=reason is None, reason=reason)
        except psycopg.errors.QueryCanceled:
            if own > left:
                raise _Stop(Status.UNKNOWN, f"timed out after {format_duration(ctx.timeout)} in sanity query "
                                            f"{query.label()!r}") from None
            entry.update(value=None, ok=False, reason=f"cancelled after {format_duration(limit)} (its timeout)")
        except psycopg.Error as exc:
            if conn.broken:
                raise _Stop(Status.UNKNOWN, f"connection to the scratch database lost: "
                                            f"{describe_error(exc, dsn)}") from None
            entry.update(value=None, ok=False, reason=f"error: {describe_error(exc, dsn)}")
        entry["seconds"] = round(ctx.monotonic() - began, 3)
        return entry

    def _drop(self, params: dict, dsn: str, attempt: _Attempt, budget: float) -> str | None:
        """DROP the scratch database (terminating its sessions); return None when gone, else why not."""
        import psycopg
        from psycopg import sql

        name = ensure_scratch(attempt.name)
        try:
            with self._maintenance(params, min(self.options.connect_timeout, max(2.0, budget)),
                                   max(5.0, budget)) as conn:
                conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
                still = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
        except psycopg.Error as exc:
            logs.event("restore_test.drop_failed", "error", check=self.options.name, database=name,
                       reason=describe_error(exc, dsn))
            return describe_error(exc, dsn)
        return "still listed in pg_database after DROP" if still else None

    def _conclude(self, outcome: _Stop | None, drop_error: str | None, source: BackupFile, attempt: _Attempt,
                  ctx: CheckContext, started: float) -> CheckResult:
        o = self.options
        details = attempt.details
        details["scratch_dropped"] = drop_error is None if attempt.may_exist else "never created"
        details["total_seconds"] = round(ctx.monotonic() - started, 3)
        notes = []
        if outcome is None:
            self._last_success = ctx.wall()
            tables, size = details.get("tables"), details.get("database_size_bytes") or 0
            sanity = len(details.get("sanity", []))
            status = Status.OK
            notes.append(f"restored {short_path(source.path, o.path)} ({format_size(source.size)}, {details['format']}) "
                         f"in {format_duration(details['load_seconds'] + details.get('create_seconds', 0))}: "
                         f"{tables} tables, {format_size(size)}; "
                         + (f"{sanity}/{sanity} sanity queries passed" if sanity else "no sanity queries configured"))
        else:
            status = outcome.status
            notes.append(outcome.reason)
        if drop_error is not None and attempt.may_exist:
            status = worst(status, Status.WARNING)
            notes.append(f"scratch database {attempt.name} NOT dropped ({drop_error}): drop it by hand with "
                         f"DROP DATABASE {attempt.name} WITH (FORCE)")
        elif attempt.may_exist:
            notes.append("scratch database dropped")
        leftovers = details.get("leftover_scratch_databases")
        if leftovers:
            status = worst(status, Status.WARNING)
            notes.append(f"{len(leftovers)} scratch database(s) left by an interrupted run: {', '.join(leftovers)} "
                         f"(drop them by hand)")
        logs.event("restore_test.finished", check=o.name, status=status.label, database=attempt.name,
                   seconds=f"{details['total_seconds']:g}", dropped=details["scratch_dropped"])
        return self._result(status, "; ".join(notes), outcome, details, attempt.samples)

    def _result(self, status: Status, summary: str, outcome: _Stop | None, details: dict,
                samples: list[Sample] = ()) -> CheckResult:
        passed = status is not Status.UNKNOWN and outcome is None and bool(samples)
        base = [sample("restore_last_success_timestamp_seconds", self._last_success),
                sample("restore_passed", 1 if passed else 0)]
        return CheckResult(status, cap_summary(summary), tuple(base + list(samples)), details)
