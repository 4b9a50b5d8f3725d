"""Reaching devices that sleep, through the whole SIP core with its push service and call parking:
keeping push bindings alive (push-and-parking.md 4.5), requests other than INVITE for a
push-only AoR (6.9) and mid-dialog requests held while the device wakes (6.10, pn-purr).
"""

from __future__ import annotations

import re

from scaserver.edge.persistence import restore_upstream
from scaserver.proxy.relay import route_signature
from scaserver.push.facts import BindingRetained
from scaserver.push.gateway import Outcome, PushType
from scaserver.push.pnparams import LegacyRule, PushCoordinates, TypingSettings, ValueSource
from scaserver.push.policy import PushPolicySettings
from scaserver.push.service import PushServiceSettings
from scaserver.registrar.binding import BindingExpired, BindingKey, BindingRemoved, KeyKind, RemovalReason
from scaserver.registrar.midregsettings import Mode
from scaserver.registrar.upstream import UpstreamState
from scaserver.sip.message import Headers, Peer, Request, Transport
from scaserver.sip.responses import make_response
from tests.push_rig import (
    AOR,
    DESK,
    M1,
    M1_WOKEN,
    M2,
    M2_WOKEN,
    PBX,
    Rig,
    contact_of,
    register_as,
    registered,
    rig,
)

HOUR = 3600.0


def keepalive_settings(**policy: float) -> PushServiceSettings:
    return PushServiceSettings(policy=PushPolicySettings(**policy))  # type: ignore[arg-type]


def fcm_device(r: Rig, peer: Peer = M1, *, call_id: str = "m1-a", header_params: str = "") -> None:
    contact = f"<{contact_of(peer, 'FTOK', provider='fcm', param='proj')}>{header_params}"
    register_as(r, AOR, peer, contact, call_id=call_id)
    r.pbx_answers_last_register(200)


# ------------------------------------------------------------------ 4.5 wake


def test_wake_binding_gets_one_reg_refresh_push_refresh_trigger_before_expiry() -> None:
    r = rig()
    fcm_device(r)
    r.advance(600 - 120 - 1)
    assert r.pushes() == []
    r.advance(1)
    (push,) = r.pushes()
    assert (push.type, push.provider, push.prid, push.aor, push.reason) == (
        PushType.REG_REFRESH,
        "fcm",
        "FTOK",
        AOR,
        "expiry",
    )
    assert push.ttl == 120 and push.call is None


def test_wake_binding_refreshed_in_time_gets_no_push_from_the_old_schedule() -> None:
    r = rig()
    fcm_device(r)
    r.advance(400)
    fcm = f"<{contact_of(M1, 'FTOK', provider='fcm', param='proj')}>"
    register_as(r, AOR, M1, fcm, call_id="m1-a", cseq=2)
    assert r.responses_to(M1)[-1].status == 200  # absorbed
    r.advance(200)  # past the first schedule (480 s after the first registration)
    assert r.pushes() == []
    r.advance(300)  # 480 s after the refresh
    assert [p.type for p in r.pushes()] == [PushType.REG_REFRESH]


def test_device_that_refreshes_itself_pnsreg_gets_no_reg_refresh_push() -> None:
    r = rig()
    fcm_device(r, header_params=";+sip.pnsreg")
    r.advance(599)
    assert r.pushes() == []


def test_wake_binding_not_refreshed_expires_and_the_last_one_unregisters_upstream() -> None:
    r = rig()
    fcm_device(r)
    r.advance(601)
    assert r.core.registrar.location.bindings(AOR) == () and r.push.dormant(AOR) == ()
    last = r.to(PBX, "REGISTER")[-1]
    assert (last.headers.get("Expires"), last.call_id) == ("0", f"reg-{AOR}")


def test_reg_refresh_pushes_are_limited_to_one_per_token_per_window() -> None:
    r = rig()
    fcm_device(r)
    (device,) = r.push.devices()
    r.run(r.core.run(r.push.refresh_push(device, "rpc", r.now), r.now))
    assert [(p.type, p.reason) for p in r.pushes()] == [(PushType.REG_REFRESH, "rpc")]
    assert r.push.refresh_push(device, "rpc", r.now + 10) == []
    assert len(r.push.refresh_push(device, "rpc", r.now + 121)) == 1


# ------------------------------------------------------------------ 4.5 extend (APNs)


def test_apns_binding_past_its_expiry_is_dormant_pushed_for_calls_never_rung() -> None:
    r = registered(desk=False)
    r.advance(601)
    assert r.core.registrar.location.bindings(AOR) == ()
    (dormant,) = r.push.dormant(AOR)
    assert r.of(BindingRetained)[-1].binding == dormant
    assert r.push.midregistrar is not None and r.push.midregistrar.bindings(AOR) == (dormant,)
    r.invite()
    assert r.to(M1, "INVITE") == []
    (push,) = r.pushes()
    assert push.type is PushType.CALL and push.prid == "TOK1"
    assert 180 in r.statuses()  # parked with local ringing, not 404


def test_dormant_device_woken_by_a_call_is_live_again_and_gets_the_branch() -> None:
    r = registered(desk=False)
    r.advance(601)
    r.invite()
    (push,) = r.pushes()
    r.push_result(push, Outcome.SENT, 202)
    r.device_registers(M1_WOKEN, contact_of(M1_WOKEN, "TOK1"), call_id="m1-b")
    assert r.push.dormant(AOR) == ()
    assert len(r.core.registrar.location.bindings(AOR)) == 1
    assert len(r.to(M1_WOKEN, "INVITE")) == 1


def test_dormant_binding_ends_after_extend_max_age_and_the_aggregate_is_unregistered() -> None:
    r = registered(desk=False, push=keepalive_settings(extend_max_age=2 * HOUR))
    r.advance(601)
    assert len(r.push.dormant(AOR)) == 1
    r.advance(2 * HOUR - 601 - 1)
    assert len(r.push.dormant(AOR)) == 1
    unregisters = [m for m in r.to(PBX, "REGISTER") if m.headers.get("Expires") == "0"]
    assert unregisters == []
    r.advance(2)
    assert r.push.dormant(AOR) == () and r.push.devices() == ()
    assert [f.binding.aor for f in r.of(BindingExpired)] == [AOR, AOR]  # requested expiry, then the end
    assert r.to(PBX, "REGISTER")[-1].headers.get("Expires") == "0"


def test_dormant_binding_whose_token_dies_is_removed_and_the_aggregate_unregistered() -> None:
    r = registered(desk=False)
    r.advance(601)
    r.invite()
    (push,) = r.pushes()
    r.push_result(push, Outcome.INVALID, 410)
    assert r.push.dormant(AOR) == ()
    (removed,) = r.of(BindingRemoved)
    assert removed.reason is RemovalReason.TOKEN_INVALID
    r.advance(0.01)  # unregister_grace 0
    assert r.to(PBX, "REGISTER")[-1].headers.get("Expires") == "0"
    assert r.statuses()[-1] == 480


def test_dormant_device_de_registering_leaves_no_binding() -> None:
    r = registered(desk=False)
    r.advance(601)
    r.register(M1, contact_of(M1, "TOK1"), call_id="m1-a", cseq=5, expires=0)
    assert r.pbx_answers_last_register(200).headers.get("Expires") == "0"
    assert r.push.dormant(AOR) == () and r.push.devices() == ()
    assert r.of(BindingRemoved)[-1].reason is RemovalReason.UNREGISTERED


def test_restored_apns_binding_past_its_expiry_comes_back_dormant() -> None:
    before = registered(desk=False)
    (binding,) = before.core.registrar.location.bindings(AOR)
    after = rig()
    after.now = binding.expires_at + 60
    actions = after.push.restore([binding], after.now)
    actions += after.core.registrar.restore([binding], after.now)
    after.run(after.core.run(actions, after.now))
    assert after.push.dormant(AOR) == (binding,)
    assert after.to(PBX, "REGISTER") == []  # not unregistered upstream
    # The AoR, kept by its dormant binding only, is re-registered upstream (3.5, R21).
    after.run(after.core.run(restore_upstream(after.core, (), [binding], after.now), after.now))
    after.advance(31)  # within startup_spread (60 s; the rig's random is 0.5)
    (again,) = after.new_to(PBX, "REGISTER")
    assert again.headers.get("Expires") == "3600" and again.headers.get("CSeq") == "1 REGISTER"


# ------------------------------------------------------------------ 6.9


def test_message_for_a_push_only_aor_is_answered_480() -> None:
    r = registered(desk=False)
    message = Request(
        "MESSAGE",
        "sip:200@192.0.2.1:5060;transport=udp",
        Headers.of(
            ("Via", f"SIP/2.0/UDP {PBX.host}:{PBX.port};branch=z9hG4bKmsg1"),
            ("Max-Forwards", "70"),
            ("From", "<sip:alice@example.com>;tag=a1"),
            ("To", "<sip:200@example.com>"),
            ("Call-ID", "msg-1@pbx"),
            ("CSeq", "1 MESSAGE"),
            ("Content-Type", "text/plain"),
        ),
        b"hello",
    )
    r.send(message, PBX)
    assert [resp.status for resp in r.responses_to(PBX) if resp.call_id == "msg-1@pbx"] == [480]
    assert r.pushes() == [] and r.to(M1, "MESSAGE") == []

    r.device_registers(DESK, contact_of(DESK), call_id="d-a")
    via = f"SIP/2.0/UDP {PBX.host}:{PBX.port};branch=z9hG4bKmsg2"
    r.send(message.with_headers(message.headers.set("Via", via).set("Call-ID", "msg-2@pbx")), PBX)
    assert len(r.to(DESK, "MESSAGE")) == 1  # a desk phone can take it


# ------------------------------------------------------------------ 6.10 pn-purr


def purr_rig() -> Rig:
    return rig(push=PushServiceSettings(typing=TypingSettings(purr=True), purr_secret=b"secret"))


def test_purr_of_a_token_with_octets_that_are_not_utf8() -> None:
    token = "tok" + b"\xff".decode("utf-8", "surrogateescape")
    purr = purr_rig().push.purr_for(BindingKey(AOR, KeyKind.PUSH, f"apns {token} T.app.voip"))
    assert len(purr) == 24


def answered_call_with_purr(r: Rig) -> tuple[Request, str]:
    """M1 registered (its 200 carries a PURR), called, answered with ``pn-purr`` in its
    Contact; returns the BYE the PBX sends to end the call and the PURR."""
    r.device_registers(M1, contact_of(M1, "TOK1"), call_id="m1-a")
    (caps,) = r.responses_to(M1)[-1].headers.lines("Feature-Caps")
    purr = caps.partition('+sip.pnspurr="')[2].partition('"')[0]
    assert purr and purr == r.push.purr_for(r.core.registrar.location.bindings(AOR)[0].key)
    invite = r.invite()
    (push,) = r.pushes()
    r.push_result(push, Outcome.SENT, 202)
    r.device_registers(M1_WOKEN, contact_of(M1_WOKEN, "TOK1"), call_id="m1-b")
    (branch,) = r.to(M1_WOKEN, "INVITE")
    contact = f"<sip:200@{M1_WOKEN.host}:{M1_WOKEN.port};pn-purr={purr}>"
    ok = make_response(branch, 200, headers=Headers.of(("Contact", contact)), to_tag="mob")
    r.send(ok, M1_WOKEN)
    (relayed,) = [m for m in r.invite_responses() if m.status == 200]
    route = branch.headers.lines("Record-Route")[0]  # ours, as the callee's side saw it
    bye = Request(
        "BYE",
        f"sip:200@{M1_WOKEN.host}:{M1_WOKEN.port};pn-purr={purr}",
        Headers.of(
            ("Via", f"SIP/2.0/UDP {PBX.host}:{PBX.port};branch=z9hG4bKbye1"),
            ("Max-Forwards", "70"),
            ("Route", route),
            ("From", invite.headers.get("From") or ""),
            ("To", relayed.headers.get("To") or ""),
            ("Call-ID", invite.call_id or ""),
            ("CSeq", "2 BYE"),
        ),
    )
    return bye, purr


def test_mid_dialog_request_with_our_purr_is_held_until_the_device_wakes() -> None:
    r = purr_rig()
    bye, _ = answered_call_with_purr(r)
    r.advance(700)  # the app sleeps; its binding lapses into dormancy
    pushes = len(r.pushes())
    r.send(bye, PBX)
    assert r.to(M1_WOKEN, "BYE") == []
    refresh = r.pushes()[pushes:]
    assert [(p.type, p.reason, p.prid) for p in refresh] == [(PushType.REG_REFRESH, "mid-BYE", "TOK1")]
    m2 = Peer(Transport.UDP, M1.host, 7062)
    r.device_registers(m2, contact_of(m2, "TOK1"), call_id="m1-c")
    (relayed,) = r.to(m2, "BYE")  # to where the app is now, the dialog's target unchanged
    assert relayed.uri == bye.uri


def test_held_mid_dialog_request_gets_480_when_the_device_never_wakes() -> None:
    r = purr_rig()
    bye, _ = answered_call_with_purr(r)
    r.send(bye, PBX)
    r.advance(10.0)
    assert [m.status for m in r.responses_to(PBX) if m.headers.get("CSeq") == "2 BYE"] == [480]


def test_without_purr_issuing_mid_dialog_requests_are_relayed_at_once() -> None:
    r = rig()
    r.device_registers(M1, contact_of(M1, "TOK1"), call_id="m1-a")
    assert "pnspurr" not in (r.responses_to(M1)[-1].headers.get("Feature-Caps") or "")


# ------------------------------------------------------------------ 4.2 legacy devices


def test_legacy_app_typed_by_user_agent_is_pushed_and_its_coordinates_survive_a_restart() -> None:
    rule = LegacyRule(
        "acme-ios",
        re.compile("^AcmePhone iOS/"),
        "apns",
        ValueSource.parse("contact_param:pn-tok"),
        param="ABCDE12345.com.acme.phone.voip",
        device_type="ios",
    )
    settings = PushServiceSettings(typing=TypingSettings(legacy_rules=(rule,)))
    r = rig(push=settings)
    contact = f"sip:200@{M1.host}:{M1.port};pn-tok=LEGACY1"
    agent = (("User-Agent", "AcmePhone iOS/4.2"),)
    r.register(M1, contact, call_id="m1-a", cseq=1, extra=agent)
    r.pbx_answers_last_register(200)
    assert "Feature-Caps" not in r.responses_to(M1)[-1].headers  # 4.2: none for legacy bindings
    (binding,) = r.core.registrar.location.bindings(AOR)
    assert dict(binding.push)["pn-prid"] == "LEGACY1"
    r.invite()
    (push,) = r.pushes()
    assert (push.provider, push.prid, push.param, push.device_type) == (
        "apns",
        "LEGACY1",
        "ABCDE12345.com.acme.phone.voip",
        "ios",
    )

    after = rig(push=settings)
    after.push.restore([binding], r.now)
    (device,) = after.push.devices()
    assert device.coordinates == push_coordinates_of(r)


def push_coordinates_of(r: Rig) -> PushCoordinates:
    (device,) = r.push.devices()
    return device.coordinates


def test_mirror_mode_dormant_device_is_pushed_only_for_its_own_mirrored_contact() -> None:
    r = rig(midreg={"mode": Mode.MIRROR})
    for peer, token, call_id in ((M1, "TOK1", "m1-a"), (M2, "TOK2", "m2-a")):
        r.register(peer, contact_of(peer, token), call_id=call_id, cseq=1, expires=600)
        forwarded = r.to(PBX, "REGISTER")[-1]
        (contact,) = forwarded.headers.lines("Contact")
        r.pbx_answers_last_register(200, contact=f"{contact};expires=300")
    m1_uri = r.to(PBX, "REGISTER")[0].headers.lines("Contact")[0].strip("<>")
    r.advance(301)
    assert len(r.push.dormant(AOR)) == 2
    r.invite("call-m1@pbx", uri=m1_uri)
    assert [p.prid for p in r.pushes()] == ["TOK1"]
    r.invite("call-x@pbx", uri="sip:200@192.0.2.1:5060;mrct=0000000000000000")
    assert r.statuses("call-x@pbx") == [480]


def own_registers(r: Rig, mark: int) -> list[Request]:
    """The REGISTERs of scaserver's own registration dialog P got since ``mark``, each once."""
    found: dict[str | None, Request] = {}
    for message, peer in r.since(mark):
        if peer == PBX and isinstance(message, Request) and message.call_id == f"reg-{AOR}":
            found.setdefault(message.headers.get("CSeq"), message)
    return list(found.values())


def test_mirror_mode_keeps_dormant_contacts_registered_upstream_in_its_own_dialog() -> None:
    """3.7: no device refreshes a dormant APNs binding, so scaserver keeps its mirrored
    contact registered upstream itself, and removes it when the binding finally ends."""
    r = rig(midreg={"mode": Mode.MIRROR}, push=keepalive_settings(extend_max_age=2 * HOUR))
    mirrored: list[str] = []
    for peer, token, call_id in ((M1, "TOK1", "m1-a"), (M2, "TOK2", "m2-a")):
        r.register(peer, contact_of(peer, token), call_id=call_id, cseq=1, expires=600)
        (contact,) = r.to(PBX, "REGISTER")[-1].headers.lines("Contact")
        mirrored.append(contact.strip("<>"))
        r.pbx_answers_last_register(200, contact=f"{contact};expires=300")
    mark = r.mark()
    r.advance(300.5)
    (kept,) = own_registers(r, mark)
    assert sorted(c.strip("<>") for c in kept.headers.lines("Contact")) == sorted(mirrored)
    assert kept.headers.get("Expires") == "3600"
    granted = ", ".join(f"<{uri}>;expires=3600" for uri in mirrored)
    r.pbx_answers_last_register(200, contact=granted)
    assert r.upstream().state is UpstreamState.REGISTERED
    # M2 wakes and registers by itself again: the next refresh keeps M1 only.
    r.register(M2_WOKEN, contact_of(M2_WOKEN, "TOK2"), call_id="m2-b", cseq=1, expires=3600)
    (contact,) = r.to(PBX, "REGISTER")[-1].headers.lines("Contact")
    r.pbx_answers_last_register(200, contact=f"{contact};expires=3600")
    mark = r.mark()
    r.advance(2412.1)  # our refresh is due 2412 s after its 200 (3600 - 0.33 x 3600)
    (again,) = own_registers(r, mark)
    assert [c.strip("<>") for c in again.headers.lines("Contact")] == mirrored[:1]
    r.pbx_answers_last_register(200, contact=f"<{mirrored[0]}>;expires=3600")
    # M1's retention ends (extend_max_age): its contact is unregistered upstream.
    mark = r.mark()
    r.advance(4500)  # M1 confirmed 2 h ago now; M2's retention lasts longer (it woke since)
    removals = [m for m in own_registers(r, mark) if m.headers.get("Expires") == "0"]
    assert [[c.strip("<>") for c in m.headers.lines("Contact")] for m in removals] == [mirrored[:1]]


def test_purr_in_the_next_route_holds_the_request_too_and_it_follows_its_route() -> None:
    r = purr_rig()
    bye, purr = answered_call_with_purr(r)
    edge = Peer(Transport.UDP, "192.0.2.90", 5060)
    routed = bye.with_headers(bye.headers.add("Route", f"<sip:{edge.host}:{edge.port};pn-purr={purr};lr>"))
    routed = Request("BYE", f"sip:200@{M1_WOKEN.host}:{M1_WOKEN.port}", routed.headers)
    pushes = len(r.pushes())
    r.send(routed, PBX)
    assert [p.reason for p in r.pushes()[pushes:]] == ["mid-BYE"]
    r.device_registers(M1_WOKEN, contact_of(M1_WOKEN, "TOK1"), call_id="m1-c")
    (relayed,) = r.to(edge, "BYE")  # the Route after ours is followed (RFC 3261 16.6)
    assert relayed.uri == routed.uri


# ------------------------------------------------------------------ relay rule R7


def desk_in_dialog(uri: str, *, branch: str) -> Request:
    """A BYE from the desk phone (not a trusted peer) in a dialog we record-routed."""
    route = f"<sip:192.0.2.1:5060;transport=udp;lr;rrsig={route_signature(b'', 'desk-call', 'dt1')}>"
    return Request(
        "BYE",
        uri,
        Headers.of(
            ("Via", f"SIP/2.0/UDP {DESK.host}:{DESK.port};branch={branch}"),
            ("Max-Forwards", "70"),
            ("Route", route),
            ("From", "<sip:300@example.com>;tag=dt1"),
            ("To", f"<{AOR}>;tag=mt1"),
            ("Call-ID", "desk-call"),
            ("CSeq", "2 BYE"),
        ),
    )


def test_r7_a_dormant_bindings_contact_stays_a_next_hop_until_its_retention_ends() -> None:
    r = registered(desk=False, push=keepalive_settings(extend_max_age=2 * HOUR))
    r.advance(601)
    assert r.core.registrar.location.bindings(AOR) == () and len(r.push.dormant(AOR)) == 1
    r.send(desk_in_dialog(contact_of(M1, "TOK1"), branch="z9hG4bKd1"), DESK)
    assert len(r.new_to(M1, "BYE")) == 1  # the dormant binding's contact counts as registered
    r.send(desk_in_dialog("sip:+15551234@192.0.2.99", branch="z9hG4bKd2"), DESK)
    assert [m.status for m in r.responses_to(DESK)] == [403]
    r.advance(2 * HOUR)  # the retention is over: M1 is not registered any more
    assert r.push.dormant(AOR) == ()
    r.send(desk_in_dialog(contact_of(M1, "TOK1"), branch="z9hG4bKd3"), DESK)
    assert len(r.new_to(M1, "BYE")) == 1
    assert [m.status for m in r.responses_to(DESK)][-1] == 403
