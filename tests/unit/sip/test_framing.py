from __future__ import annotations

import pytest

from scaserver.sip.errors import FramingError, MessageTooLarge, ProtocolStateError, StreamMalformed
from scaserver.sip.framing import StreamFramer

MESSAGE = b"OPTIONS sip:a@b SIP/2.0\r\nVia: SIP/2.0/TCP h\r\nContent-Length: 5\r\n\r\nhello"


def test_messages_cut_at_content_length() -> None:
    framer = StreamFramer(4096)
    assert framer.feed(MESSAGE + MESSAGE + MESSAGE[:10]) == [MESSAGE, MESSAGE]
    assert framer.buffered == 10
    assert framer.feed(MESSAGE[10:]) == [MESSAGE]
    assert framer.buffered == 0


def test_byte_by_byte_delivery() -> None:
    framer = StreamFramer(4096)
    out: list[bytes] = []
    for index in range(len(MESSAGE)):
        out += framer.feed(MESSAGE[index : index + 1])
    assert out == [MESSAGE]


def test_keepalive_pings_and_pongs() -> None:
    # RFC 5626 3.5.1: CRLFCRLF is a ping, a lone CRLF a pong
    framer = StreamFramer(4096)
    assert framer.feed(b"\r\n\r\n") == []
    assert framer.pings_received == 1
    assert framer.feed(b"\r\n") == []
    assert framer.feed(MESSAGE) == [MESSAGE]
    assert framer.pings_received == 1
    assert framer.feed(b"\r\n\r") == []
    assert framer.feed(b"\n") == []
    assert framer.pings_received == 2


def test_compact_and_folded_content_length() -> None:
    message = b"OPTIONS sip:a@b SIP/2.0\r\nl :\r\n 2\r\n\r\nhi"
    assert StreamFramer(4096).feed(message) == [message]


@pytest.mark.parametrize(
    "head",
    [
        b"OPTIONS sip:a@b SIP/2.0\r\nVia: x\r\n\r\n",  # RFC 3261 18.3: mandatory on streams
        b"OPTIONS sip:a@b SIP/2.0\r\nContent-Length: -999\r\n\r\n",  # RFC 4475 3.1.2.3
        b"OPTIONS sip:a@b SIP/2.0\r\nContent-Length: five\r\n\r\n",
        b"OPTIONS sip:a@b SIP/2.0\r\nContent-Length: 13\r\nContent-Length: 5\r\n\r\n",  # RFC 4475 3.3.9
    ],
)
def test_lost_framing_fails_for_good(head: bytes) -> None:
    framer = StreamFramer(4096)
    with pytest.raises(StreamMalformed) as caught:
        framer.feed(head)
    assert isinstance(caught.value, FramingError)
    assert caught.value.status == 400
    with pytest.raises(ProtocolStateError):
        framer.feed(MESSAGE)


def test_oversized_message_and_header_section() -> None:
    with pytest.raises(MessageTooLarge) as declared:
        StreamFramer(64).feed(MESSAGE.replace(b"Length: 5", b"Length: 5000"))
    assert isinstance(declared.value, FramingError)
    assert declared.value.status == 513
    with pytest.raises(MessageTooLarge):
        StreamFramer(64).feed(b"OPTIONS sip:a@b SIP/2.0\r\n" + b"X: y\r\n" * 20)


def test_waits_for_the_body() -> None:
    framer = StreamFramer(4096)
    assert framer.feed(MESSAGE[:-2]) == []
    assert framer.feed(MESSAGE[-2:] + b"\r\n") == [MESSAGE]
