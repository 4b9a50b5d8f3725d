"""Paced: bounded batches, one per reactor turn, on the injected clock."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import pytest
from twisted.internet.task import Clock

from scaserver.edge.pacing import ROOM_CHECK_S, Paced


class TurnClock(Clock):
    """``task.Clock`` whose :meth:`turn` runs only the calls due before it started, as one
    reactor turn does (``Clock.advance`` also runs the zero-delay calls they make)."""

    def turn(self, seconds: float = 0.0) -> None:
        self.rightNow += seconds
        due = [call for call in self.calls if call.getTime() <= self.rightNow]
        for call in due:
            self.calls.remove(call)
            call.called = 1
            function: Callable[..., object] = call.func
            function(*call.args, **call.kw)


def test_items_go_in_bounded_batches_one_per_turn() -> None:
    clock = TurnClock()
    batches: list[list[int]] = []
    paced = Paced(clock, list(range(7)), lambda batch, now: batches.append(list(batch)), batch=3)
    paced.start()
    assert batches == []  # nothing in the caller's turn
    clock.turn()
    assert batches == [[0, 1, 2]]
    assert not paced.done
    clock.turn()
    clock.turn()
    assert batches == [[0, 1, 2], [3, 4, 5], [6]]
    assert paced.done
    assert clock.getDelayedCalls() == []


def test_each_batch_gets_the_clock_of_its_turn() -> None:
    clock = TurnClock()
    seen: list[float] = []
    Paced(clock, "abcd", lambda batch, now: seen.append(now), batch=2).start()
    clock.turn(5.0)
    clock.turn(1.5)
    assert seen == [5.0, 6.5]


def test_a_failed_batch_is_logged_and_the_rest_still_go() -> None:
    clock = TurnClock()
    done: list[Sequence[int]] = []

    def step(batch: Sequence[int], now: float) -> None:
        if 0 in batch:
            raise RuntimeError("bad batch")
        done.append(batch)

    Paced(clock, [0, 1, 2, 3], step, batch=2).start()
    clock.turn()
    clock.turn()
    assert done == [[2, 3]]


def test_stop_ends_the_run_and_nothing_is_started_for_no_items() -> None:
    clock = TurnClock()
    batches: list[Sequence[int]] = []
    paced = Paced(clock, [1, 2, 3], lambda batch, now: batches.append(batch), batch=1)
    paced.start()
    clock.turn()
    paced.stop()
    clock.turn()
    assert batches == [[1]]
    assert paced.done
    empty: Paced[int] = Paced(clock, [], lambda batch, now: batches.append(batch))
    empty.start()
    assert empty.done and clock.getDelayedCalls() == []


def test_a_batch_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        Paced(Clock(), [1], lambda batch, now: None, batch=0)


def test_a_batch_waits_while_there_is_no_room_and_goes_when_there_is() -> None:
    clock = TurnClock()
    batches: list[list[int]] = []
    open_ = [True]
    paced = Paced(
        clock, list(range(6)), lambda batch, now: batches.append(list(batch)), batch=2, room=lambda: open_[0]
    )
    paced.start()
    clock.turn()
    assert batches == [[0, 1]]
    open_[0] = False  # say, the answers to the first batch are not read yet
    clock.turn()
    clock.turn(ROOM_CHECK_S)
    clock.turn(ROOM_CHECK_S)
    assert batches == [[0, 1]]
    open_[0] = True
    clock.turn(ROOM_CHECK_S)
    assert batches == [[0, 1], [2, 3]]
    clock.turn()
    assert batches == [[0, 1], [2, 3], [4, 5]] and paced.done


def test_a_batch_waits_for_room_at_most_max_wait_s() -> None:
    """Phones gone since the restart keep their NOTIFYs' transactions for 32 s: the rest is
    not held up that long."""
    clock = TurnClock()
    batches: list[tuple[list[int], float]] = []
    paced = Paced(
        clock,
        list(range(4)),
        lambda batch, now: batches.append((list(batch), now)),
        batch=2,
        room=lambda: False,
        max_wait_s=0.05,
    )
    paced.start()
    clock.turn()  # no room at 0.0: the wait starts
    turns = 0
    while not paced.done and turns < 20:
        clock.turn(ROOM_CHECK_S)
        turns += 1
    # Each batch went after waiting its 50 ms (a check more or less: 10 ms steps summed in floats).
    [(first, first_at), (second, second_at)] = batches
    assert (first, second) == ([0, 1], [2, 3])
    assert 0.05 <= first_at + 1e-9 <= 0.06 + 1e-9
    assert 0.05 <= second_at - first_at + 1e-9 <= 0.08  # its wait starts at the turn after the first


def test_stop_ends_a_wait_for_room() -> None:
    clock = TurnClock()
    batches: list[Sequence[int]] = []
    paced = Paced(clock, [1, 2], lambda batch, now: batches.append(batch), batch=1, room=lambda: False)
    paced.start()
    clock.turn()
    paced.stop()
    assert clock.getDelayedCalls() == []
    clock.turn(1.0)
    assert batches == [] and paced.done
