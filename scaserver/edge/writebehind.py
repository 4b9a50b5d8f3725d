"""Write-behind queue between the engines' in-memory state and the repositories.

Engines never wait for the database (STYLE.md P6, sca.md section 10.3): a state change is
recorded here with ``Channel.upsert(value)`` or ``Channel.delete(key)``, which only touch a
dict on the reactor thread and return at once.  Every ``interval_s`` seconds on the
injected clock (``IReactorTime``; ``task.Clock`` in tests) the pending operations are
written in one flush through the database pool (``edge/dbpool.py``), in a worker thread.

Rules:

* Coalescing by key: the last operation for a key wins; a delete after an upsert collapses
  into the delete, an upsert after a delete replaces it.  A value the caller knows has no row
  (a new subscription's dialog) is queued with ``Channel.insert``: deleted before a flush
  takes it, its key is dropped from the queue, and nothing is written for it.
* One flush at a time.  A flush writes deletes first (channels in reverse registration order,
  so children before parents) and then upserts (registration order, parents first).
* Nothing is dropped while the database is down.  When a flush fails because of the
  database (down, locked, restarting: ``store.engine.is_row_fault`` is false) its operations
  not yet written (a channel's part is written in one transaction, channel after channel)
  go back into the queue under any newer operation for the same key, and the next attempt
  comes after an exponential back-off (``retry_initial_s`` doubled per failure, capped at
  ``retry_max_s``).  Upserts and deletes are idempotent, so a repeated batch is harmless.
* One bad row never blocks the others.  When a channel's write fails because of the rows
  themselves (a value or constraint the database refuses: ``is_row_fault``), the channel's
  operations are written again in halves, each half in its own transaction, down to the
  single operations that fail; those are dead letters: logged at error level with the
  table, key and reason, counted in ``dead_letters`` by table, and not retried.  Everything
  else of the batch is written.  Should the database go down in the middle of this, the
  operations already written or dead-lettered are settled and only the others are re-queued,
  so an append-only row is never written twice.
* The queue is bounded by ``max_pending`` in the sense that reaching it starts a flush early
  (if none is running and the database is not in back-off); it never discards writes.
* ``stopService`` cancels the timer, waits for a running flush and makes one final flush.

``depth``, ``last_flush_latency_s``, ``consecutive_failures``, ``dead_letters`` and the
counters are read by the metrics collectors.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Hashable, Sequence
from typing import Final, Generic, ParamSpec, Protocol, TypeVar

import attrs
from twisted.application.service import Service
from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger, LogLevel
from twisted.python.failure import Failure
from typing_extensions import override

from scaserver.edge.stack import DelayedCall, TimerClock, call_later
from scaserver.store.engine import is_row_fault

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")
K_contra = TypeVar("K_contra", contravariant=True)
V_contra = TypeVar("V_contra", contravariant=True)
P = ParamSpec("P")
T = TypeVar("T")


class Sink(Protocol[K_contra, V_contra]):
    """What a channel writes to: the ``upsert``/``delete`` half of a store repository."""

    def upsert(self, values: Sequence[V_contra], /) -> None: ...

    def delete(self, keys: Sequence[K_contra], /) -> None: ...


class Runner(Protocol):
    """Runs a blocking callable off the reactor thread (``DatabasePool.run``)."""

    def run(self, f: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> Deferred[T]: ...


class _Deleted(enum.Enum):
    DELETED = "deleted"


DELETED = _Deleted.DELETED

_ABSENT: Final = object()


@attrs.frozen
class DeadLetter:
    """An operation the database refused for its own content: it is logged and not retried."""

    table: str
    key: str  # as the channel's ``key_text`` shows it
    reason: str


def _reason(error: BaseException) -> str:
    """What went wrong, without the statement or its parameters."""
    original = getattr(error, "orig", None)
    shown = original if isinstance(original, BaseException) else error
    return f"{type(shown).__name__}: {str(shown).splitlines()[0] if str(shown) else ''}".rstrip(": ")


@attrs.frozen
class _ChannelBatch(Generic[K, V]):
    """One channel's share of a flush: a snapshot handed to the worker thread.

    ``settled`` collects (in the worker thread) the keys written or dead-lettered, so that a
    flush ended by a database failure re-queues only the others; ``dead`` the dead letters.
    Both are read on the reactor thread once the flush has ended.
    """

    channel: Channel[K, V]
    operations: tuple[tuple[K, V | _Deleted], ...]
    settled: set[K] = attrs.field(factory=set, eq=False)
    dead: list[DeadLetter] = attrs.field(factory=list, eq=False)

    def _deletes(self) -> list[tuple[K, V | _Deleted]]:
        return [(key, op) for key, op in self.operations if op is DELETED]

    def _upserts(self) -> list[tuple[K, V | _Deleted]]:
        return [(key, op) for key, op in self.operations if op is not DELETED]

    def _write(self, operations: Sequence[tuple[K, V | _Deleted]]) -> None:
        if not operations:
            return
        if operations[0][1] is DELETED:
            self.channel.sink.delete([key for key, _ in operations])
        else:
            self.channel.sink.upsert([op for _, op in operations if not isinstance(op, _Deleted)])

    def write_deletes(self) -> None:
        self._write_or_isolate(self._deletes())

    def write_upserts(self) -> None:
        self._write_or_isolate(self._upserts())

    def _write_or_isolate(self, operations: Sequence[tuple[K, V | _Deleted]]) -> None:
        """Write ``operations`` in one go; after a row fault, in halves until the operations
        the database refuses are alone.  Any other failure is raised."""
        if not operations:
            return
        try:
            self._write(operations)
        except Exception as error:
            if not is_row_fault(error):
                raise
            if len(operations) == 1:
                key = operations[0][0]
                self.dead.append(
                    DeadLetter(self.channel.table_of(key), self.channel.key_text(key), _reason(error))
                )
            else:
                middle = len(operations) // 2
                self._write_or_isolate(operations[:middle])
                self._write_or_isolate(operations[middle:])
                return
        self.settled.update(key for key, _ in operations)

    def requeue(self) -> None:
        self.channel.requeue([(key, op) for key, op in self.operations if key not in self.settled])


class Channel(Generic[K, V]):
    """The queue of one repository; created by ``WriteBehind.channel``."""

    def __init__(
        self,
        owner: WriteBehind,
        name: str,
        sink: Sink[K, V],
        key_of: Callable[[V], K],
        *,
        table_of: Callable[[K], str] | None = None,
        key_text: Callable[[K], str] = repr,
    ) -> None:
        self.name = name
        self.sink = sink
        self.table_of: Callable[[K], str] = table_of or (lambda _: name)
        self.key_text = key_text
        self._owner = owner
        self._key_of = key_of
        self._pending: dict[K, V | _Deleted] = {}
        # The pending keys queued by ``insert`` (no row in the store, none being written).
        self._fresh: set[K] = set()

    def __len__(self) -> int:
        return len(self._pending)

    def upsert(self, value: V) -> None:
        """Record that ``value`` must be stored; never blocks, never fails."""
        self._put(self._key_of(value), value)

    def insert(self, value: V) -> None:
        """Record that ``value`` must be stored, its key being new: no row of it is stored
        or being written (a new subscription's dialog).  Deleted before a flush takes it, it
        leaves nothing to write.  A key already queued is upserted as by :meth:`upsert`."""
        key = self._key_of(value)
        if key not in self._pending:
            self._fresh.add(key)
        self._put(key, value)

    def delete(self, key: K) -> None:
        """Record that the row of ``key`` must be removed; never blocks, never fails."""
        fresh = self._fresh
        if fresh and key in fresh:  # inserted and gone within one flush: nothing to write
            fresh.discard(key)
            del self._pending[key]
            self._owner._queued -= 1
            return
        self._put(key, DELETED)

    def _put(self, key: K, operation: V | _Deleted) -> None:
        pending, owner = self._pending, self._owner
        # Keep the dict ordered by the latest change; a new key adds to the owner's count.
        if pending.pop(key, _ABSENT) is _ABSENT:
            owner._queued += 1
        pending[key] = operation
        if owner._queued >= owner.max_pending:  # else the queue is below its bound (see _enqueued)
            owner._enqueued()

    def pending(self, key: K) -> V | _Deleted | None:
        """The queued operation for ``key`` (``DELETED``, a value) or None."""
        return self._pending.get(key)

    def take(self) -> _ChannelBatch[K, V]:
        batch = _ChannelBatch(self, tuple(self._pending.items()))
        self._owner._queued -= len(self._pending)
        self._pending = {}
        if self._fresh:
            self._fresh = set()  # being written now: a delete must reach the store
        return batch

    def requeue(self, operations: Sequence[tuple[K, V | _Deleted]]) -> None:
        """Put a failed batch back; an operation enqueued since then wins over the old one."""
        newer = self._pending
        if self._fresh:  # a failed write may have left a row behind: a delete must be written
            self._fresh.difference_update(key for key, _ in operations)
        self._pending = {key: op for key, op in operations if key not in newer}
        self._pending.update(newer)
        self._owner._queued += len(self._pending) - len(newer)


@attrs.frozen
class _Batch:
    channels: tuple[_ChannelBatch[Hashable, object], ...]

    def __len__(self) -> int:
        return sum(len(c.operations) for c in self.channels)

    def write(self) -> None:
        """Runs in a worker thread: deletes children first, then upserts parents first.

        A row fault on a channel's part is isolated (``_ChannelBatch._write_or_isolate``) and
        the flush goes on; any other failure ends the flush with that failure.
        """
        for channel in reversed(self.channels):
            channel.write_deletes()
        for channel in self.channels:
            channel.write_upserts()

    @property
    def dead(self) -> list[DeadLetter]:
        return [letter for channel in self.channels for letter in channel.dead]


class WriteBehind(Service):
    """The write-behind queue service.  Register channels before ``startService``."""

    _log = Logger()

    def __init__(
        self,
        clock: TimerClock,
        runner: Runner,
        *,
        interval_s: float = 5.0,
        retry_initial_s: float = 1.0,
        retry_max_s: float = 60.0,
        max_pending: int = 10_000,
    ) -> None:
        if interval_s <= 0 or retry_initial_s <= 0 or retry_max_s < retry_initial_s or max_pending < 1:
            raise ValueError("write-behind intervals must be positive and retry_max_s >= retry_initial_s")
        self._clock = clock
        self._runner = runner
        self.interval_s = interval_s
        self.retry_initial_s = retry_initial_s
        self.retry_max_s = retry_max_s
        self.max_pending = max_pending
        self._channels: list[Channel[Hashable, object]] = []
        self._queued = 0  # operations queued in the channels (their lengths' sum)
        self._timer: DelayedCall | None = None
        self._in_flight: _Batch | None = None
        self._flushing = False
        self._waiters: list[Deferred[None]] = []
        self._stopping = False
        self.consecutive_failures = 0
        self.last_flush_latency_s: float | None = None
        self.flushes_total = 0
        self.failed_flushes_total = 0
        self.written_total = 0
        #: Operations dead-lettered since start, by table.
        self.dead_letters: dict[str, int] = {}

    def channel(
        self,
        name: str,
        sink: Sink[K, V],
        key_of: Callable[[V], K],
        *,
        table_of: Callable[[K], str] | None = None,
        key_text: Callable[[K], str] = repr,
    ) -> Channel[K, V]:
        """A new channel for one repository.  Register parents (lines) before children (members).

        ``table_of`` names the table of a key in dead letters (default: the channel's name);
        ``key_text`` shows a key in the dead-letter log line (default ``repr``; a key holding
        a secret must be shown masked).
        """
        if any(c.name == name for c in self._channels):
            raise ValueError(f"write-behind channel {name!r} registered twice")
        channel: Channel[K, V] = Channel(self, name, sink, key_of, table_of=table_of, key_text=key_text)
        self._channels.append(channel)  # type: ignore[arg-type]
        return channel

    @property
    def depth(self) -> int:
        """Operations not yet written: queued plus the ones in the running flush."""
        # _queued is the sum of the channels' lengths, kept by the channels as they change
        # (summed here, it cost a pass over the channels on every enqueued write).
        return self._queued + (len(self._in_flight) if self._in_flight is not None else 0)

    @property
    def flushing(self) -> bool:
        return self._flushing

    @override
    def startService(self) -> None:
        self.running = True
        self._stopping = False
        self._schedule(self.interval_s)

    @override
    def stopService(self) -> Deferred[None]:
        """Cancel the timer, wait for a running flush, then write what is left once."""
        self.running = False
        self._stopping = True
        self._cancel_timer()
        done: Deferred[None] = Deferred()

        def final(_: object) -> None:
            self._flush_once().addBoth(report)

        def report(result: object) -> None:
            if isinstance(result, Failure):
                self._log.failure(
                    "final write-behind flush failed; {count} writes were not stored",
                    failure=result,
                    count=self.depth,
                )
            done.callback(None)

        self.wait_idle().addCallback(final)
        return done

    def flush(self) -> Deferred[None]:
        """Write everything queued now (after a running flush); fails if the database does.

        A failure here also re-queues the operations and schedules the back-off retry.
        """
        return self.wait_idle().addCallback(lambda _: self._flush_once())

    def wait_idle(self) -> Deferred[None]:
        """Fires (with None) once no flush is running, whatever the running one's outcome."""
        if not self._flushing:
            return succeed(None)
        waiter: Deferred[None] = Deferred()
        self._waiters.append(waiter)
        return waiter

    def _flush_ended(self) -> None:
        self._in_flight = None
        self._flushing = False
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            waiter.callback(None)

    def _enqueued(self) -> None:
        # Called by the channels only once ``_queued`` reaches ``max_pending``: below it the
        # depth is below the bound too, as nothing is in flight when no flush runs.
        if (
            self.running
            and not self._flushing
            and self.consecutive_failures == 0
            and self.depth >= self.max_pending
        ):
            self._log.warn("write-behind queue reached {depth} writes; flushing early", depth=self.depth)
            self._cancel_timer()
            self._timer_fired()

    def _schedule(self, delay: float) -> None:
        self._cancel_timer()
        if not self._stopping:
            self._timer = call_later(self._clock, delay, self._timer_fired)

    def _cancel_timer(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def _timer_fired(self) -> None:
        self._timer = None
        if self._flushing:
            return  # the running flush reschedules when it ends
        self._flush_once().addErrback(lambda _: None)  # logged and rescheduled in _flush_once

    def _flush_once(self) -> Deferred[None]:
        batch = _Batch(tuple(c.take() for c in self._channels))
        if len(batch) == 0:
            if not self._stopping and self.running and self._timer is None:
                self._schedule(self.interval_s)
            return succeed(None)
        self._in_flight = batch
        started = self._clock.seconds()
        self._flushing = True

        def written(_: None) -> None:
            self.last_flush_latency_s = self._clock.seconds() - started
            self.flushes_total += 1
            self.written_total += len(batch) - self._dead_lettered(batch)
            if self.consecutive_failures:
                self._log.info(
                    "database writes resumed after {failures} failed flushes",
                    failures=self.consecutive_failures,
                )
            self.consecutive_failures = 0
            self._log.debug("write-behind flushed {count} writes", count=len(batch))
            if self.running and not self._stopping:
                self._schedule(self.interval_s)
            self._flush_ended()

        def failed(failure: Failure) -> Failure:
            settled = sum(len(channel_batch.settled) for channel_batch in batch.channels)
            self.written_total += settled - self._dead_lettered(batch)
            for channel_batch in batch.channels:
                channel_batch.requeue()
            self.consecutive_failures += 1
            self.failed_flushes_total += 1
            delay = self.retry_delay(self.consecutive_failures)
            if self.consecutive_failures == 1:  # the traceback once per outage, then a line per retry
                self._log.failure(
                    "write-behind flush of {count} writes failed; retry in {delay}s",
                    failure=failure,
                    level=LogLevel.error,
                    count=len(batch),
                    delay=delay,
                )
            else:
                self._log.warn(
                    "write-behind flush of {count} writes failed ({failures} in a row: {error}); "
                    "retry in {delay}s",
                    count=len(batch),
                    failures=self.consecutive_failures,
                    error=failure.getErrorMessage(),
                    delay=delay,
                )
            if self.running and not self._stopping:
                self._schedule(delay)
            self._flush_ended()
            return failure

        result = self._runner.run(batch.write)
        result.addCallbacks(written, failed)
        return result

    def _dead_lettered(self, batch: _Batch) -> int:
        """Log and count the dead letters of a finished flush; returns how many."""
        dead = batch.dead
        for letter in dead:
            self.dead_letters[letter.table] = self.dead_letters.get(letter.table, 0) + 1
            self._log.error(
                "write-behind dead letter: {table} {key} not stored and not retried: {reason}",
                table=letter.table,
                key=letter.key,
                reason=letter.reason,
            )
        return len(dead)

    def retry_delay(self, failures: int) -> float:
        """Back-off after ``failures`` consecutive failed flushes: doubling, capped."""
        exponent = min(failures - 1, 62)
        return float(min(self.retry_initial_s * (2.0**exponent), self.retry_max_s))
