"""STUN Binding for keep-alives (RFC 5389, RFC 5626 section 8.4): the codec and the answer."""

from __future__ import annotations

import struct

import pytest

from scaserver.sip import stun
from scaserver.sip.stun import StunClass, StunError, StunMessage

TID = bytes(range(1, 13))

# RFC 5769 section 2.2 ("Sample IPv4 response"): XOR-MAPPED-ADDRESS of 192.0.2.1:32853.
RFC5769_TID = bytes.fromhex("b7e7a701bc34d686fa87dfae")
RFC5769_XOR_MAPPED = bytes.fromhex("0001a147e112a643")


def test_binding_request_is_a_20_octet_header_with_the_cookie() -> None:
    data = stun.binding_request(TID)
    assert data == bytes.fromhex("000100002112a442") + TID
    assert stun.looks_like_stun(data)


def test_success_answer_carries_the_source_as_xor_mapped_address() -> None:
    reply = stun.answer(stun.binding_request(TID), "192.0.2.1", 32853)
    assert reply is not None
    message = stun.parse(reply)
    assert (message.method, message.kind, message.transaction_id) == (stun.BINDING, StunClass.SUCCESS, TID)
    mapped = message.attribute(stun.XOR_MAPPED_ADDRESS)
    assert mapped == RFC5769_XOR_MAPPED
    assert stun.read_xor_address(mapped, TID) == ("192.0.2.1", 32853)


def test_rfc5769_sample_value_decodes() -> None:
    assert stun.read_xor_address(RFC5769_XOR_MAPPED, RFC5769_TID) == ("192.0.2.1", 32853)


def test_ipv6_source_is_xored_with_cookie_and_transaction_id() -> None:
    reply = stun.answer(stun.binding_request(TID), "2001:db8:1234:5678:11:2233:4455:6677", 32853)
    assert reply is not None
    message = stun.parse(reply)
    mapped = message.attribute(stun.XOR_MAPPED_ADDRESS)
    assert mapped is not None and len(mapped) == 20
    assert stun.read_xor_address(mapped, TID) == ("2001:db8:1234:5678:11:2233:4455:6677", 32853)


def test_fingerprint_is_checked_and_echoed() -> None:
    request = stun.binding_request(TID, fingerprint=True)
    reply = stun.answer(request, "192.0.2.1", 5060)
    assert reply is not None and stun.parse(reply).attribute(stun.FINGERPRINT) is not None
    broken = request[:-1] + bytes([request[-1] ^ 1])
    with pytest.raises(StunError, match="FINGERPRINT does not match"):
        stun.answer(broken, "192.0.2.1", 5060)


def test_username_and_message_integrity_are_ignored_not_checked() -> None:
    request = StunMessage(
        stun.BINDING,
        StunClass.REQUEST,
        TID,
        ((stun.USERNAME, b"alice:bob"), (stun.MESSAGE_INTEGRITY, b"\x00" * 20)),
    )
    reply = stun.answer(stun.encode(request), "192.0.2.1", 5060)
    assert reply is not None
    message = stun.parse(reply)
    assert message.kind is StunClass.SUCCESS
    assert message.attribute(stun.MESSAGE_INTEGRITY) is None


def test_unknown_comprehension_required_attribute_gets_420() -> None:
    request = StunMessage(
        stun.BINDING, StunClass.REQUEST, TID, ((0x0024, b"\x00\x00\x00\x01"), (0x8054, b"x"))
    )
    reply = stun.answer(stun.encode(request), "192.0.2.1", 5060)
    assert reply is not None
    message = stun.parse(reply)
    assert message.kind is StunClass.ERROR
    error = message.attribute(stun.ERROR_CODE)
    assert error is not None and (error[2], error[3]) == (4, 20)
    assert message.attribute(stun.UNKNOWN_ATTRIBUTES) == struct.pack("!H", 0x0024)  # not the optional one


def test_other_method_gets_400_and_indication_gets_nothing() -> None:
    allocate = stun.encode(StunMessage(0x003, StunClass.REQUEST, TID))
    reply = stun.answer(allocate, "192.0.2.1", 5060)
    assert reply is not None
    error = stun.parse(reply).attribute(stun.ERROR_CODE)
    assert error is not None and (error[2], error[3]) == (4, 0)
    indication = stun.encode(StunMessage(stun.BINDING, StunClass.INDICATION, TID))
    assert stun.answer(indication, "192.0.2.1", 5060) is None


def test_unsolicited_response_is_refused() -> None:
    success = stun.encode(StunMessage(stun.BINDING, StunClass.SUCCESS, TID))
    with pytest.raises(StunError, match="unsolicited"):
        stun.answer(success, "192.0.2.1", 5060)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "shorter than a STUN header"),
        (stun.binding_request(TID)[:19], "shorter than a STUN header"),
        (bytes.fromhex("000100042112a442") + TID, "does not match"),  # length says 4, none follow
        (bytes.fromhex("000100012112a442") + TID + b"\x00", "does not match"),  # not a multiple of 4
        (bytes.fromhex("400100002112a442") + TID, "leading bits"),
        (bytes.fromhex("0001000000000000") + TID, "magic cookie"),
        (bytes.fromhex("000100082112a442") + TID + bytes.fromhex("0020000c00000000"), "overruns"),
        (stun.encode(StunMessage(stun.BINDING, StunClass.REQUEST, TID, ((0x8022, b"x" * 600),))), "over 548"),
    ],
)
def test_malformed_input_is_refused(data: bytes, reason: str) -> None:
    with pytest.raises(StunError, match=reason):
        stun.answer(data, "192.0.2.1", 5060)


def test_demultiplexing_tells_sip_and_crlf_from_stun() -> None:
    assert not stun.looks_like_stun(b"OPTIONS sip:x SIP/2.0\r\n\r\n")
    assert not stun.looks_like_stun(b"\r\n\r\n")
    assert not stun.looks_like_stun(bytes(20))  # no cookie


def test_binding_request_wants_a_96_bit_transaction_id() -> None:
    with pytest.raises(ValueError, match="96 bits"):
        stun.binding_request(b"short")
