"""The four transaction state machines of RFC 3261 section 17, with the RFC 6026 corrections.

Each machine is a state enum plus one transition table ``(state, input) ->
(step, target)``; the code only carries out the step.  Machines do no I/O and
read no clock: every method returns the actions the caller must run (send,
arm or cancel a timer, deliver an event to the transaction user).

Inputs from the network or from timers that the table does not list for the
current state are absorbed (a retransmission, a late message), and so is a
timer the machine has not armed (one it cancelled that fired anyway).
Inputs from our own transaction user that the table does not list raise
:class:`~scaserver.sip.errors.ProtocolStateError`: that is a bug.

Timer keys are the transaction keys (frozen values); timer names are
:class:`~scaserver.sip.timers.TimerName` values.

This module holds what the four machines share: the events they deliver to the transaction
user and the class of a response status; the ledger of the timers they arm is
:class:`~scaserver.sip.timers.TimerLedger`.  The client
machines (17.1) are in :mod:`scaserver.sip.clienttransaction`, the server machines (17.2) in
:mod:`scaserver.sip.servertransaction`.
"""

from __future__ import annotations

import attrs

from scaserver.sip.keys import ClientKey, ServerKey, TransactionKey
from scaserver.sip.message import Peer, Request, Response

# ------------------------------------------------------------------------ events


@attrs.frozen
class RequestReceived:
    """A new request created server transaction ``key``; answer it with ``respond(key, ...)``."""

    request: Request
    peer: Peer
    key: ServerKey


@attrs.frozen
class AckReceived:
    """An ACK for a 2xx (RFC 3261 section 13.3.1.4 and RFC 6026 section 8.7): a request of
    its own that belongs to the dialog, not to the INVITE transaction."""

    request: Request
    peer: Peer


@attrs.frozen
class CancelReceived:
    """A CANCEL created server transaction ``key`` (RFC 3261 section 9.2).

    ``invite_key`` is the INVITE server transaction it matches, or None: the TU
    answers the CANCEL itself (200, or 481 without a match) and, when the INVITE
    is still unanswered, answers the INVITE with 487.
    """

    cancel: Request
    peer: Peer
    key: ServerKey
    invite_key: ServerKey | None


@attrs.frozen
class ResponseReceived:
    """A response for client transaction ``key`` that the transaction user must see."""

    response: Response
    key: ClientKey


@attrs.frozen
class StrayResponse:
    """A response that matches no client transaction (RFC 3261 section 18.1.2 hands it to
    the core: a stateful proxy forwards a stray 2xx to INVITE, section 16.7)."""

    response: Response
    peer: Peer


@attrs.frozen
class TransactionTimedOut:
    """Timer B or F fired on a client transaction (no final response: the TU treats it as a
    408, RFC 3261 section 8.1.3.1), or timer H on an INVITE server transaction (the ACK for
    our non-2xx final response never came)."""

    key: TransactionKey


@attrs.frozen
class TransportFailed:
    """The transport reported a failure for this transaction (RFC 3261 sections 17.1.4 and
    17.2.4): a client TU treats it as a 503 (section 8.1.3.1)."""

    key: TransactionKey


@attrs.frozen
class TransactionTerminated:
    """The transaction reached the Terminated state and is gone."""

    key: TransactionKey


TransactionEvent = (
    RequestReceived
    | AckReceived
    | CancelReceived
    | ResponseReceived
    | StrayResponse
    | TransactionTimedOut
    | TransportFailed
    | TransactionTerminated
)
"""What the transaction layer hands its transaction user (``Deliver(event)``)."""


def response_class(status: int) -> int:
    """1 for a provisional response, 2 for a success, 3 for any other final response."""
    return 1 if status < 200 else 2 if status < 300 else 3
