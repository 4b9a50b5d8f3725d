"""The ends and restarts of subscriptions decided outside a SUBSCRIBE: expiry behind the sweep
timer (sca.md section 9), deactivation (section 11) and the restore from the store after a
restart (10.3), carried out on the :class:`~scaserver.sca.notifier.Notifier` that holds them.
Pure: every function takes ``now`` and returns its actions."""

from __future__ import annotations

from collections.abc import Iterable

from scaserver.sca.notifier import Notifier
from scaserver.sca.outbox import FORCED_FULL_STATE
from scaserver.sca.subscription import DialogKey, Package, Subscription, SubscriptionKey
from scaserver.sip.actions import EngineAction


def sweep_expired(notifier: Notifier, now: float) -> list[EngineAction]:
    """The expiry sweep timer fired: every subscription whose expiry has come ends
    (timeout), one refreshed since is armed again; then the sweep timer for the next."""
    registry = notifier.registry
    out: list[EngineAction] = []
    for key in registry.expiries.sweep(now):
        sub = registry.get(key)
        if sub is None:
            continue
        if sub.expires > now + 1e-6:
            out += registry.arm_expiry(sub, now)
            continue
        out += notifier.end(sub, "timeout", now) + notifier.release_seize_of(sub, now)
    return out + registry.expiries.rearm(now)


def deactivate(notifier: Notifier, keys: Iterable[SubscriptionKey], now: float) -> list[EngineAction]:
    """End subscriptions with ``terminated;reason=deactivated`` (section 11)."""
    out: list[EngineAction] = []
    for key in list(keys):
        sub = notifier.registry.get(key)
        if sub is not None:
            out += notifier.end(sub, "deactivated", now) + notifier.release_seize_of(sub, now)
    return out


def restore(
    notifier: Notifier, subscriptions: Iterable[Subscription], now: float
) -> tuple[list[EngineAction], list[DialogKey]]:
    """Live stored subscriptions are stored again and re-arm their expiry; expired or
    terminated ones are dropped.  Also returned: the dialogs of the call-info ones, owed
    a full-state NOTIFY continuing their CSeq (10.3, :func:`notify_restored`)."""
    out: list[EngineAction] = []
    owed: list[DialogKey] = []
    for sub in subscriptions:
        if sub.expires <= now or sub.state.terminated:
            continue
        out += notifier.registry.arm_expiry(sub, now, stored=notifier.store(sub))
        if sub.event is Package.CALL_INFO:
            owed.append(sub.dialog)
    return out, owed


def notify_restored(notifier: Notifier, dialogs: Iterable[DialogKey], now: float) -> list[EngineAction]:
    """The full-state NOTIFY each restored dialog is owed (10.3); a dialog ended since
    gets none."""
    out: list[EngineAction] = []
    for dialog in dialogs:
        out += notifier.outbox.queue(dialog, FORCED_FULL_STATE, now)
    return out
