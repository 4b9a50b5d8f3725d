"""Pure value <-> column conversions of ``store/registrations.py`` and ``store/engine.py``."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from scaserver.registrar.binding import BindingKey, KeyKind
from scaserver.sip.message import Peer, Transport
from scaserver.store.engine import is_sqlite
from scaserver.store.registrations import _json_pairs, parse_received, received_uri, ruid


@pytest.mark.parametrize(
    ("peer", "text"),
    [
        (Peer(Transport.UDP, "192.0.2.1", 5060), "sip:192.0.2.1:5060;transport=udp"),
        (Peer(Transport.TCP, "2001:db8::1", 5061), "sip:[2001:db8::1]:5061;transport=tcp"),
        (Peer(Transport.TLS, "proxy.example.com", 5061), "sip:proxy.example.com:5061;transport=tls"),
    ],
)
def test_received_uri_round_trip(peer: Peer, text: str) -> None:
    assert received_uri(peer) == text
    assert parse_received(text) == peer


@given(
    transport=st.sampled_from(Transport),
    host=st.ip_addresses().map(str),
    port=st.integers(min_value=1, max_value=65535),
)
def test_received_uri_round_trips_any_address(transport: Transport, host: str, port: int) -> None:
    peer = Peer(transport, host, port)
    assert parse_received(received_uri(peer)) == peer


def test_received_without_transport_is_udp() -> None:
    assert parse_received("sip:192.0.2.1:5060") == Peer(Transport.UDP, "192.0.2.1", 5060)


@pytest.mark.parametrize("text", ["sip:192.0.2.1", "sip:192.0.2.1:port", ":5060", "sip:h:1;transport=sctp"])
def test_malformed_received_is_rejected(text: str) -> None:
    with pytest.raises(ValueError):
        parse_received(text)


def test_ruid_is_a_stable_digest_of_the_binding_key() -> None:
    key = BindingKey("sip:alice@example.com", KeyKind.INSTANCE, "<urn:uuid:1>")
    assert ruid(key) == ruid(BindingKey("sip:alice@example.com", KeyKind.INSTANCE, "<urn:uuid:1>"))
    assert ruid(key) != ruid(BindingKey("sip:alice@example.com", KeyKind.URI, "<urn:uuid:1>"))
    assert len(ruid(key)) == 64


@pytest.mark.parametrize(
    ("url", "expected"),
    [("sqlite:///x.db", True), ("sqlite://", True), ("postgresql+psycopg://u@h/db", False)],
)
def test_is_sqlite(url: str, expected: bool) -> None:
    assert is_sqlite(url) is expected


@given(st.lists(st.tuples(st.text(max_size=6), st.none() | st.text(max_size=6)), max_size=3))
def test_location_params_are_the_json_of_their_pairs(pairs: list[tuple[str, str | None]]) -> None:
    # Without json.dumps for the usual empty list, the same text as json.dumps of any list.
    assert _json_pairs(tuple(pairs)) == json.dumps([list(pair) for pair in pairs])
