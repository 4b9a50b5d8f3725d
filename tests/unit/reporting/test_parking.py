"""Push wake-ups and parked calls from the push and parking facts (reporting.md 4.1
``push_wakeups`` and ``parked_calls``): exact rows for each way a wake-up and a parked call end."""

from __future__ import annotations

import attrs
import pytest

from scaserver.parking.events import (
    BranchAdded,
    BranchAnswered,
    EndReason,
    ParkEnded,
    ParkStarted,
    WakeMissed,
    WakeObserved,
)
from scaserver.parking.instructions import CallSpec
from scaserver.proxy.events import ResponseRelayed
from scaserver.push.facts import PushAnswered, PushOutcome, PushRequested
from scaserver.push.gateway import CallInfo, PushRequest, PushType
from scaserver.reporting.callhistory import call_uuid
from scaserver.reporting.history import HistoryRecorder
from scaserver.reporting.parking import ParkingHistory
from scaserver.reporting.wakeups import prid_sha256
from scaserver.sip.keys import ServerKey
from scaserver.store.history import (
    CallRecord,
    HistoryRow,
    ParkedCallRecord,
    ParkOutcome,
    PushWakeupRecord,
)
from scaserver.store.history import PushOutcome as WakeOutcome
from tests.unit.reporting.script import Call, registered

T0 = 1_732_521_600.0  # 2024-11-25 08:00:00 UTC
T0_MS = 1_732_521_600_000
AOR = "sip:200@example.com"
TX = ServerKey("tx", "pbx.example.com", None, "INVITE")
CALL = Call("call-1@pbx", caller="sip:alice@example.com", callee=AOR, caller_tag="pbx1")
UUID = call_uuid("call-1@pbx", "pbx1")
TOKEN = "a1b2c3d4e5f60718293a4b5c6d7e8f90"
SHA = prid_sha256(TOKEN)
DESK, MOBILE = "desk-binding", "mobile-binding"


def started() -> ParkStarted:
    """The INVITE of ``CALL`` parks at T0; the fact carries the INVITE itself."""
    spec = CallSpec(TX, CALL.invite(), (AOR,), "call-1@pbx", "sip:alice@example.com", AOR)
    return ParkStarted("p-1", TX, (AOR,), None, T0, spec=spec)


def push(
    attempt: str = "att-1", kind: PushType = PushType.CALL, *, park_id: str | None = "p-1", at: float = T0
) -> PushRequested:
    call = None if park_id is None else CallInfo("call-1@pbx", park_id, "sip:alice@example.com", AOR)
    request = PushRequest(attempt, kind, "apns", TOKEN, "T.app.voip", AOR, 30, at, call=call)
    return PushRequested(request, at + 30)


@attrs.define
class Park:
    """A recorder and its ParkingHistory, with the rows they produced so far."""

    recorder: HistoryRecorder = attrs.Factory(
        lambda: HistoryRecorder(line_of=lambda aor: None, local_domains=["example.com"])
    )
    history: ParkingHistory = attrs.field(init=False)
    rows: list[HistoryRow] = attrs.Factory(list)

    def __attrs_post_init__(self) -> None:
        self.history = ParkingHistory(self.recorder)

    def feed(self, *facts: object, now: float = T0) -> list[HistoryRow]:
        out: list[HistoryRow] = []
        for fact in facts:
            match fact:
                case (
                    ParkStarted() | PushRequested() | PushAnswered() | WakeObserved() | WakeMissed()
                    | BranchAdded() | BranchAnswered() | ParkEnded() | ResponseRelayed()
                ):  # fmt: skip
                    out += self.history.record(fact, now)
                case _:
                    raise AssertionError(fact)
        self.rows += out
        return out

    def parked_at_t0(self) -> None:
        """The INVITE parks at T0 with the desk phone rung directly and the mobile pushed."""
        self.feed(started(), BranchAdded("p-1", DESK, False, T0), push())


def wakeup(**changes: object) -> PushWakeupRecord:
    base = PushWakeupRecord(T0_MS, AOR, "apns", SHA, "call", None)
    return attrs.evolve(base, **changes)  # type: ignore[arg-type]


def parked_row(**changes: object) -> ParkedCallRecord:
    base = ParkedCallRecord(UUID, AOR, T0_MS, wakeup=(AOR, SHA, T0_MS), branches_added=0)
    return attrs.evolve(base, **changes)  # type: ignore[arg-type]


def relayed(status: int, at: float) -> ResponseRelayed:
    reasons = {200: "OK", 486: "Busy Here", 487: "Request Terminated", 480: "Temporarily Unavailable"}
    return ResponseRelayed(CALL.invite(), CALL.response(status, reasons.get(status, "X")), at)


def test_t8_woken_mobile_answers_after_the_desk_declined() -> None:
    park = Park()
    park.feed(started(), BranchAdded("p-1", DESK, False, T0))
    assert park.rows == []  # the row waits for the first push, to name it
    assert park.feed(push()) == [wakeup(), parked_row()]
    assert park.feed(PushAnswered("att-1", "call", PushOutcome.SENT, 202, T0 + 0.05)) == [
        wakeup(gateway_status=202, gateway_ms=50)
    ]
    assert park.feed(WakeObserved("p-1", "att-1", 300), now=T0 + 0.35) == [
        wakeup(gateway_status=202, gateway_ms=50, registered_ms=350, outcome=WakeOutcome.REGISTERED)
    ]
    assert park.feed(BranchAdded("p-1", MOBILE, True, T0 + 0.35)) == [
        parked_row(branches_added=1, first_branch_ms=350)
    ]
    assert park.feed(relayed(200, T0 + 2.0), BranchAnswered("p-1", MOBILE, T0 + 2.0)) == []
    assert park.feed(ParkEnded("p-1", TX, EndReason.ANSWERED, "F1", T0 + 2.0)) == [
        parked_row(
            branches_added=1,
            first_branch_ms=350,
            answered_ms=2000,
            ended_ms=2000,
            outcome=ParkOutcome.ANSWERED_AFTER_WAKE,
            final_sip_code=200,
        )
    ]
    assert park.history.tracked == 0


def test_registration_naming_the_token_closes_the_wakeup_first() -> None:
    park = Park()
    park.parked_at_t0()
    rows = park.recorder.record(registered(T0 + 1.5, AOR, "sip:200@192.0.2.71:6062", prid=TOKEN))
    assert rows[0] == wakeup(registered_ms=1500, outcome=WakeOutcome.REGISTERED)
    assert park.feed(WakeObserved("p-1", "att-1", None), now=T0 + 1.5) == []  # already closed


def test_desk_phone_answers_before_the_wake() -> None:
    park = Park()
    park.parked_at_t0()
    park.feed(relayed(200, T0 + 4.0), BranchAnswered("p-1", DESK, T0 + 4.0))
    (ended,) = park.feed(ParkEnded("p-1", TX, EndReason.ANSWERED, "F1", T0 + 4.0))
    assert ended == parked_row(
        answered_ms=4000, ended_ms=4000, outcome=ParkOutcome.ANSWERED_EXISTING, final_sip_code=200
    )
    assert park.history.tracked == 1  # the push still awaits the gateway's answer (R7)
    assert park.feed(PushAnswered("att-1", "call", PushOutcome.SENT, 202, T0 + 4.5)) == [
        wakeup(gateway_status=202, gateway_ms=4500)
    ]
    assert park.history.tracked == 0


@pytest.mark.parametrize(
    ("reason", "branches", "status", "outcome"),
    [
        (EndReason.CANCELLED, 1, 487, ParkOutcome.CALLER_CANCEL),
        (EndReason.TIMEOUT, 1, 486, ParkOutcome.TIMEOUT),
        (EndReason.RELEASED, 1, 480, ParkOutcome.TIMEOUT),
        (EndReason.DECLINED, 1, 603, ParkOutcome.REJECTED),
        (EndReason.EXHAUSTED, 1, 486, ParkOutcome.REJECTED),
        (EndReason.EXHAUSTED, 0, 480, ParkOutcome.TIMEOUT),  # nobody woke, nothing rang
    ],
)
def test_end_reasons_give_the_reporting_outcome(
    reason: EndReason, branches: int, status: int, outcome: ParkOutcome
) -> None:
    park = Park()
    park.feed(started())
    if branches:
        park.feed(BranchAdded("p-1", DESK, False, T0))
    park.feed(push())
    # The end comes first here; the row is written when the final response is relayed.
    assert park.feed(ParkEnded("p-1", TX, reason, "F", T0 + 10.0)) == []
    (ended,) = park.feed(relayed(status, T0 + 10.0))
    assert ended == parked_row(ended_ms=10_000, outcome=outcome, final_sip_code=status)
    assert park.feed(relayed(200, T0 + 11.0)) == []  # a later 2xx changes nothing


def test_wake_timeout_and_gateway_failures_end_the_wakeup() -> None:
    park = Park()
    park.parked_at_t0()
    park.feed(PushAnswered("att-1", "call", PushOutcome.SENT, 202, T0 + 0.1))
    assert park.feed(WakeMissed("p-1", "att-1")) == [
        wakeup(gateway_status=202, gateway_ms=100, outcome=WakeOutcome.TIMEOUT)
    ]
    assert park.feed(WakeMissed("p-1", "att-1")) == []
    park.feed(push("att-2", at=T0 + 1.0))
    assert park.feed(PushAnswered("att-2", "call", PushOutcome.DROPPED, None, T0 + 1.5)) == [
        wakeup(sent_ms=T0_MS + 1000, gateway_ms=500, outcome=WakeOutcome.GATEWAY_ERROR)
    ]
    park.feed(push("att-3", at=T0 + 2.0))
    assert park.feed(PushAnswered("att-3", "call", PushOutcome.INVALID, 410, T0 + 2.1)) == [
        wakeup(sent_ms=T0_MS + 2000, gateway_status=410, gateway_ms=100, outcome=WakeOutcome.GATEWAY_ERROR)
    ]


def test_cancel_pushes_are_not_wakeups_refresh_pushes_are() -> None:
    park = Park()
    assert park.feed(push("att-1-cancel", PushType.CANCEL)) == []
    assert park.feed(PushAnswered("att-1-cancel", "cancel", PushOutcome.SENT, 202, T0)) == []
    (refresh,) = park.feed(push("r-1", PushType.REG_REFRESH, park_id=None))
    assert refresh == wakeup(reason="reg-refresh")
    assert park.feed(PushAnswered("r-1", "reg-refresh", PushOutcome.SENT, 202, T0 + 0.2)) == [
        wakeup(reason="reg-refresh", gateway_status=202, gateway_ms=200)
    ]
    assert park.history.tracked == 0  # no wake timer follows a refresh push


def test_facts_of_unknown_calls_and_attempts_write_nothing() -> None:
    park = Park()
    assert (
        park.feed(
            PushAnswered("nope", "call", PushOutcome.SENT, 202, T0),
            WakeObserved("p-9", "nope", 1),
            WakeMissed("p-9", "nope"),
            BranchAdded("p-9", MOBILE, True, T0),
            BranchAnswered("p-9", MOBILE, T0),
            ParkEnded("p-9", TX, EndReason.ANSWERED, "F1", T0),
            relayed(200, T0),
            ResponseRelayed(CALL.invite(), CALL.response(180, "Ringing"), T0),
        )
        == []
    )


def test_a_branch_appended_to_a_parked_call_starts_a_parked_cdr() -> None:
    park = Park()
    park.parked_at_t0()
    (cdr,) = [row for row in park.recorder.record(CALL.forwarded(T0 + 1.0)) if isinstance(row, CallRecord)]
    assert cdr.parked and cdr.call_uuid == UUID
