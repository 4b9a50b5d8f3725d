"""Facts parking publishes on the bus (push-and-parking.md sections 6.3, 6.11, 9): a call
parked or refused, a branch added or answered, a pushed device woken or not, a call ended."""

from __future__ import annotations

import enum
from collections.abc import Hashable

import attrs

from scaserver.parking.instructions import CallSpec
from scaserver.sip.actions import Fact
from scaserver.sip.keys import ServerKey


class EndReason(enum.Enum):
    ANSWERED = "answered"  # F1
    DECLINED = "declined"  # F2
    EXHAUSTED = "exhausted"  # F3
    TIMEOUT = "timeout"  # F4
    CANCELLED = "cancelled"  # F5
    RELEASED = "released"  # F4 brought forward by the operator (``park.release``)


@attrs.frozen
class ParkStarted(Fact):
    """A call parked (6.1); ``spec`` is the parked INVITE, so that the history can name the
    call without reading the lot back (the call may have ended by the time the fact is read)."""

    park_id: str
    server_tx: ServerKey
    aors: tuple[str, ...]
    line: tuple[str, int] | None
    at: float
    spec: CallSpec = attrs.field(kw_only=True)


@attrs.frozen
class ParkRejected(Fact):
    """The call could not be parked (6.1 limits): the dispatcher forks it normally."""

    server_tx: ServerKey
    limit: str
    at: float


@attrs.frozen
class BranchAdded(Fact):
    park_id: str
    binding: Hashable
    injected: bool
    at: float


@attrs.frozen
class BranchAnswered(Fact):
    """``park.branch_answered`` (6.11)."""

    park_id: str
    binding: Hashable
    at: float


@attrs.frozen
class WakeObserved(Fact):
    """A pushed token's binding was confirmed ``latency_ms`` after the push was accepted
    (the ``push_wake_latency_seconds`` histogram); None when the gateway had not answered yet (race R1)."""

    park_id: str
    attempt: str
    latency_ms: int | None


@attrs.frozen
class WakeMissed(Fact):
    """``push_no_wake``: an accepted push whose device did not register in time (R23)."""

    park_id: str
    attempt: str


@attrs.frozen
class ParkEnded(Fact):
    park_id: str
    server_tx: ServerKey
    reason: EndReason
    rule: str
    at: float
