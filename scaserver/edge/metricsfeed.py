"""The metrics feeds: the facts on the bus counted into the Prometheus collectors, and the
write-behind queue sampled (depth, flush latency, dead letters).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from scaserver.edge.pushgateway import GatewayActivity
from scaserver.edge.writebehind import WriteBehind
from scaserver.events import EventBus
from scaserver.metrics.counters import Metrics
from scaserver.parking.events import (
    BranchAdded,
    EndReason,
    ParkEnded,
    ParkRejected,
    ParkStarted,
    WakeMissed,
    WakeObserved,
)
from scaserver.push.facts import (
    PushAnswered,
    PushOutcome,
    PushRetrying,
)
from scaserver.registrar.binding import (
    BindingAdded,
    BindingExpired,
    BindingRefreshed,
    BindingRemoved,
)
from scaserver.router.authentication import AuthenticationRejected
from scaserver.router.facts import TransactionCompleted
from scaserver.sca.subscription import (
    NotifyAnswered,
    Package,
    SubscriptionRemoved,
)
from scaserver.sip.digest import (
    RejectCause,
)
from scaserver.sip.endpoint import MessageDropped, RequestRefused, StatelessReply


class PushMetrics:
    """Counts push and parking facts (push-and-parking.md 5.3, 6.8) into the collectors."""

    _OUTCOMES: Final = {
        PushOutcome.SENT: "sent",
        PushOutcome.FAILED: "failed",
        PushOutcome.INVALID: "invalidated",
        PushOutcome.DROPPED: "dropped",
    }
    _ENDINGS: Final = {
        EndReason.ANSWERED: "park_answered",
        EndReason.TIMEOUT: "park_timeouts",
        EndReason.CANCELLED: "park_cancelled",
    }

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def attach(self, bus: EventBus) -> None:
        metrics = self._metrics
        bus.subscribe(PushAnswered, lambda e: metrics.push(self._OUTCOMES[e.outcome]))
        bus.subscribe(PushRetrying, lambda _: metrics.push("retried"))
        bus.subscribe(WakeMissed, lambda _: metrics.push("no_wake"))
        bus.subscribe(WakeObserved, lambda e: metrics.push_woke(e.latency_ms))
        bus.subscribe(GatewayActivity, lambda e: metrics.push_gateway(e.inflight, e.latency_ms))
        bus.subscribe(ParkStarted, self._started)
        bus.subscribe(ParkRejected, lambda _: metrics.park("park_rejected"))
        bus.subscribe(BranchAdded, lambda e: metrics.park("added_branches") if e.injected else None)
        bus.subscribe(ParkEnded, self._ended)

    def _started(self, event: ParkStarted) -> None:
        self._metrics.park("parked")
        self._metrics.park_stored(event.aors)  # tsilo totals (6.8)

    def _ended(self, event: ParkEnded) -> None:
        self._metrics.park_ended()
        name = self._ENDINGS.get(event.reason)
        if name is not None:
            self._metrics.park(name)


class MetricsFeed:
    """Counts the facts on the bus into the Prometheus collectors, and samples the write-behind
    queue (depth, flush latency) every second."""

    def __init__(self, metrics: Metrics, writes: WriteBehind) -> None:
        self._metrics, self._writes = metrics, writes
        self._flushes = 0
        self._written = 0
        self._dead_letters: dict[str, int] = {}

    def reactor_lag(self, seconds: float) -> None:
        self._metrics.reactor_lag(seconds)

    def gc_pause(self, generation: int, seconds: float) -> None:
        self._metrics.gc_pause(generation, seconds)

    def attach(self, bus: EventBus) -> None:
        # The two facts of every transaction are counted by one call each, straight into the
        # counting dicts (as Metrics.notify_sent and transaction_completed count).
        notify_counts, transaction_counts = self._metrics.notify_counts, self._metrics.transaction_counts
        package_names = {package: package.value for package in Package}

        def notify_sent(event: NotifyAnswered) -> None:
            labels = (package_names[event.subscription.event], "sent")
            notify_counts[labels] = notify_counts.get(labels, 0) + 1

        def transaction_completed(event: TransactionCompleted) -> None:
            labels = (event.kind, event.outcome)
            transaction_counts[labels] = transaction_counts.get(labels, 0) + 1

        bus.subscribe(NotifyAnswered, notify_sent)
        bus.subscribe(SubscriptionRemoved, self._removed)
        # A binding's fact counted by one call too (a refreshing REGISTER publishes one).
        registration_counts = self._metrics.registration_counts

        def registration(labels: tuple[str]) -> Callable[[object], None]:
            def count(_: object) -> None:
                registration_counts[labels] = registration_counts.get(labels, 0) + 1

            return count

        bus.subscribe(BindingAdded, registration(("added",)))
        bus.subscribe(BindingRefreshed, registration(("refreshed",)))
        bus.subscribe(BindingRemoved, registration(("removed",)))
        bus.subscribe(BindingExpired, registration(("expired",)))
        PushMetrics(self._metrics).attach(bus)
        bus.subscribe(MessageDropped, self._dropped)
        bus.subscribe(StatelessReply, self._stateless)
        bus.subscribe(AuthenticationRejected, self._auth)
        bus.subscribe(RequestRefused, lambda e: self._metrics.request_refused(e.status, e.cause))
        bus.subscribe(TransactionCompleted, transaction_completed)

    def _removed(self, event: SubscriptionRemoved) -> None:
        if event.reason == "notify-failed":
            self._metrics.notify_failed(event.subscription.event.value)

    def _auth(self, event: AuthenticationRejected) -> None:
        if event.cause is not RejectCause.CHALLENGE:
            self._metrics.auth_failure(event.cause.value)

    def _dropped(self, event: MessageDropped) -> None:
        self._metrics.message_dropped(event.kind)
        if event.kind == "unparsable":
            self._metrics.parse_error(event.peer.transport.value.lower())

    def _stateless(self, event: StatelessReply) -> None:
        if event.status == 400:
            self._metrics.parse_error(event.peer.transport.value.lower())

    def sample(self) -> None:
        writes = self._writes
        self._metrics.db_queue_depth("sql", writes.depth)
        if writes.flushes_total != self._flushes and writes.last_flush_latency_s is not None:
            self._metrics.db_flushed("sql", writes.last_flush_latency_s, writes.written_total - self._written)
        self._flushes, self._written = writes.flushes_total, writes.written_total
        for table, count in writes.dead_letters.items():
            if count != self._dead_letters.get(table, 0):
                self._metrics.db_dead_letters(table, count - self._dead_letters.get(table, 0))
                self._dead_letters[table] = count
