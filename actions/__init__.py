"""Action types by their `type:` name. Adding a type: one module, one line here."""

from actions.base import Action
from actions.command import CommandAction

ACTION_TYPES: dict[str, type[Action]] = {
    "command": CommandAction,
}

for _name, _cls in ACTION_TYPES.items():
    assert _cls.TYPE == _name, f"ACTION_TYPES[{_name!r}] registers {_cls.__name__} of type {_cls.TYPE!r}"
