"""A service that calls a function at a fixed interval on the injected clock.

The composition root asks for repeated work (metrics sampling, the daily history purge)
through this service instead of scheduling on the reactor itself: only the edge touches
the reactor's clock (STYLE.md P3).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import cast

from twisted.application.service import Service
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from typing_extensions import override

from scaserver.edge.stack import TimerClock

__all__ = ["Periodic"]


class Periodic(Service):
    """Calls ``function`` every ``interval_s`` seconds while running (metrics sampling)."""

    def __init__(self, reactor: TimerClock, interval_s: float, function: Callable[[], None]) -> None:
        self._loop = LoopingCall(function)
        self._loop.clock = cast(IReactorTime, reactor)
        self._interval_s = interval_s

    @override
    def startService(self) -> None:
        super().startService()  # type: ignore[no-untyped-call]
        self._loop.start(self._interval_s, now=False)

    @override
    def stopService(self) -> None:
        super().stopService()  # type: ignore[no-untyped-call]
        if self._loop.running:
            self._loop.stop()
