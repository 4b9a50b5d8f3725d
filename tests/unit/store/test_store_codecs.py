"""Pure value <-> column conversions of ``store/sql.py``."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from scaserver.registrar.binding import BindingKey, KeyKind
from scaserver.sip.message import Peer, Transport
from scaserver.store import sql


@pytest.mark.parametrize(
    ("peer", "text"),
    [
        (Peer(Transport.UDP, "192.0.2.1", 5060), "sip:192.0.2.1:5060;transport=udp"),
        (Peer(Transport.TCP, "2001:db8::1", 5061), "sip:[2001:db8::1]:5061;transport=tcp"),
        (Peer(Transport.TLS, "proxy.example.com", 5061), "sip:proxy.example.com:5061;transport=tls"),
    ],
)
def test_received_uri_round_trip(peer: Peer, text: str) -> None:
    assert sql.received_uri(peer) == text
    assert sql.parse_received(text) == peer


@given(
    transport=st.sampled_from(Transport),
    host=st.ip_addresses().map(str),
    port=st.integers(min_value=1, max_value=65535),
)
def test_received_uri_round_trips_any_address(transport: Transport, host: str, port: int) -> None:
    peer = Peer(transport, host, port)
    assert sql.parse_received(sql.received_uri(peer)) == peer


def test_received_without_transport_is_udp() -> None:
    assert sql.parse_received("sip:192.0.2.1:5060") == Peer(Transport.UDP, "192.0.2.1", 5060)


@pytest.mark.parametrize("text", ["sip:192.0.2.1", "sip:192.0.2.1:port", ":5060", "sip:h:1;transport=sctp"])
def test_malformed_received_is_rejected(text: str) -> None:
    with pytest.raises(ValueError):
        sql.parse_received(text)


def test_ruid_is_a_stable_digest_of_the_binding_key() -> None:
    key = BindingKey("sip:alice@example.com", KeyKind.INSTANCE, "<urn:uuid:1>")
    assert sql.ruid(key) == sql.ruid(BindingKey("sip:alice@example.com", KeyKind.INSTANCE, "<urn:uuid:1>"))
    assert sql.ruid(key) != sql.ruid(BindingKey("sip:alice@example.com", KeyKind.URI, "<urn:uuid:1>"))
    assert len(sql.ruid(key)) == 64


@pytest.mark.parametrize(
    ("url", "expected"),
    [("sqlite:///x.db", True), ("sqlite://", True), ("postgresql+psycopg://u@h/db", False)],
)
def test_is_sqlite(url: str, expected: bool) -> None:
    assert sql.is_sqlite(url) is expected
