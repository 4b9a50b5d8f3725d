"""Canonical AoRs (sca.md 1), line membership, and NOTIFY routing (section 4, RFC 3261 12.2.1.1)."""

from __future__ import annotations

import attrs

from scaserver.sca.line import SharedLine, canonical_aor, host_part, side_aor
from scaserver.sca.notify import SubscriptionStatus, build_notify, next_hop, request_target
from scaserver.sca.subscription import Package, Subscription, SubscriptionState
from scaserver.sip.message import Headers, Peer, Transport, canonical_name


def test_canonical_aor() -> None:
    assert canonical_aor("sip:2001@PBX.example.com:5060;transport=tcp?x=y") == "sip:2001@pbx.example.com"
    assert canonical_aor("sip:2001@pbx.example.com:5080") == "sip:2001@pbx.example.com:5080"
    assert canonical_aor("sip:pbx.example.com") is None
    assert canonical_aor("tel:+15551234") is None
    assert canonical_aor("not a uri") is None


def test_side_aor_uses_the_contact_user_when_it_differs() -> None:
    assert (
        side_aor("sip:2001@pbx.example.com", "sip:2001-line1@192.0.2.1") == "sip:2001-line1@pbx.example.com"
    )
    assert side_aor("sip:2001@pbx.example.com", "sip:2001@192.0.2.1") == "sip:2001@pbx.example.com"
    assert side_aor("sip:2001@pbx.example.com", "sip:192.0.2.1") == "sip:2001@pbx.example.com"
    assert side_aor("sip:2001@pbx.example.com", "garbage") == "sip:2001@pbx.example.com"
    assert side_aor("tel:+1", None) is None


def test_host_part() -> None:
    assert host_part("sip:2001@pbx.example.com:5080") == "pbx.example.com:5080"


def test_line_membership_and_index_bounds() -> None:
    open_line = SharedLine("sip:2001@h")
    assert open_line.admits()
    assert open_line.allows_index(99) and not open_line.allows_index(0)
    line = SharedLine("sip:2001@h", 2, frozenset({"bob", "sip:2001@192.0.2.9"}))
    assert line.admits(user="bob")
    assert line.admits(contact="sip:2001@192.0.2.9:5060;transport=udp")
    assert not line.admits(user="eve", contact="sip:2001@192.0.2.8")
    assert line.allows_index(2) and not line.allows_index(3)


def _sub(*routes: str) -> Subscription:
    return Subscription(
        subscriber="sip:2001@192.0.2.11:5062;transport=tcp",
        aor="sip:2001@pbx.example.com",
        event=Package.CALL_INFO,
        expires=100.0,
        call_id="c",
        from_tag="f",
        to_tag="t",
        record_route=routes,
    )


def test_loose_route_set_keeps_the_contact_as_request_uri() -> None:
    sub = _sub("<sip:p1.example.com;lr>", "<sip:p2.example.com;lr>")
    assert request_target(sub) == (sub.subscriber, sub.record_route)
    assert next_hop(sub) == Peer(Transport.UDP, "p1.example.com", 5060)


def test_strict_first_hop_becomes_the_request_uri() -> None:
    sub = _sub("<sip:p1.example.com>", "<sip:p2.example.com;lr>")
    uri, routes = request_target(sub)
    assert uri == "sip:p1.example.com"
    assert routes == ("<sip:p2.example.com;lr>", f"<{sub.subscriber}>")


def test_next_hop_without_routes_is_the_contact_and_known_peer_wins() -> None:
    sub = _sub()
    assert next_hop(sub) == Peer(Transport.TCP, "192.0.2.11", 5062)
    known = Peer(Transport.UDP, "203.0.113.5", 40000)
    assert next_hop(attrs.evolve(sub, peer=known)) == known
    assert next_hop(attrs.evolve(sub, subscriber="tel:+1")) is None


def test_notify_headers_and_subscription_state() -> None:
    request = build_notify(
        _sub(),
        cseq=7,
        contact="sip:sca@192.0.2.1",
        call_info="<sip:h>;appearance-index=1",
        status=SubscriptionStatus(True, reason="timeout"),
    )
    assert request.method == "NOTIFY"
    assert request.headers.get("CSeq") == "7 NOTIFY"
    assert request.headers.get("Contact") == "<sip:sca@192.0.2.1>"
    assert request.headers.get("Subscription-State") == "terminated;reason=timeout"
    assert request.body == b""
    assert SubscriptionStatus(True).render() == "terminated"
    assert SubscriptionStatus(False, 30).render() == "active;expires=30"


def test_notify_header_names_are_canonical() -> None:
    """Looked up by canonical name (``Headers.get``), so written that way."""
    request = build_notify(
        _sub("<sip:p1.example.com;lr>"),
        cseq=1,
        contact="sip:sca@192.0.2.1",
        call_info="<sip:h>;appearance-index=*;appearance-state=idle",
        status=SubscriptionStatus(False, 30),
    )
    names = [name for name, _ in request.headers.fields]
    assert names == [canonical_name(name) for name in names]
    assert request.headers == Headers.of(*request.headers.fields)
    assert "Route" in names


def test_state_codes_and_reasons_follow_the_table() -> None:
    assert SubscriptionState.TERMINATED_TIMEOUT.value == 8
    assert SubscriptionState.TERMINATED_NORESOURCE.reason == "noresource"
    assert SubscriptionState.TERMINATED.reason is None
    assert SubscriptionState.ACTIVE.reason is None and not SubscriptionState.ACTIVE.terminated
    assert Package.from_code(2) is Package.LINE_SEIZE and Package.CALL_INFO.code == 1
