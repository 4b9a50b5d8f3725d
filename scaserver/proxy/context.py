"""The proxy's response context (RFC 3261 16.2) and its branches, and the choice of the
response that goes upstream (16.7 steps 6 and 7).

One :class:`ResponseContext` per proxied request, keyed by the server transaction key the
dispatcher gives the proxy, and one :class:`Branch` per client transaction it asked for; a
branch closed without a response of its own counts as a response of our making (408, 487,
503).  :func:`best_response` chooses among the finals collected.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from typing import Final

import attrs

from scaserver.proxy.events import CallEnded, CallEndReason, ResponseRelayed
from scaserver.proxy.target import Target
from scaserver.sip.actions import CancelTimer, Deliver, EngineAction, Instruction
from scaserver.sip.errors import MalformedMessage
from scaserver.sip.headers import to_addr
from scaserver.sip.keys import ServerKey
from scaserver.sip.message import Peer, Request, Response
from scaserver.sip.responses import make_response

TIMER_C: Final = "C"
"""Name of the proxy's INVITE branch timer (RFC 3261 16.6 step 11) in StartTimer/CancelTimer."""


# 16.7 step 6: within the 4xx class these are preferred, they tell the caller how to succeed.
_PREFERRED_4XX: Final = (401, 407, 415, 420, 484)


@attrs.frozen
class BranchKey:
    """One branch of a response context: the SendRequest context and the timer C key.

    ``loop_hash`` is the loop-detection part the branch's Via ``branch``
    should carry (16.6 step 8, :func:`scaserver.proxy.routing.branch_with_loop_hash`).
    """

    server_tx: ServerKey
    index: int
    loop_hash: str


@attrs.frozen
class CancelBranch(Instruction):
    """Instruction to the dispatcher, delivered as ``Deliver(CancelBranch(...))``: run
    ``TransactionLayer.cancel`` for the client transaction of ``branch`` (RFC 3261 9.1,
    16.10).  ``reason`` is a Reason header value (RFC 3326) for the CANCEL, if any."""

    branch: BranchKey
    reason: str | None = None


@attrs.frozen
class BranchFinished(Instruction):
    """Instruction to the dispatcher, delivered as ``Deliver(BranchFinished(...))`` while the
    context of ``branch`` is held (:meth:`Proxy.on_request` with ``hold``): the branch has a
    final response, received or counted (408 time-out, 487 cancelled, 503 unreachable).  Call
    parking decides from these when a held call ends (push-and-parking.md 6.3)."""

    branch: BranchKey
    status: int


class BranchState(enum.Enum):
    """Where one branch (one client transaction) stands, as the proxy sees it."""

    CALLING = "calling"  # sent, nothing heard yet
    PROCEEDING = "proceeding"  # a provisional response arrived
    COMPLETED = "completed"  # final response received, or counted (408, 487, 503)


class ContextState(enum.Enum):
    """What went upstream for the response context (16.7 steps 5 to 9)."""

    FORKING = "forking"  # no final response yet
    ANSWERED = "answered"  # a 2xx was sent
    COMPLETED = "completed"  # a non-2xx final response was sent (or withheld, RFC 4320)


@attrs.define
class Branch:
    key: BranchKey
    target: Target
    request: Request  # as handed to the transaction layer, without our Via
    peer: Peer | None  # None: the target could not be reached at all
    state: BranchState = BranchState.CALLING
    cancelled: bool = False  # a CancelBranch went out for it

    @property
    def pending(self) -> bool:
        return self.state is not BranchState.COMPLETED


@attrs.define
class ResponseContext:
    """RFC 3261 16.2: everything kept about one proxied request."""

    server_tx: ServerKey
    request: Request  # as received
    prepared: Request  # after Route pre-processing and Max-Forwards, before a target is applied
    peer: Peer  # where the request came from
    loop_hash: str
    groups: list[tuple[Target, ...]]  # target groups not tried yet (serial forking)
    branches: dict[int, Branch] = attrs.Factory(dict)
    finals: list[tuple[Response, bool]] = attrs.Factory(list)  # (response, generated), arrival order
    state: ContextState = ContextState.FORKING
    cancelled: bool = False
    declined: bool = False  # a 6xx arrived (16.7 step 6)
    held: bool = False  # call parking decides when the final response goes (push-and-parking.md 6.3)
    honour_6xx: bool = True  # a 6xx ends the search (RFC 3261 16.7) or counts as a 4xx of its branch

    @property
    def is_invite(self) -> bool:
        return self.request.method == "INVITE"

    @property
    def to_tag(self) -> str:
        """The To tag of responses the proxy generates itself (8.2.6.2)."""
        return "p" + self.loop_hash[:12]

    def pending(self) -> list[Branch]:
        return [branch for branch in self.branches.values() if branch.pending]

    def finished(self, branch: Branch, status: int) -> list[EngineAction]:
        """``BranchFinished`` for call parking while the context is held (6.3)."""
        return [Deliver(BranchFinished(branch.key, status))] if self.held else []

    def count_final(self, branch: Branch, status: int, *, stop_timer: bool = True) -> list[EngineAction]:
        """Close ``branch`` with a final response of our own making (408, 487, 503)."""
        actions: list[EngineAction] = []
        if stop_timer and self.is_invite and branch.peer is not None:
            actions.append(CancelTimer(branch.key, TIMER_C))
        branch.state = BranchState.COMPLETED
        response = make_response(self.request, status, to_tag=self.to_tag)
        self.finals.append((response, True))
        return actions + self.finished(branch, status)

    def cancel_pending(self, reason: str | None) -> list[EngineAction]:
        """Cancel every pending branch (9.1, 16.10).  Branches that have heard nothing count
        as 487 at once; ringing ones keep running until their final response arrives."""
        actions: list[EngineAction] = []
        for branch in self.pending():
            if branch.cancelled:
                continue
            branch.cancelled = True
            actions.append(Deliver(CancelBranch(branch.key, reason)))
            if branch.state is BranchState.CALLING:
                actions += self.count_final(branch, 487)
        return actions


def best_response(context: ResponseContext) -> tuple[Response, bool]:
    """RFC 3261 16.7 steps 6 and 7: choose the response to send upstream."""
    finals = context.finals
    if not finals:
        return make_response(context.request, 408, to_tag=context.to_tag), True
    chosen: tuple[Response, bool] | None = None
    if context.honour_6xx:  # else (call parking, 6.3 case 2) a 6xx ranks by class like a 4xx
        chosen = next((f for f in finals if f[0].status >= 600), None)
    if chosen is None:
        lowest = min(response.status // 100 for response, _ in finals)
        # Responses received from branches before our own 408/487/503, each in arrival order.
        in_class = sorted((f for f in finals if f[0].status // 100 == lowest), key=lambda f: f[1])
        chosen = in_class[0]
        if lowest == 4:
            if context.cancelled:
                chosen = next((f for f in in_class if f[0].status == 487), chosen)
            else:
                chosen = next((f for f in in_class if f[0].status in _PREFERRED_4XX), chosen)
    response, generated = chosen
    if response.status == 503:
        # 16.7 step 6: a 503 would make the upstream believe *we* are unavailable.
        return make_response(context.request, 500, to_tag=context.to_tag), True
    if response.status in (401, 407):
        response = merge_challenges(response, [r for r, _ in finals if r is not response])
    return response, generated


def merge_challenges(response: Response, others: Sequence[Response]) -> Response:
    """16.7 step 7: add every WWW-/Proxy-Authenticate of the other 401/407 responses, unmodified."""
    headers = response.headers
    seen = {(name, value) for name, value in headers.fields}
    for other in others:
        if other.status not in (401, 407):
            continue
        for name in ("WWW-Authenticate", "Proxy-Authenticate"):
            for value in other.headers.lines(name):
                if (name, value) not in seen:
                    seen.add((name, value))
                    headers = headers.add(name, value)
    return response.with_headers(headers)


def final_events(
    request: Request, response: Response, now: float, *, generated: bool, sent: bool = True
) -> list[EngineAction]:
    """The facts of the final response to ``request``: relayed (when ``sent``), a call ended."""
    events: list[EngineAction] = []
    if sent:
        events.append(Deliver(ResponseRelayed(request, response, now, generated)))
    call_id = request.call_id or ""
    if request.method == "BYE":
        events.append(Deliver(CallEnded(call_id, CallEndReason.BYE, request, response.status, now)))
    elif request.method == "INVITE" and response.status >= 300 and is_initial(request):
        reason = CallEndReason.CANCELLED if response.status == 487 else CallEndReason.FAILED
        events.append(Deliver(CallEnded(call_id, reason, request, response.status, now)))
    return events


def is_initial(request: Request) -> bool:
    """Whether ``request`` is outside a dialog (no To tag)."""
    try:
        return to_addr(request).tag is None
    except MalformedMessage:
        return False
