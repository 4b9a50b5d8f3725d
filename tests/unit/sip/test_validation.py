from __future__ import annotations

import pytest

from scaserver.sip.endpoint import AdmittedResponse, admit
from scaserver.sip.errors import BadRequest, MalformedMessage, SipError, VersionNotSupported
from scaserver.sip.keys import ClientKey
from scaserver.sip.message import Headers, Peer, Request, Response, Transport
from scaserver.sip.validation import check_request, check_response, unsupported_options

BASE = (
    ("Via", "SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK77"),
    ("From", "<sip:alice@example.com>;tag=1"),
    ("To", "<sip:bob@example.com>"),
    ("Call-ID", "c1"),
    ("CSeq", "7 OPTIONS"),
    ("Max-Forwards", "70"),
)


def request(*fields: tuple[str, str], uri: str = "sip:bob@example.com", version: str = "SIP/2.0") -> Request:
    return Request("OPTIONS", uri, Headers.of(*fields), b"", version)


def replaced(name: str, value: str | None) -> tuple[tuple[str, str], ...]:
    fields = tuple(field for field in BASE if field[0] != name)
    return fields if value is None else (*fields, (name, value))


def test_valid_request_passes() -> None:
    check_request(request(*BASE))
    check_request(request(*replaced("Max-Forwards", None)))  # RFC 2543 peers send none


def test_other_version_is_505() -> None:
    with pytest.raises(VersionNotSupported):
        check_request(request(*BASE, version="SIP/7.0"))


@pytest.mark.parametrize(
    ("fields", "uri", "error"),
    [
        (BASE, "<sip:bob@example.com>", MalformedMessage),
        (BASE, "sip:bob@example.com?Route=%3Csip:x%3E", BadRequest),
        (replaced("Via", None), "sip:b@h", BadRequest),
        (replaced("From", None), "sip:b@h", BadRequest),
        (replaced("To", None), "sip:b@h", BadRequest),
        (replaced("Call-ID", None), "sip:b@h", BadRequest),
        (replaced("CSeq", None), "sip:b@h", BadRequest),
        (replaced("Call-ID", ""), "sip:b@h", BadRequest),
        ((*BASE, ("To", "<sip:x@y>")), "sip:b@h", BadRequest),
        ((*BASE, ("Max-Forwards", "5")), "sip:b@h", BadRequest),
        (replaced("Via", ""), "sip:b@h", MalformedMessage),
        (replaced("Via", "SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK"), "sip:b@h", BadRequest),
        (replaced("Via", "SIP/2.0/UDP a;branch=z9hG4bK1, bogus"), "sip:b@h", MalformedMessage),
        (replaced("From", "<sip:a@b"), "sip:b@h", MalformedMessage),
        (replaced("To", '"unbalanced <sip:a@b>'), "sip:b@h", MalformedMessage),
        (replaced("CSeq", "7 INVITE"), "sip:b@h", BadRequest),
        (replaced("CSeq", "4294967296 OPTIONS"), "sip:b@h", MalformedMessage),
        (replaced("Max-Forwards", "300"), "sip:b@h", MalformedMessage),
        ((*BASE, ("Contact", "<sip:a@b>;;")), "sip:b@h", MalformedMessage),
    ],
)
def test_faults_every_role_rejects(
    fields: tuple[tuple[str, str], ...], uri: str, error: type[SipError]
) -> None:
    with pytest.raises(error) as caught:
        check_request(request(*fields, uri=uri))
    assert caught.value.status == 400


def test_unknown_uri_schemes_pass_for_the_role_to_decide() -> None:
    check_request(request(*BASE, uri="nobodyKnowsThisScheme:totallyopaquecontent"))


def test_check_response() -> None:
    good = Response(200, "OK", Headers.of(*(field for field in BASE if field[0] != "Max-Forwards")))
    check_response(good)
    for broken in (
        good.with_headers(good.headers.set("CSeq", "9292394834772304023312 OPTIONS")),
        good.with_headers(good.headers.remove("Via")),
        good.with_headers(good.headers.add("Call-ID", "second")),
    ):
        with pytest.raises(MalformedMessage):
            check_response(broken)


def test_unsupported_options() -> None:
    req = request(*BASE, ("Require", "100rel, Foo"), ("Require", "foo, bar"), ("Proxy-Require", "baz"))
    assert unsupported_options(req, "Require", {"100RELL", "100rel"}) == ("Foo", "bar")
    assert unsupported_options(req, "Proxy-Require", ()) == ("baz",)
    assert unsupported_options(req, "Proxy-Require", ("baz",)) == ()


def test_check_response_returns_the_top_via_and_cseq_it_parsed() -> None:
    fields = [field for field in BASE if field[0] != "Max-Forwards"]
    fields.insert(1, ("Via", "SIP/2.0/UDP 192.0.2.9;branch=z9hG4bK-second"))
    via, sequence = check_response(Response(200, "OK", Headers.of(*fields)))
    assert (via.host, via.branch) == ("192.0.2.1", "z9hG4bK77")
    assert (sequence.number, sequence.method) == (7, "OPTIONS")


def test_a_response_is_admitted_with_the_client_key_its_top_via_and_cseq_name() -> None:
    """The key the transaction layer matches by, from the values validation parsed: the top
    Via's branch and the CSeq method; None without a branch (a stray for the layer)."""
    peer = Peer(Transport.UDP, "192.0.2.1", 5060)
    text = (
        "SIP/2.0 200 OK\r\n"
        "Via: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK77, SIP/2.0/UDP 192.0.2.9;branch=z9hG4bK-x\r\n"
        "From: <sip:alice@example.com>;tag=1\r\nTo: <sip:bob@example.com>;tag=2\r\n"
        "Call-ID: c1\r\nCSeq: 7 NOTIFY\r\nContent-Length: 0\r\n\r\n"
    )
    admitted = admit(text.encode(), peer, lambda: "u")
    assert isinstance(admitted, AdmittedResponse)
    assert admitted.key == ClientKey("z9hG4bK77", "NOTIFY")
    unbranched = admit(text.replace(";branch=z9hG4bK77", "", 1).encode(), peer, lambda: "u")
    assert isinstance(unbranched, AdmittedResponse) and unbranched.key is None


def test_check_request_returns_the_top_via_and_cseq_it_parsed() -> None:
    fields = list(BASE)
    fields.insert(1, ("Via", "SIP/2.0/UDP 192.0.2.9;branch=z9hG4bK-second, SIP/2.0/TCP 192.0.2.10"))
    via, sequence = check_request(request(*fields))
    assert (via.host, via.branch) == ("192.0.2.1", "z9hG4bK77")
    assert (sequence.number, sequence.method) == (7, "OPTIONS")


@pytest.mark.parametrize(
    ("fields", "detail"),
    [
        # Every mandatory header is looked for before any is counted twice, in this order.
        ((*replaced("Call-ID", None), ("To", "<sip:x@y>")), "missing Call-ID"),
        ((*replaced("Via", None), ("CSeq", "8 OPTIONS")), "missing Via"),
        # A repeated header before any value is parsed; the first repeated name in the list.
        ((*replaced("Via", "bogus"), ("CSeq", "8 OPTIONS"), ("To", "<sip:x@y>")), "more than one To"),
        # Every Via line, every hop of each, before From.
        (
            (*replaced("From", "<sip:a@b"), ("Via", "SIP/2.0/UDP a, bogus")),
            "Via without sent-protocol: 'bogus'",
        ),
        # From, then To, then Call-ID, then CSeq, then Max-Forwards, then Contact.
        ((*replaced("From", "<sip:a@b"), ("Contact", "<sip:c@d")), "unterminated <URI> in '<sip:a@b'"),
        ((*replaced("Call-ID", ""), ("Contact", "<sip:c@d")), "empty Call-ID"),
        ((*replaced("Max-Forwards", "300"), ("Contact", "<sip:c@d")), "Max-Forwards above 255: '300'"),
        # Every Contact line is parsed, not only the first.
        ((*BASE, ("Contact", "<sip:a@b>"), ("Contact", "<sip:c@d")), "unterminated <URI> in '<sip:c@d'"),
        ((*BASE, ("Contact", "<sip:a@b>"), ("Contact", "*")), "Contact '*' mixed with other values"),
    ],
)
def test_the_first_fault_in_the_order_of_the_checks_is_the_one_reported(
    fields: tuple[tuple[str, str], ...], detail: str
) -> None:
    with pytest.raises(SipError) as caught:
        check_request(request(*fields))
    assert (caught.value.status, caught.value.detail) == (400, detail)


RESPONSE_BASE = tuple(field for field in BASE if field[0] != "Max-Forwards")


def response_with(*changes: tuple[str, str | None]) -> Response:
    fields = list(RESPONSE_BASE)
    for name, value in changes:
        fields = [field for field in fields if field[0] != name]
        if value is not None:
            fields.append((name, value))
    return Response(200, "OK", Headers.of(*fields))


@pytest.mark.parametrize(
    ("response", "detail"),
    [
        (response_with(("From", None), ("Via", "bogus")), "response without exactly one From"),
        (response_with(("Call-ID", None), ("CSeq", "x")), "response without exactly one Call-ID"),
        (
            Response(200, "OK", Headers.of(*RESPONSE_BASE, ("CSeq", "7 OPTIONS"))),
            "response without exactly one CSeq",
        ),
        (response_with(("Via", None)), "missing Via"),
        (response_with(("Via", "")), "missing Via"),
        (response_with(("Via", "bogus"), ("CSeq", "x")), "Via without sent-protocol: 'bogus'"),
        (response_with(("CSeq", "x"), ("From", "<sip:a@b")), "bad CSeq 'x'"),
        (response_with(("From", "<sip:a@b"), ("To", "<sip:c@d")), "unterminated <URI> in '<sip:a@b'"),
        (response_with(("To", "<sip:c@d")), "unterminated <URI> in '<sip:c@d'"),
    ],
)
def test_a_response_is_dropped_for_the_first_fault_in_the_order_of_the_checks(
    response: Response, detail: str
) -> None:
    with pytest.raises(MalformedMessage) as caught:
        check_response(response)
    assert caught.value.detail == detail


def test_the_top_via_of_a_response_is_the_first_value_of_the_first_via_line_that_has_one() -> None:
    fields = [("Via", ""), *RESPONSE_BASE]
    via, _ = check_response(Response(200, "OK", Headers.of(*fields)))
    assert via.branch == "z9hG4bK77"
