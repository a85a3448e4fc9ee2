"""Action types by their `type:` name. Adding a type: one module, a loader below if it is a new module,
one line in ACTION_TYPES.

A type's module is imported the first time a config uses it (`ACTION_TYPES["notify"]`), so an agent
without actions imports none of them; iterating the registry's items imports them all.
"""

from actions.base import Action
from agent.plugin.registry import TypeRegistry


def _command():
    from actions.command import CommandAction
    return (CommandAction,)


def _systemd():
    from actions.systemd import SystemdRestartAction, SystemdStartAction
    return SystemdRestartAction, SystemdStartAction


def _files():
    from actions.files import CleanupFilesAction
    return (CleanupFilesAction,)


def _redis():
    from actions.redis import RedisEvictAction
    return (RedisEvictAction,)


def _postgres():
    from actions.postgres import PgMaintenanceAction
    return (PgMaintenanceAction,)


def _notify():
    from actions.notify import NotifyAction
    return (NotifyAction,)


ACTION_TYPES: TypeRegistry[Action] = TypeRegistry("action", {
    "command": _command,
    "systemd_restart": _systemd,
    "systemd_start": _systemd,
    "cleanup_files": _files,
    "redis_evict": _redis,
    "pg_maintenance": _postgres,
    "notify": _notify,
})
