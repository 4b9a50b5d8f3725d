"""How a settings class is written in TOML, for the fields that are not one key each.

The settings classes live with the subsystems that own them and the configuration package
structures them; this field metadata, which both read, sits below them all.
"""

from __future__ import annotations

import typing
from typing import Final

__all__ = ["INLINE", "Secret"]

INLINE: Final = "scaserver.config.inline"
"""Field metadata: the field's class is structured from these keys of the table that holds the
field, written beside the table's own keys (``[sip] t1`` is ``SipSettings.timers.t1``)."""


Secret = typing.NewType("Secret", str)
"""A password or HA1: a string never shown, not even in a configuration error."""
