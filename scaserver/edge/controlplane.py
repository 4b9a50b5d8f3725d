"""The control plane's seams implemented over the running SIP core (rpc.md 2-3, sca.md section 11).

``control`` and ``metrics`` speak to the engines through Protocols (``control.seams.ScaControl``,
``control.seams.LocationControl``, ``control.seams.ParkingControl``,
``control.seams.StatisticsControl``, ``metrics.collectors.ScaGauges``,
``metrics.collectors.ParkingGauges``).  The reads are the pure views of
:mod:`scaserver.control.scaview`, :mod:`scaserver.control.locationview` and
:mod:`scaserver.control.parkingview` over the running :class:`~scaserver.router.router.SipRouter`;
this module adds what needs the reactor (and ``directory.reload`` over the directory watch;
``control.security.SecurityControl`` over the source guard is ``edge.guardview``):

* mutations go through the engines' own management entry points (``ScaEngine.seize_appearance``,
  ``update_appearance``, ``release_appearance``, ``deactivate``; ``LocationService.remove``), so
  an RPC takes the same rows of the appearance table (sca.md 6, rule ``RPC``) and sends the same
  group NOTIFYs (sca.md 4.1) as SIP would.  Their actions are run through the transaction layer
  (``SipRouter.run``) and the edge actions that come back are handed to ``execute`` (the stack's
  ``run``): NOTIFYs are on the wire before the RPC answers (rpc.md 3.2).

``notify_failed`` (rpc.md 3.2): after executing, a mutating SCA call watches the bus for up to
``notify_wait_s`` seconds for the fate of the NOTIFYs it sent (``control.notifywatch``); the RPC
answers as soon as every NOTIFY it caused has settled, or when the window closes.
Failures that come later (a UDP NOTIFY times out after 64*T1 = 32 s, RFC 3261 17.1.2.2) are not
reported, nor are failures of the terminating NOTIFYs of a deactivation (the subscription is
gone before that NOTIFY is sent, so nothing about it is published).  ``notify_wait_s = 0``
reports only the failures known while the actions run (no route to the subscriber).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Hashable, Mapping, Sequence, Set
from typing import Final, TypeVar

import attrs
from twisted.internet.defer import Deferred

from scaserver.control.locationview import LocationView
from scaserver.control.notifywatch import NotifyWatch
from scaserver.control.parkingview import MobileParkingControl
from scaserver.control.scaview import ScaEngineView
from scaserver.control.seams import (
    AorRecord,
    AppearanceChange,
    AppearanceRefusal,
    AppearanceStateName,
    ContactRemoval,
    Deactivation,
    ParkedCallInfo,
    ResyncOutcome,
    ScaEvent,
    UacRefusal,
    UacRegistration,
    WakeOutcome,
)
from scaserver.control.views import (
    canonical_argument,
    contact_matches,
    idle_appearance,
    parked_call_info,
    subscription_info,
)
from scaserver.edge.directorywatch import DirectoryWatch
from scaserver.edge.stack import DelayedCall, TimerClock, call_later
from scaserver.events import EventBus
from scaserver.owners import RequestAnswered
from scaserver.provisioning.resync import check_sync_request
from scaserver.push.facts import PushAnswered
from scaserver.registrar.midregsettings import Mode
from scaserver.router.flows import contact_peers
from scaserver.router.router import SipRouter
from scaserver.sca.engine import AppearanceError
from scaserver.sca.subscription import (
    NotifyAnswered,
    Subscription,
    SubscriptionNotified,
    SubscriptionRemoved,
)
from scaserver.sip.actions import Action, EngineAction, SendRequest

Execute = Callable[[list[Action]], None]
"""Runs edge actions (the stack's ``run``): sends, timers, bus events."""

FactT = TypeVar("FactT")
KeyT = TypeVar("KeyT", bound=Hashable)

#: How long a mutating SCA call waits for the outcome of its NOTIFYs by default (seconds).
NOTIFY_WAIT_S: Final = 2.0

#: How long ``pushreg.wake`` waits for the gateway's answers by default (seconds): the push
#: client's own limits (3 attempts of 2 s with back-off, push-and-parking.md 5.3) fit in it.
WAKE_WAIT_S: Final = 10.0


# Waiting for answers.


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


# The seams.


class EngineScaControl(ScaEngineView):
    """``control.seams.ScaControl`` over the SCA engine of a running core: the reads of
    :class:`~scaserver.control.scaview.ScaEngineView` and the mutations, which wait for their
    NOTIFYs."""

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
        super().__init__(core, default_domain=default_domain)
        self._execute, self._bus, self._clock = execute, bus, clock
        self._flush = flush
        self._wait = notify_wait_s

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
        info = self._appearance_now(line_aor, index)
        return AppearanceChange(info, await self._run(actions, now))

    async def update_appearance(
        self, aor: str, index: int, state: AppearanceStateName, appearance_uri: str | None
    ) -> AppearanceChange | AppearanceRefusal:
        found = self._in_use(aor, index)
        if isinstance(found, AppearanceRefusal):
            return found
        line_aor, _ = found
        now = self._clock.seconds()
        actions = self._core.sca.update_appearance(line_aor, index, state.value, now, uri=appearance_uri)
        info = self._appearance_now(line_aor, index)
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

        def close() -> None:
            if not done.called:
                done.callback(None)

        watch.on_settled = close
        timer: DelayedCall = call_later(self._clock, self._wait, close)

        def stop_timer(result: None) -> None:
            if timer.active():
                timer.cancel()
            return result

        done.addBoth(stop_timer)
        return done


class RegistrarLocationControl(LocationView):
    """``control.seams.LocationControl`` over the registrar's location service of a running core:
    the reads of :class:`~scaserver.control.locationview.LocationView` at the clock's time, and
    removals run through the core and the edge."""

    def __init__(
        self,
        core: SipRouter,
        execute: Execute,
        clock: TimerClock,
        *,
        default_domain: str,
        flush: Callable[[], Awaitable[object]],
    ) -> None:
        super().__init__(core, default_domain=default_domain)
        self._execute, self._clock = execute, clock
        self._flush = flush

    def dump(self) -> Sequence[AorRecord]:
        return self._dump(self._clock.seconds())

    def lookup(self, aor: str) -> AorRecord | None:
        return self._lookup(aor, self._clock.seconds())

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
        now = self._clock.seconds()
        plan = self._wake_plan(aor, reason, now)
        if plan is None:
            return None
        answers = await self._answers(plan.attempts, list(plan.actions), now)
        return plan.outcomes(answers, now)

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

    async def uac_refresh(self, l_uuid: str) -> UacRegistration | UacRefusal:
        push = self._core.push
        aor = canonical_argument(l_uuid, self._domain)
        if push is None or push.midregistrar is None or aor is None:
            return UacRefusal.NO_RECORD
        midreg = push.midregistrar
        if midreg.registration(aor) is None:
            return UacRefusal.NO_RECORD
        if midreg.settings.table.mode is Mode.MIRROR:
            return UacRefusal.MIRROR_MODE
        if not midreg.bindings(aor):
            return UacRefusal.NO_BINDINGS
        now = self._clock.seconds()
        actions = midreg.refresh_now(aor, now) or []
        self._execute(self._core.run(actions, now))
        reg = midreg.registration(aor)
        assert reg is not None
        return self._uac(reg, midreg)


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
            for contact, peer in contact_peers(self._core.registrar, aor, now):
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


class RpcDirectory:
    """``directory.reload`` over the directory watch."""

    def __init__(self, watch: DirectoryWatch) -> None:
        self._watch = watch

    async def reload(self) -> Mapping[str, int]:
        change = await self._watch.reload("directory.reload")
        return change.as_json()
