"""The `checklists:` section: the daily, weekly, monthly and quarterly maintenance checklists (their state for a
period is agent/reports/checklist.py)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from agent.plugin.fields import Name

CHECKLIST_PERIODS = {"daily": "day", "weekly": "week", "monthly": "month", "quarterly": "quarter"}
"""Checklist name (config key, CLI word, `weekly.` prefix of a tick) → period."""


class ChecklistItem(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)   # built when a config has checklists

    id: Name = Field(description="the item's key; ticked as `<checklist>.<id>`, e.g. weekly.security-review")
    title: str = Field(min_length=1, description="what is to be done, as the checklist and the report show it")
    checks: tuple[Name, ...] = Field((), description="automated: done when each of these checks ran in the period; "
                                                     "its status is the worst result they had meanwhile")
    manual: bool = Field(False, description="ticked by a person with `maint-agent checklist done`; "
                                            "implied when `checks` is empty")

    @model_validator(mode="after")
    def _one_kind(self) -> "ChecklistItem":
        if self.manual and self.checks:
            raise ValueError("an item is either bound to checks or manual, not both")
        return self

    @property
    def kind(self) -> str:
        return "automated" if self.checks else "manual"


class ChecklistsSection(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)

    daily: tuple[ChecklistItem, ...] = Field((), description="items for each local day")
    weekly: tuple[ChecklistItem, ...] = Field((), description="items for each week, Monday 00:00 to Monday 00:00")
    monthly: tuple[ChecklistItem, ...] = Field((), description="items for each calendar month")
    quarterly: tuple[ChecklistItem, ...] = Field((), description="items for each quarter (from Jan, Apr, Jul, Oct 1)")

    @field_validator("daily", "weekly", "monthly", "quarterly")
    @classmethod
    def _unique_ids(cls, items: tuple[ChecklistItem, ...]) -> tuple[ChecklistItem, ...]:
        """Ticks are keyed by `<checklist>.<id>`: two items with one id could not be told apart."""
        seen: set[str] = set()
        for item in items:
            if item.id in seen:
                raise ValueError(f"duplicate item id '{item.id}'")
            seen.add(item.id)
        return items

    def items(self, checklist: str) -> tuple[ChecklistItem, ...]:
        """Given a checklist name (daily…quarterly), return its items; raise KeyError for another name."""
        if checklist not in CHECKLIST_PERIODS:
            raise KeyError(checklist)
        return getattr(self, checklist)
