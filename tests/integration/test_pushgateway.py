"""The treq push gateway client against a tiny twisted.web gateway on loopback (section 5)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from typing import Any, Protocol, TypeVar, cast

import attrs
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Site

from scaserver.edge.pushgateway import GatewayActivity, PushGatewayClient, treq_client
from scaserver.push.gateway import CallInfo, Outcome, PushRequest, PushType, RetryPolicy
from scaserver.push.settings import PushSettings

F = TypeVar("F", bound=Callable[..., Any])
ensure_deferred = cast(Callable[[F], F], pytest_twisted.ensureDeferred)
async_yield_fixture = cast(Callable[[F], F], pytest_twisted.async_yield_fixture)


class _Address(Protocol):
    port: int


class _Listening(Protocol):
    def getHost(self) -> _Address: ...  # noqa: N802

    def stopListening(self) -> Deferred[None]: ...  # noqa: N802


class _Reactor(Protocol):
    def listenTCP(self, port: int, factory: object, *, interface: str) -> _Listening: ...  # noqa: N802

    def seconds(self) -> float: ...

    def callLater(self, delay: float, callable: Callable[..., object], *args: object) -> object: ...  # noqa: N802


REACTOR = cast(_Reactor, reactor)


class Gateway(Resource):
    """Answers each POST with the next scripted (status, headers, body); ``None`` hangs."""

    isLeaf = True  # noqa: N815 (Twisted's spelling)

    def __init__(self) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.script: list[tuple[int, dict[str, str], bytes] | None] = []
        self.seen: list[tuple[dict[str, str], dict[str, Any]]] = []

    def render_POST(self, request: Any) -> bytes | int:  # noqa: N802
        headers = {k.decode().lower(): v[0].decode() for k, v in request.requestHeaders.getAllRawHeaders()}
        self.seen.append((headers, json.loads(request.content.read())))
        step = self.script.pop(0) if self.script else (202, {}, b"{}")
        if step is None:
            return NOT_DONE_YET
        status, extra, body = step
        request.setResponseCode(status)
        for name, value in extra.items():
            request.setHeader(name.encode(), value.encode())
        return body


@attrs.define
class Rig:
    gateway: Gateway
    port: _Listening

    def client(self, *, backoff: float = 0.2, **push: Any) -> PushGatewayClient:
        url = f"http://127.0.0.1:{self.port.getHost().port}/push"
        post, read = treq_client(reactor, 1.0, persistent=False)
        settings = PushSettings(gateway_url=url, gateway_token="tk", gateway_secret="s", **push)
        return PushGatewayClient(
            RetryPolicy(settings, backoff=backoff), REACTOR, post, read, random=lambda: 0.5
        )


@async_yield_fixture
async def rig() -> AsyncIterator[Rig]:
    gateway = Gateway()
    site = Site(gateway)  # type: ignore[no-untyped-call]
    port = REACTOR.listenTCP(0, site, interface="127.0.0.1")
    yield Rig(gateway, port)
    await port.stopListening()


def push(park_id: str = "p-1") -> PushRequest:
    return PushRequest(
        "id-1",
        PushType.CALL,
        "apns",
        "TOK1",
        "T.app.voip",
        "sip:200@example.com",
        ttl=28,
        created_at=0.0,
        call=CallInfo("c1", park_id, "sip:a@example.com", "sip:200@example.com"),
    )


@ensure_deferred
async def test_sent_with_auth_and_signature(rig: Rig) -> None:
    delivery = await rig.client().send(push())
    assert delivery.answer.outcome is Outcome.SENT and delivery.attempts == 1
    headers, body = rig.gateway.seen[0]
    assert headers["authorization"] == "Bearer tk" and headers["x-scaserver-signature"].startswith("sha256=")
    assert body["id"] == "id-1" and body["prid"] == "TOK1"


@ensure_deferred
async def test_t17_retry_after_503_same_id(rig: Rig) -> None:
    rig.gateway.script = [(503, {"Retry-After": "0"}, b""), (202, {}, b'{"status":"sent"}')]
    retried: list[str] = []
    client = rig.client()
    client._on_retrying = lambda request: retried.append(request.id)
    delivery = await client.send(push())
    assert delivery.answer.outcome is Outcome.SENT and delivery.attempts == 2
    assert [body["id"] for _, body in rig.gateway.seen] == ["id-1", "id-1"] and retried == ["id-1"]


@ensure_deferred
async def test_each_attempt_reports_inflight_and_its_latency(rig: Rig) -> None:
    rig.gateway.script = [(503, {"Retry-After": "0"}, b""), (202, {}, b"{}")]
    seen: list[GatewayActivity] = []
    client = rig.client()
    client._on_activity = seen.append
    await client.send(push())
    assert [a.inflight for a in seen] == [1, 0, 1, 0]
    assert [a.latency_ms is None for a in seen] == [True, False, True, False]
    assert all(a.latency_ms is None or 0 <= a.latency_ms < 2000 for a in seen)


@ensure_deferred
async def test_token_invalid_not_retried(rig: Rig) -> None:
    rig.gateway.script = [(410, {}, b'{"status":"token-invalid","invalidated_at":1700000000}')]
    delivery = await rig.client().send(push())
    assert delivery.answer.outcome is Outcome.INVALID and delivery.answer.invalidated_at == 1700000000.0
    assert len(rig.gateway.seen) == 1


@ensure_deferred
async def test_timeout_is_transient_and_bounded(rig: Rig) -> None:
    rig.gateway.script = [None, None]
    delivery = await rig.client(request_timeout=0.2, max_attempts=2, backoff=0.0).send(push())
    assert delivery.answer.outcome is Outcome.RETRY and delivery.attempts == 2


@ensure_deferred
async def test_connect_error_is_transient() -> None:
    post, read = treq_client(reactor, 1.0, persistent=False)
    client = PushGatewayClient(
        RetryPolicy(PushSettings(gateway_url="http://127.0.0.1:1/push", max_attempts=1)),
        REACTOR,
        post,
        read,
        random=lambda: 0.5,
    )
    delivery = await client.send(push())
    assert delivery.answer.outcome is Outcome.RETRY and delivery.answer.status is None
