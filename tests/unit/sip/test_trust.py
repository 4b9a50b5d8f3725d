"""Trusted peers: matching a source address and transport against CIDR entries."""

from __future__ import annotations

import ipaddress

import pytest

from scaserver.sip.message import Peer, Transport
from scaserver.sip.trust import TrustedPeer, TrustedPeers

PEERS = TrustedPeers.of(
    TrustedPeer("192.0.2.0/24", Transport.UDP, "pbx-udp"),
    TrustedPeer("192.0.2.10/32", None, "pbx-any"),
    TrustedPeer("2001:db8::/32", Transport.TLS, "v6-tls"),
    TrustedPeer("198.51.100.7", None, "single"),
)


@pytest.mark.parametrize(
    ("peer", "tag"),
    [
        (Peer(Transport.UDP, "192.0.2.99", 5060), "pbx-udp"),
        (Peer(Transport.UDP, "192.0.2.10", 5060), "pbx-udp"),  # first match wins
        (Peer(Transport.TCP, "192.0.2.10", 5060), "pbx-any"),
        (Peer(Transport.TCP, "192.0.2.99", 5060), None),  # transport restricted
        (Peer(Transport.TLS, "2001:db8::1", 5061), "v6-tls"),
        (Peer(Transport.TLS, "[2001:db8::1]", 5061), "v6-tls"),
        (Peer(Transport.TLS, "fe80::1%eth0", 5061), None),
        (Peer(Transport.UDP, "2001:db8::1", 5060), None),
        (Peer(Transport.UDP, "::ffff:198.51.100.7", 5060), "single"),  # IPv4-mapped from a v6 socket
        (Peer(Transport.TCP, "198.51.100.7", 5060), "single"),
        (Peer(Transport.TCP, "198.51.100.8", 5060), None),
        (Peer(Transport.UDP, "pbx.example.com", 5060), None),  # names are never trusted
    ],
)
def test_match(peer: Peer, tag: str | None) -> None:
    found = PEERS.match(peer)
    assert (found.tag if found is not None else None) == tag
    assert PEERS.is_trusted(peer) is (tag is not None)


def test_cidr_with_host_bits_means_its_network() -> None:
    entry = TrustedPeer("10.1.2.3/8")
    assert entry.cidr == ipaddress.ip_network("10.0.0.0/8")
    assert entry.matches(Peer(Transport.UDP, "10.200.0.1", 5060))


def test_bad_cidr_is_rejected() -> None:
    with pytest.raises(ValueError):
        TrustedPeer("10.0.0.0/33")
    with pytest.raises(ValueError):
        TrustedPeers.from_entries([("not-an-address", None, "x")])


def test_from_entries_and_empty() -> None:
    peers = TrustedPeers.from_entries([("203.0.113.0/28", Transport.TCP, "trunk")])
    assert len(peers) == 1
    assert peers.is_trusted(Peer(Transport.TCP, "203.0.113.15", 5060))
    assert not peers.is_trusted(Peer(Transport.TCP, "203.0.113.16", 5060))
    assert not TrustedPeers().is_trusted(Peer(Transport.UDP, "127.0.0.1", 5060))


def test_v4_network_does_not_match_v6_address() -> None:
    assert not TrustedPeer("0.0.0.0/0").matches(Peer(Transport.UDP, "::1", 5060))
    assert TrustedPeer("::/0").matches(Peer(Transport.UDP, "::1", 5060))
