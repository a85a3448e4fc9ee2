"""s3_backup against moto in server mode: a real S3 HTTP endpoint on 127.0.0.1, driven by boto3.

The operator story (seed 002): the nightly dumps are copied to S3. The agent says when the
newest copy is too old, when the newest local dump never made it to the bucket or arrived
truncated or altered, and it compares content by the checksums S3 keeps — rebuilding a
multipart object's checksum-of-checksums from the local file, and never mistaking a
multipart ETag for an MD5. A store that is down or silent ends the run within its timeout,
and the credentials never show up in what the agent reports.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import json
import os
import re
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from pydantic import ValidationError

from agent.evaluate import WindowState, evaluate
from agent.plugin.result import CheckResult, Status
from checks.base import CheckContext
from checks.s3 import S3BackupCheck, local_root_of, plan_checksum, remote_key
from tests.conftest import REPO, free_port, wait_for
from tests.fixtures.s3 import PART, Bucket, aws_env, moto  # noqa: F401 (fixtures; aws_env is autouse)
from tests.metrics_contract import assert_family_contract

DAY = 86400.0
MiB = 1024 * 1024
KEY_ID = "AKIAMAINTAGENTTEST0001"
SECRET = "s3-secret-Zq9vX-never-log-me"


# --- buckets -----------------------------------------------------------------------------------

@pytest.fixture
def bucket(moto) -> Bucket:
    return Bucket(moto)


@pytest.fixture
def backups(tmp_path) -> Path:
    """The host's backup tree, laid out as seed 002's script writes it: <root>/database/<stamp>/full_backup.sql.gz."""
    root = tmp_path / "backups"
    (root / "database").mkdir(parents=True)
    return root


def write_backup(root: Path, stamp: str, data: bytes, age: float = 0.0) -> Path:
    path = root / "database" / stamp / "full_backup.sql.gz"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    when = time.time() - age
    os.utime(path, (when, when))
    return path


def key_of(stamp: str) -> str:
    return f"database/{stamp}/full_backup.sql.gz"


def make(target: Bucket | None = None, /, **options) -> S3BackupCheck:
    """Build a check the way the config loader does; endpoint and bucket default to the test bucket's."""
    if target is not None:
        options.setdefault("endpoint_url", target.endpoint)
        options.setdefault("bucket", target.name)
    options.setdefault("connect_timeout", "1s")
    return S3BackupCheck(S3BackupCheck.Options.model_validate({"name": "s3-copy", "type": "s3_backup", **options}))


def with_local(bucket: Bucket, backups: Path, **options) -> S3BackupCheck:
    return make(bucket, prefix="database/", local_path=f"{backups}/database/*/full_backup.sql.gz", **options)


def run(check: S3BackupCheck, timeout: float = 10.0, wall=time.time) -> CheckResult:
    return check.run(CheckContext(timeout=timeout, wall=wall))


def timed(check: S3BackupCheck, timeout: float) -> tuple[CheckResult, float]:
    started = time.monotonic()
    result = run(check, timeout)
    return result, time.monotonic() - started


def value(result: CheckResult, name: str) -> float | None:
    matches = [s.value for s in result.samples if s.name == name]
    assert len(matches) <= 1
    return matches[0] if matches else None


def final(check: S3BackupCheck, result: CheckResult):
    return evaluate(check, result, WindowState(), time.time())


def secret_refs(tmp_path: Path) -> dict[str, str]:
    for name, text in (("key-id", KEY_ID), ("secret-key", SECRET)):
        path = tmp_path / name
        path.write_text(text + "\n")
        path.chmod(0o600)
    return {"access_key_id": f"${{file:{tmp_path / 'key-id'}}}",
            "secret_access_key": f"${{file:{tmp_path / 'secret-key'}}}"}


def assert_no_secrets(result: CheckResult) -> None:
    text = result.summary + json.dumps(result.details, default=str)
    assert SECRET not in text and KEY_ID not in text, text


# --- freshness, counts, presence ------------------------------------------------------------------

def test_s3_backup_matching_copies_ok_and_verified(bucket, backups):
    old, new = os.urandom(3000), os.urandom(4000)
    write_backup(backups, "20260101_020000", old, age=DAY)
    path = write_backup(backups, "20260102_020000", new)
    bucket.put(key_of("20260101_020000"), old)
    bucket.put(key_of("20260102_020000"), new)
    check = with_local(bucket, backups)
    result = run(check)
    assert result.status is Status.OK, result.summary
    assert final(check, result).status is Status.OK
    assert value(result, "objects") == 2
    assert value(result, "newest_size_bytes") == 4000
    assert 0 <= value(result, "newest_age_seconds") < 60
    assert value(result, "verified") == 1 and value(result, "local_copy_present") == 1
    modified = bucket.head(key_of("20260102_020000"))["LastModified"].timestamp()
    assert value(result, "last_success_timestamp_seconds") == modified
    assert result.details["local"] == {"path": str(path), "size_bytes": 4000, "mtime": path.stat().st_mtime,
                                       "key": key_of("20260102_020000")}
    assert result.details["newest"]["key"] == key_of("20260102_020000")
    assert result.details["objects"] == {"scanned": 2, "matched": 2, "in_window": 2, "capped": False}


def test_s3_backup_local_newest_missing_remotely_critical(bucket, backups):
    write_backup(backups, "20260101_020000", b"old dump", age=DAY)
    write_backup(backups, "20260102_020000", b"new dump")
    bucket.put(key_of("20260101_020000"), b"old dump")
    result = run(with_local(bucket, backups))
    assert result.status is Status.CRITICAL
    assert f"newest local backup missing from the bucket: {key_of('20260102_020000')}" in result.summary
    assert value(result, "local_copy_present") == 0 and value(result, "verified") == 0
    assert value(result, "last_success_timestamp_seconds") == 0
    assert value(result, "objects") == 1, "the listing's figures are still reported"


def test_s3_backup_not_yet_uploaded_within_upload_grace_ok(bucket, backups):
    bucket.put(key_of("20260101_020000"), b"old dump")
    write_backup(backups, "20260102_020000", b"new dump", age=120)
    result = run(with_local(bucket, backups, upload_grace="30m"))
    assert result.status is Status.OK, result.summary
    assert "not uploaded yet" in result.summary
    assert value(result, "local_copy_present") == 0 and value(result, "verified") == 0


def test_s3_backup_size_mismatch_critical(bucket, backups):
    data = os.urandom(5000)
    write_backup(backups, "20260102_020000", data)
    bucket.put(key_of("20260102_020000"), data[:4096])     # an upload cut short
    result = run(with_local(bucket, backups))
    assert result.status is Status.CRITICAL
    assert "size differs" in result.summary and "local 5000 B, bucket 4096 B" in result.summary
    assert value(result, "local_copy_present") == 1 and value(result, "verified") == 0


def test_s3_backup_no_local_file_warning(bucket, backups):
    bucket.put(key_of("20260102_020000"), b"dump")
    result = run(with_local(bucket, backups))
    assert result.status is Status.WARNING
    assert "no local file matches" in result.summary
    assert value(result, "verified") == 0 and value(result, "local_copy_present") is None


def test_s3_backup_empty_prefix_critical(bucket):
    bucket.put("elsewhere/file", b"x")
    result = run(make(bucket, prefix="database/"))
    assert result.status is Status.CRITICAL
    assert "no objects under the prefix" in result.summary
    assert value(result, "objects") == 0 and value(result, "verified") == 0
    assert value(result, "newest_age_seconds") is None


def test_s3_backup_newest_object_empty_critical(bucket):
    bucket.put("database/20260102_020000/full_backup.sql.gz", b"")
    result = run(make(bucket, prefix="database/"))
    assert result.status is Status.CRITICAL
    assert "the newest object is empty" in result.summary
    assert value(result, "verified") == 0


def test_s3_backup_missing_bucket_critical(moto):
    result = run(make(endpoint_url=moto, bucket=f"gone-{uuid.uuid4().hex[:8]}"))
    assert result.status is Status.CRITICAL
    assert "the bucket does not exist" in result.summary
    assert value(result, "verified") == 0 and value(result, "last_success_timestamp_seconds") == 0


def test_s3_backup_newest_older_than_25h_critical_by_threshold(bucket):
    bucket.put("database/20260101_020000/full_backup.sql.gz", b"dump")
    check = make(bucket, prefix="database/")
    two_days_later = lambda: time.time() + 2 * DAY   # noqa: E731 — the injected clock
    result = run(check, wall=two_days_later)
    assert result.status is Status.OK, "age is a measurement: the threshold decides"
    assert 2 * DAY - 60 < value(result, "newest_age_seconds") < 2 * DAY + 60
    verdict = final(check, result)
    assert verdict.status is Status.CRITICAL
    assert "newest_age_seconds" in verdict.summary
    assert value(result, "objects") == 1, "still inside the 30-day window"
    assert final(check, run(check)).status is Status.OK


def test_s3_backup_retention_window_counts_recent_and_min_count_warns(bucket):
    for stamp in ("1", "2", "3"):
        bucket.put(f"database/{stamp}/full_backup.sql.gz", b"dump")
    check = make(bucket, prefix="database/", retention_window="7d", min_count=7)
    now = run(check)
    assert value(now, "objects") == 3
    assert now.status is Status.WARNING and "fewer than min_count 7" in now.summary
    later = run(check, wall=lambda: time.time() + 8 * DAY)
    assert value(later, "objects") == 0, "all three have left the 7-day window"


def test_s3_backup_key_pattern_ignores_sidecars_and_folder_markers(bucket):
    bucket.put("database/", b"")                                          # a console's folder marker
    bucket.put("database/1/full_backup.sql.gz", b"dump one")
    bucket.put("database/1/full_backup.sql.gz.sha256", b"abc  full_backup.sql.gz")
    bucket.put("database/last_backup_timestamp", b"1")
    result = run(make(bucket, prefix="database/", key_pattern="*/full_backup.sql.gz"))
    assert result.status is Status.OK, result.summary
    assert result.details["newest"]["key"] == "database/1/full_backup.sql.gz"
    assert result.details["objects"] == {"scanned": 4, "matched": 1, "in_window": 1, "capped": False}


def test_s3_backup_listing_over_max_objects_stops_with_warning(bucket):
    for n in range(5):
        bucket.put(f"database/{n}/full_backup.sql.gz", b"dump")
    result = run(make(bucket, prefix="database/", max_objects=3))
    assert result.status is Status.WARNING
    assert "listing stopped at max_objects 3" in result.summary
    assert result.details["objects"]["scanned"] == 3 and result.details["objects"]["capped"] is True


# --- integrity by checksum --------------------------------------------------------------------

def test_s3_backup_single_part_sha256_compared_ok(bucket, backups):
    data = os.urandom(10_000)
    write_backup(backups, "20260102_020000", data)
    bucket.put(key_of("20260102_020000"), data, ChecksumAlgorithm="SHA256")
    result = run(with_local(bucket, backups))
    assert result.status is Status.OK, result.summary
    integrity = result.details["integrity"]
    assert integrity["method"] == "sha256" and integrity["match"] is True
    assert integrity["remote"] == bucket.api.head_object(Bucket=bucket.name, Key=key_of("20260102_020000"),
                                                         ChecksumMode="ENABLED")["ChecksumSHA256"]
    assert "local newest present, verified (SHA-256)" in result.summary


def test_s3_backup_single_part_sha256_content_differs_critical(bucket, backups):
    data = bytearray(os.urandom(10_000))
    bucket.put(key_of("20260102_020000"), bytes(data), ChecksumAlgorithm="SHA256")
    data[5000] ^= 0xFF                                   # same size, one byte changed
    write_backup(backups, "20260102_020000", bytes(data))
    result = run(with_local(bucket, backups))
    assert result.status is Status.CRITICAL
    assert "checksum differs" in result.summary and "SHA-256 differs" in result.summary
    assert result.details["integrity"]["match"] is False
    assert value(result, "verified") == 0 and value(result, "local_copy_present") == 1


def test_s3_backup_single_part_without_checksum_etag_compared_as_md5(bucket, backups):
    data = os.urandom(2000)
    write_backup(backups, "20260102_020000", data)
    bucket.put(key_of("20260102_020000"), data)
    result = run(with_local(bucket, backups))
    assert result.status is Status.OK, result.summary
    assert result.details["integrity"]["method"] == "md5-etag"
    assert "verified (MD5 of a single-part ETag)" in result.summary


def test_s3_backup_boto3_default_crc32_upload_prefers_the_md5_etag(moto, backups):
    bucket = Bucket(moto, checksums="when_supported")   # boto3's default: a CRC32 on every upload
    data = os.urandom(2000)
    write_backup(backups, "20260102_020000", data)
    answer = bucket.put(key_of("20260102_020000"), data)
    assert "ChecksumCRC32" in answer
    result = run(with_local(bucket, backups))
    assert result.status is Status.OK, result.summary
    assert result.details["integrity"]["method"] == "md5-etag"


def test_s3_backup_multipart_sha256_composite_rebuilt_and_verified(bucket, backups):
    data = os.urandom(2 * PART + 12345)                  # three parts
    write_backup(backups, "20260102_020000", data)
    bucket.multipart(key_of("20260102_020000"), data, checksum="SHA256")
    result = run(with_local(bucket, backups))
    assert result.status is Status.OK, result.summary
    integrity = result.details["integrity"]
    assert integrity["method"] == "sha256-composite" and integrity["match"] is True
    assert integrity["note"] == "3 parts"
    assert integrity["local"] != base64.b64encode(hashlib.sha256(data).digest()).decode(), \
        "a composite, not the whole file's SHA-256"
    assert "verified (SHA-256 composite of 3 parts)" in result.summary
    assert value(result, "verified") == 1


def test_s3_backup_multipart_sha256_part_altered_critical(bucket, backups):
    data = bytearray(os.urandom(PART + 1000))
    bucket.multipart(key_of("20260102_020000"), bytes(data), checksum="SHA256")
    data[PART + 10] ^= 0x01                             # a flipped bit in the second part
    write_backup(backups, "20260102_020000", bytes(data))
    result = run(with_local(bucket, backups))
    assert result.status is Status.CRITICAL
    assert "SHA-256 composite of 2 parts differs" in result.summary


def test_s3_backup_multipart_crc32_composite_verified(bucket, backups):
    data = os.urandom(PART + 777)
    write_backup(backups, "20260102_020000", data)
    bucket.multipart(key_of("20260102_020000"), data, checksum="CRC32")
    result = run(with_local(bucket, backups))
    assert result.status is Status.OK, result.summary
    assert result.details["integrity"]["method"] == "crc32-composite"
    assert result.details["integrity"]["match"] is True


# Every algorithm S3 keeps, uploaded the way a client does it: the check names the algorithm it compared by,
# and one changed byte (same size) is caught by each. NAMES: S3's algorithm → how the summary writes it.
NAMES = {"CRC32": "CRC32", "CRC32C": "CRC32C", "CRC64NVME": "CRC64NVME", "SHA1": "SHA-1", "SHA256": "SHA-256"}


def corrupt(path: Path, offset: int) -> None:
    """Flip one byte in place: same size, new content, a later mtime (so a kept digest is not reused)."""
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x5A
    path.write_bytes(bytes(data))
    later = time.time_ns() + 10**9
    os.utime(path, ns=(later, later))


@pytest.mark.parametrize("algorithm", list(NAMES))
def test_s3_backup_single_part_each_algorithm_verified_and_same_size_corruption_critical(bucket, backups,
                                                                                        algorithm):
    data = os.urandom(20_000)
    path = write_backup(backups, "20260102_020000", data)
    # an ETag that is not an MD5 (as with SSE-KMS), so the S3 checksum is what gets compared
    answer = bucket.put(key_of("20260102_020000"), data, ChecksumAlgorithm=algorithm, ServerSideEncryption="aws:kms")
    assert f"Checksum{algorithm}" in answer
    check = with_local(bucket, backups)
    result = run(check)
    assert result.status is Status.OK, result.summary
    assert f"local newest present, verified ({NAMES[algorithm]})" in result.summary
    assert result.details["integrity"]["method"] == algorithm.lower() and result.details["integrity"]["match"]
    assert value(result, "verified") == 1
    corrupt(path, 12_345)
    result = run(check)
    assert result.status is Status.CRITICAL, result.summary
    assert f"checksum differs for {key_of('20260102_020000')}: {NAMES[algorithm]} differs" in result.summary
    assert value(result, "verified") == 0


# What S3 itself accepts: COMPOSITE for the SHAs and CRC32/CRC32C, FULL_OBJECT for the CRCs (CRC64NVME only that)
MULTIPART = [("CRC32", "COMPOSITE"), ("CRC32C", "COMPOSITE"), ("SHA1", "COMPOSITE"), ("SHA256", "COMPOSITE"),
             ("CRC32", "FULL_OBJECT"), ("CRC32C", "FULL_OBJECT"), ("CRC64NVME", "FULL_OBJECT")]


@pytest.mark.parametrize("algorithm, kind", MULTIPART)
def test_s3_backup_multipart_each_algorithm_verified_and_same_size_corruption_critical(bucket, backups,
                                                                                      algorithm, kind):
    if algorithm == "CRC32C":
        assert importlib.util.find_spec("crc32c"), "moto computes CRC32C as CRC32 without it: pip install -e '.[test]'"
    data = os.urandom(PART + 3000)                      # two parts
    path = write_backup(backups, "20260102_020000", data)
    bucket.multipart(key_of("20260102_020000"), data, checksum=algorithm, kind=kind)
    check = with_local(bucket, backups)
    result = run(check)
    assert result.status is Status.OK, result.summary
    integrity = result.details["integrity"]
    if kind == "COMPOSITE":
        assert integrity["method"] == f"{algorithm.lower()}-composite"
        assert f"verified ({NAMES[algorithm]} composite of 2 parts)" in result.summary
    else:
        assert integrity["method"] == algorithm.lower()
        assert f"verified ({NAMES[algorithm]})" in result.summary
    assert integrity["match"] is True and value(result, "verified") == 1
    corrupt(path, PART + 100)                            # in the second part
    result = run(check)
    assert result.status is Status.CRITICAL, result.summary
    assert f"{NAMES[algorithm]}" in result.summary and "differs" in result.summary
    if kind == "COMPOSITE":
        assert result.details["integrity"].get("first_mismatched_part") in (2, None)


def test_s3_backup_crc64nvme_without_awscrt_size_only_and_says_why(bucket, backups, monkeypatch):
    data = os.urandom(5000)
    write_backup(backups, "20260102_020000", data)
    bucket.put(key_of("20260102_020000"), data, ChecksumAlgorithm="CRC64NVME", ServerSideEncryption="aws:kms")
    check = with_local(bucket, backups)
    check._botocore_session()                             # botocore's own start-up looks for awscrt, harmlessly
    monkeypatch.setitem(sys.modules, "awscrt", None)      # then awscrt is gone, as on a host without it
    result = run(check)
    assert result.status is Status.OK, result.summary
    assert ("local newest present, size only: computing CRC64NVME needs the awscrt package, which is not "
            "installed") in result.summary
    assert "verified" not in result.summary
    assert value(result, "verified") == 0 and result.details["integrity"]["match"] is None


def test_s3_backup_multipart_without_checksum_size_only_never_md5(bucket, backups):
    data = os.urandom(PART + 4321)
    write_backup(backups, "20260102_020000", data)
    bucket.multipart(key_of("20260102_020000"), data)
    etag = bucket.head(key_of("20260102_020000"))["ETag"]
    assert etag.strip('"').endswith("-2")
    result = run(with_local(bucket, backups))
    assert result.status is Status.OK, result.summary
    integrity = result.details["integrity"]
    assert integrity["method"] == "size-only" and integrity["match"] is None and integrity["local"] is None
    assert "local newest present, size only: multipart upload (2 parts) without an S3 checksum" in result.summary
    assert "its ETag is not an MD5 of the content" in result.summary
    assert "verified" not in result.summary, "size only is never called verified"
    assert value(result, "verified") == 0 and value(result, "local_copy_present") == 1


def test_s3_backup_local_file_replaced_is_hashed_again(bucket, backups):
    data = os.urandom(10_000)
    path = write_backup(backups, "20260102_020000", data)
    bucket.put(key_of("20260102_020000"), data, ChecksumAlgorithm="SHA256")
    check = with_local(bucket, backups)
    assert run(check).status is Status.OK
    path.write_bytes(bytes(reversed(data)))           # same size, new content and mtime
    os.utime(path, ns=(time.time_ns() + 10**9, time.time_ns() + 10**9))
    assert run(check).status is Status.CRITICAL


def test_s3_backup_last_success_kept_through_a_failing_run(bucket, backups, closed_port):
    data = os.urandom(1000)
    write_backup(backups, "20260102_020000", data)
    bucket.put(key_of("20260102_020000"), data)
    check = with_local(bucket, backups)
    good = value(run(check), "last_success_timestamp_seconds")
    assert good > 0
    down = S3BackupCheck(check.options.model_copy(update={"endpoint_url": f"http://127.0.0.1:{closed_port}"}))
    down._last_success = check._last_success
    result = run(down)
    assert result.status is Status.CRITICAL
    assert value(result, "last_success_timestamp_seconds") == good and value(result, "verified") == 0


# --- reachability and timeouts ------------------------------------------------------------------

def test_s3_backup_connection_refused_critical_within_connect_timeout(closed_port):
    check = make(endpoint_url=f"http://127.0.0.1:{closed_port}", bucket="backups", connect_timeout="1s")
    result, elapsed = timed(check, timeout=5)
    assert result.status is Status.CRITICAL
    assert result.summary == "s3://backups/: unreachable: connection refused"
    assert elapsed < 1 + 1, f"took {elapsed:.2f}s: a refused connection is not retried"
    assert value(result, "verified") == 0


def test_s3_backup_blackholed_endpoint_critical_within_timeout(blackhole):
    check = make(endpoint_url=f"http://127.0.0.1:{blackhole}", bucket="backups", connect_timeout="1s",
                 max_attempts=5)
    result, elapsed = timed(check, timeout=3)
    assert result.status is Status.CRITICAL, result.summary
    assert "unreachable: connect timed out after 1s" in result.summary
    assert elapsed < 3 + 1, f"took {elapsed:.2f}s"


@pytest.fixture
def silent_endpoint():
    """A port that accepts connections (the kernel completes them) and never answers a request."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    yield server.getsockname()[1]
    server.close()


def test_s3_backup_silent_endpoint_unknown_within_timeout(silent_endpoint):
    check = make(endpoint_url=f"http://127.0.0.1:{silent_endpoint}", bucket="backups", read_timeout="1s",
                 max_attempts=10)
    result, elapsed = timed(check, timeout=3)
    assert result.status is Status.UNKNOWN, result.summary
    assert re.search(r"connected, but no answer: \d attempts? in [\d.]+m?s \(read timeout 1s", result.summary)
    assert elapsed < 3 + 1, f"took {elapsed:.2f}s"
    assert value(result, "verified") == 0, "exported even when the check cannot tell"


def test_s3_backup_long_read_timeout_cut_to_the_check_timeout(silent_endpoint):
    check = make(endpoint_url=f"http://127.0.0.1:{silent_endpoint}", bucket="backups", read_timeout="60s")
    result, elapsed = timed(check, timeout=2)
    assert result.status is Status.UNKNOWN, result.summary
    assert elapsed < 2 + 1, f"took {elapsed:.2f}s"


# --- credentials ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def moto_with_auth():
    """A moto_server process that checks signatures: unknown access keys are refused with 403."""
    port = free_port()
    env = {**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": "0"}
    proc = subprocess.Popen([str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def listening() -> bool:
        assert proc.poll() is None, "moto_server exited"
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return True
        except OSError:
            return False

    wait_for(listening, 30, what="moto_server to listen")
    yield f"http://127.0.0.1:{port}"
    proc.terminate()
    proc.wait(10)


def test_s3_backup_access_denied_unknown_without_the_keys(moto_with_auth, tmp_path):
    check = make(endpoint_url=moto_with_auth, bucket="backups", **secret_refs(tmp_path))
    result = run(check)
    assert result.status is Status.UNKNOWN
    assert "access denied (InvalidAccessKeyId" in result.summary
    assert_no_secrets(result)
    assert value(result, "verified") == 0


def test_s3_backup_secret_references_never_reported(bucket, backups, tmp_path, closed_port, moto_with_auth):
    refs = secret_refs(tmp_path)
    data = os.urandom(1000)
    write_backup(backups, "20260102_020000", data)
    bucket.put(key_of("20260102_020000"), data)
    ok = run(with_local(bucket, backups, **refs))
    assert ok.status is Status.OK, ok.summary
    refused = run(make(endpoint_url=f"http://127.0.0.1:{closed_port}", bucket="backups", **refs))
    denied = run(make(endpoint_url=moto_with_auth, bucket="backups", **refs))
    for result in (ok, refused, denied):
        assert_no_secrets(result)
    assert KEY_ID not in repr(make(bucket, **refs).options) and SECRET not in repr(make(bucket, **refs).options)


def test_s3_backup_unreadable_secret_unknown(bucket, tmp_path):
    refs = secret_refs(tmp_path)
    check = make(bucket, **refs)
    (tmp_path / "secret-key").unlink()
    result = run(check)
    assert result.status is Status.UNKNOWN
    assert "cannot read the S3 credentials" in result.summary


# --- options --------------------------------------------------------------------------------

@pytest.mark.parametrize("options, message", [
    ({"bucket": "Backups_2026"}, "not a valid S3 bucket name"),
    ({"bucket": "backups", "prefix": "/database/"}, "no leading '/'"),
    ({"bucket": "backups", "endpoint_url": "http://user:pw@minio:9000"}, "must not contain credentials"),
    ({"bucket": "backups", "endpoint_url": "minio:9000"}, "http://host:port"),
    ({"bucket": "backups", "access_key_id": "${env:AWS_ACCESS_KEY_ID}"}, "give both access_key_id"),
    ({"bucket": "backups", "local_path": "backups/*.gz"}, "must be an absolute path"),
    ({"bucket": "backups", "local_path": "/srv/b/*.gz", "local_root": "/backups"}, "is not under local_root"),
    ({"bucket": "backups", "warning": "2d", "critical": "1d"}, "warning must be below critical"),
])
def test_s3_backup_options_invalid_rejected(options, message):
    with pytest.raises(ValidationError) as info:
        S3BackupCheck.Options.model_validate({"name": "s3", "type": "s3_backup", **options})
    assert message in str(info.value)


def test_s3_backup_local_key_mirrors_the_tree_below_the_glob():
    pattern = "/backups/database/*/full_backup.sql.gz"
    assert local_root_of(pattern) == "/backups/database"
    path = "/backups/database/20260102_020000/full_backup.sql.gz"
    assert remote_key("database/", local_root_of(pattern), path) == "database/20260102_020000/full_backup.sql.gz"
    assert remote_key("database", "/backups/database", path) == "database/20260102_020000/full_backup.sql.gz"
    assert remote_key("", "/backups", path) == "database/20260102_020000/full_backup.sql.gz"


def test_s3_backup_checksum_plan_never_reads_a_multipart_etag_as_md5():
    multipart = {"ETag": '"c443f3f37fcc9c37d82d0112f6c54628-2"'}
    assert plan_checksum(multipart).algorithm is None
    kms = {"ETag": '"398533d48111e9f664b1f64cb10c4b63"', "ServerSideEncryption": "aws:kms"}
    assert plan_checksum(kms).algorithm is None and "SSE-KMS" in plan_checksum(kms).reason
    plain = {"ETag": '"398533d48111e9f664b1f64cb10c4b63"', "ServerSideEncryption": "AES256"}
    assert plan_checksum(plain).algorithm == "MD5"
    nvme = {"ETag": '"c443f3f37fcc9c37d82d0112f6c54628-2"', "ChecksumCRC64NVME": "AAAAAAAAAAA="}
    assert (plan_checksum(nvme).algorithm, plan_checksum(nvme).composite) == ("CRC64NVME", False), \
        "S3 keeps CRC64NVME full-object only"
    s3_style = {"ETag": '"c443f3f37fcc9c37d82d0112f6c54628-3"', "ChecksumSHA256": "vorRs+7jhk/rq+KA8mJf=-3",
                "ChecksumType": "COMPOSITE"}
    plan = plan_checksum(s3_style)
    assert (plan.algorithm, plan.remote, plan.composite, plan.parts) == ("SHA256", "vorRs+7jhk/rq+KA8mJf=", True, 3)


def test_s3_backup_checksum_plan_multipart_crc_of_unknown_type_left_open():
    head = {"ETag": '"c443f3f37fcc9c37d82d0112f6c54628-2"', "ChecksumCRC32": "WUH3Ig=="}
    assert plan_checksum(head).composite is None, "composite or full-object: ask GetObjectAttributes"
    assert plan_checksum(head, "FULL_OBJECT").composite is False
    assert (plan_checksum(head, "COMPOSITE").composite, plan_checksum(head, "COMPOSITE").parts) == (True, 2)
    single = {"ETag": '"900150983cd24fb0d6963f7d28e17f72"',
              "ChecksumSHA256": "ungWv48Bz+pBQUDeXa4iI7ADYaOWF3qctBD/YfIAFa0="}
    assert (plan_checksum(single).algorithm, plan_checksum(single).composite) == ("SHA256", False)


# --- cost and contract ------------------------------------------------------------------------

def test_s3_backup_botocore_imported_only_when_a_check_runs():
    code = ("import sys, agent.config.load, checks; from checks.s3 import S3BackupCheck;"
            "S3BackupCheck(S3BackupCheck.Options(name='x', type='s3_backup', bucket='backups'));"
            "print(sorted(m for m in ('boto3', 'botocore', 'moto') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_s3_backup_metrics_follow_the_contract(bucket, backups, closed_port):
    data = os.urandom(1000)
    write_backup(backups, "20260102_020000", data)
    bucket.put(key_of("20260102_020000"), data)
    check = with_local(bucket, backups, warning="1h")
    results = [run(check), run(make(endpoint_url=f"http://127.0.0.1:{closed_port}", bucket="backups")),
               run(make(bucket, prefix="nothing-here/"))]
    assert_family_contract(check, results)
