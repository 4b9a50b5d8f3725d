"""The transaction layer: creation and matching of transactions (RFC 3261 sections 17.1.3
and 17.2.3), CANCEL matching (section 9.2) and generation (section 9.1).

It owns every client and server transaction machine of
:mod:`scaserver.sip.clienttransaction` and :mod:`scaserver.sip.servertransaction`, keyed
by their :class:`ClientKey` and :class:`ServerKey`, which are also the keys of the timers
they ask for.  It does no I/O and reads no clock; every entry point returns the actions to
run.

Requests reach :meth:`TransactionLayer.receive` already validated.  A request
whose top Via has no RFC 3261 ``z9hG4bK`` branch is matched the RFC 2543 way of
section 17.2.3 (:func:`rfc2543_branch`).  Responses of a server
transaction go to the peer the request came from (section 18.2.2); the edge
applies ``received``/``rport`` when it maps that peer.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Final

import attrs

from scaserver.sip.actions import Action, Deliver, Send
from scaserver.sip.clienttransaction import (
    ClientTransaction,
    IctState,
    InviteClientTransaction,
    NictState,
    NonInviteClientTransaction,
    build_cancel,
)
from scaserver.sip.errors import ProtocolStateError
from scaserver.sip.headers import BRANCH_MAGIC_COOKIE, Via, cseq, from_addr, sent_via_text, top_via
from scaserver.sip.keys import ClientKey, ServerKey, TransactionKey, client_key
from scaserver.sip.message import Message, Peer, Request, Response
from scaserver.sip.servertransaction import (
    InviteServerTransaction,
    IstState,
    NistState,
    NonInviteServerTransaction,
    ServerTransaction,
)
from scaserver.sip.timers import TIMER_NAMES, TimerConfig, TimerName
from scaserver.sip.transaction import (
    AckReceived,
    CancelReceived,
    RequestReceived,
    ResponseReceived,
    StrayResponse,
    TransactionEvent,
    TransactionTerminated,
    TransactionTimedOut,
    TransportFailed,
)

__all__ = [
    "AckReceived",
    "CancelReceived",
    "ClientKey",
    "RequestReceived",
    "ResponseReceived",
    "ServerKey",
    "StrayResponse",
    "TransactionEvent",
    "TransactionKey",
    "TransactionLayer",
    "TransactionTerminated",
    "TransactionTimedOut",
    "TransportFailed",
    "server_key",
]


def server_key(request: Request, via: Via | None = None) -> ServerKey:
    """The server transaction key of a request (RFC 3261 section 17.2.3): top Via branch,
    sent-by and method, an ACK counting as the INVITE it acknowledges.

    A request from an RFC 2543 element (no ``z9hG4bK`` branch) is keyed by what 17.2.3
    says identifies its transaction instead: Request-URI, From tag, Call-ID, CSeq number
    and top Via; its CANCEL and the ACK of a non-2xx answer carry the same values.

    ``via`` is the request's top Via when the caller has it parsed already (admission).
    """
    if via is None:
        via = top_via(request)
    branch = via.branch
    if branch is None or not branch.startswith(BRANCH_MAGIC_COOKIE):
        branch = rfc2543_branch(request, via)
    method = "INVITE" if request.method == "ACK" else request.method
    return tuple.__new__(ServerKey, (branch, via.host.lower(), via.port, method))  # without its __new__


def rfc2543_branch(request: Request, via: Via) -> str:
    """A stand-in branch for an RFC 2543 request (17.2.3 backward compatibility); never on the wire."""
    material = "\x00".join(
        (
            request.uri,
            from_addr(request).tag or "",
            request.call_id or "",
            str(cseq(request).number),
            str(via),
        )
    )
    return "rfc2543." + hashlib.sha256(material.encode("utf-8", "surrogateescape")).hexdigest()[:24]


def _client_key(response: Response) -> ClientKey | None:
    """The client transaction a response belongs to (section 17.1.3), None without a branch."""
    return client_key(top_via(response), cseq(response))


_SERVER_TERMINATED: Final[frozenset[IstState | NistState]] = frozenset(
    {IstState.TERMINATED, NistState.TERMINATED}
)
"""The states in which a server transaction is ``terminated``."""
_SERVER_SETTLED: Final[frozenset[IstState | NistState]] = frozenset(
    {IstState.COMPLETED, IstState.CONFIRMED, IstState.ACCEPTED, NistState.COMPLETED}
)
"""The states in which a server transaction is ``settled``: its final response is sent."""
_CLIENT_TERMINATED: Final[frozenset[IctState | NictState]] = frozenset(
    {IctState.TERMINATED, NictState.TERMINATED}
)
"""The states in which a client transaction is ``terminated``."""
_CLIENT_SETTLED: Final[frozenset[IctState | NictState]] = frozenset(
    {IctState.COMPLETED, IctState.ACCEPTED, NictState.COMPLETED}
)
"""The states in which a client transaction is ``settled``: a final response arrived."""


@attrs.define
class TransactionLayer:
    """All transactions of one SIP stack.

    ``branch_factory`` returns a fresh, unguessable branch value (the ``z9hG4bK``
    prefix is added when it lacks it); ``local_via`` gives the (transport, host,
    port) that our Via carries for a request to that peer.
    """

    timers: TimerConfig
    branch_factory: Callable[[], str] = attrs.field(kw_only=True)
    local_via: Callable[[Peer], tuple[str, str, int]] = attrs.field(kw_only=True)
    _servers: dict[ServerKey, ServerTransaction] = attrs.field(init=False, factory=dict)
    _clients: dict[ClientKey, ClientTransaction] = attrs.field(init=False, factory=dict)
    # INVITE client transactions to cancel once their first provisional response arrives (9.1).
    _cancel_on_provisional: set[ClientKey] = attrs.field(init=False, factory=set)
    # CANCEL client transactions created by cancel(): their events stay inside the layer.
    _own_cancels: set[ClientKey] = attrs.field(init=False, factory=set)
    # Reason header values (RFC 3326) for the CANCEL of an INVITE client transaction.
    _cancel_reasons: dict[ClientKey, str] = attrs.field(init=False, factory=dict)
    # Transactions with their final response that only wait out their timers (Timer J keeps
    # a non-INVITE server transaction 32 s on UDP): most of the live ones under load.
    _settled: set[TransactionKey] = attrs.field(init=False, factory=set)
    # Completed non-INVITE client transactions waiting out timer K (17.1.2.2), kept as their key
    # alone: the key absorbs the late retransmissions of the final response until K fires, and
    # the machine and its timer ledger are gone (under a fan-out, tens of thousands of NOTIFYs
    # wait K out, each with about two tracked objects less for the garbage collector).
    _lingering: set[ClientKey] = attrs.field(init=False, factory=set)

    # ------------------------------------------------------------------ inputs

    def receive(self, message: Message, peer: Peer, now: float) -> list[Action]:
        """A message from ``peer``: match it to a transaction or create one (17.1.3, 17.2.3).

        Raises MalformedMessage when the top Via or the CSeq of a response cannot be parsed
        (validated requests always parse).
        """
        if isinstance(message, Response):
            return self.receive_response(message, _client_key(message), peer)
        return self._receive_request(message, peer)

    def respond(self, key: ServerKey, response: Response, now: float) -> list[Action]:
        """Send the transaction user's ``response`` through server transaction ``key``."""
        server = self._servers.get(key)
        if server is None:
            raise ProtocolStateError(f"response {response.status} for unknown server transaction {key}")
        actions = server.on_response_from_tu(response)
        self._forget_server(server)
        return actions

    def request(
        self, request: Request, peer: Peer, now: float, *, branch: str | None = None
    ) -> tuple[ClientKey, list[Action]]:
        """Send ``request`` to ``peer`` through a new client transaction.

        Our Via with a fresh branch goes on top (``branch`` when the caller
        must choose it: a proxy puts its loop-detection hash there, RFC 3261
        16.6 step 8).  An ACK (for a 2xx, RFC 3261 section 13.2.2.4) is sent
        without a transaction: its key identifies nothing the layer keeps.
        """
        branch = branch if branch is not None else self.branch_factory()
        if not branch.startswith(BRANCH_MAGIC_COOKIE):
            branch = BRANCH_MAGIC_COOKIE + branch
        transport, host, port = self.local_via(peer)
        via = Via("SIP/2.0", transport.upper(), host, port, (("branch", branch),))
        # Our Via goes before the first Via (a proxied request) or on top (a request of ours).
        request = request.with_headers(request.headers.prepend("Via", sent_via_text(via)))
        key = tuple.__new__(ClientKey, (branch, request.method))  # ClientKey(), without its __new__
        if request.method == "ACK":
            return key, [Send(request, peer)]
        return key, self._new_client(key, request, peer).start()

    def cancel(self, key: ClientKey, now: float, *, reason: str | None = None) -> list[Action]:
        """Cancel the INVITE of client transaction ``key`` (RFC 3261 section 9.1); ``reason``
        is a Reason header value (RFC 3326) for the CANCEL.

        The CANCEL goes out now if a provisional response arrived, else as soon
        as one does; nothing is sent if the INVITE already has a final response
        or its transaction ended.  Sending the CANCEL re-arms timer B on the
        INVITE: without a final response 64*T1 later the INVITE transaction
        times out.  The CANCEL's own transaction is internal: its responses and
        end are not delivered.
        """
        if key.method != "INVITE":
            raise ProtocolStateError(f"CANCEL of non-INVITE client transaction {key}")
        invite = self._clients.get(key)
        if not isinstance(invite, InviteClientTransaction):
            return []
        if reason is not None:
            self._cancel_reasons.setdefault(key, reason)
        if invite.state is IctState.CALLING:
            self._cancel_on_provisional.add(key)
            return []
        if invite.state is IctState.PROCEEDING:
            return self._send_cancel(invite)
        return []

    def on_timer(self, key: TransactionKey, name: str, now: float) -> list[Action]:
        """Timer ``name`` fired for transaction ``key``; unknown keys are timers that outlived it."""
        # Subscripts behind ``in``, not dict.get calls: most timers are K of a lingering key
        # (not in _clients) or J of a settled server transaction.
        timer = TIMER_NAMES[name] if name in TIMER_NAMES else TimerName(name)  # an unknown name raises
        if type(key) is ServerKey:
            if key not in self._servers:
                return []
            server = self._servers[key]
            actions = server.on_timer(timer)
            self._forget_server(server)
            return actions
        if key not in self._clients:
            if timer is TimerName.K and key in self._lingering:
                return self._end_lingering(key)
            return []  # E or F that lost a race with the final response, or a timer outliving its transaction
        client = self._clients[key]
        return self._client_output(client, client.on_timer(timer))

    def transport_failed(self, key: TransactionKey, now: float) -> list[Action]:
        """The transport could not send for transaction ``key`` (RFC 3261 sections 17.1.4, 17.2.4)."""
        if isinstance(key, ServerKey):
            server = self._servers.get(key)
            if server is None:
                return []
            actions = server.on_transport_error()
            self._forget_server(server)
            return actions
        client = self._clients.get(key)
        if client is None:
            return []  # gone, or completed: a completed transaction absorbs transport errors
        return self._client_output(client, client.on_transport_error())

    # ------------------------------------------------------------- inspection

    def peer_of(self, key: ServerKey) -> Peer | None:
        """Where the responses of server transaction ``key`` go; None when it is gone."""
        server = self._servers.get(key)
        return None if server is None else server.peer

    def keys_for(self, peer: Peer) -> tuple[TransactionKey, ...]:
        """The live transactions that send to ``peer`` (for a closed TCP/TLS connection)."""
        servers = tuple(key for key, tx in self._servers.items() if tx.peer == peer)
        return servers + tuple(key for key, tx in self._clients.items() if tx.peer == peer)

    def __contains__(self, key: object) -> bool:
        return key in self._servers or key in self._clients or key in self._lingering

    def __len__(self) -> int:
        """The transactions held: in progress, and settled ones waiting out their timers."""
        return len(self._servers) + len(self._clients) + len(self._lingering)

    @property
    def in_progress(self) -> int:
        """The transactions still without a final response: the work the stack has open."""
        return len(self._servers) + len(self._clients) - len(self._settled)

    # --------------------------------------------------------------- requests

    def _receive_request(self, request: Request, peer: Peer) -> list[Action]:
        return self.receive_request(request, server_key(request), peer)

    def receive_request(self, request: Request, key: ServerKey, peer: Peer) -> list[Action]:
        """A request from ``peer`` whose server transaction key is ``key``, as
        :func:`server_key` gives it from the top Via admission parsed: matched to its server
        transaction (a retransmission, an ACK to a non-2xx) or a new one created (17.2.3)."""
        server = self._servers.get(key)
        if request.method == "ACK":
            if isinstance(server, InviteServerTransaction):
                actions = server.on_ack(request, peer)
                self._forget_server(server)
                return actions
            return [Deliver(AckReceived(request, peer))]  # the ACK of a 2xx: its own transaction
        if server is not None:
            actions = server.on_request_retransmission()
            self._forget_server(server)
            return actions
        reliable = peer.transport.reliable
        if request.method == "INVITE":
            server = InviteServerTransaction(key, request, peer, reliable, self.timers)
        else:
            server = NonInviteServerTransaction(key, peer, reliable, self.timers)
        actions = server.start()
        self._servers[key] = server
        if request.method == "CANCEL":
            invite = self._servers.get(key._replace(method="INVITE"))
            invite_key = invite.key if isinstance(invite, InviteServerTransaction) else None
            actions.append(Deliver(CancelReceived(request, peer, key, invite_key)))
        else:
            actions.append(Deliver(RequestReceived(request, peer, key)))
        return actions

    def _forget_server(self, server: ServerTransaction) -> None:
        # The machines' ``terminated`` and ``settled`` read from their state by set membership
        # (two property calls less per request and per response).
        state = server.state
        if state in _SERVER_TERMINATED:
            if self._servers.pop(server.key, None) is not None:
                self._settled.discard(server.key)
        elif state in _SERVER_SETTLED:
            self._settled.add(server.key)

    # -------------------------------------------------------------- responses

    def receive_response(self, response: Response, key: ClientKey | None, peer: Peer) -> list[Action]:
        """A response from ``peer`` whose top Via and CSeq name client transaction ``key``
        (None without a branch), as :func:`~scaserver.sip.keys.client_key` gives it from the
        values its validation parsed: matched to that transaction, or stray (17.1.3)."""
        client = None if key is None else self._clients.get(key)
        if client is None:
            if key in self._lingering:
                return []  # a retransmitted response in Completed is absorbed (17.1.2.2)
            return [Deliver(StrayResponse(response, peer))]
        actions = self._client_output(client, client.on_response(response))
        if (
            type(client) is InviteClientTransaction
            and client.key in self._cancel_on_provisional
            and client.state is IctState.PROCEEDING
        ):
            actions += self._send_cancel(client)
        return actions

    def _send_cancel(self, invite: InviteClientTransaction) -> list[Action]:
        self._cancel_on_provisional.discard(invite.key)
        key = ClientKey(invite.key.branch, "CANCEL")
        if key in self._clients or key in self._lingering:
            return []  # already cancelled
        assert invite.request is not None  # Proceeding keeps the INVITE
        request = build_cancel(invite.request)
        reason = self._cancel_reasons.pop(invite.key, None)
        if reason is not None:
            request = request.with_headers(request.headers.add("Reason", reason))
        cancel = self._new_client(key, request, invite.peer)
        self._own_cancels.add(key)
        return [*invite.on_cancel_sent(), *cancel.start()]

    def _new_client(self, key: ClientKey, request: Request, peer: Peer) -> ClientTransaction:
        reliable = peer.transport.reliable
        client: ClientTransaction
        if request.method == "INVITE":
            client = InviteClientTransaction(key, request, peer, reliable, self.timers)
        else:
            client = NonInviteClientTransaction(key, request, peer, reliable, self.timers)
        self._clients[key] = client
        return client

    def _client_output(self, client: ClientTransaction, actions: list[Action]) -> list[Action]:
        """Forget a terminated client transaction; keep the events of our own CANCELs inside."""
        key = client.key
        state = client.state  # terminated and settled by set membership, not property calls
        # The CANCEL tables are empty but for INVITEs being cancelled: then no key is hashed.
        if state in _CLIENT_TERMINATED:
            del self._clients[key]
            self._settled.discard(key)
            if self._cancel_on_provisional:
                self._cancel_on_provisional.discard(key)
            if self._cancel_reasons:
                self._cancel_reasons.pop(key, None)
        elif state in _CLIENT_SETTLED:
            if type(client) is NonInviteClientTransaction:
                # Completed: only timer K is armed, the key alone waits it out (_lingering).
                del self._clients[key]
                self._lingering.add(key)
            else:
                self._settled.add(key)
        if self._own_cancels and key in self._own_cancels:
            if state in _CLIENT_TERMINATED:
                self._own_cancels.discard(key)
            return [action for action in actions if not isinstance(action, Deliver)]
        return actions

    def _end_lingering(self, key: ClientKey) -> list[Action]:
        """Timer K fired for a completed non-INVITE client transaction: it terminates (17.1.2.2)."""
        self._lingering.discard(key)
        if self._own_cancels and key in self._own_cancels:
            self._own_cancels.discard(key)
            return []
        return [Deliver(TransactionTerminated(key))]
