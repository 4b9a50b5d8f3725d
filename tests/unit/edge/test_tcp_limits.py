"""TCP containment: connections refused from a banned source, beyond the per-address and the
global limit (counted by reason); the short idle timeout until a connection is vouched for."""

from __future__ import annotations

from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock

from scaserver.edge.stack import Transports
from scaserver.edge.tcp import SipStreamFactory, SipStreamProtocol, StreamLimits
from scaserver.guard.sources import BanReason, SecuritySettings, SourceGuard
from tests.unit.edge.doubles import RecordingSink, connect, failure, string_transport

LIMITS = StreamLimits(
    idle_timeout=600.0, unvouched_idle_timeout=30.0, max_connections_per_address=2, max_connections=3
)


def factory(guard: SourceGuard | None = None) -> tuple[SipStreamFactory, Clock]:
    clock = Clock()
    return SipStreamFactory(RecordingSink(), Transports(), LIMITS, clock, guard), clock


def accept(streams: SipStreamFactory, host: str, port: int) -> SipStreamProtocol | None:
    protocol = streams.buildProtocol(IPv4Address("TCP", host, port))
    if protocol is not None:
        connect(protocol, string_transport(host, port))
    return protocol


def test_connections_beyond_the_per_address_limit_are_refused_and_counted() -> None:
    streams, _ = factory()
    first, second = accept(streams, "192.0.2.1", 1), accept(streams, "192.0.2.1", 2)
    assert first is not None and second is not None
    assert accept(streams, "192.0.2.1", 3) is None
    assert streams.refused["per-address"] == 1
    first.connectionLost(failure(ConnectionError("gone")))
    assert accept(streams, "192.0.2.1", 4) is not None  # a slot was freed


def test_connections_beyond_the_global_limit_are_refused() -> None:
    streams, _ = factory()
    for index in range(3):
        assert accept(streams, f"192.0.2.{index}", 1) is not None
    assert accept(streams, "192.0.2.9", 1) is None
    assert (streams.open_connections, streams.refused["global"]) == (3, 1)


def test_a_banned_source_cannot_connect_and_an_allowed_one_has_no_per_address_limit() -> None:
    guard = SourceGuard(SecuritySettings(allow=("198.51.100.0/24",)))
    streams, clock = factory(guard)
    guard.ban("192.0.2.66", BanReason.MANUAL, clock.seconds())
    assert accept(streams, "192.0.2.66", 1) is None
    assert streams.refused["banned"] == 1
    assert all(accept(streams, "198.51.100.5", port) is not None for port in (1, 2, 3))


def test_an_unvouched_connection_gets_the_short_idle_timeout() -> None:
    streams, clock = factory()
    protocol = accept(streams, "192.0.2.1", 1)
    assert protocol is not None
    clock.advance(29.9)
    assert not protocol.closing
    clock.advance(0.1)
    assert protocol.closing


def test_a_vouched_connection_keeps_the_long_idle_timeout() -> None:
    streams, clock = factory()
    protocol = accept(streams, "192.0.2.1", 1)
    assert protocol is not None
    clock.advance(10)
    protocol.vouch()
    clock.advance(599)
    assert not protocol.closing
    clock.advance(1)
    assert protocol.closing


def test_an_allowed_peer_is_vouched_for_from_the_start() -> None:
    guard = SourceGuard(SecuritySettings(allow=("198.51.100.0/24",)))
    streams, clock = factory(guard)
    protocol = accept(streams, "198.51.100.5", 1)
    assert protocol is not None and protocol.vouched
    clock.advance(100)
    assert not protocol.closing
