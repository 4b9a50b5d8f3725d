"""Digest authentication (RFC 7616, RFC 8760, RFC 3261 section 22): vectors and decisions."""

from __future__ import annotations

import base64
import hashlib
import hmac
import itertools
import re
from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from scaserver.sip.digest import (
    FAILURES,
    Algorithm,
    Authenticated,
    Authenticator,
    Credentials,
    NonceCounts,
    NonceFactory,
    NonceStatus,
    RejectCause,
    Rejected,
    compute_ha1,
    compute_response,
)
from scaserver.sip.domains import DomainPolicy
from scaserver.sip.headers import parse_auth
from scaserver.sip.message import Headers, Request

# RFC 7616 section 3.9.1 (erratum 4495: the password is "Circle of Life", lower-case "of").
RFC_USER = "Mufasa"
RFC_PASSWORD = "Circle of Life"
RFC_REALM = "http-auth@example.org"
RFC_NONCE = "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v"
RFC_CNONCE = "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ"
RFC_URI = "/dir/index.html"

SECRET = b"k" * 32
REALM = "example.com"
NOW = 1_000_000.0


def counter_entropy() -> Callable[[int], bytes]:
    counter = itertools.count(1)
    return lambda size: next(counter).to_bytes(size, "big")


def fixed_entropy(size: int) -> bytes:
    return b"\x07" * size


USERS = {
    ("alice", REALM): Credentials.from_password("alice", REALM, "wonderland"),
    ("bob", REALM): Credentials.from_password("bob", REALM, "builder"),
}


def lookup(username: str, realm: str) -> Credentials | None:
    return USERS.get((username, realm))


def authenticator(
    entropy: Callable[[int], bytes] | None = None,
    *,
    algorithms: tuple[Algorithm, ...] = (Algorithm.SHA_256, Algorithm.MD5),
    capacity: int = 65536,
) -> Authenticator:
    nonces = NonceFactory(SECRET, entropy or counter_entropy(), ttl=300.0)
    return Authenticator(
        lookup,
        nonces,
        default_realm="default.example",
        domains=frozenset({REALM, "other.example"}),
        algorithms=algorithms,
        counts=NonceCounts(capacity=capacity),
    )


def request(
    method: str = "REGISTER",
    *,
    user: str = "alice",
    host: str = REALM,
    uri: str = "sip:example.com",
    auth: tuple[tuple[str, str], ...] = (),
) -> Request:
    headers = Headers.of(
        ("Via", "SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK1"),
        ("From", f"<sip:{user}@{host}>;tag=1"),
        ("To", f"<sip:{user}@{host}>"),
        ("Call-ID", "c1"),
        ("CSeq", f"1 {method}"),
        *auth,
    )
    return Request(method, uri, headers)


def challenge_params(rejected: Rejected, index: int = 0) -> dict[str, str]:
    return dict(parse_auth(rejected.headers.fields[index][1]).params)


def credentials_line(
    challenge: Rejected,
    *,
    username: str = "alice",
    password: str = "wonderland",
    method: str = "REGISTER",
    uri: str = "sip:example.com",
    nc: str = "00000001",
    index: int = 0,
    realm: str | None = None,
) -> str:
    params = challenge_params(challenge, index)
    algorithm = Algorithm.from_token(params["algorithm"])
    assert algorithm is not None
    realm = realm if realm is not None else params["realm"]
    response = compute_response(
        algorithm,
        compute_ha1(algorithm, username, realm, password),
        nonce=params["nonce"],
        nc=nc,
        cnonce="abc",
        qop="auth",
        method=method,
        uri=uri,
    )
    return (
        f'Digest username="{username}", realm="{realm}", nonce="{params["nonce"]}", uri="{uri}", '
        f'response="{response}", algorithm={algorithm.value}, qop=auth, nc={nc}, cnonce="abc"'
    )


def answer(
    auth: Authenticator,
    challenge: Rejected,
    *,
    method: str = "REGISTER",
    now: float = NOW,
    index: int = 0,
    **kw: str,
) -> Rejected | Authenticated:
    header = "Authorization" if challenge.status == 401 else "Proxy-Authorization"
    line = credentials_line(challenge, method=method, index=index, **kw)
    return auth.authenticate(request(method, auth=((header, line),)), now)


# RFC vectors ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("algorithm", "expected"),
    [
        (Algorithm.MD5, "8ca523f5e9506fed4657c9700eebdbec"),
        (Algorithm.SHA_256, "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"),
    ],
)
def test_rfc7616_section_3_9_1_response(algorithm: Algorithm, expected: str) -> None:
    ha1 = compute_ha1(algorithm, RFC_USER, RFC_REALM, RFC_PASSWORD)
    response = compute_response(
        algorithm,
        ha1,
        nonce=RFC_NONCE,
        nc="00000001",
        cnonce=RFC_CNONCE,
        qop="auth",
        method="GET",
        uri=RFC_URI,
    )
    assert response == expected


def test_credentials_from_password_hold_the_ha1_of_each_algorithm() -> None:
    credentials = Credentials.from_password(RFC_USER, RFC_REALM, RFC_PASSWORD)
    assert credentials.ha1_md5 == compute_ha1(Algorithm.MD5, RFC_USER, RFC_REALM, RFC_PASSWORD)
    assert credentials.ha1(Algorithm.SHA_256) == compute_ha1(
        Algorithm.SHA_256, RFC_USER, RFC_REALM, RFC_PASSWORD
    )
    assert credentials.ha1(Algorithm.SHA_512_256) == Algorithm.SHA_512_256.hash(
        f"{RFC_USER}:{RFC_REALM}:{RFC_PASSWORD}"
    )
    assert "Circle" not in repr(credentials) and credentials.ha1_md5 not in repr(credentials)


def test_algorithm_tokens() -> None:
    assert Algorithm.from_token(None) is Algorithm.MD5
    assert Algorithm.from_token("sha-256") is Algorithm.SHA_256
    assert Algorithm.from_token("SHA-512-256") is Algorithm.SHA_512_256
    assert Algorithm.from_token("MD5-sess") is None


# Challenges ------------------------------------------------------------------------------------


def test_register_challenge_is_401_with_sha256_first_then_md5_each_with_its_own_nonce() -> None:
    rejected = authenticator(fixed_entropy).challenge(request(), NOW)
    sha256 = NonceFactory(SECRET, fixed_entropy).issue(REALM, NOW, "SHA-256")
    md5 = NonceFactory(SECRET, fixed_entropy).issue(REALM, NOW, "MD5")
    assert sha256 != md5
    assert rejected == Rejected(
        401,
        "Unauthorized",
        Headers.of(
            ("WWW-Authenticate", f'Digest realm="{REALM}", nonce="{sha256}", algorithm=SHA-256, qop="auth"'),
            ("WWW-Authenticate", f'Digest realm="{REALM}", nonce="{md5}", algorithm=MD5, qop="auth"'),
        ),
    )


def test_invite_challenge_is_407_proxy_authenticate() -> None:
    rejected = authenticator().authenticate(request("INVITE"), NOW)
    assert isinstance(rejected, Rejected)
    assert (rejected.status, rejected.reason) == (407, "Proxy Authentication Required")
    assert [name for name, _ in rejected.headers] == ["Proxy-Authenticate", "Proxy-Authenticate"]


def test_subscribe_is_challenged_with_401() -> None:
    rejected = authenticator().authenticate(request("SUBSCRIBE"), NOW)
    assert isinstance(rejected, Rejected) and rejected.status == 401


def test_realm_is_identity_host_when_local_else_default() -> None:
    auth = authenticator()
    assert auth.realm_for(request(host="OTHER.example")) == "other.example"
    assert auth.realm_for(request(host="192.0.2.9")) == "default.example"
    assert auth.realm_for(request("INVITE", host="example.com")) == REALM


def test_rejected_response_copies_request_headers_and_adds_challenge() -> None:
    req = request()
    rejected = authenticator().challenge(req, NOW)
    response = rejected.response(req, to_tag="t1")
    assert response.status == 401
    assert response.headers.get("To") == "<sip:alice@example.com>;tag=t1"
    assert response.headers.lines("WWW-Authenticate") == rejected.headers.lines("WWW-Authenticate")


# Successful authentication --------------------------------------------------------------------


def test_a_reloaded_directory_changes_the_credentials_and_the_domains_at_the_next_request() -> None:
    auth = authenticator()
    challenge = auth.challenge(request(), NOW)
    auth.use_directory(lambda username, realm: None, DomainPolicy(configured=frozenset({REALM})))
    refused = answer(auth, challenge)
    assert isinstance(refused, Rejected)
    assert refused.cause is RejectCause.UNKNOWN_USER
    assert auth.realm_for(request(host=REALM)) == REALM
    assert auth.realm_for(request(host="other.example")) == "default.example"


@pytest.mark.parametrize("index", [0, 1])
def test_register_answer_to_each_challenge_authenticates(index: int) -> None:
    auth = authenticator()
    challenge = auth.challenge(request(), NOW)
    result = answer(auth, challenge, index=index)
    algorithm = (Algorithm.SHA_256, Algorithm.MD5)[index]
    assert result == Authenticated("alice", REALM, algorithm)


def test_invite_with_proxy_authorization_authenticates() -> None:
    auth = authenticator()
    challenge = auth.authenticate(request("INVITE"), NOW)
    assert isinstance(challenge, Rejected)
    assert answer(auth, challenge, method="INVITE") == Authenticated("alice", REALM, Algorithm.SHA_256)


def test_invite_credentials_in_authorization_instead_of_proxy_authorization_are_ignored() -> None:
    auth = authenticator()
    challenge = auth.challenge(request("INVITE"), NOW)
    line = credentials_line(challenge, method="INVITE")
    result = auth.authenticate(request("INVITE", auth=(("Authorization", line),)), NOW)
    assert isinstance(result, Rejected) and result.status == 407


def test_sha512_256_accepted_when_offered() -> None:
    auth = authenticator(algorithms=(Algorithm.SHA_512_256, Algorithm.SHA_256))
    challenge = auth.challenge(request(), NOW)
    assert challenge_params(challenge)["algorithm"] == "SHA-512-256"
    assert answer(auth, challenge) == Authenticated("alice", REALM, Algorithm.SHA_512_256)


def test_missing_ha1_for_algorithm_fails_like_a_wrong_password() -> None:
    stored = Credentials.from_password("alice", REALM, "wonderland")
    partial = Credentials("alice", REALM, stored.ha1_md5, stored.ha1_sha256)
    auth = Authenticator(
        lambda u, r: partial,
        NonceFactory(SECRET, counter_entropy()),
        default_realm=REALM,
        domains=frozenset({REALM}),
        algorithms=(Algorithm.SHA_512_256,),
    )
    result = answer(auth, auth.challenge(request(), NOW))
    assert isinstance(result, Rejected) and (result.status, result.stale) == (401, False)


def test_nonce_count_may_increase_on_one_nonce() -> None:
    auth = authenticator()
    challenge = auth.challenge(request(), NOW)
    assert isinstance(answer(auth, challenge, nc="00000001"), Authenticated)
    assert isinstance(answer(auth, challenge, nc="00000002", now=NOW + 10), Authenticated)
    assert isinstance(answer(auth, challenge, nc="0000000a", now=NOW + 20), Authenticated)


# Failures ----------------------------------------------------------------------------------------


def test_stale_nonce_with_valid_digest_gets_stale_true() -> None:
    auth = authenticator()
    challenge = auth.challenge(request(), NOW)
    result = answer(auth, challenge, now=NOW + 301)
    assert isinstance(result, Rejected)
    assert (result.status, result.stale) == (401, True)
    assert all(value.endswith(", stale=true") for _, value in result.headers)
    assert challenge_params(result)["nonce"] != challenge_params(challenge)["nonce"]


def test_stale_nonce_with_wrong_password_is_not_stale() -> None:
    auth = authenticator()
    challenge = auth.challenge(request(), NOW)
    result = answer(auth, challenge, now=NOW + 301, password="guess")
    assert isinstance(result, Rejected) and (result.status, result.stale) == (401, False)


def test_nonce_still_valid_at_its_ttl() -> None:
    auth = authenticator()
    challenge = auth.challenge(request(), NOW)
    assert isinstance(answer(auth, challenge, now=NOW + 300), Authenticated)


@pytest.mark.parametrize("second_nc", ["00000001", "00000000"])
def test_replayed_or_lower_nonce_count_is_refused_as_stale(second_nc: str) -> None:
    auth = authenticator()
    challenge = auth.challenge(request(), NOW)
    assert isinstance(answer(auth, challenge, nc="00000001"), Authenticated)
    replay = answer(auth, challenge, nc=second_nc, now=NOW + 1)
    assert isinstance(replay, Rejected) and (replay.status, replay.stale) == (401, True)


def test_realm_mismatch_gets_fresh_challenge() -> None:
    auth = authenticator()
    challenge = auth.challenge(request(), NOW)
    result = answer(auth, challenge, realm="other.example")
    assert isinstance(result, Rejected)
    assert (result.status, result.stale) == (401, False)
    assert challenge_params(result)["realm"] == REALM


def test_unknown_user_and_wrong_password_get_identical_replies() -> None:
    first, second = authenticator(fixed_entropy), authenticator(fixed_entropy)
    unknown = answer(first, first.challenge(request(), NOW), username="mallory", password="x")
    wrong = answer(second, second.challenge(request(), NOW), password="not-wonderland")
    assert isinstance(unknown, Rejected) and isinstance(wrong, Rejected)
    assert (unknown.status, unknown.reason, unknown.headers, unknown.stale) == (
        wrong.status,
        wrong.reason,
        wrong.headers,
        wrong.stale,
    )
    req = request()
    assert unknown.response(req) == wrong.response(req)


def test_unknown_user_and_wrong_password_differ_only_in_nonce() -> None:
    auth = authenticator()
    unknown = answer(auth, auth.challenge(request(), NOW), username="mallory")
    wrong = answer(auth, auth.challenge(request(), NOW), password="nope")
    assert isinstance(unknown, Rejected) and isinstance(wrong, Rejected)

    def without_nonces(rejected: Rejected) -> list[str]:
        return [re.sub(r'nonce="[^"]*"', 'nonce="N"', value) for _, value in rejected.headers]

    assert without_nonces(unknown) == without_nonces(wrong)


def test_tampered_nonce_gets_fresh_challenge() -> None:
    auth = authenticator()
    challenge = auth.challenge(request(), NOW)
    nonce = challenge_params(challenge)["nonce"]
    forged = nonce[:-2] + ("AA" if nonce[-2:] != "AA" else "BB")
    line = credentials_line(challenge).replace(nonce, forged)
    result = auth.authenticate(request(auth=(("Authorization", line),)), NOW)
    assert isinstance(result, Rejected) and (result.status, result.stale) == (401, False)


def test_no_qop_rfc2069_client_is_rechallenged() -> None:
    auth = authenticator()
    challenge = auth.challenge(request(), NOW)
    params = challenge_params(challenge)
    ha1 = compute_ha1(Algorithm.SHA_256, "alice", REALM, "wonderland")
    ha2 = Algorithm.SHA_256.hash("REGISTER:sip:example.com")
    response = Algorithm.SHA_256.hash(f"{ha1}:{params['nonce']}:{ha2}")
    line = (
        f'Digest username="alice", realm="{REALM}", nonce="{params["nonce"]}", uri="sip:example.com", '
        f'response="{response}", algorithm=SHA-256'
    )
    result = auth.authenticate(request(auth=(("Authorization", line),)), NOW)
    assert isinstance(result, Rejected) and result.status == 401


@pytest.mark.parametrize(
    ("old", "new"), [("qop=auth,", "qop=auth-int,"), ("algorithm=SHA-256", "algorithm=MD5-sess")]
)
def test_unsupported_qop_or_algorithm_is_rechallenged(old: str, new: str) -> None:
    auth = authenticator()
    line = credentials_line(auth.challenge(request(), NOW)).replace(old, new)
    result = auth.authenticate(request(auth=(("Authorization", line),)), NOW)
    assert isinstance(result, Rejected) and result.status == 401


def test_algorithm_not_offered_is_rechallenged() -> None:
    auth = authenticator(algorithms=(Algorithm.SHA_256,))
    other = authenticator(algorithms=(Algorithm.MD5,))
    line = credentials_line(other.challenge(request(), NOW))
    result = auth.authenticate(request(auth=(("Authorization", line),)), NOW)
    assert isinstance(result, Rejected) and result.status == 401


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ('response="', 'responsx="'),
        ("nc=00000001", "nc=1"),
        ('cnonce="abc"', 'cnonce=""'),
        ('uri="sip:example.com"', 'uri="sip:elsewhere.example"'),
    ],
)
def test_malformed_credentials_get_400(old: str, new: str) -> None:
    auth = authenticator()
    line = credentials_line(auth.challenge(request(), NOW)).replace(old, new)
    assert auth.authenticate(request(auth=(("Authorization", line),)), NOW) == Rejected(
        400, "Bad Request", cause=RejectCause.MALFORMED, username="alice", realm=REALM
    )


def test_digest_uri_equal_to_request_uri_after_parsing_is_accepted() -> None:
    auth = authenticator()
    challenge = auth.challenge(request(), NOW)
    line = credentials_line(challenge, uri="sip:EXAMPLE.com")
    result = auth.authenticate(request(uri="sip:example.com", auth=(("Authorization", line),)), NOW)
    assert isinstance(result, Authenticated)


@pytest.mark.parametrize(
    "header", ["NoOneKnowsThisScheme opaque-data=here", "Digest", 'Digest realm="unterminated']
)
def test_unusable_authorization_header_is_never_authenticated(header: str) -> None:
    """RFC 4475 section 3.3.7 (regaut01): an unknown scheme gets a fresh Digest challenge."""
    result = authenticator().authenticate(request(auth=(("Authorization", header),)), NOW)
    assert isinstance(result, Rejected) and result.status == 401
    assert all(value.startswith("Digest ") for _, value in result.headers)


def test_credentials_chosen_by_realm_among_several_headers() -> None:
    auth = authenticator()
    challenge = auth.challenge(request(), NOW)
    foreign = credentials_line(challenge, realm="third.example")
    good = credentials_line(challenge)
    req = request(auth=(("Authorization", foreign), ("Authorization", good)))
    assert isinstance(auth.authenticate(req, NOW), Authenticated)


# Identity -----------------------------------------------------------------------------------------


def test_register_for_another_users_aor_is_403() -> None:
    auth = authenticator()
    challenge = auth.challenge(request(user="bob"), NOW)
    line = credentials_line(challenge)  # alice's credentials
    assert auth.authenticate(request(user="bob", auth=(("Authorization", line),)), NOW) == Rejected(
        403, "Forbidden", cause=RejectCause.FORBIDDEN, username="alice", realm=REALM
    )


def test_invite_from_another_user_is_403() -> None:
    auth = authenticator()
    challenge = auth.challenge(request("INVITE", user="bob"), NOW)
    line = credentials_line(challenge, method="INVITE")
    result = auth.authenticate(request("INVITE", user="bob", auth=(("Proxy-Authorization", line),)), NOW)
    assert result == Rejected(403, "Forbidden", cause=RejectCause.FORBIDDEN, username="alice", realm=REALM)


def test_bye_identity_is_not_checked() -> None:
    auth = authenticator()
    challenge = auth.challenge(request("BYE", user="bob"), NOW)
    line = credentials_line(challenge, method="BYE")
    result = auth.authenticate(request("BYE", user="bob", auth=(("Proxy-Authorization", line),)), NOW)
    assert result == Authenticated("alice", REALM, Algorithm.SHA_256)


def test_may_act_as_policy_allows_separate_auth_user() -> None:
    auth = authenticator()
    auth.may_act_as = lambda username, realm, user: (username, user) == ("alice", "2001")
    challenge = auth.challenge(request(user="2001"), NOW)
    line = credentials_line(challenge)
    result = auth.authenticate(request(user="2001", auth=(("Authorization", line),)), NOW)
    assert result == Authenticated("alice", REALM, Algorithm.SHA_256)


def test_identity_not_a_sip_uri_is_403() -> None:
    auth = authenticator()
    headers = request().headers.set("To", "<tel:+15551234>")
    challenge = auth.challenge(Request("REGISTER", "sip:example.com", headers), NOW)
    assert challenge_params(challenge)["realm"] == "default.example"
    line = credentials_line(challenge)
    tel = Request("REGISTER", "sip:example.com", headers.add("Authorization", line))
    USERS[("alice", "default.example")] = Credentials.from_password("alice", "default.example", "wonderland")
    try:
        refused = Rejected(
            403, "Forbidden", cause=RejectCause.FORBIDDEN, username="alice", realm="default.example"
        )
        assert auth.authenticate(tel, NOW) == refused
    finally:
        del USERS[("alice", "default.example")]


# Nonces -----------------------------------------------------------------------------------------


def test_nonce_checks() -> None:
    factory = NonceFactory(SECRET, counter_entropy(), ttl=60.0)
    nonce = factory.issue(REALM, NOW)
    assert factory.check(nonce, REALM, NOW + 60).status is NonceStatus.VALID
    assert factory.check(nonce, REALM, NOW + 60.5).status is NonceStatus.EXPIRED
    assert factory.check(nonce, "other.example", NOW).status is NonceStatus.INVALID
    assert factory.check(nonce, REALM, NOW - 10).status is NonceStatus.INVALID  # issued in the future
    assert factory.check("not base64 !", REALM, NOW).status is NonceStatus.INVALID
    assert (
        factory.check(base64.urlsafe_b64encode(b"short").decode(), REALM, NOW).status is NonceStatus.INVALID
    )
    assert (
        NonceFactory(b"other secret", counter_entropy()).check(nonce, REALM, NOW).status
        is NonceStatus.INVALID
    )


def test_nonces_differ_per_issue() -> None:
    factory = NonceFactory(SECRET, counter_entropy())
    assert factory.issue(REALM, NOW) != factory.issue(REALM, NOW)


def test_short_entropy_is_a_bug() -> None:
    with pytest.raises(ValueError, match="entropy"):
        NonceFactory(SECRET, lambda size: b"x").issue(REALM, NOW)


def test_nonce_counts_evict_oldest_and_refuse_evicted_nonces() -> None:
    counts = NonceCounts(capacity=2)
    assert counts.accept("a", 100, 1)
    assert counts.accept("b", 200, 1)
    assert counts.accept("c", 300, 1)  # evicts "a"
    assert len(counts) == 2
    assert counts.watermark_ms == 100
    assert not counts.accept("a", 100, 2)  # evicted: never reopened to replay
    assert not counts.accept("z", 50, 1)  # issued before the watermark, not tracked
    assert counts.accept("b", 200, 2)
    assert not counts.accept("b", 200, 2)


def test_nonce_counts_prune_expired() -> None:
    counts = NonceCounts()
    counts.accept("old", 1_000, 1)
    counts.accept("new", 100_000, 1)
    counts.prune(now=150.0, ttl=60.0)
    assert len(counts) == 1
    assert not counts.accept("new", 100_000, 1)


def test_authenticator_with_tiny_table_refuses_evicted_nonce_as_stale() -> None:
    auth = authenticator(capacity=1)
    first = auth.challenge(request(), NOW)
    second = auth.challenge(request(), NOW + 1)
    assert isinstance(answer(auth, first), Authenticated)
    assert isinstance(answer(auth, second, now=NOW + 2), Authenticated)  # evicts the first nonce
    replay = answer(auth, first, nc="00000002", now=NOW + 3)
    assert isinstance(replay, Rejected) and replay.stale


def test_nonce_counts_prune_stops_at_first_live_entry() -> None:
    counts = NonceCounts()
    counts.accept("live", 100_000, 1)
    counts.accept("old", 1_000, 1)  # used after "live": behind it in the table
    counts.prune(now=150.0, ttl=60.0)
    assert len(counts) == 2


@given(
    uses=st.lists(
        st.tuples(st.integers(min_value=0, max_value=5), st.integers(min_value=0, max_value=4)), max_size=60
    ),
    capacity=st.integers(min_value=1, max_value=4),
)
def test_nonce_counts_never_accept_a_nonce_count_twice(uses: list[tuple[int, int]], capacity: int) -> None:
    """Whatever the eviction, a (nonce, nc) pair is accepted at most once and nc only grows."""
    counts = NonceCounts(capacity=capacity)
    highest: dict[str, int] = {}
    for nonce_index, nc in uses:
        nonce = f"n{nonce_index}"
        if counts.accept(nonce, issued_ms=nonce_index, nc=nc):
            assert nc > highest.get(nonce, -1)
            highest[nonce] = nc
        assert len(counts) <= capacity


# Failure causes and nonce consumption (the security log and lockout count these).


def test_no_credentials_is_a_challenge_not_a_failure() -> None:
    result = authenticator().authenticate(request(), NOW)
    assert isinstance(result, Rejected)
    assert (result.cause, result.username, result.realm) == (RejectCause.CHALLENGE, None, REALM)
    assert result.cause not in FAILURES


def test_wrong_password_and_unknown_user_name_the_user_and_the_cause() -> None:
    auth = authenticator()
    wrong = answer(auth, auth.challenge(request(), NOW), password="guess")
    unknown = answer(auth, auth.challenge(request(), NOW), username="mallory")
    assert isinstance(wrong, Rejected) and isinstance(unknown, Rejected)
    assert (wrong.cause, wrong.username, wrong.realm) == (RejectCause.WRONG_PASSWORD, "alice", REALM)
    assert (unknown.cause, unknown.username) == (RejectCause.UNKNOWN_USER, "mallory")
    assert {wrong.cause, unknown.cause} <= FAILURES


def test_a_wrong_answer_uses_up_its_nonce() -> None:
    auth = authenticator()
    challenge = auth.challenge(request(), NOW)
    assert isinstance(answer(auth, challenge, password="guess"), Rejected)
    # The right password with the same nonce (even a higher nc) is refused: a fresh challenge.
    again = answer(auth, challenge, nc="00000002", now=NOW + 1)
    assert isinstance(again, Rejected)
    assert (again.status, again.cause, again.stale) == (401, RejectCause.REPLAY, True)
    assert challenge_params(again)["nonce"] != challenge_params(challenge)["nonce"]
    assert isinstance(answer(auth, again, now=NOW + 2), Authenticated)


def test_every_guess_on_one_nonce_is_a_failure() -> None:
    auth = authenticator()
    challenge = auth.challenge(request(), NOW)
    causes = [
        result.cause
        for guess in ("a", "b", "c")
        if isinstance(result := answer(auth, challenge, password=guess, now=NOW + 1), Rejected)
    ]
    assert causes == [RejectCause.WRONG_PASSWORD] * 3


def test_replay_stale_and_malformed_causes() -> None:
    auth = authenticator()
    challenge = auth.challenge(request(), NOW)
    assert isinstance(answer(auth, challenge), Authenticated)
    replay = answer(auth, challenge, now=NOW + 1)
    assert isinstance(replay, Rejected) and replay.cause is RejectCause.REPLAY
    stale = answer(auth, auth.challenge(request(), NOW), now=NOW + 301)
    assert isinstance(stale, Rejected) and (stale.cause, stale.stale) == (RejectCause.STALE, True)
    assert stale.cause not in FAILURES
    broken = request(auth=(("Authorization", f'Digest username="alice", realm="{REALM}", nonce="x"'),))
    malformed = auth.authenticate(broken, NOW)
    assert isinstance(malformed, Rejected)
    assert (malformed.status, malformed.cause, malformed.username) == (400, RejectCause.MALFORMED, "alice")


@pytest.mark.parametrize("field", ["response", "nonce", "username", "cnonce", "uri", "realm", "nc"])
def test_octets_that_are_not_utf8_in_any_credential_field_are_refused_not_raised(field: str) -> None:
    """A peer's bytes are decoded with surrogateescape: a non-UTF-8 octet in any field of the
    credentials is a refusal (400 or a fresh challenge), never an exception (a 500)."""
    auth = authenticator()
    challenge = auth.challenge(request(), NOW)
    line = credentials_line(challenge)
    params = dict(parse_auth(line).params)
    poisoned = params[field] + "\udcff"
    line = line.replace(f'{field}="{params[field]}"', f'{field}="{poisoned}"').replace(
        f"{field}={params[field]},", f"{field}={poisoned},"
    )
    assert "\udcff" in line
    decision = auth.authenticate(request(auth=(("Authorization", line),)), NOW)
    assert isinstance(decision, Rejected)
    assert decision.status in (400, 401)


@pytest.mark.parametrize("secret", [b"", b"k", b"s" * 32, b"x" * 64, b"y" * 65, bytes(range(200))])
def test_nonce_tag_is_hmac_sha256_of_realm_body_and_algorithm_truncated_to_16_octets(secret: bytes) -> None:
    # The tag comes from an HMAC keyed once and copied per tag; it must be the octets of hmac.new.
    nonce = NonceFactory(secret, counter_entropy()).issue("ex\u00e4mple.com", NOW, "SHA-256")
    raw = base64.urlsafe_b64decode(nonce)
    body, tag = raw[:-16], raw[-16:]
    message = "ex\u00e4mple.com".encode() + b"\x00" + body + b"\x00SHA-256"
    assert tag == hmac.new(secret, message, hashlib.sha256).digest()[:16]
    assert (
        NonceFactory(secret, counter_entropy()).check(nonce, "ex\u00e4mple.com", NOW, "SHA-256").status
        is NonceStatus.VALID
    )
