"""Digest authentication of the requests the router admits (RFC 3261 section 22, RFC 7616),
the refusal sent when it fails, what is consumed of the credentials before a request is
relayed, and the identity the server asserts to a trusted upstream (RFC 3325).

Pure: each function reads the router's state as it is now (:class:`AuthenticationState`: the
trusted peers, the credentials and the source guard are swapped while the server runs)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Final, Protocol

import attrs

from scaserver.guard.sources import SourceGuard
from scaserver.router.settings import CoreSettings
from scaserver.sca.line import canonical_aor
from scaserver.sip import headers
from scaserver.sip.actions import Deliver, EngineAction, Fact, Respond
from scaserver.sip.digest import FAILURES, Authenticated, Authenticator, RejectCause, Rejected
from scaserver.sip.errors import MalformedMessage
from scaserver.sip.keys import ServerKey
from scaserver.sip.message import Peer, Request
from scaserver.sip.trust import TrustedPeers, asserted


@attrs.frozen
class AuthenticationRejected(Fact):
    """A request was challenged or refused by digest authentication: ``cause`` says why,
    ``username`` is the one the credentials named (None without credentials) (the security log,
    metrics)."""

    peer: Peer
    method: str
    status: int
    stale: bool
    cause: RejectCause = RejectCause.CHALLENGE
    username: str | None = None
    realm: str = ""

    @property
    def is_failure(self) -> bool:
        """Counted towards a lockout (a first challenge or a stale nonce is not)."""
        return self.cause in FAILURES


DIGEST_REFUSALS: Final[dict[RejectCause, tuple[str, str]]] = {
    RejectCause.CHALLENGE: ("digest-challenge", "digest credentials needed"),
    RejectCause.UNKNOWN_USER: ("digest-failed", "digest answer refused: unknown user"),
    RejectCause.WRONG_PASSWORD: ("digest-failed", "digest answer refused: wrong password"),
    RejectCause.BANNED: ("digest-failed", "digest answer refused: user locked out"),
    RejectCause.STALE: ("digest-stale", "digest nonce stale"),
    RejectCause.REPLAY: ("digest-stale", "digest nonce reused"),
    RejectCause.FORBIDDEN: ("digest-identity", "authenticated user may not use this identity"),
    RejectCause.MALFORMED: ("digest-malformed", "malformed digest credentials"),
}
"""Metrics label and log text of each digest refusal, by its cause (the SIP reply is the same
for every failure; the log and the metric tell them apart)."""


class AuthenticationState(Protocol):
    """What authentication reads of the router that holds it, as it is at each request."""

    settings: CoreSettings
    authenticator: Authenticator
    trusted: TrustedPeers
    guard: SourceGuard | None


def authenticate(
    state: AuthenticationState, request: Request, peer: Peer, now: float
) -> Authenticated | Rejected | None:
    """Digest authentication (RFC 3261 22, RFC 7616); None when the peer is trusted (a PBX
    or gateway by source address) or authentication is off."""
    if not state.settings.require_auth or state.trusted.is_trusted(peer):  # the cheaper test first
        return None
    authenticator, guard = state.authenticator, state.guard
    decision = authenticator.authenticate(request, now)
    if (
        guard is not None
        and isinstance(decision, Authenticated)
        and guard.user_locked(decision.username, decision.realm, now)
    ):
        # A locked-out user gets what any failure gets: a fresh challenge.
        challenge = authenticator.challenge(request, now)
        return attrs.evolve(
            challenge, cause=RejectCause.BANNED, username=decision.username, realm=decision.realm
        )
    return decision


def refuse(
    state: AuthenticationState,
    key: ServerKey,
    request: Request,
    peer: Peer,
    rejection: Rejected,
    *,
    now: float,
    to_tag: str,
) -> list[EngineAction]:
    """The challenge or refusal of ``request`` on transaction ``key``, after the fact the
    security log and metrics count and, for a failure, the ban it brings about."""
    fact = AuthenticationRejected(
        peer,
        request.method,
        rejection.status,
        rejection.stale,
        rejection.cause,
        rejection.username,
        rejection.realm,
    )
    actions: list[EngineAction] = [Deliver(fact)]
    guard = state.guard
    if guard is not None and rejection.cause in FAILURES:
        ban = guard.auth_failed(peer.host, rejection.username, rejection.realm, now)
        if ban is not None:
            actions.append(Deliver(ban))
    realm = rejection.realm or state.authenticator.realm_for(request)
    cause, detail = DIGEST_REFUSALS[rejection.cause]
    response = rejection.response(request, to_tag=to_tag, detail=f"{detail} (realm {realm!r})", cause=cause)
    actions.append(Respond(key, response))
    return actions


def consume_credentials(request: Request, realm: str) -> Request:
    """Remove the Proxy-Authorization values for our own realm before forwarding: they were
    for us, and the next hop has no use for them (RFC 3261 22.3; Kamailio's consume_credentials)."""
    lines = request.headers.lines("Proxy-Authorization")
    if not lines:
        return request
    kept = [line for line in lines if _realm_of(line) != realm]
    headers_without = request.headers.remove("Proxy-Authorization")
    for line in kept:
        headers_without = headers_without.add("Proxy-Authorization", line)
    return request.with_headers(headers_without)


def _realm_of(credentials: str) -> str | None:
    try:
        return headers.parse_auth(credentials).param("realm")
    except MalformedMessage:
        return None


def asserting(
    state: AuthenticationState,
    request: Request,
    peer: Peer,
    decision: Authenticated | None,
    caller_line: Callable[[Request, str], str | None],
) -> Request:
    """With ``insert_pai``, a request an authenticated subscriber sends to a trusted
    upstream carries the identity the server vouches for (RFC 3325 section 4): the shared
    line the call is on when the subscriber is a member of it (``caller_line``), else the
    subscriber's own AoR (the From, which digest authentication has checked).  ``Privacy: id``
    is kept: the trusted upstream withholds the identity from hops outside the trust domain."""
    upstream = state.settings.upstream
    if (
        not state.settings.insert_pai
        or decision is None
        or upstream is None
        or upstream == peer
        or not state.trusted.is_trusted(upstream)
    ):
        return request
    identity = caller_line(request, decision.username) or canonical_aor(str(headers.from_addr(request).uri))
    if identity is None:
        return request
    return request.with_headers(asserted(request.headers, identity))
