"""Access to the shared conformance corpora (read in place, never copied into the project)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from scaserver.sip.errors import SipError
from scaserver.sip.message import Request, Response
from scaserver.sip.parser import parse_message
from scaserver.sip.validation import check_request, check_response

CONFORMANCE = Path(__file__).resolve().parents[2].parent / "shared" / "conformance"


def corpus_dir(name: str) -> Path:
    folder = CONFORMANCE / name
    if not folder.is_dir():
        pytest.skip(f"conformance corpus {folder} is not available")
    return folder


def wire_ready_rfc5118(raw: bytes) -> bytes:
    """Apply the three conversions rfc5118/EXPECTED.md prescribes: LF -> CRLF, add the
    missing empty line, and rewrite Content-Length to the real body length."""
    data = raw.replace(b"\n", b"\r\n")
    if b"\r\n\r\n" not in data:
        data += b"\r\n"
    head, _, body = data.partition(b"\r\n\r\n")
    head = re.sub(rb"(?im)^(Content-Length[ \t]*:[ \t]*)[0-9]+", rb"\g<1>%d" % len(body), head)
    return head + b"\r\n\r\n" + body


def verdict(data: bytes) -> Request | Response | SipError:
    """What the message layer makes of one datagram: the message, or the error it earns."""
    try:
        message = parse_message(data)
        if isinstance(message, Request):
            check_request(message)
        else:
            check_response(message)
    except SipError as error:
        return error
    return message
