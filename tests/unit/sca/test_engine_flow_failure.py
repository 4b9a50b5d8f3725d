"""A failed flow (RFC 5626): its subscriptions end without a NOTIFY, a seize made over it is
released, the others' subscriptions are untouched and told of the release."""

from __future__ import annotations

from scaserver.sca.subscription import SubscriptionRemoved
from tests.unit.sca.scenario import CB, PEER_A, PEER_B, Harness, engine, facts, seize_info, subscribe


def test_flow_failure_ends_the_flows_subscriptions_quietly_and_releases_its_seize() -> None:
    h = Harness(engine())
    h.subscribe(subscribe(), peer=PEER_A)
    h.subscribe(subscribe(contact=CB, call_id="sub-b", from_tag="fb"), peer=PEER_B)
    h.subscribe(
        subscribe("line-seize", call_id="ls", from_tag="l1", expires=15, call_info=seize_info(0)), peer=PEER_A
    )
    assert h.states() == {1: "seized"}
    sent_before = len(h.sent)
    actions, count = h.engine.flow_failed(PEER_A, h.now)
    h.run(actions)
    assert count == 2
    removed = [f for f in facts(actions, SubscriptionRemoved) if isinstance(f, SubscriptionRemoved)]
    assert {(f.subscription.call_id, f.reason) for f in removed} == {
        ("sub-a", "flow-failed"),
        ("ls", "flow-failed"),
    }
    assert [s.call_id for s in h.engine.subscriptions()] == ["sub-b"]
    assert h.states() == {}
    # Only B hears of the release: nothing goes into the dead flow.
    assert {r.uri for r in h.sent[sent_before:]} == {CB}


def test_a_flow_with_no_subscription_changes_nothing() -> None:
    h = Harness(engine())
    h.subscribe(subscribe(), peer=PEER_A)
    assert h.engine.flow_failed(PEER_B, h.now) == ([], 0)
    assert len(h.engine.subscriptions()) == 1
