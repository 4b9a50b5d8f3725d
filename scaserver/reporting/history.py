"""From in-process facts to reporting history rows (reporting.md sections 3 and 4).

:class:`HistoryRecorder` is pure: it takes the facts the engines publish on the bus (the
proxy's ``RequestForwarded``, ``ResponseRelayed``, ``AckForwarded``, ``CallCancelled`` and
``CallEnded``, the SCA engine's ``AppearanceChanged``, the registrar's ``Binding*``), plus
explicit calls for push wake-ups, parked calls and the per-minute line sample, and returns the
rows (``scaserver.store.history``) to queue for writing.  It never touches a clock or the
database; times come from the facts (epoch seconds, stored as epoch milliseconds).

It keeps the little per-call state a CDR needs: start, first ring, answer, end, the caller's
cancel, the line and appearance index, open hold intervals and the pickup hand-off.

Call rows (``calls``, section 4.1):

* A call starts when the proxy forwards the first branch of an initial INVITE; further
  branches of the same Call-ID are the same call.  A call the proxy never forwards (rejected
  or challenged before any branch) has no row.  ``call_uuid`` is a UUID-5 of (Call-ID,
  From-tag), so a repeated fact rewrites the same row (section 3 rule 6).
* Direction and line: a call to a shared line (To or Request-URI AoR is a line) is
  ``inbound`` on that line; otherwise a call from a line is ``outbound`` on it; otherwise
  the caller's and callee's domains decide (both local: ``internal``; caller local:
  ``outbound``; else ``inbound``).
* ``ring_ms`` at the first 180/183 relayed upstream, ``answer_ms`` at the first 2xx.
* The end comes with the proxy's ``CallEnded``: a BYE gives ``ANSWERED``/``bye``; a failed
  initial INVITE gives its disposition by status (:func:`failure_outcome`).  A 401/407 is not
  an end: the caller re-sends the INVITE with credentials in the same Call-ID, which reopens
  the row.
* A pickup from hold (sca.md section 7.1: an initial INVITE carrying ``Replaces``, or the
  7.1 shape naming a held appearance) continues the held call on a new dialog: it is not a
  new call.  The old dialog's BYE does not end the call once the pickup is answered (nor
  while it is pending, since Polycom phones send it before the new leg's 200); a failed
  pickup leaves the call on its old dialog.
* ``hold_count``/``held_ms`` sum the intervals the call's appearance spent in ``held`` or
  ``held-private`` (an interval still open at the end is closed there).

Appearance rows (``appearance_events``): one per change of the wire state (``ACTIVE_PENDING``
is ``active`` on the wire, as in sca.md 6.1), plus the O5 loop (the seized appearance's INVITE,
cause ``invite``), which links the seizure to its call.  Other loops (a rejected seize O2, a
487/3xx/401 O10-O12, re-INVITE answers O17) change nothing the views can use and would cut
hold and seize intervals short, so they are not written; seize rejections are counted by the
metrics instead (section 6).
"""

from __future__ import annotations

import hashlib
import math
import uuid
from collections.abc import Callable, Iterable
from typing import Final, TypeAlias, assert_never

import attrs

from scaserver.proxy.events import (
    AckForwarded,
    CallCancelled,
    CallEnded,
    CallEndReason,
    RequestForwarded,
    ResponseRelayed,
)
from scaserver.registrar.binding import (
    Binding,
    BindingAdded,
    BindingExpired,
    BindingRefreshed,
    BindingRemoved,
)
from scaserver.sca.appearance import HELD_STATES, AppearanceChanged, AppearanceState
from scaserver.sca.callinfo import CallInfo, CallInfoError
from scaserver.sip.errors import MalformedMessage
from scaserver.sip.headers import contacts, cseq, from_addr, to_addr, top_via
from scaserver.sip.message import Request, Response
from scaserver.sip.uri import NameAddr, SipUri, Uri, parse_uri
from scaserver.store.history import (
    AccRecord,
    AppearanceEventRecord,
    CallRecord,
    Cause,
    Direction,
    Disposition,
    EndReason,
    HistoryRow,
    LineSampleRecord,
    ParkedCallRecord,
    ParkOutcome,
    PushOutcome,
    PushWakeupRecord,
    RegistrationEvent,
    RegistrationEventRecord,
    WakeupKey,
)

__all__ = [
    "CALL_UUID_NAMESPACE",
    "HistoryFact",
    "HistoryRecorder",
    "call_uuid",
    "cause_of",
    "failure_outcome",
    "prid_sha256",
]

HistoryFact: TypeAlias = (
    AppearanceChanged
    | RequestForwarded
    | ResponseRelayed
    | AckForwarded
    | CallCancelled
    | CallEnded
    | BindingAdded
    | BindingRefreshed
    | BindingRemoved
    | BindingExpired
)

#: Namespace of the UUID-5 call identifiers (fixed: the same call always gets the same UUID).
CALL_UUID_NAMESPACE: Final = uuid.UUID("6f1c0d5e-3b2a-5c59-9a51-2f4f0c8a7e10")

#: How long a challenged (401/407) call waits for its authenticated INVITE before it is dropped.
CHALLENGE_GRACE_S: Final = 60.0


def call_uuid(call_id: str, from_tag: str) -> str:
    """The ``call_uuid`` of the call with this Call-ID and caller tag: ``uuid5`` of both, with
    octets that were not UTF-8 (surrogate escapes) hashed too instead of failing."""
    name = f"{call_id}\n{from_tag}".encode("utf-8", "surrogatepass")
    digest = hashlib.sha1(CALL_UUID_NAMESPACE.bytes + name, usedforsecurity=False).digest()
    return str(uuid.UUID(bytes=digest[:16], version=5))


def prid_sha256(prid: str) -> str:
    """The stored form of a push token (reporting.md section 3 rule 4)."""
    return hashlib.sha256(prid.encode("utf-8", "surrogatepass")).hexdigest()


def _ms(seconds: float) -> int:
    return math.floor(seconds * 1000 + 0.5)


def failure_outcome(status: int, *, cancelled: bool) -> tuple[Disposition, EndReason]:
    """Disposition and end reason of an initial INVITE that ended with final ``status`` >= 300.

    Asterisk's vocabulary (section 2.2), with "caller hung up" kept apart from "nobody
    answered" (section 2.3): a caller's CANCEL is ``NO ANSWER``/``caller_cancel``;
    486/600/603 are ``BUSY``; 408/480 (ring time-out, nobody available) ``NO ANSWER``/
    ``ring_timeout``; 503 ``CONGESTION``; other 5xx ``FAILED``/``error``; the rest
    (3xx, 4xx, 6xx) ``FAILED``/``rejected``.
    """
    if cancelled or status == 487:
        return Disposition.NO_ANSWER, EndReason.CALLER_CANCEL
    if status in (486, 600, 603):
        return Disposition.BUSY, EndReason.REJECTED
    if status in (408, 480):
        return Disposition.NO_ANSWER, EndReason.RING_TIMEOUT
    if status == 503:
        return Disposition.CONGESTION, EndReason.ERROR
    if 500 <= status < 600:
        return Disposition.FAILED, EndReason.ERROR
    return Disposition.FAILED, EndReason.REJECTED


#: ``appearance_events.cause`` of each rule id of sca.md sections 6.3, 6.4, 7.1, 3.5 and 11.
_RULE_CAUSES: Final[dict[str, Cause]] = {
    "O1": Cause.LINE_SEIZE,
    "O2": Cause.SEIZE_REJECTED,
    "O3": Cause.LINE_SEIZE,
    "O4": Cause.SEIZE_EXPIRED,
    "O5": Cause.INVITE,
    "O5b": Cause.INVITE,
    "O6": Cause.PROVISIONAL,
    "O7": Cause.ANSWERED,
    "O8": Cause.CANCEL,
    "O9": Cause.INVITE,
    "O10": Cause.CANCEL,
    "O11": Cause.INVITE,
    "O12": Cause.INVITE,
    "O13": Cause.INVITE,
    "O14": Cause.REINVITE_HOLD,
    "O14b": Cause.REINVITE_HOLD,
    "O15": Cause.REINVITE_HOLD,
    "O16": Cause.REINVITE_RESUME,
    "O17": Cause.ANSWERED,
    "O18": Cause.BYE,
    "O19": Cause.RETRIEVE,
    "O19b": Cause.RETRIEVE,
    "7.1": Cause.RETRIEVE,
    "3.5": Cause.PURGE,
    "I1": Cause.INVITE,
    "I2": Cause.PROVISIONAL,
    "I3": Cause.ANSWERED,
    "I4": Cause.ANSWERED,
    "I5": Cause.PURGE,
    "I6": Cause.CANCEL,
    "O20": Cause.PURGE,
    "I8": Cause.PURGE,
    "Q18": Cause.STALE,
    "4028": Cause.SESSION_EXPIRED,
    "RPC": Cause.RPC,
}

_ACTIVE_STATES: Final = frozenset({AppearanceState.ACTIVE, AppearanceState.ACTIVE_PENDING})


def cause_of(fact: AppearanceChanged) -> Cause:
    """The ``cause`` of an appearance change: by rule id; the O9b roll-back of a hold or a
    retrieve by the direction it went; an unknown rule by its target (idle: ``purge``)."""
    if fact.rule == "O9b":
        return Cause.REINVITE_HOLD if fact.to_state in HELD_STATES else Cause.REINVITE_RESUME
    cause = _RULE_CAUSES.get(fact.rule)
    if cause is not None:
        return cause
    return Cause.PURGE if fact.to_state is AppearanceState.IDLE else Cause.RPC


def _aor(uri: Uri) -> str:
    return uri.aor() if isinstance(uri, SipUri) else str(uri)


def _user_host(uri: Uri) -> tuple[str, str]:
    if isinstance(uri, SipUri):
        return (uri.user or "", uri.host)
    return ("", "")


def _domain(aor: str) -> str:
    return aor.rpartition("@")[2].split(":", 1)[0].lower()


@attrs.define
class _Call:
    record: CallRecord
    started: float
    answered: float | None = None
    cancelled: bool = False
    challenged_at: float | None = None
    current_call_id: str = ""
    pickup_call_id: str | None = None
    old_leg_ended: float | None = None
    call_ids: set[str] = attrs.Factory(set)


@attrs.define
class _Appearance:
    state: AppearanceState = AppearanceState.IDLE
    call: _Call | None = None
    hold_started_ms: int | None = None
    hold_call: _Call | None = None


def _no_device(_contact: str) -> str | None:
    return None


class HistoryRecorder:
    """The mapper from facts to history rows; one per server, fed from the bus.

    ``line_of`` gives the shared line an AoR belongs to (aliases resolved), or None;
    ``local_domains`` are the domains whose users are ours (direction of calls not involving
    a line); ``device_of`` gives the 12-hex-digit MAC of the device behind a contact URI when
    provisioning knows it.
    """

    def __init__(
        self,
        *,
        line_of: Callable[[str], str | None],
        local_domains: Iterable[str] = (),
        device_of: Callable[[str], str | None] = _no_device,
    ) -> None:
        self._line_of = line_of
        self._local_domains = frozenset(domain.lower() for domain in local_domains)
        self._device_of = device_of
        self._calls: dict[str, _Call] = {}
        self._appearances: dict[tuple[str, int], _Appearance] = {}
        self._wakeups: dict[tuple[str, str], PushWakeupRecord] = {}
        self._parked: dict[str, ParkedCallRecord] = {}
        self._seq = 0

    # -- bus facts ------------------------------------------------------------------------

    def record(self, fact: HistoryFact) -> list[HistoryRow]:
        """The rows ``fact`` produces (often none)."""
        match fact:
            case AppearanceChanged():
                return self._appearance_changed(fact)
            case RequestForwarded():
                return self._request_forwarded(fact)
            case ResponseRelayed():
                return self._response_relayed(fact)
            case AckForwarded():
                return []
            case CallCancelled():
                call = self._calls.get(fact.request.call_id or "")
                if call is not None and fact.request.call_id == call.current_call_id:
                    call.cancelled = True
                return []
            case CallEnded():
                return self._call_ended(fact)
            case BindingAdded() | BindingRefreshed() | BindingRemoved() | BindingExpired():
                return self._binding(fact)
            case _:
                assert_never(fact)

    @property
    def calls_in_progress(self) -> int:
        """Calls started and not yet ended (for metrics and tests)."""
        return len({id(call) for call in self._calls.values() if call.challenged_at is None})

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq

    # -- calls ----------------------------------------------------------------------------

    def _request_forwarded(self, fact: RequestForwarded) -> list[HistoryRow]:
        request = fact.request
        call_id = request.call_id
        if request.method != "INVITE" or not call_id:
            return []
        try:
            caller, callee = from_addr(request), to_addr(request)
        except MalformedMessage:
            return []
        if callee.tag is not None or caller.tag is None:
            return []  # re-INVITEs are the appearance's business, not the CDR's
        self._drop_stale_challenges(fact.now)
        existing = self._calls.get(call_id)
        if existing is not None:
            if existing.challenged_at is None:
                return []  # another branch of a call already recorded
            return self._reopen(existing)
        replaced = self._replaced_call(request, fact.forwarded, caller, callee)
        if replaced is not None:
            replaced.pickup_call_id = call_id
            replaced.call_ids.add(call_id)
            self._calls[call_id] = replaced
            return []
        record = self._new_record(request, call_id, caller, callee, fact.now)
        if call_id in self._parked:  # the first branch of a parked call is an appended one
            record = attrs.evolve(record, parked=True)
        call = _Call(record, fact.now, current_call_id=call_id, call_ids={call_id})
        self._calls[call_id] = call
        return [record]

    def _new_record(
        self, request: Request, call_id: str, caller: NameAddr, callee: NameAddr, now: float
    ) -> CallRecord:
        caller_aor, callee_aor = _aor(caller.uri), _aor(callee.uri)
        callee_line = self._line_of(callee_aor) or self._line_of(_ruri_aor(request))
        caller_line = self._line_of(caller_aor)
        if callee_line is not None:
            direction, line = Direction.INBOUND, callee_line
        elif caller_line is not None:
            direction, line = Direction.OUTBOUND, caller_line
        else:
            caller_local = _domain(caller_aor) in self._local_domains
            callee_local = _domain(callee_aor) in self._local_domains
            line = None
            if caller_local and callee_local:
                direction = Direction.INTERNAL
            elif caller_local:
                direction = Direction.OUTBOUND
            else:
                direction = Direction.INBOUND
        contact = _first_contact(request)
        return CallRecord(
            call_uuid=call_uuid(call_id, caller.tag or ""),
            sip_call_id=call_id,
            from_tag=caller.tag or "",
            to_tag="",
            direction=direction,
            line_aor=line,
            appearance_index=None,
            caller_uri=caller_aor,
            caller_display=caller.display_name,
            callee_uri=callee_aor,
            origin_device=None if contact is None else self._device_of(contact),
            answered_contact=None,
            answered_device=None,
            started_ms=_ms(now),
        )

    def _reopen(self, call: _Call) -> list[HistoryRow]:
        call.challenged_at = None
        call.record = attrs.evolve(
            call.record,
            disposition=Disposition.IN_PROGRESS,
            end_reason=None,
            ended_ms=None,
            duration_ms=None,
            billable_ms=None,
            final_sip_code=None,
            final_sip_reason=None,
        )
        return [call.record]

    def _drop_stale_challenges(self, now: float) -> None:
        stale = [
            call_id
            for call_id, call in self._calls.items()
            if call.challenged_at is not None and now - call.challenged_at > CHALLENGE_GRACE_S
        ]
        for call_id in stale:
            del self._calls[call_id]

    def _replaced_call(
        self, request: Request, forwarded: Request, caller: NameAddr, callee: NameAddr
    ) -> _Call | None:
        """The call a pickup INVITE continues (sca.md 7.1), or None for a new call."""
        replaces = forwarded.headers.get("Replaces") or request.headers.get("Replaces")
        if replaces:
            old = self._calls.get(replaces.split(";", 1)[0].strip())
            if old is not None and old.challenged_at is None:
                return old
        line = self._line_of(_aor(caller.uri))
        if line is None or line != self._line_of(_aor(callee.uri)):
            return None
        try:
            info = CallInfo.of(request.headers).first()
        except CallInfoError:
            return None
        if info is None or info.index is None:
            return None
        app = self._appearances.get((line, info.index))
        if app is None or app.state not in HELD_STATES or app.call is None:
            return None
        return app.call

    def _response_relayed(self, fact: ResponseRelayed) -> list[HistoryRow]:
        request, response = fact.request, fact.response
        call_id = request.call_id or ""
        call = self._calls.get(call_id)
        try:
            method = cseq(response).method
            initial = to_addr(request).tag is None
        except MalformedMessage:
            return []
        rows: list[HistoryRow] = []
        if response.status >= 200 and (method == "BYE" or (method == "INVITE" and initial)):
            rows.append(self._acc(request, response, fact.now, call))
        if call is None or method != "INVITE" or not initial or call.challenged_at is not None:
            return rows
        if call_id == call.pickup_call_id:
            if 200 <= response.status < 300:
                call.current_call_id = call_id
                call.pickup_call_id = None
                call.old_leg_ended = None
            return rows
        if call_id != call.current_call_id:
            return rows
        offset = _ms(fact.now) - call.record.started_ms
        if response.status in (180, 183) and call.record.ring_ms is None:
            call.record = attrs.evolve(call.record, ring_ms=offset)
            rows.insert(0, call.record)
        elif 200 <= response.status < 300 and call.answered is None:
            call.answered = fact.now
            contact = _first_contact(response)
            try:
                to_tag = to_addr(response).tag or ""
            except MalformedMessage:
                to_tag = ""
            call.record = attrs.evolve(
                call.record,
                answer_ms=offset,
                to_tag=to_tag,
                answered_contact=contact,
                answered_device=None if contact is None else self._device_of(contact),
                final_sip_code=response.status,
                final_sip_reason=response.reason,
            )
            rows.insert(0, call.record)
        elif response.status >= 300 and call.answered is None:
            call.record = attrs.evolve(
                call.record, final_sip_code=response.status, final_sip_reason=response.reason
            )
        return rows

    def _acc(self, request: Request, response: Response, now: float, call: _Call | None) -> AccRecord:
        src_user = src_domain = dst_user = dst_domain = from_tag = to_tag = src_ip = ""
        try:
            caller, callee = from_addr(request), to_addr(request)
            src_user, src_domain = _user_host(caller.uri)
            dst_user, dst_domain = _user_host(callee.uri)
            from_tag = caller.tag or ""
            to_tag = to_addr(response).tag or callee.tag or ""
            via = top_via(request)
            src_ip = via.received or via.host
        except MalformedMessage:
            pass  # whatever parsed is kept; acc columns default to ''
        return AccRecord(
            seq=self._next_seq(),
            time_ms=_ms(now),
            method=request.method,
            from_tag=from_tag,
            to_tag=to_tag,
            callid=request.call_id or "",
            sip_code=f"{response.status:03d}",
            sip_reason=response.reason,
            src_user=src_user,
            src_domain=src_domain,
            src_ip=src_ip,
            dst_user=dst_user,
            dst_domain=dst_domain,
            line_aor=None if call is None else call.record.line_aor,
            appearance_index=None if call is None else call.record.appearance_index,
        )

    def _call_ended(self, fact: CallEnded) -> list[HistoryRow]:
        call = self._calls.get(fact.call_id)
        if call is None or call.challenged_at is not None:
            return []
        if fact.reason is CallEndReason.BYE:
            if fact.call_id != call.current_call_id:
                self._forget_leg(call, fact.call_id)  # the held leg a pickup replaced
                return []
            if call.pickup_call_id is not None:
                call.old_leg_ended = fact.now  # Polycom: BYE of the old leg before the pickup's 200
                return []
            return self._end(call, fact.now, Disposition.ANSWERED, EndReason.BYE)
        if fact.call_id == call.pickup_call_id:
            call.pickup_call_id = None
            self._forget_leg(call, fact.call_id)
            if call.old_leg_ended is not None:
                return self._end(call, call.old_leg_ended, Disposition.ANSWERED, EndReason.BYE)
            return []
        if fact.call_id != call.current_call_id or call.answered is not None:
            return []
        if fact.status in (401, 407) and not call.cancelled:
            call.challenged_at = fact.now
            end_ms = _ms(fact.now)
            call.record = attrs.evolve(
                call.record,
                disposition=Disposition.FAILED,
                end_reason=EndReason.REJECTED,
                final_sip_code=fact.status,
                ended_ms=end_ms,
                duration_ms=end_ms - call.record.started_ms,
                billable_ms=0,
            )
            return [call.record]
        cancelled = call.cancelled or fact.reason is CallEndReason.CANCELLED
        disposition, reason = failure_outcome(fact.status, cancelled=cancelled)
        if call.record.final_sip_code != fact.status:
            call.record = attrs.evolve(call.record, final_sip_code=fact.status, final_sip_reason=None)
        return self._end(call, fact.now, disposition, reason)

    def _forget_leg(self, call: _Call, call_id: str) -> None:
        call.call_ids.discard(call_id)
        if self._calls.get(call_id) is call:
            del self._calls[call_id]

    def _end(self, call: _Call, now: float, disposition: Disposition, reason: EndReason) -> list[HistoryRow]:
        end_ms = _ms(now)
        for app in self._appearances.values():
            if app.hold_call is call:
                self._close_hold(app, end_ms)
            if app.call is call:
                app.call = None
        if call.record.parked and reason is EndReason.RING_TIMEOUT:
            reason = EndReason.PARK_TIMEOUT
        billable = 0 if call.answered is None else end_ms - _ms(call.answered)
        call.record = attrs.evolve(
            call.record,
            ended_ms=end_ms,
            duration_ms=end_ms - call.record.started_ms,
            billable_ms=billable,
            disposition=disposition,
            end_reason=reason,
        )
        for call_id in list(call.call_ids):
            self._forget_leg(call, call_id)
        return [call.record]

    # -- appearances ----------------------------------------------------------------------

    def _appearance_changed(self, fact: AppearanceChanged) -> list[HistoryRow]:
        key = (fact.line, fact.index)
        app = self._appearances.get(key) or _Appearance()
        rows: list[HistoryRow] = []
        call = None if fact.call_id is None else self._calls.get(fact.call_id)
        if call is not None and call.challenged_at is None:
            app.call = call
            if call.record.appearance_index is None:
                call.record = attrs.evolve(
                    call.record, line_aor=call.record.line_aor or fact.line, appearance_index=fact.index
                )
                rows.append(call.record)
        event_ms = _ms(fact.time)
        was_held, now_held = fact.from_state in HELD_STATES, fact.to_state in HELD_STATES
        if was_held and not now_held:
            self._close_hold(app, event_ms)
        elif now_held and not was_held:
            app.hold_started_ms, app.hold_call = event_ms, app.call
        if fact.from_state.wire != fact.to_state.wire or fact.rule == "O5":
            owner = fact.owner
            rows.append(
                AppearanceEventRecord(
                    seq=self._next_seq(),
                    event_ms=event_ms,
                    line_aor=fact.line,
                    appearance_index=fact.index,
                    old_state=fact.from_state.wire,
                    new_state=fact.to_state.wire,
                    cause=cause_of(fact),
                    owner_contact=owner,
                    owner_device=None if owner is None else self._device_of(owner),
                    call_uuid=None if app.call is None else app.call.record.call_uuid,
                    source="rpc" if fact.rule == "RPC" else "sip",
                )
            )
        app.state = fact.to_state
        if fact.to_state is AppearanceState.IDLE:
            self._appearances.pop(key, None)
        else:
            self._appearances[key] = app
        return rows

    def _close_hold(self, app: _Appearance, end_ms: int) -> None:
        call, started = app.hold_call, app.hold_started_ms
        app.hold_call, app.hold_started_ms = None, None
        if call is None or started is None:
            return
        call.record = attrs.evolve(
            call.record,
            hold_count=call.record.hold_count + 1,
            held_ms=call.record.held_ms + max(0, end_ms - started),
        )

    def sample_lines(self, now: float, lines: Iterable[str] = ()) -> list[LineSampleRecord]:
        """The ``line_samples`` rows of the minute containing ``now``: every line in ``lines``
        (the provisioned ones) and every line with a busy appearance."""
        minute_ms = (_ms(now) // 60_000) * 60_000
        counts: dict[str, list[int]] = {line: [0, 0, 0] for line in lines}
        for (line, _index), app in self._appearances.items():
            busy_active_held = counts.setdefault(line, [0, 0, 0])
            busy_active_held[0] += 1
            if app.state in _ACTIVE_STATES:
                busy_active_held[1] += 1
            elif app.state in HELD_STATES:
                busy_active_held[2] += 1
        return [
            LineSampleRecord(line, minute_ms, busy, active, held)
            for line, (busy, active, held) in sorted(counts.items())
        ]

    # -- registrations and push wake-ups --------------------------------------------------

    def _binding(
        self, fact: BindingAdded | BindingRefreshed | BindingRemoved | BindingExpired
    ) -> list[HistoryRow]:
        binding = fact.binding
        rows: list[HistoryRow] = []
        wakeup: WakeupKey | None = None
        match fact:
            case BindingAdded():
                event, expires = RegistrationEvent.REGISTERED, binding.remaining(fact.at)
            case BindingRefreshed():
                event, expires = RegistrationEvent.REFRESHED, binding.remaining(fact.at)
            case BindingRemoved():
                event, expires = RegistrationEvent.UNREGISTERED, 0
            case BindingExpired():
                event, expires = RegistrationEvent.EXPIRED, 0
            case _:
                assert_never(fact)
        push = dict(binding.push)
        prid = push.get("pn-prid")
        if event in (RegistrationEvent.REGISTERED, RegistrationEvent.REFRESHED) and prid:
            woken = self._wakeups.pop((binding.aor, prid_sha256(prid)), None)
            if woken is not None:
                woken = attrs.evolve(
                    woken, outcome=PushOutcome.REGISTERED, registered_ms=_ms(fact.at) - woken.sent_ms
                )
                wakeup = woken.key
                rows.append(woken)
        rows.append(
            RegistrationEventRecord(
                seq=self._next_seq(),
                event_ms=_ms(fact.at),
                aor=binding.aor,
                contact=binding.contact,
                instance_id=binding.instance,
                reg_id=binding.reg_id,
                event=event,
                expires_s=expires,
                user_agent=binding.user_agent,
                source_addr=_source_addr(binding),
                device_mac=self._device_of(binding.contact),
                push_provider=push.get("pn-provider"),
                wakeup=wakeup,
            )
        )
        return rows

    def push_sent(
        self, *, aor: str, provider: str, prid: str, reason: str, call_id: str | None, now: float
    ) -> list[HistoryRow]:
        """A push wake-up left for the device with token ``prid`` (push-and-parking.md section 5)."""
        call = None if call_id is None else self._calls.get(call_id)
        record = PushWakeupRecord(
            sent_ms=_ms(now),
            aor=aor,
            provider=provider,
            prid_sha256=prid_sha256(prid),
            reason=reason,
            call_uuid=None if call is None else call.record.call_uuid,
        )
        self._wakeups[aor, record.prid_sha256] = record
        return [record]

    def push_gateway_answered(
        self, *, aor: str, prid: str, status: int | None, now: float
    ) -> list[HistoryRow]:
        """The push gateway answered with HTTP ``status``; a non-2xx, or no answer at all
        (``status`` None: unreachable, dropped), ends the wake-up as ``gateway_error``."""
        key = (aor, prid_sha256(prid))
        record = self._wakeups.get(key)
        if record is None:
            return []
        record = attrs.evolve(record, gateway_status=status, gateway_ms=_ms(now) - record.sent_ms)
        if status is not None and 200 <= status < 300:
            self._wakeups[key] = record
        else:
            del self._wakeups[key]
            record = attrs.evolve(record, outcome=PushOutcome.GATEWAY_ERROR)
        return [record]

    def push_woken(self, *, aor: str, prid: str, now: float) -> list[HistoryRow]:
        """The pushed device's binding was confirmed (push-and-parking.md 6.4 step 3) although
        no registration named the token under ``aor`` (a legacy push device, a line member's
        own AoR); a wake-up a registration already closed is left alone."""
        record = self._wakeups.pop((aor, prid_sha256(prid)), None)
        if record is None:
            return []
        return [attrs.evolve(record, outcome=PushOutcome.REGISTERED, registered_ms=_ms(now) - record.sent_ms)]

    def push_timed_out(self, *, aor: str, prid: str) -> list[HistoryRow]:
        """No REGISTER came from the woken device in time."""
        record = self._wakeups.pop((aor, prid_sha256(prid)), None)
        if record is None:
            return []
        return [attrs.evolve(record, outcome=PushOutcome.TIMEOUT)]

    # -- parked calls ---------------------------------------------------------------------

    def call_parked(self, *, call_id: str, ruri: str, now: float, from_tag: str = "") -> list[HistoryRow]:
        """An INVITE was parked waiting for ``ruri``'s devices to wake (push-and-parking.md 6);
        ``from_tag`` is the caller's tag, for the ``call_uuid`` of a call with no branch yet."""
        call = self._calls.get(call_id)
        rows: list[HistoryRow] = []
        if call is not None:
            call.record = attrs.evolve(call.record, parked=True)
            rows.append(call.record)
        pending = [w for w in self._wakeups.values() if w.aor == ruri]
        record = ParkedCallRecord(
            call_uuid=call_uuid(call_id, from_tag) if call is None else call.record.call_uuid,
            ruri=ruri,
            parked_ms=_ms(now),
            wakeup=max(pending, key=lambda w: w.sent_ms).key if pending else None,
        )
        self._parked[call_id] = record
        rows.append(record)
        return rows

    def park_branch_added(self, *, call_id: str, now: float) -> list[HistoryRow]:
        """A branch was appended to the parked INVITE (a device woke and registered)."""
        record = self._parked.get(call_id)
        if record is None:
            return []
        first = record.first_branch_ms
        record = attrs.evolve(
            record,
            branches_added=record.branches_added + 1,
            first_branch_ms=_ms(now) - record.parked_ms if first is None else first,
        )
        self._parked[call_id] = record
        return [record]

    def park_ended(
        self, *, call_id: str, outcome: ParkOutcome, status: int | None, now: float
    ) -> list[HistoryRow]:
        """The parked call was answered, timed out, cancelled or rejected."""
        record = self._parked.pop(call_id, None)
        if record is None or outcome is ParkOutcome.PENDING:
            return []
        offset = _ms(now) - record.parked_ms
        answered = outcome in (ParkOutcome.ANSWERED_EXISTING, ParkOutcome.ANSWERED_AFTER_WAKE)
        return [
            attrs.evolve(
                record,
                outcome=outcome,
                final_sip_code=status,
                ended_ms=offset,
                answered_ms=offset if answered else None,
            )
        ]


def _ruri_aor(request: Request) -> str:
    try:
        return _aor(parse_uri(request.uri))
    except MalformedMessage:
        return request.uri


def _first_contact(message: Request | Response) -> str | None:
    try:
        found = contacts(message)
    except MalformedMessage:
        return None
    if isinstance(found, list) and found:
        return str(found[0].uri)
    return None


def _source_addr(binding: Binding) -> str:
    host = binding.received.host
    if ":" in host:
        host = f"[{host}]"
    return f"{host}:{binding.received.port}"
