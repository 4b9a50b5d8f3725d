"""The front door's stamping of the top Via and the address a request's responses go to."""

from __future__ import annotations

import pytest

from scaserver.sip.endpoint import AdmittedRequest, admit, response_destination
from scaserver.sip.headers import Via, top_via
from scaserver.sip.message import Peer, Transport
from scaserver.sip.transactions import server_key

NAT = Peer(Transport.UDP, "203.0.113.7", 40000)


def options(via: str) -> bytes:
    return (
        f"OPTIONS sip:bob@example.com SIP/2.0\r\nVia: {via}\r\n"
        "From: <sip:alice@example.com>;tag=1\r\nTo: <sip:bob@example.com>\r\n"
        "Call-ID: c1\r\nCSeq: 7 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    ).encode()


@pytest.mark.parametrize(
    ("via", "peer", "stamped", "reply_to"),
    [
        # rport without a value is filled with the source port, received added (RFC 3581 section 4)
        (
            "SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKa;rport",
            NAT,
            "SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKa;rport=40000;received=203.0.113.7",
            NAT,
        ),
        (
            "SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKa;RPORT",
            NAT,
            "SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKa;RPORT=40000;received=203.0.113.7",
            NAT,
        ),
        # rport with a value is left alone; received alone sends to the Via's port
        (
            "SIP/2.0/UDP 10.0.0.1:5070;branch=z9hG4bKa;rport=1234",
            NAT,
            "SIP/2.0/UDP 10.0.0.1:5070;branch=z9hG4bKa;rport=1234;received=203.0.113.7",
            Peer(Transport.UDP, "203.0.113.7", 1234),
        ),
        (
            "SIP/2.0/UDP 10.0.0.1:5070;branch=z9hG4bKa",
            NAT,
            "SIP/2.0/UDP 10.0.0.1:5070;branch=z9hG4bKa;received=203.0.113.7",
            Peer(Transport.UDP, "203.0.113.7", 5070),
        ),
        # the sent-by is the source: nothing stamped, the sent-by's port
        (
            "SIP/2.0/UDP 203.0.113.7:5070;branch=z9hG4bKa",
            NAT,
            "SIP/2.0/UDP 203.0.113.7:5070;branch=z9hG4bKa",
            Peer(Transport.UDP, "203.0.113.7", 5070),
        ),
        # maddr wins over received
        (
            "SIP/2.0/UDP 10.0.0.1;maddr=198.51.100.9;branch=z9hG4bKa",
            NAT,
            "SIP/2.0/UDP 10.0.0.1;maddr=198.51.100.9;branch=z9hG4bKa;received=203.0.113.7",
            Peer(Transport.UDP, "198.51.100.9", 5060),
        ),
        # a Via naming TCP on a datagram: answered over UDP, to the Via's port (TCP's default)
        (
            "SIP/2.0/TCP 203.0.113.7;branch=z9hG4bKa",
            NAT,
            "SIP/2.0/TCP 203.0.113.7;branch=z9hG4bKa",
            Peer(Transport.UDP, "203.0.113.7", 5060),
        ),
        # a connection: back on it, whatever the Via says
        (
            "SIP/2.0/TCP 10.0.0.1:5070;branch=z9hG4bKa;rport",
            Peer(Transport.TCP, "203.0.113.7", 40001),
            "SIP/2.0/TCP 10.0.0.1:5070;branch=z9hG4bKa;rport=40001;received=203.0.113.7",
            Peer(Transport.TCP, "203.0.113.7", 40001),
        ),
    ],
)
def test_a_request_is_admitted_with_its_top_via_stamped_and_where_its_responses_go(
    via: str, peer: Peer, stamped: str, reply_to: Peer
) -> None:
    admitted = admit(options(via), peer, lambda: "u")
    assert isinstance(admitted, AdmittedRequest)
    assert str(top_via(admitted.request)) == stamped
    assert admitted.reply_to == reply_to


def test_responses_going_back_to_the_source_go_to_the_source_value_itself() -> None:
    source = Peer(Transport.UDP, "203.0.113.7", 40000)
    admitted = admit(options("SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKa;rport"), source, lambda: "u")
    assert isinstance(admitted, AdmittedRequest)
    assert admitted.reply_to is source
    elsewhere = admit(options("SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKa"), source, lambda: "u")
    assert isinstance(elsewhere, AdmittedRequest)
    assert elsewhere.reply_to == Peer(Transport.UDP, "203.0.113.7", 5060)


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        # the first of each name counts, whatever its case
        ((("received", "192.0.2.1"), ("received", "192.0.2.2")), Peer(Transport.UDP, "192.0.2.1", 5062)),
        (
            (("RECEIVED", "192.0.2.1"), ("Rport", "7000"), ("rport", "8000")),
            Peer(Transport.UDP, "192.0.2.1", 7000),
        ),
        # a valueless received or maddr is as good as none
        ((("received", None), ("rport", "7000")), Peer(Transport.UDP, "10.0.0.1", 5062)),
        ((("maddr", None), ("received", "192.0.2.1")), Peer(Transport.UDP, "192.0.2.1", 5062)),
        # an IPv6 received, with or without its brackets (RFC 5118 section 4.5)
        ((("received", "[2001:db8::9]"),), Peer(Transport.UDP, "2001:db8::9", 5062)),
        ((("received", "2001:db8::9"), ("rport", "")), Peer(Transport.UDP, "2001:db8::9", 5062)),
    ],
)
def test_the_response_destination_takes_the_first_of_each_parameter(
    params: tuple[tuple[str, str | None], ...], expected: Peer
) -> None:
    assert response_destination(Via("SIP/2.0", "UDP", "10.0.0.1", 5062, params)) == expected


def test_a_via_transport_in_lower_case_is_still_known() -> None:
    assert response_destination(Via("SIP/2.0", "tls", "192.0.2.1")) == Peer(Transport.TLS, "192.0.2.1", 5061)


@pytest.mark.parametrize(
    "via",
    [
        "SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKa;rport",
        "SIP/2.0/UDP 203.0.113.7:40000;branch=z9hG4bKa",
        # an RFC 2543 request: the key hashes the top Via as stamped
        "SIP/2.0/UDP 10.0.0.1:5060;rport",
        "SIP/2.0/UDP 10.0.0.1:5060;branch=1234",
    ],
)
def test_a_request_is_admitted_with_the_server_key_of_its_stamped_top_via(via: str) -> None:
    admitted = admit(options(via), NAT, lambda: "u")
    assert isinstance(admitted, AdmittedRequest)
    assert admitted.key == server_key(admitted.request)
