"""Request | Response -> bytes (RFC 3261 section 7).

Header values are encoded back exactly as the parser decoded them (UTF-8 with
``surrogateescape``), so octets that are not UTF-8 survive a round trip.
Content-Length is always written and always equals the body length (RFC 3261
section 20.14; mandatory on streams, 18.3): it replaces the first
Content-Length line in place, or is appended.
"""

from __future__ import annotations

from scaserver.sip.errors import ProtocolStateError
from scaserver.sip.message import Request, Response


def serialize(message: Request | Response) -> bytes:
    """The wire form of ``message``; parse_message() of it gives the same values back."""
    if isinstance(message, Request):
        lines = [f"{message.method} {message.uri} {message.version}"]
    else:
        lines = [f"{message.version} {message.status:03d} {message.reason}"]
    length_line = f"Content-Length: {len(message.body)}"
    placed = False
    for name, value in message.headers.fields:
        if name == "Content-Length":
            if not placed:
                lines.append(length_line)
                placed = True
            continue
        lines.append(f"{name}: {value}")
    if not placed:
        lines.append(length_line)
    lines += ("", "")
    text = "\r\n".join(lines)
    breaks = len(lines) - 1
    if text.count("\n") != breaks or text.count("\r") != breaks:
        raise ProtocolStateError("CR or LF inside a start line or header value")
    return text.encode("utf-8", "surrogateescape") + message.body
