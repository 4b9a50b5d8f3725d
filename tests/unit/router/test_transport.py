"""A ``sips:`` Request-URI reaches only ``sips:`` contacts over TLS (RFC 3261 26.2.2, RFC 5630)."""

from __future__ import annotations

import attrs
import pytest

from scaserver.proxy.target import Target
from scaserver.router.transport import LARGE_REQUEST_BYTES, TransportChoice, secure_targets
from scaserver.sip.errors import TemporarilyUnavailable
from scaserver.sip.keys import ClientKey
from scaserver.sip.message import Headers, Peer, Request, Transport
from scaserver.sip.serializer import serialize
from scaserver.sip.timers import TimerConfig
from scaserver.sip.transactions import TransactionLayer

TLS_FLOW = Peer(Transport.TLS, "192.0.2.1", 40000)
UDP_FLOW = Peer(Transport.UDP, "192.0.2.2", 5060)


def test_only_contacts_reached_over_tls_remain() -> None:
    kept = Target("sips:bob@192.0.2.1:40000", flow=TLS_FLOW)
    routed = Target("sips:bob@phone.example")  # no flow: next_hop picks TLS for sips:
    over_tls = Target("sip:bob@192.0.2.1:40000;transport=tls", flow=TLS_FLOW)  # a sip: contact, TLS flow
    targets = [
        kept,
        routed,
        Target("sip:bob@192.0.2.2", flow=UDP_FLOW),
        Target("sips:bob@192.0.2.2", flow=UDP_FLOW),  # a sips: contact registered over UDP
        Target("sip:bob@192.0.2.3;transport=tls"),  # no flow, and not sips:
        over_tls,
    ]
    assert secure_targets(targets) == [kept, routed, over_tls]


def test_no_secure_contact_is_480() -> None:
    with pytest.raises(TemporarilyUnavailable):
        secure_targets([Target("sip:bob@192.0.2.2", flow=UDP_FLOW)])


# TransportChoice on its own (RFC 3261 18.1.1): the router's use of it is in test_dispatch_large_requests.

PHONE = Peer(Transport.UDP, "198.51.100.10", 5062)
NAT = Peer(Transport.UDP, "203.0.113.77", 40112)


def choice() -> TransportChoice:
    layer = TransactionLayer(
        TimerConfig(), branch_factory=lambda: "b1", local_via=lambda peer: ("udp", "192.0.2.1", 5060)
    )
    return TransportChoice(layer)


def message(contact: str, body_size: int) -> Request:
    fields = Headers.of(("Call-ID", "c1"), ("CSeq", "1 MESSAGE"), ("Content-Length", str(body_size)))
    return Request("MESSAGE", contact, fields, b"x" * body_size)


def test_a_large_request_to_its_contact_goes_over_tcp_to_the_same_address() -> None:
    sent, fact = choice().transport_for(message("sip:a@198.51.100.10:5062", LARGE_REQUEST_BYTES), PHONE)
    assert sent == Peer(Transport.TCP, PHONE.host, PHONE.port)
    assert fact is None


def test_a_large_request_behind_a_nat_stays_on_udp_and_is_reported_once() -> None:
    transports = choice()
    request = message("sip:a@10.0.0.5:5062", LARGE_REQUEST_BYTES)
    sent, fact = transports.transport_for(request, NAT)
    assert sent == NAT
    assert fact is not None
    assert (fact.peer, fact.method, fact.reason) == (
        NAT,
        "MESSAGE",
        "its contact is not the address it is reached at",
    )
    assert fact.size > LARGE_REQUEST_BYTES
    assert transports.transport_for(request, NAT) == (NAT, None)  # remembered: no second report


def test_a_small_request_and_an_ack_keep_their_transport() -> None:
    transports = choice()
    assert transports.transport_for(message("sip:a@198.51.100.10:5062", 10), PHONE) == (PHONE, None)
    ack = attrs.evolve(message("sip:a@198.51.100.10:5062", LARGE_REQUEST_BYTES), method="ACK")
    assert transports.transport_for(ack, PHONE) == (PHONE, None)


def test_a_failed_tcp_connection_falls_back_to_udp_once() -> None:
    transports = choice()
    request = message("sip:a@198.51.100.10:5062", LARGE_REQUEST_BYTES)
    key = ClientKey("z9hG4bK1", "MESSAGE")
    transports.upgraded(key, request, PHONE, "owner")
    assert transports.fall_back(key) == (request, PHONE, "owner")
    assert transports.fall_back(key) is None  # only once
    fact = transports.over_udp_after_failure(request, PHONE)
    assert fact.reason == "no TCP connection"
    assert transports.transport_for(request, PHONE) == (PHONE, None)  # out of TCP reach from now on


def test_a_forgotten_transaction_does_not_fall_back() -> None:
    transports = choice()
    key = ClientKey("z9hG4bK1", "MESSAGE")
    transports.upgraded(key, message("sip:a@198.51.100.10:5062", LARGE_REQUEST_BYTES), PHONE, "owner")
    transports.forget(key)
    assert transports.fall_back(key) is None


# The size at the boundary: the request as serialized plus the Via the layer adds (its branch
# counted as 47 characters), compared with the 1300 bytes of RFC 3261 18.1.1.

VIA_LINE = "Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK" + "x" * 40 + "\r\n"


def of_wire_size(total: int, *fields: tuple[str, str]) -> Request:
    """A MESSAGE to PHONE's contact whose serialized size plus VIA_LINE is ``total`` bytes."""
    for body_size in range(total):
        request = Request("MESSAGE", "sip:a@198.51.100.10:5062", Headers.of(*fields), b"x" * body_size)
        size = len(serialize(request)) + len(VIA_LINE)
        if size == total:
            return request
    raise AssertionError(f"no body makes {total} bytes")


@pytest.mark.parametrize(
    "fields",
    [
        (("Call-ID", "c1"), ("CSeq", "1 MESSAGE")),
        # multi-byte characters: more bytes than characters
        (("Call-ID", "c1"), ("CSeq", "1 MESSAGE"), ("Subject", "r\u00e9union \u2603 \U0001f600")),
        # stale and repeated Content-Length lines: the serializer writes one, with the body's length
        (("Content-Length", "999999"), ("Call-ID", "c1"), ("CSeq", "1 MESSAGE"), ("Content-Length", "7")),
    ],
)
def test_a_request_of_1300_bytes_stays_on_udp_and_of_1301_goes_over_tcp(
    fields: tuple[tuple[str, str], ...],
) -> None:
    transports = choice()
    assert transports.transport_for(of_wire_size(LARGE_REQUEST_BYTES, *fields), PHONE) == (PHONE, None)
    sent, fact = transports.transport_for(of_wire_size(LARGE_REQUEST_BYTES + 1, *fields), PHONE)
    assert sent == Peer(Transport.TCP, PHONE.host, PHONE.port)
    assert fact is None


def test_the_size_reported_for_a_large_request_over_udp_is_its_wire_size() -> None:
    request = of_wire_size(LARGE_REQUEST_BYTES + 1, ("Subject", "\u2603"), ("Content-Length", "0"))
    _, fact = choice().transport_for(request, NAT)
    assert fact is not None
    assert fact.size == LARGE_REQUEST_BYTES + 1
