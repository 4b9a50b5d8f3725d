"""Request and response preparation (RFC 3261 16.3, 16.4, 16.6, 16.11, 18.2.2; RFC 5658; RFC 4475)."""

from __future__ import annotations

import pytest

from scaserver.proxy.routing import (
    Interface,
    ProxyIdentity,
    add_record_route,
    apply_target,
    branch_with_loop_hash,
    check_max_forwards,
    check_proxy_require,
    decrement_max_forwards,
    detect_loop,
    loop_hash,
    loop_hash_of_branch,
    next_hop,
    preprocess_route,
    stateless_branch,
)
from scaserver.sip.endpoint import is_broadcast_or_multicast, response_destination
from scaserver.sip.errors import BadExtension, TooManyHops
from scaserver.sip.headers import parse_via
from scaserver.sip.message import Peer, Transport
from scaserver.sip.uri import parse_uri

from .build import CALLER_VIA, IDENTITY, TCP_IF, UDP_IF, our_via, request

# -- 16.3 item 3 / 16.6 step 3: Max-Forwards ---------------------------------------------------


def test_max_forwards_zero_is_483() -> None:
    with pytest.raises(TooManyHops) as caught:
        check_max_forwards(request(max_forwards="0"))
    assert caught.value.status == 483


@pytest.mark.parametrize("value", ["1", "70", None])
def test_max_forwards_above_zero_or_absent_passes(value: str | None) -> None:
    check_max_forwards(request(max_forwards=value))


def test_max_forwards_is_decremented() -> None:
    assert decrement_max_forwards(request(max_forwards="70")).headers.get("Max-Forwards") == "69"


def test_missing_max_forwards_gets_70() -> None:
    assert decrement_max_forwards(request(max_forwards=None)).headers.get("Max-Forwards") == "70"


# -- 16.3 item 4: loop detection -----------------------------------------------------------------


def _returned(original_uri: str) -> tuple[str, ...]:
    """The Via stack of a request we forwarded once that comes back through another proxy."""
    carried = loop_hash(request(uri=original_uri), CALLER_VIA)
    ours = our_via(branch_with_loop_hash(carried, "u1"))
    return ("SIP/2.0/UDP 203.0.113.5;branch=z9hG4bKother", ours, CALLER_VIA)


def test_loop_detected_when_our_via_carries_the_same_hash() -> None:
    back = request(via=_returned("sip:bob@example.com"))
    assert detect_loop(back, IDENTITY)


def test_spiral_with_another_request_uri_is_not_a_loop() -> None:
    back = request(uri="sip:bob@198.51.100.7", via=_returned("sip:bob@example.com"))
    assert not detect_loop(back, IDENTITY)


def test_no_loop_without_our_via() -> None:
    assert not detect_loop(request(), IDENTITY)


def test_foreign_via_with_matching_hash_is_not_ours() -> None:
    first = request()
    carried = loop_hash(first, CALLER_VIA)
    foreign = f"SIP/2.0/UDP 203.0.113.9;branch={branch_with_loop_hash(carried, 'u1')}"
    assert not detect_loop(request(via=(foreign, CALLER_VIA)), IDENTITY)


def test_our_via_with_a_plain_branch_cannot_show_a_loop() -> None:
    assert not detect_loop(request(via=(our_via("z9hG4bKplain"), CALLER_VIA)), IDENTITY)


@pytest.mark.parametrize(
    ("branch", "expected"),
    [
        ("z9hG4bK0123456789abcdef.x", "0123456789abcdef"),
        ("z9hG4bK0123456789abcdef.", None),
        ("z9hG4bK0123.x", None),
        ("z9hG4bKplain", None),
        ("rfc2543branch", None),
        (None, None),
    ],
)
def test_loop_hash_of_branch(branch: str | None, expected: str | None) -> None:
    assert loop_hash_of_branch(branch) == expected


def test_loop_hash_covers_cseq_and_proxy_authorization() -> None:
    base = loop_hash(request(), CALLER_VIA)
    assert loop_hash(request(cseq_number=2), CALLER_VIA) != base
    assert loop_hash(request(extra=(("Proxy-Authorization", "Digest x"),)), CALLER_VIA) != base
    assert loop_hash(request(), CALLER_VIA) == base


# -- 16.3 item 5: Proxy-Require ------------------------------------------------------------------


def test_unsupported_proxy_require_is_420_listing_them() -> None:
    with pytest.raises(BadExtension) as caught:
        check_proxy_require(request(extra=(("Proxy-Require", "foo, sec-agree"),)), frozenset({"sec-agree"}))
    assert caught.value.status == 420
    assert caught.value.headers.get("Unsupported") == "foo"


def test_supported_proxy_require_passes() -> None:
    check_proxy_require(request(extra=(("Proxy-Require", "sec-agree"),)), frozenset({"sec-agree"}))


# -- 16.4: Route pre-processing ------------------------------------------------------------------


def test_our_top_route_is_removed() -> None:
    incoming = request(extra=(("Route", "<sip:192.0.2.10:5060;lr>, <sip:next.example.net;lr>"),))
    assert preprocess_route(incoming, IDENTITY).headers.values("Route") == ("<sip:next.example.net;lr>",)


def test_alias_without_port_is_us() -> None:
    incoming = request(extra=(("Route", "<sip:proxy.example.com;lr>"),))
    assert "Route" not in preprocess_route(incoming, IDENTITY).headers


def test_both_entries_of_a_double_record_route_are_removed() -> None:
    routes = (
        ("Route", "<sip:192.0.2.10:5060;transport=tcp;lr;r2=on>"),
        ("Route", "<sip:192.0.2.10:5060;transport=udp;lr;r2=on>"),
        ("Route", "<sip:next.example.net;lr>"),
    )
    assert preprocess_route(request(extra=routes), IDENTITY).headers.values("Route") == (
        "<sip:next.example.net;lr>",
    )


def test_second_own_route_without_r2_is_kept() -> None:
    routes = (("Route", "<sip:192.0.2.10;lr>, <sip:proxy.example.com;lr>"),)
    assert preprocess_route(request(extra=routes), IDENTITY).headers.values("Route") == (
        "<sip:proxy.example.com;lr>",
    )


def test_strict_router_rewrite_is_undone() -> None:
    incoming = request(
        uri="sip:192.0.2.10:5060;transport=udp;lr",
        extra=(("Route", "<sip:next.example.net;lr>, <sip:bob@198.51.100.7>"),),
    )
    result = preprocess_route(incoming, IDENTITY)
    assert result.uri == "sip:bob@198.51.100.7"
    assert result.headers.values("Route") == ("<sip:next.example.net;lr>",)


def test_strict_router_rewrite_with_a_single_route() -> None:
    incoming = request(uri="sip:192.0.2.10;lr", extra=(("Route", "<sip:bob@198.51.100.7>"),))
    result = preprocess_route(incoming, IDENTITY)
    assert result.uri == "sip:bob@198.51.100.7"
    assert "Route" not in result.headers


def test_request_uri_with_a_user_is_not_our_record_route() -> None:
    incoming = request(uri="sip:bob@192.0.2.10;lr", extra=(("Route", "<sip:next.example.net;lr>"),))
    assert preprocess_route(incoming, IDENTITY) is incoming


def test_foreign_route_is_left_alone() -> None:
    incoming = request(extra=(("Route", "<sip:next.example.net;lr>"),))
    assert preprocess_route(incoming, IDENTITY) is incoming


# -- 16.6 steps 2, 4, 6, 7 -----------------------------------------------------------------------


def test_target_becomes_request_uri_and_path_goes_on_top_of_route() -> None:
    incoming = request(extra=(("Route", "<sip:later.example.net;lr>"),))
    result = apply_target(incoming, "sip:bob@198.51.100.7", ("<sip:edge1.example.net;lr>", "<sip:edge2;lr>"))
    assert result.uri == "sip:bob@198.51.100.7"
    assert result.headers.values("Route") == (
        "<sip:edge1.example.net;lr>",
        "<sip:edge2;lr>",
        "<sip:later.example.net;lr>",
    )


def test_strict_next_hop_gets_the_request_uri_appended() -> None:
    incoming = request(extra=(("Route", "<sip:strict.example.net>, <sip:after.example.net;lr>"),))
    result = apply_target(incoming, "sip:bob@198.51.100.7", ())
    assert result.uri == "sip:strict.example.net"
    assert result.headers.values("Route") == ("<sip:after.example.net;lr>", "<sip:bob@198.51.100.7>")


def test_single_record_route_on_the_same_interface() -> None:
    result = add_record_route(request(), UDP_IF, UDP_IF)
    assert result.headers.values("Record-Route") == ("<sip:192.0.2.10:5060;transport=udp;lr>",)


def test_double_record_route_when_interfaces_differ() -> None:
    incoming = request(extra=(("Record-Route", "<sip:upstream.example.net;lr>"),))
    result = add_record_route(incoming, UDP_IF, TCP_IF)
    assert result.headers.values("Record-Route") == (
        "<sip:192.0.2.10:5060;transport=tcp;lr;r2=on>",
        "<sip:192.0.2.10:5060;transport=udp;lr;r2=on>",
        "<sip:upstream.example.net;lr>",
    )


@pytest.mark.parametrize(
    ("uri", "route", "expected"),
    [
        ("sip:bob@198.51.100.7", None, Peer(Transport.UDP, "198.51.100.7", 5060)),
        ("sip:bob@198.51.100.7:5070;transport=TCP", None, Peer(Transport.TCP, "198.51.100.7", 5070)),
        # A name without a port: port 0, SRV decides at the edge (RFC 3263 4.2).
        ("sips:bob@example.net", None, Peer(Transport.TLS, "example.net", 0)),
        ("sip:bob@example.net;transport=tls", None, Peer(Transport.TLS, "example.net", 0)),
        ("sip:bob@example.net", None, Peer(Transport.UDP, "example.net", 0)),
        ("sip:bob@example.net:5060", None, Peer(Transport.UDP, "example.net", 5060)),
        ("sip:bob@example.net:0", None, None),
        ("sip:bob@example.net;maddr=203.0.113.4", None, Peer(Transport.UDP, "203.0.113.4", 5060)),
        ("sip:bob@[2001:db8::7]:5062", None, Peer(Transport.UDP, "2001:db8::7", 5062)),
        (
            "sip:bob@198.51.100.7",
            "<sip:edge.example.net:5080;lr>",
            Peer(Transport.UDP, "edge.example.net", 5080),
        ),
        ("sip:bob@198.51.100.7;transport=sctp", None, None),
        ("tel:+15551234", None, None),
    ],
)
def test_next_hop(uri: str, route: str | None, expected: Peer | None) -> None:
    extra = (("Route", route),) if route else ()
    assert next_hop(request(uri=uri, extra=extra)) == expected


def test_stateless_branch_is_stable_and_request_specific() -> None:
    one = stateless_branch(request("ACK"))
    assert one == stateless_branch(request("ACK"))
    assert one != stateless_branch(request("ACK", cseq_number=2))
    assert one.startswith("z9hG4bK")


# -- identity --------------------------------------------------------------------------------------


def test_interface_for_picks_transport_and_family() -> None:
    v6 = Interface(Transport.UDP, "2001:db8::10", 5060)
    identity = ProxyIdentity((UDP_IF, TCP_IF, v6))
    assert identity.interface_for(Peer(Transport.TCP, "198.51.100.1", 1234)) == TCP_IF
    assert identity.interface_for(Peer(Transport.UDP, "2001:db8::1", 5060)) == v6
    assert identity.interface_for(Peer(Transport.UDP, "198.51.100.1", 5060)) == UDP_IF
    assert identity.interface_for(Peer(Transport.TLS, "198.51.100.1", 5061)) == UDP_IF


def test_identity_needs_an_interface() -> None:
    with pytest.raises(ValueError, match="interface"):
        ProxyIdentity(())


@pytest.mark.parametrize(
    ("uri", "ours"),
    [
        ("sip:192.0.2.10", True),
        ("sip:192.0.2.10:5060", True),
        ("sip:192.0.2.10:5070", False),
        ("sips:192.0.2.10", False),
        ("sip:PROXY.example.com", True),
        ("sip:bob@example.com;maddr=192.0.2.10", True),
        ("tel:+1555", False),
    ],
)
def test_is_local_uri(uri: str, ours: bool) -> None:
    assert IDENTITY.is_local_uri(parse_uri(uri)) is ours


# -- 18.2.2 / RFC 3581 / RFC 4475: response destination --------------------------------------------


@pytest.mark.parametrize(
    ("via", "expected"),
    [
        ("SIP/2.0/UDP 198.51.100.1:5062;branch=z9hG4bKa", Peer(Transport.UDP, "198.51.100.1", 5062)),
        ("SIP/2.0/UDP host.example.com;branch=z9hG4bKa", Peer(Transport.UDP, "host.example.com", 5060)),
        ("SIP/2.0/TLS host.example.com;branch=z9hG4bKa", Peer(Transport.TLS, "host.example.com", 5061)),
        (
            "SIP/2.0/UDP 10.0.0.1:5060;received=203.0.113.7;rport=40000;branch=z9hG4bKa",
            Peer(Transport.UDP, "203.0.113.7", 40000),
        ),
        (
            "SIP/2.0/UDP 10.0.0.1:5070;received=203.0.113.7;branch=z9hG4bKa",
            Peer(Transport.UDP, "203.0.113.7", 5070),
        ),
        ("SIP/2.0/UDP 10.0.0.1;maddr=203.0.113.8;branch=z9hG4bKa", Peer(Transport.UDP, "203.0.113.8", 5060)),
        ("SIP/2.0/UDP 255.255.255.255;branch=z9hG4bK1saber23", None),
        ("SIP/2.0/UDP 224.0.1.75;branch=z9hG4bKa", None),
        ("SIP/2.0/UDP 10.0.0.1;received=255.255.255.255;branch=z9hG4bKa", None),
        ("SIP/2.0/UDP [ff02::1]:5060;branch=z9hG4bKa", None),
        ("SIP/2.0/SCTP 198.51.100.1;branch=z9hG4bKa", None),
    ],
)
def test_response_destination(via: str, expected: Peer | None) -> None:
    assert response_destination(parse_via(via)) == expected


@pytest.mark.parametrize(
    ("host", "expected"),
    [("255.255.255.255", True), ("239.1.2.3", True), ("0.0.0.0", True), ("192.0.2.1", False), ("a.b", False)],
)
def test_is_broadcast_or_multicast(host: str, expected: bool) -> None:
    assert is_broadcast_or_multicast(host) is expected
