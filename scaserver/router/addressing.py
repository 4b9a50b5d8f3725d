"""Who sent a request and whether it is addressed to us, as the relay rules see it
(:mod:`scaserver.proxy.relay`).  Pure: each function reads the router's state as it is now
(:class:`AddressingState`: the trusted peers and the domains are reloaded while the server
runs)."""

from __future__ import annotations

from typing import Protocol

from scaserver.proxy.relay import Origin
from scaserver.proxy.routing import ProxyIdentity
from scaserver.router.settings import CoreSettings
from scaserver.sip.digest import Authenticated
from scaserver.sip.message import Peer, Request
from scaserver.sip.trust import TrustedPeers
from scaserver.sip.uri import SipUri, Uri, parse_uri


class AddressingState(Protocol):
    """What addressing reads of the router that holds it, as it is at each request."""

    settings: CoreSettings
    identity: ProxyIdentity
    trusted: TrustedPeers


def origin(state: AddressingState, peer: Peer, decision: Authenticated | None = None) -> Origin:
    """The sender as the relay policy sees it (scaserver.proxy.relay)."""
    return Origin(state.trusted.is_trusted(peer), decision is not None, state.settings.require_auth)


def is_for_us(state: AddressingState, request: Request) -> bool:
    """Whether the Request-URI names this server itself."""
    uri = parse_uri(request.uri)
    return isinstance(uri, SipUri) and state.identity.is_local_uri(uri)


def is_local_domain(state: AddressingState, uri: Uri) -> bool:
    """Whether ``uri`` is in a domain of ours (or names this server)."""
    if not isinstance(uri, SipUri):
        return False
    return uri.host in state.settings.domains or state.identity.is_local_uri(uri)
