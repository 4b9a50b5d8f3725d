"""ts.* and pushreg.* methods (rpc.md 3.4, 3.5) over a fake ParkingControl."""

from __future__ import annotations

from collections.abc import Sequence

import attrs

from scaserver.control.catalogue import build_registry
from scaserver.control.dispatcher import Dispatcher
from scaserver.control.parking import TABLE_SIZE, hash_of
from scaserver.control.seams import NoParking, ParkedTransaction, UpstreamInfo

from .fakes import NOW, SERVER, Rig, fault_of, result_of

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


@attrs.define
class FakeParking:
    items: Sequence[ParkedTransaction] = PARKED
    upstream: Sequence[UpstreamInfo] = (UPSTREAM,)

    def parked(self) -> Sequence[ParkedTransaction]:
        return self.items

    def registrations(self) -> Sequence[UpstreamInfo]:
        return self.upstream

    def registration(self, aor: str) -> UpstreamInfo | None:
        return next((info for info in self.upstream if info.aor in (aor, f"sip:{aor}")), None)


def rig(parking: FakeParking | None = None) -> Rig:
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
