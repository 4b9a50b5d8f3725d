"""Facts the proxy publishes for other subsystems (SCA call tracking, reporting, parking).

They leave the engine as ``Deliver(event)`` actions and go onto the in-process
bus.  Each is a past-tense fact about signalling that passed through the
proxy; ``request`` is always the request as it was received from upstream
(before our changes), so subscribers see the caller's view.
"""

from __future__ import annotations

import enum

import attrs

from scaserver.proxy.target import Target
from scaserver.sip.actions import Fact
from scaserver.sip.message import Peer, Request, Response


@attrs.frozen
class RequestForwarded(Fact):
    """A branch of ``request`` left for ``peer`` (RFC 3261 16.6 step 10).

    ``forwarded`` is the branch request without our Via (the transaction layer
    adds it); ``target`` the target-set element it was built for.
    """

    request: Request
    forwarded: Request
    target: Target
    peer: Peer
    now: float


@attrs.frozen
class ResponseRelayed(Fact):
    """A response went upstream for ``request`` (RFC 3261 16.7 steps 5 to 9).

    Provisional responses, every 2xx, and the one final response chosen
    (best response of 16.7 step 6).  ``generated`` is true when the proxy made
    the response itself (482, 483, 420, a 408 for branches that never answered,
    the 500 replacing a 503, a 487 after CANCEL when no branch answered) rather
    than relaying one received from a branch.
    """

    request: Request
    response: Response
    now: float
    generated: bool = False


@attrs.frozen
class AckForwarded(Fact):
    """An ACK for a 2xx was forwarded statelessly (RFC 3261 16.11) to ``peer``."""

    ack: Request
    forwarded: Request
    peer: Peer
    now: float


@attrs.frozen
class CallCancelled(Fact):
    """The caller CANCELled ``request`` before it had a final response (RFC 3261 16.10)."""

    request: Request
    cancel: Request
    now: float


class CallEndReason(enum.Enum):
    """Why :class:`CallEnded` was published."""

    BYE = "bye"  # a BYE went through the proxy and got its final response (RFC 3261 15)
    FAILED = "failed"  # an initial INVITE ended with a final response >= 300
    CANCELLED = "cancelled"  # an initial INVITE CANCELled by the caller ended (487 or other)


@attrs.frozen
class CallEnded(Fact):
    """A call, or a call attempt, that went through the proxy is over.

    ``request`` is the BYE (reason BYE) or the initial INVITE; ``status`` the
    final response code relayed upstream for it.
    """

    call_id: str
    reason: CallEndReason
    request: Request
    status: int
    now: float
