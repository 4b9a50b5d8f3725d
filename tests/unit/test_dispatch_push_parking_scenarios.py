"""The end-to-end scenarios of push-and-parking.md section 8 (T4-T19) on the whole SIP core:
a SipRouter with its push service and call parking driven with SIP messages from P (the PBX), D (a desk
phone) and M1/M2 (mobile apps), push gateway answers fed back as the edge does, timers fired
on a simulated clock (tests/push_rig.py).  T1, T2, T3 and T8 are in tests/unit/test_dispatch_push_parking.py;
T17 (gateway retry with the same id) in tests/integration/test_pushgateway.py.
"""

from __future__ import annotations

from scaserver.parking.events import EndReason, ParkEnded, ParkStarted, WakeMissed
from scaserver.parking.parked import EarlyMedia
from scaserver.push.facts import PushAnswered, PushOutcome
from scaserver.push.gateway import Outcome, PushType
from scaserver.registrar.binding import BindingRemoved, RemovalReason
from scaserver.registrar.midregevents import RegisterDecided
from scaserver.registrar.midregistrar import mrct_of
from scaserver.registrar.midregsettings import Mode
from scaserver.registrar.upstream import UpstreamState
from scaserver.sip.headers import contacts
from scaserver.sip.message import Peer, Request
from scaserver.sip.uri import SipUri
from tests.push_rig import (
    AGGREGATE,
    ANSWERED_ELSEWHERE,
    AOR,
    DESK,
    M1,
    M1_WOKEN,
    M2,
    M2_WOKEN,
    PBX,
    REFRESH_AT,
    SDP,
    WAKE_TIMEOUT_REASON,
    Rig,
    contact_of,
    registered,
    rig,
    wakes,
)


def listed(r: Rig, peer: Peer) -> list[str]:
    """The Contact URIs of the last response to ``peer`` (a REGISTER 200 lists the bindings)."""
    found = contacts(r.responses_to(peer)[-1])
    assert isinstance(found, list)
    return [str(contact.uri) for contact in found]


def upstream_contact(r: Rig) -> SipUri:
    """The (single) Contact URI of the last REGISTER P got."""
    found = contacts(r.new_to(PBX, "REGISTER")[-1])
    assert isinstance(found, list) and len(found) == 1
    uri = found[0].uri
    assert isinstance(uri, SipUri)
    return uri


# ------------------------------------------------------------------------------ T4


def test_t4_self_refresh_reuses_our_call_id_and_renews_the_upstream_expiry() -> None:
    r = rig()
    r.device_registers(M1, contact_of(M1, "TOK1"), call_id="m1-a", expires=3600)
    registered_at = r.now
    assert r.upstream().expires_at == registered_at + 3600
    before = r.mark()
    r.advance(REFRESH_AT - 0.01)
    assert r.since(before) == []  # nothing before the threshold
    r.advance(0.01)
    ((refresh, peer),) = r.since(before)
    assert peer == PBX and isinstance(refresh, Request)
    assert (refresh.method, refresh.uri) == ("REGISTER", "sip:example.com")
    assert (refresh.call_id, refresh.headers.get("CSeq")) == (f"reg-{AOR}", "1 REGISTER")
    assert refresh.headers.values("Contact") == (AGGREGATE,)
    assert refresh.headers.get("Expires") == "3600"
    assert "Authorization" not in refresh.headers
    r.pbx_answers_last_register(200)
    assert r.upstream().state is UpstreamState.REGISTERED
    assert r.upstream().expires_at == r.now + 3600
    assert r.responses_to(M1)[-1].headers.get("CSeq") == "2 REGISTER"  # the device saw nothing
    # The next refresh keeps the dialog: same Call-ID, CSeq one higher.
    r.advance(REFRESH_AT)
    refresh = r.new_to(PBX, "REGISTER")[-1]
    assert (refresh.call_id, refresh.headers.get("CSeq")) == (f"reg-{AOR}", "2 REGISTER")


def test_t4_challenged_self_refresh_flags_the_aor_and_the_next_device_refresh_is_forwarded() -> None:
    r = rig()
    contact = contact_of(M1, "TOK1")
    r.device_registers(M1, contact, call_id="m1-a", expires=3600)
    r.register(M1, contact, call_id="m1-a", cseq=3, expires=3600)
    assert r.of(RegisterDecided)[-1].rule == "absorb"  # before: absorbed
    r.advance(REFRESH_AT)
    r.pbx_answers_last_register(401)  # upstream_auth = none: no credentials of ours
    assert r.upstream().upstream_auth_needed
    assert r.new_to(PBX, "REGISTER")[-1].call_id == f"reg-{AOR}"  # not re-sent with credentials
    registers = len(r.new_to(PBX, "REGISTER"))
    r.register(M1, contact, call_id="m1-a", cseq=4, expires=3600)
    assert r.of(RegisterDecided)[-1].rule == "4"
    forwarded = r.new_to(PBX, "REGISTER")
    assert len(forwarded) == registers + 1 and forwarded[-1].call_id == "m1-a"
    r.pbx_answers_last_register(401)
    assert r.responses_to(M1)[-1].status == 401  # the device answers the challenge itself
    r.register(M1, contact, call_id="m1-a", cseq=5, expires=3600, authorization=True)
    r.pbx_answers_last_register(200)
    assert r.responses_to(M1)[-1].status == 200
    assert r.upstream().expires_at == r.now + 3600  # the piggy-back refresh renewed the aggregate


# ------------------------------------------------------------------------------ T5, T6


def test_t5_a_non_last_device_leaving_refreshes_the_aggregate_instead_of_removing_it() -> None:
    r = registered(desk=False, second=True)
    r.register(M2, contact_of(M2, "TOK2"), call_id="m2-a", cseq=3, expires=0)
    assert r.of(RegisterDecided)[-1].rule == "3"
    forwarded = r.new_to(PBX, "REGISTER")[-1]
    assert forwarded.call_id == "m2-a"
    assert forwarded.headers.values("Contact") == (AGGREGATE,)
    assert forwarded.headers.get("Expires") == "3600"
    assert len(r.core.registrar.location.bindings(AOR)) == 2  # nothing removed before the 2xx
    r.pbx_answers_last_register(200)
    (removed,) = r.of(BindingRemoved)
    assert removed.reason is RemovalReason.UNREGISTERED and removed.binding.contact == contact_of(M2, "TOK2")
    (left,) = r.core.registrar.location.bindings(AOR)
    assert left.contact == contact_of(M1, "TOK1")
    ok = r.responses_to(M2)[-1]
    assert ok.status == 200 and listed(r, M2) == [contact_of(M1, "TOK1")]
    assert r.upstream().state is UpstreamState.REGISTERED


def test_t6_the_last_device_leaving_removes_the_aggregate_upstream() -> None:
    r = registered(desk=False)
    r.register(M1, contact_of(M1, "TOK1"), call_id="m1-a", cseq=3, expires=0)
    forwarded = r.new_to(PBX, "REGISTER")[-1]
    assert forwarded.headers.values("Contact") == (AGGREGATE,)
    assert forwarded.headers.get("Expires") == "0"
    r.pbx_answers_last_register(200)
    assert r.responses_to(M1)[-1].status == 200
    assert r.core.registrar.location.bindings(AOR) == ()
    assert [f.reason for f in r.of(BindingRemoved)] == [RemovalReason.UNREGISTERED]
    assert r.upstream().state is UpstreamState.IDLE
    before = r.mark()
    r.advance(4000.0)
    assert r.since(before) == []  # no unregister of our own, no refresh


def test_t6_a_device_that_just_stops_is_unregistered_upstream_by_us_at_its_expiry() -> None:
    r = rig()
    contact = contact_of(M1, "TOK1", provider="fcm")  # keep-alive "wake", not "extend" (4.5)
    r.device_registers(M1, contact, call_id="m1-a")
    registers = len(r.new_to(PBX, "REGISTER"))
    r.advance(599.0)
    assert len(r.new_to(PBX, "REGISTER")) == registers
    r.advance(2.0)
    assert r.core.registrar.location.bindings(AOR) == ()
    (expired,) = r.new_to(PBX, "REGISTER")[registers:]
    assert (expired.call_id, expired.headers.get("CSeq")) == (f"reg-{AOR}", "1 REGISTER")
    assert expired.headers.values("Contact") == (AGGREGATE,)
    assert expired.headers.get("Expires") == "0"
    r.pbx_answers_last_register(200)
    assert r.upstream().state is UpstreamState.IDLE


# ------------------------------------------------------------------------------ T7


def test_t7_unsupported_provider_is_refused_555_and_never_forwarded() -> None:
    r = rig()
    r.register(M1, f"sip:200@{M1.host}:{M1.port};pn-provider=acme;pn-prid=X", call_id="m1-a", cseq=1)
    (refusal,) = r.responses_to(M1)
    assert (refusal.status, refusal.reason) == (555, "Push Notification Service Not Supported")
    assert r.to(PBX) == []
    assert r.core.registrar.location.bindings(AOR) == ()


def test_t7_a_capability_query_gets_one_feature_caps_per_supported_provider() -> None:
    r = rig()
    query = f"sip:200@{M1.host}:{M1.port};pn-provider"
    r.device_registers(M1, query, call_id="m1-a")
    assert "Feature-Caps" not in r.new_to(PBX, "REGISTER")[-1].headers  # we push nothing for it
    ok = r.responses_to(M1)[-1]
    assert ok.status == 200
    assert ok.headers.lines("Feature-Caps") == (
        '*;+sip.pns="apns"',
        '*;+sip.pns="fcm"',
        '*;+sip.pns="webpush"',
    )
    (binding,) = r.core.registrar.location.bindings(AOR)
    assert r.push.device(binding.key) is None  # not push-capable


def test_t7_a_request_already_carrying_feature_caps_is_accepted_but_not_pushed_by_us() -> None:
    r = rig()
    contact = contact_of(M1, "TOK1")
    caps = (("Feature-Caps", '*;+sip.pns="apns"'),)
    r.register(M1, contact, call_id="m1-a", cseq=1, extra=caps)
    r.pbx_answers_last_register(401)
    r.register(M1, contact, call_id="m1-a", cseq=2, extra=caps, authorization=True)
    r.pbx_answers_last_register(200)
    ok = r.responses_to(M1)[-1]
    assert ok.status == 200 and "Feature-Caps" not in ok.headers
    (binding,) = r.core.registrar.location.bindings(AOR)
    assert r.push.device(binding.key) is None
    # A call rings the contact directly and pushes nothing; the pn-* parameters stay in the
    # Request-URI for the entity closer to the UA that does push (RFC 8599 proxy behaviour).
    r.invite()
    assert r.pushes() == [] and r.of(ParkStarted) == []
    (branch,) = r.new_to(M1, "INVITE")
    assert branch.uri == contact


# ------------------------------------------------------------------------------ T9, T10


def test_t9_nobody_wakes_and_the_desk_declined_so_p_gets_486_at_wake_timeout() -> None:
    r = registered()
    invite = r.invite()
    (push,) = r.pushes()
    (to_desk,) = r.new_to(DESK, "INVITE")
    r.answer(to_desk, 486, DESK, "desk")
    r.push_result(push, Outcome.SENT, 202)
    r.advance(9.99)
    assert r.statuses() == [180]  # D's 486 did not end the call
    r.advance(0.01)
    assert r.statuses() == [180, 486]  # wake_timeout (10 s), not park_timeout (30 s)
    assert (r.invite_responses()[-1].headers.get("To") or "").endswith("tag=desk")
    (missed,) = r.of(WakeMissed)
    (ended,) = r.of(ParkEnded)
    assert (ended.reason, ended.rule) == (EndReason.EXHAUSTED, "F3")
    assert r.pushes(PushType.CANCEL) == []  # the attempt is over; nothing to stop
    r.ack(invite, r.invite_responses()[-1])
    r.advance(60.0)
    assert r.statuses() == [180, 486] and missed.attempt == push.id


def test_t9_nobody_wakes_and_no_desk_phone_p_gets_480_with_the_reason_at_wake_timeout() -> None:
    r = registered(desk=False)
    r.invite()
    (push,) = r.pushes()
    r.push_result(push, Outcome.SENT, 202)
    r.advance(9.99)
    assert r.statuses() == [180]
    r.advance(0.01)
    assert r.statuses() == [180, 480]
    final = r.invite_responses()[-1]
    assert final.headers.get("Reason") == WAKE_TIMEOUT_REASON
    assert [e.reason for e in r.of(ParkEnded)] == [EndReason.EXHAUSTED]


def test_t10_park_timeout_with_a_ringing_desk_keeps_it_ringing_until_the_proxy_ring_timeout() -> None:
    r = registered()
    invite = r.invite()
    (push,) = r.pushes()
    (to_desk,) = r.new_to(DESK, "INVITE")
    r.answer(to_desk, 180, DESK, "desk")
    r.push_result(push, Outcome.SENT, 202)
    r.advance(29.99)
    assert r.statuses() == [180, 180] and r.pushes(PushType.CANCEL) == []
    r.advance(0.01)
    (ended,) = r.of(ParkEnded)
    assert (ended.reason, ended.rule) == (EndReason.TIMEOUT, "F4")
    (cancel,) = r.pushes(PushType.CANCEL)
    assert (cancel.reason, cancel.prid, cancel.call.call_id if cancel.call else None) == (
        "timeout",
        "TOK1",
        "call-1@pbx",
    )
    assert r.statuses() == [180, 180] and r.to(DESK, "CANCEL") == []  # D keeps ringing
    wakes(r, M1_WOKEN, "TOK1", "m1-b")  # too late: no new branches
    assert r.to(M1_WOKEN, "INVITE") == []
    r.advance(180.0 - 30.0 - 0.01)
    assert r.statuses() == [180, 180]
    r.advance(0.01)  # timer C of the desk branch (core proxy, RFC 3261 16.8)
    (desk_cancel,) = r.to(DESK, "CANCEL")
    assert r.statuses() == [180, 180, 408]
    r.answer(desk_cancel, 200, DESK, "desk")
    r.answer(to_desk, 487, DESK, "desk")
    r.ack(invite, r.invite_responses()[-1])
    assert r.statuses() == [180, 180, 408]


# ------------------------------------------------------------------------------ T11, T12


def test_t11_cancel_while_parked_gets_487_one_cancel_push_and_no_later_branch() -> None:
    r = registered()
    invite = r.invite()
    (push,) = r.pushes()
    (to_desk,) = r.new_to(DESK, "INVITE")
    r.answer(to_desk, 180, DESK, "desk")
    r.push_result(push, Outcome.SENT, 202)
    r.advance(1.0)
    r.cancel(invite)
    cancel_answers = [m.status for m in r.responses_to(PBX) if m.headers.get("CSeq") == "1 CANCEL"]
    assert cancel_answers == [200]
    assert r.statuses() == [180, 180, 487]  # at once, D still to be told
    (to_desk_cancel,) = r.to(DESK, "CANCEL")
    (cancel_push,) = r.pushes(PushType.CANCEL)
    assert (cancel_push.reason, cancel_push.prid) == ("caller-cancelled", "TOK1")
    assert [(e.reason, e.rule) for e in r.of(ParkEnded)] == [(EndReason.CANCELLED, "F5")]
    r.answer(to_desk_cancel, 200, DESK, "desk")
    r.answer(to_desk, 487, DESK, "desk")
    assert r.statuses() == [180, 180, 487]  # D's 487 is not relayed a second time
    r.advance(2.0)
    wakes(r, M1_WOKEN, "TOK1", "m1-b")
    assert r.responses_to(M1_WOKEN)[-1].status == 200 and r.to(M1_WOKEN, "INVITE") == []
    assert len(r.pushes(PushType.CANCEL)) == 1


def test_t12_token_invalidated_answers_480_at_once_and_the_next_call_is_not_pushed() -> None:
    r = registered(desk=False)
    r.advance(1.0)
    r.invite()
    (push,) = r.pushes()
    r.push_result(push, Outcome.INVALID, 410)  # no invalidated_at: now
    assert r.statuses() == [180, 480]
    assert r.invite_responses()[-1].headers.get("Reason") == WAKE_TIMEOUT_REASON
    assert [f.outcome for f in r.of(PushAnswered)] == [PushOutcome.INVALID]
    (binding,) = r.core.registrar.location.bindings(AOR)
    device = r.push.device(binding.key)
    assert device is not None and not device.push_capable and device.invalidated_at == r.now
    r.invite("call-2@pbx")
    assert len(r.pushes()) == 1 and len(r.of(ParkStarted)) == 1
    (direct,) = r.new_to(M1, "INVITE")  # an ordinary binding now: rung, never pushed
    assert direct.call_id == "call-2@pbx" and direct.uri == f"sip:200@{M1.host}:{M1.port}"


# ------------------------------------------------------------------------------ T13


def two_mobiles_ringing(r: Rig) -> tuple[Request, Request]:
    """T13's start: M1 and M2 pushed, both woken and confirmed within 50 ms."""
    r.invite()
    pushes = r.pushes()
    assert [p.prid for p in pushes] == ["TOK1", "TOK2"]
    for push in pushes:
        r.push_result(push, Outcome.SENT, 202)
    r.advance(0.5)
    wakes(r, M1_WOKEN, "TOK1", "m1-b")
    r.advance(0.05)
    wakes(r, M2_WOKEN, "TOK2", "m2-b")
    (to_m1,) = r.new_to(M1_WOKEN, "INVITE")
    (to_m2,) = r.new_to(M2_WOKEN, "INVITE")
    return to_m1, to_m2


def test_t13_m2_answers_m1_ringing_gets_a_sip_cancel_and_no_cancel_push() -> None:
    r = registered(desk=False, second=True)
    to_m1, to_m2 = two_mobiles_ringing(r)
    r.answer(to_m1, 180, M1_WOKEN, "m1")
    r.answer(to_m2, 200, M2_WOKEN, "m2", body=SDP)
    assert r.statuses() == [180, 180, 200]
    assert (r.invite_responses()[-1].headers.get("To") or "").endswith("tag=m2")
    (cancel,) = r.to(M1_WOKEN, "CANCEL")
    assert cancel.headers.get("Reason") == ANSWERED_ELSEWHERE
    assert r.to(M2_WOKEN, "CANCEL") == []
    assert r.pushes(PushType.CANCEL) == []
    assert [e.reason for e in r.of(ParkEnded)] == [EndReason.ANSWERED]


def test_t13_m1_silent_when_m2_answers_gets_one_answered_elsewhere_cancel_push() -> None:
    r = registered(desk=False, second=True)
    to_m1, to_m2 = two_mobiles_ringing(r)
    r.answer(to_m2, 200, M2_WOKEN, "m2", body=SDP)
    assert r.statuses() == [180, 200]
    (cancel_push,) = r.pushes(PushType.CANCEL)
    assert (cancel_push.reason, cancel_push.prid) == ("answered-elsewhere", "TOK1")
    assert r.to(M1_WOKEN, "CANCEL") == []  # RFC 3261 9.1: not before a provisional
    r.answer(to_m1, 180, M1_WOKEN, "m1")
    (cancel,) = r.to(M1_WOKEN, "CANCEL")
    assert cancel.headers.get("Reason") == ANSWERED_ELSEWHERE
    assert r.statuses() == [180, 200]  # M1's 180 is not relayed after the 2xx


# ------------------------------------------------------------------------------ T14, T15


def test_t14_register_before_the_push_answer_gets_the_branch_at_once() -> None:
    r = registered(desk=False)
    r.invite()
    (push,) = r.pushes()
    r.advance(0.1)
    wakes(r, M1_WOKEN, "TOK1", "m1-b")  # the gateway has not answered yet
    (branch,) = r.new_to(M1_WOKEN, "INVITE")
    r.advance(0.4)
    r.push_result(push, Outcome.SENT, 202)
    assert r.new_to(M1_WOKEN, "INVITE") == [branch] and len(r.pushes()) == 1
    r.answer(branch, 180, M1_WOKEN, "mob")
    r.advance(20.0)  # no wake timer was started by the late answer
    assert r.statuses() == [180, 180] and r.of(WakeMissed) == []
    r.answer(branch, 200, M1_WOKEN, "mob", body=SDP)
    assert r.statuses() == [180, 180, 200]


def test_t15_two_wake_registers_20_ms_apart_give_one_invite() -> None:
    r = registered(desk=False)
    r.invite()
    (push,) = r.pushes()
    r.push_result(push, Outcome.SENT, 202)
    contact = contact_of(M1_WOKEN, "TOK1")
    first = r.register(M1_WOKEN, contact, call_id="m1-b", cseq=1, authorization=True)
    r.advance(0.02)
    r.register(M1_WOKEN, contact, call_id="m1-b", cseq=2, authorization=True)
    r.send(first, M1_WOKEN)  # and a retransmission of the first
    assert len(r.new_to(PBX, "REGISTER")) == 3  # 2 at registration + the first; the second queued
    r.pbx_answers_last_register(200)
    r.pbx_answers_last_register(200)  # the second, sent once the first was answered
    assert len(r.new_to(PBX, "REGISTER")) == 4
    assert [m.status for m in r.responses_to(M1_WOKEN)] == [200, 200]
    assert len(r.new_to(M1_WOKEN, "INVITE")) == 1


# ------------------------------------------------------------------------------ T16


def test_t16_upstream_down_then_recovering() -> None:
    r = rig()
    r.device_registers(M1, contact_of(M1, "TOK1"), call_id="m1-a", expires=3600)
    r.advance(REFRESH_AT)
    refresh = r.new_to(PBX, "REGISTER")[-1]
    assert refresh.call_id == f"reg-{AOR}"
    r.advance(5.0)  # upstream_timeout: P does not answer
    registration = r.upstream()
    assert registration.state is UpstreamState.RETRYING and registration.degraded()
    # A call now: M1 is pushed, wakes, and its REGISTER times out too.
    r.invite()
    (push,) = r.pushes()
    r.push_result(push, Outcome.SENT, 202)
    r.advance(0.3)
    r.register(M1_WOKEN, contact_of(M1_WOKEN, "TOK1"), call_id="m1-b", cseq=1)
    assert r.new_to(PBX, "REGISTER")[-1].call_id == "m1-b"
    r.advance(5.0)
    assert [m.status for m in r.responses_to(M1_WOKEN)] == [408]
    assert r.to(M1_WOKEN, "INVITE") == []
    r.advance(10.0 - 5.3)  # wake_timeout
    assert r.statuses() == [180, 480]
    assert r.invite_responses()[-1].headers.get("Reason") == WAKE_TIMEOUT_REASON
    (binding,) = r.core.registrar.location.bindings(AOR)  # kept (3.5)
    assert binding.contact == contact_of(M1, "TOK1")
    assert r.upstream().degraded()
    # P is back: the next retry of our own refresh succeeds.
    retries = len(r.new_to(PBX, "REGISTER"))
    while len(r.new_to(PBX, "REGISTER")) == retries:
        r.advance(1.0)
    retry = r.new_to(PBX, "REGISTER")[-1]
    assert retry.call_id == f"reg-{AOR}"
    r.pbx_answers_last_register(200)
    assert r.upstream().state is UpstreamState.REGISTERED and not r.upstream().degraded()
    assert r.upstream().expires_at == r.now + 3600


# ------------------------------------------------------------------------------ T18


def early_media(mode: EarlyMedia, *, reliable: bool = False) -> list[tuple[int, bytes, str | None]]:
    """D and the woken M1 each send 183 with SDP; what P receives (status, body, Require)."""
    r = registered(early_media=mode)
    r.invite()
    (push,) = r.pushes()
    (to_desk,) = r.new_to(DESK, "INVITE")
    require = (("Require", "100rel"), ("RSeq", "1")) if reliable else ()
    r.answer(to_desk, 183, DESK, "desk", body=SDP, extra=require)
    r.push_result(push, Outcome.SENT, 202)
    wakes(r, M1_WOKEN, "TOK1", "m1-b")
    (to_mobile,) = r.new_to(M1_WOKEN, "INVITE")
    r.answer(to_mobile, 183, M1_WOKEN, "mob", body=SDP, extra=require)
    return [(m.status, m.body, m.headers.get("Require")) for m in r.invite_responses()]


def test_t18_early_media_first_relays_only_the_first_sdp() -> None:
    assert early_media(EarlyMedia.FIRST) == [(180, b"", None), (183, SDP, None), (180, b"", None)]


def test_t18_early_media_all_relays_every_183() -> None:
    assert early_media(EarlyMedia.ALL) == [(180, b"", None), (183, SDP, None), (183, SDP, None)]


def test_t18_early_media_first_leaves_reliable_provisionals_alone() -> None:
    assert early_media(EarlyMedia.FIRST, reliable=True) == [
        (180, b"", None),
        (183, SDP, "100rel"),
        (183, SDP, "100rel"),
    ]


# ------------------------------------------------------------------------------ T19


def test_t19_mirror_mode_forwards_each_contact_and_an_invite_to_one_reaches_only_that_device() -> None:
    r = rig(midreg={"mode": Mode.MIRROR})
    m1_contact = contact_of(M1, "TOK1")
    r.register(M1, m1_contact, call_id="m1-a", cseq=1, expires=600)
    forwarded = r.new_to(PBX, "REGISTER")[-1]
    assert r.of(RegisterDecided)[-1].rule == "mirror"
    uri = upstream_contact(r)
    assert (uri.host, uri.port, uri.user) == ("192.0.2.1", 5060, "200")
    assert forwarded.headers.get("Expires") == "600"
    assert r.core.registrar.location.bindings(AOR) == ()  # written on the 2xx only
    r.pbx_answers_last_register(200, contact=f"<{uri}>;expires=300")
    (binding,) = r.core.registrar.location.bindings(AOR)
    assert uri.param("mrct") == mrct_of(binding.key)
    assert binding.expires_at == r.now + 300  # P's grant, not the device's 600
    assert r.responses_to(M1)[-1].status == 200
    r.register(DESK, contact_of(DESK), call_id="d-a", cseq=1, expires=600)
    desk_uri = upstream_contact(r)
    r.pbx_answers_last_register(200, contact=f"<{desk_uri}>;expires=600")
    assert len(r.core.registrar.location.bindings(AOR)) == 2
    # P forks itself: the INVITE to D's mirrored contact rings D only.
    r.invite("call-d@pbx", uri=str(desk_uri))
    assert [m.call_id for m in r.new_to(DESK, "INVITE")] == ["call-d@pbx"] and r.pushes() == []
    # The INVITE to M1's mirrored contact pushes M1 only; D is not rung.
    r.invite("call-m@pbx", uri=str(uri))
    (push,) = r.pushes()
    assert push.prid == "TOK1"
    assert [m.call_id for m in r.new_to(DESK, "INVITE")] == ["call-d@pbx"]
    r.push_result(push, Outcome.SENT, 202)
    r.register(M1_WOKEN, contact_of(M1_WOKEN, "TOK1"), call_id="m1-b", cseq=1)
    woken = upstream_contact(r)
    r.pbx_answers_last_register(200, contact=f"<{woken}>;expires=600")
    (branch,) = r.new_to(M1_WOKEN, "INVITE")
    assert branch.call_id == "call-m@pbx"
    assert [m.call_id for m in r.new_to(DESK, "INVITE")] == ["call-d@pbx"]


def test_t19_mirror_mode_an_invite_for_a_contact_no_longer_registered_gets_480() -> None:
    r = rig(midreg={"mode": Mode.MIRROR})
    r.register(DESK, contact_of(DESK), call_id="d-a", cseq=1)
    desk_uri = upstream_contact(r)
    r.pbx_answers_last_register(200, contact=f"<{desk_uri}>;expires=600")
    r.invite(uri="sip:200@192.0.2.1:5060;mrct=0000000000000000")
    assert r.statuses() == [480] and r.to(DESK, "INVITE") == []
