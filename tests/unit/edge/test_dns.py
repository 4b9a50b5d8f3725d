"""The RFC 3263 locator over a scripted resolver on ``task.Clock``: order, cache, limits."""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock
from twisted.names import dns
from twisted.names.error import DNSNameError, DNSServerError

from scaserver.edge.dns import DnsSettings, ServerLocator, TransportChoice, nameservers
from scaserver.edge.resolver import HostsTable
from scaserver.metrics.counters import Metrics
from scaserver.sip.message import Peer, Transport
from scaserver.sip.serverlocation import Query, Target

records: Any = dns  # twisted.names' record classes are untyped

Answer = tuple[list[dns.RRHeader], list[dns.RRHeader], list[dns.RRHeader]]


def a(name: str, address: str, ttl: int = 60) -> dns.RRHeader:
    return dns.RRHeader(name, dns.A, dns.IN, ttl, records.Record_A(address, ttl))


def srv(name: str, priority: int, weight: int, port: int, target: str, *, ttl: int = 60) -> dns.RRHeader:
    return dns.RRHeader(name, dns.SRV, dns.IN, ttl, records.Record_SRV(priority, weight, port, target, ttl))


def naptr(
    name: str, order: int, pref: int, service: bytes, replacement: str, *, ttl: int = 60
) -> dns.RRHeader:
    record = records.Record_NAPTR(order, pref, b"s", service, b"", replacement, ttl)
    return dns.RRHeader(name, dns.NAPTR, dns.IN, ttl, record)


def cname(name: str, alias: str, ttl: int = 60) -> dns.RRHeader:
    return dns.RRHeader(name, dns.CNAME, dns.IN, ttl, records.Record_CNAME(alias, ttl))


class ScriptedResolver:
    """Answers from a table keyed by (type, name); a missing name is NXDOMAIN."""

    def __init__(self, zone: dict[tuple[str, str], list[dns.RRHeader]]) -> None:
        self.zone = dict(zone)
        self.asked: list[tuple[str, str]] = []
        self.errors: dict[tuple[str, str], Exception] = {}
        self.hang: set[tuple[str, str]] = set()

    def _answer(self, kind: str, name: str) -> Deferred[Any]:
        self.asked.append((kind, name))
        if (kind, name) in self.hang:
            return Deferred()
        if (kind, name) in self.errors:
            return fail(self.errors[kind, name])
        if (kind, name) not in self.zone:
            return fail(DNSNameError(name))
        answer: Answer = (self.zone[kind, name], [], [])
        return succeed(answer)

    def lookupNamingAuthorityPointer(self, name: str, timeout: Sequence[int] | None = None) -> Deferred[Any]:  # noqa: N802
        return self._answer("NAPTR", name)

    def lookupService(self, name: str, timeout: Sequence[int] | None = None) -> Deferred[Any]:  # noqa: N802
        return self._answer("SRV", name)

    def lookupAddress(self, name: str, timeout: Sequence[int] | None = None) -> Deferred[Any]:  # noqa: N802
        return self._answer("A", name)

    def lookupIPV6Address(self, name: str, timeout: Sequence[int] | None = None) -> Deferred[Any]:  # noqa: N802
        return self._answer("AAAA", name)


ZONE = {
    ("NAPTR", "example.com"): [
        naptr("example.com", 10, 10, b"SIP+D2T", "_sip._tcp.example.com"),
        naptr("example.com", 20, 10, b"SIP+D2U", "_sip._udp.example.com"),
    ],
    ("SRV", "_sip._tcp.example.com"): [
        srv("_sip._tcp.example.com", 10, 0, 5070, "one.example.com", ttl=30),
        srv("_sip._tcp.example.com", 20, 0, 5080, "two.example.com"),
    ],
    ("A", "one.example.com"): [a("one.example.com", "192.0.2.1")],
    ("A", "two.example.com"): [a("two.example.com", "192.0.2.2")],
}


def located(locator: ServerLocator, query: Query) -> tuple[Target, ...]:
    results: list[tuple[Target, ...]] = []
    locator.locate(query).addCallback(results.append)
    assert results, "the look-up did not finish"
    return results[0]


def make(
    zone: dict[tuple[str, str], list[dns.RRHeader]], **policy: Any
) -> tuple[ServerLocator, ScriptedResolver, Clock]:
    clock = Clock()
    resolver = ScriptedResolver(zone)
    locator = ServerLocator(
        resolver, clock, policy=DnsSettings(**policy), random_source=random.Random(1).random
    )
    return locator, resolver, clock


def test_naptr_then_srv_then_a_gives_ordered_targets_with_the_domain_as_server_name() -> None:
    locator, _, _ = make(ZONE)
    assert located(locator, Query("example.com", None, None)) == (
        Target(Peer(Transport.TCP, "192.0.2.1", 5070), "example.com"),
        Target(Peer(Transport.TCP, "192.0.2.2", 5080), "example.com"),
    )


def test_explicit_port_asks_only_for_addresses() -> None:
    zone = {("A", "pbx.example.com"): [a("pbx.example.com", "192.0.2.9")]}
    locator, resolver, _ = make(zone)
    assert located(locator, Query("pbx.example.com", Transport.UDP, 5062)) == (
        Target(Peer(Transport.UDP, "192.0.2.9", 5062), "pbx.example.com"),
    )
    assert [kind for kind, _ in resolver.asked] == ["A", "AAAA"]


def test_no_naptr_no_srv_falls_back_to_a_with_the_default_port() -> None:
    zone = {("A", "pbx.example.com"): [a("pbx.example.com", "192.0.2.9")]}
    locator, _, _ = make(zone)
    assert located(locator, Query("pbx.example.com", None, None)) == (
        Target(Peer(Transport.UDP, "192.0.2.9", 5060), "pbx.example.com"),
    )


def test_hosts_file_and_numeric_hosts_are_never_asked_of_dns() -> None:
    clock = Clock()
    resolver = ScriptedResolver({})
    locator = ServerLocator(resolver, clock, hosts=HostsTable.parse("192.0.2.5 pbx\n"))
    assert locator.cached(Query("pbx", Transport.TCP, None)) == (
        Target(Peer(Transport.TCP, "192.0.2.5", 5060), "pbx"),
    )
    assert locator.cached(Query("192.0.2.7", None, 5070)) == (
        Target(Peer(Transport.UDP, "192.0.2.7", 5070), "192.0.2.7"),
    )
    assert resolver.asked == []


def test_result_is_cached_until_the_smallest_ttl_then_asked_again() -> None:
    locator, resolver, clock = make(ZONE)
    query = Query("example.com", None, None)
    located(locator, query)
    asked = len(resolver.asked)
    assert locator.cached(query) is not None
    clock.advance(29)
    assert locator.cached(query) is not None
    assert locator.statistics.cache_hits >= 2
    clock.advance(2)  # the SRV record's 30 s have passed
    assert locator.cached(query) is None
    resolver.zone["SRV", "_sip._tcp.example.com"] = [
        srv("_sip._tcp.example.com", 10, 0, 5099, "one.example.com")
    ]
    assert located(locator, query) == (Target(Peer(Transport.TCP, "192.0.2.1", 5099), "example.com"),)
    assert len(resolver.asked) == asked + 2  # NAPTR and SRV again; the A record is still fresh


def test_nxdomain_is_cached_for_the_negative_ttl() -> None:
    locator, resolver, clock = make({}, negative_ttl=10.0)
    query = Query("nowhere.example", Transport.UDP, 5060)
    assert located(locator, query) == ()
    assert locator.statistics.lookups["A", "nxdomain"] == 1
    asked = len(resolver.asked)
    assert located(locator, query) == ()
    assert len(resolver.asked) == asked  # from the negative cache
    clock.advance(11)
    resolver.zone["A", "nowhere.example"] = [a("nowhere.example", "192.0.2.3")]
    assert located(locator, query) == (Target(Peer(Transport.UDP, "192.0.2.3", 5060), "nowhere.example"),)


def test_server_failure_is_counted_and_not_cached() -> None:
    locator, resolver, _ = make({})
    resolver.errors["A", "pbx.example.com"] = DNSServerError("SERVFAIL")
    query = Query("pbx.example.com", Transport.UDP, 5060)
    assert located(locator, query) == ()
    assert locator.statistics.lookups["A", "error"] == 1
    del resolver.errors["A", "pbx.example.com"]
    resolver.zone["A", "pbx.example.com"] = [a("pbx.example.com", "192.0.2.4")]
    assert located(locator, query) != ()


def test_a_lookup_that_never_answers_times_out() -> None:
    locator, resolver, clock = make({}, timeout=3.0)
    resolver.hang.add(("A", "slow.example"))
    results: list[tuple[Target, ...]] = []
    locator.locate(Query("slow.example", Transport.UDP, 5060)).addCallback(results.append)
    assert results == []
    clock.advance(3.0)
    assert results == [()]
    assert locator.statistics.lookups["A", "timeout"] == 1


def test_cname_loop_is_refused() -> None:
    zone = {("A", "loop.example"): [cname("loop.example", "b.example"), cname("b.example", "loop.example")]}
    locator, _, _ = make(zone)
    assert located(locator, Query("loop.example", Transport.UDP, 5060)) == ()


def test_cname_chain_followed_up_to_the_depth_limit() -> None:
    chain = [cname(f"c{i}.example", f"c{i + 1}.example") for i in range(3)] + [a("c3.example", "192.0.2.8")]
    locator, _, _ = make({("A", "c0.example"): chain}, max_cname_depth=3)
    assert len(located(locator, Query("c0.example", Transport.UDP, 5060))) == 1
    locator, _, _ = make({("A", "c0.example"): chain}, max_cname_depth=2)
    assert located(locator, Query("c0.example", Transport.UDP, 5060)) == ()


def test_too_many_records_are_capped() -> None:
    zone = {("A", "big.example"): [a("big.example", f"192.0.2.{i}") for i in range(1, 200)]}
    locator, _, _ = make(zone, max_records=5)
    assert len(located(locator, Query("big.example", Transport.UDP, 5060))) == 5


def test_naptr_pointing_back_at_itself_is_not_followed() -> None:
    loop = records.Record_NAPTR(10, 10, b"", b"SIP+D2U", b"", "example.org", 60)
    zone = {
        ("NAPTR", "example.org"): [dns.RRHeader("example.org", dns.NAPTR, dns.IN, 60, loop)],
        ("A", "example.org"): [a("example.org", "192.0.2.44")],
    }
    locator, resolver, _ = make(zone)
    assert located(locator, Query("example.org", None, None)) == (
        Target(Peer(Transport.UDP, "192.0.2.44", 5060), "example.org"),
    )
    assert resolver.asked.count(("NAPTR", "example.org")) == 1


def test_held_target_expires_after_the_hold() -> None:
    locator, _, clock = make(ZONE, failed_target_hold=60.0)
    peer = Peer(Transport.TCP, "192.0.2.1", 5070)
    locator.hold(peer)
    assert locator.is_held(peer)
    assert locator.statistics.targets_held(clock.seconds()) == 1
    clock.advance(60)
    assert not locator.is_held(peer)


def test_cache_size_is_bounded() -> None:
    zone = {("A", f"h{i}.example"): [a(f"h{i}.example", "192.0.2.1")] for i in range(10)}
    locator, _, _ = make(zone, cache_size=3)
    for i in range(10):
        located(locator, Query(f"h{i}.example", Transport.UDP, 5060))
    assert locator.cached(Query("h0.example", Transport.UDP, 5060)) is None
    assert locator.cached(Query("h9.example", Transport.UDP, 5060)) is not None


def test_nameservers_from_settings_or_resolv_conf(tmp_path: Any) -> None:
    conf = tmp_path / "resolv.conf"
    conf.write_text("search example\nnameserver 192.0.2.53\nnameserver ::1\n")
    assert nameservers([], conf) == [("192.0.2.53", 53), ("::1", 53)]
    assert nameservers(["127.0.0.2:5353", "[::1]:53", "192.0.2.1"], conf) == [
        ("127.0.0.2", 5353),
        ("::1", 53),
        ("192.0.2.1", 53),
    ]
    assert nameservers([], tmp_path / "missing") == []


def test_metrics_export_lookups_latency_hits_failovers_and_held_targets() -> None:
    locator, _, clock = make(ZONE)
    located(locator, Query("example.com", None, None))
    locator.cached(Query("example.com", None, None))
    locator.hold(Peer(Transport.TCP, "192.0.2.1", 5070))
    locator.statistics.failovers += 1
    metrics = Metrics(CollectorRegistry())
    metrics.watch_dns(locator)
    text = generate_latest(metrics.registry).decode()
    assert 'scaserver_dns_lookups_total{outcome="answer",type="NAPTR"} 1.0' in text
    assert 'scaserver_dns_lookups_total{outcome="nxdomain",type="AAAA"} 2.0' in text
    assert 'scaserver_dns_lookups_total{outcome="timeout",type="SRV"} 0.0' in text
    assert 'scaserver_dns_locate_latency_seconds_bucket{le="0.001"} 1.0' in text
    assert "scaserver_dns_locate_latency_seconds_count 1.0" in text
    assert "scaserver_dns_cache_hits_total 1.0" in text
    assert "scaserver_dns_failovers_total 1.0" in text
    assert "scaserver_dns_targets_held 1.0" in text
    clock.advance(61)
    assert "scaserver_dns_targets_held 0.0" in generate_latest(metrics.registry).decode()


def test_transport_choice_follows_naptr_and_is_checked_again() -> None:
    locator, resolver, clock = make(ZONE)
    chosen: list[Transport] = []
    choice = TransportChoice(locator, clock, Query("example.com", None, None), chosen.append, interval=30.0)
    choice.startService()
    assert chosen == [Transport.TCP]  # NAPTR order 10: SIP+D2T
    resolver.zone["NAPTR", "example.com"] = [naptr("example.com", 5, 10, b"SIP+D2U", "_sip._udp.example.com")]
    resolver.zone["SRV", "_sip._udp.example.com"] = [
        srv("_sip._udp.example.com", 10, 0, 5060, "one.example.com")
    ]
    clock.advance(30)  # the NAPTR answer is still cached (TTL 60): nothing changes
    assert chosen == [Transport.TCP]
    clock.advance(31)
    assert chosen == [Transport.TCP, Transport.UDP]
    choice.stopService()
    assert clock.getDelayedCalls() == []
