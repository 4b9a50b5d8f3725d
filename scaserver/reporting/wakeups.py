"""Registration rows (``registration_events``), push wake-ups (``push_wakeups``) and parked
calls (``parked_calls``) (reporting.md section 4.1, push-and-parking.md sections 5 and 6), for
:class:`~scaserver.reporting.history.HistoryRecorder`.  A wake-up is keyed by (AoR, token
hash); the registration naming its token, or the device's confirmation, ends it."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from typing import Final, assert_never

import attrs

from scaserver.registrar.binding import (
    BindingAdded,
    BindingExpired,
    BindingRefreshed,
    BindingRemoved,
)
from scaserver.reporting.callhistory import Call, call_uuid
from scaserver.reporting.rows import RowSequence, epoch_ms
from scaserver.store.history import (
    HistoryRow,
    ParkedCallRecord,
    ParkOutcome,
    PushOutcome,
    PushWakeupRecord,
    RegistrationEvent,
    RegistrationEventRecord,
)

_NO_PUSH: Final[Mapping[str, str]] = {}


def prid_sha256(prid: str) -> str:
    """The stored form of a push token (reporting.md section 3 rule 4)."""
    return hashlib.sha256(prid.encode("utf-8", "surrogatepass")).hexdigest()


class WakeupHistory:
    """The ``registration_events``, ``push_wakeups`` and ``parked_calls`` rows; ``device_of``
    names the device behind a contact."""

    def __init__(self, *, device_of: Callable[[str], str | None] | None, sequence: RowSequence) -> None:
        """``device_of`` None: no device is known."""
        self._device_of, self._sequence = device_of, sequence
        self._wakeups: dict[tuple[str, str], PushWakeupRecord] = {}
        self._parked: dict[str, ParkedCallRecord] = {}

    def is_parked(self, call_id: str) -> bool:
        """The Call-ID is a parked call's."""
        return call_id in self._parked

    def binding(
        self, fact: BindingAdded | BindingRefreshed | BindingRemoved | BindingExpired
    ) -> list[HistoryRow]:
        binding, at = fact.binding, fact.at
        match fact:
            case BindingAdded():
                event, expires = RegistrationEvent.REGISTERED, binding.remaining(at)
            case BindingRefreshed():
                event, expires = RegistrationEvent.REFRESHED, binding.remaining(at)
            case BindingRemoved():
                event, expires = RegistrationEvent.UNREGISTERED, 0
            case BindingExpired():
                event, expires = RegistrationEvent.EXPIRED, 0
            case _:
                assert_never(fact)
        event_ms = epoch_ms(at)
        aor = binding.key.aor
        # Most bindings carry no push parameters: no dict of them is built then.
        push = dict(binding.push) if binding.push else _NO_PUSH
        prid = push.get("pn-prid")
        woken: PushWakeupRecord | None = None
        if prid and event in (RegistrationEvent.REGISTERED, RegistrationEvent.REFRESHED):
            woken = self._wakeups.pop((aor, prid_sha256(prid)), None)
            if woken is not None:
                woken = attrs.evolve(
                    woken, outcome=PushOutcome.REGISTERED, registered_ms=event_ms - woken.sent_ms
                )
        sequence, device_of, received = self._sequence, self._device_of, binding.received
        host = received.host
        record = RegistrationEventRecord(
            seq=sequence.next(),
            event_ms=event_ms,
            aor=aor,
            contact=binding.contact,
            instance_id=binding.instance,
            reg_id=binding.reg_id,
            event=event,
            expires_s=expires,
            user_agent=binding.user_agent,
            source_addr=f"[{host}]:{received.port}" if ":" in host else f"{host}:{received.port}",
            device_mac=None if device_of is None else device_of(binding.contact),
            push_provider=push.get("pn-provider"),
            wakeup=None if woken is None else woken.key,
        )
        return [record] if woken is None else [woken, record]

    def push_sent(
        self, *, aor: str, provider: str, prid: str, reason: str, call: Call | None, now: float
    ) -> list[HistoryRow]:
        """A push wake-up left for the device with token ``prid`` (push-and-parking.md section 5),
        for ``call`` when it wakes a callee."""
        record = PushWakeupRecord(
            sent_ms=epoch_ms(now),
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
        record = attrs.evolve(record, gateway_status=status, gateway_ms=epoch_ms(now) - record.sent_ms)
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
        return [
            attrs.evolve(record, outcome=PushOutcome.REGISTERED, registered_ms=epoch_ms(now) - record.sent_ms)
        ]

    def push_timed_out(self, *, aor: str, prid: str) -> list[HistoryRow]:
        """No REGISTER came from the woken device in time."""
        record = self._wakeups.pop((aor, prid_sha256(prid)), None)
        if record is None:
            return []
        return [attrs.evolve(record, outcome=PushOutcome.TIMEOUT)]

    def call_parked(
        self, *, call_id: str, call: Call | None, ruri: str, now: float, from_tag: str = ""
    ) -> list[HistoryRow]:
        """An INVITE was parked waiting for ``ruri``'s devices to wake (push-and-parking.md 6);
        ``call`` is its call row when a branch was forwarded, ``from_tag`` the caller's tag, for
        the ``call_uuid`` of a call with no branch yet."""
        rows: list[HistoryRow] = []
        if call is not None:
            call.record = attrs.evolve(call.record, parked=True)
            rows.append(call.record)
        pending = [w for w in self._wakeups.values() if w.aor == ruri]
        record = ParkedCallRecord(
            call_uuid=call_uuid(call_id, from_tag) if call is None else call.record.call_uuid,
            ruri=ruri,
            parked_ms=epoch_ms(now),
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
            first_branch_ms=epoch_ms(now) - record.parked_ms if first is None else first,
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
        offset = epoch_ms(now) - record.parked_ms
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
