"""The owners of client transactions: who hears how a request the core sent ended.

An engine (or a part above the core) sends a request with ``SendRequest(request, peer,
context)``; the router runs it through a new client transaction and hands the responses,
the time-out or the transport failure back to the owner registered for the type of
``context`` (:class:`ClientOwners`, filled by the composition root).  A context of a type
nobody registered is our own misuse: it raises :class:`ProtocolStateError` when the
request is sent, never reaches anyone by default.

- :class:`BranchKey` -> :class:`ProxyBranches` (the proxy, and push parking on provisionals);
- :class:`ForwardKey` -> :class:`UpstreamForwards` (the push mid-registrar's upstream REGISTERs);
- :class:`NotifyContext` -> :class:`ScaNotifies` (SCA NOTIFYs);
- :class:`NatPing` -> :class:`NatPings` (OPTIONS pings: a silent flow is dead);
- anything a part above the core waits for on the bus -> :class:`AnsweredOnBus`.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Hashable
from typing import Protocol, TypeVar

import attrs

from scaserver.parking.calls import CallParking
from scaserver.proxy.context import BranchKey
from scaserver.proxy.proxy import Proxy
from scaserver.registrar.midregengine import MidRegistrar
from scaserver.registrar.midregstate import ForwardKey
from scaserver.registrar.nat import FlowFailure, NatPing
from scaserver.sca.engine import NotifyContext, ScaEngine
from scaserver.sip.actions import Deliver, EngineAction, Fact
from scaserver.sip.errors import ProtocolStateError
from scaserver.sip.message import Peer, Response

ContextT = TypeVar("ContextT", bound=Hashable)
ContextT_contra = TypeVar("ContextT_contra", bound=Hashable, contravariant=True)


class ClientFailure(enum.Enum):
    """How a client transaction ended without a final response (RFC 3261 8.1.3.1)."""

    TIMEOUT = "timeout"  # timer B or F: treated as a 408
    TRANSPORT = "transport-error"  # 17.1.4: treated as a 503


class ClientOwner(Protocol[ContextT_contra]):
    """Who a client transaction's outcome goes to, for the contexts of one type."""

    def on_response(self, context: ContextT_contra, response: Response, now: float) -> list[EngineAction]:
        """A response (provisional or final) the transaction passed up."""
        ...

    def on_failure(self, context: ContextT_contra, failure: ClientFailure, now: float) -> list[EngineAction]:
        """The transaction ended without a final response (and no other target was left)."""
        ...


@attrs.frozen
class RequestAnswered(Fact):
    """The final outcome of a request sent with ``SendRequest`` for a part outside the core
    (the control plane's check-sync NOTIFY): ``status`` is the final response's, 408 after
    a time-out, 503 after a transport failure (RFC 3261 8.1.3.1)."""

    context: Hashable
    status: int


@attrs.frozen
class PingFailed(Fact):
    """A NAT ping OPTIONS to ``flow`` got no answer (timed out, or could not be sent)."""

    flow: Peer


@attrs.frozen
class _Entry:
    on_response: Callable[[Hashable, Response, float], list[EngineAction]]
    on_failure: Callable[[Hashable, ClientFailure, float], list[EngineAction]]


@attrs.define
class ClientOwners:
    """The table from ``SendRequest`` context type to the owner of its client transactions."""

    _entries: dict[type, _Entry] = attrs.field(factory=dict, init=False)

    def register(self, context_type: type[ContextT], owner: ClientOwner[ContextT]) -> None:
        """``owner`` hears the outcome of every request sent with a context of ``context_type``."""
        if context_type in self._entries:
            raise ProtocolStateError(f"client transactions of {context_type.__name__} already have an owner")

        def typed(context: Hashable) -> ContextT:
            if not isinstance(context, context_type):
                raise ProtocolStateError(f"{context!r} is no {context_type.__name__}")
            return context

        self._entries[context_type] = _Entry(
            lambda context, response, now: owner.on_response(typed(context), response, now),
            lambda context, failure, now: owner.on_failure(typed(context), failure, now),
        )

    def check(self, context: Hashable) -> None:
        """Raise when nobody owns requests sent with ``context`` (our own misuse)."""
        self._entry(context)

    def on_response(self, context: Hashable, response: Response, now: float) -> list[EngineAction]:
        return self._entry(context).on_response(context, response, now)

    def on_failure(self, context: Hashable, failure: ClientFailure, now: float) -> list[EngineAction]:
        return self._entry(context).on_failure(context, failure, now)

    def _entry(self, context: Hashable) -> _Entry:
        entry = self._entries.get(type(context))
        if entry is None:
            raise ProtocolStateError(f"no owner for client transactions of context {context!r}")
        return entry


@attrs.frozen
class ProxyBranches:
    """The proxy's branches (RFC 3261 16.7-16.9); with push parking, a provisional response
    of a parked call's branch is the parking lot's first (push-and-parking.md 6)."""

    proxy: Proxy
    parking: CallParking | None = None

    def on_response(self, context: BranchKey, response: Response, now: float) -> list[EngineAction]:
        if self.parking is not None and response.status < 200:
            relayed, parked = self.parking.on_branch_provisional(context, response, now)
            quiet = relayed or attrs.evolve(response, status=100, reason="Trying")  # relay nothing
            return parked + self.proxy.on_response(context, quiet, now)
        return self.proxy.on_response(context, response, now)

    def on_failure(self, context: BranchKey, failure: ClientFailure, now: float) -> list[EngineAction]:
        if failure is ClientFailure.TRANSPORT:
            return self.proxy.on_branch_failure(context, now)
        return self.proxy.on_branch_timeout(context, now)


@attrs.frozen
class UpstreamForwards:
    """The push mid-registrar's REGISTERs to the upstream registrar."""

    midregistrar: MidRegistrar

    def on_response(self, context: ForwardKey, response: Response, now: float) -> list[EngineAction]:
        return self.midregistrar.on_upstream_response(context, response, now)

    def on_failure(self, context: ForwardKey, failure: ClientFailure, now: float) -> list[EngineAction]:
        if failure is ClientFailure.TIMEOUT:
            return self.midregistrar.on_upstream_timeout(context, now)
        return self.midregistrar.on_upstream_failure(context, now)


@attrs.frozen
class ScaNotifies:
    """The SCA engine's NOTIFYs (RFC 6665 4.2.2: a failed one ends its subscription)."""

    sca: ScaEngine

    def on_response(self, context: NotifyContext, response: Response, now: float) -> list[EngineAction]:
        return self.sca.on_notify_response(context, response, now)

    def on_failure(self, context: NotifyContext, failure: ClientFailure, now: float) -> list[EngineAction]:
        return self.sca.on_notify_failed(context, now)


def _answered(context: Hashable, failure: ClientFailure) -> list[EngineAction]:
    return [Deliver(RequestAnswered(context, 408 if failure is ClientFailure.TIMEOUT else 503))]


@attrs.frozen
class AnsweredOnBus:
    """Requests a part above the core sends and waits for on the bus: their final outcome is
    published as :class:`RequestAnswered`."""

    def on_response(self, context: Hashable, response: Response, now: float) -> list[EngineAction]:
        if response.status >= 200:
            return [Deliver(RequestAnswered(context, response.status))]
        return []

    def on_failure(self, context: Hashable, failure: ClientFailure, now: float) -> list[EngineAction]:
        return _answered(context, failure)


@attrs.frozen
class NatPings:
    """NAT ping OPTIONS (:mod:`scaserver.registrar.nat`): an answer is published as
    :class:`RequestAnswered`; no answer makes the flow dead (``flow_dead``:
    :func:`scaserver.router.flows.flow_dead` over the running registrar and SCA engine)."""

    flow_dead: Callable[[Peer, FlowFailure, float], list[EngineAction]]

    def on_response(self, context: NatPing, response: Response, now: float) -> list[EngineAction]:
        return AnsweredOnBus().on_response(context, response, now)

    def on_failure(self, context: NatPing, failure: ClientFailure, now: float) -> list[EngineAction]:
        failed = self.flow_dead(context.flow, FlowFailure.PING_TIMEOUT, now)
        return [Deliver(PingFailed(context.flow)), *failed]
