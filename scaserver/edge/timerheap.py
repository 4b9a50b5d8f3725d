"""The SIP stack's armed timers, in one heap behind one reactor timer.

A delayed call per SIP timer costs a Twisted ``DelayedCall`` (about 536 bytes) and a push on
the reactor's timer heap, whose comparisons run in Python (``DelayedCall.__lt__``); most
transaction timers (E, F, J, K) are cancelled or replaced before they fire.
:class:`TimerHeap` keeps the armed timers as plain ``(due, sequence, key, name)`` tuples in
one heap (compared in C: the sequence numbers are unique, so a key is never compared), and
:class:`~scaserver.edge.stack.SipStack` keeps one delayed call at the earliest due instant.

The heap holds one entry per key (a transaction, a subscription...): its *head*, no later
than the earliest of the key's timers; the key's other timers wait in a small table of their
own.  A non-INVITE client transaction arms E (T1) and F (64*T1) and, on a prompt response,
cancels both and arms K: F never enters the heap, where it used to wait out its 32 s as a
dead entry (most of the heap under load, and the reason it was rebuilt, about every 16 s at any rate).
When the head comes out, the key's timer it stands for fires if it is still armed as it was,
and the key's earliest timer left becomes its head.

Cancelling is lazy: a cancelled or re-armed head stays in the heap and is skipped (or passes
on to the key's next timer) when it reaches the top.  When the dead entries outnumber the
heads and there are more than :data:`REBUILD_SLACK` of them, the heap is rebuilt from the
heads.  Timers due at the same instant come out in arming order (as ``task.Clock`` fires
equal-time delayed calls).  No reactor here: the caller passes the instants.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Hashable
from typing import Final

#: The heap is rebuilt when it holds more dead entries than this, and more than heads.
REBUILD_SLACK: Final = 1000

TimerId = tuple[Hashable, str]
"""A timer: the key the core armed it under (a transaction, a subscription...) and its name."""

Instant = tuple[float, int]
"""When a timer is due, and its arming sequence number (the order of equal instants)."""


class _Timers:
    """The armed timers of one key, and the instant and sequence number of its head in the
    heap (-1 once the key is gone: its entries are dead).  Heap entries point at it, so that an
    entry coming out is told live or dead without hashing its key again."""

    __slots__ = ("armed", "due", "head", "key")

    def __init__(self, key: Hashable, armed: dict[str, Instant]) -> None:
        self.key = key
        self.armed = armed
        self.due = 0.0
        self.head = -1


class TimerHeap:
    """The due instant of every armed timer, earliest first."""

    __slots__ = ("_count", "_heap", "_keys", "_order")

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, _Timers, str]] = []
        self._keys: dict[Hashable, _Timers] = {}
        self._count = 0
        self._order = itertools.count()

    def __len__(self) -> int:
        """How many timers are armed."""
        return self._count

    @property
    def armed(self) -> frozenset[TimerId]:
        return frozenset((key, name) for key, timers in self._keys.items() for name in timers.armed)

    @property
    def entries(self) -> int:
        """How many entries the heap holds, dead ones included."""
        return len(self._heap)

    def arm(self, key: Hashable, name: str, due: float) -> None:
        """Timer ``(key, name)`` is due at ``due``, replacing its earlier instant if armed."""
        sequence = next(self._order)
        timers = self._keys.get(key)
        if timers is None:
            timers = self._keys[key] = _Timers(key, {name: (due, sequence)})
            self._count += 1
        else:
            armed = timers.armed
            if name not in armed:
                self._count += 1
            armed[name] = (due, sequence)
            if due >= timers.due:
                return  # the key's head comes out first; this one waits behind it
        timers.due, timers.head = due, sequence
        heap = self._heap
        heapq.heappush(heap, (due, sequence, timers, name))
        heads = len(self._keys)
        dead = len(heap) - heads
        if dead > REBUILD_SLACK and dead > heads:
            self._rebuild()

    def cancel(self, key: Hashable, name: str) -> bool:
        """Disarm ``(key, name)`` (harmless if it is not armed); True when no timer is left armed."""
        timers = self._keys.get(key)
        if timers is not None and timers.armed.pop(name, None) is not None:
            self._count -= 1
            if not timers.armed:
                del self._keys[key]
                timers.head = -1
                if not self._count:
                    self._heap.clear()
                    return True
        return not self._count

    def clear(self) -> None:
        """Disarm every timer."""
        for timers in self._keys.values():
            timers.head = -1
        self._keys.clear()
        self._heap.clear()
        self._count = 0

    def mark(self) -> int:
        """A sequence number above that of every timer armed so far (see :meth:`pop_due`)."""
        return next(self._order)

    def pop_due(self, until: float, before: int) -> TimerId | None:
        """Disarm and return the earliest timer due at or before ``until`` and armed before
        :meth:`mark` returned ``before``; None when there is none."""
        heap = self._heap
        while heap:
            due, sequence, timers, name = heap[0]
            if due > until or sequence > before:
                return None
            heapq.heappop(heap)
            if timers.head != sequence:
                continue  # dead: its key was cancelled, or has an earlier head since
            armed = timers.armed
            instant = armed.get(name)
            if instant is not None and instant[1] == sequence:  # armed as it was: the earliest
                del armed[name]
                self._count -= 1
                self._next_head(timers)
                return (timers.key, name)
            self._next_head(timers)  # cancelled or re-armed: the key's earliest goes in
        return None

    def next_due(self) -> float | None:
        """The due instant of the earliest armed timer (dead entries on top are dropped)."""
        heap = self._heap
        while heap:
            due, sequence, timers, name = heap[0]
            if timers.head == sequence:
                instant = timers.armed.get(name)
                if instant is not None and instant[1] == sequence:
                    return due
                heapq.heappop(heap)
                self._next_head(timers)
            else:
                heapq.heappop(heap)
        return None

    def _next_head(self, timers: _Timers) -> None:
        """The head of a key came out: its earliest timer left (if any) goes in the heap."""
        armed = timers.armed
        if not armed:
            del self._keys[timers.key]
            timers.head = -1
            return
        name, (due, sequence) = _earliest(armed)
        timers.due, timers.head = due, sequence
        heapq.heappush(self._heap, (due, sequence, timers, name))

    def _rebuild(self) -> None:
        heap: list[tuple[float, int, _Timers, str]] = []
        for timers in self._keys.values():
            name, (due, sequence) = _earliest(timers.armed)
            timers.due, timers.head = due, sequence
            heap.append((due, sequence, timers, name))
        heapq.heapify(heap)
        self._heap[:] = heap


def _earliest(armed: dict[str, Instant]) -> tuple[str, Instant]:
    """The earliest of a key's armed timers (at most a few)."""
    found: tuple[str, Instant] | None = None
    for name, instant in armed.items():
        if found is None or instant < found[1]:
            found = (name, instant)
    assert found is not None
    return found
