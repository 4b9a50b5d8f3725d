"""The composition root: what make_service wires, and how settings become the core's parts."""

from __future__ import annotations

import gc
from typing import cast

import attrs
import pytest
from twisted.internet.task import Clock

from scaserver.app import core_settings, make_core, realm_of
from scaserver.config.load import settings_from_mapping
from scaserver.config.schema import (
    AuthSettings,
    ServerSettings,
    Settings,
    SipSettings,
    UpstreamSettings,
)
from scaserver.directory import configured_lines, member_of, merged_lines
from scaserver.edge.collector import GC_THRESHOLDS, tune_garbage_collector
from scaserver.edge.endpoint import Endpoint
from scaserver.edge.persistence import Persistence, reserved_cseq
from scaserver.edge.resolver import HostsTable
from scaserver.edge.services import Reactor
from scaserver.edge.stack import TimerClock
from scaserver.edge.writebehind import DELETED, Channel, Runner, Sink, WriteBehind
from scaserver.events import EventBus
from scaserver.logs import MessageTrace
from scaserver.registrar.binding import Binding, BindingKey
from scaserver.sca.appearance import Appearance, AppearanceState, Trigger, apply
from scaserver.sca.line import SharedLine
from scaserver.sca.settings import ConfiguredLine, ScaSettings
from scaserver.sca.subscription import (
    Package,
    Subscription,
    SubscriptionAdded,
    SubscriptionKey,
    SubscriptionNotified,
    SubscriptionRefreshed,
    SubscriptionRemoved,
)
from scaserver.sip.message import Peer, Transport
from scaserver.sip.sessiontimer import SessionIntervals
from scaserver.sip.trust import TrustedPeers
from scaserver.siproot import make_service
from scaserver.store.repository import AppearanceKey
from tests.unit.edge.doubles import FakeCore


def test_one_udp_and_one_tcp_listener_per_address_and_the_stack_first() -> None:
    settings = Settings(server=ServerSettings(listen=(Endpoint("127.0.0.1", 5060), Endpoint("::1", 5062))))
    service = make_service(settings, cast(Reactor, Clock()), FakeCore(), hosts=HostsTable())
    assert [(udp.host, udp.port) for udp in service.udp] == [("127.0.0.1", 5060), ("::1", 5062)]
    assert [(tcp.host, tcp.port) for tcp in service.tcp] == [("127.0.0.1", 5060), ("::1", 5062)]
    children = list(service)
    assert children[0] is service.stack
    assert len(children) == 5


@pytest.mark.parametrize("trace", [False, True])
def test_trace_switch(trace: bool) -> None:
    service = make_service(
        Settings(sip=SipSettings(trace=trace)), cast(Reactor, Clock()), FakeCore(), hosts=HostsTable()
    )
    assert isinstance(service.stack._trace, MessageTrace) is trace


def test_configured_member_uris_also_admit_their_digest_user() -> None:
    settings = Settings(
        server=ServerSettings(domains=("example.test",)),
        sca=ScaSettings(
            lines=(ConfiguredLine("sip:2001@Example.test", 3, ("sip:2001a@example.test", "bob")),)
        ),
    )
    [line] = configured_lines(settings.sca.lines, frozenset({"example.test"}))
    assert line.aor == "sip:2001@example.test"
    assert line.appearances == 3
    assert line.admits(user="2001a") and line.admits(user="bob") and not line.admits(user="mallory")


def test_members_may_register_and_call_as_the_line() -> None:
    line = SharedLine("sip:2001@example.test", 2, frozenset({"2001a"}))
    allowed = member_of(lambda: [line], frozenset({"example.test"}))
    assert allowed("2001a", "2001")
    assert allowed("2001", "2001")
    assert not allowed("2001b", "2001")
    assert not allowed("2001a", "2002")


def test_members_may_register_and_call_as_an_alias_of_the_line() -> None:
    line = SharedLine("sip:2001@example.test", 2, frozenset({"2001a"}))
    aliases = {"sip:100@example.test": line.aor, "sip:200@other.test": line.aor}
    allowed = member_of(lambda: [line], frozenset({"example.test"}), lambda: aliases)
    assert allowed("2001a", "100")
    assert not allowed("2001b", "100")
    assert not allowed("2001a", "200")  # not a domain of ours
    assert not allowed("2001a", "101")


def test_database_lines_are_kept_and_configuration_wins() -> None:
    stored = [SharedLine("sip:1@x", 2), SharedLine("sip:2@x", 2)]
    configured = [SharedLine("sip:2@x", 4)]
    assert sorted((line.aor, line.appearances) for line in merged_lines(configured, stored)) == [
        ("sip:1@x", 2),
        ("sip:2@x", 4),
    ]


def test_realm_defaults_to_the_first_domain_then_the_advertised_host() -> None:
    assert realm_of(Settings(server=ServerSettings(domains=("Example.test", "b.test")))) == "example.test"
    assert realm_of(Settings()) == "127.0.0.1"
    assert realm_of(Settings(auth=AuthSettings(realm="r"))) == "r"


def test_core_settings_take_domains_upstream_and_auth_switch() -> None:
    settings = Settings(
        server=ServerSettings(domains=("A.test",)),
        upstream=UpstreamSettings(host="192.0.2.9", port=5070, transport=Transport.TCP),
        auth=AuthSettings(require=False),
    )
    core = core_settings(settings)
    assert core.domains.names == frozenset({"a.test"})
    assert "A.TEST" in core.domains and "b.test" not in core.domains
    assert core.upstream == Peer(Transport.TCP, "192.0.2.9", 5070)
    assert core.require_auth is False


def test_the_upstream_is_trusted_by_source_address() -> None:
    settings = Settings(
        server=ServerSettings(domains=("a.test",)),
        upstream=UpstreamSettings(host="192.0.2.9", port=5070, transport=Transport.UDP),
    )
    core = make_core(
        settings, credentials=lambda user, realm: None, trusted=TrustedPeers(()), lines=[], secret=b"s"
    )
    assert core.trusted.is_trusted(Peer(Transport.UDP, "192.0.2.9", 5070))
    assert core.trusted.is_trusted(Peer(Transport.TCP, "192.0.2.9", 40000))
    assert not core.trusted.is_trusted(Peer(Transport.UDP, "192.0.2.10", 5070))


@pytest.mark.parametrize("enabled", [True, False])
def test_the_proxy_gets_the_session_intervals_of_sca_as_written(enabled: bool) -> None:
    settings = settings_from_mapping(
        {"sca": {"session_timers": enabled, "session_expires": 600, "min_se": 120}}, "t.toml"
    )
    assert settings.sca.session_intervals == SessionIntervals(session_expires=600, min_se=120)
    core = make_core(
        settings, credentials=lambda user, realm: None, trusted=TrustedPeers(()), lines=[], secret=b"s"
    )
    assert core.session_timer is (settings.sca.session_intervals if enabled else None)


def test_garbage_collector_tuning_freezes_start_up_state_and_raises_thresholds() -> None:
    before = gc.get_threshold()
    try:
        tune_garbage_collector()
        assert gc.get_threshold() == GC_THRESHOLDS
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)


def persisted() -> tuple[
    WriteBehind, Channel[SubscriptionKey, Subscription], Channel[AppearanceKey, Appearance], EventBus
]:
    """A bus with the persistence subscribers on write-behind channels that are never flushed:
    the queue, its subscription and appearance channels, and the bus."""
    writes = WriteBehind(cast(TimerClock, Clock()), cast(Runner, None))
    no_sink = cast(Sink[object, object], None)
    subscriptions: Channel[SubscriptionKey, Subscription] = writes.channel("subs", no_sink, lambda s: s.key)
    bindings: Channel[BindingKey, Binding] = writes.channel("location", no_sink, lambda b: b.key)
    appearances: Channel[AppearanceKey, Appearance] = writes.channel(
        "apps", no_sink, lambda a: (a.line, a.index)
    )
    bus = EventBus()
    Persistence(bindings, subscriptions, appearances).attach(bus)
    return writes, subscriptions, appearances, bus


def test_an_appearance_is_stored_as_its_change_left_it_and_deleted_when_idle() -> None:
    _, _, appearances, bus = persisted()
    seized = apply(Appearance("sip:2001@x", 2, owner="sip:a@192.0.2.1"), Trigger.SEIZE, 5.0)
    bus.publish(seized.fact)
    assert seized.appearance.state is AppearanceState.SEIZED
    assert appearances.pending(("sip:2001@x", 2)) == seized.appearance
    released = apply(seized.appearance, Trigger.SEIZE_RELEASED, 6.0)
    bus.publish(released.fact)
    assert released.appearance.state is AppearanceState.IDLE
    assert appearances.pending(("sip:2001@x", 2)) is DELETED


def test_notify_cseqs_are_stored_as_reserved_blocks() -> None:
    assert [reserved_cseq(n) for n in (1, 31, 32, 33, 64, 65)] == [32, 32, 32, 64, 64, 96]
    _, subscriptions, _, bus = persisted()
    sub = Subscription("sip:a@192.0.2.1", "sip:2001@x", Package.CALL_INFO, 1e9, "c", "f", "t")
    bus.publish(SubscriptionAdded(sub))
    assert subscriptions.pending(sub.key) == attrs.evolve(sub, notify_cseq=32)
    for cseq in range(1, 33):
        bus.publish(SubscriptionNotified(attrs.evolve(sub, notify_cseq=cseq)))
    assert subscriptions.pending(sub.key) == attrs.evolve(sub, notify_cseq=32)  # nothing new to store
    bus.publish(SubscriptionNotified(attrs.evolve(sub, notify_cseq=33)))
    assert subscriptions.pending(sub.key) == attrs.evolve(sub, notify_cseq=64)


def test_a_subscription_added_and_removed_before_a_flush_writes_nothing() -> None:
    writes, subscriptions, _, bus = persisted()
    seize = Subscription("sip:a@192.0.2.1", "sip:2001@x", Package.LINE_SEIZE, 1e9, "c", "f", "t", index=1)
    bus.publish(SubscriptionAdded(seize))
    bus.publish(SubscriptionNotified(attrs.evolve(seize, notify_cseq=1)))
    assert subscriptions.pending(seize.key) == attrs.evolve(seize, notify_cseq=32)
    bus.publish(SubscriptionRemoved(seize, "unsubscribed"))
    assert subscriptions.pending(seize.key) is None
    assert writes.depth == 0
    # One written by a flush in between, or refreshed, is deleted as before.
    kept = attrs.evolve(seize, to_tag="t2")
    bus.publish(SubscriptionAdded(kept))
    subscriptions.take()
    bus.publish(SubscriptionRemoved(kept, "unsubscribed"))
    assert subscriptions.pending(kept.key) is DELETED
    refreshed = attrs.evolve(seize, to_tag="t3")
    bus.publish(SubscriptionRefreshed(refreshed))
    bus.publish(SubscriptionRemoved(refreshed, "unsubscribed"))
    assert subscriptions.pending(refreshed.key) is DELETED
