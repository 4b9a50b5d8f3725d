"""When each live subscription expires, behind one sweep timer (sca.md section 9).

A timer per subscription costs the edge a delayed call and a timer-table entry each (about
800 bytes in the server, and a larger reactor heap for every other timer to sift through).
:class:`ExpiryQueue` keeps the expiry instants in a heap instead and asks for one timer,
:data:`SWEEP_KEY` / :data:`EXPIRY_TIMER`, at the earliest of them.  When it fires, the
subscriptions whose instant has come are due, and the timer is asked again for the next one.

Granularity: the sweep timer is moved earlier only when an expiry comes more than
``late_s`` before the instant it is armed for, so that a burst of subscriptions does not
restart it once each.  An expiry is therefore handled at most ``late_s`` after its instant,
and exactly on it when it is the earliest one at the moment it is armed.  Pure: ``now`` is
passed in, the timer is a ``StartTimer`` action.
"""

from __future__ import annotations

import enum
import heapq
import itertools
from typing import Final

import attrs

from scaserver.sca.subscription import SubscriptionKey
from scaserver.sip.actions import EngineAction, StartTimer

#: Timer name of the subscription expiry sweep (sca.md section 9).
EXPIRY_TIMER: Final = "sca-expiry"

#: At most this long after its instant is an expiry handled (the sweep's granularity).
EXPIRY_LATENESS_S: Final = 1.0


class ExpiryTimerKey(enum.Enum):
    """The key of the one expiry sweep timer."""

    SWEEP = "sca-subscriptions"


SWEEP_KEY: Final = ExpiryTimerKey.SWEEP

#: The heap is rebuilt from the live instants when it holds this many more entries than
#: twice their number (entries of refreshed or removed subscriptions are skipped lazily).
_COMPACT_SLACK: Final = 1024


@attrs.define
class ExpiryQueue:
    """The expiry instant of each live subscription, and the sweep timer's instant."""

    late_s: float = EXPIRY_LATENESS_S
    _due: dict[SubscriptionKey, float] = attrs.field(factory=dict, init=False)
    _heap: list[tuple[float, int, SubscriptionKey]] = attrs.field(factory=list, init=False)
    _order: itertools.count[int] = attrs.field(factory=itertools.count, init=False)
    _armed_at: float | None = attrs.field(default=None, init=False)

    def __len__(self) -> int:
        return len(self._due)

    def expires_at(self, key: SubscriptionKey) -> float | None:
        return self._due.get(key)

    @property
    def armed_at(self) -> float | None:
        """When the sweep timer fires (None: not armed)."""
        return self._armed_at

    def arm(self, key: SubscriptionKey, at: float, now: float) -> list[EngineAction]:
        """``key`` expires at ``at`` (replacing its previous instant); the sweep timer when it
        must move earlier."""
        self._due[key] = at
        heapq.heappush(self._heap, (at, next(self._order), key))
        if len(self._heap) > 2 * len(self._due) + _COMPACT_SLACK:
            self._compact()
        return self._rearm(now)

    def cancel(self, key: SubscriptionKey) -> None:
        """``key`` no longer expires (removed); its heap entry is skipped when reached."""
        self._due.pop(key, None)

    def sweep(self, now: float) -> list[SubscriptionKey]:
        """The sweep timer fired: the keys whose instant has come, in instant order (each
        forgotten; arm it again to keep it).  Call :meth:`rearm` once they are handled."""
        self._armed_at = None
        due: list[SubscriptionKey] = []
        heap = self._heap
        while heap and heap[0][0] <= now + 1e-6:
            at, _, key = heapq.heappop(heap)
            if self._due.get(key) == at:
                del self._due[key]
                due.append(key)
        return due

    def rearm(self, now: float) -> list[EngineAction]:
        """The sweep timer for the earliest instant, unless it is armed early enough."""
        return self._rearm(now)

    def _rearm(self, now: float) -> list[EngineAction]:
        heap = self._heap
        while heap and self._due.get(heap[0][2]) != heap[0][0]:
            heapq.heappop(heap)  # refreshed or removed since
        if not heap:
            return []
        earliest = heap[0][0]
        if self._armed_at is not None and earliest >= self._armed_at - self.late_s:
            return []
        self._armed_at = earliest
        return [StartTimer(SWEEP_KEY, EXPIRY_TIMER, max(0.0, earliest - now))]

    def _compact(self) -> None:
        self._heap = [(at, next(self._order), key) for key, at in self._due.items()]
        heapq.heapify(self._heap)
