"""The check-sync NOTIFY of prov.resync (provisioning.md section 4.5)."""

from __future__ import annotations

from scaserver.provisioning.resync import check_sync_request
from scaserver.sip.headers import parse_event
from scaserver.sip.message import Headers, Request
from scaserver.sip.parser import parse_message
from scaserver.sip.serializer import serialize
from scaserver.sip.validation import check_request


def test_check_sync_notify_is_a_complete_request() -> None:
    request = check_sync_request(
        "sip:2001@192.0.2.5:5060",
        "sip:2001@pbx.example.com",
        local_uri="sip:pbx.example.com",
        call_id="c1",
        from_tag="t1",
    )
    assert request == Request(
        "NOTIFY",
        "sip:2001@192.0.2.5:5060",
        Headers.of(
            ("Max-Forwards", "70"),
            ("To", "<sip:2001@pbx.example.com>"),
            ("From", "<sip:pbx.example.com>;tag=t1"),
            ("Call-ID", "c1"),
            ("CSeq", "1 NOTIFY"),
            ("Contact", "<sip:pbx.example.com>"),
            ("Event", "check-sync"),
            ("Subscription-State", "terminated"),
            ("Content-Length", "0"),
        ),
    )
    assert parse_message(serialize(request)) == request


def test_reboot_parameter() -> None:
    request = check_sync_request(
        "sip:a@192.0.2.5", "sip:a@x", local_uri="sip:x", call_id="c", from_tag="t", cseq=7, reboot=False
    )
    event = request.headers.get("Event")
    assert event is not None
    parsed = parse_event(event)
    assert parsed.package == "check-sync"
    assert request.headers.get("CSeq") == "7 NOTIFY"
    assert "reboot=false" in event
    with_via = Request(
        request.method, request.uri, request.headers.prepend("Via", "SIP/2.0/UDP h;branch=z9hG4bKx")
    )
    check_request(with_via)
