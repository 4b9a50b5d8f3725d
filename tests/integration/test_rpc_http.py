"""JSON-RPC over real loopback HTTP (rpc.md 2.1-2.4), with in-memory seams behind the methods."""

from __future__ import annotations

import io
import json
import tempfile
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, Protocol, TypeVar, cast

import pytest_twisted
import treq
from prometheus_client import CollectorRegistry
from twisted.internet import reactor, threads
from twisted.internet.defer import Deferred
from twisted.logger import ILogObserver, LogEvent, globalLogPublisher

from scaserver.control.catalogue import build_registry
from scaserver.control.registry import Scope
from scaserver.control.seams import Statistic
from scaserver.edge.http import BearerTokens, HttpPolicy, RpcSettings, build_site, rpc_dispatcher
from scaserver.metrics.counters import Metrics
from tests.unit.control.fakes import LINE, NOW, SERVER, FakeLocation, FakeSca, Rig, check_result
from tests.unit.control.test_parking import FakeParking
from tests.unit.test_scactl import scactl_main

F = TypeVar("F", bound=Callable[..., Any])
ensure_deferred = cast(Callable[[F], F], pytest_twisted.ensureDeferred)
async_yield_fixture = cast(Callable[[F], F], pytest_twisted.async_yield_fixture)
HeaderMap = dict[str | bytes, list[str | bytes]]


class _Address(Protocol):
    port: int


class _Listening(Protocol):
    def getHost(self) -> _Address: ...  # noqa: N802

    def stopListening(self) -> Deferred[None]: ...  # noqa: N802


class _Reactor(Protocol):
    def listenTCP(self, port: int, factory: object, *, interface: str) -> _Listening: ...  # noqa: N802

    def listenUNIX(self, address: str, factory: object) -> _Listening: ...  # noqa: N802


REACTOR = cast(_Reactor, reactor)

ADMIN_TOKEN = b"admin-secret-token"
READ_TOKEN = b"read-only-token"
JSON: HeaderMap = {"Content-Type": ["application/json"]}


class Counts:
    def subscriptions_by_event(self) -> dict[str, int]:
        return {"call-info": 2, "line-seize": 1}

    def appearances_by_state(self) -> dict[str, int]:
        return {"active": 1}


class Server:
    """A Site on 127.0.0.1:<ephemeral> serving the fake-backed registry."""

    def __init__(self, policy: HttpPolicy) -> None:
        self.rig = Rig()
        metrics = CollectorRegistry()
        Metrics(metrics, sca=Counts()).notify_sent("call-info")
        self.site = build_site(rpc_dispatcher(self.rig.registry), policy, metrics)
        self.port = REACTOR.listenTCP(0, self.site, interface="127.0.0.1")
        self.base = f"http://127.0.0.1:{self.port.getHost().port}"

    async def post(
        self, body: bytes | dict[str, Any], *, path: str = "/RPC", headers: HeaderMap | None = None
    ) -> tuple[int, Any, bytes]:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        sent = JSON if headers is None else headers
        response = await treq.post(self.base + path, data=data, headers=sent, persistent=False)
        content: bytes = await treq.content(response)
        return response.code, response.headers, content


def request(method: str, params: list[Any] | None = None, request_id: int | None = 1) -> dict[str, Any]:
    document: dict[str, Any] = {"jsonrpc": "2.0", "method": method, "params": params or []}
    if request_id is not None:
        document["id"] = request_id
    return document


@async_yield_fixture
async def open_server() -> AsyncIterator[Server]:
    server = Server(HttpPolicy())
    yield server
    await server.port.stopListening()


@async_yield_fixture
async def token_server() -> AsyncIterator[Server]:
    tokens = BearerTokens(((ADMIN_TOKEN, Scope.ADMIN), (READ_TOKEN, Scope.READ)))
    server = Server(HttpPolicy(tokens, RpcSettings(allowed_origins=("https://ops.example.com",))))
    yield server
    await server.port.stopListening()


def bearer(token: bytes) -> HeaderMap:
    return {**JSON, "Authorization": [f"Bearer {token.decode()}"]}


@ensure_deferred
async def test_rpc_and_jsonrpc_paths_answer(open_server: Server) -> None:
    for path in ("/RPC", "/jsonrpc"):
        status, headers, body = await open_server.post(request("sca.all_appearances"), path=path)
        assert status == 200
        assert headers.getRawHeaders("Content-Type") == ["application/json"]
        reply = json.loads(body)
        check_result("sca.all_appearances", reply["result"])
        assert reply["result"][0]["aor"] == LINE


@ensure_deferred
async def test_charset_is_accepted(open_server: Server) -> None:
    headers: HeaderMap = {"Content-Type": ["application/json; charset=utf-8"]}
    status, _, _ = await open_server.post(request("core.version"), headers=headers)
    assert status == 200


@ensure_deferred
async def test_get_is_405_with_allow(open_server: Server) -> None:
    response = await treq.get(open_server.base + "/RPC", persistent=False)
    await treq.content(response)
    assert response.code == 405
    assert response.headers.getRawHeaders("Allow") == ["POST"]


@ensure_deferred
async def test_wrong_content_type_is_415(open_server: Server) -> None:
    for content_type in ("text/plain", "application/x-www-form-urlencoded"):
        status, _, _ = await open_server.post(
            request("core.version"), headers={"Content-Type": [content_type]}
        )
        assert status == 415
    status, _, _ = await open_server.post(request("core.version"), headers={})
    assert status == 415


@ensure_deferred
async def test_body_over_one_mebibyte_is_413(open_server: Server) -> None:
    big = json.dumps(request("core.version", ["x" * (1 << 20)])).encode()
    status, _, _ = await open_server.post(big)
    assert status == 413


@ensure_deferred
async def test_foreign_origin_is_403(open_server: Server) -> None:
    headers: HeaderMap = {**JSON, "Origin": ["https://evil.example.com"]}
    status, _, _ = await open_server.post(request("core.version"), headers=headers)
    assert status == 403


@ensure_deferred
async def test_allowed_origin_passes(token_server: Server) -> None:
    headers: HeaderMap = {**bearer(READ_TOKEN), "Origin": ["https://ops.example.com"]}
    status, _, _ = await token_server.post(request("core.version"), headers=headers)
    assert status == 200


@ensure_deferred
async def test_fault_codes_become_http_status(open_server: Server) -> None:
    cases: list[tuple[bytes | dict[str, Any], int, int | None]] = [
        (b"{nope", 400, -32700),
        (request("no.such"), 404, -32601),
        (request("sca.release_appearance", [LINE]), 400, -32602),
        (request("sca.release_appearance", [LINE, 0]), 400, 400),
        (request("sca.release_appearance", [LINE, 2]), 404, 404),
        (request("sca.seize_appearance", [LINE, "sip:a@b"]), 200, None),
        (request("sca.seize_appearance", [LINE, "sip:c@d"]), 500, 500),
    ]
    for body, status, code in cases:
        got_status, _, content = await open_server.post(body)
        reply = json.loads(content)
        assert got_status == status, reply
        assert reply.get("error", {}).get("code") == code


@ensure_deferred
async def test_notification_is_204_without_body(open_server: Server) -> None:
    status, _, content = await open_server.post(request("sca.flush", request_id=None))
    assert (status, content) == (204, b"")
    assert open_server.rig.sca.calls == [("flush", ())]


@ensure_deferred
async def test_batch(open_server: Server) -> None:
    status, _, content = await open_server.post(
        json.dumps([request("core.version", request_id=1), request("no.such", request_id=2)]).encode()
    )
    assert status == 200
    assert [item.get("error", {}).get("code") for item in json.loads(content)] == [None, -32601]


@ensure_deferred
async def test_missing_or_wrong_token_is_401(token_server: Server) -> None:
    basic: HeaderMap = {**JSON, "Authorization": ["Basic YTpi"]}
    for headers in (JSON, bearer(b"wrong"), basic):
        status, response_headers, content = await token_server.post(request("core.version"), headers=headers)
        assert status == 401
        assert response_headers.getRawHeaders("WWW-Authenticate") == ['Bearer realm="scaserver"']
        assert b"jsonrpc" not in content


@ensure_deferred
async def test_read_token_scope(token_server: Server) -> None:
    status, _, _ = await token_server.post(request("sca.all_subscriptions"), headers=bearer(READ_TOKEN))
    assert status == 200
    status, _, content = await token_server.post(request("sca.flush"), headers=bearer(READ_TOKEN))
    assert status == 403
    assert json.loads(content)["error"] == {"code": 403, "message": "Forbidden"}
    assert token_server.rig.sca.calls == []
    status, _, _ = await token_server.post(request("sca.flush"), headers=bearer(ADMIN_TOKEN))
    assert status == 200


@ensure_deferred
async def test_allow_from_is_checked_first() -> None:
    server = Server(HttpPolicy(settings=RpcSettings(allow_from=("10.0.0.0/8",))))
    try:
        status, _, _ = await server.post(request("core.version"))
        assert status == 403
        response = await treq.get(server.base + "/metrics", persistent=False)
        await treq.content(response)
        assert response.code == 403
    finally:
        await server.port.stopListening()


@ensure_deferred
async def test_admin_calls_are_audit_logged(open_server: Server) -> None:
    events: list[LogEvent] = []

    def observe(event: LogEvent) -> None:
        if event.get("log_namespace") == "scaserver.rpc.audit":
            events.append(event)

    observer = cast(ILogObserver, observe)
    globalLogPublisher.addObserver(observer)
    try:
        await open_server.post(request("sca.all_appearances"))
        await open_server.post(request("sca.release_appearance", [LINE, 1]))
    finally:
        globalLogPublisher.removeObserver(observer)
    assert [(event["method"], event["code"], event["scope"], event["params"]) for event in events] == [
        ("sca.release_appearance", 200, "admin", [LINE, 1])
    ]
    assert events[0]["peer"].startswith("127.0.0.1:")


@ensure_deferred
async def test_metrics(token_server: Server) -> None:
    response = await treq.get(token_server.base + "/metrics", persistent=False)
    await treq.content(response)
    assert response.code == 401
    authorized: HeaderMap = {"Authorization": [f"Bearer {READ_TOKEN.decode()}"]}
    response = await treq.get(token_server.base + "/metrics", headers=authorized, persistent=False)
    text = (await treq.content(response)).decode()
    assert response.code == 200
    assert response.headers.getRawHeaders("Content-Type")[0].startswith("text/plain")
    assert 'scaserver_sca_subscriptions{event="call-info"} 2.0' in text
    assert 'scaserver_sca_appearances{state="active"} 1.0' in text
    assert 'scaserver_notify_total{event="call-info",outcome="sent"} 1.0' in text
    status, _, _ = await token_server.post(b"x", path="/metrics", headers=bearer(READ_TOKEN))
    assert status == 405


@ensure_deferred
async def test_unix_socket_is_trusted_as_admin() -> None:
    tokens = BearerTokens(((READ_TOKEN, Scope.READ),))
    rig_site = Server(HttpPolicy(tokens=tokens))
    await rig_site.port.stopListening()
    directory = Path(tempfile.mkdtemp(prefix="scarpc", dir="/tmp"))
    path = directory / "rpc.sock"
    port = REACTOR.listenUNIX(str(path), rig_site.site)
    out, err = io.StringIO(), io.StringIO()
    try:
        code = await threads.deferToThread(
            scactl_main, ["-s", f"unix:{path}", "-F", "json", "sca.flush"], stdout=out, stderr=err
        )
    finally:
        await port.stopListening()
        path.unlink(missing_ok=True)
        directory.rmdir()
    assert (code, json.loads(out.getvalue()), err.getvalue()) == (0, {"written": 4}, "")


class FixedStatistics:
    """A ``StatisticsControl`` with three counters."""

    def statistics(self) -> list[Statistic]:
        return [
            Statistic("push", "push_sent", 3),
            Statistic("tsilo", "stored_ruris", 1),
            Statistic("tsilo", "total_ruris", 9),
        ]


@ensure_deferred
async def test_park_uac_and_stats_methods_over_http() -> None:
    parking = FakeParking()
    registry = build_registry(
        sca=FakeSca(),
        location=FakeLocation(),
        server=SERVER,
        clock=lambda: NOW,
        parking=parking,
        statistics=FixedStatistics(),
    )
    site = build_site(rpc_dispatcher(registry), HttpPolicy(), CollectorRegistry())
    port = REACTOR.listenTCP(0, site, interface="127.0.0.1")
    base = f"http://127.0.0.1:{port.getHost().port}/RPC"

    async def post(method: str, params: list[Any]) -> tuple[int, Any]:
        data = json.dumps(request(method, params)).encode()
        response = await treq.post(base, data=data, headers=JSON, persistent=False)
        return response.code, json.loads(await treq.content(response))

    try:
        status, reply = await post("park.release", ["call-1@pbx", 603])
        assert status == 200 and reply["result"]["code"] == 603
        check_result("park.release", reply["result"])
        assert parking.asked == [("release", ("call-1@pbx", 603))]
        status, reply = await post("park.release", ["call-1@pbx", 99])
        assert (status, reply["error"]["code"]) == (400, -32602)
        status, reply = await post("uac.reg_info", ["realm", "x"])
        assert (status, reply["error"]) == (400, {"code": 400, "message": "Unsupported filter attribute"})
        status, reply = await post("stats.get_statistics", ["tsilo:", "push_sent"])
        lines = ["push:push_sent = 3", "tsilo:stored_ruris = 1", "tsilo:total_ruris = 9"]
        assert (status, reply["result"]) == (200, lines)
        out, err = io.StringIO(), io.StringIO()
        args = ["-s", base, "-F", "json", "stats.get_statistics", "tsilo:", "all"]
        code = await threads.deferToThread(scactl_main, args, stdout=out, stderr=err)
        assert (code, len(json.loads(out.getvalue())), err.getvalue()) == (0, 3, "")
    finally:
        await port.stopListening()
