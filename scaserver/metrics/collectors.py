"""Gauges read from the server's state at scrape time (``GET /metrics``): the seams the root
implements over the engines and the edge (``ScaGauges``, ``RegistrarGauges``, ``ParkingGauges``,
``SecurityGauges``, ``NatGauges``, ``TlsGauges``, ``DnsGauges``) and the custom collectors that
read them on every scrape, so nothing is copied on the SIP path.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Protocol

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric

from scaserver.metrics import NAMESPACE


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


class NatCollector:
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


class SecurityCollector:
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


class TlsCollector:
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


class DnsCollector:
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


class ParkingCollector:
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


class RegistrarCollector:
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


class EngineCollector:
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
