"""Readiness checks with a fake clock: shared probes, time-outs, the queue limit, restore."""

from __future__ import annotations

from typing import cast

from twisted.internet import task
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IReactorTime

from scaserver.edge.health import Check, Readiness


def _readiness(
    clock: task.Clock, probe: list[Deferred[None]], *, restored: bool = True, depth: int = 0
) -> Readiness:
    def probe_database() -> Deferred[None]:
        probe.append(Deferred())
        return probe[-1]

    return Readiness(
        cast(IReactorTime, clock),
        probe_database,
        restored=lambda: restored,
        queue_depth=lambda: depth,
        queue_limit=10,
    )


def _result(deferred: Deferred[dict[str, Check]]) -> dict[str, Check]:
    seen: list[dict[str, Check]] = []
    deferred.addCallback(seen.append)
    assert seen, "the check has not finished"
    return seen[0]


def test_all_checks_pass() -> None:
    clock, probes = task.Clock(), list[Deferred[None]]()
    readiness = _readiness(clock, probes)
    checked = readiness.check()
    probes[0].callback(None)
    assert all(check.ok for check in _result(checked).values())


def test_concurrent_checks_share_one_probe_and_a_timeout_fails_the_database() -> None:
    clock, probes = task.Clock(), list[Deferred[None]]()
    readiness = _readiness(clock, probes)
    first, second = readiness.check(), readiness.check()
    assert len(probes) == 1
    clock.advance(2.0)
    for checked in (first, second):
        database = _result(checked)["database"]
        assert not database.ok and "TimeoutError" in database.detail
    readiness.check()
    assert len(probes) == 2  # a new probe once the last one ended


def test_database_error_restore_and_queue_limit_are_named() -> None:
    clock = task.Clock()

    def down() -> Deferred[None]:
        return fail(ConnectionRefusedError("connection refused"))

    readiness = Readiness(
        cast(IReactorTime, clock), down, restored=lambda: False, queue_depth=lambda: 10, queue_limit=10
    )
    checks = _result(readiness.check())
    assert not checks["database"].ok and "connection refused" in checks["database"].detail
    assert checks["restored"] == Check(False, "start-up restore has not run")
    assert checks["write_behind"] == Check(False, "10 pending, limit 10")
    ready: list[bool] = []
    readiness.ready().addCallback(ready.append)
    assert ready == [False]


def test_ready_when_every_check_passes() -> None:
    readiness = Readiness(
        cast(IReactorTime, task.Clock()),
        lambda: succeed(None),
        restored=lambda: True,
        queue_depth=lambda: 9,
        queue_limit=10,
    )
    ready: list[bool] = []
    readiness.ready().addCallback(ready.append)
    assert ready == [True]
