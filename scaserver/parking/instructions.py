"""What the dispatcher gives parking (push-and-parking.md section 6) and what parking asks of
its peers.

Inputs: :class:`CallSpec` (the parked INVITE), :class:`BranchTarget` (a binding to ring),
:class:`PushTarget` (a token to push), :class:`PushResult` (the push client's verdict).

Instructions, carried out by the dispatcher as ``Deliver(...)`` and never published:

* :class:`StartBranch` - add one branch to the held proxy context (``Proxy.add_targets``);
  every branch of a parked call, initial or injected, goes through it (6.4: one code path);
* :class:`CancelParkedBranch` - CANCEL one branch (a superseded branch that answered 1xx);
* :class:`SendPush` - run one push attempt through the push gateway client;
* :class:`AbortPushes` - drop queued retries of a call's push attempts (6.5);
* :class:`ReleaseCall` - stop holding the proxy context: the proxy answers with the best
  response (RFC 3261 16.7), ``fallback`` when no branch produced a final response, or keeps
  forking under its own timers when branches are still pending (6.3 case 4);
* :class:`RelayHeld` - relay a mid-dialog request held for a ``pn-purr`` wake (6.10).
"""

from __future__ import annotations

import enum
from collections.abc import Hashable

import attrs

from scaserver.sip.actions import Instruction
from scaserver.sip.keys import ServerKey
from scaserver.sip.message import Peer, Request, Response


@attrs.frozen
class BranchTarget:
    """One binding to ring: ``binding`` is its registrar key (section 3.6), ``contact`` the
    Request-URI (``pn-*`` stripped), ``path`` its Path (becomes Route), ``flow`` where to send."""

    binding: Hashable
    contact: str
    path: tuple[str, ...] = ()
    flow: Peer | None = None
    q: float = 1.0


@attrs.frozen
class PushTarget:
    """One distinct token to push for a call (5.3 dedup) and the bindings carrying it."""

    provider: str
    prid: str = attrs.field(repr=False)
    param: str
    bindings: tuple[Hashable, ...]
    device_type: str | None = None

    @property
    def token(self) -> tuple[str, str]:
        return (self.provider, self.prid)


@attrs.frozen
class CallSpec:
    """The parked INVITE: ``aors`` every AoR it is stored under (6.11: line + members);
    ``line`` the SCA (line AoR, appearance index) when it came in on a shared line."""

    server_tx: ServerKey
    request: Request
    aors: tuple[str, ...]
    call_id: str
    from_uri: str
    to_uri: str
    from_display: str | None = None
    line: tuple[str, int] | None = None
    invite_expires: int | None = None


class PushResult(enum.Enum):
    """What the push client reports for one attempt (section 5.2 outcomes)."""

    SENT = "sent"
    RETRYING = "retrying"
    INVALID = "invalid"
    FAILED = "failed"
    DROPPED = "dropped"


class PushKind(enum.Enum):
    CALL = "call"
    CANCEL = "cancel"
    REG_REFRESH = "reg-refresh"


@attrs.frozen
class SendPush(Instruction):
    """Run one push attempt (section 5.1); ``attempt`` is its id (idempotency key)."""

    attempt: str
    kind: PushKind
    target: PushTarget
    aor: str
    park_id: str | None
    call_id: str | None
    from_uri: str | None
    to_uri: str | None
    from_display: str | None
    line: tuple[str, int] | None
    ttl: int
    reason: str | None = None
    deadline: float | None = None


@attrs.frozen
class StartBranch(Instruction):
    """Add a branch to the held proxy context of ``server_tx`` (6.1 step 3, 6.4)."""

    server_tx: ServerKey
    park_id: str
    branch: int
    target: BranchTarget


@attrs.frozen
class CancelParkedBranch(Instruction):
    server_tx: ServerKey
    branch: int
    reason: str | None = None


@attrs.frozen
class AbortPushes(Instruction):
    """Drop queued retries of every attempt of ``park_id`` (6.5); in-flight requests finish."""

    park_id: str


@attrs.frozen
class ReleaseCall(Instruction):
    """Stop holding ``server_tx`` (6.3).  When nothing is pending the proxy sends the best
    response, or ``fallback`` if no branch produced a final one; ``immediately`` asks for that
    response now even when branches are pending (CANCEL, 6.5: 487 at once)."""

    server_tx: ServerKey
    fallback: Response | None
    immediately: bool = False


@attrs.frozen
class RelayHeld(Instruction):
    """Relay the mid-dialog request held on ``server_tx`` (6.10): its device woke."""

    server_tx: ServerKey
