"""`pg_maintenance`: ANALYZE, VACUUM (ANALYZE) or REINDEX CONCURRENTLY of named tables (routine
maintenance: update statistics, optimise indexes).

The statements come from a fixed set chosen by `operation`; table names are
checked against an identifier pattern at config check and composed with
`psycopg.sql.Identifier`, never formatted into SQL, and no option takes SQL.
Nothing drops, deletes or truncates. The tables are the configured `tables`,
else those the triggering `pg_tables` check listed in its details; with
neither, `analyze` analyzes the whole database (cheap, sampled) while
`vacuum_analyze` refuses, and `reindex_concurrently` always needs `tables`.

Each table is its own statement in autocommit (VACUUM cannot run in a
transaction), under `lock_timeout` (default 5 s: a table the application holds
locked is skipped rather than queued behind, which would block everyone queued
after it) and a statement_timeout of the time left in the run. A REINDEX
CONCURRENTLY that fails part way leaves an invalid `…_ccnew` index behind;
the result says so and leaves it to an operator (dropping is never automatic).
The DSN is read at the moment of use and never shown; errors are scrubbed of it.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field, model_validator

from actions.base import Action, ActionContext, ActionOptions, ActionResult, cap
from agent.plugin.fields import PositiveDuration, Secret, SecretStr, SecretUnavailable, is_reference
from agent.plugin.units import format_duration
from checks.pg_session import WATCHDOG_GRACE_SECONDS, Watchdog, describe_error

_IDENT = r"[A-Za-z_][A-Za-z0-9_$]{0,62}"
_TABLE_RE = re.compile(rf"^(?:({_IDENT})\.)?({_IDENT})$")

_STATEMENTS = {
    "analyze": "ANALYZE {}",
    "vacuum_analyze": "VACUUM (ANALYZE) {}",
    "reindex_concurrently": "REINDEX TABLE CONCURRENTLY {}",
}
_DONE = {"analyze": "analyzed", "vacuum_analyze": "vacuumed and analyzed", "reindex_concurrently": "reindexed"}


def check_table_name(name: str) -> str:
    """Given a table name from the config, return it; raise ValueError unless it is `table` or `schema.table`."""
    if not _TABLE_RE.match(name):
        raise ValueError(f"{name!r} is not a table name: schema.table or table, each a letter or '_' then "
                         f"letters, digits, '_' or '$' (no quotes, spaces or SQL)")
    return name


TableName = Annotated[str, AfterValidator(check_table_name)]
"""Checked per entry, so an error points at the offending line of `tables:`."""


def split_table(name: str) -> tuple[str, ...]:
    """`public.events` → ("public", "events"); `events` → ("events",)."""
    schema, table = _TABLE_RE.match(name).groups()
    return (schema, table) if schema else (table,)


class PgMaintenanceAction(Action):
    """ANALYZE, VACUUM (ANALYZE) or REINDEX CONCURRENTLY of listed or flagged tables; never DROP/DELETE."""

    TYPE = "pg_maintenance"
    EXAMPLE = """
        - name: analyze-tables
          type: pg_maintenance
          dsn: ${credential:pg.dsn}
          operation: analyze      # the tables the triggering pg_tables check listed
          cooldown: 1d
          max_attempts: 1
          within: 7d
    """

    class Options(ActionOptions):
        type: Literal["pg_maintenance"]
        dsn: SecretStr = Field(description="libpq connection string or URI of the database, usually a reference "
                                           "such as ${file:/etc/maint-agent/pg-maint.dsn}; the role must own the "
                                           "tables (or have the MAINTAIN privilege, PostgreSQL 17)")
        operation: Literal["analyze", "vacuum_analyze", "reindex_concurrently"] = Field(
            description="analyze: ANALYZE; vacuum_analyze: VACUUM (ANALYZE); reindex_concurrently: REINDEX "
                        "TABLE CONCURRENTLY (only of listed tables)")
        tables: tuple[TableName, ...] = Field((), description="schema.table names (as stored: case matters); default: "
                                                        "the tables the triggering pg_tables check listed")
        connect_timeout: PositiveDuration = Field(5.0, description="give up connecting after this long")
        lock_timeout: PositiveDuration = Field(5.0, description="skip a table whose lock is not granted within this "
                                                                "long, so the application is never blocked behind us")

        @model_validator(mode="after")
        def _reindex_needs_tables(self):
            if self.operation == "reindex_concurrently" and not self.tables:
                raise ValueError("reindex_concurrently needs `tables`: indexes are rebuilt only where listed")
            return self

    def target(self) -> str:
        dsn = self.options.dsn
        return f"postgres {dsn}" if is_reference(dsn) else "postgres"

    def execute(self, ctx: ActionContext) -> ActionResult:
        opts = self.options
        tables, skipped = self._tables(ctx)
        if not tables and opts.operation != "analyze":
            return ActionResult(False, f"{opts.operation}: no tables configured and none in the triggering "
                                       f"check's details", details={"skipped": skipped})
        try:
            dsn = Secret(opts.dsn).reveal()
        except SecretUnavailable as exc:
            return ActionResult(False, f"cannot read the DSN: {exc.reason}")
        import psycopg

        started = ctx.monotonic()
        try:
            conn = self._connect(dsn, ctx)
        except _Failed as failure:
            return ActionResult(False, str(failure))
        except psycopg.Error as exc:
            return ActionResult(False, ctx.redact(f"cannot connect: {describe_error(exc, dsn)}"))
        watchdog = Watchdog(conn, ctx.remaining(started) + WATCHDOG_GRACE_SECONDS)
        try:
            outcomes = self._run_all(conn, tables, ctx, started, dsn)
        finally:
            watchdog.disarm()
            conn.close()
        return self._result(outcomes, tables, skipped, ctx, watchdog.fired)

    def _tables(self, ctx: ActionContext) -> tuple[list[str], list[str]]:
        """The configured tables, else the trigger's (those that are not plain names are skipped and listed)."""
        if self.options.tables:
            return list(self.options.tables), []
        listed = (ctx.trigger.details.get("tables") if ctx.trigger else None) or []
        names = [item.get("name") if isinstance(item, dict) else item for item in listed]
        good = [n for n in names if isinstance(n, str) and _TABLE_RE.match(n)]
        return list(dict.fromkeys(good)), [str(n) for n in names if n not in good]

    def _connect(self, dsn: str, ctx: ActionContext):
        """An autocommit session with lock_timeout set; raise _Failed for a DSN libpq cannot parse."""
        import psycopg
        from psycopg.conninfo import conninfo_to_dict

        try:
            params = conninfo_to_dict(dsn)
        except psycopg.Error:
            raise _Failed("invalid DSN (libpq cannot parse it; not shown because it may hold a password)") from None
        ours = f"-c lock_timeout={int(self.options.lock_timeout * 1000)}"
        params["options"] = f"{params['options']} {ours}" if params.get("options") else ours
        params["connect_timeout"] = str(max(2, round(min(self.options.connect_timeout, ctx.timeout))))
        params.setdefault("application_name", "maint-agent")
        return psycopg.connect(**params, autocommit=True, prepare_threshold=None)

    def _run_all(self, conn, tables: list[str], ctx: ActionContext, started: float, dsn: str) -> dict[str, str]:
        """Run (or in a dry run, resolve) each table's statement; return table → outcome text ("ok: …")."""
        import psycopg
        from psycopg import sql

        template = sql.SQL(_STATEMENTS[self.options.operation])
        outcomes: dict[str, str] = {}
        for name in tables or [""]:
            left = ctx.remaining(started)
            if left <= 0:
                outcomes[name or "(database)"] = "not run: time limit reached"
                continue
            ident = sql.Identifier(*split_table(name)) if name else None
            statement = template.format(ident) if ident else sql.SQL("ANALYZE")
            text = statement.as_string(conn)
            key = name or "(database)"
            try:
                if ident and conn.execute("SELECT to_regclass(%s) IS NULL", [ident.as_string(conn)]).fetchone()[0]:
                    outcomes[key] = "failed: table not found"
                    continue
                if ctx.dry_run:
                    outcomes[key] = f"ok: would run {text}"
                    continue
                conn.execute("SELECT set_config('statement_timeout', %s, false)", [str(max(1, int(left * 1000)))])
                began = ctx.monotonic()
                conn.execute(statement)
                outcomes[key] = f"ok: {text} ({format_duration(ctx.monotonic() - began)})"
            except psycopg.errors.LockNotAvailable:
                outcomes[key] = f"failed: lock not granted within {format_duration(self.options.lock_timeout)}; " \
                                f"skipped"
            except psycopg.errors.QueryCanceled:
                outcomes[key] = "failed: cancelled at the end of the run's time limit"
            except psycopg.Error as exc:
                outcomes[key] = ctx.redact(f"failed: {describe_error(exc, dsn)}")
                if conn.broken:
                    break
        return outcomes

    def _result(self, outcomes: dict[str, str], tables: list[str], skipped: list[str], ctx: ActionContext,
                fired: bool) -> ActionResult:
        opts = self.options
        failed = {name: text for name, text in outcomes.items() if not text.startswith("ok")}
        details: dict[str, Any] = {"operation": opts.operation, "tables": outcomes}
        if skipped:
            details["skipped_names"] = skipped
        done = [name for name in outcomes if name not in failed]
        what = ", ".join(done) if tables else "the whole database"
        verb = f"would run {opts.operation} on" if ctx.dry_run else _DONE[opts.operation]
        summary = f"{verb} {what}" if done else f"{opts.operation} did nothing"
        if fired:
            summary = f"timed out after {format_duration(ctx.timeout)}: no answer from the server; " + summary
        if failed:
            summary += "; failed: " + "; ".join(f"{name}: {text.removeprefix('failed: ')}"
                                                for name, text in failed.items())
            if opts.operation == "reindex_concurrently" and not ctx.dry_run:
                summary += " (an invalid *_ccnew index may be left behind: check \\d and drop it by hand)"
        return ActionResult(not failed and not fired, cap(ctx.redact(summary), 1000), details=details)


class _Failed(Exception):
    """A failure before any statement, with an operator-readable reason free of the DSN."""
