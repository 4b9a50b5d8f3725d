"""The one-match readings of the usual SIP URI and via-parm give what the general parsers give:
the same value, or the same refusal, for any text either would see."""

from __future__ import annotations

import re

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from scaserver.sip import headers, uri
from scaserver.sip.errors import MalformedMessage

NEVER: re.Pattern[str] = re.compile(r"(?!)")

_USER = st.text(alphabet="abcXYZ019-_.!~*'()&=+$,%:;?/@ ", max_size=8)
_HOST = st.one_of(
    st.sampled_from(["127.0.0.1", "example.com", "a", "a.b.", "-bad", "x_", "[2001:db8::1]", "h..x", ""]),
    st.text(alphabet="ab09.-_", min_size=1, max_size=8),
)
_PORT = st.one_of(st.just(""), st.text(alphabet="0123456789", min_size=1, max_size=6).map(lambda p: ":" + p))
_PARAMS = st.text(alphabet='abtr=;;.-_%4123[]:/"<> @?\t', max_size=14)


def _reading(parse: object, text: str) -> object:
    assert callable(parse)
    try:
        return parse(text)
    except MalformedMessage as error:
        return ("refused", error.detail)


def _uri_text(scheme: str, user: str, host: str, port: str, params: str) -> str:
    return f"{scheme}:{user + '@' if user else ''}{host}{port}{params}"


@settings(max_examples=500)
@given(st.sampled_from(["sip", "sips", "SIP", "tel"]), _USER, _HOST, _PORT, _PARAMS)
@example("sip", "", "127.0.0.1", ":99999", "")
@example("sip", "200005", "127.0.0.1", ":23004", ";member=a")
@example("sip", "a", "h", "", ";x=a@b")
@example("sip", "", "h", "", ";;")
@example("sip", "", "127.0.0.1", ":70000", ";")
def test_a_sip_uri_reads_the_same_in_one_match_and_in_parts(
    scheme: str, user: str, host: str, port: str, params: str
) -> None:
    text = _uri_text(scheme, user, host, port, params)
    fast = _reading(uri.parse_uri.__wrapped__, text)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(uri, "_PLAIN_SIP", NEVER)
        general = _reading(uri.parse_uri.__wrapped__, text)
    assert fast == general


_VIA_HEAD = st.sampled_from(
    ["SIP/2.0/UDP ", "SIP/2.0/TCP ", "SIP/2.0/TLS ", "sip/2.0/udp ", "SIP / 2.0 / UDP ", "SIP/2.0/UDP  "]
)


@settings(max_examples=500)
@given(_VIA_HEAD, _HOST, _PORT, _PARAMS)
@example("SIP/2.0/UDP ", "127.0.0.1", ":23004", ";branch=z9hG4bK-reg-5")
@example("SIP/2.0/UDP ", "127.0.0.1", ":70000", ";branch=z9hG4bK-reg-5")
@example("SIP/2.0/UDP ", "h", "", ";branch=")
@example("SIP/2.0/UDP ", "h", "", ";branch=z9hG4bKx;rport=99999")
@example("SIP/2.0/UDP ", "h", "", ";ttl=300")
@example("SIP/2.0/UDP ", "127.0.0.1", ":70000", ";")
@example("SIP/2.0/UDP ", "h", "", " ;branch=z9hG4bKx")
def test_a_via_reads_the_same_in_one_match_and_in_parts(head: str, host: str, port: str, params: str) -> None:
    text = f"{head}{host}{port}{params}"
    fast = _reading(headers.parse_via_text.__wrapped__, text)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(headers, "_PLAIN_VIA", NEVER)
        general = _reading(headers.parse_via_text.__wrapped__, text)
    assert fast == general
