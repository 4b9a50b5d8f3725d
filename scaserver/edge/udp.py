"""SIP over UDP (RFC 3261 section 18): one datagram in, one datagram out, nothing else.

A :class:`UdpTransport` reads datagrams into the stack and writes the ones
:class:`~scaserver.edge.stack.Transports` hands it.  It does no SIP processing:
a datagram that is not a SIP message is the core's to drop.
:class:`UdpListener` is the service that binds it to one address (IPv4 or IPv6).
"""

from __future__ import annotations

import errno
import functools
import socket
from collections.abc import Mapping
from typing import Protocol, cast

from twisted.application.service import Service
from twisted.internet.abstract import isIPAddress, isIPv6Address
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.defer import Deferred
from twisted.internet.error import MessageLengthError
from twisted.internet.protocol import DatagramProtocol
from twisted.logger import Logger
from typing_extensions import override

from scaserver.edge.stack import MessageSink, TimerClock, Transports, address_family
from scaserver.guard.sources import Ban, SourceGuard
from scaserver.sip.message import Peer, Transport

RECEIVE_BUFFER = 4 * 1024 * 1024
"""SO_RCVBUF asked for on every UDP socket, octets."""

READ_PER_TURN = 16 * 1024
"""Octets of datagrams one UDP socket hands the stack in one reactor turn: 10 to 40 SIP
messages, about 5 to 20 ms of work.  Twisted reads up to 256 KiB a turn, 200 to 600
messages: under load a turn of 100 ms and more, in which no timer fires (retransmissions,
the loop-lag probe), no TCP connection and no control request is served.  What is left
waits in the socket buffer for the next turn; the work is the same."""


@functools.lru_cache(maxsize=4096)
def writable_directly(host: str, family: socket.AddressFamily) -> bool:
    """Whether ``host`` is a numeric address of ``family``: what Twisted's ``udp.Port.write``
    accepts (it checks this in Python on every datagram; asked of a few peer addresses, so
    remembered).  ``sendto`` on such an address never looks a name up."""
    if family == socket.AF_INET6:
        return isIPv6Address(host)
    return family == socket.AF_INET and isIPAddress(host)


class _DatagramSocket(Protocol):
    """The part of ``IUDPTransport`` used here."""

    def write(self, packet: bytes, addr: tuple[str, int]) -> None: ...


class ListeningPort(Protocol):
    """The part of ``IListeningPort`` used by the listener services."""

    def getHost(self) -> object: ...  # noqa: N802

    def stopListening(self) -> Deferred[None] | None: ...  # noqa: N802


class UdpReactor(Protocol):
    def listenUDP(self, port: int, protocol: DatagramProtocol, interface: str = ...) -> object: ...  # noqa: N802


def bound_port(listening: ListeningPort) -> int:
    """The port a listening socket is bound to (the kernel's choice when asked for port 0)."""
    address = listening.getHost()
    return address.port if isinstance(address, IPv4Address | IPv6Address) else 0


PEER_MEMORY = 4096
"""Source addresses whose :class:`Peer` a UDP socket keeps (a phone sends from one address), to
hand the same value to every datagram from one address: a new Peer per datagram was one more
object for the cyclic garbage collector to track for each server transaction it answers
(timer J, 32 s).  The memory is emptied when it is full, so a flood from many sources cannot
grow it."""


class UdpTransport(DatagramProtocol):
    """Bytes in, bytes out on one bound UDP socket."""

    noisy = False  # listeners and connections are logged by this module

    _log = Logger()

    def __init__(
        self,
        sink: MessageSink,
        transports: Transports,
        host: str,
        max_message_size: int,
        *,
        guard: SourceGuard | None = None,
        clock: TimerClock | None = None,
    ) -> None:
        self._sink, self._transports = sink, transports
        self._family = address_family(host)
        self._max_message_size = max_message_size
        # A banned source's datagrams are dropped here, before anything else is done for them:
        # under a flood this loop is what keeps the socket's receive buffer from filling.
        self._guard, self._clock = guard, clock
        # The guard's bans, looked up here without a call: the guard is asked (and the clock
        # read) only for a source that has a ban, maybe expired.
        self._bans: Mapping[str, Ban] | None = None
        if guard is not None and clock is not None:
            self._bans = guard.ban_table
        # The bound, unconnected socket of Twisted's port while it runs: a datagram to a numeric
        # address of its family is written on it directly (see send).
        self._socket: socket.socket | None = None
        # The Peer of each recent source address, made once (a frozen value: about 0.8 us to
        # build, 0.1 to look up; the core keeps one per transaction).
        self._peers: dict[tuple[str, int], Peer] = {}

    @property
    def family(self) -> socket.AddressFamily:
        return self._family

    @override
    def startProtocol(self) -> None:
        sock = getattr(self.transport, "socket", None)
        connected = getattr(self.transport, "_connectedAddr", None)
        if isinstance(sock, socket.socket) and connected is None and sock.family == self._family:
            self._socket = sock
        self._transports.add_datagram(self)

    @override
    def stopProtocol(self) -> None:
        self._socket = None
        self._transports.remove_datagram(self)

    @override
    def datagramReceived(self, datagram: bytes, addr: tuple[str, int]) -> None:
        bans = self._bans
        if (
            bans
            and addr[0] in bans
            and self._guard is not None
            and self._clock is not None
            and self._guard.drop_banned(addr[0], self._clock.seconds())
        ):
            return
        peer = self._peers.get(addr)
        if peer is None:
            if len(self._peers) >= PEER_MEMORY:
                self._peers.clear()
            # IPv6 sockets report (host, port, flowinfo, scope_id): host and port are enough.
            peer = self._peers[addr] = Peer(Transport.UDP, addr[0], addr[1])
        if len(datagram) > self._max_message_size:
            self._log.warn(
                "datagram of {size} bytes from {peer} exceeds {limit}: dropped",
                size=len(datagram),
                peer=str(peer),
                limit=self._max_message_size,
            )
            return
        self._sink.bytes_received(datagram, peer)

    def send(self, data: bytes, peer: Peer) -> None:
        if self.transport is None:
            self._log.warn("UDP socket closed: message to {peer} dropped", peer=str(peer))
            return
        sock = self._socket
        if sock is not None and writable_directly(peer.host, self._family):
            self._send_on(sock, data, peer)
            return
        try:
            cast(_DatagramSocket, self.transport).write(data, (peer.host, peer.port))
        except (OSError, MessageLengthError) as error:
            self._log.warn("UDP write to {peer} failed: {error}", peer=str(peer), error=str(error))

    def _send_on(self, sock: socket.socket, data: bytes, peer: Peer) -> None:
        """What Twisted's ``udp.Port.write`` does once the address is checked, without the
        checks: EINTR is retried, ECONNREFUSED (an ICMP error of an earlier datagram, on some
        platforms) ignored, anything else logged as a dropped datagram (EMSGSIZE as Twisted's
        ``MessageLengthError``; ENOBUFS and EAGAIN when the send buffer is full)."""
        while True:
            try:
                sock.sendto(data, (peer.host, peer.port))
                return
            except OSError as error:
                number = error.args[0] if error.args else None
                if number == errno.EINTR:
                    continue
                if number == errno.ECONNREFUSED:
                    return
                text = str(MessageLengthError("message too long")) if number == errno.EMSGSIZE else str(error)
                self._log.warn("UDP write to {peer} failed: {error}", peer=str(peer), error=text)
                return


class UdpListener(Service):
    """Binds a :class:`UdpTransport` on ``host:port`` while the service runs."""

    _log = Logger()

    def __init__(self, reactor: UdpReactor, host: str, port: int, protocol: UdpTransport) -> None:
        self._reactor, self.host, self._port, self.protocol = reactor, host, port, protocol
        self.listening: ListeningPort | None = None

    @property
    def bound_socket(self) -> socket.socket | None:
        """The bound socket while running (Twisted's port keeps it as ``socket``)."""
        sock = getattr(self.listening, "socket", None)
        return sock if isinstance(sock, socket.socket) else None

    @property
    def port(self) -> int:
        """The bound port while running, else the configured one."""
        return bound_port(self.listening) if self.listening is not None else self._port

    @override
    def startService(self) -> None:
        listening = self._reactor.listenUDP(self._port, self.protocol, interface=self.host)
        self.listening = cast(ListeningPort, listening)
        if hasattr(listening, "maxThroughput"):
            listening.maxThroughput = READ_PER_TURN
        sock = self.bound_socket
        if sock is not None:
            # A deep buffer rides out a burst (a flood before its ban) as delay, not loss; the
            # kernel caps it at net.core.rmem_max.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER)
        self.running = True
        self._log.info("listening on UDP {host} port {port}", host=self.host, port=self.port)

    @override
    def stopService(self) -> Deferred[None] | None:
        self.running = False
        if self.listening is None:
            return None
        listening, self.listening = self.listening, None
        return listening.stopListening()
