"""A ``sips:`` Request-URI reaches only ``sips:`` contacts over TLS (RFC 3261 26.2.2, RFC 5630)."""

from __future__ import annotations

import pytest

from scaserver.proxy.target import Target
from scaserver.router.transport import secure_targets
from scaserver.sip.errors import TemporarilyUnavailable
from scaserver.sip.message import Peer, Transport

TLS_FLOW = Peer(Transport.TLS, "192.0.2.1", 40000)
UDP_FLOW = Peer(Transport.UDP, "192.0.2.2", 5060)


def test_only_contacts_reached_over_tls_remain() -> None:
    kept = Target("sips:bob@192.0.2.1:40000", flow=TLS_FLOW)
    routed = Target("sips:bob@phone.example")  # no flow: next_hop picks TLS for sips:
    over_tls = Target("sip:bob@192.0.2.1:40000;transport=tls", flow=TLS_FLOW)  # a sip: contact, TLS flow
    targets = [
        kept,
        routed,
        Target("sip:bob@192.0.2.2", flow=UDP_FLOW),
        Target("sips:bob@192.0.2.2", flow=UDP_FLOW),  # a sips: contact registered over UDP
        Target("sip:bob@192.0.2.3;transport=tls"),  # no flow, and not sips:
        over_tls,
    ]
    assert secure_targets(targets) == [kept, routed, over_tls]


def test_no_secure_contact_is_480() -> None:
    with pytest.raises(TemporarilyUnavailable):
        secure_targets([Target("sip:bob@192.0.2.2", flow=UDP_FLOW)])
