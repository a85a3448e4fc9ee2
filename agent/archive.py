"""Daily upload of the previous day's history to S3 as JSONL (stub: completed by issue 8)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class ArchiveSection(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    bucket: str
    prefix: str = Field("maint-agent", description="keys: PREFIX/host=H/date=YYYY-MM-DD/…")
