"""Report schedules, the outbox and (re)sending (stub: completed by issue 6). Rendering is agent/report.py."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from agent.fields import Name


class ReportSection(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Name
    period: Literal["day", "week", "month", "quarter"]
    schedule: str = Field(description="a schedule name or calendar spec")
    recipients: tuple[str, ...] = Field(min_length=1)
    subject: str = "[maint-agent] {host} {period} report {start}"
