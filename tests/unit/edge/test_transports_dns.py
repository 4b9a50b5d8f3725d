"""Transports with an RFC 3263 locator: queue during a look-up, pin a transaction to its
target, hold down failed targets, report unreachable names."""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock

from scaserver.edge.dns import DnsSettings, ServerLocator
from scaserver.edge.stack import Transports
from scaserver.sip.message import Peer, Transport
from scaserver.sip.serverlocation import NextHopFailed
from tests.unit.edge.doubles import LogCapture, RecordingDatagram
from tests.unit.edge.test_dns import ScriptedResolver, a, srv

DESTINATION = Peer(Transport.UDP, "pbx.example.com", 0)
FIRST = Peer(Transport.UDP, "192.0.2.1", 5070)
SECOND = Peer(Transport.UDP, "192.0.2.2", 5080)


def zone() -> dict[tuple[str, str], list[Any]]:
    return {
        ("SRV", "_sip._udp.pbx.example.com"): [
            srv("_sip._udp.pbx.example.com", 10, 0, 5070, "one.pbx.example.com"),
            srv("_sip._udp.pbx.example.com", 20, 0, 5080, "two.pbx.example.com"),
        ],
        ("A", "one.pbx.example.com"): [a("one.pbx.example.com", "192.0.2.1")],
        ("A", "two.pbx.example.com"): [a("two.pbx.example.com", "192.0.2.2")],
    }


def make(
    resolver: ScriptedResolver | None = None,
) -> tuple[Transports, RecordingDatagram, Clock, list[Peer]]:
    clock = Clock()
    locator = ServerLocator(
        resolver or ScriptedResolver(zone()), clock, policy=DnsSettings(failed_target_hold=60)
    )
    transports = Transports(locator=locator)
    datagram = RecordingDatagram()
    transports.add_datagram(datagram)
    unreachable: list[Peer] = []
    transports.unreachable = unreachable.append
    return transports, datagram, clock, unreachable


def test_a_named_destination_goes_to_the_first_srv_target() -> None:
    transports, datagram, _, _ = make()
    assert transports.send(b"INVITE", DESTINATION, branch="z9hG4bK1")
    assert datagram.sent == [(b"INVITE", FIRST)]


def test_messages_wait_for_a_lookup_in_progress_then_go_in_order() -> None:
    resolver = ScriptedResolver(zone())
    pending: Deferred[Any] = Deferred()
    resolver.lookupService = lambda name, timeout=None: pending  # type: ignore[method-assign]
    transports, datagram, _, _ = make(resolver)
    transports.send(b"one", DESTINATION, branch="b1")
    transports.send(b"two", DESTINATION, branch="b2")
    assert datagram.sent == []
    pending.callback((zone()["SRV", "_sip._udp.pbx.example.com"], [], []))
    assert datagram.sent == [(b"one", FIRST), (b"two", FIRST)]


def test_a_failed_target_is_held_and_the_next_request_avoids_it() -> None:
    transports, datagram, clock, _ = make()
    transports.send(b"first", DESTINATION, branch="b1")
    assert transports.has_alternative(DESTINATION, "b1")
    transports.target_failed(NextHopFailed(DESTINATION, "b1", "timeout"))
    transports.send(b"retry", DESTINATION, branch="b2")
    assert datagram.sent[-1] == (b"retry", SECOND)
    assert not transports.has_alternative(DESTINATION, "b2")  # the first one is held
    clock.advance(60)
    transports.send(b"later", DESTINATION, branch="b3")
    assert datagram.sent[-1] == (b"later", FIRST)
    assert transports.locator is not None
    assert transports.locator.statistics.failovers == 1


def test_a_transaction_stays_on_its_target_when_another_is_chosen_meanwhile() -> None:
    transports, datagram, _, _ = make()
    transports.send(b"INVITE", DESTINATION, branch="b1")
    transports.target_failed(NextHopFailed(DESTINATION, "b1", "503"))
    transports.send(b"CANCEL", DESTINATION, branch="b1")  # same branch: the same target
    assert datagram.sent[-1] == (b"CANCEL", FIRST)


def test_a_name_that_resolves_nowhere_is_logged_dropped_and_reported() -> None:
    transports, datagram, _, unreachable = make(ScriptedResolver({}))
    capture = LogCapture()
    transports._log = capture.logger()
    transports.send(b"x", Peer(Transport.UDP, "nowhere.example", 0), branch="b1")
    assert datagram.sent == []
    assert unreachable == [Peer(Transport.UDP, "nowhere.example", 0)]
    assert capture.texts() == [
        "message to udp:nowhere.example:0 dropped: the name resolves to no address (DNS and hosts file)"
    ]
    assert not transports.has_alternative(Peer(Transport.UDP, "nowhere.example", 0), "b1")


def test_a_refused_tcp_target_is_held_and_its_destination_reported() -> None:
    tcp = {
        ("SRV", "_sip._tcp.pbx.example.com"): [
            srv("_sip._tcp.pbx.example.com", 10, 0, 5070, "one.pbx.example.com"),
            srv("_sip._tcp.pbx.example.com", 20, 0, 5080, "two.pbx.example.com"),
        ],
        ("A", "one.pbx.example.com"): [a("one.pbx.example.com", "192.0.2.1")],
        ("A", "two.pbx.example.com"): [a("two.pbx.example.com", "192.0.2.2")],
    }
    transports, _, _, unreachable = make(ScriptedResolver(tcp))
    dialed: list[Peer] = []
    names: list[str] = []

    def dial(peer: Peer, server_name: str) -> None:
        dialed.append(peer)
        names.append(server_name)

    transports.set_dialer(dial)
    destination = Peer(Transport.TCP, "pbx.example.com", 0)
    transports.send(b"INVITE", destination, branch="b1")
    assert dialed == [Peer(Transport.TCP, "192.0.2.1", 5070)]
    assert names == ["pbx.example.com"]  # the name a TLS dial would verify (RFC 5922)
    assert transports.dial_failed(dialed[0]) == 1
    assert unreachable == [destination]
    transports.send(b"INVITE again", destination, branch="b2")
    assert dialed[-1] == Peer(Transport.TCP, "192.0.2.2", 5080)


def test_a_lookup_that_fails_drops_its_messages_reports_the_name_and_does_not_wedge_it() -> None:
    resolver = ScriptedResolver(zone())
    transports, datagram, _, unreachable = make(resolver)
    assert transports.locator is not None
    broken: Deferred[Any] = Deferred()
    real_locate = transports.locator.locate
    transports.locator.locate = lambda query: broken  # type: ignore[method-assign]
    transports.send(b"one", DESTINATION, branch="b1")
    transports.send(b"two", DESTINATION, branch="b2")
    broken.errback(RuntimeError("resolver bug"))
    assert datagram.sent == [] and unreachable == [DESTINATION]
    transports.locator.locate = real_locate  # type: ignore[method-assign]
    transports.send(b"three", DESTINATION, branch="b3")
    assert datagram.sent == [(b"three", FIRST)]
