"""What every history row shares: times in epoch milliseconds and the sequence number that
orders the append-only rows (``acc``, ``appearance_events``, ``registration_events``) one
recorder writes (reporting.md section 3)."""

from __future__ import annotations

import math

import attrs


def epoch_ms(seconds: float) -> int:
    """Epoch seconds as the stored epoch milliseconds (rounded half up)."""
    return math.floor(seconds * 1000 + 0.5)


@attrs.define
class RowSequence:
    """The running ``seq`` of the append-only rows of one recorder."""

    last: int = 0

    def next(self) -> int:
        self.last += 1
        return self.last
