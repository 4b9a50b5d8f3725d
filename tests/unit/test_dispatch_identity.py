"""RFC 3325 through the whole core: a P-Asserted-Identity is believed from trusted peers only,
the server asserts the line (or subscriber) of a call leaving for a trusted upstream with
``insert_pai``, and ``Privacy: id`` keeps the identity inside the trust domain."""

from __future__ import annotations

from collections.abc import Sequence

from scaserver.sca.line import SharedLine
from scaserver.sip.message import Headers, Message, Peer, Request
from scaserver.sip.parser import parse_message
from scaserver.sip.trust import TrustedPeer, asserted, requests_id_privacy, without_identity
from tests.builders import DOMAIN, Wire, digest_authorization, make_core
from tests.unit.test_dispatch_relay import ALICE, BOB, PBX, register, request, responses

FORGED = "P-Asserted-Identity: <sip:ceo@example.com>\r\nP-Preferred-Identity: <sip:ceo@example.com>\r\n"
LINE = f"sip:2001@{DOMAIN}"
FOREIGN = "sip:+15551234@elsewhere.example.net"


def on_line(text: str, user: str = "alice") -> str:
    """``text`` sent by ``user`` on the line: its Contact user is the line's (Polycom)."""
    return text.replace(f"Contact: <sip:{user}@", "Contact: <sip:2001@")


def relayed_requests(out: Sequence[tuple[Message, Peer]]) -> list[tuple[Request, Peer]]:
    return [(m, p) for m, p in out if isinstance(m, Request)]


def authenticated(wire: Wire, text: str, user: str, peer: Peer = ALICE) -> list[tuple[Request, Peer]]:
    """Send ``text`` from ``peer``, answer the challenge as ``user``; the relayed requests."""
    assert responses(wire.deliver(text, peer)) == [407]
    challenge = wire.responses()[-1]
    answered = digest_authorization(parse_message(text.encode()), challenge, user, f"{user}-secret")  # type: ignore[arg-type]
    answered = answered.with_headers(
        answered.headers.set("CSeq", "2 INVITE").set(
            "Via", f"SIP/2.0/UDP {peer.host}:{peer.port};branch=z9hG4bKauth2;rport"
        )
    )
    return relayed_requests(wire.send(answered, peer))


# -- the pure parts ----------------------------------------------------------------------------


def test_privacy_id_is_read_among_other_privacy_values() -> None:
    assert requests_id_privacy(Headers.of(("Privacy", "header; id")))
    assert requests_id_privacy(Headers.of(("Privacy", "ID")))
    assert not requests_id_privacy(Headers.of(("Privacy", "header;user")))
    assert not requests_id_privacy(Headers.EMPTY)


def test_the_asserted_identity_replaces_every_identity_header() -> None:
    given = Headers.of(("P-Asserted-Identity", "<sip:x@y>"), ("P-Preferred-Identity", "<sip:z@y>"))
    assert list(asserted(given, LINE)) == [("P-Asserted-Identity", f"<{LINE}>")]
    assert list(without_identity(given)) == []


# -- trust domain: what comes in -----------------------------------------------------------------


def test_an_untrusted_peers_asserted_identity_never_reaches_the_callee() -> None:
    core = make_core(require_auth=False)
    wire = Wire(core)
    register(wire, "bob", BOB)
    out = wire.deliver(request("INVITE", f"sip:bob@{DOMAIN}", extra=FORGED), ALICE)
    [(invite, peer)] = relayed_requests(out)
    assert peer == BOB
    assert "P-Asserted-Identity" not in invite.headers
    assert "P-Preferred-Identity" not in invite.headers
    assert core.disclosure.identities_removed == 1


def test_a_trusted_peers_asserted_identity_is_relayed() -> None:
    core = make_core(require_auth=False, trusted=[TrustedPeer(f"{PBX.host}/32")])
    wire = Wire(core)
    register(wire, "bob", BOB)
    text = request(
        "INVITE", f"sip:bob@{DOMAIN}", peer=PBX, extra="P-Asserted-Identity: <sip:+15550001@pstn>\r\n"
    )
    [(invite, _)] = relayed_requests(wire.deliver(text, PBX))
    assert invite.headers.get("P-Asserted-Identity") == "<sip:+15550001@pstn>"
    assert core.disclosure.identities_removed == 0


def test_privacy_id_keeps_a_trusted_identity_from_an_untrusted_callee() -> None:
    core = make_core(require_auth=False, trusted=[TrustedPeer(f"{PBX.host}/32")])
    wire = Wire(core)
    register(wire, "bob", BOB)
    extra = "P-Asserted-Identity: <sip:+15550001@pstn>\r\nPrivacy: id\r\n"
    [(invite, _)] = relayed_requests(
        wire.deliver(request("INVITE", f"sip:bob@{DOMAIN}", peer=PBX, extra=extra), PBX)
    )
    assert "P-Asserted-Identity" not in invite.headers
    assert invite.headers.get("Privacy") == "id"
    assert core.disclosure.identities_removed == 1


# -- insert_pai: what goes out to the trusted upstream ------------------------------------------


def upstream_core(*, insert_pai: bool = True, trusted_upstream: bool = True) -> Wire:
    trusted = [TrustedPeer(f"{PBX.host}/32")] if trusted_upstream else []
    lines = [SharedLine(LINE, 4, frozenset({"alice", f"sip:bob@{DOMAIN}"}))]
    return Wire(make_core(upstream=PBX, trusted=trusted, lines=lines, insert_pai=insert_pai))


def test_a_members_call_leaves_for_the_trusted_upstream_with_the_lines_identity() -> None:
    wire = upstream_core()
    text = on_line(request("INVITE", FOREIGN, extra=FORGED))
    [(invite, peer)] = authenticated(wire, text, "alice")
    assert peer == PBX
    assert invite.headers.values("P-Asserted-Identity") == (f"<{LINE}>",)
    assert "P-Preferred-Identity" not in invite.headers


def test_a_call_on_no_line_asserts_the_authenticated_subscriber() -> None:
    wire = upstream_core()
    [(invite, _)] = authenticated(wire, request("INVITE", FOREIGN, extra=FORGED), "alice")
    assert invite.headers.values("P-Asserted-Identity") == (f"<sip:alice@{DOMAIN}>",)


def test_privacy_id_still_sends_the_identity_to_the_trusted_upstream() -> None:
    wire = upstream_core()
    [(invite, _)] = authenticated(wire, on_line(request("INVITE", FOREIGN, extra="Privacy: id\r\n")), "alice")
    assert invite.headers.values("P-Asserted-Identity") == (f"<{LINE}>",)
    assert invite.headers.get("Privacy") == "id"


def test_a_non_member_is_not_asserted_as_the_line() -> None:
    wire = Wire(
        make_core(
            upstream=PBX, trusted=[TrustedPeer(f"{PBX.host}/32")], insert_pai=True,
            lines=[SharedLine(LINE, 4, frozenset({"bob"}))],
        )
    )  # fmt: skip
    [(invite, _)] = authenticated(wire, on_line(request("INVITE", FOREIGN)), "alice")
    assert invite.headers.values("P-Asserted-Identity") == (f"<sip:alice@{DOMAIN}>",)


def test_no_identity_is_inserted_when_off_or_towards_an_untrusted_upstream() -> None:
    for wire in (upstream_core(insert_pai=False), upstream_core(trusted_upstream=False)):
        [(invite, peer)] = authenticated(wire, on_line(request("INVITE", FOREIGN, extra=FORGED)), "alice")
        assert peer == PBX
        assert "P-Asserted-Identity" not in invite.headers


def test_a_member_listed_by_its_aor_is_asserted_as_the_line() -> None:
    wire = upstream_core()
    [(invite, _)] = authenticated(
        wire, on_line(request("INVITE", FOREIGN, from_user="bob"), "bob"), "bob", BOB
    )
    assert invite.headers.values("P-Asserted-Identity") == (f"<{LINE}>",)
