"""The transaction layer: matching (RFC 3261 17.1.3, 17.2.3), CANCEL (9.1, 9.2), and a client
and a server layer talking over an in-memory link that loses packets."""

from __future__ import annotations

import gc
import heapq
import itertools
import weakref
from collections.abc import Callable, Hashable

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scaserver.sip.actions import Action, CancelTimer, Deliver, Send, StartTimer
from scaserver.sip.clienttransaction import build_cancel
from scaserver.sip.errors import ProtocolStateError
from scaserver.sip.headers import parse_via, parse_via_text
from scaserver.sip.keys import ClientKey, ServerKey
from scaserver.sip.message import Headers, Message, Peer, Request, Response, Transport
from scaserver.sip.responses import make_response
from scaserver.sip.timers import TimerConfig, TimerName
from scaserver.sip.transactions import (
    AckReceived,
    CancelReceived,
    RequestReceived,
    ResponseReceived,
    StrayResponse,
    TransactionLayer,
    TransactionTerminated,
    TransactionTimedOut,
    TransportFailed,
    server_key,
)

T = TimerConfig()
PHONE = Peer(Transport.UDP, "192.0.2.10", 5060)
PHONE_TCP = Peer(Transport.TCP, "192.0.2.10", 40000)
SERVER = Peer(Transport.UDP, "192.0.2.1", 5060)


def branches(prefix: str = "b") -> Callable[[], str]:
    counter = itertools.count(1)
    return lambda: f"z9hG4bK{prefix}{next(counter)}"


def layer(prefix: str = "b", host: str = "192.0.2.1") -> TransactionLayer:
    return TransactionLayer(
        T, branch_factory=branches(prefix), local_via=lambda peer: (peer.transport.value, host, 5060)
    )


def incoming(
    method: str, branch: str = "z9hG4bKp1", *, sent_by: str = "Phone.Example.COM:5062", cseq: int = 1
) -> Request:
    return Request(
        method,
        "sip:alice@example.com",
        Headers.of(
            ("Via", f"SIP/2.0/UDP {sent_by};branch={branch};rport"),
            ("Max-Forwards", "70"),
            ("From", "<sip:bob@example.com>;tag=f1"),
            ("To", "<sip:alice@example.com>"),
            ("Call-ID", "c1@phone"),
            ("CSeq", f"{cseq} {method}"),
            ("Contact", "<sip:bob@192.0.2.10:5062>"),
        ),
    )


def outgoing(method: str, cseq: int = 1) -> Request:
    return Request(
        method,
        "sip:alice@192.0.2.10:5060",
        Headers.of(
            ("Max-Forwards", "70"),
            ("From", "<sip:sca@example.com>;tag=s1"),
            ("To", "<sip:alice@example.com>"),
            ("Call-ID", "out1@server"),
            ("CSeq", f"{cseq} {method}"),
        ),
    )


def with_via(request: Request, branch: str, transport: str = "UDP") -> Request:
    via = f"SIP/2.0/{transport} 192.0.2.1:5060;branch={branch}"
    return request.with_headers(request.headers.prepend("Via", via))


KEY = ServerKey("z9hG4bKp1", "phone.example.com", 5062, "INVITE")


# ------------------------------------------------------------ server side


def test_server_key_follows_17_2_3() -> None:
    assert server_key(incoming("INVITE")) == KEY
    assert server_key(incoming("ACK")) == KEY  # an ACK is keyed as its INVITE
    assert server_key(incoming("CANCEL")) == KEY._replace(method="CANCEL")
    assert server_key(incoming("OPTIONS", sent_by="192.0.2.10")) == ServerKey(
        "z9hG4bKp1", "192.0.2.10", None, "OPTIONS"
    )


def rfc2543(method: str) -> Request:
    """An RFC 2543 request: a top Via without a branch."""
    request = incoming(method)
    return request.with_headers(request.headers.set("Via", "SIP/2.0/UDP 192.0.2.10:5060"))


def test_rfc2543_request_is_matched_by_17_2_3_fields() -> None:
    tx = layer()
    first = tx.receive(rfc2543("INVITE"), PHONE, 0.0)
    [delivered] = [a.event for a in first if isinstance(a, Deliver)]
    assert isinstance(delivered, RequestReceived)
    assert delivered.key.branch.startswith("rfc2543.")
    assert tx.receive(rfc2543("INVITE"), PHONE, 0.1) == []  # a retransmission is absorbed
    cancel = tx.receive(rfc2543("CANCEL"), PHONE, 0.2)
    [cancelled] = [a.event for a in cancel if isinstance(a, Deliver)]
    assert isinstance(cancelled, CancelReceived) and cancelled.invite_key == delivered.key
    other = rfc2543("INVITE")
    other = other.with_headers(other.headers.set("CSeq", "2 INVITE"))
    [second] = [a.event for a in tx.receive(other, PHONE, 0.3) if isinstance(a, Deliver)]
    assert isinstance(second, RequestReceived) and second.key != delivered.key


def test_new_invite_is_delivered_and_retransmissions_absorbed() -> None:
    tl = layer()
    invite = incoming("INVITE")
    assert tl.receive(invite, PHONE, 0.0) == [
        StartTimer(KEY, TimerName.TRYING_100, 0.2),
        Deliver(RequestReceived(invite, PHONE, KEY)),
    ]
    assert tl.receive(invite, PHONE, 0.1) == []
    assert KEY in tl


def test_invite_retransmission_gets_the_last_provisional() -> None:
    tl = layer()
    invite = incoming("INVITE")
    tl.receive(invite, PHONE, 0.0)
    ringing = make_response(invite, 180, to_tag="t1")
    assert tl.respond(KEY, ringing, 0.05) == [CancelTimer(KEY, TimerName.TRYING_100), Send(ringing, PHONE)]
    assert tl.receive(invite, PHONE, 0.5) == [Send(ringing, PHONE)]


def test_same_branch_other_sent_by_is_a_new_transaction() -> None:
    tl = layer()
    tl.receive(incoming("OPTIONS"), PHONE, 0.0)
    other = incoming("OPTIONS", sent_by="other.example.com")
    key = ServerKey("z9hG4bKp1", "other.example.com", None, "OPTIONS")
    assert tl.receive(other, PHONE, 0.0) == [Deliver(RequestReceived(other, PHONE, key))]
    assert len(tl) == 2


def test_responses_go_to_the_peer_the_request_came_from() -> None:
    tl = layer()
    options = incoming("OPTIONS")
    key = KEY._replace(method="OPTIONS")
    tl.receive(options, PHONE_TCP, 0.0)
    ok = make_response(options, 200, to_tag="t")
    assert tl.respond(key, ok, 0.0) == [Send(ok, PHONE_TCP), StartTimer(key, TimerName.J, 0.0)]
    assert tl.on_timer(key, "J", 0.0) == [Deliver(TransactionTerminated(key))]
    assert key not in tl
    assert len(tl) == 0


def test_a_completed_non_invite_server_transaction_keeps_no_request_alive() -> None:
    """Timer J holds a completed transaction for 32 s on UDP: it answers a retransmission
    from its key and its last response, and lets the request go."""
    tl = layer()
    options = incoming("OPTIONS")
    key = KEY._replace(method="OPTIONS")
    tl.receive(options, PHONE, 0.0)
    ok = make_response(options, 200, to_tag="t")
    tl.respond(key, ok, 0.0)
    request = weakref.ref(options)
    del options
    gc.collect()
    assert request() is None
    again = incoming("OPTIONS")
    assert tl.receive(again, PHONE, 0.5) == [Send(ok, PHONE)]  # still answered from the key


def test_respond_to_unknown_transaction_raises() -> None:
    with pytest.raises(ProtocolStateError):
        layer().respond(KEY, make_response(incoming("INVITE"), 200), 0.0)


def test_ack_for_failure_is_absorbed_by_the_invite_transaction() -> None:
    tl = layer()
    invite = incoming("INVITE")
    tl.receive(invite, PHONE, 0.0)
    tl.respond(KEY, make_response(invite, 486, to_tag="t"), 0.0)
    ack = incoming("ACK")
    assert tl.receive(ack, PHONE, 0.1) == [
        CancelTimer(KEY, TimerName.G),
        CancelTimer(KEY, TimerName.H),
        StartTimer(KEY, TimerName.I, 5.0),
    ]
    assert tl.receive(ack, PHONE, 0.2) == []
    assert tl.on_timer(KEY, TimerName.I, 5.1) == [Deliver(TransactionTerminated(KEY))]
    assert tl.receive(ack, PHONE, 6.0) == [Deliver(AckReceived(ack, PHONE))]  # outlived the transaction


def test_ack_for_2xx_goes_up() -> None:
    tl = layer()
    invite = incoming("INVITE")
    tl.receive(invite, PHONE, 0.0)
    tl.respond(KEY, make_response(invite, 200, to_tag="t"), 0.0)
    own_branch_ack = incoming("ACK", "z9hG4bKp2", cseq=1)
    assert tl.receive(own_branch_ack, PHONE, 0.1) == [Deliver(AckReceived(own_branch_ack, PHONE))]
    same_branch_ack = incoming("ACK")
    assert tl.receive(same_branch_ack, PHONE, 0.1) == [Deliver(AckReceived(same_branch_ack, PHONE))]
    assert tl.receive(invite, PHONE, 0.2) == []  # RFC 6026: absorbed in Accepted


def test_cancel_matches_the_invite_transaction() -> None:
    tl = layer()
    tl.receive(incoming("INVITE"), PHONE, 0.0)
    cancel = incoming("CANCEL")
    cancel_key = KEY._replace(method="CANCEL")
    assert tl.receive(cancel, PHONE, 1.0) == [Deliver(CancelReceived(cancel, PHONE, cancel_key, KEY))]
    assert tl.receive(cancel, PHONE, 1.5) == []  # its own transaction absorbs retransmissions
    ok = make_response(cancel, 200, to_tag="t")
    assert tl.respond(cancel_key, ok, 1.5) == [Send(ok, PHONE), StartTimer(cancel_key, TimerName.J, 32.0)]
    assert tl.receive(cancel, PHONE, 2.0) == [Send(ok, PHONE)]


@pytest.mark.parametrize(
    "cancel",
    [incoming("CANCEL", "z9hG4bKother"), incoming("CANCEL", sent_by="elsewhere.example.com:5062")],
    ids=["other-branch", "other-sent-by"],
)
def test_cancel_without_matching_invite(cancel: Request) -> None:
    tl = layer()
    tl.receive(incoming("INVITE"), PHONE, 0.0)
    key = server_key(cancel)
    assert tl.receive(cancel, PHONE, 1.0) == [Deliver(CancelReceived(cancel, PHONE, key, None))]


def test_server_transport_failure() -> None:
    tl = layer()
    tl.receive(incoming("INVITE"), PHONE, 0.0)
    assert tl.transport_failed(KEY, 0.0) == [
        CancelTimer(KEY, TimerName.TRYING_100),
        Deliver(TransportFailed(KEY)),
        Deliver(TransactionTerminated(KEY)),
    ]
    assert len(tl) == 0
    assert tl.transport_failed(KEY, 0.0) == []
    assert tl.on_timer(KEY, "TRYING_100", 0.2) == []


def test_a_server_transaction_is_in_progress_until_its_final_response_then_held_until_it_ends() -> None:
    tl = layer()
    options, invite = incoming("OPTIONS", "z9hG4bKo1"), incoming("INVITE")
    okey = ServerKey("z9hG4bKo1", "phone.example.com", 5062, "OPTIONS")
    tl.receive(options, PHONE, 0.0)
    tl.receive(invite, PHONE, 0.0)
    assert (tl.in_progress, len(tl)) == (2, 2)
    tl.respond(KEY, make_response(invite, 180, to_tag="t"), 0.0)
    assert tl.in_progress == 2  # a provisional answer is still work in progress
    tl.respond(okey, make_response(options, 200, to_tag="t"), 0.0)
    tl.respond(KEY, make_response(invite, 486, to_tag="t"), 0.0)
    assert (tl.in_progress, len(tl)) == (0, 2)  # Timer J and the ACK still to wait for
    tl.on_timer(okey, "J", 32.0)
    tl.on_timer(KEY, "H", 32.0)
    assert (tl.in_progress, len(tl)) == (0, 0)


def test_a_client_transaction_is_in_progress_until_its_final_response_then_held_until_timer_k() -> None:
    tl = layer()
    key, _ = tl.request(outgoing("NOTIFY"), PHONE, 0.0)
    assert (tl.in_progress, len(tl)) == (1, 1)
    ok = make_response(with_via(outgoing("NOTIFY"), "z9hG4bKb1"), 200, to_tag="t")
    tl.receive(ok, PHONE, 0.1)
    assert (tl.in_progress, len(tl)) == (0, 1)
    tl.on_timer(key, "K", 5.1)
    assert (tl.in_progress, len(tl)) == (0, 0)


# ------------------------------------------------------------ client side


def test_request_adds_our_via_and_starts_a_transaction() -> None:
    tl = layer()
    key, actions = tl.request(outgoing("NOTIFY"), PHONE, 0.0)
    assert key == ClientKey("z9hG4bKb1", "NOTIFY")
    sent = with_via(outgoing("NOTIFY"), "z9hG4bKb1")
    assert actions == [
        Send(sent, PHONE),
        StartTimer(key, TimerName.E, 0.5),
        StartTimer(key, TimerName.F, 32.0),
    ]
    ok = make_response(sent, 200)
    assert tl.receive(ok, PHONE, 0.1) == [
        CancelTimer(key, TimerName.E),
        CancelTimer(key, TimerName.F),
        StartTimer(key, TimerName.K, 5.0),
        Deliver(ResponseReceived(ok, key)),
    ]
    assert tl.receive(ok, PHONE, 0.2) == []


def test_a_completed_non_invite_client_transaction_keeps_only_its_key_until_timer_k() -> None:
    tl = layer()
    key, _ = tl.request(outgoing("NOTIFY"), PHONE, 0.0)
    machine = weakref.ref(tl._clients[key])
    ok = make_response(with_via(outgoing("NOTIFY"), key.branch), 200)
    tl.receive(ok, PHONE, 0.1)
    gc.collect()
    assert machine() is None  # the machine and its timer ledger are gone; the key waits K out
    assert (key in tl, len(tl), tl.in_progress) == (True, 1, 0)
    # 17.1.2.2: Completed absorbs retransmitted responses, transport errors and stray E/F timers.
    assert tl.receive(ok, PHONE, 1.0) == []
    assert tl.receive(make_response(with_via(outgoing("NOTIFY"), key.branch), 180), PHONE, 1.1) == []
    assert tl.transport_failed(key, 1.2) == []
    assert tl.on_timer(key, "E", 1.3) == []
    assert tl.on_timer(key, "F", 1.4) == []
    assert key in tl
    assert tl.on_timer(key, "K", 5.1) == [Deliver(TransactionTerminated(key))]
    assert (key in tl, len(tl)) == (False, 0)
    assert tl.on_timer(key, "K", 5.2) == []
    assert tl.receive(ok, PHONE, 5.3) == [Deliver(StrayResponse(ok, PHONE))]


def test_a_second_cancel_after_the_cancel_completed_sends_nothing() -> None:
    tl = layer()
    key, _ = tl.request(outgoing("INVITE"), PHONE, 0.0)
    invite = with_via(outgoing("INVITE"), key.branch)
    tl.receive(make_response(invite, 180, to_tag="t"), PHONE, 0.1)
    assert tl.cancel(key, 1.0) != []
    tl.receive(make_response(build_cancel(invite), 200, to_tag="t"), PHONE, 1.2)
    assert tl.cancel(key, 1.3) == []  # the CANCEL waits out timer K: not sent again
    assert tl.on_timer(ClientKey(key.branch, "CANCEL"), "K", 6.2) == []  # internal: not delivered


def test_branch_factory_without_magic_cookie_gets_it() -> None:
    tl = TransactionLayer(
        T, branch_factory=lambda: "abc", local_via=lambda peer: ("tcp", "2001:db8::1", 5060)
    )
    key, actions = tl.request(outgoing("OPTIONS"), PHONE_TCP, 0.0)
    assert key == ClientKey("z9hG4bKabc", "OPTIONS")
    sent = outgoing("OPTIONS").with_headers(
        outgoing("OPTIONS").headers.prepend("Via", "SIP/2.0/TCP [2001:db8::1]:5060;branch=z9hG4bKabc")
    )
    assert actions == [Send(sent, PHONE_TCP), StartTimer(key, TimerName.F, 32.0)]
    assert tl.keys_for(PHONE_TCP) == (key,)
    assert tl.keys_for(PHONE) == ()


def test_ack_request_has_no_transaction() -> None:
    tl = layer()
    key, actions = tl.request(outgoing("ACK"), PHONE, 0.0)
    assert actions == [Send(with_via(outgoing("ACK"), "z9hG4bKb1"), PHONE)]
    assert key not in tl


def test_unmatched_responses_are_stray() -> None:
    tl = layer()
    key, _ = tl.request(outgoing("NOTIFY"), PHONE, 0.0)
    sent = with_via(outgoing("NOTIFY"), key.branch)
    ok = make_response(sent, 200)
    other_method = ok.with_headers(ok.headers.set("CSeq", "1 INFO"))
    unknown = make_response(with_via(outgoing("NOTIFY"), "z9hG4bKnope"), 200)
    no_branch = make_response(
        outgoing("NOTIFY").with_headers(outgoing("NOTIFY").headers.prepend("Via", "SIP/2.0/UDP 192.0.2.1")),
        200,
    )
    for response in (other_method, unknown, no_branch):
        assert tl.receive(response, PHONE, 0.1) == [Deliver(StrayResponse(response, PHONE))]


def test_client_timeout_and_transport_failure_reach_the_tu() -> None:
    tl = layer()
    key, _ = tl.request(outgoing("NOTIFY"), PHONE, 0.0)
    assert tl.on_timer(key, "F", 32.0) == [
        CancelTimer(key, TimerName.E),
        Deliver(TransactionTimedOut(key)),
        Deliver(TransactionTerminated(key)),
    ]
    assert len(tl) == 0
    assert tl.on_timer(key, "E", 32.0) == []
    key2, _ = tl.request(outgoing("NOTIFY", 2), PHONE_TCP, 0.0)
    assert tl.transport_failed(key2, 0.0) == [
        CancelTimer(key2, TimerName.F),
        Deliver(TransportFailed(key2)),
        Deliver(TransactionTerminated(key2)),
    ]
    assert tl.transport_failed(key2, 0.0) == []


def test_cancel_in_proceeding_sends_cancel_and_rearms_b() -> None:
    tl = layer()
    key, _ = tl.request(outgoing("INVITE"), PHONE, 0.0)
    invite = with_via(outgoing("INVITE"), key.branch)
    tl.receive(make_response(invite, 180, to_tag="t"), PHONE, 0.1)
    cancel_key = ClientKey(key.branch, "CANCEL")
    assert tl.cancel(key, 1.0) == [
        StartTimer(key, TimerName.B, 32.0),
        Send(build_cancel(invite), PHONE),
        StartTimer(cancel_key, TimerName.E, 0.5),
        StartTimer(cancel_key, TimerName.F, 32.0),
    ]
    assert tl.cancel(key, 1.1) == []  # already cancelled
    ok = make_response(build_cancel(invite), 200, to_tag="t")
    # The CANCEL's own transaction is internal: its response is not delivered.
    assert tl.receive(ok, PHONE, 1.2) == [
        CancelTimer(cancel_key, TimerName.E),
        CancelTimer(cancel_key, TimerName.F),
        StartTimer(cancel_key, TimerName.K, 5.0),
    ]
    assert tl.on_timer(cancel_key, "K", 6.2) == []
    terminated = make_response(invite, 487, to_tag="t")
    actions = tl.receive(terminated, PHONE, 1.3)
    assert actions[-1] == Deliver(ResponseReceived(terminated, key))
    assert CancelTimer(key, TimerName.B) in actions


def test_cancel_in_calling_waits_for_a_provisional() -> None:
    tl = layer()
    key, _ = tl.request(outgoing("INVITE"), PHONE, 0.0)
    invite = with_via(outgoing("INVITE"), key.branch)
    assert tl.cancel(key, 0.1) == []
    trying = make_response(invite, 100)
    cancel_key = ClientKey(key.branch, "CANCEL")
    assert tl.receive(trying, PHONE, 0.2) == [
        CancelTimer(key, TimerName.A),
        CancelTimer(key, TimerName.B),
        Deliver(ResponseReceived(trying, key)),
        StartTimer(key, TimerName.B, 32.0),
        Send(build_cancel(invite), PHONE),
        StartTimer(cancel_key, TimerName.E, 0.5),
        StartTimer(cancel_key, TimerName.F, 32.0),
    ]
    # The CANCEL's time-out stays inside; the INVITE's re-armed timer B ends the INVITE.
    assert tl.on_timer(cancel_key, "F", 32.2) == [CancelTimer(cancel_key, TimerName.E)]
    assert tl.on_timer(key, "B", 32.2) == [
        Deliver(TransactionTimedOut(key)),
        Deliver(TransactionTerminated(key)),
    ]


def test_cancel_in_calling_then_final_sends_nothing() -> None:
    tl = layer()
    key, _ = tl.request(outgoing("INVITE"), PHONE, 0.0)
    invite = with_via(outgoing("INVITE"), key.branch)
    tl.cancel(key, 0.1)
    ok = make_response(invite, 200, to_tag="t")
    assert tl.receive(ok, PHONE, 0.2) == [
        CancelTimer(key, TimerName.A),
        CancelTimer(key, TimerName.B),
        StartTimer(key, TimerName.M, 32.0),
        Deliver(ResponseReceived(ok, key)),
    ]
    assert tl.cancel(key, 0.3) == []  # a final response came: nothing to cancel


def test_cancel_of_ended_or_non_invite_transactions() -> None:
    tl = layer()
    assert tl.cancel(ClientKey("z9hG4bKgone", "INVITE"), 0.0) == []
    key, _ = tl.request(outgoing("NOTIFY"), PHONE, 0.0)
    with pytest.raises(ProtocolStateError):
        tl.cancel(key, 0.0)


# ------------------------------------------- a client and a server over a lossy link


@attrs.define
class Link:
    """Two transaction layers joined by a zero-delay link that drops what ``lose`` says.

    Timers run on one simulated clock; the server's TU answers every new request
    with ``answer`` (a status) at once.
    """

    client: TransactionLayer
    server: TransactionLayer
    lose: Callable[[Message, float], bool]
    answer: int = 200
    now: float = 0.0
    timers: list[tuple[float, int, str, Hashable, str]] = attrs.Factory(list)
    armed: dict[tuple[str, Hashable, str], int] = attrs.Factory(dict)
    sent: list[tuple[float, Message]] = attrs.Factory(list)
    events: list[object] = attrs.Factory(list)
    seq: itertools.count[int] = attrs.Factory(itertools.count)

    def run(self, side: str, actions: list[Action]) -> None:
        for action in actions:
            match action:
                case Send(message=message):
                    self.sent.append((self.now, message))
                    if not self.lose(message, self.now):
                        target = "server" if side == "client" else "client"
                        peer = SERVER if target == "server" else PHONE
                        self.run(target, self.layer(target).receive(message, peer, self.now))
                case StartTimer(key=key, name=name, delay=delay):
                    token = next(self.seq)
                    self.armed[side, key, name] = token
                    heapq.heappush(self.timers, (self.now + delay, token, side, key, name))
                case CancelTimer(key=key, name=name):
                    self.armed.pop((side, key, name), None)
                case Deliver(event=event):
                    self.events.append(event)
                    if side == "server" and isinstance(event, RequestReceived):
                        response = make_response(event.request, self.answer, to_tag="uas")
                        self.run("server", self.server.respond(event.key, response, self.now))

    def layer(self, side: str) -> TransactionLayer:
        return self.client if side == "client" else self.server

    def advance_to(self, until: float) -> None:
        while self.timers and self.timers[0][0] <= until:
            due, token, side, key, name = heapq.heappop(self.timers)
            if self.armed.get((side, key, name)) != token:
                continue  # cancelled or re-armed
            del self.armed[side, key, name]
            self.now = due
            assert isinstance(key, ClientKey | ServerKey)
            self.run(side, self.layer(side).on_timer(key, name, due))
        self.now = until

    def request_times(self, method: str) -> list[float]:
        return [
            when for when, message in self.sent if isinstance(message, Request) and message.method == method
        ]


def lose_responses(message: Message, now: float) -> bool:
    return isinstance(message, Response)


def test_lost_responses_non_invite_retransmits_with_t1_doubling_to_t2_then_times_out() -> None:
    link = Link(layer("c"), layer("s", "192.0.2.10"), lose_responses)
    key, actions = link.client.request(outgoing("NOTIFY"), SERVER, 0.0)
    link.run("client", actions)
    link.advance_to(31.9)
    assert link.request_times("NOTIFY") == [0.0, 0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
    assert TransactionTimedOut(key) not in link.events
    link.advance_to(32.0)
    assert link.events[-2:] == [TransactionTimedOut(key), TransactionTerminated(key)]
    # The server answered the first copy and repeated its 200 for each retransmission.
    server_events = [event for event in link.events if isinstance(event, RequestReceived)]
    assert len(server_events) == 1
    responses = [when for when, message in link.sent if isinstance(message, Response)]
    assert responses == link.request_times("NOTIFY")
    link.advance_to(100.0)
    assert len(link.client) == 0
    assert len(link.server) == 0


def test_lost_invite_responses_double_timer_a_without_cap_then_time_out() -> None:
    link = Link(layer("c"), layer("s", "192.0.2.10"), lose_responses, answer=486)
    key, actions = link.client.request(outgoing("INVITE"), SERVER, 0.0)
    link.run("client", actions)
    link.advance_to(31.9)
    assert link.request_times("INVITE") == [0.0, 0.5, 1.5, 3.5, 7.5, 15.5, 31.5]
    link.advance_to(32.0)
    assert link.events[-2:] == [TransactionTimedOut(key), TransactionTerminated(key)]
    # The server kept retransmitting its 486 on timer G (T1 doubling to T2) and then gave up on H.
    link.advance_to(40.0)
    server_key_ = next(e.key for e in link.events if isinstance(e, RequestReceived))
    assert TransactionTimedOut(server_key_) in link.events


def test_first_response_lost_retransmission_recovers() -> None:
    lost_once: list[Message] = []

    def lose_first_response(message: Message, now: float) -> bool:
        if isinstance(message, Response) and not lost_once:
            lost_once.append(message)
            return True
        return False

    link = Link(layer("c"), layer("s", "192.0.2.10"), lose_first_response)
    key, actions = link.client.request(outgoing("NOTIFY"), SERVER, 0.0)
    link.run("client", actions)
    link.advance_to(0.5)
    assert link.request_times("NOTIFY") == [0.0, 0.5]
    delivered = [event for event in link.events if isinstance(event, ResponseReceived)]
    assert [(event.key, event.response.status) for event in delivered] == [(key, 200)]
    link.advance_to(5.5)
    assert link.events[-1] == TransactionTerminated(key)
    assert len(link.client) == 0
    link.advance_to(40.0)
    assert len(link.server) == 0


def test_invite_2xx_over_lossless_link_ends_both_sides_after_64_t1() -> None:
    link = Link(layer("c"), layer("s", "192.0.2.10"), lambda message, now: False)
    key, actions = link.client.request(outgoing("INVITE"), SERVER, 0.0)
    link.run("client", actions)
    assert [type(event) for event in link.events] == [RequestReceived, ResponseReceived]
    link.advance_to(32.0)
    assert TransactionTerminated(key) in link.events
    assert len(link.client) == 0
    assert len(link.server) == 0


@settings(max_examples=60, deadline=None)
@given(
    method=st.sampled_from(["INVITE", "NOTIFY"]),
    answer=st.sampled_from([200, 404]),
    drops=st.lists(st.booleans(), max_size=12),
)
def test_any_loss_pattern_ends_in_one_final_or_a_time_out(
    method: str, answer: int, drops: list[bool]
) -> None:
    pattern = iter(drops)

    def lose(message: Message, now: float) -> bool:
        return next(pattern, False)

    link = Link(layer("c"), layer("s", "192.0.2.10"), lose, answer=answer)
    key, actions = link.client.request(outgoing(method), SERVER, 0.0)
    link.run("client", actions)
    link.advance_to(200.0)
    finals = [e for e in link.events if isinstance(e, ResponseReceived) and e.response.status >= 200]
    timed_out = TransactionTimedOut(key) in link.events
    assert timed_out != bool(finals)
    if finals and not (method == "INVITE" and answer == 200):
        assert len(finals) == 1  # retransmitted finals are absorbed (a 2xx to INVITE goes up each time)
    assert link.events.count(TransactionTerminated(key)) == 1
    assert len(link.client) == 0
    assert len(link.server) == 0


@pytest.mark.parametrize("host", ["192.0.2.1", "2001:db8::1", "sca.example.com"])
@pytest.mark.parametrize("transport", [Transport.UDP, Transport.TCP, Transport.TLS])
def test_our_via_is_remembered_as_the_value_its_text_parses_to(host: str, transport: Transport) -> None:
    """The Via we put on a request is not parsed again when a response brings it back: the
    remembered value must be the one parsing its text gives, and the response still matches."""
    transactions = layer(host=host)
    peer = Peer(transport, "192.0.2.10", 5060)
    key, actions = transactions.request(outgoing("NOTIFY"), peer, 0.0)
    sent = next(a.message for a in actions if isinstance(a, Send) and isinstance(a.message, Request))
    text = sent.headers.first_value("Via")
    assert text is not None
    assert parse_via(text) == parse_via_text(text)
    delivered = [
        a.event for a in transactions.receive(make_response(sent, 200), peer, 0.0) if isinstance(a, Deliver)
    ]
    assert [type(event) for event in delivered] == [ResponseReceived]
    assert isinstance(delivered[0], ResponseReceived) and delivered[0].key == key


def test_client_keys_of_one_branch_are_told_apart_by_method() -> None:
    """A CANCEL's key shares its INVITE's branch: the method tells them apart."""
    invite, cancel = ClientKey("z9hG4bK-1", "INVITE"), ClientKey("z9hG4bK-1", "CANCEL")
    assert invite != cancel
    table = {invite: "invite", cancel: "cancel"}
    assert table[ClientKey("z9hG4bK-1", "INVITE")] == "invite"
    assert table[ClientKey("z9hG4bK-1", "CANCEL")] == "cancel"
    assert ClientKey("z9hG4bK-2", "INVITE") not in table


def test_client_and_server_keys_of_one_branch_are_different_keys() -> None:
    """The layer's settled set and the stack's timers hold both kinds of key: a client key never
    equals a server key of the same branch and method."""
    client = ClientKey("z9hG4bK-1", "NOTIFY")
    server = ServerKey("z9hG4bK-1", "192.0.2.10", 5060, "NOTIFY")
    table: dict[object, str] = {client: "client", server: "server"}
    either: list[object] = [client, server]
    assert len(table) == 2 and either[0] != either[1] and either[1] != either[0]
    assert table[ClientKey("z9hG4bK-1", "NOTIFY")] == "client"
    assert table[ServerKey("z9hG4bK-1", "192.0.2.10", 5060, "NOTIFY")] == "server"
