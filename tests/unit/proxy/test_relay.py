"""The relay policy (scaserver.proxy.relay): every rule, what it lets through and what it refuses."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from scaserver.proxy.relay import (
    Origin,
    Rule,
    check_ack,
    check_dialog_target,
    check_in_dialog,
    check_initial,
    check_next_hop,
    derive_route_key,
    route_signature,
    signature_for,
)
from scaserver.proxy.routing import add_record_route, preprocess_route
from scaserver.sip.errors import BadRequest, CallDoesNotExist, Forbidden, NotFound, SipError
from scaserver.sip.message import Peer, Request, Transport

from .build import IDENTITY, TCP_IF, UDP_IF, request

UPSTREAM = Peer(Transport.UDP, "203.0.113.5", 5060)
STRANGER = Origin(trusted=False)
SUBSCRIBER = Origin(trusted=False, authenticated=True)
TRUSTED = Origin(trusted=True)
AUTH_OFF = Origin(trusted=False, auth_required=False)
CALL_ID = "call-1@198.51.100.1"  # build.request's Call-ID; its From tag is a1
SIGNED = route_signature(IDENTITY.route_key, CALL_ID, "a1")


def in_dialog(route: str | None, *, uri: str = "sip:bob@198.51.100.7", method: str = "BYE") -> Request:
    extra = (("Route", route),) if route is not None else ()
    return request(method, uri, to_tag="b1", extra=extra)


# -- the signature -------------------------------------------------------------------------------


def test_the_route_key_is_derived_not_the_secret_itself() -> None:
    key = derive_route_key(b"server-secret")
    assert key != b"server-secret"
    assert key == derive_route_key(b"server-secret")  # the same after a restart
    assert key != derive_route_key(b"another-secret")


def test_the_signature_binds_call_id_and_tag() -> None:
    key = b"k"
    assert route_signature(key, "c1", "t1") == route_signature(key, "c1", "t1")
    assert route_signature(key, "c1", "t1") != route_signature(key, "c2", "t1")
    assert route_signature(key, "c1", "t1") != route_signature(key, "c1", "t2")
    assert route_signature(key, "c1", "t1") != route_signature(b"other", "c1", "t1")
    assert len(route_signature(key, "c1", "t1")) == 24


def test_record_route_carries_the_signature_of_the_initial_request() -> None:
    invite = request()
    signature = signature_for(invite, IDENTITY.route_key)
    assert signature == SIGNED
    stamped = add_record_route(invite, UDP_IF, UDP_IF, signature=signature)
    assert stamped.headers.values("Record-Route") == (
        f"<sip:192.0.2.10:5060;transport=udp;lr;rrsig={SIGNED}>",
    )


def test_both_entries_of_a_doubled_record_route_are_signed() -> None:
    stamped = add_record_route(request(), UDP_IF, TCP_IF, signature=SIGNED)
    assert stamped.headers.values("Record-Route") == (
        f"<sip:192.0.2.10:5060;transport=tcp;lr;rrsig={SIGNED};r2=on>",
        f"<sip:192.0.2.10:5060;transport=udp;lr;rrsig={SIGNED};r2=on>",
    )


# -- R1, R2, R4: initial requests ----------------------------------------------------------------


@pytest.mark.parametrize("origin", [SUBSCRIBER, TRUSTED, AUTH_OFF])
def test_r1_local_targets_are_relayed_for_whoever_authentication_let_in(origin: Origin) -> None:
    assert check_initial(origin, local=True, preloaded_route=False, upstream=None) is Rule.LOCAL_TARGET


@pytest.mark.parametrize("origin", [SUBSCRIBER, TRUSTED])
def test_r2_other_domains_go_upstream_for_subscribers_and_trusted_peers(origin: Origin) -> None:
    assert check_initial(origin, local=False, preloaded_route=False, upstream=UPSTREAM) is Rule.FOREIGN_DOMAIN


@pytest.mark.parametrize("origin", [STRANGER, AUTH_OFF])
def test_r2_other_domains_are_refused_to_anyone_else_even_with_authentication_off(origin: Origin) -> None:
    with pytest.raises(Forbidden, match="relay: R2"):
        check_initial(origin, local=False, preloaded_route=False, upstream=UPSTREAM)


def test_r2_without_an_upstream_nobody_reaches_other_domains() -> None:
    with pytest.raises(Forbidden, match=r"relay: R2 .*no upstream"):
        check_initial(TRUSTED, local=False, preloaded_route=False, upstream=None)


def test_r4_a_preloaded_route_is_honoured_for_trusted_peers() -> None:
    assert check_initial(TRUSTED, local=False, preloaded_route=True, upstream=None) is Rule.PRELOADED_ROUTE


@pytest.mark.parametrize("origin", [SUBSCRIBER, STRANGER, AUTH_OFF])
@pytest.mark.parametrize("local", [True, False])
def test_r4_a_preloaded_route_is_refused_to_everyone_else(origin: Origin, local: bool) -> None:
    with pytest.raises(Forbidden, match="relay: R4"):
        check_initial(origin, local=local, preloaded_route=True, upstream=UPSTREAM)


# -- R3: in-dialog requests ----------------------------------------------------------------------


@pytest.mark.parametrize("origin", [STRANGER, SUBSCRIBER, TRUSTED])
def test_r3_our_signed_route_is_relayed_for_anyone(origin: Origin) -> None:
    bye = in_dialog(f"<sip:192.0.2.10:5060;transport=udp;lr;rrsig={SIGNED}>")
    assert check_in_dialog(bye, IDENTITY, origin, for_us=False) is Rule.IN_DIALOG


def test_r3_the_callee_direction_matches_by_its_to_tag() -> None:
    # The callee's BYE: From is the callee (tag b1), To the caller (tag a1, which we signed).
    bye = request("BYE", "sip:alice@198.51.100.1", extra=(("Route", f"<sip:192.0.2.10;lr;rrsig={SIGNED}>"),))
    swapped = bye.with_headers(
        bye.headers.set("From", "<sip:bob@example.com>;tag=b1").set("To", "<sip:alice@example.com>;tag=a1")
    )
    assert check_in_dialog(swapped, IDENTITY, STRANGER, for_us=False) is Rule.IN_DIALOG


def test_r3_a_doubled_route_is_checked_on_its_first_entry() -> None:
    route = (
        f"<sip:192.0.2.10:5060;transport=tcp;lr;rrsig={SIGNED};r2=on>, "
        f"<sip:192.0.2.10;lr;rrsig={SIGNED};r2=on>"
    )
    assert check_in_dialog(in_dialog(route), IDENTITY, STRANGER, for_us=False) is Rule.IN_DIALOG


def test_r3_a_strict_router_puts_our_signed_entry_in_the_request_uri() -> None:
    bye = in_dialog("<sip:bob@198.51.100.7>", uri=f"sip:192.0.2.10;lr;rrsig={SIGNED}")
    assert check_in_dialog(bye, IDENTITY, STRANGER, for_us=False) is Rule.IN_DIALOG
    assert preprocess_route(bye, IDENTITY).uri == "sip:bob@198.51.100.7"


@pytest.mark.parametrize(
    "route",
    [
        "<sip:192.0.2.10;lr>",  # unsigned: the open-relay form of old
        "<sip:192.0.2.10;lr;rrsig=000000000000000000000000>",  # forged
        "<sip:192.0.2.10;lr;rrsig=" + route_signature(IDENTITY.route_key, "another-call", "a1") + ">",
        "<sip:192.0.2.10;lr;rrsig=" + route_signature(b"another-key", CALL_ID, "a1") + ">",
        "<sip:192.0.2.10;lr;rrsig=" + SIGNED.upper() + ">",
        "<sip:192.0.2.10;lr;rrsig=" + SIGNED[:-1] + ">",
        "<sip:192.0.2.10;lr;rrsig=>",
        "<sip:192.0.2.10;lr>, <sip:victim.example.net;lr;rrsig=" + SIGNED + ">",  # not on our entry
    ],
)
@pytest.mark.parametrize("origin", [STRANGER, SUBSCRIBER, AUTH_OFF])
def test_r3_an_unsigned_or_wrongly_signed_route_of_ours_is_403(route: str, origin: Origin) -> None:
    with pytest.raises(Forbidden, match="relay: R3 in-dialog request without a valid scaserver Record-Route"):
        check_in_dialog(in_dialog(route), IDENTITY, origin, for_us=False)


def test_r3_a_signature_of_another_dialog_does_not_open_this_one() -> None:
    other = route_signature(IDENTITY.route_key, "attacker-own-call", "x1")
    bye = in_dialog(f"<sip:192.0.2.10;lr;rrsig={other}>")
    with pytest.raises(Forbidden):
        check_in_dialog(bye, IDENTITY, SUBSCRIBER, for_us=False)


def test_r4_a_trusted_peer_may_use_an_unsigned_route_of_ours() -> None:
    bye = in_dialog("<sip:192.0.2.10;lr>, <sip:pbx2.example.net;lr>")
    assert check_in_dialog(bye, IDENTITY, TRUSTED, for_us=False) is Rule.PRELOADED_ROUTE


@pytest.mark.parametrize("origin", [STRANGER, TRUSTED])
def test_r3_no_route_of_ours_to_a_foreign_target_is_404(origin: Origin) -> None:
    for route in (None, "<sip:victim.example.net;lr>"):
        with pytest.raises(NotFound, match="relay: R3 not here"):
            check_in_dialog(in_dialog(route), IDENTITY, origin, for_us=False)


def test_r3_no_route_of_ours_to_us_is_481() -> None:
    with pytest.raises(CallDoesNotExist, match="relay: R3"):
        check_in_dialog(in_dialog(None, uri="sip:bob@example.com"), IDENTITY, STRANGER, for_us=True)


def test_r3_an_unparsable_route_is_400() -> None:
    with pytest.raises(BadRequest, match="relay: R6"):
        check_in_dialog(in_dialog("<sip:192.0.2.10;lr"), IDENTITY, TRUSTED, for_us=False)


# -- R5: ACK --------------------------------------------------------------------------------------


def test_r5_an_ack_in_a_signed_dialog_is_relayed() -> None:
    ack = in_dialog(f"<sip:192.0.2.10;lr;rrsig={SIGNED}>", method="ACK")
    assert check_ack(ack, IDENTITY, STRANGER) is Rule.IN_DIALOG


@pytest.mark.parametrize(
    ("route", "to_tag", "reason"),
    [
        (None, "", "R5 ACK without a To tag"),
        ("<sip:192.0.2.10;lr>", "", "R5 ACK without a To tag"),
        (None, "b1", "R5 ACK dropped: relay: R3 not here"),
        ("<sip:192.0.2.10;lr>", "b1", "R5 ACK dropped: relay: R3 in-dialog request without a valid"),
    ],
)
def test_r5_any_other_ack_is_dropped_with_its_reason(route: str | None, to_tag: str, reason: str) -> None:
    ack = request("ACK", "sip:victim@198.51.100.66", to_tag=to_tag or None)
    if route is not None:
        ack = ack.with_headers(ack.headers.add("Route", route))
    verdict = check_ack(ack, IDENTITY, STRANGER)
    assert isinstance(verdict, str)
    assert verdict.startswith(f"relay: {reason}")


# -- R6: the next hop ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "route",
    [
        "<sip:next.example.net;lr>",
        "<sip:198.51.100.7:5070;transport=tcp;lr>",
        "<sip:[2001:db8::1];lr>",
    ],
)
def test_r6_a_reachable_next_hop_passes(route: str) -> None:
    assert check_next_hop(in_dialog(route), IDENTITY) is Rule.NEXT_HOP


@pytest.mark.parametrize(
    "route",
    [
        "garbage",
        "<tel:+15551234>",
        "<http://example.net/>",
        "<sip:next.example.net;transport=sctp;lr>",
        "<sips:next.example.net;lr>",  # no TLS interface here
        "<sip:next.example.net:0;lr>",
        "<sip:next.example.net:99999;lr>",
        "<sip:255.255.255.255;lr>",
        "<sip:224.0.0.1;lr>",
        "<sip:[::1;lr>",
    ],
)
def test_r6_an_unroutable_next_hop_is_400_never_500(route: str) -> None:
    with pytest.raises(SipError) as raised:
        check_next_hop(in_dialog(route), IDENTITY)
    assert raised.value.status == 400
    assert raised.value.detail.startswith("relay: R6")


def test_r6_a_host_name_the_edge_cannot_resolve_is_400() -> None:
    known = {"pbx.example.net"}.__contains__
    assert check_next_hop(in_dialog("<sip:pbx.example.net;lr>"), IDENTITY, known) is Rule.NEXT_HOP
    with pytest.raises(BadRequest, match=r"relay: R6 unroutable Route: nowhere\.invalid cannot be resolved"):
        check_next_hop(in_dialog("<sip:nowhere.invalid;lr>"), IDENTITY, known)
    with pytest.raises(BadRequest, match="relay: R6"):
        check_next_hop(in_dialog(None, uri="sip:bob@nowhere.invalid"), IDENTITY, known)


# -- R7: where an in-dialog request of an untrusted party may go ---------------------------------

PHONE = Peer(Transport.UDP, "198.51.100.7", 5060)  # in_dialog()'s Request-URI, at 5060


def reaches_only(*peers: Peer) -> Callable[[Peer], bool]:
    return lambda destination: (destination.host, destination.port) in {(p.host, p.port) for p in peers}


@pytest.mark.parametrize(
    ("uri", "route"),
    [
        ("sip:bob@198.51.100.7", None),  # the Request-URI, default port
        ("sip:bob@198.51.100.7:5060;transport=tcp", None),
        ("sip:victim@192.0.2.99", "<sip:198.51.100.7;lr>"),  # the Route after ours wins
        ("sip:victim@192.0.2.99", "<sip:192.0.2.10:5060;lr>"),  # ourselves
        ("sip:victim@192.0.2.99", "<sip:proxy.example.com;lr>"),
    ],
)
def test_r7_a_registered_contact_or_ourselves_as_next_hop_passes(uri: str, route: str | None) -> None:
    prepared = in_dialog(route, uri=uri)
    assert check_dialog_target(prepared, IDENTITY, reaches_only(PHONE)) is Rule.DIALOG_TARGET


@pytest.mark.parametrize(
    ("uri", "route", "where"),
    [
        ("sip:+15551234@192.0.2.99", None, "192.0.2.99:5060"),
        ("sip:bob@198.51.100.7:5070", None, "198.51.100.7:5070"),  # the phone's host, another port
        ("sips:bob@198.51.100.7", None, "198.51.100.7:5061"),
        ("sip:bob@198.51.100.7", "<sip:192.0.2.99;lr>", "192.0.2.99:5060"),  # a Route after ours
        ("sip:bob@[2001:db8::99]", None, "[2001:db8::99]:5060"),
    ],
)
def test_r7_any_other_next_hop_is_403(uri: str, route: str | None, where: str) -> None:
    prepared = in_dialog(route, uri=uri)
    with pytest.raises(Forbidden) as raised:
        check_dialog_target(prepared, IDENTITY, reaches_only(PHONE))
    assert raised.value.detail == (
        f"relay: R7 in-dialog next hop {where} is not a registered contact, a trusted peer or the upstream"
    )


def test_r7_the_next_hop_asked_about_is_the_one_of_rfc_3261_16_6_step_7() -> None:
    asked: list[Peer] = []

    def reachable(destination: Peer) -> bool:
        asked.append(destination)
        return True

    prepared = in_dialog("<sip:192.0.2.50:5080;transport=tcp;maddr=192.0.2.51;lr>")
    assert check_dialog_target(prepared, IDENTITY, reachable) is Rule.DIALOG_TARGET
    assert asked == [Peer(Transport.TCP, "192.0.2.51", 5080)]
