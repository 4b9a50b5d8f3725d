"""What a message the router sends shows its next hop: the SCA Call-Info of the caller's side
stripped from call signalling (sca.md 5.3) and the index a shared line's member rings on added
(BroadWorks); identities asserted by a peer outside the trust domain removed on the way in, and
an asserted identity under ``Privacy: id`` removed on the way to one (RFC 3325 sections 5, 9.3).
The trust domain and the strip setting are read at each message (both are reloaded)."""

from __future__ import annotations

from typing import Final

import attrs

from scaserver.sca.callinfo import strip_sca
from scaserver.sca.engine import ScaEngine
from scaserver.sip import headers
from scaserver.sip.errors import MalformedMessage
from scaserver.sip.message import Headers, Message, Peer, Request, Response
from scaserver.sip.trust import (
    ASSERTED,
    IDENTITY_HEADERS,
    TrustedPeers,
    requests_id_privacy,
    without_identity,
)

CALL_METHODS: Final = frozenset({"INVITE", "ACK", "BYE", "CANCEL", "PRACK", "UPDATE", "REFER"})
"""Methods whose SCA Call-Info is stripped when relayed (sca.md 5.3; the SUBSCRIBE/NOTIFY of the
SCA packages are ours and keep it)."""


def _carries(headers: Headers, *names: str) -> bool:
    """Whether ``headers`` hold a line of one of ``names`` (canonical names): one pass over
    the lines, asked of every message the router sends or receives."""
    for name, _ in headers.fields:  # noqa: SIM110 (a plain loop: no generator resumed per line)
        if name in names:
            return True
    return False


def is_call_signalling(message: Message) -> bool:
    """A request of a :data:`CALL_METHODS` method, or a response to one."""
    if isinstance(message, Request):
        return message.method in CALL_METHODS
    try:
        return headers.cseq(message).method in CALL_METHODS
    except MalformedMessage:
        return False


def strips(message: Message, strip_call_info: bool) -> bool:
    """Whether the SCA Call-Info of ``message`` is stripped before it leaves (sca.md 5.3).
    A request's method is looked at before its headers (a NOTIFY is never stripped); a
    response's headers before its CSeq (which costs a parse)."""
    if not strip_call_info:
        return False
    if isinstance(message, Request):
        return message.method in CALL_METHODS and _carries(message.headers, "Call-Info")
    return _carries(message.headers, "Call-Info") and is_call_signalling(message)


@attrs.define
class Disclosure:
    """Rewrites what leaves and what is believed, counting the identities it removes."""

    sca: ScaEngine
    identities_removed: int = attrs.field(default=0, init=False)
    """Requests whose P-Asserted/P-Preferred-Identity was removed: from a peer outside the
    trust domain, or (``Privacy: id``) on the way to one (RFC 3325 section 5)."""

    def sent(self, message: Message, peer: Peer, strip_call_info: bool, trusted: TrustedPeers) -> Message:
        """A message about to be sent to ``peer`` as it may see it (``message`` itself when
        nothing changes)."""
        if type(message) is Request and message.method not in CALL_METHODS:
            # A NOTIFY or SUBSCRIBE of ours (most of what is sent): never stripped, never rung
            # on a line; only the asserted identity may be withheld.
            return self.disclosed(message, peer, trusted)
        sent = (
            attrs.evolve(message, headers=strip_sca(message.headers))
            if strips(message, strip_call_info)
            else message
        )
        if isinstance(sent, Request):
            sent = self.disclosed(self._ringing(sent), peer, trusted)
        return sent

    @staticmethod
    def response(response: Response, strip_call_info: bool) -> Response:
        """A response the server sends on a server transaction, without SCA Call-Info."""
        if strips(response, strip_call_info):
            return response.with_headers(strip_sca(response.headers))
        return response

    def branch(self, request: Request, peer: Peer, strip_call_info: bool, trusted: TrustedPeers) -> Request:
        """A request the proxy relays on a branch to ``peer``."""
        if strips(request, strip_call_info):
            request = request.with_headers(strip_sca(request.headers))
        return self.disclosed(request, peer, trusted)

    def believed(self, request: Request, peer: Peer, trusted: TrustedPeers) -> Request:
        """The request without the identities a peer outside the trust domain asserted or
        preferred (RFC 3325 section 5): only a trusted peer's P-Asserted-Identity is relayed."""
        if not _carries(request.headers, *IDENTITY_HEADERS) or trusted.is_trusted(peer):
            return request
        self.identities_removed += 1
        return request.with_headers(without_identity(request.headers))

    def disclosed(self, request: Request, destination: Peer, trusted: TrustedPeers) -> Request:
        """A relayed request as a next hop outside the trust domain may see it: without the
        asserted identity when the caller asked for ``Privacy: id`` (RFC 3325 sections 5, 9.3)."""
        if (
            not _carries(request.headers, ASSERTED)
            or not requests_id_privacy(request.headers)
            or trusted.is_trusted(destination)
        ):
            return request
        self.identities_removed += 1
        return request.with_headers(without_identity(request.headers))

    def _ringing(self, branch: Request) -> Request:
        """An INVITE ringing a member of a shared line carries the index the call rings on
        (BroadWorks), after the SCA values of the caller's side are stripped (5.3)."""
        index = self.sca.ringing_call_info(branch)
        if index is None:
            return branch
        return branch.with_headers(strip_sca(branch.headers).add("Call-Info", index))
