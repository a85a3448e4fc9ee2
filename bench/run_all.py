#!/usr/bin/env python3
"""Run every benchmark (idle, scrape, store) with its defaults, one after the other, and print a combined
Markdown summary (a table for the README's "Measured figures") with the exact commands.

    .venv/bin/python bench/run_all.py                 # ~10 min with a cached store, longer on first build
    .venv/bin/python bench/run_all.py --idle-seconds 30 --runs 1000000   # a quicker pass

Each script's own output streams through; the figures also land in bench/out/run_all-<time>.json.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import BENCH, OUT, REPO, VENV_PYTHON, machine  # noqa: E402


def run(script: str, extra: list[str], json_out: Path) -> tuple[dict | None, str]:
    argv = [sys.executable, str(BENCH / script), *extra]
    shown = shlex.join([".venv/bin/python", f"bench/{script}", *extra])
    print(f"\n$ {shown}", flush=True)
    done = subprocess.run(argv + ["--json-out", str(json_out)], cwd=REPO, timeout=3 * 3600)
    if done.returncode != 0 or not json_out.exists():
        print(f"[run_all] {script} failed with exit code {done.returncode}", file=sys.stderr)
        return None, shown
    return json.loads(json_out.read_text()), shown


def mark(ok: bool | None) -> str:
    return "—" if ok is None else ("✅ met" if ok else "❌ missed")


def summary(idle: dict | None, scrape: dict | None, store: dict | None, commands: list[str]) -> str:
    try:
        commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True, timeout=10).stdout.strip()
    except OSError:
        commit = ""
    try:
        dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.split("\n")
        dirty = [line[3:] for line in dirty if line.strip()]
    except OSError:
        dirty = []
    if commit and dirty:
        commit += f" + uncommitted changes in {', '.join(dirty)}"
    loads = "; ".join(f"{name} {d['load_start']}" for name, d in (("idle", idle), ("scrape", scrape), ("store", store))
                      if d and d.get("load_start"))
    out = [f"Measured on {machine()}, {time.strftime('%Y-%m-%d')}" + (f", commit {commit}" if commit else "")
           + ". Reproduce with `make bench` (= `.venv/bin/python bench/run_all.py`).",
           f"Load at the start of each part: {loads}." if loads else "", "",
           "| Figure | maint-agent | Anchor | agent / anchor | Target | |",
           "|---|---|---|---|---|---|"]
    row = lambda *cells: out.append("| " + " | ".join(cells) + " |")  # noqa: E731

    if idle:
        procs = {p["name"]: p for p in idle["processes"]}
        a = procs["maint-agent"]
        anchors = [procs[n] for n in ("node_exporter", "monit") if n in procs]
        res = 1 / 100 / idle["window_seconds"] * 100          # one 10 ms tick over the window, in %

        def cpu(v):
            return f"< {res:.3f} %" if v == 0 else f"{v:.3f} %"

        def cpu_ratio(v):
            if v == 0:
                return f"> {a['cpu_pct_one_core'] / res:.1f}×" if a["cpu_pct_one_core"] else "n/a"
            return f"{a['cpu_pct_one_core'] / v:.1f}×"

        w = f"{idle['window_seconds']:g} s"
        checks = f" ({idle['agent_checks']} checks of agent.yaml)" if idle.get("agent_checks") else ""
        kind = ", restart on an existing store" if idle.get("existing_store") else ", first start (fresh store)"
        row(f"Idle RSS, max over {w}{checks}{kind}", f"{a['rss_max_mib']:.1f} MiB",
            " · ".join(f"{p['name']} {p['rss_max_mib']:.1f} MiB" for p in anchors) or "skipped",
            " · ".join(f"{a['rss_max_mib'] / p['rss_max_mib']:.1f}×" for p in anchors) or "—",
            f"≤ {idle['targets']['rss_mib']:g} MiB", mark(idle["met"]["rss"]))
        row(f"Idle CPU, % of one core over {w}", cpu(a["cpu_pct_one_core"]),
            " · ".join(f"{p['name']} {cpu(p['cpu_pct_one_core'])}" for p in anchors) or "skipped",
            " · ".join(cpu_ratio(p["cpu_pct_one_core"]) for p in anchors) or "—",
            f"≤ {idle['targets']['cpu_pct']:g} %", mark(idle["met"]["cpu"]))
    else:
        row("Idle footprint", "failed", "", "", "", "")

    if scrape:
        a = scrape["results"]["maint-agent"]
        n = scrape["results"].get("node_exporter")
        s, c = a["sequential"], a["concurrent"]
        client = c.get("client", "")
        row(f"/metrics sequential, {s['requests']} keep-alive requests: p50 / p99",
            f"{s['p50_ms']:.2f} / {s['p99_ms']:.2f} ms",
            f"node_exporter {n['sequential']['p50_ms']:.2f} / {n['sequential']['p99_ms']:.2f} ms" if n else "skipped",
            f"{s['p99_ms'] / n['sequential']['p99_ms']:.1f}× (p99)" if n else "—",
            f"p99 ≤ {scrape['targets']['seq_p99_ms']:g} ms", mark(scrape["met"]["seq_p99"]))
        row(f"/metrics, 20 connections ({client}): req/s", f"{c['rps']:,.0f}",
            f"node_exporter {n['concurrent']['rps']:,.0f}" if n else "skipped",
            f"{scrape['ratios']['concurrent_rps']:.1f}×" if n else "—",
            f"≥ {scrape['targets']['rps_factor']:g}×", mark(scrape["met"]["rps"] if n else None))
        row("/metrics, 20 connections: p50 / p99", f"{c['p50_ms']:.2f} / {c['p99_ms']:.2f} ms",
            f"node_exporter {n['concurrent']['p50_ms']:.2f} / {n['concurrent']['p99_ms']:.2f} ms" if n else "skipped",
            "—", f"p99 ≤ {scrape['targets']['conc_p99_ms']:g} ms", mark(scrape["met"]["conc_p99"]))
    else:
        row("/metrics scrape", "failed", "", "", "", "")

    if store:
        b, t = store["build"], store["timings"]
        row(f"Store: bulk build of {b['runs']:,} runs", f"{b['insert_rate']:,.0f} runs/s", "—", "—", "—", "")
        row("Store: file size", f"{store['file_bytes'] / 2**20:,.0f} MiB = {store['bytes_per_run']:.0f} B/run",
            "—", "—", "—", "")
        floor = t.get("python -c pass")
        fl = f"`python -c pass` {floor['mean_ms']:.1f} ms" if floor else "—"
        row(f"`history --check X --since 30d --format json` ({store['history_rows']:,} runs out; incl. "
            "interpreter start)",
            f"{t['history']['mean_ms']:.1f} ± {t['history']['stddev_ms']:.1f} ms", fl, "—",
            f"≤ {store['targets']['history_ms']:g} ms", mark(store["met"]["history"]))
        if "history_factor" in store:
            row("↳ `history` / `python -c pass` (same run)", f"{store['history_factor']:.1f}×", "—", "—",
                f"≤ {store['targets']['history_factor']:g}×", mark(store["met"]["history_factor"]))
        row("`status` (incl. interpreter start)", f"{t['status']['mean_ms']:.1f} ± {t['status']['stddev_ms']:.1f} ms",
            fl, "—", f"≤ {store['targets']['status_ms']:g} ms", mark(store["met"]["status"]))
        an = store.get("history_anatomy")
        if an:
            hot = an["profile_top"][0]
            row("↳ `history` in-process, without interpreter start (heaviest function under cProfile)",
                f"{an['command_in_process_ms']:.0f} ms (`{hot['function']}` {hot['self_ms']:.0f} ms)",
                "—", "—", "—", "")
        if "history, PYTHONUNBUFFERED=1" in t:
            row("↳ same `history` with PYTHONUNBUFFERED=1 (as the systemd unit sets for the daemon)",
                f"{t['history, PYTHONUNBUFFERED=1']['mean_ms']:.0f} ± "
                f"{t['history, PYTHONUNBUFFERED=1']['stddev_ms']:.0f} ms", "—", "—", "—", "")
        if "history --limit 100" in t:
            row("`history … --limit 100 --format json` (start-up + query, 100 rows out)",
                f"{t['history --limit 100']['mean_ms']:.1f} ± {t['history --limit 100']['stddev_ms']:.1f} ms",
                "—", "—", "—", "")
    else:
        row("Store", "failed", "", "", "", "")

    out += ["", "Commands:", "", "```sh"] + commands + ["```"]
    if store:
        out += ["", f"Timed CLI commands (hyperfine `--warmup 2 --runs 10`, page cache warm, environment "
                    f"{store.get('cli_env', 'inherited')}; store and config under bench/out/):", "",
                "```sh"] + [t["command"].replace(str(REPO) + "/", "") for t in store["timings"].values()] + ["```"]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--idle-seconds", type=float, help="idle window (default: idle.py's, 120 s)")
    ap.add_argument("--runs", type=int, help="store size (default: store.py's, 10 000 000)")
    ap.add_argument("--rebuild", action="store_true", help="rebuild the cached store")
    args = ap.parse_args(argv)
    if Path(sys.executable).resolve() != VENV_PYTHON.resolve():
        print(f"[run_all] note: running under {sys.executable}, not {VENV_PYTHON}", file=sys.stderr)

    OUT.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    idle_args = ["--seconds", f"{args.idle_seconds:g}"] if args.idle_seconds else []
    store_args = (["--runs", str(args.runs)] if args.runs else []) + (["--rebuild"] if args.rebuild else [])
    idle, c1 = run("idle.py", idle_args, OUT / f"idle-{stamp}.json")
    scrape, c2 = run("scrape.py", [], OUT / f"scrape-{stamp}.json")
    store, c3 = run("store.py", store_args, OUT / f"store-{stamp}.json")
    text = summary(idle, scrape, store, [c1, c2, c3])
    (OUT / f"run_all-{stamp}.json").write_text(json.dumps({"idle": idle, "scrape": scrape, "store": store},
                                                          indent=2, default=str) + "\n")
    (OUT / f"run_all-{stamp}.md").write_text(text + "\n")
    print("\n" + "=" * 100 + "\n")
    print(text)
    print(f"\n(also in {OUT / f'run_all-{stamp}.md'})")
    return 0 if idle and scrape and store else 1


if __name__ == "__main__":
    sys.exit(main())
