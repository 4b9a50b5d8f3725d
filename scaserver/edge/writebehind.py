"""Write-behind queue between the engines' in-memory state and the repositories.

Engines never wait for the database (STYLE.md P6, sca.md section 10.3): a state change is
recorded here with ``Channel.upsert(value)`` or ``Channel.delete(key)``, which only touch a
dict on the reactor thread and return at once.  Every ``interval_s`` seconds on the
injected clock (``IReactorTime``; ``task.Clock`` in tests) the pending operations are
written in one flush through the database pool (``edge/dbpool.py``), in a worker thread.

Rules:

* Coalescing by key: the last operation for a key wins; a delete after an upsert collapses
  into the delete, an upsert after a delete replaces it.
* One flush at a time.  A flush writes deletes first (channels in reverse registration order,
  so children before parents) and then upserts (registration order, parents first).
* Nothing is ever dropped.  When a flush fails (database down, lock time-out) its operations
  go back into the queue under any newer operation for the same key, and the next attempt
  comes after an exponential back-off (``retry_initial_s`` doubled per failure, capped at
  ``retry_max_s``).  Upserts and deletes are idempotent, so a repeated batch is harmless.
* The queue is bounded by ``max_pending`` in the sense that reaching it starts a flush early
  (if none is running and the database is not in back-off); it never discards writes.
* ``stopService`` cancels the timer, waits for a running flush and makes one final flush.

``depth``, ``last_flush_latency_s``, ``consecutive_failures`` and the counters are read by
the metrics collectors.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Hashable, Sequence
from typing import Generic, ParamSpec, Protocol, TypeVar

import attrs
from twisted.application.service import Service
from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger, LogLevel
from twisted.python.failure import Failure
from typing_extensions import override

from scaserver.edge.stack import DelayedCall, TimerClock, call_later

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


@attrs.frozen
class _ChannelBatch(Generic[K, V]):
    """One channel's share of a flush: an immutable snapshot handed to the worker thread."""

    channel: Channel[K, V]
    operations: tuple[tuple[K, V | _Deleted], ...]

    def write_deletes(self) -> None:
        keys = [key for key, op in self.operations if op is DELETED]
        if keys:
            self.channel.sink.delete(keys)

    def write_upserts(self) -> None:
        values = [op for _, op in self.operations if not isinstance(op, _Deleted)]
        if values:
            self.channel.sink.upsert(values)

    def requeue(self) -> None:
        self.channel.requeue(self.operations)


class Channel(Generic[K, V]):
    """The queue of one repository; created by ``WriteBehind.channel``."""

    def __init__(self, owner: WriteBehind, name: str, sink: Sink[K, V], key_of: Callable[[V], K]) -> None:
        self.name = name
        self.sink = sink
        self._owner = owner
        self._key_of = key_of
        self._pending: dict[K, V | _Deleted] = {}

    def __len__(self) -> int:
        return len(self._pending)

    def upsert(self, value: V) -> None:
        """Record that ``value`` must be stored; never blocks, never fails."""
        key = self._key_of(value)
        self._pending.pop(key, None)  # keep the dict ordered by the latest change
        self._pending[key] = value
        self._owner._enqueued()

    def delete(self, key: K) -> None:
        """Record that the row of ``key`` must be removed; never blocks, never fails."""
        self._pending.pop(key, None)
        self._pending[key] = DELETED
        self._owner._enqueued()

    def pending(self, key: K) -> V | _Deleted | None:
        """The queued operation for ``key`` (``DELETED``, a value) or None."""
        return self._pending.get(key)

    def take(self) -> _ChannelBatch[K, V]:
        batch = _ChannelBatch(self, tuple(self._pending.items()))
        self._pending = {}
        return batch

    def requeue(self, operations: Sequence[tuple[K, V | _Deleted]]) -> None:
        """Put a failed batch back; an operation enqueued since then wins over the old one."""
        newer = self._pending
        self._pending = {key: op for key, op in operations if key not in newer}
        self._pending.update(newer)


@attrs.frozen
class _Batch:
    channels: tuple[_ChannelBatch[Hashable, object], ...]

    def __len__(self) -> int:
        return sum(len(c.operations) for c in self.channels)

    def write(self) -> None:
        """Runs in a worker thread: deletes children first, then upserts parents first."""
        for channel in reversed(self.channels):
            channel.write_deletes()
        for channel in self.channels:
            channel.write_upserts()


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

    def channel(self, name: str, sink: Sink[K, V], key_of: Callable[[V], K]) -> Channel[K, V]:
        """A new channel for one repository.  Register parents (lines) before children (members)."""
        if any(c.name == name for c in self._channels):
            raise ValueError(f"write-behind channel {name!r} registered twice")
        channel: Channel[K, V] = Channel(self, name, sink, key_of)
        self._channels.append(channel)  # type: ignore[arg-type]
        return channel

    @property
    def depth(self) -> int:
        """Operations not yet written: queued plus the ones in the running flush."""
        queued = sum(len(c) for c in self._channels)
        return queued + (len(self._in_flight) if self._in_flight is not None else 0)

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
            self.written_total += len(batch)
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

    def retry_delay(self, failures: int) -> float:
        """Back-off after ``failures`` consecutive failed flushes: doubling, capped."""
        exponent = min(failures - 1, 62)
        return float(min(self.retry_initial_s * (2.0**exponent), self.retry_max_s))
