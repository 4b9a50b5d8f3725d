"""SQLAlchemy 2 Core implementations of the repositories (``store/repository.py``), one
module per job: the directory (``store/directory.py``), registrations
(``store/registrations.py``), the SCA engine's state (``store/sca.py``), all writing through
``store/writes.py``; :class:`SqlStore` holds them over one engine.

Everything here is synchronous and blocking: the edge calls it from the database thread
pool (``edge/dbpool.py``), never from the reactor thread.
"""

from __future__ import annotations

from scaserver.store.directory import (
    SqlLineAliasRepository,
    SqlSharedLineRepository,
    SqlSubscriberRepository,
    SqlTrustedPeerRepository,
)
from scaserver.store.engine import make_engine
from scaserver.store.registrations import (
    SqlBindingRepository,
    SqlTokenInvalidationRepository,
    SqlUpstreamRegistrationRepository,
)
from scaserver.store.sca import SqlAppearanceRepository, SqlSubscriptionRepository


class SqlStore:
    """Every repository of one database, sharing one engine."""

    def __init__(self, url: str, *, pool_size: int = 4, server_id: int = 0) -> None:
        self.url = url
        self.engine = make_engine(url, pool_size=pool_size)
        self.subscribers = SqlSubscriberRepository(self.engine)
        self.trusted_peers = SqlTrustedPeerRepository(self.engine)
        self.bindings = SqlBindingRepository(self.engine)
        self.lines = SqlSharedLineRepository(self.engine)
        self.line_aliases = SqlLineAliasRepository(self.engine)
        self.subscriptions = SqlSubscriptionRepository(self.engine, server_id)
        self.appearances = SqlAppearanceRepository(self.engine)
        self.upstream_registrations = SqlUpstreamRegistrationRepository(self.engine)
        self.token_invalidations = SqlTokenInvalidationRepository(self.engine)

    def close(self) -> None:
        self.engine.dispose()
