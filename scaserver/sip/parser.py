"""bytes -> Request | Response (RFC 3261 sections 7 and 25; RFC 3261 18.3 framing).

The hot path of the server: one ``bytes.find`` for the end of the header
section, one UTF-8 decode (``surrogateescape``, so any octet survives), one
split into lines.  Header names are canonicalised (compact forms expanded) and
values kept as text, unfolded and stripped; typed parsing happens later, on
demand, in :mod:`scaserver.sip.headers`.  The only exception raised is
:class:`~scaserver.sip.errors.MalformedMessage`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Final, NoReturn

from scaserver.sip.errors import MalformedMessage
from scaserver.sip.message import KNOWN_METHODS, Headers, Request, Response, canonical_name

_TOKEN: Final = re.compile(r"[A-Za-z0-9\-.!%*_+`'~]+")
_VERSION: Final = re.compile(r"SIP/[0-9]+\.[0-9]+")
_KNOWN_METHODS: Final = frozenset(KNOWN_METHODS)
_VERSIONS: Final = {"SIP/2.0": "SIP/2.0", "sip/2.0": "SIP/2.0"}
_MAX_NAME_CACHE: Final = 2048
_STATUS_CODES: Final = {str(code): code for code in range(100, 700)}
"""The status codes of a status line (three digits, 100 to 699) by their text."""
_MAX_LENGTH_CACHE: Final = 1024
_LENGTHS: dict[str, int] = {}
"""Content-Length values seen before (plain decimal numbers) -> their number."""
_names: dict[str, str] = {}
"""Raw header-name spellings already validated -> canonical name."""

MAX_CONTENT_LENGTH_DIGITS: Final = 10

LINE_MEMORY: Final = 4096
"""How many header lines are remembered with their field (then the memory starts over)."""
LINE_MEMORY_LENGTH: Final = 128
"""The longest header line remembered: the memory holds at most about half a megabyte."""
_REPEATED: Final = frozenset(
    {
        "Max-Forwards", "CSeq", "Expires", "User-Agent", "Server", "Allow", "Allow-Events", "Supported",
        "Require", "Proxy-Require", "Event", "Accept", "Accept-Encoding", "Accept-Language",
        "Content-Type", "Content-Length", "Content-Disposition", "Subscription-State",
        "Session-Expires", "Min-SE", "Privacy",
    }
)  # fmt: skip
"""Headers whose lines are the same in many datagrams, of one UA or of every UA of a model; the
others carry a branch, tag, Call-ID, address, nonce or signature of their own and are not
remembered."""
_fields: dict[str, tuple[str, str]] = {}
"""Header lines seen before -> their (canonical name, stripped value) field: a UA writes the
same Max-Forwards, CSeq, Expires, User-Agent, Allow, Supported, Event, Content-Type and
Content-Length lines in every datagram."""


def _header_name(raw: str) -> str:
    name = _names.get(raw)
    if name is not None:
        return name
    stripped = raw.rstrip(" \t")
    if _TOKEN.fullmatch(stripped) is None:
        raise MalformedMessage(f"bad header name {raw!r}")
    name = canonical_name(stripped)
    if len(_names) < _MAX_NAME_CACHE:
        _names[raw] = name
    return name


def read_content_length(values: Sequence[str]) -> int | None:
    """The Content-Length of a message from its Content-Length values (RFC 3261 20.14).

    None when absent.  Raises MalformedMessage for a value that is not a plain
    decimal number (``-999``, ``five``: RFC 4475 3.1.2.3) or for repeated,
    different values (RFC 4475 3.3.9).
    """
    if not values:
        return None
    first = values[0]
    for value in values:
        if value != first and value.lstrip("0") != first.lstrip("0"):
            raise MalformedMessage("conflicting Content-Length values")
    text = first.strip(" \t")
    if not text or not text.isascii() or not text.isdigit():
        raise MalformedMessage(f"bad Content-Length {first!r}")
    text = text.lstrip("0") or "0"
    if len(text) > MAX_CONTENT_LENGTH_DIGITS:
        raise MalformedMessage(f"Content-Length too large: {first!r}")
    return int(text)


def _unfold(lines: list[str]) -> list[str]:
    """Join continuation lines (starting with SP or HT) to the line before (RFC 3261 7.3.1)."""
    merged: list[str] = []
    for line in lines:
        if line[:1] in (" ", "\t"):
            if len(merged) < 2:
                raise MalformedMessage("continuation line before any header")
            merged[-1] = merged[-1].rstrip(" \t") + " " + line.strip(" \t")
        else:
            merged.append(line)
    return merged


def _version(text: str) -> str:
    version = _VERSIONS.get(text)
    if version is not None:
        return version
    upper = text.upper()
    if _VERSION.fullmatch(upper) is None:
        raise MalformedMessage(f"bad SIP version {text!r}")
    return upper


def _raise_with_headers(error: MalformedMessage, method: str, uri: str, lines: list[str]) -> NoReturn:
    """Raise ``error`` carrying the request's header lines that do parse (as ``partial``)."""
    fields: list[tuple[str, str]] = []
    for line in lines:
        colon = line.find(":")
        if colon <= 0:
            continue
        try:
            fields.append((_header_name(line[:colon]), line[colon + 1 :].strip(" \t")))
        except MalformedMessage:
            continue
    if method and uri and _TOKEN.fullmatch(method) is not None:
        error.partial = Request(method, uri, Headers(tuple(fields)), b"")
    raise error


def parse_message(data: bytes) -> Request | Response:
    """Parse one message: a whole datagram, or one message cut out by the stream framer.

    Leading CRLFs are skipped (RFC 3261 section 7.5).  Without Content-Length
    the body is the rest of the datagram (18.3); with it, the body is that many
    octets and any trailing bytes are dropped (RFC 4475 3.1.1.8).  A declared
    length larger than what arrived is an error (RFC 4475 3.1.2.2).
    """
    start = 0
    while data.startswith(b"\r\n", start):
        start += 2
    end = data.find(b"\r\n\r\n", start)
    if end < 0:
        if start == len(data):
            raise MalformedMessage("empty message")
        raise MalformedMessage("no empty line ends the header section")
    text = data[start:end].decode("utf-8", "surrogateescape")
    lines = text.split("\r\n")
    # Every CR and LF of the header section is in a CRLF the split took out (the decoding makes
    # no CR or LF): the split's count, not a count of b"\r\n" (bench/RESULTS.md, round 7).
    crlf = len(lines) - 1
    if text.count("\r") != crlf or text.count("\n") != crlf:
        raise MalformedMessage("bare CR or LF in the header section")
    # A tab is rare in a header section: one memchr for it before the search for CRLF HT.
    if "\r\n " in text or ("\t" in text and "\r\n\t" in text):
        lines = _unfold(lines)
    start_line = lines[0]

    # Unpacking in a try, dictionaries read by subscript: no call in the usual case
    # (len, dict.get, isdigit and int are each a call; bench/RESULTS.md, parser round 8).
    request_parts: list[str] | None = None
    status = 0
    reason = ""
    head = start_line[:4]
    if head == "SIP/" or head.upper() == "SIP/":
        parts = start_line.split(" ", 2)
        try:
            version, code, reason = parts
        except ValueError:
            if len(parts) < 2:
                version = ""
            else:
                version, code = parts
        if not version:
            raise MalformedMessage(f"bad status line {start_line!r}")
        if version != "SIP/2.0":
            version = _version(version)
        try:
            status = _STATUS_CODES[code]
        except KeyError:
            status = 0
        if not status:
            raise MalformedMessage(f"bad status code {code!r}")
    else:
        request_parts = start_line.split(" ")
        try:
            method, uri, version = request_parts
        except ValueError:
            method = ""
            request_parts = None
        if request_parts is None:
            # Extra spaces (RFC 4475 3.1.2.8-3.1.2.10): refused, but the headers are still read
            # so that the 400 can be answered (partial request below).
            words = start_line.split()
            _raise_with_headers(
                MalformedMessage(f"bad request line {start_line!r}"),
                words[0] if words else "",
                words[1] if len(words) > 1 else "",
                lines[1:],
            )
        if method not in _KNOWN_METHODS and _TOKEN.fullmatch(method) is None:
            raise MalformedMessage(f"bad method {method!r}")
        if not uri:
            raise MalformedMessage("empty Request-URI")
        if version != "SIP/2.0":
            version = _version(version)

    del lines[0]
    # A line seen before is one look-up, all of them in one map (bench/RESULTS.md, hot-path
    # round 7, parser round 8); the others are read one by one.
    # None for a line not seen before, replaced by its field in the loop below.
    fields: list[tuple[str, str] | None] = list(map(_fields.get, lines))
    lengths: list[str] = []
    names = _names
    known = _fields
    try:
        for index, field in enumerate(fields):
            if field is None:
                line = lines[index]
                # One partition, not find and two slices; a spelling seen before is looked up
                # here, without a call (bench/RESULTS.md, hot-path round 5).
                raw, colon, value = line.partition(":")
                if not colon or not raw:
                    del fields[index:]
                    raise MalformedMessage(f"header line without name: {line!r}")
                try:
                    name = names[raw]
                except KeyError:
                    try:
                        name = _header_name(raw)
                    except MalformedMessage:
                        del fields[index:]
                        raise
                field = fields[index] = (name, value.strip(" \t"))  # noqa: PLW2901
                if name in _REPEATED and len(line) <= LINE_MEMORY_LENGTH:
                    if len(known) >= LINE_MEMORY:
                        known.clear()
                    known[line] = field
            if field[0] == "Content-Length":
                lengths.append(field[1])
        if len(lengths) == 1:
            try:
                length: int | None = _LENGTHS[lengths[0]]
            except KeyError:
                length = _plain_length(lengths)
        else:
            length = read_content_length(lengths)
        body_start = end + 4
        if length is None:
            body = data[body_start:]
        else:
            if length > len(data) - body_start:
                raise MalformedMessage(f"Content-Length {length} exceeds the {len(data) - body_start} octets")
            body = data[body_start : body_start + length]
    except MalformedMessage as error:
        if request_parts is not None and error.partial is None:
            read = Headers(tuple(fields))  # type: ignore[arg-type]  # each None before the faulty line replaced
            error.partial = Request(request_parts[0], request_parts[1], read, b"", version)
        raise
    headers = Headers(tuple(fields))  # type: ignore[arg-type]  # every None replaced by the loop
    if request_parts is not None:
        return Request(request_parts[0], request_parts[1], headers, body, version)
    return Response(status, reason, headers, body, version)


def _plain_length(lengths: list[str]) -> int | None:
    """The one Content-Length value of ``lengths``, remembered when it is a plain number."""
    text = lengths[0]
    if len(text) <= MAX_CONTENT_LENGTH_DIGITS and text.isdigit() and text.isascii():
        # The usual one plain number (stripped by the parser); isdigit is true for other digits
        # than ASCII's, which int reads too but the RFC does not.
        length = int(text)
        if len(_LENGTHS) < _MAX_LENGTH_CACHE:
            _LENGTHS[text] = length
        return length
    return read_content_length(lengths)
