"""SIP over TCP: framing across chunks, size limit, slow sender, idle timeout, keep-alives, dialing."""

from __future__ import annotations

import itertools
from typing import cast

import pytest
from hypothesis import given
from hypothesis import strategies as st
from twisted.internet.interfaces import IConnector
from twisted.internet.protocol import ClientFactory, ServerFactory
from twisted.internet.task import Clock

from scaserver.edge.stack import KeepAliveCounts, Transports
from scaserver.edge.tcp import SipStreamFactory, SipStreamProtocol, StreamLimits, TcpDialer
from scaserver.sip.errors import ProtocolStateError
from scaserver.sip.message import Peer, Transport
from tests.unit.edge.doubles import LogCapture, RecordingSink, connect, failure, string_transport, written

PEER = Peer(Transport.TCP, "192.0.2.20", 40000)
LIMITS = StreamLimits(
    max_message_size=2048, idle_timeout=600.0, slow_sender_timeout=10.0, unvouched_idle_timeout=600.0
)


def message(body: bytes = b"", call_id: str = "c1") -> bytes:
    return (
        b"OPTIONS sip:demo.scaserver.test SIP/2.0\r\n"
        b"Via: SIP/2.0/TCP 192.0.2.20:40000;branch=z9hG4bK-1\r\n"
        b"Call-ID: " + call_id.encode() + b"\r\n"
        b"CSeq: 1 OPTIONS\r\n"
        b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
    )


class Connection:
    def __init__(self, limits: StreamLimits = LIMITS, host: str = "192.0.2.20") -> None:
        self.clock = Clock()
        self.sink = RecordingSink()
        self.transports = Transports()
        self.capture = LogCapture()
        self.keepalives = KeepAliveCounts()
        factory = SipStreamFactory(self.sink, self.transports, limits, self.clock, keepalives=self.keepalives)
        protocol = factory.buildProtocol(None)
        assert protocol is not None
        self.protocol = protocol
        self.wire = string_transport(host, 40000)
        connect(self.protocol, self.wire)
        self.protocol._log = self.capture.logger()

    def lose(self) -> None:
        self.protocol.connectionLost(failure(ConnectionError("gone")))


def test_accepted_connection_is_registered_by_its_remote_address() -> None:
    conn = Connection()
    assert conn.protocol.peer == PEER
    assert conn.transports.stream_to(PEER) is conn.protocol


def test_ipv6_peer() -> None:
    conn = Connection(host="2001:db8::20")
    assert conn.protocol.peer == Peer(Transport.TCP, "2001:db8::20", 40000)


def test_messages_are_framed_across_chunk_boundaries() -> None:
    conn = Connection()
    data = message(b"v=0\r\n", "a") + message(b"", "b")
    for index in range(0, len(data), 7):
        conn.protocol.dataReceived(data[index : index + 7])
    assert conn.sink.received == [(message(b"v=0\r\n", "a"), PEER), (message(b"", "b"), PEER)]


def test_two_messages_in_one_chunk() -> None:
    conn = Connection()
    conn.protocol.dataReceived(message(call_id="a") + message(call_id="b"))
    assert [data for data, _ in conn.sink.received] == [message(call_id="a"), message(call_id="b")]


def test_oversize_message_closes_without_an_answer() -> None:
    conn = Connection()
    conn.protocol.dataReceived(message(b"x" * 3000))
    assert conn.sink.received == []
    assert conn.wire.disconnecting
    assert written(conn.wire) == b""
    assert conn.capture.levels() == ["warn"]
    assert conn.capture.texts()[0].startswith("framing lost on tcp:192.0.2.20:40000:")


def test_missing_content_length_closes_and_later_bytes_are_ignored() -> None:
    conn = Connection()
    conn.protocol.dataReceived(b"OPTIONS sip:x SIP/2.0\r\nCall-ID: a\r\n\r\n")
    assert conn.wire.disconnecting
    conn.protocol.dataReceived(message())
    assert conn.sink.received == []


def test_slow_sender_is_disconnected_after_the_timeout() -> None:
    conn = Connection()
    conn.protocol.dataReceived(message()[:20])
    conn.clock.advance(5)
    conn.protocol.dataReceived(message()[20:30])  # more partial bytes do not restart the clock
    conn.clock.advance(4.9)
    assert not conn.wire.disconnecting
    conn.clock.advance(0.1)
    assert conn.wire.disconnecting
    assert "left a partial message of 30 octets for 10.0 s; closing" in conn.capture.texts()[-1]


def test_completed_message_stops_the_slow_sender_clock() -> None:
    conn = Connection()
    data = message()
    conn.protocol.dataReceived(data[:20])
    conn.clock.advance(9)
    conn.protocol.dataReceived(data[20:])
    conn.clock.advance(60)
    assert not conn.wire.disconnecting
    assert len(conn.sink.received) == 1


def test_a_new_partial_message_after_a_complete_one_gets_a_fresh_slow_sender_clock() -> None:
    conn = Connection()
    data = message()
    conn.protocol.dataReceived(data[:20])
    conn.clock.advance(9)
    conn.protocol.dataReceived(data[20:] + data[:20])
    conn.clock.advance(9)
    assert not conn.wire.disconnecting
    conn.clock.advance(1)
    assert conn.wire.disconnecting


def test_idle_connection_is_closed_and_traffic_postpones_it() -> None:
    conn = Connection(StreamLimits(idle_timeout=30.0))
    conn.clock.advance(20)
    conn.protocol.dataReceived(message())
    conn.clock.advance(20)
    conn.protocol.send(b"SIP/2.0 200 OK\r\n\r\n")
    conn.clock.advance(29)
    assert not conn.wire.disconnecting
    conn.clock.advance(1)
    assert conn.wire.disconnecting
    assert conn.capture.texts()[-1] == "TCP connection with tcp:192.0.2.20:40000 idle for 30.0 s; closing"


def test_double_crlf_ping_gets_a_crlf_pong_and_is_no_message() -> None:
    conn = Connection()
    conn.protocol.dataReceived(b"\r\n\r\n")
    conn.protocol.dataReceived(b"\r\n\r\n\r\n\r\n")
    assert written(conn.wire) == b"\r\n" * 3
    assert conn.sink.received == []
    assert conn.keepalives.received["double-crlf"] == 3


def test_connection_lost_unregisters_and_tells_the_sink() -> None:
    conn = Connection()
    conn.protocol.dataReceived(message()[:10])
    conn.lose()
    assert conn.transports.stream_to(PEER) is None
    assert conn.sink.lost == [PEER]
    assert conn.clock.getDelayedCalls() == []


def test_send_after_close_is_dropped_with_a_warning() -> None:
    conn = Connection()
    conn.protocol.close()
    conn.protocol.send(b"late")
    assert written(conn.wire) == b""
    assert conn.capture.texts()[-1] == "TCP connection with tcp:192.0.2.20:40000 closing: message dropped"


def test_peer_before_connection_is_a_state_error() -> None:
    protocol = SipStreamProtocol(RecordingSink(), Transports(), LIMITS, Clock())
    with pytest.raises(ProtocolStateError):
        _ = protocol.peer


class FakeTcpReactor:
    def __init__(self) -> None:
        self.connects: list[tuple[str, int, ClientFactory, float]] = []

    def listenTCP(self, port: int, factory: ServerFactory, backlog: int = 50, interface: str = "") -> object:  # noqa: N802
        raise AssertionError("not used")

    def connectTCP(  # noqa: N802
        self,
        host: str,
        port: int,
        factory: ClientFactory,
        timeout: float = 30,
        bindAddress: tuple[str, int] | None = None,  # noqa: N803
    ) -> object:
        self.connects.append((host, port, factory, timeout))
        return object()


def test_dialer_connects_flushes_the_queue_and_registers_under_the_dialed_peer() -> None:
    sink, transports, clock = RecordingSink(), Transports(), Clock()
    reactor = FakeTcpReactor()
    streams = SipStreamFactory(sink, transports, LIMITS, clock)
    transports.set_dialer(TcpDialer(reactor, streams, connect_timeout=5))
    target = Peer(Transport.TCP, "192.0.2.99", 5060)
    transports.send(b"REQUEST", target)
    [(host, port, factory, timeout)] = reactor.connects
    assert (host, port, timeout) == ("192.0.2.99", 5060, 5)
    protocol = factory.buildProtocol(None)
    assert protocol is not None
    wire = string_transport("192.0.2.99", 5060)
    connect(protocol, wire)
    assert written(wire) == b"REQUEST"
    transports.send(b"NEXT", target)
    assert written(wire) == b"REQUESTNEXT"


def test_failed_dial_drops_the_queue_and_reports_connection_lost() -> None:
    sink, transports, clock = RecordingSink(), Transports(), Clock()
    reactor = FakeTcpReactor()
    dialer = TcpDialer(reactor, SipStreamFactory(sink, transports, LIMITS, clock))
    capture = LogCapture()
    dialer._log = capture.logger()
    transports.set_dialer(dialer)
    target = Peer(Transport.TCP, "192.0.2.99", 5060)
    transports.send(b"REQUEST", target)
    [(_, _, factory, _)] = reactor.connects
    factory.clientConnectionFailed(cast(IConnector, object()), failure(ConnectionRefusedError("refused")))
    assert sink.lost == [target]
    assert capture.texts()[-1].startswith("cannot connect to tcp:192.0.2.99:5060:")
    assert capture.texts()[-1].endswith("; 1 message(s) dropped")


@given(
    bodies=st.lists(st.binary(max_size=40), min_size=1, max_size=4),
    cuts=st.lists(st.integers(min_value=1, max_value=600), max_size=12),
)
def test_any_chunking_of_a_stream_yields_the_same_messages(bodies: list[bytes], cuts: list[int]) -> None:
    conn = Connection()
    messages = [message(body, f"m{index}") for index, body in enumerate(bodies)]
    stream = b"".join(messages)
    points = sorted({cut % len(stream) for cut in cuts} | {0, len(stream)})
    for start, end in itertools.pairwise(points):
        conn.protocol.dataReceived(stream[start:end])
    assert [data for data, _ in conn.sink.received] == messages
    assert not conn.wire.disconnecting
