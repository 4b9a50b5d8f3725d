"""The server's own answers: OPTIONS to it (RFC 3261 11.2) and Require it does not support
(8.2.2.3); the routing to them is tested through the router (test_dispatch)."""

from __future__ import annotations

import pytest

from scaserver.router.options import (
    SCA_EVENTS,
    is_options_for_us,
    options_response,
    published_event,
    require_supported,
)
from scaserver.router.settings import CoreSettings
from scaserver.sip.errors import BadExtension
from scaserver.sip.message import KNOWN_METHODS, Headers, Request
from scaserver.sip.uri import SipUri, parse_uri

SETTINGS = CoreSettings(
    domains={"example.com"}, server="scaserver-test", supported=frozenset({"path", "outbound"})
)


def request(method: str, *fields: tuple[str, str]) -> Request:
    base = Headers.of(
        ("Via", "SIP/2.0/UDP 198.51.100.7;branch=z9hG4bK1"),
        ("From", "<sip:alice@example.com>;tag=f1"),
        ("To", "<sip:example.com>"),
        ("Call-ID", "c1"),
        ("CSeq", f"1 {method}"),
        *fields,
    )
    return Request(method, "sip:example.com", base, b"")


def test_options_to_the_server_gets_200_with_what_it_supports() -> None:
    response = options_response(request("OPTIONS"), SETTINGS, to_tag="t1")
    assert response.status == 200
    assert response.headers.get("Allow") == ", ".join(KNOWN_METHODS)
    assert response.headers.get("Supported") == "outbound, path"
    assert response.headers.get("Allow-Events") == ", ".join(SCA_EVENTS)
    assert response.headers.get("Server") == "scaserver-test"


def test_an_unsupported_require_is_420_naming_it() -> None:
    with pytest.raises(BadExtension) as raised:
        options_response(request("OPTIONS", ("Require", "path, 100rel")), SETTINGS, to_tag="t1")
    assert raised.value.headers.get("Unsupported") == "100rel"
    require_supported(request("OPTIONS", ("Require", "outbound")), SETTINGS.supported)  # supported: no error


def test_only_options_without_a_user_to_a_local_domain_is_for_the_server() -> None:
    def local(uri: SipUri) -> bool:
        return uri.host == "example.com"

    assert is_options_for_us(parse_uri("sip:example.com"), local)  # type: ignore[arg-type]
    assert not is_options_for_us(parse_uri("sip:alice@example.com"), local)  # type: ignore[arg-type]
    assert not is_options_for_us(parse_uri("sip:elsewhere.example"), local)  # type: ignore[arg-type]


def test_the_489_of_a_publish_names_its_event() -> None:
    assert published_event(request("PUBLISH", ("Event", "presence"))) == "presence"
    assert published_event(request("PUBLISH")) == "no event"
