"""What the database gives the server at start-up and what the server writes back (STYLE P6).

:class:`StoredState` is read once before the server serves; :func:`restore_upstream` brings the
mid-registrar's dialogs back; :class:`Persistence` feeds the write-behind queue from the facts
on the bus, so the SIP path never waits for the database.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

import attrs

from scaserver.edge.writebehind import Channel
from scaserver.events import EventBus
from scaserver.push.facts import (
    BindingRetained,
)
from scaserver.push.policy import TokenInvalidated
from scaserver.registrar.binding import (
    Binding,
    BindingAdded,
    BindingExpired,
    BindingKey,
    BindingRefreshed,
    BindingRemoved,
)
from scaserver.registrar.midregevents import UpstreamSaved, UpstreamSnapshot
from scaserver.registrar.midregsettings import Mode
from scaserver.registrar.midregstate import UpstreamRegistration
from scaserver.registrar.upstream import UpstreamState
from scaserver.router.router import (
    SipRouter,
)
from scaserver.sca.appearance import Appearance, AppearanceChanged, AppearanceState
from scaserver.sca.line import LineAlias, SharedLine
from scaserver.sca.subscription import (
    Subscription,
    SubscriptionAdded,
    SubscriptionKey,
    SubscriptionNotified,
    SubscriptionRefreshed,
    SubscriptionRemoved,
)
from scaserver.sip.actions import EngineAction
from scaserver.sip.digest import Credentials
from scaserver.sip.trust import TrustedPeer
from scaserver.store.repository import (
    AppearanceKey,
    TokenKey,
)
from scaserver.store.sql import SqlStore


@attrs.frozen
class StoredState:
    """What the database holds at start-up (read once, before the server serves)."""

    credentials: tuple[Credentials, ...]
    trusted: tuple[TrustedPeer, ...]
    lines: tuple[SharedLine, ...]
    bindings: tuple[Binding, ...]
    subscriptions: tuple[Subscription, ...]
    appearances: tuple[Appearance, ...]
    upstream: tuple[UpstreamSnapshot, ...] = ()
    invalidated: tuple[TokenInvalidated, ...] = ()
    aliases: tuple[LineAlias, ...] = ()

    @classmethod
    def load(cls, store: SqlStore) -> StoredState:
        return cls(
            tuple(store.subscribers.load_all()),
            tuple(store.trusted_peers.load_all()),
            tuple(store.lines.load_all()),
            tuple(store.bindings.load_all()),
            tuple(store.subscriptions.load_all()),
            tuple(store.appearances.load_all()),
            tuple(store.upstream_registrations.load_all()),
            tuple(store.token_invalidations.load_all()),
            tuple(store.line_aliases.load_all()),
        )

    def reserved_upstream(self) -> list[UpstreamSnapshot]:
        """The stored upstream dialogs with one more block of CSeqs reserved, to be written
        before the server sends anything (R21): this run continues above the stored CSeq, so
        a crash before this run's own writes reach the database still leaves a stored CSeq
        above every CSeq it sent (see :class:`Persistence`)."""
        return [attrs.evolve(item, cseq=item.cseq + NOTIFY_CSEQ_BLOCK) for item in self.upstream]

    def obsolete_invalidations(self) -> list[TokenInvalidated]:
        """Invalidated tokens no stored binding is affected by any more (push-and-parking.md
        4.4: only a binding confirmed before the invalidation loses its push capability, and
        every binding confirmed later is untouched); their rows can go."""
        confirmed: dict[tuple[str, str], float] = {}
        for binding in self.bindings:
            params = dict(binding.push)
            token = (params.get("pn-provider", "").lower(), params.get("pn-prid", ""))
            confirmed[token] = min(confirmed.get(token, binding.updated_at), binding.updated_at)
        return [
            item
            for item in self.invalidated
            if not confirmed.get((item.provider, item.prid), item.at) < item.at
        ]


def restore_upstream(
    core: SipRouter, saved: Sequence[UpstreamSnapshot], bindings: Sequence[Binding], now: float
) -> list[EngineAction]:
    """Start-up (push-and-parking.md 3.5, R21): the mid-registrar's registration dialogs come
    back and every AoR with valid local bindings is re-registered upstream, spread over
    ``startup_spread``.  In AoR mode an AoR whose bindings were stored but whose dialog was
    not (the server died before that write) gets a new dialog in state ``LOST``: its upstream
    state is unknown, so it is re-registered too.  Call after the location service's restore."""
    midreg = None if core.push is None else core.push.midregistrar
    if midreg is None:
        return []
    dialogs: list[UpstreamRegistration | UpstreamSnapshot] = list(saved)
    if midreg.settings.table.mode is Mode.AOR:
        known = {item.aor for item in saved}
        for aor in sorted({binding.aor for binding in bindings} - known):
            if midreg.bindings(aor):
                fresh = UpstreamRegistration(aor, midreg.call_id_factory(aor), state=UpstreamState.LOST)
                dialogs.append(fresh)
    return midreg.restore(dialogs, now)


NOTIFY_CSEQ_BLOCK: Final = 32
"""NOTIFY CSeqs are reserved in blocks: the stored CSeq is the end of the block in use."""


def reserved_cseq(cseq: int) -> int:
    """The last CSeq of the block ``cseq`` belongs to (1..32 -> 32, 33..64 -> 64)."""
    return -(-cseq // NOTIFY_CSEQ_BLOCK) * NOTIFY_CSEQ_BLOCK


class Persistence:
    """Feeds the write-behind queue from the facts on the bus (STYLE P6): bindings,
    subscriptions and appearances leave the SIP path without waiting for the database.

    A subscription's NOTIFY CSeq must keep growing across a restart, even after a crash
    (sca.md 10.3), but writing the row for every NOTIFY costs more than the NOTIFY.  So the
    stored CSeq is the end of a block of :data:`NOTIFY_CSEQ_BLOCK`: the row is written when
    the subscription is added or refreshed and when the first NOTIFY of a new block goes
    out; after a restart the next NOTIFY takes the CSeq after the block (a jump of at most
    one block, which RFC 3261 12.2.2 allows: CSeqs only have to increase).

    The mid-registrar's upstream registration dialogs (push-and-parking.md 3.5, R21) are
    stored the same way, one block ahead: the stored CSeq is the end of the block *after* the
    one in use, written whenever that changes (and whenever the state, expiry or flags do),
    and at start-up one more block is reserved synchronously before anything is sent
    (:meth:`StoredState.reserved_upstream`).  So even when the server dies before the write
    of a new block reaches the database, the stored CSeq is above every CSeq sent (as long as
    a flush lags fewer than a block of REGISTERs behind), and a restart never repeats one
    (RFC 3261 10.3 step 7 answers a repeated CSeq in the same Call-ID with 500).
    Invalidated push tokens (4.4) are stored as they are declared.
    """

    def __init__(
        self,
        bindings: Channel[BindingKey, Binding],
        subscriptions: Channel[SubscriptionKey, Subscription],
        appearances: Channel[AppearanceKey, Appearance],
        *,
        upstream: Channel[str, UpstreamSnapshot] | None = None,
        invalidated: Channel[TokenKey, TokenInvalidated] | None = None,
    ) -> None:
        self._bindings, self._subscriptions, self._appearances = bindings, subscriptions, appearances
        self._upstream, self._invalidated = upstream, invalidated
        self._upstream_stored: dict[str, UpstreamSnapshot] = {}

    def attach(self, bus: EventBus) -> None:
        bus.subscribe(BindingAdded, self._binding_kept)
        bus.subscribe(BindingRefreshed, self._binding_kept)
        bus.subscribe(BindingRemoved, self._binding_gone)
        bus.subscribe(BindingExpired, self._binding_gone)
        bus.subscribe(BindingRetained, self._binding_retained)
        bus.subscribe(SubscriptionAdded, self._subscription_added)
        bus.subscribe(SubscriptionRefreshed, self._subscription_kept)
        bus.subscribe(SubscriptionNotified, self._subscription_notified)
        bus.subscribe(SubscriptionRemoved, self._subscription_gone)
        bus.subscribe(AppearanceChanged, self._appearance_changed)
        if self._upstream is not None:
            bus.subscribe(UpstreamSaved, self._upstream_saved)
        if self._invalidated is not None:
            bus.subscribe(TokenInvalidated, self._token_invalidated)

    def _binding_kept(self, event: BindingAdded | BindingRefreshed) -> None:
        self._bindings.upsert(event.binding)

    def _binding_gone(self, event: BindingRemoved | BindingExpired) -> None:
        self._bindings.delete(event.binding.key)

    def _binding_retained(self, event: BindingRetained) -> None:
        # Published right after its BindingExpired: the row stays (the queue keeps the last
        # write per key), so a restart brings the dormant binding back (push-and-parking.md 4.5).
        self._bindings.upsert(event.binding)

    def _subscription_added(self, event: SubscriptionAdded) -> None:
        # A new dialog (our To tag is new): no row of its key exists, so a subscription added
        # and removed before a flush (a line seize and its release) writes nothing.
        subscription = event.subscription
        reserved = reserved_cseq(max(subscription.notify_cseq, 1))
        self._subscriptions.insert(subscription.with_notify_cseq(reserved))

    def _subscription_kept(self, event: SubscriptionRefreshed) -> None:
        self._store(event.subscription)

    def _subscription_notified(self, event: SubscriptionNotified) -> None:
        if event.subscription.notify_cseq % NOTIFY_CSEQ_BLOCK == 1:
            self._store(event.subscription)

    def _store(self, subscription: Subscription) -> None:
        reserved = reserved_cseq(max(subscription.notify_cseq, 1))
        self._subscriptions.upsert(subscription.with_notify_cseq(reserved))

    def _subscription_gone(self, event: SubscriptionRemoved) -> None:
        self._subscriptions.delete(event.subscription.key)

    def _appearance_changed(self, event: AppearanceChanged) -> None:
        current = event.appearance
        if current is None or current.state is AppearanceState.IDLE:
            self._appearances.delete((event.line, event.index))
        else:
            self._appearances.upsert(current)

    def _upstream_saved(self, event: UpstreamSaved) -> None:
        assert self._upstream is not None
        snapshot = event.snapshot
        stored = attrs.evolve(snapshot, cseq=reserved_cseq(snapshot.cseq) + NOTIFY_CSEQ_BLOCK)
        if self._upstream_stored.get(snapshot.aor) != stored:
            self._upstream_stored[snapshot.aor] = stored
            self._upstream.upsert(stored)

    def _token_invalidated(self, event: TokenInvalidated) -> None:
        assert self._invalidated is not None
        self._invalidated.upsert(event)
