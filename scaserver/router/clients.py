"""The client transactions the router starts for the engines' ``SendRequest`` actions: whose
each one is (the context its owner gave, :mod:`scaserver.owners`), which transport it goes
over (:mod:`.transport`), and the new transaction that replaces a failed one (RFC 3263 4.3,
:mod:`.failover`; UDP after a failed TCP connection).  The owner registered for the context's
type hears the outcome, and never a failure that was failed over."""

from __future__ import annotations

from collections.abc import Callable, Hashable

import attrs

from scaserver.owners import ClientFailure, ClientOwners
from scaserver.proxy.context import BranchKey
from scaserver.proxy.routing import branch_with_loop_hash
from scaserver.router.failover import Failover
from scaserver.router.transport import LargeRequestOverUdp, TransportChoice
from scaserver.sip.actions import Action, Deliver, EngineAction, SendRequest
from scaserver.sip.keys import ClientKey
from scaserver.sip.message import Peer, Request, Response
from scaserver.sip.serverlocation import NextHopFailed
from scaserver.sip.transactions import TransactionLayer, TransactionTimedOut, TransportFailed


def _no_alternative(destination: Peer, branch: str) -> bool:
    return False


@attrs.define
class ClientTransactions:
    """The router's client transactions and their owners' contexts (see the module docstring)."""

    layer: TransactionLayer
    unique: Callable[[], str]
    owners: ClientOwners = attrs.field(factory=ClientOwners)
    """Who hears how each request sent with ``SendRequest`` ended, by the type of its context
    (registered by the composition root)."""
    has_alternative: Callable[[Peer, str], bool] = _no_alternative
    """Whether a request to a named destination that failed on the transaction of Via branch
    ``branch`` has another target to try (RFC 3263 4.3; the edge's locator answers)."""
    contexts: dict[ClientKey, Hashable] = attrs.field(factory=dict, init=False)
    branches: dict[BranchKey, ClientKey] = attrs.field(factory=dict, init=False)
    """The client transaction of each proxy branch (for its CANCEL)."""
    transports: TransportChoice = attrs.field(init=False)
    failover: Failover = attrs.field(factory=Failover, init=False)

    def __attrs_post_init__(self) -> None:
        self.transports = TransportChoice(self.layer)

    def send(
        self, request: Request, peer: Peer, context: Hashable, now: float
    ) -> tuple[list[Action], LargeRequestOverUdp | None]:
        """Start the client transaction of ``request`` for ``context``: the layer's actions,
        and the fact of a large request going over UDP, to publish first."""
        self.owners.check(context)  # a context nobody owns is our own misuse: loud, before sending
        attempt = self.failover.attempt_of(context)
        if isinstance(context, BranchKey):
            branch = branch_with_loop_hash(context.loop_hash, self.unique())
            key, actions = self.layer.request(request, peer, now, branch=branch)
            if request.method != "ACK":
                self.contexts[key] = context
                self.branches[context] = key
                self.failover.remember(key, request, peer, context, attempt)
            return actions, None
        sent, fact = self.transports.transport_for(request, peer)
        key, actions = self.layer.request(request, sent, now)
        if request.method != "ACK":
            self.contexts[key] = context
            self.failover.remember(key, request, sent, context, attempt)
        if sent is not peer:  # transport_for returns ``peer`` itself unless it moves the request
            self.transports.upgraded(key, request, peer, context)
        return actions, fact

    def on_response(self, key: ClientKey, response: Response, now: float) -> list[EngineAction]:
        """A response on client transaction ``key``: a 503 fails over while it can, else the
        owner hears it."""
        if response.status == 503:
            retried = self._fail_over(key, "503")
            if retried is not None:
                return retried
        elif response.status >= 200:
            self.failover.forget(key)
        if response.status >= 200 and key.method != "INVITE":
            # The owner hears a non-INVITE transaction's one final response: the context is
            # not kept for timer K (5 s on UDP, 0 on TCP), when only retransmissions come,
            # nor is a proxy branch's (nothing cancels a non-INVITE branch).
            context = self.contexts.pop(key, None)
            if isinstance(context, BranchKey):
                self.branches.pop(context, None)
        else:
            context = self.contexts.get(key)  # an INVITE's 2xx may come again (RFC 6026)
        if context is None:
            return []
        return self.owners.on_response(context, response, now)

    def on_failure(
        self, key: ClientKey, event: TransactionTimedOut | TransportFailed, now: float
    ) -> list[EngineAction]:
        """Client transaction ``key`` timed out or met a transport error: failed over, sent
        again over UDP, or its owner hears it."""
        reason = "timeout" if isinstance(event, TransactionTimedOut) else "transport-error"
        retried = self._fail_over(key, reason)
        if retried is not None:
            return retried
        if isinstance(event, TransportFailed):
            retried = self._fall_back_to_udp(key)
            if retried is not None:
                return retried
        context = self.contexts.get(key)
        if context is None:
            return []
        failure = ClientFailure.TIMEOUT if isinstance(event, TransactionTimedOut) else ClientFailure.TRANSPORT
        return self.owners.on_failure(context, failure, now)

    def client_of(self, branch: BranchKey) -> ClientKey | None:
        """The client transaction of proxy branch ``branch``, while it is open."""
        return self.branches.get(branch)

    def abandon(self, context: Hashable) -> None:
        """The requests sent for ``context`` have no owner any more: their late answers are
        stray."""
        for client, owned in list(self.contexts.items()):
            if owned == context:
                del self.contexts[client]

    def terminated(self, key: ClientKey) -> None:
        """Client transaction ``key`` is gone: a late answer to it is stray."""
        self.transports.forget(key)
        self.failover.forget(key)
        context = self.contexts.pop(key, None)
        if isinstance(context, BranchKey):
            self.branches.pop(context, None)

    def _fail_over(self, key: ClientKey, reason: str) -> list[EngineAction] | None:
        """RFC 3263 section 4.3: a request to a named destination got a 503, timed out or met
        a transport error; while the locator has another target, the request goes again as a
        new client transaction (new branch) for the same owner, which never sees the failure.
        None when there is nothing to fail over to (the failure is the owner's to handle)."""
        located = self.failover.next_try(key, self.has_alternative)
        if located is None:
            return None
        request, peer, context, attempt = located
        if self.contexts.pop(key, None) is None:
            return None
        self.transports.forget(key)
        self.failover.retrying(context, attempt)
        return [Deliver(NextHopFailed(peer, key.branch, reason)), SendRequest(request, peer, context)]

    def _fall_back_to_udp(self, key: ClientKey) -> list[EngineAction] | None:
        """A request moved to TCP by :meth:`TransportChoice.transport_for` whose connection
        failed: sent again over UDP through a new transaction for the same owner, logged once.
        None when ``key`` was not moved."""
        upgraded = self.transports.fall_back(key)
        if upgraded is None:
            return None
        request, peer, context = upgraded
        if self.contexts.pop(key, None) is None:
            return []  # nobody waits for it any more
        fact = self.transports.over_udp_after_failure(request, peer)
        return [Deliver(fact), SendRequest(request, peer, context)]
