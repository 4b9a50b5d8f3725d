"""Push wake-ups and parked calls as reporting history (reporting.md section 4.1 ``push_wakeups``
and ``parked_calls``; push-and-parking.md sections 5 and 6).

The push and parking facts name push attempts and parked calls by their ids, while
:class:`~scaserver.reporting.history.HistoryRecorder` keys wake-ups by (AoR, token) and parked
calls by Call-ID.  :class:`ParkingHistory` is the pure translation between the two, keeping
the little state that needs: which attempt pushed which token for which AoR, which parked call
carries which Call-ID, and which of its branches were appended after a wake.

* A wake-up is a ``call``, ``reg-refresh`` or ``message`` push (``reason`` is that type);
  ``cancel`` pushes wake nobody and are not recorded.  The gateway's answer sets
  ``gateway_status`` (no HTTP answer, or a non-2xx, ends it as ``gateway_error``); the
  device's confirmation (``WakeObserved``) or the registration naming its token ends it as
  ``registered``; ``WakeMissed`` (``wake_timeout``) as ``timeout``.
* A parked call's row is written with its first push, so it names that wake-up.  Appended
  branches (6.4) count in ``branches_added``.  Its outcome: ``answered_after_wake`` when the
  answering branch was appended, ``answered_existing`` when it was one of the call's first
  branches (6.1 step 3); ``caller_cancel`` (6.5); ``timeout`` when ``park_timeout`` ended it
  (6.3 case 4, or the operator's ``park.release``) or nothing could come any more and no
  branch was ever created (nobody woke); ``rejected`` for a 6xx (6.3 case 2) or when every
  branch failed (6.3 case 3).  ``final_sip_code`` is the final response relayed to the caller
  for the INVITE, so the row is completed once both the end and that response are known, in
  either order.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Final, TypeAlias, assert_never

import attrs

from scaserver.parking.events import (
    BranchAdded,
    BranchAnswered,
    EndReason,
    ParkEnded,
    ParkStarted,
    WakeMissed,
    WakeObserved,
)
from scaserver.proxy.events import ResponseRelayed
from scaserver.push.facts import PushAnswered, PushOutcome, PushRequested
from scaserver.push.gateway import PushType
from scaserver.reporting.history import HistoryRecorder
from scaserver.sip.errors import MalformedMessage
from scaserver.sip.headers import from_addr
from scaserver.store.history import HistoryRow, ParkOutcome

__all__ = ["ParkingFact", "ParkingHistory"]

ParkingFact: TypeAlias = (
    ParkStarted
    | PushRequested
    | PushAnswered
    | WakeObserved
    | WakeMissed
    | BranchAdded
    | BranchAnswered
    | ParkEnded
    | ResponseRelayed
)

#: Pushes that wake a device (``push_wakeups`` rows); ``cancel`` pushes do not.
WAKING: Final = frozenset({PushType.CALL, PushType.REG_REFRESH, PushType.MESSAGE})


@attrs.define
class _Attempt:
    aor: str
    provider: str
    prid: str = attrs.field(repr=False)
    park_id: str | None
    answered: bool = False  # the gateway answered; a wake (or its time-out) is awaited


@attrs.define
class _Park:
    call_id: str
    from_tag: str
    ruri: str
    parked_at: float
    recorded: bool = False
    branches: int = 0
    appended: set[Hashable] = attrs.Factory(set)
    answered_by: Hashable = None
    outcome: ParkOutcome | None = None
    ended_at: float = 0.0
    final_status: int | None = None


class ParkingHistory:
    """Feeds ``recorder`` from the push and parking facts; returns the rows to queue."""

    def __init__(self, recorder: HistoryRecorder) -> None:
        self._recorder = recorder
        self._attempts: dict[str, _Attempt] = {}
        self._parks: dict[str, _Park] = {}
        self._by_call: dict[str, str] = {}

    @property
    def tracked(self) -> int:
        """Attempts and parked calls still followed (bounded: each ends with its call)."""
        return len(self._attempts) + len(self._parks)

    def _started(self, fact: ParkStarted) -> list[HistoryRow]:
        """``park.started`` for the parked INVITE (its row waits for the first push)."""
        spec = fact.spec
        try:
            from_tag = from_addr(spec.request).tag or ""
        except MalformedMessage:
            from_tag = ""
        ruri = fact.aors[0] if fact.aors else spec.to_uri
        self._parks[fact.park_id] = _Park(spec.call_id, from_tag, ruri, fact.at)
        self._by_call[spec.call_id] = fact.park_id
        return []

    def record(self, fact: ParkingFact, now: float) -> list[HistoryRow]:
        """The rows ``fact`` produces; ``now`` dates the facts that carry no time."""
        match fact:
            case ParkStarted():
                return self._started(fact)
            case PushRequested():
                return self._pushed(fact)
            case PushAnswered():
                return self._gateway_answered(fact)
            case WakeObserved():
                woken = self._attempts.pop(fact.attempt, None)
                if woken is None:
                    return []
                return self._recorder.push_woken(aor=woken.aor, prid=woken.prid, now=now)
            case WakeMissed():
                missed = self._attempts.pop(fact.attempt, None)
                if missed is None:
                    return []
                return self._recorder.push_timed_out(aor=missed.aor, prid=missed.prid)
            case BranchAdded():
                return self._branch_added(fact)
            case BranchAnswered():
                park = self._parks.get(fact.park_id)
                if park is not None:
                    park.answered_by = fact.binding
                return []
            case ParkEnded():
                return self._ended(fact)
            case ResponseRelayed():
                return self._relayed(fact)

    def _pushed(self, fact: PushRequested) -> list[HistoryRow]:
        request = fact.request
        if request.type not in WAKING:
            return []
        park_id = request.call.park_id if request.call is not None else None
        self._attempts[request.id] = _Attempt(request.aor, request.provider, request.prid, park_id)
        rows = self._recorder.push_sent(
            aor=request.aor,
            provider=request.provider,
            prid=request.prid,
            reason=request.type.value,
            call_id=request.call.call_id if request.call is not None else None,
            now=request.created_at,
        )
        park = None if park_id is None else self._parks.get(park_id)
        if park is not None:
            rows += self._recorded(park)
        return rows

    def _gateway_answered(self, fact: PushAnswered) -> list[HistoryRow]:
        attempt = self._attempts.get(fact.attempt)
        if attempt is None:
            return []
        attempt.answered = True
        if fact.outcome is not PushOutcome.SENT or attempt.park_id not in self._parks:
            del self._attempts[fact.attempt]  # no wake to wait for
        return self._recorder.push_gateway_answered(
            aor=attempt.aor, prid=attempt.prid, status=fact.status, now=fact.at
        )

    def _recorded(self, park: _Park) -> list[HistoryRow]:
        """The parked call's first row, once."""
        if park.recorded:
            return []
        park.recorded = True
        return self._recorder.call_parked(
            call_id=park.call_id, ruri=park.ruri, now=park.parked_at, from_tag=park.from_tag
        )

    def _branch_added(self, fact: BranchAdded) -> list[HistoryRow]:
        park = self._parks.get(fact.park_id)
        if park is None:
            return []
        park.branches += 1
        if not fact.injected:
            return []
        park.appended.add(fact.binding)
        return [*self._recorded(park), *self._recorder.park_branch_added(call_id=park.call_id, now=fact.at)]

    def _ended(self, fact: ParkEnded) -> list[HistoryRow]:
        park = self._parks.get(fact.park_id)
        if park is None:
            return []
        park.outcome = self._outcome(park, fact.reason)
        park.ended_at = fact.at
        # No wake is awaited for an ended call; a push still in flight keeps its attempt, so
        # the gateway's late answer is recorded (R7).
        for attempt_id, attempt in list(self._attempts.items()):
            if attempt.park_id == fact.park_id and attempt.answered:
                del self._attempts[attempt_id]
        return self._completed(fact.park_id, park)

    @staticmethod
    def _outcome(park: _Park, reason: EndReason) -> ParkOutcome:
        match reason:
            case EndReason.ANSWERED:
                if park.answered_by is not None and park.answered_by in park.appended:
                    return ParkOutcome.ANSWERED_AFTER_WAKE
                return ParkOutcome.ANSWERED_EXISTING
            case EndReason.CANCELLED:
                return ParkOutcome.CALLER_CANCEL
            case EndReason.TIMEOUT | EndReason.RELEASED:  # an operator's release is an early time-out
                return ParkOutcome.TIMEOUT
            case EndReason.DECLINED:
                return ParkOutcome.REJECTED
            case EndReason.EXHAUSTED:
                return ParkOutcome.REJECTED if park.branches else ParkOutcome.TIMEOUT
            case _:
                assert_never(reason)

    def _relayed(self, fact: ResponseRelayed) -> list[HistoryRow]:
        if fact.response.status < 200 or fact.request.method != "INVITE":
            return []
        park_id = self._by_call.get(fact.request.call_id or "")
        park = None if park_id is None else self._parks.get(park_id)
        if park_id is None or park is None or park.final_status is not None:
            return []
        park.final_status = fact.response.status
        return self._completed(park_id, park)

    def _completed(self, park_id: str, park: _Park) -> list[HistoryRow]:
        """The parked call's last row, when both its end and its final response are known."""
        if park.outcome is None or park.final_status is None:
            return []
        del self._parks[park_id]
        if self._by_call.get(park.call_id) == park_id:
            del self._by_call[park.call_id]
        rows = self._recorded(park)
        return rows + self._recorder.park_ended(
            call_id=park.call_id, outcome=park.outcome, status=park.final_status, now=park.ended_at
        )
