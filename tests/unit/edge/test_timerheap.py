"""TimerHeap: armed timers by due instant, lazy cancellation, bounded garbage."""

from __future__ import annotations

import random

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


def test_a_transactions_later_timers_wait_outside_the_heap_behind_its_earliest() -> None:
    timers = TimerHeap()
    timers.arm("subscription", "expiry", 100.0)
    timers.arm("nict", "E", 0.5)
    timers.arm("nict", "F", 32.0)
    assert timers.entries == 2 and len(timers) == 3
    assert not timers.cancel("nict", "E")  # a prompt final response: E and F cancelled, K armed
    assert not timers.cancel("nict", "F")
    timers.arm("nict", "K", 5.0)
    assert timers.entries == 3  # the dead head of E until its instant, K, the expiry
    assert drain(timers, 0.5) == [] and timers.entries == 2
    assert timers.next_due() == 5.0
    assert drain(timers, 5.0) == [("nict", "K")]
    assert timers.entries == 1 and len(timers) == 1


def test_a_keys_next_timer_fires_when_its_head_was_cancelled_or_moved_later() -> None:
    timers = TimerHeap()
    timers.arm("tx", "E", 1.0)
    timers.arm("tx", "F", 3.0)
    timers.arm("other", "E", 2.0)
    timers.cancel("tx", "E")
    assert timers.next_due() == 2.0
    timers.arm("other", "E", 4.0)  # re-armed later: its head now stands for nothing due at 2
    assert timers.next_due() == 3.0
    timers.arm("tx", "G", 0.5)  # earlier than the key's head: it becomes the head
    assert drain(timers, 10.0) == [("tx", "G"), ("tx", "F"), ("other", "E")]
    assert timers.entries == 0 and timers.armed == frozenset()


def test_the_heap_fires_what_a_plain_table_of_armed_timers_fires() -> None:
    for seed in range(40):
        rng = random.Random(seed)
        timers = TimerHeap()
        armed: dict[tuple[str, str], tuple[float, int]] = {}
        order = 0
        now = 0.0
        for _ in range(300):
            key, name = rng.choice("abcde"), rng.choice("EFKJ")
            roll = rng.random()
            if roll < 0.5:
                due = now + rng.choice((0.0, 0.5, 1.0, 2.0, 4.0, 32.0))
                timers.arm(key, name, due)
                armed[key, name] = (due, order)
                order += 1
            elif roll < 0.8:
                timers.cancel(key, name)
                armed.pop((key, name), None)
            else:
                now += rng.choice((0.0, 0.5, 1.0, 3.0))
                expected = sorted((instant, timer) for timer, instant in armed.items() if instant[0] <= now)
                assert drain(timers, now) == [timer for _, timer in expected], seed
                for _, timer in expected:
                    del armed[timer]
            assert timers.armed == frozenset(armed) and len(timers) == len(armed)
            assert timers.next_due() == min((due for due, _ in armed.values()), default=None)
