"""What became of the NOTIFYs one mutating SCA call sent (rpc.md 3.2 ``notify_failed``).

A contact is reported when the engine removes its subscription with reason ``notify-failed``
(a 481, another final 4xx-6xx without Retry-After, a transaction time-out or transport error,
or no route at all; sca.md 4 "NOTIFY outcome").  A NOTIFY counts as settled when its
subscription is removed, when the subscriber answers it with a 2xx (``NotifyAnswered``), or
when the next NOTIFY of the same dialog goes out (the engine sends it only after a final
response).  The edge decides how long to watch (``edge.controlplane``); this is the bookkeeping.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Final

import attrs

from scaserver.sca.subscription import (
    NotifyAnswered,
    SubscriptionKey,
    SubscriptionNotified,
    SubscriptionRemoved,
)
from scaserver.sip.actions import Action, Deliver

#: The reason the SCA engine gives when it drops a subscription whose NOTIFY failed.
NOTIFY_FAILED: Final = "notify-failed"


@attrs.define
class NotifyWatch:
    """The NOTIFYs one RPC sent, followed on the bus until each settles.

    While the RPC's actions run (``collecting``) every NOTIFY sent to a live subscription is
    watched; afterwards only the watched ones matter.  ``on_settled`` is called each time a
    NOTIFY settles and none is left open.
    """

    watched: dict[SubscriptionKey, int] = attrs.field(factory=dict)
    settled: set[SubscriptionKey] = attrs.field(factory=set)
    failed: dict[str, None] = attrs.field(factory=dict)
    collecting: bool = True
    on_settled: Callable[[], None] | None = None

    def notified(self, event: SubscriptionNotified) -> None:
        sub = event.subscription
        cseq = self.watched.get(sub.key)
        if cseq is None:
            if self.collecting:
                self.watched[sub.key] = sub.notify_cseq
        elif sub.notify_cseq > cseq:
            self._settle(sub.key)

    def answered(self, event: NotifyAnswered) -> None:
        cseq = self.watched.get(event.subscription.key)
        if cseq is not None and event.cseq >= cseq:
            self._settle(event.subscription.key)

    def removed(self, event: SubscriptionRemoved) -> None:
        key = event.subscription.key
        if key not in self.watched and not self.collecting:
            return
        if event.reason == NOTIFY_FAILED:
            self.failed[event.subscription.subscriber] = None
        if key in self.watched:
            self._settle(key)

    def observe(self, actions: Iterable[Action]) -> None:
        """Take the facts of an action list (the same ones the stack publishes; seen twice,
        they change nothing)."""
        for action in actions:
            if isinstance(action, Deliver):
                event = action.event
                if isinstance(event, SubscriptionNotified):
                    self.notified(event)
                elif isinstance(event, SubscriptionRemoved):
                    self.removed(event)

    @property
    def open(self) -> bool:
        """Some watched NOTIFY has not settled."""
        return any(key not in self.settled for key in self.watched)

    def _settle(self, key: SubscriptionKey) -> None:
        self.settled.add(key)
        if self.on_settled is not None and not self.open:
            self.on_settled()
