"""No stuck lamp: the failure paths of call tracking (sca.md O3/O4 guards, O8, O20, I8, Q18, section 1).

Each test drives the engine on the simulated clock of :class:`Harness` and names the rule it
checks.  Members use Contact users that are not the line's (baresip ``2001-0x...``), as real
phones do.
"""

from __future__ import annotations

from scaserver.sca.appearance import Appearance, AppearanceChanged, AppearanceState, CallLeg, Role
from scaserver.sca.engine import TTL_TIMER, AppearanceKey, ScaEngine
from scaserver.sca.line import SharedLine
from scaserver.sca.subscription import Package
from scaserver.sip.actions import EngineAction, StartTimer
from scaserver.sip.message import Request

from .scenario import (
    CA,
    CB,
    IDLE_ONLY,
    LINE,
    RC,
    REMOTE,
    Harness,
    answer,
    engine,
    facts,
    invite,
    notifies,
    seize_info,
    state_entry,
    subscribe,
)

S = AppearanceState
BARESIP_A = "sip:2001-0x55a1c2@192.0.2.11:5060"
BARESIP_B = "sip:2001-0x77b3d4@192.0.2.12:5060"


def rules(actions: list[EngineAction]) -> list[tuple[str, S, S]]:
    return [(c.rule, c.from_state, c.to_state) for c in facts(actions, AppearanceChanged)]  # type: ignore[attr-defined]


def gn(actions: list[EngineAction]) -> list[str | None]:
    return [n.headers.get("Call-Info") for n, _ in notifies(actions) if n.headers.get("Event") == "call-info"]


def group(**kw: object) -> Harness:
    h = Harness(engine(**kw))
    h.subscribe(subscribe(contact=CA))
    h.subscribe(subscribe(contact=CB, call_id="sub-b", from_tag="fb"))
    return h


def seize(h: Harness, *, expires: int = 15) -> None:
    h.subscribe(
        subscribe("line-seize", call_id="ls", from_tag="l1", expires=expires, call_info=seize_info(0))
    )


INV = invite(call_info=seize_info(1), to_display="Carol")


# -- case: a cancelled call (O8) ---------------------------------------------------------------


def test_o8_on_cancel_releases_a_progressing_appearance() -> None:
    h = group()
    seize(h)
    h.forward(INV)
    h.respond(INV, answer(INV, 180))
    actions = h.run(h.engine.on_cancel(invite(method="CANCEL"), h.now))
    assert rules(actions) == [("O8", S.PROGRESSING, S.IDLE)]
    assert gn(actions) == [IDLE_ONLY] * 2
    assert h.engine.appearances(LINE) == []


def test_o8_four_cancelled_calls_leave_a_four_appearance_line_free() -> None:
    h = Harness(engine())
    h.engine.provision([SharedLine(LINE, 4)])
    h.subscribe(subscribe(contact=CA))
    for n in range(5):
        call = invite(call_id=f"c{n}", from_tag=f"m{n}", contact=BARESIP_A)
        assert rules(h.forward(call)) == [("O5b", S.IDLE, S.SEIZED)]
        h.respond(call, answer(call, 180))
        h.run(h.engine.on_cancel(invite(method="CANCEL", call_id=f"c{n}", from_tag=f"m{n}"), h.now))
        h.respond(call, answer(call, 487))
    assert h.engine.appearances(LINE) == []


# -- case: slow post-dial delay (O3/O4 guards, O5, O6, O7) -------------------------------------


def test_o4_seize_expiry_after_the_invite_leaves_the_call_its_appearance() -> None:
    h = group()
    seize(h, expires=15)
    h.advance(8.0)
    h.forward(INV)
    h.advance(10.0)  # the line-seize subscription expired at 15 s
    assert h.states() == {1: "seized"}
    assert rules(h.respond(INV, answer(INV, 180))) == [("O6", S.SEIZED, S.PROGRESSING)]
    actions = h.respond(INV, answer(INV, 200))
    assert rules(actions) == [("O7", S.PROGRESSING, S.ACTIVE)]
    assert h.states() == {1: "active"}


def test_o4_seize_expiry_before_any_invite_still_frees_the_appearance() -> None:
    h = group()
    seize(h, expires=15)
    h.advance(16.0)
    assert h.states() == {}


def test_o3_line_seize_unsubscribe_after_the_invite_keeps_the_call() -> None:
    h = group()
    seize(h)
    h.forward(INV)
    h.subscribe(
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
    assert [k.event for k in (s.key for s in h.engine.subscriptions())] == [Package.CALL_INFO] * 2
    assert h.states() == {1: "seized"}
    h.respond(INV, answer(INV, 180))
    h.respond(INV, answer(INV, 200))
    assert h.states() == {1: "active"}


def test_o20_dialled_seize_without_answer_lasts_the_early_ttl_not_the_seized_ttl() -> None:
    h = group(early_ttl=200.0)
    seize(h)
    h.forward(INV)
    h.advance(150.0)  # past the 120 s seized TTL
    assert h.states() == {1: "seized"}
    actions = h.advance(51.0)
    assert rules(actions) == [("O20", S.SEIZED, S.IDLE)]


def test_o20_a_later_18x_restarts_the_early_ttl() -> None:
    h = group(early_ttl=200.0)
    h.forward(INV)
    h.respond(INV, answer(INV, 180))
    h.advance(150.0)
    h.respond(INV, answer(INV, 180))
    h.advance(150.0)
    assert h.states() == {1: "progressing"}
    assert rules(h.advance(60.0)) == [("O20", S.PROGRESSING, S.IDLE)]


# -- case: early states after a restart (O20, I8, O7 and O8 without transaction, Q18) ---------


def restarted(apps: list[Appearance], **kw: object) -> tuple[Harness, list[EngineAction]]:
    h = Harness(engine(**kw))
    actions = h.run(h.engine.restore([], [], apps, h.now))
    h.subscribe(subscribe(contact=CB, call_id="sub-b", from_tag="fb"))
    return h, actions


PROGRESSING = Appearance(
    LINE,
    1,
    S.PROGRESSING,
    owner=BARESIP_A,
    leg=CallLeg("call-1", "ma", None, Role.CALLER),
    remote_uri="<sip:3001@carrier.example.net>",
    created_at=990.0,
    changed_at=995.0,
    touched_at=995.0,
)
ALERTING = Appearance(
    LINE,
    2,
    S.ALERTING,
    leg=CallLeg("in-1", None, "rt", Role.CALLEE),
    remote_contact=RC,
    remote_uri="<sip:3001@carrier.example.net>",
    created_at=990.0,
    changed_at=990.0,
    touched_at=990.0,
)


def test_o20_i8_restored_early_states_get_their_ttl_back() -> None:
    h, actions = restarted([PROGRESSING, ALERTING], early_ttl=200.0)
    # A full early_ttl from the restart, however long it took: a late CANCEL or answer may come.
    assert StartTimer(AppearanceKey(LINE, 1), TTL_TIMER, 200.0) in actions
    assert StartTimer(AppearanceKey(LINE, 2), TTL_TIMER, 200.0) in actions
    assert h.advance(199.0) == []
    expired = h.advance(1.0)
    assert sorted(rules(expired)) == [("I8", S.ALERTING, S.IDLE), ("O20", S.PROGRESSING, S.IDLE)]
    assert h.engine.appearances(LINE) == []
    assert h.last_call_info(CB) == IDLE_ONLY


def test_o8_cancel_whose_invite_transaction_died_with_the_restart_releases() -> None:
    h, _ = restarted([PROGRESSING, ALERTING])
    actions = h.run(h.engine.on_cancel(invite(method="CANCEL"), h.now))
    assert rules(actions) == [("O8", S.PROGRESSING, S.IDLE)]
    caller_cancel = invite(method="CANCEL", call_id="in-1", from_uri=REMOTE, from_tag="rt", to_uri=LINE)
    assert rules(h.run(h.engine.on_cancel(caller_cancel, h.now))) == [("I6", S.ALERTING, S.IDLE)]


def test_o7_late_2xx_forwarded_statelessly_after_a_restart_answers_the_call() -> None:
    h, _ = restarted([PROGRESSING])
    late = answer(INV, 200, to_tag="rt")
    actions = h.run(h.engine.on_stray_answer(late, h.now))
    assert rules(actions) == [("O7", S.PROGRESSING, S.ACTIVE)]
    app = h.engine.appearance(LINE, 1)
    assert app is not None and app.leg is not None and app.leg.remote_tag == "rt"
    # Its retransmission changes nothing; the BYE ends the call.
    assert rules(h.run(h.engine.on_stray_answer(late, h.now))) == []
    bye = invite(method="BYE", to_tag="rt", cseq=2)
    assert rules(h.forward(bye)) == [("O18", S.ACTIVE, S.IDLE)]


def test_i3_late_2xx_of_a_member_after_a_restart_answers_the_alerting_call() -> None:
    h, _ = restarted([ALERTING])
    inbound = invite(call_id="in-1", from_uri=REMOTE, from_tag="rt", to_uri=LINE, contact=RC)
    late = answer(inbound, 200, to_tag="tb", contact=BARESIP_B)
    assert rules(h.run(h.engine.on_stray_answer(late, h.now))) == [("I3", S.ALERTING, S.ACTIVE_PENDING)]
    ack = invite(method="ACK", call_id="in-1", from_uri=REMOTE, from_tag="rt", to_uri=LINE, to_tag="tb")
    assert rules(h.ack(ack)) == [("I4", S.ACTIVE_PENDING, S.ACTIVE)]


def test_stray_2xx_of_a_call_nobody_tracks_changes_nothing() -> None:
    h, _ = restarted([])
    other = invite(call_id="other", from_uri=REMOTE, to_uri="sip:3002@pbx.example.com", contact=RC)
    assert h.engine.on_stray_answer(answer(other, 200, to_tag="x"), h.now) == []


def active_call(**kw: object) -> Harness:
    h = group(**kw)
    h.forward(INV)
    h.respond(INV, answer(INV, 200))
    h.ack(invite(method="ACK", to_tag="rt"))
    return h


def test_q18_call_without_signalling_for_max_call_age_is_idled() -> None:
    h = active_call(max_call_age=600.0)
    h.advance(500.0)
    refresh = invite(to_tag="rt", cseq=2)  # a body-less session refresh
    h.forward(refresh)
    h.respond(refresh, answer(refresh, 200))
    h.advance(500.0)
    assert h.states() == {1: "active"}
    actions = h.advance(101.0)
    assert rules(actions) == [("Q18", S.ACTIVE, S.IDLE)]
    assert gn(actions) == [IDLE_ONLY] * 2


def test_q18_sweep_is_off_by_default() -> None:
    h = active_call()
    h.advance(10 * 86400.0)
    assert h.states() == {1: "active"}


def test_q18_restored_held_call_is_swept_from_its_last_signalling() -> None:
    held = Appearance(
        LINE,
        1,
        S.HELD,
        owner=CA,
        leg=CallLeg("call-1", "ma", "rt", Role.CALLER),
        created_at=0.0,
        changed_at=100.0,
        touched_at=100.0,
    )
    h, actions = restarted([held], max_call_age=3600.0)
    assert StartTimer(AppearanceKey(LINE, 1), TTL_TIMER, 2700.0) in actions
    assert rules(h.advance(2700.0)) == [("Q18", S.HELD, S.IDLE)]


# -- case: Contacts whose user is not the line's (section 1) -----------------------------------


def test_o5b_member_whose_contact_user_is_not_the_line_is_tracked_by_its_from() -> None:
    h = group()
    call = invite(contact=BARESIP_A)
    assert rules(h.forward(call)) == [("O5b", S.IDLE, S.SEIZED)]
    h.respond(call, answer(call, 180))
    assert rules(h.respond(call, answer(call, 200))) == [("O7", S.PROGRESSING, S.ACTIVE)]
    assert rules(h.forward(invite(method="BYE", to_tag="rt", cseq=2))) == [("O18", S.ACTIVE, S.IDLE)]


def test_polycom_line_user_in_the_contact_still_names_the_line() -> None:
    h = group()
    call = invite(from_uri="sip:alice@pbx.example.com", contact=CA)  # Contact user 2001 = the line
    assert rules(h.forward(call)) == [("O5b", S.IDLE, S.SEIZED)]


def incoming_answered_by_baresip(h: Harness) -> Request:
    inbound = invite(call_id="in-1", from_uri=REMOTE, from_tag="rt", to_uri=LINE, contact=RC)
    h.forward(inbound)
    h.respond(inbound, answer(inbound, 180, to_tag="tb", contact=BARESIP_B))
    h.respond(inbound, answer(inbound, 200, to_tag="tb", contact=BARESIP_B))
    return inbound


def test_i3_i4_o18_member_whose_contact_user_is_not_the_line_answers_an_alerting_call() -> None:
    h = group(alerting_state=True)
    incoming_answered_by_baresip(h)
    assert h.states() == {1: "active-pending"}
    ack = invite(method="ACK", call_id="in-1", from_uri=REMOTE, from_tag="rt", to_uri=LINE, to_tag="tb")
    assert rules(h.ack(ack)) == [("I4", S.ACTIVE_PENDING, S.ACTIVE)]
    assert h.last_call_info(CA) is not None
    assert state_entry(1, "active", "<sip:3001@carrier.example.net>") in (h.last_call_info(CA) or "")
    bye = invite(method="BYE", call_id="in-1", from_tag="tb", to_uri=REMOTE, to_tag="rt", contact=BARESIP_B)
    assert rules(h.forward(bye)) == [("O18", S.ACTIVE, S.IDLE)]
    assert h.last_call_info(CA) == IDLE_ONLY


def test_i3_member_whose_contact_user_is_not_the_line_is_tracked_without_alerting() -> None:
    h = group()
    incoming_answered_by_baresip(h)
    app = h.engine.appearance(LINE, 1)
    assert app is not None and app.state is S.ACTIVE_PENDING and app.owner == BARESIP_B


def test_a_contact_user_naming_another_line_is_that_line() -> None:
    e: ScaEngine = engine()
    e.provision([SharedLine(LINE, 2), SharedLine("sip:2002@pbx.example.com", 2)])
    h = Harness(e)
    call = invite(from_uri="sip:alice@pbx.example.com", contact="sip:2002@192.0.2.11:5060")
    h.forward(call)
    assert [app.line for app in e.appearances()] == ["sip:2002@pbx.example.com"]
