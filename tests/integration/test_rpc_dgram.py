"""kamcmd -j style JSON-RPC over a real UNIX datagram socket (rpc.md 2.1)."""

from __future__ import annotations

import json
import os
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol, TypeVar, cast

import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.protocol import DatagramProtocol

from scaserver.edge.http import rpc_dispatcher
from scaserver.edge.rpcdgram import RpcDatagramProtocol, listen_unix_datagram
from tests.unit.control.fakes import Rig

F = TypeVar("F", bound=Callable[..., Any])
ensure_deferred = cast(Callable[[F], F], pytest_twisted.ensureDeferred)


class _Listening(Protocol):
    def stopListening(self) -> Deferred[None] | None: ...  # noqa: N802


class _Reactor(Protocol):
    def listenUNIXDatagram(self, address: str, protocol: DatagramProtocol) -> _Listening: ...  # noqa: N802


class _Socket(Protocol):
    def write(self, packet: bytes, addr: str) -> None: ...


class Client(DatagramProtocol):
    """Plays kamcmd: sends from its own bound socket and waits for the reply there."""

    def __init__(self) -> None:
        self.replies: Deferred[bytes] = Deferred()

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:  # noqa: N802
        self.replies.callback(datagram)


@ensure_deferred
async def test_kamcmd_style_round_trip() -> None:
    directory = Path(tempfile.mkdtemp(prefix="scadg", dir="/tmp"))
    server_path, client_path = directory / "rpc.sock", directory / "kamcmd.sock"
    server = cast(
        _Listening,
        listen_unix_datagram(reactor, server_path, RpcDatagramProtocol(rpc_dispatcher(Rig().registry))),
    )
    client = Client()
    client_port = cast(_Reactor, reactor).listenUNIXDatagram(str(client_path), client)
    try:
        assert stat.S_IMODE(os.stat(server_path).st_mode) == 0o660
        request = {"jsonrpc": "2.0", "method": "sca.subscription_count", "params": ["line-seize"], "id": 3}
        cast(_Socket, client.transport).write(json.dumps(request).encode(), str(server_path))
        reply = json.loads(await client.replies)
    finally:
        await cast(Deferred[None], server.stopListening() or Deferred.fromCoroutine(_noop()))
        await cast(Deferred[None], client_port.stopListening() or Deferred.fromCoroutine(_noop()))
        for path in (server_path, client_path):
            path.unlink(missing_ok=True)
        directory.rmdir()
    assert reply == {"jsonrpc": "2.0", "result": {"event": "line-seize", "count": 1}, "id": 3}


async def _noop() -> None:
    return None
