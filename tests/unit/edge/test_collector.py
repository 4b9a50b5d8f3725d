"""The running server's garbage collection: collections paced by the clock (the young
generation, an older one when its turn has come), every collection's pause measured."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest
from prometheus_client import CollectorRegistry
from twisted.internet.task import Clock

from scaserver.edge.collector import (
    GC_THRESHOLDS,
    YOUNG_INTERVAL_S,
    PacedCollections,
    PauseWatch,
    due_generation,
)
from scaserver.metrics.counters import Metrics

YOUNG_DUE = (GC_THRESHOLDS[0] - 1, GC_THRESHOLDS[1] - 1, 0)  # below every threshold: the youngest


def paced(clock: Clock, generations: list[int], counts: tuple[int, int, int] = YOUNG_DUE) -> PacedCollections:
    return PacedCollections(
        clock,
        YOUNG_INTERVAL_S,
        collect=generations.append,
        counts=lambda: counts,
        thresholds=lambda: GC_THRESHOLDS,
    )


def test_the_young_generation_is_collected_at_every_interval_whatever_the_allocations() -> None:
    clock, generations = Clock(), list[int]()
    paced(clock, generations).startService()
    clock.advance(YOUNG_INTERVAL_S / 2)
    assert generations == []  # not at start: the first one is an interval away
    clock.pump([YOUNG_INTERVAL_S / 2] + [YOUNG_INTERVAL_S] * 4)
    assert generations == [0] * 5


def test_an_older_generation_is_collected_when_its_turn_has_come() -> None:
    """A gc.collect(0) never moves on to the older generations (only an automatic collection
    does): the paced collection chooses as CPython would."""
    clock, generations = Clock(), list[int]()
    counts = [YOUNG_DUE]
    service = PacedCollections(
        clock,
        YOUNG_INTERVAL_S,
        collect=generations.append,
        counts=lambda: counts[0],
        thresholds=lambda: GC_THRESHOLDS,
    )
    service.startService()
    clock.advance(YOUNG_INTERVAL_S)
    counts[0] = (10, GC_THRESHOLDS[1] + 1, 0)  # young collections past the middle threshold
    clock.advance(YOUNG_INTERVAL_S)
    counts[0] = (10, GC_THRESHOLDS[1] + 1, GC_THRESHOLDS[2] + 1)  # and middle ones past the oldest's
    clock.advance(YOUNG_INTERVAL_S)
    assert generations == [0, 1, 2]


YOUNG, MIDDLE, OLDEST = GC_THRESHOLDS


@pytest.mark.parametrize(
    ("counts", "generation"),
    [
        ((0, 0, 0), 0),
        ((YOUNG + 1, 0, 0), 0),  # past the young threshold: still the young one, as every tick
        ((0, MIDDLE, 0), 0),  # at a threshold is not past it
        ((0, MIDDLE + 1, 0), 1),
        ((0, 0, OLDEST + 1), 2),
        ((0, MIDDLE + 1, OLDEST + 1), 2),
    ],
)
def test_due_generation_is_the_oldest_past_its_threshold(
    counts: tuple[int, int, int], generation: int
) -> None:
    assert due_generation(counts, GC_THRESHOLDS) == generation


def test_the_middle_generation_of_the_running_interpreter_is_reached_by_paced_collections() -> None:
    """With the real collector (its automatic collections off, so that only the paced ones
    count): after more young collections than the middle threshold, a paced one collects the
    middle generation."""
    clock, seen = Clock(), list[int]()

    def collect(generation: int) -> object:
        seen.append(generation)
        return gc.collect(generation)

    middle = gc.get_threshold()[1]
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        PacedCollections(clock, YOUNG_INTERVAL_S, collect=collect).startService()
        clock.pump([YOUNG_INTERVAL_S] * (middle + 2))
    finally:
        if was_enabled:
            gc.enable()
    # The middle generation is reached by a collection of it or of the oldest one (which an
    # earlier test of this process may have left due first: it collects the middle one too).
    reached = [index for index, generation in enumerate(seen) if generation >= 1]
    assert reached
    assert reached[0] <= middle + 1  # once the young collections since the last passed it


def test_stopping_ends_the_paced_collections() -> None:
    clock, generations = Clock(), list[int]()
    service = paced(clock, generations)
    service.startService()
    clock.advance(YOUNG_INTERVAL_S)
    service.stopService()
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
