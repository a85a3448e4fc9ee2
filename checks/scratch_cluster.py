"""A private, throw-away PostgreSQL server for a restore test, run by the restore worker.

The server listens on a Unix socket only (`listen_addresses = ''`), in a 0700
directory beside its data directory, and trusts local connections: nobody but
its own user (and root) can reach the socket. Whatever configuration a base
backup carries is replaced, not merged: `postgresql.auto.conf` can name
libraries to preload, `archive_command`, `restore_command` or
`primary_conninfo` (programs run and connections out from the copy of
production), and `standby.signal` would make the copy follow the primary. So
the restored server archives nothing, starts no logical-replication workers
(a restored subscription would connect to its publisher), preloads nothing,
never runs JIT, and writes minimal WAL without fsync: it lives for one test.

It runs as the worker's own user, or as `ServerUser` when the agent is root
(PostgreSQL refuses root). Its children — initdb, the postmaster, the
`restore_command` it runs — stay in the worker's process group on purpose, so
whatever ends that group (the check's deadline, the agent's shutdown) ends the
scratch server too; nothing here calls `setsid`.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from agent.plugin.child_env import child_env

PORT = 5432                         # only the socket file's name: .s.PGSQL.5432 in the private directory
LOG_TAIL_BYTES = 16 * 1024
STOP_FAST_SECONDS = 30.0            # fast shutdown (SIGINT), then immediate (SIGQUIT), then SIGKILL
_RETRY_SECONDS = 0.1
_NOT_YET = ("starting up", "not yet accepting connections", "not accepting connections", "no such file or directory",
            "connection refused", "shutting down", "in recovery mode", "hot standby mode is disabled")
SETTINGS = {
    "listen_addresses": "",
    "port": PORT,
    "unix_socket_permissions": "0700",
    "max_connections": 10,
    "superuser_reserved_connections": 2,
    "shared_buffers": "32MB",
    "max_wal_size": "1GB",
    "wal_level": "minimal",
    "max_wal_senders": 0,
    "archive_mode": "off",
    "archive_command": "",
    "hot_standby": "off",
    "max_logical_replication_workers": 0,
    "max_sync_workers_per_subscription": 0,
    "shared_preload_libraries": "",
    "session_preload_libraries": "",
    "local_preload_libraries": "",
    "jit": "off",
    "huge_pages": "off",
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "autovacuum": "off",
    "ssl": "off",
    "logging_collector": "off",
    "log_destination": "stderr",
    "log_line_prefix": "%m [%p] ",
    "cluster_name": "maint-restore",
}


class ServerFailed(Exception):
    """The scratch server exited or refused; `reason` is the server's own words (its last FATAL/PANIC line)."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class RoleMissing(Exception):
    """The role the test connects as does not exist in the restored cluster."""


class Deadline(Exception):
    """The test's deadline passed while waiting on the server."""


@dataclass(frozen=True)
class ServerUser:
    """The unprivileged user the server runs as when the agent is root."""

    uid: int
    gid: int


def conf_value(value: object) -> str:
    """A postgresql.conf value: numbers bare, everything else single-quoted with quotes doubled."""
    if isinstance(value, int):
        return str(value)
    return "'" + str(value).replace("'", "''") + "'"


def restore_command(archive: str | None) -> str:
    """`cp ARCHIVE/%f %p` from a plain archive directory, or `false` (WAL only from pg_wal/).

    The archive path is checked when the config loads (no quote, `%` or control character), so it can be
    single-quoted for the shell as it is.
    """
    if archive is None:
        return "false"
    return f"cp '{archive.rstrip('/')}/%f' '%p'"


class ScratchServer:
    """One scratch server: `data` and `socket` under the run directory, its log in `server.log` there."""

    def __init__(self, run_dir: Path, bin_dir: Path, user: ServerUser | None):
        self.run_dir = run_dir
        self.data = run_dir / "data"
        self.socket = run_dir / "socket"
        self.log = run_dir / "server.log"
        self.bin_dir = bin_dir
        self.user = user
        self.proc: subprocess.Popen | None = None

    # --- preparing the data directory ---------------------------------------------------------------------

    def initdb(self, superuser: str, deadline: float) -> None:
        """A new cluster with `superuser` as its bootstrap role; raise ServerFailed or Deadline."""
        argv = [str(self.bin_dir / "initdb"), "-D", str(self.data), "-U", superuser, "-E", "UTF8", "--locale=C",
                "--auth=trust", "--no-sync", "--no-instructions"]
        with open(self.log, "ab") as log:
            proc = self._popen(argv, log)
            try:
                code = proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                raise Deadline() from None
        if code != 0:
            raise ServerFailed(f"initdb exited {code}: {self.log_reason()}")

    def configure(self, *, replace: bool, recovery: str | None) -> None:
        """Write the scratch settings and `local all all trust`; with `replace` (a base backup) drop every
        configuration file the backup brought; with `recovery` (a restore_command) add recovery.signal."""
        self.socket.mkdir(mode=0o700, exist_ok=True)
        settings = {**SETTINGS, "unix_socket_directories": str(self.socket)}
        if recovery is not None:
            settings["restore_command"] = recovery
        if replace:
            for name in ("postgresql.auto.conf", "standby.signal", "recovery.signal", "postmaster.pid",
                         "postmaster.opts", "pg_ident.conf"):
                (self.data / name).unlink(missing_ok=True)
        text = "".join(f"{name} = {conf_value(value)}\n" for name, value in settings.items())
        conf = self.data / "postgresql.conf"
        header = "\n# maint-agent restore test: the settings below win\n"
        conf.write_text(header + text if replace else conf.read_text() + header + text)
        (self.data / "pg_hba.conf").write_text("local all all trust\n")
        (self.data / "pg_ident.conf").write_text("")
        if recovery is not None:
            (self.data / "recovery.signal").write_text("")

    def hand_over(self) -> None:
        """Give the run directory's contents to the server's user (files extracted or written by root)."""
        if self.user is None:
            return
        for root, dirs, files in os.walk(self.run_dir):
            for name in dirs + files:
                os.lchown(os.path.join(root, name), self.user.uid, self.user.gid)

    # --- running ------------------------------------------------------------------------------------------

    def start(self) -> None:
        log = open(self.log, "ab")
        try:
            self.proc = self._popen([str(self.bin_dir / "postgres"), "-D", str(self.data)], log)
        finally:
            log.close()

    def wait_ready(self, connect, deadline: float, progress=None) -> object:
        """Poll until `connect()` returns a session (recovery is done: hot_standby is off); return it.

        Raise ServerFailed when the server exits, RoleMissing, Deadline, or the error `connect` raised when it
        is not one of "not there yet".
        """
        import psycopg

        while True:
            if self.proc.poll() is not None:
                raise ServerFailed(self.log_reason())
            try:
                return connect()
            except psycopg.OperationalError as exc:
                text = str(exc).lower()
                if "role" in text and "does not exist" in text:
                    raise RoleMissing(str(exc).strip().splitlines()[-1]) from None
                if not any(marker in text for marker in _NOT_YET):
                    raise
            if time.monotonic() >= deadline:
                raise Deadline()
            if progress is not None:
                progress()
            time.sleep(_RETRY_SECONDS)

    def stop(self, deadline: float) -> str:
        """Fast shutdown, then immediate, then SIGKILL; return how it ended."""
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return "not running"
        for sig, wait in ((signal.SIGINT, STOP_FAST_SECONDS), (signal.SIGQUIT, 5.0), (signal.SIGKILL, 5.0)):
            try:
                proc.send_signal(sig)
            except ProcessLookupError:
                break
            try:
                proc.wait(max(0.5, min(wait, deadline - time.monotonic())))
                return {signal.SIGINT: "stopped", signal.SIGQUIT: "stopped (immediate)"}.get(sig, "killed")
            except subprocess.TimeoutExpired:
                continue
        return "killed"

    def interrupt(self) -> None:
        """From a signal handler: immediate shutdown, nothing waited for."""
        if self.proc is not None and self.proc.poll() is None:
            try:
                self.proc.send_signal(signal.SIGQUIT)
            except ProcessLookupError:
                pass

    def log_reason(self) -> str:
        """The server log's last FATAL or PANIC line, else its last line."""
        lines = [line.strip() for line in self.log_tail().splitlines() if line.strip()]
        for line in reversed(lines):
            found = re.search(r"\b(FATAL|PANIC):\s*(.*)", line)
            if found:
                return f"{found.group(1)}: {found.group(2)}"
        return lines[-1] if lines else "no message in the server log"

    def log_tail(self) -> str:
        try:
            with open(self.log, "rb") as fh:
                fh.seek(max(0, fh.seek(0, os.SEEK_END) - LOG_TAIL_BYTES))
                return fh.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def _popen(self, argv: list[str], log) -> subprocess.Popen:
        """A child in the worker's process group (see the module docstring), as the server's user."""
        switch = {"user": self.user.uid, "group": self.user.gid, "extra_groups": []} if self.user else {}
        return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                env=child_env(), cwd=self.run_dir, **switch)
