"""The owners of client transactions: a table from context type to owner, registered by the
composition root; a request sent with a context nobody owns is our own misuse and raises."""

from __future__ import annotations

import pytest

from scaserver.owners import AnsweredOnBus, ClientFailure, ClientOwners, RequestAnswered
from scaserver.sip.actions import Deliver, SendRequest
from scaserver.sip.errors import ProtocolStateError
from scaserver.sip.message import Headers, Peer, Request, Response, Transport
from tests.builders import make_core

PHONE = Peer(Transport.UDP, "198.51.100.10", 5062)


def options() -> Request:
    fields = Headers.of(
        ("Max-Forwards", "70"),
        ("From", "<sip:example.com>;tag=s1"),
        ("To", "<sip:2001@example.com>"),
        ("Call-ID", "owned-1"),
        ("CSeq", "1 OPTIONS"),
        ("Content-Length", "0"),
    )
    return Request("OPTIONS", f"sip:2001@{PHONE.host}:{PHONE.port}", fields)


def test_a_request_with_a_context_nobody_owns_raises_before_it_is_sent() -> None:
    core = make_core()
    with pytest.raises(ProtocolStateError, match="no owner"):
        core.run([SendRequest(options(), PHONE, "nobody's")], 0.0)
    assert len(core.layer) == 0


def test_the_owner_of_the_context_type_hears_the_outcome() -> None:
    owners = ClientOwners()
    owners.register(str, AnsweredOnBus())
    assert owners.on_response("n1", Response(180, "Ringing"), 0.0) == []
    assert owners.on_response("n1", Response(200, "OK"), 0.0) == [Deliver(RequestAnswered("n1", 200))]
    assert owners.on_failure("n1", ClientFailure.TIMEOUT, 0.0) == [Deliver(RequestAnswered("n1", 408))]
    assert owners.on_failure("n1", ClientFailure.TRANSPORT, 0.0) == [Deliver(RequestAnswered("n1", 503))]


def test_an_owner_is_registered_once_per_context_type() -> None:
    owners = ClientOwners()
    owners.register(str, AnsweredOnBus())
    with pytest.raises(ProtocolStateError, match="already"):
        owners.register(str, AnsweredOnBus())


def test_no_owner_is_a_default() -> None:
    owners = ClientOwners()
    owners.register(str, AnsweredOnBus())
    with pytest.raises(ProtocolStateError, match="no owner"):
        owners.on_response(("a", "tuple"), Response(200, "OK"), 0.0)
