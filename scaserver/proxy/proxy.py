"""The stateful forking proxy engine (RFC 3261 section 16, RFC 6026, RFC 4320).

:class:`Proxy` keeps one response context (16.2) per proxied request, keyed by
the server transaction key the dispatcher gives it, and one :class:`Branch`
per client transaction it asks for.  It is pure: every entry point takes
``now`` and returns :data:`~scaserver.sip.actions.EngineAction` lists.

Division of work with the router (``scaserver.router``):

* The dispatcher validates the request (16.3 items 1, 2), authenticates and
  authorises it, and applies the relay policy (:mod:`scaserver.proxy.relay`:
  no open relay; the proxy forwards wherever it is told).  The proxy signs its
  Record-Route entries for that policy (``rrsig``, rule R3).  It resolves the target set
  (16.5: location lookup, the configured upstream), using
  :func:`scaserver.proxy.routing.preprocess_route` to see the request as it
  will be routed.  Then it calls :meth:`Proxy.on_request` with the request as
  received; an empty target set means "forward to the Request-URI" (a request
  routed by its Route set, an in-dialog request, a foreign domain).
* Every ``SendRequest`` the proxy returns carries a :class:`BranchKey` as
  context.  The dispatcher runs it through ``TransactionLayer.request`` and
  remembers the returned client key for that context, until the transaction
  ends.  ``ResponseReceived`` of that key goes to :meth:`Proxy.on_response`,
  ``TransactionTimedOut`` to :meth:`Proxy.on_branch_timeout`,
  ``TransportFailed`` to :meth:`Proxy.on_branch_failure`.
* Cancelling a branch: the transaction layer alone can build a CANCEL that
  matches the branch (same Via branch, RFC 3261 9.1), so the proxy asks for it
  with ``Deliver(CancelBranch(key, reason))``.  The dispatcher intercepts that
  event (it is an instruction, never published on the bus) and calls
  ``TransactionLayer.cancel(client_key, now)``; the layer itself holds the
  CANCEL back until the branch has a provisional response (9.1).
* ``CancelReceived`` whose ``invite_key`` is a proxied INVITE goes to
  :meth:`Proxy.on_cancel`, which answers the CANCEL itself (200, RFC 3261 9.2
  and 16.10) and cancels the branches.  A CANCEL with no INVITE transaction is
  the dispatcher's (481).
* ``AckReceived`` (an ACK for a 2xx, its own transaction) for a request not
  addressed to us goes to :meth:`Proxy.on_ack`; ``StrayResponse`` goes to
  :meth:`Proxy.on_stray_response`.
* Loop detection (16.3 item 4) needs the Via branch of every branch request to
  carry :attr:`BranchKey.loop_hash`: when the dispatcher runs a SendRequest
  whose context is a BranchKey, its ``branch_factory`` must return
  :func:`scaserver.proxy.routing.branch_with_loop_hash` of that hash and a
  fresh unique part for that call.  Without it a loop still ends through
  Max-Forwards (483), only later.
* Timer C (16.6 step 11) is the proxy's: ``StartTimer(BranchKey, "C", ...)``;
  when it fires the edge hands it back through :meth:`Proxy.on_timer`.
* Call parking (push-and-parking.md section 6) holds a context: ``on_request(...,
  hold=True)`` forks to nothing yet, :meth:`Proxy.add_targets` adds branches as devices
  wake, every branch's final response is reported as ``Deliver(BranchFinished(...))`` (an
  instruction the dispatcher intercepts), and the final response waits for
  :meth:`Proxy.release` even when every branch has ended.

Choices where RFC 3261 leaves room, and why:

* When the caller CANCELs, or a 6xx or 2xx ends the search, branches that have
  had no response are cancelled too (the layer sends the CANCEL once their
  first provisional arrives), and for the best-response decision they count
  as answered 487 at once: the caller is not kept waiting 32 s for a branch
  that may never answer.  Ringing branches are CANCELled and their final
  responses (normally 487) awaited.
* Timer C (reset by provisional responses 101-199, 16.7 step 2) cancels its
  branch and counts as a 408 for that branch whether or not it had a
  provisional response (16.8): the 487 that follows the CANCEL is then
  absorbed.
* Every 2xx to an INVITE goes upstream (RFC 6026 section 8.4): the first one
  through the server transaction, later ones (other branches, retransmissions)
  statelessly to the peer the INVITE came from, because the server
  transaction may already have left its Accepted state.  The first 2xx
  cancels the other branches with ``Reason: SIP;cause=200;text="Call
  completed elsewhere"`` (RFC 3326).
* A stray 2xx to an INVITE is forwarded statelessly after our Via is removed
  (16.7 step 3, RFC 6026 section 8.4); other stray responses are dropped.
* A non-INVITE request whose best response would be a locally generated 408
  gets no response at all (RFC 4320 section 4.2): the upstream's own
  transaction times out.
* 3xx responses are relayed, not recursed on (16.7 step 4 makes recursion
  optional).
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Final

import attrs

from scaserver.proxy.context import (
    TIMER_C,
    Branch,
    BranchKey,
    BranchState,
    CancelBranch,
    ContextState,
    ResponseContext,
    best_response,
    final_events,
    is_initial,
)
from scaserver.proxy.events import (
    AckForwarded,
    CallCancelled,
    RequestForwarded,
    ResponseRelayed,
)
from scaserver.proxy.relay import signature_for
from scaserver.proxy.routing import (
    ProxyIdentity,
    add_record_route,
    apply_target,
    check_max_forwards,
    check_proxy_require,
    decrement_max_forwards,
    detect_loop,
    loop_hash,
    needs_sips_record_route,
    next_hop,
    preprocess_route,
    sender_flow,
    stateless_branch,
)
from scaserver.proxy.target import Target, order_targets
from scaserver.sip.actions import (
    CancelTimer,
    Deliver,
    EngineAction,
    Respond,
    Send,
    SendRequest,
    StartTimer,
)
from scaserver.sip.endpoint import response_destination
from scaserver.sip.errors import LoopDetected, MalformedMessage, ProtocolStateError, SipError
from scaserver.sip.headers import cseq, top_via
from scaserver.sip.keys import ServerKey
from scaserver.sip.message import Peer, Request, Response
from scaserver.sip.responses import make_response, response_for

ANSWERED_ELSEWHERE: Final = 'SIP;cause=200;text="Call completed elsewhere"'
"""Reason (RFC 3326) for branches cancelled because another branch answered."""

DIALOG_CREATING_METHODS: Final = frozenset({"INVITE", "SUBSCRIBE", "REFER"})
"""Initial requests of these methods are record-routed (16.6 step 4)."""


@attrs.frozen
class ProxySettings:
    """Tunables of the proxy.

    ``timer_c``: seconds a ringing INVITE branch may go without a provisional
    response (16.6 step 11: more than 3 minutes).  ``record_route``: stay in
    the path of dialogs (16.6 step 4).  ``supported``: Proxy-Require option
    tags we understand (16.3 item 5).
    """

    timer_c: float = 180.0
    record_route: bool = True
    supported: frozenset[str] = frozenset()


@attrs.define
class Proxy:
    """RFC 3261 section 16 stateful proxy; see the module docstring for the dispatcher's part."""

    identity: ProxyIdentity
    settings: ProxySettings = ProxySettings()
    _contexts: dict[ServerKey, ResponseContext] = attrs.field(init=False, factory=dict)

    def __contains__(self, server_tx: object) -> bool:
        return server_tx in self._contexts

    def __len__(self) -> int:
        return len(self._contexts)

    # ------------------------------------------------------------------ requests

    def on_request(
        self,
        request: Request,
        server_tx: ServerKey,
        peer: Peer,
        targets: Sequence[Target],
        now: float,
        *,
        hold: bool = False,
        honour_6xx: bool = True,
        routed: Request | None = None,
    ) -> list[EngineAction]:
        """Proxy ``request`` (received from ``peer`` on ``server_tx``) to ``targets``.

        16.3 items 3 to 5 first (483, 482, 420), then 16.4 and 16.6 for each
        target of the first q-group.  An empty ``targets`` means the
        Request-URI (after Route pre-processing) is the only target.

        With ``hold`` the context is parked (push-and-parking.md section 6): an
        empty ``targets`` starts nothing, branches come later through
        :meth:`add_targets`, every branch's final response is reported as
        :class:`BranchFinished`, and no best response is sent when all branches
        have ended until :meth:`release`.  A 2xx still goes upstream at once.

        A 6xx ends the search only when ``honour_6xx`` (RFC 3261 16.7 step 6),
        else it counts like a 4xx of its branch: call parking (6.3 case 2), and
        the members of a shared line, where one member's decline leaves the
        others ringing (BroadWorks).

        ``routed`` is ``request`` after its 16.4 Route pre-processing when the caller made it
        already (the mid-dialog relay checks it first): not made twice.
        """
        if server_tx in self._contexts:
            raise ProtocolStateError(f"server transaction {server_tx!r} is already proxied")
        try:
            check_max_forwards(request)
            if detect_loop(request, self.identity):
                raise LoopDetected("our Via with this request's loop hash is present")
            check_proxy_require(request, self.settings.supported)
            hash_part = loop_hash(request, request.headers.first_value("Via"))
            if routed is None:
                routed = preprocess_route(request, self.identity)
            prepared = decrement_max_forwards(routed)
        except SipError as error:
            response = response_for(request, error, to_tag=_generated_tag(request))
            return [Respond(server_tx, response), *final_events(request, response, now, generated=True)]
        groups: list[tuple[Target, ...]] = order_targets(targets) if targets else [(Target(prepared.uri),)]
        if hold and not targets:
            groups = []
        context = ResponseContext(server_tx, request, prepared, peer, hash_part, groups)
        context.held, context.honour_6xx = hold, honour_6xx
        self._contexts[server_tx] = context
        return self._start_next_group(context, now) if groups else []

    def add_targets(
        self, server_tx: ServerKey, targets: Sequence[Target], now: float
    ) -> tuple[list[EngineAction], list[BranchKey]]:
        """Start one more branch per target, in parallel, on a context still forking (call
        parking's injected branches, push-and-parking.md 6.4: the same code path as the
        first ones).  Returns the actions and the new branches' keys."""
        context = self._contexts.get(server_tx)
        if context is None or context.state is not ContextState.FORKING:
            raise ProtocolStateError(f"{server_tx!r} is not a forking context")
        actions: list[EngineAction] = []
        keys: list[BranchKey] = []
        for target in targets:
            actions += self._start_branch(context, target, now)
            keys.append(BranchKey(server_tx, len(context.branches) - 1, context.loop_hash))
        actions += self._advance(context, now)
        return actions, keys

    def branch_state(self, key: BranchKey) -> BranchState | None:
        """Where one branch stands; None when its context is gone."""
        context = self._contexts.get(key.server_tx)
        branch = context.branches.get(key.index) if context is not None else None
        return None if branch is None else branch.state

    def release(
        self, server_tx: ServerKey, fallback: Response | None, *, immediately: bool, now: float
    ) -> list[EngineAction]:
        """Stop holding ``server_tx`` (push-and-parking.md 6.3, 6.5).

        Nothing pending: the best response (RFC 3261 16.7), or ``fallback`` when no branch
        produced a final response.  Branches pending: forking goes on under the proxy's own
        timers.  ``immediately`` (a CANCEL) sends ``fallback`` now whatever is pending; later
        non-2xx finals are absorbed, a late 2xx is still forwarded (16.7 step 5).
        """
        context = self._contexts.get(server_tx)
        if context is None or not context.held:
            return []
        context.held = False
        if context.state is not ContextState.FORKING:
            return self._advance(context, now)
        if immediately:
            response = fallback or make_response(context.request, 487, to_tag=context.to_tag)
            context.state = ContextState.COMPLETED
            context.groups.clear()
            actions: list[EngineAction] = [
                Respond(context.server_tx, response),
                *final_events(context.request, response, now, generated=True),
            ]
            return actions + self._advance(context, now)
        if not context.pending() and not context.finals and fallback is not None:
            context.state = ContextState.COMPLETED
            del self._contexts[server_tx]
            return [
                Respond(context.server_tx, fallback),
                *final_events(context.request, fallback, now, generated=True),
            ]
        return self._advance(context, now)

    def on_ack(
        self, ack: Request, peer: Peer, now: float, *, flow: Peer | None = None, routed: Request | None = None
    ) -> list[EngineAction]:
        """Forward an ACK for a 2xx statelessly (RFC 3261 16.11) along its Route set, or to
        ``flow`` (the flow of the dialog's far end, from our Record-Route's flow tokens).
        ``routed``: ``ack`` after 16.4 Route pre-processing, when the caller has it already.

        Dropped (nothing can be answered to an ACK) when Max-Forwards is
        exhausted, the message is unusable, or the next hop is ourselves.
        """
        try:
            check_max_forwards(ack)
            if routed is None:
                routed = preprocess_route(ack, self.identity)
            prepared = decrement_max_forwards(routed)
            destination = flow or next_hop(prepared)
            branch = stateless_branch(ack)
        except SipError:
            return []
        if destination is None or self._is_us(destination):
            return []
        interface = self.identity.interface_for(destination)
        forwarded = prepared.with_headers(prepared.headers.prepend("Via", interface.via(branch)))
        return [Send(forwarded, destination), Deliver(AckForwarded(ack, forwarded, destination, now))]

    def on_cancel(
        self, cancel: Request, cancel_tx: ServerKey, invite_tx: ServerKey, now: float
    ) -> list[EngineAction]:
        """A CANCEL matching the proxied INVITE ``invite_tx`` (RFC 3261 16.10).

        The CANCEL is answered 200 here.  When the INVITE has no final
        response yet, no further branches are started, every pending branch is
        cancelled, and the best response (normally 487) follows once the
        ringing branches have answered.
        """
        actions: list[EngineAction] = [Respond(cancel_tx, make_response(cancel, 200))]
        context = self._contexts.get(invite_tx)
        if context is None or context.state is not ContextState.FORKING or context.cancelled:
            return actions
        context.cancelled = True
        context.groups.clear()
        actions.append(Deliver(CallCancelled(context.request, cancel, now)))
        actions += context.cancel_pending(None)
        actions += self._advance(context, now)
        return actions

    # ----------------------------------------------------------------- responses

    def on_response(self, context: BranchKey, response: Response, now: float) -> list[EngineAction]:
        """A response on the branch ``context`` (RFC 3261 16.7)."""
        rctx = self._contexts.get(context.server_tx)
        branch = rctx.branches.get(context.index) if rctx is not None else None
        if rctx is None or branch is None:
            return self._forward_stray(_without_top_via(response), None)
        relayed = _strip_our_via(response, branch.request)
        if response.status < 200:
            return self._provisional(rctx, branch, relayed, now)
        if response.status < 300:
            return self._success(rctx, branch, relayed, now)
        return self._failure(rctx, branch, relayed, now)

    def on_branch_timeout(self, context: BranchKey, now: float) -> list[EngineAction]:
        """The branch's client transaction timed out (timer B or F): a 408 for it (16.8)."""
        return self._synthesize(context, 408, now)

    def on_branch_failure(self, context: BranchKey, now: float) -> list[EngineAction]:
        """The branch's request could not be sent: a 503 for it (RFC 3261 16.9)."""
        return self._synthesize(context, 503, now)

    def on_stray_response(self, response: Response, now: float) -> list[EngineAction]:
        """A response that matched no client transaction (RFC 3261 16.7 step 3, RFC 6026 8.4).

        Only a 2xx to an INVITE whose top Via is ours is forwarded, statelessly,
        to the next Via.
        """
        try:
            if not self.identity.is_local_via(top_via(response)):
                return []
        except MalformedMessage:
            return []
        return self._forward_stray(_without_top_via(response), None)

    def on_timer(self, key: Hashable, name: str, now: float) -> list[EngineAction]:
        """Timer C of a branch fired (RFC 3261 16.8): CANCEL it and count it as 408."""
        if name != TIMER_C or not isinstance(key, BranchKey):
            return []
        context = self._contexts.get(key.server_tx)
        branch = context.branches.get(key.index) if context is not None else None
        if context is None or branch is None or not branch.pending:
            return []
        actions: list[EngineAction] = [] if branch.cancelled else [Deliver(CancelBranch(key))]
        branch.cancelled = True
        actions += context.count_final(branch, 408, stop_timer=False)
        actions += self._advance(context, now)
        return actions

    # ------------------------------------------------------------------ internals

    def _start_next_group(self, context: ResponseContext, now: float) -> list[EngineAction]:
        """Start one branch per target of the next q-group (16.6), in parallel."""
        actions: list[EngineAction] = []
        group = context.groups.pop(0)
        for target in group:
            actions += self._start_branch(context, target, now)
        actions += self._advance(context, now)
        return actions

    def _start_branch(self, context: ResponseContext, target: Target, now: float) -> list[EngineAction]:
        key = BranchKey(context.server_tx, len(context.branches), context.loop_hash)
        try:
            request = apply_target(context.prepared, target.uri, target.path)
            destination = target.flow or next_hop(request)
        except SipError:
            request, destination = context.prepared, None
        branch = Branch(key, target, request, destination)
        context.branches[key.index] = branch
        if destination is None:
            return context.count_final(branch, 503)
        if self.settings.record_route and _creates_dialog(context.request):
            secure = needs_sips_record_route(context.prepared, request)
            interface_for = self.identity.secure_interface_for if secure else self.identity.interface_for
            request = add_record_route(
                request,
                interface_for(context.peer),
                interface_for(destination),
                signature=signature_for(context.request, self.identity.route_key),
                flows=(sender_flow(context.request, context.peer), target.flow),
                secure=secure,
            )
            branch.request = request
        actions: list[EngineAction] = [
            SendRequest(request, destination, key),
            Deliver(RequestForwarded(context.request, request, target, destination, now)),
        ]
        if context.is_invite:
            actions.append(StartTimer(key, TIMER_C, self.settings.timer_c))
        return actions

    def _provisional(
        self, context: ResponseContext, branch: Branch, response: Response, now: float
    ) -> list[EngineAction]:
        """16.7 step 2 (timer C reset on 101-199) and step 5 (1xx other than 100 go upstream)."""
        if not branch.pending:
            return []  # cancelled or counted already
        branch.state = BranchState.PROCEEDING
        if response.status == 100:
            return []
        actions: list[EngineAction] = []
        if context.is_invite:
            actions.append(StartTimer(branch.key, TIMER_C, self.settings.timer_c))
        if context.state is ContextState.FORKING:
            actions += [
                Respond(context.server_tx, response),
                Deliver(ResponseRelayed(context.request, response, now)),
            ]
        return actions

    def _success(
        self, context: ResponseContext, branch: Branch, response: Response, now: float
    ) -> list[EngineAction]:
        """16.7 step 5: a 2xx goes upstream at once; for an INVITE every 2xx does (RFC 6026)."""
        actions: list[EngineAction] = []
        if branch.pending:
            branch.state = BranchState.COMPLETED
            if context.is_invite:
                actions.append(CancelTimer(branch.key, TIMER_C))
            actions += context.finished(branch, response.status)
        if context.state is ContextState.FORKING:
            context.state = ContextState.ANSWERED
            context.groups.clear()
            actions += [
                Respond(context.server_tx, response),
                *final_events(context.request, response, now, generated=False),
            ]
            if context.is_invite:
                actions += context.cancel_pending(ANSWERED_ELSEWHERE)
        elif context.is_invite:
            actions += [
                Send(response, context.peer),
                Deliver(ResponseRelayed(context.request, response, now)),
            ]
        actions += self._advance(context, now)
        return actions

    def _failure(
        self, context: ResponseContext, branch: Branch, response: Response, now: float
    ) -> list[EngineAction]:
        """16.7 steps 4 to 6 for a 3xx-6xx: remember it; a 6xx ends the search."""
        if not branch.pending:
            return []  # the 487 after our CANCEL of a branch already counted
        actions: list[EngineAction] = []
        if context.is_invite:
            actions.append(CancelTimer(branch.key, TIMER_C))
        branch.state = BranchState.COMPLETED
        context.finals.append((response, False))
        actions += context.finished(branch, response.status)
        ends_search = response.status >= 600 and context.honour_6xx
        if ends_search and context.state is ContextState.FORKING and not context.declined:
            context.declined = True
            context.groups.clear()
            if context.is_invite:
                actions += context.cancel_pending(None)
        actions += self._advance(context, now)
        return actions

    def _synthesize(self, key: BranchKey, status: int, now: float) -> list[EngineAction]:
        context = self._contexts.get(key.server_tx)
        branch = context.branches.get(key.index) if context is not None else None
        if context is None or branch is None or not branch.pending:
            return []
        actions = context.count_final(branch, status)
        actions += self._advance(context, now)
        return actions

    def _advance(self, context: ResponseContext, now: float) -> list[EngineAction]:
        """After a branch ended: start the next q-group, or send the best response, or forget
        the context once nothing is pending and the final response is out (16.7 step 5)."""
        if context.pending():
            return []
        if context.state is not ContextState.FORKING:
            del self._contexts[context.server_tx]
            return []
        if context.held:
            return []  # call parking releases it (6.3)
        if context.groups and not context.cancelled and not context.declined:
            return self._start_next_group(context, now)
        context.state = ContextState.COMPLETED
        del self._contexts[context.server_tx]
        response, generated = best_response(context)
        if generated and response.status == 408 and not context.is_invite:
            # RFC 4320 section 4.2: no 408 to a non-INVITE; the upstream times out by itself.
            return list(final_events(context.request, response, now, generated=True, sent=False))
        return [
            Respond(context.server_tx, response),
            *final_events(context.request, response, now, generated=generated),
        ]

    def _forward_stray(self, response: Response, peer: Peer | None) -> list[EngineAction]:
        """Forward a 2xx to an INVITE statelessly to the next Via (RFC 6026 section 8.4)."""
        try:
            if not 200 <= response.status < 300 or cseq(response).method != "INVITE":
                return []
            destination = peer or response_destination(top_via(response))
        except MalformedMessage:
            return []
        return [] if destination is None else [Send(response, destination)]

    def _is_us(self, peer: Peer) -> bool:
        return self.identity.is_local_peer(peer)


def _strip_our_via(response: Response, sent: Request) -> Response:
    """16.7 step 3: remove the Via the transaction layer added to the branch request."""
    if len(response.headers.values("Via")) > len(sent.headers.values("Via")):
        return _without_top_via(response)
    return response


def _without_top_via(response: Response) -> Response:
    return response.with_headers(response.headers.remove_first_value("Via"))


def _creates_dialog(request: Request) -> bool:
    return request.method in DIALOG_CREATING_METHODS and is_initial(request)


def _generated_tag(request: Request) -> str:
    """A To tag for a response generated before a context exists (derived from the loop hash)."""
    try:
        return "p" + loop_hash(request, request.headers.first_value("Via"))[:12]
    except MalformedMessage:
        return "p000000000000"


__all__ = [
    "ANSWERED_ELSEWHERE",
    "Proxy",
    "ProxySettings",
]
