"""RFC 5626 flow tokens in our Record-Route: encoding, and which end a mid-dialog request goes to."""

from __future__ import annotations

from scaserver.proxy.routing import (
    Interface,
    ProxyIdentity,
    dialog_flow,
    flow_params,
    flow_token,
    parse_flow_token,
    sender_flow,
)
from scaserver.sip.message import Headers, Peer, Request, Transport

US = Interface(Transport.UDP, "192.0.2.1", 5060)
IDENTITY = ProxyIdentity((US,))
CALLER = Peer(Transport.UDP, "203.0.113.7", 40123)
CALLEE = Peer(Transport.UDP, "198.51.100.9", 41000)
ELSEWHERE = Peer(Transport.UDP, "198.51.100.50", 5060)


def with_route(route: str) -> Request:
    return Request("BYE", "sip:x@192.168.1.10:5060", Headers.of(("Route", route)))


def test_token_round_trips_for_ipv4_ipv6_and_streams() -> None:
    for flow in (CALLER, Peer(Transport.TCP, "2001:db8::7", 51000)):
        token = flow_token(flow)
        assert token.isalnum()
        assert parse_flow_token(token) == flow


def test_garbage_is_no_token() -> None:
    forged = [b"WS|192.0.2.9|5060", b"UDP|evil.example.com|5060", b"UDP|192.0.2.9|0", b"UDP|192.0.2.9|x"]
    for text in ("", "zz", "616263", "7c7c", *(raw.hex() for raw in forged)):
        assert parse_flow_token(text) is None


def test_record_route_carries_ob_and_the_tokens_of_the_flowed_ends() -> None:
    assert flow_params(None, None) == ""
    assert flow_params(CALLER, None) == f";ob;ob-a={flow_token(CALLER)}"
    value = US.record_route_uri(signature="s1", flows=flow_params(CALLER, CALLEE))
    assert value == (
        f"<sip:192.0.2.1:5060;transport=udp;lr;rrsig=s1;ob;ob-a={flow_token(CALLER)};ob-b={flow_token(CALLEE)}>"
    )


def test_a_request_goes_to_the_flow_of_the_end_it_did_not_come_from() -> None:
    both = with_route(US.record_route_uri(flows=flow_params(CALLER, CALLEE)))
    assert dialog_flow(both, IDENTITY, CALLER) == CALLEE
    assert dialog_flow(both, IDENTITY, CALLEE) == CALLER
    assert dialog_flow(both, IDENTITY, ELSEWHERE) is None  # neither end: no guess
    caller_only = with_route(US.record_route_uri(flows=flow_params(CALLER, None)))
    assert dialog_flow(caller_only, IDENTITY, ELSEWHERE) == CALLER
    assert dialog_flow(caller_only, IDENTITY, CALLER) is None  # towards the callee: by its URI


def test_no_token_or_a_route_beyond_us_means_no_flow() -> None:
    assert dialog_flow(with_route(US.record_route_uri()), IDENTITY, ELSEWHERE) is None
    beyond = with_route(f"{US.record_route_uri(flows=flow_params(CALLER, None))}, <sip:edge.example.net;lr>")
    assert dialog_flow(beyond, IDENTITY, ELSEWHERE) is None
    assert dialog_flow(Request("BYE", "sip:x@192.168.1.10", Headers.EMPTY), IDENTITY, ELSEWHERE) is None


def test_sender_flow_is_the_source_when_the_contact_is_elsewhere_or_over_a_stream() -> None:
    def invite(contact: str) -> Request:
        return Request("INVITE", "sip:bob@example.com", Headers.of(("Contact", contact)))

    assert sender_flow(invite("<sip:alice@192.168.1.10:5060>"), CALLER) == CALLER
    assert sender_flow(invite(f"<sip:alice@{CALLER.host}:{CALLER.port}>"), CALLER) is None
    tcp = Peer(Transport.TCP, CALLER.host, 51000)
    assert sender_flow(invite(f"<sip:alice@{CALLER.host}:5060;transport=tcp>"), tcp) == tcp
    assert sender_flow(Request("INVITE", "sip:bob@example.com", Headers.EMPTY), CALLER) is None
