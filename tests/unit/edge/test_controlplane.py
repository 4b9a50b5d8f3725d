"""The control seams over a real SipRouter (rpc.md 3.2-3.3, sca.md section 11).

A real ScaEngine and Registrar inside ``make_core()``; members subscribe and register through
the core with SIP text; ``execute`` records the edge actions and publishes their facts on the bus
as the stack does; ``task.Clock`` is the reactor.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Coroutine
from typing import Any, TypeVar

import attrs
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.task import Clock
from twisted.python.failure import Failure

from scaserver.control.catalogue import build_registry
from scaserver.control.dispatcher import Dispatcher
from scaserver.control.notifywatch import NotifyWatch
from scaserver.control.registry import Caller, Scope
from scaserver.control.scaview import EngineScaGauges
from scaserver.control.seams import (
    AorRecord,
    AppearanceChange,
    AppearanceInfo,
    AppearanceRefusal,
    AppearanceStateName,
    ContactRemoval,
    Deactivation,
    LineInfo,
    PushInfo,
    ResyncOutcome,
    ScaEvent,
    SubscriptionInfo,
)
from scaserver.control.system import ServerInfo
from scaserver.control.views import canonical_argument, contact_matches
from scaserver.edge.controlplane import (
    EngineScaControl,
    RegistrarLocationControl,
    SipProvisioningControl,
)
from scaserver.events import EventBus
from scaserver.metrics.counters import Metrics
from scaserver.owners import RequestAnswered
from scaserver.registrar.binding import BindingRemoved, RemovalReason
from scaserver.router.router import SipRouter
from scaserver.sca.line import SharedLine
from scaserver.sca.subscription import (
    Package,
    Subscription,
    SubscriptionNotified,
    SubscriptionRemoved,
)
from scaserver.sip.actions import Action, Deliver, Send
from scaserver.sip.message import Peer, Request, Response, Transport
from scaserver.sip.parser import parse_message
from scaserver.sip.responses import make_response
from scaserver.sip.serializer import serialize
from tests.builders import DOMAIN, Wire, make_core
from tests.unit.control.fakes import check_result

NOW = 1_732_450_000.0
LINE = f"sip:2001@{DOMAIN}"
ALICE = Peer(Transport.UDP, "198.51.100.10", 5062)
BOB = Peer(Transport.UDP, "198.51.100.20", 5064)
ALICE_CONTACT = "sip:alice@198.51.100.10:5062"
BOB_CONTACT = "sip:bob@198.51.100.20:5064"
MEMBERS = frozenset({"alice", "bob", "carol"})  # who may subscribe to LINE (sca.md 3.2 row 6)

T = TypeVar("T")


@attrs.define
class Rig:
    """A core, a bus, a clock, and the three seam implementations over them."""

    core: SipRouter
    notify_wait_s: float = 2.0
    clock: Clock = attrs.field(factory=Clock)
    bus: EventBus = attrs.field(factory=EventBus)
    executed: list[Action] = attrs.field(factory=list)
    published: list[object] = attrs.field(factory=list)
    flushed: list[str] = attrs.field(factory=list)
    sca: EngineScaControl = attrs.field(init=False)
    location: RegistrarLocationControl = attrs.field(init=False)
    gauges: EngineScaGauges = attrs.field(init=False)
    wire: Wire = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self.clock.advance(NOW)
        self.wire = Wire(self.core, now=NOW)
        self.sca = EngineScaControl(
            self.core,
            self.execute,
            self.bus,
            self.clock,
            default_domain=DOMAIN.upper(),
            flush=self._flush_sca,
            notify_wait_s=self.notify_wait_s,
        )
        self.location = RegistrarLocationControl(
            self.core, self.execute, self.clock, default_domain=DOMAIN, flush=self._flush_location
        )
        self.gauges = EngineScaGauges(self.core)

    async def _flush_sca(self) -> int:
        self.flushed.append("sca")
        return 7

    def _flush_location(self) -> Deferred[None]:
        self.flushed.append("location")
        return Deferred.fromCoroutine(_nothing())

    def execute(self, actions: list[Action]) -> None:
        """The stack's ``run``, minus sockets and timers: record, and publish facts."""
        self.executed += actions
        for action in actions:
            if isinstance(action, Deliver):
                self.published.append(action.event)
                self.bus.publish(action.event)

    def receive(self, message: Response, peer: Peer) -> None:
        """A message from the network, as the stack hands it to the core."""
        self.execute(self.core.receive(serialize(message), peer, self.clock.seconds()))

    def notifies(self) -> list[tuple[Request, Peer]]:
        """The NOTIFYs the edge was asked to send, re-parsed, in order."""
        found = []
        for action in self.executed:
            if isinstance(action, Send):
                message = parse_message(serialize(action.message))
                if isinstance(message, Request) and message.method == "NOTIFY":
                    found.append((message, action.peer))
        return found

    def answer_notifies(self, status: int = 200, only: Peer | None = None) -> None:
        """Answer the NOTIFYs sent so far (to ``only``); answered ones leave ``executed``."""
        chosen = [(n, p) for n, p in self.notifies() if only is None or p == only]
        self.executed = [
            a for a in self.executed if not (isinstance(a, Send) and a.peer in {p for _, p in chosen})
        ]
        for notify, peer in chosen:
            self.receive(make_response(notify, status), peer)

    def subscribe(self, user: str, peer: Peer, event: str = "call-info", extra: str = "") -> None:
        """A member subscribes to the line through the core; its first NOTIFY is answered 200."""
        text = (
            f"SUBSCRIBE {LINE} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {peer.host}:{peer.port};branch=z9hG4bK-{event}-{user};rport\r\n"
            "Max-Forwards: 70\r\n"
            f"From: <sip:{user}@{DOMAIN}>;tag=ft-{user}\r\n"
            f"To: <{LINE}>\r\n"
            f"Call-ID: {event}-{user}\r\n"
            "CSeq: 1 SUBSCRIBE\r\n"
            f"Contact: <sip:{user}@{peer.host}:{peer.port}>\r\n"
            f"Event: {event}\r\n"
            "Expires: 3600\r\n"
            f"{extra}"
            "Content-Length: 0\r\n\r\n"
        )
        out = self.wire.deliver(text, peer)
        statuses = [m.status for m, _ in out if isinstance(m, Response)]
        assert statuses and 200 <= statuses[0] < 300, out
        for message, to in out:
            if isinstance(message, Request) and message.method == "NOTIFY":
                self.wire.send(make_response(message, 200), to)

    def register(self, user: str, peer: Peer, contact_params: str = "", user_agent: str = "") -> None:
        """A REGISTER through the core (no digest: ``require_auth=False``); ``user_agent`` is a
        whole header line or empty."""
        text = (
            f"REGISTER sip:{DOMAIN} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {peer.host}:{peer.port};branch=z9hG4bK-reg-{user}-{peer.port};rport\r\n"
            "Max-Forwards: 70\r\n"
            f"From: <sip:{user}@{DOMAIN}>;tag=rt-{user}\r\n"
            f"To: <sip:{user}@{DOMAIN}>\r\n"
            f"Call-ID: reg-{user}-{peer.port}\r\n"
            "CSeq: 5 REGISTER\r\n"
            f"Contact: <sip:{user}@{peer.host}:{peer.port}{contact_params}>\r\n"
            f"{user_agent}"
            "Expires: 600\r\n"
            "Content-Length: 0\r\n\r\n"
        )
        out = self.wire.deliver(text, peer)
        assert [m.status for m, _ in out if isinstance(m, Response)] == [200], out


async def _nothing() -> None:
    return None


def settled(coroutine: Coroutine[Any, Any, T]) -> Deferred[T]:
    return ensureDeferred(coroutine)


def result_or_failure(deferred: Deferred[T]) -> T | Failure:
    outcome: list[T | Failure] = []
    deferred.addBoth(outcome.append)
    assert outcome, "still waiting"
    return outcome[0]


def result_of(deferred: Deferred[T]) -> T:
    outcome: list[T | Failure] = []
    deferred.addBoth(outcome.append)
    assert outcome, "still waiting"
    value = outcome[0]
    if isinstance(value, Failure):
        value.raiseException()
    assert not isinstance(value, Failure)
    return value


def seized_rig(**kw: Any) -> Rig:
    rig = Rig(make_core(require_auth=False, lines=[SharedLine(LINE, 0, MEMBERS)], **kw))
    rig.subscribe("alice", ALICE)
    rig.subscribe("bob", BOB)
    return rig


def call_info(notify: Request) -> str:
    return notify.headers.get("Call-Info") or ""


# ---------------------------------------------------------------- argument canonicalisation


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2001", LINE),
        ("2001@EXAMPLE.com", LINE),
        (" sip:2001@Example.COM:5060;transport=udp ", LINE),
        ("SIP:2001@example.com", LINE),
        ("sips:2001@example.com", "sip:2001@example.com"),
        ("2001@example.com:5070", "sip:2001@example.com:5070"),
        ("", None),
        ("tel:+15551234", None),
        ("sip:@", None),
    ],
)
def test_canonical_argument(text: str, expected: str | None) -> None:
    assert canonical_argument(text, DOMAIN) == expected


def test_contact_matches_text_or_equivalent_uri() -> None:
    assert contact_matches(ALICE_CONTACT, f" {ALICE_CONTACT} ")
    assert not contact_matches(ALICE_CONTACT, "sip:alice@198.51.100.10:5062;transport=tcp")
    assert contact_matches(ALICE_CONTACT, "SIP:alice@198.51.100.10:5062")
    assert not contact_matches(ALICE_CONTACT, "sip:alice@198.51.100.10")
    assert not contact_matches(ALICE_CONTACT, "<<not a uri")


# ---------------------------------------------------------------- seize, with group NOTIFY


def test_seize_notifies_every_call_info_subscriber_of_the_line() -> None:
    rig = seized_rig()
    pending = settled(rig.sca.seize_appearance("2001", ALICE_CONTACT))
    notifies = rig.notifies()
    assert sorted(str(peer) for _, peer in notifies) == sorted([str(ALICE), str(BOB)])
    for notify, _ in notifies:
        assert "appearance-index=1;appearance-state=seized" in call_info(notify)
        assert notify.headers.get("Event") == "call-info"
    rig.clock.advance(1.9)
    assert not pending.called  # no NOTIFY answered yet: the window stays open
    rig.clock.advance(0.1)
    change = result_of(pending)
    assert change == AppearanceChange(
        AppearanceInfo(
            aor=LINE,
            index=1,
            state=AppearanceStateName.SEIZED,
            owner=ALICE_CONTACT,
            ctime=NOW,
            mtime=NOW,
        ),
        (),
    )
    assert rig.clock.getDelayedCalls() == []  # the window's timer is gone (SIP timers are not armed here)
    assert [app.index for app in rig.sca.all_appearances()] == [1]


def test_seize_answers_as_soon_as_every_notify_got_its_2xx() -> None:
    rig = seized_rig()
    pending = settled(rig.sca.seize_appearance(LINE, ALICE_CONTACT))
    rig.answer_notifies(200)
    change = result_of(pending)
    assert isinstance(change, AppearanceChange) and change.notify_failed == ()
    assert rig.clock.seconds() == NOW


def test_seize_takes_the_lowest_free_index() -> None:
    rig = Rig(make_core(require_auth=False), notify_wait_s=0)
    first = result_of(settled(rig.sca.seize_appearance(LINE, ALICE_CONTACT)))
    second = result_of(settled(rig.sca.seize_appearance(LINE, BOB_CONTACT)))
    assert isinstance(first, AppearanceChange) and isinstance(second, AppearanceChange)
    assert (first.appearance.index, second.appearance.index) == (1, 2)
    assert rig.notifies() == []  # nobody subscribed: nothing to send, nothing awaited


def test_seize_refusals() -> None:
    rig = Rig(make_core(require_auth=False, lines=[SharedLine(LINE, 1, MEMBERS)]), notify_wait_s=0)
    assert isinstance(result_of(settled(rig.sca.seize_appearance(LINE, ALICE_CONTACT))), AppearanceChange)
    refused = result_of(settled(rig.sca.seize_appearance(LINE, BOB_CONTACT)))
    assert refused is AppearanceRefusal.NO_FREE_INDEX
    assert result_of(settled(rig.sca.seize_appearance("tel:2001", BOB_CONTACT))) is AppearanceRefusal.NO_LINE


def test_notify_failures_within_the_window_are_reported_and_end_the_wait() -> None:
    rig = seized_rig()
    pending = settled(rig.sca.seize_appearance(LINE, ALICE_CONTACT))
    assert not pending.called
    rig.answer_notifies(481, only=BOB)
    assert not pending.called  # alice's NOTIFY is still open
    rig.answer_notifies(403)
    change = result_of(pending)  # every NOTIFY settled: no need to wait for the clock
    assert isinstance(change, AppearanceChange)
    assert change.notify_failed == (BOB_CONTACT, ALICE_CONTACT)
    assert rig.sca.subscription_count(ScaEvent.CALL_INFO) == 0
    assert rig.clock.seconds() == NOW
    assert rig.clock.getDelayedCalls() == []  # the window's timer was cancelled


def test_a_2xx_and_a_failure_settle_the_wait_at_once() -> None:
    rig = seized_rig()
    pending = settled(rig.sca.seize_appearance(LINE, ALICE_CONTACT))
    rig.answer_notifies(200, only=ALICE)
    assert not pending.called  # bob's NOTIFY is still open
    rig.answer_notifies(481, only=BOB)
    assert rig.clock.seconds() == NOW
    change = result_of(pending)
    assert isinstance(change, AppearanceChange)
    assert change.notify_failed == (BOB_CONTACT,)


def test_failures_after_the_window_are_not_reported_and_nothing_stays_subscribed() -> None:
    rig = seized_rig()
    pending = settled(rig.sca.seize_appearance(LINE, ALICE_CONTACT))
    rig.clock.advance(2.0)
    change = result_of(pending)
    rig.answer_notifies(481)
    assert isinstance(change, AppearanceChange) and change.notify_failed == ()
    assert rig.bus._handlers.get(SubscriptionRemoved, []) == []  # the watch has left the bus
    assert rig.bus._handlers.get(SubscriptionNotified, []) == []


def test_cancelled_wait_leaves_the_bus_and_the_clock() -> None:
    rig = seized_rig()
    pending = settled(rig.sca.seize_appearance(LINE, ALICE_CONTACT))
    pending.cancel()
    outcome = result_or_failure(pending)
    assert isinstance(outcome, Failure)
    assert rig.clock.getDelayedCalls() == []
    assert rig.bus._handlers.get(SubscriptionRemoved, []) == []
    assert [app.state for app in rig.sca.all_appearances()] == [AppearanceStateName.SEIZED]


def test_zero_wait_answers_at_once() -> None:
    rig = Rig(make_core(require_auth=False, lines=[SharedLine(LINE, 0, MEMBERS)]), notify_wait_s=0)
    rig.subscribe("alice", ALICE)
    change = result_of(settled(rig.sca.seize_appearance(LINE, ALICE_CONTACT)))
    assert isinstance(change, AppearanceChange) and change.notify_failed == ()
    assert [peer for _, peer in rig.notifies()] == [ALICE]


def test_negative_wait_is_refused() -> None:
    core = make_core()
    with pytest.raises(ValueError, match="notify_wait_s"):
        EngineScaControl(
            core,
            lambda actions: None,
            EventBus(),
            Clock(),
            default_domain=DOMAIN,
            flush=_seven,
            notify_wait_s=-1,
        )


async def _seven() -> int:
    return 7


# ---------------------------------------------------------------- NotifyWatch


def _sub(contact: str, cseq: int = 1) -> Subscription:
    return Subscription(contact, LINE, Package.CALL_INFO, NOW + 60, "c", "f", "t", notify_cseq=cseq)


def test_watch_reports_an_unroutable_subscriber_while_collecting_only() -> None:
    watch = NotifyWatch()
    watch.observe([Deliver(SubscriptionRemoved(_sub(ALICE_CONTACT), "notify-failed"))])
    watch.collecting = False
    watch.removed(SubscriptionRemoved(_sub(BOB_CONTACT), "notify-failed"))  # someone else's NOTIFY
    assert list(watch.failed) == [ALICE_CONTACT]
    assert not watch.open


def test_watch_settles_on_a_later_notify_and_ignores_repeats() -> None:
    watch = NotifyWatch()
    watch.notified(SubscriptionNotified(_sub(ALICE_CONTACT, 2)))
    watch.collecting = False
    watch.notified(SubscriptionNotified(_sub(ALICE_CONTACT, 2)))  # the stack publishing it again
    watch.notified(SubscriptionNotified(_sub(BOB_CONTACT, 9)))  # not ours
    assert watch.open
    watch.notified(SubscriptionNotified(_sub(ALICE_CONTACT, 3)))
    assert not watch.open and not watch.failed
    watch.removed(SubscriptionRemoved(_sub(ALICE_CONTACT, 3), "timeout"))
    assert not watch.failed


# ---------------------------------------------------------------- update, release


def test_update_forces_the_state_and_notifies_the_group() -> None:
    rig = seized_rig()
    rig.sca = EngineScaControl(
        rig.core, rig.execute, rig.bus, rig.clock, default_domain=DOMAIN, flush=_seven, notify_wait_s=0
    )
    result_of(settled(rig.sca.seize_appearance(LINE, ALICE_CONTACT)))
    rig.answer_notifies()
    rig.clock.advance(5)
    change = result_of(
        settled(
            rig.sca.update_appearance(LINE, 1, AppearanceStateName.ACTIVE, '"Carol" <sip:carol@example.net>')
        )
    )
    assert isinstance(change, AppearanceChange)
    assert change.appearance == AppearanceInfo(
        aor=LINE,
        index=1,
        state=AppearanceStateName.ACTIVE,
        owner=ALICE_CONTACT,
        callee="sip:carol@example.net",
        appearance_uri='"Carol" <sip:carol@example.net>',
        ctime=NOW,
        mtime=NOW + 5,
    )
    notifies = rig.notifies()
    assert sorted(str(peer) for _, peer in notifies) == sorted([str(ALICE), str(BOB)])
    assert all("appearance-state=active" in call_info(n) for n, _ in notifies)


def test_update_to_idle_releases() -> None:
    rig = Rig(make_core(require_auth=False), notify_wait_s=0)
    result_of(settled(rig.sca.seize_appearance(LINE, ALICE_CONTACT)))
    change = result_of(settled(rig.sca.update_appearance("2001", 1, AppearanceStateName.IDLE, None)))
    assert change == AppearanceChange(AppearanceInfo(aor=LINE, index=1, state=AppearanceStateName.IDLE))
    assert rig.sca.all_appearances() == []


def test_update_refusals() -> None:
    rig = Rig(make_core(require_auth=False), notify_wait_s=0)
    held = AppearanceStateName.HELD
    assert result_of(settled(rig.sca.update_appearance(LINE, 1, held, None))) is AppearanceRefusal.NO_LINE
    assert result_of(settled(rig.sca.update_appearance("x@", 1, held, None))) is AppearanceRefusal.NO_LINE
    result_of(settled(rig.sca.seize_appearance(LINE, ALICE_CONTACT)))
    for index in (2, 0, -1):
        refused = result_of(settled(rig.sca.update_appearance(LINE, index, held, None)))
        assert refused is AppearanceRefusal.NOT_IN_USE
    assert rig.sca.all_appearances()[0].state is AppearanceStateName.SEIZED


def test_release_frees_the_index_and_notifies_the_group() -> None:
    rig = seized_rig()
    first = settled(rig.sca.seize_appearance(LINE, ALICE_CONTACT))
    rig.answer_notifies()
    rig.clock.advance(2)
    assert isinstance(result_of(first), AppearanceChange)
    pending = settled(rig.sca.release_appearance(LINE, 1))
    notifies = rig.notifies()
    assert sorted(str(peer) for _, peer in notifies) == sorted([str(ALICE), str(BOB)])
    assert all("appearance-index=1" not in call_info(n) for n, _ in notifies)
    rig.clock.advance(2)
    assert result_of(pending) == AppearanceChange(
        AppearanceInfo(aor=LINE, index=1, state=AppearanceStateName.IDLE)
    )
    assert rig.sca.all_appearances() == []


def test_release_refusals() -> None:
    rig = Rig(make_core(require_auth=False), notify_wait_s=0)
    assert result_of(settled(rig.sca.release_appearance(LINE, 1))) is AppearanceRefusal.NO_LINE
    rig.subscribe("2001", ALICE)  # its own user subscribing makes the AoR a line (sca.md 3.6)
    assert result_of(settled(rig.sca.release_appearance(LINE, 1))) is AppearanceRefusal.NOT_IN_USE


# ---------------------------------------------------------------- subscriptions


def test_subscription_reads_map_engine_values() -> None:
    rig = seized_rig()
    rig.subscribe(
        "carol",
        Peer(Transport.UDP, "198.51.100.30", 5066),
        "line-seize",
        extra=f"Call-Info: <sip:{DOMAIN}>;appearance-index=2\r\n",
    )
    found = rig.sca.all_subscriptions()
    assert [(s.event, s.contact) for s in found] == [
        (ScaEvent.CALL_INFO, ALICE_CONTACT),
        (ScaEvent.CALL_INFO, BOB_CONTACT),
        (ScaEvent.LINE_SEIZE, "sip:carol@198.51.100.30:5066"),
    ]
    alice = found[0]
    assert alice == SubscriptionInfo(
        aor=LINE,
        event=ScaEvent.CALL_INFO,
        subscriber=f"sip:alice@{DOMAIN}",
        contact=ALICE_CONTACT,
        state="active",
        expires_at=NOW + 3600,
        call_id="call-info-alice",
        from_tag="ft-alice",
        to_tag=alice.to_tag,
        notify_cseq=alice.notify_cseq,
        subscribe_cseq=1,
        appearance_index=None,
    )
    engine_alice = next(sub for sub in rig.core.sca.subscriptions() if sub.subscriber == ALICE_CONTACT)
    assert (alice.to_tag, alice.notify_cseq) == (engine_alice.to_tag, engine_alice.notify_cseq)
    assert alice.to_tag and alice.notify_cseq >= 1
    assert found[2].appearance_index == 2
    assert found[2].expires_at == NOW + 15  # line-seize max expires
    assert rig.sca.subscription_count(ScaEvent.CALL_INFO) == 2
    assert rig.sca.subscription_count(ScaEvent.LINE_SEIZE) == 1
    assert rig.sca.show_subscription("2001", ScaEvent.CALL_INFO, None) == found[:2]
    assert rig.sca.show_subscription(LINE, ScaEvent.CALL_INFO, "SIP:bob@198.51.100.20:5064") == [found[1]]
    assert rig.sca.show_subscription(LINE, ScaEvent.LINE_SEIZE, BOB_CONTACT) == []
    assert rig.sca.show_subscription("sip:2002@example.com", ScaEvent.CALL_INFO, None) == []


def test_deactivate_all_sends_terminating_notifies_and_removes() -> None:
    rig = seized_rig()
    before = rig.sca.all_subscriptions()
    pending = settled(rig.sca.deactivate_all_subscriptions())
    ended = result_of(pending)  # terminating NOTIFYs are not awaited (nothing reports on them)
    assert ended == Deactivation(tuple(before), ())
    assert rig.sca.all_subscriptions() == []
    notifies = rig.notifies()
    assert sorted(str(peer) for _, peer in notifies) == sorted([str(ALICE), str(BOB)])
    assert all(n.headers.get("Subscription-State") == "terminated;reason=deactivated" for n, _ in notifies)
    removed = [e for e in rig.published if isinstance(e, SubscriptionRemoved)]
    assert {e.reason for e in removed} == {"deactivated"}


def test_deactivate_one_subscription() -> None:
    rig = seized_rig()
    bob = rig.sca.show_subscription(LINE, ScaEvent.CALL_INFO, BOB_CONTACT)[0]
    missing = result_of(settled(rig.sca.deactivate_subscription(LINE, ScaEvent.LINE_SEIZE, BOB_CONTACT)))
    assert missing is None
    ended = result_of(settled(rig.sca.deactivate_subscription("2001", ScaEvent.CALL_INFO, BOB_CONTACT)))
    assert ended == Deactivation((bob,), ())
    assert [s.contact for s in rig.sca.all_subscriptions()] == [ALICE_CONTACT]
    assert [peer for _, peer in rig.notifies()] == [BOB]


def test_deactivating_a_line_seize_frees_its_appearance_and_notifies_the_group() -> None:
    rig = seized_rig()
    rig.subscribe(
        "carol",
        Peer(Transport.UDP, "198.51.100.30", 5066),
        "line-seize",
        extra=f"Call-Info: <sip:{DOMAIN}>;appearance-index=1\r\n",
    )
    rig.executed.clear()
    pending = settled(
        rig.sca.deactivate_subscription(LINE, ScaEvent.LINE_SEIZE, "sip:carol@198.51.100.30:5066")
    )
    assert sorted(peer.host for _, peer in rig.notifies()) == [
        "198.51.100.10",
        "198.51.100.20",
        "198.51.100.30",
    ]
    rig.answer_notifies(481, only=ALICE)
    rig.clock.advance(2)
    ended = result_of(pending)
    assert ended is not None and ended.notify_failed == (ALICE_CONTACT,)
    assert rig.sca.all_appearances() == []


# ---------------------------------------------------------------- appearances read, flush, gauges


def test_show_appearance_lists_idle_indexes_of_a_provisioned_line() -> None:
    rig = Rig(make_core(require_auth=False, lines=[SharedLine(LINE, 3, MEMBERS)]), notify_wait_s=0)
    empty = rig.sca.show_appearance("2001")
    assert empty == LineInfo(
        LINE, 3, tuple(AppearanceInfo(LINE, i, AppearanceStateName.IDLE) for i in (1, 2, 3))
    )
    result_of(settled(rig.sca.seize_appearance(LINE, ALICE_CONTACT)))
    line = rig.sca.show_appearance(LINE)
    assert line is not None
    assert [a.state for a in line.appearances] == [
        AppearanceStateName.SEIZED,
        AppearanceStateName.IDLE,
        AppearanceStateName.IDLE,
    ]


def test_show_appearance_of_an_unlimited_line_lists_used_indexes_only() -> None:
    rig = Rig(make_core(require_auth=False), notify_wait_s=0)
    assert rig.sca.show_appearance(LINE) is None
    assert rig.sca.show_appearance("tel:1") is None
    for owner in (ALICE_CONTACT, BOB_CONTACT):
        result_of(settled(rig.sca.seize_appearance(LINE, owner)))
    result_of(settled(rig.sca.release_appearance(LINE, 1)))
    line = rig.sca.show_appearance(LINE)
    assert line is not None and line.max_appearances == 0
    assert [(a.index, a.owner) for a in line.appearances] == [(2, BOB_CONTACT)]


def test_flush_returns_the_injected_count() -> None:
    rig = Rig(make_core())
    assert result_of(settled(rig.sca.flush())) == 7
    assert result_of(settled(rig.location.flush())) is None
    assert rig.flushed == ["sca", "location"]


def test_gauges_count_subscriptions_and_appearances() -> None:
    rig = Rig(make_core(require_auth=False, lines=[SharedLine(LINE, 0, MEMBERS)]), notify_wait_s=0)
    assert rig.gauges.subscriptions_by_event() == {"call-info": 0, "line-seize": 0}
    assert set(rig.gauges.appearances_by_state().values()) == {0}
    rig.subscribe("alice", ALICE)
    rig.subscribe("bob", BOB)
    rig.subscribe(
        "carol",
        Peer(Transport.UDP, "198.51.100.30", 5066),
        "line-seize",
        extra=f"Call-Info: <sip:{DOMAIN}>;appearance-index=3\r\n",
    )
    result_of(settled(rig.sca.seize_appearance(LINE, ALICE_CONTACT)))
    result_of(settled(rig.sca.seize_appearance(LINE, BOB_CONTACT)))
    result_of(settled(rig.sca.update_appearance(LINE, 2, AppearanceStateName.HELD_PRIVATE, None)))
    assert rig.gauges.subscriptions_by_event() == {"call-info": 2, "line-seize": 1}
    assert rig.gauges.appearances_by_state() == {
        "seized": 2,
        "progressing": 0,
        "alerting": 0,
        "active": 0,
        "held": 0,
        "held-private": 1,
    }
    scraped = generate_latest(Metrics(CollectorRegistry(), sca=rig.gauges).registry).decode()
    assert 'scaserver_sca_subscriptions{event="call-info"} 2.0' in scraped
    assert 'scaserver_sca_appearances{state="held-private"} 1.0' in scraped


# ---------------------------------------------------------------- usrloc


def registered_rig() -> Rig:
    rig = Rig(make_core(require_auth=False))
    rig.register(
        "alice", ALICE, ";pn-provider=apns;pn-prid=TOKEN123;pn-param=team.voip", "User-Agent: Polycom/6.3\r\n"
    )
    rig.register("alice", Peer(Transport.UDP, "198.51.100.11", 5070))
    rig.register("bob", BOB)
    return rig


def test_dump_and_lookup_map_bindings() -> None:
    rig = registered_rig()
    dumped = rig.location.dump()
    assert [record.aor for record in dumped] == [f"alice@{DOMAIN}", f"bob@{DOMAIN}"]
    alice = rig.location.lookup("alice")
    assert alice == dumped[0]
    assert rig.location.lookup(f"sip:alice@{DOMAIN.upper()}") == alice
    assert isinstance(alice, AorRecord) and len(alice.contacts) == 2
    pushed = next(c for c in alice.contacts if c.push is not None)
    assert (
        pushed.address == "sip:alice@198.51.100.10:5062;pn-provider=apns;pn-prid=TOKEN123;pn-param=team.voip"
    )
    assert pushed.expires_at == NOW + 600
    assert (pushed.call_id, pushed.cseq, pushed.q) == ("reg-alice-5062", 5, None)
    assert pushed.user_agent == "Polycom/6.3"
    assert pushed.received == "udp:198.51.100.10:5062"
    assert pushed.last_modified == NOW
    assert pushed.push == PushInfo("apns", hashlib.sha256(b"TOKEN123").hexdigest(), "team.voip")
    assert "TOKEN123" not in repr(pushed.push)
    assert rig.location.lookup("carol") is None
    assert rig.location.lookup("tel:+1555") is None


def test_rm_removes_every_contact_administratively() -> None:
    rig = registered_rig()
    assert result_of(settled(rig.location.rm("alice@example.com"))) is True
    assert rig.location.lookup("alice") is None
    removed = [e for e in rig.published if isinstance(e, BindingRemoved)]
    assert len(removed) == 2 and {e.reason for e in removed} == {RemovalReason.ADMINISTRATIVE}
    assert result_of(settled(rig.location.rm("alice"))) is False
    assert result_of(settled(rig.location.rm(""))) is False
    assert [record.aor for record in rig.location.dump()] == [f"bob@{DOMAIN}"]


def test_rm_contact() -> None:
    rig = registered_rig()
    assert result_of(settled(rig.location.rm_contact("carol", "sip:carol@x"))) is ContactRemoval.NO_AOR
    assert result_of(settled(rig.location.rm_contact("bob", ALICE_CONTACT))) is ContactRemoval.NO_CONTACT
    gone = result_of(settled(rig.location.rm_contact("alice", "sip:alice@198.51.100.11:5070")))
    assert gone is ContactRemoval.REMOVED
    alice = rig.location.lookup("alice")
    assert alice is not None and [c.received for c in alice.contacts] == ["udp:198.51.100.10:5062"]
    assert any(isinstance(a, Deliver) and isinstance(a.event, BindingRemoved) for a in rig.executed)


# ---------------------------------------------------------------- through the JSON-RPC registry

ADMIN = Caller(peer="127.0.0.1:40000", scope=Scope.ADMIN, transport="http")
SERVER = ServerInfo(version="scaserver test", pid=1, listen=(), db="sqlite", started_at=NOW)


def rpc(rig: Rig, method: str, params: list[Any]) -> Deferred[dict[str, Any]]:
    registry = build_registry(sca=rig.sca, location=rig.location, server=SERVER, clock=rig.clock.seconds)
    dispatcher = Dispatcher(
        registry, clock=rig.clock.seconds, audit=lambda record: None, on_failure=lambda method, error: None
    )
    body = json.dumps({"jsonrpc": "2.0", "method": method, "params": params, "id": 1}).encode()

    async def go() -> dict[str, Any]:
        reply = await dispatcher.dispatch(body, ADMIN)
        assert reply.body is not None
        envelope: dict[str, Any] = json.loads(reply.body)
        return envelope

    return ensureDeferred(go())


def test_seize_and_all_appearances_through_the_registry() -> None:
    rig = seized_rig()
    pending = rpc(rig, "sca.seize_appearance", ["2001", ALICE_CONTACT])
    assert sorted(str(peer) for _, peer in rig.notifies()) == sorted([str(ALICE), str(BOB)])
    rig.answer_notifies(481, only=BOB)
    rig.clock.advance(2)
    seized = result_of(pending)["result"]
    check_result("sca.seize_appearance", seized)
    assert seized == {
        "aor": LINE,
        "index": 1,
        "state": "seized",
        "owner": ALICE_CONTACT,
        "callee": None,
        "appearance_uri": None,
        "call_id": None,
        "member_tag": None,
        "remote_tag": None,
        "role": None,
        "ctime": int(NOW),
        "mtime": int(NOW),
        "notify_failed": [BOB_CONTACT],
    }
    listed = result_of(rpc(rig, "sca.all_appearances", []))["result"]
    check_result("sca.all_appearances", listed)
    assert listed == [{key: value for key, value in seized.items() if key != "notify_failed"}]
    shown = result_of(rpc(rig, "sca.show_appearance", [LINE]))["result"]
    check_result("sca.show_appearance", shown)
    subs = result_of(rpc(rig, "sca.all_subscriptions", []))["result"]
    check_result("sca.all_subscriptions", subs)
    assert [s["contact"] for s in subs] == [ALICE_CONTACT]


def test_usrloc_through_the_registry() -> None:
    rig = registered_rig()
    dumped = result_of(rpc(rig, "ul.dump", []))["result"]
    check_result("ul.dump", dumped)
    found = result_of(rpc(rig, "ul.lookup", ["location", "alice"]))["result"]
    check_result("ul.lookup", found)
    assert found["AoR"] == f"alice@{DOMAIN}"
    assert {c["Contact"]["Received"] for c in found["Contacts"]} == {
        "udp:198.51.100.10:5062",
        "udp:198.51.100.11:5070",
    }
    missing = result_of(rpc(rig, "ul.lookup", ["location", "carol"]))
    assert missing["error"]["message"] == "AOR not found in location table"


# prov.resync (provisioning.md 4.5)


def resync_rig(lines: dict[str, list[str]]) -> tuple[Rig, SipProvisioningControl]:
    rig = Rig(make_core(require_auth=False))

    async def device_lines(mac: str) -> list[str] | None:
        return lines.get(mac)

    counter = iter(range(1000))
    control = SipProvisioningControl(
        rig.core,
        rig.execute,
        rig.bus,
        rig.clock,
        device_lines=device_lines,
        local_uri="sip:192.0.2.1:5060",
        unique=lambda: f"r{next(counter)}",
    )
    return rig, control


def check_syncs(rig: Rig) -> list[tuple[Request, Peer]]:
    return [(n, p) for n, p in rig.notifies() if n.headers.get("Event") == "check-sync"]


def test_resync_notifies_every_registered_contact_of_the_device_lines() -> None:
    rig, control = resync_rig({"0004f2aabbcc": [f"sip:alice@{DOMAIN}"]})
    rig.register("alice", ALICE)
    pending = settled(control.resync("0004f2aabbcc"))
    [(notify, peer)] = check_syncs(rig)
    assert peer == ALICE and notify.uri == ALICE_CONTACT
    assert notify.headers.get("Subscription-State") == "terminated"
    assert not pending.called
    rig.answer_notifies(200)
    assert result_of(pending) == (ResyncOutcome(ALICE_CONTACT, 200),)
    assert rig.bus._handlers.get(RequestAnswered, []) == []


def test_resync_reports_408_for_a_contact_that_never_answers() -> None:
    rig, control = resync_rig({"0004f2aabbcc": [f"sip:alice@{DOMAIN}"]})
    rig.register("alice", ALICE)
    pending = settled(control.resync("0004f2aabbcc"))
    rig.clock.advance(5.0)
    assert result_of(pending) == (ResyncOutcome(ALICE_CONTACT, 408),)
    assert rig.clock.getDelayedCalls() == []


def test_resync_of_an_unknown_device_or_one_with_nobody_registered() -> None:
    rig, control = resync_rig({"0004f2aabbcc": [f"sip:alice@{DOMAIN}"]})
    assert result_of(settled(control.resync("000000000000"))) is None
    assert result_of(settled(control.resync("0004f2aabbcc"))) == ()
    assert check_syncs(rig) == []


def test_prov_resync_through_the_registry_and_its_404() -> None:
    rig, control = resync_rig({"0004f2aabbcc": [f"sip:alice@{DOMAIN}"]})
    rig.register("alice", ALICE)
    registry = build_registry(
        sca=rig.sca, location=rig.location, server=SERVER, clock=rig.clock.seconds, provisioning=control
    )
    dispatcher = Dispatcher(
        registry, clock=rig.clock.seconds, audit=lambda record: None, on_failure=lambda method, error: None
    )

    async def call(mac: str) -> dict[str, Any]:
        body = json.dumps({"jsonrpc": "2.0", "method": "prov.resync", "params": [mac], "id": 1}).encode()
        reply = await dispatcher.dispatch(body, ADMIN)
        assert reply.body is not None
        envelope: dict[str, Any] = json.loads(reply.body)
        return envelope

    pending = ensureDeferred(call("0004f2aabbcc"))
    rig.answer_notifies(200)
    result = result_of(pending)["result"]
    check_result("prov.resync", result)
    assert result == [{"contact": ALICE_CONTACT, "status": 200}]
    missing = result_of(ensureDeferred(call("aa")))
    assert missing["error"]["code"] == 404 and missing["error"]["message"] == "Device not found"


def test_seize_by_an_alias_of_the_line_seizes_the_line() -> None:
    """sca.md Q26: an RPC naming a line by one of its aliases reaches the line itself."""
    rig = Rig(make_core(require_auth=False, lines=[SharedLine(LINE, 1, MEMBERS)]), notify_wait_s=0)
    rig.core.set_aliases({f"sip:100@{DOMAIN}": LINE})
    seized = result_of(settled(rig.sca.seize_appearance(f"sip:100@{DOMAIN}", ALICE_CONTACT)))
    assert isinstance(seized, AppearanceChange)
    assert seized.appearance.aor == LINE
    refused = result_of(settled(rig.sca.seize_appearance(LINE, BOB_CONTACT)))
    assert refused is AppearanceRefusal.NO_FREE_INDEX
