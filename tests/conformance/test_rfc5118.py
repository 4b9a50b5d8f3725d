"""RFC 5118 IPv6 torture messages at the message-layer level (rfc5118/EXPECTED.md)."""

from __future__ import annotations

import pytest

from scaserver.sip import headers
from scaserver.sip.errors import MalformedMessage, SipError
from scaserver.sip.message import Request
from scaserver.sip.uri import SipUri, parse_uri
from tests.conformance.corpus import corpus_dir, verdict, wire_ready_rfc5118

FILES = [
    "ipv4-mapped-ipv6",
    "ipv6-bad",
    "ipv6-bug-abnf-3-colons",
    "ipv6-correct-abnf-2-colons",
    "ipv6-good",
    "ipv6-in-sdp",
    "mult-ip-in-header",
    "mult-ip-in-sdp",
    "port-ambiguous",
    "port-unambiguous",
    "via-received-param-no-delim",
    "via-received-param-with-delim",
]


def accepted(name: str) -> Request:
    result = verdict(wire_ready_rfc5118((corpus_dir("rfc5118") / name).read_bytes()))
    assert isinstance(result, Request), f"{name}: {result!r}"
    return result


def request_uri(request: Request) -> SipUri:
    uri = parse_uri(request.uri)
    assert isinstance(uri, SipUri)
    return uri


def test_every_corpus_file_has_a_test() -> None:
    on_disk = {
        path.name for path in corpus_dir("rfc5118").iterdir() if path.is_file() and path.suffix != ".md"
    }
    assert on_disk == set(FILES)


def test_ipv6_good() -> None:
    request = accepted("ipv6-good")
    assert request_uri(request).host == "2001:db8::10"
    assert headers.top_via(request).host == "2001:db8::9:1"
    found = headers.contacts(request)
    assert isinstance(found, list)
    assert isinstance(found[0].uri, SipUri)
    assert found[0].uri.host == "2001:db8::1"


def test_ipv6_bad_is_400() -> None:
    result = verdict(wire_ready_rfc5118((corpus_dir("rfc5118") / "ipv6-bad").read_bytes()))
    assert isinstance(result, MalformedMessage)
    assert result.status == 400


def test_port_ambiguous_keeps_the_port_inside_the_address() -> None:
    uri = request_uri(accepted("port-ambiguous"))
    assert (uri.host, uri.port) == ("2001:db8::10:5070", None)


def test_port_unambiguous() -> None:
    uri = request_uri(accepted("port-unambiguous"))
    assert (uri.host, uri.port) == ("2001:db8::10", 5070)


@pytest.mark.parametrize("name", ["via-received-param-with-delim", "via-received-param-no-delim"])
def test_via_received_with_or_without_brackets(name: str) -> None:
    assert headers.top_via(accepted(name)).received == "2001:db8::9:255"


@pytest.mark.parametrize("name", ["ipv6-in-sdp", "mult-ip-in-sdp"])
def test_ipv6_in_sdp_passes_through_unchanged(name: str) -> None:
    raw = wire_ready_rfc5118((corpus_dir("rfc5118") / name).read_bytes())
    request = accepted(name)
    assert request.body == raw.partition(b"\r\n\r\n")[2]
    assert b"IP6 2001:db8::" in request.body


def test_mult_ip_in_header_every_via_parses() -> None:
    vias = headers.vias(accepted("mult-ip-in-header"))
    assert [(via.host, via.port, via.received) for via in vias] == [
        ("2001:db8::9:1", 6050, None),
        ("192.0.2.1", None, None),
        ("2001:db8::9:255", None, "192.0.2.200"),
    ]


def test_ipv4_mapped_ipv6() -> None:
    request = accepted("ipv4-mapped-ipv6")
    assert [via.host for via in headers.vias(request)] == ["::ffff:192.0.2.10", "::ffff:192.0.2.2"]
    found = headers.contacts(request)
    assert isinstance(found, list)
    assert isinstance(found[0].uri, SipUri)
    assert found[0].uri.host == "::ffff:192.0.2.2"


@pytest.mark.parametrize(
    ("name", "host"),
    [
        # RFC 5118 4.10 asks for tolerance of the ABNF quirk: we accept it.
        ("ipv6-bug-abnf-3-colons", "2001:db8:::192.0.2.1"),
        ("ipv6-correct-abnf-2-colons", "2001:db8::192.0.2.1"),
    ],
)
def test_ipv4_suffixed_ipv6(name: str, host: str) -> None:
    request = accepted(name)
    assert request_uri(request).host == host
    to_uri = headers.to_addr(request).uri
    assert isinstance(to_uri, SipUri)
    assert to_uri.host == host


def test_no_file_raises_anything_but_a_sip_error() -> None:
    for name in FILES:
        raw = (corpus_dir("rfc5118") / name).read_bytes()
        assert isinstance(verdict(raw), Request | SipError)
