"""Message framing on byte streams (TCP, TLS): RFC 3261 section 18.3, RFC 5626 section 3.5.1.

On a stream, the header section ends at the first empty line and the body is
exactly Content-Length octets, which is mandatory there.  CRLFs between
messages are keep-alives: a double CRLF is an RFC 5626 ping (answered by the
edge with a single CRLF pong); a lone CRLF is a pong and is ignored.  A missing,
negative, non-numeric or conflicting Content-Length loses the framing for good:
the connection must be closed.
"""

from __future__ import annotations

from scaserver.sip.errors import (
    FramingError,
    MalformedMessage,
    ProtocolStateError,
    StreamMalformed,
    StreamTooLarge,
)
from scaserver.sip.parser import read_content_length

__all__ = ["FramingError", "StreamFramer"]

_LENGTH_NAMES = (b"content-length", b"l")


def _content_length(head: bytes) -> int:
    values: list[str] = []
    collecting = False
    for line in head.split(b"\r\n")[1:]:
        if line[:1] in (b" ", b"\t"):
            if collecting:
                values[-1] += " " + line.strip(b" \t").decode("latin-1")
            continue
        colon = line.find(b":")
        collecting = colon > 0 and line[:colon].rstrip(b" \t").lower() in _LENGTH_NAMES
        if collecting:
            values.append(line[colon + 1 :].strip(b" \t").decode("latin-1"))
    try:
        length = read_content_length([value.strip(" \t") for value in values])
    except MalformedMessage as error:
        raise StreamMalformed(error.detail) from None
    if length is None:
        raise StreamMalformed("no Content-Length on a stream transport")
    return length


class StreamFramer:
    """Cuts a byte stream into whole messages, each ready for ``parse_message``."""

    def __init__(self, max_message_size: int) -> None:
        self.max_message_size = max_message_size
        self.pings_received = 0
        """Double-CRLF keep-alive pings seen (RFC 5626 3.5.1); the edge answers each with CRLF."""
        self._buffer = bytearray()
        self._scanned = 0  # where the search for the end of the header section resumes
        self._failed: FramingError | None = None

    @property
    def buffered(self) -> int:
        """Octets received but not yet part of a complete message."""
        return len(self._buffer)

    def feed(self, data: bytes) -> list[bytes]:
        """Add received octets; return every message completed by them, in order.

        Raises :class:`FramingError` when framing is lost; the framer then
        stays failed and the connection must be closed.
        """
        if self._failed is not None:
            raise ProtocolStateError("feed() after a framing error") from self._failed
        buffer = self._buffer
        buffer += data
        messages: list[bytes] = []
        try:
            while True:
                self._skip_keepalives()
                if not buffer:
                    break
                end = buffer.find(b"\r\n\r\n", max(0, self._scanned - 3))
                if end < 0:
                    self._scanned = len(buffer)
                    if len(buffer) > self.max_message_size:
                        raise StreamTooLarge(f"header section over {self.max_message_size} octets")
                    break
                total = end + 4 + _content_length(bytes(buffer[:end]))
                if total > self.max_message_size:
                    raise StreamTooLarge(f"message of {total} octets over {self.max_message_size}")
                if len(buffer) < total:
                    self._scanned = end
                    break
                messages.append(bytes(buffer[:total]))
                del buffer[:total]
                self._scanned = 0
        except FramingError as error:
            self._failed = error
            raise
        return messages

    def _skip_keepalives(self) -> None:
        buffer = self._buffer
        while buffer[:2] == b"\r\n":
            if buffer[:4] == b"\r\n\r\n":
                self.pings_received += 1
                del buffer[:4]
            elif len(buffer) < 4 and buffer == b"\r\n\r"[: len(buffer)]:
                return  # a ping may still be arriving
            else:
                del buffer[:2]
            self._scanned = 0
