"""Subscription expiries behind one sweep timer (sca.md section 9): ExpiryQueue alone, then
the engine's timeouts through it."""

from __future__ import annotations

from scaserver.sca.expiry import EXPIRY_LATENESS_S, EXPIRY_TIMER, SWEEP_KEY, ExpiryQueue
from scaserver.sca.subscription import Package, SubscriptionKey, SubscriptionRemoved
from scaserver.sip.actions import StartTimer

from .scenario import CA, CB, LINE, Harness, engine, facts, notifies, subscribe


def _key(n: int) -> SubscriptionKey:
    return SubscriptionKey(LINE, Package.CALL_INFO, CA, f"call-{n}", f"f{n}", f"t{n}")


def test_one_sweep_timer_for_many_expiries_at_the_earliest() -> None:
    queue = ExpiryQueue()
    assert queue.arm(_key(1), 100.0, 0.0) == [StartTimer(SWEEP_KEY, EXPIRY_TIMER, 100.0)]
    # Later expiries, and one less than the granularity earlier, leave the timer where it is.
    assert queue.arm(_key(2), 300.0, 0.0) == []
    assert queue.arm(_key(3), 100.0 - EXPIRY_LATENESS_S, 0.0) == []
    # One more than the granularity earlier moves it.
    assert queue.arm(_key(4), 50.0, 0.0) == [StartTimer(SWEEP_KEY, EXPIRY_TIMER, 50.0)]
    assert queue.armed_at == 50.0
    assert len(queue) == 4


def test_sweep_returns_the_due_keys_in_order_and_rearms_for_the_next() -> None:
    queue = ExpiryQueue()
    for n, at in ((1, 50.0), (2, 99.5), (3, 100.0), (4, 300.0)):
        queue.arm(_key(n), at, 0.0)
    assert queue.sweep(50.0) == [_key(1)]
    assert queue.rearm(50.0) == [StartTimer(SWEEP_KEY, EXPIRY_TIMER, 49.5)]
    # Nothing is early: a sweep before an instant leaves it for the next sweep.
    assert queue.sweep(99.0) == []
    assert queue.sweep(100.0) == [_key(2), _key(3)]
    assert queue.rearm(100.0) == [StartTimer(SWEEP_KEY, EXPIRY_TIMER, 200.0)]
    assert len(queue) == 1


def test_a_refreshed_or_cancelled_key_is_not_due_at_its_old_instant() -> None:
    queue = ExpiryQueue()
    queue.arm(_key(1), 100.0, 0.0)
    queue.arm(_key(2), 100.0, 0.0)
    queue.arm(_key(1), 400.0, 50.0)  # refreshed
    queue.cancel(_key(2))  # removed
    assert queue.sweep(100.0) == []
    assert queue.rearm(100.0) == [StartTimer(SWEEP_KEY, EXPIRY_TIMER, 300.0)]
    assert queue.sweep(400.0) == [_key(1)]
    assert queue.rearm(400.0) == []
    assert len(queue) == 0


def test_the_heap_is_compacted_when_refreshes_leave_it_mostly_stale() -> None:
    queue = ExpiryQueue()
    for round_ in range(2000):
        queue.arm(_key(1), 1000.0 + round_, float(round_))
    assert len(queue._heap) < 1100  # stale entries were dropped, not kept for 2000 refreshes
    assert queue.sweep(2998.0) == []
    assert queue.sweep(2999.0) == [_key(1)]


def test_each_subscription_times_out_at_most_the_granularity_late() -> None:
    h = Harness(engine())
    h.subscribe(subscribe(expires=100))
    first_expiry = h.now + 100
    h.now += 0.5
    h.subscribe(subscribe(contact=CB, call_id="b", from_tag="fb", expires=99))
    second_expiry = h.now + 99
    # The second expiry comes 0.5 s before the first, within the granularity: the sweep
    # timer stays armed for the first, and that one sweep ends both.
    assert h.timers == {(SWEEP_KEY, EXPIRY_TIMER): first_expiry}
    assert notifies(h.advance(second_expiry - h.now)) == []
    actions = h.advance(first_expiry - h.now)
    assert [n.headers.get("Subscription-State") for n, _ in notifies(actions)] == [
        "terminated;reason=timeout",
        "terminated;reason=timeout",
    ]
    assert [r.reason for r in facts(actions, SubscriptionRemoved)] == ["timeout", "timeout"]  # type: ignore[attr-defined]
    assert first_expiry - second_expiry <= EXPIRY_LATENESS_S
    assert h.engine.subscriptions() == []


def test_subscriptions_apart_by_more_than_the_granularity_time_out_each_on_time() -> None:
    h = Harness(engine())
    h.subscribe(subscribe(expires=100))
    h.subscribe(subscribe(contact=CB, call_id="b", from_tag="fb", expires=50))
    ((notify, _),) = notifies(h.advance(50.0))
    assert notify.uri == CB
    assert notify.headers.get("Subscription-State") == "terminated;reason=timeout"
    ((notify, _),) = notifies(h.advance(50.0))
    assert notify.uri == CA
    assert h.engine.subscriptions() == []


def test_a_refreshed_subscription_outlives_its_first_expiry_and_then_times_out() -> None:
    h = Harness(engine())
    h.subscribe(subscribe(expires=100))
    h.now += 50
    h.subscribe(subscribe(to_tag="sca1", cseq=2, expires=100))
    assert notifies(h.advance(60.0)) == []  # past the first expiry
    assert len(h.engine.subscriptions()) == 1
    actions = h.advance(40.0)  # 100 s after the refresh
    ((notify, _),) = notifies(actions)
    assert notify.headers.get("Subscription-State") == "terminated;reason=timeout"
    assert h.engine.subscriptions() == []
