#!/usr/bin/env python3
"""Store at scale: build a SQLite store of N synthetic check runs, then time the CLI read commands on it.

The schema comes from the agent itself (`agent.store.writer.Store(path)` creates and migrates it); the rows are
then bulk-inserted with plain sqlite3 (executemany, big transactions, journal_mode=OFF, synchronous=OFF —
a build shortcut, not the daemon's write path). 30 checks at one run per minute each, the newest run
of each check at "now" (build time), so `--since 30d` selects ~43 200 runs of one check. The rows look
like the daemon's (same summary and metrics JSON shapes, ~2 % non-OK). The store is cached under
bench/out/store-<runs>/ with an agent.yaml naming its 30 checks next to it; it is reused unless
--rebuild is given or the schema `Store` creates has changed since (a fingerprint is kept in build.json).

Printed: insert rate, file size and bytes per run, then the wall time (hyperfine when present, else
timed subprocess runs) of

    maint-agent history --config CFG --check disk-root --since 30d --format json > /dev/null   (≤ 200 ms)
    maint-agent status --config CFG                                                           (≤ 150 ms)

both including interpreter start, with the bare interpreter start and `history --limit 100` (start-up +
query, little output) alongside, the page cache warmed first, `history` in-process (no start-up):
the whole command vs fetching the same runs as rows, with its hottest functions (cProfile), and the
imports that dominate each command's start-up (python -X importtime).

    .venv/bin/python bench/store.py                       # 10 M runs (built once, then cached)
    .venv/bin/python bench/store.py --runs 200000         # quick look
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shlex
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (AGENT_BIN, MIB, OUT, REPO, VENV_PYTHON, log, loadavg, machine, table, which,  # noqa: E402
                     write_json)

TARGET_HISTORY_MS = 200.0
TARGET_HISTORY_FACTOR = 6.0   # `history` at most this many times `python -c pass`, measured in the same run
TARGET_STATUS_MS = 150.0
CHECKS_N = 30
INTERVAL_S = 60.0
CHUNK_ROWS = 500_000
HISTORY_CHECK = "disk-root"
MAX_RUNS = 100_000_000

# (name, type, summary/metrics maker). The shapes follow what checks/system.py writes.
def _cpu(v):
    return f"CPU {v * 100:.1f}% busy, iowait 0.0%", f'{{"usage_ratio":{v!r},"iowait_ratio":0.0}}'


def _memory(v):
    return (f"memory {v * 100:.1f}% used, {(1 - v) * 23.5:.1f} GiB available",
            f'{{"used_ratio":{v!r},"available_bytes":{(1 - v) * 25276063744.0!r},"total_bytes":25276063744.0}}')


def _swap(v):
    return "no swap configured", '{"used_ratio":0.0,"used_bytes":0.0,"total_bytes":0.0}'


def _disk(mount):
    def make(v):
        return (f"disk used: {mount} {v * 100:.1f}% (inodes 2.5%)",
                f'{{"used_ratio{{mount={mount}}}":{v!r},"free_bytes{{mount={mount}}}":{(1 - v) * 270553174016.0!r},'
                f'"size_bytes{{mount={mount}}}":270553174016.0,"inodes_used_ratio{{mount={mount}}}":0.0245}}')
    return make


def _load(v):
    return (f"load per core {v:.2f} {v * 0.8:.2f} {v * 0.5:.2f} (2 cores)",
            f'{{"per_core{{period=1m}}":{v!r},"per_core{{period=5m}}":{v * 0.8!r},'
            f'"per_core{{period=15m}}":{v * 0.5!r}}}')


def _latency(target):
    def make(v):
        return (f"connect {target} {v * 1000:.1f}ms",
                f'{{"reachable{{target={target}}}":1.0,"latency_seconds{{target={target}}}":{v / 100!r}}}')
    return make


def _process(v):
    return "1 processes match /maint-agent/", '{"instances":1.0}'


def _file(v):
    return (f"/var/lib/apt/lists modified {int(v * 3600)}s ago, 4.0KiB",
            f'{{"exists":1.0,"age_seconds":{v * 3600!r},"size_bytes":4096.0}}')


CHECK_KINDS = [
    ("cpu", "cpu", _cpu), ("memory", "memory", _memory), ("swap", "swap", _swap),
    ("disk-root", "disk", _disk("/")), ("disk-var", "disk", _disk("/var")), ("load", "load", _load),
    ("latency-metrics-self", "network_latency", _latency("127.0.0.1:9469")),
    ("agent-process", "process", _process), ("apt-lists-fresh", "file", _file),
]


def check_table() -> list[tuple[str, str, object]]:
    """30 checks: the repo's 9 interval checks, then more of the same kinds with other targets."""
    out = list(CHECK_KINDS)
    extra = [("disk-data", "disk", _disk("/data")), ("disk-backup", "disk", _disk("/backup")),
             ("disk-pgdata", "disk", _disk("/var/lib/postgresql")),
             ("latency-postgres", "network_latency", _latency("10.0.0.11:5432")),
             ("latency-standby", "network_latency", _latency("10.0.0.12:5432")),
             ("latency-redis", "network_latency", _latency("10.0.0.13:6379")),
             ("latency-becamera", "network_latency", _latency("10.0.0.21:8080")),
             ("latency-beauth", "network_latency", _latency("10.0.0.22:8080")),
             ("latency-s3", "network_latency", _latency("10.0.0.30:443")),
             ("proc-postgres", "process", _process), ("proc-redis", "process", _process),
             ("proc-becamera", "process", _process), ("proc-beauth", "process", _process),
             ("backup-fresh", "file", _file), ("wal-archive-fresh", "file", _file),
             ("cpu-steal", "cpu", _cpu), ("memory-available", "memory", _memory),
             ("load-15m", "load", _load), ("swap-in", "swap", _swap), ("disk-tmp", "disk", _disk("/tmp")),
             ("disk-log", "disk", _disk("/var/log"))]
    out += extra
    return out[:CHECKS_N]


def rows(check_ids: list[tuple[int, object]], minutes: int, total: int, end: float, first_minute: int,
         last_minute: int, seed: int):
    """Runs in time order, minute by minute, every check once a minute; the newest minute ends at `end`."""
    rnd = random.Random(seed + first_minute)
    rr = rnd.random
    n_checks = len(check_ids)
    emitted = first_minute * n_checks
    base = end - (minutes - 1) * INTERVAL_S
    for minute in range(first_minute, last_minute):
        due = base + minute * INTERVAL_S
        newest = minute == minutes - 1
        for k, (check_id, make) in enumerate(check_ids):
            if emitted >= total:
                return
            emitted += 1
            scheduled = due - (n_checks - 1 - k) * 0.5          # spread over the minute, newest ends at `end`
            started = scheduled + rr() * 0.01
            v = rr()
            roll = rr()
            status = 0 if newest or roll < 0.98 else (1 if roll < 0.993 else (2 if roll < 0.998 else 3))
            summary, metrics = make(v)
            yield (check_id, started, 0.0002 + rr() * 0.01, scheduled, status, 0, summary, metrics,
                   None if status == 0 else '{"reason":"synthetic"}')


def build(db_path: Path, runs: int, seed: int = 4, checks: list | None = None) -> dict:
    """Create the schema with the agent's Store, then bulk-insert `runs` rows of `checks` (default: the 30 of
    check_table()); returns build figures."""
    sys.path.insert(0, str(REPO))
    from agent.store.writer import Store

    tmp_path = db_path.with_suffix(".building")
    for p in (tmp_path, Path(f"{tmp_path}-wal"), Path(f"{tmp_path}-shm")):
        p.unlink(missing_ok=True)
    store = Store(tmp_path)
    store.close()

    conn = sqlite3.connect(tmp_path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=OFF")
    conn.execute("PRAGMA synchronous=OFF")
    conn.execute("PRAGMA cache_size=-262144")         # 256 MiB page cache for the build
    conn.execute("PRAGMA temp_store=MEMORY")
    checks = checks or check_table()
    conn.execute("BEGIN")
    ids = []
    for name, ctype, make in checks:
        ids.append((conn.execute("INSERT INTO checks(name, type) VALUES (?, ?)", (name, ctype)).lastrowid, make))
    conn.execute("COMMIT")

    minutes = -(-runs // len(ids))
    end = time.time()
    minutes_per_chunk = max(1, CHUNK_ROWS // len(ids))
    sql = ("INSERT INTO check_runs(check_id, started, duration, scheduled, status, pending, summary, metrics,"
           " details) VALUES (?,?,?,?,?,?,?,?,?)")
    t0 = time.perf_counter()
    done = 0
    for first in range(0, minutes, minutes_per_chunk):
        last = min(minutes, first + minutes_per_chunk)
        conn.execute("BEGIN")
        cur = conn.executemany(sql, rows(ids, minutes, runs, end, first, last, seed))
        done += cur.rowcount
        conn.execute("COMMIT")
        elapsed = time.perf_counter() - t0
        log(f"build: {done:,}/{runs:,} runs, {done / elapsed:,.0f} runs/s")
    insert_s = time.perf_counter() - t0
    # the scheduler state the daemon would have left behind
    conn.execute("BEGIN")
    for name, _, _ in checks:
        conn.execute("INSERT OR REPLACE INTO scheduler_state(check_name, last_run) VALUES (?, ?)", (name, end))
    conn.execute("COMMIT")
    conn.execute("PRAGMA journal_mode=WAL")           # as the daemon leaves it
    conn.close()
    # the daemon's own shutdown path (PRAGMA optimize) on the finished store
    Store(tmp_path).close()
    total_s = time.perf_counter() - t0
    tmp_path.rename(db_path)
    for suffix in ("-wal", "-shm"):
        Path(f"{tmp_path}{suffix}").unlink(missing_ok=True)
    return {"runs": done, "checks": len(ids), "minutes": minutes, "end": end, "insert_seconds": insert_s,
            "build_seconds": total_s, "insert_rate": done / insert_s, "built_at": time.time()}


OPTIONS_BY_TYPE = {"disk": lambda n: {"mounts": ["/"]},
                   "network_latency": lambda n: {"targets": ["127.0.0.1:9469"]},
                   "process": lambda n: {"cmdline": n.removeprefix("proc-")},
                   "file": lambda n: {"path": "/var/lib/apt/lists"}}


def schema_fingerprint() -> str:
    """A short hash of the schema `agent.store.writer.Store` creates today: the cache key besides the run count
    (a cached store built by an older schema is rebuilt, even when PRAGMA user_version did not move)."""
    import hashlib
    sys.path.insert(0, str(REPO))
    from agent.store.writer import SCHEMA_VERSION, Store
    with tempfile.TemporaryDirectory(prefix="maint-bench-schema-") as tmp:
        path = Path(tmp) / "schema.db"
        Store(path).close()
        conn = sqlite3.connect(path)
        sql = [row[0] for row in conn.execute("SELECT sql FROM sqlite_master WHERE sql IS NOT NULL ORDER BY name")]
        conn.close()
    return f"v{SCHEMA_VERSION}-" + hashlib.sha256("\n".join(sql).encode()).hexdigest()[:12]


def layout(db: Path) -> str:
    """How check_runs is stored: rowid table or clustered, and its secondary indexes."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    table_sql = conn.execute("SELECT sql FROM sqlite_master WHERE type='table' AND name='check_runs'").fetchone()[0]
    indexes = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='index' AND "
                                          "tbl_name='check_runs' AND sql IS NOT NULL ORDER BY name")]
    conn.close()
    kind = "WITHOUT ROWID (clustered by its primary key)" if "WITHOUT ROWID" in table_sql.upper() else "rowid table"
    return f"check_runs is a {kind}, secondary indexes: {', '.join(indexes) or 'none'}"


def write_config(directory: Path) -> Path:
    """A config naming the store's 30 checks (`status` lists configured checks), the store next to it."""
    import yaml
    checks = [{"name": name, "type": ctype, "every": "1m", **OPTIONS_BY_TYPE.get(ctype, lambda n: {})(name)}
              for name, ctype, _ in check_table()]
    data = {"version": 1, "agent": {"state_dir": "."}, "http": {"listen": "127.0.0.1:9469"}, "checks": checks}
    cfg = directory / "agent.yaml"
    cfg.write_text("# written by bench/store.py: the synthetic store's checks; the store is maint-agent.db here\n"
                   + yaml.safe_dump(data, sort_keys=False))
    return cfg


# -- timing ------------------------------------------------------------------------------------------------


def time_hyperfine(hyperfine: str, commands: list[tuple[str, str]], warmup: int, runs: int, work: Path,
                   ignore_failure: set[str], env: dict) -> dict[str, dict]:
    results = {}
    for name, command in commands:
        export = work / f"hyperfine-{len(results)}.json"
        argv = [hyperfine, "--warmup", str(warmup), "--runs", str(runs), "--export-json", str(export),
                "--style", "basic", "-n", name]
        if name in ignore_failure:
            argv.append("--ignore-failure")
        argv.append(command)
        log("$ " + shlex.join(argv))
        done = subprocess.run(argv, capture_output=True, text=True, timeout=600, env=env)
        sys.stderr.write(done.stdout)
        if done.returncode != 0:
            raise RuntimeError(f"hyperfine failed for {name}: {done.stderr}")
        r = json.loads(export.read_text())["results"][0]
        results[name] = {"tool": "hyperfine", "command": command, "mean_ms": r["mean"] * 1000,
                         "stddev_ms": (r.get("stddev") or 0) * 1000, "median_ms": r["median"] * 1000,
                         "min_ms": r["min"] * 1000, "max_ms": r["max"] * 1000, "runs": len(r["times"])}
    return results


def time_subprocess(commands: list[tuple[str, str]], warmup: int, runs: int, env: dict) -> dict[str, dict]:
    results = {}
    for name, command in commands:
        times = []
        for i in range(warmup + runs):
            t0 = time.perf_counter()
            subprocess.run(command, shell=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=120,
                           env=env)
            if i >= warmup:
                times.append(time.perf_counter() - t0)
        results[name] = {"tool": "subprocess (hyperfine not found; includes a /bin/sh start)", "command": command,
                         "mean_ms": statistics.mean(times) * 1000,
                         "stddev_ms": statistics.stdev(times) * 1000 if len(times) > 1 else 0.0,
                         "median_ms": statistics.median(times) * 1000, "min_ms": min(times) * 1000,
                         "max_ms": max(times) * 1000, "runs": len(times)}
    return results


def importtime(python: Path, cli_args: list[str], env: dict, top: int = 8, children: int = 3) -> dict:
    """Top-level imports of one CLI command by cumulative time (python -X importtime), best of 3 runs,
    each with its heaviest direct children."""
    code = "import sys; from agent.cli.main import main; sys.exit(main(sys.argv[1:]))"
    best = None
    for _ in range(3):
        t0 = time.perf_counter()
        done = subprocess.run([str(python), "-X", "importtime", "-c", code, *cli_args], cwd=REPO,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, timeout=120, env=env)
        wall = time.perf_counter() - t0
        # importtime prints children before their parent; depth = (leading spaces - 1) / 2
        pending: dict[int, list] = {}
        top_level = []
        for line in done.stderr.splitlines():
            if not line.startswith("import time:") or "self [us]" in line:
                continue
            _self_us, cum_us, raw = line[len("import time:"):].split("|")
            depth = (len(raw) - len(raw.lstrip(" ")) - 1) // 2
            entry = (raw.strip(), int(cum_us) / 1000, sorted(pending.pop(depth + 1, []), key=lambda x: -x[1]))
            pending.setdefault(depth, []).append(entry)
            if depth == 0:
                top_level.append(entry)
        total = sum(ms for _, ms, _ in top_level)
        if best is None or total < best["imports_ms"]:
            best = {"wall_ms": wall * 1000, "imports_ms": total,
                    "top": [(name, ms, [(c, cms) for c, cms, _ in kids[:children]])
                            for name, ms, kids in sorted(top_level, key=lambda x: -x[1])[:top]]}
    return best


def cli_env(mode: str) -> tuple[dict, str]:
    """The environment the CLI is timed in. "clean" = an operator's shell: stdout buffered (no
    PYTHONUNBUFFERED), bytecode cached (no PYTHONDONTWRITEBYTECODE; the .pyc files go to
    bench/out/pycache via PYTHONPYCACHEPREFIX, so nothing is written next to the sources)."""
    env = dict(os.environ)
    if mode == "inherit":
        return env, "inherited as is"
    dropped = [k for k in ("PYTHONUNBUFFERED", "PYTHONDONTWRITEBYTECODE") if env.pop(k, None) is not None]
    env["PYTHONPYCACHEPREFIX"] = str(OUT / "pycache")
    return env, ("clean: " + (f"unset {', '.join(dropped)}; " if dropped else "") +
                 "PYTHONPYCACHEPREFIX=bench/out/pycache")


def warm_page_cache(db: Path, chunk: int = 16 * MIB) -> float:
    """Read the store once so every timing sees a warm page cache (the steady state on a server)."""
    t0 = time.perf_counter()
    with open(db, "rb", buffering=0) as fh:
        while fh.read(chunk):
            pass
    return time.perf_counter() - t0


def history_anatomy(db: Path, cfg: Path, check: str, repeat: int = 3, top: int = 6) -> dict:
    """Where `history --since 30d --format json` spends its time, in-process (stdout a buffered /dev/null):
    the whole command (agent.cli.main.main, best of `repeat`), the store query of the same runs as rows
    (agent.store.history.runs, no limit, best of `repeat`), and the command's top functions under cProfile."""
    import contextlib
    import cProfile
    import pstats
    sys.path.insert(0, str(REPO))
    from agent.cli.main import main as cli_main
    from agent.store.history import runs as history_runs
    from agent.plugin.storefile import open_readonly

    argv = ["history", "--config", str(cfg), "--check", check, "--since", "30d", "--format", "json"]
    query, whole, rows = [], [], 0
    for _ in range(repeat):
        t0 = time.perf_counter()
        conn = open_readonly(db)
        rows = len(history_runs(conn, check=check, since=time.time() - 30 * 86400, limit=None))
        conn.close()
        query.append(time.perf_counter() - t0)
        with open(os.devnull, "w") as null, contextlib.redirect_stdout(null):
            t0 = time.perf_counter()
            cli_main(argv)
            whole.append(time.perf_counter() - t0)
    profile = cProfile.Profile()
    with open(os.devnull, "w") as null, contextlib.redirect_stdout(null):
        profile.runcall(cli_main, argv)
    stats = pstats.Stats(profile).stats
    total = sum(tt for (_, _, tt, _, _) in stats.values())
    hot = sorted(((f"{Path(file).name}:{line}({func})" if file != "~" else func, tt, nc)
                  for (file, line, func), (_, nc, tt, _, _) in stats.items()), key=lambda x: -x[1])[:top]
    return {"rows": rows, "query_rows_ms": min(query) * 1000, "command_in_process_ms": min(whole) * 1000,
            "profile_total_ms": total * 1000,
            "profile_top": [{"function": f, "self_ms": tt * 1000, "calls": nc} for f, tt, nc in hot]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=10_000_000, help="synthetic runs in the store (default 10 000 000)")
    ap.add_argument("--rebuild", action="store_true", help="rebuild the cached store")
    ap.add_argument("--check", default=HISTORY_CHECK, help=f"check for `history` (default {HISTORY_CHECK})")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--timing-runs", type=int, default=10)
    ap.add_argument("--agent-bin", type=Path, default=AGENT_BIN)
    ap.add_argument("--python", type=Path, default=VENV_PYTHON, help="the agent's interpreter")
    ap.add_argument("--hyperfine", default="hyperfine")
    ap.add_argument("--no-importtime", action="store_true")
    ap.add_argument("--env", choices=("clean", "inherit"), default="clean",
                    help="CLI environment: clean (default; buffered stdout, cached bytecode) or inherit")
    ap.add_argument("--json-out", help="also write the figures as JSON to this file")
    args = ap.parse_args(argv)
    if not CHECKS_N <= args.runs <= MAX_RUNS:
        ap.error(f"--runs must be in {CHECKS_N}..{MAX_RUNS}")
    if not 1 <= args.timing_runs <= 100 or not 0 <= args.warmup <= 20:
        ap.error("--timing-runs in 1..100, --warmup in 0..20")

    directory = OUT / f"store-{args.runs}"
    directory.mkdir(parents=True, exist_ok=True)
    db = directory / "maint-agent.db"
    meta_path = directory / "build.json"
    cfg = write_config(directory)
    schema = schema_fingerprint()
    stale = None
    if db.exists() and meta_path.exists() and not args.rebuild:
        old_schema = json.loads(meta_path.read_text()).get("schema")
        if old_schema != schema:
            stale = f"the agent's store schema changed since the cached build ({old_schema} → {schema})"
    if args.rebuild or stale or not db.exists() or not meta_path.exists():
        db.unlink(missing_ok=True)
        log((f"{stale}; rebuilding. " if stale else "") +
            f"building {db} with {args.runs:,} runs (cached afterwards; --rebuild to redo)")
        meta = build(db, args.runs)
        meta["schema"] = schema
        meta_path.write_text(json.dumps(meta, indent=2) + "\n")
        cached = False
    else:
        meta = json.loads(meta_path.read_text())
        cached = True
        log(f"reusing cached store {db} (built {time.ctime(meta['built_at'])}; --rebuild to redo)")
    table_layout = layout(db)
    age_days = (time.time() - meta["end"]) / 86400
    size = db.stat().st_size

    ro = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    since = time.time() - 30 * 86400
    selected = ro.execute("SELECT count(*) FROM check_runs WHERE check_id = (SELECT id FROM checks WHERE name = ?)"
                          " AND started >= ?", (args.check, since)).fetchone()[0]
    # the plan of the very query `history` runs (agent.store.history.runs), captured with its parameters bound
    sys.path.insert(0, str(REPO))
    from agent.store.history import runs as history_runs
    statements: list[str] = []
    ro.set_trace_callback(statements.append)
    history_runs(ro, check=args.check, since=since)
    ro.set_trace_callback(None)
    plan = [r[-1] for r in ro.execute("EXPLAIN QUERY PLAN " + statements[-1])]
    ro.close()

    agent = str(args.agent_bin)
    q = shlex.quote
    history = f"{q(agent)} history --config {q(str(cfg))} --check {q(args.check)} --since 30d --format json > /dev/null"
    history_100 = (f"{q(agent)} history --config {q(str(cfg))} --check {q(args.check)} --since 30d --limit 100 "
                   f"--format json > /dev/null")
    status = f"{q(agent)} status --config {q(str(cfg))}"
    floor = f"{q(str(args.python))} -c pass"
    commands = [("history", history), ("status", status), ("python -c pass", floor),
                ("history --limit 100", history_100)]
    env, env_text = cli_env(args.env)
    if args.env == "clean":
        commands.append(("history, PYTHONUNBUFFERED=1", f"PYTHONUNBUFFERED=1 {history}"))

    # each command once, checked, before timing it
    check = subprocess.run(f"{q(agent)} history --config {q(str(cfg))} --check {q(args.check)} --since 30d "
                           f"--format json", shell=True, capture_output=True, text=True, timeout=120, env=env)
    if check.returncode != 0:
        raise SystemExit(f"history failed: {check.stderr}")
    history_rows = len(json.loads(check.stdout))
    check = subprocess.run(status, shell=True, capture_output=True, text=True, timeout=120, env=env)
    if check.returncode not in (0, 1):
        raise SystemExit(f"status failed ({check.returncode}): {check.stderr}")
    status_rows = len(check.stdout.splitlines()) - 1
    if status_rows < len(check_table()):
        log(f"warning: `status` listed {status_rows} checks, expected {len(check_table())}:\n{check.stdout}")

    warm_s = warm_page_cache(db)
    anatomy = history_anatomy(db, cfg, args.check)

    load_start = loadavg()
    hyperfine = which(args.hyperfine)
    with tempfile.TemporaryDirectory(prefix="maint-bench-store-") as tmp:
        if hyperfine:
            timings = time_hyperfine(hyperfine, commands, args.warmup, args.timing_runs, Path(tmp),
                                     ignore_failure={"status"}, env=env)
        else:
            log(f"SKIP hyperfine: {args.hyperfine} not found; timing with subprocess runs instead")
            timings = time_subprocess(commands, args.warmup, args.timing_runs, env)

    imports = {}
    if not args.no_importtime:
        imports["history"] = importtime(args.python, ["history", "--config", str(cfg), "--check", args.check,
                                                      "--since", "30d", "--format", "json"], env)
        imports["status"] = importtime(args.python, ["status", "--config", str(cfg)], env)

    print(f"\n## Store — {meta['runs']:,} runs ({meta['checks']} checks × {meta['minutes']:,} minutes) — "
          f"{machine()}; "
          f"{load_start} before timing\n")
    print(f"build: {'cached (figures from the original build)' if cached else 'built now'}; "
          f"bulk insert {meta['insert_rate']:,.0f} runs/s ({meta['insert_seconds']:.1f} s; executemany, "
          f"{CHUNK_ROWS:,}-row transactions, journal off, synchronous off, in time order, indexes in place)")
    print(f"file: {size / MIB:,.1f} MiB = {size / meta['runs']:.0f} bytes per run (table and indexes); "
          f"{table_layout}; schema {schema}")
    print(f"`--since 30d` of {args.check}: {selected:,} runs in the store; `history … --format json` prints "
          f"{history_rows:,} of them; `status` prints {status_rows} checks")
    print(f"query plan (history): {'; '.join(plan)}")
    if age_days > 1:
        print(f"note: the cached store's newest run is {age_days:.1f} days old; --rebuild to end it at now")
    print(f"page cache warmed before timing (the whole file read once in {warm_s:.1f} s)")
    print(f"history in-process (best of 3, no interpreter start): the whole command "
          f"{anatomy['command_in_process_ms']:.0f} ms; for scale, fetching the same {anatomy['rows']:,} runs as "
          f"plain rows (agent.store.history.runs) {anatomy['query_rows_ms']:.0f} ms. Heaviest functions under cProfile "
          f"(self time, profiler overhead included, total {anatomy['profile_total_ms']:.0f} ms):")
    for hot in anatomy["profile_top"]:
        print(f"    {hot['self_ms']:8.1f} ms  {hot['calls']:>9,} calls  {hot['function']}")
    print()
    targets = {"history": TARGET_HISTORY_MS, "status": TARGET_STATUS_MS}
    rows_out = []
    for name, t in timings.items():
        target = targets.get(name)
        verdict = "-" if target is None else ("met" if t["mean_ms"] <= target else "MISSED")
        rows_out.append([name, f"{t['mean_ms']:.1f} ± {t['stddev_ms']:.1f}", f"{t['median_ms']:.1f}",
                         f"{t['min_ms']:.1f}", f"{t['max_ms']:.1f}", "-" if target is None else f"≤ {target:g}",
                         verdict])
    print(table(rows_out, ["command", "mean ms", "median ms", "min ms", "max ms", "target ms", "verdict"]))
    factor = timings["history"]["mean_ms"] / timings["python -c pass"]["mean_ms"]
    print(f"\nhistory / `python -c pass` (means, same run): {factor:.1f}× (target ≤ {TARGET_HISTORY_FACTOR:g}× → "
          f"{'met' if factor <= TARGET_HISTORY_FACTOR else 'MISSED'})\n")
    tool = next(iter(timings.values()))["tool"]
    print(f"(timed with {tool}, --warmup {args.warmup} --runs {args.timing_runs}; environment {env_text}; "
          f"commands:)")
    for name, t in timings.items():
        print(f"  {name}: {t['command']}")
    for name, info in imports.items():
        print(f"\nimports of `{name}` (python -X importtime, best of 3): {info['imports_ms']:.1f} ms of imports in a "
              f"{info['wall_ms']:.0f} ms run; top level by cumulative time:")
        lines = []
        for mod, ms, kids in info["top"]:
            lines.append([mod, f"{ms:.1f}"])
            lines += [[f"  └ {kid}", f"{kms:.1f}"] for kid, kms in kids if kms >= 0.5]
        print(table(lines, ["module (heaviest children)", "cumulative ms"]))

    write_json(args.json_out, {
        "benchmark": "store", "machine": machine(), "load_start": load_start, "load_end": loadavg(),
        "build": meta, "cached": cached, "file_bytes": size,
        "bytes_per_run": size / meta["runs"], "layout": table_layout, "schema": schema,
        "selected_30d": selected, "history_rows": history_rows,
        "query_plan": plan, "timings": timings, "imports": imports, "history_anatomy": anatomy,
        "page_cache_warm_seconds": warm_s, "cli_env": env_text,
        "targets": {"history_ms": TARGET_HISTORY_MS, "status_ms": TARGET_STATUS_MS,
                    "history_factor": TARGET_HISTORY_FACTOR},
        "history_factor": factor,
        "met": {"history": timings["history"]["mean_ms"] <= TARGET_HISTORY_MS,
                "history_factor": factor <= TARGET_HISTORY_FACTOR,
                "status": timings["status"]["mean_ms"] <= TARGET_STATUS_MS},
        "store": str(db), "config": str(cfg),
    })
    return 0


if __name__ == "__main__":
    sys.exit(main())
