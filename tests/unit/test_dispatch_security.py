"""The dispatcher's part in containment: authentication failures (not first challenges) are
counted per source and per user, ban the source and lock the user out; a full transaction
table answers 503 with Retry-After."""

from __future__ import annotations

import attrs

from scaserver.guard.sources import Ban, BanReason, SecuritySettings, SourceGuard
from scaserver.router.authentication import AuthenticationRejected
from scaserver.router.router import SipRouter
from scaserver.router.settings import HELD_PER_IN_PROGRESS
from scaserver.sip.actions import Action, Deliver
from scaserver.sip.digest import RejectCause
from scaserver.sip.endpoint import StatelessReply
from scaserver.sip.keys import ServerKey
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


ALICE_PHONE = Peer(Transport.UDP, "192.0.2.20", 5060)


def invite_text(branch: str) -> str:
    return (
        f"INVITE sip:alice@{DOMAIN} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {GUESSER.host}:{GUESSER.port};branch={branch};rport\r\n"
        f"From: <sip:bob@{DOMAIN}>;tag=f{branch}\r\n"
        f"To: <sip:alice@{DOMAIN}>\r\n"
        f"Call-ID: inv-{branch}\r\n"
        "CSeq: 1 INVITE\r\n"
        f"Contact: <sip:bob@{GUESSER.host}:{GUESSER.port}>\r\n"
        "Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    )


def test_requests_beyond_max_transactions_in_progress_get_503_with_retry_after() -> None:
    core = make_core(require_auth=False)
    core.settings = attrs.evolve(core.settings, max_transactions=2)
    registered = core.receive(register_text("alice", ALICE_PHONE, "z9hG4bKr1").encode(), ALICE_PHONE, NOW)
    assert only_response(registered).status == 200  # answered: settled, not in progress
    # Relayed to alice's phone, unanswered: a server and a client transaction in progress.
    relayed = core.receive(invite_text("z9hG4bKi1").encode(), GUESSER, NOW)
    assert [(m.method, p) for m, p in sent(relayed) if isinstance(m, Request)] == [("INVITE", ALICE_PHONE)]
    assert (core.layer.in_progress, len(core.layer)) == (2, 3)
    actions = core.receive(register_text("alice", GUESSER, "z9hG4bKt9").encode(), GUESSER, NOW)
    busy = only_response(actions)
    assert (busy.status, busy.headers.get("Retry-After")) == (503, "5")
    [refused] = [f for f in facts(actions) if isinstance(f, StatelessReply)]
    assert (refused.status, refused.detail) == (503, "2 transactions in progress")
    # A retransmission of a request whose transaction exists is still absorbed by it (its
    # 100 Trying is not due yet: nothing to send again), not refused.
    again = core.receive(invite_text("z9hG4bKi1").encode(), GUESSER, NOW + 0.1)
    assert sent(again) == []
    assert (core.layer.in_progress, len(core.layer)) == (2, 3)


def test_settled_transactions_are_held_up_to_a_bound_then_new_requests_get_503() -> None:
    """Answered requests leave settled transactions (Timer J: 32 s on UDP); they do not count
    as work in progress, but there may be only so many of them."""
    core = make_core(require_auth=False)
    core.settings = attrs.evolve(core.settings, max_transactions=1)
    for n in range(HELD_PER_IN_PROGRESS):
        actions = core.receive(register_text("alice", GUESSER, f"z9hG4bKt{n}").encode(), GUESSER, NOW)
        assert only_response(actions).status == 200
    assert (core.layer.in_progress, len(core.layer)) == (0, HELD_PER_IN_PROGRESS)
    actions = core.receive(register_text("alice", GUESSER, "z9hG4bKt99").encode(), GUESSER, NOW)
    busy = only_response(actions)
    assert (busy.status, busy.headers.get("Retry-After")) == (503, "5")
    [refused] = [f for f in facts(actions) if isinstance(f, StatelessReply)]
    assert refused.detail == f"{HELD_PER_IN_PROGRESS} transactions held"
    # A retransmission of an answered request is still answered by its transaction.
    again = core.receive(register_text("alice", GUESSER, "z9hG4bKt1").encode(), GUESSER, NOW + 1)
    assert only_response(again).status == 200
    # Timer J ends them: room again.
    for n in range(HELD_PER_IN_PROGRESS):
        core.run(
            core.layer.on_timer(
                ServerKey(f"z9hG4bKt{n}", GUESSER.host, GUESSER.port, "REGISTER"), "J", NOW + 33
            ),
            NOW + 33,
        )
    assert len(core.layer) == 0
    actions = core.receive(register_text("alice", GUESSER, "z9hG4bKt100").encode(), GUESSER, NOW + 33)
    assert only_response(actions).status == 200
