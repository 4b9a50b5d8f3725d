"""RFC 3263 section 4.3 for the requests the server sends to a host name: a 503, a time-out or
a transport error sends the request again, as a new client transaction for the same owner,
while the edge's locator has another target for the name."""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Final

import attrs

from scaserver.sip.keys import ClientKey
from scaserver.sip.message import Peer, Request
from scaserver.sip.serverlocation import is_numeric

MAX_FAILOVERS: Final = 8
"""At most this many new transactions for one request after RFC 3263 4.3 failures."""


@attrs.define
class Failover:
    """The client transactions to a host name, each with its request, destination, owner's
    context and how many failovers came before it; and the attempt number the next
    transaction of a context that is failing over starts with."""

    _located: dict[ClientKey, tuple[Request, Peer, Hashable, int]] = attrs.field(factory=dict, init=False)
    _attempts: dict[Hashable, int] = attrs.field(factory=dict, init=False)

    def attempt_of(self, context: Hashable) -> int:
        """How many failovers came before the request of ``context`` about to be sent."""
        # Empty but for a request failing over: then no context is hashed (the same below).
        return self._attempts.pop(context, 0) if self._attempts else 0

    def remember(self, key: ClientKey, request: Request, peer: Peer, context: Hashable, attempt: int) -> None:
        """A request to a host name: kept until its transaction ends, for RFC 3263 4.3."""
        if not is_numeric(peer.host) and request.method != "CANCEL":
            self._located[key] = (request, peer, context, attempt)

    def forget(self, key: ClientKey) -> None:
        """Client transaction ``key`` got its final answer or ended: nothing to fail over."""
        if self._located:
            self._located.pop(key, None)

    def next_try(
        self, key: ClientKey, has_alternative: Callable[[Peer, str], bool]
    ) -> tuple[Request, Peer, Hashable, int] | None:
        """The request of ``key`` (forgotten now), its destination, context and failovers so
        far, when it failed over fewer than :data:`MAX_FAILOVERS` times and the locator has
        another target (``has_alternative``); else None: the failure is the owner's to handle."""
        located = self._located.pop(key, None) if self._located else None
        if located is None:
            return None
        _, peer, _, attempt = located
        if attempt >= MAX_FAILOVERS or not has_alternative(peer, key.branch):
            return None
        return located

    def retrying(self, context: Hashable, attempt: int) -> None:
        """The request of ``context`` goes again, after ``attempt`` failovers."""
        self._attempts[context] = attempt + 1
