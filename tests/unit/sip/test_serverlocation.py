"""RFC 3263 server location as pure decisions: NAPTR filtering, SRV ordering, 4.1 rules."""

from __future__ import annotations

import random
from collections import Counter

from scaserver.sip.message import Peer, Transport
from scaserver.sip.serverlocation import (
    NaptrRecord,
    Query,
    SrvRecord,
    Target,
    default_transport,
    naptr_services,
    needs_dns_choice,
    order_srv,
    query_of,
    srv_names,
    targets_for,
    without_held,
)

BOTH = frozenset({Transport.UDP, Transport.TCP})
ALL = frozenset({Transport.UDP, Transport.TCP, Transport.TLS})


def test_naptr_ordered_by_order_then_preference() -> None:
    records = [
        NaptrRecord(20, 10, "s", "SIP+D2U", "_sip._udp.example.com."),
        NaptrRecord(10, 20, "s", "SIP+D2T", "_sip._tcp.example.com."),
        NaptrRecord(10, 10, "S", "SIPS+D2T", "_sips._tcp.example.com."),
    ]
    assert naptr_services(records, secure=False, served=ALL) == [
        (Transport.TLS, "_sips._tcp.example.com"),
        (Transport.TCP, "_sip._tcp.example.com"),
        (Transport.UDP, "_sip._udp.example.com"),
    ]


def test_naptr_keeps_only_served_transports_terminal_flags_and_sip_services() -> None:
    records = [
        NaptrRecord(10, 10, "s", "SIPS+D2T", "_sips._tcp.example.com."),  # TLS not served
        NaptrRecord(10, 20, "", "SIP+D2T", "example.com."),  # non-terminal: a loop could follow
        NaptrRecord(10, 30, "s", "E2U+sip", "_sip._udp.example.com."),  # ENUM, not RFC 3263
        NaptrRecord(10, 40, "s", "SIP+D2S", "_sip._sctp.example.com."),  # SCTP not served
        NaptrRecord(10, 50, "s", "SIP+D2U", "", regexp="!^.*$!sip:x!"),  # regexp: not SIP's
        NaptrRecord(20, 10, "s", "SIP+D2U", "_sip._udp.example.com."),
    ]
    assert naptr_services(records, secure=False, served=BOTH) == [(Transport.UDP, "_sip._udp.example.com")]


def test_naptr_for_sips_keeps_only_sips_d2t() -> None:
    records = [
        NaptrRecord(10, 10, "s", "SIP+D2U", "_sip._udp.example.com."),
        NaptrRecord(20, 10, "s", "SIPS+D2T", "_sips._tcp.example.com."),
    ]
    assert naptr_services(records, secure=True, served=ALL) == [(Transport.TLS, "_sips._tcp.example.com")]
    assert naptr_services(records, secure=True, served=BOTH) == []


def test_srv_names_without_naptr() -> None:
    assert srv_names(Query("example.com", None, None), BOTH) == [
        (Transport.UDP, "_sip._udp.example.com"),
        (Transport.TCP, "_sip._tcp.example.com"),
    ]
    assert srv_names(Query("example.com", Transport.TCP, None), BOTH) == [
        (Transport.TCP, "_sip._tcp.example.com")
    ]
    assert srv_names(Query("example.com.", None, None, secure=True), ALL) == [
        (Transport.TLS, "_sips._tcp.example.com")
    ]


def test_numeric_host_or_explicit_port_skips_naptr_and_srv() -> None:
    assert not needs_dns_choice(Query("192.0.2.1", None, None))
    assert not needs_dns_choice(Query("[2001:db8::1]", None, None))
    assert not needs_dns_choice(Query("example.com", None, 5070))
    assert needs_dns_choice(Query("example.com", Transport.TCP, None))
    assert default_transport(Query("example.com", None, 5070)) is Transport.UDP
    assert default_transport(Query("example.com", None, 5071, secure=True)) is Transport.TLS
    assert default_transport(Query("example.com", Transport.TCP, 5070)) is Transport.TCP


def test_query_of_a_peer_port_zero_means_srv_decides() -> None:
    assert query_of(Peer(Transport.UDP, "pbx.example.com", 0)) == Query(
        "pbx.example.com", Transport.UDP, None
    )
    assert query_of(Peer(Transport.TLS, "pbx.example.com", 5061)) == Query(
        "pbx.example.com", Transport.TLS, 5061, secure=True
    )


def test_srv_lowest_priority_first() -> None:
    records = [SrvRecord(20, 0, 5060, "b.example.com."), SrvRecord(10, 0, 5062, "a.example.com.")]
    assert [r.target for r in order_srv(records, random.Random(1).random)] == [
        "a.example.com.",
        "b.example.com.",
    ]


def test_srv_weights_draw_proportionally_with_a_seeded_source() -> None:
    records = [
        SrvRecord(10, 60, 5060, "heavy."),
        SrvRecord(10, 20, 5060, "light."),
        SrvRecord(10, 0, 5060, "zero."),
    ]
    source = random.Random(7)
    firsts = Counter(order_srv(records, source.random)[0].target for _ in range(2000))
    assert 1300 < firsts["heavy."] < 1700
    assert 300 < firsts["light."] < 700
    assert firsts["zero."] < 100  # weight 0: rarely first (RFC 2782), never excluded
    assert sorted(r.target for r in order_srv(records, source.random)) == ["heavy.", "light.", "zero."]


def test_srv_same_seed_same_order() -> None:
    records = [SrvRecord(10, 10, 5060, f"t{i}.") for i in range(5)]
    assert order_srv(records, random.Random(3).random) == order_srv(records, random.Random(3).random)


def test_srv_dot_target_means_no_service() -> None:
    assert order_srv([SrvRecord(0, 0, 0, ".")], random.random) == []


def test_targets_keep_the_resolved_domain_as_server_name() -> None:
    assert targets_for(Transport.TLS, ["192.0.2.1", "2001:db8:0::1"], 5061, "example.com") == [
        Target(Peer(Transport.TLS, "192.0.2.1", 5061), "example.com"),
        Target(Peer(Transport.TLS, "2001:db8::1", 5061), "example.com"),
    ]


def test_held_targets_are_avoided_unless_every_one_is() -> None:
    a = Target(Peer(Transport.UDP, "192.0.2.1", 5060), "x")
    b = Target(Peer(Transport.UDP, "192.0.2.2", 5060), "x")
    assert without_held([a, b], lambda peer: peer == a.peer) == [b]
    assert without_held([a, b], lambda peer: True) == [a, b]
