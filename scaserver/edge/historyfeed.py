"""The history feed: the facts on the bus turned into reporting history rows (reporting.md),
queued on the write-behind channel so the SIP path never waits for the history either.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TypeVar

from scaserver.edge.writebehind import Channel
from scaserver.events import EventBus
from scaserver.parking.events import (
    BranchAdded,
    BranchAnswered,
    ParkEnded,
    ParkStarted,
    WakeMissed,
    WakeObserved,
)
from scaserver.proxy.events import CallCancelled, CallEnded, RequestForwarded, ResponseRelayed
from scaserver.push.facts import (
    PushAnswered,
    PushRequested,
)
from scaserver.registrar.binding import (
    BindingAdded,
    BindingExpired,
    BindingRefreshed,
    BindingRemoved,
)
from scaserver.reporting.history import HistoryRecorder
from scaserver.reporting.parking import ParkingFact, ParkingHistory
from scaserver.sca.appearance import AppearanceChanged
from scaserver.store.history import HistoryKey, HistoryRow

F = TypeVar("F")


class HistoryFeed:
    """Turns the facts on the bus into reporting history rows (reporting.md) and queues them
    on the write-behind channel: the SIP path never waits for the history either."""

    def __init__(
        self,
        recorder: HistoryRecorder,
        channel: Channel[HistoryKey, HistoryRow],
        *,
        lines: Callable[[], Iterable[str]],
        clock: Callable[[], float],
    ) -> None:
        """``lines`` gives the AoRs of the provisioned shared lines, sampled by :meth:`sample`;
        the facts themselves carry all the feed needs."""
        self._recorder, self._channel, self._lines, self._clock = recorder, channel, lines, clock
        self._parking = ParkingHistory(recorder)

    def attach(self, bus: EventBus) -> None:
        # Each history fact straight to its mapper (one handler per type: no routing by match,
        # no second handler for ResponseRelayed).
        recorder, upsert = self._recorder, self._channel.upsert

        def rows_of(mapper: Callable[[F], list[HistoryRow]]) -> Callable[[F], None]:
            def record(fact: F) -> None:
                for row in mapper(fact):
                    upsert(row)

            return record

        bus.subscribe(AppearanceChanged, rows_of(recorder.appearance_changed))
        bus.subscribe(RequestForwarded, rows_of(recorder.request_forwarded))
        bus.subscribe(ResponseRelayed, self._relayed)
        bus.subscribe(CallCancelled, recorder.call_cancelled)
        bus.subscribe(CallEnded, rows_of(recorder.call_ended))
        binding_changed = rows_of(recorder.binding_changed)
        bus.subscribe(BindingAdded, binding_changed)
        bus.subscribe(BindingRefreshed, binding_changed)
        bus.subscribe(BindingRemoved, binding_changed)
        bus.subscribe(BindingExpired, binding_changed)
        # Push wake-ups and parked calls (push_wakeups, parked_calls); ResponseRelayed gives a
        # parked call its final status (in _relayed).
        mobile_facts: tuple[type[ParkingFact], ...] = (
            ParkStarted, PushRequested, PushAnswered, WakeObserved, WakeMissed,
            BranchAdded, BranchAnswered, ParkEnded,
        )  # fmt: skip
        for mobile_fact in mobile_facts:
            bus.subscribe(mobile_fact, self._record_mobile)

    def _relayed(self, fact: ResponseRelayed) -> None:
        upsert = self._channel.upsert
        for row in self._recorder.response_relayed(fact):
            upsert(row)
        # A relayed response makes a parking row only for a parked call (its final status):
        # with no parked call nor push followed, the parking history is not asked.
        if self._parking.tracked:
            self._record_mobile(fact)

    def _record_mobile(self, fact: ParkingFact) -> None:
        for row in self._parking.record(fact, self._clock()):
            self._channel.upsert(row)

    def sample(self, now: float) -> None:
        for row in self._recorder.sample_lines(now, self._lines()):
            self._channel.upsert(row)
