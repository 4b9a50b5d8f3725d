"""SIP, SIPS and TEL URIs, name-addr and addr-spec (RFC 3261 sections 19.1, 20.10, 25.1;
RFC 3966; RFC 5118 for IPv6 references).

Every %HH escape of a SIP URI component (user, password, parameter names and
values, header names and values) is decoded exactly once when parsed
(RFC 3261 section 19.1.2, RFC 4475 section 3.1.1.3): ``n%61me=v%61lue%25%34%31``
becomes the parameter ``name`` with value ``value%41``.  ``str()`` escapes each
component again with the characters its grammar allows unescaped, so a parsed
URI serializes to an equivalent URI.  Other schemes are kept opaque as
:class:`AbsoluteUri`, which lets a UAS answer 416 (RFC 3261 section 8.2.2.1).
"""

from __future__ import annotations

import enum
import functools
import re
import string
from typing import Final

import attrs

from scaserver.sip.errors import MalformedMessage

# RFC 3261 section 25.1 character classes.
_ALPHANUM: Final = string.ascii_letters + string.digits
_UNRESERVED: Final = _ALPHANUM + "-_.!~*'()"
_USER_SAFE: Final = _UNRESERVED + "&=+$,;?/"
_PASSWORD_SAFE: Final = _UNRESERVED + "&=+$,"
_PARAM_SAFE: Final = _UNRESERVED + "[]/:&+$"
_HNV_SAFE: Final = _UNRESERVED + "[]/?:+$"
_TOKEN_CHARS: Final = _ALPHANUM + "-.!%*_+`'~"


def _outside(safe: str) -> re.Pattern[str]:
    """A pattern finding any character that is neither in ``safe`` nor ``%``."""
    return re.compile("[^" + re.escape(safe) + "%]")


# A component may hold these characters plus %HH escapes.
_USER_BAD: Final = _outside(_USER_SAFE)
_PASSWORD_BAD: Final = _outside(_PASSWORD_SAFE)
_PARAM_BAD: Final = _outside(_PARAM_SAFE)
_HNV_BAD: Final = _outside(_HNV_SAFE)
_BAD_ESCAPE: Final = re.compile(r"%(?![0-9A-Fa-f]{2})")
_HOSTNAME: Final = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9\-_.]*[A-Za-z0-9_])?\.?")
_IPV6: Final = re.compile(r"[0-9A-Fa-f:.]+")
_SCHEME: Final = re.compile(r"[A-Za-z][A-Za-z0-9+\-.]*")
_OPAQUE_BAD: Final = re.compile(r"[\x00-\x20\x7f<>\"]")
_TEL_NUMBER: Final = re.compile(r"\+?[0-9A-Fa-f*#\-.()]+")
_TOKEN: Final = re.compile("[" + re.escape(_TOKEN_CHARS) + "]+")
_DISPLAY_TOKENS: Final = re.compile(
    "[" + re.escape(_TOKEN_CHARS) + "]+(?:[ \t]+[" + re.escape(_TOKEN_CHARS) + "]+)*"
)
# generic-param values: token, host (a bare IPv6 address too: Via received, RFC 5118 4.5).
_GEN_VALUE: Final = re.compile("[" + re.escape(_TOKEN_CHARS) + ":]+|\\[[0-9A-Fa-f:.]+\\]")

DEFAULT_PORTS: Final[dict[str, int]] = {"sip": 5060, "sips": 5061}

Params = tuple[tuple[str, str | None], ...]


def unescape(text: str) -> str:
    """Decode %HH escapes once (RFC 3261 section 19.1.2); octets form UTF-8 text.

    Octets that are not UTF-8 survive as surrogate escapes, exactly like the
    parser's decoding of header text.
    """
    if "%" not in text:
        return text
    if _BAD_ESCAPE.search(text) is not None:
        raise MalformedMessage(f"bad %-escape in {text!r}")
    raw = text.encode("utf-8", "surrogateescape")
    out = bytearray()
    start = 0
    while True:
        index = raw.find(b"%", start)
        if index < 0:
            out += raw[start:]
            break
        out += raw[start:index]
        out.append(int(raw[index + 1 : index + 3], 16))
        start = index + 3
    return out.decode("utf-8", "surrogateescape")


def _escape(text: str, safe: str, bad: re.Pattern[str]) -> str:
    """Escape every octet of ``text`` outside ``safe`` (and every ``%``) as %HH."""
    if bad.search(text) is None and "%" not in text:
        return text
    allowed = frozenset(safe.encode())
    octets = text.encode("utf-8", "surrogateescape")
    return "".join(chr(octet) if octet in allowed else f"%{octet:02X}" for octet in octets)


def _component(text: str, bad: re.Pattern[str], what: str) -> str:
    if bad.search(text) is not None:
        raise MalformedMessage(f"invalid character in URI {what}: {text!r}")
    return unescape(text)


def param_value(params: Params, name: str) -> str | None:
    wanted = name.lower()
    for key, value in params:
        if key.lower() == wanted:
            return "" if value is None else value
    return None


def param_present(params: Params, name: str) -> bool:
    wanted = name.lower()
    # A plain loop, not any(generator): asked of Route entries several times per request.
    for key, _ in params:  # noqa: SIM110
        if key == wanted or key.lower() == wanted:
            return True
    return False


def format_host(host: str) -> str:
    """A host as written in a URI or Via: IPv6 addresses get their brackets back (RFC 5118)."""
    return f"[{host}]" if ":" in host else host


def parse_host(text: str) -> str:
    """A hostname, IPv4 address or bracketed IPv6 reference; returns the host without brackets.

    IPv6 text between brackets is checked for its character set only, so the
    RFC 3261 ABNF quirk ``[2001:db8:::192.0.2.1]`` is tolerated (RFC 5118 section 4.10).
    """
    if text.startswith("["):
        if not text.endswith("]") or _IPV6.fullmatch(text, 1, len(text) - 1) is None or ":" not in text:
            raise MalformedMessage(f"bad IPv6 reference {text!r}")
        return text[1:-1]
    if _HOSTNAME.fullmatch(text) is None:
        raise MalformedMessage(f"bad host {text!r}")
    return text


def parse_port(text: str) -> int:
    if not text.isdigit() or not text.isascii() or len(text) > 5:
        raise MalformedMessage(f"bad port {text!r}")
    port = int(text)
    if port > 65535:
        raise MalformedMessage(f"port out of range: {text!r}")
    return port


def split_hostport(text: str) -> tuple[str, int | None]:
    """``host[:port]`` with an optional IPv6 reference -> (host without brackets, port)."""
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise MalformedMessage(f"unterminated IPv6 reference {text!r}")
        host = parse_host(text[: end + 1])
        rest = text[end + 1 :]
        if not rest:
            return host, None
        if rest[0] != ":":
            raise MalformedMessage(f"junk after IPv6 reference {text!r}")
        return host, parse_port(rest[1:])
    colon = text.find(":")
    if colon < 0:
        return parse_host(text), None
    return parse_host(text[:colon]), parse_port(text[colon + 1 :])


@attrs.frozen
class SipUri:
    """A ``sip:`` or ``sips:`` URI (RFC 3261 section 19.1.1).

    ``user``, ``password``, parameter and header names and values are held
    unescaped (decoded once); ``host`` is without IPv6 brackets; ``port`` is
    None when absent.  A parameter written without ``=`` has the value None.
    """

    scheme: str
    user: str | None
    password: str | None
    host: str
    port: int | None = None
    params: Params = ()
    headers: tuple[tuple[str, str], ...] = ()
    _text: str | None = attrs.field(default=None, init=False, eq=False, hash=False, repr=False)
    """The URI's text once written (or the text it was parsed from, when that is how
    :meth:`__str__` writes it): routing reads it many times per request."""

    def __str__(self) -> str:
        text = self._text
        if text is None:
            text = self._format()
            object.__setattr__(self, "_text", text)
        return text

    def _format(self) -> str:
        parts = [self.scheme, ":"]
        if self.user is not None:
            parts.append(_escape(self.user, _USER_SAFE, _USER_BAD))
            if self.password is not None:
                parts += (":", _escape(self.password, _PASSWORD_SAFE, _PASSWORD_BAD))
            parts.append("@")
        parts.append(format_host(self.host))
        if self.port is not None:
            parts += (":", str(self.port))
        for name, value in self.params:
            parts += (";", _escape(name, _PARAM_SAFE, _PARAM_BAD))
            if value is not None:
                parts += ("=", _escape(value, _PARAM_SAFE, _PARAM_BAD))
        separator = "?"
        for name, value in self.headers:
            parts += (separator, _escape(name, _HNV_SAFE, _HNV_BAD), "=", _escape(value, _HNV_SAFE, _HNV_BAD))
            separator = "&"
        return "".join(parts)

    def param(self, name: str) -> str | None:
        """The value of a URI parameter (case-insensitive name): "" for ``;lr``, None if absent."""
        return param_value(self.params, name)

    def has_param(self, name: str) -> bool:
        return param_present(self.params, name)

    @property
    def transport(self) -> str | None:
        """The ``transport`` parameter in lower case (RFC 3261 section 19.1.1), or None."""
        # param_value's loop without its two calls (routing reads it several times per request).
        for key, value in self.params:
            if key == "transport" or key.lower() == "transport":
                return value.lower() if value else None
        return None

    @property
    def secure(self) -> bool:
        return self.scheme == "sips"

    @property
    def default_port(self) -> int:
        return DEFAULT_PORTS[self.scheme]

    def with_params(self, *params: tuple[str, str | None]) -> SipUri:
        """Set each parameter, replacing one of the same name (kept in place) or appending it."""
        current = list(self.params)
        for name, value in params:
            wanted = name.lower()
            for index, (key, _) in enumerate(current):
                if key.lower() == wanted:
                    current[index] = (key, value)
                    break
            else:
                current.append((name, value))
        return attrs.evolve(self, params=tuple(current))

    def without_params(self, *names: str) -> SipUri:
        """Drop the named parameters, or every parameter when no name is given."""
        if not names:
            return attrs.evolve(self, params=())
        dropped = {name.lower() for name in names}
        return attrs.evolve(self, params=tuple(p for p in self.params if p[0].lower() not in dropped))

    def without_headers(self) -> SipUri:
        return attrs.evolve(self, headers=())

    def aor(self) -> str:
        """The canonical address-of-record: ``sip:user@host`` with the host in lower
        case and ``:port`` only when not the scheme's default; parameters and headers
        dropped (sca.md section 1, RFC 3261 section 10.3).  ``sips:bob@example.com`` and
        ``sip:bob@example.com`` are one address-of-record (RFC 5630 sections 3.1.3 and 4):
        the scheme says how a request must be delivered, not who it is for."""
        host = format_host(self.host.lower())
        if self.port is not None and self.port != DEFAULT_PORTS[self.scheme]:
            host = f"{host}:{self.port}"
        if self.user is None:
            return f"sip:{host}"
        return f"sip:{_escape(self.user, _USER_SAFE, _USER_BAD)}@{host}"

    def matches(self, other: Uri) -> bool:
        """URI equivalence per RFC 3261 section 19.1.4."""
        if not isinstance(other, SipUri):
            return False
        if (self.scheme, self.user, self.password, self.port) != (
            other.scheme,
            other.user,
            other.password,
            other.port,
        ) or self.host.lower() != other.host.lower():
            return False
        mine = {k.lower(): v for k, v in self.params}
        theirs = {k.lower(): v for k, v in other.params}
        for name in ("user", "ttl", "method", "maddr", "transport"):
            if (name in mine) != (name in theirs):
                return False
        for name in mine.keys() & theirs.keys():
            a, b = mine[name], theirs[name]
            if (a is None) != (b is None) or (a is not None and b is not None and a.lower() != b.lower()):
                return False
        return {k.lower(): v for k, v in self.headers} == {k.lower(): v for k, v in other.headers}


@attrs.frozen
class TelUri:
    """A ``tel:`` URI (RFC 3966): the number as written, and its parameters."""

    number: str
    params: Params = ()

    def __str__(self) -> str:
        text = "tel:" + self.number
        for name, value in self.params:
            text += f";{name}" if value is None else f";{name}={value}"
        return text

    def param(self, name: str) -> str | None:
        return param_value(self.params, name)

    @property
    def is_global(self) -> bool:
        return self.number.startswith("+")


@attrs.frozen
class AbsoluteUri:
    """Any other URI scheme, kept opaque (RFC 3261 section 25.1 absoluteURI)."""

    scheme: str
    opaque: str

    def __str__(self) -> str:
        return f"{self.scheme}:{self.opaque}"


Uri = SipUri | TelUri | AbsoluteUri


def _split_uri_params(text: str, bad: re.Pattern[str]) -> Params:
    params: list[tuple[str, str | None]] = []
    for item in text.split(";"):
        if not item:
            raise MalformedMessage("empty URI parameter")
        name, sep, value = item.partition("=")
        if not name:
            raise MalformedMessage(f"URI parameter without name: {item!r}")
        decoded = _component(value, bad, "parameter") if sep else None
        params.append((_component(name, bad, "parameter"), decoded))
    return tuple(params)


def _parse_sip(scheme: str, rest: str) -> SipUri:
    user: str | None = None
    password: str | None = None
    at = rest.find("@")
    if at >= 0:
        userinfo = rest[:at]
        rest = rest[at + 1 :]
        colon = userinfo.find(":")
        raw_user = userinfo if colon < 0 else userinfo[:colon]
        if not raw_user:
            raise MalformedMessage("empty user part in SIP URI")
        user = _component(raw_user, _USER_BAD, "user")
        if colon >= 0:
            password = _component(userinfo[colon + 1 :], _PASSWORD_BAD, "password")
    headers: tuple[tuple[str, str], ...] = ()
    question = rest.find("?")
    if question >= 0:
        header_list: list[tuple[str, str]] = []
        for item in rest[question + 1 :].split("&"):
            name, sep, value = item.partition("=")
            if not name or not sep:
                raise MalformedMessage(f"bad URI header {item!r}")
            header_list.append((_component(name, _HNV_BAD, "header"), _component(value, _HNV_BAD, "header")))
        headers = tuple(header_list)
        rest = rest[:question]
    params: Params = ()
    semicolon = rest.find(";")
    if semicolon >= 0:
        params = _split_uri_params(rest[semicolon + 1 :], _PARAM_BAD)
        rest = rest[:semicolon]
    if not rest:
        raise MalformedMessage("SIP URI without host")
    host, port = split_hostport(rest)
    return SipUri(scheme, user, password, host, port, params, headers)


def _parse_tel(rest: str) -> TelUri:
    number, _, param_text = rest.partition(";")
    if _TEL_NUMBER.fullmatch(number) is None:
        raise MalformedMessage(f"bad telephone number {number!r}")
    params: Params = ()
    if param_text:
        params = tuple(
            (name, value if sep else None)
            for name, sep, value in (item.partition("=") for item in param_text.split(";"))
        )
        if any(not name or _PARAM_BAD.search(name) for name, _ in params):
            raise MalformedMessage(f"bad tel URI parameter in {rest!r}")
    return TelUri(number, params)


_PLAIN_SIP: Final = re.compile(
    "(sips?):"
    "(?:([" + re.escape(_UNRESERVED + "&=+$,") + "]+)@)?"
    "(" + _HOSTNAME.pattern + ")"
    "(?::([0-9]{1,5}))?"
    r'(;[^?@%<>"\x00-\x20\x7f]*)?'
)
"""The usual SIP URI in one match: lower-case scheme, a user without escapes, ``;``, ``?``
or password, a host name or IPv4 address, a port, parameters without escapes; what it
captures is what :func:`_parse_sip` would find (anything else goes there)."""


@functools.lru_cache(maxsize=4096)
def parse_uri(text: str) -> Uri:
    """Parse a URI: SIP/SIPS and TEL structurally, anything else as :class:`AbsoluteUri`.

    Raises :class:`MalformedMessage` for text that is no URI at all (spaces,
    angle brackets, a bad host or port, a bad %-escape).
    """
    plain = _PLAIN_SIP.fullmatch(text)
    if plain is not None:
        scheme, user, host, port_text, param_text = plain.groups()
        params = () if param_text is None else _split_uri_params(param_text[1:], _PARAM_BAD)
        port = None if port_text is None else parse_port(port_text)  # after the parameters, as there
        uri = SipUri(scheme, user, None, host, port, params)
        if port_text is None or port_text[0] != "0":
            object.__setattr__(uri, "_text", text)  # written back as it came (no escapes, no padded port)
        return uri
    colon = text.find(":")
    if colon <= 0 or _SCHEME.fullmatch(text, 0, colon) is None:
        raise MalformedMessage(f"not a URI: {text!r}")
    scheme = text[:colon].lower()
    rest = text[colon + 1 :]
    if _OPAQUE_BAD.search(rest) is not None or not rest:
        raise MalformedMessage(f"invalid character in URI {text!r}")
    if scheme in DEFAULT_PORTS:
        return _parse_sip(scheme, rest)
    if scheme == "tel":
        return _parse_tel(rest)
    return AbsoluteUri(scheme, rest)


class _Unread(enum.Enum):
    """A derived value not computed yet."""

    UNREAD = enum.auto()


_UNREAD: Final = _Unread.UNREAD


@attrs.frozen
class NameAddr:
    """A name-addr or addr-spec with its header parameters (RFC 3261 section 20.10):
    From, To, Contact, Route, Record-Route.

    ``display_name`` is the display name with quoted-pairs resolved (None when
    absent).  Header parameter values are kept as written (a quoted-string keeps
    its quotes), and a parameter without ``=`` has the value None.
    """

    display_name: str | None
    uri: Uri
    params: Params = ()
    _tag: str | _Unread | None = attrs.field(
        default=_Unread.UNREAD, init=False, eq=False, hash=False, repr=False
    )

    def __str__(self) -> str:
        text = f"<{self.uri}>"
        if self.display_name is not None:
            text = quote(self.display_name) + " " + text
        for name, value in self.params:
            text += f";{name}" if value is None else f";{name}={value}"
        return text

    @property
    def tag(self) -> str | None:
        """The ``tag`` parameter (RFC 3261 section 19.3), None when absent or empty: found once
        and kept, as the dialog and call code asks for it many times per request."""
        tag = self._tag
        if tag is _UNREAD:
            tag = None
            for key, value in self.params:
                if key == "tag" or key.lower() == "tag":
                    tag = value or None
                    break
            object.__setattr__(self, "_tag", tag)
        return tag

    def param(self, name: str) -> str | None:
        """A header parameter's value (case-insensitive name): "" when valueless, None if absent."""
        return param_value(self.params, name)

    def has_param(self, name: str) -> bool:
        return param_present(self.params, name)

    def with_param(self, name: str, value: str | None) -> NameAddr:
        wanted = name.lower()
        kept = tuple(p for p in self.params if p[0].lower() != wanted)
        return attrs.evolve(self, params=(*kept, (name, value)))

    def without_param(self, name: str) -> NameAddr:
        wanted = name.lower()
        return attrs.evolve(self, params=tuple(p for p in self.params if p[0].lower() != wanted))


def quote(text: str) -> str:
    """A quoted-string (RFC 3261 section 25.1) holding ``text``: ``"`` and ``\\`` escaped."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def read_quoted(text: str, start: int) -> tuple[str, int]:
    """Read the quoted-string that opens at ``text[start]``; return its content with
    quoted-pairs resolved, and the index after the closing quote."""
    out: list[str] = []
    index = start + 1
    length = len(text)
    while True:
        quote_at = text.find('"', index)
        slash_at = text.find("\\", index, quote_at if quote_at >= 0 else length)
        if quote_at < 0:
            raise MalformedMessage(f"unterminated quoted string in {text!r}")
        if slash_at < 0:
            out.append(text[index:quote_at])
            return "".join(out), quote_at + 1
        if slash_at + 1 >= length or text[slash_at + 1] in "\r\n":
            raise MalformedMessage(f"bad quoted-pair in {text!r}")
        out.append(text[index:slash_at])
        out.append(text[slash_at + 1])
        index = slash_at + 2


def split_params(text: str) -> Params:
    """Parse ``*( SEMI generic-param )`` header parameters (RFC 3261 section 25.1).

    ``text`` starts at the first ``;`` (or is empty).  LWS around ``;`` and ``=``
    is allowed; values are tokens, hosts or quoted-strings, kept as written.
    """
    text = text.strip(" \t")
    if not text:
        return ()
    if text[0] != ";":
        raise MalformedMessage(f"expected ';' before parameters: {text!r}")
    params: list[tuple[str, str | None]] = []
    if '"' not in text:
        for item in text[1:].split(";"):
            name, sep, value = item.partition("=")
            name = name.strip(" \t")
            if _TOKEN.fullmatch(name) is None:
                raise MalformedMessage(f"bad parameter {item!r}")
            if sep:
                value = value.strip(" \t")
                if _GEN_VALUE.fullmatch(value) is None:
                    raise MalformedMessage(f"bad parameter value {item!r}")
                params.append((name, value))
            else:
                params.append((name, None))
        return tuple(params)
    index = 0
    length = len(text)
    while index < length:
        # text[index] is ";"
        equals = text.find("=", index + 1)
        semi = text.find(";", index + 1)
        end_name = min(x for x in (equals, semi, length) if x >= 0)
        name = text[index + 1 : end_name].strip(" \t")
        if _TOKEN.fullmatch(name) is None:
            raise MalformedMessage(f"bad parameter name {name!r}")
        if end_name == length or text[end_name] == ";":
            params.append((name, None))
            index = end_name
            continue
        value_start = end_name + 1
        while value_start < length and text[value_start] in " \t":
            value_start += 1
        if value_start < length and text[value_start] == '"':
            _, after = read_quoted(text, value_start)
            value = text[value_start:after]
            rest = after
            while rest < length and text[rest] in " \t":
                rest += 1
            if rest < length and text[rest] != ";":
                raise MalformedMessage(f"junk after quoted parameter in {text!r}")
            index = rest
        else:
            semi = text.find(";", value_start)
            stop = length if semi < 0 else semi
            value = text[value_start:stop].strip(" \t")
            if _GEN_VALUE.fullmatch(value) is None:
                raise MalformedMessage(f"bad parameter value {value!r}")
            index = stop
        params.append((name, value))
    return tuple(params)


def _display_name(text: str) -> str | None:
    text = text.strip(" \t")
    if not text:
        return None
    if text[0] == '"':
        name, after = read_quoted(text, 0)
        if text[after:].strip(" \t"):
            raise MalformedMessage(f"junk after display name {text!r}")
        return name
    if _DISPLAY_TOKENS.fullmatch(text) is None:
        raise MalformedMessage(f"display name must be tokens or a quoted string: {text!r}")
    return text


@functools.lru_cache(maxsize=256)
def parse_name_addr(text: str) -> NameAddr:
    """Parse ``(name-addr / addr-spec) *(SEMI param)`` (RFC 3261 section 20.10).

    In the addr-spec form (no ``<>``) every ``;`` parameter after the URI is a
    header parameter, and a URI with ``?`` or ``,`` is rejected: the RFC
    requires angle brackets around it.  LWS just inside the brackets is
    ignored (RFC 4475 section 3.1.2.14).
    """
    text = text.strip(" \t")
    if not text:
        raise MalformedMessage("empty name-addr")
    if text[0] == '"':
        _, after = read_quoted(text, 0)
        open_at = text.find("<", after)
        if open_at < 0 or text[after:open_at].strip(" \t"):
            raise MalformedMessage(f"quoted display name not followed by <URI>: {text!r}")
    else:
        open_at = text.find("<")
        if open_at >= 0 and ":" in text[:open_at]:
            open_at = -1  # an addr-spec whose parameters hold a "<"
    if open_at >= 0:
        close_at = text.find(">", open_at)
        if close_at < 0:
            raise MalformedMessage(f"unterminated <URI> in {text!r}")
        display = _display_name(text[:open_at]) if open_at else None
        uri = parse_uri(text[open_at + 1 : close_at].strip(" \t"))
        return NameAddr(display, uri, split_params(text[close_at + 1 :]))
    semicolon = text.find(";")
    spec = text if semicolon < 0 else text[:semicolon].rstrip(" \t")
    if "?" in spec or "," in spec or " " in spec or "\t" in spec:
        raise MalformedMessage(f"addr-spec with '?', ',' or LWS needs <>: {text!r}")
    uri = parse_uri(spec)
    return NameAddr(None, uri, split_params(text[semicolon:]) if semicolon >= 0 else ())
