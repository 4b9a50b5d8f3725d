"""The Twisted services of the server's tree: the SIP service (stack and listeners), the
whole server (database pool first, SIP service after), the start-up restore and the control
plane's listeners, with the reactor interface they need."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Protocol, cast

from twisted.application.service import MultiService, Service
from twisted.internet.defer import Deferred, DeferredList, maybeDeferred
from twisted.internet.interfaces import IOpenSSLServerConnectionCreator, IProtocolFactory
from twisted.logger import Logger
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.web.server import Site
from typing_extensions import override

from scaserver.edge.directorywatch import DirectoryWatch
from scaserver.edge.endpoint import Endpoint
from scaserver.edge.kernelfilter import KernelBanFilter
from scaserver.edge.rpcdgram import RpcDatagramProtocol, listen_unix_datagram
from scaserver.edge.stack import SipStack, TimerClock, Transports
from scaserver.edge.tcp import SipStreamFactory, TcpListener, TcpReactor
from scaserver.edge.tls import TlsCertificates, TlsEdge, TlsListener
from scaserver.edge.udp import UdpListener, UdpReactor
from scaserver.edge.writebehind import WriteBehind
from scaserver.events import EventBus
from scaserver.guard.sources import SourceGuard
from scaserver.router.router import SipRouter
from scaserver.store.sql import SqlStore


class Reactor(TimerClock, UdpReactor, TcpReactor, Protocol):
    """What the service tree needs from the reactor."""

    def callFromThread(self, callable: Callable[..., object], *args: object, **kw: object) -> None: ...  # noqa: N802


class SipService(MultiService):
    """The root service, with handles on the parts the composition root wires together."""

    _log = Logger()

    def __init__(self, stack: SipStack, transports: Transports, bus: EventBus) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.stack, self.transports, self.bus = stack, transports, bus
        self.udp: list[UdpListener] = []
        self.tcp: list[TcpListener] = []
        self.streams: SipStreamFactory | None = None
        self.tls: TlsEdge | None = None
        self.tls_listeners: list[TlsListener] = []
        self.guard: SourceGuard | None = None
        self.kernel_filter: KernelBanFilter | None = None

    def adopt(self, service: Service) -> None:
        """Add a child service (started in adoption order, stopped in reverse)."""
        self.addService(service)  # type: ignore[no-untyped-call]


def report_handler_error(event: object, error: BaseException) -> None:
    # The event's type only: its fields may hold contacts with push tokens.
    SipService._log.error(
        "event handler failed on {event}: {error!r}", event=type(event).__name__, error=error
    )


class Restore(Service):
    """Runs the start-up restore (re-armed expiry timers, full-state NOTIFYs) once the
    listeners are bound."""

    def __init__(self, run: Callable[[], None]) -> None:
        self._run = run
        self.done = False  # readiness: the state is back

    @override
    def startService(self) -> None:
        super().startService()  # type: ignore[no-untyped-call]
        self._run()
        self.done = True


class ServerService(MultiService):
    """The whole server: database pool (with the write-behind queue) and SIP service.

    The pool is started first and stopped last, so the write-behind queue's final
    flush runs after the listeners have closed (a clean shutdown loses nothing).
    """

    def __init__(self, sip: SipService, core: SipRouter, writes: WriteBehind, store: SqlStore) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.sip, self.core, self.writes, self.store = sip, core, writes, store
        self.directory: DirectoryWatch | None = None  # reloads on SIGHUP and directory.reload

    def adopt(self, service: Service) -> None:
        self.addService(service)  # type: ignore[no-untyped-call]

    @override
    def stopService(self) -> Deferred[None]:
        stopped: Deferred[None] = maybeDeferred(super().stopService)
        stopped.addBoth(self._dispose)
        return stopped

    def _dispose(self, result: object) -> object:
        self.store.close()
        return result


class ControlPlane(Service):
    """The HTTP listener (``/RPC``, ``/jsonrpc``, ``/metrics``) and the optional kamcmd-style
    UNIX datagram socket, both answering through one JSON-RPC dispatcher."""

    _log = Logger()

    def __init__(
        self,
        reactor: Reactor,
        listen: Endpoint,
        site: Site,
        dgram: RpcDatagramProtocol | None,
        dgram_path: str,
    ) -> None:
        self._reactor, self._listen, self._site = reactor, listen, site
        self._dgram, self._dgram_path = dgram, dgram_path
        self._ports: list[object] = []
        self.certificates: TlsCertificates | None = None  # HTTPS when set

    @override
    def startService(self) -> None:
        super().startService()  # type: ignore[no-untyped-call]
        listen = self._listen
        tcp = cast(_HttpReactor, self._reactor)
        factory: Site = self._site
        if self.certificates is not None:
            tls = TLSMemoryBIOFactory(
                cast(IOpenSSLServerConnectionCreator, self.certificates),
                False,
                cast(IProtocolFactory, factory),
            )
            factory = cast(Site, tls)
        self._ports.append(tcp.listenTCP(listen.port, factory, interface=listen.host))
        self._log.info(
            "{scheme} (JSON-RPC, metrics) on {host} port {port}",
            scheme="HTTPS" if self.certificates is not None else "HTTP",
            host=listen.host,
            port=listen.port,
        )
        if self._dgram is not None and self._dgram_path:
            path = Path(self._dgram_path)
            self._ports.append(listen_unix_datagram(self._reactor, path, self._dgram))
            self._log.info("JSON-RPC datagram socket at {path}", path=str(path))

    @override
    def stopService(self) -> Deferred[None]:
        super().stopService()  # type: ignore[no-untyped-call]
        stopping = [maybeDeferred(cast(_Port, port).stopListening) for port in self._ports]
        self._ports.clear()
        done: Deferred[None] = DeferredList(stopping, consumeErrors=True).addCallback(lambda _: None)
        return done


class _HttpReactor(Protocol):
    def listenTCP(self, port: int, factory: Site, backlog: int = 50, interface: str = "") -> object: ...  # noqa: N802


class _Port(Protocol):
    def stopListening(self) -> Deferred[None] | None: ...  # noqa: N802


class TlsView:
    """The TLS edge's handshake counters and the open connections by transport, for metrics."""

    def __init__(self, sip: SipService) -> None:
        self._sip = sip

    def tls_handshakes(self) -> int:
        return self._sip.tls.stats.completed if self._sip.tls is not None else 0

    def tls_handshake_failures(self) -> dict[str, int]:
        return dict(self._sip.tls.stats.failed) if self._sip.tls is not None else {}

    def open_connections(self) -> dict[str, int]:
        found = {"tcp": 0, "tls": 0}
        for connection in self._sip.transports.streams:
            found[connection.peer.transport.value.lower()] += 1
        return found
