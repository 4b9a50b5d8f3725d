"""The dispatcher: what the server answers itself, what it routes where (RFC 3261 8.2, 16)."""

from __future__ import annotations

import attrs
import pytest

from scaserver.proxy.relay import route_signature
from scaserver.router.facts import TransactionCompleted
from scaserver.sca.line import SharedLine
from scaserver.sip.actions import Deliver
from scaserver.sip.endpoint import MessageDropped, StatelessReply
from scaserver.sip.headers import top_via
from scaserver.sip.message import Peer, Request, Response, Transport
from scaserver.sip.parser import parse_message
from scaserver.sip.trust import TrustedPeer
from tests.builders import DOMAIN, SERVER, Wire, digest_authorization, make_core

ALICE = Peer(Transport.UDP, "198.51.100.10", 5062)
BOB = Peer(Transport.UDP, "198.51.100.20", 5064)
GATEWAY = Peer(Transport.UDP, "203.0.113.5", 5060)


def request(
    method: str,
    uri: str,
    *,
    peer: Peer = ALICE,
    branch: str = "z9hG4bKa1",
    from_uri: str = f"sip:alice@{DOMAIN}",
    to_uri: str | None = None,
    to_tag: str | None = None,
    cseq: int = 1,
    call_id: str = "call-1",
    extra: str = "",
    body: str = "",
    max_forwards: int = 70,
) -> str:
    to = f"<{to_uri or uri}>" + (f";tag={to_tag}" if to_tag else "")
    host = f"{peer.host}:{peer.port}"
    return (
        f"{method} {uri} SIP/2.0\r\n"
        f"Via: SIP/2.0/{peer.transport.value} {host};branch={branch};rport\r\n"
        f"Max-Forwards: {max_forwards}\r\n"
        f"From: <{from_uri}>;tag=ft1\r\n"
        f"To: {to}\r\n"
        f"Call-ID: {call_id}\r\n"
        f"CSeq: {cseq} {method}\r\n"
        f"Contact: <sip:{from_uri.split(':')[1].split('@', maxsplit=1)[0]}@{host}>\r\n"
        f"{extra}"
        f"Content-Length: {len(body)}\r\n\r\n{body}"
    )


def only_response(wire: Wire, text: str, peer: Peer = ALICE) -> tuple[Response, Peer]:
    out = wire.deliver(text, peer)
    responses = [(m, p) for m, p in out if isinstance(m, Response)]
    assert len(responses) == 1, out
    return responses[0]


def register(wire: Wire, user: str, peer: Peer, password: str, *, call_id: str = "reg-1") -> Response:
    text = request(
        "REGISTER",
        f"sip:{DOMAIN}",
        peer=peer,
        from_uri=f"sip:{user}@{DOMAIN}",
        to_uri=f"sip:{user}@{DOMAIN}",
        call_id=call_id,
        branch=f"z9hG4bKreg{user}1",
        extra="Expires: 600\r\n",
    )
    challenge, _ = only_response(wire, text, peer)
    assert challenge.status == 401
    answered = digest_authorization(parse_message(text.encode()), challenge, user, password)  # type: ignore[arg-type]
    answered = answered.with_headers(
        answered.headers.set("CSeq", "2 REGISTER").set(
            "Via", f"SIP/2.0/UDP {peer.host}:{peer.port};branch=z9hG4bKreg{user}2;rport"
        )
    )
    response, _ = only_response_message(wire, answered, peer)
    return response


def only_response_message(wire: Wire, message: Request, peer: Peer) -> tuple[Response, Peer]:
    out = wire.send(message, peer)
    responses = [(m, p) for m, p in out if isinstance(m, Response)]
    assert len(responses) == 1, out
    return responses[0]


# ---------------------------------------------------------------- the server as UAS


def test_options_to_the_server_is_answered_with_allow_accept_supported() -> None:
    wire = Wire(make_core())
    response, peer = only_response(wire, request("OPTIONS", f"sip:{SERVER.host}:{SERVER.port}"))
    assert response.status == 200
    assert "INVITE" in (response.headers.get("Allow") or "")
    assert response.headers.get("Accept") == "application/sdp"
    assert response.headers.get("Supported") is not None
    assert peer == ALICE  # rport: back to the source port


def test_options_ping_to_an_unregistered_user_of_ours_is_answered_by_us_for_a_trusted_peer() -> None:
    core = make_core(trusted=[TrustedPeer("198.51.100.10/32")])
    response, _ = only_response(Wire(core), request("OPTIONS", f"sip:ping@{DOMAIN}"))
    assert response.status == 200


def test_options_ping_to_a_user_from_an_untrusted_peer_is_challenged() -> None:
    response, _ = only_response(Wire(make_core()), request("OPTIONS", f"sip:ping@{DOMAIN}"))
    assert response.status == 407


def test_options_with_max_forwards_zero_addressed_to_us_gets_200() -> None:
    response, _ = only_response(Wire(make_core()), request("OPTIONS", f"sip:{DOMAIN}", max_forwards=0))
    assert response.status == 200


def test_unknown_method_gets_501_with_allow() -> None:
    response, _ = only_response(Wire(make_core()), request("FROBNICATE", f"sip:{DOMAIN}"))
    assert response.status == 501
    assert "REGISTER" in (response.headers.get("Allow") or "")


def test_known_method_to_the_server_itself_gets_405_with_allow() -> None:
    response, _ = only_response(Wire(make_core(require_auth=False)), request("MESSAGE", f"sip:{SERVER.host}"))
    assert response.status == 405
    assert response.headers.get("Allow") == "OPTIONS, REGISTER, SUBSCRIBE"


def test_unsupported_uri_scheme_gets_416() -> None:
    response, _ = only_response(
        Wire(make_core()), request("OPTIONS", "urn:service:sos", to_uri=f"sip:x@{DOMAIN}")
    )
    assert response.status == 416


def test_unknown_require_gets_420_with_unsupported() -> None:
    text = request("OPTIONS", f"sip:{DOMAIN}", extra="Require: nobody-knows, path\r\n")
    response, _ = only_response(Wire(make_core()), text)
    assert response.status == 420
    assert response.headers.get("Unsupported") == "nobody-knows"


def test_max_forwards_zero_for_a_foreign_domain_gets_483() -> None:
    text = request("MESSAGE", "sip:someone@elsewhere.example.net", max_forwards=0)
    response, _ = only_response(Wire(make_core()), text)
    assert response.status == 483


def test_wrong_version_gets_505() -> None:
    text = request("OPTIONS", f"sip:{DOMAIN}").replace("SIP/2.0\r\nVia", "SIP/3.0\r\nVia", 1)
    response, _ = only_response(Wire(make_core()), text)
    assert response.status == 505


def test_unparsable_but_answerable_request_gets_a_stateless_400() -> None:
    text = request("OPTIONS", f"sip:{DOMAIN}", extra="Content-Length: 5\r\n")  # two conflicting lengths
    core = make_core()
    actions = core.receive(text.encode(), ALICE, 0.0)
    assert any(isinstance(a, Deliver) and isinstance(a.event, StatelessReply) for a in actions)
    response, _ = only_response(Wire(make_core()), text)
    assert response.status == 400


def test_message_without_via_is_dropped_silently() -> None:
    text = "OPTIONS sip:example.com SIP/2.0\r\nCall-ID: x\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
    actions = make_core().receive(text.encode(), ALICE, 0.0)
    assert [type(a) for a in actions] == [Deliver]
    assert isinstance(actions[0], Deliver) and isinstance(actions[0].event, MessageDropped)


def test_garbage_is_dropped_without_an_answer() -> None:
    actions = make_core().receive(b"\x00\xff\x10garbage\r\n\r\n", ALICE, 0.0)
    assert all(isinstance(a, Deliver) and isinstance(a.event, MessageDropped) for a in actions)


def test_a_broadcast_sent_by_never_becomes_the_reply_address() -> None:
    text = request("OPTIONS", f"sip:{DOMAIN}").replace(
        f"{ALICE.host}:{ALICE.port};branch=z9hG4bKa1;rport",
        "255.255.255.255:5060;branch=z9hG4bKa1;received=255.255.255.255",
    )
    response, peer = only_response(Wire(make_core()), text)
    assert response.status == 200
    assert peer == Peer(Transport.UDP, ALICE.host, 5060)  # the real source, never the broadcast


def test_received_and_rport_are_stamped_on_the_top_via_of_the_response() -> None:
    text = request("OPTIONS", f"sip:{DOMAIN}").replace(f"{ALICE.host}:{ALICE.port};", "10.0.0.9:5062;")
    response, peer = only_response(Wire(make_core()), text)
    via = top_via(response)
    assert via.received == ALICE.host and via.rport == ALICE.port
    assert peer == ALICE


def test_cancel_matching_nothing_gets_481() -> None:
    response, _ = only_response(Wire(make_core()), request("CANCEL", f"sip:bob@{DOMAIN}"))
    assert response.status == 481


def test_in_dialog_request_for_us_without_route_gets_481() -> None:
    text = request("BYE", f"sip:{SERVER.host}:{SERVER.port}", to_tag="gone")
    response, _ = only_response(Wire(make_core()), text)
    assert response.status == 481


def test_retransmitted_request_is_answered_from_its_transaction() -> None:
    wire = Wire(make_core())
    text = request("OPTIONS", f"sip:{DOMAIN}")
    first, _ = only_response(wire, text)
    again, _ = only_response(wire, text)
    assert first == again


# ---------------------------------------------------------------- authentication and relay policy


def test_register_is_challenged_with_sha256_then_md5() -> None:
    text = request("REGISTER", f"sip:{DOMAIN}", extra="Expires: 600\r\n")
    response, _ = only_response(Wire(make_core()), text)
    assert response.status == 401
    challenges = response.headers.lines("WWW-Authenticate")
    assert [c.split("algorithm=")[1].split(",")[0] for c in challenges] == ["SHA-256", "MD5"]


def test_register_with_credentials_binds_the_contact() -> None:
    wire = Wire(make_core())
    response = register(wire, "alice", ALICE, "alice-secret")
    assert response.status == 200
    assert f"sip:alice@{ALICE.host}:{ALICE.port}" in (response.headers.get("Contact") or "")


def test_unknown_user_and_wrong_password_get_the_same_reply() -> None:
    replies = []
    for user, password in (("mallory", "x"), ("alice", "wrong")):
        wire = Wire(make_core())
        aor = f"sip:{user}@{DOMAIN}"
        text = request("REGISTER", f"sip:{DOMAIN}", from_uri=aor, to_uri=aor, extra="Expires: 600\r\n")
        challenge, _ = only_response(wire, text)
        answered = digest_authorization(parse_message(text.encode()), challenge, user, password)  # type: ignore[arg-type]
        answered = answered.with_headers(
            answered.headers.set("Via", f"SIP/2.0/UDP {ALICE.host}:{ALICE.port};branch=z9hG4bKx2;rport")
        )
        reply, _ = only_response_message(wire, answered, ALICE)
        replies.append(reply)
    assert replies[0].status == replies[1].status == 401
    assert [n for n, _ in replies[0].headers] == [n for n, _ in replies[1].headers]


def test_invite_to_a_foreign_domain_without_upstream_is_refused_403() -> None:
    text = request("INVITE", "sip:someone@elsewhere.example.net")
    response, _ = only_response(Wire(make_core(require_auth=False)), text)
    assert response.status == 403


def test_invite_from_an_unauthenticated_peer_is_challenged_407() -> None:
    response, _ = only_response(Wire(make_core()), request("INVITE", f"sip:bob@{DOMAIN}"))
    assert response.status == 407
    assert response.headers.lines("Proxy-Authenticate")


def test_invite_to_an_unregistered_local_user_gets_404() -> None:
    response, _ = only_response(
        Wire(make_core(require_auth=False)), request("INVITE", f"sip:nobody@{DOMAIN}")
    )
    assert response.status == 404


# ---------------------------------------------------------------- proxying a call


def test_call_between_two_registered_phones_goes_through_the_proxy() -> None:
    wire = Wire(make_core())
    assert register(wire, "alice", ALICE, "alice-secret").status == 200
    assert register(wire, "bob", BOB, "bob-secret").status == 200
    invite_text = request("INVITE", f"sip:bob@{DOMAIN}", branch="z9hG4bKinv1", call_id="call-ab")
    challenge, _ = only_response(wire, invite_text)
    assert challenge.status == 407
    ack = request(
        "ACK", f"sip:bob@{DOMAIN}", branch="z9hG4bKinv1", call_id="call-ab", to_tag=challenge_tag(challenge)
    )
    assert wire.deliver(ack, ALICE) == []
    invite = digest_authorization(parse_message(invite_text.encode()), challenge, "alice", "alice-secret")  # type: ignore[arg-type]
    invite = invite.with_headers(
        invite.headers.set("CSeq", "2 INVITE").set(
            "Via", f"SIP/2.0/UDP {ALICE.host}:{ALICE.port};branch=z9hG4bKinv2;rport"
        )
    )
    out = wire.send(invite, ALICE)
    forwarded = [(m, p) for m, p in out if isinstance(m, Request)]
    assert len(forwarded) == 1
    branch, peer = forwarded[0]
    assert peer == BOB
    assert branch.uri == f"sip:bob@{BOB.host}:{BOB.port}"
    signature = route_signature(b"", "call-ab", "ft1")
    assert branch.headers.get("Record-Route") == (
        f"<sip:{SERVER.host}:{SERVER.port};transport=udp;lr;rrsig={signature}>"
    )
    assert top_via(branch).host == SERVER.host
    assert "Proxy-Authorization" not in branch.headers  # our credentials are consumed, never forwarded
    ringing = Response(180, "Ringing", branch.headers.set("To", f"{branch.headers.get('To')};tag=bobtag"))
    relayed = wire.send(ringing, BOB)
    assert [(m.status, p) for m, p in relayed if isinstance(m, Response)] == [(180, ALICE)]
    ok = attrs.evolve(ringing, status=200, reason="OK")
    relayed = wire.send(ok, BOB)
    responses = [m for m, _ in relayed if isinstance(m, Response)]
    assert [r.status for r in responses] == [200]
    assert len(responses[0].headers.values("Via")) == 1  # our Via popped on the way back


def challenge_tag(challenge: Response) -> str:
    to = challenge.headers.get("To") or ""
    return to.split("tag=")[1]


@pytest.mark.parametrize("transport", [Transport.UDP, Transport.TCP])
def test_responses_on_a_stream_go_back_on_the_connection(transport: Transport) -> None:
    peer = Peer(transport, "198.51.100.30", 40000)
    text = request("OPTIONS", f"sip:{DOMAIN}", peer=Peer(transport, "198.51.100.30", 5060))
    response, destination = only_response(Wire(make_core()), text, peer)
    assert response.status == 200
    assert destination == (peer if transport is Transport.TCP else Peer(transport, peer.host, 40000))


def test_sca_call_info_is_stripped_from_relayed_calls_and_other_values_kept() -> None:
    wire = Wire(make_core(require_auth=False))
    text = request(
        "REGISTER",
        f"sip:{DOMAIN}",
        peer=BOB,
        from_uri=f"sip:bob@{DOMAIN}",
        to_uri=f"sip:bob@{DOMAIN}",
        branch="z9hG4bKregb",
        extra="Expires: 600\r\n",
    )
    response, _ = only_response(wire, text, BOB)
    assert response.status == 200
    sca_value = f"<sip:{DOMAIN}>;appearance-index=1"
    invite = request(
        "INVITE",
        f"sip:bob@{DOMAIN}",
        branch="z9hG4bKci1",
        extra=f"Call-Info: {sca_value}, <http://x.example/intercom>;answer-after=0\r\n",
    )
    out = wire.deliver(invite, ALICE)
    [(branch, _)] = [(m, p) for m, p in out if isinstance(m, Request)]
    assert branch.headers.values("Call-Info") == ("<http://x.example/intercom>;answer-after=0",)
    ringing = Response(
        180,
        "Ringing",
        branch.headers.set("To", f"{branch.headers.get('To')};tag=b1").set("Call-Info", sca_value),
    )
    relayed = [m for m, _ in wire.send(ringing, BOB) if isinstance(m, Response)]
    assert [r.status for r in relayed] == [180]
    assert "Call-Info" not in relayed[0].headers


def test_subscribe_for_another_event_on_a_shared_line_gets_489_with_allow_events() -> None:
    wire = Wire(make_core(require_auth=False, lines=[SharedLine(f"sip:2001@{DOMAIN}", 2)]))
    text = request("SUBSCRIBE", f"sip:2001@{DOMAIN}", extra="Event: presence\r\nExpires: 60\r\n")
    response, _ = only_response(wire, text)
    assert response.status == 489
    assert response.headers.get("Allow-Events") == "call-info, line-seize"


def test_subscribe_without_event_on_a_shared_line_gets_400_missing_event() -> None:
    wire = Wire(make_core(require_auth=False, lines=[SharedLine(f"sip:2001@{DOMAIN}", 2)]))
    response, _ = only_response(wire, request("SUBSCRIBE", f"sip:2001@{DOMAIN}", extra="Expires: 60\r\n"))
    assert response.status == 400


def test_in_dialog_request_to_an_aor_of_ours_without_route_gets_481() -> None:
    response, _ = only_response(Wire(make_core()), request("BYE", f"sip:bob@{DOMAIN}", to_tag="t1"))
    assert response.status == 481


def test_final_answers_are_counted_as_completed_transactions() -> None:
    actions = make_core().receive(request("OPTIONS", f"sip:{DOMAIN}").encode(), ALICE, 0.0)
    facts = [a.event for a in actions if isinstance(a, Deliver) and isinstance(a.event, TransactionCompleted)]
    assert facts == [TransactionCompleted("non-invite-server", "2xx")]


def test_preloaded_route_beyond_us_is_refused_to_a_subscriber_with_credentials() -> None:
    # Relay rule R4: an authenticated subscriber does not get round the 403 for other
    # domains with a Route of its own choosing (trusted peers: tests/unit/test_dispatch_relay.py).
    wire = Wire(make_core())
    text = request(
        "INVITE",
        "sip:someone@elsewhere.example.net",
        branch="z9hG4bKpre1",
        extra="Route: <sip:192.0.2.50;lr>\r\n",
    )
    response, _ = only_response(wire, text)
    assert response.status == 403
    assert wire.requests() == []


def _sca_subscribe(peer: Peer, *, from_user: str, to_tag: str | None = None, cseq: int = 1) -> str:
    return request(
        "SUBSCRIBE",
        f"sip:2001@{DOMAIN}",
        peer=peer,
        from_uri=f"sip:{from_user}@{DOMAIN}",
        to_tag=to_tag,
        cseq=cseq,
        call_id="sub-1",
        branch=f"z9hG4bKsub{cseq}{peer.port}",
        extra="Event: call-info\r\nExpires: 600\r\n",
    )


def test_row6_trusted_peer_subscribes_for_anybody_and_owns_what_it_made() -> None:
    line = SharedLine(f"sip:2001@{DOMAIN}", 2, frozenset({"alice"}))
    gateway = TrustedPeer("203.0.113.5/32", None, "pbx")
    wire = Wire(make_core(trusted=[gateway], lines=[line]))
    response, _ = only_response(wire, _sca_subscribe(GATEWAY, from_user="pbx"), GATEWAY)
    assert response.status == 202
    (sub,) = wire.core.sca.subscriptions()
    assert sub.owner == "peer:203.0.113.5" and sub.peer == GATEWAY
    # A refresh of its dialog from an untrusted address must authenticate: challenged.
    tag = str(response.headers.get("To")).split(";tag=")[1]
    challenge, _ = only_response(wire, _sca_subscribe(BOB, from_user="pbx", to_tag=tag, cseq=2), BOB)
    assert challenge.status == 401


def test_row6_without_authentication_the_from_aor_owns_the_subscription() -> None:
    wire = Wire(
        make_core(
            require_auth=False, lines=[SharedLine(f"sip:2001@{DOMAIN}", 2, frozenset({"alice", "bob"}))]
        )
    )
    response, _ = only_response(wire, _sca_subscribe(ALICE, from_user="alice"))
    assert response.status == 202
    tag = str(response.headers.get("To")).split(";tag=")[1]
    # From another address: only the same From AoR may use the dialog.
    refused, _ = only_response(wire, _sca_subscribe(BOB, from_user="bob", to_tag=tag, cseq=2), BOB)
    assert refused.status == 403
    moved, _ = only_response(wire, _sca_subscribe(BOB, from_user="alice", to_tag=tag, cseq=3), BOB)
    assert moved.status == 202
    # A user that is neither the AoR's nor a member gets 403 for its initial SUBSCRIBE.
    carol = request(
        "SUBSCRIBE",
        f"sip:2001@{DOMAIN}",
        from_uri=f"sip:carol@{DOMAIN}",
        call_id="sub-c",
        extra="Event: call-info\r\nExpires: 600\r\n",
    )
    assert only_response(wire, carol)[0].status == 403
