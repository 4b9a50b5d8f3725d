"""Push mid-registrar and call parking inside the SIP core (push-and-parking.md sections 3-7).

:class:`Mobile` is the pure coordinator between the engines that make mobile devices work
and the dispatcher (``scaserver.dispatch``): it owns the :class:`MidRegistrar` (section 3),
the :class:`ParkingLot` (section 6), device typing (section 4.1, 4.2) and the push state of
every binding (:class:`DevicePush`, section 4.3), and turns their instructions into actions on
the location service and the proxy.  The dispatcher calls it from a few hooks:

* a REGISTER (mid-registrar on) -> :meth:`Mobile.on_register`;
* an initial INVITE for a local AoR -> :meth:`Mobile.on_invite` (None: ordinary forking);
* instructions and facts it handles (:meth:`Mobile.handles`) -> :meth:`Mobile.handle`;
* responses, failures and timers of its upstream REGISTERs and parked branches, CANCEL;
* push gateway results from the edge -> :meth:`Mobile.on_push_delivered`.

Pushes leave through the bus as :class:`PushRequested` (the edge's HTTP client sends them)
and :class:`PushesAborted`; nothing here performs I/O or reads a clock.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
from collections.abc import Hashable, Mapping, Sequence
from typing import Final, get_args

import attrs

from scaserver.parking.events import ParkRejected, WakeObserved
from scaserver.parking.held import HoldKey
from scaserver.parking.instructions import (
    AbortPushes,
    BranchTarget,
    CallSpec,
    CancelParkedBranch,
    PushResult,
    PushTarget,
    RelayHeld,
    ReleaseCall,
    SendPush,
    StartBranch,
)
from scaserver.parking.parked import ParkingLot
from scaserver.parking.parkedcall import ParkKey, WakeKey
from scaserver.proxy.context import BranchFinished, BranchKey, BranchState, CancelBranch
from scaserver.proxy.proxy import Proxy
from scaserver.proxy.routing import ProxyIdentity, preprocess_route
from scaserver.proxy.target import Target
from scaserver.push.devices import DeviceRegistry
from scaserver.push.gateway import Answer, CallInfo, Outcome, PushRequest, PushType
from scaserver.push.pnparams import (
    Classification,
    PushCoordinates,
    Source,
    TypingSettings,
    Verdict,
    classify_all,
    from_stored,
    purr_of,
    rejection,
    reply_feature_caps,
    stored_params,
    strip_pn_params,
    upstream_feature_caps,
)
from scaserver.push.policy import (
    REFRESH_PUSH_TIMER,
    RETENTION_TIMER,
    DevicePush,
    PushPolicySettings,
    RefreshLimiter,
    Role,
    TokenInvalidated,
    call_push_targets,
    call_role,
    keepalive_plan,
)
from scaserver.registrar.binding import (
    Binding,
    BindingAdded,
    BindingExpired,
    BindingKey,
    BindingRefreshed,
    BindingRemoved,
    RemovalReason,
)
from scaserver.registrar.location import LocationService
from scaserver.registrar.midregengine import MidRegistrar
from scaserver.registrar.midregevents import (
    BindingConfirmed,
    DropBinding,
    PutBinding,
    RegisterFinished,
    RegisterForwarded,
)
from scaserver.registrar.midregistrar import Mode, PushTyping, binding_key, mrct_of
from scaserver.registrar.midregstate import AorKey, ForwardKey
from scaserver.sip.actions import CancelTimer, Deliver, EngineAction, Fact, StartTimer
from scaserver.sip.errors import MalformedMessage, TemporarilyUnavailable
from scaserver.sip.headers import Star, contacts, expires, from_addr, routes, to_addr
from scaserver.sip.keys import ServerKey
from scaserver.sip.message import Peer, Request, Response
from scaserver.sip.responses import make_response
from scaserver.sip.uri import SipUri, parse_uri

MobileInstruction = (
    PutBinding
    | DropBinding
    | RegisterForwarded
    | RegisterFinished
    | StartBranch
    | CancelParkedBranch
    | SendPush
    | AbortPushes
    | ReleaseCall
    | RelayHeld
    | BranchFinished
)
"""Instructions carried out here and never published on the bus."""

_FACTS: Final = (BindingConfirmed, BindingAdded, BindingRefreshed, BindingRemoved, BindingExpired)
"""Facts this coordinator reacts to; the dispatcher publishes them as well."""


@attrs.frozen
class KeepaliveKey:
    """Timer key of one push binding's keep-alive steps (section 4.5): the ``reg-refresh``
    push of ``wake`` bindings, the end of a dormant ``extend`` binding's retention."""

    binding: BindingKey


@attrs.frozen
class BindingRetained(Fact):
    """An ``extend`` binding passed its requested expiry and stays, dormant, as a push-only
    binding until ``until`` (section 4.5); persistence keeps it stored."""

    binding: Binding
    until: float


@attrs.frozen
class PushRequested(Fact):
    """Fact for the edge: run this push attempt through the gateway client (section 5)."""

    request: PushRequest
    deadline: float | None


@attrs.frozen
class PushesAborted(Fact):
    """Fact for the edge: drop queued retries of the pushes of a parked call (6.5)."""

    park_id: str


class PushOutcome(enum.Enum):
    """How a push attempt ended, as counted (section 5.3 metrics)."""

    SENT = "sent"
    INVALID = "invalid"
    FAILED = "failed"
    DROPPED = "dropped"


@attrs.frozen
class PushAnswered(Fact):
    """One push attempt ended (``push_sent``, ``push_failed``, ``push_invalidated``,
    ``push_dropped``); ``kind`` is its type, ``status`` the gateway's HTTP status if any."""

    attempt: str
    kind: str
    outcome: PushOutcome
    status: int | None
    at: float


@attrs.frozen
class PushRetrying(Fact):
    """A push attempt will be retried (``push_retried``)."""

    attempt: str
    at: float


@attrs.frozen
class MobileSettings:
    """``push.*`` typing and policy, ``parking.*``; ``parking_enabled`` false keeps every call
    ordinary forking (bindings are still typed for the mid-registrar's Feature-Caps)."""

    typing: TypingSettings = attrs.field(factory=TypingSettings)
    policy: PushPolicySettings = attrs.field(factory=PushPolicySettings)
    parking_enabled: bool = True
    purr_secret: bytes = attrs.field(default=b"", repr=False)  # keys the PURRs we issue (6.10)


def _issues_purr(item: Classification, typing: TypingSettings) -> bool:
    """PURRs go to push-capable RFC 8599 bindings when ``push.purr`` is on (6.10)."""
    coordinates = item.coordinates
    return (
        typing.purr
        and item.verdict is Verdict.PUSH
        and coordinates is not None
        and (coordinates.source is Source.RFC8599)
    )


def _result_of(answer: Answer, dropped: bool) -> PushResult:
    if dropped:
        return PushResult.DROPPED
    return {
        Outcome.SENT: PushResult.SENT,
        Outcome.INVALID: PushResult.INVALID,
        Outcome.FAILED: PushResult.FAILED,
        Outcome.RETRY: PushResult.FAILED,  # retries exhausted or past the deadline
    }[answer.outcome]


def fallback_tag(request: Request) -> str:
    """The To tag of the 480 that answers a call parking refused with no branch to fall back on
    (RFC 3261 section 8.2.6.2): derived from the request, so the same request gets the same tag
    in every run of the server, whatever the interpreter's hash seed."""
    material = "\x00".join(request.headers.get(name) or "" for name in ("Call-ID", "CSeq", "From", "Via"))
    digest = hashlib.sha256(material.encode("utf-8", "surrogateescape")).digest()
    return f"pr{int.from_bytes(digest[:8], 'big') % 10**8:08d}"


def _removal_reason(text: str) -> RemovalReason:
    try:
        return RemovalReason(text)
    except ValueError:
        return RemovalReason.ADMINISTRATIVE


@attrs.define
class Mobile:
    """The coordinator; ``midregistrar`` None means devices register with the core registrar
    (push still works for RFC 8599 contacts: each stored binding counts as confirmed)."""

    settings: MobileSettings
    location: LocationService
    proxy: Proxy
    identity: ProxyIdentity
    parking: ParkingLot
    midregistrar: MidRegistrar | None = None
    _devices: DeviceRegistry = attrs.field(init=False, factory=DeviceRegistry)
    _typed: dict[BindingKey, Classification] = attrs.field(init=False, factory=dict)
    _branches: dict[tuple[ServerKey, int], BranchKey] = attrs.field(init=False, factory=dict)
    _parked_branches: dict[BranchKey, int] = attrs.field(init=False, factory=dict)
    _purrs: dict[str, BindingKey] = attrs.field(init=False, factory=dict)
    _holding: dict[ServerKey, tuple[Request, Peer, BindingKey]] = attrs.field(init=False, factory=dict)
    # Push bindings by the open TCP/TLS connection they registered over, and those whose
    # connection has closed since (6.1 step 2 ``ring_open_flows``).
    _flows: dict[Peer, set[BindingKey]] = attrs.field(init=False, factory=dict)
    _flow_of: dict[BindingKey, Peer] = attrs.field(init=False, factory=dict)
    _closed_flows: set[BindingKey] = attrs.field(init=False, factory=set)
    _refreshes: RefreshLimiter = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self._refreshes = RefreshLimiter(self.settings.policy.refresh_trigger)

    def bindings_of(self, aor: str) -> tuple[Binding, ...]:
        """Every binding of ``aor``: live ones first (location order), then dormant ones."""
        return self.location.with_dormant(aor)

    def dormant(self, aor: str) -> tuple[Binding, ...]:
        """The dormant ``extend`` bindings of ``aor`` (4.5): pushed for calls, never rung."""
        return self.location.dormant(aor)

    def dormant_aors(self) -> frozenset[str]:
        return self.location.dormant_aors()

    def reaches_dormant(self, host: str, port: int) -> bool:
        """Whether a dormant binding (4.5) is reached at ``host:port`` (relay rule R7)."""
        return self.location.reaches_dormant(host, port)

    # ------------------------------------------------------------------ views

    def device(self, key: BindingKey) -> DevicePush | None:
        """The push state of one binding (``ul.dump`` ``Push``, ``pushreg.lookup``)."""
        return self._devices.get(key)

    def devices(self) -> tuple[DevicePush, ...]:
        return self._devices.all()

    # ------------------------------------------------------------------ REGISTER

    def typing_of(self, request: Request) -> tuple[PushTyping, tuple[Classification, ...]]:
        """Section 4.1/4.2 for every Contact of a REGISTER, as the mid-registrar wants it."""
        try:
            found = contacts(request)
        except MalformedMessage:
            return PushTyping(), ()  # the mid-registrar answers the 400
        if isinstance(found, Star):
            return PushTyping(), ()
        typing = self.settings.typing
        classes = classify_all(request, found, typing)
        legacy = {
            str(contact.uri): item.coordinates
            for contact, item in zip(found, classes, strict=True)
            if item.verdict is Verdict.PUSH
            and item.coordinates is not None
            and item.coordinates.source is Source.LEGACY
        }
        return (
            PushTyping(
                reject=rejection(classes),
                reply_caps=reply_feature_caps(classes, typing),
                upstream_caps=upstream_feature_caps(classes),
                legacy_keys={uri: coordinates.key_value() for uri, coordinates in legacy.items()},
                legacy_push={uri: stored_params(coordinates) for uri, coordinates in legacy.items()},
            ),
            classes,
        )

    def on_register(
        self, request: Request, peer: Peer, transaction: ServerKey, now: float
    ) -> list[EngineAction]:
        """A device REGISTER for the mid-registrar (section 3.2): typed, then forwarded or
        absorbed; the classification waits for the binding's confirmation."""
        assert self.midregistrar is not None
        typing, classes = self.typing_of(request)
        if classes and typing.reject is None:
            found = contacts(request)
            assert not isinstance(found, Star)
            uri = to_addr(request).uri
            if isinstance(uri, SipUri):
                aor = uri.aor()
                current = self.bindings_of(aor)
                purr: str | None = None
                for contact, item in zip(found, classes, strict=True):
                    key = binding_key(aor, contact, current, typing.legacy_keys)
                    self._typed[key] = item
                    if purr is None and _issues_purr(item, self.settings.typing):
                        purr = self.purr_for(key)
                if purr is not None:  # 6.10: +sip.pnspurr in our 2xx
                    caps = reply_feature_caps(classes, self.settings.typing, purr)
                    typing = attrs.evolve(typing, reply_caps=caps)
        return self.midregistrar.on_device_register(request, peer, transaction, now, typing=typing)

    def purr_for(self, key: BindingKey) -> str:
        """The PURR we issue for a binding (RFC 8599 4.1.2, section 6.10): opaque, stable
        across refreshes and restarts, and not derivable without the server's secret."""
        material = f"{key.aor}\x00{key.kind.value}\x00{key.value}".encode("utf-8", "surrogatepass")
        return hmac.new(self.settings.purr_secret, material, hashlib.sha256).hexdigest()[:24]

    def aor_of(self, uri: SipUri) -> str:
        """The AoR an initial request addresses: a Request-URI naming us with a user part is
        the aggregate contact of that user (section 3.2); anything else is its own AoR."""
        midreg = self.midregistrar
        if midreg is None or not uri.user or not self.identity.is_local_uri(uri):
            return uri.aor()
        if midreg.settings.multi_domain and "@" in uri.user:
            return f"sip:{uri.user}"
        for reg in midreg.registrations():
            known = parse_uri(reg.aor)
            if isinstance(known, SipUri) and known.user == uri.user:
                return reg.aor
        return f"sip:{uri.user}@{midreg.settings.upstream_domain}"

    def targets(
        self, uri: SipUri, aor: str, live: tuple[Binding, ...]
    ) -> tuple[tuple[Binding, ...], tuple[Binding, ...]]:
        """The live and dormant (4.5) bindings an initial request for ``aor`` may reach.  In
        mirror mode a Request-URI carrying ``mrct`` targets exactly the one binding it names,
        the upstream forks itself (3.7); 480 when that binding is gone."""
        dormant = self.dormant(aor)
        mrct = uri.param("mrct")
        if self.mode is not Mode.MIRROR or not mrct:
            return live, dormant
        live = tuple(binding for binding in live if mrct_of(binding.key) == mrct)
        dormant = tuple(binding for binding in dormant if mrct_of(binding.key) == mrct)
        if not live and not dormant:
            raise TemporarilyUnavailable("the mirrored contact is not registered")
        return live, dormant

    def target_uri(self, binding: Binding) -> str:
        """The Request-URI of a branch to ``binding``: without ``pn-*`` when we push for it
        (4.1: tokens travel no further); as registered otherwise, so an entity closer to
        the UA that sends its pushes still finds them."""
        return strip_pn_params(binding.contact) if binding.key in self._devices else binding.contact

    # ------------------------------------------------------------------ INVITE (6.1)

    def on_invite(
        self,
        request: Request,
        server_tx: ServerKey,
        peer: Peer,
        *,
        aor: str,
        bindings: Sequence[Binding],
        now: float,
        members: Mapping[str, Sequence[Binding]] | None = None,
        line: tuple[str, int] | None = None,
    ) -> list[EngineAction] | None:
        """Park an initial INVITE whose AoR has push-capable bindings (6.1); None when the
        call is ordinary forking.  ``bindings`` include the AoR's dormant ones (4.5).

        For a shared line with ``push_members`` (6.11) ``members`` are the member AoRs with
        their bindings: their push-capable ones join the target set, the call is stored
        under every one of those AoRs, and the pushes carry ``line`` (line AoR, appearance).
        """
        if not self.settings.parking_enabled or request.method != "INVITE":
            return None
        direct: list[BranchTarget] = []
        pushed: list[DevicePush] = []
        candidates = list(bindings)
        for member_bindings in (members or {}).values():
            candidates += [b for b in member_bindings if self._role(b, now) in (Role.PUSH, Role.BOTH)]
        for binding in candidates:
            device = self._devices.get(binding.key)
            role = self._role(binding, now)
            if role in (Role.DIRECT, Role.BOTH):
                direct.append(
                    BranchTarget(
                        binding.key,
                        strip_pn_params(binding.contact),
                        binding.path,
                        binding.flow,
                        binding.sort_q,
                    )
                )
            if role in (Role.PUSH, Role.BOTH) and device is not None:
                pushed.append(device)
        tokens = call_push_targets(pushed)
        if not tokens:
            return None
        pushes = [
            PushTarget(
                token.provider,
                token.prid,
                token.param,
                tuple(device.binding for device in pushed if device.token == token.token),
                token.device_type,
            )
            for token in tokens
        ]
        caller, callee = from_addr(request), to_addr(request)
        spec = CallSpec(
            server_tx=server_tx,
            request=request,
            aors=(aor, *(member for member in members or {} if member != aor)),
            line=line,
            call_id=request.call_id or "",
            from_uri=str(caller.uri),
            to_uri=str(callee.uri),
            from_display=caller.display_name,
            invite_expires=expires(request),
        )
        actions = self.proxy.on_request(
            request, server_tx, peer, (), now, hold=True, honour_6xx=self.parking.settings.honour_6xx
        )
        if server_tx not in self.proxy:
            return actions  # refused before forking (483, 482, 420)
        parked = self.parking.park(spec, direct, pushes, now)
        if any(isinstance(a, Deliver) and isinstance(a.event, ParkRejected) for a in parked):
            # 6.1 limits: ordinary forking with the direct bindings, 480 if none.
            targets = [Target(t.contact, t.q, t.path, t.flow) for t in direct]
            started, _ = self.proxy.add_targets(server_tx, targets, now)
            fallback = make_response(request, 480, to_tag=fallback_tag(request))
            released = self.proxy.release(server_tx, fallback, immediately=False, now=now)
            return actions + parked + started + released
        return actions + parked

    def _role(self, binding: Binding, now: float) -> Role:
        """6.1 step 2 for one binding."""
        return call_role(
            self._devices.get(binding.key),
            expires_at=binding.expires_at,
            flow_open=binding.received.transport.reliable and binding.key not in self._closed_flows,
            now=now,
            settings=self.settings.policy,
        )

    def flow_closed(self, peer: Peer) -> None:
        """A TCP/TLS connection closed: push bindings registered over it get no direct branch
        any more (6.1 step 2: ``ring_open_flows`` is for a connection still open) until they
        register over a new one."""
        for key in self._flows.pop(peer, ()):
            del self._flow_of[key]
            self._closed_flows.add(key)

    def _track_flow(self, key: BindingKey, received: Peer, *, open_now: bool = True) -> None:
        """Remember the TCP/TLS connection a push device registered over (``flow_closed``)."""
        self._untrack_flow(key)
        if not received.transport.reliable:
            return
        if open_now:
            self._flows.setdefault(received, set()).add(key)
            self._flow_of[key] = received
        else:
            self._closed_flows.add(key)  # restored: connections do not survive a restart

    def _untrack_flow(self, key: BindingKey) -> None:
        self._closed_flows.discard(key)
        peer = self._flow_of.pop(key, None)
        if peer is not None:
            keys = self._flows[peer]
            keys.discard(key)
            if not keys:
                del self._flows[peer]

    def push_only(self, bindings: Sequence[Binding], now: float) -> bool:
        """Whether an AoR with ``bindings`` (dormant ones included) is reachable by push only:
        a request other than INVITE for it is answered 480 (6.9)."""
        roles = [self._role(binding, now) for binding in bindings]
        return Role.PUSH in roles and all(role in (Role.PUSH, Role.NONE) for role in roles)

    # ------------------------------------------------------------------ instructions, facts

    def handles(self, event: object) -> bool:
        return isinstance(event, (*get_args(MobileInstruction), *_FACTS))

    def handle(self, event: object, now: float) -> list[EngineAction]:
        """Carry out an instruction, or react to a fact (see the module docstring)."""
        match event:
            case PutBinding(binding=binding):
                return self.location.put(binding, now)
            case DropBinding(key=key, reason=reason):
                return self.drop_binding(key, _removal_reason(reason), now)
            case BindingConfirmed():
                return self._confirmed(event, now)
            case RegisterForwarded(aor=aor, keys=keys):
                for key in keys:
                    self.parking.on_register_forwarded(aor, key)
                return []
            case RegisterFinished(aor=aor, keys=keys, confirmed=confirmed):
                actions: list[EngineAction] = []
                if not confirmed:
                    for key in keys:
                        self._typed.pop(key, None)
                        actions += self.parking.on_register_finished(aor, key, now)
                return actions
            case BindingAdded(binding=binding) | BindingRefreshed(binding=binding):
                if self.midregistrar is not None:
                    return []  # confirmations come from BindingConfirmed
                return self._registered(binding, now)
            case BindingRemoved(binding=binding, reason=reason):
                self._forget_device(binding.key)
                self.location.release(binding.key)
                gone: list[EngineAction] = [CancelTimer(KeepaliveKey(binding.key), REFRESH_PUSH_TIMER)]
                if reason is RemovalReason.UNREGISTERED or self.midregistrar is None:
                    return gone
                return gone + self.midregistrar.on_binding_gone(binding.aor, now, binding)
            case BindingExpired(binding=binding):
                return self._expired(binding, now)
            case StartBranch(server_tx=server_tx, branch=index, target=target):
                return self._start_branch(server_tx, index, target, now)
            case CancelParkedBranch(server_tx=server_tx, branch=index, reason=cancel_reason):
                branch_key = self._branches.get((server_tx, index))
                return [] if branch_key is None else [Deliver(CancelBranch(branch_key, cancel_reason))]
            case SendPush():
                return [Deliver(PushRequested(self._push_request(event, now), event.deadline))]
            case AbortPushes(park_id=park_id):
                return [Deliver(PushesAborted(park_id))]
            case ReleaseCall(server_tx=server_tx, fallback=fallback, immediately=immediately):
                self._forget_branches(server_tx)
                return self.proxy.release(server_tx, fallback, immediately=immediately, now=now)
            case RelayHeld(server_tx=server_tx):
                return self._relay_held(server_tx, now)
            case BranchFinished(branch=finished, status=status):
                parked_index = self._parked_branches.get(finished)
                if parked_index is None:
                    return []
                return self.parking.on_branch_final(finished.server_tx, parked_index, status, now)
        return []

    def _confirmed(self, event: BindingConfirmed, now: float) -> list[EngineAction]:
        actions = self._awake(event.key)
        item = self._typed.pop(event.key, None)
        binding = event.binding
        if item is not None:
            if item.verdict is Verdict.PUSH and item.coordinates is not None:
                self._devices.confirmed(
                    event.key, event.aor, item.coordinates, event.confirmed_at, binding.expires_at
                )
                if _issues_purr(item, self.settings.typing):
                    self._purrs[self.purr_for(event.key)] = event.key
            else:
                self._forget_device(event.key)
        else:
            self._devices.reconfirmed(event.key, event.confirmed_at, binding.expires_at)
        if event.key in self._devices:
            self._track_flow(event.key, binding.received)
        actions += self._keepalive(event.key, now)
        return actions + self._inject(event.aor, binding, event.confirmed_at, now)

    def _registered(self, binding: Binding, now: float) -> list[EngineAction]:
        """Core registrar: a stored RFC 8599 binding is push-capable and confirmed now."""
        actions = self._awake(binding.key)
        coordinates = self._coordinates(binding)
        if coordinates is None:
            self._forget_device(binding.key)
        else:
            self._devices.put(DevicePush(binding.key, binding.aor, coordinates, now, binding.expires_at))
            self._track_flow(binding.key, binding.received)
        actions += self._keepalive(binding.key, now)
        return actions + self._inject(binding.aor, binding, now, now)

    # ------------------------------------------------------------------ mid-dialog (6.10)

    def on_mid_dialog(
        self, request: Request, routed: Request, server_tx: ServerKey, peer: Peer, now: float
    ) -> list[EngineAction] | None:
        """A mid-dialog request through us whose Request-URI (or next Route) carries a PURR of
        ours: held while a ``reg-refresh`` push wakes the device, relayed when its binding is
        confirmed, else answered 480 after ``wake_timeout`` (6.10).  None: relay it now.
        ``routed`` is the request after our own Route was taken off (RFC 3261 16.4)."""
        held = self._purr_device(routed)
        if held is None or server_tx in self._holding:
            return None
        key, device = held
        self._holding[server_tx] = (request, peer, key)
        coordinates = device.coordinates
        target = PushTarget(
            coordinates.provider, coordinates.prid, coordinates.param, (key,), coordinates.device_type
        )
        return self.parking.hold_mid_dialog(
            server_tx, request, aor=key.aor, target=target, binding=key, now=now
        )

    def retargets_mid_dialog(self, routed: Request) -> bool:
        """Whether a mid-dialog request (after our own Route was taken off) goes to a device's
        registered flow whatever its Request-URI's host: the Request-URI carries the PURR of
        a push-capable device and no Route follows ours (6.10, :meth:`on_mid_dialog`)."""
        return "Route" not in routed.headers and self._purr_device(routed) is not None

    def _purr_device(self, routed: Request) -> tuple[BindingKey, DevicePush] | None:
        """The push-capable device whose PURR the Request-URI or the next Route carries."""
        if not self.settings.typing.purr:
            return None
        try:
            next_hop = routes(routed)
        except MalformedMessage:
            next_hop = []
        purr = purr_of(routed.uri) or (purr_of(str(next_hop[0].uri)) if next_hop else None)
        key = self._purrs.get(purr) if purr is not None else None
        device = self._devices.get(key) if key is not None else None
        if key is None or device is None or not device.push_capable:
            return None
        return key, device

    def _forget_device(self, key: BindingKey) -> None:
        self._untrack_flow(key)
        if self._devices.forget(key) and self.settings.typing.purr:
            self._purrs.pop(self.purr_for(key), None)

    def _relay_held(self, server_tx: ServerKey, now: float) -> list[EngineAction]:
        """The woken device's binding is confirmed: relay the held request to where it is now."""
        held = self._holding.pop(server_tx, None)
        if held is None:
            return []
        request, peer, key = held
        binding = self.location.get(key)
        after_us = len(preprocess_route(request, self.identity).headers.values("Route"))
        if binding is None or after_us:
            return self.proxy.on_request(request, server_tx, peer, (), now)
        target = Target(request.uri, flow=binding.received)  # the dialog's target, its new address
        return self.proxy.on_request(request, server_tx, peer, (target,), now)

    # ------------------------------------------------------------------ keep-alive (4.5)

    def drop_binding(self, key: BindingKey, reason: RemovalReason, now: float) -> list[EngineAction]:
        """Remove a binding, live or dormant (de-registered, rejected upstream, dead token, an
        operator's ``ul.rm``)."""
        removed = self.location.remove(key, reason, now)
        retained = self.location.release(key)
        if retained is None:
            return removed
        return [
            CancelTimer(KeepaliveKey(key), RETENTION_TIMER),
            Deliver(BindingRemoved(retained, reason, now)),
        ]

    def _awake(self, key: BindingKey) -> list[EngineAction]:
        """A confirmation: a dormant binding is an ordinary one again."""
        if self.location.release(key) is None:
            return []
        return [CancelTimer(KeepaliveKey(key), RETENTION_TIMER)]

    def _keepalive(self, key: BindingKey, now: float) -> list[EngineAction]:
        """Arm (or disarm) the ``reg-refresh`` push of a ``wake`` binding after a confirmation:
        ``push.refresh_trigger`` before its expiry, unless it refreshes by itself (4.5)."""
        device = self._devices.get(key)
        timer = KeepaliveKey(key)
        plan = None if device is None else keepalive_plan(device, self.settings.policy)
        if plan is None or plan.refresh_push_at is None:
            return [CancelTimer(timer, REFRESH_PUSH_TIMER)]
        return [StartTimer(timer, REFRESH_PUSH_TIMER, max(0.0, plan.refresh_push_at - now))]

    def _expired(self, binding: Binding, now: float) -> list[EngineAction]:
        """A binding reached its requested expiry: a push-capable ``extend`` binding stays,
        dormant, until ``extend_max_age`` after its last confirmation (4.5); any other binding
        is gone, and the AoR may have to be unregistered upstream (3.4)."""
        key = binding.key
        device = self._devices.get(key)
        policy = self.settings.policy
        if device is not None and device.dormant(now) and device.alive(now, policy):
            self.location.retain(binding)
            until = device.retained_until(policy)
            kept: list[EngineAction] = [
                CancelTimer(KeepaliveKey(key), REFRESH_PUSH_TIMER),
                StartTimer(KeepaliveKey(key), RETENTION_TIMER, until - now),
                Deliver(BindingRetained(binding, until)),
            ]
            if self.midregistrar is not None:  # mirror mode: we keep its contact upstream (3.7)
                kept += self.midregistrar.keep_mirrored(binding.aor, now)
            return kept
        self._forget_device(key)
        self.location.release(key)
        actions: list[EngineAction] = [CancelTimer(KeepaliveKey(key), REFRESH_PUSH_TIMER)]
        if self.midregistrar is not None:
            actions += self.midregistrar.on_binding_gone(binding.aor, now, binding)
        return actions

    def _on_keepalive_timer(self, key: KeepaliveKey, name: str, now: float) -> list[EngineAction]:
        device = self._devices.get(key.binding)
        if name == RETENTION_TIMER:
            retained = self.location.dormant_binding(key.binding)
            if retained is None:
                return []
            if device is not None and device.alive(now, self.settings.policy):
                until = device.retained_until(self.settings.policy)
                return [StartTimer(key, RETENTION_TIMER, until - now)]
            self._forget_device(key.binding)  # the retention is over: it expires for good
            return [Deliver(BindingExpired(retained, now))]
        if name != REFRESH_PUSH_TIMER or device is None or self.location.get(key.binding) is None:
            return []
        plan = keepalive_plan(device, self.settings.policy)
        if plan.refresh_push_at is None or now < plan.refresh_push_at:
            return []  # refreshed meanwhile; its confirmation re-armed the timer
        return self.refresh_push(device, "expiry", now)

    def refresh_push(self, device: DevicePush, reason: str, now: float) -> list[EngineAction]:
        """A ``reg-refresh`` push to one device (4.5 ``wake``): at most one per token per
        ``refresh_trigger`` window (5.3 dedup); useful until the binding expires."""
        self._refreshes.prune(now)
        if not device.push_capable or not self._refreshes.allow(device.token, now):
            return []
        ttl = max(0, int(device.expires_at - now))
        coordinates = device.coordinates
        request = PushRequest(
            id=self.parking.id_factory(),
            type=PushType.REG_REFRESH,
            provider=coordinates.provider,
            prid=coordinates.prid,
            param=coordinates.param,
            aor=device.aor,
            ttl=ttl,
            created_at=now,
            device_type=coordinates.device_type,
            reason=reason,
        )
        self._devices.pushed(device.binding, now)
        return [Deliver(PushRequested(request, device.expires_at if ttl > 0 else None))]

    def _coordinates(self, binding: Binding) -> PushCoordinates | None:
        pnsreg = any(name.lower() == "+sip.pnsreg" for name, _ in binding.params)
        return from_stored(binding.push, self.settings.typing.providers, pnsreg=pnsreg)

    def _inject(self, aor: str, binding: Binding, confirmed_at: float, now: float) -> list[EngineAction]:
        device = self._devices.get(binding.key)
        target = BranchTarget(
            binding.key, strip_pn_params(binding.contact), binding.path, binding.flow, binding.sort_q
        )
        token = device.token if device is not None else None
        actions = self.parking.on_binding_confirmed(aor, target, confirmed_at, now, token=token)
        for action in actions:
            if isinstance(action, Deliver) and isinstance(action.event, WakeObserved) and device is not None:
                latency = action.event.latency_ms  # 4.3 last_wake_ms: a push woke this device
                self._devices.woke(binding.key, latency)
        return actions

    def restore(
        self, bindings: Sequence[Binding], now: float, *, invalidated: Sequence[TokenInvalidated] = ()
    ) -> list[EngineAction]:
        """Start-up, before the location service restores the same bindings: RFC 8599
        bindings are push-capable again, with their keep-alive timers; an ``extend`` binding
        past its expiry but within ``extend_max_age`` comes back dormant when the location
        service reports it expired (4.5).  A binding last confirmed before its token was
        declared invalid (``invalidated``, 4.4) comes back not push-capable."""
        dead = {(item.provider, item.prid): item.at for item in invalidated}
        actions: list[EngineAction] = []
        for binding in bindings:
            coordinates = self._coordinates(binding)
            if coordinates is None:
                continue
            device = DevicePush(binding.key, binding.aor, coordinates, binding.updated_at, binding.expires_at)
            dead_at = dead.get(coordinates.token)
            if dead_at is not None and binding.updated_at < dead_at:
                device = attrs.evolve(device, push_capable=False, invalidated_at=dead_at)
            if device.alive(now, self.settings.policy):
                self._devices.put(device)
                self._track_flow(binding.key, binding.received, open_now=False)
                if self.settings.typing.purr and coordinates.source is Source.RFC8599:
                    self._purrs[self.purr_for(binding.key)] = binding.key
                if binding.expires_at > now:
                    actions += self._keepalive(binding.key, now)
        return actions

    # ------------------------------------------------------------------ branches

    def _start_branch(
        self, server_tx: ServerKey, index: int, target: BranchTarget, now: float
    ) -> list[EngineAction]:
        if server_tx not in self.proxy:
            return self.parking.on_branch_final(server_tx, index, 503, now)
        proxy_target = Target(target.contact, target.q, target.path, target.flow)
        actions, keys = self.proxy.add_targets(server_tx, [proxy_target], now)
        for key in keys:
            self._branches[server_tx, index] = key
            self._parked_branches[key] = index
        return actions

    def _forget_branches(self, server_tx: ServerKey) -> None:
        for (tx, index), key in list(self._branches.items()):
            if tx == server_tx:
                del self._branches[tx, index]
                self._parked_branches.pop(key, None)

    def on_branch_provisional(
        self, key: BranchKey, response: Response, now: float
    ) -> tuple[Response | None, list[EngineAction]]:
        """A 1xx on a branch: for a parked call, what to relay (6.6, superseded branches 6.4)."""
        index = self._parked_branches.get(key)
        if index is None:
            return response, []
        return self.parking.on_branch_provisional(key.server_tx, index, response, now)

    def branch_state(self, key: BranchKey) -> BranchState | None:
        return self.proxy.branch_state(key)

    def on_cancel(self, invite_tx: ServerKey, now: float) -> list[EngineAction]:
        """6.5: the caller CANCELled; the proxy has answered the CANCEL already."""
        return self.parking.on_cancel(invite_tx, now)

    # ------------------------------------------------------------------ upstream REGISTERs

    def on_upstream_response(self, context: ForwardKey, response: Response, now: float) -> list[EngineAction]:
        if self.midregistrar is None:
            return []
        return self.midregistrar.on_upstream_response(context, response, now)

    def on_upstream_failure(self, context: ForwardKey, timed_out: bool, now: float) -> list[EngineAction]:
        if self.midregistrar is None:
            return []
        if timed_out:
            return self.midregistrar.on_upstream_timeout(context, now)
        return self.midregistrar.on_upstream_failure(context, now)

    # ------------------------------------------------------------------ timers

    @staticmethod
    def owns_timer(key: Hashable) -> bool:
        return isinstance(key, ParkKey | WakeKey | ForwardKey | AorKey | KeepaliveKey | HoldKey)

    def on_timer(self, key: Hashable, name: str, now: float) -> list[EngineAction]:
        if isinstance(key, KeepaliveKey):
            return self._on_keepalive_timer(key, name, now)
        if isinstance(key, HoldKey):
            self._holding.pop(key.server_tx, None)  # answered 480 by the lot
        if isinstance(key, ForwardKey | AorKey):
            return [] if self.midregistrar is None else self.midregistrar.on_timer(key, name, now)
        return self.parking.on_timer(key, name, now)

    # ------------------------------------------------------------------ pushes

    def _push_request(self, push: SendPush, now: float) -> PushRequest:
        call = None
        if push.park_id is not None and push.call_id is not None:
            call = CallInfo(
                push.call_id,
                push.park_id,
                push.from_uri or "",
                push.to_uri or "",
                push.from_display,
                push.line,
            )
        aor = push.aor
        for binding in push.target.bindings:
            if isinstance(binding, BindingKey) and binding in self._devices:
                self._devices.pushed(binding, now)
                aor = binding.aor  # a line member's mobile registers under its own AoR (6.11)
        return PushRequest(
            id=push.attempt,
            type=PushType(push.kind.value),
            provider=push.target.provider,
            prid=push.target.prid,
            param=push.target.param,
            aor=aor,
            ttl=push.ttl,
            created_at=now,
            device_type=push.target.device_type,
            call=call,
            reason=push.reason,
        )

    def on_push_delivered(
        self, request: PushRequest, answer: Answer, dropped: bool, now: float
    ) -> list[EngineAction]:
        """The gateway's last word on an attempt (section 5.2); a dead token is invalidated
        first (4.4), then parking learns the result (R1, R7, R14)."""
        result = _result_of(answer, dropped)
        outcome = PushOutcome(result.value) if result is not PushResult.RETRYING else PushOutcome.FAILED
        actions: list[EngineAction] = [
            Deliver(PushAnswered(request.id, request.type.value, outcome, answer.status, now))
        ]
        if result is PushResult.INVALID:
            at = answer.invalidated_at if answer.invalidated_at is not None else now
            actions += self._invalidate(request.provider, request.prid, at, now)
        return actions + self.parking.on_push_result(request.id, result, now)

    def on_push_retrying(self, request: PushRequest, now: float) -> list[EngineAction]:
        result = self.parking.on_push_result(request.id, PushResult.RETRYING, now)
        return [Deliver(PushRetrying(request.id, now)), *result]

    def _invalidate(self, provider: str, prid: str, at: float, now: float) -> list[EngineAction]:
        verdict = self._devices.invalidate(provider, prid, at, now)
        actions: list[EngineAction] = [Deliver(verdict.event)]
        for key in verdict.removed:
            if isinstance(key, BindingKey):  # dormant: reachable by push only (4.4)
                actions += self.drop_binding(key, RemovalReason.TOKEN_INVALID, now)
        return actions

    @property
    def mode(self) -> Mode | None:
        return None if self.midregistrar is None else self.midregistrar.settings.mode
