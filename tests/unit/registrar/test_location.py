"""The location service: bindings per AoR, ordering, expiry on time, restore."""

from __future__ import annotations

import attrs

from scaserver.registrar.binding import (
    Binding,
    BindingAdded,
    BindingExpired,
    BindingKey,
    BindingRefreshed,
    BindingRemoved,
    KeyKind,
    RemovalReason,
)
from scaserver.registrar.location import EXPIRY_TIMER, LocationService
from scaserver.sip.actions import CancelTimer, Deliver, StartTimer
from scaserver.sip.message import Peer, Transport

AOR = "sip:alice@example.com"
PEER = Peer(Transport.UDP, "192.0.2.1", 5060)
NOW = 1000.0


def binding(
    contact: str, *, expires_at: float = NOW + 60, q: float | None = None, updated_at: float = NOW
) -> Binding:
    return Binding(
        key=BindingKey(AOR, KeyKind.URI, contact),
        contact=contact,
        expires_at=expires_at,
        call_id="c1",
        cseq=1,
        received=PEER,
        q=q,
        updated_at=updated_at,
    )


def test_put_arms_timer_and_reports_added_then_refreshed() -> None:
    location = LocationService()
    first = binding("sip:a@192.0.2.1")
    assert location.put(first, NOW) == [
        StartTimer(first.key, EXPIRY_TIMER, 60.0),
        Deliver(BindingAdded(first, NOW)),
    ]
    second = attrs.evolve(first, expires_at=NOW + 120, cseq=2)
    assert location.put(second, NOW + 5) == [
        StartTimer(first.key, EXPIRY_TIMER, 115.0),
        Deliver(BindingRefreshed(second, first, NOW + 5)),
    ]
    assert location.bindings(AOR) == (second,)
    assert location.get(first.key) == second
    assert location.count() == len(location) == location.count(AOR) == 1
    assert location.aors() == (AOR,)


def test_lookup_orders_by_q_then_recency_and_skips_expired() -> None:
    location = LocationService()
    low = binding("sip:low@h", q=0.1)
    absent = binding("sip:absent@h", updated_at=NOW - 10)
    high = binding("sip:high@h", q=1.0, updated_at=NOW)
    half = binding("sip:half@h", q=0.5, expires_at=NOW + 5)
    for item in (low, absent, high, half):
        location.put(item, NOW)
    assert [b.contact for b in location.lookup(AOR, NOW)] == [
        "sip:high@h",
        "sip:absent@h",
        "sip:half@h",
        "sip:low@h",
    ]
    assert [b.contact for b in location.lookup(AOR, NOW + 5)] == ["sip:high@h", "sip:absent@h", "sip:low@h"]
    assert location.lookup("sip:nobody@example.com", NOW) == ()
    assert sorted(b.contact for b in location.all_bindings()) == sorted(
        ["sip:low@h", "sip:absent@h", "sip:high@h", "sip:half@h"]
    )


def test_timer_expires_binding_on_time() -> None:
    location = LocationService()
    item = binding("sip:a@h")
    location.put(item, NOW)
    assert location.on_timer(item.key, EXPIRY_TIMER, NOW + 60) == [Deliver(BindingExpired(item, NOW + 60))]
    assert location.bindings(AOR) == ()
    assert location.aors() == ()
    assert location.on_timer(item.key, EXPIRY_TIMER, NOW + 61) == []


def test_timer_that_lost_a_race_with_a_refresh_rearms() -> None:
    location = LocationService()
    item = binding("sip:a@h")
    location.put(item, NOW)
    location.put(attrs.evolve(item, expires_at=NOW + 100), NOW + 30)
    assert location.on_timer(item.key, EXPIRY_TIMER, NOW + 60) == [StartTimer(item.key, EXPIRY_TIMER, 40.0)]
    assert len(location) == 1


def test_foreign_timer_name_is_ignored() -> None:
    location = LocationService()
    item = binding("sip:a@h")
    location.put(item, NOW)
    assert location.on_timer(item.key, "other", NOW + 100) == []
    assert len(location) == 1


def test_remove_cancels_timer_and_reports_reason() -> None:
    location = LocationService()
    item = binding("sip:a@h")
    location.put(item, NOW)
    assert location.remove(item.key, RemovalReason.ADMINISTRATIVE, NOW + 1) == [
        CancelTimer(item.key, EXPIRY_TIMER),
        Deliver(BindingRemoved(item, RemovalReason.ADMINISTRATIVE, NOW + 1)),
    ]
    assert location.remove(item.key, RemovalReason.ADMINISTRATIVE, NOW + 1) == []


def test_remove_aor_removes_every_binding() -> None:
    location = LocationService()
    first, second = binding("sip:a@h", q=0.9), binding("sip:b@h", q=0.1)
    location.put(first, NOW)
    location.put(second, NOW)
    assert location.remove_aor(AOR, RemovalReason.UNREGISTERED, NOW) == [
        CancelTimer(first.key, EXPIRY_TIMER),
        Deliver(BindingRemoved(first, RemovalReason.UNREGISTERED, NOW)),
        CancelTimer(second.key, EXPIRY_TIMER),
        Deliver(BindingRemoved(second, RemovalReason.UNREGISTERED, NOW)),
    ]
    assert len(location) == 0


def test_restore_rearms_live_and_reports_lapsed() -> None:
    location = LocationService()
    live = binding("sip:live@h", expires_at=NOW + 30)
    lapsed = binding("sip:lapsed@h", expires_at=NOW - 1)
    assert location.restore([live, lapsed], NOW) == [
        StartTimer(live.key, EXPIRY_TIMER, 30.0),
        Deliver(BindingExpired(lapsed, NOW)),
    ]
    assert location.bindings(AOR) == (live,)


def test_binding_remaining_rounds_and_never_negative() -> None:
    item = binding("sip:a@h", expires_at=NOW + 59.6)
    assert item.remaining(NOW) == 60
    assert item.remaining(NOW + 100) == 0
    assert item.sort_q == 1.0 and binding("sip:b@h", q=0.2).sort_q == 0.2
    assert item.aor == AOR


def test_a_binding_is_reached_by_its_contact_unless_behind_nat_or_on_a_stream() -> None:
    assert binding("sip:a@192.0.2.1:5060").flow is None  # the Contact is where it registered from
    assert binding("sip:a@192.0.2.1").flow is None  # default port 5060
    assert binding("sip:a@10.0.0.7:5060").flow == PEER  # behind NAT: back to the source
    tcp = Peer(Transport.TCP, "192.0.2.1", 40000)
    assert attrs.evolve(binding("sip:a@192.0.2.1:5060"), received=tcp).flow == tcp  # its connection


# -- the addresses bindings are reached at (relay rule R7) -----------------------------------------


def at(contact: str, received: Peer = PEER, *, key: str | None = None, path: tuple[str, ...] = ()) -> Binding:
    return attrs.evolve(
        binding(contact), key=BindingKey(AOR, KeyKind.URI, key or contact), received=received, path=path
    )


def test_a_binding_is_reached_at_its_contact_its_flow_and_its_first_path_hop() -> None:
    natted = Peer(Transport.UDP, "203.0.113.7", 40000)
    found = at("sip:alice@10.0.0.5", natted, path=("<sip:edge.example.com;lr>", "<sip:other.example.com;lr>"))
    assert found.reached_at == {("10.0.0.5", 5060), ("203.0.113.7", 40000), ("edge.example.com", 5060)}
    secure = at("sips:alice@[2001:DB8:0::5]")
    assert ("2001:db8::5", 5061) in secure.reached_at
    assert ("192.0.2.8", 5061) in at("sip:a@192.0.2.8;transport=TLS").reached_at
    assert ("192.0.2.9", 5070) in at("sip:a@192.0.2.1:5070;maddr=192.0.2.9").reached_at


def test_the_address_index_follows_add_refresh_remove_expiry_and_restore() -> None:
    location = LocationService()
    phone = Peer(Transport.UDP, "198.51.100.7", 5062)
    assert not location.reaches("198.51.100.7", 5062)
    location.put(at("sip:a@198.51.100.7:5062", phone, key="one"), NOW)
    location.put(at("sip:b@198.51.100.7:5062", phone, key="two"), NOW)  # two bindings, one address
    assert location.reaches("198.51.100.7", 5062)
    assert not location.reaches("198.51.100.7", 5060) and not location.reaches("198.51.100.8", 5062)
    location.remove(BindingKey(AOR, KeyKind.URI, "one"), RemovalReason.UNREGISTERED, NOW)
    assert location.reaches("198.51.100.7", 5062)  # the other binding is still there
    location.on_timer(BindingKey(AOR, KeyKind.URI, "two"), EXPIRY_TIMER, NOW + 61)
    assert not location.reaches("198.51.100.7", 5062)
    # A refresh from another address moves the binding there.
    moved = Peer(Transport.UDP, "198.51.100.9", 5062)
    location.put(at("sip:a@198.51.100.7:5062", phone, key="one"), NOW)
    location.put(at("sip:a@198.51.100.9:5062", moved, key="one"), NOW)
    assert location.reaches("198.51.100.9", 5062) and not location.reaches("198.51.100.7", 5062)
    # Restored bindings are indexed; lapsed ones are not.
    restored = LocationService()
    lapsed = attrs.evolve(at("sip:d@192.0.2.44", Peer(Transport.UDP, "192.0.2.44", 5060)), expires_at=NOW - 1)
    restored.restore([at("sip:c@[2001:db8::c]", Peer(Transport.UDP, "2001:db8::c", 5060)), lapsed], NOW)
    assert restored.reaches("[2001:DB8::C]", 5060) and restored.reaches("2001:db8::c", 5060)
    assert not restored.reaches("192.0.2.44", 5060)


def test_a_dormant_binding_is_kept_for_push_only_and_apart_from_the_live_ones() -> None:
    location = LocationService()
    mobile = Peer(Transport.TCP, "198.51.100.20", 40100)
    live = at("sip:desk@192.0.2.10", Peer(Transport.UDP, "192.0.2.10", 5060), key="desk")
    dormant = attrs.evolve(at("sip:m@198.51.100.20:40100", mobile, key="m"), expires_at=NOW - 1)
    location.put(live, NOW)
    location.retain(dormant)
    assert location.dormant(AOR) == (dormant,)
    assert location.dormant_binding(dormant.key) == dormant
    assert location.dormant_aors() == frozenset({AOR})
    assert location.with_dormant(AOR) == (live, dormant)
    # No target, no counted contact, no address of the live index.
    assert location.bindings(AOR) == (live,) and location.lookup(AOR, NOW) == (live,)
    assert len(location) == 1 and location.get(dormant.key) is None
    assert location.reaches_dormant("198.51.100.20", 40100)
    assert not location.reaches("198.51.100.20", 40100)


def test_a_dormant_binding_is_released_once_and_a_retained_again_one_replaces_it() -> None:
    location = LocationService()
    first = attrs.evolve(
        at("sip:m@198.51.100.20:40100", Peer(Transport.TCP, "198.51.100.20", 40100), key="m")
    )
    moved = attrs.evolve(
        at("sip:m@198.51.100.21:40100", Peer(Transport.TCP, "198.51.100.21", 40100), key="m")
    )
    location.retain(first)
    location.retain(moved)
    assert location.dormant(AOR) == (moved,)
    assert not location.reaches_dormant("198.51.100.20", 40100)
    assert location.release(moved.key) == moved
    assert location.release(moved.key) is None
    assert location.dormant(AOR) == () and location.dormant_aors() == frozenset()
    assert not location.reaches_dormant("198.51.100.21", 40100)
