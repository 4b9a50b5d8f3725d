"""What the push mid-registrar (push-and-parking.md section 3) keeps between calls: the
forwards of device REGISTERs and of our own, their keys, and one
:class:`UpstreamRegistration` per AoR with its registration dialog (3.5) and the FIFO of
forwards (3.8)."""

from __future__ import annotations

import enum
from collections import deque

import attrs

from scaserver.registrar.binding import Binding, BindingKey
from scaserver.registrar.midregistrar import NO_PUSH, MidRegSettings, PushTyping
from scaserver.registrar.upstream import UpstreamState
from scaserver.sip.digestclient import Challenge, ClientCredentials
from scaserver.sip.errors import ProtocolStateError
from scaserver.sip.keys import ServerKey
from scaserver.sip.message import Peer, Request
from scaserver.sip.uri import NameAddr


@attrs.frozen
class ForwardKey:
    """SendRequest context and upstream-timeout timer key of one upstream REGISTER."""

    aor: str
    seq: int


@attrs.frozen
class AorKey:
    """Timer key of an AoR's refresh / retry and unregister timers."""

    aor: str


@attrs.frozen
class BindingChange:
    """One contact of a device REGISTER: written with ``contact``, or removed (None)."""

    key: BindingKey
    contact: NameAddr | None  # None: remove
    requested: int  # seconds, 0 for removal


class ForwardKind(enum.Enum):
    DEVICE = "device"  # a device REGISTER relayed
    REFRESH = "refresh"  # our own refresh (3.5)
    UNREGISTER = "unregister"  # our own Expires 0 (3.4)


@attrs.define
class Forward:
    kind: ForwardKind
    seq: int
    request: Request | None = None  # the device's REGISTER (DEVICE)
    peer: Peer | None = None
    transaction: ServerKey | None = None
    changes: tuple[BindingChange, ...] = ()
    typing: PushTyping = NO_PUSH
    sent: Request | None = None
    expires: int = 0
    retried_423: bool = False
    queued_at: float = 0.0
    # 3.7 mirror mode, our own REGISTERs: the mirrored contacts of dormant push bindings.
    contacts: tuple[str, ...] = ()
    # 3.5 upstream_auth: the challenge answered (our own REGISTERs) and how many were.
    challenge: Challenge | None = None
    secret: ClientCredentials | None = attrs.field(default=None, repr=False)
    challenges_answered: int = 0

    def device_transaction(self) -> ServerKey:
        """The server transaction of the device's REGISTER this forward answers."""
        if self.transaction is None:
            raise ProtocolStateError(f"a {self.kind.name} forward has no device transaction to answer")
        return self.transaction


@attrs.define
class UpstreamRegistration:
    """Our view of the upstream binding of one AoR (3.5) and its registration dialog."""

    aor: str
    call_id: str
    cseq: int = 0
    state: UpstreamState = UpstreamState.IDLE
    expires_at: float = 0.0
    granted: int = 0
    upstream_auth_needed: bool = False
    floor: int = 0  # Min-Expires learned from a 423 (3.3.4)
    failures: int = 0
    unregister_failures: int = 0
    inflight: Forward | None = None
    queue: deque[Forward] = attrs.Factory(deque)
    last_error: str | None = None
    renewed_at: float = float("-inf")  # last 2xx for the aggregate
    digest_nonce: str = ""  # the last upstream nonce we answered, and requests sent with it (nc)
    auth_realm: str = ""  # the realm and user name we last answered a challenge with (uac.*)
    auth_username: str = ""
    digest_nc: int = 0
    # The AoR's bindings as just written, while the dispatcher has not applied the writes yet.
    written: tuple[Binding, ...] | None = None

    def degraded(self) -> bool:
        return self.state in (UpstreamState.RETRYING, UpstreamState.LOST)

    def refresh_threshold(self, settings: MidRegSettings) -> float:
        """Seconds before expiry at which the aggregate is refreshed (3.1 ``refresh_fraction``,
        never later than ``refresh_floor`` before expiry)."""
        return max(settings.refresh_floor, settings.table.refresh_fraction * self.granted)

    def is_fresh(self, settings: MidRegSettings, now: float) -> bool:
        return self.state is UpstreamState.REGISTERED and self.expires_at - now > self.refresh_threshold(
            settings
        )
