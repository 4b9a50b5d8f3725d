"""The states of the mid-registrar's upstream registration of one AoR (push-and-parking.md
3.5) and the one table of their transitions.

Each input names what happened to the registration; the table gives the state it enters.
A row whose target is its own state is a loop (nothing changes, nothing is published).  An
input the table has no row for is our own misuse (a 2xx for a registration with no REGISTER
in flight), a bug: :func:`next_state` raises :class:`~scaserver.sip.errors.ProtocolStateError`.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import Final

from scaserver.sip.errors import ProtocolStateError

__all__ = ["UPSTREAM_TRANSITIONS", "UpstreamInput", "UpstreamState", "next_state"]


class UpstreamState(enum.Enum):
    IDLE = "IDLE"
    REGISTERING = "REGISTERING"
    REGISTERED = "REGISTERED"
    RETRYING = "RETRYING"
    LOST = "LOST"
    REJECTED = "REJECTED"


class UpstreamInput(enum.Enum):
    SENT = "sent"  # a REGISTER of the AoR (ours or a device's) went upstream
    ACCEPTED = "accepted"  # a 2xx granted the aggregate (or a mirrored contact) a lifetime
    REMOVED = "removed"  # a 2xx granted no lifetime: the upstream binding is gone
    REFUSED = "refused"  # a final failure of our REGISTER that retrying cannot mend
    FAILED = "failed"  # a transient failure (time-out, 408, 429, 5xx) while the binding is valid
    LAPSED = "lapsed"  # a transient failure after the binding's expiry
    EXPIRED = "expired"  # the refresh timer fired after the binding's expiry


_S, _I = UpstreamState, UpstreamInput

#: (state, input) -> state entered.  A REGISTER is answered only in a state that had one in
#: flight: never IDLE or REJECTED, which any sending leaves for REGISTERING.
UPSTREAM_TRANSITIONS: Final[Mapping[tuple[UpstreamState, UpstreamInput], UpstreamState]] = {
    (_S.IDLE, _I.SENT): _S.REGISTERING,
    (_S.REJECTED, _I.SENT): _S.REGISTERING,
    (_S.REGISTERING, _I.SENT): _S.REGISTERING,
    (_S.REGISTERED, _I.SENT): _S.REGISTERED,
    (_S.RETRYING, _I.SENT): _S.RETRYING,
    (_S.LOST, _I.SENT): _S.LOST,
    (_S.REGISTERING, _I.ACCEPTED): _S.REGISTERED,
    (_S.REGISTERED, _I.ACCEPTED): _S.REGISTERED,
    (_S.RETRYING, _I.ACCEPTED): _S.REGISTERED,
    (_S.LOST, _I.ACCEPTED): _S.REGISTERED,
    (_S.REGISTERING, _I.REMOVED): _S.IDLE,
    (_S.REGISTERED, _I.REMOVED): _S.IDLE,
    (_S.RETRYING, _I.REMOVED): _S.IDLE,
    (_S.LOST, _I.REMOVED): _S.IDLE,
    (_S.REGISTERING, _I.REFUSED): _S.REJECTED,
    (_S.REGISTERED, _I.REFUSED): _S.REJECTED,
    (_S.RETRYING, _I.REFUSED): _S.REJECTED,
    (_S.LOST, _I.REFUSED): _S.REJECTED,
    (_S.REGISTERING, _I.FAILED): _S.RETRYING,
    (_S.REGISTERED, _I.FAILED): _S.RETRYING,
    (_S.RETRYING, _I.FAILED): _S.RETRYING,
    (_S.LOST, _I.FAILED): _S.RETRYING,
    (_S.REGISTERING, _I.LAPSED): _S.LOST,
    (_S.REGISTERED, _I.LAPSED): _S.LOST,
    (_S.RETRYING, _I.LAPSED): _S.LOST,
    (_S.LOST, _I.LAPSED): _S.LOST,
    (_S.REGISTERED, _I.EXPIRED): _S.LOST,
    (_S.RETRYING, _I.EXPIRED): _S.LOST,
}


def next_state(aor: str, state: UpstreamState, given: UpstreamInput) -> UpstreamState:
    """The state the registration of ``aor`` enters on ``given`` in ``state``."""
    target = UPSTREAM_TRANSITIONS.get((state, given))
    if target is None:
        raise ProtocolStateError(f"upstream registration of {aor}: {given.value} in {state.value}")
    return target
