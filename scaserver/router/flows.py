"""The flows registered contacts are reached over: where a request to each contact of an AoR
goes, and what ends when a flow is dead (:mod:`scaserver.registrar.nat`): the bindings
registered over it and the SCA subscriptions on it, so that nothing is sent into it any more.
Pure: no I/O, no clock."""

from __future__ import annotations

from scaserver.proxy.routing import uri_destination
from scaserver.registrar.nat import FlowFailed, FlowFailure
from scaserver.registrar.registrar import Registrar
from scaserver.sca.engine import ScaEngine
from scaserver.sip.actions import Deliver, EngineAction
from scaserver.sip.message import Peer
from scaserver.sip.uri import parse_uri


def flow_dead(
    registrar: Registrar, sca: ScaEngine, flow: Peer, cause: FlowFailure, now: float
) -> list[EngineAction]:
    """The engine actions of flow ``flow`` being dead: its bindings and subscriptions end.  A
    closed connection only counts for RFC 5626 outbound bindings (a phone without outbound is
    reached by dialling its Contact again); nothing is published when it was the flow of
    none."""
    closed = cause is FlowFailure.CONNECTION_CLOSED
    removed, bindings = registrar.flow_failed(flow, now, outbound_only=closed)
    if closed and not bindings:
        return []
    ended, subscriptions = sca.flow_failed(flow, now)
    if not bindings and not subscriptions:
        return []  # the flow of nothing any more
    return [*removed, *ended, Deliver(FlowFailed(flow, cause, bindings, subscriptions, now))]


def contact_peers(registrar: Registrar, aor: str, now: float) -> list[tuple[str, Peer]]:
    """The registered contacts of ``aor`` and where a request to each goes (the flow it
    registered over, or its URI's address)."""
    found: list[tuple[str, Peer]] = []
    for binding in registrar.lookup(aor, now):
        peer = binding.flow or uri_destination(parse_uri(binding.contact))
        if peer is not None:
            found.append((binding.contact, peer))
    return found
