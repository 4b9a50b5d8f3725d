"""The router's action loop: what arrives is admitted (RFC 3261 8.2 and 18 by
:mod:`scaserver.sip.endpoint`, then the bound on open transactions), runs through the
transaction layer, and engine and layer actions are run depth-first until only the edge's are
left (``Send``, timers, ``Deliver`` of facts).

``Respond`` and ``SendRequest`` go through the transaction layer here (with what the next hop
may see, :mod:`.disclosure`, and the session timer of the call, :mod:`.sessions`); the client
transactions are :mod:`.clients`'.  The transaction layer's events are matched exhaustively:
new requests, ACKs, CANCELs and stray responses go to the router (:class:`TransactionUser`),
as do the instructions and facts the engines deliver.  Pure: no I/O, no clock."""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable
from typing import Final, Protocol, assert_never, get_args

import attrs

from scaserver.proxy.context import BranchKey
from scaserver.router.clients import ClientTransactions
from scaserver.router.disclosure import Disclosure
from scaserver.router.facts import TransactionCompleted, completion, transaction_kind
from scaserver.router.sessions import SessionTimers
from scaserver.router.settings import HELD_PER_IN_PROGRESS, CoreSettings
from scaserver.sip.actions import (
    Action,
    CancelTimer,
    Deliver,
    EngineAction,
    Fact,
    Respond,
    Send,
    SendRequest,
    StartTimer,
)
from scaserver.sip.endpoint import AdmittedRequest, AdmittedResponse, Handled, admit, refusal, stateless
from scaserver.sip.errors import ProtocolStateError, ServiceUnavailable
from scaserver.sip.keys import ClientKey, ServerKey
from scaserver.sip.message import Headers, Peer, Request, Response
from scaserver.sip.transactions import (
    AckReceived,
    CancelReceived,
    RequestReceived,
    ResponseReceived,
    StrayResponse,
    TransactionEvent,
    TransactionLayer,
    TransactionTerminated,
    TransactionTimedOut,
    TransportFailed,
)
from scaserver.sip.trust import TrustedPeers


class TransactionUser(Protocol):
    """The router, as the action loop hands it what the transaction layer and the engines
    deliver (its settings and trusted peers are read at each message: both are reloaded)."""

    settings: CoreSettings
    trusted: TrustedPeers

    def on_request(self, request: Request, peer: Peer, key: ServerKey, now: float) -> list[EngineAction]: ...

    def on_ack(self, ack: Request, peer: Peer, now: float) -> list[EngineAction]: ...

    def on_cancel(self, event: CancelReceived, now: float) -> list[EngineAction]: ...

    def on_stray_response(self, response: Response, now: float) -> list[EngineAction]: ...

    def deliver(self, delivered: Deliver, now: float) -> list[Action]:
        """``delivered.event`` is an instruction or a fact (not a transaction event); a fact is
        published with ``delivered`` itself, not a new action."""
        ...


@attrs.define
class ActionLoop:
    """Runs what the router's parts return (see the module docstring)."""

    user: TransactionUser
    layer: TransactionLayer
    unique: Callable[[], str]
    clients: ClientTransactions
    sessions: SessionTimers
    disclosure: Disclosure

    def receive(self, data: bytes, peer: Peer, now: float) -> list[Action]:
        """One datagram, or one framed stream message, from ``peer``."""
        admission = admit(data, peer, self.unique)
        # By the exact class first (a seize cycle admits 6 responses and 2 requests); a class
        # pattern of ``match`` costs an isinstance and an attribute match per case tried.
        if type(admission) is AdmittedResponse:
            return self.run(self.layer.receive_response(admission.response, admission.key, peer), now)
        match admission:
            case Handled(actions=actions):
                return list(actions)
            case AdmittedResponse(response=response, key=key):
                return self.run(self.layer.receive_response(response, key, peer), now)
            case AdmittedRequest(request=request, reply_to=destination, key=key):
                return self._receive_request(request, peer, destination, key, now)
            case unknown:
                assert_never(unknown)

    def _receive_request(
        self, request: Request, peer: Peer, destination: Peer, key: ServerKey, now: float
    ) -> list[Action]:
        settings = self.user.settings
        layer = self.layer
        bound = settings.max_transactions
        if layer.in_progress >= bound or len(layer) >= bound * HELD_PER_IN_PROGRESS:
            full = self._full_table(bound)
            if full is not None and request.method != "ACK" and key not in layer:
                retry = Headers.of(("Retry-After", str(settings.retry_after_s)))
                busy = ServiceUnavailable(full, headers=retry)
                return stateless(request, peer, busy, self.unique)
        return self.run(layer.receive_request(request, key, destination), now)

    def _full_table(self, max_transactions: int) -> str | None:
        """Which bound the transaction table has met, for the 503's log line: ``max_transactions``
        in progress, or :data:`HELD_PER_IN_PROGRESS` times that held in all; None when neither."""
        in_progress, held = self.layer.in_progress, len(self.layer)
        if in_progress >= max_transactions:
            return f"{in_progress} transactions in progress"
        if held >= max_transactions * HELD_PER_IN_PROGRESS:
            return f"{held} transactions held"
        return None

    def run(
        self, actions: Iterable[EngineAction], now: float, out: list[Action] | None = None
    ) -> list[Action]:
        """Run engine and layer actions depth-first until only edge actions remain: those are
        appended to ``out`` (a new list when None), which is returned."""
        if out is None:
            out = []
        strip, trusted = self.user.settings.strip_call_info, self.user.trusted
        for action in actions:
            # By the exact class first, the most frequent first (a seize cycle runs about 70
            # actions here), each handled in place; the nested runs append to ``out`` (no list
            # per level).  A subclass goes through the exhaustive match of _run_other.
            if type(action) is Deliver:
                event = action.event
                if type(event) in _TRANSACTION_EVENTS:
                    self._on_transaction_event(event, now, out)  # type: ignore[arg-type]
                elif isinstance(event, Fact):
                    out += self.user.deliver(action, now)
                else:
                    self._deliver(action, now, out)
            elif type(action) is StartTimer or type(action) is CancelTimer:
                out.append(action)
            elif type(action) is Send:
                message, peer = action.message, action.peer
                sent = self.disclosure.sent(message, peer, strip, trusted)
                out.append(action if sent is message else Send(sent, peer))
            elif type(action) is SendRequest:
                request, peer, context = action.request, action.peer, action.context
                if isinstance(context, BranchKey):
                    request = self.disclosure.branch(request, peer, strip, trusted)
                self._send_request(request, peer, context, now, out)
            else:
                self._run_other(action, strip, trusted, now, out)
        return out

    def _deliver(self, action: Deliver, now: float, out: list[Action]) -> None:
        event = action.event
        # A fact (most of them) is told by its one base class, a transaction event by its
        # exact class, before the union of transaction events.
        if type(event) in _TRANSACTION_EVENTS or (
            not isinstance(event, Fact) and isinstance(event, TransactionEvent)
        ):
            self._on_transaction_event(event, now, out)  # type: ignore[arg-type]
        else:
            out += self.user.deliver(action, now)

    def _send(self, action: Send, strip: bool, trusted: TrustedPeers) -> Send:
        message = action.message
        sent = self.disclosure.sent(message, action.peer, strip, trusted)
        return action if sent is message else Send(sent, action.peer)

    def _run_other(
        self, action: EngineAction, strip: bool, trusted: TrustedPeers, now: float, out: list[Action]
    ) -> None:
        match action:  # what run did not take by its exact class: Respond first
            case Respond(transaction=transaction, response=response):
                if not isinstance(transaction, ServerKey) or not isinstance(response, Response):
                    raise ProtocolStateError(f"bad Respond action {action!r}")
                response = self.disclosure.response(response, strip)
                response = self.sessions.answer(transaction, response)
                destination = self.layer.peer_of(transaction)
                refused = None if destination is None else refusal(transaction.method, destination, response)
                if refused is not None:
                    out.append(Deliver(refused))
                self.run(self.layer.respond(transaction, response, now), now, out)
                if response.status >= 200:
                    out.append(completion("server", transaction.method, response.status))
            case SendRequest(request=request, peer=peer, context=context):
                if isinstance(context, BranchKey):
                    request = self.disclosure.branch(request, peer, strip, trusted)
                self._send_request(request, peer, context, now, out)
            case Deliver():
                self._deliver(action, now, out)
            case StartTimer() | CancelTimer():
                out.append(action)
            case Send():
                out.append(self._send(action, strip, trusted))
            case _:
                assert_never(action)

    def _send_request(
        self, request: Request, peer: Peer, context: Hashable, now: float, out: list[Action]
    ) -> None:
        actions, fact = self.clients.send(request, peer, context, now)
        if fact is not None:
            out.append(Deliver(fact))
        self.run(actions, now, out)

    def _on_transaction_event(self, event: TransactionEvent, now: float, out: list[Action]) -> None:
        # The frequent ones by their exact class (a response to a NOTIFY, a transaction ending,
        # a new request), the others through the exhaustive match.
        if type(event) is ResponseReceived:
            response, client = event.response, event.key
            if response.status >= 200:
                out.append(completion("client", client.method, response.status))
            self.run(self.clients.on_response(client, response, now), now, out)
            return
        if type(event) is TransactionTerminated:
            key = event.key
            if isinstance(key, ClientKey):
                self.clients.terminated(key)
            else:
                self.sessions.forget(key)
            return
        if type(event) is RequestReceived:
            request = self.disclosure.believed(event.request, event.peer, self.user.trusted)
            self.run(self.user.on_request(request, event.peer, event.key, now), now, out)
            return
        trusted = self.user.trusted
        match event:
            case RequestReceived():
                request = self.disclosure.believed(event.request, event.peer, trusted)
                self.run(self.user.on_request(request, event.peer, event.key, now), now, out)
            case AckReceived(request=ack, peer=peer):
                believed = self.disclosure.believed(ack, peer, trusted)
                self.run(self.user.on_ack(believed, peer, now), now, out)
            case CancelReceived():
                self.run(self.user.on_cancel(event, now), now, out)
            case ResponseReceived(response=response, key=client):
                if response.status >= 200:
                    out.append(completion("client", client.method, response.status))
                self.run(self.clients.on_response(client, response, now), now, out)
            case TransactionTimedOut(key=key) | TransportFailed(key=key):
                failure = "timeout" if isinstance(event, TransactionTimedOut) else "transport-error"
                side = "client" if isinstance(key, ClientKey) else "server"
                out.append(Deliver(TransactionCompleted(transaction_kind(side, key.method), failure)))
                if isinstance(key, ClientKey):  # timer H on a server transaction: nothing more (17.2.1)
                    self.run(self.clients.on_failure(key, event, now), now, out)
            case TransactionTerminated(key=key):
                if isinstance(key, ServerKey):
                    self.sessions.forget(key)
                if isinstance(key, ClientKey):
                    self.clients.terminated(key)
            case StrayResponse(response=response):
                self.run(self.user.on_stray_response(response, now), now, out)
            case _:
                assert_never(event)


_TRANSACTION_EVENTS: Final = frozenset(get_args(TransactionEvent))
"""The classes of :data:`~scaserver.sip.transactions.TransactionEvent`, for a look-up by exact
class (``isinstance`` against the union tries its members one by one)."""
