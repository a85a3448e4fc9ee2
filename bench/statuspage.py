#!/usr/bin/env python3
"""Status page latency: GET / of a running agent with 100 checks on a 10 M-run store (target p95 ≤ 50 ms).

The store is built once by bench/store.py's bulk loader (same row shapes; here 100 checks at one run a
minute each, the newest at build time) and cached under bench/out/statuspage-<checks>x<runs>/; it is
rebuilt when the agent's schema changed, with --rebuild, or when its newest run is older than
--max-age-hours (the overview shows the last 24 hours: an old store would leave it empty and fast).
The agent then runs on it (its 100 checks every minute, as on a host: they add runs while we measure),
and the overview is fetched over HTTP from 127.0.0.1, one request at a time, each on a new connection:

  - the first request after start (imports the page code and Jinja2, compiles the templates and reads
    the last 24 h of every check into the page's buckets),
  - then --requests more: p50 / p95 / max.

In-process, the same overview is split into gathering (SQL, buckets) and rendering (Jinja2).

    .venv/bin/python bench/statuspage.py                        # 10 M runs (built once, then cached)
    .venv/bin/python bench/statuspage.py --runs 1000000         # quicker
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (AGENT_BIN, HOST, MIB, OUT, REPO, _spawn, fmt, free_port, http_get, log, loadavg,  # noqa: E402
                     machine, percentile, wait_http, write_json)
from store import CHECK_KINDS, OPTIONS_BY_TYPE, build, schema_fingerprint, warm_page_cache  # noqa: E402

TARGET_P95_MS = 50.0


def check_table(count: int) -> list[tuple[str, str, object]]:
    """`count` checks cycling through the store bench's kinds: cpu, memory, disk-root, … then cpu-2, …"""
    out = []
    for index in range(count):
        name, kind, make = CHECK_KINDS[index % len(CHECK_KINDS)]
        rounds = index // len(CHECK_KINDS)
        out.append((f"{name}-{rounds + 1}" if rounds else name, kind, make))
    return out


def write_config(directory: Path, checks: list, port: int) -> Path:
    """The agent's config for the cached store: its checks every minute, the store beside the file."""
    import yaml
    entries = [{"name": name, "type": kind, "every": "1m", **OPTIONS_BY_TYPE.get(kind, lambda n: {})(name)}
               for name, kind, _ in checks]
    for entry in entries:   # probes that would otherwise wait for unreachable addresses: the agent's own port
        if entry["type"] == "network_latency":
            entry["targets"] = [f"{HOST}:{port}"]
    data = {"version": 1, "agent": {"state_dir": "."}, "http": {"listen": f"{HOST}:{port}"}, "checks": entries}
    cfg = directory / "agent.yaml"
    cfg.write_text("# written by bench/statuspage.py\n" + yaml.safe_dump(data, sort_keys=False))
    return cfg


def cached_store(directory: Path, runs: int, checks: list, rebuild: bool, max_age_hours: float) -> tuple[dict, bool]:
    db = directory / "maint-agent.db"
    meta_path = directory / "build.json"
    schema = schema_fingerprint()
    reason = "--rebuild" if rebuild else None
    if not reason and (not db.exists() or not meta_path.exists()):
        reason = "no cached store"
    if not reason:
        meta = json.loads(meta_path.read_text())
        if meta.get("schema") != schema:
            reason = f"the store schema changed ({meta.get('schema')} → {schema})"
        elif time.time() - meta["end"] > max_age_hours * 3600:
            reason = f"its newest run is {(time.time() - meta['end']) / 3600:.1f} h old (> {max_age_hours:g} h)"
    if not reason:
        return meta, True
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    log(f"building {db}: {runs:,} runs of {len(checks)} checks ({reason}); cached afterwards")
    meta = build(db, runs, checks=checks)
    meta["schema"] = schema
    meta_path.write_text(json.dumps(meta, indent=2) + "\n")
    return meta, False


def time_requests(port: int, count: int) -> list[float]:
    times = []
    for _ in range(count):
        t0 = time.perf_counter()
        status, body = http_get(port, "/?refresh=0", timeout=30)
        times.append((time.perf_counter() - t0) * 1000)
        if status != 200:
            raise RuntimeError(f"GET / answered {status}: {body[:300]!r}")
    return times


def in_process(cfg: Path, repeat: int) -> dict:
    """Gathering vs rendering of the overview, in this process (no HTTP), after one warm-up."""
    sys.path.insert(0, str(REPO))
    import agent.http.statuspage as page
    from agent.config.load import load_config
    from agent.http.metrics import AgentState
    from agent.http.statuspage import pages
    from agent.http.statuspage.render import render

    loaded = load_config(cfg)
    state = AgentState("bench", 4)
    page.respond("/", "", loaded, state)
    gather, draw = [], []
    for _ in range(repeat):
        now = time.time()
        t0 = time.perf_counter()
        with page._locks["overview"]:
            context = pages.overview(page._connection(loaded, "overview"), loaded, state, page._recent, now)
            context["agent"] = pages.agent_header(loaded, state, now)
        t1 = time.perf_counter()
        html = render("overview.html.j2", **context, tz=loaded.tz, now=now, refresh=None, path="/", nav=page.NAV,
                      href=page._linker(True), refresh_href="/")
        t2 = time.perf_counter()
        gather.append((t1 - t0) * 1000)
        draw.append((t2 - t1) * 1000)
    return {"gather_ms_median": statistics.median(gather), "render_ms_median": statistics.median(draw),
            "html_bytes": len(html.encode())}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=10_000_000, help="runs in the store (default 10 000 000)")
    ap.add_argument("--checks", type=int, default=100, help="configured checks (default 100)")
    ap.add_argument("--requests", type=int, default=300, help="timed requests after the first (default 300)")
    ap.add_argument("--rebuild", action="store_true", help="rebuild the cached store")
    ap.add_argument("--max-age-hours", type=float, default=12.0,
                    help="rebuild a cached store whose newest run is older than this (default 12)")
    ap.add_argument("--agent-bin", type=Path, default=AGENT_BIN)
    ap.add_argument("--json-out", help="also write the figures as JSON to this file")
    args = ap.parse_args(argv)
    if not 1 <= args.checks <= 1000 or not args.checks <= args.runs <= 100_000_000 or not 1 <= args.requests <= 10000:
        ap.error("--checks 1..1000, --runs from --checks to 100 000 000, --requests 1..10000")

    checks = check_table(args.checks)
    directory = OUT / f"statuspage-{args.checks}x{args.runs}"
    directory.mkdir(parents=True, exist_ok=True)
    meta, cached = cached_store(directory, args.runs, checks, args.rebuild, args.max_age_hours)
    db = directory / "maint-agent.db"
    warm_s = warm_page_cache(db)
    port = free_port()
    cfg = write_config(directory, checks, port)

    load_start = loadavg()
    with tempfile.TemporaryDirectory(prefix="maint-bench-statuspage-") as tmp:
        proc = _spawn("maint-agent", [str(args.agent_bin), "run", "--config", str(cfg)], Path(tmp) / "agent.log",
                      port, cwd=directory)
        try:
            wait_http(proc, "/healthz", 60)
            t0 = time.perf_counter()
            status, body = http_get(port, "/?refresh=0", timeout=60)
            first_ms = (time.perf_counter() - t0) * 1000
            rows = body.count(b'<tr class="row-')
            if status != 200 or rows != args.checks:
                raise RuntimeError(f"GET / answered {status} with {rows} check rows, not {args.checks}")
            times = time_requests(port, args.requests)
            rss_mib = _rss_mib(proc.pid)
        finally:
            proc.stop()
    split = in_process(cfg, 20)
    ordered = sorted(times)
    p50, p95 = percentile(ordered, 50), percentile(ordered, 95)

    print(f"\n## Status page — GET / with {args.checks} checks, {meta['runs']:,} runs in the store — {machine()}; "
          f"{load_start} at start\n")
    print(f"store: {'cached' if cached else 'built now'}: {db.stat().st_size / MIB:,.0f} MiB, built in "
          f"{meta['build_seconds']:.0f} s ({meta['insert_rate']:,.0f} runs/s); {meta['checks']} checks × "
          f"{meta['minutes']:,} minutes, newest run {(time.time() - meta['end']) / 3600:.1f} h ago; page cache warmed "
          f"({warm_s:.1f} s)")
    print(f"first request after start (imports, templates, 24 h of every check read): {first_ms:.0f} ms")
    print(f"next {len(times)} requests, one at a time, new connection each: p50 {p50:.1f} ms, "
          f"p95 {p95:.1f} ms, max {max(times):.1f} ms "
          f"(target p95 ≤ {TARGET_P95_MS:g} ms: {'met' if p95 <= TARGET_P95_MS else 'MISSED'})")
    print(f"in-process median: gathering {split['gather_ms_median']:.1f} ms (SQL and buckets), rendering "
          f"{split['render_ms_median']:.1f} ms (Jinja2); page {split['html_bytes'] / 1024:.0f} KiB")
    print(f"agent RSS after the requests: {fmt(rss_mib, '.1f')} MiB")
    write_json(args.json_out, {
        "benchmark": "statuspage", "machine": machine(), "load_start": load_start, "load_end": loadavg(),
        "checks": args.checks, "build": meta, "cached": cached, "first_ms": first_ms, "p50_ms": p50, "p95_ms": p95,
        "max_ms": max(times), "requests": len(times), "target_p95_ms": TARGET_P95_MS,
        "met": p95 <= TARGET_P95_MS, "in_process": split, "rss_mib": rss_mib})
    return 0


def _rss_mib(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


if __name__ == "__main__":
    sys.exit(main())
