"""The router's client transactions hand each outcome to the owner of its context, until the
context is abandoned (an upstream REGISTER given up): then a late answer is stray."""

from __future__ import annotations

import itertools

import attrs

from scaserver.owners import ClientFailure, ClientOwners
from scaserver.proxy.context import BranchKey
from scaserver.router.clients import ClientTransactions
from scaserver.sip.actions import EngineAction, Send
from scaserver.sip.keys import ClientKey, ServerKey
from scaserver.sip.message import Headers, Peer, Request, Response, Transport
from scaserver.sip.responses import make_response
from scaserver.sip.timers import TimerConfig
from scaserver.sip.transactions import TransactionLayer

UPSTREAM = Peer(Transport.UDP, "192.0.2.9", 5060)
NOW = 1000.0


@attrs.frozen
class Upstream:
    name: str


@attrs.define
class Heard:
    answers: list[tuple[Upstream | BranchKey, int]] = attrs.field(factory=list)

    def on_response(
        self, context: Upstream | BranchKey, response: Response, now: float
    ) -> list[EngineAction]:
        self.answers.append((context, response.status))
        return []

    def on_failure(
        self, context: Upstream | BranchKey, failure: ClientFailure, now: float
    ) -> list[EngineAction]:
        return []


def clients(heard: Heard) -> ClientTransactions:
    counter = itertools.count(1)
    layer = TransactionLayer(
        TimerConfig(),
        branch_factory=lambda: f"z9hG4bK{next(counter)}",
        local_via=lambda peer: ("udp", "192.0.2.1", 5060),
    )
    owners = ClientOwners()
    owners.register(Upstream, heard)
    owners.register(BranchKey, heard)
    made = ClientTransactions(layer, lambda: f"u{next(counter)}")
    made.owners = owners
    return made


def register(call_id: str) -> Request:
    fields = Headers.of(
        ("Max-Forwards", "70"),
        ("From", "<sip:alice@example.com>;tag=f1"),
        ("To", "<sip:alice@example.com>"),
        ("Call-ID", call_id),
        ("CSeq", "1 REGISTER"),
    )
    return Request("REGISTER", "sip:upstream.example", fields)


def sent(made: ClientTransactions, request: Request, context: Upstream) -> tuple[ClientKey, Request]:
    actions, _ = made.send(request, UPSTREAM, context, NOW)
    (message,) = [action.message for action in actions if isinstance(action, Send)]
    assert isinstance(message, Request)
    (key,) = [key for key, owned in made.contexts.items() if owned == context]
    return key, message


def test_an_abandoned_context_hears_no_late_answer_and_the_others_still_do() -> None:
    heard = Heard()
    made = clients(heard)
    given_up, kept = Upstream("given-up"), Upstream("kept")
    late_key, late_request = sent(made, register("c1"), given_up)
    kept_key, kept_request = sent(made, register("c2"), kept)
    made.abandon(given_up)
    assert made.on_response(late_key, make_response(late_request, 200, to_tag="t1"), NOW) == []
    made.on_response(kept_key, make_response(kept_request, 200, to_tag="t2"), NOW)
    assert heard.answers == [(kept, 200)]


def message(call_id: str) -> Request:
    fields = Headers.of(
        ("Max-Forwards", "69"),
        ("From", "<sip:alice@example.com>;tag=f1"),
        ("To", "<sip:bob@example.com>"),
        ("Call-ID", call_id),
        ("CSeq", "1 MESSAGE"),
    )
    return Request("MESSAGE", "sip:bob@192.0.2.9", fields)


def test_a_proxied_non_invite_branch_is_forgotten_once_answered_and_ended() -> None:
    heard = Heard()
    made = clients(heard)
    branch = BranchKey(ServerKey("z9hG4bKin1", "192.0.2.7", 5060, "MESSAGE"), 0, "h1")
    actions, _ = made.send(message("m1"), UPSTREAM, branch, NOW)
    (request,) = [action.message for action in actions if isinstance(action, Send)]
    assert isinstance(request, Request)
    key = made.client_of(branch)
    assert key is not None
    made.on_response(key, make_response(request, 200, to_tag="t1"), NOW)
    assert heard.answers == [(branch, 200)]
    made.terminated(key)  # after timer K
    assert made.contexts == {}
    assert made.branches == {}
