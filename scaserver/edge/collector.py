"""The cyclic garbage collector of a running server, paced to keep its pauses off the SIP path.

CPython's collector starts a young collection when the allocations of container objects
less their deallocations pass a threshold.  A SIP server in steady state breaks that rule:
every transaction lives for seconds (timer J is 32 s on UDP), so the objects freed each
second are old ones while the objects made are new ones, and the two cancel in the count.
The youngest generation then grows, unseen by the threshold, until a random swing starts a
collection over it: on a seize load at 100 cycles/s the young generation reached 137 000 to
149 000 objects and its collection stopped the reactor for 80 to 95 ms (bench/RESULTS.md,
"Pauses, bounds and the restore").

So the running server collects the young generation itself, every
``YOUNG_INTERVAL_S`` of its clock, whatever the count says: each collection then scans
at most that interval's survivors.  It moves on to an older generation when its turn has
come (:func:`due_generation`), which an explicit young collection never does by itself.
The state present once the server is up (imports, configuration, restored subscriptions,
appearances and bindings) is collected once and frozen out of every later collection; the
SIP core makes no reference cycles (a whole seize load left no SIP object among the
collector's garbage), so nothing frozen is lost to it.
"""

from __future__ import annotations

import gc
from collections.abc import Callable
from typing import Final

from twisted.application.service import Service
from typing_extensions import override

from scaserver.edge.periodic import Periodic
from scaserver.edge.stack import TimerClock

__all__ = [
    "GC_THRESHOLDS",
    "YOUNG_INTERVAL_S",
    "PacedCollections",
    "PauseWatch",
    "due_generation",
    "freeze_long_lived",
    "tune_garbage_collector",
]

GC_THRESHOLDS: Final = (50_000, 1, 7000)
"""Generation thresholds of the cyclic garbage collector for a running server (CPython's
defaults are (700, 10, 10)).  The automatic young collection is a backstop for a burst
between two paced ones.  The middle generation is collected after one young collection, on
the second after it (every 0.3 s): it scans the survivors of that time, the transactions
still waiting out Timer J among them.  Its pause grows with the time between two of them:
after 20 young collections (2.1 s) it took 45-63 ms at 250 seize cycles a second, after 5
(0.6 s) 9-22 ms at 550 seize cycles and 9-19 ms at 3800 REGISTER/s, after one (0.3 s) 4-10
ms and 5-7 ms; every object that survives the young generation is scanned once in the middle
one whatever the period, so the shorter period costs little more collector time in all
(bench/RESULTS.md).  A full collection scans every object alive and not frozen: about 180
ms at 100 seize cycles a second, 170-250 ms at 250.  It comes after 7000 middle collections,
about every 35 minutes; the cycles it frees until then are few (a closed TCP or TLS
connection, a failed deferred): the SIP path makes none."""

YOUNG_INTERVAL_S: Final = 0.1
"""How often the running server collects the youngest generation: at a few thousand
surviving objects per 100 ms under load, each collection is a millisecond or two."""


def tune_garbage_collector() -> None:
    """Before the server starts: collect once, freeze the start-up state (imports, the
    settings, the rows read for the restore) and set :data:`GC_THRESHOLDS`."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def freeze_long_lived() -> None:
    """Once the server is up: collect what the start left, then freeze the rest (the
    restored subscriptions, appearances and bindings live until they end, and they are
    freed by their reference counts then) out of every later collection."""
    gc.collect()
    gc.freeze()


def due_generation(counts: tuple[int, int, int], thresholds: tuple[int, int, int]) -> int:
    """The generation a paced collection takes: the oldest one whose count has passed its
    threshold (``gc.get_count()``: for the middle generation the young collections since its
    last one, for the oldest the middle ones), else the youngest.  CPython chooses so for an
    automatic collection only; a ``gc.collect(0)`` never moves on to an older generation."""
    _, middle, oldest = counts
    if oldest > thresholds[2]:
        return 2
    if middle > thresholds[1]:
        return 1
    return 0


class PacedCollections(Service):
    """Every ``interval_s`` seconds of ``clock`` while running, collects the youngest
    generation, or the older one :func:`due_generation` names (``collect``, ``counts`` and
    ``thresholds`` are ``gc``'s: injectable for tests)."""

    def __init__(
        self,
        clock: TimerClock,
        interval_s: float = YOUNG_INTERVAL_S,
        *,
        collect: Callable[[int], object] = gc.collect,
        counts: Callable[[], tuple[int, int, int]] = gc.get_count,
        thresholds: Callable[[], tuple[int, int, int]] = gc.get_threshold,
    ) -> None:
        self._collect, self._counts, self._thresholds = collect, counts, thresholds
        self._periodic = Periodic(clock, interval_s, self._collect_due)

    def _collect_due(self) -> None:
        self._collect(due_generation(self._counts(), self._thresholds()))

    @override
    def startService(self) -> None:
        super().startService()  # type: ignore[no-untyped-call]
        self._periodic.startService()

    @override
    def stopService(self) -> None:
        super().stopService()  # type: ignore[no-untyped-call]
        self._periodic.stopService()


class PauseWatch(Service):
    """While running, reports every collection's pause: ``observe(generation, seconds)``,
    measured on ``timer`` (a monotonic clock: ``time.perf_counter``) from the collector's
    start callback to its stop callback, in whichever thread collected."""

    def __init__(self, timer: Callable[[], float], observe: Callable[[int, float], None]) -> None:
        self._timer, self._observe = timer, observe
        self._started: float | None = None

    def _on_collection(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = self._timer()
            return
        started, self._started = self._started, None
        if started is not None:
            self._observe(info["generation"], self._timer() - started)

    @override
    def startService(self) -> None:
        super().startService()  # type: ignore[no-untyped-call]
        gc.callbacks.append(self._on_collection)

    @override
    def stopService(self) -> None:
        super().stopService()  # type: ignore[no-untyped-call]
        if self._on_collection in gc.callbacks:
            gc.callbacks.remove(self._on_collection)
