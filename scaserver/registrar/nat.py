"""Phones behind NAT: detection, the flows to keep open, and what a failed flow is.

A binding is **behind NAT** (the tests of Kamailio nathelper's ``nat_uac_test`` flags 1, 2
and 16, read as a description, applied to what the registrar stores) when

* its Contact host is a private or shared address: RFC 1918, RFC 6598 (carrier-grade NAT),
  IPv4 and IPv6 link-local, IPv6 unique-local (flag 1); or
* its Contact address is not the address the REGISTER came from: another host (flag 2) or,
  over UDP, another port (flag 16; over TCP and TLS the source port is the connection's
  ephemeral one and says nothing).

A binding registered through a Path (RFC 3327) is never behind NAT as seen from here: the
edge proxy in front keeps its flow.

The **flow** of a binding is the transport address its REGISTER came from
(:attr:`Binding.received`, persisted with the binding in the ``location`` table, so flows
survive a restart); requests to the binding go there when it differs from the Contact
(:attr:`Binding.flow`).  UDP flows of bindings behind NAT (every UDP flow with
``ping_all``) are kept open by pings (:class:`NatSettings`); a ping that gets no answer
before its transaction times out is a **flow failure**, as is the close of a TCP/TLS
connection that an outbound (RFC 5626) binding registered over.  On a flow failure the
bindings on that flow are removed (:data:`RemovalReason.FLOW_FAILED`, RFC 5626 section 4.4 /
5.2: the edge proxy forgets a flow it knows dead, and a registrar with one flow per binding
has no other flow to fall back to), so that a call gets 480 at once instead of ringing into
a hole, and the SCA subscriptions of that flow end without a NOTIFY (sending one would only
time out); a phone that comes back registers and subscribes again and gets the full state.
"""

from __future__ import annotations

import enum
import functools
import ipaddress
import zlib
from collections.abc import Iterable
from typing import Final

import attrs

from scaserver.registrar.binding import Binding, address_key
from scaserver.sip.actions import Fact
from scaserver.sip.errors import MalformedMessage
from scaserver.sip.message import Headers, Peer, Request, Transport
from scaserver.sip.uri import SipUri, parse_uri

_PRIVATE_NETWORKS: Final = tuple(
    ipaddress.ip_network(text)
    for text in (
        "10.0.0.0/8",  # RFC 1918
        "172.16.0.0/12",
        "192.168.0.0/16",
        "100.64.0.0/10",  # RFC 6598 shared address space
        "169.254.0.0/16",  # link-local
        "fe80::/10",
        "fc00::/7",  # unique-local
    )
)


@functools.lru_cache(maxsize=4096)
def is_private_host(host: str) -> bool:
    """Whether ``host`` is a numeric private, shared, link-local or unique-local address
    (a name is never private: it may resolve anywhere).  Remembered: asked on every REGISTER."""
    text = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return False
    return any(address in network for network in _PRIVATE_NETWORKS if network.version == address.version)


def behind_nat(binding: Binding) -> bool:
    """The nathelper tests (module docstring) applied to one binding."""
    if binding.path:
        return False
    try:
        contact = parse_uri(binding.contact)
    except MalformedMessage:
        return False
    if not isinstance(contact, SipUri):
        return False
    host = contact.param("maddr") or contact.host
    if is_private_host(host):
        return True
    received = binding.received
    if address_key(host, 0)[0] != address_key(received.host, 0)[0]:
        return True
    return not received.transport.reliable and (contact.port or contact.default_port) != received.port


def is_outbound(binding: Binding) -> bool:
    """The phone asked for RFC 5626 outbound: ``+sip.instance`` with ``reg-id``."""
    return binding.instance is not None and binding.reg_id is not None


def same_flow(one: Peer, other: Peer) -> bool:
    """Two transport addresses are one flow: same transport, host (any spelling) and port."""
    return one.transport is other.transport and address_key(one.host, one.port) == address_key(
        other.host, other.port
    )


class PingMethod(enum.StrEnum):
    """How a NAT pinhole is kept open: an OPTIONS request (answered: a missing answer is a
    flow failure) or a bare CRLF datagram (never answered: it only refreshes the mapping)."""

    OPTIONS = "options"
    CRLF = "crlf"


@attrs.frozen
class NatSettings:
    """``[nat]``: pings that keep the UDP pinholes of phones behind NAT open (Kamailio nathelper's
    ``natping_interval`` and ``sipping_method``): every ``ping_interval`` seconds (0: none) an
    OPTIONS (unanswered: the flow failed, its bindings and subscriptions are dropped) or a
    bare CRLF (``ping_method = "crlf"``: no answer, no failure detection) to each UDP flow
    behind NAT, or to every UDP flow with ``ping_all``; From ``sip:<ping_from>@<our host>``."""

    ping_interval: float = attrs.field(default=30.0, validator=attrs.validators.ge(0))
    ping_method: PingMethod = PingMethod.OPTIONS
    ping_all: bool = False
    ping_from: str = "keepalive"


SLOTS: Final = 10
"""How many turns one ping interval is cut into at least (one per second for longer
intervals, :func:`ping_turns`): each flow is pinged in one of them (by a stable hash of its
address), so the pings of an interval are spread over it, not sent in one reactor turn."""


def ping_turns(interval: float) -> int:
    """The turns of one ping interval: :data:`SLOTS`, or one per second of a longer interval."""
    return max(SLOTS, int(interval))


def ping_slot(flow: Peer, slots: int = SLOTS) -> int:
    """The turn of the interval in which ``flow`` is pinged (stable across restarts: a flow
    is a source address as the socket reports it, always spelled the same way)."""
    return zlib.crc32(f"{flow.host}|{flow.port}".encode()) % slots


def ping_targets(
    bindings: Iterable[Binding], *, ping_all: bool, slot: int | None = None, slots: int = SLOTS
) -> dict[Peer, Binding]:
    """The UDP flows to ping, each with one binding on it (for the OPTIONS Request-URI):
    those behind NAT, or every UDP flow without a Path with ``ping_all``; with ``slot``,
    only the flows of that turn (:func:`ping_slot`, checked first: it is the cheap test)."""
    found: dict[Peer, Binding] = {}
    for binding in bindings:
        flow = binding.received
        if flow.transport is not Transport.UDP or binding.path or flow in found:
            continue
        if slot is not None and ping_slot(flow, slots) != slot:
            continue
        if ping_all or behind_nat(binding):
            found[flow] = binding
    return found


@attrs.frozen
class NatPing:
    """The ``SendRequest`` context of one OPTIONS ping: the flow it tests."""

    flow: Peer
    serial: int


def ping_request(binding: Binding, *, local_uri: str, call_id: str, from_tag: str) -> Request:
    """An OPTIONS ping to ``binding`` (sent to its flow): to its Contact URI, from
    ``local_uri``, outside any dialog (RFC 3261 section 11.1); the transaction layer adds Via."""
    return Request(
        "OPTIONS",
        binding.contact,
        Headers.of(
            ("Max-Forwards", "70"),
            ("To", f"<{binding.contact}>"),
            ("From", f"<{local_uri}>;tag={from_tag}"),
            ("Call-ID", call_id),
            ("CSeq", "1 OPTIONS"),
            ("Content-Length", "0"),
        ),
    )


class FlowFailure(enum.Enum):
    """Why a flow is known dead (a metrics label)."""

    PING_TIMEOUT = "ping-timeout"
    CONNECTION_CLOSED = "connection-closed"


@attrs.frozen
class FlowFailed(Fact):
    """A flow failed: the bindings and subscriptions on it were dropped (the edge logs it)."""

    flow: Peer
    cause: FlowFailure
    bindings: int
    subscriptions: int
    at: float
