"""RFC 3263-lite target resolution: numeric hosts, the hosts file, transport and port selection."""

from __future__ import annotations

from pathlib import Path

import pytest

from scaserver.edge.resolver import (
    HostsTable,
    UnresolvableTargetError,
    addresses_of,
    is_numeric,
    resolve_peer,
    resolve_uri,
    select_transport,
)
from scaserver.sip.message import Peer, Transport
from scaserver.sip.uri import SipUri, parse_uri

HOSTS = HostsTable.parse(
    """
# comment line
127.0.0.1   localhost
192.0.2.5   pbx.example.com pbx   # trailing comment
2001:db8::5 pbx.example.com
192.0.2.5   PBX.example.com
not-an-ip   broken.example
192.0.2.9
10.0.0.1 dotted.example.
"""
)


def uri(text: str) -> SipUri:
    parsed = parse_uri(text)
    assert isinstance(parsed, SipUri)
    return parsed


def test_hosts_file_parse_keeps_order_without_repeats_and_skips_junk() -> None:
    assert HOSTS.lookup("pbx.example.com") == ("192.0.2.5", "2001:db8::5")
    assert HOSTS.lookup("PBX") == ("192.0.2.5",)
    assert HOSTS.lookup("broken.example") == ()
    assert HOSTS.lookup("dotted.example") == ("10.0.0.1",)
    assert HOSTS.lookup("dotted.example.") == ("10.0.0.1",)
    assert len(HOSTS) == 4


def test_load_reads_a_file_and_a_missing_file_is_empty(tmp_path: Path) -> None:
    path = tmp_path / "hosts"
    path.write_text("192.0.2.7 a.example\n")
    assert HostsTable.load(path).lookup("a.example") == ("192.0.2.7",)
    assert len(HostsTable.load(tmp_path / "missing")) == 0


@pytest.mark.parametrize(
    ("host", "numeric"),
    [
        ("192.0.2.1", True),
        ("2001:db8::1", True),
        ("[2001:db8::1]", True),
        ("pbx.example.com", False),
        ("", False),
    ],
)
def test_is_numeric(host: str, numeric: bool) -> None:
    assert is_numeric(host) is numeric


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("sip:2001@192.0.2.1", (Peer(Transport.UDP, "192.0.2.1", 5060),)),
        ("sip:2001@192.0.2.1:5080", (Peer(Transport.UDP, "192.0.2.1", 5080),)),
        ("sip:2001@[2001:db8::1]", (Peer(Transport.UDP, "2001:db8::1", 5060),)),
        ("sip:2001@192.0.2.1;transport=tcp", (Peer(Transport.TCP, "192.0.2.1", 5060),)),
        ("sip:2001@192.0.2.1;transport=TLS", (Peer(Transport.TLS, "192.0.2.1", 5061),)),
        ("sips:2001@192.0.2.1", (Peer(Transport.TLS, "192.0.2.1", 5061),)),
        ("sips:2001@192.0.2.1;transport=tcp", (Peer(Transport.TLS, "192.0.2.1", 5061),)),
        (
            "sip:2001@pbx.example.com",
            (Peer(Transport.UDP, "192.0.2.5", 5060), Peer(Transport.UDP, "2001:db8::5", 5060)),
        ),
        ("sip:2001@elsewhere.example;maddr=192.0.2.77", (Peer(Transport.UDP, "192.0.2.77", 5060),)),
        ("sip:2001@192.0.2.1;maddr=pbx", (Peer(Transport.UDP, "192.0.2.5", 5060),)),
    ],
)
def test_resolve_uri(text: str, expected: tuple[Peer, ...]) -> None:
    assert resolve_uri(uri(text), HOSTS) == expected


def test_unknown_host_is_unresolvable() -> None:
    with pytest.raises(
        UnresolvableTargetError, match=r"nowhere\.example: not numeric and not in the hosts file"
    ):
        resolve_uri(uri("sip:2001@nowhere.example"), HOSTS)


def test_unserved_transport_is_unresolvable() -> None:
    with pytest.raises(UnresolvableTargetError, match="transport 'sctp' is not served"):
        select_transport(uri("sip:2001@192.0.2.1;transport=sctp"))


def test_resolve_peer_maps_a_name_to_numeric_peers() -> None:
    assert resolve_peer(Peer(Transport.TCP, "pbx", 5070), HOSTS) == (Peer(Transport.TCP, "192.0.2.5", 5070),)
    assert addresses_of("[2001:DB8::5]", HOSTS) == ("2001:db8::5",)
