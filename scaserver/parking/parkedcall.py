"""One parked call (push-and-parking.md section 6) as a small state machine whose transitions
are the data of :data:`TRANSITIONS` (rule ids name the spec's cases: ``F1``..``F5`` are the
five endings of section 6.3, ``I1`` injection 6.4, ``G1`` the ``inflight_grace`` wait of 6.2),
with its branches and its push attempts."""

from __future__ import annotations

import enum
from collections.abc import Hashable, Mapping
from typing import Final

import attrs

from scaserver.parking.events import WakeMissed, WakeObserved
from scaserver.parking.instructions import (
    BranchTarget,
    CallSpec,
    CancelParkedBranch,
    PushKind,
    PushResult,
    PushTarget,
    SendPush,
)
from scaserver.sip.actions import CancelTimer, Deliver, EngineAction
from scaserver.sip.keys import ServerKey
from scaserver.sip.message import Response

PARK_TIMER: Final = "park-timeout"
GRACE_TIMER: Final = "park-inflight-grace"
WAKE_TIMER: Final = "park-wake-timeout"

RETRYABLE_STATUSES: Final = frozenset({408, 430, 480, 503})
"""Branch finals after which a confirmation gets a new branch (6.4 step 2): the device was
not reachable.  A transport error counts as 503 and no answer as 408 (RFC 3261 16.8, 16.9)."""


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
WAKEABLE: Final = frozenset(
    {AttemptState.QUEUED, AttemptState.RETRYING, AttemptState.SENT, AttemptState.NO_WAKE}
)


@attrs.define
class PushAttempt:
    id: str
    target: PushTarget
    state: AttemptState = AttemptState.QUEUED
    accepted_at: float | None = None

    def record(self, result: PushResult, now: float) -> None:
        """The push client's verdict on this attempt (section 5.2)."""
        match result:
            case PushResult.SENT:
                self.state = AttemptState.SENT
                self.accepted_at = now
            case PushResult.RETRYING:
                self.state = AttemptState.RETRYING
            case PushResult.INVALID:
                self.state = AttemptState.INVALID
            case PushResult.FAILED:
                self.state = AttemptState.FAILED
            case PushResult.DROPPED:
                self.state = AttemptState.DROPPED


@attrs.frozen
class WakeKey:
    """Timer key of one attempt's ``wake_timeout``."""

    park_id: str
    attempt: str


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

    def wants_branch(self, target: BranchTarget) -> bool:
        """6.4 step 2: never ring a device twice."""
        same = [b for b in self.branches.values() if b.target.binding == target.binding and not b.superseded]
        if not same:
            return True
        latest = same[-1]
        if latest.alive:
            if latest.state is BranchState.PROCEEDING:
                return False
            return (latest.target.contact, latest.target.flow) != (target.contact, target.flow)
        return latest.status in RETRYABLE_STATUSES

    def woken(self, binding: Hashable, token: tuple[str, str] | None, now: float) -> list[EngineAction]:
        """A confirmation of ``binding`` wakes the attempt that pushed it (``WakeObserved``)."""
        attempt = self.attempt_for(binding, token)
        if attempt is None or attempt.state not in WAKEABLE:
            return []
        actions: list[EngineAction] = []
        latency = None if attempt.accepted_at is None else int((now - attempt.accepted_at) * 1000 + 0.5)
        if attempt.state is AttemptState.SENT:
            actions.append(CancelTimer(WakeKey(self.park_id, attempt.id), WAKE_TIMER))
        attempt.state = AttemptState.WOKEN
        actions.append(Deliver(WakeObserved(self.park_id, attempt.id, latency)))
        return actions

    def push(self, attempt: PushAttempt, kind: PushKind, reason: str | None, now: float) -> SendPush:
        """The ``kind`` push of ``attempt`` for this call (5.1)."""
        spec = self.spec
        return SendPush(
            attempt=attempt.id if kind is PushKind.CALL else f"{attempt.id}-{kind.value}",
            kind=kind,
            target=attempt.target,
            aor=spec.aors[0],
            park_id=self.park_id,
            call_id=spec.call_id,
            from_uri=spec.from_uri,
            to_uri=spec.to_uri,
            from_display=spec.from_display,
            line=spec.line,
            ttl=max(0, int(self.deadline - now + 0.999)),
            reason=reason,
            deadline=self.deadline if kind is PushKind.CALL else None,
        )

    def cancel_pushes(
        self, reason: str, now: float, *, only_unresolved: bool
    ) -> tuple[list[SendPush], dict[str, SendPush]]:
        """``cancel`` pushes to pushed devices that SIP cannot tell (6.3 cases 1, 2, 4; 6.5):
        those to send now, and those to send once the gateway accepts the call push, by attempt.

        Accepted pushes get theirs now; pushes still queued or retrying get theirs only once
        the gateway accepts them (R7: never before the call push).  On a time-out only the
        attempts that never woke are told.
        """
        now_sent: list[SendPush] = []
        later: dict[str, SendPush] = {}
        for attempt in self.attempts.values():
            if self.reachable_by_sip(attempt):
                continue
            if only_unresolved and attempt.state is AttemptState.WOKEN:
                continue
            cancel = self.push(attempt, PushKind.CANCEL, reason, now)
            if attempt.state in ACCEPTED or attempt.state is AttemptState.NO_WAKE:
                now_sent.append(cancel)
            elif attempt.state in (AttemptState.QUEUED, AttemptState.RETRYING):
                later[attempt.id] = cancel
        return now_sent, later

    def stop_timers(self) -> list[EngineAction]:
        """The park, grace and wake timers of a call leaving the table."""
        actions: list[EngineAction] = [CancelTimer(ParkKey(self.park_id), PARK_TIMER)]
        if self.graced:
            actions.append(CancelTimer(ParkKey(self.park_id), GRACE_TIMER))
        for attempt in self.attempts.values():
            if attempt.state is AttemptState.SENT:
                actions.append(CancelTimer(WakeKey(self.park_id, attempt.id), WAKE_TIMER))
        return actions

    def early_media(self, response: Response, *, first_only: bool) -> Response:
        """6.6: the provisional ``response`` as relayed upstream; with ``first_only`` only the
        first SDP goes up, later ones become a body-less 180 (unless reliable, RFC 3262)."""
        if not first_only or not _has_sdp(response):
            return response
        if not self.first_sdp_relayed:
            self.first_sdp_relayed = True
            return response
        if _reliable(response):
            return response  # altering a reliable provisional breaks PRACK (RFC 3262)
        headers = response.headers.remove("Content-Type").remove("Content-Length")
        return Response(180, "Ringing", headers, b"", response.version)

    def cancel_live_branches(self) -> list[EngineAction]:
        """CANCEL every live branch not CANCELled yet (one without a provisional once its
        first 1xx arrives, RFC 3261 9.1)."""
        actions: list[EngineAction] = []
        for branch in self.branches.values():
            if branch.alive and not branch.cancel_sent:
                branch.cancel_sent = True
                actions.append(Deliver(CancelParkedBranch(self.server_tx, branch.index)))
        return actions

    def wake_missed(self, attempt_id: str) -> list[EngineAction]:
        """``wake_timeout`` of an accepted push passed without its device registering (R23)."""
        attempt = self.attempts.get(attempt_id)
        if attempt is None or attempt.state is not AttemptState.SENT:
            return []
        attempt.state = AttemptState.NO_WAKE
        return [Deliver(WakeMissed(self.park_id, attempt.id))]


def _has_sdp(response: Response) -> bool:
    content_type = (response.headers.get("Content-Type") or "").lower()
    return bool(response.body) and content_type.startswith("application/sdp")


def _reliable(response: Response) -> bool:
    return any(tag.strip().lower() == "100rel" for tag in response.headers.values("Require"))
