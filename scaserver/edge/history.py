"""The reporting history of a running server (reporting.md): the feed from the bus to the
write-behind queue, the per-line busy samples and the daily purge."""

from __future__ import annotations

from typing import Final

from twisted.application.service import Service
from twisted.logger import Logger

from scaserver.edge.dbpool import DatabasePool
from scaserver.edge.historyfeed import HistoryFeed
from scaserver.edge.periodic import Periodic
from scaserver.edge.stack import TimerClock
from scaserver.edge.writebehind import WriteBehind
from scaserver.events import EventBus
from scaserver.reporting.history import HistoryRecorder
from scaserver.reporting.retention import RetentionPolicy, purge
from scaserver.reporting.settings import ReportingSettings
from scaserver.router.router import SipRouter
from scaserver.sip.domains import DomainPolicy
from scaserver.store.history import SqlHistoryRepository, history_key
from scaserver.store.sql import SqlStore

DAY_S: Final = 86_400.0
log = Logger(namespace="scaserver.reporting")


def history_services(
    settings: ReportingSettings,
    core: SipRouter,
    bus: EventBus,
    *,
    writes: WriteBehind,
    store: SqlStore,
    pool: DatabasePool,
    reactor: TimerClock,
    local_domains: DomainPolicy,
) -> list[Service]:
    """Attach the history feed to ``bus`` (its rows on a ``history`` channel of ``writes``) and
    return the services that sample the lines every ``sample_interval`` and purge what is older
    than ``retention_days`` once a day."""
    recorder = HistoryRecorder(
        line_of=lambda aor: aor if core.sca.is_sca(aor) else None, local_domains=local_domains
    )
    history = HistoryFeed(
        recorder,
        writes.channel(
            "history",
            SqlHistoryRepository(store.engine),
            history_key,
            table_of=lambda key: str(key[0]),
            key_text=lambda key: " ".join(map(str, key)),
        ),
        lines=lambda: [line.aor for line in core.sca.provisioned()],
        clock=reactor.seconds,
    )
    history.attach(bus)
    retention = RetentionPolicy.uniform(settings.retention_days)

    def purge_history() -> None:
        purged = pool.run(purge, store.engine, retention, reactor.seconds())
        purged.addErrback(lambda failure: log.failure("history purge failed", failure=failure))

    return [
        Periodic(reactor, settings.sample_interval, lambda: history.sample(reactor.seconds())),
        Periodic(reactor, DAY_S, purge_history),
    ]
