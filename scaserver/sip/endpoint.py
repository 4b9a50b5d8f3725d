"""The front door of the SIP stack (RFC 3261 sections 8.2 and 18): what arrives is parsed,
checked, and either admitted to the transaction layer or answered without a transaction.

Nothing here routes: a request that passes the checks every role makes
(:func:`scaserver.sip.validation.check_request`) has its top Via stamped (18.2.1,
RFC 3581) and is admitted with the address its responses go to (18.2.2); one that fails
them is answered statelessly (8.2.6) or, when nobody expects an answer, dropped.  Each
outcome that is no transaction is a fact (:class:`MessageDropped`, :class:`StatelessReply`,
:class:`RequestRefused`) the edge logs and counts.  Pure: no clock, no I/O.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Callable
from typing import Final

import attrs

from scaserver.sip import headers
from scaserver.sip.actions import Action, Deliver, Fact, Send
from scaserver.sip.errors import MalformedMessage, SipError
from scaserver.sip.headers import Via
from scaserver.sip.keys import ClientKey, ServerKey, client_key
from scaserver.sip.message import Peer, Request, Response, Transport
from scaserver.sip.parser import parse_message
from scaserver.sip.responses import response_for
from scaserver.sip.serverlocation import DEFAULT_PORTS
from scaserver.sip.transactions import server_key
from scaserver.sip.validation import check_request, check_response

_VIA_TRANSPORTS: Final[dict[str, Transport]] = {
    "UDP": Transport.UDP,  # as parse_via writes it
    "TCP": Transport.TCP,
    "TLS": Transport.TLS,
    "udp": Transport.UDP,
    "tcp": Transport.TCP,
    "tls": Transport.TLS,
}


@attrs.frozen
class MessageDropped(Fact):
    """A message we neither answered nor acted on, and why (the edge logs and counts it).

    ``kind`` is one of a few fixed words (a metrics label): ``unparsable``, ``unanswerable``,
    ``bad-response``, ``broadcast``, ``relay-refused`` (an ACK the relay policy drops, rule R5).
    """

    peer: Peer
    reason: str
    kind: str = "unparsable"


@attrs.frozen
class StatelessReply(Fact):
    """A request answered without a transaction because it was unfit for one."""

    peer: Peer
    status: int
    detail: str


@attrs.frozen
class RequestRefused(Fact):
    """scaserver answered a request with an error response of its own (status 300 or more),
    by any path: an engine, the dispatcher, a stateless 400.  One per response sent (not per
    retransmission); the edge writes it as one log line and counts it.

    ``cause`` is one of a bounded set of words (the error's class, or the reason phrase) and
    is a metrics label; ``detail`` is the free-text rule or reason for the log.
    """

    method: str
    peer: Peer
    status: int
    cause: str
    detail: str
    call_id: str


@attrs.frozen
class AdmittedRequest:
    """A request fit for a transaction: its top Via stamped, where its responses go, and
    its server transaction key (from the top Via its validation parsed, as stamped)."""

    request: Request
    reply_to: Peer
    key: ServerKey


@attrs.frozen
class AdmittedResponse:
    """A response fit for the client transaction it names: ``key`` (None without a branch),
    from the top Via and CSeq its validation parsed."""

    response: Response
    key: ClientKey | None


@attrs.frozen
class Handled:
    """A message dealt with at the door (dropped or answered statelessly): what to do."""

    actions: tuple[Action, ...]


Admission = AdmittedRequest | AdmittedResponse | Handled


def admit(data: bytes, peer: Peer, unique: Callable[[], str]) -> Admission:
    """One datagram, or one framed stream message, from ``peer``: admitted, or handled here.
    ``unique`` makes the To tag of a stateless answer."""
    try:
        message = parse_message(data)
    except MalformedMessage as error:
        return Handled(tuple(unparsable(error, peer, unique)))
    if type(message) is Response:  # the exact class: the parser makes no subclass
        try:
            via, sequence = check_response(message)
        except MalformedMessage as error:
            return Handled((Deliver(MessageDropped(peer, f"response: {error.detail}", "bad-response")),))
        return AdmittedResponse(message, client_key(via, sequence))
    assert type(message) is Request
    try:
        via, _ = check_request(message)
        request, stamped = _stamped(message, peer, via)
    except SipError as error:
        return Handled(tuple(stateless(message, peer, error, unique)))
    destination = _reply_peer(stamped, peer)
    if destination is None:
        return Handled((Deliver(MessageDropped(peer, "reply address is broadcast/multicast", "broadcast")),))
    return AdmittedRequest(request, destination, server_key(request, stamped))


def unparsable(error: MalformedMessage, peer: Peer, unique: Callable[[], str]) -> list[Action]:
    """Answer 400 statelessly when the fragment that parsed has what a response needs
    (Via, From, To, Call-ID, CSeq); otherwise drop it."""
    partial = error.partial
    if partial is None or partial.method == "ACK":
        return [Deliver(MessageDropped(peer, error.detail))]
    return stateless(partial, peer, error, unique)


def stateless(request: Request, peer: Peer, error: SipError, unique: Callable[[], str]) -> list[Action]:
    """A response sent without a transaction to a request that could not have one.

    Whatever header lines the request has are copied as they are (Via, From, To,
    Call-ID, CSeq: RFC 3261 8.2.6.2), even when they are the fault (RFC 4475 3.1.2.1,
    3.1.2.4, 3.3.1, 3.3.8 all want a 400).  The reply goes where the top Via says
    (18.2.2) or, when that Via is itself unreadable, back to the source address.  A
    request with no Via at all, or an ACK, is dropped: nobody expects an answer to it.
    """
    if request.method == "ACK":
        return [Deliver(MessageDropped(peer, f"ACK: {error.detail}", "unanswerable"))]
    if "Via" not in request.headers:
        return [Deliver(MessageDropped(peer, f"{error.detail}; no Via to answer to", "unanswerable"))]
    try:
        stamped = stamp_via(request, peer)
        destination = reply_peer(stamped, peer)
    except SipError:
        stamped, destination = request, peer
    if destination is None:
        broadcast = f"{error.detail}; reply address is broadcast/multicast"
        return [Deliver(MessageDropped(peer, broadcast, "broadcast"))]
    response = response_for(stamped, error, to_tag=unique()[:10])
    refused = refusal(request.method, peer, response)
    facts: list[Action] = [Deliver(StatelessReply(peer, error.status, error.detail))]
    if refused is not None:
        facts.append(Deliver(refused))
    return [*facts, Send(response, destination)]


def refusal(method: str, peer: Peer, response: Response) -> RequestRefused | None:
    """The refusal fact for ``response`` when it is an error response scaserver made."""
    if response.status < 300 or response.cause is None:
        return None
    return RequestRefused(
        method,
        peer,
        response.status,
        response.cause,
        response.detail or response.reason,
        response.call_id or "",
    )


def stamp_via(request: Request, peer: Peer) -> Request:
    """Add ``received`` (RFC 3261 18.2.1) and fill ``rport`` (RFC 3581 section 4) on the top Via."""
    return _stamped(request, peer, headers.top_via(request))[0]


def _stamped(request: Request, peer: Peer, via: Via) -> tuple[Request, Via]:
    """:func:`stamp_via` of a request whose top Via ``via`` is parsed already: the request,
    and its top Via as stamped."""
    stamped = via
    for key, value in via.params:  # Via.param("rport") without its two calls
        if key == "rport" or key.lower() == "rport":
            if not value:  # present without a value (RFC 3581 section 4)
                stamped = stamped.with_param("rport", str(peer.port))
            break
    if via.host != peer.host or stamped is not via:
        stamped = stamped.with_param("received", peer.host)
    if stamped is via:
        return request, via
    rest = request.headers.remove_first_value("Via")
    return request.with_headers(rest.prepend("Via", str(stamped))), stamped


def reply_peer(request: Request, peer: Peer) -> Peer | None:
    """Where responses to a received request go (RFC 3261 18.2.2, RFC 3581): back on the
    connection for a reliable transport, else per the stamped top Via; None for a
    broadcast or multicast address (never answered)."""
    if peer.transport.reliable:
        return peer
    return _reply_peer(headers.top_via(request), peer)


def _reply_peer(stamped: Via, peer: Peer) -> Peer | None:
    """:func:`reply_peer` of a request whose stamped top Via is ``stamped``."""
    if peer.transport is not Transport.UDP:  # reliable: back on the connection
        return peer
    destination = _destination(stamped)
    if destination is None:
        return None
    transport, host, port = destination
    if host == peer.host and port == peer.port and transport is peer.transport:
        # The usual case: the source's own value, which the edge hands every datagram from
        # that address, not one more Peer for the server transaction to keep.
        return peer
    return Peer(peer.transport, host, port)  # on the transport it came over


@functools.lru_cache(maxsize=4096)
def is_broadcast_or_multicast(host: str) -> bool:
    """An address a response must never be sent to: limited broadcast, multicast (RFC 4475 section 3.3.10).

    Asked for every response, of a few peer addresses: remembered (about 10 us to work out)."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    if address.is_multicast:
        return True
    return isinstance(address, ipaddress.IPv4Address) and (
        address == ipaddress.IPv4Address("255.255.255.255") or address.is_unspecified
    )


def response_destination(via: Via) -> Peer | None:
    """Where a response goes according to its (new) top Via (RFC 3261 18.2.2, RFC 3581).

    ``maddr`` wins, then ``received`` (with ``rport`` when present), then the
    sent-by.  None when the Via names a transport we do not run or a broadcast
    or multicast address.
    """
    destination = _destination(via)
    return None if destination is None else Peer(*destination)


def _destination(via: Via) -> tuple[Transport, str, int] | None:
    """:func:`response_destination` as a (transport, host, port) triple, no Peer made."""
    name = via.transport
    if name in _VIA_TRANSPORTS:
        transport = _VIA_TRANSPORTS[name]
    else:
        lowered_name = name.lower()
        if lowered_name not in _VIA_TRANSPORTS:
            return None
        transport = _VIA_TRANSPORTS[lowered_name]
    default = DEFAULT_PORTS[transport]
    # One pass; the first of each name, as Via.param finds it.  No branch is one of them:
    # it is passed over without lower().
    maddr = received = rport = None
    for key, value in via.params:
        if key == "branch":
            continue
        lowered = key.lower()
        if lowered == "maddr":
            if maddr is None:
                maddr = "" if value is None else value
        elif lowered == "received":
            if received is None:
                received = "" if value is None else value
        elif lowered == "rport" and rport is None:
            rport = "" if value is None else value
    if maddr:
        host, port = maddr, via.port or default
    elif received:
        host = received[1:-1] if received.startswith("[") and received.endswith("]") else received
        port = int(rport) if rport else (via.port or default)
    else:
        host, port = via.host, via.port or default
    if is_broadcast_or_multicast(host):
        return None
    return transport, host, port
