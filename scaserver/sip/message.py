"""SIP messages as frozen values (RFC 3261 section 7).

Header values are kept as the text of each header line (decoded once by the
parser as UTF-8 with ``surrogateescape``, so arbitrary octets survive a round
trip).  Typed views (Via, CSeq, name-addr...) are parsed lazily, on access, by
:mod:`scaserver.sip.headers`; nothing on the hot path parses a header nobody reads.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Iterator
from typing import ClassVar, Final

import attrs

SIP_VERSION: Final = "SIP/2.0"

KNOWN_METHODS: Final = (
    "INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "REGISTER", "SUBSCRIBE", "NOTIFY", "PRACK", "UPDATE",
    "INFO", "MESSAGE", "REFER", "PUBLISH",
)  # fmt: skip
"""The methods of RFC 3261 and its extensions (3262, 3311, 3428, 3515, 3903, 6086, 6665)."""


class Transport(enum.Enum):
    """Transport protocols as written in a Via sent-protocol (RFC 3261 section 18)."""

    __hash__ = object.__hash__  # members are singletons: identity hash in C, not Enum.__hash__

    UDP = "UDP"
    TCP = "TCP"
    TLS = "TLS"

    @property
    def reliable(self) -> bool:
        return self is not Transport.UDP


@attrs.frozen
class Peer:
    """A transport address: where a message came from or goes to."""

    transport: Transport
    host: str
    port: int

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.transport.value.lower()}:{host}:{self.port}"


# Compact forms (RFC 3261 section 7.3.3 and later RFCs) -> canonical names.
COMPACT_FORMS: Final[dict[str, str]] = {
    "a": "Accept-Contact",
    "b": "Referred-By",
    "c": "Content-Type",
    "d": "Request-Disposition",
    "e": "Content-Encoding",
    "f": "From",
    "i": "Call-ID",
    "j": "Reject-Contact",
    "k": "Supported",
    "l": "Content-Length",
    "m": "Contact",
    "n": "Identity-Info",
    "o": "Event",
    "r": "Refer-To",
    "s": "Subject",
    "t": "To",
    "u": "Allow-Events",
    "v": "Via",
    "x": "Session-Expires",
    "y": "Identity",
}

# Spellings that title-casing would get wrong.
_SPECIAL_SPELLINGS: Final[dict[str, str]] = {
    "call-id": "Call-ID",
    "cseq": "CSeq",
    "www-authenticate": "WWW-Authenticate",
    "mime-version": "MIME-Version",
    "rack": "RAck",
    "rseq": "RSeq",
    "sip-etag": "SIP-ETag",
    "sip-if-match": "SIP-If-Match",
    "call-info": "Call-Info",
    "alert-info": "Alert-Info",
    "error-info": "Error-Info",
    "p-asserted-identity": "P-Asserted-Identity",
    "p-preferred-identity": "P-Preferred-Identity",
    "min-se": "Min-SE",
}

_canonical_cache: dict[str, str] = {}


def canonical_name(name: str) -> str:
    """The canonical spelling of a header name: compact forms expanded, case fixed."""
    cached = _canonical_cache.get(name)
    if cached is not None:
        return cached
    lower = name.lower()
    if len(lower) == 1 and lower in COMPACT_FORMS:
        result = COMPACT_FORMS[lower]
    elif lower in _SPECIAL_SPELLINGS:
        result = _SPECIAL_SPELLINGS[lower]
    else:
        result = "-".join(part[:1].upper() + part[1:] for part in lower.split("-"))
    if len(_canonical_cache) < 4096:
        _canonical_cache[name] = result
    return result


# Headers whose value is a comma-separated list (RFC 3261 section 7.3.1).  Any
# other header (WWW-Authenticate, Date, Call-ID...) is never split on commas.
LIST_HEADERS: Final[frozenset[str]] = frozenset(
    {
        "Via",
        "Contact",
        "Route",
        "Record-Route",
        "Path",
        "Service-Route",
        "Allow",
        "Allow-Events",
        "Supported",
        "Require",
        "Proxy-Require",
        "Unsupported",
        "Accept",
        "Accept-Encoding",
        "Accept-Language",
        "Content-Encoding",
        "Content-Language",
        "In-Reply-To",
        "Call-Info",
        "Alert-Info",
        "Error-Info",
        "Warning",
        "Reply-To",
        "Accept-Contact",
        "Reject-Contact",
        "Request-Disposition",
        "P-Asserted-Identity",
        "P-Preferred-Identity",
        "Security-Client",
        "Security-Server",
        "Security-Verify",
    }
)


def split_list(value: str) -> list[str]:
    """Split a header value on commas that are outside quotes and angle brackets."""
    if "," not in value:
        stripped = value.strip()
        return [stripped] if stripped else []
    items: list[str] = []
    depth_angle = 0
    in_quotes = False
    escaped = False
    start = 0
    for index, char in enumerate(value):
        if in_quotes:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_quotes = False
        elif char == '"':
            in_quotes = True
        elif char == "<":
            depth_angle += 1
        elif char == ">":
            depth_angle = max(0, depth_angle - 1)
        elif char == "," and depth_angle == 0:
            items.append(value[start:index].strip())
            start = index + 1
    items.append(value[start:].strip())
    return [item for item in items if item]


@attrs.frozen
class Headers:
    """An ordered, immutable header list with case-insensitive lookup by canonical name.

    ``fields`` holds one ``(canonical name, value)`` pair per header line, in
    wire order.  A list header written as ``Via: a, b`` is one field; use
    :meth:`values` to see its elements.
    """

    fields: tuple[tuple[str, str], ...] = ()

    # Quoted for mypyc: unquoted, it compiles this annotation of a class still being built to
    # a null type object, and the compiled module crashes at import. As text it is what every
    # annotation here is anyway (from __future__ import annotations).
    EMPTY: "ClassVar[Headers]"  # noqa: UP037

    @classmethod
    def of(cls, *fields: tuple[str, str]) -> Headers:
        return cls(tuple((canonical_name(name), value) for name, value in fields))

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(self.fields)

    def __len__(self) -> int:
        return len(self.fields)

    def __contains__(self, name: object) -> bool:
        # The spelling by subscript, not dict.get (a call): a name not seen before, or not a
        # str, takes the slow path.
        try:
            wanted = _canonical_cache[name]  # type: ignore[index]
        except (KeyError, TypeError):
            if not isinstance(name, str):
                return False
            wanted = canonical_name(name)
        # A plain loop, not any(generator): twice as fast, and this runs several times per
        # message (bench/RESULTS.md, profile).
        for field_name, _ in self.fields:  # noqa: SIM110
            if field_name == wanted:
                return True
        return False

    def get(self, name: str) -> str | None:
        """The value of the first header line with this name, or None."""
        try:
            wanted = _canonical_cache[name]
        except KeyError:
            wanted = canonical_name(name)
        for field_name, value in self.fields:
            if field_name == wanted:
                return value
        return None

    def lines(self, name: str) -> tuple[str, ...]:
        """Every header line's value for this name, unsplit, in order."""
        try:
            wanted = _canonical_cache[name]
        except KeyError:
            wanted = canonical_name(name)
        # A plain loop and a list made at the first match, not tuple(generator): 0.53-0.60 ->
        # 0.32-0.37 us on a 13-header message (bench/RESULTS.md, hot-path round 7).
        found: list[str] | None = None
        for field_name, value in self.fields:
            if field_name == wanted:
                if found is None:
                    found = [value]
                else:
                    found.append(value)
        return () if found is None else tuple(found)

    def values(self, name: str) -> tuple[str, ...]:
        """Every element of this header: list headers are split on top-level commas."""
        try:
            wanted = _canonical_cache[name]
        except KeyError:
            wanted = canonical_name(name)
        if wanted not in LIST_HEADERS:
            return self.lines(wanted)
        result: list[str] = []
        for field_name, value in self.fields:
            if field_name == wanted:
                result.extend(split_list(value))
        return tuple(result)

    def first_value(self, name: str) -> str | None:
        """The first element of a (list) header, e.g. the top Via."""
        try:
            wanted = _canonical_cache[name]
        except KeyError:
            wanted = canonical_name(name)
        for field_name, value in self.fields:
            if field_name == wanted:
                if wanted in LIST_HEADERS:
                    items = split_list(value)
                    if items:
                        return items[0]
                    continue
                return value
        return None

    def count(self, name: str) -> int:
        try:
            wanted = _canonical_cache[name]
        except KeyError:
            wanted = canonical_name(name)
        found = 0
        for field_name, _ in self.fields:
            if field_name == wanted:
                found += 1
        return found

    # Copying modifiers: each returns a new Headers.

    def add(self, name: str, value: str) -> Headers:
        """Append a header line."""
        try:
            wanted = _canonical_cache[name]
        except KeyError:
            wanted = canonical_name(name)
        return Headers((*self.fields, (wanted, value)))

    def prepend(self, name: str, value: str) -> Headers:
        """Insert a header line before the first of its name (or at the top): Via, Record-Route."""
        try:
            wanted = _canonical_cache[name]
        except KeyError:
            wanted = canonical_name(name)
        for index, (field_name, _) in enumerate(self.fields):
            if field_name == wanted:
                return Headers((*self.fields[:index], (wanted, value), *self.fields[index:]))
        return Headers(((wanted, value), *self.fields))

    def set(self, name: str, value: str) -> Headers:
        """Replace every line of this name with one line, kept where the first one was."""
        try:
            wanted = _canonical_cache[name]
        except KeyError:
            wanted = canonical_name(name)
        result: list[tuple[str, str]] = []
        placed = False
        for field_name, old in self.fields:
            if field_name == wanted:
                if not placed:
                    result.append((wanted, value))
                    placed = True
            else:
                result.append((field_name, old))
        if not placed:
            result.append((wanted, value))
        return Headers(tuple(result))

    def remove(self, name: str) -> Headers:
        try:
            wanted = _canonical_cache[name]
        except KeyError:
            wanted = canonical_name(name)
        return Headers(tuple(field for field in self.fields if field[0] != wanted))

    def remove_first_value(self, name: str) -> Headers:
        """Drop the first element of a list header (the top Via, the top Route)."""
        try:
            wanted = _canonical_cache[name]
        except KeyError:
            wanted = canonical_name(name)
        for index, (field_name, value) in enumerate(self.fields):
            if field_name != wanted:
                continue
            items = split_list(value)
            if len(items) <= 1:
                return Headers(self.fields[:index] + self.fields[index + 1 :])
            rest = ", ".join(items[1:])
            return Headers((*self.fields[:index], (wanted, rest), *self.fields[index + 1 :]))
        return self

    def extend(self, fields: Iterable[tuple[str, str]]) -> Headers:
        return Headers(self.fields + tuple((canonical_name(n), v) for n, v in fields))


Headers.EMPTY = Headers()


@attrs.frozen
class Request:
    """A SIP request.  ``uri`` is the Request-URI text exactly as received or to be sent;
    :func:`scaserver.sip.uri.parse_uri` (cached) gives its structure."""

    method: str
    uri: str
    headers: Headers = Headers.EMPTY
    body: bytes = b""
    version: str = SIP_VERSION

    def with_headers(self, headers: Headers) -> Request:
        # The constructor, not attrs.evolve (1.8 -> 0.5 us): every field but headers is kept.
        return Request(self.method, self.uri, headers, self.body, self.version)

    @property
    def call_id(self) -> str | None:
        return self.headers.get("Call-ID")


@attrs.frozen
class Response:
    """A SIP response.

    ``detail`` and ``cause`` are never sent: on a response scaserver made itself they say why
    (``detail``, free text for the log) and by which rule (``cause``, one of a bounded set of
    words, a metrics label); a response received from the network has neither.
    """

    status: int
    reason: str
    headers: Headers = Headers.EMPTY
    body: bytes = b""
    version: str = SIP_VERSION
    detail: str | None = attrs.field(default=None, eq=False, repr=False, kw_only=True)
    cause: str | None = attrs.field(default=None, eq=False, repr=False, kw_only=True)

    def with_headers(self, headers: Headers) -> Response:
        # The constructor, not attrs.evolve: every field but headers is kept.
        return Response(
            self.status, self.reason, headers, self.body, self.version, detail=self.detail, cause=self.cause
        )

    @property
    def call_id(self) -> str | None:
        return self.headers.get("Call-ID")


Message = Request | Response
