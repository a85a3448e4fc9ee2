"""The models of agent.yaml: the sections every file has, the optional sections by key (their models live in
this package, `smtp:` with the mailer), the top-level `Config`, and the JSON Schema built from them. Check and
action entries are validated by their own types' `Options` (checks/, actions/); `load` reads a file through
these models and adds the checks only the whole file can show.
"""

from __future__ import annotations

import functools
import socket
from typing import TYPE_CHECKING, Annotated, Any, Literal, Union
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, create_model, field_validator

from agent.plugin.address import is_loopback, split_target
from agent.plugin.calendar import parse_calendar
from agent.plugin.paths import DEFAULT_STATE_DIR
from agent.plugin.fields import (
    AbsolutePath, CalendarText, Duration, HostPort, LongDuration, Name, PositiveDuration, SecretStr,
)
from agent.config.yamlsrc import ConfigError
from actions import ACTION_TYPES
from agent.config.checklists import ChecklistsSection
from checks import CHECK_TYPES

if TYPE_CHECKING:   # imported when a file has the section, or for the schema (`schema_model`)
    from agent.config.archive import ArchiveSection
    from agent.maintenance import Recurring
    from agent.plugin.mailer import SmtpSection
    from agent.config.reports import ReportSection

DEFAULT_SCHEDULES = {
    "daily": "02:00",
    "weekly": "mon 03:00",
    "monthly": "1 04:00",
    "quarterly": "jan,apr,jul,oct 1 05:00",
}


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AgentSection(_Section):
    hostname: str = Field(default_factory=socket.gethostname, description="default: the host name")
    state_dir: str = Field(DEFAULT_STATE_DIR, description="SQLite store and state; relative to the config file")
    timezone: str | None = Field(None, description="IANA zone for calendar schedules; default: the host's local zone")
    workers: int = Field(4, ge=1, le=64, description="checks running at once")
    check_timeout: PositiveDuration = Field(30.0, description="default per-check timeout")
    default_interval: PositiveDuration = Field(60.0, description="interval of a check with neither every nor schedule")
    shutdown_grace: Duration = Field(10.0, description="on SIGTERM or Ctrl-C, how long running checks and "
                                                       "actions may finish; their child processes still "
                                                       "running then are killed")
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    dry_run: bool = Field(False, description="every action is evaluated, audited and notified as 'would run'; "
                                             "nothing executes (also `maint-agent run --dry-run`)")

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value):
        if value is not None:
            try:
                ZoneInfo(value)
            except (ZoneInfoNotFoundError, ValueError):
                raise ValueError(f"unknown time zone {value!r} (use an IANA name such as Europe/Berlin)") from None
        return value


class BasicAuth(_Section):
    username: str
    password: SecretStr


class HttpSection(_Section):
    listen: HostPort = Field("127.0.0.1:9469", description="address:port for /metrics, /healthz and the status "
                                                           "page ([::1]:9469 for IPv6)")
    basic_auth: BasicAuth | None = None
    web_config: AbsolutePath | None = Field(
        None, description="a Prometheus exporter-toolkit web config file (the one node_exporter's "
                          "--web.config.file takes): TLS, client certificates, bcrypt basic_auth_users, headers; "
                          "re-read when it or a certificate changes")
    healthz_auth: bool = Field(False, description="require the basic auth of /metrics for /healthz too (a "
                                                  "required client certificate always applies)")
    max_connections: int = Field(64, ge=1, le=1024, description=(
        "connections open at once; at the limit the one waiting longest for its request is closed to make "
        "room (every slot busy answering: the new one is closed). LimitNOFILE= in the unit allows for it"))
    header_timeout: Duration = Field(5.0, gt=0, le=60, description=(
        "a connection's TLS handshake, request line and headers must be in within this, in total (a kept-alive "
        "connection gets as long after each reply); request line and headers may take 16 KiB (431 beyond)"))
    ui: bool | None = Field(None, description="the read-only status page on / (checks, history charts, actions, "
                                              "maintenance log, checklists), behind the same TLS and auth as "
                                              "/metrics; default: on when `listen` is a loopback address or "
                                              "basic_auth or web_config is set. It shows check summaries and log "
                                              "entries: on a fleet host serve it only behind authentication")

    @property
    def status_page(self) -> bool:
        """Whether / serves the status page: as configured, else only where nobody unauthenticated can reach it."""
        if self.ui is not None:
            return self.ui
        return self.basic_auth is not None or self.web_config is not None or is_loopback(split_target(self.listen)[0])

    @field_validator("web_config")
    @classmethod
    def _web_config(cls, value):
        """Load the web config with the agent's config, so its errors (with its own file and line) stop a start."""
        from agent.plugin.fields import secrets_are_offline
        if value is not None and secrets_are_offline() and not _readable(value):
            return value   # offline: the web config holds TLS keys and password hashes, like a secret file
        if value is not None:
            from agent.config.web import load_web_config
            try:
                load_web_config(value)
            except ConfigError as exc:
                raise ValueError("; ".join(str(issue) for issue in exc.issues)) from None
        return value


def _readable(path: str) -> bool:
    import os
    return os.access(path, os.R_OK)


class Retention(_Section):
    raw: LongDuration = Field(90 * 86400.0, description="keep every check run this long")
    rollups: LongDuration = Field(730 * 86400.0, description="keep daily per-check rollups this long")


class StoreSection(_Section):
    path: str | None = Field(None, description="default: <state_dir>/maint-agent.db")
    retention: Retention = Retention()
    maintenance_at: CalendarText = Field("00:15", description="calendar spec of the daily rollup and prune")


class MaintenanceWindowSection(_Section):
    """Recurring planned work: checks still run and are stored, their actions and notifications are held and
    the shipped alert rules stay quiet (`maint-agent maintenance start` opens a one-off window)."""

    name: Name = Field(description="the window's name, as the maintenance log and `maintenance list` show it")
    at: CalendarText = Field(description="when it begins: a calendar spec such as 'sun 02:00' or '1 03:30'")
    duration: Duration = Field(gt=0, description="how long it lasts, e.g. 2h; shorter than the time between two "
                                                 "starts")
    checks: tuple[Name, ...] | None = Field(None, min_length=1, description="the checks it covers; default: every "
                                                                           "check")
    reason: str = Field("", description="why, for the maintenance log and the report, e.g. 'weekly ANALYZE'")

    def recurring(self) -> "Recurring":
        from agent.maintenance import Recurring
        return Recurring(self.name, parse_calendar(self.at), self.duration, self.checks, self.reason)


def _tagged_union(types: dict) -> Any:
    """The options models of every registered type, told apart by `type:`."""
    options = tuple(cls.Options for cls in types.values())
    return Annotated[Union[options], Field(discriminator="type")] if len(options) > 1 else options[0]


@functools.cache
def check_adapter() -> TypeAdapter:
    """The union of every check type (importing them all): only for reporting a missing or unknown `type:`."""
    return TypeAdapter(_tagged_union(CHECK_TYPES))


@functools.cache
def action_adapter() -> TypeAdapter:
    """The union of every action type, for reporting a missing or unknown `type:`."""
    return TypeAdapter(_tagged_union(ACTION_TYPES))


class Sections(_Section):
    """The sections every file has (with their defaults), validated first. The optional sections below
    (`OPTIONAL_SECTIONS`) are validated one by one, their modules imported only when the file has them;
    check and action entries are validated one by one by their type."""

    version: Literal[1] = Field(1, description="config schema version")
    include: tuple[str, ...] = Field((), description="more files, by glob relative to this file (e.g. "
                                                     "[\"conf.d/*.yaml\"]), each adding checks:, actions:, reports: "
                                                     "and checklists: entries; sorted, re-read on SIGHUP")
    agent: AgentSection = Field(default_factory=AgentSection)
    http: HttpSection = HttpSection()
    store: StoreSection = StoreSection()
    schedules: dict[Name, CalendarText] = Field(default_factory=lambda: dict(DEFAULT_SCHEDULES),
                                                description="named calendar specs; merged over " + str(DEFAULT_SCHEDULES))
    maintenance: tuple[MaintenanceWindowSection, ...] = Field(
        (), description="recurring maintenance windows, e.g. every Sunday 02:00 for 2h")

    @field_validator("schedules")
    @classmethod
    def _merge_defaults(cls, value):
        return {**DEFAULT_SCHEDULES, **value}


class Config(Sections):
    """The whole file. Built without validation from parts already validated (`model_construct`), so
    the union of all check types is compiled only for `config schema`."""

    # (the docstring is the schema's description.) The optional sections' types and the unions of every
    # check and action type are resolved only by `schema_model()`: a start imports only what its file uses
    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)

    smtp: SmtpSection | None = Field(None, description="mail server for reports and email notifications")
    reports: tuple[ReportSection, ...] = Field((), description="maintenance reports emailed on a schedule")
    checklists: ChecklistsSection = Field(default_factory=ChecklistsSection.model_construct,
                                          description="the daily/weekly/monthly/quarterly maintenance checklists")
    archive: ArchiveSection | None = Field(None, description="daily upload of the history to S3")
    actions: tuple[ActionConfig, ...] = ()
    checks: tuple[CheckConfig, ...] = ()

    def model_dump(self, **kwargs) -> dict[str, Any]:
        schema_model()   # serialising needs every type resolved (`config show`)
        return super().model_dump(**kwargs)

    def model_dump_json(self, **kwargs) -> str:
        schema_model()
        return super().model_dump_json(**kwargs)


def _smtp() -> Any:
    from agent.plugin.mailer import SmtpSection
    return SmtpSection | None


def _reports() -> Any:
    from agent.config.reports import ReportSection
    return tuple[ReportSection, ...]


def _archive() -> Any:
    from agent.config.archive import ArchiveSection
    return ArchiveSection | None


OPTIONAL_SECTIONS = {"smtp": _smtp, "reports": _reports, "checklists": lambda: ChecklistsSection, "archive": _archive}
"""Top-level sections most hosts leave out: key → the section's type (importing its module)."""


@functools.cache
def section_model(key: str) -> type[BaseModel]:
    """A model of the one optional section `key`, so its errors read as they would for the whole file."""
    return create_model("Sections", __base__=_Section, **{key: (OPTIONAL_SECTIONS[key](), Config.model_fields[key])})


@functools.cache
def schema_model() -> type[Config]:
    """`Config` with every type resolved (importing every section, check and action module), for the schema and docs."""
    from agent.config.archive import ArchiveSection
    from agent.plugin.mailer import SmtpSection
    from agent.config.reports import ReportSection
    Config.model_rebuild(_types_namespace={
        "SmtpSection": SmtpSection, "ReportSection": ReportSection, "ArchiveSection": ArchiveSection,
        "ChecklistsSection": ChecklistsSection, "CheckConfig": _tagged_union(CHECK_TYPES),
        "ActionConfig": _tagged_union(ACTION_TYPES)})
    return Config


def json_schema() -> dict[str, Any]:
    """The JSON Schema of agent.yaml, from the same models that validate it."""
    schema = schema_model().model_json_schema(by_alias=True)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "maint-agent configuration (agent.yaml)"
    return schema
