"""The bounded database thread pool."""

from __future__ import annotations

import threading

import pytest
from twisted.application.service import Service
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from typing_extensions import override

from scaserver.edge.dbpool import DatabasePool, PoolNotRunningError
from tests.conftest import twisted_test


class Boom(Exception):
    pass


@pytest.fixture
def pool() -> DatabasePool:
    return DatabasePool(reactor, min_threads=0, max_threads=2, name="test-db")


@twisted_test
async def test_runs_the_call_in_a_worker_thread(pool: DatabasePool) -> None:
    pool.startService()
    try:
        result = await pool.run(lambda a, b: (threading.current_thread().name, a + b), 2, b=3)
    finally:
        await pool.stopService()
    thread_name, total = result
    assert total == 5
    assert thread_name != threading.current_thread().name


@twisted_test
async def test_a_failing_call_fails_the_deferred(pool: DatabasePool) -> None:
    def explode() -> None:
        raise Boom("db")

    pool.startService()
    try:
        with pytest.raises(Boom):
            await pool.run(explode)
    finally:
        await pool.stopService()


@twisted_test
async def test_not_running_pool_refuses_work(pool: DatabasePool) -> None:
    with pytest.raises(PoolNotRunningError, match="test-db"):
        await pool.run(lambda: None)
    pool.startService()
    await pool.stopService()
    with pytest.raises(PoolNotRunningError):
        await pool.run(lambda: None)


@twisted_test
async def test_at_most_max_threads_run_at_once(pool: DatabasePool) -> None:
    gate = threading.Event()
    started = threading.Semaphore(0)

    def blocked(n: int) -> int:
        started.release()
        gate.wait(timeout=30)
        return n

    pool.startService()
    try:
        pending = [pool.run(blocked, n) for n in range(5)]
        assert started.acquire(timeout=10)
        assert started.acquire(timeout=10)
        assert pool.busy == 2
        assert pool.queued == 3
        assert not started.acquire(blocking=False)
        gate.set()
        results = [await d for d in pending]
    finally:
        gate.set()
        await pool.stopService()
    assert results == [0, 1, 2, 3, 4]
    assert pool.max_threads == 2


class Dependent(Service):
    """A child that needs the pool until its own stop (like the write-behind's final flush)."""

    def __init__(self, pool: DatabasePool) -> None:
        self.pool = pool
        self.events: list[str] = []
        self.stopping: Deferred[None] = Deferred()

    @override
    def startService(self) -> None:
        self.running = True
        self.events.append(f"started, pool busy={self.pool.busy}")

    @override
    def stopService(self) -> Deferred[None]:
        self.running = False
        self.events.append("stopping")
        return self.stopping


@twisted_test
async def test_dependents_start_after_and_stop_before_the_threads(pool: DatabasePool) -> None:
    child = Dependent(pool)
    pool.add_dependent(child)
    pool.startService()
    assert child.events == ["started, pool busy=0"]
    stopped = pool.stopService()
    assert child.events == ["started, pool busy=0", "stopping"]
    assert not stopped.called
    assert await pool.run(lambda: "still open") == "still open"  # the child's final work
    child.stopping.callback(None)
    await stopped
    with pytest.raises(PoolNotRunningError):
        await pool.run(lambda: None)


@pytest.mark.parametrize(("low", "high"), [(-1, 2), (0, 0), (3, 2)])
def test_invalid_bounds_are_rejected(low: int, high: int) -> None:
    with pytest.raises(ValueError, match="invalid thread bounds"):
        DatabasePool(reactor, min_threads=low, max_threads=high)
