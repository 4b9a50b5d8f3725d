"""The relay policy: the one place that decides whether scaserver may relay a request.

A proxy that forwards whatever reaches it is an open relay, and toll fraud is what the
scanners of the internet look for.  scaserver relays a request only under one of these
rules; every refusal is a :class:`~scaserver.sip.errors.SipError` whose detail starts
with ``relay:`` and the rule id, so the log line of the response says which rule said no.

========  =====================================================================================
rule      relays
========  =====================================================================================
``R1``    an initial request to a local user or a shared line, from an authenticated
          subscriber or a trusted peer (from anyone when authentication is switched off)
``R2``    an initial request for another domain: to the configured upstream only, and only
          from an authenticated subscriber or a trusted peer (with authentication switched
          off, from a trusted peer only); otherwise 403
``R3``    an in-dialog request whose Route (or Request-URI, after a strict router, RFC 3261
          16.4) carries our own Record-Route entry with a valid signature for the request's
          Call-ID and its From or To tag; a forged or missing signature 403, no Route of ours
          at all 404 (481 when the Request-URI is ours: a dialog we do not have)
``R4``    a pre-loaded Route beyond scaserver (on an initial request, or an in-dialog
          request whose Route of ours is not signed): from a trusted peer only, else 403
``R5``    an ACK: only within its INVITE transaction (the transaction layer absorbs it) or
          within a dialog R3 or R4 admits; any other ACK is dropped, never answered
``R6``    the next hop of a request relayed along its Route or Request-URI must be
          something we can reach (a SIP URI, a transport we run, a unicast address, a
          valid port, a host that is numeric or in the hosts file); otherwise 400 (an
          unroutable Route is the sender's fault, never our 500)
``R7``    the next hop of an in-dialog request R3 admits from a peer that is not trusted
          (the Route after ours, else the Request-URI) must be where a binding registered
          here is reached (its Contact address, its flow or its first Path hop; a dormant
          push binding's too), a trusted peer, the upstream or ourselves; otherwise 403 (an
          ACK: dropped, R5).  A request whose Request-URI carries the PURR of a push device
          is exempt: it goes to that device's registered flow (push-and-parking.md 6.10)
========  =====================================================================================

Record-Route signature (R3): our Record-Route URI carries ``rrsig``, an HMAC-SHA256 keyed
with :attr:`ProxyIdentity.route_key <scaserver.proxy.routing.ProxyIdentity>` (a key derived
from the server secret) over the Call-ID and the From tag of the request that created the
dialog.  The To tag does not exist yet when we record-route (Kamailio's ``rr`` module signs
``ftag`` for the same reason); a request of the callee carries that tag as its To tag, so
either tag of an in-dialog request may match.  Both entries of a doubled Record-Route
(``r2=on``, RFC 5658) carry the same signature.

What R3 does not prevent, R7 does: a party to a dialog we record-routed (an authenticated
subscriber, or anyone who may call a local user when authentication is off) holds a valid
signature, and could send requests of that dialog (its Call-ID and tag) with a Request-URI,
or a Route after ours, naming any host, e.g. a gateway that trusts our address.  The remote
target of a dialog cannot be signed (target refreshes change it), so R7 checks where the
request goes instead: in a dialog with a local phone the other end is a phone registered
here (reached at its Contact or, behind NAT, its flow), a trusted peer or the upstream.
The registrar indexes the addresses its bindings are reached at, so R7 is one look-up per
request.  What R7 leaves: an untrusted caller who is not registered here (authentication
off, or a subscriber calling without registering) cannot be reached by the callee's
in-dialog requests (its BYE gets 403); and a subscriber may register a Contact of its
choosing, so a host someone registered counts as registered (as R1 already rings it).

Pure: no I/O, no clock; the dispatcher applies the rules and logs what they refuse.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
from collections.abc import Callable
from typing import Final

import attrs

from scaserver.proxy.routing import ProxyIdentity, next_hop
from scaserver.sip.endpoint import is_broadcast_or_multicast
from scaserver.sip.errors import BadRequest, CallDoesNotExist, Forbidden, MalformedMessage, NotFound, SipError
from scaserver.sip.headers import from_addr, to_addr
from scaserver.sip.message import Peer, Request
from scaserver.sip.serverlocation import is_numeric as is_numeric_host
from scaserver.sip.uri import SipUri, format_host, parse_name_addr, parse_uri

SIGNATURE_PARAM: Final = "rrsig"
"""The Record-Route URI parameter holding our signature."""

_SIGNATURE_HEX: Final = 24  # 96 bits, as the PURRs we issue
_ROUTE_KEY_LABEL: Final = b"scaserver record-route signature v1"


class Rule(enum.Enum):
    """The rules of the relay policy; the value is the id the log shows."""

    LOCAL_TARGET = "R1"
    FOREIGN_DOMAIN = "R2"
    IN_DIALOG = "R3"
    PRELOADED_ROUTE = "R4"
    ACK = "R5"
    NEXT_HOP = "R6"
    DIALOG_TARGET = "R7"


@attrs.frozen
class Origin:
    """Who sent a request, as far as the relay policy cares.

    ``trusted``: the source address is a trusted peer (a PBX trunk, the upstream);
    ``authenticated``: digest authentication succeeded for it; ``auth_required``:
    authentication is switched on (``require_auth``).
    """

    trusted: bool
    authenticated: bool = False
    auth_required: bool = True


def derive_route_key(secret: bytes) -> bytes:
    """The key of our Record-Route signatures: derived from the server secret, never the
    secret itself (the same secret keys digest nonces and PURRs)."""
    return hmac.new(secret, _ROUTE_KEY_LABEL, hashlib.sha256).digest()


def route_signature(key: bytes, call_id: str, tag: str) -> str:
    """The ``rrsig`` of a dialog: HMAC-SHA256 over its Call-ID and the From tag of the
    request that created it, truncated to 96 bits of hex."""
    material = f"{call_id}\x00{tag}".encode("utf-8", "surrogateescape")
    # hmac.digest: one call into OpenSSL; hmac.new(...).hexdigest() is the same value through
    # about ten Python calls, and every in-dialog request checks a signature.
    return hmac.digest(key, material, "sha256").hex()[:_SIGNATURE_HEX]


def signature_for(request: Request, key: bytes) -> str:
    """The signature our Record-Route carries on a dialog-creating ``request``."""
    return route_signature(key, request.call_id or "", from_addr(request).tag or "")


def _signed_for(request: Request, uri: SipUri, key: bytes) -> bool:
    carried = uri.param(SIGNATURE_PARAM)
    if not carried:
        return False
    call_id = request.call_id or ""
    # The From tag first, the To tag only when it is not that (a request from the callee).
    tag = from_addr(request).tag
    if tag and hmac.compare_digest(carried, route_signature(key, call_id, tag)):
        return True
    tag = to_addr(request).tag
    if not tag:
        return False
    return hmac.compare_digest(carried, route_signature(key, call_id, tag))


def our_route_entry(request: Request, identity: ProxyIdentity) -> SipUri | None:
    """The entry of ours an in-dialog request is routed through: the Request-URI when a
    strict router put our Record-Route there (16.4), else the top Route when it names us.
    Raises MalformedMessage for a Route that does not parse."""
    uri = parse_uri(request.uri)
    if request.headers.first_value("Route") is not None and _is_ours(uri, identity):
        assert isinstance(uri, SipUri)
        return uri
    top = request.headers.first_value("Route")
    if top is None:
        return None
    route = parse_name_addr(top).uri
    return route if isinstance(route, SipUri) and identity.is_local_uri(route) else None


def _is_ours(uri: object, identity: ProxyIdentity) -> bool:
    return isinstance(uri, SipUri) and uri.user is None and uri.has_param("lr") and identity.is_local_uri(uri)


def check_initial(
    origin: Origin, *, local: bool, preloaded_route: bool, upstream: Peer | None, why_foreign: str = ""
) -> Rule:
    """R1, R2, R4 for an initial request (no To tag) that authentication already let in.

    ``local``: the Request-URI is in one of our domains; ``preloaded_route``: a Route
    remains after our own entries were taken off (16.4); ``why_foreign``: why the
    Request-URI's domain is not ours (the domain policy's words, for R2's log line).
    """
    foreign = f"; {why_foreign}" if why_foreign else ""
    if preloaded_route:
        if origin.trusted:
            return Rule.PRELOADED_ROUTE
        raise Forbidden("relay: R4 a pre-loaded Route beyond this server is for trusted peers only")
    if local:
        return Rule.LOCAL_TARGET
    if upstream is None:
        raise Forbidden(f"relay: R2 relaying to other domains is not allowed (no upstream){foreign}")
    if origin.trusted or origin.authenticated:
        return Rule.FOREIGN_DOMAIN
    raise Forbidden(
        f"relay: R2 other domains are for authenticated subscribers and trusted peers only{foreign}"
    )


def check_in_dialog(request: Request, identity: ProxyIdentity, origin: Origin, *, for_us: bool) -> Rule:
    """R3 and R4 for an in-dialog request (a To tag) as received.

    ``for_us``: the Request-URI names this server or an address-of-record of our domains
    (a dialog we would be a party to, which we do not have: 481 when not routed).
    """
    try:
        ours = our_route_entry(request, identity)
    except MalformedMessage as error:
        raise BadRequest(f"relay: R6 unparsable Route: {error.detail}") from None
    if ours is None:
        if for_us:
            raise CallDoesNotExist("relay: R3 no such dialog here")
        raise NotFound("relay: R3 not here: in-dialog request without a Route of this server")
    if _signed_for(request, ours, identity.route_key):
        return Rule.IN_DIALOG
    if origin.trusted:
        return Rule.PRELOADED_ROUTE
    raise Forbidden("relay: R3 in-dialog request without a valid scaserver Record-Route")


def check_ack(ack: Request, identity: ProxyIdentity, origin: Origin) -> Rule | str:
    """R5 for an ACK outside any INVITE transaction (an ACK for a 2xx): the rule that lets
    it through, or the reason it is dropped (nothing answers an ACK)."""
    try:
        if to_addr(ack).tag is None:
            return "relay: R5 ACK without a To tag belongs to no transaction or dialog"
        return check_in_dialog(ack, identity, origin, for_us=False)
    except SipError as error:
        return f"relay: R5 ACK dropped: {error.detail}"


def every_host(host: str) -> bool:
    """A ``known_host`` that knows every host (when nothing better is known)."""
    return True


def check_next_hop(
    prepared: Request, identity: ProxyIdentity, known_host: Callable[[str], bool] = every_host
) -> Rule:
    """R6: the next hop of ``prepared`` (after 16.4 Route pre-processing) is reachable.

    A SIP URI, a transport one of our interfaces runs, a port in 1-65535, a unicast
    address, a host ``known_host`` can send to (numeric, or a name the edge resolves);
    anything else is the sender's fault: 400.
    """
    try:
        destination = next_hop(prepared)
    except MalformedMessage as error:
        raise BadRequest(f"relay: R6 unroutable Route: {error.detail}") from None
    if destination is None:
        raise BadRequest("relay: R6 unroutable Route: no transport of ours reaches it")
    if destination.transport not in {interface.transport for interface in identity.interfaces}:
        raise BadRequest(f"relay: R6 unroutable Route: no {destination.transport.value} here")
    named_srv = destination.port == 0 and not is_numeric_host(destination.host)  # SRV decides
    if not (0 < destination.port < 65536 or named_srv) or not destination.host:
        raise BadRequest(f"relay: R6 unroutable Route: bad address {destination.host}:{destination.port}")
    if is_broadcast_or_multicast(destination.host):
        raise BadRequest("relay: R6 unroutable Route: broadcast or multicast address")
    if not known_host(destination.host):
        raise BadRequest(f"relay: R6 unroutable Route: {destination.host} cannot be resolved here")
    return Rule.NEXT_HOP


def check_dialog_target(
    prepared: Request, identity: ProxyIdentity, reachable: Callable[[Peer], bool]
) -> Rule:
    """R7: the next hop of ``prepared`` (an in-dialog request R3 admitted from a peer that is
    not trusted, after 16.4 Route pre-processing) is somewhere a dialog with a local phone
    may lead: ``reachable`` says whether an address is a registered contact or flow, a
    trusted peer or the upstream; ours is always fine.  Otherwise 403.  Run after R6 (the
    next hop is a SIP address we can reach)."""
    try:
        destination = next_hop(prepared)
    except MalformedMessage as error:
        raise BadRequest(f"relay: R6 unroutable Route: {error.detail}") from None
    if destination is None:
        raise BadRequest("relay: R6 unroutable Route: no transport of ours reaches it")
    if identity.is_local_peer(destination) or reachable(destination):
        return Rule.DIALOG_TARGET
    raise Forbidden(
        f"relay: R7 in-dialog next hop {format_host(destination.host)}:{destination.port} is not a"
        " registered contact, a trusted peer or the upstream"
    )


__all__ = [
    "SIGNATURE_PARAM",
    "Origin",
    "Rule",
    "check_ack",
    "check_dialog_target",
    "check_in_dialog",
    "check_initial",
    "check_next_hop",
    "derive_route_key",
    "every_host",
    "our_route_entry",
    "route_signature",
    "signature_for",
]
