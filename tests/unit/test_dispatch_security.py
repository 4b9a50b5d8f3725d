"""The dispatcher's part in containment: authentication failures (not first challenges) are
counted per source and per user, ban the source and lock the user out; a full transaction
table answers 503 with Retry-After."""

from __future__ import annotations

import attrs

from scaserver.guard.sources import Ban, BanReason, SecuritySettings, SourceGuard
from scaserver.router.authentication import AuthenticationRejected
from scaserver.router.router import SipRouter
from scaserver.sip.actions import Action, Deliver
from scaserver.sip.digest import RejectCause
from scaserver.sip.endpoint import StatelessReply
from scaserver.sip.message import Peer, Request, Response, Transport
from scaserver.sip.parser import parse_message
from scaserver.sip.serializer import serialize
from tests.builders import DOMAIN, PASSWORDS, digest_authorization, make_core, sent

NOW = 1_000_000.0
GUESSER = Peer(Transport.UDP, "198.51.100.66", 5070)


def register_text(user: str, peer: Peer, branch: str, cseq: int = 1) -> str:
    return (
        f"REGISTER sip:{DOMAIN} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {peer.host}:{peer.port};branch={branch};rport\r\n"
        f"From: <sip:{user}@{DOMAIN}>;tag=f{branch}\r\n"
        f"To: <sip:{user}@{DOMAIN}>\r\n"
        f"Call-ID: reg-{branch}\r\n"
        f"CSeq: {cseq} REGISTER\r\n"
        f"Contact: <sip:{user}@{peer.host}:{peer.port}>\r\n"
        "Max-Forwards: 70\r\nExpires: 600\r\nContent-Length: 0\r\n\r\n"
    )


def facts(actions: list[Action]) -> list[object]:
    return [action.event for action in actions if isinstance(action, Deliver)]


def only_response(actions: list[Action]) -> Response:
    [response] = [message for message, _ in sent(actions) if isinstance(message, Response)]
    return response


def attempt(core: SipRouter, user: str, password: str, peer: Peer, n: int) -> tuple[Response, list[object]]:
    """A REGISTER, its challenge, and the answer with ``password``: the final reply and facts."""
    text = register_text(user, peer, f"z9hG4bKg{n}a")
    challenge = only_response(core.receive(text.encode(), peer, NOW + n))
    assert challenge.status == 401
    request = parse_message(register_text(user, peer, f"z9hG4bKg{n}b", 2).encode())
    assert isinstance(request, Request)
    answered = digest_authorization(request, challenge, user, password)
    actions = core.receive(serialize(answered), peer, NOW + n)
    return only_response(actions), facts(actions)


def guarded(**kw: object) -> SipRouter:
    core = make_core()
    core.guard = SourceGuard(SecuritySettings(**kw))  # type: ignore[arg-type]
    return core


def test_a_first_challenge_is_not_a_failure() -> None:
    core = guarded(auth_failures=2)
    for n in range(10):
        actions = core.receive(register_text("alice", GUESSER, f"z9hG4bKc{n}").encode(), GUESSER, NOW)
        [fact] = [f for f in facts(actions) if isinstance(f, AuthenticationRejected)]
        assert (fact.cause, fact.username, fact.is_failure) == (RejectCause.CHALLENGE, None, False)
    assert core.guard is not None and core.guard.bans(NOW) == []


def test_five_wrong_passwords_ban_the_source_on_the_fifth() -> None:
    core = guarded()
    for n in range(4):
        reply, events = attempt(core, "alice", f"guess{n}", GUESSER, n)
        assert reply.status == 401
        [fact] = [f for f in events if isinstance(f, AuthenticationRejected)]
        assert (fact.cause, fact.username, fact.realm, fact.peer) == (
            RejectCause.WRONG_PASSWORD,
            "alice",
            DOMAIN,
            GUESSER,
        )
        assert not any(isinstance(f, Ban) for f in events)
    reply, events = attempt(core, "alice", "guess4", GUESSER, 4)
    assert reply.status == 401  # the same answer as every other failure
    [ban] = [f for f in events if isinstance(f, Ban)]
    assert (ban.host, ban.reason) == (GUESSER.host, BanReason.AUTH)


def test_unknown_user_gets_the_wrong_password_reply_and_counts_too() -> None:
    core = guarded(auth_failures=2)
    unknown, events = attempt(core, "mallory", "x", GUESSER, 0)
    [fact] = [f for f in events if isinstance(f, AuthenticationRejected)]
    assert (unknown.status, fact.cause, fact.username) == (401, RejectCause.UNKNOWN_USER, "mallory")
    _, events = attempt(core, "alice", "x", GUESSER, 1)
    assert any(isinstance(f, Ban) for f in events)


def test_a_locked_out_user_gets_a_challenge_even_with_the_right_password() -> None:
    core = guarded(user_failures=2, auth_failures=100)
    for n in range(2):
        attempt(core, "alice", "guess", Peer(Transport.UDP, f"203.0.113.{n}", 5060), n)
    reply, events = attempt(core, "alice", PASSWORDS["alice"], Peer(Transport.UDP, "192.0.2.50", 5060), 5)
    assert reply.status == 401
    [fact] = [f for f in events if isinstance(f, AuthenticationRejected)]
    assert (fact.cause, fact.username) == (RejectCause.BANNED, "alice")
    # Another user is not affected.
    reply, _ = attempt(core, "bob", PASSWORDS["bob"], Peer(Transport.UDP, "192.0.2.51", 5060), 6)
    assert reply.status == 200


def test_a_full_transaction_table_answers_503_with_retry_after() -> None:
    core = make_core(require_auth=False)
    core.settings = attrs.evolve(core.settings, max_transactions=2)
    for n in range(2):
        actions = core.receive(register_text("alice", GUESSER, f"z9hG4bKt{n}").encode(), GUESSER, NOW)
        assert only_response(actions).status == 200
    actions = core.receive(register_text("alice", GUESSER, "z9hG4bKt9").encode(), GUESSER, NOW)
    busy = only_response(actions)
    assert (busy.status, busy.headers.get("Retry-After")) == (503, "5")
    assert any(isinstance(f, StatelessReply) and f.status == 503 for f in facts(actions))
    # A retransmission of a request whose transaction exists is still absorbed by it.
    again = core.receive(register_text("alice", GUESSER, "z9hG4bKt1").encode(), GUESSER, NOW)
    assert only_response(again).status == 200
