"""The `archive:` section: where and when the daily history goes to S3 (the upload itself is agent/store/archive.py)."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from agent.plugin.fields import CalendarText, PositiveDuration, SecretStr, check_http_url

_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")


class ArchiveSection(BaseModel):
    """`archive:` — where and when the daily history goes to S3 (or MinIO, Ceph, any S3 API)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = Field(True, description="false keeps the section but uploads nothing")
    bucket: str = Field(description="bucket name")
    prefix: str = Field("maint-agent", description="keys: PREFIX/host=H/date=YYYY-MM-DD/{runs,actions,log}.jsonl.gz")
    endpoint_url: str | None = Field(
        None, description="http(s)://host:port of MinIO, Ceph or another S3 API; default: AWS")
    region: str | None = Field(None, description="default: the AWS chain's region (AWS_REGION, ~/.aws/config)")
    addressing_style: Literal["auto", "path", "virtual"] = Field(
        "auto", description="path for most MinIO/Ceph setups without wildcard DNS")
    access_key_id: SecretStr | None = Field(
        None, description="a secret reference; default: the standard AWS credential chain")
    secret_access_key: SecretStr | None = Field(None, description="a secret reference, with access_key_id")
    at: CalendarText = Field("00:45", description="calendar spec of the daily upload of the days before (local time)")
    max_days_per_run: int = Field(
        14, ge=1, le=366, description="days uploaded per run at most, oldest first (the rest follow next run); "
                                      "also how far back the first run reaches")
    connect_timeout: PositiveDuration = Field(5.0, description="per request attempt")
    read_timeout: PositiveDuration = Field(60.0, description="per request attempt (a day's upload is one PUT per "
                                                             "object)")

    @field_validator("bucket")
    @classmethod
    def _bucket(cls, bucket: str) -> str:
        if not _BUCKET_RE.match(bucket) or ".." in bucket:
            raise ValueError(f"bucket {bucket!r} is not a valid S3 bucket name (3-63 of a-z 0-9 . -)")
        return bucket

    @field_validator("prefix")
    @classmethod
    def _prefix(cls, prefix: str) -> str:
        if prefix.startswith("/"):
            raise ValueError(f"prefix {prefix!r}: S3 keys have no leading '/'")
        return prefix.rstrip("/")

    @field_validator("endpoint_url")
    @classmethod
    def _endpoint(cls, url: str | None) -> str | None:
        if url is None:
            return url
        return check_http_url(url, "endpoint_url", "http://host:port or https://host:port",
                              "use access_key_id/secret_access_key")

    @model_validator(mode="after")
    def _pair(self):
        if (self.access_key_id is None) != (self.secret_access_key is None):
            raise ValueError("give both access_key_id and secret_access_key, or neither (the AWS chain)")
        return self
