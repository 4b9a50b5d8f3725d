"""A minimal SIP user agent over UDP for the bench's own probes (not part of the product).

Just enough RFC 3261 to register a contact, subscribe, seize and release an appearance,
and answer NOTIFYs with 200: messages are built as text and parsed into a start line,
header lines and a body.  Arrival times are the kernel's receive timestamps
(``SO_TIMESTAMPNS``), so the probe's own Python time does not count in a latency.
"""

from __future__ import annotations

import itertools
import os
import select
import socket
import struct
import time
from collections.abc import Iterator

import attrs

HOST = "127.0.0.1"
RECV_BUFFER = 8 * 1024 * 1024
_SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)
_SCM_TIMESTAMPNS = _SO_TIMESTAMPNS
_SO_RCVBUFFORCE = 33


@attrs.frozen
class SipMessage:
    """A received message: ``first`` line, ``headers`` as (lower-case name, value) pairs, body."""

    first: str
    headers: tuple[tuple[str, str], ...]
    body: bytes
    arrived: float

    @property
    def is_request(self) -> bool:
        return not self.first.startswith("SIP/2.0 ")

    @property
    def method(self) -> str:
        return self.first.split(" ", 1)[0] if self.is_request else ""

    @property
    def status(self) -> int:
        return 0 if self.is_request else int(self.first.split(" ", 2)[1])

    def header(self, name: str) -> str:
        """The first value of header ``name`` (long form, lower case), or ""."""
        for key, value in self.headers:
            if key == name:
                return value
        return ""

    def all(self, name: str) -> list[str]:
        return [value for key, value in self.headers if key == name]

    @property
    def call_id(self) -> str:
        return self.header("call-id")

    @property
    def cseq(self) -> tuple[int, str]:
        number, _, method = self.header("cseq").partition(" ")
        return int(number), method.strip()

    def tag(self, name: str) -> str:
        """The ``tag`` parameter of the From or To header."""
        value = self.header(name)
        for param in value.split(";")[1:]:
            key, _, tag = param.strip().partition("=")
            if key.lower() == "tag":
                return tag
        return ""


COMPACT = {
    "i": "call-id",
    "f": "from",
    "t": "to",
    "v": "via",
    "m": "contact",
    "l": "content-length",
    "o": "event",
}


def parse(data: bytes, arrived: float) -> SipMessage:
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("utf-8", "replace").split("\r\n")
    headers: list[tuple[str, str]] = []
    for line in lines[1:]:
        if line[:1] in (" ", "\t") and headers:
            name, value = headers[-1]
            headers[-1] = (name, value + " " + line.strip())
            continue
        name, _, value = line.partition(":")
        key = name.strip().lower()
        headers.append((COMPACT.get(key, key), value.strip()))
    return SipMessage(lines[0], tuple(headers), body, arrived)


def ok_response(request: SipMessage) -> bytes:
    """A 200 for ``request`` (RFC 3261 8.2.6.2: Via, From, To, Call-ID, CSeq copied)."""
    lines = ["SIP/2.0 200 OK"]
    lines += [f"Via: {via}" for via in request.all("via")]
    to = request.header("to")
    if request.tag("to") == "":
        to += ";tag=probe"
    lines += [f"From: {request.header('from')}", f"To: {to}", f"Call-ID: {request.call_id}"]
    lines += [f"CSeq: {request.header('cseq')}", "Content-Length: 0", "", ""]
    return "\r\n".join(lines).encode()


_branches = itertools.count(1)


def request(
    method: str,
    uri: str,
    *,
    local_port: int,
    from_uri: str,
    from_tag: str,
    to_uri: str,
    call_id: str,
    cseq: int,
    contact: str,
    extra: tuple[str, ...] = (),
    to_tag: str = "",
) -> bytes:
    branch = f"z9hG4bKprobe{os.getpid()}x{next(_branches)}"
    to = f"<{to_uri}>" + (f";tag={to_tag}" if to_tag else "")
    lines = [
        f"{method} {uri} SIP/2.0",
        f"Via: SIP/2.0/UDP {HOST}:{local_port};branch={branch};rport",
        f"From: <{from_uri}>;tag={from_tag}",
        f"To: {to}",
        f"Call-ID: {call_id}",
        f"CSeq: {cseq} {method}",
        f"Contact: <{contact}>",
        "Max-Forwards: 70",
        *extra,
        "Content-Length: 0",
        "",
        "",
    ]
    return "\r\n".join(lines).encode()


class Endpoint:
    """One UDP socket on loopback with kernel receive timestamps."""

    def __init__(self, port: int = 0) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, _SO_RCVBUFFORCE, RECV_BUFFER)
        except OSError:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECV_BUFFER)
        self.sock.setsockopt(socket.SOL_SOCKET, _SO_TIMESTAMPNS, 1)
        self.sock.bind((HOST, port))
        self.sock.setblocking(False)
        self.port: int = self.sock.getsockname()[1]

    def close(self) -> None:
        self.sock.close()

    def send(self, data: bytes, address: tuple[str, int]) -> None:
        self.sock.sendto(data, address)

    def receive(self, timeout: float) -> Iterator[tuple[SipMessage, tuple[str, int]]]:
        """Every message waiting now, or arriving within ``timeout`` if none is waiting."""
        ready, _, _ = select.select([self.sock], [], [], max(0.0, timeout))
        if not ready:
            return
        while True:
            try:
                data, ancillary, _flags, address = self.sock.recvmsg(65535, 64)
            except BlockingIOError:
                return
            arrived = time.time()
            for level, kind, payload in ancillary:
                if level == socket.SOL_SOCKET and kind == _SCM_TIMESTAMPNS and len(payload) >= 16:
                    seconds, nanos = struct.unpack("qq", payload[:16])
                    arrived = seconds + nanos / 1e9
            if data.strip():
                yield parse(data, arrived), address


def register(server: tuple[str, int], user: str, contact_port: int, *, timeout: float = 3.0) -> bool:
    """REGISTER ``sip:user@HOST`` -> ``sip:user@HOST:contact_port`` (no auth); True on 200.

    Sent from ``contact_port`` itself (before the callee binds it), so that a registrar that
    routes to the REGISTER's source address (NAT handling) and one that uses the Contact agree.
    """
    endpoint = Endpoint(contact_port)
    try:
        aor = f"sip:{user}@{HOST}"
        data = request(
            "REGISTER",
            f"sip:{HOST}",
            local_port=endpoint.port,
            from_uri=aor,
            from_tag="reg",
            to_uri=aor,
            call_id=f"reg-{user}-{os.getpid()}@bench",
            cseq=1,
            contact=f"sip:{user}@{HOST}:{contact_port}",
            extra=("Expires: 3600",),
        )
        deadline = time.monotonic() + timeout
        endpoint.send(data, server)
        while time.monotonic() < deadline:
            for message, _ in endpoint.receive(0.5):
                if not message.is_request and message.status >= 200:
                    return message.status == 200
            endpoint.send(data, server)
        return False
    finally:
        endpoint.close()
