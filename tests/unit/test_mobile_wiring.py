"""The push mid-registrar and parking as wired into the server: the ``[push]``,
``[midregistrar]`` and ``[parking]`` settings, the composition root, the RPC seam over a
running core, and the push metrics."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry

from scaserver.app import PushMetrics, make_core, make_mobile
from scaserver.config import ConfigError, Settings, settings_from_mapping
from scaserver.edge.controlplane import MobileParkingControl
from scaserver.events import EventBus
from scaserver.metrics import Metrics
from scaserver.mobile import PushAnswered, PushOutcome, PushRetrying
from scaserver.parking.parked import BranchAdded, EndReason, ParkEnded, ParkStarted, WakeMissed, WakeObserved
from scaserver.push.gateway import Outcome
from scaserver.registrar.midregistrar import Mode
from scaserver.sip.message import Peer, Transport
from scaserver.sip.trust import TrustedPeers
from tests.unit.test_mobile import AOR, PBX, registered

PUSH_ON = {
    "server": {"domains": ["example.com"]},
    "push": {"enabled": True, "gateway_url": "https://gw.example.com/push"},
    "midregistrar": {"enabled": True, "upstream": "sip:192.0.2.50:5070;transport=tcp"},
    "parking": {"wake_timeout": 6.0, "early_media": "first"},
}


def settings(data: dict[str, object]) -> Settings:
    return settings_from_mapping(data, "test.toml", interfaces=lambda name: None)


def test_push_and_mid_registrar_are_off_by_default() -> None:
    defaults = settings({})
    assert not defaults.push.enabled and not defaults.midregistrar.enabled
    core = make_core(defaults, credentials=lambda u, r: None, trusted=TrustedPeers(), lines=(), secret=b"s")
    assert core.mobile is None


@pytest.mark.parametrize(
    ("section", "values", "key"),
    [
        ("push", {"enabled": True}, "push.gateway_url"),
        ("push", {"max_attempts": 0}, "push.max_attempts"),
        ("midregistrar", {"enabled": True}, "midregistrar.upstream"),
        ("midregistrar", {"mode": "contact"}, "midregistrar.mode"),
        ("midregistrar", {"device_min_expires": 7200}, "midregistrar.device_default_expires"),
        ("parking", {"early_media": "some"}, "parking.early_media"),
        ("parking", {"timeout_response": 200}, "parking.timeout_response"),
        ("parking", {"wake_timeout": 0}, "parking.wake_timeout"),
    ],
)
def test_unusable_values_name_their_key(section: str, values: dict[str, object], key: str) -> None:
    with pytest.raises(ConfigError) as error:
        settings({section: values})
    assert error.value.key == key


def test_unknown_key_is_refused() -> None:
    with pytest.raises(ConfigError) as error:
        settings({"push": {"gateway": "x"}})
    assert "push" in error.value.key


def test_the_composition_root_builds_the_coordinator_and_trusts_the_upstream() -> None:
    configured = settings(PUSH_ON)
    core = make_core(configured, credentials=lambda u, r: None, trusted=TrustedPeers(), lines=(), secret=b"s")
    mobile = core.mobile
    assert mobile is not None and mobile.midregistrar is not None
    midreg = mobile.midregistrar.settings
    assert midreg.upstream == Peer(Transport.TCP, "192.0.2.50", 5070)
    assert (midreg.upstream_domain, midreg.advertised, midreg.mode) == (
        "192.0.2.50",
        "127.0.0.1:5060",
        Mode.AOR,
    )
    assert core.trusted.is_trusted(Peer(Transport.TCP, "192.0.2.50", 5070))
    assert mobile.parking.settings.wake_timeout == 6.0
    assert mobile.settings.parking_enabled
    assert mobile.proxy is core.proxy and mobile.location is core.registrar.location


def test_push_without_mid_registrar_parks_on_the_core_registrar() -> None:
    only_push = settings({**PUSH_ON, "midregistrar": {}})
    core = make_core(only_push, credentials=lambda u, r: None, trusted=TrustedPeers(), lines=(), secret=b"s")
    mobile = make_mobile(only_push, core.registrar, core.proxy, core.identity, core.unique)
    assert mobile is not None and mobile.midregistrar is None
    assert not core.trusted.is_trusted(PBX)


def test_rpc_seam_reads_the_parking_table_and_the_upstream_registration() -> None:
    r = registered(desk=False)
    control = MobileParkingControl(r.core, default_domain="example.com")
    assert control.parked() == []
    r.invite()
    (parked,) = control.parked()
    assert (parked.ruri, parked.tlabel, parked.call_id) == ("200@example.com", 1, "call-1@pbx")
    (info,) = control.registrations()
    assert (info.aor, info.state, info.mode, info.last_ok) == (AOR, "REGISTERED", "aor", r.now)
    assert control.registration("200") == info
    assert control.registration("999") is None


def test_push_and_parking_facts_are_counted() -> None:
    metrics = Metrics(CollectorRegistry())
    bus = EventBus()
    PushMetrics(metrics).attach(bus)
    bus.publish(PushAnswered("a1", "call", PushOutcome.SENT, 202, 1.0))
    bus.publish(PushAnswered("a2", "call", PushOutcome.INVALID, 410, 1.0))
    bus.publish(PushRetrying("a3", 1.0))
    bus.publish(WakeObserved("p-1", "a1", 420))
    bus.publish(WakeObserved("p-1", "a9", None))
    bus.publish(WakeMissed("p-1", "a4"))
    bus.publish(ParkStarted("p-1", "tx", (AOR,), None, 1.0))
    bus.publish(BranchAdded("p-1", "b", True, 1.0))
    bus.publish(BranchAdded("p-1", "d", False, 1.0))
    bus.publish(ParkEnded("p-1", "tx", EndReason.ANSWERED, "F1", 2.0))
    value = metrics.registry.get_sample_value
    assert value("scaserver_push_sent_total") == 1.0
    assert value("scaserver_push_invalidated_total") == 1.0
    assert value("scaserver_push_retried_total") == 1.0
    assert value("scaserver_push_no_wake_total") == 1.0
    assert value("scaserver_push_wake_latency_ms_count") == 1.0
    assert value("scaserver_push_wake_latency_ms_bucket", {"le": "500.0"}) == 1.0
    assert value("scaserver_parked_total") == 1.0
    assert value("scaserver_added_branches_total") == 1.0
    assert value("scaserver_park_answered_total") == 1.0
    assert value("scaserver_parked_current") == 0.0


def test_outcome_of_an_exhausted_retry_is_counted_failed() -> None:
    r = registered(desk=False)
    r.invite()
    (push,) = r.pushes()
    r.push_result(push, Outcome.RETRY, 503)
    assert [f.outcome for f in r.of(PushAnswered)] == [PushOutcome.FAILED]  # type: ignore[attr-defined]
