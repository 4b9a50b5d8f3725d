"""RFC 4028 section 8: what the proxy does to an initial INVITE and its 2xx, and what it learns."""

from __future__ import annotations

import pytest

from scaserver.proxy.sessiontimer import (
    Refresher,
    SessionExpires,
    answer_with_session,
    expiry_after,
    offer_with_session,
    session_of,
)
from scaserver.sip.message import Headers, Request, Response
from scaserver.sip.parser import parse_message
from scaserver.sip.sessiontimer import SessionIntervals

POLICY = SessionIntervals(session_expires=1800, min_se=90)


def invite(*fields: tuple[str, str]) -> Request:
    base = (
        ("Via", "SIP/2.0/UDP 192.0.2.11:5060;branch=z9hG4bKst1"),
        ("From", "<sip:2001@pbx.example.com>;tag=ma"),
        ("To", "<sip:carol@example.net>"),
        ("Call-ID", "st-1"),
        ("CSeq", "1 INVITE"),
    )
    return Request("INVITE", "sip:carol@example.net", Headers((*base, *fields)))


def ok(*fields: tuple[str, str]) -> Response:
    return Response(200, "OK", Headers((("CSeq", "1 INVITE"), *fields)))


TIMER = ("Supported", "replaces, timer")


def test_inserts_session_expires_when_the_caller_supports_timer() -> None:
    sent = offer_with_session(invite(TIMER), POLICY)
    assert sent.headers.get("Session-Expires") == "1800"
    assert sent.headers.get("Min-SE") == "90"


def test_caller_without_timer_gets_no_session_expires() -> None:
    request = invite(("Supported", "replaces"))
    assert offer_with_session(request, POLICY) is request


def test_inserted_value_is_raised_to_the_requests_min_se() -> None:
    sent = offer_with_session(invite(TIMER, ("Min-SE", "3600")), SessionIntervals(1800, 90))
    assert sent.headers.get("Session-Expires") == "3600"
    assert sent.headers.get("Min-SE") == "3600"  # never lowered


def test_session_expires_above_ours_is_lowered_keeping_the_refresher() -> None:
    sent = offer_with_session(invite(TIMER, ("Session-Expires", "7200;refresher=uac")), POLICY)
    assert sent.headers.get("Session-Expires") == "1800;refresher=uac"


def test_session_expires_is_never_lowered_below_the_requests_min_se() -> None:
    request = invite(TIMER, ("Session-Expires", "7200"), ("Min-SE", "3000"))
    assert offer_with_session(request, POLICY).headers.get("Session-Expires") == "3000"


def test_session_expires_below_ours_is_left_alone() -> None:
    request = invite(TIMER, ("Session-Expires", "600"), ("Min-SE", "600"))
    assert offer_with_session(request, POLICY) is request


def test_compact_form_is_read() -> None:
    text = "\r\n".join(
        f"{name}: {value}" for name, value in invite(("k", "timer"), ("x", "7200")).headers.fields
    )
    request = parse_message(
        f"INVITE sip:carol@example.net SIP/2.0\r\n{text}\r\nContent-Length: 0\r\n\r\n".encode()
    )
    assert isinstance(request, Request)
    assert offer_with_session(request, POLICY).headers.get("Session-Expires") == "1800"


def test_unreadable_session_expires_is_not_replaced() -> None:
    request = invite(TIMER, ("Session-Expires", "soon"))
    assert offer_with_session(request, POLICY) is request


def test_refresher_is_learnt_from_the_2xx() -> None:
    sent = offer_with_session(invite(TIMER), POLICY)
    assert session_of(sent, ok(("Session-Expires", "90;refresher=uas"))) == SessionExpires(90, Refresher.UAS)
    assert session_of(sent, ok(("Session-Expires", "120"))) == SessionExpires(120, Refresher.UAC)


def test_2xx_without_session_expires_gets_ours_with_refresher_uac() -> None:
    sent = offer_with_session(invite(TIMER), POLICY)
    relayed = answer_with_session(sent, ok())
    assert relayed.headers.get("Session-Expires") == "1800;refresher=uac"
    assert relayed.headers.values("Require") == ("timer",)
    assert session_of(sent, ok()) == SessionExpires(1800, Refresher.UAC)


def test_2xx_with_session_expires_is_relayed_untouched() -> None:
    sent = offer_with_session(invite(TIMER), POLICY)
    answered = ok(("Session-Expires", "90;refresher=uac"), ("Require", "timer"))
    assert answer_with_session(sent, answered) is answered


def test_no_timer_when_neither_side_asks() -> None:
    request = invite(("Supported", "replaces"))
    assert session_of(request, ok()) is None
    assert answer_with_session(request, ok()) == ok()


def test_failure_responses_set_up_no_timer() -> None:
    sent = offer_with_session(invite(TIMER), POLICY)
    refused = Response(486, "Busy Here", Headers((("CSeq", "1 INVITE"),)))
    assert session_of(sent, refused) is None
    assert answer_with_session(sent, refused) is refused


@pytest.mark.parametrize(("interval", "expiry"), [(90, 60.0), (1800, 1768.0), (60, 40.0)])
def test_expiry_is_interval_minus_min_of_32_and_a_third(interval: int, expiry: float) -> None:
    assert expiry_after(interval) == expiry
