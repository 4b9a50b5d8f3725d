from __future__ import annotations

from scaserver.sip.errors import BadExtension, MalformedMessage
from scaserver.sip.message import Headers, Request, Response
from scaserver.sip.responses import default_reason, make_response, response_for

REQUEST = Request(
    "INVITE",
    "sip:bob@example.com",
    Headers.of(
        ("Via", "SIP/2.0/UDP a;branch=z9hG4bK1"),
        ("Via", "SIP/2.0/UDP b;branch=z9hG4bK2"),
        ("From", "<sip:alice@example.com>;tag=1"),
        ("To", "<sip:bob@example.com>"),
        ("Call-ID", "c1"),
        ("CSeq", "1 INVITE"),
        ("Timestamp", "54"),
        ("Contact", "<sip:alice@a>"),
        ("Max-Forwards", "70"),
    ),
    b"v=0",
)
COPIED = (
    ("Via", "SIP/2.0/UDP a;branch=z9hG4bK1"),
    ("Via", "SIP/2.0/UDP b;branch=z9hG4bK2"),
    ("From", "<sip:alice@example.com>;tag=1"),
)


def test_make_response_copies_the_rfc3261_8_2_6_2_headers_and_adds_the_tag() -> None:
    response = make_response(REQUEST, 486, to_tag="xyz", headers=Headers.of(("Retry-After", "5")))
    assert response == Response(
        486,
        "Busy Here",
        Headers(
            (
                *COPIED,
                ("To", "<sip:bob@example.com>;tag=xyz"),
                ("Call-ID", "c1"),
                ("CSeq", "1 INVITE"),
                ("Retry-After", "5"),
            )
        ),
    )


def test_trying_copies_timestamp_and_takes_no_tag_unless_given() -> None:
    response = make_response(REQUEST, 100, "Giving it a try")
    assert response.reason == "Giving it a try"
    assert response.headers.get("Timestamp") == "54"
    assert response.headers.get("To") == "<sip:bob@example.com>"


def test_existing_to_tag_is_kept() -> None:
    tagged = REQUEST.with_headers(REQUEST.headers.set("To", "<sip:bob@example.com>;tag=old"))
    assert make_response(tagged, 200, to_tag="new").headers.get("To") == "<sip:bob@example.com>;tag=old"
    broken = REQUEST.with_headers(REQUEST.headers.set("To", '"x <sip:b@h>; tag=old'))
    assert make_response(broken, 400, to_tag="new").headers.get("To") == '"x <sip:b@h>; tag=old'
    unparsable = REQUEST.with_headers(REQUEST.headers.set("To", '"x <sip:b@h>'))
    assert make_response(unparsable, 400, to_tag="t").headers.get("To") == '"x <sip:b@h>;tag=t'


def test_response_for_is_the_error_map() -> None:
    error = BadExtension("foo", headers=Headers.of(("Unsupported", "foo")))
    response = response_for(REQUEST, error, to_tag="t")
    assert (response.status, response.reason) == (420, "Bad Extension")
    assert response.headers.get("Unsupported") == "foo"
    assert response.headers.get("To") == "<sip:bob@example.com>;tag=t"
    assert response_for(REQUEST, MalformedMessage("x")).status == 400


def test_default_reasons() -> None:
    assert default_reason(481) == "Call/Transaction Does Not Exist"
    assert default_reason(499) == "Bad Request"
    assert default_reason(299) == "OK"
    assert default_reason(799) == "Unknown"
