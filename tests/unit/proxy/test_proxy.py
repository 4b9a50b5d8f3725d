"""The forking proxy engine (RFC 3261 16.6 to 16.11, RFC 6026, RFC 4320): exact action lists."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from scaserver.proxy.context import TIMER_C, BranchKey, CancelBranch
from scaserver.proxy.events import (
    AckForwarded,
    CallCancelled,
    CallEnded,
    CallEndReason,
    RequestForwarded,
    ResponseRelayed,
)
from scaserver.proxy.proxy import ANSWERED_ELSEWHERE, Proxy, ProxySettings
from scaserver.proxy.relay import signature_for
from scaserver.proxy.routing import branch_with_loop_hash, loop_hash
from scaserver.proxy.target import Target
from scaserver.sip.actions import CancelTimer, Deliver, Respond, Send, SendRequest, StartTimer
from scaserver.sip.errors import ProtocolStateError
from scaserver.sip.message import Headers, Peer, Request, Response, Transport
from scaserver.sip.responses import make_response

from .build import (
    CALLER,
    CALLER_VIA,
    CANCEL_TX,
    CANCEL_TX2,
    IDENTITY,
    SERVER_TX,
    UNKNOWN_TX,
    answer,
    our_via,
    request,
    upstream,
)

B1 = Peer(Transport.UDP, "198.51.100.7", 5060)
B2 = Peer(Transport.UDP, "198.51.100.8", 5060)
B3 = Peer(Transport.UDP, "198.51.100.9", 5060)
T1 = Target("sip:bob@198.51.100.7")
T2 = Target("sip:bob@198.51.100.8")
T3 = Target("sip:bob@198.51.100.9")
INVITE = request()
SIGNATURE = signature_for(INVITE, IDENTITY.route_key)
RR_UDP = f"<sip:192.0.2.10:5060;transport=udp;lr;rrsig={SIGNATURE}>"
HASH = loop_hash(INVITE, CALLER_VIA)
K0 = BranchKey(SERVER_TX, 0, HASH)
K1 = BranchKey(SERVER_TX, 1, HASH)
K2 = BranchKey(SERVER_TX, 2, HASH)
TAG = "p" + HASH[:12]


def branch(target: Target, *, rr: tuple[str, ...] = (RR_UDP,), base: Request = INVITE) -> Request:
    """What the proxy hands the transaction layer for ``target``: new Request-URI,
    Max-Forwards decremented, our Record-Route on top."""
    headers = base.headers.set("Max-Forwards", "69")
    for value in reversed(rr):
        headers = headers.prepend("Record-Route", value)
    return Request(base.method, target.uri, headers, base.body)


def forked(proxy: Proxy, targets: list[Target], req: Request = INVITE) -> list[Request]:
    actions = proxy.on_request(req, SERVER_TX, CALLER, targets, 0.0)
    return [a.request for a in actions if isinstance(a, SendRequest) and isinstance(a.request, Request)]


def relayed(response: Response, now: float = 1.0, *, generated: bool = False) -> Deliver:
    return Deliver(ResponseRelayed(INVITE, response, now, generated))


def generated(status: int, req: Request = INVITE) -> Response:
    return make_response(req, status, to_tag=TAG)


# -- 16.6: forwarding ---------------------------------------------------------------------------------


def test_parallel_fork_to_equal_q_targets() -> None:
    proxy = Proxy(IDENTITY)
    b0, b1 = branch(T1), branch(T2)
    assert proxy.on_request(INVITE, SERVER_TX, CALLER, [T1, T2], 0.0) == [
        SendRequest(b0, B1, K0),
        Deliver(RequestForwarded(INVITE, b0, T1, B1, 0.0)),
        StartTimer(K0, TIMER_C, 180.0),
        SendRequest(b1, B2, K1),
        Deliver(RequestForwarded(INVITE, b1, T2, B2, 0.0)),
        StartTimer(K1, TIMER_C, 180.0),
    ]
    assert SERVER_TX in proxy


def test_serial_fork_tries_lower_q_after_the_higher_group_fails() -> None:
    proxy = Proxy(IDENTITY)
    low = Target(T2.uri, q=0.5)
    assert forked(proxy, [low, Target(T1.uri, q=1.0)]) == [branch(T1)]
    busy = answer(branch(T1), 486)
    b1 = branch(low)
    assert proxy.on_response(K0, busy, 1.0) == [
        CancelTimer(K0, TIMER_C),
        SendRequest(b1, B2, K1),
        Deliver(RequestForwarded(INVITE, b1, low, B2, 1.0)),
        StartTimer(K1, TIMER_C, 180.0),
    ]
    not_found = answer(b1, 404)
    assert proxy.on_response(K1, not_found, 2.0) == [
        CancelTimer(K1, TIMER_C),
        Respond(SERVER_TX, upstream(busy)),
        relayed(upstream(busy), 2.0),
        Deliver(CallEnded("call-1@198.51.100.1", CallEndReason.FAILED, INVITE, 486, 2.0)),
    ]
    assert SERVER_TX not in proxy


def test_path_goes_on_top_of_route_and_flow_is_the_destination() -> None:
    proxy = Proxy(IDENTITY)
    flow = Peer(Transport.UDP, "203.0.113.50", 40000)
    target = Target("sip:bob@10.0.0.7:5060", path=("<sip:edge.example.net;lr>",), flow=flow)
    actions = proxy.on_request(INVITE, SERVER_TX, CALLER, [target], 0.0)
    sent = actions[0]
    assert isinstance(sent, SendRequest)
    assert sent.peer == flow
    assert sent.request.headers.values("Route") == ("<sip:edge.example.net;lr>",)


def test_double_record_route_when_the_branch_leaves_on_another_transport() -> None:
    proxy = Proxy(IDENTITY)
    tcp_target = Target("sip:bob@198.51.100.7;transport=tcp")
    [sent] = forked(proxy, [tcp_target])
    assert sent.headers.values("Record-Route") == (
        f"<sip:192.0.2.10:5060;transport=tcp;lr;rrsig={SIGNATURE};r2=on>",
        f"<sip:192.0.2.10:5060;transport=udp;lr;rrsig={SIGNATURE};r2=on>",
    )


def test_record_routing_can_be_switched_off() -> None:
    proxy = Proxy(IDENTITY, ProxySettings(record_route=False))
    assert forked(proxy, [T1]) == [branch(T1, rr=())]


def test_in_dialog_request_follows_its_route_set_without_record_route() -> None:
    proxy = Proxy(IDENTITY)
    bye = request(
        "BYE", "sip:alice@198.51.100.1", to_tag="b1", extra=(("Route", "<sip:192.0.2.10;lr>"),), cseq_number=2
    )
    expected = Request("BYE", "sip:alice@198.51.100.1", bye.headers.set("Max-Forwards", "69").remove("Route"))
    key = BranchKey(SERVER_TX, 0, loop_hash(bye, CALLER_VIA))
    assert proxy.on_request(bye, SERVER_TX, CALLER, [], 0.0) == [
        SendRequest(expected, CALLER, key),
        Deliver(RequestForwarded(bye, expected, Target("sip:alice@198.51.100.1"), CALLER, 0.0)),
    ]
    ok = answer(expected, 200, to_tag=None)
    assert proxy.on_response(key, ok, 1.0) == [
        Respond(SERVER_TX, upstream(ok)),
        Deliver(ResponseRelayed(bye, upstream(ok), 1.0, False)),
        Deliver(CallEnded("call-1@198.51.100.1", CallEndReason.BYE, bye, 200, 1.0)),
    ]
    assert len(proxy) == 0


def test_a_server_transaction_is_proxied_once() -> None:
    proxy = Proxy(IDENTITY)
    proxy.on_request(INVITE, SERVER_TX, CALLER, [T1], 0.0)
    with pytest.raises(ProtocolStateError):
        proxy.on_request(INVITE, SERVER_TX, CALLER, [T1], 0.0)


# -- 16.3: refusals -------------------------------------------------------------------------------------


def _refusal(proxy: Proxy, req: Request) -> Response:
    actions = proxy.on_request(req, SERVER_TX, CALLER, [T1], 0.0)
    assert len(proxy) == 0
    respond = actions[0]
    assert isinstance(respond, Respond)
    response = respond.response
    assert isinstance(response, Response)
    assert actions[1:] == [
        Deliver(ResponseRelayed(req, response, 0.0, True)),
        Deliver(CallEnded("call-1@198.51.100.1", CallEndReason.FAILED, req, response.status, 0.0)),
    ]
    return response


def test_max_forwards_zero_is_answered_483() -> None:
    response = _refusal(Proxy(IDENTITY), request(max_forwards="0"))
    assert (response.status, response.reason) == (483, "Too Many Hops")
    tag = "p" + loop_hash(request(max_forwards="0"), CALLER_VIA)[:12]
    assert response.headers.get("To") == f"<sip:bob@example.com>;tag={tag}"


def test_loop_is_answered_482() -> None:
    ours = our_via(branch_with_loop_hash(HASH, "x"))
    looped = request(via=("SIP/2.0/UDP 203.0.113.5;branch=z9hG4bKother", ours, CALLER_VIA))
    assert _refusal(Proxy(IDENTITY), looped).status == 482


def test_unsupported_proxy_require_is_answered_420() -> None:
    response = _refusal(Proxy(IDENTITY), request(extra=(("Proxy-Require", "foo"),)))
    assert response.status == 420
    assert response.headers.get("Unsupported") == "foo"


def test_supported_proxy_require_is_forwarded() -> None:
    proxy = Proxy(IDENTITY, ProxySettings(supported=frozenset({"foo"})))
    assert len(forked(proxy, [T1], request(extra=(("Proxy-Require", "foo"),)))) == 1


# -- 16.7: responses ----------------------------------------------------------------------------------


def test_provisional_is_relayed_and_resets_timer_c_but_100_is_absorbed() -> None:
    proxy = Proxy(IDENTITY)
    forked(proxy, [T1])
    assert proxy.on_response(K0, answer(branch(T1), 100), 0.5) == []
    ringing = answer(branch(T1), 180)
    assert proxy.on_response(K0, ringing, 1.0) == [
        StartTimer(K0, TIMER_C, 180.0),
        Respond(SERVER_TX, upstream(ringing)),
        relayed(upstream(ringing)),
    ]


def test_first_2xx_is_relayed_and_cancels_the_other_branches() -> None:
    proxy = Proxy(IDENTITY)
    forked(proxy, [T1, T2, T3])
    proxy.on_response(K1, answer(branch(T2), 180, to_tag="b2"), 0.5)
    ok = answer(branch(T1), 200)
    assert proxy.on_response(K0, ok, 1.0) == [
        CancelTimer(K0, TIMER_C),
        Respond(SERVER_TX, upstream(ok)),
        relayed(upstream(ok)),
        Deliver(CancelBranch(K1, ANSWERED_ELSEWHERE)),
        Deliver(CancelBranch(K2, ANSWERED_ELSEWHERE)),
        CancelTimer(K2, TIMER_C),
    ]
    # The ringing branch answers the CANCEL; its 487 goes nowhere and the context ends.
    assert proxy.on_response(K1, answer(branch(T2), 487, to_tag="b2"), 2.0) == [CancelTimer(K1, TIMER_C)]
    assert len(proxy) == 0


def test_every_later_2xx_is_relayed_too() -> None:
    proxy = Proxy(IDENTITY)
    forked(proxy, [T1, T2])
    proxy.on_response(K1, answer(branch(T2), 180, to_tag="b2"), 0.5)
    proxy.on_response(K0, answer(branch(T1), 200), 1.0)
    late = answer(branch(T2), 200, to_tag="b2")
    assert proxy.on_response(K1, late, 1.5) == [
        CancelTimer(K1, TIMER_C),
        Send(upstream(late), CALLER),
        relayed(upstream(late), 1.5),
    ]
    assert len(proxy) == 0
    # A retransmission of that 2xx after the context is gone is forwarded statelessly by its Via.
    assert proxy.on_response(K1, late, 2.0) == [Send(upstream(late), CALLER)]


def test_provisional_after_the_final_response_is_not_relayed() -> None:
    proxy = Proxy(IDENTITY)
    forked(proxy, [T1, T2])
    proxy.on_response(K0, answer(branch(T1), 200), 1.0)
    assert proxy.on_response(K1, answer(branch(T2), 180, to_tag="b2"), 1.5) == []


def test_6xx_cancels_the_others_and_wins_over_their_487() -> None:
    proxy = Proxy(IDENTITY)
    low = Target("sip:bob@198.51.100.9", q=0.1)
    forked(proxy, [T1, T2, low])
    proxy.on_response(K1, answer(branch(T2), 183, to_tag="b2"), 0.5)
    decline = answer(branch(T1), 603)
    assert proxy.on_response(K0, decline, 1.0) == [
        CancelTimer(K0, TIMER_C),
        Deliver(CancelBranch(K1, None)),
    ]
    assert proxy.on_response(K1, answer(branch(T2), 487, to_tag="b2"), 1.5) == [
        CancelTimer(K1, TIMER_C),
        Respond(SERVER_TX, upstream(decline)),
        relayed(upstream(decline), 1.5),
        Deliver(CallEnded("call-1@198.51.100.1", CallEndReason.FAILED, INVITE, 603, 1.5)),
    ]


def test_lowest_class_wins() -> None:
    proxy = Proxy(IDENTITY)
    forked(proxy, [T1, T2])
    proxy.on_response(K0, answer(branch(T1), 486), 1.0)
    moved = answer(branch(T2), 302, to_tag="b2", extra=(("Contact", "<sip:bob@elsewhere>"),))
    actions = proxy.on_response(K1, moved, 2.0)
    assert actions[1] == Respond(SERVER_TX, upstream(moved))


def test_preferred_4xx_wins_within_the_class() -> None:
    proxy = Proxy(IDENTITY)
    forked(proxy, [T1, T2])
    proxy.on_response(K0, answer(branch(T1), 486), 1.0)
    incomplete = answer(branch(T2), 484, to_tag="b2")
    assert proxy.on_response(K1, incomplete, 2.0)[1] == Respond(SERVER_TX, upstream(incomplete))


def test_401_and_407_challenges_are_merged() -> None:
    proxy = Proxy(IDENTITY)
    forked(proxy, [T1, T2, T3])
    www = ("WWW-Authenticate", 'Digest realm="a.example", nonce="n1"')
    prx = ("Proxy-Authenticate", 'Digest realm="b.example", nonce="n2"')
    first = answer(branch(T1), 401, extra=(www,))
    proxy.on_response(K0, first, 1.0)
    proxy.on_response(K1, answer(branch(T2), 407, to_tag="b2", extra=(prx,)), 1.1)
    actions = proxy.on_response(K2, answer(branch(T3), 486, to_tag="b3"), 1.2)
    merged = upstream(first).with_headers(upstream(first).headers.add(*prx))
    assert actions[1:3] == [Respond(SERVER_TX, merged), relayed(merged, 1.2)]


def test_503_becomes_500() -> None:
    proxy = Proxy(IDENTITY)
    forked(proxy, [T1])
    actions = proxy.on_response(K0, answer(branch(T1), 503, extra=(("Retry-After", "30"),)), 1.0)
    assert actions == [
        CancelTimer(K0, TIMER_C),
        Respond(SERVER_TX, generated(500)),
        relayed(generated(500), generated=True),
        Deliver(CallEnded("call-1@198.51.100.1", CallEndReason.FAILED, INVITE, 500, 1.0)),
    ]


def test_unreachable_target_counts_as_503_and_is_answered_500() -> None:
    proxy = Proxy(IDENTITY)
    sctp = Target("sip:bob@198.51.100.7;transport=sctp")
    actions = proxy.on_request(INVITE, SERVER_TX, CALLER, [sctp], 0.0)
    assert actions == [
        Respond(SERVER_TX, generated(500)),
        Deliver(ResponseRelayed(INVITE, generated(500), 0.0, True)),
        Deliver(CallEnded("call-1@198.51.100.1", CallEndReason.FAILED, INVITE, 500, 0.0)),
    ]


# -- 16.10: CANCEL -------------------------------------------------------------------------------------


def test_cancel_answers_200_and_cancels_every_pending_branch() -> None:
    proxy = Proxy(IDENTITY)
    forked(proxy, [T1, T2, Target("sip:later@h", q=0.1)])
    proxy.on_response(K0, answer(branch(T1), 180), 0.5)
    cancel = request("CANCEL")
    actions = proxy.on_cancel(cancel, CANCEL_TX, SERVER_TX, 1.0)
    assert actions == [
        Respond(CANCEL_TX, make_response(cancel, 200)),
        Deliver(CallCancelled(INVITE, cancel, 1.0)),
        Deliver(CancelBranch(K0, None)),
        Deliver(CancelBranch(K1, None)),
        CancelTimer(K1, TIMER_C),
    ]
    terminated = answer(branch(T1), 487)
    assert proxy.on_response(K0, terminated, 1.2) == [
        CancelTimer(K0, TIMER_C),
        Respond(SERVER_TX, upstream(terminated)),
        relayed(upstream(terminated), 1.2),
        Deliver(CallEnded("call-1@198.51.100.1", CallEndReason.CANCELLED, INVITE, 487, 1.2)),
    ]


def test_cancel_with_no_answering_branch_is_answered_487_at_once() -> None:
    proxy = Proxy(IDENTITY)
    forked(proxy, [T1])
    cancel = request("CANCEL")
    assert proxy.on_cancel(cancel, CANCEL_TX, SERVER_TX, 1.0) == [
        Respond(CANCEL_TX, make_response(cancel, 200)),
        Deliver(CallCancelled(INVITE, cancel, 1.0)),
        Deliver(CancelBranch(K0, None)),
        CancelTimer(K0, TIMER_C),
        Respond(SERVER_TX, generated(487)),
        relayed(generated(487), generated=True),
        Deliver(CallEnded("call-1@198.51.100.1", CallEndReason.CANCELLED, INVITE, 487, 1.0)),
    ]


def test_cancel_after_the_final_response_only_gets_its_200() -> None:
    proxy = Proxy(IDENTITY)
    forked(proxy, [T1, T2])
    proxy.on_response(K1, answer(branch(T2), 180, to_tag="b2"), 0.5)
    proxy.on_response(K0, answer(branch(T1), 200), 1.0)
    cancel = request("CANCEL")
    assert proxy.on_cancel(cancel, CANCEL_TX, SERVER_TX, 2.0) == [
        Respond(CANCEL_TX, make_response(cancel, 200))
    ]
    assert proxy.on_cancel(cancel, CANCEL_TX2, UNKNOWN_TX, 2.0) == [
        Respond(CANCEL_TX2, make_response(cancel, 200))
    ]


def test_2xx_racing_a_cancel_is_relayed() -> None:
    proxy = Proxy(IDENTITY)
    forked(proxy, [T1])
    proxy.on_response(K0, answer(branch(T1), 180), 0.5)
    proxy.on_cancel(request("CANCEL"), CANCEL_TX, SERVER_TX, 1.0)
    ok = answer(branch(T1), 200)
    assert proxy.on_response(K0, ok, 1.1) == [
        CancelTimer(K0, TIMER_C),
        Respond(SERVER_TX, upstream(ok)),
        relayed(upstream(ok), 1.1),
    ]


# -- 16.8: timer C and transaction time-outs ---------------------------------------------------------


def test_timer_c_cancels_a_ringing_branch_and_counts_408() -> None:
    proxy = Proxy(IDENTITY, ProxySettings(timer_c=200.0))
    assert forked(proxy, [T1]) == [branch(T1)]
    proxy.on_response(K0, answer(branch(T1), 180), 1.0)
    assert proxy.on_timer(K0, TIMER_C, 201.0) == [
        Deliver(CancelBranch(K0)),
        Respond(SERVER_TX, generated(408)),
        relayed(generated(408), 201.0, generated=True),
        Deliver(CallEnded("call-1@198.51.100.1", CallEndReason.FAILED, INVITE, 408, 201.0)),
    ]
    # The 487 that answers our CANCEL is absorbed; a second firing finds nothing.
    assert proxy.on_response(K0, answer(branch(T1), 487), 202.0) == []
    assert proxy.on_timer(K0, TIMER_C, 400.0) == []


def test_timer_c_is_armed_with_the_configured_value_and_reset_by_each_provisional() -> None:
    proxy = Proxy(IDENTITY, ProxySettings(timer_c=200.0))
    actions = proxy.on_request(INVITE, SERVER_TX, CALLER, [T1], 0.0)
    assert actions[-1] == StartTimer(K0, TIMER_C, 200.0)
    assert proxy.on_response(K0, answer(branch(T1), 180), 150.0)[0] == StartTimer(K0, TIMER_C, 200.0)
    assert proxy.on_response(K0, answer(branch(T1), 183), 300.0)[0] == StartTimer(K0, TIMER_C, 200.0)


def test_timer_c_on_a_silent_branch_lets_the_next_group_run() -> None:
    proxy = Proxy(IDENTITY)
    low = Target(T2.uri, q=0.5)
    forked(proxy, [T1, low])
    actions = proxy.on_timer(K0, TIMER_C, 180.0)
    assert actions[0] == Deliver(CancelBranch(K0))
    assert isinstance(actions[1], SendRequest)
    assert actions[1].context == K1


def test_other_timers_are_ignored() -> None:
    proxy = Proxy(IDENTITY)
    forked(proxy, [T1])
    assert proxy.on_timer(K0, "B", 1.0) == []
    assert proxy.on_timer("other-key", TIMER_C, 1.0) == []


def test_branch_timeout_counts_408() -> None:
    proxy = Proxy(IDENTITY)
    forked(proxy, [T1])
    assert proxy.on_branch_timeout(K0, 32.0) == [
        CancelTimer(K0, TIMER_C),
        Respond(SERVER_TX, generated(408)),
        relayed(generated(408), 32.0, generated=True),
        Deliver(CallEnded("call-1@198.51.100.1", CallEndReason.FAILED, INVITE, 408, 32.0)),
    ]
    assert proxy.on_branch_timeout(K0, 33.0) == []


def test_transport_failure_counts_503_and_answers_500() -> None:
    proxy = Proxy(IDENTITY)
    forked(proxy, [T1])
    assert proxy.on_branch_failure(K0, 0.1)[1] == Respond(SERVER_TX, generated(500))


def test_non_invite_timeout_sends_no_408() -> None:
    proxy = Proxy(IDENTITY)
    options = request("OPTIONS")
    actions = proxy.on_request(options, SERVER_TX, CALLER, [T1], 0.0)
    assert not any(isinstance(a, StartTimer) for a in actions)
    key = BranchKey(SERVER_TX, 0, loop_hash(options, CALLER_VIA))
    assert proxy.on_branch_timeout(key, 32.0) == []
    assert len(proxy) == 0


def test_non_invite_fork_relays_the_first_2xx_only() -> None:
    proxy = Proxy(IDENTITY)
    message = request("MESSAGE")
    sent = forked(proxy, [T1, T2], message)
    key0, key1 = (BranchKey(SERVER_TX, i, loop_hash(message, CALLER_VIA)) for i in (0, 1))
    ok = answer(sent[0], 200)
    assert proxy.on_response(key0, ok, 1.0) == [
        Respond(SERVER_TX, upstream(ok)),
        Deliver(ResponseRelayed(message, upstream(ok), 1.0, False)),
    ]
    assert proxy.on_response(key1, answer(sent[1], 200, to_tag="b2"), 1.1) == []
    assert len(proxy) == 0


# -- 16.11: ACK for a 2xx ------------------------------------------------------------------------------


def test_ack_is_forwarded_statelessly_along_its_route() -> None:
    proxy = Proxy(IDENTITY)
    ack = request("ACK", "sip:bob@198.51.100.7", to_tag="b1", extra=(("Route", "<sip:192.0.2.10;lr>"),))
    actions = proxy.on_ack(ack, CALLER, 5.0)
    [send, event] = actions
    assert isinstance(send, Send)
    assert send.peer == B1
    forwarded = send.message
    assert isinstance(forwarded, Request)
    assert forwarded.headers.values("Via")[1:] == (CALLER_VIA,)
    assert forwarded.headers.values("Via")[0].startswith("SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK")
    assert forwarded.headers.get("Max-Forwards") == "69"
    assert "Route" not in forwarded.headers
    assert event == Deliver(AckForwarded(ack, forwarded, B1, 5.0))
    # A retransmitted ACK gets the same branch.
    assert proxy.on_ack(ack, CALLER, 6.0)[0] == send


@pytest.mark.parametrize(
    "ack",
    [
        request("ACK", "sip:bob@198.51.100.7", to_tag="b1", max_forwards="0"),
        request("ACK", "sip:192.0.2.10", to_tag="b1"),
        request("ACK", "sip:bob@198.51.100.7;transport=sctp", to_tag="b1"),
    ],
)
def test_ack_that_cannot_be_forwarded_is_dropped(ack: Request) -> None:
    assert Proxy(IDENTITY).on_ack(ack, CALLER, 5.0) == []


# -- stray responses (16.7 step 3, RFC 6026, RFC 4475 bcast) --------------------------------------------


def _stray(status: int, vias: tuple[str, ...], method: str = "INVITE") -> Response:
    fields = (
        *(("Via", v) for v in vias),
        ("From", "<sip:alice@example.com>;tag=a1"),
        ("To", "<sip:bob@example.com>;tag=b9"),
        ("Call-ID", "call-1@198.51.100.1"),
        ("CSeq", f"1 {method}"),
    )
    return Response(status, "X", Headers.of(*fields))


def test_stray_2xx_is_forwarded_to_the_next_via_without_ours() -> None:
    response = _stray(200, (our_via("z9hG4bKx"), CALLER_VIA))
    assert Proxy(IDENTITY).on_stray_response(response, 1.0) == [Send(_stray(200, (CALLER_VIA,)), CALLER)]


@pytest.mark.parametrize(
    "response",
    [
        _stray(200, (our_via("z9hG4bKx"), "SIP/2.0/UDP 255.255.255.255;branch=z9hG4bK1saber23")),
        _stray(200, ("SIP/2.0/UDP 192.0.2.198;branch=z9hG4bK1324923", CALLER_VIA)),
        _stray(200, (our_via("z9hG4bKx"),)),
        _stray(180, (our_via("z9hG4bKx"), CALLER_VIA)),
        _stray(486, (our_via("z9hG4bKx"), CALLER_VIA)),
        _stray(200, (our_via("z9hG4bKx"), CALLER_VIA), method="BYE"),
        _stray(200, ()),
    ],
    ids=["broadcast", "not-our-via", "for-us", "provisional", "failure", "non-invite", "no-via"],
)
def test_stray_responses_that_are_dropped(response: Response) -> None:
    assert Proxy(IDENTITY).on_stray_response(response, 1.0) == []


def test_ack_to_our_alias_is_dropped() -> None:
    assert Proxy(IDENTITY).on_ack(request("ACK", "sip:proxy.example.com", to_tag="b1"), CALLER, 5.0) == []


def test_2xx_after_cancel_does_not_cancel_the_cancelled_branches_again() -> None:
    proxy = Proxy(IDENTITY)
    forked(proxy, [T1, T2])
    proxy.on_response(K0, answer(branch(T1), 180), 0.5)
    proxy.on_response(K1, answer(branch(T2), 180, to_tag="b2"), 0.5)
    proxy.on_cancel(request("CANCEL"), CANCEL_TX, SERVER_TX, 1.0)
    ok = answer(branch(T1), 200)
    assert proxy.on_response(K0, ok, 1.1) == [
        CancelTimer(K0, TIMER_C),
        Respond(SERVER_TX, upstream(ok)),
        relayed(upstream(ok), 1.1),
    ]
    # Timer C of the other, already cancelled, branch only counts its 408.
    assert proxy.on_timer(K1, TIMER_C, 181.0) == []
    assert len(proxy) == 0


_STATUSES = st.sampled_from([300, 302, 401, 404, 407, 480, 486, 500, 503, 600, 603])


@given(st.lists(_STATUSES, min_size=1, max_size=4))
def test_best_response_is_a_6xx_or_of_the_lowest_class(statuses: list[int]) -> None:
    proxy = Proxy(IDENTITY)
    targets = [Target(f"sip:bob{i}@198.51.100.{i + 1}") for i in range(len(statuses))]
    sent = forked(proxy, targets)
    final: list[Response] = []
    for index, status in enumerate(statuses):
        key = BranchKey(SERVER_TX, index, HASH)
        actions = proxy.on_response(key, answer(sent[index], status, to_tag=f"b{index}"), 1.0)
        final += [a.response for a in actions if isinstance(a, Respond) and isinstance(a.response, Response)]
        if final:
            break
    assert len(final) == 1
    assert len(proxy) == 0
    if any(status >= 600 for status in statuses):
        assert final[0].status == next(status for status in statuses if status >= 600)
        return
    assert final[0].status // 100 == min(status // 100 for status in statuses)
    assert final[0].status != 503
