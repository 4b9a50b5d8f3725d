"""Phones behind NAT in the core: outbound REGISTERs, ping time-outs and closed flows are flow
failures that drop the bindings and subscriptions of the flow, and nothing else."""

from __future__ import annotations

from scaserver.owners import PingFailed
from scaserver.registrar.binding import BindingRemoved, RemovalReason
from scaserver.registrar.nat import FlowFailed, FlowFailure, NatPing, ping_request
from scaserver.sca.line import SharedLine
from scaserver.sca.subscription import SubscriptionRemoved
from scaserver.sip.actions import Action, Deliver, Send, SendRequest, StartTimer
from scaserver.sip.message import Peer, Request, Response, Transport
from tests.builders import DOMAIN, Wire, make_core
from tests.unit.test_dispatch import only_response, request

PHONE = Peer(Transport.UDP, "203.0.113.7", 40123)  # the NAT's mapping of 192.168.1.10:5060
LINE = SharedLine(f"sip:2001@{DOMAIN}", 2, frozenset({"alice"}))


def nated_register(wire: Wire, peer: Peer = PHONE, *, contact_params: str = "", extra: str = "") -> Response:
    text = request(
        "REGISTER",
        f"sip:{DOMAIN}",
        peer=peer,
        to_uri=f"sip:alice@{DOMAIN}",
        call_id="reg-nat",
        extra=f"Expires: 600\r\n{extra}",
    ).replace(
        f"Contact: <sip:alice@{peer.host}:{peer.port}>",
        f"Contact: <sip:alice@192.168.1.10:5060>{contact_params}",
    )
    response, _ = only_response(wire, text, peer)
    return response


def subscribe(wire: Wire, peer: Peer = PHONE) -> None:
    text = request(
        "SUBSCRIBE",
        f"sip:2001@{DOMAIN}",
        peer=peer,
        call_id="sub-nat",
        branch="z9hG4bKsubnat",
        extra="Event: call-info\r\nExpires: 600\r\n",
    )
    responses = [m for m, _ in wire.deliver(text, peer) if isinstance(m, Response)]
    assert [r.status for r in responses] == [202]


def ping(wire: Wire, flow: Peer = PHONE) -> list[Action]:
    (binding,) = wire.core.registrar.lookup(f"sip:alice@{DOMAIN}", wire.now)
    options = ping_request(binding, local_uri="sip:keepalive@192.0.2.1:5060", call_id="ping-1", from_tag="t")
    return wire.core.run([SendRequest(options, flow, NatPing(flow, 1))], wire.now)


def test_outbound_register_gets_require_outbound_and_a_plain_one_does_not() -> None:
    wire = Wire(make_core(require_auth=False))
    plain = nated_register(wire)
    assert plain.status == 200 and "Require" not in plain.headers
    outbound = nated_register(
        Wire(make_core(require_auth=False)),
        contact_params=';+sip.instance="<urn:uuid:00000000-0000-0000-0000-000000000001>";reg-id=1',
        extra="Supported: outbound, path\r\n",
    )
    assert outbound.status == 200
    assert outbound.headers.get("Require") == "outbound"


def test_nated_binding_is_reached_at_its_flow_not_its_private_contact() -> None:
    wire = Wire(make_core(require_auth=False))
    nated_register(wire)
    (binding,) = wire.core.registrar.lookup(f"sip:alice@{DOMAIN}", wire.now)
    assert binding.flow == PHONE
    sent = [(m, p) for a in ping(wire) if isinstance(a, Send) for m, p in [(a.message, a.peer)]]
    assert [(m.method, p) for m, p in sent if isinstance(m, Request)] == [("OPTIONS", PHONE)]


def test_unanswered_ping_is_a_flow_failure_for_registrar_and_sca() -> None:
    wire = Wire(make_core(require_auth=False, lines=[LINE]))
    nated_register(wire)
    subscribe(wire)
    assert len(wire.core.sca.subscriptions()) == 1
    timers = [a for a in ping(wire) if isinstance(a, StartTimer) and a.name == "F"]
    (timer_f,) = timers
    wire.now += timer_f.delay
    facts = [a.event for a in wire.core.on_timer(timer_f.key, "F", wire.now) if isinstance(a, Deliver)]
    assert PingFailed(PHONE) in facts
    failed = [f for f in facts if isinstance(f, FlowFailed)]
    assert failed == [FlowFailed(PHONE, FlowFailure.PING_TIMEOUT, 1, 1, wire.now)]
    assert any(isinstance(f, BindingRemoved) and f.reason is RemovalReason.FLOW_FAILED for f in facts)
    assert any(isinstance(f, SubscriptionRemoved) and f.reason == "flow-failed" for f in facts)
    assert wire.core.registrar.lookup(f"sip:alice@{DOMAIN}", wire.now) == ()
    assert wire.core.sca.subscriptions() == []


def test_answered_ping_keeps_everything() -> None:
    wire = Wire(make_core(require_auth=False, lines=[LINE]))
    nated_register(wire)
    subscribe(wire)
    (sent,) = [a.message for a in ping(wire) if isinstance(a, Send) and isinstance(a.message, Request)]
    via = sent.headers.get("Via")
    answer = (
        f"SIP/2.0 200 OK\r\nVia: {via}\r\nFrom: {sent.headers.get('From')}\r\n"
        f"To: {sent.headers.get('To')};tag=x\r\nCall-ID: ping-1\r\nCSeq: 1 OPTIONS\r\n"
        "Content-Length: 0\r\n\r\n"
    )
    wire.deliver(answer, PHONE)
    assert len(wire.core.registrar.lookup(f"sip:alice@{DOMAIN}", wire.now)) == 1
    assert len(wire.core.sca.subscriptions()) == 1


def test_closed_connection_fails_only_an_outbound_flow() -> None:
    flow = Peer(Transport.TCP, "203.0.113.7", 51000)
    wire = Wire(make_core(require_auth=False))
    nated_register(wire, flow)
    assert wire.core.flow_failed(flow, FlowFailure.CONNECTION_CLOSED, wire.now) == []
    assert len(wire.core.registrar.lookup(f"sip:alice@{DOMAIN}", wire.now)) == 1
    outbound = Wire(make_core(require_auth=False))
    nated_register(outbound, flow, contact_params=';+sip.instance="<urn:uuid:1>";reg-id=1')
    facts = [
        a.event
        for a in outbound.core.flow_failed(flow, FlowFailure.CONNECTION_CLOSED, outbound.now)
        if isinstance(a, Deliver)
    ]
    assert FlowFailed(flow, FlowFailure.CONNECTION_CLOSED, 1, 0, outbound.now) in facts
    assert outbound.core.registrar.lookup(f"sip:alice@{DOMAIN}", outbound.now) == ()


def test_outbound_behind_an_edge_proxy_needs_ob_in_its_path() -> None:
    params = ';+sip.instance="<urn:uuid:1>";reg-id=1'
    without = nated_register(
        Wire(make_core(require_auth=False)),
        contact_params=params,
        extra="Path: <sip:edge.example.net;lr>\r\n",
    )
    assert without.status == 200 and "Require" not in without.headers
    with_ob = nated_register(
        Wire(make_core(require_auth=False)),
        contact_params=params,
        extra="Path: <sip:edge.example.net;lr;ob>\r\n",
    )
    assert with_ob.headers.get("Require") == "outbound"
