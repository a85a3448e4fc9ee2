"""The effective config as an operator writes it: `config show` prints `raw: 90d`, not `raw: 7776000.0`.

The models hold base units (seconds, bytes, ratios 0..1); the field types in agent/plugin/fields.py say which
human form each field was parsed from, so the way back is found by type, never by key name.
"""

from __future__ import annotations

import typing
from typing import Any, Callable

from pydantic import BaseModel

from agent.plugin.fields import DURATION_PARSERS
from agent.plugin.units import duration_text, parse_duration, parse_ratio, parse_size, ratio_text, size_text

_FORMATTERS: dict[Callable, Callable[[Any], str]] = {parse_duration: duration_text, parse_size: size_text,
                                                     parse_ratio: ratio_text,
                                                     **dict.fromkeys(DURATION_PARSERS, duration_text)}


def human_config(model: BaseModel) -> dict[str, Any]:
    """Given a config model, return it as JSON-able data (keys by alias, defaults filled in) with every
    duration, size and ratio in its human form."""
    return _humanise(model, model.model_dump(mode="json", by_alias=True))


def _humanise(model: BaseModel, dumped: dict[str, Any]) -> dict[str, Any]:
    for name, field in type(model).model_fields.items():
        key = field.alias or name
        if key not in dumped:
            continue
        value = getattr(model, name)
        formatter = _formatter(field.annotation, field.metadata)
        if formatter and isinstance(value, (int, float)) and not isinstance(value, bool):
            dumped[key] = formatter(value)
        elif isinstance(value, BaseModel):
            _humanise(value, dumped[key])
        elif isinstance(value, (tuple, list)):
            for item, out in zip(value, dumped[key]):
                if isinstance(item, BaseModel):
                    _humanise(item, out)
        elif isinstance(value, dict):
            for item_key, item in value.items():
                if isinstance(item, BaseModel) and str(item_key) in dumped[key]:
                    _humanise(item, dumped[key][str(item_key)])
    return dumped


def _formatter(annotation: Any, metadata: list) -> Callable[[Any], str] | None:
    """The formatter of a field whose type parses a human unit (`Duration`, `Size`, `Ratio`, optional or not)."""
    for item in metadata:
        found = _FORMATTERS.get(getattr(item, "func", None))
        if found:
            return found
    if typing.get_origin(annotation) is typing.Annotated:
        return _formatter(typing.get_args(annotation)[0], list(annotation.__metadata__))
    for arg in typing.get_args(annotation):
        if typing.get_origin(arg) is typing.Annotated or typing.get_args(arg):
            found = _formatter(arg, [])
            if found:
                return found
    return None
