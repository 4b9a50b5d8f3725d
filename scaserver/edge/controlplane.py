"""The control plane's seams implemented over the running SIP core (rpc.md 2-3, sca.md section 11).

``control`` and ``metrics`` speak to the engines through Protocols (``control.seams.ScaControl``,
``control.seams.LocationControl``, ``control.seams.ParkingControl``,
``control.seams.StatisticsControl``, ``metrics.ScaGauges``, ``metrics.ParkingGauges``); this
module implements them over the lead's :class:`~scaserver.dispatch.SipRouter` (and
``control.security.SecurityControl`` over the source guard, ``directory.reload`` over the
directory watch):

* reads are synchronous snapshots of the engines' in-memory state, mapped to the seams' frozen
  values by the pure functions of :mod:`scaserver.control.views`;
* mutations go through the engines' own management entry points (``ScaEngine.seize_appearance``,
  ``update_appearance``, ``release_appearance``, ``deactivate``; ``LocationService.remove``), so
  an RPC takes the same rows of the appearance table (sca.md 6, rule ``RPC``) and sends the same
  group NOTIFYs (sca.md 4.1) as SIP would.  Their actions are run through the transaction layer
  (``SipRouter.run``) and the edge actions that come back are handed to ``execute`` (the stack's
  ``run``): NOTIFYs are on the wire before the RPC answers (rpc.md 3.2).

``notify_failed`` (rpc.md 3.2): after executing, a mutating SCA call watches the bus for up to
``notify_wait_s`` seconds for the fate of the NOTIFYs it sent.  A contact is reported when the
engine removes its subscription with reason ``notify-failed`` (a 481, another final 4xx-6xx
without Retry-After, a transaction time-out or transport error, or no route at all; sca.md 4
"NOTIFY outcome") within that window.  A NOTIFY counts as settled when its subscription is
removed, when the subscriber answers it with a 2xx (``NotifyAnswered``), or when the next
NOTIFY of the same dialog goes out (the engine sends it only after a final response); the RPC
answers as soon as every NOTIFY it caused has settled, or when the window closes.
Failures that come later (a UDP NOTIFY times out after 64*T1 = 32 s, RFC 3261 17.1.2.2) are not
reported, nor are failures of the terminating NOTIFYs of a deactivation (the subscription is
gone before that NOTIFY is sent, so nothing about it is published).  ``notify_wait_s = 0``
reports only the failures known while the actions run (no route to the subscriber).
"""

from __future__ import annotations

import zlib
from collections.abc import Awaitable, Callable, Hashable, Iterable, Mapping, Sequence, Set
from typing import Final, TypeVar

import attrs
from prometheus_client import CollectorRegistry
from twisted.internet.defer import Deferred
from twisted.logger import Logger

from scaserver.control.seams import (
    UAC_FLAG_AUTHSENT,
    UAC_FLAG_INIT,
    UAC_FLAG_ONGOING,
    UAC_FLAG_ONLINE,
    AorRecord,
    AppearanceChange,
    AppearanceInfo,
    AppearanceRefusal,
    AppearanceStateName,
    ContactRemoval,
    Deactivation,
    LineInfo,
    ParkedCallInfo,
    ParkedTransaction,
    ResyncOutcome,
    ScaEvent,
    Statistic,
    SubscriptionInfo,
    UacRefusal,
    UacRegistration,
    UpstreamInfo,
    WakeOutcome,
)
from scaserver.control.security import BanView
from scaserver.control.views import (
    appearance_info,
    canonical_argument,
    contact_info,
    contact_matches,
    idle_appearance,
    parked_call_info,
    statistic_group,
    subscription_info,
    usrloc_aor,
)
from scaserver.dispatch import SipRouter
from scaserver.edge.directorywatch import DirectoryWatch
from scaserver.edge.stack import DelayedCall, TimerClock, call_later
from scaserver.edge.tcp import SipStreamFactory
from scaserver.events import EventBus
from scaserver.guard.sources import SourceGuard
from scaserver.metrics import NAMESPACE
from scaserver.owners import RequestAnswered
from scaserver.provisioning.resync import check_sync_request
from scaserver.push.facts import PushAnswered, PushRequested
from scaserver.push.pnparams import strip_pn_params
from scaserver.registrar.binding import Binding, BindingKey, RemovalReason
from scaserver.registrar.midregistrar import MidRegistrar, Mode, UpstreamRegistration
from scaserver.registrar.upstream import UpstreamState
from scaserver.sca.appearance import Appearance, AppearanceState
from scaserver.sca.engine import AppearanceError
from scaserver.sca.subscription import (
    NotifyAnswered,
    Package,
    Subscription,
    SubscriptionKey,
    SubscriptionNotified,
    SubscriptionRemoved,
)
from scaserver.sip.actions import Action, Deliver, EngineAction, SendRequest
from scaserver.sip.message import Peer
from scaserver.sip.uri import SipUri, format_host, parse_uri

Execute = Callable[[list[Action]], None]
"""Runs edge actions (the stack's ``run``): sends, timers, bus events."""

FactT = TypeVar("FactT")
KeyT = TypeVar("KeyT", bound=Hashable)

#: How long a mutating SCA call waits for the outcome of its NOTIFYs by default (seconds).
NOTIFY_WAIT_S: Final = 2.0

#: The reason the SCA engine gives when it drops a subscription whose NOTIFY failed.
NOTIFY_FAILED: Final = "notify-failed"

#: How long ``pushreg.wake`` waits for the gateway's answers by default (seconds): the push
#: client's own limits (3 attempts of 2 s with back-off, push-and-parking.md 5.3) fit in it.
WAKE_WAIT_S: Final = 10.0


# NOTIFY outcomes.


async def collect_facts(
    bus: EventBus,
    clock: TimerClock,
    kind: type[FactT],
    *,
    key_of: Callable[[FactT], KeyT | None],
    expected: Set[KeyT],
    wait_s: float,
    start: Callable[[], None],
) -> dict[KeyT, FactT]:
    """Run ``start`` (which sends requests or pushes) and collect the ``kind`` fact answering
    each of the ``expected`` keys (``key_of`` a fact; None: not ours), until all are in or
    ``wait_s`` has passed: what an RPC waits for before it answers (rpc.md 3)."""
    answers: dict[KeyT, FactT] = {}
    done: Deferred[None] = Deferred()

    def answered(fact: FactT) -> None:
        key = key_of(fact)
        if key is not None and key in expected:
            answers[key] = fact
            if len(answers) == len(expected) and not done.called:
                done.callback(None)

    def window_closed() -> None:
        if not done.called:
            done.callback(None)

    bus.subscribe(kind, answered)
    timer = call_later(clock, wait_s, window_closed)
    try:
        start()
        if expected and len(answers) < len(expected):
            await done
    finally:
        bus.unsubscribe(kind, answered)
        if timer.active():
            timer.cancel()
    return answers


@attrs.define
class NotifyWatch:
    """The NOTIFYs one RPC sent, followed on the bus until each settles or the window closes.

    While the RPC's actions run (``collecting``) every NOTIFY sent to a live subscription is
    watched; afterwards only the watched ones matter.  See the module docstring for what
    "settled" and "failed" mean.
    """

    watched: dict[SubscriptionKey, int] = attrs.field(factory=dict)
    settled: set[SubscriptionKey] = attrs.field(factory=set)
    failed: dict[str, None] = attrs.field(factory=dict)
    collecting: bool = True
    done: Deferred[None] | None = None

    def notified(self, event: SubscriptionNotified) -> None:
        sub = event.subscription
        cseq = self.watched.get(sub.key)
        if cseq is None:
            if self.collecting:
                self.watched[sub.key] = sub.notify_cseq
        elif sub.notify_cseq > cseq:
            self._settle(sub.key)

    def answered(self, event: NotifyAnswered) -> None:
        cseq = self.watched.get(event.subscription.key)
        if cseq is not None and event.cseq >= cseq:
            self._settle(event.subscription.key)

    def removed(self, event: SubscriptionRemoved) -> None:
        key = event.subscription.key
        if key not in self.watched and not self.collecting:
            return
        if event.reason == NOTIFY_FAILED:
            self.failed[event.subscription.subscriber] = None
        if key in self.watched:
            self._settle(key)

    def observe(self, actions: Iterable[Action]) -> None:
        """Take the facts of an action list (the same ones the stack publishes; seen twice,
        they change nothing)."""
        for action in actions:
            if isinstance(action, Deliver):
                event = action.event
                if isinstance(event, SubscriptionNotified):
                    self.notified(event)
                elif isinstance(event, SubscriptionRemoved):
                    self.removed(event)

    @property
    def open(self) -> bool:
        """Some watched NOTIFY has not settled."""
        return any(key not in self.settled for key in self.watched)

    def _settle(self, key: SubscriptionKey) -> None:
        self.settled.add(key)
        if self.done is not None and not self.open and not self.done.called:
            self.done.callback(None)


# The seams.


class EngineScaControl:
    """``control.seams.ScaControl`` over the SCA engine of a running core."""

    def __init__(
        self,
        core: SipRouter,
        execute: Execute,
        bus: EventBus,
        clock: TimerClock,
        *,
        default_domain: str,
        flush: Callable[[], Awaitable[int]],
        notify_wait_s: float = NOTIFY_WAIT_S,
    ) -> None:
        if notify_wait_s < 0:
            raise ValueError("notify_wait_s must not be negative")
        self._core, self._execute, self._bus, self._clock = core, execute, bus, clock
        self._domain = default_domain.lower()
        self._flush = flush
        self._wait = notify_wait_s

    def _aor(self, text: str) -> str | None:
        aor = canonical_argument(text, self._domain)
        if aor is None:
            return None
        return dict(self._core.sca.settings.aliases).get(aor, aor)  # sca.md Q26 line aliases

    # Reads.

    def all_subscriptions(self) -> Sequence[SubscriptionInfo]:
        infos = [subscription_info(sub) for sub in self._core.sca.subscriptions()]
        return sorted(infos, key=lambda info: (info.aor, info.event.value, info.contact))

    def subscription_count(self, event: ScaEvent) -> int:
        return sum(1 for sub in self._core.sca.subscriptions() if sub.event.value == event.value)

    def _find(self, aor: str, event: ScaEvent, contact: str | None) -> list[Subscription]:
        line = self._aor(aor)
        found = [
            sub
            for sub in self._core.sca.subscriptions()
            if sub.aor == line
            and sub.event.value == event.value
            and (contact is None or contact_matches(sub.subscriber, contact))
        ]
        return sorted(found, key=lambda sub: sub.subscriber)

    def show_subscription(self, aor: str, event: ScaEvent, contact: str | None) -> Sequence[SubscriptionInfo]:
        return [subscription_info(sub) for sub in self._find(aor, event, contact)]

    def all_appearances(self) -> Sequence[AppearanceInfo]:
        return [appearance_info(app) for app in self._core.sca.appearances()]

    def show_appearance(self, aor: str) -> LineInfo | None:
        line_aor = self._aor(aor)
        engine = self._core.sca
        if line_aor is None or not engine.is_sca(line_aor):
            return None
        limit = engine.line(line_aor).appearances
        used = {app.index: appearance_info(app) for app in engine.appearances(line_aor)}
        indexes = sorted(set(range(1, limit + 1)) | set(used)) if limit > 0 else sorted(used)
        slots = tuple(used.get(index) or idle_appearance(line_aor, index) for index in indexes)
        return LineInfo(aor=line_aor, max_appearances=limit, appearances=slots)

    # Mutations.

    async def deactivate_all_subscriptions(self) -> Deactivation:
        subs = sorted(self._core.sca.subscriptions(), key=lambda s: (s.aor, s.event.value, s.subscriber))
        return await self._deactivate(subs)

    async def deactivate_subscription(self, aor: str, event: ScaEvent, contact: str) -> Deactivation | None:
        found = self._find(aor, event, contact)
        if not found:
            return None
        return await self._deactivate(found[:1])

    async def _deactivate(self, subs: list[Subscription]) -> Deactivation:
        infos = tuple(subscription_info(sub) for sub in subs)
        now = self._clock.seconds()
        actions = self._core.sca.deactivate([sub.key for sub in subs], now)
        failed = await self._run(actions, now)
        return Deactivation(infos, failed)

    async def seize_appearance(self, aor: str, owner: str) -> AppearanceChange | AppearanceRefusal:
        line_aor = self._aor(aor)
        if line_aor is None:
            return AppearanceRefusal.NO_LINE
        now = self._clock.seconds()
        try:
            index, actions = self._core.sca.seize_appearance(line_aor, owner.strip(), now)
        except AppearanceError:
            return AppearanceRefusal.NO_FREE_INDEX
        seized = self._core.sca.appearance(line_aor, index)
        info = appearance_info(seized) if seized is not None else idle_appearance(line_aor, index)
        return AppearanceChange(info, await self._run(actions, now))

    def _in_use(self, aor: str, index: int) -> tuple[str, Appearance] | AppearanceRefusal:
        line_aor = self._aor(aor)
        engine = self._core.sca
        if line_aor is None or not engine.is_sca(line_aor):
            return AppearanceRefusal.NO_LINE
        app = engine.appearance(line_aor, index) if index >= 1 else None
        if app is None:
            return AppearanceRefusal.NOT_IN_USE
        return line_aor, app

    async def update_appearance(
        self, aor: str, index: int, state: AppearanceStateName, appearance_uri: str | None
    ) -> AppearanceChange | AppearanceRefusal:
        found = self._in_use(aor, index)
        if isinstance(found, AppearanceRefusal):
            return found
        line_aor, _ = found
        now = self._clock.seconds()
        actions = self._core.sca.update_appearance(line_aor, index, state.value, now, uri=appearance_uri)
        after = self._core.sca.appearance(line_aor, index)
        info = appearance_info(after) if after is not None else idle_appearance(line_aor, index)
        return AppearanceChange(info, await self._run(actions, now))

    async def release_appearance(self, aor: str, index: int) -> AppearanceChange | AppearanceRefusal:
        found = self._in_use(aor, index)
        if isinstance(found, AppearanceRefusal):
            return found
        line_aor, _ = found
        now = self._clock.seconds()
        actions = self._core.sca.release_appearance(line_aor, index, now)
        return AppearanceChange(idle_appearance(line_aor, index), await self._run(actions, now))

    async def flush(self) -> int:
        return await self._flush()

    async def _run(self, actions: list[EngineAction], now: float) -> tuple[str, ...]:
        """Run engine actions through the core and the edge; the contacts whose NOTIFY failed."""
        edge = self._core.run(actions, now)
        watch = NotifyWatch()
        watch.observe(edge)
        self._bus.subscribe(SubscriptionNotified, watch.notified)
        self._bus.subscribe(SubscriptionRemoved, watch.removed)
        self._bus.subscribe(NotifyAnswered, watch.answered)
        try:
            self._execute(edge)
            watch.collecting = False
            if self._wait > 0 and watch.open:
                await self._settled(watch)
        finally:
            self._bus.unsubscribe(SubscriptionNotified, watch.notified)
            self._bus.unsubscribe(SubscriptionRemoved, watch.removed)
            self._bus.unsubscribe(NotifyAnswered, watch.answered)
        return tuple(watch.failed)

    def _settled(self, watch: NotifyWatch) -> Deferred[None]:
        """Fires when every watched NOTIFY has settled or ``notify_wait_s`` has passed."""
        done: Deferred[None] = Deferred()
        watch.done = done

        def close() -> None:
            if not done.called:
                done.callback(None)

        timer: DelayedCall = call_later(self._clock, self._wait, close)

        def stop_timer(result: None) -> None:
            if timer.active():
                timer.cancel()
            return result

        done.addBoth(stop_timer)
        return done


class RegistrarLocationControl:
    """``control.seams.LocationControl`` over the registrar's location service of a running core."""

    def __init__(
        self,
        core: SipRouter,
        execute: Execute,
        clock: TimerClock,
        *,
        default_domain: str,
        flush: Callable[[], Awaitable[object]],
    ) -> None:
        self._core, self._execute, self._clock = core, execute, clock
        self._domain = default_domain.lower()
        self._flush = flush

    def _bindings(self, aor: str) -> tuple[Binding, ...]:
        """The AoR's bindings, dormant push-only ones included (push-and-parking.md 4.5; they
        show ``Expires: "expired"``)."""
        push = self._core.push
        return self._core.registrar.location.bindings(aor) if push is None else push.bindings_of(aor)

    def _record(self, aor: str) -> AorRecord | None:
        bindings = self._bindings(aor)
        if not bindings:
            return None
        push, now = self._core.push, self._clock.seconds()
        contacts = tuple(
            contact_info(b, None if push is None else push.device(b.key), now=now) for b in bindings
        )
        return AorRecord(aor=usrloc_aor(aor), contacts=contacts)

    def _remove(self, key: BindingKey, now: float) -> list[EngineAction]:
        push = self._core.push
        if push is None:
            return self._core.registrar.location.remove(key, RemovalReason.ADMINISTRATIVE, now)
        return push.drop_binding(key, RemovalReason.ADMINISTRATIVE, now)

    def dump(self) -> Sequence[AorRecord]:
        aors = set(self._core.registrar.location.aors())
        if self._core.push is not None:
            aors |= self._core.push.dormant_aors()
        records = (self._record(aor) for aor in sorted(aors))
        return [record for record in records if record is not None]

    def lookup(self, aor: str) -> AorRecord | None:
        canonical = canonical_argument(aor, self._domain)
        return None if canonical is None else self._record(canonical)

    async def rm(self, aor: str) -> bool:
        canonical = canonical_argument(aor, self._domain)
        bindings = () if canonical is None else self._bindings(canonical)
        if not bindings:
            return False
        now = self._clock.seconds()
        actions: list[EngineAction] = []
        for binding in bindings:
            actions += self._remove(binding.key, now)
        self._apply(actions, now)
        return True

    async def rm_contact(self, aor: str, contact: str) -> ContactRemoval:
        canonical = canonical_argument(aor, self._domain)
        bindings = () if canonical is None else self._bindings(canonical)
        if not bindings:
            return ContactRemoval.NO_AOR
        match = next((b for b in bindings if contact_matches(b.contact, contact)), None)
        if match is None:
            return ContactRemoval.NO_CONTACT
        now = self._clock.seconds()
        self._apply(self._remove(match.key, now), now)
        return ContactRemoval.REMOVED

    async def flush(self) -> None:
        await self._flush()

    def _apply(self, actions: list[EngineAction], now: float) -> None:
        self._execute(self._core.run(actions, now))


class EngineRegistrarGauges:
    """``metrics.RegistrarGauges`` over the location service (dormant push-only bindings, which
    are not reachable, are not counted)."""

    def __init__(self, core: SipRouter) -> None:
        self._core = core

    def registered_contacts(self) -> int:
        return len(self._core.registrar.location)


class EngineScaGauges:
    """``metrics.ScaGauges`` over the SCA engine: counted at scrape time, every series present."""

    def __init__(self, core: SipRouter) -> None:
        self._core = core

    def subscriptions_by_event(self) -> Mapping[str, int]:
        counts = dict.fromkeys((package.value for package in Package), 0)
        for sub in self._core.sca.subscriptions():
            counts[sub.event.value] += 1
        return counts

    def appearances_by_state(self) -> Mapping[str, int]:
        names = (name.value for name in AppearanceStateName if name is not AppearanceStateName.IDLE)
        counts = dict.fromkeys(names, 0)
        for app in self._core.sca.appearances():
            if app.state is not AppearanceState.IDLE:
                counts[app.state.wire] += 1
        return counts


class MobileParkingControl:
    """``control.seams.ParkingControl`` over the parking lot and mid-registrar of a running core
    (rpc.md 3.4, 3.5).  ``Tlabel`` is the parked call's number, ``Tindex`` a CRC of its
    Call-ID: opaque integers, stable while the call is parked."""

    def __init__(self, core: SipRouter, *, default_domain: str) -> None:
        self._core = core
        self._domain = default_domain.lower()

    def parked(self) -> Sequence[ParkedTransaction]:
        parking = self._core.parking
        if parking is None:
            return ()
        found: list[ParkedTransaction] = []
        for call in parking.lot.calls():
            label = int(call.park_id.rpartition("-")[2] or 0)
            index = zlib.crc32(call.spec.call_id.encode("utf-8")) & 0xFFFF
            for aor in call.spec.aors:
                found.append(ParkedTransaction(usrloc_aor(aor), index, label, call.spec.call_id))
        return sorted(found, key=lambda item: (item.ruri, item.tlabel))

    def registrations(self) -> Sequence[UpstreamInfo]:
        push = self._core.push
        if push is None or push.midregistrar is None:
            return ()
        regs = sorted(push.midregistrar.registrations(), key=lambda reg: reg.aor)
        return [self._info(reg) for reg in regs]

    def registration(self, aor: str) -> UpstreamInfo | None:
        push = self._core.push
        canonical = canonical_argument(aor, self._domain)
        if push is None or push.midregistrar is None or canonical is None:
            return None
        reg = push.midregistrar.registration(canonical)
        return None if reg is None else self._info(reg)

    def _info(self, reg: UpstreamRegistration) -> UpstreamInfo:
        push = self._core.push
        assert push is not None and push.midregistrar is not None
        last_ok = None if reg.renewed_at == float("-inf") else reg.renewed_at
        return UpstreamInfo(
            aor=reg.aor,
            mode=push.midregistrar.settings.mode.value,
            state=reg.state.value,
            expires_at=reg.expires_at,
            last_ok=last_ok,
            last_error=reg.last_error,
            upstream_auth_needed=reg.upstream_auth_needed,
        )


def _peer_uri(peer: Peer) -> str:
    return f"sip:{format_host(peer.host)}:{peer.port};transport={peer.transport.value.lower()}"


class MobileParkingAdmin(MobileParkingControl):
    """The whole ``control.seams.ParkingControl``: the reads of :class:`MobileParkingControl`
    plus ``park.*``, ``pushreg.wake`` and ``uac.*`` over the running core.

    Mutations go through the engines' own entry points (``ParkingLot.release``,
    ``PushService.refresh_push``, ``MidRegistrar.refresh_now``); their actions run through the core
    and the edge (``execute``) before the RPC answers, like ``EngineScaControl``'s.
    ``pushreg.wake`` then watches the bus for the ``PushAnswered`` fact of each push it sent
    (the edge push client reports every attempt's last word) for up to ``wake_wait_s``.
    """

    def __init__(
        self,
        core: SipRouter,
        execute: Execute,
        bus: EventBus,
        clock: TimerClock,
        *,
        default_domain: str,
        wake_wait_s: float = WAKE_WAIT_S,
    ) -> None:
        super().__init__(core, default_domain=default_domain)
        if wake_wait_s < 0:
            raise ValueError("wake_wait_s must not be negative")
        self._execute, self._bus, self._clock = execute, bus, clock
        self._wake_wait_s = wake_wait_s

    # park.*

    def parked_calls(self, ruri: str | None = None) -> Sequence[ParkedCallInfo]:
        parking = self._core.parking
        if parking is None:
            return ()
        if ruri is None:
            calls = parking.lot.calls()
        else:
            aor = canonical_argument(ruri, self._domain)
            calls = () if aor is None else parking.lot.calls(aor)
        settings = parking.lot.settings
        return [parked_call_info(call, settings) for call in sorted(calls, key=lambda c: c.park_id)]

    async def release(self, call_id: str, status: int) -> ParkedCallInfo | None:
        parking = self._core.parking
        if parking is None:
            return None
        call = next((c for c in parking.lot.calls() if c.spec.call_id == call_id), None)
        if call is None:
            return None
        info = parked_call_info(call, parking.lot.settings)
        now = self._clock.seconds()
        actions = parking.lot.release(call_id, status, now)
        if actions is None:
            return None
        self._execute(self._core.run(actions, now))
        return info

    # pushreg.wake

    async def wake(self, aor: str, reason: str) -> Sequence[WakeOutcome] | None:
        push = self._core.push
        canonical = canonical_argument(aor, self._domain)
        if push is None or canonical is None:
            return None
        bindings = push.bindings_of(canonical)
        if not bindings:
            return None
        now = self._clock.seconds()
        actions: list[EngineAction] = []
        rows: list[tuple[str, str, str | None]] = []  # contact, provider, attempt (None: suppressed)
        attempts: dict[tuple[str, str], str | None] = {}
        for binding in bindings:
            device = push.device(binding.key)
            if device is None or not device.push_capable:
                continue
            if device.token not in attempts:
                pushed = push.refresh_push(device, reason, now)
                actions += pushed
                sent = [
                    action.event.request.id
                    for action in pushed
                    if isinstance(action, Deliver) and isinstance(action.event, PushRequested)
                ]
                attempts[device.token] = sent[0] if sent else None
            contact = strip_pn_params(binding.contact)
            rows.append((contact, device.coordinates.provider, attempts[device.token]))
        answers = await self._answers({a for a in attempts.values() if a is not None}, actions, now)
        outcomes: list[WakeOutcome] = []
        for contact, provider, attempt in rows:
            if attempt is None:
                outcomes.append(WakeOutcome(contact, provider, "suppressed"))
                continue
            answer = answers.get(attempt)
            if answer is None:
                outcomes.append(WakeOutcome(contact, provider, "pending"))
                continue
            latency = max(0, int((answer.at - now) * 1000 + 0.5))
            outcomes.append(WakeOutcome(contact, provider, answer.outcome.value, answer.status, latency))
        return outcomes

    async def _answers(
        self, attempts: set[str], actions: list[EngineAction], now: float
    ) -> dict[str, PushAnswered]:
        """Run the pushes and collect the ``PushAnswered`` fact of each attempt, until all are
        in or ``wake_wait_s`` has passed."""
        return await collect_facts(
            self._bus,
            self._clock,
            PushAnswered,
            key_of=lambda fact: fact.attempt,
            expected=attempts,
            wait_s=self._wake_wait_s,
            start=lambda: self._execute(self._core.run(actions, now)),
        )

    # uac.*

    def uac_registrations(self) -> Sequence[UacRegistration]:
        push = self._core.push
        if push is None or push.midregistrar is None:
            return ()
        midreg = push.midregistrar
        records = (self._uac(reg, midreg) for reg in midreg.registrations())
        return sorted(records, key=lambda record: record.l_uuid)

    async def uac_refresh(self, l_uuid: str) -> UacRegistration | UacRefusal:
        push = self._core.push
        aor = canonical_argument(l_uuid, self._domain)
        if push is None or push.midregistrar is None or aor is None:
            return UacRefusal.NO_RECORD
        midreg = push.midregistrar
        if midreg.registration(aor) is None:
            return UacRefusal.NO_RECORD
        if midreg.settings.mode is Mode.MIRROR:
            return UacRefusal.MIRROR_MODE
        if not midreg.bindings(aor):
            return UacRefusal.NO_BINDINGS
        now = self._clock.seconds()
        actions = midreg.refresh_now(aor, now) or []
        self._execute(self._core.run(actions, now))
        reg = midreg.registration(aor)
        assert reg is not None
        return self._uac(reg, midreg)

    def _uac(self, reg: UpstreamRegistration, midreg: MidRegistrar) -> UacRegistration:
        """Kamailio ``uac`` terms for one upstream registration (rpc.md 3.5); ``realm`` and
        ``auth_username`` are those of the last challenge we answered (empty before one)."""
        uri = parse_uri(reg.aor)
        user, domain = "", ""
        if isinstance(uri, SipUri):
            user = uri.user or ""
            domain = format_host(uri.host) + (f":{uri.port}" if uri.port else "")
        settings = midreg.settings
        flags = 0
        if reg.inflight is not None:
            flags |= UAC_FLAG_ONGOING
            sent = reg.inflight.sent
            if sent is not None and "Authorization" in sent.headers:
                flags |= UAC_FLAG_AUTHSENT
        if reg.state is UpstreamState.REGISTERED:
            flags |= UAC_FLAG_ONLINE
        if reg.cseq > 0 or reg.state is not UpstreamState.IDLE or reg.renewed_at != float("-inf"):
            flags |= UAC_FLAG_INIT
        transport, host, port = self._core.layer.local_via(settings.upstream)
        return UacRegistration(
            l_uuid=usrloc_aor(reg.aor),
            l_username=user,
            l_domain=domain,
            r_username=user,
            r_domain=domain,
            realm=reg.auth_realm,
            auth_username=reg.auth_username,
            auth_proxy=_peer_uri(settings.upstream),
            expires=max(settings.outgoing_expires, reg.floor),
            flags=flags,
            timer_expires=reg.expires_at,
            reg_init=0.0 if reg.renewed_at == float("-inf") else reg.renewed_at,
            reg_delay=0,
            contact_addr=midreg.aggregate_contact(reg.aor).strip("<>"),
            socket=f"{transport.lower()}:{format_host(host)}:{port}",
        )


class EngineParkingGauges:
    """``metrics.ParkingGauges`` over the parking lot: the tsilo table counted at scrape time."""

    def __init__(self, core: SipRouter) -> None:
        self._core = core

    def _stored(self) -> list[tuple[str, ...]]:
        parking = self._core.parking
        return [] if parking is None else [call.spec.aors for call in parking.lot.calls()]

    def stored_ruris(self) -> int:
        return len({aor for aors in self._stored() for aor in aors})

    def stored_transactions(self) -> int:
        return sum(len(aors) for aors in self._stored())

    def transactions_of(self, ruri: str) -> int:
        parking = self._core.parking
        return 0 if parking is None else len(parking.lot.calls(ruri))


class MetricsStatistics:
    """``control.seams.StatisticsControl`` over the collectors ``/metrics`` exports: one
    statistic per sample, label values appended to the name (``sca:notify_call-info_sent``),
    histograms as their ``_count`` and ``_sum``; values rounded to integers (Kamailio's
    counters are unsigned integers), so a duration histogram ``..._seconds`` is listed as
    ``..._ms_count`` and ``..._ms_sum`` in milliseconds.  Only the server's own families
    (``scaserver_*``) are statistics; the process collectors are for ``/metrics``."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._registry = registry

    def statistics(self) -> Sequence[Statistic]:
        prefix = f"{NAMESPACE}_"
        found: list[Statistic] = []
        for family in self._registry.collect():
            if not family.name.startswith(prefix):
                continue
            base = family.name.removeprefix(prefix)
            scale = 1
            if family.type == "histogram" and base.endswith("_seconds"):
                base, scale = f"{base.removesuffix('_seconds')}_ms", 1000
            group, name = statistic_group(base)
            for sample in family.samples:
                suffix = sample.name[len(family.name) :]
                if suffix in ("_created", "_bucket"):
                    continue
                if suffix == "_total":
                    suffix = ""
                value = sample.value * scale if suffix == "_sum" else sample.value
                labels = "".join(f"_{label}" for label in sample.labels.values())
                found.append(Statistic(group, f"{name}{suffix}{labels}", round(value)))
        return sorted(found, key=lambda stat: (stat.group, stat.name))


@attrs.frozen
class ResyncContext:
    """The ``SendRequest`` context of one check-sync NOTIFY (answers come back as
    ``RequestAnswered`` facts on the bus)."""

    resync: int
    contact: str


class SipProvisioningControl:
    """``control.seams.ProvisioningControl``: ``prov.resync`` sends ``check-sync`` NOTIFYs
    through the running core (provisioning.md 4.5) and waits up to ``wait_s`` for their
    final responses (a contact without one is reported 408)."""

    def __init__(
        self,
        core: SipRouter,
        execute: Execute,
        bus: EventBus,
        clock: TimerClock,
        *,
        device_lines: Callable[[str], Awaitable[Sequence[str] | None]],
        local_uri: str,
        unique: Callable[[], str],
        wait_s: float = 5.0,
    ) -> None:
        self._core, self._execute, self._bus, self._clock = core, execute, bus, clock
        self._device_lines, self._local_uri, self._unique = device_lines, local_uri, unique
        self._wait_s = wait_s
        self._serial = 0

    async def resync(self, mac: str) -> Sequence[ResyncOutcome] | None:
        lines = await self._device_lines(mac)
        if lines is None:
            return None
        self._serial += 1
        now = self._clock.seconds()
        sends: list[EngineAction] = []
        contexts: list[ResyncContext] = []
        for aor in lines:
            for contact, peer in self._core.contact_peers(aor, now):
                request = check_sync_request(
                    contact, aor, local_uri=self._local_uri, call_id=self._unique(), from_tag=self._unique()
                )
                context = ResyncContext(self._serial, contact)
                contexts.append(context)
                sends.append(SendRequest(request, peer, context))
        if not contexts:
            return ()
        answers = await collect_facts(
            self._bus,
            self._clock,
            RequestAnswered,
            key_of=lambda fact: fact.context if isinstance(fact.context, ResyncContext) else None,
            expected=set(contexts),
            wait_s=self._wait_s,
            start=lambda: self._execute(self._core.run(sends, now)),
        )
        return tuple(
            ResyncOutcome(context.contact, answers[context].status if context in answers else 408)
            for context in contexts
        )


class GuardView:
    """The source guard and the TCP listener's counters, for metrics and ``sec.*`` RPCs."""

    _log = Logger(namespace="scaserver.facts")

    def __init__(
        self,
        guard: SourceGuard | None,
        streams: SipStreamFactory | None,
        clock: Callable[[], float],
        changed: Callable[[], None] = lambda: None,
    ) -> None:
        self._guard, self._streams, self._clock, self._changed = guard, streams, clock, changed

    def dropped_messages(self) -> int:
        return self._guard.dropped_total if self._guard is not None else 0

    def bans_active(self) -> int:
        return self._guard.active_bans(self._clock()) if self._guard is not None else 0

    def bans_by_reason(self) -> dict[str, int]:
        if self._guard is None:
            return {}
        return {reason.value: count for reason, count in self._guard.bans_total.items()}

    def tcp_refused(self) -> dict[str, int]:
        return dict(self._streams.refused) if self._streams is not None else {}

    def tracked_sources(self) -> int:
        return self._guard.tracked_sources if self._guard is not None else 0

    def bans(self) -> list[BanView]:
        if self._guard is None:
            return []
        return [
            BanView(ban.host, ban.reason.value, ban.since, ban.until, ban.offence)
            for ban in self._guard.bans(self._clock())
        ]

    def unban(self, source: str) -> bool:
        lifted = self._guard is not None and self._guard.unban(source)
        self._changed()
        self._log.warn("security: unban source={source} lifted={lifted}", source=source, lifted=lifted)
        return lifted


class RpcDirectory:
    """``directory.reload`` over the directory watch."""

    def __init__(self, watch: DirectoryWatch) -> None:
        self._watch = watch

    async def reload(self) -> Mapping[str, int]:
        change = await self._watch.reload("directory.reload")
        return change.as_json()
