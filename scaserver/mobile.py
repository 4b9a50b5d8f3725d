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
from collections.abc import Hashable, Sequence
from typing import Final

import attrs

from scaserver.parking.parked import (
    AbortPushes,
    BranchTarget,
    CallSpec,
    CancelParkedBranch,
    ParkingLot,
    ParkKey,
    ParkRejected,
    PushResult,
    PushTarget,
    RelayHeld,
    ReleaseCall,
    SendPush,
    StartBranch,
    WakeKey,
)
from scaserver.proxy.proxy import BranchFinished, BranchKey, BranchState, CancelBranch, Proxy
from scaserver.proxy.routing import ProxyIdentity
from scaserver.proxy.target import Target
from scaserver.push.gateway import Answer, CallInfo, Outcome, PushRequest, PushType
from scaserver.push.pnparams import (
    Classification,
    PushCoordinates,
    TypingSettings,
    Verdict,
    classify_all,
    default_keepalive,
    rejection,
    reply_feature_caps,
    strip_pn_params,
    upstream_feature_caps,
)
from scaserver.push.policy import (
    DevicePush,
    PushPolicySettings,
    Role,
    call_push_targets,
    call_role,
    invalidate,
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
from scaserver.registrar.midregistrar import (
    AorKey,
    BindingConfirmed,
    DropBinding,
    ForwardKey,
    MidRegistrar,
    Mode,
    PushTyping,
    PutBinding,
    RegisterFinished,
    RegisterForwarded,
    binding_key,
)
from scaserver.sip.actions import Deliver, EngineAction
from scaserver.sip.errors import MalformedMessage
from scaserver.sip.headers import Star, contacts, expires, from_addr, to_addr
from scaserver.sip.message import Peer, Request, Response
from scaserver.sip.responses import make_response
from scaserver.sip.uri import SipUri, parse_uri

_INSTRUCTIONS: Final = (
    PutBinding,
    DropBinding,
    RegisterForwarded,
    RegisterFinished,
    StartBranch,
    CancelParkedBranch,
    SendPush,
    AbortPushes,
    ReleaseCall,
    RelayHeld,
    BranchFinished,
)
"""Instructions carried out here and never published on the bus."""

_FACTS: Final = (BindingConfirmed, BindingAdded, BindingRefreshed, BindingRemoved, BindingExpired)
"""Facts this coordinator reacts to; the dispatcher publishes them as well."""


@attrs.frozen
class PushRequested:
    """Fact for the edge: run this push attempt through the gateway client (section 5)."""

    request: PushRequest
    deadline: float | None


@attrs.frozen
class PushesAborted:
    """Fact for the edge: drop queued retries of the pushes of a parked call (6.5)."""

    park_id: str


class PushOutcome(enum.Enum):
    """How a push attempt ended, as counted (section 5.3 metrics)."""

    SENT = "sent"
    INVALID = "invalid"
    FAILED = "failed"
    DROPPED = "dropped"


@attrs.frozen
class PushAnswered:
    """One push attempt ended (``push_sent``, ``push_failed``, ``push_invalidated``,
    ``push_dropped``); ``kind`` is its type, ``status`` the gateway's HTTP status if any."""

    attempt: str
    kind: str
    outcome: PushOutcome
    status: int | None
    at: float


@attrs.frozen
class PushRetrying:
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


def _result_of(answer: Answer, dropped: bool) -> PushResult:
    if dropped:
        return PushResult.DROPPED
    return {
        Outcome.SENT: PushResult.SENT,
        Outcome.INVALID: PushResult.INVALID,
        Outcome.FAILED: PushResult.FAILED,
        Outcome.RETRY: PushResult.FAILED,  # retries exhausted or past the deadline
    }[answer.outcome]


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
    _devices: dict[BindingKey, DevicePush] = attrs.field(init=False, factory=dict)
    _typed: dict[BindingKey, Classification] = attrs.field(init=False, factory=dict)
    _branches: dict[tuple[Hashable, int], BranchKey] = attrs.field(init=False, factory=dict)
    _parked_branches: dict[BranchKey, int] = attrs.field(init=False, factory=dict)

    # ------------------------------------------------------------------ views

    def device(self, key: BindingKey) -> DevicePush | None:
        """The push state of one binding (``ul.dump`` ``Push``, ``pushreg.lookup``)."""
        return self._devices.get(key)

    def devices(self) -> tuple[DevicePush, ...]:
        return tuple(self._devices.values())

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
            str(contact.uri): item.coordinates.key_value()
            for contact, item in zip(found, classes, strict=True)
            if item.verdict is Verdict.PUSH
            and item.coordinates is not None
            and item.coordinates.source.value == "legacy"
        }
        return (
            PushTyping(
                reject=rejection(classes),
                reply_caps=reply_feature_caps(classes, typing),
                upstream_caps=upstream_feature_caps(classes),
                legacy_keys=legacy,
            ),
            classes,
        )

    def on_register(
        self, request: Request, peer: Peer, transaction: Hashable, now: float
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
                current = self.location.bindings(aor)
                for contact, item in zip(found, classes, strict=True):
                    key = binding_key(aor, contact, current, typing.legacy_keys)
                    self._typed[key] = item
        return self.midregistrar.on_device_register(request, peer, transaction, now, typing=typing)

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

    # ------------------------------------------------------------------ INVITE (6.1)

    def on_invite(
        self,
        request: Request,
        server_tx: Hashable,
        peer: Peer,
        *,
        aor: str,
        bindings: Sequence[Binding],
        now: float,
    ) -> list[EngineAction] | None:
        """Park an initial INVITE whose AoR has push-capable bindings (6.1); None when the
        call is ordinary forking."""
        if not self.settings.parking_enabled or request.method != "INVITE":
            return None
        direct: list[BranchTarget] = []
        pushed: list[DevicePush] = []
        for binding in bindings:
            device = self._devices.get(binding.key)
            role = call_role(
                device,
                expires_at=binding.expires_at,
                flow_open=binding.received.transport.reliable,
                now=now,
                settings=self.settings.policy,
            )
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
            aors=(aor,),
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
            fallback = make_response(request, 480, to_tag=f"pr{abs(hash(server_tx)) % 10**8:08d}")
            released = self.proxy.release(server_tx, fallback, immediately=False, now=now)
            return actions + parked + started + released
        return actions + parked

    # ------------------------------------------------------------------ instructions, facts

    def handles(self, event: object) -> bool:
        return isinstance(event, (*_INSTRUCTIONS, *_FACTS))

    @staticmethod
    def publishes(event: object) -> bool:
        """Facts are published on the bus as well; instructions never are."""
        return isinstance(event, _FACTS)

    def handle(self, event: object, now: float) -> list[EngineAction]:
        """Carry out an instruction, or react to a fact (see the module docstring)."""
        match event:
            case PutBinding(binding=binding):
                return self.location.put(binding, now)
            case DropBinding(key=key, reason=reason):
                return self.location.remove(key, _removal_reason(reason), now)
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
                self._devices.pop(binding.key, None)
                if reason is RemovalReason.UNREGISTERED or self.midregistrar is None:
                    return []
                return self.midregistrar.on_binding_gone(binding.aor, now)
            case BindingExpired(binding=binding):
                self._devices.pop(binding.key, None)
                if self.midregistrar is None:
                    return []
                return self.midregistrar.on_binding_gone(binding.aor, now)
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
            case RelayHeld():
                return []  # 6.10 (pn-purr) is off: nothing is ever held
            case BranchFinished(branch=finished, status=status):
                parked_index = self._parked_branches.get(finished)
                if parked_index is None:
                    return []
                return self.parking.on_branch_final(finished.server_tx, parked_index, status, now)
        return []

    def _confirmed(self, event: BindingConfirmed, now: float) -> list[EngineAction]:
        item = self._typed.pop(event.key, None)
        binding = event.binding
        if item is not None:
            if item.verdict is Verdict.PUSH and item.coordinates is not None:
                self._devices[event.key] = DevicePush(
                    event.key, event.aor, item.coordinates, event.confirmed_at, binding.expires_at
                )
            else:
                self._devices.pop(event.key, None)
        elif event.key in self._devices:
            self._devices[event.key] = attrs.evolve(
                self._devices[event.key], confirmed_at=event.confirmed_at, expires_at=binding.expires_at
            )
        return self._inject(event.aor, binding, event.confirmed_at, now)

    def _registered(self, binding: Binding, now: float) -> list[EngineAction]:
        """Core registrar: a stored RFC 8599 binding is push-capable and confirmed now."""
        coordinates = self._coordinates(binding)
        if coordinates is None:
            self._devices.pop(binding.key, None)
        else:
            self._devices[binding.key] = DevicePush(
                binding.key, binding.aor, coordinates, now, binding.expires_at
            )
        return self._inject(binding.aor, binding, now, now)

    def _coordinates(self, binding: Binding) -> PushCoordinates | None:
        params = dict(binding.push)
        provider = params.get("pn-provider", "").lower()
        prid = params.get("pn-prid", "")
        if not provider or not prid or provider not in self.settings.typing.providers:
            return None
        param = params.get("pn-param", "")
        return PushCoordinates(provider, prid, param, keepalive=default_keepalive(provider))

    def _inject(self, aor: str, binding: Binding, confirmed_at: float, now: float) -> list[EngineAction]:
        device = self._devices.get(binding.key)
        target = BranchTarget(
            binding.key, strip_pn_params(binding.contact), binding.path, binding.flow, binding.sort_q
        )
        token = device.token if device is not None else None
        return self.parking.on_binding_confirmed(aor, target, confirmed_at, now, token=token)

    def restore(self, bindings: Sequence[Binding], now: float) -> None:
        """Start-up: RFC 8599 bindings restored from the store are push-capable again."""
        for binding in bindings:
            coordinates = self._coordinates(binding)
            if coordinates is not None and binding.expires_at > now:
                self._devices[binding.key] = DevicePush(
                    binding.key, binding.aor, coordinates, binding.updated_at, binding.expires_at
                )

    # ------------------------------------------------------------------ branches

    def _start_branch(
        self, server_tx: Hashable, index: int, target: BranchTarget, now: float
    ) -> list[EngineAction]:
        if server_tx not in self.proxy:
            return self.parking.on_branch_final(server_tx, index, 503, now)
        proxy_target = Target(target.contact, target.q, target.path, target.flow)
        actions, keys = self.proxy.add_targets(server_tx, [proxy_target], now)
        for key in keys:
            self._branches[server_tx, index] = key
            self._parked_branches[key] = index
        return actions

    def _forget_branches(self, server_tx: Hashable) -> None:
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

    def on_cancel(self, invite_tx: Hashable, now: float) -> list[EngineAction]:
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
        return isinstance(key, ParkKey | WakeKey | ForwardKey | AorKey)

    def on_timer(self, key: Hashable, name: str, now: float) -> list[EngineAction]:
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
        for binding in push.target.bindings:
            device = self._devices.get(binding) if isinstance(binding, BindingKey) else None
            if device is not None and isinstance(binding, BindingKey):
                self._devices[binding] = attrs.evolve(device, last_push_at=now)
        return PushRequest(
            id=push.attempt,
            type=PushType(push.kind.value),
            provider=push.target.provider,
            prid=push.target.prid,
            param=push.target.param,
            aor=push.aor,
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
        verdict = invalidate(self._devices.values(), provider, prid, at, now)
        for device in verdict.updated:
            if isinstance(device.binding, BindingKey):
                self._devices[device.binding] = device
        actions: list[EngineAction] = [Deliver(verdict.event)]
        for key in verdict.removed:
            if isinstance(key, BindingKey):
                actions += self.location.remove(key, RemovalReason.TOKEN_INVALID, now)
        return actions

    @property
    def mode(self) -> Mode | None:
        return None if self.midregistrar is None else self.midregistrar.settings.mode
