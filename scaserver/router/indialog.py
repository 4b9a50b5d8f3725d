"""Mid-dialog requests and ACKs as the router relays them: they follow their Route set
(RFC 3261 16.4) when it goes through us with our signed Record-Route entry (relay rules R3-R7
of :mod:`scaserver.proxy.relay`), to the flow the Record-Route's token names when the sender
may reach it.  Pure: each function reads the router's state as it is now
(:class:`DialogState`: the trusted peers and the settings are reloaded, push and parking may
be swapped)."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Protocol

from scaserver.parking.calls import CallParking
from scaserver.proxy.proxy import Proxy
from scaserver.proxy.relay import (
    Rule,
    check_ack,
    check_dialog_target,
    check_in_dialog,
    check_next_hop,
)
from scaserver.proxy.routing import ProxyIdentity, dialog_flow, preprocess_route
from scaserver.proxy.target import Target
from scaserver.push.service import PushService
from scaserver.registrar.binding import address_key
from scaserver.registrar.registrar import Registrar
from scaserver.router.addressing import is_for_us, is_local_domain, origin
from scaserver.router.settings import CoreSettings
from scaserver.sip.actions import Deliver, EngineAction
from scaserver.sip.endpoint import MessageDropped
from scaserver.sip.errors import SipError
from scaserver.sip.keys import ServerKey
from scaserver.sip.message import Peer, Request
from scaserver.sip.trust import TrustedPeers
from scaserver.sip.uri import SipUri, parse_uri


class DialogState(Protocol):
    """What mid-dialog relaying reads of the router that holds it, as it is at each request."""

    settings: CoreSettings
    identity: ProxyIdentity
    trusted: TrustedPeers
    registrar: Registrar
    proxy: Proxy
    push: PushService | None
    parking: CallParking | None
    known_host: Callable[[str], bool]


def relay_in_dialog(
    state: DialogState, request: Request, peer: Peer, key: ServerKey, now: float
) -> list[EngineAction]:
    """Mid-dialog requests follow their Route set (RFC 3261 16.4) when it goes through us
    with our signed Record-Route entry (relay rules R3, R4, R6).  One without a Route of
    ours, addressed to us or to an address-of-record of our domains (a dialog's remote
    target is a contact, never an AoR), is for a dialog we do not have: 481; to anywhere
    else: 404, never relayed (Kamailio's default answer: 404 "Not here").  A peer that is
    not trusted may only reach a registered phone, a trusted peer or the upstream (R7),
    or a device whose PURR the Request-URI carries (it goes to the device's flow)."""
    uri = parse_uri(request.uri)
    for_us = isinstance(uri, SipUri) and is_local_domain(state, uri)
    sender = origin(state, peer)
    rule = check_in_dialog(request, state.identity, sender, for_us=for_us)
    routed = preprocess_route(request, state.identity)
    check_next_hop(routed, state.identity, state.known_host)
    if (
        rule is Rule.IN_DIALOG
        and not sender.trusted
        and not (state.push is not None and state.push.retargets_mid_dialog(routed))
    ):
        check_dialog_target(routed, state.identity, partial(_reaches, state))
    if state.parking is not None:
        held = state.parking.on_mid_dialog(request, routed, key, peer, now)  # pn-purr (push 6.10)
        if held is not None:
            return held
    flow = _flow(state, request, peer)
    targets = () if flow is None else (Target(routed.uri, flow=flow),)
    return state.proxy.on_request(request, key, peer, targets, now, routed=routed)


def relay_ack(state: DialogState, ack: Request, peer: Peer, now: float) -> list[EngineAction]:
    """An ACK no server transaction absorbed (one for a 2xx): relayed along its Route set
    (relay rule R5), or dropped with the reason when the relay rules refuse it."""
    if is_for_us(state, ack) and "Route" not in ack.headers:
        return []  # the ACK for a 2xx we sent ourselves (none today): end of its road
    verdict = check_ack(ack, state.identity, origin(state, peer))  # relay rule R5
    if isinstance(verdict, str):
        return [Deliver(MessageDropped(peer, verdict, "relay-refused"))]
    try:
        routed = preprocess_route(ack, state.identity)
        check_next_hop(routed, state.identity, state.known_host)
        if verdict is Rule.IN_DIALOG and not state.trusted.is_trusted(peer):
            check_dialog_target(routed, state.identity, partial(_reaches, state))  # R7
    except SipError as error:
        return [Deliver(MessageDropped(peer, f"relay: R5 ACK dropped: {error.detail}", "relay-refused"))]
    return state.proxy.on_ack(ack, peer, now, flow=_flow(state, ack, peer), routed=routed)


def _flow(state: DialogState, request: Request, peer: Peer) -> Peer | None:
    """The flow a mid-dialog request goes to, from the flow tokens of our Record-Route
    (:func:`scaserver.proxy.routing.dialog_flow`), when it is one a request from ``peer``
    may be sent to (relay rule R7: a forged token leads nowhere else)."""
    flow = dialog_flow(request, state.identity, peer)
    if flow is None:
        return None
    if not state.trusted.is_trusted(peer) and not _reaches(state, flow):
        return None
    return flow


def _reaches(state: DialogState, destination: Peer) -> bool:
    """Where an untrusted party's in-dialog request may go (relay rule R7): the Contact
    address or flow of a binding registered here (a dormant push binding's too), a
    trusted peer or the upstream.  Index look-ups, no scan of the bindings."""
    host, port = destination.host, destination.port
    if state.registrar.reaches(host, port) or state.trusted.is_trusted(destination):
        return True
    if state.push is not None and state.push.reaches_dormant(host, port):
        return True
    upstreams = [state.settings.upstream]
    if state.push is not None and state.push.midregistrar is not None:
        upstreams.append(state.push.midregistrar.settings.upstream)
    wanted = address_key(host, port)
    return any(up is not None and address_key(up.host, up.port) == wanted for up in upstreams)
