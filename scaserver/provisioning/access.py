"""HTTP Digest for provisioning fetches (provisioning.md section 4.2; RFC 7616, MD5, qop=auth).

Pure: the edge passes the ``Authorization`` header, the request method and URI, the
expected user and HA1, ``now`` and the nonce state; it gets a decision back.  Nonces are
``scaserver.sip.digest.NonceFactory`` nonces (stateless, HMAC-tagged, time-stamped) and
``NonceCounts`` refuses a replayed ``nc`` (RFC 7616 section 3.4).
"""

from __future__ import annotations

import enum
import hmac

import attrs

from scaserver.sip.digest import (
    Algorithm,
    NonceCounts,
    NonceFactory,
    NonceStatus,
    compute_ha1,
    compute_response,
)
from scaserver.sip.errors import MalformedMessage
from scaserver.sip.headers import parse_auth

#: The digest realm of provisioning credentials unless configured otherwise.
DEFAULT_REALM = "scaserver-provisioning"


class Verdict(enum.Enum):
    ACCEPTED = "accepted"
    MISSING = "missing"  # no Digest credentials: challenge
    REJECTED = "rejected"  # wrong user, password, realm, URI or malformed: challenge
    STALE = "stale"  # right password, old or replayed nonce: challenge with stale=true


@attrs.frozen
class Secret:
    """Who may fetch a device's files: user name and MD5 HA1 in ``realm``."""

    username: str
    realm: str
    ha1: str = attrs.field(repr=False)

    @classmethod
    def from_password(cls, username: str, realm: str, password: str) -> Secret:
        return cls(username, realm, compute_ha1(Algorithm.MD5, username, realm, password))


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def challenge(realm: str, nonce: str, *, stale: bool = False) -> str:
    """The ``WWW-Authenticate`` value (RFC 7616 section 3.3)."""
    parts = [f"realm={_quote(realm)}", 'qop="auth"', "algorithm=MD5", f"nonce={_quote(nonce)}"]
    if stale:
        parts.append("stale=true")
    return "Digest " + ", ".join(parts)


def verify(
    authorization: str | None,
    *,
    method: str,
    uri: str,
    secret: Secret,
    nonces: NonceFactory,
    counts: NonceCounts,
    now: float,
) -> Verdict:
    """Check ``Authorization: Digest ...`` against ``secret`` (RFC 7616 section 3.4).

    The digest ``uri`` must be the request target; only MD5 and ``qop=auth`` are accepted.
    """
    if authorization is None:
        return Verdict.MISSING
    try:
        auth = parse_auth(authorization)
    except MalformedMessage:
        return Verdict.REJECTED
    if auth.scheme.lower() != "digest":
        return Verdict.MISSING
    fields = {
        name: auth.param(name)
        for name in ("username", "realm", "nonce", "uri", "response", "qop", "nc", "cnonce", "algorithm")
    }
    username, realm, nonce = fields["username"], fields["realm"], fields["nonce"]
    digest_uri, response, qop = fields["uri"], fields["response"], fields["qop"]
    nc_text, cnonce = fields["nc"], fields["cnonce"]
    if None in (username, realm, nonce, digest_uri, response, nc_text, cnonce) or qop != "auth":
        return Verdict.REJECTED
    assert username is not None and realm is not None and nonce is not None
    assert digest_uri is not None and response is not None and nc_text is not None and cnonce is not None
    if Algorithm.from_token(fields["algorithm"]) is not Algorithm.MD5:
        return Verdict.REJECTED
    if realm != secret.realm or digest_uri != uri:
        return Verdict.REJECTED
    try:
        nc = int(nc_text, 16)
    except ValueError:
        return Verdict.REJECTED
    expected = compute_response(
        Algorithm.MD5,
        secret.ha1,
        nonce=nonce,
        nc=nc_text,
        cnonce=cnonce,
        qop="auth",
        method=method,
        uri=digest_uri,
    )
    right = hmac.compare_digest(expected, response.lower()) and hmac.compare_digest(
        username.encode("utf-8"), secret.username.encode("utf-8")
    )
    check = nonces.check(nonce, realm, now)
    if check.status is NonceStatus.INVALID or not right:
        return Verdict.REJECTED
    if check.status is NonceStatus.EXPIRED:
        return Verdict.STALE
    counts.prune(now, nonces.ttl)
    if not counts.accept(nonce, check.issued_ms, nc):
        return Verdict.STALE
    return Verdict.ACCEPTED


@attrs.define
class EnumerationGuard:
    """Section 4.2 rule 4: more than ``limit`` unknown-MAC 404s from one source address
    within a minute blocks that address (429) for a minute.  Pure: ``now`` is passed in."""

    limit: int = 20
    window_s: float = 60.0
    block_s: float = 60.0
    capacity: int = 10_000
    _counts: dict[str, tuple[float, int]] = attrs.field(factory=dict)
    _blocked: dict[str, float] = attrs.field(factory=dict)

    def blocked(self, ip: str, now: float) -> bool:
        until = self._blocked.get(ip)
        if until is None:
            return False
        if now >= until:
            del self._blocked[ip]
            return False
        return True

    def unknown_mac(self, ip: str, now: float) -> bool:
        """Count one unknown-MAC 404; True when ``ip`` just became blocked."""
        start, count = self._counts.get(ip, (now, 0))
        if now - start >= self.window_s:
            start, count = now, 0
        count += 1
        if count > self.limit:
            self._counts.pop(ip, None)
            self._blocked[ip] = now + self.block_s
            return True
        if ip not in self._counts and len(self._counts) >= self.capacity:
            self._counts = {k: v for k, v in self._counts.items() if now - v[0] < self.window_s}
        self._counts[ip] = (start, count)
        return False
