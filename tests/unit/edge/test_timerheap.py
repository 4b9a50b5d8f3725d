"""TimerHeap: armed timers by due instant, lazy cancellation, bounded garbage."""

from __future__ import annotations

from scaserver.edge.timerheap import REBUILD_SLACK, TimerHeap


def drain(timers: TimerHeap, until: float) -> list[tuple[object, str]]:
    before = timers.mark()
    fired = []
    while (due := timers.pop_due(until, before)) is not None:
        fired.append(due)
    return fired


def test_due_timers_come_out_by_instant_then_arming_order() -> None:
    timers = TimerHeap()
    timers.arm("b", "E", 2.0)
    timers.arm("a", "E", 1.0)
    timers.arm("c", "E", 2.0)
    timers.arm("d", "E", 3.0)
    assert drain(timers, 2.0) == [("a", "E"), ("b", "E"), ("c", "E")]
    assert timers.armed == {("d", "E")}
    assert timers.next_due() == 3.0


def test_a_cancelled_or_rearmed_entry_is_skipped() -> None:
    timers = TimerHeap()
    timers.arm("a", "E", 1.0)
    timers.arm("b", "E", 1.0)
    timers.arm("a", "E", 4.0)
    assert not timers.cancel("b", "E")
    assert not timers.cancel("nobody", "E")
    assert timers.next_due() == 4.0
    assert drain(timers, 3.0) == []
    assert drain(timers, 4.0) == [("a", "E")]


def test_cancelling_the_last_timer_empties_the_heap() -> None:
    timers = TimerHeap()
    timers.arm("a", "E", 1.0)
    timers.arm("a", "E", 2.0)
    assert timers.cancel("a", "E")
    assert timers.entries == 0 and timers.next_due() is None


def test_entries_armed_after_the_mark_wait() -> None:
    timers = TimerHeap()
    timers.arm("old", "K", 1.0)
    before = timers.mark()
    timers.arm("new", "K", 1.0)
    assert timers.pop_due(1.0, before) == ("old", "K")
    assert timers.pop_due(1.0, before) is None
    assert timers.pop_due(1.0, timers.mark()) == ("new", "K")


def test_the_heap_is_rebuilt_from_live_entries_when_dead_ones_pile_up() -> None:
    timers = TimerHeap()
    for n in range(100):
        timers.arm(("live", n), "F", 100.0 + n)
    for n in range(5 * REBUILD_SLACK):
        timers.arm("churn", "E", float(n % 50))
        assert timers.entries - len(timers) <= max(REBUILD_SLACK, len(timers)) + 1
    assert len(timers) == 101
    assert drain(timers, 1000.0) == [("churn", "E"), *[(("live", n), "F") for n in range(100)]]
