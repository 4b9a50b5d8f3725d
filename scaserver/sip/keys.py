"""The identities of transactions (RFC 3261 sections 17.1.3 and 17.2.3).

A transaction user answers a server transaction by its :class:`ServerKey` (``Respond``),
the transaction layer tags a client transaction's events with its :class:`ClientKey`,
and both are the keys of the timers the machines ask for.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    from scaserver.sip.headers import CSeq, Via


class ClientKey(NamedTuple):
    """A client transaction's identity (RFC 3261 section 17.1.3): the branch of our top Via
    and the CSeq method.  Responses match when both are equal.

    An immutable pair, a tuple so that it hashes and compares in C: the transaction layer,
    the router's client tables and the stack's timers look it up about 13 times per
    transaction (a look-up 184 -> 60 ns against the frozen class with a ``__hash__`` of
    its own).  The other keys of the tables it shares are frozen classes or a
    :class:`ServerKey` (four fields), so it equals only another ClientKey."""

    branch: str
    method: str


class ServerKey(NamedTuple):
    """A server transaction's identity (RFC 3261 section 17.2.3): the top Via branch, the
    top Via sent-by (host lower-cased, port as written or None) and the method, where an ACK
    is keyed as the INVITE it acknowledges.  An immutable tuple, hashed and compared in C as
    :class:`ClientKey` (two fields: the two never equal each other)."""

    branch: str
    host: str
    port: int | None
    method: str


TransactionKey = ClientKey | ServerKey


def client_key(via: Via, sequence: CSeq) -> ClientKey | None:
    """The client transaction a response with this top Via and CSeq belongs to (17.1.3),
    None without a branch."""
    branch = via.branch
    # tuple.__new__ itself: the __new__ a NamedTuple generates is a Python function around it.
    return None if branch is None else tuple.__new__(ClientKey, (branch, sequence.method))
