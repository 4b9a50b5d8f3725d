"""SipStack: actions executed in order, timers on the injected clock, one catch-all per entry point."""

from __future__ import annotations

from collections.abc import Hashable

import attrs
import pytest
from twisted.internet.task import Clock

from scaserver.edge.stack import Direction, SipStack, Transports
from scaserver.events import EventBus
from scaserver.guard.sources import Ban, BanReason
from scaserver.sip import stun
from scaserver.sip.actions import Action, CancelTimer, Deliver, Fact, Send, StartTimer
from scaserver.sip.message import Headers, Peer, Response, Transport
from scaserver.sip.serializer import serialize
from scaserver.sip.serverlocation import NextHopFailed
from tests.unit.edge.doubles import (
    PEER_V4,
    TCP_PEER,
    FakeCore,
    LogCapture,
    RecordingDatagram,
    RecordingStream,
    options,
)


@attrs.frozen
class Noted(Fact):
    """A fact of the test's own."""

    name: str


def build(core: FakeCore) -> tuple[SipStack, Clock, RecordingDatagram, list[object]]:
    clock = Clock()
    transports = Transports()
    datagram = RecordingDatagram()
    transports.add_datagram(datagram)
    bus = EventBus()
    published: list[object] = []
    bus.subscribe(object, published.append)
    return SipStack(core, clock, transports, bus), clock, datagram, published


def test_bytes_go_to_the_core_with_the_clock_time() -> None:
    core = FakeCore()
    stack, clock, _, _ = build(core)
    clock.advance(12.5)
    stack.bytes_received(b"OPTIONS", PEER_V4)
    assert core.received == [(b"OPTIONS", PEER_V4, 12.5)]


def test_send_is_serialized_and_written_to_the_peer() -> None:
    message = options()
    core = FakeCore(on_receive=lambda data, peer, now: [Send(message, peer)])
    stack, _, datagram, _ = build(core)
    stack.bytes_received(b"x", PEER_V4)
    assert datagram.sent == [(serialize(message), PEER_V4)]


def test_deliver_is_published_on_the_bus() -> None:
    core = FakeCore(on_receive=lambda data, peer, now: [Deliver(Noted("event-1")), Deliver(Noted("event-2"))])
    stack, _, _, published = build(core)
    stack.bytes_received(b"x", PEER_V4)
    assert published == [Noted("event-1"), Noted("event-2")]


def test_timer_fires_back_into_the_core_with_key_name_and_now() -> None:
    core = FakeCore(on_receive=lambda data, peer, now: [StartTimer("tx1", "E", 0.5)])
    stack, clock, _, _ = build(core)
    stack.bytes_received(b"x", PEER_V4)
    assert stack.armed_timers == {("tx1", "E")}
    clock.advance(0.4)
    assert core.fired == []
    clock.advance(0.1)
    assert core.fired == [("tx1", "E", 0.5)]
    assert stack.armed_timers == frozenset()


def test_rearming_replaces_the_pending_timer() -> None:
    stack, clock, _, _ = build(core := FakeCore())
    stack.run([StartTimer("tx1", "E", 0.5)])
    clock.advance(0.3)
    stack.run([StartTimer("tx1", "E", 1.0)])
    clock.advance(0.5)
    assert core.fired == []
    clock.advance(0.5)
    assert core.fired == [("tx1", "E", 1.3)]
    clock.advance(10)
    assert len(core.fired) == 1


def test_cancel_stops_the_timer_and_unknown_cancel_is_harmless() -> None:
    stack, clock, _, _ = build(core := FakeCore())
    stack.run([StartTimer("tx1", "E", 0.5), StartTimer("tx1", "F", 32.0), CancelTimer("tx1", "E")])
    stack.run([CancelTimer("tx9", "B")])
    clock.advance(1)
    assert core.fired == []
    assert stack.armed_timers == {("tx1", "F")}


def test_same_name_under_different_keys_are_separate_timers() -> None:
    stack, clock, _, _ = build(core := FakeCore())
    stack.run([StartTimer("tx1", "J", 1.0), StartTimer("tx2", "J", 2.0)])
    clock.advance(2)
    assert [(key, name) for key, name, _ in core.fired] == [("tx1", "J"), ("tx2", "J")]


def test_actions_returned_by_a_timer_are_run() -> None:
    message = options()

    def fire(key: Hashable, name: str, now: float) -> list[Action]:
        return [Send(message, PEER_V4), StartTimer(key, name, 1.0)] if now < 2 else []

    core = FakeCore(on_fire=fire)
    stack, clock, datagram, _ = build(core)
    stack.run([StartTimer("tx1", "A", 0.5)])
    clock.advance(0.5)
    clock.advance(1.0)
    clock.advance(1.0)
    assert [now for _, _, now in core.fired] == [0.5, 1.5, 2.5]
    assert len(datagram.sent) == 2


def test_a_core_failure_is_logged_and_the_stack_keeps_serving() -> None:
    calls = iter([RuntimeError("boom"), None])

    def receive(data: bytes, peer: Peer, now: float) -> list[Action]:
        error = next(calls)
        if error is not None:
            raise error
        return [Deliver(Noted("ok"))]

    stack, _, _, published = build(FakeCore(on_receive=receive))
    capture = LogCapture()
    stack._log = capture.logger()
    stack.bytes_received(b"x", PEER_V4)
    stack.bytes_received(b"y", PEER_V4)
    assert published == [Noted("ok")]
    assert capture.levels() == ["critical"]
    assert "unhandled error on input from udp:192.0.2.10:5060" in capture.texts()[0]


def test_a_timer_failure_is_logged_and_later_timers_still_fire() -> None:
    def fire(key: Hashable, name: str, now: float) -> list[Action]:
        if key == "bad":
            raise ValueError("bad timer")
        return []

    core = FakeCore(on_fire=fire)
    stack, clock, _, _ = build(core)
    capture = LogCapture()
    stack._log = capture.logger()
    stack.run([StartTimer("bad", "B", 1.0), StartTimer("good", "B", 2.0)])
    clock.advance(2)
    assert [key for key, _, _ in core.fired] == ["bad", "good"]
    assert capture.levels() == ["critical"]


def test_connection_lost_goes_to_the_core_and_a_failure_there_is_logged() -> None:
    core = FakeCore()
    stack, clock, _, _ = build(core)
    clock.advance(3)
    stack.connection_lost(TCP_PEER)
    assert core.lost == [(TCP_PEER, 3.0)]

    def broken(peer: Peer, now: float) -> list[Action]:
        raise RuntimeError("broken")

    core.on_lost = broken
    capture = LogCapture()
    stack._log = capture.logger()
    stack.connection_lost(TCP_PEER)
    assert capture.levels() == ["critical"]


def test_trace_sees_every_message_in_and_out() -> None:
    message = options()
    seen: list[tuple[Direction, bytes, Peer]] = []
    core = FakeCore(on_receive=lambda data, peer, now: [Send(message, peer)])
    transports = Transports()
    transports.add_datagram(RecordingDatagram())
    stack = SipStack(
        core,
        Clock(),
        transports,
        EventBus(),
        trace=lambda direction, data, peer: seen.append((direction, data, peer)),
    )
    stack.bytes_received(b"INVITE", PEER_V4)
    assert seen == [("in", b"INVITE", PEER_V4), ("out", serialize(message), PEER_V4)]


def test_stop_cancels_timers_and_closes_connections() -> None:
    core = FakeCore()
    clock = Clock()
    transports = Transports()
    stream = RecordingStream(TCP_PEER)
    transports.add_stream(stream)
    stack = SipStack(core, clock, transports, EventBus())
    stack.startService()
    stack.run([StartTimer("tx1", "F", 1.0)])
    stack.stopService()
    clock.advance(5)
    assert core.fired == []
    assert stream.closed
    assert not stack.running


@pytest.mark.parametrize("delay", [-1.0, 0.0])
def test_non_positive_delays_fire_on_the_next_turn(delay: float) -> None:
    stack, clock, _, _ = build(core := FakeCore())
    stack.run([StartTimer("tx1", "K", delay)])
    assert core.fired == []
    clock.advance(0)
    assert core.fired == [("tx1", "K", 0.0)]


def test_a_message_that_cannot_be_sent_fails_its_peer_in_the_core() -> None:
    nowhere = Peer(PEER_V4.transport, "no-such-host.invalid", 5060)
    core = FakeCore(on_receive=lambda data, peer, now: [Send(options(), nowhere)])
    stack, clock, datagram, _ = build(core)
    stack.bytes_received(b"x", PEER_V4)
    assert datagram.sent == []
    assert core.lost == []  # not re-entered while the actions of this input run
    clock.advance(0)
    assert core.lost == [(nowhere, 0.0)]


# Keep-alives (RFC 5626 section 4.4, 8.4): never for the core.


def test_crlf_keepalive_datagram_is_counted_not_parsed_nor_answered() -> None:
    core = FakeCore()
    stack, _, datagram, published = build(core)
    capture = LogCapture()
    stack._log = capture.logger()
    stack.bytes_received(b"\r\n", PEER_V4)
    stack.bytes_received(b"\r\n\r\n", PEER_V4)
    assert core.received == [] and datagram.sent == [] and published == []
    assert stack.keepalives.received["crlf"] == 2
    assert set(capture.levels()) <= {"debug"}


def test_stun_binding_request_is_answered_with_the_source_address() -> None:
    core = FakeCore()
    stack, _, datagram, _ = build(core)
    tid = b"0123456789ab"
    stack.bytes_received(stun.binding_request(tid), PEER_V4)
    assert core.received == []
    [(reply, peer)] = datagram.sent
    assert peer == PEER_V4
    mapped = stun.parse(reply).attribute(stun.XOR_MAPPED_ADDRESS)
    assert mapped is not None
    assert stun.read_xor_address(mapped, tid) == (PEER_V4.host, PEER_V4.port)
    assert stack.keepalives.received["stun"] == 1


def test_malformed_stun_is_dropped_and_counted() -> None:
    core = FakeCore()
    stack, _, datagram, _ = build(core)
    stack.bytes_received(stun.binding_request(b"0123456789ab") + b"\x00\x00", PEER_V4)
    assert core.received == [] and datagram.sent == []
    assert stack.keepalives.stun_dropped == 1


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"OPTIONS sip:a@b SIP/2.0\r\n\r\n",
        b"\r\nOPTIONS sip:a@b SIP/2.0\r\n\r\n",  # CR first, not only CR and LF
        b"\n\r\nx",
        b"\x03" + bytes(19),  # a STUN first octet, no magic cookie
        b"\x00\x01\x00\x00",  # shorter than a STUN header
        b"\x04" + stun.binding_request(b"0123456789ab")[1:],  # first two bits not zero
    ],
)
def test_a_udp_datagram_neither_crlf_nor_stun_goes_to_the_core(data: bytes) -> None:
    core = FakeCore()
    stack, _, datagram, _ = build(core)
    stack.bytes_received(data, PEER_V4)
    assert core.received == [(data, PEER_V4, 0.0)]
    assert datagram.sent == []
    assert stack.keepalives.received == {"crlf": 0, "stun": 0, "double-crlf": 0}
    assert stack.keepalives.stun_dropped == 0


def test_crlf_on_a_stream_is_the_framers_not_a_udp_keepalive() -> None:
    core = FakeCore()
    stack, _, _, _ = build(core)
    stack.bytes_received(b"\r\n", TCP_PEER)
    assert core.received == [(b"\r\n", TCP_PEER, 0.0)]


def test_a_sips_request_is_never_written_to_a_cleartext_peer() -> None:
    message = attrs.evolve(options(), uri="sips:bob@demo.scaserver.test")
    core = FakeCore(on_receive=lambda data, peer, now: [Send(message, peer)])
    stack, clock, datagram, _ = build(core)
    capture = LogCapture()
    stack._log = capture.logger()
    stack.bytes_received(b"x", PEER_V4)
    clock.advance(0)
    assert datagram.sent == []
    assert core.lost == [(PEER_V4, 0.0)]  # the transaction fails at once, as on a transport error
    assert capture.texts() == [f"sips: request to {PEER_V4} refused: not over TLS; transaction failed"]


def test_a_sips_request_goes_over_tls() -> None:
    tls_peer = Peer(Transport.TLS, "192.0.2.20", 5061)
    message = attrs.evolve(options(), uri="sips:bob@demo.scaserver.test")
    core = FakeCore(on_receive=lambda data, peer, now: [Send(message, tls_peer)])
    clock, transports = Clock(), Transports()
    stream = RecordingStream(tls_peer)
    transports.add_stream(stream)
    SipStack(core, clock, transports, EventBus()).bytes_received(b"x", PEER_V4)
    assert stream.sent == [serialize(message)]


@attrs.frozen
class _LateSend(Send):
    pass


@attrs.frozen
class _LateTimer(StartTimer):
    pass


@attrs.frozen
class _LateCancel(CancelTimer):
    pass


@attrs.frozen
class _LateDeliver(Deliver):
    pass


def test_an_action_of_a_subclass_is_run_as_its_base_class() -> None:
    message = options()
    stack, _, datagram, published = build(FakeCore())
    stack.run(
        [
            _LateSend(message, PEER_V4),
            _LateTimer("tx1", "E", 0.5),
            _LateTimer("tx2", "F", 0.5),
            _LateCancel("tx2", "F"),
            _LateDeliver(Noted("late")),
        ]
    )
    assert datagram.sent == [(serialize(message), PEER_V4)]
    assert stack.armed_timers == {("tx1", "E")}
    assert published == [Noted("late")]


def test_actions_of_every_kind_run_in_their_order() -> None:
    message = options()
    stack, _, datagram, published = build(FakeCore())
    order: list[str] = []
    stack._bus.subscribe(Noted, lambda fact: order.append(f"fact {fact.name}: {len(datagram.sent)} sent"))
    stack.run(
        [
            Deliver(Noted("first")),
            Send(message, PEER_V4),
            StartTimer("tx1", "E", 0.5),
            CancelTimer("tx1", "E"),
            Deliver(Noted("second")),
            StartTimer("tx1", "F", 1.0),
        ]
    )
    assert order == ["fact first: 0 sent", "fact second: 1 sent"]
    assert published == [Noted("first"), Noted("second")]
    assert stack.armed_timers == {("tx1", "F")}


def test_responses_over_udp_go_to_numeric_peers_and_fail_towards_names_nothing_resolves() -> None:
    request = options()
    ok = Response(200, "OK", Headers(request.headers.fields[:5]))
    unknown = Peer(Transport.UDP, "nowhere.invalid", 5060)
    core = FakeCore(on_receive=lambda data, peer, now: [Send(ok, PEER_V4), Send(ok, unknown)])
    clock = Clock()
    transports = Transports()
    datagram = RecordingDatagram()
    transports.add_datagram(datagram)
    capture = LogCapture()
    transports._log = capture.logger()
    seen: list[tuple[Direction, Peer]] = []
    stack = SipStack(
        core,
        clock,
        transports,
        EventBus(),
        trace=lambda direction, data, peer: seen.append((direction, peer)),
    )
    stack.bytes_received(b"x", PEER_V4)
    assert datagram.sent == [(serialize(ok), PEER_V4)]
    assert seen == [("in", PEER_V4), ("out", PEER_V4), ("out", unknown)]
    assert any("nowhere.invalid" in text for text in capture.texts())
    assert core.lost == []
    clock.advance(0)  # the transaction bound to that peer fails after this run
    assert core.lost == [(unknown, 0.0)]


def test_requests_over_udp_go_to_numeric_peers_and_to_names_with_their_branch() -> None:
    request = options()
    named = Peer(Transport.UDP, "proxy.demo.scaserver.test", 5060)
    v6 = Peer(Transport.UDP, "2001:db8::1", 5060)
    core = FakeCore(
        on_receive=lambda data, peer, now: [Send(request, PEER_V4), Send(request, named), Send(request, v6)]
    )
    clock, transports, datagram = Clock(), Transports(), RecordingDatagram()
    transports.add_datagram(datagram)
    by_name: list[tuple[bytes, Peer, str | None]] = []

    def send(data: bytes, peer: Peer, *, branch: str | None = None) -> bool:
        by_name.append((data, peer, branch))
        return True

    transports.send = send  # type: ignore[method-assign]
    capture = LogCapture()
    transports._log = capture.logger()
    SipStack(core, clock, transports, EventBus()).bytes_received(b"x", PEER_V4)
    assert datagram.sent == [(serialize(request), PEER_V4)]
    assert by_name == [(serialize(request), named, "z9hG4bK-1")]  # its client transaction's target
    assert capture.texts() == [f"no UDP socket for {v6}: message dropped"]
    assert core.lost == []
    clock.advance(0)  # the transaction bound to the peer with no socket fails after this run
    assert core.lost == [(v6, 0.0)]


def test_each_ban_and_failed_next_hop_is_handled_whatever_was_published_before() -> None:
    ban = Ban("192.0.2.99", BanReason.MANUAL, 1.0, 2.0)
    failed = NextHopFailed(Peer(Transport.UDP, "proxy.demo.scaserver.test", 5060), "z9hG4bK-9", "timeout")
    stack, _, _, published = build(FakeCore())
    closed: list[str] = []
    failed_over: list[NextHopFailed] = []
    stack._out.close_streams_from = lambda host: closed.append(host) or 0  # type: ignore[method-assign,func-returns-value]
    stack._out.target_failed = failed_over.append  # type: ignore[method-assign,assignment]
    facts: list[Fact] = [Noted("a"), ban, failed, Noted("b"), ban, failed, Noted("c")]
    stack.run([Deliver(fact) for fact in facts])
    assert published == facts
    assert closed == ["192.0.2.99", "192.0.2.99"]
    assert failed_over == [failed, failed]
