"""The S3 history archive against moto in server mode (a real S3 HTTP endpoint on 127.0.0.1).

The operator story: every host uploads yesterday's check runs, actions and maintenance log once a
day to s3://bucket/prefix/host=H/date=D/, where Athena or DuckDB query the fleet. Uploading a
day again overwrites the same keys; a day that failed (bucket unreachable) is recorded with the
reason and uploaded by a later run; credentials never appear in what is recorded.
"""

from __future__ import annotations

import gzip
import json
import sqlite3
import textwrap
import uuid
from datetime import date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from agent.store.archive import archive_pending
from agent.config.archive import ArchiveSection
from agent.plugin.result import Evaluated, Status, sample
from agent.store.writer import Store
from tests.conftest import free_port, run_cli

TZ = ZoneInfo("Europe/Berlin")
HOST = "db1.example.internal"
SECRET = "archive-secret-Zq9vX-never-log-me"


def local(day: str, clock: str = "00:00:00") -> float:
    return datetime.fromisoformat(f"{day}T{clock}").replace(tzinfo=TZ).timestamp()


NOW = local("2026-03-03", "10:00:00")


def start_moto(port: int):
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    return server


@pytest.fixture(scope="module")
def moto():
    server = start_moto(free_port())
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture(autouse=True)
def aws_env(monkeypatch, tmp_path):
    """Keys by reference (as an operator would), no ~/.aws, no metadata probing: nothing leaves loopback."""
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_CA_BUNDLE",
                 "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("ARCHIVE_KEY_ID", "AKIAMAINTAGENTARCHIVE1")
    monkeypatch.setenv("ARCHIVE_SECRET", SECRET)


def make_bucket(endpoint: str) -> str:
    import boto3

    name = f"history-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="k",
                 aws_secret_access_key="s").create_bucket(Bucket=name)
    return name


def section(endpoint: str, bucket: str, **extra) -> ArchiveSection:
    return ArchiveSection.model_validate({
        "bucket": bucket, "prefix": "fleet/history", "endpoint_url": endpoint, "region": "us-east-1",
        "access_key_id": "${env:ARCHIVE_KEY_ID}", "secret_access_key": "${env:ARCHIVE_SECRET}", **extra})


def objects(endpoint: str, bucket: str) -> dict[str, bytes]:
    import boto3

    api = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="k",
                       aws_secret_access_key="s")
    keys = [o["Key"] for o in api.list_objects_v2(Bucket=bucket).get("Contents", ())]
    return {key: api.get_object(Bucket=bucket, Key=key)["Body"].read() for key in keys}


def lines(blob: bytes) -> list[dict]:
    return [json.loads(line) for line in gzip.decompress(blob).decode().splitlines()]


def run(store: Store, check: str, kind: str, started: float, status: Status, summary: str, **metrics) -> None:
    samples = tuple(sample(name, value) for name, value in metrics.items())
    store.record_runs([Evaluated(check, kind, status, summary, samples, {}, started, 0.25, started)])


@pytest.fixture
def store(tmp_path) -> Path:
    """Two completed days (1 and 2 March) and a run today (3 March, not to be uploaded)."""
    path = tmp_path / "var" / "maint-agent.db"
    db = Store(path)
    run(db, "cpu", "cpu", local("2026-03-01", "08:00:00"), Status.OK, "cpu 42%", usage_ratio=0.42)
    run(db, "disk-root", "disk", local("2026-03-01", "23:59:59"), Status.CRITICAL, "/ 95% used")
    run(db, "cpu", "cpu", local("2026-03-02", "00:00:00"), Status.WARNING, "cpu 85%", usage_ratio=0.85)
    run(db, "cpu", "cpu", local("2026-03-03", "09:00:00"), Status.OK, "cpu 10%", usage_ratio=0.1)
    db.record_action({"started": local("2026-03-01", "09:00:00"), "duration": 1.5, "action": "restart-beauth",
                      "action_type": "command", "check_name": "beauth", "trigger": "critical",
                      "target": "systemctl restart beauth", "dry_run": 0, "exit_code": 0, "output": "",
                      "verified": 1, "outcome": "success", "details": json.dumps({"argv": ["systemctl"]})})
    db.add_log("replaced the disk of /data", at=local("2026-03-01", "12:00:00"), category="maintenance",
               author="alice", source="cli")
    db.close()
    return path


def archive_rows(path: Path) -> dict[str, tuple]:
    with sqlite3.connect(path) as conn:
        return {row[0]: row[1:] for row in conn.execute(
            "SELECT day, status, attempts, last_error, objects FROM archive_days ORDER BY day")}


def test_archive_uploads_each_completed_day_as_partitioned_gzip_jsonl(moto, store):
    bucket = make_bucket(moto)
    result = archive_pending(store, section(moto, bucket), HOST, TZ, NOW)
    assert [u["day"] for u in result["uploaded"]] == ["2026-03-01", "2026-03-02"]
    assert (result["failed"], result["remaining"]) == ([], 0)
    stored = objects(moto, bucket)
    base = f"fleet/history/host={HOST}/date="
    assert sorted(stored) == sorted(f"{base}{day}/{name}.jsonl.gz" for day in ("2026-03-01", "2026-03-02")
                                    for name in ("runs", "actions", "log"))
    runs = lines(stored[f"{base}2026-03-01/runs.jsonl.gz"])
    assert runs == [
        {"check": "cpu", "type": "cpu", "started": "2026-03-01T07:00:00.000Z", "duration_seconds": 0.25,
         "status": "ok", "summary": "cpu 42%", "metrics": {"usage_ratio": 0.42}},
        {"check": "disk-root", "type": "disk", "started": "2026-03-01T22:59:59.000Z", "duration_seconds": 0.25,
         "status": "critical", "summary": "/ 95% used", "metrics": {}}]
    assert [r["started"] for r in lines(stored[f"{base}2026-03-02/runs.jsonl.gz"])] == ["2026-03-01T23:00:00.000Z"]
    action, = lines(stored[f"{base}2026-03-01/actions.jsonl.gz"])
    assert (action["action"], action["outcome"], action["started"], action["details"]) == (
        "restart-beauth", "success", "2026-03-01T08:00:00.000Z", {"argv": ["systemctl"]})
    entry, = lines(stored[f"{base}2026-03-01/log.jsonl.gz"])
    assert (entry["message"], entry["author"], entry["at"]) == ("replaced the disk of /data", "alice",
                                                                "2026-03-01T11:00:00.000Z")
    assert lines(stored[f"{base}2026-03-02/log.jsonl.gz"]) == []
    rows = archive_rows(store)
    assert {day: row[:3] for day, row in rows.items()} == {"2026-03-01": ("uploaded", 1, None),
                                                            "2026-03-02": ("uploaded", 1, None)}
    assert json.loads(rows["2026-03-01"][3])["runs"]["lines"] == 2


def test_archive_rerun_is_a_no_op_and_a_day_uploaded_again_overwrites_the_same_keys(moto, store):
    bucket = make_bucket(moto)
    archive_pending(store, section(moto, bucket), HOST, TZ, NOW)
    before = objects(moto, bucket)
    again = archive_pending(store, section(moto, bucket), HOST, TZ, NOW + 60)
    assert again == {"uploaded": [], "failed": [], "remaining": 0}
    redo = archive_pending(store, section(moto, bucket), HOST, TZ, NOW + 120, day=date(2026, 3, 1))
    assert [u["day"] for u in redo["uploaded"]] == ["2026-03-01"]
    assert objects(moto, bucket) == before      # same keys, same bytes
    assert archive_rows(store)["2026-03-01"][:2] == ("uploaded", 2)


def test_archive_outage_records_the_failed_day_and_a_later_run_uploads_it(store):
    port = free_port()
    server = start_moto(port)
    endpoint = f"http://127.0.0.1:{port}"
    bucket = make_bucket(endpoint)
    server.stop()
    try:
        down = archive_pending(store, section(endpoint, bucket), HOST, TZ, NOW)
        assert down["uploaded"] == [] and down["remaining"] == 1    # stopped at the first failure
        failure, = down["failed"]
        assert failure["day"] == "2026-03-01"
        assert f"s3://{bucket}/fleet/history/host={HOST}/date=2026-03-01/" in failure["error"]
        assert "connect" in failure["error"].lower()
        status, attempts, error, _ = archive_rows(store)["2026-03-01"]
        assert (status, attempts, error) == ("failed", 1, failure["error"])
        assert SECRET not in error
        server = start_moto(port)                                    # the store is back
        up = archive_pending(store, section(endpoint, bucket), HOST, TZ, NOW + 86400)
        assert [u["day"] for u in up["uploaded"]] == ["2026-03-01", "2026-03-02", "2026-03-03"]
        assert archive_rows(store)["2026-03-01"][:3] == ("uploaded", 2, None)
        assert len(objects(endpoint, bucket)) == 9
    finally:
        server.stop()


def test_archive_unreadable_credentials_fail_the_day_without_contacting_s3(store, tmp_path):
    key_file = tmp_path / "key"
    key_file.write_text(SECRET)
    config = ArchiveSection.model_validate({"bucket": "history", "endpoint_url": "http://127.0.0.1:9",
                                            "access_key_id": "${env:ARCHIVE_KEY_ID}",
                                            "secret_access_key": f"${{file:{key_file}}}"})
    key_file.unlink()
    result = archive_pending(store, config, HOST, TZ, NOW)
    assert result["failed"] == [{"day": "2026-03-01", "error": "cannot read the S3 credentials: No such file or "
                                                               "directory"}]


def test_archive_first_run_reaches_back_at_most_max_days_and_later_runs_continue_from_there(moto, tmp_path):
    path = tmp_path / "maint-agent.db"
    db = Store(path)
    run(db, "cpu", "cpu", local("2026-01-20", "08:00:00"), Status.OK, "old")
    run(db, "cpu", "cpu", local("2026-03-02", "08:00:00"), Status.OK, "yesterday")
    db.close()
    bucket = make_bucket(moto)
    config = section(moto, bucket, max_days_per_run=3)
    first = archive_pending(path, config, HOST, TZ, NOW)
    assert [u["day"] for u in first["uploaded"]] == ["2026-02-28", "2026-03-01", "2026-03-02"]
    later = archive_pending(path, config, HOST, TZ, NOW + 5 * 86400)      # five more days, three per run
    assert [u["day"] for u in later["uploaded"]] == ["2026-03-03", "2026-03-04", "2026-03-05"]
    assert later["remaining"] == 2
    assert not any("date=2026-01-20" in key for key in objects(moto, bucket))


def test_archive_refuses_a_day_not_over_a_host_name_unfit_for_a_key_and_a_missing_store(store):
    config = ArchiveSection(bucket="history")
    with pytest.raises(ValueError, match="not over yet"):
        archive_pending(store, config, HOST, TZ, NOW, day=date(2026, 3, 3))
    with pytest.raises(ValueError, match="host name"):
        archive_pending(store, config, "db1/../x", TZ, NOW)
    with pytest.raises(ValueError, match="no store at"):
        archive_pending(store.parent / "elsewhere.db", config, HOST, TZ, NOW)
    assert not (store.parent / "elsewhere.db").exists()


def test_archive_config_rejects_half_credentials_and_bad_names():
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="both access_key_id and secret_access_key"):
        ArchiveSection.model_validate({"bucket": "history", "access_key_id": "${env:ARCHIVE_KEY_ID}"})
    with pytest.raises(ValidationError, match="not a valid S3 bucket name"):
        ArchiveSection(bucket="History_Bucket")
    with pytest.raises(ValidationError, match="invalid calendar spec"):
        ArchiveSection(bucket="history", at="25:00")
    assert ArchiveSection(bucket="history", prefix="a/b/").prefix == "a/b"


def test_archive_cli_run_uploads_and_status_lists_each_day(moto, tmp_path):
    bucket = make_bucket(moto)
    today = datetime.now(TZ).date()
    state = tmp_path / "var"
    db = Store(state / "maint-agent.db")
    for back in (2, 1):
        run(db, "cpu", "cpu", datetime.combine(today - timedelta(days=back), datetime.min.time(), TZ).timestamp()
            + 3600, Status.OK, "cpu fine")
    db.close()
    config = tmp_path / "agent.yaml"
    config.write_text(textwrap.dedent(f"""
        agent: {{state_dir: {state}, hostname: {HOST}, timezone: Europe/Berlin}}
        http: {{listen: "127.0.0.1:{free_port()}"}}
        archive:
          bucket: {bucket}
          endpoint_url: {moto}
          region: us-east-1
          access_key_id: "${{env:ARCHIVE_KEY_ID}}"
          secret_access_key: "${{env:ARCHIVE_SECRET}}"
        checks:
          - {{name: cpu, type: cpu, every: 15s}}
        """))
    days = [(today - timedelta(days=back)).isoformat() for back in (2, 1)]
    out = run_cli("archive", "run", config=config)
    assert out.returncode == 0, out.stderr
    assert [line.split(":")[0] for line in out.stdout.splitlines()] == days
    assert f"s3://{bucket}/maint-agent/host={HOST}/date={days[0]}/ (runs 1, actions 0, log 0)" in out.stdout
    status = run_cli("archive", "status", "--format", "json", config=config)
    assert status.returncode == 0, status.stderr
    assert [(row["day"], row["status"], row["attempts"]) for row in json.loads(status.stdout)] == [
        (days[0], "uploaded", 1), (days[1], "uploaded", 1)]
    early = run_cli("archive", "run", "--day", today.isoformat(), config=config)
    assert early.returncode == 2 and "not over yet" in early.stderr
    bad = run_cli("archive", "run", "--day", "yesterday", config=config)
    assert bad.returncode == 2 and "invalid day" in bad.stderr


def test_archive_cli_without_an_archive_section_is_a_usage_error(tmp_path):
    config = tmp_path / "agent.yaml"
    config.write_text(f"agent: {{state_dir: {tmp_path}}}\nchecks: []\n")
    out = run_cli("archive", "status", config=config)
    assert out.returncode == 2 and "no `archive:` section" in out.stderr
