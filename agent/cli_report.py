"""maint-agent commands for this area (registered by agent.cli)."""

from __future__ import annotations


def register(sub, common, fmt) -> None:
    """Add this area's subparsers to `sub`; `common` gives --config, `fmt` gives --format."""
