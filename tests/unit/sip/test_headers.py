from __future__ import annotations

import attrs
import pytest

from scaserver.sip import headers
from scaserver.sip.errors import MalformedMessage
from scaserver.sip.headers import (
    STAR,
    AuthHeader,
    CSeq,
    EventHeader,
    Via,
    format_auth,
    parse_auth,
    parse_contacts,
    parse_cseq,
    parse_event,
    parse_max_forwards,
    parse_uint32,
    parse_via,
)
from scaserver.sip.message import Headers, Request, Response
from scaserver.sip.uri import SipUri


def test_via_with_lws_everywhere() -> None:
    # RFC 4475 3.1.1.1
    via = parse_via("SIP  / 2.0  / TCP     spindle.example.com   ;  branch  =   z9hG4bK9ikj8")
    assert via == Via("SIP/2.0", "TCP", "spindle.example.com", None, (("branch", "z9hG4bK9ikj8"),))
    assert str(via) == "SIP/2.0/TCP spindle.example.com;branch=z9hG4bK9ikj8"
    assert via.rfc3261_branch


def test_via_fields() -> None:
    via = parse_via("SIP/2.0/udp 10.0.0.1:5062;rport;branch=z9hG4bKx;received=192.0.2.1")
    assert (via.transport, via.sent_by, via.branch, via.received) == (
        "UDP",
        ("10.0.0.1", 5062),
        "z9hG4bKx",
        "192.0.2.1",
    )
    assert via.has_rport and via.rport is None
    answered = via.with_param("rport", "4000").with_param("maddr", "x")
    assert answered.rport == 4000
    assert str(answered) == "SIP/2.0/UDP 10.0.0.1:5062;rport=4000;branch=z9hG4bKx;received=192.0.2.1;maddr=x"
    assert parse_via("SIP/2.0/UDP h").branch is None
    assert not parse_via("SIP/2.0/UDP h;branch=1234").rfc3261_branch
    assert parse_via("SIP/2.0/UDP h : 5060;branch=z9hG4bKa").port == 5060


def test_via_branch_is_the_first_branch_parameter_whatever_the_case_of_its_name() -> None:
    assert parse_via("SIP/2.0/UDP h;BRANCH=z9hG4bKa;branch=z9hG4bKb").branch == "z9hG4bKa"
    assert parse_via("SIP/2.0/UDP h;rport;Branch=z9hG4bKc").branch == "z9hG4bKc"
    # An empty branch is refused by the parser; a value built with one has no branch.
    assert Via("SIP/2.0", "UDP", "h", None, (("branch", None), ("branch", "z9hG4bKd"))).branch is None
    assert Via("SIP/2.0", "UDP", "h", None, (("Branch", ""),)).branch is None
    assert parse_via("SIP/2.0/UDP h;branches=z9hG4bKe").branch is None


def test_via_ipv6_and_received_with_or_without_brackets() -> None:
    # RFC 5118 4.5
    with_brackets = parse_via("SIP/2.0/UDP [2001:db8::9:1];received=[2001:db8::9:255];branch=z9hG4bKas3")
    without = parse_via("SIP/2.0/UDP [2001:db8::9:1]:6050;received=2001:db8::9:255;branch=z9hG4bKas3")
    assert with_brackets.received == without.received == "2001:db8::9:255"
    assert (without.host, without.port) == ("2001:db8::9:1", 6050)
    assert str(without).startswith("SIP/2.0/UDP [2001:db8::9:1]:6050;")


@pytest.mark.parametrize(
    "text",
    [
        "SIP/2.0 host",
        "SIP/2.0/ host",
        "SIP/2.0/UDP",
        "SIP/2.0/UDP ;branch=x",
        "SIP/2.0/UDP 192.0.2.15;;",  # RFC 4475 3.1.2.1
        ";",
        "SIP/2.0/UDP h;branch=",
        "SIP/2.0/UDP h;rport=x",
        "SIP/2.0/UDP h;rport=70000",
        "SIP/2.0/UDP h;ttl=300",
        "SIP/2.0/UDP h;ttl",
        "SIP/2.0/UDP h:99999",
        "SIP/2.0/U<P h",
    ],
)
def test_bad_vias(text: str) -> None:
    with pytest.raises(MalformedMessage):
        parse_via(text)


def test_cseq() -> None:
    assert parse_cseq("0009\t INVITE") == CSeq(9, "INVITE")
    assert parse_cseq(f"{2**32 - 1} ACK") == CSeq(2**32 - 1, "ACK")
    assert str(CSeq(4, "BYE")) == "4 BYE"
    for bad in ("4294967296 INVITE", "36893488147419103232 REGISTER", "1", "x INVITE", "1 IN<VITE", "1 A B"):
        with pytest.raises(MalformedMessage):
            parse_cseq(bad)


def test_uint32_bounds() -> None:
    assert parse_uint32(" 00000000000000000001 ") == 1
    for bad in ("", "-1", "1.5", "4294967296", "\u0661"):
        with pytest.raises(MalformedMessage):
            parse_uint32(bad)


def test_max_forwards_bounds() -> None:
    assert parse_max_forwards("0068") == 68
    assert parse_max_forwards("255") == 255
    with pytest.raises(MalformedMessage):
        parse_max_forwards("256")


def test_contacts() -> None:
    found = parse_contacts(['"A" <sip:a@h>;expires=60;q=0.5', "sip:b@h;expires=0"])
    assert isinstance(found, list)
    assert [c.param("expires") for c in found] == ["60", "0"]
    assert parse_contacts([" * "]) is STAR
    assert str(STAR) == "*"
    assert parse_contacts([]) == []


@pytest.mark.parametrize(
    "values",
    [
        ["*", "sip:a@h"],
        ["<sip:a@h>;expires=280297596632815"],
        ["<sip:a@h>;q=2"],
        ["<sip:a@h>;q"],
        ["<sip:a@h>;q=x"],
    ],
)
def test_bad_contacts(values: list[str]) -> None:
    with pytest.raises(MalformedMessage):
        parse_contacts(values)


def test_auth_credentials_round_trip() -> None:
    text = (
        'Digest username="bob", realm="a, \\"b\\"", nonce="n", uri="sip:a@b", response="ff",'
        ' algorithm=MD5, qop=auth, nc=00000001, cnonce="c"'
    )
    auth = parse_auth(text)
    assert auth.scheme == "Digest"
    assert auth.param("REALM") == 'a, "b"'
    assert auth.param("nc") == "00000001"
    assert auth.param("missing") is None
    assert parse_auth(format_auth(auth)) == auth
    assert str(auth) == format_auth(auth)


def test_auth_challenge_format() -> None:
    challenge = AuthHeader(
        "Digest", (("realm", "r"), ("qop", "auth"), ("algorithm", "MD5"), ("stale", "TRUE"))
    )
    assert format_auth(challenge, bare=headers.CHALLENGE_TOKENS) == (
        'Digest realm="r", qop="auth", algorithm=MD5, stale=TRUE'
    )


def test_auth_unknown_scheme_and_token68() -> None:
    # RFC 4475 3.3.7: an unknown scheme parses
    assert parse_auth("NoOneKnowsThisScheme opaque-data=here") == AuthHeader(
        "NoOneKnowsThisScheme", (("opaque-data", "here"),)
    )
    basic = parse_auth("Basic dXNlcjpwYXNz==")
    assert basic.token68 == "dXNlcjpwYXNz=="
    assert format_auth(basic) == "Basic dXNlcjpwYXNz=="
    assert parse_auth("Digest") == AuthHeader("Digest")
    assert format_auth(AuthHeader("Digest")) == "Digest"


@pytest.mark.parametrize(
    "text", ["", "Di<gest a=b", "Digest a=b, c", 'Digest a="x" y', "Digest =b", "Digest a=b, c="]
)
def test_bad_auth(text: str) -> None:
    with pytest.raises(MalformedMessage):
        parse_auth(text)


def test_event() -> None:
    assert parse_event("call-info") == EventHeader("call-info")
    parsed = parse_event("dialog ; id=7;sla")
    assert (parsed.package, parsed.id, parsed.param("sla")) == ("dialog", "7", "")
    assert str(parsed) == "dialog;id=7;sla"
    with pytest.raises(MalformedMessage):
        parse_event("a b")


REQUEST = Request(
    "INVITE",
    "sip:b@h",
    Headers.of(
        ("v", "SIP/2.0/UDP a;branch=z9hG4bK1, SIP/2.0/TCP b;branch=z9hG4bK2"),
        ("Via", "SIP/2.0/UDP c;branch=z9hG4bK3"),
        ("f", "<sip:a@h>;tag=1"),
        ("t", "sip:b@h"),
        ("CSeq", "1 INVITE"),
        ("m", "<sip:a@1.2.3.4>, <sip:a@5.6.7.8>"),
        ("Route", "<sip:p1;lr>, <sip:p2;lr>"),
        ("Record-Route", "<sip:rr;lr>"),
        ("Max-Forwards", "70"),
        ("Expires", "3600"),
        ("o", "call-info"),
        ("Require", "100rel, timer"),
    ),
)


def test_message_accessors() -> None:
    assert [v.host for v in headers.vias(REQUEST)] == ["a", "b", "c"]
    assert headers.top_via(REQUEST).branch == "z9hG4bK1"
    assert headers.cseq(REQUEST) == CSeq(1, "INVITE")
    assert headers.from_addr(REQUEST).tag == "1"
    assert headers.to_addr(REQUEST).tag is None
    found = headers.contacts(REQUEST)
    assert isinstance(found, list)
    assert [c.uri for c in found] == [
        SipUri("sip", "a", None, "1.2.3.4"),
        SipUri("sip", "a", None, "5.6.7.8"),
    ]
    assert [str(r.uri) for r in headers.routes(REQUEST)] == ["sip:p1;lr", "sip:p2;lr"]
    assert [str(r.uri) for r in headers.record_routes(REQUEST)] == ["sip:rr;lr"]
    assert headers.max_forwards(REQUEST) == 70
    assert headers.expires(REQUEST) == 3600
    assert headers.event(REQUEST) == EventHeader("call-info")
    assert headers.option_tags(REQUEST, "Require") == ("100rel", "timer")
    assert headers.parse_list([" INVITE", "", "ACK "]) == ("INVITE", "ACK")


def test_accessors_on_a_bare_message() -> None:
    bare = Response(200, "OK")
    assert headers.max_forwards(bare) is None
    assert headers.expires(bare) is None
    assert headers.event(bare) is None
    assert headers.contacts(bare) == []
    assert headers.vias(bare) == []
    for accessor in (headers.top_via, headers.cseq, headers.from_addr, headers.to_addr):
        with pytest.raises(MalformedMessage):
            accessor(bare)


def test_expires_overflow_is_malformed() -> None:
    # RFC 4475 3.1.2.4: never wrap to a small number
    with pytest.raises(MalformedMessage):
        headers.expires(Response(200, "OK", Headers.of(("Expires", "1" + "0" * 100))))


def test_with_headers_keeps_every_other_field() -> None:
    """``with_headers`` builds the value with its constructor: a field added to Request or
    Response must be carried over there too."""
    headers = Headers.of(("Via", "SIP/2.0/UDP h;branch=z9hG4bKnew"))
    request = Request("NOTIFY", "sip:a@example.com", Headers.of(("CSeq", "1 NOTIFY")), b"body", "SIP/2.0")
    response = Response(
        486, "Busy Here", Headers.of(("CSeq", "1 INVITE")), b"x", "SIP/2.0", detail="why", cause="busy"
    )
    for message in (request, response):
        changed = message.with_headers(headers)
        assert changed.headers is headers
        for field in attrs.fields(type(message)):
            if field.name != "headers":
                assert getattr(changed, field.name) == getattr(message, field.name), field.name


def test_a_via_we_sent_is_returned_without_parsing_and_the_memory_is_bounded() -> None:
    first = Via("SIP/2.0", "UDP", "192.0.2.1", 5060, (("branch", "z9hG4bKfirst"),))
    text = headers.sent_via_text(first)
    assert text == "SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKfirst"
    assert parse_via(text) is first
    for number in range(headers.SENT_VIA_MEMORY):
        branch = f"z9hG4bKforget-{number}"
        headers.sent_via_text(Via("SIP/2.0", "UDP", "192.0.2.1", 5060, (("branch", branch),)))
    again = parse_via(text)
    assert again is not first  # forgotten: parsed from its text
    assert again == first


def test_a_via_sent_again_is_remembered_as_the_newest() -> None:
    again = Via("SIP/2.0", "UDP", "192.0.2.1", 5060, (("branch", "z9hG4bKsent-again"),))
    text = headers.sent_via_text(again)
    for number in range(headers.SENT_VIA_MEMORY - 1):
        branch = f"z9hG4bKfill-{number}"
        headers.sent_via_text(Via("SIP/2.0", "UDP", "192.0.2.1", 5060, (("branch", branch),)))
    resent = Via("SIP/2.0", "UDP", "192.0.2.1", 5060, (("branch", "z9hG4bKsent-again"),))
    headers.sent_via_text(resent)  # the oldest entry, sent once more, moves to the end
    headers.sent_via_text(Via("SIP/2.0", "UDP", "192.0.2.1", 5060, (("branch", "z9hG4bKone-more"),)))
    assert parse_via(text) is resent


def test_header_look_ups_find_the_first_line_by_any_spelling_of_its_name() -> None:
    fields = Headers.of(("Via", "SIP/2.0/UDP a"), ("Call-ID", "c1"), ("v", "SIP/2.0/UDP b"), ("i", "c2"))
    for spelling in ("Call-ID", "call-id", "CALL-ID", "i"):
        assert fields.get(spelling) == "c1"
        assert fields.lines(spelling) == ("c1", "c2")
        assert spelling in fields
    for spelling in ("Via", "via", "v", "V"):
        assert fields.get(spelling) == "SIP/2.0/UDP a"
        assert fields.values(spelling) == ("SIP/2.0/UDP a", "SIP/2.0/UDP b")
    for absent in ("Route", "route", "r", "X-Call-ID"):
        assert fields.get(absent) is None
        assert fields.lines(absent) == ()
        assert absent not in fields
