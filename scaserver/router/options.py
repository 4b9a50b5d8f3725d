"""What the server answers as the destination of a request: OPTIONS to the server itself
(RFC 3261 11.2), the 420 of a Require it does not support (8.2.2.3), and what the 489 of an
event package it does not serve names."""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from scaserver.router.settings import CoreSettings
from scaserver.sip import headers
from scaserver.sip.errors import BadExtension, MalformedMessage
from scaserver.sip.message import KNOWN_METHODS, Headers, Request, Response
from scaserver.sip.responses import make_response
from scaserver.sip.uri import SipUri, TelUri
from scaserver.sip.validation import unsupported_options

ACCEPT: Final = "application/sdp"

SCA_EVENTS: Final = ("call-info", "line-seize")
"""The event packages the server serves (its Allow-Events)."""


def is_options_for_us(uri: SipUri | TelUri, local_domain: Callable[[SipUri], bool]) -> bool:
    """OPTIONS to the server itself (no user part, a local domain) is answered here at
    once.  One to a user goes the way of every initial request: authenticated first, so
    the reply does not tell who exists or who is registered; then a registered AoR gets
    it proxied and any other user of a local domain the server's 200."""
    return isinstance(uri, SipUri) and not uri.user and local_domain(uri)


def options_response(request: Request, settings: CoreSettings, to_tag: str) -> Response:
    """RFC 3261 11.2: 200 with Allow, Accept, Supported (and Max-Forwards 0 is fine: we are
    the destination, RFC 4475 3.3.11)."""
    require_supported(request, settings.supported)
    extra = Headers.of(
        ("Allow", ", ".join(KNOWN_METHODS)),
        ("Accept", ACCEPT),
        ("Supported", ", ".join(sorted(settings.supported))),
        ("Allow-Events", ", ".join(SCA_EVENTS)),
        ("Server", settings.server),
    )
    return make_response(request, 200, headers=extra, to_tag=to_tag)


def require_supported(request: Request, supported: frozenset[str]) -> None:
    """420 with Unsupported for Require option tags we do not support (RFC 3261 8.2.2.3)."""
    unknown = unsupported_options(request, "Require", supported)
    if unknown:
        raise BadExtension("unsupported Require", headers=Headers.of(("Unsupported", ", ".join(unknown))))


def published_event(request: Request) -> str:
    """The event package a PUBLISH names, for its 489."""
    try:
        found = headers.event(request)
    except MalformedMessage:
        return "an unreadable event"
    return "no event" if found is None else found.package


def names_shared_line(
    uri: SipUri | TelUri, line_of: Callable[[str], str], is_line: Callable[[str], bool]
) -> bool:
    """Whether ``uri`` has a user part naming a shared line (or an alias of one, ``line_of``)."""
    return isinstance(uri, SipUri) and bool(uri.user) and is_line(line_of(uri.aor()))
