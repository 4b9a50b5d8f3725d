"""Call tracking of sca.md sections 6.3, 6.4, 6.5 and 7: one test per rule id."""

from __future__ import annotations

from scaserver.sca.appearance import AppearanceChanged, AppearanceState, TriggerIgnored
from scaserver.sca.engine import TTL_TIMER, AppearanceKey, RequestPlan
from scaserver.sca.subscription import Package
from scaserver.sip.actions import CancelTimer, EngineAction
from scaserver.sip.errors import Forbidden
from scaserver.sip.message import Request

from .scenario import (
    CA,
    CB,
    HOLD_SDP,
    IDLE_ONLY,
    LINE,
    RC,
    REMOTE,
    TALK_SDP,
    Harness,
    answer,
    engine,
    facts,
    full,
    invite,
    notifies,
    responses,
    seize_info,
    state_entry,
    subscribe,
)

S = AppearanceState


def rules(actions: list[EngineAction]) -> list[tuple[str, S, S]]:
    return [(c.rule, c.from_state, c.to_state) for c in facts(actions, AppearanceChanged)]  # type: ignore[attr-defined]


def group(**kw: object) -> Harness:
    h = Harness(engine(**kw))
    h.subscribe(subscribe())
    h.subscribe(subscribe(contact=CB, call_id="sub-b", from_tag="fb"))
    return h


def seized(**kw: object) -> Harness:
    h = group(**kw)
    h.subscribe(subscribe("line-seize", call_id="ls", from_tag="l1", expires=15, call_info=seize_info(0)))
    return h


def gn(actions: list[EngineAction]) -> list[str | None]:
    """The Call-Info of the group NOTIFYs in ``actions`` (to A then B)."""
    return [n.headers.get("Call-Info") for n, _ in notifies(actions) if n.headers.get("Event") == "call-info"]


INV = invite(call_info=seize_info(1), to_display="Carol")
ACTIVE_URI = '\\"Carol\\" <sip:3001@carrier.example.net>'


def active(**kw: object) -> Harness:
    h = seized(**kw)
    h.forward(INV)
    h.respond(INV, answer(INV, 180))
    h.respond(INV, answer(INV, 200))
    h.ack(invite(method="ACK", to_tag="rt"))
    return h


def test_o1_seize_moves_idle_to_seized() -> None:
    h = group()
    actions = h.subscribe(
        subscribe("line-seize", call_id="ls", from_tag="l1", expires=15, call_info=seize_info(0))
    )
    assert rules(actions) == [("O1", S.IDLE, S.SEIZED)]
    assert gn(actions) == [full(state_entry(1, "seized"))] * 2


def test_o2_seize_of_busy_index_is_480_and_changes_nothing() -> None:
    h = seized()
    actions = h.subscribe(
        subscribe("line-seize", contact=CB, call_id="x", expires=15, call_info=seize_info(1))
    )
    assert rules(actions) == []
    assert [r.status for r in responses(actions)] == [480]


def test_o3_line_seize_unsubscribe_moves_seized_to_idle() -> None:
    h = seized()
    actions = h.subscribe(
        subscribe(
            "line-seize",
            call_id="ls",
            from_tag="l1",
            to_tag="sca3",
            cseq=2,
            expires=0,
            call_info=seize_info(1),
        )
    )
    assert rules(actions) == [("O3", S.SEIZED, S.IDLE)]
    assert gn(actions) == [IDLE_ONLY] * 2


def test_o4_s5_seize_expiry_sends_timeout_and_releases_within_one_second() -> None:
    h = seized()
    actions = h.advance(15.5)
    assert rules(actions) == [("O4", S.SEIZED, S.IDLE)]
    sent = [(n.headers.get("Event"), n.headers.get("Subscription-State")) for n, _ in notifies(actions)]
    assert sent[0] == ("line-seize", "terminated;reason=timeout")
    assert gn(actions) == [IDLE_ONLY] * 2
    assert h.engine.subscriptions()[-1].event is Package.CALL_INFO


def test_o4_seized_ttl_sweeps_a_seize_without_subscription() -> None:
    h = group()
    _, actions = h.engine.seize_appearance(LINE, CA, h.now)
    h.run(actions)
    actions = h.advance(120.0)
    assert rules(actions) == [("O4", S.SEIZED, S.IDLE)]


def test_o5_invite_naming_a_seized_index_stores_the_dialog() -> None:
    h = seized()
    actions = h.forward(INV)
    assert rules(actions) == [("O5", S.SEIZED, S.SEIZED)]
    app = h.engine.appearance(LINE, 1)
    assert app is not None and app.leg is not None
    assert (app.leg.call_id, app.leg.member_tag, app.owner) == ("call-1", "ma", CA)
    assert app.remote_uri == '"Carol" <sip:3001@carrier.example.net>'  # 7.5: set at INVITE time
    assert gn(actions) == [full(state_entry(1, "seized", ACTIVE_URI))] * 2


def test_o5b_invite_without_seize_seizes_implicitly() -> None:
    h = group()
    actions = h.forward(invite(call_info=seize_info(3)))
    assert rules(actions) == [("O5b", S.IDLE, S.SEIZED)]
    assert h.states() == {3: "seized"}
    actions = h.forward(invite(call_id="call-2", from_tag="m2", contact=CB))
    assert rules(actions) == [("O5b", S.IDLE, S.SEIZED)]
    assert h.states() == {1: "seized", 3: "seized"}


def test_invite_from_a_line_nobody_shares_is_not_tracked() -> None:
    h = Harness(engine())
    assert h.forward(invite()) == []


def test_o6_18x_moves_seized_to_progressing_and_ends_line_seize_noresource() -> None:
    h = seized()
    h.forward(INV)
    actions = h.respond(INV, answer(INV, 180))
    assert rules(actions) == [("O6", S.SEIZED, S.PROGRESSING)]
    sent = [
        (n.headers.get("Event"), n.headers.get("Subscription-State"), n.headers.get("Call-Info"))
        for n, _ in notifies(actions)
    ]
    assert sent[0] == ("line-seize", "terminated;reason=noresource", seize_info(1))
    assert Package.LINE_SEIZE not in {s.event for s in h.engine.subscriptions()}
    assert gn(actions) == [full(state_entry(1, "progressing", ACTIVE_URI))] * 2
    # A second 183 changes nothing but says the call is alive (its early TTL starts again, O20).
    again = h.respond(INV, answer(INV, 183))
    assert rules(again) == [("O6", S.PROGRESSING, S.PROGRESSING)]
    assert gn(again) == []


def test_o7_200_moves_progressing_to_active_with_remote_uri() -> None:
    h = seized()
    h.forward(INV)
    h.respond(INV, answer(INV, 180))
    actions = h.respond(INV, answer(INV, 200))
    assert rules(actions) == [("O7", S.PROGRESSING, S.ACTIVE)]
    app = h.engine.appearance(LINE, 1)
    assert app is not None and app.leg is not None
    assert (app.leg.remote_tag, app.remote_contact) == ("rt", RC)
    assert gn(actions) == [full(state_entry(1, "active", ACTIVE_URI))] * 2


def test_o7_200_straight_from_seized_also_ends_the_line_seize() -> None:
    h = seized()
    h.forward(INV)
    actions = h.respond(INV, answer(INV, 200))
    assert rules(actions) == [("O7", S.SEIZED, S.ACTIVE)]
    first, _ = notifies(actions)[0]
    assert first.headers.get("Subscription-State") == "terminated;reason=noresource"


def test_o8_member_cancel_without_call_info_releases() -> None:
    h = seized()
    h.forward(INV)
    h.respond(INV, answer(INV, 180))
    actions = h.forward(invite(method="CANCEL"))
    assert rules(actions) == [("O8", S.PROGRESSING, S.IDLE)]
    assert gn(actions) == [IDLE_ONLY] * 2


def test_o9_final_failure_releases() -> None:
    h = seized()
    h.forward(INV)
    actions = h.respond(INV, answer(INV, 486))
    assert rules(actions) == [("O9", S.SEIZED, S.IDLE)]
    assert gn(actions) == [IDLE_ONLY] * 2


def test_o9b_failed_hold_reinvite_rolls_back_to_active() -> None:
    h = active()
    hold = invite(to_tag="rt", cseq=2, body=HOLD_SDP)
    assert rules(h.forward(hold)) == [("O14", S.ACTIVE, S.HELD)]
    actions = h.respond(hold, answer(hold, 491))
    assert rules(actions) == [("O9b", S.HELD, S.ACTIVE)]
    assert h.states() == {1: "active"}


def test_o9b_failed_retrieve_reinvite_rolls_back_to_held() -> None:
    h = active()
    h.forward(invite(to_tag="rt", cseq=2, body=HOLD_SDP))
    retrieve = invite(to_tag="rt", cseq=3, body=TALK_SDP)
    assert rules(h.forward(retrieve)) == [("O16", S.HELD, S.ACTIVE)]
    assert rules(h.respond(retrieve, answer(retrieve, 488))) == [("O9b", S.ACTIVE, S.HELD)]


def test_o9b_failed_reinvite_without_tentative_change_keeps_the_call() -> None:
    h = active()
    refresh = invite(to_tag="rt", cseq=2)
    assert rules(h.forward(refresh)) == []
    assert rules(h.respond(refresh, answer(refresh, 491))) == [("O9b", S.ACTIVE, S.ACTIVE)]
    assert h.states() == {1: "active"}


def test_o10_487_after_cancel_changes_nothing() -> None:
    h = seized()
    h.forward(INV)
    h.respond(INV, answer(INV, 180))
    assert rules(h.respond(INV, answer(INV, 487))) == [("O10", S.PROGRESSING, S.PROGRESSING)]
    assert h.states() == {1: "progressing"}


def test_o11_redirect_keeps_the_seize() -> None:
    h = seized()
    h.forward(INV)
    assert rules(h.respond(INV, answer(INV, 302))) == [("O11", S.SEIZED, S.SEIZED)]


def test_o12_challenge_keeps_the_seize_and_the_resent_invite_proceeds() -> None:
    h = seized()
    h.forward(INV)
    assert rules(h.respond(INV, answer(INV, 407))) == [("O12", S.SEIZED, S.SEIZED)]
    again = invite(call_info=seize_info(1), cseq=2)
    assert rules(h.forward(again)) == [("O5", S.SEIZED, S.SEIZED)]
    assert rules(h.respond(again, answer(again, 180))) == [("O6", S.SEIZED, S.PROGRESSING)]


def test_o13_local_failure_releases_and_ends_line_seize() -> None:
    h = seized()
    h.forward(INV)
    actions = h.respond(INV, answer(INV, 404, to_tag="local"), local=True)
    assert rules(actions) == [("O13", S.SEIZED, S.IDLE)]
    first, _ = notifies(actions)[0]
    assert first.headers.get("Subscription-State") == "terminated;reason=noresource"
    assert gn(actions) == [IDLE_ONLY] * 2


def test_o14_owner_hold_moves_active_to_held() -> None:
    h = active()
    actions = h.forward(invite(to_tag="rt", cseq=2, body=HOLD_SDP))
    assert rules(actions) == [("O14", S.ACTIVE, S.HELD)]
    assert gn(actions) == [full(state_entry(1, "held", ACTIVE_URI))] * 2


def test_o14_private_hold_moves_active_to_held_private() -> None:
    h = active()
    actions = h.forward(
        invite(to_tag="rt", cseq=2, body=HOLD_SDP, call_info=seize_info(1) + ";appearance-state=held-private")
    )
    assert rules(actions) == [("O14", S.ACTIVE, S.HELD_PRIVATE)]


PRIVATE = seize_info(1) + ";appearance-state=held-private"
PUBLIC = seize_info(1) + ";appearance-state=held"


def test_o14b_public_hold_made_private_moves_held_to_held_private() -> None:
    h = active()
    h.forward(invite(to_tag="rt", cseq=2, body=HOLD_SDP))
    actions = h.forward(invite(to_tag="rt", cseq=3, body=HOLD_SDP, call_info=PRIVATE))
    assert rules(actions) == [("O14b", S.HELD, S.HELD_PRIVATE)]
    assert gn(actions) == [full(state_entry(1, "held-private", ACTIVE_URI))] * 2
    assert isinstance(h.engine.check_request(PICKUP, h.now).rejection, Forbidden)  # 7.2 now applies


def test_o14b_private_hold_made_public_moves_held_private_to_held_and_back() -> None:
    h = active()
    h.forward(invite(to_tag="rt", cseq=2, body=HOLD_SDP, call_info=PRIVATE))
    actions = h.forward(invite(to_tag="rt", cseq=3, body=HOLD_SDP, call_info=PUBLIC))
    assert rules(actions) == [("O14b", S.HELD_PRIVATE, S.HELD)]
    assert gn(actions) == [full(state_entry(1, "held", ACTIVE_URI))] * 2
    assert h.engine.check_request(PICKUP, h.now).replaces is not None  # others may pick it up again
    again = h.forward(invite(to_tag="rt", cseq=4, body=HOLD_SDP, call_info=PRIVATE))
    assert rules(again) == [("O14b", S.HELD, S.HELD_PRIVATE)]


def test_o14b_hold_offer_without_appearance_state_keeps_the_privacy() -> None:
    h = active()
    h.forward(invite(to_tag="rt", cseq=2, body=HOLD_SDP, call_info=PRIVATE))
    refresh = invite(to_tag="rt", cseq=3, body=HOLD_SDP, call_info=seize_info(1))
    actions = h.forward(refresh)
    assert rules(actions) == [] and gn(actions) == []
    h.respond(refresh, answer(refresh, 200))
    assert h.states() == {1: "held-private"}


def test_o14b_public_hold_offer_from_active_is_an_ordinary_o14() -> None:
    h = active()
    assert rules(h.forward(invite(to_tag="rt", cseq=2, body=HOLD_SDP, call_info=PUBLIC))) == [
        ("O14", S.ACTIVE, S.HELD)
    ]


def test_o9b_failed_o14b_reinvite_rolls_back_the_privacy() -> None:
    h = active()
    h.forward(invite(to_tag="rt", cseq=2, body=HOLD_SDP))
    private = invite(to_tag="rt", cseq=3, body=HOLD_SDP, call_info=PRIVATE)
    h.forward(private)
    assert rules(h.respond(private, answer(private, 491))) == [("O9b", S.HELD_PRIVATE, S.HELD)]
    h.forward(invite(to_tag="rt", cseq=4, body=HOLD_SDP, call_info=PRIVATE))
    public = invite(to_tag="rt", cseq=5, body=HOLD_SDP, call_info=PUBLIC)
    h.forward(public)
    assert rules(h.respond(public, answer(public, 488))) == [("O9b", S.HELD, S.HELD_PRIVATE)]
    assert h.states() == {1: "held-private"}


def test_o15_hold_sdp_in_the_ack_holds() -> None:
    h = active()
    moh = invite(to_tag="rt", cseq=2)
    assert rules(h.forward(moh)) == []  # Q14: body-less is unknown
    h.respond(moh, answer(moh, 200, body=TALK_SDP))
    actions = h.ack(invite(method="ACK", to_tag="rt", cseq=2, body=HOLD_SDP))
    assert rules(actions) == [("O15", S.ACTIVE, S.HELD)]


def test_o16_owner_retrieve_moves_held_to_active() -> None:
    h = active()
    h.forward(invite(to_tag="rt", cseq=2, body=HOLD_SDP))
    actions = h.forward(invite(to_tag="rt", cseq=3, body=TALK_SDP))
    assert rules(actions) == [("O16", S.HELD, S.ACTIVE)]


def test_o16_body_less_refresh_while_held_keeps_held() -> None:
    h = active()
    h.forward(invite(to_tag="rt", cseq=2, body=HOLD_SDP))
    refresh = invite(to_tag="rt", cseq=3)
    assert rules(h.forward(refresh)) == []
    h.respond(refresh, answer(refresh, 200))
    assert h.states() == {1: "held"}


def test_o17_200_to_reinvite_keeps_the_state() -> None:
    h = active()
    hold = invite(to_tag="rt", cseq=2, body=HOLD_SDP)
    h.forward(hold)
    actions = h.respond(hold, answer(hold, 200))
    assert rules(actions) == [("O17", S.HELD, S.HELD)]
    assert gn(actions) == []  # nothing new to tell the group (4.1)


def test_remote_hold_changes_nothing() -> None:
    h = active()
    remote = invite(
        from_uri=REMOTE, from_tag="rt", to_uri=LINE, to_tag="ma", contact=RC, cseq=1, body=HOLD_SDP
    )
    assert h.forward(remote) == []
    assert h.states() == {1: "active"}


def test_o18_bye_from_either_side_releases() -> None:
    h = active()
    actions = h.forward(invite(method="BYE", to_tag="rt", cseq=3))
    assert rules(actions) == [("O18", S.ACTIVE, S.IDLE)]
    assert gn(actions) == [IDLE_ONLY] * 2
    h2 = active()
    bye = invite(method="BYE", from_uri=REMOTE, from_tag="rt", to_uri=LINE, to_tag="ma", contact=None)
    assert rules(h2.forward(bye)) == [("O18", S.ACTIVE, S.IDLE)]


def test_o18_200_to_bye_is_a_backup_release() -> None:
    h = active()
    bye = invite(method="BYE", to_tag="rt", cseq=3)
    h.engine.on_request_forwarded(invite(method="PRACK", to_tag="rt"), h.now)
    assert rules(h.respond(bye, answer(bye, 200))) == [("O18", S.ACTIVE, S.IDLE)]


def _held() -> Harness:
    h = active()
    h.forward(invite(to_tag="rt", cseq=2, body=HOLD_SDP))
    return h


PICKUP = invite(call_id="call-2", from_tag="mb", to_uri=LINE, contact=CB, call_info=seize_info(1))


def test_o19_s9_retrieve_by_another_member() -> None:
    h = _held()
    plan = h.engine.check_request(PICKUP, h.now)
    assert plan == RequestPlan(target=RC, replaces="call-1;to-tag=rt;from-tag=ma")
    actions = h.forward(PICKUP)
    assert rules(actions) == [("O19", S.HELD, S.ACTIVE)]
    app = h.engine.appearance(LINE, 1)
    assert app is not None and app.owner == CB
    assert gn(actions) == [full(state_entry(1, "active", ACTIVE_URI))] * 2
    # R BYEs the old leg to A: no change.
    old_bye = invite(method="BYE", from_uri=REMOTE, from_tag="rt", to_uri=LINE, to_tag="ma", contact=RC)
    assert rules(h.forward(old_bye)) == []
    assert rules(h.respond(PICKUP, answer(PICKUP, 200, to_tag="rt2"))) == [("O19", S.ACTIVE, S.ACTIVE)]
    new_bye = invite(method="BYE", call_id="call-2", from_tag="mb", to_uri=LINE, to_tag="rt2", contact=CB)
    assert rules(h.forward(new_bye)) == [("O18", S.ACTIVE, S.IDLE)]


def test_7_1_failed_retrieve_restores_the_held_owner_q17() -> None:
    h = _held()
    h.forward(PICKUP)
    actions = h.respond(PICKUP, answer(PICKUP, 481))
    assert rules(actions) == [("7.1", S.ACTIVE, S.HELD)]
    app = h.engine.appearance(LINE, 1)
    assert app is not None and app.leg is not None
    assert (app.owner, app.leg.call_id, app.leg.member_tag, app.previous) == (CA, "call-1", "ma", None)
    assert gn(actions) == [full(state_entry(1, "held", ACTIVE_URI))] * 2


def test_7_2_s10_pickup_of_private_hold_is_403_and_owner_retrieves() -> None:
    h = active()
    h.forward(
        invite(to_tag="rt", cseq=2, body=HOLD_SDP, call_info=seize_info(1) + ";appearance-state=held-private")
    )
    plan = h.engine.check_request(PICKUP, h.now)
    assert isinstance(plan.rejection, Forbidden)
    assert plan.rejection.status == 403
    assert rules(h.forward(invite(to_tag="rt", cseq=3, body=TALK_SDP))) == [("O16", S.HELD_PRIVATE, S.ACTIVE)]


def test_7_6_pickup_shaped_invite_on_active_is_403_barge_not_supported() -> None:
    h = active()
    plan = h.engine.check_request(PICKUP, h.now)
    assert plan.rejection is not None
    assert (plan.rejection.status, plan.rejection.reason) == (403, "Barge-in not supported")


def test_check_request_passes_ordinary_invites() -> None:
    h = active()
    assert h.engine.check_request(invite(call_id="z", call_info=seize_info(2)), h.now) == RequestPlan()
    assert h.engine.check_request(invite(method="BYE", to_tag="rt"), h.now) == RequestPlan()


def _incoming(**kw: object) -> tuple[Harness, Request]:
    kw.setdefault("alerting_state", False)  # the I3-from-idle path of phones without alerting
    h = group(**kw)
    inbound = invite(call_id="in-1", from_uri=REMOTE, from_tag="rt", to_uri=LINE, contact=RC, to_display=None)
    return h, inbound


def test_i1_incoming_call_alerts_with_alerting_state() -> None:
    h, inbound = _incoming(alerting_state=True)
    actions = h.forward(inbound)
    assert rules(actions) == [("I1", S.IDLE, S.ALERTING)]
    assert gn(actions) == [full(state_entry(1, "alerting", "<sip:3001@carrier.example.net>"))] * 2


def test_i1_on_by_default_and_off_with_the_switch() -> None:
    h = group()
    inbound = invite(call_id="in-1", from_uri=REMOTE, from_tag="rt", to_uri=LINE, contact=RC)
    assert rules(h.forward(inbound)) == [("I1", S.IDLE, S.ALERTING)]
    h, inbound = _incoming(alerting_state=False)
    assert h.forward(inbound) == []


def test_i2_member_ringing_keeps_alerting() -> None:
    h, inbound = _incoming(alerting_state=True)
    h.forward(inbound)
    assert rules(h.respond(inbound, answer(inbound, 180, to_tag="tb", contact=CB))) == [
        ("I2", S.ALERTING, S.ALERTING)
    ]


def test_i3_i4_member_answer_is_pending_until_the_callers_ack() -> None:
    h, inbound = _incoming()
    h.forward(inbound)
    actions = h.respond(inbound, answer(inbound, 200, to_tag="tb", contact=CB, call_info=seize_info(1)))
    assert rules(actions) == [("I3", S.IDLE, S.ACTIVE_PENDING)]
    assert gn(actions) == []  # no NOTIFY before the ACK
    app = h.engine.appearance(LINE, 1)
    assert app is not None and app.owner == CB and app.remote_contact == RC
    ack = invite(
        method="ACK", call_id="in-1", from_uri=REMOTE, from_tag="rt", to_uri=LINE, to_tag="tb", contact=None
    )
    actions = h.ack(ack)
    assert rules(actions) == [("I4", S.ACTIVE_PENDING, S.ACTIVE)]
    assert CancelTimer(AppearanceKey(LINE, 1), TTL_TIMER) in actions
    assert gn(actions) == [full(state_entry(1, "active", "<sip:3001@carrier.example.net>"))] * 2
    # B holds (I7 = O14 with the member as callee), R hangs up without Call-Info.
    hold = invite(
        call_id="in-1", from_tag="tb", to_uri=REMOTE, to_tag="rt", contact=CB, cseq=1, body=HOLD_SDP
    )
    assert rules(h.forward(hold)) == [("O14", S.ACTIVE, S.HELD)]
    bye = invite(
        method="BYE",
        call_id="in-1",
        from_uri=REMOTE,
        from_tag="rt",
        to_uri=LINE,
        to_tag="tb",
        contact=None,
        cseq=2,
    )
    assert rules(h.forward(bye)) == [("O18", S.HELD, S.IDLE)]


def test_i3_reuses_the_alerting_index() -> None:
    h, inbound = _incoming(alerting_state=True)
    h.forward(inbound)
    actions = h.respond(inbound, answer(inbound, 200, to_tag="tb", contact=CB))
    assert rules(actions) == [("I3", S.ALERTING, S.ACTIVE_PENDING)]
    assert h.states() == {1: "active-pending"}


def test_i5_s8_answer_glare_loser_vanishes_after_35_s() -> None:
    h, inbound = _incoming()
    h.forward(inbound)
    h.respond(inbound, answer(inbound, 200, to_tag="ta", contact=CA))
    h.respond(inbound, answer(inbound, 200, to_tag="tb", contact=CB))
    assert h.states() == {1: "active-pending", 2: "active-pending"}
    h.ack(
        invite(
            method="ACK",
            call_id="in-1",
            from_uri=REMOTE,
            from_tag="rt",
            to_uri=LINE,
            to_tag="ta",
            contact=None,
        )
    )
    actions = h.advance(35.0)
    assert rules(actions) == [("I5", S.ACTIVE_PENDING, S.IDLE)]
    assert h.states() == {1: "active"}


def test_i6_caller_cancel_ends_the_alerting_appearance() -> None:
    h, inbound = _incoming(alerting_state=True)
    h.forward(inbound)
    actions = h.forward(
        invite(method="CANCEL", call_id="in-1", from_uri=REMOTE, from_tag="rt", to_uri=LINE, contact=None)
    )
    assert rules(actions) == [("I6", S.ALERTING, S.IDLE)]


def test_i6_all_branches_failing_ends_the_alerting_appearance() -> None:
    h, inbound = _incoming(alerting_state=True)
    h.forward(inbound)
    assert rules(h.respond(inbound, answer(inbound, 480, to_tag="x"))) == [("I6", S.ALERTING, S.IDLE)]


def test_prack_refer_and_unknown_methods_change_nothing() -> None:
    h = active()
    for method in ("PRACK", "REFER", "INFO", "MESSAGE"):
        assert h.forward(invite(method=method, to_tag="rt", cseq=5)) == []


def test_update_from_the_owner_holds_without_rollback() -> None:
    h = active()
    assert rules(h.forward(invite(method="UPDATE", to_tag="rt", cseq=2, body=HOLD_SDP))) == [
        ("O14", S.ACTIVE, S.HELD)
    ]
    app = h.engine.appearance(LINE, 1)
    assert app is not None and app.rollback is None


def test_trigger_outside_the_table_is_reported_as_ignored() -> None:
    h = active()
    actions = h.forward(invite(to_tag="rt", cseq=2, body=TALK_SDP))  # retrieve while active
    assert rules(actions) == []
    (ignored,) = facts(actions, TriggerIgnored)
    assert isinstance(ignored, TriggerIgnored) and ignored.state is S.ACTIVE


def test_3_5_rebooted_owner_loses_its_call() -> None:
    h = active()
    actions = h.subscribe(subscribe(call_id="sub-a-new", from_tag="new"))
    assert rules(actions) == [("3.5", S.ACTIVE, S.IDLE)]


def test_s19_canonical_aor_upper_case_host_and_default_port_are_the_same_line() -> None:
    h = group()
    odd = invite(from_uri="sip:2001@PBX.Example.COM:5060", call_info=seize_info(2))
    assert rules(h.forward(odd)) == [("O5b", S.IDLE, S.SEIZED)]
    assert h.states() == {2: "seized"}


def test_q26_alias_maps_a_gateway_number_to_the_line() -> None:
    h = Harness(engine(aliases=(("sip:+12155550100@gw.example.net", LINE),), alerting_state=True))
    h.subscribe(subscribe())
    inbound = invite(
        call_id="gw", from_uri=REMOTE, from_tag="g", to_uri="sip:+12155550100@gw.example.net", contact=RC
    )
    assert rules(h.forward(inbound)) == [("I1", S.IDLE, S.ALERTING)]
