"""What the push service publishes (push-and-parking.md sections 4.5 and 5): the facts the
edge's gateway client, persistence, metrics and history read, and its keep-alive timer key."""

from __future__ import annotations

import enum

import attrs

from scaserver.push.gateway import PushRequest
from scaserver.registrar.binding import Binding, BindingKey
from scaserver.sip.actions import Fact


@attrs.frozen
class KeepaliveKey:
    """Timer key of one push binding's keep-alive steps (section 4.5): the ``reg-refresh``
    push of ``wake`` bindings, the end of a dormant ``extend`` binding's retention."""

    binding: BindingKey


@attrs.frozen
class BindingRetained(Fact):
    """An ``extend`` binding passed its requested expiry and stays, dormant, as a push-only
    binding until ``until`` (section 4.5); persistence keeps it stored."""

    binding: Binding
    until: float


@attrs.frozen
class PushRequested(Fact):
    """Fact for the edge: run this push attempt through the gateway client (section 5)."""

    request: PushRequest
    deadline: float | None


@attrs.frozen
class PushesAborted(Fact):
    """Fact for the edge: drop queued retries of the pushes of a parked call (6.5)."""

    park_id: str


class PushOutcome(enum.Enum):
    """How a push attempt ended, as counted (section 5.3 metrics)."""

    SENT = "sent"
    INVALID = "invalid"
    FAILED = "failed"
    DROPPED = "dropped"


@attrs.frozen
class PushAnswered(Fact):
    """One push attempt ended (``push_sent``, ``push_failed``, ``push_invalidated``,
    ``push_dropped``); ``kind`` is its type, ``status`` the gateway's HTTP status if any."""

    attempt: str
    kind: str
    outcome: PushOutcome
    status: int | None
    at: float


@attrs.frozen
class PushRetrying(Fact):
    """A push attempt will be retried (``push_retried``)."""

    attempt: str
    at: float
