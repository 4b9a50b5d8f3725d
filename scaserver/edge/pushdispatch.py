"""Push dispatch: the core's push requests through the gateway client, each outcome back into
the core (push-and-parking.md 5).
"""

from __future__ import annotations

from twisted.logger import Logger

from scaserver.edge.pushgateway import Delivery, GatewayActivity, PushGatewayClient
from scaserver.edge.stack import SipStack, TimerClock
from scaserver.events import EventBus
from scaserver.parking.events import ParkEnded
from scaserver.push.facts import (
    PushesAborted,
    PushRequested,
)
from scaserver.push.gateway import PushRequest
from scaserver.push.pnparams import (
    token_hash,
)
from scaserver.registrar.midregevents import RegisterDecided
from scaserver.router.router import SipRouter
from scaserver.sip.actions import Deliver


class PushDispatch:
    """Runs the core's push requests through the gateway client (push-and-parking.md 5) and
    feeds each outcome back into the core; logs every attempt (never the token in clear)."""

    _log = Logger(namespace="scaserver.push")

    def __init__(self, core: SipRouter, stack: SipStack, clock: TimerClock) -> None:
        self._core, self._stack, self._clock = core, stack, clock
        self.client: PushGatewayClient | None = None

    def attach(self, bus: EventBus) -> None:
        bus.subscribe(PushRequested, self._send)
        bus.subscribe(PushesAborted, self._abort)
        bus.subscribe(RegisterDecided, self._decided)
        bus.subscribe(ParkEnded, self._park_ended)

    def _decided(self, event: RegisterDecided) -> None:
        self._log.info("REGISTER for {aor}: {rule}", aor=event.aor, rule=event.rule)

    def _park_ended(self, event: ParkEnded) -> None:
        self._log.info(
            "parked call {park_id} ended {reason} ({rule})",
            park_id=event.park_id,
            reason=event.reason.value,
            rule=event.rule,
        )

    def _send(self, event: PushRequested) -> None:
        assert self.client is not None
        request = event.request
        self._log.info(
            "push {id} {type} to {provider} token {token} for {aor}",
            id=request.id,
            type=request.type.value,
            provider=request.provider,
            token=token_hash(request.prid)[:12],
            aor=request.aor,
        )
        sent = self.client.send(request, event.deadline)
        sent.addCallback(self._delivered)
        sent.addErrback(lambda failure: self._log.failure("push {id} failed", failure, id=request.id))

    def _delivered(self, delivery: Delivery) -> None:
        answer = delivery.answer
        self._log.info(
            "push {id} ended {outcome} ({status}) after {attempts} attempt(s)",
            id=delivery.request.id,
            outcome="dropped" if delivery.dropped else answer.outcome.value,
            status=answer.status,
            attempts=delivery.attempts,
        )
        now = self._clock.seconds()
        self._stack.run(self._core.push_delivered(delivery.request, answer, delivery.dropped, now))

    def retrying(self, request: PushRequest) -> None:
        self._stack.run(self._core.push_retrying(request, self._clock.seconds()))

    def activity(self, activity: GatewayActivity) -> None:
        self._stack.run([Deliver(activity)])  # for the push_inflight and latency metrics

    def _abort(self, event: PushesAborted) -> None:
        if self.client is not None:
            self.client.abort(event.park_id)
