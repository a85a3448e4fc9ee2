"""The `reports:` section of the config: its model and its second-pass checks.

Below the config loader (agent.config.load imports it, never the other way round) and apart from the
outbox and delivery (agent.reports.delivery) and the report itself (agent.reports.build), which read the loaded
config.
"""

from __future__ import annotations

import difflib
import re
import string
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from agent.plugin.calendar import CalendarSpec, CalendarSpecError, parse_calendar
from agent.plugin.fields import Name, PositiveDuration, SecretStr
from agent.plugin.mailer import EmailAddress

SUBJECT_PLACEHOLDERS = ("host", "period", "label", "start", "end", "worst", "report")
PERIOD_SCHEDULES = {"day": "daily", "week": "weekly", "month": "monthly", "quarter": "quarterly"}


def _subject_template(text: str) -> str:
    """Only the documented placeholders, no attribute access or format specs, and one line."""
    if any(c in text for c in "\r\n"):
        raise ValueError("a subject is one line: line breaks are not allowed (header injection)")
    try:
        parts = list(string.Formatter().parse(text))
    except ValueError as exc:
        raise ValueError(f"invalid subject template {text!r}: {exc} (write {{{{ and }}}} for literal braces)") \
            from None
    for _, field, spec, conversion in parts:
        if field is None:
            continue
        if field not in SUBJECT_PLACEHOLDERS or spec or conversion:
            raise ValueError(f"unknown placeholder {{{field}{'!' + conversion if conversion else ''}"
                             f"{':' + spec if spec else ''}}} in subject; known: "
                             + ", ".join(f"{{{p}}}" for p in SUBJECT_PLACEHOLDERS))
    return text


def _schedule_text(text: str) -> str:
    """A calendar spec, or what could be a name from `schedules:` (checked against them in the second pass)."""
    try:
        parse_calendar(text)
    except CalendarSpecError as exc:
        if not re.fullmatch(r"[a-z0-9][a-z0-9_.-]{0,62}", text):
            raise ValueError(f"not a schedule name nor a calendar spec: {exc}") from None
    return text


class ReportUpload(BaseModel):
    """Where the JSON rendering of each report goes for a fleet-wide archive."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    bucket: str = Field(min_length=3, max_length=63, description="S3 bucket")
    prefix: str = Field("maint-agent/reports", description="keys: PREFIX/host=H/REPORT/LABEL.json")
    region: str | None = Field(None, description="default: the SDK's (AWS_REGION, ~/.aws/config)")
    endpoint_url: str | None = Field(None, description="an S3-compatible endpoint (MinIO, Ceph); default: AWS")
    access_key_id: SecretStr | None = Field(None, description="default: the SDK's credential chain")
    secret_access_key: SecretStr | None = Field(None, description="with access_key_id")
    timeout: PositiveDuration = Field(30.0, description="connect and read timeout of the upload")

    @model_validator(mode="after")
    def _key_pair(self):
        if (self.access_key_id is None) != (self.secret_access_key is None):
            raise ValueError("give both access_key_id and secret_access_key, or neither")
        return self


class ReportSection(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Name = Field(description="the report's name: `maint-agent report --report NAME`, the outbox, file names")
    period: Literal["day", "week", "month", "quarter"] = Field(
        description="the local calendar period reported: day, ISO week (from Monday), month, quarter")
    schedule: Annotated[str, AfterValidator(_schedule_text)] | None = Field(
        None, description="when to send the last complete period: a name from `schedules:` or a calendar spec; "
                          "default: the schedule named after the period (daily, weekly, monthly, quarterly)")
    recipients: tuple[EmailAddress, ...] = Field(min_length=1, description="To: addresses")
    subject: Annotated[str, AfterValidator(_subject_template)] = Field(
        "[maint-agent] {host} {period} report {label}: {worst}",
        description="placeholders: " + ", ".join(f"{{{p}}}" for p in SUBJECT_PLACEHOLDERS)
                    + " (label: 2026-W45, 2026-11…; start/end: first and last day)")
    attach_csv: bool = Field(False, description="attach every figure as CSV (the mail always has text and HTML)")
    s3_upload: ReportUpload | None = Field(None, description="also upload each report as JSON to S3")

    @property
    def schedule_name(self) -> str:
        return self.schedule or PERIOD_SCHEDULES[self.period]


def report_schedule(section: ReportSection, schedules: dict[str, str]) -> CalendarSpec:
    """The calendar a report fires on; raise CalendarSpecError when its schedule is neither a name
    from `schedules:` nor a spec (config validation reports that first)."""
    return parse_calendar(schedules.get(section.schedule_name, section.schedule_name))


def report_issues(reports: tuple[ReportSection, ...], schedules: dict[str, str],
                  smtp_configured: bool) -> list[tuple[tuple, str]]:
    """Given the `reports:` entries, the `schedules:` and whether an `smtp:` section exists, return the
    second-pass problems as (YAML path, message): duplicate names, a schedule that is neither a configured
    name nor a calendar spec, reports without an `smtp:` section."""
    issues: list[tuple[tuple, str]] = []
    seen: set[str] = set()
    for index, report in enumerate(reports):
        if report.name in seen:
            issues.append((("reports", index, "name"), f"duplicate report name '{report.name}'"))
        seen.add(report.name)
        try:
            report_schedule(report, schedules)
        except CalendarSpecError:
            hint = difflib.get_close_matches(report.schedule_name, schedules, n=1)
            issues.append((("reports", index, "schedule"),
                           f"no schedule named '{report.schedule_name}' in schedules: ({', '.join(schedules)})"
                           + (f" (did you mean '{hint[0]}'?)" if hint else "")))
    if reports and not smtp_configured:
        issues.append((("reports",), "reports are emailed: add an smtp: section"))
    return issues
