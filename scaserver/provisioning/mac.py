"""MAC addresses as provisioning stores them (provisioning.md section 3): 12 lower-case hex
digits without separators, parsed from ``00:04:F2:AA:BB:CC``, ``00-04-f2-aa-bb-cc``,
``0004.f2aa.bbcc`` or ``0004F2AABBCC``."""

from __future__ import annotations

import re
from typing import Final

_SHAPES: Final = (
    re.compile(r"[0-9a-f]{12}"),
    re.compile(r"[0-9a-f]{2}(?::[0-9a-f]{2}){5}"),
    re.compile(r"[0-9a-f]{2}(?:-[0-9a-f]{2}){5}"),
    re.compile(r"[0-9a-f]{4}\.[0-9a-f]{4}\.[0-9a-f]{4}"),
)

#: The Polycom default master file's all-zero MAC (section 1.2); never a device.
ZERO_MAC: Final = "000000000000"


def canonical_mac(text: str) -> str | None:
    """The canonical form of ``text``, or None when it is not one of the accepted shapes."""
    value = text.strip().lower()
    if not any(shape.fullmatch(value) for shape in _SHAPES):
        return None
    return re.sub(r"[^0-9a-f]", "", value)
