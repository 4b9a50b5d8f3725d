"""What the dispatcher hands the SCA engine besides the proxy's ordinary facts: the CANCEL of a
call (sca.md O8), a CANCEL and a late 2xx whose transactions a restart lost (O8, O7), and the
PUBLISH to an AoR of ours that it answers itself (RFC 3903 section 6)."""

from __future__ import annotations

import attrs

from scaserver.sca.appearance import Appearance, AppearanceState, CallLeg, Role
from scaserver.sca.engine import TTL_TIMER, AppearanceKey
from scaserver.sca.line import SharedLine
from scaserver.sip.message import Peer, Request, Response, Transport
from scaserver.sip.sessiontimer import SessionIntervals
from tests.builders import DOMAIN, SERVER, Wire, make_core
from tests.unit.test_dispatch import ALICE, BOB, only_response, request

LINE = f"sip:2001@{DOMAIN}"


def line_core() -> Wire:
    wire = Wire(make_core(require_auth=False, lines=[SharedLine(LINE, 4)]))
    text = request(
        "REGISTER",
        f"sip:{DOMAIN}",
        peer=BOB,
        from_uri=f"sip:bob@{DOMAIN}",
        to_uri=f"sip:bob@{DOMAIN}",
        branch="z9hG4bKregb",
        extra="Expires: 600\r\n",
    )
    assert only_response(wire, text, BOB)[0].status == 200
    return wire


def member_invite(call_id: str) -> str:
    return request("INVITE", f"sip:bob@{DOMAIN}", from_uri=LINE, branch=f"z9hG4bK{call_id}", call_id=call_id)


def member_cancel(call_id: str) -> str:
    return request("CANCEL", f"sip:bob@{DOMAIN}", from_uri=LINE, branch=f"z9hG4bK{call_id}", call_id=call_id)


def states(wire: Wire) -> list[AppearanceState]:
    return [app.state for app in wire.core.sca.appearances(LINE)]


def test_o8_a_members_cancel_through_the_proxy_releases_its_appearance() -> None:
    wire = line_core()
    for n in range(5):  # more cancelled calls than the line has appearances
        call_id = f"cancelled-{n}"
        out = wire.deliver(member_invite(call_id), ALICE)
        [branch] = [m for m, _ in out if isinstance(m, Request)]
        ringing = Response(180, "Ringing", branch.headers.set("To", f"{branch.headers.get('To')};tag=b{n}"))
        wire.send(ringing, BOB)
        assert states(wire) == [AppearanceState.PROGRESSING]
        out = wire.deliver(member_cancel(call_id), ALICE)
        assert [m.status for m, _ in out if isinstance(m, Response)] == [200]
        assert states(wire) == []
        wire.send(attrs.evolve(ringing, status=487, reason="Request Terminated"), BOB)
        assert states(wire) == []


RESTORED = Appearance(
    LINE,
    1,
    AppearanceState.PROGRESSING,
    owner=f"sip:2001@{ALICE.host}:{ALICE.port}",
    leg=CallLeg("lost-1", "ft1", None, Role.CALLER),
)


def restarted() -> Wire:
    wire = line_core()
    wire.core.sca.restore([SharedLine(LINE, 4)], [], [RESTORED], wire.now)
    return wire


def test_o8_cancel_whose_invite_transaction_a_restart_lost_gets_481_and_releases() -> None:
    wire = restarted()
    out = wire.deliver(member_cancel("lost-1"), ALICE)
    assert [m.status for m, _ in out if isinstance(m, Response)] == [481]
    assert states(wire) == []


def test_o8_unrelated_cancel_without_transaction_changes_nothing() -> None:
    wire = restarted()
    out = wire.deliver(member_cancel("other"), ALICE)
    assert [m.status for m, _ in out if isinstance(m, Response)] == [481]
    assert states(wire) == [AppearanceState.PROGRESSING]


def late_ok(top_via_host: str) -> str:
    return (
        "SIP/2.0 200 OK\r\n"
        f"Via: SIP/2.0/UDP {top_via_host}:{SERVER.port};branch=z9hG4bKlostbranch\r\n"
        f"Via: SIP/2.0/UDP {ALICE.host}:{ALICE.port};branch=z9hG4bKlost-1;rport={ALICE.port}\r\n"
        f"From: <{LINE}>;tag=ft1\r\n"
        f"To: <sip:bob@{DOMAIN}>;tag=bobtag\r\n"
        "Call-ID: lost-1\r\n"
        "CSeq: 1 INVITE\r\n"
        f"Contact: <sip:bob@{BOB.host}:{BOB.port}>\r\n"
        "Content-Length: 0\r\n\r\n"
    )


def test_o7_late_2xx_after_a_restart_is_forwarded_statelessly_and_answers_the_call() -> None:
    wire = restarted()
    out = wire.deliver(late_ok(SERVER.host), BOB)
    assert [(m.status, p) for m, p in out if isinstance(m, Response)] == [(200, ALICE)]
    assert states(wire) == [AppearanceState.ACTIVE]


def test_o7_stray_2xx_not_sent_through_us_is_dropped_and_tracks_nothing() -> None:
    wire = restarted()
    assert wire.deliver(late_ok("203.0.113.99"), BOB) == []
    assert states(wire) == [AppearanceState.PROGRESSING]


CAROL = Peer(Transport.UDP, "198.51.100.30", 5066)


def test_publish_to_ones_own_aor_is_answered_489_by_us_and_never_forked() -> None:
    wire = line_core()
    text = request(
        "PUBLISH",
        f"sip:bob@{DOMAIN}",
        peer=BOB,
        from_uri=f"sip:bob@{DOMAIN}",
        branch="z9hG4bKpub1",
        extra="Event: presence\r\nExpires: 3600\r\n",
    )
    out = wire.deliver(text, BOB)
    assert [m for m, _ in out if isinstance(m, Request)] == []
    [(response, peer)] = [(m, p) for m, p in out if isinstance(m, Response)]
    assert (response.status, peer) == (489, BOB)
    assert response.headers.get("Allow-Events") == "call-info, line-seize"


def test_publish_to_a_shared_line_and_without_event_is_489_too() -> None:
    wire = line_core()
    text = request("PUBLISH", LINE, peer=CAROL, from_uri=f"sip:carol@{DOMAIN}", branch="z9hG4bKpub2")
    response, _ = only_response(wire, text, CAROL)
    assert response.status == 489


def register_member(wire: Wire, peer: Peer, n: int) -> None:
    text = request(
        "REGISTER",
        f"sip:{DOMAIN}",
        peer=peer,
        from_uri=LINE,
        to_uri=LINE,
        branch=f"z9hG4bKregm{n}",
        call_id=f"reg-m{n}",
        extra="Expires: 600\r\n",
    )
    assert only_response(wire, text, peer)[0].status == 200


def test_i1_each_member_is_rung_with_the_appearance_index_of_the_call() -> None:
    wire = line_core()
    register_member(wire, ALICE, 1)
    register_member(wire, CAROL, 2)
    caller = Peer(Transport.UDP, "203.0.113.50", 5060)
    text = request(
        "INVITE",
        LINE,
        peer=caller,
        from_uri=f"sip:dave@{DOMAIN}",
        branch="z9hG4bKin1",
        call_id="in-1",
        extra=f"Call-Info: <sip:{DOMAIN}>;appearance-index=2, <http://x.example/i>;answer-after=0\r\n",
    )
    out = wire.deliver(text, caller)
    branches = [m for m, _ in out if isinstance(m, Request)]
    assert len(branches) == 2
    for branch in branches:
        assert branch.headers.values("Call-Info") == (
            "<http://x.example/i>;answer-after=0",
            f"<sip:{DOMAIN}>;appearance-index=1",
        )


def test_a_call_to_a_user_that_is_no_line_gets_no_appearance_index() -> None:
    wire = line_core()
    out = wire.deliver(member_invite("plain"), ALICE)
    [branch] = [m for m, _ in out if isinstance(m, Request)]
    assert "Call-Info" not in branch.headers


def ring_two_members(wire: Wire) -> dict[Peer, Request]:
    register_member(wire, ALICE, 1)
    register_member(wire, CAROL, 2)
    text = request(
        "INVITE", LINE, peer=BOB, from_uri=f"sip:bob@{DOMAIN}", branch="z9hG4bKdec1", call_id="dec-1"
    )
    out = wire.deliver(text, BOB)
    branches = {p: m for m, p in out if isinstance(m, Request)}
    assert set(branches) == {ALICE, CAROL}
    for n, (peer, branch) in enumerate(branches.items()):
        ringing = Response(180, "Ringing", branch.headers.set("To", f"{branch.headers.get('To')};tag=m{n}"))
        wire.send(ringing, peer)
    return branches


def test_a_603_from_one_member_declines_for_that_member_only() -> None:
    wire = line_core()
    branches = ring_two_members(wire)
    alice = branches[ALICE]
    declined = Response(603, "Decline", alice.headers.set("To", f"{alice.headers.get('To')};tag=m0"))
    out = wire.send(declined, ALICE)
    assert [m.method for m, p in out if isinstance(m, Request) and p == CAROL] == []  # no CANCEL
    assert [m.status for m, p in out if isinstance(m, Response) and p == BOB] == []  # no final yet
    carol = branches[CAROL]
    ok = Response(200, "OK", carol.headers.set("To", f"{carol.headers.get('To')};tag=m1"))
    out = wire.send(ok, CAROL)
    assert [m.status for m, p in out if isinstance(m, Response) and p == BOB] == [200]


def test_a_603_from_one_member_stops_the_others_with_decline_ends_ringing() -> None:
    wire = line_core()
    wire.core.sca.settings = attrs.evolve(wire.core.sca.settings, decline_ends_ringing=True)
    branches = ring_two_members(wire)
    alice = branches[ALICE]
    declined = Response(603, "Decline", alice.headers.set("To", f"{alice.headers.get('To')};tag=m0"))
    out = wire.send(declined, ALICE)
    assert [m.method for m, p in out if isinstance(m, Request) and p == CAROL] == ["CANCEL"]


# -- RFC 4028: the session-timer proxy of a shared line's calls --------------------------------


def session_call(wire: Wire, call_id: str, *, answered: str) -> tuple[Request, Response]:
    """A member calls bob with ``Supported: timer``; bob answers 200 with ``answered`` headers.
    The INVITE bob got and the 200 the member got."""
    wire.core.session_timer = SessionIntervals()
    text = request(
        "INVITE",
        f"sip:bob@{DOMAIN}",
        from_uri=LINE,
        branch=f"z9hG4bK{call_id}",
        call_id=call_id,
        extra="Supported: timer\r\n",
    )
    out = wire.deliver(text, ALICE)
    [branch] = [m for m, _ in out if isinstance(m, Request)]
    fields = branch.headers.set("To", f"{branch.headers.get('To')};tag=bt").set(
        "Contact", f"<sip:bob@{BOB.host}:{BOB.port}>"
    )
    fields = fields.remove("Session-Expires").remove("Min-SE").remove("Supported")
    for line in answered.splitlines():
        name, _, value = line.partition(": ")
        fields = fields.add(name, value)
    out = wire.send(Response(200, "OK", fields), BOB)
    [ok] = [m for m, peer in out if isinstance(m, Response) and peer == ALICE]
    return branch, ok


def expire(wire: Wire, after_s: float) -> None:
    for app in wire.core.sca.appearances(LINE):
        wire.core.on_timer(AppearanceKey(app.line, app.index), TTL_TIMER, wire.now + after_s)


def test_rfc4028_member_invite_gets_session_expires_and_a_2xx_without_it_gets_refresher_uac() -> None:
    wire = line_core()
    branch, ok = session_call(wire, "st-1", answered="")
    assert (branch.headers.get("Session-Expires"), branch.headers.get("Min-SE")) == ("1800", "90")
    assert ok.headers.get("Session-Expires") == "1800;refresher=uac"
    assert "timer" in ok.headers.values("Require")
    assert states(wire) == [AppearanceState.ACTIVE]
    expire(wire, 1767.0)
    assert states(wire) == [AppearanceState.ACTIVE]
    expire(wire, 1768.0)  # 1800 - min(32, 600)
    assert states(wire) == []


def test_rfc4028_refresh_answered_through_the_proxy_sets_the_new_interval() -> None:
    wire = line_core()
    _, ok = session_call(wire, "st-2", answered="Session-Expires: 90;refresher=uac\r\nRequire: timer")
    route = ", ".join(reversed(ok.headers.values("Record-Route")))
    wire.now += 50.0
    refresh = request(
        "INVITE",
        f"sip:bob@{BOB.host}:{BOB.port}",
        from_uri=LINE,
        to_uri=f"sip:bob@{DOMAIN}",
        to_tag="bt",
        cseq=2,
        branch="z9hG4bKst2re",
        call_id="st-2",
        extra=f"Route: {route}\r\nSupported: timer\r\nSession-Expires: 180;refresher=uac\r\n",
    )
    out = wire.deliver(refresh, ALICE)
    [forwarded] = [m for m, peer in out if isinstance(m, Request) and peer == BOB]
    fields = (
        forwarded.headers.set("To", f"<sip:bob@{DOMAIN}>;tag=bt")
        .set("Session-Expires", "180;refresher=uac")
        .set("Contact", f"<sip:bob@{BOB.host}:{BOB.port}>")
    )
    wire.send(Response(200, "OK", fields), BOB)
    expire(wire, 147.0)  # the 2xx of the refresh set 180 s: over 148 s after it (180 - 32)
    assert states(wire) == [AppearanceState.ACTIVE]
    expire(wire, 148.0)
    assert states(wire) == []


# -- line aliases (sca.md Q26) ------------------------------------------------------------------

ALIAS = f"sip:100@{DOMAIN}"


def test_q26_an_invite_to_an_alias_rings_the_lines_members_with_the_appearance_index() -> None:
    wire = line_core()
    register_member(wire, ALICE, 1)
    register_member(wire, CAROL, 2)
    wire.core.set_aliases({ALIAS: LINE})
    caller = Peer(Transport.UDP, "203.0.113.50", 5060)
    out = wire.deliver(request("INVITE", ALIAS, peer=caller, from_uri=f"sip:dave@{DOMAIN}"), caller)
    branches = {peer: m for m, peer in out if isinstance(m, Request)}
    assert set(branches) == {ALICE, CAROL}
    for branch in branches.values():
        assert branch.headers.values("Call-Info") == (f"<sip:{DOMAIN}>;appearance-index=1",)
    ringing = Response(180, "Ringing", branches[ALICE].headers.set("To", f"<{ALIAS}>;tag=m1"))
    wire.send(ringing, ALICE)
    [app] = wire.core.sca.appearances(LINE)
    assert (app.index, app.state) == (1, AppearanceState.ALERTING)
    assert wire.core.sca.appearances(ALIAS) == []


def test_q26_without_the_alias_the_same_invite_finds_nobody() -> None:
    wire = line_core()
    register_member(wire, ALICE, 1)
    caller = Peer(Transport.UDP, "203.0.113.50", 5060)
    response, _ = only_response(
        wire, request("INVITE", ALIAS, peer=caller, from_uri=f"sip:dave@{DOMAIN}"), caller
    )
    assert response.status == 404
    wire.core.set_aliases({ALIAS: LINE})
    wire.core.set_aliases({})
    response, _ = only_response(
        wire, request("INVITE", ALIAS, peer=caller, from_uri=f"sip:dave@{DOMAIN}", call_id="c2"), caller
    )
    assert response.status == 404


def test_q26_an_alias_of_a_line_nobody_registered_is_480_like_the_line() -> None:
    wire = line_core()
    wire.core.set_aliases({ALIAS: LINE})
    caller = Peer(Transport.UDP, "203.0.113.50", 5060)
    response, _ = only_response(
        wire, request("INVITE", ALIAS, peer=caller, from_uri=f"sip:dave@{DOMAIN}"), caller
    )
    assert response.status == 480


def test_q26_a_call_info_subscribe_to_an_alias_is_a_subscription_to_the_line() -> None:
    members = SharedLine(LINE, 2, frozenset({"alice"}))
    wire = Wire(make_core(require_auth=False, lines=[members]))
    wire.core.set_aliases({ALIAS: LINE})
    text = request("SUBSCRIBE", ALIAS, peer=ALICE, extra="Event: call-info\r\nExpires: 600\r\n")
    out = wire.deliver(text, ALICE)
    [accepted] = [m for m, _ in out if isinstance(m, Response)]
    assert accepted.status == 202
    [sub] = wire.core.sca.subscriptions()
    assert sub.aor == LINE
    [notify] = [m for m, _ in out if isinstance(m, Request) and m.method == "NOTIFY"]
    assert notify.headers.get("Call-Info") == f"<sip:{DOMAIN}>;appearance-index=*;appearance-state=idle"
    # A user who is no member of the line is refused through the alias as through the line.
    refused, _ = only_response(
        wire,
        request(
            "SUBSCRIBE",
            ALIAS,
            peer=BOB,
            from_uri=f"sip:bob@{DOMAIN}",
            call_id="sub-bob",
            extra="Event: call-info\r\nExpires: 600\r\n",
        ),
        BOB,
    )
    assert refused.status == 403


def test_q26_another_event_on_an_alias_is_489_like_on_the_line() -> None:
    wire = line_core()
    wire.core.set_aliases({ALIAS: LINE})
    response, _ = only_response(wire, request("SUBSCRIBE", ALIAS, extra="Event: presence\r\nExpires: 60\r\n"))
    assert response.status == 489
