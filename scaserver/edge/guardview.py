"""The source guard and the TCP listener's counters as the control plane and the metrics read
them: ``control.security.SecurityControl`` (``sec.*`` RPCs) and
``metrics.collectors.SecurityGauges``."""

from __future__ import annotations

from collections.abc import Callable

from twisted.logger import Logger

from scaserver.control.security import BanView
from scaserver.edge.tcp import SipStreamFactory
from scaserver.guard.sources import SourceGuard


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
