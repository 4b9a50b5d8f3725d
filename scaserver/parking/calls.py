"""Call parking inside the SIP core (push-and-parking.md section 6): which INVITE is parked,
its branches, CANCEL, and mid-dialog requests held for a device's PURR (6.10).

:class:`CallParking` sits between the router (``scaserver.router``) and the
:class:`~scaserver.parking.parked.ParkingLot`; it reads the devices of the push service
(:mod:`scaserver.push.service`, below it) and never calls into the proxy: the router opens
the held proxy context, and carries out the lot's :class:`~scaserver.parking.parked.StartBranch`,
:class:`~scaserver.parking.parked.ReleaseCall` and :class:`~scaserver.parking.parked.RelayHeld`
and this module's :class:`ForkInstead`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Hashable, Mapping, Sequence
from typing import Final, TypeGuard, assert_never, get_args

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
    SendPush,
)
from scaserver.parking.parked import ParkingLot
from scaserver.parking.parkedcall import ParkKey, WakeKey
from scaserver.proxy.context import BranchFinished, BranchKey, CancelBranch
from scaserver.proxy.routing import ProxyIdentity, preprocess_route
from scaserver.proxy.target import Target
from scaserver.push.facts import PushesAborted, PushRequested
from scaserver.push.gateway import Answer, CallInfo, PushRequest, PushType
from scaserver.push.pnparams import strip_pn_params
from scaserver.push.policy import DevicePush, Role, call_push_targets
from scaserver.push.service import PushService, push_outcome
from scaserver.registrar.binding import Binding, BindingAdded, BindingKey, BindingRefreshed
from scaserver.registrar.midregevents import BindingConfirmed, RegisterFinished, RegisterForwarded
from scaserver.sip.actions import Deliver, EngineAction, Instruction
from scaserver.sip.headers import expires, from_addr, to_addr
from scaserver.sip.keys import ServerKey
from scaserver.sip.message import Peer, Request, Response
from scaserver.sip.responses import make_response

ParkingEvent = (
    CancelParkedBranch
    | SendPush
    | AbortPushes
    | BranchFinished
    | RegisterForwarded
    | RegisterFinished
    | BindingConfirmed
    | BindingAdded
    | BindingRefreshed
)
"""The instructions carried out here and the facts call parking reacts to."""

_EVENTS: Final = get_args(ParkingEvent)


@attrs.frozen
class ForkInstead(Instruction):
    """Parking refused the call (6.1 limits): fork it to the ``targets`` reached directly,
    and release it with ``fallback`` (480) when no branch produces a final response."""

    server_tx: ServerKey
    targets: tuple[BranchTarget, ...]
    fallback: Response


@attrs.frozen
class ParkPlan:
    """An INVITE to park (6.1 steps 1-2): the call, the bindings rung at once, the pushes."""

    spec: CallSpec
    direct: tuple[BranchTarget, ...]
    pushes: tuple[PushTarget, ...]


def fallback_tag(request: Request) -> str:
    """The To tag of the 480 that answers a call parking refused with no branch to fall back on
    (RFC 3261 section 8.2.6.2): derived from the request, so the same request gets the same tag
    in every run of the server, whatever the interpreter's hash seed."""
    material = "\x00".join(request.headers.get(name) or "" for name in ("Call-ID", "CSeq", "From", "Via"))
    digest = hashlib.sha256(material.encode("utf-8", "surrogateescape")).digest()
    return f"pr{int.from_bytes(digest[:8], 'big') % 10**8:08d}"


def branch_target(binding: Binding) -> BranchTarget:
    """A branch to ``binding``: its Contact without ``pn-*`` (4.1: tokens travel no further)."""
    return BranchTarget(
        binding.key, strip_pn_params(binding.contact), binding.path, binding.flow, binding.sort_q
    )


def proxy_target(target: BranchTarget) -> Target:
    """The proxy's target for a parked call's branch."""
    return Target(target.contact, target.q, target.path, target.flow)


@attrs.define
class CallParking:
    """Parked calls over the push service's devices; ``enabled`` false keeps every call
    ordinary forking (held mid-dialog requests still wait for a PURR's device)."""

    lot: ParkingLot
    push: PushService
    identity: ProxyIdentity
    enabled: bool = True
    _branches: dict[tuple[ServerKey, int], BranchKey] = attrs.field(init=False, factory=dict)
    _parked_branches: dict[BranchKey, int] = attrs.field(init=False, factory=dict)
    _holding: dict[ServerKey, tuple[Request, Peer, BindingKey]] = attrs.field(init=False, factory=dict)

    @property
    def honour_6xx(self) -> bool:
        return self.lot.settings.honour_6xx

    # ------------------------------------------------------------------ INVITE (6.1)

    def plan(
        self,
        request: Request,
        server_tx: ServerKey,
        *,
        aor: str,
        bindings: Sequence[Binding],
        now: float,
        members: Mapping[str, Sequence[Binding]] | None = None,
        line: tuple[str, int] | None = None,
    ) -> ParkPlan | None:
        """Whether an initial INVITE whose AoR has push-capable bindings is parked (6.1);
        None when the call is ordinary forking.  ``bindings`` include the AoR's dormant ones
        (4.5).  For a shared line with ``push_members`` (6.11) ``members`` are the member
        AoRs with their bindings: their push-capable ones join the target set, the call is
        stored under every one of those AoRs, and the pushes carry ``line``."""
        if not self.enabled or request.method != "INVITE":
            return None
        direct: list[BranchTarget] = []
        pushed: list[DevicePush] = []
        candidates = list(bindings)
        for member_bindings in (members or {}).values():
            candidates += [b for b in member_bindings if self.push.role(b, now) in (Role.PUSH, Role.BOTH)]
        for binding in candidates:
            device = self.push.device(binding.key)
            role = self.push.role(binding, now)
            if role in (Role.DIRECT, Role.BOTH):
                direct.append(branch_target(binding))
            if role in (Role.PUSH, Role.BOTH) and device is not None:
                pushed.append(device)
        tokens = call_push_targets(pushed)
        if not tokens:
            return None
        pushes = tuple(
            PushTarget(
                token.provider,
                token.prid,
                token.param,
                tuple(device.binding for device in pushed if device.token == token.token),
                token.device_type,
            )
            for token in tokens
        )
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
        return ParkPlan(spec, tuple(direct), pushes)

    def park(self, plan: ParkPlan, now: float) -> list[EngineAction]:
        """Park a planned call whose held proxy context the router has opened (6.1 steps
        3-6); over a limit, ordinary forking with the direct bindings, 480 if none."""
        parked = self.lot.park(plan.spec, plan.direct, plan.pushes, now)
        if any(isinstance(a, Deliver) and isinstance(a.event, ParkRejected) for a in parked):
            request = plan.spec.request
            fallback = make_response(request, 480, to_tag=fallback_tag(request))
            return [*parked, Deliver(ForkInstead(plan.spec.server_tx, plan.direct, fallback))]
        return parked

    # ------------------------------------------------------------------ branches

    def branches_started(self, server_tx: ServerKey, index: int, keys: Sequence[BranchKey]) -> None:
        """The router started the proxy branches ``keys`` for the lot's branch ``index``."""
        for key in keys:
            self._branches[server_tx, index] = key
            self._parked_branches[key] = index

    def branch_not_started(self, server_tx: ServerKey, index: int, now: float) -> list[EngineAction]:
        """The call's proxy context is gone: the lot's branch ``index`` ends as a 503."""
        return self.lot.on_branch_final(server_tx, index, 503, now)

    def forget_branches(self, server_tx: ServerKey) -> None:
        """The call is released: its branches are the proxy's alone."""
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
        return self.lot.on_branch_provisional(key.server_tx, index, response, now)

    def on_cancel(self, invite_tx: ServerKey, now: float) -> list[EngineAction]:
        """6.5: the caller CANCELled; the proxy has answered the CANCEL already."""
        return self.lot.on_cancel(invite_tx, now)

    # ------------------------------------------------------------------ timers

    @staticmethod
    def owns_timer(key: Hashable) -> bool:
        return isinstance(key, ParkKey | WakeKey | HoldKey)

    def on_timer(self, key: Hashable, name: str, now: float) -> list[EngineAction]:
        if isinstance(key, HoldKey):
            self._holding.pop(key.server_tx, None)  # answered 480 by the lot
        return self.lot.on_timer(key, name, now)

    # ------------------------------------------------------------------ instructions, facts

    @staticmethod
    def handles(event: object) -> TypeGuard[ParkingEvent]:
        return isinstance(event, _EVENTS)

    def handle(self, event: ParkingEvent, now: float) -> list[EngineAction]:
        """Carry out an instruction, or react to a fact (after the push service did)."""
        match event:
            case CancelParkedBranch(server_tx=server_tx, branch=index, reason=reason):
                branch_key = self._branches.get((server_tx, index))
                return [] if branch_key is None else [Deliver(CancelBranch(branch_key, reason))]
            case SendPush():
                return [Deliver(PushRequested(self._push_request(event, now), event.deadline))]
            case AbortPushes(park_id=park_id):
                return [Deliver(PushesAborted(park_id))]
            case BranchFinished(branch=finished, status=status):
                parked = self._parked_branches.get(finished)
                if parked is None:
                    return []
                return self.lot.on_branch_final(finished.server_tx, parked, status, now)
            case RegisterForwarded(aor=aor, keys=keys):
                for key in keys:
                    self.lot.on_register_forwarded(aor, key)
                return []
            case RegisterFinished(aor=aor, keys=keys, confirmed=confirmed):
                actions: list[EngineAction] = []
                if not confirmed:
                    for key in keys:
                        actions += self.lot.on_register_finished(aor, key, now)
                return actions
            case BindingConfirmed(aor=aor, binding=binding, confirmed_at=confirmed_at):
                return self._inject(aor, binding, confirmed_at, now)
            case BindingAdded(binding=binding) | BindingRefreshed(binding=binding):
                if self.push.midregistrar is not None:
                    return []  # confirmations come from BindingConfirmed
                return self._inject(binding.aor, binding, now, now)
            case _:
                assert_never(event)

    def _inject(self, aor: str, binding: Binding, confirmed_at: float, now: float) -> list[EngineAction]:
        """6.4: a binding was confirmed; the parked calls of ``aor`` may get a branch to it."""
        device = self.push.device(binding.key)
        token = device.token if device is not None else None
        actions = self.lot.on_binding_confirmed(aor, branch_target(binding), confirmed_at, now, token=token)
        for action in actions:
            if isinstance(action, Deliver) and isinstance(action.event, WakeObserved) and device is not None:
                self.push.woke(binding.key, action.event.latency_ms)  # 4.3 last_wake_ms
        return actions

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
            if isinstance(binding, BindingKey) and self.push.device(binding) is not None:
                self.push.pushed(binding, now)
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
        """The gateway's last word on an attempt (section 5.2), after the push service
        counted it and invalidated a dead token: the lot learns it (R1, R7, R14)."""
        return self.lot.on_push_result(request.id, PushResult(push_outcome(answer, dropped).value), now)

    def on_push_retrying(self, request: PushRequest, now: float) -> list[EngineAction]:
        return self.lot.on_push_result(request.id, PushResult.RETRYING, now)

    # ------------------------------------------------------------------ mid-dialog (6.10)

    def on_mid_dialog(
        self, request: Request, routed: Request, server_tx: ServerKey, peer: Peer, now: float
    ) -> list[EngineAction] | None:
        """A mid-dialog request through us whose Request-URI (or next Route) carries a PURR of
        ours: held while a ``reg-refresh`` push wakes the device, relayed when its binding is
        confirmed (:meth:`relay_held`), else answered 480 after ``wake_timeout`` (6.10).
        None: relay it now.  ``routed`` is the request after our own Route was taken off."""
        held = self.push.purr_device(routed)
        if held is None or server_tx in self._holding:
            return None
        key, device = held
        self._holding[server_tx] = (request, peer, key)
        coordinates = device.coordinates
        target = PushTarget(
            coordinates.provider, coordinates.prid, coordinates.param, (key,), coordinates.device_type
        )
        return self.lot.hold_mid_dialog(server_tx, request, aor=key.aor, target=target, binding=key, now=now)

    def relay_held(self, server_tx: ServerKey) -> tuple[Request, Peer, tuple[Target, ...]] | None:
        """The woken device's binding is confirmed: the held request, its sender, and where
        it goes now (its new address; no target when a Route follows ours)."""
        held = self._holding.pop(server_tx, None)
        if held is None:
            return None
        request, peer, key = held
        binding = self.push.location.get(key)
        after_us = len(preprocess_route(request, self.identity).headers.values("Route"))
        if binding is None or after_us:
            return request, peer, ()
        return request, peer, (Target(request.uri, flow=binding.received),)
