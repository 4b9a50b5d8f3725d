"""Test doubles for the edge: a scripted SIP core, recording sockets, a log capture."""

from __future__ import annotations

import socket
from collections.abc import Callable, Hashable
from typing import cast

import attrs
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.interfaces import ITransport
from twisted.internet.protocol import Protocol
from twisted.internet.testing import StringTransport
from twisted.logger import ILogObserver, LogEvent, Logger, formatEvent
from twisted.python.failure import Failure

from scaserver.registrar.nat import FlowFailure
from scaserver.sip.actions import Action
from scaserver.sip.message import Headers, Peer, Request, Transport

PEER_V4 = Peer(Transport.UDP, "192.0.2.10", 5060)
PEER_V6 = Peer(Transport.UDP, "2001:db8::10", 5060)
TCP_PEER = Peer(Transport.TCP, "192.0.2.20", 40000)


def options(call_id: str = "c1@test", cseq: int = 1) -> Request:
    return Request(
        "OPTIONS",
        "sip:demo.scaserver.test",
        Headers.of(
            ("Via", "SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK-1"),
            ("From", "<sip:a@demo.scaserver.test>;tag=f1"),
            ("To", "<sip:demo.scaserver.test>"),
            ("Call-ID", call_id),
            ("CSeq", f"{cseq} OPTIONS"),
            ("Max-Forwards", "70"),
        ),
    )


@attrs.define
class FakeCore:
    """A DrivenCore whose answers are scripted per call; it records what it was given."""

    on_receive: Callable[[bytes, Peer, float], list[Action]] = lambda data, peer, now: []
    on_fire: Callable[[Hashable, str, float], list[Action]] = lambda key, name, now: []
    on_lost: Callable[[Peer, float], list[Action]] = lambda peer, now: []
    received: list[tuple[bytes, Peer, float]] = attrs.field(factory=list)
    fired: list[tuple[Hashable, str, float]] = attrs.field(factory=list)
    lost: list[tuple[Peer, float]] = attrs.field(factory=list)
    failed_flows: list[tuple[Peer, FlowFailure]] = attrs.field(factory=list)

    def receive(self, data: bytes, peer: Peer, now: float) -> list[Action]:
        self.received.append((data, peer, now))
        return self.on_receive(data, peer, now)

    def on_timer(self, key: Hashable, name: str, now: float) -> list[Action]:
        self.fired.append((key, name, now))
        return self.on_fire(key, name, now)

    def connection_lost(self, peer: Peer, now: float) -> list[Action]:
        self.lost.append((peer, now))
        return self.on_lost(peer, now)

    def flow_failed(self, flow: Peer, cause: FlowFailure, now: float) -> list[Action]:
        self.failed_flows.append((flow, cause))
        return []


@attrs.define
class RecordingSink:
    """A MessageSink that keeps what the transports hand it."""

    received: list[tuple[bytes, Peer]] = attrs.field(factory=list)
    lost: list[Peer] = attrs.field(factory=list)

    def bytes_received(self, data: bytes, peer: Peer) -> None:
        self.received.append((data, peer))

    def connection_lost(self, peer: Peer) -> None:
        self.lost.append(peer)


@attrs.define(eq=False)
class RecordingDatagram:
    """A DatagramEndpoint that records writes."""

    family: socket.AddressFamily = socket.AF_INET
    sent: list[tuple[bytes, Peer]] = attrs.field(factory=list)

    def send(self, data: bytes, peer: Peer) -> None:
        self.sent.append((data, peer))


@attrs.define(eq=False)
class RecordingStream:
    """A StreamConnection that records writes and closes."""

    peer: Peer
    sent: list[bytes] = attrs.field(factory=list)
    closed: bool = False
    vouched: bool = False

    def send(self, data: bytes) -> None:
        self.sent.append(data)

    def close(self) -> None:
        self.closed = True

    def vouch(self) -> None:
        self.vouched = True


@attrs.define
class LogCapture:
    """Collects the events of the Loggers it replaces (``capture.logger()``)."""

    events: list[LogEvent] = attrs.field(factory=list)

    def logger(self, namespace: str = "test") -> Logger:
        return Logger(namespace=namespace, observer=cast(ILogObserver, self.events.append))

    def texts(self) -> list[str]:
        return [text for event in self.events if (text := formatEvent(event))]

    def levels(self) -> list[str]:
        return [event["log_level"].name for event in self.events]


# Typed wrappers over Twisted's untyped test helpers.


def string_transport(host: str, port: int) -> StringTransport:
    """An in-memory TCP transport whose remote end is ``host:port``."""
    address = IPv6Address("TCP", host, port) if ":" in host else IPv4Address("TCP", host, port)
    return StringTransport(peerAddress=address)  # type: ignore[no-untyped-call]


def written(wire: StringTransport) -> bytes:
    data: bytes = wire.value()  # type: ignore[no-untyped-call]
    return data


def connect(protocol: object, wire: StringTransport) -> None:
    cast(Protocol, protocol).makeConnection(cast(ITransport, wire))  # type: ignore[no-untyped-call]


def failure(error: BaseException) -> Failure:
    return Failure(error)  # type: ignore[no-untyped-call]
