"""The four RFC 3261 section 17 machines (with RFC 6026), driven directly: exact action lists."""

from __future__ import annotations

import pytest

from scaserver.sip.actions import CancelTimer, Deliver, Send, StartTimer
from scaserver.sip.errors import ProtocolStateError
from scaserver.sip.keys import ClientKey, ServerKey
from scaserver.sip.message import Headers, Peer, Request, Response, Transport
from scaserver.sip.responses import make_response
from scaserver.sip.timers import TimerConfig, TimerName
from scaserver.sip.transaction import (
    ICT_TRANSITIONS,
    IST_TRANSITIONS,
    NICT_TRANSITIONS,
    NIST_TRANSITIONS,
    AckReceived,
    IctState,
    InviteClientTransaction,
    InviteServerTransaction,
    IstState,
    NictState,
    NistState,
    NonInviteClientTransaction,
    NonInviteServerTransaction,
    ResponseReceived,
    TransactionTerminated,
    TransactionTimedOut,
    TransportFailed,
    build_ack,
    build_cancel,
)

T = TimerConfig()
UDP = Peer(Transport.UDP, "192.0.2.10", 5060)
TCP = Peer(Transport.TCP, "192.0.2.10", 5060)
CKEY = ClientKey("z9hG4bK-c1", "INVITE")
NCKEY = ClientKey("z9hG4bK-c2", "OPTIONS")
SKEY = ServerKey("z9hG4bK-s1", "192.0.2.10", 5060, "INVITE")
NSKEY = ServerKey("z9hG4bK-s2", "192.0.2.10", 5060, "SUBSCRIBE")


def request(method: str, branch: str, *, cseq: int = 1, route: bool = False) -> Request:
    fields = [("Via", f"SIP/2.0/UDP 192.0.2.10:5060;branch={branch}")]
    if route:
        fields.append(("Route", "<sip:proxy.example.com;lr>"))
    fields += [
        ("Max-Forwards", "70"),
        ("From", "<sip:alice@example.com>;tag=a1"),
        ("To", "<sip:bob@example.com>"),
        ("Call-ID", "call-1@example.com"),
        ("CSeq", f"{cseq} {method}"),
        ("Contact", "<sip:alice@192.0.2.10>"),
    ]
    return Request(method, "sip:bob@example.com", Headers.of(*fields))


INVITE = request("INVITE", CKEY.branch, route=True)
OPTIONS = request("OPTIONS", NCKEY.branch)
SINVITE = request("INVITE", SKEY.branch)
SUBSCRIBE = request("SUBSCRIBE", NSKEY.branch)


def reply(req: Request, status: int, *, tag: str | None = "b1") -> Response:
    headers = Headers.of(
        *((name, value) for name, value in req.headers if name in ("Via", "From", "Call-ID", "CSeq"))
    )
    to = req.headers.get("To") or ""
    headers = headers.add("To", to + (f";tag={tag}" if tag and status > 100 else ""))
    return Response(status, "Reason", headers)


def ict(peer: Peer = UDP) -> InviteClientTransaction:
    tx = InviteClientTransaction(CKEY, INVITE, peer, peer.transport.reliable, T)
    tx.start()
    return tx


def nict(peer: Peer = UDP) -> NonInviteClientTransaction:
    tx = NonInviteClientTransaction(NCKEY, OPTIONS, peer, peer.transport.reliable, T)
    tx.start()
    return tx


def ist(peer: Peer = UDP) -> InviteServerTransaction:
    tx = InviteServerTransaction(SKEY, SINVITE, peer, peer.transport.reliable, T)
    tx.start()
    return tx


def nist(peer: Peer = UDP) -> NonInviteServerTransaction:
    tx = NonInviteServerTransaction(NSKEY, SUBSCRIBE, peer, peer.transport.reliable, T)
    tx.start()
    return tx


def state_of(tx: InviteServerTransaction | NonInviteServerTransaction) -> IstState | NistState:
    """The state, read through a call so that mypy does not keep an earlier narrowing."""
    return tx.state


# ------------------------------------------------------------------ tables


EDGES = {
    "ict": [(state.name, target.name) for (state, _), (_, target) in ICT_TRANSITIONS.items()],
    "nict": [(state.name, target.name) for (state, _), (_, target) in NICT_TRANSITIONS.items()],
    "ist": [(state.name, target.name) for (state, _), (_, target) in IST_TRANSITIONS.items()],
    "nist": [(state.name, target.name) for (state, _), (_, target) in NIST_TRANSITIONS.items()],
}


@pytest.mark.parametrize("machine", sorted(EDGES))
def test_tables_end_in_terminated_and_never_leave_it(machine: str) -> None:
    assert all(source != "TERMINATED" for source, _ in EDGES[machine])
    assert any(target == "TERMINATED" for _, target in EDGES[machine])


def test_timer_config_values() -> None:
    assert (T.timeout, T.timer_d(False), T.timer_i(False), T.timer_j(False), T.timer_k(False)) == (
        32.0,
        32.0,
        5.0,
        32.0,
        5.0,
    )
    assert (T.timer_d(True), T.timer_i(True), T.timer_j(True), T.timer_k(True)) == (0.0, 0.0, 0.0, 0.0)
    assert TimerName.TRYING_100 == "TRYING_100"
    assert TimerName("M") is TimerName.M


# ======================================================== INVITE client


def test_ict_start_udp_sends_and_arms_a_and_b() -> None:
    tx = InviteClientTransaction(CKEY, INVITE, UDP, False, T)
    assert tx.start() == [
        Send(INVITE, UDP),
        StartTimer(CKEY, TimerName.A, 0.5),
        StartTimer(CKEY, TimerName.B, 32.0),
    ]
    assert tx.state is IctState.CALLING


def test_ict_start_reliable_has_no_timer_a() -> None:
    tx = InviteClientTransaction(CKEY, INVITE, TCP, True, T)
    assert tx.start() == [Send(INVITE, TCP), StartTimer(CKEY, TimerName.B, 32.0)]


def test_ict_timer_a_doubles_without_cap() -> None:
    tx = ict()
    delays = []
    for _ in range(6):
        actions = tx.on_timer(TimerName.A)
        assert actions[0] == Send(INVITE, UDP)
        assert isinstance(actions[1], StartTimer) and actions[1].name == TimerName.A
        delays.append(actions[1].delay)
    assert delays == [1.0, 2.0, 4.0, 8.0, 16.0, 32.0]


def test_ict_timer_b_times_out_in_calling() -> None:
    tx = ict()
    assert tx.on_timer(TimerName.B) == [
        CancelTimer(CKEY, TimerName.A),
        Deliver(TransactionTimedOut(CKEY)),
        Deliver(TransactionTerminated(CKEY)),
    ]
    assert tx.terminated


def test_ict_provisional_stops_a_and_b_and_goes_up() -> None:
    tx = ict()
    ringing = reply(INVITE, 180)
    assert tx.on_response(ringing) == [
        CancelTimer(CKEY, TimerName.A),
        CancelTimer(CKEY, TimerName.B),
        Deliver(ResponseReceived(ringing, CKEY)),
    ]
    assert tx.state is IctState.PROCEEDING
    assert tx.on_response(ringing) == [Deliver(ResponseReceived(ringing, CKEY))]
    assert tx.on_timer(TimerName.A) == []  # lost the race with the 180
    assert tx.on_timer(TimerName.B) == []


def test_ict_failure_sends_ack_and_arms_d() -> None:
    tx = ict()
    busy = reply(INVITE, 486)
    ack = build_ack(INVITE, busy)
    assert tx.on_response(busy) == [
        CancelTimer(CKEY, TimerName.A),
        CancelTimer(CKEY, TimerName.B),
        Send(ack, UDP),
        StartTimer(CKEY, TimerName.D, 32.0),
        Deliver(ResponseReceived(busy, CKEY)),
    ]
    assert tx.state is IctState.COMPLETED
    assert tx.on_response(busy) == [Send(ack, UDP)]  # retransmission: ACK again, not passed up
    assert tx.on_response(reply(INVITE, 180)) == []
    assert tx.on_response(reply(INVITE, 200)) == []
    assert tx.on_timer(TimerName.D) == [Deliver(TransactionTerminated(CKEY))]
    assert tx.terminated


def test_ict_failure_after_provisional_over_tcp_waits_zero() -> None:
    tx = ict(TCP)
    tx.on_response(reply(INVITE, 183))
    busy = reply(INVITE, 603)
    assert tx.on_response(busy) == [
        Send(build_ack(INVITE, busy), TCP),
        StartTimer(CKEY, TimerName.D, 0.0),
        Deliver(ResponseReceived(busy, CKEY)),
    ]


def test_ack_for_failure_follows_17_1_1_3() -> None:
    busy = reply(INVITE, 486, tag="xyz")
    assert build_ack(INVITE, busy) == Request(
        "ACK",
        "sip:bob@example.com",
        Headers.of(
            ("Via", "SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK-c1"),
            ("Route", "<sip:proxy.example.com;lr>"),
            ("Max-Forwards", "70"),
            ("From", "<sip:alice@example.com>;tag=a1"),
            ("To", "<sip:bob@example.com>;tag=xyz"),
            ("Call-ID", "call-1@example.com"),
            ("CSeq", "1 ACK"),
        ),
    )


def test_cancel_follows_9_1() -> None:
    invite = request("INVITE", CKEY.branch, cseq=7, route=True)
    assert build_cancel(invite) == Request(
        "CANCEL",
        "sip:bob@example.com",
        Headers.of(
            ("Via", "SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK-c1"),
            ("Route", "<sip:proxy.example.com;lr>"),
            ("Max-Forwards", "70"),
            ("From", "<sip:alice@example.com>;tag=a1"),
            ("To", "<sip:bob@example.com>"),
            ("Call-ID", "call-1@example.com"),
            ("CSeq", "7 CANCEL"),
        ),
    )


def test_ict_2xx_enters_accepted_and_passes_retransmissions_up() -> None:
    tx = ict()
    ok = reply(INVITE, 200)
    assert tx.on_response(ok) == [
        CancelTimer(CKEY, TimerName.A),
        CancelTimer(CKEY, TimerName.B),
        StartTimer(CKEY, TimerName.M, 32.0),
        Deliver(ResponseReceived(ok, CKEY)),
    ]
    assert tx.state is IctState.ACCEPTED
    assert tx.on_response(ok) == [Deliver(ResponseReceived(ok, CKEY))]  # RFC 6026 7.2
    forked = reply(INVITE, 200, tag="other-fork")
    assert tx.on_response(forked) == [Deliver(ResponseReceived(forked, CKEY))]
    assert tx.on_response(reply(INVITE, 180)) == []
    assert tx.on_response(reply(INVITE, 500)) == []
    assert tx.on_transport_error() == []
    assert tx.on_timer(TimerName.M) == [Deliver(TransactionTerminated(CKEY))]


def test_ict_2xx_after_provisional() -> None:
    tx = ict()
    tx.on_response(reply(INVITE, 100))
    ok = reply(INVITE, 200)
    assert tx.on_response(ok) == [StartTimer(CKEY, TimerName.M, 32.0), Deliver(ResponseReceived(ok, CKEY))]


@pytest.mark.parametrize("status", [None, 180, 486])
def test_ict_transport_error(status: int | None) -> None:
    tx = ict()
    pending: list[object] = [CancelTimer(CKEY, TimerName.A), CancelTimer(CKEY, TimerName.B)]
    if status is not None:
        tx.on_response(reply(INVITE, status))
        pending = [CancelTimer(CKEY, TimerName.D)] if status >= 300 else []
    assert tx.on_transport_error() == [
        *pending,
        Deliver(TransportFailed(CKEY)),
        Deliver(TransactionTerminated(CKEY)),
    ]


def test_ict_cancel_sent_rearms_b_in_proceeding() -> None:
    tx = ict()
    with pytest.raises(ProtocolStateError):
        tx.on_cancel_sent()
    tx.on_response(reply(INVITE, 180))
    assert tx.on_cancel_sent() == [StartTimer(CKEY, TimerName.B, 32.0)]
    assert tx.on_timer(TimerName.B) == [
        Deliver(TransactionTimedOut(CKEY)),
        Deliver(TransactionTerminated(CKEY)),
    ]


def test_ict_ignores_foreign_timer_names() -> None:
    assert ict().on_timer(TimerName.J) == []


# ===================================================== non-INVITE client


def test_nict_start() -> None:
    tx = NonInviteClientTransaction(NCKEY, OPTIONS, UDP, False, T)
    assert tx.start() == [
        Send(OPTIONS, UDP),
        StartTimer(NCKEY, TimerName.E, 0.5),
        StartTimer(NCKEY, TimerName.F, 32.0),
    ]
    tcp = NonInviteClientTransaction(NCKEY, OPTIONS, TCP, True, T)
    assert tcp.start() == [Send(OPTIONS, TCP), StartTimer(NCKEY, TimerName.F, 32.0)]


def test_nict_timer_e_doubles_up_to_t2() -> None:
    tx = nict()
    delays = []
    for _ in range(6):
        actions = tx.on_timer(TimerName.E)
        assert actions[0] == Send(OPTIONS, UDP)
        assert isinstance(actions[1], StartTimer)
        delays.append(actions[1].delay)
    assert delays == [1.0, 2.0, 4.0, 4.0, 4.0, 4.0]
    assert tx.state is NictState.TRYING


def test_nict_timer_e_is_t2_in_proceeding() -> None:
    tx = nict()
    tx.on_timer(TimerName.E)  # next interval would be 2 s in Trying
    trying = reply(OPTIONS, 100)
    assert tx.on_response(trying) == [Deliver(ResponseReceived(trying, NCKEY))]
    assert tx.state is NictState.PROCEEDING
    assert tx.on_timer(TimerName.E) == [Send(OPTIONS, UDP), StartTimer(NCKEY, TimerName.E, 4.0)]
    assert tx.on_response(trying) == [Deliver(ResponseReceived(trying, NCKEY))]


@pytest.mark.parametrize("provisional", [False, True])
def test_nict_final_completes_and_k_terminates(provisional: bool) -> None:
    tx = nict()
    if provisional:
        tx.on_response(reply(OPTIONS, 100))
    ok = reply(OPTIONS, 200)
    assert tx.on_response(ok) == [
        CancelTimer(NCKEY, TimerName.E),
        CancelTimer(NCKEY, TimerName.F),
        StartTimer(NCKEY, TimerName.K, 5.0),
        Deliver(ResponseReceived(ok, NCKEY)),
    ]
    assert tx.state is NictState.COMPLETED
    assert tx.on_response(ok) == []  # retransmissions absorbed
    assert tx.on_response(reply(OPTIONS, 100)) == []
    assert tx.on_timer(TimerName.E) == []
    assert tx.on_transport_error() == []
    assert tx.on_timer(TimerName.K) == [Deliver(TransactionTerminated(NCKEY))]
    assert tx.terminated


def test_nict_final_over_tcp_k_is_zero() -> None:
    tx = nict(TCP)
    nope = reply(OPTIONS, 404)
    assert tx.on_response(nope) == [
        CancelTimer(NCKEY, TimerName.F),
        StartTimer(NCKEY, TimerName.K, 0.0),
        Deliver(ResponseReceived(nope, NCKEY)),
    ]


@pytest.mark.parametrize("provisional", [False, True])
def test_nict_timer_f_times_out(provisional: bool) -> None:
    tx = nict()
    if provisional:
        tx.on_response(reply(OPTIONS, 100))
    assert tx.on_timer(TimerName.F) == [
        CancelTimer(NCKEY, TimerName.E),
        Deliver(TransactionTimedOut(NCKEY)),
        Deliver(TransactionTerminated(NCKEY)),
    ]


def test_nict_transport_error() -> None:
    tx = nict()
    assert tx.on_transport_error() == [
        CancelTimer(NCKEY, TimerName.E),
        CancelTimer(NCKEY, TimerName.F),
        Deliver(TransportFailed(NCKEY)),
        Deliver(TransactionTerminated(NCKEY)),
    ]
    assert tx.on_timer(TimerName.F) == []


# ======================================================== INVITE server


def test_ist_start_arms_the_100_trying_timer() -> None:
    tx = InviteServerTransaction(SKEY, SINVITE, UDP, False, T)
    assert tx.start() == [StartTimer(SKEY, TimerName.TRYING_100, 0.2)]
    assert tx.state is IstState.PROCEEDING


def test_ist_sends_100_trying_when_the_tu_is_silent() -> None:
    tx = ist()
    assert tx.on_request_retransmission() == []  # nothing to repeat yet
    trying = make_response(SINVITE, 100)
    assert tx.on_timer(TimerName.TRYING_100) == [Send(trying, UDP)]
    assert tx.on_request_retransmission() == [Send(trying, UDP)]
    ringing = reply(SINVITE, 180)
    assert tx.on_response_from_tu(ringing) == [Send(ringing, UDP)]
    assert tx.on_request_retransmission() == [Send(ringing, UDP)]


def test_ist_no_100_trying_when_the_tu_answers_within_200ms() -> None:
    tx = ist()
    ringing = reply(SINVITE, 180)
    assert tx.on_response_from_tu(ringing) == [CancelTimer(SKEY, TimerName.TRYING_100), Send(ringing, UDP)]
    assert tx.on_timer(TimerName.TRYING_100) == []  # fired anyway: it lost the race


def test_ist_failure_retransmits_with_g_doubling_to_t2_until_ack() -> None:
    tx = ist()
    busy = reply(SINVITE, 486)
    assert tx.on_response_from_tu(busy) == [
        CancelTimer(SKEY, TimerName.TRYING_100),
        Send(busy, UDP),
        StartTimer(SKEY, TimerName.G, 0.5),
        StartTimer(SKEY, TimerName.H, 32.0),
    ]
    assert tx.state is IstState.COMPLETED
    delays = []
    for _ in range(5):
        actions = tx.on_timer(TimerName.G)
        assert actions[0] == Send(busy, UDP)
        assert isinstance(actions[1], StartTimer)
        delays.append(actions[1].delay)
    assert delays == [1.0, 2.0, 4.0, 4.0, 4.0]
    assert tx.on_request_retransmission() == [Send(busy, UDP)]
    assert tx.on_response_from_tu(reply(SINVITE, 500)) == []  # a later final is discarded
    ack = request("ACK", SKEY.branch)
    assert tx.on_ack(ack, UDP) == [
        CancelTimer(SKEY, TimerName.G),
        CancelTimer(SKEY, TimerName.H),
        StartTimer(SKEY, TimerName.I, 5.0),
    ]
    assert state_of(tx) is IstState.CONFIRMED
    assert tx.on_ack(ack, UDP) == []
    assert tx.on_request_retransmission() == []
    assert tx.on_timer(TimerName.G) == []
    assert tx.on_transport_error() == []
    assert tx.on_timer(TimerName.I) == [Deliver(TransactionTerminated(SKEY))]
    with pytest.raises(ProtocolStateError):
        tx.on_response_from_tu(busy)


def test_ist_failure_over_tcp_has_no_g_and_zero_i() -> None:
    tx = ist(TCP)
    busy = reply(SINVITE, 404)
    assert tx.on_response_from_tu(busy) == [
        CancelTimer(SKEY, TimerName.TRYING_100),
        Send(busy, TCP),
        StartTimer(SKEY, TimerName.H, 32.0),
    ]
    assert tx.on_ack(request("ACK", SKEY.branch), TCP) == [
        CancelTimer(SKEY, TimerName.H),
        StartTimer(SKEY, TimerName.I, 0.0),
    ]


def test_ist_timer_h_without_ack() -> None:
    tx = ist()
    tx.on_response_from_tu(reply(SINVITE, 480))
    assert tx.on_timer(TimerName.H) == [
        CancelTimer(SKEY, TimerName.G),
        Deliver(TransactionTimedOut(SKEY)),
        Deliver(TransactionTerminated(SKEY)),
    ]


def test_ist_2xx_enters_accepted_rfc_6026() -> None:
    tx = ist()
    ok = reply(SINVITE, 200)
    assert tx.on_response_from_tu(ok) == [
        CancelTimer(SKEY, TimerName.TRYING_100),
        Send(ok, UDP),
        StartTimer(SKEY, TimerName.L, 32.0),
    ]
    assert tx.state is IstState.ACCEPTED
    assert tx.on_request_retransmission() == []  # absorbed, not passed up
    ack = request("ACK", SKEY.branch)
    assert tx.on_ack(ack, UDP) == [Deliver(AckReceived(ack, UDP))]
    assert tx.on_response_from_tu(ok) == [Send(ok, UDP)]  # the TU's 2xx retransmission
    with pytest.raises(ProtocolStateError):
        tx.on_response_from_tu(reply(SINVITE, 180))
    with pytest.raises(ProtocolStateError):
        tx.on_response_from_tu(reply(SINVITE, 486))
    assert tx.on_transport_error() == []
    assert tx.on_timer(TimerName.L) == [Deliver(TransactionTerminated(SKEY))]


def test_ist_ack_before_final_is_absorbed() -> None:
    tx = ist()
    assert tx.on_ack(request("ACK", SKEY.branch), UDP) == []
    assert tx.state is IstState.PROCEEDING


@pytest.mark.parametrize("status", [None, 486])
def test_ist_transport_error(status: int | None) -> None:
    tx = ist()
    pending: list[object] = [CancelTimer(SKEY, TimerName.TRYING_100)]
    if status is not None:
        tx.on_response_from_tu(reply(SINVITE, status))
        pending = [CancelTimer(SKEY, TimerName.G), CancelTimer(SKEY, TimerName.H)]
    assert tx.on_transport_error() == [
        *pending,
        Deliver(TransportFailed(SKEY)),
        Deliver(TransactionTerminated(SKEY)),
    ]


# ==================================================== non-INVITE server


def test_nist_trying_absorbs_retransmissions() -> None:
    tx = NonInviteServerTransaction(NSKEY, SUBSCRIBE, UDP, False, T)
    assert tx.start() == []
    assert tx.on_request_retransmission() == []
    assert tx.state is NistState.TRYING


def test_nist_provisional_then_final() -> None:
    tx = nist()
    trying = reply(SUBSCRIBE, 100)
    assert tx.on_response_from_tu(trying) == [Send(trying, UDP)]
    assert tx.state is NistState.PROCEEDING
    assert tx.on_request_retransmission() == [Send(trying, UDP)]
    ok = reply(SUBSCRIBE, 202)
    assert tx.on_response_from_tu(ok) == [Send(ok, UDP), StartTimer(NSKEY, TimerName.J, 32.0)]
    assert state_of(tx) is NistState.COMPLETED
    assert tx.on_request_retransmission() == [Send(ok, UDP)]
    assert tx.on_response_from_tu(reply(SUBSCRIBE, 500)) == []  # later finals discarded
    with pytest.raises(ProtocolStateError):
        tx.on_response_from_tu(trying)
    assert tx.on_timer(TimerName.J) == [Deliver(TransactionTerminated(NSKEY))]
    assert tx.terminated
    with pytest.raises(ProtocolStateError):
        tx.on_response_from_tu(ok)


def test_nist_final_over_tcp_j_is_zero() -> None:
    tx = nist(TCP)
    ok = reply(SUBSCRIBE, 200)
    assert tx.on_response_from_tu(ok) == [Send(ok, TCP), StartTimer(NSKEY, TimerName.J, 0.0)]
    assert tx.on_timer(TimerName.E) == []


@pytest.mark.parametrize("final", [False, True])
def test_nist_transport_error(final: bool) -> None:
    tx = nist()
    pending: list[object] = []
    if final:
        tx.on_response_from_tu(reply(SUBSCRIBE, 200))
        pending = [CancelTimer(NSKEY, TimerName.J)]
    assert tx.on_transport_error() == [
        *pending,
        Deliver(TransportFailed(NSKEY)),
        Deliver(TransactionTerminated(NSKEY)),
    ]
