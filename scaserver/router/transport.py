"""Which transport a request the server sends goes over: TCP for a large request that was to
go over UDP (RFC 3261 section 18.1.1), UDP again when that TCP connection fails, and only TLS
for a ``sips:`` Request-URI (RFC 5630)."""

from __future__ import annotations

import functools
import itertools
from collections.abc import Hashable, Sequence
from typing import Final

import attrs

from scaserver.proxy.target import Target
from scaserver.sip import headers
from scaserver.sip.actions import Fact
from scaserver.sip.errors import TemporarilyUnavailable
from scaserver.sip.keys import ClientKey
from scaserver.sip.message import Peer, Request, Transport
from scaserver.sip.serializer import serialize
from scaserver.sip.transactions import TransactionLayer
from scaserver.sip.uri import SipUri, parse_uri


@attrs.frozen
class LargeRequestOverUdp(Fact):
    """A request of ``size`` bytes, over the 1300 of RFC 3261 section 18.1.1, went to
    ``peer`` over UDP because it cannot be reached by TCP (``reason``); published once per
    destination (the edge logs it)."""

    peer: Peer
    method: str
    size: int
    reason: str


LARGE_REQUEST_BYTES: Final = 1300
"""RFC 3261 section 18.1.1: with the path MTU unknown, a request larger than this goes over a
congestion-controlled transport (TCP) when the next hop can be reached by one."""

_BRANCH_ALLOWANCE: Final = "z9hG4bK" + "x" * 40
"""Stands for the branch of the Via the transaction layer adds, in the size estimate."""

_UDP_ONLY_MEMORY: Final = 4096
"""How many destinations known to be out of TCP reach are remembered (oldest forgotten)."""


@attrs.define
class TransportChoice:
    """RFC 3261 section 18.1.1 for the requests the server originates (not those it relays):
    the destinations known to be out of TCP reach, and the requests moved to TCP, kept until
    their transaction ends so that a failed connection sends them again over UDP."""

    layer: TransactionLayer
    _udp_only: dict[Peer, None] = attrs.field(factory=dict, init=False)
    _upgraded: dict[ClientKey, tuple[Request, Peer, Hashable]] = attrs.field(factory=dict, init=False)

    def transport_for(self, request: Request, peer: Peer) -> tuple[Peer, LargeRequestOverUdp | None]:
        """Where a request the server originates goes (RFC 3261 section 18.1.1): over TCP to the
        same address when it is larger than 1300 bytes, was to go over UDP, and the
        destination can be reached by TCP; else as asked, with the fact to publish the first
        time a large request goes over UDP to that destination.

        Reachable by TCP means: its Request-URI (the subscriber's Contact) is the address
        the request goes to, no NAT in between (a connection to a NAT's mapping of a UDP
        flow would hang until the connect timeout), and no connection attempt to it has
        failed; a Request-URI with ``transport=tcp`` is always tried.
        """
        if peer.transport is not Transport.UDP or request.method == "ACK":
            return peer, None
        via_size = _via_line_size(*self.layer.local_via(peer))
        bound = _serialized_size_bound(request)
        if bound is not None and bound + via_size <= LARGE_REQUEST_BYTES:
            return peer, None
        size = len(serialize(request)) + via_size
        if size <= LARGE_REQUEST_BYTES:
            return peer, None
        if peer in self._udp_only:
            return peer, None
        uri = parse_uri(request.uri)
        direct = isinstance(uri, SipUri) and (
            (uri.param("transport") or "").lower() == "tcp"
            or (uri.host == peer.host and (uri.port or uri.default_port) == peer.port)
        )
        if direct:
            return attrs.evolve(peer, transport=Transport.TCP), None
        return peer, self._over_udp(
            peer, request.method, size, "its contact is not the address it is reached at"
        )

    def upgraded(self, key: ClientKey, request: Request, peer: Peer, context: Hashable) -> None:
        """``request``, to go to ``peer`` over UDP, went over TCP on client transaction ``key``."""
        self._upgraded[key] = (request, peer, context)

    def forget(self, key: ClientKey) -> None:
        """Client transaction ``key`` ended, or was replaced by another."""
        if self._upgraded:  # empty but for large requests: then no key is hashed
            self._upgraded.pop(key, None)

    def fall_back(self, key: ClientKey) -> tuple[Request, Peer, Hashable] | None:
        """The request moved to TCP on ``key``, whose connection failed: the request, its UDP
        destination and its owner's context (RFC 3261 18.1.1 leaves the choice open when TCP
        cannot be used).  None when ``key`` was not moved."""
        return self._upgraded.pop(key, None) if self._upgraded else None

    def over_udp_after_failure(self, request: Request, peer: Peer) -> LargeRequestOverUdp:
        """The fact of a large request going to ``peer`` over UDP after its TCP connection
        failed; large requests to ``peer`` stay on UDP from now on."""
        return self._over_udp(peer, request.method, self._wire_size(request, peer), "no TCP connection")

    def _wire_size(self, request: Request, peer: Peer) -> int:
        return len(serialize(request)) + _via_line_size(*self.layer.local_via(peer))

    def _over_udp(self, peer: Peer, method: str, size: int, reason: str) -> LargeRequestOverUdp:
        """Remember that large requests to ``peer`` go over UDP; the fact to publish once."""
        self._udp_only[peer] = None
        while len(self._udp_only) > _UDP_ONLY_MEMORY:
            del self._udp_only[next(iter(self._udp_only))]
        return LargeRequestOverUdp(peer, method, size, reason)


@functools.lru_cache(maxsize=64)
def _via_line_size(transport: str, host: str, port: int) -> int:
    """The bytes of the ``Via:`` line the transaction layer puts on a request sent from
    (``transport``, ``host``, ``port``) (its branch counted as ``_BRANCH_ALLOWANCE``)."""
    via = headers.Via("SIP/2.0", transport.upper(), host, port, (("branch", _BRANCH_ALLOWANCE),))
    return len(f"Via: {via}\r\n")


def _serialized_size_bound(request: Request) -> int | None:
    """At least ``len(serialize(request))``, counted without serializing: every header line
    as written plus a Content-Length line of its own (the serializer writes one, in place of
    those it drops).  None when the text is not all ASCII (a character may take more than one
    byte) or holds a CR or LF (the serializer refuses it): then only serializing tells."""
    fields = request.headers.fields
    text = "".join((request.method, request.uri, request.version, *itertools.chain.from_iterable(fields)))
    if not text.isascii() or "\r" in text or "\n" in text:
        return None
    body = len(request.body)
    # "METHOD URI VERSION\r\n", "Name: value\r\n" per field, "Content-Length: N\r\n", "\r\n", body
    return len(text) + 4 + 4 * len(fields) + 18 + len(str(body)) + 2 + body


def secure_targets(targets: Sequence[Target]) -> list[Target]:
    """The targets a ``sips:`` Request-URI may be forwarded to (RFC 3261 section 26.2.2, RFC 5630
    section 3.1.3): ``sips:`` contacts reached over TLS, and contacts of any scheme whose flow
    is a TLS connection.  A contact over a cleartext flow, or a ``sip:`` one without a TLS flow,
    is never used; with none left, the request is answered 480."""
    found = [
        target
        for target in targets
        if (target.flow is not None and target.flow.transport is Transport.TLS)
        or (target.flow is None and target.uri.lower().startswith("sips:"))
    ]
    if not found:
        raise TemporarilyUnavailable("sips: Request-URI and no contact reachable over TLS (RFC 5630)")
    return found
