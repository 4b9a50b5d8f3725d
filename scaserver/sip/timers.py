"""Transaction timer values and names (RFC 3261 section 17 and Table 4, RFC 6026 section 8.11).

The pure core never reads a clock: a transaction asks for a timer with
:class:`scaserver.sip.actions.StartTimer` whose ``name`` is a :class:`TimerName`
value, and the edge hands ``(key, name)`` back when it fires.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from types import MappingProxyType
from typing import Final

import attrs

from scaserver.sip.actions import Action, CancelTimer, StartTimer
from scaserver.sip.keys import TransactionKey


@attrs.frozen
class TimerConfig:
    """The base timer values, in seconds.

    ``t1`` is the round-trip time estimate (default 500 ms), ``t2`` the maximum
    retransmission interval for non-INVITE requests and INVITE responses, ``t4``
    the maximum time a message stays in the network (RFC 3261 section 17.1.1.1 and
    Table 4).  ``trying_delay`` is how long an INVITE server transaction waits for
    the transaction user before it sends ``100 Trying`` itself (section 17.2.1,
    "200 ms").  ``timer_c`` is the proxy's INVITE transaction timer (section
    16.6 step 11, "greater than 3 minutes"); the transaction layer does not arm it.
    """

    t1: float = 0.5
    t2: float = 4.0
    t4: float = 5.0
    trying_delay: float = 0.2
    timer_c: float = 180.0

    @property
    def timeout(self) -> float:
        """64*T1: timers B, F, H, J (unreliable), and RFC 6026's L and M."""
        return 64 * self.t1

    def timer_d(self, reliable: bool) -> float:
        """Timer D: wait for response retransmissions, 32 s on UDP ("> 32s"), 0 on reliable transports."""
        return 0.0 if reliable else 32.0

    def timer_i(self, reliable: bool) -> float:
        """Timer I: wait for ACK retransmissions, T4 on UDP, 0 on reliable transports."""
        return 0.0 if reliable else self.t4

    def timer_j(self, reliable: bool) -> float:
        """Timer J: wait for non-INVITE request retransmissions, 64*T1 on UDP, 0 on reliable transports."""
        return 0.0 if reliable else self.timeout

    def timer_k(self, reliable: bool) -> float:
        """Timer K: wait for response retransmissions, T4 on UDP, 0 on reliable transports."""
        return 0.0 if reliable else self.t4


class TimerName(enum.StrEnum):
    """Timer names of RFC 3261 Table 4 and RFC 6026 section 8.11 (L, M).

    The value is the ``name`` string carried by StartTimer and CancelTimer.
    """

    A = "A"  # INVITE request retransmit interval (UDP only), starts at T1, doubles
    B = "B"  # INVITE transaction timeout, 64*T1
    D = "D"  # wait time for response retransmits
    E = "E"  # non-INVITE request retransmit interval (UDP only), T1 doubling up to T2
    F = "F"  # non-INVITE transaction timeout, 64*T1
    G = "G"  # INVITE response retransmit interval (UDP only), T1 doubling up to T2
    H = "H"  # wait time for ACK receipt, 64*T1
    I = "I"  # wait time for ACK retransmits  # noqa: E741
    J = "J"  # wait time for non-INVITE request retransmits
    K = "K"  # wait time for non-INVITE response retransmits
    L = "L"  # RFC 6026: INVITE server, wait time for 2xx retransmissions from the TU and ACKs
    M = "M"  # RFC 6026: INVITE client, wait time for 2xx retransmissions
    TRYING_100 = "TRYING_100"  # INVITE server: send 100 Trying if the TU has not answered (17.2.1)


TIMER_NAMES: Final = {timer.value: timer for timer in TimerName}
"""The timer of each name: a dict look-up, where ``TimerName(name)`` runs the enum's
``__call__`` and ``__new__`` in Python."""

_EVERY_TIMER: Final = tuple(TimerName)
"""Every timer name in declaration order (the order ``cancel_all`` cancels them in); iterating
the enum class itself runs a generator over its member map on every call."""


@attrs.define
class TimerLedger:
    """Which timers a machine has armed, so that leaving a state cancels what is pending.

    A tuple of at most a few names, not a set: every live transaction has a ledger, most of
    them wait out timer J or K with one timer armed, and an empty set alone is 216 bytes."""

    key: TransactionKey
    armed: tuple[TimerName, ...] = ()

    def start(self, name: TimerName, delay: float) -> StartTimer:
        armed = self.armed
        if not armed:
            self.armed = _ALONE[name]
        elif name not in armed:
            self.armed = _PAIRS[armed[0]][name] if len(armed) == 1 else (*armed, name)
        return StartTimer(self.key, name, delay)

    def start_both(
        self, first: TimerName, first_delay: float, second: TimerName, second_delay: float
    ) -> tuple[StartTimer, StartTimer]:
        """Start ``first``, then ``second`` (distinct) on a ledger with no timer armed: a
        machine's first two timers (E and F, A and B) in one call."""
        assert not self.armed
        self.armed = _PAIRS[first][second]
        key = self.key
        return StartTimer(key, first, first_delay), StartTimer(key, second, second_delay)

    def replace(self, first: TimerName, second: TimerName, name: TimerName, delay: float) -> list[Action]:
        """Cancel those of ``first`` and ``second`` (distinct) that are armed, in that order, then
        start ``name``: a machine settling (E and F give way to K, A and B to M), in one call
        and one list."""
        armed, key = self.armed, self.key
        if armed is _PAIRS[first][second]:  # the usual case: both armed since start_both
            self.armed = _ALONE[name]
            return [CancelTimer(key, first), CancelTimer(key, second), StartTimer(key, name, delay)]
        actions = self.cancel(first, second)
        actions.append(self.start(name, delay))
        return actions

    def cancel(self, *names: TimerName) -> list[Action]:
        """Cancel those of ``names`` (distinct) that are armed, in the order given."""
        armed, key = self.armed, self.key
        cancelled: list[Action] = []
        for name in names:
            if name in armed:
                cancelled.append(CancelTimer(key, name))
        if len(cancelled) == len(armed):
            self.armed = ()  # the usual case: a final response stops both E and F, or A and B
        else:
            for name in names:
                if name in self.armed:
                    self._disarm(name)
        return cancelled

    def cancel_all(self) -> list[Action]:
        armed = self.armed
        if not armed:
            return []  # the usual case: the timer that ends the transaction has just fired
        return self.cancel(*[name for name in _EVERY_TIMER if name in armed])

    def fired(self, name: TimerName) -> bool:
        """Disarm ``name``; False when it was not armed (cancelled, yet it fired: a race)."""
        armed = self.armed
        if name not in armed:
            return False
        if len(armed) == 1:
            self.armed = ()  # the usual case: the one timer armed (J, K) ends the transaction
        else:
            self._disarm(name)
        return True

    def _disarm(self, name: TimerName) -> None:
        """``name`` is armed: take it out."""
        armed = self.armed
        if len(armed) == 1:
            self.armed = ()
        elif len(armed) == 2:
            self.armed = _ALONE[armed[1] if armed[0] == name else armed[0]]
        else:
            self.armed = tuple([other for other in armed if other != name])


_ALONE: Final[Mapping[TimerName, tuple[TimerName]]] = MappingProxyType({name: (name,) for name in TimerName})
"""One shared tuple per name for a ledger with one timer armed, the usual one (J or K): a
tuple of enum members stays tracked by the cyclic garbage collector, and one per
transaction made a tracked object more for each live transaction."""

_PAIRS: Final[Mapping[TimerName, Mapping[TimerName, tuple[TimerName, TimerName]]]] = MappingProxyType(
    {first: MappingProxyType({second: (first, second) for second in TimerName}) for first in TimerName}
)
"""One shared tuple per ordered pair of names, for a ledger with two timers armed (E and F of
every non-INVITE client transaction while it waits for its response): no tracked tuple per
transaction, and :meth:`TimerLedger.replace` knows its usual case by identity."""
