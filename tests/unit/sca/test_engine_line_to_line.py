"""A shared line calling a shared line (sca.md 7.1 step 4, rule O19b): A on line L calls line
L2, X on L2 answers, A holds and B on L picks the call up with Replaces.  L2's appearance
follows the pickup's dialog, not the replaced one, so X's BYE of the old leg leaves it active."""

from __future__ import annotations

from scaserver.sca.appearance import AppearanceChanged, AppearanceState
from scaserver.sca.engine import RequestPlan
from scaserver.sca.line import SharedLine
from scaserver.sip.actions import EngineAction
from scaserver.sip.message import Request

from .scenario import CA, CB, HOLD_SDP, LINE, Harness, answer, engine, facts, invite, seize_info, subscribe

S = AppearanceState
L2 = "sip:2002@pbx.example.com"
CX = "sip:x-desk-7f3a@192.0.2.21:5060"  # X's Contact user is not its line's


def rules(actions: list[EngineAction]) -> list[tuple[str, str, S, S]]:
    found = facts(actions, AppearanceChanged)
    return [(c.line, c.rule, c.from_state, c.to_state) for c in found]  # type: ignore[attr-defined]


CALL = invite(call_id="c1", from_tag="ma", to_uri=L2, contact=CA, call_info=seize_info(1))
PICKUP = invite(call_id="c2", from_tag="mb", to_uri=LINE, contact=CB, call_info=seize_info(1))
OLD_BYE = invite(method="BYE", call_id="c1", from_uri=L2, from_tag="xt", to_uri=LINE, to_tag="ma", contact=CX)
# In the pickup's dialog X is the callee of an INVITE From L To L: its BYE carries L in both.
NEW_BYE = invite(
    method="BYE", call_id="c2", from_uri=LINE, from_tag="xt2", to_uri=LINE, to_tag="mb", contact=CX
)


def held_line_to_line_call() -> Harness:
    h = Harness(engine())
    h.engine.provision([SharedLine(LINE), SharedLine(L2)])
    h.subscribe(subscribe())
    h.subscribe(subscribe(contact=CB, call_id="sub-b", from_tag="fb"))
    h.forward(CALL)
    h.respond(CALL, answer(CALL, 200, to_tag="xt", contact=CX))
    h.ack(invite(method="ACK", call_id="c1", to_uri=L2, to_tag="xt", contact=CA))
    hold = invite(call_id="c1", to_uri=L2, to_tag="xt", cseq=2, contact=CA, body=HOLD_SDP)
    h.forward(hold)
    h.respond(hold, answer(hold, 200, to_tag="xt", contact=CX))
    assert states(h) == {LINE: "held", L2: "active"}
    return h


def states(h: Harness) -> dict[str, str]:
    return {app.line: app.state.value for app in h.engine.appearances()}


def picked_up(h: Harness, request: Request = PICKUP) -> list[EngineAction]:
    assert h.engine.check_request(request, h.now) == RequestPlan(
        target=CX, replaces="c1;to-tag=xt;from-tag=ma"
    )
    return h.forward(request)


def test_o19b_far_line_follows_the_pickup_dialog_when_the_old_leg_ends_first() -> None:
    h = held_line_to_line_call()
    assert rules(picked_up(h)) == [
        (LINE, "O19", S.HELD, S.ACTIVE),
        (L2, "O19b", S.ACTIVE, S.ACTIVE),
    ]
    assert rules(h.forward(OLD_BYE)) == []  # X ends the replaced leg before its 200 (Polycom order)
    assert rules(h.respond(OLD_BYE, answer(OLD_BYE, 200, to_tag="ma", contact=None))) == []
    assert states(h) == {LINE: "active", L2: "active"}
    actions = h.respond(PICKUP, answer(PICKUP, 200, to_tag="xt2", contact=CX))
    assert rules(actions) == [(LINE, "O19", S.ACTIVE, S.ACTIVE), (L2, "O19b", S.ACTIVE, S.ACTIVE)]
    far = h.engine.appearance(L2, 1)
    assert far is not None and far.leg is not None
    assert (far.leg.call_id, far.leg.member_tag, far.leg.remote_tag) == ("c2", "xt2", "mb")
    assert (far.owner, far.remote_contact, far.previous) == (CX, CB, None)
    assert rules(h.forward(NEW_BYE)) == [(LINE, "O18", S.ACTIVE, S.IDLE), (L2, "O18", S.ACTIVE, S.IDLE)]
    assert states(h) == {}


def test_o19b_far_line_follows_the_pickup_dialog_when_the_answer_comes_first() -> None:
    h = held_line_to_line_call()
    picked_up(h)
    h.respond(PICKUP, answer(PICKUP, 200, to_tag="xt2", contact=CX))
    assert rules(h.forward(OLD_BYE)) == []
    assert states(h) == {LINE: "active", L2: "active"}
    hold = invite(
        call_id="c2", from_uri=LINE, from_tag="xt2", to_uri=LINE, to_tag="mb", cseq=5, body=HOLD_SDP
    )
    assert rules(h.forward(hold)) == [(L2, "O14", S.ACTIVE, S.HELD)]  # X holds in the new dialog
    bye_from_b = invite(method="BYE", call_id="c2", from_tag="mb", to_uri=LINE, to_tag="xt2", contact=CB)
    assert rules(h.forward(bye_from_b)) == [(LINE, "O18", S.ACTIVE, S.IDLE), (L2, "O18", S.HELD, S.IDLE)]


def test_7_1_failed_pickup_puts_the_far_line_back_on_the_old_dialog() -> None:
    h = held_line_to_line_call()
    picked_up(h)
    actions = h.respond(PICKUP, answer(PICKUP, 481))
    assert rules(actions) == [(LINE, "7.1", S.ACTIVE, S.HELD), (L2, "7.1", S.ACTIVE, S.ACTIVE)]
    far = h.engine.appearance(L2, 1)
    assert far is not None and far.leg is not None
    assert (far.leg.call_id, far.leg.member_tag, far.remote_contact, far.previous) == ("c1", "xt", CA, None)
    assert rules(h.forward(OLD_BYE)) == [(LINE, "O18", S.HELD, S.IDLE), (L2, "O18", S.ACTIVE, S.IDLE)]


def test_7_1_cancelled_pickup_puts_the_far_line_back_on_the_old_dialog() -> None:
    h = held_line_to_line_call()
    picked_up(h)
    cancel = invite(method="CANCEL", call_id="c2", from_tag="mb", to_uri=LINE, contact=None)
    assert rules(h.forward(cancel)) == [(LINE, "7.1", S.ACTIVE, S.HELD), (L2, "7.1", S.ACTIVE, S.ACTIVE)]
    assert rules(h.respond(PICKUP, answer(PICKUP, 487))) == []
    assert states(h) == {LINE: "held", L2: "active"}


def test_o19b_18x_to_the_pickup_changes_nothing_on_the_far_line() -> None:
    h = held_line_to_line_call()
    picked_up(h)
    assert rules(h.respond(PICKUP, answer(PICKUP, 180, to_tag="xt2", contact=CX))) == []
    assert states(h) == {LINE: "active", L2: "active"}


def test_o19b_far_line_that_placed_the_call_follows_the_pickup_too() -> None:
    """The other direction: X on L2 calls L, A on L answers and holds, B on L picks up; L2's
    caller-side appearance becomes the callee of the pickup's dialog."""
    h = Harness(engine())
    h.engine.provision([SharedLine(LINE), SharedLine(L2)])
    h.subscribe(subscribe())
    inbound = invite(
        call_id="c1", from_uri=L2, from_tag="xt", to_uri=LINE, contact=CX, call_info=seize_info(1)
    )
    h.forward(inbound)
    h.respond(inbound, answer(inbound, 200, to_tag="ma", contact=CA))
    h.ack(
        invite(method="ACK", call_id="c1", from_uri=L2, from_tag="xt", to_uri=LINE, to_tag="ma", contact=CX)
    )
    hold = invite(call_id="c1", from_uri=LINE, from_tag="ma", to_uri=L2, to_tag="xt", cseq=2, body=HOLD_SDP)
    h.forward(hold)
    assert states(h) == {LINE: "held", L2: "active"}
    assert rules(picked_up(h)) == [(LINE, "O19", S.HELD, S.ACTIVE), (L2, "O19b", S.ACTIVE, S.ACTIVE)]
    assert rules(h.forward(OLD_BYE)) == []
    h.respond(PICKUP, answer(PICKUP, 200, to_tag="xt2", contact=CX))
    assert rules(h.forward(NEW_BYE)) == [(LINE, "O18", S.ACTIVE, S.IDLE), (L2, "O18", S.ACTIVE, S.IDLE)]
