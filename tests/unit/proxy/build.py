"""Message factories for the proxy tests: a caller, our proxy, callees."""

from __future__ import annotations

from scaserver.proxy.routing import Interface, ProxyIdentity
from scaserver.sip.headers import Via
from scaserver.sip.keys import ServerKey
from scaserver.sip.message import Headers, Peer, Request, Response, Transport
from scaserver.sip.responses import make_response

UDP_IF = Interface(Transport.UDP, "192.0.2.10", 5060)
TCP_IF = Interface(Transport.TCP, "192.0.2.10", 5060)
IDENTITY = ProxyIdentity((UDP_IF, TCP_IF), aliases=frozenset({"proxy.example.com"}), route_key=b"route-key")
CALLER = Peer(Transport.UDP, "198.51.100.1", 5060)
CALLER_VIA = "SIP/2.0/UDP 198.51.100.1:5060;branch=z9hG4bKcaller1"
LAYER_VIA = "SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bKlayer"
SERVER_TX = ServerKey("stx-1", "client.example.com", None, "INVITE")
CANCEL_TX = ServerKey("cancel-tx", "client.example.com", None, "CANCEL")
CANCEL_TX2 = ServerKey("cancel-tx2", "client.example.com", None, "CANCEL")
UNKNOWN_TX = ServerKey("unknown-tx", "client.example.com", None, "INVITE")


def request(
    method: str = "INVITE",
    uri: str = "sip:bob@example.com",
    *,
    to_tag: str | None = None,
    via: tuple[str, ...] = (CALLER_VIA,),
    max_forwards: str | None = "70",
    extra: tuple[tuple[str, str], ...] = (),
    cseq_number: int = 1,
) -> Request:
    to = "<sip:bob@example.com>" + (f";tag={to_tag}" if to_tag else "")
    fields: list[tuple[str, str]] = [("Via", value) for value in via]
    if max_forwards is not None:
        fields.append(("Max-Forwards", max_forwards))
    fields += [
        ("From", "<sip:alice@example.com>;tag=a1"),
        ("To", to),
        ("Call-ID", "call-1@198.51.100.1"),
        ("CSeq", f"{cseq_number} {method}"),
        ("Contact", "<sip:alice@198.51.100.1>"),
        *extra,
    ]
    return Request(method, uri, Headers.of(*fields))


def answer(
    branch_request: Request,
    status: int,
    *,
    to_tag: str | None = "b1",
    extra: tuple[tuple[str, str], ...] = (),
    layer_via: str = LAYER_VIA,
) -> Response:
    """A downstream response to a branch request as the transaction layer delivers it:
    our Via (added by the layer) still on top."""
    sent = branch_request.with_headers(branch_request.headers.prepend("Via", layer_via))
    return make_response(sent, status, to_tag=None if status == 100 else to_tag, headers=Headers.of(*extra))


def upstream(response: Response) -> Response:
    """The response as relayed upstream: without the layer's Via."""
    return response.with_headers(response.headers.remove_first_value("Via"))


def our_via(branch: str, interface: Interface = UDP_IF) -> str:
    params = (("branch", branch),)
    return str(Via("SIP/2.0", interface.transport.value, interface.host, interface.port, params))
