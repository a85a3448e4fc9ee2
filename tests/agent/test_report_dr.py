"""The report's disaster-recovery section: each restore test's last run, measured RTO and RPO against the seed's
targets (RTO ≤ 4 h, RPO ≤ 1 h) or the check's own."""

from __future__ import annotations

import csv
import io
import json
from datetime import datetime, timezone

from agent.config.load import load_config
from agent.reports.build import build_report, render_csv, render_html, render_json, render_text
from agent.plugin.result import Evaluated, Status, sample
from agent.store.writer import Store

START = datetime(2026, 4, 1, tzinfo=timezone.utc).timestamp()      # the second quarter
END = datetime(2026, 7, 1, tzinfo=timezone.utc).timestamp()
DAY = 86400.0

CONFIG = """
agent: {{hostname: db-1, timezone: UTC, state_dir: var}}
checks:
  - {{name: dump-restore, type: restore_test, dsn: "host=127.0.0.1 dbname=postgres", path: "{tmp}/*.dump"}}
  - {{name: base-restore, type: restore_cluster, path: "{tmp}/*/base.tar.gz", scratch_dir: /srv/scratch,
      wal_archive: /backups/wal}}
  - {{name: dumpall-restore, type: restore_cluster, path: "{tmp}/*/full.sql.gz", scratch_dir: /srv/scratch,
      rto: 30m, rpo: 26h}}
"""


def run(check, kind, started, status, samples):
    return Evaluated(check, kind, status, f"{check} {status.label}", tuple(samples), {}, started, 60.0, started)


def test_report_dr_section_shows_measured_rto_and_rpo_against_the_targets(tmp_path, write_config):
    loaded = load_config(write_config(CONFIG.format(tmp=tmp_path)))
    store = Store(loaded.db_path)
    recovered = START + 10 * DAY - 2 * 3600
    store.record_runs([
        run("dump-restore", "restore_test", START + 5 * DAY, Status.OK,
            [sample("restore_duration_seconds", 5400), sample("restore_passed", 1)]),
        run("base-restore", "restore_cluster", START + 2 * DAY, Status.CRITICAL,      # an older run: not shown
            [sample("restore_duration_seconds", 20000), sample("restore_passed", 0)]),
        run("base-restore", "restore_cluster", START + 10 * DAY, Status.CRITICAL,
            [sample("restore_duration_seconds", 1800), sample("restore_passed", 1),
             sample("restore_rpo_seconds", 2 * 3600), sample("restore_recovered_timestamp_seconds", recovered)]),
        run("dumpall-restore", "restore_cluster", START + 11 * DAY, Status.OK,
            [sample("restore_duration_seconds", 3600), sample("restore_passed", 1),
             sample("restore_rpo_seconds", 20 * 3600),
             sample("restore_recovered_timestamp_seconds", START + 11 * DAY - 20 * 3600)]),
    ])
    report = build_report(store.conn, loaded, "quarter", START, END, END + 60)
    by_name = {t.check: t for t in report.restore_tests}
    base = by_name["base-restore"]
    assert (base.type, base.started, base.restore_seconds, base.rto_target, base.within_rto) == \
        ("restore_cluster", START + 10 * DAY, 1800, 4 * 3600, True)
    assert (base.rpo_seconds, base.rpo_target, base.within_rpo, base.recovered_at) == (7200, 3600, False, recovered)
    dumpall = by_name["dumpall-restore"]
    assert (dumpall.within_rto, dumpall.within_rpo, dumpall.rto_target, dumpall.rpo_target) == \
        (False, True, 1800, 26 * 3600)
    single = by_name["dump-restore"]
    assert (single.within_rto, single.rpo_seconds, single.within_rpo) == (True, None, None)

    text = render_text(report)
    section = text.split("DISASTER RECOVERY", 1)[1].split("\n\n", 1)[0]
    assert section.startswith(" (targets: RTO ≤ 4h, RPO ≤ 1h): the last restore test of each check")
    row = next(line for line in section.splitlines() if line.strip().startswith("base-restore"))
    assert row.split()[1:] == ["restore_cluster", "2026-04-11", "00:00", "critical", "30m", "4h", "met",
                               "2026-04-10", "22:00", "2h", "1h", "NOT", "MET"]
    assert "1h30m" in next(line for line in section.splitlines() if "dump-restore" in line)
    html = render_html(report)
    assert "Disaster recovery" in html and "RPO ≤ 1h" in html and html.count("not met") >= 2
    data = json.loads(render_json(report))
    assert {t["check"]: t["within_rpo"] for t in data["restore_tests"]} == \
        {"base-restore": False, "dump-restore": None, "dumpall-restore": True}
    rows = list(csv.reader(io.StringIO(render_csv(report))))
    assert ["restore_tests", "1", "base-restore", "rpo_seconds", "7200"] in rows
