"""The SIP stack's armed timers, in one heap behind one reactor timer.

A delayed call per SIP timer costs a Twisted ``DelayedCall`` (about 536 bytes) and a push on
the reactor's timer heap, whose comparisons run in Python (``DelayedCall.__lt__``); most
transaction timers (E, F, J, K) are cancelled or replaced before they fire.
:class:`TimerHeap` keeps every armed timer as a plain ``(due, sequence, key, name)`` tuple in
one heap (compared in C: the sequence numbers are unique, so a key is never compared), and
:class:`~scaserver.edge.stack.SipStack` keeps one delayed call at the earliest due instant.

Cancelling is lazy: the live entry of each ``(key, name)`` is the one whose sequence number
the table holds; a cancelled or re-armed entry stays in the heap and is skipped when it
reaches the top.  When the dead entries outnumber the live ones and there are more than
:data:`REBUILD_SLACK` of them, the heap is rebuilt from the live entries.  Entries due at the
same instant come out in arming order (as ``task.Clock`` fires equal-time delayed calls).
No reactor here: the caller passes the instants.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Hashable
from typing import Final

#: The heap is rebuilt when it holds more dead entries than this, and more than live ones.
REBUILD_SLACK: Final = 1000

TimerId = tuple[Hashable, str]
"""A timer: the key the core armed it under (a transaction, a subscription...) and its name."""


class TimerHeap:
    """The due instant of every armed timer, earliest first."""

    __slots__ = ("_heap", "_live", "_order")

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Hashable, str]] = []
        self._live: dict[TimerId, int] = {}
        self._order = itertools.count()

    def __len__(self) -> int:
        """How many timers are armed."""
        return len(self._live)

    @property
    def armed(self) -> frozenset[TimerId]:
        return frozenset(self._live)

    @property
    def entries(self) -> int:
        """How many entries the heap holds, dead ones included."""
        return len(self._heap)

    def arm(self, key: Hashable, name: str, due: float) -> None:
        """Timer ``(key, name)`` is due at ``due``, replacing its earlier instant if armed."""
        sequence = next(self._order)
        live = self._live
        live[key, name] = sequence
        heap = self._heap
        heapq.heappush(heap, (due, sequence, key, name))
        armed = len(live)
        dead = len(heap) - armed
        if dead > REBUILD_SLACK and dead > armed:
            self._rebuild()

    def cancel(self, key: Hashable, name: str) -> bool:
        """Disarm ``(key, name)`` (harmless if it is not armed); True when no timer is left armed."""
        live = self._live
        if live.pop((key, name), None) is not None and not live:
            self._heap.clear()
            return True
        return not live

    def clear(self) -> None:
        """Disarm every timer."""
        self._live.clear()
        self._heap.clear()

    def mark(self) -> int:
        """A sequence number above that of every entry armed so far (see :meth:`pop_due`)."""
        return next(self._order)

    def pop_due(self, until: float, before: int) -> TimerId | None:
        """Disarm and return the earliest live timer due at or before ``until`` and armed before
        :meth:`mark` returned ``before``; None when there is none."""
        heap, live = self._heap, self._live
        while heap:
            due, sequence, key, name = heap[0]
            if due > until or sequence > before:
                return None
            heapq.heappop(heap)
            timer = (key, name)
            live_sequence = live.pop(timer, None)  # one hash for a live entry or a cancelled one
            if live_sequence == sequence:
                return timer
            if live_sequence is not None:  # re-armed: its live entry is further down
                live[timer] = live_sequence
        return None

    def next_due(self) -> float | None:
        """The due instant of the earliest live timer (dead entries on top are dropped)."""
        heap, live = self._heap, self._live
        while heap:
            due, sequence, key, name = heap[0]
            if live.get((key, name)) == sequence:
                return due
            heapq.heappop(heap)
        return None

    def _rebuild(self) -> None:
        # By the live sequence numbers (ints hash in C; a key may hash in Python).
        alive = set(self._live.values())
        self._heap[:] = [entry for entry in self._heap if entry[1] in alive]
        heapq.heapify(self._heap)
