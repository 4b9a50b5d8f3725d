"""The reactor's loop lag: how late a timer fires, which is how long the reactor was busy.

:class:`LoopLagProbe` asks the clock to call it back every ``interval_s`` seconds and reports,
at each call, how much later than asked it ran.  While the reactor is busy with one long
piece of work (a burst of datagrams, a garbage collection, a slow handler) nothing else runs:
that time shows up as lag here, and as a late answer or a retransmission on the wire.
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.application.service import Service
from typing_extensions import override

from scaserver.edge.stack import DelayedCall, TimerClock, call_later

INTERVAL_S = 0.05
"""How often the probe runs: short against the 50 ms stall it must see, cheap (20 timers a second)."""


class LoopLagProbe(Service):
    """Calls ``observe(lag_s)`` every ``interval_s`` seconds of ``clock`` while running."""

    def __init__(
        self, clock: TimerClock, observe: Callable[[float], None], interval_s: float = INTERVAL_S
    ) -> None:
        self._clock, self._observe, self._interval_s = clock, observe, interval_s
        self._due = 0.0
        self._call: DelayedCall | None = None

    @override
    def startService(self) -> None:
        super().startService()  # type: ignore[no-untyped-call]
        self._schedule(self._clock.seconds())

    @override
    def stopService(self) -> None:
        super().stopService()  # type: ignore[no-untyped-call]
        call, self._call = self._call, None
        if call is not None and call.active():
            call.cancel()

    def _schedule(self, now: float) -> None:
        self._due = now + self._interval_s
        self._call = call_later(self._clock, self._interval_s, self._tick)

    def _tick(self) -> None:
        now = self._clock.seconds()
        self._observe(max(0.0, now - self._due))
        self._schedule(now)
