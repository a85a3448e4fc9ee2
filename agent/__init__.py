"""maint-agent: a per-host maintenance agent (checks, history, /metrics, actions, reports)."""

__version__ = "0.1.0"
