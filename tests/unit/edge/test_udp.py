"""SIP over UDP: datagrams in and out, the size limit, write failures logged."""

from __future__ import annotations

import errno
import os
import socket
from typing import cast

import pytest
from twisted.internet.error import MessageLengthError
from twisted.internet.interfaces import IUDPTransport
from twisted.internet.task import Clock

from scaserver.edge.stack import Transports
from scaserver.edge.udp import PEER_MEMORY, UdpTransport
from scaserver.guard.sources import BanReason, SourceGuard
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


# A datagram to a numeric address of the socket's family is written on Twisted's socket
# directly; anything else goes through Twisted's port (and its address checks) as before.


class ScriptedSocket(socket.socket):
    """A real bound socket whose ``sendto`` fails with the given errno values first."""

    def __init__(self, family: socket.AddressFamily, failures: list[int]) -> None:
        super().__init__(family, socket.SOCK_DGRAM)
        self.failures = failures
        self.attempts = 0

    def sendto(self, data: bytes, *rest: object) -> int:  # type: ignore[override]
        self.attempts += 1
        if self.failures:
            number = self.failures.pop(0)
            raise OSError(number, os.strerror(number))
        return super().sendto(data, *rest)  # type: ignore[call-overload,no-any-return]


class PortWithSocket(FakeUdpSocket):
    """Twisted's port as the transport sees it: ``write`` and its bound ``socket``."""

    def __init__(self, sock: socket.socket) -> None:
        super().__init__()
        self.socket = sock


def started(sock: socket.socket, host: str = "127.0.0.1") -> tuple[UdpTransport, PortWithSocket, LogCapture]:
    protocol = UdpTransport(RecordingSink(), Transports(), host, max_message_size=1500)
    port = PortWithSocket(sock)
    protocol.transport = cast(IUDPTransport, port)
    protocol.startProtocol()
    capture = LogCapture()
    protocol._log = capture.logger()
    return protocol, port, capture


def receiver() -> tuple[socket.socket, Peer]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(5)
    return sock, Peer(Transport.UDP, "127.0.0.1", sock.getsockname()[1])


def test_a_datagram_to_a_numeric_address_is_written_on_the_socket_directly() -> None:
    far, peer = receiver()
    with far, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        protocol, port, capture = started(sock)
        protocol.send(b"SIP/2.0 200 OK\r\n\r\n", peer)
        assert far.recvfrom(2048) == (b"SIP/2.0 200 OK\r\n\r\n", sock.getsockname())
        assert port.written == []
        assert capture.texts() == []


@pytest.mark.parametrize(
    ("host", "peer_host"),
    [
        ("127.0.0.1", "proxy.example.com"),  # a name: Twisted refuses it, never looked up here
        ("127.0.0.1", "2001:db8::1"),  # another family
        ("127.0.0.1", "10.1"),  # inet_aton would take it, Twisted does not
        ("::1", "192.0.2.1"),
    ],
)
def test_an_address_twisted_checks_goes_through_its_port(host: str, peer_host: str) -> None:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with ScriptedSocket(family, []) as sock:
        protocol, port, _ = started(sock, host)
        protocol.send(b"x", Peer(Transport.UDP, peer_host, 5062))
        assert sock.attempts == 0
        assert port.written == [(b"x", (peer_host, 5062))]


def test_after_stop_the_socket_is_not_used() -> None:
    with ScriptedSocket(socket.AF_INET, []) as sock:
        protocol, port, _ = started(sock)
        protocol.stopProtocol()
        protocol.send(b"x", Peer(Transport.UDP, "192.0.2.1", 5062))
        assert sock.attempts == 0
        assert port.written == [(b"x", ("192.0.2.1", 5062))]


def test_a_socket_of_another_family_than_the_host_is_not_used() -> None:
    with ScriptedSocket(socket.AF_INET6, []) as sock:
        protocol, port, _ = started(sock, "127.0.0.1")
        protocol.send(b"x", Peer(Transport.UDP, "192.0.2.1", 5062))
        assert sock.attempts == 0
        assert port.written == [(b"x", ("192.0.2.1", 5062))]


@pytest.mark.parametrize(
    ("number", "text"),
    [
        # Twisted's port raises MessageLengthError for EMSGSIZE: the same text is logged.
        (errno.EMSGSIZE, str(MessageLengthError("message too long"))),
        (errno.ENOBUFS, f"[Errno {errno.ENOBUFS}] {os.strerror(errno.ENOBUFS)}"),
        (errno.EAGAIN, f"[Errno {errno.EAGAIN}] {os.strerror(errno.EAGAIN)}"),
        (errno.ENETUNREACH, f"[Errno {errno.ENETUNREACH}] {os.strerror(errno.ENETUNREACH)}"),
    ],
)
def test_a_refused_direct_write_is_a_logged_drop(number: int, text: str) -> None:
    with ScriptedSocket(socket.AF_INET, [number]) as sock:
        protocol, port, capture = started(sock)
        protocol.send(b"x", Peer(Transport.UDP, "192.0.2.1", 5062))
        assert sock.attempts == 1
        assert port.written == []
        assert capture.texts() == [f"UDP write to udp:192.0.2.1:5062 failed: {text}"]
        assert capture.levels() == ["warn"]


def test_the_emsgsize_text_is_the_one_logged_through_twisted() -> None:
    protocol, _, _ = build(error=MessageLengthError("message too long"))
    capture = LogCapture()
    protocol._log = capture.logger()
    protocol.send(b"x", Peer(Transport.UDP, "192.0.2.1", 5062))
    assert capture.texts() == [
        f"UDP write to udp:192.0.2.1:5062 failed: {MessageLengthError('message too long')!s}"
    ]


def test_an_interrupted_direct_write_is_retried_and_a_refused_one_ignored() -> None:
    far, peer = receiver()
    with far, ScriptedSocket(socket.AF_INET, [errno.EINTR, errno.EINTR]) as sock:
        sock.bind(("127.0.0.1", 0))
        protocol, _, capture = started(sock)
        protocol.send(b"again", peer)
        assert sock.attempts == 3
        assert far.recvfrom(2048)[0] == b"again"
        # ECONNREFUSED on an unconnected socket (an ICMP error of an earlier datagram): Twisted
        # ignores it, so does the direct write.
        sock.failures = [errno.ECONNREFUSED]
        protocol.send(b"lost", peer)
        assert sock.attempts == 4
        assert capture.texts() == []


def test_each_source_address_gets_its_peer_and_the_memory_of_them_is_bounded() -> None:
    protocol, sink, _ = build()
    sources = [("192.0.2.1", 5062), ("192.0.2.1", 5064), ("192.0.2.2", 5062), ("192.0.2.1", 5062)]
    for source in sources:
        protocol.datagramReceived(b"OPTIONS", source)
    assert [peer for _, peer in sink.received] == [Peer(Transport.UDP, *source) for source in sources]
    assert sink.received[0][1] is sink.received[3][1]  # the same source: its Peer made once
    for port in range(PEER_MEMORY + 10):  # a flood from many sources
        protocol.datagramReceived(b"OPTIONS", ("198.51.100.7", port))
    assert len(protocol._peers) <= PEER_MEMORY
    assert sink.received[-1][1] == Peer(Transport.UDP, "198.51.100.7", PEER_MEMORY + 9)


def guarded(guard: SourceGuard, clock: Clock) -> tuple[UdpTransport, RecordingSink]:
    sink = RecordingSink()
    protocol = UdpTransport(sink, Transports(), "127.0.0.1", max_message_size=1500, guard=guard, clock=clock)
    protocol.transport = cast(IUDPTransport, FakeUdpSocket())
    return protocol, sink


def test_a_source_banned_after_start_is_dropped_before_the_stack() -> None:
    guard, clock = SourceGuard(), Clock()
    protocol, sink = guarded(guard, clock)
    guard.ban("192.0.2.1", BanReason.MANUAL, clock.seconds(), duration_s=10.0)
    protocol.datagramReceived(b"OPTIONS", ("192.0.2.1", 5062))
    protocol.datagramReceived(b"OPTIONS", ("192.0.2.2", 5062))
    assert sink.received == [(b"OPTIONS", Peer(Transport.UDP, "192.0.2.2", 5062))]
    assert guard.dropped_total == 1


def test_a_source_whose_ban_ended_reaches_the_stack_again() -> None:
    guard, clock = SourceGuard(), Clock()
    protocol, sink = guarded(guard, clock)
    guard.ban("192.0.2.1", BanReason.MANUAL, clock.seconds(), duration_s=10.0)
    clock.advance(10.0)
    protocol.datagramReceived(b"OPTIONS", ("192.0.2.1", 5062))
    assert sink.received == [(b"OPTIONS", Peer(Transport.UDP, "192.0.2.1", 5062))]
    assert guard.dropped_total == 0


def test_a_source_banned_again_after_an_unban_is_dropped() -> None:
    guard, clock = SourceGuard(), Clock()
    protocol, sink = guarded(guard, clock)
    guard.ban("192.0.2.1", BanReason.MANUAL, clock.seconds(), duration_s=10.0)
    guard.unban("192.0.2.1")
    protocol.datagramReceived(b"OPTIONS", ("192.0.2.1", 5062))
    guard.ban("192.0.2.1", BanReason.MANUAL, clock.seconds(), duration_s=10.0)
    protocol.datagramReceived(b"OPTIONS", ("192.0.2.1", 5062))
    assert sink.received == [(b"OPTIONS", Peer(Transport.UDP, "192.0.2.1", 5062))]
    assert guard.dropped_total == 1
