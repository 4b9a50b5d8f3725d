"""HTTP client of the push gateway (push-and-parking.md section 5) on treq.

Thin: the body, headers, answer mapping and retry policy are the pure
``scaserver.push.gateway``; this module only posts, times out, waits between attempts on the
injected clock and limits concurrency (``max_inflight`` through a ``DeferredSemaphore``, the
waiting line being the prioritised, bounded :class:`~scaserver.push.gateway.PushQueue`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, cast

import attrs
import treq
from treq.client import HTTPClient
from twisted.internet import task
from twisted.internet.defer import Deferred, DeferredSemaphore, inlineCallbacks
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.client import Agent, HTTPConnectionPool
from twisted.web.iweb import IAgent

from scaserver.push.gateway import (
    Answer,
    Outcome,
    PushQueue,
    PushRequest,
    RetryPolicy,
    decode,
    encode,
    transport_error,
)
from scaserver.sip.actions import Fact

_log = Logger(namespace="scaserver.push.gateway")


class Clock(Protocol):
    """The part of ``IReactorTime`` used here: the reactor, or ``task.Clock`` in tests."""

    def seconds(self) -> float: ...

    def callLater(self, delay: float, callable: Callable[..., object], *args: object) -> object: ...  # noqa: N802


class HttpPost(Protocol):
    """``treq.client.HTTPClient.post`` as used here (treq is untyped)."""

    def __call__(self, url: str, *, data: bytes, headers: dict[bytes, list[bytes]]) -> Deferred[object]: ...


class ReadBody(Protocol):
    def __call__(self, response: object) -> Deferred[bytes]: ...


@attrs.frozen
class Delivery:
    """The end of one push: the last answer (``dropped``: never sent, queue full or aborted)."""

    request: PushRequest
    answer: Answer
    attempts: int
    dropped: bool = False


@attrs.frozen
class GatewayActivity(Fact):
    """Fact: an HTTP attempt to the gateway started (``latency_ms`` None) or ended (its
    latency); ``inflight`` attempts are running now (5.3 ``push_inflight``,
    ``push_gateway_latency_seconds``)."""

    inflight: int
    latency_ms: int | None = None


@attrs.define
class _Job:
    request: PushRequest
    deadline: float | None
    done: Deferred[Delivery]
    attempts: int = 0
    started_at: float = 0.0


def treq_client(
    reactor: object, connect_timeout: float, *, persistent: bool = True
) -> tuple[HttpPost, ReadBody]:
    """A treq HTTPClient whose Agent connects with ``connect_timeout`` (section 5.3)."""
    pool = HTTPConnectionPool(reactor, persistent=persistent)  # type: ignore[no-untyped-call]
    agent = Agent(reactor, connectTimeout=connect_timeout, pool=pool)  # type: ignore[no-untyped-call]
    client = HTTPClient(cast(IAgent, agent))
    return cast(HttpPost, client.post), cast(ReadBody, treq.content)


class PushGatewayClient:
    """Sends :class:`PushRequest` values to the gateway with the policy of section 5.3."""

    def __init__(
        self,
        policy: RetryPolicy,
        clock: Clock,
        post: HttpPost,
        read_body: ReadBody,
        *,
        random: Callable[[], float],
        on_retrying: Callable[[PushRequest], None] | None = None,
        on_activity: Callable[[GatewayActivity], None] | None = None,
    ) -> None:
        self._settings, self._policy, self._clock = policy.settings, policy, clock
        self._post, self._read_body, self._random = post, read_body, random
        self._on_retrying, self._on_activity = on_retrying, on_activity
        self._time = cast(IReactorTime, clock)
        self._slots = DeferredSemaphore(self._settings.max_inflight)
        self._queue: PushQueue[_Job] = PushQueue(self._settings.max_queue)
        # Parked calls whose pushes are aborted, kept only while a push of theirs is unfinished.
        self._aborted: set[str] = set()
        self._unfinished: dict[str, int] = {}
        self.inflight = 0

    def send(self, request: PushRequest, deadline: float | None = None) -> Deferred[Delivery]:
        """Queue ``request``; the Deferred fires with its :class:`Delivery` (never errbacks)."""
        job = _Job(request, deadline, Deferred())
        park_id = _park_id(request)
        if park_id is not None:
            self._unfinished[park_id] = self._unfinished.get(park_id, 0) + 1
        self._submit(job)
        return job.done

    def abort(self, park_id: str) -> None:
        """Drop waiting and future retries of the pushes of a parked call (6.5)."""
        if park_id not in self._unfinished:
            return  # nothing of that call is queued or in flight: nothing to remember
        self._aborted.add(park_id)
        for job in self._queue.discard(lambda job: _park_id(job.request) == park_id):
            self._finish(job, transport_error("aborted"), dropped=True)

    def _submit(self, job: _Job) -> None:
        if not self._queue.put(job, job.request.type):
            _log.warn("push queue full, push {id} dropped", id=job.request.id)
            self._finish(job, transport_error("queue full"), dropped=True)
            return
        self._slots.acquire().addCallback(self._run_next)

    def _run_next(self, _: object) -> None:
        job = self._queue.get()
        if job is None:  # its job was aborted while waiting
            self._slots.release()
            return
        self.inflight += 1
        job.started_at = self._clock.seconds()
        if self._on_activity is not None:
            self._on_activity(GatewayActivity(self.inflight))
        self._attempt(job).addBoth(self._attempt_done, job)

    @inlineCallbacks
    def _attempt(self, job: _Job):  # type: ignore[no-untyped-def]
        job.attempts += 1
        encoded = encode(job.request, self._settings)
        headers = {name.encode(): [value.encode()] for name, value in encoded.headers}
        posted = self._post(self._settings.gateway_url, data=encoded.body, headers=headers)
        posted.addTimeout(self._settings.request_timeout, self._time)
        response = yield posted
        body = yield self._read_body(response).addTimeout(self._settings.request_timeout, self._time)
        code: int = getattr(response, "code", 0)
        raw = getattr(response, "headers", None)
        values = raw.getRawHeaders(b"retry-after") if raw is not None else None
        retry_after = values[0].decode("latin-1") if values else None
        return decode(code, retry_after, body, self._clock.seconds())

    def _attempt_done(self, result: Answer | Failure, job: _Job) -> None:
        self.inflight -= 1
        self._slots.release()
        if self._on_activity is not None:
            latency = int((self._clock.seconds() - job.started_at) * 1000 + 0.5)
            self._on_activity(GatewayActivity(self.inflight, max(0, latency)))
        answer = transport_error(result.getErrorMessage()) if isinstance(result, Failure) else result
        if answer.credentials:
            _log.error("push gateway refused our credentials ({status})", status=answer.status)
        elif answer.outcome is Outcome.FAILED:
            _log.warn(
                "push {id} failed: {status} {detail}",
                id=job.request.id,
                status=answer.status,
                detail=answer.detail,
            )
        delay = self._policy.retry_delay(
            job.attempts, answer, self._clock.seconds(), job.deadline, self._random
        )
        if delay is None or _park_id(job.request) in self._aborted:
            self._finish(job, answer)
            return
        if self._on_retrying is not None:
            self._on_retrying(job.request)
        task.deferLater(self._time, delay, self._resubmit, job)

    def _resubmit(self, job: _Job) -> None:
        if _park_id(job.request) in self._aborted:
            self._finish(job, transport_error("aborted"), dropped=True)
            return
        self._submit(job)

    def _finish(self, job: _Job, answer: Answer, *, dropped: bool = False) -> None:
        park_id = _park_id(job.request)
        if park_id is not None:
            left = self._unfinished.get(park_id, 1) - 1
            if left > 0:
                self._unfinished[park_id] = left
            else:
                self._unfinished.pop(park_id, None)
                self._aborted.discard(park_id)
        job.done.callback(Delivery(job.request, answer, job.attempts, dropped))


def _park_id(request: PushRequest) -> str | None:
    return request.call.park_id if request.call is not None else None
