"""The seed's daily/weekly/monthly/quarterly checklists (stub: completed by issue 6)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from agent.fields import Name


class ChecklistItem(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: Name
    title: str
    checks: tuple[Name, ...] = Field((), description="automated: done when these checks ran in the period")


class ChecklistsSection(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    daily: tuple[ChecklistItem, ...] = ()
    weekly: tuple[ChecklistItem, ...] = ()
    monthly: tuple[ChecklistItem, ...] = ()
    quarterly: tuple[ChecklistItem, ...] = ()
