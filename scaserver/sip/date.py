"""The value of a ``Date`` header (RFC 3261 section 20.17: an RFC 1123 date, always GMT)."""

from __future__ import annotations

import functools
from email.utils import formatdate


def date_value(now: float) -> str:
    """``email.utils.formatdate(now, usegmt=True)``, formatted once per second: the text
    shows whole seconds, and every 200 to a REGISTER carries one (``formatdate`` cost more
    than the rest of building that 200)."""
    whole = int(now)
    # formatdate rounds ``now`` to microseconds first: only a fraction of 0.999999 or more
    # may carry into the next second; those (and times before 1970) are formatted as given.
    if now >= 0 and now - whole < 0.999999:
        return _formatted(whole)
    return formatdate(now, usegmt=True)


@functools.lru_cache(maxsize=4)
def _formatted(second: int) -> str:
    return formatdate(second, usegmt=True)
