"""ts.*, park.*, pushreg.* and uac.* methods (rpc.md 3.4, 3.5) over a fake ParkingControl."""

from __future__ import annotations

from collections.abc import Sequence

import attrs

from scaserver.control.catalogue import build_registry
from scaserver.control.dispatcher import Dispatcher
from scaserver.control.parking import TABLE_SIZE, hash_of
from scaserver.control.seams import (
    UAC_FLAG_INIT,
    UAC_FLAG_ONLINE,
    NoParking,
    ParkedBranchInfo,
    ParkedCallInfo,
    ParkedTransaction,
    PushAttemptInfo,
    UacRefusal,
    UacRegistration,
    UpstreamInfo,
    WakeOutcome,
)

from .fakes import NOW, READER, SERVER, Rig, fault_of, result_of, run

AOR = "2001@pbx.example.com"
PARKED = (
    ParkedTransaction("2001@pbx.example.com", 41, 1, "c1"),
    ParkedTransaction("2001@pbx.example.com", 42, 2, "c2"),
    ParkedTransaction("2002@pbx.example.com", 43, 3, "c3"),
)
UPSTREAM = UpstreamInfo(
    aor="sip:2001@pbx.example.com",
    mode="aor",
    state="RETRYING",
    expires_at=NOW + 120.4,
    last_ok=NOW - 3000,
    last_error="503",
    upstream_auth_needed=False,
)


CALL = ParkedCallInfo(
    park_id="p-000001",
    ruris=("200@example.com",),
    call_id="call-1@pbx",
    caller="sip:alice@example.com",
    callee="sip:200@example.com",
    state="parked",
    parked_at=NOW - 4.5,
    timeout_at=NOW + 25.5,
    grace_until=None,
    branches=(
        ParkedBranchInfo(0, "uri:sip:200@192.0.2.60:5060", "sip:200@192.0.2.60:5060", NOW - 4.5, "done", 486),
        ParkedBranchInfo(1, "push:apns " + "ab" * 32, "sip:200@192.0.2.71:6062", NOW - 1.0, "superseded"),
    ),
    pushes=(
        PushAttemptInfo("att-1", "apns", "ab" * 32, "woken", NOW - 4.5, NOW - 4.4, None),
        PushAttemptInfo("att-2", "fcm", "cd" * 32, "sent", NOW - 4.5, NOW - 4.3, NOW + 5.7),
    ),
)
UAC = UacRegistration(
    l_uuid="200@example.com",
    l_username="200",
    l_domain="example.com",
    r_username="200",
    r_domain="example.com",
    realm="",
    auth_username="",
    auth_proxy="sip:192.0.2.50:5060;transport=udp",
    expires=3600,
    flags=UAC_FLAG_ONLINE | UAC_FLAG_INIT,
    timer_expires=NOW + 3000.6,
    reg_init=NOW - 600,
    reg_delay=0,
    contact_addr="sip:200@192.0.2.1:5060;transport=udp",
    socket="udp:192.0.2.1:5060",
)
WOKEN = (
    WakeOutcome("sip:200@192.0.2.71:5062", "apns", "sent", 202, 35),
    WakeOutcome("sip:200@192.0.2.72:5062", "fcm", "pending"),
)


@attrs.define
class FakeParking:
    items: Sequence[ParkedTransaction] = PARKED
    upstream: Sequence[UpstreamInfo] = (UPSTREAM,)
    calls: list[ParkedCallInfo] = attrs.Factory(lambda: [CALL])
    uac: Sequence[UacRegistration] = (UAC,)
    refusals: dict[str, UacRefusal] = attrs.Factory(dict)
    asked: list[tuple[str, tuple[object, ...]]] = attrs.Factory(list)

    def parked(self) -> Sequence[ParkedTransaction]:
        return self.items

    def parked_calls(self, ruri: str | None = None) -> Sequence[ParkedCallInfo]:
        return [call for call in self.calls if ruri is None or ruri in call.ruris]

    async def release(self, call_id: str, status: int) -> ParkedCallInfo | None:
        self.asked.append(("release", (call_id, status)))
        found = next((call for call in self.calls if call.call_id == call_id), None)
        if found is not None:
            self.calls.remove(found)
        return found

    def registrations(self) -> Sequence[UpstreamInfo]:
        return self.upstream

    def registration(self, aor: str) -> UpstreamInfo | None:
        return next((info for info in self.upstream if info.aor in (aor, f"sip:{aor}")), None)

    async def wake(self, aor: str, reason: str) -> Sequence[WakeOutcome] | None:
        self.asked.append(("wake", (aor, reason)))
        return WOKEN if aor == AOR else None

    def uac_registrations(self) -> Sequence[UacRegistration]:
        return self.uac

    async def uac_refresh(self, l_uuid: str) -> UacRegistration | UacRefusal:
        self.asked.append(("uac_refresh", (l_uuid,)))
        if l_uuid in self.refusals:
            return self.refusals[l_uuid]
        return next((r for r in self.uac if r.l_uuid == l_uuid), UacRefusal.NO_RECORD)


def rig(parking: FakeParking | None = None) -> Rig:
    """The fake-backed registry with ``parking`` (a fresh FakeParking by default)."""
    made = Rig()
    made.registry = build_registry(
        sca=made.sca,
        location=made.location,
        server=SERVER,
        clock=lambda: NOW,
        parking=parking or FakeParking(),
    )
    made.dispatcher = Dispatcher(
        made.registry,
        clock=lambda: NOW,
        audit=made.audits.append,
        on_failure=lambda method, error: made.failures.append((method, error)),
    )
    return made


def test_ts_dump_groups_transactions_by_ruri() -> None:
    result = result_of(rig(), "ts.dump")
    assert result == {
        "Size": TABLE_SIZE,
        "R-URIs": [
            {
                "R-URI": "2001@pbx.example.com",
                "Hash": hash_of("2001@pbx.example.com"),
                "Transactions": [{"Tindex": 41, "Tlabel": 1}, {"Tindex": 42, "Tlabel": 2}],
            },
            {
                "R-URI": "2002@pbx.example.com",
                "Hash": hash_of("2002@pbx.example.com"),
                "Transactions": [{"Tindex": 43, "Tlabel": 3}],
            },
        ],
        "Stats": {"RURIs": 2, "Max-Slots": 1, "Transactions": 3},
    }


def test_ts_dump_brief_and_empty() -> None:
    brief = result_of(rig(), "ts.dump", ["brief"])
    assert [set(entry) for entry in brief["R-URIs"]] == [{"R-URI", "Hash"}] * 2
    empty = result_of(rig(FakeParking(items=())), "ts.dump")
    assert empty == {
        "Size": TABLE_SIZE,
        "R-URIs": [],
        "Stats": {"RURIs": 0, "Max-Slots": 0, "Transactions": 0},
    }


def test_ts_lookup_and_its_faults() -> None:
    assert result_of(rig(), "ts.lookup", ["2002@pbx.example.com"]) == [{"Tindex": 43, "Tlabel": 3}]
    assert fault_of(rig(), "ts.lookup", ["2009@pbx.example.com"])[1:] == (
        404,
        "RURI not found in tsilo table",
    )
    assert fault_of(rig(), "ts.lookup", [])[1] == -32602


def test_pushreg_lookup_shows_contacts_as_ul_and_the_upstream_state() -> None:
    result = result_of(rig(), "pushreg.lookup", [AOR])
    assert result["aor"] == "sip:2001@pbx.example.com"
    assert result["upstream"] == {
        "mode": "aor",
        "state": "RETRYING",
        "expires_in": 120,
        "last_ok": NOW - 3000,
        "last_error": "503",
        "upstream_auth_needed": False,
        "degraded": True,
    }
    assert fault_of(rig(), "pushreg.lookup", ["9999@pbx.example.com"])[1:] == (
        404,
        "AOR not found in mid-registrar",
    )


def test_pushreg_dump_full_and_brief() -> None:
    (full,) = result_of(rig(), "pushreg.dump")
    assert full["upstream"]["state"] == "RETRYING"
    (brief,) = result_of(rig(), "pushreg.dump", ["brief"])
    assert set(brief) == {"aor", "upstream"}


def test_without_push_the_tables_are_empty() -> None:
    none = NoParking()
    assert (none.parked(), none.registrations(), none.registration(AOR)) == ((), (), None)
    assert result_of(Rig(), "pushreg.dump") == []


# ------------------------------------------------------------------ park.*


def test_park_dump_shows_branches_push_attempts_and_deadlines() -> None:
    (call,) = result_of(rig(), "park.dump")
    assert call["ruri"] == "200@example.com" and call["ruris"] == ["200@example.com"]
    assert (call["park_id"], call["call_id"], call["caller"], call["callee"]) == (
        "p-000001",
        "call-1@pbx",
        "sip:alice@example.com",
        "sip:200@example.com",
    )
    assert (call["state"], call["parked_at"], call["age_s"], call["timeout_at"], call["grace_until"]) == (
        "parked",
        NOW - 4.5,
        4.5,
        NOW + 25.5,
        None,
    )
    assert [(b["index"], b["state"], b["status"]) for b in call["branches"]] == [
        (0, "done", 486),
        (1, "superseded", None),
    ]
    assert call["push"] == {"sent_at": NOW - 4.5, "provider": "apns", "state": "woken"}
    assert call["pushes"][1] == {
        "attempt": "att-2",
        "provider": "fcm",
        "prid_sha256": "cd" * 32,
        "state": "sent",
        "sent_at": NOW - 4.5,
        "accepted_at": NOW - 4.3,
        "wake_deadline": NOW + 5.7,
    }


def test_park_dump_of_an_empty_lot_and_a_call_without_pushes() -> None:
    assert result_of(rig(FakeParking(calls=[])), "park.dump") == []
    bare = attrs.evolve(CALL, pushes=(), branches=())
    (call,) = result_of(rig(FakeParking(calls=[bare])), "park.dump")
    assert (call["push"], call["pushes"], call["branches"]) == (None, [], [])


def test_park_lookup_and_its_faults() -> None:
    (call,) = result_of(rig(), "park.lookup", ["200@example.com"])
    assert call["call_id"] == "call-1@pbx"
    assert fault_of(rig(), "park.lookup", ["201@example.com"]) == (404, 404, "RURI not found in tsilo table")
    assert fault_of(rig(), "park.lookup", [])[1] == -32602


def test_park_release_defaults_to_480_and_returns_the_call() -> None:
    parking = FakeParking()
    result = result_of(rig(parking), "park.release", ["call-1@pbx"])
    assert result["code"] == 480 and result["call"]["park_id"] == "p-000001"
    assert parking.asked == [("release", ("call-1@pbx", 480))]
    assert parking.calls == []


def test_park_release_with_a_code_named_or_positional() -> None:
    parking = FakeParking()
    assert result_of(rig(parking), "park.release", {"call_id": "call-1@pbx", "code": "603"})["code"] == 603
    assert parking.asked == [("release", ("call-1@pbx", 603))]


def test_park_release_faults() -> None:
    made = rig()
    assert fault_of(made, "park.release", ["nope@pbx"]) == (404, 404, "Call-ID not found in tsilo table")
    for code in (200, 299, 700, 100):
        status, error, message = fault_of(made, "park.release", ["call-1@pbx", code])
        assert (status, error, message) == (400, -32602, "Invalid Parameters"), code
    assert fault_of(made, "park.release", ["call-1@pbx", "loud"])[1] == -32602
    assert fault_of(made, "park.release", [])[1] == -32602
    assert fault_of(made, "park.release", ["call-1@pbx"], caller=READER)[1:] == (403, "Forbidden")


# ------------------------------------------------------------------ pushreg.wake


def test_pushreg_wake_reports_each_push() -> None:
    parking = FakeParking()
    result = result_of(rig(parking), "pushreg.wake", [AOR])
    assert result == [
        {
            "contact": "sip:200@192.0.2.71:5062",
            "provider": "apns",
            "status": "sent",
            "gateway_status": 202,
            "latency_ms": 35,
        },
        {
            "contact": "sip:200@192.0.2.72:5062",
            "provider": "fcm",
            "status": "pending",
            "gateway_status": None,
            "latency_ms": None,
        },
    ]
    assert parking.asked == [("wake", (AOR, "rpc"))]
    result_of(rig(parking), "pushreg.wake", {"aor": AOR, "reason": "test"})
    assert parking.asked[-1] == ("wake", (AOR, "test"))


def test_pushreg_wake_faults() -> None:
    assert fault_of(rig(), "pushreg.wake", ["9999@pbx.example.com"]) == (404, 404, "AOR not found")
    assert fault_of(rig(), "pushreg.wake", [AOR], caller=READER)[1:] == (403, "Forbidden")
    assert fault_of(Rig(), "pushreg.wake", [AOR])[1] == 404  # no push at all


# ------------------------------------------------------------------ uac.*


def test_uac_reg_dump_has_kamailio_keys_and_masks_secrets() -> None:
    (record,) = result_of(rig(), "uac.reg_dump")
    assert record == {
        "l_uuid": "200@example.com",
        "l_username": "200",
        "l_domain": "example.com",
        "r_username": "200",
        "r_domain": "example.com",
        "realm": "",
        "auth_username": "",
        "auth_password": "***",
        "auth_ha1": "***",
        "auth_proxy": "sip:192.0.2.50:5060;transport=udp",
        "expires": 3600,
        "flags": 20,
        "diff_expires": 3000,
        "timer_expires": int(NOW + 3000.6),
        "reg_init": int(NOW - 600),
        "reg_delay": 0,
        "contact_addr": "sip:200@192.0.2.1:5060;transport=udp",
        "socket": "udp:192.0.2.1:5060",
    }
    never = attrs.evolve(UAC, timer_expires=0.0, auth_proxy="")
    (record,) = result_of(rig(FakeParking(uac=(never,))), "uac.reg_dump")
    assert (record["diff_expires"], record["timer_expires"], record["auth_proxy"]) == (0, 0, "none")
    assert result_of(Rig(), "uac.reg_dump") == []


def test_uac_reg_info_by_each_filter_attribute() -> None:
    other = attrs.evolve(
        UAC, l_uuid="201@example.com", l_username="201", r_username="201", auth_username="a201"
    )
    made = rig(FakeParking(uac=(UAC, other)))
    for attr, value in (
        ("l_uuid", "201@example.com"),
        ("l_uuid", "sip:201@example.com"),
        ("l_username", "201"),
        ("r_username", "201"),
        ("auth_username", "a201"),
    ):
        assert result_of(made, "uac.reg_info", [attr, value])["l_uuid"] == "201@example.com", attr


def test_uac_reg_info_faults() -> None:
    assert fault_of(rig(), "uac.reg_info", ["realm", "x"]) == (400, 400, "Unsupported filter attribute")
    assert fault_of(rig(), "uac.reg_info", ["l_uuid", "9@x"]) == (404, 404, "Record not found")
    assert fault_of(rig(), "uac.reg_info", ["auth_username", ""]) == (404, 404, "Record not found")
    assert fault_of(rig(), "uac.reg_info", ["l_uuid"])[1] == -32602


def test_uac_reg_refresh_and_its_faults() -> None:
    parking = FakeParking(refusals={"m@x": UacRefusal.MIRROR_MODE, "n@x": UacRefusal.NO_BINDINGS})
    made = rig(parking)
    assert result_of(made, "uac.reg_refresh", ["200@example.com"])["l_uuid"] == "200@example.com"
    assert parking.asked == [("uac_refresh", ("200@example.com",))]
    assert fault_of(made, "uac.reg_refresh", ["9@x"]) == (404, 404, "Record not found")
    assert fault_of(made, "uac.reg_refresh", ["m@x"]) == (400, 400, "Refresh not available in mirror mode")
    assert fault_of(made, "uac.reg_refresh", ["n@x"]) == (400, 400, "No local binding to register")
    assert fault_of(made, "uac.reg_refresh", ["200@example.com"], caller=READER)[1:] == (403, "Forbidden")


def test_no_parking_answers_nothing_found() -> None:
    none = NoParking()
    assert none.parked_calls() == () and none.uac_registrations() == ()
    assert run(none.release("c", 480)) is None
    assert run(none.wake(AOR, "rpc")) is None
    assert run(none.uac_refresh("200@example.com")) is UacRefusal.NO_RECORD
