"""TimerLedger: the actions of a machine's timers and what it keeps armed, whichever way a
timer was armed (one at a time, or a machine's first two at once)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from scaserver.sip.actions import CancelTimer, StartTimer
from scaserver.sip.keys import ClientKey
from scaserver.sip.timers import TimerLedger, TimerName

KEY = ClientKey("z9hG4bK-ledger", "NOTIFY")
E, F, K = TimerName.E, TimerName.F, TimerName.K


def both_started() -> TimerLedger:
    ledger = TimerLedger(KEY)
    assert ledger.start_both(E, 0.5, F, 32.0) == (StartTimer(KEY, E, 0.5), StartTimer(KEY, F, 32.0))
    return ledger


def one_by_one() -> TimerLedger:
    ledger = TimerLedger(KEY)
    started = [ledger.start(E, 0.5), ledger.start(F, 32.0)]
    assert started == [StartTimer(KEY, E, 0.5), StartTimer(KEY, F, 32.0)]
    return ledger


@pytest.mark.parametrize("make", [both_started, one_by_one])
def test_replace_cancels_both_in_order_and_starts_the_next(make: Callable[[], TimerLedger]) -> None:
    ledger = make()
    assert list(ledger.armed) == [E, F]
    assert ledger.replace(E, F, K, 5.0) == [CancelTimer(KEY, E), CancelTimer(KEY, F), StartTimer(KEY, K, 5.0)]
    assert ledger.armed == (K,)


def test_replace_after_a_retransmission_still_cancels_in_the_order_given() -> None:
    ledger = both_started()
    assert ledger.fired(E)
    assert list(ledger.armed) == [F]
    ledger.start(E, 1.0)
    assert list(ledger.armed) == [F, E]
    assert ledger.replace(E, F, K, 5.0) == [CancelTimer(KEY, E), CancelTimer(KEY, F), StartTimer(KEY, K, 5.0)]
    assert ledger.armed == (K,)


def test_replace_cancels_only_what_is_armed() -> None:
    ledger = TimerLedger(KEY)
    ledger.start(F, 32.0)  # a reliable transport: no timer E
    assert ledger.replace(E, F, K, 0.0) == [CancelTimer(KEY, F), StartTimer(KEY, K, 0.0)]
    assert ledger.armed == (K,)
    assert ledger.replace(E, F, K, 0.0) == [StartTimer(KEY, K, 0.0)]  # K re-armed, nothing cancelled
    assert ledger.armed == (K,)


def test_a_timer_fires_once_and_a_cancelled_one_never() -> None:
    ledger = both_started()
    assert ledger.cancel(F) == [CancelTimer(KEY, F)]
    assert not ledger.fired(F)
    assert ledger.fired(E)
    assert not ledger.fired(E)
    assert ledger.armed == ()
    assert ledger.cancel_all() == []
