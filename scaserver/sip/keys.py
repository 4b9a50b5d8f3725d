"""The identities of transactions (RFC 3261 sections 17.1.3 and 17.2.3).

A transaction user answers a server transaction by its :class:`ServerKey` (``Respond``),
the transaction layer tags a client transaction's events with its :class:`ClientKey`,
and both are the keys of the timers the machines ask for.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import attrs

if TYPE_CHECKING:
    from scaserver.sip.headers import CSeq, Via


@attrs.frozen
class ClientKey:
    """A client transaction's identity (RFC 3261 section 17.1.3): the branch of our top Via
    and the CSeq method.  Responses match when both are equal."""

    branch: str
    method: str

    def __hash__(self) -> int:
        """The branch's hash (a string caches it): our branches are unique, and a CANCEL's key,
        which shares its INVITE's branch, is told apart by equality (83 against attrs' 122 ns)."""
        return hash(self.branch)


@attrs.frozen
class ServerKey:
    """A server transaction's identity (RFC 3261 section 17.2.3): the top Via branch, the
    top Via sent-by (host lower-cased, port as written or None) and the method, where an ACK
    is keyed as the INVITE it acknowledges."""

    branch: str
    host: str
    port: int | None
    method: str


TransactionKey = ClientKey | ServerKey


def client_key(via: Via, sequence: CSeq) -> ClientKey | None:
    """The client transaction a response with this top Via and CSeq belongs to (17.1.3),
    None without a branch."""
    branch = via.branch
    return None if branch is None else ClientKey(branch, sequence.method)
