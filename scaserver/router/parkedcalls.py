"""Calls parked for push devices as the router carries them (push-and-parking.md 6): an
initial request to a local AoR with push devices is held by the proxy while call parking
wakes them, and call parking's instructions (start a branch, fork instead, release the call,
relay the held request, pushes and parked branches) are carried out on the proxy.  Pure: each
function reads the router's parts as they are now (:class:`ParkingState`)."""

from __future__ import annotations

from typing import Protocol, assert_never

from scaserver.parking.calls import CallParking, ForkInstead, proxy_target
from scaserver.parking.instructions import (
    AbortPushes,
    CancelParkedBranch,
    RelayHeld,
    ReleaseCall,
    SendPush,
    StartBranch,
)
from scaserver.proxy.context import BranchFinished
from scaserver.proxy.proxy import Proxy
from scaserver.push.service import PushService
from scaserver.registrar.binding import Binding
from scaserver.registrar.registrar import Registrar
from scaserver.sca.engine import ScaEngine
from scaserver.sip.actions import EngineAction
from scaserver.sip.errors import ProtocolStateError, TemporarilyUnavailable
from scaserver.sip.keys import ServerKey
from scaserver.sip.message import Peer, Request

ParkingInstruction = (
    StartBranch
    | ForkInstead
    | ReleaseCall
    | RelayHeld
    | CancelParkedBranch
    | SendPush
    | AbortPushes
    | BranchFinished
)
"""The instructions call parking gives the router."""


class ParkingState(Protocol):
    """What parking reads of the router that holds it (push and parking may be swapped)."""

    proxy: Proxy
    sca: ScaEngine
    registrar: Registrar
    push: PushService | None
    parking: CallParking | None


def park_initial(
    state: ParkingState,
    request: Request,
    peer: Peer,
    key: ServerKey,
    *,
    aor: str,
    bindings: tuple[Binding, ...],
    dormant: tuple[Binding, ...],
    now: float,
) -> list[EngineAction] | None:
    """Push and parking for an initial request to a local AoR (push-and-parking.md 6):
    the parked INVITE's actions, or None for ordinary forking over the live ``bindings``
    (``dormant`` ones are reached by push only, 4.5)."""
    assert state.push is not None
    everything = bindings + dormant
    if request.method == "MESSAGE" and state.push.push_only(everything, now):
        raise TemporarilyUnavailable("reachable by push only")  # 6.9
    members: dict[str, tuple[Binding, ...]] = {}
    line: tuple[str, int] | None = None
    if request.method == "INVITE" and state.sca.is_sca(aor):
        shared = state.sca.line(aor)
        index = state.sca.incoming_index(aor, request.call_id or "")
        line = None if index is None else (aor, index)
        if shared.push_members:
            for member in shared.member_aors():
                members[member] = state.registrar.lookup(member, now) + state.push.dormant(member)
    if state.parking is None:
        return None
    plan = state.parking.plan(request, key, aor=aor, bindings=everything, members=members, line=line, now=now)
    if plan is None:
        return None
    actions = state.proxy.on_request(
        request, key, peer, (), now, hold=True, honour_6xx=state.parking.honour_6xx
    )
    if key not in state.proxy:
        return actions  # refused before forking (483, 482, 420)
    return actions + state.parking.park(plan, now)


def carry_out(state: ParkingState, instruction: ParkingInstruction, now: float) -> list[EngineAction]:
    """The engine actions of carrying out one of call parking's instructions."""
    proxy = state.proxy
    match instruction:
        case StartBranch(server_tx=server_tx, branch=index, target=target):
            parking = _parking(state, instruction)
            if server_tx not in proxy:
                return parking.branch_not_started(server_tx, index, now)
            started, keys = proxy.add_targets(server_tx, [proxy_target(target)], now)
            parking.branches_started(server_tx, index, keys)
            return started
        case ForkInstead(server_tx=server_tx, targets=targets, fallback=fallback):
            started, _ = proxy.add_targets(server_tx, [proxy_target(t) for t in targets], now)
            return started + proxy.release(server_tx, fallback, immediately=False, now=now)
        case ReleaseCall(server_tx=server_tx, fallback=fallback, immediately=immediately):
            _parking(state, instruction).forget_branches(server_tx)
            return proxy.release(server_tx, fallback, immediately=immediately, now=now)
        case RelayHeld(server_tx=server_tx):
            held = _parking(state, instruction).relay_held(server_tx)
            if held is None:
                return []
            request, peer, relayed_to = held
            return proxy.on_request(request, server_tx, peer, relayed_to, now)
        case CancelParkedBranch() | SendPush() | AbortPushes() | BranchFinished():
            return _parking(state, instruction).handle(instruction, now)
        case _:
            assert_never(instruction)


def _parking(state: ParkingState, instruction: ParkingInstruction) -> CallParking:
    """Call parking, which gave ``instruction``; without it the instruction is our bug."""
    if state.parking is None:
        raise ProtocolStateError(f"a call parking instruction without push and parking: {instruction!r}")
    return state.parking
