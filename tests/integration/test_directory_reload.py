"""The directory watch over the real thread pool and real databases (SQLite and
PostgreSQL): every change the command line makes moves the generation in its own
transaction, and the watch, driven by ``task.Clock``, reloads exactly when it moved."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import cast

import attrs
from twisted.internet import reactor
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import Clock

from scaserver import directory
from scaserver.edge.dbpool import DatabasePool
from scaserver.edge.directorywatch import Directory, DirectoryWatch, load_directory
from scaserver.sca.line import LineAlias
from scaserver.store.directory import directory_generation
from scaserver.store.sql import SqlStore
from tests.conftest import twisted_fixture, twisted_test

INTERVAL = 2.0


@attrs.define
class Rig:
    store: SqlStore
    clock: Clock
    pool: DatabasePool
    watch: DirectoryWatch
    applied: list[Directory]

    async def tick(self) -> None:
        self.clock.advance(INTERVAL)
        await self.watch.settled()


@twisted_fixture
async def rig(migrated_db_url: str) -> AsyncIterator[Rig]:
    store = SqlStore(migrated_db_url, pool_size=2)
    clock, pool = Clock(), DatabasePool(reactor, max_threads=2)
    applied: list[Directory] = []
    watch = DirectoryWatch(
        cast(IReactorTime, clock),
        pool,
        current=load_directory(store),
        read_generation=lambda: directory_generation(store.engine),
        load=lambda: load_directory(store),
        apply=applied.append,
        interval_s=INTERVAL,
    )
    pool.add_dependent(watch)
    pool.startService()
    yield Rig(store, clock, pool, watch, applied)
    await pool.stopService()
    store.close()


def test_every_directory_change_moves_the_generation_by_one(migrated_db_url: str) -> None:
    store = SqlStore(migrated_db_url, pool_size=1)
    try:
        changes: list[Callable[[], object]] = [
            lambda: directory.add_subscriber(store, "alice@example.test", "pw"),
            lambda: directory.add_subscriber(store, "alice@example.test", "new password"),
            lambda: directory.add_trusted(store, "192.0.2.0/24", None, "pbx"),
            lambda: directory.add_trusted(store, "192.0.2.0/24", "udp", "pbx"),
            lambda: directory.add_line(store, "2001@example.test", 2, ["alice"]),
            lambda: directory.change_members(store, "2001@example.test", ["bob"], ["alice"]),
            lambda: directory.add_alias(store, "100@example.test", "2001@example.test"),
            lambda: directory.remove_alias(store, "100@example.test"),
            lambda: directory.add_alias(store, "100@example.test", "2001@example.test"),
            lambda: directory.remove_line(store, "2001@example.test"),
            lambda: directory.remove_trusted(store, "192.0.2.0/24", None),
            lambda: directory.remove_subscriber(store, "alice@example.test"),
        ]
        assert directory_generation(store.engine) == 0
        for number, change in enumerate(changes, start=1):
            change()
            assert directory_generation(store.engine) == number
    finally:
        store.close()


@twisted_test
async def test_the_watch_reloads_when_the_cli_changed_the_directory(rig: Rig) -> None:
    await rig.tick()
    assert rig.applied == []  # nothing changed since start-up

    directory.add_subscriber(rig.store, "alice@example.test", "pw")
    directory.add_line(rig.store, "2001@example.test", 2, ["alice"])
    await rig.tick()
    [loaded] = rig.applied
    assert [c.username for c in loaded.credentials] == ["alice"]
    assert [line.aor for line in loaded.lines] == ["sip:2001@example.test"]
    assert loaded.generation == directory_generation(rig.store.engine)

    await rig.tick()
    assert len(rig.applied) == 1  # the same generation: the directory is not read again

    directory.remove_subscriber(rig.store, "alice@example.test")
    directory.add_trusted(rig.store, "198.51.100.0/24", "tcp", "gateway")
    await rig.tick()
    latest = rig.applied[-1]
    assert latest.credentials == ()
    assert [str(peer.cidr) for peer in latest.trusted] == ["198.51.100.0/24"]
    assert rig.watch.current is latest


def applied_aliases(rig: Rig) -> tuple[LineAlias, ...]:
    return rig.applied[-1].aliases


@twisted_test
async def test_the_watch_reloads_the_aliases_of_the_lines(rig: Rig) -> None:
    directory.add_line(rig.store, "2001@example.test", 2, ["alice"])
    directory.add_line(rig.store, "2002@example.test", 2, ["bob"])
    directory.add_alias(rig.store, "100@example.test", "2001@example.test")
    await rig.tick()
    assert applied_aliases(rig) == (LineAlias("sip:100@example.test", "sip:2001@example.test"),)
    directory.add_alias(rig.store, "sip:100@example.test", "sip:2002@example.test")  # moved
    await rig.tick()
    assert applied_aliases(rig) == (LineAlias("sip:100@example.test", "sip:2002@example.test"),)
    directory.remove_line(rig.store, "2002@example.test")
    await rig.tick()
    assert applied_aliases(rig) == ()


@twisted_test
async def test_reload_reads_the_directory_whatever_the_generation(rig: Rig) -> None:
    change = await rig.watch.reload("directory.reload")
    assert change.subscribers == 0
    assert rig.watch.reloads == 1
