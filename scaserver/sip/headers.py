"""Typed views of header values, parsed lazily (RFC 3261 section 20 and 25.1).

The parser keeps each header as text; these functions turn one value into a
frozen object when somebody asks for it.  Parsers of single values are cached
on the value string (``functools.lru_cache``), so retransmissions and repeated
accessors cost a dictionary lookup.  The caches of values that carry a tag or a branch
(Via, From, To, Contact: new with each dialog or transaction) are small, 256 entries: the
repeats come within a transaction or a dialog's first exchanges, and a cached value lives
until as many others have been parsed after it, so a large cache only keeps each one alive
for seconds (4096 entries: about 2 s at 250 seize cycles a second, through the collector's
young generations).  Every parse failure raises
:class:`~scaserver.sip.errors.MalformedMessage`, which answers 400.
"""

from __future__ import annotations

import functools
import re
from collections import OrderedDict
from collections.abc import Collection, Iterable, Sequence
from typing import Final

import attrs

from scaserver.sip.errors import MalformedMessage
from scaserver.sip.message import Message
from scaserver.sip.uri import (
    NameAddr,
    Params,
    format_host,
    param_present,
    param_value,
    parse_name_addr,
    parse_port,
    quote,
    read_quoted,
    split_hostport,
    split_params,
)

UINT32_MAX: Final = 2**32 - 1
MAX_FORWARDS_LIMIT: Final = 255
BRANCH_MAGIC_COOKIE: Final = "z9hG4bK"

_TOKEN: Final = re.compile(r"[A-Za-z0-9\-.!%*_+`'~]+")
_UNQUOTED_BAD: Final = re.compile(r'[\x00-\x20\x7f"]')
_PLAIN_VIA: Final = re.compile(
    r"SIP/2\.0/(UDP|TCP|TLS) ([A-Za-z0-9](?:[A-Za-z0-9\-_.]*[A-Za-z0-9_])?\.?)(?::([0-9]{1,5}))?(;.*)?",
    re.DOTALL,
)
"""The usual via-parm in one match: no LWS but the one space, upper case, a host name or
IPv4 address (the host pattern of :mod:`scaserver.sip.uri`); anything else is parsed in parts."""


def parse_uint32(text: str, what: str = "value") -> int:
    """A non-negative decimal integer up to 2**32-1, leading zeros allowed (RFC 4475 3.1.1.1).

    Larger values are rejected rather than wrapped (RFC 4475 section 3.1.2.4).
    """
    text = text.strip(" \t")
    if not text or not text.isascii() or not text.isdigit():
        raise MalformedMessage(f"{what} is not a number: {text!r}")
    stripped = text.lstrip("0") or "0"
    if len(stripped) > 10:
        raise MalformedMessage(f"{what} too large: {text!r}")
    number = int(stripped)
    if number > UINT32_MAX:
        raise MalformedMessage(f"{what} too large: {text!r}")
    return number


@attrs.frozen
class Via:
    """One Via value (RFC 3261 sections 18.2.1, 20.42): sent-protocol, sent-by, parameters.

    ``host`` has no IPv6 brackets; ``transport`` is upper case (``UDP``, ``TCP``...).
    """

    protocol: str
    transport: str
    host: str
    port: int | None = None
    params: Params = ()

    def __str__(self) -> str:
        text = f"{self.protocol}/{self.transport} {format_host(self.host)}"
        if self.port is not None:
            text += f":{self.port}"
        for name, value in self.params:
            text += f";{name}" if value is None else f";{name}={value}"
        return text

    def param(self, name: str) -> str | None:
        return param_value(self.params, name)

    def has_param(self, name: str) -> bool:
        return param_present(self.params, name)

    @property
    def branch(self) -> str | None:
        # The loop of param_value without its two calls, and no lower() for a name written in
        # lower case, as every UA writes it (bench/RESULTS.md, hot-path round 7).
        for key, value in self.params:
            if key == "branch" or key.lower() == "branch":
                return value or None
        return None

    @property
    def received(self) -> str | None:
        """The ``received`` address, brackets removed (RFC 5118 section 4.5 tolerates them)."""
        value = self.param("received")
        if not value:
            return None
        return value[1:-1] if value.startswith("[") and value.endswith("]") else value

    @property
    def has_rport(self) -> bool:
        return self.has_param("rport")

    @property
    def rport(self) -> int | None:
        """The ``rport`` value (RFC 3581), None when absent or written without a value."""
        value = self.param("rport")
        return int(value) if value else None

    @property
    def sent_by(self) -> tuple[str, int | None]:
        return self.host, self.port

    @property
    def rfc3261_branch(self) -> bool:
        """Whether the branch carries the RFC 3261 magic cookie (section 8.1.1.7)."""
        branch = self.branch
        return branch is not None and branch.startswith(BRANCH_MAGIC_COOKIE)

    def with_param(self, name: str, value: str | None) -> Via:
        """Set a parameter, replacing one of the same name in place or appending it."""
        wanted = name.lower()
        params = list(self.params)
        for index, (key, _) in enumerate(params):
            if key.lower() == wanted:
                params[index] = (key, value)
                break
        else:
            params.append((name, value))
        return attrs.evolve(self, params=tuple(params))


SENT_VIA_MEMORY: Final = 256
"""How many Via values of requests we sent are remembered with their text.  Their responses
come back within a round trip; each Via carries a unique branch, so a larger memory only
keeps every value alive longer: 4096 held each NOTIFY's Via for about 2.7 s at 250 seize
cycles a second, through the collector's young generations (bench/RESULTS.md, "Young
survivors of a seize cycle")."""

_sent_vias: OrderedDict[str, Via] = OrderedDict()


def sent_via_text(via: Via) -> str:
    """The text of ``via``, a Via we put on a request we send, remembered with its value: the
    responses carry it back unchanged (RFC 3261 section 8.2.6.2), and :func:`parse_via` then
    returns the value without parsing the text again.  The last :data:`SENT_VIA_MEMORY`
    are remembered."""
    text = str(via)
    _sent_vias[text] = via
    _sent_vias.move_to_end(text)  # a text sent again is the newest, not where it first stood
    if len(_sent_vias) > SENT_VIA_MEMORY:
        _sent_vias.popitem(last=False)
    return text


def parse_via(text: str) -> Via:
    """Parse one via-parm (:func:`parse_via_text`); a Via we sent is not parsed again."""
    sent = _sent_vias.get(text)
    return sent if sent is not None else parse_via_text(text)


@functools.lru_cache(maxsize=256)
def parse_via_text(text: str) -> Via:
    """Parse one via-parm (RFC 3261 section 25.1): ``SIP / 2.0 / UDP host[:port] *(;param)``.

    LWS is allowed around the slashes and before the parameters (RFC 4475
    3.1.1.1).  ``received`` may be an IPv6 address with or without brackets;
    ``rport`` must be empty or a port; ``branch`` must not be empty.
    """
    plain = _PLAIN_VIA.fullmatch(text)
    if plain is None:
        return _checked_via(_parse_via_parts(text), text)
    transport, host, port_text, param_text = plain.groups()
    port = None if port_text is None else parse_port(port_text)
    params = split_params(param_text) if param_text is not None else ()
    return _checked_via(Via("SIP/2.0", transport, host, port, params), text)


def _parse_via_parts(text: str) -> Via:
    """A via-parm in any of the forms the grammar allows (LWS, case, IPv6 references)."""
    first = text.find("/")
    second = text.find("/", first + 1) if first >= 0 else -1
    if second < 0:
        raise MalformedMessage(f"Via without sent-protocol: {text!r}")
    name = text[:first].strip(" \t")
    version = text[first + 1 : second].strip(" \t")
    rest = text[second + 1 :].lstrip(" \t")
    cut = 0
    while cut < len(rest) and rest[cut] not in " \t;":
        cut += 1
    transport = rest[:cut]
    if not (_TOKEN.fullmatch(name) and _TOKEN.fullmatch(version) and _TOKEN.fullmatch(transport)):
        raise MalformedMessage(f"bad Via sent-protocol: {text!r}")
    rest = rest[cut:].lstrip(" \t")
    semicolon = rest.find(";")
    sent_by = (rest if semicolon < 0 else rest[:semicolon]).strip(" \t")
    if not sent_by:
        raise MalformedMessage(f"Via without sent-by: {text!r}")
    if sent_by.startswith("["):
        host, port = split_hostport(sent_by)
    else:
        # LWS is allowed around the ':' of sent-by.
        host, port = split_hostport(sent_by.replace(" ", "").replace("\t", ""))
    params = split_params(rest[semicolon:]) if semicolon >= 0 else ()
    return Via(f"{name.upper()}/{version}", transport.upper(), host, port, params)


def _checked_via(via: Via, text: str) -> Via:
    """``via`` when its parameters are valid: a non-empty ``branch``, an ``rport`` that is
    empty or a port, a ``ttl`` of 0 to 255."""
    for key, value in via.params:
        lowered = key.lower()
        if lowered == "branch" and not value:
            raise MalformedMessage(f"empty Via branch: {text!r}")
        if lowered == "rport" and value:
            port_value = parse_uint32(value, "rport")
            if port_value > 65535:
                raise MalformedMessage(f"bad rport {value!r}")
        if lowered == "ttl" and (value is None or parse_uint32(value, "ttl") > 255):
            raise MalformedMessage(f"bad Via ttl {value!r}")
    return via


@attrs.frozen
class CSeq:
    """The CSeq header (RFC 3261 section 20.16): sequence number and method."""

    number: int
    method: str

    def __str__(self) -> str:
        return f"{self.number} {self.method}"


@functools.lru_cache(maxsize=4096)
def parse_cseq(text: str) -> CSeq:
    """Parse ``1*DIGIT LWS Method``; the number must fit 32 bits (RFC 3261 section 8.1.1.5)."""
    parts = text.split()
    if len(parts) != 2:
        raise MalformedMessage(f"bad CSeq {text!r}")
    number = parse_uint32(parts[0], "CSeq number")
    if _TOKEN.fullmatch(parts[1]) is None:
        raise MalformedMessage(f"bad CSeq method {text!r}")
    return CSeq(number, parts[1])


@attrs.frozen
class Star:
    """``Contact: *`` (RFC 3261 section 10.2.2): remove every binding."""

    def __str__(self) -> str:
        return "*"


STAR: Final = Star()


@functools.lru_cache(maxsize=256)
def parse_contact(text: str) -> NameAddr:
    """One Contact value; ``expires`` must be a 32-bit number and ``q`` a qvalue (20.10)."""
    contact = parse_name_addr(text)
    for key, value in contact.params:
        lowered = key.lower()
        if lowered == "expires" and value is not None:
            parse_uint32(value, "Contact expires")
        elif lowered == "q" and (value is None or not _valid_qvalue(value)):
            raise MalformedMessage(f"bad Contact q {value!r}")
    return contact


def _valid_qvalue(text: str) -> bool:
    try:
        value = float(text)
    except ValueError:
        return False
    return 0.0 <= value <= 1.0 and len(text) <= 5


def parse_contacts(values: Iterable[str]) -> list[NameAddr] | Star:
    """Parse Contact values (already split on commas): name-addrs, or ``*`` alone."""
    items = list(values)
    if any(item.strip(" \t") == "*" for item in items):
        if len(items) != 1:
            raise MalformedMessage("Contact '*' mixed with other values")
        return STAR
    return [parse_contact(item) for item in items]


@attrs.frozen
class AuthHeader:
    """A challenge or credentials (RFC 3261 section 25.1, RFC 7616): scheme and auth-params.

    Parameter values are held unquoted (quoted-pairs resolved).  A header with a
    token68 instead of parameters keeps it as ``token68``.
    """

    scheme: str
    params: tuple[tuple[str, str], ...] = ()
    token68: str | None = None

    def param(self, name: str) -> str | None:
        wanted = name.lower()
        for key, value in self.params:
            if key.lower() == wanted:
                return value
        return None

    def __str__(self) -> str:
        return format_auth(self)


CREDENTIAL_TOKENS: Final = frozenset({"algorithm", "nc", "qop"})
"""Authorization parameters sent unquoted (RFC 7616 section 3.4)."""
CHALLENGE_TOKENS: Final = frozenset({"algorithm", "stale"})
"""WWW-Authenticate parameters sent unquoted (RFC 7616 section 3.3)."""


def format_auth(header: AuthHeader, *, bare: Collection[str] = CREDENTIAL_TOKENS) -> str:
    """Write an auth header value: parameters named in ``bare`` as tokens, others quoted."""
    if header.token68 is not None:
        return f"{header.scheme} {header.token68}"
    rendered = [
        f"{name}={value}" if name.lower() in bare else f"{name}={quote(value)}"
        for name, value in header.params
    ]
    return f"{header.scheme} {', '.join(rendered)}" if rendered else header.scheme


_AUTH_TOKEN: Final = r"[A-Za-z0-9\-.!%*_+`'~]+"
_AUTH_PARAM: Final = _AUTH_TOKEN + r'=(?:"[^"\\]*"|[^\x00-\x20\x7f",]+)'
_PLAIN_AUTH: Final = re.compile(f"({_AUTH_TOKEN}) ({_AUTH_PARAM}(?:, ?{_AUTH_PARAM})*)")
"""The usual credentials or challenge in one match: ``Digest k=v, k="v"``, one space after
the scheme, ``,`` or ``, `` between parameters, quoted values without quoted-pairs;
anything else is read in parts."""
_AUTH_PARAM_PAIRS: Final = re.compile(rf'({_AUTH_TOKEN})="?((?<=")[^"\\]*|(?<!")[^\x00-\x20\x7f",]+)"?')
"""Each ``name=value`` of a text :data:`_PLAIN_AUTH` matched, as (name, unquoted value):
the value group opens after the quote when there is one, and the closing quote is left out."""


def parse_auth(text: str) -> AuthHeader:
    """Parse ``auth-scheme LWS auth-param *(COMMA auth-param)`` (RFC 3261 sections 20.7, 25.1).

    Not cached: each credentials line is new (nonce, cnonce, response), so a cache would
    only spend its bookkeeping and evict values that do repeat.
    """
    plain = _PLAIN_AUTH.fullmatch(text)
    if plain is None:
        return _parse_auth_parts(text)
    scheme, rest = plain.groups()
    if "," not in rest and "=" not in rest.rstrip("="):
        return AuthHeader(scheme, token68=rest)
    return AuthHeader(scheme, tuple(_AUTH_PARAM_PAIRS.findall(rest)))


def _parse_auth_parts(text: str) -> AuthHeader:
    """An auth header value in any of the forms the grammar allows (LWS, quoted-pairs, a
    token68)."""
    text = text.strip(" \t")
    space = 0
    while space < len(text) and text[space] not in " \t":
        space += 1
    scheme = text[:space]
    if _TOKEN.fullmatch(scheme) is None:
        raise MalformedMessage(f"bad auth scheme in {text!r}")
    rest = text[space:].strip(" \t")
    if not rest:
        return AuthHeader(scheme)
    if "=" not in rest.rstrip("=") and "," not in rest:
        return AuthHeader(scheme, token68=rest)
    params: list[tuple[str, str]] = []
    index = 0
    length = len(rest)
    while index < length:
        equals = rest.find("=", index)
        if equals < 0:
            raise MalformedMessage(f"auth-param without '=' in {text!r}")
        name = rest[index:equals].strip(" \t")
        if _TOKEN.fullmatch(name) is None:
            raise MalformedMessage(f"bad auth-param name {name!r}")
        index = equals + 1
        while index < length and rest[index] in " \t":
            index += 1
        if index < length and rest[index] == '"':
            value, index = read_quoted(rest, index)
            while index < length and rest[index] in " \t":
                index += 1
            if index < length and rest[index] != ",":
                raise MalformedMessage(f"junk after quoted auth-param in {text!r}")
        else:
            comma = rest.find(",", index)
            stop = length if comma < 0 else comma
            value = rest[index:stop].strip(" \t")
            if not value or _UNQUOTED_BAD.search(value) is not None:
                raise MalformedMessage(f"bad auth-param value {value!r}")
            index = stop
        params.append((name, value))
        # skip the comma and LWS before the next parameter
        while index < length and rest[index] in " \t,":
            index += 1
    return AuthHeader(scheme, tuple(params))


@attrs.frozen
class EventHeader:
    """The Event header (RFC 6665 section 8.2.1): package (with template suffixes) and params."""

    package: str
    params: Params = ()

    @property
    def id(self) -> str | None:
        return param_value(self.params, "id") or None

    def param(self, name: str) -> str | None:
        return param_value(self.params, name)

    def __str__(self) -> str:
        text = self.package
        for name, value in self.params:
            text += f";{name}" if value is None else f";{name}={value}"
        return text


@functools.lru_cache(maxsize=1024)
def parse_event(text: str) -> EventHeader:
    """Parse ``event-type *( SEMI event-param )``; event-type is a token (RFC 6665 8.4)."""
    semicolon = text.find(";")
    package = (text if semicolon < 0 else text[:semicolon]).strip(" \t")
    if _TOKEN.fullmatch(package) is None:
        raise MalformedMessage(f"bad Event {text!r}")
    return EventHeader(package, split_params(text[semicolon:]) if semicolon >= 0 else ())


@functools.lru_cache(maxsize=256)
def parse_max_forwards(text: str) -> int:
    """Max-Forwards: 0..255 (RFC 3261 section 20.22); larger values are rejected."""
    value = parse_uint32(text, "Max-Forwards")
    if value > MAX_FORWARDS_LIMIT:
        raise MalformedMessage(f"Max-Forwards above 255: {text!r}")
    return value


# Message accessors.  Each raises MalformedMessage when the header is unusable.


def _single(msg: Message, name: str) -> str:
    # ``name`` is a canonical spelling (CSeq, From, To): Headers.get's scan, without its call.
    for field_name, value in msg.headers.fields:
        if field_name == name:
            return value
    raise MalformedMessage(f"missing {name}")


def vias(msg: Message) -> list[Via]:
    """Every Via value in order, each parsed (RFC 5118 section 4.7: all hops must parse)."""
    return [parse_via(value) for value in msg.headers.values("Via")]


def top_via(msg: Message) -> Via:
    value = msg.headers.first_value("Via")
    if value is None:
        raise MalformedMessage("missing Via")
    return parse_via(value)


def cseq(msg: Message) -> CSeq:
    return parse_cseq(_single(msg, "CSeq"))


def from_addr(msg: Message) -> NameAddr:
    return parse_name_addr(_single(msg, "From"))


def to_addr(msg: Message) -> NameAddr:
    return parse_name_addr(_single(msg, "To"))


def contacts(msg: Message) -> list[NameAddr] | Star:
    """The Contact values of a message (an empty list when there is none)."""
    return parse_contacts(msg.headers.values("Contact"))


def routes(msg: Message) -> list[NameAddr]:
    return [parse_name_addr(value) for value in msg.headers.values("Route")]


def record_routes(msg: Message) -> list[NameAddr]:
    return [parse_name_addr(value) for value in msg.headers.values("Record-Route")]


def max_forwards(msg: Message) -> int | None:
    """Max-Forwards, or None when absent (an RFC 2543 peer; treat as 70)."""
    value = msg.headers.get("Max-Forwards")
    return None if value is None else parse_max_forwards(value)


def expires(msg: Message) -> int | None:
    """The Expires header in seconds, or None when absent (RFC 3261 section 20.19)."""
    value = msg.headers.get("Expires")
    return None if value is None else parse_uint32(value, "Expires")


def event(msg: Message) -> EventHeader | None:
    value = msg.headers.get("Event")
    return None if value is None else parse_event(value)


def option_tags(msg: Message, name: str) -> tuple[str, ...]:
    """The option tags of Require, Proxy-Require, Supported or Unsupported (RFC 3261 19.2)."""
    return tuple(msg.headers.values(name))


def parse_list(values: Sequence[str]) -> tuple[str, ...]:
    """Tokens of a comma-list header such as Allow, stripped, empty elements removed."""
    return tuple(value.strip(" \t") for value in values if value.strip(" \t"))
