"""What the router consumes of the credentials before relaying a request (RFC 3261 22.3); the
challenges and refusals themselves are tested through the router (test_dispatch_security,
test_identity)."""

from __future__ import annotations

from scaserver.router.authentication import AuthenticationRejected, consume_credentials
from scaserver.sip.digest import RejectCause
from scaserver.sip.message import Headers, Peer, Request, Transport

OURS = 'Digest username="alice", realm="example.com", nonce="n1", uri="sip:bob@example.com", response="r1"'
THEIRS = (
    'Digest username="alice", realm="pbx.example.net", nonce="n2", uri="sip:bob@example.com", response="r2"'
)


def invite(*credentials: str) -> Request:
    fields = Headers.of(("CSeq", "1 INVITE"), *(("Proxy-Authorization", line) for line in credentials))
    return Request("INVITE", "sip:bob@example.com", fields, b"")


def test_our_realms_credentials_are_consumed_and_others_kept() -> None:
    relayed = consume_credentials(invite(OURS, THEIRS), "example.com")
    assert relayed.headers.lines("Proxy-Authorization") == (THEIRS,)


def test_a_request_without_credentials_is_unchanged() -> None:
    request = invite()
    assert consume_credentials(request, "example.com") is request


def test_unreadable_credentials_are_not_ours_and_are_kept() -> None:
    relayed = consume_credentials(invite("Digest realm", OURS), "example.com")
    assert relayed.headers.lines("Proxy-Authorization") == ("Digest realm",)


def test_only_failures_count_towards_a_lockout() -> None:
    peer = Peer(Transport.UDP, "198.51.100.7", 5060)
    first = AuthenticationRejected(peer, "REGISTER", 401, stale=False)
    wrong = AuthenticationRejected(peer, "REGISTER", 401, stale=False, cause=RejectCause.WRONG_PASSWORD)
    stale = AuthenticationRejected(peer, "REGISTER", 401, stale=True, cause=RejectCause.STALE)
    assert (first.is_failure, wrong.is_failure, stale.is_failure) == (False, True, False)
