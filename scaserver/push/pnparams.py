"""Device typing for push (push-and-parking.md section 4; RFC 8599, RFC 6809).

Pure functions over a REGISTER and one of its Contacts:

* :func:`classify` applies the table of section 4.1 to the RFC 8599 ``pn-*`` Contact URI
  parameters (``pn-provider``, ``pn-prid``, ``pn-param``) and, for contacts without
  ``pn-provider``, the configured legacy User-Agent rules of section 4.2;
* :func:`reply_feature_caps` gives the ``Feature-Caps`` values (RFC 6809 syntax with the
  leading ``*``) our REGISTER 2xx carries for that classification;
* :func:`strip_pn_params` removes the ``pn-*`` parameters from a Request-URI routed to a
  push binding, so tokens travel no further (section 4.1, last paragraph);
* :func:`token_hash` is the only form in which a token is shown (section 4.3), and
  :func:`masked_pn_params` puts it in place of the tokens of any text (a Contact, a URI, a
  binding key) before that text is logged or written to a reporting table (section 9).
"""

from __future__ import annotations

import enum
import hashlib
import re
from collections.abc import Sequence
from typing import Final

import attrs

from scaserver.sip.errors import MalformedMessage
from scaserver.sip.message import Request
from scaserver.sip.uri import NameAddr, SipUri, parse_uri, split_params

IANA_PROVIDERS = frozenset({"apns", "fcm", "webpush"})


class Keepalive(enum.Enum):
    """How a push binding is kept alive (section 4.5)."""

    WAKE = "wake"  # reg-refresh push before expiry (RFC 8599 model)
    EXTEND = "extend"  # kept past its expiry while the token is valid (APNs, CallKit)


class Source(enum.Enum):
    RFC8599 = "rfc8599"
    LEGACY = "legacy"


def default_keepalive(provider: str) -> Keepalive:
    """Section 4.5: ``extend`` is the default for ``apns``, ``wake`` for every other provider."""
    return Keepalive.EXTEND if provider == "apns" else Keepalive.WAKE


@attrs.frozen
class PushCoordinates:
    """Where to push one device (section 4.3): provider, push resource id, provider parameter."""

    provider: str
    prid: str = attrs.field(repr=lambda prid: token_hash(prid)[:12])  # never shown whole
    param: str = ""
    source: Source = Source.RFC8599
    device_type: str | None = None
    keepalive: Keepalive = Keepalive.WAKE
    pnsreg: bool = False  # the Contact carries the +sip.pnsreg feature tag (section 4.1)

    @property
    def token(self) -> tuple[str, str]:
        """The (provider, prid) pair that identifies a token (dedup, invalidation: 4.4, 5.3)."""
        return (self.provider, self.prid)

    def key_value(self) -> str:
        """The binding-key discriminator of section 3.6 rules 2 and 3."""
        if self.source is Source.RFC8599:
            return f"{self.provider} {self.prid} {self.param}"
        return f"{self.provider} {self.prid}"


STORED_SOURCE: Final = "push-source"
STORED_DEVICE_TYPE: Final = "push-device-type"
STORED_KEEPALIVE: Final = "push-keepalive"


def stored_params(coordinates: PushCoordinates) -> tuple[tuple[str, str], ...]:
    """The coordinates of a legacy binding as stored with it (4.3): the ``pn-*`` names an
    RFC 8599 binding carries, plus where they came from, its label and keep-alive policy."""
    params = [
        ("pn-provider", coordinates.provider),
        ("pn-prid", coordinates.prid),
        ("pn-param", coordinates.param),
        (STORED_SOURCE, coordinates.source.value),
        (STORED_KEEPALIVE, coordinates.keepalive.value),
    ]
    if coordinates.device_type:
        params.append((STORED_DEVICE_TYPE, coordinates.device_type))
    return tuple(params)


def from_stored(
    push: Sequence[tuple[str, str]], providers: frozenset[str], *, pnsreg: bool = False
) -> PushCoordinates | None:
    """The coordinates a stored binding carries (its RFC 8599 ``pn-*`` parameters, or what
    :func:`stored_params` wrote for a legacy device); None when it is not pushed by us."""
    params = dict(push)
    provider = params.get("pn-provider", "").lower()
    prid = params.get("pn-prid", "")
    if not provider or not prid or provider not in providers:
        return None
    try:
        source = Source(params.get(STORED_SOURCE, Source.RFC8599.value))
        keepalive = Keepalive(params[STORED_KEEPALIVE]) if STORED_KEEPALIVE in params else None
    except ValueError:
        return None
    return PushCoordinates(
        provider,
        prid,
        params.get("pn-param", ""),
        source=source,
        device_type=params.get(STORED_DEVICE_TYPE) or None,
        keepalive=keepalive or default_keepalive(provider),
        pnsreg=pnsreg,
    )


class TokenFrom(enum.Enum):
    CONTACT_PARAM = "contact_param"
    HEADER = "header"


@attrs.frozen
class ValueSource:
    """``contact_param:NAME`` (a Contact URI or header parameter) or ``header:NAME``."""

    kind: TokenFrom
    name: str

    @classmethod
    def parse(cls, text: str) -> ValueSource:
        kind, sep, name = text.partition(":")
        if not sep or not name.strip():
            raise ValueError(f"value source {text!r} is not 'contact_param:NAME' or 'header:NAME'")
        try:
            return cls(TokenFrom(kind.strip()), name.strip())
        except ValueError:
            raise ValueError(f"value source {text!r}: unknown kind {kind!r}") from None

    def read(self, request: Request, contact: NameAddr) -> str | None:
        if self.kind is TokenFrom.HEADER:
            value = request.headers.get(self.name)
            return value.strip() or None if value is not None else None
        value = contact.uri.param(self.name) if isinstance(contact.uri, SipUri) else None
        if value is None:
            value = contact.param(self.name)
        return value or None


@attrs.frozen
class LegacyRule:
    """One entry of ``push.legacy_rules`` (section 4.2); the first matching rule wins."""

    name: str
    user_agent: re.Pattern[str]
    provider: str
    token_from: ValueSource
    param_from: ValueSource | None = None
    param: str = ""
    device_type: str | None = None
    keepalive: Keepalive | None = None

    def match(self, request: Request, contact: NameAddr) -> PushCoordinates | None:
        """Coordinates when the User-Agent matches and the token source is present."""
        agent = request.headers.get("User-Agent")
        if agent is None or self.user_agent.search(agent) is None:
            return None
        token = self.token_from.read(request, contact)
        if token is None:
            return None  # "a rule whose token source is missing does not match"
        param = self.param_from.read(request, contact) if self.param_from is not None else None
        return PushCoordinates(
            provider=self.provider,
            prid=token,
            param=param if param is not None else self.param,
            source=Source.LEGACY,
            device_type=self.device_type,
            keepalive=self.keepalive or default_keepalive(self.provider),
        )


@attrs.frozen
class TypingSettings:
    """The ``push.*`` settings device typing needs.

    ``providers``: providers we push for (lower case).  ``pnsreg_interval``: seconds for
    ``+sip.pnsreg`` in our 2xx (0: not sent).  ``purr``: issue PURRs (section 6.10).
    """

    providers: frozenset[str] = frozenset(IANA_PROVIDERS)
    legacy_rules: tuple[LegacyRule, ...] = ()
    pnsreg_interval: int = 0
    purr: bool = False


class Verdict(enum.Enum):
    NOT_PUSH = "not-push"  # no push coordinates: an ordinary binding
    QUERY = "query"  # capability query (pn-provider without value, or without pn-prid)
    REJECT = "reject"  # 555 Push Notification Service Not Supported
    PUSHED_ELSEWHERE = "pushed-elsewhere"  # an entity closer to the UA sends the pushes
    PUSH = "push"  # a push-capable binding, pushed by us


@attrs.frozen
class Classification:
    """The outcome of :func:`classify` for one Contact (the rows of the section 4.1 table)."""

    verdict: Verdict
    coordinates: PushCoordinates | None = None
    providers: tuple[str, ...] = ()  # the providers a capability query or a reply advertises

    @property
    def push_capable(self) -> bool:
        """Whether *we* push this binding (PUSHED_ELSEWHERE bindings are matched, not pushed)."""
        return self.verdict is Verdict.PUSH


def feature_caps_pns(request: Request) -> frozenset[str]:
    """Providers named by ``+sip.pns`` in the request's Feature-Caps (RFC 8599 section 4.1.2).

    Accepted with or without the leading ``*`` of RFC 6809 (OpenSIPS omits it).
    """
    found: set[str] = set()
    for value in request.headers.lines("Feature-Caps"):
        for item in value.split(","):
            text = item.strip()
            text = text.removeprefix("*").lstrip(";").strip()
            try:
                params = split_params(";" + text) if text else ()
            except MalformedMessage:
                continue  # an unreadable indicator names no provider
            for name, raw in params:
                if name.lower() == "+sip.pns" and raw:
                    found.add(raw.strip().strip('"').lower())
    return frozenset(found)


def _pn(uri: SipUri, name: str) -> tuple[bool, str | None]:
    present = uri.has_param(name)
    value = uri.param(name)
    return present, (value or None)


def classify(request: Request, contact: NameAddr, settings: TypingSettings) -> Classification:
    """Section 4.1 (RFC 8599 contacts) and section 4.2 (legacy rules) for one Contact."""
    uri = contact.uri
    if not isinstance(uri, SipUri):
        return Classification(Verdict.NOT_PUSH)
    has_provider, provider = _pn(uri, "pn-provider")
    if not has_provider:
        for rule in settings.legacy_rules:
            coordinates = rule.match(request, contact)
            if coordinates is not None:
                return Classification(Verdict.PUSH, coordinates, (coordinates.provider,))
        return Classification(Verdict.NOT_PUSH)
    supported = tuple(sorted(settings.providers))
    if provider is None:
        return Classification(Verdict.QUERY, providers=supported)
    provider = provider.lower()
    elsewhere = provider in feature_caps_pns(request)
    if provider not in settings.providers and not elsewhere:
        return Classification(Verdict.REJECT, providers=(provider,))
    _, prid = _pn(uri, "pn-prid")
    if prid is None:
        if elsewhere and provider not in settings.providers:
            return Classification(Verdict.NOT_PUSH)
        return Classification(Verdict.QUERY, providers=(provider,))
    _, param = _pn(uri, "pn-param")
    coordinates = PushCoordinates(
        provider=provider,
        prid=prid,
        param=param or "",
        keepalive=default_keepalive(provider),
        pnsreg=contact.has_param("+sip.pnsreg"),
    )
    if elsewhere:
        return Classification(Verdict.PUSHED_ELSEWHERE, coordinates)
    return Classification(Verdict.PUSH, coordinates, (provider,))


def classify_all(
    request: Request, contacts: Sequence[NameAddr], settings: TypingSettings
) -> tuple[Classification, ...]:
    return tuple(classify(request, contact, settings) for contact in contacts)


def rejection(classifications: Sequence[Classification]) -> str | None:
    """The unsupported provider that makes the whole REGISTER fail with 555, if any."""
    for item in classifications:
        if item.verdict is Verdict.REJECT:
            return item.providers[0]
    return None


def reply_feature_caps(
    classifications: Sequence[Classification], settings: TypingSettings, purr: str | None = None
) -> tuple[str, ...]:
    """The ``Feature-Caps`` values of our REGISTER 2xx (section 4.1 table, RFC 8599 4.1.2).

    One value per provider: capability queries advertise each provider asked about;
    a push-capable RFC 8599 binding adds ``+sip.pnsreg`` (when ``pnsreg_interval`` > 0)
    and ``+sip.pnspurr`` (when PURRs are on and one was issued).  Legacy bindings and
    bindings pushed by another entity get none.
    """
    values: list[str] = []
    seen: set[str] = set()
    for item in classifications:
        if item.verdict is Verdict.QUERY:
            for provider in item.providers:
                if provider not in seen:
                    seen.add(provider)
                    values.append(f'*;+sip.pns="{provider}"')
        elif (
            item.verdict is Verdict.PUSH
            and item.coordinates is not None
            and item.coordinates.source is Source.RFC8599
            and item.coordinates.provider not in seen
        ):
            provider = item.coordinates.provider
            seen.add(provider)
            value = f'*;+sip.pns="{provider}"'
            if settings.pnsreg_interval > 0:
                value += f';+sip.pnsreg="{settings.pnsreg_interval}"'
            if settings.purr and purr is not None:
                value += f';+sip.pnspurr="{purr}"'
            values.append(value)
    return tuple(values)


def upstream_feature_caps(classifications: Sequence[Classification]) -> tuple[str, ...]:
    """``Feature-Caps`` for a REGISTER forwarded upstream (section 3.2): one per provider
    we push for, so upstream entities do not push as well (RFC 8599 section 5.3.2)."""
    providers = sorted(
        {
            item.coordinates.provider
            for item in classifications
            if item.verdict is Verdict.PUSH and item.coordinates is not None
        }
    )
    return tuple(f'*;+sip.pns="{provider}"' for provider in providers)


PN_PARAMS = ("pn-provider", "pn-prid", "pn-param", "pn-purr")


def strip_pn_params(uri_text: str) -> str:
    """``uri_text`` without its RFC 8599 ``pn-*`` parameters (section 4.1)."""
    uri = parse_uri(uri_text)
    if not isinstance(uri, SipUri):
        return uri_text
    if not any(name.lower().startswith("pn-") for name, _ in uri.params):
        return uri_text
    kept = tuple((name, value) for name, value in uri.params if not name.lower().startswith("pn-"))
    return str(attrs.evolve(uri, params=kept))


def purr_of(uri_text: str) -> str | None:
    """The ``pn-purr`` parameter of a Request-URI or Route URI (section 6.10), if any."""
    try:
        uri = parse_uri(uri_text)
    except MalformedMessage:
        return None
    return (uri.param("pn-purr") or None) if isinstance(uri, SipUri) else None


def token_hash(prid: str) -> str:
    """SHA-256 of a push token, hex: the only way a token is logged or shown (section 4.3).
    Octets that were not UTF-8 (surrogate escapes) are hashed as well."""
    return hashlib.sha256(prid.encode("utf-8", "surrogatepass")).hexdigest()


#: ``pn-*`` parameters that are not secret; every other one (``pn-prid``, ``pn-purr``, a
#: legacy ``pn-tok``...) carries a token or an identifier that leads to one.
_PUBLIC_PN_PARAMS: Final = frozenset({"pn-provider", "pn-param"})

_PN_PARAM: Final = re.compile(r'(?i)(?<=[;?&\s])(pn-[a-z0-9.!%*_+`\'~-]+)=("[^"]*"|[^;>,\s&?"\']*)')


def _masked(match: re.Match[str]) -> str:
    name, value = match.group(1), match.group(2)
    if name.lower() in _PUBLIC_PN_PARAMS or not value:
        return match.group()
    return f"{name}=[sha256:{token_hash(value.strip(chr(34)))[:12]}]"


def masked_pn_params(text: str) -> str:
    """``text`` with the value of every secret ``pn-*`` parameter (RFC 8599 ``pn-prid``,
    ``pn-purr``; legacy token parameters) replaced by ``[sha256:<12 hex digits>]`` of the
    value; ``pn-provider`` and ``pn-param`` are kept.  Works on any text: a Contact header
    value, a URI, the ``repr`` of a binding key or of an event."""
    if "pn-" not in text.lower():
        return text
    return _PN_PARAM.sub(_masked, text)
