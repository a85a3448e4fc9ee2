"""The shipped example profile validates and covers every check family the platform needs."""

from pathlib import Path

from agent.config.load import load_config

REPO = Path(__file__).resolve().parent.parent


def test_example_ai_camera_profile_validates_with_credentials(tmp_path, monkeypatch):
    (tmp_path / "pg.dsn").write_text("host=127.0.0.1 port=5432 dbname=app user=maint password=not-used\n")
    (tmp_path / "redis.password").write_text("not-used\n")
    for name in ("s3.key_id", "s3.secret", "restore.dsn", "pagerduty.key", "smtp.password"):
        (tmp_path / name).write_text("not-used\n")
    (tmp_path / "slack.webhook").write_text("https://hooks.slack.com/services/not-used\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    loaded = load_config(REPO / "examples" / "ai-camera.yaml")
    types = {c.type for c in loaded.checks}
    assert {"http", "tls_cert", "postgres", "pg_replication", "pg_connections", "redis", "redis_replication",
            "systemd_unit", "nagios", "cpu", "memory", "disk", "process", "backup_files", "backup_set", "s3_backup",
            "wal_archive", "restore_test", "restore_cluster", "heartbeat"} <= types
    # the nightly set (dumps + base backup) is judged as one backup, its S3 copy member by member
    by_name = {c.name: c for c in loaded.checks}
    assert by_name["db-dumps-s3"].set and by_name["db-dumps-s3"].local_path == by_name["db-nightly-set"].path
    assert by_name["wal-archive"].critical == 3600.0, "RPO ≤ 1 h"
    # the nightly cron job reports itself: late after 02:00 without a success, down 2 h later, paged
    assert (by_name["nightly-backup-job"].schedule, by_name["nightly-backup-job"].grace) == ("02:00", 7200.0)
    # the quarterly DR test restores the base backup with the WAL archive in a scratch cluster, against RTO/RPO
    cluster = by_name["dr-cluster-restore"]
    assert (cluster.type, cluster.schedule, cluster.rto, cluster.rpo) == ("restore_cluster", "quarterly", 4 * 3600.0,
                                                                           3600.0)
    assert cluster.wal_archive == by_name["wal-archive"].path and cluster.path.endswith("/base.tar.gz")
    # seed 004's automated responses are wired: restarts, clean-up at disk > 90 %, Redis eviction, worker pool,
    # weekly ANALYZE, with PagerDuty/Slack escalation
    assert {a.type for a in loaded.config.actions} == {"systemd_restart", "cleanup_files", "redis_evict",
                                                       "pg_maintenance", "notify"}
    bound = {b.action for c in loaded.checks for b in c.actions}
    assert {"restart-beauth", "restart-becamera", "restart-workers", "clean-old-files", "evict-idle-cache",
            "analyze-tables"} <= bound
    # the Sunday ANALYZE window holds the checks it disturbs, never the check whose action runs the ANALYZE
    [window] = loaded.config.maintenance
    assert (window.at, window.duration) == ("sun 02:00", 5400.0)
    analyzed = {c.name for c in loaded.checks if any(b.action == "analyze-tables" for b in c.actions)}
    assert analyzed and not analyzed & set(window.checks)
    # the Redis role's file in conf.d adds its checks and its eviction action
    assert "conf.d/redis.yaml" in loaded.origins[("checks", "redis")]
    assert "conf.d/redis.yaml" in loaded.origins[("actions", "evict-idle-cache")]
    dumped = loaded.config.model_dump_json()
    assert "not-used" not in dumped and "${credential:pg.dsn}" in dumped


def test_example_profile_passes_config_check_offline_without_any_credential():
    """A config repository's CI has no secrets: --offline checks everything else."""
    import os
    import subprocess
    from tests.conftest import AGENT
    env = {k: v for k, v in os.environ.items() if k != "CREDENTIALS_DIRECTORY"}
    offline = subprocess.run([*AGENT, "config", "check", "--offline", "examples/ai-camera.yaml"], cwd=REPO,
                             capture_output=True, text=True, timeout=60, env=env)
    assert offline.returncode == 0, offline.stderr
    assert "OK: 31 checks" in offline.stdout and "secrets not read (--offline)" in offline.stdout
    online = subprocess.run([*AGENT, "config", "check", "examples/ai-camera.yaml"], cwd=REPO, capture_output=True,
                            text=True, timeout=60, env=env)
    assert online.returncode == 2 and "CREDENTIALS_DIRECTORY is not set" in online.stderr


def test_config_check_offline_still_reports_every_other_error(tmp_path):
    import subprocess
    from tests.conftest import AGENT
    bad = tmp_path / "bad.yaml"
    bad.write_text("smtp: {host: mail, sender: a@example.com, password: '${credentail:smtp}'}\n"
                   "checks:\n  - {name: cpu, type: cpu, warning: 95%, critical: 90%}\n"
                   "  - {name: db, type: postgres, dsn: '${credential:pg.dsn}'}\n")
    out = subprocess.run([*AGENT, "config", "check", "--no-secrets", str(bad)], cwd=REPO, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 2
    assert "smtp.password: invalid secret reference" in out.stderr
    assert "checks[0].warning: must be below critical" in out.stderr and "pg.dsn" not in out.stderr
