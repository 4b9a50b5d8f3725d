"""The push mid-registrar and call parking inside the SIP core (push-and-parking.md sections
3, 6 and 7): a whole SipRouter with its push service and call parking, driven with messages as the network
would, timers fired from the StartTimer actions, push results fed back as the edge does.

Actors: P the upstream PBX, D a desk phone (no push), M1/M2 mobiles (RFC 8599 contacts).
"""

from __future__ import annotations

import itertools
import os
import subprocess
import sys

from scaserver.parking.calls import fallback_tag
from scaserver.parking.events import ParkEnded, ParkStarted, WakeObserved
from scaserver.parking.parked import ParkingLot, ParkingSettings
from scaserver.push.facts import PushAnswered, PushesAborted, PushOutcome
from scaserver.push.gateway import Outcome, PushType
from scaserver.push.policy import TokenInvalidated
from scaserver.registrar.binding import BindingRemoved, RemovalReason
from scaserver.registrar.midregevents import RegisterDecided
from scaserver.registrar.upstream import UpstreamState
from scaserver.sip.headers import contacts
from scaserver.sip.message import Peer, Request, Transport
from scaserver.sip.parser import parse_message
from tests.builders import make_core
from tests.push_rig import (
    AGGREGATE,
    AOR,
    DESK,
    M1,
    M1_WOKEN,
    M2,
    PBX,
    Rig,
    equip,
    pn,
    registered,
    rig,
    wakes,
)

# ------------------------------------------------------------------------------ T1, T2


def test_t1_mid_registrar_relays_the_challenge_and_writes_the_binding_only_on_2xx() -> None:
    r = rig()
    request = r.register(M1, f"sip:200@{M1.host}:{M1.port};{pn('TOK1')}", call_id="m1-a", cseq=1)
    forwarded = r.to(PBX, "REGISTER")[-1]
    assert forwarded.uri == request.uri
    assert forwarded.headers.values("Contact") == (AGGREGATE,)
    assert forwarded.headers.get("Feature-Caps") == '*;+sip.pns="apns"'
    r.pbx_answers_last_register(401)
    assert r.responses_to(M1)[-1].status == 401
    assert r.core.registrar.location.bindings(AOR) == ()
    r.register(M1, f"sip:200@{M1.host}:{M1.port};{pn('TOK1')}", call_id="m1-a", cseq=2, authorization=True)
    assert "Authorization" in r.to(PBX, "REGISTER")[-1].headers
    r.pbx_answers_last_register(200)
    ok = r.responses_to(M1)[-1]
    assert ok.status == 200
    assert ok.headers.get("Feature-Caps") == '*;+sip.pns="apns"'
    assert [str(c.uri) for c in contacts(ok)] == [f"sip:200@{M1.host}:{M1.port};{pn('TOK1')}"]  # type: ignore[union-attr]
    (binding,) = r.core.registrar.location.bindings(AOR)
    device = r.push.device(binding.key)
    assert device is not None and device.push_capable and device.coordinates.prid == "TOK1"
    registration = r.push.midregistrar.registration(AOR)  # type: ignore[union-attr]
    assert registration is not None and registration.state is UpstreamState.REGISTERED


def test_t2_a_second_device_is_forwarded_and_the_upstream_still_sees_one_contact() -> None:
    r = registered(desk=False)
    r.register(M2, f"sip:200@{M2.host}:{M2.port}", call_id="m2-a", cseq=1)
    assert r.of(RegisterDecided)[-1].rule == "1"
    r.pbx_answers_last_register(401)
    assert r.responses_to(M2)[-1].status == 401
    r.register(M2, f"sip:200@{M2.host}:{M2.port}", call_id="m2-a", cseq=2, authorization=True)
    r.pbx_answers_last_register(200)
    assert {tuple(req.headers.values("Contact")) for req in r.to(PBX, "REGISTER")} == {(AGGREGATE,)}
    assert len(r.core.registrar.location.bindings(AOR)) == 2
    ok = r.responses_to(M2)[-1]
    assert ok.status == 200 and "Feature-Caps" not in ok.headers
    assert sorted(str(c.uri) for c in contacts(ok)) == [  # type: ignore[union-attr]
        f"sip:200@{M1.host}:{M1.port};{pn('TOK1')}",
        f"sip:200@{M2.host}:{M2.port}",
    ]


# ------------------------------------------------------------------------------ T8


def test_t8_desk_phone_busy_mobile_pushed_wakes_gets_the_branch_and_answers() -> None:
    r = registered()
    registers_before = len(r.to(PBX, "REGISTER"))
    invite = r.invite()
    (started,) = r.of(ParkStarted)
    (push,) = r.pushes()
    assert (push.type, push.prid, push.call.call_id if push.call else None) == (
        PushType.CALL,
        "TOK1",
        "call-1@pbx",
    )
    assert [resp.status for resp in r.responses_to(PBX) if resp.headers.get("CSeq") == "1 INVITE"] == [180]
    (to_desk,) = r.to(DESK, "INVITE")
    r.answer(to_desk, 486, DESK, "desk")
    assert [resp.status for resp in r.responses_to(PBX) if "INVITE" in (resp.headers.get("CSeq") or "")] == [
        180
    ]
    r.advance(0.05)
    r.push_result(push, Outcome.SENT, 202)
    r.advance(0.3)
    wakes(r, M1_WOKEN, "TOK1", "m1-b")
    (to_mobile,) = r.to(M1_WOKEN, "INVITE")
    assert "pn-" not in to_mobile.uri and to_mobile.uri == f"sip:200@{M1_WOKEN.host}:{M1_WOKEN.port}"
    r.answer(to_mobile, 180, M1_WOKEN, "mob")
    r.answer(to_mobile, 200, M1_WOKEN, "mob")
    finals = [resp.status for resp in r.responses_to(PBX) if resp.headers.get("CSeq") == "1 INVITE"]
    assert finals == [180, 180, 200]
    assert invite.call_id == "call-1@pbx"
    (ended,) = r.of(ParkEnded)
    assert ended.park_id == started.park_id
    (woke,) = r.of(WakeObserved)
    assert woke.latency_ms == 300
    # The upstream saw one aggregate contact for the AoR throughout.
    registers = r.to(PBX, "REGISTER")
    assert len(registers) == registers_before + 2
    assert {tuple(req.headers.values("Contact")) for req in registers} == {(AGGREGATE,)}
    assert len(r.pushes()) == 1


# ------------------------------------------------------------------------------ races


def test_r1_register_confirmed_before_the_push_reply_creates_the_branch_once() -> None:
    r = registered(desk=False)
    r.invite()
    (push,) = r.pushes()
    wakes(r, M1_WOKEN, "TOK1", "m1-b")
    assert len(r.to(M1_WOKEN, "INVITE")) == 1
    (woke,) = r.of(WakeObserved)
    assert woke.latency_ms is None
    r.push_result(push, Outcome.SENT, 202)
    assert len(r.to(M1_WOKEN, "INVITE")) == 1
    assert len(r.pushes()) == 1


def test_r7_cancel_while_parked_answers_487_at_once_and_no_branch_follows() -> None:
    r = registered(desk=False)
    invite = r.invite()
    (push,) = r.pushes()
    cancel = Request(
        "CANCEL",
        invite.uri,
        invite.headers.set("CSeq", "1 CANCEL").remove("Contact"),
    )
    r.send(cancel, PBX)
    statuses = [(resp.status, resp.headers.get("CSeq")) for resp in r.responses_to(PBX)]
    assert (200, "1 CANCEL") in statuses and (487, "1 INVITE") in statuses
    assert r.of(PushesAborted) != []
    # R7: the cancel push goes out only once the call push was accepted.
    assert r.pushes(PushType.CANCEL) == []
    r.push_result(push, Outcome.SENT, 202)
    (cancel_push,) = r.pushes(PushType.CANCEL)
    assert cancel_push.reason == "caller-cancelled"
    wakes(r, M1_WOKEN, "TOK1", "m1-b")  # R8: registration completes, no branch
    assert r.to(M1_WOKEN, "INVITE") == []
    assert r.responses_to(M1_WOKEN)[-1].status == 200


def test_r5_two_devices_registering_back_to_back_get_one_branch_each() -> None:
    r = registered(desk=False, second=True)
    r.invite()
    assert {p.prid for p in r.pushes()} == {"TOK1", "TOK2"}
    # Both wake REGISTERs reach us before the upstream answered either (serialised per AoR).
    m1 = f"sip:200@{M1_WOKEN.host}:{M1_WOKEN.port};{pn('TOK1')}"
    m2_woken = Peer(Transport.UDP, M2.host, 6072)
    m2 = f"sip:200@{m2_woken.host}:{m2_woken.port};{pn('TOK2')}"
    r.register(M1_WOKEN, m1, call_id="m1-b", cseq=1, authorization=True)
    r.register(m2_woken, m2, call_id="m2-b", cseq=1, authorization=True)
    r.pbx_answers_last_register(200)  # the first forward; the second is sent next
    r.pbx_answers_last_register(200)
    (to_m1,) = r.to(M1_WOKEN, "INVITE")
    (to_m2,) = r.to(m2_woken, "INVITE")
    r.answer(to_m1, 180, M1_WOKEN, "m1")
    r.answer(to_m2, 200, m2_woken, "m2")
    assert [resp.status for resp in r.responses_to(PBX) if resp.headers.get("CSeq") == "1 INVITE"][-1] == 200
    assert r.to(M1_WOKEN, "CANCEL") != []
    assert r.pushes(PushType.CANCEL) == []  # M1 rang: SIP tells it


def test_r14_token_invalidated_with_nothing_else_pending_answers_480_at_once() -> None:
    r = registered(desk=False)
    r.advance(60.0)
    r.invite()
    (push,) = r.pushes()
    r.push_result(push, Outcome.INVALID, 410, body=r.now - 10)
    finals = [resp for resp in r.responses_to(PBX) if resp.headers.get("CSeq") == "1 INVITE"]
    assert [resp.status for resp in finals] == [180, 480]
    assert finals[-1].headers.get("Reason") == 'SIP;cause=480;text="push wake-up timeout"'
    assert r.of(TokenInvalidated) != []
    assert [f.outcome for f in r.of(PushAnswered)] == [PushOutcome.INVALID]
    (binding,) = r.core.registrar.location.bindings(AOR)
    device = r.push.device(binding.key)
    assert device is not None and not device.push_capable
    r.invite("call-2@pbx")  # the next call sends no push
    assert len(r.pushes()) == 1


def test_r13_a_binding_confirmed_after_the_invalidation_time_keeps_its_push() -> None:
    r = registered(desk=False)
    r.invite()
    (push,) = r.pushes()
    r.push_result(push, Outcome.INVALID, 410, body=r.now - 10_000)
    (binding,) = r.core.registrar.location.bindings(AOR)
    device = r.push.device(binding.key)
    assert device is not None and device.push_capable


def test_r18_upstream_down_the_wake_register_gets_408_and_the_caller_the_desk_486() -> None:
    r = registered()
    r.invite()
    (push,) = r.pushes()
    r.answer(r.to(DESK, "INVITE")[0], 486, DESK, "desk")
    r.push_result(push, Outcome.SENT, 202)
    r.advance(0.3)
    r.register(M1_WOKEN, f"sip:200@{M1_WOKEN.host}:{M1_WOKEN.port};{pn('TOK1')}", call_id="m1-b", cseq=1)
    r.advance(5.0)  # upstream_timeout: the PBX never answers
    assert [resp.status for resp in r.responses_to(M1_WOKEN)] == [408]
    assert r.to(M1_WOKEN, "INVITE") == []
    r.advance(10.0)  # wake_timeout: the push ends no-wake, nothing can come any more
    finals = [resp.status for resp in r.responses_to(PBX) if resp.headers.get("CSeq") == "1 INVITE"]
    assert finals[:2] == [180, 486] and set(finals) == {180, 486}  # the 486 retransmitted until ACKed
    assert len(r.core.registrar.location.bindings(AOR)) == 2  # bindings are kept


def test_park_timeout_without_any_branch_answers_480() -> None:
    r = registered(desk=False, park_timeout=5.0, wake_timeout=10.0)
    r.invite()
    (push,) = r.pushes()
    r.push_result(push, Outcome.SENT, 202)
    r.advance(5.0)
    finals = [resp.status for resp in r.responses_to(PBX) if resp.headers.get("CSeq") == "1 INVITE"]
    assert finals == [180, 480]
    assert [p.reason for p in r.pushes(PushType.CANCEL)] == ["timeout"]


def test_a_call_to_an_aor_without_push_bindings_is_ordinary_forking() -> None:
    r = rig()
    r.device_registers(DESK, f"sip:200@{DESK.host}:{DESK.port}", call_id="d-a")
    r.invite()
    assert r.of(ParkStarted) == [] and r.pushes() == []
    (to_desk,) = r.to(DESK, "INVITE")
    r.answer(to_desk, 486, DESK, "desk")
    assert [resp.status for resp in r.responses_to(PBX) if resp.headers.get("CSeq") == "1 INVITE"] == [486]


def test_park_limit_reached_forks_ordinarily() -> None:
    r = registered(max_total=0)
    r.invite()
    assert r.pushes() == []
    (to_desk,) = r.to(DESK, "INVITE")
    r.answer(to_desk, 486, DESK, "desk")
    assert [resp.status for resp in r.responses_to(PBX) if resp.headers.get("CSeq") == "1 INVITE"] == [486]


def test_t2_t3_refresh_from_the_same_source_is_absorbed_and_from_another_is_forwarded() -> None:
    r = registered(desk=False)
    registers = len(r.to(PBX, "REGISTER"))
    contact = f"sip:200@{M1.host}:{M1.port};{pn('TOK1')}"
    r.register(M1, contact, call_id="m1-a", cseq=3)
    assert r.responses_to(M1)[-1].status == 200
    assert len(r.to(PBX, "REGISTER")) == registers
    assert r.of(RegisterDecided)[-1].rule == "absorb"
    r.register(M1_WOKEN, contact, call_id="m1-a", cseq=4)  # T3: another source port
    assert len(r.to(PBX, "REGISTER")) == registers + 1
    assert r.of(RegisterDecided)[-1].rule == "5"


def test_last_apns_device_expiring_stays_dormant_and_keeps_the_aggregate_upstream() -> None:
    r = registered(desk=False)
    registers = len(r.to(PBX, "REGISTER"))
    r.advance(601.0)
    assert r.core.registrar.location.bindings(AOR) == ()
    assert len(r.push.dormant(AOR)) == 1  # 4.5 extend: kept, push-only
    assert all(m.headers.get("Expires") != "0" for m in r.to(PBX, "REGISTER")[registers:])


def test_upstream_rejecting_our_refresh_removes_the_bindings_as_upstream_rejected() -> None:
    r = rig()
    contact = f"sip:200@{M1.host}:{M1.port};{pn('TOK1')}"
    r.register(M1, contact, call_id="m1-a", cseq=1, expires=3600, authorization=True)
    r.pbx_answers_last_register(200)
    r.advance(2413.0)  # 3.5: refreshed 1188 s (refresh_fraction 0.33 of 3600) before expiry
    refresh = r.to(PBX, "REGISTER")[-1]
    assert refresh.call_id == f"reg-{AOR}"
    r.pbx_answers_last_register(403)
    removed = r.of(BindingRemoved)
    assert [f.reason for f in removed] == [RemovalReason.UPSTREAM_REJECTED]
    assert r.core.registrar.location.bindings(AOR) == ()
    binding = removed[0].binding
    assert r.push.device(binding.key) is None


def test_push_on_the_core_registrar_parks_and_a_re_registration_gets_the_branch() -> None:
    core = make_core(require_auth=False)
    counter = itertools.count(1)
    lot = ParkingLot(ParkingSettings(), id_factory=lambda: f"att-{next(counter)}")
    equip(core, lot)
    r = Rig(core)
    contact = f"sip:200@{M1.host}:{M1.port};{pn('TOK1')}"
    r.register(M1, contact, call_id="m1-a", cseq=1)
    assert r.responses_to(M1)[-1].status == 200 and r.to(PBX) == []
    r.invite(uri=AOR)
    (push,) = r.pushes()
    r.push_result(push, Outcome.SENT, 202)
    r.register(M1_WOKEN, f"sip:200@{M1_WOKEN.host}:{M1_WOKEN.port};{pn('TOK1')}", call_id="m1-b", cseq=1)
    (branch,) = r.to(M1_WOKEN, "INVITE")
    r.answer(branch, 200, M1_WOKEN, "mob")
    assert [resp.status for resp in r.responses_to(PBX) if resp.headers.get("CSeq") == "1 INVITE"][-1] == 200


FALLBACK_INVITE = (
    b"INVITE sip:mobile@example.com SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK-park\r\n"
    b"From: <sip:pbx@example.com>;tag=pbx1\r\n"
    b"To: <sip:mobile@example.com>\r\n"
    b"Call-ID: fallback-1@pbx\r\n"
    b"CSeq: 1 INVITE\r\n"
    b"Max-Forwards: 70\r\n"
    b"Content-Length: 0\r\n\r\n"
)


def _fallback_tag_in_a_fresh_interpreter(hash_seed: str) -> str:
    script = (
        "import sys; from scaserver.parking.calls import fallback_tag;"
        "from scaserver.sip.parser import parse_message;"
        "print(fallback_tag(parse_message(sys.stdin.buffer.read())))"
    )
    env = {**os.environ, "PYTHONHASHSEED": hash_seed}
    done = subprocess.run(
        [sys.executable, "-c", script], input=FALLBACK_INVITE, env=env, capture_output=True, check=True
    )
    return done.stdout.decode().strip()


def test_the_480_of_a_refused_park_has_the_same_to_tag_whatever_the_hash_seed() -> None:
    request = parse_message(FALLBACK_INVITE)
    assert isinstance(request, Request)
    tag = fallback_tag(request)
    assert tag.startswith("pr") and len(tag) == 10 and tag[2:].isdigit()
    assert _fallback_tag_in_a_fresh_interpreter("1") == _fallback_tag_in_a_fresh_interpreter("2") == tag
    other = parse_message(FALLBACK_INVITE.replace(b"CSeq: 1", b"CSeq: 2"))
    assert isinstance(other, Request) and fallback_tag(other) != tag
