"""The client side of Digest (RFC 7616 section 3.4, RFC 2617 section 3.2.2, RFC 8760 section 2.4):
challenges parsed, the topmost answerable offer chosen, credentials the server side accepts."""

from __future__ import annotations

import hashlib
import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from scaserver.sip.digest import (
    Algorithm,
    Authenticated,
    Authenticator,
    Credentials,
    NonceFactory,
    Rejected,
    compute_ha1,
)
from scaserver.sip.digestclient import (
    Challenge,
    ClientCredentials,
    authorization,
    authorize,
    parse_challenges,
    select_challenge,
)
from scaserver.sip.headers import parse_auth
from scaserver.sip.message import Headers, Request, Response

REALM = "example.com"
NOW = 1_000_000.0
PASSWORDS = {"alice": "wonderland", "bob": "builder"}


def lookup(username: str, realm: str) -> Credentials | None:
    password = PASSWORDS.get(username)
    return (
        None if password is None or realm != REALM else Credentials.from_password(username, realm, password)
    )


def authenticator(*algorithms: Algorithm) -> Authenticator:
    draws = itertools.count(1)
    return Authenticator(
        lookup,
        NonceFactory(b"k" * 32, lambda size: next(draws).to_bytes(size, "big"), ttl=300.0),
        REALM,
        domains=frozenset({REALM}),
        algorithms=algorithms or (Algorithm.SHA_256, Algorithm.MD5),
    )


def request(method: str = "REGISTER", user: str = "alice", uri: str = "sip:example.com") -> Request:
    return Request(
        method,
        uri,
        Headers.of(
            ("Via", "SIP/2.0/UDP 192.0.2.9:5060;branch=z9hG4bK1"),
            ("From", f"<sip:{user}@{REALM}>;tag=1"),
            ("To", f"<sip:{user}@{REALM}>"),
            ("Call-ID", "c1"),
            ("CSeq", f"1 {method}"),
        ),
    )


def challenged(auth: Authenticator, sent: Request, now: float = NOW) -> Response:
    decision = auth.authenticate(sent, now)
    assert isinstance(decision, Rejected)
    return decision.response(sent)


def answered(sent: Request, response: Response, user: str = "alice", *, nc: int = 1) -> Request:
    chosen = select_challenge(
        parse_challenges(response),
        lambda realm: ClientCredentials.from_password(user, realm, PASSWORDS[user]),
    )
    assert chosen is not None
    return authorize(sent, *chosen, nc=nc, cnonce="0a4f113b")


def params(line: str) -> dict[str, str]:
    return dict(parse_auth(line).params)


def www(*lines: str, status: int = 401) -> Response:
    name = "WWW-Authenticate" if status == 401 else "Proxy-Authenticate"
    return Response(status, "Unauthorized", Headers.of(*((name, line) for line in lines)))


# RFC vectors ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("algorithm", "expected"),
    [
        (Algorithm.MD5, "8ca523f5e9506fed4657c9700eebdbec"),
        (Algorithm.SHA_256, "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"),
    ],
)
def test_rfc7616_section_3_9_1_authorization(algorithm: Algorithm, expected: str) -> None:
    opaque = "FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS"
    (challenge,) = parse_challenges(
        www(
            f'Digest realm="http-auth@example.org", qop="auth, auth-int", algorithm={algorithm.value}, '
            f'nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v", opaque="{opaque}"'
        )
    )
    secret = ClientCredentials.from_password("Mufasa", "http-auth@example.org", "Circle of Life")
    line = authorization(
        challenge,
        secret,
        method="GET",
        uri="/dir/index.html",
        nc=1,
        cnonce="f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ",
    )
    assert params(line) == {
        "username": "Mufasa",
        "realm": "http-auth@example.org",
        "nonce": "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v",
        "uri": "/dir/index.html",
        "response": expected,
        "algorithm": algorithm.value,
        "qop": "auth",
        "nc": "00000001",
        "cnonce": "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ",
        "opaque": opaque,
    }
    assert line.startswith("Digest username=") and "qop=auth, nc=00000001" in line


def test_rfc2617_section_3_5_example() -> None:
    (challenge,) = parse_challenges(
        www(
            'Digest realm="testrealm@host.com", qop="auth,auth-int", '
            'nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", opaque="5ccc069c403ebaf9f0171e9517f40e41"'
        )
    )
    assert challenge.algorithm is Algorithm.MD5  # absent means MD5
    secret = ClientCredentials.from_password("Mufasa", "testrealm@host.com", "Circle Of Life")
    line = authorization(challenge, secret, method="GET", uri="/dir/index.html", nc=1, cnonce="0a4f113b")
    assert params(line)["response"] == "6629fae49393a05397450978507c4ef1"


def test_without_qop_the_rfc2069_form_is_sent() -> None:
    (challenge,) = parse_challenges(www('Digest realm="example.com", nonce="n1", algorithm=MD5'))
    assert not challenge.qop_auth
    secret = ClientCredentials.from_password("alice", REALM, "wonderland")
    line = authorization(challenge, secret, method="REGISTER", uri="sip:example.com", nc=1, cnonce="x")
    found = params(line)

    def md5(text: str) -> str:
        return hashlib.md5(text.encode()).hexdigest()

    ha1 = md5("alice:example.com:wonderland")
    assert found["response"] == md5(f"{ha1}:n1:{md5('REGISTER:sip:example.com')}")
    assert not {"qop", "nc", "cnonce", "opaque"} & set(found)


# Against the server side ----------------------------------------------------------------------


@pytest.mark.parametrize("algorithm", list(Algorithm))
def test_each_algorithm_is_accepted_by_the_verifier(algorithm: Algorithm) -> None:
    auth = authenticator(algorithm)
    sent = request()
    retry = answered(sent, challenged(auth, sent))
    (line,) = retry.headers.lines("Authorization")
    assert params(line)["algorithm"] == algorithm.value and params(line)["uri"] == "sip:example.com"
    assert auth.authenticate(retry, NOW + 1) == Authenticated("alice", REALM, algorithm)


def test_proxy_challenge_is_answered_in_proxy_authorization() -> None:
    auth = authenticator()
    invite = request("INVITE", uri="sip:bob@example.com")
    response = challenged(auth, invite)
    assert response.status == 407
    retry = answered(invite, response)
    assert retry.headers.lines("Authorization") == ()
    assert isinstance(auth.authenticate(retry, NOW + 1), Authenticated)


def test_nonce_count_increases_on_one_nonce_and_a_replay_is_stale() -> None:
    auth = authenticator()
    sent = request()
    response = challenged(auth, sent)
    assert isinstance(auth.authenticate(answered(sent, response, nc=1), NOW + 1), Authenticated)
    assert isinstance(auth.authenticate(answered(sent, response, nc=2), NOW + 2), Authenticated)
    replay = auth.authenticate(answered(sent, response, nc=2), NOW + 3)
    assert isinstance(replay, Rejected) and replay.stale


def test_stale_challenge_is_answered_with_the_new_nonce() -> None:
    auth = authenticator()
    sent = request()
    first = challenged(auth, sent)
    late = auth.authenticate(answered(sent, first), NOW + 301)
    assert isinstance(late, Rejected) and late.stale
    stale_response = late.response(sent)
    offers = parse_challenges(stale_response)
    assert offers and all(offer.stale for offer in offers)
    assert offers[0].nonce != parse_challenges(first)[0].nonce
    retry = answered(sent, stale_response)
    assert isinstance(auth.authenticate(retry, NOW + 302), Authenticated)


def test_wrong_password_is_rechallenged_without_stale() -> None:
    auth = authenticator()
    sent = request()
    (offer, *_) = parse_challenges(challenged(auth, sent))
    wrong = authorize(sent, offer, ClientCredentials.from_password("alice", REALM, "guess"), nc=1, cnonce="c")
    result = auth.authenticate(wrong, NOW + 1)
    assert isinstance(result, Rejected) and result.status == 401 and not result.stale


@given(
    username=st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), min_size=1, max_size=20),
    password=st.text(min_size=0, max_size=20),
    algorithm=st.sampled_from(list(Algorithm)),
)
def test_any_username_and_password_round_trip(username: str, password: str, algorithm: Algorithm) -> None:
    stored = Credentials.from_password(username, REALM, password)
    auth = Authenticator(
        lambda user, realm: stored if (user, realm) == (username, REALM) else None,
        NonceFactory(b"k" * 32, lambda size: b"\x01" * size),
        REALM,
        algorithms=(algorithm,),
        may_act_as=lambda *_: True,
    )
    sent = request()
    chosen = select_challenge(
        parse_challenges(challenged(auth, sent)),
        lambda realm: ClientCredentials.from_password(username, realm, password),
    )
    assert chosen is not None
    retry = authorize(sent, *chosen, nc=1, cnonce="c")
    assert auth.authenticate(retry, NOW) == Authenticated(username, REALM, algorithm)


# Parsing and choosing ---------------------------------------------------------------------------


def test_unanswerable_challenges_are_left_out() -> None:
    response = www(
        'Basic realm="example.com"',
        'Digest realm="example.com", nonce="a", algorithm=MD5-sess, qop="auth"',
        'Digest realm="example.com", nonce="b", qop="auth-int"',
        'Digest realm="example.com", qop="auth"',
        'Digest nonce="c"',
        'Digest realm="", nonce="d"',
        "Digest realm=",
        'Digest realm="example.com", nonce="e", algorithm=SHA-512-256, qop="auth-int, auth", stale=TRUE',
    )
    assert parse_challenges(response) == (
        Challenge(False, "example.com", "e", Algorithm.SHA_512_256, True, None, True),
    )


def test_other_statuses_carry_no_challenge() -> None:
    assert (
        parse_challenges(Response(200, "OK", Headers.of(("WWW-Authenticate", 'Digest realm="r", nonce="n"'))))
        == ()
    )
    (proxy,) = parse_challenges(www('Digest realm="r", nonce="n", stale=false', status=407))
    assert proxy.proxy and not proxy.stale and proxy.answer_header == "Proxy-Authorization"


def test_topmost_offer_with_an_ha1_is_chosen() -> None:
    offers = parse_challenges(
        www(
            'Digest realm="example.com", nonce="n", algorithm=SHA-512-256, qop="auth"',
            'Digest realm="example.com", nonce="n", algorithm=SHA-256, qop="auth"',
            'Digest realm="example.com", nonce="n", algorithm=MD5, qop="auth"',
        )
    )
    full = ClientCredentials.from_password("alice", REALM, "wonderland")
    chosen = select_challenge(offers, lambda realm: full)
    assert chosen is not None and chosen[0].algorithm is Algorithm.SHA_512_256
    md5_only = ClientCredentials.with_ha1("alice", REALM, Algorithm.MD5, full.ha1_md5 or "")
    chosen = select_challenge(offers, lambda realm: md5_only)
    assert chosen is not None and chosen[0].algorithm is Algorithm.MD5
    assert select_challenge(offers, lambda realm: None) is None
    assert select_challenge((), lambda realm: full) is None


def test_credentials_are_asked_for_the_offered_realm() -> None:
    offers = parse_challenges(
        www('Digest realm="other.example", nonce="n1"', 'Digest realm="example.com", nonce="n2"')
    )
    secret = ClientCredentials.from_password("alice", REALM, "wonderland")
    asked: list[str] = []

    def only_ours(realm: str) -> ClientCredentials | None:
        asked.append(realm)
        return secret if realm == REALM else None

    chosen = select_challenge(offers, only_ours)
    assert chosen is not None and chosen[0].nonce == "n2" and asked == ["other.example", "example.com"]


def test_authorize_replaces_credentials_of_the_same_realm_only() -> None:
    sent = request().with_headers(
        request()
        .headers.add("Authorization", 'Digest username="alice", realm="example.com", nonce="old"')
        .add("Authorization", 'Digest username="a", realm="elsewhere", nonce="x"')
        .add("Authorization", "Digest ,,")
    )
    (offer,) = parse_challenges(www('Digest realm="example.com", nonce="new", qop="auth"'))
    secret = ClientCredentials.from_password("alice", REALM, "wonderland")
    lines = authorize(sent, offer, secret, nc=3, cnonce="c").headers.lines("Authorization")
    assert [parse_auth(line).param("nonce") if "nonce" in line else None for line in lines] == [
        "x",
        None,
        "new",
    ]
    assert params(lines[-1])["nc"] == "00000003"


def test_missing_ha1_or_bad_nonce_count_is_a_bug() -> None:
    (offer,) = parse_challenges(www('Digest realm="example.com", nonce="n", algorithm=SHA-256, qop="auth"'))
    md5_only = ClientCredentials.with_ha1("alice", REALM, Algorithm.MD5, "0" * 32)
    with pytest.raises(ValueError, match="SHA-256"):
        authorization(offer, md5_only, method="REGISTER", uri="sip:x", nc=1, cnonce="c")
    full = ClientCredentials.from_password("alice", REALM, "wonderland")
    for nc in (0, 2**32):
        with pytest.raises(ValueError, match="nonce count"):
            authorization(offer, full, method="REGISTER", uri="sip:x", nc=nc, cnonce="c")


def test_client_credentials_hide_their_ha1() -> None:
    stored = Credentials.from_password("alice", REALM, "wonderland")
    secret = ClientCredentials.of(stored)
    assert secret.ha1(Algorithm.SHA_256) == stored.ha1_sha256
    assert secret.ha1(Algorithm.SHA_512_256) == stored.ha1_sha512_256
    assert stored.ha1_md5 not in repr(secret) and "wonderland" not in repr(secret)
    upper = ClientCredentials.with_ha1("alice", REALM, Algorithm.SHA_512_256, "AB" * 32)
    assert (upper.ha1(Algorithm.SHA_512_256), upper.ha1(Algorithm.MD5)) == ("ab" * 32, None)
    assert compute_ha1(Algorithm.MD5, "alice", REALM, "wonderland") == secret.ha1(Algorithm.MD5)
