"""How a configuration is refused: one :class:`ConfigError` whose text is a single line
naming the file and the dotted key, and the way values are quoted in it."""

from __future__ import annotations

import json


class ConfigError(Exception):
    """A configuration that cannot be used; ``str()`` is the one line shown to the operator."""

    def __init__(self, source: str, key: str, detail: str) -> None:
        self.source, self.key, self.detail = source, key, detail
        super().__init__(f"{source}: {key}: {detail}" if key else f"{source}: {detail}")


class RejectedValue(ValueError):
    """A value rejected by one of our structuring hooks; its text is the operator-facing detail."""


class KeyedValueError(ValueError):
    """A well-typed value that cannot be used, with the dotted key it was found under."""

    def __init__(self, key: str, detail: str) -> None:
        super().__init__(detail)
        self.key, self.detail = key, detail


def show(value: object) -> str:
    """``value`` as the operator wrote it in TOML (tables and lists by their kind only)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a table"
    return f"a {type(value).__name__}"
