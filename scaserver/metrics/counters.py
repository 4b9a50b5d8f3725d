"""Prometheus metrics of the server (``GET /metrics``, rpc.md / STYLE.md section 2).

Two kinds:

* gauges of engine state read lazily at scrape time through the seams of
  ``metrics.collectors`` (subscriptions by event, appearances by state, ...): nothing is
  copied on the SIP path; ``Metrics`` registers their collectors;
* counters and histograms the core and edge bump through the typed methods of ``Metrics``
  (NOTIFYs, transactions, registrations, parse errors, drops, database flushes).

Everything is registered in the ``CollectorRegistry`` passed in, never the global one, so tests
and several servers in one process do not share state; the process and platform collectors
(``process_*``, ``python_info``) are added to it too.

Names follow the Prometheus conventions and pass ``promtool check metrics``: base units
(``_seconds``), ``_total`` once (added by the client to counters), no ``_created`` series, and
every labelled counter present at zero for each label value it is known to take.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
)
from prometheus_client.core import CounterMetricFamily, Metric

from scaserver.metrics import NAMESPACE
from scaserver.metrics.collectors import (
    DnsCollector,
    DnsGauges,
    EngineCollector,
    NatCollector,
    NatGauges,
    ParkingCollector,
    ParkingGauges,
    RegistrarCollector,
    RegistrarGauges,
    ScaGauges,
    SecurityCollector,
    SecurityGauges,
    TlsCollector,
    TlsGauges,
)

#: Buckets for database flush latency, seconds.
FLUSH_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

#: Buckets of ``push_wake_latency_seconds`` (push-and-parking.md 5.3: 250 ms ... 13 s).
WAKE_BUCKETS = (0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 8.0, 13.0)

#: Buckets of ``push_gateway_latency_seconds`` (one HTTP attempt, ``push.request_timeout`` 2 s).
GATEWAY_BUCKETS = (0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0)

#: Buckets of ``reactor_lag_seconds`` (how late the loop-lag probe's timer fired); 0.05 is the
#: longest stall the server is meant to have.
LAG_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)

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


#: tsilo-compatible parking totals (push-and-parking.md 6.8): tsilo's ``total_<name>`` is
#: exported as ``scaserver_tsilo_<name>_total`` (``stats.get_statistics`` keeps tsilo's name).
TSILO_TOTALS = ("ruris", "transactions")

#: The label values each labelled counter is created with (at zero), so that a rate over a
#: series that has not moved yet is 0 rather than absent.
EVENTS = ("call-info", "line-seize")
NOTIFY_OUTCOMES = ("sent", "failed")
TRANSACTION_KINDS = ("invite-server", "non-invite-server", "invite-client", "non-invite-client")
TRANSACTION_OUTCOMES = ("2xx", "3xx", "4xx", "5xx", "6xx", "timeout", "transport-error")
REGISTRATION_OUTCOMES = ("added", "refreshed", "removed", "expired", "rejected")
TRANSPORTS = ("udp", "tcp", "tls")
DROP_REASONS = ("unparsable", "unanswerable", "bad-response", "broadcast", "relay-refused")
AUTH_FAILURE_REASONS = (
    "unknown-user",
    "wrong-password",
    "stale",
    "replay",
    "malformed",
    "forbidden",
    "banned",
)
STORES = ("sql",)


class LabelledCounts:
    """A labelled counter kept in plain ints and exported at scrape time (a custom collector),
    for the counters bumped several times per SIP transaction: counting is one dict update,
    where a ``prometheus_client`` child's ``inc`` takes a lock (0.53 against 0.13 us).  The
    family exported is the one a ``Counter`` of the same name, help and labels exports: the
    same ``_total`` samples, in the order their label values were first counted."""

    def __init__(
        self, name: str, documentation: str, labelnames: Sequence[str], registry: CollectorRegistry
    ) -> None:
        self.name = f"{NAMESPACE}_{name}"
        self.documentation = documentation
        self.labelnames = tuple(labelnames)
        self.counts: dict[tuple[str, ...], int] = {}
        registry.register(self)

    def precreate(self, *labels: str) -> None:
        """The series of these label values exists, at zero until counted."""
        self.counts.setdefault(labels, 0)

    def collect(self) -> Iterable[Metric]:
        family = CounterMetricFamily(self.name, self.documentation, labels=self.labelnames)
        for labels, value in list(self.counts.items()):
            family.add_metric(labels, value)
        yield family


class Metrics:
    """The server's metrics, registered in ``registry``; ``sca`` adds the lazy engine gauges,
    ``registrar`` the registered contacts, ``parking`` the tsilo table's (push-and-parking.md
    6.8), ``process`` the process and platform collectors (the server's registry has them;
    tests building several ``Metrics`` need not)."""

    def __init__(
        self,
        registry: CollectorRegistry,
        *,
        sca: ScaGauges | None = None,
        registrar: RegistrarGauges | None = None,
        parking: ParkingGauges | None = None,
        process: bool = False,
        security: SecurityGauges | None = None,
        nat: NatGauges | None = None,
        tls: TlsGauges | None = None,
    ) -> None:
        # The client's switch is process-wide: ``_created`` series are not exported (they
        # are not in the conventions' text format and double every counter).
        disable_created_metrics()  # type: ignore[no-untyped-call]
        self.registry = registry
        if process:
            ProcessCollector(registry=registry)
            PlatformCollector(registry=registry)
        if security is not None:
            registry.register(SecurityCollector(security))
        if nat is not None:
            registry.register(NatCollector(nat))
        if tls is not None:
            registry.register(TlsCollector(tls))
        self._auth_failures = Counter(
            "security_auth_failures",
            "Refused authentications by reason (a first challenge is not counted)",
            ["reason"],
            namespace=NAMESPACE,
            registry=registry,
        )
        if sca is not None:
            registry.register(EngineCollector(sca))
        if registrar is not None:
            registry.register(RegistrarCollector(registrar))
        self._parking = parking
        if parking is not None:
            registry.register(ParkingCollector(parking))
        self._tsilo = {
            name: Counter(
                f"tsilo_{name}", f"Call parking: tsilo {name}", namespace=NAMESPACE, registry=registry
            )
            for name in TSILO_TOTALS
        }
        self._notify = LabelledCounts(
            "notify", "NOTIFY requests by event and outcome", ["event", "outcome"], registry
        )
        self._notify_retransmissions = Counter(
            "notify_retransmissions",
            "NOTIFY retransmissions over UDP",
            ["event"],
            namespace=NAMESPACE,
            registry=registry,
        )
        self._transactions = LabelledCounts(
            "transactions", "Completed SIP transactions by kind and outcome", ["kind", "outcome"], registry
        )
        self._registrations = LabelledCounts("registrations", "REGISTER outcomes", ["outcome"], registry)
        self._parse_errors = Counter(
            "parse_errors",
            "Unparsable SIP messages by transport",
            ["transport"],
            namespace=NAMESPACE,
            registry=registry,
        )
        self._refused = Counter(
            "sip_responses_refused",
            "SIP error responses scaserver sent, by status and reason (the rule that refused)",
            ["status", "reason"],
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
            "push_gateway_latency_seconds",
            "Push gateway request latency",
            namespace=NAMESPACE,
            registry=registry,
            buckets=GATEWAY_BUCKETS,
        )
        self._wake_latency = Histogram(
            "push_wake_latency_seconds",
            "Push accepted to binding confirmed",
            namespace=NAMESPACE,
            registry=registry,
            buckets=WAKE_BUCKETS,
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
        self._reactor_lag = Histogram(
            "reactor_lag_seconds",
            "How late the reactor ran a timer due now: the time it was busy with other work",
            namespace=NAMESPACE,
            registry=registry,
            buckets=LAG_BUCKETS,
        )
        self._gc_pauses = Histogram(
            "gc_pause_seconds",
            "How long one collection of the cyclic garbage collector stopped the process, by generation",
            ["generation"],
            namespace=NAMESPACE,
            registry=registry,
            buckets=LAG_BUCKETS,
        )
        self._gc_pause_children = [self._gc_pauses.labels(generation=str(g)) for g in range(3)]
        # The refusal counter's child per (status, reason), found once (every 401 challenge).
        self._refused_children: dict[tuple[int, str], Counter] = {}

        self._precreate()

    def _precreate(self) -> None:
        """Every known label combination of the labelled counters, at zero."""
        for event in EVENTS:
            self._notify_retransmissions.labels(event=event)
            for outcome in NOTIFY_OUTCOMES:
                self._notify.precreate(event, outcome)
        for kind in TRANSACTION_KINDS:
            for outcome in TRANSACTION_OUTCOMES:
                self._transactions.precreate(kind, outcome)
        for outcome in REGISTRATION_OUTCOMES:
            self._registrations.precreate(outcome)
        for transport in TRANSPORTS:
            self._parse_errors.labels(transport=transport)
        for reason in DROP_REASONS:
            self._dropped.labels(reason=reason)
        for reason in AUTH_FAILURE_REASONS:
            self._auth_failures.labels(reason)
        for store in STORES:
            self._flush_latency.labels(store=store)
            self._flush_records.labels(store=store)
            self._queue_depth.labels(store=store)

    def watch_dns(self, source: DnsGauges) -> None:
        """Export the DNS locator's counters (read at scrape time)."""
        self.registry.register(DnsCollector(source))

    @property
    def notify_counts(self) -> dict[tuple[str, ...], int]:
        """The NOTIFY counts by (event package, ``sent``/``failed``), which a per-fact counter
        on the bus increments itself (one call per fact instead of two)."""
        return self._notify.counts

    @property
    def transaction_counts(self) -> dict[tuple[str, ...], int]:
        """The completed-transaction counts by (kind, outcome), as :attr:`notify_counts`."""
        return self._transactions.counts

    @property
    def registration_counts(self) -> dict[tuple[str, ...], int]:
        """The REGISTER outcome counts by (outcome,), as :attr:`notify_counts`."""
        return self._registrations.counts

    def notify_sent(self, event: str) -> None:
        """A NOTIFY got a 2xx."""
        counts, labels = self._notify.counts, (event, "sent")
        counts[labels] = counts.get(labels, 0) + 1

    def notify_failed(self, event: str) -> None:
        """A NOTIFY got a final non-2xx, timed out or could not be sent."""
        counts, labels = self._notify.counts, (event, "failed")
        counts[labels] = counts.get(labels, 0) + 1

    def notify_retransmitted(self, event: str) -> None:
        self._notify_retransmissions.labels(event=event).inc()

    def transaction_completed(self, kind: str, outcome: str) -> None:
        """``kind``: ``invite-server``, ``non-invite-client``...; ``outcome``: ``2xx``...``6xx``,
        ``timeout`` or ``transport-error``."""
        counts, labels = self._transactions.counts, (kind, outcome)
        counts[labels] = counts.get(labels, 0) + 1

    def reactor_lag(self, seconds: float) -> None:
        """One reading of the loop-lag probe (:mod:`scaserver.edge.looplag`)."""
        self._reactor_lag.observe(seconds)

    def gc_pause(self, generation: int, seconds: float) -> None:
        """One collection of the cyclic garbage collector (:mod:`scaserver.edge.collector`)."""
        self._gc_pause_children[generation].observe(seconds)

    def registration(self, outcome: str) -> None:
        """``outcome``: ``added``, ``refreshed``, ``removed``, ``expired`` or ``rejected``."""
        counts, labels = self._registrations.counts, (outcome,)
        counts[labels] = counts.get(labels, 0) + 1

    def parse_error(self, transport: str) -> None:
        self._parse_errors.labels(transport=transport).inc()

    def auth_failure(self, reason: str) -> None:
        self._auth_failures.labels(reason).inc()

    def request_refused(self, status: int, reason: str) -> None:
        """An error response of ours: ``reason`` is the refusing rule's label (bounded)."""
        child = self._refused_children.get((status, reason))
        if child is None:
            child = self._refused_children[status, reason] = self._refused.labels(
                status=str(status), reason=reason
            )
        child.inc()

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
            self._gateway_latency.observe(latency_ms / 1000)

    def push_woke(self, latency_ms: int | None) -> None:
        """A pushed device's binding was confirmed (None: before the gateway answered)."""
        if latency_ms is not None:
            self._wake_latency.observe(latency_ms / 1000)

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
        self._tsilo["transactions"].inc(len(ruris))
        if self._parking is not None:
            fresh = sum(1 for ruri in ruris if self._parking.transactions_of(ruri) <= 1)
            self._tsilo["ruris"].inc(fresh)
