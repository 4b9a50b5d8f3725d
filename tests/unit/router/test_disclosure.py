"""Which messages lose their SCA Call-Info on the way out (sca.md 5.3)."""

from __future__ import annotations

import pytest

from scaserver.router.disclosure import CALL_METHODS, strips
from scaserver.sip.message import Headers, Request, Response

CALL_INFO = ("Call-Info", "<sip:2001@example.com>;appearance-index=1")
BASE = (
    ("Via", "SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK1"),
    ("From", "<sip:a@example.com>;tag=1"),
    ("To", "<sip:b@example.com>"),
    ("Call-ID", "c1"),
)


def request(method: str, *extra: tuple[str, str]) -> Request:
    return Request(method, "sip:b@example.com", Headers.of(*BASE, ("CSeq", f"1 {method}"), *extra))


def response(method: str, *extra: tuple[str, str], cseq: str | None = None) -> Response:
    return Response(200, "OK", Headers.of(*BASE, ("CSeq", cseq or f"1 {method}"), *extra))


@pytest.mark.parametrize("method", sorted(CALL_METHODS))
def test_call_signalling_with_call_info_is_stripped_when_the_setting_says_so(method: str) -> None:
    assert strips(request(method, CALL_INFO), True)
    assert strips(response(method, CALL_INFO), True)
    assert not strips(request(method, CALL_INFO), False)
    assert not strips(response(method, CALL_INFO), False)
    assert not strips(request(method), True)
    assert not strips(response(method), True)


@pytest.mark.parametrize("method", ["NOTIFY", "SUBSCRIBE", "OPTIONS", "REGISTER"])
def test_other_messages_keep_their_call_info(method: str) -> None:
    assert not strips(request(method, CALL_INFO), True)
    assert not strips(response(method, CALL_INFO), True)


def test_a_response_whose_cseq_does_not_parse_keeps_its_call_info() -> None:
    assert not strips(response("INVITE", CALL_INFO, cseq="x INVITE"), True)
