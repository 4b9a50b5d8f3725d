"""The push mid-registrar (push-and-parking.md section 3): its settings (3.1), what device
typing says about a REGISTER, and the identity of its bindings (3.6, 3.7).

The engine is :class:`scaserver.registrar.midregengine.MidRegistrar`; what it returns is in
:mod:`scaserver.registrar.midregevents`, what it keeps in :mod:`scaserver.registrar.midregstate`.
Challenges to our own REGISTERs are answered through the injected ``credentials(aor, realm)``
(:data:`UpstreamCredentials`, ``upstream_auth``, 3.1) with the client side of
:mod:`scaserver.sip.digest`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from typing import Final

import attrs

from scaserver.registrar.binding import Binding, BindingKey, KeyKind
from scaserver.registrar.midregsettings import MidRegistrarSettings
from scaserver.sip.digestclient import ClientCredentials
from scaserver.sip.errors import ServiceUnavailable, SipError
from scaserver.sip.message import Peer
from scaserver.sip.uri import NameAddr, SipUri, parse_uri

UPSTREAM_TIMEOUT: Final = "midreg-upstream-timeout"
REFRESH_TIMER: Final = "midreg-refresh"
UNREGISTER_TIMER: Final = "midreg-unregister"

COPIED_FROM_UPSTREAM: Final = ("Date", "Service-Route", "P-Associated-URI", "Supported", "Allow")
RETRY_STATUSES: Final = frozenset({408, 429})
QUEUE_LIMIT: Final = 8


class PushNotSupported(SipError, status=555, reason="Push Notification Service Not Supported"):
    """RFC 8599 section 4.1.1: a ``pn-provider`` we do not push for (4.1 table)."""


class TooManyForwards(ServiceUnavailable, status=503, reason="Service Unavailable"):
    """3.8: the AoR's upstream queue is full; sent with ``Retry-After: 1``."""


@attrs.frozen
class MidRegSettings:
    """What the engine works by (3.1): the ``[midregistrar]`` table as written (``table``) and
    the values the composition root derives from it.  ``upstream`` is the next hop (parsed
    from ``table.upstream``), ``upstream_domain`` the R-URI host of our own REGISTERs,
    ``advertised`` the host[:port] of the aggregate contact, ``multi_domain``: the server
    serves more than one domain (the AoR's "@" is escaped as "%40" in the aggregate user
    part)."""

    upstream: Peer
    upstream_domain: str
    advertised: str
    table: MidRegistrarSettings = attrs.field(factory=MidRegistrarSettings)
    multi_domain: bool = False
    refresh_floor: float = 32.0
    jitter: float = 0.05


@attrs.frozen
class PushTyping:
    """What device typing (push/pnparams, run by the dispatcher) said about one REGISTER.

    ``reject``: the unsupported provider (-> 555); ``reply_caps``: Feature-Caps values for our
    200; ``upstream_caps``: Feature-Caps values for the forwarded REGISTER; ``legacy_keys``:
    contact URI text -> "provider token" for legacy push devices (3.6 rule 3);
    ``legacy_push``: contact URI text -> the push coordinates stored with such a binding
    (4.3), in the ``pn-*`` form RFC 8599 bindings carry.
    """

    reject: str | None = None
    reply_caps: tuple[str, ...] = ()
    upstream_caps: tuple[str, ...] = ()
    legacy_keys: Mapping[str, str] = attrs.field(factory=dict)
    legacy_push: Mapping[str, tuple[tuple[str, str], ...]] = attrs.field(factory=dict)


NO_PUSH: Final = PushTyping()


UpstreamCredentials = Callable[[str, str], ClientCredentials | None]
"""``credentials(aor, realm)``: what answers a challenge of ``realm`` to our own REGISTER for
``aor`` (3.1 ``upstream_auth``), or None."""


def unquote_param(value: str) -> str:
    """A header parameter value without its surrounding double quotes."""
    value = value.strip()
    if len(value) >= 2 and value[0] == value[-1] == '"':
        return value[1:-1]
    return value


def binding_key(
    aor: str, contact: NameAddr, current: Sequence[Binding], legacy: Mapping[str, str]
) -> BindingKey:
    """Section 3.6: instance (+reg-id), RFC 8599 triple, legacy (provider, token), URI."""
    uri = contact.uri
    instance = contact.param("+sip.instance")
    if instance:
        value = unquote_param(instance)
        reg_id = contact.param("reg-id")
        return BindingKey(aor, KeyKind.INSTANCE, value if not reg_id else f"{value};reg-id={reg_id}")
    if isinstance(uri, SipUri) and uri.param("pn-provider") and uri.param("pn-prid"):
        triple = (uri.param("pn-provider") or "", uri.param("pn-prid") or "", uri.param("pn-param") or "")
        return BindingKey(aor, KeyKind.PUSH, " ".join(triple))
    legacy_value = legacy.get(str(uri))
    if legacy_value:
        return BindingKey(aor, KeyKind.PUSH, legacy_value)
    for binding in current:
        if (
            binding.key.kind is KeyKind.URI
            and isinstance(uri, SipUri)
            and uri.matches(parse_uri(binding.contact))
        ):
            return binding.key
    return BindingKey(aor, KeyKind.URI, str(uri))


def mrct_of(key: BindingKey) -> str:
    """The opaque ``mrct`` parameter that maps an upstream contact back to a binding (3.7)."""
    identity = f"{key.aor}\x00{key.kind.value}\x00{key.value}"
    return hashlib.sha256(identity.encode("utf-8", "surrogatepass")).hexdigest()[:16]
