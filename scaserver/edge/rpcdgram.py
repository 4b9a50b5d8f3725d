"""The jsonrpcs-style datagram RPC transport (rpc.md 2.1).

One JSON-RPC document per datagram; the reply goes back to the sender's address, which makes
the stock ``kamcmd -j -s unixd:/run/scaserver/scaserver_rpc.sock METHOD ...`` work (kamcmd
binds its own socket and waits for the answer there).  A reply longer than ``max_reply`` is
replaced by fault 500 ``Reply too large, use HTTP``.  UNIX datagram peers are trusted with the
admin scope (filesystem permissions guard the socket, rpc.md 2.4); UDP peers must be inside
``allow_from``.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Final, Protocol, cast

from twisted.internet.defer import Deferred
from twisted.internet.protocol import DatagramProtocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from scaserver.control.dispatcher import Dispatcher, Reply
from scaserver.control.jsonrpc import ServerFailureError, fault_document
from scaserver.control.registry import Caller, Scope

DEFAULT_MAX_REPLY: Final = 60 * 1024  # rpc.dgram_max_reply
REPLY_TOO_LARGE: Final = "Reply too large, use HTTP"

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = str | tuple[str, int] | None


class _DatagramSocket(Protocol):
    """The part of ``IUNIXDatagramTransport``/``IUDPTransport`` used here."""

    def write(self, packet: bytes, addr: str | tuple[str, int]) -> None: ...


class RpcDatagramProtocol(DatagramProtocol):
    """Answers JSON-RPC datagrams with the shared dispatcher."""

    _log = Logger(namespace="scaserver.rpc")

    def __init__(
        self,
        dispatcher: Dispatcher,
        *,
        max_reply: int = DEFAULT_MAX_REPLY,
        allow_from: Sequence[Network] = (),
    ) -> None:
        self._dispatcher = dispatcher
        self._max_reply = max_reply
        self._allow_from = tuple(allow_from)

    def datagramReceived(self, datagram: bytes, addr: Address) -> None:  # noqa: N802
        caller = self._caller(addr)
        if caller is None:
            self._log.warn("RPC datagram from {peer} dropped: not in rpc.allow_from", peer=addr)
            return
        work = Deferred.fromCoroutine(self._dispatcher.dispatch(datagram, caller))
        work.addCallback(self._reply, addr).addErrback(self._failed, caller.peer)

    def _caller(self, addr: Address) -> Caller | None:
        if isinstance(addr, tuple):
            host, port = addr
            try:
                address = ipaddress.ip_address(host)
            except ValueError:
                return None
            if not any(address in network for network in self._allow_from):
                return None
            return Caller(peer=f"{host}:{port}", scope=Scope.ADMIN, transport="udp")
        return Caller(peer=f"unix:{addr or '?'}", scope=Scope.ADMIN, transport="unixd")

    def _reply(self, reply: Reply, addr: Address) -> None:
        if reply.body is None:
            return
        if not addr:
            self._log.warn("RPC datagram reply dropped: the sender has no address to answer to")
            return
        body = reply.body
        if len(body) > self._max_reply:
            body = fault_document(body, ServerFailureError(REPLY_TOO_LARGE))
        cast(_DatagramSocket, self.transport).write(body, addr)

    def _failed(self, failure: Failure, peer: str) -> None:
        self._log.failure("RPC datagram from {peer} failed", failure=failure, peer=peer)


def listen_unix_datagram(
    reactor: object, path: Path, protocol: RpcDatagramProtocol, *, mode: int = 0o660
) -> object:
    """Bind ``protocol`` to a UNIX datagram socket at ``path`` (a stale socket file is removed)."""
    if path.is_socket():
        path.unlink()
    listening = cast(_UnixDatagramReactor, reactor).listenUNIXDatagram(str(path), protocol, mode=mode)
    os.chmod(path, mode)
    return listening


class _UnixDatagramReactor(Protocol):
    def listenUNIXDatagram(  # noqa: N802
        self,
        address: str,
        protocol: DatagramProtocol,
        maxPacketSize: int = ...,  # noqa: N803
        mode: int = ...,
    ) -> object: ...
