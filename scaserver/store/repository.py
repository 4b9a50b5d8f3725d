"""Repositories: how the engines' values are stored, as ``typing.Protocol`` seams.

Each repository speaks in engine values (STYLE.md section 8) and has the same three
operations: ``load_all`` (the start-up restore), ``upsert`` (insert or replace by key) and
``delete`` (by key; a missing key is not an error).  Both write operations are idempotent,
so the write-behind queue (``edge/writebehind.py``) may repeat a batch after a failure.
``store/memory.py`` and ``store/sql.py`` implement them; one contract test suite runs
against memory, SQLite and PostgreSQL.

The ``*_key`` functions give the key of a value, as the write-behind channels need; the
``*_key_text`` ones show a key that may hold a push token with the token hashed.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Sequence
from typing import Final, Protocol, TypeAlias

from scaserver.push.pnparams import masked_pn_params, token_hash
from scaserver.push.policy import TokenInvalidated
from scaserver.registrar.binding import Binding, BindingKey, KeyKind
from scaserver.registrar.midregevents import UpstreamSnapshot
from scaserver.sca.appearance import Appearance
from scaserver.sca.line import SharedLine
from scaserver.sca.subscription import Subscription, SubscriptionKey
from scaserver.sip.digest import Credentials
from scaserver.sip.message import Transport
from scaserver.sip.trust import TrustedPeer

#: (username, realm): one subscriber's credentials.
SubscriberKey: TypeAlias = tuple[str, str]
#: (CIDR text as ``ipaddress`` prints it, transport or None for any).
TrustedPeerKey: TypeAlias = tuple[str, Transport | None]
#: (line AoR, appearance index).
AppearanceKey: TypeAlias = tuple[str, int]
#: (push provider, push resource id): one push token (push-and-parking.md 4.4).
TokenKey: TypeAlias = tuple[str, str]


def subscriber_key(credentials: Credentials) -> SubscriberKey:
    return (credentials.username, credentials.realm)


def trusted_peer_key(peer: TrustedPeer) -> TrustedPeerKey:
    return (str(peer.cidr), peer.transport)


binding_key: Final[Callable[[Binding], BindingKey]] = operator.attrgetter("key")
"""The key of a binding's row (a C getter: it runs for every binding written)."""


def binding_key_text(key: BindingKey) -> str:
    """A binding key for a log line: the token of a push key (``provider prid [param]``) and
    the secret ``pn-*`` parameters of a contact key hashed."""
    if key.kind is KeyKind.PUSH:
        provider, _, rest = key.value.partition(" ")
        prid, _, param = rest.partition(" ")
        shown = f"{provider} [sha256:{token_hash(prid)[:12]}] {param}".rstrip()
    else:
        shown = masked_pn_params(key.value)
    return f"{key.aor} {key.kind.value} {shown}"


def line_key(line: SharedLine) -> str:
    return line.aor


def subscription_key(subscription: Subscription) -> SubscriptionKey:
    return subscription.key


def appearance_key(appearance: Appearance) -> AppearanceKey:
    return (appearance.line, appearance.index)


def upstream_key(snapshot: UpstreamSnapshot) -> str:
    return snapshot.aor


def token_key(invalidation: TokenInvalidated) -> TokenKey:
    return (invalidation.provider, invalidation.prid)


def token_key_text(key: TokenKey) -> str:
    """A token key for a log line: the provider and the token's hash."""
    provider, prid = key
    return f"{provider} [sha256:{token_hash(prid)[:12]}]"


class SubscriberRepository(Protocol):
    """Digest credentials (RFC 7616 / RFC 8760), keyed by (username, realm)."""

    def load_all(self) -> list[Credentials]: ...

    def upsert(self, values: Sequence[Credentials], /) -> None: ...

    def delete(self, keys: Sequence[SubscriberKey], /) -> None: ...


class TrustedPeerRepository(Protocol):
    """Networks whose requests are not challenged, keyed by (CIDR, transport)."""

    def load_all(self) -> list[TrustedPeer]: ...

    def upsert(self, values: Sequence[TrustedPeer], /) -> None: ...

    def delete(self, keys: Sequence[TrustedPeerKey], /) -> None: ...


class BindingRepository(Protocol):
    """Registrar bindings (RFC 3261 section 10), keyed by ``BindingKey``."""

    def load_all(self) -> list[Binding]: ...

    def upsert(self, values: Sequence[Binding], /) -> None: ...

    def delete(self, keys: Sequence[BindingKey], /) -> None: ...

    def purge_expired(self, now: float, /) -> int:
        """Delete bindings whose ``expires_at`` is at or before ``now``; returns how many."""
        ...


class SharedLineRepository(Protocol):
    """Provisioned shared lines with their members, keyed by AoR."""

    def load_all(self) -> list[SharedLine]: ...

    def upsert(self, values: Sequence[SharedLine], /) -> None: ...

    def delete(self, keys: Sequence[str], /) -> None: ...


class SubscriptionRepository(Protocol):
    """SCA subscriptions of this node (sca.md section 10), keyed by (aor, event, subscriber).

    ``load_all`` returns and ``delete``/``purge_expired`` touch only the rows of the
    repository's own ``server_id`` (section 10.3: never another node's rows).
    """

    def load_all(self) -> list[Subscription]: ...

    def upsert(self, values: Sequence[Subscription], /) -> None: ...

    def delete(self, keys: Sequence[SubscriptionKey], /) -> None: ...

    def purge_expired(self, now: float, /) -> int:
        """Delete this node's subscriptions whose ``expires`` is before ``now``; returns how many."""
        ...


class AppearanceRepository(Protocol):
    """Appearances in use (sca.md section 10.3), keyed by (line AoR, index)."""

    def load_all(self) -> list[Appearance]: ...

    def upsert(self, values: Sequence[Appearance], /) -> None: ...

    def delete(self, keys: Sequence[AppearanceKey], /) -> None: ...


class UpstreamRegistrationRepository(Protocol):
    """The push mid-registrar's upstream registration dialogs (push-and-parking.md 3.5, race
    R21), keyed by AoR: one row per AoR, replaced on every change."""

    def load_all(self) -> list[UpstreamSnapshot]: ...

    def upsert(self, values: Sequence[UpstreamSnapshot], /) -> None: ...

    def delete(self, keys: Sequence[str], /) -> None: ...


class TokenInvalidationRepository(Protocol):
    """Push tokens the provider declared invalid (push-and-parking.md 4.4), keyed by
    (provider, prid).  The token is a secret: stored to match bindings, never shown."""

    def load_all(self) -> list[TokenInvalidated]: ...

    def upsert(self, values: Sequence[TokenInvalidated], /) -> None: ...

    def delete(self, keys: Sequence[TokenKey], /) -> None: ...
