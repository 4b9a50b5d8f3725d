"""scaserver.metrics: lazy engine gauges (collectors) and the counters the core bumps (counters)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import ParamSpec, TypeVar

import attrs
from prometheus_client import CollectorRegistry, Counter, generate_latest
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.task import Clock

from scaserver.edge.metricsfeed import MetricsFeed
from scaserver.edge.writebehind import WriteBehind
from scaserver.metrics.counters import LabelledCounts, Metrics

P = ParamSpec("P")
T = TypeVar("T")


@attrs.define
class Counts:
    subscriptions: dict[str, int] = attrs.Factory(lambda: {"call-info": 3})
    appearances: dict[str, int] = attrs.Factory(dict)
    reads: int = 0

    def subscriptions_by_event(self) -> dict[str, int]:
        self.reads += 1
        return self.subscriptions

    def appearances_by_state(self) -> dict[str, int]:
        return self.appearances


def sample(registry: CollectorRegistry, name: str, labels: dict[str, str] | None = None) -> float | None:
    value: float | None = registry.get_sample_value(name, labels or {})
    return value


def test_engine_gauges_are_read_at_scrape_time() -> None:
    counts = Counts()
    registry = CollectorRegistry()
    Metrics(registry, sca=counts)
    reads_after_registration = counts.reads
    assert sample(registry, "scaserver_sca_subscriptions", {"event": "call-info"}) == 3
    counts.subscriptions["line-seize"] = 1
    counts.appearances["held"] = 2
    text = generate_latest(registry).decode()
    assert 'scaserver_sca_subscriptions{event="line-seize"} 1.0' in text
    assert 'scaserver_sca_appearances{state="held"} 2.0' in text
    assert counts.reads > reads_after_registration


def test_without_engine_no_gauges() -> None:
    registry = CollectorRegistry()
    Metrics(registry)
    assert "scaserver_sca_subscriptions" not in generate_latest(registry).decode()


def test_counters() -> None:
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    metrics.notify_sent("call-info")
    metrics.notify_sent("call-info")
    metrics.notify_failed("line-seize")
    metrics.notify_retransmitted("call-info")
    metrics.transaction_completed("non-invite-client", "timeout")
    metrics.registration("added")
    metrics.parse_error("udp")
    metrics.message_dropped("no-via")
    metrics.db_flushed("subscriptions", 0.02, 5)
    metrics.db_queue_depth("subscriptions", 7)
    assert sample(registry, "scaserver_notify_total", {"event": "call-info", "outcome": "sent"}) == 2
    assert sample(registry, "scaserver_notify_total", {"event": "line-seize", "outcome": "failed"}) == 1
    assert sample(registry, "scaserver_notify_retransmissions_total", {"event": "call-info"}) == 1
    assert (
        sample(registry, "scaserver_transactions_total", {"kind": "non-invite-client", "outcome": "timeout"})
        == 1
    )
    assert sample(registry, "scaserver_registrations_total", {"outcome": "added"}) == 1
    assert sample(registry, "scaserver_parse_errors_total", {"transport": "udp"}) == 1
    assert sample(registry, "scaserver_dropped_messages_total", {"reason": "no-via"}) == 1
    assert sample(registry, "scaserver_db_flush_seconds_count", {"store": "subscriptions"}) == 1
    assert (
        sample(registry, "scaserver_db_flush_seconds_bucket", {"store": "subscriptions", "le": "0.025"}) == 1
    )
    assert sample(registry, "scaserver_db_flushed_records_total", {"store": "subscriptions"}) == 5
    assert sample(registry, "scaserver_db_queue_depth", {"store": "subscriptions"}) == 7


def test_counters_per_message_count_each_label_value_apart() -> None:
    # notify_sent and registration keep their labelled children: each value is its own series,
    # and the outcome of a NOTIFY stays apart from the failures of the same event.
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    for event in ("call-info", "line-seize", "call-info", "dialog"):
        metrics.notify_sent(event)
    metrics.notify_failed("call-info")
    for outcome in ("added", "refreshed", "added", "rejected", "added"):
        metrics.registration(outcome)
    assert sample(registry, "scaserver_notify_total", {"event": "call-info", "outcome": "sent"}) == 2
    assert sample(registry, "scaserver_notify_total", {"event": "line-seize", "outcome": "sent"}) == 1
    assert sample(registry, "scaserver_notify_total", {"event": "dialog", "outcome": "sent"}) == 1
    assert sample(registry, "scaserver_notify_total", {"event": "call-info", "outcome": "failed"}) == 1
    assert sample(registry, "scaserver_registrations_total", {"outcome": "added"}) == 3
    assert sample(registry, "scaserver_registrations_total", {"outcome": "refreshed"}) == 1
    assert sample(registry, "scaserver_registrations_total", {"outcome": "rejected"}) == 1
    assert sample(registry, "scaserver_registrations_total", {"outcome": "expired"}) == 0


def test_refusals_count_each_status_and_reason_apart() -> None:
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    for status, reason in ((401, "digest-challenge"), (403, "digest-identity"), (401, "digest-challenge")):
        metrics.request_refused(status, reason)
    metrics.request_refused(401, "digest-stale")
    name = "scaserver_sip_responses_refused_total"
    assert sample(registry, name, {"status": "401", "reason": "digest-challenge"}) == 2
    assert sample(registry, name, {"status": "403", "reason": "digest-identity"}) == 1
    assert sample(registry, name, {"status": "401", "reason": "digest-stale"}) == 1


def test_two_servers_do_not_share_state() -> None:
    first, second = CollectorRegistry(), CollectorRegistry()
    Metrics(first).parse_error("tcp")
    Metrics(second)
    assert sample(first, "scaserver_parse_errors_total", {"transport": "tcp"}) == 1
    assert sample(second, "scaserver_parse_errors_total", {"transport": "tcp"}) == 0


def test_labelled_counters_exist_at_zero_for_their_known_values() -> None:
    registry = CollectorRegistry()
    Metrics(registry)
    assert sample(registry, "scaserver_notify_total", {"event": "line-seize", "outcome": "failed"}) == 0
    assert sample(registry, "scaserver_notify_retransmissions_total", {"event": "line-seize"}) == 0
    failed = {"kind": "invite-client", "outcome": "transport-error"}
    assert sample(registry, "scaserver_transactions_total", failed) == 0
    assert sample(registry, "scaserver_registrations_total", {"outcome": "expired"}) == 0
    assert sample(registry, "scaserver_dropped_messages_total", {"reason": "broadcast"}) == 0
    assert sample(registry, "scaserver_db_flushed_records_total", {"store": "sql"}) == 0


def test_no_created_series_and_no_unit_abbreviations() -> None:
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    metrics.push_gateway(0, 40)
    metrics.push_woke(2500)
    metrics.park_stored(["sip:200@example.com"])
    text = generate_latest(registry).decode()
    assert "_created" not in text
    assert "_ms" not in text
    assert "_total_total" not in text and "tsilo_total_" not in text
    assert sample(registry, "scaserver_push_gateway_latency_seconds_sum") == 0.04
    assert sample(registry, "scaserver_push_wake_latency_seconds_bucket", {"le": "2.0"}) == 0
    assert sample(registry, "scaserver_push_wake_latency_seconds_bucket", {"le": "3.0"}) == 1
    assert sample(registry, "scaserver_tsilo_transactions_total") == 1


@attrs.define
class Contacts:
    count: int = 0

    def registered_contacts(self) -> int:
        return self.count


def test_registered_contacts_and_process_metrics_on_the_server_registry() -> None:
    contacts = Contacts()
    registry = CollectorRegistry()
    Metrics(registry, registrar=contacts, process=True)
    assert sample(registry, "scaserver_registered_contacts") == 0
    contacts.count = 4
    assert sample(registry, "scaserver_registered_contacts") == 4
    assert (sample(registry, "process_cpu_seconds_total") or 0) > 0
    assert "python_info{" in generate_latest(registry).decode()


def test_without_process_no_process_metrics() -> None:
    registry = CollectorRegistry()
    Metrics(registry)
    assert "process_" not in generate_latest(registry).decode()


class RefusingSink:
    """Refuses every row whose value is negative (a row fault), writes the others."""

    def __init__(self) -> None:
        self.rows: list[int] = []

    def upsert(self, values: Sequence[int], /) -> None:
        if any(value < 0 for value in values):
            raise ValueError("out of range")
        self.rows.extend(values)

    def delete(self, keys: Sequence[int], /) -> None:
        return


class SyncRunner:
    def run(self, f: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> Deferred[T]:
        return maybeDeferred(f, *args, **kwargs)


def test_dead_letters_are_counted_by_table_once() -> None:
    registry, clock = CollectorRegistry(), Clock()
    writes = WriteBehind(clock, SyncRunner())
    channel = writes.channel("location", RefusingSink(), lambda value: value)
    feed = MetricsFeed(Metrics(registry), writes)
    writes.startService()
    for value in (1, -2, 3, -4):
        channel.upsert(value)
    clock.advance(5.0)
    feed.sample()
    feed.sample()
    assert sample(registry, "scaserver_writebehind_dead_letters_total", {"table": "location"}) == 2
    channel.upsert(-5)
    clock.advance(5.0)
    feed.sample()
    assert sample(registry, "scaserver_writebehind_dead_letters_total", {"table": "location"}) == 3
    assert sample(registry, "scaserver_db_flushed_records_total", {"store": "sql"}) == 2


def test_labelled_counts_export_what_a_counter_of_the_same_name_exports() -> None:
    counted, reference = CollectorRegistry(), CollectorRegistry()
    counts = LabelledCounts("things", "Things by colour and size", ["colour", "size"], counted)
    counter = Counter(
        "things", "Things by colour and size", ["colour", "size"], namespace="scaserver", registry=reference
    )
    counts.precreate("red", "big")
    counter.labels(colour="red", size="big")
    for colour, size in (("blue", "small"), ("blue", "small"), ("red", "big"), ("green", "big")):
        counts.counts[colour, size] = counts.counts.get((colour, size), 0) + 1
        counter.labels(colour=colour, size=size).inc()
    assert generate_latest(counted) == generate_latest(reference)
    assert sample(counted, "scaserver_things_total", {"colour": "blue", "size": "small"}) == 2


def test_registrations_export_what_their_counter_exported() -> None:
    # Counted in plain ints since they are bumped per REGISTER; the family is the one the
    # prometheus Counter of the same name, help and label exported, series order included.
    registry, reference = CollectorRegistry(), CollectorRegistry()
    metrics = Metrics(registry)
    counter = Counter(
        "registrations", "REGISTER outcomes", ["outcome"], namespace="scaserver", registry=reference
    )
    for outcome in ("added", "refreshed", "removed", "expired", "rejected"):
        counter.labels(outcome=outcome)
    for outcome in ("refreshed", "added", "refreshed", "expired"):
        metrics.registration(outcome)
        counter.labels(outcome=outcome).inc()

    def family(text: bytes) -> list[str]:
        return [line for line in text.decode().splitlines() if "scaserver_registrations_total" in line]

    assert family(generate_latest(registry)) == family(generate_latest(reference))
    assert sample(registry, "scaserver_registrations_total", {"outcome": "refreshed"}) == 2
