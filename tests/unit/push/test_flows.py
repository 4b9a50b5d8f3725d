"""The connections push devices registered over (push-and-parking.md 6.1 step 2,
``ring_open_flows``)."""

from __future__ import annotations

from scaserver.push.flows import DeviceFlows
from scaserver.sip.message import Peer, Transport

CONNECTION = Peer(Transport.TCP, "192.0.2.71", 40000)
OTHER = Peer(Transport.TLS, "192.0.2.72", 40001)
DATAGRAMS = Peer(Transport.UDP, "192.0.2.73", 5062)


def test_bindings_lose_their_flow_when_their_connection_closes_and_only_theirs() -> None:
    flows = DeviceFlows()
    flows.track("m1", CONNECTION)
    flows.track("m2", CONNECTION)
    flows.track("m3", OTHER)
    flows.closed(CONNECTION)
    assert (flows.is_closed("m1"), flows.is_closed("m2"), flows.is_closed("m3")) == (True, True, False)


def test_registering_over_a_new_connection_opens_the_flow_again() -> None:
    flows = DeviceFlows()
    flows.track("m1", CONNECTION)
    flows.closed(CONNECTION)
    flows.track("m1", OTHER)
    assert not flows.is_closed("m1")
    flows.closed(CONNECTION)  # the old connection is not the binding's any more
    assert not flows.is_closed("m1")


def test_a_binding_over_udp_has_no_connection_to_lose() -> None:
    flows = DeviceFlows()
    flows.track("m1", DATAGRAMS)
    flows.closed(DATAGRAMS)
    assert not flows.is_closed("m1")


def test_a_restored_binding_over_a_stream_has_lost_its_connection_until_it_registers() -> None:
    flows = DeviceFlows()
    flows.track("m1", CONNECTION, open_now=False)
    assert flows.is_closed("m1")
    flows.untrack("m1")
    assert not flows.is_closed("m1")
