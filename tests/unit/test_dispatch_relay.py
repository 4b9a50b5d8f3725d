"""The dispatcher applies the relay policy (scaserver.proxy.relay) to everything it could relay:
each rule accepted and refused through the whole core, and nothing ever reaches the victim."""

from __future__ import annotations

from collections.abc import Sequence

import attrs
import pytest

from scaserver.proxy.relay import route_signature
from scaserver.sip.actions import Deliver, Send
from scaserver.sip.endpoint import MessageDropped, RequestRefused
from scaserver.sip.message import Message, Peer, Request, Response, Transport
from scaserver.sip.parser import parse_message
from scaserver.sip.trust import TrustedPeer
from tests.builders import DOMAIN, SERVER, Wire, digest_authorization, make_core

ALICE = Peer(Transport.UDP, "198.51.100.10", 5062)
BOB = Peer(Transport.UDP, "198.51.100.20", 5064)
PBX = Peer(Transport.UDP, "203.0.113.5", 5060)
VICTIM = Peer(Transport.UDP, "192.0.2.99", 5060)
OUR_ROUTE = f"<sip:{SERVER.host}:{SERVER.port};lr>"


def request(
    method: str,
    uri: str,
    *,
    peer: Peer = ALICE,
    branch: str = "z9hG4bKr1",
    from_user: str = "alice",
    from_tag: str = "ft1",
    to_uri: str | None = None,
    to_tag: str | None = None,
    call_id: str = "call-1",
    cseq: int = 1,
    route: str | None = None,
    extra: str = "",
) -> str:
    to = f"<{to_uri or uri}>" + (f";tag={to_tag}" if to_tag else "")
    routes = f"Route: {route}\r\n" if route else ""
    return (
        f"{method} {uri} SIP/2.0\r\n"
        f"Via: SIP/2.0/{peer.transport.value} {peer.host}:{peer.port};branch={branch};rport\r\n"
        f"Max-Forwards: 70\r\n"
        f"From: <sip:{from_user}@{DOMAIN}>;tag={from_tag}\r\n"
        f"To: {to}\r\n"
        f"Call-ID: {call_id}\r\n"
        f"CSeq: {cseq} {method}\r\n"
        f"Contact: <sip:{from_user}@{peer.host}:{peer.port}>\r\n"
        f"{routes}{extra}"
        f"Content-Length: 0\r\n\r\n"
    )


def responses(out: Sequence[tuple[Message, Peer]]) -> list[int]:
    return [m.status for m, _ in out if isinstance(m, Response)]


def relayed(out: Sequence[tuple[Message, Peer]]) -> list[tuple[str, Peer]]:
    return [(m.method, p) for m, p in out if isinstance(m, Request)]


def register(wire: Wire, user: str, peer: Peer) -> None:
    text = request("REGISTER", f"sip:{DOMAIN}", peer=peer, from_user=user, to_uri=f"sip:{user}@{DOMAIN}")
    assert responses(
        wire.deliver(text.replace("Content-Length", "Expires: 600\r\nContent-Length"), peer)
    ) == [200]


@attrs.frozen
class Call:
    wire: Wire
    record_route: str  # as the callee received it


def established_call(**core: object) -> Call:
    """alice calls bob through the proxy (authentication off), bob answers 200; both are
    registered (bob's in-dialog requests reach alice at her registered contact, R7)."""
    wire = Wire(make_core(require_auth=False, **core))  # type: ignore[arg-type]
    register(wire, "bob", BOB)
    register(wire, "alice", ALICE)
    out = wire.deliver(request("INVITE", f"sip:bob@{DOMAIN}", branch="z9hG4bKinv", call_id="call-ab"), ALICE)
    [(invite, peer)] = [(m, p) for m, p in out if isinstance(m, Request)]
    assert peer == BOB
    ok = Response(200, "OK", invite.headers.set("To", f"<sip:bob@{DOMAIN}>;tag=bt1"))
    assert responses(wire.send(ok, BOB)) == [200]
    return Call(wire, invite.headers.get("Record-Route") or "")


# -- R3: in-dialog requests through our signed Record-Route ---------------------------------------


def test_r3_record_route_carries_the_signature_of_the_dialog() -> None:
    call = established_call()
    signature = route_signature(b"", "call-ab", "ft1")
    assert call.record_route == f"<sip:{SERVER.host}:{SERVER.port};transport=udp;lr;rrsig={signature}>"


@pytest.mark.parametrize("method", ["BYE", "INVITE", "ACK", "INFO"])
def test_r3_the_caller_reaches_the_callee_through_our_signed_route(method: str) -> None:
    call = established_call()
    text = request(
        method, f"sip:bob@{BOB.host}:{BOB.port}", branch="z9hG4bKmid", call_id="call-ab",
        to_uri=f"sip:bob@{DOMAIN}", to_tag="bt1", cseq=2, route=call.record_route,
    )  # fmt: skip
    assert relayed(call.wire.deliver(text, ALICE)) == [(method, BOB)]


@pytest.mark.parametrize("method", ["BYE", "INVITE"])
def test_r3_the_callee_reaches_the_caller_through_the_same_route(method: str) -> None:
    call = established_call()
    text = request(
        method, f"sip:alice@{ALICE.host}:{ALICE.port}", peer=BOB, branch="z9hG4bKback", call_id="call-ab",
        from_user="bob", from_tag="bt1", to_uri=f"sip:alice@{DOMAIN}", to_tag="ft1", route=call.record_route,
    )  # fmt: skip
    assert relayed(call.wire.deliver(text, BOB)) == [(method, ALICE)]


def test_r3_a_strict_router_sends_our_entry_as_the_request_uri() -> None:
    call = established_call()
    ours = call.record_route.strip("<>")
    text = request(
        "BYE", ours, peer=BOB, branch="z9hG4bKstrict", call_id="call-ab", from_user="bob", from_tag="bt1",
        to_uri=f"sip:alice@{DOMAIN}", to_tag="ft1", route=f"<sip:alice@{ALICE.host}:{ALICE.port}>",
    )  # fmt: skip
    assert relayed(call.wire.deliver(text, BOB)) == [("BYE", ALICE)]


@pytest.mark.parametrize("method", ["INVITE", "MESSAGE", "BYE"])
@pytest.mark.parametrize(
    "route",
    [
        OUR_ROUTE,  # the open relay of old: no credentials, a To tag, our Route
        f"<sip:{SERVER.host}:{SERVER.port};lr;rrsig=0123456789abcdef01234567>",  # forged
        f"<sip:{SERVER.host}:{SERVER.port};lr;rrsig={route_signature(b'', 'another-call', 'ft1')}>",
    ],
)
def test_r3_no_valid_signature_no_relay_403(method: str, route: str) -> None:
    wire = Wire(make_core(require_auth=False))
    text = request(method, f"sip:victim@{VICTIM.host}", to_tag="x", route=route)
    out = wire.deliver(text, ALICE)
    assert responses(out) == [403]
    assert relayed(out) == []
    [reply] = wire.responses()
    assert reply.reason == "Forbidden"


def test_r3_the_signature_of_one_dialog_does_not_open_another() -> None:
    call = established_call()  # alice owns call-ab; she tries its Route on another Call-ID
    text = request(
        "INVITE", f"sip:victim@{VICTIM.host}", call_id="call-other", to_tag="x", route=call.record_route
    )
    out = call.wire.deliver(text, ALICE)
    assert responses(out) == [403]
    assert relayed(out) == []


def test_r3_without_a_route_of_ours_a_foreign_target_is_404() -> None:
    out = Wire(make_core(require_auth=False)).deliver(
        request("BYE", f"sip:v@{VICTIM.host}", to_tag="x"), ALICE
    )
    assert responses(out) == [404]


def test_r4_a_trusted_peer_may_route_in_dialog_through_an_unsigned_route_of_ours() -> None:
    wire = Wire(make_core(trusted=[TrustedPeer(f"{PBX.host}/32")]))
    text = request("BYE", f"sip:x@{VICTIM.host}", peer=PBX, to_tag="x", route=OUR_ROUTE)
    assert relayed(wire.deliver(text, PBX)) == [("BYE", VICTIM)]


# -- R5: ACK ---------------------------------------------------------------------------------------


def dropped(core_actions: list[object]) -> list[MessageDropped]:
    return [a.event for a in core_actions if isinstance(a, Deliver) and isinstance(a.event, MessageDropped)]


@pytest.mark.parametrize(
    ("to_tag", "route"),
    [(None, None), (None, OUR_ROUTE), ("x", None), ("x", OUR_ROUTE), ("x", f"<sip:{VICTIM.host};lr>")],
)
def test_r5_an_ack_outside_any_transaction_or_signed_dialog_is_dropped(
    to_tag: str | None, route: str | None
) -> None:
    core = make_core(require_auth=False)
    text = request("ACK", f"sip:victim@{VICTIM.host}", to_tag=to_tag, route=route)
    actions = core.receive(text.encode(), ALICE, 0.0)
    assert [a for a in actions if type(a).__name__ == "Send"] == []
    [fact] = dropped(list(actions))
    assert fact.kind == "relay-refused"
    assert fact.reason.startswith("relay: R5")


def test_r5_the_ack_of_a_rejected_invite_stays_in_its_transaction() -> None:
    wire = Wire(make_core())
    out = wire.deliver(request("INVITE", f"sip:bob@{DOMAIN}", branch="z9hG4bKrej"), ALICE)
    assert responses(out) == [407]
    tag = (wire.responses()[0].headers.get("To") or "").split("tag=")[1]
    assert wire.deliver(request("ACK", f"sip:bob@{DOMAIN}", branch="z9hG4bKrej", to_tag=tag), ALICE) == []


# -- R1, R2, R4: initial requests -----------------------------------------------------------------


def test_r4_a_preloaded_route_is_honoured_for_a_trusted_peer() -> None:
    wire = Wire(make_core(trusted=[TrustedPeer(f"{PBX.host}/32")]))
    text = request("INVITE", "sip:someone@elsewhere.example.net", peer=PBX, route=f"<sip:{VICTIM.host};lr>")
    out = wire.deliver(text, PBX)
    assert relayed(out) == [("INVITE", VICTIM)]


@pytest.mark.parametrize("require_auth", [True, False])
@pytest.mark.parametrize("uri", ["sip:someone@elsewhere.example.net", f"sip:bob@{DOMAIN}"])
def test_r4_a_preloaded_route_is_refused_to_untrusted_peers(require_auth: bool, uri: str) -> None:
    wire = Wire(make_core(require_auth=require_auth))
    out = wire.deliver(request("MESSAGE", uri, route=f"{OUR_ROUTE}, <sip:{VICTIM.host};lr>"), ALICE)
    assert responses(out) == [403]
    assert relayed(out) == []


def test_r4_an_authenticated_subscriber_cannot_preload_a_route() -> None:
    wire = Wire(make_core(upstream=PBX))
    plain = request("INVITE", f"sip:bob@{DOMAIN}", branch="z9hG4bKa1")
    assert responses(wire.deliver(plain, ALICE)) == [407]
    routed = request(
        "INVITE", f"sip:bob@{DOMAIN}", branch="z9hG4bKa2", cseq=2, route=f"<sip:{VICTIM.host};lr>"
    )
    message = parse_message(routed.encode())
    assert isinstance(message, Request)
    answered = digest_authorization(message, wire.responses()[0], "alice", "alice-secret")
    out = wire.send(answered, ALICE)
    assert responses(out) == [403]
    assert relayed(out) == []


def test_r2_other_domains_go_upstream_for_a_subscriber_after_authentication() -> None:
    wire = Wire(make_core(upstream=PBX))
    text = request("INVITE", "sip:someone@elsewhere.example.net", branch="z9hG4bKup1")
    out = wire.deliver(text, ALICE)
    assert responses(out) == [407]
    challenge = wire.responses()[0]
    answered = digest_authorization(parse_message(text.encode()), challenge, "alice", "alice-secret")  # type: ignore[arg-type]
    answered = answered.with_headers(
        answered.headers.set("CSeq", "2 INVITE").set(
            "Via", f"SIP/2.0/UDP {ALICE.host}:{ALICE.port};branch=z9hG4bKup2;rport"
        )
    )
    assert relayed(wire.send(answered, ALICE)) == [("INVITE", PBX)]


def test_r2_with_authentication_off_other_domains_are_for_trusted_peers_only() -> None:
    wire = Wire(make_core(require_auth=False, upstream=PBX))
    out = wire.deliver(request("INVITE", "sip:someone@elsewhere.example.net"), ALICE)
    assert responses(out) == [403]
    assert relayed(out) == []
    trusted = Wire(make_core(require_auth=False, upstream=PBX, trusted=[TrustedPeer("198.51.100.0/24")]))
    assert relayed(trusted.deliver(request("INVITE", "sip:someone@elsewhere.example.net"), ALICE)) == [
        ("INVITE", PBX)
    ]


def test_r1_a_local_user_is_reached_with_authentication_off() -> None:
    wire = Wire(make_core(require_auth=False))
    register(wire, "bob", BOB)
    assert relayed(wire.deliver(request("MESSAGE", f"sip:bob@{DOMAIN}"), ALICE)) == [("MESSAGE", BOB)]


# -- R6: unroutable Routes are 400, never 500 ------------------------------------------------------


@pytest.mark.parametrize(
    "route",
    [
        "<tel:+15551234>",
        f"<sip:{VICTIM.host};transport=sctp;lr>",
        f"<sip:{VICTIM.host}:99999;lr>",
        "<sips:pbx.example.net;lr>",
        "<sip:255.255.255.255;lr>",
        "garbage",
    ],
)
@pytest.mark.parametrize("to_tag", [None, "x"])
def test_r6_an_unroutable_preloaded_route_is_400(route: str, to_tag: str | None) -> None:
    wire = Wire(make_core(trusted=[TrustedPeer(f"{PBX.host}/32")]))
    text = request("INVITE", f"sip:x@{VICTIM.host}", peer=PBX, to_tag=to_tag, route=f"{OUR_ROUTE}, {route}")
    out = wire.deliver(text, PBX)
    assert responses(out) == [400]
    assert relayed(out) == []


def test_r6_an_unroutable_remote_target_in_a_signed_dialog_is_400() -> None:
    call = established_call()
    text = request(
        "BYE", "tel:+15551234", branch="z9hG4bKtel", call_id="call-ab", to_uri=f"sip:bob@{DOMAIN}",
        to_tag="bt1", cseq=2, route=call.record_route,
    )  # fmt: skip
    out = call.wire.deliver(text, ALICE)
    assert responses(out) == [400]


# -- R7: an untrusted party's in-dialog requests reach registered phones only ----------------------


def with_credentials(wire: Wire, text: str, peer: Peer, user: str) -> list[tuple[Message, Peer]]:
    """Send ``text``; answer its 401/407 with ``user``'s credentials (a new branch, CSeq + 1)."""
    assert responses(wire.deliver(text, peer))[-1] in (401, 407)
    message = parse_message(text.encode())
    assert isinstance(message, Request)
    via = f"SIP/2.0/UDP {peer.host}:{peer.port};branch=z9hG4bKauth{len(wire.outbox)};rport"
    cseq = int((message.headers.get("CSeq") or "1").split()[0]) + 1
    message = message.with_headers(message.headers.set("CSeq", f"{cseq} {message.method}").set("Via", via))
    answered = digest_authorization(message, wire.responses()[-1], user, f"{user}-secret")
    return wire.send(answered, peer)


def authenticated_call(*, trusted: Sequence[TrustedPeer] = (), upstream: Peer | None = None) -> Call:
    """alice and bob register with credentials; alice, authenticated, calls bob, who answers."""
    wire = Wire(make_core(trusted=trusted, upstream=upstream))
    for user, peer in (("bob", BOB), ("alice", ALICE)):
        text = request("REGISTER", f"sip:{DOMAIN}", peer=peer, from_user=user, to_uri=f"sip:{user}@{DOMAIN}")
        assert responses(with_credentials(wire, text, peer, user)) == [200]
    out = with_credentials(wire, request("INVITE", f"sip:bob@{DOMAIN}", call_id="call-ab"), ALICE, "alice")
    [(invite, peer)] = [(m, p) for m, p in out if isinstance(m, Request)]
    assert peer == BOB
    ok = Response(200, "OK", invite.headers.set("To", f"<sip:bob@{DOMAIN}>;tag=bt1"))
    assert responses(wire.send(ok, BOB)) == [200]
    [relayed_ok] = [m for m in wire.responses() if m.status == 200 and m.call_id == "call-ab"]
    assert relayed_ok.headers.get("Record-Route") == invite.headers.get("Record-Route")  # alice has it
    return Call(wire, invite.headers.get("Record-Route") or "")


def in_call(call: Call, method: str, uri: str, *, peer: Peer = ALICE, route: str | None = None) -> str:
    """A request of the established call from ``peer`` (alice: caller, else callee)."""
    caller = peer == ALICE
    return request(
        method, uri, peer=peer, branch=f"z9hG4bK{method.lower()}{uri.__hash__() & 0xFFFF}", call_id="call-ab",
        from_user="alice" if caller else "bob", from_tag="ft1" if caller else "bt1",
        to_uri=f"sip:{'bob' if caller else 'alice'}@{DOMAIN}", to_tag="bt1" if caller else "ft1", cseq=3,
        route=route or call.record_route,
    )  # fmt: skip


@pytest.mark.parametrize("method", ["BYE", "INVITE", "MESSAGE", "INFO"])
@pytest.mark.parametrize(
    ("uri", "after_ours"),
    [
        (f"sip:+15551234@{VICTIM.host}", None),  # the Request-URI names a gateway
        (f"sip:bob@{BOB.host}:5060", None),  # the callee's host on another port
        (f"sip:bob@{BOB.host}:{BOB.port}", f"<sip:{VICTIM.host};lr>"),  # a Route after ours
    ],
)
def test_r7_a_subscribers_in_dialog_request_to_a_foreign_host_is_403_and_goes_nowhere(
    method: str, uri: str, after_ours: str | None
) -> None:
    call = authenticated_call()
    route = call.record_route if after_ours is None else f"{call.record_route}, {after_ours}"
    out = call.wire.deliver(in_call(call, method, uri, route=route), ALICE)
    assert responses(out) == [403]
    assert relayed(out) == []
    assert (call.wire.responses()[-1].reason, call.wire.responses()[-1].status) == ("Forbidden", 403)


def test_r7_the_refusal_names_the_rule_and_the_next_hop() -> None:
    call = authenticated_call()
    actions = call.wire.core.receive(
        in_call(call, "BYE", f"sip:+15551234@{VICTIM.host}").encode(), ALICE, call.wire.now
    )
    [response] = [a.message for a in actions if isinstance(a, Send) and isinstance(a.message, Response)]
    assert response.status == 403
    [refused] = [a.event for a in actions if isinstance(a, Deliver) and isinstance(a.event, RequestRefused)]
    assert (refused.method, refused.peer, refused.status) == ("BYE", ALICE, 403)
    assert refused.detail == (
        "relay: R7 in-dialog next hop 192.0.2.99:5060 is not a registered contact, a trusted peer"
        " or the upstream"
    )


@pytest.mark.parametrize("method", ["BYE", "INVITE", "MESSAGE"])
def test_r7_the_caller_reaches_the_callees_registered_contact(method: str) -> None:
    call = authenticated_call()
    out = call.wire.deliver(in_call(call, method, f"sip:bob@{BOB.host}:{BOB.port}"), ALICE)
    assert relayed(out) == [(method, BOB)]


@pytest.mark.parametrize("method", ["BYE", "INVITE"])
def test_r7_the_callee_reaches_the_callers_registered_contact(method: str) -> None:
    call = authenticated_call()
    out = call.wire.deliver(in_call(call, method, f"sip:alice@{ALICE.host}:{ALICE.port}", peer=BOB), BOB)
    assert relayed(out) == [(method, ALICE)]


def test_r7_the_callee_cannot_reach_a_foreign_host_either() -> None:
    call = authenticated_call()
    out = call.wire.deliver(in_call(call, "BYE", f"sip:x@{VICTIM.host}", peer=BOB), BOB)
    assert responses(out) == [403]
    assert relayed(out) == []


def test_r7_a_phone_behind_nat_is_reached_at_its_flow_and_its_contact_is_not_needed() -> None:
    """bob registers a private Contact from a public flow: the dialog's target is the private
    Contact, the request goes to the flow (both count as registered)."""
    wire = Wire(make_core(require_auth=False))
    public = Peer(Transport.UDP, "203.0.113.77", 40123)
    text = request("REGISTER", f"sip:{DOMAIN}", peer=public, from_user="bob", to_uri=f"sip:bob@{DOMAIN}")
    text = text.replace(f"<sip:bob@{public.host}:{public.port}>", "<sip:bob@10.0.0.5:5060>")
    text = text.replace("Content-Length", "Expires: 600\r\nContent-Length")
    assert responses(wire.deliver(text, public)) == [200]
    assert wire.core.registrar.reaches("10.0.0.5", 5060)
    assert wire.core.registrar.reaches(public.host, public.port)
    out = wire.deliver(request("INVITE", f"sip:bob@{DOMAIN}", call_id="call-ab"), ALICE)
    [(invite, _)] = [(m, p) for m, p in out if isinstance(m, Request)]
    route = invite.headers.get("Record-Route") or ""
    text = request(
        "MESSAGE", "sip:bob@10.0.0.5", branch="z9hG4bKnat", call_id="call-ab", to_uri=f"sip:bob@{DOMAIN}",
        to_tag="bt1", cseq=2, route=route,
    )  # fmt: skip
    # The Record-Route carries bob's flow (RFC 5626 flow token): the request goes there.
    assert ";ob;ob-b=" in route
    assert relayed(wire.deliver(text, ALICE)) == [("MESSAGE", public)]


def test_r7_once_the_callee_unregisters_its_address_is_no_longer_a_next_hop() -> None:
    call = authenticated_call()
    text = request("REGISTER", f"sip:{DOMAIN}", peer=BOB, from_user="bob", to_uri=f"sip:bob@{DOMAIN}", cseq=5)
    text = text.replace("Content-Length", "Expires: 0\r\nContent-Length").replace("z9hG4bKr1", "z9hG4bKun")
    assert responses(with_credentials(call.wire, text, BOB, "bob")) == [200]
    out = call.wire.deliver(in_call(call, "BYE", f"sip:bob@{BOB.host}:{BOB.port}"), ALICE)
    assert responses(out) == [403]


def test_r7_the_upstream_and_trusted_peers_are_next_hops_for_anyone() -> None:
    gateway = Peer(Transport.UDP, "203.0.113.80", 5060)
    call = authenticated_call(upstream=PBX, trusted=[TrustedPeer(f"{gateway.host}/32")])
    out = call.wire.deliver(in_call(call, "BYE", f"sip:+15551234@{PBX.host}"), ALICE)
    assert relayed(out) == [("BYE", PBX)]
    out = call.wire.deliver(in_call(call, "INFO", f"sip:+15551234@{gateway.host}"), ALICE)
    assert relayed(out) == [("INFO", gateway)]


def test_r7_does_not_restrict_a_trusted_peer() -> None:
    call = authenticated_call(trusted=[TrustedPeer(f"{PBX.host}/32")])
    text = request(
        "BYE", f"sip:x@{VICTIM.host}", peer=PBX, branch="z9hG4bKpbx", call_id="call-ab",
        to_uri=f"sip:bob@{DOMAIN}", to_tag="bt1", cseq=4, route=call.record_route,
    )  # fmt: skip
    assert relayed(call.wire.deliver(text, PBX)) == [("BYE", VICTIM)]


def test_r7_an_ack_to_a_foreign_host_is_dropped_and_one_to_the_callee_relayed() -> None:
    call = authenticated_call()
    actions = call.wire.core.receive(
        in_call(call, "ACK", f"sip:+15551234@{VICTIM.host}").encode(), ALICE, call.wire.now
    )
    assert [a for a in actions if isinstance(a, Send)] == []
    [fact] = dropped(list(actions))
    assert fact.kind == "relay-refused"
    assert fact.reason.startswith("relay: R5 ACK dropped: relay: R7 in-dialog next hop 192.0.2.99:5060")
    out = call.wire.deliver(in_call(call, "ACK", f"sip:bob@{BOB.host}:{BOB.port}"), ALICE)
    assert relayed(out) == [("ACK", BOB)]
