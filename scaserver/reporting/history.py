"""From in-process facts to reporting history rows (reporting.md sections 3 and 4).

:class:`HistoryRecorder` is pure: it takes the facts the engines publish on the bus (the
proxy's ``RequestForwarded``, ``ResponseRelayed``, ``AckForwarded``, ``CallCancelled`` and
``CallEnded``, the SCA engine's ``AppearanceChanged``, the registrar's ``Binding*``), plus
explicit calls for push wake-ups, parked calls and the per-minute line sample, and returns the
rows (``scaserver.store.history``) to queue for writing.  It never touches a clock or the
database; times come from the facts (epoch seconds, stored as epoch milliseconds).

The rows are made by job: calls and accounting (:mod:`~scaserver.reporting.callhistory`),
appearances and line samples (:mod:`~scaserver.reporting.appearancehistory`), registrations,
push wake-ups and parked calls (:mod:`~scaserver.reporting.wakeups`); the recorder routes each
fact to them and links what they share (a call's appearance, a wake-up's call).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TypeAlias, assert_never

from scaserver.proxy.events import (
    AckForwarded,
    CallCancelled,
    CallEnded,
    RequestForwarded,
    ResponseRelayed,
)
from scaserver.registrar.binding import (
    BindingAdded,
    BindingExpired,
    BindingRefreshed,
    BindingRemoved,
)
from scaserver.reporting.appearancehistory import AppearanceHistory
from scaserver.reporting.callhistory import Call, CallHistory
from scaserver.reporting.rows import RowSequence
from scaserver.reporting.wakeups import WakeupHistory
from scaserver.sca.appearance import AppearanceChanged
from scaserver.store.history import HistoryRow, LineSampleRecord, ParkOutcome

__all__ = ["HistoryFact", "HistoryRecorder"]

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
        sequence = RowSequence()
        # No device lookup at all without provisioning: the rows' device columns are None.
        devices = None if device_of is _no_device else device_of
        calls: dict[str, Call] = {}  # the calls by Call-ID, shared by the calls and appearances
        self._appearances = AppearanceHistory(device_of=devices, sequence=sequence, calls=calls)
        self._wakeups = WakeupHistory(device_of=devices, sequence=sequence)
        self._calls = CallHistory(
            line_of=line_of,
            local_domains=frozenset(domain.lower() for domain in local_domains),
            device_of=devices,
            sequence=sequence,
            held_call=self._appearances.held_call,
            closed=self._appearances.call_closed,
            parked=self._wakeups.is_parked,
            calls=calls,
        )
        # The mapper of each kind of bus fact, as :meth:`record` routes it: a feed subscribing
        # per fact type calls these straight (one call less per fact, no match).
        self.appearance_changed: Callable[[AppearanceChanged], list[HistoryRow]] = self._appearances.changed
        self.request_forwarded: Callable[[RequestForwarded], list[HistoryRow]] = self._calls.forwarded
        self.response_relayed: Callable[[ResponseRelayed], list[HistoryRow]] = self._calls.relayed
        self.call_cancelled: Callable[[CallCancelled], None] = self._calls.cancelled
        self.call_ended: Callable[[CallEnded], list[HistoryRow]] = self._calls.ended
        self.binding_changed: Callable[
            [BindingAdded | BindingRefreshed | BindingRemoved | BindingExpired], list[HistoryRow]
        ] = self._wakeups.binding

    # -- bus facts ------------------------------------------------------------------------

    def record(self, fact: HistoryFact) -> list[HistoryRow]:
        """The rows ``fact`` produces (often none)."""
        match fact:
            case AppearanceChanged():
                return self._appearances.changed(fact)
            case RequestForwarded():
                return self._calls.forwarded(fact)
            case ResponseRelayed():
                return self._calls.relayed(fact)
            case AckForwarded():
                return []
            case CallCancelled():
                self._calls.cancelled(fact)
                return []
            case CallEnded():
                return self._calls.ended(fact)
            case BindingAdded() | BindingRefreshed() | BindingRemoved() | BindingExpired():
                return self._wakeups.binding(fact)
            case _:
                assert_never(fact)

    @property
    def calls_in_progress(self) -> int:
        """Calls started and not yet ended (for metrics and tests)."""
        return self._calls.in_progress

    def sample_lines(self, now: float, lines: Iterable[str] = ()) -> list[LineSampleRecord]:
        """The ``line_samples`` rows of the minute containing ``now``: every line in ``lines``
        (the provisioned ones) and every line with a busy appearance."""
        return self._appearances.sample_lines(now, lines)

    # -- push wake-ups and parked calls ---------------------------------------------------

    def push_sent(
        self, *, aor: str, provider: str, prid: str, reason: str, call_id: str | None, now: float
    ) -> list[HistoryRow]:
        """A push wake-up left for the device with token ``prid`` (push-and-parking.md section 5)."""
        call = None if call_id is None else self._calls.get(call_id)
        return self._wakeups.push_sent(
            aor=aor, provider=provider, prid=prid, reason=reason, call=call, now=now
        )

    def push_gateway_answered(
        self, *, aor: str, prid: str, status: int | None, now: float
    ) -> list[HistoryRow]:
        """The push gateway answered with HTTP ``status`` (None: no answer at all)."""
        return self._wakeups.push_gateway_answered(aor=aor, prid=prid, status=status, now=now)

    def push_woken(self, *, aor: str, prid: str, now: float) -> list[HistoryRow]:
        """The pushed device's binding was confirmed (push-and-parking.md 6.4 step 3)."""
        return self._wakeups.push_woken(aor=aor, prid=prid, now=now)

    def push_timed_out(self, *, aor: str, prid: str) -> list[HistoryRow]:
        """No REGISTER came from the woken device in time."""
        return self._wakeups.push_timed_out(aor=aor, prid=prid)

    def call_parked(self, *, call_id: str, ruri: str, now: float, from_tag: str = "") -> list[HistoryRow]:
        """An INVITE was parked waiting for ``ruri``'s devices to wake (push-and-parking.md 6);
        ``from_tag`` is the caller's tag, for the ``call_uuid`` of a call with no branch yet."""
        call = self._calls.get(call_id)
        return self._wakeups.call_parked(call_id=call_id, call=call, ruri=ruri, now=now, from_tag=from_tag)

    def park_branch_added(self, *, call_id: str, now: float) -> list[HistoryRow]:
        """A branch was appended to the parked INVITE (a device woke and registered)."""
        return self._wakeups.park_branch_added(call_id=call_id, now=now)

    def park_ended(
        self, *, call_id: str, outcome: ParkOutcome, status: int | None, now: float
    ) -> list[HistoryRow]:
        """The parked call was answered, timed out, cancelled or rejected."""
        return self._wakeups.park_ended(call_id=call_id, outcome=outcome, status=status, now=now)
