"""Write-behind queue: coalescing, flush timing on the injected clock, retry with back-off,
dead letters for rows the database refuses."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, ParamSpec, TypeVar, cast

import attrs
import pytest
from sqlalchemy.exc import DataError, IntegrityError, OperationalError
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.task import Clock
from twisted.logger import ILogObserver, Logger, LogLevel
from twisted.python.failure import Failure

from scaserver.edge.writebehind import DELETED, WriteBehind

P = ParamSpec("P")
T = TypeVar("T")


@attrs.frozen
class Row:
    key: str
    value: int


class DatabaseDownError(Exception):
    pass


@attrs.define
class RecordingSink:
    """A repository stand-in that records calls (into a shared log) and can be 'down'."""

    name: str
    log: list[tuple[str, str, tuple[object, ...]]]
    down: bool = False
    rows: dict[str, int] = attrs.field(factory=dict)
    #: Values the database refuses (a row fault: the whole transaction fails).
    refused: frozenset[int] = frozenset()
    #: Go down after this many more successful upsert calls.
    down_after: int | None = None

    def upsert(self, values: Sequence[Row], /) -> None:
        if self.down_after is not None:
            if self.down_after == 0:
                self.down = True
            self.down_after -= 1
        if self.down:
            raise DatabaseDownError(self.name)
        if any(row.value in self.refused for row in values):
            raise DataError("INSERT ...", None, ValueError("value out of range"))
        self.log.append((self.name, "upsert", tuple(values)))
        self.rows.update({row.key: row.value for row in values})

    def delete(self, keys: Sequence[str], /) -> None:
        if self.down:
            raise DatabaseDownError(self.name)
        self.log.append((self.name, "delete", tuple(keys)))
        for key in keys:
            self.rows.pop(key, None)


class SyncRunner:
    """Runs the flush at once, on the calling thread."""

    def __init__(self) -> None:
        self.calls = 0

    def run(self, f: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> Deferred[T]:
        self.calls += 1
        return maybeDeferred(f, *args, **kwargs)


class ManualRunner:
    """Holds each flush until the test releases it: a worker thread that is slow."""

    def __init__(self) -> None:
        self.held: list[tuple[Callable[[], Any], Deferred[Any]]] = []

    def run(self, f: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> Deferred[T]:
        result: Deferred[T] = Deferred()
        self.held.append((lambda: f(*args, **kwargs), result))
        return result

    def release(self) -> None:
        call, result = self.held.pop(0)
        maybeDeferred(call).chainDeferred(result)


def key_of(row: Row) -> str:
    return row.key


def make(
    runner: SyncRunner | ManualRunner | None = None, **kwargs: Any
) -> tuple[WriteBehind, Clock, RecordingSink, RecordingSink, list[tuple[str, str, tuple[object, ...]]]]:
    clock = Clock()
    log: list[tuple[str, str, tuple[object, ...]]] = []
    parent, child = RecordingSink("parent", log), RecordingSink("child", log)
    wb = WriteBehind(clock, runner or SyncRunner(), **kwargs)
    wb.channel("parent", parent, key_of)
    wb.channel("child", child, key_of)
    return wb, clock, parent, child, log


def next_delay(clock: Clock) -> float:
    """Seconds until the one armed timer fires."""
    (call,) = clock.getDelayedCalls()
    when: float = cast(Any, call).getTime()
    return when - clock.seconds()


def channels(wb: WriteBehind) -> tuple[Any, Any]:
    parent, child = wb._channels
    return parent, child


def test_nothing_is_written_before_the_interval() -> None:
    wb, clock, parent, _, log = make(interval_s=5.0)
    wb.startService()
    channels(wb)[0].upsert(Row("a", 1))
    clock.advance(4.9)
    assert log == []
    assert wb.depth == 1
    clock.advance(0.1)
    assert log == [("parent", "upsert", (Row("a", 1),))]
    assert wb.depth == 0
    assert parent.rows == {"a": 1}


def test_flushes_repeat_every_interval() -> None:
    wb, clock, _, _, log = make(interval_s=5.0)
    wb.startService()
    p, _ = channels(wb)
    p.upsert(Row("a", 1))
    clock.advance(5.0)
    p.upsert(Row("b", 2))
    clock.advance(5.0)
    assert log == [("parent", "upsert", (Row("a", 1),)), ("parent", "upsert", (Row("b", 2),))]
    assert wb.flushes_total == 2
    assert wb.written_total == 2


def test_empty_queue_does_not_call_the_database() -> None:
    runner = SyncRunner()
    wb, clock, _, _, _ = make(runner, interval_s=5.0)
    wb.startService()
    clock.advance(50.0)
    assert runner.calls == 0
    assert clock.seconds() + next_delay(clock) == 55.0


def test_last_write_wins() -> None:
    wb, clock, _, _, log = make()
    wb.startService()
    p, _ = channels(wb)
    p.upsert(Row("a", 1))
    p.upsert(Row("a", 2))
    p.upsert(Row("a", 3))
    assert wb.depth == 1
    clock.advance(5.0)
    assert log == [("parent", "upsert", (Row("a", 3),))]


def test_delete_after_upsert_collapses_into_the_delete() -> None:
    wb, clock, _, _, log = make()
    wb.startService()
    p, _ = channels(wb)
    p.upsert(Row("a", 1))
    p.delete("a")
    assert wb.depth == 1
    assert p.pending("a") is DELETED
    clock.advance(5.0)
    assert log == [("parent", "delete", ("a",))]


def test_upsert_after_delete_replaces_it() -> None:
    wb, clock, _, _, log = make()
    wb.startService()
    p, _ = channels(wb)
    p.delete("a")
    p.upsert(Row("a", 7))
    clock.advance(5.0)
    assert log == [("parent", "upsert", (Row("a", 7),))]


def test_deletes_children_first_then_upserts_parents_first() -> None:
    wb, clock, _, _, log = make()
    wb.startService()
    p, c = channels(wb)
    c.upsert(Row("c1", 1))
    p.delete("p0")
    p.upsert(Row("p1", 1))
    c.delete("c0")
    clock.advance(5.0)
    assert log == [
        ("child", "delete", ("c0",)),
        ("parent", "delete", ("p0",)),
        ("parent", "upsert", (Row("p1", 1),)),
        ("child", "upsert", (Row("c1", 1),)),
    ]


def test_failed_flush_keeps_every_write_and_retries_with_capped_backoff() -> None:
    wb, clock, parent, _, log = make(interval_s=5.0, retry_initial_s=1.0, retry_max_s=4.0)
    wb.startService()
    p, _ = channels(wb)
    parent.down = True
    p.upsert(Row("a", 1))
    p.upsert(Row("b", 1))
    clock.advance(5.0)
    assert wb.consecutive_failures == 1
    assert wb.depth == 2
    retries = []
    for _ in range(5):
        retries.append(next_delay(clock))
        clock.advance(retries[-1])
    assert retries == [1.0, 2.0, 4.0, 4.0, 4.0]
    assert wb.failed_flushes_total == 6
    assert log == []
    parent.down = False
    clock.advance(4.0)
    assert parent.rows == {"a": 1, "b": 1}
    assert wb.consecutive_failures == 0
    assert wb.depth == 0
    assert next_delay(clock) == 5.0


def test_retry_delay_doubles_from_the_initial_value() -> None:
    wb, *_ = make(retry_initial_s=0.5, retry_max_s=30.0)
    assert [wb.retry_delay(n) for n in range(1, 9)] == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]
    assert wb.retry_delay(10_000) == 30.0


def test_write_enqueued_during_a_failing_flush_wins_over_the_requeued_one() -> None:
    runner = ManualRunner()
    wb, clock, parent, _, log = make(runner)
    wb.startService()
    p, _ = channels(wb)
    p.upsert(Row("a", 1))
    p.upsert(Row("b", 1))
    clock.advance(5.0)
    assert wb.flushing
    p.upsert(Row("a", 2))  # newer than the in-flight value
    p.upsert(Row("c", 1))
    assert wb.depth == 4  # 2 in flight + 2 queued
    parent.down = True
    runner.release()
    assert wb.depth == 3
    assert p.pending("a") == Row("a", 2)
    assert p.pending("b") == Row("b", 1)
    parent.down = False
    clock.advance(1.0)
    runner.release()
    assert parent.rows == {"a": 2, "b": 1, "c": 1}
    assert log == [("parent", "upsert", (Row("b", 1), Row("a", 2), Row("c", 1)))]


def test_delete_enqueued_during_a_failing_flush_is_not_undone() -> None:
    runner = ManualRunner()
    wb, clock, parent, _, _ = make(runner)
    wb.startService()
    p, _ = channels(wb)
    p.upsert(Row("a", 1))
    clock.advance(5.0)
    p.delete("a")
    parent.down = True
    runner.release()
    assert p.pending("a") is DELETED
    assert wb.depth == 1


def test_only_one_flush_runs_at_a_time() -> None:
    runner = ManualRunner()
    wb, clock, _, _, _ = make(runner, interval_s=5.0)
    wb.startService()
    p, _ = channels(wb)
    p.upsert(Row("a", 1))
    clock.advance(5.0)
    p.upsert(Row("b", 1))
    clock.advance(50.0)  # the timer was not re-armed while the flush runs
    assert len(runner.held) == 1
    manual = wb.flush()
    assert len(runner.held) == 1
    runner.release()  # the first flush ends; the manual one starts
    assert len(runner.held) == 1
    runner.release()
    assert manual.called
    assert wb.depth == 0


def test_enqueue_does_not_wait_for_a_running_flush() -> None:
    runner = ManualRunner()
    wb, clock, _, _, _ = make(runner)
    wb.startService()
    p, _ = channels(wb)
    p.upsert(Row("a", 1))
    clock.advance(5.0)
    for n in range(100):
        p.upsert(Row(f"k{n}", n))
    assert wb.depth == 101
    assert len(runner.held) == 1


def test_last_flush_latency_is_measured_on_the_clock() -> None:
    runner = ManualRunner()
    wb, clock, _, _, _ = make(runner)
    wb.startService()
    assert wb.last_flush_latency_s is None
    channels(wb)[0].upsert(Row("a", 1))
    clock.advance(5.0)
    clock.advance(0.25)
    runner.release()
    assert wb.last_flush_latency_s == 0.25


def test_reaching_max_pending_flushes_early() -> None:
    runner = SyncRunner()
    wb, _, parent, _, _ = make(runner, max_pending=3)
    wb.startService()
    p, _ = channels(wb)
    p.upsert(Row("a", 1))
    p.upsert(Row("b", 1))
    assert runner.calls == 0
    p.upsert(Row("c", 1))
    assert runner.calls == 1
    assert parent.rows == {"a": 1, "b": 1, "c": 1}


def test_max_pending_never_drops_while_the_database_is_down() -> None:
    wb, clock, parent, _, _ = make(max_pending=2)
    wb.startService()
    p, _ = channels(wb)
    parent.down = True
    for n in range(10):
        p.upsert(Row(f"k{n}", n))
    assert wb.depth == 10
    parent.down = False
    clock.advance(60.0)
    assert len(parent.rows) == 10


def test_stop_service_makes_a_final_flush() -> None:
    wb, clock, parent, _, _ = make()
    wb.startService()
    channels(wb)[0].upsert(Row("a", 1))
    stopped = wb.stopService()
    assert stopped.called
    assert parent.rows == {"a": 1}
    assert clock.getDelayedCalls() == []


def test_stop_service_waits_for_the_running_flush_then_flushes_the_rest() -> None:
    runner = ManualRunner()
    wb, clock, parent, _, _ = make(runner)
    wb.startService()
    p, _ = channels(wb)
    p.upsert(Row("a", 1))
    clock.advance(5.0)
    p.upsert(Row("b", 1))
    stopped = wb.stopService()
    assert not stopped.called
    runner.release()
    assert not stopped.called
    runner.release()
    assert stopped.called
    assert parent.rows == {"a": 1, "b": 1}
    assert clock.getDelayedCalls() == []


def test_stop_service_with_the_database_down_reports_and_completes() -> None:
    wb, clock, parent, _, _ = make()
    wb.startService()
    channels(wb)[0].upsert(Row("a", 1))
    parent.down = True
    errors: list[Failure] = []
    stopped = wb.stopService()
    stopped.addErrback(errors.append)
    assert stopped.called
    assert errors == []
    assert wb.depth == 1
    assert clock.getDelayedCalls() == []


def test_manual_flush_reports_a_database_failure() -> None:
    wb, _, parent, _, _ = make()
    wb.startService()
    channels(wb)[0].upsert(Row("a", 1))
    parent.down = True
    errors: list[Failure] = []
    wb.flush().addErrback(errors.append)
    assert len(errors) == 1
    assert isinstance(errors[0].value, DatabaseDownError)


def test_channel_names_are_unique() -> None:
    wb, *_ = make()
    with pytest.raises(ValueError, match="registered twice"):
        wb.channel("parent", RecordingSink("x", []), key_of)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"interval_s": 0.0},
        {"retry_initial_s": 0.0},
        {"retry_initial_s": 5.0, "retry_max_s": 1.0},
        {"max_pending": 0},
    ],
)
def test_invalid_settings_are_rejected(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        WriteBehind(Clock(), SyncRunner(), **kwargs)


def test_outage_logs_one_traceback_then_one_warning_per_retry() -> None:
    wb, clock, parent, _, _ = make(interval_s=5.0, retry_initial_s=1.0)
    events: list[dict[str, Any]] = []
    wb._log = Logger(observer=cast(ILogObserver, events.append))
    wb.startService()
    parent.down = True
    channels(wb)[0].upsert(Row("a", 1))
    clock.advance(5.0)
    clock.advance(1.0)
    parent.down = False
    clock.advance(2.0)
    failures = [e for e in events if e["log_level"] in (LogLevel.critical, LogLevel.error, LogLevel.warn)]
    assert [e["log_level"] for e in failures] == [LogLevel.error, LogLevel.warn]
    assert isinstance(failures[0]["log_failure"].value, DatabaseDownError)
    assert "log_failure" not in failures[1]
    assert (failures[1]["failures"], failures[1]["error"], failures[1]["delay"]) == (2, "parent", 2.0)
    resumed = [e for e in events if e["log_level"] is LogLevel.info]
    assert [e["failures"] for e in resumed] == [2]


def test_a_refused_row_is_dead_lettered_and_its_neighbours_are_written() -> None:
    wb, clock, parent, child, _ = make(interval_s=5.0)
    events: list[dict[str, Any]] = []
    wb._log = Logger(observer=cast(ILogObserver, events.append))
    wb.startService()
    p, c = channels(wb)
    parent.refused = frozenset({666})
    for n in range(10):
        p.upsert(Row(f"k{n}", 666 if n == 6 else n))
        c.upsert(Row(f"c{n}", n))
    clock.advance(5.0)
    assert parent.rows == {f"k{n}": n for n in range(10) if n != 6}
    assert child.rows == {f"c{n}": n for n in range(10)}
    assert wb.dead_letters == {"parent": 1}
    assert wb.consecutive_failures == 0
    assert wb.failed_flushes_total == 0
    assert wb.written_total == 19
    assert wb.depth == 0
    (letter,) = [e for e in events if e["log_level"] is LogLevel.error]
    assert (letter["table"], letter["key"]) == ("parent", "'k6'")
    assert letter["reason"] == "ValueError: value out of range"
    clock.advance(5.0)  # not retried
    assert wb.dead_letters == {"parent": 1}
    assert next_delay(clock) == 5.0


def test_every_refused_row_of_a_batch_is_found() -> None:
    wb, clock, parent, _, log = make()
    wb.startService()
    p, _ = channels(wb)
    parent.refused = frozenset({0, 7, 8, 31})
    for n in range(32):
        p.upsert(Row(f"k{n}", n))
    clock.advance(5.0)
    assert sorted(parent.rows.values()) == [n for n in range(32) if n not in {0, 7, 8, 31}]
    assert wb.dead_letters == {"parent": 4}
    written = [row for _, op, rows in log if op == "upsert" for row in rows]
    assert len(written) == len(set(written)) == 28  # each good row written once


def test_dead_letters_are_named_by_table_and_shown_by_key_text() -> None:
    clock = Clock()
    log: list[tuple[str, str, tuple[object, ...]]] = []
    sink = RecordingSink("history", log, refused=frozenset({1}))
    wb = WriteBehind(clock, SyncRunner())
    history = wb.channel(
        "history", sink, lambda row: f"calls/{row.key}", table_of=lambda key: key.partition("/")[0],
        key_text=lambda key: key.partition("/")[0] + "/" + "*" * len(key.partition("/")[2]),
    )  # fmt: skip
    events: list[dict[str, Any]] = []
    wb._log = Logger(observer=cast(ILogObserver, events.append))
    wb.startService()
    history.upsert(Row("secret", 1))
    clock.advance(5.0)
    assert wb.dead_letters == {"calls": 1}
    (letter,) = [e for e in events if e["log_level"] is LogLevel.error]
    assert letter["key"] == "calls/******"


def test_a_database_down_while_isolating_requeues_only_what_was_not_settled() -> None:
    wb, clock, parent, _, log = make()
    wb.startService()
    p, _ = channels(wb)
    parent.refused = frozenset({3})
    for n in range(4):
        p.upsert(Row(f"k{n}", n))
    # the whole batch fails (row fault), the first half is written, then the database goes down
    parent.down_after = 2
    clock.advance(5.0)
    assert wb.consecutive_failures == 1
    assert parent.rows == {"k0": 0, "k1": 1}
    assert p.pending("k0") is None and p.pending("k1") is None
    assert p.pending("k2") == Row("k2", 2) and p.pending("k3") == Row("k3", 3)
    parent.down, parent.down_after = False, None
    clock.advance(1.0)
    assert parent.rows == {"k0": 0, "k1": 1, "k2": 2}
    assert wb.dead_letters == {"parent": 1}
    written = [row for _, op, rows in log if op == "upsert" for row in rows]
    assert sorted(cast(Row, row).key for row in written) == ["k0", "k1", "k2"]


def test_a_channel_written_before_the_database_went_down_is_not_written_again() -> None:
    wb, clock, _, child, log = make()
    wb.startService()
    p, c = channels(wb)
    p.upsert(Row("p", 1))
    c.upsert(Row("c", 1))
    child.down = True
    clock.advance(5.0)
    assert wb.consecutive_failures == 1
    assert p.pending("p") is None
    assert c.pending("c") == Row("c", 1)
    child.down = False
    clock.advance(1.0)
    assert log == [("parent", "upsert", (Row("p", 1),)), ("child", "upsert", (Row("c", 1),))]


@attrs.define
class ScriptedSink:
    """A sink whose calls fail with whatever ``failure`` says for the keys written."""

    failure: Callable[[Sequence[str]], Exception | None]
    rows: dict[str, int] = attrs.field(factory=dict)

    def upsert(self, values: Sequence[Row], /) -> None:
        error = self.failure([row.key for row in values])
        if error is not None:
            raise error
        self.rows.update({row.key: row.value for row in values})

    def delete(self, keys: Sequence[str], /) -> None:
        error = self.failure(keys)
        if error is not None:
            raise error
        for key in keys:
            self.rows.pop(key, None)


@pytest.mark.parametrize(
    "error",
    [
        OperationalError("INSERT ...", None, Exception("connection refused")),
        DatabaseDownError("down"),
    ],
)
def test_a_database_fault_is_never_dead_lettered(error: Exception) -> None:
    clock = Clock()
    wb = WriteBehind(clock, SyncRunner())
    sink = ScriptedSink(lambda _: error)
    channel = wb.channel("t", sink, key_of)
    wb.startService()
    channel.upsert(Row("a", 1))
    channel.upsert(Row("b", 1))
    clock.advance(5.0)
    assert wb.dead_letters == {}
    assert wb.consecutive_failures == 1
    assert wb.depth == 2


def test_a_refused_delete_is_dead_lettered_too() -> None:
    clock = Clock()
    wb = WriteBehind(clock, SyncRunner())
    refused = IntegrityError("DELETE ...", None, ValueError("still referenced"))
    sink = ScriptedSink(lambda keys: refused if "b" in keys else None, rows={"a": 1, "b": 2})
    channel = wb.channel("t", sink, key_of)
    wb.startService()
    channel.delete("a")
    channel.delete("b")
    clock.advance(5.0)
    assert sink.rows == {"b": 2}
    assert wb.dead_letters == {"t": 1}
    assert wb.depth == 0


def test_depth_is_the_queued_operations_through_upserts_deletes_flushes_and_requeues() -> None:
    runner = ManualRunner()
    wb, clock, parent, _, _ = make(runner, max_pending=100)
    wb.startService()
    p, c = channels(wb)

    def queued() -> int:
        return len(p) + len(c)

    p.upsert(Row("a", 1))
    p.upsert(Row("a", 2))  # the same key: still one operation
    p.delete("a")  # replaces it
    c.delete("x")
    c.upsert(Row("x", 1))
    p.upsert(Row("b", 1))
    assert wb.depth == queued() == 3
    clock.advance(5.0)  # taken into a flush: in flight, not queued
    assert queued() == 0
    assert wb.depth == 3
    p.upsert(Row("b", 2))  # newer than the in-flight one
    p.upsert(Row("d", 1))
    assert wb.depth == 5
    parent.down = True
    runner.release()  # failed: requeued, the newer "b" kept
    assert wb.depth == queued() == 4
    parent.down = False
    clock.advance(1.0)
    runner.release()
    assert wb.depth == queued() == 0
    c.upsert(Row("y", 1))
    assert wb.depth == queued() == 1


def test_reaching_max_pending_across_channels_flushes_early() -> None:
    runner = ManualRunner()
    wb, _, _, _, _ = make(runner, max_pending=3)
    wb.startService()
    p, c = channels(wb)
    p.upsert(Row("a", 1))
    p.upsert(Row("a", 2))  # the same key twice: still one
    c.upsert(Row("b", 1))
    assert runner.held == []
    c.upsert(Row("c", 1))  # the third operation, over two channels
    assert len(runner.held) == 1
    assert wb.depth == 3


def test_deletes_reaching_max_pending_flush_early() -> None:
    runner = ManualRunner()
    wb, _, _, _, _ = make(runner, max_pending=2)
    wb.startService()
    p, _ = channels(wb)
    p.delete("a")
    p.delete("a")  # the same key twice: still one
    assert runner.held == []
    p.delete("b")
    assert len(runner.held) == 1
    assert wb.depth == 2


def test_an_insert_deleted_before_a_flush_writes_nothing() -> None:
    wb, clock, parent, _, log = make()
    wb.startService()
    p, _ = channels(wb)
    p.insert(Row("new", 1))
    p.upsert(Row("new", 2))  # still unwritten: still nothing in the store
    assert wb.depth == 1
    p.delete("new")
    assert wb.depth == 0
    assert p.pending("new") is None
    clock.advance(5.0)
    assert log == []
    assert wb.written_total == 0
    assert parent.rows == {}


def test_an_insert_written_by_a_flush_is_deleted_by_the_next_one() -> None:
    wb, clock, parent, _, log = make()
    wb.startService()
    p, _ = channels(wb)
    p.insert(Row("new", 1))
    clock.advance(5.0)
    p.delete("new")
    assert p.pending("new") is DELETED
    clock.advance(5.0)
    assert log == [("parent", "upsert", (Row("new", 1),)), ("parent", "delete", ("new",))]
    assert parent.rows == {}


def test_an_insert_over_a_queued_operation_is_an_upsert() -> None:
    wb, clock, parent, _, log = make()
    wb.startService()
    p, _ = channels(wb)
    parent.rows["a"] = 0  # stored before; its delete is queued
    p.delete("a")
    p.insert(Row("a", 1))
    p.delete("a")
    assert p.pending("a") is DELETED
    clock.advance(5.0)
    assert log == [("parent", "delete", ("a",))]
    assert parent.rows == {}


def test_an_insert_taken_by_a_running_flush_is_deleted_by_the_next_one() -> None:
    runner = ManualRunner()
    wb, clock, parent, _, log = make(runner)
    wb.startService()
    p, _ = channels(wb)
    p.insert(Row("new", 1))
    clock.advance(5.0)
    assert wb.flushing
    p.delete("new")  # the row is being written: its delete must follow
    runner.release()
    clock.advance(5.0)
    runner.release()
    assert log == [("parent", "upsert", (Row("new", 1),)), ("parent", "delete", ("new",))]
    assert parent.rows == {}


def test_a_key_whose_write_failed_is_deleted_even_when_inserted_again() -> None:
    runner = ManualRunner()
    wb, clock, parent, _, log = make(runner)
    wb.startService()
    p, _ = channels(wb)
    p.insert(Row("new", 1))
    clock.advance(5.0)
    p.insert(Row("new", 2))  # queued during the flush; the failed write may have left a row
    parent.down = True
    runner.release()
    assert p.pending("new") == Row("new", 2)
    p.delete("new")
    assert p.pending("new") is DELETED
    parent.down = False
    clock.advance(1.0)
    runner.release()
    assert log == [("parent", "delete", ("new",))]
    assert wb.depth == 0
