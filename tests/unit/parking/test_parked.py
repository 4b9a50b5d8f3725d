"""Call parking (push-and-parking.md section 6) and its races (section 7), exact actions."""

from __future__ import annotations

import itertools

import pytest

from scaserver.parking.events import (
    BranchAdded,
    BranchAnswered,
    EndReason,
    ParkEnded,
    ParkRejected,
    ParkStarted,
    WakeMissed,
    WakeObserved,
)
from scaserver.parking.held import HOLD_TIMER, HoldKey
from scaserver.parking.instructions import (
    AbortPushes,
    BranchTarget,
    CallSpec,
    CancelParkedBranch,
    PushKind,
    PushResult,
    PushTarget,
    RelayHeld,
    ReleaseCall,
    SendPush,
    StartBranch,
)
from scaserver.parking.parked import WAKE_TIMEOUT_REASON, EarlyMedia, ParkingLot, ParkingSettings
from scaserver.parking.parkedcall import (
    GRACE_TIMER,
    PARK_TIMER,
    TRANSITIONS,
    WAKE_TIMER,
    AttemptState,
    CallState,
    ParkKey,
    WakeKey,
)
from scaserver.sip.actions import CancelTimer, Deliver, EngineAction, Respond, StartTimer
from scaserver.sip.errors import ProtocolStateError
from scaserver.sip.keys import ServerKey
from scaserver.sip.message import Headers, Peer, Request, Response, Transport
from scaserver.sip.parser import parse_message
from scaserver.sip.responses import make_response

AOR = "sip:200@example.com"
TX = ServerKey("invite", "desk.example.com", None, "INVITE")
TX2 = ServerKey("invite-2", "desk.example.com", None, "INVITE")
BYE_TX = ServerKey("bye-1", "desk.example.com", None, "BYE")
INVITE_TEXT = (
    "INVITE sip:200@192.0.2.1 SIP/2.0\r\n"
    "Via: SIP/2.0/UDP 198.51.100.9;branch=z9hG4bKpbx1\r\n"
    "From: Alice <sip:alice@example.com>;tag=a1\r\n"
    "To: <sip:200@example.com>\r\n"
    "Call-ID: call-1@pbx\r\n"
    "CSeq: 1 INVITE\r\n"
    "Max-Forwards: 70\r\n"
    "Content-Length: 0\r\n\r\n"
)


def _invite() -> Request:
    message = parse_message(INVITE_TEXT.encode())
    assert isinstance(message, Request)
    return message


INVITE = _invite()
DESK = BranchTarget("desk", "sip:200@10.0.0.2:5060")
MOBILE = BranchTarget("m1", "sip:200@10.0.0.5:5062", flow=Peer(Transport.TCP, "10.0.0.5", 5062))
MOBILE_MOVED = BranchTarget("m1", "sip:200@10.0.0.5:6000", flow=Peer(Transport.TCP, "10.0.0.5", 6000))
MOBILE2 = BranchTarget("m2", "sip:200@10.0.0.6:5062")
TOKEN1 = PushTarget("apns", "TOK1", "T.app.voip", ("m1",), "ios")
TOKEN2 = PushTarget("fcm", "TOK2", "proj", ("m2",))
KEY = ParkKey("p-000001")


def spec(
    server_tx: ServerKey = TX, *, aors: tuple[str, ...] = (AOR,), expires: int | None = None
) -> CallSpec:
    return CallSpec(
        server_tx,
        INVITE,
        aors,
        "call-1@pbx",
        "sip:alice@example.com",
        "sip:200@example.com",
        "Alice",
        invite_expires=expires,
    )


def lot(**settings: object) -> ParkingLot:
    counter = itertools.count(1)
    return ParkingLot(ParkingSettings(**settings), lambda: f"a{next(counter)}")  # type: ignore[arg-type]


def delivered(actions: list[EngineAction], kind: type[object]) -> list[object]:
    return [a.event for a in actions if isinstance(a, Deliver) and isinstance(a.event, kind)]


def pushes(actions: list[EngineAction]) -> list[SendPush]:
    return [e for e in delivered(actions, SendPush) if isinstance(e, SendPush)]


def release(actions: list[EngineAction]) -> ReleaseCall:
    (found,) = delivered(actions, ReleaseCall)
    assert isinstance(found, ReleaseCall)
    return found


def ended(actions: list[EngineAction]) -> ParkEnded:
    (found,) = delivered(actions, ParkEnded)
    assert isinstance(found, ParkEnded)
    return found


def parked(
    engine: ParkingLot,
    direct: tuple[BranchTarget, ...] = (DESK,),
    targets: tuple[PushTarget, ...] = (TOKEN1,),
) -> list[EngineAction]:
    return engine.park(spec(), direct, targets, now=100.0)


def call_push(attempt: str, target: PushTarget = TOKEN1, ttl: int = 30) -> SendPush:
    return SendPush(
        attempt,
        PushKind.CALL,
        target,
        AOR,
        "p-000001",
        "call-1@pbx",
        "sip:alice@example.com",
        "sip:200@example.com",
        "Alice",
        None,
        ttl,
        None,
        130.0,
    )


def cancel_push(attempt: str, reason: str, ttl: int, target: PushTarget = TOKEN1) -> SendPush:
    return SendPush(
        f"{attempt}-cancel",
        PushKind.CANCEL,
        target,
        AOR,
        "p-000001",
        "call-1@pbx",
        "sip:alice@example.com",
        "sip:200@example.com",
        "Alice",
        None,
        ttl,
        reason,
        None,
    )


def no_wake_480() -> Response:
    return make_response(INVITE, 480, headers=Headers.of(("Reason", WAKE_TIMEOUT_REASON)), to_tag="pk000001")


# ------------------------------------------------------------------------- 6.1


def test_park_starts_branches_pushes_and_local_ringing() -> None:
    engine = lot()
    actions = parked(engine)
    assert actions == [
        Deliver(ParkStarted("p-000001", TX, (AOR,), None, 100.0, spec=spec())),
        StartTimer(KEY, PARK_TIMER, 30.0),
        Deliver(StartBranch(TX, "p-000001", 0, DESK)),
        Deliver(BranchAdded("p-000001", "desk", False, 100.0)),
        Deliver(call_push("a1")),
        Respond(TX, make_response(INVITE, 180, to_tag="pk000001")),
    ]
    assert TX in engine and len(engine) == 1
    assert engine.calls(AOR)[0].park_id == "p-000001"


def test_park_timeout_capped_by_invite_expires_and_no_local_ringing() -> None:
    engine = lot(local_ringing=False)
    actions = engine.park(spec(expires=12), (), (TOKEN1,), now=0.0)
    assert StartTimer(KEY, PARK_TIMER, 12.0) in actions
    assert not [a for a in actions if isinstance(a, Respond)]
    assert pushes(actions)[0].ttl == 12


def test_park_without_push_is_a_bug_and_double_park_too() -> None:
    engine = lot()
    with pytest.raises(ProtocolStateError):
        engine.park(spec(), (DESK,), (), now=0.0)
    parked(engine)
    with pytest.raises(ProtocolStateError):
        parked(engine)


@pytest.mark.parametrize(
    ("settings", "direct", "limit"),
    [({"max_total": 1}, (), "max_total"), ({"max_per_aor": 1}, (), "max_per_aor")],
)
def test_limits_refuse_parking(
    settings: dict[str, int], direct: tuple[BranchTarget, ...], limit: str
) -> None:
    engine = lot(**settings)
    parked(engine)
    actions = engine.park(spec(TX2), direct, (TOKEN1,), now=1.0)
    assert actions == [Deliver(ParkRejected(TX2, limit, 1.0))]
    assert len(engine) == 1


def test_max_branches_refuses_parking() -> None:
    engine = lot(max_branches=1)
    assert engine.park(spec(), (DESK, MOBILE2), (TOKEN1,), now=1.0) == [
        Deliver(ParkRejected(TX, "max_branches", 1.0))
    ]


def test_transition_table_rows_are_the_spec_cases() -> None:
    rules = {rule for rule, _ in TRANSITIONS.values()}
    assert rules == {"I1", "F1", "F2", "F3", "F4", "F5", "G1"}
    assert all(target is not CallState.PARKED or rule == "I1" for rule, target in TRANSITIONS.values())


# ---------------------------------------------------------------- 6.3 endings


def test_f3_nobody_wakes_best_response_at_wake_timeout_t9() -> None:
    engine = lot()
    parked(engine)
    assert engine.on_branch_final(TX, 0, 486, now=101.0) == []  # D's 486 does not end it
    assert engine.on_push_result("a1", PushResult.SENT, now=100.2) == [
        StartTimer(WakeKey("p-000001", "a1"), WAKE_TIMER, 10.0)
    ]
    actions = engine.on_timer(WakeKey("p-000001", "a1"), WAKE_TIMER, now=110.2)
    assert actions[0] == Deliver(WakeMissed("p-000001", "a1"))
    assert release(actions) == ReleaseCall(TX, no_wake_480())
    assert ended(actions).reason is EndReason.EXHAUSTED and ended(actions).rule == "F3"
    assert Deliver(cancel_push("a1", "timeout", 20)) not in actions  # exhausted: no cancel needed
    assert TX not in engine


def test_r14_invalid_token_ends_at_once() -> None:
    engine = lot()
    parked(engine, direct=())
    actions = engine.on_push_result("a1", PushResult.INVALID, now=100.3)
    assert release(actions) == ReleaseCall(TX, no_wake_480())
    assert ended(actions).rule == "F3"
    assert CancelTimer(KEY, PARK_TIMER) in actions


@pytest.mark.parametrize("result", [PushResult.FAILED, PushResult.DROPPED])
def test_failed_or_dropped_push_resolves_the_attempt(result: PushResult) -> None:
    engine = lot()
    parked(engine, direct=())
    assert ended(engine.on_push_result("a1", result, now=100.3)).reason is EndReason.EXHAUSTED


def test_retrying_push_keeps_waiting() -> None:
    engine = lot()
    parked(engine, direct=())
    assert engine.on_push_result("a1", PushResult.RETRYING, now=100.3) == []
    call = engine.call(TX)
    assert call is not None and call.attempts["a1"].state is AttemptState.RETRYING


def test_f1_answer_cancels_pushes_of_unreachable_devices() -> None:
    engine = lot()
    parked(engine, targets=(TOKEN1,))
    engine.on_push_result("a1", PushResult.SENT, now=100.5)
    actions = engine.on_branch_final(TX, 0, 200, now=102.0)
    assert actions[0] == Deliver(BranchAnswered("p-000001", "desk", 102.0))
    assert Deliver(cancel_push("a1", "answered-elsewhere", 28)) in actions
    assert CancelTimer(WakeKey("p-000001", "a1"), WAKE_TIMER) in actions
    assert release(actions) == ReleaseCall(TX, None)
    assert ended(actions).rule == "F1"


def test_t13_ringing_device_gets_sip_cancel_not_push() -> None:
    engine = lot()
    parked(engine, direct=(), targets=(TOKEN1, TOKEN2))
    engine.on_push_result("a1", PushResult.SENT, now=100.5)
    engine.on_push_result("a2", PushResult.SENT, now=100.5)
    engine.on_binding_confirmed(AOR, MOBILE, 101.0, now=101.0)
    engine.on_binding_confirmed(AOR, MOBILE2, 101.05, now=101.05)
    engine.on_branch_provisional(TX, 0, make_response(INVITE, 180, to_tag="m1"), now=101.2)
    actions = engine.on_branch_final(TX, 1, 200, now=102.0)
    assert pushes(actions) == []  # M1 rang (SIP CANCEL), M2 answered


def test_t13_variant_silent_device_gets_cancel_push() -> None:
    engine = lot()
    parked(engine, direct=(), targets=(TOKEN1, TOKEN2))
    engine.on_push_result("a1", PushResult.SENT, now=100.5)
    engine.on_push_result("a2", PushResult.SENT, now=100.5)
    engine.on_binding_confirmed(AOR, MOBILE, 101.0, now=101.0)
    engine.on_binding_confirmed(AOR, MOBILE2, 101.05, now=101.05)
    actions = engine.on_branch_final(TX, 1, 200, now=102.0)
    assert [p.attempt for p in pushes(actions)] == ["a1-cancel"]


def test_f2_6xx_ends_the_search() -> None:
    engine = lot()
    parked(engine)
    engine.on_push_result("a1", PushResult.SENT, now=100.5)
    actions = engine.on_branch_final(TX, 0, 603, now=101.0)
    assert ended(actions).reason is EndReason.DECLINED
    assert pushes(actions) == [cancel_push("a1", "declined", 29)]
    assert release(actions) == ReleaseCall(TX, None)


def test_6xx_not_honoured_is_a_branch_failure() -> None:
    engine = lot(honour_6xx=False)
    parked(engine)
    assert engine.on_branch_final(TX, 0, 603, now=101.0) == []
    assert TX in engine


def test_f4_park_timeout_with_ringing_branch_t10() -> None:
    engine = lot()
    parked(engine)
    engine.on_branch_provisional(TX, 0, make_response(INVITE, 180, to_tag="d"), now=100.5)
    engine.on_push_result("a1", PushResult.SENT, now=100.5)
    actions = engine.on_timer(KEY, PARK_TIMER, now=130.0)
    assert pushes(actions) == [cancel_push("a1", "timeout", 0)]
    assert Deliver(AbortPushes("p-000001")) in actions
    assert release(actions) == ReleaseCall(TX, no_wake_480())  # proxy keeps D ringing
    assert ended(actions).rule == "F4"
    assert engine.on_binding_confirmed(AOR, MOBILE, 131.0, now=131.0) == []  # R11


def test_f5_cancel_while_parked_t11() -> None:
    engine = lot()
    parked(engine, direct=())
    engine.on_push_result("a1", PushResult.SENT, now=100.5)
    actions = engine.on_cancel(TX, now=101.0)
    assert pushes(actions) == [cancel_push("a1", "caller-cancelled", 29)]
    assert Deliver(AbortPushes("p-000001")) in actions
    assert release(actions) == ReleaseCall(
        TX, make_response(INVITE, 487, to_tag="pk000001"), immediately=True
    )
    assert TX not in engine
    assert engine.on_binding_confirmed(AOR, MOBILE, 103.0, now=103.0) == []  # no INVITE to M1
    assert engine.on_cancel(TX, now=104.0) == []


# ------------------------------------------------------------------ 6.4 injection


def test_injection_once_per_device_t8() -> None:
    engine = lot()
    parked(engine)
    engine.on_branch_final(TX, 0, 486, now=100.1)
    engine.on_push_result("a1", PushResult.SENT, now=100.2)
    actions = engine.on_binding_confirmed(AOR, MOBILE, 100.6, now=100.6)
    assert actions == [
        CancelTimer(WakeKey("p-000001", "a1"), WAKE_TIMER),
        Deliver(WakeObserved("p-000001", "a1", 400)),
        Deliver(StartBranch(TX, "p-000001", 1, MOBILE)),
        Deliver(BranchAdded("p-000001", "m1", True, 100.6)),
    ]
    # R4/R15: a second confirmation of the same device does not ring it twice
    assert engine.on_binding_confirmed(AOR, MOBILE, 100.62, now=100.62) == []


def test_binding_confirmed_before_parking_is_skipped() -> None:
    engine = lot()
    parked(engine)
    assert engine.on_binding_confirmed(AOR, MOBILE2, 99.0, now=100.1) == []


def test_r1_confirmation_before_gateway_answer() -> None:
    engine = lot()
    parked(engine, direct=())
    actions = engine.on_binding_confirmed(AOR, MOBILE, 100.1, now=100.1)
    assert actions[0] == Deliver(WakeObserved("p-000001", "a1", None))
    assert Deliver(StartBranch(TX, "p-000001", 0, MOBILE)) in actions
    assert engine.on_push_result("a1", PushResult.SENT, now=100.5) == []
    assert engine.on_push_result("a1", PushResult.INVALID, now=100.6) == []  # future calls only
    call = engine.call(TX)
    assert call is not None and call.attempts["a1"].state is AttemptState.WOKEN


def test_r6_moved_device_supersedes_silent_branch() -> None:
    engine = lot()
    parked(engine, direct=(MOBILE,))
    actions = engine.on_binding_confirmed(AOR, MOBILE_MOVED, 101.0, now=101.0)
    assert Deliver(StartBranch(TX, "p-000001", 1, MOBILE_MOVED)) in actions
    call = engine.call(TX)
    assert call is not None and call.branches[0].superseded
    relayed, cancel = engine.on_branch_provisional(TX, 0, make_response(INVITE, 180, to_tag="x"), now=101.5)
    assert relayed is None and cancel == [Deliver(CancelParkedBranch(TX, 0))]
    assert engine.on_branch_provisional(TX, 0, make_response(INVITE, 183, to_tag="x"), now=101.6) == (
        None,
        [],
    )


def test_r6_same_contact_silent_branch_not_duplicated() -> None:
    engine = lot()
    parked(engine, direct=(MOBILE,))
    assert delivered(engine.on_binding_confirmed(AOR, MOBILE, 101.0, now=101.0), StartBranch) == []


def test_r6_ringing_branch_is_kept() -> None:
    engine = lot()
    parked(engine, direct=(MOBILE,))
    engine.on_branch_provisional(TX, 0, make_response(INVITE, 180, to_tag="m"), now=100.5)
    assert delivered(engine.on_binding_confirmed(AOR, MOBILE_MOVED, 101.0, now=101.0), StartBranch) == []


@pytest.mark.parametrize(("status", "again"), [(408, True), (503, True), (480, True), (486, False)])
def test_retryable_failure_gets_new_branch(status: int, again: bool) -> None:
    engine = lot()
    parked(engine, direct=(MOBILE, DESK))
    engine.on_branch_final(TX, 0, status, now=100.5)
    started = delivered(engine.on_binding_confirmed(AOR, MOBILE, 101.0, now=101.0), StartBranch)
    assert bool(started) is again


def test_injection_respects_max_branches() -> None:
    engine = lot(max_branches=1)
    parked(engine, direct=(DESK,), targets=(TOKEN1,))
    assert delivered(engine.on_binding_confirmed(AOR, MOBILE, 101.0, now=101.0), StartBranch) == []


def test_confirmation_without_branch_can_end_the_call() -> None:
    engine = lot()
    parked(engine, direct=(MOBILE,))
    engine.on_branch_final(TX, 0, 486, now=100.5)  # the device answered itself
    actions = engine.on_binding_confirmed(AOR, MOBILE, 101.0, now=101.0)
    assert ended(actions).reason is EndReason.EXHAUSTED


# ------------------------------------------------------------------ races


def test_r3_register_in_flight_when_invite_arrives_one_branch() -> None:
    engine = lot()
    engine.on_register_forwarded(AOR, "m1")  # before the call: nothing to track
    parked(engine, direct=())
    engine.on_register_forwarded(AOR, "m1")  # still awaiting the upstream 2xx
    engine.on_push_result("a1", PushResult.SENT, now=100.5)
    actions = engine.on_binding_confirmed(AOR, MOBILE, 100.6, now=100.6)
    assert delivered(actions, StartBranch) == [StartBranch(TX, "p-000001", 0, MOBILE)]
    call = engine.call(TX)
    assert call is not None and not call.inflight


def test_r12_grace_then_branch() -> None:
    engine = lot()
    parked(engine, direct=(DESK,))
    engine.on_register_forwarded(AOR, "m1")
    assert engine.on_timer(KEY, PARK_TIMER, now=130.0) == [StartTimer(KEY, GRACE_TIMER, 2.0)]
    call = engine.call(TX)
    assert call is not None and call.state is CallState.GRACE
    actions = engine.on_binding_confirmed(AOR, MOBILE, 131.0, now=131.0)
    assert Deliver(StartBranch(TX, "p-000001", 1, MOBILE)) in actions
    actions = engine.on_timer(KEY, GRACE_TIMER, now=132.0)
    assert ended(actions).rule == "F4"


def test_r12_grace_ends_when_forward_fails() -> None:
    engine = lot()
    parked(engine, direct=(DESK,))
    engine.on_register_forwarded(AOR, "m1")
    engine.on_timer(KEY, PARK_TIMER, now=130.0)
    actions = engine.on_register_finished(AOR, "m1", now=130.5)
    assert ended(actions).reason is EndReason.TIMEOUT
    assert CancelTimer(KEY, GRACE_TIMER) in actions


def test_inflight_register_delays_exhaustion() -> None:
    engine = lot()
    parked(engine, direct=())
    engine.on_register_forwarded(AOR, "m1")
    engine.on_register_forwarded(AOR, "unrelated")
    assert engine.on_push_result("a1", PushResult.INVALID, now=100.5) == []
    assert ended(engine.on_register_finished(AOR, "m1", now=101.0)).reason is EndReason.EXHAUSTED


def test_r7_cancel_while_push_in_flight_sends_cancel_after_acceptance() -> None:
    engine = lot()
    parked(engine, direct=())
    actions = engine.on_cancel(TX, now=100.2)
    assert pushes(actions) == []
    assert engine.on_push_result("a1", PushResult.RETRYING, now=100.3) == []
    assert engine.on_push_result("a1", PushResult.SENT, now=100.6) == [
        Deliver(cancel_push("a1", "caller-cancelled", 30))
    ]
    assert engine.on_push_result("a1", PushResult.SENT, now=100.7) == []


def test_r7_cancelled_push_never_accepted_sends_nothing() -> None:
    engine = lot()
    parked(engine, direct=())
    engine.on_cancel(TX, now=100.2)
    assert engine.on_push_result("a1", PushResult.FAILED, now=100.6) == []


def test_r8_r11_confirmation_after_end_injects_nothing() -> None:
    engine = lot()
    parked(engine, direct=())
    engine.on_register_forwarded(AOR, "m1")
    engine.on_cancel(TX, now=101.0)
    assert engine.on_binding_confirmed(AOR, MOBILE, 102.0, now=102.0) == []
    assert engine.on_register_finished(AOR, "m1", now=102.0) == []


def test_r9_r10_late_branch_answers_after_end_are_ignored() -> None:
    engine = lot()
    parked(engine, direct=(DESK, MOBILE2))
    engine.on_branch_final(TX, 0, 200, now=101.0)
    assert engine.on_branch_final(TX, 1, 200, now=101.01) == []  # the proxy forwards it
    assert engine.on_branch_provisional(TX, 1, make_response(INVITE, 180, to_tag="z"), now=101.02)[1] == []


def test_r9_cancel_after_answer_has_no_effect() -> None:
    engine = lot()
    parked(engine)
    engine.on_branch_final(TX, 0, 200, now=101.0)
    assert engine.on_cancel(TX, now=101.01) == []


def test_r19_retransmitted_invite_is_not_reparked() -> None:
    engine = lot()
    parked(engine)
    with pytest.raises(ProtocolStateError):
        parked(engine)  # the dispatcher never re-parks: the transaction absorbs it


def test_r20_second_call_parked_independently_both_injected() -> None:
    engine = lot()
    parked(engine, direct=())
    engine.park(spec(TX2), (), (TOKEN1,), now=101.0)
    actions = engine.on_binding_confirmed(AOR, MOBILE, 102.0, now=102.0)
    assert [e.server_tx for e in delivered(actions, StartBranch) if isinstance(e, StartBranch)] == [
        TX,
        TX2,
    ]


def test_r5_two_devices_one_branch_each() -> None:
    engine = lot()
    parked(engine, direct=(), targets=(TOKEN1, TOKEN2))
    first = delivered(engine.on_binding_confirmed(AOR, MOBILE, 101.0, now=101.0), StartBranch)
    second = delivered(engine.on_binding_confirmed(AOR, MOBILE2, 101.0, now=101.0), StartBranch)
    assert len(first) == len(second) == 1


def test_r23_wake_timer_after_woken_is_ignored() -> None:
    engine = lot()
    parked(engine)
    engine.on_push_result("a1", PushResult.SENT, now=100.2)
    engine.on_binding_confirmed(AOR, MOBILE, 101.0, now=101.0)
    assert engine.on_timer(WakeKey("p-000001", "a1"), WAKE_TIMER, now=110.2) == []


def test_late_wake_after_no_wake_still_rings() -> None:
    engine = lot()
    parked(engine, direct=(DESK,))
    engine.on_push_result("a1", PushResult.SENT, now=100.2)
    engine.on_timer(WakeKey("p-000001", "a1"), WAKE_TIMER, now=110.2)
    actions = engine.on_binding_confirmed(AOR, MOBILE, 111.0, now=111.0)
    assert Deliver(StartBranch(TX, "p-000001", 1, MOBILE)) in actions


def test_unknown_inputs_are_ignored() -> None:
    engine = lot()
    assert engine.on_branch_final(TX, 0, 200, now=1.0) == []
    assert engine.on_branch_provisional(TX, 0, make_response(INVITE, 180), now=1.0)[1] == []
    assert engine.on_push_result("zz", PushResult.SENT, now=1.0) == []
    assert engine.on_timer(KEY, PARK_TIMER, now=1.0) == []
    assert engine.on_timer(WakeKey("p-1", "a"), WAKE_TIMER, now=1.0) == []
    assert engine.on_timer("other", "other", now=1.0) == []
    parked(engine)
    assert engine.on_branch_final(TX, 9, 200, now=1.0) == []
    assert engine.on_timer(KEY, "unknown", now=1.0) == []


# ------------------------------------------------------------------ 6.6 early media


def _sdp(status: int, tag: str, *, reliable: bool = False) -> Response:
    headers = Headers.of(("Content-Type", "application/sdp"))
    if reliable:
        headers = headers.add("Require", "100rel")
    return make_response(INVITE, status, to_tag=tag, headers=headers, body=b"v=0\r\n")


def test_early_media_first_rewrites_later_sdp_t18() -> None:
    engine = lot(early_media=EarlyMedia.FIRST)
    parked(engine, direct=(DESK, MOBILE2))
    first, _ = engine.on_branch_provisional(TX, 0, _sdp(183, "d"), now=100.5)
    assert first == _sdp(183, "d")
    second, _ = engine.on_branch_provisional(TX, 1, _sdp(183, "m"), now=100.6)
    assert second is not None and second.status == 180 and second.body == b""
    assert second.headers.get("Content-Type") is None
    reliable, _ = engine.on_branch_provisional(TX, 1, _sdp(183, "m", reliable=True), now=100.7)
    assert reliable == _sdp(183, "m", reliable=True)


def test_early_media_all_forwards_everything() -> None:
    engine = lot()
    parked(engine, direct=(DESK, MOBILE2))
    engine.on_branch_provisional(TX, 0, _sdp(183, "d"), now=100.5)
    assert engine.on_branch_provisional(TX, 1, _sdp(183, "m"), now=100.6)[0] == _sdp(183, "m")


def test_100_is_not_relayed() -> None:
    engine = lot()
    parked(engine)
    assert engine.on_branch_provisional(TX, 0, make_response(INVITE, 100), now=100.5) == (None, [])


# ------------------------------------------------------------------ 6.9 to 6.11


def test_purr_hold_relayed_on_confirmation() -> None:
    engine = lot()
    actions = engine.hold_mid_dialog(BYE_TX, INVITE, aor=AOR, target=TOKEN1, binding="m1", now=5.0)
    (push,) = pushes(actions)
    assert push.kind is PushKind.REG_REFRESH and push.reason == "mid-INVITE" and push.ttl == 10
    assert StartTimer(HoldKey(BYE_TX), HOLD_TIMER, 10.0) in actions
    with pytest.raises(ProtocolStateError):
        engine.hold_mid_dialog(BYE_TX, INVITE, aor=AOR, target=TOKEN1, binding="m1", now=5.0)
    assert engine.on_binding_confirmed(AOR, MOBILE, 6.0, now=6.0) == [
        CancelTimer(HoldKey(BYE_TX), HOLD_TIMER),
        Deliver(RelayHeld(BYE_TX)),
    ]
    assert list(engine.held()) == []


def test_purr_hold_times_out_480() -> None:
    engine = lot()
    engine.hold_mid_dialog(BYE_TX, INVITE, aor=AOR, target=TOKEN1, binding="m1", now=5.0)
    assert engine.on_timer(BYE_TX, HOLD_TIMER, now=15.0) == []  # not a hold key
    assert engine.on_timer(HoldKey(BYE_TX), HOLD_TIMER, now=15.0) == [
        Respond(BYE_TX, make_response(INVITE, 480))
    ]


def test_shared_line_stored_under_every_aor() -> None:
    engine = lot()
    member = "sip:202@example.com"
    line_spec = CallSpec(
        TX, INVITE, ("sip:line1@example.com", member), "c", "sip:a@x", "sip:line1@example.com", line=("l", 1)
    )
    actions = engine.park(line_spec, (DESK,), (TOKEN1,), now=0.0)
    assert pushes(actions)[0].line == ("l", 1) and pushes(actions)[0].aor == "sip:line1@example.com"
    assert len(engine.calls(member)) == 1
    # A member's binding without push (its desk phone refreshing) does not ring for the line.
    assert not delivered(engine.on_binding_confirmed(member, MOBILE, 1.0, now=1.0), StartBranch)
    confirmed = engine.on_binding_confirmed(member, MOBILE, 1.0, now=1.0, token=TOKEN1.token)
    assert delivered(confirmed, StartBranch)
    engine.on_cancel(TX, now=2.0)
    assert engine.calls(member) == () and engine.calls() == ()
