"""RFC 4028 session timers: the two intervals a server applying them is configured with."""

from __future__ import annotations

from typing import Final

import attrs

__all__ = ["RFC_MIN_SE", "SessionIntervals"]

RFC_MIN_SE: Final = 90
"""The smallest Min-SE RFC 4028 section 4 allows, seconds."""


@attrs.frozen
class SessionIntervals:
    """``session_expires``: the session interval asked for in ``Session-Expires``, and the
    largest let through (section 8.1); ``min_se``: the smallest accepted (``Min-SE``, at
    least :data:`RFC_MIN_SE`).  Seconds."""

    session_expires: int = 1800
    min_se: int = RFC_MIN_SE
