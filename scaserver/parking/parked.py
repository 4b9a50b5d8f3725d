"""tsilo-style call parking (push-and-parking.md sections 6 and 7).

A parked call is an INVITE server transaction that the proxy keeps open while push
notifications wake devices: the :class:`ParkingLot` is the tsilo table (AoR -> parked calls)
and each :class:`ParkedCall` is a small state machine whose transitions are the data of
:data:`TRANSITIONS` (rule ids name the spec's cases: ``F1``..``F5`` are the five endings of
section 6.3, ``I1`` injection 6.4, ``G1`` the ``inflight_grace`` wait of 6.2).

Parking is a peer of the proxy and of push, so it speaks to them through instructions the
dispatcher carries out; they travel as ``Deliver(...)`` and are never published on the bus:

* :class:`StartBranch` - add one branch to the held proxy context (``Proxy.add_targets``);
  every branch of a parked call, initial or injected, goes through it (6.4: one code path);
* :class:`CancelParkedBranch` - CANCEL one branch (a superseded branch that answered 1xx);
* :class:`SendPush` - run one push attempt through the push gateway client;
* :class:`AbortPushes` - drop queued retries of a call's push attempts (6.5);
* :class:`ReleaseCall` - stop holding the proxy context: the proxy answers with the best
  response (RFC 3261 16.7), ``fallback`` when no branch produced a final response, or keeps
  forking under its own timers when branches are still pending (6.3 case 4).

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

from scaserver.sip.actions import CancelTimer, Deliver, EngineAction, Fact, Instruction, Respond, StartTimer
from scaserver.sip.errors import ProtocolStateError
from scaserver.sip.keys import ServerKey
from scaserver.sip.message import Headers, Peer, Request, Response
from scaserver.sip.responses import make_response

PARK_TIMER: Final = "park-timeout"
GRACE_TIMER: Final = "park-inflight-grace"
WAKE_TIMER: Final = "park-wake-timeout"
HOLD_TIMER: Final = "purr-hold"

ANSWERED_ELSEWHERE: Final = 'SIP;cause=200;text="Call completed elsewhere"'
WAKE_TIMEOUT_REASON: Final = 'SIP;cause=480;text="push wake-up timeout"'

RETRYABLE_STATUSES: Final = frozenset({408, 430, 480, 503})
"""Branch finals after which a confirmation gets a new branch (6.4 step 2): the device was
not reachable.  A transport error counts as 503 and no answer as 408 (RFC 3261 16.8, 16.9)."""


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


# ----------------------------------------------------------------------------- inputs


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


# ---------------------------------------------------------------------- instructions


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


# --------------------------------------------------------------------------- events


class EndReason(enum.Enum):
    ANSWERED = "answered"  # F1
    DECLINED = "declined"  # F2
    EXHAUSTED = "exhausted"  # F3
    TIMEOUT = "timeout"  # F4
    CANCELLED = "cancelled"  # F5
    RELEASED = "released"  # F4 brought forward by the operator (``park.release``)


@attrs.frozen
class ParkStarted(Fact):
    park_id: str
    server_tx: ServerKey
    aors: tuple[str, ...]
    line: tuple[str, int] | None
    at: float


@attrs.frozen
class ParkRejected(Fact):
    """The call could not be parked (6.1 limits): the dispatcher forks it normally."""

    server_tx: ServerKey
    limit: str
    at: float


@attrs.frozen
class BranchAdded(Fact):
    park_id: str
    binding: Hashable
    injected: bool
    at: float


@attrs.frozen
class BranchAnswered(Fact):
    """``park.branch_answered`` (6.11)."""

    park_id: str
    binding: Hashable
    at: float


@attrs.frozen
class WakeObserved(Fact):
    """A pushed token's binding was confirmed ``latency_ms`` after the push was accepted
    (the ``push_wake_latency_seconds`` histogram); None when the gateway had not answered yet (race R1)."""

    park_id: str
    attempt: str
    latency_ms: int | None


@attrs.frozen
class WakeMissed(Fact):
    """``push_no_wake``: an accepted push whose device did not register in time (R23)."""

    park_id: str
    attempt: str


@attrs.frozen
class ParkEnded(Fact):
    park_id: str
    server_tx: ServerKey
    reason: EndReason
    rule: str
    at: float


# ---------------------------------------------------------------------- state machine


class CallState(enum.Enum):
    PARKED = "parked"  # accepting new branches
    GRACE = "grace"  # park_timeout passed, a pushed device's REGISTER is in flight (R12)
    ENDED = "ended"


class Trigger(enum.Enum):
    CONFIRMED = "confirmed"
    ANSWERED = "answered"
    DECLINED = "declined"
    EXHAUSTED = "exhausted"
    PARK_TIMEOUT = "park-timeout"
    PARK_TIMEOUT_INFLIGHT = "park-timeout-inflight"
    GRACE_EXPIRED = "grace-expired"
    CANCELLED = "cancelled"
    RELEASED = "released"


TRANSITIONS: Final[Mapping[tuple[CallState, Trigger], tuple[str, CallState]]] = {
    (CallState.PARKED, Trigger.CONFIRMED): ("I1", CallState.PARKED),
    (CallState.GRACE, Trigger.CONFIRMED): ("I1", CallState.GRACE),
    (CallState.PARKED, Trigger.ANSWERED): ("F1", CallState.ENDED),
    (CallState.GRACE, Trigger.ANSWERED): ("F1", CallState.ENDED),
    (CallState.PARKED, Trigger.DECLINED): ("F2", CallState.ENDED),
    (CallState.GRACE, Trigger.DECLINED): ("F2", CallState.ENDED),
    (CallState.PARKED, Trigger.EXHAUSTED): ("F3", CallState.ENDED),
    (CallState.GRACE, Trigger.EXHAUSTED): ("F3", CallState.ENDED),
    (CallState.PARKED, Trigger.PARK_TIMEOUT): ("F4", CallState.ENDED),
    (CallState.PARKED, Trigger.PARK_TIMEOUT_INFLIGHT): ("G1", CallState.GRACE),
    (CallState.GRACE, Trigger.GRACE_EXPIRED): ("F4", CallState.ENDED),
    (CallState.PARKED, Trigger.CANCELLED): ("F5", CallState.ENDED),
    (CallState.GRACE, Trigger.CANCELLED): ("F5", CallState.ENDED),
    (CallState.PARKED, Trigger.RELEASED): ("F4", CallState.ENDED),
    (CallState.GRACE, Trigger.RELEASED): ("F4", CallState.ENDED),
}
"""Section 6.3 as data; a (state, trigger) without a row is ignored (the call has moved on)."""


class BranchState(enum.Enum):
    CALLING = "calling"
    PROCEEDING = "proceeding"
    DONE = "done"


@attrs.define
class ParkedBranch:
    index: int
    target: BranchTarget
    state: BranchState = BranchState.CALLING
    status: int | None = None
    superseded: bool = False  # 6.4: replaced before any response; CANCEL it on its first 1xx
    provisional: bool = False  # it received a provisional response
    cancel_sent: bool = False
    started_at: float = 0.0  # when StartBranch was issued (``park.dump``)

    @property
    def alive(self) -> bool:
        return self.state is not BranchState.DONE


class AttemptState(enum.Enum):
    """Section 9 ``park.dump`` push attempt states."""

    QUEUED = "queued"
    SENT = "sent"
    RETRYING = "retrying"
    WOKEN = "woken"
    NO_WAKE = "no-wake"
    INVALID = "invalid"
    FAILED = "failed"
    DROPPED = "dropped"


RESOLVED: Final = frozenset(
    {
        AttemptState.WOKEN,
        AttemptState.NO_WAKE,
        AttemptState.INVALID,
        AttemptState.FAILED,
        AttemptState.DROPPED,
    }
)
ACCEPTED: Final = frozenset({AttemptState.SENT, AttemptState.WOKEN})
_WAKEABLE: Final = frozenset(
    {AttemptState.QUEUED, AttemptState.RETRYING, AttemptState.SENT, AttemptState.NO_WAKE}
)


@attrs.define
class PushAttempt:
    id: str
    target: PushTarget
    state: AttemptState = AttemptState.QUEUED
    accepted_at: float | None = None


@attrs.frozen
class WakeKey:
    """Timer key of one attempt's ``wake_timeout``."""

    park_id: str
    attempt: str


@attrs.frozen
class HoldKey:
    """Timer key of a mid-dialog request held for a ``pn-purr`` wake (6.10)."""

    server_tx: ServerKey


@attrs.frozen
class ParkKey:
    """Timer key of a parked call's ``park_timeout`` and ``inflight_grace``."""

    park_id: str


@attrs.define
class ParkedCall:
    park_id: str
    spec: CallSpec
    parked_at: float
    deadline: float
    to_tag: str
    state: CallState = CallState.PARKED
    branches: dict[int, ParkedBranch] = attrs.Factory(dict)
    attempts: dict[str, PushAttempt] = attrs.Factory(dict)
    inflight: set[Hashable] = attrs.Factory(set)  # pushed bindings whose REGISTER is upstream
    first_sdp_relayed: bool = False
    graced: bool = False

    @property
    def server_tx(self) -> ServerKey:
        return self.spec.server_tx

    @property
    def waiting(self) -> bool:
        return self.state is not CallState.ENDED

    def pushed_bindings(self) -> set[Hashable]:
        return {binding for attempt in self.attempts.values() for binding in attempt.target.bindings}

    def attempt_for(self, binding: Hashable, token: tuple[str, str] | None) -> PushAttempt | None:
        for attempt in self.attempts.values():
            if binding in attempt.target.bindings or (token is not None and attempt.target.token == token):
                return attempt
        return None

    def exhausted(self) -> bool:
        """6.3 case 3: nothing can come any more."""
        return (
            all(not branch.alive for branch in self.branches.values())
            and all(attempt.state in RESOLVED for attempt in self.attempts.values())
            and not self.inflight
        )

    def reachable_by_sip(self, attempt: PushAttempt) -> bool:
        """Whether a device of ``attempt`` has a branch that received a provisional (6.3 case 1)."""
        return any(
            branch.target.binding in attempt.target.bindings
            and (
                branch.provisional or (branch.status is not None and branch.status not in RETRYABLE_STATUSES)
            )
            for branch in self.branches.values()
        )


@attrs.define
class _HeldRequest:
    """A mid-dialog request held for a ``pn-purr`` wake (6.10)."""

    server_tx: ServerKey
    request: Request
    binding: Hashable
    aor: str


def _has_sdp(response: Response) -> bool:
    content_type = (response.headers.get("Content-Type") or "").lower()
    return bool(response.body) and content_type.startswith("application/sdp")


def _reliable(response: Response) -> bool:
    return any(tag.strip().lower() == "100rel" for tag in response.headers.values("Require"))


@attrs.define
class ParkingLot:
    """The tsilo table and every parked call (section 6)."""

    settings: ParkingSettings
    id_factory: Callable[[], str]  # push attempt ids (UUIDs at the edge; counters in tests)
    _calls: dict[str, ParkedCall] = attrs.field(init=False, factory=dict)
    _by_tx: dict[ServerKey, str] = attrs.field(init=False, factory=dict)
    _by_aor: dict[str, list[str]] = attrs.field(init=False, factory=dict)
    _late_cancels: dict[str, SendPush] = attrs.field(init=False, factory=dict)
    _held: dict[ServerKey, _HeldRequest] = attrs.field(init=False, factory=dict)
    _counter: int = attrs.field(init=False, default=0)

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
            Deliver(ParkStarted(park_id, spec.server_tx, spec.aors, spec.line, now)),
            StartTimer(ParkKey(park_id), PARK_TIMER, timeout),
        ]
        for target in direct:
            actions += self._start_branch(call, target, injected=False, now=now)
        for push in pushes:
            attempt = PushAttempt(self.id_factory(), push)
            call.attempts[attempt.id] = attempt
            actions.append(Deliver(self._push(call, attempt, PushKind.CALL, None, now)))
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

    def _push(
        self, call: ParkedCall, attempt: PushAttempt, kind: PushKind, reason: str | None, now: float
    ) -> SendPush:
        spec = call.spec
        return SendPush(
            attempt=attempt.id if kind is PushKind.CALL else f"{attempt.id}-{kind.value}",
            kind=kind,
            target=attempt.target,
            aor=spec.aors[0],
            park_id=call.park_id,
            call_id=spec.call_id,
            from_uri=spec.from_uri,
            to_uri=spec.to_uri,
            from_display=spec.from_display,
            line=spec.line,
            ttl=max(0, int(call.deadline - now + 0.999)),
            reason=reason,
            deadline=call.deadline if kind is PushKind.CALL else None,
        )

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
        actions: list[EngineAction] = []
        for server_tx, held in list(self._held.items()):
            if held.aor == aor and held.binding == target.binding:
                del self._held[server_tx]
                actions += [CancelTimer(HoldKey(server_tx), HOLD_TIMER), Deliver(RelayHeld(server_tx))]
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
        actions: list[EngineAction] = []
        attempt = call.attempt_for(target.binding, token)
        if attempt is not None and attempt.state in _WAKEABLE:
            latency = None if attempt.accepted_at is None else int((now - attempt.accepted_at) * 1000 + 0.5)
            if attempt.state is AttemptState.SENT:
                actions.append(CancelTimer(WakeKey(call.park_id, attempt.id), WAKE_TIMER))
            attempt.state = AttemptState.WOKEN
            actions.append(Deliver(WakeObserved(call.park_id, attempt.id, latency)))
        if self._wants_branch(call, target) and len(call.branches) < self.settings.max_branches:
            for branch in call.branches.values():
                if branch.target.binding == target.binding and branch.state is BranchState.CALLING:
                    branch.superseded = True
            actions += self._start_branch(call, target, injected=True, now=now)
        elif call.exhausted():
            actions += self._end(call, Trigger.EXHAUSTED, now)
        return actions

    @staticmethod
    def _wants_branch(call: ParkedCall, target: BranchTarget) -> bool:
        """6.4 step 2: never ring a device twice."""
        same = [b for b in call.branches.values() if b.target.binding == target.binding and not b.superseded]
        if not same:
            return True
        latest = same[-1]
        if latest.alive:
            if latest.state is BranchState.PROCEEDING:
                return False
            return (latest.target.contact, latest.target.flow) != (target.contact, target.flow)
        return latest.status in RETRYABLE_STATUSES

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
        return self._early_media(call, response), []

    def _early_media(self, call: ParkedCall, response: Response) -> Response:
        if self.settings.early_media is EarlyMedia.ALL or not _has_sdp(response):
            return response
        if not call.first_sdp_relayed:
            call.first_sdp_relayed = True
            return response
        if _reliable(response):
            return response  # altering a reliable provisional breaks PRACK (RFC 3262)
        headers = response.headers.remove("Content-Type").remove("Content-Length")
        return Response(180, "Ringing", headers, b"", response.version)

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
        match result:
            case PushResult.SENT:
                attempt.state = AttemptState.SENT
                attempt.accepted_at = now
                return [StartTimer(WakeKey(call.park_id, attempt.id), WAKE_TIMER, self.settings.wake_timeout)]
            case PushResult.RETRYING:
                attempt.state = AttemptState.RETRYING
                return []
            case PushResult.INVALID:
                attempt.state = AttemptState.INVALID
            case PushResult.FAILED:
                attempt.state = AttemptState.FAILED
            case PushResult.DROPPED:
                attempt.state = AttemptState.DROPPED
        if call.exhausted():
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
        actions = self._stop_timers(call)
        actions += self._cancel_pushes(call, "timeout", now, only_unresolved=True)
        actions.append(Deliver(AbortPushes(call.park_id)))
        for branch in call.branches.values():
            if branch.alive and not branch.cancel_sent:
                branch.cancel_sent = True
                actions.append(Deliver(CancelParkedBranch(call.server_tx, branch.index)))
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
            attempt = call.attempts.get(key.attempt) if call is not None else None
            if call is None or attempt is None or attempt.state is not AttemptState.SENT:
                return []
            attempt.state = AttemptState.NO_WAKE
            actions: list[EngineAction] = [Deliver(WakeMissed(call.park_id, attempt.id))]
            if call.exhausted():
                actions += self._end(call, Trigger.EXHAUSTED, now)
            return actions
        if isinstance(key, HoldKey) and name == HOLD_TIMER and key.server_tx in self._held:
            held = self._held.pop(key.server_tx)
            return [Respond(held.server_tx, make_response(held.request, 480, to_tag=None))]
        return []

    # ------------------------------------------------------------------ endings

    @staticmethod
    def _stop_timers(call: ParkedCall) -> list[EngineAction]:
        """The park, grace and wake timers of a call leaving the table."""
        actions: list[EngineAction] = [CancelTimer(ParkKey(call.park_id), PARK_TIMER)]
        if call.graced:
            actions.append(CancelTimer(ParkKey(call.park_id), GRACE_TIMER))
        for attempt in call.attempts.values():
            if attempt.state is AttemptState.SENT:
                actions.append(CancelTimer(WakeKey(call.park_id, attempt.id), WAKE_TIMER))
        return actions

    def _end(self, call: ParkedCall, trigger: Trigger, now: float) -> list[EngineAction]:
        row = TRANSITIONS.get((call.state, trigger))
        if row is None:
            return []
        rule, target = row
        call.state = target
        self._forget(call)
        actions = self._stop_timers(call)
        reason = {
            Trigger.ANSWERED: EndReason.ANSWERED,
            Trigger.DECLINED: EndReason.DECLINED,
            Trigger.EXHAUSTED: EndReason.EXHAUSTED,
            Trigger.PARK_TIMEOUT: EndReason.TIMEOUT,
            Trigger.GRACE_EXPIRED: EndReason.TIMEOUT,
            Trigger.CANCELLED: EndReason.CANCELLED,
        }[trigger]
        push_reason = {
            EndReason.ANSWERED: "answered-elsewhere",
            EndReason.DECLINED: "declined",
            EndReason.TIMEOUT: "timeout",
            EndReason.CANCELLED: "caller-cancelled",
        }.get(reason)
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
        """``cancel`` pushes to pushed devices that SIP cannot tell (6.3 cases 1, 2, 4; 6.5).

        Accepted pushes get theirs now; pushes still queued or retrying get theirs only once
        the gateway accepts them (R7: never before the call push).  On a time-out only the
        attempts that never woke are told.
        """
        actions: list[EngineAction] = []
        for attempt in call.attempts.values():
            if call.reachable_by_sip(attempt):
                continue
            if only_unresolved and attempt.state is AttemptState.WOKEN:
                continue
            cancel = self._push(call, attempt, PushKind.CANCEL, reason, now)
            if attempt.state in ACCEPTED or attempt.state is AttemptState.NO_WAKE:
                actions.append(Deliver(cancel))
            elif attempt.state in (AttemptState.QUEUED, AttemptState.RETRYING):
                self._late_cancels[attempt.id] = cancel
        return actions

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
        if server_tx in self._held:
            raise ProtocolStateError(f"{server_tx!r} is already held")
        self._held[server_tx] = _HeldRequest(server_tx, request, binding, aor)
        push = SendPush(
            attempt=self.id_factory(),
            kind=PushKind.REG_REFRESH,
            target=target,
            aor=aor,
            park_id=None,
            call_id=request.call_id,
            from_uri=None,
            to_uri=None,
            from_display=None,
            line=None,
            ttl=max(0, int(self.settings.wake_timeout)),
            reason=f"mid-{request.method}",
            deadline=now + self.settings.wake_timeout,
        )
        return [Deliver(push), StartTimer(HoldKey(server_tx), HOLD_TIMER, self.settings.wake_timeout)]

    def held(self) -> Iterable[Hashable]:
        return tuple(self._held)
