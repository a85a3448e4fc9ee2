"""agent.yaml → a validated, frozen Config (the models are in agent/config/schema.py).

Validation runs in two passes, like borgmatic: the first checks each part's
shape and types (every error at once, each with file:line and YAML path), the
second checks what only makes sense across fields (duplicate names, warning
beyond critical, unknown schedule names).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, get_args
from zoneinfo import ZoneInfo

from pydantic import BaseModel, TypeAdapter, ValidationError

from actions import ACTION_TYPES
from actions.base import ActionOptions
from agent.config.includes import MergedSource, merge_includes
from agent.config.schema import (
    OPTIONAL_SECTIONS, Config, MaintenanceWindowSection, Sections, action_adapter, check_adapter, section_model,
)
from agent.config.triggers import Calendar, Interval, Trigger
from agent.config.yamlsrc import ConfigError, ConfigIssue, Loc, load_yaml, read_text
from agent.plugin.calendar import CalendarSpec, CalendarSpecError, next_fire, parse_calendar
from agent.plugin.fields import is_reference
from agent.plugin.paths import store_path
from agent.plugin.units import format_duration, format_value
from agent.timefmt import local_zone
from checks import CHECK_TYPES
from checks.base import CheckOptions


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
        section = _validate(section_model(key), {key: data[key]}, (), source, issues)
        if section is not None:
            optional[key] = getattr(section, key)
    config = None if sections is None else Config.model_construct(
        **{name: getattr(sections, name) for name in Sections.model_fields}, **optional)
    checks = _validate_list(data, "checks", CHECK_TYPES, check_adapter, source, issues)
    actions = _validate_list(data, "actions", ACTION_TYPES, action_adapter, source, issues)
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
    what, types = ("action", ACTION_TYPES) if model is action_adapter() else ("check", CHECK_TYPES)
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
        types = ACTION_TYPES if model is action_adapter() else CHECK_TYPES
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
