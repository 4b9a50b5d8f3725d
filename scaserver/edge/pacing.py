"""Work in bounded batches, one batch per reactor turn: the restore's full-state NOTIFYs.

A restore of 100k call-info subscriptions owes 100k full-state NOTIFYs (sca.md 10.3).  Built
and sent in one reactor turn they stall the server for seconds (nothing is read, no timer
fires) and hold 100k requests and client transactions at once.  :class:`Paced` hands its
items to ``step`` ``batch`` at a time, each batch in its own turn (a zero-delay call on the
injected clock), so that what arrives meanwhile is served between batches.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Final, Generic, TypeVar

from twisted.logger import Logger

from scaserver.edge.stack import DelayedCall, TimerClock, call_later

T = TypeVar("T")

RESTORE_NOTIFY_BATCH: Final = 100
"""Full-state NOTIFYs built and sent per reactor turn after a restore: about 30 ms of work on
a loaded core, under the 50 ms stall budget."""


class Paced(Generic[T]):
    """Calls ``step(batch, now)`` for successive slices of ``items``, one slice per turn."""

    _log = Logger()

    def __init__(
        self,
        clock: TimerClock,
        items: Sequence[T],
        step: Callable[[Sequence[T], float], None],
        *,
        batch: int = RESTORE_NOTIFY_BATCH,
    ) -> None:
        if batch < 1:
            raise ValueError(f"batch must be at least 1, not {batch}")
        self._clock, self._items, self._step, self._batch = clock, items, step, batch
        self._next = 0
        self._call: DelayedCall | None = None

    @property
    def done(self) -> bool:
        """Every item was handed to ``step`` (or the run was stopped)."""
        return self._next >= len(self._items)

    def start(self) -> None:
        """The first batch runs in the next reactor turn."""
        if not self.done and self._call is None:
            self._call = call_later(self._clock, 0.0, self._turn)

    def stop(self) -> None:
        """No further batch runs."""
        call, self._call = self._call, None
        if call is not None and call.active():
            call.cancel()
        self._next = len(self._items)

    def _turn(self) -> None:
        self._call = None
        start = self._next
        self._next = min(start + self._batch, len(self._items))
        try:
            self._step(self._items[start : self._next], self._clock.seconds())
        except Exception:  # one bad batch must not stop the rest
            self._log.failure("paced batch {start}-{end} failed", start=start, end=self._next)
        if not self.done:
            self._call = call_later(self._clock, 0.0, self._turn)
