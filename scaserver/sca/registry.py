"""The subscriptions of the SCA engine and their indexes (sca.md sections 3.5, 10.2).

:class:`SubscriptionRegistry` keeps each live subscription once, under its
:class:`~scaserver.sca.subscription.SubscriptionKey`, and finds it by dialog
(in-dialog SUBSCRIBE, NOTIFY outcome), by replacement key (an out-of-dialog
SUBSCRIBE of the same owner, contact and flow replaces it, 3.5), by owner (the
per-identity cap) and by line (group NOTIFYs).  It also remembers, for
``reboot_memory_s``, the subscriptions lost to a failed NOTIFY while their
contact owned an appearance, so that the phone's next SUBSCRIBE is taken as the
reboot of 3.5.  Its :class:`~scaserver.sca.expiry.ExpiryQueue` holds when each one
expires.  Pure: no clock, no I/O.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Final

import attrs

from scaserver.sca.expiry import ExpiryQueue
from scaserver.sca.subscription import (
    DialogKey,
    Identity,
    Package,
    ReplacementKey,
    Subscription,
    SubscriptionKey,
    SubscriptionRemoved,
)
from scaserver.sip.actions import Deliver, EngineAction
from scaserver.sip.errors import SipError

#: At most this many lost subscriptions are remembered for reboot detection (3.5).
MAX_REMEMBERED_LOSSES: Final = 10_000


class SubscriptionLimit(SipError, status=403, reason="Too Many Subscriptions"):
    """An identity already holds ``max_subscriptions_per_identity`` live subscriptions."""


@attrs.define
class SubscriptionRegistry:
    """Live subscriptions keyed by dialog, replacement, owner and line, and the reboot memory."""

    max_per_identity: int = 32
    reboot_memory_s: float = 3600.0
    _subs: dict[SubscriptionKey, Subscription] = attrs.field(factory=dict, init=False)
    _by_dialog: dict[DialogKey, SubscriptionKey] = attrs.field(factory=dict, init=False)
    _by_replacement: dict[ReplacementKey, SubscriptionKey] = attrs.field(factory=dict, init=False)
    _by_owner: dict[str, dict[SubscriptionKey, None]] = attrs.field(factory=dict, init=False)
    _by_aor: dict[str, dict[SubscriptionKey, None]] = attrs.field(factory=dict, init=False)
    _lost: dict[tuple[str, str, str], float] = attrs.field(factory=dict, init=False)
    expiries: ExpiryQueue = attrs.field(factory=ExpiryQueue)

    # Look-ups.

    def all(self) -> list[Subscription]:
        return list(self._subs.values())

    def get(self, key: SubscriptionKey) -> Subscription | None:
        return self._subs.get(key)

    def by_dialog(self, dialog: DialogKey) -> Subscription | None:
        key = self._by_dialog.get(dialog)
        return None if key is None else self._subs.get(key)

    def by_replacement(self, replacement: ReplacementKey) -> Subscription | None:
        key = self._by_replacement.get(replacement)
        return None if key is None else self._subs.get(key)

    def of_line(self, aor: str) -> Iterator[Subscription]:
        """The subscriptions to ``aor`` in the order they were stored, each looked up when
        reached (one removed meanwhile is skipped)."""
        for key in list(self._by_aor.get(aor, {})):
            sub = self._subs.get(key)
            if sub is not None:
                yield sub

    def call_info_dialogs(self, aor: str) -> list[DialogKey]:
        """The dialogs of the call-info subscriptions to ``aor`` in the order they were stored
        (a group NOTIFY's fan-out, 4.1): read off the keys, no subscription looked up for a
        line-seize one."""
        subs = self._subs
        return [subs[key].dialog for key in self._by_aor.get(aor, ()) if key.event is Package.CALL_INFO]

    def has_call_info(self, aor: str) -> bool:
        for key in self._by_aor.get(aor, ()):  # noqa: SIM110 (a plain loop: no generator resumed per key)
            if key.event is Package.CALL_INFO:
                return True
        return False

    # Changes.

    def store(self, sub: Subscription) -> SubscriptionKey:
        """Store ``sub`` under its key and index it; the key object the indexes share (each
        key of ``sub`` is a new value built from its fields: built once here)."""
        key = sub.key
        replacement = sub.replacement
        previous = self._subs.get(key)
        if previous is not None and previous.replacement != replacement:
            self._unindex(previous, key)
        self._subs[key] = sub
        self._by_dialog[sub.dialog] = key
        self._by_replacement[replacement] = key
        self._by_owner.setdefault(sub.owner, {})[key] = None
        self._by_aor.setdefault(sub.aor, {})[key] = None
        return key

    def arm_expiry(
        self, sub: Subscription, now: float, *, stored: SubscriptionKey | None = None
    ) -> list[EngineAction]:
        """``sub`` (stored) expires at ``sub.expires``: the sweep timer when it must move.
        ``stored`` is the key :meth:`store` returned for ``sub``, when the caller has it."""
        if stored is None:
            key = sub.key
            indexed = self._by_dialog.get(sub.dialog)  # the key object the indexes share, not a copy
            stored = indexed if indexed == key else key
        return self.expiries.arm(stored, sub.expires, now)

    def update_current(self, sub: Subscription, dialog: DialogKey) -> bool:
        """Replace the stored value of ``sub``'s key (a new NOTIFY CSeq), indexes unchanged,
        when that key is live and ``dialog`` still leads to it; whether it did.  The key is
        the one the dialog's index holds (looked up once per NOTIFY)."""
        key = self._by_dialog.get(dialog)
        if key is not None and key == sub.key and key in self._subs:
            self._subs[key] = sub
            return True
        return False

    def forget_dialog(self, sub: Subscription) -> None:
        """Forget a replaced dialog without a terminating NOTIFY (3.5)."""
        self._by_dialog.pop(sub.dialog, None)

    def remove(self, sub: Subscription, reason: str) -> list[EngineAction]:
        """Remove ``sub`` when it is the stored value: forget its expiry, deliver the fact."""
        key = sub.key
        stored = self._subs.get(key)
        if stored is not sub and stored != sub:  # most often the stored value itself: no __eq__
            return []
        del self._subs[key]
        if self._by_dialog.get(sub.dialog) == key:
            del self._by_dialog[sub.dialog]
        self._unindex(sub, key)
        members = self._by_aor.get(sub.aor)
        if members is not None:
            members.pop(key, None)
            if not members:
                del self._by_aor[sub.aor]
        self.expiries.cancel(key)
        return [Deliver(SubscriptionRemoved(sub, reason))]

    def _unindex(self, sub: Subscription, key: SubscriptionKey) -> None:
        """Drop ``sub``, whose key is ``key``, from the owner and replacement indexes."""
        if self._by_replacement.get(sub.replacement) == key:
            del self._by_replacement[sub.replacement]
        owned = self._by_owner.get(sub.owner)
        if owned is not None:
            owned.pop(key, None)
            if not owned:
                del self._by_owner[sub.owner]

    # The per-identity cap.

    def check_cap(self, replacement: ReplacementKey, identity: Identity | None) -> None:
        """Raise :class:`SubscriptionLimit` when a new subscription would pass the cap."""
        cap = self.max_per_identity
        if cap <= 0 or identity is None or identity.trusted or replacement in self._by_replacement:
            return
        if len(self._by_owner.get(replacement.owner, {})) >= cap:
            raise SubscriptionLimit(f"{replacement.owner} already holds {cap} subscriptions")

    # Reboot memory (3.5).

    def was_lost(self, sub: Subscription, now: float) -> bool:
        """Whether this owner's contact lost a subscription to ``sub.aor`` to a failed NOTIFY
        while it owned an appearance, recently (the reboot of 3.5 that removal hid)."""
        until = self._lost.pop((sub.aor, sub.owner, sub.subscriber), None)
        return until is not None and until > now

    def remember_loss(self, sub: Subscription, now: float) -> None:
        """Remember that ``sub`` (whose contact owns an appearance) was lost to a failed NOTIFY."""
        for key, until in list(self._lost.items()):
            if until <= now or len(self._lost) >= MAX_REMEMBERED_LOSSES:
                del self._lost[key]
        self._lost[sub.aor, sub.owner, sub.subscriber] = now + self.reboot_memory_s
