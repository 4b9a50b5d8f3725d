"""ul.* methods (rpc.md 3.3)."""

from __future__ import annotations

import zlib

import attrs

from scaserver.control.usrloc import TABLE_SIZE, hash_id

from .fakes import CONTACT, NOW, RECORD, FakeLocation, Rig, fault_of, result_of

AOR = "2001@pbx.example.com"


def test_lookup() -> None:
    result = result_of(Rig(), "ul.lookup", ["location", AOR])
    assert result["AoR"] == AOR
    first, second = (entry["Contact"] for entry in result["Contacts"])
    assert first == {
        "Address": "sip:2001@10.0.1.2:5060",
        "Expires": 533,
        "Q": 0.5,
        "Call-ID": "reg1@10.0.1.2",
        "CSeq": 12,
        "User-Agent": "PolycomVVX-VVX_411-UA/6.3.0",
        "Received": "udp:10.0.1.2:5060",
        "Path": None,
        "State": "CS_SYNC",
        "Flags": 0,
        "CFlags": 0,
        "Socket": None,
        "Methods": None,
        "Ruid": None,
        "Instance": None,
        "Reg-Id": 0,
        "Server-Id": 0,
        "Tcpconn-Id": -1,
        "Keepalive": 0,
        "Last-Keepalive": 0,
        "KA-Roundtrip": 0,
        "Last-Modified": 0,
        "Push": {
            "provider": "apns",
            "prid_sha256": "ab" * 32,
            "param": "team.voip",
            "source": "rfc8599",
            "device_type": None,
            "keepalive": "wake",
            "push_capable": True,
            "dormant": False,
            "invalidated_at": None,
            "last_push_at": None,
            "last_wake_ms": None,
        },
    }
    assert second["Expires"] == "permanent"


def test_expired_contact_and_path() -> None:
    record = attrs.evolve(
        RECORD, contacts=(attrs.evolve(CONTACT, expires_at=NOW - 1, path=("<sip:p1>", "<sip:p2>")),)
    )
    contact = result_of(Rig(location=FakeLocation(records=[record])), "ul.lookup", ["location", AOR])[
        "Contacts"
    ][0]
    assert contact["Contact"]["Expires"] == "expired"
    assert contact["Contact"]["Path"] == "<sip:p1>,<sip:p2>"


def test_lookup_faults() -> None:
    rig = Rig()
    assert fault_of(rig, "ul.lookup", ["location", "9@x"]) == (404, 404, "AOR not found in location table")
    assert fault_of(rig, "ul.lookup", ["subscriber", AOR]) == (404, 404, "Domain table not found")
    assert fault_of(rig, "ul.lookup", ["location"])[1] == -32602


def test_dump() -> None:
    result = result_of(Rig(), "ul.dump")
    domain = result["Domains"][0]["Domain"]
    assert domain["Domain"] == "location"
    assert domain["Size"] == TABLE_SIZE
    assert domain["Stats"] == {"Records": 1, "Max-Slots": 1}
    info = domain["AoRs"][0]["Info"]
    assert info["AoR"] == AOR
    assert info["HashID"] == zlib.crc32(AOR.encode()) == hash_id(AOR)
    assert len(info["Contacts"]) == 2


def test_dump_brief() -> None:
    result = result_of(Rig(), "ul.dump", ["brief"])
    assert result["Domains"][0]["Domain"]["AoRs"] == [{"AoR": AOR}]
    assert result_of(Rig(), "ul.dump", ["BRIEF"])["Domains"][0]["Domain"]["AoRs"] == [{"AoR": AOR}]


def test_dump_empty() -> None:
    result = result_of(Rig(location=FakeLocation(records=[])), "ul.dump")
    assert result["Domains"][0]["Domain"]["Stats"] == {"Records": 0, "Max-Slots": 0}


def test_rm() -> None:
    rig = Rig()
    assert result_of(rig, "ul.rm", ["location", AOR]) is None
    assert rig.location.calls == [("rm", (AOR,))]
    assert fault_of(rig, "ul.rm", ["location", AOR]) == (404, 404, "AOR not found")
    assert fault_of(rig, "ul.rm", ["loc", AOR]) == (404, 404, "Domain table not found")


def test_rm_contact() -> None:
    rig = Rig()
    assert result_of(rig, "ul.rm_contact", ["location", AOR, "sip:2001@10.0.1.2:5060"]) is None
    assert rig.location.calls == [("rm_contact", (AOR, "sip:2001@10.0.1.2:5060"))]
    assert fault_of(rig, "ul.rm_contact", ["location", AOR, "sip:2001@10.0.1.2:5060"]) == (
        404,
        404,
        "Contact not found",
    )
    assert fault_of(rig, "ul.rm_contact", ["location", "9@x", "sip:a@b"]) == (404, 404, "AOR not found")
    assert fault_of(rig, "ul.rm_contact", ["x", AOR, "sip:a@b"]) == (404, 404, "Domain table not found")


def test_flush() -> None:
    rig = Rig()
    assert result_of(rig, "ul.flush") is None
    assert rig.location.calls == [("flush", ())]
