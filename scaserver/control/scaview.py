"""What the control plane and the metrics read of the SCA engine of a running core (rpc.md 3.1,
sca.md section 11): synchronous snapshots mapped to the seams' frozen values by
:mod:`scaserver.control.views`.  The mutations, which wait for their NOTIFYs, are the edge's
(``edge.controlplane.EngineScaControl`` builds on :class:`ScaEngineView`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from scaserver.control.seams import (
    AppearanceInfo,
    AppearanceRefusal,
    AppearanceStateName,
    LineInfo,
    ScaEvent,
    SubscriptionInfo,
)
from scaserver.control.views import (
    appearance_info,
    canonical_argument,
    contact_matches,
    idle_appearance,
    subscription_info,
)
from scaserver.router.router import SipRouter
from scaserver.sca.appearance import Appearance, AppearanceState
from scaserver.sca.subscription import Package, Subscription


class ScaEngineView:
    """The reads of ``control.seams.ScaControl`` over the SCA engine of a running core."""

    def __init__(self, core: SipRouter, *, default_domain: str) -> None:
        self._core = core
        self._domain = default_domain.lower()

    def _aor(self, text: str) -> str | None:
        aor = canonical_argument(text, self._domain)
        if aor is None:
            return None
        return self._core.aliases().get(aor, aor)  # sca.md Q26 line aliases

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

    def _in_use(self, aor: str, index: int) -> tuple[str, Appearance] | AppearanceRefusal:
        line_aor = self._aor(aor)
        engine = self._core.sca
        if line_aor is None or not engine.is_sca(line_aor):
            return AppearanceRefusal.NO_LINE
        app = engine.appearance(line_aor, index) if index >= 1 else None
        if app is None:
            return AppearanceRefusal.NOT_IN_USE
        return line_aor, app

    def _appearance_now(self, line_aor: str, index: int) -> AppearanceInfo:
        """The appearance as the engine holds it after a change (idle when gone)."""
        app = self._core.sca.appearance(line_aor, index)
        return appearance_info(app) if app is not None else idle_appearance(line_aor, index)


class EngineScaGauges:
    """``metrics.collectors.ScaGauges`` over the SCA engine: counted at scrape time, every series present."""

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
