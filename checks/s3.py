"""S3 copies of the backups (seed 002 "Upload to S3", "Verify backup integrity"): type `s3_backup`.

One run lists the objects under a bucket's prefix (paginated, at most `max_objects` keys
read, so a huge bucket cannot hold a worker), reports the newest object's age and size and
how many objects fall in the retention window, and, with `local_path`, checks that the
newest local backup exists remotely with the same size and the same content:

- an object with an S3 checksum (SHA-256, SHA-1, CRC64NVME, CRC32C or CRC32, the one the
  uploader chose) is compared with the same checksum of the local file. A full-object
  checksum is the algorithm over the whole file, also for a multipart upload. A composite
  one (multipart, S3 shows it as `<base64>-N` or says COMPOSITE) is a checksum of the
  parts' checksums; it is rebuilt from the local file with the object's own part sizes
  (GetObjectAttributes ObjectParts, or one HEAD per part where that API gives none), never
  compared with a plain checksum of the file. CRC32 comes from zlib, the SHAs from hashlib,
  CRC32C and CRC64NVME from awscrt (botocore's own `crt` extra);
- without an S3 checksum, a single-part object's ETag is the MD5 of its content unless it
  is encrypted with SSE-KMS or SSE-C, and is compared as that ("md5-etag"); it is preferred
  to a 32/64-bit CRC when both are there;
- otherwise (a multipart ETag without an S3 checksum, a CRC algorithm whose library is
  missing, verify_checksum off) only the size is compared, and the result says "size only"
  and why; `verified` is then 0: the copy is reported verified only when its bytes were
  compared by a checksum.

The local file's key is the prefix joined with its path below `local_root` (by default
the glob's leading directories without wildcards), mirroring `aws s3 sync DIR s3://…/PREFIX`.
Its digest is kept while the file's size and mtime are unchanged, so a large dump is
read once, not on every run.

With `set: true`, `local_path` globs backup set directories (`/backups/database/*`, the
nightly `$TIMESTAMP` directories, newest = greatest name, as `backup_set` picks them) and
every file of the newest set is compared with its object the same way, one HEAD each; the
result names the members missing from the bucket or differing, and `verified` is 1 only
when every member's bytes were compared by a checksum.

Cost: botocore is imported inside `run`, never at import (the daemon's import path stays
free of it); measured here, importing it takes ~100 ms and ~8 MiB and the S3 client's
models another ~15 MiB, which stay resident, so only hosts that configure an s3_backup
check pay them. With awscrt installed (the `s3` extra), botocore loads it at its own
import: ~6 MiB more, measured here. The botocore session (the loaded models) is kept per
check; the client, with its connections, is made and closed in each run.

Time: every HTTP attempt, retries included, starts only when its connect timeout plus a
minimal read still fit in the run's timeout, and its read timeout is cut to what is left;
a refused connection is not retried. botocore's read timeout applies per socket read, so
only a server trickling bytes could stretch a run, up to the runner's deadline.

Status: backup storage that cannot be reached (connection refused, connect timed out,
DNS, TLS) is CRITICAL — uploads fail too. A store that accepted the connection but did not
answer in time, a check timeout used up, or access denied is UNKNOWN: the check could not
tell. The last-success gauge and `verified` are exported in every case, so an alert on
their age keeps working while the check cannot see the bucket.
"""

from __future__ import annotations

import base64
import binascii
import fnmatch
import glob
import hashlib
import os
import re
import threading
import zlib
from collections import Counter
from dataclasses import dataclass
from typing import Any, Callable, Literal

from pydantic import Field, field_validator, model_validator

from agent import __version__
from agent.plugin.fields import Duration, LongDuration, PositiveDuration, Secret, SecretStr, check_http_url
from agent.plugin.result import CheckResult, Sample, Status, sample, worst
from agent.plugin.units import format_duration, format_size
from checks.backup_sets import BackupSet, Member, read_set, set_directories
from checks.base import Check, CheckContext, CheckOptions, MetricSpec, Threshold
from checks.net import describe_error

DAY = 86400.0
HASH_CHUNK_BYTES = 1 << 20
MIN_READ_SECONDS = 0.05        # an attempt is not started with less than this left for its answer
RETRYABLE_STATUS = frozenset({429, 500, 502, 503, 504})
DENIED_CODES = frozenset({"AccessDenied", "AllAccessDisabled", "InvalidAccessKeyId", "SignatureDoesNotMatch",
                          "ExpiredToken", "InvalidToken", "TokenRefreshRequired", "AccountProblem"})
_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_PARTS_RE = re.compile(r"^(?P<value>.*)-(?P<parts>\d+)$")


class _Crc:
    """A CRC with hashlib's update/digest shape; S3 sends it as big-endian bytes in base64."""

    def __init__(self, update: Callable[[bytes, int], int], width_bytes: int):
        self._update, self._width, self._value = update, width_bytes, 0

    def update(self, data: bytes) -> None:
        self._value = self._update(data, self._value)

    def digest(self) -> bytes:
        return self._value.to_bytes(self._width, "big")


class ChecksumUnavailable(Exception):
    """An S3 checksum algorithm this host cannot compute (its library is missing); the message says which."""


def hasher_for(algorithm: str) -> Callable[[], Any]:
    """Given an S3 checksum algorithm (or MD5, for an ETag), return a factory of hashlib-shaped hashers.

    Raise ChecksumUnavailable when the algorithm needs awscrt and it is not installed.
    """
    if algorithm in ("MD5", "SHA256", "SHA1"):
        return getattr(hashlib, algorithm.lower())
    if algorithm == "CRC32":
        return lambda: _Crc(zlib.crc32, 4)
    try:
        from awscrt import checksums
    except ImportError:
        raise ChecksumUnavailable(f"computing {algorithm} needs the awscrt package, which is not installed "
                                  f"(pip install 'maint-agent[s3]')") from None
    crc = {"CRC32C": (checksums.crc32c, 4), "CRC64NVME": (checksums.crc64nvme, 8)}
    if algorithm not in crc:
        raise ChecksumUnavailable(f"the S3 checksum algorithm {algorithm} is not supported")
    update, width = crc[algorithm]
    return lambda: _Crc(update, width)


# S3 checksum algorithms, strongest first: an S3 SHA, then (in plan_checksum) a single-part MD5 ETag, then a CRC
ALGORITHMS = ("SHA256", "SHA1", "CRC64NVME", "CRC32C", "CRC32")
ALGORITHM_NAMES = {"SHA256": "SHA-256", "SHA1": "SHA-1", "CRC32": "CRC32", "CRC32C": "CRC32C",
                   "CRC64NVME": "CRC64NVME", "MD5": "MD5"}


class OutOfTime(Exception):
    """The run's timeout is used up; raised from botocore's event hooks and the hashing loop."""


@dataclass(frozen=True)
class Integrity:
    """How the local copy's content was compared with the object: a method, both values and the outcome.

    `match` is None when nothing beyond the size could be compared; `note` then says why.
    """

    method: str                     # sha256, sha256-composite, md5-etag, crc32, size-only …
    remote: str | None = None
    local: str | None = None
    match: bool | None = None
    note: str = ""
    mismatched_part: int | None = None

    def phrase(self) -> str:
        """`verified (SHA-256)` only when bytes were compared by a checksum; `size only: why` otherwise."""
        if self.match is None:
            return f"size only: {self.note}"
        name = self.algorithm_name()
        if self.match:
            return f"verified ({name})"
        verdict = f"{name} differs"
        if self.mismatched_part is not None:
            verdict += f" (first at part {self.mismatched_part})"
        return verdict

    def algorithm_name(self) -> str:
        algorithm, _, kind = self.method.partition("-")
        if self.method == "md5-etag":
            return "MD5 of a single-part ETag"
        name = ALGORITHM_NAMES.get(algorithm.upper(), algorithm)
        return f"{name} composite of {self.note}" if kind == "composite" else name

    def as_details(self) -> dict[str, Any]:
        out = {"method": self.method, "remote": self.remote, "local": self.local, "match": self.match}
        if self.note:
            out["note"] = self.note
        if self.mismatched_part is not None:
            out["first_mismatched_part"] = self.mismatched_part
        return out


@dataclass(frozen=True)
class ChecksumPlan:
    """What the object's HEAD allows to compare: an S3 checksum, the MD5 ETag, or nothing (with why)."""

    algorithm: str | None            # SHA256 … when an S3 checksum will be compared; MD5 for the ETag
    remote: str | None = None        # the value without a `-N` suffix (base64, or hex for MD5)
    composite: bool | None = False   # None: a multipart CRC whose type (composite or full-object) is not known
    parts: int | None = None         # part count, for a composite
    reason: str = ""                 # why only the size is compared


def parse_etag(etag: str) -> tuple[str, int | None]:
    """Given an ETag as S3 sends it (quoted), return (value, part count or None for a single-part upload)."""
    value = etag.strip().strip('"')
    match = _PARTS_RE.match(value)
    return (match["value"], int(match["parts"])) if match else (value, None)


def plan_checksum(head: dict[str, Any], checksum_type: str | None = None) -> ChecksumPlan:
    """Given a HEAD (ChecksumMode=ENABLED) answer, return what can be compared with a local copy.

    Preference: an S3 SHA checksum, then a single-part ETag that is an MD5 (128 bits), then
    CRC64NVME, CRC32C, CRC32. A multipart ETag is never taken for an MD5. `checksum_type` (COMPOSITE / FULL_OBJECT, from
    GetObjectAttributes) overrides what the HEAD answer says or implies.
    """
    etag, etag_parts = parse_etag(head.get("ETag", ""))
    found = {name: head[f"Checksum{name}"] for name in ALGORITHMS if head.get(f"Checksum{name}")}
    kind = checksum_type or head.get("ChecksumType")
    encryption = head.get("ServerSideEncryption", "")
    md5_etag = (etag_parts is None and re.fullmatch(r"[0-9a-f]{32}", etag) is not None
                and not encryption.startswith("aws:kms") and not head.get("SSECustomerAlgorithm"))

    def s3_checksum(name: str) -> ChecksumPlan:
        value, value_parts = parse_etag(found[name])
        parts = value_parts or etag_parts
        if kind == "FULL_OBJECT" or (parts is None and kind is None):
            return ChecksumPlan(name, value)
        if kind == "COMPOSITE" or value_parts is not None or name.startswith("SHA"):   # S3 has no full-object SHA
            return ChecksumPlan(name, value, composite=True, parts=parts)
        if name == "CRC64NVME":                                                     # … and no composite CRC64NVME
            return ChecksumPlan(name, value)
        return ChecksumPlan(name, value, composite=None, parts=parts)

    for name in ("SHA256", "SHA1"):
        if name in found:
            return s3_checksum(name)
    if md5_etag:
        return ChecksumPlan("MD5", etag)
    for name in ("CRC64NVME", "CRC32C", "CRC32"):
        if name in found:
            return s3_checksum(name)
    if etag_parts is not None:
        return ChecksumPlan(None, parts=etag_parts, reason=f"multipart upload ({etag_parts} parts) without an S3 "
                                                           f"checksum: its ETag is not an MD5 of the content")
    if encryption.startswith("aws:kms") or head.get("SSECustomerAlgorithm"):
        return ChecksumPlan(None, reason="no S3 checksum, and the ETag of an SSE-KMS/SSE-C object is not an MD5")
    return ChecksumPlan(None, reason=f"no S3 checksum, and the ETag {etag!r} is not an MD5")


def composite(digests: list[bytes], algorithm: str) -> bytes:
    """S3's checksum of a multipart object: the algorithm over the parts' binary checksums, concatenated."""
    combined = hasher_for(algorithm)()
    combined.update(b"".join(digests))
    return combined.digest()


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def local_root_of(pattern: str) -> str:
    """The leading directories of a glob without wildcards: `/backups/db/*/x.gz` → `/backups/db`."""
    parts = pattern.split("/")
    fixed = []
    for part in parts[:-1]:
        if glob.has_magic(part):
            break
        fixed.append(part)
    return "/".join(fixed) or "/"


def remote_key(prefix: str, root: str, path: str) -> str:
    """The key a local file has under the prefix: prefix + its path below root (joined by one '/')."""
    rel = os.path.relpath(path, root)
    if not prefix or prefix.endswith("/"):
        return prefix + rel
    return f"{prefix}/{rel}"


@dataclass(frozen=True)
class LocalFile:
    path: str
    size: int
    mtime: float
    mtime_ns: int


def newest_local(pattern: str) -> LocalFile | None:
    """The most recently modified regular file matching the glob (ties: the last name); None when none."""
    best = None
    for path in glob.glob(pattern):
        try:
            st = os.stat(path)
        except OSError:
            continue   # removed between glob and stat (rotation)
        if not os.path.isfile(path):
            continue
        candidate = LocalFile(path, st.st_size, st.st_mtime, st.st_mtime_ns)
        if best is None or (candidate.mtime_ns, candidate.path) > (best.mtime_ns, best.path):
            best = candidate
    return best


@dataclass(frozen=True)
class Hashed:
    """A local file's digest: base64 (S3 checksums) or hex (MD5), of the whole file or S3's composite."""

    local: str
    parts: tuple[str, ...] = ()      # each part's digest, base64, for a composite


@dataclass(frozen=True)
class CopyVerdict:
    """The newest local backup against its object: what to report, and whether it vouches for the copy."""

    status: Status
    phrase: str
    present: bool | None = None        # None: no local file to look for
    verified: bool = False
    modified: float | None = None      # the object's LastModified, when verified


@dataclass
class Listing:
    """What the paginated listing found among the keys it read."""

    scanned: int = 0              # keys read (the max_objects cap applies to these)
    matched: int = 0              # backups: not folder markers, matching key_pattern
    in_window: int = 0            # backups modified within retention_window
    newest: dict[str, Any] | None = None
    capped: bool = False          # stopped at max_objects with more keys left


class _Client:
    """A botocore S3 client for one run, every attempt of which fits in what is left of the run's timeout.

    botocore's timeouts are per socket operation and its retries add attempts and backoff;
    the `before-send` hook starts an attempt only when its connect timeout plus a minimal read
    still fit and cuts its read timeout to what is left, and the `needs-retry` hook gives up
    (with the attempt's own error) when the next attempt and its backoff could not fit, or at
    once for a refused connection.
    """

    def __init__(self, session, opts, credentials: dict[str, str], timeout: float, started: float,
                 monotonic: Callable[[], float]):
        from botocore.config import Config

        self.deadline = started + timeout
        self._monotonic = monotonic
        self.connect = min(opts.connect_timeout, timeout / 2)
        self.read = opts.read_timeout
        self.max_attempts = opts.max_attempts
        self.started, self.attempts, self.cut = started, 0, False   # for the reason given when reads time out
        config = Config(connect_timeout=self.connect, read_timeout=min(self.read, timeout),
                        retries={"max_attempts": opts.max_attempts, "mode": "standard"},
                        s3={"addressing_style": opts.addressing_style}, user_agent_extra=f"maint-agent/{__version__}")
        verify = (opts.ca_file or None) if opts.verify_tls else False
        self.api = session.create_client("s3", region_name=opts.region, endpoint_url=opts.endpoint_url,
                                         verify=verify, config=config, **credentials)
        self.api.meta.events.register("before-send.s3", self._before_send)
        self.api.meta.events.register_last("needs-retry.s3", self._needs_retry)

    def left(self) -> float:
        return self.deadline - self._monotonic()

    def elapsed(self) -> float:
        return self._monotonic() - self.started

    def _before_send(self, request, **_):
        left = self.left()
        if left < self.connect + MIN_READ_SECONDS:
            raise OutOfTime()
        self.attempts += 1
        request.context["read_timeout"] = min(self.read, left - self.connect)
        self.cut = request.context["read_timeout"] < self.read

    def _needs_retry(self, attempts, response=None, caught_exception=None, **_):
        """Runs after botocore's own retry handler; only ends retries early, never adds one."""
        if caught_exception is None:
            status = response[0].status_code if response else 0
            if status not in RETRYABLE_STATUS:
                return None
        elif isinstance(caught_exception, OutOfTime):
            return None
        elif _caused_by(caught_exception, ConnectionRefusedError):
            raise caught_exception
        if attempts >= self.max_attempts:
            return None
        if caught_exception is not None:
            backoff = 0.05 * 2 ** (attempts - 1)       # botocore's largest backoff for a transient error
        else:
            backoff = min(2 ** (attempts - 1), 20)     # … and for throttling, plus what the server may ask
            backoff += 5 if response[0].headers.get("x-amz-retry-after") else 0
        if self.left() < self.connect + MIN_READ_SECONDS + backoff:
            if caught_exception is not None:
                raise caught_exception
            raise OutOfTime(f"S3 answered HTTP {response[0].status_code}")
        return None

    def close(self) -> None:
        self.api.close()


def _caused_by(exc: BaseException | None, kind: type) -> BaseException | None:
    """The first exception of `kind` in exc's chain of causes and contexts (botocore wraps urllib3 wraps OSError)."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, kind):
            return exc
        seen.add(id(exc))
        wrapped = getattr(exc, "kwargs", None)
        exc = exc.__cause__ or exc.__context__ or (wrapped.get("error") if isinstance(wrapped, dict) else None)
    return None


def _remote_evidence(key: str, head: dict[str, Any]) -> dict[str, Any]:
    """What the details keep of an object's HEAD: size, ETag, checksums, encryption."""
    remote = {"key": key, "size_bytes": head["ContentLength"], "etag": head.get("ETag"),
              "last_modified": head["LastModified"].isoformat(),
              "checksums": {n: head[f"Checksum{n}"] for n in ALGORITHMS if head.get(f"Checksum{n}")},
              "checksum_type": head.get("ChecksumType"), "server_side_encryption": head.get("ServerSideEncryption")}
    return {k: v for k, v in remote.items() if v is not None}


class S3BackupCheck(Check):
    """Backups copied to S3 (or MinIO, Ceph, any S3 API): fresh, kept, and the newest local one intact remotely.

    Thresholds apply to the newest object's age (default CRITICAL beyond 25 h: the backup
    plan's alert is "no successful backup in 24 h" held for 1 h). CRITICAL from the check itself:
    no objects under the prefix, the newest one empty, the bucket missing, the newest local
    backup absent remotely or differing in size or checksum, the store unreachable. WARNING:
    fewer objects in the retention window than `min_count`, the listing cut at
    `max_objects`, no local file matching `local_path`. UNKNOWN: access denied, no
    credentials, the store too slow to answer within the timeout.
    """

    TYPE = "s3_backup"
    EXAMPLE = """
        - name: db-dumps-s3
          type: s3_backup
          every: 1h
          bucket: example-backups
          prefix: database/
          region: eu-central-1
          access_key_id: ${credential:s3.key_id}
          secret_access_key: ${credential:s3.secret}
          local_path: /backups/database/*/full_backup.sql.gz   # the newest must be in the bucket too
          upload_grace: 2h
          retention_window: 30d
          min_count: 28
          critical: 26h
    """
    METRIC_PREFIX = "backup_bucket"   # not backup_s3: exported names are [a-z_] only (test_metrics)

    class Options(CheckOptions):
        type: Literal["s3_backup"]
        bucket: str = Field(..., description="bucket name")
        prefix: str = Field("", description="key prefix the backups are under, e.g. database/")
        key_pattern: str | None = Field(
            None, description="count only keys matching this glob (below the prefix), e.g. */full_backup.sql.gz")
        endpoint_url: str | None = Field(
            None, description="http(s)://host:port of MinIO, Ceph or another S3 API; default: AWS")
        region: str | None = Field(None, description="default: the AWS chain's region (AWS_REGION, ~/.aws/config)")
        addressing_style: Literal["auto", "path", "virtual"] = Field(
            "auto", description="path for most MinIO/Ceph setups without wildcard DNS")
        verify_tls: bool = Field(True, description="verify the endpoint's certificate")
        ca_file: str | None = Field(None, description="PEM bundle to trust for the endpoint (an internal CA)")
        access_key_id: SecretStr | None = Field(
            None, description="a secret reference; default: the standard AWS credential chain")
        secret_access_key: SecretStr | None = Field(None, description="a secret reference, with access_key_id")
        connect_timeout: PositiveDuration = Field(5.0, description="per attempt; at most half the check's timeout")
        read_timeout: PositiveDuration = Field(10.0, description="per attempt, cut to what is left of the check's "
                                                                "timeout")
        max_attempts: int = Field(3, ge=1, le=10, description="attempts per request (botocore standard retries), "
                                                               "as many as fit in the check's timeout")
        retention_window: LongDuration = Field(30 * DAY, gt=0, description="count the objects modified within this "
                                                                           "(the backup plan keeps 30 days)")
        min_count: int | None = Field(None, ge=0, description="WARNING when fewer objects are in the window")
        max_objects: int = Field(100_000, ge=1, description="read at most this many keys per run (WARNING when cut)")
        local_path: str | None = Field(
            None, description="absolute glob of the local backups (with set: of the set directories); the newest must "
                              "be in the bucket, same size and checksum")
        local_root: str | None = Field(
            None, description="the directory whose layout is mirrored under prefix; default: local_path's leading "
                              "directories without wildcards")
        upload_grace: Duration = Field(
            0.0, description="a newest local backup younger than this and not yet in the bucket is not an error")
        set: bool = Field(False, description="local_path is a glob of backup set directories (e.g. "
                                             "/backups/database/*): every file of the newest set (greatest name) "
                                             "must be in the bucket below prefix, same size and checksum")
        verify_checksum: bool = Field(True, description="compare content checksums, not only sizes (reads the "
                                                        "local file once; its digest is kept while it is unchanged)")
        warning: Duration | None = Field(None, description="WARNING when the newest object is older")
        critical: Duration | None = Field(25 * 3600.0, description="CRITICAL when the newest object is older")

        @field_validator("bucket")
        @classmethod
        def _bucket(cls, bucket):
            if not _BUCKET_RE.match(bucket) or ".." in bucket:
                raise ValueError(f"bucket {bucket!r} is not a valid S3 bucket name (3-63 of a-z 0-9 . -)")
            return bucket

        @field_validator("prefix")
        @classmethod
        def _prefix(cls, prefix):
            if prefix.startswith("/"):
                raise ValueError(f"prefix {prefix!r}: S3 keys have no leading '/'")
            return prefix

        @field_validator("endpoint_url")
        @classmethod
        def _endpoint(cls, url):
            if url is None:
                return url
            return check_http_url(url, "endpoint_url", "http://host:port or https://host:port",
                                  "use access_key_id/secret_access_key")

        @field_validator("local_path", "local_root", "ca_file")
        @classmethod
        def _absolute(cls, path, info):
            if path is not None and not path.startswith("/"):
                raise ValueError(f"{info.field_name} {path!r} must be an absolute path")
            return path

        @model_validator(mode="after")
        def _consistent(self):
            if (self.access_key_id is None) != (self.secret_access_key is None):
                raise ValueError("give both access_key_id and secret_access_key, or neither (the AWS chain)")
            if self.local_root is not None and self.local_path is None:
                raise ValueError("local_root needs local_path")
            if self.set and self.local_path is None:
                raise ValueError("set: true needs local_path, the glob of the set directories")
            if self.local_root is not None and not self.local_path.startswith(self.local_root.rstrip("/") + "/"):
                raise ValueError(f"local_path {self.local_path!r} is not under local_root {self.local_root!r}")
            if self.ca_file and not self.verify_tls:
                raise ValueError("ca_file is set but verify_tls is false: drop one of them")
            if self.warning is not None and self.critical is not None and self.warning >= self.critical:
                raise ValueError(f"warning must be below critical (got {format_duration(self.warning)} ≥ "
                                 f"{format_duration(self.critical)})")
            return self

    METRICS = (
        MetricSpec("last_success_timestamp_seconds", "seconds",
                   "LastModified of the object the latest successful verification vouched for (the newest local "
                   "backup's copy, else the newest object); 0 = never since the agent started."),
        MetricSpec("newest_age_seconds", "seconds", "Age of the newest object under the prefix."),
        MetricSpec("newest_size_bytes", "bytes", "Size of the newest object under the prefix."),
        MetricSpec("objects", "count", "Objects under the prefix modified within retention_window."),
        MetricSpec("verified", "boolean", "1 when the latest run found the copy good: objects present and, with "
                                          "local_path, the newest local backup there with the same size and its "
                                          "bytes matched by a checksum (0 when compared by size only)."),
        MetricSpec("local_copy_present", "boolean", "1 when the newest local backup (local_path; with set, every "
                                                    "file of the newest set) exists in the bucket."),
    )
    THRESHOLD = Threshold(("newest_age_seconds",), "seconds")

    def __init__(self, options):
        super().__init__(options)
        self._session = None                    # botocore session: the S3 model is loaded once per check
        self._session_lock = threading.Lock()
        self._last_success = 0.0
        self._digests: dict[tuple, Hashed] = {}   # (path, size, mtime, algorithm, parts) → digest, current files

    # --- the run ---------------------------------------------------------------------------------

    def run(self, ctx: CheckContext) -> CheckResult:
        started = ctx.monotonic()
        opts = self.options
        try:
            credentials = self._credentials()
        except (OSError, LookupError) as exc:
            return self._unknown(f"cannot read the S3 credentials: {getattr(exc, 'strerror', None) or exc}", {})
        secrets = [v for v in credentials.values() if v]
        details: dict[str, Any] = {"bucket": opts.bucket, "prefix": opts.prefix, "endpoint": opts.endpoint_url or "AWS"}
        try:
            import botocore.exceptions as errors
        except ImportError:
            return self._unknown("botocore is not installed (pip install 'maint-agent[s3]')", {})
        local = newest_local(opts.local_path) if opts.local_path and not opts.set else None
        client = None
        phase = "connecting"
        try:
            client = _Client(self._botocore_session(), opts, credentials, ctx.timeout, started, ctx.monotonic)
            phase = "listing the prefix"
            now = ctx.wall()
            listing = self._list(client.api, now - opts.retention_window)
            phase = "checking the newest local backup's copy"
            if opts.set:
                copy = self._check_set(client, now, details)
            elif opts.local_path:
                copy = self._check_copy(client, local, now, details)
            else:
                copy = None
        except OutOfTime as exc:
            reason = f"timed out after {format_duration(ctx.timeout)} {phase}" + (f" ({exc})" if str(exc) else "")
            return self._unknown(_scrub(reason, secrets), _scrub(details, secrets))
        except (errors.BotoCoreError, errors.ClientError) as exc:
            status, reason = _classify(exc, errors, client)
            summary = _scrub(f"{self._where()}: {reason}", secrets)
            return CheckResult(status, summary, self._failure_samples(), _scrub(details, secrets))
        except OSError as exc:   # reading the local files
            return self._unknown(_scrub(f"cannot read {exc.filename}: {exc.strerror or exc}", secrets),
                                 _scrub(details, secrets))
        finally:
            if client is not None:
                client.close()
        return _scrub_result(self._verdict(listing, copy, now, details), secrets)

    def _verdict(self, listing: Listing, copy: CopyVerdict | None, now: float, details: dict[str, Any]) -> CheckResult:
        opts = self.options
        details["objects"] = {"scanned": listing.scanned, "matched": listing.matched, "in_window": listing.in_window,
                              "capped": listing.capped}
        statuses, phrases = [Status.OK], []
        samples = [sample("objects", listing.in_window)]
        verified = listing.matched > 0
        vouched_for = None
        if listing.newest is None:
            statuses.append(Status.CRITICAL)
            among = f" among the first {listing.scanned} keys" if listing.capped else ""
            what = f"matching {opts.key_pattern}" if opts.key_pattern else "under the prefix"
            phrases.append(f"no objects {what}{among}")
        else:
            newest = listing.newest
            modified = newest["LastModified"].timestamp()
            age = max(0.0, now - modified)
            samples += [sample("newest_age_seconds", age), sample("newest_size_bytes", newest["Size"])]
            details["newest"] = {"key": newest["Key"], "size_bytes": newest["Size"], "etag": newest.get("ETag"),
                                 "last_modified": newest["LastModified"].isoformat(), "age_seconds": age}
            window = format_duration(opts.retention_window)
            phrases.append(f"newest {self._short(newest['Key'])} {format_size(newest['Size'])}, "
                           f"{format_duration(age)} old; {listing.in_window} in {window}")
            vouched_for = modified
            if newest["Size"] == 0:
                statuses.append(Status.CRITICAL)
                verified = False
                phrases.append("the newest object is empty")
        if opts.min_count is not None and listing.in_window < opts.min_count:
            statuses.append(Status.WARNING)
            phrases.append(f"fewer than min_count {opts.min_count}")
        if listing.capped:
            statuses.append(Status.WARNING)
            phrases.append(f"listing stopped at max_objects {opts.max_objects}: figures cover those keys only")
        if copy is not None:
            statuses.append(copy.status)
            phrases.append(copy.phrase)
            if copy.present is not None:
                samples.append(sample("local_copy_present", 1 if copy.present else 0))
            verified = verified and copy.verified
            vouched_for = copy.modified
        if verified and vouched_for is not None:
            self._last_success = max(self._last_success, vouched_for)
        samples += [sample("verified", 1 if verified else 0),
                    sample("last_success_timestamp_seconds", self._last_success)]
        return CheckResult(worst(*statuses), f"{self._where()}: " + "; ".join(phrases), tuple(samples), details)

    # --- S3 -----------------------------------------------------------------------------------------

    def _list(self, api, cutoff: float) -> Listing:
        """Given a client and the retention window's start, page through the prefix (at most max_objects keys)."""
        opts = self.options
        listing = Listing()
        request = {"Bucket": opts.bucket, "Prefix": opts.prefix}
        while True:
            request["MaxKeys"] = min(1000, opts.max_objects - listing.scanned)
            page = api.list_objects_v2(**request)
            for obj in page.get("Contents", ()):
                listing.scanned += 1
                key = obj["Key"]
                if key.endswith("/") or not self._wanted(key):
                    continue   # a console's "folder" marker, or not a backup file
                listing.matched += 1
                modified = obj["LastModified"].timestamp()
                if modified >= cutoff:
                    listing.in_window += 1
                newest = listing.newest
                if newest is None or (obj["LastModified"], key) > (newest["LastModified"], newest["Key"]):
                    listing.newest = obj
            if not page.get("IsTruncated"):
                return listing
            if listing.scanned >= opts.max_objects:
                listing.capped = True
                return listing
            request["ContinuationToken"] = page["NextContinuationToken"]

    def _wanted(self, key: str) -> bool:
        pattern = self.options.key_pattern
        return pattern is None or fnmatch.fnmatchcase(key[len(self.options.prefix):], pattern)

    def _check_copy(self, client: _Client, local: LocalFile | None, now: float, details: dict[str, Any]) -> CopyVerdict:
        """Given the newest local backup, look for its object and compare size and content."""
        opts = self.options
        if local is None:
            return CopyVerdict(Status.WARNING, f"no local file matches {opts.local_path} to compare")
        key = remote_key(opts.prefix, opts.local_root or local_root_of(opts.local_path), local.path)
        details["local"] = {"path": local.path, "size_bytes": local.size, "mtime": local.mtime, "key": key}
        self._forget_digests({local.path})
        head = self._head(client.api, key)
        if head is None:
            age = max(0.0, now - local.mtime)
            if age < opts.upload_grace:
                return CopyVerdict(Status.OK, f"newest local {os.path.basename(local.path)} not uploaded yet "
                                              f"({format_duration(age)} old, upload_grace "
                                              f"{format_duration(opts.upload_grace)})", present=False)
            return CopyVerdict(Status.CRITICAL, f"newest local backup missing from the bucket: {key}", present=False)
        remote_size = head["ContentLength"]
        modified = head["LastModified"].timestamp()
        details["remote"] = _remote_evidence(key, head)
        if remote_size != local.size:
            return CopyVerdict(Status.CRITICAL, f"size differs for {key}: local {local.size} B, bucket {remote_size} B",
                               present=True)
        integrity = self._integrity(client, key, head, local)
        details["integrity"] = integrity.as_details()
        if integrity.match is False:
            return CopyVerdict(Status.CRITICAL, f"checksum differs for {key}: {integrity.phrase()}", present=True)
        return CopyVerdict(Status.OK, f"local newest present, {integrity.phrase()}", present=True,
                           verified=integrity.match is True, modified=modified)

    def _check_set(self, client: _Client, now: float, details: dict[str, Any]) -> CopyVerdict:
        """Given set mode, compare every file of the newest local set directory with its object."""
        opts = self.options
        directories = set_directories(opts.local_path)
        if not directories:
            return CopyVerdict(Status.WARNING, f"no local set directory matches {opts.local_path} to compare")
        local_set = read_set(directories[0])
        name = local_set.name
        if not local_set.members:
            return CopyVerdict(Status.WARNING, f"the newest local set {name} is empty")
        root = opts.local_root or local_root_of(opts.local_path)
        self._forget_digests({m.path for m in local_set.members})
        rows, missing, differing, compared = [], [], [], []
        for member in local_set.members:
            key = remote_key(opts.prefix, root, member.path)
            row: dict[str, Any] = {"member": member.relpath, "key": key, "size_bytes": member.size}
            rows.append(row)
            head = self._head(client.api, key)
            row["present"] = head is not None
            if head is None:
                missing.append(member)
                continue
            row["remote"] = _remote_evidence(key, head)
            if head["ContentLength"] != member.size:
                differing.append(f"{member.relpath} (size: local {member.size} B, bucket {head['ContentLength']} B)")
                continue
            local = LocalFile(member.path, member.size, member.mtime, member.mtime_ns)
            integrity = self._integrity(client, key, head, local)
            row["integrity"] = integrity.as_details()
            if integrity.match is False:
                differing.append(f"{member.relpath} ({integrity.phrase()})")
            else:
                compared.append((member, integrity, head["LastModified"].timestamp()))
        details["set"] = {"path": local_set.path, "members": rows}
        return self._set_verdict(local_set, missing, differing, compared, now)

    def _set_verdict(self, local_set: BackupSet, missing: list[Member], differing: list[str],
                     compared: list[tuple[Member, Integrity, float]], now: float) -> CopyVerdict:
        opts = self.options
        total, name = len(local_set.members), local_set.name
        if missing:
            newest = max(m.mtime for m in missing)
            if now - newest < opts.upload_grace and not differing:
                return CopyVerdict(Status.OK, f"newest local set {name}: {len(missing)} of {total} members not "
                                              f"uploaded yet (upload_grace {format_duration(opts.upload_grace)})",
                                   present=False)
        problems = []
        if missing:
            problems.append(f"{len(missing)} of {total} members missing from the bucket: "
                            f"{', '.join(m.relpath for m in missing)}")
        if differing:
            count = len(differing)
            problems.append(f"{count} member{' differs' if count == 1 else 's differ'}: {', '.join(differing)}")
        if problems:
            return CopyVerdict(Status.CRITICAL, f"newest local set {name}: " + "; ".join(problems),
                               present=not missing)
        verified = [i for _, i, _ in compared if i.match]
        unproven = [(m, i) for m, i, _ in compared if i.match is None]
        methods = Counter(i.algorithm_name() for i in verified)
        by = ", ".join(f"{algorithm} ×{n}" if n > 1 else algorithm for algorithm, n in sorted(methods.items()))
        phrase = f"newest local set {name}: {total} members present"
        if not unproven:
            phrase += f", verified ({by})"
        else:
            first, integrity = unproven[0]
            if verified:
                phrase += f"; {len(verified)} verified ({by})"
            phrase += (f"; {len(unproven)} size only ({', '.join(m.relpath for m, _ in unproven)}): "
                       f"{integrity.note}")
        return CopyVerdict(Status.OK, phrase, present=True, verified=not unproven,
                           modified=max(modified for _, _, modified in compared))

    def _head(self, api, key: str, **extra) -> dict[str, Any] | None:
        """HEAD with checksums; None when the key does not exist (a 403 stays an error: access denied)."""
        import botocore.exceptions

        try:
            return api.head_object(Bucket=self.options.bucket, Key=key, ChecksumMode="ENABLED", **extra)
        except botocore.exceptions.ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return None
            raise

    def _integrity(self, client: _Client, key: str, head: dict[str, Any], local: LocalFile) -> Integrity:
        if not self.options.verify_checksum:
            return Integrity("size-only", note="verify_checksum is off")
        plan = plan_checksum(head)
        if plan.composite is None:
            plan = plan_checksum(head, self._checksum_type(client.api, key))
        if plan.algorithm is None:
            return Integrity("size-only", note=plan.reason)
        if plan.composite is None:
            return Integrity("size-only", plan.remote, note=f"a multipart {ALGORITHM_NAMES[plan.algorithm]} "
                                                           f"checksum the store does not say is composite or "
                                                           f"full-object")
        try:
            hasher_for(plan.algorithm)
        except ChecksumUnavailable as exc:
            return Integrity("size-only", plan.remote, note=str(exc))
        if plan.algorithm == "MD5":
            digest = self._hash(local, "MD5", (), client).local
            return Integrity("md5-etag", plan.remote, digest, digest == plan.remote)
        method = plan.algorithm.lower()
        if not plan.composite:
            digest = self._hash(local, plan.algorithm, (), client).local
            return Integrity(method, plan.remote, digest, digest == plan.remote)
        parts = self._part_sizes(client, key, plan.parts) if plan.parts else None
        if parts is None or sum(size for size, _ in parts) != local.size:
            return Integrity(f"{method}-composite", plan.remote,
                             note=f"{plan.parts} parts, but the part sizes could not be read: a composite checksum is "
                                  f"not comparable without them")
        hashed = self._hash(local, plan.algorithm, tuple(size for size, _ in parts), client)
        mismatched = next((n for n, ((_, remote), mine) in enumerate(zip(parts, hashed.parts), 1)
                           if remote is not None and remote != mine), None)
        return Integrity(f"{method}-composite", plan.remote, hashed.local, hashed.local == plan.remote,
                         note=f"{len(parts)} parts", mismatched_part=mismatched)

    def _checksum_type(self, api, key: str) -> str | None:
        """COMPOSITE or FULL_OBJECT from GetObjectAttributes; None when the store does not say."""
        import botocore.exceptions

        try:
            answer = api.get_object_attributes(Bucket=self.options.bucket, Key=key, ObjectAttributes=["Checksum"])
        except botocore.exceptions.ClientError:
            return None
        return answer.get("Checksum", {}).get("ChecksumType")

    def _part_sizes(self, client: _Client, key: str, count: int) -> list[tuple[int, str | None]] | None:
        """Each part's (size, S3 checksum or None): GetObjectAttributes ObjectParts, else one HEAD per part."""
        import botocore.exceptions

        parts: list[tuple[int, str | None]] = []
        request = {"Bucket": self.options.bucket, "Key": key, "ObjectAttributes": ["ObjectParts"], "MaxParts": 1000}
        try:
            while True:
                answer = client.api.get_object_attributes(**request).get("ObjectParts") or {}
                for part in answer.get("Parts") or ():
                    value = next((part[f"Checksum{n}"] for n in ALGORITHMS if part.get(f"Checksum{n}")), None)
                    parts.append((part["Size"], value))
                if not answer.get("IsTruncated"):
                    break
                request["PartNumberMarker"] = answer["NextPartNumberMarker"]
        except botocore.exceptions.ClientError:
            parts = []   # not implemented by this store, or not permitted: HEAD each part instead
        if len(parts) == count:
            return parts
        sizes = []
        for number in range(1, count + 1):
            head = self._head(client.api, key, PartNumber=number)
            if head is None:
                return None
            sizes.append((head["ContentLength"], None))
        return sizes

    # --- the local file --------------------------------------------------------------------------------

    def _hash(self, local: LocalFile, algorithm: str, part_sizes: tuple[int, ...], client: _Client) -> Hashed:
        """Digest of the local file (or S3's composite over part_sizes); kept while the file is unchanged."""
        key = (local.path, local.size, local.mtime_ns, algorithm, part_sizes)
        if key in self._digests:
            return self._digests[key]
        make = hasher_for(algorithm)
        bounds = part_sizes or (local.size,)
        digests = []
        with open(local.path, "rb") as fh:
            for size in bounds:
                hasher, left = make(), size
                while left > 0:
                    if client.left() <= 0:
                        raise OutOfTime(f"after hashing {format_size(local.size - sum(bounds[len(digests):]))} "
                                        f"of the local file")
                    chunk = fh.read(min(HASH_CHUNK_BYTES, left))
                    if not chunk:
                        raise OSError(0, "file shrank while being read", local.path)
                    hasher.update(chunk)
                    left -= len(chunk)
                digests.append(hasher.digest())
        if algorithm == "MD5":
            hashed = Hashed(binascii.hexlify(digests[0]).decode())
        elif part_sizes:
            hashed = Hashed(b64(composite(digests, algorithm)), tuple(b64(d) for d in digests))
        else:
            hashed = Hashed(b64(digests[0]))
        self._digests[key] = hashed
        return hashed

    def _forget_digests(self, paths: set[str]) -> None:
        """Keep the digests of the files compared in this run only: memory stays bounded by one set."""
        self._digests = {k: v for k, v in self._digests.items() if k[0] in paths}

    # --- helpers -----------------------------------------------------------------------------------------

    def _credentials(self) -> dict[str, str]:
        """Explicit keys revealed now (a rotated file is picked up), or {} for the standard AWS chain."""
        opts = self.options
        if opts.access_key_id is None:
            return {}
        return {"aws_access_key_id": Secret(opts.access_key_id).reveal(),
                "aws_secret_access_key": Secret(opts.secret_access_key).reveal()}

    def _botocore_session(self):
        with self._session_lock:
            if self._session is None:
                import botocore.session

                self._session = botocore.session.get_session()
            return self._session

    def _where(self) -> str:
        return f"s3://{self.options.bucket}/{self.options.prefix}"

    def _short(self, key: str) -> str:
        return key[len(self.options.prefix):] or key

    def _failure_samples(self) -> tuple[Sample, ...]:
        return sample("verified", 0), sample("last_success_timestamp_seconds", self._last_success)

    def _unknown(self, reason: str, details: dict[str, Any]) -> CheckResult:
        return CheckResult(Status.UNKNOWN, f"{self._where()}: {reason}", self._failure_samples(), details)


def _classify(exc: Exception, errors, client: _Client | None) -> tuple[Status, str]:
    """Given a botocore error, return the status and an operator's reason (no URL, no query string, no key)."""
    connect = format_duration(client.connect) if client else "?"
    if isinstance(exc, errors.ConnectTimeoutError):
        return Status.CRITICAL, f"unreachable: connect timed out after {connect}"
    if isinstance(exc, errors.ReadTimeoutError):
        if client is None:
            return Status.UNKNOWN, "connected, but no answer"
        attempts = f"{client.attempts} attempt{'s' * (client.attempts != 1)}"
        cut = ", the last one cut to fit the check's timeout" if client.cut else ""
        return Status.UNKNOWN, (f"connected, but no answer: {attempts} in {format_duration(client.elapsed())} "
                                f"(read timeout {format_duration(client.read)}{cut})")
    if isinstance(exc, (errors.EndpointConnectionError, errors.SSLError, errors.ConnectionClosedError,
                        errors.ProxyConnectionError)):
        cause = _caused_by(exc, OSError)
        reason = describe_error(cause, client.connect) if cause and client else "cannot connect"
        return Status.CRITICAL, f"unreachable: {reason}"
    if isinstance(exc, (errors.NoCredentialsError, errors.PartialCredentialsError)):
        return Status.UNKNOWN, ("no AWS credentials (none in the environment, ~/.aws, or instance metadata): set "
                                "access_key_id/secret_access_key or the daemon's AWS chain")
    if isinstance(exc, errors.ClientError):
        error = exc.response.get("Error", {})
        code, message = error.get("Code", "?"), error.get("Message", "")
        http = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        text = f"{code}: {message}" if message else code
        if code == "NoSuchBucket":
            return Status.CRITICAL, "the bucket does not exist"
        if code in DENIED_CODES or http == 403:
            return Status.UNKNOWN, f"access denied ({text}) during {exc.operation_name}"
        return Status.UNKNOWN, f"S3 error during {exc.operation_name} (HTTP {http}): {text}"
    return Status.UNKNOWN, f"{type(exc).__name__}: {exc}"


def _scrub(value, secrets: list[str]):
    """Replace every secret in a string, or in the strings of nested dicts/lists, by ***."""
    if isinstance(value, str):
        for secret in secrets:
            value = value.replace(secret, "***")
        return value
    if isinstance(value, dict):
        return {k: _scrub(v, secrets) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_scrub(v, secrets) for v in value)
    return value


def _scrub_result(result: CheckResult, secrets: list[str]) -> CheckResult:
    if not secrets:
        return result
    return CheckResult(result.status, _scrub(result.summary, secrets), result.samples, _scrub(result.details, secrets))
