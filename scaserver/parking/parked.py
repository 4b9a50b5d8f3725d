"""tsilo-style call parking (push-and-parking.md sections 6 and 7).

A parked call is an INVITE server transaction that the proxy keeps open while push
notifications wake devices: the :class:`ParkingLot` is the tsilo table (AoR -> parked calls)
and each :class:`~scaserver.parking.parkedcall.ParkedCall` is a small state machine whose
transitions are the data of :data:`~scaserver.parking.parkedcall.TRANSITIONS`.

Parking is a peer of the proxy and of push, so it speaks to them through the instructions of
:mod:`scaserver.parking.instructions`, which the dispatcher carries out; they travel as
``Deliver(...)`` and are never published on the bus.  Its facts are in
:mod:`scaserver.parking.events`; mid-dialog requests held for a wake (6.10) in
:mod:`scaserver.parking.held`.

The dispatcher feeds back: branch responses (:meth:`ParkingLot.on_branch_provisional`,
:meth:`ParkingLot.on_branch_final`), push results (:meth:`ParkingLot.on_push_result`),
confirmations (:meth:`ParkingLot.on_binding_confirmed`), REGISTER forwards in flight
(:meth:`ParkingLot.on_register_forwarded` / :meth:`ParkingLot.on_register_finished`), CANCEL
(:meth:`ParkingLot.on_cancel`) and timers (:meth:`ParkingLot.on_timer`).

Everything runs on one thread; "simultaneous" races of section 7 are events back to back in
either order, and each is decided by the state of the call when its event arrives.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from typing import Final

import attrs

from scaserver.parking.events import (
    BranchAdded,
    BranchAnswered,
    EndReason,
    ParkEnded,
    ParkRejected,
    ParkStarted,
)
from scaserver.parking.held import HOLD_TIMER, HeldRequests, HoldKey
from scaserver.parking.instructions import (
    AbortPushes,
    BranchTarget,
    CallSpec,
    CancelParkedBranch,
    PushKind,
    PushResult,
    PushTarget,
    ReleaseCall,
    SendPush,
    StartBranch,
)
from scaserver.parking.parkedcall import (
    GRACE_TIMER,
    PARK_TIMER,
    RESOLVED,
    TRANSITIONS,
    WAKE_TIMER,
    BranchState,
    CallState,
    ParkedBranch,
    ParkedCall,
    ParkKey,
    PushAttempt,
    Trigger,
    WakeKey,
)
from scaserver.sip.actions import Deliver, EngineAction, Respond, StartTimer
from scaserver.sip.errors import ProtocolStateError
from scaserver.sip.keys import ServerKey
from scaserver.sip.message import Headers, Request, Response
from scaserver.sip.responses import make_response

ANSWERED_ELSEWHERE: Final = 'SIP;cause=200;text="Call completed elsewhere"'
WAKE_TIMEOUT_REASON: Final = 'SIP;cause=480;text="push wake-up timeout"'


class EarlyMedia(enum.Enum):
    ALL = "all"
    FIRST = "first"


@attrs.frozen
class ParkingSettings:
    """``[parking]`` (push-and-parking.md sections 6.1-6.3, 6.6): call parking while pushed
    devices wake; active when ``push.enabled``.  Durations in seconds.  ``fresh_window`` and
    ``ring_open_flows`` (6.1 step 2) are read by the push policy."""

    wake_timeout: float = 10.0
    park_timeout: float = 30.0
    inflight_grace: float = 2.0
    local_ringing: bool = True
    honour_6xx: bool = True
    early_media: EarlyMedia = EarlyMedia.ALL
    timeout_response: int = 480
    max_per_aor: int = 8
    max_total: int = 5000
    max_branches: int = 16
    fresh_window: float = 0.0
    ring_open_flows: bool = True


END_REASONS: Final[Mapping[Trigger, EndReason]] = {
    Trigger.ANSWERED: EndReason.ANSWERED,
    Trigger.DECLINED: EndReason.DECLINED,
    Trigger.EXHAUSTED: EndReason.EXHAUSTED,
    Trigger.PARK_TIMEOUT: EndReason.TIMEOUT,
    Trigger.GRACE_EXPIRED: EndReason.TIMEOUT,
    Trigger.CANCELLED: EndReason.CANCELLED,
}
"""The section 6.3 ending each trigger of :data:`TRANSITIONS` into ``ENDED`` stands for."""

CANCEL_PUSH_REASONS: Final[Mapping[EndReason, str]] = {
    EndReason.ANSWERED: "answered-elsewhere",
    EndReason.DECLINED: "declined",
    EndReason.TIMEOUT: "timeout",
    EndReason.CANCELLED: "caller-cancelled",
}
"""The ``reason`` of the ``cancel`` pushes an ending sends (6.3 cases 1, 2, 4; 6.5)."""


@attrs.define
class ParkingLot:
    """The tsilo table and every parked call (section 6)."""

    settings: ParkingSettings
    id_factory: Callable[[], str]  # push attempt ids (UUIDs at the edge; counters in tests)
    _calls: dict[str, ParkedCall] = attrs.field(init=False, factory=dict)
    _by_tx: dict[ServerKey, str] = attrs.field(init=False, factory=dict)
    _by_aor: dict[str, list[str]] = attrs.field(init=False, factory=dict)
    _late_cancels: dict[str, SendPush] = attrs.field(init=False, factory=dict)
    _counter: int = attrs.field(init=False, default=0)
    _held: HeldRequests = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self._held = HeldRequests(self.id_factory)

    # ------------------------------------------------------------------ table views

    def __len__(self) -> int:
        return len(self._calls)

    def __contains__(self, server_tx: object) -> bool:
        return server_tx in self._by_tx

    def calls(self, aor: str | None = None) -> tuple[ParkedCall, ...]:
        """``ts.dump`` / ``park.dump``: every parked call, or those of one AoR."""
        if aor is None:
            return tuple(self._calls.values())
        return tuple(self._calls[park_id] for park_id in self._by_aor.get(aor, ()))

    def call(self, server_tx: ServerKey) -> ParkedCall | None:
        park_id = self._by_tx.get(server_tx)
        return None if park_id is None else self._calls[park_id]

    # ------------------------------------------------------------------- 6.1 parking

    def park(
        self,
        spec: CallSpec,
        direct: Sequence[BranchTarget],
        pushes: Sequence[PushTarget],
        now: float,
    ) -> list[EngineAction]:
        """Section 6.1 steps 3 to 6 for an INVITE whose targets the dispatcher classified.

        The dispatcher has created the server transaction, sent 100 and opened a held proxy
        context with no target.  Without ``pushes`` the call is not parked (the caller forks
        normally); above a limit ``ParkRejected`` is returned and nothing is stored.
        """
        if spec.server_tx in self._by_tx:
            raise ProtocolStateError(f"{spec.server_tx!r} is already parked")
        if not pushes:
            raise ProtocolStateError("a call without push targets is ordinary forking, not parked")
        limit = self._limit_hit(spec, len(direct))
        if limit is not None:
            return [Deliver(ParkRejected(spec.server_tx, limit, now))]
        self._counter += 1
        park_id = f"p-{self._counter:06d}"
        timeout = self.settings.park_timeout
        if spec.invite_expires is not None:
            timeout = min(timeout, float(spec.invite_expires))
        call = ParkedCall(park_id, spec, now, now + timeout, to_tag=f"pk{self._counter:06d}")
        self._calls[park_id] = call
        self._by_tx[spec.server_tx] = park_id
        for aor in spec.aors:
            self._by_aor.setdefault(aor, []).append(park_id)
        actions: list[EngineAction] = [
            Deliver(ParkStarted(park_id, spec.server_tx, spec.aors, spec.line, now, spec=spec)),
            StartTimer(ParkKey(park_id), PARK_TIMER, timeout),
        ]
        for target in direct:
            actions += self._start_branch(call, target, injected=False, now=now)
        for push in pushes:
            attempt = PushAttempt(self.id_factory(), push)
            call.attempts[attempt.id] = attempt
            actions.append(Deliver(call.push(attempt, PushKind.CALL, None, now)))
        if self.settings.local_ringing:
            ringing = make_response(spec.request, 180, to_tag=call.to_tag)
            actions.append(Respond(spec.server_tx, ringing))
        return actions

    def _limit_hit(self, spec: CallSpec, branches: int) -> str | None:
        if len(self._calls) >= self.settings.max_total:
            return "max_total"
        if any(len(self._by_aor.get(aor, ())) >= self.settings.max_per_aor for aor in spec.aors):
            return "max_per_aor"
        if branches > self.settings.max_branches:
            return "max_branches"
        return None

    def _start_branch(
        self, call: ParkedCall, target: BranchTarget, *, injected: bool, now: float
    ) -> list[EngineAction]:
        index = len(call.branches)
        call.branches[index] = ParkedBranch(index, target, started_at=now)
        return [
            Deliver(StartBranch(call.server_tx, call.park_id, index, target)),
            Deliver(BranchAdded(call.park_id, target.binding, injected, now)),
        ]

    # ------------------------------------------------------------ 6.4 injection

    def on_binding_confirmed(
        self,
        aor: str,
        target: BranchTarget,
        confirmed_at: float,
        now: float,
        *,
        token: tuple[str, str] | None = None,
    ) -> list[EngineAction]:
        """``binding.confirmed`` (only after an upstream 2xx or an absorbed refresh): inject a
        branch into every waiting parked call of ``aor`` (6.4, tsilo ``ts_append``); release a
        mid-dialog request held for that binding (6.10)."""
        actions = self._held.on_binding_confirmed(aor, target.binding)
        for park_id in list(self._by_aor.get(aor, ())):
            call = self._calls[park_id]
            call.inflight.discard(target.binding)
            if confirmed_at < call.parked_at:
                continue  # 6.4 step 1: handled at park time
            if token is None and aor != call.spec.aors[0]:
                continue  # 6.11: of a shared line's members only push-capable bindings take part
            actions += self._inject(call, target, token, now)
        return actions

    def _inject(
        self, call: ParkedCall, target: BranchTarget, token: tuple[str, str] | None, now: float
    ) -> list[EngineAction]:
        row = TRANSITIONS.get((call.state, Trigger.CONFIRMED))
        if row is None:
            return []
        actions = call.woken(target.binding, token, now)
        if call.wants_branch(target) and len(call.branches) < self.settings.max_branches:
            for branch in call.branches.values():
                if branch.target.binding == target.binding and branch.state is BranchState.CALLING:
                    branch.superseded = True
            actions += self._start_branch(call, target, injected=True, now=now)
        elif call.exhausted():
            actions += self._end(call, Trigger.EXHAUSTED, now)
        return actions

    # --------------------------------------------------------- branch responses

    def on_branch_provisional(
        self, server_tx: ServerKey, branch: int, response: Response, now: float
    ) -> tuple[Response | None, list[EngineAction]]:
        """A 1xx from a branch: what to relay upstream (6.6), and CANCEL for a superseded
        branch (6.4).  The response returned is relayed as is, or None for "relay nothing"."""
        call = self.call(server_tx)
        if call is None:
            return response, []
        record = call.branches.get(branch)
        if record is None:
            return response, []
        if record.alive:
            record.state = BranchState.PROCEEDING
        if response.status == 100:
            return None, []
        record.provisional = True
        if record.superseded:
            if record.cancel_sent:
                return None, []
            record.cancel_sent = True  # 6.4: CANCEL is possible now (RFC 3261 9.1)
            return None, [Deliver(CancelParkedBranch(server_tx, branch))]
        return call.early_media(response, first_only=self.settings.early_media is EarlyMedia.FIRST), []

    def on_branch_final(
        self, server_tx: ServerKey, branch: int, status: int, now: float
    ) -> list[EngineAction]:
        """A final response on a branch (a time-out counts 408, a transport failure 503)."""
        call = self.call(server_tx)
        if call is None:
            return []
        record = call.branches.get(branch)
        if record is None or not record.alive:
            return []
        record.state = BranchState.DONE
        record.status = status
        if 200 <= status < 300:
            return [
                Deliver(BranchAnswered(call.park_id, record.target.binding, now)),
                *self._end(call, Trigger.ANSWERED, now),
            ]
        if status >= 600 and self.settings.honour_6xx:
            return self._end(call, Trigger.DECLINED, now)
        if call.exhausted():
            return self._end(call, Trigger.EXHAUSTED, now)
        return []

    # ------------------------------------------------------------- push results

    def on_push_result(self, attempt_id: str, result: PushResult, now: float) -> list[EngineAction]:
        """The push client's verdict on an attempt (section 5.2; races R1, R7, R14)."""
        late = self._late_cancels.pop(attempt_id, None)
        if late is not None:
            if result is PushResult.SENT:
                return [Deliver(late)]  # R7: the cancel follows the accepted call push
            if result is PushResult.RETRYING:
                self._late_cancels[attempt_id] = late
            return []
        call, attempt = self._find_attempt(attempt_id)
        if call is None or attempt is None:
            return []
        if attempt.state in RESOLVED:
            return []  # R1: woken stays woken; a 410 now only concerns future calls
        attempt.record(result, now)
        if result is PushResult.SENT:
            return [StartTimer(WakeKey(call.park_id, attempt.id), WAKE_TIMER, self.settings.wake_timeout)]
        if result is not PushResult.RETRYING and call.exhausted():
            return self._end(call, Trigger.EXHAUSTED, now)
        return []

    def _find_attempt(self, attempt_id: str) -> tuple[ParkedCall | None, PushAttempt | None]:
        for call in self._calls.values():
            attempt = call.attempts.get(attempt_id)
            if attempt is not None:
                return call, attempt
        return None, None

    # ------------------------------------------------- REGISTER forwards in flight

    def on_register_forwarded(self, aor: str, binding: Hashable) -> None:
        """A REGISTER of ``binding`` went upstream (6.3 case 3, R12): calls that pushed it wait."""
        for park_id in self._by_aor.get(aor, ()):
            call = self._calls[park_id]
            if binding in call.pushed_bindings():
                call.inflight.add(binding)

    def on_register_finished(self, aor: str, binding: Hashable, now: float) -> list[EngineAction]:
        """The forward of ``binding`` ended without a confirmation (401, failure, time-out)."""
        actions: list[EngineAction] = []
        for park_id in list(self._by_aor.get(aor, ())):
            call = self._calls[park_id]
            if binding not in call.inflight:
                continue
            call.inflight.discard(binding)
            if call.state is CallState.GRACE and not call.inflight:
                actions += self._end(call, Trigger.GRACE_EXPIRED, now)
            elif call.exhausted():
                actions += self._end(call, Trigger.EXHAUSTED, now)
        return actions

    # ------------------------------------------------------------------ CANCEL

    def on_cancel(self, server_tx: ServerKey, now: float) -> list[EngineAction]:
        """6.5: the caller CANCELled a parked INVITE (the proxy answers the CANCEL 200 and
        cancels the branches); a held mid-dialog request cannot be CANCELled."""
        call = self.call(server_tx)
        if call is None:
            return []
        return self._end(call, Trigger.CANCELLED, now)

    # ------------------------------------------------------------ park.release

    def release(self, call_id: str, status: int, now: float) -> list[EngineAction] | None:
        """``park.release`` (rpc.md 3.4): the operator ends the parked INVITE ``call_id`` now.

        The ``park_timeout`` ending brought forward (rule F4 of 6.3): the call leaves the table,
        its timers stop, pushed devices that never woke get a ``cancel`` push (reason
        ``timeout``) and queued retries are dropped.  Unlike the timer, ringing branches do not
        go on: every live branch is CANCELled (one without a provisional yet once its first
        1xx arrives, RFC 3261 9.1) and the caller gets ``status`` (300-699) at once.  None when
        no call with that Call-ID is parked.
        """
        if not 300 <= status <= 699:
            raise ProtocolStateError(f"park.release with a non-final-failure status {status}")
        call = next((c for c in self._calls.values() if c.spec.call_id == call_id), None)
        if call is None:
            return None
        row = TRANSITIONS.get((call.state, Trigger.RELEASED))
        if row is None:
            return None
        rule, call.state = row
        self._forget(call)
        actions = call.stop_timers()
        actions += self._cancel_pushes(call, "timeout", now, only_unresolved=True)
        actions.append(Deliver(AbortPushes(call.park_id)))
        actions += call.cancel_live_branches()
        response = make_response(call.spec.request, status, to_tag=call.to_tag)
        actions.append(Deliver(ReleaseCall(call.server_tx, response, immediately=True)))
        actions.append(Deliver(ParkEnded(call.park_id, call.server_tx, EndReason.RELEASED, rule, now)))
        return actions

    # ------------------------------------------------------------------ timers

    def on_timer(self, key: Hashable, name: str, now: float) -> list[EngineAction]:
        if isinstance(key, ParkKey):
            call = self._calls.get(key.park_id)
            if call is None:
                return []
            if name == PARK_TIMER:
                if call.inflight and not call.graced:
                    trigger = Trigger.PARK_TIMEOUT_INFLIGHT
                    row = TRANSITIONS.get((call.state, trigger))
                    if row is None:
                        return []
                    call.state, call.graced = row[1], True
                    return [StartTimer(key, GRACE_TIMER, self.settings.inflight_grace)]
                return self._end(call, Trigger.PARK_TIMEOUT, now)
            if name == GRACE_TIMER:
                return self._end(call, Trigger.GRACE_EXPIRED, now)
            return []
        if isinstance(key, WakeKey) and name == WAKE_TIMER:
            call = self._calls.get(key.park_id)
            actions = [] if call is None else call.wake_missed(key.attempt)
            if call is not None and actions and call.exhausted():
                actions += self._end(call, Trigger.EXHAUSTED, now)
            return actions
        if isinstance(key, HoldKey) and name == HOLD_TIMER:
            return self._held.on_timer(key)
        return []

    # ------------------------------------------------------------------ endings

    def _end(self, call: ParkedCall, trigger: Trigger, now: float) -> list[EngineAction]:
        row = TRANSITIONS.get((call.state, trigger))
        if row is None:
            return []
        rule, target = row
        call.state = target
        self._forget(call)
        actions = call.stop_timers()
        reason = END_REASONS[trigger]
        push_reason = CANCEL_PUSH_REASONS.get(reason)
        if push_reason is not None:
            timeout = reason is EndReason.TIMEOUT
            actions += self._cancel_pushes(call, push_reason, now, only_unresolved=timeout)
        if reason is EndReason.CANCELLED:
            actions.append(Deliver(AbortPushes(call.park_id)))
            fallback = make_response(call.spec.request, 487, to_tag=call.to_tag)
            actions.append(Deliver(ReleaseCall(call.server_tx, fallback, immediately=True)))
        elif reason in (EndReason.ANSWERED, EndReason.DECLINED):
            actions.append(Deliver(ReleaseCall(call.server_tx, None)))
        else:
            if reason is EndReason.TIMEOUT:
                actions.append(Deliver(AbortPushes(call.park_id)))
            actions.append(Deliver(ReleaseCall(call.server_tx, self._no_wake_response(call))))
        actions.append(Deliver(ParkEnded(call.park_id, call.server_tx, reason, rule, now)))
        return actions

    def _no_wake_response(self, call: ParkedCall) -> Response:
        """6.3: the answer when no branch produced a final response (default 480 + Reason)."""
        return make_response(
            call.spec.request,
            self.settings.timeout_response,
            headers=Headers.of(("Reason", WAKE_TIMEOUT_REASON)),
            to_tag=call.to_tag,
        )

    def _cancel_pushes(
        self, call: ParkedCall, reason: str, now: float, *, only_unresolved: bool
    ) -> list[EngineAction]:
        """The ``cancel`` pushes of :meth:`ParkedCall.cancel_pushes` to send now; the others wait
        in ``_late_cancels`` for the gateway to accept their call push (R7)."""
        now_sent, later = call.cancel_pushes(reason, now, only_unresolved=only_unresolved)
        self._late_cancels.update(later)
        return [Deliver(cancel) for cancel in now_sent]

    def _forget(self, call: ParkedCall) -> None:
        """Leave the tsilo table at once (6.5: no later registration injects into it)."""
        self._calls.pop(call.park_id, None)
        self._by_tx.pop(call.server_tx, None)
        for aor in call.spec.aors:
            ids = self._by_aor.get(aor)
            if ids is not None and call.park_id in ids:
                ids.remove(call.park_id)
                if not ids:
                    del self._by_aor[aor]

    # --------------------------------------------------- 6.10 (mid-dialog requests)

    def hold_mid_dialog(
        self,
        server_tx: ServerKey,
        request: Request,
        *,
        aor: str,
        target: PushTarget,
        binding: Hashable,
        now: float,
    ) -> list[EngineAction]:
        """6.10: hold a mid-dialog request carrying our ``pn-purr`` while a ``reg-refresh``
        push (reason ``mid-<METHOD>``) wakes the device; relayed on its confirmation
        (:class:`RelayHeld`), else answered 480 after ``wake_timeout``."""
        return self._held.hold(
            server_tx,
            request,
            aor=aor,
            target=target,
            binding=binding,
            now=now,
            wake_timeout=self.settings.wake_timeout,
        )

    def held(self) -> Iterable[Hashable]:
        return self._held.server_txs()
