"""``park.*``, ``pushreg.wake``, ``uac.*`` and ``stats.get_statistics`` over a real SipRouter with
its push service and call parking (rpc.md 3.4-3.6, push-and-parking.md 6.8 and 9).

The core is ``tests.push_rig``'s (P the upstream PBX, D a desk phone, M1/M2 mobiles);
``execute`` runs the edge actions as the stack does (sends recorded, facts published on the
bus), ``task.Clock`` is the reactor, and the push gateway's answers are fed back through
``SipRouter.push_delivered`` as the edge push client does.
"""

from __future__ import annotations

import json
from typing import Any, TypeVar

import attrs
import pytest
from prometheus_client import CollectorRegistry
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.task import Clock

from scaserver.control.catalogue import build_registry
from scaserver.control.dispatcher import Dispatcher
from scaserver.control.parkingview import EngineParkingGauges
from scaserver.control.seams import (
    UAC_FLAG_INIT,
    UAC_FLAG_ONGOING,
    UAC_FLAG_ONLINE,
    ParkedCallInfo,
    Statistic,
    UacRefusal,
    UacRegistration,
    WakeOutcome,
)
from scaserver.control.statistics import MetricsStatistics, selected
from scaserver.control.views import binding_text, statistic_group
from scaserver.edge.controlplane import (
    MobileParkingAdmin,
    RegistrarLocationControl,
)
from scaserver.edge.metricsfeed import PushMetrics
from scaserver.events import EventBus
from scaserver.metrics import NAMESPACE
from scaserver.metrics.counters import Metrics
from scaserver.parking.events import EndReason, ParkEnded
from scaserver.push.facts import PushesAborted
from scaserver.push.gateway import Answer, Outcome, PushRequest, PushType
from scaserver.push.pnparams import token_hash
from scaserver.registrar.binding import BindingKey, KeyKind, RemovalReason
from scaserver.registrar.midregsettings import Mode
from scaserver.sip.actions import Action, Deliver
from scaserver.sip.errors import ProtocolStateError
from scaserver.sip.message import Request
from tests.builders import make_core
from tests.push_rig import AGGREGATE_URI, AOR, DESK, M1, M1_WOKEN, M2, PBX, Rig, registered, rig, wakes
from tests.unit.control.fakes import ADMIN, SERVER, FakeLocation, FakeSca, check_result, run

CALL_ID = "call-1@pbx"
T = TypeVar("T")


def fired(deferred: Deferred[T]) -> T:
    """The result of a Deferred that has fired."""
    results: list[T] = []
    deferred.addCallback(results.append)
    (value,) = results
    return value


@attrs.define
class Plane:
    """The control plane's parking seam over a mobile rig, its bus and its clock."""

    r: Rig
    wake_wait_s: float = 10.0
    clock: Clock = attrs.field(factory=Clock)
    bus: EventBus = attrs.field(factory=EventBus)
    admin: MobileParkingAdmin = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self.clock.advance(self.r.now)
        self.admin = MobileParkingAdmin(
            self.r.core,
            self.execute,
            self.bus,
            self.clock,
            default_domain="example.com",
            wake_wait_s=self.wake_wait_s,
        )

    def execute(self, actions: list[Action]) -> None:
        """The stack's ``run``: sends and timers into the rig, facts onto the bus."""
        self.r.run(actions)
        for action in actions:
            if isinstance(action, Deliver):
                self.bus.publish(action.event)

    def tick(self, seconds: float) -> None:
        self.r.advance(seconds)
        self.clock.advance(seconds)

    def gateway(self, push: PushRequest, outcome: Outcome, status: int) -> None:
        """The push client's last word on ``push``, as the edge reports it."""
        self.execute(self.r.core.push_delivered(push, Answer(outcome, status), False, self.r.now))

    def dispatcher(self, metrics: Metrics | None = None) -> Dispatcher:
        registry = build_registry(
            sca=FakeSca(),
            location=FakeLocation(),
            server=SERVER,
            clock=self.clock.seconds,
            parking=self.admin,
            statistics=None if metrics is None else MetricsStatistics(metrics.registry, NAMESPACE),
        )
        return Dispatcher(registry, clock=self.clock.seconds, audit=lambda r: None, on_failure=_raise)

    def call(self, method: str, params: list[Any], metrics: Metrics | None = None) -> Any:
        """One JSON-RPC call; its result, checked against the catalogue."""
        body = json.dumps({"jsonrpc": "2.0", "method": method, "params": params, "id": 1}).encode()
        reply = run(self.dispatcher(metrics).dispatch(body, ADMIN))
        assert reply.body is not None
        envelope = json.loads(reply.body)
        assert "result" in envelope, envelope
        check_result(method, envelope["result"])
        return envelope["result"]


def _raise(method: str, error: BaseException) -> None:
    raise AssertionError(f"{method} failed") from error


def parked(desk: bool = True, second: bool = False) -> Plane:
    plane = Plane(registered(desk=desk, second=second))
    plane.r.invite()
    return plane


# ------------------------------------------------------------------ park.dump / park.lookup


def test_park_dump_shows_the_parked_call_its_branch_push_and_deadlines() -> None:
    plane = parked()
    r = plane.r
    (call,) = plane.admin.parked_calls()
    assert isinstance(call, ParkedCallInfo)
    assert (call.ruris, call.call_id, call.caller, call.callee, call.state) == (
        ("200@example.com",),
        CALL_ID,
        "sip:alice@example.com",
        "sip:200@example.com",
        "parked",
    )
    assert (call.parked_at, call.timeout_at, call.grace_until) == (r.now, r.now + 30.0, None)
    (branch,) = call.branches
    assert (branch.contact, branch.started_at, branch.state, branch.status) == (
        f"sip:200@{DESK.host}:{DESK.port}",
        r.now,
        "calling",
        None,
    )
    (attempt,) = call.pushes
    assert (attempt.provider, attempt.prid_sha256, attempt.state, attempt.wake_deadline) == (
        "apns",
        token_hash("TOK1"),
        "queued",
        None,
    )
    (push,) = r.pushes()
    plane.tick(0.2)
    plane.gateway(push, Outcome.SENT, 202)
    (attempt,) = plane.admin.parked_calls()[0].pushes
    assert (attempt.state, attempt.accepted_at, attempt.wake_deadline) == ("sent", r.now, r.now + 10.0)
    dumped = plane.call("park.dump", [])
    assert dumped[0]["age_s"] == 0.2 and dumped[0]["pushes"][0]["state"] == "sent"
    assert "TOK1" not in json.dumps(dumped)


def test_park_lookup_takes_the_aor_in_any_spelling() -> None:
    plane = parked()
    for ruri in ("200", "200@example.com", "sip:200@example.com"):
        assert [call.call_id for call in plane.admin.parked_calls(ruri)] == [CALL_ID], ruri
    assert plane.admin.parked_calls("201") == []
    assert plane.call("park.lookup", ["200@example.com"])[0]["ruri"] == "200@example.com"


def test_a_superseded_branch_is_shown_so() -> None:
    plane = parked(desk=False)
    wakes(plane.r, M1_WOKEN, "TOK1", "m1-b")
    wakes(plane.r, M1, "TOK1", "m1-c")  # the same device again from another port, no answer yet
    (call,) = plane.admin.parked_calls()
    assert [b.state for b in call.branches] == ["superseded", "calling"]
    assert call.pushes[0].state == "woken"


def test_binding_keys_are_shown_without_the_push_token() -> None:
    push = BindingKey(AOR, KeyKind.PUSH, "apns TOK1 T.app.voip")
    assert binding_text(push) == f"push:apns {token_hash('TOK1')}"
    assert binding_text(BindingKey(AOR, KeyKind.URI, "sip:200@d")) == "uri:sip:200@d"
    assert binding_text(("desk",)) == "('desk',)"


# ------------------------------------------------------------------ park.release


def test_park_release_answers_the_caller_cancels_branches_and_pushes_cancel() -> None:
    plane = parked()
    r = plane.r
    (to_desk,) = r.to(DESK, "INVITE")
    r.answer(to_desk, 180, DESK, "desk")
    (push,) = r.pushes()
    plane.gateway(push, Outcome.SENT, 202)
    mark = r.mark()
    released = run(plane.admin.release(CALL_ID, 486))
    assert released is not None and released.call_id == CALL_ID
    assert r.statuses() == [180, 180, 486]
    assert [m.method for m, p in r.since(mark) if p == DESK and isinstance(m, Request)] == ["CANCEL"]
    (cancel_push,) = r.pushes(PushType.CANCEL)
    assert (cancel_push.reason, cancel_push.prid) == ("timeout", "TOK1")
    assert [e.park_id for e in r.of(PushesAborted)] == ["p-000001"]
    (ended,) = r.of(ParkEnded)
    assert (ended.reason, ended.rule) == (EndReason.RELEASED, "F4")
    assert plane.admin.parked_calls() == [] and plane.admin.parked() == []
    # The desk's 487 to our CANCEL is absorbed: the caller saw one final response.
    r.answer(to_desk, 487, DESK, "desk")
    assert r.statuses() == [180, 180, 486]
    # A device waking now gets no branch (the call left the table).
    wakes(r, M1_WOKEN, "TOK1", "m1-b")
    assert r.to(M1_WOKEN, "INVITE") == []


def test_park_release_of_a_queued_push_sends_the_cancel_once_it_is_accepted() -> None:
    plane = parked(desk=False)
    r = plane.r
    result = plane.call("park.release", [CALL_ID])
    assert result["code"] == 480 and result["call"]["call_id"] == CALL_ID
    assert r.statuses() == [180, 480]
    assert r.pushes(PushType.CANCEL) == []  # R7: never before the call push
    (push,) = r.pushes(PushType.CALL)
    plane.gateway(push, Outcome.SENT, 202)
    assert [p.reason for p in r.pushes(PushType.CANCEL)] == ["timeout"]


def test_park_release_cancels_an_unanswered_branch_once_it_rings() -> None:
    plane = parked()
    r = plane.r
    (to_desk,) = r.to(DESK, "INVITE")
    run(plane.admin.release(CALL_ID, 480))
    assert r.statuses() == [180, 480]
    assert r.to(DESK, "CANCEL") == []  # RFC 3261 9.1: not before a provisional
    r.answer(to_desk, 180, DESK, "desk")
    assert len(r.new_to(DESK, "CANCEL")) == 1
    assert r.statuses() == [180, 480]  # the late 180 is not relayed after the final


def test_park_release_of_an_unknown_call_changes_nothing() -> None:
    plane = parked()
    assert run(plane.admin.release("other@pbx", 480)) is None
    assert len(plane.admin.parked_calls()) == 1
    assert run(Plane(rig()).admin.release(CALL_ID, 480)) is None
    lot = plane.r.parking.lot
    assert lot.release("other@pbx", 480, plane.r.now) is None
    for status in (200, 299, 700):
        with pytest.raises(ProtocolStateError):
            lot.release(CALL_ID, status, plane.r.now)
    assert len(lot) == 1


# ------------------------------------------------------------------ pushreg.wake


def test_pushreg_wake_pushes_reg_refresh_and_answers_after_the_gateway() -> None:
    plane = Plane(registered(desk=True, second=True))
    r = plane.r
    waiting = ensureDeferred(plane.admin.wake("200", "rpc"))
    pushes = r.pushes(PushType.REG_REFRESH)
    assert [(p.prid, p.reason, p.aor, p.call) for p in pushes] == [
        ("TOK1", "rpc", AOR, None),
        ("TOK2", "rpc", AOR, None),
    ]
    assert not waiting.called
    plane.tick(0.25)
    plane.gateway(pushes[0], Outcome.SENT, 202)
    assert not waiting.called
    plane.tick(0.1)
    plane.gateway(pushes[1], Outcome.INVALID, 410)
    assert waiting.called
    assert fired(waiting) == [
        WakeOutcome(f"sip:200@{M1.host}:{M1.port}", "apns", "sent", 202, 250),
        WakeOutcome(f"sip:200@{M2.host}:{M2.port}", "apns", "invalid", 410, 350),
    ]
    assert plane.clock.getDelayedCalls() == []  # the wait window was closed


def test_pushreg_wake_reports_pending_when_the_gateway_is_silent_and_suppresses_repeats() -> None:
    plane = Plane(registered(desk=False), wake_wait_s=3.0)
    waiting = ensureDeferred(plane.admin.wake("200@example.com", "rpc"))
    plane.tick(3.0)
    assert fired(waiting) == [WakeOutcome(f"sip:200@{M1.host}:{M1.port}", "apns", "pending")]
    again = run(plane.admin.wake("200", "rpc"))  # within push.refresh_trigger (5.3 dedup)
    assert again == [WakeOutcome(f"sip:200@{M1.host}:{M1.port}", "apns", "suppressed")]
    assert len(plane.r.pushes(PushType.REG_REFRESH)) == 1


def test_pushreg_wake_through_the_dispatcher_is_checked_against_the_catalogue() -> None:
    plane = Plane(registered(desk=False))
    body = json.dumps({"jsonrpc": "2.0", "method": "pushreg.wake", "params": [AOR, "test"], "id": 7})
    reply = ensureDeferred(plane.dispatcher().dispatch(body.encode(), ADMIN))
    (push,) = plane.r.pushes(PushType.REG_REFRESH)
    assert push.reason == "test"
    plane.gateway(push, Outcome.FAILED, 404)
    body_out = fired(reply).body
    assert body_out is not None
    result = json.loads(body_out)["result"]
    check_result("pushreg.wake", result)
    assert [(row["status"], row["gateway_status"], row["latency_ms"]) for row in result] == [
        ("failed", 404, 0)
    ]


def test_pushreg_wake_unknown_aor_and_aor_without_push() -> None:
    plane = Plane(registered(desk=True))
    assert run(plane.admin.wake("999", "rpc")) is None
    assert run(plane.admin.wake("", "rpc")) is None
    desk_only = Plane(rig())
    desk_only.r.device_registers(DESK, f"sip:200@{DESK.host}:{DESK.port}", call_id="d-a")
    assert run(desk_only.admin.wake("200", "rpc")) == []
    assert desk_only.r.pushes() == []


# ------------------------------------------------------------------ uac.*


def test_uac_reg_dump_describes_the_upstream_registration() -> None:
    plane = Plane(registered(desk=False))
    r = plane.r
    (record,) = plane.admin.uac_registrations()
    layer_transport, layer_host, layer_port = r.core.layer.local_via(PBX)
    assert record == UacRegistration(
        l_uuid="200@example.com",
        l_username="200",
        l_domain="example.com",
        r_username="200",
        r_domain="example.com",
        realm="",
        auth_username="",
        auth_proxy=f"sip:{PBX.host}:{PBX.port};transport=udp",
        expires=3600,
        flags=UAC_FLAG_ONLINE | UAC_FLAG_INIT,
        timer_expires=r.now + 3600,
        reg_init=r.now,
        reg_delay=0,
        contact_addr=AGGREGATE_URI,
        socket=f"{layer_transport.lower()}:{layer_host}:{layer_port}",
    )
    (dumped,) = plane.call("uac.reg_dump", [])
    assert (dumped["auth_password"], dumped["auth_ha1"], dumped["diff_expires"]) == ("***", "***", 3600)
    assert plane.call("uac.reg_info", ["l_username", "200"])["l_uuid"] == "200@example.com"


def test_uac_reg_refresh_sends_a_register_upstream_now() -> None:
    plane = Plane(registered(desk=False))
    r = plane.r
    plane.tick(100.0)
    before = len(r.new_to(PBX, "REGISTER"))
    record = run(plane.admin.uac_refresh("200"))
    assert isinstance(record, UacRegistration)
    assert record.flags == UAC_FLAG_ONLINE | UAC_FLAG_INIT | UAC_FLAG_ONGOING
    registers = r.new_to(PBX, "REGISTER")
    assert len(registers) == before + 1
    assert registers[-1].headers.values("Contact") == (f"<{AGGREGATE_URI}>",)
    r.pbx_answers_last_register(200)
    plane.clock.advance(0)
    (after,) = plane.admin.uac_registrations()
    assert (after.reg_init, after.timer_expires, after.flags) == (
        r.now,
        r.now + 3600,
        UAC_FLAG_ONLINE | UAC_FLAG_INIT,
    )


def test_uac_reg_refresh_refusals() -> None:
    assert run(Plane(rig()).admin.uac_refresh("200")) is UacRefusal.NO_RECORD
    plane = Plane(registered(desk=False))
    assert run(plane.admin.uac_refresh("201")) is UacRefusal.NO_RECORD
    midreg = plane.r.midregistrar
    (binding,) = plane.r.core.registrar.location.bindings(AOR)
    removal = plane.r.core.registrar.location.remove(binding.key, RemovalReason.ADMINISTRATIVE, plane.r.now)
    plane.execute(plane.r.core.run(removal, plane.r.now))
    assert run(plane.admin.uac_refresh("200")) is UacRefusal.NO_BINDINGS
    assert midreg.refresh_now(AOR, plane.r.now) == []
    assert midreg.refresh_now("sip:201@example.com", plane.r.now) is None
    mirror = Plane(registered(desk=False, midreg={"mode": Mode.MIRROR}))
    assert run(mirror.admin.uac_refresh("200")) is UacRefusal.MIRROR_MODE
    assert mirror.r.midregistrar.refresh_now(AOR, mirror.r.now) == []


# ------------------------------------------------------------------ stats.get_statistics


def test_tsilo_statistics_come_from_the_metrics_counters() -> None:
    plane = Plane(registered(desk=False))
    r = plane.r
    metrics = Metrics(CollectorRegistry(), parking=EngineParkingGauges(r.core))
    PushMetrics(metrics).attach(plane.bus)
    mark = len(r.facts)
    r.invite()
    for fact in r.facts[mark:]:
        plane.bus.publish(fact)  # what the stack publishes
    mark = len(r.facts)
    wakes(r, M1_WOKEN, "TOK1", "m1-b")
    for fact in r.facts[mark:]:
        plane.bus.publish(fact)
    lines = plane.call("stats.get_statistics", ["tsilo:"], metrics)
    assert lines == [
        "tsilo:added_branches = 1",
        "tsilo:stored_ruris = 1",
        "tsilo:stored_transactions = 1",
        "tsilo:total_ruris = 1",
        "tsilo:total_transactions = 1",
    ]
    assert plane.call("stats.get_statistics", ["parked_current", "park:parked"], metrics) == [
        "park:parked = 1",
        "park:parked_current = 1",
    ]
    everything = plane.call("stats.get_statistics", ["all"], metrics)
    assert "push:push_sent = 0" in everything and "tsilo:total_ruris = 1" in everything
    assert not [line for line in everything if "_created" in line or "_bucket" in line]
    run(plane.admin.release(CALL_ID, 480))
    stored = MetricsStatistics(metrics.registry, NAMESPACE).statistics()
    assert Statistic("tsilo", "stored_ruris", 0) in stored and Statistic("tsilo", "total_ruris", 1) in stored


def test_statistic_groups_of_metric_families() -> None:
    assert statistic_group("tsilo_stored_ruris") == ("tsilo", "stored_ruris")
    assert statistic_group("added_branches") == ("tsilo", "added_branches")
    assert statistic_group("park_timeouts") == ("park", "park_timeouts")
    assert statistic_group("push_wake_latency_ms") == ("push", "push_wake_latency_ms")
    assert statistic_group("sca_subscriptions") == ("sca", "subscriptions")
    assert statistic_group("notify") == ("sca", "notify")
    assert statistic_group("transactions") == ("tm", "transactions")
    assert statistic_group("parse_errors") == ("core", "parse_errors")


def test_labels_histograms_and_selection() -> None:
    metrics = Metrics(CollectorRegistry())
    metrics.notify_sent("call-info")
    metrics.push_woke(420)
    stats = MetricsStatistics(metrics.registry, NAMESPACE).statistics()
    assert Statistic("sca", "notify_call-info_sent", 1) in stats
    assert Statistic("push", "push_wake_latency_ms_count", 1) in stats
    assert Statistic("push", "push_wake_latency_ms_sum", 420) in stats
    assert selected(stats, ["nothing-like-this", "sca:nope"]) == []
    assert selected(stats, ["sca:notify_call-info_sent", "notify_call-info_sent"]) == [
        Statistic("sca", "notify_call-info_sent", 1)
    ]


def test_statistics_keep_kamailio_names_and_milliseconds_and_skip_process_metrics() -> None:
    metrics = Metrics(CollectorRegistry(), process=True)
    metrics.push_gateway(0, 1234)
    metrics.park_stored(["sip:200@example.com", "sip:201@example.com"])
    stats = MetricsStatistics(metrics.registry, NAMESPACE).statistics()
    assert Statistic("push", "push_gateway_latency_ms_sum", 1234) in stats
    assert Statistic("push", "push_gateway_latency_ms_count", 1) in stats
    assert Statistic("tsilo", "total_transactions", 2) in stats
    assert not [stat for stat in stats if "process" in stat.name or "python" in stat.name]
    assert statistic_group("registered_contacts") == ("usrloc", "location-contacts")


def test_a_core_without_push_has_empty_tables() -> None:
    core = make_core(require_auth=False)
    clock = Clock()
    admin = MobileParkingAdmin(core, lambda actions: None, EventBus(), clock, default_domain="example.com")
    assert admin.parked_calls() == () and admin.parked_calls("200") == () and admin.uac_registrations() == ()
    assert run(admin.release(CALL_ID, 480)) is None
    assert run(admin.wake("200", "rpc")) is None
    assert run(admin.uac_refresh("200")) is UacRefusal.NO_RECORD
    gauges = EngineParkingGauges(core)
    assert (gauges.stored_ruris(), gauges.stored_transactions(), gauges.transactions_of(AOR)) == (0, 0, 0)
    with pytest.raises(ValueError, match="wake_wait_s"):
        MobileParkingAdmin(core, lambda actions: None, EventBus(), clock, default_domain="d", wake_wait_s=-1)


# ------------------------------------------------------------------ ul.* and dormant bindings


def location_of(plane: Plane) -> RegistrarLocationControl:
    async def flushed() -> None:
        return None

    return RegistrarLocationControl(
        plane.r.core, plane.execute, plane.clock, default_domain="example.com", flush=flushed
    )


def test_ul_dump_shows_a_dormant_apns_binding_as_expired_and_ul_rm_removes_it() -> None:
    plane = Plane(registered(desk=False))
    plane.tick(601)  # past its expiry: dormant, push-only (push-and-parking.md 4.5)
    location = location_of(plane)
    assert plane.r.core.registrar.location.bindings(AOR) == ()
    (record,) = location.dump()
    (contact,) = record.contacts
    assert contact.push is not None and contact.push.prid_sha256 == token_hash("TOK1")
    assert contact.expires_at is not None and contact.expires_at <= plane.clock.seconds()
    assert (contact.push.dormant, contact.push.keepalive, contact.push.source) == (True, "extend", "rfc8599")
    assert fired(ensureDeferred(location.rm("200"))) is True
    assert location.dump() == [] and plane.r.push.dormant(AOR) == ()
    assert fired(ensureDeferred(location.rm("200"))) is False


def test_ul_dump_shows_the_push_state_of_a_contact_t12() -> None:
    plane = parked(desk=False)
    location = location_of(plane)
    (push,) = plane.r.pushes()
    plane.gateway(push, Outcome.SENT, 202)
    plane.tick(0.3)
    wakes(plane.r, M1_WOKEN, "TOK1", "m1-b")
    (contact,) = location.dump()[0].contacts
    assert contact.push is not None and contact.push.push_capable and contact.push.last_wake_ms == 300
    assert contact.push.last_push_at == pytest.approx(plane.r.now - 0.3)
    plane.tick(5)  # R13: only a binding confirmed before the invalidation loses its push
    plane.r.invite("call-2@pbx")
    second = plane.r.pushes()[-1]
    plane.gateway(second, Outcome.INVALID, 410)  # T12: the token is dead
    (contact,) = location.dump()[0].contacts
    assert contact.push is not None and not contact.push.push_capable
    assert contact.push.invalidated_at == plane.r.now
