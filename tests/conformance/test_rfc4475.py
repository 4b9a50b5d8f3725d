"""RFC 4475 torture messages at the message-layer level (rfc4475/EXPECTED.md).

Each file's outcome here is what ``parse_message`` plus ``check_request`` (or
``check_response``) decide.  Role-dependent answers (416, 420, 483, 501, 404,
401, 415, 406) belong to the dispatcher and engines and are tested there; these
tests check that the layer exposes what those decisions need.
"""

from __future__ import annotations

import pytest

from scaserver.sip import headers
from scaserver.sip.errors import MalformedMessage, SipError, VersionNotSupported
from scaserver.sip.message import Request, Response
from scaserver.sip.parser import parse_message
from scaserver.sip.uri import AbsoluteUri, SipUri, parse_uri
from scaserver.sip.validation import unsupported_options
from tests.conformance.corpus import corpus_dir, verdict


def load(name: str) -> bytes:
    return (corpus_dir("rfc4475") / name).read_bytes()


def accepted(name: str) -> Request:
    result = verdict(load(name))
    assert isinstance(result, Request), f"{name}: {result!r}"
    return result


def uri_of(text: str) -> SipUri:
    uri = parse_uri(text)
    assert isinstance(uri, SipUri)
    return uri


# Files with nothing to check beyond "the layer accepts the request".
PLAIN_ACCEPT = [
    "longreq.dat",
    "transports.dat",
    "mpart01.dat",
    "invut.dat",
    "sdp01.dat",
    "baddate.dat",
    "regescrt.dat",
    "zeromf.dat",
    "bext01.dat",
    "regaut01.dat",
    "unkscm.dat",
    "novelsc.dat",
    "unksm2.dat",
    "lwsdisp.dat",
    "inv2543.dat",
    "intmeth.dat",
    "badaspec.dat",
]

# File -> (status, why).  "400 or liberal" rows: the choice is stated per file.
REJECTED = {
    "badinv01.dat": (400, "stray ';' and ',' in Via and Contact"),
    "clerr.dat": (400, "Content-Length larger than the datagram's body"),
    "ncl.dat": (400, "negative Content-Length"),
    "scalar02.dat": (400, "CSeq over 2**32-1"),
    "quotbal.dat": (400, "unterminated quoted string; we choose 400, not inferring the quote"),
    "ltgtruri.dat": (400, "Request-URI in <>; we choose 400"),
    "lwsruri.dat": (400, "LWS inside the Request-URI; we choose 400"),
    "lwsstart.dat": (400, "several SPs in the Request-Line; we choose 400"),
    "trws.dat": (400, "SPs after SIP/2.0; we choose 400"),
    "escruri.dat": (400, "escaped headers in the Request-URI; we choose 400"),
    "regbadct.dat": (400, "Contact addr-spec with '?' and no <>; we choose 400"),
    "baddn.dat": (400, "no empty line ends the header section: a truncated datagram"),
    "badvers.dat": (505, "SIP/7.0"),
    "mismatch01.dat": (400, "CSeq method differs from the Request-Line"),
    "mismatch02.dat": (400, "CSeq method differs; 501 is preferred but needs the role, 400 is allowed"),
    "badbranch.dat": (400, "branch is the bare magic cookie; we choose 400"),
    "insuf.dat": (400, "no Call-ID, From or To"),
    "multi01.dat": (400, "several Call-ID, To, From, CSeq, Max-Forwards"),
    "mcl01.dat": (400, "conflicting Content-Length values"),
}

RESPONSES = ["unreason.dat", "noreason.dat", "bcast.dat", "scalarlg.dat", "bigcode.dat"]

SPECIFIC = [
    "wsinv.dat",
    "esc01.dat",
    "escnull.dat",
    "esc02.dat",
    "dblreq.dat",
    "semiuri.dat",
    "cparam01.dat",
    "cparam02.dat",
]


def test_every_corpus_file_has_an_outcome() -> None:
    on_disk = {path.name for path in corpus_dir("rfc4475").glob("*.dat")}
    assert len(on_disk) == 49
    assert on_disk == set(PLAIN_ACCEPT) | set(REJECTED) | set(RESPONSES) | set(SPECIFIC)


@pytest.mark.parametrize("name", PLAIN_ACCEPT)
def test_accepted(name: str) -> None:
    request = accepted(name)
    # every typed header the core relies on is usable
    headers.vias(request)
    headers.cseq(request)
    headers.from_addr(request)
    headers.to_addr(request)


@pytest.mark.parametrize("name", sorted(REJECTED))
def test_rejected_with_status(name: str) -> None:
    status, why = REJECTED[name]
    result = verdict(load(name))
    assert isinstance(result, SipError), f"{name} accepted; expected {status}: {why}"
    assert result.status == status, f"{name}: {result!r}"


def test_rejected_requests_with_usable_headers_keep_them_for_the_400() -> None:
    # clerr, ncl and mcl01 fail in the parser: the partial request lets the server answer.
    for name in ("clerr.dat", "ncl.dat", "mcl01.dat"):
        with pytest.raises(MalformedMessage) as caught:
            parse_message(load(name))
        partial = caught.value.partial
        assert partial is not None
        assert headers.top_via(partial).branch
        assert partial.call_id


def test_badvers_is_505() -> None:
    assert isinstance(verdict(load("badvers.dat")), VersionNotSupported)


def test_baddn_with_its_empty_line_is_400_for_the_display_name() -> None:
    path = corpus_dir("rfc4475") / "extra" / "baddn-crlf-terminated.dat"
    if not path.exists():
        pytest.skip("extra/baddn-crlf-terminated.dat is not available")
    result = verdict(path.read_bytes())
    assert isinstance(result, MalformedMessage)
    assert "display name" in result.detail


def test_wsinv() -> None:
    request = accepted("wsinv.dat")
    assert headers.max_forwards(request) == 68
    assert headers.cseq(request) == headers.CSeq(9, "INVITE")
    assert headers.from_addr(request).display_name == 'J Rosenberg \\"'
    assert headers.from_addr(request).tag == "98asjd8"
    assert headers.to_addr(request).tag == "1918181833n"
    assert [(via.transport, via.host, via.branch) for via in headers.vias(request)] == [
        ("UDP", "192.0.2.2", "390skdjuw"),
        ("TCP", "spindle.example.com", "z9hG4bK9ikj8"),
        ("UDP", "192.168.255.111", "z9hG4bK30239"),
    ]
    assert request.headers.get("Subject") == ""
    assert request.headers.get("NewFangledHeader") == "newfangled value continued newfangled value"
    assert request.headers.get("UnknownHeaderWithUnusualValue") == ";;,,;;,;"
    contact = headers.contacts(request)
    assert isinstance(contact, list)
    assert contact[0].display_name == 'Quoted string ""'
    assert contact[0].params == (("newparam", "newvalue"), ("secondparam", None), ("q", "0.33"))
    assert len(request.body) == 150


def test_esc01_decodes_once() -> None:
    request = accepted("esc01.dat")
    assert uri_of(request.uri).user == "sips:user@example.com"
    to_uri = headers.to_addr(request).uri
    assert isinstance(to_uri, SipUri)
    assert to_uri.user == "user"
    contact = headers.contacts(request)
    assert isinstance(contact, list)
    contact_uri = contact[0].uri
    assert isinstance(contact_uri, SipUri)
    assert contact_uri.user == "caller"
    assert contact_uri.params == (("lr", None), ("name", "value%41"))


def test_escnull_keeps_the_nul_and_two_distinct_contacts() -> None:
    request = accepted("escnull.dat")
    to_uri = headers.to_addr(request).uri
    assert isinstance(to_uri, SipUri)
    assert to_uri.user == "null-\x00-null"
    assert to_uri.aor() == "sip:null-%00-null@example.com"
    contact = headers.contacts(request)
    assert isinstance(contact, list)
    users = [c.uri.user for c in contact if isinstance(c.uri, SipUri)]
    assert users == ["\x00", "\x00\x00"]
    assert contact[0] != contact[1]


def test_esc02_is_not_register() -> None:
    request = accepted("esc02.dat")
    assert request.method == "RE%47IST%45R"
    assert request.method != "REGISTER"
    assert len(request.headers.values("Contact")) == 2
    assert request.headers.get("C%6Fntact") == "<sip:alias2@host2.example.com>"
    assert headers.from_addr(request).display_name == "%Z%45"


def test_dblreq_yields_only_the_register() -> None:
    request = accepted("dblreq.dat")
    assert request.method == "REGISTER"
    assert request.body == b""
    assert b"INVITE" not in request.body


def test_semiuri_user_part() -> None:
    uri = uri_of(accepted("semiuri.dat").uri)
    assert (uri.user, uri.host, uri.params) == ("user;par=u@example.net", "example.com", ())


def test_cparam01_param_is_a_contact_param() -> None:
    contact = headers.contacts(accepted("cparam01.dat"))
    assert isinstance(contact, list)
    assert str(contact[0].uri) == "sip:+19725552222@gw1.example.net"
    assert contact[0].params == (("unknownparam", None),)


def test_cparam02_param_stays_in_the_uri() -> None:
    contact = headers.contacts(accepted("cparam02.dat"))
    assert isinstance(contact, list)
    assert str(contact[0].uri) == "sip:+19725552222@gw1.example.net;unknownparam"
    assert contact[0].params == ()


def test_regescrt_keeps_the_escaped_header_in_the_contact_uri() -> None:
    contact = headers.contacts(accepted("regescrt.dat"))
    assert isinstance(contact, list)
    uri = contact[0].uri
    assert isinstance(uri, SipUri)
    assert uri.headers == (("Route", "<sip:sip.example.com>"),)
    assert "?Route=%3Csip:sip.example.com%3E" in str(uri)


def test_intmeth_method_and_odd_uri() -> None:
    request = accepted("intmeth.dat")
    assert request.method == "!interesting-Method0123456789_*+`.%indeed'~"
    uri = uri_of(request.uri)
    assert uri.user == "1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*"
    assert uri.password == "&it+has=1,weird!*pas$wo~d_too.(doesn't-it)"
    assert headers.to_addr(request).display_name == "BEL:\x07 NUL:\x00 DEL:\x7f"


def test_role_dependent_files_expose_what_the_dispatcher_needs() -> None:
    assert isinstance(parse_uri(accepted("unkscm.dat").uri), AbsoluteUri)  # 416
    assert isinstance(parse_uri(accepted("novelsc.dat").uri), AbsoluteUri)  # 416
    unksm2 = accepted("unksm2.dat")
    assert isinstance(headers.to_addr(unksm2).uri, AbsoluteUri)  # registrar 400
    bext = accepted("bext01.dat")
    assert unsupported_options(bext, "Require", ()) == ("nothingSupportsThis", "nothingSupportsThisEither")
    assert unsupported_options(bext, "Proxy-Require", ()) == (
        "noProxiesSupportThis",
        "norDoAnyProxiesSupportThis",
    )
    assert headers.max_forwards(accepted("zeromf.dat")) == 0  # 483 when proxied
    assert headers.max_forwards(accepted("inv2543.dat")) is None  # treated as 70
    assert headers.top_via(accepted("inv2543.dat")).branch is None
    assert accepted("inv2543.dat").body.startswith(b"v=0")
    assert parse_uri(accepted("intmeth.dat").uri)  # 404 as a proxy / 501 as UAS
    authorization = headers.parse_auth(accepted("regaut01.dat").headers.get("Authorization") or "")
    assert authorization.scheme == "NoOneKnowsThisScheme"


@pytest.mark.parametrize("name", ["unreason.dat", "noreason.dat", "bcast.dat"])
def test_responses_parse(name: str) -> None:
    result = verdict(load(name))
    assert isinstance(result, Response)


def test_unreason_and_noreason_phrases() -> None:
    unreason = parse_message(load("unreason.dat"))
    assert isinstance(unreason, Response)
    assert unreason.status == 200
    assert "\udc00" not in unreason.reason and len(unreason.reason) > 20
    noreason = parse_message(load("noreason.dat"))
    assert isinstance(noreason, Response)
    assert (noreason.status, noreason.reason) == (100, "")


def test_bcast_second_via_is_broadcast() -> None:
    result = verdict(load("bcast.dat"))
    assert isinstance(result, Response)
    assert headers.vias(result)[1].host == "255.255.255.255"


@pytest.mark.parametrize("name", ["scalarlg.dat", "bigcode.dat"])
def test_bad_responses_are_flagged_for_dropping(name: str) -> None:
    assert isinstance(verdict(load(name)), MalformedMessage)
