"""Dialogs (RFC 3261 section 12): creation on both sides, route sets, target refresh, CSeq rules."""

from __future__ import annotations

import pytest

from scaserver.sip.dialog import (
    CSeqOutOfOrder,
    Dialog,
    DialogId,
    DialogState,
    DialogTable,
    build_request,
)
from scaserver.sip.errors import BadRequest, CallDoesNotExist, ProtocolStateError
from scaserver.sip.message import Headers, Request, Response
from scaserver.sip.responses import make_response
from scaserver.sip.uri import parse_name_addr, parse_uri

RR = ("<sip:p1.example.com;lr>", "<sip:p2.example.com;lr>")


def subscribe(
    *,
    cseq: int = 10,
    record_route: tuple[str, ...] = RR,
    uri: str = "sip:sca@example.com",
    via: str = "SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK1",
) -> Request:
    fields = [("Via", via)]
    fields += [("Record-Route", value) for value in record_route]
    fields += [
        ("From", '"Bob" <sip:bob@example.com>;tag=bob1'),
        ("To", "<sip:alice@example.com>"),
        ("Call-ID", "dlg-1@phone"),
        ("CSeq", f"{cseq} SUBSCRIBE"),
        ("Contact", "<sip:bob@192.0.2.10:5060;transport=udp>"),
    ]
    return Request("SUBSCRIBE", uri, Headers.of(*fields))


def in_dialog(method: str, cseq: int, contact: str | None = None) -> Request:
    fields = [
        ("Via", "SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK2"),
        ("From", "<sip:bob@example.com>;tag=bob1"),
        ("To", "<sip:alice@example.com>;tag=us1"),
        ("Call-ID", "dlg-1@phone"),
        ("CSeq", f"{cseq} {method}"),
    ]
    if contact is not None:
        fields.append(("Contact", contact))
    return Request(method, "sip:sca@192.0.2.1", Headers.of(*fields))


def uas_dialog() -> Dialog:
    request = subscribe()
    return Dialog.uas(request, make_response(request, 202, to_tag="us1"), local_cseq=100)


def test_uas_dialog_per_12_1_1() -> None:
    dialog = uas_dialog()
    assert dialog.id == DialogId("dlg-1@phone", "us1", "bob1")
    assert dialog.state is DialogState.CONFIRMED
    assert dialog.route_set == tuple(parse_name_addr(value) for value in RR)  # in order on the UAS side
    assert dialog.remote_target == parse_uri("sip:bob@192.0.2.10:5060;transport=udp")
    assert dialog.remote_cseq == 10
    assert dialog.local_cseq == 100
    assert str(dialog.local_party) == "<sip:alice@example.com>"
    assert str(dialog.remote_party) == '"Bob" <sip:bob@example.com>'
    assert not dialog.secure


def test_uas_dialog_is_secure_for_sips_over_tls() -> None:
    request = subscribe(uri="sips:sca@example.com", via="SIP/2.0/TLS 192.0.2.10:5061;branch=z9hG4bK1")
    assert Dialog.uas(request, make_response(request, 200, to_tag="x")).secure
    plain = subscribe(uri="sips:sca@example.com")
    assert not Dialog.uas(plain, make_response(plain, 200, to_tag="x")).secure


def test_uas_dialog_needs_our_tag_and_a_dialog_creating_status() -> None:
    request = subscribe()
    with pytest.raises(ProtocolStateError):
        Dialog.uas(request, make_response(request, 202))
    with pytest.raises(ProtocolStateError):
        Dialog.uas(request, make_response(request, 100, to_tag="x"))
    early = Dialog.uas(request, make_response(request, 180, to_tag="x"))
    assert early.state is DialogState.EARLY


def test_dialog_needs_one_contact() -> None:
    request = subscribe()
    no_contact = request.with_headers(request.headers.remove("Contact"))
    with pytest.raises(BadRequest):
        Dialog.uas(no_contact, make_response(no_contact, 200, to_tag="x"))
    star = request.with_headers(request.headers.set("Contact", "*"))
    with pytest.raises(BadRequest):
        Dialog.uas(star, make_response(star, 200, to_tag="x"))


def test_uac_dialog_per_12_1_2_reverses_record_route() -> None:
    ours = Request(
        "INVITE",
        "sips:alice@example.com",
        Headers.of(
            ("Via", "SIP/2.0/TLS 192.0.2.1:5061;branch=z9hG4bK9"),
            ("From", "<sip:sca@example.com>;tag=us2"),
            ("To", "<sips:alice@example.com>"),
            ("Call-ID", "out-1@server"),
            ("CSeq", "5 INVITE"),
        ),
    )
    ringing = make_response(
        ours,
        180,
        to_tag="them",
        headers=Headers.of(*(("Record-Route", value) for value in RR), ("Contact", "<sip:alice@192.0.2.20>")),
    )
    dialog = Dialog.uac(ours, ringing)
    assert dialog.id == DialogId("out-1@server", "us2", "them")
    assert dialog.state is DialogState.EARLY
    assert dialog.route_set == tuple(parse_name_addr(value) for value in reversed(RR))
    assert dialog.local_cseq == 5
    assert dialog.remote_cseq is None
    assert dialog.secure
    ok = make_response(
        ours,
        200,
        to_tag="them",
        headers=Headers.of(("Record-Route", RR[0]), ("Contact", "<sip:alice@192.0.2.21>")),
    )
    confirmed = dialog.on_response("INVITE", ok)
    assert confirmed.state is DialogState.CONFIRMED
    assert confirmed.route_set == (parse_name_addr(RR[0]),)  # recomputed from the 2xx (13.2.2.4)
    assert confirmed.remote_target == parse_uri("sip:alice@192.0.2.21")
    assert confirmed.on_response("INVITE", make_response(ours, 486, to_tag="them")) is confirmed
    with pytest.raises(BadRequest):
        Dialog.uac(ours, make_response(ours, 200, headers=Headers.of(("Contact", "<sip:a@b>"))))
    with pytest.raises(ProtocolStateError):
        Dialog.uac(ours, make_response(ours, 100))


def test_2xx_to_non_refresh_request_keeps_the_target() -> None:
    dialog = uas_dialog()
    _, info = build_request(dialog, "INFO")
    ok = make_response(info, 200, headers=Headers.of(("Contact", "<sip:elsewhere@192.0.2.99>")))
    assert dialog.on_response("INFO", ok) == dialog
    refreshed = dialog.on_response("NOTIFY", ok)
    assert refreshed.remote_target == parse_uri("sip:elsewhere@192.0.2.99")


def test_remote_cseq_rule_12_2_2() -> None:
    dialog = uas_dialog()
    same = dialog.on_request(in_dialog("SUBSCRIBE", 10))
    assert same.remote_cseq == 10
    higher = same.on_request(in_dialog("SUBSCRIBE", 11))
    assert higher.remote_cseq == 11
    with pytest.raises(CSeqOutOfOrder) as caught:
        higher.on_request(in_dialog("SUBSCRIBE", 9))
    assert (caught.value.status, caught.value.reason) == (500, "Server Internal Error")


def test_remote_cseq_empty_accepts_any_number() -> None:
    dialog = uas_dialog()
    empty = Dialog(
        dialog.id,
        dialog.state,
        dialog.local_party,
        dialog.remote_party,
        dialog.remote_target,
        dialog.route_set,
        dialog.local_cseq,
        None,
        dialog.secure,
    )
    assert empty.on_request(in_dialog("NOTIFY", 1)).remote_cseq == 1


def test_target_refresh_replaces_the_remote_target() -> None:
    dialog = uas_dialog()
    refreshed = dialog.on_request(in_dialog("SUBSCRIBE", 11, "<sip:bob@198.51.100.7:5070>"))
    assert refreshed.remote_target == parse_uri("sip:bob@198.51.100.7:5070")
    not_refresh = dialog.on_request(in_dialog("INFO", 11, "<sip:bob@198.51.100.7:5070>"))
    assert not_refresh.remote_target == dialog.remote_target
    no_contact = dialog.on_request(in_dialog("SUBSCRIBE", 12))
    assert no_contact.remote_target == dialog.remote_target


def test_build_request_loose_routing() -> None:
    dialog, notify = build_request(
        uas_dialog(),
        "NOTIFY",
        contact=parse_name_addr("<sip:sca@192.0.2.1:5060>"),
        headers=Headers.of(("Event", "dialog"), ("Subscription-State", "active;expires=3600")),
        body=b"<xml/>",
    )
    assert dialog.local_cseq == 101
    assert notify == Request(
        "NOTIFY",
        "sip:bob@192.0.2.10:5060;transport=udp",
        Headers.of(
            ("Route", "<sip:p1.example.com;lr>"),
            ("Route", "<sip:p2.example.com;lr>"),
            ("Max-Forwards", "70"),
            ("From", "<sip:alice@example.com>;tag=us1"),
            ("To", '"Bob" <sip:bob@example.com>;tag=bob1'),
            ("Call-ID", "dlg-1@phone"),
            ("CSeq", "101 NOTIFY"),
            ("Contact", "<sip:sca@192.0.2.1:5060>"),
            ("Event", "dialog"),
            ("Subscription-State", "active;expires=3600"),
        ),
        b"<xml/>",
    )
    dialog, second = build_request(dialog, "NOTIFY")
    assert (dialog.local_cseq, second.headers.get("CSeq")) == (102, "102 NOTIFY")
    _, ack = build_request(dialog, "ACK")
    assert ack.headers.get("CSeq") == "102 ACK"


def test_build_request_without_route_set() -> None:
    request = subscribe(record_route=())
    dialog = Dialog.uas(request, make_response(request, 200, to_tag="us1"))
    dialog, notify = build_request(dialog, "NOTIFY")
    assert notify.uri == "sip:bob@192.0.2.10:5060;transport=udp"
    assert "Route" not in notify.headers
    assert notify.headers.get("CSeq") == "1 NOTIFY"


def test_build_request_strict_routing_12_2_1_1() -> None:
    request = subscribe(record_route=("<sip:strict.example.com;method=INVITE;maddr=192.0.2.5>", RR[0]))
    dialog = Dialog.uas(request, make_response(request, 200, to_tag="us1"))
    _, notify = build_request(dialog, "NOTIFY")
    assert notify.uri == "sip:strict.example.com;maddr=192.0.2.5"
    assert notify.headers.lines("Route") == (
        "<sip:p1.example.com;lr>",
        "<sip:bob@192.0.2.10:5060;transport=udp>",
    )


def test_build_request_refuses_cancel() -> None:
    with pytest.raises(ProtocolStateError):
        build_request(uas_dialog(), "CANCEL")


def test_dialog_table_answers_481_for_unknown_dialogs() -> None:
    table = DialogTable()
    dialog = uas_dialog()
    with pytest.raises(CallDoesNotExist) as caught:
        table.find(in_dialog("NOTIFY", 11))
    assert caught.value.status == 481
    table.put(dialog)
    assert table.find(in_dialog("NOTIFY", 11)) is dialog
    assert dialog.id in table
    assert table.get(dialog.id) is dialog
    assert list(table) == [dialog]
    assert len(table) == 1
    assert table.remove(dialog.id) is dialog
    assert table.remove(dialog.id) is None
    assert len(table) == 0


def test_dialog_id_of_response_and_missing_tags() -> None:
    response = Response(
        200,
        "OK",
        Headers.of(("From", "<sip:a@x>;tag=l"), ("To", "<sip:b@x>;tag=r"), ("Call-ID", "c")),
    )
    assert DialogId.of_response(response) == DialogId("c", "l", "r")
    assert DialogId.of_request(subscribe()) == DialogId("dlg-1@phone", "", "bob1")
    no_call_id = subscribe().with_headers(subscribe().headers.remove("Call-ID"))
    with pytest.raises(BadRequest):
        DialogId.of_request(no_call_id)
