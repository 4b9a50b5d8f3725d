"""STUN Binding for SIP keep-alives (RFC 5389, as RFC 5626 section 4.4.2 and 8.4 use it).

A UA that registered with ``+sip.instance``/``reg-id`` (SIP Outbound) keeps its UDP flow
open by sending STUN Binding requests to the SIP port it registered through, and learns from
the XOR-MAPPED-ADDRESS of the answer whether its NAT mapping changed.  The edge tells STUN
from SIP by the first octet and the magic cookie (RFC 5626 section 8.4, RFC 7983 section 7:
octets 0..3 are STUN, a SIP message starts with a letter or a CRLF) and hands the datagram to
:func:`answer`.

Pure: bytes in, bytes out.  What is checked (RFC 5389 section 7.3): the two leading zero
bits, the magic cookie, a length that is a multiple of 4 and matches the datagram, attributes
that fit, a FINGERPRINT (when present) that matches; anything else is :class:`StunError` and
is dropped without an answer.  A request with a comprehension-required attribute we do not
know gets a 420 with UNKNOWN-ATTRIBUTES (section 7.3.1).

What is skipped, on purpose: authentication.  The keep-alive usage has no credentials
(RFC 5626 section 8.4: the Binding requests are sent without USERNAME or
MESSAGE-INTEGRITY, and the server does not challenge them), so USERNAME and
MESSAGE-INTEGRITY are understood and ignored: the answer carries no MESSAGE-INTEGRITY, and a
client that wanted one (ICE, which is not what this port serves) discards it.  Nothing but
the client's own transport address is disclosed, to that address, in an answer no larger
than a small request: no amplification worth having.
"""

from __future__ import annotations

import enum
import ipaddress
import struct
import zlib
from typing import Final

import attrs

MAGIC_COOKIE: Final = 0x2112A442
HEADER_SIZE: Final = 20
MAX_SIZE: Final = 548
"""The largest STUN message answered (RFC 5389 section 7.1: 548 octets without a known path
MTU); a keep-alive request is 20 to 28 octets."""

BINDING: Final = 0x001

XOR_MAPPED_ADDRESS: Final = 0x0020
USERNAME: Final = 0x0006
MESSAGE_INTEGRITY: Final = 0x0008
ERROR_CODE: Final = 0x0009
UNKNOWN_ATTRIBUTES: Final = 0x000A
REALM: Final = 0x0014
NONCE: Final = 0x0015
SOFTWARE: Final = 0x8022
FINGERPRINT: Final = 0x8028
_FINGERPRINT_XOR: Final = 0x5354554E

_UNDERSTOOD: Final = frozenset({XOR_MAPPED_ADDRESS, USERNAME, MESSAGE_INTEGRITY, ERROR_CODE, REALM, NONCE})
"""Comprehension-required attributes (0x0000-0x7FFF) a request may carry without a 420."""


class StunError(ValueError):
    """The datagram is not a well-formed STUN message (dropped, never answered)."""


class StunClass(enum.Enum):
    REQUEST = 0b00
    INDICATION = 0b01
    SUCCESS = 0b10
    ERROR = 0b11


@attrs.frozen
class StunMessage:
    """One decoded STUN message: method, class, 96-bit transaction id and the attributes in
    the order they came (type, value without padding)."""

    method: int
    kind: StunClass
    transaction_id: bytes
    attributes: tuple[tuple[int, bytes], ...] = ()

    def attribute(self, kind: int) -> bytes | None:
        for found, value in self.attributes:
            if found == kind:
                return value
        return None


def looks_like_stun(datagram: bytes) -> bool:
    """RFC 5626 section 8.4 / RFC 7983: the first two bits zero and the magic cookie in place."""
    return (
        len(datagram) >= HEADER_SIZE
        and datagram[0] < 4
        and int.from_bytes(datagram[4:8], "big") == MAGIC_COOKIE
    )


def _message_type(method: int, kind: StunClass) -> int:
    c = kind.value
    return (
        (method & 0x000F)
        | ((method & 0x0070) << 1)
        | ((method & 0x0F80) << 2)
        | ((c & 1) << 4)
        | ((c & 2) << 7)
    )


def _split_type(value: int) -> tuple[int, StunClass]:
    method = (value & 0x000F) | ((value >> 1) & 0x0070) | ((value >> 2) & 0x0F80)
    kind = StunClass(((value >> 4) & 1) | ((value >> 7) & 2))
    return method, kind


def parse(datagram: bytes) -> StunMessage:
    """Decode one STUN message; :class:`StunError` names what is wrong."""
    if len(datagram) < HEADER_SIZE:
        raise StunError(f"{len(datagram)} octets: shorter than a STUN header")
    if len(datagram) > MAX_SIZE:
        raise StunError(f"{len(datagram)} octets: over {MAX_SIZE}")
    message_type, length, cookie = struct.unpack_from("!HHI", datagram)
    if message_type & 0xC000:
        raise StunError("the two leading bits are not zero")
    if cookie != MAGIC_COOKIE:
        raise StunError("no magic cookie (an RFC 3489 client is not answered)")
    if length % 4 or HEADER_SIZE + length != len(datagram):
        raise StunError(
            f"length {length} does not match the {len(datagram) - HEADER_SIZE} octets after the header"
        )
    method, kind = _split_type(message_type)
    attributes: list[tuple[int, bytes]] = []
    offset = HEADER_SIZE
    while offset < len(datagram):
        if offset + 4 > len(datagram):
            raise StunError("truncated attribute header")
        kind_of, size = struct.unpack_from("!HH", datagram, offset)
        start = offset + 4
        end = start + size
        if end > len(datagram):
            raise StunError(f"attribute 0x{kind_of:04x} of {size} octets overruns the message")
        if kind_of == FINGERPRINT:
            if size != 4 or end != len(datagram):
                raise StunError("FINGERPRINT is not the last attribute of 4 octets")
            expected = (zlib.crc32(datagram[:offset]) ^ _FINGERPRINT_XOR) & 0xFFFFFFFF
            if int.from_bytes(datagram[start:end], "big") != expected:
                raise StunError("FINGERPRINT does not match")
        attributes.append((kind_of, datagram[start:end]))
        offset = end + (-size % 4)
    return StunMessage(method, kind, datagram[8:20], tuple(attributes))


def encode(message: StunMessage, *, fingerprint: bool = False) -> bytes:
    """Serialize ``message`` (attributes padded to 4 octets), with a FINGERPRINT when asked."""
    body = b""
    for kind, value in message.attributes:
        body += struct.pack("!HH", kind, len(value)) + value + b"\x00" * (-len(value) % 4)
    head_type = _message_type(message.method, message.kind)
    length = len(body) + (8 if fingerprint else 0)
    data = struct.pack("!HHI", head_type, length, MAGIC_COOKIE) + message.transaction_id + body
    if fingerprint:
        crc = (zlib.crc32(data) ^ _FINGERPRINT_XOR) & 0xFFFFFFFF
        data += struct.pack("!HHI", FINGERPRINT, 4, crc)
    return data


def xor_address(host: str, port: int, transaction_id: bytes) -> bytes:
    """The value of an XOR-MAPPED-ADDRESS for ``host:port`` (RFC 5389 section 15.2)."""
    address = ipaddress.ip_address(host)
    x_port = port ^ (MAGIC_COOKIE >> 16)
    if address.version == 4:
        x_address = int(address) ^ MAGIC_COOKIE
        return struct.pack("!BBH", 0, 0x01, x_port) + x_address.to_bytes(4, "big")
    mask = int.from_bytes(MAGIC_COOKIE.to_bytes(4, "big") + transaction_id, "big")
    return struct.pack("!BBH", 0, 0x02, x_port) + (int(address) ^ mask).to_bytes(16, "big")


def read_xor_address(value: bytes, transaction_id: bytes) -> tuple[str, int]:
    """The inverse of :func:`xor_address`."""
    if len(value) < 8:
        raise StunError("XOR-MAPPED-ADDRESS too short")
    _, family, x_port = struct.unpack_from("!BBH", value)
    port = x_port ^ (MAGIC_COOKIE >> 16)
    if family == 0x01 and len(value) == 8:
        return str(ipaddress.IPv4Address(int.from_bytes(value[4:8], "big") ^ MAGIC_COOKIE)), port
    if family == 0x02 and len(value) == 20:
        mask = int.from_bytes(MAGIC_COOKIE.to_bytes(4, "big") + transaction_id, "big")
        return str(ipaddress.IPv6Address(int.from_bytes(value[4:20], "big") ^ mask)), port
    raise StunError(f"XOR-MAPPED-ADDRESS of family {family} and {len(value)} octets")


def binding_request(transaction_id: bytes, *, fingerprint: bool = False) -> bytes:
    """A Binding request as a keep-alive client sends it (no attributes)."""
    if len(transaction_id) != 12:
        raise ValueError("a STUN transaction id is 96 bits")
    return encode(StunMessage(BINDING, StunClass.REQUEST, transaction_id), fingerprint=fingerprint)


def answer(datagram: bytes, host: str, port: int) -> bytes | None:
    """What a keep-alive server answers to ``datagram`` from ``host:port``: a Binding success
    response with the XOR-MAPPED-ADDRESS of the source, a 420 for unknown
    comprehension-required attributes, a 400 for another method's request, nothing for an
    indication (a keep-alive that wants no answer).  :class:`StunError` for a malformed
    message or a response (we send no requests: it is unsolicited)."""
    message = parse(datagram)
    if message.kind is StunClass.INDICATION:
        return None
    if message.kind is not StunClass.REQUEST:
        raise StunError(f"unsolicited STUN {message.kind.name.lower()}")
    fingerprint = message.attribute(FINGERPRINT) is not None
    unknown = [kind for kind, _ in message.attributes if kind < 0x8000 and kind not in _UNDERSTOOD]
    if message.method != BINDING:
        return _error(message, 400, "Bad Request", (), fingerprint)
    if unknown:
        return _error(message, 420, "Unknown Attribute", unknown, fingerprint)
    mapped = xor_address(host, port, message.transaction_id)
    success = StunMessage(BINDING, StunClass.SUCCESS, message.transaction_id, ((XOR_MAPPED_ADDRESS, mapped),))
    return encode(success, fingerprint=fingerprint)


def _error(
    request: StunMessage, code: int, reason: str, unknown: list[int] | tuple[int, ...], fingerprint: bool
) -> bytes:
    phrase = reason.encode()
    error_code = struct.pack("!HBB", 0, code // 100, code % 100) + phrase
    attributes: list[tuple[int, bytes]] = [(ERROR_CODE, error_code)]
    if unknown:
        attributes.append((UNKNOWN_ATTRIBUTES, b"".join(struct.pack("!H", kind) for kind in unknown)))
    response = StunMessage(request.method, StunClass.ERROR, request.transaction_id, tuple(attributes))
    return encode(response, fingerprint=fingerprint)
