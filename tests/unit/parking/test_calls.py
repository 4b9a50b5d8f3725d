"""Calls to an SCA shared line wake its members' mobiles (push-and-parking.md 6.11, T20),
through the whole SIP core with its push service and call parking."""

from __future__ import annotations

import itertools

from scaserver.parking.parked import ParkingLot, ParkingSettings
from scaserver.push.gateway import Outcome
from scaserver.sca.line import SharedLine
from scaserver.sip.message import Headers, Peer, Request, Transport
from tests.builders import make_core
from tests.push_rig import DESK, PBX, Rig, equip, register_as

LINE = "sip:line1@example.com"
MEMBER = "sip:202@example.com"
D1 = Peer(Transport.UDP, "192.0.2.81", 5060)
D2 = Peer(Transport.UDP, "192.0.2.82", 5060)
M3 = Peer(Transport.UDP, "192.0.2.83", 5062)
M3_WOKEN = Peer(Transport.UDP, "192.0.2.83", 6062)


def shared_line_rig(*, push_members: bool = True) -> Rig:
    line = SharedLine(LINE, 2, frozenset({"201", "202", MEMBER}), push_members=push_members)
    core = make_core(require_auth=False, lines=[line])
    counter = itertools.count(1)
    lot = ParkingLot(ParkingSettings(), id_factory=lambda: f"att-{next(counter)}")
    equip(core, lot)
    r = Rig(core)
    register_as(r, LINE, D1, f"<sip:line1@{D1.host}:{D1.port}>", call_id="d1")
    register_as(r, LINE, D2, f"<sip:line1@{D2.host}:{D2.port}>", call_id="d2")
    mobile = f"<sip:202@{M3.host}:{M3.port};pn-provider=apns;pn-prid=TOK3;pn-param=T.app.voip>"
    register_as(r, MEMBER, M3, mobile, call_id="m3-a")
    return r


def line_invite(r: Rig) -> Request:
    invite = Request(
        "INVITE",
        LINE,
        Headers.of(
            ("Via", f"SIP/2.0/UDP {PBX.host}:{PBX.port};branch=z9hG4bKline1"),
            ("Max-Forwards", "70"),
            ("From", '"Alice" <sip:alice@example.com>;tag=pbx1'),
            ("To", f"<{LINE}>"),
            ("Call-ID", "line-call@pbx"),
            ("CSeq", "1 INVITE"),
            ("Contact", f"<sip:alice@{PBX.host}:{PBX.port}>"),
        ),
    )
    r.send(invite, PBX)
    return invite


def test_t20_call_to_a_shared_line_rings_the_desks_and_wakes_a_members_mobile() -> None:
    r = shared_line_rig()
    line_invite(r)
    (d1,), (d2,) = r.to(D1, "INVITE"), r.to(D2, "INVITE")
    (push,) = r.pushes()
    assert push.call is not None and push.call.line == (LINE, 1)
    assert (push.aor, push.prid) == (MEMBER, "TOK3")
    r.answer(d1, 180, D1, "d1")
    r.push_result(push, Outcome.SENT, 202)
    woken = f"<sip:202@{M3_WOKEN.host}:{M3_WOKEN.port};pn-provider=apns;pn-prid=TOK3;pn-param=T.app.voip>"
    register_as(r, MEMBER, M3_WOKEN, woken, call_id="m3-b")
    (branch,) = r.to(M3_WOKEN, "INVITE")
    assert "pn-prid" not in branch.uri
    r.answer(branch, 200, M3_WOKEN, "m3")
    assert r.statuses("line-call@pbx")[-1] == 200
    assert len(r.to(D1, "CANCEL")) == 1  # ringing: cancelled by SIP
    assert r.to(D2, "CANCEL") == []  # no provisional yet: cancelled when its 1xx arrives (RFC 3261 9.1)
    r.answer(d2, 180, D2, "d2")
    assert len(r.to(D2, "CANCEL")) == 1


def test_t20_a_members_desk_phone_registering_during_the_call_does_not_ring_for_the_line() -> None:
    r = shared_line_rig()
    line_invite(r)
    register_as(r, MEMBER, DESK, f"<sip:202@{DESK.host}:{DESK.port}>", call_id="desk-202")
    assert r.to(DESK, "INVITE") == []


def test_shared_line_without_push_members_does_not_push_members() -> None:
    r = shared_line_rig(push_members=False)
    line_invite(r)
    assert r.pushes() == [] and len(r.to(D1, "INVITE")) == 1 and len(r.to(D2, "INVITE")) == 1


def test_shared_line_with_only_a_members_mobile_parks_instead_of_480() -> None:
    line = SharedLine(LINE, 2, frozenset({MEMBER}), push_members=True)
    core = make_core(require_auth=False, lines=[line])
    lot = ParkingLot(ParkingSettings(), id_factory=lambda: "att-1")
    equip(core, lot)
    r = Rig(core)
    mobile = f"<sip:202@{M3.host}:{M3.port};pn-provider=apns;pn-prid=TOK3;pn-param=T.app.voip>"
    register_as(r, MEMBER, M3, mobile, call_id="m3-a")
    line_invite(r)
    assert len(r.pushes()) == 1 and r.statuses("line-call@pbx") == [180]


def test_member_aors_of_a_line() -> None:
    line = SharedLine(LINE, 2, frozenset({"201", "202@Example.COM", "sip:203@example.com", LINE}))
    assert line.member_aors() == ("sip:201@example.com", "sip:202@example.com", "sip:203@example.com")
