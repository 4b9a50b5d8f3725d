"""The races of push-and-parking.md section 7 on the whole SIP core (tests/push_rig.py): each
one played with SIP messages in both orders where the spec names two, timers on a simulated
clock.  R1, R5, R7, R13, R14 and R18 are in tests/unit/test_dispatch_push_parking.py; T-scenarios in
tests/unit/test_dispatch_push_parking_scenarios.py.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from scaserver.parking.events import BranchAdded, EndReason, ParkEnded, ParkStarted, WakeMissed, WakeObserved
from scaserver.push.gateway import Outcome, PushType
from scaserver.push.policy import PushPolicySettings
from scaserver.push.service import PushServiceSettings
from scaserver.registrar.binding import BindingRemoved, RemovalReason
from scaserver.registrar.midregevents import RegisterDecided, UpstreamChanged
from scaserver.registrar.upstream import UpstreamState
from scaserver.sip.message import Peer, Request, Transport
from tests.push_rig import (
    ANSWERED_ELSEWHERE,
    AOR,
    DESK,
    M1,
    M1_WOKEN,
    M2,
    PBX,
    REFRESH_AT,
    SDP,
    WAKE_TIMEOUT_REASON,
    Rig,
    contact_of,
    registered,
    rig,
    wakes,
)

M1_THIRD = Peer(Transport.UDP, M1.host, 7062)
M1_TCP = Peer(Transport.TCP, M1.host, 40000)


def parked(r: Rig) -> Request:
    """P's INVITE parked, M1 pushed, the gateway accepted the push (202)."""
    invite = r.invite()
    (push,) = r.pushes(PushType.CALL)
    r.push_result(push, Outcome.SENT, 202)
    return invite


# ------------------------------------------------------------------------------ R2, R3, R4


def test_r2_a_device_confirmed_within_fresh_window_is_rung_directly_and_not_pushed() -> None:
    policy = PushPolicySettings(fresh_window=5.0)
    r = rig(push=PushServiceSettings(policy=policy))
    r.device_registers(M1, contact_of(M1, "TOK1"), call_id="m1-a")
    r.advance(1.0)
    r.invite()
    assert r.pushes() == [] and r.of(ParkStarted) == []
    (branch,) = r.new_to(M1, "INVITE")
    assert branch.uri == f"sip:200@{M1.host}:{M1.port}"  # pn-* stripped (4.1)
    r.answer(branch, 200, M1, "mob", body=SDP)
    assert r.statuses() == [200]


def test_r2_outside_fresh_window_it_is_pushed_and_its_confirmation_gets_the_branch() -> None:
    r = rig(push=PushServiceSettings(policy=PushPolicySettings(fresh_window=5.0)))
    r.device_registers(M1, contact_of(M1, "TOK1"), call_id="m1-a")
    r.advance(6.0)
    parked(r)
    assert r.to(M1, "INVITE") == []
    r.register(M1, contact_of(M1, "TOK1"), call_id="m1-a", cseq=3)  # absorbed refresh (3.3.3)
    assert r.of(RegisterDecided)[-1].rule == "absorb"
    (branch,) = r.new_to(M1, "INVITE")
    r.register(M1, contact_of(M1, "TOK1"), call_id="m1-a", cseq=4)  # confirmed again
    assert r.new_to(M1, "INVITE") == [branch]  # no second branch while the first is alive


def test_r2_an_open_tcp_flow_gets_a_branch_and_a_push_and_its_next_confirmation_no_second() -> None:
    r = rig()
    r.device_registers(M1_TCP, contact_of(M1_TCP, "TOK1"), call_id="m1-a")
    r.advance(60.0)
    parked(r)
    (branch,) = r.new_to(M1_TCP, "INVITE")  # ring_open_flows: the app may be awake
    assert len(r.pushes(PushType.CALL)) == 1
    r.register(M1_TCP, contact_of(M1_TCP, "TOK1"), call_id="m1-a", cseq=3)  # woken by the push
    assert r.of(RegisterDecided)[-1].rule == "absorb"
    assert r.new_to(M1_TCP, "INVITE") == [branch]  # same contact and flow: no second branch
    r.answer(branch, 180, M1_TCP, "mob")
    r.register(M1_TCP, contact_of(M1_TCP, "TOK1"), call_id="m1-a", cseq=4)
    assert r.new_to(M1_TCP, "INVITE") == [branch]
    r.answer(branch, 200, M1_TCP, "mob", body=SDP)
    assert r.statuses() == [180, 180, 200]


def test_r2_a_closed_tcp_flow_gets_no_direct_branch_and_the_app_is_rung_where_it_wakes() -> None:
    r = rig()
    r.device_registers(M1_TCP, contact_of(M1_TCP, "TOK1"), call_id="m1-a")
    r.run(r.core.connection_lost(M1_TCP, r.now))  # the app was suspended
    r.advance(60.0)
    parked(r)
    assert r.to(M1_TCP) == [] and len(r.pushes()) == 1
    reconnected = Peer(Transport.TCP, M1.host, 40001)
    wakes(r, reconnected, "TOK1", "m1-b")
    (branch,) = r.new_to(reconnected, "INVITE")
    r.answer(branch, 200, reconnected, "mob", body=SDP)
    assert r.statuses() == [180, 200] and r.to(M1_TCP) == []


def test_r3_an_invite_while_the_wake_register_awaits_the_upstream_parks_and_the_2xx_gives_one_branch() -> (
    None
):
    r = registered(desk=False)
    r.register(M1_WOKEN, contact_of(M1_WOKEN, "TOK1"), call_id="m1-b", cseq=1, authorization=True)
    assert r.of(RegisterDecided)[-1].rule == "2"  # in flight upstream
    parked(r)
    (push,) = r.pushes()
    assert push.prid == "TOK1" and r.to(M1_WOKEN, "INVITE") == []
    r.pbx_answers_last_register(200)
    assert r.responses_to(M1_WOKEN)[-1].status == 200
    (branch,) = r.new_to(M1_WOKEN, "INVITE")
    assert branch.call_id == "call-1@pbx"
    assert len(r.pushes()) == 1


def test_r4_challenge_then_credentials_and_retransmissions_give_exactly_one_branch() -> None:
    r = registered(desk=False)
    parked(r)
    registers = len(r.new_to(PBX, "REGISTER"))
    contact = contact_of(M1_WOKEN, "TOK1")
    first = r.register(M1_WOKEN, contact, call_id="m1-b", cseq=1)
    r.send(first, M1_WOKEN)  # retransmission while forwarded: absorbed
    r.pbx_answers_last_register(401)
    r.send(first, M1_WOKEN)  # retransmission after the 401: the 401 again, nothing upstream
    assert [m.status for m in r.responses_to(M1_WOKEN)] == [401, 401]
    assert r.to(M1_WOKEN, "INVITE") == [] and r.of(BranchAdded) == []
    second = r.register(M1_WOKEN, contact, call_id="m1-b", cseq=2, authorization=True)
    r.send(second, M1_WOKEN)
    r.pbx_answers_last_register(200)
    r.send(second, M1_WOKEN)  # after the 200: the 200 again, no second confirmation
    assert [m.status for m in r.responses_to(M1_WOKEN)] == [401, 401, 200, 200]
    assert len(r.new_to(PBX, "REGISTER")) == registers + 2
    assert len(r.new_to(M1_WOKEN, "INVITE")) == 1
    assert len(r.of(BranchAdded)) == 1


# ------------------------------------------------------------------------------ R6


def test_r6_woken_again_from_a_new_port_before_any_answer_supersedes_the_old_branch() -> None:
    r = registered(desk=False)
    parked(r)
    wakes(r, M1_WOKEN, "TOK1", "m1-b")
    (old,) = r.new_to(M1_WOKEN, "INVITE")
    r.register(M1_THIRD, contact_of(M1_THIRD, "TOK1"), call_id="m1-b", cseq=3)  # same pn tuple
    assert r.of(RegisterDecided)[-1].rule == "5"  # another source: forwarded
    r.pbx_answers_last_register(200)
    (new,) = r.new_to(M1_THIRD, "INVITE")
    assert len(r.core.registrar.location.bindings(AOR)) == 1  # replaced, not added
    r.answer(old, 180, M1_WOKEN, "old")  # the superseded branch rings: CANCELled, not relayed
    (cancel,) = r.to(M1_WOKEN, "CANCEL")
    assert r.statuses() == [180]
    r.answer(cancel, 200, M1_WOKEN, "old")
    r.answer(old, 487, M1_WOKEN, "old")
    r.answer(new, 180, M1_THIRD, "new")
    r.answer(new, 200, M1_THIRD, "new", body=SDP)
    assert r.statuses() == [180, 180, 200]
    assert (r.invite_responses()[-2].headers.get("To") or "").endswith("tag=new")


def test_r6_woken_again_from_a_new_port_while_the_old_branch_rings_keeps_the_old_branch() -> None:
    r = registered(desk=False)
    parked(r)
    wakes(r, M1_WOKEN, "TOK1", "m1-b")
    (old,) = r.new_to(M1_WOKEN, "INVITE")
    r.answer(old, 180, M1_WOKEN, "old")
    r.register(M1_THIRD, contact_of(M1_THIRD, "TOK1"), call_id="m1-b", cseq=3)
    r.pbx_answers_last_register(200)
    assert r.to(M1_THIRD, "INVITE") == [] and r.to(M1_WOKEN, "CANCEL") == []
    assert len(r.of(BranchAdded)) == 1


# ------------------------------------------------------------------------------ R8, R9, R10


def test_r8_cancel_while_the_wake_register_is_upstream_completes_the_registration_without_a_branch() -> (
    None
):
    r = registered(desk=False)
    invite = parked(r)
    r.register(M1_WOKEN, contact_of(M1_WOKEN, "TOK1"), call_id="m1-b", cseq=1, authorization=True)
    r.cancel(invite)
    assert r.statuses() == [180, 487]
    r.pbx_answers_last_register(200)
    assert r.responses_to(M1_WOKEN)[-1].status == 200
    assert r.to(M1_WOKEN, "INVITE") == []
    (binding,) = r.core.registrar.location.bindings(AOR)
    assert binding.received == M1_WOKEN


def ringing_mobile(r: Rig) -> Request:
    """M1 pushed, woken, rung; its 180 relayed to P."""
    parked(r)
    wakes(r, M1_WOKEN, "TOK1", "m1-b")
    (branch,) = r.new_to(M1_WOKEN, "INVITE")
    r.answer(branch, 180, M1_WOKEN, "mob")
    return branch


def test_r9_a_cancel_after_the_2xx_was_forwarded_gets_200_and_has_no_effect() -> None:
    r = registered(desk=False)
    invite = r.invite()
    (push,) = r.pushes()
    r.push_result(push, Outcome.SENT, 202)
    wakes(r, M1_WOKEN, "TOK1", "m1-b")
    (branch,) = r.new_to(M1_WOKEN, "INVITE")
    r.answer(branch, 200, M1_WOKEN, "mob", body=SDP)
    assert r.statuses() == [180, 200]
    r.cancel(invite)
    cancel_answers = [m.status for m in r.responses_to(PBX) if m.headers.get("CSeq") == "1 CANCEL"]
    assert cancel_answers == [200]
    assert r.statuses() == [180, 200] and r.to(M1_WOKEN, "CANCEL") == []
    assert r.pushes(PushType.CANCEL) == []


def test_r9_a_2xx_crossing_the_cancel_after_the_487_is_still_forwarded() -> None:
    r = registered(desk=False)
    invite = r.invite()
    (push,) = r.pushes()
    r.push_result(push, Outcome.SENT, 202)
    wakes(r, M1_WOKEN, "TOK1", "m1-b")
    (branch,) = r.new_to(M1_WOKEN, "INVITE")
    r.answer(branch, 180, M1_WOKEN, "mob")
    r.cancel(invite)
    assert r.statuses() == [180, 180, 487]
    (cancel,) = r.to(M1_WOKEN, "CANCEL")
    r.answer(branch, 200, M1_WOKEN, "mob", body=SDP)  # crossed the CANCEL on the wire
    r.answer(cancel, 200, M1_WOKEN, "mob")
    assert r.statuses() == [180, 180, 487, 200]  # RFC 3261 16.7 step 5: P ACKs and BYEs it
    assert r.invite_responses()[-1].body == SDP


def test_r10_two_branches_answering_together_both_2xx_go_to_p_and_the_cancel_goes_once() -> None:
    r = registered()
    r.invite()
    (to_desk,) = r.new_to(DESK, "INVITE")
    r.answer(to_desk, 180, DESK, "desk")
    (push,) = r.pushes()
    r.push_result(push, Outcome.SENT, 202)
    wakes(r, M1_WOKEN, "TOK1", "m1-b")
    (to_mobile,) = r.new_to(M1_WOKEN, "INVITE")
    r.answer(to_mobile, 180, M1_WOKEN, "mob")
    r.answer(to_desk, 200, DESK, "desk", body=SDP)
    (cancel,) = r.to(M1_WOKEN, "CANCEL")
    assert cancel.headers.get("Reason") == ANSWERED_ELSEWHERE
    r.answer(to_mobile, 200, M1_WOKEN, "mob", body=SDP)
    r.answer(cancel, 200, M1_WOKEN, "mob")
    finals = [m for m in r.invite_responses() if m.status == 200]
    assert [(m.headers.get("To") or "").rsplit("=", 1)[-1] for m in finals] == ["desk", "mob"]
    assert len(r.to(M1_WOKEN, "CANCEL")) == 1 and r.to(DESK, "CANCEL") == []
    assert r.pushes(PushType.CANCEL) == []  # M1 rang: SIP told it
    assert [e.reason for e in r.of(ParkEnded)] == [EndReason.ANSWERED]


# ------------------------------------------------------------------------------ R11, R12


def end_by_answer(r: Rig, invite: Request) -> None:
    r.answer(r.new_to(DESK, "INVITE")[0], 200, DESK, "desk", body=SDP)


def end_by_decline(r: Rig, invite: Request) -> None:
    r.answer(r.new_to(DESK, "INVITE")[0], 603, DESK, "desk")


def end_by_no_wake(r: Rig, invite: Request) -> None:
    r.answer(r.new_to(DESK, "INVITE")[0], 480, DESK, "desk")
    r.advance(10.0)


def end_by_cancel(r: Rig, invite: Request) -> None:
    r.cancel(invite)


@pytest.mark.parametrize(
    ("ending", "final", "reason"),
    [
        (end_by_answer, 200, EndReason.ANSWERED),
        (end_by_decline, 603, EndReason.DECLINED),
        (end_by_no_wake, 480, EndReason.EXHAUSTED),
        (end_by_cancel, 487, EndReason.CANCELLED),
    ],
)
def test_r11_a_confirmation_after_the_final_response_injects_nothing(
    ending: Callable[[Rig, Request], None], final: int, reason: EndReason
) -> None:
    r = registered()
    invite = parked(r)
    ending(r, invite)
    assert r.statuses()[-1] == final
    assert [e.reason for e in r.of(ParkEnded)] == [reason]
    wakes(r, M1_WOKEN, "TOK1", "m1-b")
    assert r.responses_to(M1_WOKEN)[-1].status == 200  # the registration is processed normally
    assert r.to(M1_WOKEN, "INVITE") == []
    assert len(r.of(BranchAdded)) == 1  # the desk's, at park time


def test_r12_park_timeout_with_the_wake_register_upstream_waits_the_grace_and_injects() -> None:
    r = registered(desk=False, park_timeout=5.0, wake_timeout=10.0)
    parked(r)
    r.advance(4.5)
    r.register(M1_WOKEN, contact_of(M1_WOKEN, "TOK1"), call_id="m1-b", cseq=1, authorization=True)
    r.advance(0.5)  # park_timeout: the REGISTER is still upstream
    assert r.statuses() == [180] and r.of(ParkEnded) == []
    r.advance(1.0)
    r.pbx_answers_last_register(200)
    (branch,) = r.new_to(M1_WOKEN, "INVITE")
    r.answer(branch, 200, M1_WOKEN, "mob", body=SDP)
    assert r.statuses() == [180, 200]


def test_r12_grace_over_before_the_upstream_answers_gives_480_and_no_branch_after() -> None:
    r = registered(desk=False, park_timeout=5.0, wake_timeout=10.0)
    parked(r)
    r.advance(4.5)
    r.register(M1_WOKEN, contact_of(M1_WOKEN, "TOK1"), call_id="m1-b", cseq=1, authorization=True)
    r.advance(0.5)
    r.advance(1.99)
    assert r.statuses() == [180]
    r.advance(0.01)  # inflight_grace (2 s) once, then the best response
    assert r.statuses() == [180, 480]
    assert r.invite_responses()[-1].headers.get("Reason") == WAKE_TIMEOUT_REASON
    assert [(e.reason, e.rule) for e in r.of(ParkEnded)] == [(EndReason.TIMEOUT, "F4")]
    assert [p.reason for p in r.pushes(PushType.CANCEL)] == ["timeout"]
    r.advance(0.5)
    r.pbx_answers_last_register(200)
    assert r.responses_to(M1_WOKEN)[-1].status == 200 and r.to(M1_WOKEN, "INVITE") == []


# ------------------------------------------------------------------------------ R15, R16, R17


def test_r15_two_bindings_with_one_token_get_one_push_and_the_wake_one_branch() -> None:
    r = rig()
    r.device_registers(M1, contact_of(M1, "TOK1", param="T.app.voip"), call_id="m1-a")
    r.device_registers(M2, contact_of(M2, "TOK1", param="T.app2.voip"), call_id="m1-c")
    assert len(r.core.registrar.location.bindings(AOR)) == 2
    parked(r)
    (push,) = r.pushes()
    assert push.prid == "TOK1"
    r.device_registers(M1_WOKEN, contact_of(M1_WOKEN, "TOK1", param="T.app2.voip"), call_id="m1-d")
    (branch,) = r.new_to(M1_WOKEN, "INVITE")
    assert len(r.core.registrar.location.bindings(AOR)) == 2  # M2's binding replaced (3.6)
    assert r.to(M1, "INVITE") == [] and r.to(M2, "INVITE") == []
    r.answer(branch, 200, M1_WOKEN, "mob", body=SDP)
    assert r.statuses() == [180, 200] and len(r.pushes()) == 1


def test_r16_the_last_device_leaving_while_a_first_register_is_upstream_and_accepted() -> None:
    r = rig()
    r.device_registers(M1, contact_of(M1, "TOK1"), call_id="m1-a")
    r.register(M2, contact_of(M2), call_id="m2-a", cseq=1, authorization=True)  # in flight
    before = len(r.new_to(PBX, "REGISTER"))
    r.register(M1, contact_of(M1, "TOK1"), call_id="m1-a", cseq=3, expires=0)
    assert len(r.new_to(PBX, "REGISTER")) == before  # serialised behind M2's (3.8)
    r.pbx_answers_last_register(200)
    removal = r.new_to(PBX, "REGISTER")[-1]
    assert (removal.call_id, removal.headers.get("Expires")) == ("m1-a", "3600")  # piggy-back
    r.pbx_answers_last_register(200)
    (left,) = r.core.registrar.location.bindings(AOR)
    assert left.contact == contact_of(M2)
    assert r.upstream().state is UpstreamState.REGISTERED


def test_r16_the_last_device_leaving_while_a_first_register_is_upstream_and_challenged() -> None:
    r = rig()
    r.device_registers(M1, contact_of(M1, "TOK1"), call_id="m1-a")
    r.register(M2, contact_of(M2), call_id="m2-a", cseq=1)
    r.register(M1, contact_of(M1, "TOK1"), call_id="m1-a", cseq=3, expires=0)
    r.pbx_answers_last_register(401)  # M2 not accepted: M1 really is the last binding
    removal = r.new_to(PBX, "REGISTER")[-1]
    assert (removal.call_id, removal.headers.get("Expires")) == ("m1-a", "0")
    r.register(M2, contact_of(M2), call_id="m2-a", cseq=2, authorization=True)  # queued
    assert r.new_to(PBX, "REGISTER")[-1] == removal
    r.pbx_answers_last_register(200)
    assert r.core.registrar.location.bindings(AOR) == ()
    assert [(c.old, c.new) for c in r.of(UpstreamChanged)][-2:] == [
        (UpstreamState.REGISTERED, UpstreamState.IDLE),
        (UpstreamState.IDLE, UpstreamState.REGISTERING),
    ]
    added = r.new_to(PBX, "REGISTER")[-1]  # then M2, in the order decided
    assert (added.call_id, added.headers.get("Expires")) == ("m2-a", "3600")
    r.pbx_answers_last_register(200)
    (left,) = r.core.registrar.location.bindings(AOR)
    assert left.contact == contact_of(M2) and r.upstream().state is UpstreamState.REGISTERED


def test_r16_a_removal_decided_with_a_forward_queued_behind_it_is_a_piggy_back_refresh() -> None:
    r = rig()
    r.device_registers(M1, contact_of(M1, "TOK1"), call_id="m1-a", expires=3600)
    r.advance(REFRESH_AT)  # our own refresh in flight
    r.register(M1, contact_of(M1, "TOK1"), call_id="m1-a", cseq=3, expires=0)
    r.register(M2, contact_of(M2), call_id="m2-a", cseq=1, authorization=True)
    r.pbx_answers_last_register(200)
    removal = r.new_to(PBX, "REGISTER")[-1]
    assert (removal.call_id, removal.headers.get("Expires")) == ("m1-a", "3600")
    r.pbx_answers_last_register(200)
    assert r.core.registrar.location.bindings(AOR) == ()
    assert [f.reason for f in r.of(BindingRemoved)] == [RemovalReason.UNREGISTERED]
    r.pbx_answers_last_register(200)
    (left,) = r.core.registrar.location.bindings(AOR)
    assert left.contact == contact_of(M2) and r.upstream().state is UpstreamState.REGISTERED


def test_r17_a_device_refresh_completing_first_drops_the_queued_self_refresh() -> None:
    r = rig()
    r.device_registers(M1, contact_of(M1, "TOK1"), call_id="m1-a", expires=3600)
    r.advance(REFRESH_AT - 1.0)
    r.register(M1_WOKEN, contact_of(M1_WOKEN, "TOK1"), call_id="m1-b", cseq=1, authorization=True)
    registers = len(r.new_to(PBX, "REGISTER"))
    r.advance(1.0)  # our refresh is due, queued behind the device's forward
    assert len(r.new_to(PBX, "REGISTER")) == registers
    r.advance(0.05)
    r.pbx_answers_last_register(200)
    assert len(r.new_to(PBX, "REGISTER")) == registers  # dropped: the threshold is not reached
    assert r.upstream().expires_at == r.now + 3600
    r.advance(REFRESH_AT - 0.01)
    assert len(r.new_to(PBX, "REGISTER")) == registers  # rescheduled from the device's 2xx
    r.advance(0.01)
    assert r.new_to(PBX, "REGISTER")[-1].call_id == f"reg-{AOR}"


def test_r17_a_self_refresh_in_flight_does_not_absorb_the_device_refresh_queued_behind_it() -> None:
    r = rig()
    r.device_registers(M1, contact_of(M1, "TOK1"), call_id="m1-a", expires=3600)
    r.advance(REFRESH_AT)
    own = r.new_to(PBX, "REGISTER")[-1]
    r.register(M1, contact_of(M1, "TOK1"), call_id="m1-a", cseq=3, expires=3600)
    assert r.of(RegisterDecided)[-1].rule == "4"
    assert r.new_to(PBX, "REGISTER")[-1] == own
    r.pbx_answers_last_register(200)
    device = r.new_to(PBX, "REGISTER")[-1]
    assert device.call_id == "m1-a"
    r.pbx_answers_last_register(200)
    assert r.responses_to(M1)[-1].status == 200
    assert r.upstream().expires_at == r.now + 3600


# ------------------------------------------------------------------------------ R19, R20, R23


def test_r19_a_retransmitted_invite_is_absorbed_never_re_parked_or_re_pushed() -> None:
    r = registered(desk=False)
    invite = parked(r)
    r.send(invite, PBX)
    r.advance(0.5)
    r.send(invite, PBX)
    assert r.statuses() == [180, 180, 180]  # the last provisional re-sent each time
    assert len(r.pushes()) == 1 and len(r.of(ParkStarted)) == 1
    wakes(r, M1_WOKEN, "TOK1", "m1-b")
    (branch,) = r.new_to(M1_WOKEN, "INVITE")
    r.answer(branch, 180, M1_WOKEN, "mob")
    r.send(invite, PBX)
    assert r.statuses()[-1] == 180 and (r.invite_responses()[-1].headers.get("To") or "").endswith("mob")
    assert len(r.pushes()) == 1 and len(r.new_to(M1_WOKEN, "INVITE")) == 1


def test_r20_a_second_invite_parks_independently_and_one_wake_rings_both() -> None:
    r = registered(desk=False)
    r.invite("call-1@pbx")
    r.invite("call-2@pbx")
    pushes = r.pushes()
    assert [(p.prid, p.call.call_id if p.call else None) for p in pushes] == [
        ("TOK1", "call-1@pbx"),
        ("TOK1", "call-2@pbx"),
    ]
    assert len({p.id for p in pushes}) == 2 and len(r.of(ParkStarted)) == 2
    for push in pushes:
        r.push_result(push, Outcome.SENT, 202)
    wakes(r, M1_WOKEN, "TOK1", "m1-b")
    branches = r.new_to(M1_WOKEN, "INVITE")
    assert sorted(b.call_id or "" for b in branches) == ["call-1@pbx", "call-2@pbx"]
    first, second = sorted(branches, key=lambda b: b.call_id or "")
    r.answer(first, 486, M1_WOKEN, "mob1")  # busy with the other one
    r.answer(second, 200, M1_WOKEN, "mob2", body=SDP)
    assert r.statuses("call-1@pbx") == [180, 486]
    assert r.statuses("call-2@pbx") == [180, 200]


def test_r23_accepted_push_without_a_wake_is_no_wake_at_wake_timeout_then_the_branches_decide() -> None:
    r = registered()
    parked(r)
    (to_desk,) = r.new_to(DESK, "INVITE")
    r.answer(to_desk, 180, DESK, "desk")
    r.advance(10.0)
    (missed,) = r.of(WakeMissed)
    assert missed.attempt == r.pushes()[0].id and r.of(WakeObserved) == []
    assert r.statuses() == [180, 180]  # the desk still rings: 6.3 case 3 not reached
    r.answer(to_desk, 486, DESK, "desk")
    assert r.statuses() == [180, 180, 486]
    assert [(e.reason, e.rule) for e in r.of(ParkEnded)] == [(EndReason.EXHAUSTED, "F3")]
