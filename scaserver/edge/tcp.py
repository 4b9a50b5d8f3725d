"""SIP over TCP (RFC 3261 section 18): stream framing, limits and connection reuse.

:class:`SipStreamProtocol` is one TCP connection, accepted or dialed.  It cuts
the byte stream into messages with :class:`~scaserver.sip.framing.StreamFramer`
(RFC 3261 section 18.3: Content-Length is mandatory on streams) and hands each to
the stack; it answers a double-CRLF keep-alive ping with a CRLF pong (RFC 5626
section 3.5.1).  It enforces three limits:

* the maximum message size (the framer raises; the connection is closed);
* the slow-sender timeout: a partial message that is not complete within
  ``slow_sender_timeout`` seconds closes the connection;
* the idle timeout: no octet in either direction for ``idle_timeout`` seconds
  closes the connection; until the connection has carried an authenticated or trusted
  request (the stack calls :meth:`SipStreamProtocol.vouch`), and unless we dialled it or the
  peer is allowed by the guard, the shorter ``unvouched_idle_timeout`` applies.

:class:`SipStreamFactory` refuses (closes at once) connections from a banned source, beyond
``max_connections_per_address`` from one address and beyond ``max_connections`` in all,
counting the refusals by reason (``banned``, ``per-address``, ``global``).

On a framing error nothing is answered (there is no message to answer); a
warning names the peer and the connection is closed.  Every open connection is
registered in :class:`~scaserver.edge.stack.Transports` by its remote address,
so responses reuse the connection their request came on (section 18.2.2), and
:class:`TcpDialer` opens a connection when a request goes to a peer with none
(section 18.1.1).  A failed connection attempt is reported to the core as
``connection_lost(peer)``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Final, Protocol, cast

import attrs
from twisted.application.service import Service
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.defer import Deferred
from twisted.internet.protocol import ClientFactory, ServerFactory
from twisted.internet.protocol import Protocol as TwistedProtocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from typing_extensions import override

from scaserver.edge.stack import (
    DelayedCall,
    KeepAliveCounts,
    MessageSink,
    TimerClock,
    Transports,
    call_later,
)
from scaserver.edge.udp import ListeningPort, bound_port
from scaserver.guard.sources import SourceGuard
from scaserver.sip.errors import FramingError, ProtocolStateError
from scaserver.sip.framing import StreamFramer
from scaserver.sip.message import Peer, Transport

PONG = b"\r\n"

REFUSALS: Final = ("banned", "per-address", "global")
"""Why an accepted TCP connection was closed at once (a metrics label)."""


@attrs.frozen
class StreamLimits:
    """Per-connection limits (``[sip]`` max_message_size, tcp_idle_timeout, tcp_slow_sender_timeout)."""

    max_message_size: int = 65535
    idle_timeout: float = 600.0
    slow_sender_timeout: float = 10.0
    unvouched_idle_timeout: float = 30.0
    max_connections_per_address: int = 32
    max_connections: int = 2000


class _StreamSocket(Protocol):
    """The part of ``ITCPTransport`` used here."""

    def write(self, data: bytes) -> None: ...

    def loseConnection(self) -> None: ...  # noqa: N802

    def getPeer(self) -> object: ...  # noqa: N802


class TcpReactor(Protocol):
    def listenTCP(  # noqa: N802
        self, port: int, factory: ServerFactory, backlog: int = ..., interface: str = ...
    ) -> object: ...

    def connectTCP(  # noqa: N802
        self,
        host: str,
        port: int,
        factory: ClientFactory,
        timeout: float = ...,
        bindAddress: tuple[str, int] | None = ...,  # noqa: N803 (Twisted's spelling)
    ) -> object: ...


class SipStreamProtocol(TwistedProtocol):
    """One SIP-over-TCP connection: framing in, writes out, three timers."""

    _log = Logger()

    def __init__(
        self,
        sink: MessageSink,
        transports: Transports,
        limits: StreamLimits,
        clock: TimerClock,
        dialed: Peer | None = None,
        *,
        vouched: bool = False,
        on_lost: Callable[[], None] | None = None,
        keepalives: KeepAliveCounts | None = None,
        transport: Transport = Transport.TCP,
    ) -> None:
        self._sink, self._transports, self._limits, self._clock = sink, transports, limits, clock
        self._keepalives = keepalives
        self._peer = dialed
        self._transport = transport
        self.registered = False
        self.vouched = vouched or dialed is not None
        self._on_lost = on_lost
        self._framer = StreamFramer(limits.max_message_size)
        self._pings_answered = 0
        self._idle: DelayedCall | None = None
        self._slow: DelayedCall | None = None
        self._wire: _StreamSocket | None = None
        self.closing = False

    @property
    def peer(self) -> Peer:
        if self._peer is None:
            raise ProtocolStateError("stream connection has no peer before it is made")
        return self._peer

    @override
    def connectionMade(self) -> None:
        self._wire = wire = cast(_StreamSocket, self.transport)
        if self._peer is None:
            address = wire.getPeer()
            if not isinstance(address, IPv4Address | IPv6Address):
                raise ProtocolStateError(f"TCP connection from a non-IP address {address!r}")
            self._peer = Peer(self._transport, address.host, address.port)
        self._idle = call_later(self._clock, self._idle_limit, self._idle_timeout)
        self.open()

    def open(self) -> None:
        """Register the connection for sending (at once on TCP; after the handshake on TLS)."""
        self.registered = True
        self._transports.add_stream(self)
        self._log.debug(
            "{transport} connection with {peer} open", transport=self._transport.value, peer=str(self._peer)
        )

    @override
    def dataReceived(self, data: bytes) -> None:
        if self.closing:
            return
        self._touch()
        try:
            messages = self._framer.feed(data)
        except FramingError as error:
            self._log.warn(
                "framing lost on {peer}: {reason}; closing", peer=str(self.peer), reason=str(error)
            )
            self.close()
            return
        pings = self._framer.pings_received - self._pings_answered
        if pings:
            self._pings_answered += pings
            if self._keepalives is not None:
                self._keepalives.count("double-crlf", pings)
            self._log.debug("{pings} double-CRLF ping(s) from {peer}", pings=pings, peer=str(self.peer))
            self.send(PONG * pings)
        for message in messages:
            if self.closing:
                return
            self.deliver(message)
        self._watch_slow_sender(restart=bool(messages))

    def deliver(self, message: bytes) -> None:
        """One framed message, to the stack."""
        self._sink.bytes_received(message, self.peer)

    def send(self, data: bytes) -> None:
        if self.closing or self._wire is None:
            self._log.warn("TCP connection with {peer} closing: message dropped", peer=str(self._peer))
            return
        self._wire.write(data)
        self._touch()

    def vouch(self) -> None:
        """The connection carried an authenticated or trusted request: the long idle timeout."""
        if not self.vouched:
            self.vouched = True
            self._touch()

    @property
    def _idle_limit(self) -> float:
        return self._limits.idle_timeout if self.vouched else self._limits.unvouched_idle_timeout

    def close(self) -> None:
        if not self.closing and self._wire is not None:
            self.closing = True
            self._wire.loseConnection()

    @override
    def connectionLost(self, reason: Failure | None = None) -> None:
        self.closing = True
        for call in (self._idle, self._slow):
            if call is not None and call.active():
                call.cancel()
        self._idle = self._slow = None
        if self._on_lost is not None:
            self._on_lost()
            self._on_lost = None
        if self._peer is None or not self.registered:
            return
        self._transports.remove_stream(self)
        self._log.debug("TCP connection with {peer} closed", peer=str(self._peer))
        self._sink.connection_lost(self._peer)

    # Timers

    def _touch(self) -> None:
        if self._idle is not None and self._idle.active():
            self._idle.reset(self._idle_limit)

    def _watch_slow_sender(self, *, restart: bool) -> None:
        if self._slow is not None and (restart or not self._framer.buffered):
            if self._slow.active():
                self._slow.cancel()
            self._slow = None
        if self._framer.buffered and self._slow is None:
            self._slow = call_later(self._clock, self._limits.slow_sender_timeout, self._slow_sender)

    def _slow_sender(self) -> None:
        self._slow = None
        self._log.warn(
            "{peer} left a partial message of {size} octets for {timeout} s; closing",
            peer=str(self.peer),
            size=self._framer.buffered,
            timeout=self._limits.slow_sender_timeout,
        )
        self.close()

    def _idle_timeout(self) -> None:
        self._idle = None
        self._log.info(
            "TCP connection with {peer} idle for {timeout} s; closing",
            peer=str(self.peer),
            timeout=self._idle_limit,
        )
        self.close()


class SipStreamFactory(ServerFactory):
    """Builds a :class:`SipStreamProtocol` for each accepted connection within the limits."""

    noisy = False  # listeners and connections are logged by this module

    _log = Logger()

    def __init__(
        self,
        sink: MessageSink,
        transports: Transports,
        limits: StreamLimits,
        clock: TimerClock,
        guard: SourceGuard | None = None,
        *,
        keepalives: KeepAliveCounts | None = None,
    ) -> None:
        self.sink, self.transports, self.limits, self.clock = sink, transports, limits, clock
        self.guard = guard
        self.keepalives = keepalives
        self.open_by_address: Counter[str] = Counter()
        self.refused: dict[str, int] = dict.fromkeys(REFUSALS, 0)

    @property
    def open_connections(self) -> int:
        return self.open_by_address.total()

    @override
    def buildProtocol(self, addr: object) -> SipStreamProtocol | None:
        return self.build_stream(addr, SipStreamProtocol)

    def build_stream(
        self, addr: object, kind: Callable[..., SipStreamProtocol], **extra: object
    ) -> SipStreamProtocol | None:
        """A connection of protocol class ``kind`` within the limits (shared by TCP and TLS), or None."""
        host = addr.host if isinstance(addr, IPv4Address | IPv6Address) else ""
        allowed = self.guard is not None and self.guard.is_allowed(host)
        reason: str | None = None
        if self.guard is not None and self.guard.is_banned(host, self.clock.seconds()):
            reason = "banned"
        elif not allowed and self.open_by_address[host] >= self.limits.max_connections_per_address:
            reason = "per-address"
        elif self.open_connections >= self.limits.max_connections:
            reason = "global"
        if reason is not None:
            self._refuse(host, reason)
            return None  # Twisted closes the connection
        self.open_by_address[host] += 1
        return kind(
            self.sink,
            self.transports,
            self.limits,
            self.clock,
            vouched=allowed,
            on_lost=lambda: self._closed(host),
            keepalives=self.keepalives,
            **extra,
        )

    def _refuse(self, host: str, reason: str) -> None:
        self.refused[reason] += 1
        count = self.refused[reason]
        if reason != "banned" and count & (count - 1) == 0:  # 1, 2, 4, 8...: a flood logs little
            self._log.warn(
                "TCP connection from {host} refused ({reason} limit); {count} refused so far",
                host=host,
                reason=reason,
                count=count,
            )

    def _closed(self, host: str) -> None:
        self.open_by_address[host] -= 1
        if self.open_by_address[host] <= 0:
            del self.open_by_address[host]


class _DialFactory(ClientFactory):
    noisy = False  # listeners and connections are logged by this module

    def __init__(self, dialer: TcpDialer, peer: Peer) -> None:
        self._dialer, self._peer = dialer, peer

    @override
    def buildProtocol(self, addr: object) -> SipStreamProtocol:
        streams = self._dialer.streams
        return SipStreamProtocol(
            streams.sink,
            streams.transports,
            streams.limits,
            streams.clock,
            self._peer,
            keepalives=streams.keepalives,
        )

    @override
    def clientConnectionFailed(self, connector: object, reason: Failure) -> None:
        self._dialer.failed(self._peer, reason)


class TcpDialer:
    """Opens outgoing connections for :class:`Transports` (``transports.set_dialer(dialer)``)."""

    _log = Logger()

    def __init__(self, reactor: TcpReactor, streams: SipStreamFactory, connect_timeout: float = 30.0) -> None:
        self._reactor, self.streams, self._connect_timeout = reactor, streams, connect_timeout

    def __call__(self, peer: Peer, server_name: str = "") -> None:
        """Connect to ``peer`` (``server_name``: unused on TCP, see :data:`~scaserver.edge.stack.Dial`)."""
        self._log.debug("connecting to {peer}", peer=str(peer))
        self._reactor.connectTCP(
            peer.host, peer.port, _DialFactory(self, peer), timeout=self._connect_timeout
        )

    def failed(self, peer: Peer, reason: Failure) -> None:
        dropped = self.streams.transports.dial_failed(peer)
        self._log.warn(
            "cannot connect to {peer}: {reason}; {dropped} message(s) dropped",
            peer=str(peer),
            reason=reason.getErrorMessage(),
            dropped=dropped,
        )
        self.streams.sink.connection_lost(peer)


class TcpListener(Service):
    """Listens for SIP-over-TCP connections on ``host:port`` while the service runs."""

    _log = Logger()

    def __init__(self, reactor: TcpReactor, host: str, port: int, factory: SipStreamFactory) -> None:
        self._reactor, self.host, self._port, self.factory = reactor, host, port, factory
        self.listening: ListeningPort | None = None

    @property
    def port(self) -> int:
        return bound_port(self.listening) if self.listening is not None else self._port

    transport: Transport = Transport.TCP

    def server_factory(self) -> ServerFactory:
        """What the listening port serves (the TLS listener wraps the same stream factory)."""
        return self.factory

    @override
    def startService(self) -> None:
        self.listening = cast(
            ListeningPort, self._reactor.listenTCP(self._port, self.server_factory(), interface=self.host)
        )
        self.running = True
        self._log.info(
            "listening on {transport} {host} port {port}",
            transport=self.transport.value,
            host=self.host,
            port=self.port,
        )

    @override
    def stopService(self) -> Deferred[None] | None:
        self.running = False
        if self.listening is None:
            return None
        listening, self.listening = self.listening, None
        return listening.stopListening()
