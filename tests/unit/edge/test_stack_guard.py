"""The stack asks the source guard before the core sees a message: a source over its rate is
banned (the ban published, its TCP connections closed), a banned one dropped; a 2xx (not to
OPTIONS) on a TCP connection vouches for it."""

from __future__ import annotations

from twisted.internet.task import Clock

from scaserver.edge.stack import SipStack, Transports
from scaserver.events import EventBus
from scaserver.guard.sources import Ban, BanReason, SecuritySettings, SourceGuard
from scaserver.sip.actions import Deliver, Send
from scaserver.sip.message import Peer, Transport
from scaserver.sip.responses import make_response
from tests.unit.edge.doubles import PEER_V4, FakeCore, RecordingDatagram, RecordingStream, options

FLOODER_TCP = Peer(Transport.TCP, PEER_V4.host, 40001)


def build(core: FakeCore, guard: SourceGuard) -> tuple[SipStack, Clock, Transports, list[object]]:
    clock = Clock()
    transports = Transports()
    transports.add_datagram(RecordingDatagram())
    bus = EventBus()
    published: list[object] = []
    bus.subscribe(object, published.append)
    return SipStack(core, clock, transports, bus, guard=guard), clock, transports, published


def test_a_flooding_source_is_banned_and_dropped_before_the_core() -> None:
    core = FakeCore()
    guard = SourceGuard(SecuritySettings(rate=1.0, burst=3.0, ban_s=60.0))
    stack, clock, transports, published = build(core, guard)
    stream = RecordingStream(FLOODER_TCP)
    transports.add_stream(stream)
    other = Peer(Transport.UDP, "192.0.2.99", 5060)
    for _ in range(10):
        stack.bytes_received(b"OPTIONS", PEER_V4)
    stack.bytes_received(b"OPTIONS", other)
    assert [peer for _, peer, _ in core.received] == [PEER_V4] * 3 + [other]
    [ban] = [event for event in published if isinstance(event, Ban)]
    assert (ban.host, ban.reason) == (PEER_V4.host, BanReason.RATE)
    assert stream.closed  # the banned address's TCP connection too
    assert guard.dropped_total == 7
    clock.advance(60)
    stack.bytes_received(b"OPTIONS", PEER_V4)
    assert len(core.received) == 5  # the ban expired


def test_a_ban_delivered_by_the_core_is_published_and_closes_connections() -> None:
    ban = Ban(PEER_V4.host, BanReason.AUTH, 0.0, 60.0)
    core = FakeCore(on_receive=lambda data, peer, now: [Deliver(ban)])
    stack, _, transports, published = build(core, SourceGuard())
    stream = RecordingStream(FLOODER_TCP)
    transports.add_stream(stream)
    stack.bytes_received(b"REGISTER", FLOODER_TCP)
    assert published == [ban] and stream.closed


def test_a_2xx_on_a_tcp_connection_vouches_for_it_but_not_to_options() -> None:
    stream = RecordingStream(FLOODER_TCP)
    ok = make_response(options(), 200)
    stack, _, transports, _ = build(FakeCore(), SourceGuard())
    transports.add_stream(stream)
    stack.run([Send(ok, FLOODER_TCP)])
    assert not stream.vouched
    register = options().with_headers(options().headers.set("CSeq", "1 REGISTER"))
    stack.run([Send(make_response(register, 401), FLOODER_TCP)])
    assert not stream.vouched
    stack.run([Send(make_response(register, 200), FLOODER_TCP)])
    assert stream.vouched


def test_responses_cost_an_eighth_of_a_request_so_a_notify_fan_out_bans_nobody() -> None:
    """An office behind one NAT address answers a NOTIFY fan-out to 40 of its phones at once:
    40 responses fit a bucket of 10 requests; 40 requests would not."""
    core = FakeCore()
    guard = SourceGuard(SecuritySettings(rate=1.0, burst=10.0, ban_s=60.0))
    stack, _, _, published = build(core, guard)
    for _ in range(40):
        stack.bytes_received(b"SIP/2.0 200 OK\r\n", PEER_V4)
    assert len(core.received) == 40 and published == []
    flooder = Peer(Transport.UDP, "192.0.2.77", 5060)
    for _ in range(40):
        stack.bytes_received(b"NOTIFY sip:x SIP/2.0\r\n", flooder)
    assert len(core.received) == 50
    [ban] = [event for event in published if isinstance(event, Ban)]
    assert ban.host == flooder.host


def test_a_flood_of_responses_is_banned_too() -> None:
    core = FakeCore()
    guard = SourceGuard(SecuritySettings(rate=1.0, burst=10.0, ban_s=60.0))
    stack, _, _, published = build(core, guard)
    for _ in range(200):
        stack.bytes_received(b"SIP/2.0 200 OK\r\n", PEER_V4)
    assert len(core.received) == 80  # ten requests' worth, then banned
    assert [event.host for event in published if isinstance(event, Ban)] == [PEER_V4.host]
