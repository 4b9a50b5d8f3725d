"""The push mid-registrar's device side (push-and-parking.md sections 3, 4 and 5): device
typing on REGISTER, the push state of every binding, keep-alives, push answers, invalidation.

:class:`PushService` sits between the location service, the mid-registrar and the router
(``scaserver.router``): the router hands it a device REGISTER (mid-registrar on), the
mid-registrar's binding instructions, the binding facts, its timers and the gateway
client's answers; call parking (``scaserver.parking.calls``) reads the devices it keeps.
Pushes leave through the bus as :class:`~scaserver.push.facts.PushRequested`; nothing here
performs I/O or reads a clock.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Hashable, Sequence
from typing import Final, TypeGuard, assert_never, get_args

import attrs

from scaserver.proxy.routing import ProxyIdentity
from scaserver.push.devices import DeviceRegistry
from scaserver.push.facts import (
    BindingRetained,
    KeepaliveKey,
    PushAnswered,
    PushOutcome,
    PushRequested,
    PushRetrying,
)
from scaserver.push.flows import DeviceFlows
from scaserver.push.gateway import Answer, Outcome, PushRequest, PushType
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
from scaserver.registrar.midregevents import BindingConfirmed, DropBinding, PutBinding, RegisterFinished
from scaserver.registrar.midregistrar import PushTyping, binding_key, mrct_of
from scaserver.registrar.midregsettings import Mode
from scaserver.registrar.midregstate import AorKey, ForwardKey
from scaserver.sip.actions import CancelTimer, Deliver, EngineAction, StartTimer
from scaserver.sip.errors import MalformedMessage, TemporarilyUnavailable
from scaserver.sip.headers import Star, contacts, routes, to_addr
from scaserver.sip.keys import ServerKey
from scaserver.sip.message import Peer, Request
from scaserver.sip.uri import SipUri, parse_uri

PushEvent = (
    PutBinding
    | DropBinding
    | RegisterFinished
    | BindingConfirmed
    | BindingAdded
    | BindingRefreshed
    | BindingRemoved
    | BindingExpired
)
"""The mid-registrar's binding instructions and the binding facts the push service acts on."""

_EVENTS: Final = get_args(PushEvent)


@attrs.frozen
class PushServiceSettings:
    """``push.*`` device typing and push policy; ``purr_secret`` keys the PURRs we issue (6.10)."""

    typing: TypingSettings = attrs.field(factory=TypingSettings)
    policy: PushPolicySettings = attrs.field(factory=PushPolicySettings)
    purr_secret: bytes = attrs.field(default=b"", repr=False)


def _issues_purr(item: Classification, typing: TypingSettings) -> bool:
    """PURRs go to push-capable RFC 8599 bindings when ``push.purr`` is on (6.10)."""
    coordinates = item.coordinates
    return (
        typing.purr
        and item.verdict is Verdict.PUSH
        and coordinates is not None
        and (coordinates.source is Source.RFC8599)
    )


def push_outcome(answer: Answer, dropped: bool) -> PushOutcome:
    """How an attempt the gateway client gave up on ended (5.2; ``dropped``: never sent)."""
    if dropped:
        return PushOutcome.DROPPED
    return {
        Outcome.SENT: PushOutcome.SENT,
        Outcome.INVALID: PushOutcome.INVALID,
        Outcome.FAILED: PushOutcome.FAILED,
        Outcome.RETRY: PushOutcome.FAILED,  # retries exhausted or past the deadline
    }[answer.outcome]


def register_typing(
    request: Request, typing: TypingSettings
) -> tuple[PushTyping, tuple[Classification, ...]]:
    """Section 4.1/4.2 for every Contact of a REGISTER, as the mid-registrar wants it."""
    try:
        found = contacts(request)
    except MalformedMessage:
        return PushTyping(), ()  # the mid-registrar answers the 400
    if isinstance(found, Star):
        return PushTyping(), ()
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


def aggregate_aor(uri: SipUri, midreg: MidRegistrar | None, identity: ProxyIdentity) -> str:
    """The AoR an initial request addresses: a Request-URI naming us with a user part is
    the aggregate contact of that user (section 3.2); anything else is its own AoR."""
    if midreg is None or not uri.user or not identity.is_local_uri(uri):
        return uri.aor()
    if midreg.settings.multi_domain and "@" in uri.user:
        return f"sip:{uri.user}"
    for reg in midreg.registrations():
        known = parse_uri(reg.aor)
        if isinstance(known, SipUri) and known.user == uri.user:
            return reg.aor
    return f"sip:{uri.user}@{midreg.settings.upstream_domain}"


def _removal_reason(text: str) -> RemovalReason:
    try:
        return RemovalReason(text)
    except ValueError:
        return RemovalReason.ADMINISTRATIVE


@attrs.define
class PushService:
    """The device push registry and its keep-alives; ``midregistrar`` None means devices
    register with the core registrar (push still works for RFC 8599 contacts: each stored
    binding counts as confirmed)."""

    settings: PushServiceSettings
    location: LocationService
    identity: ProxyIdentity
    id_factory: Callable[[], str]  # reg-refresh push ids (UUIDs at the edge; counters in tests)
    midregistrar: MidRegistrar | None = None
    _devices: DeviceRegistry = attrs.field(init=False, factory=DeviceRegistry)
    _typed: dict[BindingKey, Classification] = attrs.field(init=False, factory=dict)
    _purrs: dict[str, BindingKey] = attrs.field(init=False, factory=dict)
    _flows: DeviceFlows = attrs.field(init=False, factory=DeviceFlows)
    _refreshes: RefreshLimiter = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self._refreshes = RefreshLimiter(self.settings.policy.refresh_trigger)

    @property
    def mode(self) -> Mode | None:
        return None if self.midregistrar is None else self.midregistrar.settings.table.mode

    # ------------------------------------------------------------------ views

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

    def device(self, key: BindingKey) -> DevicePush | None:
        """The push state of one binding (``ul.dump`` ``Push``, ``pushreg.lookup``)."""
        return self._devices.get(key)

    def devices(self) -> tuple[DevicePush, ...]:
        return self._devices.all()

    def pushed(self, key: Hashable, now: float) -> None:
        """A push went to the binding's device (4.3 ``last_push_at``)."""
        self._devices.pushed(key, now)

    def woke(self, key: Hashable, latency_ms: int | None) -> None:
        """A push woke the binding's device (4.3 ``last_wake_ms``)."""
        self._devices.woke(key, latency_ms)

    # ------------------------------------------------------------------ REGISTER

    def on_register(
        self, request: Request, peer: Peer, transaction: ServerKey, now: float
    ) -> list[EngineAction]:
        """A device REGISTER for the mid-registrar (section 3.2): typed, then forwarded or
        absorbed; the classification waits for the binding's confirmation."""
        assert self.midregistrar is not None
        typing, classes = register_typing(request, self.settings.typing)
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

    # ------------------------------------------------------------------ requests to devices

    def aor_of(self, uri: SipUri) -> str:
        """The AoR an initial request addresses (:func:`aggregate_aor`)."""
        return aggregate_aor(uri, self.midregistrar, self.identity)

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

    def role(self, binding: Binding, now: float) -> Role:
        """6.1 step 2 for one binding: rung directly, pushed, both or neither."""
        return call_role(
            self._devices.get(binding.key),
            expires_at=binding.expires_at,
            flow_open=binding.received.transport.reliable and not self._flows.is_closed(binding.key),
            now=now,
            settings=self.settings.policy,
        )

    def push_only(self, bindings: Sequence[Binding], now: float) -> bool:
        """Whether an AoR with ``bindings`` (dormant ones included) is reachable by push only:
        a request other than INVITE for it is answered 480 (6.9)."""
        roles = [self.role(binding, now) for binding in bindings]
        return Role.PUSH in roles and all(role in (Role.PUSH, Role.NONE) for role in roles)

    def flow_closed(self, peer: Peer) -> None:
        """A TCP/TLS connection closed: push bindings registered over it get no direct branch
        any more (6.1 step 2: ``ring_open_flows`` is for a connection still open) until they
        register over a new one."""
        self._flows.closed(peer)

    def purr_device(self, routed: Request) -> tuple[BindingKey, DevicePush] | None:
        """The push-capable device whose PURR the Request-URI or the next Route carries (6.10)."""
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

    def retargets_mid_dialog(self, routed: Request) -> bool:
        """Whether a mid-dialog request (after our own Route was taken off) goes to a device's
        registered flow whatever its Request-URI's host: the Request-URI carries the PURR of
        a push-capable device and no Route follows ours (6.10)."""
        return "Route" not in routed.headers and self.purr_device(routed) is not None

    # ------------------------------------------------------------------ instructions, facts

    @staticmethod
    def handles(event: object) -> TypeGuard[PushEvent]:
        return isinstance(event, _EVENTS)

    def handle(self, event: PushEvent, now: float) -> list[EngineAction]:
        """Carry out a mid-registrar instruction, or react to a binding fact."""
        match event:
            case PutBinding(binding=binding):
                return self.location.put(binding, now)
            case DropBinding(key=key, reason=reason):
                return self.drop_binding(key, _removal_reason(reason), now)
            case RegisterFinished(keys=keys, confirmed=confirmed):
                if not confirmed:
                    for key in keys:
                        self._typed.pop(key, None)
                return []
            case BindingConfirmed():
                return self._confirmed(event, now)
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
            case _:
                assert_never(event)

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
            self._flows.track(event.key, binding.received)
        return actions + self._keepalive(event.key, now)

    def _registered(self, binding: Binding, now: float) -> list[EngineAction]:
        """Core registrar: a stored RFC 8599 binding is push-capable and confirmed now."""
        actions = self._awake(binding.key)
        coordinates = self._coordinates(binding)
        if coordinates is None:
            self._forget_device(binding.key)
        else:
            self._devices.put(DevicePush(binding.key, binding.aor, coordinates, now, binding.expires_at))
            self._flows.track(binding.key, binding.received)
        return actions + self._keepalive(binding.key, now)

    def _forget_device(self, key: BindingKey) -> None:
        self._flows.untrack(key)
        if self._devices.forget(key) and self.settings.typing.purr:
            self._purrs.pop(self.purr_for(key), None)

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

    @staticmethod
    def owns_timer(key: Hashable) -> bool:
        return isinstance(key, KeepaliveKey | ForwardKey | AorKey)

    def on_timer(self, key: Hashable, name: str, now: float) -> list[EngineAction]:
        """A keep-alive timer (4.5), or one of the mid-registrar's (3.5)."""
        if isinstance(key, KeepaliveKey):
            return self._on_keepalive_timer(key, name, now)
        return [] if self.midregistrar is None else self.midregistrar.on_timer(key, name, now)

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
            id=self.id_factory(),
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
                self._flows.track(binding.key, binding.received, open_now=False)
                if self.settings.typing.purr and coordinates.source is Source.RFC8599:
                    self._purrs[self.purr_for(binding.key)] = binding.key
                if binding.expires_at > now:
                    actions += self._keepalive(binding.key, now)
        return actions

    # ------------------------------------------------------------------ push answers

    def on_push_delivered(
        self, request: PushRequest, answer: Answer, dropped: bool, now: float
    ) -> list[EngineAction]:
        """The gateway's last word on an attempt (section 5.2): counted, and a dead token is
        invalidated (4.4); call parking learns the outcome after this."""
        outcome = push_outcome(answer, dropped)
        actions: list[EngineAction] = [
            Deliver(PushAnswered(request.id, request.type.value, outcome, answer.status, now))
        ]
        if outcome is PushOutcome.INVALID:
            at = answer.invalidated_at if answer.invalidated_at is not None else now
            actions += self._invalidate(request.provider, request.prid, at, now)
        return actions

    @staticmethod
    def on_push_retrying(request: PushRequest, now: float) -> list[EngineAction]:
        return [Deliver(PushRetrying(request.id, now))]

    def _invalidate(self, provider: str, prid: str, at: float, now: float) -> list[EngineAction]:
        verdict = self._devices.invalidate(provider, prid, at, now)
        actions: list[EngineAction] = [Deliver(verdict.event)]
        for key in verdict.removed:
            if isinstance(key, BindingKey):  # dormant: reachable by push only (4.4)
                actions += self.drop_binding(key, RemovalReason.TOKEN_INVALID, now)
        return actions
