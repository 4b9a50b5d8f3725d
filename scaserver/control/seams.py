"""What the control plane needs from the engines, as Protocols over plain frozen values.

The composition root implements these over the SCA engine (``ScaControl``) and the registrar
(``LocationControl``); ``control`` never imports the engines (layers contract).  Reads are
synchronous snapshots of in-memory state.  Mutations are coroutines: they change state, send
the resulting NOTIFYs (rpc.md 3.2: "Mutating methods send the resulting call-info NOTIFYs
before returning") and report the contacts whose NOTIFY failed.

All times are epoch seconds (float).  AoR arguments arrive as the operator typed them; the
implementation canonicalises them (sca.md section 1 for SCA lines; rpc.md 3.3 for usrloc: a
``user@domain`` or full URI, a bare user gets the default domain).
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from typing import Protocol

import attrs


class ScaEvent(enum.StrEnum):
    """The two SCA event packages (sca.md section 3)."""

    CALL_INFO = "call-info"
    LINE_SEIZE = "line-seize"


class AppearanceStateName(enum.StrEnum):
    """Appearance states as reported and accepted by RPC (rpc.md 3.2, exact strings).

    The engine's internal ``ACTIVE_PENDING`` is reported as ``active`` (its wire token,
    sca.md 6.1).  ``ringing`` is accepted as an input alias of ``alerting`` (see
    ``parse_state``) and never output.
    """

    IDLE = "idle"
    SEIZED = "seized"
    PROGRESSING = "progressing"
    ALERTING = "alerting"
    ACTIVE = "active"
    HELD = "held"
    HELD_PRIVATE = "held-private"


def parse_state(text: str) -> AppearanceStateName | None:
    """The state an RPC argument names (``ringing`` = ``alerting``), or None if invalid."""
    if text == "ringing":
        return AppearanceStateName.ALERTING
    try:
        return AppearanceStateName(text)
    except ValueError:
        return None


@attrs.frozen
class SubscriptionInfo:
    """One SCA subscription (sca.md 8.1; rpc.md 3.2 "Subscription").

    ``subscriber`` is the identity that subscribed (the SUBSCRIBE's From URI); ``contact`` is
    the SUBSCRIBE's Contact URI, the record's key component and the NOTIFY Request-URI.
    ``state`` is ``active``, ``pending``, ``terminated`` or ``terminated;reason=<reason>``.
    ``from_tag`` is the subscriber's tag, ``to_tag`` ours.  ``appearance_index`` is set for
    line-seize subscriptions only.
    """

    aor: str
    event: ScaEvent
    subscriber: str
    contact: str
    state: str
    expires_at: float
    call_id: str
    from_tag: str
    to_tag: str
    notify_cseq: int
    subscribe_cseq: int
    appearance_index: int | None = None


@attrs.frozen
class AppearanceInfo:
    """One appearance of a line (sca.md 6.1; rpc.md 3.2 "Appearance").

    ``owner`` is the member contact using it, ``callee`` the far end's URI, ``appearance_uri``
    what the group is shown (sca.md 7.5); ``member_tag``/``remote_tag``/``role`` come from the
    call's dialog (role ``caller`` or ``callee``).  An idle index (``show_appearance`` lists
    them) has everything but ``aor``/``index``/``state`` unset and times 0.
    """

    aor: str
    index: int
    state: AppearanceStateName
    owner: str | None = None
    callee: str | None = None
    appearance_uri: str | None = None
    call_id: str | None = None
    member_tag: str | None = None
    remote_tag: str | None = None
    role: str | None = None
    ctime: float = 0.0
    mtime: float = 0.0


@attrs.frozen
class LineInfo:
    """A line's appearances (``sca.show_appearance``): every index from 1 to
    ``max_appearances`` including idle ones; with ``max_appearances`` 0 (unlimited) the in-use
    indexes only."""

    aor: str
    max_appearances: int
    appearances: tuple[AppearanceInfo, ...]


@attrs.frozen
class AppearanceChange:
    """An appearance after an RPC changed it, and the contacts whose group NOTIFY failed."""

    appearance: AppearanceInfo
    notify_failed: tuple[str, ...] = ()


@attrs.frozen
class Deactivation:
    """Subscriptions ended by RPC (each got ``terminated;reason=deactivated`` and was removed)."""

    subscriptions: tuple[SubscriptionInfo, ...]
    notify_failed: tuple[str, ...] = ()


class AppearanceRefusal(enum.Enum):
    """Why an appearance RPC changed nothing (mapped to rpc.md 3.2's faults by control)."""

    NO_LINE = "no-line"  # the AoR has no line record
    NOT_IN_USE = "not-in-use"  # the index is idle
    NO_FREE_INDEX = "no-free-index"  # every index up to max_appearances is busy


class ScaControl(Protocol):
    """The SCA engine as seen by ``sca.*`` (rpc.md 3.2, sca.md section 11)."""

    def all_subscriptions(self) -> Sequence[SubscriptionInfo]:
        """Every subscription, ordered by (aor, event, contact)."""
        ...

    def subscription_count(self, event: ScaEvent) -> int:
        """How many subscriptions of ``event`` exist."""
        ...

    def show_subscription(self, aor: str, event: ScaEvent, contact: str | None) -> Sequence[SubscriptionInfo]:
        """The subscriptions of ``aor`` for ``event``, only the one of ``contact`` when given."""
        ...

    def all_appearances(self) -> Sequence[AppearanceInfo]:
        """Every non-idle appearance, ordered by (aor, index)."""
        ...

    def show_appearance(self, aor: str) -> LineInfo | None:
        """The line of ``aor``; None when the AoR has no line record."""
        ...

    async def deactivate_all_subscriptions(self) -> Deactivation:
        """Terminate and remove every subscription (``reason=deactivated``, full state)."""
        ...

    async def deactivate_subscription(self, aor: str, event: ScaEvent, contact: str) -> Deactivation | None:
        """Terminate and remove one subscription; None when it does not exist."""
        ...

    async def seize_appearance(self, aor: str, owner: str) -> AppearanceChange | AppearanceRefusal:
        """Seize the lowest free index for ``owner`` (creating the line if needed), group NOTIFY.

        Refusal: ``NO_FREE_INDEX``.
        """
        ...

    async def update_appearance(
        self, aor: str, index: int, state: AppearanceStateName, appearance_uri: str | None
    ) -> AppearanceChange | AppearanceRefusal:
        """Force an in-use appearance into ``state`` (and set its appearance-uri), group NOTIFY.

        Refusals: ``NO_LINE``, ``NOT_IN_USE``.
        """
        ...

    async def release_appearance(self, aor: str, index: int) -> AppearanceChange | AppearanceRefusal:
        """Release an in-use appearance (it becomes idle), group NOTIFY; ``index`` >= 1.

        Refusals: ``NO_LINE``, ``NOT_IN_USE``.
        """
        ...

    async def flush(self) -> int:
        """Run the subscription write-behind now; the number of records written."""
        ...


@attrs.frozen
class PushInfo:
    """Push coordinates and state of a contact, as shown by usrloc (never the raw token;
    push-and-parking.md 4.3): ``source`` ``rfc8599`` or ``legacy``; ``push_capable`` false
    once the token was declared invalid (``invalidated_at``); ``dormant`` for an ``extend``
    binding past its expiry, reached by push only (4.5); times are epoch seconds."""

    provider: str
    prid_sha256: str
    param: str | None = None
    source: str = "rfc8599"
    device_type: str | None = None
    keepalive: str = "wake"
    push_capable: bool = True
    dormant: bool = False
    invalidated_at: float | None = None
    last_push_at: float | None = None
    last_wake_ms: int | None = None


@attrs.frozen
class ContactInfo:
    """One registered contact (rpc.md 3.3 "Contact object"; Kamailio usrloc's ucontact).

    ``expires_at`` None means permanent.  ``received`` is ``proto:host:port`` of the REGISTER's
    source; ``socket`` our listening socket as ``proto:host:port``.  Fields Kamailio has and we
    do not track keep their defaults.
    """

    address: str
    expires_at: float | None
    call_id: str
    cseq: int
    q: float | None = None
    user_agent: str | None = None
    received: str | None = None
    path: tuple[str, ...] = ()
    state: str = "CS_SYNC"
    flags: int = 0
    cflags: int = 0
    socket: str | None = None
    methods: int | None = None
    ruid: str | None = None
    instance: str | None = None
    reg_id: int = 0
    server_id: int = 0
    tcpconn_id: int = -1
    keepalive: int = 0
    last_keepalive: float = 0.0
    ka_roundtrip: int = 0
    last_modified: float = 0.0
    push: PushInfo | None = None


@attrs.frozen
class AorRecord:
    """An address-of-record and its contacts."""

    aor: str
    contacts: tuple[ContactInfo, ...]


class ContactRemoval(enum.Enum):
    REMOVED = "removed"
    NO_AOR = "no-aor"
    NO_CONTACT = "no-contact"


class LocationControl(Protocol):
    """The registrar's location service as seen by ``ul.*`` (rpc.md 3.3)."""

    def dump(self) -> Sequence[AorRecord]:
        """Every AoR with at least one contact, ordered by AoR."""
        ...

    def lookup(self, aor: str) -> AorRecord | None:
        """The AoR's record; None when it has no contacts."""
        ...

    async def rm(self, aor: str) -> bool:
        """Remove every contact of ``aor`` (administrative removal); False when unknown."""
        ...

    async def rm_contact(self, aor: str, contact: str) -> ContactRemoval:
        """Remove one contact (matched per RFC 3261 19.1.4) of ``aor``."""
        ...

    async def flush(self) -> None:
        """Force the database write of pending registration changes."""
        ...


@attrs.frozen
class ParkedTransaction:
    """One parked INVITE in the tsilo table (rpc.md 3.4): ``ruri`` the AoR it is stored under;
    ``tindex``/``tlabel`` our opaque transaction identifiers, stable while it is parked."""

    ruri: str
    tindex: int
    tlabel: int
    call_id: str


@attrs.frozen
class UpstreamInfo:
    """The mid-registrar's upstream registration of one AoR (rpc.md 3.5, push-and-parking.md
    3.5 and 9): ``state`` one of ``IDLE|REGISTERING|REGISTERED|RETRYING|LOST|REJECTED``,
    ``expires_at`` epoch seconds (0 when not registered), ``last_ok`` the last 2xx, if any."""

    aor: str
    mode: str
    state: str
    expires_at: float
    last_ok: float | None
    last_error: str | None
    upstream_auth_needed: bool


@attrs.frozen
class ParkedBranchInfo:
    """One branch of a parked call (push-and-parking.md 9): ``binding`` the registrar's binding
    key as text (a push token in it is shown as SHA-256), ``contact`` the Request-URI rung;
    ``state`` is ``calling``, ``proceeding``, ``superseded`` (replaced by a newer branch to the
    same device before any response, 6.4) or ``done`` with the final ``status``."""

    index: int
    binding: str
    contact: str
    started_at: float
    state: str
    status: int | None = None


@attrs.frozen
class PushAttemptInfo:
    """One push attempt of a parked call (push-and-parking.md 9): the token as SHA-256 only;
    ``state`` one of ``queued|sent|retrying|woken|no-wake|invalid|failed|dropped``;
    ``wake_deadline`` when an accepted push stops waiting for its device (``wake_timeout``)."""

    attempt: str
    provider: str
    prid_sha256: str
    state: str
    sent_at: float
    accepted_at: float | None = None
    wake_deadline: float | None = None


@attrs.frozen
class ParkedCallInfo:
    """One parked INVITE (rpc.md 3.4 ``park.dump``): ``ruris`` every AoR it is stored under
    (usrloc spelling, the first is the called AoR); ``state`` ``parked`` or ``grace`` (6.2
    ``inflight_grace``); ``timeout_at`` its ``park_timeout`` deadline, ``grace_until`` the end
    of the grace wait when in it."""

    park_id: str
    ruris: tuple[str, ...]
    call_id: str
    caller: str
    callee: str
    state: str
    parked_at: float
    timeout_at: float
    grace_until: float | None
    branches: tuple[ParkedBranchInfo, ...]
    pushes: tuple[PushAttemptInfo, ...]


@attrs.frozen
class WakeOutcome:
    """One ``reg-refresh`` push of ``pushreg.wake`` (rpc.md 3.5): ``contact`` without its
    ``pn-*`` parameters; ``status`` ``sent``, ``invalid``, ``failed``, ``dropped`` (the
    gateway's last word, ``gateway_status`` its HTTP status if any), ``pending`` (no answer
    within the wait; it goes on) or ``suppressed`` (a ``reg-refresh`` for that token went out
    less than ``push.refresh_trigger`` ago, push-and-parking.md 5.3); ``latency_ms`` from the
    push to the gateway's answer."""

    contact: str
    provider: str
    status: str
    gateway_status: int | None = None
    latency_ms: int | None = None


@attrs.frozen
class UacRegistration:
    """The mid-registrar's upstream registration of one AoR in Kamailio ``uac`` terms (rpc.md
    3.5 ``uac.reg_dump``).  ``l_uuid`` is the AoR (usrloc spelling); the local and remote
    identities are both the AoR (the mid-registrar registers the AoR it serves);
    ``auth_proxy`` our upstream next hop; ``expires`` the interval we ask for; ``flags`` the
    ``UAC_FLAG_*`` bits; ``timer_expires`` when the upstream binding lapses (0: never
    registered); ``reg_init`` the last 2xx (0: none).  Passwords are never part of it."""

    l_uuid: str
    l_username: str
    l_domain: str
    r_username: str
    r_domain: str
    realm: str
    auth_username: str
    auth_proxy: str
    expires: int
    flags: int
    timer_expires: float
    reg_init: float
    reg_delay: int
    contact_addr: str
    socket: str


#: ``UacRegistration.flags`` bits, Kamailio uac's values.
UAC_FLAG_DISABLED = 1
UAC_FLAG_ONGOING = 2
UAC_FLAG_ONLINE = 4
UAC_FLAG_AUTHSENT = 8
UAC_FLAG_INIT = 16


class UacRefusal(enum.Enum):
    """Why ``uac.reg_refresh`` sent nothing."""

    NO_RECORD = "no-record"  # no upstream registration with that l_uuid
    MIRROR_MODE = "mirror-mode"  # devices refresh their own upstream bindings (3.7)
    NO_BINDINGS = "no-bindings"  # no local binding left to register (3.4)


class ParkingControl(Protocol):
    """Call parking and the push mid-registrar as seen by ``ts.*``, ``park.*``, ``pushreg.*``
    and ``uac.*`` (rpc.md 3.4, 3.5)."""

    def parked(self) -> Sequence[ParkedTransaction]:
        """Every parked INVITE, ordered by (ruri, tlabel)."""
        ...

    def parked_calls(self, ruri: str | None = None) -> Sequence[ParkedCallInfo]:
        """Every parked call ordered by park id, or those stored under ``ruri``
        (canonicalised as for ``ul.*``)."""
        ...

    async def release(self, call_id: str, status: int) -> ParkedCallInfo | None:
        """End the parked INVITE ``call_id`` now with ``status`` (300-699) to the caller; the
        call as it was, or None when none is parked."""
        ...

    def registrations(self) -> Sequence[UpstreamInfo]:
        """Every upstream registration, ordered by AoR (empty when the mid-registrar is off)."""
        ...

    def registration(self, aor: str) -> UpstreamInfo | None:
        """The upstream registration of ``aor`` (canonicalised as for ``ul.*``); None if none."""
        ...

    async def wake(self, aor: str, reason: str) -> Sequence[WakeOutcome] | None:
        """A ``reg-refresh`` push to every push-capable binding of ``aor`` and their outcomes
        (empty: no push-capable binding); None when the AoR has no binding at all."""
        ...

    def uac_registrations(self) -> Sequence[UacRegistration]:
        """Every upstream registration in ``uac`` terms, ordered by ``l_uuid``."""
        ...

    async def uac_refresh(self, l_uuid: str) -> UacRegistration | UacRefusal:
        """Re-REGISTER the aggregate of ``l_uuid`` upstream now; the record after queueing it."""
        ...


class NoParking:
    """The ``ParkingControl`` of a server without push and mid-registrar: empty tables."""

    def parked(self) -> Sequence[ParkedTransaction]:
        return ()

    def parked_calls(self, ruri: str | None = None) -> Sequence[ParkedCallInfo]:
        return ()

    async def release(self, call_id: str, status: int) -> ParkedCallInfo | None:
        return None

    def registrations(self) -> Sequence[UpstreamInfo]:
        return ()

    def registration(self, aor: str) -> UpstreamInfo | None:
        return None

    async def wake(self, aor: str, reason: str) -> Sequence[WakeOutcome] | None:
        return None

    def uac_registrations(self) -> Sequence[UacRegistration]:
        return ()

    async def uac_refresh(self, l_uuid: str) -> UacRegistration | UacRefusal:
        return UacRefusal.NO_RECORD


@attrs.frozen
class Statistic:
    """One counter or gauge for ``stats.get_statistics`` (rpc.md 3.6): Kamailio's
    ``group:name = value``."""

    group: str
    name: str
    value: int


class StatisticsControl(Protocol):
    """The server's counters as ``stats.*`` sees them: the ones ``/metrics`` exports."""

    def statistics(self) -> Sequence[Statistic]:
        """Every statistic, ordered by (group, name)."""
        ...


class NoStatistics:
    """The ``StatisticsControl`` of a registry without metrics: nothing is counted."""

    def statistics(self) -> Sequence[Statistic]:
        return ()


@attrs.frozen
class ResyncOutcome:
    """One contact a ``check-sync`` NOTIFY went to, and its final status (408: no answer)."""

    contact: str
    status: int


class ProvisioningControl(Protocol):
    """Handset provisioning as ``prov.*`` sees it (provisioning.md 4.5, rpc.md 3.6)."""

    async def resync(self, mac: str) -> Sequence[ResyncOutcome] | None:
        """Send ``check-sync`` to every registered contact of the device's lines; None when
        no device has that MAC."""
        ...


class NoProvisioning:
    """The ``ProvisioningControl`` of a server without provisioning: no device is known."""

    async def resync(self, mac: str) -> Sequence[ResyncOutcome] | None:
        return None
