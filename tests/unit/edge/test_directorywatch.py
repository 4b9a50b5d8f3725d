"""The directory watch: polls the generation on the injected clock, reloads and swaps in one
call when it moved, never twice at once, and keeps the old directory when a read fails."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar, cast

from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import Clock

from scaserver.edge.directorywatch import Directory, DirectoryChange, DirectoryWatch
from scaserver.sca.line import SharedLine
from scaserver.sip.digest import Credentials
from scaserver.sip.trust import TrustedPeer

P = ParamSpec("P")
T = TypeVar("T")


def alice(password: str = "a") -> Credentials:
    return Credentials.from_password("alice", "example.test", password)


BOB = Credentials.from_password("bob", "example.test", "b")
LINE = SharedLine("sip:2001@example.test", 2, frozenset({"alice"}))
EMPTY = Directory(0, (), (), ())


class HeldRunner:
    """The database pool, each call held until the test releases it."""

    def __init__(self) -> None:
        self.held: list[tuple[Callable[[], Any], Deferred[Any]]] = []

    def run(self, f: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> Deferred[T]:
        result: Deferred[T] = Deferred()
        self.held.append((lambda: f(*args, **kwargs), result))
        return result

    def release(self) -> None:
        call, result = self.held.pop(0)
        maybeDeferred(call).chainDeferred(result)


class Database:
    def __init__(self) -> None:
        self.directory = EMPTY
        self.down = False

    def generation(self) -> int:
        if self.down:
            raise ConnectionError("database down")
        return self.directory.generation

    def load(self) -> Directory:
        if self.down:
            raise ConnectionError("database down")
        return self.directory


def make(interval_s: float = 2.0) -> tuple[DirectoryWatch, Clock, HeldRunner, Database, list[Directory]]:
    clock, runner, database = Clock(), HeldRunner(), Database()
    applied: list[Directory] = []
    watch = DirectoryWatch(
        cast(IReactorTime, clock),
        runner,
        current=EMPTY,
        read_generation=database.generation,
        load=database.load,
        apply=applied.append,
        interval_s=interval_s,
    )
    watch.startService()
    return watch, clock, runner, database, applied


def test_an_unchanged_generation_reads_one_row_and_loads_nothing() -> None:
    watch, clock, runner, _, applied = make()
    clock.advance(1.9)
    assert runner.held == []
    clock.advance(0.1)
    assert len(runner.held) == 1
    runner.release()
    assert runner.held == []  # no load
    assert applied == []
    assert watch.reloads == 0


def test_a_moved_generation_loads_the_directory_and_swaps_it_in_once() -> None:
    watch, clock, runner, database, applied = make()
    database.directory = Directory(3, (alice(), BOB), (TrustedPeer("192.0.2.0/24"),), (LINE,))
    clock.advance(2)
    runner.release()  # generation
    assert applied == []
    runner.release()  # whole directory
    assert applied == [database.directory]
    assert watch.current is database.directory
    clock.advance(2)
    runner.release()
    assert runner.held == []  # same generation again: nothing to load
    assert applied == [database.directory]


def test_a_poll_while_a_read_runs_is_skipped() -> None:
    _, clock, runner, database, _ = make()
    database.directory = Directory(1, (alice(),), (), ())
    clock.advance(2)
    clock.advance(2)
    clock.advance(2)
    assert len(runner.held) == 1


def test_a_failed_read_keeps_the_directory_and_the_next_poll_tries_again() -> None:
    watch, clock, runner, database, applied = make()
    database.down = True
    clock.advance(2)
    runner.release()
    assert watch.current is EMPTY
    database.down = False
    database.directory = Directory(1, (alice(),), (), ())
    clock.advance(2)
    runner.release()
    runner.release()
    assert applied == [database.directory]


def test_interval_zero_never_polls_but_reload_works() -> None:
    watch, clock, runner, database, applied = make(interval_s=0)
    clock.advance(3600)
    assert runner.held == []
    database.directory = Directory(0, (alice(),), (), ())  # same generation: reload anyway
    done: list[DirectoryChange] = []
    watch.reload("SIGHUP").addCallback(done.append)
    runner.release()
    assert applied == [database.directory]
    assert done[0].subscribers_added == 1


def test_stopping_stops_polling() -> None:
    watch, clock, runner, _, _ = make()
    watch.stopService()
    clock.advance(10)
    assert runner.held == []


def test_the_change_counts_what_was_added_removed_and_changed() -> None:
    before = Directory(1, (alice(), BOB), (TrustedPeer("192.0.2.0/24"),), (LINE,))
    after = Directory(
        2,
        (alice("new password"), Credentials.from_password("carol", "example.test", "c")),
        (TrustedPeer("198.51.100.0/24"), TrustedPeer("192.0.2.0/24")),
        (SharedLine(LINE.aor, 3, LINE.members), SharedLine("sip:2002@example.test", 1, frozenset())),
    )
    change = DirectoryChange.between(before, after)
    assert change.as_json() == {
        "generation": 2,
        "subscribers": 2,
        "subscribers_added": 1,
        "subscribers_removed": 1,
        "subscribers_changed": 1,
        "trusted": 2,
        "trusted_added": 1,
        "trusted_removed": 0,
        "lines": 2,
        "lines_added": 1,
        "lines_removed": 0,
        "lines_changed": 1,
    }
