"""The RFC 3261 section 17.2 server machines (with RFC 6026), driven directly: exact action lists."""

from __future__ import annotations

import pytest

from scaserver.sip.actions import CancelTimer, Deliver, Send, StartTimer
from scaserver.sip.errors import ProtocolStateError
from scaserver.sip.message import Response
from scaserver.sip.responses import make_response
from scaserver.sip.serializer import serialize
from scaserver.sip.servertransaction import (
    InviteServerTransaction,
    IstState,
    NistState,
    NonInviteServerTransaction,
)
from scaserver.sip.timers import TimerName
from scaserver.sip.transaction import (
    AckReceived,
    TransactionTerminated,
    TransactionTimedOut,
    TransportFailed,
)
from tests.unit.sip.test_transaction import (
    NSKEY,
    SINVITE,
    SKEY,
    SUBSCRIBE,
    TCP,
    UDP,
    T,
    ist,
    nist,
    reply,
    request,
    state_of,
)

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
    tx = NonInviteServerTransaction(NSKEY, UDP, False, T)
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


def test_nist_answers_a_retransmission_with_the_final_response_as_sent_its_detail_and_cause_too() -> None:
    tx = nist()
    refusal = make_response(SUBSCRIBE, 489, detail="no such package", cause="bad-event")
    tx.on_response_from_tu(refusal)
    [again] = tx.on_request_retransmission()
    assert isinstance(again, Send)
    assert serialize(again.message) == serialize(refusal)
    assert isinstance(again.message, Response)
    assert (again.message.detail, again.message.cause) == ("no such package", "bad-event")
