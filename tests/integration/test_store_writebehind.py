"""The write-behind queue over the real thread pool and real databases (SQLite and
PostgreSQL): writes arrive, a database outage loses nothing, and enqueueing never waits
for the database.  Timers run on ``task.Clock``; only the thread hand-off uses the reactor.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import contextmanager

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.engine import make_url
from twisted.internet import reactor
from twisted.internet.task import Clock

from scaserver.edge.dbpool import DatabasePool
from scaserver.edge.writebehind import Channel, WriteBehind
from scaserver.sca.line import SharedLine
from scaserver.sip.digest import Credentials
from scaserver.store.directory import SqlSharedLineRepository, SqlSubscriberRepository
from scaserver.store.engine import is_sqlite, make_engine
from scaserver.store.repository import SubscriberKey, line_key, subscriber_key
from tests.conftest import PgServer, twisted_fixture, twisted_test

INTERVAL = 5.0


def credentials(n: int) -> Credentials:
    return Credentials(f"user{n}", "example.com", f"{n:032x}", f"{n:064x}", None)


class Harness:
    def __init__(self, url: str, *, busy_timeout_s: float = 5.0) -> None:
        self.url = url
        self.clock = Clock()
        self.engine: Engine = make_engine(url, connect_timeout_s=busy_timeout_s)
        self.subscribers = SqlSubscriberRepository(self.engine)
        self.lines = SqlSharedLineRepository(self.engine)
        self.pool = DatabasePool(reactor, max_threads=2)
        self.queue = WriteBehind(
            self.clock, self.pool, interval_s=INTERVAL, retry_initial_s=1.0, retry_max_s=8.0
        )
        self.line_channel = self.queue.channel("lines", self.lines, line_key)
        self.subscriber_channel: Channel[SubscriberKey, Credentials] = self.queue.channel(
            "subscribers", self.subscribers, subscriber_key
        )

    def start(self) -> None:
        self.pool.startService()
        self.queue.startService()

    async def stop(self) -> None:
        await self.queue.stopService()
        await self.pool.stopService()
        self.engine.dispose()

    async def tick(self, seconds: float) -> None:
        """Let ``seconds`` pass on the clock, then wait for a flush it started to end."""
        self.clock.advance(seconds)
        await self.queue.wait_idle()

    def stored_users(self) -> set[str]:
        return {c.username for c in self.subscribers.load_all()}


@twisted_fixture
async def harness(migrated_db_url: str) -> AsyncIterator[Harness]:
    made = Harness(migrated_db_url, busy_timeout_s=0.05 if is_sqlite(migrated_db_url) else 2.0)
    made.start()
    yield made
    await made.stop()


@contextmanager
def sqlite_locked(url: str) -> Iterator[Callable[[], None]]:
    """Hold SQLite's write lock from another connection: writers get 'database is locked'."""
    path = make_url(url).database
    assert path is not None
    locker = sqlite3.connect(path, isolation_level=None)
    locker.execute("BEGIN EXCLUSIVE")

    def release() -> None:
        locker.execute("ROLLBACK")

    try:
        yield release
    finally:
        locker.close()


@contextmanager
def postgres_down(pg: PgServer, url: str) -> Iterator[Callable[[], None]]:
    """Stop the session's cluster (or, on an external server, refuse connections to the
    test database and cut the open ones); the callable brings it back."""
    name = make_url(url).database
    admin = pg.admin_engine()
    if pg.owned:
        pg.stop()
    else:
        with admin.connect() as conn:
            conn.execute(text(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false'))
            conn.execute(
                text(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'")
            )

    def restore() -> None:
        if pg.owned:
            pg.start()
        else:
            with admin.connect() as conn:
                conn.execute(text(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true'))

    try:
        yield restore
    finally:
        admin.dispose()


@contextmanager
def outage(request: pytest.FixtureRequest, url: str) -> Iterator[Callable[[], None]]:
    if is_sqlite(url):
        with sqlite_locked(url) as restore:
            yield restore
        return
    pg: PgServer = request.getfixturevalue("pg")
    with postgres_down(pg, url) as restore:
        yield restore


@twisted_test
async def test_queued_writes_arrive_after_the_interval(harness: Harness) -> None:
    harness.line_channel.upsert(SharedLine("sip:line1@example.com", 2, frozenset({"user1"})))
    for n in range(3):
        harness.subscriber_channel.upsert(credentials(n))
    harness.subscriber_channel.delete(("user2", "example.com"))
    await harness.tick(INTERVAL - 1)
    assert harness.stored_users() == set()
    await harness.tick(1)
    assert harness.stored_users() == {"user0", "user1"}
    assert harness.lines.load_all() == [SharedLine("sip:line1@example.com", 2, frozenset({"user1"}))]
    assert harness.queue.depth == 0
    assert harness.queue.last_flush_latency_s == 0.0


@twisted_test
async def test_final_flush_on_stop(migrated_db_url: str) -> None:
    made = Harness(migrated_db_url)
    made.start()
    made.subscriber_channel.upsert(credentials(1))
    await made.queue.stopService()
    await made.pool.stopService()
    try:
        assert made.stored_users() == {"user1"}
    finally:
        made.engine.dispose()


@twisted_test
async def test_pool_stops_its_threads_only_after_the_final_flush(migrated_db_url: str) -> None:
    clock = Clock()
    engine = make_engine(migrated_db_url)
    gated = GatedSubscribers(SqlSubscriberRepository(engine))
    pool = DatabasePool(reactor, max_threads=1)
    queue = WriteBehind(clock, pool, interval_s=INTERVAL)
    channel = queue.channel("subscribers", gated, subscriber_key)
    pool.add_dependent(queue)
    pool.startService()
    try:
        channel.upsert(credentials(0))
        clock.advance(INTERVAL)
        assert gated.entered.wait(timeout=10)  # a flush is running when the service stops
        channel.upsert(credentials(1))
        stopped = pool.stopService()
        assert not stopped.called
        gated.gate.set()
        await stopped
        assert {c.username for c in gated.inner.load_all()} == {"user0", "user1"}
        assert queue.depth == 0
    finally:
        gated.gate.set()
        engine.dispose()


@twisted_test
async def test_every_write_queued_during_an_outage_arrives(
    harness: Harness, request: pytest.FixtureRequest
) -> None:
    harness.subscriber_channel.upsert(credentials(0))
    await harness.tick(INTERVAL)
    assert harness.stored_users() == {"user0"}

    with outage(request, harness.url) as restore:
        harness.subscriber_channel.delete(("user0", "example.com"))
        harness.subscriber_channel.upsert(credentials(1))
        await harness.tick(INTERVAL)
        assert harness.queue.consecutive_failures == 1
        assert harness.queue.depth == 2
        harness.subscriber_channel.upsert(credentials(2))
        await harness.tick(1.0)
        assert harness.queue.consecutive_failures == 2
        assert harness.queue.depth == 3
        restore()
        await harness.tick(2.0)

    assert harness.queue.consecutive_failures == 0
    assert harness.queue.depth == 0
    assert harness.stored_users() == {"user1", "user2"}
    assert harness.queue.failed_flushes_total == 2


class GatedSubscribers:
    """A repository whose writes wait for the test to open a gate (a very slow database)."""

    def __init__(self, inner: SqlSubscriberRepository) -> None:
        self.inner = inner
        self.gate = threading.Event()
        self.entered = threading.Event()

    def upsert(self, values: Sequence[Credentials], /) -> None:
        self.entered.set()
        self.gate.wait(timeout=30)
        self.inner.upsert(values)

    def delete(self, keys: Sequence[SubscriberKey], /) -> None:
        self.inner.delete(keys)


@twisted_test
async def test_enqueue_never_waits_for_a_slow_database(migrated_db_url: str) -> None:
    clock = Clock()
    engine = make_engine(migrated_db_url)
    repo = SqlSubscriberRepository(engine)
    gated = GatedSubscribers(repo)
    pool = DatabasePool(reactor, max_threads=1)
    queue = WriteBehind(clock, pool, interval_s=INTERVAL)
    channel = queue.channel("subscribers", gated, subscriber_key)
    pool.startService()
    queue.startService()
    try:
        channel.upsert(credentials(0))
        clock.advance(INTERVAL)
        assert gated.entered.wait(timeout=10)  # the worker is now stuck inside the database
        for n in range(1, 1001):
            channel.upsert(credentials(n))
        assert queue.flushing
        assert queue.depth == 1001
        gated.gate.set()
        await queue.wait_idle()
        clock.advance(INTERVAL)
        await queue.wait_idle()
        assert len(repo.load_all()) == 1001
    finally:
        gated.gate.set()
        await queue.stopService()
        await pool.stopService()
        engine.dispose()
