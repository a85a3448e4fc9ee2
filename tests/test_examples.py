"""The shipped example profile validates and covers every check family the platform needs."""

from pathlib import Path

from agent.config import load_config

REPO = Path(__file__).resolve().parent.parent


def test_example_ai_camera_profile_validates_with_credentials(tmp_path, monkeypatch):
    (tmp_path / "pg.dsn").write_text("host=127.0.0.1 port=5432 dbname=app user=maint password=not-used\n")
    (tmp_path / "redis.password").write_text("not-used\n")
    for name in ("s3.key_id", "s3.secret", "restore.dsn"):
        (tmp_path / name).write_text("not-used\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    loaded = load_config(REPO / "examples" / "ai-camera.yaml")
    types = {c.type for c in loaded.checks}
    assert {"http", "tls_cert", "postgres", "pg_replication", "pg_connections", "redis", "redis_replication",
            "systemd_unit", "nagios", "cpu", "memory", "disk", "process", "backup_files", "s3_backup",
            "restore_test"} <= types
    dumped = loaded.config.model_dump_json()
    assert "not-used" not in dumped and "${credential:pg.dsn}" in dumped
