"""The history mapper: fact sequences of reporting.md section 7 ("Writer") -> exact rows."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterable
from typing import TypeVar, cast

import attrs
import pytest

from scaserver.proxy.events import RequestForwarded, ResponseRelayed
from scaserver.proxy.target import Target
from scaserver.reporting.appearancehistory import cause_of
from scaserver.reporting.callhistory import (
    CALL_UUID_NAMESPACE,
    CHALLENGE_GRACE_S,
    CallChanges,
    call_uuid,
    failure_outcome,
    updated,
)
from scaserver.reporting.history import HistoryFact, HistoryRecorder
from scaserver.reporting.wakeups import prid_sha256
from scaserver.sca.appearance import TRANSITIONS, AppearanceChanged
from scaserver.sca.appearance import AppearanceState as S
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
    history_key,
)
from tests.unit.reporting.script import (
    DESK_A,
    DESK_B,
    LINE,
    LINE2,
    PEER,
    Call,
    change,
    device_of,
    line_of,
    registered,
)

T0 = 1_732_521_600.0  # 2024-11-25 08:00:00 UTC
MAC_A, MAC_B = "0004f2aaaaaa", "0004f2bbbbbb"


def recorder() -> HistoryRecorder:
    return HistoryRecorder(line_of=line_of, local_domains=["example.com"], device_of=device_of)


def feed(rec: HistoryRecorder, facts: Iterable[object]) -> list[HistoryRow]:
    rows: list[HistoryRow] = []
    for fact in facts:
        rows += rec.record(fact)  # type: ignore[arg-type]
    return rows


R = TypeVar("R")


def of_type(rows: list[HistoryRow], kind: type[R]) -> list[R]:
    return [row for row in rows if isinstance(row, kind)]


def test_answered_inbound_call_gives_cdr_appearance_events_and_acc_rows() -> None:
    rec = recorder()
    call = Call("answered-1")
    uuid = call_uuid("answered-1", "ct1")
    started = CallRecord(
        call_uuid=uuid,
        sip_call_id="answered-1",
        from_tag="ct1",
        to_tag="",
        direction=Direction.INBOUND,
        line_aor=LINE,
        appearance_index=None,
        caller_uri="sip:+15551230001@carrier.example.net",
        caller_display="Caller",
        callee_uri=LINE,
        origin_device=None,
        answered_contact=None,
        answered_device=None,
        started_ms=1_732_521_600_000,
    )
    assert rec.record(call.forwarded(T0)) == [started]
    assert rec.record(call.forwarded(T0 + 0.01)) == []  # a second branch of the same call
    ringing = attrs.evolve(started, ring_ms=2000)
    assert rec.record(call.ringing(T0 + 2)) == [ringing]
    answered = attrs.evolve(
        ringing,
        answer_ms=5000,
        to_tag="lt1",
        answered_contact=DESK_A,
        answered_device=MAC_A,
        final_sip_code=200,
        final_sip_reason="OK",
    )
    rows = rec.record(call.answered(T0 + 5, DESK_A))
    assert rows[0] == answered
    assert rows[1] == AccRecord(
        seq=1,
        time_ms=1_732_521_605_000,
        method="INVITE",
        from_tag="ct1",
        to_tag="lt1",
        callid="answered-1",
        sip_code="200",
        sip_reason="OK",
        src_user="+15551230001",
        src_domain="carrier.example.net",
        src_ip="192.0.2.10",
        dst_user="line1",
        dst_domain="example.com",
        line_aor=LINE,
        appearance_index=None,
    )
    indexed = attrs.evolve(answered, appearance_index=1)
    assert rec.record(change(T0 + 5, 1, S.IDLE, S.ACTIVE_PENDING, "I3", DESK_A, "answered-1")) == [
        indexed,
        AppearanceEventRecord(
            2, 1_732_521_605_000, LINE, 1, "idle", "active", Cause.ANSWERED, DESK_A, MAC_A, uuid
        ),
    ]
    # I4 keeps the wire state "active": nothing to write
    assert rec.record(change(T0 + 5.1, 1, S.ACTIVE_PENDING, S.ACTIVE, "I4", DESK_A, "answered-1")) == []
    assert rec.record(change(T0 + 65, 1, S.ACTIVE, S.IDLE, "O18", DESK_A, "answered-1")) == [
        AppearanceEventRecord(3, 1_732_521_665_000, LINE, 1, "active", "idle", Cause.BYE, DESK_A, MAC_A, uuid)
    ]
    rows = feed(rec, call.bye(T0 + 65, by_callee=True))
    assert of_type(rows, AccRecord)[0].method == "BYE"
    assert of_type(rows, CallRecord) == [
        attrs.evolve(
            indexed,
            ended_ms=1_732_521_665_000,
            duration_ms=65_000,
            billable_ms=60_000,
            disposition=Disposition.ANSWERED,
            end_reason=EndReason.BYE,
        )
    ]
    assert rec.calls_in_progress == 0


def test_abandoned_call_is_no_answer_caller_cancel() -> None:
    rec = recorder()
    call = Call("abandoned-1")
    feed(
        rec,
        [
            call.forwarded(T0),
            change(T0, 2, S.IDLE, S.ALERTING, "I1", None, "abandoned-1"),
            call.ringing(T0 + 1),
        ],
    )
    rows = feed(
        rec, [*call.cancelled(T0 + 20), change(T0 + 20, 2, S.ALERTING, S.IDLE, "I6", None, "abandoned-1")]
    )
    (cdr,) = of_type(rows, CallRecord)
    assert (cdr.disposition, cdr.end_reason, cdr.final_sip_code, cdr.appearance_index) == (
        Disposition.NO_ANSWER,
        EndReason.CALLER_CANCEL,
        487,
        2,
    )
    assert (cdr.ring_ms, cdr.answer_ms, cdr.duration_ms, cdr.billable_ms) == (1000, None, 20_050, 0)
    (acc,) = of_type(rows, AccRecord)
    assert (acc.method, acc.sip_code, acc.sip_reason) == ("INVITE", "487", "Request Terminated")
    (event,) = of_type(rows, AppearanceEventRecord)
    assert (event.old_state, event.new_state, event.cause) == ("alerting", "idle", Cause.CANCEL)


@pytest.mark.parametrize(
    ("status", "disposition", "reason"),
    [
        (486, Disposition.BUSY, EndReason.REJECTED),
        (603, Disposition.BUSY, EndReason.REJECTED),
        (408, Disposition.NO_ANSWER, EndReason.RING_TIMEOUT),
        (480, Disposition.NO_ANSWER, EndReason.RING_TIMEOUT),
        (503, Disposition.CONGESTION, EndReason.ERROR),
        (500, Disposition.FAILED, EndReason.ERROR),
        (404, Disposition.FAILED, EndReason.REJECTED),
        (302, Disposition.FAILED, EndReason.REJECTED),
    ],
)
def test_failed_calls_get_asterisk_dispositions(
    status: int, disposition: Disposition, reason: EndReason
) -> None:
    rec = recorder()
    call = Call(f"failed-{status}")
    rec.record(call.forwarded(T0))
    (cdr,) = of_type(feed(rec, call.failed(T0 + 3, status, "Whatever")), CallRecord)
    assert (cdr.disposition, cdr.end_reason, cdr.final_sip_code, cdr.final_sip_reason) == (
        disposition,
        reason,
        status,
        "Whatever",
    )
    assert failure_outcome(status, cancelled=False) == (disposition, reason)


def test_challenged_call_reopens_when_the_authenticated_invite_is_forwarded() -> None:
    rec = recorder()
    call = Call("challenged-1", caller="sip:alice@example.com", callee="sip:bob@example.com")
    (first,) = rec.record(call.forwarded(T0))
    assert isinstance(first, CallRecord)
    assert first.direction is Direction.INTERNAL and first.line_aor is None
    (challenged,) = of_type(
        feed(rec, call.failed(T0 + 0.1, 407, "Proxy Authentication Required")), CallRecord
    )
    assert (challenged.disposition, challenged.final_sip_code) == (Disposition.FAILED, 407)
    assert rec.record(call.forwarded(T0 + 0.3)) == [first]  # reopened, start kept
    feed(rec, [call.answered(T0 + 4, "sip:bob@192.0.2.30")])
    (ended,) = of_type(feed(rec, call.bye(T0 + 10)), CallRecord)
    assert (ended.disposition, ended.answer_ms, ended.duration_ms) == (Disposition.ANSWERED, 4000, 10_000)


def test_a_challenged_call_is_forgotten_once_past_its_grace_and_a_fresh_one_is_kept() -> None:
    rec = recorder()
    old = Call("challenged-old", caller="sip:alice@example.com", callee="sip:bob@example.com")
    fresh = Call("challenged-fresh", caller="sip:carol@example.com", callee="sip:bob@example.com")
    (first_old,) = of_type(rec.record(old.forwarded(T0)), CallRecord)
    feed(rec, old.failed(T0 + 0.1, 407, "Proxy Authentication Required"))
    (first_fresh,) = rec.record(fresh.forwarded(T0 + CHALLENGE_GRACE_S - 1))
    feed(rec, fresh.failed(T0 + CHALLENGE_GRACE_S - 0.9, 401, "Unauthorized"))
    others = [
        Call(f"ongoing-{n}", caller="sip:dave@example.com", callee="sip:bob@example.com") for n in range(3)
    ]
    for n, call in enumerate(others):  # calls in progress: never dropped as stale
        rec.record(call.forwarded(T0 + n))
    assert rec.calls_in_progress == 3
    rec.record(Call("next", caller="sip:erin@example.com", callee="sip:bob@example.com").forwarded(T0 + 61))
    assert rec.calls_in_progress == 4
    assert rec.record(fresh.forwarded(T0 + 62)) == [first_fresh]  # within its grace: reopened
    (again,) = rec.record(old.forwarded(T0 + 63))  # past it: forgotten, a new call
    assert isinstance(again, CallRecord) and again.started_ms != first_old.started_ms
    assert rec.calls_in_progress == 6


def test_call_from_a_line_member_is_outbound_and_gets_its_index_from_the_seizure() -> None:
    rec = recorder()
    call = Call("out-1", caller=LINE2, callee="sip:+15559870000@carrier.example.net")
    rows = feed(
        rec,
        [
            change(T0, 3, S.IDLE, S.SEIZED, "O1", DESK_B, line=LINE2),
            call.forwarded(T0 + 1),
            change(T0 + 1, 3, S.SEIZED, S.SEIZED, "O5", DESK_B, "out-1", line=LINE2),
        ],
    )
    cdrs = of_type(rows, CallRecord)
    assert (cdrs[-1].direction, cdrs[-1].line_aor, cdrs[-1].appearance_index) == (
        Direction.OUTBOUND,
        LINE2,
        3,
    )
    events = of_type(rows, AppearanceEventRecord)
    assert [(e.old_state, e.new_state, e.cause, e.call_uuid) for e in events] == [
        ("idle", "seized", Cause.LINE_SEIZE, None),
        ("seized", "seized", Cause.INVITE, call_uuid("out-1", "ct1")),
    ]


def test_call_held_and_retrieved_by_another_member_continues_on_the_pickup_leg() -> None:
    rec = recorder()
    call = Call("held-1")
    uuid = call_uuid("held-1", "ct1")
    feed(
        rec,
        [
            call.forwarded(T0),
            call.answered(T0 + 4, DESK_A),
            change(T0 + 4, 1, S.IDLE, S.ACTIVE_PENDING, "I3", DESK_A, "held-1"),
            change(T0 + 4.1, 1, S.ACTIVE_PENDING, S.ACTIVE, "I4", DESK_A, "held-1"),
        ],
    )
    hold = rec.record(change(T0 + 30, 1, S.ACTIVE, S.HELD, "O14", DESK_A, "held-1"))
    assert hold == [
        AppearanceEventRecord(
            3, 1_732_521_630_000, LINE, 1, "active", "held", Cause.REINVITE_HOLD, DESK_A, MAC_A, uuid
        )
    ]
    # Desk B picks the call up (sca.md 7.1): INVITE line -> line naming index 1, re-targeted
    # with Replaces.
    pickup = Call(
        "pickup-1",
        caller=LINE,
        callee=LINE,
        caller_tag="bt1",
        callee_tag="rt9",
        extra=(("Call-Info", "<sip:example.com>;appearance-index=1"),),
    )
    assert rec.record(pickup.forwarded(T0 + 90, (("Replaces", "held-1;to-tag=ct1;from-tag=lt1"),))) == []
    retrieve = rec.record(change(T0 + 90, 1, S.HELD, S.ACTIVE, "O19", DESK_B, "pickup-1"))
    assert retrieve == [
        AppearanceEventRecord(
            4, 1_732_521_690_000, LINE, 1, "held", "active", Cause.RETRIEVE, DESK_B, MAC_B, uuid
        )
    ]
    # Polycom order: the remote party's BYE to desk A comes before the pickup's 200.
    assert of_type(feed(rec, call.bye(T0 + 90.2, by_callee=True)), CallRecord) == []
    assert of_type(feed(rec, [pickup.answered(T0 + 90.3, "sip:remote@203.0.113.5")]), CallRecord) == []
    assert rec.calls_in_progress == 1
    rows = feed(
        rec, [*pickup.bye(T0 + 150), change(T0 + 150, 1, S.ACTIVE, S.IDLE, "O18", DESK_B, "pickup-1")]
    )
    (cdr,) = of_type(rows, CallRecord)
    assert cdr.call_uuid == uuid
    assert (cdr.disposition, cdr.hold_count, cdr.held_ms, cdr.duration_ms, cdr.billable_ms) == (
        Disposition.ANSWERED,
        1,
        60_000,
        150_000,
        146_000,
    )
    assert cdr.answered_contact == DESK_A
    assert rec.calls_in_progress == 0


def test_a_call_ending_on_hold_closes_its_own_hold_and_no_other_calls() -> None:
    rec = recorder()
    first, second = Call("held-a"), Call("held-b")
    feed(
        rec,
        [
            first.forwarded(T0),
            first.answered(T0 + 2, DESK_A),
            change(T0 + 2, 1, S.IDLE, S.ACTIVE_PENDING, "I3", DESK_A, "held-a"),
            second.forwarded(T0 + 3),
            second.answered(T0 + 4, DESK_B),
            change(T0 + 4, 2, S.IDLE, S.ACTIVE_PENDING, "I3", DESK_B, "held-b"),
            change(T0 + 10, 1, S.ACTIVE, S.HELD, "O14", DESK_A, "held-a"),
        ],
    )
    (ended,) = of_type(feed(rec, first.bye(T0 + 40)), CallRecord)  # on hold: closed at its end
    assert (ended.sip_call_id, ended.hold_count, ended.held_ms) == ("held-a", 1, 30_000)
    rows = feed(rec, [change(T0 + 50, 2, S.ACTIVE, S.HELD, "O14", DESK_B, "held-b"), *second.bye(T0 + 70)])
    (other,) = of_type(rows, CallRecord)
    assert (other.sip_call_id, other.hold_count, other.held_ms) == ("held-b", 1, 20_000)


def test_failed_pickup_leaves_the_call_on_its_old_dialog() -> None:
    rec = recorder()
    call = Call("held-2")
    feed(
        rec,
        [
            call.forwarded(T0),
            call.answered(T0 + 2, DESK_A),
            change(T0 + 2, 1, S.IDLE, S.ACTIVE_PENDING, "I3", DESK_A, "held-2"),
            change(T0 + 10, 1, S.ACTIVE, S.HELD, "O14", DESK_A, "held-2"),
        ],
    )
    pickup = Call(
        "pickup-2",
        caller=LINE,
        callee=LINE,
        caller_tag="bt2",
        extra=(("Call-Info", "<sip:example.com>;appearance-index=1"),),
    )
    assert rec.record(pickup.forwarded(T0 + 20)) == []  # the 7.1 shape, without Replaces
    assert of_type(feed(rec, pickup.failed(T0 + 21, 481, "Call Does Not Exist")), CallRecord) == []
    rows = feed(rec, [change(T0 + 40, 1, S.HELD, S.ACTIVE, "O16", DESK_A, "held-2"), *call.bye(T0 + 50)])
    (cdr,) = of_type(rows, CallRecord)
    assert (cdr.sip_call_id, cdr.hold_count, cdr.held_ms, cdr.duration_ms) == ("held-2", 1, 30_000, 50_000)


def test_seize_without_call_writes_seized_then_idle_with_the_expiry_cause() -> None:
    rec = recorder()
    rows = feed(
        rec,
        [
            change(T0, 2, S.IDLE, S.SEIZED, "O1", DESK_B),
            change(T0 + 1, 2, S.SEIZED, S.SEIZED, "O2", DESK_A),  # another phone's seize is rejected: no row
            change(T0 + 15, 2, S.SEIZED, S.IDLE, "O4", DESK_B),
        ],
    )
    assert rows == [
        AppearanceEventRecord(
            1, 1_732_521_600_000, LINE, 2, "idle", "seized", Cause.LINE_SEIZE, DESK_B, MAC_B, None
        ),
        AppearanceEventRecord(
            2, 1_732_521_615_000, LINE, 2, "seized", "idle", Cause.SEIZE_EXPIRED, DESK_B, MAC_B, None
        ),
    ]


def test_rpc_changes_are_marked_with_source_rpc() -> None:
    rec = recorder()
    (row,) = rec.record(change(T0, 4, S.IDLE, S.SEIZED, "RPC", None))
    assert isinstance(row, AppearanceEventRecord)
    assert (row.cause, row.source, row.owner_device) == (Cause.RPC, "rpc", None)


def test_every_rule_of_the_transition_table_has_a_cause() -> None:
    rules = {rule for rule, _ in TRANSITIONS.values()}
    for rule in rules:
        fact = AppearanceChanged(LINE, 1, S.ACTIVE, S.HELD, rule, None, None, T0)
        assert cause_of(fact) is not None
    unknown = AppearanceChanged(LINE, 1, S.ACTIVE, S.IDLE, "Z99", None, None, T0)
    assert cause_of(unknown) is Cause.PURGE
    assert cause_of(attrs.evolve(unknown, to_state=S.HELD)) is Cause.RPC
    rollback = AppearanceChanged(LINE, 1, S.HELD, S.ACTIVE, "O9b", None, None, T0)
    assert cause_of(rollback) is Cause.REINVITE_RESUME
    assert cause_of(attrs.evolve(rollback, to_state=S.HELD)) is Cause.REINVITE_HOLD


def test_o14b_privacy_change_is_a_hold_and_o19b_far_line_move_a_retrieve() -> None:
    private = AppearanceChanged(LINE, 1, S.HELD, S.HELD_PRIVATE, "O14b", DESK_A, "c1", T0)
    assert cause_of(private) is Cause.REINVITE_HOLD
    assert cause_of(attrs.evolve(private, from_state=S.HELD_PRIVATE, to_state=S.HELD)) is Cause.REINVITE_HOLD
    far = AppearanceChanged(LINE, 1, S.ACTIVE, S.ACTIVE, "O19b", DESK_A, "pickup-1", T0)
    assert cause_of(far) is Cause.RETRIEVE


def test_line_samples_count_busy_active_and_held_appearances() -> None:
    rec = recorder()
    feed(
        rec,
        [
            change(T0, 1, S.IDLE, S.ACTIVE_PENDING, "I3", DESK_A),
            change(T0, 2, S.IDLE, S.SEIZED, "O1", DESK_B),
            change(T0, 3, S.IDLE, S.ACTIVE_PENDING, "I3", DESK_A),
            change(T0 + 1, 3, S.ACTIVE, S.HELD, "O14", DESK_A),
        ],
    )
    assert rec.sample_lines(T0 + 59.9, [LINE, LINE2, "sip:line3@example.com"]) == [
        LineSampleRecord(LINE, 1_732_521_600_000, 3, 1, 1),
        LineSampleRecord(LINE2, 1_732_521_600_000, 0, 0, 0),
        LineSampleRecord("sip:line3@example.com", 1_732_521_600_000, 0, 0, 0),
    ]


def test_registration_after_a_push_completes_the_wakeup() -> None:
    rec = recorder()
    aor = "sip:mobile@example.com"
    (sent,) = rec.push_sent(aor=aor, provider="apns", prid="tok-1", reason="call", call_id=None, now=T0)
    assert sent == PushWakeupRecord(1_732_521_600_000, aor, "apns", prid_sha256("tok-1"), "call", None)
    assert "tok-1" not in repr(sent)
    (gw,) = rec.push_gateway_answered(aor=aor, prid="tok-1", status=200, now=T0 + 0.2)
    assert isinstance(gw, PushWakeupRecord) and (gw.gateway_status, gw.gateway_ms) == (200, 200)
    rows = rec.record(registered(T0 + 2.5, aor, "sip:mobile@198.51.100.7:40000", prid="tok-1"))
    woke, reg = rows
    assert isinstance(woke, PushWakeupRecord) and isinstance(reg, RegistrationEventRecord)
    assert (woke.outcome, woke.registered_ms, woke.gateway_ms) == (PushOutcome.REGISTERED, 2500, 200)
    assert (reg.event, reg.wakeup, reg.push_provider, reg.expires_s, reg.source_addr) == (
        RegistrationEvent.REGISTERED,
        woke.key,
        "apns",
        3600,
        "198.51.100.7:40000",
    )
    assert history_key(woke) == history_key(sent)  # the update replaces the queued insert


def test_push_timeout_and_gateway_error_end_the_wakeup() -> None:
    rec = recorder()
    rec.push_sent(aor="sip:a@example.com", provider="fcm", prid="p1", reason="call", call_id=None, now=T0)
    rec.push_sent(aor="sip:b@example.com", provider="fcm", prid="p2", reason="call", call_id=None, now=T0)
    (timeout,) = rec.push_timed_out(aor="sip:a@example.com", prid="p1")
    assert isinstance(timeout, PushWakeupRecord) and timeout.outcome is PushOutcome.TIMEOUT
    (error,) = rec.push_gateway_answered(aor="sip:b@example.com", prid="p2", status=410, now=T0 + 1)
    assert isinstance(error, PushWakeupRecord) and error.outcome is PushOutcome.GATEWAY_ERROR
    assert rec.push_timed_out(aor="sip:a@example.com", prid="p1") == []
    assert rec.push_gateway_answered(aor="sip:b@example.com", prid="p2", status=200, now=T0) == []


def test_parked_call_outcome_and_park_timeout_end_reason() -> None:
    rec = recorder()
    aor = "sip:mobile@example.com"
    call = Call("parked-1", callee=aor)
    rec.record(call.forwarded(T0))
    rec.push_sent(aor=aor, provider="apns", prid="tok", reason="call", call_id="parked-1", now=T0 + 0.1)
    rows = rec.call_parked(call_id="parked-1", ruri=aor, now=T0 + 0.1)
    cdr, parked = rows
    assert isinstance(cdr, CallRecord) and cdr.parked
    assert isinstance(parked, ParkedCallRecord) and parked.wakeup == (
        aor,
        prid_sha256("tok"),
        1_732_521_600_100,
    )
    (branch,) = rec.park_branch_added(call_id="parked-1", now=T0 + 3.1)
    assert isinstance(branch, ParkedCallRecord) and (branch.branches_added, branch.first_branch_ms) == (
        1,
        3000,
    )
    (ended,) = rec.park_ended(call_id="parked-1", outcome=ParkOutcome.TIMEOUT, status=480, now=T0 + 30.1)
    assert isinstance(ended, ParkedCallRecord)
    assert (ended.outcome, ended.ended_ms, ended.answered_ms, ended.final_sip_code) == (
        ParkOutcome.TIMEOUT,
        30_000,
        None,
        480,
    )
    (final,) = of_type(feed(rec, call.failed(T0 + 30.1, 480, "Temporarily Unavailable")), CallRecord)
    assert final.end_reason is EndReason.PARK_TIMEOUT
    assert rec.park_ended(call_id="parked-1", outcome=ParkOutcome.TIMEOUT, status=480, now=T0) == []
    assert rec.park_branch_added(call_id="parked-1", now=T0) == []


def test_facts_about_unknown_calls_and_other_requests_write_nothing() -> None:
    rec = recorder()
    call = Call("never-forwarded")
    facts: list[HistoryFact] = [call.ringing(T0), *call.failed(T0, 404, "Not Found")]  # type: ignore[list-item]
    rows = feed(rec, facts)
    assert [type(r) for r in rows] == [AccRecord]  # Kamailio's acc still logs the transaction
    assert of_type(feed(rec, call.bye(T0 + 1)), CallRecord) == []


def test_a_call_record_updated_column_by_column_is_the_evolved_record() -> None:
    record = CallRecord(
        call_uuid="u", sip_call_id="c@h", from_tag="f", to_tag="", direction=Direction.INBOUND,
        line_aor=None, appearance_index=None, caller_uri="sip:a@h", caller_display="A",
        callee_uri="sip:b@h", origin_device=None, answered_contact=None, answered_device=None,
        started_ms=1000,
    )  # fmt: skip
    changes: CallChanges = {
        "to_tag": "t", "line_aor": "sip:line@h", "appearance_index": 2, "answered_contact": "sip:b@10.0.0.1",
        "answered_device": "0004f2aabbcc", "ring_ms": 10, "answer_ms": 20, "duration_ms": 30,
        "billable_ms": 40, "ended_ms": 1030, "disposition": Disposition.ANSWERED,
        "end_reason": EndReason.BYE, "final_sip_code": 200, "final_sip_reason": "OK",
        "hold_count": 1, "held_ms": 5, "parked": True,
    }  # fmt: skip
    assert set(changes) == set(CallChanges.__annotations__)
    for name, value in changes.items():
        one = cast(CallChanges, {name: value})
        assert updated(record, **one) == attrs.evolve(record, **one)
    assert updated(record, **changes) == attrs.evolve(record, **changes)
    assert updated(record) == record


def test_call_uuid_is_the_uuid5_of_call_id_and_caller_tag() -> None:
    for call_id, tag in [("a84b4c76e66710@pc33.atlanta.com", "1928301774"), ("", ""), ("x\u00e9", "t")]:
        assert call_uuid(call_id, tag) == str(uuid.uuid5(CALL_UUID_NAMESPACE, f"{call_id}\n{tag}"))
    # Octets that were not UTF-8 (surrogate escapes) are hashed as they came.
    name = "bad\udcff\nt1".encode("utf-8", "surrogatepass")
    digest = hashlib.sha1(CALL_UUID_NAMESPACE.bytes + name, usedforsecurity=False).digest()
    assert call_uuid("bad\udcff", "t1") == str(uuid.UUID(bytes=digest[:16], version=5))


def test_facts_sharing_one_request_object_give_the_rows_of_equal_copies() -> None:
    """The proxy hands one request object to its branch and to each response relayed for it;
    two calls' facts interleaved read each its own request's parties."""
    first, second = Call("shared-1"), Call("shared-2", caller_tag="ct2", callee=LINE2, callee_tag="lt2")
    invites = {call.call_id: call.invite() for call in (first, second)}

    def forwarded(call: Call, now: float) -> RequestForwarded:
        invite = invites[call.call_id]
        return RequestForwarded(invite, invite, Target(call.callee), PEER, now)

    def relayed(call: Call, now: float, status: int, reason: str) -> ResponseRelayed:
        contact = DESK_A if status == 200 else None
        return ResponseRelayed(invites[call.call_id], call.response(status, reason, contact), now)

    shared = [
        forwarded(first, T0),
        forwarded(second, T0 + 0.5),
        relayed(first, T0 + 1, 180, "Ringing"),
        relayed(second, T0 + 1.5, 180, "Ringing"),
        relayed(first, T0 + 2, 200, "OK"),
        relayed(second, T0 + 2.5, 486, "Busy Here"),
        *first.bye(T0 + 10),
    ]
    copies = [
        first.forwarded(T0),
        second.forwarded(T0 + 0.5),
        first.ringing(T0 + 1),
        second.ringing(T0 + 1.5),
        first.answered(T0 + 2, DESK_A),
        ResponseRelayed(second.invite(), second.response(486, "Busy Here"), T0 + 2.5),
        *first.bye(T0 + 10),
    ]
    rows = feed(recorder(), shared)
    assert rows == feed(recorder(), copies)
    assert [(row.callid, row.from_tag, row.to_tag, row.sip_code) for row in of_type(rows, AccRecord)] == [
        ("shared-1", "ct1", "lt1", "200"),
        ("shared-2", "ct2", "lt2", "486"),
        ("shared-1", "ct1", "lt1", "200"),
    ]
