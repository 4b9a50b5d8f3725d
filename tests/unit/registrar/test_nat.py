"""NAT detection, the flows to ping and flow failures in the registrar (scaserver.registrar.nat)."""

from __future__ import annotations

import attrs
import pytest

from scaserver.registrar.binding import Binding, BindingKey, BindingRemoved, KeyKind, RemovalReason
from scaserver.registrar.nat import (
    SLOTS,
    behind_nat,
    is_outbound,
    is_private_host,
    ping_request,
    ping_slot,
    ping_targets,
    ping_turns,
    same_flow,
)
from scaserver.registrar.registrar import Registrar, RegistrarPolicy
from scaserver.sip.actions import Deliver
from scaserver.sip.message import Peer, Transport

AOR = "sip:alice@example.com"
NOW = 1000.0
SOURCE = Peer(Transport.UDP, "203.0.113.7", 40123)


def binding(
    contact: str = "sip:alice@203.0.113.7:40123",
    received: Peer = SOURCE,
    *,
    key: str | None = None,
    path: tuple[str, ...] = (),
    instance: str | None = None,
    reg_id: int | None = None,
    push: tuple[tuple[str, str], ...] = (),
) -> Binding:
    return Binding(
        key=BindingKey(AOR, KeyKind.URI, key or contact),
        contact=contact,
        expires_at=NOW + 3600,
        call_id="c1",
        cseq=1,
        received=received,
        path=path,
        instance=instance,
        reg_id=reg_id,
        push=push,
    )


@pytest.mark.parametrize(
    ("host", "private"),
    [
        ("10.1.2.3", True),
        ("172.16.0.1", True),
        ("172.31.255.255", True),
        ("172.32.0.1", False),
        ("192.168.1.10", True),
        ("100.64.0.1", True),  # RFC 6598
        ("100.128.0.1", False),
        ("169.254.10.1", True),
        ("[fe80::1]", True),
        ("fd00::1", True),  # unique-local
        ("2001:db8::1", False),
        ("203.0.113.7", False),
        ("127.0.0.1", False),
        ("phone.example.com", False),
    ],
)
def test_private_and_shared_addresses(host: str, private: bool) -> None:
    assert is_private_host(host) is private


@pytest.mark.parametrize(
    ("contact", "received", "nat"),
    [
        ("sip:alice@203.0.113.7:40123", SOURCE, False),  # Contact is where it came from
        ("sip:alice@192.168.1.10:5060", SOURCE, True),  # private Contact (flag 1)
        ("sip:alice@198.51.100.1:40123", SOURCE, True),  # another host (flag 2)
        ("sip:alice@203.0.113.7:5060", SOURCE, True),  # another port over UDP (flag 16)
        ("sip:alice@203.0.113.7", Peer(Transport.UDP, "203.0.113.7", 5060), False),  # default port
        ("sip:alice@203.0.113.7:5060;transport=tcp", Peer(Transport.TCP, "203.0.113.7", 51000), False),
        ("sip:alice@10.0.0.5:5060;transport=tcp", Peer(Transport.TCP, "203.0.113.7", 51000), True),
        ("sip:alice@192.168.1.10;maddr=203.0.113.7", Peer(Transport.UDP, "203.0.113.7", 5060), False),
    ],
)
def test_behind_nat(contact: str, received: Peer, nat: bool) -> None:
    assert behind_nat(binding(contact, received)) is nat


def test_a_binding_registered_through_a_path_is_not_behind_nat_here() -> None:
    assert not behind_nat(binding("sip:alice@192.168.1.10", path=("<sip:edge.example.com;lr>",)))


def test_ping_targets_are_udp_flows_behind_nat_once_each() -> None:
    nated = binding("sip:alice@192.168.1.10:5060")
    same_flow_too = binding("sip:bob@192.168.1.10:5060", key="bob")
    direct = binding("sip:carol@198.51.100.9:5060", Peer(Transport.UDP, "198.51.100.9", 5060))
    over_tcp = binding("sip:dave@10.0.0.5:5060", Peer(Transport.TCP, "203.0.113.8", 51000))
    pathed = binding("sip:eve@10.0.0.6", path=("<sip:edge.example.com;lr>",))
    every = [nated, same_flow_too, direct, over_tcp, pathed]
    assert ping_targets(every, ping_all=False) == {SOURCE: nated}
    assert set(ping_targets(every, ping_all=True)) == {SOURCE, direct.received}


def test_ping_slot_is_stable_and_spreads_flows() -> None:
    flows = [Peer(Transport.UDP, "203.0.113.7", port) for port in range(40000, 40200)]
    slots = [ping_slot(flow) for flow in flows]
    assert slots == [ping_slot(flow) for flow in flows]
    assert all(0 <= slot < SLOTS for slot in slots)
    assert len(set(slots)) == SLOTS  # 200 flows land in every turn


def test_ping_request_is_an_options_to_the_contact() -> None:
    request = ping_request(
        binding("sip:alice@192.168.1.10:5060"),
        local_uri="sip:keepalive@192.0.2.1:5060",
        call_id="p1",
        from_tag="t1",
    )
    assert (request.method, request.uri) == ("OPTIONS", "sip:alice@192.168.1.10:5060")
    assert request.headers.get("From") == "<sip:keepalive@192.0.2.1:5060>;tag=t1"
    assert request.headers.get("To") == "<sip:alice@192.168.1.10:5060>"
    assert request.headers.get("CSeq") == "1 OPTIONS"


def test_same_flow_ignores_host_spelling_not_transport() -> None:
    assert same_flow(Peer(Transport.UDP, "[2001:DB8::1]", 5060), Peer(Transport.UDP, "2001:db8:0::1", 5060))
    assert not same_flow(Peer(Transport.UDP, "192.0.2.1", 5060), Peer(Transport.TCP, "192.0.2.1", 5060))


def test_outbound_needs_instance_and_reg_id() -> None:
    assert is_outbound(binding(instance="<urn:uuid:1>", reg_id=1))
    assert not is_outbound(binding(instance="<urn:uuid:1>"))


def registrar_with(*bindings: Binding) -> Registrar:
    registrar = Registrar(RegistrarPolicy(domains=frozenset({"example.com"})))
    registrar.restore(bindings, NOW)
    return registrar


def test_flow_failure_removes_the_bindings_on_that_flow_only() -> None:
    dead = binding("sip:alice@192.168.1.10:5060")
    other = binding("sip:alice@192.168.1.11:5060", Peer(Transport.UDP, "203.0.113.7", 40124))
    pushed = binding(
        "sip:alice@192.168.1.12:5060;pn-provider=apns", key="push", push=(("pn-provider", "apns"),)
    )
    registrar = registrar_with(dead, other, pushed)
    actions, count = registrar.flow_failed(SOURCE, NOW + 10)
    assert count == 1
    assert Deliver(BindingRemoved(dead, RemovalReason.FLOW_FAILED, NOW + 10)) in actions
    assert {b.contact for b in registrar.lookup(AOR, NOW + 10)} == {other.contact, pushed.contact}


def test_closed_connection_removes_only_outbound_bindings() -> None:
    flow = Peer(Transport.TCP, "203.0.113.7", 51000)
    plain = binding("sip:alice@192.168.1.10:5060;transport=tcp", flow)
    outbound = attrs.evolve(
        binding("sip:alice@192.168.1.20:5060;transport=tcp", flow, instance="<urn:uuid:1>", reg_id=1),
        key=BindingKey(AOR, KeyKind.INSTANCE, "<urn:uuid:1>;reg-id=1"),
    )
    registrar = registrar_with(plain, outbound)
    _, count = registrar.flow_failed(flow, NOW, outbound_only=True)
    assert count == 1
    assert [b.contact for b in registrar.lookup(AOR, NOW)] == [plain.contact]
    assert registrar.flow_failed(Peer(Transport.TCP, "203.0.113.9", 1), NOW) == ([], 0)


def test_an_interval_is_cut_into_ten_turns_or_one_per_second() -> None:
    assert ping_turns(1.5) == SLOTS == 10
    assert ping_turns(30.0) == 30
    flows = [Peer(Transport.UDP, "203.0.113.7", port) for port in range(40000, 40300)]
    assert {ping_slot(flow, 30) for flow in flows} == set(range(30))
