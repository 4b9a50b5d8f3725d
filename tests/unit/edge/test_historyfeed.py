"""The history feed works from the facts alone (reporting.md 4.1 ``parked_calls``): it holds no
core, so a fact read after the parked call has left the lot still gives the call its row."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import ParamSpec, TypeVar, cast

import attrs
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.task import Clock

from scaserver.edge.historyfeed import HistoryFeed
from scaserver.edge.stack import TimerClock
from scaserver.edge.writebehind import WriteBehind
from scaserver.events import EventBus
from scaserver.parking.events import ParkStarted
from scaserver.push.gateway import Outcome
from scaserver.registrar.binding import BindingRemoved, RemovalReason
from scaserver.reporting.callhistory import call_uuid
from scaserver.reporting.history import HistoryRecorder
from scaserver.sca.appearance import AppearanceState as S
from scaserver.store.history import HistoryKey, HistoryRow, ParkedCallRecord, ParkOutcome, history_key
from tests.push_rig import AOR, DESK, M1_WOKEN, registered, wakes
from tests.unit.reporting import script

P = ParamSpec("P")
T = TypeVar("T")


class SyncRunner:
    """Runs the flush at once, on the calling thread."""

    def run(self, f: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> Deferred[T]:
        return maybeDeferred(f, *args, **kwargs)


@attrs.define
class RowSink:
    """The history repository's write half, keeping the rows."""

    rows: list[HistoryRow] = attrs.Factory(list)

    def upsert(self, values: Sequence[HistoryRow], /) -> None:
        self.rows += values

    def delete(self, keys: Sequence[HistoryKey], /) -> None:
        raise AssertionError(keys)


def test_park_started_carries_the_parked_invite() -> None:
    r = registered(desk=False)
    invite = r.invite()
    (started,) = r.of(ParkStarted)
    assert started.spec.server_tx == started.server_tx
    assert (started.spec.call_id, started.spec.request.method) == ("call-1@pbx", "INVITE")
    assert started.spec.request.headers.get("From") == invite.headers.get("From")


def test_parked_call_row_from_the_facts_after_the_call_has_left_the_lot() -> None:
    r = registered()
    r.invite()
    (push,) = r.pushes()
    (to_desk,) = r.to(DESK, "INVITE")
    r.answer(to_desk, 486, DESK, "desk")
    r.push_result(push, Outcome.SENT, 202)
    wakes(r, M1_WOKEN, "TOK1", "m1-b")
    (to_mobile,) = r.to(M1_WOKEN, "INVITE")
    r.answer(to_mobile, 200, M1_WOKEN, "mob")
    assert r.core.parking is not None and len(r.core.parking.lot) == 0  # the call has moved on
    sink = RowSink()
    writes = WriteBehind(cast(TimerClock, Clock()), SyncRunner())
    recorder = HistoryRecorder(line_of=lambda aor: None, local_domains=["example.com"])
    channel = writes.channel("history", sink, history_key)
    feed = HistoryFeed(recorder, channel, lines=tuple, clock=lambda: r.now)
    bus = EventBus()
    feed.attach(bus)
    for fact in r.facts:  # published only now, when the lot no longer holds the call
        bus.publish(fact)
    writes.flush()
    (parked,) = [row for row in sink.rows if isinstance(row, ParkedCallRecord)]
    assert (parked.call_uuid, parked.ruri, parked.outcome, parked.final_sip_code) == (
        call_uuid("call-1@pbx", "pbx1"),
        AOR,
        ParkOutcome.ANSWERED_AFTER_WAKE,
        200,
    )


def test_the_feed_queues_the_rows_the_recorder_makes_of_each_fact() -> None:
    """Subscribed per fact type, the feed queues what ``HistoryRecorder.record`` returns for
    each fact, in order: calls, appearances, accounting and registrations."""
    t0 = 1_732_521_600.0
    answered, cancelled = script.Call("feed-1"), script.Call("feed-2", caller_tag="ct2")
    added = script.registered(t0, script.LINE, script.DESK_A)
    facts: list[object] = [
        added,
        answered.forwarded(t0),
        script.change(t0 + 0.1, 1, S.IDLE, S.ALERTING, "I1", None, "feed-1"),
        answered.ringing(t0 + 1),
        answered.answered(t0 + 2, script.DESK_A),
        script.change(t0 + 2, 1, S.ALERTING, S.ACTIVE, "I3", script.DESK_A, "feed-1"),
        cancelled.forwarded(t0 + 3),
        *cancelled.cancelled(t0 + 4),
        script.change(t0 + 5, 1, S.ACTIVE, S.HELD, "O14", script.DESK_A, "feed-1"),
        script.change(t0 + 6, 1, S.HELD, S.ACTIVE, "O19", script.DESK_A, "feed-1"),
        *answered.bye(t0 + 9),
        script.change(t0 + 9, 1, S.ACTIVE, S.IDLE, "O18", script.DESK_A, "feed-1"),
        BindingRemoved(added.binding, RemovalReason.UNREGISTERED, t0 + 10),
    ]
    expected: list[HistoryRow] = []
    recorder = HistoryRecorder(
        line_of=script.line_of, local_domains=["example.com"], device_of=script.device_of
    )
    for fact in facts:
        expected += recorder.record(fact)  # type: ignore[arg-type]
    sink = RowSink()
    writes = WriteBehind(cast(TimerClock, Clock()), SyncRunner())
    feed = HistoryFeed(
        HistoryRecorder(line_of=script.line_of, local_domains=["example.com"], device_of=script.device_of),
        writes.channel("history", sink, history_key),
        lines=tuple,
        clock=lambda: t0,
    )
    bus = EventBus()
    feed.attach(bus)
    for fact in facts:
        bus.publish(fact)
        writes.flush()  # each fact's rows written before the next: none coalesced
    assert len(expected) > 10
    assert sink.rows == expected
