"""LoopLagProbe: how late its timer fires on the injected clock, reported at every tick."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry
from twisted.internet.task import Clock

from scaserver.edge.looplag import LoopLagProbe
from scaserver.metrics.counters import Metrics


def started(interval_s: float = 0.05) -> tuple[LoopLagProbe, Clock, list[float]]:
    clock = Clock()
    readings: list[float] = []
    probe = LoopLagProbe(clock, readings.append, interval_s)
    probe.startService()
    return probe, clock, readings


def test_a_free_reactor_has_no_lag() -> None:
    _, clock, readings = started()
    clock.pump([0.05] * 4)
    assert readings == [0.0] * 4


def test_a_busy_reactor_fires_late_by_the_time_it_was_busy() -> None:
    _, clock, readings = started()
    clock.advance(0.03)
    clock.advance(0.25)  # one piece of work held the reactor: the timer due at 0.05 runs at 0.28
    assert readings == [pytest.approx(0.23)]
    clock.advance(0.05)  # measured again from when it ran, not from the missed schedule
    assert readings == [pytest.approx(0.23), 0.0]


def test_nothing_is_reported_before_the_first_interval() -> None:
    _, clock, readings = started()
    clock.advance(0.049)
    assert readings == []


def test_stopping_cancels_the_timer() -> None:
    probe, clock, readings = started()
    probe.stopService()
    assert clock.getDelayedCalls() == []
    clock.advance(1.0)
    assert readings == []


def test_readings_land_in_the_reactor_lag_histogram() -> None:
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    clock = Clock()
    LoopLagProbe(clock, metrics.reactor_lag, 0.05).startService()
    clock.advance(0.05)
    clock.advance(0.17)  # 0.12 late
    assert registry.get_sample_value("scaserver_reactor_lag_seconds_count") == 2
    assert registry.get_sample_value("scaserver_reactor_lag_seconds_bucket", {"le": "0.001"}) == 1
    assert registry.get_sample_value("scaserver_reactor_lag_seconds_bucket", {"le": "0.1"}) == 1
    assert registry.get_sample_value("scaserver_reactor_lag_seconds_bucket", {"le": "0.25"}) == 2
