"""Action types by their `type:` name. Adding a type: one module, one line here."""

from actions.base import Action
from actions.command import CommandAction
from actions.files import CleanupFilesAction
from actions.notify import NotifyAction
from actions.postgres import PgMaintenanceAction
from actions.redis import RedisEvictAction
from actions.systemd import SystemdRestartAction, SystemdStartAction

ACTION_TYPES: dict[str, type[Action]] = {
    "command": CommandAction,
    "systemd_restart": SystemdRestartAction,
    "systemd_start": SystemdStartAction,
    "cleanup_files": CleanupFilesAction,
    "redis_evict": RedisEvictAction,
    "pg_maintenance": PgMaintenanceAction,
    "notify": NotifyAction,
}

for _name, _cls in ACTION_TYPES.items():
    assert _cls.TYPE == _name, f"ACTION_TYPES[{_name!r}] registers {_cls.__name__} of type {_cls.TYPE!r}"
