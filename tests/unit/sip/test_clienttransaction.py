"""The RFC 3261 section 17.1 client machines (with RFC 6026), driven directly: exact action lists."""

from __future__ import annotations

import pytest

from scaserver.sip.actions import CancelTimer, Deliver, Send, StartTimer
from scaserver.sip.clienttransaction import (
    IctState,
    InviteClientTransaction,
    NictState,
    NonInviteClientTransaction,
    build_ack,
    build_cancel,
)
from scaserver.sip.errors import ProtocolStateError
from scaserver.sip.message import Headers, Request
from scaserver.sip.timers import TimerName
from scaserver.sip.transaction import (
    ResponseReceived,
    TransactionTerminated,
    TransactionTimedOut,
    TransportFailed,
)
from tests.unit.sip.test_transaction import (
    CKEY,
    INVITE,
    NCKEY,
    OPTIONS,
    TCP,
    UDP,
    T,
    ict,
    nict,
    reply,
    request,
)

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
    assert tx.request is None  # timer D keeps the transaction, not the INVITE
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
    assert tx.request is None  # timer M keeps the transaction, not the INVITE
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
    assert tx.request is None  # timer K keeps the transaction, not the request
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
