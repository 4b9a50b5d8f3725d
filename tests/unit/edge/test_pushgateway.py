"""Concurrency, queue bound and abort of the push gateway client, on task.Clock."""

from __future__ import annotations

import attrs
from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock

from scaserver.edge.pushgateway import Delivery, PushGatewayClient
from scaserver.push.gateway import CallInfo, Outcome, PushRequest, PushType, RetryPolicy
from scaserver.push.settings import PushSettings


@attrs.frozen
class FakeResponse:
    code: int


class FakeHttp:
    def __init__(self) -> None:
        self.pending: list[Deferred[object]] = []

    def post(self, url: str, *, data: bytes, headers: dict[bytes, list[bytes]]) -> Deferred[object]:
        waiting: Deferred[object] = Deferred()
        self.pending.append(waiting)
        return waiting

    def read(self, response: object) -> Deferred[bytes]:
        return succeed(b"")


def request(n: int, kind: PushType = PushType.CALL, park: str = "p-1") -> PushRequest:
    call = CallInfo("c", park, "sip:a@x", "sip:b@x")
    return PushRequest(f"id{n}", kind, "fcm", "T", "", "sip:b@x", 10, 0.0, call=call)


def client(http: FakeHttp, clock: Clock, **push: int) -> PushGatewayClient:
    policy = RetryPolicy(PushSettings(gateway_url="http://gw", **push))  # type: ignore[arg-type]
    return PushGatewayClient(policy, clock, http.post, http.read, random=lambda: 0.5)


def results(deferreds: list[Deferred[Delivery]]) -> list[Delivery]:
    out: list[Delivery] = []
    for d in deferreds:
        d.addCallback(out.append)
    return out


def test_inflight_limit_queue_bound_and_priority() -> None:
    http, clock = FakeHttp(), Clock()
    gw = client(http, clock, max_inflight=1, max_queue=2)
    first = gw.send(request(1))
    refresh = gw.send(request(2, PushType.REG_REFRESH))
    urgent = gw.send(request(3, PushType.CANCEL))
    dropped = results([gw.send(request(4))])
    assert len(http.pending) == 1 and gw.inflight == 1
    assert dropped[0].dropped and dropped[0].answer.outcome is Outcome.RETRY
    order = results([first, urgent, refresh])
    http.pending[0].callback(FakeResponse(202))
    assert len(http.pending) == 2  # the cancel goes before the reg-refresh
    http.pending[1].callback(FakeResponse(202))
    http.pending[2].callback(FakeResponse(202))
    assert [d.request.id for d in order] == ["id1", "id3", "id2"]


def test_timeout_and_retry_on_clock_then_abort() -> None:
    http, clock = FakeHttp(), Clock()
    gw = client(http, clock, max_attempts=3)
    done = results([gw.send(request(1))])
    clock.advance(2.0)  # request_timeout
    assert done == [] and len(http.pending) == 1
    clock.advance(0.2)  # backoff 200 ms
    assert len(http.pending) == 2
    gw.abort("p-1")
    clock.advance(2.0)
    assert done and done[0].attempts == 2 and done[0].answer.outcome is Outcome.RETRY


def test_abort_drops_waiting_pushes() -> None:
    http, clock = FakeHttp(), Clock()
    gw = client(http, clock, max_inflight=1)
    gw.send(request(1, park="p-1"))
    waiting = results([gw.send(request(2, park="p-2"))])
    gw.abort("p-2")
    assert waiting[0].dropped
    http.pending[0].callback(FakeResponse(202))
    assert len(http.pending) == 1  # nothing left to run


def test_aborted_calls_are_forgotten_once_their_pushes_finish() -> None:
    http, clock = FakeHttp(), Clock()
    gw = client(http, clock, max_attempts=3)
    done = results([gw.send(request(1, park="p-9"))])
    gw.abort("p-9")
    gw.abort("never-pushed")
    assert gw._aborted == {"p-9"}
    http.pending[0].callback(FakeResponse(202))
    assert done and done[0].answer.outcome is Outcome.SENT
    assert gw._aborted == set() and gw._unfinished == {}
