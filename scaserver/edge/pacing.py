"""Work in bounded batches, one batch per reactor turn: the restore's full-state NOTIFYs.

A restore of 100k call-info subscriptions owes 100k full-state NOTIFYs (sca.md 10.3).  Built
and sent in one reactor turn they stall the server for seconds (nothing is read, no timer
fires) and hold 100k requests and client transactions at once.  :class:`Paced` hands its
items to ``step`` ``batch`` at a time, each batch in its own turn (a zero-delay call on the
injected clock), so that what arrives meanwhile is served between batches.

A batch may also wait for ``room``: the restore's NOTIFYs wait while the stack has
:data:`RESTORE_NOTIFY_WINDOW` transactions in progress.  Sent faster than their answers are
read (a turn reads at most ``edge.udp.READ_PER_TURN`` of them), the answers queue in the
socket and every NOTIFY's transaction stays open meanwhile: 100k of them at the peak, which
the allocator keeps as the process's size after the restore.  A batch waits at most
``max_wait_s``: phones that never answer (gone since the restart) hold their transactions
32 s, and must not hold up the rest that long.
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

RESTORE_NOTIFY_WINDOW: Final = 1000
"""Transactions in progress at which the restore's next batch of NOTIFYs waits."""

ROOM_CHECK_S: Final = 0.01
"""How often a waiting batch looks for room again."""

MAX_WAIT_S: Final = 0.5
"""The longest a batch waits for room."""


class Paced(Generic[T]):
    """Calls ``step(batch, now)`` for successive slices of ``items``, one slice per turn,
    each when ``room()`` is true or after it waited ``max_wait_s`` for it."""

    _log = Logger()

    def __init__(
        self,
        clock: TimerClock,
        items: Sequence[T],
        step: Callable[[Sequence[T], float], None],
        *,
        batch: int = RESTORE_NOTIFY_BATCH,
        room: Callable[[], bool] = lambda: True,
        max_wait_s: float = MAX_WAIT_S,
    ) -> None:
        if batch < 1:
            raise ValueError(f"batch must be at least 1, not {batch}")
        self._clock, self._items, self._step, self._batch = clock, items, step, batch
        self._room, self._max_wait_s = room, max_wait_s
        self._next = 0
        self._waiting_since: float | None = None
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
        now = self._clock.seconds()
        if not self._room():
            if self._waiting_since is None:
                self._waiting_since = now
            if now - self._waiting_since < self._max_wait_s:
                self._call = call_later(self._clock, ROOM_CHECK_S, self._turn)
                return
        self._waiting_since = None
        start = self._next
        self._next = min(start + self._batch, len(self._items))
        try:
            self._step(self._items[start : self._next], self._clock.seconds())
        except Exception:  # one bad batch must not stop the rest
            self._log.failure("paced batch {start}-{end} failed", start=start, end=self._next)
        if not self.done:
            self._call = call_later(self._clock, 0.0, self._turn)
