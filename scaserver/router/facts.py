"""What the router reports of the transactions it runs (metrics)."""

from __future__ import annotations

import attrs

from scaserver.sip.actions import Deliver, Fact


@attrs.frozen
class TransactionCompleted(Fact):
    """A transaction got its final outcome: ``kind`` is ``invite-server``,
    ``non-invite-server``, ``invite-client`` or ``non-invite-client``; ``outcome`` the final
    status class (``2xx``...``6xx``), ``timeout`` or ``transport-error`` (metrics)."""

    kind: str
    outcome: str


def transaction_kind(side: str, method: str) -> str:
    """``invite-`` or ``non-invite-`` and ``side`` (``server`` or ``client``)."""
    return f"{'invite' if method == 'INVITE' else 'non-invite'}-{side}"


_COMPLETIONS: dict[tuple[str, bool, int], Deliver] = {}


def completion(side: str, method: str, status: int) -> Deliver:
    """The delivery of the :class:`TransactionCompleted` of a ``side`` transaction of ``method``
    answered with a final ``status``: one shared value per side, kind and status class (a
    frozen value needs no copy), built once, not a fact, a kind and an outcome text per
    transaction."""
    known = (side, method == "INVITE", status // 100)
    delivered = _COMPLETIONS.get(known)
    if delivered is None:
        fact = TransactionCompleted(transaction_kind(side, method), f"{status // 100}xx")
        delivered = _COMPLETIONS[known] = Deliver(fact)
    return delivered
