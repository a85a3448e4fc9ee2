"""Action types by their `type:` name (corrective actions arrive with the actions issue)."""

ACTION_TYPES: dict[str, type] = {}
