"""Request and response preparation of a proxy (RFC 3261 sections 16.3, 16.4, 16.6, 16.7, 16.11).

Pure functions over frozen messages; nothing here keeps state.  The steps, in
the order :class:`scaserver.proxy.proxy.Proxy` applies them to a request:

* 16.3 item 3, Max-Forwards: a request to be forwarded with ``Max-Forwards: 0``
  is answered 483 (:func:`check_max_forwards`); 16.6 step 3 decrements it or
  adds ``Max-Forwards: 70`` (:func:`decrement_max_forwards`).
* 16.3 item 4, loop detection (:func:`detect_loop`): when one of our own Via
  entries is in the request and its branch carries the loop hash that the
  request would get now (16.6 step 8), the request has looped: 482.  The hash
  covers the To tag, From tag, Call-ID, Request-URI, the topmost Via as it was
  when we forwarded (that is, the Via just below ours), the CSeq number,
  Proxy-Require and Proxy-Authorization.  A spiral (the request came back
  with another Request-URI) hashes differently and is forwarded.
* 16.3 item 5, Proxy-Require: options we do not support earn a 420 with
  Unsupported listing them (:func:`check_proxy_require`).
* 16.4, Route pre-processing (:func:`preprocess_route`): a Request-URI that we
  once put in a Record-Route (a strict router upstream moved it there) is
  replaced by the last Route value; a top Route naming us is removed (both of
  our entries when we double record-routed).
* 16.6 steps 2 and 6 (:func:`apply_target`): the target becomes the
  Request-URI, its Path goes on top of Route (RFC 3327), and a strict next hop
  (no ``lr``) gets the Request-URI appended to Route and becomes the
  Request-URI itself.
* 16.6 step 4, Record-Route (:func:`add_record_route`): our URI with ``lr``;
  two entries (``r2=on``) when the request leaves on another interface than it
  arrived on, so each side of the dialog routes to the address it can reach
  (RFC 5658).
* 16.6 step 7 (:func:`next_hop`): the top Route URI, else the Request-URI;
  ``maddr`` overrides the host, ``transport`` (or ``sips``) picks the transport,
  the scheme's default port applies when none is given to a numeric host; a
  host name without a port gets port 0, "SRV decides".  Name resolution
  (RFC 3263) of a host name is left to the edge's locator.
* 16.6 step 8: the branch of our Via is assigned by the transaction layer.  For
  loop detection it must start with ``z9hG4bK`` + loop hash + ``.``
  (:func:`branch_with_loop_hash`); the hash travels in the branch context.
* 16.7 step 3 / 18.2.2, responses: our Via is removed and the next Via gives
  the destination (:func:`scaserver.sip.endpoint.response_destination`), never a broadcast or
  multicast address (RFC 4475 section 3.3.10, ``bcast``).
"""

from __future__ import annotations

import functools
import hashlib
import ipaddress
from collections.abc import Sequence
from typing import Final

import attrs

from scaserver.sip.errors import BadExtension, MalformedMessage, SipError, TooManyHops
from scaserver.sip.headers import (
    BRANCH_MAGIC_COOKIE,
    Via,
    cseq,
    from_addr,
    max_forwards,
    option_tags,
    parse_via,
    to_addr,
)
from scaserver.sip.message import Headers, Peer, Request, Transport
from scaserver.sip.serverlocation import is_numeric
from scaserver.sip.uri import SipUri, Uri, format_host, parse_name_addr, parse_uri

MAGIC_COOKIE: Final = BRANCH_MAGIC_COOKIE
DEFAULT_MAX_FORWARDS: Final = 70
_DEFAULT_PORT: Final[dict[Transport, int]] = {Transport.UDP: 5060, Transport.TCP: 5060, Transport.TLS: 5061}
_URI_TRANSPORTS: Final[dict[str, Transport]] = {
    "udp": Transport.UDP,
    "tcp": Transport.TCP,
    "tls": Transport.TLS,
}
_LOCAL_URI_MEMORY: Final = 1024


@attrs.frozen
class Interface:
    """One address this proxy listens on: what goes into our Record-Route and Via."""

    transport: Transport
    host: str
    port: int

    def record_route_uri(
        self, *, double: bool = False, signature: str = "", flows: str = "", secure: bool = False
    ) -> str:
        """Our Record-Route value (RFC 3261 16.6 step 4): a loose-routing URI, ``r2=on`` when
        doubled, ``rrsig`` the dialog's signature (:mod:`scaserver.proxy.relay`, rule R3),
        ``flows`` the flow-token parameters (:func:`flow_params`).  ``secure`` on a TLS
        interface gives a ``sips:`` URI (no ``transport`` parameter, RFC 5630 section 3.1.3)."""
        host = f"{format_host(self.host)}:{self.port}"
        if secure and self.transport is Transport.TLS:
            text = f"sips:{host};lr"
        else:
            text = f"sip:{host};transport={self.transport.value.lower()};lr"
        if signature:
            text += f";rrsig={signature}"
        text += flows
        if double:
            text += ";r2=on"
        return f"<{text}>"

    def via(self, branch: str) -> str:
        """A Via value with this interface as sent-by (RFC 3261 18.2.1)."""
        return f"SIP/2.0/{self.transport.value} {format_host(self.host)}:{self.port};branch={branch}"


@attrs.frozen
class ProxyIdentity:
    """Who "we" are: the interfaces we listen on and extra host names that mean us.

    ``aliases`` are lower-case host names (a DNS name of the server, a public
    address in front of NAT) recognised in Route, Request-URI and Via as ours
    on any of the interface ports.  ``route_key`` signs our Record-Route entries and checks
    them when in-dialog requests come back (:mod:`scaserver.proxy.relay`); the composition
    root derives it from the server secret.
    """

    interfaces: tuple[Interface, ...]
    aliases: frozenset[str] = frozenset()
    route_key: bytes = attrs.field(default=b"", repr=False)
    # What is_local looks up, made once: (lower-case host, port) of each interface, and the ports.
    _addresses: frozenset[tuple[str, int]] = attrs.field(init=False, eq=False, repr=False)
    _ports: frozenset[int] = attrs.field(init=False, eq=False, repr=False)
    # What is_local_uri answered, by URI (parse_uri and parse_name_addr hand out the same
    # value for the same text): the Route entries of a dialog are asked about several times
    # per request.  Emptied when it reaches _LOCAL_URI_MEMORY.
    _local_uris: dict[Uri, bool] = attrs.field(init=False, eq=False, repr=False, factory=dict)

    def __attrs_post_init__(self) -> None:
        if not self.interfaces:
            raise ValueError("a proxy needs at least one interface")
        object.__setattr__(self, "_addresses", frozenset((i.host.lower(), i.port) for i in self.interfaces))
        object.__setattr__(self, "_ports", frozenset(i.port for i in self.interfaces))

    def interface_for(self, peer: Peer) -> Interface:
        """The interface used to talk to ``peer``: same transport and address family if we have one."""
        v6 = ":" in peer.host
        same_transport = [i for i in self.interfaces if i.transport is peer.transport]
        for interface in same_transport:
            if (":" in interface.host) == v6:
                return interface
        if same_transport:
            return same_transport[0]
        return self.interfaces[0]

    def secure_interface_for(self, peer: Peer) -> Interface:
        """The interface a ``sips:`` dialog's Record-Route names towards ``peer``: our TLS
        interface of the peer's address family (any TLS one), else :meth:`interface_for`."""
        if peer.transport is Transport.TLS:
            return self.interface_for(peer)
        return self.interface_for(attrs.evolve(peer, transport=Transport.TLS))

    def is_local(self, host: str, port: int | None, default_port: int) -> bool:
        """Whether ``host:port`` (port None: the default of the scheme/transport) names us."""
        wanted = host.lower()
        effective = default_port if port is None else port
        if wanted in self.aliases:
            return effective in self._ports
        return (wanted, effective) in self._addresses

    def is_local_peer(self, peer: Peer) -> bool:
        """Whether a destination is us (port 0: a name whose port SRV would give; the default)."""
        return self.is_local(peer.host, peer.port or None, _DEFAULT_PORT[peer.transport])

    def is_local_uri(self, uri: Uri) -> bool:
        known = self._local_uris.get(uri)
        if known is None:
            if isinstance(uri, SipUri):
                host = uri.param("maddr") or uri.host
                known = self.is_local(host, uri.port, _uri_default_port(uri))
            else:
                known = False
            if len(self._local_uris) >= _LOCAL_URI_MEMORY:
                self._local_uris.clear()
            self._local_uris[uri] = known
        return known

    def is_local_via(self, via: Via) -> bool:
        transport = _URI_TRANSPORTS.get(via.transport.lower(), Transport.UDP)
        return self.is_local(via.host, via.port, _DEFAULT_PORT[transport])


def _uri_default_port(uri: SipUri) -> int:
    if uri.secure or uri.transport == "tls":
        return 5061
    return 5060


# -- 16.3 request validation ------------------------------------------------------------------


def check_max_forwards(request: Request) -> None:
    """RFC 3261 16.3 item 3: a request that would be forwarded with Max-Forwards 0 is refused."""
    value = max_forwards(request)
    if value is not None and value <= 0:
        raise TooManyHops("Max-Forwards is 0")


def decrement_max_forwards(request: Request) -> Request:
    """RFC 3261 16.6 step 3: decrement Max-Forwards, or add it with 70."""
    value = max_forwards(request)
    text = str(DEFAULT_MAX_FORWARDS) if value is None else str(max(value - 1, 0))
    # The one line replaced in place (added at the end when there is none), as Headers.set
    # does, without its copy line by line: every forwarded request comes this way.
    fields = request.headers.fields
    at = -1
    for index, (name, _) in enumerate(fields):
        if name == "Max-Forwards":
            if at >= 0:  # more than one line: set() keeps one, where the first was
                return request.with_headers(request.headers.set("Max-Forwards", text))
            at = index
    if at < 0:
        return request.with_headers(Headers((*fields, ("Max-Forwards", text))))
    return request.with_headers(Headers((*fields[:at], ("Max-Forwards", text), *fields[at + 1 :])))


def check_proxy_require(request: Request, supported: frozenset[str]) -> None:
    """RFC 3261 16.3 item 5: Proxy-Require options we lack -> 420 with Unsupported."""
    missing = tuple(tag for tag in option_tags(request, "Proxy-Require") if tag not in supported)
    if missing:
        raise BadExtension(
            "unsupported Proxy-Require options", headers=Headers.of(("Unsupported", ", ".join(missing)))
        )


def loop_hash(request: Request, top_via: str | None) -> str:
    """The loop-detection part of a branch (RFC 3261 16.6 step 8), 16 hex digits.

    ``top_via`` is the text of the topmost Via of the request as received
    before our own Via is added.
    """
    to_tag = to_addr(request).tag or ""
    from_tag = from_addr(request).tag or ""
    parts = [
        to_tag,
        from_tag,
        request.call_id or "",
        request.uri,
        top_via or "",
        str(cseq(request).number),
        *request.headers.values("Proxy-Require"),
        *request.headers.lines("Proxy-Authorization"),
    ]
    digest = hashlib.blake2b("\x00".join(parts).encode("utf-8", "surrogateescape"), digest_size=8)
    return digest.hexdigest()


def branch_with_loop_hash(hash_part: str, unique: str) -> str:
    """A branch carrying the loop hash (16.6 step 8): ``z9hG4bK<hash>.<unique>``."""
    return f"{MAGIC_COOKIE}{hash_part}.{unique}"


def loop_hash_of_branch(branch: str | None) -> str | None:
    """The loop hash carried by a branch built by :func:`branch_with_loop_hash`, or None."""
    if branch is None or not branch.startswith(MAGIC_COOKIE):
        return None
    rest = branch[len(MAGIC_COOKIE) :]
    hash_part, dot, unique = rest.partition(".")
    if not dot or not unique or len(hash_part) != 16:
        return None
    return hash_part


def detect_loop(request: Request, identity: ProxyIdentity) -> bool:
    """RFC 3261 16.3 item 4: one of our Vias carries the hash this request would get now.

    For each of our Via entries, the hash is computed with the Via below it as
    the "topmost Via", which is what the topmost Via was when we forwarded the
    request the first time.
    """
    texts = request.headers.values("Via")
    for index, text in enumerate(texts):
        try:
            via = parse_via(text)
        except MalformedMessage:
            continue
        if not identity.is_local_via(via):
            continue
        carried = loop_hash_of_branch(via.branch)
        if carried is None:
            continue
        below = texts[index + 1] if index + 1 < len(texts) else None
        if loop_hash(request, below) == carried:
            return True
    return False


# -- 16.4 Route pre-processing ----------------------------------------------------------------


def _route_uri(value: str) -> Uri:
    return parse_name_addr(value).uri


def _is_our_record_route(uri: Uri, identity: ProxyIdentity) -> bool:
    """A URI we put into a Record-Route: no user part, ``lr``, host and port ours."""
    return isinstance(uri, SipUri) and uri.user is None and uri.has_param("lr") and identity.is_local_uri(uri)


def preprocess_route(request: Request, identity: ProxyIdentity) -> Request:
    """RFC 3261 16.4: undo a strict router's rewrite, then remove our own top Route entries."""
    headers = request.headers
    uri = request.uri
    top = headers.first_value("Route")  # None exactly when there is no Route value at all
    if top is not None and _is_our_record_route(parse_uri(uri), identity):
        routes = headers.values("Route")
        uri = str(_route_uri(routes[-1]))
        remaining = routes[:-1]
        headers = headers.set("Route", ", ".join(remaining)) if remaining else headers.remove("Route")
        top = headers.first_value("Route")
    popped = 0
    while popped < 2 and top is not None:
        top_uri = _route_uri(top)
        if not identity.is_local_uri(top_uri):
            break
        headers = headers.remove_first_value("Route")
        popped += 1
        if not (isinstance(top_uri, SipUri) and top_uri.has_param("r2")):
            break
        top = headers.first_value("Route")
    if uri == request.uri and headers is request.headers:
        return request
    return Request(request.method, uri, headers, request.body, request.version)  # not evolve: 2.4 -> 0.7 us


# -- 16.6 request forwarding -------------------------------------------------------------------


def apply_target(request: Request, target_uri: str, path: Sequence[str]) -> Request:
    """RFC 3261 16.6 steps 2 and 6: new Request-URI, Path as top Routes, strict-route fix-up."""
    headers = request.headers
    for value in reversed(path):
        headers = headers.prepend("Route", value)
    uri = target_uri
    top = headers.first_value("Route")
    if top is not None:
        top_uri = _route_uri(top)
        if isinstance(top_uri, SipUri) and not top_uri.has_param("lr"):
            headers = headers.remove_first_value("Route").add("Route", f"<{uri}>")
            uri = str(top_uri)
    return Request(request.method, uri, headers, request.body, request.version)


def add_record_route(
    request: Request,
    incoming: Interface,
    outgoing: Interface,
    *,
    signature: str = "",
    flows: tuple[Peer | None, Peer | None] = (None, None),
    secure: bool = False,
) -> Request:
    """RFC 3261 16.6 step 4 (and RFC 5658 when the interfaces differ); both entries carry
    the dialog's ``signature`` (``rrsig``) and the flow tokens of its two ends.  ``secure``
    (:func:`needs_sips_record_route`): the entries are ``sips:`` URIs of TLS interfaces."""
    headers = request.headers
    params = flow_params(*flows)
    if incoming == outgoing:
        headers = headers.prepend(
            "Record-Route", outgoing.record_route_uri(signature=signature, flows=params, secure=secure)
        )
    else:
        for interface in (incoming, outgoing):
            value = interface.record_route_uri(double=True, signature=signature, flows=params, secure=secure)
            headers = headers.prepend("Record-Route", value)
    return request.with_headers(headers)


def needs_sips_record_route(received: Request, forwarded: Request) -> bool:
    """RFC 3261 16.6 step 4: the Record-Route MUST be a SIPS URI when the Request-URI or the
    top Route (after step 6) is one: of the request as received or as forwarded on a branch."""
    for request in (received, forwarded):
        top = request.headers.first_value("Route")
        candidates = [request.uri] + ([top] if top is not None else [])
        for index, text in enumerate(candidates):
            try:
                uri = parse_uri(text) if index == 0 else _route_uri(text)
            except SipError:
                continue
            if isinstance(uri, SipUri) and uri.secure:
                return True
    return False


# -- flow tokens (RFC 5626 section 5.3, 5.4) ----------------------------------------------------
#
# The dialog-creating request's two ends may each sit behind a NAT: its sender (the caller,
# reached back only at the source address of the request) and the branch's target (a
# registered binding, reached only at its flow).  Our Record-Route carries a token for each
# end that is reached through a flow (``ob-a`` the caller's, ``ob-b`` the callee's, with
# ``ob``): a mid-dialog request that comes back through us goes to the flow of the end it
# did not come from, never to a private Contact (the remote target).  A token is the flow's
# transport, host and port, hex-encoded: nothing secret, and no more trusted than the Route
# it came in: relay rule R7 still decides whether a request may be sent to it.


def flow_token(flow: Peer) -> str:
    """The flow as a URI-parameter-safe token."""
    return f"{flow.transport.value}|{flow.host}|{flow.port}".encode().hex()


def parse_flow_token(token: str) -> Peer | None:
    """The flow a token names; None for anything that is not one of ours."""
    try:
        transport, host, port_text = bytes.fromhex(token).decode("ascii").split("|")
        port = int(port_text)
        ipaddress.ip_address(host)  # a flow is a source address, never a name
        if not 0 < port < 65536:
            return None
        return Peer(Transport(transport), host, port)
    except (ValueError, UnicodeDecodeError):
        return None


def flow_params(caller: Peer | None, callee: Peer | None) -> str:
    """The Record-Route URI parameters for the flows of a dialog's ends ("" when none)."""
    text = ""
    if caller is not None:
        text += f";ob-a={flow_token(caller)}"
    if callee is not None:
        text += f";ob-b={flow_token(callee)}"
    return ";ob" + text if text else ""


def sender_flow(request: Request, peer: Peer) -> Peer | None:
    """Where the sender of ``request`` is reached back when not at its Contact: its source
    when it came over a stream (the connection) or from another address than its Contact
    (a NAT); None when the Contact is the source (or there is none to compare)."""
    if peer.transport.reliable:
        return peer
    try:
        found = request.headers.first_value("Contact")
        uri = parse_name_addr(found).uri if found is not None else None
    except SipError:
        return None
    if not isinstance(uri, SipUri):
        return None
    host = uri.param("maddr") or uri.host
    bare = host[1:-1] if host.startswith("[") else host
    if (bare.lower(), uri.port or _uri_default_port(uri)) == (peer.host.lower(), peer.port):
        return None
    return peer


def dialog_flow(request: Request, identity: ProxyIdentity, peer: Peer) -> Peer | None:
    """The flow a mid-dialog ``request`` from ``peer`` goes to: read from the flow tokens of
    our Route entry (the top one), the end it did not come from; None without tokens or
    when our entry is not the last of the route set (a proxy beyond us is the next hop)."""
    routes = request.headers.values("Route")
    if not routes:
        return None
    uris = [_route_uri(value) for value in routes]
    for parsed in uris:
        if not identity.is_local_uri(parsed):
            return None
    uri = uris[0]
    if not isinstance(uri, SipUri) or not uri.has_param("ob"):
        return None
    ends = [parse_flow_token(uri.param(name) or "") for name in ("ob-a", "ob-b")]
    for end, other in ((ends[0], ends[1]), (ends[1], ends[0])):
        if end is not None and _same_address(end, peer):
            return other
    return ends[0] if ends[1] is None else (ends[1] if ends[0] is None else None)


def _same_address(one: Peer, other: Peer) -> bool:
    return one.transport is other.transport and (one.host.lower(), one.port) == (
        other.host.lower(),
        other.port,
    )


def uri_destination(uri: Uri) -> Peer | None:
    """The transport address a SIP URI designates (RFC 3261 16.6 step 7, 19.1.1).

    ``maddr`` replaces the host; ``sips`` or ``transport=tls`` means TLS; a
    transport we do not run (sctp, ws...), an explicit port 0 or a non-SIP URI gives None.
    """
    if not isinstance(uri, SipUri):
        return None
    if uri.secure:
        transport = Transport.TLS
    elif uri.transport is None:
        transport = Transport.UDP
    else:
        found = _URI_TRANSPORTS.get(uri.transport)
        if found is None:
            return None
        transport = found
    host = uri.param("maddr") or uri.host
    if uri.port == 0:
        return None  # no address: port 0 stands for "SRV decides" below
    if uri.port is not None:
        port = uri.port
    elif is_numeric(host):
        port = _DEFAULT_PORT[transport]
    else:
        port = 0  # a name without a port: SRV records give it (RFC 3263 4.2), at the edge
    return Peer(transport, host, port)


def next_hop(request: Request) -> Peer | None:
    """RFC 3261 16.6 step 7: the top Route's URI if there is one, else the Request-URI."""
    top = request.headers.first_value("Route")
    return _route_destination(top) if top is not None else _uri_destination(request.uri)


# next_hop's answer by the text it reads (a pure function of it; a value that does not parse
# raises each time): asked several times per relayed request (relay rules R6 and R7, the branch).


@functools.lru_cache(maxsize=1024)
def _route_destination(route: str) -> Peer | None:
    return uri_destination(_route_uri(route))


@functools.lru_cache(maxsize=1024)
def _uri_destination(uri: str) -> Peer | None:
    return uri_destination(parse_uri(uri))


def stateless_branch(request: Request) -> str:
    """A branch for a statelessly forwarded request (RFC 3261 16.11): the same for every
    retransmission, different for different requests."""
    top = request.headers.first_value("Via") or ""
    parts = (request.method, request.uri, top, request.call_id or "", str(cseq(request).number))
    digest = hashlib.blake2b("\x00".join(parts).encode("utf-8", "surrogateescape"), digest_size=12)
    return f"{MAGIC_COOKIE}{digest.hexdigest()}.sl"
