"""NOTIFY ordering, coalescing, outcomes, expiry and restore (sca.md 4, 9, 10)."""

from __future__ import annotations

import attrs

from scaserver.sca.engine import EXPIRY_TIMER, SWEEP_KEY, NotifyContext
from scaserver.sca.line import SharedLine
from scaserver.sca.subscription import NotifyAnswered, Package, SubscriptionRemoved
from scaserver.sip.actions import SendRequest, StartTimer
from scaserver.sip.message import Headers, Response

from .scenario import (
    CA,
    CB,
    IDLE_ONLY,
    LINE,
    TX,
    Harness,
    engine,
    facts,
    full,
    notifies,
    seize_info,
    state_entry,
    subscribe,
)

OK = Response(200, "OK")


def _held_harness() -> Harness:
    h = Harness(engine(), auto_answer=False)
    h.subscribe(subscribe())
    h.answer_all()
    return h


def test_one_notify_in_flight_per_dialog_and_newer_states_coalesce() -> None:
    h = _held_harness()
    assert h.in_flight == []
    first = h.run(h.engine.seize_appearance(LINE, CB, h.now)[1])
    assert [n.headers.get("Call-Info") for n, _ in notifies(first)] == [full(state_entry(1, "seized"))]
    # Two more changes while that NOTIFY is unanswered: nothing goes out yet.
    assert notifies(h.run(h.engine.seize_appearance(LINE, CB, h.now)[1])) == []
    assert notifies(h.run(h.engine.release_appearance(LINE, 1, h.now))) == []
    (context,) = h.in_flight
    h.in_flight.clear()
    after = h.engine.on_notify_response(context, OK, h.now)
    ((notify, next_context),) = notifies(after)
    # Only the newest state is sent, with the next CSeq.
    assert notify.headers.get("Call-Info") == full(state_entry(2, "seized"))
    assert notify.headers.get("CSeq") == "3 NOTIFY"
    assert next_context.cseq == 3
    assert notifies(h.engine.on_notify_response(next_context, OK, h.now)) == []


def test_provisional_and_stale_notify_responses_are_ignored() -> None:
    h = _held_harness()
    h.run(h.engine.seize_appearance(LINE, CB, h.now)[1])
    (context,) = h.in_flight
    assert h.engine.on_notify_response(context, Response(100, "Trying"), h.now) == []
    assert h.engine.on_notify_response(attrs.evolve(context, cseq=1), OK, h.now) == []
    assert h.engine.on_notify_failed(attrs.evolve(context, cseq=1), h.now) == []


def test_s16_notify_481_removes_the_subscription() -> None:
    h = _held_harness()
    h.run(h.engine.seize_appearance(LINE, CB, h.now)[1])
    (context,) = h.in_flight
    actions = h.engine.on_notify_response(context, Response(481, "Gone"), h.now)
    removed = facts(actions, SubscriptionRemoved)
    assert [r.reason for r in removed] == ["notify-failed"]  # type: ignore[attr-defined]
    assert h.engine.subscriptions() == []


def test_s16_notify_timeout_removes_the_subscription() -> None:
    h = _held_harness()
    h.run(h.engine.seize_appearance(LINE, CB, h.now)[1])
    (context,) = h.in_flight
    actions = h.engine.on_notify_failed(context, h.now)
    assert [r.reason for r in facts(actions, SubscriptionRemoved)] == ["notify-failed"]  # type: ignore[attr-defined]


def test_s16_notify_503_with_retry_after_keeps_the_subscription() -> None:
    h = _held_harness()
    h.run(h.engine.seize_appearance(LINE, CB, h.now)[1])
    (context,) = h.in_flight
    busy = Response(503, "Busy", Headers.of(("Retry-After", "5")))
    assert facts(h.engine.on_notify_response(context, busy, h.now), SubscriptionRemoved) == []
    assert len(h.engine.subscriptions()) == 1


def test_notify_failure_of_a_line_seize_releases_its_seize() -> None:
    h = Harness(engine(), auto_answer=False)
    h.subscribe(subscribe("line-seize", call_id="ls", expires=15, call_info=seize_info(0)))
    (context,) = h.in_flight
    h.engine.on_notify_response(context, Response(481, "Gone"), h.now)
    assert h.engine.appearances() == []


def test_terminating_notify_waits_behind_the_one_in_flight() -> None:
    h = _held_harness()
    h.run(h.engine.seize_appearance(LINE, CB, h.now)[1])
    (context,) = h.in_flight
    h.in_flight.clear()
    unsub = h.engine.on_subscribe(subscribe(to_tag="sca1", cseq=2, expires=0), TX, h.now)
    assert notifies(unsub) == []
    after = h.engine.on_notify_response(context, OK, h.now)
    ((notify, last),) = notifies(after)
    assert (notify.headers.get("CSeq"), notify.headers.get("Subscription-State")) == (
        "3 NOTIFY",
        "terminated",
    )
    assert h.engine.on_notify_response(last, OK, h.now) == []


def test_s13_expiry_sends_timeout_full_state_and_removes() -> None:
    h = Harness(engine())
    h.subscribe(subscribe(expires=5))
    actions = h.advance(5.0)
    ((notify, _),) = notifies(actions)
    assert notify.headers.get("Subscription-State") == "terminated;reason=timeout"
    assert notify.headers.get("Call-Info") == IDLE_ONLY
    assert [r.reason for r in facts(actions, SubscriptionRemoved)] == ["timeout"]  # type: ignore[attr-defined]
    assert h.engine.subscriptions() == []


def test_early_expiry_sweep_ends_nothing_and_is_rearmed() -> None:
    h = Harness(engine())
    h.subscribe(subscribe(expires=60))
    actions = h.engine.on_timer(SWEEP_KEY, EXPIRY_TIMER, h.now + 30)
    assert actions == [StartTimer(SWEEP_KEY, EXPIRY_TIMER, 30.0)]
    assert len(h.engine.subscriptions()) == 1


def test_expires_is_computed_per_subscriber_q6() -> None:
    h = Harness(engine())
    h.subscribe(subscribe(expires=100))
    h.now += 40
    h.subscribe(subscribe(contact=CB, call_id="b", from_tag="fb", expires=3600))
    h.now += 10
    actions = h.run(h.engine.seize_appearance(LINE, CA, h.now)[1])
    states = {n.uri: n.headers.get("Subscription-State") for n, _ in notifies(actions)}
    assert states == {CA: "active;expires=50", CB: "active;expires=3590"}


def test_line_seize_subscribers_never_get_call_info_notifies_q20() -> None:
    h = Harness(engine())
    h.subscribe(subscribe("line-seize", call_id="ls", expires=15, call_info=seize_info(0)))
    actions = h.run(h.engine.seize_appearance(LINE, CB, h.now)[1])
    assert notifies(actions) == []


def test_fan_out_is_isolated_per_line_s20() -> None:
    other = "sip:2002@pbx.example.com"
    h = Harness(engine())
    h.engine.provision([SharedLine(other, members=frozenset({LINE}))])
    h.subscribe(subscribe())
    h.subscribe(subscribe(call_id="o", from_tag="o", uri=other))
    actions = h.run(h.engine.seize_appearance(other, CA, h.now)[1])
    ((notify, _),) = notifies(actions)
    assert notify.headers.get("Call-ID") == "o"


def test_restore_continues_notify_cseq_and_rearms_expiry() -> None:
    h = Harness(engine())
    h.subscribe(subscribe())
    for _ in range(3):
        h.run(h.engine.seize_appearance(LINE, CB, h.now)[1])
    stored = h.engine.subscriptions()
    apps = h.engine.appearances()
    last_cseq = stored[0].notify_cseq
    assert last_cseq == 4
    fresh = engine()
    actions = fresh.restore([SharedLine(LINE, 8)], stored, apps, h.now + 10)
    key = stored[0].key
    assert key.aor == LINE and key.event is Package.CALL_INFO and key.subscriber == CA
    assert StartTimer(SWEEP_KEY, EXPIRY_TIMER, 3590.0) in actions
    ((notify, context),) = notifies(actions)
    assert notify.headers.get("CSeq") == f"{last_cseq + 1} NOTIFY"
    assert context == NotifyContext(stored[0].dialog, last_cseq + 1)
    assert notify.headers.get("Call-Info") == full(*(state_entry(n, "seized") for n in (1, 2, 3)))
    assert fresh.line(LINE).appearances == 8
    assert [a for a in actions if isinstance(a, SendRequest)]


def test_restore_drops_expired_subscriptions() -> None:
    h = Harness(engine())
    h.subscribe(subscribe(expires=5))
    fresh = engine()
    assert fresh.restore([], h.engine.subscriptions(), [], h.now + 5) == []
    assert fresh.subscriptions() == []


def test_a_2xx_to_a_notify_is_published_as_notify_answered() -> None:
    h = _held_harness()
    h.run(h.engine.seize_appearance(LINE, CB, h.now)[1])
    (context,) = h.in_flight
    h.in_flight.clear()
    answered = facts(h.engine.on_notify_response(context, OK, h.now), NotifyAnswered)
    assert len(answered) == 1
    fact = answered[0]
    assert isinstance(fact, NotifyAnswered)
    assert (fact.subscription.aor, fact.cseq, fact.status) == (LINE, context.cseq, 200)


def test_a_failed_notify_is_not_published_as_answered() -> None:
    h = _held_harness()
    h.run(h.engine.seize_appearance(LINE, CB, h.now)[1])
    (context,) = h.in_flight
    h.in_flight.clear()
    out = h.engine.on_notify_response(context, Response(481, "Call/Transaction Does Not Exist"), h.now)
    assert facts(out, NotifyAnswered) == []
    assert facts(out, SubscriptionRemoved)


def test_restore_in_two_steps_stores_at_once_and_notifies_per_batch() -> None:
    h = Harness(engine())
    h.subscribe(subscribe())
    h.subscribe(subscribe(contact=CB, call_id="b", from_tag="fb"))
    h.run(h.engine.seize_appearance(LINE, CB, h.now)[1])
    stored = h.engine.subscriptions()
    apps = h.engine.appearances()
    whole = engine().restore([SharedLine(LINE, 8)], stored, apps, h.now + 10)
    fresh = engine()
    actions, owed = fresh.restore_state([SharedLine(LINE, 8)], stored, apps, h.now + 10)
    # Every subscription is back (an in-dialog refresh finds it) before any NOTIFY is built.
    assert notifies(actions) == []
    assert {s.key for s in fresh.subscriptions()} == {s.key for s in stored}
    assert owed == [s.dialog for s in stored]
    first = fresh.notify_restored(owed[:1], h.now + 10)
    second = fresh.notify_restored(owed[1:], h.now + 10)
    assert [n for n, _ in notifies(first) + notifies(second)] == [n for n, _ in notifies(whole)]
    # A dialog ended before its turn gets nothing.
    assert fresh.notify_restored([owed[0]._replace(call_id="gone")], h.now + 12) == []
