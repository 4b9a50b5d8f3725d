"""Reporting history: the row values of reporting.md section 4.1 and the repository writing them.

The rows are produced by the pure mapper ``scaserver.reporting.history.HistoryRecorder`` from
in-process facts and reach the database through one write-behind channel
(``edge/writebehind.py``) whose sink is :class:`SqlHistoryRepository`.  Every row carries epoch
milliseconds only (``*_ms``, UTC); the repository derives the ``TIMESTAMPTZ`` columns
(``started_at``, ``event_at``...) from them, so both columns always agree (section 3 rule 2).

Keys (:func:`history_key`) decide what the write-behind queue coalesces:

* ``calls`` rows are keyed by ``call_uuid`` and upserted: the row is inserted at INVITE and
  updated at answer and end (section 3 rule 6); the latest full row wins.
* ``line_samples`` rows are keyed by their primary key (line, minute) and upserted.
* ``push_wakeups`` rows are keyed by (AoR, SHA-256 of the push token, sent time) and
  ``parked_calls`` rows by (call UUID, park time); both are updated as the wake-up or the
  parked call progresses.  Registration events and parked calls name the wake-up they relate
  to by that key; the repository turns it into ``wakeup_id`` at write time.
* ``appearance_events``, ``registration_events`` and ``acc`` rows are append-only; each has
  an in-process sequence number ``seq`` as its key, so the queue never merges two of them.

Push tokens never reach these tables (section 3 rule 4): ``push_wakeups`` holds the token's
SHA-256 only, and every contact written (``calls.answered_contact``,
``appearance_events.owner_contact``, ``registration_events.contact``) goes through
``push.pnparams.masked_pn_params``, which puts a hash in place of ``pn-prid`` and the other
secret ``pn-*`` parameters.

One :meth:`SqlHistoryRepository.upsert` call writes its whole batch in one transaction, so a
failed flush leaves nothing behind and the queue's retry cannot duplicate the append-only rows.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Final, NamedTuple, TypeAlias, TypeVar

import attrs
from sqlalchemy import Engine, Table, and_, select
from sqlalchemy.engine import Connection

from scaserver.push.pnparams import masked_pn_params
from scaserver.store import tables
from scaserver.store.writes import delete_rows, insert_rows, insert_values, upsert_rows

__all__ = [
    "AccRecord",
    "AppearanceEventRecord",
    "CallRecord",
    "Cause",
    "Direction",
    "Disposition",
    "EndReason",
    "HistoryKey",
    "HistoryRow",
    "LineSampleRecord",
    "ParkOutcome",
    "ParkedCallRecord",
    "PushOutcome",
    "PushWakeupRecord",
    "RegistrationEvent",
    "RegistrationEventRecord",
    "SqlHistoryRepository",
    "WakeupKey",
    "history_key",
    "ms_to_datetime",
]


class Direction(enum.Enum):
    """``calls.direction`` (section 4.1)."""

    INBOUND = "inbound"
    OUTBOUND = "outbound"
    INTERNAL = "internal"


class Disposition(enum.Enum):
    """``calls.disposition``: Asterisk's CDR vocabulary plus ``IN PROGRESS`` (sections 2.2, 4.1)."""

    ANSWERED = "ANSWERED"
    NO_ANSWER = "NO ANSWER"
    BUSY = "BUSY"
    FAILED = "FAILED"
    CONGESTION = "CONGESTION"
    IN_PROGRESS = "IN PROGRESS"


class EndReason(enum.Enum):
    """``calls.end_reason`` (section 4.1)."""

    BYE = "bye"
    CALLER_CANCEL = "caller_cancel"
    RING_TIMEOUT = "ring_timeout"
    REJECTED = "rejected"
    PARK_TIMEOUT = "park_timeout"
    ERROR = "error"
    SERVER_RESTART = "server_restart"


class Cause(enum.Enum):
    """``appearance_events.cause`` (section 4.1)."""

    LINE_SEIZE = "line-seize"
    SEIZE_REJECTED = "seize-rejected"
    SEIZE_EXPIRED = "seize-expired"
    INVITE = "invite"
    PROVISIONAL = "18x"
    ANSWERED = "200"
    REINVITE_HOLD = "reinvite-hold"
    REINVITE_RESUME = "reinvite-resume"
    RETRIEVE = "retrieve"
    BARGE = "barge"
    BYE = "bye"
    CANCEL = "cancel"
    RPC = "rpc"
    PURGE = "purge"
    STALE = "stale"  # no signalling of the call for sca.max_call_age (sca.md Q18)
    SESSION_EXPIRED = "session-expired"  # no session refresh within its interval (RFC 4028 10)


class RegistrationEvent(enum.Enum):
    """``registration_events.event`` (section 4.1)."""

    REGISTERED = "registered"
    REFRESHED = "refreshed"
    UNREGISTERED = "unregistered"
    EXPIRED = "expired"
    REJECTED = "rejected"


class PushOutcome(enum.Enum):
    """``push_wakeups.outcome`` (section 4.1)."""

    PENDING = "pending"
    REGISTERED = "registered"
    TIMEOUT = "timeout"
    GATEWAY_ERROR = "gateway_error"


class ParkOutcome(enum.Enum):
    """``parked_calls.outcome`` (section 4.1)."""

    PENDING = "pending"
    ANSWERED_EXISTING = "answered_existing"
    ANSWERED_AFTER_WAKE = "answered_after_wake"
    TIMEOUT = "timeout"
    CALLER_CANCEL = "caller_cancel"
    REJECTED = "rejected"


#: (AoR, SHA-256 hex of the push token, sent time in epoch ms): one push wake-up.
WakeupKey: TypeAlias = tuple[str, str, int]


@attrs.frozen
class CallRecord:
    """One ``calls`` row, a CDR (section 4.1).  Durations are milliseconds from ``started_ms``
    (INVITE received) except ``billable_ms`` (end minus answer, Asterisk ``billsec``)."""

    call_uuid: str
    sip_call_id: str
    from_tag: str
    to_tag: str
    direction: Direction
    line_aor: str | None
    appearance_index: int | None
    caller_uri: str
    caller_display: str | None
    callee_uri: str
    origin_device: str | None
    answered_contact: str | None
    answered_device: str | None
    started_ms: int
    ring_ms: int | None = None
    answer_ms: int | None = None
    duration_ms: int | None = None
    billable_ms: int | None = None
    ended_ms: int | None = None
    disposition: Disposition = Disposition.IN_PROGRESS
    end_reason: EndReason | None = None
    final_sip_code: int | None = None
    final_sip_reason: str | None = None
    hold_count: int = 0
    held_ms: int = 0
    parked: bool = False


@attrs.frozen
class AppearanceEventRecord:
    """One ``appearance_events`` row: a state change of an appearance (CEL-like, section 2.3)."""

    seq: int
    event_ms: int
    line_aor: str
    appearance_index: int
    old_state: str | None
    new_state: str
    cause: Cause
    owner_contact: str | None
    owner_device: str | None
    call_uuid: str | None
    source: str = "sip"


@attrs.frozen
class LineSampleRecord:
    """One ``line_samples`` row: a line's concurrency at the start of one minute."""

    line_aor: str
    sample_ms: int
    busy_appearances: int
    active_calls: int
    held_calls: int


@attrs.frozen
class RegistrationEventRecord:
    """One ``registration_events`` row.  ``wakeup`` names the push wake-up this REGISTER
    answered, if any; the repository stores its id as ``wakeup_id``."""

    seq: int
    event_ms: int
    aor: str
    contact: str
    instance_id: str | None
    reg_id: int | None
    event: RegistrationEvent
    expires_s: int | None
    user_agent: str | None
    source_addr: str | None
    device_mac: str | None
    push_provider: str | None
    wakeup: WakeupKey | None = None


@attrs.frozen
class PushWakeupRecord:
    """One ``push_wakeups`` row.  ``prid_sha256`` is the SHA-256 of the push token: the token
    itself never reaches reporting (section 3 rule 4)."""

    sent_ms: int
    aor: str
    provider: str
    prid_sha256: str
    reason: str
    call_uuid: str | None
    gateway_status: int | None = None
    gateway_ms: int | None = None
    registered_ms: int | None = None
    outcome: PushOutcome = PushOutcome.PENDING

    @property
    def key(self) -> WakeupKey:
        return (self.aor, self.prid_sha256, self.sent_ms)


@attrs.frozen
class ParkedCallRecord:
    """One ``parked_calls`` row; ``first_branch_ms``, ``answered_ms`` and ``ended_ms`` are
    offsets from ``parked_ms``."""

    call_uuid: str
    ruri: str
    parked_ms: int
    wakeup: WakeupKey | None = None
    branches_added: int = 0
    first_branch_ms: int | None = None
    answered_ms: int | None = None
    ended_ms: int | None = None
    outcome: ParkOutcome = ParkOutcome.PENDING
    final_sip_code: int | None = None


@attrs.frozen
class AccRecord:
    """One Kamailio-shaped ``acc`` row: a completed transaction (section 2.1), ``time_ms`` the
    completion time; ``sip_code`` is the three-digit status as text, as in Kamailio."""

    seq: int
    time_ms: int
    method: str
    from_tag: str
    to_tag: str
    callid: str
    sip_code: str
    sip_reason: str
    src_user: str = ""
    src_domain: str = ""
    src_ip: str = ""
    dst_user: str = ""
    dst_domain: str = ""
    line_aor: str | None = None
    appearance_index: int | None = None


HistoryRow: TypeAlias = (
    CallRecord
    | AppearanceEventRecord
    | LineSampleRecord
    | RegistrationEventRecord
    | PushWakeupRecord
    | ParkedCallRecord
    | AccRecord
)

#: The write-behind key of a row: the table name, then the row's identity in that table.
HistoryKey: TypeAlias = tuple[str | int, ...]


def history_key(row: HistoryRow) -> HistoryKey:
    """The coalescing key of ``row`` (see the module docstring)."""
    match row:  # the rows written most often first: one per REGISTER, per appearance change
        case RegistrationEventRecord():
            return ("registration_events", row.seq)
        case AppearanceEventRecord():
            return ("appearance_events", row.seq)
        case CallRecord():
            return ("calls", row.call_uuid)
        case AccRecord():
            return ("acc", row.seq)
        case LineSampleRecord():
            return ("line_samples", row.line_aor, row.sample_ms)
        case PushWakeupRecord():
            return ("push_wakeups", *row.key)
        case ParkedCallRecord():
            return ("parked_calls", row.call_uuid, row.parked_ms)


def ms_to_datetime(ms: int) -> datetime:
    """The UTC instant of an epoch-milliseconds value."""
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


def _masked(contact: str | None) -> str | None:
    return None if contact is None else masked_pn_params(contact)


def _call_row(row: CallRecord) -> dict[str, object]:
    return {
        "call_uuid": row.call_uuid,
        "sip_call_id": row.sip_call_id,
        "from_tag": row.from_tag,
        "to_tag": row.to_tag,
        "direction": row.direction.value,
        "line_aor": row.line_aor,
        "appearance_index": row.appearance_index,
        "caller_uri": row.caller_uri,
        "caller_display": row.caller_display,
        "callee_uri": row.callee_uri,
        "origin_device": row.origin_device,
        "answered_contact": _masked(row.answered_contact),
        "answered_device": row.answered_device,
        "started_at": ms_to_datetime(row.started_ms),
        "started_ms": row.started_ms,
        "ring_ms": row.ring_ms,
        "answer_ms": row.answer_ms,
        "duration_ms": row.duration_ms,
        "billable_ms": row.billable_ms,
        "ended_at": None if row.ended_ms is None else ms_to_datetime(row.ended_ms),
        "disposition": row.disposition.value,
        "end_reason": None if row.end_reason is None else row.end_reason.value,
        "final_sip_code": row.final_sip_code,
        "final_sip_reason": row.final_sip_reason,
        "hold_count": row.hold_count,
        "held_ms": row.held_ms,
        "parked": row.parked,
    }


class _AppearanceEventRow(NamedTuple):
    """The ``appearance_events`` columns an event writes, in the table's order."""

    event_at: datetime
    event_ms: int
    line_aor: str
    appearance_index: int
    old_state: str | None
    new_state: str
    cause: str
    owner_contact: str | None
    owner_device: str | None
    call_uuid: str | None
    source: str


def _appearance_row(row: AppearanceEventRecord) -> _AppearanceEventRow:
    return _AppearanceEventRow(
        event_at=ms_to_datetime(row.event_ms),
        event_ms=row.event_ms,
        line_aor=row.line_aor,
        appearance_index=row.appearance_index,
        old_state=row.old_state,
        new_state=row.new_state,
        cause=row.cause.value,
        owner_contact=_masked(row.owner_contact),
        owner_device=row.owner_device,
        call_uuid=row.call_uuid,
        source=row.source,
    )


class _RegistrationEventRow(NamedTuple):
    """The ``registration_events`` columns an event writes, in the table's order."""

    event_at: datetime
    event_ms: int
    aor: str
    contact: str
    instance_id: str | None
    reg_id: int | None
    event: str
    expires_s: int | None
    user_agent: str | None
    source_addr: str | None
    device_mac: str | None
    push_provider: str | None
    wakeup_id: int | None


def _sample_row(row: LineSampleRecord) -> dict[str, object]:
    return {
        "line_aor": row.line_aor,
        "sample_ms": row.sample_ms,
        "busy_appearances": row.busy_appearances,
        "active_calls": row.active_calls,
        "held_calls": row.held_calls,
    }


def _push_row(row: PushWakeupRecord) -> dict[str, object]:
    return {
        "aor": row.aor,
        "prid_sha256": row.prid_sha256,
        "sent_ms": row.sent_ms,
        "sent_at": ms_to_datetime(row.sent_ms),
        "provider": row.provider,
        "reason": row.reason,
        "call_uuid": row.call_uuid,
        "gateway_status": row.gateway_status,
        "gateway_ms": row.gateway_ms,
        "registered_ms": row.registered_ms,
        "outcome": row.outcome.value,
    }


def _acc_row(row: AccRecord) -> dict[str, object]:
    return {
        "method": row.method,
        "from_tag": row.from_tag,
        "to_tag": row.to_tag,
        "callid": row.callid,
        "sip_code": row.sip_code,
        "sip_reason": row.sip_reason,
        "time": ms_to_datetime(row.time_ms),
        "src_user": row.src_user,
        "src_domain": row.src_domain,
        "src_ip": row.src_ip,
        "dst_user": row.dst_user,
        "dst_domain": row.dst_domain,
        "line_aor": row.line_aor,
        "appearance_index": row.appearance_index,
    }


#: Order of writes inside one batch: wake-ups before the rows that refer to them.
_TABLE_ORDER: Final = (
    "calls",
    "push_wakeups",
    "parked_calls",
    "registration_events",
    "appearance_events",
    "line_samples",
    "acc",
)

#: The table of each kind of row (the first item of its ``history_key``), read per row of a flush.
_TABLE_OF_ROW: Final[Mapping[type, str]] = {
    CallRecord: "calls",
    LineSampleRecord: "line_samples",
    PushWakeupRecord: "push_wakeups",
    ParkedCallRecord: "parked_calls",
    AppearanceEventRecord: "appearance_events",
    RegistrationEventRecord: "registration_events",
    AccRecord: "acc",
}


class SqlHistoryRepository:
    """Writes history rows (a write-behind ``Sink[HistoryKey, HistoryRow]``).

    ``upsert`` writes one batch in one transaction.  ``delete`` removes the rows of keyed
    tables (calls, line samples, wake-ups, parked calls); the append-only tables are only
    ever trimmed by the retention purge (``scaserver.reporting.retention``), so a delete of
    one of their keys is a ``ValueError``.
    """

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def upsert(self, rows: Sequence[HistoryRow], /) -> None:
        grouped: dict[str, list[HistoryRow]] = {name: [] for name in _TABLE_ORDER}
        for row in rows:
            table = _TABLE_OF_ROW.get(type(row))
            grouped[table if table is not None else str(history_key(row)[0])].append(row)
        if not rows:
            return
        with self._engine.begin() as conn:
            self._write_calls(conn, grouped["calls"])
            self._write_wakeups(conn, grouped["push_wakeups"])
            self._write_parked(conn, grouped["parked_calls"])
            self._write_registrations(conn, grouped["registration_events"])
            events = _only(grouped["appearance_events"], AppearanceEventRecord)
            insert_values(
                conn,
                tables.appearance_events,
                _AppearanceEventRow._fields,
                [_appearance_row(r) for r in events],
            )
            upsert_rows(
                conn,
                tables.line_samples,
                ["line_aor", "sample_ms"],
                [_sample_row(r) for r in _only(grouped["line_samples"], LineSampleRecord)],
            )
            self._insert(conn, tables.acc, [_acc_row(r) for r in _only(grouped["acc"], AccRecord)])

    def delete(self, keys: Sequence[HistoryKey], /) -> None:
        by_table: dict[str, list[Mapping[str, object]]] = {}
        for key in keys:
            name, *rest = key
            match name, rest:
                case "calls", [str() as uuid]:
                    by_table.setdefault(name, []).append({"call_uuid": uuid})
                case "line_samples", [str() as line, int() as sample_ms]:
                    by_table.setdefault(name, []).append({"line_aor": line, "sample_ms": sample_ms})
                case "push_wakeups", [str() as aor, str() as prid, int() as sent_ms]:
                    by_table.setdefault(name, []).append(
                        {"aor": aor, "prid_sha256": prid, "sent_ms": sent_ms}
                    )
                case "parked_calls", [str() as uuid, int() as parked_ms]:
                    by_table.setdefault(name, []).append({"call_uuid": uuid, "parked_ms": parked_ms})
                case _:
                    raise ValueError(f"history rows with key {key!r} cannot be deleted one by one")
        if not by_table:
            return
        with self._engine.begin() as conn:
            for name, table_keys in by_table.items():
                delete_rows(conn, tables.metadata.tables[name], table_keys)

    @staticmethod
    def _insert(conn: Connection, table: Table, rows: list[dict[str, object]]) -> None:
        if rows:
            insert_rows(conn, table, rows)

    @staticmethod
    def _write_calls(conn: Connection, rows: Sequence[HistoryRow]) -> None:
        upsert_rows(conn, tables.calls, ["call_uuid"], [_call_row(r) for r in _only(rows, CallRecord)])

    @staticmethod
    def _write_wakeups(conn: Connection, rows: Sequence[HistoryRow]) -> None:
        upsert_rows(
            conn,
            tables.push_wakeups,
            ["aor", "prid_sha256", "sent_ms"],
            [_push_row(r) for r in _only(rows, PushWakeupRecord)],
            nullable_key=True,
        )

    def _write_parked(self, conn: Connection, rows: Sequence[HistoryRow]) -> None:
        values = [
            {
                "call_uuid": r.call_uuid,
                "parked_ms": r.parked_ms,
                "ruri": r.ruri,
                "parked_at": ms_to_datetime(r.parked_ms),
                "wakeup_id": self._wakeup_id(conn, r.wakeup),
                "branches_added": r.branches_added,
                "first_branch_ms": r.first_branch_ms,
                "answered_ms": r.answered_ms,
                "ended_ms": r.ended_ms,
                "outcome": r.outcome.value,
                "final_sip_code": r.final_sip_code,
            }
            for r in _only(rows, ParkedCallRecord)
        ]
        upsert_rows(conn, tables.parked_calls, ["call_uuid", "parked_ms"], values, nullable_key=True)

    def _write_registrations(self, conn: Connection, rows: Sequence[HistoryRow]) -> None:
        values = [
            _RegistrationEventRow(
                event_at=ms_to_datetime(r.event_ms),
                event_ms=r.event_ms,
                aor=r.aor,
                contact=masked_pn_params(r.contact),
                instance_id=r.instance_id,
                reg_id=r.reg_id,
                event=r.event.value,
                expires_s=r.expires_s,
                user_agent=r.user_agent,
                source_addr=r.source_addr,
                device_mac=r.device_mac,
                push_provider=r.push_provider,
                wakeup_id=self._wakeup_id(conn, r.wakeup),
            )
            for r in _only(rows, RegistrationEventRecord)
        ]
        insert_values(conn, tables.registration_events, _RegistrationEventRow._fields, values)

    @staticmethod
    def _wakeup_id(conn: Connection, key: WakeupKey | None) -> int | None:
        if key is None:
            return None
        t = tables.push_wakeups
        aor, prid, sent_ms = key
        found = conn.execute(
            select(t.c.id).where(and_(t.c.aor == aor, t.c.prid_sha256 == prid, t.c.sent_ms == sent_ms))
        ).first()
        return None if found is None else int(found[0])


R = TypeVar("R")


def _only(rows: Sequence[HistoryRow], kind: type[R]) -> list[R]:
    return [row for row in rows if isinstance(row, kind)]
