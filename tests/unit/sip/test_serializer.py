from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scaserver.sip.errors import ProtocolStateError
from scaserver.sip.message import Headers, Request, Response
from scaserver.sip.parser import parse_message
from scaserver.sip.serializer import serialize


def test_request_wire_form_sets_content_length_in_place() -> None:
    request = Request(
        "MESSAGE", "sip:a@b", Headers.of(("Via", "SIP/2.0/UDP h"), ("l", "99"), ("Subject", "x")), b"hi"
    )
    assert serialize(request) == (
        b"MESSAGE sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h\r\nContent-Length: 2\r\nSubject: x\r\n\r\nhi"
    )


def test_response_wire_form_appends_content_length() -> None:
    assert serialize(Response(200, "OK", Headers.of(("Call-ID", "c"), ("l", "1"), ("l", "1")))) == (
        b"SIP/2.0 200 OK\r\nCall-ID: c\r\nContent-Length: 0\r\n\r\n"
    )
    assert serialize(Response(100, "")) == b"SIP/2.0 100 \r\nContent-Length: 0\r\n\r\n"


def test_surrogate_escaped_octets_go_back_on_the_wire() -> None:
    wire = b"OPTIONS sip:a@b SIP/2.0\r\nX-Bin: \xff\x00\xc3\xa9\r\nContent-Length: 0\r\n\r\n"
    assert serialize(parse_message(wire)) == wire


@pytest.mark.parametrize(
    "message",
    [
        Request("OPTIONS", "sip:a@b", Headers.of(("Subject", "a\r\nVia: injected"))),
        Request("OPTIONS", "sip:a@b", Headers.of(("Subject", "bare\nlf"))),
        Response(200, "OK\r\nX: y"),
    ],
)
def test_line_breaks_inside_values_are_refused(message: Request | Response) -> None:
    with pytest.raises(ProtocolStateError):
        serialize(message)


_TOKEN = st.text(
    st.sampled_from("abcdefghijklmnopqrstuvwxyzABCXYZ0123456789-.!%*_+`'~"), min_size=1, max_size=10
)
_NAME = st.sampled_from(
    [
        "Via",
        "From",
        "To",
        "Call-ID",
        "CSeq",
        "Contact",
        "Subject",
        "X-Custom",
        "Max-Forwards",
        "Allow",
        "Event",
    ]
)
_VALUE = st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\r\n"), max_size=30).map(
    lambda s: s.strip(" \t")
)
_HEADERS = st.lists(st.tuples(_NAME, _VALUE), max_size=8).map(lambda fields: Headers(tuple(fields)))
_URI = st.sampled_from(
    ["sip:a@b", "sips:[2001:db8::1]:5061;transport=tls", "tel:+123", "urn:x:y", "sip:u%20x@h"]
)


@st.composite
def messages(draw: st.DrawFn) -> Request | Response:
    headers = draw(_HEADERS)
    body = draw(st.binary(max_size=50))
    if draw(st.booleans()):
        return Request(draw(_TOKEN), draw(_URI), headers, body)
    reason = draw(st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\r\n"), max_size=20))
    return Response(draw(st.integers(100, 699)), reason, headers, body)


@settings(max_examples=200, deadline=None)
@given(messages())
def test_serialize_then_parse_gives_the_same_message(message: Request | Response) -> None:
    parsed = parse_message(serialize(message))
    expected = message.with_headers(message.headers.set("Content-Length", str(len(message.body))))
    assert parsed == expected
    assert serialize(parsed) == serialize(message)
