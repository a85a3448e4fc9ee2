"""agent.yaml → a validated, frozen Config (the single source of truth for defaults and schema).

Validation runs in two passes, like borgmatic: the first checks each part's
shape and types (every error at once, each with file:line and YAML path), the
second checks what only makes sense across fields (duplicate names, warning
beyond critical, unknown schedule names).
"""

from __future__ import annotations

import functools
import socket
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, Union, get_args
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    AfterValidator, BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, create_model, field_validator,
)

from agent.plugin.address import is_loopback, split_target
from agent.plugin.calendar import CalendarSpec, CalendarSpecError, next_fire, parse_calendar
from agent.plugin.paths import DEFAULT_STATE_DIR, store_path
from agent.config.triggers import Calendar, Interval, Trigger
from agent.plugin.fields import AbsolutePath, Duration, HostPort, LongDuration, Name, PositiveDuration, SecretStr, is_reference
from agent.timefmt import local_zone
from agent.plugin.units import format_duration, format_value
from agent.config.includes import MergedSource, merge_includes
from agent.config.yamlsrc import ConfigError, ConfigIssue, Loc, load_yaml, read_text
from actions import ACTION_TYPES
from actions.base import ActionOptions
from agent.config.checklists import ChecklistsSection
from checks import CHECK_TYPES
from checks.base import CheckOptions

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


def _parse_spec(text: str) -> CalendarSpec:
    try:
        return parse_calendar(text)
    except CalendarSpecError as exc:
        raise ValueError(f"invalid calendar spec {text!r}: {exc}") from None


def _check_spec(text: str) -> str:
    _parse_spec(text)
    return text


CalendarText = Annotated[str, AfterValidator(_check_spec)]
"""A calendar spec validated per value, so an error names the schedule's own key and line."""


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
    maintenance_at: str = Field("00:15", description="calendar spec of the daily rollup and prune")

    @field_validator("maintenance_at")
    @classmethod
    def _calendar(cls, value):
        _parse_spec(value)
        return value


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
def _check_adapter() -> TypeAdapter:
    """The union of every check type (importing them all): only for reporting a missing or unknown `type:`."""
    return TypeAdapter(_tagged_union(CHECK_TYPES))


@functools.cache
def _action_adapter() -> TypeAdapter:
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
def _section_model(key: str) -> type[BaseModel]:
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


@dataclass(frozen=True)
class LoadedConfig:
    """A valid config with what was derived from it once: paths, zone, triggers."""

    path: Path
    config: Config
    triggers: dict[str, Trigger]
    included: tuple[Path, ...] = ()                                   # files read through `include:`
    origins: dict[tuple[str, ...], str] = field(default_factory=dict)  # (section, name) → `file:line` of an
                                                                       # entry from an included file

    @property
    def checks(self) -> tuple[CheckOptions, ...]:
        return self.config.checks

    @property
    def actions(self) -> dict[str, ActionOptions]:
        return {action.name: action for action in self.config.actions}

    @property
    def db_path(self) -> Path:
        return store_path(self.path, self.config.agent.state_dir, self.config.store.path)

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.config.agent.timezone) if self.config.agent.timezone else local_zone()

    def timeout_for(self, check: CheckOptions) -> float:
        return check.timeout if check.timeout is not None else self.config.agent.check_timeout

    def summary(self) -> str:
        enabled = [c for c in self.checks if c.enabled]
        calendars = sum(isinstance(self.triggers[c.name], Calendar) for c in enabled)
        disabled = len(self.checks) - len(enabled)
        return (f"{self.path}: OK: {len(enabled)} checks ({len(enabled) - calendars} interval, {calendars} calendar"
                + (f"; {disabled} disabled" if disabled else "") + "), "
                + (f"{len(self.included)} included file{'s' * (len(self.included) != 1)}, " if self.included else "")
                + f"store {self.db_path}, "
                f"listen {self.config.http.listen}")


def load_config(path: str | Path) -> LoadedConfig:
    """Read and validate a config file; raise ConfigError listing every problem."""
    path = Path(path)
    return parse_config(read_text(path), str(path))


def parse_config(text: str, file: str) -> LoadedConfig:
    plain = load_yaml(text, file)
    if plain.data is None:
        plain.data = {}
    if not isinstance(plain.data, dict):
        raise ConfigError([plain.issue((), "the config must be a mapping of sections (agent:, checks:, …)")])
    issues: list[ConfigIssue] = []
    source = merge_includes(plain, issues)   # conf.d entries appended; their errors point into their files
    data = source.data
    top = {k: v for k, v in data.items()
           if k not in ("checks", "actions", "maintenance", "include", *OPTIONAL_SECTIONS)}   # include: merged above
    sections = _validate(Sections, top, (), source, issues)
    optional = {}
    for key in OPTIONAL_SECTIONS.keys() & data.keys():
        section = _validate(_section_model(key), {key: data[key]}, (), source, issues)
        if section is not None:
            optional[key] = getattr(section, key)
    config = None if sections is None else Config.model_construct(
        **{name: getattr(sections, name) for name in Sections.model_fields}, **optional)
    checks = _validate_list(data, "checks", CHECK_TYPES, _check_adapter, source, issues)
    actions = _validate_list(data, "actions", ACTION_TYPES, _action_adapter, source, issues)
    windows = _validate_entries(data, "maintenance", MaintenanceWindowSection, source, issues)
    triggers = _logical_pass(config, checks, source, issues)
    _check_actions(config, checks, actions, source, issues)
    _check_maintenance(windows, checks, source, issues)
    if config is not None and config.reports:
        from agent.config.reports import report_issues
        issues.extend(source.issue(loc, message)
                      for loc, message in report_issues(config.reports, config.schedules, config.smtp is not None))
    if issues:
        raise ConfigError(sorted(issues, key=lambda issue: issue.file != file))   # the main file's first
    final = config.model_copy(update={"include": tuple(data.get("include") or ()), "checks": tuple(checks),
                                      "actions": tuple(actions), "maintenance": tuple(windows)})
    return LoadedConfig(Path(file).absolute(), final, triggers, tuple(source.included), _origins(final, source))


def _origins(config: Config, source: MergedSource) -> dict[tuple[str, ...], str]:
    """Where each entry that came from an included file was written, for `config show`."""
    origins = {}
    for section in ("checks", "actions", "reports"):
        for index, entry in enumerate(getattr(config, section)):
            if (section, index) in source.origins:
                origins[(section, entry.name)] = source.where((section, index))
    for period in ("daily", "weekly", "monthly", "quarterly"):
        for index, item in enumerate(getattr(config.checklists, period)):
            if ("checklists", period, index) in source.origins:
                origins[("checklists", period, item.id)] = source.where(("checklists", period, index))
    return origins


def _close_matches(word: str, candidates) -> list[str]:
    """The candidate `word` probably meant, for "did you mean" (difflib is imported only when there is an error)."""
    import difflib
    return difflib.get_close_matches(word, candidates, n=1)


def _validate_list(data: dict, key: str, types: dict, union, source: MergedSource, issues: list[ConfigIssue]) -> list:
    """Validate `checks:` or `actions:` entry by entry, each by its own type's model."""
    raw = data.get(key) or []
    if not isinstance(raw, list):
        issues.append(source.issue((key,), f"must be a list of {key}"))
        return []
    entries = []
    for index, item in enumerate(raw):
        cls = types.get(item.get("type")) if isinstance(item, dict) else None
        model = cls.Options if cls else union()   # the union reports a missing or unknown type
        entries.append(_validate(model, item, (key, index), source, issues))
    return entries


def _validate_entries(data: dict, key: str, model, source: MergedSource, issues: list[ConfigIssue]) -> list:
    """Validate a list section entry by entry, so one broken entry does not hide the others' logical errors."""
    raw = data.get(key) or []
    if not isinstance(raw, list):
        issues.append(source.issue((key,), f"must be a list of {key} entries"))
        return []
    return [_validate(model, item, (key, index), source, issues) for index, item in enumerate(raw)]


def _validate(model, data: Any, prefix: Loc, source: MergedSource, issues: list[ConfigIssue]):
    validate = model.validate_python if isinstance(model, TypeAdapter) else model.model_validate
    try:
        return validate(data)
    except ValidationError as exc:
        for error in exc.errors(include_url=False):
            loc = _strip_union_tag(error["loc"], data) if isinstance(model, TypeAdapter) else error["loc"]
            message = _message(error, model, data, loc)
            if error["type"] == "union_tag_invalid":  # point at the `type:` line, not the list item
                loc = (*loc, "type")
            if loc and loc[-1] == "[key]":  # pydantic's marker for a bad mapping key; the YAML has no such level
                loc, message = loc[:-1], f"invalid key: {message}"
            issues.append(source.issue((*prefix, *loc), message))
        return None


def _strip_union_tag(loc: tuple, data: Any) -> tuple:
    """Pydantic puts the union tag (`cpu`) into the location; the YAML has no such level."""
    if loc and isinstance(data, dict) and loc[0] == data.get("type") and (loc[0] in CHECK_TYPES
                                                                           or loc[0] in ACTION_TYPES):
        return loc[1:]
    return loc


def _message(error: dict, model, data: Any, loc: tuple) -> str:
    kind = error["type"]
    if kind == "extra_forbidden":
        key = str(loc[-1])
        known = _known_keys(model, data, loc[:-1])
        hint = _close_matches(key, known)
        return "unknown key" + (f" (did you mean '{hint[0]}'?)" if hint else "")
    what, types = ("action", ACTION_TYPES) if model is _action_adapter() else ("check", CHECK_TYPES)
    if kind == "union_tag_invalid":
        given = data.get("type") if isinstance(data, dict) else None
        hint = _close_matches(str(given), types)
        return (f"unknown {what} type {given!r}" + (f" (did you mean '{hint[0]}'?)" if hint else "")
                + f"; known types: {', '.join(types)}")
    if kind == "union_tag_not_found":
        return f"missing 'type' (one of: {', '.join(types)})"
    if kind == "missing":
        return "required key is missing"
    message = error["msg"]
    for prefix in ("Value error, ", "Assertion failed, "):
        message = message.removeprefix(prefix)
    given = error.get("input")
    if _sensitive(loc) and not is_reference(given):   # a mistyped password or URL with credentials
        return message.replace(str(given), "<redacted>") if given not in (None, "") else message  # stays out of logs
    if ("input" in error and kind not in ("model_type", "dict_type") and not isinstance(given, (dict, list))
            and not (kind == "value_error" and str(given) in message)):  # our own messages usually quote it already
        message += f" (got {given!r})"
    if kind == "string_type" and type(given) is int and given >= 60:
        # YAML 1.1 reads an unquoted 12:30 as a base-60 number: 750
        hours, minutes = divmod(given, 60)
        message += f"; quote times: '{hours}:{minutes:02d}' (YAML reads an unquoted {hours}:{minutes:02d} as {given})"
    return message


_SENSITIVE_KEYS = {"password", "dsn", "url", "headers", "env", "token", "secret_access_key", "access_key_id"}


def _sensitive(loc: tuple) -> bool:
    """Values under these keys may hold credentials: errors about them never quote the value."""
    return any(isinstance(part, str) and part.lower() in _SENSITIVE_KEYS for part in loc)


def _known_keys(model, data: Any, parent: tuple) -> list[str]:
    """Field names (and aliases) valid at `parent`, for "did you mean"."""
    if model is Sections:
        model = Config   # `checks` is validated apart but is a valid top-level key
    if isinstance(model, TypeAdapter):
        types = ACTION_TYPES if model is _action_adapter() else CHECK_TYPES
        cls = types.get(data.get("type")) if isinstance(data, dict) else None
        model = cls.Options if cls else None
    for part in parent:
        if model is None or isinstance(part, int):
            continue
        field = model.model_fields.get(part)
        annotation = getattr(field, "annotation", None)
        candidates = (annotation, *get_args(annotation))  # unwrap `BasicAuth | None`
        model = next((c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)), None)
    if model is None:
        return []
    return [f.alias or name for name, f in model.model_fields.items()]


def _logical_pass(config: Config | None, checks: list[CheckOptions | None], source: MergedSource,
                  issues: list[ConfigIssue]) -> dict[str, Trigger]:
    """Cross-field checks of every check that passed the first pass.

    Runs even when a top-level section failed, so a typo in `agent:` does not
    hide a warning ≥ critical further down; only what needs the schedules and
    the default interval is then skipped.
    """
    triggers: dict[str, Trigger] = {}
    first_seen: dict[str, int] = {}
    for index, check in enumerate(checks):
        if check is None:
            continue
        loc = ("checks", index)
        if check.name in first_seen:
            first = source.first_defined(("checks", first_seen[check.name]), loc)
            issues.append(source.issue((*loc, "name"), f"duplicate check name '{check.name}' (first defined at "
                                                       f"{first})"))
        else:
            first_seen[check.name] = index
            if CHECK_TYPES[check.type].WATCHES_SCHEDULE:
                check = checks[index] = _resolve_watched(config, check, loc, source, issues)
            trigger = _trigger(config, check, loc, source, issues)
            if trigger:
                triggers[check.name] = trigger
        _check_thresholds(check, loc, source, issues)
    return triggers


def _check_actions(config: Config | None, checks: list, actions: list, source: MergedSource,
                   issues: list[ConfigIssue]) -> None:
    """Action names unique; every binding and escalation names a configured action; escalations notify."""
    known: dict[str, ActionOptions] = {}
    first_seen: dict[str, int] = {}
    for index, action in enumerate(actions):
        if action is None:
            continue
        if action.name in known:
            first = source.first_defined(("actions", first_seen[action.name]), ("actions", index))
            issues.append(source.issue(("actions", index, "name"), f"duplicate action name '{action.name}' "
                                                                   f"(first defined at {first})"))
        known[action.name] = action
        first_seen.setdefault(action.name, index)

    def unknown(name: str) -> str:
        hint = _close_matches(name, known)
        return (f"no action named '{name}' in actions:" + (f" (did you mean '{hint[0]}'?)" if hint else "")
                + (f"; configured: {', '.join(known)}" if known and not hint else ""))

    if len(known) != sum(a is not None for a in actions) or None in actions:
        partial = True   # a broken action entry: do not report bindings to it as unknown
    else:
        partial = False
    for index, action in enumerate(actions):
        if action is None:
            continue
        for position, name in enumerate(action.escalate):
            loc = ("actions", index, "escalate", position)
            if name not in known:
                if not partial:
                    issues.append(source.issue(loc, unknown(name)))
            elif not ACTION_TYPES[known[name].type].NOTIFIES:
                issues.append(source.issue(loc, f"'{name}' is a {known[name].type} action; escalations must "
                                                f"be notifications"))
    for index, check in enumerate(checks):
        if check is None:
            continue
        for position, binding in enumerate(check.actions):
            if binding.action not in known and not partial:
                issues.append(source.issue(("checks", index, "actions", position, "action"), unknown(binding.action)))
    if config is None:
        return
    names = {c.name for c in checks if c is not None}
    for period in ("daily", "weekly", "monthly", "quarterly"):
        for index, item in enumerate(getattr(config.checklists, period)):
            for position, name in enumerate(item.checks):
                if name not in names and None not in checks:
                    hint = _close_matches(name, names)
                    issues.append(source.issue(("checklists", period, index, "checks", position),
                                               f"no check named '{name}'" + (f" (did you mean '{hint[0]}'?)"
                                                                             if hint else "")))


def _check_maintenance(windows: list, checks: list, source: MergedSource, issues: list[ConfigIssue]) -> None:
    """Window names unique, every named check configured, no window as long as the time between its starts
    (it would never end)."""
    names = {c.name for c in checks if c is not None}
    first: dict[str, int] = {}
    for index, window in enumerate(windows):
        if window is None:
            continue
        loc = ("maintenance", index)
        if window.name in first:
            issues.append(source.issue((*loc, "name"), f"duplicate maintenance window name '{window.name}' (first "
                                       f"defined at line {source.line_of(('maintenance', first[window.name]))})"))
        first.setdefault(window.name, index)
        for position, name in enumerate(window.checks or ()):
            if name not in names and None not in checks:
                hint = _close_matches(name, names)
                issues.append(source.issue((*loc, "checks", position), f"no check named '{name}'"
                                           + (f" (did you mean '{hint[0]}'?)" if hint else "")))
        gap = shortest_gap(parse_calendar(window.at))
        if window.duration >= gap:
            issues.append(source.issue((*loc, "duration"), f"must be shorter than the time between two starts of "
                                       f"'{window.at}' ({format_duration(gap)}), or the window would never end "
                                       f"(got {format_duration(window.duration)})"))


def _resolve_watched(config: Config | None, check: CheckOptions, loc: Loc, source, issues) -> CheckOptions:
    """A check that watches a calendar (a heartbeat's job) gets the spec of a `schedules:` name it gives, so it
    needs nothing but its options at run time; `config show` shows the spec."""
    if check.schedule is None or config is None:
        return check
    text = config.schedules.get(check.schedule, check.schedule)
    try:
        parse_calendar(text)
    except CalendarSpecError as exc:
        hint = _close_matches(check.schedule, config.schedules)
        issues.append(source.issue((*loc, "schedule"), f"not a schedule name ({', '.join(config.schedules)}) "
                                   f"nor a calendar spec: {exc}" + (f" (did you mean '{hint[0]}'?)" if hint else "")))
        return check
    return check.model_copy(update={"schedule": text}) if text != check.schedule else check


def _trigger(config: Config | None, check: CheckOptions, loc: Loc, source, issues) -> Trigger | None:
    watcher = CHECK_TYPES[check.type].WATCHES_SCHEDULE   # its schedule is not when it runs
    if check.every is not None and check.schedule is not None and not watcher:
        issues.append(source.issue((*loc, "schedule"), "give either 'every' or 'schedule', not both"))
        return None
    if config is None:
        return None
    if check.schedule is not None and not watcher:
        text = config.schedules.get(check.schedule, check.schedule)
        try:
            calendar = Calendar(parse_calendar(text), check.schedule)
        except CalendarSpecError as exc:
            hint = _close_matches(check.schedule, config.schedules)
            issues.append(source.issue((*loc, "schedule"), f"not a schedule name ({', '.join(config.schedules)}) "
                                       f"nor a calendar spec: {exc}"
                                       + (f" (did you mean '{hint[0]}'?)" if hint else "")))
            return None
        gap = shortest_gap(calendar.spec)
        if check.jitter >= gap:
            issues.append(source.issue((*loc, "jitter"), f"must be shorter than the shortest gap between runs "
                                       f"({format_duration(gap)}), or runs would be skipped"))
        return calendar
    every = check.every if check.every is not None else config.agent.default_interval
    if every < 0.1:
        issues.append(source.issue((*loc, "every"), f"interval must be at least 100ms (got {every:g}s)"))
        return None
    return Interval(every)


def shortest_gap(spec: CalendarSpec, fires: int = 60) -> float:
    """The shortest time between consecutive fire times over the next `fires` slots (in UTC: DST ignored)."""
    moment = next_fire(spec, datetime(2026, 1, 1, tzinfo=timezone.utc), timezone.utc)
    shortest = float("inf")
    for _ in range(fires):
        following = next_fire(spec, moment, timezone.utc)
        shortest = min(shortest, (following - moment).total_seconds())
        moment = following
    return shortest


def _check_thresholds(check: CheckOptions, loc: Loc, source, issues) -> None:
    cls = CHECK_TYPES[check.type]
    warning, critical = getattr(check, "warning", None), getattr(check, "critical", None)
    if cls.THRESHOLD is None or warning is None or critical is None:
        return
    unit = cls.THRESHOLD.unit
    w, c = format_value(warning, unit), format_value(critical, unit)
    if cls.THRESHOLD.bad_when == "above" and warning >= critical:
        issues.append(source.issue((*loc, "warning"), f"must be below critical (got {w} ≥ {c})"))
    if cls.THRESHOLD.bad_when == "below" and warning <= critical:
        issues.append(source.issue((*loc, "warning"),
                                   f"must be above critical: {cls.TYPE} breaches when the value falls below "
                                   f"(got {w} ≤ {c})"))


def json_schema() -> dict[str, Any]:
    """The JSON Schema of agent.yaml, from the same models that validate it."""
    schema = schema_model().model_json_schema(by_alias=True)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "maint-agent configuration (agent.yaml)"
    return schema
