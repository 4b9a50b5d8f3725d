"""The index of the UDP flows NAT pings keep open, kept by the location service as bindings
come and go (scaserver.registrar.pingflows)."""

from __future__ import annotations

import random
from collections.abc import Iterator

import attrs
import pytest

from scaserver.registrar.binding import Binding, BindingKey, KeyKind, RemovalReason
from scaserver.registrar.location import EXPIRY_TIMER, LocationService
from scaserver.registrar.nat import SLOTS, ping_slot, ping_targets
from scaserver.registrar.pingflows import PingFlows
from scaserver.registrar.registrar import Registrar, RegistrarPolicy
from scaserver.sip.message import Peer, Transport

AOR = "sip:alice@example.com"
NOW = 1000.0
FLOW = Peer(Transport.UDP, "203.0.113.7", 40123)
PUBLIC = Peer(Transport.UDP, "198.51.100.9", 5060)


def binding(
    contact: str = "sip:alice@192.168.1.10:5060",
    received: Peer = FLOW,
    *,
    key: str = "phone",
    aor: str = AOR,
    path: tuple[str, ...] = (),
    expires_at: float = NOW + 3600,
) -> Binding:
    return Binding(
        key=BindingKey(aor, KeyKind.URI, key),
        contact=contact,
        expires_at=expires_at,
        call_id="c1",
        cseq=1,
        received=received,
        path=path,
    )


def targets(location: LocationService, *, ping_all: bool = False) -> dict[Peer, Binding]:
    """Every turn's targets, together."""
    flows = location.ping_flows
    found: dict[Peer, Binding] = {}
    for slot in range(flows.slots):
        found.update(flows.targets(slot, ping_all=ping_all))
    return found


def test_an_added_binding_behind_nat_is_pinged_in_the_turn_of_its_flow() -> None:
    location = LocationService()
    nated = binding()
    location.put(nated, NOW)
    slot = ping_slot(FLOW)
    assert location.ping_flows.targets(slot, ping_all=False) == {FLOW: nated}
    assert all(
        location.ping_flows.targets(other, ping_all=True) == {} for other in range(SLOTS) if other != slot
    )
    assert location.ping_flows.nat_bindings() == {"udp": 1, "tcp": 0, "tls": 0}


def test_a_public_binding_is_pinged_only_with_ping_all_and_tcp_or_path_never() -> None:
    location = LocationService()
    direct = binding("sip:carol@198.51.100.9:5060", PUBLIC, key="direct")
    over_tcp = binding("sip:dave@10.0.0.5:5060", Peer(Transport.TCP, "203.0.113.8", 51000), key="tcp")
    pathed = binding(
        "sip:eve@10.0.0.6", Peer(Transport.UDP, "203.0.113.9", 5060), key="path", path=("<sip:e;lr>",)
    )
    for each in (direct, over_tcp, pathed):
        location.put(each, NOW)
    assert targets(location) == {}
    assert targets(location, ping_all=True) == {PUBLIC: direct}
    assert location.ping_flows.nat_bindings() == {"udp": 0, "tcp": 1, "tls": 0}


def test_a_flow_is_pinged_once_with_the_binding_that_came_first() -> None:
    location = LocationService()
    first, second = (
        binding(key="line1"),
        binding("sip:bob@192.168.1.10:5060", key="line2", aor="sip:bob@example.com"),
    )
    location.put(first, NOW)
    location.put(second, NOW)
    assert targets(location) == {FLOW: first}
    location.remove(first.key, RemovalReason.UNREGISTERED, NOW)
    assert targets(location) == {FLOW: second}  # the flow stays while a binding is on it
    location.remove(second.key, RemovalReason.UNREGISTERED, NOW)
    assert targets(location) == {} and location.ping_flows.nat_bindings()["udp"] == 0


def test_without_ping_all_the_binding_of_the_flow_is_one_behind_nat() -> None:
    location = LocationService()
    public = binding("sip:alice@203.0.113.7:40123", key="public")  # Contact is the flow itself
    nated = binding(key="nated", aor="sip:bob@example.com")
    location.put(public, NOW)
    location.put(nated, NOW)
    assert targets(location) == {FLOW: nated}
    assert targets(location, ping_all=True) == {FLOW: public}


def test_a_refresh_that_moves_the_binding_behind_nat_or_out_of_it_moves_it_in_the_index() -> None:
    location = LocationService()
    public = binding("sip:alice@198.51.100.9:5060", PUBLIC)
    location.put(public, NOW)
    assert targets(location) == {}
    nated = binding("sip:alice@192.168.1.10:5060", PUBLIC)  # same key, now a private Contact
    location.put(nated, NOW + 1)
    assert targets(location) == {PUBLIC: nated}
    assert location.ping_flows.nat_bindings()["udp"] == 1
    location.put(public, NOW + 2)
    assert targets(location) == {}
    assert targets(location, ping_all=True) == {PUBLIC: public}
    assert location.ping_flows.nat_bindings()["udp"] == 0


def test_a_refresh_from_another_flow_leaves_the_old_flow() -> None:
    location = LocationService()
    location.put(binding(), NOW)
    moved_to = Peer(Transport.UDP, "203.0.113.7", 40999)
    moved = binding(received=moved_to)
    location.put(moved, NOW + 1)
    assert targets(location) == {moved_to: moved}
    over_tcp = binding(received=Peer(Transport.TCP, "203.0.113.7", 51000))
    location.put(over_tcp, NOW + 2)
    assert targets(location, ping_all=True) == {}
    assert location.ping_flows.nat_bindings() == {"udp": 0, "tcp": 1, "tls": 0}


def test_an_expired_binding_leaves_the_index() -> None:
    location = LocationService()
    nated = binding(expires_at=NOW + 60)
    location.put(nated, NOW)
    location.on_timer(nated.key, EXPIRY_TIMER, NOW + 60)
    assert targets(location, ping_all=True) == {}
    assert location.ping_flows.nat_bindings()["udp"] == 0


def test_a_failed_flow_leaves_the_index_and_other_flows_stay() -> None:
    registrar = Registrar(RegistrarPolicy(domains=frozenset({"example.com"})))
    other_flow = Peer(Transport.UDP, "203.0.113.7", 40124)
    other = binding(received=other_flow, key="other")
    registrar.location.put(binding(), NOW)
    registrar.location.put(other, NOW)
    _, count = registrar.flow_failed(FLOW, NOW + 10)
    assert count == 1
    assert targets(registrar.location) == {other_flow: other}


def test_restored_bindings_are_indexed_and_lapsed_ones_are_not() -> None:
    location = LocationService()
    live = binding()
    lapsed = binding(received=Peer(Transport.UDP, "203.0.113.7", 40999), key="lapsed", expires_at=NOW - 1)
    location.restore([live, lapsed], NOW)
    assert targets(location, ping_all=True) == {FLOW: live}


def test_use_slots_deals_the_flows_again_into_the_turns_of_the_pinger() -> None:
    location = LocationService()
    flows = [Peer(Transport.UDP, "203.0.113.7", port) for port in range(40000, 40100)]
    for flow in flows:
        location.put(binding(received=flow, key=str(flow.port)), NOW)
    location.ping_flows.use_slots(30)
    for slot in range(30):
        assert set(location.ping_flows.targets(slot, ping_all=False)) == {
            flow for flow in flows if ping_slot(flow, 30) == slot
        }
    assert sum(location.ping_flows.flows_in(slot) for slot in range(30)) == 100


def test_the_index_names_the_flows_ping_targets_finds_by_walking_every_binding() -> None:
    chance = random.Random(7)
    location = LocationService()
    location.ping_flows.use_slots(30)
    hosts = ["192.168.1.10", "198.51.100.9", "10.0.0.5", "203.0.113.7"]
    for n in range(600):
        received = Peer(
            chance.choice([Transport.UDP, Transport.UDP, Transport.TCP]), "203.0.113.7", 40000 + n % 150
        )
        port = chance.choice([5060, received.port])
        contact_host = chance.choice(hosts)
        path = ("<sip:edge.example.com;lr>",) if chance.random() < 0.1 else ()
        each = binding(f"sip:u{n}@{contact_host}:{port}", received, key=f"k{n % 400}", path=path)
        location.put(each, NOW + n)
        if chance.random() < 0.2:
            location.remove(each.key, RemovalReason.UNREGISTERED, NOW + n)
    every = list(location.all_bindings())
    for ping_all in (False, True):
        for slot in range(30):
            expected = ping_targets(every, ping_all=ping_all, slot=slot, slots=30)
            found = location.ping_flows.targets(slot, ping_all=ping_all)
            assert set(found) == set(expected)
            for flow, chosen in found.items():
                assert chosen in every and chosen.received == flow
                assert ping_all or ping_targets([chosen], ping_all=False) == {flow: chosen}


def test_a_standalone_index_forgets_what_it_never_held() -> None:
    flows = PingFlows()
    flows.discard(binding())  # nothing to forget: no error, no negative count
    assert flows.nat_bindings() == {"udp": 0, "tcp": 0, "tls": 0}
    flows.add(attrs.evolve(binding(), key=BindingKey(AOR, KeyKind.URI, "x")))
    assert flows.targets(ping_slot(FLOW), ping_all=False) != {}


def test_a_refresh_at_the_same_place_names_the_new_binding_and_keeps_its_place_on_the_flow() -> None:
    location = LocationService()
    first, second = binding(key="line1"), binding("sip:bob@192.168.1.10:5060", key="line2")
    location.put(first, NOW)
    location.put(second, NOW)
    refreshed = attrs.evolve(first, expires_at=NOW + 7200, cseq=2, updated_at=NOW + 60)
    location.put(refreshed, NOW + 60)
    assert targets(location) == {FLOW: refreshed}  # still the one that came first, as it is now
    assert location.ping_flows.nat_bindings()["udp"] == 2
    assert location.reaches("192.168.1.10", 5060) and location.reaches(FLOW.host, FLOW.port)
    location.remove(refreshed.key, RemovalReason.UNREGISTERED, NOW + 61)
    location.remove(second.key, RemovalReason.UNREGISTERED, NOW + 61)
    assert not location.reaches("192.168.1.10", 5060) and not location.reaches(FLOW.host, FLOW.port)
    assert targets(location, ping_all=True) == {} and location.ping_flows.nat_bindings()["udp"] == 0


def test_a_failed_flow_finds_its_bindings_without_walking_the_location(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    registrar = Registrar(RegistrarPolicy(domains=frozenset({"example.com"})))
    v6 = Peer(Transport.UDP, "2001:db8::1", 40000)
    on_v6 = binding(received=v6, key="v6")
    moved = binding(key="moved")
    over_tcp = binding(received=Peer(Transport.TCP, FLOW.host, FLOW.port), key="tcp")
    for each in (on_v6, moved, over_tcp):
        registrar.location.put(each, NOW)
    registrar.location.put(attrs.evolve(moved, received=v6), NOW + 1)  # moved onto the v6 flow
    for n in range(100):
        registrar.location.put(
            binding(received=Peer(Transport.UDP, "198.51.100.1", n + 1), key=f"other{n}"), NOW
        )

    def walked(_self: LocationService) -> Iterator[Binding]:
        raise AssertionError("flow_failed walked every binding")

    monkeypatch.setattr(LocationService, "all_bindings", walked)
    assert registrar.flow_failed(FLOW, NOW + 2) == ([], 0)  # nothing left on the old UDP flow
    _, count = registrar.flow_failed(Peer(Transport.UDP, "[2001:DB8:0::1]", 40000), NOW + 2)
    assert count == 2  # another spelling of the same flow
    assert registrar.location.on_flow(v6) == []
    assert registrar.location.on_flow(over_tcp.received) == [over_tcp]
    assert len(registrar.location) == 101


def test_many_bindings_on_one_flow_are_refreshed_and_removed_without_a_walk_of_the_flow(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Every phone behind an SBC (or a proxy without Path) registers over one flow: a refresh or
    a removal of one of its bindings finds it by key, not by comparing it with each other one."""
    location = LocationService()
    many = [binding(f"sip:p{n}@192.168.1.{n % 250}:5060", key=f"p{n}") for n in range(2000)]
    for each in many:
        location.put(each, NOW)
    compared = 0
    equal = BindingKey.__eq__

    def counted(self: BindingKey, other: object) -> bool:
        nonlocal compared
        compared += 1
        return equal(self, other)

    monkeypatch.setattr(BindingKey, "__eq__", counted)
    last = many[-1]
    location.put(attrs.evolve(last, expires_at=NOW + 7200, cseq=2), NOW + 60)  # the usual refresh
    location.put(attrs.evolve(many[-2], received=PUBLIC), NOW + 60)  # onto another flow
    location.remove(many[-3].key, RemovalReason.UNREGISTERED, NOW + 61)
    assert compared < 50
    monkeypatch.undo()
    assert targets(location) == {FLOW: many[0], PUBLIC: attrs.evolve(many[-2], received=PUBLIC)}
    assert len(location.on_flow(FLOW)) == 1998  # one moved away, one removed
