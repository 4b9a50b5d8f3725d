from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from scaserver.sip import parser
from scaserver.sip.errors import MalformedMessage
from scaserver.sip.message import Headers, Request, Response
from scaserver.sip.parser import parse_message, read_content_length

CORPUS = Path(__file__).resolve().parents[3].parent / "shared" / "conformance" / "rfc4475"

OPTIONS = (
    b"OPTIONS sip:bob@example.com SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK1\r\n"
    b"f: <sip:alice@example.com>;tag=1\r\n"
    b"t: <sip:bob@example.com>\r\n"
    b"i: abc@192.0.2.1\r\n"
    b"CSeq: 1 OPTIONS\r\n"
    b"Max-Forwards: 70\r\n"
    b"l: 5\r\n"
    b"\r\n"
    b"hello"
)


def test_request_is_split_into_canonical_fields() -> None:
    message = parse_message(OPTIONS)
    assert message == Request(
        "OPTIONS",
        "sip:bob@example.com",
        Headers(
            (
                ("Via", "SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK1"),
                ("From", "<sip:alice@example.com>;tag=1"),
                ("To", "<sip:bob@example.com>"),
                ("Call-ID", "abc@192.0.2.1"),
                ("CSeq", "1 OPTIONS"),
                ("Max-Forwards", "70"),
                ("Content-Length", "5"),
            )
        ),
        b"hello",
    )


def test_response_and_reason_phrases() -> None:
    assert parse_message(b"SIP/2.0 180 Ringing\r\nContent-Length: 0\r\n\r\n") == Response(
        180, "Ringing", Headers((("Content-Length", "0"),))
    )
    assert parse_message(b"SIP/2.0 100 \r\n\r\n") == Response(100, "")
    assert parse_message(b"sip/2.0 200\r\n\r\n") == Response(200, "")
    assert parse_message("SIP/2.0 200 Très bien\r\n\r\n".encode()).reason == "Très bien"  # type: ignore[union-attr]


def test_leading_crlfs_are_skipped_and_trailing_bytes_dropped() -> None:
    message = parse_message(b"\r\n\r\n" + OPTIONS + b"junk after the body")
    assert message.body == b"hello"


def test_body_without_content_length_is_the_rest_of_the_datagram() -> None:
    message = parse_message(b"MESSAGE sip:a@b SIP/2.0\r\nVia: x\r\n\r\nbody\x00bytes")
    assert message.body == b"body\x00bytes"


def test_folding_and_lws_around_the_colon() -> None:
    message = parse_message(
        b"INVITE sip:a@b SIP/2.0\r\nSubject  :  first\r\n \t second\r\nTO :\r\n sip:a@b\r\ns :\r\n\r\n"
    )
    assert message.headers.fields == (("Subject", "first second"), ("To", "sip:a@b"), ("Subject", ""))


def test_a_continuation_line_that_opens_with_a_tab_is_folded() -> None:
    message = parse_message(b"INVITE sip:a@b SIP/2.0\r\nSubject: first\r\n\tsecond\r\nTo: <sip:a@b>\r\n\r\n")
    assert message.headers.fields == (("Subject", "first second"), ("To", "<sip:a@b>"))
    with pytest.raises(MalformedMessage, match="continuation line before any header"):
        parse_message(b"OPTIONS sip:a@b SIP/2.0\r\n\tcontinuation first\r\n\r\n")


def test_non_utf8_octets_survive_as_surrogates() -> None:
    message = parse_message(b"OPTIONS sip:a@b SIP/2.0\r\nX-Bin: \xff\xfe\x00ok\r\n\r\n")
    assert message.headers.get("X-Bin") == "\udcff\udcfe\x00ok"


def test_versions() -> None:
    assert parse_message(b"OPTIONS sip:a@b SIP/7.0\r\n\r\n").version == "SIP/7.0"
    assert parse_message(b"OPTIONS sip:a@b sip/2.0\r\n\r\n").version == "SIP/2.0"


def test_identical_duplicate_content_lengths_are_accepted() -> None:
    assert parse_message(b"OPTIONS sip:a@b SIP/2.0\r\nl: 2\r\nContent-Length: 002\r\n\r\nhi").body == b"hi"


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\r\n\r\n",
        b"OPTIONS sip:a@b SIP/2.0\r\nVia: x\r\n",
        b"OPTIONS sip:a@b SIP/2.0\nVia: x\n\n",
        b"OPTIONS sip:a@b SIP/2.0\r\nVia: x\ny\r\n\r\n",
        b"OPTIONS sip:a@b SIP/2.0\r\nVia: x\ry\r\n\r\n",
        b"OPTIONS  sip:a@b SIP/2.0\r\n\r\n",
        b"OPTIONS sip:a@b SIP/2.0 \r\n\r\n",
        b"OPTIONS sip:a@b\r\n\r\n",
        b"OPT<IONS sip:a@b SIP/2.0\r\n\r\n",
        b"OPTIONS  SIP/2.0\r\n\r\n",
        b"OPTIONS sip:a@b HTTP/1.1\r\n\r\n",
        b"OPTIONS sip:a@b SIP/2\r\n\r\n",
        b"SIP/2.0 4294967301 Huge\r\n\r\n",
        b"SIP/2.0 99 Low\r\n\r\n",
        b"SIP/2.0 700 High\r\n\r\n",
        b"SIP/2.0 2x0 Bad\r\n\r\n",
        b"SIP/2.0\r\n\r\n",
        b"SIP/x 200 OK\r\n\r\n",
        b"OPTIONS sip:a@b SIP/2.0\r\n continuation first\r\n\r\n",
        b"OPTIONS sip:a@b SIP/2.0\r\nno colon here\r\n\r\n",
        b"OPTIONS sip:a@b SIP/2.0\r\n: no name\r\n\r\n",
        b"OPTIONS sip:a@b SIP/2.0\r\nBad Name: x\r\n\r\n",
        b"OPTIONS sip:a@b SIP/2.0\r\nContent-Length: -999\r\n\r\n",
        b"OPTIONS sip:a@b SIP/2.0\r\nContent-Length: five\r\n\r\n",
        b"OPTIONS sip:a@b SIP/2.0\r\nContent-Length: 99999999999\r\n\r\n",
        b"OPTIONS sip:a@b SIP/2.0\r\nContent-Length: 13\r\nl: 5\r\n\r\nhello",
        b"OPTIONS sip:a@b SIP/2.0\r\nContent-Length: 10\r\n\r\nshort",
    ],
)
def test_malformed_messages(data: bytes) -> None:
    with pytest.raises(MalformedMessage):
        parse_message(data)


def test_malformed_request_carries_what_was_parsed() -> None:
    with pytest.raises(MalformedMessage) as caught:
        parse_message(b"INVITE sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h\r\nCall-ID: c\r\nl: 9\r\n\r\nx")
    assert caught.value.partial == Request(
        "INVITE", "sip:a@b", Headers((("Via", "SIP/2.0/UDP h"), ("Call-ID", "c"), ("Content-Length", "9")))
    )


def test_request_line_with_extra_spaces_is_refused_with_its_headers() -> None:
    with pytest.raises(MalformedMessage) as caught:
        parse_message(
            b"OPTIONS  sip:a@b  SIP/2.0 \r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nCall-ID: c\r\n\r\n"
        )
    assert caught.value.partial == Request(
        "OPTIONS", "sip:a@b", Headers((("Via", "SIP/2.0/UDP h;branch=z9hG4bK1"), ("Call-ID", "c")))
    )


def test_malformed_response_or_start_line_has_no_partial() -> None:
    for data in (b"SIP/2.0 200 OK\r\nl: x\r\n\r\n", b"GARBAGE\r\n\r\n"):
        with pytest.raises(MalformedMessage) as caught:
            parse_message(data)
        assert caught.value.partial is None


def test_read_content_length() -> None:
    assert read_content_length([]) is None
    assert read_content_length(["0"]) == 0
    assert read_content_length(["05", "5"]) == 5


def _corpus() -> list[bytes]:
    if not CORPUS.is_dir():
        return [OPTIONS]
    return [path.read_bytes() for path in sorted(CORPUS.glob("*.dat"))]


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600))
@example(b"\r\n\r\n\r\n")
@example(b"A B C\r\n\r\n")
def test_arbitrary_bytes_raise_only_malformed_message(data: bytes) -> None:
    try:
        message = parse_message(data)
    except MalformedMessage:
        return
    assert isinstance(message, Request | Response)


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_mutated_corpus_messages_raise_only_malformed_message(data: st.DataObject) -> None:
    original = data.draw(st.sampled_from(_corpus()))
    buffer = bytearray(original)
    for _ in range(data.draw(st.integers(1, 8))):
        action = data.draw(st.sampled_from(["flip", "insert", "delete", "truncate"]))
        position = data.draw(st.integers(0, max(0, len(buffer) - 1)))
        if action == "flip" and buffer:
            buffer[position] = data.draw(st.sampled_from(b'\r\n :;,<>"\\%@[]0\x00\xff'))
        elif action == "insert":
            buffer[position:position] = data.draw(
                st.sampled_from([b"\r\n", b" ", b"\r\n ", b";", b"%", b"\xc3"])
            )
        elif action == "delete" and buffer:
            del buffer[position]
        else:
            del buffer[position:]
    with contextlib.suppress(MalformedMessage):
        parse_message(bytes(buffer))


@pytest.mark.parametrize(
    ("length", "body"),
    [("5", b"hello"), ("005", b"hello"), ("0000000000005", b"hello"), ("0", b""), ("00", b"")],
)
def test_one_content_length_of_decimal_digits_frames_the_body(length: str, body: bytes) -> None:
    data = f"OPTIONS sip:a@b SIP/2.0\r\nContent-Length: {length}\r\n\r\nhello".encode()
    assert parse_message(data).body == body


@pytest.mark.parametrize("length", ["\u0663", "\u00b2", "\uff15", "5\u0663", "", "+5", "5 5"])
def test_one_content_length_of_other_characters_is_refused(length: str) -> None:
    data = f"OPTIONS sip:a@b SIP/2.0\r\nContent-Length: {length}\r\n\r\nhello".encode()
    with pytest.raises(MalformedMessage):
        parse_message(data)


def test_a_remembered_header_line_gives_the_field_it_gave_the_first_time() -> None:
    parser._fields.clear()
    text = (
        b"OPTIONS sip:a@example.com SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\n"
        b"Max-Forwards: 70 \r\nm: <sip:a@h>\r\nl: 0\r\nEXPIRES:\t60\r\n\r\n"
    )
    first = parse_message(text)
    assert set(parser._fields) == {"Max-Forwards: 70 ", "l: 0", "EXPIRES:\t60"}  # not the Via, Contact
    again = parse_message(text)
    assert again == first
    assert again.headers.fields[1:] == (
        ("Max-Forwards", "70"),
        ("Contact", "<sip:a@h>"),
        ("Content-Length", "0"),
        ("Expires", "60"),
    )


def test_header_lines_refused_are_never_remembered_and_refused_again() -> None:
    parser._fields.clear()
    for _ in range(2):
        with pytest.raises(MalformedMessage):
            parse_message(b"OPTIONS sip:a@example.com SIP/2.0\r\nMax Forwards: 70\r\n\r\n")
    assert parser._fields == {}


def test_the_header_line_memory_is_bounded_in_count_and_line_length() -> None:
    parser._fields.clear()
    long_value = "x" * parser.LINE_MEMORY_LENGTH
    for n in range(parser.LINE_MEMORY + 10):
        parse_message(f"OPTIONS sip:a@b SIP/2.0\r\nExpires: {n}\r\nUser-Agent: {long_value}\r\n\r\n".encode())
        assert len(parser._fields) <= parser.LINE_MEMORY
    assert not any(line.startswith("User-Agent") for line in parser._fields)
    assert "Expires: 0" not in parser._fields and f"Expires: {parser.LINE_MEMORY + 9}" in parser._fields
