"""Who may use a subscription (sca.md 3.2 row 6, row 11, 3.5, Q2): dialog first, then its
flow or its owner; initial SUBSCRIBEs for members and the AoR's own user; subscriptions told
apart by dialog and flow; a cap per identity; reboots seen through a NOTIFY failure."""

from __future__ import annotations

from scaserver.sca.appearance import AppearanceState
from scaserver.sca.line import SharedLine
from scaserver.sca.subscription import Identity, Package, SubscribeRefused, SubscriptionRemoved
from scaserver.sip.actions import EngineAction, SendRequest
from scaserver.sip.message import Peer, Request, Transport

from .scenario import LINE, PEER_A, PEER_B, Harness, engine, facts, notifies, responses, seize_info, subscribe

ALICE = Identity.authenticated("alice")
BOB = Identity.authenticated("bob")
MALLORY = Identity.authenticated("mallory")
#: baresip-style Contact users: neither the member's name nor the line's.
ALICE_CONTACT = "sip:3000-0xa1@192.0.2.11:5060"
BOB_CONTACT = "sip:3000-0xb2@192.0.2.12:5060"
NAT_CONTACT = "sip:2001@192.168.1.100:5060"  # the same private Contact behind two NATs
NAT_A = Peer(Transport.UDP, "198.51.100.1", 40001)
NAT_B = Peer(Transport.UDP, "203.0.113.2", 40002)


def member_line_harness(**changes: object) -> Harness:
    h = Harness(engine(**changes))
    h.engine.provision([SharedLine(LINE, 4, frozenset({"alice", "bob"}))])
    return h


def status(actions: list[EngineAction]) -> int:
    (response,) = responses(actions)
    return response.status


def in_dialog(
    request: Request, to_tag: str, cseq: int, *, expires: int = 3600, call_info: str | None = None
) -> Request:
    """The same SUBSCRIBE sent again inside its dialog (refresh, unsubscribe, release)."""
    return subscribe(
        request.headers.get("Event"),
        contact=str(request.headers.get("Contact") or "").strip("<>"),
        call_id=request.call_id or "",
        to_tag=to_tag,
        cseq=cseq,
        expires=expires,
        call_info=call_info,
    )


def to_tag_of(actions: list[EngineAction]) -> str:
    (response,) = responses(actions)
    tag = response.headers.get("To")
    assert tag is not None and ";tag=" in tag
    return tag.split(";tag=")[1]


def test_row11_member_refreshes_releases_and_unsubscribes_in_dialog_with_a_contact_user_not_its_name() -> (
    None
):
    h = member_line_harness()
    call_info = subscribe(contact=ALICE_CONTACT, call_id="ci")
    tag = to_tag_of(h.subscribe(call_info, peer=PEER_A, identity=ALICE))
    # In dialog, from its flow: no identity is needed, the dialog is the authorisation.
    assert status(h.subscribe(in_dialog(call_info, tag, 2), peer=PEER_A)) == 202
    seize = subscribe("line-seize", contact=ALICE_CONTACT, call_id="ls", expires=15, call_info=seize_info(0))
    seize_tag = to_tag_of(h.subscribe(seize, peer=PEER_A, identity=ALICE))
    assert h.states() == {1: "seized"}
    refresh = in_dialog(seize, seize_tag, 2, expires=15, call_info=seize_info(1))
    assert status(h.subscribe(refresh, peer=PEER_A)) == 200
    release = in_dialog(seize, seize_tag, 3, expires=0, call_info=seize_info(1))
    assert status(h.subscribe(release, peer=PEER_A)) == 200
    assert h.states() == {}
    assert status(h.subscribe(in_dialog(call_info, tag, 3, expires=0), peer=PEER_A)) == 202
    assert h.engine.subscriptions() == []


def test_row6_another_member_from_another_flow_may_not_refresh_release_or_end_a_subscription() -> None:
    h = member_line_harness()
    call_info = subscribe(contact=ALICE_CONTACT, call_id="ci")
    tag = to_tag_of(h.subscribe(call_info, peer=PEER_A, identity=ALICE))
    seize = subscribe("line-seize", contact=ALICE_CONTACT, call_id="ls", expires=15, call_info=seize_info(0))
    seize_tag = to_tag_of(h.subscribe(seize, peer=PEER_A, identity=ALICE))
    before = h.engine.subscriptions()
    assert h.engine.needs_identity(in_dialog(seize, seize_tag, 2), PEER_B)
    assert not h.engine.needs_identity(in_dialog(seize, seize_tag, 2), PEER_A)
    attempts = [
        in_dialog(call_info, tag, 5),
        in_dialog(call_info, tag, 5, expires=0),
        in_dialog(seize, seize_tag, 5, expires=15, call_info=seize_info(1)),
        in_dialog(seize, seize_tag, 5, expires=0, call_info=seize_info(1)),
    ]
    for request in attempts:
        actions = h.subscribe(request, peer=PEER_B, identity=BOB)
        assert status(actions) == 403, request
        (refused,) = facts(actions, SubscribeRefused)
        assert isinstance(refused, SubscribeRefused) and refused.identity == "user:bob"
        assert status(h.subscribe(request, peer=PEER_B)) == 403  # no identity at all
    assert h.engine.subscriptions() == before
    assert h.states() == {1: "seized"}
    # The owner itself, authenticated from a new address (NAT rebinding): accepted, the flow moves.
    moved = h.subscribe(in_dialog(call_info, tag, 6), peer=PEER_B, identity=ALICE)
    assert status(moved) == 202
    ((notify, _),) = notifies(moved)
    assert notify.uri == ALICE_CONTACT
    assert {s.peer for s in h.engine.subscriptions() if s.event is Package.CALL_INFO} == {PEER_B}


def test_row14_out_of_dialog_unsubscribe_with_anothers_contact_and_index_releases_nothing() -> None:
    h = member_line_harness()
    seize = subscribe("line-seize", contact=ALICE_CONTACT, call_id="ls", expires=15, call_info=seize_info(0))
    h.subscribe(seize, peer=PEER_A, identity=ALICE)
    forged = subscribe("line-seize", contact=ALICE_CONTACT, call_id="x", expires=0, call_info=seize_info(1))
    assert status(h.subscribe(forged, peer=PEER_B, identity=BOB)) == 200
    assert h.states() == {1: "seized"}
    assert [s.owner for s in h.engine.subscriptions()] == ["user:alice"]


def test_row6_call_info_to_a_non_line_user_by_someone_else_is_the_same_403_whether_it_exists_or_not() -> None:
    h = Harness(engine())
    existing = "sip:3001@pbx.example.com"
    own = subscribe(uri=existing, call_id="own")
    assert status(h.subscribe(own, identity=Identity.authenticated("3001"))) == 202
    assert h.engine.is_sca(existing)
    answers = []
    for uri in (existing, "sip:3999@pbx.example.com", LINE):
        for event, extra in (("call-info", {}), ("line-seize", {"expires": 15, "call_info": seize_info(0)})):
            request = subscribe(event, uri=uri, call_id="probe", **extra)  # type: ignore[arg-type]
            (response,) = responses(h.subscribe(request, identity=MALLORY))
            answers.append((response.status, response.reason, response.headers))
    assert set(answers) == {answers[0]}
    assert answers[0][:2] == (403, "Forbidden")
    assert [s.owner for s in h.engine.subscriptions()] == ["user:3001"]


def test_row6_empty_member_list_is_for_the_own_user_only() -> None:
    h = Harness(engine())
    h.engine.provision([SharedLine(LINE, 2)])
    assert status(h.subscribe(subscribe(), identity=ALICE)) == 403
    assert status(h.subscribe(subscribe(), identity=Identity.authenticated("2001"))) == 202
    # Without authentication the From AoR is the identity: the line's own AoR passes.
    assert status(h.subscribe(subscribe(call_id="noauth"))) == 202
    # A trusted peer subscribes for anybody.
    trusted = Identity.trusted_peer("192.0.2.200", "sip:pbx@pbx.example.com")
    assert status(h.subscribe(subscribe(call_id="pbx"), identity=trusted)) == 202


def test_q2_identical_contacts_from_two_flows_coexist_with_their_own_notifies_and_seizes() -> None:
    h = Harness(engine())
    line_user = Identity.authenticated("2001")  # both phones log in as the line
    h.subscribe(subscribe(contact=NAT_CONTACT, call_id="a"), peer=NAT_A, identity=line_user)
    seize_a = subscribe("line-seize", contact=NAT_CONTACT, call_id="la", expires=15, call_info=seize_info(0))
    h.subscribe(seize_a, peer=NAT_A, identity=line_user)
    # The second phone: same Contact, another flow.  The first keeps its subscription and seize.
    actions = h.subscribe(subscribe(contact=NAT_CONTACT, call_id="b"), peer=NAT_B, identity=line_user)
    assert facts(actions, SubscriptionRemoved) == []
    assert h.states() == {1: "seized"}
    seize_b = subscribe("line-seize", contact=NAT_CONTACT, call_id="lb", expires=15, call_info=seize_info(0))
    seized = h.subscribe(seize_b, peer=NAT_B, identity=line_user)
    assert h.states() == {1: "seized", 2: "seized"}
    assert sorted((n.call_id, p) for n, p in _sent(seized)) == [("a", NAT_A), ("b", NAT_B), ("lb", NAT_B)]
    # Each releases its own index only.
    release_b = in_dialog(seize_b, to_tag_of(seized), 2, expires=0, call_info=seize_info(1))
    assert status(h.subscribe(release_b, peer=NAT_B)) == 200
    assert h.states() == {1: "seized"}
    assert len([s for s in h.engine.subscriptions() if s.event is Package.CALL_INFO]) == 2


def _sent(actions: list[EngineAction]) -> list[tuple[Request, Peer]]:
    return [
        (a.request, a.peer) for a in actions if isinstance(a, SendRequest) and isinstance(a.request, Request)
    ]


def test_q2_out_of_dialog_resubscribe_by_the_same_identity_contact_and_flow_replaces_the_old_dialog() -> None:
    h = member_line_harness()
    first = subscribe(contact=ALICE_CONTACT, call_id="one")
    tag = to_tag_of(h.subscribe(first, peer=PEER_A, identity=ALICE))
    actions = h.subscribe(subscribe(contact=ALICE_CONTACT, call_id="two"), peer=PEER_A, identity=ALICE)
    (removed,) = facts(actions, SubscriptionRemoved)
    assert isinstance(removed, SubscriptionRemoved) and removed.reason == "replaced"
    assert removed.subscription.call_id == "one"
    assert [s.call_id for s in h.engine.subscriptions()] == ["two"]
    assert status(h.subscribe(in_dialog(first, tag, 2), peer=PEER_A)) == 481
    # The same contact from another identity is another subscription, not a replacement.
    h.subscribe(subscribe(contact=ALICE_CONTACT, call_id="three"), peer=PEER_A, identity=BOB)
    assert sorted(s.call_id for s in h.engine.subscriptions()) == ["three", "two"]


def test_cap_on_live_subscriptions_per_identity_is_403_beyond_it() -> None:
    h = member_line_harness(max_subscriptions_per_identity=2)
    first = subscribe(contact=ALICE_CONTACT, call_id="1")
    tag = to_tag_of(h.subscribe(first, peer=PEER_A, identity=ALICE))
    h.subscribe(subscribe(contact=BOB_CONTACT, call_id="2"), peer=PEER_A, identity=ALICE)
    refused = h.subscribe(subscribe(contact="sip:x@192.0.2.11", call_id="3"), peer=PEER_A, identity=ALICE)
    (response,) = responses(refused)
    assert (response.status, response.reason) == (403, "Too Many Subscriptions")
    # Refreshing, replacing and other identities are not counted against it.
    assert status(h.subscribe(in_dialog(first, tag, 2), peer=PEER_A)) == 202
    again = subscribe(contact=ALICE_CONTACT, call_id="1b")
    assert status(h.subscribe(again, peer=PEER_A, identity=ALICE)) == 202
    assert status(h.subscribe(subscribe(call_id="4"), peer=PEER_B, identity=BOB)) == 202
    # Ending one makes room again.
    assert status(h.subscribe(in_dialog(again, "sca3", 2, expires=0), peer=PEER_A)) == 202
    third = subscribe(contact="sip:x@192.0.2.11", call_id="5")
    assert status(h.subscribe(third, peer=PEER_A, identity=ALICE)) == 202


def _active_call_of(h: Harness, owner: str) -> None:
    index, actions = h.engine.seize_appearance(LINE, owner, h.now)
    h.run(actions)
    h.run(h.engine.update_appearance(LINE, index, "active", h.now, "sip:3001@carrier.example.net"))
    app = h.engine.appearance(LINE, index)
    assert app is not None and app.state is AppearanceState.ACTIVE and app.owner == owner


def test_3_5_reboot_after_a_failed_notify_removed_the_subscription_clears_its_appearances() -> None:
    h = member_line_harness()
    h.subscribe(subscribe(contact=ALICE_CONTACT, call_id="boot1"), peer=PEER_A, identity=ALICE)
    h.subscribe(subscribe(contact=BOB_CONTACT, call_id="bob"), peer=PEER_B, identity=BOB)
    _active_call_of(h, ALICE_CONTACT)
    h.auto_answer = False
    h.advance(10)
    h.run(h.engine.update_appearance(LINE, 1, "held", h.now))  # a NOTIFY to everybody
    alice = [c for c in h.in_flight if c.dialog.call_id == "boot1"]
    h.in_flight = [c for c in h.in_flight if c.dialog.call_id != "boot1"]
    h.answer_all()
    (failed,) = alice
    removed = h.run(h.engine.on_notify_failed(failed, h.now))  # the phone is rebooting
    assert [r.reason for r in facts(removed, SubscriptionRemoved)] == ["notify-failed"]  # type: ignore[attr-defined]
    assert h.states() == {1: "held"}
    h.auto_answer = True
    h.advance(30)
    h.subscribe(subscribe(contact=ALICE_CONTACT, call_id="boot2"), peer=PEER_A, identity=ALICE)
    assert h.states() == {}


def test_3_5_a_lost_subscription_is_not_a_reboot_for_another_identity_nor_after_the_memory() -> None:
    h = member_line_harness(reboot_memory_s=60.0)
    h.subscribe(subscribe(contact=ALICE_CONTACT, call_id="boot1"), peer=PEER_A, identity=ALICE)
    _active_call_of(h, ALICE_CONTACT)
    h.auto_answer = False
    h.run(h.engine.update_appearance(LINE, 1, "held", h.now))
    (failed,) = h.in_flight
    h.in_flight = []
    h.run(h.engine.on_notify_failed(failed, h.now))
    h.auto_answer = True
    h.subscribe(subscribe(contact=ALICE_CONTACT, call_id="bob"), peer=PEER_B, identity=BOB)
    assert h.states() == {1: "held"}
    h.advance(61)
    h.subscribe(subscribe(contact=ALICE_CONTACT, call_id="late"), peer=PEER_A, identity=ALICE)
    assert h.states() == {1: "held"}
