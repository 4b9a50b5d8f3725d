"""The one-match readings of the usual SIP URI and via-parm give what the general parsers give:
the same value, or the same refusal, for any text either would see."""

from __future__ import annotations

import re

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from scaserver.sip import headers, uri
from scaserver.sip.errors import MalformedMessage
from tests.conformance.corpus import corpus_dir

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


_AUTH_SCHEME = st.sampled_from(
    ["Digest ", "Digest  ", "Digest\t", "digest ", "Basic ", "Di<gest ", "", " Digest "]
)
_AUTH_PARAM = st.one_of(
    st.sampled_from(
        [
            'username="bob"',
            'realm="a, \\"b\\""',
            'nonce=""',
            'uri="sip:a@b;x=y"',
            "algorithm=MD5",
            "nc=00000001",
            "qop=auth",
            'response="0123abcdef"',
            "dXNlcjpwYXNz==",
            "a=b=c",
            "=b",
            "c=",
            'x="unterminated',
            'q="x" y',
            'r="a\\\\b"',
            'r="a\\"',
        ]
    ),
    st.text(alphabet='ab=",\\ \t\x7f\x01é', max_size=8),
)
_AUTH_SEPARATOR = st.sampled_from([", ", ",", " ,", ",,", ",\t", " "])


def _auth_text(scheme: str, params: list[str], separators: list[str], tail: str) -> str:
    text = scheme
    for index, param in enumerate(params):
        text += (separators[index % len(separators)] if index else "") + param
    return text + tail


def _auth_readings(text: str) -> tuple[object, object]:
    fast = _reading(headers.parse_auth, text)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(headers, "_PLAIN_AUTH", NEVER)
        general = _reading(headers.parse_auth, text)
    return fast, general


@settings(max_examples=800)
@given(
    _AUTH_SCHEME,
    st.lists(_AUTH_PARAM, max_size=5),
    st.lists(_AUTH_SEPARATOR, min_size=1, max_size=3),
    st.sampled_from(["", ",", " ", "\t", '"']),
)
@example("Digest ", ["dXNlcjpwYXNz=="], [", "], "")
@example("Digest ", ['nonce=""', "c="], [", "], "")
@example("Digest ", ["a=b=c", "nc=00000001"], [","], "")
@example("NoOneKnowsThisScheme ", ["opaque-data=here"], [", "], "")
@example("Digest ", ['realm="a, \\"b\\""'], [", "], "")
@example("Digest ", ['q="x" y'], [", "], "")
@example("Digest ", ['r="a\\\\b"', "nc=1"], [", "], "")
def test_credentials_read_the_same_in_one_match_and_in_parts(
    scheme: str, params: list[str], separators: list[str], tail: str
) -> None:
    fast, general = _auth_readings(_auth_text(scheme, params, separators, tail))
    assert fast == general


def test_usual_credentials_are_read_in_one_match() -> None:
    text = (
        'Digest username="200005", realm="127.0.0.1", nonce="a1b2", uri="sip:127.0.0.1",'
        ' response="0123abcdef", algorithm=MD5, cnonce="c0", qop=auth, nc=00000001'
    )
    assert headers._PLAIN_AUTH.fullmatch(text) is not None
    fast, general = _auth_readings(text)
    assert fast == general
    assert isinstance(fast, headers.AuthHeader)
    assert fast.param("uri") == "sip:127.0.0.1" and fast.param("nc") == "00000001"


def _corpus_header_values() -> list[str]:
    """Every header value of every RFC 4475 and RFC 5118 torture message, as text."""
    values: list[str] = []
    for name in ("rfc4475", "rfc5118"):
        for path in sorted(corpus_dir(name).iterdir()):
            if not path.is_file() or path.suffix == ".md":
                continue
            for line in path.read_bytes().decode("utf-8", "surrogateescape").splitlines():
                field, colon, value = line.partition(":")
                if colon and field and " " not in field.strip():
                    values.append(value.strip(" \t"))
    return values


def test_corpus_header_values_read_the_same_as_credentials_in_one_match_and_in_parts() -> None:
    values = _corpus_header_values()
    assert "NoOneKnowsThisScheme opaque-data=here" in values  # regaut01.dat, RFC 4475 3.3.7
    for value in values:
        fast, general = _auth_readings(value)
        assert fast == general, value
