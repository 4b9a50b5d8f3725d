"""In-memory implementations of the repositories (``store/repository.py``).

For tests and for running without a database.  Each keeps a dict from key to value in
insertion order; ``load_all`` returns the values in that order.  Values are frozen, so
they are stored as given.  Values the SQL schema cannot hold (see ``store/writes.py``) are
held here unchanged.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from typing import Generic, TypeVar

from scaserver.push.policy import TokenInvalidated
from scaserver.registrar.binding import Binding, BindingKey
from scaserver.registrar.midregevents import UpstreamSnapshot
from scaserver.sca.appearance import Appearance
from scaserver.sca.line import SharedLine
from scaserver.sca.subscription import Subscription, SubscriptionKey
from scaserver.sip.digest import Credentials
from scaserver.sip.trust import TrustedPeer
from scaserver.store.repository import (
    AppearanceKey,
    SubscriberKey,
    TokenKey,
    TrustedPeerKey,
    appearance_key,
    binding_key,
    line_key,
    subscriber_key,
    subscription_key,
    token_key,
    trusted_peer_key,
    upstream_key,
)

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class _MemoryRepository(Generic[K, V]):
    def __init__(self, key_of: Callable[[V], K]) -> None:
        self._key_of = key_of
        self._rows: dict[K, V] = {}

    def load_all(self) -> list[V]:
        return list(self._rows.values())

    def upsert(self, values: Sequence[V], /) -> None:
        for value in values:
            self._rows[self._key_of(value)] = value

    def delete(self, keys: Sequence[K], /) -> None:
        for key in keys:
            self._rows.pop(key, None)


class MemorySubscriberRepository(_MemoryRepository[SubscriberKey, Credentials]):
    def __init__(self) -> None:
        super().__init__(subscriber_key)


class MemoryTrustedPeerRepository(_MemoryRepository[TrustedPeerKey, TrustedPeer]):
    def __init__(self) -> None:
        super().__init__(trusted_peer_key)


class MemoryBindingRepository(_MemoryRepository[BindingKey, Binding]):
    def __init__(self) -> None:
        super().__init__(binding_key)

    def purge_expired(self, now: float, /) -> int:
        expired = [key for key, binding in self._rows.items() if binding.expires_at <= now]
        self.delete(expired)
        return len(expired)


class MemorySharedLineRepository(_MemoryRepository[str, SharedLine]):
    def __init__(self) -> None:
        super().__init__(line_key)


class MemorySubscriptionRepository(_MemoryRepository[SubscriptionKey, Subscription]):
    """Holds the subscriptions of one node; others' are neither returned nor deleted.

    Nodes sharing one database are modelled by passing the same ``table`` dict.
    """

    def __init__(self, server_id: int = 0, table: dict[SubscriptionKey, Subscription] | None = None) -> None:
        super().__init__(subscription_key)
        self.server_id = server_id
        if table is not None:
            self._rows = table

    def load_all(self) -> list[Subscription]:
        return [s for s in self._rows.values() if s.server_id == self.server_id]

    def delete(self, keys: Sequence[SubscriptionKey], /) -> None:
        for key in keys:
            found = self._rows.get(key)
            if found is not None and found.server_id == self.server_id:
                del self._rows[key]

    def purge_expired(self, now: float, /) -> int:
        expired = [s.key for s in self.load_all() if s.expires < now]
        self.delete(expired)
        return len(expired)


class MemoryAppearanceRepository(_MemoryRepository[AppearanceKey, Appearance]):
    def __init__(self) -> None:
        super().__init__(appearance_key)


class MemoryUpstreamRegistrationRepository(_MemoryRepository[str, UpstreamSnapshot]):
    def __init__(self) -> None:
        super().__init__(upstream_key)


class MemoryTokenInvalidationRepository(_MemoryRepository[TokenKey, TokenInvalidated]):
    def __init__(self) -> None:
        super().__init__(token_key)
