"""The SIP stack's armed timers, in one heap behind one reactor timer.

A delayed call per SIP timer costs a Twisted ``DelayedCall`` (about 536 bytes) and a push on
the reactor's timer heap, whose comparisons run in Python (``DelayedCall.__lt__``); most
transaction timers (E, F, J, K) are cancelled or replaced before they fire.
:class:`TimerHeap` keeps the armed timers in one heap and
:class:`~scaserver.edge.stack.SipStack` keeps one delayed call at the earliest due instant.

The heap holds one entry per key (a transaction, a subscription...): its *head*, no later
than the earliest of the key's timers; the key's other timers wait beside it, outside the
heap.  A non-INVITE client transaction arms E (T1) and F (64*T1) and, on a prompt response,
cancels both and arms K: F never enters the heap, where it used to wait out its 32 s as a
dead entry (most of the heap under load, and the reason it was rebuilt, about every 16 s at any rate).
When the head comes out, the key's timer it stands for fires if it is still armed as it was,
and the key's earliest timer left becomes its head.

The entry is the key's record itself, a ``list`` ``[due, sequence]`` (the head's instant and
arming sequence number) whose slots hold the key and its armed timers: heapq compares two
entries in C (the sequence numbers are unique, so a key is never compared), and a key
waiting on one timer (K, J, a subscription's) costs one tracked object, with no table and no
tuple per timer: the timer the head stands for is kept in the record's own slots, and only a
key with more than one timer armed (E and F together) has a small list of the others.  A key
waiting on K costs about 260 bytes here, against 530 with a dict of ``(due, sequence)``
tuples per key and a tuple per entry, and one object for the garbage collector to scan
instead of two to seven.  A record's ``[due, sequence]`` never changes while it is in the
heap; when the head comes out, the same record goes back in at the key's next timer.

Cancelling is lazy: a cancelled or re-armed head stays in the heap and is skipped (or passes
on to the key's next timer) when it reaches the top; a timer armed earlier than its key's
head puts a new record in the heap and leaves the old one there, dead (its timers move to
the new one; should the key's head come back to the timer the old one was pushed for, the
two entries are equal and the first one out stands for it).  When the dead entries
outnumber the heads and there are more than :data:`REBUILD_SLACK` of them, the heap is
rebuilt from the heads.  Timers due at the same instant come out in arming order (as
``task.Clock`` fires equal-time delayed calls).  No reactor here: the caller passes the
instants.
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

_Timer = tuple[str, float, int]
"""A key's timer beside the one its record stands for: its name, due instant and sequence number."""


class _Key(list[float]):
    """One key's entry in the heap: ``[due, sequence]`` of its head (an int sequence number
    in a list of floats, compared as a number), and in slots the key and its armed timers:
    ``name``, ``due`` and ``sequence`` for the one the head was pushed for (while it stays
    armed as it was, ``sequence`` equals the head's), ``others`` for the rest (None when there
    is none).  ``name`` is None once the record is dead: its key's timers are all gone, or
    moved to a newer record."""

    __slots__ = ("due", "key", "name", "others", "sequence")

    key: Hashable
    name: str | None
    due: float
    sequence: int
    others: list[_Timer] | None


_SUPERSEDED: Final[list[_Timer]] = []
"""The ``others`` of a dead record whose timers moved to a newer record of its key."""


def _record(key: Hashable, name: str, due: float, sequence: int, others: list[_Timer] | None) -> _Key:
    record = _Key((due, sequence))
    record.key, record.name, record.due, record.sequence, record.others = key, name, due, sequence, others
    return record


class TimerHeap:
    """The due instant of every armed timer, earliest first."""

    __slots__ = ("_count", "_heap", "_keys", "_order")

    def __init__(self) -> None:
        self._heap: list[_Key] = []
        self._keys: dict[Hashable, _Key] = {}
        self._count = 0
        self._order = itertools.count()

    def __len__(self) -> int:
        """How many timers are armed."""
        return self._count

    @property
    def armed(self) -> frozenset[TimerId]:
        found: set[TimerId] = set()
        for key, record in self._keys.items():
            assert record.name is not None
            found.add((key, record.name))
            for name, _, _ in record.others or ():
                found.add((key, name))
        return frozenset(found)

    @property
    def entries(self) -> int:
        """How many entries the heap holds, dead ones included."""
        return len(self._heap)

    def arm(self, key: Hashable, name: str, due: float) -> None:
        """Timer ``(key, name)`` is due at ``due``, replacing its earlier instant if armed."""
        sequence = next(self._order)
        record = self._keys.get(key)
        if record is None:
            record = self._keys[key] = _record(key, name, due, sequence, None)
            self._count += 1
        else:
            if record.name == name:
                record.due, record.sequence = due, sequence
            else:
                others = record.others
                if others is None:
                    record.others = [(name, due, sequence)]
                    self._count += 1
                else:
                    for index, other in enumerate(others):
                        if other[0] == name:
                            others[index] = (name, due, sequence)
                            break
                    else:
                        others.append((name, due, sequence))
                        self._count += 1
            if due >= record[0]:
                return  # the key's head comes out first; this one waits behind it
            # An earlier head: a new record stands for this timer; the old one is dead.
            record = self._keys[key] = _record(key, name, due, sequence, _others_than(record, name))
        heap = self._heap
        heapq.heappush(heap, record)
        heads = len(self._keys)
        dead = len(heap) - heads
        if dead > REBUILD_SLACK and dead > heads:
            self._rebuild()

    def cancel(self, key: Hashable, name: str) -> bool:
        """Disarm ``(key, name)`` (harmless if it is not armed); True when no timer is left armed."""
        record = self._keys.get(key)
        if record is None:
            return not self._count
        others = record.others
        if record.name == name:
            self._count -= 1
            if others is None:
                del self._keys[key]
                record.name = None
                if not self._count:
                    self._heap.clear()
                    return True
                return False
            record.name, record.due, record.sequence = others.pop()
            if not others:
                record.others = None
        elif others is not None:
            for index, other in enumerate(others):
                if other[0] == name:
                    del others[index]
                    self._count -= 1
                    if not others:
                        record.others = None
                    break
        return not self._count

    def clear(self) -> None:
        """Disarm every timer."""
        for record in self._keys.values():
            record.name = record.others = None
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
            record = heap[0]
            if record[0] > until or record[1] > before:
                return None
            heapq.heappop(heap)
            name = record.name
            if name is None and (
                record.others is not _SUPERSEDED or (name := self._take_over(record)) is None
            ):
                continue  # dead: its key was cancelled, or has an earlier head since
            if record.sequence == record[1]:  # armed as it was: the earliest
                self._count -= 1
                key = record.key
                others = record.others
                if others is None:
                    del self._keys[key]
                    record.name = None
                else:
                    record.name, record.due, record.sequence = others.pop()
                    if not others:
                        record.others = None
                    self._push_next(record)
                return (key, name)
            self._push_next(record)  # cancelled or re-armed: the key's earliest goes in
        return None

    def next_due(self) -> float | None:
        """The due instant of the earliest armed timer (dead entries on top are dropped)."""
        heap = self._heap
        while heap:
            record = heap[0]
            if record.name is not None or (
                record.others is _SUPERSEDED and self._take_over(record) is not None
            ):
                if record.sequence == record[1]:
                    return record[0]
                heapq.heappop(heap)
                self._push_next(record)
            else:
                heapq.heappop(heap)
        return None

    def _take_over(self, record: _Key) -> str | None:
        """A record superseded by an earlier head, at the top of the heap: when its key's head
        came back to the timer it was pushed for, the two entries are equal and the first one
        out stands for it (the other one is the dead one).  The name of that timer, or None."""
        live = self._keys.get(record.key)
        if live is None or live[1] != record[1]:
            return None
        record.name, record.due, record.sequence, record.others = (
            live.name,
            live.due,
            live.sequence,
            live.others,
        )
        live.name, live.others = None, _SUPERSEDED
        self._keys[record.key] = record
        return record.name

    def _push_next(self, record: _Key) -> None:
        """The head of a live key came out: its earliest timer goes back in the heap."""
        _stand_for_earliest(record)
        heapq.heappush(self._heap, record)

    def _rebuild(self) -> None:
        heap = list(self._keys.values())
        for record in heap:
            _stand_for_earliest(record)
        heapq.heapify(heap)
        self._heap[:] = heap


def _stand_for_earliest(record: _Key) -> None:
    """Make the record (out of the heap) stand for its key's earliest timer (of a few)."""
    others = record.others
    if others is not None:
        for index, (name, due, sequence) in enumerate(others):
            if due < record.due or (due == record.due and sequence < record.sequence):
                assert record.name is not None
                others[index] = (record.name, record.due, record.sequence)
                record.name, record.due, record.sequence = name, due, sequence
    record[0], record[1] = record.due, record.sequence


def _others_than(record: _Key, name: str) -> list[_Timer] | None:
    """The armed timers of a record but ``name``, for a new record of its key (the old one dies)."""
    assert record.name is not None
    timers = [(record.name, record.due, record.sequence), *(record.others or ())]
    record.name, record.others = None, _SUPERSEDED
    return [timer for timer in timers if timer[0] != name] or None
