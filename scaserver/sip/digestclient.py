"""HTTP Digest authentication for SIP, client side (RFC 7616 section 3.4, RFC 8760 section 2.4):
a UAC answering a 401/407, used by the mid-registrar for its own REGISTERs
(push-and-parking.md section 3.5).

:func:`parse_challenges`, :func:`select_challenge` (the topmost offer we hold an HA1 for),
:func:`authorization` / :func:`authorize` (``qop=auth`` when offered, else the RFC 2069 form;
``nc`` and ``cnonce`` come from the caller).  The server side is :mod:`scaserver.sip.digest`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import attrs

from scaserver.sip.digest import Algorithm, Credentials, compute_response, digest_fields, quoted_string
from scaserver.sip.errors import MalformedMessage
from scaserver.sip.headers import parse_auth
from scaserver.sip.message import Request, Response


@attrs.frozen
class ClientCredentials:
    """What a UAC needs to answer a Digest challenge in ``realm`` (RFC 7616 section 3.4): the
    username and the HA1 per algorithm it holds, never the password.  An algorithm without an
    HA1 here is not answered (RFC 8760 section 2.4: the next offer is tried)."""

    username: str
    realm: str
    ha1_md5: str | None = attrs.field(default=None, repr=False)
    ha1_sha256: str | None = attrs.field(default=None, repr=False)
    ha1_sha512_256: str | None = attrs.field(default=None, repr=False)

    @classmethod
    def from_password(cls, username: str, realm: str, password: str) -> ClientCredentials:
        return cls.of(Credentials.from_password(username, realm, password))

    @classmethod
    def of(cls, credentials: Credentials) -> ClientCredentials:
        """A subscriber's stored secrets used as a client (the same HA1 values)."""
        return cls(
            credentials.username,
            credentials.realm,
            credentials.ha1_md5,
            credentials.ha1_sha256,
            credentials.ha1_sha512_256,
        )

    @classmethod
    def with_ha1(cls, username: str, realm: str, algorithm: Algorithm, ha1: str) -> ClientCredentials:
        """Credentials holding one precomputed HA1 (lower-case hex) for one algorithm."""
        value = ha1.lower()
        return cls(
            username,
            realm,
            value if algorithm is Algorithm.MD5 else None,
            value if algorithm is Algorithm.SHA_256 else None,
            value if algorithm is Algorithm.SHA_512_256 else None,
        )

    def ha1(self, algorithm: Algorithm) -> str | None:
        if algorithm is Algorithm.MD5:
            return self.ha1_md5
        if algorithm is Algorithm.SHA_256:
            return self.ha1_sha256
        return self.ha1_sha512_256


@attrs.frozen
class Challenge:
    """One Digest challenge this client can answer (RFC 7616 section 3.3): from a
    ``WWW-Authenticate`` of a 401, or a ``Proxy-Authenticate`` of a 407 (``proxy``; RFC 3261
    sections 22.2, 22.3).  ``qop_auth``: ``auth`` was among the offered qop values, so the
    answer uses ``qop=auth``; without a qop parameter the answer is the RFC 2069 form
    (RFC 2617 section 3.2.2.1)."""

    proxy: bool
    realm: str
    nonce: str
    algorithm: Algorithm
    qop_auth: bool
    opaque: str | None = None
    stale: bool = False

    @property
    def answer_header(self) -> str:
        """The request header carrying the answer (RFC 3261 sections 22.2, 22.3)."""
        return "Proxy-Authorization" if self.proxy else "Authorization"


def parse_challenges(response: Response) -> tuple[Challenge, ...]:
    """The Digest challenges of a 401 or 407 that can be answered, in the order offered.

    Left out: other schemes, unreadable header fields, a missing or empty ``realm`` or
    ``nonce``, an unknown algorithm (the ``-sess`` variants included), and a qop list without
    ``auth`` (``auth-int`` only).  Another status has no challenges.
    """
    if response.status == 401:
        name, proxy = "WWW-Authenticate", False
    elif response.status == 407:
        name, proxy = "Proxy-Authenticate", True
    else:
        return ()
    found: list[Challenge] = []
    for header in digest_fields(response.headers.lines(name)):
        realm, nonce = header.param("realm"), header.param("nonce")
        algorithm = Algorithm.from_token(header.param("algorithm"))
        if not realm or not nonce or algorithm is None:
            continue
        qop = header.param("qop")
        offered = {token.strip().lower() for token in qop.split(",")} if qop is not None else set()
        if qop is not None and "auth" not in offered:
            continue
        stale = (header.param("stale") or "").strip().lower() == "true"
        opaque = header.param("opaque")
        found.append(Challenge(proxy, realm, nonce, algorithm, qop is not None, opaque, stale))
    return tuple(found)


def select_challenge(
    challenges: Iterable[Challenge], credentials: Callable[[str], ClientCredentials | None]
) -> tuple[Challenge, ClientCredentials] | None:
    """The topmost challenge ``credentials(realm)`` holds an HA1 for (RFC 8760 section 2.4: a
    UAC uses the first offered algorithm it supports), with those credentials; None when
    no challenge can be answered."""
    for challenge in challenges:
        found = credentials(challenge.realm)
        if found is not None and found.ha1(challenge.algorithm) is not None:
            return challenge, found
    return None


def authorization(
    challenge: Challenge, credentials: ClientCredentials, *, method: str, uri: str, nc: int, cnonce: str
) -> str:
    """The ``Authorization``/``Proxy-Authorization`` value answering ``challenge``
    (RFC 7616 section 3.4).

    ``uri`` is the Request-URI (RFC 3261 section 22.4: the ``uri`` parameter repeats it);
    ``nc`` counts the requests sent with this nonce, from 1; ``cnonce`` is a fresh random
    token from the caller.  With ``qop=auth``: response = KD(HA1, nonce:nc:cnonce:auth:HA2);
    without qop (RFC 2069 form): KD(HA1, nonce:HA2), and no ``nc``/``cnonce``.
    """
    algorithm = challenge.algorithm
    ha1 = credentials.ha1(algorithm)
    if ha1 is None:
        raise ValueError(f"no {algorithm.value} HA1 for {credentials.username!r}")
    if not 1 <= nc <= 0xFFFFFFFF:
        raise ValueError(f"nonce count {nc} outside 1..ffffffff")
    parts = [
        f"username={quoted_string(credentials.username)}",
        f"realm={quoted_string(challenge.realm)}",
        f"nonce={quoted_string(challenge.nonce)}",
        f"uri={quoted_string(uri)}",
    ]
    nc_text = f"{nc:08x}"
    if challenge.qop_auth:
        response = compute_response(
            algorithm,
            ha1,
            nonce=challenge.nonce,
            nc=nc_text,
            cnonce=cnonce,
            qop="auth",
            method=method,
            uri=uri,
        )
    else:
        response = algorithm.hash(f"{ha1}:{challenge.nonce}:{algorithm.hash(f'{method}:{uri}')}")
    parts += [f"response={quoted_string(response)}", f"algorithm={algorithm.value}"]
    if challenge.qop_auth:
        parts += ["qop=auth", f"nc={nc_text}", f"cnonce={quoted_string(cnonce)}"]
    if challenge.opaque is not None:
        parts.append(f"opaque={quoted_string(challenge.opaque)}")
    return "Digest " + ", ".join(parts)


def authorize(
    request: Request, challenge: Challenge, credentials: ClientCredentials, *, nc: int, cnonce: str
) -> Request:
    """``request`` carrying the answer to ``challenge``: earlier credentials for the same realm
    in that header are replaced, those for other realms kept (RFC 3261 section 22.3)."""
    name = challenge.answer_header
    value = authorization(
        challenge, credentials, method=request.method, uri=request.uri, nc=nc, cnonce=cnonce
    )
    kept = [line for line in request.headers.lines(name) if _realm_of(line) != challenge.realm]
    headers = request.headers.remove(name)
    for line in (*kept, value):
        headers = headers.add(name, line)
    return attrs.evolve(request, headers=headers)


def _realm_of(line: str) -> str | None:
    try:
        return parse_auth(line).param("realm")
    except MalformedMessage:
        return None
