"""RFC 3261 section 18.1.1 in the core: a request the server originates that is larger than
1300 bytes goes over TCP to a destination reachable by TCP, falls back to UDP (published once)
when the connection cannot be made, and goes over UDP, published once, to a destination behind
a NAT."""

from __future__ import annotations

from scaserver.owners import AnsweredOnBus
from scaserver.router.router import SipRouter
from scaserver.router.transport import LARGE_REQUEST_BYTES, LargeRequestOverUdp
from scaserver.sip.actions import Action, Deliver, Send, SendRequest
from scaserver.sip.message import Headers, Peer, Request, Transport
from scaserver.sip.serializer import serialize
from tests.builders import make_core as make_router

PHONE = Peer(Transport.UDP, "198.51.100.10", 5062)
NAT = Peer(Transport.UDP, "203.0.113.77", 40112)


def notify(contact: str, body_size: int) -> Request:
    fields = Headers.of(
        ("Max-Forwards", "70"),
        ("From", "<sip:2001@example.com>;tag=s1"),
        ("To", "<sip:2001@example.com>;tag=p1"),
        ("Call-ID", "sub-1"),
        ("CSeq", "2 NOTIFY"),
        ("Event", "call-info"),
        ("Subscription-State", "active;expires=3600"),
        ("Call-Info", "<sip:example.com>;appearance-index=*;appearance-state=idle"),
        ("Content-Length", "0"),
    )
    return Request("NOTIFY", contact, fields, b"x" * body_size)


def make_core() -> SipRouter:
    """A core whose own requests here are sent with plain string contexts, answered on the bus."""
    core = make_router()
    core.owners.register(str, AnsweredOnBus())
    return core


def sends(actions: list[Action]) -> list[tuple[Request, Peer]]:
    return [(a.message, a.peer) for a in actions if isinstance(a, Send) and isinstance(a.message, Request)]


def facts(actions: list[Action]) -> list[LargeRequestOverUdp]:
    return [a.event for a in actions if isinstance(a, Deliver) and isinstance(a.event, LargeRequestOverUdp)]


def test_a_small_request_stays_on_udp() -> None:
    core = make_core()
    out = core.run([SendRequest(notify(f"sip:2001@{PHONE.host}:{PHONE.port}", 100), PHONE, "n1")], 0.0)
    assert [peer for _, peer in sends(out)] == [PHONE]
    assert facts(out) == []


def test_a_large_request_goes_over_tcp_to_a_contact_reached_directly() -> None:
    core = make_core()
    out = core.run([SendRequest(notify(f"sip:2001@{PHONE.host}:{PHONE.port}", 1400), PHONE, "n1")], 0.0)
    [(sent, peer)] = sends(out)
    assert peer == Peer(Transport.TCP, PHONE.host, PHONE.port)
    assert len(serialize(sent)) > LARGE_REQUEST_BYTES
    assert (sent.headers.get("Via") or "").startswith("SIP/2.0/TCP ")
    assert facts(out) == []


def test_the_size_counts_the_via_the_layer_adds() -> None:
    core = make_core()
    bare = notify(f"sip:2001@{PHONE.host}:{PHONE.port}", 0)
    just_under = LARGE_REQUEST_BYTES - len(serialize(bare)) - 10  # the Via makes it larger than 1300
    out = core.run([SendRequest(notify(f"sip:2001@{PHONE.host}:{PHONE.port}", just_under), PHONE, "n1")], 0.0)
    [(sent, peer)] = sends(out)
    assert len(serialize(sent)) > LARGE_REQUEST_BYTES
    assert peer.transport is Transport.TCP


def test_when_tcp_cannot_connect_the_request_goes_over_udp_published_once() -> None:
    core = make_core()
    tcp = Peer(Transport.TCP, PHONE.host, PHONE.port)
    contact = f"sip:2001@{PHONE.host}:{PHONE.port}"
    core.run([SendRequest(notify(contact, 1400), PHONE, "n1")], 0.0)
    out = core.connection_lost(tcp, 0.1)
    [(sent, peer)] = sends(out)
    assert peer == PHONE
    assert (sent.headers.get("Via") or "").startswith("SIP/2.0/UDP ")
    [fact] = facts(out)
    assert (fact.peer, fact.method, fact.reason) == (PHONE, "NOTIFY", "no TCP connection")
    assert fact.size > LARGE_REQUEST_BYTES
    again = core.run([SendRequest(notify(contact, 1400), PHONE, "n2")], 1.0)
    assert [peer for _, peer in sends(again)] == [PHONE]
    assert facts(again) == []


def test_a_destination_behind_a_nat_gets_it_over_udp_published_once() -> None:
    core = make_core()
    contact = "sip:2001@192.168.1.100:5060"
    out = core.run([SendRequest(notify(contact, 1400), NAT, "n1")], 0.0)
    assert [peer for _, peer in sends(out)] == [NAT]
    [fact] = facts(out)
    assert fact.peer == NAT
    again = core.run([SendRequest(notify(contact, 1400), NAT, "n2")], 1.0)
    assert [peer for _, peer in sends(again)] == [NAT]
    assert facts(again) == []


def test_a_contact_asking_for_tcp_is_tried_over_tcp() -> None:
    core = make_core()
    out = core.run([SendRequest(notify("sip:2001@192.168.1.100:5060;transport=tcp", 1400), NAT, "n1")], 0.0)
    assert [peer for _, peer in sends(out)] == [Peer(Transport.TCP, NAT.host, NAT.port)]
