"""``GET /health`` and ``GET /ready`` for load balancers and orchestrators.

``/health`` (liveness) answers 200 whenever the reactor turns.  ``/ready`` (readiness)
answers 200 only when the start-up restore has run, the database takes a write-capable
round trip through the database pool (never on the SIP path) and the write-behind queue is
below its limit; otherwise 503.  Both bodies are JSON; ``/ready`` names each check and
what failed.  Neither is behind the RPC token: they reveal no state beyond up or down.

Concurrent ``/ready`` requests share one database probe in flight, so a slow or stopped
database never takes more than one pool thread.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Final, cast

import attrs
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.iweb import IRequest
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

from scaserver.edge.http import Request

PROBE_TIMEOUT_S: Final = 2.0

_log = Logger(namespace="scaserver.health")


@attrs.frozen
class Check:
    ok: bool
    detail: str = ""


@attrs.define
class Readiness:
    """The three readiness checks over the running server's parts."""

    clock: IReactorTime
    probe_database: Callable[[], Deferred[None]]  # the write probe, run on the database pool
    restored: Callable[[], bool]
    queue_depth: Callable[[], int]
    queue_limit: int
    timeout_s: float = PROBE_TIMEOUT_S
    _inflight: list[Deferred[Check]] | None = None

    def database(self) -> Deferred[Check]:
        """The result of the probe in flight, or of a new one."""
        waiting: Deferred[Check] = Deferred()
        if self._inflight is not None:
            self._inflight.append(waiting)
            return waiting
        self._inflight = [waiting]
        probe = self.probe_database()
        probe.addTimeout(self.timeout_s, self.clock)

        def passed(_: None) -> Check:
            return Check(True)

        def failed(failure: Failure) -> Check:
            kind = failure.type.__name__ if failure.type is not None else "error"
            return Check(False, f"{kind}: {failure.getErrorMessage()}".strip())

        def answer(check: Check) -> None:
            waiters, self._inflight = self._inflight or [], None
            for waiter in waiters:
                waiter.callback(check)

        probe.addCallbacks(passed, failed).addCallback(answer)
        return waiting

    def check(self) -> Deferred[dict[str, Check]]:
        restored = Check(True) if self.restored() else Check(False, "start-up restore has not run")
        depth = self.queue_depth()
        queue = (
            Check(True, f"{depth} pending")
            if depth < self.queue_limit
            else Check(False, f"{depth} pending, limit {self.queue_limit}")
        )
        return self.database().addCallback(
            lambda database: {"restored": restored, "database": database, "write_behind": queue}
        )

    def ready(self) -> Deferred[bool]:
        """Whether every check passes (sd_notify's READY=1)."""
        return self.check().addCallback(lambda checks: all(check.ok for check in checks.values()))


def _json(request: Request, status: int, body: Mapping[str, object]) -> bytes:
    request.setResponseCode(status)
    request.setHeader(b"Content-Type", b"application/json")
    request.setHeader(b"Cache-Control", b"no-store")
    return json.dumps(body).encode("utf-8") + b"\n"


class HealthResource(Resource):
    """``GET /health``: 200 and ``{"status": "ok", ...}`` while the process serves."""

    isLeaf = True  # noqa: N815 (Twisted's spelling)

    def __init__(self, version: str, started_at: float, seconds: Callable[[], float]) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self._version, self._started_at, self._seconds = version, started_at, seconds

    def render_GET(self, raw: IRequest) -> bytes:  # noqa: N802 (Twisted's spelling)
        uptime = round(self._seconds() - self._started_at, 3)
        return _json(cast(Request, raw), 200, {"status": "ok", "version": self._version, "uptime_s": uptime})


class ReadyResource(Resource):
    """``GET /ready``: 200 ``{"status": "ready", "checks": {...}}`` or 503 ``"not ready"``."""

    isLeaf = True  # noqa: N815 (Twisted's spelling)

    def __init__(self, readiness: Readiness) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self._readiness = readiness

    def render_GET(self, raw: IRequest) -> int:  # noqa: N802 (Twisted's spelling)
        request = cast(Request, raw)
        finished = [False]
        request.notifyFinish().addErrback(lambda _: finished.__setitem__(0, True))

        def respond(checks: dict[str, Check]) -> None:
            if finished[0]:
                return
            ready = all(check.ok for check in checks.values())
            failing = [name for name, check in checks.items() if not check.ok]
            if failing:
                _log.info(
                    "readiness: not ready ({failing})",
                    failing=", ".join(f"{name}: {checks[name].detail}" for name in failing),
                )
            body = {
                "status": "ready" if ready else "not ready",
                "failing": failing,
                "checks": {name: attrs.asdict(check) for name, check in checks.items()},
            }
            request.write(_json(request, 200 if ready else 503, body))
            request.finish()

        def error(failure: Failure) -> None:
            _log.failure("readiness check failed", failure=failure)
            if not finished[0]:
                request.write(_json(request, 503, {"status": "not ready", "failing": ["internal"]}))
                request.finish()

        self._readiness.check().addCallback(respond).addErrback(error)
        return NOT_DONE_YET
