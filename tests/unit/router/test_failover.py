"""RFC 3263 section 4.3 bookkeeping: which failed client transactions go again, and how often
(the router's use of it is in tests/unit/test_dispatch_failover.py)."""

from __future__ import annotations

from scaserver.router.failover import MAX_FAILOVERS, Failover
from scaserver.sip.keys import ClientKey
from scaserver.sip.message import Headers, Peer, Request, Transport

NAMED = Peer(Transport.UDP, "pbx.example.net", 5060)
NUMERIC = Peer(Transport.UDP, "192.0.2.9", 5060)
REQUEST = Request("OPTIONS", "sip:pbx.example.net", Headers.of(("CSeq", "1 OPTIONS")), b"")


def always(destination: Peer, branch: str) -> bool:
    return True


def never(destination: Peer, branch: str) -> bool:
    return False


def test_a_request_to_a_name_goes_again_while_the_locator_has_another_target() -> None:
    failover = Failover()
    key = ClientKey("z9hG4bK1", "OPTIONS")
    failover.remember(key, REQUEST, NAMED, "owner", failover.attempt_of("owner"))
    assert failover.next_try(key, always) == (REQUEST, NAMED, "owner", 0)
    assert failover.next_try(key, always) is None  # forgotten once taken
    failover.retrying("owner", 0)
    assert failover.attempt_of("owner") == 1
    assert failover.attempt_of("owner") == 0  # read once, by the next transaction


def test_no_failover_without_another_target() -> None:
    failover = Failover()
    key = ClientKey("z9hG4bK1", "OPTIONS")
    failover.remember(key, REQUEST, NAMED, "owner", 0)
    assert failover.next_try(key, never) is None


def test_no_failover_for_a_numeric_address_a_cancel_or_a_settled_transaction() -> None:
    failover = Failover()
    numeric, cancel, settled = (
        ClientKey("b1", "OPTIONS"),
        ClientKey("b2", "CANCEL"),
        ClientKey("b3", "OPTIONS"),
    )
    failover.remember(numeric, REQUEST, NUMERIC, "owner", 0)
    failover.remember(cancel, Request("CANCEL", REQUEST.uri, REQUEST.headers, b""), NAMED, "owner", 0)
    failover.remember(settled, REQUEST, NAMED, "owner", 0)
    failover.forget(settled)
    assert [failover.next_try(key, always) for key in (numeric, cancel, settled)] == [None, None, None]


def test_failover_stops_after_the_limit() -> None:
    failover = Failover()
    key = ClientKey("z9hG4bK9", "OPTIONS")
    failover.remember(key, REQUEST, NAMED, "owner", MAX_FAILOVERS)
    assert failover.next_try(key, always) is None
