"""What the router reports of the transactions it runs (metrics)."""

from __future__ import annotations

import attrs

from scaserver.sip.actions import Fact


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
