"""A ``sips:`` dialog is record-routed with a ``sips:`` URI of our TLS interface (RFC 3261
16.6 step 4) and its in-dialog requests are recognised as ours (16.4, relay rule R3)."""

from __future__ import annotations

import pytest

from scaserver.proxy.relay import Origin, Rule, check_in_dialog, route_signature
from scaserver.proxy.routing import (
    Interface,
    ProxyIdentity,
    add_record_route,
    needs_sips_record_route,
    preprocess_route,
)
from scaserver.sip.errors import Forbidden
from scaserver.sip.message import Peer, Transport

from .build import TCP_IF, UDP_IF, request

TLS_IF = Interface(Transport.TLS, "192.0.2.10", 5061)
IDENTITY = ProxyIdentity((UDP_IF, TCP_IF, TLS_IF), route_key=b"route-key")
SIGNED = route_signature(IDENTITY.route_key, "call-1@198.51.100.1", "a1")
OURS = f"<sips:192.0.2.10:5061;lr;rrsig={SIGNED}>"


def test_a_sips_record_route_on_a_tls_interface_is_a_sips_uri_without_transport() -> None:
    stamped = add_record_route(
        request(uri="sips:bob@example.com"), TLS_IF, TLS_IF, signature=SIGNED, secure=True
    )
    assert stamped.headers.values("Record-Route") == (OURS,)


def test_a_doubled_sips_record_route_is_sips_on_both_entries() -> None:
    other = Interface(Transport.TLS, "198.51.100.10", 5061)
    stamped = add_record_route(request(), TLS_IF, other, secure=True)
    assert stamped.headers.values("Record-Route") == (
        "<sips:198.51.100.10:5061;lr;r2=on>",
        "<sips:192.0.2.10:5061;lr;r2=on>",
    )


def test_without_sips_the_tls_record_route_stays_a_sip_uri() -> None:
    stamped = add_record_route(request(), TLS_IF, TLS_IF)
    assert stamped.headers.values("Record-Route") == ("<sip:192.0.2.10:5061;transport=tls;lr>",)


@pytest.mark.parametrize(
    ("uri", "route", "forwarded_uri", "expected"),
    [
        ("sips:bob@example.com", None, "sips:bob@192.0.2.7", True),
        # The Request-URI of the dialog-creating request was sips: (a TLS-flow contact target).
        ("sips:bob@example.com", None, "sip:bob@192.0.2.7;transport=tls", True),
        ("sip:bob@example.com", "<sips:edge.example.net;lr>", "sip:bob@example.com", True),
        ("sip:bob@example.com", None, "sip:bob@192.0.2.7;transport=tls", False),
        ("sip:bob@example.com", "<sip:edge.example.net;transport=tls;lr>", "sip:bob@example.com", False),
    ],
)
def test_the_record_route_must_be_sips_when_request_uri_or_top_route_is(
    uri: str, route: str | None, forwarded_uri: str, expected: bool
) -> None:
    extra = (("Route", route),) if route is not None else ()
    received = request(uri=uri, extra=extra)
    forwarded = request(uri=forwarded_uri, extra=extra)
    assert needs_sips_record_route(received, forwarded) is expected


def test_the_secure_interface_towards_a_udp_peer_is_the_tls_one() -> None:
    assert IDENTITY.secure_interface_for(Peer(Transport.UDP, "198.51.100.1", 5060)) == TLS_IF
    assert IDENTITY.secure_interface_for(Peer(Transport.TLS, "198.51.100.1", 40000)) == TLS_IF


def test_our_sips_route_is_removed_by_route_preprocessing() -> None:
    bye = request("BYE", "sips:bob@198.51.100.7", to_tag="b1", extra=(("Route", OURS),))
    assert preprocess_route(bye, IDENTITY).headers.values("Route") == ()


def test_a_sips_route_of_another_port_is_not_ours() -> None:
    foreign = "<sips:192.0.2.10:5071;lr>"
    bye = request("BYE", "sips:bob@198.51.100.7", to_tag="b1", extra=(("Route", foreign),))
    assert preprocess_route(bye, IDENTITY).headers.values("Route") == (foreign,)


def test_a_strict_router_moving_our_sips_entry_to_the_request_uri_is_undone() -> None:
    moved = request("BYE", OURS[1:-1], to_tag="b1", extra=(("Route", "<sips:bob@198.51.100.7>"),))
    undone = preprocess_route(moved, IDENTITY)
    assert undone.uri == "sips:bob@198.51.100.7"
    assert undone.headers.values("Route") == ()


def test_r3_our_signed_sips_route_is_an_in_dialog_request() -> None:
    bye = request("BYE", "sips:bob@198.51.100.7", to_tag="b1", extra=(("Route", OURS),))
    assert check_in_dialog(bye, IDENTITY, Origin(trusted=False), for_us=False) is Rule.IN_DIALOG


def test_r3_an_unsigned_sips_route_of_ours_is_refused() -> None:
    bye = request(
        "BYE", "sips:bob@198.51.100.7", to_tag="b1", extra=(("Route", "<sips:192.0.2.10:5061;lr>"),)
    )
    with pytest.raises(Forbidden):
        check_in_dialog(bye, IDENTITY, Origin(trusted=False), for_us=False)
