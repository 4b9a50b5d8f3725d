"""HTTP Digest authentication for SIP (RFC 3261 section 22, RFC 7616, RFC 8760).

What this module implements, and the choices made:

* Algorithms MD5, SHA-256 and SHA-512-256 (RFC 7616 section 3.2, RFC 8760 section 2); the
  ``-sess`` variants are not offered and not accepted.  Challenges are sent one per offered
  algorithm, most preferred first (RFC 8760 section 2, UAS behaviour: SHA-256 before MD5).
* ``qop=auth`` is required.  A response without ``qop`` (the RFC 2069 form that RFC 7616
  section 3.4 no longer allows) is not accepted: the client gets a fresh challenge.
  ``auth-int`` is not offered (no SIP UA in our deployments needs it) and is answered with a
  fresh challenge too.
* Nonces need no storage: a nonce is ``base64url(issued_ms || random || HMAC-SHA-256(secret,
  realm || algorithm || issued_ms || random)[:16])``.  Each offered algorithm gets its own
  nonce, and the MAC covers the algorithm: an answer computed with another algorithm than the
  one its nonce was offered with is refused like an unknown nonce (RFC 7616 section 3.7: a
  downgrade from SHA-256 to MD5 is not possible).  A nonce whose tag does not verify is unknown; one
  older than ``nonce_ttl`` is expired, and a request with an expired but otherwise valid nonce
  (correct digest) is challenged with ``stale=true`` (RFC 7616 section 3.3).
* Replay protection by nonce-count (RFC 7616 section 3.4): a bounded table remembers the
  highest ``nc`` accepted per nonce; a reused or lower ``nc`` is refused with ``stale=true``.
  When the table is full the oldest entries are evicted and a watermark on the issue time is
  raised, so a nonce issued at or before the watermark and no longer in the table is treated
  as stale rather than as fresh: an evicted nonce can never be replayed.
* The reply to an unknown user is the reply to a wrong password: the same challenge, byte for
  byte except the nonce, and the same amount of hashing.
* Identity (RFC 3261 section 22.3 leaves authorisation to policy): one subscriber must not
  register or call as another.  REGISTER's To user and the From user of INVITE and SUBSCRIBE
  must be the authenticated username (or pass the injected ``may_act_as`` policy), else 403.
  The realm of a request is the host of that identity URI when it is one of our domains and the
  default realm otherwise; credentials for any other realm are ignored (section 22.4), which
  leads to a fresh challenge.  ``forced_realm`` (``auth.realm``) replaces that choice.
* Which algorithms a challenge offers: the subscriber's own policy (the identity user's
  ``Credentials.algorithms``), else the first ``user_agent_algorithms`` rule whose text is in
  the User-Agent, else ``algorithms``.  An answer is accepted only with an offered algorithm
  that the authenticating subscriber's policy allows: a SHA-256-only subscriber never has an
  MD5 answer accepted.

The client side (a UAC answering a 401/407) is :mod:`scaserver.sip.digestclient`.

Everything here is pure: ``now`` is an argument and randomness is injected.
"""

from __future__ import annotations

import base64
import enum
import functools
import hashlib
import hmac
import re
import struct
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from typing import Final

import attrs

from scaserver.sip.domains import DomainPolicy, as_domain_policy
from scaserver.sip.errors import MalformedMessage
from scaserver.sip.headers import AuthHeader, from_addr, parse_auth, to_addr
from scaserver.sip.message import Headers, Request, Response
from scaserver.sip.responses import make_response
from scaserver.sip.uri import SipUri, parse_uri


class Algorithm(enum.Enum):
    """Digest algorithms (RFC 7616 section 3.2; RFC 8760 section 2 for SIP)."""

    MD5 = "MD5"
    SHA_256 = "SHA-256"
    SHA_512_256 = "SHA-512-256"

    @property
    def hashlib_name(self) -> str:
        return _HASHLIB_NAMES[self]

    def hash(self, data: str) -> str:
        """H(data): the lower-case hex digest of the UTF-8 octets of ``data``."""
        return _HASHES[self](data.encode("utf-8", "surrogateescape")).hexdigest()

    @classmethod
    def from_token(cls, token: str | None) -> Algorithm | None:
        """The algorithm named by an ``algorithm`` parameter (absent means MD5, section 3.4)."""
        if token is None:
            return cls.MD5
        return _ALGORITHM_TOKENS.get(token.strip().upper())


_HASHLIB_NAMES: Final[dict[Algorithm, str]] = {
    Algorithm.MD5: "md5",
    Algorithm.SHA_256: "sha256",
    Algorithm.SHA_512_256: "sha512_256",
}
_HASHES: Final[dict[Algorithm, Callable[[bytes], hashlib._Hash]]] = {
    Algorithm.MD5: hashlib.md5,  # the named constructors: no look-up by name per hash
    Algorithm.SHA_256: hashlib.sha256,
    Algorithm.SHA_512_256: functools.partial(hashlib.new, "sha512_256"),
}
_ALGORITHM_TOKENS: Final[dict[str, Algorithm]] = {algorithm.value: algorithm for algorithm in Algorithm}


def compute_ha1(algorithm: Algorithm, username: str, realm: str, password: str) -> str:
    """HA1 = H(username ":" realm ":" password) (RFC 7616 section 3.4.2)."""
    return algorithm.hash(f"{username}:{realm}:{password}")


def compute_response(
    algorithm: Algorithm, ha1: str, *, nonce: str, nc: str, cnonce: str, qop: str, method: str, uri: str
) -> str:
    """The ``response`` value for ``qop=auth`` (RFC 7616 section 3.4.1):
    KD(HA1, nonce ":" nc ":" cnonce ":" qop ":" H(method ":" uri))."""
    ha2 = algorithm.hash(f"{method}:{uri}")
    return algorithm.hash(f"{ha1}:{nonce}:{nc}:{cnonce}:{qop}:{ha2}")


@attrs.frozen
class Credentials:
    """A subscriber's stored digest secrets: HA1 per algorithm, never the password.

    ``ha1_sha512_256`` is optional (RFC 8760 makes SHA-512-256 a SHOULD); a request using an
    algorithm whose HA1 is missing fails like a wrong password.
    """

    username: str
    realm: str
    ha1_md5: str = attrs.field(repr=False)
    ha1_sha256: str = attrs.field(repr=False)
    ha1_sha512_256: str | None = attrs.field(default=None, repr=False)
    # The subscriber's digest policy: the algorithms offered to it and accepted from it, most
    # preferred first; empty means the server's (``auth.algorithms`` and its User-Agent rules).
    algorithms: tuple[Algorithm, ...] = attrs.field(default=(), kw_only=True)

    @classmethod
    def from_password(
        cls, username: str, realm: str, password: str, *, algorithms: tuple[Algorithm, ...] = ()
    ) -> Credentials:
        return cls(
            username,
            realm,
            compute_ha1(Algorithm.MD5, username, realm, password),
            compute_ha1(Algorithm.SHA_256, username, realm, password),
            compute_ha1(Algorithm.SHA_512_256, username, realm, password),
            algorithms=algorithms,
        )

    def allows(self, algorithm: Algorithm) -> bool:
        """Whether an answer with ``algorithm`` may authenticate this subscriber."""
        return not self.algorithms or algorithm in self.algorithms

    def ha1(self, algorithm: Algorithm) -> str | None:
        if algorithm is Algorithm.MD5:
            return self.ha1_md5
        if algorithm is Algorithm.SHA_256:
            return self.ha1_sha256
        return self.ha1_sha512_256


CredentialLookup = Callable[[str, str], Credentials | None]
"""``lookup(username, realm)``: the subscriber's credentials, or None when unknown."""


# Nonces ---------------------------------------------------------------------------------------

_NONCE_RANDOM_BYTES: Final = 12
_NONCE_TAG_BYTES: Final = 16
_NONCE_BYTES: Final = 8 + _NONCE_RANDOM_BYTES + _NONCE_TAG_BYTES


class NonceStatus(enum.Enum):
    VALID = "valid"
    EXPIRED = "expired"
    INVALID = "invalid"


@attrs.frozen
class NonceCheck:
    status: NonceStatus
    issued_ms: int = 0


@attrs.frozen
class NonceFactory:
    """Stateless nonces (RFC 7616 section 3.3 suggests a time stamp plus a private key).

    ``secret`` must be kept across restarts for nonces to survive them, and shared by every
    process that verifies them.  ``entropy(n)`` returns ``n`` random octets (``os.urandom``).
    """

    secret: bytes = attrs.field(repr=False)
    entropy: Callable[[int], bytes] = attrs.field(repr=False)
    ttl: float = 300.0
    # A nonce dated this far in the future (a clock step back) is still accepted.
    clock_skew: float = 5.0
    # HMAC-SHA-256 keyed with ``secret`` once; each tag works on a copy (keying OpenSSL's HMAC
    # per nonce was most of the cost of issuing and checking one).
    _keyed: hmac.HMAC = attrs.field(
        init=False,
        repr=False,
        eq=False,
        default=attrs.Factory(lambda self: hmac.new(self.secret, digestmod=hashlib.sha256), takes_self=True),
    )

    def issue(self, realm: str, now: float, algorithm: str = "") -> str:
        """A fresh nonce for a challenge in ``realm`` offering ``algorithm`` (bound by the MAC)."""
        issued_ms = max(0, int(now * 1000))
        random = self.entropy(_NONCE_RANDOM_BYTES)
        if len(random) != _NONCE_RANDOM_BYTES:
            raise ValueError("entropy source returned the wrong number of octets")
        body = struct.pack(">Q", issued_ms) + random
        return base64.urlsafe_b64encode(body + self._tag(realm, algorithm, body)).decode("ascii")

    def check(self, nonce: str, realm: str, now: float, algorithm: str = "") -> NonceCheck:
        try:
            raw = base64.urlsafe_b64decode(nonce.encode("ascii"))
        except (ValueError, UnicodeEncodeError):
            return NonceCheck(NonceStatus.INVALID)
        if len(raw) != _NONCE_BYTES:
            return NonceCheck(NonceStatus.INVALID)
        body, tag = raw[:-_NONCE_TAG_BYTES], raw[-_NONCE_TAG_BYTES:]
        if not hmac.compare_digest(tag, self._tag(realm, algorithm, body)):
            return NonceCheck(NonceStatus.INVALID)
        (issued_ms,) = struct.unpack(">Q", body[:8])
        age = now - issued_ms / 1000
        if age < -self.clock_skew:
            return NonceCheck(NonceStatus.INVALID, issued_ms)
        if age > self.ttl:
            return NonceCheck(NonceStatus.EXPIRED, issued_ms)
        return NonceCheck(NonceStatus.VALID, issued_ms)

    def _tag(self, realm: str, algorithm: str, body: bytes) -> bytes:
        message = realm.encode("utf-8", "surrogateescape") + b"\x00" + body
        if algorithm:
            message += b"\x00" + algorithm.encode("ascii")
        mac = self._keyed.copy()
        mac.update(message)
        return mac.digest()[:_NONCE_TAG_BYTES]


@attrs.define
class NonceCounts:
    """The highest nonce-count accepted per nonce (RFC 7616 section 3.4, ``nc``), bounded.

    Entries are evicted oldest-first; eviction raises ``watermark_ms`` to the issue time of the
    evicted nonce, and :meth:`accept` refuses a nonce issued at or before the watermark that is
    no longer tracked, so eviction never reopens a nonce to replay.
    """

    capacity: int = 65536
    watermark_ms: int = -1
    _seen: OrderedDict[str, tuple[int, int]] = attrs.field(factory=OrderedDict)

    def accept(self, nonce: str, issued_ms: int, nc: int) -> bool:
        """Record ``nc`` for ``nonce`` if it is higher than any accepted before."""
        entry = self._seen.get(nonce)
        if entry is None:
            if issued_ms <= self.watermark_ms:
                return False
        elif nc <= entry[1]:
            return False
        self._seen[nonce] = (issued_ms, nc)
        self._seen.move_to_end(nonce)
        while len(self._seen) > self.capacity:
            _, (evicted_issued_ms, _) = self._seen.popitem(last=False)
            self.watermark_ms = max(self.watermark_ms, evicted_issued_ms)
        return True

    def consume(self, nonce: str, issued_ms: int) -> None:
        """Use ``nonce`` up: no later ``nc`` is accepted with it (a wrong answer spends its
        nonce, so each guess needs a fresh challenge, RFC 7616 section 5.2)."""
        self._seen[nonce] = (issued_ms, 0xFFFFFFFF)
        self._seen.move_to_end(nonce)
        while len(self._seen) > self.capacity:
            _, (evicted_issued_ms, _) = self._seen.popitem(last=False)
            self.watermark_ms = max(self.watermark_ms, evicted_issued_ms)

    def prune(self, now: float, ttl: float) -> None:
        """Forget nonces past their lifetime (they are refused as expired anyway).

        Incremental: drops entries from the least recently used end while they are past
        their lifetime, so a request costs O(1) amortised; an expired entry behind a live one
        waits for capacity eviction.
        """
        limit_ms = int((now - ttl) * 1000)
        while self._seen:
            nonce, (issued_ms, _) = next(iter(self._seen.items()))
            if issued_ms >= limit_ms:
                break
            del self._seen[nonce]

    def __len__(self) -> int:
        return len(self._seen)


# Decisions -------------------------------------------------------------------------------------


@attrs.frozen
class Authenticated:
    """The request carries valid credentials of ``username`` in ``realm``."""

    username: str
    realm: str
    algorithm: Algorithm


class RejectCause(enum.Enum):
    """Why a request was not authenticated (the security log's ``reason`` field).

    ``challenge`` (no credentials for the realm, or an algorithm or qop we do not offer) and
    ``stale`` (an expired or unknown nonce) are a client's normal way in; the others are
    failures an attacker's guessing produces (:data:`FAILURES`).  The SIP reply never tells
    ``unknown-user`` from ``wrong-password`` (or from ``banned``, a locked-out user).
    """

    CHALLENGE = "challenge"
    UNKNOWN_USER = "unknown-user"
    WRONG_PASSWORD = "wrong-password"
    STALE = "stale"
    REPLAY = "replay"
    MALFORMED = "malformed"
    FORBIDDEN = "forbidden"
    BANNED = "banned"


FAILURES: Final = frozenset(
    {RejectCause.UNKNOWN_USER, RejectCause.WRONG_PASSWORD, RejectCause.REPLAY, RejectCause.MALFORMED}
)
"""The causes counted towards a lockout."""


@attrs.frozen
class Rejected:
    """The request is not authenticated; answer it with this status and these headers.

    401/407 carry one challenge per offered algorithm; 403 carries none; 400 is a malformed
    credential (RFC 7616 section 3.4: a ``uri`` that is not the Request-URI earns 400).
    ``cause``, ``username`` (as the credentials gave it) and ``realm`` are for the security log.
    """

    status: int
    reason: str
    headers: Headers = Headers.EMPTY
    stale: bool = False
    cause: RejectCause = RejectCause.CHALLENGE
    username: str | None = None
    realm: str = ""

    def response(
        self,
        request: Request,
        *,
        to_tag: str | None = None,
        detail: str | None = None,
        cause: str | None = None,
    ) -> Response:
        """The reply; ``detail`` and ``cause`` (never sent) say why, for the refusal log line."""
        return make_response(
            request, self.status, self.reason, headers=self.headers, to_tag=to_tag, detail=detail, cause=cause
        )


AuthDecision = Authenticated | Rejected

UAS_CHALLENGED_METHODS: Final = frozenset({"REGISTER", "SUBSCRIBE"})
"""Methods answered by us as registrar / notifier: 401 + WWW-Authenticate; others get 407
+ Proxy-Authenticate (RFC 3261 sections 22.2 and 22.3)."""

_NC_RE: Final = re.compile(r"[0-9A-Fa-f]{8}")
_REQUIRED_PARAMS: Final = ("username", "realm", "nonce", "uri", "response")


def digest_fields(lines: Iterable[str]) -> Iterator[AuthHeader]:
    """The readable ``Digest`` values among credentials or challenge header lines; others
    (another scheme, unparsable) are skipped (RFC 3261 22.4, RFC 7616 section 3.3)."""
    for line in lines:
        try:
            header = parse_auth(line)
        except MalformedMessage:
            continue
        if header.scheme.lower() == "digest":
            yield header


def lower_case_set(values: Iterable[str]) -> frozenset[str]:
    """Domain names compare case-insensitively (RFC 3261 section 19.1.4)."""
    return frozenset(value.lower() for value in values)


def quoted_string(value: str) -> str:
    """``value`` as a quoted-string (RFC 3261 section 25.1), quotes and backslashes escaped."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _same_identity(username: str, realm: str, user: str) -> bool:
    return username == user


def _request_uri_matches(digest_uri: str, request_uri: str) -> bool:
    if digest_uri == request_uri:
        return True
    try:
        digest, target = parse_uri(digest_uri), parse_uri(request_uri)
    except MalformedMessage:
        return False
    if isinstance(digest, SipUri):
        return digest.matches(target)  # RFC 3261 section 19.1.4 equivalence
    return digest == target


@attrs.define
class Authenticator:
    """Digest authentication of requests for our domains (RFC 3261 section 22, RFC 7616).

    ``domains`` decides which hosts we are authoritative for; a request whose identity host
    is one of them is challenged in that realm, any other in ``default_realm``; a non-empty
    ``forced_realm`` is the realm of every challenge.  ``user_agent_algorithms``: (text,
    algorithms) rules, the first whose text is in the User-Agent chooses the offer.
    ``may_act_as(auth_username, realm, identity_user)`` decides whether an authenticated user
    may use an identity (default: the user part must equal the username).
    """

    lookup: CredentialLookup
    nonces: NonceFactory
    default_realm: str
    domains: DomainPolicy = attrs.field(factory=DomainPolicy, converter=as_domain_policy)
    algorithms: tuple[Algorithm, ...] = (Algorithm.SHA_256, Algorithm.MD5)
    user_agent_algorithms: tuple[tuple[str, tuple[Algorithm, ...]], ...] = ()
    forced_realm: str = ""
    from_checked_methods: frozenset[str] = frozenset({"INVITE", "SUBSCRIBE"})
    may_act_as: Callable[[str, str, str], bool] = _same_identity
    counts: NonceCounts = attrs.field(factory=NonceCounts)

    def use_directory(self, lookup: CredentialLookup, domains: DomainPolicy) -> None:
        """A reloaded directory: the credentials looked up and the domains we are
        authoritative for from the next request on (nonces already given stay valid)."""
        self.lookup = lookup
        self.domains = domains

    def realm_for(self, request: Request) -> str:
        """The realm to challenge ``request`` in: its identity host when it is one of ours."""
        if self.forced_realm:
            return self.forced_realm
        identity = self._identity_uri(request)
        if identity is not None and identity.host in self.domains:
            return identity.host.lower()
        return self.default_realm

    def algorithms_for(self, request: Request, realm: str) -> tuple[Algorithm, ...]:
        """The algorithms offered to ``request``, most preferred first: the identity user's own
        policy, else the first matching User-Agent rule, else ``algorithms``."""
        identity = self._identity_uri(request)
        if identity is not None and identity.user:
            credentials = self.lookup(identity.user, realm)
            if credentials is not None and credentials.algorithms:
                return credentials.algorithms
        agent = (request.headers.get("User-Agent") or "").lower()
        for text, algorithms in self.user_agent_algorithms:
            if text.lower() in agent:
                return algorithms
        return self.algorithms

    def challenge(self, request: Request, now: float, *, stale: bool = False) -> Rejected:
        """A fresh 401/407 with one challenge per offered algorithm, most preferred first, each
        with its own nonce (bound to its algorithm)."""
        realm = self.realm_for(request)
        return self._challenge(request, now, realm, self.algorithms_for(request, realm), stale=stale)

    def _challenge(
        self,
        request: Request,
        now: float,
        realm: str,
        offered: tuple[Algorithm, ...],
        *,
        stale: bool = False,
        cause: RejectCause = RejectCause.CHALLENGE,
        username: str | None = None,
        log_realm: str = "",
    ) -> Rejected:
        """:meth:`challenge` in ``realm`` offering ``offered`` (both known already), with why it
        was sent (``cause``, ``username`` and ``log_realm`` for the security log)."""
        uas = request.method in UAS_CHALLENGED_METHODS
        name = "WWW-Authenticate" if uas else "Proxy-Authenticate"
        quoted_realm = quoted_string(realm)
        tail = ', qop="auth", stale=true' if stale else ', qop="auth"'
        fields: list[tuple[str, str]] = []
        for algorithm in offered:
            nonce = quoted_string(self.nonces.issue(realm, now, algorithm.value))
            fields.append(
                (name, f"Digest realm={quoted_realm}, nonce={nonce}, algorithm={algorithm.value}{tail}")
            )
        headers = Headers(tuple(fields)) if fields else Headers.EMPTY
        if uas:
            return Rejected(401, "Unauthorized", headers, stale, cause, username, log_realm)
        return Rejected(407, "Proxy Authentication Required", headers, stale, cause, username, log_realm)

    def authenticate(self, request: Request, now: float) -> AuthDecision:
        """Check the request's credentials: Authenticated, or the reply it must get."""
        self.counts.prune(now, self.nonces.ttl)
        realm = self.realm_for(request)
        params = self._credentials_for(request, realm)
        if params is None:
            return self._challenge(request, now, realm, self.algorithms_for(request, realm), log_realm=realm)
        username = params.get("username") or None
        malformed = Rejected(400, "Bad Request", cause=RejectCause.MALFORMED, username=username, realm=realm)
        if any(not params.get(name) for name in _REQUIRED_PARAMS):
            return malformed
        algorithm = Algorithm.from_token(params.get("algorithm"))
        qop = params.get("qop")
        offered = self.algorithms_for(request, realm)
        if algorithm is None or algorithm not in offered or qop is None or qop.lower() != "auth":
            return self._refused(request, now, RejectCause.CHALLENGE, username, realm)
        nc_text, cnonce = params.get("nc", ""), params.get("cnonce", "")
        if not _NC_RE.fullmatch(nc_text) or not cnonce:
            return malformed
        if not _request_uri_matches(params["uri"], request.uri):
            return malformed
        nonce_check = self.nonces.check(params["nonce"], realm, now, algorithm.value)
        if nonce_check.status is NonceStatus.INVALID:
            return self._refused(request, now, RejectCause.STALE, username, realm)
        username = params["username"]
        credentials = self.lookup(username, realm)
        allowed = credentials is not None and credentials.allows(algorithm)
        ha1 = credentials.ha1(algorithm) if credentials is not None and allowed else None
        # Hash a stand-in HA1 every time so an unknown user costs what a known one does.
        stand_in = algorithm.hash(f"{username}:{realm}:")
        expected = compute_response(
            algorithm,
            ha1 if ha1 is not None else stand_in,
            nonce=params["nonce"],
            nc=nc_text,
            cnonce=cnonce,
            qop="auth",
            method=request.method,
            uri=params["uri"],
        )
        answered = params["response"].lower().encode("utf-8", "surrogateescape")  # a peer's octets
        valid = hmac.compare_digest(expected.encode("ascii"), answered)
        if ha1 is None or not valid:
            self.counts.consume(params["nonce"], nonce_check.issued_ms)
            cause = RejectCause.UNKNOWN_USER if credentials is None else RejectCause.WRONG_PASSWORD
            return self._refused(request, now, cause, username, realm)
        if nonce_check.status is NonceStatus.EXPIRED:
            return self._refused(request, now, RejectCause.STALE, username, realm, stale=True)
        if not self.counts.accept(params["nonce"], nonce_check.issued_ms, int(nc_text, 16)):
            return self._refused(request, now, RejectCause.REPLAY, username, realm, stale=True)
        if not self._may_use_identity(request, username, realm):
            return Rejected(403, "Forbidden", cause=RejectCause.FORBIDDEN, username=username, realm=realm)
        return Authenticated(username, realm, algorithm)

    def _refused(
        self,
        request: Request,
        now: float,
        cause: RejectCause,
        username: str | None,
        realm: str,
        *,
        stale: bool = False,
    ) -> Rejected:
        """A fresh challenge in ``realm`` (the request's), with why it was sent."""
        offered = self.algorithms_for(request, realm)
        return self._challenge(
            request, now, realm, offered, stale=stale, cause=cause, username=username, log_realm=realm
        )

    def _identity_uri(self, request: Request) -> SipUri | None:
        try:
            addr = to_addr(request) if request.method == "REGISTER" else from_addr(request)
        except MalformedMessage:
            return None
        return addr.uri if isinstance(addr.uri, SipUri) else None

    def _may_use_identity(self, request: Request, username: str, realm: str) -> bool:
        if request.method != "REGISTER" and request.method not in self.from_checked_methods:
            return True
        identity = self._identity_uri(request)
        if identity is None or identity.user is None:
            return False
        return self.may_act_as(username, realm, identity.user)

    def _credentials_for(self, request: Request, realm: str) -> dict[str, str] | None:
        """The Digest credentials for ``realm`` (section 22.4: others are ignored)."""
        name = "Authorization" if request.method in UAS_CHALLENGED_METHODS else "Proxy-Authorization"
        for header in digest_fields(request.headers.lines(name)):
            params = {name.lower(): value for name, value in header.params}
            if params.get("realm") == realm:
                return params
        return None
