"""NAT pings: keep the UDP pinholes of phones behind NAT open (``[nat]``).

:class:`NatPinger` is an edge service on the injected clock (``task.Clock`` in tests).  One
ping interval is cut into turns (:func:`~scaserver.registrar.nat.ping_turns`: ten, or one
per second of a longer interval); each UDP flow to
ping (:func:`~scaserver.registrar.nat.ping_targets`) belongs to one turn by a stable hash of
its address, so a flow is pinged once per interval and the pings of an interval are spread
over it, never all in one reactor turn.  The flows of each turn are an index the location
service keeps (:class:`~scaserver.registrar.pingflows.PingFlows`): a turn reads the flows of
that turn, never the whole location.  A flow whose last OPTIONS ping is still unanswered
is not pinged again until it is answered or has failed: one ping in flight per flow, so that
the retransmissions of older pings do not outlive a flow failure.

An OPTIONS ping is a request we originate through the transaction layer (a ``SendRequest``
with a :class:`~scaserver.registrar.nat.NatPing` context), not a stateless datagram: its
answer is matched, retransmitted per RFC 3261 17.1.2 and absorbed by its transaction like any
other, and its absence (timer F, 64*T1) is what the core turns into a flow failure.  It costs
one transaction per ping for up to 64*T1 (T4 once answered), counted against
``max_transactions`` like any other.  A ``crlf`` ping is a bare double CRLF written to the
flow: it refreshes the mapping and nothing else (nothing answers it, nothing fails).

The service also keeps the NAT figures the metrics read (:class:`NatFigures`) and logs each
flow failure.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from typing import Protocol

from twisted.application.service import Service
from twisted.logger import Logger
from typing_extensions import override

from scaserver.edge.stack import DelayedCall, KeepAliveCounts, TimerClock, call_later
from scaserver.events import EventBus
from scaserver.owners import PingFailed, RequestAnswered
from scaserver.registrar.nat import (
    FlowFailed,
    FlowFailure,
    NatPing,
    NatSettings,
    PingMethod,
    ping_request,
    ping_turns,
)
from scaserver.registrar.pingflows import PingFlows
from scaserver.sip.actions import Action, EngineAction, SendRequest
from scaserver.sip.message import Peer

KEEPALIVE_CRLF = b"\r\n\r\n"


class PingCore(Protocol):
    """What the pinger needs of the core: a way to run a ``SendRequest``."""

    def run(self, actions: Iterable[EngineAction], now: float) -> list[Action]: ...


class NatFigures:
    """Counters of the NAT keep-alive machinery, read by the metrics at scrape time."""

    def __init__(self, keepalives: KeepAliveCounts, flows: PingFlows) -> None:
        self.keepalives = keepalives
        self._flows = flows
        self.pings_sent = 0
        self.pings_failed = 0
        self.flow_failures: Counter[str] = Counter({cause.value: 0 for cause in FlowFailure})

    def keepalives_received(self) -> dict[str, int]:
        return dict(self.keepalives.received)

    def nat_bindings(self) -> dict[str, int]:
        """Bindings behind NAT now, by the transport of their flow (counted as they change)."""
        return self._flows.nat_bindings()


class NatPinger(Service):
    """Pings the UDP flows behind NAT every ``ping_interval`` seconds, spread over it."""

    _log = Logger()

    def __init__(
        self,
        core: PingCore,
        flows: PingFlows,
        *,
        execute: Callable[[Iterable[Action]], None],
        send_raw: Callable[[bytes, Peer], bool],
        clock: TimerClock,
        settings: NatSettings,
        local_uri: str,
        unique: Callable[[], str],
        figures: NatFigures,
    ) -> None:
        self._core, self._flows, self._execute, self._send_raw = core, flows, execute, send_raw
        self._clock, self._settings = clock, settings
        self._local_uri, self._unique, self.figures = local_uri, unique, figures
        self._turn = 0
        self._serial = 0
        self._call: DelayedCall | None = None
        self._in_flight: set[Peer] = set()
        self.turns = ping_turns(settings.ping_interval)
        flows.use_slots(self.turns)

    @property
    def turn_s(self) -> float:
        return self._settings.ping_interval / self.turns

    def attach(self, bus: EventBus) -> None:
        bus.subscribe(PingFailed, self._ping_failed)
        bus.subscribe(RequestAnswered, self._ping_answered)
        bus.subscribe(FlowFailed, self._flow_failed)

    @override
    def startService(self) -> None:
        self.running = True
        if self._settings.ping_interval > 0:
            self._call = call_later(self._clock, self.turn_s, self._tick)

    @override
    def stopService(self) -> None:
        self.running = False
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None

    def _tick(self) -> None:
        self._call = call_later(self._clock, self.turn_s, self._tick)
        slot = self._turn % self.turns
        self._turn += 1
        try:
            self.ping_slot(slot)
        except Exception:  # the one catch-all of this entry point (STYLE.md section 5)
            self._log.failure("NAT ping turn {slot} failed", slot=slot)

    def ping_slot(self, slot: int) -> int:
        """Ping the flows of turn ``slot``; how many were pinged."""
        targets = self._flows.targets(slot, ping_all=self._settings.ping_all)
        due = [(flow, binding) for flow, binding in targets.items() if flow not in self._in_flight]
        if not due:
            return 0
        now = self._clock.seconds()
        if self._settings.ping_method is PingMethod.CRLF:
            for flow, _ in due:
                self._send_raw(KEEPALIVE_CRLF, flow)
        else:
            sends: list[EngineAction] = []
            for flow, binding in due:
                self._serial += 1
                request = ping_request(
                    binding, local_uri=self._local_uri, call_id=self._unique(), from_tag=self._unique()[:10]
                )
                sends.append(SendRequest(request, flow, NatPing(flow, self._serial)))
                self._in_flight.add(flow)
            self._execute(self._core.run(sends, now))
        self.figures.pings_sent += len(due)
        self._log.debug("NAT ping turn {slot}: {count} flow(s)", slot=slot, count=len(due))
        return len(due)

    def _ping_answered(self, event: RequestAnswered) -> None:
        if isinstance(event.context, NatPing):
            self._in_flight.discard(event.context.flow)

    def _ping_failed(self, event: PingFailed) -> None:
        self._in_flight.discard(event.flow)
        self.figures.pings_failed += 1

    def _flow_failed(self, event: FlowFailed) -> None:
        self.figures.flow_failures[event.cause.value] += 1
        self._log.info(
            "flow {flow} failed ({cause}): {bindings} binding(s) and {subscriptions} subscription(s) dropped",
            flow=str(event.flow),
            cause=event.cause.value,
            bindings=event.bindings,
            subscriptions=event.subscriptions,
        )
