#!/usr/bin/env python3
"""Scratch-cluster restore test: its duration and the agent's memory while it runs, for a database of a given size.

Starts a PostgreSQL primary (archive_mode=on, archive_command into a local WAL archive), fills one
database to `--size` (default 64MiB; `--size 1GiB` for the DR figure), takes a real
`pg_basebackup -Ft -z` and a real `pg_dumpall | gzip`, writes more rows and archives their WAL. Then
starts `maint-agent run` with `restore_cluster` checks for the base backup (with the WAL archive) and the
pg_dumpall file, due at the next whole minute, so the agent sits idle first: its RSS is sampled every
0.1 s while idle and while each restore runs (in the agent's child processes). The agent's peak must
stay within its idle RSS + 10 MiB. Prints each restore's duration (the measured RTO), phases, the RPO it
measured, and the scratch cluster's own figures (WAL segments restored, redo CPU and elapsed time,
database sizes, rows counted).

    python bench/restore.py                  # 64 MiB, both kinds
    python bench/restore.py --size 1GiB      # the issue's figure
    python bench/restore.py --kind base_backup --json-out bench/out/restore.json

As root the servers run as the `postgres` user (`run_as`), as PostgreSQL refuses root. Every process
started here is ended here, by its pid; everything listens on a private Unix socket or 127.0.0.1.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import pwd
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import MIB, REPO, Proc, _spawn, free_port, log, loadavg, machine, table, wait_http, \
    write_json  # noqa: E402

sys.path.insert(0, str(REPO))
from agent.plugin.result import Status  # noqa: E402
from agent.plugin.units import format_duration, format_size, parse_size  # noqa: E402

BINDIR = Path("/usr/lib/postgresql/15/bin")
RSS_BUDGET_MIB = 10.0
ROW_PAYLOAD = 200                     # bytes of text per row: about 250 bytes per row on disk with the rest
AFTER_ROWS = 1000                     # written after the base backup: only the WAL archive has them


def as_postgres(argv: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *argv] if os.geteuid() == 0 else argv


def sh(argv: list[str], server: bool = False, **kw) -> subprocess.CompletedProcess:
    """A client program as ourselves; a server program (initdb, pg_ctl) as `postgres` when we are root."""
    return subprocess.run(as_postgres(argv) if server else argv, check=True, capture_output=True, **kw)


class Source:
    """The primary the backups are taken from: a private socket directory, archive into `archive`."""

    def __init__(self, root: Path):
        self.root, self.data, self.socket, self.archive = root, root / "source", root / "sock", root / "wal"
        for path in (root, self.socket, self.archive):
            path.mkdir(mode=0o700, exist_ok=True)
            if os.geteuid() == 0:
                entry = pwd.getpwnam("postgres")
                os.chown(path, entry.pw_uid, entry.pw_gid)

    def start(self) -> None:
        sh([str(BINDIR / "initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust", "--no-sync", "-E", "UTF8",
            "--locale=C"], server=True)
        with open(self.data / "postgresql.conf", "a") as conf:
            conf.write(f"listen_addresses = ''\nunix_socket_directories = '{self.socket}'\nfsync = off\n"
                       f"archive_mode = on\narchive_command = 'cp %p {self.archive}/%f'\nmax_wal_size = '4GB'\n"
                       f"shared_buffers = '128MB'\n")
        sh([str(BINDIR / "pg_ctl"), "-D", str(self.data), "-l", str(self.root / "source.log"), "-w", "start"],
           server=True)

    def stop(self) -> None:
        if (self.data / "postmaster.pid").exists():
            sh([str(BINDIR / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop"], server=True)

    def psql(self, sql: str, db: str = "postgres") -> str:
        return sh([str(BINDIR / "psql"), "-h", str(self.socket), "-U", "postgres", "-d", db, "-Atqc", sql],
                  text=True).stdout.strip()


def fill(source: Source, size: int) -> dict:
    """One database `aicamera`: cameras, and events of about `size` bytes."""
    source.psql("CREATE DATABASE aicamera")
    rows = max(1000, size // 250)
    source.psql("CREATE TABLE cameras (id int PRIMARY KEY, name text NOT NULL)", "aicamera")
    source.psql("INSERT INTO cameras SELECT g, 'cam-' || g FROM generate_series(1, 100) g", "aicamera")
    source.psql("CREATE TABLE events (id bigint PRIMARY KEY, camera int NOT NULL, created_at timestamptz NOT NULL, "
                "payload text NOT NULL)", "aicamera")
    step = 500_000
    for first in range(1, rows + 1, step):
        last = min(rows, first + step - 1)
        source.psql(f"INSERT INTO events SELECT g, g % 100 + 1, now() - (({rows} - g) || ' s')::interval, "
                    f"md5(g::text) || repeat('x', {ROW_PAYLOAD - 32}) FROM generate_series({first}, {last}) g",
                    "aicamera")
    source.psql("CHECKPOINT")
    return {"rows": rows + 100, "database_bytes": int(source.psql("SELECT pg_database_size('aicamera')"))}


def backups(source: Source, target: Path) -> dict:
    started = time.monotonic()
    sh([str(BINDIR / "pg_basebackup"), "-h", str(source.socket), "-U", "postgres", "-D", str(target), "-Ft", "-z",
        "-c", "fast", "--no-sync"])
    base_seconds = time.monotonic() - started
    started = time.monotonic()
    dump = subprocess.Popen([str(BINDIR / "pg_dumpall"), "-h", str(source.socket), "-U", "postgres"],
                            stdout=subprocess.PIPE)
    with gzip.open(target / "full_backup.sql.gz", "wb", compresslevel=6) as out:
        shutil.copyfileobj(dump.stdout, out, 1024 * 1024)
    if dump.wait() != 0:
        raise SystemExit("pg_dumpall failed")
    dump_seconds = time.monotonic() - started
    source.psql(f"INSERT INTO events SELECT g, 1, now(), 'late' FROM generate_series(10000000001, "
                f"{10000000000 + AFTER_ROWS}) g", "aicamera")
    segment = source.psql("SELECT pg_walfile_name(pg_switch_wal())")
    deadline = time.monotonic() + 60
    while not (source.archive / segment).exists():
        if time.monotonic() > deadline:
            raise SystemExit(f"{segment} was not archived within 60 s")
        time.sleep(0.2)
    return {"base_seconds": base_seconds, "dump_seconds": dump_seconds,
            "files": {p.name: p.stat().st_size for p in sorted(target.iterdir())}}


def rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as fh:
        return next(int(line.split()[1]) * 1024 for line in fh if line.startswith("VmRSS:"))


def tree_rss(pid: int) -> int:
    """RSS of a process and all its descendants (the worker, the scratch server and its backends)."""
    children: dict[int, list[int]] = {}
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{entry}/stat") as fh:
                ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(entry))
        except (OSError, ValueError, IndexError):
            continue
    total, todo = 0, [pid]
    while todo:
        current = todo.pop()
        try:
            total += rss(current)
        except (OSError, StopIteration):
            continue
        todo += children.get(current, [])
    return total


def agent_config(work: Path, port: int, fire: str, kinds: list[str], set_dir: Path, source: Source,
                 scratch: Path) -> Path:
    run_as = "    run_as: postgres\n" if os.geteuid() == 0 else ""
    checks = ""
    for kind in kinds:
        path = set_dir / ("base.tar.gz" if kind == "base_backup" else "full_backup.sql.gz")
        archive = f"    wal_archive: {source.archive}\n" if kind == "base_backup" else ""
        checks += (f"  - name: restore-{kind.replace('_', '-')}\n    type: restore_cluster\n    schedule: \"{fire}\"\n"
                   f"    timeout: 6h\n    path: {path}\n    scratch_dir: {scratch}\n{archive}{run_as}"
                   f"    settle: 0s\n"
                   f"    sanity:\n      - {{database: aicamera, name: events, query: \"SELECT count(*) FROM events\", "
                   f"min: 1}}\n")
    path = work / "agent.yaml"
    path.write_text(f"agent:\n  state_dir: {work / 'var'}\n  timezone: UTC\n  check_timeout: 30s\n"
                    f"http:\n  listen: 127.0.0.1:{port}\nchecks:\n{checks}")
    return path


def latest_runs(db: Path) -> dict[str, dict]:
    if not db.exists():
        return {}
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        rows = conn.execute("SELECT c.name, r.status, r.summary, r.details, r.duration FROM check_runs r "
                            "JOIN checks c ON c.id = r.check_id ORDER BY r.started").fetchall()
    except sqlite3.Error:
        return {}
    finally:
        conn.close()
    return {name: {"status": Status(status).label, "summary": summary, "details": json.loads(details or "{}"),
                   "duration": duration} for name, status, summary, details, duration in rows}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", default="64MiB", help="size of the events table to restore (default 64MiB)")
    ap.add_argument("--kind", choices=["both", "base_backup", "pg_dumpall"], default="both")
    ap.add_argument("--idle-seconds", type=float, default=30.0, help="idle window before the restores (≥ 20 s)")
    ap.add_argument("--interval", type=float, default=0.1, help="RSS sampling interval (default 0.1 s)")
    ap.add_argument("--json-out", help="also write the figures as JSON to this file")
    args = ap.parse_args(argv)
    size = parse_size(args.size)
    kinds = ["base_backup", "pg_dumpall"] if args.kind == "both" else [args.kind]
    if not (BINDIR / "postgres").exists():
        raise SystemExit(f"PostgreSQL 15 server programs missing in {BINDIR} (postgresql-15)")

    root = Path(tempfile.mkdtemp(prefix="maint-bench-restore-", dir="/tmp"))
    os.chmod(root, 0o755)
    source = Source(root / "pg")
    agent: Proc | None = None
    try:
        log(f"source server in {source.root}; filling aicamera.events with {format_size(size)}")
        source.start()
        started = time.monotonic()
        data = fill(source, size)
        log(f"filled: {data['rows']:,} rows, database {format_size(data['database_bytes'])} in "
            f"{format_duration(time.monotonic() - started)}")
        set_dir = root / "backups" / "20261203_020000"
        set_dir.parent.mkdir()
        taken = backups(source, set_dir)
        log("backups: " + ", ".join(f"{name} {format_size(n)}" for name, n in taken["files"].items()))
        scratch = root / "scratch"
        scratch.mkdir(mode=0o755)

        now = datetime.now(timezone.utc)
        fire_at = (now + timedelta(seconds=args.idle_seconds + 60)).replace(second=0, microsecond=0)
        port = free_port()
        (root / "agent").mkdir()
        config = agent_config(root / "agent", port, fire_at.strftime("%H:%M"), kinds, set_dir, source, scratch)
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        agent = _spawn("maint-agent", [sys.executable, "-m", "agent.cli", "run", "--config", str(config)],
                       root / "agent" / "agent.log", port, cwd=REPO, env=env)
        wait_http(agent, "/healthz", 60)
        log(f"agent pid {agent.pid}; restores due at {fire_at:%H:%M:%S} UTC; sampling idle RSS until then")
        idle, peak, tree_peak = [], 0, 0
        db = root / "agent" / "var" / "maint-agent.db"
        while time.time() < fire_at.timestamp() - 1:
            idle.append(rss(agent.pid))
            time.sleep(args.interval)
        idle_rss = max(idle[len(idle) // 2:])          # the settled second half of the window
        log(f"idle RSS {idle_rss / MIB:.1f} MiB; restoring")
        deadline = time.monotonic() + 6 * 3600
        while len(latest_runs(db)) < len(kinds):
            if not agent.alive():
                raise SystemExit(f"agent exited:\n{agent.tail()}")
            if time.monotonic() > deadline:
                raise SystemExit("restores did not finish within 6 h")
            peak = max(peak, rss(agent.pid))
            tree_peak = max(tree_peak, tree_rss(agent.pid))
            time.sleep(args.interval)
        runs = latest_runs(db)
    except BaseException:
        shutil.rmtree(root, ignore_errors=True)
        raise
    finally:
        if agent is not None:
            agent.stop()
        source.stop()
    load = loadavg()

    print(f"\n## Scratch-cluster restore test — {format_size(size)} of events ({machine()}; {load})\n")
    print(f"source database {format_size(data['database_bytes'])}, {data['rows']:,} rows; "
          + ", ".join(f"{name} {format_size(n)}" for name, n in taken["files"].items())
          + f"; pg_basebackup {format_duration(taken['base_seconds'])}, pg_dumpall | gzip "
            f"{format_duration(taken['dump_seconds'])}\n")
    rows = []
    for kind in kinds:
        run = runs[f"restore-{kind.replace('_', '-')}"]
        d = run["details"]
        phases = ", ".join(f"{k} {format_duration(v)}" for k, v in d.get("phases", {}).items())
        recovery = d.get("recovery", {})
        rows.append([kind, run["status"], format_duration(d.get("restore_seconds", 0)),
                     format_duration(d["rpo_seconds"]) if d.get("rpo_seconds") is not None else "-",
                     format_duration(run["duration"]), format_size(d.get("expanded_bytes", 0)),
                     format_size(sum(x.get("size_bytes", 0) for x in d.get("databases", []))),
                     f"{sum(x.get('rows', 0) for x in d.get('databases', [])):,}",
                     str(recovery.get("wal_segments_from_archive", "-")), phases])
    print(table(rows, ["backup", "status", "RTO (restore)", "RPO", "whole test", "expanded", "restored DBs",
                       "rows counted", "WAL from archive", "phases"]))
    for kind in kinds:
        d = runs[f"restore-{kind.replace('_', '-')}"]["details"]
        if d.get("recovery", {}).get("redo"):
            print(f"\n{kind}: the scratch server's redo: {d['recovery']['redo']}")
        print(f"{kind}: {runs['restore-' + kind.replace('_', '-')]['summary']}")
    grew = (peak - idle_rss) / MIB
    ok = grew <= RSS_BUDGET_MIB
    print(f"\nagent RSS: idle {idle_rss / MIB:.1f} MiB, peak during the restores {peak / MIB:.1f} MiB "
          f"(+{grew:.1f} MiB; budget +{RSS_BUDGET_MIB:g} MiB → {'met' if ok else 'MISSED'}); "
          f"peak of the agent's process tree (worker, scratch server) {tree_peak / MIB:.1f} MiB")
    write_json(args.json_out, {"benchmark": "restore", "size_bytes": size, "machine": machine(), "load": load,
                               "source": data, "backups": taken, "idle_rss": idle_rss, "peak_rss": peak,
                               "tree_peak_rss": tree_peak, "met": ok,
                               "runs": {name: {k: v for k, v in run.items()} for name, run in runs.items()}})
    shutil.rmtree(root, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
