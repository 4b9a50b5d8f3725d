"""SipStack's timers: one delayed call on the clock in front of a heap of armed timers."""

from __future__ import annotations

from collections.abc import Hashable

from twisted.internet.task import Clock

from scaserver.edge.stack import SipStack, Transports
from scaserver.edge.timerheap import REBUILD_SLACK
from scaserver.events import EventBus
from scaserver.sip.actions import Action, CancelTimer, StartTimer
from tests.unit.edge.doubles import FakeCore, LogCapture


def build(core: FakeCore) -> tuple[SipStack, Clock]:
    clock = Clock()
    return SipStack(core, clock, Transports(), EventBus()), clock


def wakeups(clock: Clock) -> list[float]:
    """When the clock's pending delayed calls fire."""
    return [call.getTime() for call in clock.calls]


def test_a_timer_fires_at_its_time_not_before() -> None:
    stack, clock = build(core := FakeCore())
    clock.advance(10)
    stack.run([StartTimer("tx1", "F", 32.0)])
    clock.advance(31.9)
    assert core.fired == []
    clock.advance(0.1)
    assert core.fired == [("tx1", "F", 42.0)]
    assert wakeups(clock) == []


def test_a_cancelled_timer_never_fires_and_its_wakeup_goes() -> None:
    stack, clock = build(core := FakeCore())
    stack.run([StartTimer("tx1", "E", 0.5), CancelTimer("tx1", "E")])
    assert wakeups(clock) == []
    clock.advance(100)
    assert core.fired == []


def test_a_cancelled_earliest_timer_leaves_the_later_ones() -> None:
    stack, clock = build(core := FakeCore())
    stack.run([StartTimer("tx1", "E", 0.5), StartTimer("tx2", "E", 2.0), CancelTimer("tx1", "E")])
    clock.advance(1.0)
    assert core.fired == []
    clock.advance(1.0)
    assert core.fired == [("tx2", "E", 2.0)]


def test_rearming_the_same_timer_replaces_it_earlier_or_later() -> None:
    stack, clock = build(core := FakeCore())
    stack.run([StartTimer("tx1", "E", 5.0), StartTimer("tx1", "E", 1.0), StartTimer("tx2", "E", 1.0)])
    stack.run([StartTimer("tx2", "E", 3.0)])
    clock.advance(1.0)
    assert core.fired == [("tx1", "E", 1.0)]
    clock.advance(1.0)
    assert core.fired == [("tx1", "E", 1.0)]
    clock.advance(1.0)
    assert core.fired == [("tx1", "E", 1.0), ("tx2", "E", 3.0)]
    clock.advance(10)
    assert len(core.fired) == 2
    assert stack.armed_timers == frozenset()


def test_timers_due_at_one_instant_fire_in_arming_order_in_one_wakeup() -> None:
    stack, clock = build(core := FakeCore())
    keys = [f"tx{n}" for n in range(50)]
    stack.run([StartTimer(key, "K", 5.0) for key in reversed(keys[25:])])
    stack.run([StartTimer(key, "K", 5.0) for key in keys[:25]])
    stack.run([StartTimer("early", "K", 4.0)])
    assert len(clock.calls) == 1
    clock.advance(5)
    assert [key for key, _, _ in core.fired] == ["early", *reversed(keys[25:]), *keys[:25]]


def test_timers_fire_in_due_order_whatever_their_arming_order() -> None:
    stack, clock = build(core := FakeCore())
    stack.run([StartTimer("c", "B", 3.0), StartTimer("a", "B", 1.0), StartTimer("b", "B", 2.0)])
    clock.advance(10)
    assert [(key, now) for key, _, now in core.fired] == [("a", 10.0), ("b", 10.0), ("c", 10.0)]


def test_a_timer_armed_for_now_by_a_firing_timer_fires_on_the_next_wakeup() -> None:
    def fire(key: Hashable, name: str, now: float) -> list[Action]:
        return [StartTimer("again", "K", 0.0)] if key == "first" else []

    stack, clock = build(core := FakeCore(on_fire=fire))
    stack.run([StartTimer("first", "K", 1.0), StartTimer("second", "K", 1.0)])
    clock.advance(1.0)  # task.Clock runs a delayed call made for now within the same advance
    assert [key for key, _, _ in core.fired] == ["first", "second", "again"]
    assert [now for _, _, now in core.fired] == [1.0, 1.0, 1.0]
    assert wakeups(clock) == []


def test_a_timer_rearming_itself_for_now_does_not_loop_within_one_wakeup() -> None:
    stack, clock = build(core := FakeCore(on_fire=lambda key, name, now: [StartTimer(key, name, 0.0)]))
    stack.run([StartTimer("tx1", "A", 1.0)])
    [wakeup] = clock.calls
    clock.rightNow = 1.0
    clock.calls.remove(wakeup)
    wakeup.func()  # one wake-up, run as the reactor runs it (task.Clock.advance would loop)
    assert core.fired == [("tx1", "A", 1.0)]
    assert wakeups(clock) == [1.0]
    assert stack.armed_timers == {("tx1", "A")}


def test_a_timer_fired_in_a_wakeup_can_cancel_one_due_in_the_same_wakeup() -> None:
    def fire(key: Hashable, name: str, now: float) -> list[Action]:
        return [CancelTimer("tx2", "B")] if key == "tx1" else []

    stack, clock = build(core := FakeCore(on_fire=fire))
    stack.run([StartTimer("tx1", "B", 1.0), StartTimer("tx2", "B", 1.0), StartTimer("tx3", "B", 1.0)])
    clock.advance(1)
    assert [key for key, _, _ in core.fired] == ["tx1", "tx3"]


def test_the_one_wakeup_moves_earlier_for_an_earlier_timer_only() -> None:
    stack, clock = build(FakeCore())
    stack.run([StartTimer("tx1", "F", 32.0)])
    assert wakeups(clock) == [32.0]
    stack.run([StartTimer("tx2", "F", 40.0)])
    assert wakeups(clock) == [32.0]
    stack.run([StartTimer("tx3", "E", 0.5)])
    assert wakeups(clock) == [0.5]
    clock.advance(0.5)
    assert wakeups(clock) == [32.0]


def test_a_failing_timer_is_logged_and_the_others_of_its_wakeup_fire() -> None:
    def fire(key: Hashable, name: str, now: float) -> list[Action]:
        if key == "bad":
            raise ValueError("bad timer")
        return []

    stack, clock = build(core := FakeCore(on_fire=fire))
    capture = LogCapture()
    stack._log = capture.logger()
    stack.run([StartTimer("bad", "B", 1.0), StartTimer("good", "B", 1.0), StartTimer("later", "B", 2.0)])
    clock.advance(1)
    assert [key for key, _, _ in core.fired] == ["bad", "good"]
    assert capture.levels() == ["critical"]
    assert "unhandled error in timer B of 'bad'" in capture.texts()[0]
    clock.advance(1)
    assert [key for key, _, _ in core.fired] == ["bad", "good", "later"]


def test_dead_entries_are_dropped_and_live_timers_kept() -> None:
    stack, clock = build(core := FakeCore())
    stack.run([StartTimer("keep", "F", 50.0)])
    stack.run([StartTimer("churn", "E", float(n % 7 + 1)) for n in range(3 * REBUILD_SLACK)])
    stack.run([StartTimer(("tx", n), "K", 5.0) for n in range(10)])
    stack.run([CancelTimer(("tx", n), "K") for n in range(0, 10, 2)])
    assert stack._timers.entries <= 2 * len(stack._timers) + REBUILD_SLACK + 1
    clock.advance(100)
    assert sorted(map(repr, (key for key, _, _ in core.fired))) == sorted(
        map(repr, ["churn", "keep", *[("tx", n) for n in range(1, 10, 2)]])
    )
    assert stack._timers.entries == 0


def test_stop_disarms_every_timer_and_the_wakeup() -> None:
    stack, clock = build(core := FakeCore())
    stack.startService()
    stack.run([StartTimer("tx1", "F", 1.0), StartTimer("tx2", "F", 2.0)])
    stack.stopService()
    assert wakeups(clock) == [] and stack.armed_timers == frozenset()
    clock.advance(5)
    assert core.fired == []
