"""Prometheus metrics of the server (``GET /metrics``, rpc.md / STYLE.md section 2).

Two kinds:

* gauges of engine state read lazily at scrape time through the ``ScaGauges`` seam
  (subscriptions by event, appearances by state): nothing is copied on the SIP path;
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

from collections.abc import Iterable, Mapping, Sequence
from typing import Protocol

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric

NAMESPACE = "scaserver"

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


class ScaGauges(Protocol):
    """Engine state counted at scrape time (implemented by the composition root)."""

    def subscriptions_by_event(self) -> Mapping[str, int]:
        """Subscription count per event package (``call-info``, ``line-seize``)."""
        ...

    def appearances_by_state(self) -> Mapping[str, int]:
        """Non-idle appearance count per state name (rpc.md 3.2 state strings)."""
        ...


class RegistrarGauges(Protocol):
    """The location service counted at scrape time."""

    def registered_contacts(self) -> int:
        """Contacts (bindings) registered now, over every AoR."""
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


class SecurityGauges(Protocol):
    """The containment counters read at scrape time (the source guard and the TCP listener)."""

    def dropped_messages(self) -> int:
        """Messages dropped because their source is banned or over its rate."""
        ...

    def bans_active(self) -> int: ...

    def bans_by_reason(self) -> Mapping[str, int]:
        """Bans started since start-up, by reason (``rate``, ``auth-failures``, ``manual``)."""
        ...

    def tcp_refused(self) -> Mapping[str, int]:
        """TCP connections closed at once, by reason (``banned``, ``per-address``, ``global``)."""
        ...

    def tracked_sources(self) -> int: ...


class NatGauges(Protocol):
    """The NAT keep-alive figures read at scrape time (the edge's keep-alive counts, the pinger)."""

    pings_sent: int
    pings_failed: int

    def keepalives_received(self) -> Mapping[str, int]:
        """Keep-alives received by kind (``crlf``, ``stun``, ``double-crlf``)."""
        ...

    @property
    def flow_failures(self) -> Mapping[str, int]:
        """Flows found dead, by cause (``ping-timeout``, ``connection-closed``)."""
        ...

    def nat_bindings(self) -> Mapping[str, int]:
        """Bindings behind NAT now, by transport."""
        ...


class _NatCollector:
    """A custom collector: reads ``NatGauges`` on every scrape."""

    def __init__(self, source: NatGauges) -> None:
        self._source = source

    def _families(
        self,
    ) -> tuple[
        CounterMetricFamily, CounterMetricFamily, CounterMetricFamily, CounterMetricFamily, GaugeMetricFamily
    ]:
        return (
            CounterMetricFamily(
                f"{NAMESPACE}_keepalives_received",
                "Keep-alives received (RFC 5626), by kind",
                labels=["kind"],
            ),
            CounterMetricFamily(f"{NAMESPACE}_nat_pings_sent", "NAT keep-alive pings sent"),
            CounterMetricFamily(f"{NAMESPACE}_nat_pings_failed", "NAT ping OPTIONS left unanswered"),
            CounterMetricFamily(f"{NAMESPACE}_flow_failures", "Flows found dead, by cause", labels=["cause"]),
            GaugeMetricFamily(
                f"{NAMESPACE}_nat_bindings", "Bindings behind NAT, by transport", labels=["transport"]
            ),
        )

    def describe(self) -> Iterable[Metric]:
        return self._families()

    def collect(self) -> Iterable[Metric]:
        received, sent, failed, failures, bindings = self._families()
        source = self._source
        for kind, count in sorted(source.keepalives_received().items()):
            received.add_metric([kind], count)
        sent.add_metric([], source.pings_sent)
        failed.add_metric([], source.pings_failed)
        for cause, count in sorted(source.flow_failures.items()):
            failures.add_metric([cause], count)
        for transport, count in sorted(source.nat_bindings().items()):
            bindings.add_metric([transport], count)
        return received, sent, failed, failures, bindings


class _SecurityCollector:
    """A custom collector: reads ``SecurityGauges`` on every scrape."""

    def __init__(self, source: SecurityGauges) -> None:
        self._source = source

    def _families(
        self,
    ) -> tuple[
        CounterMetricFamily, GaugeMetricFamily, CounterMetricFamily, CounterMetricFamily, GaugeMetricFamily
    ]:
        return (
            CounterMetricFamily(
                f"{NAMESPACE}_security_dropped_messages",
                "Messages dropped unread because their source was banned or over its rate",
            ),
            GaugeMetricFamily(f"{NAMESPACE}_security_bans_active", "Source addresses banned now"),
            CounterMetricFamily(f"{NAMESPACE}_security_bans", "Bans started, by reason", labels=["reason"]),
            CounterMetricFamily(
                f"{NAMESPACE}_security_tcp_refused_connections",
                "TCP connections closed as soon as accepted, by reason",
                labels=["reason"],
            ),
            GaugeMetricFamily(f"{NAMESPACE}_security_tracked_sources", "Source addresses rate-tracked now"),
        )

    def describe(self) -> Iterable[Metric]:
        return self._families()

    def collect(self) -> Iterable[Metric]:
        dropped, active, bans, refused, tracked = self._families()
        source = self._source
        dropped.add_metric([], source.dropped_messages())
        active.add_metric([], source.bans_active())
        for reason, count in sorted(source.bans_by_reason().items()):
            bans.add_metric([reason], count)
        for reason, count in sorted(source.tcp_refused().items()):
            refused.add_metric([reason], count)
        tracked.add_metric([], source.tracked_sources())
        return dropped, active, bans, refused, tracked


class TlsGauges(Protocol):
    """The TLS edge's counters and the open stream connections, read at scrape time."""

    def tls_handshakes(self) -> int:
        """TLS handshakes completed (inbound and outbound)."""
        ...

    def tls_handshake_failures(self) -> Mapping[str, int]:
        """TLS handshakes failed, by reason (``timeout``, ``protocol``, ``certificate``, ``name``,
        ``closed``)."""
        ...

    def open_connections(self) -> Mapping[str, int]:
        """Open SIP stream connections by transport (``tcp``, ``tls``)."""
        ...


class _TlsCollector:
    """A custom collector: reads ``TlsGauges`` on every scrape."""

    def __init__(self, source: TlsGauges) -> None:
        self._source = source

    def _families(self) -> tuple[CounterMetricFamily, CounterMetricFamily, GaugeMetricFamily]:
        return (
            CounterMetricFamily(f"{NAMESPACE}_tls_handshakes", "TLS handshakes completed"),
            CounterMetricFamily(
                f"{NAMESPACE}_tls_handshake_failures", "TLS handshakes failed, by reason", labels=["reason"]
            ),
            GaugeMetricFamily(
                f"{NAMESPACE}_sip_connections",
                "Open SIP stream connections, by transport",
                labels=["transport"],
            ),
        )

    def describe(self) -> Iterable[Metric]:
        return self._families()

    def collect(self) -> Iterable[Metric]:
        completed, failures, connections = self._families()
        completed.add_metric([], self._source.tls_handshakes())
        for reason, count in sorted(self._source.tls_handshake_failures().items()):
            failures.add_metric([reason], count)
        for transport, count in sorted(self._source.open_connections().items()):
            connections.add_metric([transport], count)
        return completed, failures, connections


class DnsGauges(Protocol):
    """What the DNS collector reads at scrape time (``scaserver.edge.dns.ServerLocator``)."""

    @property
    def statistics(self) -> DnsCounts: ...

    def targets_held(self) -> int: ...


class DnsCounts(Protocol):
    @property
    def lookups(self) -> Mapping[tuple[str, str], int]: ...

    @property
    def cache_hits(self) -> int: ...

    @property
    def failovers(self) -> int: ...

    @property
    def latency_sum(self) -> float: ...

    def latency_buckets(self) -> list[tuple[str, int]]: ...


class _DnsCollector:
    """RFC 3263 look-ups: by record type and outcome, latency, cache hits, failovers."""

    def __init__(self, source: DnsGauges) -> None:
        self._source = source

    def _families(self) -> tuple[Metric, ...]:
        return (
            CounterMetricFamily(
                f"{NAMESPACE}_dns_lookups",
                "DNS queries by record type and outcome (answer, nxdomain, timeout, error)",
                labels=["type", "outcome"],
            ),
            HistogramMetricFamily(
                f"{NAMESPACE}_dns_locate_latency_seconds",
                "Time to locate a SIP server by DNS (RFC 3263)",
            ),
            CounterMetricFamily(
                f"{NAMESPACE}_dns_cache_hits", "Record sets and targets served from the cache"
            ),
            CounterMetricFamily(
                f"{NAMESPACE}_dns_failovers", "Requests retried at the next target (RFC 3263 4.3)"
            ),
            GaugeMetricFamily(f"{NAMESPACE}_dns_targets_held", "Failed targets avoided now"),
        )

    def describe(self) -> Iterable[Metric]:
        return self._families()

    def collect(self) -> Iterable[Metric]:
        families = self._families()
        lookups, latency, hits, failovers, held = families
        assert isinstance(lookups, CounterMetricFamily) and isinstance(latency, HistogramMetricFamily)
        assert isinstance(hits, CounterMetricFamily) and isinstance(failovers, CounterMetricFamily)
        assert isinstance(held, GaugeMetricFamily)
        statistics = self._source.statistics
        for (kind, outcome), count in sorted(statistics.lookups.items()):
            lookups.add_metric([kind, outcome], count)
        latency.add_metric([], statistics.latency_buckets(), statistics.latency_sum)
        hits.add_metric([], statistics.cache_hits)
        failovers.add_metric([], statistics.failovers)
        held.add_metric([], self._source.targets_held())
        return families


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


class _RegistrarCollector:
    """A custom collector: reads ``RegistrarGauges`` on every scrape."""

    def __init__(self, source: RegistrarGauges) -> None:
        self._source = source

    def _family(self) -> GaugeMetricFamily:
        return GaugeMetricFamily(f"{NAMESPACE}_registered_contacts", "Contacts registered now")

    def describe(self) -> Iterable[Metric]:
        return (self._family(),)

    def collect(self) -> Iterable[Metric]:
        contacts = self._family()
        contacts.add_metric([], self._source.registered_contacts())
        return (contacts,)


class _EngineCollector:
    """A custom collector: reads ``ScaGauges`` on every scrape."""

    def __init__(self, source: ScaGauges) -> None:
        self._source = source

    def _families(self) -> tuple[GaugeMetricFamily, GaugeMetricFamily]:
        subscriptions = GaugeMetricFamily(
            f"{NAMESPACE}_sca_subscriptions", "Live SCA subscriptions by event package", labels=["event"]
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
            registry.register(_SecurityCollector(security))
        if nat is not None:
            registry.register(_NatCollector(nat))
        if tls is not None:
            registry.register(_TlsCollector(tls))
        self._auth_failures = Counter(
            "security_auth_failures",
            "Refused authentications by reason (a first challenge is not counted)",
            ["reason"],
            namespace=NAMESPACE,
            registry=registry,
        )
        if sca is not None:
            registry.register(_EngineCollector(sca))
        if registrar is not None:
            registry.register(_RegistrarCollector(registrar))
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
        self._transaction_children: dict[tuple[str, str], Counter] = {}
        self._reactor_lag = Histogram(
            "reactor_lag_seconds",
            "How late the reactor ran a timer due now: the time it was busy with other work",
            namespace=NAMESPACE,
            registry=registry,
            buckets=LAG_BUCKETS,
        )

        self._precreate()

    def _precreate(self) -> None:
        """Every known label combination of the labelled counters, at zero."""
        for event in EVENTS:
            self._notify_retransmissions.labels(event=event)
            for outcome in NOTIFY_OUTCOMES:
                self._notify.labels(event=event, outcome=outcome)
        for kind in TRANSACTION_KINDS:
            for outcome in TRANSACTION_OUTCOMES:
                self._transactions.labels(kind=kind, outcome=outcome)
        for outcome in REGISTRATION_OUTCOMES:
            self._registrations.labels(outcome=outcome)
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
        self.registry.register(_DnsCollector(source))

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
        # Once per transaction: the labelled child is looked up once per label pair (labels()
        # validates and locks on every call).
        child = self._transaction_children.get((kind, outcome))
        if child is None:
            child = self._transaction_children[kind, outcome] = self._transactions.labels(
                kind=kind, outcome=outcome
            )
        child.inc()

    def reactor_lag(self, seconds: float) -> None:
        """One reading of the loop-lag probe (:mod:`scaserver.edge.looplag`)."""
        self._reactor_lag.observe(seconds)

    def registration(self, outcome: str) -> None:
        """``outcome``: ``added``, ``refreshed``, ``removed``, ``expired`` or ``rejected``."""
        self._registrations.labels(outcome=outcome).inc()

    def parse_error(self, transport: str) -> None:
        self._parse_errors.labels(transport=transport).inc()

    def auth_failure(self, reason: str) -> None:
        self._auth_failures.labels(reason).inc()

    def request_refused(self, status: int, reason: str) -> None:
        """An error response of ours: ``reason`` is the refusing rule's label (bounded)."""
        self._refused.labels(status=str(status), reason=reason).inc()

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
