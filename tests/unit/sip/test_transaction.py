"""The four RFC 3261 section 17 machines (with RFC 6026), driven directly: exact action lists."""

from __future__ import annotations

import pytest

from scaserver.sip.clienttransaction import (
    ICT_TRANSITIONS,
    NICT_TRANSITIONS,
    InviteClientTransaction,
    NonInviteClientTransaction,
)
from scaserver.sip.keys import ClientKey, ServerKey
from scaserver.sip.message import Headers, Peer, Request, Response, Transport
from scaserver.sip.servertransaction import (
    IST_TRANSITIONS,
    NIST_TRANSITIONS,
    InviteServerTransaction,
    IstState,
    NistState,
    NonInviteServerTransaction,
)
from scaserver.sip.timers import TimerConfig, TimerName

T = TimerConfig()
UDP = Peer(Transport.UDP, "192.0.2.10", 5060)
TCP = Peer(Transport.TCP, "192.0.2.10", 5060)
CKEY = ClientKey("z9hG4bK-c1", "INVITE")
NCKEY = ClientKey("z9hG4bK-c2", "OPTIONS")
SKEY = ServerKey("z9hG4bK-s1", "192.0.2.10", 5060, "INVITE")
NSKEY = ServerKey("z9hG4bK-s2", "192.0.2.10", 5060, "SUBSCRIBE")


def request(method: str, branch: str, *, cseq: int = 1, route: bool = False) -> Request:
    fields = [("Via", f"SIP/2.0/UDP 192.0.2.10:5060;branch={branch}")]
    if route:
        fields.append(("Route", "<sip:proxy.example.com;lr>"))
    fields += [
        ("Max-Forwards", "70"),
        ("From", "<sip:alice@example.com>;tag=a1"),
        ("To", "<sip:bob@example.com>"),
        ("Call-ID", "call-1@example.com"),
        ("CSeq", f"{cseq} {method}"),
        ("Contact", "<sip:alice@192.0.2.10>"),
    ]
    return Request(method, "sip:bob@example.com", Headers.of(*fields))


INVITE = request("INVITE", CKEY.branch, route=True)
OPTIONS = request("OPTIONS", NCKEY.branch)
SINVITE = request("INVITE", SKEY.branch)
SUBSCRIBE = request("SUBSCRIBE", NSKEY.branch)


def reply(req: Request, status: int, *, tag: str | None = "b1") -> Response:
    headers = Headers.of(
        *((name, value) for name, value in req.headers if name in ("Via", "From", "Call-ID", "CSeq"))
    )
    to = req.headers.get("To") or ""
    headers = headers.add("To", to + (f";tag={tag}" if tag and status > 100 else ""))
    return Response(status, "Reason", headers)


def ict(peer: Peer = UDP) -> InviteClientTransaction:
    tx = InviteClientTransaction(CKEY, INVITE, peer, peer.transport.reliable, T)
    tx.start()
    return tx


def nict(peer: Peer = UDP) -> NonInviteClientTransaction:
    tx = NonInviteClientTransaction(NCKEY, OPTIONS, peer, peer.transport.reliable, T)
    tx.start()
    return tx


def ist(peer: Peer = UDP) -> InviteServerTransaction:
    tx = InviteServerTransaction(SKEY, SINVITE, peer, peer.transport.reliable, T)
    tx.start()
    return tx


def nist(peer: Peer = UDP) -> NonInviteServerTransaction:
    tx = NonInviteServerTransaction(NSKEY, peer, peer.transport.reliable, T)
    tx.start()
    return tx


def state_of(tx: InviteServerTransaction | NonInviteServerTransaction) -> IstState | NistState:
    """The state, read through a call so that mypy does not keep an earlier narrowing."""
    return tx.state


# ------------------------------------------------------------------ tables


EDGES = {
    "ict": [(state.name, target.name) for (state, _), (_, target) in ICT_TRANSITIONS.items()],
    "nict": [(state.name, target.name) for (state, _), (_, target) in NICT_TRANSITIONS.items()],
    "ist": [(state.name, target.name) for (state, _), (_, target) in IST_TRANSITIONS.items()],
    "nist": [(state.name, target.name) for (state, _), (_, target) in NIST_TRANSITIONS.items()],
}


@pytest.mark.parametrize("machine", sorted(EDGES))
def test_tables_end_in_terminated_and_never_leave_it(machine: str) -> None:
    assert all(source != "TERMINATED" for source, _ in EDGES[machine])
    assert any(target == "TERMINATED" for _, target in EDGES[machine])


def test_timer_config_values() -> None:
    assert (T.timeout, T.timer_d(False), T.timer_i(False), T.timer_j(False), T.timer_k(False)) == (
        32.0,
        32.0,
        5.0,
        32.0,
        5.0,
    )
    assert (T.timer_d(True), T.timer_i(True), T.timer_j(True), T.timer_k(True)) == (0.0, 0.0, 0.0, 0.0)
    assert TimerName.TRYING_100 == "TRYING_100"
    assert TimerName("M") is TimerName.M
