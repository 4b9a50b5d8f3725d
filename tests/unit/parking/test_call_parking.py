"""Call parking between the router and the parking lot (push-and-parking.md 6.1, 6.4, 6.5,
6.10), on its own: what it asks the router to carry out, exact actions."""

from __future__ import annotations

import attrs

from scaserver.parking.calls import CallParking, ForkInstead, ParkPlan, fallback_tag
from scaserver.parking.events import ParkRejected
from scaserver.parking.instructions import CancelParkedBranch
from scaserver.proxy.context import BranchKey, CancelBranch
from scaserver.proxy.routing import Interface, ProxyIdentity
from scaserver.push.service import PushService, PushServiceSettings
from scaserver.registrar.location import LocationService
from scaserver.sip.actions import Deliver
from scaserver.sip.message import Transport
from scaserver.sip.responses import make_response
from tests.unit.parking.test_parked import DESK, INVITE, MOBILE, TOKEN1, TX, lot, spec

IDENTITY = ProxyIdentity((Interface(Transport.UDP, "192.0.2.1", 5060),))
BRANCH = BranchKey(TX, 1, "loop")


def parking(**settings: object) -> CallParking:
    push = PushService(PushServiceSettings(), LocationService(), IDENTITY, lambda: "refresh-1")
    return CallParking(lot(**settings), push, IDENTITY)


def test_a_call_over_a_parking_limit_is_forked_instead_with_a_480_to_fall_back_on() -> None:
    refused = parking(max_total=0).park(ParkPlan(spec(), (DESK, MOBILE), (TOKEN1,)), 5.0)
    fallback = make_response(INVITE, 480, to_tag=fallback_tag(INVITE))
    forked = ForkInstead(TX, (DESK, MOBILE), fallback)
    assert refused == [Deliver(ParkRejected(TX, "max_total", 5.0)), Deliver(forked)]


def test_requests_other_than_invite_and_calls_with_parking_off_are_never_planned() -> None:
    message = attrs.evolve(INVITE, method="MESSAGE")
    assert parking().plan(message, TX, aor="sip:200@example.com", bindings=(), now=0.0) is None
    switched_off = attrs.evolve(parking(), enabled=False)
    assert switched_off.plan(INVITE, TX, aor="sip:200@example.com", bindings=(), now=0.0) is None


def test_an_invite_without_push_capable_bindings_is_ordinary_forking() -> None:
    assert parking().plan(INVITE, TX, aor="sip:200@example.com", bindings=(), now=0.0) is None


def test_a_started_branch_is_cancelled_by_its_index_until_the_call_is_released() -> None:
    calls = parking()
    calls.branches_started(TX, 2, [BRANCH])
    cancel = CancelParkedBranch(TX, 2, "SIP;cause=200")
    assert calls.handle(cancel, 0.0) == [Deliver(CancelBranch(BRANCH, "SIP;cause=200"))]
    calls.forget_branches(TX)
    assert calls.handle(cancel, 0.0) == []


def test_a_provisional_on_a_branch_parking_does_not_know_is_relayed_as_it_is() -> None:
    ringing = make_response(INVITE, 180, to_tag="desk")
    assert parking().on_branch_provisional(BRANCH, ringing, 0.0) == (ringing, [])


def test_nothing_is_relayed_for_a_request_that_was_never_held() -> None:
    assert parking().relay_held(TX) is None
