"""The NOTIFY outbox of the SCA engine: the order rule of sca.md section 4.

Each subscription dialog has one queue: at most one NOTIFY in flight, and only
the newest pending one behind it ("Ordering"); a pending NOTIFY with nothing new
for its subscriber is not sent (4.1) unless forced (a SUBSCRIBE's answer, a
terminating NOTIFY); nothing follows a terminating NOTIFY.  The outcome of each
NOTIFY ("NOTIFY outcome", RFC 6665 4.2.2) lets the next one go, or removes the
subscription.  Pure: the engine renders the Call-Info (``render``) and hears of
each subscription lost to a failed NOTIFY (``lost``).
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from typing import Final

import attrs

from scaserver.sca.notify import bracketed, next_hop, notify_request, subscription_state
from scaserver.sca.registry import SubscriptionRegistry
from scaserver.sca.subscription import (
    DialogKey,
    NotifyAnswered,
    Subscription,
    SubscriptionNotified,
)
from scaserver.sip.actions import Deliver, EngineAction, SendRequest
from scaserver.sip.message import Response, Transport


@attrs.frozen
class NotifyContext:
    """The ``SendRequest.context`` of a NOTIFY: its dialog and CSeq number."""

    dialog: DialogKey
    cseq: int


class Content(enum.Enum):
    """What a NOTIFY's Call-Info carries: the line's full state, or the subscription's index."""

    FULL_STATE = "full"
    INDEX = "index"


@attrs.frozen
class Pending:
    """A NOTIFY waiting for its dialog's previous one to be answered (section 4 "Ordering")."""

    content: Content
    terminated: bool = False
    reason: str | None = None
    force: bool = False


# The pendings queued most: frozen values shared, not one built per subscriber.
FULL_STATE: Final = Pending(Content.FULL_STATE)
"""A group NOTIFY's full state (4.1), sent only when it says something new."""
FORCED_FULL_STATE: Final = Pending(Content.FULL_STATE, force=True)
"""The full state a call-info SUBSCRIBE is answered with (3.5)."""
FORCED_INDEX: Final = Pending(Content.INDEX, force=True)
"""The seized index a line-seize SUBSCRIBE is answered with (3.7)."""
UNSUBSCRIBED: Final[Mapping[Content, Pending]] = {
    content: Pending(content, terminated=True, force=True) for content in Content
}
"""The terminating NOTIFY an un-SUBSCRIBE gets (3.5), by its content."""


@attrs.define
class _DialogQueue:
    """NOTIFY queue of one subscription dialog: at most one in flight, the newest pending."""

    subscription: Subscription
    live: bool = True
    in_flight: int | None = None
    pending: Pending | None = None
    last_call_info: str | None = None


def _fatal(response: Response) -> bool:
    """481, or another 4xx-6xx without Retry-After, ends the subscription (Q7)."""
    return response.status == 481 or (response.status >= 400 and "Retry-After" not in response.headers)


@attrs.define
class NotifyOutbox:
    """The NOTIFY queues of all subscription dialogs (sca.md section 4)."""

    registry: SubscriptionRegistry
    contact: str
    render: Callable[[Subscription, Content], str]
    lost: Callable[[Subscription, float], list[EngineAction]]
    contact_tls: str = ""  # the Contact of NOTIFYs that leave over TLS ("" = ``contact``)
    _queues: dict[DialogKey, _DialogQueue] = attrs.field(factory=dict, init=False)
    # The Contact values of the NOTIFYs (over TLS, and otherwise): the same for every NOTIFY,
    # put in ``<>`` once here, not once per NOTIFY.
    _contact_value: str = attrs.field(default="", init=False)
    _contact_tls_value: str = attrs.field(default="", init=False)

    def __attrs_post_init__(self) -> None:
        self._contact_value = bracketed(self.contact)
        self._contact_tls_value = bracketed(self.contact_tls) if self.contact_tls else self._contact_value

    # The queue of a dialog follows its subscription.

    def open(self, sub: Subscription) -> None:
        """``sub`` was stored: its dialog's queue is live and NOTIFYs carry this value."""
        dialog = sub.dialog
        queue = self._queues.get(dialog)
        if queue is None:
            self._queues[dialog] = _DialogQueue(sub)
        else:
            queue.subscription = sub
            queue.live = True

    def close(self, sub: Subscription) -> None:
        """``sub`` was removed: its queue only finishes what it holds."""
        queue = self._queues.get(sub.dialog)
        if queue is not None:
            queue.live = False
            if queue.in_flight is None and queue.pending is None:
                del self._queues[sub.dialog]

    def drop(self, dialog: DialogKey) -> None:
        """Forget a dialog's queue without a terminating NOTIFY (a replaced dialog, 3.5)."""
        self._queues.pop(dialog, None)

    def keep_for_final(self, sub: Subscription) -> None:
        """The dialog of ``sub`` (removed, or never stored) still gets its terminating NOTIFY."""
        self._queues.setdefault(sub.dialog, _DialogQueue(sub, live=False))

    def unsubscribed(self, sub: Subscription, *, index: int, now: float) -> None:
        """An un-SUBSCRIBE ends the dialog of ``sub``: its terminating NOTIFY describes ``index``
        and expires ``now`` (3.5)."""
        self.keep_for_final(sub)
        queue = self._queues[sub.dialog]
        queue.subscription = queue.subscription.ending(index=index, expires=now)
        queue.live = False

    # Sending.

    def queue(self, dialog: DialogKey, pending: Pending, now: float) -> list[EngineAction]:
        """Queue ``pending`` behind the dialog's NOTIFY in flight, or send it now."""
        queue = self._queues.get(dialog)
        if queue is None:
            return []
        current = queue.pending
        if current is not None:
            if current.terminated:
                return []  # nothing follows a terminating NOTIFY
            if current.force and not pending.force:  # the constructor, not attrs.evolve
                pending = Pending(pending.content, pending.terminated, pending.reason, True)
        queue.pending = pending
        return self._pump(dialog, queue, now)

    def _pump(self, dialog: DialogKey, queue: _DialogQueue, now: float) -> list[EngineAction]:
        """Send ``queue``'s pending NOTIFY unless one is in flight; ``queue`` is the dialog's,
        as the caller just looked it up (not looked up again: a hash and an ``__eq__`` of the
        dialog key)."""
        if queue.in_flight is not None or queue.pending is None:
            return []
        pending, queue.pending = queue.pending, None
        sub = queue.subscription
        call_info = self.render(sub, pending.content)
        if not pending.force and not pending.terminated and call_info == queue.last_call_info:
            return []  # nothing new for this subscriber (4.1)
        peer = sub.peer if sub.peer is not None else next_hop(sub)  # the flow, most often
        if peer is None:
            return self._forget(dialog, "notify-failed")
        number = sub.notify_cseq + 1
        sub = sub.with_notify_cseq(number)
        queue.subscription = sub
        if pending.terminated:
            state = subscription_state(True, reason=pending.reason)
        else:
            state = subscription_state(False, sub.remaining(now))
        contact = self._contact_tls_value if peer.transport is Transport.TLS else self._contact_value
        request = notify_request(sub, cseq=number, contact=contact, call_info=call_info, state=state)
        queue.in_flight = number
        queue.last_call_info = call_info
        out: list[EngineAction] = [SendRequest(request, peer, NotifyContext(dialog, number))]
        if queue.live and self.registry.update_current(sub, dialog):
            out.append(Deliver(SubscriptionNotified(sub)))
        return out

    def _forget(self, dialog: DialogKey, reason: str) -> list[EngineAction]:
        self._queues.pop(dialog, None)
        sub = self.registry.by_dialog(dialog)
        if sub is None:
            return []
        return self.registry.remove(sub, reason)

    # Outcomes (section 4 "NOTIFY outcome").

    def on_response(self, context: NotifyContext, response: Response, now: float) -> list[EngineAction]:
        """A response to one of our NOTIFYs (RFC 6665 4.2.2).

        2xx: the next queued NOTIFY goes.  481, or another 4xx-6xx without
        Retry-After: the subscription is removed (Q7).  Others (503 with
        Retry-After...): kept, the queue goes on.
        """
        if response.status < 200:
            return []
        queue = self._queues.get(context.dialog)
        if queue is None or queue.in_flight != context.cseq:
            return []
        queue.in_flight = None
        out: list[EngineAction] = []
        fatal = False  # a 2xx is not (no call to _fatal for the answers of nearly every NOTIFY)
        if 200 <= response.status < 300:
            sub = self.registry.by_dialog(context.dialog)
            if sub is not None:
                out.append(Deliver(NotifyAnswered(sub, context.cseq, response.status)))
        else:
            fatal = _fatal(response)
        if fatal and queue.live:
            out += self._failed(context.dialog, now)
        elif queue.pending is None:
            if not queue.live:
                del self._queues[context.dialog]
            # else nothing is queued behind the answered NOTIFY: no call to _pump (6 per seize cycle)
        else:
            out += self._pump(context.dialog, queue, now)
        return out

    def on_failed(self, context: NotifyContext, now: float) -> list[EngineAction]:
        """Our NOTIFY timed out or could not be sent: the subscription is removed (RFC 6665 4.2.2)."""
        queue = self._queues.get(context.dialog)
        if queue is None or queue.in_flight != context.cseq:
            return []
        queue.in_flight = None
        if queue.live:
            return self._failed(context.dialog, now)
        del self._queues[context.dialog]
        return []

    def _failed(self, dialog: DialogKey, now: float) -> list[EngineAction]:
        sub = self.registry.by_dialog(dialog)
        self._queues.pop(dialog, None)
        if sub is None:
            return []
        return self.registry.remove(sub, "notify-failed") + self.lost(sub, now)
