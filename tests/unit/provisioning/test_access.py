"""Provisioning HTTP digest (RFC 7616, MD5, qop=auth) and the enumeration guard (section 4.2)."""

from __future__ import annotations

from scaserver.provisioning.access import EnumerationGuard, Secret, Verdict, challenge, verify
from scaserver.sip.digest import Algorithm, NonceCounts, NonceFactory, compute_response

REALM = "scaserver-provisioning"
SECRET = Secret.from_password("phone", REALM, "s3cret")
NONCES = NonceFactory(b"k" * 32, lambda n: b"\x01" * n, ttl=300.0)
URI = "/prov/0004f2a1b2c3-sca.cfg"


def authorization(
    *,
    password: str = "s3cret",
    username: str = "phone",
    uri: str = URI,
    nonce: str | None = None,
    nc: str = "00000001",
    realm: str = REALM,
    qop: str = "auth",
    algorithm: str = "MD5",
) -> str:
    nonce = nonce if nonce is not None else NONCES.issue(REALM, 1000.0)
    ha1 = Secret.from_password(username, realm, password).ha1
    response = compute_response(
        Algorithm.MD5, ha1, nonce=nonce, nc=nc, cnonce="c0ffee", qop=qop, method="GET", uri=uri
    )
    return (
        f'Digest username="{username}", realm="{realm}", nonce="{nonce}", uri="{uri}", '
        f'response="{response}", qop={qop}, nc={nc}, cnonce="c0ffee", algorithm={algorithm}'
    )


def check(header: str | None, *, now: float = 1000.0, counts: NonceCounts | None = None) -> Verdict:
    return verify(
        header,
        method="GET",
        uri=URI,
        secret=SECRET,
        nonces=NONCES,
        counts=counts if counts is not None else NonceCounts(),
        now=now,
    )


def test_right_credentials_are_accepted() -> None:
    assert check(authorization()) is Verdict.ACCEPTED


def test_missing_or_other_scheme_is_missing() -> None:
    assert check(None) is Verdict.MISSING
    assert check("Basic cGhvbmU6czNjcmV0") is Verdict.MISSING


def test_wrong_password_user_realm_uri_qop_algorithm_are_rejected() -> None:
    assert check(authorization(password="wrong")) is Verdict.REJECTED
    assert check(authorization(username="other")) is Verdict.REJECTED
    assert check(authorization(realm="elsewhere")) is Verdict.REJECTED
    assert check(authorization(uri="/prov/5006ab123456.xml")) is Verdict.REJECTED
    assert check(authorization(qop="auth-int")) is Verdict.REJECTED
    assert check(authorization(algorithm="SHA-256")) is Verdict.REJECTED
    assert check(authorization(nc="zz")) is Verdict.REJECTED
    assert check(authorization(nonce="forged")) is Verdict.REJECTED
    assert check('Digest username="phone"') is Verdict.REJECTED
    assert check("Digest ,,,=") is Verdict.REJECTED


def test_expired_nonce_and_replayed_nc_are_stale() -> None:
    assert check(authorization(), now=1000.0 + 301) is Verdict.STALE
    counts = NonceCounts()
    header = authorization()
    assert check(header, counts=counts) is Verdict.ACCEPTED
    assert check(header, counts=counts) is Verdict.STALE
    assert (
        check(authorization(nonce=header.split('nonce="')[1].split('"')[0], nc="00000002"), counts=counts)
        is Verdict.ACCEPTED
    )


def test_challenge_header() -> None:
    assert (
        challenge(REALM, "abc")
        == 'Digest realm="scaserver-provisioning", qop="auth", algorithm=MD5, nonce="abc"'
    )
    assert challenge('a"b', "n", stale=True).endswith(', nonce="n", stale=true')
    assert 'realm="a\\"b"' in challenge('a"b', "n")


def test_enumeration_guard_blocks_after_the_limit_for_a_minute() -> None:
    guard = EnumerationGuard(limit=3)
    assert [guard.unknown_mac("192.0.2.1", 10.0 + i) for i in range(3)] == [False, False, False]
    assert not guard.blocked("192.0.2.1", 13.0)
    assert guard.unknown_mac("192.0.2.1", 13.0) is True
    assert guard.blocked("192.0.2.1", 14.0)
    assert not guard.blocked("192.0.2.2", 14.0)
    assert not guard.blocked("192.0.2.1", 73.0)


def test_enumeration_guard_window_restarts_after_a_minute() -> None:
    guard = EnumerationGuard(limit=2)
    guard.unknown_mac("192.0.2.1", 0.0)
    guard.unknown_mac("192.0.2.1", 1.0)
    assert guard.unknown_mac("192.0.2.1", 61.0) is False
    assert not guard.blocked("192.0.2.1", 61.0)
