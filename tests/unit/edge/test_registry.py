"""Transports: socket choice per peer, TCP connection table (RFC 3261 18.2.2), dialing with a queue."""

from __future__ import annotations

import socket

from scaserver.edge.resolver import HostsTable
from scaserver.edge.stack import Transports, connection_key
from scaserver.sip.message import Peer, Transport
from tests.unit.edge.doubles import PEER_V4, PEER_V6, TCP_PEER, LogCapture, RecordingDatagram, RecordingStream


def test_udp_goes_out_on_a_socket_of_the_peer_address_family() -> None:
    transports = Transports()
    v4, v6 = RecordingDatagram(socket.AF_INET), RecordingDatagram(socket.AF_INET6)
    transports.add_datagram(v4)
    transports.add_datagram(v6)
    transports.send(b"a", PEER_V4)
    transports.send(b"b", PEER_V6)
    assert v4.sent == [(b"a", PEER_V4)]
    assert v6.sent == [(b"b", PEER_V6)]


def test_udp_without_a_socket_of_that_family_is_logged_and_dropped() -> None:
    transports = Transports()
    v4 = RecordingDatagram(socket.AF_INET)
    transports.add_datagram(v4)
    transports.remove_datagram(v4)
    capture = LogCapture()
    transports._log = capture.logger()
    transports.send(b"a", PEER_V4)
    assert v4.sent == []
    assert capture.texts() == ["no UDP socket for udp:192.0.2.10:5060: message dropped"]


def test_udp_goes_out_on_the_first_socket_of_its_family_while_it_is_open() -> None:
    transports = Transports()
    first, v6, second = (
        RecordingDatagram(socket.AF_INET),
        RecordingDatagram(socket.AF_INET6),
        RecordingDatagram(socket.AF_INET),
    )
    for endpoint in (first, v6, second):
        transports.add_datagram(endpoint)
    transports.send(b"a", PEER_V4)
    transports.remove_datagram(first)
    transports.send(b"b", PEER_V4)
    transports.send(b"c", Peer(Transport.UDP, "[2001:db8::1]", 5060))  # a bracketed IPv6 host
    transports.remove_datagram(second)
    capture = LogCapture()
    transports._log = capture.logger()
    transports.send(b"d", PEER_V4)
    transports.add_datagram(first)
    transports.send(b"e", PEER_V4)
    assert first.sent == [(b"a", PEER_V4), (b"e", PEER_V4)]
    assert second.sent == [(b"b", PEER_V4)]
    assert v6.sent == [(b"c", Peer(Transport.UDP, "[2001:db8::1]", 5060))]
    assert capture.texts() == ["no UDP socket for udp:192.0.2.10:5060: message dropped"]


def test_response_reuses_the_connection_its_request_came_on() -> None:
    transports = Transports()
    stream = RecordingStream(TCP_PEER)
    transports.add_stream(stream)
    transports.send(b"SIP/2.0 200 OK", TCP_PEER)
    assert stream.sent == [b"SIP/2.0 200 OK"]
    assert transports.stream_to(TCP_PEER) is stream


def test_ipv6_connection_keys_are_canonical() -> None:
    transports = Transports()
    stream = RecordingStream(Peer(Transport.TCP, "2001:db8::1", 5060))
    transports.add_stream(stream)
    transports.send(b"x", Peer(Transport.TCP, "2001:0db8:0:0::1", 5060))
    transports.send(b"y", Peer(Transport.TCP, "[2001:db8::1]", 5060))
    assert stream.sent == [b"x", b"y"]
    assert connection_key("[2001:DB8::1]", 1) == ("2001:db8::1", 1)
    assert connection_key("Host.Example", 1) == ("host.example", 1)


def test_a_peer_without_connection_is_dialed_and_the_queue_flushed_in_order() -> None:
    dialed: list[Peer] = []
    transports = Transports(dial=lambda peer, _name: dialed.append(peer))
    transports.send(b"one", TCP_PEER)
    transports.send(b"two", TCP_PEER)
    assert dialed == [TCP_PEER]  # one connection attempt for both messages
    stream = RecordingStream(TCP_PEER)
    transports.add_stream(stream)
    assert stream.sent == [b"one", b"two"]
    transports.send(b"three", TCP_PEER)
    assert stream.sent == [b"one", b"two", b"three"]


def test_failed_dial_drops_the_queue_and_a_later_send_dials_again() -> None:
    dialed: list[Peer] = []
    transports = Transports()
    transports.set_dialer(lambda peer, _name: dialed.append(peer))
    transports.send(b"one", TCP_PEER)
    transports.send(b"two", TCP_PEER)
    assert transports.dial_failed(TCP_PEER) == 2
    transports.send(b"three", TCP_PEER)
    assert dialed == [TCP_PEER, TCP_PEER]


def test_tcp_without_a_dialer_is_logged_and_dropped() -> None:
    transports = Transports()
    capture = LogCapture()
    transports._log = capture.logger()
    transports.send(b"x", TCP_PEER)
    assert capture.texts() == ["no TCP connection to tcp:192.0.2.20:40000: message dropped"]


def test_removing_a_connection_keeps_a_newer_one_for_the_same_peer() -> None:
    transports = Transports()
    old, new = RecordingStream(TCP_PEER), RecordingStream(TCP_PEER)
    transports.add_stream(old)
    transports.add_stream(new)
    transports.remove_stream(old)
    assert transports.stream_to(TCP_PEER) is new
    transports.remove_stream(new)
    assert transports.stream_to(TCP_PEER) is None
    assert transports.streams == ()


def test_close_streams_closes_every_connection() -> None:
    transports = Transports()
    a, b = RecordingStream(TCP_PEER), RecordingStream(Peer(Transport.TCP, "192.0.2.30", 5060))
    transports.add_stream(a)
    transports.add_stream(b)
    transports.close_streams()
    assert a.closed and b.closed


def test_tls_without_a_dialer_is_logged_and_dropped() -> None:
    transports = Transports()
    capture = LogCapture()
    transports._log = capture.logger()
    assert not transports.send(b"x", Peer(Transport.TLS, "192.0.2.1", 5061))
    assert capture.texts() == ["no TLS connection to tls:192.0.2.1:5061: message dropped"]


def test_host_names_are_resolved_through_the_hosts_table() -> None:
    transports = Transports(hosts=HostsTable.parse("192.0.2.50 proxy.example\n"))
    datagram = RecordingDatagram()
    transports.add_datagram(datagram)
    transports.send(b"x", Peer(Transport.UDP, "PROXY.example", 5070))
    assert datagram.sent == [(b"x", Peer(Transport.UDP, "192.0.2.50", 5070))]


def test_an_unresolvable_host_name_is_logged_and_dropped() -> None:
    transports = Transports(hosts=HostsTable())
    datagram = RecordingDatagram()
    transports.add_datagram(datagram)
    capture = LogCapture()
    transports._log = capture.logger()
    transports.send(b"x", Peer(Transport.UDP, "nowhere.example", 5060))
    assert datagram.sent == []
    assert capture.texts() == [
        "message to udp:nowhere.example:5060 dropped: nowhere.example: not numeric and not in the hosts file"
    ]


def test_tcp_and_tls_to_one_address_are_separate_connections() -> None:
    tls_peer = Peer(Transport.TLS, TCP_PEER.host, TCP_PEER.port)
    dialed: list[tuple[Peer, str]] = []
    transports = Transports()
    transports.set_dialer(lambda peer, name: dialed.append((peer, name)), Transport.TLS)
    tcp = RecordingStream(TCP_PEER)
    transports.add_stream(tcp)
    transports.send(b"secret", tls_peer)
    assert tcp.sent == []  # never over the cleartext connection to the same address
    assert dialed == [(tls_peer, "")]
    tls = RecordingStream(tls_peer)
    transports.add_stream(tls)
    assert tls.sent == [b"secret"]
    assert transports.stream_to(TCP_PEER) is tcp
    assert transports.stream_to(tls_peer) is tls


def test_an_alias_reuses_the_connection_until_it_closes() -> None:
    inbound = Peer(Transport.TLS, "192.0.2.7", 40001)
    sent_by = Peer(Transport.TLS, "pbx.example", 5061)
    dialed: list[Peer] = []
    transports = Transports()
    transports.set_dialer(lambda peer, _name: dialed.append(peer), Transport.TLS)
    stream = RecordingStream(inbound)
    transports.add_stream(stream)
    transports.add_alias(stream, sent_by)
    assert transports.send(b"by name", sent_by)  # no hosts-table entry needed: the alias wins
    assert stream.sent == [b"by name"]
    assert transports.stream_to(sent_by) is stream
    assert transports.streams == (stream,)  # listed once
    transports.remove_stream(stream)
    assert transports.stream_to(sent_by) is None
    assert not transports.send(b"gone", sent_by)  # unresolvable now: dropped, nothing dialed
    assert dialed == []
