"""maint-agent: a per-host maintenance agent (checks, history, /metrics, actions, reports)."""

import sys
import types

__version__ = "0.1.0"


def _without_pydantic_plugins() -> None:
    """Tell pydantic there are no plugins before it builds its first model. Its plugin loader imports
    importlib.metadata (with zipfile, csv, email: ~1 MiB resident for the daemon's life) to scan every
    installed package's entry points, then imports and runs any `pydantic` plugin one declares, inside
    the agent. The agent uses none; `PYDANTIC_DISABLE_PLUGINS` skips only the scan, not the import."""
    name = "pydantic.plugin._loader"
    if name not in sys.modules:
        loader = types.ModuleType(name, _without_pydantic_plugins.__doc__)
        loader.get_plugins = tuple
        sys.modules[name] = loader


_without_pydantic_plugins()
