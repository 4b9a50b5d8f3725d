"""SIP over UDP: datagrams in and out, the size limit, write failures logged."""

from __future__ import annotations

import socket
from typing import cast

from twisted.internet.interfaces import IUDPTransport

from scaserver.edge.stack import Transports
from scaserver.edge.udp import UdpTransport
from scaserver.sip.message import Peer, Transport
from tests.unit.edge.doubles import LogCapture, RecordingSink


class FakeUdpSocket:
    def __init__(self, error: Exception | None = None) -> None:
        self.written: list[tuple[bytes, tuple[str, int]]] = []
        self.error = error

    def write(self, packet: bytes, addr: tuple[str, int]) -> None:
        if self.error is not None:
            raise self.error
        self.written.append((packet, addr))


def build(
    host: str = "127.0.0.1", error: Exception | None = None
) -> tuple[UdpTransport, RecordingSink, FakeUdpSocket]:
    sink = RecordingSink()
    protocol = UdpTransport(sink, Transports(), host, max_message_size=1500)
    wire = FakeUdpSocket(error)
    protocol.transport = cast(IUDPTransport, wire)
    return protocol, sink, wire


def test_datagram_goes_to_the_sink_with_its_source() -> None:
    protocol, sink, _ = build()
    protocol.datagramReceived(b"OPTIONS", ("192.0.2.1", 5062))
    assert sink.received == [(b"OPTIONS", Peer(Transport.UDP, "192.0.2.1", 5062))]


def test_ipv6_source_addresses_have_four_fields() -> None:
    protocol, sink, _ = build("::1")
    addr = cast(tuple[str, int], ("2001:db8::1", 5062, 0, 0))
    protocol.datagramReceived(b"OPTIONS", addr)
    assert sink.received == [(b"OPTIONS", Peer(Transport.UDP, "2001:db8::1", 5062))]
    assert protocol.family == socket.AF_INET6


def test_oversize_datagram_is_dropped_with_a_warning() -> None:
    protocol, sink, _ = build()
    capture = LogCapture()
    protocol._log = capture.logger()
    protocol.datagramReceived(b"x" * 1501, ("192.0.2.1", 5062))
    assert sink.received == []
    assert capture.texts() == ["datagram of 1501 bytes from udp:192.0.2.1:5062 exceeds 1500: dropped"]


def test_send_writes_to_the_peer_address() -> None:
    protocol, _, wire = build()
    protocol.send(b"SIP/2.0 200 OK", Peer(Transport.UDP, "192.0.2.1", 5062))
    assert wire.written == [(b"SIP/2.0 200 OK", ("192.0.2.1", 5062))]


def test_a_failed_write_is_logged_not_raised() -> None:
    protocol, _, _ = build(error=OSError(101, "Network is unreachable"))
    capture = LogCapture()
    protocol._log = capture.logger()
    protocol.send(b"x", Peer(Transport.UDP, "192.0.2.1", 5062))
    assert capture.texts() == ["UDP write to udp:192.0.2.1:5062 failed: [Errno 101] Network is unreachable"]


def test_send_on_a_closed_socket_is_logged() -> None:
    protocol, _, _ = build()
    protocol.transport = None
    capture = LogCapture()
    protocol._log = capture.logger()
    protocol.send(b"x", Peer(Transport.UDP, "192.0.2.1", 5062))
    assert capture.texts() == ["UDP socket closed: message to udp:192.0.2.1:5062 dropped"]


def test_start_and_stop_register_the_socket() -> None:
    transports = Transports()
    protocol = UdpTransport(RecordingSink(), transports, "127.0.0.1", 1500)
    wire = FakeUdpSocket()
    protocol.transport = cast(IUDPTransport, wire)
    protocol.startProtocol()
    transports.send(b"x", Peer(Transport.UDP, "192.0.2.1", 5062))
    assert wire.written == [(b"x", ("192.0.2.1", 5062))]
    protocol.stopProtocol()
    capture = LogCapture()
    transports._log = capture.logger()
    transports.send(b"y", Peer(Transport.UDP, "192.0.2.1", 5062))
    assert wire.written == [(b"x", ("192.0.2.1", 5062))]
    assert capture.texts() == ["no UDP socket for udp:192.0.2.1:5062: message dropped"]
