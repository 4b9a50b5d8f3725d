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


def test_many_keys_with_a_few_timers_fire_as_a_plain_table_would_with_marks() -> None:
    for seed in range(30):
        compare_with_a_plain_table(random.Random(seed), seed)


def compare_with_a_plain_table(rng: random.Random, seed: int) -> None:
    """Transactions' timers on many keys, re-armed, cancelled and fired (by wake-ups whose
    handlers arm and cancel more), against a plain table of armed timers, earliest first."""
    timers = TimerHeap()
    armed: dict[tuple[int, str], tuple[float, int]] = {}
    order = 0  # the heap's sequence numbers: one per arming and per mark

    def arm(key: int, name: str, due: float) -> None:
        nonlocal order
        timers.arm(key, name, due)
        armed[key, name] = (due, order)
        order += 1

    def cancel(key: int, name: str) -> None:
        emptied = timers.cancel(key, name)
        armed.pop((key, name), None)
        assert emptied == (not armed), seed

    now = 0.0
    for _ in range(1500):
        roll = rng.random()
        key, name = rng.randrange(80), rng.choice("EFKJ")
        if roll < 0.15:  # a transaction's timers: E and F together, or one alone
            for name in rng.choice((("E", "F"), ("K",), ("J",), ("E", "F", "K"))):
                arm(key, name, now + rng.choice((0.0, 0.5, 1.0, 4.0, 5.0, 32.0)))
        elif roll < 0.4:  # a re-arm (earlier, later or at the same instant) or one more timer
            arm(key, name, now + rng.choice((0.0, 0.25, 0.5, 1.0, 5.0)))
        elif roll < 0.65:
            cancel(key, name)
        elif roll < 0.66:
            timers.clear()
            armed.clear()
        else:  # a wake-up: what is due and was armed before the mark comes out, earliest first
            now += rng.choice((0.0, 0.25, 0.5, 1.0, 5.0))
            before = timers.mark()
            assert before == order, seed
            order += 1
            while True:
                due = sorted(
                    (instant, timer)
                    for timer, instant in armed.items()
                    if instant[0] <= now and instant[1] < before
                )
                fired = timers.pop_due(now, before)
                assert fired == (due[0][1] if due else None), seed
                if fired is None:
                    break
                del armed[fired]
                if rng.random() < 0.4:  # the timer's handler arms or cancels one of its key's
                    if rng.random() < 0.5:
                        arm(fired[0], rng.choice("EFKJ"), now + rng.choice((0.0, 0.5)))
                    else:
                        cancel(fired[0], rng.choice("EFKJ"))
        assert timers.armed == frozenset(armed) and len(timers) == len(armed), seed
        assert timers.next_due() == min((due for due, _ in armed.values()), default=None), seed


def test_a_head_back_at_a_superseded_entrys_timer_is_one_of_two_equal_entries() -> None:
    timers = TimerHeap()
    timers.arm("tx", "E", 2.0)
    timers.arm("tx", "G", 1.0)  # an earlier head: E's entry stays in the heap behind it
    assert drain(timers, 1.0) == [("tx", "G")]
    assert timers.entries == 2  # E's entry, and the key's head back at E: the same instant
    assert timers.next_due() == 2.0 and timers.entries == 2
    assert drain(timers, 2.0) == [("tx", "E")]
    assert timers.entries == 0 and timers.next_due() is None
