"""Where the store lives, derived the same way by the daemon and by the lean CLI commands."""

from __future__ import annotations

import os
from pathlib import Path

DEFAULT_STATE_DIR = "/var/lib/maint-agent"
DB_NAME = "maint-agent.db"
SYSTEM_CONFIG = Path("/etc/maint-agent/agent.yaml")


def store_path(config_path: Path, state_dir: str | None, store_file: str | None) -> Path:
    """Relative paths in the config are relative to the config file's directory."""
    base = config_path.absolute().parent
    if store_file:
        return (base / store_file).resolve()
    return (base / (state_dir or DEFAULT_STATE_DIR)).resolve() / DB_NAME


def default_config() -> Path:
    """--config, else $MAINT_AGENT_CONFIG, else ./agent.yaml when present, else /etc/maint-agent/agent.yaml."""
    env = os.environ.get("MAINT_AGENT_CONFIG")
    if env:
        return Path(env)
    local = Path("agent.yaml")
    return local if local.exists() and not SYSTEM_CONFIG.exists() else SYSTEM_CONFIG
