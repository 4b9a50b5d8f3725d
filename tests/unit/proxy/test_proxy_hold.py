"""The proxy's held contexts for call parking (push-and-parking.md 6.3-6.5): ``hold``,
``add_targets``, ``release``, and the BranchFinished reports; exact action lists."""

from __future__ import annotations

import pytest

from scaserver.proxy.context import TIMER_C, BranchFinished, BranchKey, BranchState, CancelBranch
from scaserver.proxy.events import CallCancelled, CallEnded, CallEndReason, RequestForwarded, ResponseRelayed
from scaserver.proxy.proxy import ANSWERED_ELSEWHERE, Proxy
from scaserver.proxy.relay import signature_for
from scaserver.proxy.routing import loop_hash
from scaserver.proxy.target import Target
from scaserver.sip.actions import CancelTimer, Deliver, Respond, Send, SendRequest, StartTimer
from scaserver.sip.errors import ProtocolStateError
from scaserver.sip.message import Headers, Peer, Request, Transport
from scaserver.sip.responses import make_response

from .build import CALLER, CALLER_VIA, CANCEL_TX, IDENTITY, SERVER_TX, UNKNOWN_TX, answer, request, upstream

B1 = Peer(Transport.UDP, "198.51.100.7", 5060)
B2 = Peer(Transport.UDP, "198.51.100.8", 5060)
T1 = Target("sip:bob@198.51.100.7")
T2 = Target("sip:bob@198.51.100.8")
INVITE = request()
SIGNATURE = signature_for(INVITE, IDENTITY.route_key)
RR_UDP = f"<sip:192.0.2.10:5060;transport=udp;lr;rrsig={SIGNATURE}>"
HASH = loop_hash(INVITE, CALLER_VIA)
K0 = BranchKey(SERVER_TX, 0, HASH)
K1 = BranchKey(SERVER_TX, 1, HASH)
TAG = "p" + HASH[:12]
FALLBACK = make_response(INVITE, 480, to_tag="pk1", headers=Headers.of(("Reason", "SIP;cause=480")))


def branch(target: Target) -> Request:
    headers = INVITE.headers.set("Max-Forwards", "69").prepend("Record-Route", RR_UDP)
    return Request("INVITE", target.uri, headers, INVITE.body)


def held(proxy: Proxy, *, honour_6xx: bool = True) -> None:
    assert proxy.on_request(INVITE, SERVER_TX, CALLER, (), 0.0, hold=True, honour_6xx=honour_6xx) == []
    assert SERVER_TX in proxy


def test_hold_with_no_target_starts_nothing_and_sends_nothing() -> None:
    proxy = Proxy(IDENTITY)
    held(proxy)
    assert proxy.release(SERVER_TX, FALLBACK, immediately=False, now=5.0) == [
        Respond(SERVER_TX, FALLBACK),
        Deliver(ResponseRelayed(INVITE, FALLBACK, 5.0, True)),
        Deliver(CallEnded("call-1@198.51.100.1", CallEndReason.FAILED, INVITE, 480, 5.0)),
    ]
    assert SERVER_TX not in proxy


def test_add_targets_starts_branches_through_the_normal_path() -> None:
    proxy = Proxy(IDENTITY)
    held(proxy)
    actions, keys = proxy.add_targets(SERVER_TX, [T1], 1.0)
    assert keys == [K0]
    assert actions == [
        SendRequest(branch(T1), B1, K0),
        Deliver(RequestForwarded(INVITE, branch(T1), T1, B1, 1.0)),
        StartTimer(K0, TIMER_C, 180.0),
    ]
    _, more = proxy.add_targets(SERVER_TX, [T2], 2.0)
    assert more == [K1]
    assert proxy.branch_state(K1) is BranchState.CALLING


def test_all_branches_failing_while_held_sends_no_best_response() -> None:
    proxy = Proxy(IDENTITY)
    held(proxy)
    proxy.add_targets(SERVER_TX, [T1], 1.0)
    busy = answer(branch(T1), 486)
    assert proxy.on_response(K0, busy, 2.0) == [CancelTimer(K0, TIMER_C), Deliver(BranchFinished(K0, 486))]
    assert SERVER_TX in proxy
    # Released with nothing pending: the best response (the 486), not the fallback.
    assert proxy.release(SERVER_TX, FALLBACK, immediately=False, now=3.0) == [
        Respond(SERVER_TX, upstream(busy)),
        Deliver(ResponseRelayed(INVITE, upstream(busy), 3.0, False)),
        Deliver(CallEnded("call-1@198.51.100.1", CallEndReason.FAILED, INVITE, 486, 3.0)),
    ]
    assert SERVER_TX not in proxy


def test_2xx_while_held_goes_upstream_at_once_and_cancels_the_others() -> None:
    proxy = Proxy(IDENTITY)
    held(proxy)
    proxy.add_targets(SERVER_TX, [T1, T2], 1.0)
    proxy.on_response(K1, answer(branch(T2), 180, to_tag="b2"), 1.5)
    ok = answer(branch(T1), 200)
    actions = proxy.on_response(K0, ok, 2.0)
    assert actions[:3] == [
        CancelTimer(K0, TIMER_C),
        Deliver(BranchFinished(K0, 200)),
        Respond(SERVER_TX, upstream(ok)),
    ]
    assert Deliver(CancelBranch(K1, ANSWERED_ELSEWHERE)) in actions
    assert proxy.release(SERVER_TX, None, immediately=False, now=2.5) == []
    # Released: no more reports; the 487 of the cancelled branch is absorbed.
    assert proxy.on_response(K1, answer(branch(T2), 487, to_tag="b2"), 3.0) == [CancelTimer(K1, TIMER_C)]
    assert SERVER_TX not in proxy


def test_6xx_while_held_ends_the_search_when_honoured() -> None:
    proxy = Proxy(IDENTITY)
    held(proxy)
    proxy.add_targets(SERVER_TX, [T1, T2], 1.0)
    actions = proxy.on_response(K0, answer(branch(T1), 603), 2.0)
    assert actions == [
        CancelTimer(K0, TIMER_C),
        Deliver(BranchFinished(K0, 603)),
        Deliver(CancelBranch(K1, None)),
        CancelTimer(K1, TIMER_C),
        Deliver(BranchFinished(K1, 487)),
    ]


def test_6xx_while_held_counts_as_a_4xx_when_not_honoured() -> None:
    proxy = Proxy(IDENTITY)
    held(proxy, honour_6xx=False)
    proxy.add_targets(SERVER_TX, [T1, T2], 1.0)
    assert proxy.on_response(K0, answer(branch(T1), 603), 2.0) == [
        CancelTimer(K0, TIMER_C),
        Deliver(BranchFinished(K0, 603)),
    ]
    assert proxy.branch_state(K1) is BranchState.CALLING
    busy = answer(branch(T2), 486, to_tag="b2")
    proxy.on_response(K1, busy, 3.0)
    # The 6xx ranks by class: the 486 is the best response.
    assert proxy.release(SERVER_TX, FALLBACK, immediately=False, now=4.0)[0] == Respond(
        SERVER_TX, upstream(busy)
    )


def test_release_with_pending_branches_keeps_forking_under_the_proxy() -> None:
    proxy = Proxy(IDENTITY)
    held(proxy)
    proxy.add_targets(SERVER_TX, [T1], 1.0)
    proxy.on_response(K0, answer(branch(T1), 180), 1.5)
    assert proxy.release(SERVER_TX, FALLBACK, immediately=False, now=2.0) == []
    busy = answer(branch(T1), 486)
    assert proxy.on_response(K0, busy, 3.0) == [
        CancelTimer(K0, TIMER_C),
        Respond(SERVER_TX, upstream(busy)),
        Deliver(ResponseRelayed(INVITE, upstream(busy), 3.0, False)),
        Deliver(CallEnded("call-1@198.51.100.1", CallEndReason.FAILED, INVITE, 486, 3.0)),
    ]


def test_release_immediately_answers_487_now_and_absorbs_later_finals() -> None:
    proxy = Proxy(IDENTITY)
    held(proxy)
    proxy.add_targets(SERVER_TX, [T1], 1.0)
    proxy.on_response(K0, answer(branch(T1), 180), 1.5)
    cancel = request("CANCEL", cseq_number=1)
    actions = proxy.on_cancel(cancel, CANCEL_TX, SERVER_TX, 2.0)
    assert actions == [
        Respond(CANCEL_TX, make_response(cancel, 200)),
        Deliver(CallCancelled(INVITE, cancel, 2.0)),
        Deliver(CancelBranch(K0, None)),
    ]
    terminated = make_response(INVITE, 487, to_tag="pk1")
    assert proxy.release(SERVER_TX, terminated, immediately=True, now=2.0) == [
        Respond(SERVER_TX, terminated),
        Deliver(ResponseRelayed(INVITE, terminated, 2.0, True)),
        Deliver(CallEnded("call-1@198.51.100.1", CallEndReason.CANCELLED, INVITE, 487, 2.0)),
    ]
    assert proxy.on_response(K0, answer(branch(T1), 487), 3.0) == [CancelTimer(K0, TIMER_C)]
    assert SERVER_TX not in proxy


def test_a_late_2xx_after_the_immediate_487_is_still_forwarded() -> None:
    proxy = Proxy(IDENTITY)
    held(proxy)
    proxy.add_targets(SERVER_TX, [T1], 1.0)
    proxy.on_response(K0, answer(branch(T1), 180), 1.5)
    proxy.release(SERVER_TX, None, immediately=True, now=2.0)
    ok = answer(branch(T1), 200)
    actions = proxy.on_response(K0, ok, 3.0)
    assert Send(upstream(ok), CALLER) in actions


def test_timer_c_and_transport_errors_are_reported_while_held() -> None:
    proxy = Proxy(IDENTITY)
    held(proxy)
    proxy.add_targets(SERVER_TX, [T1, T2], 1.0)
    assert proxy.on_timer(K0, TIMER_C, 181.0) == [
        Deliver(CancelBranch(K0)),
        Deliver(BranchFinished(K0, 408)),
    ]
    assert proxy.on_branch_failure(K1, 2.0) == [CancelTimer(K1, TIMER_C), Deliver(BranchFinished(K1, 503))]


def test_unreachable_target_is_counted_503_at_once() -> None:
    proxy = Proxy(IDENTITY)
    held(proxy)
    actions, keys = proxy.add_targets(SERVER_TX, [Target("tel:+4930123")], 1.0)
    assert (actions, keys) == ([Deliver(BranchFinished(K0, 503))], [K0])
    assert proxy.branch_state(K0) is BranchState.COMPLETED


def test_add_targets_after_the_answer_is_a_protocol_error() -> None:
    proxy = Proxy(IDENTITY)
    held(proxy)
    proxy.add_targets(SERVER_TX, [T1, T2], 1.0)
    proxy.on_response(K0, answer(branch(T1), 200), 2.0)
    with pytest.raises(ProtocolStateError):
        proxy.add_targets(SERVER_TX, [T2], 3.0)
    with pytest.raises(ProtocolStateError):
        proxy.add_targets(UNKNOWN_TX, [T2], 3.0)


def test_release_of_an_unknown_or_unheld_context_does_nothing() -> None:
    proxy = Proxy(IDENTITY)
    assert proxy.release(UNKNOWN_TX, FALLBACK, immediately=False, now=1.0) == []
    proxy.on_request(INVITE, SERVER_TX, CALLER, [T1], 0.0)
    assert proxy.release(SERVER_TX, FALLBACK, immediately=True, now=1.0) == []
    assert proxy.branch_state(BranchKey(UNKNOWN_TX, 0, HASH)) is None
