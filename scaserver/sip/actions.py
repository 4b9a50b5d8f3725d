"""What the pure core asks the edge to do.  These four actions are its only outputs.

The edge (``scaserver.edge.stack``) executes them in order: it serializes and
writes ``Send``, arms and cancels timers on the injected reactor clock, and
publishes ``Deliver`` events.  Timer keys are frozen values owned by the part of
the core that asked for the timer; when a timer fires, the stack hands
``(key, name)`` back to that owner's ``on_timer``.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import TYPE_CHECKING

import attrs

from scaserver.sip.keys import ServerKey
from scaserver.sip.message import Message, Peer, Request, Response

if TYPE_CHECKING:
    from scaserver.sip.transaction import TransactionEvent


@attrs.frozen
class Send:
    """Write ``message`` to ``peer`` (its transport says which socket or connection)."""

    message: Message
    peer: Peer


@attrs.frozen
class StartTimer:
    """Fire ``name`` for ``key`` after ``delay`` seconds; re-arming replaces the old one."""

    key: Hashable
    name: str
    delay: float


@attrs.frozen
class CancelTimer:
    key: Hashable
    name: str


@attrs.frozen
class Deliver:
    """Hand an event up: a transaction-layer event to the transaction user
    (:data:`~scaserver.sip.transaction.TransactionEvent`), an :class:`Instruction` to the part
    that carries it out, or a fact onto the in-process bus.  The router tells them apart by
    type and matches the first two exhaustively."""

    event: TransactionEvent | Instruction | Fact


Action = Send | StartTimer | CancelTimer | Deliver


class Fact:
    """Something that happened, published on the in-process bus (``Deliver(fact)``): a
    past-tense value its subscribers (and the parts of the core that react to it) read."""

    __slots__ = ()


class Instruction:
    """An order one part of the core gives another, carried by ``Deliver``: the router has
    it carried out and never publishes it.  One that nobody carries out is our own bug and
    raises (:class:`~scaserver.sip.errors.ProtocolStateError`), it never lands on the bus."""

    __slots__ = ()


@attrs.frozen
class Respond:
    """Transaction-user output: answer the server transaction ``transaction`` with ``response``."""

    transaction: ServerKey
    response: Response


@attrs.frozen
class SendRequest:
    """Transaction-user output: send ``request`` to ``peer`` through a new client transaction.

    Its responses, time-out or transport failure come back to the transaction
    user that asked, tagged with ``context`` (any frozen value of the asker's).
    ``request`` carries no Via of ours yet: the transaction layer adds the top
    Via with a fresh branch.
    """

    request: Request
    peer: Peer
    context: Hashable


# What an engine (registrar, sca, proxy...) may return: the four core actions plus the two
# transaction-user requests that the dispatcher runs through the transaction layer.
EngineAction = Send | StartTimer | CancelTimer | Deliver | Respond | SendRequest
