"""Prometheus metrics of the server (``GET /metrics``, rpc.md / STYLE.md section 2).

Two kinds:

* gauges of engine state read lazily at scrape time through the ``ScaGauges`` seam
  (subscriptions by event, appearances by state): nothing is copied on the SIP path;
* counters and histograms the core and edge bump through the typed methods of ``Metrics``
  (NOTIFYs, transactions, registrations, parse errors, drops, database flushes).

Everything is registered in the ``CollectorRegistry`` passed in, never the global one, so tests
and several servers in one process do not share state.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric

NAMESPACE = "scaserver"

#: Buckets for database flush latency, seconds.
FLUSH_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

#: Buckets of ``push_wake_latency_ms`` (push-and-parking.md 5.3), milliseconds.
WAKE_BUCKETS_MS = (250.0, 500.0, 1000.0, 2000.0, 3000.0, 5000.0, 8000.0, 13000.0)

#: Buckets of ``push_gateway_latency_ms`` (one HTTP attempt, ``push.request_timeout`` 2 s).
GATEWAY_BUCKETS_MS = (25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2000.0, 5000.0)

#: Push attempt outcomes counted by ``push_*`` (push-and-parking.md 5.3).
PUSH_OUTCOMES = ("sent", "failed", "invalidated", "retried", "dropped", "no_wake")

#: Parked call counters (push-and-parking.md 6.8).
PARK_EVENTS = (
    "parked",
    "added_branches",
    "park_timeouts",
    "park_answered",
    "park_cancelled",
    "park_rejected",
)


#: tsilo-compatible parking totals (push-and-parking.md 6.8), ``scaserver_tsilo_<name>_total``.
TSILO_TOTALS = ("total_ruris", "total_transactions")


class ScaGauges(Protocol):
    """Engine state counted at scrape time (implemented by the composition root)."""

    def subscriptions_by_event(self) -> Mapping[str, int]:
        """Subscription count per event package (``call-info``, ``line-seize``)."""
        ...

    def appearances_by_state(self) -> Mapping[str, int]:
        """Non-idle appearance count per state name (rpc.md 3.2 state strings)."""
        ...


class ParkingGauges(Protocol):
    """The tsilo table counted at scrape time (push-and-parking.md 6.8, Kamailio tsilo names):
    a call stored under several R-URIs (an SCA line and its members, 6.11) is one transaction
    per R-URI, as ``ts.dump`` lists it."""

    def stored_ruris(self) -> int:
        """R-URIs with at least one parked call (tsilo ``stored_ruris``)."""
        ...

    def stored_transactions(self) -> int:
        """Parked (R-URI, call) pairs (tsilo ``stored_transactions``)."""
        ...

    def transactions_of(self, ruri: str) -> int:
        """Parked calls stored under ``ruri`` now."""
        ...


class _ParkingCollector:
    """A custom collector: reads ``ParkingGauges`` on every scrape."""

    def __init__(self, source: ParkingGauges) -> None:
        self._source = source

    def _families(self) -> tuple[GaugeMetricFamily, GaugeMetricFamily]:
        ruris = GaugeMetricFamily(
            f"{NAMESPACE}_tsilo_stored_ruris", "R-URIs in the parking table (tsilo stored_ruris)"
        )
        transactions = GaugeMetricFamily(
            f"{NAMESPACE}_tsilo_stored_transactions",
            "Parked transactions, one per R-URI a call is stored under (tsilo stored_transactions)",
        )
        return ruris, transactions

    def describe(self) -> Iterable[Metric]:
        return self._families()

    def collect(self) -> Iterable[Metric]:
        ruris, transactions = self._families()
        ruris.add_metric([], self._source.stored_ruris())
        transactions.add_metric([], self._source.stored_transactions())
        return ruris, transactions


class _EngineCollector:
    """A custom collector: reads ``ScaGauges`` on every scrape."""

    def __init__(self, source: ScaGauges) -> None:
        self._source = source

    def _families(self) -> tuple[GaugeMetricFamily, GaugeMetricFamily]:
        subscriptions = GaugeMetricFamily(
            f"{NAMESPACE}_sca_subscriptions", "SCA subscriptions by event package", labels=["event"]
        )
        appearances = GaugeMetricFamily(
            f"{NAMESPACE}_sca_appearances", "Non-idle SCA appearances by state", labels=["state"]
        )
        return subscriptions, appearances

    def describe(self) -> Iterable[Metric]:
        return self._families()

    def collect(self) -> Iterable[Metric]:
        subscriptions, appearances = self._families()
        for event, count in sorted(self._source.subscriptions_by_event().items()):
            subscriptions.add_metric([event], count)
        for state, count in sorted(self._source.appearances_by_state().items()):
            appearances.add_metric([state], count)
        return subscriptions, appearances


class Metrics:
    """The server's metrics, registered in ``registry``; ``sca`` adds the lazy engine gauges,
    ``parking`` the tsilo table's (push-and-parking.md 6.8)."""

    def __init__(
        self,
        registry: CollectorRegistry,
        *,
        sca: ScaGauges | None = None,
        parking: ParkingGauges | None = None,
    ) -> None:
        self.registry = registry
        if sca is not None:
            registry.register(_EngineCollector(sca))
        self._parking = parking
        if parking is not None:
            registry.register(_ParkingCollector(parking))
        self._tsilo = {
            name: Counter(
                f"tsilo_{name}", f"Call parking: tsilo {name}", namespace=NAMESPACE, registry=registry
            )
            for name in TSILO_TOTALS
        }
        self._notify = Counter(
            "notify",
            "NOTIFY requests by event and outcome",
            ["event", "outcome"],
            namespace=NAMESPACE,
            registry=registry,
        )
        self._notify_retransmissions = Counter(
            "notify_retransmissions",
            "NOTIFY retransmissions over UDP",
            ["event"],
            namespace=NAMESPACE,
            registry=registry,
        )
        self._transactions = Counter(
            "transactions",
            "Completed SIP transactions by kind and outcome",
            ["kind", "outcome"],
            namespace=NAMESPACE,
            registry=registry,
        )
        self._registrations = Counter(
            "registrations", "REGISTER outcomes", ["outcome"], namespace=NAMESPACE, registry=registry
        )
        self._parse_errors = Counter(
            "parse_errors",
            "Unparsable SIP messages by transport",
            ["transport"],
            namespace=NAMESPACE,
            registry=registry,
        )
        self._dropped = Counter(
            "dropped_messages",
            "SIP messages dropped without an answer, by reason",
            ["reason"],
            namespace=NAMESPACE,
            registry=registry,
        )
        self._flush_latency = Histogram(
            "db_flush_seconds",
            "Write-behind flush latency by store",
            ["store"],
            namespace=NAMESPACE,
            registry=registry,
            buckets=FLUSH_BUCKETS,
        )
        self._flush_records = Counter(
            "db_flushed_records",
            "Records written by write-behind flushes, by store",
            ["store"],
            namespace=NAMESPACE,
            registry=registry,
        )
        self._dead_letters = Counter(
            "writebehind_dead_letters",
            "Writes the database refused for their content (dead letters, not retried), by table",
            ["table"],
            namespace=NAMESPACE,
            registry=registry,
        )
        self._push = {
            outcome: Counter(
                f"push_{outcome}",
                f"Push attempts {outcome.replace('_', '-')} (push-and-parking.md 5.3)",
                namespace=NAMESPACE,
                registry=registry,
            )
            for outcome in PUSH_OUTCOMES
        }
        self._push_inflight = Gauge(
            "push_inflight", "Push gateway requests in flight", namespace=NAMESPACE, registry=registry
        )
        self._gateway_latency = Histogram(
            "push_gateway_latency_ms",
            "Push gateway request latency, milliseconds",
            namespace=NAMESPACE,
            registry=registry,
            buckets=GATEWAY_BUCKETS_MS,
        )
        self._wake_latency = Histogram(
            "push_wake_latency_ms",
            "Push accepted to binding confirmed, milliseconds",
            namespace=NAMESPACE,
            registry=registry,
            buckets=WAKE_BUCKETS_MS,
        )
        self._park = {
            name: Counter(name, f"Call parking: {name}", namespace=NAMESPACE, registry=registry)
            for name in PARK_EVENTS
        }
        self._parked_current = Gauge(
            "parked_current", "Calls parked now", namespace=NAMESPACE, registry=registry
        )
        self._queue_depth = Gauge(
            "db_queue_depth",
            "Pending write-behind records, by store",
            ["store"],
            namespace=NAMESPACE,
            registry=registry,
        )

    def notify_sent(self, event: str) -> None:
        """A NOTIFY got a 2xx."""
        self._notify.labels(event=event, outcome="sent").inc()

    def notify_failed(self, event: str) -> None:
        """A NOTIFY got a final non-2xx, timed out or could not be sent."""
        self._notify.labels(event=event, outcome="failed").inc()

    def notify_retransmitted(self, event: str) -> None:
        self._notify_retransmissions.labels(event=event).inc()

    def transaction_completed(self, kind: str, outcome: str) -> None:
        """``kind``: ``invite-server``, ``non-invite-client``...; ``outcome``: ``2xx``...``6xx``,
        ``timeout`` or ``transport-error``."""
        self._transactions.labels(kind=kind, outcome=outcome).inc()

    def registration(self, outcome: str) -> None:
        """``outcome``: ``added``, ``refreshed``, ``removed``, ``expired`` or ``rejected``."""
        self._registrations.labels(outcome=outcome).inc()

    def parse_error(self, transport: str) -> None:
        self._parse_errors.labels(transport=transport).inc()

    def message_dropped(self, reason: str) -> None:
        self._dropped.labels(reason=reason).inc()

    def db_flushed(self, store: str, duration_s: float, records: int) -> None:
        """A write-behind flush of ``store`` wrote ``records`` in ``duration_s``."""
        self._flush_latency.labels(store=store).observe(duration_s)
        self._flush_records.labels(store=store).inc(records)

    def db_dead_letters(self, table: str, count: int) -> None:
        """``count`` more writes to ``table`` were dead-lettered (``edge/writebehind.py``)."""
        self._dead_letters.labels(table=table).inc(count)

    def db_queue_depth(self, store: str, depth: int) -> None:
        self._queue_depth.labels(store=store).set(depth)

    def push(self, outcome: str) -> None:
        """A push attempt ended or was retried; ``outcome`` is one of :data:`PUSH_OUTCOMES`."""
        self._push[outcome].inc()

    def push_gateway(self, inflight: int, latency_ms: int | None) -> None:
        """A gateway request started (``latency_ms`` None) or ended (5.3)."""
        self._push_inflight.set(inflight)
        if latency_ms is not None:
            self._gateway_latency.observe(latency_ms)

    def push_woke(self, latency_ms: int | None) -> None:
        """A pushed device's binding was confirmed (None: before the gateway answered)."""
        if latency_ms is not None:
            self._wake_latency.observe(latency_ms)

    def park(self, name: str) -> None:
        """One of :data:`PARK_EVENTS`; ``parked`` raises ``parked_current``."""
        self._park[name].inc()
        if name == "parked":
            self._parked_current.inc()

    def park_ended(self) -> None:
        """A parked call left the table (whatever its ending)."""
        self._parked_current.dec()

    def park_stored(self, ruris: Sequence[str]) -> None:
        """A call was parked under ``ruris``: tsilo ``total_transactions`` counts each, and
        ``total_ruris`` those that had no parked call before (read from the parking gauges,
        which already hold this call)."""
        self._tsilo["total_transactions"].inc(len(ruris))
        if self._parking is not None:
            fresh = sum(1 for ruri in ruris if self._parking.transactions_of(ruri) <= 1)
            self._tsilo["total_ruris"].inc(fresh)
