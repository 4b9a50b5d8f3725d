"""RFC 3263 4.3 in the core: a request to a named destination that gets a 503, times out or
meets a transport error goes again, in a new client transaction, while the edge has another
target; the failure is never relayed while targets remain."""

from __future__ import annotations

from scaserver.router.router import SipRouter
from scaserver.sip.actions import Action, Deliver, Send, StartTimer
from scaserver.sip.message import Message, Peer, Request, Response, Transport
from scaserver.sip.responses import make_response
from scaserver.sip.serializer import serialize
from scaserver.sip.serverlocation import NextHopFailed
from scaserver.sip.trust import TrustedPeer
from tests.builders import make_core
from tests.unit.test_dispatch_relay import ALICE, request

PBX = Peer(Transport.UDP, "pbx.example.net", 0)
NOW = 1_000_000.0
CALL = request("INVITE", "sip:bob@elsewhere.example.net").encode()


def core_with(alternatives: int) -> tuple[SipRouter, list[tuple[Peer, str]]]:
    core = make_core(require_auth=False, upstream=PBX, trusted=[TrustedPeer(f"{ALICE.host}/32")])
    asked: list[tuple[Peer, str]] = []
    left = [alternatives]

    def has_alternative(destination: Peer, branch: str) -> bool:
        asked.append((destination, branch))
        left[0] -= 1
        return left[0] >= 0

    core.has_alternative = has_alternative
    return core, asked


def sends(actions: list[Action]) -> list[tuple[Message, Peer]]:
    return [(a.message, a.peer) for a in actions if isinstance(a, Send)]


def invites_to_pbx(actions: list[Action]) -> list[Request]:
    return [m for m, p in sends(actions) if isinstance(m, Request) and m.method == "INVITE" and p == PBX]


def answer(invite: Request, status: int) -> bytes:
    return serialize(make_response(invite, status, to_tag="pbx1"))


def test_a_503_fails_over_to_a_new_transaction_and_is_not_relayed() -> None:
    core, asked = core_with(alternatives=1)
    first = invites_to_pbx(core.receive(CALL, ALICE, NOW))
    assert len(first) == 1
    actions = core.receive(answer(first[0], 503), PBX, NOW + 1)
    retried = invites_to_pbx(actions)
    assert len(retried) == 1
    old_branch = first[0].headers.first_value("Via")
    new_branch = retried[0].headers.first_value("Via")
    assert old_branch != new_branch
    failed = [a.event for a in actions if isinstance(a, Deliver) and isinstance(a.event, NextHopFailed)]
    assert len(failed) == 1
    assert failed[0].destination == PBX and failed[0].reason == "503"
    assert asked == [(PBX, failed[0].branch)]
    assert [m.status for m, p in sends(actions) if isinstance(m, Response) and p == ALICE] == []
    # The 503 itself is acknowledged on its own transaction, to the same destination.
    assert [m.method for m, p in sends(actions) if isinstance(m, Request) and p == PBX] == ["ACK", "INVITE"]
    # The second target answers: its 200 goes to the caller.
    out = core.receive(answer(retried[0], 200), PBX, NOW + 2)
    assert [m.status for m, p in sends(out) if isinstance(m, Response)] == [200]


def test_without_another_target_the_503_is_the_branch_s_answer() -> None:
    core, _ = core_with(alternatives=0)
    first = invites_to_pbx(core.receive(CALL, ALICE, NOW))
    actions = core.receive(answer(first[0], 503), PBX, NOW + 1)
    assert invites_to_pbx(actions) == []
    assert not any(isinstance(a, Deliver) and isinstance(a.event, NextHopFailed) for a in actions)
    # RFC 3261 16.7 step 6: the caller sees a 500, never our 503.
    assert [m.status for m, p in sends(actions) if isinstance(m, Response) and p == ALICE] == [500]


def test_a_transport_error_fails_over() -> None:
    core, _ = core_with(alternatives=1)
    first = invites_to_pbx(core.receive(CALL, ALICE, NOW))
    assert first
    actions = core.connection_lost(PBX, NOW + 0.1)
    failed = [a.event for a in actions if isinstance(a, Deliver) and isinstance(a.event, NextHopFailed)]
    assert [f.reason for f in failed] == ["transport-error"]
    assert len(invites_to_pbx(actions)) == 1


def test_a_numeric_destination_never_fails_over() -> None:
    numeric = Peer(Transport.UDP, "203.0.113.5", 5060)
    core = make_core(require_auth=False, upstream=numeric, trusted=[TrustedPeer(f"{ALICE.host}/32")])
    asked: list[Peer] = []

    def has_alternative(destination: Peer, branch: str) -> bool:
        asked.append(destination)
        return True

    core.has_alternative = has_alternative
    out = core.receive(CALL, ALICE, NOW)
    invite = next(m for m, p in sends(out) if isinstance(m, Request) and p == numeric)
    actions = core.receive(answer(invite, 503), numeric, NOW + 1)
    assert asked == []
    assert [m.status for m, p in sends(actions) if isinstance(m, Response) and p == ALICE] == [500]


def test_failovers_are_bounded() -> None:
    core, _ = core_with(alternatives=100)
    invites = invites_to_pbx(core.receive(CALL, ALICE, NOW))
    tries = 1
    final: list[int] = []
    while invites:
        actions = core.receive(answer(invites[0], 503), PBX, NOW + tries)
        final += [m.status for m, p in sends(actions) if isinstance(m, Response) and p == ALICE]
        invites = invites_to_pbx(actions)
        tries += 1
    assert tries == 10  # the first try and MAX_FAILOVERS (8) more, then the 503 counts
    assert final == [500]


def test_a_timed_out_message_fails_over_within_one_timer_f() -> None:
    core, _ = core_with(alternatives=1)
    text = request("MESSAGE", "sip:bob@elsewhere.example.net").encode()
    actions = core.receive(text, ALICE, NOW)
    first = [m for m, p in sends(actions) if isinstance(m, Request) and p == PBX]
    assert [m.method for m in first] == ["MESSAGE"]
    timer_f = next(a for a in actions if isinstance(a, StartTimer) and a.name == "F")
    assert timer_f.delay == 32.0  # 64 * T1: RFC 3261 Timer F, unchanged
    actions = core.on_timer(timer_f.key, "F", NOW + timer_f.delay)
    failed = [a.event for a in actions if isinstance(a, Deliver) and isinstance(a.event, NextHopFailed)]
    assert [f.reason for f in failed] == ["timeout"]
    retried = [m for m, p in sends(actions) if isinstance(m, Request) and p == PBX]
    assert [m.method for m in retried] == ["MESSAGE"]
    assert retried[0].headers.first_value("Via") != first[0].headers.first_value("Via")
    # No 408 went to the caller: the new transaction is still running.
    assert [m for m, p in sends(actions) if isinstance(m, Response)] == []
