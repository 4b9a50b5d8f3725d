"""The SUBSCRIBEs of shared lines as the router admits them (sca.md 3.2): one of the SCA
packages goes to the SCA engine with the identity of its sender, authenticated first unless it
is in dialog and comes over its subscription's own flow; one of another package to a shared
line is refused with 489, after authentication so that the refusal tells nobody which names
are lines.  Pure: each function reads the router's state as it is now
(:class:`SubscribeState`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from scaserver.router.authentication import AuthenticationState, authenticate, refuse
from scaserver.router.options import SCA_EVENTS, require_supported
from scaserver.sca.engine import ScaEngine
from scaserver.sca.line import canonical_aor
from scaserver.sca.subscription import Identity
from scaserver.sip import headers
from scaserver.sip.actions import EngineAction
from scaserver.sip.digest import Authenticated, Rejected
from scaserver.sip.errors import BadEvent
from scaserver.sip.headers import EventHeader
from scaserver.sip.keys import ServerKey
from scaserver.sip.message import Headers, Peer, Request


class SubscribeState(AuthenticationState, Protocol):
    """What SUBSCRIBE admission reads of the router that holds it, as it is at each request."""

    sca: ScaEngine
    unique: Callable[[], str]


def subscribe(
    state: SubscribeState, request: Request, peer: Peer, key: ServerKey, *, in_dialog: bool, now: float
) -> list[EngineAction]:
    """A call-info/line-seize SUBSCRIBE.  An initial one is authenticated; an in-dialog one
    only when it comes from another flow than its subscription's (the engine matches the
    dialog first and lets its flow, or its owner, use it)."""
    if not in_dialog:
        require_supported(request, state.settings.supported)
    if in_dialog and not state.sca.needs_identity(request, peer):
        return state.sca.on_subscribe(request, key, now, peer=peer)
    decision = authenticate(state, request, peer, now)
    if isinstance(decision, Rejected):
        return refuse(state, key, request, peer, decision, now=now, to_tag=state.unique()[:10])
    if isinstance(decision, Authenticated):
        identity = Identity.authenticated(decision.username)
    else:
        aor = canonical_aor(str(headers.from_addr(request).uri)) or ""
        trusted = state.trusted.is_trusted(peer)
        identity = Identity.trusted_peer(peer.host, aor) if trusted else Identity.unauthenticated(aor)
    return state.sca.on_subscribe(request, key, now, peer=peer, identity=identity)


def other_event_on_line(
    state: SubscribeState,
    request: Request,
    peer: Peer,
    key: ServerKey,
    *,
    event: EventHeader | None,
    now: float,
) -> list[EngineAction]:
    """An initial SUBSCRIBE to a shared line that names no SCA package: without an Event it
    is the engine's 400 (sca.md 3.2 row 2); with another package, 489 once authenticated."""
    if event is None:
        return subscribe(state, request, peer, key, in_dialog=False, now=now)  # sca.md 3.2 row 2: 400
    # Authentication first: a 489 before it would tell anyone which names are lines.
    decision = authenticate(state, request, peer, now)
    if isinstance(decision, Rejected):
        return refuse(state, key, request, peer, decision, now=now, to_tag=state.unique()[:10])
    allow = Headers.of(("Allow-Events", ", ".join(SCA_EVENTS)))
    raise BadEvent(f"event {event.package} on a shared line", headers=allow)
