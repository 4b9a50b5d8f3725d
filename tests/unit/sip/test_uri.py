from __future__ import annotations

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from scaserver.sip.errors import MalformedMessage
from scaserver.sip.uri import (
    AbsoluteUri,
    NameAddr,
    SipUri,
    TelUri,
    parse_name_addr,
    parse_uri,
    split_params,
    unescape,
)


def sip(text: str) -> SipUri:
    uri = parse_uri(text)
    assert isinstance(uri, SipUri)
    return uri


def test_full_sip_uri() -> None:
    uri = sip("SIP:alice:secret@Example.COM:5070;transport=TCP;lr?Subject=hi%20there&Priority=urgent")
    assert uri == SipUri(
        "sip",
        "alice",
        "secret",
        "Example.COM",
        5070,
        (("transport", "TCP"), ("lr", None)),
        (("Subject", "hi there"), ("Priority", "urgent")),
    )
    assert uri.transport == "tcp"
    assert uri.param("LR") == ""
    assert uri.param("maddr") is None
    assert uri.has_param("lr")
    assert str(uri) == "sip:alice:secret@Example.COM:5070;transport=TCP;lr?Subject=hi%20there&Priority=urgent"


def test_escapes_are_decoded_exactly_once() -> None:
    # RFC 4475 3.1.1.3
    uri = sip("sip:cal%6Cer@host5.example.net;%6C%72;n%61me=v%61lue%25%34%31")
    assert uri.user == "caller"
    assert uri.params == (("lr", None), ("name", "value%41"))
    assert str(uri) == "sip:caller@host5.example.net;lr;name=value%2541"
    assert parse_uri(str(uri)) == uri


def test_user_part_may_hold_a_semicolon() -> None:
    # RFC 4475 3.1.1.9
    uri = sip("sip:user;par=u%40example.net@example.com")
    assert (uri.user, uri.host, uri.params) == ("user;par=u@example.net", "example.com", ())


def test_nul_in_user_survives() -> None:
    uri = sip("sip:null-%00-null@example.com")
    assert uri.user == "null-\x00-null"
    assert str(uri) == "sip:null-%00-null@example.com"


def test_non_utf8_escapes_survive_as_surrogates() -> None:
    uri = sip("sip:%FF%C3%A9@h")
    assert uri.user == "\udcffé"
    assert str(uri) == "sip:%FF%C3%A9@h"


def test_ipv6_references() -> None:
    # RFC 5118 sections 4.3, 4.4, 4.10
    assert sip("sip:[2001:db8::10]:5070") == SipUri("sip", None, None, "2001:db8::10", 5070)
    ambiguous = sip("sip:[2001:db8::10:5070]")
    assert (ambiguous.host, ambiguous.port) == ("2001:db8::10:5070", None)
    assert sip("sip:user@[2001:db8:::192.0.2.1]").host == "2001:db8:::192.0.2.1"
    assert str(sip("sip:u@[::1]:5060")) == "sip:u@[::1]:5060"


@pytest.mark.parametrize(
    "text",
    [
        "sip:2001:db8::10",  # RFC 5118 4.2: IPv6 without brackets
        "<sip:user@example.com>",
        "sip:user@example.com; lr",
        "sip:user@exa mple.com",
        "sip:user@[2001:db8::1",
        "sip:user@[2001:db8::1]x",
        "sip:user@[zz]",
        "sip:user@host:70000",
        "sip:user@host:",
        "sip:user@host:12a",
        "sip:@host",
        "sip:user@",
        "sip:",
        "sip:us%2er@host%",
        "sip:us%zzer@host",
        "sip:us<er@host",
        "sip:user@host;;lr",
        "sip:user@host;=x",
        "sip:user@host?novalue",
        "sip:user@host?=x",
        "sip:user@-bad-.example.com",
        "noscheme",
        ":opaque",
        "1abc:opaque",
        "tel:abc;;",
        "tel:",
        "tel:+1;=x",
        "x-foo:has space",
    ],
)
def test_bad_uris_are_malformed(text: str) -> None:
    with pytest.raises(MalformedMessage):
        parse_uri(text)


def test_unknown_schemes_are_absolute_uris() -> None:
    # RFC 4475 3.3.2 and 3.3.3: the UAS answers 416 from this
    assert parse_uri("nobodyKnowsThisScheme:totallyopaquecontent") == AbsoluteUri(
        "nobodyknowsthisscheme", "totallyopaquecontent"
    )
    novel = parse_uri("soap.beep://192.0.2.103:3002")
    assert novel == AbsoluteUri("soap.beep", "//192.0.2.103:3002")
    assert str(novel) == "soap.beep://192.0.2.103:3002"


def test_tel_uri() -> None:
    tel = parse_uri("tel:+1-201-555-0123;phone-context=example.com;isub")
    assert tel == TelUri("+1-201-555-0123", (("phone-context", "example.com"), ("isub", None)))
    assert isinstance(tel, TelUri)
    assert tel.is_global
    assert tel.param("phone-context") == "example.com"
    assert str(tel) == "tel:+1-201-555-0123;phone-context=example.com;isub"


def test_param_editing() -> None:
    uri = sip("sip:a@h;transport=udp;lr")
    assert str(uri.with_params(("transport", "tcp"), ("ob", None))) == "sip:a@h;transport=tcp;lr;ob"
    assert str(uri.without_params("LR")) == "sip:a@h;transport=udp"
    assert str(uri.without_params()) == "sip:a@h"
    assert str(sip("sip:a@h?X=1").without_headers()) == "sip:a@h"
    assert uri.secure is False
    assert uri.default_port == 5060
    assert sip("sips:a@h").default_port == 5061


@pytest.mark.parametrize(
    ("text", "aor"),
    [
        ("sip:2001@PBX.example.com;transport=tcp?X=1", "sip:2001@pbx.example.com"),
        ("sip:2001@pbx.example.com:5060", "sip:2001@pbx.example.com"),
        ("sip:2001@pbx.example.com:5080", "sip:2001@pbx.example.com:5080"),
        # One AoR whatever the scheme (RFC 5630 sections 3.1.3 and 4).
        ("sips:2001@pbx.example.com:5061", "sip:2001@pbx.example.com"),
        ("sips:2001@pbx.example.com:5071", "sip:2001@pbx.example.com:5071"),
        ("sip:[2001:DB8::1]:5070", "sip:[2001:db8::1]:5070"),
        ("sip:null-%00-null@Example.com", "sip:null-%00-null@example.com"),
    ],
)
def test_aor_is_canonical(text: str, aor: str) -> None:
    assert sip(text).aor() == aor


def test_uri_equivalence_rfc3261_19_1_4() -> None:
    assert sip("sip:alice@AtLanTa.CoM;Transport=udp").matches(sip("sip:alice@atlanta.com;transport=UDP"))
    assert not sip("sip:ALICE@atlanta.com").matches(sip("sip:alice@atlanta.com"))
    assert not sip("sip:bob@biloxi.com").matches(sip("sip:bob@biloxi.com:5060"))
    assert not sip("sip:bob@biloxi.com").matches(sip("sip:bob@biloxi.com;transport=udp"))
    assert sip("sip:bob@biloxi.com;foo=1").matches(sip("sip:bob@biloxi.com"))
    assert not sip("sip:bob@biloxi.com;foo=1").matches(sip("sip:bob@biloxi.com;foo=2"))
    assert not sip("sip:bob@biloxi.com?a=1").matches(sip("sip:bob@biloxi.com"))
    assert not sip("sip:a@h").matches(parse_uri("tel:+1"))


def test_unescape() -> None:
    assert unescape("a%41%25") == "aA%"
    with pytest.raises(MalformedMessage):
        unescape("%4")


def test_name_addr_with_quoted_display_name() -> None:
    addr = parse_name_addr('"J Rosenberg \\\\\\""  <sip:jdrosen@example.com>  ;  tag = 98asjd8')
    assert addr.display_name == 'J Rosenberg \\"'
    assert addr.tag == "98asjd8"
    assert isinstance(addr.uri, SipUri)
    assert parse_name_addr(str(addr)) == addr


def test_name_addr_token_display_name_touching_bracket() -> None:
    # RFC 4475 3.1.1.6
    addr = parse_name_addr("caller<sip:caller@example.com>;tag=323")
    assert (addr.display_name, addr.tag) == ("caller", "323")


def test_addr_spec_params_are_header_params() -> None:
    # RFC 3261 20.10, RFC 4475 3.3.12
    addr = parse_name_addr("sip:+19725552222@gw1.example.net;unknownparam")
    assert addr.uri == SipUri("sip", "+19725552222", None, "gw1.example.net")
    assert addr.params == (("unknownparam", None),)
    assert str(addr) == "<sip:+19725552222@gw1.example.net>;unknownparam"
    inside = parse_name_addr("<sip:+19725552222@gw1.example.net;unknownparam>")
    assert isinstance(inside.uri, SipUri)
    assert inside.uri.params == (("unknownparam", None),)
    assert inside.params == ()


def test_name_addr_quoted_param_values_keep_quotes() -> None:
    addr = parse_name_addr('<sip:a@b>;+sip.instance="<urn:uuid:1;x>";expires=5')
    assert addr.param("+SIP.INSTANCE") == '"<urn:uuid:1;x>"'
    assert addr.param("expires") == "5"
    assert parse_name_addr('sip:a@b;+sip.instance="<urn:x>"').param("+sip.instance") == '"<urn:x>"'


def test_name_addr_spaces_inside_brackets_are_ignored() -> None:
    # RFC 4475 3.1.2.14: we choose the liberal outcome
    addr = parse_name_addr('"Watson, Thomas" < sip:t.watson@example.org >')
    assert addr.display_name == "Watson, Thomas"


def test_name_addr_editing() -> None:
    addr = parse_name_addr("<sip:a@b>;tag=1;x")
    assert str(addr.with_param("tag", "2")) == "<sip:a@b>;x;tag=2"
    assert str(addr.without_param("x")) == "<sip:a@b>;tag=1"
    assert addr.has_param("X")
    assert parse_name_addr("<sip:a@b>").tag is None


@pytest.mark.parametrize(
    "text",
    [
        "",
        '"Mr. J. User <sip:j.user@example.com>',  # RFC 4475 3.1.2.6
        "Bell, Alexander <sip:a.g.bell@bell-tel.com>",  # RFC 4475 3.1.2.15
        "sip:user@example.com?Route=%3Csip:sip.example.com%3E",  # RFC 4475 3.1.2.13
        '"Joe" <sip:joe@example.org>;;;;',  # RFC 4475 3.1.2.1
        "<sip:a@b",
        '"x" junk <sip:a@b>',
        '"x" sip:a@b',
        "<sip:a@b>;tag=",
        "<sip:a@b>;=x",
        "<sip:a@b> junk",
        '<sip:a@b>;p="unterminated',
        '<sip:a@b>;p="x" junk',
        "<sip:a@b>;p=a b",
        '"bad pair \\',
    ],
)
def test_bad_name_addrs_are_malformed(text: str) -> None:
    with pytest.raises(MalformedMessage):
        parse_name_addr(text)


def test_split_params() -> None:
    assert split_params("") == ()
    assert split_params(' ; a = 1 ; b ; c="x;y" ; d=[::1]') == (
        ("a", "1"),
        ("b", None),
        ("c", '"x;y"'),
        ("d", "[::1]"),
    )
    assert split_params(';c="q";d') == (("c", '"q"'), ("d", None))


_SAFE_TEXT = st.text(st.characters(exclude_categories=["Cs"]), min_size=1, max_size=12)
_TOKEN = st.text(st.sampled_from("abcXYZ019-.!%*_+`'~"), min_size=1, max_size=8)


_SIP_URIS = st.builds(
    SipUri,
    scheme=st.sampled_from(["sip", "sips"]),
    user=_SAFE_TEXT,
    password=st.none() | _SAFE_TEXT,
    host=st.sampled_from(["example.com", "192.0.2.1", "2001:db8::1", "h"]),
    port=st.none() | st.integers(0, 65535),
    params=st.lists(st.tuples(_SAFE_TEXT, st.none() | _SAFE_TEXT), max_size=3).map(tuple),
    headers=st.lists(st.tuples(_SAFE_TEXT, st.text(max_size=5)), max_size=2).map(tuple),
)


@given(_SIP_URIS)
def test_sip_uri_round_trips(uri: SipUri) -> None:
    assert parse_uri(str(uri)) == uri


@given(st.builds(SipUri, scheme=st.just("sip"), user=st.none(), password=st.none(), host=st.just("h")))
def test_sip_uri_without_user_round_trips(uri: SipUri) -> None:
    assert parse_uri(str(uri)) == uri


@given(display=st.none() | st.text(st.characters(exclude_categories=["Cs", "Cc"]), max_size=10), tag=_TOKEN)
def test_name_addr_round_trips(display: str | None, tag: str) -> None:
    addr = NameAddr(display, SipUri("sip", "bob", None, "example.com"), (("tag", tag),))
    assert parse_name_addr(str(addr)) == addr


_PLAIN_URI_TEXT = st.builds(
    "{}:{}{}{}{}".format,
    st.sampled_from(["sip", "sips"]),
    st.sampled_from(["", "bob@", "a.b-c&d=e+f$g,h@", "0@"]),
    st.sampled_from(["example.com", "EXAMPLE.com.", "192.0.2.1", "h_1", "h"]),
    st.sampled_from(["", ":5060", ":0", ":05060", ":0005", ":65535"]),
    st.lists(st.sampled_from([";lr", ";transport=TCP", ";a=", ";x=[::1]", ";ob;gr=u:1", ";m=a/b:c"])).map(
        "".join
    ),
)


@given(_PLAIN_URI_TEXT)
def test_sip_uri_text_read_once_is_the_written_text(text: str) -> None:
    uri = sip(text)
    written = str(attrs.evolve(uri))  # a new value, whose text is written from its fields
    assert str(uri) == written
    first = str(uri)
    assert str(uri) is first
    assert attrs.evolve(uri) == uri and hash(attrs.evolve(uri)) == hash(uri)


def test_sip_uri_text_follows_its_edits() -> None:
    uri = sip("sip:bob@example.com:5060;transport=udp")
    assert str(uri) == "sip:bob@example.com:5060;transport=udp"
    assert str(uri.with_params(("transport", "tcp"))) == "sip:bob@example.com:5060;transport=tcp"
    assert str(uri.without_params()) == "sip:bob@example.com:5060"
    assert str(attrs.evolve(uri, port=None)) == "sip:bob@example.com;transport=udp"
    assert str(sip("sip:bob@example.com:05060")) == "sip:bob@example.com:5060"
    assert repr(uri) == (
        "SipUri(scheme='sip', user='bob', password=None, host='example.com', port=5060,"
        " params=(('transport', 'udp'),), headers=())"
    )


@pytest.mark.parametrize(
    ("params", "tag"),
    [
        ((), None),
        ((("tag", "a1"),), "a1"),
        ((("TAG", "a1"),), "a1"),
        ((("Tag", None),), None),
        ((("tag", ""),), None),
        ((("x", "1"), ("tag", "first"), ("tag", "second")), "first"),
        ((("tags", "no"),), None),
    ],
)
def test_name_addr_tag_is_the_first_tag_param(
    params: tuple[tuple[str, str | None], ...], tag: str | None
) -> None:
    addr = NameAddr(None, sip("sip:a@h"), params)
    assert addr.tag == tag
    assert addr.tag == (addr.param("tag") or None)


def test_name_addr_tag_follows_edits_and_stays_out_of_equality() -> None:
    addr = parse_name_addr("<sip:a@h>;tag=one")
    assert addr.with_param("tag", "two").tag == "two"
    assert addr.without_param("tag").tag is None
    assert attrs.evolve(addr, params=()).tag is None
    assert addr == NameAddr(None, sip("sip:a@h"), (("tag", "one"),))
    assert repr(addr) == f"NameAddr(display_name=None, uri={addr.uri!r}, params=(('tag', 'one'),))"
    assert NameAddr.__match_args__ == ("display_name", "uri", "params")


@pytest.mark.parametrize(
    ("text", "transport"),
    [
        ("sip:a@h", None),
        ("sip:a@h;transport=TCP", "tcp"),
        ("sip:a@h;lr;Transport=tls", "tls"),
        ("sip:a@h;transport", None),
        ("sip:a@h;transport=", None),
        ("sip:a@h;transport=udp;transport=tcp", "udp"),
        ("sip:a@h;transports=tcp", None),
    ],
)
def test_transport_is_the_first_transport_param_in_lower_case(text: str, transport: str | None) -> None:
    uri = sip(text)
    assert uri.transport == transport
    assert uri.transport == ((uri.param("transport") or "").lower() or None)
