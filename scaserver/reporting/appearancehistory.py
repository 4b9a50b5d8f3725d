"""Appearance rows (``appearance_events``) and line samples (``line_samples``) from the SCA
engine's ``AppearanceChanged`` facts (reporting.md section 4.1), and the hold intervals they
add to calls, for :class:`~scaserver.reporting.history.HistoryRecorder`.

Appearance rows (``appearance_events``): one per change of the wire state (``ACTIVE_PENDING``
is ``active`` on the wire, as in sca.md 6.1), plus the O5 loop (the seized appearance's INVITE,
cause ``invite``), which links the seizure to its call.  Other loops (a rejected seize O2, a
487/3xx/401 O10-O12, re-INVITE answers O17) change nothing the views can use and would cut
hold and seize intervals short, so they are not written; seize rejections are counted by the
metrics instead (section 6).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Final

import attrs

from scaserver.reporting.callhistory import Call, updated
from scaserver.reporting.rows import RowSequence, epoch_ms
from scaserver.sca.appearance import HELD_STATES, AppearanceChanged, AppearanceState
from scaserver.store.history import (
    AppearanceEventRecord,
    Cause,
    HistoryRow,
    LineSampleRecord,
)

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
# Each state's appearance-state token, looked up (``wire`` reads the enum's value: a descriptor).
_WIRE: Final[dict[AppearanceState, str]] = {state: state.wire for state in AppearanceState}


def cause_of(fact: AppearanceChanged) -> Cause:
    """The ``cause`` of an appearance change: by rule id; the O9b roll-back of a hold or a
    retrieve by the direction it went; an unknown rule by its target (idle: ``purge``)."""
    if fact.rule == "O9b":
        return Cause.REINVITE_HOLD if fact.to_state in HELD_STATES else Cause.REINVITE_RESUME
    cause = _RULE_CAUSES.get(fact.rule)
    if cause is not None:
        return cause
    return Cause.PURGE if fact.to_state is AppearanceState.IDLE else Cause.RPC


@attrs.define
class _Appearance:
    """A busy appearance: its state, its call and the hold interval open on it."""

    state: AppearanceState = AppearanceState.IDLE
    call: Call | None = None
    hold_started_ms: int | None = None
    hold_call: Call | None = None


class AppearanceHistory:
    """The ``appearance_events`` and ``line_samples`` rows; ``device_of`` names the device
    behind a contact."""

    def __init__(
        self,
        *,
        device_of: Callable[[str], str | None] | None,
        sequence: RowSequence,
        calls: Mapping[str, Call],
    ) -> None:
        """``device_of`` None: no device is known; ``calls`` are the calls by Call-ID (the
        call history's own table, read here)."""
        self._device_of, self._sequence, self._calls = device_of, sequence, calls
        self._appearances: dict[tuple[str, int], _Appearance] = {}
        # The keys of the busy appearances each call was linked to (as ``call`` or ``hold_call``),
        # by the call's identity: a call's end visits those, not every busy appearance.
        self._linked: dict[int, dict[tuple[str, int], None]] = {}

    def held_call(self, line: str, index: int) -> Call | None:
        """The call held on the line's appearance ``index``, if it is held."""
        app = self._appearances.get((line, index))
        if app is None or app.state not in HELD_STATES or app.call is None:
            return None
        return app.call

    def call_closed(self, call: Call, end_ms: int) -> None:
        """The call ended: close its open hold interval, let its appearances go of it."""
        for key in self._linked.pop(id(call), ()):
            app = self._appearances.get(key)
            if app is None:
                continue
            if app.hold_call is call:
                self._close_hold(app, end_ms)
            if app.call is call:
                app.call = None

    def changed(self, fact: AppearanceChanged) -> list[HistoryRow]:
        """The rows of an appearance change, linked to the call its Call-ID belongs to."""
        call = None if fact.call_id is None else self._calls.get(fact.call_id)
        key = (fact.line, fact.index)
        app = self._appearances.get(key) or _Appearance()
        rows: list[HistoryRow] = []
        if call is not None and call.challenged_at is None:
            app.call = call
            self._linked.setdefault(id(call), {})[key] = None
            if call.record.appearance_index is None:
                call.record = updated(
                    call.record, line_aor=call.record.line_aor or fact.line, appearance_index=fact.index
                )
                rows.append(call.record)
        event_ms = epoch_ms(fact.time)
        was_held, now_held = fact.from_state in HELD_STATES, fact.to_state in HELD_STATES
        if was_held and not now_held:
            self._close_hold(app, event_ms)
        elif now_held and not was_held:
            app.hold_started_ms, app.hold_call = event_ms, app.call
        old_state, new_state = _WIRE[fact.from_state], _WIRE[fact.to_state]
        if old_state != new_state or fact.rule == "O5":
            owner, device_of = fact.owner, self._device_of
            rows.append(
                AppearanceEventRecord(
                    seq=self._sequence.next(),
                    event_ms=event_ms,
                    line_aor=fact.line,
                    appearance_index=fact.index,
                    old_state=old_state,
                    new_state=new_state,
                    cause=_RULE_CAUSES.get(fact.rule) or cause_of(fact),
                    owner_contact=owner,
                    owner_device=None if owner is None or device_of is None else device_of(owner),
                    call_uuid=None if app.call is None else app.call.record.call_uuid,
                    source="rpc" if fact.rule == "RPC" else "sip",
                )
            )
        app.state = fact.to_state
        if fact.to_state is AppearanceState.IDLE:
            self._appearances.pop(key, None)
            for linked in (app.call, app.hold_call):
                if linked is not None:
                    self._unlink(linked, key)
        else:
            self._appearances[key] = app
        return rows

    def _unlink(self, call: Call, key: tuple[str, int]) -> None:
        keys = self._linked.get(id(call))
        if keys is not None:
            keys.pop(key, None)
            if not keys:
                del self._linked[id(call)]

    def _close_hold(self, app: _Appearance, end_ms: int) -> None:
        call, started = app.hold_call, app.hold_started_ms
        app.hold_call, app.hold_started_ms = None, None
        if call is None or started is None:
            return
        call.record = updated(
            call.record,
            hold_count=call.record.hold_count + 1,
            held_ms=call.record.held_ms + max(0, end_ms - started),
        )

    def sample_lines(self, now: float, lines: Iterable[str] = ()) -> list[LineSampleRecord]:
        """The ``line_samples`` rows of the minute containing ``now``: every line in ``lines``
        (the provisioned ones) and every line with a busy appearance."""
        minute_ms = (epoch_ms(now) // 60_000) * 60_000
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
