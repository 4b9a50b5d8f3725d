"""NAT pings on the injected clock: each flow once per interval, spread over the interval."""

from __future__ import annotations

from collections.abc import Iterable

import attrs
import pytest
from twisted.internet.task import Clock

from scaserver.edge.natping import KEEPALIVE_CRLF, NatFigures, NatPinger
from scaserver.edge.stack import KeepAliveCounts
from scaserver.events import EventBus
from scaserver.owners import PingFailed, RequestAnswered
from scaserver.registrar import nat, pingflows
from scaserver.registrar.binding import Binding, BindingKey, KeyKind
from scaserver.registrar.location import LocationService
from scaserver.registrar.nat import (
    SLOTS,
    FlowFailed,
    FlowFailure,
    NatPing,
    NatSettings,
    PingMethod,
    behind_nat,
    ping_slot,
)
from scaserver.sip.actions import Action, EngineAction, SendRequest
from scaserver.sip.message import Peer, Request, Transport


def nated(port: int) -> Binding:
    return Binding(
        key=BindingKey("sip:u@example.com", KeyKind.URI, f"sip:u{port}@192.168.1.10"),
        contact=f"sip:u{port}@192.168.1.10",
        expires_at=1e9,
        call_id=f"c{port}",
        cseq=1,
        received=Peer(Transport.UDP, "203.0.113.7", port),
    )


@attrs.define
class RecordingCore:
    runs: list[tuple[list[EngineAction], float]] = attrs.field(factory=list)

    def run(self, actions: Iterable[EngineAction], now: float) -> list[Action]:
        self.runs.append((list(actions), now))
        return []


def pinger(
    bindings: list[Binding], method: PingMethod = PingMethod.OPTIONS, interval: float = 10.0
) -> tuple[NatPinger, RecordingCore, Clock, list[tuple[bytes, Peer]]]:
    core, clock = RecordingCore(), Clock()
    location = LocationService()
    location.restore(bindings, 0.0)
    raw: list[tuple[bytes, Peer]] = []

    def send_raw(data: bytes, peer: Peer) -> bool:
        raw.append((data, peer))
        return True

    service = NatPinger(
        core,
        location.ping_flows,
        execute=lambda actions: None,
        send_raw=send_raw,
        clock=clock,
        settings=NatSettings(interval, method),
        local_uri="sip:keepalive@192.0.2.1:5060",
        unique=lambda: "u0000000001",
        figures=NatFigures(KeepAliveCounts(), location.ping_flows),
    )
    service.startService()
    return service, core, clock, raw


def test_every_flow_is_pinged_once_per_interval_over_several_turns() -> None:
    bindings = [nated(port) for port in range(40000, 40050)]
    service, core, clock, _ = pinger(bindings)
    for _ in range(SLOTS):
        clock.advance(1.0)
    sent = [a for actions, _ in core.runs for a in actions if isinstance(a, SendRequest)]
    assert sorted(a.peer.port for a in sent) == list(range(40000, 40050))
    assert all(isinstance(a.context, NatPing) and a.context.flow == a.peer for a in sent)
    assert all(isinstance(a.request, Request) and a.request.method == "OPTIONS" for a in sent)
    assert len(core.runs) > 1  # spread: not all in one turn
    assert max(len(actions) for actions, _ in core.runs) < len(bindings)
    assert [now for _, now in core.runs] == sorted(now for _, now in core.runs)
    assert service.figures.pings_sent == 50
    bus = EventBus()
    service.attach(bus)
    for answered in sent:
        bus.publish(RequestAnswered(answered.context, 200))
    clock.pump([1.0] * SLOTS)
    assert service.figures.pings_sent == 100  # the next interval pings them again
    service.stopService()
    assert clock.getDelayedCalls() == []


def test_crlf_method_writes_a_double_crlf_to_the_flow() -> None:
    bindings = [nated(40000)]
    _, core, clock, raw = pinger(bindings, PingMethod.CRLF)
    clock.pump([1.0] * SLOTS)
    assert raw == [(KEEPALIVE_CRLF, bindings[0].received)]
    assert core.runs == []


def test_zero_interval_pings_nothing() -> None:
    _, core, clock, raw = pinger([nated(40000)], interval=0.0)
    clock.advance(100.0)
    assert core.runs == [] and raw == [] and clock.getDelayedCalls() == []


def test_failures_are_counted_by_cause() -> None:
    service, _, _, _ = pinger([nated(40000)])
    bus = EventBus()
    service.attach(bus)
    flow = Peer(Transport.UDP, "203.0.113.7", 40000)
    bus.publish(PingFailed(flow))
    bus.publish(FlowFailed(flow, FlowFailure.PING_TIMEOUT, 1, 2, 0.0))
    assert service.figures.pings_failed == 1
    assert service.figures.flow_failures["ping-timeout"] == 1
    assert service.figures.nat_bindings() == {"udp": 1, "tcp": 0, "tls": 0}


def test_a_flow_with_a_ping_in_flight_is_not_pinged_again_until_it_is_answered() -> None:
    bindings = [nated(40000)]
    service, core, clock, _ = pinger(bindings)
    bus = EventBus()
    service.attach(bus)
    clock.pump([1.0] * SLOTS)
    clock.pump([1.0] * SLOTS)
    assert service.figures.pings_sent == 1  # the first one is still unanswered
    (first,) = [a for actions, _ in core.runs for a in actions if isinstance(a, SendRequest)]
    bus.publish(RequestAnswered(first.context, 200))
    clock.pump([1.0] * SLOTS)
    assert service.figures.pings_sent == 2
    bus.publish(PingFailed(bindings[0].received))
    clock.pump([1.0] * SLOTS)
    assert service.figures.pings_sent == 3


def test_a_turn_reads_the_flows_of_its_slot_and_no_other_binding(monkeypatch: pytest.MonkeyPatch) -> None:
    bindings = [nated(port) for port in range(20000, 23000)]
    service, core, clock, _ = pinger(bindings, interval=30.0)
    reads: list[Binding | Peer] = []

    def counted_slot(flow: Peer, slots: int = SLOTS) -> int:
        reads.append(flow)
        return ping_slot(flow, slots)

    def counted_nat(binding: Binding) -> bool:
        reads.append(binding)
        return behind_nat(binding)

    for module in (nat, pingflows):
        monkeypatch.setattr(module, "ping_slot", counted_slot)
        monkeypatch.setattr(module, "behind_nat", counted_nat)
    clock.advance(service.turn_s)
    (sent,) = [actions for actions, _ in core.runs]
    in_slot = [b.received for b in bindings if ping_slot(b.received, 30) == 0]
    assert sorted(a.peer.port for a in sent if isinstance(a, SendRequest)) == sorted(f.port for f in in_slot)
    assert 0 < len(in_slot) < len(bindings) // 10
    assert reads == []  # no binding was hashed or parsed: the turn read its own flows only
