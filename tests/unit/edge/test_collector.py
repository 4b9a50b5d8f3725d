"""The running server's garbage collection: young collections paced by the clock, every
collection's pause measured."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest
from prometheus_client import CollectorRegistry
from twisted.internet.task import Clock

from scaserver.edge.collector import YOUNG_INTERVAL_S, PauseWatch, YoungCollections
from scaserver.metrics.counters import Metrics


def test_the_young_generation_is_collected_at_every_interval_whatever_the_allocations() -> None:
    clock, generations = Clock(), list[int]()
    young = YoungCollections(clock, YOUNG_INTERVAL_S, generations.append)
    young.startService()
    clock.advance(YOUNG_INTERVAL_S / 2)
    assert generations == []  # not at start: the first one is an interval away
    clock.pump([YOUNG_INTERVAL_S / 2] + [YOUNG_INTERVAL_S] * 4)
    assert generations == [0] * 5  # only ever the youngest generation


def test_stopping_ends_the_young_collections() -> None:
    clock, generations = Clock(), list[int]()
    young = YoungCollections(clock, YOUNG_INTERVAL_S, generations.append)
    young.startService()
    clock.advance(YOUNG_INTERVAL_S)
    young.stopService()
    assert clock.getDelayedCalls() == []
    clock.advance(10 * YOUNG_INTERVAL_S)
    assert generations == [0]


@pytest.fixture
def watched() -> Iterator[list[tuple[int, float]]]:
    pauses: list[tuple[int, float]] = []
    ticks = iter(range(1_000_000))
    watch = PauseWatch(lambda: float(next(ticks)), lambda generation, s: pauses.append((generation, s)))
    watch.startService()
    try:
        yield pauses
    finally:
        watch.stopService()


def test_every_collection_reports_its_generation_and_its_pause(watched: list[tuple[int, float]]) -> None:
    gc.collect(0)
    gc.collect(2)
    # The fake timer ticks once per reading: each pause is one tick, start to stop.
    assert watched[-2:] == [(0, 1.0), (2, 1.0)]


def test_a_stopped_watch_reports_nothing() -> None:
    pauses: list[tuple[int, float]] = []
    watch = PauseWatch(lambda: 0.0, lambda generation, s: pauses.append((generation, s)))
    watch.startService()
    watch.stopService()
    assert watch._on_collection not in gc.callbacks
    gc.collect(0)
    assert pauses == []


def test_a_watch_keeps_no_reference_once_stopped() -> None:
    watch = PauseWatch(lambda: 0.0, lambda generation, s: None)
    watch.startService()
    watch.stopService()
    gone = weakref.ref(watch)
    del watch
    assert gone() is None


def test_pauses_land_in_the_gc_pause_histogram_by_generation() -> None:
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    metrics.gc_pause(0, 0.0004)
    metrics.gc_pause(0, 0.003)
    metrics.gc_pause(2, 0.180)
    count = "scaserver_gc_pause_seconds_count"
    bucket = "scaserver_gc_pause_seconds_bucket"
    assert registry.get_sample_value(count, {"generation": "0"}) == 2
    assert registry.get_sample_value(count, {"generation": "1"}) == 0
    assert registry.get_sample_value(count, {"generation": "2"}) == 1
    assert registry.get_sample_value(bucket, {"generation": "0", "le": "0.001"}) == 1
    assert registry.get_sample_value(bucket, {"generation": "2", "le": "0.1"}) == 0
    assert registry.get_sample_value(bucket, {"generation": "2", "le": "0.25"}) == 1
