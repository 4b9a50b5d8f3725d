"""The push mid-registrar and parking as wired into the server: the ``[push]``,
``[midregistrar]`` and ``[parking]`` settings, the composition root, the RPC seam over a
running core, and the push metrics."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry

from scaserver.app import make_core, make_push
from scaserver.config.errors import ConfigError
from scaserver.config.load import settings_from_mapping
from scaserver.config.schema import Settings
from scaserver.control.parkingview import MobileParkingControl
from scaserver.directory import configured_lines
from scaserver.edge.factlog import FactLog
from scaserver.edge.metricsfeed import PushMetrics
from scaserver.edge.pushgateway import GatewayActivity
from scaserver.events import EventBus
from scaserver.metrics.counters import Metrics
from scaserver.parking.events import BranchAdded, EndReason, ParkEnded, ParkStarted, WakeMissed, WakeObserved
from scaserver.push.facts import PushAnswered, PushOutcome, PushRetrying
from scaserver.push.gateway import Outcome
from scaserver.push.pnparams import Keepalive, ValueSource
from scaserver.registrar.midregevents import UpstreamAuthNeeded
from scaserver.registrar.midregistrar import UpstreamCredentials
from scaserver.registrar.midregsettings import Mode
from scaserver.sip.digest import Algorithm, Credentials, compute_ha1
from scaserver.sip.digestclient import ClientCredentials
from scaserver.sip.keys import ServerKey
from scaserver.sip.message import Peer, Transport
from scaserver.sip.trust import TrustedPeers
from tests.push_rig import AOR, PBX, registered
from tests.unit.edge.doubles import LogCapture

PUSH_ON = {
    "server": {"domains": ["example.com"]},
    "push": {"enabled": True, "gateway_url": "https://gw.example.com/push"},
    "midregistrar": {"enabled": True, "upstream": "sip:192.0.2.50:5070;transport=tcp"},
    "parking": {"wake_timeout": 6.0, "early_media": "first"},
}

PARK_TX = ServerKey("tx", "pbx.example.com", None, "INVITE")


LEGACY = {
    "name": "acme-ios",
    "user_agent": "^AcmePhone iOS/",
    "provider": "apns",
    "token_from": "contact_param:pn-tok",
    "param_from": "contact_param:app-id",
    "param": "ABCDE12345.com.acme.phone.voip",
    "device_type": "ios",
    "keepalive": "extend",
}


def settings(data: dict[str, object]) -> Settings:
    return settings_from_mapping(data, "test.toml", interfaces=lambda name: None)


def test_push_and_mid_registrar_are_off_by_default() -> None:
    defaults = settings({})
    assert not defaults.push.enabled and not defaults.midregistrar.enabled
    core = make_core(defaults, credentials=lambda u, r: None, trusted=TrustedPeers(), lines=(), secret=b"s")
    assert core.push is None and core.parking is None


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
        ("push", {"refresh_trigger": 0}, "push.refresh_trigger"),
        ("push", {"extend_max_age": -1}, "push.extend_max_age"),
        ("push", {"legacy_rules": [{**LEGACY, "user_agent": "(["}]}, "push.legacy_rules[0].user_agent"),
        ("push", {"legacy_rules": [{**LEGACY, "provider": "acme"}]}, "push.legacy_rules[0].provider"),
        ("push", {"legacy_rules": [{**LEGACY, "token_from": "pn-tok"}]}, "push.legacy_rules[0].token_from"),
        ("push", {"legacy_rules": [{**LEGACY, "param_from": "body:x"}]}, "push.legacy_rules[0].param_from"),
        ("push", {"legacy_rules": [{**LEGACY, "keepalive": "never"}]}, "push.legacy_rules[0].keepalive"),
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
    push, parking = core.push, core.parking
    assert push is not None and push.midregistrar is not None and parking is not None
    midreg = push.midregistrar.settings
    assert midreg.upstream == Peer(Transport.TCP, "192.0.2.50", 5070)
    assert (midreg.upstream_domain, midreg.advertised, midreg.table.mode) == (
        "192.0.2.50",
        "127.0.0.1:5060",
        Mode.AOR,
    )
    assert core.trusted.is_trusted(Peer(Transport.TCP, "192.0.2.50", 5070))
    assert parking.lot.settings.wake_timeout == 6.0
    assert parking.enabled
    assert parking.push is push and push.location is core.registrar.location


def test_push_without_mid_registrar_parks_on_the_core_registrar() -> None:
    only_push = settings({**PUSH_ON, "midregistrar": {}})
    core = make_core(only_push, credentials=lambda u, r: None, trusted=TrustedPeers(), lines=(), secret=b"s")
    push = make_push(only_push, core.registrar, core.identity, core.unique)
    assert push is not None and push.midregistrar is None
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
    parking = registered(desk=False)
    parking.invite()
    (started,) = parking.of(ParkStarted)
    bus.publish(started)
    bus.publish(BranchAdded("p-1", "b", True, 1.0))
    bus.publish(BranchAdded("p-1", "d", False, 1.0))
    bus.publish(ParkEnded("p-1", PARK_TX, EndReason.ANSWERED, "F1", 2.0))
    bus.publish(GatewayActivity(2))
    bus.publish(GatewayActivity(1, 80))
    value = metrics.registry.get_sample_value
    assert value("scaserver_push_inflight") == 1.0
    assert value("scaserver_push_gateway_latency_seconds_count") == 1.0
    assert value("scaserver_push_gateway_latency_seconds_bucket", {"le": "0.1"}) == 1.0
    assert value("scaserver_push_sent_total") == 1.0
    assert value("scaserver_push_invalidated_total") == 1.0
    assert value("scaserver_push_retried_total") == 1.0
    assert value("scaserver_push_no_wake_total") == 1.0
    assert value("scaserver_push_wake_latency_seconds_count") == 1.0
    assert value("scaserver_push_wake_latency_seconds_bucket", {"le": "0.5"}) == 1.0
    assert value("scaserver_parked_total") == 1.0
    assert value("scaserver_added_branches_total") == 1.0
    assert value("scaserver_park_answered_total") == 1.0
    assert value("scaserver_parked_current") == 0.0


def test_outcome_of_an_exhausted_retry_is_counted_failed() -> None:
    r = registered(desk=False)
    r.invite()
    (push,) = r.pushes()
    r.push_result(push, Outcome.RETRY, 503)
    assert [f.outcome for f in r.of(PushAnswered)] == [PushOutcome.FAILED]


def test_legacy_rules_keepalive_and_purr_settings_reach_device_typing_and_policy() -> None:
    configured = settings(
        {
            **PUSH_ON,
            "push": {
                "enabled": True,
                "gateway_url": "https://gw",
                "legacy_rules": [LEGACY],
                "refresh_trigger": 90.0,
                "purr": True,
            },
        }
    )
    core = make_core(configured, credentials=lambda u, r: None, trusted=TrustedPeers(), lines=(), secret=b"s")
    assert core.push is not None
    (rule,) = core.push.settings.typing.legacy_rules
    assert (rule.name, rule.provider, rule.device_type) == ("acme-ios", "apns", "ios")
    assert rule.keepalive is Keepalive.EXTEND and rule.user_agent.search("AcmePhone iOS/4.2")
    assert rule.token_from == ValueSource.parse("contact_param:pn-tok")
    assert core.push.settings.policy.refresh_trigger == 90.0
    assert core.push.settings.typing.purr and core.push.settings.purr_secret == b"s"
    assert core.push.settings.policy.extend_max_age == 7 * 24 * 3600.0


def test_shared_line_push_members_setting_reaches_the_line() -> None:
    line = {"aor": "sip:line1@example.com", "members": ["sip:202@example.com"], "push_members": True}
    configured = settings({"server": {"domains": ["example.com"]}, "sca": {"lines": [line]}})
    (shared,) = configured_lines(configured.sca.lines, frozenset({"example.com"}))
    assert shared.push_members and shared.member_aors() == ("sip:202@example.com",)


# midregistrar.upstream_auth (push-and-parking.md 3.1, 3.5) -----------------------------------------

SUBSCRIBER = Credentials.from_password("200", "example.com", "device-secret")


def upstream_credentials_of(midregistrar: dict[str, object]) -> UpstreamCredentials | None:
    upstream = "sip:192.0.2.50:5070;transport=tcp"
    configured = settings(
        {**PUSH_ON, "midregistrar": {"enabled": True, "upstream": upstream, **midregistrar}}
    )

    def subscribers(username: str, realm: str) -> Credentials | None:
        return SUBSCRIBER if (username, realm) == ("200", "example.com") else None

    core = make_core(configured, credentials=subscribers, trusted=TrustedPeers(), lines=(), secret=b"s")
    assert core.push is not None and core.push.midregistrar is not None
    return core.push.midregistrar.credentials


def test_upstream_auth_none_gives_the_engine_no_credentials() -> None:
    assert upstream_credentials_of({}) is None


def test_upstream_auth_subscriber_uses_the_subscriber_table_when_the_realm_matches() -> None:
    credentials = upstream_credentials_of({"upstream_auth": "subscriber"})
    assert credentials is not None
    assert credentials(AOR, "example.com") == ClientCredentials.of(SUBSCRIBER)
    assert credentials(AOR, "pbx.example.com") is None
    assert credentials("sip:201@example.com", "example.com") is None


def test_upstream_auth_static_prefers_the_realm_entry_then_any_realm() -> None:
    ha1 = compute_ha1(Algorithm.MD5, "ext200", "pbx.example.com", "pbx-secret")
    credentials = upstream_credentials_of(
        {
            "upstream_auth": "static",
            "credentials": [
                {"aor": "sip:200@EXAMPLE.com", "password": "any-realm"},
                {"aor": AOR, "username": "ext200", "realm": "pbx.example.com", "ha1": ha1.upper()},
            ],
        }
    )
    assert credentials is not None
    assert credentials(AOR, "pbx.example.com") == ClientCredentials.with_ha1(
        "ext200", "pbx.example.com", Algorithm.MD5, ha1
    )
    any_realm = ClientCredentials.from_password("200", "other.example", "any-realm")
    assert credentials(AOR, "other.example") == any_realm
    assert credentials("sip:201@example.com", "pbx.example.com") is None


def test_mid_registrar_draws_a_fresh_cnonce() -> None:
    configured = settings(PUSH_ON)
    core = make_core(configured, credentials=lambda u, r: None, trusted=TrustedPeers(), lines=(), secret=b"s")
    assert core.push is not None and core.push.midregistrar is not None
    cnonce = core.push.midregistrar.cnonce
    assert cnonce is not None
    first, second = cnonce(), cnonce()
    assert len(first) == 16 and first != second


def test_upstream_auth_needed_is_logged_at_error_level() -> None:
    capture = LogCapture()
    facts = FactLog()
    facts._log = capture.logger("scaserver.facts")
    bus = EventBus()
    facts.attach(bus)
    bus.publish(UpstreamAuthNeeded(AOR, 401, "our credentials were refused", 10.0))
    assert capture.levels() == ["error"]
    assert capture.texts() == [
        "upstream registration of sip:200@example.com needs credentials: 401 our credentials were refused"
    ]
