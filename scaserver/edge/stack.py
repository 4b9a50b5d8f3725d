"""The SIP stack's edge: runs the core's actions and owns every SIP timer.

:class:`SipStack` is the only place where the pure core meets the reactor
(STYLE.md P2, P3).  Bytes from a socket go to ``core.receive(data, peer, now)``;
the actions that come back are executed in order: ``Send`` is serialized and
written through :class:`Transports`, ``StartTimer``/``CancelTimer`` arm and
cancel timers, ``Deliver`` is published on the
:class:`~scaserver.events.EventBus`.  A fired timer goes back to
``core.on_timer(key, name, now)``.  The armed timers wait in one
:class:`~scaserver.edge.timerheap.TimerHeap` behind one delayed call on the
injected clock, at the earliest due instant; when it fires, every timer due
by then fires in due order, then arming order.

:class:`Transports` is the registry of open sockets: the UDP endpoints (one per
bound address) and the table of TCP connections keyed by the remote
``(host, port)``, so that a response goes back on the connection its request
came in on (RFC 3261 section 18.2.2) and a request to a peer with no connection
opens one (section 18.1.1), its bytes queued until the connection is made.

With a :class:`~scaserver.guard.sources.SourceGuard`, the stack asks it about every
datagram and framed message before the core sees a byte of it (a response costs an eighth of
a request: answers to a NOTIFY fan-out come in bursts we caused): a source over its rate is
banned (the :class:`~scaserver.guard.sources.Ban` is published, its TCP connections closed)
and whatever a banned source sends is dropped, counted by the guard.  A TCP connection that
carries a 2xx answer to a request other than OPTIONS (so an authenticated or trusted request)
is told it is vouched for, and keeps the long idle timeout.

Keep-alives (RFC 5626 section 4.4, 8.4) never reach the core.  A UDP datagram of nothing but
CR and LF octets is a CRLF keep-alive (linphone sends one every 30 s): counted, logged at debug
level, not answered (there is no pong on UDP).  A UDP datagram whose first octet is 0 to 3 with
the STUN magic cookie is a STUN message (RFC 7983 demultiplexing): a well-formed Binding request
is answered with the source's XOR-MAPPED-ADDRESS (:mod:`scaserver.sip.stun`), anything else is
dropped.  Every well-formed Binding request is answered, not only those of sources with an
outbound binding: RFC 5626 section 8.4 has the server answer STUN on its SIP ports, a UA
probes before its first REGISTER is accepted, the answer tells the source nothing it does not
know and is no bigger than a request, and the guard's rate limit applies to it as to SIP.
The double-CRLF ping on a stream is answered by the stream protocol (:mod:`scaserver.edge.tcp`)
and counted here too (:class:`KeepAliveCounts`).
"""

from __future__ import annotations

import ipaddress
import socket
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterable, Sequence
from typing import Final, Literal, Protocol, assert_never

import attrs
from twisted.application.service import Service
from twisted.logger import Logger
from twisted.python.failure import Failure
from typing_extensions import override

from scaserver.edge.dns import ServerLocator
from scaserver.edge.resolver import HostsTable, UnresolvableTargetError, is_numeric, resolve_peer
from scaserver.edge.timerheap import TimerHeap
from scaserver.events import EventBus
from scaserver.guard.sources import RESPONSE_COST, Ban, SourceGuard
from scaserver.registrar.nat import FlowFailure
from scaserver.sip.actions import Action, CancelTimer, Deliver, Send, StartTimer
from scaserver.sip.errors import MalformedMessage
from scaserver.sip.headers import cseq, top_via
from scaserver.sip.message import Message, Peer, Request, Response, Transport
from scaserver.sip.serializer import serialize
from scaserver.sip.serverlocation import DEFAULT_PORTS, NextHopFailed, Target, query_of, without_held
from scaserver.sip.stun import StunError, answer, looks_like_stun

Direction = Literal["in", "out"]

Trace = Callable[[Direction, bytes, Peer], None]
"""Called with every message read from or written to the network (the trace switch)."""


class DelayedCall(Protocol):
    """The part of ``IDelayedCall`` the stack uses."""

    def active(self) -> bool: ...

    def cancel(self) -> None: ...

    def reset(self, secondsFromNow: float) -> None: ...  # noqa: N803 (Twisted's spelling)


class TimerClock(Protocol):
    """The part of ``IReactorTime`` the edge uses: the reactor, or ``task.Clock`` in tests."""

    def seconds(self) -> float: ...

    def callLater(  # noqa: N802
        self, delay: float, callable: Callable[..., object], *args: object, **kw: object
    ) -> object: ...


def call_later(
    clock: TimerClock, delay: float, function: Callable[..., object], *args: object
) -> DelayedCall:
    """``clock.callLater`` typed for the edge (the reactor returns an ``IDelayedCall``)."""
    delayed: DelayedCall = clock.callLater(delay, function, *args)  # type: ignore[assignment]
    return delayed


class DrivenCore(Protocol):
    """What the stack drives: the sans-I/O SIP core (front door, transactions, router);
    :class:`scaserver.router.router.SipRouter` is the one the server runs."""

    def receive(self, data: bytes, peer: Peer, now: float) -> list[Action]:
        """One datagram or one framed stream message from ``peer``."""
        ...

    def on_timer(self, key: Hashable, name: str, now: float) -> list[Action]:
        """A timer requested with ``StartTimer(key, name, delay)`` has fired."""
        ...

    def connection_lost(self, peer: Peer, now: float) -> list[Action]:
        """The stream connection to ``peer`` is gone (closed by either side, timed out, or a
        connection attempt failed); anything queued for it was dropped (RFC 3261 section 18.4:
        a transport error is reported to the transaction user)."""
        ...

    def flow_failed(self, flow: Peer, cause: FlowFailure, now: float) -> list[Action]:
        """The flow ``flow`` is dead: nothing more is to be sent into it (RFC 5626 4.4)."""
        ...


class MessageSink(Protocol):
    """Where the transports hand what they read; :class:`SipStack` is one."""

    def bytes_received(self, data: bytes, peer: Peer) -> None: ...

    def connection_lost(self, peer: Peer) -> None: ...


class DatagramEndpoint(Protocol):
    """A bound UDP socket that can send a datagram."""

    @property
    def family(self) -> socket.AddressFamily: ...

    def send(self, data: bytes, peer: Peer) -> None: ...


class StreamConnection(Protocol):
    """An open TCP connection to ``peer``."""

    @property
    def peer(self) -> Peer: ...

    def send(self, data: bytes) -> None: ...

    def close(self) -> None: ...

    def vouch(self) -> None:
        """The connection carried an authenticated or trusted request."""
        ...


ConnectionKey = tuple[str, int]
StreamKey = tuple[Transport, str, int]

Dial = Callable[[Peer, str], None]
"""Opens a stream connection to a numeric ``peer``; the ``str`` is the host name the target
was named by ("" for a numeric target): what a TLS peer's certificate must name (RFC 5922)."""

_SENT_VIA_MEMORY = 65536
"""Client transactions whose target is remembered (their retransmissions and CANCEL follow it)."""


def connection_key(host: str, port: int) -> ConnectionKey:
    """The table key for a remote address: numeric hosts in canonical (compressed) form."""
    bare = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        return ipaddress.ip_address(bare).compressed, port
    except ValueError:
        return bare.lower(), port


def stream_key(peer: Peer) -> StreamKey:
    """The stream table key: TCP and TLS connections to one address are different entries."""
    host, port = connection_key(peer.host, peer.port)
    return peer.transport, host, port


def address_family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


class Transports:
    """The open sockets, and the choice of one for each outgoing message."""

    _log = Logger()

    def __init__(
        self,
        dial: Dial | None = None,
        hosts: HostsTable | None = None,
        locator: ServerLocator | None = None,
    ) -> None:
        self._hosts = hosts if hosts is not None else HostsTable()
        self._datagrams: list[DatagramEndpoint] = []
        # The first endpoint of each family in _datagrams (the one a datagram goes out on).
        self._datagram_of: dict[socket.AddressFamily, DatagramEndpoint] = {}
        self._streams: dict[StreamKey, StreamConnection] = {}
        self._pending: dict[StreamKey, list[bytes]] = {}
        self._dials: dict[Transport, Dial] = {}
        self._aliases: dict[StreamKey, StreamConnection] = {}  # RFC 5923: the sent-by of a Via
        self._alias_keys: dict[int, list[StreamKey]] = {}
        if dial is not None:
            self._dials[Transport.TCP] = dial
        self.locator = locator
        # RFC 3263 state: messages waiting for a look-up, the target each client transaction
        # (by Via branch) went to, and the named destinations waiting on a stream dial.
        self._resolving: dict[Peer, list[tuple[bytes, str | None]]] = {}
        self._sent_via: OrderedDict[str, tuple[Peer, Target]] = OrderedDict()
        self._dialled_for: dict[StreamKey, set[Peer]] = {}
        self.unreachable: Callable[[Peer], object] | None = None
        """Called (by the stack) when messages to a named destination were dropped after
        ``send`` returned: the name resolves nowhere, or its target refused the connection."""

    def set_dialer(self, dial: Dial, transport: Transport = Transport.TCP) -> None:
        """How to open an outgoing ``transport`` connection; it must end in ``add_stream`` or
        ``dial_failed``."""
        self._dials[transport] = dial

    def add_datagram(self, endpoint: DatagramEndpoint) -> None:
        self._datagrams.append(endpoint)
        self._datagram_of.setdefault(endpoint.family, endpoint)

    def remove_datagram(self, endpoint: DatagramEndpoint) -> None:
        if endpoint in self._datagrams:
            self._datagrams.remove(endpoint)
            self._datagram_of.clear()
            for remaining in self._datagrams:
                self._datagram_of.setdefault(remaining.family, remaining)

    def add_stream(self, connection: StreamConnection) -> None:
        """Register an open connection (inbound or dialed) and flush what was queued for its peer."""
        key = stream_key(connection.peer)
        self._dialled_for.pop(key, None)
        self._streams[key] = connection
        for data in self._pending.pop(key, ()):
            connection.send(data)

    def remove_stream(self, connection: StreamConnection) -> None:
        key = stream_key(connection.peer)
        if self._streams.get(key) is connection:
            del self._streams[key]
        for alias in self._alias_keys.pop(id(connection), ()):
            if self._aliases.get(alias) is connection:
                del self._aliases[alias]

    def add_alias(self, connection: StreamConnection, sent_by: Peer) -> None:
        """RFC 5923: requests to ``sent_by`` (a Via sent-by whose ``alias`` the connection's
        authenticated peer offered) reuse ``connection`` while it is open."""
        key = stream_key(sent_by)
        if key == stream_key(connection.peer) or self._aliases.get(key) is connection:
            return
        self._aliases[key] = connection
        self._alias_keys.setdefault(id(connection), []).append(key)

    def dial_failed(self, peer: Peer) -> int:
        """An outgoing connection could not be made; drop and count what was queued for it.

        A target located by DNS is held down (RFC 3263 4.3) and the named destinations that
        were sent there are reported unreachable, so their transactions fail over now."""
        key = stream_key(peer)
        named = self._dialled_for.pop(key, set())
        if named and self.locator is not None:
            self.locator.hold(peer)
        for destination in sorted(named, key=str):
            self._report_unreachable(destination)
        return len(self._pending.pop(key, ()))

    def has_alternative(self, destination: Peer, branch: str) -> bool:
        """Whether a request to ``destination`` (a name) that failed on the client transaction
        ``branch`` can be tried at another target not held down (RFC 3263 4.3)."""
        if self.locator is None or is_numeric(destination.host):
            return False
        sent = self._sent_via.get(branch)
        used = sent[1].peer if sent is not None else None
        targets = self.locator.last_known(query_of(destination))
        return any(t.peer != used and not self.locator.is_held(t.peer) for t in targets)

    def target_failed(self, failed: NextHopFailed) -> None:
        """The core fails over from the target the transaction ``failed.branch`` went to."""
        sent = self._sent_via.get(failed.branch)
        if self.locator is None or sent is None:
            return
        self.locator.statistics.failovers += 1
        self._log.info(
            "request to {destination} failed over from {target}: {reason}",
            destination=str(failed.destination),
            target=str(sent[1].peer),
            reason=failed.reason,
        )
        self.locator.hold(sent[1].peer)

    def _report_unreachable(self, destination: Peer) -> None:
        if self.unreachable is not None:
            self.unreachable(destination)

    def stream_to(self, peer: Peer) -> StreamConnection | None:
        key = stream_key(peer)
        return self._streams.get(key) or self._aliases.get(key)

    @property
    def streams(self) -> tuple[StreamConnection, ...]:
        return tuple(self._streams.values())

    def close_streams(self) -> None:
        for connection in tuple(self._streams.values()):
            connection.close()

    def close_streams_from(self, host: str) -> int:
        """Close every connection with remote address ``host`` (a banned source); how many."""
        bare = connection_key(host, 0)[0]
        found = [connection for (_, key, _), connection in self._streams.items() if key == bare]
        for connection in found:
            connection.close()
        return len(found)

    def send(self, data: bytes, peer: Peer, *, branch: str | None = None) -> bool:
        """Write ``data`` to ``peer`` over its transport (or queue it while a connection is
        dialled or its name looked up); False, logged, when it cannot go at all: never raised.

        A stream to a Via sent-by that an authenticated peer offered as an ``alias`` (RFC 5923)
        reuses that peer's connection.  A host name (a next hop taken from a URI) is located by
        RFC 3263 through the :class:`~scaserver.edge.dns.ServerLocator` (hosts file first, then
        DNS, cached; a port of 0 leaves the port to SRV); without a locator it is looked up in
        the hosts table only.  A TLS connection dialled for a name verifies the certificate
        against that name (RFC 5922).  ``branch``, the top Via branch of a request, pins every
        message of that client transaction (retransmissions, CANCEL, ACK of a failure) to the
        target its first message went to.
        """
        if peer.transport is Transport.UDP and is_numeric(peer.host):
            return self.send_datagram(data, peer)  # most messages: no alias, no name
        aliased = self._aliases.get(stream_key(peer)) if peer.transport.reliable else None
        if aliased is not None:
            aliased.send(data)
            return True
        if not is_numeric(peer.host):
            if self.locator is not None:
                return self._send_by_name(data, peer, branch)
            try:
                resolved = resolve_peer(peer, self._hosts)[0]
            except UnresolvableTargetError as error:
                self._log.warn("message to {peer} dropped: {reason}", peer=str(peer), reason=str(error))
                return False
            resolved = attrs.evolve(resolved, port=resolved.port or DEFAULT_PORTS[resolved.transport])
            return self._send_to(data, resolved, peer.host)
        return self._send_to(data, peer, "")

    def _send_by_name(self, data: bytes, destination: Peer, branch: str | None) -> bool:
        assert self.locator is not None
        if branch is not None:
            sent = self._sent_via.get(branch)
            if sent is not None and sent[0] == destination:
                return self._send_to(data, sent[1].peer, sent[1].server_name)
        targets = self.locator.cached(query_of(destination))
        if targets is not None:
            return self._send_to_targets(data, destination, branch, targets)
        waiting = self._resolving.get(destination)
        if waiting is not None:
            waiting.append((data, branch))
            return True
        self._resolving[destination] = [(data, branch)]
        lookup = self.locator.locate(query_of(destination))
        lookup.addCallbacks(
            self._located, self._not_located, callbackArgs=(destination,), errbackArgs=(destination,)
        )
        return True

    def _not_located(self, failure: Failure, destination: Peer) -> None:
        """The look-up itself failed (our bug, not an answer): what waited for it is dropped and
        the destination reported, so that neither it nor later messages to it wait for ever."""
        self._log.failure("locating {peer}", failure, peer=str(destination))
        dropped = len(self._resolving.pop(destination, []))
        self._log.warn(
            "{dropped} message(s) to {peer} dropped: the look-up failed",
            dropped=dropped,
            peer=str(destination),
        )
        self._report_unreachable(destination)

    def _located(self, targets: tuple[Target, ...], destination: Peer) -> None:
        dropped = False
        for data, branch in self._resolving.pop(destination, []):
            if not self._send_to_targets(data, destination, branch, targets):
                dropped = True
        if dropped:
            self._report_unreachable(destination)

    def _send_to_targets(
        self, data: bytes, destination: Peer, branch: str | None, targets: Sequence[Target]
    ) -> bool:
        assert self.locator is not None
        usable = without_held(targets, self.locator.is_held)
        if not usable:
            self._log.warn(
                "message to {peer} dropped: {reason}",
                peer=str(destination),
                reason="the name resolves to no address (DNS and hosts file)",
            )
            return False
        target = usable[0]
        if branch is not None:
            self._sent_via[branch] = (destination, target)
            while len(self._sent_via) > _SENT_VIA_MEMORY:
                self._sent_via.popitem(last=False)
        if target.peer.transport.reliable:
            key = stream_key(target.peer)
            if key not in self._streams:
                self._dialled_for.setdefault(key, set()).add(destination)
        return self._send_to(data, target.peer, target.server_name)

    def _send_to(self, data: bytes, peer: Peer, server_name: str) -> bool:
        """Write to a numeric ``peer``; ``server_name`` is the name a TLS connection dialled
        for it must be certified for ("" when the destination was numeric)."""
        match peer.transport:
            case Transport.UDP:
                return self.send_datagram(data, peer)
            case Transport.TCP | Transport.TLS:
                key = stream_key(peer)
                connection = self._streams.get(key) or self._aliases.get(key)
                if connection is not None:
                    connection.send(data)
                elif key in self._pending:
                    self._pending[key].append(data)
                elif (dial := self._dials.get(peer.transport)) is None:
                    self._log.warn(
                        "no {transport} connection to {peer}: message dropped",
                        transport=peer.transport.value,
                        peer=str(peer),
                    )
                    return False
                else:
                    self._pending[key] = [data]
                    dial(peer, server_name)
                return True
            case _:
                assert_never(peer.transport)

    def send_datagram(self, data: bytes, peer: Peer) -> bool:
        """Write ``data`` to ``peer``, a numeric address over UDP; False, logged, when no
        socket of its family is open."""
        endpoint = self._datagram_of.get(socket.AF_INET6 if ":" in peer.host else socket.AF_INET)
        if endpoint is None:
            self._log.warn("no UDP socket for {peer}: message dropped", peer=str(peer))
            return False
        endpoint.send(data, peer)
        return True


KEEPALIVE_KINDS: Final = ("crlf", "stun", "double-crlf")
"""Keep-alives received, by kind (a metrics label): a CRLF datagram, a STUN Binding request or
indication on UDP, a double-CRLF ping on a stream (RFC 5626 section 4.4)."""


@attrs.define
class KeepAliveCounts:
    """Keep-alives received by kind, and STUN datagrams dropped as malformed."""

    received: dict[str, int] = attrs.field(factory=lambda: dict.fromkeys(KEEPALIVE_KINDS, 0))
    stun_dropped: int = 0

    def count(self, kind: str, number: int = 1) -> None:
        self.received[kind] = self.received.get(kind, 0) + number


def is_crlf_keepalive(datagram: bytes) -> bool:
    """A datagram of CR and LF octets only: the CRLF keep-alive of RFC 5626 section 4.4.1 (a
    single CRLF, or the double CRLF some phones send over UDP too)."""
    return bool(datagram) and not datagram.strip(b"\r\n")


_NEVER: Final = float("inf")

_KEEPALIVE_FIRST_OCTETS: Final = frozenset(b"\r\n\x00\x01\x02\x03")
"""The first octet of a CRLF keep-alive (CR or LF) or of a STUN message (0 to 3, its first two
bits zero): a datagram starting with anything else (a SIP message starts with a letter) is
for the core, without a look at the rest."""


class SipStack(Service):
    """Runs the core's actions: the one owner of SIP timers (STYLE.md section 7)."""

    _log = Logger()

    def __init__(
        self,
        core: DrivenCore,
        clock: TimerClock,
        transports: Transports,
        bus: EventBus,
        *,
        trace: Trace | None = None,
        guard: SourceGuard | None = None,
    ) -> None:
        self._core, self._clock, self._out, self._bus = core, clock, transports, bus
        self._trace = trace
        self._guard = guard
        self._timers = TimerHeap()
        self._wakeup: DelayedCall | None = None
        self._wakeup_at = _NEVER  # the due instant the wake-up was armed for
        self._sweeping = False
        self._swept_at = 0.0  # the clock when the sweep of due timers began
        # The fact types seen that are neither a Ban nor a NextHopFailed: published as they are.
        self._published: set[type] = set()
        self.keepalives = KeepAliveCounts()
        transports.unreachable = lambda peer: call_later(self._clock, 0.0, self.connection_lost, peer)

    # Entry points: each has the one catch-all of STYLE.md section 5.

    def bytes_received(self, data: bytes, peer: Peer) -> None:
        try:
            now = self._clock.seconds()
            if self._guard is not None:
                cost = RESPONSE_COST if data.startswith(b"SIP/2.0 ") else 1.0
                verdict = self._guard.check(peer.host, now, cost=cost)
                if not verdict.admitted:
                    if verdict.ban is not None:
                        self.banned(verdict.ban)
                    return
            if (
                peer.transport is Transport.UDP
                and (not data or data[0] in _KEEPALIVE_FIRST_OCTETS)
                and self._keepalive(data, peer)
            ):
                return
            if self._trace is not None:
                self._trace("in", data, peer)
            self.run(self._core.receive(data, peer, now), now)
        except Exception:  # the core answers peer faults itself: what lands here is our bug
            self._log.failure("unhandled error on input from {peer}", peer=str(peer))

    def _keepalive(self, data: bytes, peer: Peer) -> bool:
        """Handle ``data`` when it is a UDP keep-alive (CRLF or STUN); False: it is for the core."""
        if is_crlf_keepalive(data):
            self.keepalives.count("crlf")
            self._log.debug("CRLF keep-alive from {peer}", peer=str(peer))
            return True
        if not looks_like_stun(data):
            return False
        try:
            reply = answer(data, peer.host, peer.port)
        except StunError as error:
            self.keepalives.stun_dropped += 1
            self._log.debug("STUN from {peer} dropped: {reason}", peer=str(peer), reason=str(error))
            return True
        self.keepalives.count("stun")
        self._log.debug("STUN keep-alive from {peer}", peer=str(peer))
        if reply is not None:
            self._out.send(reply, peer)
        return True

    def banned(self, ban: Ban) -> None:
        """A source was banned: publish the fact and close its TCP connections."""
        self._bus.publish(ban)
        self._out.close_streams_from(ban.host)

    def connection_lost(self, peer: Peer) -> None:
        try:
            now = self._clock.seconds()
            self.run(self._core.connection_lost(peer, now))
            if self.running and peer.transport.reliable:
                # A connection closed while we serve (not our own shutdown) is a failed flow.
                self.run(self._core.flow_failed(peer, FlowFailure.CONNECTION_CLOSED, now))
        except Exception:
            self._log.failure("unhandled error on loss of the connection to {peer}", peer=str(peer))

    def _wake(self) -> None:
        """The wake-up fired: fire every timer due by now, then wait for the next one.  A timer
        armed by one of them (even for now) waits for the next wake-up."""
        self._wakeup = None
        # One read of the clock for the sweep: every timer it fires is told that instant.
        now = self._swept_at = self._clock.seconds()
        until = max(now, self._wakeup_at)
        self._wakeup_at = _NEVER
        self._sweeping = True
        try:
            timers = self._timers
            before = timers.mark()
            while (due := timers.pop_due(until, before)) is not None:
                self._fire(*due)
        finally:
            self._sweeping = False
            next_due = self._timers.next_due()
            if next_due is not None:
                self._wake_by(next_due, max(next_due - self._clock.seconds(), 0.0))

    def _wake_by(self, due: float, delay: float) -> None:
        """Have the wake-up fire by ``due`` (``delay`` from now)."""
        if self._sweeping or due >= self._wakeup_at:
            return
        self._wakeup_at = due
        if self._wakeup is None:
            self._wakeup = call_later(self._clock, delay, self._wake)
        else:
            self._wakeup.reset(delay)

    def _fire(self, key: Hashable, name: str) -> None:
        now = self._swept_at
        try:
            self.run(self._core.on_timer(key, name, now), now)
        except Exception:
            self._log.failure("unhandled error in timer {name} of {key}", name=name, key=repr(key))

    # Executing actions.

    def run(self, actions: Iterable[Action], now: float | None = None) -> None:
        """Execute actions in order (also used by the root for actions produced outside a SIP
        input); ``now``: the clock as the core was given it (read here once when None), from
        which the timers armed are due."""
        published, publish = self._published, self._bus.publish
        for action in actions:
            # The action classes by their exact type first (a seize cycle runs about 60 actions
            # here, 21 timers armed and 13 cancelled); anything else, a subclass included,
            # through the exhaustive match.
            if type(action) is StartTimer:
                if now is None:
                    now = self._clock.seconds()
                self._start_timer(action, now)
            elif type(action) is Deliver:
                event = action.event
                if type(event) in published:
                    publish(event)
                else:
                    self._deliver(event)
            elif type(action) is Send:
                self._send(action)
            elif type(action) is CancelTimer:
                self._cancel(action.key, action.name)
            else:
                match action:
                    case Send():
                        self._send(action)
                    case StartTimer():
                        if now is None:
                            now = self._clock.seconds()
                        self._start_timer(action, now)
                    case CancelTimer(key=key, name=name):
                        self._cancel(key, name)
                    case Deliver(event=event):
                        self._deliver(event)
                    case _:
                        assert_never(action)

    def _send(self, action: Send) -> None:
        message, peer = action.message, action.peer
        kind = type(message)
        if peer.transport is Transport.UDP and (
            kind is Response or (kind is Request and not _needs_tls(message))
        ):
            # Most messages: over UDP no stream vouches for anything, and a response needs no
            # TLS (only a request can).  To an address (every response and NOTIFY of a seize
            # cycle) the datagram is written on the socket of its family; a request to a name
            # pins its client transaction to the target it goes to.
            data = serialize(message)
            if self._trace is not None:
                self._trace("out", data, peer)
            if is_numeric(peer.host):
                sent = self._out.send_datagram(data, peer)
            elif kind is Response:
                sent = self._out.send(data, peer)
            else:
                sent = self._out.send(data, peer, branch=_branch_of(message, peer))
            if not sent:
                call_later(self._clock, 0.0, self.connection_lost, peer)
            return
        if peer.transport is not Transport.TLS and _needs_tls(message):
            # RFC 3261 26.2.2: a sips: request goes over TLS on every hop; whatever
            # route led here, it fails as a transport error, never in cleartext.
            self._log.warn(
                "sips: request to {peer} refused: not over TLS; transaction failed",
                peer=str(peer),
            )
            call_later(self._clock, 0.0, self.connection_lost, peer)
            return
        if peer.transport.reliable and _vouches(message):
            connection = self._out.stream_to(peer)
            if connection is not None:
                connection.vouch()
        data = serialize(message)
        if self._trace is not None:
            self._trace("out", data, peer)
        if not self._out.send(data, peer, branch=_branch_of(message, peer)):
            # The transactions bound to that peer fail now, not after 32 s (RFC 3261
            # 17.1.4: a transport error is reported to the TU); after this run.
            call_later(self._clock, 0.0, self.connection_lost, peer)

    def _start_timer(self, action: StartTimer, now: float) -> None:
        """Arm ``action``'s timer, due ``action.delay`` after ``now``."""
        delay = max(action.delay, 0.0)
        due = now + delay
        self._timers.arm(action.key, action.name, due)
        if due < self._wakeup_at:
            self._wake_by(due, delay)

    def _deliver(self, event: object) -> None:
        if isinstance(event, Ban):
            self.banned(event)
            return
        if isinstance(event, NextHopFailed):
            self._out.target_failed(event)
        else:
            self._published.add(type(event))  # run publishes the next one of its type itself
        self._bus.publish(event)

    def _cancel(self, key: Hashable, name: str) -> None:
        if self._timers.cancel(key, name) and self._wakeup is not None:
            self._stop_wakeup()

    def _stop_wakeup(self) -> None:
        if self._wakeup is not None and self._wakeup.active():
            self._wakeup.cancel()
        self._wakeup, self._wakeup_at = None, _NEVER

    @property
    def armed_timers(self) -> frozenset[tuple[Hashable, str]]:
        """The (key, name) of every timer waiting to fire."""
        return self._timers.armed

    @override
    def startService(self) -> None:
        self.running = True

    @override
    def stopService(self) -> None:
        """Cancel every timer (nothing fires into a core that is shutting down) and close the
        TCP connections."""
        self._timers.clear()
        self._stop_wakeup()
        self._out.close_streams()
        self.running = False


def _needs_tls(message: Message) -> bool:
    """A request whose Request-URI is a ``sips:`` URI."""
    return isinstance(message, Request) and message.uri[:5].lower() == "sips:"


def _branch_of(message: Message, peer: Peer) -> str | None:
    """The top Via branch of a request to a named destination (which client transaction it is)."""
    if not isinstance(message, Request) or is_numeric(peer.host):
        return None
    try:
        return top_via(message).branch
    except MalformedMessage:
        return None


def _vouches(message: Message) -> bool:
    """A 2xx to anything but OPTIONS: the request was authenticated or came from a trusted peer."""
    if not isinstance(message, Response) or not 200 <= message.status < 300:
        return False
    try:
        return cseq(message).method != "OPTIONS"
    except MalformedMessage:
        return False
